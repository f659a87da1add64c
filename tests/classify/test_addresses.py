"""A STREET_ADDRESS's start as the text writes it: names before the street line go, the street
line's opening and a street part before the model's span come back."""

from __future__ import annotations

import pytest

from router_svc.classify.addresses import address_edges, street_addresses
from router_svc.classify.recognisers import guarded, recognise
from tests.classify.spans import ent


@pytest.mark.parametrize("text, model, expected", [
    # a firm or a name before the street line goes
    ("our solicitor at Brennan & Walsh, 14 Fitzwilliam Square, Dublin 2, D02 R290?",
     "Walsh, 14 Fitzwilliam Square, Dublin 2, D02 R290",
     "14 Fitzwilliam Square, Dublin 2, D02 R290"),
    ("Herrn Yusuf Aydın\nKottbusser Damm 71\n10967 Berlin\n",
     "Aydın\nKottbusser Damm 71\n10967 Berlin", "Kottbusser Damm 71\n10967 Berlin"),
    # the street line's opening, and a street part before the span, come back
    ('"address":"House 42, Road 11, Dhanmondi, Dhaka 1209"', "42, Road 11, Dhanmondi, Dhaka 1209",
     "House 42, Road 11, Dhanmondi, Dhaka 1209"),
    ("scaffolding for ul. Grunwaldzka 186, 80-266 Gdańsk by", "Grunwaldzka 186, 80-266 Gdańsk",
     "ul. Grunwaldzka 186, 80-266 Gdańsk"),
    ('"ship_to": "32 Florida Road, Morningside, Durban 4001"', "Morningside, Durban 4001",
     "32 Florida Road, Morningside, Durban 4001"),
    # what stays
    ("Bole Sub-city, Woreda 03, House No. 1457, Addis Ababa",
     "Bole Sub-city, Woreda 03, House No. 1457, Addis Ababa",
     "Bole Sub-city, Woreda 03, House No. 1457, Addis Ababa"),  # no street line after it
    ("Rua Oscar Freire, 1120, apto 52", "Rua Oscar Freire, 1120, apto 52",
     "Rua Oscar Freire, 1120, apto 52"),  # a street word in the first part
    ("USNS Saibara\nFPO AP 12428", "USNS Saibara\nFPO AP 12428", "USNS Saibara\nFPO AP 12428"),
    ("Visit us in Morningside, Durban 4001 today", "Morningside, Durban 4001",
     "Morningside, Durban 4001"),  # nothing street-like before it
])
def test_address_starts(text: str, model: str, expected: str) -> None:
    assert [e.text for e in address_edges([ent("STREET_ADDRESS", text, model)], text)] == [
        expected]


def test_an_address_never_grows_into_another_entity() -> None:
    text = "Ship to 12 Ponsonby Terrace, Auckland 1011"
    street = ent("PERSON", text, "12 Ponsonby Terrace")  # whatever the model made of it
    city = ent("STREET_ADDRESS", text, "Auckland 1011")
    assert address_edges([street, city], text) == [street, city]


def test_the_guard_moves_address_starts_only_with_the_rules_on() -> None:
    text = "Property: 12 Ponsonby Terrace, Ponsonby, Auckland 1011"
    model = [ent("STREET_ADDRESS", text, "Ponsonby, Auckland 1011")]
    assert [e.text for e in guarded(model, recognise(text), text)] == [
        "12 Ponsonby Terrace, Ponsonby, Auckland 1011"]
    assert [e.text for e in guarded(model, None, text)] == ["Ponsonby, Auckland 1011"]


# --------------------------------------------------------------------------- the recogniser

