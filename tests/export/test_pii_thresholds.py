"""PR curves over the PII threshold and the per-type threshold choice (pure, no model)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from export import evaluate
from export.evaluate import (
    SWEEP,
    PiiEvalOptions,
    _limits,
    choose_threshold,
    pr_sweep,
    read_type_thresholds,
    split_by_template,
    thresholds_yaml,
)
from router_svc.classify.pii import PiiEntity

SSN = ("US_SSN", 0, 11)


def ssn(score: float) -> PiiEntity:
    return PiiEntity("US_SSN", 0, 11, "123-45-6789", score)


def rows(true_scores: list[float | None], false_scores: list[float] = ()):
    """One text per true SSN (its model score, None: the model missed it) and one per false
    one (no gold there): gold spans and the model's entities, row by row."""
    gold = [[SSN] for _ in true_scores] + [[] for _ in false_scores]
    ents = [[ssn(s)] if s is not None else [] for s in true_scores]
    ents += [[ssn(s)] for s in false_scores]
    return gold, ents


def curve(gold, ents, rules=None, threshold=0.5, type_thresholds=None):
    texts = ["123-45-6789"] * len(gold)
    return pr_sweep(gold, ents, rules, SWEEP, _limits(threshold, type_thresholds), texts)


def test_the_curve_counts_an_entity_from_its_score_up() -> None:
    gold, ents = rows([0.15, 0.3, 0.6, 0.9, None], [0.1, 0.4])
    pts = {p.threshold: p for p in curve(gold, ents)["US_SSN"]}
    assert (pts[0.05].overlap.tp, pts[0.05].overlap.fp, pts[0.05].overlap.fn) == (4, 2, 1)
    assert (pts[0.15].exact.tp, pts[0.15].exact.fp) == (4, 1)  # 0.15 itself still counts
    assert (pts[0.16].exact.tp, pts[0.16].exact.fp) == (3, 1)
    assert (pts[0.5].overlap.tp, pts[0.5].overlap.fp, pts[0.5].overlap.fn) == (2, 0, 3)
    assert (pts[0.95].overlap.tp, pts[0.95].overlap.fn) == (0, 5)


def test_the_chooser_keeps_every_entity_a_small_sample_finds() -> None:
    # 10 SSNs: losing one costs 0.1 recall, far more than the 0.005 allowed, so the highest
    # threshold that keeps all nine the model finds is the lowest true score.
    gold, ents = rows([0.15, 0.3, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99, None], [0.1, 0.2, 0.4])
    c = choose_threshold(curve(gold, ents)["US_SSN"])
    assert c is not None and c.threshold == 0.15
    assert c.overlap.recall == pytest.approx(0.9)
    assert c.overlap.precision == pytest.approx(9 / 11)  # the false SSN at 0.2 is still in


def test_the_chooser_trades_recall_within_its_tolerance_for_precision() -> None:
    # 300 SSNs, one of them found only at 0.1: dropping it costs 1/300 < 0.005 recall and
    # drops the false ones at 0.3 and 0.5 too; any higher than 0.8 loses them all.
    gold, ents = rows([0.1] + [0.8] * 299, [0.3, 0.5])
    pts = curve(gold, ents)["US_SSN"]
    c = choose_threshold(pts)
    assert c is not None and c.threshold == 0.8
    assert c.overlap.recall == pytest.approx(299 / 300) and c.overlap.precision == 1.0
    assert choose_threshold(pts, tolerance=0.001).threshold == 0.1  # stricter: keep it


def test_no_gold_no_choice() -> None:
    gold, ents = rows([], [0.3])
    pts = curve(gold, ents)["US_SSN"]
    assert pts[0].overlap.fp == 1 and choose_threshold(pts) is None  # recall says nothing


