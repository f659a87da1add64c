"""The request's spans without a server: the do-nothing path while off, parent and child
spans, the W3C traceparent continued and handed on, errors by type and never by message."""

from __future__ import annotations

import asyncio

import pytest
from multidict import CIMultiDict
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from router_svc.config.loading import TracingConfig
from router_svc.core.errors import BadRequest
from router_svc.tracing.provider import Tracing
from router_svc.tracing.spans import (
    NO_CALL,
    NO_TRACE,
    OFF,
    RequestTrace,
    span,
    tracing_active,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


class Traced:
    def __init__(self, sample_ratio: float = 1.0) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracing = Tracing(TracingConfig(enabled=True, sample_ratio=sample_ratio),
                               exporter=self.exporter)
        self.tracing.start()
        assert self.tracing.recorder is not None
        self.recorder = self.tracing.recorder

    def spans(self) -> tuple:
        self.tracing.force_flush()
        return self.exporter.get_finished_spans()

    def by_name(self) -> dict:
        return {s.name: s for s in self.spans()}


@pytest.fixture
async def traced():
    t = Traced()
    yield t
    await t.tracing.shutdown()


async def test_without_a_request_span_is_one_shared_do_nothing() -> None:
    assert span("tokenize") is OFF
    with span("tokenize", {"a": 1}) as s:
        assert s is None
    assert not tracing_active()
    # the off request trace: every call does nothing, no headers for the backend
    with NO_TRACE.active():
        assert span("x") is OFF
    assert NO_TRACE.backend("backend") is NO_CALL and dict(NO_CALL.headers) == {}
    NO_TRACE.end(200)


async def test_children_of_the_request_nest_under_it(traced) -> None:
    rt = RequestTrace(traced.recorder, "POST /v1/chat/completions", {},
                      {"router.door": "http"})
    with rt.active():
        assert tracing_active()
        with span("classify"):
            with span("tokenize", {"router.rows": 2}):
                pass
            # a task started inside (asyncio.wait_for, to_thread) keeps the parent
            await asyncio.create_task(_child("triton"))
            await asyncio.to_thread(_thread_child, "decode")
    assert not tracing_active()
    rt.end(200)
    spans = traced.by_name()
    req, cls = spans["POST /v1/chat/completions"], spans["classify"]
    assert req.kind == SpanKind.SERVER and req.parent is None
    assert req.attributes["http.response.status_code"] == 200
    assert req.attributes["router.door"] == "http"
    assert req.resource.attributes["service.name"] == "router-svc"
    assert cls.parent.span_id == req.context.span_id
    for name in ("tokenize", "triton", "decode"):
        assert spans[name].parent.span_id == cls.context.span_id
        assert spans[name].context.trace_id == req.context.trace_id
        assert req.start_time <= spans[name].start_time <= spans[name].end_time <= req.end_time
    assert spans["tokenize"].attributes["router.rows"] == 2


async def _child(name: str) -> None:
    with span(name):
        await asyncio.sleep(0)


def _thread_child(name: str) -> None:
    with span(name):
        pass


async def test_a_client_traceparent_is_continued_and_handed_to_the_backend(traced) -> None:
    headers = CIMultiDict([("TraceParent", TRACEPARENT), ("tracestate", "vendor=a"),
                           ("tracestate", "other=b")])
    rt = RequestTrace(traced.recorder, "req", headers)
    call = rt.backend("backend", {"router.model": "phi4"})
    call.first_token(0.0123)
    call.status(200)
    call.end({"gen_ai.usage.output_tokens": 7})
    rt.end(200)
    spans = traced.by_name()
    req, backend = spans["req"], spans["backend"]
    assert f"{req.context.trace_id:032x}" == TRACE_ID
    assert f"{req.parent.span_id:016x}" == PARENT_ID and req.parent.is_remote
    assert backend.kind == SpanKind.CLIENT and backend.parent.span_id == req.context.span_id
    assert call.headers["traceparent"] == \
        f"00-{TRACE_ID}-{backend.context.span_id:016x}-01"
    assert call.headers["tracestate"] == "vendor=a,other=b"  # both header lines kept
    assert [e.name for e in backend.events] == ["first_token"]
    assert backend.attributes["router.backend.ttft_ms"] == pytest.approx(12.3)
    assert backend.attributes["gen_ai.usage.output_tokens"] == 7
    assert backend.attributes["http.response.status_code"] == 200


@pytest.mark.parametrize("bad", ["00-zz-yy-01", f"00-{'0' * 32}-{PARENT_ID}-01", "garbage"])
async def test_an_invalid_traceparent_starts_a_new_trace(traced, bad: str) -> None:
    rt = RequestTrace(traced.recorder, "req", {"traceparent": bad})
    tp = rt.backend("backend").headers["traceparent"]
    rt.end(200)
    req = traced.by_name()["req"]
    assert req.parent is None
    assert tp.split("-")[1] == f"{req.context.trace_id:032x}" and tp.endswith("-03")


async def test_errors_carry_their_code_never_their_message(traced) -> None:
    rt = RequestTrace(traced.recorder, "req", None)
    secret = "john.doe@example.com"
    with rt.active(), pytest.raises(BadRequest), span("parse"):
        raise BadRequest(f"bad value {secret}", code="invalid_value")
    rt.error("invalid_value", 400)
    rt.end(400)
    spans = traced.by_name()
    parse, req = spans["parse"], spans["req"]
    assert parse.status.status_code == StatusCode.ERROR
    assert parse.status.description == "invalid_value"
    assert parse.attributes["error.type"] == "invalid_value" and not parse.events
    # a client's mistake is no server error: error.type, status left unset
    assert req.attributes["error.type"] == "invalid_value"
    assert req.status.status_code == StatusCode.UNSET
    assert secret not in repr([s.to_json() for s in traced.spans()])


async def test_a_5xx_answer_and_a_failed_backend_call_are_errors(traced) -> None:
    rt = RequestTrace(traced.recorder, "req", None)
    first = rt.backend("backend")
    first.fail("backend_unreachable")
    rt.backend("backend").status(503)  # the failover's call ends the one before
    rt.end(503)
    spans = traced.spans()
    calls = [s for s in spans if s.name == "backend"]
    assert [c.attributes["error.type"] for c in calls] == ["backend_unreachable", "503"]
    assert all(c.status.status_code == StatusCode.ERROR for c in calls)
    (req,) = [s for s in spans if s.name == "req"]
    assert req.status.status_code == StatusCode.ERROR


async def test_sampling_is_parent_based() -> None:
    t = Traced(sample_ratio=0.0)
    # a new trace at ratio 0: nothing recorded, no children, but the backend still gets a
    # traceparent (not sampled) so its own spans follow the same decision
    rt = RequestTrace(t.recorder, "new", {})
    assert not rt.recording
    with rt.active():
        assert span("x") is OFF
    call = rt.backend("backend")
    assert int(call.headers["traceparent"][-2:], 16) & 1 == 0  # the sampled flag unset
    rt.end(200)
    assert t.spans() == ()
    # the client's sampled trace is recorded whatever the ratio; its unsampled one is not
    RequestTrace(t.recorder, "continued", {"traceparent": TRACEPARENT}).end(200)
    unsampled = RequestTrace(t.recorder, "x", {"traceparent": TRACEPARENT[:-2] + "00"})
    assert unsampled.backend("b").headers["traceparent"].endswith("-00")
    unsampled.end(200)
    assert [s.name for s in t.spans()] == ["continued"]
    await t.tracing.shutdown()
