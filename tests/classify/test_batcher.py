"""The batcher actor: gathering, limits, failure isolation, backpressure, cancellation."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from router_svc.classify.batcher import (
    Batcher,
    BatchStats,
    DeadlineExceeded,
    QueueFull,
    fair_shares,
    pad_rows,
)


class FakeModel:
    """Echoes each row's length and first id so results can be traced back to their caller."""

    def __init__(self, delay: float = 0.01, fail_on: int | None = None):
        self.calls: list[int] = []
        self.delay = delay
        self.fail_on = fail_on
        self.active = 0
        self.max_active = 0

    async def __call__(self, ids: np.ndarray, mask: np.ndarray):
        self.calls.append(ids.shape[0])
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.delay)
            if self.fail_on is not None and (ids[:, 1] == self.fail_on).any():
                raise RuntimeError("model exploded")
            n = ids.shape[0]
            cat = np.stack([mask.sum(1), ids[:, 1]], axis=1).astype(np.float32)
            pii = np.zeros((n, ids.shape[1], 3), np.float32)
            emb = ids[:, 1:2].astype(np.float32)
            return cat, pii, emb
        finally:
            self.active -= 1


class GatedModel(FakeModel):
    """Holds every call until the test lets it through, and says when a call came in: the
    test decides what is in flight, without sleeping for it."""

    def __init__(self, fail_on: int | None = None):
        super().__init__(delay=0, fail_on=fail_on)
        self.tags: list[list[int]] = []  # each call's rows, by tag (second token)
        self.arrived: asyncio.Queue[list[int]] = asyncio.Queue()
        self._gate = asyncio.Semaphore(0)

    def let_through(self, n: int = 1_000) -> None:
        for _ in range(n):
            self._gate.release()

    async def __call__(self, ids: np.ndarray, mask: np.ndarray):
        tags = ids[:, 1].tolist()
        self.tags.append(tags)
        self.arrived.put_nowait(tags)
        async with self._gate:
            return await super().__call__(ids, mask)

    def sent(self) -> list[int]:
        return [t for call in self.tags for t in call]


def row(tag: int, length: int = 4) -> list[int]:
    return [101, tag] + [7] * (length - 3) + [102]


async def started(model: FakeModel, **kw) -> Batcher:
    b = Batcher(model, **kw)
    await b.start()
    return b


def test_pad_rows_masks_padding():
    ids, mask = pad_rows([[1, 2, 3], [4]])
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


async def test_concurrent_requests_share_calls_and_get_their_own_rows():
    model = FakeModel(delay=0.02)
    b = await started(model, max_batch_size=16, max_wait_s=0.01, max_inflight=1)
    try:
        # lengths 6 and 7: close enough to share a padded call (within 15% padding)
        outs = await asyncio.gather(*(b.submit([row(1000 + i, 6 + i % 2)]) for i in range(40)))
    finally:
        await b.stop()
    for i, out in enumerate(outs):
        assert out[0].category_logits[1] == 1000 + i  # the caller's own row
        assert out[0].category_logits[0] == 6 + i % 2  # unpadded length
        assert out[0].pii_logits.shape[0] == 6 + i % 2  # trimmed back to the row
    assert sum(model.calls) == 40
    assert len(model.calls) < 10 and max(model.calls) <= 16


async def test_a_job_larger_than_the_batch_runs_in_chunks():
    model = FakeModel()
    b = await started(model, max_batch_size=4)
    try:
        out = await b.submit([row(i) for i in range(10)])
    finally:
        await b.stop()
    assert [o.category_logits[1] for o in out] == list(range(10))
    assert model.calls == [4, 4, 2]


async def test_a_failed_batch_fails_its_callers_only_and_the_batcher_lives_on():
    model = FakeModel(fail_on=666)
    b = await started(model, max_batch_size=2, max_wait_s=0.005, max_inflight=1)
    try:
        bad = asyncio.create_task(b.submit([row(666)]))
        with pytest.raises(RuntimeError, match="exploded"):
            await bad
        good = await b.submit([row(5)])
        assert good[0].category_logits[1] == 5
    finally:
        await b.stop()


async def test_full_queue_sheds_load():
    model = FakeModel(delay=0.2)
    b = await started(model, max_batch_size=1, max_queue=2, max_inflight=1)
    try:
        results = await asyncio.gather(*(b.submit([row(i)]) for i in range(8)),
                                       return_exceptions=True)
    finally:
        await b.stop()
    refused = [r for r in results if isinstance(r, QueueFull)]
    served = [r for r in results if isinstance(r, list)]
    assert refused and served and len(refused) + len(served) == 8


