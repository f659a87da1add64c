"""PII masked and restored (``pii_action: mask``): pure functions, no I/O.

The model receives numbered placeholders (``<PERSON_1>``, ``<EMAIL_ADDRESS_2>``) where the
request held values it may not see; the client receives its own values back in the answer.

- ``Numbering`` names the values of one request: the same (type, value) gets the same
  placeholder in every message, part and field; different values of one type get
  different numbers. A placeholder the client itself wrote is never reused.
- ``Mask`` is the mapping that results. It lives on the routed request only: its repr
  shows no value, and nothing here logs, caches or sends it.
- ``Mask.restore_answer`` puts the values back into a JSON answer; ``StreamRestorer`` does
  it chunk by chunk for a streamed one, holding back the end of a text that may be the start
  of a placeholder (``<PER`` | ``SON_1>``) until the next chunk decides it.

Placeholders the model invents (``<PERSON_7>`` where there were two) are left as they are.
Inside tool-call ``arguments`` (JSON text) a value goes back JSON-escaped, so the arguments
stay valid JSON.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from router_svc.classify.pii import PiiEntity, overlap_clusters

# What a placeholder looks like; only those of the request's mapping are replaced.
PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_[0-9]+>")
# Keys whose string holds JSON text (tool-call and function-call arguments).
_JSON_TEXT_KEYS = frozenset({"arguments"})
# Keys of a choice whose strings the model wrote (logprobs hold tokens: left alone).
_ANSWER_KEYS = ("message", "delta", "text")

Step = str | int
Where = tuple[Step, ...]  # a string's place inside one choice (tool calls by their "index")


class Numbering:
    """Placeholders for one request's values, in the order they are met."""

    def __init__(self, taken: Iterable[str] = ()) -> None:
        self._taken = frozenset(taken)  # placeholders the request already contains
        self._by_value: dict[tuple[str, str], str] = {}
        self._last: dict[str, int] = {}

    def placeholder(self, pii_type: str, value: str) -> str:
        key = (pii_type, value)
        found = self._by_value.get(key)
        if found is not None:
            return found
        n = self._last.get(pii_type, 0)
        while True:
            n += 1
            name = f"<{pii_type}_{n}>"
            if name not in self._taken:
                break
        self._last[pii_type] = n
        self._by_value[key] = name
        return name

    def mask(self, text: str, entities: Iterable[PiiEntity]) -> str:
        """``text`` with each entity replaced by its placeholder. Overlapping spans become
        one placeholder over their union, of the highest-scoring entity's type (as
        ``classify.pii.redact`` does), so no fragment of either survives."""
        clusters = overlap_clusters(text, entities)
        names = [self.placeholder(e.type, text[a:b]) for a, b, e in clusters]  # left to right
        for (a, b, _), name in zip(reversed(clusters), reversed(names), strict=True):
            text = f"{text[:a]}{name}{text[b:]}"
        return text

    def result(self) -> Mask:
        return Mask({name: value for (_, value), name in self._by_value.items()})


def taken_placeholders(texts: Iterable[str]) -> set[str]:
    """Placeholder-shaped strings a request already holds: numbers never handed out, so
    what the client wrote as such is not turned into someone's value in the answer."""
    out: set[str] = set()
    for t in texts:
        if "<" in t:
            out.update(PLACEHOLDER.findall(t))
    return out


@dataclass(frozen=True)
class Mask:
    """One request's placeholders and the values they stand for. Never logged: the repr
    shows only how many there are."""

    values: Mapping[str, str] = field(repr=False)

    def __repr__(self) -> str:
        return f"Mask({len(self.values)} placeholders)"

    def restore(self, text: str, *, in_json: bool = False) -> str:
        """``text`` with every known placeholder replaced by its value (JSON-escaped when
        ``text`` is JSON text, e.g. tool-call arguments)."""
        if "<" not in text:
            return text

        def value(m: re.Match[str]) -> str:
            v = self.values.get(m.group(0))
            if v is None:
                return m.group(0)
            return json.dumps(v, ensure_ascii=False)[1:-1] if in_json else v

        return PLACEHOLDER.sub(value, text)

    def restore_answer(self, body: Any) -> Any:
        """A JSON answer (chat or completion) with the values back in every choice's
        message (content, parts, refusal, reasoning, tool-call arguments) or text; anything
        else unchanged. ``body`` itself is not changed."""
        if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
            return body
        out = copy.copy(body)
        out["choices"] = [self._restore_choice(c) for c in body["choices"]]
        return out

    def _restore_choice(self, choice: Any) -> Any:
        if not isinstance(choice, dict):
            return choice
        out = dict(choice)
        for key in _ANSWER_KEYS:
            if key in out:
                out[key] = self._restore_value(out[key], key)
        return out

    def _restore_value(self, value: Any, key: Step) -> Any:
        if isinstance(value, str):
            return self.restore(value, in_json=key in _JSON_TEXT_KEYS)
        if isinstance(value, list):
            return [self._restore_value(v, key) for v in value]
        if isinstance(value, dict):
            return {k: self._restore_value(v, k) for k, v in value.items()}
        return value

    def stream(self) -> StreamRestorer:
        return StreamRestorer(self)


