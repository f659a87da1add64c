"""The standard OpenAI request parameters checked as OpenAI checks them: a wrong type or range
is the client's 400 at the router, before any classification, not something a backend may
accept silently (``temperature: "hot"``) or reject later with its own error shape."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from router_svc.core.errors import BadRequest, invalid_type

Kind = Literal["number", "integer", "boolean", "string", "object", "array", "stop",
               "string_or_object", "logprobs"]


@dataclass(frozen=True)
class Param:
    kind: Kind
    lo: float | None = None
    hi: float | None = None


# name -> rule; both endpoints (completions' ``logprobs`` is an integer, see ``check``)
PARAMS: dict[str, Param] = {
    "temperature": Param("number", 0, 2),
    "top_p": Param("number", 0, 1),
    "n": Param("integer", 1, 128),
    "max_tokens": Param("integer", 1),
    "max_completion_tokens": Param("integer", 1),
    "presence_penalty": Param("number", -2, 2),
    "frequency_penalty": Param("number", -2, 2),
    "seed": Param("integer"),
    "stop": Param("stop"),
    "logprobs": Param("logprobs"),
    "top_logprobs": Param("integer", 0, 20),
    "logit_bias": Param("object"),
    "user": Param("string"),
    "best_of": Param("integer", 1, 20),
    "echo": Param("boolean"),
    "parallel_tool_calls": Param("boolean"),
    "store": Param("boolean"),
    "metadata": Param("object"),
    "tools": Param("array"),
    "tool_choice": Param("string_or_object"),
    "response_format": Param("object"),
    "suffix": Param("string"),
}
def _range_error(name: str, v: float, lo: float | None, hi: float | None) -> BadRequest:
    if lo is not None and v < lo:
        return BadRequest(f"Invalid '{name}': value below minimum. Expected a value >= {lo:g}, "
                          f"but got {v:g} instead.", param=name, code="invalid_value")
    return BadRequest(f"Invalid '{name}': value above maximum. Expected a value <= {hi:g}, "
                      f"but got {v:g} instead.", param=name, code="invalid_value")


def _number(name: str, v: Any, rule: Param, integer: bool) -> None:
    if isinstance(v, bool) or not isinstance(v, int if integer else int | float):
        raise invalid_type(name, "an integer" if integer else "a number", v)
    if (rule.lo is not None and v < rule.lo) or (rule.hi is not None and v > rule.hi):
        raise _range_error(name, v, rule.lo, rule.hi)


def check(body: Mapping[str, Any], *, completion: bool = False) -> None:
    """Raise ``BadRequest`` naming the first standard parameter with a wrong type or range.
    ``null`` means the default, as for OpenAI; unknown fields are the backend's business."""
    for name, rule in PARAMS.items():
        v = body.get(name)
        if v is None:
            continue
        kind = rule.kind
        if kind == "logprobs":  # chat: a boolean; completions: how many, 0..5
            kind = "integer" if completion else "boolean"
            rule = Param("integer", 0, 5) if completion else rule
        if kind in ("number", "integer"):
            _number(name, v, rule, kind == "integer")
        elif kind == "boolean" and not isinstance(v, bool):
            raise invalid_type(name, "a boolean", v)
        elif kind == "string" and not isinstance(v, str):
            raise invalid_type(name, "a string", v)
        elif kind == "object" and not isinstance(v, dict):
            raise invalid_type(name, "an object", v)
        elif kind == "array" and not isinstance(v, list):
            raise invalid_type(name, "an array", v)
        elif kind == "string_or_object" and not isinstance(v, str | dict):
            raise invalid_type(name, "a string or an object", v)
        elif kind == "stop":
            if isinstance(v, list):
                if len(v) > 4 or not all(isinstance(s, str) for s in v):
                    raise BadRequest("Invalid 'stop': expected a string or an array of at "
                                     "most 4 strings.", param="stop", code="invalid_value")
            elif not isinstance(v, str):
                raise invalid_type("stop", "a string or an array of strings", v)
    bias = body.get("logit_bias")
    if isinstance(bias, dict):
        for token, value in bias.items():
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not -100 <= value <= 100:
                raise BadRequest(f"Invalid 'logit_bias': the bias of token {token!r} must be a "
                                 "number from -100 to 100.", param="logit_bias",
                                 code="invalid_value")
