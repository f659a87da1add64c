"""Postal addresses as the text writes them: a recogniser by their shape, and the edges of the
STREET_ADDRESS the model reads.

``street_addresses`` (a recogniser, ``recognisers.RECOGNISERS``) finds an address from its
street line: a house number, name words and a street word ("32 Florida Road", "5832 S Prairie
Ave", "34 kwame nkrumah ave"); a street opener, name words and a number ("ul. Piotrkowska
104/12", "Via dei Mille 24", "8 rue des Lilas"); a compound street word and a number
("Taunusanlage 12", "Kottbusser Damm 71"); a PO box. A unit right before it ("Flat 3, ") is
the address's, and so are the parts after it, one comma, semicolon or line break apart, while
they are what an address holds: a unit ("Suite 4"), a postcode with or without a town
("60325 Frankfurt am Main", "Leeds LS8 5HJ", "TX 75201"), a listed place, a region ("Oyo
State"); a town not on the list only when such a part follows it ("Orlando West, Soweto
1804"). Name words are capitalised, initials, ordinals ("113th") or particles; a lower-case
common word is none ("5 miles down the road"). Found by shape, it scores ``LISTED`` and wins
over the model's reading only where it is longer (``recognisers.union``).

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

The end of the model's address is left to the model and to ``pii.whole_addresses``, which
joins the places and postcodes after it. A start never moves into another entity.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from router_svc.classify import names
from router_svc.classify.pii import PiiEntity, SpanIndex

LISTED = names.LISTED  # the score of an address found by its shape

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


_LISTED_AND = re.compile(r",? and (?:also )?")


def _listed_apart(e: PiiEntity) -> list[PiiEntity]:
    """Two addresses listed with ", and " read as one ("..., Spain 16200, and 7878 Rahu 37 Apt.
    405"): apart, when each side holds a number."""
    m = next((m for m in _LISTED_AND.finditer(e.text) if m.group().startswith(",")), None)
    if m is None:
        return [e]
    left, right = e.text[:m.start()], e.text[m.end():]
    if not (any(c.isdigit() for c in left) and any(c.isdigit() for c in right)):
        return [e]
    return [PiiEntity(e.type, e.start, e.start + len(left), left, e.score),
            *_listed_apart(PiiEntity(e.type, e.start + m.end(), e.end, right, e.score))]


def address_edges(entities: Sequence[PiiEntity], text: str) -> list[PiiEntity]:
    """The entities with each STREET_ADDRESS's start where the text puts it (module
    docstring), two addresses listed with ", and " apart, sorted by start."""
    out = []
    index: SpanIndex | None = None
    entities = [p for e in entities for p in (
        _listed_apart(e) if e.type == "STREET_ADDRESS" else [e])]
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


# --------------------------------------------------------------------------- the recogniser

# Street words after a street's name, as the text may write them in any case ("32 Florida
# Road", "5832 S Prairie Ave", "34 kwame nkrumah ave").
_STREET_ENDS = (r"road|rd|street|st|avenue|ave|av|boulevard|blvd|lane|lanes|ln|drive|dr|way|"
                r"square|sq|place|pl|terrace|court|ct|crescent|cres|close|highway|hwy|parkway|"
                r"pkwy|gardens|grove|mews|circle|cir|trail")
# Words that open a street's name, its number after the name ("Via dei Mille 24", "ul.
# Piotrkowska 104/12", "Rua Oscar Freire, 1120") or before it ("8 rue des Lilas").
_OPENERS = r"(?:[Rr]ue|Via|Viale|[Cc]alle|[Aa]venida|Av\.|[Rr]ua|[Uu]l\.|Ulica|Strada|" \
           r"Carrer|Paseo|Jalan|Jl\.)"
# How a street written as one word (or with its kind after the name) ends: "Taunusanlage 12",
# "Prinsengracht 263-2", "Kottbusser Damm 71", "Barbaros Bulvarı No:145".
_COMPOUND = ("straße", "strasse", "str", "weg", "gasse", "platz", "allee", "anlage", "damm",
             "gracht", "laan", "straat", "plein", "kade", "vej", "gade", "gatan", "vägen", "veien",
             "caddesi", "sokak", "sokağı", "bulvarı", "baan")
_LOWER_KINDS = ("tér", "utca", "út")
# A unit before or after the street line ("Flat 3", "Apt 5C", "Suite 4", "apto 52").
_UNIT = (r"(?:Flat|Apt|Apartment|Unit|Suite|Ste|House|Plot|Gate|Block|Shop|Room|Floor|Fl|"
         r"Appt|apto|apt|flat|unit|suite|Box)\.?:? ?#?\d[\w/-]{0,5}|#\d[\w/-]{0,5}")
_NUMBER = r"\d{1,5}[A-Za-z]?(?:[-/]\d{1,4}[A-Za-z]?)?"
# A word of a street's name (checked by _names_ok), or an ordinal ("West 113th Street").
_NAME = r"(?:[^\W\d_][\w'’.-]*|\d{1,4}(?:st|nd|rd|th)\b)"
_CAP = r"[^\W\d_a-zß-ÿ][\w'’-]*"  # a capitalised word
# Each street line is found from its rarest word, looked for in C: a street word (a space
# first, in the lower-cased text), a street opener, a compound street word, "Box".
_END_WORD = re.compile(rf" (?:{_STREET_ENDS})\b(?:\.(?=[ ,\n]))?")
# Before a street word: a house number (or a unit) and one to four name words.
_NUMBER_AND_NAME = re.compile(
    rf"(?:{_NUMBER},? |(?:{_UNIT}), )(?P<words>(?:{_NAME} ){{1,4}})$")
_OPENER_WORDS = frozenset({"Rue", "Via", "Viale", "Calle", "Avenida", "Av", "Rua", "Ul",
                           "Ulica", "Strada", "Carrer", "Paseo", "Jalan", "Jl"})
_LOWER_OPENERS = ("rue", "calle", "rua", "ul.")
# After an opener: name words and the number ("Via dei Mille 24"); or the number before it.
_OPENER_LINE = re.compile(rf"{_OPENERS} (?P<words>(?:{_NAME} ){{0,3}}{_NAME}),? {_NUMBER}"
                          r"(?![\w/-])")
_OPENER_NAME = re.compile(rf"{_OPENERS} (?P<words>(?:{_NAME} ){{0,3}}{_NAME})")
_NUMBER_BEFORE = re.compile(rf"(?<![\w.,/:-]){_NUMBER},? $")
_WORDS_BEFORE = re.compile(rf"(?<![\w'’-]){_CAP}(?: [^\W\d_][\w'’-]*){{0,2}}$")
_NUMBER_AFTER = re.compile(rf" (?:[Nn][Oo][:.]? ?)?{_NUMBER}(?![\w/-])")
_PO_BOX = re.compile(r"(?<![\w.])P\.? ?O\.? Box \d{1,6}\b")
_PARTICLES = frozenset({"de", "des", "du", "la", "le", "les", "di", "dei", "del", "della",
                        "da", "do", "dos", "das", "of", "the", "am", "an", "der", "van", "von",
                        "y", "e"})
_ORDINAL = re.compile(r"\d{1,4}(?:st|nd|rd|th)")
# Parts after the street line, each up to a comma, a semicolon or a line break.
_POSTCODE = (r"(?:\d{5}-\d{4}|\d{5}-\d{3}|\d{4}-\d{3}|\d{4,6}|\d{2}-\d{3}|\d{3} \d{2}|"
             r"\d{4} ?[A-Z]{2}|[A-Z]\d[A-Z] ?\d[A-Z]\d|[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}|"
             r"[A-Z]\d{2} ?[A-Z\d]{4})")
_TOWN = rf"{_CAP}(?: (?:{_CAP}|am|an|de|del|la|le|sur|upon|on|\d{{1,2}}(?![\w-])))*"
_PART_SHAPES = re.compile(
    rf"(?:(?P<unit>{_UNIT})"
    # "TX 75201", "60325 Frankfurt am Main"; "Leeds LS8 5HJ", "Dallas, TX 75201"
    rf"|(?P<code>(?:[A-Z]{{2,3}} )?{_POSTCODE}(?: {_TOWN})?)"
    rf"|(?P<town>{_TOWN}(?:,? (?:[A-Z]{{2}} )?{_POSTCODE})?)"
    r"|(?P<lower>[a-z]+))"
    # ...and what ends it: punctuation, a line's end, or the sentence going on in lower case
    r"(?=[ \t]*(?:[,;\n.!?)\"'|–—:\\]|$)| [a-z(])")
_SEPARATOR = re.compile(r"[ \t]*(?:[,;][ \t]*\n?|\n)[ \t]*")
_REGION_WORDS = ("State", "Province", "Region", "County", "District", "Oblast", "Prefecture")
_MAX_PARTS = 6
_CALENDAR = names.CALENDAR_WORDS | {m[:3] for m in names.MONTHS} | {"Sept"}


def _names_ok(words: str) -> bool:
    """The words of a street's name: names, initials, ordinals ("113th"), particles; at least
    one no particle, and no lower-case common word ("5 miles down the road")."""
    named = False
    for w in words.split():
        w = w.rstrip(",")
        if w.lower() in _PARTICLES:
            continue
        if not (w[:1].isupper() or _ORDINAL.fullmatch(w) or (
                w.isalpha() and w.lower() not in names.common_words())):
            return False
        named = True
    return named


def _part_kind(m: re.Match[str]) -> str:
    """``sure`` for a part that only an address holds, ``maybe`` for a town's name that is
    kept only when a sure part follows ("Orlando West, Soweto 1804")."""
    kind = m.lastgroup
    value = m.group()
    if kind in ("unit", "code"):
        return "sure"
    if kind == "town":
        if value.split()[0].rstrip(".").title() in _CALENDAR:
            return ""  # "Aug 3", "Monday"
        if any(ch.isdigit() for ch in value) or names.is_place(value) or names.is_place(
                value.title()) or value.endswith(_REGION_WORDS):
            return "sure"
        return "maybe"
    # A lower-case part: a listed place as written in lower case ("osu, accra").
    return "sure" if names.is_place(value.title()) else (
        "maybe" if len(value.split()) == 1 and value not in names.common_words() else "")


def _tail_end(text: str, end: int) -> int:
    """Where the address that a street line ends at ``end`` ends: over the parts after it
    (units, towns, postcodes, regions, countries), one separator apart."""
    best = end
    pos = end
    for _ in range(_MAX_PARTS):
        sep = _SEPARATOR.match(text, pos)
        if sep is None:
            break
        m = _PART_SHAPES.match(text, sep.end())
        if m is None:
            break
        kind = _part_kind(m)
        if not kind:
            break
        pos = m.end()
        if kind == "sure":
            best = pos
    return best


def _lower(text: str) -> str:
    """``text`` in lower case, character for character ("İ" lower-cases to two)."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c if len(c) == 1 else ch for ch in text for c in (ch.lower(),))


def _line_start(text: str, i: int, reach: int = 60) -> int:
    return max(text.rfind("\n", 0, i) + 1, i - reach)


def _street_lines(text: str) -> list[tuple[int, int]]:
    """Where street lines are: a house number, name words and a street word ("32 Florida
    Road"); a street opener, name words and a number ("ul. Piotrkowska 104/12", "8 rue des
    Lilas"); a compound street word and a number ("Taunusanlage 12"); a PO box."""
    spans = []
    for e in _END_WORD.finditer(_lower(text)):
        m = _NUMBER_AND_NAME.search(text, _line_start(text, e.start()), e.start() + 1)
        if m is not None and (m.start() == 0 or not (
                text[m.start() - 1].isalnum() or text[m.start() - 1] in ".,/:-")) and (
                _names_ok(m.group("words"))):
            spans.append((m.start(), e.end()))
    starts = [i for w in names.capitalised_words(text) & _OPENER_WORDS
              for i in names.occurrences(text, w)]
    starts += [i for w in _LOWER_OPENERS for i in names.occurrences(text, w)]
    for i in starts:
        before = _NUMBER_BEFORE.search(text, max(0, i - 12), i)
        m = (_OPENER_LINE if before is None else _OPENER_NAME).match(text, i)
        if m is not None and _names_ok(m.group("words")):
            spans.append((m.start() if before is None else before.start(), m.end()))
    # A compound street word is a capitalised word ("Taunusanlage", "Damm"); Hungarian writes
    # the street's kind in lower case ("Erzsébet tér 19").
    compounds = [w for w in names.capitalised_words(text) if w.lower().endswith(_COMPOUND)]
    compounds += [w for w in _LOWER_KINDS if f" {w} " in text]
    for w in compounds:
        for i in names.occurrences(text, w):
            end = i + len(w)
            words = _WORDS_BEFORE.search(text, _line_start(text, i), end)
            number = _NUMBER_AFTER.match(text, end)
            if words is not None and number is not None:
                spans.append((words.start(), number.end()))
    if "Box" in text:
        spans += [m.span() for m in _PO_BOX.finditer(text)]
    return sorted(spans)


def street_addresses(text: str) -> list[PiiEntity]:
    """Postal addresses from their street line on (``_street_lines``), with a unit before it
    ("Flat 3, ") and the parts after it that an address holds (``_tail_end``)."""
    out: list[PiiEntity] = []
    done = 0
    for start, end in _street_lines(text):
        if start < done:
            continue
        unit = _UNIT_BEFORE.search(text, max(0, start - 16), start)
        if unit is not None:
            start = unit.start()
        end = _tail_end(text, end)
        done = end
        out.append(PiiEntity("STREET_ADDRESS", start, end, text[start:end], LISTED))
    return out


_UNIT_BEFORE = re.compile(rf"(?<![\w.])(?:{_UNIT}),? $")
