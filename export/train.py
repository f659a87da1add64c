"""Training the dual-head model's trainable part on cached frozen features.

The shared lower layers are frozen, so their output for every training text is computed once
(``cache_features``) and the trainable top layers and heads train on it for several epochs. On a
2-core CPU this is what makes a reproducible build fit in minutes.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from export.modeling import DualHeadModel

UNIFORM = -1  # category target: the uniform distribution (off-topic, outlier exposure)
NO_CATEGORY = -2  # no category loss for this example
IGNORE = -100  # token label ignored by the PII loss


@dataclass
class Example:
    ids: list[int]
    category: int = NO_CATEGORY
    tags: list[int] | None = None  # one per token, IGNORE where not supervised
    epochs: int | None = None  # the first this many epochs train on it; None: all


@dataclass
class Cached:
    hidden: list[torch.Tensor]  # per example [len, dim], float16
    examples: list[Example]


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 32
    lr_layers: float = 5e-5
    lr_heads: float = 1e-3
    weight_decay: float = 0.01
    pii_weight: float = 1.0
    uniform_weight: float = 0.5
    category_grad_scale: float = 1.0
    seed: int = 0
    warmup_fraction: float = 0.06


@dataclass
class TrainLog:
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def length_batches(lengths: list[int], batch_size: int, rng: random.Random,
                   shuffle: bool = True) -> list[list[int]]:
    """Batches of similar length (less padding), in random order."""
    idx = list(range(len(lengths)))
    if shuffle:
        rng.shuffle(idx)
    chunk = batch_size * 50
    batches = []
    for s in range(0, len(idx), chunk):
        group = sorted(idx[s:s + chunk], key=lambda i: lengths[i])
        batches += [group[j:j + batch_size] for j in range(0, len(group), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    return batches


def pad_ids(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), n), dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


@torch.no_grad()
def cache_features(model: DualHeadModel, examples: list[Example], batch_size: int = 64,
                   desc: str = "encoding", encode=None) -> Cached:
    """The shared layers' output for every example, computed once per distinct text (repeated
    rows share it). ``encode``: ``(ids, mask) -> hidden`` in numpy (the build's onnxruntime
    copy of the layers, ``onnx_export.shared_encoder``); None: the model in torch."""
    model.eval()
    first: dict[tuple[int, ...], int] = {}
    owner = [first.setdefault(tuple(e.ids), i) for i, e in enumerate(examples)]
    todo = sorted(set(owner))
    hidden: list[torch.Tensor | None] = [None] * len(examples)
    lengths = [len(examples[i].ids) for i in todo]
    for b in tqdm(length_batches(lengths, batch_size, random.Random(0), shuffle=False),
                  desc=desc, unit="batch"):
        ids, mask = pad_ids([examples[todo[j]].ids for j in b])
        if encode is None:
            h = model.shared_forward(ids, mask)
        else:
            h = torch.from_numpy(encode(ids.numpy(), mask.numpy()))
        for row, j in enumerate(b):
            hidden[todo[j]] = h[row, : lengths[j]].to(torch.float16).clone()
    for i, o in enumerate(owner):
        hidden[i] = hidden[o]
    return Cached(hidden=hidden, examples=examples)  # type: ignore[arg-type]


def collate(cached: Cached, batch: list[int]):
    n = max(cached.hidden[i].shape[0] for i in batch)
    dim = cached.hidden[batch[0]].shape[1]
    h = torch.zeros((len(batch), n, dim), dtype=torch.float32)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    tags = torch.full((len(batch), n), IGNORE, dtype=torch.long)
    cats = torch.full((len(batch),), NO_CATEGORY, dtype=torch.long)
    for j, i in enumerate(batch):
        x = cached.hidden[i]
        h[j, : x.shape[0]] = x.float()
        mask[j, : x.shape[0]] = 1
        ex = cached.examples[i]
        cats[j] = ex.category
        if ex.tags is not None:
            tags[j, : len(ex.tags)] = torch.tensor(ex.tags)
    return h, mask, cats, tags


def losses(cat_logits: torch.Tensor, pii_logits: torch.Tensor, cats: torch.Tensor,
           tags: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    total = cat_logits.new_zeros(())
    labelled = cats >= 0
    if labelled.any():
        total = total + nn.functional.cross_entropy(cat_logits[labelled], cats[labelled])
    uniform = cats == UNIFORM
    if uniform.any():
        # Outlier exposure: cross-entropy to the uniform distribution keeps off-topic prompts
        # (greetings, PII-only chatter) at low confidence so the threshold means something.
        logp = nn.functional.log_softmax(cat_logits[uniform], dim=-1)
        total = total + cfg.uniform_weight * (-logp.mean(dim=-1)).mean()
    if (tags != IGNORE).any():
        total = total + cfg.pii_weight * nn.functional.cross_entropy(
            pii_logits.reshape(-1, pii_logits.shape[-1]), tags.reshape(-1), ignore_index=IGNORE
        )
    return total


def epoch_rows(examples: Sequence[Example], epoch: int) -> list[int]:
    """The examples epoch ``epoch`` (from 0) trains on: those whose ``epochs`` reach it."""
    return [i for i, e in enumerate(examples) if e.epochs is None or epoch < e.epochs]


def train(model: DualHeadModel, cached: Cached, cfg: TrainConfig) -> TrainLog:
    import time

    seed_everything(cfg.seed)
    rng = random.Random(cfg.seed)
    model.freeze_backbone()
    head_params = [*model.category_head.parameters(), *model.pii_head.parameters()]
    opt = torch.optim.AdamW(
        [
            {"params": list(model.head_top.parameters()), "lr": cfg.lr_layers},
            {"params": head_params, "lr": cfg.lr_heads},
        ],
        weight_decay=cfg.weight_decay,
    )
    lengths = [h.shape[0] for h in cached.hidden]
    epochs = [epoch_rows(cached.examples, e) for e in range(cfg.epochs)]
    total = sum(math.ceil(len(rows) / cfg.batch_size) for rows in epochs)
    warm = max(1, int(total * cfg.warmup_fraction))

    def lr_factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    log = TrainLog()
    t0 = time.perf_counter()
    model.train()
    model.embeddings.eval()
    model.embed_top.eval()
    step = 0
    bar = tqdm(total=total, desc="training", unit="step")
    for rows in epochs:
        for batch in length_batches([lengths[i] for i in rows], cfg.batch_size, rng):
            b = [rows[j] for j in batch]
            h, mask, cats, tags = collate(cached, b)
            cat_logits, pii_logits = model.heads_from_shared(h, mask, cfg.category_grad_scale)
            loss = losses(cat_logits, pii_logits, cats, tags, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.trainable_parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            log.losses.append(loss.item())
            if step % 20 == 0:
                bar.set_postfix(loss=f"{np.mean(log.losses[-20:]):.3f}")
            bar.update(1)
    bar.close()
    model.eval()
    log.seconds = time.perf_counter() - t0
    return log


@torch.no_grad()
def predict_cached(model: DualHeadModel, cached: Cached, batch_size: int = 64):
    """Category logits (before temperature) and PII logits per example, from cached features."""
    model.eval()
    lengths = [h.shape[0] for h in cached.hidden]
    cat_out = np.zeros((len(lengths), model.category_head[-1].out_features), np.float32)
    pii_out: list[np.ndarray | None] = [None] * len(lengths)
    for b in length_batches(lengths, batch_size, random.Random(0), shuffle=False):
        h, mask, _, _ = collate(cached, b)
        c, p = model.heads_from_shared(h, mask)
        for j, i in enumerate(b):
            cat_out[i] = c[j].numpy()
            pii_out[i] = p[j, : lengths[i]].numpy()
    return cat_out, pii_out


def embed_cached(model: DualHeadModel, cached: Cached, indices: Sequence[int],
                 batch_size: int = 64) -> np.ndarray:
    """The embedding branch's output for the cached examples at ``indices``."""
    model.eval()
    idx = list(indices)
    lengths = [cached.hidden[i].shape[0] for i in idx]
    out: np.ndarray | None = None
    with torch.no_grad():
        for b in length_batches(lengths, batch_size, random.Random(0), shuffle=False):
            h, mask, _, _ = collate(cached, [idx[j] for j in b])
            e = model.embedding_from_shared(h.float(), mask).numpy()
            if out is None:
                out = np.zeros((len(idx), e.shape[1]), np.float32)
            out[b] = e
    return out if out is not None else np.zeros((0, 0), np.float32)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): the T minimising validation NLL."""
    lg = torch.tensor(logits, dtype=torch.float64)
    y = torch.tensor(labels)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(lg / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)
