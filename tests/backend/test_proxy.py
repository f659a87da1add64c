"""The backend client against real demo backends: pass-through, SSE framing, errors,
cancellation, auth. What the events say (usage, the stripped chunk) is tests/flow/test_relay.py."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
from aiohttp import web

from router_svc.backend.errors import UpstreamError
from router_svc.backend.proxy import Proxy
from router_svc.backend.sse_read import Usage, sse_data
from router_svc.core import json_codec
from router_svc.core.selection import BackendTarget
from router_svc.ops.demo_backends import OPTIONS, RECEIVED, BackendOptions, create_backend_app

# pytest-aiohttp's fixtures run on the session loop (asyncio_default_fixture_loop_scope).
pytestmark = pytest.mark.asyncio(loop_scope="session")

CHAT = "/chat/completions"


def chat_body(text: str = "hello there", model: str = "phi-4", **extra: object) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def backend(aiohttp_server, name: str = "phi-4", **options: object):
    app = create_backend_app(name, BackendOptions(**options))  # type: ignore[arg-type]
    server = await aiohttp_server(app)
    return app, BackendTarget(str(server.make_url("/v1")), name, None, False)


@pytest.fixture
async def proxy():
    p = Proxy.create(limit=10, connect_timeout_s=2.0, read_timeout_s=5.0)
    yield p
    await p.close()


def payloads(events: list[bytes]) -> list[dict | str]:
    out: list[dict | str] = []
    for event in events:
        data = sse_data(event)
        assert data is not None
        out.append(data.decode() if data == b"[DONE]" else json.loads(data))
    return out


async def collect(proxy: Proxy, target: BackendTarget, body: dict):
    async with proxy.stream(target, CHAT, body, {}) as upstream:
        events = [event async for event in upstream]
    return events, upstream.result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- non-streaming


async def test_post_json_pass_through_with_usage(aiohttp_server, proxy):
    app, target = await backend(aiohttp_server)
    result = await proxy.post_json(target, CHAT, chat_body("one two three"), {})
    assert result.status == 200
    assert result.body["choices"][0]["message"]["content"] == "[phi-4] You said: one two three"
    assert result.usage == Usage(3, 6, 9)
    assert result.backend_latency_s > 0
    assert app[RECEIVED][0].body == chat_body("one two three")
    assert json.loads(result.raw) == result.body  # the bytes relayed are the ones parsed


async def test_post_json_sends_integers_beyond_64_bits_exactly(aiohttp_server, proxy):
    # orjson refuses them; the standard library's encoder takes over, nothing is rounded.
    app, target = await backend(aiohttp_server)
    body = chat_body("hi", seed=2**70 + 1)
    assert json_codec.dumps(body) == json.dumps(body).encode()
    await proxy.post_json(target, CHAT, body, {})
    assert app[RECEIVED][0].body["seed"] == 2**70 + 1


async def test_json_codec_dumps_is_json():
    body = chat_body("café 😀 \"q\" \n", temperature=0.25, n=2, stop=None)
    assert json.loads(json_codec.dumps(body)) == body


# ---------------------------------------------------------------------------- streaming


async def test_stream_is_incremental(aiohttp_server, proxy):
    app, target = await backend(aiohttp_server, chunk_delay_s=0.1)
    start = time.perf_counter()
    async with proxy.stream(target, CHAT, chat_body("a b c d", stream=True), {}) as upstream:
        seen: list[tuple[float, int, bool]] = []
        async for _event in upstream:
            received = app[RECEIVED][0]
            seen.append((time.perf_counter() - start, received.chunks_sent, received.finished))
    total = seen[-1][0]
    first_at, chunks_at_first, finished_at_first = seen[0]
    assert not finished_at_first
    assert chunks_at_first <= 2  # the backend still had most of its answer to write
    assert first_at < total / 3
    assert upstream.result.ended
    assert upstream.result.backend_latency_s is not None


async def test_body_sent_as_given(aiohttp_server, proxy):
    app, target = await backend(aiohttp_server)
    body = chat_body("x y", stream=True)
    events, result = await collect(proxy, target, body)
    assert "stream_options" not in app[RECEIVED][0].body  # the flow asks for usage, not this
    assert payloads(events)[-1] == "[DONE]"
    assert result.events == len(events)


async def test_sse_events_split_across_reads(aiohttp_server, proxy):
    chunk = {"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": "hello"}, "finish_reason": None}]}
    usage = {"object": "chat.completion.chunk", "choices": [],
             "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    kept = b"data: " + json.dumps(chunk).encode() + b"\n\n"
    stripped = b"data: " + json.dumps(usage).encode() + b"\n\n"
    done = b"data: [DONE]\n\n"
    wire = kept + stripped + done
    # cut inside JSON, between the two newlines, right after "data:", inside [DONE]
    cuts = [10, len(kept) - 1, len(kept) + 5, len(kept) + 40, len(kept) + len(stripped) + 8]

    async def split_handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        last = 0
        for cut in [*cuts, len(wire)]:
            await resp.write(wire[last:cut])
            await asyncio.sleep(0.02)  # separate TCP reads on the proxy side
            last = cut
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", split_handler)
    server = await aiohttp_server(app)
    target = BackendTarget(str(server.make_url("/v1")), "m")
    events, result = await collect(proxy, target, chat_body(stream=True))
    assert events == [kept, stripped, done]  # whole events, as sent
    assert result.ended


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("streaming", [False, True])
async def test_backend_500_relayed(aiohttp_server, proxy, streaming):
    _, target = await backend(aiohttp_server, fail_status=500)
    with pytest.raises(UpstreamError) as info:
        if streaming:
            await collect(proxy, target, chat_body(stream=True))
        else:
            await proxy.post_json(target, CHAT, chat_body(), {})
    assert info.value.status == 500
    assert info.value.body["error"]["message"] == "[phi-4] injected failure"
    assert info.value.body["error"]["type"] == "server_error"


async def test_backend_401_relayed(aiohttp_server, proxy):
    _, target = await backend(aiohttp_server, require_api_key="right")
    wrong = BackendTarget(target.base_url, target.model, "wrong-key", False)
    with pytest.raises(UpstreamError) as info:
        await proxy.post_json(wrong, CHAT, chat_body(), {})
    assert info.value.status == 401
    assert info.value.body["error"]["code"] == "invalid_api_key"
    assert "wrong-key" not in json.dumps(info.value.body)


async def test_backend_non_json_error_wrapped(aiohttp_server, proxy):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=503, text="upstream overloaded " + "z" * 3000)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    server = await aiohttp_server(app)
    target = BackendTarget(str(server.make_url("/v1")), "phi-4")
    with pytest.raises(UpstreamError) as info:
        await proxy.post_json(target, CHAT, chat_body(), {})
    assert info.value.status == 503
    message = info.value.body["error"]["message"]
    assert "upstream overloaded" in message and len(message) < 700


@pytest.mark.parametrize("streaming", [False, True])
async def test_backend_down_is_502_without_url(proxy, streaming):
    port = free_port()
    target = BackendTarget(f"http://127.0.0.1:{port}/v1", "phi-4", "sk-secret", False)
    with pytest.raises(UpstreamError) as info:
        if streaming:
            await collect(proxy, target, chat_body(stream=True))
        else:
            await proxy.post_json(target, CHAT, chat_body(), {})
    assert info.value.status == 502
    assert info.value.reason == "backend_unreachable"
    text = json.dumps(info.value.body) + str(info.value)
    assert "phi-4" in text
    assert str(port) not in text and "127.0.0.1" not in text and "sk-secret" not in text


async def test_slow_backend_is_504(aiohttp_server):
    _, target = await backend(aiohttp_server, delay_s=1.0)
    async with Proxy.create(read_timeout_s=0.2) as proxy:
        start = time.perf_counter()
        with pytest.raises(UpstreamError) as info:
            await proxy.post_json(target, CHAT, chat_body(), {})
        assert time.perf_counter() - start < 0.8
    assert info.value.status == 504
    assert info.value.reason == "backend_timeout"


async def test_stalled_stream_is_504_mid_stream(aiohttp_server):
    _, target = await backend(aiohttp_server, chunk_delay_s=1.0)
    async with Proxy.create(read_timeout_s=0.3) as proxy:
        events: list[bytes] = []
        with pytest.raises(UpstreamError) as info:
            async with proxy.stream(target, CHAT, chat_body(stream=True), {}) as upstream:
                async for event in upstream:
                    events.append(event)
    assert len(events) == 1  # the first chunk came through before the stall
    assert info.value.status == 504
    assert upstream.result.error is info.value


async def test_stream_aborted_by_backend(aiohttp_server, proxy):
    _, target = await backend(aiohttp_server, abort_after_chunks=3)
    events: list[bytes] = []
    with pytest.raises(UpstreamError) as info:
        async with proxy.stream(target, CHAT, chat_body(stream=True), {}) as upstream:
            async for event in upstream:
                events.append(event)
    assert len(events) == 3
    assert info.value.status == 502
    assert info.value.reason == "backend_stream_aborted"
    assert not upstream.result.ended


# ---------------------------------------------------------------------------- cancellation


async def test_client_cancel_closes_upstream_stream(aiohttp_server, proxy):
    app, target = await backend(aiohttp_server, chunk_delay_s=0.1)
    first = asyncio.Event()

    async def consume() -> None:
        async with proxy.stream(target, CHAT, chat_body("a b c d e f", stream=True), {}) as up:
            async for _event in up:
                first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    received = app[RECEIVED][0]
    # the backend sees the hang-up within about one chunk delay, not at the end (~1 s)
    await asyncio.wait_for(received.done.wait(), 0.5)
    assert received.disconnected
    assert not received.finished
    assert received.chunks_sent < 10


async def test_client_cancel_closes_upstream_request(aiohttp_server, proxy):
    app, target = await backend(aiohttp_server, delay_s=0.3)
    task = asyncio.create_task(proxy.post_json(target, CHAT, chat_body(), {}))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    received = app[RECEIVED][0]
    await asyncio.wait_for(received.done.wait(), 2)
    assert received.disconnected and not received.finished


# ---------------------------------------------------------------------------- headers


CLIENT_HEADERS = {
    "Authorization": "Bearer client-key",
    "Host": "router.example",
    "Content-Length": "999",
    "Connection": "keep-alive, X-Secret",
    "Transfer-Encoding": "chunked",
    "Keep-Alive": "timeout=5",
    "Cookie": "session=1",
    "X-Secret": "s",
    "Accept": "application/json",
    "X-Request-Id": "req-123",
    "OpenAI-Beta": "assistants=v2",
    "OpenAI-Organization": "org-client",
}


@pytest.mark.parametrize(("api_key", "forward", "expected"), [
    ("backend-key", False, "Bearer backend-key"),
    (None, True, "Bearer client-key"),
    (None, False, None),
    ("backend-key", True, "Bearer backend-key"),  # never both: the configured key wins
])
async def test_authorization_handling(aiohttp_server, proxy, api_key, forward, expected):
    app, target = await backend(aiohttp_server)
    target = BackendTarget(target.base_url, target.model, api_key, forward)
    await proxy.post_json(target, CHAT, chat_body(), CLIENT_HEADERS)
    received = app[RECEIVED][0]
    assert received.header("Authorization") == expected
    assert list(received.headers).count("Authorization") <= 1
    # OpenAI-Organization belongs to the client's credential
    assert received.header("OpenAI-Organization") == ("org-client" if expected ==
                                                      "Bearer client-key" else None)


async def test_header_filtering(aiohttp_server, proxy):
    app, target = await backend(aiohttp_server)
    async with proxy.stream(target, CHAT, chat_body(stream=True), CLIENT_HEADERS,
                            request_id="router-req-1") as upstream:
        _ = [e async for e in upstream]
    received = app[RECEIVED][0]
    assert received.header("Host") != "router.example"
    assert received.header("Content-Length") != "999"
    for name in ("Cookie", "X-Secret", "Keep-Alive", "Authorization"):
        assert received.header(name) is None
    assert received.header("Transfer-Encoding") in (None, "chunked")  # aiohttp's own framing
    assert received.header("Accept") == "application/json"
    assert received.header("OpenAI-Beta") == "assistants=v2"
    assert received.header("X-Request-Id") == "router-req-1"


async def test_the_routers_trace_headers_replace_the_clients(aiohttp_server, proxy):
    app, target = await backend(aiohttp_server)
    client = {"traceparent": "00-11111111111111111111111111111111-2222222222222222-01",
              "TraceState": "client=1"}
    ours = {"traceparent": "00-11111111111111111111111111111111-3333333333333333-01"}
    await proxy.post_json(target, CHAT, chat_body(), client, trace_headers=ours)
    async with proxy.stream(target, CHAT, chat_body(stream=True), client,
                            trace_headers=ours) as upstream:
        _ = [e async for e in upstream]
    await proxy.post_json(target, CHAT, chat_body(), client)  # tracing off: the client's go
    routed_json, routed_stream, untraced = app[RECEIVED]
    for r in (routed_json, routed_stream):
        assert r.header("traceparent") == ours["traceparent"]
        assert [k.lower() for k in r.headers].count("traceparent") == 1
        assert r.header("tracestate") is None  # it belonged to the client's span
    assert untraced.header("traceparent") == client["traceparent"]
    assert untraced.header("tracestate") == "client=1"


async def test_options_are_live(aiohttp_server, proxy):
    app, target = await backend(aiohttp_server)
    await proxy.post_json(target, CHAT, chat_body(), {})
    app[OPTIONS].fail_status = 429
    with pytest.raises(UpstreamError) as info:
        await proxy.post_json(target, CHAT, chat_body(), {})
    assert info.value.status == 429
    assert info.value.body["error"]["type"] == "invalid_request_error"


async def test_a_request_waits_a_bounded_time_for_a_busy_pool(aiohttp_server):
    """Every connection held by a slow stream: the next call is a 503 after the pool timeout,
    not a hang, and the stream holding the connection is unaffected."""
    _, target = await backend(aiohttp_server, chunk_delay_s=0.3)
    p = Proxy.create(limit=1, connect_timeout_s=2.0, read_timeout_s=5.0, pool_timeout_s=0.3)
    try:
        async with p.stream(target, CHAT, chat_body("a b c d", stream=True), {}) as held:
            t0 = time.perf_counter()
            with pytest.raises(UpstreamError) as info:
                await p.post_json(target, CHAT, chat_body("x"), {})
            waited = time.perf_counter() - t0
            events = [e async for e in held]
        assert info.value.status == 503 and info.value.reason == "backend_busy"
        assert info.value.body["error"]["code"] == "backend_busy"
        assert 0.25 < waited < 2.0
        assert events and held.result.ended
        ok = await p.post_json(target, CHAT, chat_body("x"), {})  # the slot is free again
        assert ok.status == 200
    finally:
        await p.close()


async def test_an_event_that_never_ends_is_an_error_not_a_growing_buffer(aiohttp_server, proxy):
    async def endless(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices": []}\n\n')  # one good event, then no end
        for _ in range(40):
            await resp.write(b"data: " + b"x" * 65536)
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", endless)
    server = await aiohttp_server(app)
    target = BackendTarget(str(server.make_url("/v1")), "m")
    got: list[bytes] = []
    with pytest.raises(UpstreamError) as info:
        async with proxy.stream(target, CHAT, chat_body(stream=True), {}) as up:
            async for event in up:
                got.append(event)
    assert len(got) == 1  # what came before is passed on
    assert info.value.status == 502 and info.value.reason == "backend_bad_response"
    assert "exceeded" in info.value.body["error"]["message"]
