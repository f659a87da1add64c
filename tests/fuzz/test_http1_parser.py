"""Fuzz the backend HTTP/1.1 client (``backend.http1``) and the proxy above it with what a
broken or hostile backend might answer: a loopback server reads the request, writes the fuzz
bytes in the drawn pieces, and closes.

- any bytes: the client answers a response or ``Http1Error``, at once (the server closed:
  waiting for the read timeout would be a hang), never another exception;
- a well-formed answer (length, chunked or close-delimited), however cut: its status,
  headers and body exactly;
- the proxy: a ``ProxyResult`` (2xx JSON) or an ``UpstreamError`` carrying an OpenAI error,
  for the JSON and the streaming call alike.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from router_svc.backend.errors import UpstreamError
from router_svc.backend.http1 import Http1Client, Http1Error
from router_svc.backend.proxy import Proxy
from router_svc.core.selection import BackendTarget
from router_svc.doors.http.openapi import openapi_document
from tests.fuzz.strategies import FUZZ, errors

READ_TIMEOUT_S = 3.0
DOC = openapi_document()
T = TypeVar("T")


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            await reader.readexactly(int(value))


def against(pieces: list[bytes], call: Callable[[str], Awaitable[T]]) -> tuple[T, float]:
    """``call(base_url)`` against a server that answers ``pieces`` then closes; the result
    and how long it took."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _read_request(reader)
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0)  # separate segments where the kernel allows
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client gave up first: its answer is what is checked
        finally:
            writer.close()

    async def run() -> tuple[T, float]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(READ_TIMEOUT_S * 3):  # the test's own guard
                result = await call(f"http://127.0.0.1:{port}")
        finally:
            server.close()
        return result, time.monotonic() - t0

    return asyncio.run(run())


def cut(data: bytes, positions: list[int]) -> list[bytes]:
    points = sorted({min(p, len(data)) for p in positions})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


# ---------------------------------------------------------------- answers

_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-ABCXYZ0123456789", min_size=1,
                 max_size=12)
_value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=20)
_extra = st.lists(st.tuples(_token, _value).filter(
    lambda h: h[0].lower() not in ("content-length", "transfer-encoding", "connection")),
    max_size=4)


def _chunked(body: bytes, sizes: list[int], ext: bool) -> bytes:
    out, i = b"", 0
    for size in [*sizes, len(body)]:
        piece = body[i:i + size]
        if piece:
            out += b"%x%s\r\n%s\r\n" % (len(piece), b";x=y" if ext else b"", piece)
        i += len(piece)
    return out + b"0\r\n\r\n"


@st.composite
def answers(draw: st.DrawFn) -> tuple[bytes, int, list[tuple[str, str]], bytes]:
    """A well-formed answer: (bytes, status, headers, body)."""
    status = draw(st.sampled_from((200, 201, 400, 401, 404, 422, 429, 500, 502, 503)))
    headers = draw(_extra)
    body = draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(("length", "chunked", "close")))
    head = [f"HTTP/1.{draw(st.sampled_from('01'))} {status} {draw(_token)}"]
    head += [f"{k}: {v}" for k, v in headers]
    if framing == "length":
        head.append(f"Content-Length: {len(body)}")
        raw = body
    elif framing == "chunked":
        head.append("Transfer-Encoding: chunked")
        raw = _chunked(body, draw(st.lists(st.integers(1, 64), max_size=5)), draw(st.booleans()))
    else:
        head.append("Connection: close")
        raw = body
    return ("\r\n".join(head) + "\r\n\r\n").encode() + raw, status, headers, body


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(out)))
        how = draw(st.sampled_from(("flip", "cut", "insert", "truncate")))
        if how == "flip" and i < len(out):
            out[i] ^= draw(st.integers(1, 255))
        elif how == "cut":
            del out[i:i + draw(st.integers(1, 10))]
        elif how == "insert":
            out[i:i] = draw(st.sampled_from((b"\r\n", b"\n", b"\x00", b"HTTP/1.1 200 OK\r\n",
                                             b"Content-Length: 99999\r\n", b"0\r\n\r\n",
                                             b"Transfer-Encoding: chunked\r\n", b"fffffff\r\n",
                                             b"Content-Length: -1\r\n", b": \r\n")))
        else:
            del out[i:]
    return bytes(out)


anything = st.one_of(
    st.binary(max_size=200),
    answers().map(lambda a: a[0]),
    answers().flatmap(lambda a: mutated(a[0])),
    st.sampled_from((b"", b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 200 OK\r\n",
                     b"HTTP/1.1 200 OK\r\n\r\n", b"HTTP/2 200\r\n\r\n", b"\r\n" * 50,
                     b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
                     b"Connection: upgrade\r\n\r\n")),
)
positions = st.lists(st.integers(0, 400), max_size=6)


