"""answers.py: the request body reader (orjson first, the standard library for the rest)."""

from __future__ import annotations

import json

import pytest

from router_svc.core.errors import BadRequest
from router_svc.flow.answers import parse_json_object


@pytest.mark.parametrize("raw", [
    b'{"model": "auto", "messages": [{"role": "user", "content": "caf\\u00e9 \xf0\x9f\x98\x80"}]}',
    b'\xef\xbb\xbf{"model": "auto"}',          # a UTF-8 byte-order mark (orjson refuses it)
    b'{"a": "\\ud800"}',                         # an unpaired surrogate (orjson refuses it)
    b'{"a": 1, "a": 2}',                         # duplicate keys: the last wins, as in json
    b'{"n": 18446744073709551615, "f": 1e-7}',
])
def test_reads_what_the_standard_library_reads(raw: bytes) -> None:
    assert parse_json_object(raw) == json.loads(raw)


@pytest.mark.parametrize("raw, words", [
    (b"", "not valid JSON"),
    (b"{", "not valid JSON"),
    (b"\xff\xfe{}", "not valid JSON"),
    (b'{"a": 1} x', "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'"text"', "must be a JSON object"),
    (b"[" * 5000 + b"]" * 5000, "not valid JSON"),
    (b'{"temperature": NaN}', "NaN is not a JSON value"),
    (b'\xef\xbb\xbf{"top_p": -Infinity}', "-Infinity is not a JSON value"),
])
def test_bad_bodies_are_400(raw: bytes, words: str) -> None:
    with pytest.raises(BadRequest) as e:
        parse_json_object(raw)
    assert words in str(e.value)
