"""The category head's second opinion: the nearest exemplars' vote, combined with the head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from router_svc.classify.batcher import RowOutput
from router_svc.classify.classifier import pool_category
from router_svc.classify.exemplars import (
    FILE_NAME,
    Exemplars,
    ExemplarsError,
    combine,
    exemplar_file,
    load_exemplars,
)

CATS = ("math", "law", "history")


def unit(*v: float) -> np.ndarray:
    a = np.array(v, np.float32)
    return a / np.linalg.norm(a)


def exemplars(k: int = 2) -> Exemplars:
    # two math questions near x, two law questions near y, chit-chat near z (no topic)
    vectors = np.stack([unit(1, 0.1, 0), unit(1, -0.1, 0), unit(0.1, 1, 0), unit(-0.1, 1, 0),
                        unit(0, 0, 1), unit(0.1, 0, 1)])
    labels = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0],
                       [1 / 3] * 3, [1 / 3] * 3], np.float32)
    return Exemplars(vectors, labels, CATS, k=k, tau=0.05, weight=0.75)


def test_the_vote_follows_the_nearest_exemplars() -> None:
    ex = exemplars()
    assert ex.vote(unit(1, 0, 0)).argmax() == 0
    assert ex.vote(unit(0, 1, 0)).argmax() == 1
    assert np.allclose(ex.vote(unit(0, 0, 1)), 1 / 3, atol=1e-6)  # chit-chat: no category


def test_agreement_makes_the_category_surer_and_no_topic_does_not() -> None:
    ex = exemplars()
    head = np.array([0.5, 0.3, 0.2])
    agree = ex.refine(head, unit(1, 0, 0))
    assert agree.argmax() == 0 and agree.max() > 0.9
    neutral = ex.refine(head, unit(0, 0, 1))
    assert np.allclose(neutral, head, atol=1e-6)  # a uniform vote changes nothing
    disagree = ex.refine(head, unit(0, 1, 0))
    assert disagree.argmax() == 1 and disagree.max() < agree.max()
    assert np.isclose(disagree.sum(), 1.0)


def test_combine_never_rules_a_category_out_on_the_vote_alone() -> None:
    p = combine(np.array([0.98, 0.01, 0.01]), np.array([0.0, 1.0, 0.0]), 0.75)
    assert p.argmax() == 1 and p[0] > 0  # the floor keeps the head's choice possible
    assert np.array_equal(combine(np.array([0.6, 0.4]), np.array([0.3, 0.7]), 0.0),
                          np.array([0.6, 0.4]))


def test_pool_category_refines_the_most_confident_window() -> None:
    ex = exemplars()
    windows = [RowOutput(np.log(np.array([0.4, 0.35, 0.25], np.float32)),
                         np.zeros((3, 3), np.float32), unit(0, 1, 0)),
               RowOutput(np.log(np.array([0.55, 0.25, 0.2], np.float32)),
                         np.zeros((3, 3), np.float32), unit(1, 0, 0))]
    best, conf, _ = pool_category(windows)
    assert (best, round(conf, 2)) == (0, 0.55)  # the head alone: below a 0.6 threshold
    best, conf, _ = pool_category(windows, ex)
    assert best == 0 and conf > 0.9  # its window's neighbours agree: confident


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    ex = exemplars(k=3)
    ex.save(tmp_path / FILE_NAME)
    back = load_exemplars(tmp_path / FILE_NAME, list(CATS), embedding_dim=3)
    assert back.categories == CATS and (back.k, back.weight) == (3, 0.75)
    assert np.allclose(back.vectors, ex.vectors, atol=1e-3)
    assert np.allclose(back.vote(unit(1, 0, 0)), ex.vote(unit(1, 0, 0)), atol=1e-2)


def test_a_file_that_does_not_fit_the_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    exemplars().save(path)
    with pytest.raises(ExemplarsError, match="categories"):
        load_exemplars(path, ["math", "law", "physics"], embedding_dim=3)
    with pytest.raises(ExemplarsError, match="384"):
        load_exemplars(path, list(CATS), embedding_dim=384)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ExemplarsError, match="not a category exemplar file"):
        load_exemplars(tmp_path / "junk.npz", list(CATS), embedding_dim=3)


def test_which_file_the_setting_names(tmp_path: Path) -> None:
    assert exemplar_file("off", tmp_path) is None
    assert exemplar_file("auto", tmp_path) is None  # the build wrote none: the head alone
    exemplars().save(tmp_path / FILE_NAME)
    assert exemplar_file("auto", tmp_path) == tmp_path / FILE_NAME
    assert exemplar_file(str(tmp_path / FILE_NAME), Path("/nowhere")) == tmp_path / FILE_NAME
    with pytest.raises(ExemplarsError, match="not a file"):
        exemplar_file(str(tmp_path / "missing.npz"), tmp_path)
