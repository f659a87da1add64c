"""PII entities from the token-classification head: BIO decoding, windows, redaction.

Pure functions over numpy arrays and the tokenizer's character offsets, so the router, the
evaluation and the tests share one decoder.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PiiEntity:
    type: str  # e.g. "EMAIL_ADDRESS" (the tag without its B-/I- prefix)
    start: int  # character span in the original text, end exclusive
    end: int
    text: str  # text[start:end]
    score: float  # mean probability of the chosen tags of the entity's tokens


class SpanIndex:
    """Entities sorted by start, to find those overlapping ``[a, b)`` without a pass over all
    of them (a log of thousands of timestamps would make every such pass quadratic): the
    longest entity bounds how far back one can start."""

    def __init__(self, entities: Iterable[PiiEntity] = ()) -> None:
        self._items = sorted(entities, key=lambda e: e.start)
        self._starts = [e.start for e in self._items]
        self._longest = max((e.end - e.start for e in self._items), default=0)

    def add(self, e: PiiEntity) -> None:
        i = bisect.bisect_right(self._starts, e.start)
        self._starts.insert(i, e.start)
        self._items.insert(i, e)
        self._longest = max(self._longest, e.end - e.start)

    def overlapping(self, a: int, b: int) -> list[PiiEntity]:
        lo = bisect.bisect_left(self._starts, a - self._longest)
        hi = bisect.bisect_left(self._starts, b)
        return [e for e in self._items[lo:hi] if e.end > a]


def first_of_overlaps(entities: Iterable[PiiEntity]) -> list[PiiEntity]:
    """The entities sorted by start, the longest first where several start together; one that
    overlaps an entity kept before it goes."""
    kept: list[PiiEntity] = []
    for e in sorted(entities, key=lambda e: (e.start, -e.end)):
        if not kept or e.start >= kept[-1].end:
            kept.append(e)
    return kept


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (subtracting the max keeps ``exp`` from overflowing)."""
    x = np.asarray(logits)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    z = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return z / np.sum(z, axis=axis, keepdims=True)


def _words(offsets: Sequence[tuple[int, int]], real: list[int]) -> dict[int, list[int]]:
    """Token index -> the tokens of its word: a maximal run of tokens whose offsets touch.

    Offsets are all the router has of a token (no "##" strings), and a WordPiece continuation
    always starts where the previous token ended, so touching offsets find them. Punctuation
    inside an e-mail address or a card number also touches, which keeps such values whole.
    """
    word_of: dict[int, list[int]] = {}
    word: list[int] = []
    prev_end = -1
    for k in real:
        start, end = offsets[k]
        if start != prev_end:
            word = []
        word.append(k)
        word_of[k] = word  # the same list object for every token of the word
        prev_end = end
    return word_of


def _has_alnum(text: str, span: tuple[int, int]) -> bool:
    return any(ch.isalnum() for ch in text[span[0] : span[1]])


def decode_bio(
    tag_probs: np.ndarray,
    offsets: Sequence[tuple[int, int]],
    tags: Sequence[str],
    text: str,
    threshold: float,
    type_thresholds: Mapping[str, float] | None = None,
) -> list[PiiEntity]:
    """Entities from per-token tag probabilities ``[seq, len(tags)]`` of one text (or window).

    ``offsets`` are the tokenizer's ``(start, end)`` character spans into ``text``.

    - The tag of a token is its argmax. ``B-X`` starts an entity; ``I-X`` continues the entity
      of type X directly before it, otherwise it starts one (lenient, as seqeval decodes).
    - Where the argmax breaks the BIO scheme (a card number's digits tagged now CREDIT_CARD,
      now PHONE_NUMBER; a name opening with I-PERSON), that run of non-"O" tokens is also
      decoded by Viterbi (the most probable valid sequence of entity tags), and its entities
      replace the argmax ones of the same type they overlap: one value, one span. An argmax
      entity whose type Viterbi dropped there is kept, so no type the model saw is lost to a
      policy.
    - Tokens with an empty span (``(0, 0)``: CLS, SEP, padding) are skipped; rows of
      ``tag_probs`` past ``len(offsets)`` are ignored.
    - A span grows to cover the whole words of its first and last token, so a name tagged on
      its first sub-word is redacted entirely; punctuation-only tokens that the growth would
      add at either edge ("Smith." -> "Smith") are left out.
    - The score is the mean probability of the chosen tags over the tagged tokens (not the
      tokens added by word growth: their tags say nothing about this entity).
    - Entities scoring below ``threshold`` are dropped; same-type overlaps are merged.
      ``type_thresholds`` (type -> threshold, the guard's operating point) replaces it for
      the types it names. An entity is held to the threshold of the type it has when it is
      made (the model's, or CREDIT_CARD for a phone number that passes Luhn), before the
      steps below join or relabel entities; a joined entity keeps its parts' best score.
    - A PHONE_NUMBER of 13-19 digits that passes the Luhn check is a CREDIT_CARD: the model
      confuses long digit runs, and a policy that allows phone numbers must not pass a card.
    - Then what the text itself says, which the model only guesses at: names lose edge
      connectors and possessives and are joined across a stray B- tag (``_join_names``),
      phone numbers are split at words and rejoined (``_join_phones``), and a value that
      passes its type's check (IP syntax, card Luhn, e-mail syntax, IBAN mod 97) settles its
      span's type (``_checked_types``).
    """
    probs = np.asarray(tag_probs)
    n = len(offsets)
    if probs.ndim != 2 or probs.shape[1] != len(tags) or probs.shape[0] < n:
        raise ValueError(
            f"tag_probs shape {probs.shape} does not fit {n} offsets and {len(tags)} tags"
        )
    if n == 0:
        return []
    best = probs[:n].argmax(axis=1)
    real = [k for k in range(n) if offsets[k][1] > offsets[k][0]]
    word_of = _words(offsets, real)

    # Looked up once per entity, never per token; without a map every type has ``threshold``.
    limits = type_thresholds or None

    def entities(tag_of: np.ndarray) -> list[PiiEntity]:
        return [e for kind, toks in _runs(tag_of, real, tags)
                if (e := _entity(kind, toks, float(np.mean(probs[toks, tag_of[toks]])),
                                 threshold, text, offsets, word_of, limits)) is not None]

    found = entities(best)
    consistent = _bio_tags(probs, best, real, _bio_scheme(tuple(tags)))
    if consistent is not None:
        # Viterbi's entities, plus every argmax entity of a type none of them has there: a
        # value the model half-read as an e-mail address stays an e-mail address for policy.
        better = entities(consistent)
        found = better + [e for e in found if not any(
            f.type == e.type and f.start < e.end and e.start < f.end for f in better)]
    # Two runs of one word (a B- on each sub-word) grow to the same span: report it once.
    return _checked_types(_join_phones(_join_names(_merge_overlaps(found), text), text))


