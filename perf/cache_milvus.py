"""The shared cache on Milvus against the in-process hnswlib cache: lookup p50/p99 at 10,000
and 100,000 entries, side by side in one run.

Both caches hold the same random L2-normalised 384-d vectors spread over ``--partitions``
partitions (a realistic cache has many: model x tenant x context x parameters) and answer the
same near-duplicate queries (a stored vector plus noise, similarity about 0.97: hits) through
their async ``lookup``, the text guard on. Milvus is milvus-lite's server on loopback (its
local mode indexes with FLAT or IVF_FLAT; a Milvus standalone uses HNSW under AUTOINDEX), so
the figures include a gRPC round trip and the thread hop every Milvus call takes.

    python perf/cache_milvus.py                       # 10k and 100k, a few minutes
    python perf/cache_milvus.py --entries 10000 --lookups 200
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from router_svc.cache.milvus import MilvusCache, encode_payload, literal  # noqa: E402
from router_svc.cache.milvus_server import MilvusLiteServer  # noqa: E402
from router_svc.cache.store import CachedResponse, HnswCache  # noqa: E402

DIM = 384
THRESHOLD = 0.9


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def answer(i: int) -> CachedResponse:
    body = {"id": f"chatcmpl-{i}", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant",
                "content": f"Answer {i}: " + "The quick brown fox jumps. " * 20}}]}
    return CachedResponse("chat", body)


def percentiles(samples: list[float]) -> tuple[float, float]:
    a = np.array(samples) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


async def measure(cache, vecs: np.ndarray, parts: list[str], queries: list[int],
                  rng: np.random.Generator) -> tuple[float, float, float]:
    times, hits = [], 0
    for i in queries:
        q = vecs[i] + rng.standard_normal(DIM).astype(np.float32) * 0.012
        t0 = time.perf_counter()
        hit = await cache.lookup(parts[i], q, THRESHOLD, text=f"question {i}")
        times.append(time.perf_counter() - t0)
        hits += hit is not None
    p50, p99 = percentiles(times)
    return p50, p99, hits / len(queries)


def fill_hnsw(vecs: np.ndarray, parts: list[str]) -> HnswCache:
    cache = HnswCache(DIM, capacity=len(vecs) + 1, ttl_s=86_400)
    for i, v in enumerate(vecs):
        cache.store_sync(parts[i], v, f"question {i}", answer(i))
    cache.sweep_sync()  # builds the HNSW index of partitions past hnsw_min_entries
    return cache


def fill_milvus(cache: MilvusCache, vecs: np.ndarray, parts: list[str]) -> None:
    client, now = cache._client, time.time()
    batch = 2000
    for s in range(0, len(vecs), batch):
        rows = [{"id": i + 1, "vector": vecs[i].tolist(), "partition": literal(parts[i]),
                 "tenant": "t", "created_at": now, "expires_at": now + 86_400,
                 "payload": encode_payload(f"question {i}", answer(i))}
                for i in range(s, min(len(vecs), s + batch))]
        client.insert(cache.collection, rows, timeout=120)
    client.flush(cache.collection)


async def run(args: argparse.Namespace) -> list[tuple]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = MilvusLiteServer(Path(tmp) / "bench.db").start()
        try:
            for n in args.entries:
                rng = np.random.default_rng(n)
                vecs = unit_rows(rng, n)
                parts = [f"{k:064x}" for k in rng.integers(0, args.partitions, n)]
                queries = list(rng.choice(n, args.lookups, replace=False))
                t0 = time.perf_counter()
                hnsw = fill_hnsw(vecs, parts)
                fill_h = time.perf_counter() - t0
                milvus = MilvusCache(server.uri, DIM, collection=f"bench_{n}",
                                     capacity=n + 1, ttl_s=86_400, timeout_s=30)
                assert await milvus.start()
                t0 = time.perf_counter()
                fill_milvus(milvus, vecs, parts)
                fill_m = time.perf_counter() - t0
                print(f"{n} entries: filled hnswlib in {fill_h:.0f}s, Milvus in {fill_m:.0f}s",
                      file=sys.stderr)
                await measure(milvus, vecs, parts, queries[:20], rng)  # warm up both
                await measure(hnsw, vecs, parts, queries[:20], rng)
                res = {"hnswlib": [], "milvus": []}
                for _ in range(args.rounds):  # alternate: drifts of the machine fall on both
                    res["hnswlib"].append(await measure(hnsw, vecs, parts, queries, rng))
                    res["milvus"].append(await measure(milvus, vecs, parts, queries, rng))
                for name, r in res.items():
                    p50 = float(np.median([x[0] for x in r]))
                    p99 = float(np.median([x[1] for x in r]))
                    rate = float(np.mean([x[2] for x in r]))
                    rows.append((n, name, p50, p99, rate))
                await milvus.close()
                await hnsw.close()
        finally:
            server.stop()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--partitions", type=int, default=20)
    ap.add_argument("--lookups", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rows = asyncio.run(run(args))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Cache lookup, {DIM}-d, {args.partitions} partitions, "
                        f"{args.lookups} near-duplicate lookups x {args.rounds} rounds")
    for col in ("entries", "backend", "p50 ms", "p99 ms", "hit rate"):
        table.add_column(col, justify="right")
    for n, name, p50, p99, rate in rows:
        table.add_row(f"{n:,}", name, f"{p50:.2f}", f"{p99:.2f}", f"{rate:.2f}")
    Console().print(table)
    print("| entries | backend | p50 ms | p99 ms | hit rate |\n| --- | --- | --- | --- | --- |")
    for n, name, p50, p99, rate in rows:
        print(f"| {n:,} | {name} | {p50:.2f} | {p99:.2f} | {rate:.2f} |")


if __name__ == "__main__":
    main()
