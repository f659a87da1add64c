"""Rule recognisers beside the model: each with values that pass and fail its check, the union
with the model's entities, and the classifier's decode with the rules on and off."""

from __future__ import annotations

import numpy as np
import pytest

from router_svc.classify import recognisers as rec
from router_svc.classify.batcher import RowOutput
from router_svc.classify.classifier import Classifier, plan_rows
from router_svc.classify.recognisers import recognise, union
from router_svc.classify.tokenization import Window
from router_svc.labels import PII_TAGS, PII_TYPES
from tests.classify.spans import ent


def found(fn, text: str) -> list[str]:
    return [e.text for e in fn(text)]


def typed(text: str) -> list[tuple[str, str]]:
    return [(e.type, e.text) for e in recognise(text)]


def test_every_rule_type_is_a_label() -> None:
    assert set(PII_TYPES) >= rec.RULE_TYPES
    assert {e.type for e in recognise(
        "4111 1111 1111 1111 a@example.com 10.0.0.1 zip 94107 aged 7")} <= rec.RULE_TYPES


def test_offsets_point_at_the_value() -> None:
    text = "Card: 4007070753690781, thanks"
    (e,) = recognise(text)
    assert text[e.start:e.end] == e.text == "4007070753690781" and e.score == rec.CHECKED


# --------------------------------------------------------------------------- cards, IBAN, SSN


@pytest.mark.parametrize("text, value", [
    ("cc 4007070753690781 on my e-mail", "4007070753690781"),
    ("card 4111 1111 1111 1111 please", "4111 1111 1111 1111"),
    ("card 4111-1111-1111-1111.", "4111-1111-1111-1111"),
    ("amex 3782 822463 10005", "3782 822463 10005"),
    ("maestro 503802053770", "503802053770"),  # 12 digits: Maestro only
    ("card 4111 1111 1111 1111 2024", "4111 1111 1111 1111"),  # a year after it
])
def test_card_numbers_that_pass_luhn_and_have_an_issuer(text: str, value: str) -> None:
    assert found(rec.credit_cards, text) == [value]


@pytest.mark.parametrize("text", [
    "order 4007070753690782 shipped",  # 16 digits, Luhn fails: an order number
    "ref 7992739871300000",  # passes Luhn, but no card scheme starts with 7
    "id 123456789012",  # 12 digits, Luhn fails, not Maestro
    "4111 1111 1111 1111a",  # glued to a word
    "v1.4111111111111111",
])
def test_numbers_that_are_not_cards(text: str) -> None:
    assert rec.credit_cards(text) == []


def test_ibans_pass_mod_97_and_their_country_length() -> None:
    assert found(rec.ibans, "IBAN GB49AHER72277635787006.") == ["GB49AHER72277635787006"]
    assert found(rec.ibans, "to DE89 3704 0044 0532 0130 00 FROM me") == [
        "DE89 3704 0044 0532 0130 00"]
    assert rec.ibans("IBAN GB49AHER72277635787007") == []  # one digit off: mod 97 fails
    assert rec.ibans("IBAN GB49AHER7227763578700") == []  # one short for GB
    assert rec.ibans("XX49AHER72277635787006") == []  # no such country


@pytest.mark.parametrize("text, ok", [
    ("His social security number is 853-37-1694", True),
    ("ssn 123 45 6789", True),  # spaced: after "ssn"
    ("SSN: 123456789", True),
    ("call 123 45 6789", False),  # spaced, no SSN word
    ("number 123456789", False),
    ("000-12-3456", False),
    ("666-12-3456", False),
    ("900-12-3456", False),
    ("987-65-4321", False),
    ("123-00-4567", False),
    ("123-45-0000", False),
    ("123-45-67890", False),
])
def test_ssn_area_group_serial(text: str, ok: bool) -> None:
    assert bool(rec.us_ssns(text)) is ok


# --------------------------------------------------------------------------- e-mail, IP


