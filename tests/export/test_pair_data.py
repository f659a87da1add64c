"""The hit verifier's training pairs: meaning-changed copies change what they say they change,
surface edits keep every word, and the labelled set is balanced in order."""

from __future__ import annotations

import random
import re

import pytest

from export import pair_data as P
from router_svc.ops.pairs import Pair


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


@pytest.mark.parametrize("text, fn, expected", [
    ("How do I convert MP4 to AVI?", P.swap_around_relation, "How do I convert AVI to MP4?"),
    ("What is the best strategy for France to beat Germany?", P.swap_names,
     "What is the best strategy for Germany to beat France?"),
    ("The price rose after the merger.", P.flip_direction, "The price fell after the merger."),
    ("Is it possible to travel to Paris?", P.negate_adjective,
     "Is it impossible to travel to Paris?"),
    ("It was not safe.", P.toggle_negation, "It was safe."),
    ("Is it safe?", P.toggle_negation, "Is it not safe?"),
    ("You can't park here.", P.toggle_negation, "You can park here."),
])
def test_each_change_says_something_else(text, fn, expected) -> None:
    outs = {fn(text, random.Random(seed)) for seed in range(20)}
    assert expected in outs


def test_no_change_where_nothing_applies() -> None:
    rng = random.Random(0)
    assert P.swap_names("the cat sat on the mat", rng) is None
    assert P.change_number("no digits here", rng) is None
    assert P.negate_adjective("a plain sentence", rng) is None
    # "to" before a verb is an infinitive, not a direction
    assert P.flip_direction("I want to go home", rng) is None


def test_number_changes_the_number_only() -> None:
    for seed in range(20):
        out = P.change_number("Add 1,000 apples to 25 pears", random.Random(seed))
        assert out is not None and out != "Add 1,000 apples to 25 pears"
        assert words(out)[0] == "add" and "apples" in out and "pears" in out


def test_surface_edits_keep_every_content_word() -> None:
    text = "What is the boiling point of water at sea level?"
    for seed in range(30):
        out = P.surface_edit(text, random.Random(seed))
        assert out != text
        extra = set(words(out)) - set(words(text))
        assert extra <= {"please", "thanks"}
        assert [w for w in words(out) if w not in ("please", "thanks")] == words(text)


def test_labelled_pairs_take_both_orders_and_label_the_copies() -> None:
    pairs = [("msr", Pair(f"The cat {i} sat on the mat before Alice came.",
                          f"A cat {i} was sitting on the mat before Alice came.", 1.0, True))
             for i in range(200)] + [("msr", Pair("x", "y", 0.0, False))]
    from export.pair_verifier import labelled

    data = labelled(pairs, ["How do I convert MP4 to AVI?"] * 20, random.Random(0), ["Bob"])
    own = [p for p in data if p.kind == "msr"]
    assert len(own) == 201 and sum(p.label for p in own) == 200
    firsts = sum(p.a.startswith("The cat") for p in own if p.label)
    assert 60 < firsts < 140  # either order, about half each
    changed = [p for p in data if p.kind not in ("msr", "identity", "identity_question")]
    assert changed and all(p.label == 0 and p.a != p.b for p in changed)
    assert all(p.label == 1 for p in data if p.kind.startswith("identity"))