async def test_the_queue_bound_counts_rows_not_requests():
    model = FakeModel(delay=0.2)
    b = await started(model, max_batch_size=4, max_queue=6, max_inflight=1)
    try:
        first = asyncio.ensure_future(b.submit([row(1)]))  # taken at once: Triton was idle
        while model.active == 0:  # the model is busy with it
            await asyncio.sleep(0)
        waiting = asyncio.ensure_future(b.submit([row(i) for i in range(2, 7)]))  # 5 rows
        while b.depth == 0:
            await asyncio.sleep(0)
        assert b.depth == 5
        with pytest.raises(QueueFull, match="5 rows waiting"):
            await b.submit([row(7), row(8)])  # 5 + 2 > 6: refused though it is one request
        ok = await b.submit([row(9)])  # 5 + 1 fits
        assert int(ok[0].embedding[0]) == 9
        assert len(await first) == 1 and len(await waiting) == 5
        assert b.depth == 0
    finally:
        await b.stop()


async def test_a_request_larger_than_the_bound_runs_when_nothing_waits():
    model = FakeModel(delay=0.01)
    b = await started(model, max_batch_size=4, max_queue=3, max_inflight=1)
    try:
        outs = await b.submit([row(i) for i in range(10)])
    finally:
        await b.stop()
    assert [int(o.embedding[0]) for o in outs] == list(range(10))


async def test_callers_that_left_are_not_inferred():
    model = FakeModel(delay=0.05)
    b = await started(model, max_batch_size=1, max_wait_s=0, max_inflight=1)
    try:
        first = asyncio.create_task(b.submit([row(1)]))
        gone = asyncio.create_task(b.submit([row(2)]))
        await asyncio.sleep(0.01)
        gone.cancel()
        await first
        await asyncio.sleep(0.1)
    finally:
        await b.stop()
    assert model.calls == [1]


async def test_one_batch_is_prefetched_while_another_runs():
    model = FakeModel(delay=0.05)
    b = await started(model, max_batch_size=1, max_wait_s=0, max_inflight=2)
    try:
        await asyncio.gather(*(b.submit([row(i)]) for i in range(6)))
    finally:
        await b.stop()
    assert model.max_active == 2


async def test_stop_fails_pending_callers_instead_of_hanging():
    model = FakeModel(delay=1.0)
    b = await started(model, max_batch_size=1, max_inflight=1)
    tasks = [asyncio.create_task(b.submit([row(i)])) for i in range(3)]
    await asyncio.sleep(0.02)
    await b.stop()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 1)
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_idle_model_starts_at_once_and_busy_model_gathers():
    model = FakeModel(delay=0.05)
    b = await started(model, max_batch_size=32, max_inflight=1)  # max_wait 0: adaptive
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        first = asyncio.create_task(b.submit([row(1)]))
        await asyncio.sleep(0.005)
        assert model.calls == [1] and loop.time() - t0 < 0.04  # no wait for company
        rest = [asyncio.create_task(b.submit([row(10 + i)])) for i in range(10)]
        outs = await asyncio.gather(first, *rest)
    finally:
        await b.stop()
    assert model.calls == [1, 10]  # what came while the model was busy went as one batch
    assert [int(o[0].embedding[0]) for o in outs] == [1, *range(10, 20)]


def test_length_groups_keep_short_rows_away_from_long_ones():
    from router_svc.triton.python_model import length_groups

    def rows(lengths: list[int], **kw) -> list[list[int]]:
        return length_groups([(1, n) for n in lengths], **kw)

    groups = rows([10, 200, 12, 9, 180, 11], max_rows=32, max_tokens=10_000)
    assert groups == [[1, 4], [2, 5, 0, 3]]  # at most 15% of a group's tokens are padding
    assert rows([100, 95, 90], max_rows=32, max_tokens=10_000) == [[0, 1, 2]]
    assert rows([8] * 5, max_rows=2, max_tokens=10_000) == [[0, 1], [2, 3], [4]]
    assert rows([100] * 4, max_rows=32, max_tokens=250) == [[0, 1], [2, 3]]


