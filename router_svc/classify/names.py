"""Place and organisation names found from word lists, beside the model.

The model reads a name by its sentence; it misses well-known places where the sentence says
little ("taxes in Canada", "DUBAI -> LONDON") and organisations whose words it reads apart
("University of Bergen" as a GPE, "Tata Consultancy Services" as a name and a TITLE). Two
recognisers add what such lists know, as pure functions ``text -> list[PiiEntity]``:

- GPE (``places``): a name on ``data/places.txt`` (countries and their usual short forms, US
  states and other countries' regions, capitals, cities of 100,000 people or more: written by
  ``export/gazetteer.py``), in Title Case or upper case, standing on its own: not inside a
  longer proper name ("Paris Hilton", "Michael Jordan", "Boston Consulting Group"), a street
  ("32 Florida Road"), a domain or an e-mail address.
- ORGANIZATION (``organisations``): a run of capitalised words that ends in an
  organisation's word or legal form ("Seoul National University", "Dangote Group", "Bakkerij
  Smit B.V.") or opens with one and goes on ("University of Tehran", "Hotel Casa Palacio").
  One more word must be a name, not a generic one ("Medical Centre", "Customer Services"
  are not organisations), unless the run has three words or more ("Natural History Museum").

``places`` also reads lower-case places after a word that announces one and two-letter
region codes standing as a record's fields (``lower_case_places``, ``region_codes``);
``organisations`` also reads bare names in context and well-known brands
(``organisations_in_context``, ``known_brands``): one recogniser per type, so that each is
measured whole. ``groups_named`` is the NRP recogniser.

"Generic" is ``data/common_words.txt``: words English text writes in lower case. Both score
``LISTED`` (below the model's usual confidence): in the union, the model's own reading of the
same span stays, a longer one from the lists wins (``recognisers.union``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from importlib import resources

from router_svc.classify.pii import HONORIFICS, PiiEntity, SpanIndex, first_of_overlaps

LISTED = 0.8  # the score of a name found on a word list

_UPPER = "A-ZÀ-ÖØ-Þ"
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
CALENDAR_WORDS = frozenset(MONTHS + WEEKDAYS)  # capitalised, yet no name
# A capitalised word (or an upper-case one, or "McDonald", "O'Brien", "Baden-Württemberg").
_CAP_WORD = re.compile(rf"(?<![\w@./\\-])[{_UPPER}][\w'’-]*(?:\.(?=[\s,;:)]|$))?")
# The guard's honorifics, and those that stand before a name without making it a TITLE there.
HONORIFIC_WORDS = frozenset(HONORIFICS) | {"Lord", "Lady", "M"}
STREET_WORDS = frozenset({
    "Road", "Rd", "Street", "St", "Avenue", "Ave", "Boulevard", "Blvd", "Lane", "Ln", "Drive",
    "Dr", "Way", "Square", "Place", "Terrace", "Court", "Crescent", "Close", "Highway",
    "Hwy", "Parkway", "Strasse", "Straße", "Rue", "Calle",
})


_CAPITALISED = re.compile(rf"[{_UPPER}][\w'’-]*")


@functools.lru_cache(maxsize=4)
def capitalised_words(text: str) -> frozenset[str]:
    """The text's capitalised words, gathered in C once for both recognisers."""
    return frozenset(_CAPITALISED.findall(text))


def occurrences(text: str, word: str) -> Iterator[int]:
    """Where ``word`` stands in ``text`` as a whole word."""
    i = text.find(word)
    while i >= 0:
        j = i + len(word)
        if (i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "_.")) and (
                j == len(text) or not (text[j].isalnum() or text[j] == "_")):
            yield i
        i = text.find(word, i + 1)


@functools.cache
def word_list(name: str) -> frozenset[str]:
    text = resources.files("router_svc.classify").joinpath("data", name).read_text("utf-8")
    return frozenset(w for w in text.splitlines() if w and not w.startswith("#"))


def common_words() -> frozenset[str]:
    return word_list("common_words.txt")


def first_names() -> frozenset[str]:
    """Given names of many cultures (``data/first_names.txt``), less common words."""
    return word_list("first_names.txt")


def is_place(name: str) -> bool:
    return name in word_list("places.txt")


@functools.cache
def _places_by_first_word(upper: bool) -> dict[str, tuple[tuple[str, ...], ...]]:
    """Each place as its words (upper-cased with ``upper``), under its first word, longest
    first."""
    by_first: dict[str, list[tuple[str, ...]]] = {}
    for place in word_list("places.txt"):
        words = tuple(place.upper().split() if upper else place.split())
        by_first.setdefault(words[0], []).append(words)
    return {k: tuple(sorted(v, key=len, reverse=True)) for k, v in by_first.items()}


