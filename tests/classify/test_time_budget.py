"""A classification's time budget grows with the Triton calls its request needs: a prompt of
many windows completes on a slow model, while a stalled model still fails in bounded time.

A real tokenizer (the tiny model's), the real batcher and a stand-in model whose calls take a
set time (or never end)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from router_svc.classify.batcher import Batcher, DeadlineExceeded
from router_svc.classify.classifier import Classifier
from router_svc.classify.tokenization import TextTokenizer
from router_svc.labels import PII_TAGS

CALL_S = 0.03  # one call of the stand-in model
TIMEOUT_S = 0.1  # triton.timeout_s: what one call may take


class SlowModel:
    def __init__(self, delay: float | None) -> None:
        self.delay = delay  # None: the call never ends
        self.calls = 0

    async def __call__(self, ids: np.ndarray, mask: np.ndarray):
        self.calls += 1
        await asyncio.sleep(3600 if self.delay is None else self.delay)
        n, t = ids.shape
        pii = np.full((n, t, len(PII_TAGS)), -5.0, np.float32)
        pii[:, :, PII_TAGS.index("O")] = 5.0
        return np.zeros((n, 2), np.float32), pii, np.ones((n, 4), np.float32)


@pytest.fixture(scope="module")
def tok(tiny_model_dir) -> TextTokenizer:
    return TextTokenizer(tiny_model_dir / "tokenizer.json")


def classifier(tok: TextTokenizer, model: SlowModel) -> tuple[Classifier, Batcher]:
    # 64-token windows, at most 2 rows of a job per call: a long text is many calls
    batcher = Batcher(model, max_batch_size=32, max_inflight=1, max_job_tokens=128)
    return Classifier(tok, batcher, ["a", "b"], list(PII_TAGS), window=64, stride=48,
                      recognisers=False), batcher


LONG = " ".join(f"word{i} is here." for i in range(400))


async def test_a_prompt_of_many_calls_gets_the_time_they_need(tok) -> None:
    model = SlowModel(CALL_S)
    clf, batcher = classifier(tok, model)
    await batcher.start()
    try:
        plan = clf.plan(LONG, [LONG])
        calls = batcher.calls_for([w.ids for w in plan.rows])
        # far more work than the old fixed budget (2 x timeout_s) allowed
        assert calls * CALL_S > 3 * TIMEOUT_S
        t = time.monotonic()
        result = await clf.classify(LONG, [LONG], call_timeout_s=TIMEOUT_S)
        took = time.monotonic() - t
    finally:
        await batcher.stop()
    assert result.category in ("a", "b") and result.pii == [[]]
    assert model.calls == calls and took > 2 * TIMEOUT_S


@pytest.mark.parametrize("text", ["a short question", LONG[:2000]])
async def test_a_stalled_model_still_times_out(tok, text) -> None:
    model = SlowModel(None)
    clf, batcher = classifier(tok, model)
    await batcher.start()
    try:
        calls = batcher.calls_for([w.ids for w in clf.plan(text, [text]).rows])
        t = time.monotonic()
        # the batcher drops the unsent rows at the last send time, or the wait ends
        with pytest.raises((TimeoutError, DeadlineExceeded)):
            await clf.classify(text, [text], call_timeout_s=TIMEOUT_S)
        took = time.monotonic() - t
    finally:
        await batcher.stop()
    # the bound: one call's time per call needed, plus one; the first call never ends
    assert TIMEOUT_S * calls - 0.05 < took < TIMEOUT_S * (calls + 1) + 0.1
    assert model.calls == 1 and (text == LONG[:2000]) == (calls > 3)


def test_calls_for_follows_the_per_call_bounds() -> None:
    b = Batcher(SlowModel(0), max_batch_size=8, max_batch_tokens=1024, max_job_tokens=256)
    assert b.calls_for([]) == 0
    assert b.calls_for([[1] * 10]) == 1
    assert b.calls_for([[1] * 128] * 5) == 3  # 2 rows of 128 per call (max_job_tokens)
    assert b.calls_for([[1] * 16] * 20) == 3  # 8 rows per call (max_batch_size)
    assert Batcher(SlowModel(0), max_batch_size=8).calls_for([[1] * 16] * 20) == 3
