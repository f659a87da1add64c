"""Structured PII found by rules that can be checked, beside the model, and their union.

Each recogniser is a pure function ``text -> list[PiiEntity]`` that reports a value only when
its own check passes (offsets are into ``text``, the text the model reads):

- CREDIT_CARD: 13-19 digits, bare or in groups (four first, then three to six, one separator
  throughout), with a card issuer's prefix and the Luhn checksum; 12 digits only for Maestro.
  A 16-digit order number that fails Luhn is no card.
- IBAN_CODE: its country's IBAN length and the ISO 13616 mod-97 check.
- US_SSN: ``123-45-6789`` (spaces or nine bare digits only after "SSN"/"social security"):
  area not 000, 666 or 900-999, group not 00, serial not 0000.
- EMAIL_ADDRESS: the e-mail syntax ``pii`` checks, with a domain under a public suffix. The
  e-mail span covers its domain: that is not reported again as a DOMAIN_NAME.
- IP_ADDRESS: IPv4 and IPv6 that ``ipaddress`` parses (IPv6 with three groups or more, so
  ``::1`` and ``std::max`` are not addresses; IPv4 not after "v"/"version").
- DOMAIN_NAME: URLs (a scheme or ``www.``; the host under a public suffix; the whole URL is the
  span, as the held-out data marks it) and bare domains under a public suffix (the
  ``publicsuffixlist`` package, which ships the list offline) that are not file names
  (``report.pdf``: no suffix; ``main.py``, ``notes.md``: an extension list) nor attribute
  chains (``os.path``: no suffix; ``self.name``, ``df.info``: a receiver list; ``foo.bar()``).
- PHONE_NUMBER: a number ``phonenumbers`` finds valid: "+CC ..." by that country's plan,
  national formats by the default region's (US), and a number in groups opening with a trunk
  "0" ("07400 082494") by the plan of one of ``TRUNK_ZERO_REGIONS``. Bare digit runs need a
  phone word nearby ("call", "tel", "fax", ...); dates are not numbers.
- US_DRIVER_LICENSE: a letter or two and digits, or digits in groups, right after "license",
  "licence" or "DL" ("Driver's License: W426-8810-3572", "NY license 734 918 205").
- ZIP_CODE and AGE: in context only ("zip 94107", "ZIP code: 10001-1234", "postcode 7412 SL",
  ``{"zip": "30310"}``, ``<zip>78521</zip>``, a US address's ", NY 11215";
  "34 years old", "45yo", "an 8-month-old", "age: 52", "aged 7", "at the age of 61", "turned
  60.", "70th birthday", "my dad is 70"); the span is the value.
- DATE_TIME: dates, times and weekdays written in a date's shape with valid calendar values
  (``dates``: "2024-03-04", "14/02/1991", "2nd of May", "Monday afternoon", "16:22:03,114").
- TITLE and PERSON: an honorific and the name words after it (``people.titled_names``:
  "Professor Mwangi", "Sr. Gutiérrez"); a first name and name words after it
  (``people.full_names``: "Deborah Kline").
- ORGANIZATION and GPE: names on word lists and organisations' words (``names``: "University
  of Tehran", "Dangote Group", "Canada", "NEW YORK"), neither checked nor in context.

``recognise`` runs them in the order of ``RECOGNISERS`` (checksums first, context last) and
keeps the first of overlapping matches. Scores: 1.0 where a check passed, 0.9 for a ZIP_CODE or
AGE found by its context alone and a DATE_TIME by its shape. Cost (perf/recognisers.py): a
pattern scans the whole prompt only where it opens with a character class ``re`` can skip to
in C; the others run from a hint (an "@", "://", a dot before a letter, a colon, a run of seven
digits, "zip").

Union with the model (``union``), the rule where spans overlap: one span and one type survive.

1. A checked rule match (every rule type but ZIP_CODE, AGE, DATE_TIME, GPE and ORGANIZATION)
   beats a model entity it overlaps when that entity is of a type the rules find
   (``RULE_TYPES``: the model's PHONE_NUMBER over an SSN, its card span cut short) or lies
   inside the match (a PERSON read into an e-mail address): the rule's check passed where the
   model guessed.
2. A listed place (GPE) on exactly the span the model read as a PERSON, ORGANIZATION or
   STREET_ADDRESS wins unless it opens with a first name ("Kano" and "Pune" in a record are
   cities; "Florence" may be a person).
3. Otherwise the longer span wins, then the higher score; a tie goes to the model (a
   STREET_ADDRESS holding a postcode stays the address, so redaction covers it all).

A rule entity survives only if it beats every model entity it overlaps; those then go. Entities
that overlap nothing on the other side are all kept: the rules never veto the model (a card
number that fails Luhn but that the model saw stays), they add what it missed.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import re
from collections.abc import Callable, Iterable, Iterator

import phonenumbers

from router_svc.classify import names
from router_svc.classify.addresses import address_edges, street_addresses
from router_svc.classify.dates import dates
from router_svc.classify.names import (
    first_names,
    groups_named,
    name_edges,
    organisations,
    places,
)
from router_svc.classify.people import people, whole_names
from router_svc.classify.pii import (
    _EMAIL,
    DATE_LIKE,
    SCP_PATH,
    UNIT_AFTER,
    PiiEntity,
    SpanIndex,
    _is_ip_address,
    passes_iban_check,
    passes_luhn,
    possible_values,
    span_conventions,
)

CHECKED = 1.0  # the score of a value whose check passed
IN_CONTEXT = 0.9  # the score of a ZIP_CODE or AGE found by the words before it
DEFAULT_REGION = "US"  # phone numbers written without "+CC"

# --------------------------------------------------------------------------- payment cards

# A pattern that scans the whole text opens with a character class, its lookbehind after it
# ("\d(?<!x\d)" rather than "(?<!x)\d"): ``re`` then skips to candidate characters in C
# instead of trying a match at every position, which is most of the cost over a long prompt.
_CARD = re.compile(
    r"\d(?<![\w+.-]\d)(?:\d{11,18}|\d{3}([ -])\d{3,6}(?:\1\d{3,6}){1,3})(?![\w-]|[.,]\d)")


def _card_issuer(digits: str) -> bool:
    """A prefix some card scheme issues at this length (Visa 4, Mastercard 51-55 and 22-27,
    Amex 34/37, Diners 30/36/38/39, Discover/UnionPay 6, JCB 35 and 1800/2131, Maestro 50 and
    56-69, Mir 2200-2204)."""
    n, two = len(digits), digits[:2]
    if n == 12:
        return two == "50" or "56" <= two <= "69"  # Maestro only
    if n == 13:
        return digits[0] == "4" or two == "50" or "56" <= two <= "69"
    if not 14 <= n <= 19:
        return False
    return digits[0] in "3456" or "22" <= two <= "27" or digits.startswith(("1800", "2131"))


def _is_card(value: str) -> bool:
    digits = value.replace(" ", "").replace("-", "")
    return _card_issuer(digits) and passes_luhn(digits)


def credit_cards(text: str) -> list[PiiEntity]:
    out = []
    for m in _CARD.finditer(text):
        # Groups run on into a following number ("4111 1111 1111 1111 2024"): drop trailing
        # groups until the value checks.
        start, value, sep = m.start(), m.group(), m.group(1)
        while sep and value.count(sep) >= 2 and not _is_card(value):
            value = value.rsplit(sep, 1)[0]
        if _is_card(value):
            out.append(_ent("CREDIT_CARD", text, start, start + len(value)))
    return out


# --------------------------------------------------------------------------- IBAN

# From the check digits (two letters before them, and no letter or digit before those).
_IBAN = re.compile(r"\d(?<=(?<!\w)[A-Z]{2}\d)\d(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?!\w)",
                   re.IGNORECASE)

# IBAN length per country (ISO 13616 registry).
_IBAN_LENGTH = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}


def ibans(text: str) -> list[PiiEntity]:
    out = []
    for m in _IBAN.finditer(text):
        start = m.start() - 2
        length = _IBAN_LENGTH.get(text[start:start + 2].upper())
        if length is None:
            continue
        # The span of the first ``length`` letters and digits; the match may run on into a
        # following word ("... 3000 FROM").
        end, seen = start, 0
        while seen < length and end < m.end():
            seen += text[end] != " "
            end += 1
        if seen != length or (end < len(text) and text[end].isalnum()):
            continue
        if passes_iban_check(text[start:end]):
            out.append(_ent("IBAN_CODE", text, start, end))
    return out


# --------------------------------------------------------------------------- US SSN

_SSN = re.compile(r"(\d(?<![\w-]\d)\d\d)([- ]?)(\d{2})\2(\d{4})(?![\w-])")
_SSN_WORDS = re.compile(r"\b(?:ssns?|ss#|social[ -]security)\b", re.IGNORECASE)


def us_ssns(text: str) -> list[PiiEntity]:
    """Dashed SSNs anywhere; spaced or bare nine digits only within 40 characters after
    "SSN" or "social security" (otherwise they are as likely a phone or order number)."""
    out = []
    for m in _SSN.finditer(text):
        area, sep, group, serial = m.groups()
        if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
            continue
        if sep != "-" and not _SSN_WORDS.search(text, max(0, m.start() - 40), m.start()):
            continue
        out.append(_ent("US_SSN", text, m.start(), m.end()))
    return out


# --------------------------------------------------------------------------- driver's licences

# A licence number right after the words that name one ("Driver's License: W426-8810-3572",
# "NY license 734 918 205", "DL: K2391 48806 51247", "license_number: \"S530-418-72-291-0\"",
# "my licence as S49201836"); US states write them in many shapes, so the shape is loose (a
# letter or two and digits, or digits in groups) and the words carry the evidence.
_LICENCE = re.compile(
    r"(?:\b(?i:licen[cs]e)(?![ -]?(?i:plate|key|fee|agreement|terms))|\bDL\b)"
    r"(?:[ _](?i:number|no\.?|num|#))?[\"']?[ \t]*(?:#|:|=|,|(?i:is|was|as))?[ \t]*[\"']?"
    r"([A-Z]{1,2}[ -]?\d[\d -]{3,18}\d|\d[\d -]{5,16}\d)(?![\w-])")


# Dates and year ranges are no licence numbers ("license: 2024-01-15", "licence 2019-2021").
_DATE_LIKE_VALUE = re.compile(r"\d{4}[-/. ]\d{1,2}[-/. ]\d{1,2}|\d{1,2}[-/. ]\d{1,2}[-/. ]\d{4}|"
                              r"(?:19|20)\d\d ?- ?(?:19|20)?\d\d")


def drivers_licences(text: str) -> list[PiiEntity]:
    return [_ent("US_DRIVER_LICENSE", text, m.start(1), m.end(1), IN_CONTEXT)
            for m in _LICENCE.finditer(text) if not _DATE_LIKE_VALUE.fullmatch(m.group(1))]


# --------------------------------------------------------------------------- e-mail, IP

_EMAIL_FIND = re.compile(r"[\w.%+'-]+@[^\W_](?:[\w-]*[^\W_])?(?:\.[\w-]+)+")
_LOCAL_PART = re.compile(r"[\w.%+'-]+$")


_SCP_HOST = re.compile(r"(?<=@)(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}(?=:[\w~/.-])")


def emails(text: str) -> list[PiiEntity]:
    out = []
    at = text.find("@")
    while at >= 0:
        # The local part before this "@" (searched back at most 64 characters, its limit).
        local = _LOCAL_PART.search(text, max(0, at - 64), at)
        start = local.start() if local else at
        while start < at and text[start] in "'.-":
            start += 1  # a quote before it opens a string literal ('ana@x.org'), not the name
        m = _EMAIL_FIND.match(text, start) if local else None
        if m is None or (out and m.start() < out[-1].end):
            at = text.find("@", at + 1)
            continue
        value = m.group().rstrip(".-")
        domain = value.rpartition("@")[2]
        end = m.start() + len(value)
        if SCP_PATH.match(text, end):
            pass  # "git@host:team/repo.git": a remote, its host a domain (found as one)
        elif _EMAIL.fullmatch(value) and _registrable(domain.lower()):
            out.append(_ent("EMAIL_ADDRESS", text, m.start(), end))
        at = text.find("@", m.end())
    if "%40" in text:  # URL-encoded in a query string or a link: name%40example.com
        for m in _EMAIL_ENCODED.finditer(text):
            value = m.group().rstrip(".-")
            domain = value.rpartition("%40")[2]
            if (_EMAIL.fullmatch(value.replace("%40", "@", 1)) and _registrable(domain.lower())
                    and not any(e.start < m.end() and m.start() < e.end for e in out)):
                out.append(_ent("EMAIL_ADDRESS", text, m.start(), m.start() + len(value)))
        out.sort(key=lambda e: e.start)
    return out


_EMAIL_ENCODED = re.compile(r"(?<![\w.%+'-])[\w.+'-]+%40[^\W_](?:[\w-]*[^\W_])?(?:\.[\w-]+)+")


_IPV4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}(?:\.\d{1,3}){3}(?!\w|\.\d)")
_IPV6 = re.compile(
    r"[0-9A-Fa-f:](?<![\w:.][0-9A-Fa-f:])[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")
_HEX_COLON = frozenset("0123456789abcdefABCDEF:.")
_VERSION = re.compile(r"(?:\bv|\bversion\s?)$", re.IGNORECASE)


def _ipv6_candidates(text: str) -> Iterator[re.Match[str]]:
    """``_IPV6`` from the start of the hex run before each colon (colons are rare in prose)."""
    done = 0
    colon = text.find(":")
    while colon >= 0:
        start = colon
        while start > 0 and text[start - 1] in _HEX_COLON:
            start -= 1
        m = _IPV6.match(text, start) if start >= done else None
        if m is not None:
            done = m.end()
            yield m
        colon = text.find(":", max(colon + 1, done))


def ip_addresses(text: str) -> list[PiiEntity]:
    out = []
    if text.count(":") >= 2:
        for m in _ipv6_candidates(text):
            value = m.group().rstrip(".")
            end = m.start() + len(value)
            groups = [g for g in value.split(":") if g]
            if (end < len(text) and (text[end].isalnum() or text[end] == "_")) or (
                    len(groups) < 3 and "." not in value) or not _is_ip_address(value):
                continue
            out.append(_ent("IP_ADDRESS", text, m.start(), end))
    for m in _IPV4.finditer(text):
        if _VERSION.search(text, max(0, m.start() - 8), m.start()) or any(
                e.start <= m.start() < e.end for e in out):
            continue
        try:
            ipaddress.IPv4Address(m.group())  # leading zeros and octets over 255 fail
        except ValueError:
            continue
        out.append(_ent("IP_ADDRESS", text, m.start(), m.end()))
    return out


# --------------------------------------------------------------------------- URLs, domains


@functools.cache
def _psl():
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()  # the list bundled with the package: nothing is downloaded


def prepare() -> None:
    """Load what the recognisers read (the public suffix list, the name lists) at start-up,
    so that the first request that needs them does not wait for it (~150 ms here)."""
    _psl()
    names.prepare()


def _registrable(host: str) -> bool:
    """A name with a label under a known public suffix ("bbc.co.uk"; not "co.uk", "a.local")."""
    return "." in host and _psl().privatesuffix(host, accept_unknown=False) is not None


_URL_START = re.compile(r"(?:https?://|ftp://|www\.)$", re.IGNORECASE)
_URL_BODY = re.compile(r"[^\s<>\"'`{}|\\^]+")
_URL_TAIL = ".,;:!?'\"*"
_CLOSERS = {")": "(", "]": "["}


def _url_end(text: str, start: int, end: int) -> int:
    """Without trailing punctuation and closing brackets the URL does not open."""
    while end > start:
        ch = text[end - 1]
        if ch in _URL_TAIL or (ch in _CLOSERS and text.count(_CLOSERS[ch], start, end)
                               < text.count(ch, start, end)):
            end -= 1
        else:
            break
    return end


def _url_starts(text: str) -> list[int]:
    """Where a URL opens: a scheme before "://", or "www." at a word's start."""
    starts = []
    for mark, back in (("://", 5), ("www.", 0), ("WWW.", 0)):
        i = text.find(mark)
        while i >= 0:
            m = _URL_START.search(text, max(0, i - back), i + len(mark))
            if m is not None and (m.start() == 0 or not text[m.start() - 1].isalnum()):
                starts.append(m.start())
            i = text.find(mark, i + 1)
    return sorted(set(starts))


