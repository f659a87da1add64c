"""Failover through the HTTP door: the official ``openai`` client, the real router and Triton,
demo backends told to fail. A routed request whose backend fails before any byte reached the
client goes to the category's next model; a named model is never swapped."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from router_svc.ops.demo_backends import OPTIONS, RECEIVED

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_backends")]

MATH = "What is the derivative of f(x) = x³ + 2x² - 5x + 7?"  # phi4, then mistral, gemma


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0, timeout=60)


def got(backends, model: str) -> int:
    return len(backends[model].app[RECEIVED])


async def chat(url: str, model: str = "auto", stream: bool = False):
    messages = [{"role": "user", "content": MATH}]
    c = client(url)
    if not stream:
        raw = await c.chat.completions.with_raw_response.create(model=model, messages=messages)
        return raw.parse().choices[0].message.content, raw.headers
    raw = await c.chat.completions.with_raw_response.create(model=model, messages=messages,
                                                            stream=True)
    text = "".join([ch.choices[0].delta.content or "" async for ch in raw.parse()
                    if ch.choices])
    return text, raw.headers


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_failing_backend_hands_the_request_to_the_next_model(router_factory, backends,
                                                                     stream):
    url = await router_factory()
    backends["phi4"].app[OPTIONS].fail_status = 503
    text, h = await chat(url, stream=stream)
    assert text.startswith("[mistral-small3.1]")
    assert h["x-router-model"] == "mistral-small3.1"
    assert h["x-router-fallback"] == "phi4 -> mistral-small3.1 (503)"
    assert got(backends, "phi4") == 1 and got(backends, "mistral-small3.1") == 1
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as r:
        metrics = await r.text()
    assert ('router_fallbacks_total{from_model="phi4",reason="backend_error",'
            'to_model="mistral-small3.1"} 1.0') in metrics


async def test_a_named_model_is_never_swapped(router_factory, backends):
    url = await router_factory()
    backends["phi4"].app[OPTIONS].fail_status = 503
    with pytest.raises(openai.InternalServerError) as e:
        await chat(url, model="phi4")
    assert e.value.status_code == 503
    assert got(backends, "mistral-small3.1") == 0


async def test_one_retry_by_default_and_a_client_error_is_not_retried(router_factory, backends):
    url = await router_factory()
    for m in ("phi4", "mistral-small3.1"):
        backends[m].app[OPTIONS].fail_status = 503
    with pytest.raises(openai.InternalServerError):
        await chat(url)
    assert got(backends, "gemma3:27b") == 0  # failover.max_retries: 1
    for m in ("phi4", "mistral-small3.1"):
        backends[m].app[OPTIONS].fail_status = None
    backends["phi4"].app[OPTIONS].fail_status = 400  # the request's own fault: anywhere
    with pytest.raises(openai.BadRequestError):
        await chat(url)
    assert got(backends, "mistral-small3.1") == 1  # only the 503 round reached it


async def test_the_breaker_skips_a_failing_backend(router_factory, backends):
    url = await router_factory(failover={"breaker_failures": 2, "breaker_cooldown_s": 60})
    backends["phi4"].app[OPTIONS].fail_status = 503
    for _ in range(2):
        _, h = await chat(url)
        assert h["x-router-fallback"] == "phi4 -> mistral-small3.1 (503)"
    _, h = await chat(url)  # open: phi4 is not even tried
    assert h["x-router-fallback"] == "phi4 -> mistral-small3.1 (circuit open)"
    assert got(backends, "phi4") == 2 and got(backends, "mistral-small3.1") == 3
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as r:
        assert 'router_breaker_opens_total{model="phi4"} 1.0' in await r.text()


async def test_no_failover_once_the_answer_has_started(router_factory, backends):
    url = await router_factory()
    backends["phi4"].app[OPTIONS].abort_after_chunks = 2
    with pytest.raises(openai.APIError):
        await chat(url, stream=True)
    assert got(backends, "mistral-small3.1") == 0  # bytes had reached the client
