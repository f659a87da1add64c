"""A postal address's edges as the text writes them, around the STREET_ADDRESS the model reads.

The model finds nearly every address but often not where it starts: it takes in the name or
the firm on the line or in the comma-separated part before the street ("Walsh, 14 Fitzwilliam
Square", "Aydın\\nKottbusser Damm 71"), or leaves out the street line's opening ("House" of
"House 42, Road 11", "ul." of "ul. Grunwaldzka 186", "32 Florida Road, " before "Morningside,
Durban 4001"). ``address_edges`` moves the start of each STREET_ADDRESS by what the text says:

- a first part (up to a comma or a line break) with no digit and no street word, followed by
  a street line (on the next line: one with a digit; after a comma: a house number and a
  name), is no part of the address: it goes ("RCCG Throne of Grace Parish, 23 Ogunlana
  Drive", "Aydın\nKottbusser Damm 71"; "Morningside, Durban 4001" stays);
- an address grows back over a street line's opening word right before it ("House", "Flat",
  "Plot", "ul.", "Rua") and over a street part before it on its line ("32 Florida Road, ":
  a house number and capitalised words, or words ending in a street word).

The end of an address is left to the model and to ``pii.whole_addresses``, which joins the
places and postcodes after it. A start never moves into another entity.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from router_svc.classify import names
from router_svc.classify.pii import PiiEntity, SpanIndex

# Words that open a street line before its name or number.
OPENERS = frozenset({"House", "Flat", "Apt", "Apartment", "Unit", "Suite", "Plot", "Block",
                     "ul", "Ul", "Rua", "Via", "Calle", "Avenida", "Av", "Rue", "Straße",
                     "PO", "P.O.", "Box", "No", "Nr",
                     # US military mail: "USNS Saibara\nFPO AP 12428", "PSC 1234, Box 5678"
                     "USNS", "USS", "USCGC", "PSC", "CMR", "APO", "FPO", "DPO"})
_STREET = frozenset(names.STREET_WORDS) | OPENERS
_PARTS = re.compile(r"[^,\n]+")
_OPENER_BEFORE = re.compile(r"(?:^|(?<=[\s(:\"']))(" + "|".join(
    re.escape(w) for w in sorted(OPENERS, key=len, reverse=True)) + r")\.? $")
# A street part: a house number and one to four capitalised words ("32 Florida Road"), or
# capitalised words ending in a street word ("Florida Road").
_NUMBERED_STREET = re.compile(r"\d+[A-Za-z]?(?:[-/]\d+)? (?:[A-Z][\w'’.-]*\s?){1,4}")


_LAST_PART = re.compile(r"[^,:;(\"'\t]*$")


def _has_street_word(part: str) -> bool:
    return any(w.rstrip(".") in _STREET for w in part.split())


def _start_after_names(e: PiiEntity) -> int:
    """Where ``e`` starts once a first part that is no address (no digit, no street word,
    before a part with a digit) has gone; ``e.start`` if it has none."""
    parts = list(_PARTS.finditer(e.text))
    if len(parts) < 2:
        return e.start
    first, second = parts[0].group(), parts[1].group().lstrip()
    if any(ch.isdigit() for ch in first) or _has_street_word(first):
        return e.start
    on_next_line = e.text[parts[0].end()] == "\n"
    # After a comma, the street must follow: a house number, then a name ("14 Fitzwilliam
    # Square"); "Morningside, Durban 4001" is a suburb and a city.
    if not (on_next_line and any(ch.isdigit() for ch in second)) and not (
            _NUMBERED_STREET.match(second)):
        return e.start
    return e.start + parts[1].end() - len(second)


def _start_before(e: PiiEntity, text: str) -> int:
    """Where ``e`` starts once grown back over a street opening or a street part before it."""
    line_start = text.rfind("\n", 0, e.start) + 1
    before = text[line_start:e.start]
    m = _OPENER_BEFORE.search(before)
    if m is not None:
        return line_start + m.start(1)
    if before.endswith(", "):
        part = _LAST_PART.search(before[:-2]).group().strip()
        if part and (_NUMBERED_STREET.fullmatch(part) or (
                part.split()[-1].rstrip(".") in names.STREET_WORDS and part[:1].isupper())):
            return e.start - 2 - len(part)
    return e.start


def address_edges(entities: Sequence[PiiEntity], text: str) -> list[PiiEntity]:
    """The entities with each STREET_ADDRESS's start where the text puts it (module
    docstring), sorted by start."""
    out = []
    index: SpanIndex | None = None
    for e in entities:
        if e.type != "STREET_ADDRESS":
            out.append(e)
            continue
        start = _start_after_names(e)
        if start == e.start:
            grown = _start_before(e, text)
            if grown < e.start:
                index = index or SpanIndex(entities)
                if not [o for o in index.overlapping(grown, e.start) if o is not e]:
                    start = grown
        if start != e.start:
            e = PiiEntity("STREET_ADDRESS", start, e.end, text[start:e.end], e.score)
        out.append(e)
    return sorted(out, key=lambda e: (e.start, e.end, e.type))