@pytest.mark.parametrize("max_inflight", [1, 2])
async def test_max_inflight_counts_triton_calls_not_batches(max_inflight):
    """One request whose rows split into many length groups, with others behind it: never
    more Triton calls at once than ``max_inflight``, and every caller gets its own rows."""
    model = FakeModel(delay=0.01)
    b = await started(model, max_batch_size=4, max_inflight=max_inflight)
    try:
        big = [row(t, 4 + 40 * t) for t in range(1, 9)]  # 8 lengths: 8 groups
        outs = await asyncio.gather(b.submit(big), *(b.submit([row(50 + i)]) for i in range(6)))
    finally:
        await b.stop()
    assert model.max_active == max_inflight
    assert [int(o.embedding[0]) for o in outs[0]] == list(range(1, 9))
    assert [int(o[0].embedding[0]) for o in outs[1:]] == list(range(50, 56))


async def test_mixed_lengths_run_as_separate_calls_in_the_callers_order():
    model = FakeModel(delay=0.01)
    b = await started(model, max_batch_size=32, max_inflight=1)
    try:
        outs = await b.submit([row(1, 4), row(2, 120), row(3, 5), row(4, 100)])
    finally:
        await b.stop()
    assert sorted(model.calls) == [2, 2]
    assert [int(o.embedding[0]) for o in outs] == [1, 2, 3, 4]
    assert [int(o.category_logits[0]) for o in outs] == [4, 120, 5, 100]


async def test_many_split_requests_at_once_all_finish():
    """Requests that each split into several Triton calls, many at once, with few slots: every
    call gives its slot back as it ends, so none waits for ever on another's."""
    model = FakeModel(delay=0.001)
    b = await started(model, max_batch_size=3, max_inflight=2)
    try:
        jobs = [b.submit([row(i, 4 + 30 * (k % 5)) for k in range(i % 7 + 1)])
                for i in range(40)]
        outs = await asyncio.wait_for(asyncio.gather(*jobs), 10)
    finally:
        await b.stop()
    assert model.max_active <= 2
    assert all(int(o.embedding[0]) == i for i, out in enumerate(outs) for o in out)


# ---------------------------------------------------------------- fairness and stale work


def test_fair_shares_split_a_batch_max_min():
    assert fair_shares([40, 1], 4) == [3, 1]  # the small job is never left for later
    assert fair_shares([40, 40], 8) == [4, 4]
    assert fair_shares([10, 2, 10], 9) == [4, 2, 3]  # what the small one leaves goes round
    assert fair_shares([1] * 6, 4) == [1, 1, 1, 1, 0, 0]  # more jobs than rows: queue order
    assert fair_shares([3, 2], 32) == [3, 2]
    assert fair_shares([], 4) == [] and fair_shares([0, 5], 4) == [0, 4]


async def test_a_small_request_is_not_stuck_behind_a_large_one():
    """A 40-row request is ten calls of 4; a one-row request that arrives while its first call
    runs goes out in the very next call, not after the other nine."""
    model = GatedModel()
    b = await started(model, max_batch_size=4, max_inflight=1)
    try:
        large = asyncio.create_task(b.submit([row(1000 + i) for i in range(40)]))
        assert await model.arrived.get() == [1000, 1001, 1002, 1003]  # holds the one slot
        small = asyncio.create_task(b.submit([row(7)]))
        await asyncio.sleep(0)  # let it queue: one step, nothing timed
        assert b.depth == 36 + 1
        model.let_through()
        large_out, small_out = await asyncio.gather(large, small)
    finally:
        await b.stop()
    assert sorted(model.tags[1]) == [7, 1004, 1005, 1006]  # its fair share of the batch
    assert [int(o.embedding[0]) for o in small_out] == [7]
    # the large request is complete and in its own order, though spread over the calls
    assert [int(o.embedding[0]) for o in large_out] == list(range(1000, 1040))
    assert [t for t in model.sent() if t != 7] == list(range(1000, 1040))


async def test_max_job_tokens_keeps_a_long_prompts_calls_small():
    """Alone, a 40-row request of 16-token rows goes in calls of 64 tokens (4 rows), not of
    the batch's 16 rows; others' rows still fill the rest of a batch."""
    model = GatedModel()
    b = await started(model, max_batch_size=16, max_inflight=1, max_job_tokens=64)
    try:
        large = asyncio.create_task(b.submit([row(1000 + i, 16) for i in range(40)]))
        assert await model.arrived.get() == [1000, 1001, 1002, 1003]
        small = [asyncio.create_task(b.submit([row(t, 16)])) for t in (7, 8)]
        await asyncio.sleep(0)
        model.let_through()
        out = await large
        await asyncio.gather(*small)
    finally:
        await b.stop()
    assert [int(o.embedding[0]) for o in out] == list(range(1000, 1040))
    assert sorted(model.tags[1]) == [7, 8, 1004, 1005, 1006, 1007]
    assert all(len([t for t in call if t >= 1000]) <= 4 for call in model.tags)


