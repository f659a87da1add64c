"""Model selection: the reference article's examples, PII fallback, redact mode, explicit models."""

from __future__ import annotations

import dataclasses
import re

import pytest

from router_svc.config.loading import EXAMPLE_CONFIG, Config, load_config, parse_config
from router_svc.core.errors import Forbidden, UnknownModel
from router_svc.core.selection import (
    REASONS,
    Decision,
    failover_order,
    pii_rejection_message,
    pii_rejection_response,
    select_model,
)

REFERENCE_CC_MESSAGE = (
    "I cannot process this request as it contains personally identifiable information "
    "(['CREDIT_CARD']) that is not allowed for the 'phi4' model according to the configured "
    "privacy policy. Please remove any sensitive information and try again."
)


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(EXAMPLE_CONFIG, environ={})


@pytest.fixture(scope="module")
def redact_cfg(cfg: Config) -> Config:
    return dataclasses.replace(cfg, pii_action="redact")


def route(cfg: Config, category: str | None, confidence: float, *pii: str) -> Decision:
    return select_model(cfg, "auto", category, confidence, set(pii))


# --------------------------------------------------------------------------- routing


def test_math_goes_to_phi4(cfg: Config) -> None:
    # "What is the derivative of f(x) = x³ + 2x² - 5x + 7?"
    d = route(cfg, "math", 0.93)
    assert (d.model, d.reason, d.action) == ("phi4", "category", "route")
    assert d.category == "math" and d.confidence == 0.93
    assert d.pii_types == frozenset() and d.blocked_model is None


def test_low_confidence_goes_to_default(cfg: Config) -> None:
    # "Hello, how are you today?"
    d = route(cfg, "other", 0.31)
    assert (d.model, d.reason, d.action) == ("mistral-small3.1", "low_confidence", "route")
    assert d.category == "other"  # kept for headers and metrics


def test_threshold_is_inclusive(cfg: Config) -> None:
    assert route(cfg, "math", 0.6).reason == "category"
    assert route(cfg, "math", 0.5999).reason == "low_confidence"


def test_classifier_unavailable_goes_to_default(cfg: Config) -> None:
    d = route(cfg, None, 0.0)
    assert (d.model, d.reason) == ("mistral-small3.1", "classifier_unavailable")


def test_highest_score_wins_and_ties_keep_config_order(cfg: Config) -> None:
    assert route(cfg, "philosophy", 0.9).model == "mistral-small3.1"
    assert route(cfg, "history", 0.9).model == "gemma3:27b"
    data = {
        "default_model": "a",
        "categories": [
            {
                "name": "law",
                "model_scores": [
                    {"model": "c", "score": 0.5},
                    {"model": "b", "score": 0.9},
                    {"model": "a", "score": 0.9},
                ],
            }
        ],
        "model_config": {m: {"backend": {"base_url": "http://h/v1"}} for m in "abc"},
    }
    tie = parse_config(data, ".")
    assert route(tie, "law", 0.9).model == "b"


def test_category_without_entry_goes_to_default(cfg: Config) -> None:
    slim = dataclasses.replace(cfg, categories=cfg.categories[:1])
    d = route(slim, "law", 0.99)
    assert (d.model, d.reason) == ("mistral-small3.1", "category")


def test_explicit_model(cfg: Config) -> None:
    d = select_model(cfg, "gemma3:27b", "math", 0.99, set())
    assert (d.model, d.reason, d.action) == ("gemma3:27b", "explicit", "route")


def test_unknown_model_is_404(cfg: Config) -> None:
    with pytest.raises(UnknownModel) as ei:
        select_model(cfg, "gpt-5", "math", 0.99, set())
    err = ei.value
    assert err.status == 404 and err.code == "model_not_found" and err.param == "model"
    assert "gpt-5" in err.message and "auto" in err.message and "phi4" in err.message


# --------------------------------------------------------------------------- PII policy


