"""Training and evaluation data: loaders, splits, generated PII, BIO alignment."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import random
import re
import subprocess
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from export import data
from export.data import PiiExample, Span
from export.pii_templates import (
    HONORIFICS,
    LOCALE_COUNTRY,
    NO_PII_TEMPLATES,
    PII_TEMPLATES,
    PLACE_LOCALES,
    SLOT_RE,
    SLOT_TYPES,
    _transliterate,
)
from router_svc.classify.pii import passes_iban_check, passes_luhn
from router_svc.labels import CATEGORIES, PII_TAGS, PII_TYPES

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
MMLU = SHARED / "mmlu_pro" / "questions.jsonl"
PRESIDIO = SHARED / "pii" / "synth_dataset_v2.json"
ROOT = Path(__file__).resolve().parents[2]

@pytest.fixture(scope="module")
def generated() -> list[PiiExample]:
    return data.generate_pii(3000, 0)


@pytest.fixture(scope="module")
def tokenizer():
    import tokenizers

    from export.backbone import minilm_path

    tok = tokenizers.Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def _digest(examples) -> str:
    return hashlib.sha256("\n".join(sorted(e.text for e in examples)).encode()).hexdigest()


# -- MMLU-Pro ---------------------------------------------------------------------------------


def test_load_mmlu_real_file_counts_every_row():
    examples, report = data.load_mmlu(MMLU)
    assert report.read == 9986
    assert report.used == len(examples) == report.read - report.skipped_total
    # MMLU-Pro repeats question stems (the options differ); we keep one of each.
    assert set(report.skipped) <= {"duplicate_question"}
    assert {e.category for e in examples} == set(CATEGORIES)
    assert all(CATEGORIES[e.label] == e.category for e in examples)
    assert len({e.text for e in examples}) == len(examples)


def test_load_mmlu_counts_bad_rows_instead_of_failing(tmp_path):
    good = {"question": "What is 2+2?", "category": "math"}
    lines = [
        json.dumps(good).encode(),
        b"{not json",
        json.dumps({"category": "math"}).encode(),  # no question
        json.dumps({"question": "  ", "category": "math"}).encode(),  # empty question
        json.dumps({"question": "Why?", "category": ""}).encode(),  # empty category
        json.dumps({"question": "Why?", "category": "astrology"}).encode(),
        json.dumps(["a", "list"]).encode(),
        b'{"question": "caf\xe9", "category": "other"}',  # latin-1 byte, not UTF-8
        b"",  # blank lines are not rows
        json.dumps(good).encode(),  # a repeat
        json.dumps({"question": "Define GDP.", "category": " Economics "}).encode(),
    ]
    path = tmp_path / "q.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    examples, report = data.load_mmlu(path)
    assert [e.text for e in examples] == ["What is 2+2?", "Define GDP."]
    assert examples[1].category == "economics"
    assert examples[1].label == CATEGORIES.index("economics")
    assert report.read == 10 and report.used == 2
    assert report.skipped == {
        "bad_json": 1, "missing_question": 2, "missing_category": 1, "unknown_category": 1,
        "not_object": 1, "bad_encoding": 1, "duplicate_question": 1,
    }
    assert "unknown_category=1" in str(report)


def test_split_mmlu_is_stratified_and_deterministic():
    examples, _ = data.load_mmlu(MMLU)
    train, val = data.split_mmlu(examples, val_fraction=0.1, seed=0)
    assert len(train) + len(val) == len(examples)
    assert not {e.text for e in train} & {e.text for e in val}
    total, in_val = Counter(e.category for e in examples), Counter(e.category for e in val)
    for cat in CATEGORIES:  # every category holds its share, to within rounding
        assert abs(in_val[cat] - total[cat] * 0.1) <= 1, cat
    # The same split again, and from shuffled input: it does not depend on row order.
    assert data.split_mmlu(examples, 0.1, 0) == (train, val)
    shuffled = examples[:]
    random.Random(5).shuffle(shuffled)
    assert _digest(data.split_mmlu(shuffled, 0.1, 0)[1]) == _digest(val)
    # Another seed is another split.
    assert _digest(data.split_mmlu(examples, 0.1, 1)[1]) != _digest(val)


def test_splits_and_generation_do_not_depend_on_the_hash_seed(generated):
    # Built-in hash() is salted per process; a split or generator using it would differ here.
    examples, _ = data.load_mmlu(MMLU)
    here = [_digest(data.split_mmlu(examples, 0.1, 0)[1]), _digest(generated)]
    code = (
        "import hashlib; from export import data\n"
        "def d(v):\n"
        "    return hashlib.sha256('\\n'.join(sorted(e.text for e in v)).encode()).hexdigest()\n"
        f"ex, _ = data.load_mmlu({str(MMLU)!r})\n"
        "print(d(data.split_mmlu(ex, 0.1, 0)[1])); print(d(data.generate_pii(3000, 0)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.split() == here


def test_split_mmlu_keeps_a_small_category_in_val():
    examples = [data.CategoryExample(f"q{i}", "law", CATEGORIES.index("law")) for i in range(3)]
    train, val = data.split_mmlu(examples, val_fraction=0.1)
    assert len(val) == 1 and len(train) == 2


# -- presidio-research file -------------------------------------------------------------------


def test_load_presidio_real_file():
    examples, report = data.load_presidio(PRESIDIO)
    assert report.read == 1500 and report.used == len(examples) == 1500
    rows = json.loads(PRESIDIO.read_text())
    assert sum(len(e.spans) for e in examples) == sum(len(r["spans"]) for r in rows)
    assert all(e.template_id is not None and e.source == "presidio" for e in examples)
    assert {s.type for e in examples for s in e.spans} == set(PII_TYPES)
    for e in examples:
        assert all(a.end <= b.start for a, b in zip(e.spans, e.spans[1:], strict=False))


def _row(text, spans, tid=1):
    return {"full_text": text, "template_id": tid, "spans": [
        {"entity_type": t, "entity_value": text[s:e].lower(), "start_position": s,
         "end_position": e} for t, s, e in spans]}


def _bad_rows():
    return [
        _row("Call Ann Lee now", [("PERSON", 5, 12)]),
        _row("short", [("PERSON", 2, 9)]),  # out of range
        _row("Ann Lee", [("PERSON", 0, 7), ("PERSON", 4, 7)]),  # overlapping
        _row("Ann Lee", [("PASSPORT", 0, 7)]),  # not one of our types
        {"spans": []},  # no text
        _row("Ann Lee", [("PERSON", 0, True)]),
        _row("Email ME@X.ORG please", [("EMAIL_ADDRESS", 6, 14)], tid=None),
    ]


def test_load_presidio_jsonl_counts_bad_rows(tmp_path):
    path = tmp_path / "pii.jsonl"
    lines = [json.dumps(r) for r in _bad_rows()] + ["{broken"]
    path.write_text("\n".join(lines) + "\n")
    examples, report = data.load_presidio(path)
    assert report.read == 8 and report.used == 2
    assert report.skipped == {"span_out_of_range": 1, "overlapping_spans": 1, "unknown_type": 1,
                              "missing_text": 1, "bad_spans": 1, "bad_json": 1}
    first, second = examples
    assert first.spans == [Span("PERSON", 5, 12)] and first.template_id == 1
    # The span text comes from full_text, not from the (lower-cased) entity_value.
    assert second.text[second.spans[0].start:second.spans[0].end] == "ME@X.ORG"
    assert second.template_id is None


def test_load_presidio_json_list_and_broken_file(tmp_path):
    path = tmp_path / "pii.json"
    path.write_text(json.dumps(_bad_rows()))
    examples, report = data.load_presidio(path)
    assert (report.read, report.used, report.skipped_total) == (7, 2, 5)
    assert len(examples) == 2
    path.write_text('[{"full_text": "x", ')
    with pytest.raises(data.DataError, match="not valid JSON"):
        data.load_presidio(path)


def test_split_presidio_keeps_each_template_on_one_side():
    examples, _ = data.load_presidio(PRESIDIO)
    train, test = data.split_presidio(examples, test_fraction=0.25, seed=0)
    assert len(train) + len(test) == len(examples)
    assert not {e.template_id for e in train} & {e.template_id for e in test}
    assert 0.2 <= len(test) / len(examples) <= 0.35
    assert data.split_presidio(examples, 0.25, 0) == (train, test)
    assert data.split_presidio(list(reversed(examples)), 0.25, 0)[1] == list(reversed(test))
    other = data.split_presidio(examples, 0.25, 1)[1]
    assert {e.template_id for e in other} != {e.template_id for e in test}


def test_split_presidio_rows_without_template_are_their_own_group():
    examples = [PiiExample(f"row {i}", [], None, "presidio") for i in range(40)]
    train, test = data.split_presidio(examples, test_fraction=0.25)
    assert len(test) == 10 and len(train) == 30


# -- generated PII ----------------------------------------------------------------------------


def test_templates_are_many_varied_and_well_formed():
    assert len(PII_TEMPLATES) >= 120 and len(set(PII_TEMPLATES)) == len(PII_TEMPLATES)
    for template in PII_TEMPLATES + NO_PII_TEMPLATES:
        for name in SLOT_RE.findall(template):
            assert name in SLOT_TYPES, (name, template)
    # No-PII templates use filler slots only, so they can never produce a span.
    assert all(not SLOT_TYPES[n] for t in NO_PII_TEMPLATES for n in SLOT_RE.findall(t))
    per_type = Counter(k for t in PII_TEMPLATES for k in data.template_types(t))
    assert all(per_type[t] >= 4 for t in PII_TYPES), per_type


def test_templates_do_not_copy_the_held_out_wording():
    # The held-out file was generated from presidio-evaluator's templates: reusing their wording
    # would let the model memorise the test. No four-word run of plain text may be shared.
    def runs(text: str) -> set[tuple[str, ...]]:
        words = re.findall(r"[a-z']+", text.lower())
        return {tuple(words[i:i + 4]) for i in range(len(words) - 3)}

    held: set[tuple[str, ...]] = set()
    for row in json.loads(PRESIDIO.read_text()):
        text = row["full_text"]
        for s in sorted(row["spans"], key=lambda s: -s["start_position"]):
            text = text[:s["start_position"]] + "|" + text[s["end_position"]:]
        for part in text.split("|"):
            held |= runs(part)
    for template in PII_TEMPLATES + NO_PII_TEMPLATES:
        for part in SLOT_RE.sub("|", template).split("|"):
            assert not runs(part) & held, template


def test_fill_and_render_give_exact_offsets():
    values = {"person": "Ann Lee", "email": "ann@x.io", "first": "Ann", "n": "42",
              "addr_block": None}

    def fill(slot):
        if slot == "addr_block":
            return [("1 Main St", "STREET_ADDRESS"), ("\n", None), ("Springfield", "GPE")]
        return [(values[slot], SLOT_TYPES[slot][0] if SLOT_TYPES[slot] else None)]

    template = "Hi {{first#1}}! {{person}} <{{email}}> #{{n}}\n{{addr_block}} bye {{first#1}}"
    text, spans = data.render_segments(data.fill_template(template, fill))
    assert text == "Hi Ann! Ann Lee <ann@x.io> #42\n1 Main St\nSpringfield bye Ann"
    got = [(s.type, text[s.start:s.end]) for s in spans]
    assert got == [("PERSON", "Ann"), ("PERSON", "Ann Lee"), ("EMAIL_ADDRESS", "ann@x.io"),
                   ("STREET_ADDRESS", "1 Main St"), ("GPE", "Springfield"), ("PERSON", "Ann")]


# A shape check per type: an off-by-one span (a cut digit, a swallowed comma) fails these.
SHAPES = {
    "CREDIT_CARD": lambda v: (re.fullmatch(r"\d[\d -]{10,21}\d", v)
                              and passes_luhn(re.sub(r"\D", "", v))),
    "IBAN_CODE": lambda v: (re.fullmatch(r"[A-Za-z]{2}\d{2}[A-Za-z\d ]+", v)
                            and passes_iban_check(v)),
    "IP_ADDRESS": lambda v: ipaddress.ip_address(v) is not None,
    "EMAIL_ADDRESS": lambda v: re.fullmatch(r"[\w.+-]+@[\w-]+(\.[\w-]+)+", v),
    "US_SSN": lambda v: re.fullmatch(r"\d{3}([- ]?)\d{2}\1\d{4}", v),
    "AGE": lambda v: v.isdigit() and 0 < int(v) < 120,
    "DOMAIN_NAME": lambda v: re.fullmatch(r"(https?://)?(www\.)?[\w-]+(\.[a-z]{2,4})+/?", v, re.I),
    "ZIP_CODE": lambda v: re.fullmatch(r"[\w -]{3,10}", v) and any(c.isdigit() for c in v),
    "US_DRIVER_LICENSE": lambda v: re.fullmatch(r"[A-Z]{0,2}-?\d[\d -]{4,16}\d", v, re.I),
    "PHONE_NUMBER": lambda v: len(re.sub(r"\D", "", v)) >= 7 and v[-1].isdigit(),
}


def test_generated_spans_are_exact_values(generated):
    for ex in generated:
        for a, b in zip(ex.spans, ex.spans[1:], strict=False):
            assert a.end <= b.start, ex
        for s in ex.spans:
            value = ex.text[s.start:s.end]
            assert value and value == value.strip(), (value, ex.text)
            check = SHAPES.get(s.type)
            assert check is None or check(value), (s.type, value, ex.text)


def test_every_type_has_enough_examples(generated):
    counts = data.summarise_types(generated)
    assert list(counts) == list(PII_TYPES)
    assert min(counts.values()) >= 150, counts
    no_pii = sum(1 for ex in generated if not ex.spans) / len(generated)
    assert 0.10 <= no_pii <= 0.22
    # Near-misses stay O: versions, hex codes, ISBNs and products of numbers exist unlabelled.
    plain = [ex.text for ex in generated if not ex.spans]
    assert any(re.search(r"\d+\.\d+\.\d+", t) for t in plain)
    assert any(re.search(r"\d+ \* \d+", t) for t in plain)


def test_person_spans_never_include_the_honorific(generated):
    honorifics = tuple(h + " " for h in HONORIFICS)
    for ex in generated:
        for s in ex.spans:
            if s.type == "PERSON":
                assert not ex.text[s.start:s.end].startswith(honorifics), ex.text


def test_generated_names_and_places_are_in_latin_letters(generated):
    # Cyrillic and Greek names are transliterated, Japanese and Chinese ones romanised: a
    # prompt in English writes "Yuriy Bulgakov", and the tokenizer has few Cyrillic pieces.
    for ex in generated:
        for s in ex.spans:
            value = ex.text[s.start:s.end]
            letters = [c for c in value if c.isalpha()]
            assert all("LATIN" in unicodedata.name(c, "") or c in "ªº" for c in letters), (
                s.type, value)


def test_transliterated_names_read_as_english_text_spells_them():
    assert _transliterate("Юрий", "ru_RU") + " " + _transliterate("Ефимов", "ru_RU") == (
        "Yuriy Yefimov")
    assert _transliterate("Володимир", "uk_UA") == "Volodymyr"
    assert _transliterate("Божидара-силвестра", "bg_BG") == "Bozhidara-Silvestra"
    assert _transliterate("Μπακογιάννης", "el_GR") == "Bakogiannis"


def test_place_locales_have_places_of_their_own():
    # A name-only locale (tr_TR, lt_LT: faker gives them fake US addresses) gives no places.
    assert set(PLACE_LOCALES) <= set(LOCALE_COUNTRY)
    assert not {"tr_TR", "lt_LT", "lv_LV", "et_EE", "yo_NG", "tw_GH"} & set(PLACE_LOCALES)


def test_a_region_word_is_no_part_of_the_place(generated):
    region = re.compile(r"(northern|southern|eastern|western|central|upstate|greater|coastal|"
                        r"rural)\b", re.I)
    gpe = [ex.text[s.start:s.end] for ex in generated for s in ex.spans if s.type == "GPE"]
    assert gpe and not [v for v in gpe if region.match(v)]
    # ... and the templates do put region words in front of places.
    assert any(re.search(r"(?i)\b(northern|southern|upstate) \w", ex.text) for ex in generated)


def test_generate_pii_is_deterministic_for_a_seed():
    a, b = data.generate_pii(300, 7), data.generate_pii(300, 7)
    assert a == b
    assert data.generate_pii(300, 8) != a
    assert len({ex.text for ex in a}) > 250  # varied, not one sentence repeated


# -- off-topic --------------------------------------------------------------------------------


def test_offtopic_prompts_are_varied_and_deterministic():
    prompts = data.offtopic_prompts(500, 0)
    assert prompts == data.offtopic_prompts(500, 0)
    assert prompts != data.offtopic_prompts(500, 1)
    assert len(prompts) == 500 and all(p.strip() for p in prompts)
    assert len(set(prompts)) >= 480
    assert len(set(data.offtopic_prompts(200, 3)) & set(prompts)) < 200


# -- BIO alignment ----------------------------------------------------------------------------


def _names(ids):
    return [PII_TAGS[i] if i >= 0 else i for i in ids]


def test_align_bio_marks_multi_token_entities_and_ignores_special_tokens(tokenizer):
    text = "Mail JamiePratt@jourrapide.com or pay with 4111 1111 1111 1111 today."
    email = Span("EMAIL_ADDRESS", 5, 30)
    card = Span("CREDIT_CARD", text.index("4111"), text.index(" today"))
    enc = tokenizer.encode(text)
    tags = _names(data.align_bio(text, [card, email], enc.offsets))
    assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]"
    assert tags[0] == tags[-1] == data.IGNORE_INDEX
    by_token = list(zip(enc.offsets, tags, strict=True))
    email_tags = [t for (s, e), t in by_token if s < email.end and e > email.start and s != e]
    card_tags = [t for (s, e), t in by_token if s < card.end and e > card.start and s != e]
    assert len(email_tags) > 3 and len(card_tags) > 3  # really multi-token
    assert email_tags == ["B-EMAIL_ADDRESS"] + ["I-EMAIL_ADDRESS"] * (len(email_tags) - 1)
    assert card_tags == ["B-CREDIT_CARD"] + ["I-CREDIT_CARD"] * (len(card_tags) - 1)
    assert tags.count("O") == len(tags) - 2 - len(email_tags) - len(card_tags)


def test_align_bio_adjacent_spans_and_padding(tokenizer):
    text = "Dr. Ann Lee and Bob"
    spans = [Span("TITLE", 0, 3), Span("PERSON", 4, 11), Span("PERSON", 16, 19)]
    tokenizer.enable_padding(length=16)
    try:
        enc = tokenizer.encode(text)
    finally:
        tokenizer.no_padding()
    tags = _names(data.align_bio(text, spans, enc.offsets))
    assert tags[:8] == [-100, "B-TITLE", "I-TITLE", "B-PERSON", "I-PERSON", "O", "B-PERSON",
                        -100]
    assert tags[8:] == [-100] * 8  # [PAD]


def test_align_bio_gives_one_b_per_span_on_generated_text(tokenizer, generated):
    b_of = {PII_TAGS.index(f"B-{t}"): t for t in PII_TYPES}
    for ex in generated[:400]:
        enc = tokenizer.encode(ex.text)
        ids = data.align_bio(ex.text, ex.spans, enc.offsets)
        assert sum(1 for i in ids if i in b_of) == len(ex.spans), ex.text
        prev = "O"
        for name in _names(ids):
            if isinstance(name, str) and name.startswith("I-"):
                assert prev[2:] == name[2:], (ex.text, name)
            prev = name if isinstance(name, str) else "O"


def test_align_bio_rejects_spans_outside_the_text():
    with pytest.raises(ValueError, match="outside"):
        data.align_bio("short", [Span("PERSON", 2, 10)], [(0, 5)])


def test_summarise_types_counts_spans():
    examples = [PiiExample("a b", [Span("PERSON", 0, 1), Span("GPE", 2, 3)], None, "x"),
                PiiExample("c", [Span("PERSON", 0, 1)], None, "x")]
    counts = data.summarise_types(examples)
    assert counts["PERSON"] == 2 and counts["GPE"] == 1 and counts["AGE"] == 0
    assert list(counts) == list(PII_TYPES)


def test_embed_in_context_shifts_spans_exactly() -> None:
    from export.data import embed_in_context, with_context

    examples = data.generate_pii(40, 3)
    e = next(x for x in examples if x.spans)
    c = embed_in_context(e, "What is the capital of France?", "Explain briefly.")
    assert c.text.startswith("What is the capital of France? ")
    assert [c.text[s.start:s.end] for s in c.spans] == [e.text[s.start:s.end] for s in e.spans]
    some = with_context(examples, ["Ctx one.", "Ctx two."], 0.5, seed=1)
    assert 0 < len(some) < len(examples)
    assert some == with_context(examples, ["Ctx one.", "Ctx two."], 0.5, seed=1)


def test_joined_examples_keep_every_entity_exactly_where_its_text_is() -> None:
    from export.data import JOINED_SUFFIX, joined_examples

    records = [PiiExample("Call Ana Lima at 555-0100.", [Span("PERSON", 5, 13),
                                                         Span("PHONE_NUMBER", 17, 25)], 1, "a"),
               PiiExample("I live in Porto", [Span("GPE", 10, 15)], 2, "b"),
               PiiExample("no PII here", [], 3, "c")]
    entity = {(s.type, r.text[s.start:s.end]) for r in records for s in r.spans}
    rows = joined_examples(records, 40, seed=2)
    assert len(rows) == 40 and rows == joined_examples(records, 40, seed=2)
    for row in rows:
        assert row.source.endswith(JOINED_SUFFIX)
        n = sum(row.text.count(r.text) for r in records)
        assert 2 <= n <= 4
        assert len(row.spans) == sum(row.text.count(r.text) * len(r.spans) for r in records)
        assert {(s.type, row.text[s.start:s.end]) for s in row.spans} <= entity
    assert any("\n" in r.text for r in rows) and any("\n" not in r.text for r in rows)
    assert joined_examples([], 5, seed=0) == []


def test_long_texts_hold_every_record_once_with_its_entities_in_place() -> None:
    from export.data import long_texts

    records = [e for e in data.generate_pii(120, 7) if "\n" not in e.text]
    words = lambda text: len(text.split())  # noqa: E731 (a stand-in token count)
    texts = long_texts(records, 60, words, seed=0)
    assert texts == long_texts(records, 60, words, seed=0)
    lines = [line for t in texts for line in t.text.split("\n")]
    assert sorted(lines) == sorted(r.text for r in records)  # each record once, one per line
    assert all(words(t.text) >= 60 - len(t.text.split("\n")) for t in texts[:-1])
    want = sorted((s.type, r.text[s.start:s.end]) for r in records for s in r.spans)
    assert sorted((s.type, t.text[s.start:s.end]) for t in texts for s in t.spans) == want
    assert [t.template_id for t in texts] == list(range(len(texts)))
