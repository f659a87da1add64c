"""The guard on any text and any model entities: it never fails, and every entity it returns is
a non-empty span of the text with the text's own characters (a client's prompt can hold
anything; a crash here would be a 500 for that client)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from router_svc.classify.pii import PiiEntity
from router_svc.classify.recognisers import guarded, recognise
from router_svc.labels import PII_TYPES

# Characters the guard's steps treat specially, beside any text.
_PIECES = st.sampled_from([" ", "\n", ", ", " and ", "(", ")", "@", ":", "-", ".", "İ", "The ",
                           "Southern ", "12 ", "Road", "Street", "Flat 3, ", "licence ", "+44 ",
                           "Ana ", "Lee", "French", "my dad is ", "git@a.org:", "2022-present"])
_TEXTS = st.lists(st.one_of(st.text(max_size=12), _PIECES), max_size=30).map("".join)


@st.composite
def text_and_model(draw: st.DrawFn) -> tuple[str, list[PiiEntity]]:
    text = draw(_TEXTS)
    model = []
    for _ in range(draw(st.integers(0, 5)) if text else 0):
        a = draw(st.integers(0, len(text) - 1))
        b = draw(st.integers(a + 1, len(text)))
        model.append(PiiEntity(draw(st.sampled_from(sorted(PII_TYPES))), a, b, text[a:b],
                               draw(st.floats(0, 1))))
    return text, model


@settings(max_examples=400, deadline=None)
@given(text_and_model())
def test_the_guard_returns_spans_of_the_text_whatever_it_reads(
        case: tuple[str, list[PiiEntity]]) -> None:
    text, model = case
    for rules in (recognise(text), None):
        for e in guarded(model, rules, text):
            assert 0 <= e.start < e.end <= len(text)
            assert text[e.start:e.end] == e.text and e.text.strip()
