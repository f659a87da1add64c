"""Text in, classification out: tokenise, run the batched model once, decode its outputs."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from router_svc.classify.batcher import Batcher, JobTrace, RowOutput
from router_svc.classify.exemplars import Exemplars
from router_svc.classify.pii import PiiEntity, decode_bio, merge_windows, softmax
from router_svc.classify.recognisers import guarded, recognise
from router_svc.classify.tokenization import TextTokenizer, Window
from router_svc.tracing.spans import span


@dataclass(frozen=True)
class Classification:
    category: str
    confidence: float
    embedding: np.ndarray
    pii: list[list[PiiEntity]] = field(default_factory=list)  # per input segment
    # (category, confidence) per context text (``Classifier.classify``), in order
    context: list[tuple[str, float]] = field(default_factory=list)

    @property
    def pii_types(self) -> set[str]:
        return {e.type for seg in self.pii for e in seg}

    @property
    def entity_count(self) -> int:
        return sum(len(s) for s in self.pii)


@dataclass(frozen=True)
class RowPlan:
    rows: list[Window]
    category_rows: list[int]  # the windows of the text that decides the category
    segment_rows: list[list[int]]  # per segment, the row index of each of its windows
    tokens: int = 0  # the texts' tokens, windows' overlap and special tokens not counted
    context_rows: list[list[int]] = field(default_factory=list)  # per context text
    # Segments read before (``ScanMemory``): no rows; their results as remembered. A context
    # text that is such a segment has no rows either and its category in ``context_known``.
    known: dict[int, Scanned] = field(default_factory=dict)
    context_known: dict[int, tuple[int, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Scanned:
    """What reading one text gave: its entities (model and rules) as (type, start, end,
    score), not their text, its category (index, confidence) and its tokens."""

    spans: tuple[tuple[str, int, int, float], ...]
    category: tuple[int, float]
    tokens: int

    def entities(self, text: str) -> list[PiiEntity]:
        return [PiiEntity(t, a, b, text[a:b], sc) for t, a, b, sc in self.spans]


class ScanMemory:
    """Texts read before, by hash: a conversation's earlier turns are not read again.

    Every chat request carries its whole history, and each old turn must be checked for PII
    like the new one; the model's results for a text depend on the text alone (and the model
    version: the runtime clears this when Triton serves another one), so the turns read for an
    earlier request of the conversation cost nothing. Keys are digests, values offsets and
    types, and the text itself is only matched, never kept. LRU, ``entries`` at most.
    """

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._items: OrderedDict[bytes, Scanned] = OrderedDict()

    @staticmethod
    def key(text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def get(self, text: str) -> Scanned | None:
        k = self.key(text)
        hit = self._items.get(k)
        if hit is not None:
            self._items.move_to_end(k)
        return hit

    def put(self, text: str, scanned: Scanned) -> None:
        if self.entries <= 0:
            return
        k = self.key(text)
        self._items[k] = scanned
        self._items.move_to_end(k)
        while len(self._items) > self.entries:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


def plan_rows(category_windows: list[Window], segment_windows: list[list[Window]],
              category_segment: int | None) -> RowPlan:
    """Lay out the model rows for one request: one job for the batcher.

    The rows are every window of every text segment (for PII) and every window of the text
    that decides the category and keys the cache (the last user turn), which are the same
    rows when that turn is one segment.
    """
    rows: list[Window] = []
    segment_rows: list[list[int]] = []
    for wins in segment_windows:
        segment_rows.append(list(range(len(rows), len(rows) + len(wins))))
        rows += wins
    if category_segment is not None:
        category_rows = segment_rows[category_segment]
    else:
        category_rows = list(range(len(rows), len(rows) + len(category_windows)))
        rows += category_windows
    return RowPlan(rows, category_rows, segment_rows)


def _text_tokens(windows: list[Window], window: int, stride: int) -> int:
    """A text's own tokens from its windows: the first window, then what each next adds."""
    if not windows:
        return 0
    body = [len(w.ids) - 2 for w in windows]
    return body[0] + sum(min(b, min(stride, window - 2)) for b in body[1:])


_PARAGRAPH = re.compile(r"\n(?:[ \t\r\f\v]*\n)+")


def split_paragraphs(text: str) -> list[str]:
    """The text's blank-line separated paragraphs (the whole text when it has one). Each is
    read in windows of its own: a window that mixes a generic instruction with the question
    after it reads as neither, while the question alone reads as what it is."""
    parts = [p for p in _PARAGRAPH.split(text) if p.strip()]
    return parts if len(parts) > 1 else [text]


