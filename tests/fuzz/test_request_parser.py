"""Fuzz the request parsers: whatever a client sends, the answer is the parsed request or a
``RouterError`` with a 4xx status (rendered as OpenAI's error), never another exception.

- ``flow.answers.parse_json_object``: any bytes;
- ``core.messages.parse_chat_request`` / ``parse_completion_request`` (``core.params`` with
  them): any JSON object, from junk to bodies drawn from the OpenAPI schema and then broken;
- ``flow.answers.media_type`` / ``check_media_type``: any Content-Type header;
- ``core.endpoints.canonical_path``: any path (the ext_proc door's path check).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from router_svc.core.endpoints import BadPath, canonical_path
from router_svc.core.errors import RouterError, UnsupportedMediaType
from router_svc.core.messages import (
    ChatRequest,
    CompletionRequest,
    parse_chat_request,
    parse_completion_request,
)
from router_svc.doors.http.openapi import openapi_document
from router_svc.flow.answers import check_media_type, media_type, parse_json_object
from tests.fuzz.strategies import (
    EDGE_NUMBERS,
    EDGE_STRINGS,
    FUZZ,
    INT64,
    encode,
    from_schema,
    json_values,
)

DOC = openapi_document()
CHAT = from_schema({"$ref": "#/components/schemas/ChatCompletionRequest"}, DOC)
COMPLETION = from_schema({"$ref": "#/components/schemas/CompletionRequest"}, DOC)


def assert_client_error(e: RouterError) -> None:
    assert 400 <= e.status < 500, repr(e)
    err = e.to_openai()["error"]
    assert isinstance(err["message"], str) and err["message"], repr(e)
    assert err["type"] == "invalid_request_error", repr(e)
    assert err["param"] is None or isinstance(err["param"], str), repr(e)


@st.composite
def mutated(draw: st.DrawFn, raw: bytes) -> bytes:
    """``raw`` with a few bytes flipped, cut out or inserted: JSON that is almost JSON."""
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(("flip", "cut", "insert")))
        if how == "flip" and i < len(data):
            data[i] ^= draw(st.integers(1, 255))
        elif how == "cut":
            del data[i:i + draw(st.integers(1, 8))]
        else:
            data[i:i] = draw(st.sampled_from((b"\xff", b"\x00", b"\"", b"[", b"{", b",", b"\\",
                                              b"\\ud800", b"NaN", b"1e999", b"\xef\xbb\xbf")))
    return bytes(data)


json_bytes = st.builds(encode, json_values, ascii_only=st.booleans())
request_bytes = st.one_of(
    st.binary(max_size=200),
    json_bytes,
    json_bytes.flatmap(mutated),
    st.builds(encode, CHAT | COMPLETION, ascii_only=st.booleans()).flatmap(mutated),
)


@FUZZ
@given(raw=request_bytes)
@example(raw=b"[" * 100_000)  # deeper than any recursion limit
@example(raw=b'{"a":' * 50_000)
@example(raw=b"\xef\xbb\xbf{}")  # a UTF-8 byte-order mark
@example(raw=b'{"t": NaN}')
@example(raw=b'{"t": 1e999}')
@example(raw=b'{"s": "\\ud800"}')
@example(raw=b'{"n": ' + b"9" * 5000 + b"}")
def test_parse_json_object_answers_a_dict_or_a_4xx(raw: bytes) -> None:
    try:
        body = parse_json_object(raw)
    except RouterError as e:
        assert_client_error(e)
    else:
        assert isinstance(body, dict)


# What the standard library reads, the router reads alike (json_codec's promise).
clean_values = st.recursive(
    st.none() | st.booleans() | st.integers(*INT64) | st.text(max_size=10)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=10)


@FUZZ
@given(body=st.dictionaries(st.text(max_size=5), clean_values, max_size=4),
       ascii_only=st.booleans())
def test_parse_json_object_reads_what_json_reads(body: dict[str, Any], ascii_only: bool) -> None:
    raw = json.dumps(body, ensure_ascii=ascii_only).encode()
    assert parse_json_object(raw) == json.loads(raw)


@st.composite
def broken(draw: st.DrawFn, body: dict[str, Any]) -> dict[str, Any]:
    """A schema-valid body with one field (or a field of the first message) replaced."""
    body = dict(body)
    junk = draw(json_values | st.sampled_from(EDGE_NUMBERS) | st.sampled_from(EDGE_STRINGS))
    messages = body.get("messages")
    if isinstance(messages, list) and messages and draw(st.booleans()):
        first = dict(messages[0])
        first[draw(st.sampled_from(("role", "content", "name", "tool_calls")))] = junk
        body["messages"] = [first, *messages[1:]]
    else:
        body[draw(st.sampled_from(sorted(body) or ["model"]))] = junk
    return body


bodies = st.one_of(
    st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    CHAT, COMPLETION, CHAT.flatmap(broken), COMPLETION.flatmap(broken),
)


@FUZZ
@given(body=bodies)
@example(body={"model": "auto", "messages": [{"role": "user", "content": "\ud800"}]})
@example(body={"model": "auto", "prompt": [[1, 2]], "logprobs": True})
@example(body={"model": "auto", "messages": [{"role": "user", "content": [{"type": 1}]}],
               "logit_bias": {"1": float("nan")}})
def test_request_checks_answer_a_request_or_a_4xx(body: dict[str, Any]) -> None:
    for parse, kind in ((parse_chat_request, ChatRequest),
                        (parse_completion_request, CompletionRequest)):
        try:
            req = parse(body)
        except RouterError as e:
            assert_client_error(e)
        else:
            assert isinstance(req, kind)
            assert req.model == body["model"]


@FUZZ
@given(header=st.none() | st.text(max_size=40)
       | st.sampled_from(("application/json", "Application/JSON; charset=utf-8",
                          "application/problem+json", " ; ", "", "text/plain")))
def test_media_type_checks(header: str | None) -> None:
    ctype = media_type(header)
    assert ctype == ctype.strip().lower() or header is None
    try:
        check_media_type(ctype)
    except UnsupportedMediaType as e:
        assert_client_error(e)
        assert e.status == 415


@FUZZ
@given(path=st.text(max_size=40)
       | st.lists(st.sampled_from(("/", "v1", "chat", "completions", ".", "..", "%2e", "%2E%2e",
                                   "%63", "%2f", "%5C", "\\", "//", "?", "#", "%", "%zz", "~")),
                  max_size=12).map("".join))
@example(path="/v1/%63hat/completions")
@example(path="/v1/chat/../chat/./completions/")
@example(path="%%330")
def test_canonical_path_is_a_path_or_refused(path: str) -> None:
    try:
        canon = canonical_path(path)
    except BadPath:
        return
    assert canon.startswith("/")
    assert "//" not in canon and "/./" not in canon and "/../" not in canon
    if "%" not in canon:  # "%%330" is "/%30": decoding once is what a backend does
        assert canonical_path(canon) == canon
