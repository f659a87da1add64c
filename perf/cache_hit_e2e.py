"""A cache hit end to end against the miss path, side by side in one run.

All paths go through ``router-svc serve`` (its own process) with the cache on, in front of
the demo backend and Triton:

- repeat: the very request stored in a warm-up pass, again: the repeat memo answers it from
  the cache without tokenising or a Triton call (``x-router-cache-repeat: 1``);
- hit: the same prompts with a fresh ``user`` field per request (no part of the cache key,
  but of the request's identity), so each is tokenised, embedded by Triton, looked up and
  answered from the cache (no backend call): the semantic hit path;
- miss: the same prompts under a fresh API key per request (its own tenant partition), so
  each is tokenised, embedded, looked up (miss), sent to the backend and stored.

The miss path's cost is the router's work plus the backend's answer time, which is what the
cache saves. The demo backend answers at once (0 ms: the router's own floor, both paths then
bound by the same forward pass) and, with ``--backend-delays-ms``, after a fixed delay standing
in for an LLM's generation time (a short answer from a small model on a GPU takes a few hundred
ms; a chat answer of a few hundred tokens, seconds). Each delay has its own backend and router
process (same config, same Triton); its miss path (``miss+Nms``) runs in the same alternating
rounds as the others.

Each path is measured twice: at concurrency 1 (latency: what one client sees) and at
``--concurrency`` (throughput). Rounds alternate the paths (A B C, C B A, ...); medians of
the rounds are reported. Every answer's ``x-router-cache`` header is checked. Only MMLU-Pro
questions are used (requests with PII are not stored). Issue 4's targets: hit p50 at most
10 ms and hit throughput at least 5x the miss path's.

    python perf/cache_hit_e2e.py                       # full run
    python perf/cache_hit_e2e.py --smoke               # seconds: is it wired up
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

from _common import (
    RESULTS_DIR,
    add_model_args,
    alternating,
    load_prompts,
    machine_info,
    median,
    ratio,
    say,
)
from _loadgen import closed_loop
from _stack import router_config, start_backend, start_router, triton_url_or_start


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap, int8=True)
    ap.add_argument("--triton-url", help="gRPC host:port of a running Triton (default: start "
                    "the embedded CPU Triton)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backend-delays-ms", default="0,200,1000",
                    help="comma-separated answer delays of the demo backend for the miss path; "
                    "0 (the router's own floor) is always measured")
    ap.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    ap.add_argument("--smoke", action="store_true",
                    help="2 s rounds, 1 round, 64 prompts, concurrency 4")
    args = ap.parse_args(argv)
    try:
        args.delays_ms = sorted({0} | {int(d) for d in args.backend_delays_ms.split(",") if d})
    except ValueError:
        ap.error(f"--backend-delays-ms: integers separated by commas, got "
                 f"{args.backend_delays_ms!r}")
    if args.delays_ms[0] < 0:
        ap.error("--backend-delays-ms: a delay cannot be negative")
    if args.smoke:
        args.duration, args.rounds, args.prompts, args.concurrency = 2.0, 1, 64, 4
    return args


def miss_mode(delay_ms: int) -> str:
    return "miss" if delay_ms == 0 else f"miss+{delay_ms}ms"


async def run(args) -> dict:
    import aiohttp

    from router_svc.triton.launcher import free_port

    args.out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="perf-cache-hit-", dir=args.out_dir))
    texts = [p.text for p in load_prompts(args.data_dir, args.prompts, 0.0, args.seed)]
    bodies = [json.dumps({"model": "auto", "messages": [{"role": "user", "content": t}]}).encode()
              for t in texts]
    with contextlib.ExitStack() as stack:
        url = await triton_url_or_start(stack, args.triton_url, args.model_dir, work,
                                       args.int8)
        endpoints: dict[int, str] = {}  # backend delay (ms) -> the router in front of it
        for delay_ms in args.delays_ms:
            backend, backend_url = start_backend(work, delay_s=delay_ms / 1000)
            stack.callback(backend.stop)
            cfg = router_config(url, args.model_dir / "tokenizer.json", backend_url, free_port(),
                                cache=True)
            cfg["cache"]["capacity"] = 100_000
            router, router_url = start_router(work, cfg)
            stack.callback(router.stop)
            endpoints[delay_ms] = f"{router_url}/v1/chat/completions"
        modes = ("repeat", "hit", *(miss_mode(d) for d in args.delays_ms))
        target = {"repeat": endpoints[0], "hit": endpoints[0]}
        target.update({miss_mode(d): endpoints[d] for d in args.delays_ms})
        seen: dict[str, Counter] = {m: Counter() for m in modes}
        fresh = itertools.count()

        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as session:

            def sender(mode: str):
                async def send(body: bytes) -> bool:
                    miss = mode.startswith("miss")
                    key = f"perf-miss-{next(fresh)}" if miss else "perf-hit"
                    if mode == "hit":  # same cache key, another request: no repeat memo
                        body = body[:-1] + b', "user": "u%d"}' % next(fresh)
                    headers = {"Content-Type": "application/json",
                               "Authorization": f"Bearer {key}"}
                    async with session.post(target[mode], data=body,
                                            headers=headers) as r:
                        await r.read()
                        state = r.headers.get("x-router-cache", "absent")
                        if r.headers.get("x-router-cache-repeat") == "1":
                            state += "+repeat"
                        seen[mode][state] += 1
                        return r.status == 200
                return send

            say(f"warm-up: storing {len(bodies)} answers")
            warm = sender("repeat")
            for b in bodies:  # one pass, in order, so every prompt is stored
                await warm(b)
            kept = []  # what the model flags as PII is refused or not stored: leave it out
            for b in bodies:
                before = seen["repeat"]["hit+repeat"]
                await warm(b)
                if seen["repeat"]["hit+repeat"] > before:
                    kept.append(b)
            say(f"{len(kept)} of {len(bodies)} prompts cacheable (the rest: PII found)")
            bodies = kept
            for c in seen.values():
                c.clear()
            rows: list[dict] = []
            for load in (1, args.concurrency):
                for rnd, mode in alternating(modes, args.rounds):
                    r = await closed_loop(sender(mode), bodies, load, args.duration,
                                          warmup_s=0.5)
                    s = {"mode": mode, "concurrency": load, "round": rnd, **r.summary()}
                    rows.append(s)
                    say(f"c={load:<3d} round {rnd} {mode:6s}: {s['throughput']:.0f} req/s, "
                        f"p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms, "
                        f"failed {s['failed']}")

    c = args.concurrency
    summary: dict = {}
    for load in (1, c):
        for mode in modes:
            rs = [r for r in rows if r["mode"] == mode and r["concurrency"] == load]
            summary[f"{mode}@{load}"] = {k: median(r[k] for r in rs)
                                         for k in ("throughput", "p50_ms", "p99_ms")}
    misses = [miss_mode(d) for d in args.delays_ms]
    for load in (1, c):
        for miss in misses:
            summary[f"hit_vs_{miss}@{load}"] = ratio(summary[f"hit@{load}"]["throughput"],
                                                      summary[f"{miss}@{load}"]["throughput"])
    for mode in ("hit", "repeat"):
        summary[f"{mode}_vs_miss_throughput"] = ratio(summary[f"{mode}@{c}"]["throughput"],
                                                      summary[f"miss@{c}"]["throughput"])
    summary["cache_headers"] = {m: dict(n) for m, n in seen.items()}
    result = {"summary": summary, "rounds": rows, "concurrency": c,
              "backend_delays_ms": args.delays_ms, "duration_s": args.duration,
              "prompts": len(bodies), "smoke": args.smoke, "machine": machine_info()}
    out = args.out_dir / ("cache_hit_e2e_smoke.json" if args.smoke else "cache_hit_e2e.json")
    out.write_text(json.dumps(result, indent=2))
    print("| path | concurrency | throughput (req/s) | hit / this | p50 (ms) | p99 (ms) |")
    print("|---|---|---|---|---|---|")
    for load in (1, c):
        for mode in modes:
            m = summary[f"{mode}@{load}"]
            x = ratio(summary[f"hit@{load}"]["throughput"], m["throughput"])
            print(f"| {mode} | {load} | {m['throughput']:.1f} | {x:.2f} | {m['p50_ms']:.2f} | "
                  f"{m['p99_ms']:.2f} |")
    print(f"cache headers seen: {summary['cache_headers']}; results {out}")
    per_delay = " ".join(f"hit_vs_{miss.replace('+', '_')}@{c}="
                         f"{summary[f'hit_vs_{miss}@{c}']:.2f}" for miss in misses[1:])
    print(f"hit_p50_ms={summary['hit@1']['p50_ms']:.2f} "
          f"repeat_p50_ms={summary['repeat@1']['p50_ms']:.2f} "
          f"hit_vs_miss_throughput={summary['hit_vs_miss_throughput']:.2f} "
          f"repeat_vs_miss_throughput={summary['repeat_vs_miss_throughput']:.2f} {per_delay}")
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    heads = result["summary"]["cache_headers"]
    # A repeat may come back as a plain hit: the repeat memo's lookup does not wait while the
    # cache's maintenance thread holds the index lock, and the whole pipeline then answers it.
    expected = {"repeat": {"hit+repeat", "hit"}, "hit": {"hit"}}
    wrong = sum(n for mode, counts in heads.items() for k, n in counts.items()
                if k not in expected.get(mode, {"miss"}))
    if wrong:
        print(f"error: {wrong} requests were not the expected hit/miss", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
