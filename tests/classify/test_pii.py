"""BIO decoding, word growth, thresholds, windows over long texts, redaction."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from router_svc.classify.pii import (
    PiiEntity,
    decode_bio,
    merge_windows,
    possible_values,
    redact,
    softmax,
    whole_dates,
)
from router_svc.classify.tokenization import window_starts
from router_svc.labels import PII_TAGS

TAGS = list(PII_TAGS)
SPECIAL = (0, 0)


def offsets_of(text: str, pieces: list[str]) -> list[tuple[int, int]]:
    """Character spans of ``pieces`` found left to right in ``text`` (a stand-in tokenizer)."""
    out, pos = [], 0
    for p in pieces:
        start = text.index(p, pos)
        out.append((start, start + len(p)))
        pos = start + len(p)
    return out


def probs_for(tags: list[str], p: float | list[float] = 0.9) -> np.ndarray:
    """One row per token: ``p`` on the given tag, the rest spread evenly over the others."""
    ps = [p] * len(tags) if isinstance(p, float) else p
    rows = np.full((len(tags), len(TAGS)), 0.0)
    for i, (t, q) in enumerate(zip(tags, ps, strict=True)):
        rows[i, :] = (1 - q) / (len(TAGS) - 1)
        rows[i, TAGS.index(t)] = q
    return rows


def decode(text: str, pieces: list[str], tags: list[str], p=0.9, threshold=0.5, special=True,
           type_thresholds=None):
    offs = offsets_of(text, pieces)
    if special:  # [CLS] ... [SEP], tagged as if they were PII: they must be skipped
        offs = [SPECIAL, *offs, SPECIAL]
        tags = ["B-PERSON", *tags, "I-PERSON"]
        p = p if isinstance(p, float) else [0.99, *p, 0.99]
    return decode_bio(probs_for(tags, p), offs, TAGS, text, threshold, type_thresholds)


def spans(ents: list[PiiEntity]) -> list[tuple[str, str]]:
    return [(e.type, e.text) for e in ents]


# --------------------------------------------------------------------------- BIO decoding


def test_b_then_i_is_one_entity_and_special_tokens_are_skipped() -> None:
    text = "My name is John Smith and I live here"
    pieces = text.split()
    tags = ["O", "O", "O", "B-PERSON", "I-PERSON", "O", "O", "O", "O"]
    ents = decode(text, pieces, tags, p=[0.9, 0.9, 0.9, 0.8, 0.6, 0.9, 0.9, 0.9, 0.9])
    assert len(ents) == 1
    e = ents[0]
    assert (e.type, e.start, e.end, e.text) == ("PERSON", 11, 21, "John Smith")
    assert text[e.start : e.end] == e.text
    assert e.score == pytest.approx(0.7)  # mean of 0.8 and 0.6


def test_lenient_i_without_b_starts_an_entity() -> None:
    text = "mail alice@example.org now"
    ents = decode(text, ["mail", "alice@example.org", "now"], ["O", "I-EMAIL_ADDRESS", "O"])
    assert spans(ents) == [("EMAIL_ADDRESS", "alice@example.org")]


def test_i_of_another_type_starts_a_new_entity() -> None:
    text = "Bob Acme"
    ents = decode(text, ["Bob", "Acme"], ["B-PERSON", "I-ORGANIZATION"])
    assert spans(ents) == [("PERSON", "Bob"), ("ORGANIZATION", "Acme")]


def test_i_after_o_starts_a_new_entity_and_b_b_is_two() -> None:
    text = "Ann and Bob Cy"
    ents = decode(text, ["Ann", "and", "Bob", "Cy"], ["I-PERSON", "O", "B-PERSON", "B-PERSON"])
    # B B on adjacent words is one name split by a stray B- tag: joined (measured: +F1)
    assert spans(ents) == [("PERSON", "Ann"), ("PERSON", "Bob Cy")]


def test_argmax_picks_the_tag() -> None:
    text = "Paris"
    row = np.full((1, len(TAGS)), 0.01)
    row[0, TAGS.index("B-GPE")] = 0.55
    row[0, TAGS.index("B-PERSON")] = 0.35
    [e] = decode_bio(row, [(0, 5)], TAGS, text, 0.5)
    assert e.type == "GPE" and e.score == pytest.approx(0.55)


def test_phone_number_that_passes_luhn_is_a_credit_card() -> None:
    for number, kind in (("4111 1111 1111 1111", "CREDIT_CARD"),  # 16 digits, Luhn valid
                         ("4111-1111-1111-1111", "CREDIT_CARD"),
                         ("4047737215142", "CREDIT_CARD"),  # 13 digits
                         ("4111 1111 1111 1112", "PHONE_NUMBER"),  # fails Luhn
                         ("+1 555 123 4567", "PHONE_NUMBER"),  # 11 digits
                         ("4111 1111 1111 11x1", "PHONE_NUMBER")):  # not digits only
        text = f"call {number} today"
        [e] = decode(text, ["call", number, "today"], ["O", "B-PHONE_NUMBER", "O"])
        assert (e.type, e.text) == (kind, number)


def _rows(text_pieces: int, tagged: dict[int, dict[str, float]]) -> np.ndarray:
    """Rows of ``text_pieces`` tokens, "O" at 1.0 except the given {token: {tag: p}} rows."""
    rows = np.zeros((text_pieces, len(TAGS)))
    rows[:, TAGS.index("O")] = 1.0
    for k, ps in tagged.items():
        rows[k, :] = 0.0
        for tag, q in ps.items():
            rows[k, TAGS.index(tag)] = q
    return rows


def test_a_run_of_mixed_types_is_one_span_of_its_likeliest_type_and_keeps_the_others() -> None:
    text = "card 4000 1234 5678 9010 thanks"  # not a valid card number (Luhn)
    rows = _rows(6, {1: {"B-CREDIT_CARD": 0.6, "B-PHONE_NUMBER": 0.35, "O": 0.05},
                     2: {"I-PHONE_NUMBER": 0.5, "I-CREDIT_CARD": 0.45, "O": 0.05},
                     3: {"I-CREDIT_CARD": 0.7, "I-PHONE_NUMBER": 0.25, "O": 0.05},
                     4: {"I-PHONE_NUMBER": 0.52, "I-CREDIT_CARD": 0.43, "O": 0.05}})
    ents = decode_bio(rows, offsets_of(text, text.split()), TAGS, text, 0.5)
    # The argmax alone: CREDIT_CARD, PHONE_NUMBER, CREDIT_CARD, PHONE_NUMBER pieces. Viterbi
    # reads the run as one card number; the phone-number pieces stay reported for policies.
    assert ("CREDIT_CARD", "4000 1234 5678 9010") in spans(ents)
    assert [e.text for e in ents if e.type == "CREDIT_CARD"] == ["4000 1234 5678 9010"]
    assert {e.text for e in ents if e.type == "PHONE_NUMBER"} == {"1234", "9010"}
    card = next(e for e in ents if e.type == "CREDIT_CARD")
    assert card.score == pytest.approx((0.6 + 0.45 + 0.7 + 0.43) / 4)  # its own tags' mean


def test_a_type_viterbi_drops_is_kept_from_the_argmax() -> None:
    # "alice@intranet" is no valid e-mail address, so no syntax check settles the type.
    text = "mail alice@intranet now"
    pieces = ["mail", "alice", "@", "intra", "net", "now"]
    inside = {"I-EMAIL_ADDRESS": 0.5, "I-ORGANIZATION": 0.45, "O": 0.05}
    rows = _rows(6, {1: {"B-ORGANIZATION": 0.6, "B-EMAIL_ADDRESS": 0.05, "O": 0.35},
                     **{k: inside for k in range(2, 5)}})
    ents = decode_bio(rows, offsets_of(text, pieces), TAGS, text, 0.45)
    # Viterbi prefers ORGANIZATION for the whole run; the argmax's e-mail address stays.
    assert ("ORGANIZATION", "alice@intranet") in spans(ents)
    assert ("EMAIL_ADDRESS", "alice@intranet") in spans(ents)


def test_a_value_that_passes_its_types_check_drops_other_readings_of_its_span() -> None:
    text = "mail alice@example.org now"
    pieces = ["mail", "alice", "@", "example", ".", "org", "now"]
    inside = {"I-EMAIL_ADDRESS": 0.5, "I-ORGANIZATION": 0.45, "O": 0.05}
    rows = _rows(7, {1: {"B-ORGANIZATION": 0.6, "B-EMAIL_ADDRESS": 0.05, "O": 0.35},
                     **{k: inside for k in range(2, 6)}})
    ents = decode_bio(rows, offsets_of(text, pieces), TAGS, text, 0.45)
    assert spans(ents) == [("EMAIL_ADDRESS", "alice@example.org")]


@pytest.mark.parametrize(("value", "tag", "kind"), [
    ("48.90.248.226", "B-DOMAIN_NAME", "IP_ADDRESS"),  # an IPv4 address read as a domain
    ("2001:db8::8a2e:370:7334", "B-PHONE_NUMBER", "IP_ADDRESS"),
    ("48.90.248", "B-PHONE_NUMBER", "PHONE_NUMBER"),  # three parts: not an address
    ("300.1.1.1", "B-DOMAIN_NAME", "DOMAIN_NAME"),  # 300 is no octet
])
def test_a_value_that_parses_as_an_ip_address_is_one(value: str, tag: str, kind: str) -> None:
    text = f"ping {value} now"
    [e] = decode(text, ["ping", value, "now"], ["O", tag, "O"])
    assert (e.type, e.text) == (kind, value)


def test_card_and_iban_checks_settle_a_span_read_two_ways() -> None:
    card = "503802053770"  # 12 digits, Luhn valid (Maestro): too short for the phone rule
    iban = "DE89 3704 0044 0532 0130 00"  # mod 97 valid
    for value, right, wrong in ((card, "CREDIT_CARD", "PHONE_NUMBER"),
                                (iban, "IBAN_CODE", "US_DRIVER_LICENSE")):
        text = f"use {value} please"
        rows = _rows(5, {1: {f"B-{right}": 0.5, f"B-{wrong}": 0.45, "O": 0.05},
                         2: {f"I-{wrong}": 0.6, f"I-{right}": 0.35, "O": 0.05}})
        half = len(value) // 2
        n = len(value)
        offs = [(0, 3), (4, 4 + half), (4 + half, 4 + n), (5 + n, 11 + n), (0, 0)]
        ents = decode_bio(rows, offs, TAGS, text, 0.3)
        assert spans(ents) == [(right, value)], value
    bad = "4111 1111 1111 1112"  # fails Luhn: both readings stay
    text = f"use {bad} please"
    rows = _rows(5, {1: {"B-CREDIT_CARD": 0.5, "B-PHONE_NUMBER": 0.45, "O": 0.05},
                     2: {"I-PHONE_NUMBER": 0.6, "I-CREDIT_CARD": 0.35, "O": 0.05}})
    offs = [(0, 3), (4, 13), (13, 23), (24, 30), (0, 0)]
    assert {t for t, _ in spans(decode_bio(rows, offs, TAGS, text, 0.3))} == {
        "CREDIT_CARD", "PHONE_NUMBER"}


def test_connectors_at_the_edge_of_a_name_are_left_out() -> None:
    text = "ask Marrero and Park and Mann, or Clark, Romero and Hall"
    pieces = ["ask", "Marrero", "and", "Park", "and", "Mann", ",", "or", "Clark", ",", "Romero",
              "and", "Hall"]
    tags = ["O", "B-PERSON", "I-PERSON", "O", "O", "B-PERSON", "O", "B-ORGANIZATION",
            "I-ORGANIZATION", "I-ORGANIZATION", "I-ORGANIZATION", "I-ORGANIZATION",
            "I-ORGANIZATION"]
    assert spans(decode(text, pieces, tags)) == [
        ("PERSON", "Marrero"), ("PERSON", "Mann"), ("ORGANIZATION", "Clark, Romero and Hall")]
    # a lone "and" tagged as a name is none, and does not join the names around it
    text = "Usamov and Bowers"
    assert spans(decode(text, ["Usamov", "and", "Bowers"], ["B-PERSON"] * 3)) == [
        ("PERSON", "Usamov"), ("PERSON", "Bowers")]


def test_a_name_leaves_out_a_possessive_and_a_stray_character_after_it() -> None:
    text = "roberto's tribute to Yuri Bulgakov \u05d2\u20ac\u201c sadly"
    pieces = ["roberto", "'", "s", "tribute", "to", "Yuri", "Bulgakov", "\u05d2", "\u20ac",
              "\u201c", "sadly"]
    tags = ["B-PERSON", "I-PERSON", "I-PERSON", "O", "O", "B-PERSON", "I-PERSON", "I-PERSON",
            "I-PERSON", "O", "O"]
    assert spans(decode(text, pieces, tags)) == [("PERSON", "roberto"), ("PERSON", "Yuri Bulgakov")]
    text = "Ask \u03a3\u03c5\u03b3\u03b3\u03c1\u03bf\u03cd now"  # a whole Greek name stays
    [e] = decode(text, ["Ask", text[4:11], "now"], ["O", "B-PERSON", "O"])
    assert e.text == text[4:11]


def test_values_without_what_their_type_needs_are_dropped() -> None:
    text = "IBAN: DE89370400440532013000, card # 4111111111111111 & Animation"
    pieces = ["IBAN", ":", "DE89370400440532013000", ",", "card", "#", "4111111111111111", "&",
              "Animation"]
    tags = ["B-IBAN_CODE", "O", "B-IBAN_CODE", "O", "O", "B-CREDIT_CARD", "B-CREDIT_CARD",
            "B-TITLE", "O"]
    assert spans(decode(text, pieces, tags)) == [
        ("IBAN_CODE", "DE89370400440532013000"), ("CREDIT_CARD", "4111111111111111")]


def test_a_name_split_at_an_initial_is_one_name_without_a_title_inside() -> None:
    text = "verses from Faina D. Yefremova and Sari J. Paavolainen today"
    pieces = ["verses", "from", "Faina", "D", ".", "Yefremova", "and", "Sari", "J", ".",
              "Paavolainen", "today"]
    tags = ["O", "O", "B-PERSON", "I-PERSON", "O", "B-PERSON", "O", "B-PERSON", "B-TITLE",
            "I-TITLE", "B-PERSON", "O"]
    assert spans(decode(text, pieces, tags)) == [
        ("PERSON", "Faina D. Yefremova"), ("PERSON", "Sari J. Paavolainen")]
    # ". " after a whole word ends a sentence: two names
    text = "ask Anna. Bob knows"
    assert spans(decode(text, ["ask", "Anna", ".", "Bob", "knows"],
                        ["O", "B-PERSON", "O", "B-PERSON", "O"])) == [
        ("PERSON", "Anna"), ("PERSON", "Bob")]


def test_a_url_keeps_its_closing_slash() -> None:
    text = "see https://www.ArtistMovie.se/ now"
    pieces = ["see", "https", ":", "/", "/", "www", ".", "ArtistMovie", ".", "se", "/", "now"]
    tags = ["O", "B-DOMAIN_NAME"] + ["I-DOMAIN_NAME"] * 8 + ["O", "O"]
    assert spans(decode(text, pieces, tags)) == [("DOMAIN_NAME", "https://www.ArtistMovie.se/")]
    text = "see www.example.com/ now"  # no scheme: a host, the slash is not part of it
    pieces = ["see", "www", ".", "example", ".", "com", "/", "now"]
    tags = ["O", "B-DOMAIN_NAME"] + ["I-DOMAIN_NAME"] * 4 + ["O", "O"]
    assert spans(decode(text, pieces, tags)) == [("DOMAIN_NAME", "www.example.com")]


def test_i_opening_a_run_counts_as_its_b() -> None:
    text = "ask Johnson today"
    rows = _rows(4, {1: {"I-PERSON": 0.5, "B-GPE": 0.3, "I-GPE": 0.2},
                     2: {"I-PERSON": 0.4, "I-GPE": 0.6}})
    # I-PERSON then I-GPE breaks the scheme. At the run's start B-GPE + I-GPE (0.5) ties
    # I-PERSON's 0.5, and GPE goes on at 0.6: Viterbi reads one GPE.
    ents = decode_bio(rows, offsets_of(text, ["ask", "John", "son", "today"]), TAGS, text, 0.3)
    assert ("GPE", "Johnson") in spans(ents)


def _brute_force(logp: np.ndarray, tags: list[str]) -> float:
    """The best score over every tag sequence in which I-X only follows B-X or I-X."""
    best = -np.inf
    for path in itertools.product(range(len(tags)), repeat=len(logp)):
        prev = "O"
        ok = True
        for t in path:
            if tags[t].startswith("I-") and prev[2:] != tags[t][2:]:
                ok = False
                break
            prev = tags[t]
        if ok:
            best = max(best, sum(logp[i, t] for i, t in enumerate(path)))
    return best


def test_viterbi_finds_the_best_valid_sequence() -> None:
    from router_svc.classify.pii import _bio_scheme, _viterbi

    tags = ["O", "B-A", "I-A", "B-B", "I-B"]
    scheme = _bio_scheme(tuple(tags))
    rng = np.random.default_rng(0)
    for n in range(1, 5):
        for _ in range(30):
            logp = np.log(rng.dirichlet(np.ones(len(tags)) * 0.5, size=n) + 1e-12)
            path = _viterbi(logp, scheme)
            prev = "O"
            for t in path:  # valid ...
                assert not tags[t].startswith("I-") or prev[2:] == tags[t][2:], path
                prev = tags[t]
            # ... and the best
            got = sum(logp[i, t] for i, t in enumerate(path))
            assert got == pytest.approx(_brute_force(logp, tags))


# --------------------------------------------------------------------------- words


def test_subword_tagged_on_first_piece_covers_the_word() -> None:
    text = "ask Johnson today"
    # WordPiece: "johnson" -> "john", "##son" (offsets touch)
    ents = decode(text, ["ask", "John", "son", "today"], ["O", "B-PERSON", "O", "O"])
    assert spans(ents) == [("PERSON", "Johnson")]


def test_subword_tagged_on_last_piece_grows_left() -> None:
    text = "ask Johnson today"
    ents = decode(text, ["ask", "John", "son", "today"], ["O", "O", "I-PERSON", "O"])
    assert spans(ents) == [("PERSON", "Johnson")]


def test_each_subword_b_tagged_is_one_entity() -> None:
    text = "ask Johnson today"
    ents = decode(text, ["ask", "John", "son", "today"], ["O", "B-PERSON", "B-PERSON", "O"])
    assert spans(ents) == [("PERSON", "Johnson")]


def test_email_split_on_punctuation_is_kept_whole() -> None:
    text = "write to john.doe@example.com today"
    pieces = ["write", "to", "john", ".", "doe", "@", "example", ".", "com", "today"]
    tags = ["O", "O", "B-EMAIL_ADDRESS"] + ["O"] * 7
    assert spans(decode(text, pieces, tags)) == [("EMAIL_ADDRESS", "john.doe@example.com")]


def test_growth_leaves_edge_punctuation_out() -> None:
    text = "I am (Smith), really."
    pieces = ["I", "am", "(", "Smith", ")", ",", "really", "."]
    tags = ["O", "O", "O", "B-PERSON", "O", "O", "O", "O"]
    [e] = decode(text, pieces, tags)
    assert e.text == "Smith" and text[e.start : e.end] == "Smith"
    tags = ["O", "O", "B-PERSON", "I-PERSON", "I-PERSON", "O", "O", "O"]
    # ... and edge punctuation the model tagged is trimmed too (gold spans never carry it)
    assert spans(decode(text, pieces, tags)) == [("PERSON", "Smith")]


def test_score_ignores_tokens_added_by_growth() -> None:
    text = "ask Johnson today"
    ents = decode(
        text, ["ask", "John", "son", "today"], ["O", "B-PERSON", "O", "O"], p=[0.9, 0.8, 0.99, 0.9]
    )
    assert ents[0].score == pytest.approx(0.8)


# --------------------------------------------------------------------------- threshold, shape


def test_threshold_keeps_equal_and_drops_lower() -> None:
    text = "Ann Bob"
    ents = decode(text, ["Ann", "Bob"], ["B-PERSON", "B-PERSON"], p=[0.7, 0.69], threshold=0.7)
    assert spans(ents) == [("PERSON", "Ann")]


def test_per_type_thresholds_decide_which_entities_survive() -> None:
    text = "Ann Lee, SSN 123-45-6789"
    pieces, tags = ["Ann", "Lee", "SSN", "123-45-6789"], ["B-PERSON", "I-PERSON", "O", "B-US_SSN"]
    p = [0.9, 0.9, 0.9, 0.3]  # the model is unsure of the SSN
    both = [("PERSON", "Ann Lee"), ("US_SSN", "123-45-6789")]
    assert spans(decode(text, pieces, tags, p)) == [("PERSON", "Ann Lee")]  # one threshold: 0.5
    assert spans(decode(text, pieces, tags, p, type_thresholds={"US_SSN": 0.2})) == both
    assert spans(decode(text, pieces, tags, p, type_thresholds={"US_SSN": 0.31})) == both[:1]
    # A type the map leaves out keeps the one threshold, in both directions.
    assert spans(decode(text, pieces, tags, p, threshold=0.25,
                        type_thresholds={"PERSON": 0.95})) == both[1:]
    assert spans(decode(text, pieces, tags, p, type_thresholds={"PERSON": 0.1})) == both[:1]
    assert decode(text, pieces, tags, p, type_thresholds={}) == decode(text, pieces, tags, p)


def test_a_phone_number_that_is_a_card_is_held_to_the_card_threshold() -> None:
    card, phone = "4111 1111 1111 1111", "4111 1111 1111 1112"  # Luhn-valid, and not
    cards = {"CREDIT_CARD": 0.2}
    phones = {"PHONE_NUMBER": 0.2}
    for value, with_cards, with_phones in ((card, [("CREDIT_CARD", card)], []),
                                           (phone, [], [("PHONE_NUMBER", phone)])):
        text = f"call {value} now"
        pieces = ["call", *value.split(), "now"]
        tags = ["O", "B-PHONE_NUMBER", *["I-PHONE_NUMBER"] * 3, "O"]
        p = [0.9, 0.3, 0.3, 0.3, 0.3, 0.9]
        assert spans(decode(text, pieces, tags, p)) == []  # 0.3 < 0.5 for either type
        assert spans(decode(text, pieces, tags, p, type_thresholds=cards)) == with_cards
        # PHONE_NUMBER's own low threshold lets a phone number through, not a card number.
        assert spans(decode(text, pieces, tags, p, type_thresholds=phones)) == with_phones


def test_padding_rows_are_ignored_and_bad_shapes_raise() -> None:
    text = "Ann"
    probs = probs_for(["B-PERSON", "B-PERSON", "B-PERSON"])  # 1 token + 2 padding rows
    assert spans(decode_bio(probs, [(0, 3)], TAGS, text, 0.5)) == [("PERSON", "Ann")]
    assert decode_bio(probs, [], TAGS, text, 0.5) == []
    with pytest.raises(ValueError):
        decode_bio(probs, [(0, 3)] * 4, TAGS, text, 0.5)
    with pytest.raises(ValueError):
        decode_bio(probs[:, :5], [(0, 3)], TAGS, text, 0.5)


def test_all_o_gives_nothing() -> None:
    assert decode("nothing here", ["nothing", "here"], ["O", "O"]) == []


# --------------------------------------------------------------------------- windows


def window_spans(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    return [(s, min(s + window, n)) for s in window_starts(n, window, stride)]


@pytest.mark.parametrize("n", [1, 255, 256, 257, 448, 449, 512, 1000, 5000])
@pytest.mark.parametrize(("window", "stride"), [(256, 192), (256, 256), (64, 1), (10, 7),
                                                 (126, 96)])
def test_windows_cover_everything_evenly_with_the_fewest_windows(n: int, window: int,
                                                                 stride: int) -> None:
    ws = window_spans(n, window, stride)
    assert ws[0][0] == 0 and ws[-1][1] == n
    assert all(0 <= s < e <= n and e - s == min(window, n) for s, e in ws)
    steps = [b[0] - a[0] for a, b in itertools.pairwise(ws)]
    assert all(0 < d <= stride for d in steps)  # progress, and overlaps of window - stride
    assert not steps or max(steps) - min(steps) <= 1  # spread evenly
    assert len(ws) == 1 or (len(ws) - 2) * stride < n - window  # one fewer could not cover
    covered = np.zeros(n, bool)
    for s, e in ws:
        covered[s:e] = True
    assert covered.all()


def test_a_text_just_over_a_window_gets_two_halfway_overlapping_windows_not_a_sliver() -> None:
    # 512 tokens in windows of 126 every 96 at most: six, 77 or 78 apart (not five 96 apart
    # and a sixth 2 tokens after the fifth)
    assert window_starts(512, 126, 96) == [0, 77, 154, 232, 309, 386]


def test_window_layout_rejects_gaps() -> None:
    with pytest.raises(ValueError):
        window_starts(100, 10, 11)
    with pytest.raises(ValueError):
        window_starts(100, 0, 0)


def test_long_text_pii_near_the_end_found_once_after_merging() -> None:
    n = 5000
    words = [f"w{i}" for i in range(n)]
    # PII inside the overlap of the last two windows, and one straddling a window edge
    words[4800], words[4801] = "Ada", "Lovelace"
    words[4808:4812] = ["4111", "1111", "1111", "1111"]
    text = " ".join(words)
    offsets = offsets_of(text, words)
    tags = ["O"] * n
    tags[4800:4802] = ["B-PERSON", "I-PERSON"]
    tags[4808:4812] = ["B-CREDIT_CARD"] + ["I-CREDIT_CARD"] * 3
    probs = probs_for(tags, 0.95)

    windows = window_spans(n, 256, 192)
    assert windows[-2:] == [(4554, 4810), (4744, 5000)]
    per_window = [decode_bio(probs[s:e], offsets[s:e], TAGS, text, 0.5) for s, e in windows]
    assert sum(len(w) for w in per_window) == 4  # PERSON twice, the card (part + whole)

    merged = merge_windows(per_window)
    assert spans(merged) == [("PERSON", "Ada Lovelace"), ("CREDIT_CARD", "4111 1111 1111 1111")]
    assert all(text[e.start : e.end] == e.text for e in merged)


def test_merge_windows_keeps_max_score_and_types_apart() -> None:
    text = "Ada Lovelace works at Acme"
    a = PiiEntity("PERSON", 0, 3, "Ada", 0.8)
    b = PiiEntity("PERSON", 0, 12, "Ada Lovelace", 0.9)
    c = PiiEntity("ORGANIZATION", 4, 12, "Lovelace", 0.75)
    d = PiiEntity("ORGANIZATION", 22, 26, "Acme", 0.7)
    merged = merge_windows([[a, d], [b, c], []])
    assert merged == [
        PiiEntity("PERSON", 0, 12, "Ada Lovelace", 0.9),
        PiiEntity("ORGANIZATION", 4, 12, "Lovelace", 0.75),
        d,
    ]
    assert merged[0].text == text[0:12]
    # overlapping partial spans become their union with the text stitched together
    x = PiiEntity("PERSON", 0, 8, text[0:8], 0.6)
    y = PiiEntity("PERSON", 4, 12, text[4:12], 0.7)
    assert merge_windows([[x], [y]]) == [PiiEntity("PERSON", 0, 12, "Ada Lovelace", 0.7)]


# --------------------------------------------------------------------------- redaction


def test_redact_replaces_right_to_left() -> None:
    text = "Mail ann@x.io or call 555-0100."
    ents = [
        PiiEntity("EMAIL_ADDRESS", 5, 13, "ann@x.io", 0.9),
        PiiEntity("PHONE_NUMBER", 22, 30, "555-0100", 0.9),
    ]
    assert redact(text, ents) == "Mail <EMAIL_ADDRESS> or call <PHONE_NUMBER>."
    assert redact(text, reversed(ents)) == "Mail <EMAIL_ADDRESS> or call <PHONE_NUMBER>."
    assert redact(text, []) == text


def test_redact_overlapping_spans_leave_no_fragment() -> None:
    text = "Contact John Smith Acme Corp today"
    person = PiiEntity("PERSON", 8, 18, "John Smith", 0.8)
    org = PiiEntity("ORGANIZATION", 13, 28, "Smith Acme Corp", 0.9)
    assert redact(text, [person, org]) == "Contact <ORGANIZATION> today"
    nested = PiiEntity("PERSON", 13, 18, "Smith", 0.95)
    assert redact(text, [org, nested]) == "Contact John <PERSON> today"
    touching = [PiiEntity("PERSON", 8, 12, "John", 0.9), PiiEntity("PERSON", 12, 18, " Smith", 0.9)]
    assert redact(text, touching) == "Contact <PERSON><PERSON> Acme Corp today"


def test_redact_keeps_unicode_around_spans() -> None:
    text = "👋 مرحبا Ann 🇫🇷"
    start = text.index("Ann")
    assert (
        redact(text, [PiiEntity("PERSON", start, start + 3, "Ann", 0.9)]) == "👋 مرحبا <PERSON> 🇫🇷"
    )


# --------------------------------------------------------------------------- softmax


def test_softmax_is_stable_and_normalised() -> None:
    logits = np.array([[1000.0, 1000.0, -1000.0], [0.0, 1.0, 2.0]], dtype=np.float32)
    p = softmax(logits, axis=-1)
    assert p.dtype == np.float32
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(axis=-1), 1.0)
    assert np.allclose(p[0], [0.5, 0.5, 0.0], atol=1e-6)
    assert np.allclose(softmax(logits.T, axis=0), p.T)
    assert np.allclose(softmax(np.array([1, 1])), [0.5, 0.5])


def test_a_phone_span_over_words_is_split_and_its_parts_joined() -> None:
    text = "Hungary 34796\n(37) 788-063-Office\\,07700 063 966-Fax and 082 490 1693 now"
    pieces = ["Hungary", "34796", "(", "37", ")", "788", "-", "063", "-", "Office", "\\", ",",
              "07700", "063", "966", "-", "Fax", "and", "082", "490", "1693", "now"]
    tags = (["O", "O", "O", "B-PHONE_NUMBER", "O", "B-PHONE_NUMBER"]
            + ["I-PHONE_NUMBER"] * 11 + ["O", "B-PHONE_NUMBER", "I-PHONE_NUMBER",
                                        "B-PHONE_NUMBER", "O"])
    assert spans(decode(text, pieces, tags)) == [
        ("PHONE_NUMBER", "(37) 788-063"), ("PHONE_NUMBER", "07700 063 966"),
        ("PHONE_NUMBER", "082 490 1693")]
    text = "call +41 (0)69 979 80 58 or +1 555 0100"
    pieces = ["call", "+", "41", "(", "0", ")", "69", "979", "80", "58", "or", "+", "1", "555",
              "0100"]
    tags = ["O", "O", "B-PHONE_NUMBER"] + ["I-PHONE_NUMBER"] * 6 + ["I-PHONE_NUMBER", "O", "O",
                                                                    "B-PHONE_NUMBER",
                                                                    "I-PHONE_NUMBER",
                                                                    "I-PHONE_NUMBER"]
    assert spans(decode(text, pieces, tags)) == [
        ("PHONE_NUMBER", "+41 (0)69 979 80 58"), ("PHONE_NUMBER", "+1 555 0100")]


def test_person_and_organization_spans_a_space_apart_are_one() -> None:
    text = "Berkshire Hathaway bought a house in Aalborg NO from Ann Lee, Bob"
    pieces = ["Berkshire", "Hathaway", "bought", "a", "house", "in", "Aalborg", "NO", "from",
              "Ann", "Lee", ",", "Bob"]
    tags = ["B-ORGANIZATION", "B-ORGANIZATION", "O", "O", "O", "O", "B-GPE", "B-GPE", "O",
            "B-PERSON", "B-PERSON", "O", "B-PERSON"]
    assert spans(decode(text, pieces, tags)) == [  # a city and its region stay two places
        ("ORGANIZATION", "Berkshire Hathaway"), ("GPE", "Aalborg"), ("GPE", "NO"),
        ("PERSON", "Ann Lee"), ("PERSON", "Bob")]


def _e(kind: str, text: str, part: str, score: float = 0.9) -> PiiEntity:
    start = text.index(part)
    return PiiEntity(kind, start, start + len(part), part, score)


def test_an_address_split_into_parts_is_one_street_address() -> None:
    from router_svc.classify.pii import whole_addresses

    text = "Ship it to 233 Elm St.\n Suite 282\n Springfield\n Hungary 34796, thanks. Ana"
    parts = [_e("STREET_ADDRESS", text, "233 Elm St."), _e("STREET_ADDRESS", text, "Suite 282"),
             _e("GPE", text, "Springfield"), _e("GPE", text, "Hungary", 0.95),
             _e("ZIP_CODE", text, "34796"), _e("PERSON", text, "Ana")]
    out = whole_addresses(parts, text)
    assert [(e.type, e.text) for e in out] == [
        ("STREET_ADDRESS", "233 Elm St.\n Suite 282\n Springfield\n Hungary 34796"),
        ("PERSON", "Ana")]
    assert out[0].score == 0.95


def test_a_region_code_between_address_parts_belongs_to_the_address() -> None:
    from router_svc.classify.pii import whole_addresses

    text = "Ship to 1188 Bathurst St, Unit 3, Toronto, ON M5R 3H4 by Friday"
    parts = [_e("STREET_ADDRESS", text, "1188 Bathurst St, Unit 3, Toronto"),
             _e("ZIP_CODE", text, "M5R 3H4")]
    assert [(e.type, e.text) for e in whole_addresses(parts, text)] == [
        ("STREET_ADDRESS", "1188 Bathurst St, Unit 3, Toronto, ON M5R 3H4")]


def test_a_city_or_postcode_alone_or_apart_stays_what_it_is() -> None:
    from router_svc.classify.pii import whole_addresses

    text = "Anna lives in Paris. Her office is at 5 Rue Royale and her zip is 75008."
    ents = [_e("GPE", text, "Paris"), _e("STREET_ADDRESS", text, "5 Rue Royale"),
            _e("ZIP_CODE", text, "75008")]
    assert whole_addresses(ents, text) == ents  # words between the parts: not one address
    two_cities = "Aalborg NO"
    cities = [_e("GPE", two_cities, "Aalborg"), _e("GPE", two_cities, "NO")]
    assert whole_addresses(cities, two_cities) == cities  # no street: no address


def test_the_guard_joins_rules_and_model_under_the_conventions() -> None:
    from router_svc.classify.recognisers import guarded

    text = "Send it to 12 Oak Road, Boston 02134 please"
    model = [_e("STREET_ADDRESS", text, "12 Oak Road"), _e("GPE", text, "Boston")]
    rules = [_e("ZIP_CODE", text, "02134", 0.9)]
    assert [(e.type, e.text) for e in guarded(model, rules, text)] == [
        ("STREET_ADDRESS", "12 Oak Road, Boston 02134")]
    assert [(e.type, e.text) for e in guarded(model, None, text)] == [
        ("STREET_ADDRESS", "12 Oak Road, Boston")]


@pytest.mark.parametrize(("text", "piece", "tag", "kept"), [
    ("GET /index.html HTTP/1.1 200", "HTTP/1.1", "B-IP_ADDRESS", None),
    ("User-Agent: Mozilla/5.0 (X11)", "Mozilla/5.0", "B-IP_ADDRESS", None),
    ("due 30.09.2024 at noon", "30.09.2024", "B-IP_ADDRESS", None),
    ("proxy 10.1.2.3:8080 is down", "10.1.2.3:8080", "B-IP_ADDRESS", "10.1.2.3"),
    ("route 192.168.4.0/24 via eth0", "192.168.4.0/24", "B-IP_ADDRESS", "192.168.4.0"),
    ("card expires 09/27, cvv later", "09/27", "B-CREDIT_CARD", None),
    ("call me at 10 at night", "10", "B-PHONE_NUMBER", None),
    ("ssn 123-45 is incomplete", "123-45", "B-US_SSN", None),
    ("set guestEmail in the form", "guestEmail", "B-EMAIL_ADDRESS", None),
    ("parse src=fb for me", "src", "B-DOMAIN_NAME", None),
    ("mail ana.lopes%40gmail.com now", "ana.lopes%40gmail.com", "B-ZIP_CODE", None),
    ("post to SW1A 1AA today", "SW1A 1AA", "B-ZIP_CODE", "SW1A 1AA"),
    ("sha 9f86d081884c7d659a2feaa0c55ad015 ok", "9f86d081884c7d659a2feaa0c55ad015",
     "B-IBAN_CODE", None),
    # the shape without the checksum stays: a mistyped card is still a card
    ("card 4111 1111 1111 1112 please", "4111 1111 1111 1112", "B-CREDIT_CARD",
     "4111 1111 1111 1112"),
])
def test_a_fixed_shape_type_read_where_the_text_cannot_hold_it_goes(text, piece, tag, kept):
    from router_svc.classify.recognisers import guarded

    before, _, after = text.partition(piece)
    pieces = [*before.split(), piece, *after.split()]
    tags = ["O"] * len(before.split()) + [tag] + ["O"] * len(after.split())
    found = spans(guarded(decode(text, pieces, tags), None, text))
    assert found == ([] if kept is None else [(tag[2:], kept)])


def test_a_name_never_runs_over_a_line_break() -> None:
    from router_svc.classify.pii import one_line_names

    text = "Cheers,\nLuis Ortega\nLuis\n12 Elm St\nSpringfield"
    ents = [_e("PERSON", text, "Luis Ortega\nLuis"), _e("STREET_ADDRESS", text,
                                                         "12 Elm St\nSpringfield")]
    assert [(e.type, e.text) for e in one_line_names(ents, text)] == [
        ("PERSON", "Luis Ortega"), ("PERSON", "Luis"),
        ("STREET_ADDRESS", "12 Elm St\nSpringfield")]  # an address spans lines


def test_an_honorific_is_a_title_of_its_own() -> None:
    from router_svc.classify.pii import without_honorifics

    text = "Ask Dr. P. Naidoo and Herrn Yusuf Aydın, not Mrsomething Lee"
    ents = [_e("PERSON", text, "Dr. P. Naidoo"), _e("PERSON", text, "Herrn Yusuf Aydın"),
            _e("PERSON", text, "Mrsomething Lee")]
    assert [(e.type, e.text) for e in without_honorifics(ents, text)] == [
        ("TITLE", "Dr."), ("PERSON", "P. Naidoo"), ("TITLE", "Herrn"),
        ("PERSON", "Yusuf Aydın"), ("PERSON", "Mrsomething Lee")]


@pytest.mark.parametrize(("text", "parts", "joined"), [
    ("Wednesday 12 June, 09:30 works", ["Wednesday", "12 June", "09:30"],
     ["Wednesday 12 June, 09:30"]),
    ("at 2024-05-01T09:00Z sharp", ["2024-05-01", "09:00Z"], ["2024-05-01T09:00Z"]),
    ("Friday at 3pm?", ["Friday", "3pm"], ["Friday at 3pm"]),
    ("from 2015-2019", ["2015", "2019"], ["2015", "2019"]),  # a range is two
    ("on Monday, Tuesday and 3 May", ["Monday", "Tuesday", "3 May"],
     ["Monday", "Tuesday", "3 May"]),  # no digit after: a list of days
])
def test_a_date_written_with_its_time_or_weekday_is_one(text, parts, joined) -> None:
    from router_svc.classify.pii import whole_dates

    ents = [_e("DATE_TIME", text, p) for p in parts]
    assert [e.text for e in whole_dates(ents, text)] == joined


def test_the_guard_applies_every_convention() -> None:
    from router_svc.classify.recognisers import guarded

    text = "Mr. Kofi Mensah\nAccra, Tuesday 3 June, 10:00"
    model = [_e("PERSON", text, "Mr. Kofi Mensah\nAccra"), _e("DATE_TIME", text, "Tuesday"),
             _e("DATE_TIME", text, "3 June, 10:00")]
    assert [(e.type, e.text) for e in guarded(model, [], text)] == [
        ("TITLE", "Mr."), ("PERSON", "Kofi Mensah"), ("PERSON", "Accra"),
        ("DATE_TIME", "Tuesday 3 June, 10:00")]


def test_a_value_read_across_the_fields_of_a_record_is_cut_at_them() -> None:
    from router_svc.classify.pii import possible_values

    text = ('k.lindgren@telia.se,78.72.140.11,SE,2024-03-02 08:01\n'
            '{"ts":"2024-04-09T14:31:07+05:30","zip":"00100"}\n'
            "Jones;1988-03-14;323-11-3308\n198 Trần Quang Khải;Hà Nội;100000;Vietnam")
    ents = [_e("DATE_TIME", text, "k.lindgren@telia.se,78.72.140.11,SE,2024-03-02 08:01"),
            _e("DATE_TIME", text, 'ts":"2024-04-09T14:31:07+05:30'),
            _e("US_SSN", text, "Jones;1988-03-14;323-11-3308"),
            _e("STREET_ADDRESS", text, "198 Trần Quang Khải;Hà Nội;100000;Vietnam")]
    assert [(e.type, e.text) for e in possible_values(ents, text)] == [
        ("DATE_TIME", "78.72.140.11"), ("DATE_TIME", "2024-03-02 08:01"),
        ("DATE_TIME", "2024-04-09T14:31:07+05:30"),  # fields without a digit are no date
        ("US_SSN", "323-11-3308"),  # "Jones" and the date hold too few digits for an SSN
        ("STREET_ADDRESS", "198 Trần Quang Khải;Hà Nội;100000;Vietnam")]


def test_an_iso_date_read_as_a_phone_number_is_a_date() -> None:
    from router_svc.classify.pii import possible_values

    text = "updated 2023-02-01, call 415-555-2671"
    ents = [_e("PHONE_NUMBER", text, "2023-02-01"), _e("PHONE_NUMBER", text, "415-555-2671")]
    assert [(e.type, e.text) for e in possible_values(ents, text)] == [
        ("DATE_TIME", "2023-02-01"), ("PHONE_NUMBER", "415-555-2671")]


def test_a_name_is_a_hyphenated_word_whole_and_holds_no_digit() -> None:
    from router_svc.classify.pii import possible_values

    text = "Choi Min-jun, Lee Ji-woo and Noa Ben-David paid I 850.00"
    ents = [_e("PERSON", text, "Choi Min"), _e("PERSON", text, "jun"), _e("PERSON", text, "woo"),
            _e("PERSON", text, "Noa Ben"), _e("PERSON", text, "David"), _e("PERSON", text, "I"),
            _e("PERSON", text, "850.00")]
    assert [e.text for e in possible_values(ents, text)] == [
        "Choi Min-jun", "Ji-woo", "Noa Ben-David"]


def test_an_honorific_title_keeps_its_dot() -> None:
    from router_svc.classify.pii import without_honorifics

    text = "Ask Mr. Hakimi or Dr Lee"
    ents = [_e("TITLE", text, "Mr"), _e("PERSON", text, "Hakimi"), _e("TITLE", text, "Dr"),
            _e("PERSON", text, "Lee")]
    assert [e.text for e in without_honorifics(ents, text)] == ["Mr.", "Hakimi", "Dr", "Lee"]


@pytest.mark.parametrize(("text", "title", "kept"), [
    ("You are a helpful assistant.", "assistant", False),
    ("You're an expert Python developer.", "Python developer", False),
    ("Act as a senior software engineer and review this.", "software engineer", False),
    ("Pretend you are a friendly customer support agent.", "customer support agent", False),
    ("I'm a nurse working nights.", "nurse", True),  # the user's own job: a title
    ("Ana Lopes, the Packager, said hi.", "Packager", True),
])
def test_the_role_a_prompt_gives_the_assistant_is_no_title(text, title, kept) -> None:
    from router_svc.classify.pii import possible_values

    found = possible_values([_e("TITLE", text, title)], text)
    assert [e.text for e in found] == ([title] if kept else [])


@pytest.mark.parametrize(("text", "read", "dates"), [
    ("worked 2015-2019 there", ["2015-2019"], ["2015", "2019"]),
    ("from March 2016 – August 2023.", ["March 2016 – August 2023"], ["March 2016", "August 2023"]),
    ("Tuesday 16 July, 10:00–11:30 (GMT+3) ok", ["Tuesday 16 July, 10:00–11:30", "GMT+3"],
     ["Tuesday 16 July, 10:00–11:30 (GMT+3)"]),  # a time range is one; the zone belongs to it
    ("Date: Mon, 8 Jul 2024 07:52:13 +0200\nFrom", ["8 Jul 2024 07:52:13"],
     ["Mon, 8 Jul 2024 07:52:13 +0200"]),
    ("ssh2\nJun 03 02:14:12 host", ["ssh2\nJun 03 02:14:12"], ["Jun 03 02:14:12"]),
    ("Saturday, March 9 at 11 a.m. sharp", ["Saturday, March 9 at 11 a.m"],
     ["Saturday, March 9 at 11 a.m."]),
    ("on 2024-05-01 we", ["2024-05-01"], ["2024-05-01"]),
    ("open Monday – Friday", ["Monday – Friday"], ["Monday – Friday"]),
    ("Wednesday 12 June", ["Wednesday", "12 June"], ["Wednesday 12 June"]),
])
def test_a_date_is_the_dates_it_holds(text, read, dates) -> None:
    from router_svc.classify.pii import whole_dates

    assert [e.text for e in whole_dates([_e("DATE_TIME", text, r) for r in read], text)] == dates


def test_span_index_finds_exactly_the_overlapping_entities() -> None:
    import random

    from router_svc.classify.pii import SpanIndex

    rng = random.Random(7)
    entities = []
    for i in range(300):
        a = rng.randrange(0, 2000)
        entities.append(PiiEntity("PERSON", a, a + rng.choice((1, 3, 8, 40, 400)), str(i), 0.9))
    index = SpanIndex(entities[:150])
    for e in entities[150:]:
        index.add(e)
    for _ in range(500):
        a = rng.randrange(0, 2100)
        b = a + rng.randrange(1, 60)
        want = {x.text for x in entities if x.start < b and a < x.end}
        assert {x.text for x in index.overlapping(a, b)} == want


def test_an_age_is_its_number_under_the_conventions() -> None:
    from router_svc.classify.pii import span_conventions

    text = "a 7-year-old, Pt 67M, aged seventy"
    ages = [_e("AGE", text, "7-year-old"), _e("AGE", text, "67M"), _e("AGE", text, "seventy")]
    assert [e.text for e in span_conventions(ages, text)] == ["7", "67", "seventy"]


@pytest.mark.parametrize("text, value", [("i'm 52, 68 kg, bad knee", "68"),
                                          ('"id": "cus_9Xk2"', "9")])
def test_an_age_that_is_a_quantity_or_a_piece_of_a_code_goes(text: str, value: str) -> None:
    start = text.index(value)
    assert possible_values([PiiEntity("AGE", start, start + len(value), value, 0.9)], text) == []


@pytest.mark.parametrize("text, pieces, expected", [
    ("call 10:00–11:30 today", ["10:00", "11:30"], ["10:00–11:30"]),
    ("open 9:00 am - 5:30 pm", ["9:00 am", "5:30 pm"], ["9:00 am - 5:30 pm"]),
    ("2015–2019 at Acme", ["2015", "2019"], ["2015", "2019"]),  # a range of dates is two
])
def test_a_time_range_is_one_date(text: str, pieces: list[str], expected: list[str]) -> None:
    ents = []
    for p in pieces:
        start = text.index(p)
        ents.append(PiiEntity("DATE_TIME", start, start + len(p), p, 0.9))
    assert [e.text for e in whole_dates(ents, text)] == expected
