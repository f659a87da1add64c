# The router image: `router-svc serve` with the runtime dependencies only (no torch; the model
# build has its own image, Dockerfile.builder). compose.yaml also runs the demo backends from it
# (`python -m router_svc.ops.demo_backends`) and compose.cpu.yaml the CPU Triton
# (deploy/triton_cpu.py: the tritonserver in the nvidia-pytriton wheel, a runtime dependency).
#
#   docker build -t router-svc .
#   docker run -p 8801:8801 -v $PWD/my-config.yaml:/etc/router-svc/config.yaml:ro \
#       -v models:/models:ro router-svc
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Shared libraries that the wheel's tritonserver and Python-backend stub link against from the
# system (the rest ship in nvidia_pytriton.libs); usually present already in the slim image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libexpat1 libstdc++6 zlib1g \
    && rm -rf /var/lib/apt/lists/*

# `pip install .`: the runtime dependencies of pyproject.toml, none of the extras, at the versions
# of constraints.txt (the ones the test suite passed with; README.md, "Pinned dependencies").
# ROUTER_SVC_EXTRAS (build argument, empty by default) adds extras: compose.yaml's shared-cache
# replicas are built with `milvus` (pymilvus, for cache.backend: milvus). xds-protos carries an old
# copy of opentelemetry-proto's files (which one wins depends on install order): reinstall the SDK's.
ARG ROUTER_SVC_EXTRAS=
COPY pyproject.toml README.md constraints.txt /tmp/src/
COPY router_svc /tmp/src/router_svc
RUN pip install -c /tmp/src/constraints.txt /tmp/src \
    && if [ -n "$ROUTER_SVC_EXTRAS" ]; then \
        pip install -c /tmp/src/constraints.txt "/tmp/src[$ROUTER_SVC_EXTRAS]"; fi \
    && pip install --no-deps --force-reinstall -c /tmp/src/constraints.txt opentelemetry-proto \
    && rm -rf /tmp/src \
    && python -c "import importlib.util as u, sys; sys.exit('torch must not be in the router image' if u.find_spec('torch') else 0)"

# The example config, made to fit a container: listen on all interfaces, Triton by its compose
# service name, the tokenizer from the model volume. Mount your own over it (compose mounts
# deploy/router-config.yaml).
COPY router_svc/config.example.yaml /etc/router-svc/config.yaml
RUN sed -i \
        -e 's|^  host: 127\.0\.0\.1 |  host: 0.0.0.0   |' \
        -e 's|^  url: 127\.0\.0\.1:8001 |  url: triton:8001     |' \
        -e 's|^# tokenizer: .*|tokenizer: /models/semantic_router/1/tokenizer.json|' \
        /etc/router-svc/config.yaml \
    && grep -q '^  host: 0\.0\.0\.0' /etc/router-svc/config.yaml \
    && grep -q '^  url: triton:8001' /etc/router-svc/config.yaml \
    && grep -q '^tokenizer: /models/' /etc/router-svc/config.yaml \
    && router-svc check-config /etc/router-svc/config.yaml

# The CPU Triton's entrypoint (compose.cpu.yaml and the Kubernetes cpu overlay run it from here).
COPY deploy/triton_cpu.py /opt/router-svc/triton_cpu.py

RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin router
USER 10001:10001
WORKDIR /tmp

EXPOSE 8801
# python, not curl: the slim image has no curl. Port 8801 is the config's listen.port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8801/health', timeout=2)"]

CMD ["router-svc", "serve", "--config", "/etc/router-svc/config.yaml"]
