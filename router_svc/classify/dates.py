"""Dates and times written in a shape that says so: a DATE_TIME recogniser beside the model.

Pieces (a date, a time, a weekday) written together are one DATE_TIME ("Friday at 3pm",
"2024-05-02T11:04:19Z", "Jun 03 02:14:07"), joined by ``pii.whole_dates`` as the model's
are. What counts:

- numeric dates whose numbers are a month and a day: ``2024-03-04``, ``1403/04/12``,
  ``14/02/1991``, ``30.09.2024``, ``3/4/22``; a month and year ``3/2024``; a log's
  ``14/Mar/2024:09:12:44``; ``06-11`` only with a time after it;
- a month's name with a day or a year: ``2nd of May``, ``14 Nov 2024``, ``05 OCT``, ``June 30``,
  ``October 4, 2024``, ``February 2024``; a month's name alone when it is a full name written
  as one (``October``), and ``May``, ``March``, ``June`` and ``August`` (words or names
  too) only after a word that takes a time ("since March", "in May");
- a weekday's full name, plural and lower case too, with a part of the day after it
  (``Monday afternoon``, ``saturday night``, ``Wednesdays``);
- times: ``09:35``, ``16:22:03,114``, ``7:30am``, ``11 p.m.``, ``3pm``.

Numbers that cannot be a date (a month of 13, a day of 32) are not reported, so scores and
versions ("1.2.3") mostly fall out; a bare year is left to the model ("2000 calories").
"""

from __future__ import annotations

import re

from router_svc.classify import names
from router_svc.classify.pii import PiiEntity, first_of_overlaps, whole_dates

SHAPE = 0.9  # the score of a date found by its shape (no checksum, but a valid calendar value)

_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
          r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_DAY = r"(?:3[01]|[12]\d|0?[1-9])(?:st|nd|rd|th)?"
_YEAR = r"(?:1[6-9]\d\d|20\d\d)"
_CLOCK = r"(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:[.,]\d{1,9})?)?"
_MERIDIEM = r"\s?(?:[ap]\.m\b\.?|[ap]m\b)"

# Anchored patterns, tried only where a date can start: a number standing alone (not inside a
# word, a version or a longer date; "...-02T11:04" is a time) with a date's or a time's
# separator, a month's initial or "am"/"pm" after it (``_NUMBER_START``: it opens with a
# character class, so ``re`` skips to it in C), or a month's or weekday's name (``_word_starts``).
_NUMBER_START = re.compile(
    r"\d(?:(?<![\w.:/-]\d)|(?<=\dT\d))\d{0,3}"
    r"(?=[-/.:]\d|/[A-Za-z]|(?:st|nd|rd|th)?(?:\s+of)?\s+[ADFJMNOSadfjmnos]|\s?[apAP]\.?[mM]\b)")
_MONTH_NAMES, _WEEKDAYS = names.MONTHS, names.WEEKDAYS
# How a month's or weekday's name is written capitalised ("Mar", "Sept", "OCT", "Mondays").
_NAME_FORMS = frozenset(
    form for w in (*_MONTH_NAMES, *(m[:3] for m in _MONTH_NAMES), "Sept", *_WEEKDAYS,
                   *(d + "s" for d in _WEEKDAYS))
    for form in (w, w.upper()))
_LOWER_WEEKDAYS = frozenset(d.lower() for d in _WEEKDAYS)
_FULL_MONTHS = frozenset(m.lower() for m in _MONTH_NAMES)
_NUMERIC = re.compile(
    rf"(?P<ymd>\d{{4}}(?P<s1>[-/.])\d{{1,2}}(?P=s1)\d{{1,2}})(?!(?!T\d)[\w-]|[./]\d)"
    rf"|(?P<dmy>\d{{1,2}}(?P<s2>[-/.])\d{{1,2}}(?P=s2)(?:\d{{4}}|(?<=/)\d\d))"
    rf"(?![\w-]|[./]\d)"
    rf"|(?P<my>\d{{1,2}}/{_YEAR})(?![\w/-]|[.]\d)"
    rf"|(?P<log>{_DAY}/{_MONTH}/{_YEAR}(?::{_CLOCK})?)(?!\w)"
    rf"|(?P<md>\d\d-\d\d)(?=[ T]{_CLOCK}(?!\d))"
    rf"|(?P<dm>{_DAY}(?:\s+of)?\s+(?P<m1>{_MONTH})\b\.?(?:,?\s+{_YEAR}(?!\d))?)"
    rf"|(?P<clock>{_CLOCK}(?:{_MERIDIEM})?)(?![\d:]|[.,]\d)"
    rf"|(?P<hour>(?P<h>\d{{1,2}}){_MERIDIEM})",
    re.IGNORECASE)
_WORDS = re.compile(
    rf"(?P<mon>{_MONTH}\b\.?)(?:\s+(?P<day>{_DAY})(?!\d|[:.]\d|\w)(?:,?\s+{_YEAR}(?!\d))?"
    rf"|,?\s+{_YEAR}(?!\d))?"
    r"|(?P<wd>(?:mon|tues|wednes|thurs|fri|satur|sun)days?\b)"
    r"(?:\s+(?:morning|afternoon|evening|night)s?\b)?",
    re.IGNORECASE)
