"""Cache evaluation: the threshold sweep, the choice of a default, the report and its outputs."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from router_svc.ops.cache_eval import (
    LONG_PREAMBLE,
    CacheEvalOptions,
    SweepRow,
    choose_default,
    choose_threshold,
    evaluate_long_prompts,
    evaluate_pairs,
    long_prompt_pairs,
    plot_report,
    print_report,
    run,
    sweep,
)
from router_svc.ops.pairs import Pair, load_pairs
from router_svc.ops.up import ServedModelOptions


def test_sweep_counts_hits_precision_and_recall() -> None:
    sims = np.array([0.99, 0.95, 0.91, 0.85, 0.80, 0.50])
    labels = np.array([1, 1, 0, 1, 0, 0], dtype=bool)
    rows = sweep(sims, labels, [0.9, 0.8, 1.0])
    by = {r.threshold: r for r in rows}
    assert by[0.9] == SweepRow(0.9, 2 / 3, 2 / 3, 3, 2, 3)
    assert by[0.8].hits == 5 and by[0.8].precision == pytest.approx(3 / 5)
    assert by[0.8].recall == 1.0
    assert by[1.0] == SweepRow(1.0, 1.0, 0.0, 0, 0, 3)  # no hits: nothing served wrongly
    assert [r.threshold for r in rows] == [0.9, 0.8, 1.0]  # in the order asked
    with pytest.raises(ValueError):
        sweep(sims, labels[:3], [0.5])


def test_sweep_is_inclusive_at_the_threshold() -> None:
    assert sweep(np.array([0.9]), np.array([True]), [0.9])[0].hits == 1


def rows_from(points: list[tuple[float, float, int]]) -> list[SweepRow]:
    return [SweepRow(t, p, 0.0, h, round(p * h), 100) for t, p, h in points]


def test_choose_threshold_is_the_lowest_that_stays_precise_above() -> None:
    rows = rows_from([(0.80, 0.90, 400), (0.85, 0.96, 300), (0.90, 0.94, 200),
                      (0.95, 0.97, 100), (0.97, 0.99, 50), (0.99, 0.50, 4)])
    chosen = choose_threshold(rows, min_precision=0.95, min_hits=20)
    # 0.85 is precise enough but 0.90 above it is not: raising the threshold a little must
    # never make it worse, so 0.95 it is. 0.99 has too few hits to judge (or to veto).
    assert chosen is not None and chosen.threshold == 0.95
    assert choose_threshold(rows, min_precision=0.999) is None
    assert choose_threshold(rows, min_precision=0.6, min_hits=1) is None  # 0.99 vetoes
    assert choose_threshold(list(reversed(rows)), 0.95).threshold == 0.95  # type: ignore[union-attr]
    assert choose_threshold([], 0.95) is None


def test_choose_default_must_satisfy_every_set() -> None:
    easy = rows_from([(0.8, 0.97, 100), (0.9, 0.98, 50)])
    hard = rows_from([(0.8, 0.70, 100), (0.9, 0.96, 40)])
    assert choose_default({"easy": easy}) == 0.8
    assert choose_default({"easy": easy, "hard": hard}) == 0.9
    assert choose_default({"easy": easy, "never": rows_from([(0.9, 0.5, 40)])}) is None


def _bag_of_words(text: str, dim: int = 8) -> np.ndarray:
    """A stand-in embedding for texts the test did not place: hashed word counts, so texts
    that share most of their words (a long preamble) come out near-identical, as they do
    with the real model."""
    v = np.zeros(dim)
    for w in text.lower().split():
        v[zlib.crc32(w.encode()) % dim] += 1.0
    return v / max(np.linalg.norm(v), 1e-12)


def _fake_embedder(vectors: dict[str, np.ndarray]):
    calls: list[list[str]] = []

    async def embed(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return np.stack([vectors[t] if t in vectors else _bag_of_words(t) for t in texts])

    return embed, calls


def _at(v: np.ndarray, sim: float) -> np.ndarray:
    u = np.roll(v, 1) - (np.roll(v, 1) @ v) * v
    u /= np.linalg.norm(u)
    return sim * v + np.sqrt(1 - sim * sim) * u


def _pairs() -> tuple[list[Pair], dict[str, np.ndarray]]:
    base = np.eye(8, dtype=np.float64)
    vec = {
        "How do I reset my password?": base[0],
        "How can I reset my password?": _at(base[0], 0.99),
        "What is the capital of France?": base[1],
        "What is the capital of Germany?": _at(base[1], 0.93),
        "Is it safe to drink tap water?": base[2],
        "Is it unsafe to drink tap water?": _at(base[2], 0.99),
        "Name a prime number": base[3],
        "Give me a prime number": _at(base[3], 0.8),
        "How do I boil an egg?": base[4],
        "How do I poach an egg?": _at(base[4], 0.93),
    }
    pairs = [
        Pair("How do I reset my password?", "How can I reset my password?", 1.0, True),
        Pair("What is the capital of France?", "What is the capital of Germany?", 0.0, False),
        Pair("Is it safe to drink tap water?", "Is it unsafe to drink tap water?", 0.0, False),
        Pair("Name a prime number", "Give me a prime number", 1.0, True),
        # another verb in the same frame: no text rule can tell, the threshold must
        Pair("How do I boil an egg?", "How do I poach an egg?", 0.0, False),
    ]
    return pairs, vec


async def test_evaluate_pairs_with_any_embedder_and_the_guard() -> None:
    pairs, vec = _pairs()
    embed, calls = _fake_embedder(vec)
    report = await evaluate_pairs(pairs, embed, 0.9, thresholds=[0.75, 0.9, 0.95])
    assert sum(len(c) for c in calls) == len(vec)  # each distinct text embedded once
    # the guard refuses Germany for France (a changed name) and unsafe for safe
    assert report.pairs == 5 and report.positives == 2 and report.guarded == 2
    at = report.at_threshold
    assert at.threshold == 0.9 and at.hits == 2 and at.true_hits == 1  # poach is a wrong hit
    assert at.precision == 0.5 and at.recall == 0.5
    assert [round(s, 2) for s, _, _ in report.wrong_hits] == [0.93]
    assert report.summary_line() == "threshold=0.90 precision=0.50 recall=0.50"
    no_guard = await evaluate_pairs(pairs, _fake_embedder(vec)[0], 0.95, guard=None)
    assert no_guard.at_threshold.hits == 2  # "unsafe" would have been served "safe"'s answer
    assert no_guard.at_threshold.precision == 0.5
    assert (await evaluate_pairs(pairs, _fake_embedder(vec)[0], 0.9, guard=None)).guarded == 0
    with pytest.raises(ValueError):
        await evaluate_pairs([], embed, 0.9)


async def test_report_table_plot_and_last_line(tmp_path: Path, capsys) -> None:
    pairs, vec = _pairs()
    report = await evaluate_pairs(pairs, _fake_embedder(vec)[0], 0.95)
    print_report(report)
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "threshold=0.95 precision=1.00 recall=0.50"
    assert any("precision" in line for line in out[:-1])
    png = plot_report(report, tmp_path / "sub" / "cache.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_run_reads_a_pairs_file(tmp_path: Path, capsys) -> None:
    pairs, vec = _pairs()
    tsv = tmp_path / "mrpc.tsv"
    tsv.write_text("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n" + "".join(
        f"{int(p.paraphrase)}\t{i}\t{i}\t{p.a}\t{p.b}\n" for i, p in enumerate(pairs)))
    report = await run(tsv, _fake_embedder(vec)[0], 0.9, tmp_path / "out")
    assert report.pairs == 5 and (tmp_path / "out" / "cache_mrpc.png").is_file()
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("threshold=0.90 precision=0.50 recall=0.50 ")
    # the long-prompt case ran too: shared preambles never hit, whitespace variants do
    assert out[-1].endswith(" long_precision=1.00 long_recall=1.00")
    assert any("long prompts" in line for line in out)
    lp = report.long_prompts
    assert lp is not None and lp.negatives == 40 and lp.at_threshold.positives == 40
    assert lp.unguarded.hits > lp.at_threshold.hits  # similarity alone would serve some
    no_long = await run(tsv, _fake_embedder(vec)[0], 0.9, tmp_path / "out", long_prompts=0)
    assert no_long.long_prompts is None


def test_long_prompt_pairs_share_a_preamble_or_differ_in_whitespace() -> None:
    texts = [f"Document number {w} about {w}s." for w in
             ("apple", "pear", "plum", "fig", "kiwi", "lime")]
    pairs = long_prompt_pairs(texts, n=6, seed=1)
    assert len(pairs) == 12 and sum(p.paraphrase for p in pairs) == 6
    for p in pairs:
        assert p.a.startswith(LONG_PREAMBLE) and len(p.a) > 1000
        same = " ".join(p.a.split()) == " ".join(p.b.split())
        assert same is p.paraphrase  # a whitespace variant, or another prompt altogether
        assert p.a != p.b
    assert long_prompt_pairs(texts, n=6, seed=1) == pairs  # deterministic
    with pytest.raises(ValueError):
        long_prompt_pairs(["a", "b"], n=2)


async def test_long_prompts_never_hit_through_the_guard() -> None:
    texts = [f"Question {i}: how do I fix error {i} in module {i}?" for i in range(20)]
    embed, _ = _fake_embedder({})
    lp = await evaluate_long_prompts(texts, embed, 0.9, n=10)
    assert lp.median_negative_similarity > 0.9  # the shared preamble dominates the embedding
    assert lp.unguarded.hits - lp.unguarded.true_hits > 0  # similarity alone serves them
    assert lp.at_threshold.hits == lp.at_threshold.true_hits == 10  # the guard: only the same
    assert lp.at_threshold.precision == 1.0 and lp.at_threshold.recall == 1.0


def _cli_cache_options(monkeypatch, *argv: str) -> CacheEvalOptions:
    """The options ``router-svc eval cache ARGV`` hands to ``eval_served``."""
    import router_svc.ops.cache_eval
    from router_svc.ops.cli import main

    seen: list[CacheEvalOptions] = []

    async def fake(opts: CacheEvalOptions) -> None:
        seen.append(opts)

    monkeypatch.setattr(router_svc.ops.cache_eval, "eval_served", fake)
    assert main(["eval", "cache", *argv]) == 0
    return seen[0]


def test_eval_cache_options_are_the_command_lines(monkeypatch, tmp_path: Path) -> None:
    pairs = tmp_path / "p.tsv"
    assert _cli_cache_options(monkeypatch, "--pairs", str(pairs)) == CacheEvalOptions(pairs)
    assert _cli_cache_options(
        monkeypatch, "--pairs", str(pairs), "--threshold", "0.9", "--min-precision", "0.8",
        "--concurrency", "4", "--out", str(tmp_path / "o"), "--triton-url", "h:1",
        "--model-dir", str(tmp_path / "m"), "--model-name", "x", "--int8",
    ) == CacheEvalOptions(pairs, threshold=0.9, min_precision=0.8, concurrency=4,
                          out=tmp_path / "o", served=ServedModelOptions(
                              triton_url="h:1", model_dir=tmp_path / "m", model_name="x",
                              int8=True))


@pytest.mark.integration
async def test_real_embeddings_wording_hits_opposites_miss(trained_model_dir: Path) -> None:
    """The model's own embedding at the default threshold, through the cache as shipped."""
    from router_svc.cache.store import CachedResponse, HnswCache
    from router_svc.config.loading import CacheConfig
    from router_svc.ops.cache_eval import onnx_embedder

    embed = onnx_embedder(trained_model_dir, threads=1)
    stored = ["How do I reset my password?", "Is it safe to drink tap water in Paris?",
              "What is the capital of France?", "Convert 100 USD to EUR"]
    asked = {
        "How can I reset my password?": stored[0],  # same question, other wording: hit
        "how do i reset my password": stored[0],
        "Is it safe to drink tap water in Paris": stored[1],
        "What's the capital of France?": stored[2],
        "Is it unsafe to drink tap water in Paris?": None,  # the opposite question
        "What is the capital of Germany?": None,  # shares most words, another answer
        "How do I change my username?": None,
        "Convert 200 USD to EUR": None,
    }
    vecs = await embed(stored + list(asked))
    cache = HnswCache(vecs.shape[1])
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"},
                         "finish_reason": "stop"}]}
    for text, v in zip(stored, vecs, strict=False):
        assert await cache.store("p", v, text, CachedResponse("chat", body))
    threshold = CacheConfig().threshold
    for (text, want), v in zip(asked.items(), vecs[len(stored):], strict=True):
        hit = await cache.lookup("p", v, threshold, text=text)
        assert (hit.text if hit else None) == want, (text, hit and hit.similarity)


