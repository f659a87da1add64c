"""Failure behaviour: Triton down or restarting, backends down, slow or failing, clients that
hang up mid-stream. Every failure is an OpenAI-format error with a meaningful status, and the
router keeps serving (and recovers by itself) afterwards.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import aiohttp
import openai
import pytest

from router_svc.ops.demo_backends import OPTIONS, RECEIVED, answer_text
from router_svc.triton.launcher import TritonServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_backends")]

CHAT = "/v1/chat/completions"
MATH = "What is the derivative of f(x) = x³ + 2x² - 5x + 7?"
GREETING = "Hello, how are you today?"


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0, timeout=30)


def assert_openai_error(payload: dict, status: int) -> dict:
    assert set(payload) == {"error"}, payload
    err = payload["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert err["message"]
    assert err["type"] == ("invalid_request_error" if status < 500 else "server_error")
    return err


async def post_chat(s: aiohttp.ClientSession, url: str, text: str = MATH, model: str = "auto",
                    **extra):
    async with s.post(f"{url}{CHAT}", json={"model": model, "messages": user(text), **extra}) as r:
        return r.status, dict(r.headers), await r.json()


async def metric(s: aiohttp.ClientSession, url: str, line_prefix: str) -> float:
    """The value of the first metric line starting with ``line_prefix`` (0 when absent)."""
    async with s.get(f"{url}/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith(line_prefix):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def assert_healthy(s: aiohttp.ClientSession, url: str) -> None:
    async with s.get(f"{url}/health") as r:
        assert r.status == 200
    status, headers, answer = await post_chat(s, url, MATH)
    assert status == 200, answer
    assert answer["choices"][0]["message"]["content"] == answer_text(headers["x-router-model"],
                                                                     MATH)


# ---------------------------------------------------------------- Triton down, restarting


@pytest.fixture(scope="module")
def own_triton(trained_triton, trained_model_dir, tmp_path_factory):
    """A Triton of this module's own, on fixed ports so it can be restarted in place.

    Depends on ``trained_triton`` only so the session's Triton starts first (one at a time on a
    small machine)."""
    server = TritonServer(trained_model_dir, work_dir=tmp_path_factory.mktemp("triton_faults"),
                          http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def on_error(triton_url: str, routing: str, pii: str):
    def mutate(data):
        data["triton"]["url"] = triton_url
        data["classifier"]["on_error"] = {"routing": routing, "pii": pii}
    return mutate


async def test_triton_outage_policies_and_recovery(router_factory, backends, own_triton):
    """Three routers on one Triton, one per failure policy. Triton stops: each answers as its
    policy says. Triton starts again on the same ports: each recovers without a restart."""
    block = await router_factory(on_error(own_triton.grpc_url, "default_model", "block"))
    allow = await router_factory(on_error(own_triton.grpc_url, "default_model", "allow"))
    closed = await router_factory(on_error(own_triton.grpc_url, "fail_closed", "allow"))
    async with aiohttp.ClientSession() as s:
        for url in (block, allow, closed):
            status, headers, _ = await post_chat(s, url)
            assert status == 200 and headers["x-router-model"] == "phi4"
            assert "x-router-pii-check" not in headers

        await own_triton.astop()
        try:
            # pii: block -> 503, says why in the body, a header and the failure metric.
            status, headers, body = await post_chat(s, block)
            assert status == 503, body
            err = assert_openai_error(body, 503)
            assert "on_error.pii" in err["message"]
            assert headers.get("x-router-pii-check") == "unavailable"
            assert await metric(s, block, 'router_classifier_failures_total{stage="triton"}') >= 1
            assert await metric(s, block, 'router_errors_total{reason="classifier_unavailable"}') \
                >= 1
            # An explicit model is still PII-checked, so it fails closed too.
            status, _, body = await post_chat(s, block, model="phi4")
            assert status == 503, body
            with pytest.raises(openai.InternalServerError) as exc:
                await client(block).chat.completions.create(model="auto", messages=user(MATH))
            assert exc.value.status_code == 503

            # pii: allow, routing: default_model -> the default model, marked unchecked.
            status, headers, body = await post_chat(s, allow)
            assert status == 200, body
            assert headers["x-router-model"] == "mistral-small3.1"
            assert headers["x-router-reason"] == "classifier_unavailable"
            assert headers["x-router-pii-check"] == "unchecked"
            assert body["choices"][0]["message"]["content"] == answer_text("mistral-small3.1",
                                                                           MATH)
            (req,) = backends["mistral-small3.1"].app[RECEIVED]
            assert req.body["model"] == "mistral-small3.1"
            assert await metric(s, allow, 'router_classifier_failures_total{stage="triton"}') >= 1
            # ... streaming too.
            stream = await client(allow).chat.completions.create(
                model="auto", messages=user(MATH), stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text == answer_text("mistral-small3.1", MATH)
            # ... and an explicit model goes where it was asked, unchecked.
            status, headers, body = await post_chat(s, allow, model="gemma3:27b")
            assert status == 200 and headers["x-router-model"] == "gemma3:27b"
            assert headers["x-router-pii-check"] == "unchecked"

            # routing: fail_closed -> 503 for the alias; an explicit model still works.
            status, headers, body = await post_chat(s, closed)
            assert status == 503, body
            assert "fail_closed" in assert_openai_error(body, 503)["message"]
            status, headers, body = await post_chat(s, closed, model="phi4")
            assert status == 200 and headers["x-router-pii-check"] == "unchecked"

            for url, classify_status in ((block, 503), (allow, 200), (closed, 503)):
                async with s.get(f"{url}/ready") as r:
                    assert r.status == 503
                async with s.get(f"{url}/health") as r:
                    assert r.status == 200
                async with s.post(f"{url}/api/v1/classify",
                                  json={"messages": user(MATH)}) as r:
                    assert r.status == classify_status
                    report = await r.json()
                if classify_status == 503:
                    assert_openai_error(report, 503)
                else:
                    assert report["pii_check"] == "unchecked"
                    assert report["decision"]["model"] == "mistral-small3.1"
        finally:
            await own_triton.astart()

        # Triton is back on the same ports: every router recovers on its own.
        t0 = time.monotonic()
        for url in (block, allow, closed):
            while True:
                status, headers, body = await post_chat(s, url)
                if status == 200 and "x-router-pii-check" not in headers:
                    break
                assert time.monotonic() - t0 < 30, f"no recovery after 30 s: {status} {body}"
                await asyncio.sleep(0.5)
            assert headers["x-router-model"] == "phi4"
            assert headers["x-router-category"] == "math"
            async with s.get(f"{url}/ready") as r:
                assert r.status == 200


async def test_router_is_ready_within_a_second_or_so_after_a_30_s_outage(router_factory,
                                                                          own_triton):
    """gRPC's reconnect backoff grows with the outage; the client caps it (triton.client
    CHANNEL_ARGS), so the router follows Triton back at once however long it was away."""
    url = await router_factory(on_error(own_triton.grpc_url, "default_model", "block"))
    async with aiohttp.ClientSession() as s:
        status, _, _ = await post_chat(s, url)
        assert status == 200
        await own_triton.astop()
        try:
            outage_end = time.monotonic() + 30
            while time.monotonic() < outage_end:  # requests during the outage grow the backoff
                status, _, _ = await post_chat(s, url)
                assert status == 503
                await asyncio.sleep(2)
        finally:
            await own_triton.astart()  # returns once Triton answers as ready
        back = time.monotonic()
        while True:
            async with s.get(f"{url}/ready") as r:
                if r.status == 200:
                    break
            assert time.monotonic() - back < 5, "the router did not follow Triton back"
            await asyncio.sleep(0.05)
        ready_after = time.monotonic() - back
        status, _, _ = await post_chat(s, url)
        assert status == 200
        print(f"\nready {ready_after:.2f} s after Triton's return from a 30 s outage")
        assert ready_after < 2.5, ready_after


async def test_triton_down_at_start_up_fails_with_a_clear_error(trained_model_dir, backends):
    """Start-up waits ``startup_timeout_s`` for the model, then fails naming Triton's address:
    ``router-svc serve`` exits with that message rather than serving without a classifier."""
    from aiohttp import web

    from router_svc.config.loading import parse_config
    from router_svc.doors.http.app import create_app
    from tests.conftest import ROOT, example_config_data, wire_config

    url = f"127.0.0.1:{free_port()}"  # nothing listens here
    data = wire_config(example_config_data(), url, backends, trained_model_dir / "tokenizer.json")
    app = create_app(parse_config(data, ROOT), startup_timeout_s=1.5)
    runner = web.AppRunner(app)
    t0 = time.monotonic()
    with pytest.raises(Exception) as exc:
        await runner.setup()
    await runner.cleanup()
    assert time.monotonic() - t0 < 10
    assert url in str(exc.value), str(exc.value)
    assert "triton" in str(exc.value).lower()


# ---------------------------------------------------------------- backends


def _mentions_backend(text: str, backends) -> bool:
    return any(str(b.port) in text or b.base_url in text for b in backends.backends.values())


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_backend_down_is_502_without_its_url(router_factory, backends, stream):
    port = free_port()  # closed

    def phi4_down(data):
        data["model_config"]["phi4"]["backend"]["base_url"] = f"http://127.0.0.1:{port}/v1"

    # The error itself, not a fallback to the next model.
    url = await router_factory(phi4_down, failover={"max_retries": 0})
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}{CHAT}", json={"model": "auto", "messages": user(MATH),
                                                "stream": stream}) as r:
            assert r.status == 502
            raw = await r.text()
            err = assert_openai_error(json.loads(raw), 502)
        assert err["code"] == "backend_unreachable"
        assert "phi4" in err["message"]
        assert str(port) not in raw and "127.0.0.1" not in raw
        assert await metric(s, url, 'router_errors_total{reason="backend_unreachable"}') == 1
        assert await metric(s, url, 'router_requests_total{model="phi4",status="502"}') == 1
        # Other models are unaffected.
        status, headers, _ = await post_chat(s, url, GREETING)
        assert status == 200 and headers["x-router-model"] == "mistral-small3.1"
    with pytest.raises(openai.InternalServerError) as exc:
        await client(url).chat.completions.create(model="auto", messages=user(MATH))
    assert exc.value.status_code == 502


async def test_slow_backend_is_504(router_factory, backends):
    url = await router_factory(lambda d: d["proxy"].update(read_timeout_s=0.5),
                               failover={"max_retries": 0})
    backends["phi4"].app[OPTIONS].delay_s = 3
    async with aiohttp.ClientSession() as s:
        t0 = time.monotonic()
        status, _, body = await post_chat(s, url)
        assert status == 504, body
        assert time.monotonic() - t0 < 2.5
        err = assert_openai_error(body, 504)
        assert err["code"] == "backend_timeout"
        assert not _mentions_backend(json.dumps(body), backends)
        async with s.post(f"{url}{CHAT}", json={"model": "auto", "messages": user(MATH),
                                                "stream": True}) as r:
            assert r.status == 504
            assert_openai_error(await r.json(), 504)
        assert await metric(s, url, 'router_errors_total{reason="backend_timeout"}') == 2
        backends["phi4"].app[OPTIONS].delay_s = 0
        await assert_healthy(s, url)


async def test_backend_stalling_mid_stream_ends_with_an_error_event(router_factory, backends):
    url = await router_factory(lambda d: d["proxy"].update(read_timeout_s=0.5))
    backends["phi4"].app[OPTIONS].chunk_delay_s = 3
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}{CHAT}", json={"model": "auto", "messages": user(MATH),
                                                "stream": True}) as r:
            assert r.status == 200  # the headers had gone before the stall
            raw = (await r.read()).decode()
        events = [e[6:] for e in raw.split("\n\n") if e.startswith("data: ")]
        last = json.loads(events[-1])
        assert assert_openai_error(last, 504)["code"] == "backend_timeout"
        backends["phi4"].app[OPTIONS].chunk_delay_s = 0
        await assert_healthy(s, url)


async def test_backend_aborting_mid_stream_ends_with_an_error_event(router_factory, backends):
    url = await router_factory()
    backends["phi4"].app[OPTIONS].abort_after_chunks = 3
    stream = await client(url).chat.completions.create(model="auto", messages=user(MATH),
                                                       stream=True)
    with pytest.raises(openai.APIError) as exc:
        _ = [c async for c in stream]
    assert "closed the stream early" in str(exc.value)
    backends["phi4"].app[OPTIONS].abort_after_chunks = None
    async with aiohttp.ClientSession() as s:
        await assert_healthy(s, url)


@pytest.mark.parametrize("status", [500, 503, 429, 400])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_backend_error_status_is_relayed(router_factory, backends, status, stream):
    url = await router_factory(failover={"max_retries": 0})  # the error, not a fallback
    backends["phi4"].app[OPTIONS].fail_status = status
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}{CHAT}", json={"model": "auto", "messages": user(MATH),
                                                "stream": stream}) as r:
            assert r.status == status
            assert r.headers["x-router-model"] == "phi4"  # where it went, as on success
            assert r.headers["x-router-category"] == "math"
            err = assert_openai_error(await r.json(), status)
        assert err["message"] == "[phi4] injected failure"
        assert await metric(s, url, f'router_requests_total{{model="phi4",status="{status}"}}') \
            == 1
        backends["phi4"].app[OPTIONS].fail_status = None
        await assert_healthy(s, url)


async def test_backend_5xx_through_the_openai_client(router_factory, backends):
    url = await router_factory(failover={"max_retries": 0})
    backends["phi4"].app[OPTIONS].fail_status = 503
    with pytest.raises(openai.InternalServerError) as exc:
        await client(url).chat.completions.create(model="auto", messages=user(MATH))
    assert exc.value.status_code == 503
    assert exc.value.body["message"] == "[phi4] injected failure"


# ---------------------------------------------------------------- the client hangs up


async def test_client_hanging_up_mid_stream_closes_the_backend_call(router_factory, backends):
    url = await router_factory()
    backends["phi4"].app[OPTIONS].chunk_delay_s = 0.3
    async with aiohttp.ClientSession() as s:
        r = await s.post(f"{url}{CHAT}", json={"model": "auto", "messages": user(MATH),
                                               "stream": True})
        assert r.status == 200
        first = await r.content.readuntil(b"\n\n")
        assert first.startswith(b"data: {")
        r.close()  # hang up with the answer half way
        (req,) = backends["phi4"].app[RECEIVED]
        await asyncio.wait_for(req.done.wait(), timeout=5)
        assert req.disconnected
        assert not req.finished
        assert req.chunks_sent < len(answer_text("phi4", MATH).split()) + 2
        assert await metric(s, url, 'router_errors_total{reason="client_disconnected"}') >= 1
        backends["phi4"].app[OPTIONS].chunk_delay_s = 0
        await assert_healthy(s, url)


async def test_a_client_that_stops_reading_releases_the_backend_stream(router_factory, backends):
    """proxy.client_write_timeout_s: a client whose socket stays full is cut off, and the
    backend stream it held is closed, instead of waiting on it for ever."""
    url = await router_factory(lambda d: d["proxy"].update(client_write_timeout_s=0.5))
    backends["phi4"].app[OPTIONS].repeat_answer = 40_000  # megabytes of events
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"model": "phi4", "messages": user("hi"), "stream": True}).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, int(port)))
    await loop.sock_sendall(sock, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Type: application/json\r\nContent-Length: "
                            + str(len(body)).encode() + b"\r\n\r\n" + body)
    try:  # never read: the backend must see the router hang up on it
        received = await wait_for_request(backends["phi4"])
        await asyncio.wait_for(received.done.wait(), 30)
        assert received.disconnected and not received.finished
    finally:
        sock.close()
        backends["phi4"].app[OPTIONS].repeat_answer = 1
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{url}/metrics") as r:
            assert 'reason="client_disconnected"' in await r.text()
        await assert_healthy(s, url)


async def wait_for_request(backend, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while not backend.app[RECEIVED]:
        assert time.monotonic() < deadline, "the request never reached the backend"
        await asyncio.sleep(0.02)
    return backend.app[RECEIVED][-1]
