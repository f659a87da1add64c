"""The batcher actor: gathering, limits, failure isolation, backpressure, cancellation."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from router_svc.classify.batcher import Batcher, QueueFull, pad_rows


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
