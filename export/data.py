"""Training and evaluation data for the dual-head model.

* Category head: MMLU-Pro questions (``load_mmlu``, ``split_mmlu``) plus off-topic chit-chat
  (``offtopic_prompts``) trained towards a uniform target so the head is unsure on it.
* PII head: the presidio-research file (``load_presidio``, ``split_presidio``, held-out
  templates) and our own generated prompts (``generate_pii``), aligned to BIO tags per token
  (``align_bio``).

Everything here is pure and deterministic for a given seed. Splits hash a stable key with
SHA-256 rather than the built-in ``hash()``, which is salted per process.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from export.pii_templates import (
    FAKER_LOCALES,
    NO_PII_TEMPLATES,
    PII_TEMPLATES,
    SLOT_RE,
    Segment,
    SlotFiller,
    template_types,
)
from router_svc.labels import CATEGORIES, PII_TAGS, PII_TYPES

IGNORE_INDEX = -100  # torch's CrossEntropyLoss default ignore_index
NO_PII_FRACTION = 0.15
NO_PII_TEMPLATE_BASE = 1000  # template ids of no-PII templates: kept apart from PII templates


class DataError(ValueError):
    """A data file that cannot be read at all (a bad row is counted and skipped instead)."""


@dataclass(frozen=True)
class CategoryExample:
    text: str
    category: str
    label: int  # index into labels.CATEGORIES


@dataclass(frozen=True)
class Span:
    type: str
    start: int  # character offsets into the text, end exclusive
    end: int


@dataclass
class PiiExample:
    text: str
    spans: list[Span]
    template_id: int | None
    source: str  # "presidio" or "generated"


@dataclass
class DataReport:
    """What a loader read: rows seen, rows used, and rows skipped by reason."""

    source: str
    read: int = 0
    used: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def __str__(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        return f"{self.source}: read {self.read}, used {self.used}, skipped {reasons}"


def _stable_key(seed: int, *parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, (seed, *parts))).encode()).hexdigest()


def _json_lines(path: Path, report: DataReport) -> Iterable[object]:
    """Parsed JSONL rows; undecodable or unparsable lines are counted, not raised."""
    with open(path, "rb") as f:
        for raw in f:
            if not raw.strip():
                continue  # blank lines are not rows
            report.read += 1
            try:
                yield json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                report.skip("bad_encoding")
            except json.JSONDecodeError:
                report.skip("bad_json")


# -- MMLU-Pro ---------------------------------------------------------------------------------


def load_mmlu(path: str | Path) -> tuple[list[CategoryExample], DataReport]:
    """MMLU-Pro rows (``question``, ``category``) as examples; bad rows counted and skipped.

    Repeated questions are dropped: MMLU-Pro reuses a stem with different options, and we see
    only the stem, so a repeat is a duplicate that could land on both sides of a split.
    """
    report = DataReport(source=str(path))
    index = {c: i for i, c in enumerate(CATEGORIES)}
    seen: set[str] = set()
    out: list[CategoryExample] = []
    for row in _json_lines(Path(path), report):
        if not isinstance(row, dict):
            report.skip("not_object")
            continue
        question, category = row.get("question"), row.get("category")
        if not isinstance(question, str) or not question.strip():
            report.skip("missing_question")
            continue
        if not isinstance(category, str) or not category.strip():
            report.skip("missing_category")
            continue
        category = category.strip().lower()
        if category not in index:
            report.skip("unknown_category")
            continue
        text = question.strip()
        if text in seen:
            report.skip("duplicate_question")
            continue
        seen.add(text)
        out.append(CategoryExample(text=text, category=category, label=index[category]))
        report.used += 1
    return out, report


def split_mmlu(
    examples: Sequence[CategoryExample], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[CategoryExample], list[CategoryExample]]:
    """(train, val), stratified by category; the same for the same input whatever the order.

    Each category is ordered by a SHA-256 of (seed, category, text) and its first
    ``round(n * val_fraction)`` examples (at least one where the category has two) go to val.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    by_cat: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_cat[ex.category].append(i)
    val_ids: set[int] = set()
    for cat, ids in by_cat.items():
        ids.sort(key=lambda i: (_stable_key(seed, cat, examples[i].text), i))
        k = round(len(ids) * val_fraction)
        if val_fraction > 0 and k == 0 and len(ids) >= 2:
            k = 1  # a category absent from val could never be measured
        val_ids.update(ids[:k])
    train = [ex for i, ex in enumerate(examples) if i not in val_ids]
    val = [ex for i, ex in enumerate(examples) if i in val_ids]
    return train, val


