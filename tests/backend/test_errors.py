"""backend_errors.py: any backend's error body as an OpenAI error object."""

from __future__ import annotations

import pytest

from router_svc.backend.errors import normalise_error_body


@pytest.mark.parametrize(("raw", "message", "err_type"), [
    (b'{"error": {"message": "bad", "type": "invalid_request_error", "code": "x"}}', "bad",
     "invalid_request_error"),
    (b'{"error": "model not loaded"}', "model not loaded", "server_error"),
    (b'{"object": "error", "message": "too long", "type": "BadRequestError", "code": 400}',
     "too long", "BadRequestError"),
    (b'{"detail": "Not Found"}', "Not Found", "server_error"),
])
def test_normalise_error_body_shapes(raw, message, err_type):
    body = normalise_error_body(500, raw, "phi-4")
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"] == message
    assert body["error"]["type"] == err_type


def test_normalise_error_body_wraps_text_truncated():
    body = normalise_error_body(502, b"<html>" + b"x" * 5000 + b"</html>", "phi-4")
    message = body["error"]["message"]
    assert "phi-4" in message and "502" in message and "<html>" in message
    assert len(message) < 700
    assert body["error"]["type"] == "server_error"
