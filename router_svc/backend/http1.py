"""A small HTTP/1.1 client for the backend leg: pooled keep-alive connections, a request with
a body, the answer read whole or chunk by chunk as it arrives.

Why not aiohttp's client: on the pass-through path it was the largest part of the router's own
CPU time (request and response objects, tracing, cookie and timer machinery per call); this
client does what the proxy needs on an asyncio ``Protocol`` with ``httptools``' C parser (the
one uvicorn uses), at about half the CPU per request. What it does not do, the proxy does not
need: redirects, cookies, proxies from the environment, compression (no ``Accept-Encoding`` is
sent, so answers come as they are), HTTP/2.

Failures: ``TimeoutError`` (connect, or no byte for ``read_timeout_s``) and ``Http1Error``
(refused, reset, closed early, malformed answer).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import httptools
from multidict import CIMultiDict

PAUSE_BYTES = 256 * 1024  # stop reading from the backend while this much waits unconsumed
RESENDABLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
IDLE_S = 4.0  # drop pooled connections idle longer (uvicorn, vLLM's server, closes at 5 s)


class Http1Error(Exception):
    """The connection failed or the answer was not HTTP/1.1."""


class PoolBusy(Http1Error):
    """Every connection of the pool stayed in use for the whole pool timeout."""


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


@functools.lru_cache(maxsize=256)  # a few backend URLs, parsed once each
def split_url(url: str) -> tuple[Origin, str]:
    """``http(s)://host[:port]/path?query`` -> (origin, ``/path?query``)."""
    p = httptools.parse_url(url.encode())
    scheme = (p.schema or b"").decode().lower()
    if scheme not in ("http", "https") or not p.host:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = p.port or (443 if scheme == "https" else 80)
    target = (p.path or b"/").decode()
    if p.query:
        target += "?" + p.query.decode()
    return Origin(scheme, p.host.decode(), port), target


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; one request at a time."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.headers_done = False
        self.keep_alive = False
        self.complete = False
        self.got_bytes = False
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.paused = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(Http1Error("unexpected protocol upgrade"))
        except httptools.HttpParserError as e:
            self._fail(Http1Error(f"malformed answer: {e}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete:
            return
        if (self.headers_done and exc is None and "content-length" not in self.headers
                and "chunked" not in self.headers.get("transfer-encoding", "").lower()):
            self.complete = True  # an answer delimited by the end of the connection
            self._wake()
        else:
            self._fail(Http1Error(f"connection closed before the answer ended ({exc!r})"))

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.add(name.decode("latin-1"), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        # Asked here: after the message the parser has moved on and always says no.
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > PAUSE_BYTES and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # -- for the client
    def _fail(self, err: BaseException) -> None:
        if self.error is None:
            self.error = err
        self.close()
        self._wake()

    def _wake(self) -> None:
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_result(None)

    async def wait(self) -> None:
        """Until something happens (headers, body, end, failure)."""
        self.waiter = asyncio.get_running_loop().create_future()
        await self.waiter

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def send(self, data: bytes) -> None:
        self._reset()
        assert self.transport is not None
        self.transport.write(data)

    @property
    def reusable(self) -> bool:
        return self.complete and not self.closed and self.keep_alive

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Response:
    """An answer: status and headers at once, the body read whole (``read``) or as it comes
    (``iter_any``). ``release`` puts a fully read connection back into the pool; ``close``
    drops it (and, mid-answer, tells the backend to stop)."""

    def __init__(self, client: Http1Client, conn: _Connection) -> None:
        self._client = client
        self._conn: _Connection | None = conn
        self.status = conn.status
        self.headers = conn.headers

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    def at_eof(self) -> bool:
        return self._conn is None or (self._conn.complete and not self._conn.chunks)

    async def _next(self) -> bytes | None:
        conn = self._conn
        if conn is None:
            return None
        async with asyncio.timeout(self._client.read_timeout_s):
            while not conn.chunks and not conn.complete and conn.error is None:
                await conn.wait()
        if conn.chunks:
            return conn.take()
        if conn.error is not None:
            raise conn.error
        return None

    async def iter_any(self) -> AsyncIterator[bytes]:
        while (data := await self._next()) is not None:
            yield data

    async def read(self) -> bytes:
        parts = [data async for data in self.iter_any()]
        self.release()
        return b"".join(parts)

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client._give_back(conn, reuse=conn.reusable and not conn.chunks)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client._give_back(conn, reuse=False)


def may_resend(method: str, headers: Mapping[str, str]) -> bool:
    """Whether a request may go out twice (RFC 9110 9.2.2): idempotent by method, or a POST
    carrying an ``Idempotency-Key``, which the backend deduplicates."""
    return method.upper() in RESENDABLE_METHODS or any(
        k.lower() in ("idempotency-key", "x-idempotency-key") for k in headers)


class Http1Client:
    """Keep-alive connections per origin, at most ``limit`` in use at once (0: no limit)."""

    def __init__(self, *, limit: int = 100, connect_timeout_s: float = 5.0,
                 read_timeout_s: float = 120.0, ssl_context: ssl.SSLContext | None = None,
                 pool_timeout_s: float = 5.0) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.pool_timeout_s = pool_timeout_s
        self.limit = limit
        self.read_timeout_s = read_timeout_s
        self._ssl = ssl_context
        self._idle: dict[Origin, collections.deque[_Connection]] = {}
        self._slots = asyncio.Semaphore(limit) if limit > 0 else None
        self._open: set[_Connection] = set()

    async def request(self, method: str, url: str, headers: Mapping[str, str],
                      body: bytes) -> Response:
        """Send; return once the status line and headers are in."""
        origin, target = split_url(url)
        head = _head(method, target, origin, headers, len(body))
        if self._slots is not None:
            try:  # slow streams can hold every connection: wait a bounded time, not for ever
                async with asyncio.timeout(self.pool_timeout_s):
                    await self._slots.acquire()
            except TimeoutError:
                raise PoolBusy(f"all {self.limit} backend connections stayed busy for "
                               f"{self.pool_timeout_s:g}s") from None
        try:
            while True:
                conn = await self._connection(origin)
                try:
                    conn.send(head + body)
                    async with asyncio.timeout(self.read_timeout_s):
                        while not conn.headers_done and conn.error is None:
                            await conn.wait()
                    if conn.error is not None:
                        raise conn.error
                    return Response(self, conn)
                except BaseException as e:
                    self._drop(conn)
                    # A pooled connection closed with no byte back: most often the server's
                    # idle close racing this request, but the server may have read it first.
                    # RFC 9110 9.2.2: only an idempotent request (by method, or marked with
                    # an Idempotency-Key) is re-sent; a POST fails (502) and the client,
                    # who knows whether a second generation is acceptable, decides.
                    if (isinstance(e, Http1Error) and conn.reused and not conn.got_bytes
                            and may_resend(method, headers)):
                        continue
                    raise
        except BaseException:
            if self._slots is not None:
                self._slots.release()
            raise

    async def _connection(self, origin: Origin) -> _Connection:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_S:
                conn.reused = True
                return conn
            self._drop(conn)
        loop = asyncio.get_running_loop()
        tls = None
        if origin.scheme == "https":
            if self._ssl is None:  # once: loading the system CAs takes milliseconds
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(origin), origin.host, origin.port, ssl=tls,
                    server_hostname=origin.host if tls else None)
        except OSError as e:
            raise Http1Error(f"cannot connect to {origin.host}:{origin.port}: {e}") from e
        self._open.add(conn)
        return conn

    def _give_back(self, conn: _Connection, *, reuse: bool) -> None:
        if reuse:
            conn.idle_since = time.monotonic()
            self._idle.setdefault(conn.origin, collections.deque()).append(conn)
        else:
            self._drop(conn)
        if self._slots is not None:
            self._slots.release()

    def _drop(self, conn: _Connection) -> None:
        conn.close()
        self._open.discard(conn)

    async def close(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()


def _head(method: str, target: str, origin: Origin, headers: Mapping[str, str],
          length: int) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {origin.host_header}",
             f"Content-Length: {length}"]
    for name, value in headers.items():
        if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
            continue
        if any(c in name or c in value for c in "\r\n\0") or not name:
            raise ValueError(f"header {name!r} has a line break or is empty")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
