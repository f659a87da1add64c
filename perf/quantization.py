"""fp32 ``model.onnx`` versus its int8 dynamic quantisation (``export.onnx_export.quantize_int8``)
on onnxruntime in-process: speed and accuracy change, side by side in one run (issue 2).

Speed: sequences/s at each ``--batch-sizes`` (default 1 and 32) on the usual prompt mix, same
threads, alternating fp32 / int8 in rounds; medians over rounds, int8 as a ratio to fp32.

Accuracy (baseline: fp32):
- category: accuracy on the MMLU-Pro validation split the build used
  (``export.data.load_mmlu`` + ``split_mmlu(val_fraction=0.1, seed=0)``, first ``--eval-max-len``
  tokens as in training), and how often int8 agrees with fp32;
- PII on the presidio held-out split (``split_presidio(test_fraction=0.25, seed=0)``):
  entity-level micro precision/recall/F1 (``router_svc.classify.pii.decode_bio`` over the router's
  256/192 windows, exact type and character span), token-level micro-F1 of the BIO tags against
  the gold alignment, and token argmax agreement with fp32.

- embedding: STS-B test Spearman of the cosine similarity (the issue's >= 0.80 target).

int8 runs the way Triton serves it (``router_svc/triton/python_model.py``): one row at a time,
cut to its own tokens, since a model that quantises activations at run time would otherwise
answer a prompt differently depending on its batch. So "batch 32" for int8 is 32 rows in one
call, run one by one; fp32 runs them as one padded batch.

The int8 model is ``--int8`` if given, else ``model.int8.onnx`` next to ``model.onnx`` when the
build made one, else quantised afresh into this run's results folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import (
    Output,
    add_model_args,
    add_output_args,
    check_model_dir,
    int_list,
    latency_ms,
    load_prompts,
    make_batches,
    markdown_table,
    median,
    pad_batch,
    plot_bars,
    progress,
    ratio,
    say,
    token_rows,
)

from router_svc.triton.repository import INT8_MODEL_FILE

VARIANTS = ("fp32", "int8")


class RowAtATime:
    """An onnxruntime session run as the Triton Python model runs a run-time-quantised model."""

    def __init__(self, sess) -> None:
        self.sess = sess

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        from router_svc.labels import ATTENTION_MASK, INPUT_IDS
        from router_svc.triton.python_model import run_rows

        def one(ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
            return dict(zip(names, self.sess.run(names, {INPUT_IDS: ids, ATTENTION_MASK: mask}),
                            strict=True))

        out = run_rows(one, feed[INPUT_IDS], feed[ATTENTION_MASK])
        return [out[n] for n in names]


def sts_eval(args, sessions, tok, prog) -> dict[str, dict]:
    """STS-B test Spearman, computed as the build computes it (``export.build.sts_spearman``)."""
    from _ort import infer

    from export.build import sts_spearman
    from router_svc.ops.pairs import load_pairs

    pairs = load_pairs(args.data_dir / "paraphrase" / "glue_STS-B_original_sts-test.tsv").pairs
    if args.eval_limit:
        pairs = pairs[: args.eval_limit]
    out = {}
    for name, sess in sessions.items():
        def embed(texts: list[str], sess=sess) -> np.ndarray:
            wins = tok.truncated(texts, args.eval_max_len)
            rows = []
            for s in range(0, len(wins), args.eval_batch):
                chunk = [np.asarray(w.ids, dtype=np.int64) for w in wins[s : s + args.eval_batch]]
                ids, mask = pad_batch(chunk, [np.ones_like(c) for c in chunk])
                rows.append(infer(sess, ids, mask)[2])
            return np.concatenate(rows)

        task = prog.add_task(f"STS-B {name} ({len(pairs)} test pairs)", total=None)
        out[name] = {"sts_spearman": sts_spearman(embed, pairs)}
        prog.remove_task(task)
    return out


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="perf/quantization.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--int8", type=Path, default=None,
                    help="an existing int8 model (default: model.int8.onnx beside model.onnx, "
                         "else quantise now)")
    ap.add_argument("--batch-sizes", default="1,32", help="(default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2,
                    help="onnxruntime intra-op threads (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=3, help="(default: %(default)s)")
    ap.add_argument("--duration", type=float, default=5.0,
                    help="seconds per measurement (default: %(default)s)")
    ap.add_argument("--warmup", type=float, default=1.0, help="(default: %(default)s)")
    ap.add_argument("--eval-max-len", type=int, default=128,
                    help="category rows: first N tokens, as the build trains (default: "
                         "%(default)s)")
    ap.add_argument("--eval-limit", type=int, default=0,
                    help="evaluate only the first N rows of each split (0 = all)")
    ap.add_argument("--pii-threshold", type=float, default=0.5,
                    help="entity score threshold, as `router-svc eval pii` (default: "
                         "%(default)s)")
    ap.add_argument("--eval-batch", type=int, default=32, help="(default: %(default)s)")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    add_output_args(ap)
    args = ap.parse_args(argv)
    args.batches = int_list(args.batch_sizes)
    return args


def int8_path(args, out: Output) -> Path:
    if args.int8:
        if not args.int8.is_file():
            sys.exit(f"error: --int8 {args.int8} not found")
        return args.int8
    built = args.model_dir / INT8_MODEL_FILE
    if built.is_file():
        say(f"int8 model: {built} (from the build)")
        return built
    from export.onnx_export import quantize_int8

    dst = Path(tempfile.mkdtemp(prefix="perf-quantization-", dir=out.dir)) / INT8_MODEL_FILE
    say(f"quantising {args.model_dir / 'model.onnx'} -> {dst}")
    quantize_int8(args.model_dir / "model.onnx", dst)
    return dst


def run_batched(sess, rows_ids: list[list[int]], batch: int):
    """Outputs (category logits, per-row pii logits trimmed to the row) over all rows."""
    from _ort import infer

    cats, piis = [], []
    for s in range(0, len(rows_ids), batch):
        chunk = [np.asarray(r, dtype=np.int64) for r in rows_ids[s : s + batch]]
        ids, mask = pad_batch(chunk, [np.ones_like(c) for c in chunk])
        cat, pii, _ = infer(sess, ids, mask)
        cats.append(cat)
        piis += [pii[i, : len(c)] for i, c in enumerate(chunk)]
    return np.concatenate(cats), piis


def category_eval(args, sessions, tok, prog) -> dict[str, dict]:
    from export.data import load_mmlu, split_mmlu

    examples, _ = load_mmlu(args.data_dir / "mmlu_pro" / "questions.jsonl")
    _, val = split_mmlu(examples, val_fraction=0.1, seed=0)
    if args.eval_limit:
        val = val[: args.eval_limit]
    wins = tok.truncated([e.text for e in val], args.eval_max_len)
    labels = np.array([e.label for e in val])
    preds = {}
    for name, sess in sessions.items():
        task = prog.add_task(f"category eval {name} ({len(val)} MMLU-Pro val)", total=None)
        cat, _ = run_batched(sess, [w.ids for w in wins], args.eval_batch)
        prog.remove_task(task)
        preds[name] = cat
    base = preds["fp32"].argmax(-1)
    out = {}
    for name, cat in preds.items():
        p = cat.argmax(-1)
        out[name] = {"category_rows": len(val),
                     "category_accuracy": float((p == labels).mean()),
                     "category_agree_fp32": float((p == base).mean()),
                     "category_max_abs_logit_diff": float(np.abs(cat - preds["fp32"]).max())}
    return out


def pii_eval(args, sessions, tok, prog) -> dict[str, dict]:
    from export.data import align_bio, load_presidio, split_presidio
    from export.evaluate import PRF, match_spans, micro
    from router_svc.classify.pii import decode_bio, merge_windows, softmax
    from router_svc.labels import PII_TAGS

    examples, _ = load_presidio(args.data_dir / "pii" / "synth_dataset_v2.json")
    _, test = split_presidio(examples, test_fraction=0.25, seed=0)
    if args.eval_limit:
        test = test[: args.eval_limit]
    plans = [tok.windows(ex.text, 256, 192) for ex in test]
    flat = [w for ws in plans for w in ws]
    o_idx = PII_TAGS.index("O")
    argmaxes: dict[str, list[np.ndarray]] = {}
    out = {}
    for name, sess in sessions.items():
        task = prog.add_task(f"PII eval {name} ({len(test)} presidio test)", total=None)
        _, piis = run_batched(sess, [w.ids for w in flat], args.eval_batch)
        prog.remove_task(task)
        per_type: dict[str, PRF] = {}
        tok_prf = PRF()
        tok_correct = tok_total = 0
        argmaxes[name] = []
        k = 0
        for ex, wins in zip(test, plans, strict=True):
            per_window = []
            for w in wins:
                logits = piis[k]
                k += 1
                per_window.append(decode_bio(softmax(logits, -1), w.offsets, PII_TAGS, ex.text,
                                             args.pii_threshold))
                gold = np.array(align_bio(ex.text, ex.spans, w.offsets))
                pred = logits.argmax(-1)
                real = gold >= 0
                argmaxes[name].append(pred[real])
                g, p = gold[real], pred[real]
                tok_correct += int((g == p).sum())
                tok_total += int(real.sum())
                tok_prf.tp += int(((p == g) & (g != o_idx)).sum())
                tok_prf.fp += int(((p != g) & (p != o_idx)).sum())
                tok_prf.fn += int(((p != g) & (g != o_idx)).sum())
            found = merge_windows(per_window)
            match_spans([(s.type, s.start, s.end) for s in ex.spans],
                        [(e.type, e.start, e.end) for e in found], per_type)
        m = micro(per_type)
        out[name] = {"pii_rows": len(test), "pii_entity_precision": m.precision,
                     "pii_entity_recall": m.recall, "pii_entity_f1": m.f1,
                     "pii_token_f1": tok_prf.f1,
                     "pii_token_accuracy": tok_correct / tok_total if tok_total else float("nan")}
    base = np.concatenate(argmaxes["fp32"]) if argmaxes["fp32"] else np.array([])
    for name in sessions:
        mine = np.concatenate(argmaxes[name]) if argmaxes[name] else np.array([])
        out[name]["pii_token_agree_fp32"] = float((mine == base).mean()) if len(base) else float(
            "nan")
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    check_model_dir(args.model_dir)
    from _ort import run_closed, session

    from router_svc.classify.tokenization import TextTokenizer

    out = Output("quantization", args)
    paths = {"fp32": args.model_dir / "model.onnx", "int8": int8_path(args, out)}
    sessions = {n: session(p, args.threads) for n, p in paths.items()}
    sessions["int8"] = RowAtATime(sessions["int8"])
    sizes = {n: p.stat().st_size / 2**20 for n, p in paths.items()}
    tok = TextTokenizer(args.model_dir / "tokenizer.json")
    speed: dict[tuple[str, int], list[float]] = {}
    lat: dict[tuple[str, int], list[float]] = {}
    acc: dict[str, dict] = {n: {} for n in VARIANTS}
    with progress() as prog:
        if not args.skip_speed:
            prompts = load_prompts(args.data_dir, args.prompts, args.pii_fraction, args.seed)
            rows = token_rows(args.model_dir / "tokenizer.json", [p.text for p in prompts],
                              args.max_len, args.seq_len)
            say(f"prompts: {rows.describe()}")
            batches = {b: make_batches(rows, b) for b in args.batches}
            plan = [(r, b, v) for r in range(args.rounds) for b in args.batches
                    for v in (VARIANTS if r % 2 == 0 else VARIANTS[::-1])]
            task = prog.add_task("speed", total=len(plan) * (args.duration + args.warmup))
            for r, b, v in plan:
                prog.update(task, description=f"speed round {r + 1}/{args.rounds}: batch {b}, "
                                               f"{v}")
                m = run_closed(sessions[v], batches[b], args.duration, args.warmup,
                               tick=lambda dt: prog.advance(task, dt))
                speed.setdefault((v, b), []).append(m.seqs_per_s)
                lat.setdefault((v, b), []).extend(m.latencies_s)
        if not args.skip_accuracy:
            for n, d in category_eval(args, sessions, tok, prog).items():
                acc[n].update(d)
            for n, d in pii_eval(args, sessions, tok, prog).items():
                acc[n].update(d)
            for n, d in sts_eval(args, sessions, tok, prog).items():
                acc[n].update(d)

    rows_out = []
    for v in VARIANTS:
        row = {"variant": v, "file": str(paths[v]), "size_mb": sizes[v],
               "size_x_fp32": ratio(sizes[v], sizes["fp32"])}
        for b in args.batches if not args.skip_speed else []:
            s = median(speed[(v, b)])
            lt = latency_ms(lat[(v, b)])
            row[f"b{b}_seqs_per_s"] = s
            row[f"b{b}_x_fp32"] = median(ratio(x, y) for x, y in
                                         zip(speed[(v, b)], speed[("fp32", b)], strict=True))
            row[f"b{b}_p50_ms"] = lt["p50_ms"]
            row[f"b{b}_p99_ms"] = lt["p99_ms"]
        row.update(acc[v])
        for k in ("category_accuracy", "pii_entity_f1", "pii_token_f1", "sts_spearman"):
            if k in acc[v]:
                row[f"{k}_delta"] = acc[v][k] - acc["fp32"][k]
        rows_out.append(row)
    out.write_csv(rows_out)
    print(f"## fp32 vs int8 (onnxruntime in-process, {args.threads} threads; baseline fp32)\n")
    if not args.skip_speed:
        cols = [("variant", "variant"), ("size_mb", "MB")]
        for b in args.batches:
            cols += [(f"b{b}_seqs_per_s", f"b{b} seq/s"), (f"b{b}_x_fp32", f"b{b} x fp32"),
                     (f"b{b}_p50_ms", f"b{b} p50 ms"), (f"b{b}_p99_ms", f"b{b} p99 ms")]
        print(markdown_table(rows_out, cols))
        print()
    if not args.skip_accuracy:
        print(markdown_table(rows_out, [
            ("variant", "variant"), ("category_accuracy", "category acc"),
            ("category_accuracy_delta", "delta"), ("category_agree_fp32", "agrees w/ fp32"),
            ("pii_entity_f1", "PII entity F1"), ("pii_entity_f1_delta", "delta"),
            ("pii_token_f1", "PII token F1"), ("pii_token_f1_delta", "delta"),
            ("pii_token_agree_fp32", "token agrees w/ fp32"), ("sts_spearman", "STS-B"),
            ("sts_spearman_delta", "delta")],
            digits={k: 3 for k in ("category_accuracy", "category_accuracy_delta",
                                   "category_agree_fp32", "pii_entity_f1",
                                   "pii_entity_f1_delta", "pii_token_f1",
                                   "pii_token_f1_delta", "pii_token_agree_fp32",
                                   "sts_spearman", "sts_spearman_delta")}))
        r0 = rows_out[0]
        print(f"\n(category: {r0.get('category_rows')} MMLU-Pro validation rows; PII: "
              f"{r0.get('pii_rows')} presidio test rows, threshold {args.pii_threshold})")
    if out.plot and not args.skip_speed:
        plot_bars(out.path(".png"), f"fp32 vs int8, onnxruntime {args.threads} threads",
                  [f"batch {b}" for b in args.batches],
                  {v: [median(speed[(v, b)]) for b in args.batches] for v in VARIANTS},
                  "sequences/s", baseline="fp32")
    out.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
