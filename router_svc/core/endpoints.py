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
