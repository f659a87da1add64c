"""Stand-ins for the model, for unit tests of the decision path without Triton."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from router_svc.classify.classifier import Classification, TooMuchText
from router_svc.classify.pii import PiiEntity

CARD = re.compile(r"\b\d{4}(?:[\s-]\d{4}){3}\b")
EMAIL = re.compile(r"[\w.]+@[\w.]+\.\w+")
# keyword -> (category, confidence); the first found in the category text wins
TOPICS = {"derivative": ("math", 0.9), "contract": ("law", 0.85), "hello": ("other", 0.3)}
DIM = 8


def embedding_of(text: str) -> np.ndarray:
    """A unit vector that is the same for the same text and unrelated for others."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


class FakeClassifier:
    """Scripted signals in place of the model: a category from keywords, PII from regular
    expressions (card numbers, e-mail addresses), an embedding from the text's hash.
    ``fail`` makes every call raise it, as a Triton outage would."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.fail = fail
        self.calls: list[tuple[str, list[str]]] = []
        self.context_calls: list[list[str]] = []  # context texts per call that had any

    async def classify(self, category_text: str, segments: list[str],
                       max_tokens: int | None = None,
                       context_texts: Sequence[str] = (),
                       call_timeout_s: float | None = None) -> Classification:
        self.calls.append((category_text, list(segments)))
        if context_texts:
            self.context_calls.append(list(context_texts))
        if self.fail is not None:
            raise self.fail
        words = sum(len(s.split()) for s in segments)  # a word a token, for the limit
        if max_tokens is not None and words > max_tokens:
            raise TooMuchText(words, max_tokens)
        category, confidence = topic_of(category_text)
        pii = [[PiiEntity(kind, m.start(), m.end(), m.group(), 0.99)
                for kind, rx in (("CREDIT_CARD", CARD), ("EMAIL_ADDRESS", EMAIL))
                for m in rx.finditer(s)] for s in segments]
        return Classification(category, confidence, embedding_of(category_text), pii,
                              context=[topic_of(t) for t in context_texts])


def topic_of(text: str) -> tuple[str, float]:
    return next((v for k, v in TOPICS.items() if k in text.lower()), ("other", 0.1))
