"""Person names as the text writes them, around the spans the model reads.

The model finds most names but often not their edges: a first name without the surname after
it ("Yuri" in "Yuri Bulgakov's"), a surname without the first name before it ("Nowak" in
"Aleksander Nowak"), words that are no name in the span ("RR commenter Stephan
Fenstermacher"), and a person's name read as a place or an organisation ("Hedvig Arvidsson"
as a GPE, "Piotr" as an ORGANIZATION). ``whole_names`` sets those right with what the text and
two word lists say:

- a *name word* is a capitalised word (Title Case, "O'Brien", "Seo-yeon") that is a first name
  on ``data/first_names.txt`` (Faker's given names of all its locales, less common English
  words: written by ``export/gazetteer.py``) or no common word (``data/common_words.txt``),
  and no honorific, organisation word, street word, month or weekday;
- a model GPE or ORGANIZATION of two or three words that opens with a first name and goes on
  in name words (an initial "G" counts), and that is no listed place, is a PERSON; so is a
  lone first name the model read as an ORGANIZATION;
- a PERSON loses the lower-case words in it that are no name particle ("de", "van", "bin"),
  with what is on one side of them that holds no Title Case word; a name written all in lower
  case ("cormac") stays as it is;
- a PERSON grows over the name words right after it, one space apart on its line (up to four
  words in all; after a hyphenated given name, "Sung-min Park", the surname may be a word),
  and over a first name right before it;
- one word that is a code of two or three capitals ("JFK"), a greeting in another language
  ("Estimado") or a short abbreviation with its full stop ("Ext.") is no name;
- kin words that open a PERSON go ("Auntie Bisi" -> "Bisi"), and role words are a TITLE of
  their own ("Vice President Choi Min-jun");
- a name word joined to a PERSON by "and" ("Marrero and Murphy") is a PERSON too, unless it
  is a listed place;
- a job title in lower case is a TITLE only beside a PERSON ("Mr Hakimi - math teacher"); "I'm
  a pharmacist" names a job, no one's title;
- a word of a name of two words or more, where it stands again alone ("Faina D. Yefremova
  ... early Yefremova"), is that PERSON again;
- in a text that writes names capitalised (``names.writes_names_capitalised``), a PERSON in
  lower case that is no first name goes ("pls", "lodash"), as does a code identifier
  ("setIban").

Growth never takes a word inside another entity. Scores stay the model's.

``people`` is a recogniser (``recognisers.RECOGNISERS``) of two rules: ``titled_names``, an
honorific right before one to three name words ("Professor Mwangi", "Sr. Gutiérrez", "Ms
Delacroix", "MR ABDULLAH KHALID AL-MANSOORI") is a TITLE and a PERSON, as the span conventions
split the model's; ``full_names``, a first name followed by name words ("Deborah Kline",
"Camille Laurent", "Kwame Boateng") is a PERSON.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from router_svc.classify import names
from router_svc.classify.names import first_names
from router_svc.classify.pii import HONORIFICS, PiiEntity, SpanIndex, first_of_overlaps

# Lower-case words that belong inside a name ("Ludwig van Beethoven", "Ahmad bin Ali").
PARTICLES = frozenset({"de", "da", "di", "del", "della", "van", "von", "der", "den", "bin",
                       "binti", "bint", "ibn", "ben", "al", "el", "la", "le", "du", "des",
                       "dos", "das", "ter", "ten", "y", "e", "zu", "af", "st"})
_WORD = re.compile(r"\S+")
# A word as a name: letters with inner hyphens or apostrophes; a possessive or punctuation
# after it ends the name there ("Goldberg's", "Nowak,").
_NAME_PART = re.compile(r"[^\W\d_](?:[\w'’-]*[^\W\d_])?")
_INITIAL = re.compile(r"[A-Z]\.?")
_LAST_WORD = re.compile(r"(?<![\w'’-])[^\W\d_][\w'’-]*$")  # the word before a span


LISTED = names.LISTED  # the score of a TITLE and PERSON found after an honorific
# Honorifics as written before a name: Title Case or upper case ("Dr", "DR", "MR").
_TITLE_FORMS = frozenset(f for w in HONORIFICS for f in (w, w.upper()))


def _title_case(word: str) -> bool:
    return word[:1].isupper() and any(ch.islower() for ch in word[1:])


def is_name_word(word: str) -> bool:
    """A capitalised word that can be part of a person's name (module docstring)."""
    return (_title_case(word) and (word in first_names() or names.is_name_word(word))
            and word not in names.HONORIFIC_WORDS and word not in names.ORG_LAST
            and word not in names.ORG_FIRST and word not in names.STREET_WORDS
            and word not in names.CALENDAR_WORDS)


