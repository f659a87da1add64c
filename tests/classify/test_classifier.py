"""Laying out a request's rows and reading the category of a long text (pure, no model)."""

from __future__ import annotations

import numpy as np

from router_svc.classify.batcher import RowOutput
from router_svc.classify.classifier import plan_rows, pool_category
from router_svc.classify.tokenization import Window


def win(tag: int) -> Window:
    return Window(ids=[101, tag, 102], offsets=[(0, 0), (0, 1), (0, 0)])


def out(logits: list[float], emb: list[float]) -> RowOutput:
    return RowOutput(np.array(logits, np.float32), np.zeros((3, 3), np.float32),
                     np.array(emb, np.float32))


def test_the_category_text_shares_the_rows_of_its_segment() -> None:
    plan = plan_rows([win(1), win(2)], [[win(9)], [win(1), win(2)]], category_segment=1)
    assert len(plan.rows) == 3 and plan.category_rows == [1, 2]
    assert plan.segment_rows == [[0], [1, 2]]


def test_a_category_text_of_its_own_gets_all_its_windows() -> None:
    plan = plan_rows([win(1), win(2), win(3)], [[win(9)]], category_segment=None)
    assert plan.category_rows == [1, 2, 3] and len(plan.rows) == 4


def test_the_most_confident_window_decides_the_category() -> None:
    preamble = out([1.0, 1.2, 0.9], [1, 0])  # generic text: no category stands out
    question = out([0.0, 0.0, 6.0], [0, 1])  # the question after it: clearly category 2
    best, confidence, _ = pool_category([preamble, question])
    assert best == 2 and confidence > 0.9


def test_the_embedding_covers_every_window() -> None:
    _, _, one = pool_category([out([1, 0], [1, 0])])
    assert np.allclose(one, [1, 0])  # one window: its own embedding, as before
    _, _, two = pool_category([out([1, 0], [1, 0]), out([1, 0], [0, 1])])
    assert np.allclose(two, [2 ** -0.5, 2 ** -0.5]) and abs(np.linalg.norm(two) - 1) < 1e-6
    _, _, other = pool_category([out([1, 0], [1, 0]), out([1, 0], [0, -1])])
    assert float(two @ other) < 0.5  # the same first window, another document: another key


def test_paragraphs_are_read_apart() -> None:
    from router_svc.classify.classifier import split_paragraphs

    assert split_paragraphs("one paragraph\nwith two lines") == ["one paragraph\nwith two lines"]
    assert split_paragraphs("Be helpful.\n\n  \nWhat is 2+2?") == ["Be helpful.", "What is 2+2?"]
    assert split_paragraphs("") == [""]


def test_the_classifier_decodes_with_its_per_type_thresholds() -> None:
    from router_svc.classify.classifier import Classifier

    tags = ["O", "B-PERSON", "I-PERSON", "B-US_SSN", "I-US_SSN"]
    text = "Ann 123-45-6789"
    row = Window(ids=[101, 1, 2, 102], offsets=[(0, 0), (0, 3), (4, 15), (0, 0)])
    logits = np.log(np.array([[0.9, 0.025, 0.025, 0.025, 0.025],
                              [0.025, 0.9, 0.025, 0.025, 0.025],  # Ann: PERSON, sure
                              [0.2, 0.1, 0.1, 0.3, 0.3],  # the SSN: 0.3
                              [0.9, 0.025, 0.025, 0.025, 0.025]], np.float32))
    outputs = [RowOutput(np.zeros(2, np.float32), logits, np.ones(2, np.float32))]
    plan = plan_rows([row], [[row]], category_segment=0)

    def found(**kw) -> set[str]:
        clf = Classifier(None, None, ["a", "b"], tags, recognisers=False, **kw)
        return {e.type for e in clf.decode(plan, outputs, [text]).pii[0]}

    assert found(pii_threshold=0.5) == {"PERSON"}
    assert found(pii_threshold=0.5, pii_type_thresholds={"US_SSN": 0.25}) == {"PERSON", "US_SSN"}
    assert found(pii_threshold=0.2, pii_type_thresholds={"PERSON": 0.95}) == {"US_SSN"}
