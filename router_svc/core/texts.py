"""Every text a request carries to a model, with where it lives, and redactions written back.

The PII guard must read everything the backend will: every message's content (any part type
that carries a string ``text``), names, tool calls and their JSON arguments, tool results,
and what the request sends besides messages (tool descriptions, ``prediction``, ``suffix``,
``metadata``, ``user``, stop sequences, ...). So the whole body is walked and only what is
known to hold no text is skipped: enumerations and ids, and binary or remote content (an
image, audio, a file), which is reported as unscannable instead.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router_svc.core.errors import BadRequest

Step = str | int
Path = tuple[Step, ...]
# A path step: the string reached so far holds JSON; the steps after it are inside it.
IN_JSON = "(json)"
# The last step of a path that names a dict key itself rather than its value.
KEY = "(key)"
# The last step of a message's text parts read as one text (``Segment.parts``).
JOINED = "(joined)"

MAX_DEPTH = 32

# Top-level request fields that hold no text a model reads.
NOT_TEXT_FIELDS = frozenset({
    "model", "stream", "stream_options", "n", "seed", "logit_bias", "service_tier",
    "reasoning_effort", "modalities", "encoding_format", "parallel_tool_calls", "store",
})
# Keys of the request's own structure whose values are enumerations or ids. Skipped only
# where they look like one (a word, no spaces) and never inside free-form data (metadata,
# tool-call arguments), where a key is whatever the client chose to call its value.
STRUCTURE_KEYS = frozenset({"type", "role", "id", "tool_call_id", "detail", "format", "object",
                            "voice"})
FREE_FORM = frozenset({"metadata"})
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_.:/-]{0,63}")
# Content parts whose payload the router cannot read (binary, or fetched by the backend).
OPAQUE_PARTS = frozenset({"image_url", "input_image", "image", "input_audio", "audio",
                          "file", "input_file", "video_url"})
MESSAGE_ROLES: tuple[str, ...] = ("system", "developer", "user", "assistant", "tool", "function")
# Strings that hold JSON the model reads as such (tool-call arguments).
JSON_STRINGS = frozenset({"arguments"})


@dataclass(frozen=True)
class Segment:
    """One text of the request: what it says, whose it is and where it lives.

    ``role``: the message's role for what is inside ``messages``, else the top-level field's
    name (``prompt``, ``suffix``, ``tools``, ...). Text is never changed here; the classifier
    reads it folded (``core.normalize``) and redactions replace the original characters.
    """

    text: str
    role: str
    path: Path
    # For a JOINED segment: (path, start in ``text``) of each part, in order ("\n" between).
    parts: tuple[tuple[Path, int], ...] = ()

    @property
    def param(self) -> str:
        return param_name(self.path)

    @property
    def message_index(self) -> int | None:
        return self.path[1] if self.path[:1] == ("messages",) and len(self.path) > 1 \
            else None  # type: ignore[return-value]


def param_name(path: Path) -> str:
    """``messages[2].tool_calls[0].function.arguments`` (inside JSON: ``...arguments{card}``)."""
    out, inside = "", False
    for step in path:
        if step == IN_JSON:
            inside = True
            out += "{"
        elif step in (KEY, JOINED):
            out += step
        elif isinstance(step, int):
            out += f"[{step}]"
        else:
            out += ("" if not out or (inside and out.endswith("{")) else ".") + step
    return out + ("}" if inside else "")


@dataclass(frozen=True)
class Scan:
    segments: tuple[Segment, ...]
    unscannable: tuple[str, ...]  # params of content the router cannot read


def scan_body(body: Mapping[str, Any]) -> Scan:
    """Every non-empty string of ``body`` that a model may read, in body order."""
    segments: list[Segment] = []
    opaque: list[str] = []
    for key, value in body.items():
        if key in NOT_TEXT_FIELDS:
            continue
        if key == "messages" and isinstance(value, list):
            for i, msg in enumerate(value):
                role = msg.get("role") if isinstance(msg, dict) else None
                start = len(segments)
                _walk(msg, ("messages", i), str(role or "user"), segments, opaque, 1)
                joined = _joined(segments[start:], ("messages", i, "content"))
                if joined is not None:
                    segments.append(joined)
        else:  # a field's name is its role; one that is also a message role is told apart
            role = f"{key}_field" if key in MESSAGE_ROLES else key
            _walk(value, (key,), role, segments, opaque, 0, key_step=key,
                  free=key in FREE_FORM)
    return Scan(tuple(segments), tuple(opaque))


def _walk(value: Any, path: Path, role: str, out: list[Segment], opaque: list[str],
          depth: int, key_step: Step | None = None, free: bool = False) -> None:
    if depth > MAX_DEPTH:
        raise BadRequest(f"'{param_name(path)}' is nested too deeply (at most {MAX_DEPTH}).",
                         param=param_name(path))
    if isinstance(value, str):
        if not value:
            return
        if key_step in JSON_STRINGS:
            try:
                inner = json.loads(value)
            except ValueError:
                inner = None
            if isinstance(inner, dict | list):
                _walk(inner, (*path, IN_JSON), role, out, opaque, depth + 1, free=True)
                return
        if not free and key_step in STRUCTURE_KEYS and _IDENTIFIER.fullmatch(value):
            return
        out.append(Segment(value, role, path))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, (*path, i), role, out, opaque, depth + 1, key_step, free)
    elif isinstance(value, dict):
        kind = value.get("type")
        if not free and len(path) > 1 and path[-2] == "content" and isinstance(kind, str) and (
                kind in OPAQUE_PARTS or not isinstance(value.get(kind, ""), str)):
            # A content part of another modality (its payload under a key named after its
            # type, as image_url and input_audio are): nothing here the router can read.
            opaque.append(f"{param_name(path)} ({kind})")
            return
        for k, v in value.items():
            if not isinstance(k, str):
                continue
            _walk(v, (*path, k), role, out, opaque, depth + 1, k, free)
            if k and not k.isidentifier():  # a key that is prose, not a field name
                out.append(Segment(k, role, (*path, k, KEY)))


def _joined(segs: list[Segment], content: Path) -> Segment | None:
    """A message's text parts read as one text too: a value split across parts ("4111 1111"
    in one, "1111 1111" in the next) is one value to the model."""
    parts = [s for s in segs if s.path[:3] == content and len(s.path) == 5
             and s.path[4] == "text"]
    if len(parts) < 2:
        return None
    starts, pos = [], 0
    for s in parts:
        starts.append((s.path, pos))
        pos += len(s.text) + 1
    return Segment("\n".join(s.text for s in parts), parts[0].role, (*content, JOINED),
                   tuple(starts))


def split_joined(seg: Segment, start: int, end: int) -> list[tuple[Path, int, int]]:
    """The span ``[start, end)`` of a JOINED segment as spans of its parts."""
    out = []
    for k, (path, at) in enumerate(seg.parts):
        nxt = seg.parts[k + 1][1] - 1 if k + 1 < len(seg.parts) else len(seg.text)
        a, b = max(start, at), min(end, nxt)
        if a < b:
            out.append((path, a - at, b - at))
    return out


# --------------------------------------------------------------------------- write back


def apply_redactions(body: Mapping[str, Any], replacements: Mapping[Path, str]) -> dict:
    """A deep copy of ``body`` with the text at each path replaced; JSON strings (tool-call
    arguments) are re-encoded, so they stay valid JSON. A path that does not hold a string is
    a programming error (it did not come from ``scan_body`` of this body): ``ValueError``."""
    out = copy.deepcopy(dict(body))
    _apply(out, dict(replacements))
    return out


def _apply(root: Any, replacements: dict[Path, str]) -> None:
    nested: dict[Path, dict[Path, str]] = {}
    keys: list[tuple[Path, str]] = []
    for path, text in replacements.items():
        if IN_JSON in path:
            cut = path.index(IN_JSON)
            nested.setdefault(path[:cut], {})[path[cut + 1:]] = text
        elif path and path[-1] == KEY:
            keys.append((path[:-1], text))
        else:
            parent, last = _parent(root, path)
            if not isinstance(parent[last], str):
                raise ValueError(f"{param_name(path)} holds no text")
            parent[last] = text
    for path, inner in nested.items():
        parent, last = _parent(root, path)
        value = json.loads(parent[last])
        holder = [value]
        _apply(holder, {(0, *p): t for p, t in inner.items()})
        parent[last] = json.dumps(holder[0], ensure_ascii=False)
    for path, text in sorted(keys, key=lambda kt: -len(kt[0])):  # deepest first
        parent, old = _parent(root, path)
        if not isinstance(parent, dict) or old not in parent:
            raise ValueError(f"{param_name(path)} is not a key of this body")
        new = text
        while new in parent and new != old:
            new += "_"
        items = [(new if k == old else k, v) for k, v in parent.items()]
        parent.clear()
        parent.update(items)


def _parent(root: Any, path: Path) -> tuple[Any, Step]:
    if not path:
        raise ValueError("an empty path holds no text")
    node = root
    try:
        for step in path[:-1]:
            node = node[step]
        node[path[-1]]
    except (KeyError, IndexError, TypeError):
        raise ValueError(f"{param_name(path)} is not a text of this body") from None
    return node, path[-1]
