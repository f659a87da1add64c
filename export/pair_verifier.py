"""Train and export the cache's hit verifier: a cross-encoder on all-MiniLM-L6-v2.

A pooled sentence embedding forgets order and roles, so the semantic cache's candidate hit (the
nearest stored prompt above ``cache.threshold``) is checked on its two texts before it is
served. This model reads both texts at once (``[CLS] a [SEP] b [SEP]``), so attention sees which
word sits where, and gives one logit: may an answer to one be served for the other?

Trained on the development splits of the paraphrase data only (MRPC train, STS-B train, STS 2015
train, SICK train; the test splits and SemEval 2016 questions stay held out for
``perf/cache_verify.py``), plus the meaning-changed and surface-edited copies of
``export/pair_data.py``. Validated on MRPC val, STS-B dev and STS 2015 val.

    python -m export.pair_verifier --out model_repository/semantic_router/1
writes ``pair_verifier.onnx`` (inputs ``input_ids``, ``attention_mask``, ``token_type_ids``,
int64 ``[batch, seq]``; output ``logit`` ``[batch]``) and ``pair_verifier.json`` (the
training summary and validation figures).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from export.data import load_mmlu
from export.pair_data import LabelledPair, names_in, perturbed, surface_edit
from router_svc.cache.pair_model import pair_tokenizer
from router_svc.ops.pairs import Pair, load_pairs

ONNX_NAME = "pair_verifier.onnx"
REPORT_NAME = "pair_verifier.json"
MAX_CHARS = 400  # longer questions are not used for training (see cache/verify.py, LONG_CHARS)

TRAIN_FILES = ("para_msr_msr-para-train.tsv", "glue_STS-B_original_sts-train.tsv",
               "sts_semeval-sts_all_2015.train.tsv", "sts_sick2014_SICK_train.txt")
VAL_FILES = ("para_msr_msr-para-val.tsv", "glue_STS-B_original_sts-dev.tsv",
             "sts_semeval-sts_all_2015.val.tsv")


@dataclass
class VerifierOptions:
    out_dir: Path
    data_dir: Path
    epochs: int = 2
    batch_size: int = 32
    lr: float = 5e-5
    seed: int = 0
    questions: int = 4000  # MMLU-Pro stems for question-shaped positives and negatives
    limit: int | None = None  # at most this many training pairs (quick builds)
    threads: int | None = None


def _pairs(data_dir: Path, files: tuple[str, ...]) -> list[tuple[str, Pair]]:
    out = []
    for name in files:
        path = data_dir / "paraphrase" / name
        source = name.split("_")[1] if name.startswith(("para_", "sts_", "glue_")) else name
        out.extend((source, p) for p in load_pairs(path).pairs)
    return out


def _questions(data_dir: Path, n: int, rng: random.Random) -> list[str]:
    path = data_dir / "mmlu_pro" / "questions.jsonl"
    if n <= 0 or not path.is_file():
        return []
    qs = [e.text for e in load_mmlu(path)[0] if 10 <= len(e.text) <= MAX_CHARS]
    rng.shuffle(qs)
    return qs[:n]


def graded_target(source: str, p: Pair) -> float | None:
    """STS pairs carry a 0-5 score: 5 -> 1, 4 (the paraphrase cut) -> 0.5, 3 and below -> 0,
    so p >= 0.5 means "score >= 4" and the model also learns how far from it a pair is."""
    if source in ("STS-B", "semeval-sts"):
        return min(1.0, max(0.0, (p.score - 3.0) / 2.0))
    return None


def labelled(pairs: list[tuple[str, Pair]], questions: list[str], rng: random.Random,
             names: list[str]) -> list[LabelledPair]:
    """The pairs with their labels, each paraphrase's meaning-changed and surface-edited copies,
    and the questions' own; both orders of a pair are equally likely."""
    out: list[LabelledPair] = []

    def add(a: str, b: str, label: int, kind: str, target: float | None = None) -> None:
        if rng.random() < 0.5:
            a, b = b, a
        out.append(LabelledPair(a, b, label, kind, target))

    for source, p in pairs:
        add(p.a, p.b, int(p.paraphrase), source, graded_target(source, p))
        if not p.paraphrase:
            continue
        if (edit := perturbed(p.b, rng, names)) is not None:
            add(p.a if rng.random() < 0.5 else p.b, edit[0], 0, edit[1])
        if rng.random() < 0.3:
            add(p.a, surface_edit(p.a, rng), 1, "identity")
    for q in questions:
        add(q, surface_edit(q, rng), 1, "identity_question")
        if (edit := perturbed(q, rng, names)) is not None:
            add(q, edit[0], 0, edit[1] + "_question")
    rng.shuffle(out)
    return out


def _encode(tokenizer, batch: list[LabelledPair]):
    import torch

    enc = tokenizer.encode_batch([(p.a, p.b) for p in batch])
    width = max(len(e.ids) for e in enc)
    ids = np.zeros((len(enc), width), np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for i, e in enumerate(enc):
        n = len(e.ids)
        ids[i, :n], mask[i, :n], types[i, :n] = e.ids, e.attention_mask, e.type_ids
    return torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types)


