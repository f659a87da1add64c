"""The Router pipeline with a fake classifier: parse, classify, select, PII policy. No Triton."""

from __future__ import annotations

import dataclasses

import pytest

from router_svc.classify.batcher import QueueFull
from router_svc.config.loading import EXAMPLE_CONFIG, Config, load_config
from router_svc.core.errors import (
    BadRequest,
    Overloaded,
    RouterError,
    UnknownModel,
    UnscannableContent,
)
from router_svc.core.metrics import Metrics
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


async def test_classifier_down_fails_closed_by_default() -> None:
    with pytest.raises(ClassifierUnavailable) as e:
        await router(clf=FakeClassifier(fail=ConnectionError("down"))).route(
            "chat", chat("derivative"))
    assert e.value.status == 503 and e.value.headers == {"x-router-pii-check": "unavailable"}


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
