"""Does the router-side batcher help? (issue 3: "measure that the batching helps")

Two routers (``router-svc serve``, separate processes) in front of the same real Triton and the
same demo backend, identical except for ``batching``: one gathers concurrent requests into one
Triton call (``--max-batch`` 32, ``--max-wait-ms`` 2: the defaults), the other sends every
request on its own (max_batch_size 1, max_wait_ms 0; the baseline). Both are driven closed loop
with the same prompts at each ``--concurrency`` level, alternating A B, B A per round, through
``/api/v1/classify`` (the classifier path alone; ``--endpoint chat`` takes the whole ``auto``
path with the demo backend answering at once).

Reported per concurrency: requests/s, p50/p99 latency (medians over rounds), the ratio batched /
unbatched (median of per-round ratios), and from Triton's statistics the rows per Triton
request (what the router's batcher gathered) and rows per model execution (after Triton's own
dynamic batching).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

from _common import (
    Output,
    add_model_args,
    add_output_args,
    alternating,
    check_model_dir,
    int_list,
    load_prompts,
    markdown_table,
    median,
    plot_curves,
    progress,
    ratio,
    say,
)
from _loadgen import closed_loop, http_sender
from _stack import router_config, start_backend, start_router, triton_url_or_start

BATCHED, UNBATCHED = "batched", "unbatched"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="perf/batching.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap, int8=True)
    ap.add_argument("--triton-url", default=None,
                    help="gRPC host:port of a running Triton (default: start the embedded one)")
    ap.add_argument("--concurrency", default="1,8,32,64",
                    help="closed-loop concurrency levels (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=3, help="(default: %(default)s)")
    ap.add_argument("--duration", type=float, default=10.0,
                    help="seconds per side per round per level (default: %(default)s)")
    ap.add_argument("--warmup", type=float, default=1.0, help="(default: %(default)s)")
    ap.add_argument("--max-batch", type=int, default=32,
                    help="the batched router's batching.max_batch_size (default: %(default)s)")
    ap.add_argument("--max-wait-ms", type=float, default=0.0,
                    help="the batched router's batching.max_wait_ms (default: %(default)s)")
    ap.add_argument("--endpoint", choices=["classify", "chat"], default="classify",
                    help="classify: /api/v1/classify; chat: /v1/chat/completions with model "
                         "auto (default: %(default)s)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    args.levels = int_list(args.concurrency)
    return args


async def triton_counts(client) -> tuple[int, int, int]:
    s = await client.model_statistics()
    return s.inference_count, s.success_count, s.execution_count


async def run(args, out: Output) -> list[dict]:
    import aiohttp

    from router_svc.triton.client import TritonClient
    from router_svc.triton.launcher import free_port

    work = Path(tempfile.mkdtemp(prefix="perf-batching-", dir=out.dir))
    out.meta["work_dir"] = str(work)
    texts = [p.text for p in load_prompts(args.data_dir, args.prompts, args.pii_fraction,
                                          args.seed)]
    path = "/api/v1/classify" if args.endpoint == "classify" else "/v1/chat/completions"
    bodies = [json.dumps({"model": "auto", "messages": [{"role": "user", "content": t}],
                          "max_tokens": 32}).encode() for t in texts]
    per_round: dict[tuple[int, str], list[dict]] = {}
    with contextlib.ExitStack() as stack:
        url = await triton_url_or_start(stack, args.triton_url, args.model_dir, work,
                                       args.int8)
        backend, backend_url = start_backend(work)
        stack.callback(backend.stop)
        routers = {}
        for name, batching in ((BATCHED, {"max_batch_size": args.max_batch,
                                          "max_wait_ms": args.max_wait_ms}),
                               (UNBATCHED, {"max_batch_size": 1, "max_wait_ms": 0.0})):
            cfg = router_config(url, args.model_dir / "tokenizer.json", backend_url,
                                free_port(), batching=batching)
            svc, base = start_router(work, cfg, label=f"router-{name}")
            stack.callback(svc.stop)
            routers[name] = base
            say(f"{name} router {base}: batching {batching}")
        client = TritonClient(url, timeout_s=30.0)
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn,
                                         timeout=aiohttp.ClientTimeout(total=120)) as session:
            plan = [(c, r, side) for c in args.levels
                    for r, side in alternating([BATCHED, UNBATCHED], args.rounds)]
            with progress() as prog:
                task = prog.add_task("batching", total=len(plan) * (args.duration + args.warmup))
                for c, r, side in plan:
                    prog.update(task, description=f"concurrency {c}, round {r + 1}/"
                                                  f"{args.rounds}: {side}")
                    statuses: Counter = Counter()
                    before = await triton_counts(client)
                    res = await closed_loop(
                        http_sender(session, routers[side] + path, statuses=statuses), bodies,
                        c, args.duration, args.warmup, tick=lambda dt: prog.advance(task, dt))
                    after = await triton_counts(client)
                    d_rows, d_req, d_exe = (a - b for a, b in zip(after, before, strict=True))
                    s = res.summary()
                    s["rows_per_triton_request"] = ratio(d_rows, d_req)
                    s["rows_per_execution"] = ratio(d_rows, d_exe)
                    s["statuses"] = dict(statuses)
                    per_round.setdefault((c, side), []).append(s)
        await client.close()

    results = []
    for c in args.levels:
        base_rounds = per_round[(c, UNBATCHED)]
        for side in (UNBATCHED, BATCHED):
            rs = per_round[(c, side)]
            results.append({
                "concurrency": c, "router": side,
                "batching": (f"max_batch {args.max_batch}, wait {args.max_wait_ms:g} ms"
                             if side == BATCHED else "max_batch 1, wait 0 ms"),
                "throughput": median(r["throughput"] for r in rs),
                "x_unbatched": median(ratio(r["throughput"], b["throughput"])
                                      for r, b in zip(rs, base_rounds, strict=True)),
                "p50_ms": median(r["p50_ms"] for r in rs),
                "p99_ms": median(r["p99_ms"] for r in rs),
                "p50_x_unbatched": median(ratio(r["p50_ms"], b["p50_ms"])
                                          for r, b in zip(rs, base_rounds, strict=True)),
                "p99_x_unbatched": median(ratio(r["p99_ms"], b["p99_ms"])
                                          for r, b in zip(rs, base_rounds, strict=True)),
                "rows_per_triton_request": median(r["rows_per_triton_request"] for r in rs),
                "rows_per_execution": median(r["rows_per_execution"] for r in rs),
                "ok": sum(r["ok"] for r in rs), "failed": sum(r["failed"] for r in rs),
                "per_round": " ".join(f"{r['throughput']:.1f}" for r in rs),
            })
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    check_model_dir(args.model_dir)
    out = Output("batching", args)
    import uvloop

    results = uvloop.run(run(args, out))
    out.write_csv(results)
    print(f"## Router-side batching vs none ({args.endpoint} endpoint, closed loop, "
          f"{args.rounds} rounds x {args.duration:g}s; baseline: unbatched)\n")
    print(markdown_table(results, [
        ("concurrency", "concurrency"), ("router", "router"), ("batching", "batching"),
        ("throughput", "req/s"), ("x_unbatched", "x unbatched"), ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"), ("p50_x_unbatched", "p50 x"), ("p99_x_unbatched", "p99 x"),
        ("rows_per_triton_request", "rows/Triton req"), ("rows_per_execution", "rows/exec"),
        ("ok", "ok"), ("failed", "failed")]))
    if out.plot:
        series: dict[str, list[dict]] = {}
        for r in results:
            series.setdefault(r["router"], []).append(
                {"concurrency": r["concurrency"], "throughput": r["throughput"],
                 "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"]})
        plot_curves(out.path(".png"), "Router-side batching: throughput vs latency",
                    {UNBATCHED: series[UNBATCHED], BATCHED: series[BATCHED]},
                    baseline=UNBATCHED, load_key="concurrency", load_label="concurrency",
                    tput_label="requests/s")
    out.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
