"""A forwarded request's answer on its way back through a door: one relay for both doors.

The HTTP door reads the backend itself; through Envoy the ext_proc server sees the same bytes
as Envoy streams them. Either way the door feeds the answer to a ``Relay``, which decides
what the client gets (the usage-only chunk the router asked for on the client's behalf is
dropped) and records what the answer says: time to first token, backend latency, usage, and
the cache store of a complete 2xx answer, and on the backend call's span (when traced) the
first token, the tokens used and how the answer ended. For a masked request
(``pii_action: mask``) it also puts the client's values back in place of the placeholders
the model saw (``restored``, ``restored_body``). Nothing here does I/O except the cache store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from router_svc.backend.sse_read import EventScan, Usage, extract_usage, sse_data
from router_svc.cache.front import CacheFront
from router_svc.core import json_codec
from router_svc.core.mask import StreamRestorer
from router_svc.core.metrics import Metrics
from router_svc.core.sse_write import event as sse_event
from router_svc.tracing.spans import NO_CALL

if TYPE_CHECKING:
    from router_svc.flow.request import Forward
    from router_svc.tracing.spans import BackendCall, _NoCall

log = logging.getLogger(__name__)


class Relay:
    """One forwarded request's answer. Feed a streamed answer event by event (``keep``) and
    end it with ``stream_ended``; a JSON answer goes to ``json_ended`` once read whole."""

    def __init__(self, forward: Forward, cache: CacheFront, metrics: Metrics,
                 forwarded_at: float | None = None,
                 call: BackendCall | _NoCall = NO_CALL) -> None:
        self.forward = forward
        self.call = call  # the backend call's span (``Exchange.relay``)
        self.cache = cache
        self.metrics = metrics
        self.model = forward.routed.decision.model
        self.forwarded_at = time.perf_counter() if forwarded_at is None else forwarded_at
        self._scan = EventScan(forward.client_wants_usage)
        self._mask = forward.routed.mask
        # A masked answer is never stored (cache.keys.plan_request says so too): the client
        # gets its own values back, which no other client may be served.
        self._capture = cache.capture(forward.lookup, forward.routed.kind) \
            if forward.routed.stream and self._mask is None else None
        self._restorer: StreamRestorer | None = \
            self._mask.stream() if self._mask is not None and forward.routed.stream else None

    @property
    def trace_headers(self) -> Mapping[str, str]:
        """The W3C headers to send upstream: the request's trace, this backend call's span as
        the parent (empty while tracing is off: the client's own, if any, go as they came)."""
        return self.call.headers

    @property
    def masked(self) -> bool:
        """The answer needs the client's values put back: every event and the JSON body
        the client gets must be ``restored`` first."""
        return self._mask is not None

    @property
    def completed(self) -> bool:
        """The stream said ``data: [DONE]``."""
        return self._scan.completed

    @property
    def client_wants_usage(self) -> bool:
        return self._scan.client_wants_usage

    def keep(self, event: bytes) -> bool:
        """Whether the client gets this SSE event; records the first token and captures
        what the client gets for the cache."""
        had_output = self._scan.saw_output
        kept = self._scan.keep(event)
        if not had_output and self._scan.saw_output:
            ttft = time.perf_counter() - self.forwarded_at
            self.metrics.observe_ttft(self.model, ttft)
            self.call.first_token(ttft)
        if kept and self._capture is not None:
            self._capture.feed(event)
        return kept

    def restored(self, event: bytes) -> bytes:
        """What the client gets for a kept event: the event itself, or for a masked request
        with the values back; the end of a text that may be the start of a placeholder waits
        for the next event, and whatever still waits goes out just before ``[DONE]``."""
        if self._restorer is None:
            return event
        data = sse_data(event)
        if data is None:
            return event
        if data.strip() == b"[DONE]":
            tail = self._restorer.flush()
            return event if tail is None else sse_event(tail) + event
        # Go's encoder (Ollama) writes "<" as \u003c.
        if not self._restorer.holding and b"<" not in data and b"\\u003" not in data:
            return event  # the common case: nothing to restore, no JSON parsing
        try:
            chunk = json_codec.loads(data)
        except (ValueError, RecursionError):
            return event
        new = self._restorer.chunk(chunk)
        if new is chunk:
            return event
        # Other fields of the event (event:, id:) stay; the data is the restored chunk.
        other = [line for line in event.split(b"\n")
                 if line.strip() and not line.startswith(b"data:")]
        return b"".join(line + b"\n" for line in other) + sse_event(new)

    def restored_body(self, body: Any) -> bytes | None:
        """A masked request's JSON answer with the values back, encoded; None: send the
        backend's bytes as they came (not masked, or not JSON to restore)."""
        if self._mask is None or not isinstance(body, dict):
            return None
        return json_codec.dumps(self._mask.restore_answer(body))

    async def stream_ended(self, *, clean: bool) -> None:
        """The stream is over. ``clean``: every event reached the client, and the backend
        did not fail mid-stream; only then, with ``[DONE]`` seen, is the answer stored."""
        self.metrics.observe_backend(self.model, time.perf_counter() - self.forwarded_at)
        self.metrics.count_tokens(self.model, self._scan.usage)
        self._end_call(self._scan.usage, completed=self._scan.completed)
        if clean and self._scan.completed:
            await self._store(self.cache.store_stream(self.forward.lookup, self._capture,
                                                      self._scan.usage))

    async def json_ended(self, body: Any) -> None:
        """A whole 2xx JSON answer (None: unreadable or too large to read)."""
        self.metrics.observe_backend(self.model, time.perf_counter() - self.forwarded_at)
        if not isinstance(body, dict):
            self._end_call(None)
            return
        usage = extract_usage(body)
        self.metrics.count_tokens(self.model, usage)
        self._end_call(usage)
        if self._mask is not None:  # never stored: see __init__
            return
        await self._store(self.cache.store_body(self.forward.lookup, self.forward.routed.kind,
                                                body))

    def failed(self, reason: str) -> None:
        """The backend failed (``backend.errors`` reasons)."""
        self.metrics.count_error(reason)
        self.call.fail(reason)

    def _end_call(self, usage: Usage | None, completed: bool | None = None) -> None:
        if self.call is NO_CALL:
            return
        attrs: dict[str, Any] = {}
        if usage is not None:
            attrs["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attrs["gen_ai.usage.output_tokens"] = usage.completion_tokens
        if completed is not None:
            attrs["router.stream.completed"] = completed
        self.call.end(attrs)

    async def _store(self, store: Any) -> None:
        # A failed store must not fail the answer, which has already gone to the client.
        try:
            await store
        except Exception:
            log.exception("cache store failed for a %s answer", self.model)