def _reads_as_person(e: PiiEntity) -> bool:
    words = e.text.split()
    if names.is_place(e.text) or words[0] not in first_names():
        return False
    if len(words) == 1:
        return e.type == "ORGANIZATION" and not names.is_place(words[0])
    # Later words on the list of places make it a place's or a firm's name ("Wells Fargo").
    return len(words) <= 3 and all((is_name_word(w) and not names.is_place(w))
                                   or _INITIAL.fullmatch(w) for w in words[1:])


def _parts_without_lower_words(e: PiiEntity) -> list[PiiEntity]:
    """``e`` cut at its lower-case words that are no name particle; the parts that hold a Title
    Case word stay."""
    first, *rest = e.text.split()
    if (_title_case(first) or _INITIAL.fullmatch(first)) and all(w[:1].isupper() for w in rest):
        return [e]  # the usual case: every word capitalised, the first a name's
    words = list(_WORD.finditer(e.text))
    if not any(_title_case(w.group()) for w in words):
        return [e]  # "cormac", "priya sharma": a name written in lower case
    groups: list[list[re.Match[str]]] = [[]]
    for w in words:
        word = w.group()
        if word[:1].islower() and word.lower() not in PARTICLES:
            groups.append([])
        else:
            groups[-1].append(w)
    out = []
    for g in groups:
        while g and not (_title_case(g[0].group()) or _INITIAL.fullmatch(g[0].group())):
            g = g[1:]  # "RR" before "Stephan", a particle at the edge ("J. Whitlock" stays)
        while g and g[-1].group().lower() in PARTICLES:
            g = g[:-1]
        if g and any(_title_case(w.group()) for w in g):
            a, b = e.start + g[0].start(), e.start + g[-1].end()
            out.append(PiiEntity("PERSON", a, b, e.text[g[0].start():g[-1].end()], e.score))
    return out


def _free(taken: SpanIndex, a: int, b: int) -> bool:
    return not taken.overlapping(a, b)


_GIVEN_HYPHENATED = re.compile(r"[A-Z][a-z]+-[a-z]+")
_NOT_NAME_WORDS = (names.HONORIFIC_WORDS | names.ORG_LAST | names.ORG_FIRST | names.STREET_WORDS
                   | names.CALENDAR_WORDS)


def _grown(e: PiiEntity, text: str, taken: SpanIndex) -> PiiEntity:
    """``e`` over the name words after it and a first name before it (module docstring)."""
    start, end = e.start, e.end
    count = len(e.text.split())
    if not _title_case(e.text.split()[-1]):
        return e
    while count < 4 and text[end:end + 1] == " " and text[end + 1:end + 2].isupper():
        m = _NAME_PART.match(text, end + 1)
        if m is None:
            break
        a, b = m.span()
        if m.group().endswith(("'s", "’s")):
            b -= 2
        word = text[a:b]
        # After a hyphenated given name ("Sung-min", "Hyun-woo") a surname may be a word too
        # ("Park", "Lim", "Song").
        surname_word = (_GIVEN_HYPHENATED.fullmatch(text[start:end].split()[-1]) is not None
                        and _title_case(word) and word not in _NOT_NAME_WORDS)
        if not (is_name_word(word) or surname_word) or not _free(taken, a, b):
            break
        end, count = b, count + 1
        if b < len(text) and not text[b].isspace():
            break  # "Goldberg's", "Nowak,": the name ends here
    if count < 4 and start >= 2 and text[start - 1] == " " and text[start - 2].isalpha():
        m = _LAST_WORD.search(text, max(0, start - 30), start - 1)
        if m is not None and m.group() in first_names() and is_name_word(m.group()) and _free(
                taken, m.start(), start - 1):
            start = m.start()
    if (start, end) == (e.start, e.end):
        return e
    return PiiEntity("PERSON", start, end, text[start:end], e.score)