def urls(text: str) -> list[PiiEntity]:
    out: list[PiiEntity] = []
    for start in _url_starts(text):
        if out and start < out[-1].end:
            continue  # "www." inside a URL found from its "https://"
        m = _URL_BODY.match(text, start)
        assert m is not None
        end = _url_end(text, start, m.end())
        value = text[start:end]
        rest = value.split("://", 1)[-1]
        host = re.split(r"[/?#]", rest, maxsplit=1)[0].rpartition("@")[2]
        host = host.split(":", 1)[0].rstrip(".").lower()
        if _registrable(host):
            out.append(_ent("DOMAIN_NAME", text, start, end))
    return out


_DOMAIN = re.compile(
    r"(?<![\w.@/:%+-])(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]"
    r"(?![\w@(-]|\.[a-z0-9])", re.IGNORECASE)

# File extensions that are also top-level domains: "main.py" is a file, not Paraguay.
_FILE_EXTENSIONS = frozenset({
    "py", "md", "sh", "rs", "pl", "pm", "zip", "mov", "cc", "so", "ps", "mk", "ml", "mm", "st",
    "gd", "tf", "sc", "cs", "js", "ts", "rb", "go", "php", "json", "yaml", "yml", "toml", "cfg",
    "ini", "txt", "csv", "pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "png", "jpg",
    "jpeg", "gif", "svg", "mp3", "mp4", "wav", "avi", "log", "html", "htm", "css", "xml", "sql",
    "db", "bak", "tmp", "exe", "dll", "bin", "iso", "img", "tar", "gz", "tgz", "rar", "lock",
    "ipynb",
})
# Names that are far likelier an object than a host before one dot: "self.name", "df.info"
# ("app.slack.com", three labels, is a host).
_RECEIVERS = frozenset({
    "self", "this", "cls", "os", "sys", "np", "pd", "plt", "df", "torch", "tf", "nn", "math",
    "json", "re", "args", "kwargs", "obj", "ctx", "request", "response", "req", "res", "app",
    "config", "settings", "user", "event", "e", "x", "model", "module", "window",
    "document", "console", "item", "node", "row", "result", "client", "server", "path", "file",
    "logger", "log",
})
# Two-letter suffixes that are also common English words or attribute names ("user.id",
# "plan.to"): a bare two-label name ending in one is not taken for a domain.
_WORD_SUFFIXES = frozenset({"id", "is", "to", "at", "in", "do", "no", "as", "by", "it", "am"})
# Generic suffixes accepted bare; others (".name", ".email", ".show") only in a URL or e-mail.
_COMMON_GENERIC = frozenset({
    "com", "net", "org", "edu", "gov", "mil", "int", "info", "biz", "app", "dev", "xyz",
    "online", "site", "tech", "store", "shop", "blog", "cloud", "news", "io", "ai", "co",
})


