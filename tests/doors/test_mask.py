"""``pii_action: mask`` end to end through both front doors (the HTTP door, and the real Envoy
with the ext_proc door beside it on the same runtime), with the official ``openai`` client,
streamed and not, chat and completions.

The demo backends echo the user's text (``[model] You said: ...``), which makes the round
trip visible: the backend must receive placeholders, never the values, and the client must
read its own values in the answer. A second backend, written here, streams its echo one
character per event and writes "<" as Go's encoder does (``\\u003c``), so every placeholder
reaches the router cut at every position; it also invents a placeholder, which stays.
"""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from router_svc.ops.demo_backends import RECEIVED, answer_text
from tests.conftest import BACKEND_NAMES

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_backends")]

MODELS = tuple(BACKEND_NAMES)
CARD_A = "1234-5678-9012-3456"
CARD_B = "4111 1111 1111 1111"
TEXT = (f"My credit card number is {CARD_A} and my old one was {CARD_B}. "
        f"Is {CARD_A} still valid?")
PLACEHOLDER = re.compile(r"<CREDIT_CARD_\d+>")


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0, timeout=60)


def received(backends) -> list:
    return [r for m in MODELS for r in backends[BACKEND_NAMES[m]].app[RECEIVED]]


def clear(backends) -> None:
    for m in MODELS:
        backends[BACKEND_NAMES[m]].app[RECEIVED].clear()


def no_card_in(body: Any) -> bool:
    digits = "".join(ch for ch in json.dumps(body) if ch.isdigit())
    return not any(c.replace("-", "").replace(" ", "") in digits for c in (CARD_A, CARD_B))


async def ask(url: str, endpoint: str, stream: bool, text: str, model: str = "auto",
              **extra: Any) -> tuple[str, Any]:
    """(the answer's text as the client reads it, the answer's headers)."""
    c = client(url)
    if endpoint == "chat":
        raw = await c.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": text}], stream=stream, **extra)
    else:
        raw = await c.completions.with_raw_response.create(model=model, prompt=text,
                                                           stream=stream)
    answer = raw.parse()
    if not stream:
        choice = answer.choices[0]
        return (choice.message.content if endpoint == "chat" else choice.text), raw.headers
    parts = []
    async for chunk in answer:
        if extra.get("stream_options"):  # the usage chunk the client asked for comes last
            assert (chunk.usage is not None) == (not chunk.choices)
        for choice in chunk.choices:
            parts.append((choice.delta.content if endpoint == "chat" else choice.text) or "")
    return "".join(parts), raw.headers


async def test_the_backend_sees_placeholders_and_the_client_its_own_values(envoy_stack,
                                                                          backends):
    """Both doors, chat and completions, JSON and SSE. Storing PII answers is allowed here
    (store_pii_requests), and still a masked answer is never stored nor served again."""
    stack = await envoy_stack(pii_action="mask",
                              cache={"enabled": True, "store_pii_requests": True})
    seen: list[str] = []
    for door, url in (("http", stack.http), ("envoy", stack.url)):
        for endpoint in ("chat", "completion"):
            for stream in (False, True):
                case = f"{door} {endpoint} stream={stream}"
                clear(backends)
                text, headers = await ask(url, endpoint, stream, TEXT)
                [req] = received(backends)
                assert no_card_in(req.body), f"{case}: a card number reached the backend"
                sent = req.body["messages"][0]["content"] if endpoint == "chat" \
                    else req.body["prompt"]
                # one placeholder per value: the repeated number is the same one
                names = PLACEHOLDER.findall(sent)
                assert names[:3] == ["<CREDIT_CARD_1>", "<CREDIT_CARD_2>",
                                     "<CREDIT_CARD_1>"], f"{case}: {sent!r}"
                model = headers["x-router-model"]
                assert text == answer_text(BACKEND_NAMES[model], TEXT), case
                assert headers["x-router-pii-action"] == "mask", case
                assert headers["x-router-reason"] == "pii_redact", case
                assert headers.get("x-router-cache") == "miss", case  # never stored
                seen.append(sent)
    assert len(set(seen)) == 1  # both doors send the same masked text
    async with aiohttp.ClientSession() as s, s.post(
            f"{stack.http}/api/v1/classify", json={"messages": [
                {"role": "user", "content": TEXT}]},
            headers={"Authorization": "Bearer test"}) as r:
        report = await r.json()
    assert report["decision"]["action"] == "mask"
    assert report["cache"]["store"] is False
    assert report["cache"]["why_not_store"] == "pii_masked"