# ---------------------------------------------------------------- the client


async def _fetch(base: str) -> tuple[int, Any, bytes] | Http1Error:
    client = Http1Client(connect_timeout_s=READ_TIMEOUT_S, read_timeout_s=READ_TIMEOUT_S)
    try:
        resp = await client.request("POST", f"{base}/v1/chat/completions", {}, b"{}")
        return resp.status, resp.headers, await resp.read()
    except Http1Error as e:  # the documented failure; TimeoutError would be a hang here
        return e
    finally:
        await client.close()


@settings(FUZZ, max_examples=150)
@given(data=anything, at=positions)
@example(data=b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", at=[])
@example(data=b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", at=[3])
def test_any_answer_is_a_response_or_an_http1_error_at_once(data: bytes, at: list[int]) -> None:
    result, took = against(cut(data, at), _fetch)
    assert took < READ_TIMEOUT_S, f"{took:.1f} s: waited for the read timeout on {data!r}"
    if not isinstance(result, Http1Error):
        status, _, body = result
        assert isinstance(status, int) and isinstance(body, bytes)


@settings(FUZZ, max_examples=150)
@given(answer=answers(), at=positions)
def test_well_formed_answers_read_exactly_however_cut(
        answer: tuple[bytes, int, list[tuple[str, str]], bytes], at: list[int]) -> None:
    data, status, headers, body = answer
    result, _ = against(cut(data, at), _fetch)
    assert not isinstance(result, Http1Error), result
    got_status, got_headers, got_body = result
    assert (got_status, got_body) == (status, body)
    for name, value in headers:  # (llhttp keeps a value's trailing blanks: not compared)
        assert value.strip() in [v.strip() for v in got_headers.getall(name)], (name, value)


# ---------------------------------------------------------------- the proxy

TARGET_PATH = "/chat/completions"


def _target(base: str) -> BackendTarget:
    return BackendTarget(f"{base}/v1", "m")


async def _post_json(base: str) -> Any:
    proxy = Proxy.create(connect_timeout_s=READ_TIMEOUT_S, read_timeout_s=READ_TIMEOUT_S)
    try:
        return await proxy.post_json(_target(base), TARGET_PATH, {"model": "m"})
    except UpstreamError as e:
        return e
    finally:
        await proxy.close()


async def _stream(base: str) -> Any:
    proxy = Proxy.create(connect_timeout_s=READ_TIMEOUT_S, read_timeout_s=READ_TIMEOUT_S)
    try:
        async with proxy.stream(_target(base), TARGET_PATH, {"model": "m"}) as up:
            return [event async for event in up]
    except UpstreamError as e:
        return e
    finally:
        await proxy.close()


def assert_clean(result: Any) -> None:
    if isinstance(result, UpstreamError):
        problems = errors(result.body, {"$ref": "#/components/schemas/ErrorResponse"}, DOC)
        assert not problems, (problems, result.body)
        assert isinstance(result.status, int)


_sse_answers = st.builds(
    lambda events, ctype: b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype + b"\r\n\r\n" + events,
    st.lists(st.sampled_from((b"data: {}\n\n", b"data: [DONE]\n\n", b": c\n\n", b"data: x",
                              b"\r\n", b"data: {\"error\": {}}\n\n")), max_size=6).map(b"".join),
    st.sampled_from((b"text/event-stream", b"application/json", b"text/event-stream; x=y")))


@settings(FUZZ, max_examples=100)  # two calls an example
@given(data=anything | _sse_answers, at=positions)
def test_proxy_answers_a_result_or_an_openai_error(data: bytes, at: list[int]) -> None:
    for call in (_post_json, _stream):
        result, took = against(cut(data, at), call)
        assert took < READ_TIMEOUT_S, f"{took:.1f} s: waited for the read timeout on {data!r}"
        assert_clean(result)


# Bugs these runs found, kept as regression tests.

DEEP = b"[" * 100_000


@pytest.mark.parametrize("call", [_post_json, _stream], ids=["json", "stream"])
def test_deeply_nested_error_body_is_an_upstream_error(call) -> None:
    answer = b"HTTP/1.1 400 Bad\r\nContent-Length: %d\r\n\r\n%s" % (len(DEEP), DEEP)
    result, _ = against([answer], call)
    assert isinstance(result, UpstreamError)


@pytest.mark.parametrize("status", [100, 302, 0, 999])
@pytest.mark.parametrize("call", [_post_json, _stream], ids=["json", "stream"])
def test_non_error_status_is_not_relayed_as_an_error_status(call, status: int) -> None:
    head = b"HTTP/1.1 %03d X\r\nContent-Length: 0\r\n\r\n" % status
    result, _ = against([head], call)
    assert isinstance(result, UpstreamError)
    assert 400 <= result.status < 600, result.status
