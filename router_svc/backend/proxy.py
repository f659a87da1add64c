"""Backend calls: one pooled connection pool, timeouts, SSE framing, error relaying.

The caller has already chosen the backend and written the body; the proxy sends it as it is
and hands back the answer: parsed JSON, or whole SSE events as they arrive (what they say is
the flow's ``Relay``).

Non-streaming::

    result = await proxy.post_json(target, "/chat/completions", body, request.headers)

Streaming (errors before the first byte raise from ``async with``, so the caller can still
answer with a proper status; errors later raise from the iteration)::

    async with proxy.stream(target, "/chat/completions", body, request.headers) as upstream:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        async for event in upstream:          # bytes: one complete SSE event
            await response.write(event)
    upstream.result.ended, upstream.result.backend_latency_s

Leaving the ``async with`` early (client hung up, handler cancelled, exception) closes the
upstream connection at once, so the backend stops generating.

Failures become OpenAI error objects (``backend.errors``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from router_svc.backend.errors import (
    BACKEND_BAD_RESPONSE,
    BACKEND_BUSY,
    BACKEND_STREAM_ABORTED,
    BACKEND_TIMEOUT,
    BACKEND_UNREACHABLE,
    UpstreamError,
    normalise_error_body,
    openai_error,
    parse_retry_after,
)
from router_svc.backend.http1 import Http1Client, Http1Error, PoolBusy, Response
from router_svc.backend.sse_read import MAX_EVENT_BYTES, Usage, extract_usage, parse_sse_events
from router_svc.core import json_codec
from router_svc.core.selection import BackendTarget

log = logging.getLogger(__name__)

# Client headers passed to every backend. Everything else is dropped (allowlist), which
# also keeps out hop-by-hop headers, Host, Content-Length, Cookie and stray credentials.
FORWARDED_HEADERS: tuple[str, ...] = (
    "Accept",
    "X-Request-Id",
    "OpenAI-Beta",
    "Traceparent",
    "Tracestate",
    "Idempotency-Key",  # marks a POST safe to re-send (backend/http1.py)
)
# Tied to the client's credential: forwarded only with the client's Authorization.
FORWARDED_WITH_CLIENT_AUTH: tuple[str, ...] = ("OpenAI-Organization", "OpenAI-Project")


JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass
class ProxyResult:
    status: int
    body: dict[str, Any]
    usage: Usage | None
    backend_latency_s: float
    raw: bytes = b""  # the backend's bytes, relayed as they came (``body`` is their parse)


@dataclass
class StreamResult:
    """Filled in while a stream runs; final once the iteration ends."""

    status: int = 0
    backend_latency_s: float | None = None  # request sent → stream ended (or failed)
    events: int = 0  # events passed to the caller
    ended: bool = False  # read to the end of the backend's answer
    error: UpstreamError | None = None


# ---------------------------------------------------------------------------- pure helpers


def scrub_error(body: dict[str, Any], target: BackendTarget) -> dict[str, Any]:
    """Remove the backend URL and API key should the backend have echoed them."""
    err = body["error"]
    message: str = err["message"]
    if target.api_key:
        message = message.replace(target.api_key, "***")
    message = message.replace(target.base_url.rstrip("/"), "<backend>")
    err["message"] = message
    return body


def relayed_status(status: int) -> int:
    """The status a client gets for a backend's non-2xx answer: its own 4xx or 5xx; anything
    else (a 1xx, a redirect) is not an answer to relay, so 502."""
    return status if 400 <= status < 600 else 502


def _backend_headers(
    target: BackendTarget, client_headers: Mapping[str, str] | None, request_id: str | None,
    trace_headers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    client: dict[str, str] = {}
    if client_headers:
        lowered = {k.lower(): v for k, v in client_headers.items()}
        names = FORWARDED_HEADERS
        if target.forward_client_auth and not target.api_key:
            names = names + FORWARDED_WITH_CLIENT_AUTH
        for name in names:
            if (value := lowered.get(name.lower())) is not None:
                client[name] = value
        if target.forward_client_auth and not target.api_key:
            auth = lowered.get("authorization")
            if auth:
                client["Authorization"] = auth
    if target.api_key:
        client["Authorization"] = f"Bearer {target.api_key}"
    if request_id:
        client["X-Request-Id"] = request_id
    if trace_headers:  # the router's own span is the backend's parent: the client's go
        client.pop("Traceparent", None)
        client.pop("Tracestate", None)
        client.update(trace_headers)
    return client


def _connect_error(target: BackendTarget, exc: BaseException) -> UpstreamError:
    if isinstance(exc, PoolBusy):
        return UpstreamError(
            503, openai_error(503, f"the router's connections to the backend for model "
                                   f"'{target.model}' are all busy ({exc}); retry shortly",
                              "server_error", "backend_busy"), BACKEND_BUSY)
    if isinstance(exc, TimeoutError):
        return UpstreamError(
            504,
            openai_error(
                504,
                f"backend for model '{target.model}' timed out",
                "server_error",
                "backend_timeout",
            ),
            BACKEND_TIMEOUT,
        )
    return UpstreamError(
        502,
        openai_error(
            502,
            f"backend for model '{target.model}' is unreachable",
            "server_error",
            "backend_unreachable",
        ),
        BACKEND_UNREACHABLE,
    )


class EventTooLong(Http1Error):
    """The backend sent more than ``MAX_EVENT_BYTES`` without ending an event."""


def _stream_error(target: BackendTarget, exc: BaseException) -> UpstreamError:
    if isinstance(exc, EventTooLong):
        return UpstreamError(
            502, openai_error(502, f"backend for model '{target.model}' sent a malformed "
                                   f"stream ({exc})", "server_error", "backend_bad_response"),
            BACKEND_BAD_RESPONSE)
    if isinstance(exc, TimeoutError):
        return UpstreamError(
            504,
            openai_error(
                504,
                f"backend for model '{target.model}' stalled mid-stream",
                "server_error",
                "backend_timeout",
            ),
            BACKEND_TIMEOUT,
        )
    return UpstreamError(
        502,
        openai_error(
            502,
            f"backend for model '{target.model}' closed the stream early",
            "server_error",
            "backend_stream_aborted",
        ),
        BACKEND_STREAM_ABORTED,
    )


# ---------------------------------------------------------------------------- the client


class Proxy:
    """Backend HTTP client. One per app, sharing one connection pool (``http1.Http1Client``)."""

    def __init__(self, client: Http1Client, *, owns_client: bool = False) -> None:
        self.client = client
        self._owns_client = owns_client

    @classmethod
    def create(
        cls,
        *,
        limit: int = 100,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 120.0,
        pool_timeout_s: float = 5.0,
    ) -> Proxy:
        """Build the pool. Call inside a running loop (e.g. a ``cleanup_ctx``).

        ``read_timeout_s`` bounds each wait for backend bytes: the time to the response
        headers and every gap between streamed chunks, not the whole generation.
        """
        client = Http1Client(limit=limit, connect_timeout_s=connect_timeout_s,
                             read_timeout_s=read_timeout_s, pool_timeout_s=pool_timeout_s)
        return cls(client, owns_client=True)

    async def close(self) -> None:
        if self._owns_client:
            await self.client.close()

    async def __aenter__(self) -> Proxy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def post_json(
        self,
        target: BackendTarget,
        path: str,
        body: dict[str, Any],
        client_headers: Mapping[str, str] | None = None,
        *,
        request_id: str | None = None,
        trace_headers: Mapping[str, str] | None = None,
    ) -> ProxyResult:
        """One non-streaming call. Non-2xx and transport failures raise ``UpstreamError``.
        ``trace_headers``: the W3C ``traceparent``/``tracestate`` of the router's backend-call
        span, sent in place of the client's."""
        headers = _backend_headers(target, client_headers, request_id, trace_headers)
        start = time.perf_counter()
        resp = None
        try:
            resp = await self.client.request("POST", target.url(path), {**headers, **JSON_HEADERS},
                                             json_codec.dumps(body))
            raw = await resp.read()
            status = resp.status
            retry_after = parse_retry_after(resp.headers.get("retry-after"))
        except (Http1Error, TimeoutError, ValueError) as exc:
            log.warning("backend %s failed: %r", target.model, exc)
            raise _connect_error(target, exc) from None
        finally:  # cancelled or failed mid-answer: the connection and its pool slot go
            if resp is not None:
                resp.close()  # (nothing to do once read() has put it back)
        latency = time.perf_counter() - start
        if not 200 <= status < 300:
            raise UpstreamError(
                relayed_status(status),
                scrub_error(normalise_error_body(status, raw, target.model), target),
                retry_after_s=retry_after)
        try:
            parsed = json_codec.loads(raw)
        except (ValueError, RecursionError):
            parsed = None
        if not isinstance(parsed, dict):
            raise UpstreamError(
                502,
                openai_error(
                    502,
                    f"backend for model '{target.model}' returned a non-JSON answer",
                    "server_error",
                    "backend_bad_response",
                ),
                BACKEND_BAD_RESPONSE,
            )
        return ProxyResult(status, parsed, extract_usage(parsed), latency, raw)

    def stream(
        self,
        target: BackendTarget,
        path: str,
        body: dict[str, Any],
        client_headers: Mapping[str, str] | None = None,
        *,
        request_id: str | None = None,
        trace_headers: Mapping[str, str] | None = None,
    ) -> UpstreamStream:
        """A streaming call; use as ``async with ... as upstream: async for event in upstream``
        (``trace_headers`` as for ``post_json``)."""
        headers = _backend_headers(target, client_headers, request_id, trace_headers)
        return UpstreamStream(self.client, target, path, body, headers)


