"""In-process onnxruntime: the baseline the Triton figures are compared with.

Sessions are made exactly as the Triton Python-backend model makes them
(``router_svc/triton/python_model.py``): ``intra_op_num_threads`` as given (0 = onnxruntime
decides), ``inter_op_num_threads = 1``, default graph optimisation, all three outputs fetched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from _common import latency_ms

from router_svc.labels import ATTENTION_MASK, CATEGORY_LOGITS, EMBEDDING, INPUT_IDS, PII_LOGITS

OUTPUTS = [CATEGORY_LOGITS, PII_LOGITS, EMBEDDING]


def session(path: Path, threads: int = 0, provider: str = "cpu"):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if provider == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise SystemExit("error: --ort-provider cuda needs onnxruntime-gpu "
                             f"(available: {ort.get_available_providers()})")
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), so, providers=providers)


def infer(sess, ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    return sess.run(OUTPUTS, {INPUT_IDS: ids, ATTENTION_MASK: mask})


@dataclass
class Measurement:
    rows: int = 0  # sequences processed in the measured window
    calls: int = 0
    seconds: float = 0.0
    latencies_s: list[float] = field(default_factory=list)  # per call

    @property
    def seqs_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> dict[str, float]:
        return {"seqs_per_s": self.seqs_per_s, "calls_per_s": self.calls_per_s,
                "calls": self.calls, **latency_ms(self.latencies_s)}


def run_closed(sess, batches: Sequence[tuple[np.ndarray, np.ndarray]], duration_s: float,
               warmup_s: float = 0.5,
               tick: Callable[[float], None] | None = None) -> Measurement:
    """Call the session back to back over ``batches`` (cycling) for ``duration_s`` after
    ``warmup_s``; one call at a time, as a single in-process caller would."""
    m = Measurement()
    t_start = time.perf_counter()
    t_measure = t_start + warmup_s
    t_end = t_measure + duration_s
    first = last = None
    i = 0
    last_tick = t_start
    while True:
        ids, mask = batches[i % len(batches)]
        i += 1
        t0 = time.perf_counter()
        if t0 >= t_end:
            break
        infer(sess, ids, mask)
        t1 = time.perf_counter()
        if t0 >= t_measure:  # calls that start in the window count, whole
            first = t0 if first is None else first
            last = t1
            m.rows += len(ids)
            m.calls += 1
            m.latencies_s.append(t1 - t0)
        if tick is not None and t1 - last_tick >= 0.25:
            tick(t1 - last_tick)
            last_tick = t1
    m.seconds = (last - first) if first is not None else 0.0
    if tick is not None:
        tick(time.perf_counter() - last_tick)
    return m
