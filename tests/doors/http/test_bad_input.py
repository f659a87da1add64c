"""The bad-input matrix: every malformed request gets a 4xx OpenAI-format error, never a 500,
and the router is still healthy afterwards. Odd but valid input (content arrays with images,
unicode, emoji, right-to-left text, control characters) is answered and passed through exactly.
"""

from __future__ import annotations

import gzip
import json
import re

import aiohttp
import pytest

from router_svc.ops.demo_backends import RECEIVED, answer_text

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_backends")]

CHAT = "/v1/chat/completions"
MATH = "What is the derivative of f(x) = x³ + 2x² - 5x + 7?"
JSON = {"Content-Type": "application/json"}
# A 1x1 transparent PNG.
PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkY"
       "AAAAAYAAjCB0C8AAAAASUVORK5CYII=")


def body(**kw) -> bytes:
    return json.dumps({"model": "auto", **kw}).encode()


def msgs(content="Hi", role="user") -> list:
    return [{"role": role, "content": content}]


def assert_openai_error(payload: dict, status: int) -> dict:
    assert set(payload) == {"error"}, payload
    err = payload["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert err["type"] == ("invalid_request_error" if status < 500 else "server_error")
    return err


async def assert_healthy(s: aiohttp.ClientSession, url: str) -> None:
    async with s.get(f"{url}/health") as r:
        assert r.status == 200
    async with s.post(f"{url}{CHAT}", json={"model": "auto", "messages": msgs(MATH)}) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["choices"][0]["message"]["content"] == answer_text("phi4", MATH)


# (id, method, path, headers, raw body, status, param, code)
CASES = [
    ("invalid_json", "POST", CHAT, JSON, b'{"model": "auto", "messages": [', 400, None, None),
    ("not_utf8", "POST", CHAT, JSON, b'{"model": "\xff\xfe"}', 400, None, None),
    ("empty_body", "POST", CHAT, JSON, b"", 400, None, None),
    ("body_not_object", "POST", CHAT, JSON, b"[1, 2, 3]", 400, None, None),
    ("nested_too_deep", "POST", CHAT, JSON,
     b'{"model": "auto", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, None, None),
    ("nan_temperature", "POST", CHAT, JSON,
     b'{"model": "auto", "messages": [{"role": "user", "content": "Hi"}], "temperature": NaN}',
     400, None, None),
    ("text_plain", "POST", CHAT, {"Content-Type": "text/plain"}, body(messages=msgs()), 415,
     None, "unsupported_media_type"),
    ("form_encoded", "POST", CHAT, {"Content-Type": "application/x-www-form-urlencoded"},
     b"model=auto&messages=hi", 415, None, "unsupported_media_type"),
    ("missing_messages", "POST", CHAT, JSON, body(), 400, "messages", None),
    ("empty_messages", "POST", CHAT, JSON, body(messages=[]), 400, "messages", None),
    ("messages_not_list", "POST", CHAT, JSON, body(messages="Hi"), 400, "messages",
     "invalid_type"),
    ("message_not_object", "POST", CHAT, JSON, body(messages=["Hi"]), 400, "messages[0]",
     "invalid_type"),
    ("content_number", "POST", CHAT, JSON, body(messages=msgs(42)), 400, "messages[0].content",
     "invalid_type"),
    ("content_missing", "POST", CHAT, JSON, body(messages=[{"role": "user"}]), 400,
     "messages[0].content", None),
    ("content_part_not_object", "POST", CHAT, JSON, body(messages=msgs(["Hi"])), 400,
     "messages[0].content[0]", "invalid_type"),
    ("text_part_without_text", "POST", CHAT, JSON, body(messages=msgs([{"type": "text"}])), 400,
     "messages[0].content[0].text", "invalid_type"),
    ("role_missing", "POST", CHAT, JSON, body(messages=[{"content": "Hi"}]), 400,
     "messages[0].role", None),
    ("role_number", "POST", CHAT, JSON, body(messages=msgs(role=7)), 400, "messages[0].role",
     "invalid_type"),
    ("unknown_role", "POST", CHAT, JSON, body(messages=msgs(role="wizard")), 400,
     "messages[0].role", "invalid_value"),
    ("stream_string", "POST", CHAT, JSON, body(messages=msgs(), stream="yes"), 400, "stream",
     "invalid_type"),
    ("stream_options_string", "POST", CHAT, JSON,
     body(messages=msgs(), stream=True, stream_options="usage"), 400, "stream_options",
     "invalid_type"),
    ("model_missing", "POST", CHAT, JSON, json.dumps({"messages": msgs()}).encode(), 400,
     "model", None),
    ("model_number", "POST", CHAT, JSON, body(messages=msgs()) .replace(b'"auto"', b"5"), 400,
     "model", "invalid_type"),
    ("model_empty", "POST", CHAT, JSON, body(messages=msgs()).replace(b'"auto"', b'""'), 400,
     "model", None),
    ("unknown_model", "POST", CHAT, JSON, body(messages=msgs()).replace(b'"auto"', b'"gpt-9"'),
     404, "model", "model_not_found"),
    ("completion_prompt_missing", "POST", "/v1/completions", JSON, body(), 400, "prompt", None),
    ("completion_prompt_number", "POST", "/v1/completions", JSON, body(prompt=3.5), 400,
     "prompt", "invalid_type"),
    ("completion_token_ids", "POST", "/v1/completions", JSON, body(prompt=[1, 2, 3]), 400,
     "prompt", "unsupported_prompt"),
    ("completion_unknown_model", "POST", "/v1/completions", JSON,
     json.dumps({"model": "nope", "prompt": "Hi"}).encode(), 404, "model", "model_not_found"),
    # JSON can escape an unpaired surrogate; it is no text (and must not skip the PII check).
    ("lone_surrogate", "POST", CHAT, JSON,
     b'{"model": "auto", "messages": [{"role": "user", "content": "bad \\ud800 text"}]}', 400,
     "messages[0].content", "invalid_value"),
    ("lone_surrogate_completion", "POST", "/v1/completions", JSON,
     b'{"model": "phi4", "prompt": ["ok", "\\udfff"]}', 400, "prompt[1]", "invalid_value"),
    ("classify_invalid_json", "POST", "/api/v1/classify", JSON, b"{", 400, None, None),
    ("classify_empty_messages", "POST", "/api/v1/classify", JSON, body(messages=[]), 400,
     "messages", None),
    ("unknown_path", "POST", "/v1/embeddings", JSON, body(input="Hi"), 404, None, "not_found"),
    ("responses_api", "POST", "/v1/responses", JSON, body(input="Hi"), 404, None, "not_found"),
    ("temperature_string", "POST", CHAT, JSON, body(messages=msgs(), temperature="hot"), 400,
     "temperature", "invalid_type"),
    ("top_p_range", "POST", CHAT, JSON, body(messages=msgs(), top_p=3), 400, "top_p",
     "invalid_value"),
    # refused on its length alone, then on its tokens (read off the event loop)
    ("too_much_text", "POST", CHAT, JSON, body(messages=msgs("lorem ipsum " * 30000)), 413,
     None, "too_much_text"),
    ("too_many_tokens", "POST", CHAT, JSON, body(messages=msgs("lorem ipsum " * 15000)), 413,
     None, "too_much_text"),
    ("unknown_path_get", "GET", "/nope", {}, b"", 404, None, "not_found"),
    ("wrong_method_get", "GET", CHAT, {}, b"", 405, None, None),
    ("wrong_method_put", "PUT", "/v1/models", JSON, b"{}", 405, None, None),
]


@pytest.mark.parametrize(("method", "path", "headers", "data", "status", "param", "code"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_bad_input_is_a_4xx_openai_error(router_factory, backends, method, path, headers,
                                               data, status, param, code):
    url = await router_factory()
    async with aiohttp.ClientSession() as s:
        async with s.request(method, f"{url}{path}", data=data, headers=headers) as r:
            assert r.status == status, await r.text()
            assert r.content_type == "application/json"
            err = assert_openai_error(await r.json(), status)
        if param is not None:
            assert err["param"] == param, err
        if code is not None:
            assert err["code"] == code, err
        if status == 405:
            assert "POST" in r.headers.get("Allow", "") or "GET" in r.headers.get("Allow", "")
        assert all(not b.app[RECEIVED] for b in backends.backends.values())
        await assert_healthy(s, url)


async def test_body_over_the_size_limit_is_413(router_factory, backends):
    url = await router_factory(lambda d: d["proxy"].update(max_body_bytes=4096))
    big = body(messages=msgs("lorem ipsum " * 1000))
    assert len(big) > 4096
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}{CHAT}", data=big, headers=JSON) as r:
            assert r.status == 413
            err = assert_openai_error(await r.json(), 413)
            assert "4096" in err["message"]
        async with s.post(f"{url}/api/v1/classify", data=big, headers=JSON) as r:
            assert r.status == 413
        # Just under the limit is fine.
        ok = body(messages=msgs(MATH))
        async with s.post(f"{url}{CHAT}", data=ok, headers=JSON) as r:
            assert r.status == 200
        async with s.get(f"{url}/metrics") as r:
            metrics = await r.text()
        assert re.search(r'^router_requests_total\{model="[^"]*",status="413"\} 1\.0$', metrics,
                         re.M), metrics
        assert all(not b.app[RECEIVED] for b in backends.backends.values() if b.name != "phi4")
        await assert_healthy(s, url)


async def test_the_size_limit_counts_the_body_after_decompression(router_factory, backends):
    """A few KB of gzip that inflate past proxy.max_body_bytes: 413, and /health answers."""
    url = await router_factory(lambda d: d["proxy"].update(max_body_bytes=64 * 1024))
    bomb = gzip.compress(body(messages=msgs("a" * 4_000_000)))
    assert len(bomb) < 8 * 1024
    small = gzip.compress(body(messages=msgs(MATH)))
    zipped = {**JSON, "Content-Encoding": "gzip"}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}{CHAT}", data=bomb, headers=zipped) as r:
            assert r.status == 413
            err = assert_openai_error(await r.json(), 413)
            assert "max_body_bytes" in err["message"]
        async with s.post(f"{url}{CHAT}", data=small, headers=zipped) as r:
            assert r.status == 200  # a compressed body within the limit is read as sent
        assert not any(b.app[RECEIVED] for b in backends.backends.values() if b.name != "phi4")
        await assert_healthy(s, url)


async def test_missing_content_type_is_accepted_as_json(router_factory):
    """curl -d without -H and raw HTTP clients send no (or a default) Content-Type."""
    url = await router_factory()
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}{CHAT}", data=body(messages=msgs(MATH)),
                          skip_auto_headers=["Content-Type"]) as r:
            assert r.status == 200, await r.text()
        async with s.post(f"{url}{CHAT}", data=body(messages=msgs(MATH)),
                          headers={"Content-Type": "application/json; charset=utf-8"}) as r:
            assert r.status == 200, await r.text()