def _runs(tag_of: Sequence[int], real: list[int], tags: Sequence[str]
          ) -> list[tuple[str, list[int]]]:
    """(type, tokens) of each entity: B-X starts one, I-X continues one of type X directly
    before it, otherwise starts one (lenient)."""
    runs: list[tuple[str, list[int]]] = []
    current: tuple[str, list[int]] | None = None
    for k in real:
        prefix, _, kind = tags[int(tag_of[k])].partition("-")
        if prefix not in ("B", "I") or not kind:
            current = None  # "O" (or a tag this scheme does not know) ends any entity
            continue
        if prefix == "I" and current is not None and current[0] == kind:
            current[1].append(k)
        else:
            current = (kind, [k])
            runs.append(current)
    return runs


def _entity(kind: str, toks: list[int], score: float, threshold: float, text: str,
            offsets: Sequence[tuple[int, int]], word_of: dict[int, list[int]],
            limits: Mapping[str, float] | None = None) -> PiiEntity | None:
    """``limits``: per-type thresholds; types it does not name (all, if None) ``threshold``."""
    if limits is None:
        if score < threshold:
            return None
    # A PHONE_NUMBER under its own threshold may still be a card number, judged by
    # CREDIT_CARD's once its span is known (below).
    elif score < limits.get(kind, threshold) and not (
            kind == "PHONE_NUMBER" and score >= limits.get("CREDIT_CARD", threshold)):
        return None
    first, last = toks[0], toks[-1]
    # Grow over the rest of the word. For names, not across punctuation ("Smith's" and
    # "Smith," stay "Smith", "Yefre ##mova" becomes "Yefremova"); for pattern types the
    # whole punctuated word ("john.doe@x.com" from "john"), so redaction leaks nothing.
    lead = list(reversed([k for k in word_of[first] if k < first]))
    trail = [k for k in word_of[last] if k > last]
    if kind in _NAME_TYPES:
        lead, trail = _alnum_run(text, offsets, lead), _alnum_run(text, offsets, trail)
    else:
        lead, trail = _strip_punct(text, offsets, lead), _strip_punct(text, offsets, trail)
    start = offsets[lead[-1] if lead else first][0]
    end = offsets[trail[-1] if trail else last][1]
    start, end = _trim(text, start, end)
    if kind in _NAME_TYPES and kind != "STREET_ADDRESS":
        start, end = _trim_name_edges(text, start, end)
    value = text[start:end]
    # Nothing to protect in "&", "#" or the word "IBAN" the model tagged beside a value.
    if not any(ch.isalnum() for ch in value) or (
            kind in _DIGIT_TYPES and not any(ch.isdigit() for ch in value)):
        return None
    if kind == "PHONE_NUMBER" and _is_card_number(text[start:end]):
        kind = "CREDIT_CARD"
    if limits is not None and score < limits.get(kind, threshold):
        return None
    if kind == "DOMAIN_NAME" and "://" in text[start:end] and text[end:end + 1] == "/":
        end += 1  # a URL keeps its closing slash ("https://www.example.com/")
    return PiiEntity(kind, start, end, text[start:end], score)


@dataclass(frozen=True)
class _Scheme:
    """A BIO tag list as index arrays for ``_viterbi``."""

    o: int  # index of "O", -1 if absent
    inside: np.ndarray  # bool per tag: an I-X tag that has its B-X
    begin_of: np.ndarray  # per tag: the index of its B-X for I-X tags, else its own index


@functools.lru_cache(maxsize=8)
def _bio_scheme(tags: tuple[str, ...]) -> _Scheme:
    index = {t: i for i, t in enumerate(tags)}
    inside = np.zeros(len(tags), dtype=bool)
    begin_of = np.arange(len(tags))
    for i, t in enumerate(tags):
        if t.startswith("I-") and f"B-{t[2:]}" in index:
            inside[i], begin_of[i] = True, index[f"B-{t[2:]}"]
    return _Scheme(index.get("O", -1), inside, begin_of)


def _bio_tags(probs: np.ndarray, best: np.ndarray, real: list[int], scheme: _Scheme
              ) -> np.ndarray | None:
    """``best`` with every run of tokens not tagged "O" that breaks the BIO scheme (an I-X
    first, or after anything but B-X or I-X) replaced by its Viterbi path over the entity
    tags (never "O": the same tokens stay PII); None when no run breaks it. Runs are short
    (one value's tokens), so this costs little per text."""
    out: np.ndarray | None = None
    i = 0
    while i < len(real):
        if best[real[i]] == scheme.o:
            i += 1
            continue
        j = i
        while j < len(real) and best[real[j]] != scheme.o:
            j += 1
        run = real[i:j]
        if not _valid([int(best[k]) for k in run], scheme):
            p = probs[run].astype(np.float64)
            # At the start of a run (after "O") B-X and I-X both say "an X begins here".
            np.add.at(p[0], scheme.begin_of[scheme.inside], p[0, scheme.inside])
            logp = np.log(p + 1e-12)
            if scheme.o >= 0:
                logp[:, scheme.o] = -np.inf
            out = best.copy() if out is None else out
            out[run] = _viterbi(logp, scheme)
        i = j
    return out