def pool_category(outputs: list[RowOutput],
                  exemplars: Exemplars | None = None) -> tuple[int, float, np.ndarray]:
    """The category of a text read in windows, and its cache embedding.

    The category is the most confident window's (windows do not cross paragraphs): a question
    after a long generic preamble is decided by the question, not averaged away by it; with
    ``exemplars``, that window's probabilities are refined by its nearest exemplars' vote.
    The embedding is the mean of the windows' (normalised), so the cache key covers the whole
    text.
    """
    probs = [softmax(o.category_logits.astype(np.float64), axis=-1) for o in outputs]
    best_window = max(range(len(probs)), key=lambda k: float(probs[k].max()))
    if exemplars is not None:
        probs[best_window] = exemplars.refine(probs[best_window],
                                              outputs[best_window].embedding)
    best = int(np.argmax(probs[best_window]))
    if len(outputs) == 1:
        embedding = np.asarray(outputs[0].embedding, dtype=np.float32)
    else:
        mean = np.mean([np.asarray(o.embedding, dtype=np.float32) for o in outputs], axis=0)
        embedding = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
    return best, float(probs[best_window][best]), embedding


class TooMuchText(Exception):
    """A request whose texts hold more tokens than the caller allows the check to read."""

    def __init__(self, tokens: int, limit: int) -> None:
        super().__init__(f"{tokens} tokens, limit {limit}")
        self.tokens, self.limit = tokens, limit


# Texts longer than this in all (characters) are tokenised and decoded in a worker thread, so
# the event loop keeps answering health checks and small requests meanwhile.
OFF_LOOP_CHARS = 16_384