# Words before a name that are no part of it: kin ("Auntie Bisi", "Uncle Femi"); and roles,
# which are a TITLE of their own ("Vice President Choi Min-jun", "Coach Okafor").
_KIN = frozenset({"Auntie", "Aunty", "Aunt", "Uncle", "Cousin", "Grandma", "Grandpa",
                  "Granny", "Grandad", "Grandmother", "Grandfather", "Khaleh", "Amu"})
_ROLES = frozenset({"President", "Vice", "Chairman", "Chairwoman", "Chair", "CEO", "CFO", "CTO",
                    "COO", "Director", "Minister", "Senator", "Governor", "Mayor", "Judge",
                    "Justice", "Ambassador", "Secretary", "Chancellor", "Commissioner",
                    "Inspector", "Detective", "Officer", "Coach", "Pastor", "Rabbi", "Imam",
                    "Reverend", "Rev", "Colonel", "Captain", "Sergeant", "Lieutenant",
                    "Admiral"})
_CAMEL = re.compile(r"[a-z]+[A-Z]")  # "setIban": an identifier in code


def _without_leading_words(e: PiiEntity) -> list[PiiEntity]:
    """``e`` without the kin and role words it opens with (``_KIN``, ``_ROLES``), the roles as
    one TITLE; ``[e]`` when it has none or is nothing else."""
    words = list(_WORD.finditer(e.text))
    k = 0
    while k < len(words) - 1 and words[k].group().rstrip(".") in _KIN | _ROLES:
        k += 1
    if k == 0:
        return [e]
    roles = [w for w in words[:k] if w.group().rstrip(".") in _ROLES]
    out = [PiiEntity("PERSON", e.start + words[k].start(), e.end, e.text[words[k].start():],
                     e.score)]
    if roles and roles[-1] is words[k - 1]:
        first = next(i for i, w in enumerate(words) if w.group().rstrip(".") in _ROLES)
        a, b = words[first].start(), words[k - 1].end()
        out.insert(0, PiiEntity("TITLE", e.start + a, e.start + b, e.text[a:b], e.score))
    return out


# Greetings in other languages, read as a name ("Estimado Sr. Gutiérrez", "Sehr geehrte").
_GREETINGS = frozenset({"Estimado", "Estimada", "Querido", "Querida", "Sehr", "Geehrte",
                        "Geehrter", "Liebe", "Lieber", "Caro", "Cara", "Gentile", "Bonjour",
                        "Hola", "Ciao", "Hallo", "Salut", "Olá", "Prezado", "Prezada"})


def _no_name(e: PiiEntity, text: str) -> bool:
    """One word that is no one's name: a code of two or three capitals ("JFK", "ZAR"), a
    greeting ("Estimado"), an abbreviation of up to three letters with its full stop ("Ext.",
    "Pt.") that is no first name."""
    word = e.text
    if " " in word:
        return False
    if word.isupper() and word.isalpha() and len(word) <= 3:
        return True
    if word in _GREETINGS:
        return True
    return len(word) <= 3 and text[e.end:e.end + 1] == "." and word not in first_names()