def _bare_domain(value: str) -> bool:
    labels = value.split(".")
    suffix = labels[-1]
    if not (suffix.islower() or value.isupper()):  # "end.It": a sentence missing its space
        return False
    low = value.lower()
    if suffix.lower() in _FILE_EXTENSIONS:
        return False
    if len(labels) == 2 and (suffix.lower() in _WORD_SUFFIXES or labels[0].lower() in _RECEIVERS):
        return False
    public = _psl().publicsuffix(low, accept_unknown=False)
    if public is None or public == low:
        return False
    return "." in public or len(public) == 2 or public in _COMMON_GENERIC


_DOT_LETTER = re.compile(r"\.(?=[A-Za-z])")


def domains(text: str) -> list[PiiEntity]:
    """Bare domain names (a URL's or an e-mail's are inside their spans, found first), read
    from each dot followed by a letter back to the start of its word."""
    out = []
    done = 0
    for dot in _DOT_LETTER.finditer(text):
        if dot.start() < done:
            continue
        start = dot.start()
        while start > 0 and (text[start - 1].isalnum() or text[start - 1] in "-."):
            start -= 1
        m = _DOMAIN.match(text, start)
        done = m.end() if m else dot.end()
        if m and _bare_domain(m.group()):
            out.append(_ent("DOMAIN_NAME", text, m.start(), m.end()))
    if "@" in text:  # "git@gitlab.example.org:team/repo.git": the remote's host
        out += [_ent("DOMAIN_NAME", text, m.start(), m.end()) for m in _SCP_HOST.finditer(text)
                if _registrable(m.group().lower())]
        out.sort(key=lambda e: e.start)
    return out


