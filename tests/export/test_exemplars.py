"""The exemplar set's labelled examples: the shipped seed questions and an operator's own file."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from export import exemplars
from export.build import SHORT_PROMPTS
from export.exemplars import SEEDS, ExamplesError, load_examples
from router_svc.classify.exemplars import load_exemplars
from router_svc.labels import CATEGORIES

# Words that say nothing about a question's subject.
_FILLER = frozenset((
    "a", "an", "the", "of", "in", "on", "to", "for", "and", "or", "is", "are", "was", "were",
    "be", "what", "whats", "how", "do", "does", "did", "i", "you", "it", "its", "why", "when",
    "which", "who", "explain", "difference", "between", "me", "my", "with", "can", "should",
    "would", "could", "this", "that", "there", "give", "example", "s"
))


def _subject_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _FILLER}


def test_the_seeds_cover_every_category_with_distinct_questions():
    rows = load_examples(SEEDS)
    per = Counter(c for _, c in rows)
    assert set(per) == set(range(len(CATEGORIES))) and min(per.values()) >= 30, per
    assert len({t.lower() for t, _ in rows}) == len(rows)


def test_no_seed_is_written_from_a_held_out_short_prompt():
    # The short prompts measure the vote: a seed on the same subject (half or more of their
    # subject words shared) would let it look up the answer instead.
    held = [_subject_words(json.loads(line)["question"])
            for line in SHORT_PROMPTS.read_text().splitlines() if line.strip()]
    for text, _ in load_examples(SEEDS):
        mine = _subject_words(text)
        worst = max(len(mine & h) / max(1, len(mine | h)) for h in held)
        assert worst < 0.4, text


@pytest.mark.parametrize(("line", "says"), [
    ('{"text": "What is a tort?", "category": "laws"}', "category 'laws' is not one of"),
    ('{"text": "  ", "category": "law"}', "non-empty string"),
    ('{"category": "law"}', 'with "text" and "category"'),
    ("not json", 'with "text" and "category"'),
])
def test_a_bad_examples_line_is_an_error_naming_file_and_line(tmp_path: Path, line, says):
    f = tmp_path / "mine.jsonl"
    f.write_text('{"text": "What is a tort?", "category": "law"}\n\n' + line + "\n")
    with pytest.raises(ExamplesError) as err:
        load_examples(f)
    assert f"{f} line 3: " in str(err.value) and says in str(err.value)


def test_an_operators_examples_join_the_exemplars(monkeypatch, tmp_path: Path, capsys):
    # The writer embeds the build's questions, the seeds and the operator's file, in one set.
    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"text": "Which of our plans covers dental?", "category": "health"}\n')
    embedded: list[list[str]] = []

    def fake_runner(model_dir, threads=2):
        import numpy as np

        def run(texts):
            embedded.append(list(texts))
            rng = np.random.default_rng(len(texts))
            return (rng.normal(size=(len(texts), len(CATEGORIES))).astype("float32"),
                    rng.normal(size=(len(texts), 8)).astype("float32"))
        return run

    monkeypatch.setattr(exemplars, "onnx_runner", fake_runner)
    data = tmp_path / "data" / "mmlu_pro"
    data.mkdir(parents=True)
    (data / "questions.jsonl").write_text("".join(
        json.dumps({"question_id": i, "question": f"Question {i} about {c}?", "category": c,
                    "src": "x"}) + "\n" for i, c in enumerate(CATEGORIES * 3)))
    model = tmp_path / "m"
    model.mkdir()
    (model / "build_report.json").write_text(json.dumps({"options": {"seed": 0, "offtopic": 4}}))
    assert exemplars.main(["--model-dir", str(model), "--data-dir", str(data.parent),
                           "--examples", str(mine)]) == 0
    topic = embedded[0]
    assert topic[-1] == "Which of our plans covers dental?"
    seeds = load_examples(SEEDS)
    assert topic[-1 - len(seeds):-1] == [t for t, _ in seeds]
    saved = load_exemplars(model / "category_exemplars.npz", CATEGORIES, 8)
    assert saved.labels[len(topic) - 1].argmax() == CATEGORIES.index("health")

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "category": "cooking"}\n')
    with pytest.raises(SystemExit) as err:
        exemplars.main(["--model-dir", str(model), "--data-dir", str(data.parent),
                        "--examples", str(bad)])
    assert err.value.code == 2 and "cooking" in capsys.readouterr().err

