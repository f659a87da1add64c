"""Place and organisation names from word lists: what they find, what they leave to the model,
and how they join the model's entities."""

from __future__ import annotations

import pytest

from router_svc.classify.names import (
    LISTED,
    brands,
    groups_named,
    known_brands,
    name_edges,
    organisations,
    places,
    region_codes,
)
from router_svc.classify.pii import PiiEntity
from router_svc.classify.recognisers import guarded, recognise, union
from tests.classify.spans import ent


def texts(entities: list[PiiEntity]) -> list[str]:
    return [e.text for e in entities]


@pytest.mark.parametrize(("text", "want"), [
    ("filing taxes in Canada for the first time", ["Canada"]),
    ("moved from Manila to Calgary last May", ["Manila", "Calgary"]),
    ("a week in Ho Chi Minh City, then Tel Aviv", ["Ho Chi Minh City", "Tel Aviv"]),
    ("BOARDING PASS DUBAI -> NEW YORK", ["DUBAI", "NEW YORK"]),
    ("we live in the US now, she is in the UK", ["US", "UK"]),
    ("Houston, Texas", ["Houston", "Texas"]),
    ("In London the rent is high.", ["London"]),  # a sentence's first word is no name
    ("São Paulo or Sao Paulo", ["São Paulo", "Sao Paulo"]),
    ("stolen in Rio de Janeiro, then Frankfurt am Main", ["Rio de Janeiro", "Frankfurt am Main"]),
    ("77 Kingsway, Manchester M19 2LL", ["Manchester"]),  # a postcode after it is no name
])
def test_places_found(text: str, want: list[str]) -> None:
    assert texts(places(text)) == want


@pytest.mark.parametrize("text, want", [
    ("i live in london", ["london"]),
    ("the shipment to novosibirsk is late", ["novosibirsk"]),
    ("flying from new york to lagos tmrw", ["new york", "lagos"]),
    ("05 OCT DUBAI DXB 02:40 -> NEW YORK JFK 08:25", ["DUBAI", "NEW YORK"]),  # airport codes
])
def test_places_as_prompts_type_them(text: str, want: list[str]) -> None:
    assert texts(places(text)) == want


@pytest.mark.parametrize("text", [
    "Michael Jordan and Paris Hilton",  # inside a longer name
    "Mr. Houston called",  # after an honorific
    "32 Florida Road, Morningside",  # a street
    "write to paris@example.com or see lyon.fr",  # e-mail and domain parts
    "LET US KNOW BY FRIDAY",  # an upper-case pronoun
    "Reading is fun. Nice work. Split the bill.",  # common words are not on the list
    "i was reading in nice weather",  # lower case: only a place that is no common word
    "lunch at home with mum",
    'users.insert({ name: "Le Quang Vinh" })',  # a name's last word
    "Translate this Java to Kotlin",
])
def test_places_left_alone(text: str) -> None:
    assert places(text) == []


@pytest.mark.parametrize(("text", "want"), [
    ("she studied at the University of Tehran", ["University of Tehran"]),
    ("American University of Beirut and Seoul National University",
     ["American University of Beirut", "Seoul National University"]),
    ("a job at Tata Consultancy Services", ["Tata Consultancy Services"]),
    ("Deutsche Bank AG, Frankfurt", ["Deutsche Bank AG"]),
    ("invoice from Bakkerij Smit B.V. today", ["Bakkerij Smit B.V."]),
    ("Acme Inc. and TechnoMarket Online S.L.", ["Acme Inc.", "TechnoMarket Online S.L."]),
    ("shares in Vodafone Group plc rose", ["Vodafone Group"]),
    ("treated at St. Luke's International Hospital", ["St. Luke's International Hospital"]),
    ("Leeds City Council and the Natural History Museum",
     ["Leeds City Council", "Natural History Museum"]),
    ("a room at Hotel Casa Palacio", ["Hotel Casa Palacio"]),
    ("Universidad de los Andes", ["Universidad de los Andes"]),
])
def test_organisations_found(text: str, want: list[str]) -> None:
    assert texts(organisations(text)) == want
    assert all(e.type == "ORGANIZATION" and e.score == LISTED for e in organisations(text))


@pytest.mark.parametrize("text", [
    "the Medical Centre on the corner",  # generic words only
    "call Customer Services",
    "Head of Department",
    "## Introduction To The Bank",  # a title-case heading
    "Our School is closed",
    "Guest: Arash Farahani\nHotel: none",  # a run ends at a line break
    "Let A = 3, B = 4. Find AB.",  # a sentence's first word is no name
])
def test_organisations_left_alone(text: str) -> None:
    assert organisations(text) == []