def whole_names(entities: Sequence[PiiEntity], text: str) -> list[PiiEntity]:
    """The entities with person names as the text writes them (module docstring), sorted by
    start."""
    relabelled = [PiiEntity("PERSON", e.start, e.end, e.text, e.score)
                  if e.type in ("GPE", "ORGANIZATION") and _reads_as_person(e) else e
                  for e in entities]
    cased = names.writes_names_capitalised(text)
    people: list[PiiEntity] = []
    others: list[PiiEntity] = []
    for e in relabelled:
        if e.type != "PERSON":
            others.append(e)
        elif cased and (_CAMEL.match(e.text) or (
                e.text == e.text.lower() and e.text.split()[0].title() not in first_names())):
            continue  # "pls", "lodash", "setIban" in a text that capitalises names
        elif _no_name(e, text):
            continue
        else:
            for part in _without_leading_words(e):
                if part.type == "PERSON":
                    people += _parts_without_lower_words(part)
                else:
                    others.append(part)
    # Growth looks only outside a name's own span, so every span may stand in its way.
    taken = SpanIndex(others + people)
    grown = [_grown(p, text, taken) for p in people]
    grown += _named_beside(grown, others, text)
    grown += _mentioned_again(grown, others, text)
    others = _titles_of_people(others, grown, text)
    return sorted(others + grown, key=lambda e: (e.start, e.end, e.type))


# What may stand between a person's name and the job title that is theirs ("Mr Hakimi - math
# teacher", "Dana Roy, head of sales", "the pharmacist Ana Ruiz").
_BESIDE = re.compile(r"[ \t]*(?:[,–—(-][ \t]*|(?:the|our|my|a|an|is|was|as)[ \t]+)?")


def _titles_of_people(others: list[PiiEntity], people: list[PiiEntity], text: str
                      ) -> list[PiiEntity]:
    """A TITLE in lower case is a job that the text names ("I'm a pharmacist", "a data
    engineer role"), no one's title, unless it stands beside a PERSON: it goes."""
    index = SpanIndex(people)
    out = []
    for e in others:
        if e.type == "TITLE" and e.text == e.text.lower():
            before = index.overlapping(max(0, e.start - 12), e.start)
            after = index.overlapping(e.end, e.end + 12)
            if not any(_BESIDE.fullmatch(text, p.end, e.start) for p in before) and not any(
                    _BESIDE.fullmatch(text, e.end, p.start) for p in after):
                continue
        out.append(e)
    return out


_AND_AFTER = re.compile(r" (?:and|&) ([^\W\d_][\w'’-]*)")
_AND_BEFORE = re.compile(r"([^\W\d_][\w'’-]*) (?:and|&) $")


def _named_beside(people: list[PiiEntity], others: list[PiiEntity], text: str
                  ) -> list[PiiEntity]:
    """A name word joined to a PERSON by "and" ("Marrero and Murphy", "Anna and Marco"): a
    person too, unless it is a listed place or stands in another entity."""
    taken = SpanIndex(others + people)
    out = []
    for p in people:
        for m in (_AND_AFTER.match(text, p.end),
                  _AND_BEFORE.search(text, max(0, p.start - 40), p.start)):
            if m is None:
                continue
            word, (a, b) = m.group(1), m.span(1)
            if (is_name_word(word) and not names.is_place(word) and not taken.overlapping(a, b)
                    and not text[b:b + 2].strip()[:1].isupper()):
                out.append(PiiEntity("PERSON", a, b, word, LISTED))
                taken.add(out[-1])
    return out