def _valid(path: list[int], scheme: _Scheme) -> bool:
    inside, begin_of = scheme.inside, scheme.begin_of
    prev = -1
    for t in path:
        if inside[t] and prev not in (t, begin_of[t]):
            return False
        prev = t
    return True


def _viterbi(logp: np.ndarray, scheme: _Scheme) -> list[int]:
    """The most probable tag sequence in which I-X only follows B-X or I-X (so a run, which
    comes after "O" or the start, never opens with I-X)."""
    inside, begin_of = scheme.inside, scheme.begin_of
    own = np.arange(logp.shape[1])
    score = np.where(inside, -np.inf, logp[0])
    back = np.zeros(logp.shape, dtype=np.intp)
    for t in range(1, logp.shape[0]):
        anything = int(np.argmax(score))  # what B-X, "O" and unknown tags may follow
        came = np.where(inside, np.where(score[begin_of] >= score, begin_of, own), anything)
        score = score[came] + logp[t]
        back[t] = came
    path = [int(np.argmax(score))]
    for t in range(logp.shape[0] - 1, 0, -1):
        path.append(int(back[t][path[-1]]))
    return path[::-1]


def _is_card_number(value: str) -> bool:
    """13 to 19 digits (spaces and dashes aside) that pass the Luhn check: a payment card
    number, whatever the model called it (it confuses long digit runs with phone numbers)."""
    if any(not (ch.isdigit() or ch in " -") for ch in value):
        return False
    digits = "".join(ch for ch in value if ch.isdigit())
    return 13 <= len(digits) <= 19 and passes_luhn(digits)


def passes_luhn(digits: str) -> bool:
    """The Luhn checksum of a string of digits (payment card numbers pass it)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# Punctuation never at the edge of an entity ('.' is kept: "Apt.", "J.", "Inc.").
_EDGE = set(",;:!?\"'`()[]{}<>") | {"\u201c", "\u201d", "\u2018", "\u2019"}


_NAME_TYPES = frozenset({"PERSON", "ORGANIZATION", "GPE", "NRP", "TITLE", "STREET_ADDRESS"})


def _strip_punct(text: str, offsets: Sequence[tuple[int, int]], ks: list[int]) -> list[int]:
    """The growth tokens without punctuation-only ones at the far edge."""
    while ks and not _has_alnum(text, offsets[ks[-1]]):
        ks = ks[:-1]
    return ks


def _alnum_run(text: str, offsets: Sequence[tuple[int, int]], ks: list[int]) -> list[int]:
    run = []
    for k in ks:
        if not _has_alnum(text, offsets[k]):
            break
        run.append(k)
    return run


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while end > start and (text[end - 1] in _EDGE or text[end - 1].isspace()):
        end -= 1
    while start < end and (text[start] in _EDGE or text[start].isspace()):
        start += 1
    return start, end


def _join_names(entities: list[PiiEntity], text: str) -> list[PiiEntity]:
    """A name split by a stray B- tag is one entity: two PERSON or ORGANIZATION spans one space
    apart ("Berkshire" "Hathaway"), or PERSON spans around a middle initial (``_name_gap``).
    A TITLE inside a name (its initial "J." read as a title) goes: titles come before names."""
    out: list[PiiEntity] = []
    for e in entities:
        i = next((i for i in range(len(out) - 1, -1, -1) if out[i].type == e.type), None)
        prev = out[i] if i is not None else None
        if e.type in _JOINED_TYPES and prev is not None and (
                text[prev.end:e.start] == " " or (e.type == "PERSON" and _name_gap(text, prev, e))):
            out[i] = PiiEntity(e.type, prev.start, e.end, text[prev.start:e.end],
                               max(prev.score, e.score))
        else:
            out.append(e)
    names = [e for e in out if e.type == "PERSON"]
    return [e for e in out if not (e.type == "TITLE" and any(
        n.start <= e.start and e.end <= n.end for n in names))]


# Not GPE: "Aalborg NO" is a city and a region, one space apart; joining them would make one
# wrong span of two right ones.
_JOINED_TYPES = frozenset({"PERSON", "ORGANIZATION"})


def _name_gap(text: str, prev: PiiEntity, e: PiiEntity) -> bool:
    """Whether two PERSON spans are one name: one space, or a middle initial ("Sari J."
    "Paavolainen", "Faina D" ". " "Yefremova", "Ravil" " G " "Yefimov") between them."""
    gap = text[prev.end:e.start]
    if _NAME_GAP.fullmatch(gap):
        return True
    last_word = prev.text.rsplit(maxsplit=1)[-1]
    return gap == ". " and len(last_word) == 1 and last_word.isupper()


_NAME_GAP = re.compile(r" (?:[A-Z]\.? )?")


# Words the model sometimes tags at the edge of a name ("Marrero and", "and Murphy"), a
# possessive ("roberto's"), and a stray character after it (mojibake: "Yuri Bulgakov ג€");
# inside a name they stay ("Clark, Romero and Hall").
_NAME_EDGE = re.compile(
    r"^(?:and|or|&)\s+|\s+(?:and|or|&)$|['\u2019]s$|\s+[^\sA-Za-z0-9]\W*$", re.IGNORECASE)


_CONNECTORS = frozenset({"and", "or", "&"})


def _trim_name_edges(text: str, start: int, end: int) -> tuple[int, int]:
    if text[start:end].lower() in _CONNECTORS:
        return start, start  # a lone "and" is no name (and would glue two names together)
    while (m := _NAME_EDGE.search(text[start:end])) is not None and m.end() - m.start() < (
            end - start):
        if m.start() == 0:
            start += m.end()
        else:
            end = start + m.start()
    return start, end


# Types whose every value holds a digit.
_DIGIT_TYPES = frozenset({"AGE", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "PHONE_NUMBER",
                          "US_SSN", "ZIP_CODE"})


def _join_phones(entities: list[PiiEntity], text: str) -> list[PiiEntity]:
    """Phone numbers hold no words: a PHONE_NUMBER span over "788-063-Office,07700 063 966"
    is two numbers. Parts split by a stray B- tag ("082 490" "1693", "37" ") " "788-063") are
    joined, and an area code keeps its brackets ("(37) 788-063") and a number its "+"."""
    # An IP address read as a phone number is left whole: _checked_types relabels it.
    phones = [e for e in entities if e.type == "PHONE_NUMBER" and not _is_ip_address(e.text)]
    parts: list[PiiEntity] = []
    for e in phones:
        for a, b in _phone_parts(text, e.start, e.end):
            parts.append(PiiEntity(e.type, a, b, text[a:b], e.score))
    joined: list[PiiEntity] = []
    for e in parts:
        prev = joined[-1] if joined else None
        if prev is not None and _PHONE_GAP.fullmatch(text[prev.end:e.start]):
            joined[-1] = PiiEntity(e.type, prev.start, e.end, text[prev.start:e.end],
                                   max(prev.score, e.score))
        else:
            joined.append(e)
    for i, e in enumerate(joined):
        start = e.start
        if start > 0 and text[start - 1] == "(" and e.text.count(")") > e.text.count("("):
            start -= 1
        if start > 0 and text[start - 1] == "+":
            start -= 1
        kind = "CREDIT_CARD" if _is_card_number(text[start:e.end]) else e.type
        joined[i] = PiiEntity(kind, start, e.end, text[start:e.end], e.score)
    others = [e for e in entities if e not in phones]
    return sorted(others + joined, key=lambda e: (e.start, e.end, e.type))


def _phone_parts(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The spans between words (two letters or more) in ``text[start:end]``, each trimmed
    to start at a digit, "+" or "(" and end at a digit or ")"; those without a digit go."""
    bounds = [start]
    for m in _WORD.finditer(text, start, end):
        bounds += [m.start(), m.end()]
    bounds.append(end)
    out = []
    for a, b in zip(bounds[::2], bounds[1::2], strict=True):
        while a < b and not (text[a].isdigit() or text[a] in "+("):
            a += 1
        while b > a and not (text[b - 1].isdigit() or text[b - 1] == ")"):
            b -= 1
        if any(ch.isdigit() for ch in text[a:b]):
            out.append((a, b))
    return out


