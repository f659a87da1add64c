"""Batcher fairness: what one maximal request in flight does to small requests' latency.

The router's batcher (``router_svc.classify.batcher.Batcher``, the product code, unchanged) in
front of a simulated Triton: one model instance that runs one call at a time and takes
``--call-ms`` plus ``--row-ms`` per row of the call (asyncio sleeps, so the figures are the
batcher's scheduling and not this machine's speed). Small requests (one row of
``--small-tokens``) arrive open loop at ``--rate`` per second; latency counts from when a
request was due. Two scenarios alternate per round (A B, B A, ...):

- ``alone``: the small requests only;
- ``with large``: the same stream while one request of ``--large-rows`` rows
  (``--large-tokens`` each: a ~25k-token prompt read in 128-token windows) is always in flight,
  the next submitted as soon as the last one finished.

Printed: small-request p50 and p99 (medians over rounds) and their ratio to ``alone``, and the
large request's own p50. A batcher that queues every call of the large request ahead of later
requests makes a small one wait for the large one's remaining calls; one that interleaves rows
makes it wait for about the calls already in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
from _common import Output, add_output_args, alternating, latency_ms, median, ratio, say

from router_svc.classify.batcher import Batcher

ALONE, LOADED = "alone", "with large"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="perf/fairness.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="(default: %(default)s)")
    ap.add_argument("--duration", type=float, default=4.0,
                    help="seconds of small requests per scenario per round (default: %(default)s)")
    ap.add_argument("--rate", type=float, default=50.0,
                    help="small requests per second, open loop (default: %(default)s)")
    ap.add_argument("--large-rows", type=int, default=256, help="(default: %(default)s)")
    ap.add_argument("--large-tokens", type=int, default=128,
                    help="tokens per row of the large request (default: %(default)s)")
    ap.add_argument("--small-tokens", type=int, default=32, help="(default: %(default)s)")
    ap.add_argument("--call-ms", type=float, default=2.0,
                    help="simulated cost of one Triton call (default: %(default)s)")
    ap.add_argument("--row-ms", type=float, default=1.0,
                    help="simulated cost per row of a call (default: %(default)s)")
    ap.add_argument("--max-batch", type=int, default=32,
                    help="batching.max_batch_size (default: %(default)s)")
    ap.add_argument("--max-inflight", type=int, default=2, help="(default: %(default)s)")
    add_output_args(ap)
    return ap.parse_args(argv)


@dataclass
class SimulatedTriton:
    """One model instance: calls run one at a time, each ``call_s + row_s * rows``."""

    call_s: float
    row_s: float
    calls: int = 0
    _busy: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def __call__(self, ids: np.ndarray, mask: np.ndarray):
        async with self._busy:
            self.calls += 1
            await asyncio.sleep(self.call_s + self.row_s * ids.shape[0])
        n, t = ids.shape
        return (np.zeros((n, 2), np.float32), np.zeros((n, t, 3), np.float32),
                np.zeros((n, 4), np.float32))


def rows_of(n: int, tokens: int) -> list[list[int]]:
    return [[101] + [7] * (tokens - 2) + [102] for _ in range(n)]


async def small_stream(b: Batcher, rate: float, duration: float,
                       tokens: int) -> list[float]:
    """Open loop: request i is due at start + i / rate; its latency counts from then."""
    start = time.perf_counter()
    lat: list[float] = []

    async def one(due: float) -> None:
        await b.submit(rows_of(1, tokens))
        lat.append(time.perf_counter() - due)

    tasks = []
    for i in range(int(rate * duration)):
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    return lat


async def large_loop(b: Batcher, rows: int, tokens: int, lat: list[float]) -> None:
    """One large request always in flight, until cancelled."""
    while True:
        t = time.perf_counter()
        await b.submit(rows_of(rows, tokens))
        lat.append(time.perf_counter() - t)


async def scenario(args: argparse.Namespace, name: str) -> dict[str, float]:
    model = SimulatedTriton(args.call_ms / 1000, args.row_ms / 1000)
    b = Batcher(model, max_batch_size=args.max_batch, max_inflight=args.max_inflight,
                max_queue=100_000)
    await b.start()
    large_lat: list[float] = []
    large = None
    try:
        if name == LOADED:
            large = asyncio.create_task(large_loop(b, args.large_rows, args.large_tokens,
                                                   large_lat))
            await asyncio.sleep(args.large_rows * args.row_ms / 1000 / 4)  # well under way
        small = await small_stream(b, args.rate, args.duration, args.small_tokens)
    finally:
        if large is not None:
            large.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await large
        await b.stop()
    s = latency_ms(small)
    return {"small_p50_ms": s["p50_ms"], "small_p99_ms": s["p99_ms"], "small_n": len(small),
            "large_p50_ms": latency_ms(large_lat)["p50_ms"], "large_n": len(large_lat),
            "calls": model.calls}


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.small_tokens}-token requests at {args.rate:g}/s, alone and "
                        f"with one {args.large_rows}-row request in flight (medians over "
                        f"{args.rounds} rounds)")
    for col in ("scenario", "p50 ms", "p99 ms", "p50 x alone", "p99 x alone", "large p50 ms"):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for r in rows:
        table.add_row(r["scenario"], f"{r['small_p50_ms']:.1f}", f"{r['small_p99_ms']:.1f}",
                      f"{r['x_p50']:.2f}", f"{r['x_p99']:.2f}",
                      "-" if r["large_p50_ms"] != r["large_p50_ms"] else
                      f"{r['large_p50_ms']:.0f}")
    Console().print(table)


async def main(args: argparse.Namespace) -> None:
    out = Output("fairness", args)
    per_round: list[dict] = []
    for rnd, name in alternating([ALONE, LOADED], args.rounds):
        say(f"round {rnd + 1}/{args.rounds}: {name}")
        per_round.append({"round": rnd, "scenario": name, **await scenario(args, name)})
    out.write_csv(per_round)
    summary = []
    for name in (ALONE, LOADED):
        mine = [r for r in per_round if r["scenario"] == name]
        summary.append({"scenario": name,
                        **{k: median(r[k] for r in mine)
                           for k in ("small_p50_ms", "small_p99_ms", "large_p50_ms")}})
    for r in summary:
        r["x_p50"] = ratio(r["small_p50_ms"], summary[0]["small_p50_ms"])
        r["x_p99"] = ratio(r["small_p99_ms"], summary[0]["small_p99_ms"])
    print_table(summary, args)
    out.finish(summary=summary)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
