"""Entities placed on a text by value, for the tests of the guard's steps."""

from __future__ import annotations

from router_svc.classify.pii import PiiEntity


def ent(kind: str, text: str, value: str, score: float = 0.8) -> PiiEntity:
    """An entity of ``kind`` on the first occurrence of ``value`` in ``text``."""
    start = text.index(value)
    return PiiEntity(kind, start, start + len(value), value, score)
