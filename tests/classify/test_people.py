"""Person names as the text writes them: the model's PERSON spans grown to the whole name,
cut at words that are no name, and names the model read as places or organisations."""

from __future__ import annotations

import pytest

from router_svc.classify.people import (
    first_names,
    full_names,
    is_name_word,
    titled_names,
    whole_names,
)
from router_svc.classify.recognisers import guarded, recognise
from tests.classify.spans import ent


def read(text: str, kind: str, value: str) -> list[tuple[str, str]]:
    return [(e.type, e.text) for e in whole_names([ent(kind, text, value)], text)]


def test_the_first_names_list_holds_names_of_many_cultures_and_no_common_words() -> None:
    assert {"Aleksander", "Valentina", "Kwabena", "Hedvig", "Camille"} <= first_names()
    assert not {"Will", "Grace", "May", "Mark"} & first_names()


@pytest.mark.parametrize("word, name", [
    ("Nowak", True), ("O'Brien", True), ("Seo-yeon", True), ("Aleksander", True),
    ("Thanks", False), ("Monday", False), ("Hospital", False), ("Street", False),
    ("Dr", False), ("RR", False), ("nowak", False),
])
def test_name_words(word: str, name: bool) -> None:
    assert is_name_word(word) is name


@pytest.mark.parametrize("text, kind, value, expected", [
    # a surname after a first name, up to a possessive or punctuation
    ("verses from Yuri Bulgakov's Cautionary Tales", "PERSON", "Yuri",
     [("PERSON", "Yuri Bulgakov")]),
    ("ask Valentina Rossi: she knows", "PERSON", "Valentina", [("PERSON", "Valentina Rossi")]),
    # a first name before a surname
    ("please contact Aleksander Nowak (a.nowak@x.pl)", "PERSON", "Nowak",
     [("PERSON", "Aleksander Nowak")]),
    # words that are no name leave it; initials and particles stay
    ("as regular RR commenter Stephan Fenstermacher points out", "PERSON",
     "RR commenter Stephan Fenstermacher", [("PERSON", "Stephan Fenstermacher")]),
    ("hello Amir jan, hope all is good", "PERSON", "Amir jan", [("PERSON", "Amir")]),
    ("reporting to J. Whitlock today", "PERSON", "J. Whitlock", [("PERSON", "J. Whitlock")]),
    ("Ludwig van Beethoven wrote it", "PERSON", "Ludwig van Beethoven",
     [("PERSON", "Ludwig van Beethoven")]),
    ("cormac had given it", "PERSON", "cormac", [("PERSON", "cormac")]),  # all lower case
    # a person's name the model read as a place or an organisation
    ("Have you been to a Hedvig Arvidsson concert?", "GPE", "Hedvig Arvidsson",
     [("PERSON", "Hedvig Arvidsson")]),
    ("1. Piotr – order the scaffolding", "ORGANIZATION", "Piotr", [("PERSON", "Piotr")]),
    # and what stays as it is
    ("a trip to Florence next week", "GPE", "Florence", [("GPE", "Florence")]),
    ("paid by Wells Fargo", "ORGANIZATION", "Wells Fargo", [("ORGANIZATION", "Wells Fargo")]),
    ("Ask Priya Monday morning", "PERSON", "Priya", [("PERSON", "Priya")]),
    ("Sent by Kevin Thompson Consulting", "PERSON", "Kevin",
     [("PERSON", "Kevin Thompson")]),  # not over the organisation's word
    ("Tell Maria the news", "PERSON", "Maria", [("PERSON", "Maria")]),
    # kin words are no part of a name; roles are a TITLE of their own
    ("Send a card to Auntie Folake for Easter", "PERSON", "Auntie Folake",
     [("PERSON", "Folake")]),
    ("a letter to Vice President Kamala Reyes today", "PERSON", "Vice President Kamala Reyes",
     [("TITLE", "Vice President"), ("PERSON", "Kamala Reyes")]),
    # in a text that capitalises names, a lower-case word or a code identifier is none; a
    # lower-case first name still is
    ("Use lodash for this, Mr Brown said", "PERSON", "lodash", []),
    ("Call setIban() before Save in the Form", "PERSON", "setIban", []),
    ("Ask Tom whether maria can come", "PERSON", "maria", [("PERSON", "maria")]),
    # a hyphenated given name takes the surname after it, a word or not
    ("I met Ji-hoon Song at the fair", "PERSON", "Ji-hoon", [("PERSON", "Ji-hoon Song")]),
    # codes, greetings and abbreviations are no names
    ("Flight BA117 lands at LHR at noon", "PERSON", "LHR", []),
    ("Estimado Sr. Pérez, le escribo", "PERSON", "Estimado", []),
    ("Call Ext. 4412 for billing", "PERSON", "Ext", []),
])
def test_whole_names(text: str, kind: str, value: str, expected: list[tuple[str, str]]) -> None:
    assert read(text, kind, value) == expected


def test_growth_never_takes_another_entitys_words() -> None:
    text = "TO:\nGrace Mwale Plot 1023, Kabulonga Road"
    entities = [ent("PERSON", text, "Grace"),
                ent("STREET_ADDRESS", text, "Mwale Plot 1023, Kabulonga Road")]
    assert whole_names(entities, text) == entities


