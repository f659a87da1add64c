"""The spans of one generation request, for every layer: a true no-op while tracing is off.

``RequestTrace`` is one request's span (kind SERVER), opened by the flow (``flow.request``)
with the runtime's ``Recorder`` (``tracing.provider``); it continues the client's W3C
``traceparent``/``tracestate`` when they are valid. While the request is worked on
(``RequestTrace.active``) a context variable holds it, and ``span(name)`` anywhere below
(pipeline, classifier, cache) opens a child of the current span. Without one (tracing off, a
request not sampled, work outside a request) ``span`` hands back one shared do-nothing
context manager: one context-variable read. Tasks and threads started meanwhile
(``asyncio.wait_for``, ``to_thread``) copy the variable, so their spans nest as well.

``RequestTrace.backend`` starts the backend call's span (kind CLIENT) and says the
``traceparent`` to send upstream: the request's trace, the backend call's span as parent.

Spans are recorded here as plain records (ids, times, attributes) and handed to the recorder
as a whole when the request ends, which turns them into the SDK's spans for its batch
processor and exporter. Building SDK spans as the request runs cost about 60-80 us each on
the 2-core test machine, three to six a request; records cost a few (perf/README.md,
"Tracing overhead").

What spans carry is decided here, once: an error sets status ERROR and ``error.type`` to its
code, reason or class name, never its message (a message may quote the request), and no
attribute holds any text of the request.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanContext, SpanKind, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

Attributes = Mapping[str, Any]

_W3C = TraceContextTextMapPropagator()
NO_HEADERS: Mapping[str, str] = MappingProxyType({})
SAMPLED = 0x01
RANDOM_TRACE_ID = 0x02  # W3C trace context level 2: the trace id's right 7 bytes are random


class Recorder(Protocol):
    """Where a request's spans go (``tracing.provider.SdkRecorder``)."""

    def sample(self, parent: Context, trace_id: int, name: str) -> bool:
        """Whether a new request span is recorded (``parent``: the client's context)."""

    def record(self, request: RequestTrace) -> None:
        """A sampled request ended: its spans, to be exported."""


class _HeaderGetter(Getter[Any]):
    """Header values from an aiohttp/multidict header map (every value of a repeated
    ``tracestate``, case-insensitive) or a plain mapping (names matched case-insensitively)."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        getall = getattr(carrier, "getall", None)
        if getall is not None:
            values = getall(key, None)
            return list(values) if values else None
        found = [v for k, v in carrier.items() if isinstance(k, str) and k.lower() == key]
        return found or None

    def keys(self, carrier: Any) -> list[str]:
        return list(carrier.keys())


_GETTER = _HeaderGetter()


def _span_id() -> int:
    while True:
        if (i := random.getrandbits(64)) != 0:
            return i


def _trace_id() -> int:
    while True:
        if (i := random.getrandbits(128)) != 0:
            return i


def error_type(exc: BaseException) -> str:
    """What an error is, for ``error.type``: its OpenAI code (``RouterError``), its reason
    (``UpstreamError``) or its class name. Never the message."""
    kind = getattr(exc, "code", None) or getattr(exc, "reason", None)
    return kind if isinstance(kind, str) and kind else type(exc).__name__


# ---------------------------------------------------------------- one span


class Span:
    """One span as recorded: ids, times (ns since the epoch), attributes, events and, when
    it failed, the error's kind (status ERROR). The SDK's spans are made from it at the end."""

    __slots__ = ("attributes", "end_ns", "error", "events", "kind", "name", "parent_id",
                 "span_id", "start_ns")

    def __init__(self, name: str, parent_id: int | None, kind: SpanKind,
                 attributes: Attributes | None) -> None:
        self.name = name
        self.span_id = _span_id()
        self.parent_id = parent_id
        self.kind = kind
        self.attributes: dict[str, Any] = dict(attributes) if attributes else {}
        self.events: list[tuple[str, int]] = []
        self.error: str | None = None
        self.start_ns = time.time_ns()
        self.end_ns = 0

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_attributes(self, attributes: Attributes) -> None:
        self.attributes.update(attributes)

    def add_event(self, name: str) -> None:
        self.events.append((name, time.time_ns()))

    def fail(self, kind: str) -> None:
        """Status ERROR, ``error.type`` ``kind``."""
        self.error = kind
        self.attributes["error.type"] = kind

    def end(self) -> None:
        if not self.end_ns:
            self.end_ns = time.time_ns()


# ---------------------------------------------------------------- child spans

# The request being worked on and its current span (None: no span is to be made).
_CURRENT: ContextVar[tuple[RequestTrace, Span] | None] = ContextVar("router_svc_span",
                                                                     default=None)


class _Off:
    """The do-nothing span context: ``with span(...) as s`` gives ``s = None``."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


