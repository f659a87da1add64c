"""Text in, classification out: tokenise, run the batched model once, decode its outputs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from router_svc.classify.batcher import Batcher, RowOutput
from router_svc.classify.pii import PiiEntity, decode_bio, merge_windows, softmax
from router_svc.classify.tokenization import TextTokenizer, Window


@dataclass(frozen=True)
class Classification:
    category: str
    confidence: float
    embedding: np.ndarray
    pii: list[list[PiiEntity]] = field(default_factory=list)  # per input segment

    @property
    def pii_types(self) -> set[str]:
        return {e.type for seg in self.pii for e in seg}

    @property
    def entity_count(self) -> int:
        return sum(len(s) for s in self.pii)


@dataclass(frozen=True)
class RowPlan:
    rows: list[Window]
    category_row: int
    segment_rows: list[list[int]]  # per segment, the row index of each of its windows


def plan_rows(category_windows: list[Window], segment_windows: list[list[Window]],
              category_segment: int | None) -> RowPlan:
    """Lay out the model rows for one request: one job for the batcher.

    The rows are every window of every text segment (for PII) plus the row that decides the
    category and the cache embedding (the last user turn, first window). When that turn fits
    in one window, its segment row serves both purposes.
    """
    rows: list[Window] = []
    segment_rows: list[list[int]] = []
    category_row = -1
    for i, wins in enumerate(segment_windows):
        idx = list(range(len(rows), len(rows) + len(wins)))
        rows += wins
        segment_rows.append(idx)
        if i == category_segment and len(wins) == 1:
            category_row = idx[0]
    if category_row < 0:
        category_row = len(rows)
        rows.append(category_windows[0])
    return RowPlan(rows, category_row, segment_rows)


class Classifier:
    def __init__(self, tokenizer: TextTokenizer, batcher: Batcher, categories: list[str],
                 pii_tags: list[str], *, pii_threshold: float = 0.5, window: int = 256,
                 stride: int = 192):
        self.tokenizer = tokenizer
        self.batcher = batcher
        self.categories = categories
        self.pii_tags = pii_tags
        self.pii_threshold = pii_threshold
        self.window = window
        self.stride = stride

    def plan(self, category_text: str, segments: list[str]) -> RowPlan:
        cat_seg = next((i for i, s in enumerate(segments) if s == category_text), None)
        wins = self.tokenizer.windows_batch([category_text, *segments], self.window, self.stride)
        return plan_rows(wins[0], wins[1:], cat_seg)

    async def classify(self, category_text: str, segments: list[str]) -> Classification:
        plan = self.plan(category_text, segments)
        outputs = await self.batcher.submit([w.ids for w in plan.rows])
        return self.decode(plan, outputs, segments)

    def decode(self, plan: RowPlan, outputs: list[RowOutput],
               segments: list[str]) -> Classification:
        cat_out = outputs[plan.category_row]
        probs = softmax(cat_out.category_logits.astype(np.float64), axis=-1)
        best = int(np.argmax(probs))
        pii: list[list[PiiEntity]] = []
        for text, rows in zip(segments, plan.segment_rows, strict=True):
            per_window = [
                decode_bio(softmax(outputs[r].pii_logits, axis=-1), plan.rows[r].offsets,
                           self.pii_tags, text, self.pii_threshold)
                for r in rows
            ]
            pii.append(merge_windows(per_window))
        return Classification(
            category=self.categories[best],
            confidence=float(probs[best]),
            embedding=np.asarray(cat_out.embedding, dtype=np.float32),
            pii=pii,
        )
