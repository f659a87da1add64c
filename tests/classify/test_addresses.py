"""A STREET_ADDRESS's start as the text writes it: names before the street line go, the street
line's opening and a street part before the model's span come back."""

from __future__ import annotations

import pytest

from router_svc.classify.addresses import address_edges
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