OFF = _Off()


class _Child:
    """A child of the current span, current itself inside the ``with`` block; an exception
    leaving it marks it ERROR (by ``error_type``) and goes on."""

    __slots__ = ("_at", "_attributes", "_kind", "_name", "_span", "_token")

    def __init__(self, at: tuple[RequestTrace, Span], name: str, attributes: Attributes | None,
                 kind: SpanKind) -> None:
        self._at, self._name, self._attributes, self._kind = at, name, attributes, kind

    def __enter__(self) -> Span:
        request, parent = self._at
        self._span = s = Span(self._name, parent.span_id, self._kind, self._attributes)
        self._token = _CURRENT.set((request, s))
        return s

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> bool:
        _CURRENT.reset(self._token)
        s = self._span
        if exc is not None:
            s.fail(error_type(exc))
        s.end()
        self._at[0].spans.append(s)
        return False


def span(name: str, attributes: Attributes | None = None,
         kind: SpanKind = SpanKind.INTERNAL) -> _Child | _Off:
    """``with span("tokenize", {...}) as s:`` a child span of the request being worked on,
    or ``s`` is None (tracing off, not sampled, no request): then build no attributes."""
    at = _CURRENT.get()
    if at is None:
        return OFF
    return _Child(at, name, attributes, kind)


def tracing_active() -> bool:
    """Whether ``span`` would record (a sampled request is being worked on)."""
    return _CURRENT.get() is not None


# ---------------------------------------------------------------- the request and its calls


class _Active:
    """The request made current for a ``with`` block (then the previous again)."""

    __slots__ = ("_at", "_token")

    def __init__(self, at: tuple[RequestTrace, Span]) -> None:
        self._at = at

    def __enter__(self) -> None:
        self._token: Token[Any] = _CURRENT.set(self._at)

    def __exit__(self, *exc: object) -> bool:
        _CURRENT.reset(self._token)
        return False


class BackendCall:
    """The span of one backend call (kind CLIENT) and the W3C headers that carry it
    upstream (``headers``: ``traceparent``, and ``tracestate`` when the trace has one)."""

    __slots__ = ("_request", "_status", "headers", "span")

    def __init__(self, request: RequestTrace, name: str, attributes: Attributes | None) -> None:
        self._request = request
        self.span = Span(name, request.span.span_id, SpanKind.CLIENT, attributes)
        h = {"traceparent":
             f"00-{request.trace_id:032x}-{self.span.span_id:016x}-{request.flags:02x}"}
        if request.trace_state:
            h["tracestate"] = request.trace_state.to_header()
        self.headers: Mapping[str, str] = h
        self._status: int | None = None

    def first_token(self, seconds: float) -> None:
        """The first generated token reached the router, ``seconds`` after the call."""
        self.span.add_event("first_token")
        self.span.attributes["router.backend.ttft_ms"] = round(seconds * 1000, 3)

    def status(self, code: int) -> None:
        """The backend's HTTP status (ERROR for anything but a 2xx)."""
        self.span.attributes["http.response.status_code"] = code
        if not 200 <= code < 300:
            self.span.fail(str(code))

    def fail(self, kind: str) -> None:
        self.span.fail(kind)

    def end(self, attributes: Attributes | None = None) -> None:
        s = self.span
        if s.end_ns:
            return
        if attributes:
            s.attributes.update(attributes)
        s.end()
        self._request.spans.append(s)