async def test_large_requests_interleave_and_each_gets_its_rows_in_order():
    """Two large requests of mixed lengths and small ones between them, few slots: every
    caller gets all its rows, in its order, each trimmed to its own length."""
    model = FakeModel(delay=0.001)
    b = await started(model, max_batch_size=8, max_inflight=2, max_batch_tokens=200)
    try:
        def large(base: int) -> list[list[int]]:
            return [row(base + i, 4 + (i * 37) % 60) for i in range(50)]

        jobs = [b.submit(large(1000)), b.submit(large(2000)),
                *(b.submit([row(10 + i, 5 + i)]) for i in range(12))]
        outs = await asyncio.wait_for(asyncio.gather(*jobs), 10)
    finally:
        await b.stop()
    for base, out in ((1000, outs[0]), (2000, outs[1])):
        assert [int(o.embedding[0]) for o in out] == list(range(base, base + 50))
        assert [int(o.category_logits[0]) for o in out] == [4 + (i * 37) % 60 for i in range(50)]
        assert all(o.pii_logits.shape[0] == 4 + (i * 37) % 60 for i, o in enumerate(out))
    assert [int(o[0].embedding[0]) for o in outs[2:]] == list(range(10, 22))
    assert max(model.calls) <= 8 and b.depth == 0


async def test_rows_past_their_deadline_never_reach_the_model():
    model = GatedModel()
    b = await started(model, max_batch_size=4, max_inflight=1)
    try:
        first = asyncio.create_task(b.submit([row(1)]))
        await model.arrived.get()  # the one slot is busy until the test says so
        with pytest.raises(DeadlineExceeded):  # already past: refused at once
            await b.submit([row(2)], deadline=time.monotonic() - 1)
        late = asyncio.create_task(b.submit([row(3), row(4)], deadline=time.monotonic() + 0.02))
        with pytest.raises(DeadlineExceeded, match="2 of 2 rows not sent"):
            await late  # failed by its deadline though Triton is still busy
        assert b.depth == 0
        model.let_through()
        assert int((await first)[0].embedding[0]) == 1
        assert int((await b.submit([row(5)]))[0].embedding[0]) == 5
    finally:
        await b.stop()
    assert model.sent() == [1, 5]


async def test_a_deadline_drops_rows_already_in_a_batch_that_wait_for_a_slot():
    """A batch's second call (another length group) waits for a slot; its job's deadline
    passes meanwhile: the call is skipped, the cheaper first call went out."""
    model = GatedModel()
    b = await started(model, max_batch_size=8, max_inflight=1)
    try:
        short = asyncio.create_task(b.submit([row(1)]))
        long = asyncio.create_task(b.submit([row(2, 200)], deadline=time.monotonic() + 0.02))
        assert await model.arrived.get() == [1]  # cheapest group first; [2] waits for a slot
        with pytest.raises(DeadlineExceeded):
            await long
        model.let_through()
        await short
        await b.submit([row(3)])  # the consumer moved on: the skipped call freed its slot
    finally:
        await b.stop()
    assert model.sent() == [1, 3]


async def test_max_queue_wait_fails_a_job_none_of_whose_rows_went_out():
    model = GatedModel()
    b = await started(model, max_batch_size=4, max_inflight=1, max_queue_wait_s=0.02)
    try:
        first = asyncio.create_task(b.submit([row(1)]))
        await model.arrived.get()
        with pytest.raises(DeadlineExceeded, match="max_queue_wait"):
            await b.submit([row(2)])  # no deadline of its own: still bounded
        model.let_through()
        await first
    finally:
        await b.stop()
    assert model.sent() == [1]