@pytest.mark.parametrize("text, expected", [
    ("Please send it to 221B Baker Street, London NW1 6XE by Friday.",
     "221B Baker Street, London NW1 6XE"),
    ("I moved to Flat 2, 9 Elm Grove, Bristol BS1 5AA last year",
     "Flat 2, 9 Elm Grove, Bristol BS1 5AA"),
    ("Ship to 742 Evergreen Terrace, Springfield, OR 97403.",
     "742 Evergreen Terrace, Springfield, OR 97403"),
    ("Apt 3B, 55 West 72nd Street, New York, NY 10023 – thanks",
     "Apt 3B, 55 West 72nd Street, New York, NY 10023"),
    ("Meine Adresse: Hauptstraße 5, 10115 Berlin", "Hauptstraße 5, 10115 Berlin"),
    ("Calle Mayor 12, 28013 Madrid", "Calle Mayor 12, 28013 Madrid"),
    ("Rua Augusta 274, 1100-053 Lisboa", "Rua Augusta 274, 1100-053 Lisboa"),
    ("my address is 12 rue de la Paix, 75002 Paris", "12 rue de la Paix, 75002 Paris"),
    ("write to PO Box 771, Nairobi and ask", "PO Box 771, Nairobi"),
    ("deliver to 18 ngong road, nairobi please", "18 ngong road, nairobi"),  # lower case
    ("Unit 4\n17 Harbour Street\nWellington 6011\nNew Zealand\n\nHi,",
     "17 Harbour Street\nWellington 6011\nNew Zealand"),  # a line a part
    ('{"to": "5 Cedar Close, Hillcrest, Durban 3610"}', "5 Cedar Close, Hillcrest, Durban 3610"),
    # a town not on the list stays only before a part only an address holds
    ("at 40 Quarry Lane, Thornbury and then", "40 Quarry Lane"),
])
def test_street_addresses(text: str, expected: str) -> None:
    assert [e.text for e in street_addresses(text)] == [expected]


@pytest.mark.parametrize("text", [
    "we walked 5 miles down the road", "Chapter 12 covers it", "Windows 11 crashed again",
    "sent via email 2 times", "I bought 2 Central Park tickets", "the 3 Main Points of the talk",
    "call me on Aug 3, 2024",
])
def test_no_street_address(text: str) -> None:
    assert street_addresses(text) == []


def test_a_rule_address_wins_over_the_models_pieces() -> None:
    text = "Send the keys to 88 Orchard Road, Kampala before noon."
    model = [ent("STREET_ADDRESS", text, "Orchard Road"), ent("GPE", text, "Kampala")]
    found = guarded(model, recognise(text), text)
    assert [(e.type, e.text) for e in found if e.type in ("STREET_ADDRESS", "GPE")] == [
        ("STREET_ADDRESS", "88 Orchard Road, Kampala")]


def test_offsets_hold_where_lower_case_is_longer() -> None:
    # "İ" lower-cases to two characters: the street word must still be found where it is.
    text = "İİİ send it to 9 Elm Road please"
    assert [e.text for e in street_addresses(text)] == ["9 Elm Road"]


@pytest.mark.parametrize("text, model, expected", [
    ("Ship by June 30: PO Box 8812, Eugene, OR 97401 please",
     "30: PO Box 8812, Eugene, OR 97401", "PO Box 8812, Eugene, OR 97401"),
    ("Pick-up at Hertz, 12 Airport Rd, Denver, CO 80249.",
     "Hertz, 12 Airport Rd, Denver, CO 80249", "12 Airport Rd, Denver, CO 80249"),
])
def test_a_rule_address_trims_what_the_model_read_before_its_street_line(
        text: str, model: str, expected: str) -> None:
    found = guarded([ent("STREET_ADDRESS", text, model)], recognise(text), text)
    assert [e.text for e in found if e.type == "STREET_ADDRESS"] == [expected]


@pytest.mark.parametrize("value", ["SKU-88412", "IL"])
def test_one_word_that_is_no_number_is_no_address(value: str) -> None:
    text = f"see {value} today"
    assert guarded([ent("STREET_ADDRESS", text, value)], None, text) == []


def test_two_addresses_listed_with_and_are_two() -> None:
    text = "Send to 12 Elm Road, Leeds LS1 4AP, and 9 Rue Cler, 75007 Paris."
    model = [ent("STREET_ADDRESS", text, "12 Elm Road, Leeds LS1 4AP, and 9 Rue Cler, 75007 Paris")]
    assert [e.text for e in address_edges(model, text)] == [
        "12 Elm Road, Leeds LS1 4AP", "9 Rue Cler, 75007 Paris"]