def test_rules_count_in_the_union() -> None:
    # The rules find every SSN (score 1.0, checked): the model's SSN threshold costs no
    # recall, so the chooser takes the highest one, and the model's false SSN goes.
    gold, ents = rows([0.3, 0.6], [0.4])
    rules = [[ssn(1.0)], [ssn(1.0)], []]
    pts = curve(gold, ents, rules=rules)["US_SSN"]
    assert all(p.overlap.recall == 1.0 for p in pts)
    c = choose_threshold(pts)
    assert c.threshold == SWEEP[-1] and c.overlap.precision == 1.0
    assert pts[0].overlap.precision == pytest.approx(2 / 3)


def test_where_thresholds_score_alike_the_configured_one_is_kept() -> None:
    # The rules find every SSN: the whole curve scores alike, so nothing moves.
    gold, ents = rows([0.3, 0.6], [])
    flat = curve(gold, ents, rules=[[ssn(1.0)], [ssn(1.0)]])["US_SSN"]
    assert choose_threshold(flat, prefer=0.7).threshold == 0.7
    # Above 0.5 (the last false SSN) and up to 0.8 every threshold counts the same.
    gold, ents = rows([0.1] + [0.8] * 299, [0.3, 0.5])
    pts = curve(gold, ents)["US_SSN"]
    assert choose_threshold(pts, prefer=0.7).threshold == 0.7
    assert choose_threshold(pts, prefer=0.5).threshold == 0.51  # 0.5 itself keeps a false one
    assert choose_threshold(pts, prefer=0.9).threshold == 0.8
    # A move the data asks for is made: below the lowest true score's plateau.
    gold, ents = rows([0.15, 0.3, 0.6, 0.9], [0.1])
    assert choose_threshold(curve(gold, ents)["US_SSN"], prefer=0.5).threshold == 0.15


def test_the_snippet_pastes_into_a_config_and_reads_back(tmp_path: Path) -> None:
    from router_svc.config.loading import parse_config
    from tests.config.test_config import ENV, minimal

    text = thresholds_yaml({"US_SSN": 0.15, "PERSON": 0.45}, "chosen on test data")
    path = tmp_path / "pii_thresholds.yaml"
    path.write_text(text)
    assert read_type_thresholds(path) == {"US_SSN": 0.15, "PERSON": 0.45}
    # Pasted under classifier.pii_model of a config, as its comment says.
    config = yaml.safe_dump(minimal() | {"classifier": {"pii_model": {"threshold": 0.7}}})
    at = config.index("    threshold: 0.7\n")
    pasted = config[:at] + text + config[at:]
    cfg = parse_config(yaml.safe_load(pasted), "/etc", environ=ENV)
    assert dict(cfg.classifier.pii_model.type_thresholds) == {"US_SSN": 0.15, "PERSON": 0.45}
    (tmp_path / "router.yaml").write_text(pasted)
    assert read_type_thresholds(tmp_path / "router.yaml") == {"US_SSN": 0.15, "PERSON": 0.45}
    (tmp_path / "bad.yaml").write_text("type_thresholds: {SSN: 0.2}\n")
    with pytest.raises(SystemExit, match="unknown PII type 'SSN'"):
        read_type_thresholds(tmp_path / "bad.yaml")


def test_halves_share_no_template() -> None:
    from export.data import PiiExample

    examples = [PiiExample(f"t{i}", [], i % 7, "presidio") for i in range(70)]
    first, second = split_by_template(examples)
    assert sorted(first + second) == list(range(70))
    assert 20 <= len(first) <= 50
    assert not {examples[i].template_id for i in first} & {
        examples[i].template_id for i in second}


def test_the_command_line_options(monkeypatch, tmp_path: Path) -> None:
    from router_svc.ops.cli import main

    seen: list[PiiEvalOptions] = []
    monkeypatch.setattr(evaluate, "main", lambda opts: seen.append(opts) or 0)
    snippet = tmp_path / "t.yaml"
    snippet.write_text(thresholds_yaml({"US_SSN": 0.2}, "x"))
    assert main(["eval", "pii", "--data", "d.json", "--choose-thresholds",
                 "--type-thresholds", str(snippet)]) == 0
    assert seen[0] == PiiEvalOptions(Path("d.json"), choose_thresholds=True,
                                     type_thresholds={"US_SSN": 0.2})
