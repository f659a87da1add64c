"""Text as the classifier reads it: Unicode compatibility forms folded (NFKC: full-width and
other digits, ``＠``, ``．``, mathematical letters) and invisible format characters dropped
(zero-width, bidirectional controls, soft hyphens), with a map back to the original text so
that an entity found in the folded text redacts exactly the characters the client sent.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class Folded:
    """``text`` and, per character of it, the span of the original it came from."""

    original: str
    text: str
    starts: tuple[int, ...] = ()
    ends: tuple[int, ...] = ()

    @property
    def identity(self) -> bool:
        return not self.starts

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of ``text[start:end]`` (a non-empty span)."""
        if self.identity:
            return start, end
        return self.starts[start], self.ends[end - 1]


def fold(text: str) -> Folded:
    """``text`` folded for reading; ASCII text (most prompts) is returned as it is."""
    if text.isascii() or (unicodedata.is_normalized("NFKC", text) and not any(
            unicodedata.category(ch) == "Cf" for ch in set(text) if not ch.isascii())):
        return Folded(text, text)  # nothing to fold: no per-character pass (~1 ms in 2k chars)
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    changed = False
    for i, ch in enumerate(text):
        if ch.isascii():
            out.append(ch)
            starts.append(i)
            ends.append(i + 1)
            continue
        if unicodedata.category(ch) == "Cf":  # format characters: invisible, carry nothing
            changed = True
            continue
        folded = unicodedata.normalize("NFKC", ch)
        changed |= folded != ch
        for c in folded:
            out.append(c)
            starts.append(i)
            ends.append(i + 1)
    if not changed:
        return Folded(text, text)
    return Folded(text, "".join(out), tuple(starts), tuple(ends))