# -- presidio-research file -------------------------------------------------------------------


def _presidio_row(row: object, report: DataReport, source: str) -> PiiExample | None:
    if not isinstance(row, dict):
        report.skip("not_object")
        return None
    text, raw_spans = row.get("full_text"), row.get("spans", [])
    if not isinstance(text, str) or not text:
        report.skip("missing_text")
        return None
    if not isinstance(raw_spans, list):
        report.skip("bad_spans")
        return None
    spans: list[Span] = []
    for s in raw_spans:
        start = s.get("start_position") if isinstance(s, dict) else None
        end = s.get("end_position") if isinstance(s, dict) else None
        kind = s.get("entity_type") if isinstance(s, dict) else None
        # bool is an int subclass; True as an offset is a broken row, not offset 1.
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
            report.skip("bad_spans")
            return None
        if not 0 <= start < end <= len(text):
            report.skip("span_out_of_range")
            return None
        if kind not in PII_TYPES:
            report.skip("unknown_type")
            return None
        spans.append(Span(kind, start, end))  # text[start:end] is the truth, not entity_value
    spans.sort(key=lambda sp: (sp.start, sp.end))
    if any(b.start < a.end for a, b in itertools.pairwise(spans)):
        report.skip("overlapping_spans")
        return None
    tid = row.get("template_id")
    tid = tid if isinstance(tid, int) and not isinstance(tid, bool) else None
    return PiiExample(text=text, spans=spans, template_id=tid, source=source)


def load_presidio(
    path: str | Path, source: str = "presidio"
) -> tuple[list[PiiExample], DataReport]:
    """presidio-research rows (a JSON list, or JSONL) as examples; bad rows counted, skipped."""
    path = Path(path)
    report = DataReport(source=str(path))
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    if path.suffix == ".jsonl" or not head.startswith(b"["):
        rows: Iterable[object] = _json_lines(path, report)
    else:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            # One broken list cannot be read row by row: say so rather than train on nothing.
            raise DataError(f"{path}: not valid JSON ({e}); expected a list of rows") from e
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
        report.read = len(data)
        rows = data
    out: list[PiiExample] = []
    for row in rows:
        ex = _presidio_row(row, report, source)
        if ex is not None:
            out.append(ex)
            report.used += 1
    return out, report


