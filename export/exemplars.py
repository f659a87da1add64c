"""The category exemplars a model build ships (``router_svc/classify/exemplars.py``).

The build's own MMLU-Pro training questions, labelled with their category; hand-written short
user-style questions per category (``category_seeds.jsonl``: exam questions are long and formal,
users' are not); and its chit-chat plus the generic conversation turns below, labelled as no
topic (uniform), all embedded by the model's embedding branch. The validation questions and the
hand-written short prompts of ``eval_data`` are never exemplars: they measure the vote.
``router-svc model exemplars --model-dir DIR`` writes the file for a model built before the
build did so, and ``--examples FILE`` adds an operator's own labelled prompts.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from router_svc.classify.exemplars import FILE_NAME, Exemplars
from router_svc.classify.pii import softmax
from router_svc.labels import CATEGORIES

SEEDS = Path(__file__).parent / "category_seeds.jsonl"


class ExamplesError(ValueError):
    """A labelled-examples file with a line that is not ``{"text": ..., "category": ...}``."""


def load_examples(path: Path) -> list[tuple[str, int]]:
    """(text, category index) of a JSONL file of ``{"text", "category"}`` lines (the shipped
    seeds, or an operator's own examples); a bad line is an error naming the file and line."""
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text, category = row["text"], row["category"]
        except (ValueError, TypeError, KeyError) as e:
            raise ExamplesError(f"{path} line {n}: expected a JSON object with \"text\" and "
                                f"\"category\" ({e})") from None
        if category not in CATEGORIES:
            raise ExamplesError(f"{path} line {n}: category {category!r} is not one of "
                                f"{', '.join(CATEGORIES)}")
        if not isinstance(text, str) or not text.strip():
            raise ExamplesError(f"{path} line {n}: \"text\" must be a non-empty string")
        rows.append((text, CATEGORIES.index(category)))
    return rows


# Turns that carry no subject of their own, only a reference to the answer before them: their
# neighbours vote for no category, so "explain that again" does not move a conversation.
GENERIC_TURNS = (
    "Tell me more.", "Could you go into more detail?", "What do you mean by that?",
    "Can you clarify the last part?", "Walk me through it again, slower.",
    "Hmm, I'm not sure I follow.", "Could you rephrase that?", "What's the reasoning behind it?",
    "How did you get that result?", "Can you expand on your answer?",
    "Give me a simpler version please.", "Is that always true?", "What about the other case?",
    "And then what happens?", "OK, continue.", "Keep going.", "Can you list the steps?",
    "Why does that work?", "Could you check that again?", "That doesn't look right to me.",
    "I think you made a mistake.", "Can you do the same for the next one?",
    "What about part b?", "Now do the third one.", "Explain it like I'm five.",
    "Can you put that in a table?", "Summarize the above.", "Shorter, please.",
    "More detail, please.", "Can you give me another example?", "Any other ideas?",
    "What are the alternatives?", "Which one is better?", "Can you compare them?",
    "So what's the final answer?", "Just give me the answer.", "Why not the first option?",
    "Is there a faster way?", "How would you explain this to a beginner?",
    "Could you write that as bullet points?", "Did you consider the other option?",
    "What did you assume there?", "Where does that formula come from?",
    "Can you show your work?", "Thanks, that helps. One more question about it.",
    "Got it. What's next?", "Perfect, can you repeat the key point?", "Wait, why is that?",
    "Sorry, I meant the previous one.", "Let's try again from the start.",
)


def make_exemplars(topic_vectors: np.ndarray, topic_labels: Sequence[int],
                   none_vectors: np.ndarray) -> Exemplars:
    """Exemplars from category-labelled vectors and no-topic vectors (uniform labels)."""
    n_cat = len(CATEGORIES)
    labels = np.concatenate([np.eye(n_cat, dtype=np.float32)[np.asarray(topic_labels)],
                             np.full((len(none_vectors), n_cat), 1 / n_cat, np.float32)])
    vectors = np.concatenate([topic_vectors, none_vectors]).astype(np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return Exemplars(vectors, labels, tuple(CATEGORIES))


def vote_report(ex: Exemplars, logits: np.ndarray, embeddings: np.ndarray, y: np.ndarray,
                threshold: float) -> dict[str, dict[str, float]]:
    """Accuracy and coverage above ``threshold`` of the head alone and with the vote."""
    head = softmax(logits, axis=-1)
    refined = np.stack([ex.refine(p, e) for p, e in zip(head, embeddings, strict=True)])
    out = {}
    for name, p in (("head", head), ("with_exemplars", refined)):
        ok, above = p.argmax(1) == y, p.max(1) >= threshold
        out[name] = {"accuracy": float(ok.mean()), "share_above_threshold": float(above.mean()),
                     "accuracy_above_threshold": float(ok[above].mean()) if above.any() else 0.0}
    return out


def below_share(ex: Exemplars, logits: np.ndarray, embeddings: np.ndarray,
                threshold: float) -> float:
    """The share of rows that stay under ``threshold`` with the vote (chit-chat must)."""
    head = softmax(logits, axis=-1)
    return float(np.mean([ex.refine(p, e).max() < threshold
                          for p, e in zip(head, embeddings, strict=True)]))


def onnx_runner(model_dir: Path, threads: int = 2) -> Callable[[list[str]], tuple]:
    """(category logits, embeddings) of texts by the built ONNX model, first 128 tokens."""
    import onnxruntime as ort

    from router_svc.classify.tokenization import TextTokenizer

    tok = TextTokenizer(model_dir / "tokenizer.json")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), so,
                                providers=["CPUExecutionProvider"])

    def run(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        from tqdm import tqdm

        wins = tok.truncated(texts, 128)
        order = np.argsort([len(w.ids) for w in wins])
        cat = np.zeros((len(texts), len(CATEGORIES)), np.float32)
        emb: np.ndarray | None = None
        for s in tqdm(range(0, len(order), 64), desc="embedding", unit="batch"):
            idx = order[s:s + 64]
            n = max(len(wins[i].ids) for i in idx)
            ids = np.zeros((len(idx), n), np.int64)
            mask = np.zeros_like(ids)
            for j, i in enumerate(idx):
                ids[j, :len(wins[i].ids)] = wins[i].ids
                mask[j, :len(wins[i].ids)] = 1
            c, _, e = sess.run(None, {"input_ids": ids, "attention_mask": mask})
            if emb is None:
                emb = np.zeros((len(texts), e.shape[1]), np.float32)
            cat[idx], emb[idx] = c, e
        assert emb is not None
        return cat, emb

    return run


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    from export import data as D
    from export.build import DEFAULT_DATA, SHORT_PROMPTS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, required=True,
                    help="a built model: model.onnx, tokenizer.json, build_report.json")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--threshold", type=float, default=0.6)
    ap.add_argument("--examples", type=Path, action="append", default=[],
                    help="a JSONL file of your own labelled prompts ({\"text\", \"category\"} "
                    "per line), added to the exemplars; repeatable")
    a = ap.parse_args(argv)
    try:
        extra = [row for f in [SEEDS, *a.examples] for row in load_examples(f)]
    except (OSError, ExamplesError) as e:
        ap.error(str(e))
    opts = json.loads((a.model_dir / "build_report.json").read_text())["options"]
    seed, offtopic = int(opts["seed"]), int(opts["offtopic"])
    mmlu, _ = D.load_mmlu(a.data_dir / "mmlu_pro/questions.jsonl")
    train, val = D.split_mmlu(mmlu, val_fraction=0.1, seed=seed)  # as the build split it
    short = D.load_mmlu(SHORT_PROMPTS)[0]
    run = onnx_runner(a.model_dir)
    _, topic = run([e.text for e in train] + [t for t, _ in extra])
    _, none = run(D.offtopic_prompts(offtopic, seed) + list(GENERIC_TURNS))
    ex = make_exemplars(topic, [e.label for e in train] + [c for _, c in extra], none)
    ex.save(a.model_dir / FILE_NAME)
    t = Table(title=f"category exemplars: {len(ex.vectors)} -> {a.model_dir / FILE_NAME}")
    for col in ("set", "", "accuracy", f"above {a.threshold}", "accuracy there"):
        t.add_column(col)
    for name, rows in (("MMLU-Pro val", val), ("short prompts", short)):
        logits, emb = run([e.text for e in rows])
        rep = vote_report(ex, logits, emb, np.array([e.label for e in rows]), a.threshold)
        for how, r in rep.items():
            t.add_row(name, how, f"{r['accuracy']:.3f}", f"{r['share_above_threshold']:.3f}",
                      f"{r['accuracy_above_threshold']:.3f}")
    Console().print(t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
