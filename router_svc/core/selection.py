"""Model choice: category ``model_scores``, ``default_model`` and the per-model PII policy.

Pure: signals (requested model, category, confidence, PII types found) in, a ``Decision``
out. Nothing here knows how the signals were obtained or how the answer is delivered.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal, get_args

from router_svc.config.loading import Config
from router_svc.core.errors import Forbidden, UnknownModel

Reason = Literal[
    "category",  # routed: the category's best model
    "low_confidence",  # routed: category below threshold -> default_model
    "classifier_unavailable",  # routed: no classification -> default_model
    "explicit",  # the client named a model
    "pii_fallback",  # routed: the first choice may not see this PII; a compliant one may
    "pii_reject",  # no eligible model may see this PII; answer with a refusal
    "pii_redact",  # no eligible model may see this PII; redact (or mask) it and send it on
    # One model per conversation (core.conversation), set in place of category/low_confidence:
    "conversation",  # a follow-up turn kept the conversation's model
    "tool_loop",  # tool results went on to the model that issued the calls
    "topic_switch",  # a confident question of another category switched the model
]
# The fixed set: used as a metric label, so it must stay small and bounded.
REASONS: tuple[str, ...] = get_args(Reason)

# mask: redact with numbered placeholders, and put the values back into the answer.
Action = Literal["route", "redact", "mask", "reject"]


@dataclass(frozen=True)
class Decision:
    model: str  # where the request goes; for "reject" the model that was refused
    category: str | None
    confidence: float
    reason: Reason
    action: Action
    pii_types: frozenset[str]  # every PII type found in the request
    blocked_model: str | None = None  # set when action is "reject"
    # The found types the named model does not allow: what a refusal lists, and what
    # redaction must remove for "redact" (allowed types may stay).
    denied_pii_types: frozenset[str] = frozenset()


def _routed_choice(config: Config, category: str | None, confidence: float,
                   permitted: Callable[[str], bool]) -> tuple[str, Reason]:
    if category is None:
        return config.default_model, "classifier_unavailable"
    if confidence < config.classifier.category_model.threshold:
        return config.default_model, "low_confidence"
    cat = config.category(category)
    ranked = [ms.model for ms in cat.ranked() if permitted(ms.model)] if cat else []
    if not ranked:
        # A category the config does not list (or none of its models this caller may use):
        # the operator's catch-all is default_model.
        return config.default_model, "category"
    return ranked[0], "category"


def _first_permitted(config: Config, first: str, category: str | None,
                     permitted: Callable[[str], bool]) -> str:
    """``first``, or the best model the caller may use instead (Forbidden if none)."""
    if permitted(first):
        return first
    for alt in [*_fallbacks(config, category), *config.models]:
        if permitted(alt):
            return alt
    raise Forbidden("This API key may use none of the router's models.")


def _denied(config: Config, model: str, pii_types: Collection[str]) -> frozenset[str]:
    mc = config.model(model)
    if mc is None:  # cannot happen with a validated config; refuse rather than leak
        return frozenset(pii_types)
    return mc.pii_policy.denied(pii_types)


def _fallbacks(config: Config, category: str | None) -> list[str]:
    """Models to try, in order, when the first choice may not receive the PII found.

    The category's list is used even when its confidence was below the threshold: the guess
    is still better than no preference, and every model on it is one the operator ranked for
    that kind of text, whereas any other order (config order, say) would be arbitrary.
    default_model comes last, as the operator's catch-all.
    """
    cat = config.category(category) if category is not None else None
    names = [ms.model for ms in cat.ranked()] if cat is not None else []
    names.append(config.default_model)
    return list(dict.fromkeys(names))  # drop repeats, keep order


def select_model(
    config: Config,
    requested_model: str,
    category: str | None,
    confidence: float,
    pii_types: Collection[str],
    allowed: Collection[str] | None = None,
) -> Decision:
    """Decide the model for a request.

    ``category`` is ``None`` when classification was unavailable (Triton down and
    ``on_error.routing: default_model``); fail-closed is the caller's business. Raises
    ``UnknownModel`` for a model name that is neither the alias nor in ``model_config``.
    ``allowed``: the models the caller's key may use (None: all); routing picks among them,
    and an explicit request for another is ``Forbidden``.
    """
    found = frozenset(pii_types)

    def permitted(name: str) -> bool:
        return allowed is None or name in allowed

    if requested_model == config.routing.alias:
        model, reason = _routed_choice(config, category, confidence, permitted)
        model = _first_permitted(config, model, category, permitted)
        routed = True
    elif config.model(requested_model) is not None:
        if not permitted(requested_model):
            raise Forbidden(f"This API key may not use the model `{requested_model}`.")
        model, reason, routed = requested_model, "explicit", False
    else:
        raise UnknownModel(
            f"The model `{requested_model}` does not exist. Use `{config.routing.alias}` to "
            f"let the router choose, or one of: {', '.join(config.models)}."
        )

    def decide(model: str, reason: Reason, action: Action = "route", **kw: Any) -> Decision:
        return Decision(model, category, confidence, reason, action, found, **kw)

    denied = _denied(config, model, found)
    if not denied:
        return decide(model, reason)
    if routed:
        for alt in _fallbacks(config, category):
            if alt != model and permitted(alt) and not _denied(config, alt, found):
                return decide(alt, "pii_fallback")
    # Explicit requests are never re-routed: the client asked for that model, so the policy
    # applies to it as it stands.
    # The model's own pii_policy.action, else the global pii_action. Masking routes as
    # redaction does (reason "pii_redact", the metric's bounded set); only the answer differs.
    mc = config.model(model)
    action = (mc.pii_policy.action if mc is not None else None) or config.pii_action
    if action in ("redact", "mask"):
        return decide(model, "pii_redact", action, denied_pii_types=denied)
    return decide(model, "pii_reject", "reject", blocked_model=model, denied_pii_types=denied)


def failover_order(config: Config, decision: Decision,
                   allowed: Collection[str] | None = None) -> list[str]:
    """The models that may take a routed request when ``decision.model``'s backend fails, best
    first: the category's ranking, then default_model, each one the caller may use whose PII
    policy allows what the forwarded body still carries (redacted types are gone). A model
    the client named is never swapped: []."""
    if decision.reason == "explicit" or decision.action == "reject":
        return []
    carried = decision.pii_types - decision.denied_pii_types
    return [m for m in _fallbacks(config, decision.category)
            if m != decision.model and (allowed is None or m in allowed)
            and not _denied(config, m, carried)]


def pii_rejection_message(model: str, pii_types: Collection[str]) -> str:
    """The reference router's refusal text; types sorted, in Python list notation."""
    return (
        f"I cannot process this request as it contains personally identifiable information "
        f"({sorted(pii_types)!r}) that is not allowed for the '{model}' model according to "
        f"the configured privacy policy. Please remove any sensitive information and try again."
    )


def pii_rejection_response(
    decision: Decision, created: int, id_suffix: str | None = None
) -> dict[str, Any]:
    """The reference's answer to a PII violation: HTTP 200, an assistant message that says no.

    The id keeps the reference prefix ``chatcmpl-pii-violation-<created>``; a short random
    suffix follows so two refusals in one second differ (``id_suffix=""`` gives the exact
    reference id). The types listed are those the blocked model does not allow.
    """
    model = decision.blocked_model or decision.model
    types = decision.denied_pii_types or decision.pii_types
    suffix = secrets.token_hex(4) if id_suffix is None else id_suffix
    return {
        "id": f"chatcmpl-pii-violation-{created}" + (f"-{suffix}" if suffix else ""),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": pii_rejection_message(model, types)},
                "finish_reason": "content_filter",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


@dataclass(frozen=True)
class BackendTarget:
    """Where one model is served. ``base_url`` includes the API prefix, e.g. ``.../v1``.

    Authorization sent: ``Bearer <api_key>`` if set; else the client's own Authorization
    when ``forward_client_auth``; else none. Never both.
    """

    base_url: str
    model: str
    api_key: str | None = None
    forward_client_auth: bool = False

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")
