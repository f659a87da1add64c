"""Writing server-sent events: a complete answer the router makes itself (a PII refusal, a
cache replay) as a valid chunk stream, and a chat answer as a ``text_completion``.
(Reading a backend's events: ``backend.sse_read``.)
"""

from __future__ import annotations

import json
from typing import Any

DONE = b"data: [DONE]\n\n"


def event(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def chat_to_chunks(body: dict[str, Any], include_usage: bool = False) -> list[bytes]:
    """A complete chat.completion replayed as chat.completion.chunk events, then [DONE]."""
    base = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"],
            "model": body["model"]}
    out: list[bytes] = []
    for choice in body.get("choices", []):
        msg = choice.get("message") or {}
        idx = choice.get("index", 0)
        out.append(event({**base, "choices": [
            {"index": idx, "delta": {"role": msg.get("role", "assistant"), "content": ""},
             "finish_reason": None}]}))
        delta: dict[str, Any] = {}
        if msg.get("content") is not None:
            delta["content"] = msg["content"]
        if msg.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **tc} for i, tc in enumerate(msg["tool_calls"])]
        if delta:
            out.append(event({**base, "choices": [
                {"index": idx, "delta": delta, "finish_reason": None}]}))
        out.append(event({**base, "choices": [
            {"index": idx, "delta": {}, "finish_reason": choice.get("finish_reason", "stop")}]}))
    if include_usage and body.get("usage") is not None:
        out.append(event({**base, "choices": [], "usage": body["usage"]}))
    out.append(DONE)
    return out


def chat_to_text_completion(body: dict[str, Any]) -> dict[str, Any]:
    """The same answer in the legacy completions shape."""
    return {
        "id": body["id"].replace("chatcmpl-", "cmpl-", 1),
        "object": "text_completion",
        "created": body["created"],
        "model": body["model"],
        "choices": [
            {"index": c.get("index", 0), "text": (c.get("message") or {}).get("content") or "",
             "logprobs": None, "finish_reason": c.get("finish_reason")}
            for c in body.get("choices", [])
        ],
        "usage": body.get("usage"),
    }


def text_completion_to_chunks(body: dict[str, Any]) -> list[bytes]:
    out = [event({**body, "choices": [c], "usage": None}) for c in body.get("choices", [])]
    out.append(DONE)
    return out
