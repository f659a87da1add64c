"""Backend failures as OpenAI error objects: the reasons, the exception the proxy raises, and
the normalisation of whatever error body a backend sent (OpenAI, Ollama, vLLM, FastAPI).

Pure functions, shared by the HTTP proxy and the Envoy ext_proc server.
"""

from __future__ import annotations

import json
from typing import Any

MAX_ERROR_TEXT = 500

# Upstream failure reasons (``UpstreamError.reason``); metrics.ERROR_REASONS lists them too.
BACKEND_UNREACHABLE = "backend_unreachable"
BACKEND_TIMEOUT = "backend_timeout"
BACKEND_ERROR = "backend_error"
BACKEND_BAD_RESPONSE = "backend_bad_response"
BACKEND_STREAM_ABORTED = "backend_stream_aborted"
BACKEND_BUSY = "backend_busy"  # every pooled connection in use for the whole pool timeout


class UpstreamError(Exception):
    """A backend call failed. ``body`` is an OpenAI error object: ``{"error": {...}}``.

    The message names the backend model, never its URL or API key.
    """

    def __init__(self, status: int, body: dict[str, Any], reason: str = BACKEND_ERROR,
                 retry_after_s: float | None = None) -> None:
        self.status = status
        self.body = body
        self.reason = reason
        self.retry_after_s = retry_after_s  # the backend's Retry-After, when it sent one
        super().__init__(f"{status} {reason}: {body.get('error', {}).get('message', '')}")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds only; an HTTP date is ignored)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def sse_error_event(error: UpstreamError) -> bytes:
    """An SSE event carrying the OpenAI error body, for failures after the headers went."""
    return b"data: " + json.dumps(error.body).encode() + b"\n\n"


def _error_type(status: int) -> str:
    """As ``errors.BackendError``: the client's fault below 500, the server's from 500."""
    return "invalid_request_error" if 400 <= status < 500 else "server_error"


def openai_error(
    status: int, message: str, err_type: str | None = None, code: Any = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": err_type or _error_type(status),
            "param": None,
            "code": code,
        }
    }


def _truncate(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def normalise_error_body(status: int, raw: bytes, model: str) -> dict[str, Any]:
    """A backend's error answer in OpenAI format, whatever it looked like.

    Understands OpenAI ``{"error": {...}}``, Ollama ``{"error": "..."}``, vLLM
    ``{"object": "error", "message": ...}`` and FastAPI ``{"detail": ...}``; anything else
    (including non-JSON) is wrapped, truncated, into the message.
    """
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        parsed: Any = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: JSON nested beyond Python's stack
        parsed = None
    message: Any = None
    err_type: Any = None
    code: Any = None
    param: Any = None
    if isinstance(parsed, dict):
        err = parsed.get("error")
        if isinstance(err, dict):
            message, err_type = err.get("message"), err.get("type")
            code, param = err.get("code"), err.get("param")
        elif isinstance(err, str):
            message = err
        elif "message" in parsed:
            message, err_type, code = parsed.get("message"), parsed.get("type"), parsed.get("code")
        elif "detail" in parsed:
            detail = parsed["detail"]
            message = detail if isinstance(detail, str) else json.dumps(detail)
    if not isinstance(message, str) or not message:
        shown = _truncate(text) if text else "(empty body)"
        message = f"backend for model '{model}' answered HTTP {status}: {shown}"
    body = openai_error(
        status,
        _truncate(message),
        err_type if isinstance(err_type, str) and err_type else None,
        code if isinstance(code, str | int) else None,
    )
    if isinstance(param, str):
        body["error"]["param"] = param
    return body
