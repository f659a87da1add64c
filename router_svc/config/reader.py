"""A small typed reader for YAML mappings: every problem recorded with its field path and
fix (``Ctx``), reading carries on so a file's problems are reported together. Settings
dataclasses are read generically from their fields, types and bounds (``read_section``).
No knowledge of the router's sections here; ``router_svc.config.loading`` uses it.
"""

from __future__ import annotations

import difflib
import math
import types
from collections.abc import Collection, Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

MISSING_VALUE: Any = object()  # "no default": the field is required


@dataclass
class Ctx:
    """What reading found wrong (errors) or suspicious (warnings), each with its field path."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def error(self, path: str, msg: str) -> None:
        self.errors.append(f"{path or '<top level>'}: {msg}")

    def warn(self, path: str, msg: str) -> None:
        self.warnings.append(f"{path or '<top level>'}: {msg}")


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def describe_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"the boolean {str(v).lower()}"
    if isinstance(v, str):
        return f"the string {v!r}"
    if isinstance(v, (int, float)):
        return f"the number {v}"
    return {list: "a list", dict: "a mapping"}.get(type(v), type(v).__name__)


def did_you_mean(word: str, options: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; expected one of: {', '.join(options)}"


def looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def read_mapping(
    ctx: Ctx, value: Any, path: str, keys: Collection[str], ignored: Collection[str] = ()
) -> dict[str, Any]:
    """Check ``value`` is a mapping with only known keys; ``None`` (empty section) is ``{}``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        ctx.error(path, f"expected a mapping, got {describe_value(value)}")
        return {}
    for k in value:
        if not isinstance(k, str):
            ctx.error(path, f"key {k!r} is not a string; quote it")
        elif k in ignored:
            ctx.warn(join_path(path, k), "ignored: the router serves its model through Triton")
        elif k not in keys:
            ctx.error(join_path(path, k), f"unknown key{did_you_mean(k, keys)}")
    return value


def read_scalar(
    ctx: Ctx,
    m: dict[str, Any],
    key: str,
    path: str,
    kind: Any,
    default: Any = MISSING_VALUE,
    *,
    hint: str = "",
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> Any:
    """Read ``m[key]`` as ``kind`` (str, int, float, bool or a Literal); record what is wrong.

    On error the default comes back (or a harmless stand-in), so reading carries on and every
    problem in the file is reported at once.
    """
    p = join_path(path, key)
    v = m.get(key)
    if v is None:  # absent, or written as an empty value
        if default is MISSING_VALUE:
            report_missing(ctx, p, hint or describe_kind(kind))
        return None if default is MISSING_VALUE else default
    fallback = None if default is MISSING_VALUE else default
    if get_origin(kind) is Literal:
        choices = get_args(kind)
        if v not in choices or not isinstance(v, str):
            shown = repr(v) if isinstance(v, str) else describe_value(v)
            ctx.error(p, f"{shown} is not allowed; use one of: {', '.join(choices)}")
            return fallback
        return v
    if kind is str:
        if not isinstance(v, str) or not v.strip():
            ctx.error(p, f"expected a non-empty string, got {describe_value(v)}")
            return fallback
        return v
    if kind is bool:
        if not isinstance(v, bool):
            ctx.error(p, f"expected true or false, got {describe_value(v)}")
            return fallback
        return v
    # Numbers. bool is an int in Python, but ``threshold: true`` is a mistake, not 1.
    ok = isinstance(v, int) if kind is int else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok:
        fix = " (remove the quotes)" if isinstance(v, str) and looks_numeric(v) else ""
        ctx.error(p, f"expected {describe_kind(kind)}, got {describe_value(v)}{fix}")
        return fallback
    if not math.isfinite(v):
        ctx.error(p, f"expected a finite number, got {v}")
        return fallback
    if (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi):
        rng = [f"{'>' if lo_open else '>='} {lo:g}"] if lo is not None else []
        rng += [f"<= {hi:g}"] if hi is not None else []
        ctx.error(p, f"{v} is out of range; use a value {' and '.join(rng)}")
        return fallback
    return v if kind is int else float(v)


def describe_kind(kind: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        kind, "a value"
    )


def report_missing(ctx: Ctx, path: str, hint: str) -> None:
    ctx.error(path, f"missing required field; add it ({hint})")


def read_list(ctx: Ctx, m: dict[str, Any], key: str, path: str) -> list[Any]:
    v = m.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        ctx.error(join_path(path, key), f"expected a list, got {describe_value(v)}")
        return []
    return v


def read_number_map(ctx: Ctx, m: dict[str, Any], key: str, path: str, kind: Any,
                    default: Mapping[str, Any], bounds: Mapping[str, Any]
                    ) -> Mapping[str, Any]:
    """``m[key]`` as a read-only mapping of names to numbers (``kind``: int or float), each
    value within ``bounds``; absent or null: ``default``. What the names must be is the
    caller's check (``router_svc.config.loading``)."""
    p = join_path(path, key)
    raw = m.get(key)
    if raw is None:
        return default
    if not isinstance(raw, dict):
        ctx.error(p, f"expected a mapping of names to numbers, got {describe_value(raw)}")
        return default
    out: dict[str, Any] = {}
    for name in raw:
        if not isinstance(name, str):
            ctx.error(p, f"key {name!r} is not a string; quote it")
            continue
        v = read_scalar(ctx, raw, name, p, kind, hint=describe_kind(kind), **bounds)
        if v is not None:
            out[name] = v
    return types.MappingProxyType(out)


def unoptional(kind: Any) -> Any:
    """``X | None`` -> ``X`` (an optional field reads like its type, null gives the default)."""
    if get_origin(kind) is types.UnionType:
        args = [a for a in get_args(kind) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return kind


def read_section(ctx: Ctx, raw: Any, path: str, cls: Any, ignored: Collection[str] = ()) -> Any:
    """Read a flat (or nested) settings dataclass generically from its fields and bounds.

    Paths are read as strings; ``_resolve_paths`` makes relative ones relative to the file.
    """
    hints = get_type_hints(cls)
    fs = fields(cls)
    m = read_mapping(ctx, raw, path, [f.name for f in fs], ignored)
    kw: dict[str, Any] = {}
    for f in fs:
        kind = unoptional(hints[f.name])
        default = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
        if is_dataclass(kind):
            sub_ignored = f.metadata.get("ignored", ())
            kw[f.name] = read_section(ctx, m.get(f.name), join_path(path, f.name), kind,
                                      sub_ignored)
        elif kind is Path:
            v = read_scalar(ctx, m, f.name, path, str, default)
            kw[f.name] = Path(v).expanduser() if isinstance(v, str) else v
        elif get_origin(kind) in (dict, Mapping):  # Mapping[str, float]: names to numbers
            kw[f.name] = read_number_map(ctx, m, f.name, path, get_args(kind)[1], default,
                                         {k: f.metadata[k] for k in ("lo", "hi", "lo_open")
                                          if k in f.metadata})
        elif get_origin(kind) is tuple:  # tuple[str, ...]: a list of strings
            items = read_list(ctx, m, f.name, path) if f.name in m else list(default)
            for i, item in enumerate(items):
                if not isinstance(item, str):
                    ctx.error(f"{join_path(path, f.name)}[{i}]",
                              f"expected a string, got {describe_value(item)}")
            kw[f.name] = tuple(i for i in items if isinstance(i, str))
        else:
            bounds = {k: f.metadata[k] for k in ("lo", "hi", "lo_open") if k in f.metadata}
            kw[f.name] = read_scalar(ctx, m, f.name, path, kind, default, **bounds)
    return cls(**kw)