def test_emails_need_a_public_suffix() -> None:
    assert found(rec.emails, "write to UtaKortig@jourrapide.com?") == ["UtaKortig@jourrapide.com"]
    assert found(rec.emails, "j.doe+x@mail.example.co.uk.") == ["j.doe+x@mail.example.co.uk"]
    assert rec.emails("user@localhost") == []
    assert rec.emails("me@host.invalidtld") == []
    assert rec.emails("pip install pkg@1.2") == []
    assert found(rec.emails, "@team: mail a@example.com or b@example.org") == [
        "a@example.com", "b@example.org"]
    # a quote before the name opens a string literal; inside a name it stays
    assert found(rec.emails, "to='dwayne.harrington@comcast.net'") == [
        "dwayne.harrington@comcast.net"]
    assert found(rec.emails, "mail o'brien@example.ie") == ["o'brien@example.ie"]
    # URL-encoded, as in a query string
    assert found(rec.emails, "?name=Agnes%20Wanjiku&email=agnes.wanjiku%40gmail.com&zip=1") == [
        "agnes.wanjiku%40gmail.com"]
    assert rec.emails("a%40b is not one, nor 50%40 off") == []


@pytest.mark.parametrize("text, value", [
    ("address 41.173.96.26 blocked", "41.173.96.26"),
    ("at 192.168.0.1.", "192.168.0.1"),
    ("got 6e40:4041:c617:e898:c11:40d2:c669:2eb4 here", "6e40:4041:c617:e898:c11:40d2:c669:2eb4"),
    ("v6 2001:db8::8a2e:370:7334 here", "2001:db8::8a2e:370:7334"),
    ("mapped ::ffff:192.0.2.128 here", "::ffff:192.0.2.128"),
])
def test_ip_addresses(text: str, value: str) -> None:
    assert found(rec.ip_addresses, text) == [value]


@pytest.mark.parametrize("text", [
    "256.1.1.1", "01.02.03.04", "1.2.3.4.5", "version 1.2.3.4", "v1.2.3.4", "at 10:30:45",
    "std::max", "localhost ::1", "12:ab:cd",
])
def test_not_ip_addresses(text: str) -> None:
    assert rec.ip_addresses(text) == []


# --------------------------------------------------------------------------- URLs, domains


@pytest.mark.parametrize("text, value", [
    ("Just posted a photo https://www.ArtistMovie.se/", "https://www.ArtistMovie.se/"),
    ("see https://en.wikipedia.org/wiki/Foo_(bar)).", "https://en.wikipedia.org/wiki/Foo_(bar)"),
    ("(http://example.com/a?b=1)", "http://example.com/a?b=1"),
    ("go to www.bbc.co.uk.", "www.bbc.co.uk"),
    ("https://user@shop.example.org:8080/x", "https://user@shop.example.org:8080/x"),
])
def test_urls_are_one_domain_name_span(text: str, value: str) -> None:
    assert typed(text) == [("DOMAIN_NAME", value)]


def test_urls_need_a_public_suffix() -> None:
    assert rec.urls("http://intranet/wiki") == [] and rec.urls("https://x.notatld/") == []


@pytest.mark.parametrize("text, value", [
    ("visit example.com today", "example.com"),
    ("at bbc.co.uk,", "bbc.co.uk"),
    ("on sub.example.org.", "sub.example.org"),
    ("EXAMPLE.COM", "EXAMPLE.COM"),
    ("bit.ly", "bit.ly"),
])
def test_bare_domains(text: str, value: str) -> None:
    assert found(rec.domains, text) == [value]


@pytest.mark.parametrize("text", [
    "open report.pdf", "run main.py", "see README.md", "os.path.join(a, b)", "self.name",
    "df.info()", "user.id", "foo.bar()", "the end.It was", "x.invalidtld", "e.g. this",
    "3.14 and 1.5", "archive.zip", "request.app",
])
def test_not_domains(text: str) -> None:
    assert rec.domains(text) == []


def test_an_emails_domain_is_not_a_second_entity() -> None:
    assert typed("mail MilenaRossi@rhyta.com now") == [("EMAIL_ADDRESS", "MilenaRossi@rhyta.com")]


# --------------------------------------------------------------------------- phone numbers


@pytest.mark.parametrize("text, value", [
    ("They're not answering at 780-999-2181", "780-999-2181"),  # Canada, national format
    ("call (415) 555-2671 now", "(415) 555-2671"),
    ("+41 (0)69 979 80 58-Fax", "+41 (0)69 979 80 58"),  # Switzerland
    ("Tel: +49 30 901820", "+49 30 901820"),  # Germany
    ("ring +44 20 7946 0958.", "+44 20 7946 0958"),  # United Kingdom
    ("+33 1 42 68 53 00", "+33 1 42 68 53 00"),  # France
    ("+81 3-3224-9999", "+81 3-3224-9999"),  # Japan
    ("call me on 4155552671", "4155552671"),  # bare digits beside a phone word
    ("zip 94107 415 555 2671", "415 555 2671"),  # a number before it is left out
    # national numbers with a trunk "0", in groups: of no NANP country (GB, IR, NZ)
    ("07700 063 966-Fax", "07700 063 966"),
    ("her number 0912 833 7102. thanks", "0912 833 7102"),
    ("Landlord: Graham McAllister, 021 734 902", "021 734 902"),
    ("South Africa 70651\n082 490 1693-Office", "082 490 1693"),  # ten digits, not NANP's
    ("office (02) 1234 5678 or", "(02) 1234 5678"),  # Australia, the trunk "0" in brackets
    ("mobile 081234 56789", "081234 56789"),  # India
    ("(11) 96123-4567 whatsapp", "(11) 96123-4567"),  # Brazil, eleven digits
])
def test_phone_numbers(text: str, value: str) -> None:
    assert found(rec.phone_numbers, text) == [value]


