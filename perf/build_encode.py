"""The model build's feature cache: the frozen shared layers in torch against onnxruntime.

``router-svc model build`` runs the frozen lower layers once over every training row
(``export.train.cache_features``) and trains the top layers on the cached output; on 2 cores
that step is about a fifth of the build. This times one batch of random token ids through the
same layers both ways (``DualHeadModel.shared_forward`` in torch, and
``export.onnx_export.shared_encoder``'s onnxruntime session), alternating in rounds, at the
build's batch size and a few sequence lengths, with the largest difference of the outputs.

    python perf/build_encode.py                   # ~1 minute
    python perf/build_encode.py --rounds 3 --lengths 32
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import markdown_table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="perf/build_encode.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64, help="rows per batch (the build's)")
    ap.add_argument("--lengths", default="32,96,128", help="tokens per row, comma-separated")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch
    from tqdm.auto import tqdm

    from export.backbone import load_backbone
    from export.modeling import DualHeadModel
    from export.onnx_export import shared_encoder
    from router_svc.labels import CATEGORIES, PII_TAGS

    torch.set_num_threads(args.threads)
    model = DualHeadModel(load_backbone("all-MiniLM-L6-v2").model, len(CATEGORIES),
                          len(PII_TAGS), head_layers=2).eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        encode = shared_encoder(model, Path(tmp) / "shared.onnx", args.threads)
        gen = torch.Generator().manual_seed(0)
        lengths = [int(n) for n in args.lengths.split(",")]
        for n in tqdm(lengths, desc="lengths", unit="shape"):
            ids = torch.randint(1000, 20000, (args.batch, n), generator=gen)
            mask = torch.ones_like(ids)
            mask[::2, n // 2:] = 0  # half the rows padded, as length groups leave some
            times: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
            with torch.no_grad():
                ref = model.shared_forward(ids, mask).numpy()
            diff = float(np.abs(encode(ids.numpy(), mask.numpy()) - ref).max())
            for r in range(args.rounds):
                order = ("torch", "onnxruntime") if r % 2 == 0 else ("onnxruntime", "torch")
                for name in order:
                    t = time.perf_counter()
                    if name == "torch":
                        with torch.no_grad():
                            model.shared_forward(ids, mask)
                    else:
                        encode(ids.numpy(), mask.numpy())
                    times[name].append(time.perf_counter() - t)
            t_med, o_med = (float(np.median(times[k])) * 1000 for k in ("torch", "onnxruntime"))
            rows.append({"batch": f"{args.batch} x {n}", "torch": t_med, "onnxruntime": o_med,
                         "ratio": o_med / t_med, "diff": f"{diff:.1e}"})
    print(markdown_table(rows, [("batch", "batch x tokens"), ("torch", "torch ms (median)"),
                                ("onnxruntime", "onnxruntime ms"), ("ratio", "ratio"),
                                ("diff", "max |diff|")]))


if __name__ == "__main__":
    main()