# --------------------------------------------------------------------------- phone numbers

_PHONE = re.compile(
    r"(?<![\w+.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d(?:[ .-]?(?:\(\d{1,4}\)|\d)){5,17}"
    r"(?![\w/]|[.,-]\d)")
_PHONE_WORDS = re.compile(
    r"\b(?:phone|tel|telephone|call|calling|mobile|cell|cellphone|fax|whatsapp|sms|text|dial|"
    r"office|landline|ring|reach)\b", re.IGNORECASE)
_NANP = frozenset({"US", "CA"})
_DATE = re.compile(r"\d{4}[-.]\d{1,2}[-.]\d{1,2}(?!\d)|(?<!\d)\d{1,2}[-.]\d{1,2}[-.]\d{4}")


# A number the text names as something else: "membership no 00482213", '"mrn": "00917734"',
# "ORDER: 240617-0082", "Order 4471-8820-1193-0052". Such a number is no phone number unless
# a phone word is near.
_ID_BEFORE = re.compile(
    r"\b(?:order|invoice|ticket|case|ref|reference|booking|tracking|account|acct|membership|"
    r"member|mrn|sku|serial|receipt|transaction|confirmation|policy|claim|customer)"
    r"[\s\"':#=]*(?:(?:number|no|num|id)\b\.?)?[\s\"':#=]*$", re.IGNORECASE)


