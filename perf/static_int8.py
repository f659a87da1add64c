"""Static int8 (calibrated once, batch-independent) against fp32 and dynamic int8, in-process
onnxruntime on 2 threads: issue 18's "int8 as the CPU default where its decisions are
batch-independent" lever.

Two static variants are made from ``model.onnx`` with onnxruntime's ``quantize_static``,
calibrated on 96 MMLU-Pro training stems, 32 held-out-file PII texts and 32 chit-chat lines
(fixed 128-token rows):

- ``static_qdq``: every op, QDQ format, symmetric int8 activations and per-channel weights,
  min-max calibration;
- ``static_matmul``: MatMul only, QOperator format, uint8 activations, per-tensor weights,
  99.99th-percentile calibration.

Quality against fp32 on the first 300 held-out MMLU-Pro stems (category accuracy and
agreement) and 200 held-out PII texts (token tag agreement, all tokens and those fp32 tags as
PII); speed as the median of alternating runs at 1 x 32, 5 x 128 (a ~500-token prompt in
128/96 windows) and 16 x 128 tokens. ``model.int8.onnx`` (dynamic) must exist
(``router-svc model build --quantize`` or ``up --int8``).

    python perf/static_int8.py --model-dir model_repository/semantic_router/1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _common import Output, add_output_args, say

from export import data as D
from router_svc.classify.tokenization import TextTokenizer


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="perf/static_int8.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=Path("model_repository/semantic_router/1"))
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    ap.add_argument("--pii-data", type=Path, default=Path(".work/heldout/pii_test.json"),
                    help="held-out PII rows, presidio format (`router-svc model heldout`)")
    ap.add_argument("--rounds", type=int, default=12)
    add_output_args(ap)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    args = parse_args(argv)
    out = Output("static_int8", args)
    m = args.model_dir
    tok = TextTokenizer(m / "tokenizer.json")
    mmlu, _ = D.load_mmlu(args.data_dir / "mmlu_pro/questions.jsonl")
    train, val = D.split_mmlu(mmlu, 0.1, 0)
    pii = [r["full_text"] for r in json.loads(args.pii_data.read_text())]

    def batches(texts: list[str], n: int = 16, length: int = 128, fixed: bool = False):
        wins = tok.truncated(texts, length)
        for s in range(0, len(wins), n):
            chunk = wins[s:s + n]
            width = length if fixed else max(len(w.ids) for w in chunk)
            ids = np.zeros((len(chunk), width), np.int64)
            mask = np.zeros_like(ids)
            for j, w in enumerate(chunk):
                ids[j, :len(w.ids)], mask[j, :len(w.ids)] = w.ids, 1
            yield {"input_ids": ids, "attention_mask": mask}

    calib = [e.text for e in train[:96]] + pii[:32] + D.offtopic_prompts(32, 5)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(list(batches(calib, 8, fixed=True)))

        def get_next(self):
            return next(self.it, None)

    work = Path(args.out_dir)
    work.mkdir(parents=True, exist_ok=True)
    files = {"fp32": m / "model.onnx", "dynamic": m / "model.int8.onnx",
             "static_qdq": work / "static_qdq.onnx", "static_matmul": work / "static_matmul.onnx"}
    say("quantising (static, calibrated once)")
    quantize_static(str(files["fp32"]), str(files["static_qdq"]), Reader(),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    quantize_static(str(files["fp32"]), str(files["static_matmul"]), Reader(),
                    quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                    calibrate_method=CalibrationMethod.Percentile,
                    extra_options={"CalibPercentile": 99.99})
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sessions = {k: ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
                for k, p in files.items()}
    y = np.array([e.label for e in val[:300]])
    results = {}
    for k, s in sessions.items():
        cats = np.concatenate([s.run(None, b)[0] for b in batches([e.text for e in val[:300]])])
        tags = []
        for b in batches(pii[:200]):
            p = s.run(None, b)[1]
            tags += [p[j][b["attention_mask"][j] == 1].argmax(-1) for j in range(len(p))]
        results[k] = (cats, tags)
    ref_c, ref_t = results["fp32"]
    rng = np.random.default_rng(0)
    shapes = {"1x32": (1, 32), "5x128": (5, 128), "16x128": (16, 128)}
    speed: dict[str, dict[str, float]] = {k: {} for k in sessions}
    for name, (n, length) in shapes.items():
        feed = {"input_ids": rng.integers(1000, 20000, (n, length)).astype(np.int64),
                "attention_mask": np.ones((n, length), np.int64)}
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for r in range(args.rounds):
            order = list(sessions.items())
            for k, s in (order if r % 2 == 0 else order[::-1]):
                t = time.perf_counter()
                s.run(None, feed)
                times[k].append(time.perf_counter() - t)
        for k, v in times.items():
            speed[k][name] = float(np.median(v[2:]) * 1e3)
    rows = []
    for k, (c, t) in results.items():
        rows.append({
            "variant": k, "val_accuracy": float((c.argmax(1) == y).mean()),
            "category_agreement": float((c.argmax(1) == ref_c.argmax(1)).mean()),
            "tag_agreement": float(np.mean(np.concatenate(
                [a == b for a, b in zip(t, ref_t, strict=True)]))),
            "pii_tag_agreement": float(np.concatenate(
                [(a == b)[b != 0] for a, b in zip(t, ref_t, strict=True)]).mean()),
            **{f"p50_ms_{n}": speed[k][n] for n in shapes},
            **{f"x_fp32_{n}": speed[k][n] / speed["fp32"][n] for n in shapes}})
    from rich.console import Console
    from rich.table import Table

    table = Table(title="static int8 vs fp32 and dynamic int8 (in-process, 2 threads)")
    for c in ("variant", "val acc", "category agree", "tag agree", "PII tag agree",
              *(f"{n} ms (x fp32)" for n in shapes)):
        table.add_column(c, justify="left" if c == "variant" else "right")
    for r in rows:
        table.add_row(r["variant"], f"{r['val_accuracy']:.3f}", f"{r['category_agreement']:.3f}",
                      f"{r['tag_agreement']:.3f}", f"{r['pii_tag_agreement']:.3f}",
                      *(f"{r['p50_ms_' + n]:.1f} ({r['x_fp32_' + n]:.2f})" for n in shapes))
    Console(width=160).print(table)
    out.write_csv(rows)
    out.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
