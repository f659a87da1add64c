#!/bin/sh
# The compose `model-builder` service (image: Dockerfile.builder). One shot: fills the Triton
# model repository volume, then exits 0 so `triton` (depends_on: service_completed_successfully)
# starts.
#
#   $MODEL_REPOSITORY/semantic_router/config.pbtxt   copied from the committed GPU config, every run
#   $MODEL_REPOSITORY/semantic_router/1/model.onnx   `router-svc model build`, only when missing
#                                    tokenizer.json   (the router reads it from the same volume)
#                                    category_exemplars.npz (the router's category vote; written
#                                    for an older model without one when the data is here)
#                                    model.int8.onnx + model.int8.json (what a CPU Triton serves;
#                                    written for an older model without them)
#
# Environment: MODEL_REPOSITORY (default /models), MODEL_CONFIG (the config.pbtxt to copy),
# DATA_DIR (default /data: the training data, ../shared/data bind-mounted read-only),
# MODEL_BUILD_ARGS (extra `router-svc model build` arguments, e.g. "--quick" for a smoke build
# in about a minute). The build runs in a scratch folder and is moved in only when complete,
# model.onnx last, so an interrupted build never leaves half a model behind.
set -eu

repo="${MODEL_REPOSITORY:-/models}"
data="${DATA_DIR:-/data}"
model="$repo/semantic_router"
config_src="${MODEL_CONFIG:-/opt/router-svc/model_repository/semantic_router/config.pbtxt}"

mkdir -p "$model/1"
cp "$config_src" "$model/config.pbtxt"
echo "model-builder: $model/config.pbtxt from the committed GPU config"

if [ -f "$model/1/model.onnx" ] && [ -f "$model/1/tokenizer.json" ]; then
  echo "model-builder: $model/1 already holds model.onnx and tokenizer.json; nothing to build"
  # A model built before the build wrote the category exemplars: add them (minutes), if the
  # data to make them is here; without them the router's category head decides alone.
  if [ ! -f "$model/1/category_exemplars.npz" ] && [ -f "$model/1/build_report.json" ] \
      && [ -f "$data/mmlu_pro/questions.jsonl" ]; then
    echo "model-builder: writing the category exemplars for it (router-svc model exemplars)"
    router-svc model exemplars --model-dir "$model/1" --data-dir "$data" \
      || echo "model-builder: warning: no category exemplars written; the router's head decides alone" >&2
  fi
  # The int8 model the CPU Triton serves, for a model built before builds wrote it (seconds).
  python -c "import sys; from pathlib import Path; from router_svc.ops.up import ensure_int8; ensure_int8(Path(sys.argv[1]))" "$model/1" \
    || echo "model-builder: warning: no int8 model written; a CPU Triton serves model.onnx" >&2
  exit 0
fi

if [ ! -f "$data/mmlu_pro/questions.jsonl" ]; then
  echo "model-builder: error: no training data at $data (expected $data/mmlu_pro/questions.jsonl)." >&2
  echo "  compose mounts \${ROUTER_SVC_DATA:-../shared/data} there; set ROUTER_SVC_DATA to the" >&2
  echo "  shared/data folder, or copy a built model.onnx + tokenizer.json into the volume." >&2
  exit 2
fi

scratch="$(mktemp -d /tmp/model-build.XXXXXX)"
trap 'rm -rf "$scratch"' EXIT
echo "model-builder: building the model into $model/1 (router-svc model build ${MODEL_BUILD_ARGS:-})"
# shellcheck disable=SC2086  # MODEL_BUILD_ARGS is a list of arguments
router-svc model build --out "$scratch/1" --data-dir "$data" ${MODEL_BUILD_ARGS:-}
for f in tokenizer.json build_report.json category_exemplars.npz model.int8.onnx model.int8.json model.onnx; do  # model.onnx last: it marks "done"
  if [ -f "$scratch/1/$f" ]; then
    cp "$scratch/1/$f" "$model/1/.$f.tmp" && mv "$model/1/.$f.tmp" "$model/1/$f"
  fi
done
echo "model-builder: done: $(ls "$model/1" | tr '\n' ' ')"
