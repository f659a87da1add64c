"""Triton model configs rendered from the label contract, and the CPU model repository.

The committed ``model_repository/*/config.pbtxt`` files are outputs of :func:`render_config`
(a test asserts it); regenerate them with ``python -m router_svc.triton.repository``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from router_svc.labels import (
    ATTENTION_MASK,
    CATEGORIES,
    CATEGORY_LOGITS,
    EMBEDDING,
    INPUT_IDS,
    MODEL_NAME,
    PII_LOGITS,
    PII_TAGS,
)

# Which Triton backend runs the model.
TritonBackend = Literal["onnxruntime", "python", "tensorrt"]

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMITTED = {
    "onnxruntime": "model_repository/semantic_router/config.pbtxt",
    "tensorrt": "model_repository/semantic_router_trt/config.pbtxt",
}
PYTHON_MODEL = Path(__file__).resolve().parent / "python_model.py"

DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_EMBEDDING_DIM = 384  # all-MiniLM-L6-v2
DEFAULT_MAX_SEQUENCE_LENGTH = 512
DEFAULT_PREFERRED = (8, 16, 32, 64)
# GPU: a short wait lets the dynamic batcher fill batches the GPU runs for nearly the cost of
# one (untuned: perf/triton_model.py --queue-delay-us is the grid). CPU: a larger batch saves
# little, so any wait only adds latency; batches still form from what queues while the one
# instance is busy (the grid's figures are in perf/README.md).
DEFAULT_QUEUE_DELAY_US = 2000
CPU_QUEUE_DELAY_US = 0
# Triton's own stale-work drop (``default_queue_policy``) is off unless asked for: with any
# such block (even a size bound alone) Triton 2.51's dynamic batcher holds a call that arrives
# while the instance is busy for ~0.5 s, 12-28 of 80 two-client calls on CPU against none
# without it (perf/README.md, "Triton queue policy stalls"). The router drops stale work itself
# (classify/batcher.py: deadlines, max_queue_wait_ms) and every call has a gRPC deadline.
DEFAULT_QUEUE_TIMEOUT_US = 0
DEFAULT_MAX_QUEUE_SIZE = 0

P_CATEGORIES = "category_labels"
P_PII_TAGS = "pii_tags"
P_MAX_SEQ = "max_sequence_length"
P_EMBED_DIM = "embedding_dim"
P_ORT_THREADS = "ort_intra_op_threads"
P_ORT_SPINNING = "ort_allow_spinning"


def label_parameters(
    categories: Sequence[str] = CATEGORIES,
    pii_tags: Sequence[str] = PII_TAGS,
    max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH,
    embedding_dim: int = DEFAULT_EMBEDDING_DIM,
) -> dict[str, str]:
    """The label parameters as Triton ``string_value``s (lists as compact JSON).

    They travel in the config's ``parameters`` so the router reads them from the very model
    it talks to (``router_svc.triton.client.TritonClient.load_model_info``):

    - ``category_labels``: JSON list of category names, in logit order
    - ``pii_tags``: JSON list of BIO tags, in logit order
    - ``max_sequence_length``: decimal string, the model's maximum number of tokens
    - ``embedding_dim``: decimal string, the size of ``embedding``

    ``render_config`` adds, for the python kind only, ``ort_intra_op_threads`` (onnxruntime
    intra-op threads, ``0``: onnxruntime decides) and ``ort_allow_spinning``.
    """
    for name in (*categories, *pii_tags):
        if not name or any(c in name for c in ',"\\\n'):
            raise ValueError(f'label {name!r}: must be non-empty, without , " \\ or newline')
    return {
        P_CATEGORIES: json.dumps(list(categories)),
        P_PII_TAGS: json.dumps(list(pii_tags)),
        P_MAX_SEQ: str(int(max_sequence_length)),
        P_EMBED_DIM: str(int(embedding_dim)),
    }


def _q(s: str) -> str:
    """A protobuf text-format string literal."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_config(
    kind: TritonBackend,
    *,
    name: str = MODEL_NAME,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    categories: Sequence[str] = CATEGORIES,
    pii_tags: Sequence[str] = PII_TAGS,
    max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH,
    embedding_dim: int = DEFAULT_EMBEDDING_DIM,
    preferred_batch_sizes: Sequence[int] = DEFAULT_PREFERRED,
    max_queue_delay_us: int | None = None,
    queue_timeout_us: int = DEFAULT_QUEUE_TIMEOUT_US,
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
    instance_count: int = 1,
    ort_intra_op_threads: int = 0,
    ort_allow_spinning: bool = True,
    parameters: Mapping[str, str] | None = None,
) -> str:
    """``config.pbtxt`` text for one kind of deployment of the dual-head model.

    ``onnxruntime``: GPU, Triton's onnxruntime backend. ``python``: CPU, the Python backend running
    ``model.onnx`` with onnxruntime (``router_svc.triton.python_model``). ``tensorrt``: GPU,
    a TensorRT plan built by ``export/build_trt.sh``. ``parameters`` replaces the label
    parameters (tests use it to break the contract on purpose). ``max_queue_delay_us`` defaults
    by kind: ``CPU_QUEUE_DELAY_US`` for python, ``DEFAULT_QUEUE_DELAY_US`` for the GPU kinds.
    ``queue_timeout_us`` / ``max_queue_size``: Triton's queue policy, rendered only when one
    is > 0 (off by default, see ``DEFAULT_QUEUE_TIMEOUT_US``); a request queued longer, or past
    the size, is rejected, and a client may ask for a shorter timeout.
    """
    if kind not in ("onnxruntime", "python", "tensorrt"):
        raise ValueError(f"kind must be onnxruntime, python or tensorrt, not {kind!r}")
    if max_queue_delay_us is None:
        max_queue_delay_us = CPU_QUEUE_DELAY_US if kind == "python" else DEFAULT_QUEUE_DELAY_US
    if parameters is None:
        parameters = label_parameters(categories, pii_tags, max_sequence_length, embedding_dim)
        if kind == "python":
            parameters[P_ORT_THREADS] = str(int(ort_intra_op_threads))
            # onnxruntime's idle intra-op threads spin for work; in Triton's stub process they
            # compete with the server's own threads for the same cores.
            parameters[P_ORT_SPINNING] = "1" if ort_allow_spinning else "0"
    # TensorRT has no INT64 network inputs in general: build_trt.sh rewrites the ONNX inputs to
    # INT32 (a Cast to INT64 right after them), so the plan's inputs, and this config, are INT32.
    in_type = "TYPE_INT32" if kind == "tensorrt" else "TYPE_INT64"
    # Only the Python backend pads per request itself; the framework backends concatenate the
    # batch, so there requests are batched together only when their sequence lengths agree.
    ragged = "\n    allow_ragged_batch: true" if kind == "python" else ""
    lines = [
        "# Generated by router_svc.triton.repository.render_config from router_svc/labels.py;",
        "# do not edit: run `python -m router_svc.triton.repository` (a test checks for drift).",
        f"name: {_q(name)}",
        {
            "onnxruntime": 'platform: "onnxruntime_onnx"',
            "python": 'backend: "python"',
            "tensorrt": 'platform: "tensorrt_plan"',
        }[kind],
        f"max_batch_size: {int(max_batch_size)}",
    ]
    if kind == "tensorrt":
        lines += [
            "# Inputs are INT32: the engine is built from model.onnx with its INT64 inputs",
            "# rewritten to INT32 (export/build_trt.sh); clients send INT32 ids and mask.",
        ]
    lines.append("input [")
    lines.append(
        ",\n".join(
            f"  {{\n    name: {_q(n)}\n    data_type: {in_type}\n    dims: [ -1 ]{ragged}\n  }}"
            for n in (INPUT_IDS, ATTENTION_MASK)
        )
    )
    lines.append("]")
    outs = (
        (CATEGORY_LOGITS, f"{len(categories)}"),
        (PII_LOGITS, f"-1, {len(pii_tags)}"),
        (EMBEDDING, f"{int(embedding_dim)}"),
    )
    lines.append("output [")
    lines.append(
        ",\n".join(
            f"  {{\n    name: {_q(n)}\n    data_type: TYPE_FP32\n    dims: [ {d} ]\n  }}"
            for n, d in outs
        )
    )
    lines.append("]")
    device = "KIND_CPU" if kind == "python" else "KIND_GPU"
    lines += [
        "instance_group [",
        f"  {{\n    kind: {device}\n    count: {int(instance_count)}\n  }}",
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {', '.join(str(int(b)) for b in preferred_batch_sizes)} ]",
        f"  max_queue_delay_microseconds: {int(max_queue_delay_us)}",
        *(["  default_queue_policy {",
           "    timeout_action: REJECT",
           f"    default_timeout_microseconds: {int(queue_timeout_us)}",
           "    allow_timeout_override: true",
           f"    max_queue_size: {int(max_queue_size)}",
           "  }"] if queue_timeout_us > 0 or max_queue_size > 0 else []),
        "}",
        "parameters [",
        ",\n".join(
            f"  {{\n    key: {_q(k)}\n    value: {{ string_value: {_q(v)} }}\n  }}"
            for k, v in parameters.items()
        ),
        "]",
    ]
    return "\n".join(lines) + "\n"


