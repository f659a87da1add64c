"""The backend's answer to a forwarded request as Envoy streams it through the ext_proc server.

Envoy sends the response headers, then the body in chunks (STREAMED body mode) and waits for a
reply to each. This module only frames the chunks; what the answer means (usage, first token,
the dropped usage chunk, the cache store) is the flow's ``Relay``, as in the HTTP door:

- a JSON answer (2xx, not streamed): passed on untouched, read whole for the relay;
- an SSE stream (2xx, the client asked to stream): whole events pass as they arrive, those
  the relay keeps; a stream Envoy did not see to its end is never stored;
- a masked request's answer (``pii_action: mask``): a JSON answer is held back whole and
  replaced at its end, SSE events are rewritten as they pass, each with the client's values
  put back by the relay (``Relay.restored_body``, ``Relay.restored``);
- an error (non-2xx, including Envoy's own 503 when a backend is unreachable): replaced by the
  OpenAI error JSON the HTTP door would relay, the backend's URL and key scrubbed.

Every answer carries the forwarded request's ``x-router-*`` headers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from router_svc.backend.errors import BACKEND_BAD_RESPONSE, BACKEND_ERROR, normalise_error_body
from router_svc.backend.proxy import scrub_error
from router_svc.backend.sse_read import MAX_EVENT_BYTES, parse_sse_events
from router_svc.doors.extproc.proto import common, response_body_reply, response_headers_reply
from router_svc.flow.answers import JSON_TYPE, SSE_TYPE, media_type
from router_svc.flow.relay import Relay
from router_svc.flow.request import Forward

# A JSON answer (or error body) larger than this is passed on but not read: no usage, no store.
MAX_READ_BYTES = 16 * 1024 * 1024

Shape = Literal["json", "sse", "error", "other"]


class ResponseWatch:
    """One forwarded request's answer, chunk by chunk. ``complete`` once Envoy sent its end."""

    def __init__(self, forward: Forward, relay: Relay,
                 on_status: Callable[[int, str | None], None] | None = None) -> None:
        self.forward = forward
        self.relay = relay
        self.on_status = on_status  # the breaker learns the backend's status
        self.status = 0
        self.shape: Shape = "other"
        self.complete = False
        self._buf = b""
        self._too_big = False
        self._masked_json: Any = None  # a masked JSON answer, parsed at its end

    # ---------------------------------------------------------------- headers

    async def on_headers(self, headers: dict[str, str],
                         end_of_stream: bool) -> pb.ProcessingResponse:
        try:
            self.status = int(headers.get(":status", "0"))
        except ValueError:
            self.status = 0
        if self.on_status is not None:
            self.on_status(self.status, headers.get("retry-after"))
        set_h = self.forward.headers
        remove: list[str] = []
        if not 200 <= self.status < 300:
            self.shape = "error"
            set_h["content-type"] = JSON_TYPE
            remove.append("content-length")  # the body becomes the OpenAI error JSON
        elif self.forward.routed.stream:
            if media_type(headers.get("content-type")) == SSE_TYPE:
                self.shape = "sse"
            else:  # the HTTP door answers 502 here; Envoy has the status: pass it, count it
                self.relay.failed(BACKEND_BAD_RESPONSE)
        else:
            self.shape = "json"
        if self.relay.masked and self.shape in ("json", "sse"):
            remove.append("content-length")  # the values put back change the body's length
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
        elif self.shape == "json" and self.relay.masked:
            out = self._restored_json(chunk, end_of_stream)
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
        """The chunk as it goes on: whole events only, those the relay keeps. None when that
        is the chunk itself (no mutation sent back)."""
        events, self._buf = parse_sse_events(self._buf + chunk)
        if len(self._buf) > MAX_EVENT_BYTES:  # a broken stream: passed on, never buffered
            events.append(self._buf)
            self._buf = b""
        if end_of_stream and self._buf.strip():
            events.append(self._buf)  # a last event without its blank line
        if end_of_stream:
            self._buf = b""
        out = b"".join([self.relay.restored(ev) for ev in events if self.relay.keep(ev)])
        if out == chunk or (self.relay.client_wants_usage and not self.relay.masked):
            # Nothing is ever dropped or changed for this client: Envoy passes its chunk as
            # it is.
            return None
        return out

    def _restored_json(self, chunk: bytes, end_of_stream: bool) -> bytes:
        """A masked request's JSON answer: every chunk held back (cleared), the whole body
        at the end with the client's values put back. Read whatever its size: what was
        held back can no longer be passed on as it came."""
        self._buf += chunk
        if not end_of_stream:
            return b""
        self._masked_json = self._json()
        restored = self.relay.restored_body(self._masked_json)
        return self._buf if restored is None else restored

    def _error_body(self, chunk: bytes, end_of_stream: bool) -> bytes:
        self._read(chunk)
        if not end_of_stream:
            return b""  # held back: the whole error body is replaced at the end
        target = self.forward.target
        body = scrub_error(normalise_error_body(self.status, self._buf, target.model), target)
        return json.dumps(body).encode("utf-8")

    # ---------------------------------------------------------------- the end

    async def _end(self) -> None:
        self.complete = True
        if self.shape == "error":
            self.relay.failed(BACKEND_ERROR)
        elif self.shape == "json":
            await self.relay.json_ended(self._masked_json if self.relay.masked
                                        else self._json())
        elif self.shape == "sse":  # Envoy saw the end: stored if the backend said [DONE]
            await self.relay.stream_ended(clean=True)
        self._buf = b""

    def _json(self) -> Any:
        if self._too_big:
            return None
        try:
            return json.loads(self._buf)
        except (ValueError, UnicodeDecodeError):
            self.relay.failed(BACKEND_BAD_RESPONSE)
            return None