async def test_image_parts_pass_through_and_text_parts_are_classified(router_factory,
                                                                      backends):
    url = await router_factory()
    content = [
        {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
        {"type": "text", "text": MATH},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ]
    async with aiohttp.ClientSession() as s, s.post(
            f"{url}{CHAT}", json={"model": "auto", "messages": msgs(content)}) as r:
        assert r.status == 200, await r.text()
        assert r.headers["x-router-category"] == "math"  # from the text part
        assert r.headers["x-router-model"] == "phi4"
        answer = await r.json()
    (req,) = backends["phi4"].app[RECEIVED]
    assert req.body["messages"][0]["content"] == content  # untouched, in order
    assert answer["choices"][0]["message"]["content"] == answer_text("phi4", MATH)


async def test_pii_in_a_text_part_next_to_an_image_is_redacted(router_factory, backends):
    url = await router_factory(pii_action="redact")
    image = {"type": "image_url", "image_url": {"url": PNG}}
    content = [image, {"type": "text", "text": "My credit card number is 1234-5678-9012-3456."}]
    async with aiohttp.ClientSession() as s, s.post(
            f"{url}{CHAT}", json={"model": "auto", "messages": msgs(content)}) as r:
        assert r.status == 200, await r.text()
        assert r.headers["x-router-pii"] == "CREDIT_CARD"
        model = r.headers["x-router-model"]
    (req,) = backends[model].app[RECEIVED]
    sent = req.body["messages"][0]["content"]
    assert sent[0] == image
    assert sent[1] == {"type": "text", "text": "My credit card number is <CREDIT_CARD>."}


async def test_image_only_message_is_routed_to_the_default_model(router_factory, backends):
    url = await router_factory()
    content = [{"type": "image_url", "image_url": {"url": PNG}}]
    async with aiohttp.ClientSession() as s, s.post(
            f"{url}{CHAT}", json={"model": "auto", "messages": msgs(content)}) as r:
        assert r.status == 200, await r.text()
        assert r.headers["x-router-model"] == "mistral-small3.1"
    (req,) = backends["mistral-small3.1"].app[RECEIVED]
    assert req.body["messages"][0]["content"] == content


ODD_TEXTS = {
    "emoji": "Can you explain this? 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷 — ✓",
    "rtl": "مرحبا، كيف حالك اليوم؟ שלום, מה שלומך? \u200fمرحبا\u200e",
    "bidi_controls": "abc\u202edcba\u202c \u2066isolate\u2069 \u061c",
    "control_chars": "tab\there\r\nnull\x00bell\x07esc\x1b[31mred\x1b[0m del\x7f \u0085 \u2028",
    "zero_width": "zero\u200bwidth\u200cjoin\u200d\ufeffbom",
    "combining": "cafe\u0301 nai\u0308ve man\u0303ana \U0001d54f\U0001d560 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ﷽",
    "cjk": "你好，今天怎么样？こんにちは 안녕하세요",
    "noncharacters": "\ufffe\uffff\U0010ffff",
}


@pytest.mark.parametrize("text", list(ODD_TEXTS.values()), ids=list(ODD_TEXTS))
@pytest.mark.parametrize("ensure_ascii", [True, False], ids=["escaped", "utf8"])
async def test_odd_text_is_answered_and_passed_through_exactly(router_factory, backends, text,
                                                               ensure_ascii):
    """Classified (no error) and forwarded with the exact code points. Every model allows all
    PII here: a spurious entity in odd text must not turn this into a refusal test."""
    def allow_all(data):
        for m in data["model_config"].values():
            m["pii_policy"] = {"allow_by_default": True}

    url = await router_factory(allow_all)
    messages = [{"role": "system", "content": text}, {"role": "user", "content": text}]
    data = json.dumps({"model": "auto", "messages": messages}, ensure_ascii=ensure_ascii)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}{CHAT}", data=data.encode("utf-8"), headers=JSON) as r:
            assert r.status == 200, await r.text()
            model = r.headers["x-router-model"]
            answer = await r.json()
        (req,) = backends[model].app[RECEIVED]
        assert req.body["messages"] == messages  # the exact code points
        assert answer["choices"][0]["message"]["content"] == answer_text(model, text)
        # The stream carries it too, chunk by chunk.
        async with s.post(f"{url}{CHAT}", json={"model": model, "messages": messages,
                                                "stream": True}) as r:
            assert r.status == 200
            raw = await r.read()
        pieces = []
        for line in raw.decode("utf-8").split("\n\n"):
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                pieces.append(chunk["choices"][0]["delta"].get("content") or "")
        assert "".join(pieces) == answer_text(model, text)
        await assert_healthy(s, url)