_WORD = re.compile(r"[^\W\d_]{2,}")
_PHONE_GAP = re.compile(r"\)? |-")


def _checked_types(entities: list[PiiEntity]) -> list[PiiEntity]:
    """Where a value's own checksum or syntax says what it is, that beats the model's guess:
    a value that parses as an IP address is an IP_ADDRESS, and of entities with one span, one
    whose value passes its type's check (card Luhn, IP syntax, e-mail syntax, IBAN mod 97)
    drops the others there ("48.90.248.226" read as IP, DOMAIN_NAME and PHONE_NUMBER)."""
    relabelled = [PiiEntity("IP_ADDRESS", e.start, e.end, e.text, e.score)
                  if e.type != "IP_ADDRESS" and _is_ip_address(e.text) else e for e in entities]
    if len(relabelled) < 2:
        return relabelled
    merged = _merge_overlaps(relabelled)
    passed = [_passes_check(e) for e in merged]
    checked = {(e.start, e.end) for e, ok in zip(merged, passed, strict=True) if ok}
    return [e for e, ok in zip(merged, passed, strict=True)
            if ok or (e.start, e.end) not in checked]


def _is_ip_address(value: str) -> bool:
    if value.count(".") != 3 and value.count(":") < 2:
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
_IBAN = re.compile(r"[A-Z]{2}\d{2}[A-Z0-9]{10,30}")


def _passes_check(e: PiiEntity) -> bool:
    if e.type == "IP_ADDRESS":
        return _is_ip_address(e.text)
    if e.type == "CREDIT_CARD":
        digits = "".join(ch for ch in e.text if ch.isdigit())
        return 12 <= len(digits) <= 19 and passes_luhn(digits)
    if e.type == "EMAIL_ADDRESS":
        return _EMAIL.fullmatch(e.text) is not None
    if e.type == "IBAN_CODE":
        compact = e.text.replace(" ", "").upper()
        return _IBAN.fullmatch(compact) is not None and passes_iban_check(compact)
    return False


_IPV4_IN = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.]*\d)")
_IPV6_IN = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")
# A postcode: letters, digits, one space or dash between groups, ten characters at most.
_ZIP_SHAPE = re.compile(r"(?=.{2,10}$)[A-Za-z0-9]+(?:[ -][A-Za-z0-9]+)*")
# The fewest digits a value of each type holds (a card has 12-19, a phone number 7 or more
# with its area code, an SSN 9).
_MIN_DIGITS = {"CREDIT_CARD": 12, "PHONE_NUMBER": 7, "US_SSN": 9}