class StreamRestorer:
    """The values put back into a streamed answer, one parsed chunk at a time.

    Each string a choice streams (``delta.content``, ``delta.tool_calls[i].function
    .arguments``, a completion's ``text``, ...) is one text cut into pieces; a piece that
    ends with what may be the start of a known placeholder keeps that end back and sends it
    with the next piece of the same text. A choice's last chunk (``finish_reason``) sends
    every text of that choice in full; ``flush`` makes one more chunk of whatever is still
    held when the stream ends (before ``[DONE]``).
    """

    def __init__(self, mask: Mask) -> None:
        self.mask = mask
        self._held: dict[tuple[int, Where], str] = {}
        self._base: dict[str, Any] = {}  # id, object, created, model of the last chunk
        self._longest = max((len(p) for p in mask.values), default=0)

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def chunk(self, chunk: Any) -> Any:
        """``chunk`` (a parsed SSE data object) with the values back; the same object when
        nothing changed."""
        if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list):
            return chunk
        self._base.update((k, chunk[k]) for k in ("id", "object", "created", "model")
                          if k in chunk)
        changed = False
        choices = []
        for c in chunk["choices"]:
            new = self._choice(c)
            changed = changed or new is not c
            choices.append(new)
        if not changed:
            return chunk
        return {**chunk, "choices": choices}

    def _choice(self, choice: Any) -> Any:
        if not isinstance(choice, dict):
            return choice
        idx = choice.get("index", 0)
        idx = idx if isinstance(idx, int) else 0
        final = choice.get("finish_reason") is not None
        out = dict(choice)
        changed = False
        for key in _ANSWER_KEYS:
            if key in out:
                new = self._value(out[key], idx, (key,), final)
                changed = changed or new is not out[key]
                out[key] = new
        if final:  # texts of this choice not in its last chunk: their held ends go here
            for (i, where), tail in list(self._held.items()):
                if i == idx:
                    del self._held[(i, where)]
                    _put(out, where, self.mask.restore(tail, in_json=where[-1] in
                                                       _JSON_TEXT_KEYS))
                    changed = True
        return out if changed else choice

    def _value(self, value: Any, idx: int, where: Where, final: bool) -> Any:
        if isinstance(value, str):
            return self._text(value, idx, where, final)
        if isinstance(value, list):
            new_list = []
            for pos, v in enumerate(value):
                # Tool calls stream by their "index", not their place in this chunk's list.
                step = v.get("index", pos) if isinstance(v, dict) and where[-1] == "tool_calls" \
                    else pos
                new_list.append(self._value(v, idx, (*where, step), final))
            changed = any(a is not b for a, b in zip(new_list, value, strict=True))
            return new_list if changed else value
        if isinstance(value, dict):
            new_dict = {k: self._value(v, idx, (*where, k), final) for k, v in value.items()}
            changed = any(new_dict[k] is not value[k] for k in value)
            return new_dict if changed else value
        return value

    def _text(self, piece: str, idx: int, where: Where, final: bool) -> str:
        key = (idx, where)
        held = self._held.pop(key, "")
        if not held and "<" not in piece:
            return piece
        text = held + piece
        cut = len(text) if final else _hold_from(text, self.mask.values, self._longest)
        if cut < len(text):
            self._held[key] = text[cut:]
        out = self.mask.restore(text[:cut], in_json=where[-1] in _JSON_TEXT_KEYS)
        return piece if out == piece else out

    def flush(self) -> dict[str, Any] | None:
        """One chunk with every text still held (the stream ended before its choices said
        they were finished), or None."""
        if not self._held:
            return None
        by_choice: dict[int, dict[str, Any]] = {}
        for (idx, where), tail in self._held.items():
            c = by_choice.setdefault(idx, {"index": idx})
            _put(c, where, self.mask.restore(tail, in_json=where[-1] in _JSON_TEXT_KEYS))
        self._held.clear()
        choices = [{**c, "finish_reason": None} for _, c in sorted(by_choice.items())]
        return {**self._base, "choices": choices}


def _hold_from(text: str, placeholders: Iterable[str], longest: int) -> int:
    """Where the end of ``text`` that may still become a known placeholder starts
    (``len(text)`` when none). Placeholders hold no "<" but their first character, so only
    the last "<" can start one."""
    at = text.rfind("<")
    if at < 0 or len(text) - at >= longest:
        return len(text)
    tail = text[at:]
    if any(len(p) > len(tail) and p.startswith(tail) for p in placeholders):
        return at
    return len(text)


def _put(container: dict[str, Any], where: Where, tail: str) -> None:
    """Add ``tail`` in front of the string at ``where`` inside ``container`` (a choice of
    this restorer's own), copying what it changes on the way and creating what is missing
    (a list step is a tool call's "index")."""
    node: Any = container
    for k, step in enumerate(where[:-1]):
        nxt = where[k + 1]
        if isinstance(node, list):
            at = next((i for i, x in enumerate(node)
                       if isinstance(x, dict) and x.get("index") == step), None)
            child = dict(node[at]) if at is not None else {"index": step}
            if at is None:
                node.append(child)
            else:
                node[at] = child
        else:
            old = node.get(step)
            if isinstance(old, list):
                child = list(old)
            elif isinstance(old, dict):
                child = dict(old)
            else:
                child = [] if isinstance(nxt, int) else {}
            node[step] = child
        node = child
    if isinstance(node, dict):
        current = node.get(where[-1])
        node[where[-1]] = tail + (current if isinstance(current, str) else "")
