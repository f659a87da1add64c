"""One model per conversation through the front door: the official ``openai`` client, the real
router (``create_app`` on a real port), the real Triton model and the demo backends, which
show where each turn went."""

from __future__ import annotations

import openai
import pytest

from router_svc.ops.demo_backends import RECEIVED

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_backends")]

MODELS = ("phi4", "mistral-small3.1", "gemma3:27b")
QUESTION = "What is the derivative of f(x) = x^3 + 2x^2?"
FOLLOW_UPS = ("Can you explain that step by step?", "Thanks! And what about the second one?")
CARD = "4111 1111 1111 1111"


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0, timeout=60)


async def conversation_router(router_factory, **conversation) -> str:
    # A high switch threshold: these tests are about keeping a conversation's model; whether a
    # turn reads as another topic is the model's business (router-svc eval conversations).
    settings = {"switch_confidence": 0.95, **conversation}

    def mutate(d: dict) -> None:
        d["routing"] = {**d.get("routing", {}), "conversation": settings}

    return await router_factory(mutate=mutate)


async def chat(url: str, messages: list[dict], **kw):
    raw = await client(url).chat.completions.with_raw_response.create(
        model="auto", messages=messages, **kw)
    return raw.parse(), raw.headers


def received_by(backends) -> list[str]:
    """The demo backends that received a request, in no particular order."""
    return [m for m in MODELS if backends[m].app[RECEIVED]]


async def test_follow_ups_keep_the_model_that_started_the_conversation(router_factory,
                                                                       backends):
    url = await conversation_router(router_factory)
    messages = [{"role": "user", "content": QUESTION}]
    first, h = await chat(url, messages)
    model = h["x-router-model"]
    assert h["x-router-conversation"] == "new"
    for text in FOLLOW_UPS:
        messages += [{"role": "assistant", "content": first.choices[0].message.content},
                     {"role": "user", "content": text}]
        _, h = await chat(url, messages)
        assert h["x-router-conversation"] == "kept" and h["x-router-model"] == model
        assert h["x-router-conversation-model"] == model
        assert h["x-router-reason"] in ("conversation", "category", "low_confidence")
    assert received_by(backends) == [model]
    # streamed, the same
    raw = await client(url).chat.completions.with_raw_response.create(
        model="auto", messages=[*messages, {"role": "assistant", "content": "ok"},
                                {"role": "user", "content": "Why?"}], stream=True)
    assert [c async for c in raw.parse()]
    assert raw.headers["x-router-conversation"] == "kept"
    assert raw.headers["x-router-model"] == model


def tool_loop(result: str) -> list[dict]:
    return [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "plot", "arguments": '{"f": "x^3 + 2x^2"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": result}]


async def test_tool_results_go_to_the_model_that_issued_the_calls(router_factory):
    url = await conversation_router(router_factory)
    _, h = await chat(url, [{"role": "user", "content": QUESTION}])
    _, loop = await chat(url, tool_loop("The plot is saved as plot.png."))
    assert loop["x-router-model"] == h["x-router-model"]
    assert loop["x-router-conversation"] == "kept"
    assert loop["x-router-reason"] == "tool_loop"


async def test_pii_in_a_tool_result_is_refused_and_the_headers_say_why(router_factory,
                                                                       backends):
    url = await conversation_router(router_factory)
    answer, h = await chat(url, tool_loop(f"The card on file is {CARD}."))
    assert answer.choices[0].finish_reason == "content_filter"
    assert h["x-router-reason"] == "pii_reject" and "CREDIT_CARD" in h["x-router-pii"]
    assert h["x-router-conversation"] == "kept"
    assert not received_by(backends)


async def test_a_session_pins_the_model_for_clients_that_send_only_the_last_turn(
        router_factory):
    url = await conversation_router(router_factory, session_from_user=True)
    _, h = await chat(url, [{"role": "user", "content": QUESTION}], user="alice")
    model = h["x-router-model"]
    _, h = await chat(url, [{"role": "user", "content": FOLLOW_UPS[0]}], user="alice")
    assert h["x-router-conversation"] == "kept" and h["x-router-model"] == model
    assert h["x-router-conversation-from"] == "session"
    _, other = await chat(url, [{"role": "user", "content": FOLLOW_UPS[0]}], user="bob")
    assert other["x-router-conversation"] == "new"


async def test_a_replica_that_never_saw_the_conversation_decides_the_same(router_factory):
    """The earlier turns are categorised in the same model call (one of them read in
    paragraphs, as a last turn would be)."""
    url = await conversation_router(router_factory)
    _, h = await chat(url, [{"role": "user", "content": f"Please be brief.\n\n{QUESTION}"}])
    cold = await conversation_router(router_factory)
    messages = [{"role": "user", "content": f"Please be brief.\n\n{QUESTION}"},
                {"role": "assistant", "content": "3x^2 + 4x"},
                {"role": "user", "content": FOLLOW_UPS[0]},
                {"role": "assistant", "content": "Sure: ..."},
                {"role": "user", "content": FOLLOW_UPS[1]}]
    _, again = await chat(cold, messages)
    assert again["x-router-conversation"] == "kept"
    assert again["x-router-model"] == again["x-router-conversation-model"] == h["x-router-model"]