# A month's name that is also a word or a first name, taken alone only after one of these.
_AMBIGUOUS_MONTHS = frozenset({"may", "march", "june", "august"})
_TIME_WORDS = frozenset({"in", "since", "until", "till", "by", "from", "during", "through",
                         "last", "next", "this", "early", "late", "mid", "before", "after",
                         "every", "each", "of", "to", "and", "or", "between", "end"})
_WORD_BEFORE = re.compile(r"([A-Za-z]+)[\s-]+$")
_CAPITAL_AFTER = re.compile(r"\s+[A-Z]")
_DATE_SEPARATOR = re.compile(r"[-/.]")


def _valid_day_month(a: int, b: int) -> bool:
    """Two numbers that are a day and a month in one order or the other."""
    return (1 <= a <= 12 and 1 <= b <= 31) or (1 <= b <= 12 and 1 <= a <= 31)


def _month_word_ok(word: str, alone: bool, text: str, start: int) -> bool:
    """A month's name as written: Title Case or upper case, or a whole lower-case name that
    is not also a word ("11 june", not "may"); alone, only a name that is no other word, or
    after a word that takes a time."""
    w = word.rstrip(".")
    low = w.lower()
    if w.islower() and (low in ("may", "march") or (len(w) <= 4 and low not in ("june", "july"))):
        return False
    if not alone:
        return True
    if low in _AMBIGUOUS_MONTHS:
        after = text[start + len(word):start + len(word) + 4]
        if not word.endswith(".") and _CAPITAL_AFTER.match(after):
            return False  # a name: "by August Rush"
        m = _WORD_BEFORE.search(text, max(0, start - 12), start)
        return m is not None and m.group(1).lower() in _TIME_WORDS
    return low in _FULL_MONTHS  # "Oct" alone is an abbreviation of anything


def _numeric_ok(m: re.Match[str]) -> bool:
    # The outer named group of the alternative that matched closes last.
    kind, value = m.lastgroup, m.group()
    if kind == "ymd":
        y, mo, d = (int(x) for x in _DATE_SEPARATOR.split(value))
        return 1 <= mo <= 12 and 1 <= d <= 31 and 1000 <= y <= 2999
    if kind == "dmy":
        a, b, _ = _DATE_SEPARATOR.split(value)
        return _valid_day_month(int(a), int(b))
    if kind == "my":
        return 1 <= int(value.split("/")[0]) <= 12
    if kind == "md":
        a, b = value.split("-")
        return 1 <= int(a) <= 12 and 1 <= int(b) <= 31
    if kind == "dm":
        return _month_word_ok(m.group("m1"), False, "", 0)
    if kind == "hour":
        return 1 <= int(m.group("h")) <= 12
    return True  # "log" and "clock": the pattern holds only valid values


def _word_starts(text: str) -> list[int]:
    """Where a month's or weekday's name starts: capitalised, from the capitalised words that
    the name recognisers gather once a text (``names.capitalised_words``); a weekday in lower
    case ("saturday night") from each "day" in the text."""
    starts = {i for word in names.capitalised_words(text) & _NAME_FORMS
              for i in names.occurrences(text, word)}
    i = text.find("day")
    while i >= 0:
        j = i
        while j > 0 and i - j < 6 and text[j - 1].isalpha():
            j -= 1
        if text[j:i + 3] in _LOWER_WEEKDAYS:
            starts.add(j)
        i = text.find("day", i + 3)
    return sorted(starts)


def dates(text: str) -> list[PiiEntity]:
    """Dates, times and weekdays (module docstring), pieces written together joined as
    ``pii.whole_dates`` joins the model's (so one expression is one entity to set against the
    model's reading of it), sorted by start."""
    out: list[PiiEntity] = []
    for run in _NUMBER_START.finditer(text):
        a = run.start()
        m = _NUMERIC.match(text, a)
        if m is not None and _numeric_ok(m):
            out.append(_ent(text, a, m.end() - _month_dot(m.group())))
    for a in _word_starts(text):
        m = _WORDS.match(text, a)
        if m is None:
            continue
        if m.group("wd") is not None:
            out.append(_ent(text, a, m.end()))
            continue
        word, alone = m.group("mon"), m.end() == m.end("mon")
        if _month_word_ok(word, alone, text, a):
            out.append(_ent(text, a, m.end() - _month_dot(m.group())))
    return whole_dates(first_of_overlaps(out), text)


def _month_dot(value: str) -> int:
    """1 where ``value`` ends in a full month's name and a full stop (the sentence's, not an
    abbreviation's), else 0."""
    if not value.endswith("."):
        return 0
    word = value[:-1].rsplit(None, 1)[-1].lower()
    return 1 if word in _FULL_MONTHS else 0


def _ent(text: str, start: int, end: int) -> PiiEntity:
    return PiiEntity("DATE_TIME", start, end, text[start:end], SHAPE)