def is_name_word(word: str) -> bool:
    """A capitalised word that is a name, not a sentence's first word, a generic one or a code
    with digits ("M19" in "Manchester M19 2LL")."""
    return word.rstrip(".").lower() not in common_words() and not any(
        ch.isdigit() for ch in word)


# Lower-case words inside a place's name ("Rio de Janeiro", "Frankfurt am Main", "Isle of Man").
_PLACE_PARTICLE = re.compile(r"(?:de|do|da|dos|das|del|la|le|les|of|am|an|der|sur|en|y|el|al)\b")


def _words_at(text: str, start: int, count: int) -> list[re.Match[str]]:
    """Up to ``count`` capitalised words (or particles inside them) from ``start`` on, one
    space apart."""
    out: list[re.Match[str]] = []
    pos = start
    while len(out) < count:
        m = _CAP_WORD.match(text, pos) or (_PLACE_PARTICLE.match(text, pos) if out else None)
        if m is None:
            break
        out.append(m)
        if text[m.end():m.end() + 1] != " ":
            break
        pos = m.end() + 1
    return out


def _word_before(text: str, start: int) -> str | None:
    """The word right before ``start`` when one space separates them."""
    if start < 2 or text[start - 1] != " ":
        return None
    m = re.search(r"[\w'’.-]+$", text[max(0, start - 40):start - 1])
    return m.group() if m else None


