"""One model per conversation: the pure keep/switch decision, the turn memory, the session
store and the request's shape. The pipeline's use of them is in test_pipeline.py."""

from __future__ import annotations

import dataclasses

import pytest

from router_svc.config.loading import EXAMPLE_CONFIG, Config, load_config
from router_svc.core.conversation import (
    Conversations,
    MemorySessions,
    SwitchPolicy,
    Topic,
    Turn,
    TurnMemory,
    fold,
    follow,
    prefix_keys,
    session_key,
    shape_of,
)
from router_svc.core.messages import parse_chat_request
from router_svc.core.selection import Decision

POLICY = SwitchPolicy(category_threshold=0.6, switch_confidence=0.7)
MATH, LAW = Topic("math", 0.9), Topic("law", 0.85)


def cfg(**conversation) -> Config:
    c = load_config(EXAMPLE_CONFIG)
    conv = dataclasses.replace(c.routing.conversation, **conversation)
    return dataclasses.replace(c, routing=dataclasses.replace(c.routing, conversation=conv))


# --------------------------------------------------------------------------- follow, fold


def test_a_first_turn_decides() -> None:
    assert follow(None, MATH, POLICY) == (MATH, "new")
    assert follow(None, None, POLICY) == (None, "new")


@pytest.mark.parametrize("turn", [
    Topic("psychology", 0.32),  # "Can you explain that step by step?"
    Topic("law", 0.69),  # confident enough to route alone, not to switch
    Topic("math", 0.99),  # the same category, read more confidently
    None,  # a turn with no text (an image)
])
def test_a_follow_up_keeps_the_conversation(turn: Topic | None) -> None:
    assert follow(MATH, turn, POLICY) == (MATH, "kept")


def test_a_confident_question_of_another_category_switches() -> None:
    assert follow(MATH, LAW, POLICY) == (LAW, "switched")
    assert follow(MATH, Topic("law", 0.7), POLICY)[1] == "switched"  # the bar is inclusive


def test_a_turn_below_the_category_threshold_never_switches() -> None:
    low = SwitchPolicy(category_threshold=0.6, switch_confidence=0.3)
    assert low.bar == 0.6
    assert follow(MATH, Topic("law", 0.5), low) == (MATH, "kept")


def test_a_conversation_without_a_category_takes_the_first_confident_one() -> None:
    # "hello" (other, 0.3): default_model so far; a confident question is a new topic,
    # including a confident question of the same top category.
    hello = Topic("other", 0.3)
    assert follow(hello, MATH, POLICY) == (MATH, "switched")
    assert follow(hello, Topic("other", 0.8), POLICY) == (Topic("other", 0.8), "switched")
    assert follow(hello, Topic("math", 0.5), POLICY) == (hello, "kept")


def test_fold_replays_a_conversation() -> None:
    turns = [MATH, Topic("other", 0.1), LAW, Topic("math", 0.65)]
    assert fold(None, turns, POLICY) == LAW
    assert fold(None, [], POLICY) is None


# --------------------------------------------------------------------------- the request


def chat(*messages: dict) -> dict:
    return {"model": "auto", "messages": list(messages)}


def user(text) -> dict:
    return {"role": "user", "content": text}


def shape(body: dict):
    req = parse_chat_request(body)
    return shape_of(req, {s.path: s.text for s in req.segments})


def test_the_shape_holds_every_user_turn_in_order() -> None:
    s = shape(chat({"role": "system", "content": "be brief"}, user("q1"),
                   {"role": "assistant", "content": "a1"},
                   user([{"type": "text", "text": "q2a"}, {"type": "text", "text": "q2b"}]),
                   {"role": "assistant", "content": "a2"}, user("q3")))
    assert (s.earlier, s.last, s.tool_loop) == (("q1", "q2a\nq2b"), "q3", False)


def test_a_turn_without_text_is_left_out_and_a_last_one_is_empty() -> None:
    image = [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]
    s = shape(chat(user("q1"), user(image), user(image)))
    assert (s.earlier, s.last) == (("q1",), "")


@pytest.mark.parametrize("role", ["tool", "function"])
def test_a_request_ending_with_tool_results_is_a_tool_loop(role: str) -> None:
    calls = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    result = {"role": role, "content": "42", **({"tool_call_id": "c1"} if role == "tool"
                                                 else {"name": "f"})}
    s = shape(chat(user("q1"), calls, result))
    assert (s.earlier, s.last, s.tool_loop) == ((), "q1", True)


