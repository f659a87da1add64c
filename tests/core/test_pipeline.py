"""The Router pipeline with a fake classifier: parse, classify, select, PII policy. No Triton."""

from __future__ import annotations

import dataclasses

import pytest

from router_svc.classify.batcher import QueueFull
from router_svc.config.loading import EXAMPLE_CONFIG, Config, load_config
from router_svc.core.conversation import MemorySessions
from router_svc.core.errors import (
    BadRequest,
    Overloaded,
    RouterError,
    UnknownModel,
    UnscannableContent,
)
from router_svc.core.metrics import Metrics, render
from router_svc.core.pipeline import ClassifierUnavailable, Router, classify_report
from tests.fakes import FakeClassifier

CARD = "4111 1111 1111 1111"


def config(**changes) -> Config:
    cfg = load_config(EXAMPLE_CONFIG)
    for key, value in changes.items():
        if key == "on_error_pii":
            on = dataclasses.replace(cfg.classifier.on_error, pii=value)
            cfg = dataclasses.replace(
                cfg, classifier=dataclasses.replace(cfg.classifier, on_error=on))
        else:
            cfg = dataclasses.replace(cfg, **{key: value})
    return cfg


def router(cfg: Config | None = None, clf: FakeClassifier | None = None) -> Router:
    cfg = cfg or config()
    return Router(cfg, clf or FakeClassifier(), Metrics.create(models=list(cfg.model_config)),
                  environ={})


def chat(text: str, model: str = "auto", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def test_confident_category_picks_its_best_model() -> None:
    r = await router().route("chat", chat("What is the derivative of x^3?"))
    d = r.decision
    assert (d.model, d.category, d.reason, d.action) == ("phi4", "math", "category", "route")
    assert r.body["model"] == "phi4" and r.target is not None
    assert r.target.base_url == "http://127.0.0.1:9101/v1"
    assert r.headers()["x-router-model"] == "phi4" and r.pii_status == "checked"


async def test_low_confidence_goes_to_the_default_model() -> None:
    r = await router().route("chat", chat("hello there"))
    assert r.decision.model == config().default_model
    assert r.decision.reason != "category"


async def test_pii_no_model_may_see_is_refused_without_a_target() -> None:
    r = await router().route("chat", chat(f"derivative of my card {CARD}"))
    assert r.decision.action == "reject" and r.target is None
    assert r.rejection is not None
    assert r.rejection["choices"][0]["finish_reason"] == "content_filter"
    assert r.headers()["x-router-pii"] == "CREDIT_CARD"


async def test_allowed_pii_is_routed_to_the_category_model() -> None:
    r = await router().route("chat", chat("derivative question from ann@example.com"))
    assert r.decision.model == "phi4" and r.decision.action == "route"  # phi4 allows e-mail


async def test_redaction_replaces_exactly_the_value() -> None:
    r = await router(config(pii_action="redact")).route(
        "chat", chat(f"derivative, card {CARD} ok"))
    assert r.decision.action == "redact"
    assert r.body["messages"][0]["content"] == "derivative, card <CREDIT_CARD> ok"
    assert CARD not in str(r.body)


async def test_every_message_is_scanned_not_only_the_last() -> None:
    body = {"model": "auto", "messages": [
        {"role": "system", "content": f"card {CARD}"},
        {"role": "user", "content": "the derivative of x^2?"}]}
    clf = FakeClassifier()
    r = await router(clf=clf).route("chat", body)
    assert clf.calls == [("the derivative of x^2?", [f"card {CARD}", "the derivative of x^2?"])]
    assert r.decision.action == "reject"
    assert classify_report(r)["pii"][0]["role"] == "system"


async def test_a_model_that_allows_all_pii_needs_no_classification() -> None:
    cfg = config()
    phi4 = cfg.model_config["phi4"]
    policy = dataclasses.replace(phi4.pii_policy, allow_by_default=True)
    cfg = dataclasses.replace(cfg, model_config={
        **cfg.model_config, "phi4": dataclasses.replace(phi4, pii_policy=policy)})
    clf = FakeClassifier()
    r = await router(cfg, clf).route("chat", chat(f"card {CARD}", model="phi4"))
    assert clf.calls == [] and r.pii_status == "skipped" and r.decision.model == "phi4"


async def test_classifier_down_fails_closed_by_default(caplog) -> None:
    r = router(clf=FakeClassifier(fail=ConnectionError("down")))
    with caplog.at_level("WARNING", logger="router_svc.core.pipeline"):
        for _ in range(3):
            with pytest.raises(ClassifierUnavailable) as e:
                await r.route("chat", chat("derivative"))
    assert e.value.status == 503 and e.value.headers == {"x-router-pii-check": "unavailable"}
    assert "ConnectionError" in e.value.message  # says why, not only that it failed
    logged = [m for m in caplog.messages if m.startswith("classification failed")]
    assert len(logged) == 1  # in the log, at most once per 10 s


async def test_classifier_down_with_allow_is_reported_unchecked() -> None:
    cfg = config(on_error_pii="allow")
    r = await router(cfg, FakeClassifier(fail=ConnectionError("down"))).route(
        "chat", chat("derivative"))
    assert r.pii_status == "unchecked" and r.headers()["x-router-pii-check"] == "unchecked"
    assert r.decision.model == cfg.default_model


async def test_a_full_queue_is_429_not_a_classifier_outage() -> None:
    with pytest.raises(Overloaded):
        await router(clf=FakeClassifier(fail=QueueFull("full"))).route("chat", chat("hi"))


@pytest.mark.parametrize(("body", "error"), [
    (chat("hi", model="gpt-9"), UnknownModel),
    (chat("\ud800"), BadRequest),
    ({"model": "auto", "messages": "hi"}, BadRequest),
])
async def test_client_mistakes_are_4xx(body, error) -> None:
    with pytest.raises(error) as e:
        await router().route("chat", body)
    assert 400 <= e.value.status < 500


async def test_completion_prompt_list_is_classified_joined() -> None:
    clf = FakeClassifier()
    r = await router(clf=clf).route("completion", {"model": "auto",
                                                   "prompt": ["the derivative", "of x"]})
    assert clf.calls[0][0] == "the derivative\nof x" and r.decision.model == "phi4"


async def test_a_card_split_across_parts_is_found_and_each_piece_redacted() -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "derivative, my card 4111 1111"},
        {"type": "text", "text": "1111 1111 thanks"}]}]}
    r = await router().route("chat", body)
    assert r.decision.action == "reject" and "CREDIT_CARD" in r.decision.pii_types
    red = await router(config(pii_action="redact")).route("chat", body)
    parts = red.body["messages"][0]["content"]
    assert parts[0]["text"] == "derivative, my card <CREDIT_CARD>"
    assert parts[1]["text"] == "<CREDIT_CARD> thanks"