def _place_at(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    """The longest place starting at the capitalised word ``m``, as (start, end). Upper-case
    words match a place's upper-cased name ("NEW YORK", "DUBAI"); a lone upper-case word of
    three letters or fewer only as written on the list ("US", "UAE") and not among other
    upper-case words ("LET US KNOW")."""
    word = m.group().rstrip(".")
    candidates: tuple[tuple[str, ...], ...] = _places_by_first_word(False).get(word, ())
    if word.isupper() and len(word) > 1:
        upper = _places_by_first_word(True).get(word, ())
        if len(word) <= 3:
            before = _word_before(text, m.start())
            if before and before.isupper():
                candidates = ()
            upper = tuple(p for p in upper if len(p) > 1)
        candidates = tuple(sorted({*candidates, *upper}, key=len, reverse=True))
    if not candidates:
        return None
    if len(candidates[0]) == 1:  # no longer place opens with this word: it is the place
        return m.start(), m.start() + len(word)
    words = _words_at(text, m.start(), len(candidates[0]))
    got = tuple(w.group().rstrip(".") for w in words)
    for place in candidates:
        if got[:len(place)] == place:
            last = words[len(place) - 1]
            return m.start(), last.start() + len(got[len(place) - 1])
    return None


@functools.cache
def _first_words() -> frozenset[str]:
    return frozenset(_places_by_first_word(False)) | frozenset(_places_by_first_word(True))


@functools.cache
def _second_words() -> dict[str, tuple[str, ...]]:
    """For a word that opens only places of two words or more ("The Hague", "Can Tho"), the
    words that may follow it: most of its uses ("The", "Can") are then passed over in C."""
    out: dict[str, tuple[str, ...]] = {}
    for upper in (False, True):
        for first, places_ in _places_by_first_word(upper).items():
            if all(len(p) > 1 for p in places_):
                out[first] = tuple({*out.get(first, ()), *(p[1] for p in places_)})
    return out


def _candidates(text: str) -> Iterator[re.Match[str]]:
    """The capitalised words that open a place's name, in order: only the words on the list
    are looked for, so a prompt's other capitalised words cost no Python step."""
    wanted = capitalised_words(text) & _first_words()
    seconds = _second_words()
    for i in sorted({i for word in wanted for i in occurrences(text, word)}):
        m = _CAP_WORD.match(text, i)
        if m is None or (word := m.group().rstrip(".")) not in wanted:
            continue
        after = seconds.get(word)
        if after is None or text.startswith(after, m.end() + 1):
            yield m


def prepare() -> None:
    """Read the word lists and build their tables now (tens of milliseconds), not in the
    first request with a capitalised word."""
    _first_words()
    _second_words()
    common_words()
    first_names()


def places(text: str) -> list[PiiEntity]:
    out: list[PiiEntity] = []
    skip_to = 0
    for m in _candidates(text):
        if m.start() < skip_to:
            continue
        span = _place_at(text, m)
        if span is None:
            continue
        start, end = span
        skip_to = end
        before = _word_before(text, start)
        if before and before[0].isupper() and (is_name_word(before) or before.rstrip(".")
                                               in HONORIFIC_WORDS) and not _code_beside(
                                                   text[start:end], before):
            continue  # "Michael Jordan", "Mr. Houston"; not "OCT DUBAI"
        after = _CAP_WORD.match(text, end + 1) if text[end:end + 1] == " " else None
        if after and (is_name_word(after.group()) or after.group().rstrip(".")
                      in STREET_WORDS) and not _code_beside(text[start:end], after.group()):
            continue  # "Paris Hilton", "Florida Road"; not "DUBAI DXB"
        if _in_address_or_domain(text, end):
            continue
        out.append(PiiEntity("GPE", start, end, text[start:end], LISTED))
    return out + _not_overlapping(out, lower_case_places(text) + region_codes(text))


def _in_address_or_domain(text: str, end: int) -> bool:
    """A word ending at ``end`` is an e-mail address's or a domain's part ("paris@...",
    "lyon.fr")."""
    return text[end:end + 1] in ("@", "_") or re.match(r"\.[^\W\d_]", text[end:end + 2]) is not None


def _code_beside(place: str, word: str) -> bool:
    """An upper-case place with an upper-case code of up to three letters beside it: an
    airport's, a month's, a region's ("DUBAI DXB", "05 OCT DUBAI"), not a name's word."""
    return place.isupper() and word.isupper() and word.isalpha() and len(word) <= 3


# A place in lower case, after a word that says one follows ("live in bristol", "the shipment
# to novosibirsk"): a prompt typed in lower case writes names so too.
_ANNOUNCES_PLACE = re.compile(r"\b(?:in|from|to|at|near|around|visit|visiting|of) $")


@functools.cache
def _lower_places() -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    """Listed places in lower case: those of one word that is no common word and longer than
    three letters ("bristol"; not "reading"), and those of two words by their first ("new" ->
    "york", "jersey", ...)."""
    one, two = set(), {}
    for place in word_list("places.txt"):
        words = place.lower().split()
        if len(words) == 1 and len(words[0]) > 3 and words[0] not in common_words():
            one.add(words[0])
        elif len(words) == 2:
            two.setdefault(words[0], set()).add(words[1])
    return frozenset(one), {k: frozenset(v) for k, v in two.items()}


def lower_case_places(text: str) -> list[PiiEntity]:
    """Listed places written in lower case after ``_ANNOUNCES_PLACE``'s words: two words that
    are a place ("new york"), or one that is a place and no common word ("bristol", not
    "reading"). Only places whose words the text holds are looked for."""
    words = lower_words(text)
    one, two = _lower_places()
    wanted = [w for w in words & one]
    wanted += [f"{w} {x}" for w in words & two.keys() for x in two[w] & words]
    out = []
    for place in wanted:
        for i in occurrences(text, place):
            end = i + len(place)
            if _ANNOUNCES_PLACE.search(text, max(0, i - 12), i) and not _in_address_or_domain(
                    text, end):
                out.append(PiiEntity("GPE", i, end, place, LISTED))
    return first_of_overlaps(out)


# Lower-case runs (parts of capitalised words too: ``occurrences`` then finds only whole
# words); a character class first, so ``re`` scans in C.
_LOWER_WORDS = re.compile(r"[a-z]{2,}")


@functools.lru_cache(maxsize=4)
def lower_words(text: str) -> frozenset[str]:
    """The text's lower-case words, gathered in C once for the place and group recognisers."""
    return frozenset(_LOWER_WORDS.findall(text))


# Words that end an organisation's name, and those that open one ("University of ...").
ORG_LAST = frozenset({
    "University", "College", "Institute", "Hospital", "Clinic", "Museum", "Council", "Bank",
    "Group", "Holdings", "Airlines", "Airways", "Corporation", "Corp", "Company", "Co",
    "Inc", "Ltd", "Limited", "LLC", "LLP", "PLC", "GmbH", "AG", "SA", "S.A", "S.L",
    "B.V", "BV", "N.V", "NV", "Pty", "SpA", "S.p.A", "Oy", "AB", "ASA", "KG", "Foundation",
    "Association", "Society", "Agency", "Authority", "Services", "Solutions",
    "Technologies", "Labs", "Laboratories", "Logistics", "Consulting", "Consultants",
    "Partners", "Insurance", "Motors", "Pharmaceuticals", "Telecom", "School", "Academy",
    "Kommune", "Municipality", "Commission", "Federation", "Church", "Parish", "Mosque",
    "Cathedral", "Hotel", "Hotels", "Resort", "Restaurant", "Bakery", "Club", "FC",
    "Studios", "Records", "Trust", "Centre", "Center", "Ministry", "Department", "Bureau",
})
ORG_FIRST = frozenset({
    "University", "Universidad", "Universidade", "Université", "Universität", "Università",
    "Bank", "Banco", "Banque", "Hotel", "Ministry", "Department", "Museum", "Musée", "Museo",
    "Institute", "Instituto", "Institut", "Hospital", "Hôpital", "Klinikum", "Clinique",
    "Clínica", "College", "Stichting", "Fundación", "Fondation", "Stiftung", "Academy",
})
# Legal forms written with a dot, which belongs to the name ("Acme Inc.", "Smit B.V.").
_DOTTED = frozenset({"Inc", "Co", "Ltd", "Corp", "S.A", "S.L", "B.V", "N.V", "S.p.A"})
# Words that may open a capitalised run without being part of the name after them.
_OPENERS = frozenset({
    "The", "A", "An", "At", "In", "On", "From", "To", "For", "With", "By", "Of", "And", "Or",
    "My", "Our", "Your", "His", "Her", "Their", "Its", "This", "That", "Dear", "Hi", "Hello",
    "Hey", "Thanks", "Thank", "Please", "I", "We", "You", "He", "She", "They", "It", "Is",
    "Was", "Are", "If", "When", "Me", "Re", "Fwd", "Subject", "Mr", "Mrs", "Ms", "Dr", "Prof",
    "Also", "But", "So", "Then", "Called", "Via", "Visit", "Contact", "About",
})
# Looked up among the capitalised words; the dotted ones ("S.A", "B.V") by substring.
_KEYWORDS = frozenset(w for w in ORG_LAST | ORG_FIRST if "." not in w and w[0].isupper())
_OTHER_KEYWORDS = (ORG_LAST | ORG_FIRST) - _KEYWORDS
_SAINTS = frozenset({"St", "Ste", "Mt", "Ft"})  # "St. Luke's International Hospital"
_NAME_TOKEN = re.compile(rf"(?<![\w@./\\-])[{_UPPER}][\w'’-]*(?:\.(?:[A-Za-z]\.)*)?")
# What may stand between two words of one name: a space, or joining words ("of", "de los").
_GAP = re.compile(r" (?:(?:of|de|des|du|la|le|los|las|del|di|da|do|for|&|the|für|van|von|der)"
                  r" ){0,2}")


def _runs(text: str, start: int = 0, end: int | None = None) -> list[list[re.Match[str]]]:
    """Runs of capitalised words with only a space or joining words between them, in
    ``text[start:end]``."""
    runs: list[list[re.Match[str]]] = []
    run: list[re.Match[str]] = []
    for m in _NAME_TOKEN.finditer(text, start, len(text) if end is None else end):
        if run:
            prev = run[-1]
            joined = _GAP.fullmatch(text, prev.end(), m.start()) is not None
            if not joined or (prev.group().endswith(".") and _key(prev) not in _SAINTS):
                runs.append(run)
                run = []
        run.append(m)
    if run:
        runs.append(run)
    return runs


def _key(m: re.Match[str]) -> str:
    return m.group().rstrip(".")


def _org_in(run: list[re.Match[str]]) -> tuple[int, int] | None:
    """The organisation in a run, as indices of its first and last word, or None."""
    first = 0
    while first < len(run) and _key(run[first]) in _OPENERS:
        first += 1
    words = run[first:]
    if len(words) < 2:
        return None
    last = max((i for i, w in enumerate(words) if i > 0 and _key(w) in ORG_LAST), default=None)
    if last is None:
        if _key(words[0]) not in ORG_FIRST:
            return None
        last = len(words) - 1
    elif _key(words[last]) in ORG_FIRST:
        last = len(words) - 1  # "American University of Beirut"
    named = [w for w in words[:last + 1] if _key(w) not in _OPENERS]
    others = [w for w in named if _key(w) not in ORG_LAST and _key(w) not in ORG_FIRST]
    if len(named) < 3 and not any(is_name_word(w.group()) for w in others):
        return None
    return first, first + last


# How far before and after an organisation's word its name may reach (characters).
_REACH_BEFORE, _REACH_AFTER = 120, 80


def _near_keywords(text: str) -> list[tuple[int, int]]:
    """The stretches of text around an organisation's word, merged: only there can a name be.
    The words are looked up in the set of the text's capitalised words, so a prompt without
    one costs a set intersection."""
    keys = (capitalised_words(text) & _KEYWORDS) | {k for k in _OTHER_KEYWORDS if k in text}
    hits = sorted(i for k in keys for i in occurrences(text, k))
    out: list[tuple[int, int]] = []
    for i in hits:
        a, b = max(0, i - _REACH_BEFORE), min(len(text), i + _REACH_AFTER)
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


# What a sentence says before an organisation's bare name ("charged twice by Ryanair", "a job
# offer from Zalando", "previously at Monzo and Deliveroo", "a letter from HMRC").
_ORG_CONTEXT = re.compile(
    r"\b(?:(?:work(?:s|ed|ing)?|employed|(?:job|position|role|internship|interview)s?|"
    r"previously|formerly|currently|interned|(?:an? |my |the )?account) (?:at|for|by|with)|"
    r"(?:joined|joining|left|leaving|quit|quitting)|"
    r"(?:offer|bill|invoice|letter|e-?mail|refund|statement|notice|parcel|package|delivery|"
    r"order|charges?|payment|message|reply|response) from|charged (?:\w+ )?by) $",
    re.IGNORECASE)
# The announcing phrase's last word before a capital letter, found in C (a literal prefix).
_ORG_HINT = re.compile(rf"(?:at|for|by|with|from|joined|joining|left|leaving|quit|"
                       rf"quitting) [{_UPPER}]")
# A bare name: a capitalised word ("Zalando"), an acronym ("HMRC"), or one written as one word
# with inner capitals or a dot ("DigitalOcean", "Kaspi.kz"), up to three words.
_BARE_NAME = re.compile(rf"[{_UPPER}][\w'’&-]*(?:\.[a-z]{{2,3}}\b)?")


def _bare_org_word(word: str) -> bool:
    """A word that can only be an organisation's name here: no common word, first name, place,
    honorific, month or weekday, and no single letter."""
    return (len(word) > 1 and is_name_word(word) and word not in first_names()
            and not is_place(word) and word not in HONORIFIC_WORDS
            and word.title() not in CALENDAR_WORDS
            and not word.endswith(("ish", "ese", "ian", "ians")))  # "English", "Brazilian"


def organisations_in_context(text: str) -> list[PiiEntity]:
    """Bare organisation names after the words that announce one (``_ORG_CONTEXT``): one to
    three name words, and a second name after "and" ("Monzo and Deliveroo")."""
    out: list[PiiEntity] = []
    for hint in _ORG_HINT.finditer(text):
        i = hint.end() - 1
        if (hint.start() and text[hint.start() - 1].isalpha()) or not _ORG_CONTEXT.search(
                text, max(0, i - 40), i):
            continue
        pos = i
        while True:
            end, count = pos, 0
            while count < 3 and (m := _BARE_NAME.match(text, end if count == 0 else end + 1)):
                if not _bare_org_word(m.group()) or (count and text[end] != " "):
                    break
                end, count = m.end(), count + 1
            if count == 0:
                break
            out.append(PiiEntity("ORGANIZATION", pos, end, text[pos:end], LISTED))
            if not text.startswith(" and ", end):
                break
            pos = end + 5
    out += _not_overlapping(out, _organisations_before_services(text))
    return sorted(out, key=lambda e: e.start)


# What a service's customer writes after its name ("my Airtel account", "the Uber driver",
# "Netflix subscription", "Jio recharge", "Vodafone customer care").
_SERVICE_AFTER = re.compile(
    r" (?:support|app|account|subscription|customer (?:service|care|support)|helpline|"
    r"driver|rider|ride|delivery|order|refund|recharge|login|password|website|premium|"
    r"membership|loyalty|points|credit card|debit card|SIM|sim|data plan|bill|invoice|"
    r"store|outlet|branch|agent|rep|representative)\b")
_NAME_BEFORE = re.compile(rf"(?<![\w'’&.-])[{_UPPER}][\w'’&-]*(?: [{_UPPER}][\w'’&-]*)?$")


def _organisations_before_services(text: str) -> list[PiiEntity]:
    """A bare name right before what a service's customer writes after it (``_SERVICE_AFTER``):
    one or two words that can only be an organisation's (``_bare_org_word``)."""
    out = []
    for m in _SERVICE_AFTER.finditer(text):
        name = _NAME_BEFORE.search(text, max(0, m.start() - 40), m.start())
        if name is None:
            continue
        start, value = name.start(), name.group()
        first, _, rest = value.partition(" ")
        if rest and first in _OPENERS:  # "The Uber driver"
            start, value = start + len(first) + 1, rest
        if all(_bare_org_word(w) for w in value.split()):
            out.append(PiiEntity("ORGANIZATION", start, name.end(), value, LISTED))
    return out


def organisations(text: str) -> list[PiiEntity]:
    out: list[PiiEntity] = []
    runs = [r for a, b in _near_keywords(text) for r in _runs(text, a, b)]
    for run in runs:
        found = _org_in(run)
        if found is None:
            continue
        a, b = run[found[0]], run[found[1]]
        end = b.end() if _key(b) in _DOTTED and b.group().endswith(".") else (
            b.start() + len(_key(b)))
        out.append(PiiEntity("ORGANIZATION", a.start(), end, text[a.start():end], LISTED))
    out += _not_overlapping(out, organisations_in_context(text))
    out += _not_overlapping(out, known_brands(text))
    return sorted(out, key=lambda e: e.start)


def _not_overlapping(found: list[PiiEntity], more: list[PiiEntity]) -> list[PiiEntity]:
    """``more``'s entities that overlap none of ``found`` nor one kept before them."""
    taken = SpanIndex(found)
    out = []
    for e in more:
        if not taken.overlapping(e.start, e.end):
            out.append(e)
            taken.add(e)
    return out


# A capitalised word in mid-sentence: the text writes names capitalised.
_CASED = re.compile(rf"[a-z,;] [{_UPPER}]")
_TRAILING_LOWER = re.compile(r"(?: [a-z][\w'’-]*)+$")
_OPENING = {")": "(", "]": "["}


def _unbalanced_end(value: str) -> bool:
    """``value`` ends in a bracket it does not open, or a quote it holds an odd number of."""
    c = value[-1:]
    if c in _OPENING:
        return value.count(c) > value.count(_OPENING[c])
    return c in ("\"", "'") and value.count(c) % 2 == 1


def writes_names_capitalised(text: str) -> bool:
    """The text writes a capitalised word in mid-sentence, so it writes names capitalised."""
    return _CASED.search(text) is not None


def has_organisation_word(value: str) -> bool:
    """A name that holds an organisation's word or legal form ("Bakkerij Smit B.V.",
    "Clinique Vétérinaire des Brotteaux"): no person's name."""
    return any(w.rstrip(".,") in ORG_LAST or w.rstrip(".,") in ORG_FIRST for w in value.split())


# Direction adjectives before a place ("Southern Cyprus" is Cyprus, "Southern" alone no place);
# a listed place that opens with one stays whole ("Western Australia", "Northern Ireland").
_DIRECTIONS = frozenset({"Northern", "Southern", "Eastern", "Western", "Central", "North",
                         "South", "East", "West", "Northeastern", "Northwestern",
                         "Southeastern", "Southwestern"})


def _place_without_direction(e: PiiEntity) -> PiiEntity | None:
    """A model GPE without a direction adjective in front of a listed place, None for the
    adjective alone; ``e`` itself otherwise."""
    first, _, rest = e.text.partition(" ")
    if first not in _DIRECTIONS or is_place(e.text):
        return e
    if not rest:
        return None if first.endswith("ern") else e
    if is_place(rest):
        start = e.start + len(first) + 1
        return PiiEntity(e.type, start, e.end, rest, e.score)
    return e


# An executive's title written as its acronym, read as a name ("our CFO signed").
_EXECUTIVES = frozenset({"CEO", "CFO", "CTO", "COO", "CIO", "CMO", "CISO", "CPO", "VP", "SVP",
                         "EVP"})
# One word with a capital inside after lower-case letters ("DigitalOcean", "PayPal"): a
# brand's spelling, not a place's (whose inner capitals follow Mc, De, La: "McAllen", "DeKalb").
_BRAND_CASE = re.compile(r"(?!Mc|Mac|De|La|Le)[A-Z][a-z]+[A-Z][A-Za-z]*")


def name_edges(entities: Iterable[PiiEntity], text: str) -> list[PiiEntity]:
    """The model's organisation, place and group spans as a name is written:

    - an NRP that the text uses as a language's name goes ("Answer in French.");
    - an executive's acronym read as a name is a TITLE ("CFO"), a GPE spelt as a brand an
      ORGANIZATION ("DigitalOcean");
    - a GPE loses a direction adjective before a listed place ("Southern Cyprus" -> "Cyprus"),
      and the adjective alone goes ("Southern"); it loses a code after a listed place ("NEW
      YORK JFK"); in a text that capitalises names, one in lower case that is no listed place
      goes ("pho");
    - an ORGANIZATION of three words or more loses "The" before it;
    - in a text that capitalises names (``_CASED``), an ORGANIZATION without a capital letter
      goes ("permit", "bank") and lower-case words at its end go ("Kruger Cement plant" ->
      "Kruger Cement"); a closing bracket or quote that it does not open goes ("Mapna
      Group)").
    """
    cased = writes_names_capitalised(text)
    out = []
    for e in entities:
        if e.type == "NRP" and _as_language(text, e.start, e.end):
            continue  # "Answer in French.", "Home language: Kazakh"
        if e.type in ("ORGANIZATION", "GPE") and e.text in _EXECUTIVES:
            e = PiiEntity("TITLE", e.start, e.end, e.text, e.score)
        elif e.type == "GPE" and _BRAND_CASE.fullmatch(e.text) and not is_place(e.text):
            e = PiiEntity("ORGANIZATION", e.start, e.end, e.text, e.score)
        if e.type == "GPE":
            if cased and e.text == e.text.lower() and not is_place(e.text.title()):
                continue  # "pho", "terracotta" in a text that capitalises names
            head, _, code = e.text.rpartition(" ")
            if head and code.isupper() and len(code) <= 3 and is_place(head.title()):
                e = PiiEntity(e.type, e.start, e.start + len(head), head, e.score)  # "NEW YORK JFK"
            place = _place_without_direction(e)
            if place is not None:
                out.append(place)
            continue
        if e.type != "ORGANIZATION":
            out.append(e)
            continue
        value = e.text
        if cased and value == value.lower():
            continue
        first, _, rest = value.partition(" ")
        if first in ("The", "the") and len(rest.split()) > 1:
            e = PiiEntity(e.type, e.end - len(rest), e.end, rest, e.score)  # "The Jones, Smith and
            value = rest  # Davis"; "The Economist" stays
        if cased and (tail := _TRAILING_LOWER.search(value)) and any(
                ch.isupper() for ch in value[:tail.start()]):
            value = value[:tail.start()]
        while value and _unbalanced_end(value):
            value = value[:-1].rstrip()
        if value != e.text:
            e = PiiEntity(e.type, e.start, e.start + len(value), value, e.score)
        if value:
            out.append(e)
    return out


# --------------------------------------------------------------------------- brands

# Generic top-level domains, and words the list's owners share, that are no brand.
_NOT_BRANDS = frozenset({"aero", "arpa", "biz", "coop", "gov", "mobi", "pro", "tel", "inc",
                         "africa", "arab", "bible", "broadway", "caravan", "kiwi", "kosher",
                         "luxury", "med", "moto", "ping", "sharp", "smart", "spa", "swiss",
                         "tatar", "tech", "vegas", "webcam", "xyz", "wang", "schmidt", "ist",
                         "scholarships", "fox", "virgin", "citadel", "fidelity", "vanguard",
                         "booking", "staples", "mma", "ifm", "sew", "gea", "frl", "bzh",
                         "praxi", "ikano", "erni", "obi", "dvag", "maif", "kred", "aco", "amica",
                         "gallo", "gmo", "gallup"})


@functools.cache
def brands() -> frozenset[str]:
    """Well-known brands: the top-level domains of the public suffix list (shipped offline by
    ``publicsuffixlist``, a dependency already) whose name its registry owner's name holds
    ("netflix : Netflix, Inc.", "airtel : Bharti Airtel Limited"), less common words, places,
    first names and ``_NOT_BRANDS``; as the text writes them (Title Case or upper case)."""
    import publicsuffixlist

    path = resources.files(publicsuffixlist).joinpath("public_suffix_list.dat")
    text = path.read_text("utf-8")
    icann = text[:text.find("===END ICANN DOMAINS===")]
    out = set()
    for tld, owner in re.findall(r"^// ([a-z0-9]+) : (.+)$", icann, re.MULTILINE):
        if (len(tld) < 3 or tld in _NOT_BRANDS or tld in common_words()
                or is_place(tld.title()) or tld.title() in first_names()
                or not re.search(rf"\b{tld}", owner.lower().replace("-", ""))):
            continue
        out |= {tld.title(), tld.upper()}
    return frozenset(out)


def known_brands(text: str) -> list[PiiEntity]:
    """ORGANIZATION: a well-known brand's name (``brands``) standing as a word."""
    out = []
    for word in capitalised_words(text) & brands():
        out += [PiiEntity("ORGANIZATION", i, i + len(word), word, LISTED)
                for i in occurrences(text, word)]
    return sorted(out, key=lambda e: e.start)


# --------------------------------------------------------------------------- region codes

# Two-letter codes that are also words or values a record holds ("status": "OK", "NO", "ID").
_AMBIGUOUS_CODES = frozenset({"OK", "NO", "ID", "IT", "IN", "AM", "PM", "TO", "ME", "OR", "AS",
                              "AT", "BE", "DO", "GO", "IS", "MY", "SO", "AN", "AC", "TA", "CC",
                              "BY", "HI", "MA", "MS", "SA"})
_US_STATES = frozenset({
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN",
    "IA", "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH",
    "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT",
    "VT", "VA", "WA", "WV", "WI", "WY"})
# A code standing as a whole field of a record: between delimiters or quotes.
_FIELD_CODE = re.compile(r"(?<=[,;|\t\"'])[ \t]*([A-Z]{2})[ \t]*(?=[,;|\t\"'\n)]|$)")


@functools.cache
def _region_codes() -> frozenset[str]:
    import phonenumbers  # its region list is ISO 3166's two-letter codes

    return (frozenset(phonenumbers.SUPPORTED_REGIONS) | _US_STATES | {"UK"}) - _AMBIGUOUS_CODES


def region_codes(text: str) -> list[PiiEntity]:
    """GPE: a US state's or a country's two-letter code standing as a whole field of a record
    (``"state": "FL"``, ``...,78.72.140.11,SE,2024-03-02``, ``;GA;``), not one that is also a
    word or a common value ("OK", "NO", "ID")."""
    codes = _region_codes()
    return [PiiEntity("GPE", m.start(1), m.end(1), m.group(1), LISTED)
            for m in _FIELD_CODE.finditer(text) if m.group(1) in codes]


# --------------------------------------------------------------------------- NRP

def groups() -> frozenset[str]:
    """Nationalities, religions and political groups (``data/groups.txt``)."""
    return word_list("groups.txt")


@functools.cache
def _group_words() -> tuple[frozenset[str], dict[str, tuple[str, ...]], frozenset[str]]:
    """The one-word groups with their plurals; the second words of two-word groups by their
    first ("Costa" -> "Rican"); the one-word groups in lower case."""
    one = {g for g in groups() if " " not in g}
    one |= {g + "s" for g in one if g[-1] in "nio"}  # "Canadians", "Muslims", "Israelis"
    two: dict[str, list[str]] = {}
    for g in groups():
        if " " in g:
            first, second = g.split(" ", 1)
            two.setdefault(first, []).append(second)
    return (frozenset(one), {k: tuple(v) for k, v in two.items()},
            frozenset(g.lower() for g in one))


# A language, not a people: "Answer in French.", "translate it into Spanish", "French lessons".
_LANGUAGE_BEFORE = frozenset({"speak", "speaks", "speaking", "spoke", "learn", "learning",
                              "learned", "learnt", "study", "studying", "teach", "teaching",
                              "translate", "translated", "translating", "fluent", "native"})
_LANGUAGE_AFTER = frozenset({
    "language", "languages", "translation", "translations", "lesson", "lessons", "class",
    "classes", "course", "courses", "speaker", "speakers", "word", "words", "phrase",
    "phrases", "text", "version", "subtitles", "grammar", "dictionary", "keyboard",
    "sentence", "sentences", "accent", "teacher", "tutor", "proverb", "proverbs", "names"})
_IN_A_LANGUAGE = frozenset({"in", "into", "to", "from"})
_NEXT_WORD = re.compile(r"[ \t]+([\w'’-]+)")
_PREVIOUS_WORD = re.compile(r"([\w'’-]+)[ \t]+$")


def _as_language(text: str, start: int, end: int) -> bool:
    line = text[max(text.rfind("\n", 0, start) + 1, start - 100):start].lower()
    if "language" in line or "speak" in line or "translat" in line:
        return True  # "Home language: Kazakh", "speaks English and", "translate ... into"
    before = _PREVIOUS_WORD.search(text, max(0, start - 20), start)
    after = _NEXT_WORD.match(text, end)
    prev = before.group(1).lower() if before else ""
    nxt = after.group(1).lower() if after else ""
    if prev in _LANGUAGE_BEFORE or nxt in _LANGUAGE_AFTER:
        return True
    # "Answer in French.", "in English and French": no noun after it
    return prev in _IN_A_LANGUAGE and (not after or nxt in ("and", "or", "please"))


def groups_named(text: str) -> list[PiiEntity]:
    """NRP: a nationality, religion or political group on ``data/groups.txt``, capitalised
    (in lower case too in a text that writes names so), alone or joined by hyphens
    ("Mexican-American"), where the text does not use it as a language's name ("Answer in
    French.", "French lessons", "Home language: Kazakh")."""
    one, two, lower = _group_words()
    caps = capitalised_words(text)
    found = set(caps) & (one | frozenset(two))
    found |= {w for w in caps if "-" in w and all(p in one for p in w.split("-"))}
    # In lower case as prompts are typed ("my nigerian jollof"), unless also a word ("nail
    # polish").
    found |= {w for w in lower_words(text) & lower if w not in common_words()}
    out = []
    for word in found:
        for i in occurrences(text, word):
            end = i + len(word)
            if word in two:
                nxt = _NEXT_WORD.match(text, end)
                if nxt is None or nxt.group(1) not in two[word]:
                    if word not in one:
                        continue
                else:
                    end = nxt.end()
            if text[end:end + 1].isalnum() or text[end:end + 1] == "-" or _as_language(
                    text, i, end):
                continue
            out.append(PiiEntity("NRP", i, end, text[i:end], LISTED))
    return first_of_overlaps(out)


