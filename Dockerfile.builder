# The one-shot model builder of compose.yaml (`model-builder` service): torch (CPU wheel) and the
# `build` extra. It copies the committed GPU config.pbtxt into the model repository volume and
# runs `router-svc model build` only when model.onnx or tokenizer.json is missing
# (deploy/model-builder.sh), then exits.
#
# The training data is not in the image: mount shared/data (MMLU-Pro questions, PII data, STS
# pairs; see ../shared/README.md) read-only at /data. compose.yaml mounts
# ${ROUTER_SVC_DATA:-../shared/data}; alone:
#
#   docker build -f Dockerfile.builder -t router-svc-builder .
#   docker run --rm -v models:/models -v $PWD/../shared/data:/data:ro router-svc-builder
#
# MODEL_BUILD_ARGS adds `router-svc model build` arguments (e.g. "--quick": a smoke build).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MODEL_REPOSITORY=/models \
    DATA_DIR=/data \
    MODEL_BUILD_ARGS=""

# The CPU build of torch first, from PyTorch's own index: from PyPI, pip would fetch a CUDA
# build of several GB. `.[build]` then finds torch==2.13.0 satisfied.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

# At the versions of constraints.txt (README.md, "Pinned dependencies"); its torch==2.13.0 is
# the CPU wheel installed above.
COPY pyproject.toml README.md constraints.txt /tmp/src/
COPY router_svc /tmp/src/router_svc
COPY export /tmp/src/export
RUN pip install -c /tmp/src/constraints.txt "/tmp/src[build]" && rm -rf /tmp/src

COPY model_repository/semantic_router/config.pbtxt /opt/router-svc/model_repository/semantic_router/config.pbtxt
COPY deploy/model-builder.sh /usr/local/bin/model-builder

# Root on purpose: a one-shot job that writes into a fresh named volume (owned by root) and
# serves nothing.
CMD ["/bin/sh", "/usr/local/bin/model-builder"]
