"""Training pairs for the cache's hit verifier (``export/pair_verifier.py``).

The cache must serve an answer only for a text that asks the same thing. Paraphrase data (MRPC,
STS, SICK: the development splits only) gives real paraphrases and real near-misses; it has few
of the near-duplicates a pooled embedding cannot tell apart, so each paraphrase also yields
meaning-changed copies made here without a parser: arguments traded around a relation word or a
verb-like middle, two names swapped, a direction flipped, a name, number or negation changed, a
word given its opposite. Surface-only edits (case, punctuation, spacing, a contraction) are
positives: a repeated prompt typed again must still hit. Questions (MMLU-Pro stems) give the
same edits in the register cache traffic is in.

Everything here is pure: text in, text out, with a ``random.Random`` for choices.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Words around which two arguments trade places and change the meaning ("X to Y" / "Y to X").
RELATIONS = ("to", "into", "from", "than", "over", "against", "beat", "beats", "defeated",
             "about", "for", "by", "before", "after", "above", "below", "of", "on", "versus",
             "vs", "toward", "towards", "onto", "through")
# Pairs of words with opposite direction or sense; either member is replaced by the other.
OPPOSITES = (("to", "from"), ("into", "out of"), ("before", "after"), ("above", "below"),
             ("more", "less"), ("increase", "decrease"), ("increases", "decreases"),
             ("increased", "decreased"), ("buy", "sell"), ("bought", "sold"), ("win", "lose"),
             ("won", "lost"), ("higher", "lower"), ("up", "down"), ("larger", "smaller"),
             ("maximum", "minimum"), ("first", "last"), ("import", "export"),
             ("inside", "outside"), ("open", "close"), ("hot", "cold"), ("early", "late"),
             ("rise", "fall"), ("rose", "fell"), ("positive", "negative"), ("true", "false"),
             ("always", "never"), ("all", "none"), ("add", "remove"), ("gain", "loss"),
             ("north", "south"), ("east", "west"), ("left", "right"), ("start", "end"),
             ("accept", "reject"), ("allow", "forbid"), ("male", "female"), ("best", "worst"))
_OPPOSITE = {a: b for a, b in OPPOSITES} | {b: a for a, b in OPPOSITES}
AUXILIARIES = ("is", "are", "was", "were", "can", "could", "will", "would", "should", "does",
               "do", "did", "has", "have", "had", "must", "may", "might")
NEGATING_PREFIXES = ("un", "in", "im", "dis", "non-", "ir", "il")
ADJECTIVES_FOR_PREFIX = ("safe", "likely", "able", "fair", "known", "usual", "possible",
                         "correct", "legal", "responsible", "healthy", "stable", "available",
                         "relevant", "regular", "complete", "certain", "clear", "common",
                         "necessary", "important", "happy", "kind", "lucky", "official")
_SYMMETRIC = frozenset({"and", "or", "with", "between", "nor", "&"})
_STOP_WORDS = ("a an the this that these those is are was were be been being of in on at to for "
               "by with from as and or but if then than so it its they them their he she his "
               "her we our you your i me my what which who whom whose how why when where do "
               "does did not no")
_STOP = frozenset(_STOP_WORDS.split())
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'\-]*|\d+(?:[.,]\d+)*|\S")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


@dataclass(frozen=True)
class LabelledPair:
    a: str
    b: str
    label: int  # 1: the same question or statement; 0: an answer to one is wrong for the other
    kind: str  # where it came from: "mrpc", "identity", "swap", "negation", ...
    target: float | None = None  # a graded training target (STS scores); None: the label


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text)


def _join(tokens: Sequence[str]) -> str:
    out = ""
    for t in tokens:
        if out and not (len(t) == 1 and t in ".,;:!?)]}'\"%") and not out.endswith(("(", "[", "$")):
            out += " "
        out += t
    return out


def _case_like(new: str, old: str) -> str:
    return new[:1].upper() + new[1:] if old[:1].isupper() else new


def _content(tok: str) -> bool:
    return tok[:1].isalnum() and tok.lower() not in _STOP


def swap_around_relation(text: str, rng: random.Random) -> str | None:
    """Trade the words on either side of a relation word: "convert X to Y" / "convert Y to X"."""
    toks = _tokens(text)
    spots = [i for i, t in enumerate(toks) if t.lower() in RELATIONS
             and 0 < i < len(toks) - 1 and _content(toks[i - 1]) and _content(toks[i + 1])]
    if not spots:
        return None
    i = rng.choice(spots)
    left, right = toks[i - 1], toks[i + 1]
    if left.lower() == right.lower():
        return None
    toks[i - 1], toks[i + 1] = _case_like(right, left), _case_like(left, right)
    return _join(toks)


def swap_content_words(text: str, rng: random.Random) -> str | None:
    """Trade two content words that are not joined by a symmetric word ("the dog chased the cat"
    / "the cat chased the dog")."""
    toks = _tokens(text)
    idx = [i for i, t in enumerate(toks) if _content(t) and t[:1].isalpha() and len(t) > 2]
    if len(idx) < 2:
        return None
    for _ in range(6):
        i, j = sorted(rng.sample(idx, 2))
        between = {t.lower() for t in toks[i + 1:j]}
        # Same shape (two names or two common words), not joined by "and"/"or"/"with".
        if (toks[i].lower() == toks[j].lower() or toks[i][:1].isupper() != toks[j][:1].isupper()
                or (j - i <= 2 and between & _SYMMETRIC)):
            continue
        toks[i], toks[j] = _case_like(toks[j], toks[i]), _case_like(toks[i], toks[j])
        return _join(toks)
    return None


def _names(toks: Sequence[str]) -> list[int]:
    return [i for i, t in enumerate(toks) if i > 0 and t[:1].isupper() and t[1:2].islower()
            and toks[i - 1] not in ".!?\""]


def swap_names(text: str, rng: random.Random) -> str | None:
    toks = _tokens(text)
    idx = [i for i in _names(toks)]
    distinct = {toks[i] for i in idx}
    if len(distinct) < 2:
        return None
    i, j = rng.sample(idx, 2)
    if toks[i] == toks[j]:
        return None
    toks[i], toks[j] = toks[j], toks[i]
    return _join(toks)


def change_name(text: str, rng: random.Random, names: Sequence[str]) -> str | None:
    toks = _tokens(text)
    idx = _names(toks)
    if not idx or not names:
        return None
    i = rng.choice(idx)
    new = rng.choice(names)
    if new == toks[i]:
        return None
    toks[i] = new
    return _join(toks)


def flip_direction(text: str, rng: random.Random) -> str | None:
    toks = _tokens(text)
    # "to" and "from" only before a name or a number ("to Paris"), not an infinitive ("to go").
    idx = [i for i, t in enumerate(toks) if t.lower() in _OPPOSITE and (
        t.lower() not in ("to", "from")
        or (i + 1 < len(toks) and (toks[i + 1][:1].isupper() or toks[i + 1][:1].isdigit())))]
    if not idx:
        return None
    i = rng.choice(idx)
    toks[i] = _case_like(_OPPOSITE[toks[i].lower()], toks[i])
    return _join(toks)


def change_number(text: str, rng: random.Random) -> str | None:
    spots = list(_NUMBER.finditer(text))
    if not spots:
        return None
    m = rng.choice(spots)
    digits = m.group().replace(",", "")
    try:
        value = float(digits)
    except ValueError:
        return None
    step = rng.choice((1, 2, 3, 5, 10)) * rng.choice((-1, 1)) if value > 10 else rng.randint(1, 9)
    new = value + step
    new_text = f"{new:g}" if "." in digits else str(int(new))
    if new_text == digits:
        return None
    return text[:m.start()] + new_text + text[m.end():]


def toggle_negation(text: str, rng: random.Random) -> str | None:
    toks = _tokens(text)
    neg = [i for i, t in enumerate(toks) if t.lower() in ("not", "never")]
    if neg:
        del toks[rng.choice(neg)]
        return _join(toks)
    for i, t in enumerate(toks):
        if t.lower().endswith("n't"):
            whole = {"can't": "can", "won't": "will"}
            toks[i] = whole.get(t.lower(), t[:-3])
            return _join(toks)
    aux = [i for i, t in enumerate(toks) if t.lower() in AUXILIARIES]
    if not aux:
        return None
    i = rng.choice(aux)
    # "Is it possible" / "How do I convert": after the subject when the auxiliary leads a question.
    question = i == 0 or toks[i - 1].lower() in ("what", "how", "why", "when", "where", "who",
                                                  "which")
    toks.insert(i + 2 if question and i + 2 <= len(toks) else i + 1, "not")
    return _join(toks)


def negate_adjective(text: str, rng: random.Random) -> str | None:
    toks = _tokens(text)
    idx = [i for i, t in enumerate(toks) if t.lower() in ADJECTIVES_FOR_PREFIX]
    if not idx:
        return None
    i = rng.choice(idx)
    prefix = {"possible": "im", "legal": "il", "regular": "ir", "responsible": "ir",
              "correct": "in", "complete": "in", "stable": "un", "relevant": "ir",
              "official": "un"}.get(toks[i].lower(), "un")
    toks[i] = prefix + toks[i].lower()
    return _join(toks)


PERTURBATIONS = {
    "swap_relation": swap_around_relation,
    "swap_words": swap_content_words,
    "swap_names": swap_names,
    "direction": flip_direction,
    "number": change_number,
    "negation": toggle_negation,
    "antonym": negate_adjective,
}


def surface_edit(text: str, rng: random.Random) -> str:
    """The same text typed again: case, end punctuation, spacing, a question mark, a polite
    prefix or a contraction changed. Never a change of meaning."""
    edits = [
        lambda t: t.lower(),
        lambda t: t.rstrip(".?! ") if t.rstrip()[-1:] in ".?!" else t + "?",
        lambda t: re.sub(r"\s+", "  ", t, count=2),
        lambda t: "Please: " + t,
        lambda t: t.replace(" do not ", " don't ").replace(" is not ", " isn't ")
        .replace(" does not ", " doesn't "),
        lambda t: t[:1].upper() + t[1:] if t[:1].islower() else t[:1].lower() + t[1:],
        lambda t: t + " Thanks.",
    ]
    out = text
    for e in rng.sample(edits, rng.randint(1, 2)):
        out = e(out)
    return out if out != text else text + " "


def perturbed(text: str, rng: random.Random, names: Sequence[str],
              kinds: Iterable[str] | None = None) -> tuple[str, str] | None:
    """One meaning-changed copy of ``text`` and the kind of change, or None if none applies."""
    ks = list(kinds) if kinds is not None else [*PERTURBATIONS, "name"]
    rng.shuffle(ks)
    for k in ks:
        out = change_name(text, rng, names) if k == "name" else PERTURBATIONS[k](text, rng)
        if out and out.strip() != text.strip():
            return out, k
    return None


def names_in(texts: Iterable[str], limit: int = 5000) -> list[str]:
    """Capitalised words inside sentences (candidate names for ``change_name``)."""
    seen: dict[str, None] = {}
    for t in texts:
        toks = _tokens(t)
        for i in _names(toks):
            seen.setdefault(toks[i], None)
            if len(seen) >= limit:
                return list(seen)
    return list(seen)
