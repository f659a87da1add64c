"""Texts read before are not read again: a conversation's earlier turns cost no model rows.

A real tokenizer (the tiny model's) and a batcher stand-in that records the rows it is given
and tags every token of one word as a person, so what the memory returns can be compared with
what reading the text gives.
"""

from __future__ import annotations

import numpy as np
import pytest

from router_svc.classify.batcher import RowOutput
from router_svc.classify.classifier import Classifier, ScanMemory, Scanned, TooMuchText
from router_svc.classify.tokenization import TextTokenizer
from router_svc.labels import PII_TAGS

CATS = ["math", "law"]


class RecordingBatcher:
    """Category "law" for rows holding ``law_id``, else "math"; every token ``name_id`` a
    B-PERSON."""

    def __init__(self, tok: TextTokenizer):
        self.rows: list[list[list[int]]] = []  # the rows of each submit
        self.name_id = tok._tok.encode("ana", add_special_tokens=False).ids[0]
        self.law_id = tok._tok.encode("court", add_special_tokens=False).ids[0]

    async def submit(self, rows, deadline=None, trace=None) -> list[RowOutput]:
        self.rows.append(rows)
        out = []
        for r in rows:
            pii = np.full((len(r), len(PII_TAGS)), -5.0, np.float32)
            pii[:, PII_TAGS.index("O")] = 5.0
            for t, tid in enumerate(r):
                if tid == self.name_id:
                    pii[t] = -5.0
                    pii[t, PII_TAGS.index("B-PERSON")] = 5.0
            cat = np.array([0.0, 4.0] if self.law_id in r else [3.0, 0.0], np.float32)
            out.append(RowOutput(cat, pii, np.ones(4, np.float32)))
        return out


@pytest.fixture(scope="module")
def tok(tiny_model_dir) -> TextTokenizer:
    return TextTokenizer(tiny_model_dir / "tokenizer.json")


def classifier(tok: TextTokenizer, entries: int = 100) -> tuple[Classifier, RecordingBatcher]:
    b = RecordingBatcher(tok)
    return Classifier(tok, b, CATS, list(PII_TAGS), recognisers=False,  # type: ignore[arg-type]
                      memory_entries=entries), b


OLD = "my name is ana and the court said no"
NEW = "what is two plus two"


async def test_earlier_turns_are_read_once_and_give_the_same_result(tok):
    clf, b = classifier(tok)
    first = await clf.classify(OLD, [OLD], context_texts=[])
    assert [(e.type, e.text) for e in first.pii[0]] == [("PERSON", "ana")]
    # The next turn carries the old one again: only the new turn's rows go to the model.
    second = await clf.classify(NEW, [OLD, NEW], context_texts=[OLD])
    assert len(b.rows[1]) == 1 and b.rows[1][0] == tok.windows_batch([NEW], 128, 96)[0][0].ids
    assert second.pii[0] == first.pii[0] and second.pii[1] == []
    assert second.context == [("law", pytest.approx(first.confidence))]
    assert second.category == "math"
    # Without the memory both are read each time, with the same result.
    plain, pb = classifier(tok, entries=0)
    again = await plain.classify(NEW, [OLD, NEW], context_texts=[OLD])
    assert len(pb.rows[0]) == 2 and again.pii == second.pii and again.context == second.context


async def test_the_turn_that_decides_the_category_is_always_read(tok):
    clf, b = classifier(tok)
    await clf.classify(NEW, [NEW])
    await clf.classify(NEW, [NEW])  # the same prompt again: its rows give category and key
    assert [len(r) for r in b.rows] == [1, 1]


async def test_remembered_text_counts_against_the_token_limit_and_clear_forgets(tok):
    clf, b = classifier(tok)
    await clf.classify(OLD, [OLD])
    tokens = len(tok.windows_batch([OLD], 128, 96)[0][0].ids) - 2
    with pytest.raises(TooMuchText):
        await clf.classify(NEW, [OLD, NEW], max_tokens=tokens)
    clf.memory.clear()
    await clf.classify(NEW, [OLD, NEW])
    assert len(b.rows[-1]) == 2


def test_the_memory_is_bounded_and_keeps_no_text():
    m = ScanMemory(2)
    texts = ["Ana Lopez 1", "Ana Lopez 2", "Ana Lopez 3"]
    for t in texts:
        m.put(t, Scanned((("PERSON", 0, 9, 0.9),), (0, 0.5), 3))
    assert len(m) == 2 and m.get(texts[0]) is None
    hit = m.get(texts[2])
    assert hit is not None and "Lopez" not in repr(hit)
    assert [(e.type, e.text) for e in hit.entities(texts[2])] == [("PERSON", "Ana Lopez")]
