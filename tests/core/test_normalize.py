"""Folding text for the classifier, and mapping spans back to what the client sent."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_svc.core.normalize import fold


def test_ascii_is_left_alone() -> None:
    f = fold("card 4111 1111 1111 1111")
    assert f.identity and f.text == f.original and f.span(5, 9) == (5, 9)


@pytest.mark.parametrize(("sent", "read"), [
    ("４１１１ １１１１ １１１１ １１１１", "4111 1111 1111 1111"),  # full-width digits
    ("ann＠example．com", "ann@example.com"),
    ("𝟒𝟏𝟏𝟏-𝟏𝟏𝟏𝟏", "4111-1111"),  # mathematical bold digits
    ("𝐉𝐨𝐡𝐧 Smith", "John Smith"),  # mathematical bold letters
    ("41\u200b11 11\u200d11", "4111 1111"),  # zero-width space and joiner
    ("\u202eSSN 123-45-6789\u202c", "SSN 123-45-6789"),  # bidirectional overrides
    ("١٢٣", "١٢٣"),  # other scripts' digits stay theirs (no compatibility form)
])
def test_look_alikes_read_as_what_they_look_like(sent: str, read: str) -> None:
    assert fold(sent).text == read


def test_spans_map_back_to_the_original_characters() -> None:
    sent = "pay ４１１１\u200b １１１１ now"
    f = fold(sent)
    start = f.text.index("4111")
    end = f.text.index(" now")
    a, b = f.span(start, end)
    assert sent[a:b] == "４１１１\u200b １１１１"
    assert sent[:a] + "<X>" + sent[b:] == "pay <X> now"


def test_one_character_may_become_several() -> None:
    f = fold("x\ufb01y")  # the 'fi' ligature folds to two letters from one character
    assert f.text == "xfiy"
    assert f.span(1, 3) == (1, 2) and f.span(1, 2) == (1, 2)


@settings(max_examples=400, deadline=None)
@given(st.text(st.characters(codec="utf-8"), max_size=40))
def test_the_fast_path_reads_every_text_as_the_character_pass_does(text: str) -> None:
    from router_svc.core import normalize

    slow_out, changed = [], False
    for ch in text:  # the character pass, written out
        if unicodedata.category(ch) == "Cf":
            changed = True
            continue
        folded = unicodedata.normalize("NFKC", ch)
        changed |= folded != ch
        slow_out.append(folded)
    assert normalize.fold(text).text == ("".join(slow_out) if changed else text)
