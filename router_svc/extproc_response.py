"""The backend's answer to a routed request as Envoy streams it through the ext_proc server.

Envoy sends the response headers, then the body in chunks (STREAMED body mode) and waits for a
reply to each. What happens, by answer, mirrors ``app.forward``:

- a JSON answer (2xx, not streamed): passed on untouched; once complete, its usage is counted
  and it is stored in the cache (``CacheFront.store_body``);
- an SSE stream (2xx, the client asked to stream): events pass as they arrive, except the
  usage-only chunk the router asked for on the client's behalf (``stream_events.EventScan``);
  time to first token, backend latency and usage are recorded, and a stream that ended with
  ``[DONE]`` is stored (``CacheFront.store_stream``); a stream Envoy did not see to its end is
  never stored;
- an error (non-2xx, including Envoy's own 503 when a backend is unreachable): replaced by the
  OpenAI error JSON the HTTP proxy would relay (``backend_errors.normalise_error_body``), the
  backend's URL and key scrubbed.

Every answer carries the routed request's ``x-router-*`` headers. No gRPC server here.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Literal

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from router_svc.answers import JSON_TYPE, SSE_TYPE, media_type, wants_usage
from router_svc.backend_errors import BACKEND_BAD_RESPONSE, BACKEND_ERROR, normalise_error_body
from router_svc.cache_capture import StreamCapture
from router_svc.cache_flow import CacheFront, Lookup
from router_svc.extproc_proto import common, response_body_reply, response_headers_reply
from router_svc.metrics import Metrics
from router_svc.pipeline import Routed
from router_svc.proxy import scrub_error
from router_svc.stream_events import EventScan, extract_usage, parse_sse_events

log = logging.getLogger(__name__)

# A JSON answer (or error body) larger than this is passed on but not read: no usage, no store.
MAX_READ_BYTES = 16 * 1024 * 1024

Shape = Literal["json", "sse", "error", "other"]


class ResponseWatch:
    """One routed request's answer, chunk by chunk. ``complete`` once Envoy sent its end."""

    def __init__(self, routed: Routed, lookup: Lookup, cache: CacheFront, metrics: Metrics,
                 forwarded_at: float) -> None:
        assert routed.target is not None
        self.routed = routed
        self.lookup = lookup
        self.cache = cache
        self.metrics = metrics
        self.forwarded_at = forwarded_at
        self.model = routed.decision.model
        self.status = 0
        self.shape: Shape = "other"
        self.complete = False
        self._buf = b""
        self._too_big = False
        self._scan = EventScan(wants_usage(routed))
        self._capture: StreamCapture | None = None

    # ---------------------------------------------------------------- headers

    async def on_headers(self, headers: dict[str, str],
                         end_of_stream: bool) -> pb.ProcessingResponse:
        try:
            self.status = int(headers.get(":status", "0"))
        except ValueError:
            self.status = 0
        set_h = {**self.routed.headers(), **self.lookup.headers()}
        remove: list[str] = []
        if not 200 <= self.status < 300:
            self.shape = "error"
            set_h["content-type"] = JSON_TYPE
            remove.append("content-length")  # the body becomes the OpenAI error JSON
        elif self.routed.stream:
            if media_type(headers.get("content-type")) == SSE_TYPE:
                self.shape = "sse"
                self._capture = self.cache.capture(self.lookup, self.routed.kind)
            else:  # the HTTP proxy answers 502 here; Envoy has the status: pass it, count it
                self.metrics.count_error(BACKEND_BAD_RESPONSE)
        else:
            self.shape = "json"
        if not end_of_stream:
            return response_headers_reply(common(set_h, remove))
        c = common(set_h, remove)
        if self.shape == "error":  # an error without a body still gets the OpenAI JSON
            c = common(set_h, remove, body=self._error_body(b"", True))
            c.status = pb.CommonResponse.CONTINUE_AND_REPLACE  # adds a body where none was
        await self._end()
        return response_headers_reply(c)

    # ---------------------------------------------------------------- body

    async def on_body(self, chunk: bytes, end_of_stream: bool) -> pb.ProcessingResponse:
        if self.shape == "sse":
            out = self._events(chunk, end_of_stream)
        elif self.shape == "error":
            out = self._error_body(chunk, end_of_stream)
        else:
            self._read(chunk)
            out = None
        if end_of_stream:
            await self._end()
        return response_body_reply(common(body=out))

    def _read(self, chunk: bytes) -> None:
        if self._too_big or self.shape == "other":
            return
        if len(self._buf) + len(chunk) > MAX_READ_BYTES:
            self._too_big, self._buf = True, b""
            return
        self._buf += chunk

    def _events(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        """The chunk as it goes on: whole events only, the extra usage chunk dropped.
        None when that is the chunk itself (no mutation sent back)."""
        events, self._buf = parse_sse_events(self._buf + chunk)
        if end_of_stream and self._buf.strip():
            events.append(self._buf)  # a last event without its blank line
        if end_of_stream:
            self._buf = b""
        had_output = self._scan.saw_output
        kept = [ev for ev in events if self._scan.keep(ev)]
        if not had_output and self._scan.saw_output:
            self.metrics.observe_ttft(self.model, time.perf_counter() - self.forwarded_at)
        if self._capture is not None:
            for ev in kept:
                self._capture.feed(ev)
        out = b"".join(kept)
        if self._scan.client_wants_usage or out == chunk:
            # Nothing is ever dropped for this client: Envoy passes its chunk as it is.
            return None
        return out

    def _error_body(self, chunk: bytes, end_of_stream: bool) -> bytes:
        self._read(chunk)
        if not end_of_stream:
            return b""  # held back: the whole error body is replaced at the end
        target = self.routed.target
        assert target is not None
        body = scrub_error(normalise_error_body(self.status, self._buf, target.model), target)
        return json.dumps(body).encode("utf-8")

    # ---------------------------------------------------------------- the end

    async def _end(self) -> None:
        self.complete = True
        latency = time.perf_counter() - self.forwarded_at
        kind = self.routed.kind
        if self.shape == "error":
            self.metrics.count_error(BACKEND_ERROR)
        elif self.shape == "json":
            self.metrics.observe_backend(self.model, latency)
            body = self._json()
            self.metrics.count_tokens(self.model, extract_usage(body))
            if body is not None:
                await self._store(self.cache.store_body(self.lookup, kind, body))
        elif self.shape == "sse":
            self.metrics.observe_backend(self.model, latency)
            self.metrics.count_tokens(self.model, self._scan.usage)
            if self._scan.completed:  # Envoy saw the end and the backend said [DONE]
                await self._store(self.cache.store_stream(self.lookup, self._capture,
                                                          self._scan.usage))
        self._buf = b""

    def _json(self) -> dict[str, Any] | None:
        if self._too_big:
            return None
        try:
            body = json.loads(self._buf)
        except (ValueError, UnicodeDecodeError):
            self.metrics.count_error(BACKEND_BAD_RESPONSE)
            return None
        return body if isinstance(body, dict) else None

    async def _store(self, store: Any) -> None:
        # A failed store must not fail the answer, which has already gone to the client.
        try:
            await store
        except Exception:
            log.exception("cache store failed for a %s answer", self.model)
