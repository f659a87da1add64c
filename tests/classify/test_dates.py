"""The DATE_TIME recogniser: dates, times and weekdays by their shape, what it leaves alone, and
how its pieces meet the span conventions and the model's entities."""

from __future__ import annotations

import pytest

from router_svc.classify.dates import dates
from router_svc.classify.pii import span_conventions
from router_svc.classify.recognisers import guarded, recognise, union
from tests.classify.spans import ent


def found(text: str) -> list[str]:
    return [e.text for e in dates(text)]


@pytest.mark.parametrize("text, values", [
    ("Marlon Jefferson,189-61-8518,1979-11-30,30310", ["1979-11-30"]),
    ("born 14/02/1991 in Leeds", ["14/02/1991"]),
    ("due 07/19/1990.", ["07/19/1990"]),  # month first
    ("signed 30.09.2024, filed", ["30.09.2024"]),
    ("paid on 3/4/22", ["3/4/22"]),
    ("Echo 3/2024: EF 35%.", ["3/2024"]),
    ("dated 1403/04/12 in the Persian calendar", ["1403/04/12"]),
    ("since the 2nd of May. tracking", ["2nd of May"]),
    ("05 OCT EK 202 DUBAI", ["05 OCT"]),
    ("Arrival: Thu 14 Nov 2024 / Departure", ["Thu 14 Nov 2024"]),
    ("Term: 1 February 2025 – 31 January 2026", ["1 February 2025", "31 January 2026"]),
    ("pickup Aug 3, 10:00", ["Aug 3, 10:00"]),
    ("Friday, October 4, 2024 4:51 PM", ["Friday, October 4, 2024 4:51 PM"]),
    ("It was Oct. 5 and", ["Oct. 5"]),
    ("our demo day is on November 12. Let me know", ["November 12"]),  # a sentence ends
    ("since 11 june we", ["11 june"]),
    ("the report of February 2024", ["February 2024"]),
    ("out since March. My mother", ["March"]),
    ("I was born in May 1990 and married in June", ["May 1990", "June"]),
    ("Saturday, March 9 at 11 a.m. (hotel)", ["Saturday, March 9 at 11 a.m."]),
    ("every October the", ["October"]),
    ("are you free Monday afternoon?", ["Monday afternoon"]),
    ("on saturday night around 11pm my phone", ["saturday night", "11pm"]),
    ("closed on Wednesdays", ["Wednesdays"]),
    ("at 7:30am or 11 a.m. or 3 PM", ["7:30am", "11 a.m.", "3 PM"]),
    ("2024-08-19 16:22:03,114 [worker-3] INFO", ["2024-08-19 16:22:03,114"]),
    ("2024-05-02T11:04:19.332Z", ["2024-05-02T11:04:19.332Z"]),
    ('1.2.3.4 - - [14/Mar/2024:09:12:44 +0000] "GET', ["14/Mar/2024:09:12:44 +0000"]),
    ("06-11 18:42:17.901 I/Tag", ["06-11 18:42:17.901"]),
])
def test_dates_and_times_are_found_as_written(text: str, values: list[str]) -> None:
    assert found(text) == values


@pytest.mark.parametrize("text", [
    "version 1.2.3 and pi is 3.14",
    "2000 calories a day in 1 of 3 cases",  # a bare number, a bare year: the model's call
    "you may go; the march was long; an august body",  # words, not months
    "the June report by August Rush",  # names, not months
    "Oct alone and Sept alone",  # abbreviations alone
    "a score of 10-12 and 5/8 of the pie",
    "a month of 13/45/2024, a day 32.01.2024, an hour 25:00",  # no such date or time
    "ip 10.0.0.1 and 2001:db8::1",
    "4111 1111 1111 1111",
    "call (415) 555-2671",
])
def test_what_is_no_date(text: str) -> None:
    assert found(text) == []


def test_offsets_and_score() -> None:
    text = "Arrival: 14 Nov 2024 / Departure"
    (e,) = dates(text)
    assert text[e.start:e.end] == e.text == "14 Nov 2024" and 0 < e.score < 1


def test_the_pieces_keep_to_the_span_conventions() -> None:
    text = "Term: 1 February 2025 - 31 January 2026, Mon 9:00 or Tue 10:00"
    assert span_conventions(dates(text), text) == dates(text)


def test_recognised_after_checked_types_and_beside_them() -> None:
    text = "card 4111 1111 1111 1111 exp 2024-09-18, call +1 415 555 2671 at 3pm"
    assert [(e.type, e.text) for e in recognise(text)] == [
        ("CREDIT_CARD", "4111 1111 1111 1111"), ("DATE_TIME", "2024-09-18"),
        ("PHONE_NUMBER", "+1 415 555 2671"), ("DATE_TIME", "3pm")]



def test_a_longer_rule_date_wins_over_a_model_date_inside_it() -> None:
    text = "2024-08-19 16:22:03,114 [worker-3] INFO paid"
    cut = ent("DATE_TIME", text, "2024-08-19 16:22:03")
    assert [e.text for e in guarded([cut], recognise(text), text)] == ["2024-08-19 16:22:03,114"]


def test_a_longer_rule_date_wins_over_a_model_name_inside_it() -> None:
    text = "Meet me on 12 March, 2pm-ish"
    model = [ent("PERSON", text, "March")]
    assert [(e.type, e.text) for e in union(model, recognise(text))] == [
        ("DATE_TIME", "12 March, 2pm")]
    text = "Ask June about it"  # June alone, the model's PERSON stays
    model = [ent("PERSON", text, "June")]
    assert union(model, recognise(text)) == model


def test_a_date_the_model_missed_is_added() -> None:
    text = "Ahmad Yusuf,ahmad.yusuf@gmail.com,2023-11-02,Kano"
    model = [ent("PERSON", text, "Ahmad Yusuf")]
    assert [(e.type, e.text) for e in guarded(model, recognise(text), text)] == [
        ("PERSON", "Ahmad Yusuf"), ("EMAIL_ADDRESS", "ahmad.yusuf@gmail.com"),
        ("DATE_TIME", "2023-11-02"), ("GPE", "Kano")]


@pytest.mark.parametrize("text, model_span, read", [
    ("05 OCT B6 415 JFK", "05 OCT B6", ["05 OCT"]),  # a flight number read into the date
    ("Arrival: Thu 14 Nov 2024 / Departure", "Thu 14 Nov 2024 /", ["Thu 14 Nov 2024"]),
    ("NJ 07114, Aug 3, 10:00", "07114, Aug 3, 10:00", ["Aug 3, 10:00"]),
    ("on saturday night around 11pm my phone", "saturday night around 11pm",
     ["saturday night", "11pm"]),
    ("on 5 May 2024 at noon", "5 May 2024 at noon", ["5 May 2024 at noon"]),  # noon: a time
    ("2022-present  Thoughtworks", "2022-present", ["2022-present"]),  # no rule date inside
])
def test_rule_dates_reread_a_model_date_they_account_for(
        text: str, model_span: str, read: list[str]) -> None:
    model = [ent("DATE_TIME", text, model_span)]
    assert [e.text for e in union(model, recognise(text))] == read