def named_otherwise(text: str, start: int, end: int) -> bool:
    """The words right before ``text[start:end]`` name it as an identifier, and no phone word
    is near."""
    return _ID_BEFORE.search(text, max(0, start - 30), start) is not None and (
        _PHONE_WORDS.search(text, max(0, start - 40), min(len(text), end + 20)) is None)


def _valid_phone(value: str, region: str) -> bool:
    digits = sum(ch.isdigit() for ch in value)
    if _DATE.search(value) or (value.count(".") == 3 and _is_ip_address(value)):
        return False
    if value.startswith("+"):
        return 7 <= digits <= 15 and _valid_in(value, region)
    if region in _NANP:
        # Checked cheaply before parsing (~0.1 ms a number): a national number of the
        # North American plan has ten digits (eleven with its "1"), and none opens with "0".
        lead = value.lstrip("(")[0]
        if lead != "0" and (digits == 10 or (digits == 11 and value[0] == "1")):
            return _valid_in(value, region)
        # A national number with a trunk "0" ("07400 082494", "(02) 1234 5678") or an area
        # code in brackets at another length ("(11) 96123-4567") is of no NANP country:
        # valid in one of the countries most prompts come from, written in groups, it is a
        # phone number.
        return ((_TRUNK_ZERO.fullmatch(value) is not None or value.startswith("("))
                and 9 <= digits <= 12 and any(_valid_in(value, r) for r in TRUNK_ZERO_REGIONS))
    return 6 <= digits <= 13 and _valid_in(value, region)


# Where a national phone number opens with "0", most prompts' countries first.
TRUNK_ZERO_REGIONS = ("GB", "IN", "AU", "DE", "FR", "IT", "ES", "NL", "IE", "NZ", "ZA", "NG",
                      "KE", "BR", "PK", "IR", "TR", "PH", "JP", "KR")
# "0" and one to five more digits (or "(0" and one to four, and ")"), then groups split by
# single spaces or dashes.
_TRUNK_ZERO = re.compile(  # not a ZIP+4 code
    r"(?!\d{5}-\d{4}$)(?:0\d{1,5}|\(0\d{1,4}\))(?:[ -]\d{2,8})+")


def _valid_in(value: str, region: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(value, region))
    except phonenumbers.NumberParseException:
        return False


_NUMBER_RUN = re.compile(r"\d[\d ().+-]*")


def _phone_candidates(text: str) -> Iterator[re.Match[str]]:
    """``_PHONE`` matches, looked for only around runs of digits and separators that hold seven
    digits or more (with the "+" or "(" just before a run)."""
    for run in _NUMBER_RUN.finditer(text):
        if run.end() - run.start() < 7 or sum(map(str.isdigit, run.group())) < 7:
            continue
        lo = run.start()
        while lo > 0 and run.start() - lo < 3 and text[lo - 1] in "+( ":
            lo -= 1
        # Two characters past the run, so the pattern's lookahead sees what follows it.
        yield from _PHONE.finditer(text, lo, min(len(text), run.end() + 2))


def phone_numbers(text: str, region: str = DEFAULT_REGION) -> list[PiiEntity]:
    """Numbers ``phonenumbers`` finds valid. A candidate that fails whole is retried without
    up to two space-separated groups at either end ("zip 94107 415 555 2671")."""
    out = []
    for m in _phone_candidates(text):
        value = m.group()
        if named_otherwise(text, m.start(), m.end()):
            continue
        if value.isdigit() and not _PHONE_WORDS.search(
                text, max(0, m.start() - 40), min(len(text), m.end() + 20)):
            continue  # a bare digit run is a phone number only where the text says so
        groups = value.split(" ")
        tries = sorted(((a, b) for a in range(3) for b in range(3) if a + b < len(groups)),
                       key=sum)
        for a, b in tries:
            part = groups[a:len(groups) - b]
            if not part[0] or not (part[0][0].isdigit() or part[0][0] in "+("):
                continue
            sub = " ".join(part)
            if _valid_phone(sub, region):
                start = m.start() + len(" ".join(groups[:a])) + (1 if a else 0)
                out.append(_ent("PHONE_NUMBER", text, start, start + len(sub)))
                break
    return out


# --------------------------------------------------------------------------- ZIP codes, ages

# The word, then the value: US ZIP (5 or 5+4) and the common postcode shapes (123456, 1234, 123 45,
# 1234 AB, 12345-678, 12-345, 123-4567, Canadian A1A 1A1, British SW1A 1AA). Letters in the
# value are upper case only, so "zip 1234 is wrong" stops at the number.
_ZIP = re.compile(
    r"\b(?:zip(?:[ _-]?code)?|postal[ _-]?code|post[ _-]?code)s?\b"
    r"[\"']?\s*(?:[:#=,>]\s*[\"']?\s*)?"  # "zip 94107", "zip: ..", {"zip": ".."}, <zip>.., zip=..
    r"(?:(?:is|was|of)\s+)?"
    r"(?-i:(\d{5}(?:-\d{4})?|\d{3} \d{2}|\d{4} ?[A-Z]{2}|\d{5}-\d{3}|\d{2}-\d{3}|\d{3}-\d{4}"
    r"|\d{6}|\d{4}|[A-Z]\d[A-Z] ?\d[A-Z]\d|[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}))(?![\w-])",
    re.IGNORECASE)


