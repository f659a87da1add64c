"""ONNX export of the dual-head model, a parity check against torch, graph optimisation, int8.

Exporter choice: torch 2.13 defaults to the dynamo exporter (``torch.export``). The legacy
TorchScript exporter (``dynamo=False``) is still available and gives one clean graph with
``dynamic_axes`` for batch and sequence, so it is used first; where it is gone, the dynamo
exporter with ``dynamic_shapes`` takes over (it needs ``onnxscript``, is ~5x slower, and its
``output_names`` collide with its own ``embedding`` value, so outputs are renamed afterwards).
Either way the file is verified with ``onnx.checker`` and its input/output names and dynamic
dimensions are asserted.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from router_svc.labels import ATTENTION_MASK, CATEGORY_LOGITS, EMBEDDING, INPUT_IDS, PII_LOGITS

INPUTS = (INPUT_IDS, ATTENTION_MASK)
OUTPUTS = (CATEGORY_LOGITS, PII_LOGITS, EMBEDDING)
DYNAMIC_AXES = {
    INPUT_IDS: {0: "batch", 1: "sequence"},
    ATTENTION_MASK: {0: "batch", 1: "sequence"},
    CATEGORY_LOGITS: {0: "batch"},
    PII_LOGITS: {0: "batch", 1: "sequence"},
    EMBEDDING: {0: "batch"},
}


class ExportError(Exception):
    """An export that produced no usable ONNX file; the message says why."""


def _example_inputs(batch: int = 2, seq: int = 8):
    import torch

    gen = torch.Generator().manual_seed(0)  # leaves the global RNG alone
    ids = torch.randint(1000, 2000, (batch, seq), dtype=torch.int64, generator=gen)
    mask = torch.ones(batch, seq, dtype=torch.int64)
    mask[1, seq // 2:] = 0  # a padded row, so masking is traced with real data
    return ids, mask


# What torch.onnx.export raises where its legacy (TorchScript) exporter is gone.
LEGACY_EXPORTER_GONE = (TypeError, NotImplementedError, ImportError)


def _legacy_export(module, args, path: Path, outputs: list[str], axes: dict, opset: int) -> None:
    """``module`` (in eval mode) to ``path`` by the legacy exporter: one graph, dynamic axes."""
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings and the legacy-exporter deprecation
        torch.onnx.export(module, args, str(path), input_names=list(INPUTS),
                          output_names=outputs, dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True, dynamo=False)


def shared_encoder(model, path: Path, threads: int | None = None, opset: int = 17):
    """The frozen shared layers of a ``DualHeadModel`` as an onnxruntime function
    ``(ids, mask) -> hidden`` (numpy, float32), for the build's feature cache: ~0.75x of the
    time torch takes for them on 2 cores (perf/README.md, "Model build time"). None where the
    legacy exporter is gone (the caller then encodes with torch)."""
    import onnxruntime as ort
    import torch

    class Shared(torch.nn.Module):
        def __init__(self, m) -> None:
            super().__init__()
            self.m = m

        def forward(self, ids, mask):
            return self.m.shared_forward(ids, mask)

    was_training = model.training
    axes = {**{name: DYNAMIC_AXES[name] for name in INPUTS}, "hidden": {0: "batch", 1: "sequence"}}
    try:
        _legacy_export(Shared(model).eval(), _example_inputs(), path, ["hidden"], axes, opset)
    except LEGACY_EXPORTER_GONE:
        return None
    finally:
        model.train(was_training)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def encode(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return session.run(None, {INPUT_IDS: ids, ATTENTION_MASK: mask})[0]

    return encode


def export_onnx(model, path: Path, opset: int = 17) -> None:
    """Export a ``DualHeadModel`` in eval mode to ``path``, dynamic batch and sequence axes."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    args = _example_inputs()
    try:
        try:
            _legacy_export(model, args, path, list(OUTPUTS), DYNAMIC_AXES, opset)
        except LEGACY_EXPORTER_GONE:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _export_dynamo(model, args, path, max(opset, 18))  # dynamo targets opset >= 18
    finally:
        model.train(was_training)
    _pin_label_dims(path, {
        CATEGORY_LOGITS: {1: model.category_head[-1].out_features},
        PII_LOGITS: {2: model.pii_head[-1].out_features},
        EMBEDDING: {1: model.embeddings.word_embeddings.embedding_dim},
    })
    check_onnx(path)