def write_committed_configs(root: Path = REPO_ROOT) -> list[Path]:
    """(Re)write the committed GPU configs from the label contract."""
    written = []
    for kind, rel in COMMITTED.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_config(kind, name=_committed_name(kind)))
        written.append(path)
    return written


def _committed_name(kind: str) -> str:
    return Path(COMMITTED[kind]).parent.name


def onnx_output_dims(model_onnx: Path) -> dict[str, list]:
    """Output name -> shape (ints, or names for dynamic dims), read with onnxruntime."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model_onnx), so, providers=["CPUExecutionProvider"])
    return {o.name: list(o.shape) for o in sess.get_outputs()}


# What ``router-svc model build`` writes next to model.onnx, and what the CPU Triton serves by
# default; its stamp records which model.onnx and which scheme it was quantised from.
INT8_MODEL_FILE = "model.int8.onnx"
INT8_STAMP_FILE = "model.int8.json"
INT8_SCHEME = "dynamic int8, QInt8 weights per channel"


def int8_stamp(model_dir: Path) -> dict[str, object]:
    """What an int8 model made now from ``model_dir/model.onnx`` would be stamped with."""
    import hashlib

    with open(Path(model_dir) / "model.onnx", "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"source": "model.onnx", "source_sha256": digest, "scheme": INT8_SCHEME}


def write_int8_stamp(model_dir: Path) -> None:
    (Path(model_dir) / INT8_STAMP_FILE).write_text(json.dumps(int8_stamp(model_dir), indent=2))


def int8_is_current(model_dir: Path) -> bool:
    """Whether ``model_dir`` holds an int8 model quantised from its present ``model.onnx``
    with the present scheme: one left by an older build or an older scheme is not."""
    model_dir = Path(model_dir)
    try:
        stamp = json.loads((model_dir / INT8_STAMP_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (model_dir / INT8_MODEL_FILE).is_file() and stamp == int8_stamp(model_dir)


def model_file_for(int8: bool) -> str:
    """The file in a built model folder that Triton serves (``--int8``: the int8 model)."""
    return INT8_MODEL_FILE if int8 else "model.onnx"


def write_python_repository(
    repo_dir: Path,
    model_dir: Path,
    *,
    config_text: str | None = None,
    link: bool = True,
    model_file: str = "model.onnx",
    **render_kwargs,
) -> Path:
    """A CPU model repository: ``<name>/config.pbtxt`` (python kind), ``<name>/1/model.py``
    and ``<name>/1/model.onnx`` (a symlink to ``model_dir/model_file`` unless ``link=False``;
    ``model_file`` is ``INT8_MODEL_FILE`` to serve the int8 model).

    ``embedding_dim`` defaults to the size found in the ONNX file. ``config_text`` replaces the
    rendered config (tests use it for broken repositories). Returns ``repo_dir``.
    """
    model_dir = Path(model_dir).resolve()
    onnx_path = model_dir / model_file
    if not onnx_path.is_file():
        how = "router-svc model build" + (" --quantize" if model_file == INT8_MODEL_FILE else "")
        raise FileNotFoundError(f"{onnx_path} not found: build the model first (`{how}`)")
    name = render_kwargs.get("name", MODEL_NAME)
    if config_text is None and "embedding_dim" not in render_kwargs:
        render_kwargs["embedding_dim"] = int(onnx_output_dims(onnx_path)[EMBEDDING][-1])
    text = config_text if config_text is not None else render_config("python", **render_kwargs)
    model_root = Path(repo_dir) / name
    if model_root.exists():
        shutil.rmtree(model_root)
    version = model_root / "1"
    version.mkdir(parents=True)
    (model_root / "config.pbtxt").write_text(text)
    shutil.copyfile(PYTHON_MODEL, version / "model.py")
    if link:
        (version / "model.onnx").symlink_to(onnx_path)
    else:
        shutil.copyfile(onnx_path, version / "model.onnx")
    return Path(repo_dir)


if __name__ == "__main__":
    for p in write_committed_configs():
        print(f"wrote {p}")
