"""Domain errors, each carrying the HTTP status and the OpenAI error shape.

The front doors render any ``RouterError`` with ``to_openai()`` and ``status``; nothing below
knows about aiohttp, so the decision code can raise them freely and a client mistake can never
surface as a 500.
"""

from __future__ import annotations

from typing import Any


class RouterError(Exception):
    """Base error: ``status`` is the HTTP status, ``type``/``code``/``param`` the OpenAI fields."""

    # Class defaults; subclasses override, instances may override per raise.
    status: int = 500
    type: str = "server_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        # Instance attributes shadow the class defaults only when given.
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type

    def to_openai(self) -> dict[str, Any]:
        """The body OpenAI clients expect: ``{"error": {message, type, param, code}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status}, type={self.type!r}, "
            f"code={self.code!r}, param={self.param!r}, message={self.message!r})"
        )


class BadRequest(RouterError):
    """The request body is malformed; ``param`` names the offending field."""

    status = 400
    type = "invalid_request_error"


class PayloadTooLarge(RouterError):
    status = 413
    type = "invalid_request_error"
    default_code = "payload_too_large"


class UnsupportedMediaType(RouterError):
    status = 415
    type = "invalid_request_error"
    default_code = "unsupported_media_type"


class UnscannableContent(RouterError):
    """Content the PII check cannot read (an image, audio, a file) for a model that may see no
    PII, refused by configuration (``classifier.pii_model.unscannable: reject``)."""

    status = 400
    type = "invalid_request_error"
    default_code = "unscannable_content"


class UnknownModel(RouterError):
    """404 with OpenAI's own code, so SDKs raise ``NotFoundError`` as they would upstream."""

    status = 404
    type = "invalid_request_error"
    default_code = "model_not_found"

    def __init__(self, message: str, *, param: str | None = "model", **kw: Any) -> None:
        super().__init__(message, param=param, **kw)


class Unauthorized(RouterError):
    """401 as OpenAI answers a missing or wrong key (SDKs raise ``AuthenticationError``)."""

    status = 401
    type = "invalid_request_error"
    default_code = "invalid_api_key"


class Forbidden(RouterError):
    """403: the key is valid but may not use this model (SDKs raise ``PermissionDeniedError``)."""

    status = 403
    type = "invalid_request_error"
    default_code = "model_not_allowed"

    def __init__(self, message: str, *, param: str | None = "model", **kw: Any) -> None:
        super().__init__(message, param=param, **kw)


class ServiceUnavailable(RouterError):
    """The router cannot decide safely (e.g. classifier down and policy is fail-closed)."""

    status = 503
    type = "server_error"
    default_code = "service_unavailable"


class BackendError(RouterError):
    """A backend failure relayed to the client with the backend's own status.

    4xx from a backend is the client's fault as far as OpenAI SDKs are concerned, so the type
    follows the status unless the caller knows better (e.g. the backend's own error type).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        if type is None:
            type = "invalid_request_error" if 400 <= status < 500 else "server_error"
        super().__init__(message, param=param, code=code, status=status, type=type)


class Overloaded(RouterError):
    """429: a bounded queue is full. ``retry_after_s`` becomes a ``Retry-After`` header."""

    status = 429
    type = "rate_limit_error"
    default_code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s


def json_type(v: Any) -> str:
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


def invalid_type(param: str, expected: str, got: Any) -> BadRequest:
    return BadRequest(
        f"Invalid type for '{param}': expected {expected}, but got {json_type(got)} instead.",
        param=param,
        code="invalid_type",
    )