def _batches(data: list[LabelledPair], size: int, rng: random.Random) -> list[list[LabelledPair]]:
    # Similar lengths together within small random groups (8 batches): less padding, while a
    # batch still mixes sources and kinds (sorting groups of 50 batches grouped them).
    order = list(data)
    rng.shuffle(order)
    out = []
    for i in range(0, len(order), size * 8):
        group = sorted(order[i:i + size * 8], key=lambda p: len(p.a) + len(p.b))
        out.extend(group[j:j + size] for j in range(0, len(group), size))
    rng.shuffle(out)
    return out


def predict(model, tokenizer, pairs: list[LabelledPair], batch: int = 64) -> np.ndarray:
    import torch

    model.eval()
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].a) + len(pairs[i].b))
    out = np.zeros(len(pairs), np.float32)
    with torch.inference_mode():
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            ids, mask, types = _encode(tokenizer, [pairs[i] for i in idx])
            out[idx] = model(input_ids=ids, attention_mask=mask,
                             token_type_ids=types).logits[:, 0].numpy()
    return out


def precision_recall(logits: np.ndarray, labels: np.ndarray, cut: float) -> tuple[float, float]:
    chosen = logits >= cut
    tp = int((chosen & (labels == 1)).sum())
    p = tp / int(chosen.sum()) if chosen.any() else 1.0
    r = tp / int((labels == 1).sum()) if (labels == 1).any() else 0.0
    return p, r


def train(opts: VerifierOptions, progress: bool = True) -> dict:
    import torch
    from tqdm import tqdm
    from transformers import BertForSequenceClassification

    from export.backbone import minilm_path

    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(opts.seed)
    rng = random.Random(opts.seed)
    t0 = time.monotonic()
    train_pairs = _pairs(opts.data_dir, TRAIN_FILES)
    val_pairs = _pairs(opts.data_dir, VAL_FILES)
    questions = _questions(opts.data_dir, opts.questions, rng)
    names = names_in([p.a for _, p in train_pairs] + [p.b for _, p in train_pairs])
    data = labelled(train_pairs, questions[: len(questions) * 3 // 4], rng, names)
    val = labelled(val_pairs, questions[len(questions) * 3 // 4:], random.Random(opts.seed + 1),
                   names)
    if opts.limit:
        data = data[:opts.limit]
    tokenizer = pair_tokenizer(minilm_path() / "tokenizer.json")
    model = BertForSequenceClassification.from_pretrained(str(minilm_path()), num_labels=1)
    model.to(device)
    batches = _batches(data, opts.batch_size, rng)
    steps = len(batches) * opts.epochs
    optim = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / max(1, steps // 10)) * max(0.0, 1 - s / steps))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    bar = tqdm(total=steps, desc="pair verifier", disable=not progress, unit="batch")
    for epoch in range(opts.epochs):
        model.train()
        for batch in (batches if epoch == 0 else _batches(data, opts.batch_size, rng)):
            ids, mask, types = (t.to(device) for t in _encode(tokenizer, batch))
            y = torch.tensor([p.label if p.target is None else p.target for p in batch],
                             dtype=torch.float32, device=device)
            loss = loss_fn(model(input_ids=ids, attention_mask=mask,
                                 token_type_ids=types).logits[:, 0], y)
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    bar.close()
    train_s = time.monotonic() - t0
    model.to("cpu")  # validation and the ONNX export on the CPU
    logits = predict(model, tokenizer, val)
    labels = np.array([p.label for p in val])
    by_kind: dict[str, dict[str, float]] = {}
    for kind in sorted({p.kind for p in val}):
        m = np.array([p.kind == kind for p in val])
        by_kind[kind] = {"pairs": int(m.sum()), "accuracy": float(((logits[m] >= 0) ==
                                                                    (labels[m] == 1)).mean())}
    cuts = {f"{c:g}": dict(zip(("precision", "recall"), precision_recall(logits, labels, c),
                               strict=True)) for c in (-2, -1, 0, 1, 2, 3, 4)}
    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    export_onnx(model, out / ONNX_NAME)
    report = {
        "options": {k: str(v) for k, v in asdict(opts).items()},
        "train": {"pairs": len(data), "kinds": dict(Counter(p.kind for p in data)),
                  "positives": sum(p.label for p in data), "seconds": round(train_s, 1),
                  "device": str(device)},
        "validation": {"pairs": len(val), "by_kind": by_kind, "by_logit_cut": cuts},
    }
    (out / REPORT_NAME).write_text(json.dumps(report, indent=2))
    return report


def export_onnx(model, path: Path) -> None:
    import torch

    class Logit(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).logits[:, 0]

    wrapped = Logit(model.eval()).eval()
    ids = torch.ones((2, 16), dtype=torch.int64)
    dyn = {0: "batch", 1: "seq"}
    torch.onnx.export(wrapped, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(path),
                      input_names=["input_ids", "attention_mask", "token_type_ids"],
                      output_names=["logit"], opset_version=17, dynamo=False,
                      dynamic_axes={"input_ids": dyn, "attention_mask": dyn,
                                    "token_type_ids": dyn, "logit": {0: "batch"}})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2]
                    / "shared" / "data")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--questions", type=int, default=4000)
    a = ap.parse_args(argv)
    report = train(VerifierOptions(out_dir=a.out, data_dir=a.data_dir, epochs=a.epochs,
                                   limit=a.limit, threads=a.threads, questions=a.questions))
    print(json.dumps({"train": report["train"], "validation": report["validation"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