_ZIP_WORDS = ("zip", "Zip", "ZIP", "post", "Post", "POST")
# A US address's last line: ", NY 11215" (a state's code after a comma, then the ZIP code).
_STATE_ZIP = re.compile(
    r",[ \t]*(?:A[KLRZ]|C[AOT]|D[CE]|FL|GA|HI|I[ADLN]|K[SY]|LA|M[ADEINOST]|N[CDEHJMVY]|O[HKR]|PA|"
    r"RI|S[CD]|T[NX]|UT|V[AT]|W[AIVY])[ \t]+(\d{5}(?:-\d{4})?)(?![\w-])")


def zip_codes(text: str) -> list[PiiEntity]:
    found = [_ent("ZIP_CODE", text, m.start(1), m.end(1), IN_CONTEXT)
             for m in _STATE_ZIP.finditer(text)]
    if any(word in text for word in _ZIP_WORDS):  # substring tests in C: the pattern
        found += [_ent("ZIP_CODE", text, m.start(1), m.end(1), IN_CONTEXT)  # scans slowly
                  for m in _ZIP.finditer(text) if not any(f.start == m.start(1) for f in found)]
    return sorted(found, key=lambda e: e.start)


# Each number of one to three digits, then the words around it: "34 years old", "a 5-year-old",
# "52 y/o"; "age: 52", "aged 7", "at the age of 61"; "turned 60.", "turns 40 this year" (not
# "turned 90 degrees"); "when he was 78.", "I'm 34." (at the end of a clause).
# One to three digits standing alone (not in a longer number, a word, "3.5" or "1,200").
_SMALL_NUMBER = re.compile(r"(?<![\w.,])\d{1,3}(?!\d)")
_AGE_AFTER = re.compile(r"(?:[ -]years?[ -]old|[ -]yrs?[ -]old|\s?y/o|\s?y\.o\.|\s?yo)\b|"
                        r"[ -](?:months?|weeks?)[ -]old\b", re.IGNORECASE)
_AGE_BEFORE = re.compile(r"\baged?\b\s*(?:[:=]\s*|(?:is|of|was)\s+)?$", re.IGNORECASE)
_TURN_BEFORE = re.compile(r"\bturn(?:ed|s|ing)?\s+$", re.IGNORECASE)
_TURN_AFTER = re.compile(r"\s*(?:[.!?,;)]|$|(?:years?|yrs?|this|today|tomorrow|next|last|soon)\b)",
                         re.IGNORECASE)
_PERSON_BEFORE = re.compile(r"\b(?:I['’]m|I am|I was|(?:he|she)(?:['’]s| is| was))\s+$",
                            re.IGNORECASE)
# A family member's age: "my dad is 70 and", "our son was 4 when" (no unit after: a unit is
# caught before).
_KIN_BEFORE = re.compile(
    r"\b(?:my|our|his|her|their)\s+(?:son|daughter|mom|mum|mother|dad|father|wife|husband|"
    r"brother|sister|grandma|grandmother|grandpa|grandfather|kid|child|baby|boy|girl|partner|"
    r"nephew|niece|cousin|aunt|uncle)\s+(?:is|was|turned|just turned)\s+$", re.IGNORECASE)


_BIRTHDAY = re.compile(r"(?:st|nd|rd|th) birthday\b", re.IGNORECASE)  # "Daddy's 70th birthday"


def _is_age(text: str, start: int, end: int) -> bool:
    # Plain string tests before any pattern: most numbers in a prompt have no such words near.
    after = text[end:end + 2]
    if after in ("st", "nd", "rd", "th", "ST", "ND", "RD", "TH") and _BIRTHDAY.match(text, end):
        return True
    if (after[:1] in ("y", "Y") or after[:2] in (" y", " Y", "-y", "-Y", " m", "-m", " w", "-w")
            ) and _AGE_AFTER.match(text, end):
        return True
    if after and (after[0] == "%" or after[0].isalpha() or (
            after[0] in ".,:" and after[1:].isdigit())):
        return False  # "52%", "34abc", "3.5", "12:30"
    lo = max(0, start - 24)
    before = text[lo:start].lower()
    if "age" in before and _AGE_BEFORE.search(text, lo, start):
        return True
    if "turn" in before and _TURN_BEFORE.search(text, lo, start):
        return _TURN_AFTER.match(text, end) is not None
    rest = text[end:end + 4].lstrip()
    if (not rest or rest[0] in ".!?;") and _PERSON_BEFORE.search(text, lo, start) is not None:
        return True
    lo = max(0, start - 40)
    return ("is" in text[lo:start] or "was" in text[lo:start] or "turned" in text[lo:start]) and (
        _KIN_BEFORE.search(text, lo, start) is not None and UNIT_AFTER.match(text, end) is None)


def ages(text: str) -> list[PiiEntity]:
    out = []
    for m in _SMALL_NUMBER.finditer(text):
        start, end = m.span()
        if int(m.group()) <= 130 and _is_age(text, start, end):
            out.append(_ent("AGE", text, start, end, IN_CONTEXT))
    return out


# --------------------------------------------------------------------------- all of them

# In order of trust: where two overlap, the earlier one's match stays.
RECOGNISERS: tuple[tuple[str, Callable[[str], list[PiiEntity]]], ...] = (
    ("IBAN_CODE", ibans),
    ("CREDIT_CARD", credit_cards),
    ("US_DRIVER_LICENSE", drivers_licences),  # its words say what the number is
    ("US_SSN", us_ssns),
    ("IP_ADDRESS", ip_addresses),
    ("URL", urls),
    ("EMAIL_ADDRESS", emails),
    ("DOMAIN_NAME", domains),
    ("PHONE_NUMBER", phone_numbers),
    ("DATE_TIME", dates),
    ("STREET_ADDRESS", street_addresses),  # before ZIP codes: a ZIP code inside is the address's
    ("ZIP_CODE", zip_codes),
    ("AGE", ages),
    ("ORGANIZATION", organisations),
    ("GPE", places),
    ("PERSON", people),  # after the lists: "Ho Chi Minh City", "Imam Khomeini Hospital"
    ("NRP", groups_named),  # after names: "Christian Bale" is a person
)
RULE_TYPES = frozenset({"AGE", "CREDIT_CARD", "DATE_TIME", "DOMAIN_NAME", "EMAIL_ADDRESS",
                        "IBAN_CODE", "IP_ADDRESS", "PHONE_NUMBER", "US_SSN", "ZIP_CODE"})
