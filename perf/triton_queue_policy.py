"""Stalls of a CPU Triton's dynamic batcher with and without a ``default_queue_policy``.

Two clients call the embedded CPU Triton straight over gRPC (``TritonClient.infer``, one row of
``--tokens`` tokens each), ``--rounds`` rounds of two concurrent calls, alternating the generated
config without a queue policy (the default) and with one (REJECT after 60 s, 1,024 requests),
``--repeats`` times each; a fresh Triton per run. Prints p50, p99, max, the calls over 400 ms
and the time Triton reports they spent queued.

    python perf/triton_queue_policy.py --model-dir model_repository/semantic_router/1
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from router_svc.triton.client import TritonClient
from router_svc.triton.launcher import TritonServer

VARIANTS = {"no policy": {}, "policy": {"queue_timeout_us": 60_000_000, "max_queue_size": 1024}}


async def calls(url: str, rounds: int, tokens: int) -> tuple[list[float], float]:
    """Latencies (ms) and Triton's queue time over them (ms)."""
    async with TritonClient(url) as c:
        await c.load_model_info()
        ids = np.random.default_rng(0).integers(1000, 2000, (1, tokens))
        mask = np.ones_like(ids)
        await c.infer(ids, mask)  # warm-up
        before = await c.model_statistics()
        lat: list[float] = []

        async def one() -> None:
            t = time.perf_counter()
            await c.infer(ids, mask)
            lat.append((time.perf_counter() - t) * 1e3)

        for _ in tqdm(range(rounds), desc=url, unit="round", leave=False):
            await asyncio.gather(one(), one())
        after = await c.model_statistics()
        return lat, (after.queue_ns - before.queue_ns) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, default=Path("model_repository/semantic_router/1"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--tokens", type=int, default=40)
    args = ap.parse_args()
    table = Table("config", "calls", "p50 ms", "p99 ms", "max ms", "over 400 ms",
                  "Triton queue ms", title="two clients, one CPU Triton")
    for _ in range(args.repeats):
        for name, kwargs in VARIANTS.items():
            server = TritonServer(args.model_dir, **kwargs).start()
            try:
                lat, queued = asyncio.run(calls(server.grpc_url, args.rounds, args.tokens))
            finally:
                server.stop()
            lat.sort()
            p99 = lat[max(0, int(0.99 * len(lat)) - 1)]
            table.add_row(name, str(len(lat)), f"{statistics.median(lat):.1f}", f"{p99:.1f}",
                          f"{lat[-1]:.1f}", str(sum(x > 400 for x in lat)), f"{queued:.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