def test_prefix_keys_are_per_prefix_and_unambiguous() -> None:
    a = prefix_keys(["ab", "c"])
    assert a[0] == prefix_keys(["ab"])[0] and len(set(a)) == 2
    assert prefix_keys(["a", "bc"])[1] != a[1]  # same characters, other turns


# --------------------------------------------------------------------------- the stores


def test_the_turn_memory_is_a_bounded_lru() -> None:
    m = TurnMemory(capacity=2)
    k = prefix_keys(["q1", "q2", "q3"])
    m.put(k[0], MATH)
    m.put(k[1], LAW)
    assert m.longest(k) == (2, LAW)
    assert m.get(k[0]) == MATH  # now the most recently used
    m.put(k[2], MATH)
    assert len(m) == 2 and m.get(k[1]) is None  # the least recently used went
    assert m.longest(k[:2]) == (1, MATH)
    assert TurnMemory(4).longest(k) == (0, None)


async def test_sessions_expire_and_are_bounded() -> None:
    now = [0.0]
    s = MemorySessions(capacity=2, ttl_s=10, clock=lambda: now[0])
    await s.put("a", MATH)
    now[0] = 9.9
    assert await s.get("a") == MATH
    await s.put("a", LAW)  # a new turn renews the TTL
    now[0] = 19
    assert await s.get("a") == LAW
    now[0] = 20
    assert await s.get("a") is None and len(s) == 0
    for key in "bcd":
        await s.put(key, MATH)
    assert len(s) == 2 and await s.get("b") is None


def test_the_session_key_is_a_digest_of_the_header_or_the_user() -> None:
    body = {"user": "alice"}
    assert session_key(cfg(), {"x-session-id": "s1"}, body) is None  # not configured
    c = cfg(session_header="X-Session-Id", session_from_user=True)
    k1 = session_key(c, {"x-session-id": "s1"}, body)  # a plain dict, lower-case names
    assert k1 is not None and "s1" not in k1 and len(k1) == 64
    assert session_key(c, {"X-SESSION-ID": " s1 "}, {}) == k1
    assert session_key(c, {}, body) not in (None, k1)  # the header first, then the user
    assert session_key(c, {}, {"user": "s1"}) != k1  # a user is not a session id
    assert session_key(cfg(session_header="x-session-id"), {}, body) is None


# --------------------------------------------------------------------------- one turn


def test_relabel_says_why_unless_the_pii_policy_changed_the_model() -> None:
    d = Decision("phi4", "math", 0.9, "category", "route", frozenset())
    assert Turn("kept", MATH).relabel(d).reason == "conversation"
    assert Turn("kept", MATH, tool_loop=True).relabel(d).reason == "tool_loop"
    assert Turn("switched", MATH).relabel(d).reason == "topic_switch"
    assert Turn("new", MATH).relabel(d) is d
    pii = dataclasses.replace(d, reason="pii_fallback")
    assert Turn("kept", MATH).relabel(pii) is pii


def test_headers_name_the_conversation_and_its_model() -> None:
    c = cfg()
    assert Turn("new", MATH).headers(c) == {"x-router-conversation": "new"}
    h = Turn("switched", LAW, previous=MATH, source="history").headers(c)
    assert h == {"x-router-conversation": "switched", "x-router-conversation-from": "history",
                 "x-router-conversation-model": "phi4"}
    # the model the conversation had for this caller's key
    h = Turn("kept", MATH, previous=MATH, source="session").headers(
        c, frozenset({"gemma3:27b"}))
    assert h["x-router-conversation-model"] == "gemma3:27b"


async def test_the_memory_spares_classifying_old_turns_again() -> None:
    conv = Conversations(cfg())
    body = chat(user("q1"), {"role": "assistant", "content": "a1"}, user("q2"),
                {"role": "assistant", "content": "a2"}, user("q3"))
    req = parse_chat_request(body)
    texts = {s.path: s.text for s in req.segments}
    p = await conv.begin(req, texts)
    assert p is not None and p.context == ["q1", "q2"]
    turn = await conv.decide(p, Topic("other", 0.2), [MATH, Topic("other", 0.1)])
    assert (turn.verdict, turn.topic, turn.previous) == ("kept", MATH, MATH)
    body["messages"] += [{"role": "assistant", "content": "a3"}, user("q4")]
    req = parse_chat_request(body)
    p = await conv.begin(req, {s.path: s.text for s in req.segments})
    assert p is not None and p.context == [] and p.start == MATH and p.covered == 3


async def test_conversations_can_be_turned_off() -> None:
    req = parse_chat_request(chat(user("q1"), user("q2")))
    assert await Conversations(cfg(enabled=False)).begin(req, {}) is None