@pytest.mark.parametrize("text", [
    "order 4155552671 shipped",  # bare digits, no phone word
    "(555) 123-4567",  # not a valid US area code
    "+44 12",  # too short
    "on 2023-10-12 1430",  # a date and a time
    "pi is 3.141592653",
    "address 36.160.14.148",  # an IP address, though 3616014148 would be a US number
    "ISBN 0 306 40615 2", "ref 0001 0002 0003", "v 0.12.345.6789",  # "0" first, no phone
    "Newark, NJ 07114-1234",  # a ZIP+4 code
    "853-37-1694",
])
def test_not_phone_numbers(text: str) -> None:
    assert rec.phone_numbers(text) == []


def test_phone_region_for_national_formats() -> None:
    assert found(lambda t: rec.phone_numbers(t, "GB"), "ring 020 7946 0958") == ["020 7946 0958"]


@pytest.mark.parametrize("text, value, phone", [
    ("Invoice no. 415 555 2671 is overdue", "415 555 2671", False),
    ('{"mrn": "415-555-2671"}', "415-555-2671", False),
    ("Order 415 555 2671: please call me about it", "415 555 2671", True),  # a phone word
    ("reach me on 415 555 2671", "415 555 2671", True),
])
def test_a_number_the_text_names_as_an_identifier_is_no_phone(text: str, value: str,
                                                              phone: bool) -> None:
    assert (value in found(rec.phone_numbers, text)) == phone
    model = [ent("PHONE_NUMBER", text, value)]
    assert [e.text for e in rec.with_rules(model, [], text)
            if e.type == "PHONE_NUMBER"] == ([value] if phone else [])


def test_a_git_remote_is_its_hosts_domain_not_an_email() -> None:
    text = "git remote add origin git@code.example.org:team/app.git"
    assert [(e.type, e.text) for e in recognise(text)] == [("DOMAIN_NAME", "code.example.org")]
    model = [ent("EMAIL_ADDRESS", text, "git@code.example.org")]
    assert [(e.type, e.text) for e in rec.guarded(model, None, text)] == [
        ("DOMAIN_NAME", "code.example.org")]


def test_a_date_range_to_now_is_its_start() -> None:
    text = "Acme Corp, 2019-present"
    found = rec.guarded([ent("DATE_TIME", text, "2019-present")], None, text)
    assert [(e.type, e.text) for e in found] == [("DATE_TIME", "2019")]


@pytest.mark.parametrize("text, name, age", [
    ("a customer (Thandiwe Dube, 61) fell", "Thandiwe Dube", "61"),
    ("Marek Nowak (47), a nurse", "Marek Nowak", "47"),
    ("Marek Nowak (2019), a paper", "Marek Nowak", None),  # a year, no age
])
def test_an_age_right_after_a_name(text: str, name: str, age: str | None) -> None:
    found = rec.ages_beside_names([ent("PERSON", text, name)], text)
    assert [e.text for e in found if e.type == "AGE"] == ([age] if age else [])


# --------------------------------------------------------------------------- driver's licences


@pytest.mark.parametrize("text, value", [
    ("Driver License: Q815-2290-7741 (WA)", "Q815-2290-7741"),
    ("her CA license is B7730192.", "B7730192"),
    ("licence no. 552 810 347 expires soon", "552 810 347"),
    ('{"dl_state": "TX", "license_number": "24018875"}', "24018875"),
    ("DL# H12-553-90-441-7", "H12-553-90-441-7"),
])
def test_drivers_licences_after_their_words(text: str, value: str) -> None:
    assert found(rec.drivers_licences, text) == [value]
    assert [(e.type, e.text) for e in recognise(text) if e.text == value] == [
        ("US_DRIVER_LICENSE", value)]


