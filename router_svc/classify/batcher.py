"""Gathers concurrent classification requests into shared Triton calls, fairly.

An actor: one consumer task owns the bounded queue; callers put a job (the token rows of one
request) with a future and await it. The consumer forms a batch as soon as Triton has a free
slot (at most ``max_inflight`` Triton calls at once): an idle model starts on a lone request
at once, and what arrives while the slots are busy gathers into the next batch, up to
``max_batch_size`` rows (TEI's and vLLM's way: batch size follows load, no fixed delay).
``max_wait`` > 0 adds a fixed wait for company on top.

A batch takes rows, not whole jobs: every queued job gets a max-min fair share of the batch
(``fair_shares``), at most ``max_job_tokens`` of its padded tokens, and a job with rows left
goes to the back of the round robin. A long prompt
(hundreds of windows) thus no longer holds the model for all its calls while a one-row request
behind it waits: that request's row goes into the very next batch. A job's future resolves
when all its rows are done, outputs in row order.

A batch is sent as one Triton call per group of similar lengths (``length_groups``), so one
long prompt does not pad many short ones; each call holds a slot, the cheapest call first. A
failed call fails the jobs whose rows were in it only; the consumer keeps running.

Stale work is dropped before it reaches Triton: a job whose caller went away (future
cancelled), whose caller's deadline passed with rows still unsent, or that waited longer than
``max_queue_wait`` before any of its rows was sent is taken out of the queue, and the caller
gets ``DeadlineExceeded``. Times are ``time.monotonic()`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

# The Triton model's own grouping rule for the requests it gathers, applied to single rows.
from router_svc.triton.python_model import length_groups

SHUTTING_DOWN = "classifier is shutting down"


class QueueFull(Exception):
    """The batcher's queue is at capacity: shed load (HTTP 429) rather than time out."""


class DeadlineExceeded(Exception):
    """A job still had rows waiting for Triton at its deadline, or none of its rows had gone
    out after ``max_queue_wait``: its unsent rows were dropped."""


@dataclass
class RowOutput:
    category_logits: np.ndarray  # [C]
    pii_logits: np.ndarray  # [len(row), P]
    embedding: np.ndarray  # [D]


@dataclass
class JobTrace:
    """What became of one job's rows, for its trace span (``Batcher.submit(trace=...)``)."""

    queue_s: float | None = None  # submitted -> its first row sent to Triton
    calls: int = 0  # Triton calls that carried its rows
    batch_rows: int = 0  # rows of the largest of those calls (other requests' rows included)
    infer_s: float = 0.0  # those calls' time, summed


@dataclass(eq=False)  # identity: a job is found in the queue by itself, not by its rows
class _Job:
    rows: list[list[int]]
    future: asyncio.Future[list[RowOutput]]
    deadline: float | None  # the caller's: the latest time any of its rows may still be sent
    start_by: float | None = None  # max_queue_wait: the latest time its first row may be sent
    enqueued: float = field(default_factory=time.monotonic)
    taken: int = 0  # rows[:taken] have left the queue for a batch
    unsent: int = 0  # rows not yet handed to Triton (queued, or in a batch awaiting a slot)
    received: int = 0  # rows with an output
    outputs: list[RowOutput | None] = field(default_factory=list)
    in_queue: bool = True
    timer: asyncio.TimerHandle | None = None
    trace: JobTrace | None = None
    per_call: int = 1 << 30  # the most of its rows one Triton call may carry

    def __post_init__(self) -> None:
        self.unsent = len(self.rows)
        self.outputs = [None] * len(self.rows)

    @property
    def queued(self) -> int:
        return len(self.rows) - self.taken if self.in_queue else 0

    @property
    def started(self) -> bool:
        return self.unsent < len(self.rows)

    def due(self) -> float | None:
        """When the job expires unless it makes progress (both limits are time.monotonic())."""
        times = [t for t in (self.deadline, None if self.started else self.start_by)
                 if t is not None]
        return min(times) if times else None

    def expired(self, now: float) -> bool:
        due = self.due()
        return due is not None and now >= due


# One row of one job: what a batch and a Triton call are made of.
_Item = tuple[_Job, int]

InferFn = Callable[[np.ndarray, np.ndarray], Awaitable[tuple[np.ndarray, np.ndarray, np.ndarray]]]