# Found by the words around, no check.
CONTEXT_TYPES = frozenset({"AGE", "ZIP_CODE", "US_DRIVER_LICENSE"})
# Found on word lists (classify/names.py, and a name after an honorific: classify/people.py).
NAME_TYPES = frozenset({"GPE", "ORGANIZATION", "PERSON", "TITLE", "NRP"})
# Found by their shape alone: dates (classify/dates.py), street lines (classify/addresses.py).
SHAPE_TYPES = frozenset({"DATE_TIME", "STREET_ADDRESS"})
# What the model may read a listed place as on the same span, where the list wins.
_NOT_PLACES = frozenset({"PERSON", "ORGANIZATION", "STREET_ADDRESS"})
# Rule types that do not beat the model's reading of a span they overlap (only a longer span).
_UNCHECKED = CONTEXT_TYPES | NAME_TYPES | SHAPE_TYPES


_DIGIT = re.compile(r"\d")
# Seven digits with at most two separators between each: in every card number, SSN, phone
# number and IBAN (its account number) there is such a run.
_LONG_NUMBER = re.compile(r"\d(?:[ ().+/-]{0,2}\d){6}")


def _wanted(name: str, text: str, has_digit: bool, long_number: bool) -> bool:
    """Cheap tests of what a recogniser needs at all, so prose costs next to nothing."""
    if name in ("IBAN_CODE", "CREDIT_CARD", "US_SSN", "PHONE_NUMBER"):
        return long_number
    if name in ("ZIP_CODE", "AGE", "STREET_ADDRESS"):
        return has_digit
    if name == "US_DRIVER_LICENSE":
        return has_digit and ("icen" in text or "ICEN" in text or "DL" in text)
    if name == "IP_ADDRESS":
        return has_digit or text.count(":") >= 2
    if name == "URL":
        return "://" in text or "www." in text or "WWW." in text
    if name == "EMAIL_ADDRESS":
        return "@" in text or "%40" in text
    if name in NAME_TYPES or name in SHAPE_TYPES:
        return True  # they look only at capitalised words, or at numbers and month names
    return "." in text  # DOMAIN_NAME


def recognise(text: str, names: Iterable[str] | None = None) -> list[PiiEntity]:
    """Every rule entity in ``text``, without overlaps (the more trusted recogniser's stays),
    sorted by start. ``names``: only these recognisers (``RECOGNISERS``' names), e.g. to
    measure one alone."""
    only = set(names) if names is not None else None
    has_digit = _DIGIT.search(text) is not None
    long_number = has_digit and _LONG_NUMBER.search(text) is not None
    found: list[PiiEntity] = []
    index = SpanIndex()
    for name, fn in RECOGNISERS:
        if (only is not None and name not in only) or not _wanted(
                name, text, has_digit, long_number):
            continue
        for e in fn(text):
            if not index.overlapping(e.start, e.end):
                found.append(e)
                index.add(e)
    return sorted(found, key=lambda e: (e.start, e.end))


def _rule_wins(rule: PiiEntity, model: PiiEntity) -> bool:
    if (rule.type == "GPE" and model.type in _NOT_PLACES and rule.start == model.start
            and rule.end == model.end and rule.text.split()[0] not in first_names()):
        return True  # a listed place read as a name ("...,2023-11-02,Kano"), no first name
    if (rule.type == model.type == "STREET_ADDRESS" and model.start < rule.start
            and rule.end == model.end and _no_address_before(
                model.text[:rule.start - model.start])):
        return True  # "30: PO Box 2281, ...", "Enterprise, 1 Newark Airport Rd, ..."
    if rule.type == "US_DRIVER_LICENSE" and rule.start <= model.start and model.end <= rule.end:
        return True  # the words before it say what the number is, whatever its shape
    if (rule.type == "ORGANIZATION" and model.type == "PERSON" and rule.start <= model.start
            and model.end <= rule.end and names.has_organisation_word(rule.text)):
        return True  # "Bakkerij Smit B.V.", "Clinique Vétérinaire des Brotteaux": no person
    if rule.type not in _UNCHECKED and (
            model.type in RULE_TYPES or (rule.start <= model.start and model.end <= rule.end)):
        return True
    return (rule.end - rule.start, rule.score) > (model.end - model.start, model.score)


_PART_BEFORE = re.compile(r"[^,:\n]{1,40}(?:,|:)\s+")


def _no_address_before(prefix: str) -> bool:
    """What the model's address holds before the street line a rule found: one part, ended by
    a comma or a colon, with no street word ("Enterprise, ", "30: ")."""
    return _PART_BEFORE.fullmatch(prefix) is not None and not any(
        w.rstrip(".,:").lower() in _STREET_WORDS_LOWER for w in prefix.split())


_STREET_WORDS_LOWER = frozenset(w.lower() for w in names.STREET_WORDS)


