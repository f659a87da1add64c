"""The CPU Triton of ``compose.cpu.yaml``: the ``tritonserver`` 2.51 from the nvidia-pytriton wheel
(Python backend running the int8 ``model.int8.onnx`` with onnxruntime, or ``model.onnx`` with
``--fp32``) in the router image, for machines without a GPU.

``router_svc.triton.launcher.TritonServer`` binds Triton to 127.0.0.1 (right for the embedded
``router-svc up``); in a container the router and Prometheus reach it from other containers, so
this wrapper binds it to ``--host`` (all interfaces by default) on the ports the NGC image uses
(HTTP 8000, gRPC 8001, metrics 8002), copies Triton's log to stdout (``docker compose logs``),
and runs until SIGTERM/SIGINT, or exits with Triton's status if Triton dies::

    python deploy/triton_cpu.py --model-dir /models/semantic_router/1
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from router_svc.triton.launcher import TritonServer, TritonStartError
from router_svc.triton.repository import INT8_MODEL_FILE, int8_is_current

ADDRESS_FLAGS = ("--http-address=", "--grpc-address=", "--metrics-address=")


class ListeningTritonServer(TritonServer):
    """A ``TritonServer`` listening on ``host`` instead of 127.0.0.1."""

    def __init__(self, model_dir: Path, *, host: str = "0.0.0.0", **kwargs) -> None:
        super().__init__(model_dir, **kwargs)
        self.host = host

    def _prepare(self) -> tuple[list[str], dict[str, str]]:
        cmd, env = super()._prepare()
        out = []
        for arg in cmd:
            flag = next((f for f in ADDRESS_FLAGS if arg.startswith(f)), None)
            out.append(arg if flag is None else flag + self.host)
        missing = [f for f in ADDRESS_FLAGS if f + self.host not in out]
        if missing:  # the launcher no longer passes these flags: fail loudly, not on 127.0.0.1
            raise TritonStartError(f"cannot bind Triton to {self.host}: no {', '.join(missing)} "
                                   f"in the launcher's command {cmd}")
        return out, env


class LogFollower:
    """Copies what Triton appends to its log file to a stream."""

    def __init__(self, path: Path, stream=None) -> None:
        self.path = path
        self.stream = stream if stream is not None else sys.stdout
        self.offset = 0

    def pump(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return
        if chunk:
            self.offset += len(chunk)
            self.stream.write(chunk.decode("utf-8", errors="replace"))
            self.stream.flush()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=Path("/models/semantic_router/1"),
                    help="folder with model.onnx (default: %(default)s)")
    ap.add_argument("--host", default="0.0.0.0", help="address to listen on (default: %(default)s)")
    ap.add_argument("--http-port", type=int, default=8000)
    ap.add_argument("--grpc-port", type=int, default=8001)
    ap.add_argument("--metrics-port", type=int, default=8002)
    ap.add_argument("--work-dir", type=Path, help="scratch folder (default: a new temporary one)")
    ap.add_argument("--fp32", action="store_true",
                    help="serve model.onnx instead of the int8 model.int8.onnx the model "
                    "build writes beside it")
    ap.add_argument("--startup-timeout", type=float, default=120.0,
                    help="seconds for Triton to load the model (default: %(default)s)")
    return ap.parse_args(argv)


def served_file(model_dir: Path, fp32: bool) -> str:
    """The int8 model, as ``router-svc up`` serves on a CPU, when the build made it from this
    ``model.onnx``; else (a model built before builds wrote it, or ``--fp32``) ``model.onnx``.
    This image has no ONNX quantiser, so a missing int8 model is said, not made."""
    if fp32:
        return "model.onnx"
    if int8_is_current(model_dir):
        return INT8_MODEL_FILE
    print(f"triton-cpu: warning: serving fp32 model.onnx: {model_dir / INT8_MODEL_FILE} is "
          "missing or was not made from this model.onnx (`router-svc model build` writes it; "
          "--fp32 says fp32 is meant)", file=sys.stderr, flush=True)
    return "model.onnx"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.model_dir / "model.onnx").is_file():
        print(f"triton-cpu: error: {args.model_dir / 'model.onnx'} not found (the model-builder "
              "service writes it into the models volume)", file=sys.stderr)
        return 2
    model_file = served_file(args.model_dir, args.fp32)
    server = ListeningTritonServer(
        args.model_dir, host=args.host, work_dir=args.work_dir, http_port=args.http_port,
        model_file=model_file,
        grpc_port=args.grpc_port, metrics_port=args.metrics_port,
        startup_timeout_s=args.startup_timeout)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server.start()
    except TritonStartError as e:
        print(f"triton-cpu: error: {e}", file=sys.stderr)
        return 1
    log = LogFollower(server.log_path)
    log.pump()
    print(f"triton-cpu: ready on {args.host}: HTTP {server.http_port}, gRPC {server.grpc_port}, "
          f"metrics {server.metrics_port}", flush=True)
    status = 0
    while not stop.wait(1.0):
        log.pump()
        code = server.process.poll() if server.process is not None else 1
        if code is not None:
            print(f"triton-cpu: tritonserver exited with status {code}", file=sys.stderr)
            status = code or 1
            break
    server.stop()
    log.pump()
    return status


if __name__ == "__main__":
    sys.exit(main())