@dataclass
class BatchStats:
    """What the consumer saw, for metrics (set by the caller as callbacks)."""

    on_batch: Callable[[int, int, float], None] | None = None  # rows, padded tokens, seconds
    on_queue_wait: Callable[[float], None] | None = None  # submit to first row sent, per job
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


def fair_shares(wants: Sequence[int], capacity: int) -> list[int]:
    """Rows each queued job (``wants``: its queued rows, in queue order) puts in a batch of at
    most ``capacity`` rows: max-min fair (water-filling). Equal shares; what a small job does
    not use goes to the larger ones; when there are more jobs than rows, the first in queue
    order get one each."""
    shares = [0] * len(wants)
    left = capacity
    active = [i for i, w in enumerate(wants) if w > 0]
    while left > 0 and active:
        each = left // len(active)
        if each == 0:
            for i in active[:left]:
                shares[i] += 1
            break
        for i in active:
            give = min(each, wants[i] - shares[i])
            shares[i] += give
            left -= give
        active = [i for i in active if shares[i] < wants[i]]
    return shares


def _too_late(job: _Job) -> DeadlineExceeded:
    waited = time.monotonic() - job.enqueued
    if job.deadline is not None and job.deadline <= time.monotonic():
        why = f"by the caller's deadline ({waited:.3f} s after submission)"
    else:
        why = f"after {waited:.3f} s in the queue (batching.max_queue_wait_ms)"
    return DeadlineExceeded(
        f"{job.unsent} of {len(job.rows)} rows not sent to the model {why}: dropped")