def _pin_label_dims(path: Path, dims: dict[str, dict[int, int]]) -> None:
    """Write the static label/embedding sizes into the outputs' shapes.

    The tracer leaves some of them symbolic (the embedding's after ``normalize``); static sizes let
    Triton, TensorRT and the contract tests read the number of labels off the file.
    """
    import onnx

    m = onnx.load(str(path))
    for out in m.graph.output:
        for axis, size in dims.get(out.name, {}).items():
            out.type.tensor_type.shape.dim[axis].dim_value = size
    onnx.save(m, str(path))


def _export_dynamo(model, args, path: Path, opset: int) -> None:
    """The ``torch.export`` route (needs ``onnxscript``), for a torch without the legacy exporter.

    Its ``output_names`` can collide with values it names itself (an internal ``embedding`` from
    ``nn.Embedding``), which breaks SSA; so the graph is exported with its own names and the
    inputs/outputs renamed afterwards, moving colliding internal values out of the way.
    """
    import onnx
    import torch

    batch, seq = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=2)
    shapes = {INPUT_IDS: {0: batch, 1: seq}, ATTENTION_MASK: {0: batch, 1: seq}}
    prog = torch.onnx.export(model, args, dynamic_shapes=shapes, opset_version=opset,
                             dynamo=True, external_data=False)
    prog.save(str(path))
    m = onnx.load(str(path))
    g = m.graph
    mapping = {v.name: new for v, new in zip(g.input, INPUTS, strict=True)}
    mapping.update({v.name: new for v, new in zip(g.output, OUTPUTS, strict=True)})
    taken = {n for node in g.node for n in (*node.input, *node.output)}
    taken |= {i.name for i in g.initializer} | {v.name for v in (*g.input, *g.output)}
    for new in list(mapping.values()):
        if new in taken and new not in mapping:
            mapping[new] = f"{new}__internal"
    _rename_values(g, mapping)
    onnx.save(m, str(path))


def _rename_values(g, mapping: dict[str, str]) -> None:
    for node in g.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for v in (*g.input, *g.output, *g.value_info, *g.initializer):
        v.name = mapping.get(v.name, v.name)


def check_onnx(path: Path) -> None:
    """``onnx.checker`` plus the tensor contract: names, INT64 inputs, dynamic batch/sequence."""
    import onnx

    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    ins = [i.name for i in m.graph.input]
    outs = [o.name for o in m.graph.output]
    if ins != list(INPUTS) or outs != list(OUTPUTS):
        raise ExportError(f"{path}: inputs {ins}, outputs {outs}; want {INPUTS} -> {OUTPUTS}")
    for i in m.graph.input:
        if i.type.tensor_type.elem_type != onnx.TensorProto.INT64:
            raise ExportError(f"{path}: input {i.name} is not INT64")
    for t in list(m.graph.input) + list(m.graph.output):
        dims = t.type.tensor_type.shape.dim
        dynamic = [not d.HasField("dim_value") for d in dims]
        want = len(DYNAMIC_AXES[t.name])
        if sum(dynamic[:want]) != want:
            raise ExportError(f"{path}: {t.name} has static leading dims {[d for d in dims]}")


PARITY_TOL = 1e-3  # max |diff| on any output; fp32 CPU export is typically ~1e-6


@dataclass
class ParityReport:
    per_output: dict[str, float]  # max |torch - onnxruntime| per output, valid positions only
    max_abs_diff: float  # the worst of per_output
    category_argmax_identical: bool
    pii_argmax_identical: bool  # over valid (unpadded) tokens
    argmax_identical: bool
    n_texts: int
    seq_lengths: list[int] = field(default_factory=list)
    tolerance: float = PARITY_TOL

    @property
    def ok(self) -> bool:
        return self.argmax_identical and self.max_abs_diff < self.tolerance