# What separates the fields of a record (CSV, JSON, a query string, a log line's key=value
# pairs): no value but an address holds one ("k.lindgren@telia.se,78.72.140.11,SE" is three).
_FIELD_SEP = re.compile(r'["|;=&<>{}\[\]\t]|,(?!\s)')
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


# A role the prompt gives the assistant ("You are a helpful assistant.", "Act as a senior
# software engineer"): the words before a TITLE that make it the addressee's part, not a
# person's job.
_ROLE_BEFORE = re.compile(
    r"\b(?:you\s+are|you['’]re|act(?:ing)?\s+as|pretend\s+(?:to\s+be|you\s+are)|"
    r"play(?:ing)?\s+the\s+(?:role|part)\s+of|role\s*:|persona\s*:)"
    r"\s+(?:(?:an?|the|my|our)\s+)?(?:[\w-]+\s+){0,4}$", re.IGNORECASE)


def field_parts(entities: Iterable[PiiEntity], text: str) -> list[PiiEntity]:
    """Entities cut at field separators (``_FIELD_SEP``), each part trimmed and of the same
    type (a DATE_TIME or number part only with a digit); a STREET_ADDRESS stays whole ("Hoàn Kiếm;Hà
    Nội;100000;Vietnam")."""
    out = []
    for e in entities:
        if e.type == "STREET_ADDRESS" or not _FIELD_SEP.search(e.text):
            out.append(e)
            continue
        # a date or number field holds digits; the key or code beside it ("ts", "SE",
        # "zip") was read along
        need = str.isdigit if e.type in _DIGIT_TYPES or e.type == "DATE_TIME" else str.isalnum
        out += _cut(e, text, _FIELD_SEP, need)
    return out


# "2022-present": a range to now is its start (a range of dates is two, the conventions say).
_TO_NOW = re.compile(r"\s*[-–—]\s*(?:present|now|today|current|date)$", re.IGNORECASE)
# ":path" after "user@host": git's and scp's remote, whose host is a domain and no one's
# e-mail address ("git@gitlab.example.org:team/repo.git").
SCP_PATH = re.compile(r":[\w~/.-]")
# A unit after a number makes it a quantity ("68 kg", "12 mg", "30%").
UNIT_AFTER = re.compile(
    r"\s?(?:kg|kgs|lb|lbs|pounds|cm|mm|km|m|g|mg|ml|ft|feet|inches|%|°|mph|min|mins|minutes|"
    r"hours|hrs|days|weeks|months|units)\b", re.IGNORECASE)


def possible_values(entities: Iterable[PiiEntity], text: str) -> list[PiiEntity]:
    """The model reads fixed-shape types into text that cannot hold them ("HTTP/1.1" and
    "Mozilla/5.0" as IP addresses, "09/27" as a card, "at 10" as a phone number): an
    IP_ADDRESS that does not parse is cut to the address inside it (a port or a prefix
    length after it) or goes; a CREDIT_CARD, PHONE_NUMBER or US_SSN with too few digits, an
    EMAIL_ADDRESS without "@", a DOMAIN_NAME without a dot, a ZIP_CODE not shaped like a
    postcode, an IBAN_CODE without an IBAN's letters-digits shape and a STREET_ADDRESS of one
    word that is no number ("IL", "SKU-88412") go. A value that opens a bracket it does not
    close ends before it ("W426-8810-3572 (IL"); an AGE with a unit after it ("68 kg") or
    inside a code ("cus_9Xk2") goes; a date range to now is its start ("2022-present"); an
    e-mail address before ":path" is a git or scp remote, its host a DOMAIN_NAME.
    A value with the shape that fails its checksum stays: a mistyped card is still a card.
    Values are first cut at the fields of a record (``field_parts``), and an ISO date read as
    a PHONE_NUMBER is a DATE_TIME. A PERSON holds no digit and two characters or more, and
    covers the whole of a hyphenated name ("Choi Min" "jun" -> "Choi Min-jun"). A TITLE
    that is the role a prompt gives the assistant ("You are a helpful assistant") goes.
    Applied by the guard to the model's entities once its windows are merged (a window's edge
    may cut a value that the next window holds whole)."""
    out = []
    for e in field_parts(entities, text):
        if not e.text.strip():
            continue  # nothing to act on, and no step after expects it
        if e.type == "PHONE_NUMBER" and _ISO_DATE.fullmatch(e.text):
            e = PiiEntity("DATE_TIME", e.start, e.end, e.text, e.score)
        if e.type == "IP_ADDRESS" and not _is_ip_address(e.text):
            inside = next((m for pat in (_IPV4_IN, _IPV6_IN) for m in pat.finditer(e.text)
                           if _is_ip_address(m.group())), None)
            if inside is not None:
                a, b = e.start + inside.start(), e.start + inside.end()
                out.append(PiiEntity(e.type, a, b, text[a:b], e.score))
            continue
        if e.type in _MIN_DIGITS and sum(ch.isdigit() for ch in e.text) < _MIN_DIGITS[e.type]:
            continue
        if e.type == "EMAIL_ADDRESS" and "@" not in e.text:
            continue
        if (e.type == "DOMAIN_NAME" and "." not in e.text) or (
                e.type == "ZIP_CODE" and not _ZIP_SHAPE.fullmatch(e.text)):
            continue  # "src", "fb" of a query string; an e-mail read as a postcode
        if e.type == "IBAN_CODE" and not _IBAN.fullmatch(
                re.sub(r"[\s-]", "", e.text).upper()):
            continue
        if e.type != "DATE_TIME" and (cut := e.text.rfind(" (")) > 0 and ")" not in e.text[cut:]:
            value = e.text[:cut].rstrip()  # "W426-8810-3572 (IL": the bracket it opens goes
            e = PiiEntity(e.type, e.start, e.start + len(value), value, e.score)
        if e.type == "STREET_ADDRESS" and " " not in e.text.strip() and (
                not any(ch.isdigit() for ch in e.text) or any(ch.isalpha() for ch in e.text)):
            continue  # "The", "IL", "SKU-88412": one word is a number or no address
        if e.type == "DATE_TIME" and (cut := _TO_NOW.search(e.text)) and cut.start() > 0:
            e = PiiEntity(e.type, e.start, e.start + cut.start(), e.text[:cut.start()], e.score)
        if (e.type == "EMAIL_ADDRESS" and SCP_PATH.match(text, e.end)
                and "." in e.text.partition("@")[2]):
            at = e.text.index("@") + 1  # "git@gitlab.example.org:team/repo.git": a host
            e = PiiEntity("DOMAIN_NAME", e.start + at, e.end, e.text[at:], e.score)
        if e.type == "AGE" and (UNIT_AFTER.match(text, e.end) or (
                e.start and (text[e.start - 1].isalnum() or text[e.start - 1] == "_"))):
            continue  # "68 kg", "cus_9Xk2": a quantity or a piece of a code, no age
        if e.type == "TITLE" and _ROLE_BEFORE.search(text, max(0, e.start - 80), e.start):
            continue  # the role a prompt gives the assistant: nobody's title
        if e.type == "PERSON":
            if len(e.text) < 2 or any(ch.isdigit() for ch in e.text):
                continue  # "I", "850.00", "20Wanjiku": no name
            e = _whole_hyphenated(e, text)
        if e.text.strip():  # a step above may have cut it to nothing
            out.append(e)
    return _merge_overlaps(out)


