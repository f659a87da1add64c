"""The one async gRPC client to Triton: model contract from the config, inference, error mapping.

One ``TritonClient`` per process, shared by every caller (one gRPC channel). Every call has a
deadline (``client_timeout``). ``InferenceServerException`` is mapped to this module's exceptions
in one place (:func:`map_error`), so callers branch on types, never on gRPC status strings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from router_svc.labels import (
    ATTENTION_MASK,
    CATEGORY_LOGITS,
    EMBEDDING,
    INPUT_IDS,
    MODEL_NAME,
    PII_LOGITS,
)

T = TypeVar("T")
OUTPUTS = (CATEGORY_LOGITS, PII_LOGITS, EMBEDDING)
_NP_TYPES = {"INT64": np.int64, "INT32": np.int32}
REGENERATE = "regenerate config.pbtxt with router_svc.triton.repository.render_config"


class TritonError(Exception):
    """A failed Triton call that is not an outage (bad input, model error)."""

    def __init__(self, message: str, status: str | None = None):
        super().__init__(message)
        self.status = status


class TritonUnavailable(TritonError):
    """Triton cannot be reached, is not ready, or is overloaded: the outage policy applies."""


class TritonTimeout(TritonUnavailable):
    """The call's deadline (``timeout_s``) passed."""


class ModelContractError(Exception):
    """The served model's config does not carry the label contract the router needs."""


_UNAVAILABLE = {"StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED", "StatusCode.CANCELLED"}


def map_error(e: InferenceServerException, what: str) -> TritonError:
    """The one place where gRPC statuses become exception types."""
    status = e.status()
    msg = f"{what}: {e.message()}"
    if status == "StatusCode.DEADLINE_EXCEEDED":
        return TritonTimeout(msg, status)
    if status in _UNAVAILABLE:
        return TritonUnavailable(msg, status)
    return TritonError(msg, status)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    categories: tuple[str, ...]
    pii_tags: tuple[str, ...]
    max_sequence_length: int
    max_batch_size: int
    embedding_dim: int
    input_dtype: str = "INT64"  # INT32 for the TensorRT plan
    version: str = ""  # the version Triton serves (the newest ready one); "" unknown


@dataclass
class InferOutputs:
    category_logits: np.ndarray  # [batch, n_categories]
    pii_logits: np.ndarray  # [batch, sequence, n_tags]
    embedding: np.ndarray  # [batch, embedding_dim]
    version: str = ""  # the model version that computed them


@dataclass(frozen=True)
class ModelStats:
    inference_count: int  # rows inferred
    execution_count: int  # model executions (batches)
    success_count: int  # successful requests
    queue_ns: int
    compute_infer_ns: int


def _label_list(params: dict, key: str, model: str) -> tuple[str, ...]:
    raw = params.get(key, {}).get("string_value")
    if raw is None:
        raise ModelContractError(
            f"model {model!r}: config parameter {key!r} is missing; it must be a JSON list of "
            f"label names in logit order ({REGENERATE})"
        )
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ModelContractError(
            f"model {model!r}: config parameter {key!r} is not valid JSON ({e}); "
            f"it must be a JSON list of label names ({REGENERATE})"
        ) from e
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v for v in value)
        or len(set(value)) != len(value)
    ):
        raise ModelContractError(
            f"model {model!r}: config parameter {key!r} must be a non-empty JSON list of distinct "
            f"non-empty strings, got {raw[:80]!r} ({REGENERATE})"
        )
    return tuple(value)


def _positive_int(params: dict, key: str, model: str) -> int:
    raw = params.get(key, {}).get("string_value")
    if raw is None:
        raise ModelContractError(
            f"model {model!r}: config parameter {key!r} is missing; it must be a positive "
            f"integer as a string ({REGENERATE})"
        )
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ModelContractError(
            f"model {model!r}: config parameter {key!r} must be a positive integer, got {raw!r} "
            f"({REGENERATE})"
        )
    return value


def parse_model_config(config: dict) -> ModelInfo:
    """``ModelInfo`` from a model config as JSON (``get_model_config(as_json=True)["config"]``)."""
    name = config.get("name", "?")
    params = config.get("parameters", {})
    info = ModelInfo(
        name=name,
        categories=_label_list(params, "category_labels", name),
        pii_tags=_label_list(params, "pii_tags", name),
        max_sequence_length=_positive_int(params, "max_sequence_length", name),
        max_batch_size=int(config.get("max_batch_size", 0)),
        embedding_dim=_positive_int(params, "embedding_dim", name),
    )
    if info.max_batch_size <= 0:
        raise ModelContractError(f"model {name!r}: max_batch_size must be > 0 (batched model)")
    inputs = {i["name"]: i for i in config.get("input", [])}
    outputs = {o["name"]: o for o in config.get("output", [])}
    missing = [n for n in (INPUT_IDS, ATTENTION_MASK) if n not in inputs]
    missing += [n for n in OUTPUTS if n not in outputs]
    if missing:
        raise ModelContractError(f"model {name!r}: config lacks tensors {missing} ({REGENERATE})")
    dtype = inputs[INPUT_IDS].get("data_type", "TYPE_INT64").removeprefix("TYPE_")
    if dtype not in _NP_TYPES:
        raise ModelContractError(
            f"model {name!r}: input {INPUT_IDS} is {dtype}; want INT64 (or INT32 for TensorRT)"
        )
    expect = {
        CATEGORY_LOGITS: ("category_labels", len(info.categories)),
        PII_LOGITS: ("pii_tags", len(info.pii_tags)),
        EMBEDDING: ("embedding_dim", info.embedding_dim),
    }
    for out, (param, n) in expect.items():
        dims = [int(d) for d in outputs[out].get("dims", [])]
        if dims and dims[-1] not in (-1, n):
            raise ModelContractError(
                f"model {name!r}: output {out} has {dims[-1]} values per row but parameter "
                f"{param!r} says {n}: the labels do not belong to this model ({REGENERATE})"
            )
    return dataclasses.replace(info, input_dtype=dtype)