def split_presidio(
    examples: Sequence[PiiExample], test_fraction: float = 0.25, seed: int = 0
) -> tuple[list[PiiExample], list[PiiExample]]:
    """(train, test) grouped by template: every row of a template lands on one side.

    Rows of one template share their wording, so a random row split would test on sentences
    the model has all but seen. Templates are ordered by a SHA-256 of (seed, template id) and
    go to test until it holds ``test_fraction`` of the rows. Rows without a template id are
    groups of one, keyed by their text.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")

    def group(ex: PiiExample) -> str:
        return f"t{ex.template_id}" if ex.template_id is not None else f"x{ex.text}"

    sizes = Counter(group(ex) for ex in examples)
    target = round(len(examples) * test_fraction)
    test_groups: set[str] = set()
    taken = 0
    for g in sorted(sizes, key=lambda g: _stable_key(seed, g)):
        if taken >= target:
            break
        test_groups.add(g)
        taken += sizes[g]
    train = [ex for ex in examples if group(ex) not in test_groups]
    test = [ex for ex in examples if group(ex) in test_groups]
    return train, test


# -- generated PII prompts --------------------------------------------------------------------


def fill_template(template: str, fill: Callable[[str], list[Segment]]) -> list[Segment]:
    """The template as segments; ``{{slot#k}}`` markers repeat one value within the template."""
    segs: list[Segment] = []
    repeated: dict[str, list[Segment]] = {}
    pos = 0
    for m in SLOT_RE.finditer(template):
        if m.start() > pos:
            segs.append((template[pos:m.start()], None))
        marker = m.group(0)
        if "#" in marker:
            if marker not in repeated:
                repeated[marker] = fill(m.group(1))
            segs.extend(repeated[marker])
        else:
            segs.extend(fill(m.group(1)))
        pos = m.end()
    if pos < len(template):
        segs.append((template[pos:], None))
    return segs


def render_segments(segments: Iterable[Segment]) -> tuple[str, list[Span]]:
    """Concatenate segments; each typed segment becomes a span at its exact offsets."""
    parts: list[str] = []
    spans: list[Span] = []
    pos = 0
    for text, kind in segments:
        if kind is not None:
            if not text.strip():
                continue  # an empty value would be a zero-width span
            lead = len(text) - len(text.lstrip())  # spans never start or end on whitespace
            spans.append(Span(kind, pos + lead, pos + len(text.rstrip())))
        parts.append(text)
        pos += len(text)
    return "".join(parts), spans


_STRIP_PUNCT = str.maketrans("", "", ".,;:!?\"'")


def _augment(segments: list[Segment], rng: random.Random) -> list[Segment]:
    """Casual user text: sometimes all lower case, sometimes no punctuation around the values.

    Applied per segment, before offsets are computed, so spans stay exact. Punctuation is only
    removed from plain text, never from a value (an email without its dots is not an email).
    """
    r = rng.random()
    if r < 0.08:
        return [(t.lower(), k) for t, k in segments]
    if r < 0.13:
        return [(t if k else t.translate(_STRIP_PUNCT).lower(), k) for t, k in segments]
    return segments


@functools.lru_cache(maxsize=1)
def _faker():
    from faker import Faker  # a build-only dependency: imported when generating

    # Building the multi-locale Faker takes about a second; it is reseeded on every use.
    return Faker(list(FAKER_LOCALES))


def generate_pii(n: int, seed: int) -> list[PiiExample]:
    """``n`` synthetic prompts with exact PII spans; the same list for the same seed.

    Each row first draws a PII type uniformly and then a template that can yield it, so rare
    types (driver licences, IBANs, SSNs) get as many rows as common ones; about 15% of rows
    come from templates with no PII at all.
    """
    rng = random.Random(seed)
    fake = _faker()
    for i, loc in enumerate(FAKER_LOCALES):
        # Distinct seeds per locale: one shared seed makes every locale draw the same digits.
        fake[loc].seed_instance(seed * 1009 + i)
    filler = SlotFiller(rng, fake)
    by_type = _templates_by_type()
    out: list[PiiExample] = []
    for _ in range(n):
        if rng.random() < NO_PII_FRACTION:
            idx = rng.randrange(len(NO_PII_TEMPLATES))
            template, tid = NO_PII_TEMPLATES[idx], NO_PII_TEMPLATE_BASE + idx
        else:
            tid = rng.choice(by_type[rng.choice(PII_TYPES)])
            template = PII_TEMPLATES[tid]
        text, spans = render_segments(_augment(fill_template(template, filler), rng))
        out.append(PiiExample(text=text, spans=spans, template_id=tid, source="generated"))
    return out


@functools.lru_cache(maxsize=1)
def _templates_by_type() -> dict[str, tuple[int, ...]]:
    by_type: dict[str, list[int]] = defaultdict(list)
    for i, template in enumerate(PII_TEMPLATES):
        for kind in template_types(template):
            by_type[kind].append(i)
    missing = [t for t in PII_TYPES if t not in by_type]
    if missing:
        raise RuntimeError(f"no template yields {missing}")
    return {k: tuple(v) for k, v in by_type.items()}


def summarise_types(examples: Iterable[PiiExample]) -> dict[str, int]:
    """Spans per PII type, every type listed (zero included) in label order."""
    counts = Counter(s.type for ex in examples for s in ex.spans)
    out = {t: counts.pop(t, 0) for t in PII_TYPES}
    out.update(sorted(counts.items()))  # types outside the label set still show up
    return out


# -- off-topic prompts ------------------------------------------------------------------------

_GREETINGS = ("hi", "hello", "hey", "hey there", "hi there", "good morning", "good afternoon",
              "good evening", "morning", "yo", "hiya", "howdy", "greetings", "hello again", "sup")
_ADDRESSEES = ("", "", "", " bot", " friend", " assistant", " buddy", " everyone", " mate")
_SMALL_TALK = (
    "how are you today?", "how's it going?", "what's up?", "how was your weekend?",
    "tell me a joke", "tell me something funny", "do you like music?", "what's your name?",
    "are you a robot?", "who made you?", "what can you do?", "can you help me?", "i'm bored",
    "nice to meet you", "just saying hi", "are you there?", "do you have feelings?",
    "what's your favourite colour?", "can we chat for a bit?", "i had a long day",
    "happy friday!", "how's your day going?", "what should we talk about?",
    "do you ever sleep?", "are you real?", "what are you up to?", "long time no see",
    "tell me a fun fact", "make me laugh", "say something nice", "do you dream?",
    "what's new?", "how have you been?", "i'm back", "guess what", "wanna chat?",
    "you there?", "can i ask you something?", "what do you like to do for fun?",
    # Connectivity checks people send to a new endpoint before asking anything.
    "ping", "just testing", "test message, please ignore", "is this working?", "hello world",
    "mic check", "can you see this?", "is this thing on?", "sending a test", "check check",
)
_CLOSINGS = (
    "thanks!", "thank you so much", "thanks a lot", "that was helpful, thanks", "you're awesome",
    "good night", "bye", "see you later", "ok cool", "never mind", "lol", "perfect, thanks",
    "great job", "cheers", "talk soon", "have a nice day", "ok", "got it",
)
_EMOJI = ("", "", "", " :)", " 😊", " 👋", " !!", " haha")


def offtopic_prompts(n: int, seed: int) -> list[str]:
    """``n`` greetings / small talk / thanks, from templates; the same list for the same seed.

    Distinct where the template space allows; repeats only once it is exhausted.
    """
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    for _ in range(n):
        for _attempt in range(20):
            text = _one_offtopic(rng)
            if text not in seen:
                break
        seen.add(text)
        out.append(text)
    return out


def _one_offtopic(rng: random.Random) -> str:
    greet = rng.choice(_GREETINGS) + rng.choice(_ADDRESSEES)
    shape = rng.random()
    if shape < 0.15:
        text = greet + rng.choice(("", "!", ".", "!!"))
    elif shape < 0.55:
        text = f"{greet}{rng.choice((', ', '! ', '. ', ' '))}{rng.choice(_SMALL_TALK)}"
    elif shape < 0.75:
        text = rng.choice(_SMALL_TALK)
    elif shape < 0.9:
        text = rng.choice(_CLOSINGS)
    else:
        text = f"{rng.choice(_CLOSINGS)}{rng.choice((', ', '! ', ' '))}{rng.choice(_SMALL_TALK)}"
    text += rng.choice(_EMOJI)
    case = rng.random()
    if case < 0.4:
        text = text[0].upper() + text[1:]
    elif case < 0.45:
        text = text.upper()
    return text


# -- BIO alignment ----------------------------------------------------------------------------


def align_bio(
    text: str,
    spans: Sequence[Span],
    offsets: Sequence[tuple[int, int]],
    tags: Sequence[str] = PII_TAGS,
) -> list[int]:
    """The tag id of each token, from character spans and the tokenizer's character offsets.

    Special tokens ((0, 0) offsets: [CLS], [SEP], [PAD]) get ``IGNORE_INDEX``. A token that
    overlaps a span is ``B-X`` if it is the first token of that span seen, ``I-X`` if the token
    before it was in the same span; everything else is ``O``.
    """
    index = {t: i for i, t in enumerate(tags)}
    ordered = sorted(spans, key=lambda s: (s.start, s.end))
    for s in ordered:
        if not 0 <= s.start < s.end <= len(text):
            raise ValueError(f"span {s} outside a text of {len(text)} characters")
        if f"B-{s.type}" not in index:
            raise ValueError(f"span type {s.type!r} has no tag in {list(tags)[:3]}...")
    out: list[int] = []
    prev: int | None = None  # the span the previous token belonged to
    for start, end in offsets:
        if start == end:
            out.append(IGNORE_INDEX)
            prev = None
            continue
        hit = next((i for i, s in enumerate(ordered) if s.start < end and start < s.end), None)
        if hit is None:
            out.append(index["O"])
        else:
            prefix = "I-" if hit == prev else "B-"
            out.append(index[prefix + ordered[hit].type])
        prev = hit
    return out


# Appended to a PiiExample's source when it is set among unrelated sentences.
CONTEXT_SUFFIX = "+context"


def embed_in_context(example: PiiExample, before: str, after: str) -> PiiExample:
    """The example inside unrelated text, spans shifted: PII in a long prompt sits among
    benign sentences, and the model must still score it as it would alone."""
    prefix = f"{before} " if before else ""
    text = f"{prefix}{example.text} {after}".rstrip()
    shift = len(prefix)
    spans = [Span(s.type, s.start + shift, s.end + shift) for s in example.spans]
    return PiiExample(text, spans, example.template_id, example.source + CONTEXT_SUFFIX)


JOINED_SUFFIX = "+joined"
JOINERS = ("\n", "\n", " ", "\n\n", "\n- ", "; ")


def concat_examples(parts: Sequence[PiiExample], joiner: str, source: str,
                    template_id: int | None = None) -> PiiExample:
    """``parts`` one after another with ``joiner`` between them, every span shifted."""
    text, spans = "", []
    for e in parts:
        shift = len(text) + (len(joiner) if text else 0)
        text = f"{text}{joiner}{e.text}" if text else e.text
        spans += [Span(sp.type, sp.start + shift, sp.end + shift) for sp in e.spans]
    return PiiExample(text, spans, template_id, source)


def joined_examples(examples: Sequence[PiiExample], count: int, seed: int,
                    parts: tuple[int, int] = (2, 4)) -> list[PiiExample]:
    """``count`` rows of ``parts`` random examples one after another (a list, a log, an e-mail
    with its signature: a long prompt holds more than one piece of PII), spans shifted. Trained
    on single records only, the model lost most names and dates a few lines into such a text."""
    rng = random.Random(seed)
    out = []
    for _ in range(count if examples else 0):
        chosen = [rng.choice(examples) for _ in range(rng.randint(*parts))]
        out.append(concat_examples(chosen, rng.choice(JOINERS), chosen[0].source + JOINED_SUFFIX))
    return out


def long_texts(examples: Sequence[PiiExample], tokens: int, count_tokens: Callable[[str], int],
               seed: int = 0) -> list[PiiExample]:
    """The examples, shuffled, one per line in texts of at least ``tokens`` tokens (the last
    may be shorter): an evaluation of PII a few lines into a long prompt."""
    order = list(examples)
    random.Random(seed).shuffle(order)
    out: list[PiiExample] = []
    group: list[PiiExample] = []
    have = 0
    for e in order:
        group.append(e)
        have += count_tokens(e.text) + 1
        if have >= tokens:
            out.append(concat_examples(group, "\n", e.source + JOINED_SUFFIX, len(out)))
            group, have = [], 0
    if group:
        out.append(concat_examples(group, "\n", group[-1].source + JOINED_SUFFIX, len(out)))
    return out


def with_context(examples: Sequence[PiiExample], context: Sequence[str], fraction: float,
                 seed: int) -> list[PiiExample]:
    """A copy of ``fraction`` of the examples embedded between random context sentences."""
    rng = random.Random(seed)
    out = []
    for e in examples:
        if rng.random() < fraction and context:
            out.append(embed_in_context(e, rng.choice(context), rng.choice(context)))
    return out
