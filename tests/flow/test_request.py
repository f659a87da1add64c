"""The door-neutral request flow with a fake classifier and a real in-process cache: what a
door is told to do, and what is counted. No Triton, no HTTP."""

from __future__ import annotations

import dataclasses
import json

import pytest

from router_svc.cache.front import CacheFront
from router_svc.cache.store import HnswCache
from router_svc.config.loading import EXAMPLE_CONFIG, load_config
from router_svc.core.endpoints import CHAT, COMPLETION
from router_svc.core.metrics import Metrics
from router_svc.core.pipeline import Router
from router_svc.flow.request import Forward, Local, RequestFlow
from tests.fakes import DIM, FakeClassifier

HEADERS = {"Authorization": "Bearer tenant-a"}
MATH = "What is the derivative of x^3?"


@pytest.fixture
async def flow():
    cfg = load_config(EXAMPLE_CONFIG)
    cfg = dataclasses.replace(cfg, cache=dataclasses.replace(cfg.cache, enabled=True))
    metrics = Metrics.create(models=[*cfg.model_config, "auto"])
    cache = HnswCache(DIM, capacity=100, ttl_s=60)
    yield RequestFlow(Router(cfg, FakeClassifier(), metrics, environ={}),
                      CacheFront(cfg.cache, cache, environ={}), metrics)
    await cache.close()


def raw(text: str, **extra) -> bytes:
    return json.dumps({"model": "auto", "messages": [{"role": "user", "content": text}],
                       **extra}).encode()


def count(flow: RequestFlow, name: str, **labels: str) -> float:
    return flow.metrics.registry.get_sample_value(f"router_{name}", labels) or 0.0


async def test_a_routed_request_is_forwarded_with_its_headers(flow) -> None:
    ex = flow.begin(CHAT)
    assert count(flow, "inflight_requests") == 1
    out = await ex.decide(raw(MATH), HEADERS)
    assert isinstance(out, Forward)
    assert out.model == "phi4" and out.body["model"] == "phi4"
    assert out.endpoint.backend_path == "/chat/completions"
    assert out.headers["x-router-model"] == "phi4" and out.headers["x-router-cache"] == "miss"
    assert "stream_options" not in out.body
    ex.finish(200)
    ex.finish(499)  # counted once
    assert count(flow, "requests_total", model="phi4", status="200") == 1
    assert count(flow, "requests_total", model="phi4", status="499") == 0
    assert count(flow, "inflight_requests") == 0
    assert count(flow, "request_seconds_count", endpoint="chat_completions") == 1


async def test_a_stream_asks_the_backend_for_usage(flow) -> None:
    out = await flow.begin(CHAT).decide(raw(MATH, stream=True), HEADERS)
    assert isinstance(out, Forward) and not out.client_wants_usage
    assert out.body["stream_options"] == {"include_usage": True}
    assert "stream_options" not in out.routed.body  # the routed body is left as it was


@pytest.mark.parametrize(("body", "status"), [(b"{", 400), (b"[]", 400),
                                              (raw("hi", temperature=float("nan")), 400)])
async def test_client_mistakes_are_local_answers_counted_as_errors(flow, body, status) -> None:
    out = await flow.begin(CHAT).decide(body, HEADERS)
    assert isinstance(out, Local) and out.answer.status == status
    assert out.why == f"error_{status}"
    assert out.answer.json_body is not None and out.answer.json_body["error"]["message"]
    assert count(flow, "errors_total", reason="bad_request") == 1


async def test_pii_refusal_is_answered_in_the_clients_mode(flow) -> None:
    out = await flow.begin(CHAT).decide(raw("card 4111 1111 1111 1111", stream=True), HEADERS)
    assert isinstance(out, Local) and out.why == "pii_rejected"
    assert out.answer.stream and out.answer.events[-1] == b"data: [DONE]\n\n"
    assert out.answer.headers["x-router-pii"] == "CREDIT_CARD"


async def test_stored_answer_is_a_hit_then_a_repeat_without_the_model(flow) -> None:
    first = await flow.begin(CHAT).decide(raw(MATH), HEADERS)
    assert isinstance(first, Forward)
    answer = {"id": "x", "object": "chat.completion", "created": 1, "model": "phi4",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "3x^2"},
                           "finish_reason": "stop"}]}
    await flow.begin(CHAT).relay(first).json_ended(answer)
    clf = flow.router.classifier
    calls = len(clf.calls)
    again = await flow.begin(CHAT).decide(raw(MATH, stream=True), HEADERS)
    assert isinstance(again, Local) and again.why == "cache_hit"
    assert again.answer.headers["x-router-cache-repeat"] == "1"
    assert b"3x^2" in b"".join(again.answer.events)
    assert len(clf.calls) == calls  # no model call for the very same request
    other = await flow.begin(CHAT).decide(raw(MATH), {"Authorization": "Bearer tenant-b"})
    assert isinstance(other, Forward)  # another tenant does not share it
    assert count(flow, "routing_decisions_total", category="math", model="phi4",
                 reason="cache_hit") == 1


async def test_completions_go_to_the_completions_path(flow) -> None:
    out = await flow.begin(COMPLETION).decide(
        json.dumps({"model": "auto", "prompt": MATH}).encode(), HEADERS)
    assert isinstance(out, Forward) and out.endpoint.backend_path == "/completions"


async def test_a_door_that_cannot_resend_still_trips_the_breaker(flow) -> None:
    """Through Envoy the router sees the backend's status only: the breaker learns from it,
    and the next routed request goes straight to the next model."""
    for _ in range(flow.router.config.failover.breaker_failures):
        ex = flow.begin(CHAT)
        out = await ex.decide(raw(MATH), HEADERS)
        assert isinstance(out, Forward) and out.model == "phi4"
        ex.backend_status(out, 503, None)
        ex.finish(503)
    ex = flow.begin(CHAT)
    out = await ex.decide(raw(MATH), HEADERS)
    assert isinstance(out, Forward) and out.model == "mistral-small3.1"
    assert out.body["model"] == "mistral-small3.1"
    assert out.headers["x-router-fallback"] == "phi4 -> mistral-small3.1 (circuit open)"
    assert "x-router-cache-partition" not in out.headers  # not stored under phi4's key
    ex.finish(200)
    assert count(flow, "breaker_opens_total", model="phi4") == 1


async def test_a_429_with_retry_after_opens_the_breaker_at_once(flow) -> None:
    ex = flow.begin(CHAT)
    out = await ex.decide(raw(MATH), HEADERS)
    assert isinstance(out, Forward)
    ex.backend_status(out, 429, "30")
    ex.finish(429)
    out2 = await flow.begin(CHAT).decide(raw(MATH + " Show steps."), HEADERS)
    assert isinstance(out2, Forward) and out2.model != "phi4"