def test_growth_stays_on_its_line() -> None:
    text = "Regards,\nYuri\nBulgakov Ltd"
    assert read(text, "PERSON", "Yuri") == [("PERSON", "Yuri")]


def test_the_guard_reads_names_whole_only_with_the_rules_on() -> None:
    text = "please contact Aleksander Nowak today"
    model = [ent("PERSON", text, "Nowak")]
    assert [e.text for e in guarded(model, recognise(text), text)] == ["Aleksander Nowak"]
    assert [e.text for e in guarded(model, None, text)] == ["Nowak"]


@pytest.mark.parametrize("text, expected", [
    ("How do I ask Professor Mwangi for an extension", [("TITLE", "Professor"),
                                                        ("PERSON", "Mwangi")]),
    ("Estimado Sr. Gutiérrez:\nLe confirmamos", [("TITLE", "Sr."), ("PERSON", "Gutiérrez")]),
    ("Passenger: MR ABDULLAH KHALID AL-MANSOORI\n05 OCT", [
        ("TITLE", "MR"), ("PERSON", "ABDULLAH KHALID AL-MANSOORI")]),
    ("Referred by Dr. Tran Thi Lan (Bach Mai Hospital)", [("TITLE", "Dr."),
                                                         ("PERSON", "Tran Thi Lan")]),
    ("Dear Mr. J. Smith's office", [("TITLE", "Mr."), ("PERSON", "J. Smith")]),
    ("Miss the bus, Ms. Word and Mr. and Mrs. nobody", []),  # no name after them
    ("Sr Developer at Wipro", []),
])
def test_an_honorific_and_the_name_after_it(text: str, expected: list[tuple[str, str]]) -> None:
    assert [(e.type, e.text) for e in titled_names(text)] == expected


def test_the_models_reading_of_a_titled_name_stays_and_a_longer_one_wins() -> None:
    text = "reading w/ Ms Delacroix: needs practice"
    model = [ent("PERSON", text, "Delacroix", 0.95)]
    assert [(e.type, e.text, e.score) for e in guarded(model, recognise(text), text)] == [
        ("TITLE", "Ms", 0.8), ("PERSON", "Delacroix", 0.95)]


@pytest.mark.parametrize("text, expected", [
    ("From: Deborah Kline <dkline@example.com>", ["Deborah Kline"]),
    ("Camille Laurent,c.laurent@orange.fr,2024-01-07,Lyon", ["Camille Laurent"]),
    ("1  Kwame Boateng      376561405323525", ["Kwame Boateng"]),
    ("Mary Ann Smith and Jacob A. Riis", ["Mary Ann Smith", "Jacob A. Riis"]),
    # places, ranks, an initial alone, a common word after the first name
    ("North Carolina, Ann Arbor, King George, Anna K. and Victoria Station", []),
])
def test_a_first_name_and_the_name_words_after_it(text: str, expected: list[str]) -> None:
    assert [e.text for e in full_names(text)] == expected


def test_listed_names_come_before_a_full_name_inside_them() -> None:
    text = "a week in Ho Chi Minh City, then Imam Khomeini Hospital"
    assert [(e.type, e.text) for e in recognise(text)] == [
        ("GPE", "Ho Chi Minh City"), ("ORGANIZATION", "Imam Khomeini Hospital")]


def test_a_person_named_again_by_one_word_of_the_name() -> None:
    text = "Poems by Ilse K. Marwitz. Nobody rhymes like Marwitz, or like Ilse's sister Brigid."
    model = [ent("PERSON", text, "Ilse K. Marwitz")]
    found = [(e.type, e.text, e.start) for e in whole_names(model, text)]
    assert found == [("PERSON", "Ilse K. Marwitz", 9), ("PERSON", "Marwitz", 45),
                     ("PERSON", "Ilse", 62)]


@pytest.mark.parametrize("text, model, expected", [
    ("Oduya and Brennick wrote the score together.", "Oduya", ["Oduya", "Brennick"]),
    ("Ask Brennick and Oduya about it", "Oduya", ["Brennick", "Oduya"]),
    ("Oduya and Lagos both", "Oduya", ["Oduya"]),  # a listed place
    ("Oduya and Partners Ltd", "Oduya", ["Oduya"]),  # no name word, then a capital
])
def test_a_name_joined_to_a_person_by_and(text: str, model: str, expected: list[str]) -> None:
    assert [e.text for e in whole_names([ent("PERSON", text, model)], text)] == expected


@pytest.mark.parametrize("text, title, kept", [
    ("Notes: Ms Ferreira - science teacher - says hi", "science teacher", True),
    ("Ana Ruiz, head of sales, called", "head of sales", True),
    ("I'm a pharmacist and work nights", "pharmacist", False),
    ("applying for a data engineer role", "data engineer", False),
    ("our Regional Controller will sign", "Regional Controller", True),  # written as a title
])
def test_a_lower_case_job_is_a_title_only_beside_a_person(text: str, title: str,
                                                          kept: bool) -> None:
    model = [ent("TITLE", text, title)]
    for name in ("Ferreira", "Ana Ruiz"):
        if name in text:
            model.append(ent("PERSON", text, name))
    found = [e.text for e in whole_names(model, text) if e.type == "TITLE"]
    assert found == ([title] if kept else [])