def test_credit_card_is_rejected_naming_phi4(cfg: Config) -> None:
    # "My credit card number is 1234-5678-9012-3456. Can you help me with my account?"
    # Nobody allows CREDIT_CARD, so the first choice (phi4) is the one refused.
    d = route(cfg, "math", 0.9, "CREDIT_CARD")
    assert (d.action, d.reason, d.model, d.blocked_model) == (
        "reject",
        "pii_reject",
        "phi4",
        "phi4",
    )
    assert d.denied_pii_types == {"CREDIT_CARD"}

    body = pii_rejection_response(d, created=1643723400, id_suffix="")
    assert body == {
        "id": "chatcmpl-pii-violation-1643723400",
        "object": "chat.completion",
        "created": 1643723400,
        "model": "phi4",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": REFERENCE_CC_MESSAGE},
                "finish_reason": "content_filter",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def test_rejection_ids_are_unique_but_keep_the_prefix(cfg: Config) -> None:
    d = route(cfg, "math", 0.9, "CREDIT_CARD")
    a = pii_rejection_response(d, created=1700000000)["id"]
    b = pii_rejection_response(d, created=1700000000)["id"]
    assert a != b
    assert re.fullmatch(r"chatcmpl-pii-violation-1700000000-[0-9a-f]{8}", a)


def test_rejection_lists_only_denied_types_sorted(cfg: Config) -> None:
    d = route(cfg, "math", 0.9, "US_SSN", "EMAIL_ADDRESS", "CREDIT_CARD")
    assert d.pii_types == {"US_SSN", "EMAIL_ADDRESS", "CREDIT_CARD"}
    content = pii_rejection_response(d, 1)["choices"][0]["message"]["content"]
    assert "(['CREDIT_CARD', 'US_SSN'])" in content and "EMAIL" not in content
    assert pii_rejection_message("m", {"B", "A"}).count("(['A', 'B'])") == 1


def test_email_on_low_confidence_falls_back_to_compliant_model(cfg: Config) -> None:
    # "Please send the report to john.doe@company.com": low confidence -> mistral-small3.1,
    # which allows no PII; the category's best compliant model takes it instead.
    d = route(cfg, "other", 0.4, "EMAIL_ADDRESS")
    assert (d.model, d.reason, d.action) == ("gemma3:27b", "pii_fallback", "route")
    # philosophy ranks mistral first, then gemma3:27b
    assert route(cfg, "philosophy", 0.3, "EMAIL_ADDRESS").model == "gemma3:27b"


def test_allowed_pii_keeps_the_first_choice(cfg: Config) -> None:
    d = route(cfg, "math", 0.9, "EMAIL_ADDRESS", "PHONE_NUMBER")
    assert (d.model, d.reason, d.action) == ("phi4", "category", "route")


def test_fallback_follows_category_scores(cfg: Config) -> None:
    # ORGANIZATION: phi4 no, mistral-small3.1 no, gemma3:27b yes
    d = route(cfg, "math", 0.9, "ORGANIZATION")
    assert (d.model, d.reason) == ("gemma3:27b", "pii_fallback")


def test_no_category_list_only_default_is_tried(cfg: Config) -> None:
    d = route(cfg, None, 0.0, "EMAIL_ADDRESS")
    assert (d.action, d.blocked_model) == ("reject", "mistral-small3.1")


def test_redact_mode_routes_to_first_choice(redact_cfg: Config) -> None:
    d = route(redact_cfg, "math", 0.9, "CREDIT_CARD", "EMAIL_ADDRESS")
    assert (d.action, d.reason, d.model, d.blocked_model) == ("redact", "pii_redact", "phi4", None)
    assert d.denied_pii_types == {"CREDIT_CARD"}  # phi4 may see the e-mail address
    # a compliant fallback still wins over redaction
    assert route(redact_cfg, "other", 0.4, "EMAIL_ADDRESS").action == "route"


def test_explicit_model_with_disallowed_pii_is_not_rerouted(
    cfg: Config, redact_cfg: Config
) -> None:
    d = select_model(cfg, "mistral-small3.1", "other", 0.9, {"EMAIL_ADDRESS"})
    assert (d.action, d.reason, d.model, d.blocked_model) == (
        "reject",
        "pii_reject",
        "mistral-small3.1",
        "mistral-small3.1",
    )
    body = pii_rejection_response(d, 5, id_suffix="")
    assert "(['EMAIL_ADDRESS'])" in body["choices"][0]["message"]["content"]
    assert "'mistral-small3.1' model" in body["choices"][0]["message"]["content"]
    d = select_model(redact_cfg, "mistral-small3.1", "other", 0.9, {"EMAIL_ADDRESS"})
    assert (d.action, d.model) == ("redact", "mistral-small3.1")
    d = select_model(cfg, "phi4", "other", 0.9, {"EMAIL_ADDRESS"})
    assert (d.action, d.reason, d.model) == ("route", "explicit", "phi4")


def test_allow_by_default_allows_everything(cfg: Config) -> None:
    mc = dict(cfg.model_config)
    phi = mc["phi4"]
    mc["phi4"] = dataclasses.replace(
        phi, pii_policy=dataclasses.replace(phi.pii_policy, allow_by_default=True)
    )
    open_cfg = dataclasses.replace(cfg, model_config=mc)
    d = route(open_cfg, "math", 0.9, "CREDIT_CARD", "US_SSN")
    assert (d.model, d.action) == ("phi4", "route")


def test_reasons_are_a_small_fixed_set(cfg: Config, redact_cfg: Config) -> None:
    assert set(REASONS) == {
        "category",
        "low_confidence",
        "classifier_unavailable",
        "explicit",
        "pii_fallback",
        "pii_reject",
        "pii_redact",
        "conversation",  # the three set by core.conversation, never by select_model
        "tool_loop",
        "topic_switch",
    }
    seen = {
        route(cfg, "math", 0.9).reason,
        route(cfg, "math", 0.1).reason,
        route(cfg, None, 0).reason,
        select_model(cfg, "phi4", None, 0, set()).reason,
        route(cfg, "other", 0.1, "EMAIL_ADDRESS").reason,
        route(cfg, "math", 0.9, "CREDIT_CARD").reason,
        route(redact_cfg, "math", 0.9, "CREDIT_CARD").reason,
    }
    assert seen == set(REASONS) - {"conversation", "tool_loop", "topic_switch"}


# --------------------------------------------------------------------------- key limits


def test_routing_picks_among_the_models_a_key_may_use(cfg: Config) -> None:
    only_gemma = frozenset({"gemma3:27b"})
    d = select_model(cfg, "auto", "math", 0.93, set(), only_gemma)
    assert (d.model, d.reason) == ("gemma3:27b", "category")  # phi4, mistral: not allowed
    low = select_model(cfg, "auto", "other", 0.2, set(), only_gemma)
    assert low.model == "gemma3:27b"  # default_model not allowed: the best allowed one
    assert select_model(cfg, "auto", "math", 0.93, set(), None).model == "phi4"


def test_an_explicit_model_the_key_may_not_use_is_403(cfg: Config) -> None:
    with pytest.raises(Forbidden) as e:
        select_model(cfg, "phi4", "math", 0.9, set(), frozenset({"mistral-small3.1"}))
    assert e.value.status == 403 and "phi4" in e.value.message
    with pytest.raises(Forbidden):
        select_model(cfg, "auto", "math", 0.9, set(), frozenset())


def test_pii_fallback_stays_within_the_key(cfg: Config) -> None:
    # A card number: phi4 may not see it; the fallback must be a model this key may use.
    allowed = frozenset({"phi4"})
    d = select_model(cfg, "auto", "math", 0.93, {"CREDIT_CARD"}, allowed)
    assert d.model == "phi4" and d.action == "reject"


# --------------------------------------------------------------------------- failover


def test_failover_follows_the_category_then_default(cfg: Config) -> None:
    d = route(cfg, "math", 0.93)
    assert d.model == "phi4"
    assert failover_order(cfg, d) == ["mistral-small3.1", "gemma3:27b"]
    assert failover_order(cfg, d, allowed={"phi4", "gemma3:27b"}) == ["gemma3:27b"]


def test_failover_never_swaps_a_named_model_or_a_refusal(cfg: Config) -> None:
    explicit = select_model(cfg, "phi4", "math", 0.93, set())
    assert failover_order(cfg, explicit) == []
    refused = route(cfg, "math", 0.93, "US_SSN", "EMAIL_ADDRESS", "CREDIT_CARD")
    assert refused.action == "reject" and failover_order(cfg, refused) == []


def test_failover_keeps_the_pii_policy(cfg: Config) -> None:
    # An e-mail address: phi4 and gemma allow it, mistral-small3.1 allows no PII at all.
    d = route(cfg, "math", 0.93, "EMAIL_ADDRESS")
    assert d.model == "phi4"
    assert failover_order(cfg, d) == ["gemma3:27b"]


def test_failover_after_redaction_may_use_a_stricter_model(redact_cfg: Config) -> None:
    # Redacted types are gone from the body: a model that may not see them can take it.
    d = select_model(redact_cfg, "auto", "math", 0.93, {"CREDIT_CARD"})
    assert d.action == "redact" and "CREDIT_CARD" in d.denied_pii_types
    assert "mistral-small3.1" in failover_order(redact_cfg, d)
