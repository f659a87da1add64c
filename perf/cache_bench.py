"""Semantic cache: lookup and add latency and memory per entry at 100,000 entries, and the
layout decision (an index per partition against one global index with a filter).

Side by side in one run, on random L2-normalised 384-d vectors (the worst case for HNSW:
no structure to exploit) with near-duplicate queries (a stored vector plus noise, similarity
about 0.97) and unrelated ones:

- ``per-partition``: ``HnswCache`` as shipped, entries spread over ``--partitions`` partitions
  (small partitions: exact search) and all in one partition (promoted to an HNSW index at
  ``hnsw_min_entries``, as the maintenance sweep does);
- ``hnsw everywhere``: the same with an HNSW index for every partition, however small (the
  first design: each hnswlib index costs about 2.6 MB before its first vector);
- ``global+filter``: the one-index alternative, the same 100,000 vectors in one index, queried
  with hnswlib's ``filter`` callback restricted to the query's partition;
- the event loop question: ``await cache.lookup`` inline against ``asyncio.to_thread``.

Memory per entry: the process RSS growth while filling (index, entries, a ~0.6 kB answer
body each) over the entries, and hnswlib's own figure (``index_file_size``) over the entries.

    python perf/cache_bench.py                  # 100,000 entries, a few minutes
    python perf/cache_bench.py --entries 20000  # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS_DIR, Output, markdown_table, progress, say

from router_svc.cache.store import CachedResponse, HnswCache, IndexParams

THRESHOLD = 0.9


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near(rng: np.random.Generator, v: np.ndarray, noise: float) -> np.ndarray:
    y = v + rng.standard_normal(v.size).astype(np.float32) * noise
    return y / np.linalg.norm(y)


def answer(i: int) -> CachedResponse:
    text = f"Answer {i}: " + "The quick brown fox jumps over the lazy dog. " * 12
    r = CachedResponse.from_body("chat", {
        "id": f"chatcmpl-{i:024d}", "object": "chat.completion", "created": 1700000000,
        "model": "phi4", "choices": [{"index": 0, "message": {"role": "assistant",
                                                              "content": text},
                                      "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 120, "total_tokens": 132}})
    assert r is not None
    return r


def ms(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def fill(cache: HnswCache, vecs: np.ndarray, partition_of: Any, bar: Any, task: Any,
         tail: int, sweep_every: int = 2048) -> dict[str, float]:
    """Store every vector through ``store_sync``; latency of all adds and of the last ``tail``.
    Every ``sweep_every`` stores a sweep runs (in production: the maintenance task, or a
    thread started by the store that crossed ``hnsw_min_entries``), timed apart."""
    gc.collect()
    before = rss_bytes()
    lat: list[float] = []
    sweeps = 0.0
    for i, v in enumerate(vecs):
        body = answer(i)
        t0 = time.perf_counter()
        ok = cache.store_sync(partition_of(i), v, f"question {i}", body)
        lat.append(time.perf_counter() - t0)
        assert ok
        if i % sweep_every == sweep_every - 1:
            t0 = time.perf_counter()
            cache.sweep_sync()
            sweeps += time.perf_counter() - t0
        if i % 500 == 0:
            bar.update(task, completed=i)
    t0 = time.perf_counter()
    cache.sweep_sync()
    sweeps += time.perf_counter() - t0
    bar.update(task, completed=len(vecs))
    gc.collect()
    grown = rss_bytes() - before
    s = cache.stats()
    p50, p99 = ms(lat)
    t50, t99 = ms(lat[-tail:])
    return {"add_p50_ms": p50, "add_p99_ms": p99, "add_last_p50_ms": t50, "add_last_p99_ms": t99,
            "rss_bytes_per_entry": grown / len(vecs),
            "index_bytes_per_entry": s.index_bytes / len(vecs),
            "hnsw_partitions": s.hnsw_partitions, "sweep_s": sweeps}


def queries(rng: np.random.Generator, vecs: np.ndarray, n: int, noise: float,
            dim: int) -> tuple[list[int], np.ndarray, np.ndarray]:
    idx = rng.integers(0, len(vecs), n).tolist()
    dup = np.stack([near(rng, vecs[i], noise) for i in idx])
    return idx, dup, unit_rows(rng, n, dim)


def lookups(cache: HnswCache, idx: list[int], dup: np.ndarray, other: np.ndarray,
            partition_of: Any) -> dict[str, float]:
    lat, hits, right = [], 0, 0
    for i, q in zip(idx, dup, strict=True):
        t0 = time.perf_counter()
        hit = cache.lookup_sync(partition_of(i), q, THRESHOLD)
        lat.append(time.perf_counter() - t0)
        hits += hit is not None
        right += hit is not None and hit.text == f"question {i}"
    miss_lat, false_hits = [], 0
    for i, q in zip(idx, other, strict=True):
        t0 = time.perf_counter()
        false_hits += cache.lookup_sync(partition_of(i), q, THRESHOLD) is not None
        miss_lat.append(time.perf_counter() - t0)
    p50, p99 = ms(lat)
    m50, m99 = ms(miss_lat)
    return {"lookup_p50_ms": p50, "lookup_p99_ms": p99, "miss_p50_ms": m50, "miss_p99_ms": m99,
            "hit_rate": hits / len(idx), "right_hits": right / max(hits, 1),
            "false_hits": false_hits}


def filtered_lookups(cache: HnswCache, idx: list[int], dup: np.ndarray, partitions: int,
                     n: int) -> dict[str, float]:
    """The one-index alternative: the single partition's index holds every vector (labels are
    entry ids 0..N-1); a query may only see its own partition (id % partitions)."""
    (part,) = cache._partitions.values()
    index = part.index  # the HNSW index of the one big partition
    lat, hits, right = [], 0, 0
    for i, q in list(zip(idx, dup, strict=True))[:n]:
        want = i % partitions
        t0 = time.perf_counter()
        labels, dists = index.knn_query(q, k=1, num_threads=1,
                                        filter=lambda lb, w=want: lb % partitions == w)
        lat.append(time.perf_counter() - t0)
        if 1.0 - float(dists[0][0]) >= THRESHOLD:
            hits += 1
            right += int(labels[0][0]) == i
    p50, p99 = ms(lat)
    return {"lookup_p50_ms": p50, "lookup_p99_ms": p99, "hit_rate": hits / len(lat),
            "right_hits": right / max(hits, 1), "queries": len(lat)}


async def loop_costs(cache: HnswCache, idx: list[int], dup: np.ndarray,
                     partition_of: Any) -> dict[str, float]:
    """``await cache.lookup`` (inline) against the same lookup via ``asyncio.to_thread``."""
    inline, threaded = [], []
    for i, q in zip(idx, dup, strict=True):
        p = partition_of(i)
        t0 = time.perf_counter()
        await cache.lookup(p, q, THRESHOLD)
        inline.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await asyncio.to_thread(cache.lookup_sync, p, q, THRESHOLD)
        threaded.append(time.perf_counter() - t0)
    i50, i99 = ms(inline)
    t50, t99 = ms(threaded)
    return {"inline_p50_ms": i50, "inline_p99_ms": i99, "to_thread_p50_ms": t50,
            "to_thread_p99_ms": t99}


def at_capacity_adds(cache: HnswCache, rng: np.random.Generator, n: int, dim: int,
                     partition_of: Any, start: int) -> tuple[float, float]:
    """Adds into a full cache: each evicts the least recently used and reuses its slot."""
    lat = []
    for j, v in enumerate(unit_rows(rng, n, dim)):
        t0 = time.perf_counter()
        cache.store_sync(partition_of(start + j), v, f"question {start + j}", answer(start + j))
        lat.append(time.perf_counter() - t0)
    return ms(lat)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=100_000, help="default: %(default)s")
    ap.add_argument("--partitions", type=int, default=1000,
                    help="partitions for the spread-out layout (default: %(default)s)")
    ap.add_argument("--dim", type=int, default=384, help="default: %(default)s")
    ap.add_argument("--queries", type=int, default=2000,
                    help="near-duplicate and unrelated queries each (default: %(default)s)")
    ap.add_argument("--filter-queries", type=int, default=100,
                    help="queries for the global+filter layout, which is slow "
                         "(default: %(default)s)")
    ap.add_argument("--noise", type=float, default=0.012,
                    help="noise per dimension of a near duplicate; 0.012 gives similarity "
                         "about 0.97 at 384-d (default: %(default)s)")
    ap.add_argument("--adds", type=int, default=1000,
                    help="adds timed at the end of filling and at capacity (default: %(default)s)")
    ap.add_argument("--skip-hnsw-everywhere", action="store_true",
                    help="leave out the HNSW-for-every-partition layout (about 2.6 GB RSS at "
                         "1000 partitions)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)
    out = Output("cache_bench", args)
    rng = np.random.default_rng(args.seed)
    n, parts, dim = args.entries, args.partitions, args.dim
    vecs = unit_rows(rng, n, dim)
    idx, dup, other = queries(rng, vecs, args.queries, args.noise, dim)
    sims = [float(vecs[i] @ q) for i, q in zip(idx, dup, strict=True)]
    say(f"near-duplicate similarity: median {np.median(sims):.3f}, min {min(sims):.3f}")

    def spread(i: int) -> str:
        return f"p{i % parts}"

    def single(i: int) -> str:
        return "p0"

    rows: list[dict[str, Any]] = []
    with progress() as bar:
        t = bar.add_task(f"fill per-partition, {parts} partitions", total=n)
        many = HnswCache(dim, capacity=n)
        f_many = fill(many, vecs, spread, bar, t, args.adds)
        t = bar.add_task("fill per-partition, 1 partition", total=n)
        one = HnswCache(dim, capacity=n)
        f_one = fill(one, vecs, single, bar, t, args.adds)
        all_hnsw = f_all = l_all = None
        if not args.skip_hnsw_everywhere:
            t = bar.add_task(f"fill hnsw everywhere, {parts} partitions", total=n)
            every = IndexParams(hnsw_min_entries=1, flat_max_entries=0)  # never exact
            all_hnsw = HnswCache(dim, capacity=n, params=every)
            f_all = fill(all_hnsw, vecs, spread, bar, t, args.adds)
            l_all = lookups(all_hnsw, idx, dup, other, spread)
            del all_hnsw
            gc.collect()
        t = bar.add_task("lookups", total=4)
        l_many = lookups(many, idx, dup, other, spread)
        bar.advance(t)
        l_one = lookups(one, idx, dup, other, single)
        big = one._partitions["p0"].index  # HNSW by now; how much does a wider search buy?
        big.set_ef(2 * one.params.ef_search)
        l_wide = lookups(one, idx, dup, other, single)
        big.set_ef(one.params.ef_search)
        bar.advance(t)
        l_filter = filtered_lookups(one, idx, dup, parts, args.filter_queries)
        bar.advance(t)
        loop = asyncio.run(loop_costs(one, idx[:500], dup[:500], single))
        bar.advance(t)
        t = bar.add_task("adds at capacity", total=2)
        c_many = at_capacity_adds(many, rng, args.adds, dim, spread, n)
        bar.advance(t)
        c_one = at_capacity_adds(one, rng, args.adds, dim, single, n)
        bar.advance(t)

    base = {"entries": n, "dim": dim}
    rows.append({"layout": "per-partition (chosen)", "partitions": parts, **base, **l_many,
                 **f_many, "add_full_p50_ms": c_many[0], "add_full_p99_ms": c_many[1]})
    if f_all is not None and l_all is not None:
        rows.append({"layout": "hnsw everywhere (rejected)", "partitions": parts, **base,
                     **l_all, **f_all})
    rows.append({"layout": "global+filter (rejected)", "partitions": parts, **base, **l_filter})
    rows.append({"layout": "per-partition = global", "partitions": 1, **base, **l_one, **f_one,
                 "add_full_p50_ms": c_one[0], "add_full_p99_ms": c_one[1], **loop})
    rows.append({"layout": f"same, ef_search {2 * one.params.ef_search}", "partitions": 1,
                 **base, **l_wide})
    csv_path = out.write_csv(rows)
    fixed = args.out_dir / "cache_bench.csv"
    shutil.copyfile(csv_path, fixed)

    print(f"## Semantic cache at {n:,} entries ({dim}-d, threshold {THRESHOLD})\n")
    print(markdown_table(rows, [
        ("layout", "layout"), ("partitions", "partitions"),
        ("lookup_p50_ms", "lookup p50 ms"), ("lookup_p99_ms", "lookup p99 ms"),
        ("hit_rate", "near-dup hit rate"), ("add_last_p50_ms", "add p50 ms (last adds)"),
        ("add_last_p99_ms", "add p99 ms"), ("add_full_p50_ms", "add p50 ms (at capacity)"),
        ("rss_bytes_per_entry", "RSS B/entry"), ("index_bytes_per_entry", "index B/entry"),
    ], digits={"lookup_p50_ms": 3, "lookup_p99_ms": 3, "hit_rate": 3, "add_last_p50_ms": 3,
               "add_last_p99_ms": 3, "add_full_p50_ms": 3}))
    print(f"\nUnrelated queries (misses): p50 {l_one['miss_p50_ms']:.3f} ms in one partition, "
          f"{l_many['miss_p50_ms']:.3f} ms over {parts}; false hits "
          f"{l_one['false_hits'] + l_many['false_hits']}.")
    print(f"On the event loop (1 partition of {n:,}): await lookup p50 "
          f"{loop['inline_p50_ms']:.3f} ms / p99 {loop['inline_p99_ms']:.3f} ms inline, "
          f"{loop['to_thread_p50_ms']:.3f} / {loop['to_thread_p99_ms']:.3f} ms via to_thread.")
    out.finish(fixed_csv=str(fixed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
