"""The word lists' rules (export/gazetteer.py) and the committed lists the router reads."""

from __future__ import annotations

from export.gazetteer import common_words, fold
from router_svc.classify.names import common_words as shipped_common_words
from router_svc.classify.names import word_list


def test_a_word_mostly_written_in_lower_case_is_common() -> None:
    texts = ["The bank is open.", "A bank and a river bank", "Bank of Mars", "In the bank",
             "We met in London.", "London is big; london fog", "London calling"]
    common = common_words(texts)
    assert "bank" in common  # 4 of 5 in lower case
    assert "london" not in common  # 1 of 4
    assert "mars" not in common  # seen once


def test_a_sentences_first_word_does_not_count() -> None:
    texts = ["Find the sum. Find x.", "Find the root; we find it.", "Then find y", "You find z"]
    assert "find" in common_words(texts)


def test_lower_cased_texts_say_nothing() -> None:
    assert common_words(["durban is warm"] * 5) == set()


def test_fold_drops_accents() -> None:
    assert fold("São Paulo") == "Sao Paulo" and fold("Łódź") != "Łódź"


def test_the_shipped_lists_hold_what_the_recognisers_rely_on() -> None:
    places = word_list("places.txt")
    assert {"Canada", "London", "New York", "Ho Chi Minh City", "Sao Paulo", "US"} <= places
    assert not {"Reading", "Mobile", "Java", "Hub"} & places  # words or other things first
    assert {"in", "visit", "medical"} <= shipped_common_words()
    assert not {"london", "michael"} & shipped_common_words()