def _dates_account_for(model: PiiEntity, rules: SpanIndex) -> bool:
    """A model DATE_TIME whose every date-like part (``pii.DATE_LIKE``) lies in rule dates
    inside it: those are its better reading ("05 OCT B6" is "05 OCT", "Thu 14 Nov 2024 /" is
    "Thu 14 Nov 2024", "saturday night around 11pm" is two)."""
    if model.type != "DATE_TIME":
        return False
    rest = list(model.text)
    inside = False
    for r in rules.overlapping(model.start, model.end):
        if r.type == "DATE_TIME" and model.start <= r.start and r.end <= model.end:
            rest[r.start - model.start:r.end - model.start] = " " * (r.end - r.start)
            inside = True
    rest_text = "".join(rest)
    return inside and DATE_LIKE.search(rest_text) is None and _DAY_PART.search(rest_text) is None


# Words that make a time of a date in the model's span ("5 May at noon" stays the model's).
_DAY_PART = re.compile(r"\b(?:noon|midnight|morning|afternoon|evening|night)\b", re.IGNORECASE)


def union(model_entities: Iterable[PiiEntity], rule_entities: Iterable[PiiEntity]
          ) -> list[PiiEntity]:
    """The model's entities and the rules', one span and one type where they overlap (the
    rule in the module docstring), sorted by start."""
    model, rules = _split_where_rules_do(list(model_entities), list(rule_entities))
    models, rule_index = SpanIndex(model), SpanIndex(rules)
    added: list[PiiEntity] = []
    gone: set[int] = set()
    reread = {id(m) for m in model if m.type == "DATE_TIME" and _dates_account_for(m, rule_index)}
    for r in rules:
        rivals = [m for m in models.overlapping(r.start, r.end) if id(m) not in gone]
        if all(_rule_wins(r, m) or (id(m) in reread and m.start <= r.start and r.end <= m.end)
               for m in rivals):
            gone.update(id(m) for m in rivals)
            added.append(r)
    kept = [m for m in model if id(m) not in gone]
    return sorted(kept + added, key=lambda e: (e.start, e.end, e.type))


_JOINED = re.compile(r"\s*(?:,|and|&|or|,\s*and)\s*")


def _split_where_rules_do(model: list[PiiEntity], rules: list[PiiEntity]
                          ) -> tuple[list[PiiEntity], list[PiiEntity]]:
    """A model name whose span the rules read as two or more names of its type joined by
    "and" or commas ("Monzo and Deliveroo"): the rules' reading, the model's score."""
    index = SpanIndex(rules)
    out = []
    for m in model:
        parts = sorted((r for r in index.overlapping(m.start, m.end)
                        if r.type == m.type and m.start <= r.start and r.end <= m.end),
                       key=lambda r: r.start)
        if (m.type in NAME_TYPES and len(parts) > 1 and parts[0].start == m.start
                and parts[-1].end == m.end and all(
                    _JOINED.fullmatch(m.text, a.end - m.start, b.start - m.start)
                    for a, b in itertools.pairwise(parts))):
            out += [PiiEntity(m.type, r.start, r.end, r.text, m.score) for r in parts]
        else:
            out.append(m)
    return out, rules


def guarded(model_entities: Iterable[PiiEntity], rule_entities: Iterable[PiiEntity] | None,
            text: str) -> list[PiiEntity]:
    """What the guard acts on: the model's entities that the text can hold
    (``pii.possible_values``) joined with the rules' (``with_rules``; None: the model's
    alone), under the span conventions (``pii.span_conventions``)."""
    model = possible_values(model_entities, text)
    found = model if rule_entities is None else with_rules(model, rule_entities, text)
    return span_conventions(found, text)


def with_rules(model_entities: Iterable[PiiEntity], rule_entities: Iterable[PiiEntity],
               text: str) -> list[PiiEntity]:
    """What the rules add to the model's entities (the model's names as written,
    ``names.name_edges``; no phone number that the text names as an identifier): their
    ``union``, then person names (``people.whole_names``) and address starts
    (``addresses.address_edges``) as the text writes them, and an age right after a name
    (``ages_beside_names``)."""
    model = [e for e in name_edges(model_entities, text) if not (
        e.type == "PHONE_NUMBER" and named_otherwise(text, e.start, e.end))]
    return ages_beside_names(address_edges(whole_names(union(model, rule_entities), text),
                                           text), text)


# A person's age written right after the name: "(Brenda Mokoena, 58)", "Jane Ruto (34)".
_AGE_AFTER_NAME = re.compile(r"(?:,[ \t]*|[ \t]*\([ \t]*)(\d{1,3})[ \t]*(?=[),])")


def ages_beside_names(entities: list[PiiEntity], text: str) -> list[PiiEntity]:
    """A number of up to 110 right after a PERSON, after a comma or in brackets, before a
    closing bracket or a comma: that person's AGE, over a model entity of another type on it
    ("58" read as a STREET_ADDRESS)."""
    ages = []
    for p in entities:
        if p.type == "PERSON" and (m := _AGE_AFTER_NAME.match(text, p.end)) and (
                0 < int(m.group(1)) <= 110):
            ages.append(_ent("AGE", text, m.start(1), m.end(1), IN_CONTEXT))
    if not ages:
        return entities
    spans = {(a.start, a.end) for a in ages}
    kept = [e for e in entities if (e.start, e.end) not in spans or e.type in RULE_TYPES - {"AGE"}]
    taken = SpanIndex(kept)
    return sorted(kept + [a for a in ages if not taken.overlapping(a.start, a.end)],
                  key=lambda e: (e.start, e.end, e.type))


def _ent(kind: str, text: str, start: int, end: int, score: float = CHECKED) -> PiiEntity:
    return PiiEntity(kind, start, end, text[start:end], score)
