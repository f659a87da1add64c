"""Hypothesis strategies and a small JSON Schema checker shared by the fuzz tests and the
OpenAPI property run (``tests/doors/http/test_openapi.py``).

``from_schema`` turns the router's own OpenAPI schemas into values, so the property run
follows the document; ``validate`` checks an answer against it. Both understand the subset of
JSON Schema that ``router_svc/doors/http/openapi.py`` uses ($ref, type, const, enum, anyOf,
properties/required, items, minItems/maxItems, minimum/maximum, minLength, pattern) and fail
loudly on anything else, so the document cannot grow a keyword they silently ignore.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

Schema = dict[str, Any]

# Bounded, and no example database: a failure is reproduced from the falsifying example
# Hypothesis prints, not replayed from one engineer's local history.
FUZZ = settings(max_examples=200, deadline=timedelta(seconds=2), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

INT64 = (-(2**63), 2**63 - 1)
# Numbers at the edges: beyond 64 bits, beyond a double, not JSON at all (NaN, Infinity).
EDGE_NUMBERS: tuple[Any, ...] = (0, -1, 1, 2**31, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**30),
                                 1e308, -1e308, 5e-324, 0.5, 2.0000001, float("inf"),
                                 float("-inf"), float("nan"), True, False)
# Strings JSON parsers disagree on: unpaired surrogates, NUL, BOM, bidi overrides, long runs.
EDGE_STRINGS: tuple[str, ...] = ("", "\ud800", "\udfff", "a\x00b", "\ufeff", "\u202e",
                                 "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "e\u0301" * 5, "x" * 5000, "auto", "null")

scalars = st.one_of(st.none(), st.booleans(), st.integers(*INT64), st.floats(allow_nan=False,
                    allow_infinity=False), st.text(max_size=20), st.sampled_from(EDGE_NUMBERS),
                    st.sampled_from(EDGE_STRINGS))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


def encode(value: Any, *, ascii_only: bool = True) -> bytes:
    """JSON bytes as a client might send them; NaN/Infinity as Python writes them (not JSON),
    and unpaired surrogates as raw (invalid UTF-8) bytes when not escaped."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------- the schema subset

_KNOWN = {"$ref", "type", "const", "enum", "anyOf", "properties", "required", "items",
          "minItems", "maxItems", "minimum", "maximum", "minLength", "pattern", "format",
          "additionalProperties", "description"}


def resolve(schema: Schema, doc: dict[str, Any]) -> Schema:
    while "$ref" in schema:
        node: Any = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    unknown = set(schema) - _KNOWN
    assert not unknown, f"keywords not understood by tests/fuzz/strategies.py: {unknown}"
    return schema


def _types(schema: Schema) -> list[str]:
    t = schema.get("type")
    if t is None:
        return ["object", "array", "string", "number", "boolean", "null"]
    return [t] if isinstance(t, str) else list(t)


def from_schema(schema: Schema, doc: dict[str, Any], *, depth: int = 0) -> st.SearchStrategy:
    """Values valid against ``schema`` (a JSON Schema of ``doc``, the OpenAPI document)."""
    schema = resolve(schema, doc)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([from_schema(s, doc, depth=depth) for s in schema["anyOf"]])
    return st.one_of([_of_type(t, schema, doc, depth) for t in _types(schema)])


def _of_type(t: str, schema: Schema, doc: dict[str, Any], depth: int) -> st.SearchStrategy:
    if t == "null":
        return st.none()
    if t == "boolean":
        return st.booleans()
    if t in ("integer", "number"):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if t == "integer":
            return st.integers(INT64[0] if lo is None else int(lo),
                               INT64[1] if hi is None else int(hi))
        return st.floats(lo, hi, allow_nan=False, allow_infinity=False) | (
            st.integers(int(lo) if lo is not None else -(10**6),
                        int(hi) if hi is not None else 10**6))
    if t == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return st.text(min_size=schema.get("minLength", 0), max_size=30)
    if t == "array":
        items = schema.get("items", {})
        inner = from_schema(items, doc, depth=depth + 1) if items else json_values
        return st.lists(inner, min_size=schema.get("minItems", 0),
                        max_size=min(schema.get("maxItems", 3), 3))
    assert t == "object", t
    return _object(schema, doc, depth)


def _object(schema: Schema, doc: dict[str, Any], depth: int) -> st.SearchStrategy:
    props: dict[str, Schema] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):  # a map (logit_bias): every value follows ``extra``
        return st.dictionaries(st.text(max_size=8), from_schema(extra, doc, depth=depth + 1),
                               max_size=3)
    if not props or depth > 3:
        return st.dictionaries(st.text(max_size=8), json_values, max_size=3)
    fixed = {k: from_schema(props[k], doc, depth=depth + 1) if k in props else json_values
             for k in required}
    optional = {k: from_schema(v, doc, depth=depth + 1) for k, v in props.items()
                if k not in required}
    return st.fixed_dictionaries(fixed, optional=optional)


# ---------------------------------------------------------------- checking answers

def errors(value: Any, schema: Schema, doc: dict[str, Any], at: str = "$") -> list[str]:
    """Where ``value`` breaks ``schema`` (empty: valid)."""
    schema = resolve(schema, doc)
    if "anyOf" in schema:
        if any(not errors(value, s, doc, at) for s in schema["anyOf"]):
            return []
        return [f"{at}: matches none of anyOf"]
    if "const" in schema and value != schema["const"]:
        return [f"{at}: {value!r} is not {schema['const']!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{at}: {value!r} not in {schema['enum']}"]
    if "type" in schema and not any(_is(value, t) for t in _types(schema)):
        return [f"{at}: {type(value).__name__} is not {schema['type']}"]
    out: list[str] = []
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{at}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{at}: {value} > {schema['maximum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            out.append(f"{at}: shorter than {schema['minLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{at}: does not match {schema['pattern']}")
    if isinstance(value, list):
        out += _array_errors(value, schema, doc, at)
    if isinstance(value, dict):
        out += _object_errors(value, schema, doc, at)
    return out


def _array_errors(value: list, schema: Schema, doc: dict[str, Any], at: str) -> list[str]:
    out = []
    if len(value) < schema.get("minItems", 0):
        out.append(f"{at}: fewer than {schema['minItems']} items")
    if len(value) > schema.get("maxItems", len(value)):
        out.append(f"{at}: more than {schema['maxItems']} items")
    if "items" in schema:
        for i, v in enumerate(value):
            out += errors(v, schema["items"], doc, f"{at}[{i}]")
    return out


def _object_errors(value: dict, schema: Schema, doc: dict[str, Any], at: str) -> list[str]:
    out = [f"{at}: missing {k!r}" for k in schema.get("required", ()) if k not in value]
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for k, v in value.items():
        if k in props:
            out += errors(v, props[k], doc, f"{at}.{k}")
        elif extra is False:
            out.append(f"{at}: unexpected {k!r}")
        elif isinstance(extra, dict):
            out += errors(v, extra, doc, f"{at}.{k}")
    return out


def _is(value: Any, t: str) -> bool:
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    py = {"null": type(None), "boolean": bool, "string": str, "array": list, "object": dict}
    return isinstance(value, py[t])