class _NoCall:
    """``BackendCall`` while tracing is off: no span, no headers."""

    __slots__ = ()
    headers = NO_HEADERS

    def first_token(self, seconds: float) -> None:
        pass

    def status(self, code: int) -> None:
        pass

    def fail(self, kind: str) -> None:
        pass

    def end(self, attributes: Attributes | None = None) -> None:
        pass


NO_CALL = _NoCall()


class RequestTrace:
    """One generation request's span (kind SERVER), from the door's first look at it to its
    answer's end; the client's ``traceparent`` (``headers``) is its parent when valid.
    ``spans``: its finished children and backend calls, handed to the recorder at the end."""

    __slots__ = ("_call", "_recorder", "flags", "recording", "remote_parent", "span", "spans",
                 "trace_id", "trace_state")

    def __init__(self, recorder: Recorder, name: str, headers: Mapping[str, str] | None,
                 attributes: Attributes | None = None) -> None:
        parent_ctx = _W3C.extract(headers, getter=_GETTER) if headers else Context()
        parent = trace.get_current_span(parent_ctx).get_span_context()
        remote: SpanContext | None = parent if parent.is_valid else None
        self.remote_parent = remote
        self.trace_id = remote.trace_id if remote else _trace_id()
        self.trace_state: TraceState | None = remote.trace_state if remote else None
        self.recording = recorder.sample(parent_ctx, self.trace_id, name)
        flags = int(remote.trace_flags) & ~SAMPLED if remote else RANDOM_TRACE_ID
        self.flags = flags | SAMPLED if self.recording else flags
        self.span = Span(name, remote.span_id if remote else None, SpanKind.SERVER, attributes)
        self.spans: list[Span] = []
        self._recorder = recorder
        self._call: BackendCall | None = None

    def active(self) -> _Active | _Off:
        # Children only for a sampled request: without it current ``span`` makes none.
        return _Active((self, self.span)) if self.recording else OFF

    def set(self, attributes: Attributes) -> None:
        self.span.attributes.update(attributes)

    def error(self, kind: str, status: int) -> None:
        """The request is answered with an error: ``error.type``, and status ERROR for a
        server-side one (5xx; a client's mistake is not the server's error)."""
        if status >= 500:
            self.span.fail(kind)
        else:
            self.span.attributes["error.type"] = kind

    def backend(self, name: str, attributes: Attributes | None = None) -> BackendCall:
        """A backend call begins (a failover's next one ends the one before)."""
        if self._call is not None:
            self._call.end()
        self._call = BackendCall(self, name, attributes)
        return self._call

    def end(self, status: int) -> None:
        """The request is over with the status its client got (499: it left first)."""
        s = self.span
        if s.end_ns:
            return
        if self._call is not None:
            self._call.end()
        s.attributes["http.response.status_code"] = status
        if status >= 500 and s.error is None:
            s.fail(str(status))
        s.end()
        if self.recording:
            self._recorder.record(self)


class _NoTrace:
    """``RequestTrace`` while tracing is off: every method does nothing."""

    __slots__ = ()
    recording = False

    def active(self) -> _Off:
        return OFF

    def set(self, attributes: Attributes) -> None:
        pass

    def error(self, kind: str, status: int) -> None:
        pass

    def backend(self, name: str, attributes: Attributes | None = None) -> _NoCall:
        return NO_CALL

    def end(self, status: int) -> None:
        pass


NO_TRACE = _NoTrace()