async def test_max_queue_wait_does_not_cut_a_started_job_short():
    """A long prompt alone on a slow model spans many calls: once its first rows went out,
    only the caller's deadline applies to the rest."""
    model = GatedModel()
    b = await started(model, max_batch_size=4, max_inflight=1, max_queue_wait_s=0.02)
    try:
        large = asyncio.create_task(b.submit([row(1000 + i) for i in range(12)]))
        await model.arrived.get()
        await asyncio.sleep(0.05)  # time passes beyond max_queue_wait; 8 of its rows wait
        assert not large.done()
        model.let_through()
        assert [int(o.embedding[0]) for o in await large] == list(range(1000, 1012))
    finally:
        await b.stop()


async def test_the_callers_deadline_stops_a_started_job():
    model = GatedModel()
    b = await started(model, max_batch_size=4, max_inflight=1)
    try:
        large = asyncio.create_task(b.submit([row(1000 + i) for i in range(12)],
                                             deadline=time.monotonic() + 0.02))
        await model.arrived.get()
        with pytest.raises(DeadlineExceeded, match=r"8 of 12 rows .* caller's deadline"):
            await large
        assert b.depth == 0
        model.let_through()
        await b.submit([row(5)])
    finally:
        await b.stop()
    assert model.sent() == [1000, 1001, 1002, 1003, 5]


async def test_a_cancelled_caller_leaves_the_queue_and_is_not_inferred():
    model = GatedModel()
    depths: list[int] = []
    b = await started(model, max_batch_size=4, max_inflight=1, max_queue=6,
                      stats=BatchStats(on_depth=depths.append))
    try:
        first = asyncio.create_task(b.submit([row(1)]))
        await model.arrived.get()
        gone = asyncio.create_task(b.submit([row(i) for i in range(100, 105)]))
        await asyncio.sleep(0)  # it queues
        assert b.depth == 5
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert b.depth == 0 and depths[-1] == 0  # its rows no longer count against the bound
        ok = asyncio.create_task(b.submit([row(i) for i in range(200, 206)]))  # 6: fits again
        model.let_through()
        await first
        assert [int(o.embedding[0]) for o in await ok] == list(range(200, 206))
    finally:
        await b.stop()
    assert not set(model.sent()) & set(range(100, 105))


async def test_a_cancelled_large_caller_stops_sending_its_remaining_rows():
    model = GatedModel()
    b = await started(model, max_batch_size=4, max_inflight=1)
    try:
        large = asyncio.create_task(b.submit([row(1000 + i) for i in range(40)]))
        await model.arrived.get()
        large.cancel()
        with pytest.raises(asyncio.CancelledError):
            await large
        assert b.depth == 0
        model.let_through()
        await b.submit([row(5)])
    finally:
        await b.stop()
    assert model.sent() == [1000, 1001, 1002, 1003, 5]


async def test_a_failed_call_fails_only_the_jobs_with_rows_in_it():
    """One batch, two length groups: the call holding the bad row fails its jobs (the large
    one with a row in it too, whose other row is then not sent); the other call's job and
    later requests are served."""
    model = GatedModel(fail_on=666)
    b = await started(model, max_batch_size=8, max_inflight=1)
    try:
        blocker = asyncio.create_task(b.submit([row(1)]))
        await model.arrived.get()
        bad = asyncio.create_task(b.submit([row(666)]))
        large = asyncio.create_task(b.submit([row(10), row(11, 150), row(12)]))
        other = asyncio.create_task(b.submit([row(20, 150)]))
        await asyncio.sleep(0)  # all queued: they share the next batch
        model.let_through()
        results = await asyncio.gather(blocker, bad, large, other, return_exceptions=True)
        after = await b.submit([row(30)])
    finally:
        await b.stop()
    # the cheaper call first; the other skips row 11: its job had already failed
    assert sorted(model.tags[1]) == [10, 12, 666] and model.tags[2] == [20]
    assert isinstance(results[1], RuntimeError) and isinstance(results[2], RuntimeError)
    assert [int(o.embedding[0]) for o in results[3]] == [20]
    assert int(after[0].embedding[0]) == 30


async def test_stop_fails_callers_whose_rows_are_spread_over_batches():
    model = GatedModel()
    b = await started(model, max_batch_size=4, max_inflight=1)
    large = asyncio.create_task(b.submit([row(1000 + i) for i in range(40)]))
    await model.arrived.get()
    small = asyncio.create_task(b.submit([row(7)]))
    await asyncio.sleep(0)
    await b.stop()
    results = await asyncio.wait_for(asyncio.gather(large, small, return_exceptions=True), 1)
    assert all(isinstance(r, RuntimeError) and "shutting down" in str(r) for r in results)
    assert b.depth == 0
