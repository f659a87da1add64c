"""Traces through the HTTP door: the real router (``create_app`` on a real port), the real
Triton with the quick trained model and the demo backends, spans caught by the SDK's
in-memory exporter (flushed when the router stops, as at shutdown)."""

from __future__ import annotations

import aiohttp
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from router_svc.ops.demo_backends import OPTIONS, RECEIVED

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_backends")]

MATH = "What is the derivative of f(x) = x³ + 2x² - 5x + 7?"
EMAIL = "jane.roe@example.org"
SSN = "078-05-1120"
PII_PROMPT = f"My SSN is {SSN} and my e-mail is {EMAIL}. What is the derivative of x^2?"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
MODELS = ("phi4", "mistral-small3.1", "gemma3:27b")
REQUEST = "POST /v1/chat/completions"


async def post(url: str, text: str, *, stream: bool = False, model: str = "auto",
               headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}
    async with aiohttp.ClientSession() as s, s.post(
            f"{url}/v1/chat/completions", json=body,
            headers={"Authorization": "Bearer client-key", **(headers or {})}) as r:
        return r.status, await r.read()


def received(backends) -> list:
    return [r for m in MODELS for r in backends[m].app[RECEIVED]]


async def traced(router_factory, exporter, mutate=None, **tracing) -> str:
    return await router_factory(mutate, span_exporter=exporter,
                                tracing={"enabled": True, **tracing})


def by_name(exporter) -> dict[str, list]:
    out: dict[str, list] = {}
    for s in exporter.get_finished_spans():
        out.setdefault(s.name, []).append(s)
    return out


def with_cache(data: dict) -> None:
    data["cache"] = {**data.get("cache", {}), "enabled": True}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_request_is_one_trace_continuing_the_client_and_reaching_the_backend(
        router_factory, backends, stream: bool) -> None:
    exporter = InMemorySpanExporter()
    url = await traced(router_factory, exporter, with_cache)
    status, body = await post(url, MATH, stream=stream, headers={"traceparent": TRACEPARENT,
                                                                 "tracestate": "vendor=v1"})
    assert status == 200, body
    (got,) = received(backends)
    await router_factory.stop(url)  # the provider's shutdown flushes the last spans
    spans = by_name(exporter)
    (req,) = spans[REQUEST]
    assert req.kind == SpanKind.SERVER
    assert f"{req.context.trace_id:032x}" == TRACE_ID
    assert f"{req.parent.span_id:016x}" == CLIENT_SPAN
    a = req.attributes
    assert a["router.category"] == "math" and a["router.model"] == "phi4"
    assert a["router.reason"] == "category" and 0.6 <= a["router.confidence"] <= 1
    assert a["router.pii_types"] == () and a["router.cache"] == "miss"
    assert a["http.response.status_code"] == 200 and a["router.door"] == "http"
    assert req.status.status_code == StatusCode.UNSET

    def child_of(name: str, parent) -> object:
        (s,) = spans[name]
        assert s.parent.span_id == parent.context.span_id, name
        assert s.context.trace_id == req.context.trace_id
        return s

    for name in ("parse", "classify", "cache.lookup"):
        child_of(name, req)
    classify = spans["classify"][0]
    tokenize, triton = child_of("tokenize", classify), child_of("triton", classify)
    assert tokenize.attributes["router.tokens"] > 0
    t = triton.attributes
    assert t["router.triton.rows"] >= 1 and t["router.triton.batch_size"] >= t[
        "router.triton.rows"]
    assert t["router.triton.calls"] >= 1 and t["router.triton.queue_ms"] >= 0
    assert spans["cache.lookup"][0].attributes["router.cache"] == "miss"

    backend = child_of("backend", req)
    assert backend.kind == SpanKind.CLIENT
    assert backend.attributes["http.response.status_code"] == 200
    assert backend.attributes["router.model"] == "phi4"
    # the backend got the request's trace with the backend call's span as parent
    assert got.header("traceparent") == \
        f"00-{TRACE_ID}-{backend.context.span_id:016x}-01"
    assert got.header("tracestate") == "vendor=v1"
    if stream:
        assert [e.name for e in backend.events] == ["first_token"]
        assert backend.attributes["router.backend.ttft_ms"] > 0
        assert backend.attributes["router.stream.completed"] is True
    assert backend.attributes["gen_ai.usage.output_tokens"] > 0