@pytest.mark.parametrize("text", [
    "license plate 7ABC123", "the MIT license 2.0", "License: Apache-2.0",
    "software licence 2019-2021", "license key 1234-5678-9012", "flight DL 1234 to JFK",
    "Q815-2290-7741",  # no words: the model's call
])
def test_no_drivers_licence(text: str) -> None:
    assert rec.drivers_licences(text) == []


# --------------------------------------------------------------------------- ZIP codes, ages


@pytest.mark.parametrize("text, value", [
    ("zip 94107", "94107"),
    ("ZIP code: 10001-1234.", "10001-1234"),
    ("ZIP: 394 13", "394 13"),
    ("ZIP: 7412 SL", "7412 SL"),
    ("ZIP: 75534-030", "75534-030"),
    ("postal code K1A 0B1", "K1A 0B1"),
    ("my zipcode is 02139", "02139"),
    ("zip 1234 is wrong", "1234"),
    ('{"zip": "30310", "city": "Atlanta"}', "30310"),
    ("<zip>78521</zip>", "78521"),
    ("name=Agnes&zip=00100&src=fb", "00100"),
    ('"postal_code":"560034"', "560034"),  # a six-digit postcode (India, China, Russia)
    ("Brooklyn, NY 11215", "11215"),  # a US address's last line
    ("Newark, NJ 07114-1234, USA", "07114-1234"),
])
def test_zip_codes_in_context(text: str, value: str) -> None:
    assert found(rec.zip_codes, text) == [value]
    assert [e.score for e in recognise(text) if e.type == "ZIP_CODE"] == [rec.IN_CONTEXT]


def test_a_zip_code_in_a_whole_address_is_the_addresss() -> None:
    text = "411 Atlantic Ave, Brooklyn, NY 11215"
    assert found(rec.zip_codes, text) == ["11215"]
    assert [(e.type, e.text) for e in recognise(text)] == [("STREET_ADDRESS", text)]


@pytest.mark.parametrize("text", ["94107", "room 94107", "zip 9410712", "zipped 94107 files",
                                  "zip -r out.zip dir", "NY 11215", "Brooklyn, NY11215"])
def test_zip_codes_out_of_context(text: str) -> None:
    assert rec.zip_codes(text) == []


@pytest.mark.parametrize("text, value", [
    ("I'm 34 years old", "34"),
    ("a 5-year-old", "5"),
    ("age: 52", "52"),
    ("aged 7", "7"),
    ("My father retired at the age of 61", "61"),
    ("My brother just turned 60", "60"),
    ("I'll turn 23.", "23"),
    ("Written when he was 78.", "78"),
    ("for Grandpa's 90th birthday", "90"),
    ("a 45yo male with chest pain", "45"),
    ("my 8-month-old baby", "8"),
    ("my mum is 72 and lives alone", "72"),
])
def test_ages_in_context(text: str, value: str) -> None:
    assert found(rec.ages, text) == [value]


@pytest.mark.parametrize("text", [
    "34 apples", "turned 90 degrees", "page 52", "stage 3", "he was 5 minutes late",
    "age: 250", "the average was 3.5", "my son is 5 feet tall", "the price is 70 and rising",
])
def test_ages_out_of_context(text: str) -> None:
    assert rec.ages(text) == []


# --------------------------------------------------------------------------- all, the union


def test_recognise_keeps_the_more_trusted_of_overlapping_matches() -> None:
    # 853-37-1694 could be read as a (broken) phone number; the SSN recogniser comes first.
    assert typed("ssn 853-37-1694, IP http://10.0.0.1/x") == [
        ("US_SSN", "853-37-1694"), ("IP_ADDRESS", "10.0.0.1")]
    assert typed("zip 94107") == [("ZIP_CODE", "94107")]
    assert recognise("Plain prose without any numbers or addresses.") == []


def test_recognise_one_recogniser_alone() -> None:
    text = "card 4111 1111 1111 1111, mail a@example.com"
    assert [e.type for e in recognise(text, ["EMAIL_ADDRESS"])] == ["EMAIL_ADDRESS"]



def test_a_checked_match_replaces_the_models_guess_on_its_span() -> None:
    text = "His social security number is 853-37-1694"
    model = [ent("PHONE_NUMBER", text, "853-37-1694", 0.95)]
    assert [(e.type, e.text) for e in union(model, recognise(text))] == [
        ("US_SSN", "853-37-1694")]


