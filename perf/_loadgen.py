"""Open-loop and closed-loop load over one shared aiohttp session (or any async callable).

Open loop: request ``i`` is due at ``t0 + i / rate`` whatever happened before (no coordinated
omission): its latency counts from when it was due, not from when the generator got round to
sending it, and the generator's own lag is reported so a saturated client is visible.
Closed loop: ``concurrency`` workers each send the next request as soon as the last returned.
Only requests due (or started) after the warm-up and before the end are measured.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from _common import latency_ms, pct

Send = Callable[[Any], Awaitable[bool]]  # one request; True when it succeeded


@dataclass
class Run:
    latencies_s: list[float] = field(default_factory=list)  # successful requests
    ok: int = 0
    failed: int = 0
    units: int = 0  # prompts (a batched request counts its rows)
    seconds: float = 0.0
    lag_s: list[float] = field(default_factory=list)  # open loop: send time - due time
    errors: Counter = field(default_factory=Counter)

    @property
    def throughput(self) -> float:
        return self.units / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> dict[str, float]:
        s = {"throughput": self.throughput, "ok": self.ok, "failed": self.failed,
             **latency_ms(self.latencies_s)}
        if self.lag_s:
            s["gen_lag_p99_ms"] = pct(self.lag_s, 99) * 1000
        return s


async def _ticker(tick: Callable[[float], None] | None) -> None:
    prev = time.perf_counter()
    while True:
        await asyncio.sleep(0.25)
        now = time.perf_counter()
        if tick:
            tick(now - prev)
        prev = now


async def open_loop(send: Send, items: Sequence[Any], rate: float, duration_s: float,
                    warmup_s: float = 1.0, tick: Callable[[float], None] | None = None,
                    units: Callable[[Any], int] = lambda _: 1,
                    drain_s: float = 30.0) -> Run:
    run = Run()
    loop_t0 = time.perf_counter() + 0.05
    t_measure = loop_t0 + warmup_s
    t_end = t_measure + duration_s
    tasks: list[asyncio.Task] = []

    async def one(item: Any, due: float) -> None:
        measured = due >= t_measure
        if measured:
            run.lag_s.append(time.perf_counter() - due)
        try:
            ok = await send(item)
        except Exception as e:  # counted, not raised: one failure must not end the run
            ok = False
            run.errors[type(e).__name__] += 1
        done = time.perf_counter()
        if measured:
            if ok:
                run.ok += 1
                run.units += units(item)
                run.latencies_s.append(done - due)
            else:
                run.failed += 1

    tk = asyncio.create_task(_ticker(tick))
    try:
        for i in itertools.count():
            due = loop_t0 + i / rate
            if due >= t_end:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(items[i % len(items)], due)))
        _, pending = await asyncio.wait(tasks, timeout=drain_s) if tasks else (set(), set())
        for t in pending:
            t.cancel()
        run.failed += len(pending)
    finally:
        tk.cancel()
    run.seconds = duration_s
    return run


async def closed_loop(send: Send, items: Sequence[Any], concurrency: int, duration_s: float,
                      warmup_s: float = 1.0, tick: Callable[[float], None] | None = None,
                      units: Callable[[Any], int] = lambda _: 1) -> Run:
    run = Run()
    t0 = time.perf_counter()
    t_measure = t0 + warmup_s
    t_end = t_measure + duration_s
    counter = itertools.count()
    last: list[float] = []

    async def worker() -> None:
        while True:
            item = items[next(counter) % len(items)]
            start = time.perf_counter()
            if start >= t_end:
                return
            try:
                ok = await send(item)
            except Exception as e:
                ok = False
                run.errors[type(e).__name__] += 1
            done = time.perf_counter()
            if start >= t_measure:
                last.append(done)
                if ok:
                    run.ok += 1
                    run.units += units(item)
                    run.latencies_s.append(done - start)
                else:
                    run.failed += 1

    tk = asyncio.create_task(_ticker(tick))
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        tk.cancel()
    run.seconds = (max(last) - t_measure) if last else 0.0
    return run


def http_sender(session, url: str, headers: dict[str, str] | None = None,
                statuses: Counter | None = None) -> Send:
    """POST pre-encoded JSON bytes; success is HTTP 200 with the whole body read."""
    h = {"Content-Type": "application/json", **(headers or {})}

    async def send(body: bytes) -> bool:
        async with session.post(url, data=body, headers=h) as r:
            await r.read()
            if statuses is not None:
                statuses[r.status] += 1
            return r.status == 200

    return send