def test_a_place_inside_an_organisation_is_the_organisation() -> None:
    found = [(e.type, e.text) for e in recognise("an offer from the University of Bergen")]
    assert found == [("ORGANIZATION", "University of Bergen")]


def test_union_keeps_the_models_reading_of_the_same_span() -> None:
    text = "ask Lyon about it"
    model = [PiiEntity("PERSON", 4, 8, "Lyon", 0.93)]
    assert union(model, places(text)) == model


def test_union_takes_the_longer_listed_name() -> None:
    text = "an offer from the University of Bergen"
    model = [PiiEntity("GPE", 32, 38, "Bergen", 0.9)]
    (kept,) = union(model, recognise(text))
    assert (kept.type, kept.text) == ("ORGANIZATION", "University of Bergen")


@pytest.mark.parametrize(("text", "kind", "value", "want"), [
    ("Ahmad Yusuf,2023-11-02,Kano\n", "PERSON", "Kano", "GPE"),  # a listed place the model
    ("Thoughtworks, Pune — Lead Consultant", "ORGANIZATION", "Pune", "GPE"),  # read as a name
    ("Florence is my sister", "PERSON", "Florence", "PERSON"),  # a first name: the model's
])
def test_a_listed_place_on_a_models_name_span(text: str, kind: str, value: str,
                                              want: str) -> None:
    start = text.index(value)
    model = [PiiEntity(kind, start, start + len(value), value, 0.95)]
    assert [e.type for e in union(model, recognise(text)) if e.text == value] == [want]


@pytest.mark.parametrize(("text", "want"), [
    ("my card was charged twice by Ryanair. Draft a complaint", ["Ryanair"]),
    ("how do I decline a job offer from Zalando? the manager", ["Zalando"]),
    ("previously at Monzo and Deliveroo. looking for roles", ["Monzo", "Deliveroo"]),
    ("recieved a letter from HMRC saying i owe", ["HMRC"]),
    ("an interview with DigitalOcean next week", ["DigitalOcean"]),
    # a first name, a place, a common word, a language: not organisations
    ("a letter from John, she left Paris, a reply from Support, translated from English", []),
])
def test_bare_organisation_names_after_the_words_that_announce_one(
        text: str, want: list[str]) -> None:
    assert texts(organisations(text)) == want


# --------------------------------------------------------------------------- the model's edges

@pytest.mark.parametrize("text, model, expected", [
    ("The Kruger Cement plant in Pretoria is closing", "Kruger Cement plant", ["Kruger Cement"]),
    ("a contract (Mapna Group) for the turbines", "Mapna Group)", ["Mapna Group"]),
    ("Do I need a permit for a shed, Mr Lee?", "permit", []),  # a common word, no name
    ('She works at "Blue Finch" now', '"Blue Finch"', ['"Blue Finch"']),  # balanced quotes
    ("asked stillwater supercomputing inc. for a quote", "stillwater supercomputing inc.",
     ["stillwater supercomputing inc."]),  # a text all in lower case writes names so too
    ("I work at The Birch, Hale and Moss firm", "The Birch, Hale and Moss",
     ["Birch, Hale and Moss"]),
    ("I read The Economist daily", "The Economist", ["The Economist"]),  # one word after it
])
def test_name_edges(text: str, model: str, expected: list[str]) -> None:
    found = name_edges([ent("ORGANIZATION", text, model)], text)
    assert [e.text for e in found] == expected


def test_an_organisation_with_its_legal_form_is_no_person() -> None:
    text = "Invoice from Bakkerij Jansen B.V. for the bread, and one from Piet Jansen."
    model = [ent("PERSON", text, "Bakkerij Jansen B.V."), ent("PERSON", text, "Piet Jansen")]
    found = guarded(model, recognise(text), text)
    assert [(e.type, e.text) for e in found] == [
        ("ORGANIZATION", "Bakkerij Jansen B.V."), ("PERSON", "Piet Jansen")]


@pytest.mark.parametrize("text, model, expected", [
    ("Wine from Southern Cyprus is cheap", "Southern Cyprus", ["Cyprus"]),
    ("We flew to Western Australia", "Western Australia", ["Western Australia"]),  # listed
    ("He grew up in the Southern part", "Southern", []),
    ("Head North on the A1", "North", ["North"]),  # left to the model
])
def test_places_without_direction_words(text: str, model: str, expected: list[str]) -> None:
    assert [e.text for e in name_edges([ent("GPE", text, model)], text)] == expected