class Classifier:
    def __init__(self, tokenizer: TextTokenizer, batcher: Batcher, categories: list[str],
                 pii_tags: list[str], *, pii_threshold: float = 0.5, window: int = 256,
                 stride: int = 192, recognisers: bool = True, memory_entries: int = 10_000,
                 pii_type_thresholds: Mapping[str, float] | None = None,
                 exemplars: Exemplars | None = None):
        self.tokenizer = tokenizer
        self.batcher = batcher
        self.categories = categories
        self.pii_tags = pii_tags
        self.pii_threshold = pii_threshold
        # Per-type thresholds (``classifier.pii_model.type_thresholds``); others: pii_threshold.
        self.pii_type_thresholds = dict(pii_type_thresholds or {})
        self.window = window
        self.stride = stride
        # Rule recognisers beside the model (``recognisers``: checked card numbers, IBANs, ...),
        # run on the same text the model reads, so offsets map back the same way.
        self.recognisers = recognisers
        self.memory = ScanMemory(memory_entries)
        # The category head's second opinion (``classify.exemplars``); None: the head alone.
        self.exemplars = exemplars

    def plan(self, category_text: str, segments: list[str],
             context_texts: Sequence[str] = ()) -> RowPlan:
        paragraphs = split_paragraphs(category_text)
        cat_seg = None if len(paragraphs) > 1 else next(
            (i for i, s in enumerate(segments) if s == category_text), None)
        # Context texts (earlier turns) are read as the category text is; one that is a
        # segment already (the usual case: every turn is scanned for PII) adds no rows.
        seg_index = {s: i for i, s in reversed(list(enumerate(segments)))}
        ctx = [(None, paras) if len(paras := split_paragraphs(t)) > 1
               else (seg_index.get(t), paras) for t in context_texts]
        extra = [p for i, paras in ctx if i is None for p in paras]
        # The category segment is always read (its rows give the category and the cache key).
        known = {i: m for i, t in enumerate(segments)
                 if i != cat_seg and (m := self.memory.get(t)) is not None}
        fresh = [t for i, t in enumerate(segments) if i not in known]
        read = self.tokenizer.windows_batch([*paragraphs, *fresh, *extra], self.window,
                                            self.stride)
        n_cat, n_seg = len(paragraphs), len(segments)
        fresh_wins = iter(read[n_cat:n_cat + len(fresh)])
        wins = [*read[:n_cat], *([] if i in known else next(fresh_wins)
                                 for i in range(n_seg)), *read[n_cat + len(fresh):]]
        cat_wins = [w for ws in wins[:n_cat] for w in ws]
        plan = plan_rows(cat_wins, wins[n_cat:n_cat + n_seg], cat_seg)
        texts = wins[n_cat:n_cat + n_seg] if cat_seg is not None else wins[:n_cat + n_seg]
        tokens = sum(_text_tokens(w, self.window, self.stride) for w in texts)
        tokens += sum(m.tokens for m in known.values())  # the limit is on what a request holds
        # Context rows are not counted against max_tokens: they re-read (at most) the user
        # turns the segments hold, so they at most double that part of the work.
        rows, context_rows, context_known = list(plan.rows), [], {}
        extra_wins = iter(wins[n_cat + n_seg:])
        for j, (i, paras) in enumerate(ctx):
            if i is not None:
                context_rows.append(plan.segment_rows[i])
                if i in known:
                    context_known[j] = known[i].category
                continue
            mine = [w for _ in paras for w in next(extra_wins)]
            context_rows.append(list(range(len(rows), len(rows) + len(mine))))
            rows += mine
        return dataclasses.replace(plan, rows=rows, tokens=tokens, context_rows=context_rows,
                                   known=known, context_known=context_known)

    async def classify(self, category_text: str, segments: list[str],
                       max_tokens: int | None = None,
                       context_texts: Sequence[str] = (),
                       call_timeout_s: float | None = None) -> Classification:
        """``max_tokens``: the most tokens the texts may hold (``TooMuchText`` beyond it,
        before any inference). ``context_texts``: more texts to categorise in the same model
        call (``Classification.context``), e.g. a conversation's earlier turns.
        ``call_timeout_s``: the time one Triton call may take; the inference is bounded by it
        times the calls the request needs plus one (for the queue in front), so a long prompt
        gets the time its size needs and a stalled model still fails in a bounded time
        (``TimeoutError``; rows not sent one call's time before the end are dropped,
        ``batcher.DeadlineExceeded``). None: no bound (offline evaluation)."""
        large = len(category_text) + sum(map(len, segments)) > OFF_LOOP_CHARS
        with span("tokenize") as s:
            if large:
                plan = await asyncio.to_thread(self.plan, category_text, segments,
                                               context_texts)
            else:
                plan = self.plan(category_text, segments, context_texts)
            if s is not None:
                s.set_attributes({"router.texts": len(segments) + len(context_texts),
                                  "router.tokens": plan.tokens,
                                  "router.rows": len(plan.rows),
                                  "router.off_loop": large})
        if max_tokens is not None and plan.tokens > max_tokens:
            raise TooMuchText(plan.tokens, max_tokens)
        if call_timeout_s is None:
            outputs = await self._infer(plan, None)
        else:
            calls = self.batcher.calls_for([w.ids for w in plan.rows])
            # The last call must be sent one call's time before the end; it may then run.
            send_by = time.monotonic() + call_timeout_s * calls
            outputs = await asyncio.wait_for(self._infer(plan, send_by),
                                             timeout=call_timeout_s * (calls + 1))
        if large:
            return await asyncio.to_thread(self.decode, plan, outputs, segments)
        return self.decode(plan, outputs, segments)

    async def _infer(self, plan: RowPlan, deadline: float | None) -> list[RowOutput]:
        """The plan's rows through the batcher (and Triton), as one span when traced: its
        rows, the rows of the Triton call that carried them (other requests' included), the
        time they queued in the batcher and the calls' time."""
        rows = [w.ids for w in plan.rows]
        with span("triton", {"router.triton.rows": len(rows)}) as s:
            if s is None:
                return await self.batcher.submit(rows, deadline=deadline)
            job = JobTrace()
            try:
                return await self.batcher.submit(rows, deadline=deadline, trace=job)
            finally:
                s.set_attributes({"router.triton.batch_size": job.batch_rows,
                                  "router.triton.calls": job.calls,
                                  "router.triton.infer_ms": round(job.infer_s * 1000, 3)})
                if job.queue_s is not None:  # (None: none of its rows was sent)
                    s.set_attribute("router.triton.queue_ms", round(job.queue_s * 1000, 3))

    def decode(self, plan: RowPlan, outputs: list[RowOutput],
               segments: list[str]) -> Classification:
        pooled: dict[tuple[int, ...], tuple[int, float, np.ndarray]] = {}

        def pool(rows: list[int]) -> tuple[int, float, np.ndarray]:
            # The category text is often one of the segments: pool (and vote) once.
            key = tuple(rows)
            if key not in pooled:
                pooled[key] = pool_category([outputs[r] for r in rows], self.exemplars)
            return pooled[key]

        best, confidence, embedding = pool(plan.category_rows)
        pii: list[list[PiiEntity]] = []
        for i, (text, rows) in enumerate(zip(segments, plan.segment_rows, strict=True)):
            if (seen := plan.known.get(i)) is not None:
                pii.append(seen.entities(text))
                continue
            per_window = [
                decode_bio(softmax(outputs[r].pii_logits, axis=-1), plan.rows[r].offsets,
                           self.pii_tags, text, self.pii_threshold, self.pii_type_thresholds)
                for r in rows
            ]
            entities = merge_windows(per_window)
            pii.append(guarded(entities, recognise(text) if self.recognisers else None, text))
            if rows:
                k, conf, _ = pool(rows)
                spans = tuple((e.type, e.start, e.end, e.score) for e in pii[-1])
                self.memory.put(text, Scanned(spans, (k, conf), _text_tokens(
                    [plan.rows[r] for r in rows], self.window, self.stride)))
        context = []
        for j, rows in enumerate(plan.context_rows):
            k, conf = plan.context_known.get(j) or pool(rows)[:2]
            context.append((self.categories[k], conf))
        return Classification(category=self.categories[best], confidence=confidence,
                              embedding=embedding, pii=pii, context=context)