def encode_batch(tokenizer_json: Path, texts: list[str], max_length: int = 512):
    """Tokenise and pad to the longest text: ``(input_ids, attention_mask)`` as int64 arrays."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.enable_truncation(max_length)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the batch's longest, not fixed
    enc = tok.encode_batch(texts)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    return ids, mask


def run_onnx(onnx_path: Path, input_ids: np.ndarray, attention_mask: np.ndarray,
             threads: int = 1) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    res = sess.run(list(OUTPUTS), {INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask})
    return dict(zip(OUTPUTS, res, strict=True))


def parity(model, onnx_path: Path, tokenizer_json: Path, texts: list[str]) -> ParityReport:
    """Torch vs onnxruntime on a padded batch of ``texts``; diffs over valid positions only."""
    import torch

    ids, mask = encode_batch(tokenizer_json, texts)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        ref = model(torch.from_numpy(ids), torch.from_numpy(mask))
    model.train(was_training)
    ref = dict(zip(OUTPUTS, (t.numpy() for t in ref), strict=True))
    got = run_onnx(onnx_path, ids, mask)
    valid = mask.astype(bool)
    diffs = {
        CATEGORY_LOGITS: float(np.abs(ref[CATEGORY_LOGITS] - got[CATEGORY_LOGITS]).max()),
        PII_LOGITS: float(np.abs(ref[PII_LOGITS][valid] - got[PII_LOGITS][valid]).max()),
        EMBEDDING: float(np.abs(ref[EMBEDDING] - got[EMBEDDING]).max()),
    }
    cat_eq = bool((ref[CATEGORY_LOGITS].argmax(-1) == got[CATEGORY_LOGITS].argmax(-1)).all())
    pii_eq = bool((ref[PII_LOGITS].argmax(-1)[valid] == got[PII_LOGITS].argmax(-1)[valid]).all())
    return ParityReport(diffs, max(diffs.values()), cat_eq, pii_eq, cat_eq and pii_eq,
                        len(texts), mask.sum(1).tolist())


def optimize_onnx(src: Path, dst: Path) -> None:
    """Save an onnxruntime-optimised graph (ORT_ENABLE_EXTENDED: fused attention, GELU, LayerNorm).

    The saved graph is specific to onnxruntime's CPU provider (it may hold contrib ops), which is
    what the CPU Python backend runs; the GPU repository should be given the plain export.
    """
    import onnxruntime as ort

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(dst)
    so.intra_op_num_threads = 1
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    if not dst.exists():
        raise ExportError(f"onnxruntime did not write an optimised model to {dst}")


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation: QInt8 weights with one scale per output channel, activations
    quantised at run time.

    Per-channel weight scales keep the category and PII decisions within a few thousandths of
    fp32 where one scale per tensor lost a point of category accuracy (perf/README, "int8 as
    the CPU default"). Works on the plain export and on an :func:`optimize_onnx` graph: the
    latter's contrib ops (FusedMatMul, BiasGelu, ...) defeat ONNX shape inference, so tensors
    of unknown type are declared FLOAT (``DefaultTensorType``), which they are in this model.
    """
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": TensorProto.FLOAT})


def write_int8(model_dir: Path) -> Path:
    """``model_dir``'s int8 model quantised from its ``model.onnx``, with the stamp that says
    which ``model.onnx`` and which scheme it was made from (``int8_is_current``). Written
    aside and renamed over, so a reader never sees half a file."""
    from router_svc.triton.repository import INT8_MODEL_FILE, write_int8_stamp

    model_dir = Path(model_dir)
    target = model_dir / INT8_MODEL_FILE
    tmp = target.with_name(f".{target.name}.tmp")
    quantize_int8(model_dir / "model.onnx", tmp)
    tmp.replace(target)
    write_int8_stamp(model_dir)
    return target


def cast_inputs_int32(src: Path, dst: Path) -> None:
    """Copy of ``src`` whose graph inputs are INT32, each followed by a Cast back to INT64.

    TensorRT's ONNX parser has no (or version-dependent) INT64 network inputs; with this rewrite
    the engine's inputs are INT32 on every TensorRT version, matching the ``tensorrt`` config.
    Token ids (< 2**31) and a 0/1 mask lose nothing.
    """
    import onnx
    from onnx import TensorProto, helper

    m = onnx.load(str(src))
    g = m.graph
    casts = []
    for inp in g.input:
        if inp.type.tensor_type.elem_type != TensorProto.INT64:
            continue
        inner = f"{inp.name}__int64"
        for node in g.node:
            for i, name in enumerate(node.input):
                if name == inp.name:
                    node.input[i] = inner
        casts.append(helper.make_node("Cast", [inp.name], [inner], to=TensorProto.INT64,
                                      name=f"{inp.name}_to_int64"))
        inp.type.tensor_type.elem_type = TensorProto.INT32
    for c in reversed(casts):
        g.node.insert(0, c)
    onnx.checker.check_model(m)
    onnx.save(m, str(dst))