def version_key(v: str) -> tuple[int, str]:
    return (int(v), "") if v.isdigit() else (-1, v)


def newest_version(versions: Sequence[str]) -> str:
    """The newest of Triton's model versions (numeric directory names); "" when none."""
    return max(versions, key=version_key) if versions else ""


# gRPC's reconnect backoff grows with an outage (up to two minutes by default), so a router
# could stay failed long after Triton is back; capped at a second it reconnects within one.
# (Passing channel_args replaces tritonclient's defaults: its message-size limits are kept.)
CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class TritonClient:
    def __init__(self, url: str, model_name: str = MODEL_NAME, timeout_s: float = 5.0):
        self.url = url
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.info: ModelInfo | None = None
        self._client = InferenceServerClient(url, channel_args=CHANNEL_ARGS)

    async def _call(self, what: str, aw: Awaitable[T]) -> T:
        try:
            return await aw
        except InferenceServerException as e:
            raise map_error(e, what) from e

    async def load_model_info(self) -> ModelInfo:
        cfg = await self._call(
            f"model config of {self.model_name!r}",
            self._client.get_model_config(
                self.model_name, as_json=True, client_timeout=self.timeout_s
            ),
        )
        info = parse_model_config(cfg["config"])
        self.info = dataclasses.replace(info, version=newest_version(await self.versions()))
        return self.info

    async def versions(self) -> list[str]:
        """The versions of the model Triton serves now."""
        meta = await self._call(
            f"metadata of {self.model_name!r}",
            self._client.get_model_metadata(
                self.model_name, as_json=True, client_timeout=self.timeout_s
            ),
        )
        return list(meta.get("versions", []))

    async def ready(self) -> bool:
        # The model only: a strict server reports not ready while any model in its repository
        # is not, e.g. the version it just unloaded for a new one.
        try:
            return bool(await self._client.is_model_ready(self.model_name,
                                                          client_timeout=self.timeout_s))
        except InferenceServerException:
            return False

    async def infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> InferOutputs:
        """Infer a padded ``[batch, sequence]`` pair: one call (split above ``max_batch_size``)."""
        if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
            raise ValueError(
                f"input_ids {input_ids.shape} and attention_mask "
                f"{attention_mask.shape} must be equal [batch, sequence] shapes"
            )
        info = self.info
        step = info.max_batch_size if info else len(input_ids)
        if len(input_ids) <= step:
            return await self._infer(input_ids, attention_mask)
        parts = [
            await self._infer(input_ids[i : i + step], attention_mask[i : i + step])
            for i in range(0, len(input_ids), step)
        ]
        return InferOutputs(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("category_logits", "pii_logits", "embedding")
            ),
            version=max((p.version for p in parts), key=version_key),
        )

    async def _infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> InferOutputs:
        dtype = self.info.input_dtype if self.info else "INT64"
        inputs = []
        for name, a in ((INPUT_IDS, input_ids), (ATTENTION_MASK, attention_mask)):
            t = InferInput(name, list(a.shape), dtype)
            t.set_data_from_numpy(np.ascontiguousarray(a, dtype=_NP_TYPES[dtype]))
            inputs.append(t)
        res = await self._call(
            f"infer on {self.model_name!r}",
            self._client.infer(
                self.model_name,
                inputs,
                outputs=[InferRequestedOutput(n) for n in OUTPUTS],
                client_timeout=self.timeout_s,
            ),
        )
        version = res.get_response().model_version
        return InferOutputs(*(res.as_numpy(n) for n in OUTPUTS), version=version)

    async def model_statistics(self) -> ModelStats:
        js = await self._call(
            f"statistics of {self.model_name!r}",
            self._client.get_inference_statistics(
                self.model_name, as_json=True, client_timeout=self.timeout_s
            ),
        )
        stats = js.get("model_stats", [])
        total = {
            "inference_count": 0,
            "execution_count": 0,
            "success_count": 0,
            "queue_ns": 0,
            "compute_infer_ns": 0,
        }
        for s in stats:  # one entry per version; proto int64s arrive as strings
            inf = s.get("inference_stats", {})
            total["inference_count"] += int(s.get("inference_count", 0))
            total["execution_count"] += int(s.get("execution_count", 0))
            total["success_count"] += int(inf.get("success", {}).get("count", 0))
            total["queue_ns"] += int(inf.get("queue", {}).get("ns", 0))
            total["compute_infer_ns"] += int(inf.get("compute_infer", {}).get("ns", 0))
        return ModelStats(**total)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.close()

    async def __aenter__(self) -> TritonClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
