"""What the cache stores and replays: complete answers only, replayed with a fresh ``id`` and
``created`` as JSON or as an SSE stream. ``router_svc.cache.store`` re-exports everything here.
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router_svc.cache.keys import Kind
from router_svc.core import sse_write as sse

_ID_PREFIX = {"chat.completion": "chatcmpl-", "text_completion": "cmpl-"}
_OBJECT = {"chat": "chat.completion", "completion": "text_completion"}


def fresh_copy(body: Mapping[str, Any], *, now: float | None = None) -> dict[str, Any]:
    """A deep copy of a stored answer with a new ``id`` (same prefix style, e.g. ``chatcmpl-``)
    and ``created`` set to now (seconds)."""
    out = copy.deepcopy(dict(body))
    old = out.get("id")
    if isinstance(old, str) and "-" in old:
        prefix = old[: old.index("-") + 1]
    else:
        prefix = _ID_PREFIX.get(str(out.get("object")), "cmpl-")
    out["id"] = prefix + secrets.token_hex(12)
    out["created"] = int(time.time() if now is None else now)
    return out


def is_complete(kind: Kind, body: Any) -> bool:
    """A whole answer of the right shape: the object type, choices, each with a finish_reason
    (and a message for chat). Error bodies and partial answers are not."""
    if not isinstance(body, dict) or "error" in body or body.get("object") != _OBJECT[kind]:
        return False
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    for c in choices:
        if not isinstance(c, dict) or not c.get("finish_reason"):
            return False
        if kind == "chat" and not isinstance(c.get("message"), dict):
            return False
        if kind == "completion" and not isinstance(c.get("text"), str):
            return False
    return True


@dataclass(frozen=True)
class CachedResponse:
    """A complete non-streaming-shaped answer (``chat.completion`` or ``text_completion``)."""

    kind: Kind
    body: Mapping[str, Any]

    @classmethod
    def from_body(cls, kind: Kind, body: Any) -> CachedResponse | None:
        """None unless ``body`` is a complete answer (see ``is_complete``); copies it."""
        return cls(kind, copy.deepcopy(body)) if is_complete(kind, body) else None

    def replay_json(self, *, now: float | None = None) -> dict[str, Any]:
        """The body to answer a non-streaming request with (fresh id and created)."""
        return fresh_copy(self.body, now=now)

    def replay_sse(self, *, include_usage: bool = False, now: float | None = None) -> list[bytes]:
        """SSE events (ending in ``data: [DONE]``) for a streaming request."""
        body = fresh_copy(self.body, now=now)
        if self.kind == "chat":
            return sse.chat_to_chunks(body, include_usage=include_usage)
        return sse.text_completion_to_chunks(body)