# --------------------------------------------------------------------------- NRP

@pytest.mark.parametrize("text, want", [
    ("We tried a new Peruvian place last night", ["Peruvian"]),
    ("my husband is Welsh and I'm Kenyan", ["Welsh", "Kenyan"]),
    ("a Sri Lankan tea and a Puerto Rican dish", ["Sri Lankan", "Puerto Rican"]),
    ("she is Korean-Canadian", ["Korean-Canadian"]),
    ("the Democrats and Republicans agreed", ["Democrats", "Republicans"]),
    ("a Hindu temple and a Lutheran church", ["Hindu", "Lutheran"]),
    ("best ugandan rolex recipe?", ["ugandan"]),  # typed in lower case
])
def test_groups_named(text: str, want: list[str]) -> None:
    assert texts(groups_named(text)) == want


@pytest.mark.parametrize("text", [
    "Answer in French.", "Please translate this into German for my boss",
    "French lessons for kids", "She speaks Danish and Dutch", "Home language: Thai, Lao",
    "nail polish remover", "Christian Bale's films",
])
def test_groups_named_not_as_languages(text: str) -> None:
    assert [e for e in recognise(text) if e.type == "NRP"] == []


def test_a_models_group_used_as_a_language_goes() -> None:
    text = "Reply in Spanish."
    assert name_edges([ent("NRP", text, "Spanish")], text) == []


@pytest.mark.parametrize("text, kind, value, expected", [
    ("our CFO signed it", "ORGANIZATION", "CFO", ("TITLE", "CFO")),
    ("hosted on DigitalOcean since May", "GPE", "DigitalOcean", ("ORGANIZATION", "DigitalOcean")),
    ("flew into McAllen on Friday", "GPE", "McAllen", ("GPE", "McAllen")),
])
def test_names_the_model_read_as_another_kind(text: str, kind: str, value: str,
                                              expected: tuple[str, str]) -> None:
    assert [(e.type, e.text) for e in name_edges([ent(kind, text, value)], text)] == [expected]


def test_a_model_name_the_rules_read_as_two() -> None:
    text = "I worked at Zenvora and Quillbase before."
    model = [ent("ORGANIZATION", text, "Zenvora and Quillbase", 0.95)]
    rules = [ent("ORGANIZATION", text, "Zenvora"), ent("ORGANIZATION", text, "Quillbase")]
    assert [(e.text, e.score) for e in union(model, rules)] == [
        ("Zenvora", 0.95), ("Quillbase", 0.95)]


@pytest.mark.parametrize("text, want", [
    ("my Zenvora account got locked", ["Zenvora"]),
    ("The Quillbase driver never came", ["Quillbase"]),
    ("I rang Telvio customer care twice", ["Telvio"]),
    ("the Monday delivery was late", []),  # a weekday
    ("ask John support", []),  # a first name
    ("The app crashed", []),
])
def test_organisations_before_what_their_customers_write(text: str, want: list[str]) -> None:
    assert texts(organisations(text)) == want


# --------------------------------------------------------------------------- region codes

@pytest.mark.parametrize("text, want", [
    ('{"name": "Ola", "state": "TX", "zip": "75001"}', ["TX"]),
    ("id,ip,country\n7,81.2.69.142,GB\n", ["GB"]),
    ("Kim;1990-01-02;WA;active", ["WA"]),
    ('{"status": "OK", "lang": "NO"}', []),  # values that are words
    ("TX is big", []),  # no field of a record
])
def test_region_codes_as_record_fields(text: str, want: list[str]) -> None:
    assert texts(region_codes(text)) == want


@pytest.mark.parametrize("text, model, expected", [
    ("NEW YORK JFK 08:25", "NEW YORK JFK", ["NEW YORK"]),
    ("Best pho in Hanoi? I tried pho at Nam's", "pho", []),
])
def test_the_models_place_spans(text: str, model: str, expected: list[str]) -> None:
    assert [e.text for e in name_edges([ent("GPE", text, model)], text)] == expected


def test_well_known_brands_from_the_public_suffix_list() -> None:
    assert {"Netflix", "HSBC", "Samsung"} <= brands()
    assert not {"Reading", "Xyz", "Vegas"} & brands()  # words, generic domains, places
    text = "I pay for Netflix and bank with HSBC."
    assert texts(known_brands(text)) == ["Netflix", "HSBC"]