# ---------------------------------------------------------------- a placeholder cut anywhere

INVENTED = " <CREDIT_CARD_9>"  # a placeholder the request never had: it stays as written


def spelled_backend() -> tuple[web.Application, list[dict]]:
    """``You said: <text>`` plus an invented placeholder, streamed one character per event,
    with "<" written as ``\\u003c``."""
    got: list[dict] = []

    def dumps(obj: dict) -> bytes:
        return json.dumps(obj).replace("<", "\\u003c").encode()

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        got.append(body)
        answer = "You said: " + body["messages"][-1]["content"] + INVENTED
        base = {"id": "chatcmpl-s", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            return web.Response(body=dumps({**base, "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": answer},
                 "finish_reason": "stop"}]}), content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunk = {**base, "object": "chat.completion.chunk"}
        for ch in answer:
            await resp.write(b"data: " + dumps({**chunk, "choices": [
                {"index": 0, "delta": {"content": ch}, "finish_reason": None}]}) + b"\n\n")
        await resp.write(b"data: " + dumps({**chunk, "choices": [
            {"index": 0, "delta": {}, "finish_reason": "stop"}]}) + b"\n\n")
        await resp.write(b"data: " + dumps({**chunk, "choices": [], "usage": {
            "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app, got


async def test_a_placeholder_cut_at_every_character_is_restored(envoy_stack, backends):
    """Per model: ``model_config.spelled.pii_policy.action: mask`` while the global
    pii_action stays ``reject``."""
    app, got = spelled_backend()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        def mutate(d: dict) -> None:
            d["model_config"]["spelled"] = {
                "pii_policy": {"allow_by_default": False, "pii_types_allowed": [],
                               "action": "mask"},
                "backend": {"base_url": f"http://127.0.0.1:{port}/v1", "model": "spelled"}}

        stack = await envoy_stack(mutate)
        usage = {"stream_options": {"include_usage": True}}
        for door, url in (("http", stack.http), ("envoy", stack.url)):
            for stream, extra in ((False, {}), (True, {}), (True, usage)):
                case = f"{door} stream={stream} {extra}"
                got.clear()
                text, headers = await ask(url, "chat", stream, TEXT, model="spelled", **extra)
                [body] = got
                assert no_card_in(body), case
                assert "<CREDIT_CARD_1>" in body["messages"][-1]["content"], case
                assert text == "You said: " + TEXT + INVENTED, f"{case}: {text!r}"
                assert headers["x-router-pii-action"] == "mask", case
        # the global action still applies to the other models
        clear(backends)
        refusal, headers = await ask(stack.http, "chat", False, TEXT, model="mistral-small3.1")
        assert headers["x-router-pii-action"] == "reject" and not received(backends)
        assert "CREDIT_CARD" in refusal
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------- every place the guard reads


async def test_no_place_the_guard_reads_leaks_when_masking(envoy_stack, backends):
    """The guard matrix's cells (``test_guard_matrix``: every place a request carries text,
    the number at its start, middle and end, look-alike spellings, a number split across
    two parts) with ``mask``: each is forwarded with placeholders, never the number, and the
    client's answer names no placeholder of its request."""
    from tests.doors.test_guard_matrix import (
        PLACES,
        cases,
        leaked,
        long_text,
        send,
        split_parts_body,
    )

    stack = await envoy_stack(pii_action="mask")
    todo = [(place, pos, PLACES[place](long_text(pos.split(",")[0], pii)), pii)
            for place, pos, pii in cases()]
    todo.append(("text parts", "split across two parts", split_parts_body(), "4111 1111"))
    bad = []
    for door, url in (("http", stack.http), ("envoy", stack.url)):
        for place, pos, (path, body), pii in todo:
            clear(backends)
            status, answer = await send(url, path, body)
            got = received(backends)
            answered = json.dumps(answer.get("choices"))
            if status != 200 or len(got) != 1 or leaked(got[0], pii):
                bad.append((door, place, pos, status, len(got)))
            elif "<CREDIT_CARD_1>" not in json.dumps(got[0].body) or \
                    "<CREDIT_CARD_1>" in answered:
                bad.append((door, place, pos, "placeholder", answered[:120]))
    assert not bad, bad
