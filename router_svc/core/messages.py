"""OpenAI request bodies: validate, find the text to classify, write redactions back.

No HTTP here: the front doors hand in the decoded JSON and render the ``BadRequest`` raised.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router_svc.core.errors import BadRequest

ALLOWED_ROLES: tuple[str, ...] = ("system", "developer", "user", "assistant", "tool", "function")

# (message index, content-part index or None when the content is a plain string).
# For completions: (prompt index, None); a string prompt is index 0.
Location = tuple[int, int | None]


@dataclass(frozen=True)
class Segment:
    """One piece of text the router classifies, with where it lives in the body.

    The location lets redaction replace exactly that string and leave everything else (image
    parts, tool calls, unknown fields) untouched. Text is only type-checked, never normalised:
    control characters, emoji and RTL text reach the classifier and the backend as sent.
    """

    text: str
    role: str  # the message role; "prompt" for completions
    location: Location


@dataclass(frozen=True)
class ChatRequest:
    model: str
    stream: bool
    segments: tuple[Segment, ...]  # every classifiable text, in message order
    body: Mapping[str, Any]  # the client's body as parsed; never mutated here


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    stream: bool
    segments: tuple[Segment, ...]
    body: Mapping[str, Any]


def _a(v: Any) -> str:
    """The JSON type of ``v`` in the words OpenAI's own validation errors use."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a decimal"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _invalid_type(param: str, expected: str, got: Any) -> BadRequest:
    return BadRequest(
        f"Invalid type for '{param}': expected {expected}, but got {_a(got)} instead.",
        param=param,
        code="invalid_type",
    )


def usage_requested(body: Mapping[str, Any]) -> bool:
    """The client asked for the usage chunk at the end of a stream
    (``stream_options.include_usage``)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _common(body: Any) -> tuple[str, bool]:
    """``model`` and ``stream``: shared by both endpoints."""
    if not isinstance(body, dict):
        raise BadRequest(f"The request body must be a JSON object, not {_a(body)}.")
    model = body.get("model")
    if model is None:
        raise BadRequest("You must provide a model parameter.", param="model")
    if not isinstance(model, str):
        raise _invalid_type("model", "a string", model)
    if not model:
        raise BadRequest("The model parameter must not be empty.", param="model")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid_type("stream", "a boolean", stream)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _invalid_type("stream_options", "an object", options)
    return model, bool(stream)


def _content_segments(i: int, role: str, content: Any, present: bool) -> list[Segment]:
    param = f"messages[{i}].content"
    if content is None:
        # Assistant turns that only call tools carry no content (missing or null).
        if role == "assistant":
            return []
        if not present:
            raise BadRequest(f"Missing required parameter: '{param}'.", param=param)
        raise _invalid_type(param, "a string or an array of content parts", content)
    if isinstance(content, str):
        return [Segment(content, role, (i, None))] if content else []
    if not isinstance(content, list):
        raise _invalid_type(param, "a string or an array of content parts", content)
    out: list[Segment] = []
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise _invalid_type(p, "an object", part)
        kind = part.get("type")
        if not isinstance(kind, str):
            raise _invalid_type(f"{p}.type", "a string", kind)
        if kind != "text":
            continue  # image_url, input_audio, file, refusal, ...: passed through untouched
        text = part.get("text")
        if not isinstance(text, str):
            raise _invalid_type(f"{p}.text", "a string", text)
        if text:
            out.append(Segment(text, role, (i, j)))
    return out


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate a ``/v1/chat/completions`` body; ``BadRequest.param`` names the bad field.

    Every role's text is a segment (system prompts, tool results and assistant history too):
    PII can arrive through any of them, and the backend sees all of them.
    """
    model, stream = _common(body)
    messages = body.get("messages")
    if messages is None:
        raise BadRequest("Missing required parameter: 'messages'.", param="messages")
    if not isinstance(messages, list):
        raise _invalid_type("messages", "an array", messages)
    if not messages:
        raise BadRequest("'messages' must contain at least one message.", param="messages")
    segments: list[Segment] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _invalid_type(f"messages[{i}]", "an object", msg)
        role = msg.get("role")
        if not isinstance(role, str):
            if role is None:
                raise BadRequest(
                    f"Missing required parameter: 'messages[{i}].role'.",
                    param=f"messages[{i}].role",
                )
            raise _invalid_type(f"messages[{i}].role", "a string", role)
        if role not in ALLOWED_ROLES:
            raise BadRequest(
                f"Invalid value: '{role}'. Supported values are: "
                + ", ".join(f"'{r}'" for r in ALLOWED_ROLES)
                + ".",
                param=f"messages[{i}].role",
                code="invalid_value",
            )
        segments += _content_segments(i, role, msg.get("content"), "content" in msg)
    return ChatRequest(model=model, stream=stream, segments=tuple(segments), body=body)


