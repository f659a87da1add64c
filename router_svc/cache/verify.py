"""The hit verifier: may two texts the embedding finds near-identical share one answer?

The cache keys an answer by a mean-pooled sentence embedding (all-MiniLM-L6-v2). Pooling
forgets order and roles: "convert MP4 to AVI" and "convert AVI to MP4" sit at 0.99, as do
"best strategy for France to beat Germany" and "... for Germany to beat France". A changed
number, a negation or another name barely move it either. So a candidate hit (the nearest
stored entry at or above ``cache.threshold``) is vetted on its two texts before it is served.
The check runs on that one pair only, so a miss pays nothing; it is pure Python, a few tens of
microseconds for a typical prompt, and bounded for long ones (they are compared exactly).

The rules, each measured on paraphrase data with adversarial negatives by
``perf/cache_verify.py`` (figures in perf/README.md, "Cache hit verifier"):

``long``
    If either text is longer than ``LONG_CHARS`` characters, the texts must be equal once
    whitespace is normalised. Two long prompts that share a preamble and differ in their
    document or question embed almost identically (the pooled mean is dominated by the shared
    part, and past the model's window the rest is not seen at all), and no token rule can judge
    which part of a long prompt matters.
``numbers``
    The same numbers (``1,000`` = ``1000``, ``2.50`` = ``2.5``, ``two`` = ``2``). A number
    word on one side only ("two boys" / "a couple of boys") is let through; a digit is not.
``negation``
    The same parity of negations (not, n't, dont, never, no, nothing, without, cannot, ...).
``antonym``
    No word that is a word of the other text with a negating prefix (safe/unsafe).
``opposites``
    No pair of lexical opposites, one on each side (wet/dry, inside/outside, buy/sell, ...).
``swap``
    No two shared words that trade sides around an anchor both texts have: a relation word
    (to, into, from, than, vs, about, beat, over, against, ...) or any other word both texts
    have once, but the symmetric ones (and, or, with, between): "X to Y" / "Y to X", "the dog
    chased the cat" / "the cat chased the dog". Passive against active voice is not judged.
``direction``
    No shared word governed by a relation in one text and by its opposite in the other
    ("from Paris" / "to Paris", before/after, above/below).
``entity``
    No changed name: a name (a capitalised word inside the sentence, an acronym, a code such
    as MP4) on each side that the other text lacks ("France" / "Germany"). A name and its
    derived form match (Iran/Iranian, China/Chinese).

``verify`` returns the first rule that refuses, or None; ``texts_compatible`` is the
boolean the cache's ``guard`` parameter takes.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections import Counter
from collections.abc import Collection, Iterator
from difflib import SequenceMatcher
from functools import lru_cache
from typing import NamedTuple

# Longer texts than this (in characters, either one) hit only when equal after whitespace
# normalisation. Chosen in perf/cache_verify.py: the router embeds the first 128 tokens
# (classifier.pii_model.window_tokens), so prompts that share their first ~500 characters embed
# at exactly 1.0 whatever follows, and from ~75 shared words the shared part already dominates;
# 400 characters (~90 tokens) stays inside the window. No paraphrase pair in the data sets has
# a text this long (the longest has 368 characters).
LONG_CHARS = 400

RULES: tuple[str, ...] = ("long", "numbers", "negation", "antonym", "opposites", "swap",
                          "direction", "entity")
# Measured and not kept (on the development sets they cost recall and bought no precision on
# the sets' own pairs, or, "crossing", +0.012 precision for -18% recall; see perf/README.md),
# available to perf/cache_verify.py: "entity_added" (a name on one side only), "content" (a
# content word on each side that the other lacks), "substitution" (one content word replaced
# by another in an aligned context, difflib), "crossing" (one shared word crossing an anchor,
# not two trading sides); and the weaker
# forms of kept rules: "relation_swap" / "content_swap" (swaps around relation words only /
# around relation and content words), "digits" (the old number rule: "two" and "2" differ).
OPTIONAL_RULES: tuple[str, ...] = ("entity_added", "content", "substitution", "crossing",
                                   "relation_swap", "content_swap", "digits")
DEFAULT_RULES: frozenset[str] = frozenset(RULES)

_TOKEN = re.compile(
    r"(?:[A-Za-z]\.){2,}"  # an acronym with dots: U.S., e.g.
    r"|\d+(?:[.,:/]\d+)*(?:\s?%)?"  # a number: 1,000 2.5 9:30 1/2 5%
    r"|[^\W\d_]\w*(?:['\u2019-][^\W\d_]\w*)*"  # a word: MP4, don't, non-binding
    r"|[.!?;:,()\[\]\"]"  # boundaries
)
_SENTENCE_END = frozenset(".!?:\"([")
_BOUNDARY = frozenset(".!?;:,()[]\"")


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


FUNCTION_WORDS = _set(
    """a an the this that these those some any each every all both either other such own same
    i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his
    himself she her hers herself it its itself they them their theirs themselves one ones
    what which who whom whose when where why how whether if then else than so because as while
    though although unless until since and or but nor yet also too very just only even still
    really quite rather much many more most less least few lot lots
    is am are was were be been being do does did done doing have has had having
    can could may might must shall should will would ought need dare
    of in on at by for with within upon onto out off up down across through throughout
    along around via per like unlike near among amongst beside besides beyond during inside
    outside toward towards behind
    there here now well please thanks thank get got gets getting way ways thing things
    s t d ll m re ve"""
)
# Words that relate two arguments in an order that matters ("X to Y" is not "Y to X").
# "of", "for", "with", "and", "or" are left out: they are as often symmetric.
RELATIONS = _set(
    """to into from than vs versus about beat beats beating defeat defeats defeated over
    against under before after above below onto toward towards"""
)
_OPPOSITE_GROUPS = (
    (_set("to into onto toward towards"), _set("from")),
    (_set("before"), _set("after")),
    (_set("above over"), _set("below under")),
)
_OPPOSITE: dict[str, frozenset[str]] = {}
for _g1, _g2 in _OPPOSITE_GROUPS:
    for _w in _g1:
        _OPPOSITE[_w] = _OPPOSITE.get(_w, frozenset()) | _g2
    for _w in _g2:
        _OPPOSITE[_w] = _OPPOSITE.get(_w, frozenset()) | _g1
# Lexical opposites without a prefix (the optional "opposites" rule).
_OPPOSITE_WORDS: dict[str, frozenset[str]] = {}
_OPPOSITE_PAIRS = (
    "wet/dry hot/cold warm/cool big/small large/small huge/tiny long/short tall/short "
    "high/low heavy/light fast/slow early/late old/new old/young young/elderly full/empty "
    "open/closed open/close inside/outside indoors/outdoors in/out up/down left/right "
    "top/bottom front/back upper/lower first/last start/stop start/end begin/end win/lose "
    "won/lost winning/losing winner/loser buy/sell buying/selling bought/sold give/take "
    "send/receive push/pull import/export upload/download input/output increase/decrease "
    "rise/fall rising/falling raise/lower gain/loss profit/loss max/min maximum/minimum "
    "more/less most/least best/worst good/bad better/worse easy/hard easy/difficult "
    "cheap/expensive rich/poor happy/sad love/hate like/dislike accept/reject allow/deny "
    "allow/forbid true/false yes/no male/female man/woman men/women boy/girl husband/wife "
    "father/mother son/daughter brother/sister day/night morning/evening summer/winter "
    "north/south east/west asleep/awake alive/dead present/absent pass/fail positive/negative "
    "plus/minus same/different always/never light/dark black/white ascending/descending "
    "uppercase/lowercase encrypt/decrypt encode/decode add/remove add/subtract "
    "multiply/divide enable/disable install/uninstall connect/disconnect sunrise/sunset "
    "clockwise/anticlockwise"
)
for _pair in _OPPOSITE_PAIRS.split():
    _x, _y = _pair.split("/")
    _OPPOSITE_WORDS[_x] = _OPPOSITE_WORDS.get(_x, frozenset()) | {_y}
    _OPPOSITE_WORDS[_y] = _OPPOSITE_WORDS.get(_y, frozenset()) | {_x}

NEGATIONS = _set("not no never none nobody nothing neither nor without")
_ANTONYM_PREFIXES = ("un", "in", "im", "il", "ir", "dis", "non")
_CONTRACTIONS = {"can": "can", "ca": "can", "wo": "will", "sha": "shall", "ai": "is"}
# n't written without its apostrophe
_BARE_NEGATED = {w + "nt": w for w in _set(
    "do does did is are was were have has had could would should must need")}
_BARE_NEGATED.update({"cant": "can", "wont": "will", "aint": "is"})
_NUMBER_WORD_LIST = (
    "zero _ two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
)
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(_NUMBER_WORD_LIST.split()) if w != "_"}
_NUMBER_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "hundred": "100",
                      "dozen": "12"})
# How many content words either side of an anchor count as its arguments, and how far a
# relation word governs the words after it.
SWAP_WINDOW = 3
ROLE_WINDOW = 2

_CONTENT, _RELATION, _BOUNDARY_KIND, _FUNCTION, _NUMBER = 0, 1, 2, 3, 4
_FLAGGED = operator.itemgetter(5)  # _Word.flagged
_MARKED = operator.itemgetter(4)  # _Word.marked
_CAPITAL = operator.itemgetter(6)  # _Word.capital


class _Text(NamedTuple):
    norm: tuple[str, ...]  # every token but numbers, normalised, in order
    kinds: tuple[int, ...]  # _CONTENT, _RELATION, _FUNCTION or _BOUNDARY_KIND per token
    words: frozenset[str]  # every normalised word, function words included
    content: frozenset[str]
    once: frozenset[str]  # words that occur exactly once
    index: dict[str, int]  # where each word last stands in ``norm`` (for ``once``: where)
    relations: dict[str, list[int]]  # where each relation word stands in ``norm``
    entities: frozenset[str]
    digits: tuple[str, ...]  # numbers written with digits, normalised, sorted
    number_words: tuple[str, ...]  # "two" .. "twenty" as digits, sorted
    negations: int


class _Word(NamedTuple):
    norm: str  # lower case, contraction resolved, light stem; numbers: normalised digits
    kind: int  # _CONTENT, _RELATION, _FUNCTION, _BOUNDARY_KIND or _NUMBER
    negations: int  # 1 for not / n't / never / cannot / ...
    number: str | None  # "3" for "three"
    marked: bool  # a name wherever it stands: an acronym or a code with digits (MP4)
    flagged: bool  # a negation or a number word
    capital: bool  # a content word with a capital: a name unless it starts a sentence
    ends: bool  # a boundary after which a sentence starts


def _stem(w: str) -> str:
    """Light normalisation: plural -s / -ies."""
    n = len(w)
    if n > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if n > 3 and w[-1] == "s" and w[-2] not in "sui":
        return w[:-1]
    return w


def _word(tok: str) -> _Word:
    if tok[0].isdigit():
        return _Word(_number(tok), _NUMBER, 0, None, False, False, False, False)
    if tok in _BOUNDARY:
        return _Word(tok, _BOUNDARY_KIND, 0, None, False, False, False, tok in _SENTENCE_END)
    low = tok.lower().replace("\u2019", "'").replace("-", "").replace(".", "")
    negations = 0
    if low.endswith("n't"):
        base = low[:-3]
        negations = 1
        low = _CONTRACTIONS.get(base, base)
    elif low in _BARE_NEGATED:
        negations, low = 1, _BARE_NEGATED[low]
    elif low == "cannot":
        negations, low = 1, "can"
    elif low.endswith("'s"):
        low = low[:-2]
    elif "'" in low:  # I'm, you're, we'll: the pronoun part
        low = low.split("'", 1)[0]
    if low in NEGATIONS:
        negations += 1
    w = _stem(low)
    if low in RELATIONS:
        kind, w = _RELATION, low
    elif low in FUNCTION_WORDS or w in FUNCTION_WORDS or low in NEGATIONS:
        kind = _FUNCTION
    else:
        kind = _CONTENT
    name = kind == _CONTENT and len(w) > 1
    marked = name and ((len(tok) > 1 and tok.isupper()) or any(c.isdigit() for c in tok))
    number = _NUMBER_WORDS.get(low)
    return _Word(w, kind, negations, number, marked, bool(negations) or number is not None,
                 name and not marked and tok[0].isupper(), False)


class _Memo(dict[str, _Word]):
    """_word per token as written, computed once."""

    def __missing__(self, tok: str) -> _Word:
        info = self[tok] = _word(tok)
        return info


_WORDS = _Memo()


def _number(tok: str) -> str:
    t = tok.replace(",", "").replace("%", "").strip()
    if t.count(".") == 1:
        t = t.rstrip("0").rstrip(".") or "0"
    return t


@lru_cache(maxsize=4096)
def _analyse(text: str) -> _Text:
    """Everything the rules need from one text (memoised: a stored entry's text is analysed
    once while it stays in this cache)."""
    if len(_WORDS) > 100_000:  # bounded: a flood of odd tokens cannot grow it without end
        _WORDS.clear()
    infos = list(map(_WORDS.__getitem__, _TOKEN.findall(text)))
    digits = sorted(i.norm for i in infos if i.kind == _NUMBER)
    toks = [i for i in infos if i.kind != _NUMBER] if digits else infos
    norm = [i.norm for i in toks]
    kinds = [i.kind for i in toks]
    negations = 0
    number_words: list[str] = []
    for i in itertools.compress(infos, map(_FLAGGED, infos)):
        negations += i.negations
        if i.number is not None:
            number_words.append(i.number)
    entities = {i.norm for i in itertools.compress(infos, map(_MARKED, infos))}
    for j in itertools.compress(range(len(infos)), map(_CAPITAL, infos)):
        if j and not infos[j - 1].ends:  # not the first word of a sentence
            entities.add(infos[j].norm)
    counts = Counter(norm)
    once = frozenset(w for w, n in counts.items() if n == 1).difference(_BOUNDARY)
    words = set(counts)
    words.difference_update(_BOUNDARY)
    if negations:
        words.add("not")
    content = frozenset(itertools.compress(norm, map(_CONTENT.__eq__, kinds)))
    relations: dict[str, list[int]] = {}
    if not RELATIONS.isdisjoint(counts):
        for j in itertools.compress(range(len(kinds)), map(_RELATION.__eq__, kinds)):
            relations.setdefault(norm[j], []).append(j)
    # the last position of each word: the only one of a word in ``once``
    return _Text(tuple(norm), tuple(kinds), frozenset(words), content, once,
                 dict(zip(norm, itertools.count())), relations, frozenset(entities),
                 tuple(digits), tuple(sorted(number_words)), negations)


def _prefix_counts(kinds: tuple[int, ...], kind: int) -> list[int]:
    """How many tokens of ``kind`` stand before each position (0 .. len)."""
    return list(itertools.accumulate(map(kind.__eq__, kinds), initial=0))


def normalise_whitespace(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------- the rules


def _numbers_differ(a: _Text, b: _Text) -> bool:
    """Different numbers, "2" and "two" being the same; a number word on one side only ("two
    boys" / "a couple of boys") is let through, a digit on one side only is not."""
    if a.digits == b.digits and a.number_words == b.number_words:
        return False
    if sorted(a.digits + a.number_words) == sorted(b.digits + b.number_words):
        return False
    # number words only, on one side only
    return bool(a.digits or b.digits or (a.number_words and b.number_words))


# Words around which two arguments may trade places without changing the meaning.
SYMMETRIC = _set("and or nor but with between both either neither")


def _anchor_in_b(a: _Text, b: _Text, pa: int, shared_once: frozenset[str],
                 any_word: str) -> int | None:
    """Where the anchor at ``pa`` in a stands in b, or None if the word there is no anchor:
    a relation word (k-th occurrence with k-th, when both texts have as many); with
    ``any_word`` "content" also a content word both texts have once, with "all" any word
    both have once but the symmetric ones (and, or, with, ...)."""
    w, k = a.norm[pa], a.kinds[pa]
    if any_word and w in shared_once and (
            k in (_RELATION, _CONTENT) or (any_word == "all" and k == _FUNCTION
                                           and w not in SYMMETRIC)):
        return b.index[w]
    if k == _RELATION:
        ia, ib = a.relations[w], b.relations.get(w)
        if ib is not None and len(ib) == len(ia):
            return ib[ia.index(pa)]
    return None


def _near(cp: list[int], bp: list[int], left: int, right: int) -> bool:
    """Whether the word at ``left`` and the word at ``right`` are within ``SWAP_WINDOW``
    content words of each other (fewer between) with no boundary between; ``cp`` and ``bp``
    count content words and boundaries before each position."""
    return bp[right] == bp[left + 1] and cp[right] - cp[left + 1] < SWAP_WINDOW


def _swapped(a: _Text, b: _Text, single: bool = False, any_word: str = "all") -> bool:
    """Two shared words that trade sides around an anchor both texts have: "X to Y" / "Y to
    X", "the dog chased the cat" / "the cat chased the dog" (each within ``SWAP_WINDOW``
    content words of the anchor, no boundary between). With ``single``, one shared word
    crossing an anchor is enough. Passive against active voice ("by" on one side only) is
    not judged: "Y is chased by X" says what "X chases Y" says."""
    shared_once = a.once & b.once
    movers = sorted(shared_once & a.content, key=a.index.__getitem__)
    if len(movers) < (1 if single else 2):
        return False
    if ("by" in a.words) != ("by" in b.words):
        return False
    ia_, ib_ = a.index, b.index
    # Fast exit, the common case: the words both texts have once stand in the same order.
    order = [ib_[w] for w in sorted(shared_once, key=ia_.__getitem__)]
    if all(x < y for x, y in itertools.pairwise(order)):
        return False
    ca, ba = _prefix_counts(a.kinds, _CONTENT), _prefix_counts(a.kinds, _BOUNDARY_KIND)
    cb, bb = _prefix_counts(b.kinds, _CONTENT), _prefix_counts(b.kinds, _BOUNDARY_KIND)
    if single:
        anchors = [(pa, pb) for pa in range(len(a.norm))
                   if (pb := _anchor_in_b(a, b, pa, shared_once, any_word)) is not None]
        for w in movers:
            xa, xb = ia_[w], ib_[w]
            for pa, pb in anchors:
                if (xa < pa and pb < xb and _near(ca, ba, xa, pa) and _near(cb, bb, pb, xb)) or (
                        pa < xa and xb < pb and _near(ca, ba, pa, xa) and _near(cb, bb, xb, pb)):
                    return True
        return False
    # x | anchor | y in a and y | anchor | x in b, each within the window of the anchor: x and
    # y have at most 2 * SWAP_WINDOW - 1 content words between them, and no boundary.
    span = 2 * SWAP_WINDOW - 1
    for i, x in enumerate(movers):  # x before y in a ...
        xa, xb = ia_[x], ib_[x]
        for y in movers[i + 1:]:
            ya, yb = ia_[y], ib_[y]
            if yb > xb:  # ... and in b: not swapped
                continue
            if ca[ya] - ca[xa + 1] > span or ba[ya] != ba[xa + 1]:
                break  # later y are further away in a
            if cb[xb] - cb[yb + 1] > span or bb[xb] != bb[yb + 1]:
                continue
            for pa in range(xa + 1, ya):
                pb = _anchor_in_b(a, b, pa, shared_once, any_word)
                if (pb is not None and yb < pb < xb and _near(ca, ba, xa, pa)
                        and _near(ca, ba, pa, ya) and _near(cb, bb, yb, pb)
                        and _near(cb, bb, pb, xb)):
                    return True
    return False


def _roles(t: _Text, words: frozenset[str]) -> dict[str, str]:
    """For each of ``words``, the relation word just before it (within ``ROLE_WINDOW``
    content words, not past a boundary), if any."""
    roles: dict[str, str] = {}
    rel: str | None = None
    since = 0
    for w, k in zip(t.norm, t.kinds, strict=True):
        if k == _RELATION:
            rel, since = w, 0
        elif k == _BOUNDARY_KIND:
            rel = None
        elif k == _CONTENT:
            if rel is not None and since < ROLE_WINDOW and w in words:
                roles[w] = rel
            since += 1
    return roles


def _opposite_roles(a: _Text, b: _Text) -> bool:
    """A shared word governed by "to" in one text and "from" in the other (before/after,
    above/below)."""
    if _OPPOSITE.keys().isdisjoint(a.relations) or _OPPOSITE.keys().isdisjoint(b.relations):
        return False
    shared_once = a.once & b.once & a.content
    if not shared_once:
        return False
    ra = _roles(a, shared_once)
    if not ra:
        return False
    rb = _roles(b, shared_once)
    for w, r in ra.items():
        other = rb.get(w)
        if other is not None and other in _OPPOSITE.get(r, ()):
            return True
    return False


def _matched(w: str, other_words: frozenset[str]) -> bool:
    if w in other_words:
        return True
    if len(w) < 4:
        return False
    # a name and its derived forms share their first four letters: Iran/Iranian,
    # China/Chinese, Britain/British (Iran/Iraq do not)
    head = w[:4]
    return any(o[:4] == head for o in other_words)


def _unmatched(items: frozenset[str], other_words: frozenset[str]) -> bool:
    return any(not _matched(w, other_words) for w in items)


def _antonym(a: _Text, b: _Text) -> bool:
    for only, other in ((a.words - b.words, b.words), (b.words - a.words, a.words)):
        for w in only:
            for p in _ANTONYM_PREFIXES:
                if w.startswith(p) and len(w) - len(p) >= 3 and w[len(p):] in other:
                    return True
    return False


def _opposites(a: _Text, b: _Text) -> bool:
    only_b = b.words - a.words
    if not only_b:
        return False
    return any(_OPPOSITE_WORDS.get(w, frozenset()) & only_b for w in a.words - b.words)


def _substituted(a: _Text, b: _Text) -> bool:
    """One content word replaced by another in an otherwise aligned context (difflib):
    "a makeshift rocket launcher" / "a makeshift rocket exile"."""
    sm = SequenceMatcher(None, a.norm, b.norm, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "replace" and i2 - i1 == 1 and j2 - j1 == 1:
            wa, wb = a.norm[i1], b.norm[j1]
            if (a.kinds[i1] == _CONTENT and b.kinds[j1] == _CONTENT and wa[:4] != wb[:4]
                    and wb not in a.words and wa not in b.words):
                return True
    return False


def _checks(ta: _Text, tb: _Text, rules: Collection[str]) -> Iterator[str]:
    """The rules (of ``rules``) that refuse the pair, cheapest first, lazily."""
    if "numbers" in rules and _numbers_differ(ta, tb):
        yield "numbers"
    if "digits" in rules and ta.digits != tb.digits:
        yield "digits"
    if "negation" in rules and ta.negations % 2 != tb.negations % 2:
        yield "negation"
    if "antonym" in rules and _antonym(ta, tb):
        yield "antonym"
    if "opposites" in rules and _opposites(ta, tb):
        yield "opposites"
    if "entity" in rules or "entity_added" in rules:
        only_a = _unmatched(ta.entities, tb.words)
        only_b = _unmatched(tb.entities, ta.words)
        if "entity" in rules and only_a and only_b:
            yield "entity"
        if "entity_added" in rules and (only_a or only_b):
            yield "entity_added"
    if "swap" in rules and _swapped(ta, tb):
        yield "swap"
    if "relation_swap" in rules and _swapped(ta, tb, any_word=""):
        yield "relation_swap"
    if "content_swap" in rules and _swapped(ta, tb, any_word="content"):
        yield "content_swap"
    if "substitution" in rules and _substituted(ta, tb):
        yield "substitution"
    if "crossing" in rules and _swapped(ta, tb, single=True):
        yield "crossing"
    if "direction" in rules and _opposite_roles(ta, tb):
        yield "direction"
    if "content" in rules and _unmatched(ta.content, tb.words) and _unmatched(
        tb.content, ta.words
    ):
        yield "content"


def _is_long(a: str, b: str) -> bool:
    return len(a) > LONG_CHARS or len(b) > LONG_CHARS


def verify(a: str, b: str, rules: Collection[str] = DEFAULT_RULES) -> str | None:
    """Why the cached answer for ``a`` must not be served for ``b`` (or the other way round:
    the check is symmetric): the name of the first rule that refuses, or None if none does."""
    if a == b:
        return None
    if "long" in rules and _is_long(a, b):
        return None if normalise_whitespace(a) == normalise_whitespace(b) else "long"
    return next(_checks(_analyse(a), _analyse(b), rules), None)


def refusals(a: str, b: str, rules: Collection[str] = RULES + OPTIONAL_RULES) -> list[str]:
    """Every rule of ``rules`` that refuses the pair (``verify`` stops at the first); for
    measuring what each rule costs and buys."""
    if a == b:
        return []
    if "long" in rules and _is_long(a, b):
        return [] if normalise_whitespace(a) == normalise_whitespace(b) else ["long"]
    return list(_checks(_analyse(a), _analyse(b), rules))


def texts_compatible(a: str, b: str) -> bool:
    """Whether a stored text's answer may be served for a query text (and vice versa): the
    cache's default ``guard``. See ``verify`` and this module's docstring for the rules."""
    return verify(a, b) is None
