"""http1.py: the backend client against real servers (aiohttp's, and raw asyncio ones for the
misbehaving cases): keep-alive reuse, stale connections, framing, limits, timeouts, TLS."""

from __future__ import annotations

import asyncio
import ssl

import pytest
import trustme
from aiohttp import web

from router_svc.backend.http1 import Http1Client, Http1Error, Origin, split_url

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Peers:
    """An aiohttp app that records which connection (client port) each request came on."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def app(self, delay_s: float = 0.0) -> web.Application:
        async def echo(request: web.Request) -> web.Response:
            self.ports.append(request.transport.get_extra_info("peername")[1])
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(delay_s)
                return web.Response(body=await request.read() + b"!",
                                    headers={"X-Seen-Host": request.host,
                                             "X-Seen-Auth": request.headers.get("Authorization",
                                                                                "")})
            finally:
                self.in_flight -= 1

        async def stream(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for i in range(int(request.query.get("n", "3"))):
                await resp.write(b"x" * int(request.query.get("size", "10")) + b"%d\n" % i)
                await asyncio.sleep(float(request.query.get("gap", "0")))
            await resp.write_eof()
            return resp

        app = web.Application()
        app.router.add_post("/echo", echo)
        app.router.add_post("/stream", stream)
        return app


async def raw_server(handler) -> tuple[asyncio.AbstractServer, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head + await reader.readexactly(length)


async def test_sequential_requests_reuse_one_connection(aiohttp_server):
    peers = Peers()
    server = await aiohttp_server(peers.app())
    client = Http1Client()
    try:
        for i in range(3):
            resp = await client.request("POST", str(server.make_url("/echo")),
                                        {"Authorization": "Bearer k"}, b"hi%d" % i)
            assert resp.status == 200 and await resp.read() == b"hi%d!" % i
            assert resp.headers["x-seen-auth"] == "Bearer k"  # headers: any case
            assert resp.headers["X-Seen-Host"] == f"127.0.0.1:{server.port}"
    finally:
        await client.close()
    assert len(peers.ports) == 3 and len(set(peers.ports)) == 1


async def test_a_connection_the_server_closed_while_idle_is_not_used(aiohttp_server):
    peers = Peers()
    server = await aiohttp_server(peers.app(), keepalive_timeout=0.05)
    client = Http1Client()
    try:
        for _ in range(2):
            resp = await client.request("POST", str(server.make_url("/echo")), {}, b"a")
            assert await resp.read() == b"a!"
            await asyncio.sleep(0.3)  # the server closes the idle connection meanwhile
    finally:
        await client.close()
    assert len(set(peers.ports)) == 2


@pytest.mark.parametrize(("method", "headers", "resent"), [
    ("POST", {}, False),  # RFC 9110 9.2.2: the server may have run it; the client decides
    ("POST", {"Idempotency-Key": "k1"}, True),
    ("GET", {}, True),
])
async def test_reused_connection_dropped_without_an_answer(method, headers, resent):
    """The race a keep-alive pool must survive: the server closes a pooled connection just
    as the next request goes out. Nothing came back: an idempotent request is sent again,
    a plain POST is not (it fails, and the proxy answers 502)."""
    conns = []

    async def handler(reader, writer):
        conns.append(writer)
        n = 0
        while True:
            try:
                await read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            n += 1
            if n == 2:  # the second request on this connection: drop it unanswered
                writer.close()
                break
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    server, base = await raw_server(handler)
    client = Http1Client()
    try:
        resp = await client.request(method, base + "/x", headers, b"{}")
        assert await resp.read() == b"ok"
        if resent:
            resp = await client.request(method, base + "/x", headers, b"{}")
            assert await resp.read() == b"ok"
        else:
            with pytest.raises(Http1Error, match="closed before the answer"):
                await client.request(method, base + "/x", headers, b"{}")
    finally:
        await client.close()
        server.close()
    assert len(conns) == (2 if resent else 1)


async def test_fresh_connection_dropped_without_an_answer_fails():
    async def handler(reader, writer):
        await read_request(reader)
        writer.close()

    server, base = await raw_server(handler)
    client = Http1Client()
    try:
        with pytest.raises(Http1Error, match="closed before the answer"):
            await client.request("POST", base + "/x", {}, b"{}")
    finally:
        await client.close()
        server.close()


@pytest.mark.parametrize("answer, body, reused", [
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc", b"abc", False),
    (b"HTTP/1.0 200 OK\r\n\r\nto the end", b"to the end", False),  # delimited by the close
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
     b"abcde", True),
])
async def test_framing(answer, body, reused):
    conns = []

    async def handler(reader, writer):
        conns.append(writer)
        try:
            while True:
                await read_request(reader)
                writer.write(answer)
                await writer.drain()
                if b"200 OK\r\n\r\n" in answer or b"close" in answer:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    server, base = await raw_server(handler)
    client = Http1Client()
    try:
        for _ in range(2):
            resp = await client.request("POST", base + "/x", {}, b"{}")
            assert await resp.read() == body
    finally:
        await client.close()
        server.close()
    assert len(conns) == (1 if reused else 2)


async def test_streamed_body_arrives_in_pieces_and_large_bodies_survive_backpressure(
        aiohttp_server):
    server = await aiohttp_server(Peers().app())
    client = Http1Client()
    try:
        resp = await client.request("POST", str(server.make_url("/stream?n=3&gap=0.05")), {},
                                    b"")
        pieces = [p async for p in resp.iter_any()]
        assert b"".join(pieces) == b"x" * 10 + b"0\n" + b"x" * 10 + b"1\n" + b"x" * 10 + b"2\n"
        assert len(pieces) == 3 and resp.at_eof()
        resp.release()
        # 40 x 100 kB, read slowly: the client stops reading past its buffer and resumes
        resp = await client.request("POST", str(server.make_url("/stream?n=40&size=100000")),
                                    {}, b"")
        total = 0
        async for p in resp.iter_any():
            total += len(p)
            await asyncio.sleep(0.001)
        assert total == sum(100_000 + len(b"%d\n" % i) for i in range(40))
    finally:
        await client.close()


async def test_limit_bounds_connections_in_use(aiohttp_server):
    peers = Peers()
    server = await aiohttp_server(peers.app(delay_s=0.05))
    client = Http1Client(limit=2)

    async def one(i: int) -> bytes:
        resp = await client.request("POST", str(server.make_url("/echo")), {}, b"%d" % i)
        return await resp.read()

    try:
        assert await asyncio.gather(*(one(i) for i in range(6))) == [b"%d!" % i for i in range(6)]
    finally:
        await client.close()
    assert peers.max_in_flight == 2 and len(set(peers.ports)) == 2


async def test_timeouts_and_refusals(aiohttp_server):
    server = await aiohttp_server(Peers().app(delay_s=1.0))
    client = Http1Client(read_timeout_s=0.1)
    try:
        with pytest.raises(TimeoutError):
            await client.request("POST", str(server.make_url("/echo")), {}, b"")
        with pytest.raises(Http1Error, match="cannot connect"):
            await client.request("POST", "http://127.0.0.1:9/x", {}, b"")
        with pytest.raises(ValueError, match="line break"):
            await client.request("POST", str(server.make_url("/echo")),
                                 {"X-Evil": "a\r\nInjected: 1"}, b"")
        with pytest.raises(ValueError, match="not an http"):
            await client.request("POST", "ftp://h/x", {}, b"")
    finally:
        await client.close()


async def test_cancelling_a_request_closes_its_connection():
    closed = asyncio.Event()

    async def handler(reader, writer):
        await read_request(reader)
        await reader.read()  # until the client goes away
        closed.set()

    server, base = await raw_server(handler)
    client = Http1Client()
    try:
        task = asyncio.create_task(client.request("POST", base + "/x", {}, b"{}"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(closed.wait(), 2)
    finally:
        await client.close()
        server.close()


async def test_a_call_cancelled_mid_body_frees_its_slot():
    """limit=1: a call cancelled while its body is still coming must give its connection and
    slot back, or every later call would wait for ever."""
    from router_svc.backend.proxy import Proxy
    from router_svc.core.selection import BackendTarget

    async def handler(reader, writer):
        try:
            while True:
                req = await read_request(reader)
                if b"slow" in req:  # headers and half the body, then nothing
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}   ")
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    server, base = await raw_server(handler)
    proxy = Proxy.create(limit=1, read_timeout_s=5.0)
    target = BackendTarget(base + "/v1", "m")
    try:
        task = asyncio.create_task(proxy.post_json(target, "/chat/completions", {"x": "slow"}))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        result = await asyncio.wait_for(proxy.post_json(target, "/chat/completions", {}), 2)
        assert result.status == 200 and result.body == {}
    finally:
        await proxy.close()
        server.close()


async def test_https(aiohttp_server):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    server = await aiohttp_server(Peers().app(), ssl=server_ctx)
    url = f"https://127.0.0.1:{server.port}/echo"
    client = Http1Client(ssl_context=client_ctx)
    try:
        for _ in range(2):
            resp = await client.request("POST", url, {}, b"tls")
            assert await resp.read() == b"tls!"
    finally:
        await client.close()
    untrusting = Http1Client()  # the system CAs do not know this one
    try:
        with pytest.raises(Http1Error, match="cannot connect"):
            await untrusting.request("POST", url, {}, b"")
    finally:
        await untrusting.close()


async def test_split_url():
    assert split_url("http://h/v1/chat?x=1") == (Origin("http", "h", 80), "/v1/chat?x=1")
    o, t = split_url("https://api.example.com/v1")
    assert t == "/v1"
    assert o == Origin("https", "api.example.com", 443) and o.host_header == "api.example.com"
    assert split_url("http://[::1]:8000/")[0].host_header == "[::1]:8000"
    assert split_url("http://h:8000")[1] == "/"
