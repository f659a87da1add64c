"""Triton Python-backend model: runs ``model.onnx`` (the dual-head model) with onnxruntime on CPU.

Copied next to ``model.onnx`` by the launcher; imports nothing from ``router_svc``.
"""

from __future__ import annotations

import json
import os

import numpy as np

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported outside Triton (unit tests of the pure helpers below)
    pb_utils = None

INPUT_IDS, ATTENTION_MASK = "input_ids", "attention_mask"
OUTPUTS = ("category_logits", "pii_logits", "embedding")
SEQ_OUTPUTS = frozenset({"pii_logits"})  # outputs with a sequence axis (axis 1)


class BadRequest(ValueError):
    """A request this model cannot run; the message goes back to that caller only."""


def check_inputs(ids: np.ndarray | None, mask: np.ndarray | None, max_len: int) -> None:
    if ids is None or mask is None:
        raise BadRequest(f"inputs {INPUT_IDS} and {ATTENTION_MASK} are both required")
    for name, a in ((INPUT_IDS, ids), (ATTENTION_MASK, mask)):
        if a.dtype != np.int64:
            raise BadRequest(f"{name} must be INT64, got {a.dtype}")
        if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
            raise BadRequest(f"{name} must be [batch, sequence] with both > 0, got {list(a.shape)}")
    if ids.shape != mask.shape:
        raise BadRequest(
            f"{INPUT_IDS} {list(ids.shape)} and {ATTENTION_MASK} "
            f"{list(mask.shape)} must have the same shape"
        )
    if max_len and ids.shape[1] > max_len:
        raise BadRequest(f"sequence length {ids.shape[1]} exceeds max_sequence_length {max_len}")
    if ids.min() < 0:
        raise BadRequest(f"{INPUT_IDS} must be non-negative")


def pad_batch(items: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``[(ids, mask), ...]`` (each ``[b_i, s_i]``) into one ``[sum b_i, max s_i]``."""
    rows = sum(ids.shape[0] for ids, _ in items)
    seq = max(ids.shape[1] for ids, _ in items)
    ids_out = np.zeros((rows, seq), dtype=np.int64)
    mask_out = np.zeros((rows, seq), dtype=np.int64)
    r = 0
    for ids, mask in items:
        b, s = ids.shape
        ids_out[r : r + b, :s] = ids
        mask_out[r : r + b, :s] = mask
        r += b
    return ids_out, mask_out


MAX_PAD_WASTE = 0.15


def length_groups(shapes: list[tuple[int, int]], max_waste: float = MAX_PAD_WASTE, *,
                  max_rows: int | None = None,
                  max_tokens: int | None = None) -> list[list[int]]:
    """Indices of requests (``[(rows, seq), ...]``) to run together: longest first, a request
    joins the current group while the group's padded tokens stay within ``1 + max_waste``
    times its real tokens (and, when given, within ``max_rows`` rows and ``max_tokens``
    padded tokens). The router's batcher groups its rows by this same function."""
    order = sorted(range(len(shapes)), key=lambda i: -shapes[i][1])
    groups: list[list[int]] = []
    rows = real = longest = 0
    for i in order:
        b, s = shapes[i]
        padded = (rows + b) * longest
        if (groups and padded <= (1 + max_waste) * (real + b * s)
                and (max_rows is None or rows + b <= max_rows)
                and (max_tokens is None or padded <= max_tokens)):
            groups[-1].append(i)
            rows, real = rows + b, real + b * s
        else:
            groups.append([i])
            rows, real, longest = b, b * s, s
    return groups


# Operators whose output depends on the value range of the whole input tensor.
BATCH_DEPENDENT_OPS = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul",
                                 "MatMulInteger", "DynamicQuantizeLSTM"})


def quantises_at_run_time(path: str) -> bool:
    """Whether the ONNX file at ``path`` uses one of those operators. A byte search for the
    operator names (ONNX stores each node's op_type as a plain string): the Triton stub's
    environment need not have the ``onnx`` package."""
    import mmap

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return any(data.find(op.encode()) >= 0 for op in BATCH_DEPENDENT_OPS)