def test_a_checked_match_replaces_a_cut_short_model_span() -> None:
    text = "cc 4007070753690781 on my e-mail UtaKortig@jourrapide.com?"
    model = [ent("CREDIT_CARD", text, "40070707536"), ent("PERSON", text, "UtaKortig"),
             ent("DOMAIN_NAME", text, "jourrapide.com")]
    assert [(e.type, e.text) for e in union(model, recognise(text))] == [
        ("CREDIT_CARD", "4007070753690781"), ("EMAIL_ADDRESS", "UtaKortig@jourrapide.com")]


def test_a_longer_model_span_of_a_free_text_type_stays() -> None:
    text = "Send it to 1 Main St, Springfield, zip 94107 please"
    address = ent("STREET_ADDRESS", text, "1 Main St, Springfield, zip 94107")
    assert union([address], recognise(text)) == [address]


def test_context_matches_lose_to_a_longer_model_span_and_win_over_a_shorter_one() -> None:
    text = "I'm 34 years old"
    longer = ent("AGE", text, "34 years old", 0.7)
    assert union([longer], recognise(text)) == [longer]
    shorter = ent("AGE", text, "3", 0.99)
    assert [e.text for e in union([shorter], recognise(text))] == ["34"]


def test_the_model_is_never_vetoed_and_the_rules_add_what_it_missed() -> None:
    text = "card 4007070753690782 and ip 10.1.2.3"
    model = [ent("CREDIT_CARD", text, "4007070753690782")]  # fails Luhn: no rule match
    assert [(e.type, e.text) for e in union(model, recognise(text))] == [
        ("CREDIT_CARD", "4007070753690782"), ("IP_ADDRESS", "10.1.2.3")]


# --------------------------------------------------------------------------- in the classifier


def _classifier(recognisers: bool) -> Classifier:
    return Classifier(tokenizer=None, batcher=None, categories=["a", "b"],  # type: ignore[arg-type]
                      pii_tags=list(PII_TAGS), recognisers=recognisers)


def test_decode_adds_rule_entities_to_the_models() -> None:
    text = "Mail Ana at ana@example.com or call (415) 555-2671."
    ana = text.index("Ana")
    # The model: [CLS] Mail Ana at ... [SEP]; it tags "Ana" and nothing else.
    offsets = [(0, 0), (0, 4), (ana, ana + 3), (0, 0)]
    logits = np.full((4, len(PII_TAGS)), -5.0, np.float32)
    logits[:, PII_TAGS.index("O")] = 5.0
    logits[2] = -5.0
    logits[2, PII_TAGS.index("B-PERSON")] = 5.0
    plan = plan_rows([], [[Window(ids=[101, 1, 2, 102], offsets=offsets)]], category_segment=0)
    outputs = [RowOutput(np.array([2.0, 0.0], np.float32), logits, np.ones(4, np.float32))]
    with_rules = _classifier(True).decode(plan, outputs, [text])
    assert [(e.type, e.text) for e in with_rules.pii[0]] == [
        ("PERSON", "Ana"), ("EMAIL_ADDRESS", "ana@example.com"),
        ("PHONE_NUMBER", "(415) 555-2671")]
    model_only = _classifier(False).decode(plan, outputs, [text])
    assert [e.type for e in model_only.pii[0]] == ["PERSON"]


def test_rules_read_the_folded_text_and_map_back_to_the_original() -> None:
    from router_svc.core.normalize import fold

    original = "card ４１１１ １１１１ １１１１ １１１１, mail ana＠example．com"
    folded = fold(original)
    spans = [(e.type, original[slice(*folded.span(e.start, e.end))])
             for e in recognise(folded.text)]
    assert spans == [("CREDIT_CARD", "４１１１ １１１１ １１１１ １１１１"),
                     ("EMAIL_ADDRESS", "ana＠example．com")]


def test_every_countrys_example_numbers_in_international_format() -> None:
    """phonenumbers' example mobile and fixed-line number of every region, written as
    "+CC ..." and in E.164, in a sentence: each is found whole."""
    import phonenumbers
    from phonenumbers import PhoneNumberFormat, PhoneNumberType

    missed = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE):
            number = phonenumbers.example_number_for_type(region, kind)
            if number is None:
                continue
            for fmt in (PhoneNumberFormat.INTERNATIONAL, PhoneNumberFormat.E164):
                value = phonenumbers.format_number(number, fmt)
                if value not in found(rec.phone_numbers, f"You can call me at {value} today."):
                    missed.append((region, value))
    assert missed == []