def parse_completion_request(body: Any) -> CompletionRequest:
    """Validate a ``/v1/completions`` body: ``prompt`` is a string or an array of strings.

    Token-id prompts (arrays of integers) are refused: the router cannot read them, so it
    could neither route them nor enforce the PII policy on them.
    """
    model, stream = _common(body)
    prompt = body.get("prompt")
    if prompt is None:
        raise BadRequest("Missing required parameter: 'prompt'.", param="prompt")
    if isinstance(prompt, str):
        segments = [Segment(prompt, "prompt", (0, None))] if prompt else []
    elif isinstance(prompt, list):
        segments = []
        for i, p in enumerate(prompt):
            if not isinstance(p, str):
                if isinstance(p, (int, list)) and not isinstance(p, bool):
                    raise BadRequest(
                        "Token-id prompts are not supported: the router must read the text "
                        "to route it and to apply the PII policy. Send the prompt as text.",
                        param="prompt",
                        code="unsupported_prompt",
                    )
                raise _invalid_type(f"prompt[{i}]", "a string", p)
            if p:
                segments.append(Segment(p, "prompt", (i, None)))
    else:
        raise _invalid_type("prompt", "a string or an array of strings", prompt)
    return CompletionRequest(model=model, stream=stream, segments=tuple(segments), body=body)


def text_segments(req: ChatRequest | CompletionRequest) -> list[Segment]:
    """Every non-empty text of the request with its role and location, in order."""
    return list(req.segments)


def last_user_text(req: ChatRequest | CompletionRequest) -> str:
    """The text that decides the category and keys the cache.

    Chat: the text parts of the last ``user`` message joined by newlines; "" when there is no
    user message or it has no text (an image-only turn): callers should then neither classify
    nor cache on it. Completions: the prompt(s) joined by newlines.
    """
    if isinstance(req, CompletionRequest):
        return "\n".join(s.text for s in req.segments)
    # From the body, not the segments: an image-only last turn must not fall back to older text.
    roles = [m["role"] for m in req.body["messages"]]
    last = max((i for i, r in enumerate(roles) if r == "user"), default=None)
    if last is None:
        return ""
    return "\n".join(s.text for s in req.segments if s.location[0] == last)


def apply_redactions(body: Mapping[str, Any], replacements: Mapping[Location, str]) -> dict:
    """A deep copy of ``body`` with the text at each location replaced.

    Works for chat bodies (``messages``) and completion bodies (``prompt``); everything not
    named in ``replacements`` is left as it was. A location that does not hold a string is a
    programming error (it did not come from ``text_segments`` of this body): ``ValueError``.
    """
    out = copy.deepcopy(dict(body))
    for (i, j), text in replacements.items():
        if "messages" in out:
            msg = out["messages"][i]
            if j is None:
                _check_str(msg.get("content"), (i, j))
                msg["content"] = text
            else:
                part = msg["content"][j]
                _check_str(part.get("text"), (i, j))
                part["text"] = text
        elif isinstance(out.get("prompt"), str) and (i, j) == (0, None):
            out["prompt"] = text
        elif isinstance(out.get("prompt"), list) and j is None:
            _check_str(out["prompt"][i], (i, j))
            out["prompt"][i] = text
        else:
            raise ValueError(f"location {(i, j)} is not a text of this request body")
    return out


def _check_str(v: Any, loc: Location) -> None:
    if not isinstance(v, str):
        raise ValueError(f"location {loc} holds {_a(v)}, not text")