def run_rows(run, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """``run(ids, mask)`` for each row alone, without its padding; outputs as one batch (a
    sequence output zero beyond each row's tokens). A row whose mask is not ones-then-zeros
    runs whole.

    For a model that quantises its activations at run time (``router-svc model build
    --quantize``: one int8 scale per tensor, from the whole batch), a prompt's numbers, and now
    and then its decision, would depend on what it was batched with and how far it was padded;
    alone, its answer depends on the prompt only. On a CPU that costs little, as batching
    gains little there."""
    b, s = ids.shape
    parts = []
    for r in range(b):
        n = int(mask[r].sum())
        if n < 1 or not mask[r, :n].all():
            n = s
        parts.append((n, run(ids[r : r + 1, :n], mask[r : r + 1, :n])))
    out = {}
    for name, first in parts[0][1].items():
        if name in SEQ_OUTPUTS:
            a = np.zeros((b, s, *first.shape[2:]), dtype=first.dtype)
            for r, (n, part) in enumerate(parts):
                a[r, :n] = part[name][0]
        else:
            a = np.concatenate([part[name] for _, part in parts], axis=0)
        out[name] = a
    return out


def split_outputs(outputs: dict[str, np.ndarray], shapes: list[tuple[int, int]]):
    """Inverse of :func:`pad_batch`: one ``{name: array}`` per request, sequence outputs trimmed."""
    parts, r = [], 0
    for b, s in shapes:
        part = {}
        for name, a in outputs.items():
            x = a[r : r + b]
            part[name] = np.ascontiguousarray(x[:, :s] if name in SEQ_OUTPUTS else x)
        parts.append(part)
        r += b
    return parts


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.max_len = int(params.get("max_sequence_length") or 0)
        threads = int(params.get("ort_intra_op_threads") or 0)
        self.out_dtypes = {
            o["name"]: pb_utils.triton_string_to_numpy(o["data_type"]) for o in config["output"]
        }
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        spinning = params.get("ort_allow_spinning", "1") != "0"
        if not spinning:  # idle workers sleep instead of spinning (cores shared with Triton)
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        by_row = params.get("ort_row_at_a_time", "auto")
        self.row_at_a_time = (by_row == "1" if by_row in ("0", "1")
                              else quantises_at_run_time(path))
        self.logger = pb_utils.Logger
        self.logger.log_info(f"semantic_router: loaded {path} (ort intra-op threads {threads}, "
                             f"spinning {spinning}, row at a time {self.row_at_a_time})")

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        if self.row_at_a_time:
            return run_rows(self._run_batch, ids, mask)
        return self._run_batch(ids, mask)

    def _run_batch(self, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        res = self.session.run(list(OUTPUTS), {INPUT_IDS: ids, ATTENTION_MASK: mask})
        return {
            n: a.astype(self.out_dtypes.get(n, a.dtype), copy=False)
            for n, a in zip(OUTPUTS, res, strict=True)
        }

    def _response(self, part: dict[str, np.ndarray]):
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(n, part[n]) for n in OUTPUTS]
        )

    @staticmethod
    def _error(message: str):
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))

    def execute(self, requests):
        """One response per request the dynamic batcher gathered.

        Sequence lengths may differ (the inputs are ``allow_ragged_batch``), so the valid
        requests run in length groups (``length_groups``: on a CPU a padded token costs as much
        as a real one), each padded into one batch and its outputs split back, ``pii_logits``
        trimmed to each request's length. A bad request gets an error response of its own; the
        others still get their results.
        """
        responses = [None] * len(requests)
        good: list[tuple[int, np.ndarray, np.ndarray]] = []
        for i, request in enumerate(requests):
            try:
                t_ids = pb_utils.get_input_tensor_by_name(request, INPUT_IDS)
                t_mask = pb_utils.get_input_tensor_by_name(request, ATTENTION_MASK)
                ids = None if t_ids is None else t_ids.as_numpy()
                mask = None if t_mask is None else t_mask.as_numpy()
                check_inputs(ids, mask, self.max_len)
                good.append((i, ids, mask))
            except BadRequest as e:
                responses[i] = self._error(str(e))
        # Rows run one at a time are cut to their own tokens anyway: no padding across requests.
        groups = ([[k] for k in range(len(good))] if self.row_at_a_time
                  else length_groups([a.shape for _, a, _ in good]))
        for group in groups:
            self._run_group([good[k] for k in group], responses)
        return responses

    def _run_group(self, good: list[tuple[int, np.ndarray, np.ndarray]], responses: list) -> None:
        try:
            ids, mask = pad_batch([(a, m) for _, a, m in good])
            parts = split_outputs(self._run(ids, mask), [a.shape for _, a, _ in good])
            for (i, _, _), part in zip(good, parts, strict=True):
                responses[i] = self._response(part)
        except Exception as e:  # onnxruntime error types vary; isolate the culprit below
            self.logger.log_warn(
                f"semantic_router: batch of {len(good)} failed ({e}); "
                "running its requests one by one"
            )
            for i, a, m in good:
                try:
                    responses[i] = self._response(self._run(a, m))
                except Exception as e1:
                    responses[i] = self._error(f"inference failed: {e1}")

    def finalize(self):
        self.session = None
