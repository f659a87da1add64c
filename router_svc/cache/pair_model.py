"""The hit verifier's model: a cross-encoder that reads a candidate hit's two texts together.

The text rules of ``router_svc.cache.verify`` catch what a rule can name (numbers, negation,
arguments traded around "to"); a cross-encoder (``export/pair_verifier.py``: all-MiniLM-L6-v2
fine-tuned on paraphrase pairs and their meaning-changed copies) judges the rest: whether an
answer to one text answers the other. It runs on the candidate pair only, after the rules,
so a miss pays nothing and a repeat of the very same text skips it.

It runs in the router process on onnxruntime (one intra-op thread) in a worker thread of its
own, never on the event loop. Fail closed: a model error, a verdict later than
``cache.verifier.timeout_s`` or more pairs waiting than ``MAX_PENDING`` make the candidate a
miss (the backend answers), never a hit.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from router_svc.cache.verify import normalise_whitespace

log = logging.getLogger("router_svc.cache")

MAX_LENGTH = 128  # tokens of both texts together, as trained
MAX_PENDING = 16  # pairs queued for the worker; more: refused as busy
MEMO_ENTRIES = 4096  # verdicts remembered by a digest of the two texts (never the texts)


def probability(logit: float) -> float:
    return 1.0 / (1.0 + math.exp(-logit)) if logit > -50 else 0.0


def pair_tokenizer(path: Path):
    """The tokenizer as the model was trained with it: both texts, at most ``MAX_LENGTH``
    tokens together (the longer one cut first), no padding."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(MAX_LENGTH, strategy="longest_first")
    tok.no_padding()
    return tok


class PairModel:
    """The ONNX cross-encoder and its tokenizer; ``logit(a, b)`` is synchronous."""

    def __init__(self, onnx_path: Path, tokenizer_path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_path), opts,
                                            providers=["CPUExecutionProvider"])
        names = {i.name for i in self.session.get_inputs()}
        want = {"input_ids", "attention_mask", "token_type_ids"}
        if names != want:
            raise ValueError(f"{onnx_path}: inputs {sorted(names)}, expected {sorted(want)} "
                             "(a model written by export/pair_verifier.py)")
        self.tokenizer = pair_tokenizer(tokenizer_path)

    def logit(self, a: str, b: str) -> float:
        """The model's logit for (the request's text, the stored text): one row. It was trained
        on both orders alike; averaging both would double the cost of a hit."""
        e = self.tokenizer.encode(a, b)
        ids = np.array([e.ids], np.int64)
        out = self.session.run(None, {"input_ids": ids,
                                      "attention_mask": np.array([e.attention_mask], np.int64),
                                      "token_type_ids": np.array([e.type_ids], np.int64)})[0]
        return float(out.reshape(-1)[0])


@dataclass(frozen=True)
class Verdict:
    outcome: str  # one of router_svc.core.metrics.VERIFIER_OUTCOMES
    probability: float | None = None

    @property
    def serve(self) -> bool:
        return self.outcome in ("served", "same_text")


class ModelVerifier:
    """The async shell: one worker thread, a bounded queue, a deadline and a memo."""

    def __init__(self, model: PairModel, min_probability: float, timeout_s: float,
                 max_pending: int = MAX_PENDING, memo_entries: int = MEMO_ENTRIES) -> None:
        self.model = model
        self.min_probability = min_probability
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self._pending = 0
        self._memo: OrderedDict[bytes, float] = OrderedDict()
        self._memo_entries = memo_entries
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pair-verifier")

    def _done(self) -> None:
        self._pending -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _key(a: str, b: str) -> bytes:
        h = hashlib.blake2b(digest_size=16)
        h.update(a.encode())
        h.update(b"\0")
        h.update(b.encode())
        return h.digest()

    def _verdict(self, logit: float) -> Verdict:
        p = probability(logit)
        return Verdict("served" if p >= self.min_probability else "refused", p)

    async def check(self, text: str, stored: str) -> Verdict:
        if normalise_whitespace(text) == normalise_whitespace(stored):
            return Verdict("same_text", 1.0)
        key = self._key(text, stored)
        if (logit := self._memo.get(key)) is not None:
            self._memo.move_to_end(key)
            return self._verdict(logit)
        if self._pending >= self.max_pending:
            return Verdict("busy")
        # Counted until the worker is done with it, also after a deadline gave up waiting.
        loop = asyncio.get_running_loop()
        self._pending += 1
        job = self._pool.submit(self.model.logit, text, stored)
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._done))
        try:
            logit = await asyncio.wait_for(asyncio.wrap_future(job), self.timeout_s)
        except TimeoutError:
            return Verdict("busy")
        except Exception:
            log.exception("cache: the hit verifier model failed; the candidate is a miss")
            return Verdict("error")
        self._memo[key] = logit
        if len(self._memo) > self._memo_entries:
            self._memo.popitem(last=False)
        return self._verdict(logit)
