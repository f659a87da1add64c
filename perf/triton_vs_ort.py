"""Throughput through Triton versus raw onnxruntime in-process: same model, threads, batch
shapes and prompts, measured side by side in one run (issue 2's target: Triton >= 85%).

(a) onnxruntime ``InferenceSession`` in this process, ``--threads`` intra-op threads, called
back to back with pre-padded batches; (b) the same ``model.onnx`` through the embedded Triton
(CPU, Python backend running onnxruntime with ``ort_intra_op_threads = --threads``), the same
pre-padded batches sent as one request each by the router's async ``TritonClient`` with
``--concurrency`` requests in flight, so Triton always has the next request queued.

By default Triton's dynamic batching is off for this comparison (``--triton-batching off``):
each request is executed exactly as sent, so both sides run the same batch shapes; ``on`` keeps
the production config, where Triton may merge queued requests into larger batches.

Rounds alternate A B, B A, ... per batch size to cancel machine noise; sequences/s are medians
over rounds, the ratio is the median of the per-round ratios (Triton / onnxruntime), and the
per-call latency p50/p99 is pooled over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    Output,
    add_model_args,
    add_output_args,
    alternating,
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

TARGET = 0.85


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="perf/triton_vs_ort.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--batch-sizes", default="1,8,32", help="(default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2,
                    help="onnxruntime intra-op threads on both sides (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=5, help="A/B rounds (default: %(default)s)")
    ap.add_argument("--duration", type=float, default=5.0,
                    help="seconds per side per round per batch size (default: %(default)s)")
    ap.add_argument("--warmup", type=float, default=1.0,
                    help="seconds of unmeasured calls before each measurement "
                         "(default: %(default)s)")
    ap.add_argument("--concurrency", type=int, default=2,
                    help="Triton requests in flight (default: %(default)s)")
    ap.add_argument("--triton-batching", choices=["off", "on"], default="off",
                    help="Triton dynamic batching: off = same batch shapes as in-process "
                         "(default: %(default)s)")
    ap.add_argument("--ort-spinning", choices=["on", "off"], default="on",
                    help="onnxruntime's intra-op spinning inside Triton's Python backend "
                         "(default: %(default)s, onnxruntime's own default)")
    ap.add_argument("--triton-url", default=None,
                    help="use a running Triton (gRPC host:port) instead of the embedded one; "
                         "its thread count and batching are then its own")
    add_output_args(ap)
    args = ap.parse_args(argv)
    args.batches = int_list(args.batch_sizes)
    return args


def triton_config_text(model_dir: Path, threads: int, max_batch: int, batching: bool,
                       spinning: bool = True) -> str:
    from router_svc.labels import EMBEDDING
    from router_svc.triton.repository import onnx_output_dims, render_config

    dim = int(onnx_output_dims(model_dir / "model.onnx")[EMBEDDING][-1])
    text = render_config("python", max_batch_size=max(64, max_batch), embedding_dim=dim,
                         ort_intra_op_threads=threads, ort_allow_spinning=spinning)
    if not batching:  # no dynamic_batching block: Triton runs each request as it comes
        text = re.sub(r"dynamic_batching \{.*?\n\}\n", "", text, flags=re.S)
    return text


async def triton_run(client, batches, duration_s: float, warmup_s: float, concurrency: int,
                     tick=None) -> dict:
    """``concurrency`` workers sending the batches back to back for ``duration_s``."""
    lat: list[float] = []
    rows = 0
    first = last = None
    t_start = time.perf_counter()
    t_measure = t_start + warmup_s
    t_end = t_measure + duration_s
    counter = iter(range(10**12))

    async def worker():
        nonlocal rows, first, last
        while True:
            ids, mask = batches[next(counter) % len(batches)]
            t0 = time.perf_counter()
            if t0 >= t_end:
                return
            await client.infer(ids, mask)
            t1 = time.perf_counter()
            if t0 >= t_measure:
                first = t0 if first is None else min(first, t0)
                last = t1 if last is None else max(last, t1)
                rows += len(ids)
                lat.append(t1 - t0)

    async def ticker():
        prev = time.perf_counter()
        while True:
            await asyncio.sleep(0.25)
            now = time.perf_counter()
            if tick:
                tick(now - prev)
            prev = now

    tk = asyncio.create_task(ticker())
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        tk.cancel()
    secs = (last - first) if first is not None else float("nan")
    return {"seqs_per_s": rows / secs if secs else float("nan"), "lat": lat}


async def run(args, out: Output) -> list[dict]:
    from _ort import run_closed, session

    from router_svc.triton.client import TritonClient
    from router_svc.triton.launcher import TritonServer

    prompts = load_prompts(args.data_dir, args.prompts, args.pii_fraction, args.seed)
    rows = token_rows(args.model_dir / "tokenizer.json", [p.text for p in prompts],
                      args.max_len, args.seq_len)
    say(f"prompts: {rows.describe()}")
    batches = {b: make_batches(rows, b) for b in args.batches}
    sess = session(args.model_dir / "model.onnx", args.threads)
    per_round: dict[tuple[int, str], list[float]] = {}
    lats: dict[tuple[int, str], list[float]] = {}
    exec_batch: dict[int, list[float]] = {}

    async with contextlib.AsyncExitStack() as stack:
        url = args.triton_url
        if url is None:
            work = Path(tempfile.mkdtemp(prefix="perf-triton-vs-ort-", dir=out.dir))
            server = TritonServer(
                args.model_dir, work_dir=work, startup_timeout_s=300,
                config_text=triton_config_text(args.model_dir, args.threads, max(args.batches),
                                               args.triton_batching == "on",
                                               args.ort_spinning == "on"))
            say(f"starting Triton (threads {args.threads}, dynamic batching "
                f"{args.triton_batching}, onnxruntime spinning {args.ort_spinning})")
            await server.astart()
            stack.push_async_callback(server.astop)
            url = server.grpc_url
        client = TritonClient(url, timeout_s=120.0)
        stack.push_async_callback(client.close)
        await client.load_model_info()

        plan = [(r, b, side) for b in args.batches
                for r, side in alternating(["onnxruntime", "triton"], args.rounds)]
        # interleave batch sizes within a round so each round spans all of them
        plan.sort(key=lambda x: (x[0], args.batches.index(x[1])))
        total = len(plan) * (args.duration + args.warmup)
        with progress() as prog:
            task = prog.add_task("rounds", total=total)
            for r, b, side in plan:
                prog.update(task, description=f"round {r + 1}/{args.rounds} batch {b}: {side}")

                def tick(dt):
                    prog.advance(task, dt)

                if side == "onnxruntime":
                    m = await asyncio.to_thread(run_closed, sess, batches[b], args.duration,
                                                args.warmup, tick)
                    sps, lat = m.seqs_per_s, m.latencies_s
                else:
                    before = await client.model_statistics()
                    res = await triton_run(client, batches[b], args.duration, args.warmup,
                                           args.concurrency, tick)
                    after = await client.model_statistics()
                    d_exe = after.execution_count - before.execution_count
                    if d_exe:
                        exec_batch.setdefault(b, []).append(
                            (after.inference_count - before.inference_count) / d_exe)
                    sps, lat = res["seqs_per_s"], res["lat"]
                per_round.setdefault((b, side), []).append(sps)
                lats.setdefault((b, side), []).extend(lat)

    results = []
    for b in args.batches:
        o, t = per_round[(b, "onnxruntime")], per_round[(b, "triton")]
        ratios = [ratio(y, x) for x, y in zip(o, t, strict=True)]
        lo, lt = latency_ms(lats[(b, "onnxruntime")]), latency_ms(lats[(b, "triton")])
        r_med = median(ratios)
        results.append({
            "batch": b, "threads": args.threads, "rounds": args.rounds,
            "ort_seqs_per_s": median(o), "triton_seqs_per_s": median(t),
            "triton_x_ort": r_med, "ratio_min": min(ratios), "ratio_max": max(ratios),
            "target": TARGET, "met": "yes" if r_med >= TARGET else "no",
            "ort_p50_ms": lo["p50_ms"], "ort_p99_ms": lo["p99_ms"],
            "triton_p50_ms": lt["p50_ms"], "triton_p99_ms": lt["p99_ms"],
            "p50_x_ort": ratio(lt["p50_ms"], lo["p50_ms"]),
            "p99_x_ort": ratio(lt["p99_ms"], lo["p99_ms"]),
            "triton_exec_batch": median(exec_batch.get(b, [])),
            "ort_rounds": " ".join(f"{v:.1f}" for v in o),
            "triton_rounds": " ".join(f"{v:.1f}" for v in t),
        })
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    check_model_dir(args.model_dir)
    out = Output("triton_vs_ort", args)
    import uvloop

    results = uvloop.run(run(args, out))
    out.write_csv(results)
    print(f"## Triton vs in-process onnxruntime ({args.threads} threads, {args.rounds} rounds "
          f"x {args.duration:g}s, Triton dynamic batching {args.triton_batching}, "
          f"{args.concurrency} in flight)\n")
    print(markdown_table(results, [
        ("batch", "batch"), ("ort_seqs_per_s", "ort seq/s"),
        ("triton_seqs_per_s", "triton seq/s"), ("triton_x_ort", "triton/ort"),
        ("ratio_min", "min"), ("ratio_max", "max"), ("met", f">= {TARGET}"),
        ("ort_p50_ms", "ort p50 ms"), ("ort_p99_ms", "ort p99 ms"),
        ("triton_p50_ms", "triton p50 ms"), ("triton_p99_ms", "triton p99 ms"),
        ("p50_x_ort", "p50 x"), ("p99_x_ort", "p99 x"),
        ("triton_exec_batch", "exec batch")], digits={"ratio_min": 3, "ratio_max": 3,
                                                      "triton_exec_batch": 1}))
    if out.plot:
        plot_bars(out.path(".png"), f"Triton vs in-process onnxruntime ({args.threads} threads)",
                  [f"batch {r['batch']}" for r in results],
                  {"onnxruntime": [r["ort_seqs_per_s"] for r in results],
                   "triton": [r["triton_seqs_per_s"] for r in results]},
                  "sequences/s", baseline="onnxruntime", target=TARGET)
    out.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