def _mentioned_again(people: list[PiiEntity], others: list[PiiEntity], text: str
                     ) -> list[PiiEntity]:
    """The words of a name of two words or more, where the text names the person again by one
    of them alone ("Faina D. Yefremova ... early Yefremova", "Dr. Goldberg ... Goldberg's"):
    capitalised as in the name, standing alone, in no other entity."""
    words = {w for p in people if len(parts := p.text.split()) > 1 for w in parts
             if len(w) > 2 and _title_case(w) and _NAME_PART.fullmatch(w)}
    if not words:
        return []
    taken = SpanIndex(others + people)
    out = []
    for w in words:
        for i in names.occurrences(text, w):
            j = i + len(w)
            if text[j:j + 1].isalpha() or taken.overlapping(i, j):
                continue
            out.append(PiiEntity("PERSON", i, j, w, LISTED))
            taken.add(out[-1])
    return out


def _name_after(text: str, pos: int, upper: bool) -> int:
    """The end of the one to three name words (or initials "J.") from ``pos``, one space
    apart; ``pos`` where none. ``upper``: words in upper case, as after "MR"."""
    end, count = pos, 0
    while count < 3:
        m = _NAME_PART.match(text, pos)
        if m is None:
            break
        word = m.group()
        if word.endswith(("'s", "’s")):
            word = word[:-2]
        if _INITIAL.fullmatch(word) and text[pos + 1:pos + 2] == ".":
            word += "."
        elif not (is_name_word(word.title() if upper and word.isupper() else word)
                  and (word.isupper() or not upper)):
            break
        end, count = pos + len(word), count + 1
        if text[end:end + 1] != " " or not text[end + 1:end + 2].isupper():
            break
        pos = end + 1
    return end


def titled_names(text: str) -> list[PiiEntity]:
    """An honorific and the name after it (module docstring): a TITLE and a PERSON each."""
    out: list[PiiEntity] = []
    for word in names.capitalised_words(text) & _TITLE_FORMS:
        for i in names.occurrences(text, word):
            end = i + len(word) + (text[i + len(word):i + len(word) + 1] == ".")
            if text[end:end + 1] != " ":
                continue
            upper = word.isupper() and len(word) > 1
            name_end = _name_after(text, end + 1, upper)
            if name_end > end + 1:
                out.append(PiiEntity("TITLE", i, end, text[i:end], LISTED))
                out.append(PiiEntity("PERSON", end + 1, name_end, text[end + 1:name_end], LISTED))
    return sorted(out, key=lambda e: e.start)


# First names that are also ranks and titles before a name ("King George", "Colonel Cresap").
_RANKS = frozenset({"King", "Queen", "Prince", "Princess", "Colonel", "Captain", "Sergeant",
                    "Lieutenant", "Admiral", "Pope", "Saint", "Judge", "Senator", "President",
                    "Governor", "Emperor", "Empress", "Sultan", "Duke", "Earl", "Baron",
                    "Bishop", "General", "Major", "Marshal", "Chief"})


def full_names(text: str) -> list[PiiEntity]:
    """A first name (``first_names``) followed by one or two name words or an initial and a
    name word, one space apart on a line: a PERSON ("Deborah Kline", "Leila Mansour"); not a
    listed place ("North Carolina", "Ann Arbor") nor a rank before a name."""
    out: list[PiiEntity] = []
    for word in (names.capitalised_words(text) & first_names()) - _RANKS:
        for i in names.occurrences(text, word):
            j = i + len(word)
            if text[j:j + 1] != " " or not text[j + 1:j + 2].isupper():
                continue
            end = _name_after(text, j + 1, upper=False)
            # An initial alone after the first name is no surname ("Anna K.").
            if end == j + 1 or _INITIAL.fullmatch(text[j + 1:end]):
                continue
            two = " ".join(text[i:end].split()[:2])
            if not (names.is_place(two) or names.is_place(text[i:end])):
                out.append(PiiEntity("PERSON", i, end, text[i:end], LISTED))
    return first_of_overlaps(out)


def people(text: str) -> list[PiiEntity]:
    """Both recognisers of this module: names after honorifics first, then full names."""
    titled = titled_names(text)
    spans = SpanIndex(titled)
    return sorted(titled + [e for e in full_names(text) if not spans.overlapping(e.start, e.end)],
                  key=lambda e: e.start)
