"""What the router answers by itself, without a backend, for both doors: a PII refusal, a
cache hit, a client mistake, as JSON or SSE with the same bytes and headers through either.
The request-body checks live here too, so both doors refuse the same bodies alike."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from router_svc.backend.errors import UpstreamError
from router_svc.cache.front import Lookup, replay_mode
from router_svc.core import json_codec
from router_svc.core import sse_write as sse
from router_svc.core.errors import BackendError, BadRequest, RouterError, UnsupportedMediaType
from router_svc.core.messages import usage_requested
from router_svc.core.pipeline import Routed

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream"
# What a streamed answer carries besides the x-router-* headers (the HTTP proxy's choice).
SSE_HEADERS = {"Content-Type": SSE_TYPE, "Cache-Control": "no-cache"}


@dataclass(frozen=True)
class LocalAnswer:
    """One answer made by the router: a JSON body, or SSE events (``[DONE]`` last)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)  # x-router-*, Retry-After, ...
    json_body: dict[str, Any] | None = None
    events: tuple[bytes, ...] = ()

    @property
    def stream(self) -> bool:
        return self.json_body is None

    @property
    def content_type(self) -> str:
        return SSE_TYPE if self.stream else JSON_TYPE

    def body(self) -> bytes:
        # json.dumps with its defaults is what aiohttp's json_response writes: same bytes.
        if self.json_body is not None:
            return json.dumps(self.json_body).encode("utf-8")
        return b"".join(self.events)

    def all_headers(self) -> dict[str, str]:
        """Every header of the answer, content type included (for a door that sets them all)."""
        extra = SSE_HEADERS if self.stream else {"Content-Type": JSON_TYPE}
        return {**self.headers, **extra}


def wants_usage(routed: Routed) -> bool:
    """The client asked for the usage chunk at the end of a stream."""
    return usage_requested(routed.request.body)


def rejection_answer(routed: Routed) -> LocalAnswer:
    """The PII refusal in the shape (chat or text completion) and mode the client asked for."""
    assert routed.rejection is not None
    chat_body = routed.rejection
    if routed.kind == "completion":
        body = sse.chat_to_text_completion(chat_body)
        events = sse.text_completion_to_chunks(body)
    else:
        body = chat_body
        events = sse.chat_to_chunks(body, include_usage=wants_usage(routed))
    if not routed.stream:
        return LocalAnswer(headers=routed.headers(), json_body=body)
    return LocalAnswer(headers=routed.headers(), events=tuple(events))


def cache_answer(routed: Routed, cached: Lookup) -> LocalAnswer:
    """A cache hit replayed with fresh ids, as JSON or as an SSE stream."""
    return replay_answer(routed.headers(), cached, routed.request.body)


def replay_answer(routed_headers: dict[str, str], cached: Lookup,
                  body: dict[str, Any]) -> LocalAnswer:
    """``cache_answer`` from the routed request's headers and body: what a repeat of a
    cached request (``CacheFront.repeat``, no ``Routed``) is answered with."""
    assert cached.hit is not None
    headers = {**routed_headers, **cached.headers()}
    answer = cached.hit.response
    mode = replay_mode(body)
    assert mode is not None  # validated by the pipeline, or checked by CacheFront.repeat
    stream, include_usage = mode
    if not stream:
        return LocalAnswer(headers=headers, json_body=answer.replay_json())
    return LocalAnswer(headers=headers,
                       events=tuple(answer.replay_sse(include_usage=include_usage)))


# ---------------------------------------------------------------- request bodies

def check_media_type(ctype: str) -> None:
    """``ctype``: the media type without parameters, lower case; "" when the header is absent
    (curl -d without -H, bare HTTP clients: the body is read as JSON)."""
    if ctype not in (JSON_TYPE, "") and not ctype.endswith("+json"):
        raise UnsupportedMediaType(f"Content-Type must be application/json (got {ctype!r}).")


def check_raw_encoding(header: str | None) -> None:
    """For a door handed the body as sent (ext_proc): a compressed body is refused, since its
    size after inflating is not known before it is read; Envoy's decompressor filter, placed
    before ext_proc, inflates it within Envoy's own buffer limit."""
    if header is not None and header.strip().lower() not in ("", "identity"):
        raise UnsupportedMediaType(
            f"Content-Encoding {header.strip()!r} is not read through Envoy; send the body "
            "uncompressed, or add Envoy's decompressor filter before ext_proc.",
            code="unsupported_content_encoding")


def media_type(header: str | None) -> str:
    """The media type of a Content-Type header value (parameters dropped), "" when absent."""
    if header is None:
        return ""
    return header.split(";", 1)[0].strip().lower() or "application/octet-stream"


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The request body. NaN and Infinity are refused (not JSON; no backend could be sent
    them); an unpaired surrogate escape is read, and refused later by name."""
    try:
        body = json_codec.loads(raw, constants=False)
    except ValueError as e:  # UnicodeDecodeError included
        raise BadRequest(f"The body is not valid JSON: {e}") from None
    except RecursionError:  # thousands of nested brackets
        raise BadRequest("The body is not valid JSON: nested too deeply.") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body


# ---------------------------------------------------------------- errors

# errors_total{reason} for a RouterError, by status.
_REASONS = {400: "bad_request", 404: "unknown_model", 405: "bad_request", 413: "bad_request",
            415: "bad_request", 429: "overloaded", 503: "classifier_unavailable"}


def error_reason(err: RouterError) -> str:
    if isinstance(err, BackendError):  # a backend's 503 is no classifier outage
        return "backend_error"
    return _REASONS.get(err.status, "backend_error")


def error_answer(err: RouterError, headers: dict[str, str] | None = None) -> LocalAnswer:
    """A domain error as OpenAI JSON with its status; the error's own headers (e.g.
    ``x-router-pii-check`` on a fail-closed 503) and ``Retry-After`` when it has one."""
    h = {**getattr(err, "headers", {}), **(headers or {})}
    retry = getattr(err, "retry_after_s", None)
    if retry:
        h["Retry-After"] = str(max(1, round(retry)))
    return LocalAnswer(status=err.status, headers=h, json_body=err.to_openai())


def backend_error(e: UpstreamError) -> BackendError:
    """The backend's failure (already normalised to OpenAI's shape) as the router's error."""
    err = e.body.get("error", {}) if isinstance(e.body, dict) else {}
    return BackendError(e.status, str(err.get("message", "backend error")),
                        type=err.get("type"), code=err.get("code"), param=err.get("param"))


def models_answer(alias: str, models: Iterable[str], now: int) -> LocalAnswer:
    """``GET /v1/models``: the routing alias and every configured model."""
    data = [{"id": m, "object": "model", "created": now, "owned_by": "router-svc"}
            for m in (alias, *models)]
    return LocalAnswer(json_body={"object": "list", "data": data})


def not_served(path: str) -> RouterError:
    """A path the router does not serve: 404, never forwarded unchecked."""
    if path.rstrip("/").endswith("/responses"):
        return RouterError(
            "The Responses API (/v1/responses) is not supported by this router yet; send the "
            "request to /v1/chat/completions.", status=404, type="invalid_request_error",
            code="not_found")
    return RouterError(f"This router does not serve {path}.", status=404,
                       type="invalid_request_error", code="not_found")