async def test_no_pii_text_in_any_span(router_factory, backends) -> None:
    exporter = InMemorySpanExporter()
    url = await traced(router_factory, exporter)
    for model in ("auto", "phi4", "gemma3:27b"):
        for stream in (False, True):
            status, _ = await post(url, PII_PROMPT, model=model, stream=stream)
            assert status == 200
    await router_factory.stop(url)
    spans = exporter.get_finished_spans()
    reqs = [s for s in spans if s.name == REQUEST]
    assert len(reqs) == 6
    for r in reqs:  # the types by name...
        assert {"US_SSN", "EMAIL_ADDRESS"} <= set(r.attributes["router.pii_types"]), \
            r.attributes
    dumped = "\n".join(s.to_json() for s in spans)
    for text in (SSN, "078-05", "1120", EMAIL, "jane.roe", "example.org", "derivative"):
        assert text not in dumped  # ...never the text, in no attribute, event or status


async def test_a_failing_backend_is_an_error_span(router_factory, backends) -> None:
    exporter = InMemorySpanExporter()
    url = await traced(router_factory, exporter)
    for m in MODELS:
        backends[m].app[OPTIONS].fail_status = 503
    status, _ = await post(url, MATH)
    assert status == 503
    await router_factory.stop(url)
    spans = by_name(exporter)
    (req,) = spans[REQUEST]
    assert req.status.status_code == StatusCode.ERROR
    assert req.attributes["http.response.status_code"] == 503
    calls = spans["backend"]
    assert len(calls) == 2  # phi4, then the failover's next model (failover.max_retries: 1)
    for c in calls:
        assert c.status.status_code == StatusCode.ERROR
        assert c.parent.span_id == req.context.span_id
    assert req.attributes["router.fallbacks"]


async def test_off_no_spans_and_no_traceparent_added(router_factory, backends) -> None:
    exporter = InMemorySpanExporter()
    url = await router_factory(span_exporter=exporter)  # the example config: tracing off
    status, _ = await post(url, MATH)
    assert status == 200
    status, _ = await post(url, MATH, headers={"traceparent": TRACEPARENT})
    assert status == 200
    first, second = received(backends)
    await router_factory.stop(url)
    assert exporter.get_finished_spans() == ()
    assert first.header("traceparent") is None and first.header("tracestate") is None
    assert second.header("traceparent") == TRACEPARENT  # the client's own, as it came


async def test_sampled_out_new_traces_still_carry_a_traceparent(router_factory,
                                                                backends) -> None:
    exporter = InMemorySpanExporter()
    url = await traced(router_factory, exporter, sample_ratio=0.0)
    status, _ = await post(url, MATH)
    assert status == 200
    status, _ = await post(url, MATH, headers={"traceparent": TRACEPARENT})
    assert status == 200
    first, second = received(backends)
    await router_factory.stop(url)
    # the new trace was not sampled: no spans, and the backend is told so (flags 00)
    assert first.header("traceparent").split("-")[1] != TRACE_ID
    assert int(first.header("traceparent")[-2:], 16) & 1 == 0
    # the client's sampled one is recorded whatever the ratio (parent-based)
    names = {s.name for s in exporter.get_finished_spans()}
    assert REQUEST in names and "backend" in names
    assert second.header("traceparent").split("-")[1] == TRACE_ID
    assert {s.context.trace_id for s in exporter.get_finished_spans()} == {int(TRACE_ID, 16)}