async def test_look_alike_digits_are_found_and_the_original_characters_redacted() -> None:
    card = "４１１１ １１１１ １１１１ １１１１"
    r = await router(config(pii_action="redact")).route(
        "chat", chat(f"derivative of x, card {card}\u200b!"))
    assert r.decision.pii_types == frozenset({"CREDIT_CARD"})
    assert r.body["messages"][0]["content"] == "derivative of x, card <CREDIT_CARD>\u200b!"
    (_, e), = r.entities
    assert e.text == card


async def test_tool_call_arguments_stay_json_when_redacted() -> None:
    import json

    args = json.dumps({"card": "4111 1111 1111 1111", "amount": 3})
    body = {"model": "auto", "messages": [
        {"role": "user", "content": "derivative please"},
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                              "function": {"name": "pay", "arguments": args}}]},
        {"role": "tool", "tool_call_id": "c", "content": "done"}]}
    r = await router(config(pii_action="redact")).route("chat", body)
    sent = r.body["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(sent) == {"card": "<CREDIT_CARD>", "amount": 3}


async def test_unscannable_content_is_partial_or_refused_as_configured() -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is the derivative here"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}
    r = await router().route("chat", body)
    assert r.pii_status == "partial" and r.headers()["x-router-pii-check"] == "partial"
    cfg = config()
    pm = dataclasses.replace(cfg.classifier.pii_model, unscannable="reject")
    cfg = dataclasses.replace(cfg, classifier=dataclasses.replace(cfg.classifier, pii_model=pm))
    with pytest.raises(UnscannableContent) as e:  # phi4 allows e-mail: only a no-PII model
        await router(cfg).route("chat", {**body, "model": "mistral-small3.1"})
    assert e.value.status == 400 and "image_url" in e.value.message
    assert (await router(cfg).route("chat", body)).decision.model == "phi4"


def limited(**limits) -> Config:
    cfg = config()
    return dataclasses.replace(cfg, limits=dataclasses.replace(cfg.limits, **limits))


@pytest.mark.parametrize(("limits", "body", "status", "words"), [
    ({"max_messages": 2}, {"model": "auto", "messages": [{"role": "user", "content": "a"}] * 3},
     400, "limits.max_messages"),
    ({"max_texts": 2}, {"model": "auto", "messages": [{"role": "user", "content": "a"}] * 3},
     413, "limits.max_texts"),
    ({"max_scan_tokens": 10}, chat("word " * 11), 413, "limits.max_scan_tokens"),
    ({"max_scan_tokens": 10}, chat("x" * 81), 413, "81 characters"),
])
async def test_limits_are_4xx_naming_the_limit_before_any_inference(limits, body, status,
                                                                    words) -> None:
    clf = FakeClassifier()
    with pytest.raises(RouterError) as e:
        await router(limited(**limits), clf).route("chat", body)
    assert e.value.status == status and words in e.value.message
    assert "characters" in e.value.message or "tokens" in e.value.message \
        or "messages" in e.value.message or "texts" in e.value.message


# --------------------------------------------------------------------------- conversations

MATH_Q = "What is the derivative of f(x) = x^3 + 2x^2?"  # math, 0.9 (tests.fakes.TOPICS)
FOLLOW_UP = "Can you explain that step by step?"  # other, 0.1
LAW_Q = "Is a verbal contract binding?"  # law, 0.85


def conv_config(**conversation) -> Config:
    cfg = config()
    conv = dataclasses.replace(cfg.routing.conversation, **conversation)
    return dataclasses.replace(cfg, routing=dataclasses.replace(cfg.routing, conversation=conv))


def turns(*texts: str, model: str = "auto") -> dict:
    """A chat body with these user turns, an assistant answer between them."""
    messages: list[dict] = []
    for t in texts:
        messages += [{"role": "user", "content": t}, {"role": "assistant", "content": "ok"}]
    return {"model": model, "messages": messages[:-1]}


async def test_a_follow_up_keeps_the_conversations_model() -> None:
    r = await router().route("chat", turns(MATH_Q, FOLLOW_UP))
    d, h = r.decision, r.headers()
    assert (d.model, d.category, d.reason) == ("phi4", "math", "conversation")
    assert h["x-router-conversation"] == "kept" and h["x-router-reason"] == "conversation"
    assert h["x-router-conversation-model"] == "phi4"
    assert h["x-router-conversation-from"] == "history"
    assert classify_report(r)["category"]["name"] == "other"  # the turn alone
    off = await router(conv_config(enabled=False)).route("chat", turns(MATH_Q, FOLLOW_UP))
    assert off.decision.model == config().default_model  # what the issue saw
    assert "x-router-conversation" not in off.headers()


async def test_a_first_turn_is_new_and_routed_on_its_own() -> None:
    r = await router().route("chat", chat(MATH_Q))
    assert r.decision.reason == "category"
    assert r.headers()["x-router-conversation"] == "new"
    assert "x-router-conversation-model" not in r.headers()


async def test_a_confident_question_of_another_category_switches() -> None:
    r = await router().route("chat", turns(MATH_Q, FOLLOW_UP, LAW_Q))
    h = r.headers()
    assert (r.decision.model, r.decision.reason) == ("gemma3:27b", "topic_switch")
    assert h["x-router-conversation"] == "switched"
    assert h["x-router-conversation-model"] == "phi4"
    # ... unless the threshold asks for more
    r = await router(conv_config(switch_confidence=0.9)).route(
        "chat", turns(MATH_Q, FOLLOW_UP, LAW_Q))
    assert (r.decision.model, r.headers()["x-router-conversation"]) == ("phi4", "kept")


async def test_earlier_turns_are_classified_once_in_the_same_call() -> None:
    clf = FakeClassifier()
    rt = router(clf=clf)
    r = await rt.route("chat", turns(MATH_Q, FOLLOW_UP, "Why?"))  # a replica that never saw it
    assert r.decision.model == "phi4" and len(clf.calls) == 1
    assert clf.context_calls == [[MATH_Q, FOLLOW_UP]]
    r = await rt.route("chat", turns(MATH_Q, FOLLOW_UP, "Why?", "And the next one?"))
    assert r.decision.model == "phi4" and len(clf.calls) == 2
    assert clf.context_calls == [[MATH_Q, FOLLOW_UP]]  # remembered: nothing more to read


async def test_a_tool_loop_goes_on_with_the_model_that_issued_the_calls() -> None:
    body = {"model": "auto", "messages": [
        {"role": "user", "content": MATH_Q},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
         "function": {"name": "plot", "arguments": "{\"f\": \"x^3\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "hello, the plot is ready"}]}
    r = await router().route("chat", body)
    assert (r.decision.model, r.decision.reason) == ("phi4", "tool_loop")
    assert r.headers()["x-router-conversation"] == "kept"


async def test_in_a_tool_loop_the_pii_policy_still_wins_and_says_why() -> None:
    # The conversation is on the default model (no confident category); the tool result
    # carries an e-mail address, which mistral-small3.1 may not see: a compliant model.
    body = {"model": "auto", "messages": [
        {"role": "user", "content": "hello, look someone up for me"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
         "function": {"name": "find", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "found ann@example.com"}]}
    r = await router().route("chat", body)
    h = r.headers()
    assert (r.decision.model, r.decision.reason) == ("gemma3:27b", "pii_fallback")
    assert h["x-router-conversation"] == "kept"
    assert h["x-router-conversation-model"] == "mistral-small3.1"
    # a card number no model may see: refused as configured
    body["messages"][-1]["content"] = f"card {CARD}"
    r = await router().route("chat", body)
    assert r.decision.action == "reject" and r.headers()["x-router-reason"] == "pii_reject"


async def test_a_session_pins_the_model_for_clients_that_send_only_the_last_turn() -> None:
    rt = router(conv_config(session_header="x-session-id", session_from_user=True))
    first = await rt.route("chat", chat(MATH_Q), headers={"X-Session-Id": "s1"})
    assert first.decision.model == "phi4"
    r = await rt.route("chat", chat(FOLLOW_UP), headers={"x-session-id": "s1"})
    h = r.headers()
    assert (r.decision.model, r.decision.reason) == ("phi4", "conversation")
    assert h["x-router-conversation-from"] == "session"
    other = await rt.route("chat", chat(FOLLOW_UP), headers={"x-session-id": "s2"})
    assert other.decision.model == config().default_model
    assert other.headers()["x-router-conversation"] == "new"
    # the body's user field, for clients that cannot set a header
    await rt.route("chat", chat(MATH_Q, user="u1"))
    assert (await rt.route("chat", chat(FOLLOW_UP, user="u1"))).decision.model == "phi4"
    # a session never changes what the history alone decides for others
    alone = await router(conv_config()).route("chat", chat(FOLLOW_UP))
    assert alone.decision.model == config().default_model
    again = await rt.route("chat", chat(FOLLOW_UP))
    assert again.decision.model == config().default_model


async def test_a_session_pin_expires() -> None:
    now = [0.0]
    sessions = MemorySessions(capacity=10, ttl_s=60, clock=lambda: now[0])
    cfg = conv_config(session_header="x-session-id")
    rt = Router(cfg, FakeClassifier(), Metrics.create(models=list(cfg.model_config)),
                environ={}, sessions=sessions)
    await rt.route("chat", chat(MATH_Q), headers={"x-session-id": "s1"})
    now[0] = 61
    r = await rt.route("chat", chat(FOLLOW_UP), headers={"x-session-id": "s1"})
    assert r.decision.model == cfg.default_model


async def test_an_explicit_model_is_not_routed_by_conversation() -> None:
    r = await router().route("chat", turns(MATH_Q, FOLLOW_UP, model="gemma3:27b"))
    assert r.decision.reason == "explicit" and "x-router-conversation" not in r.headers()


async def test_conversation_reasons_are_counted() -> None:
    rt = router()
    await rt.route("chat", turns(MATH_Q, FOLLOW_UP))
    body, _ = render(rt.metrics)
    assert 'reason="conversation"' in (body.decode() if isinstance(body, bytes) else body)


async def test_a_sessions_tool_loop_stays_on_the_model_that_issued_the_calls() -> None:
    rt = router(conv_config(session_header="x-session-id"))
    s1 = {"x-session-id": "s1"}
    await rt.route("chat", chat(MATH_Q), headers=s1)
    ask = {"role": "user", "content": "Plot it for me"}  # other, 0.1: kept on phi4
    assert (await rt.route("chat", {"model": "auto", "messages": [ask]},
                           headers=s1)).decision.model == "phi4"
    loop = {"model": "auto", "messages": [
        ask, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "plot", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "plot.png"}]}
    r = await rt.route("chat", loop, headers=s1)
    assert (r.decision.model, r.decision.reason) == ("phi4", "tool_loop")
    assert r.headers()["x-router-conversation-from"] == "session"
