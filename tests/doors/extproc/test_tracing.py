"""Traces through the Envoy ext_proc door: the real Envoy in front of the router's ext_proc
server, the real Triton and the demo backends. Envoy sends the backend request itself, so the
router's header mutation is what gives the upstream its ``traceparent``."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from router_svc.ops.demo_backends import RECEIVED
from tests.conftest import BACKEND_NAMES

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_backends")]

MODELS = tuple(BACKEND_NAMES)
MATH = "What is the derivative of f(x) = x³ + 2x² - 5x + 7?"
EMAIL = "jane.roe@example.org"
SSN = "078-05-1120"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
REQUEST = "POST /v1/chat/completions"


async def post(url: str, text: str, *, stream: bool = False,
               headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}], "stream": stream}
    async with aiohttp.ClientSession() as s, s.post(
            f"{url}/v1/chat/completions", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **(headers or {})}) as r:
        return r.status, await r.read()


def received(backends) -> list:
    return [r for m in MODELS for r in backends[m].app[RECEIVED]]


async def finished(stack, exporter) -> dict[str, list]:
    await asyncio.to_thread(stack.serving.runtime.tracing.force_flush)
    out: dict[str, list] = {}
    for s in exporter.get_finished_spans():
        out.setdefault(s.name, []).append(s)
    return out


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_the_upstream_gets_the_backend_call_span_as_its_parent(envoy_stack, backends,
                                                                     stream: bool) -> None:
    exporter = InMemorySpanExporter()
    stack = await envoy_stack(span_exporter=exporter, tracing={"enabled": True})
    status, body = await post(stack.url, MATH, stream=stream,
                              headers={"traceparent": TRACEPARENT})
    assert status == 200, body
    (got,) = received(backends)
    spans = await finished(stack, exporter)
    (req,) = spans[REQUEST]
    assert req.kind == SpanKind.SERVER and req.attributes["router.door"] == "extproc"
    assert f"{req.context.trace_id:032x}" == TRACE_ID
    assert f"{req.parent.span_id:016x}" == CLIENT_SPAN
    assert req.attributes["router.model"] == "phi4"
    assert req.attributes["router.category"] == "math"
    assert req.attributes["http.response.status_code"] == 200
    for name in ("parse", "classify"):
        (s,) = spans[name]
        assert s.parent.span_id == req.context.span_id, name
    (triton,) = spans["triton"]
    assert triton.attributes["router.triton.batch_size"] >= 1
    (backend,) = spans["backend"]
    assert backend.kind == SpanKind.CLIENT and backend.parent.span_id == req.context.span_id
    assert backend.attributes["http.response.status_code"] == 200
    assert got.header("traceparent") == f"00-{TRACE_ID}-{backend.context.span_id:016x}-01"
    if stream:
        assert [e.name for e in backend.events] == ["first_token"]


async def test_a_new_trace_and_no_pii_text(envoy_stack, backends) -> None:
    exporter = InMemorySpanExporter()
    stack = await envoy_stack(span_exporter=exporter, tracing={"enabled": True})
    status, _ = await post(stack.url, f"Mail {EMAIL}, SSN {SSN}: what is the derivative of x?")
    assert status == 200  # refused (pii_action: reject) by Envoy's immediate response
    status, _ = await post(stack.url, MATH, headers={"tracestate": "stale=1"})
    assert status == 200
    (got,) = received(backends)
    spans = await finished(stack, exporter)
    refused, routed = sorted(spans[REQUEST], key=lambda s: s.start_time)
    assert refused.parent is None and {"US_SSN", "EMAIL_ADDRESS"} <= set(
        refused.attributes["router.pii_types"])
    assert refused.attributes["router.action"] == "reject"
    (backend,) = spans["backend"]
    _, trace_id, parent, flags = got.header("traceparent").split("-")
    assert (trace_id, parent) == (f"{routed.context.trace_id:032x}",
                                  f"{backend.context.span_id:016x}")
    assert int(flags, 16) & 1  # sampled (a new trace's id is random: flag 02 as well)
    assert got.header("tracestate") is None  # a tracestate without its traceparent is dropped
    dumped = "\n".join(s.to_json() for s in exporter.get_finished_spans())
    for text in (EMAIL, "jane.roe", SSN, "1120", "derivative"):
        assert text not in dumped


async def test_off_no_spans_and_no_traceparent_added(envoy_stack, backends) -> None:
    exporter = InMemorySpanExporter()
    stack = await envoy_stack(span_exporter=exporter)
    status, _ = await post(stack.url, MATH)
    assert status == 200
    (got,) = received(backends)
    spans = await finished(stack, exporter)
    assert spans == {}
    assert got.header("traceparent") is None


async def test_a_backend_error_through_envoy_is_an_error_span(envoy_stack, backends) -> None:
    from router_svc.ops.demo_backends import OPTIONS

    exporter = InMemorySpanExporter()
    stack = await envoy_stack(span_exporter=exporter, tracing={"enabled": True})
    backends["phi4"].app[OPTIONS].fail_status = 500
    status, _ = await post(stack.url, MATH)
    assert status == 500
    spans = await finished(stack, exporter)
    (req,) = spans[REQUEST]
    (backend,) = spans["backend"]
    assert backend.status.status_code == StatusCode.ERROR
    assert backend.attributes["http.response.status_code"] == 500
    assert req.status.status_code == StatusCode.ERROR
