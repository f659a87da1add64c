"""The request flow's spans with a fake classifier and an in-process cache (no Triton, no
HTTP): the request span and its children, the decision as attributes, the backend call and
its traceparent, and no text of the request in any span."""

from __future__ import annotations

import dataclasses
import json

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from router_svc.cache.front import CacheFront
from router_svc.cache.store import HnswCache
from router_svc.config.loading import EXAMPLE_CONFIG, TracingConfig, load_config
from router_svc.core.endpoints import CHAT
from router_svc.core.metrics import Metrics
from router_svc.core.pipeline import Router
from router_svc.flow.request import Forward, Local, RequestFlow
from router_svc.tracing.provider import Tracing
from router_svc.tracing.spans import NO_TRACE
from tests.fakes import DIM, FakeClassifier

HEADERS = {"Authorization": "Bearer tenant-a"}
MATH = "What is the derivative of x^3?"
EMAIL = "jane.roe@example.org"
CARD = "4111 1111 1111 1111"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
async def tracing():
    t = Tracing(TracingConfig(enabled=True), exporter=InMemorySpanExporter())
    t.start()
    yield t
    await t.shutdown()


@pytest.fixture
def exporter(tracing):
    class Flushed:  # the exporter, read after a flush of the batch processor
        def get_finished_spans(self):
            tracing.force_flush()
            return tracing.exporter.get_finished_spans()

        def clear(self):
            tracing.force_flush()
            tracing.exporter.clear()

    return Flushed()


@pytest.fixture
async def flow(tracing):
    cfg = load_config(EXAMPLE_CONFIG)
    cfg = dataclasses.replace(cfg, cache=dataclasses.replace(cfg.cache, enabled=True))
    metrics = Metrics.create(models=[*cfg.model_config, "auto"])
    cache = HnswCache(DIM, capacity=100, ttl_s=60)
    yield RequestFlow(Router(cfg, FakeClassifier(), metrics, environ={}),
                      CacheFront(cfg.cache, cache, environ={}), metrics,
                      recorder=tracing.recorder)
    await cache.close()


def raw(text: str, **extra) -> bytes:
    return json.dumps({"model": "auto", "messages": [{"role": "user", "content": text}],
                       **extra}).encode()


def spans(exporter) -> dict:
    return {s.name: s for s in exporter.get_finished_spans()}


async def test_a_routed_request_and_its_backend_call(flow, exporter) -> None:
    headers = {**HEADERS, "traceparent": TRACEPARENT}
    ex = flow.begin(CHAT, headers)
    out = await ex.decide(raw(MATH), headers)
    assert isinstance(out, Forward)
    relay = ex.relay(out)
    tp = relay.trace_headers["traceparent"]
    ex.answered(out, 200)
    await relay.json_ended({"choices": [], "usage": {"prompt_tokens": 5,
                                                     "completion_tokens": 3,
                                                     "total_tokens": 8}})
    ex.finish(200)
    got = spans(exporter)
    req = got["POST /v1/chat/completions"]
    assert req.kind == SpanKind.SERVER
    assert f"{req.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert f"{req.parent.span_id:016x}" == "b7ad6b7169203331"
    a = req.attributes
    assert (a["router.category"], a["router.model"], a["router.reason"]) == (
        "math", "phi4", "category")
    assert a["router.confidence"] == pytest.approx(0.9)
    assert a["router.cache"] == "miss" and a["router.pii_types"] == ()
    assert a["router.door"] == "http" and a["http.response.status_code"] == 200
    for name in ("parse", "classify", "cache.lookup", "backend"):
        assert got[name].parent.span_id == req.context.span_id, name
    backend = got["backend"]
    assert backend.kind == SpanKind.CLIENT
    assert tp == f"00-{req.context.trace_id:032x}-{backend.context.span_id:016x}-01"
    assert backend.attributes["gen_ai.request.model"] == "phi4"
    assert backend.attributes["http.response.status_code"] == 200
    assert backend.attributes["gen_ai.usage.output_tokens"] == 3
    assert got["cache.lookup"].attributes["router.cache"] == "miss"


async def test_pii_is_named_by_type_never_by_text(flow, exporter) -> None:
    ex = flow.begin(CHAT, HEADERS)
    out = await ex.decide(raw(f"{MATH} Mail {EMAIL}, card {CARD}"), HEADERS)
    assert isinstance(out, Local) and out.why == "pii_rejected"
    ex.finish(out.answer.status)
    req = spans(exporter)["POST /v1/chat/completions"]
    assert req.attributes["router.pii_types"] == ("CREDIT_CARD", "EMAIL_ADDRESS")
    assert req.attributes["router.action"] == "reject"
    dumped = "".join(s.to_json() for s in exporter.get_finished_spans())
    for text in (EMAIL, "jane.roe", CARD, "4111", "derivative"):
        assert text not in dumped


async def test_a_cache_hit_and_a_client_error(flow, exporter) -> None:
    first = flow.begin(CHAT, HEADERS)
    out = await first.decide(raw(MATH), HEADERS)
    await first.relay(out).json_ended({"id": "x", "object": "chat.completion", "created": 1,
                                       "model": "phi4", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "3x^2"},
         "finish_reason": "stop"}]})
    first.finish(200)
    exporter.clear()
    ex = flow.begin(CHAT, HEADERS)
    hit = await ex.decide(raw(MATH, stream=True), HEADERS)
    assert isinstance(hit, Local) and hit.why == "cache_hit"
    ex.finish(200)
    got = spans(exporter)
    assert got["POST /v1/chat/completions"].attributes["router.cache"] == "hit"
    assert got["cache.lookup"].attributes["router.cache"] == "hit"
    assert "backend" not in got
    exporter.clear()
    bad = flow.begin(CHAT, HEADERS)
    err = await bad.decide(b'{"model": "auto", "messages": "not a list"}', HEADERS)
    bad.finish(err.answer.status)
    got = spans(exporter)
    assert got["parse"].status.status_code == StatusCode.ERROR
    req = got["POST /v1/chat/completions"]
    assert req.attributes["http.response.status_code"] == 400
    assert req.status.status_code == StatusCode.UNSET and "error.type" in req.attributes


async def test_off_no_spans_and_no_traceparent() -> None:
    cfg = load_config(EXAMPLE_CONFIG)
    metrics = Metrics.create(models=[*cfg.model_config, "auto"])
    flow = RequestFlow(Router(cfg, FakeClassifier(), metrics, environ={}),
                       CacheFront(cfg.cache, None, environ={}), metrics)
    ex = flow.begin(CHAT, {"traceparent": TRACEPARENT})
    assert ex.trace is NO_TRACE
    out = await ex.decide(raw(MATH), HEADERS)
    relay = ex.relay(out)
    assert dict(relay.trace_headers) == {}
    ex.finish(200)
