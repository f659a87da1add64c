"""OpenAI request bodies: validate, find every text to classify (``core.texts``), and the
text that decides the category. No HTTP here: the doors render the ``BadRequest`` raised.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router_svc.core import params
from router_svc.core.errors import BadRequest, invalid_type, json_type
from router_svc.core.texts import (
    JOINED,
    MESSAGE_ROLES,
    Path,
    Segment,
    apply_redactions,
    scan_body,
)

ALLOWED_ROLES = MESSAGE_ROLES

__all__ = ["ALLOWED_ROLES", "ChatRequest", "CompletionRequest", "Path", "Segment",
           "apply_redactions", "category_segments", "category_text", "last_user_text",
           "parse_chat_request", "parse_completion_request", "text_segments", "usage_requested"]


@dataclass(frozen=True)
class ChatRequest:
    model: str
    stream: bool
    segments: tuple[Segment, ...]  # every text a model may read, in body order
    body: Mapping[str, Any]  # the client's body as parsed; never mutated here
    unscannable: tuple[str, ...] = ()  # content the router cannot read (images, audio, files)


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    stream: bool
    segments: tuple[Segment, ...]
    body: Mapping[str, Any]
    unscannable: tuple[str, ...] = ()


def usage_requested(body: Mapping[str, Any]) -> bool:
    """The client asked for the usage chunk at the end of a stream
    (``stream_options.include_usage``)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _common(body: Any) -> tuple[str, bool]:
    """``model`` and ``stream``: shared by both endpoints."""
    if not isinstance(body, dict):
        raise BadRequest(f"The request body must be a JSON object, not {json_type(body)}.")
    model = body.get("model")
    if model is None:
        raise BadRequest("You must provide a model parameter.", param="model")
    if not isinstance(model, str):
        raise invalid_type("model", "a string", model)
    if not model:
        raise BadRequest("The model parameter must not be empty.", param="model")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid_type("stream", "a boolean", stream)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid_type("stream_options", "an object", options)
    params.check(body, completion="prompt" in body and "messages" not in body)
    return model, bool(stream)


def _check_content(i: int, role: str, content: Any, present: bool) -> None:
    param = f"messages[{i}].content"
    if content is None:
        # Assistant turns that only call tools carry no content (missing or null).
        if role == "assistant":
            return
        if not present:
            raise BadRequest(f"Missing required parameter: '{param}'.", param=param)
        raise invalid_type(param, "a string or an array of content parts", content)
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise invalid_type(param, "a string or an array of content parts", content)
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise invalid_type(p, "an object", part)
        kind = part.get("type")
        if not isinstance(kind, str):
            raise invalid_type(f"{p}.type", "a string", kind)
        text = part.get("text")
        if (kind == "text" or "text" in part) and not isinstance(text, str):
            raise invalid_type(f"{p}.text", "a string", text)


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate a ``/v1/chat/completions`` body; ``BadRequest.param`` names the bad field.

    Every text is a segment (system prompts, tool calls and results, assistant history, tool
    descriptions...): PII can arrive through any of them, and the backend sees all of them.
    """
    model, stream = _common(body)
    messages = body.get("messages")
    if messages is None:
        raise BadRequest("Missing required parameter: 'messages'.", param="messages")
    if not isinstance(messages, list):
        raise invalid_type("messages", "an array", messages)
    if not messages:
        raise BadRequest("'messages' must contain at least one message.", param="messages")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise invalid_type(f"messages[{i}]", "an object", msg)
        role = msg.get("role")
        if not isinstance(role, str):
            if role is None:
                raise BadRequest(
                    f"Missing required parameter: 'messages[{i}].role'.",
                    param=f"messages[{i}].role",
                )
            raise invalid_type(f"messages[{i}].role", "a string", role)
        if role not in ALLOWED_ROLES:
            raise BadRequest(
                f"Invalid value: '{role}'. Supported values are: "
                + ", ".join(f"'{r}'" for r in ALLOWED_ROLES)
                + ".",
                param=f"messages[{i}].role",
                code="invalid_value",
            )
        _check_content(i, role, msg.get("content"), "content" in msg)
    scan = scan_body(body)
    return ChatRequest(model, stream, scan.segments, body, scan.unscannable)


def parse_completion_request(body: Any) -> CompletionRequest:
    """Validate a ``/v1/completions`` body: ``prompt`` is a string or an array of strings.

    Token-id prompts (arrays of integers) are refused: the router cannot read them, so it
    could neither route them nor enforce the PII policy on them.
    """
    model, stream = _common(body)
    prompt = body.get("prompt")
    if prompt is None:
        raise BadRequest("Missing required parameter: 'prompt'.", param="prompt")
    if isinstance(prompt, list):
        for i, p in enumerate(prompt):
            if not isinstance(p, str):
                if isinstance(p, (int, list)) and not isinstance(p, bool):
                    raise BadRequest(
                        "Token-id prompts are not supported: the router must read the text "
                        "to route it and to apply the PII policy. Send the prompt as text.",
                        param="prompt",
                        code="unsupported_prompt",
                    )
                raise invalid_type(f"prompt[{i}]", "a string", p)
    elif not isinstance(prompt, str):
        raise invalid_type("prompt", "a string or an array of strings", prompt)
    suffix = body.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise invalid_type("suffix", "a string", suffix)
    scan = scan_body(body)
    return CompletionRequest(model, stream, scan.segments, body, scan.unscannable)


def text_segments(req: ChatRequest | CompletionRequest) -> list[Segment]:
    """Every non-empty text of the request with its role and path, in body order."""
    return list(req.segments)


def category_segments(req: ChatRequest | CompletionRequest) -> list[Segment]:
    """The texts that decide the category and key the cache: the content of the last ``user``
    message (none when it has no text, e.g. an image-only turn: callers then neither
    classify nor cache on it; older turns are not fallen back on); for completions the
    prompt(s)."""
    if isinstance(req, CompletionRequest):
        return [s for s in req.segments if s.path[0] == "prompt"]
    roles = [m["role"] for m in req.body["messages"]]
    last = max((i for i, r in enumerate(roles) if r == "user"), default=None)
    if last is None:
        return []
    return [s for s in req.segments
            if s.path[:3] == ("messages", last, "content") and s.path[-1] != JOINED]


def category_text(req: ChatRequest | CompletionRequest) -> str:
    return "\n".join(s.text for s in category_segments(req))


last_user_text = category_text
