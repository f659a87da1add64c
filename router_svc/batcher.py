"""Gathers concurrent classification requests into one Triton call.

An actor: one consumer task owns the bounded queue; callers put a job (the token rows of one
request) with a future and await it. The consumer takes jobs until the batch is full or
``max_wait`` has passed since the first one, runs one inference, and sets every future. A failed
inference fails the futures of that batch only; the consumer keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np


class QueueFull(Exception):
    """The batcher's queue is at capacity: shed load (HTTP 429) rather than time out."""


@dataclass
class RowOutput:
    category_logits: np.ndarray  # [C]
    pii_logits: np.ndarray  # [len(row), P]
    embedding: np.ndarray  # [D]


@dataclass
class _Job:
    rows: list[list[int]]
    future: asyncio.Future[list[RowOutput]]
    enqueued: float = field(default_factory=time.perf_counter)


InferFn = Callable[[np.ndarray, np.ndarray], Awaitable[tuple[np.ndarray, np.ndarray, np.ndarray]]]


@dataclass
class BatchStats:
    """What the consumer saw, for metrics (set by the caller as callbacks)."""

    on_batch: Callable[[int, int, float], None] | None = None  # rows, padded tokens, seconds
    on_queue_wait: Callable[[float], None] | None = None
    on_depth: Callable[[int], None] | None = None


def pad_rows(rows: list[list[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    n = max(len(r) for r in rows)
    ids = np.full((len(rows), n), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), n), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


def split_outputs(
    rows: list[list[int]], cat: np.ndarray, pii: np.ndarray, emb: np.ndarray
) -> list[RowOutput]:
    return [RowOutput(cat[i], pii[i, : len(r)], emb[i]) for i, r in enumerate(rows)]


class Batcher:
    def __init__(
        self,
        infer: InferFn,
        *,
        max_batch_size: int = 32,
        max_wait_s: float = 0.002,
        max_queue: int = 1024,
        max_inflight: int = 2,
        stats: BatchStats | None = None,
    ):
        self._infer = infer
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=max_queue)
        self._task: asyncio.Task[None] | None = None
        self._stats = stats or BatchStats()
        self._held: _Job | None = None
        # One batch runs while the next is gathered and sent (TEI keeps one prefetched):
        # Triton never idles on the router's round trip, and the queue stays bounded.
        self._inflight = asyncio.Semaphore(max_inflight)
        self._running: set[asyncio.Task[None]] = set()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="triton-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for t in list(self._running):
            t.cancel()
        pending = [self._held] if self._held else []
        self._held = None
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        self._fail(pending, RuntimeError("classifier is shutting down"))

    async def submit(self, rows: list[list[int]]) -> list[RowOutput]:
        """Run ``rows`` (token ids with special tokens) through the model, batched with others."""
        if not rows:
            return []
        fut: asyncio.Future[list[RowOutput]] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Job(rows, fut))
        except asyncio.QueueFull:
            raise QueueFull(
                f"classification queue is full ({self._queue.maxsize} waiting)"
            ) from None
        if self._stats.on_depth:
            self._stats.on_depth(self._queue.qsize())
        return await fut

    async def _next_batch(self) -> list[_Job]:
        if self._held is not None:
            first, self._held = self._held, None
        else:
            first = await self._queue.get()
        jobs, n_rows = [first], len(first.rows)
        deadline = time.perf_counter() + self.max_wait_s
        while n_rows < self.max_batch_size:
            if self._queue.empty():
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                job = self._queue.get_nowait()
            if n_rows + len(job.rows) > self.max_batch_size:
                self._held = job  # does not fit: it leads the next batch
                break
            jobs.append(job)
            n_rows += len(job.rows)
        return jobs

    async def _run(self) -> None:
        while True:
            jobs = await self._next_batch()
            # Callers that went away (client hung up) need no inference.
            jobs = [j for j in jobs if not j.future.done()]
            if not jobs:
                continue
            if self._stats.on_depth:
                self._stats.on_depth(self._queue.qsize())
            try:
                await self._inflight.acquire()
            except asyncio.CancelledError:
                self._fail(jobs, RuntimeError("classifier is shutting down"))
                raise
            # Re-check: a caller may have gone while this batch waited for a free slot.
            jobs = [j for j in jobs if not j.future.done()]
            if not jobs:
                self._inflight.release()
                continue
            task = asyncio.create_task(self._execute(jobs))
            self._running.add(task)
            task.add_done_callback(self._finished)

    @staticmethod
    def _fail(jobs: list[_Job], error: BaseException) -> None:
        for j in jobs:
            if not j.future.done():
                j.future.set_exception(error)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._inflight.release()

    async def _execute(self, jobs: list[_Job]) -> None:
        now = time.perf_counter()
        if self._stats.on_queue_wait:
            for j in jobs:
                self._stats.on_queue_wait(now - j.enqueued)
        rows = [r for j in jobs for r in j.rows]
        try:
            outputs: list[RowOutput] = []
            # A single job larger than the batch limit (a very long prompt) runs in chunks.
            for s in range(0, len(rows), self.max_batch_size):
                chunk = rows[s : s + self.max_batch_size]
                ids, mask = pad_rows(chunk)
                t = time.perf_counter()
                cat, pii, emb = await self._infer(ids, mask)
                if self._stats.on_batch:
                    self._stats.on_batch(len(chunk), int(ids.size), time.perf_counter() - t)
                outputs += split_outputs(chunk, cat, pii, emb)
        except Exception as e:  # every waiter learns of the failure; the consumer lives on
            self._fail(jobs, e)
            return
        except asyncio.CancelledError:  # shutting down: nobody may wait forever
            self._fail(jobs, RuntimeError("classifier is shutting down"))
            raise
        i = 0
        for j in jobs:
            if not j.future.done():
                j.future.set_result(outputs[i : i + len(j.rows)])
            i += len(j.rows)