def _whole_hyphenated(e: PiiEntity, text: str) -> PiiEntity:
    """A name covers the whole of a hyphenated word it touches ("Ji-woo", "Ben-David"): the
    tokenizer splits at the hyphen and the model often tags one side only."""
    start, end = e.start, e.end
    while start >= 2 and text[start - 1] == "-" and text[start - 2].isalpha():
        start -= 1
        while start > 0 and text[start - 1].isalpha():
            start -= 1
    while end + 1 < len(text) and text[end] == "-" and text[end + 1].isalpha():
        end += 1
        while end < len(text) and text[end].isalpha():
            end += 1
    return e if (start, end) == (e.start, e.end) else PiiEntity(
        e.type, start, end, text[start:end], e.score)


def passes_iban_check(iban: str) -> bool:
    """The ISO 13616 mod-97 check of an IBAN (spaces ignored, letters of either case; letters
    and digits only)."""
    s = iban.replace(" ", "").upper()
    return int("".join(str(int(ch, 36)) for ch in s[4:] + s[:4])) % 97 == 1


def _merge_overlaps(entities: Iterable[PiiEntity]) -> list[PiiEntity]:
    """Merge overlapping spans of the same type (union span, max score), sorted by start."""
    out: list[PiiEntity] = []
    for e in sorted(entities, key=lambda e: (e.type, e.start, e.end)):
        cur = out[-1] if out else None
        if cur is not None and cur.type == e.type and e.start < cur.end:
            if e.end > cur.end:
                # Both texts are slices of one original, so the union is their concatenation.
                text, end = cur.text + e.text[cur.end - e.start :], e.end
            else:
                text, end = cur.text, cur.end
            out[-1] = PiiEntity(cur.type, cur.start, end, text, max(cur.score, e.score))
        else:
            out.append(e)
    return sorted(out, key=lambda e: (e.start, e.end, e.type))


def merge_windows(entities_per_window: Iterable[Iterable[PiiEntity]]) -> list[PiiEntity]:
    """One list from overlapping windows: an entity seen by two windows is kept once.

    Offsets must be relative to the whole text (token windows keep the tokenizer's offsets).
    """
    return _merge_overlaps(e for window in entities_per_window for e in window)


def overlap_clusters(text: str,
                     entities: Iterable[PiiEntity]) -> list[tuple[int, int, PiiEntity]]:
    """The entities' spans (clipped to ``text``, empty ones dropped) with overlapping ones
    merged: ``(start, end, entity)`` in text order, the entity the highest-scoring of those
    merged, so one placeholder covers the union and no fragment of either survives."""
    clusters: list[list[Any]] = []  # [start, end, entity naming the placeholder]
    for e in sorted(entities, key=lambda e: (e.start, -e.end)):
        start, end = max(0, e.start), min(len(text), e.end)
        if start >= end:
            continue
        if clusters and start < clusters[-1][1]:
            c = clusters[-1]
            c[1] = max(c[1], end)
            if e.score > c[2].score:
                c[2] = e
        else:
            clusters.append([start, end, e])
    return [(a, b, e) for a, b, e in clusters]


def redact(text: str, entities: Iterable[PiiEntity]) -> str:
    """Replace each entity span with ``<TYPE>``.

    Overlapping spans become one placeholder over their union (``overlap_clusters``).
    Replacing right to left keeps the offsets of the spans still to do valid.
    """
    for start, end, e in reversed(overlap_clusters(text, entities)):
        text = f"{text[:start]}<{e.type}>{text[end:]}"
    return text


# -- span conventions ----------------------------------------------------------------------


def span_conventions(entities: Sequence[PiiEntity], text: str) -> list[PiiEntity]:
    """The router's span conventions (README "PII span conventions"), applied to what it
    finds and, by ``eval pii``, to gold spans alike: a name holds no line break
    (``one_line_names``) and no honorific (``without_honorifics``), a date written with its
    time or weekday is one DATE_TIME (``whole_dates``), a postal address one STREET_ADDRESS
    (``whole_addresses``), an AGE its number (``bare_ages``)."""
    return whole_addresses(whole_dates(without_honorifics(
        one_line_names(bare_ages(entities), text), text), text), text)