@pytest.mark.integration
def test_eval_cache_command_through_triton(trained_triton, trained_model_dir, tmp_path,
                                           capsys) -> None:
    """``router-svc eval cache`` embeds through the served model and ends with the summary."""
    from router_svc.ops.cli import main

    pairs = tmp_path / "pairs.tsv"
    rows = [
        ("1", "Explain the theory of relativity.", "Please explain the theory of relativity."),
        ("1", "Can you explain how photosynthesis works?",
         "Could you explain how photosynthesis works?"),
        ("0", "Explain the theory of relativity.", "Explain the theory of evolution."),
        ("0", "Is it safe to eat raw chicken?", "Is it unsafe to eat raw chicken?"),
        ("0", "How do I reverse a list in Python?", "How do I sort a list in Python?"),
    ]
    pairs.write_text("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n" + "".join(
        f"{q}\t{i}\t{i + 100}\t{a}\t{b}\n" for i, (q, a, b) in enumerate(rows)))
    rc = main(["eval", "cache", "--pairs", str(pairs), "--threshold", "0.97",
               "--triton-url", trained_triton.grpc_url, "--model-dir", str(trained_model_dir),
               "--concurrency", "4", "--out", str(tmp_path / "out")])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    print(last)
    assert last.startswith("threshold=0.97 precision=")
    fields = dict(kv.split("=") for kv in last.split())
    assert 0.0 <= float(fields["precision"]) <= 1.0 and 0.0 <= float(fields["recall"]) <= 1.0
    assert (tmp_path / "out" / "cache_pairs.png").is_file()


def test_load_pairs_reads_sick_and_keeps_the_other_formats(tmp_path: Path) -> None:
    sick = tmp_path / "SICK_train.txt"
    sick.write_text(
        "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
        "1\tA man is playing a guitar\tA man is playing an instrument\t4.5\tENTAILMENT\n"
        "2\tA man is not smiling\tA man is smiling\t4.1\tCONTRADICTION\n"
        "3\tTwo dogs are fighting\tTwo dogs are wrestling and hugging\t4.0\tNEUTRAL\n"
        "4\tA cat sleeps\tA cat is asleep\t3.6\tENTAILMENT\n")
    loaded = load_pairs(sick)
    assert loaded.format == "sick" and loaded.skipped == 1  # the header
    assert [p.paraphrase for p in loaded.pairs] == [True, False, False, False]
    assert loaded.pairs[0] == Pair("A man is playing a guitar", "A man is playing an instrument",
                                   4.5, True)
    mrpc = tmp_path / "mrpc.tsv"
    mrpc.write_text("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\ta\tb\n"
                    "0\t3\t4\tc\tNEUTRAL\n")
    loaded = load_pairs(mrpc)
    assert loaded.format == "mrpc" and [p.paraphrase for p in loaded.pairs] == [True, False]