def _jobs_of(items: Sequence[_Item]) -> list[_Job]:
    return list(dict.fromkeys(job for job, _ in items))


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
        max_job_tokens: int | None = None,
        # None: no limit (offline tools: an evaluation queues thousands of texts at once);
        # the router passes batching.max_queue_wait_ms.
        max_queue_wait_s: float | None = None,
        stats: BatchStats | None = None,
    ):
        self._infer = infer
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_batch_tokens = max_batch_tokens
        # One job's padded tokens per call. A model instance runs one call at a time, so what
        # a request arriving behind a long prompt waits for is that prompt's call in progress:
        # smaller calls of a long prompt keep it short. None: no bound beyond the batch's.
        self.max_job_tokens = max_job_tokens
        # A job none of whose rows went out this long after it was submitted fails: work
        # nobody can still want does not pile up in front of Triton. Once a job has started,
        # only the caller's deadline applies: a long prompt alone on a slow model may take
        # many calls. None: no such bound.
        self.max_queue_wait_s = max_queue_wait_s
        # The bound counts rows, not requests: one long prompt is many rows of Triton work.
        self.max_queue_rows = max_queue
        self._queued_rows = 0
        # Jobs with rows not yet taken into a batch, in round-robin order.
        self._queue: deque[_Job] = deque()
        self._open: set[_Job] = set()  # every job not yet settled, failed by stop()
        self._task: asyncio.Task[None] | None = None
        self._stats = stats or BatchStats()
        # Free Triton call slots. One batch runs while the next is gathered and sent (TEI
        # keeps one prefetched): Triton never idles on the router's round trip.
        self._free = self.max_inflight = max_inflight
        self._wake = asyncio.Event()  # a job arrived or a slot came free
        # Calls of a batch already under way that wait for a slot: a freed slot goes to them
        # before a new batch is formed, so a batch's calls are not starved by later batches.
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._running: set[asyncio.Task[None]] = set()

    def set_max_inflight(self, n: int) -> None:
        """Change the number of Triton calls at once (a Triton fleet grew or shrank): calls
        under way finish; new ones start only while fewer than ``n`` run."""
        self._free += n - self.max_inflight
        self.max_inflight = n
        self._wake.set()

    def _per_call(self, longest: int) -> int:
        """The most rows of one job a Triton call carries (``max_job_tokens``)."""
        if self.max_job_tokens is None:
            return 1 << 30
        return max(1, self.max_job_tokens // longest)

    def calls_for(self, rows: Sequence[Sequence[int]]) -> int:
        """The fewest Triton calls that carry a job of ``rows`` (more when other jobs share
        the calls): what a caller's time budget for the job scales with."""
        if not rows:
            return 0
        longest = max(map(len, rows))
        per_call = min(self._per_call(longest), self.max_batch_size,
                       max(1, self.max_batch_tokens // longest))
        return -(-len(rows) // per_call)

    @property
    def depth(self) -> int:
        """Rows waiting to be taken into a batch."""
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
        # Every caller still waiting learns of it now: nobody may wait forever.
        for job in list(self._open):
            self._settle(job, RuntimeError(SHUTTING_DOWN))

    async def submit(self, rows: list[list[int]], deadline: float | None = None,
                     trace: JobTrace | None = None) -> list[RowOutput]:
        """Run ``rows`` (token ids with special tokens) through the model, batched with others.

        ``deadline`` (``time.monotonic()`` seconds): if rows of the job are still unsent to
        Triton then, they are dropped and this raises ``DeadlineExceeded``; so it does when
        none of them was sent within ``max_queue_wait_s``. Rows already sent finish, their
        outputs unused. ``QueueFull`` when the queue's row bound would be passed; a request
        larger than the whole bound still runs when nothing else waits. ``trace``: filled
        in with the job's queue time and Triton calls (for its span).
        """
        if not rows:
            return []
        if self._queued_rows and self._queued_rows + len(rows) > self.max_queue_rows:
            raise QueueFull(f"classification queue is full ({self._queued_rows} rows waiting, "
                            f"at most {self.max_queue_rows})")
        now = time.monotonic()
        if deadline is not None and deadline <= now:
            raise DeadlineExceeded(f"the caller's deadline passed before {len(rows)} rows "
                                   "were queued")
        start_by = None if self.max_queue_wait_s is None else now + self.max_queue_wait_s
        job = _Job(rows, asyncio.get_running_loop().create_future(), deadline, start_by,
                   enqueued=now, trace=trace)
        job.per_call = self._per_call(max(map(len, rows)))
        self._arm(job)
        self._queue.append(job)
        self._open.add(job)
        self._queued_rows += len(rows)
        self._wake.set()
        self._report_depth()
        try:
            return await job.future
        except asyncio.CancelledError:  # the caller left: its unsent rows need no inference
            self._settle(job)
            raise

    # ---- job bookkeeping

    def _settle(self, job: _Job, error: BaseException | None = None) -> None:
        """The job is over: fail it with ``error`` (if still pending) and withdraw its rows
        from the queue. Rows of it already in a batch are skipped when their call is sent."""
        if error is not None and not job.future.done():
            job.future.set_exception(error)
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        self._open.discard(job)
        if job.in_queue:
            self._queued_rows -= job.queued
            job.in_queue = False
            self._queue.remove(job)
            self._report_depth()

    def _arm(self, job: _Job) -> None:
        """A timer for when the job expires with rows unsent: it fails then even while every
        slot is busy (Triton slow or stuck), not only when its rows come up."""
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        due = job.due()
        if due is not None and job.unsent and not job.future.done():
            delay = max(0.0, due - time.monotonic())
            job.timer = asyncio.get_running_loop().call_later(delay, self._expire, job)

    def _expire(self, job: _Job) -> None:
        job.timer = None
        if job.future.done() or not job.unsent:
            return
        if job.expired(time.monotonic()):
            self._settle(job, _too_late(job))
        else:  # early by the loop's clock resolution, or started meanwhile
            self._arm(job)

    def _report_depth(self) -> None:
        if self._stats.on_depth:
            self._stats.on_depth(self._queued_rows)

    # ---- the consumer

    async def _run(self) -> None:
        while True:
            await self._gather()  # returns holding a slot
            batch = self._take()
            if not batch:  # every queued caller went away meanwhile
                self._release()
                continue
            task = asyncio.create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _gather(self) -> None:
        """Wait for queued rows and a free slot, and take the slot; then, with ``max_wait``,
        wait that long after the oldest queued job for company."""
        while not (self._queue and self._free > 0):
            self._wake.clear()
            await self._wake.wait()
        self._free -= 1
        if self.max_wait_s <= 0:
            return
        try:
            until = min(j.enqueued for j in self._queue) + self.max_wait_s
            while self._queue and self._queued_rows < self.max_batch_size:
                remaining = until - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), remaining)
        except asyncio.CancelledError:
            self._release()
            raise

    def _take(self) -> list[_Item]:
        """The next batch: each live queued job's fair share of ``max_batch_size`` rows, in
        queue order. Jobs given rows that still have more go to the back of the queue."""
        now = time.monotonic()
        for job in [j for j in self._queue if j.future.done() or j.expired(now)]:
            self._settle(job, None if job.future.done() else _too_late(job))
        jobs = list(self._queue)
        shares = fair_shares([min(j.queued, j.per_call) for j in jobs], self.max_batch_size)
        batch: list[_Item] = []
        waiting: list[_Job] = []  # got nothing this time: first in the next batch
        served: list[_Job] = []
        for job, n in zip(jobs, shares, strict=True):
            batch += [(job, i) for i in range(job.taken, job.taken + n)]
            job.taken += n
            self._queued_rows -= n
            if job.taken == len(job.rows):
                job.in_queue = False
            else:
                (served if n else waiting).append(job)
        self._queue = deque(waiting + served)
        self._report_depth()
        return batch

    async def _execute(self, batch: list[_Item]) -> None:
        """One call per length group, the cheapest first (a short request's call is not
        queued behind a long one's). The first uses the slot the batch was formed with; each
        further one waits for a slot of its own, ahead of new batches."""
        rows = [job.rows[i] for job, i in batch]
        groups = length_groups([(1, len(r)) for r in rows], max_rows=self.max_batch_size,
                               max_tokens=self.max_batch_tokens)
        groups.sort(key=lambda g: len(g) * max(len(rows[i]) for i in g))
        await asyncio.gather(*(self._call([batch[i] for i in g], holds_slot=k == 0)
                               for k, g in enumerate(groups)))

    def _sendable(self, items: list[_Item]) -> list[_Item]:
        """The items whose job still wants them: a job whose caller left is skipped, a job
        past its deadline is failed."""
        now = time.monotonic()
        keep: set[_Job] = set()
        for job in _jobs_of(items):
            if job.future.done():
                continue
            if job.expired(now):
                self._settle(job, _too_late(job))
                continue
            keep.add(job)
        return [(job, i) for job, i in items if job in keep]

    def _mark_sent(self, items: list[_Item]) -> None:
        now = time.monotonic()
        for job, n in Counter(job for job, _ in items).items():
            first = not job.started
            if first and self._stats.on_queue_wait:
                self._stats.on_queue_wait(now - job.enqueued)
            if first and job.trace is not None:
                job.trace.queue_s = now - job.enqueued
            job.unsent -= n
            if first or job.unsent == 0:
                self._arm(job)  # max_queue_wait no longer applies; all sent: nothing does

    async def _call(self, items: list[_Item], *, holds_slot: bool) -> None:
        """One Triton call. A failure fails the jobs with rows in this call, nothing else."""
        if not holds_slot:
            await self._acquire()
        try:
            items = self._sendable(items)
            if not items:
                return
            self._mark_sent(items)
            chunk = [job.rows[i] for job, i in items]
            ids, mask = pad_rows(chunk)
            t = time.perf_counter()
            try:
                cat, pii, emb = await self._infer(ids, mask)
            except Exception as e:  # these callers learn of it; the consumer lives on
                for job in _jobs_of(items):
                    self._settle(job, e)
                return
            took = time.perf_counter() - t
            if self._stats.on_batch:
                self._stats.on_batch(len(chunk), int(ids.size), took)
            for job in _jobs_of(items):
                if job.trace is not None:
                    job.trace.calls += 1
                    job.trace.batch_rows = max(job.trace.batch_rows, len(chunk))
                    job.trace.infer_s += took
            for (job, i), out in zip(items, split_outputs(chunk, cat, pii, emb), strict=True):
                self._deliver(job, i, out)
        finally:
            self._release()

    def _deliver(self, job: _Job, i: int, out: RowOutput) -> None:
        if job.future.done():  # failed or left meanwhile: the output is not wanted
            return
        job.outputs[i] = out
        job.received += 1
        if job.received == len(job.rows):
            job.future.set_result(job.outputs)  # type: ignore[arg-type]
            self._settle(job)

    # ---- Triton call slots

    def _release(self) -> None:
        """Give a slot back: straight to a call of a batch under way if one waits."""
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
        self._wake.set()

    async def _acquire(self) -> None:
        """A slot for one more Triton call of a batch that already holds one."""
        if self._free > 0 and not self._slot_waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._slot_waiters.append(waiter)
        try:
            await waiter  # handed over by _release: the slot is ours
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot just as we were cancelled: pass it on
            raise
