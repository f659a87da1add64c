"""The generation endpoints the router serves: one table for both doors, the backend path
under a model's ``base_url`` and the metrics label."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["chat", "completion"]

# A request whose client went away before its answer ended (nginx's "client closed request").
CLIENT_GONE = 499


@dataclass(frozen=True)
class Endpoint:
    kind: Kind
    path: str  # the router's own path
    backend_path: str  # under a backend's base URL, which ends in /v1
    label: str  # router_request_duration_seconds{endpoint}


CHAT = Endpoint("chat", "/v1/chat/completions", "/chat/completions", "chat_completions")
COMPLETION = Endpoint("completion", "/v1/completions", "/completions", "completions")
ENDPOINTS: dict[str, Endpoint] = {e.path: e for e in (CHAT, COMPLETION)}
BY_KIND: dict[Kind, Endpoint] = {e.kind: e for e in (CHAT, COMPLETION)}


class BadPath(ValueError):
    """A request path that cannot be read one way only (an escaped slash or backslash)."""


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def canonical_path(raw: str) -> str:
    """The path a backend would serve for ``raw`` (query dropped): percent-encoded
    unreserved characters decoded (``/v1/%63hat`` is ``/v1/chat``), repeated slashes merged,
    dot segments resolved and a trailing slash dropped, so no spelling of a generation path
    can pass for another path. An escaped ``/`` or ``\\`` is refused (``BadPath``): servers
    disagree on what it means."""
    path = raw.split("?", 1)[0].split("#", 1)[0]
    out: list[str] = []
    i = 0
    while i < len(path):
        ch = path[i]
        if ch == "%" and i + 2 < len(path) and _is_hex(path[i + 1:i + 3]):
            decoded = chr(int(path[i + 1:i + 3], 16))
            if decoded in "/\\":
                raise BadPath(f"escaped {decoded!r} in the path")
            out.append(decoded if decoded in _UNRESERVED else path[i:i + 3].upper())
            i += 3
            continue
        out.append("/" if ch == "\\" else ch)
        i += 1
    parts: list[str] = []
    for seg in "".join(out).split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts:
                parts.pop()
            continue
        parts.append(seg)
    return "/" + "/".join(parts)


def _is_hex(s: str) -> bool:
    return len(s) == 2 and all(c in "0123456789abcdefABCDEF" for c in s)
