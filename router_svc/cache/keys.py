"""Cache keys and policy for one request: the exact partition, the tenant, Cache-Control,
what may be looked up or stored, and the text guard that vets near-identical matches.

Pure functions over the parsed request; no HTTP, no index. The text guard itself lives in
``router_svc.cache.verify``. ``router_svc.cache.store`` re-exports
everything here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from router_svc.cache.verify import texts_compatible as texts_compatible
from router_svc.core.auth import ANONYMOUS
from router_svc.core.endpoints import Kind

KINDS: tuple[Kind, ...] = ("chat", "completion")
KEY_VERSION = 1

# Request fields that never change the answer: the text the embedding stands for, the model
# (passed in as the routed target), the streaming mode (a hit is replayed either way) and
# bookkeeping. Every other field is part of the partition key (temperature, top_p, n,
# max_tokens, max_completion_tokens, tools, tool_choice, response_format, seed, stop,
# penalties, logit_bias, logprobs, and backend extras such as top_k or guided_json).
NON_ANSWER_FIELDS = frozenset(
    {"model", "messages", "prompt", "stream", "stream_options", "user", "metadata", "store",
     "service_tier"}
)


# --------------------------------------------------------------------------- keys


def _canonical(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr
    ).encode()


def request_kind(body: Mapping[str, Any]) -> Kind:
    return "chat" if "messages" in body else "completion"


def _chat_context(messages: Any) -> Any:
    """Everything of a chat but the text of the last user turn (which the embedding keys)."""
    if not isinstance(messages, list):
        return messages
    last = max(
        (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"),
        default=None,
    )
    if last is None:
        return {"before": messages}
    msg = messages[last]
    rest = {k: v for k, v in msg.items() if k != "content"}
    content = msg.get("content")
    if isinstance(content, list):  # images, audio, files in the last turn change the answer
        rest["parts"] = [
            p if not (isinstance(p, dict) and p.get("type") == "text") else "text"
            for p in content
        ]
    return {"before": messages[:last], "last": rest, "after": messages[last + 1 :]}


def partition_key(model: str, tenant: str, body: Mapping[str, Any]) -> str:
    """The exact part of the cache key (sha256 hex); see ``NON_ANSWER_FIELDS``.

    ``model`` is the routed target, ``tenant`` comes from ``cache_tenant``. For chat, the system
    prompt and every turn but the last user turn's text are hashed (its non-text parts and name
    are kept); for completions the shape of ``prompt`` (one string or a list of n) is kept.
    """
    kind = request_kind(body)
    if kind == "chat":
        context = _chat_context(body.get("messages"))
    else:
        prompt = body.get("prompt")
        context = {"prompts": len(prompt)} if isinstance(prompt, list) else {"prompts": "one"}
    params = {k: v for k, v in body.items() if k not in NON_ANSWER_FIELDS}
    payload = {
        "v": KEY_VERSION,
        "kind": kind,
        "model": model,
        "tenant": tenant,
        "context": hashlib.sha256(_canonical(context)).hexdigest(),
        "params": params,
    }
    return hashlib.sha256(_canonical(payload)).hexdigest()


# What a repeat of the very same request may differ in: a hit is replayed in either mode.
REPLAY_FIELDS = frozenset({"stream", "stream_options"})


def request_fingerprint(kind: Kind, body: Mapping[str, Any], tenant: str) -> str:
    """The exact identity of a request for the repeat memo (sha256 hex): the whole body but
    ``REPLAY_FIELDS``, its kind and the tenant. Two requests with one fingerprint get the same
    routing decision and the same cache key, so the second needs no model call."""
    payload = {
        "v": KEY_VERSION,
        "kind": kind,
        "tenant": tenant,
        "body": {k: v for k, v in body.items() if k not in REPLAY_FIELDS},
    }
    return hashlib.sha256(_canonical(payload)).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    v = headers.get(name)
    if v is None:  # a plain dict is case-sensitive; aiohttp's CIMultiDict is not
        low = name.lower()
        v = next((val for k, val in headers.items() if k.lower() == low), None)
    return v


def cache_tenant(caller_tenant: str | None, body: Mapping[str, Any],
                 by_user: bool) -> str | None:
    """Who may share cached answers: the caller's tenant (``router_svc.core.auth.identify``;
    None shares nothing), split by the body's ``user`` field when ``by_user``."""
    if caller_tenant is None:
        return None
    user = body.get("user")
    if by_user and isinstance(user, str) and user:
        return f"{caller_tenant}|user:{user}"
    return caller_tenant


def cache_directives(cache_control: str | None) -> tuple[bool, bool]:
    """``(may_look_up, may_store)`` from a request's ``Cache-Control`` header: ``no-cache``
    skips the lookup, ``no-store`` skips both (an answer that must not be stored must not be
    served from a store either)."""
    tokens = {t.strip().split("=", 1)[0].lower() for t in (cache_control or "").split(",")}
    no_store = "no-store" in tokens
    return not (no_store or "no-cache" in tokens), not no_store


@dataclass(frozen=True)
class CachePlan:
    """What the cache may do for one request; built by ``plan_request``."""

    partition: str
    text: str  # the last user turn, as embedded
    embedding: np.ndarray
    lookup: bool
    store: bool
    why_not_store: str = ""  # "no-store", "pii_masked", "pii", "pii_unchecked"
    tenant: str = ANONYMOUS  # whose quota a stored answer counts against


def plan_request(
    *,
    enabled: bool,
    target_model: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    tenant: str | None,
    text: str,
    embedding: np.ndarray | None,
    pii_found: bool,
    pii_checked: bool,
    store_pii_requests: bool = False,
    masked: bool = False,
) -> CachePlan | None:
    """The cache policy for one routed request, in one place; None: leave the cache alone
    (disabled, no tenant to share with (``cache_tenant``), no text to match such as an
    image-only turn, or no embedding because the classifier was down). Requests with PII, or
    whose PII check did not run, are looked up but not stored unless ``store_pii_requests``.
    A ``masked`` request (``pii_action: mask``) is never stored, whatever that says: its
    answer reaches its client with the client's own values put back, and stored either way
    it would serve one client's PII (or placeholders that name it) to others."""
    if not enabled or tenant is None or not text.strip() or embedding is None:
        return None
    may_look_up, may_store = cache_directives(_header(headers, "Cache-Control"))
    why = ""
    if not may_store:
        why = "no-store"
    elif masked:
        why = "pii_masked"
    elif not store_pii_requests and (pii_found or not pii_checked):
        why = "pii" if pii_found else "pii_unchecked"
    return CachePlan(partition_key(target_model, tenant, body), text, embedding,
                     lookup=may_look_up, store=not why, why_not_store=why, tenant=tenant)


# --------------------------------------------------------------------------- the text guard

# ``texts_compatible``, the guard that vets a candidate hit on its two texts (order and roles,
# numbers, negation, names, long prompts compared exactly), is ``router_svc.cache.verify``'s,
# imported above and re-exported for ``HnswCache``'s default.
