"""Fuzz the SSE reader: ``backend.sse_read`` (``parse_sse_events``, ``sse_data``, the
``EventScan`` the relay runs) as the proxy drives it over a backend's stream
(``UpstreamStream``: the bytes arrive in whatever pieces TCP makes of them).

- a well-formed stream gives the same events however it is cut into chunks;
- arbitrary bytes, arbitrarily cut, give events that join back into the input (a blank tail
  excepted) or the documented ``UpstreamError``, and nothing else;
- ``EventScan.keep`` answers a bool for any event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from multidict import CIMultiDict

from router_svc.backend.errors import UpstreamError
from router_svc.backend.proxy import Proxy
from router_svc.backend.sse_read import MAX_EVENT_BYTES, EventScan, parse_sse_events, sse_data
from router_svc.core.selection import BackendTarget
from tests.fuzz.strategies import FUZZ

TARGET = BackendTarget("http://backend.invalid/v1", "m")


class ChunkedResponse:
    """A 200 ``text/event-stream`` answer whose body arrives in the given pieces (the part of
    ``http1.Response`` the proxy's stream reader uses)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.status = 200
        self.headers = CIMultiDict({"Content-Type": "text/event-stream"})
        self.content_type = "text/event-stream"
        self._chunks = chunks
        self.closed = False

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            await asyncio.sleep(0)
            yield chunk

    def at_eof(self) -> bool:
        return True

    def release(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True


class OneAnswerClient:
    """Stands in for ``Http1Client``: every request gets the same chunked answer."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def request(self, method: str, url: str, headers: Any, body: bytes) -> ChunkedResponse:
        return ChunkedResponse(self.chunks)


def read_events(chunks: list[bytes]) -> list[bytes]:
    """The events ``Proxy.stream`` yields for a backend stream arriving as ``chunks``."""

    async def run() -> list[bytes]:
        proxy = Proxy(OneAnswerClient(chunks))  # type: ignore[arg-type]
        async with proxy.stream(TARGET, "/chat/completions", {"stream": True}) as up:
            return [event async for event in up]

    return asyncio.run(run())


def cut(data: bytes, positions: list[int]) -> list[bytes]:
    points = sorted({min(p, len(data)) for p in positions})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


# ---------------------------------------------------------------- well-formed streams

_value = st.text(st.characters(exclude_characters="\r\n", codec="utf-8"), max_size=30)
_line = st.one_of(
    _value.map(lambda v: f"data: {v}"),
    _value.map(lambda v: f"data:{v}"),
    st.sampled_from(('data: {"choices": [{"delta": {"content": "hi"}}]}', "data: [DONE]",
                     'data: {"choices": [], "usage": {"prompt_tokens": 1}}', "event: ping",
                     "id: 7", "retry: 100", ": keep-alive", ":")),
)


@st.composite
def _event(draw: st.DrawFn) -> bytes:
    newline = draw(st.sampled_from(("\n", "\r\n")))
    lines = draw(st.lists(_line, min_size=1, max_size=3))
    return (newline.join(lines) + newline * 2).encode()


@FUZZ
@given(events=st.lists(_event(), max_size=8), positions=st.lists(st.integers(0, 2000),
                                                                 max_size=12))
@example(events=[b"data: a\r\n\r\n", b"data: b\n\n"], positions=[8, 9, 10])
def test_well_formed_stream_reads_the_same_however_cut(events: list[bytes],
                                                       positions: list[int]) -> None:
    stream = b"".join(events)
    assert read_events(cut(stream, positions)) == events
    assert parse_sse_events(stream) == (events, b"")


# ---------------------------------------------------------------- anything at all

_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from((b"\n", b"\r", b"\r\n", b"data: ", b"data:", b"{}", b"[DONE]",
                              b": c", b"x", b"\xff", b'{"usage": {"prompt_tokens": 2}, '
                              b'"choices": []}')), max_size=40).map(b"".join),
)


@FUZZ
@given(data=_bytes, positions=st.lists(st.integers(0, 400), max_size=12))
@example(data=b"\r\n\r", positions=[3])
@example(data=b"data: x\n\r\n", positions=[8, 9])
def test_any_bytes_any_cuts_give_the_input_back_as_events(data: bytes,
                                                          positions: list[int]) -> None:
    try:
        events = read_events(cut(data, positions))
    except UpstreamError as e:  # the only documented failure: an over-long event
        assert e.status == 502 and e.body["error"]["code"] == "backend_bad_response"
        return
    whole, tail = parse_sse_events(data)
    assert events == read_events([data])  # the cuts change nothing
    expected = whole + ([tail] if tail.strip() else [])
    assert events == expected
    assert b"".join(events) == (data if tail.strip() else data[:len(data) - len(tail)])


def test_an_event_longer_than_the_limit_is_a_clean_502() -> None:
    with pytest.raises(UpstreamError) as exc:
        read_events([b"data: " + b"x" * MAX_EVENT_BYTES, b"x"])
    assert exc.value.status == 502
    assert exc.value.body["error"]["code"] == "backend_bad_response"
    # many small events in one large piece are fine
    many = b"data: {}\n\n" * (MAX_EVENT_BYTES // 5)
    assert len(read_events([many])) == MAX_EVENT_BYTES // 5


# ---------------------------------------------------------------- what the relay reads

_events = st.one_of(
    _event(),
    st.binary(max_size=200),
    st.builds(lambda a, b: b"data: " + a + b"\n\n", st.sampled_from(
        (b'{"usage": {"prompt_tokens": 1, "completion_tokens": "x"}, "choices": []}',
         b'{"usage": null}', b'{"choices": [{"delta": {"content": 1}}]}', b'{"choices": 5}',
         b'{"choices": [null, {"text": "t"}]}', b"[1]", b"1e999", b"NaN", b'"\\ud800"')),
        st.just(b"")),
)


@FUZZ
@given(events=st.lists(_events, max_size=6), wants_usage=st.booleans())
def test_event_scan_answers_a_bool_for_any_event(events: list[bytes], wants_usage: bool) -> None:
    scan = EventScan(client_wants_usage=wants_usage)
    for event in events:
        assert isinstance(scan.keep(event), bool)
        data = sse_data(event)
        assert data is None or isinstance(data, bytes)


def test_event_scan_survives_a_deeply_nested_event() -> None:
    assert EventScan().keep(b"data: " + b"[" * 100_000 + b"\n\n") is True
