"""Category exemplars: a second opinion on the category from the embedding the same forward
pass gives.

The category head was trained mostly on exam questions, and users type short ones; it is often
right but unsure (below the category threshold), so the default model answers whatever they
asked. The model build ships the embeddings of its training questions with their categories,
and of chit-chat and generic conversation turns ("explain that again") labelled as no topic
(a uniform distribution). The k nearest exemplars of a text vote (softmax of their cosine
similarities over ``tau``), and the vote is combined with the head's probabilities as a
product of experts: ``p ∝ p_head * vote ** weight``. Where both agree the category becomes more
certain; where the neighbours are chit-chat or disagree it does not (the reference router
pairs its classifier with embedding similarity the same way).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILE_NAME = "category_exemplars.npz"
# The vote's floor: no category is ruled out by the neighbours alone.
FLOOR = 1e-3


class ExemplarsError(Exception):
    """An exemplar file that cannot be read or does not fit the served model."""


@dataclass(frozen=True)
class Exemplars:
    vectors: np.ndarray  # [N, D] float32, unit rows
    labels: np.ndarray  # [N, C] float32, each row a distribution (uniform: no topic)
    categories: tuple[str, ...]
    k: int = 10
    tau: float = 0.05
    weight: float = 0.75

    def vote(self, embedding: np.ndarray) -> np.ndarray:
        """The k nearest exemplars' label distributions, weighted by similarity: [C]."""
        q = np.asarray(embedding, np.float32)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        sims = self.vectors @ q
        k = min(self.k, len(sims))
        near = np.argpartition(-sims, k - 1)[:k]
        w = np.exp((sims[near] - sims[near].max()) / self.tau)
        return (w / w.sum()) @ self.labels[near]

    def refine(self, probs: np.ndarray, embedding: np.ndarray) -> np.ndarray:
        return combine(probs, self.vote(embedding), self.weight)

    def save(self, path: Path) -> None:
        """Written whole or not at all (a temporary file, then renamed): a router starting
        meanwhile never reads half a file."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.savez_compressed(f, vectors=self.vectors.astype(np.float16),
                                labels=self.labels.astype(np.float16),
                                categories=np.array(self.categories),
                                params=np.array([self.k, self.tau, self.weight], np.float64))
        os.replace(tmp, path)


def combine(head: np.ndarray, vote: np.ndarray, weight: float) -> np.ndarray:
    """Product of experts: ``head * (vote + FLOOR) ** weight``, normalised."""
    logp = np.log(np.maximum(head, 1e-12)) + weight * np.log(vote + FLOOR)
    p = np.exp(logp - logp.max())
    return p / p.sum()


def exemplar_file(setting: str, model_dir: Path) -> Path | None:
    """The file ``classifier.category_model.exemplars`` names: "off" none, "auto" the one the
    model build wrote next to the tokenizer (``model_dir``) if any, else the path given."""
    if setting == "off":
        return None
    if setting == "auto":
        found = model_dir / FILE_NAME
        return found if found.is_file() else None
    path = Path(setting)
    if not path.is_file():
        raise ExemplarsError(f"{path} is not a file; give the {FILE_NAME} written by the model "
                             "build, \"auto\" or \"off\"")
    return path


def load_exemplars(path: Path, categories: list[str] | tuple[str, ...],
                   embedding_dim: int) -> Exemplars:
    """The exemplars at ``path``, checked against the served model's categories and
    embedding size (``ExemplarsError`` naming the file and the fix)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            vectors = f["vectors"].astype(np.float32)
            labels = f["labels"].astype(np.float32)
            cats = tuple(str(c) for c in f["categories"])
            k, tau, weight = (float(x) for x in f["params"])
    except (OSError, KeyError, ValueError) as e:
        raise ExemplarsError(f"{path}: not a category exemplar file ({e})") from e
    if cats != tuple(categories):
        raise ExemplarsError(f"{path}: its categories {list(cats)} are not the served "
                             f"model's {list(categories)}; rebuild it for this model "
                             "(router-svc model exemplars --model-dir DIR)")
    if vectors.ndim != 2 or labels.shape != (len(vectors), len(cats)) or not len(vectors):
        raise ExemplarsError(f"{path}: vectors {vectors.shape} and labels {labels.shape} "
                             "do not match")
    if vectors.shape[1] != embedding_dim:
        raise ExemplarsError(f"{path}: {vectors.shape[1]}-dimensional exemplars, the served "
                             f"model's embedding has {embedding_dim}; rebuild it for this model "
                             "(router-svc model exemplars --model-dir DIR)")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return Exemplars(vectors / np.maximum(norms, 1e-12), labels, cats, k=max(1, int(k)),
                     tau=tau, weight=weight)
