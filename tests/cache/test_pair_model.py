"""The hit verifier's model: the ONNX contract, the verdicts, fail-closed, the memo, the config
(``cache.verifier``) and its place in a lookup (``CacheFront``)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from router_svc.cache.front import CacheFront, open_verifier, verifier_path
from router_svc.cache.keys import CachePlan
from router_svc.cache.pair_model import ModelVerifier, PairModel, probability
from router_svc.cache.store import HnswCache
from router_svc.cache.verify import verify
from router_svc.config.loading import CacheConfig, ConfigError, VerifierConfig, parse_config
from router_svc.core.metrics import Metrics, render
from tests.cache.test_store import answer as answer_for


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory) -> tuple[Path, Path]:
    from export.backbone import minilm_path
    from export.tiny import build_tiny_pair_verifier

    d = tmp_path_factory.mktemp("pair")
    onnx = build_tiny_pair_verifier(d / "pair_verifier.onnx")
    tok = d / "tokenizer.json"
    tok.write_bytes((minilm_path() / "tokenizer.json").read_bytes())
    return onnx, tok


class CountingModel:
    """A stand-in with the PairModel interface: a fixed logit, calls counted, optional gate."""

    def __init__(self, logit: float = 0.0, fail: bool = False,
                 gate: threading.Event | None = None) -> None:
        self.value, self.fail, self.gate, self.calls = logit, fail, gate, 0

    def logit(self, a: str, b: str) -> float:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail:
            raise RuntimeError("model broke")
        return self.value


def test_the_onnx_model_reads_both_texts(tiny_pair) -> None:
    onnx, tok = tiny_pair
    m = PairModel(onnx, tok)
    a, b = "How do I convert MP4 to AVI?", "How do I convert AVI to MP4?"
    assert m.logit(a, b) == m.logit(a, b)
    assert m.logit(a, b) != pytest.approx(m.logit(a, "What is the capital of France?"), abs=1e-7)
    assert m.logit(a, b) != pytest.approx(m.logit(b, b), abs=1e-7)


def test_a_model_with_other_inputs_is_refused(tmp_path, tiny_pair) -> None:
    from export.tiny import build_tiny_model

    d = build_tiny_model(tmp_path / "dual")
    with pytest.raises(ValueError, match=r"export/pair_verifier\.py"):
        PairModel(d / "model.onnx", tiny_pair[1])


async def test_verdicts_follow_min_probability() -> None:
    m = CountingModel(logit=1.0)  # p = 0.731
    assert (await ModelVerifier(m, 0.7, 1.0).check("a b", "b a")).outcome == "served"
    refused = await ModelVerifier(m, 0.75, 1.0).check("a b", "b a")
    assert refused.outcome == "refused" and not refused.serve
    assert refused.probability == pytest.approx(probability(1.0))


async def test_the_same_text_needs_no_model_call() -> None:
    m = CountingModel(logit=-9.0)
    v = ModelVerifier(m, 0.5, 1.0)
    verdict = await v.check("What is  2+2?", " What is 2+2? ")
    assert verdict.outcome == "same_text" and verdict.serve and m.calls == 0


async def test_a_verdict_is_remembered_for_the_pair() -> None:
    m = CountingModel(logit=3.0)
    v = ModelVerifier(m, 0.5, 1.0)
    assert (await v.check("x to y", "y to x")).serve
    assert (await v.check("x to y", "y to x")).serve
    assert m.calls == 1
    await v.check("y to x", "x to y")  # the request's text comes first: another pair
    assert m.calls == 2


async def test_it_fails_closed_on_error_deadline_and_backlog() -> None:
    assert (await ModelVerifier(CountingModel(fail=True), 0.1, 1.0).check("a", "b")).outcome \
        == "error"
    gate = threading.Event()
    slow = CountingModel(logit=5.0, gate=gate)
    v = ModelVerifier(slow, 0.1, timeout_s=0.05, max_pending=1)
    try:
        assert (await v.check("a", "b")).outcome == "busy"  # past its deadline
        # the worker still holds that pair: one pending, so the next is refused at once
        assert (await v.check("c", "d")).outcome == "busy" and slow.calls == 1
    finally:
        gate.set()
    for _ in range(100):  # the worker lets go of its pair
        if v._pending == 0:
            break
        await asyncio.sleep(0.01)
    assert (await v.check("c", "d")).outcome == "served"
    v.close()


def test_verifier_path_auto_off_and_explicit(tmp_path, tiny_pair) -> None:
    onnx, tok = tiny_pair
    assert verifier_path(VerifierConfig(model="auto"), tok) == onnx  # next to the tokenizer
    assert verifier_path(VerifierConfig(model="auto"), tmp_path / "tokenizer.json") is None
    assert verifier_path(VerifierConfig(model="off"), tok) is None
    assert verifier_path(VerifierConfig(model=str(onnx)), tmp_path / "x.json") == onnx
    with pytest.raises(ConfigError, match=r"cache\.verifier\.model"):
        verifier_path(VerifierConfig(model=str(tmp_path / "missing.onnx")), tok)


def test_config_reads_the_block_and_resolves_a_relative_path(tmp_path) -> None:
    from tests.conftest import example_config_data

    data = example_config_data()
    data["cache"]["verifier"] = {"model": "models/pv.onnx", "min_probability": 0.8}
    cfg = parse_config(data, base_dir=tmp_path)
    assert cfg.cache.verifier.model == str(tmp_path / "models/pv.onnx")
    assert cfg.cache.verifier.min_probability == 0.8
    data["cache"]["verifier"] = {"min_probability": 1.5}
    with pytest.raises(ConfigError, match=r"cache\.verifier\.min_probability"):
        parse_config(data, base_dir=tmp_path)


def _routed_lookup(front: CacheFront, plan: CachePlan):
    """CacheFront.lookup with the plan given (the request side is tested elsewhere)."""
    front.plan = lambda routed, headers, caller: plan  # type: ignore[method-assign]

    class R:
        kind = "chat"
        request = type("Q", (), {"body": {}})()
        decision = None

        @staticmethod
        def headers():
            return {}

    return front.lookup(R(), {}, None)  # type: ignore[arg-type]


async def test_a_refused_candidate_is_a_miss_and_counted(tiny_pair) -> None:
    onnx, tok = tiny_pair
    cache = HnswCache(4)
    vec = np.array([1.0, 0.0, 0.0, 0.0], np.float32)
    answer = answer_for("an answer")
    stored, asked = "How do I bake bread at home?", "What is the way to bake bread at home?"
    assert verify(asked, stored) is None  # the text rules pass it: the model decides
    assert await cache.store("p", vec, stored, answer)
    front = CacheFront(CacheConfig(enabled=True, threshold=0.9, repeat_memo=False), cache)
    front.metrics = Metrics.create(models=["m"], categories=None)
    plan = CachePlan("p", asked, vec, lookup=True, store=True)
    for min_p, state in ((1.0, "miss"), (0.0, "hit")):
        with open_verifier(VerifierConfig(model=str(onnx), min_probability=min_p), tok) as v:
            front.verifier = v
            found = await _routed_lookup(front, plan)
        assert found.state == state and (found.hit is None) == (state == "miss")
    text = render(front.metrics)[0].decode()
    assert 'router_cache_verifications_total{outcome="refused"} 1.0' in text
    assert 'router_cache_verifications_total{outcome="served"} 1.0' in text
    await cache.close()
