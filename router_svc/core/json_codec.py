"""JSON on the per-request paths: orjson (several times faster than the standard library),
and the standard library for what orjson refuses, so both read and write the same documents.

orjson refuses a UTF-8 byte-order mark, an unpaired surrogate escape, NaN/Infinity (reading)
and integers beyond 64 bits (writing; reading, it turns them into floats, and no OpenAI
parameter takes one).
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def _not_json(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not a JSON value", name, 0)


def loads(raw: bytes, *, constants: bool = True) -> Any:
    """Parse ``raw``. ``constants=False`` refuses NaN and Infinity, which are not JSON.
    Raises ``ValueError`` (``UnicodeDecodeError`` included) or ``RecursionError``."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw, parse_constant=None if constants else _not_json)


def dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj).encode("utf-8")
