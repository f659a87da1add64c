"""Gathers concurrent classification requests into one Triton call.

An actor: one consumer task owns the bounded queue; callers put a job (the token rows of one
request) with a future and await it. The consumer sends a batch as soon as Triton has a free
slot (at most ``max_inflight`` Triton calls at once): an idle model starts on a lone request
at once, and what arrives while the slots are busy gathers into the next batch, up to
``max_batch_size`` rows (TEI's and vLLM's way: batch size follows load, no fixed delay).
``max_wait`` > 0 adds a fixed wait for company on top. A batch is sent as one Triton call per
group of similar lengths (``length_groups``), so one long prompt does not pad many short
ones; each call holds a slot. A failed inference fails the futures of that batch only; the
consumer keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

# The Triton model's own grouping rule for the requests it gathers, applied to single rows.
from router_svc.triton.python_model import length_groups


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
        max_wait_s: float = 0.0,
        max_queue: int = 1024,
        max_inflight: int = 2,
        max_batch_tokens: int = 8192,
        stats: BatchStats | None = None,
    ):
        self._infer = infer
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_batch_tokens = max_batch_tokens
        # The bound counts rows, not requests: one long prompt is many rows of Triton work.
        self.max_queue_rows = max_queue
        self._queued_rows = 0
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._stats = stats or BatchStats()
        self._held: _Job | None = None
        # Free Triton call slots. One batch runs while the next is gathered and sent (TEI
        # keeps one prefetched): Triton never idles on the router's round trip.
        self._free = max_inflight
        self._wake = asyncio.Event()  # a job arrived or a slot came free
        # Calls of a batch already under way that wait for a slot: they go before new batches.
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._running: set[asyncio.Task[None]] = set()

    @property
    def depth(self) -> int:
        return self._queued_rows

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
            pending.append(self._dequeue())
        self._fail(pending, RuntimeError("classifier is shutting down"))

    async def submit(self, rows: list[list[int]]) -> list[RowOutput]:
        """Run ``rows`` (token ids with special tokens) through the model, batched with others."""
        if not rows:
            return []
        fut: asyncio.Future[list[RowOutput]] = asyncio.get_running_loop().create_future()
        # A request larger than the whole bound still runs when nothing else waits.
        if self._queued_rows and self._queued_rows + len(rows) > self.max_queue_rows:
            raise QueueFull(f"classification queue is full ({self._queued_rows} rows waiting, "
                            f"at most {self.max_queue_rows})")
        self._queue.put_nowait(_Job(rows, fut))
        self._queued_rows += len(rows)
        self._wake.set()
        if self._stats.on_depth:
            self._stats.on_depth(self._queued_rows)
        return await fut

    def _dequeue(self) -> _Job:
        job = self._queue.get_nowait()
        self._queued_rows -= len(job.rows)
        return job

    def _take(self, jobs: list[_Job], n_rows: int) -> int:
        """Move queued jobs into the batch while they fit; the rows it now holds."""
        while n_rows < self.max_batch_size and not self._queue.empty():
            job = self._dequeue()
            if n_rows + len(job.rows) > self.max_batch_size:
                self._held = job  # does not fit: it leads the next batch
                break
            jobs.append(job)
            n_rows += len(job.rows)
        return n_rows

    async def _next_batch(self) -> list[_Job]:
        """The next batch, returned holding an inflight slot."""
        if self._held is not None:
            first, self._held = self._held, None
        else:
            first = await self._queue.get()
            self._queued_rows -= len(first.rows)
        jobs = [first]
        n_rows = self._take(jobs, len(first.rows))
        # Gather while every slot is busy: no wait at all when Triton is idle.
        try:
            while self._free <= len(self._slot_waiters):
                self._wake.clear()
                await self._wake.wait()
                if self._held is None:
                    n_rows = self._take(jobs, n_rows)
            deadline = first.enqueued + self.max_wait_s
            while self._held is None and n_rows < self.max_batch_size:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), remaining)
                n_rows = self._take(jobs, n_rows)
        except asyncio.CancelledError:  # shutting down: these callers must not hang
            self._fail(jobs, RuntimeError("classifier is shutting down"))
            raise
        self._free -= 1
        return jobs

    async def _run(self) -> None:
        while True:
            jobs = await self._next_batch()
            # Callers that went away (client hung up) need no inference.
            jobs = [j for j in jobs if not j.future.done()]
            if not jobs:
                self._release()
                continue
            if self._stats.on_depth:
                self._stats.on_depth(self._queued_rows)
            task = asyncio.create_task(self._execute(jobs))
            self._running.add(task)
            task.add_done_callback(self._finished)

    @staticmethod
    def _fail(jobs: list[_Job], error: BaseException) -> None:
        for j in jobs:
            if not j.future.done():
                j.future.set_exception(error)

    def _release(self) -> None:
        self._free += 1
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._wake.set()

    async def _acquire(self) -> None:
        """A slot for one more Triton call of a batch that already holds one."""
        if self._free <= 0:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._slot_waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # handed a slot just as we were cancelled: pass it on
                raise
        self._free -= 1

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)

    async def _execute(self, jobs: list[_Job]) -> None:
        now = time.perf_counter()
        if self._stats.on_queue_wait:
            for j in jobs:
                self._stats.on_queue_wait(now - j.enqueued)
        rows = [r for j in jobs for r in j.rows]
        try:
            outputs = await self._infer_rows(rows)
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

    async def _infer_rows(self, rows: list[list[int]]) -> list[RowOutput]:
        """One Triton call per length group, outputs in the rows' order. A single job larger
        than the batch limit (a very long prompt) is split the same way. The first call uses
        the slot the batch was sent with; each further one waits for a slot of its own. Each
        call gives its slot back as soon as it ends."""
        groups = length_groups([(1, len(r)) for r in rows], max_rows=self.max_batch_size,
                               max_tokens=self.max_batch_tokens)

        async def run(k: int, group: list[int]) -> list[RowOutput]:
            if k:
                await self._acquire()
            try:
                chunk = [rows[i] for i in group]
                ids, mask = pad_rows(chunk)
                t = time.perf_counter()
                cat, pii, emb = await self._infer(ids, mask)
                if self._stats.on_batch:
                    self._stats.on_batch(len(chunk), int(ids.size), time.perf_counter() - t)
                return split_outputs(chunk, cat, pii, emb)
            finally:
                self._release()

        results = await asyncio.gather(*(run(k, g) for k, g in enumerate(groups)))
        outputs: list[RowOutput | None] = [None] * len(rows)
        for group, outs in zip(groups, results, strict=True):
            for i, out in zip(group, outs, strict=True):
                outputs[i] = out
        return outputs  # type: ignore[return-value]
