"""The demo backends speak OpenAI: plain and streamed answers, usage, fault injection."""

from __future__ import annotations

import json

import aiohttp
import openai
import pytest

from router_svc.ops.demo_backends import (
    OPTIONS,
    RECEIVED,
    BackendOptions,
    answer_text,
    create_backend_app,
    run_backends,
    split_chunks,
)

# pytest-aiohttp's fixtures run on the session loop (asyncio_default_fixture_loop_scope).
pytestmark = pytest.mark.asyncio(loop_scope="session")

CHAT = "/v1/chat/completions"


def chat_body(text: str = "hello there world", **extra: object) -> dict:
    return {"model": "phi-4", "messages": [{"role": "system", "content": "be brief"},
                                           {"role": "user", "content": text}], **extra}


def sse_payloads(raw: bytes) -> list[str]:
    assert raw.endswith(b"\n\n")
    events = raw.decode().split("\n\n")[:-1]
    assert all(e.startswith("data: ") for e in events)
    return [e[len("data: "):] for e in events]


async def test_chat_completion_echoes_and_records(aiohttp_client):
    app = create_backend_app("phi-4", BackendOptions())
    client = await aiohttp_client(app)
    resp = await client.post(CHAT, json=chat_body(), headers={"Authorization": "Bearer abc"})
    assert resp.status == 200
    body = await resp.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "phi-4"
    message = body["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "[phi-4] You said: hello there world"}
    assert body["choices"][0]["finish_reason"] == "stop"
    # prompt: "be brief" + "hello there world" = 5 words; completion: 6 words
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    [received] = app[RECEIVED]
    assert received.body == chat_body()
    assert received.header("authorization") == "Bearer abc"
    assert received.finished and not received.disconnected


async def test_last_user_text_from_parts_and_truncated(aiohttp_client):
    client = await aiohttp_client(create_backend_app("m"))
    long_text = "x" * 500
    body = {"model": "m", "messages": [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": [{"type": "text", "text": long_text},
                                     {"type": "image_url", "image_url": {"url": "u"}}]},
    ]}
    resp = await client.post(CHAT, json=body)
    content = (await resp.json())["choices"][0]["message"]["content"]
    assert content == "[m] You said: " + "x" * 200


async def test_completions_and_models(aiohttp_client):
    client = await aiohttp_client(create_backend_app("llama"))
    resp = await client.post("/v1/completions", json={"model": "llama", "prompt": "two words"})
    body = await resp.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "[llama] You said: two words"
    assert body["usage"]["prompt_tokens"] == 2
    models = await (await client.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == ["llama"]


@pytest.mark.parametrize("include_usage", [False, True])
async def test_stream_format(aiohttp_client, include_usage):
    client = await aiohttp_client(create_backend_app("phi-4"))
    extra: dict = {"stream": True}
    if include_usage:
        extra["stream_options"] = {"include_usage": True}
    resp = await client.post(CHAT, json=chat_body("a b c", **extra))
    assert resp.status == 200
    assert resp.content_type == "text/event-stream"
    payloads = sse_payloads(await resp.read())
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    if include_usage:
        *chunks, last = chunks
        assert last["choices"] == []
        assert last["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
        assert all(c["usage"] is None for c in chunks)
    else:
        assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks]
    assert len([p for p in pieces if p]) >= 3
    assert "".join(pieces) == answer_text("phi-4", "a b c")


async def test_split_chunks_rejoins():
    for text in ["", "one", "[m] You said: a  b ", "x y z"]:
        assert "".join(split_chunks(text)) == text


async def test_fail_status_and_api_key(aiohttp_client):
    app = create_backend_app("m", BackendOptions(require_api_key="k1"))
    client = await aiohttp_client(app)
    resp = await client.post(CHAT, json=chat_body())
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "invalid_api_key"
    ok = await client.post(CHAT, json=chat_body(), headers={"Authorization": "Bearer k1"})
    assert ok.status == 200
    app[OPTIONS].fail_status = 503  # options are live
    resp = await client.post(CHAT, json=chat_body(), headers={"Authorization": "Bearer k1"})
    assert resp.status == 503
    error = (await resp.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "server_error"


async def test_strict_model(aiohttp_client):
    client = await aiohttp_client(create_backend_app("m", BackendOptions(strict_model=True)))
    resp = await client.post(CHAT, json=chat_body())  # asks for phi-4
    assert resp.status == 404


async def test_abort_after_chunks(aiohttp_client):
    app = create_backend_app("m", BackendOptions(abort_after_chunks=2))
    client = await aiohttp_client(app)
    resp = await client.post(CHAT, json=chat_body(stream=True))
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    assert app[RECEIVED][0].chunks_sent == 2
    assert app[RECEIVED][0].disconnected


async def test_run_backends_with_openai_client():
    async with await run_backends([("phi-4", "127.0.0.1", 0), ("llama", "127.0.0.1", 0)]) as run:
        assert run["phi-4"].port != run["llama"].port
        client = openai.AsyncOpenAI(base_url=run["llama"].base_url, api_key="unused")
        try:
            answer = await client.chat.completions.create(
                model="llama", messages=[{"role": "user", "content": "hi"}])
            assert answer.choices[0].message.content == "[llama] You said: hi"
            assert answer.usage is not None and answer.usage.prompt_tokens == 1
            stream = await client.chat.completions.create(
                model="llama", messages=[{"role": "user", "content": "hi you"}], stream=True,
                stream_options={"include_usage": True})
            text, usage = "", None
            async for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                usage = chunk.usage or usage
            assert text == "[llama] You said: hi you"
            assert usage is not None and usage.completion_tokens == 5
        finally:
            await client.close()