_DIGITS = re.compile(r"\d+")


def bare_ages(entities: Sequence[PiiEntity]) -> list[PiiEntity]:
    """An AGE written with digits is its number ("7-year-old" -> "7", "67M" -> "67"), as the
    training data and both held-out sets mark it; one in words stays as it is."""
    out = []
    for e in entities:
        if e.type == "AGE" and not e.text.isdigit() and (m := _DIGITS.search(e.text)):
            e = PiiEntity("AGE", e.start + m.start(), e.start + m.end(), m.group(), e.score)
        out.append(e)
    return out


# Types of names and words, none of which runs over a line break ("Luis Ortega\nLuis" in a
# signature is two names; an address does span lines).
_LINE_TYPES = frozenset({"PERSON", "ORGANIZATION", "GPE", "NRP", "TITLE"})
_LINE_BREAKS = re.compile(r"[\r\n]+")


def one_line_names(entities: Sequence[PiiEntity], text: str) -> list[PiiEntity]:
    """Entities of ``_LINE_TYPES`` split at line breaks; parts without a letter or digit go."""
    out = []
    for e in entities:
        if e.type not in _LINE_TYPES or ("\n" not in e.text and "\r" not in e.text):
            out.append(e)
            continue
        out += _cut(e, text, _LINE_BREAKS, str.isalnum)
    return out


def _cut(e: PiiEntity, text: str, sep: re.Pattern[str], need) -> list[PiiEntity]:
    """``e`` cut at the matches of ``sep``: the trimmed parts with a character that ``need``
    accepts, each of ``e``'s type and score."""
    out = []
    for a, b in _between(e.start, e.end, list(sep.finditer(text, e.start, e.end))):
        a, b = _trim(text, a, b)
        if any(need(ch) for ch in text[a:b]):
            out.append(PiiEntity(e.type, a, b, text[a:b], e.score))
    return out


# Honorifics before a name: a TITLE of their own, never part of the PERSON ("Dr. P. Naidoo" ->
# TITLE "Dr." + PERSON "P. Naidoo"), as the training data and presidio-research mark them.
HONORIFICS = ("Mr", "Mrs", "Ms", "Miss", "Mx", "Dr", "Professor", "Prof", "Sir", "Dame", "Herr",
              "Herrn", "Frau", "Mme", "Mlle", "Sr", "Sra", "Srta", "Dra")
_HONORIFIC_WORD = "(?:" + "|".join(HONORIFICS) + ")"
_HONORIFIC = re.compile(_HONORIFIC_WORD + r"\.?(?=\s+\S)", re.IGNORECASE)
_HONORIFIC_DOT = re.compile(_HONORIFIC_WORD + r"\.", re.IGNORECASE)


def without_honorifics(entities: Sequence[PiiEntity], text: str) -> list[PiiEntity]:
    """PERSON entities that open with an honorific lose it to a TITLE entity; an honorific
    TITLE keeps its dot ("Mr." read as "Mr" and ".")."""
    out = []
    for e in entities:
        if (e.type == "TITLE" and text[e.end:e.end + 1] == "."
                and _HONORIFIC_DOT.fullmatch(e.text + ".")):
            e = PiiEntity("TITLE", e.start, e.end + 1, text[e.start:e.end + 1], e.score)
        m = _HONORIFIC.match(e.text) if e.type == "PERSON" else None
        if m is None:
            out.append(e)
            continue
        a = e.start + m.end()
        while a < e.end and text[a].isspace():
            a += 1
        out.append(PiiEntity("TITLE", e.start, e.start + m.end(), m.group(), e.score))
        out.append(PiiEntity("PERSON", a, e.end, text[a:e.end], e.score))
    return _merge_overlaps(out)


# What joins a date to its time or weekday in one expression ("Wednesday 12 June, 09:30",
# "2024-05-01T09:00Z", "Friday at 3pm"); a dash does not ("2015-2019" is two years).
_DATE_GAP = re.compile(r"[ \t]{1,2}|,[ \t]?|[ \t]+(?:at|@)[ \t]+|T")


_MONTH_OR_DAY = (r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec|mon|tue|tues|wed|"
                 r"thu|thur|thurs|fri|sat|sun)[a-z]*\.?")
# What a date or time holds: digits joined by a date or time separator, a year, a month or a
# weekday's name, an hour with am/pm.
DATE_LIKE = re.compile(r"\d[:/.\-]\d|\b\d{4}\b|\b" + _MONTH_OR_DAY + r"(?![a-z])|"
                        r"\d\s?(?:am|pm|a\.m|p\.m)\b", re.IGNORECASE)
# A range of dates is two: a dash between two sides that each hold a year ("2015-2019",
# "March 2016 – August 2023"); a time range stays one ("10:00–11:30").
_RANGE_DASH = re.compile(r"\s*[–—]\s*|\s+-\s+|(?<=\d{4})-(?=\d{4}\b)")
_YEAR = re.compile(r"\b\d{4}\b")
# A time zone after a time (one with a colon) belongs to it ("07:52:13 +0200", "10:00
# (GMT+3)", "09:00 UTC").
_ZONE_AFTER = re.compile(r"\s?(?:[+-]\d{2}:?\d{2}\b|\(?(?:UTC|GMT)(?:[+-]\d{1,2}(?::?\d{2})?)?\)?"
                         r"(?![\w+])|Z\b)")
_CLOCK_DIGITS = re.compile(r"\d:\d\d")  # a time in a date
_WEEKDAY_BEFORE = re.compile(r"\b(?:mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun)[a-z]*\.?,?\s$",
                             re.IGNORECASE)


