#!/usr/bin/env bash
# Build the TensorRT plan for model_repository/semantic_router_trt from an exported model.onnx.
#
#   export/build_trt.sh [MODEL_ONNX] [OUT_DIR] [MAX_BATCH] [MAX_SEQ]
#
# Defaults: model_repository/semantic_router/1/model.onnx -> model_repository/semantic_router_trt/1,
# batch 1..64 (opt 16), sequence 1..512 (opt 128). Needs trtexec (TensorRT, e.g. the
# nvcr.io/nvidia/tensorrt or tritonserver containers) and Python with `onnx` (the build extra).
#
# INT64 -> INT32: TensorRT does not take INT64 network inputs on every version (older parsers
# "cast down" INT64 and the engine's bindings become INT32). To make the plan's inputs the same
# everywhere, the ONNX inputs are first rewritten to INT32 followed by a Cast to INT64
# (export.onnx_export.cast_inputs_int32); semantic_router_trt/config.pbtxt declares TYPE_INT32
# and the router client casts ids and mask to the input type the model config declares.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
onnx="${1:-$here/model_repository/semantic_router/1/model.onnx}"
out="${2:-$here/model_repository/semantic_router_trt/1}"
max_batch="${3:-64}"
max_seq="${4:-512}"
opt_batch=$(( max_batch < 16 ? max_batch : 16 ))
opt_seq=$(( max_seq < 128 ? max_seq : 128 ))
python="${PYTHON:-python}"

if ! command -v trtexec >/dev/null 2>&1; then
    echo "build_trt.sh: trtexec not found on PATH. It ships with TensorRT: run this inside" >&2
    echo "  nvcr.io/nvidia/tensorrt:<release>-py3 (or tritonserver), or add TensorRT's bin/ to PATH." >&2
    exit 2
fi
if [[ ! -f "$onnx" ]]; then
    echo "build_trt.sh: $onnx not found: build the model first (router-svc model build)" >&2
    exit 2
fi

mkdir -p "$out"
int32_onnx="$out/model_int32.onnx"
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$python" -c \
    "import sys; from export.onnx_export import cast_inputs_int32; cast_inputs_int32(sys.argv[1], sys.argv[2])" \
    "$onnx" "$int32_onnx"

shapes() {  # $1 batch, $2 sequence
    echo "input_ids:${1}x${2},attention_mask:${1}x${2}"
}
trtexec \
    --onnx="$int32_onnx" \
    --saveEngine="$out/model.plan" \
    --fp16 \
    --minShapes="$(shapes 1 1)" \
    --optShapes="$(shapes "$opt_batch" "$opt_seq")" \
    --maxShapes="$(shapes "$max_batch" "$max_seq")"
rm -f "$int32_onnx"
echo "wrote $out/model.plan (batch 1..$max_batch, sequence 1..$max_seq, fp16)"