class UpstreamStream:
    """One streamed backend answer: events as they arrive, ``result`` filled in as it runs."""

    def __init__(
        self,
        client: Http1Client,
        target: BackendTarget,
        path: str,
        body: dict[str, Any],
        headers: dict[str, str],
    ) -> None:
        self._client = client
        self.target = target
        self._path = path
        self._body = body
        self._headers = headers
        self._response: Response | None = None
        self._start = 0.0
        self._iterated = False
        self.result = StreamResult()

    @property
    def content_type(self) -> str:
        return self._response.headers.get("Content-Type", "") if self._response else ""

    async def start(self) -> None:
        """Send the request and check the status; raises ``UpstreamError`` on failure."""
        target = self.target
        self._start = time.perf_counter()
        try:
            resp = await self._client.request(
                "POST", target.url(self._path), {**self._headers, **JSON_HEADERS},
                json_codec.dumps(self._body),
            )
        except (Http1Error, TimeoutError, ValueError) as exc:
            log.warning("backend %s failed: %r", target.model, exc)
            raise self._fail(_connect_error(target, exc)) from None
        self._response = resp
        self.result.status = resp.status
        try:
            if not 200 <= resp.status < 300:
                raw = await resp.read()
                body = scrub_error(normalise_error_body(resp.status, raw, target.model), target)
                raise self._fail(UpstreamError(
                    relayed_status(resp.status), body,
                    retry_after_s=parse_retry_after(resp.headers.get("retry-after"))))
            if not resp.content_type.startswith("text/event-stream"):
                raise self._fail(
                    UpstreamError(
                        502,
                        openai_error(
                            502,
                            f"backend for model '{target.model}' did not answer with a stream",
                            "server_error",
                            "backend_bad_response",
                        ),
                        BACKEND_BAD_RESPONSE,
                    )
                )
        except UpstreamError:
            resp.close()
            raise
        except (Http1Error, TimeoutError) as exc:
            resp.close()
            raise self._fail(_connect_error(target, exc)) from None
        except BaseException:
            resp.close()
            raise

    def _fail(self, error: UpstreamError) -> UpstreamError:
        self.result.error = error
        self.result.backend_latency_s = time.perf_counter() - self._start
        return error

    async def aclose(self) -> None:
        """Release the connection: back to the pool if the stream ended, else closed."""
        resp, self._response = self._response, None
        if resp is None:
            return
        if self.result.ended and resp.at_eof():
            resp.release()
        else:
            resp.close()

    async def __aenter__(self) -> UpstreamStream:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._response is None:
            raise RuntimeError("UpstreamStream: use 'async with' (or await start()) first")
        if self._iterated:
            raise RuntimeError("UpstreamStream can be iterated once")
        self._iterated = True
        return self._events(self._response)

    async def _events(self, resp: Response) -> AsyncIterator[bytes]:
        buffer = b""
        try:
            async for data in resp.iter_any():
                events, buffer = parse_sse_events(buffer + data)
                for event in events:
                    self.result.events += 1
                    yield event
                if len(buffer) > MAX_EVENT_BYTES:
                    raise EventTooLong(f"one server-sent event exceeded {MAX_EVENT_BYTES} bytes")
            if buffer.strip():  # a last event without its blank line
                self.result.events += 1
                yield buffer
        except (Http1Error, TimeoutError) as exc:
            log.warning("backend %s stream failed: %r", self.target.model, exc)
            raise self._fail(_stream_error(self.target, exc)) from None
        except (asyncio.CancelledError, GeneratorExit):
            resp.close()  # the client went away: stop the backend now
            raise
        self.result.ended = True
        self.result.backend_latency_s = time.perf_counter() - self._start