def _date_pieces(e: PiiEntity, text: str) -> list[PiiEntity]:
    """One DATE_TIME as the dates it holds: cut at line breaks and at range dashes (parts with
    nothing date-like go), each grown over a time zone after it, a weekday before it and the
    dot of "a.m."."""
    cuts = [(e.start, e.end)]
    for pattern in (_LINE_BREAKS, _RANGE_DASH):
        nxt = []
        for a, b in cuts:
            seps = list(pattern.finditer(text, a, b))
            if pattern is _RANGE_DASH and not all(
                    _YEAR.search(text, x, y) for x, y in _between(a, b, seps)):
                seps = []
            nxt += _between(a, b, seps)
        cuts = nxt
    out = []
    for a, b in cuts:
        a, b = _trim(text, a, b)
        if not DATE_LIKE.search(text, a, b):
            continue
        if text[b - 3:b].lower() in ("a.m", "p.m") and text[b:b + 1] == ".":
            b += 1
        if (text[b - 1:b].isdigit() and _CLOCK_DIGITS.search(text, a, b)
                and (z := _ZONE_AFTER.match(text, b)) is not None):
            b = z.end()
        if text[a:a + 1].isdigit() and (w := _WEEKDAY_BEFORE.search(text, max(0, a - 12), a)):
            a = w.start()
        out.append(PiiEntity("DATE_TIME", a, b, text[a:b], e.score))
    return out


def _between(a: int, b: int, seps: list[re.Match[str]]) -> list[tuple[int, int]]:
    bounds = [a, *(i for m in seps for i in (m.start(), m.end())), b]
    return list(zip(bounds[::2], bounds[1::2], strict=True))


_CLOCK_AT_END = re.compile(r"\d{1,2}:\d\d(?::\d\d)?(?:\s?[ap]\.?m\.?)?$", re.IGNORECASE)
_CLOCK_AT_START = re.compile(r"\d{1,2}:\d\d")
_DASH = re.compile(r"[ \t]*[–—-][ \t]*")


def _time_range(prev: PiiEntity, e: PiiEntity, text: str) -> bool:
    """A time, a dash and a time: one range ("10:00–11:30"), as the conventions say."""
    return (_DASH.fullmatch(text, prev.end, e.start) is not None
            and _CLOCK_AT_END.search(prev.text) is not None
            and _CLOCK_AT_START.match(e.text) is not None)


def whole_dates(entities: Sequence[PiiEntity], text: str) -> list[PiiEntity]:
    """Each DATE_TIME as the dates it holds (``_date_pieces``: a range is two, a line break
    ends a date, a time keeps its zone); then neighbouring DATE_TIME entities are one when
    only ``_DATE_GAP`` separates them and the second holds a digit (a date or time follows;
    "Monday, Tuesday" stays two), or when they are a time range ("10:00–11:30")."""
    out: list[PiiEntity] = []
    pieces = _merge_overlaps(p for e in entities
                             for p in (_date_pieces(e, text) if e.type == "DATE_TIME" else [e]))
    # One pass (a log of thousands of timestamps): the last date's index in ``out``, and the
    # furthest end of everything else kept, which must not reach past that date's end.
    last: int | None = None
    others_end = -1
    for e in sorted(pieces, key=lambda e: (e.start, e.end)):
        prev = out[last] if last is not None else None
        if (e.type == "DATE_TIME" and prev is not None and prev.end <= e.start
                and (_DATE_GAP.fullmatch(text[prev.end:e.start]) or _time_range(prev, e, text))
                and any(ch.isdigit() for ch in e.text) and others_end <= prev.end):
            out[last] = PiiEntity("DATE_TIME", prev.start, e.end, text[prev.start:e.end],
                                  max(prev.score, e.score))
            continue
        if e.type == "DATE_TIME":
            if prev is not None:
                others_end = max(others_end, prev.end)
            last = len(out)
        else:
            others_end = max(others_end, e.end)
        out.append(e)
    return out


# One postal address is one STREET_ADDRESS span: street lines, city, region, country and
# postcode together (annotators and the model both sometimes split it into street lines, GPE
# and ZIP_CODE parts). A redaction then hides the address as one, and the guard, the training
# data's scorer and the evaluation count it once.
ADDRESS_PARTS = frozenset({"STREET_ADDRESS", "GPE", "ZIP_CODE"})
# What may separate two parts of one address: punctuation and line breaks, and at most a
# region's upper-case code ("Toronto, ON M5R 3H4", "Newark, NJ 07114"); no words.
_ADDRESS_GAP = re.compile(r"[\s,.;:/\-–]{0,8}(?:[A-Z]{2,3}[\s,.;:/\-–]{1,8})?")


def whole_addresses(entities: Sequence[PiiEntity], text: str) -> list[PiiEntity]:
    """Runs of address parts (``ADDRESS_PARTS``) with only separators between them, at least
    one of them a STREET_ADDRESS, become one STREET_ADDRESS entity (score: the parts' best).
    A city or postcode on its own stays what it is; other entities are kept as they are."""
    ents = sorted(entities, key=lambda e: (e.start, e.end))
    out: list[PiiEntity] = []
    i = 0
    while i < len(ents):
        j = i
        if ents[i].type in ADDRESS_PARTS:
            while (j + 1 < len(ents) and ents[j + 1].type in ADDRESS_PARTS
                   and ents[j + 1].start >= ents[j].end
                   and _ADDRESS_GAP.fullmatch(text[ents[j].end:ents[j + 1].start])):
                j += 1
        run = ents[i:j + 1]
        if j > i and any(e.type == "STREET_ADDRESS" for e in run):
            start, end = run[0].start, run[-1].end
            out.append(PiiEntity("STREET_ADDRESS", start, end, text[start:end],
                                 max(e.score for e in run)))
        else:
            out.extend(run)
        i = j + 1
    return out
