"""Choose the semantic cache's default threshold on development pairs, report it held out.

Development: MRPC train + val and STS-B dev, each on its own (``cache_eval.choose_default``:
the lowest threshold with hit precision >= 0.95 at it and above, on every set). Held out:
MRPC test and STS-B test (and the small SemEval 2016 question-question set). Embeddings are
the model's ``embedding`` output through onnxruntime, as the router gets them from Triton.
"text guard on" is the cache's guard as shipped, the hit verifier (``router_svc.cache.verify``);
``perf/cache_verify.py`` measures it rule by rule, with adversarial negatives, and against
the old guard.

    python perf/cache_threshold.py --onnx-dir model_repository/semantic_router/1
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router_svc.cache.store import texts_compatible  # noqa: E402
from router_svc.ops.cache_eval import (  # noqa: E402
    SweepRow,
    choose_default,
    embed_pairs,
    onnx_embedder,
    row_at,
    similarities,
    sweep,
)
from router_svc.ops.pairs import load_pairs  # noqa: E402

DEV = {
    "MRPC train+val": ("para_msr_msr-para-train.tsv", "para_msr_msr-para-val.tsv"),
    "STS-B dev": ("glue_STS-B_original_sts-dev.tsv",),
}
HELD_OUT = {
    "MRPC test": ("para_msr_msr-para-test.tsv",),
    "STS-B test": ("glue_STS-B_original_sts-test.tsv",),
    "SemEval16 questions": ("sts_semeval-sts_2016_question-question.test.tsv",),
}
THRESHOLDS = [round(0.80 + 0.005 * i, 3) for i in range(40)]  # 0.800 .. 0.995


def memo(embed):
    """Each distinct text embedded once for the whole run."""
    seen: dict[str, np.ndarray] = {}

    async def embed_once(texts: list[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in seen]
        if todo:
            seen.update(zip(todo, await embed(todo), strict=True))
        return np.stack([seen[t] for t in texts])

    return embed_once


async def rows_for(files: tuple[str, ...], data: Path, embed, guard: bool) -> list[SweepRow]:
    pairs = [p for f in files for p in load_pairs(data / f).pairs]
    a, b = await embed_pairs(pairs, embed)
    sims = similarities(a, b)
    if guard:
        sims = np.where([texts_compatible(p.a, p.b) for p in pairs], sims, -1.0)
    return sweep(sims, np.array([p.paraphrase for p in pairs]), THRESHOLDS)


async def main_async(args: argparse.Namespace) -> int:
    console = Console()
    embed = memo(onnx_embedder(args.onnx_dir, threads=args.threads))
    out_rows = []
    chosen: dict[bool, float | None] = {}
    for guard in (True, False):
        dev = {name: await rows_for(fs, args.data, embed, guard) for name, fs in DEV.items()}
        held = {name: await rows_for(fs, args.data, embed, guard)
                for name, fs in HELD_OUT.items()}
        t = chosen[guard] = choose_default(dev, args.min_precision)
        table = Table(title=f"text guard {'on' if guard else 'off'}: chosen threshold {t}")
        for col in ("set", "threshold", "hits", "precision", "recall"):
            table.add_column(col, justify="right")
        for name, rows in {**dev, **held}.items():
            for th in sorted({0.9, 0.95, *([t] if t else [])}):
                r = row_at(rows, th)
                table.add_row(name, f"{r.threshold:.3f}", str(r.hits), f"{r.precision:.3f}",
                              f"{r.recall:.3f}", style="bold" if th == t else None)
                out_rows.append({"guard": guard, "set": name, "threshold": r.threshold,
                                 "hits": r.hits, "true_hits": r.true_hits,
                                 "precision": round(r.precision, 4),
                                 "recall": round(r.recall, 4)})
        console.print(table)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(out_rows[0]))
        w.writeheader()
        w.writerows(out_rows)
    console.print(f"wrote {args.csv}")
    t = chosen[True]
    if t is not None:
        held = {name: row_at(await rows_for(fs, args.data, embed, True), t)
                for name, fs in HELD_OUT.items()}
        parts = " ".join(f"{n.split()[0].lower()}_precision={r.precision:.3f} "
                         f"{n.split()[0].lower()}_recall={r.recall:.3f}"
                         for n, r in held.items() if n != "SemEval16 questions")
        print(f"threshold={t:.3f} {parts}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx-dir", type=Path, default=ROOT / "model_repository/semantic_router/1",
                    help="folder with model.onnx and tokenizer.json (default: %(default)s)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/paraphrase")
    ap.add_argument("--min-precision", type=float, default=0.95)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--csv", type=Path, default=ROOT / "perf/results/cache_threshold.csv")
    return asyncio.run(main_async(ap.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
