"""RouterError hierarchy: statuses, OpenAI types and codes, the rendered body."""

from __future__ import annotations

import pytest

from router_svc.core.errors import (
    BackendError,
    BadRequest,
    Overloaded,
    PayloadTooLarge,
    RouterError,
    ServiceUnavailable,
    UnknownModel,
    UnsupportedMediaType,
)


@pytest.mark.parametrize(
    ("err", "status", "type_", "code"),
    [
        (BadRequest("bad", param="messages"), 400, "invalid_request_error", None),
        (PayloadTooLarge("big"), 413, "invalid_request_error", "payload_too_large"),
        (UnsupportedMediaType("xml"), 415, "invalid_request_error", "unsupported_media_type"),
        (UnknownModel("no such model"), 404, "invalid_request_error", "model_not_found"),
        (ServiceUnavailable("triton down"), 503, "server_error", "service_unavailable"),
        (BackendError(502, "refused"), 502, "server_error", None),
        (BackendError(401, "bad key"), 401, "invalid_request_error", None),
        (Overloaded("queue full"), 429, "rate_limit_error", "overloaded"),
    ],
)
def test_status_type_code(err: RouterError, status: int, type_: str, code: str | None) -> None:
    assert isinstance(err, RouterError) and isinstance(err, Exception)
    assert (err.status, err.type, err.code) == (status, type_, code)
    body = err.to_openai()
    assert body == {"error": {"message": str(err), "type": type_, "param": err.param, "code": code}}


def test_param_and_overrides() -> None:
    e = BadRequest("Invalid type", param="messages[0].content", code="invalid_type")
    assert e.to_openai()["error"]["param"] == "messages[0].content"
    assert e.to_openai()["error"]["code"] == "invalid_type"
    assert UnknownModel("x").param == "model"
    b = BackendError(400, "context too long", type="invalid_request_error", code="ctx", param="m")
    assert (b.status, b.code, b.param) == (400, "ctx", "m")
    assert BadRequest.status == 400  # instance overrides never touch the class
    assert RouterError("x", status=418).status == 418 and RouterError.status == 500


def test_overloaded_retry_after() -> None:
    assert Overloaded("full", retry_after_s=1.5).retry_after_s == 1.5
    assert Overloaded("full").retry_after_s is None


def test_repr_names_the_class() -> None:
    assert repr(PayloadTooLarge("big")).startswith("PayloadTooLarge(status=413")
