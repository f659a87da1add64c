"""Hit rate of a repeated workload spread round robin over router replicas, side by side in one
run: two routers sharing one Milvus, two routers with their own hnswlib caches, one router.

All routers are ``router-svc serve`` processes (the example config, cache on, the shipped
cache settings) on one Triton and one demo backend; the Milvus pair shares a collection on
milvus-lite's server on loopback (``router_svc/cache/milvus_server.py``: a real Milvus over
gRPC, another process). The workload: ``--prompts`` MMLU-Pro questions, each sent
``--repeats`` times, in a random order (seeded, another per round); request ``i`` goes to
replica ``i % replicas``, as a round-robin load balancer sends it. Each request carries a fresh
``user`` field, so no request is an exact repeat of another: every one is embedded and looked
up (the semantic cache, not the per-process repeat memo). Each scenario and round has its own
API key, so its own tenant partition, so each starts cold.

Goal (issue 20): the shared Milvus pair's hit rate equals one replica's, ``1 - 1/repeats``
(only each question's first request misses); the hnswlib pair's is lower, each replica missing
each question once, and it stores (and asks the backend for) each answer up to twice. A request
answered without the cache (a PII refusal: the model's PII decision on a prompt can change with
the batch it shares with others) is counted apart, as "no cache".

    python perf/cache_replicas.py                        # ~5 min on 2 cores
    python perf/cache_replicas.py --smoke                # a minute: is it wired up
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import random
import secrets
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import RESULTS_DIR, add_model_args, alternating, load_prompts, machine_info, say
from _stack import router_config, start_backend, start_router, triton_url_or_start

SCENARIOS = {  # name -> (cache backend, replicas)
    "one replica (hnswlib)": ("hnswlib", 1),
    "2 replicas, own hnswlib caches": ("hnswlib", 2),
    "2 replicas, shared Milvus": ("milvus", 2),
}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap, int8=True)
    ap.set_defaults(prompts=200)
    ap.add_argument("--triton-url", help="gRPC host:port of a running Triton (default: start "
                    "the embedded CPU Triton)")
    ap.add_argument("--triton-queue-delay-us", type=int, default=None,
                    help="the embedded Triton's max_queue_delay_microseconds (default: the "
                    "router's, 0 on CPU); with 0, a call that queues behind a busy instance "
                    "can wait up to 500 ms in Triton's dynamic batcher, a small delay avoids it")
    ap.add_argument("--repeats", type=int, default=4, help="requests per question")
    ap.add_argument("--rounds", type=int, default=2,
                    help="rounds (another order and fresh tenants each)")
    ap.add_argument("--concurrency", type=int, default=1,
                    help="requests in flight (1: each answer is stored before the next request; "
                    "above 1 the model's PII decisions can depend on the batch a prompt shares)")
    ap.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    ap.add_argument("--no-plot", action="store_true", help="skip the PNG")
    ap.add_argument("--smoke", action="store_true", help="24 questions x 3, one round")
    args = ap.parse_args(argv)
    if args.smoke:
        args.prompts, args.repeats, args.rounds = 24, 3, 1
    if args.repeats < 2:
        ap.error("--repeats: at least 2 (one request per question has nothing to hit)")
    return args


def body(text: str, user: str) -> bytes:
    return json.dumps({"model": "auto", "user": user,
                       "messages": [{"role": "user", "content": text}]}).encode()


async def post(session, url: str, data: bytes, key: str) -> tuple[int, str, float]:
    """(status, x-router-cache, seconds) of one chat completion."""
    t0 = time.perf_counter()
    async with session.post(f"{url}/v1/chat/completions", data=data, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {key}"}) as r:
        await r.read()
        return r.status, r.headers.get("x-router-cache", "absent"), time.perf_counter() - t0


async def cacheable(session, url: str, texts: list[str]) -> list[str]:
    """The questions a router stores and finds again, under a tenant of their own: not flagged
    as PII (not stored) and not a near-duplicate of an earlier one (a hit at its first
    request would count for every scenario alike, but is no repeat)."""
    key, fresh = f"perf-filter-{secrets.token_hex(4)}", itertools.count()
    kept = []
    for text in texts:
        _, first, _ = await post(session, url, body(text, f"f{next(fresh)}"), key)
        _, again, _ = await post(session, url, body(text, f"f{next(fresh)}"), key)
        if first == "miss" and again == "hit":
            kept.append(text)
    return kept


async def run_scenario(session, urls: list[str], texts: list[str], repeats: int, seed: int,
                       concurrency: int, label: str) -> dict:
    from tqdm import tqdm

    order = [t for t in texts for _ in range(repeats)]
    random.Random(seed).shuffle(order)
    key = f"perf-replicas-{secrets.token_hex(6)}"  # a tenant of its own: a cold partition
    per_replica = [Counter() for _ in urls]
    latency: dict[str, list[float]] = {"hit": [], "miss": []}
    failed = 0
    queue = list(enumerate(order))
    queue.reverse()
    bar = tqdm(total=len(order), desc=label, unit="req", leave=False, file=sys.stderr)

    async def worker() -> None:
        nonlocal failed
        while queue:
            i, text = queue.pop()
            replica = i % len(urls)  # round robin over the replicas
            status, state, secs = await post(session, urls[replica], body(text, f"u{i}"), key)
            if status != 200:
                failed += 1
            per_replica[replica][state] += 1
            latency.setdefault(state, []).append(secs)
            bar.update()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    bar.close()
    hits = sum(c["hit"] for c in per_replica)
    return {"requests": len(order), "questions": len(texts), "hits": hits,
            "hit_rate": hits / len(order), "failed": failed,
            "backend_calls": sum(c["miss"] for c in per_replica),
            # neither: answered without the cache (a PII refusal: not looked up, not stored)
            "other": len(order) - sum(c["hit"] + c["miss"] for c in per_replica),
            "replica_hit_rate": [c["hit"] / max(1, sum(c.values())) for c in per_replica],
            "headers": [dict(c) for c in per_replica],
            "p50_hit_ms": _p50(latency["hit"]), "p50_miss_ms": _p50(latency["miss"])}


def _p50(values: list[float]) -> float:
    import numpy as np

    return float(np.percentile(values, 50) * 1e3) if values else float("nan")


async def run(args) -> dict:
    import aiohttp

    from router_svc.cache.milvus_server import MilvusLiteServer
    from router_svc.triton.launcher import free_port

    args.out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="perf-cache-replicas-", dir=args.out_dir))
    texts = [p.text for p in load_prompts(args.data_dir, args.prompts, 0.0, args.seed)]
    rows: list[dict] = []
    with contextlib.ExitStack() as stack:
        url = await triton_url_or_start(stack, args.triton_url, args.model_dir, work, args.int8,
                                        args.triton_queue_delay_us)
        backend, backend_url = start_backend(work)
        stack.callback(backend.stop)
        say("starting Milvus (milvus-lite's server on loopback)")
        milvus = MilvusLiteServer(work / "milvus.db").start()
        stack.callback(milvus.stop)

        def router(cache_backend: str, label: str) -> str:
            cfg = router_config(url, args.model_dir / "tokenizer.json", backend_url,
                                free_port(), cache=True)
            cfg["cache"]["capacity"] = 100_000
            if cache_backend == "milvus":  # both replicas: one collection
                cfg["cache"].update(backend="milvus", milvus={
                    "uri": milvus.uri, "collection": "perf_cache_replicas"})
            svc, base = start_router(work, cfg, label=label)
            stack.callback(svc.stop)
            return base

        say("starting 5 routers: one, an hnswlib pair, a Milvus pair")
        single = router("hnswlib", "router-single")
        targets = {
            "one replica (hnswlib)": [single],
            "2 replicas, own hnswlib caches": [router("hnswlib", "router-hnsw-a"),
                                               router("hnswlib", "router-hnsw-b")],
            "2 replicas, shared Milvus": [router("milvus", "router-milvus-a"),
                                          router("milvus", "router-milvus-b")],
        }
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            say(f"checking which of {len(texts)} questions are cacheable")
            texts = await cacheable(session, single, texts)
            say(f"{len(texts)} cacheable; {len(texts) * args.repeats} requests per scenario")
            for rnd, name in alternating(list(SCENARIOS), args.rounds):
                r = await run_scenario(session, targets[name], texts, args.repeats,
                                       args.seed * 1000 + rnd, args.concurrency,
                                       f"round {rnd} {name}")
                rows.append({"scenario": name, "round": rnd, **r})
                say(f"round {rnd} {name}: hit rate {r['hit_rate']:.3f} (replicas "
                    + " / ".join(f"{x:.3f}" for x in r["replica_hit_rate"])
                    + f"), backend calls {r['backend_calls']}, failed {r['failed']}")

    summary = {}
    for name in SCENARIOS:
        rs = [r for r in rows if r["scenario"] == name]
        n = len(rs[0]["replica_hit_rate"])
        summary[name] = {
            "hit_rate": sum(r["hit_rate"] for r in rs) / len(rs),
            "hit_rate_min": min(r["hit_rate"] for r in rs),
            "hit_rate_max": max(r["hit_rate"] for r in rs),
            "replica_hit_rate": [sum(r["replica_hit_rate"][i] for r in rs) / len(rs)
                                 for i in range(n)],
            "backend_calls": sum(r["backend_calls"] for r in rs) / len(rs),
            "other": sum(r["other"] for r in rs) / len(rs),
            "failed": sum(r["failed"] for r in rs),
            "p50_hit_ms": sorted(r["p50_hit_ms"] for r in rs)[len(rs) // 2],
        }
    # Every question misses once; requests answered without the cache cannot hit.
    requests = len(texts) * args.repeats
    ideal = 1 - (len(texts) + summary["one replica (hnswlib)"]["other"]) / requests
    result = {"summary": summary, "rounds": rows, "ideal_hit_rate": ideal,
              "ideal_without_refusals": 1 - 1 / args.repeats,
              "questions": len(texts), "repeats": args.repeats, "concurrency": args.concurrency,
              "smoke": args.smoke, "machine": machine_info()}
    stem = "cache_replicas" + ("_smoke" if args.smoke else "")
    (args.out_dir / f"{stem}.json").write_text(json.dumps(result, indent=2))
    report(summary, ideal, len(texts), args)
    if not args.no_plot:
        plot(summary, ideal, args.out_dir / f"{stem}.png")
    return result


def report(summary: dict, ideal: float, questions: int, args) -> None:
    from rich.console import Console
    from rich.table import Table

    one = summary["one replica (hnswlib)"]["hit_rate"]
    table = Table(title=f"{questions} questions x {args.repeats}, round robin, "
                        f"{args.rounds} round(s); ideal hit rate {ideal:.3f}")
    for col in ("scenario", "hit rate", "min-max", "per replica", "vs one replica",
                "backend calls", "no cache", "hit p50 ms", "failed"):
        table.add_column(col, justify="right" if col != "scenario" else "left")
    lines = ["| scenario | hit rate | per replica | vs one replica | backend calls | no cache | "
             "hit p50 ms | failed |", "|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        per = " / ".join(f"{x:.3f}" for x in s["replica_hit_rate"])
        vs = f"{s['hit_rate'] / one:.3f}"
        table.add_row(name, f"{s['hit_rate']:.3f}", f"{s['hit_rate_min']:.3f}-"
                      f"{s['hit_rate_max']:.3f}", per, vs, f"{s['backend_calls']:.0f}",
                      f"{s['other']:.0f}", f"{s['p50_hit_ms']:.1f}", str(s["failed"]))
        lines.append(f"| {name} | {s['hit_rate']:.3f} | {per} | {vs} | "
                     f"{s['backend_calls']:.0f} | {s['other']:.0f} | {s['p50_hit_ms']:.1f} | "
                     f"{s['failed']} |")
    Console(file=sys.stderr, width=140).print(table)
    print("\n".join(lines))
    milvus = summary["2 replicas, shared Milvus"]["hit_rate"]
    print(f"shared Milvus hit rate {milvus:.3f} vs one replica {one:.3f} "
          f"(goal: equal: {'met' if abs(milvus - one) < 0.005 else 'not met'}); "
          f"own hnswlib caches {summary['2 replicas, own hnswlib caches']['hit_rate']:.3f}")


def plot(summary: dict, ideal: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4))
    labels, values, colors = [], [], []
    for name, s in summary.items():
        labels.append(name.replace(", ", ",\n"))
        values.append(s["hit_rate"])
        colors.append("tab:blue")
        if len(s["replica_hit_rate"]) > 1 and "hnswlib" in name:
            for i, x in enumerate(s["replica_hit_rate"]):
                labels.append(f"  replica {'ab'[i]}")
                values.append(x)
                colors.append("tab:gray")
    ax.bar(range(len(values)), values, color=colors)
    ax.axhline(ideal, color="tab:green", linestyle="--",
               label=f"ideal {ideal:.3f} (each question misses once)")
    ax.set_xticks(range(len(values)), labels, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("hit rate")
    ax.set_title("Repeated workload, round robin over replicas")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    say(f"plot {path}")


def main(argv=None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    failed = sum(s["failed"] for s in result["summary"].values())
    if failed:
        print(f"error: {failed} requests failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
