"""Raw onnxruntime in-process: the baseline every Triton and router figure is held against.

The dual-head ``model.onnx`` in an ``InferenceSession`` made exactly as the Triton
Python-backend model makes it (intra-op threads as given, inter-op 1, all three outputs), called
back to back by one caller on pre-padded batches of the same real prompts the other scripts use
(MMLU-Pro questions and PII sentences; ``--seq-len`` fixes the shape).

For every thread count and batch size: sequences/s, calls/s and per-call latency p50/p99,
alternated in rounds; figures are medians over rounds and also given as ratios to the first
thread count at batch 1 (the baseline of this run) and to batch 1 at the same thread count.
"""

from __future__ import annotations

import argparse
import sys

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
    plot_bars,
    progress,
    ratio,
    say,
    token_rows,
)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="perf/onnxruntime_baseline.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--batch-sizes", default="1,8,32", help="(default: %(default)s)")
    ap.add_argument("--threads", default="2",
                    help="intra-op thread counts, comma list; 0 = onnxruntime decides "
                         "(default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=3, help="(default: %(default)s)")
    ap.add_argument("--duration", type=float, default=5.0,
                    help="seconds per measurement (default: %(default)s)")
    ap.add_argument("--warmup", type=float, default=1.0, help="(default: %(default)s)")
    ap.add_argument("--provider", choices=["cpu", "cuda"], default="cpu",
                    help="cuda needs onnxruntime-gpu (default: %(default)s)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    args.batches = int_list(args.batch_sizes)
    args.thread_counts = int_list(args.threads)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    check_model_dir(args.model_dir)
    from _ort import run_closed, session

    out = Output("onnxruntime_baseline", args)
    prompts = load_prompts(args.data_dir, args.prompts, args.pii_fraction, args.seed)
    rows = token_rows(args.model_dir / "tokenizer.json", [p.text for p in prompts],
                      args.max_len, args.seq_len)
    say(f"prompts: {rows.describe()}")
    batches = {b: make_batches(rows, b) for b in args.batches}
    sessions = {t: session(args.model_dir / "model.onnx", t, args.provider)
                for t in args.thread_counts}
    sps: dict[tuple[int, int], list[float]] = {}
    lat: dict[tuple[int, int], list[float]] = {}
    plan = [(r, t, b) for r in range(args.rounds) for t in args.thread_counts
            for b in (args.batches if r % 2 == 0 else list(reversed(args.batches)))]
    with progress() as prog:
        task = prog.add_task("onnxruntime", total=len(plan) * (args.duration + args.warmup))
        for r, t, b in plan:
            prog.update(task, description=f"round {r + 1}/{args.rounds}: {t} threads, batch {b}")
            m = run_closed(sessions[t], batches[b], args.duration, args.warmup,
                           tick=lambda dt: prog.advance(task, dt))
            sps.setdefault((t, b), []).append(m.seqs_per_s)
            lat.setdefault((t, b), []).extend(m.latencies_s)

    t0, b0 = args.thread_counts[0], args.batches[0]
    base = median(sps[(t0, b0)])
    results = []
    for t in args.thread_counts:
        for b in args.batches:
            s = median(sps[(t, b)])
            lt = latency_ms(lat[(t, b)])
            results.append({
                "threads": t, "batch": b, "seqs_per_s": s,
                "x_baseline": ratio(s, base),
                "x_batch1": ratio(s, median(sps[(t, b0)])),
                "p50_ms": lt["p50_ms"], "p99_ms": lt["p99_ms"],
                "p50_per_seq_ms": lt["p50_ms"] / b,
                "rounds": " ".join(f"{v:.1f}" for v in sps[(t, b)]),
            })
    out.write_csv(results)
    print(f"## onnxruntime in-process ({args.provider}; {rows.describe()}; {args.rounds} rounds "
          f"x {args.duration:g}s)\n")
    print(f"Baseline: {t0} threads, batch {b0} = {base:.1f} sequences/s\n")
    print(markdown_table(results, [
        ("threads", "threads"), ("batch", "batch"), ("seqs_per_s", "seq/s"),
        ("x_baseline", "x baseline"), ("x_batch1", "x batch 1"), ("p50_ms", "p50 ms/call"),
        ("p99_ms", "p99 ms/call"), ("p50_per_seq_ms", "p50 ms/seq"), ("rounds", "per round")]))
    if out.plot:
        plot_bars(out.path(".png"), "onnxruntime in-process", [f"batch {b}" for b in args.batches],
                  {f"{t} threads": [median(sps[(t, b)]) for b in args.batches]
                   for t in args.thread_counts}, "sequences/s",
                  baseline=f"{t0} threads")
    out.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
