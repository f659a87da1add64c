"""A cache-hit request end to end against the miss path, side by side in one run.

Both go through ``router-svc serve`` (its own process) with the cache on, in front of the demo
backend (answers at once) and Triton:

- hit: the prompts were stored in a warm-up pass; each request is tokenised, embedded by
  Triton, looked up and answered from the cache (no backend call);
- miss: the same prompts under a fresh API key per request (its own tenant partition), so
  each is tokenised, embedded, looked up (miss), sent to the backend and stored.

Rounds alternate hit/miss (A B, B A, ...); the medians of the rounds are reported. Every hit
request is checked for ``x-router-cache: hit`` and every miss for ``miss``. Only MMLU-Pro
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
    add_model_args(ap)
    ap.add_argument("--triton-url", help="gRPC host:port of a running Triton (default: start "
                    "the embedded CPU Triton)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    ap.add_argument("--smoke", action="store_true",
                    help="2 s rounds, 1 round, 64 prompts, concurrency 4")
    args = ap.parse_args(argv)
    if args.smoke:
        args.duration, args.rounds, args.prompts, args.concurrency = 2.0, 1, 64, 4
    return args


async def run(args) -> dict:
    import aiohttp

    from router_svc.triton_launcher import free_port

    args.out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="perf-cache-hit-", dir=args.out_dir))
    texts = [p.text for p in load_prompts(args.data_dir, args.prompts, 0.0, args.seed)]
    bodies = [json.dumps({"model": "auto", "messages": [{"role": "user", "content": t}]}).encode()
              for t in texts]
    with contextlib.ExitStack() as stack:
        url = await triton_url_or_start(stack, args.triton_url, args.model_dir, work)
        backend, backend_url = start_backend(work)
        stack.callback(backend.stop)
        cfg = router_config(url, args.model_dir / "tokenizer.json", backend_url, free_port(),
                            cache=True)
        cfg["cache"]["capacity"] = 100_000
        router, router_url = start_router(work, cfg)
        stack.callback(router.stop)
        endpoint = f"{router_url}/v1/chat/completions"
        seen: dict[str, Counter] = {"hit": Counter(), "miss": Counter()}
        keys = itertools.count()

        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as session:

            def sender(mode: str):
                async def send(body: bytes) -> bool:
                    key = "perf-hit" if mode == "hit" else f"perf-miss-{next(keys)}"
                    headers = {"Content-Type": "application/json",
                               "Authorization": f"Bearer {key}"}
                    async with session.post(endpoint, data=body, headers=headers) as r:
                        await r.read()
                        seen[mode][r.headers.get("x-router-cache", "absent")] += 1
                        return r.status == 200
                return send

            say(f"warm-up: storing {len(bodies)} answers")
            warm = sender("hit")
            for b in bodies:  # one pass, in order, so every prompt is stored
                await warm(b)
            kept = []  # what the model flags as PII is refused or not stored: leave it out
            for b in bodies:
                before = seen["hit"]["hit"]
                await warm(b)
                if seen["hit"]["hit"] > before:
                    kept.append(b)
            say(f"{len(kept)} of {len(bodies)} prompts cacheable (the rest: PII found)")
            bodies = kept
            seen["hit"].clear()
            rows: dict[str, list[dict]] = {"hit": [], "miss": []}
            for rnd, mode in alternating(["hit", "miss"], args.rounds):
                r = await closed_loop(sender(mode), bodies, args.concurrency, args.duration,
                                      warmup_s=0.5)
                s = {"round": rnd, **r.summary()}
                rows[mode].append(s)
                say(f"round {rnd} {mode:4s}: {s['throughput']:.0f} req/s, "
                    f"p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms, failed {s['failed']}")
    summary = {
        mode: {k: median(r[k] for r in rs) for k in ("throughput", "p50_ms", "p99_ms")}
        for mode, rs in rows.items()
    }
    summary["hit_vs_miss_throughput"] = ratio(summary["hit"]["throughput"],
                                              summary["miss"]["throughput"])
    summary["cache_headers"] = {m: dict(c) for m, c in seen.items()}
    result = {"summary": summary, "rounds": rows, "concurrency": args.concurrency,
              "duration_s": args.duration, "prompts": len(bodies), "smoke": args.smoke,
              "machine": machine_info()}
    out = args.out_dir / ("cache_hit_e2e_smoke.json" if args.smoke else "cache_hit_e2e.json")
    out.write_text(json.dumps(result, indent=2))
    print("| path | throughput (req/s) | p50 (ms) | p99 (ms) |\n|---|---|---|---|")
    for mode in ("hit", "miss"):
        m = summary[mode]
        print(f"| {mode} | {m['throughput']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} |")
    print(f"cache headers seen: {summary['cache_headers']}; results {out}")
    print(f"hit_p50_ms={summary['hit']['p50_ms']:.2f} hit_p99_ms={summary['hit']['p99_ms']:.2f} "
          f"hit_vs_miss_throughput={summary['hit_vs_miss_throughput']:.2f}")
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    heads = result["summary"]["cache_headers"]
    wrong = sum(n for k, n in heads["hit"].items() if k != "hit") + sum(
        n for k, n in heads["miss"].items() if k != "miss")
    if wrong:
        print(f"error: {wrong} requests were not the expected hit/miss", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
