"""`router-svc eval category|pii` through the real Triton serving the quick-built model."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from export import evaluate
from export.data import load_mmlu, load_presidio, split_mmlu, split_presidio
from export.evaluate import PRF, CategoryEvalOptions, PiiEvalOptions, match_spans, micro
from router_svc.ops.up import ServedModelOptions

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _served(triton, model_dir: Path) -> ServedModelOptions:
    return ServedModelOptions(triton_url=triton.grpc_url, model_dir=model_dir,
                              model_name="semantic_router")


def _cli_eval_options(monkeypatch, *argv: str) -> CategoryEvalOptions | PiiEvalOptions:
    """The options ``router-svc eval ARGV`` hands to ``evaluate.main``."""
    from router_svc.ops.cli import main

    seen: list[CategoryEvalOptions | PiiEvalOptions] = []
    monkeypatch.setattr(evaluate, "main", lambda opts: seen.append(opts) or 0)
    assert main(["eval", *argv]) == 0
    return seen[0]


def test_eval_options_are_the_command_lines(monkeypatch, tmp_path):
    data, out, model_dir = tmp_path / "d", tmp_path / "o", tmp_path / "m"
    assert _cli_eval_options(monkeypatch, "category", "--data", str(data)) == (
        CategoryEvalOptions(data))  # the same defaults
    assert _cli_eval_options(monkeypatch, "pii", "--data", str(data)) == PiiEvalOptions(data)
    served = ["--triton-url", "h:1", "--model-dir", str(model_dir), "--model-name", "x",
              "--int8", "--exemplars", "off"]
    want = ServedModelOptions(triton_url="h:1", model_dir=model_dir, model_name="x", int8=True,
                              exemplars="off")
    assert _cli_eval_options(
        monkeypatch, "category", "--data", str(data), "--threshold", "0.7", "--out", str(out),
        *served) == CategoryEvalOptions(data, threshold=0.7, out=out, served=want)
    assert _cli_eval_options(
        monkeypatch, "pii", "--data", str(data), "--threshold", "0.4", "--presidio", "--out",
        str(out), *served) == PiiEvalOptions(data, threshold=0.4, presidio=True, out=out,
                                             served=want)


def test_exact_span_matching_counts():
    per: dict[str, PRF] = {}
    match_spans([("PERSON", 0, 5), ("EMAIL_ADDRESS", 10, 20)],
                [("PERSON", 0, 5), ("EMAIL_ADDRESS", 10, 19), ("GPE", 30, 35)], per)
    assert (per["PERSON"].tp, per["PERSON"].fp, per["PERSON"].fn) == (1, 0, 0)
    assert (per["EMAIL_ADDRESS"].tp, per["EMAIL_ADDRESS"].fp, per["EMAIL_ADDRESS"].fn) == (0, 1, 1)
    m = micro(per)
    assert m.tp == 1 and m.fp == 2 and m.fn == 1
    assert m.f1 == pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5))


def test_eval_category_through_triton(tmp_path, trained_triton, trained_model_dir, capsys):
    rows, _ = load_mmlu(DATA / "mmlu_pro" / "questions.jsonl")
    _, val = split_mmlu(rows, 0.1, 0)
    data = tmp_path / "cat.jsonl"
    lines = [json.dumps({"question": e.text, "category": e.category}) for e in val[:120]]
    lines += ["{not json", json.dumps({"question": "x", "category": "astrology"})]
    data.write_text("\n".join(lines) + "\n")
    opts = CategoryEvalOptions(data, threshold=0.6, out=tmp_path / "out",
                               served=_served(trained_triton, trained_model_dir))
    assert evaluate.main(opts) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    m = re.fullmatch(r"accuracy=([\d.]+) macro_f1=([\d.]+) ece=([\d.]+) "
                     r"offtopic_below_0.6=([\d.]+)", last)
    assert m, last
    assert float(m.group(1)) > 0.5  # 14 classes: chance is 0.07
    report = json.loads((tmp_path / "out" / "category.json").read_text())
    assert report["rows"] == 120 and sum(report["skipped_rows"].values()) == 2
    assert (tmp_path / "out" / "category_confusion.png").stat().st_size > 10_000
    assert (tmp_path / "out" / "category_coverage.png").stat().st_size > 10_000
    curve = report["coverage_curve"]
    coverage = [c["coverage"] for c in curve]
    assert coverage[0] == 1.0 and coverage == sorted(coverage, reverse=True)
    at = next(c for c in curve if c["threshold"] == 0.6)
    assert at["coverage"] == report["share_above_threshold"]
    assert at["offtopic_above"] == pytest.approx(1 - report["offtopic_below_threshold"])
    errors = [json.loads(x) for x in (tmp_path / "out" / "category_errors.jsonl").open()]
    wrong = round((1 - report["accuracy"]) * 120)
    low_right = sum(e["gold"] == e["ours"] for e in errors)
    assert len(errors) - low_right == wrong
    assert all(e["confidence"] <= 0.6 for e in errors if e["gold"] == e["ours"])  # rounded


def test_build_scores_the_short_prompts_and_eval_reads_them(trained_model_dir):
    from export.build import SHORT_PROMPTS

    rows, report = load_mmlu(SHORT_PROMPTS)
    assert not report.skipped and len({r.category for r in rows}) == 14
    short = json.loads((trained_model_dir / "build_report.json").read_text())[
        "category_short_prompts"]
    assert short["rows"] == len(rows)
    assert short["accuracy"] > 0.3  # 14 classes: chance is 0.07


def test_the_builds_exemplars_are_served_and_measured(tmp_path, trained_triton,
                                                     trained_model_dir):
    """The build ships category exemplars for its model; the evaluation reads them as the
    router does ("auto") and without them ("off"): the vote makes more rows confident."""
    from router_svc.classify.exemplars import FILE_NAME, load_exemplars
    from router_svc.labels import CATEGORIES

    report = json.loads((trained_model_dir / "build_report.json").read_text())
    ex = load_exemplars(trained_model_dir / FILE_NAME, CATEGORIES, embedding_dim=384)
    assert len(ex.vectors) == report["category_exemplars"]["count"] > 100
    rows, _ = load_mmlu(DATA / "mmlu_pro" / "questions.jsonl")
    _, val = split_mmlu(rows, 0.1, 0)
    data = tmp_path / "cat.jsonl"
    data.write_text("".join(json.dumps({"question": e.text, "category": e.category}) + "\n"
                            for e in val[:150]))
    served = _served(trained_triton, trained_model_dir)
    got = {}
    for how in ("off", "auto"):
        out = tmp_path / how
        opts = CategoryEvalOptions(data, threshold=0.6, out=out,
                                   served=dataclasses.replace(served, exemplars=how))
        assert evaluate.main(opts) == 0
        got[how] = json.loads((out / "category.json").read_text())
    assert got["auto"]["share_above_threshold"] > got["off"]["share_above_threshold"]
    for how in got:  # chit-chat is still no category
        assert got[how]["offtopic_below_threshold"] >= 0.9
        assert got[how]["chitchat_below_threshold"] >= 0.9, got[how]["chitchat_above_threshold"]


def test_eval_pii_through_triton(tmp_path, trained_triton, trained_model_dir, capsys):
    rows, _ = load_presidio(DATA / "pii" / "synth_dataset_v2.json")
    _, test = split_presidio(rows, 0.25, 0)
    data = tmp_path / "pii.json"
    data.write_text(json.dumps([
        {"full_text": e.text, "spans": [
            {"entity_type": s.type, "entity_value": e.text[s.start:s.end],
             "start_position": s.start, "end_position": s.end} for s in e.spans],
         "template_id": e.template_id} for e in test[:80]]))
    opts = PiiEvalOptions(data, threshold=0.5, out=tmp_path / "out",
                          served=_served(trained_triton, trained_model_dir),
                          choose_thresholds=True)
    assert evaluate.main(opts) == 0
    printed = capsys.readouterr().out
    last = printed.strip().splitlines()[-1]
    m = re.fullmatch(r"precision=([\d.]+) recall=([\d.]+) f1=([\d.]+) overlap_f1=([\d.]+)",
                     last)
    assert m, last
    assert float(m.group(3)) > 0.3
    assert float(m.group(4)) >= float(m.group(3))  # overlap matching is never stricter
    report = json.loads((tmp_path / "out" / "pii.json").read_text())
    assert report["rows"] == 80
    errors = [json.loads(x) for x in (tmp_path / "out" / "pii_errors.jsonl").open()]
    assert all(sorted(map(tuple, e["gold"])) != sorted(map(tuple, e["ours"])) for e in errors)
    gold_types = {s.type for e in test[:80] for s in e.spans}
    assert gold_types <= set(report["per_type"])  # every gold type is scored
    assert all("overlap" in v for v in report["per_type"].values())
    # --choose-thresholds: curves from one half, the chosen thresholds reported on the other,
    # a snippet the config reads, and the PR curves drawn.
    th = report["thresholds"]
    assert report["pr_curves"]["rows"] + th["rows"] == 80
    assert th["map"] == evaluate.read_type_thresholds(tmp_path / "out" / "pii_thresholds.yaml")
    assert all(th["chosen"][k]["threshold"] == v for k, v in th["map"].items())
    assert th["single"]["micro"]["f1"] > 0.3 and "PII thresholds on the report half" in printed
    assert (tmp_path / "out" / "pii_pr_curves.png").stat().st_size > 10_000


def test_overlap_matching_counts_each_gold_span_once():
    from export.evaluate import match_spans_overlap

    per: dict[str, PRF] = {}
    gold = [("STREET_ADDRESS", 0, 30), ("PERSON", 40, 45)]
    pred = [("STREET_ADDRESS", 0, 12), ("STREET_ADDRESS", 14, 30), ("GPE", 14, 20),
            ("PERSON", 42, 50), ("PERSON", 46, 50)]
    match_spans_overlap(gold, pred, per)
    assert (per["STREET_ADDRESS"].tp, per["STREET_ADDRESS"].fp, per["STREET_ADDRESS"].fn) == (
        1, 1, 0)
    assert (per["GPE"].tp, per["GPE"].fp) == (0, 1)
    assert (per["PERSON"].tp, per["PERSON"].fp, per["PERSON"].fn) == (1, 1, 0)


def test_heldout_files_are_the_build_splits_and_load_for_eval(tmp_path):
    from export.build import write_heldout

    paths = write_heldout(DATA, tmp_path)
    rows, _ = load_mmlu(paths["category"])
    all_rows, _ = load_mmlu(DATA / "mmlu_pro" / "questions.jsonl")
    train, val = split_mmlu(all_rows, 0.1, 0)
    assert [r.text for r in rows] == [r.text for r in val]
    assert not {r.text for r in rows} & {r.text for r in train}
    pii, report = load_presidio(paths["pii"])
    p_train, p_test = split_presidio(load_presidio(DATA / "pii" / "synth_dataset_v2.json")[0],
                                     0.25, 0)
    assert not report.skipped and len(pii) == len(p_test)
    assert [(e.text, e.spans) for e in pii] == [(e.text, e.spans) for e in p_test]
    assert not {e.template_id for e in pii} & {e.template_id for e in p_train}


def test_eval_int8_quantises_a_missing_int8_model_and_serves_it(tmp_path, tiny_model_dir, capsys):
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    rows, _ = load_presidio(DATA / "pii" / "synth_dataset_v2.json")
    data = tmp_path / "pii.json"
    data.write_text(json.dumps([
        {"full_text": e.text, "spans": [
            {"entity_type": s.type, "entity_value": e.text[s.start:s.end],
             "start_position": s.start, "end_position": s.end} for s in e.spans]}
        for e in rows[:5]]))
    opts = PiiEvalOptions(data, threshold=0.5, out=tmp_path / "out",
                          served=ServedModelOptions(model_dir=model_dir, int8=True))
    assert evaluate.main(opts) == 0  # no --triton-url: starts its own Triton on the int8 file
    assert (model_dir / "model.int8.onnx").stat().st_size > 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"precision=[\d.]+ recall=[\d.]+ f1=[\d.]+ overlap_f1=[\d.]+", last), last
    assert json.loads((tmp_path / "out" / "pii.json").read_text())["rows"] == 5


def test_model_exemplars_command_runs_the_exemplar_writer(monkeypatch, tmp_path):
    from export import exemplars
    from router_svc.ops.cli import main

    seen: list[list[str]] = []
    monkeypatch.setattr(exemplars, "main", lambda argv: seen.append(argv) or 0)
    assert main(["model", "exemplars", "--model-dir", str(tmp_path / "m"),
                 "--data-dir", str(tmp_path / "d")]) == 0
    assert main(["model", "exemplars", "--model-dir", str(tmp_path / "m"),
                 "--data-dir", str(tmp_path / "d"), "--examples", "a.jsonl",
                 "--examples", "b.jsonl"]) == 0
    assert seen == [["--model-dir", str(tmp_path / "m"), "--data-dir", str(tmp_path / "d")],
                    ["--model-dir", str(tmp_path / "m"), "--data-dir", str(tmp_path / "d"),
                     "--examples", "a.jsonl", "--examples", "b.jsonl"]]
