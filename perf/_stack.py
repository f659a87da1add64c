"""The services the router benchmarks run against, each in its own process.

- the demo OpenAI-compatible backend (``python -m router_svc.ops.demo_backends``), answering at once
  or after a fixed delay;
- the router (``python -m router_svc.ops.cli serve --config``) with a generated config: the example
  config pointed at this run's Triton, tokenizer and demo backend, plus an explicit model
  ``passthrough`` whose PII policy allows everything (so the router classifies nothing for it);
- LiteLLM's proxy from a separate virtual environment (``perf/.venv-litellm``, created on first
  use), configured with one ``openai/`` model in front of the same demo backend.

Separate processes keep the load generator, the router and the backend from sharing one event
loop (and one core), as they would not in production.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from _common import ROOT, say

from router_svc.ops.processes import log_tail, stop_session
from router_svc.triton.launcher import free_port

PASSTHROUGH = "passthrough"
LITELLM_VENV = ROOT / "perf" / ".venv-litellm"
LITELLM_SPEC = "litellm[proxy]"


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Service:
    """A subprocess with its log file; ``wait_ready`` polls an HTTP URL."""

    def __init__(self, name: str, cmd: list[str], log_path: Path, env: dict | None = None,
                 cwd: Path | None = None):
        self.name = name
        self.cmd = cmd
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env or dict(os.environ),
                                     cwd=cwd or ROOT, start_new_session=True)

    def wait_ready(self, url: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not http_ok(url):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} while "
                                   f"starting; log {self.log_path}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready at {url} after {timeout_s:.0f}s; "
                                   f"log {self.log_path}:\n{self.tail()}")
            time.sleep(0.3)

    def tail(self, n: int = 15) -> str:
        return log_tail(self.log_path, n)

    def stop(self, timeout_s: float = 10.0) -> None:
        stop_session(self.proc, timeout_s)  # its own session: the server and its workers
        self._log.close()


def start_backend(work: Path, name: str = "demo", delay_s: float = 0.0) -> tuple[Service, str]:
    """The demo backend, answering after ``delay_s`` (a stand-in for an LLM's generation time);
    returns it and its base URL (``http://127.0.0.1:PORT/v1``)."""
    port = free_port()
    svc = Service("demo backend", [sys.executable, "-m", "router_svc.ops.demo_backends", "--name",
                                   name, "--host", "127.0.0.1", "--port", str(port),
                                   "--delay", str(delay_s)],
                  work / f"backend-{port}.log")
    svc.wait_ready(f"http://127.0.0.1:{port}/health", 60)
    return svc, f"http://127.0.0.1:{port}/v1"


def start_forwarder(work: Path, backend_url: str) -> tuple[Service, str]:
    """``perf/forwarder.py`` in front of ``backend_url``: the floor of one aiohttp hop;
    returns it and its base URL (``http://127.0.0.1:PORT/v1``)."""
    port = free_port()
    svc = Service("forwarder", [sys.executable, str(Path(__file__).with_name("forwarder.py")),
                                "--port", str(port), "--backend", backend_url],
                  work / f"forwarder-{port}.log")
    svc.wait_ready(f"http://127.0.0.1:{port}/health", 60)
    return svc, f"http://127.0.0.1:{port}/v1"


def start_otlp_sink(work: Path) -> tuple[Service, str, str]:
    """``perf/otlp_sink.py``: a local OTLP/gRPC collector that accepts and drops spans;
    returns it, its OTLP endpoint (``http://127.0.0.1:PORT``) and its stats URL."""
    grpc_port, port = free_port(), free_port()
    svc = Service("otlp sink", [sys.executable, str(Path(__file__).with_name("otlp_sink.py")),
                                "--grpc-port", str(grpc_port), "--port", str(port)],
                  work / f"otlp-sink-{grpc_port}.log")
    svc.wait_ready(f"http://127.0.0.1:{port}/health", 60)
    return svc, f"http://127.0.0.1:{grpc_port}", f"http://127.0.0.1:{port}/stats"


def router_config(triton_url: str, tokenizer: Path, backend_url: str, port: int,
                  batching: dict[str, Any] | None = None, cache: bool = False,
                  root: Path | None = None, tracing: dict[str, Any] | None = None) -> dict:
    """The example config, every model on the demo backend, plus ``passthrough``. ``root``:
    the example config of another checkout (an older router refuses keys it does not know).
    ``tracing``: the config's ``tracing`` section (None: as in the example, off)."""
    from router_svc.config.loading import EXAMPLE_CONFIG

    example = Path(root) / "router_svc" / "config.example.yaml" if root else EXAMPLE_CONFIG
    data = yaml.safe_load(example.read_text())
    data["listen"] = {"host": "127.0.0.1", "port": port}
    data["triton"] = {**(data.get("triton") or {}), "url": triton_url, "timeout_s": 30.0}
    data["tokenizer"] = str(Path(tokenizer).resolve())
    for m in data["model_config"].values():
        m["backend"] = {**m["backend"], "base_url": backend_url}
        m["backend"].pop("api_key_env", None)
    data["model_config"][PASSTHROUGH] = {
        "pii_policy": {"allow_by_default": True},
        "backend": {"base_url": backend_url, "model": PASSTHROUGH},
    }
    if batching:
        data["batching"] = {**(data.get("batching") or {}), **batching}
    data["batching"] = {**(data.get("batching") or {}), "max_queue": 100_000}
    data["cache"] = {**(data.get("cache") or {}), "enabled": bool(cache)}
    if tracing is not None:
        data["tracing"] = tracing
    return data


async def triton_url_or_start(stack: contextlib.ExitStack, triton_url: str | None,
                              model_dir: Path, work: Path, int8: bool = False,
                              queue_delay_us: int | None = None) -> str:
    """The given Triton's gRPC URL, or an embedded CPU Triton started for this run (stopped
    by ``stack``); ``queue_delay_us``: its dynamic batcher's ``max_queue_delay_microseconds``
    (None: the router's default for the model kind)."""
    if triton_url is not None:
        return triton_url
    from router_svc.ops.up import served_model_file
    from router_svc.triton.launcher import TritonServer

    model_file = served_model_file(model_dir, int8)
    say(f"starting Triton (embedded, CPU{', int8 model' if int8 else ''})")
    extra = {} if queue_delay_us is None else {"max_queue_delay_us": queue_delay_us}
    server = TritonServer(model_dir, work_dir=work / "triton", startup_timeout_s=300,
                          model_file=model_file, **extra)
    await server.astart()
    stack.callback(server.stop)
    return server.grpc_url


def start_router(work: Path, config: dict, label: str = "router",
                 root: Path | None = None) -> tuple[Service, str]:
    """``router-svc serve`` on the config's port; returns it and ``http://127.0.0.1:PORT``.
    ``root``: run the ``router_svc`` of another checkout (e.g. an older commit, for A/B)."""
    port = config["listen"]["port"]
    path = (work / f"{label}-{port}.yaml").resolve()
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    cwd = Path(root).resolve() if root else None
    # A checkout from before the package layout has its command line at router_svc/cli.py.
    flat = cwd is not None and (cwd / "router_svc" / "cli.py").is_file()
    module = "router_svc.cli" if flat else "router_svc.ops.cli"
    svc = Service(label, [sys.executable, "-m", module, "serve", "--config", str(path)],
                  work / f"{label}-{port}.log", cwd=cwd)
    base = f"http://127.0.0.1:{port}"
    svc.wait_ready(f"{base}/ready", 120)
    return svc, base


# ---------------------------------------------------------------- LiteLLM


def litellm_binary(venv: Path = LITELLM_VENV, install: bool = True) -> tuple[Path | None, str]:
    """The ``litellm`` proxy command from its own venv (created and filled when ``install``);
    ``(None, why)`` when it is not available."""
    exe = venv / "bin" / "litellm"
    if exe.is_file():
        return exe, f"litellm from {venv}"
    if not install:
        return None, f"{exe} not found (run without --no-install, or: python3 -m venv {venv} && " \
                     f"{venv}/bin/pip install '{LITELLM_SPEC}')"
    say(f"installing {LITELLM_SPEC} into {venv} (a separate venv; a few minutes, once)")
    py = _system_python()
    steps = [[py, "-m", "venv", str(venv)],
             [str(venv / "bin" / "pip"), "install", "-q", LITELLM_SPEC]]
    for cmd in steps:
        r = subprocess.run(cmd, text=True, capture_output=True)
        if r.returncode != 0:
            tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-6:])
            return None, f"`{' '.join(cmd)}` failed:\n{tail}"
    return (exe, f"litellm installed into {venv}") if exe.is_file() else (
        None, f"{exe} missing after the install")


def _system_python() -> str:
    """A Python that is not this venv's (the LiteLLM venv must not inherit our packages)."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return base if Path(base).exists() else sys.executable


def start_litellm(exe: Path, work: Path, backend_url: str) -> tuple[Service, str, str]:
    """The proxy on a free port; returns it, its base URL and the master key clients send as
    ``Authorization: Bearer <key>`` (LiteLLM refuses to start without one)."""
    port = free_port()
    key = "sk-perf-" + secrets.token_hex(16)
    cfg = {
        "model_list": [{
            "model_name": PASSTHROUGH,
            "litellm_params": {"model": f"openai/{PASSTHROUGH}", "api_base": backend_url,
                               "api_key": "none"},
        }],
        "litellm_settings": {"drop_params": True, "telemetry": False,
                             "turn_off_message_logging": True},
    }
    path = work / "litellm.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update({"LITELLM_MASTER_KEY": key, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False",
                "DISABLE_SCHEMA_UPDATE": "true", "PATH": f"{exe.parent}:{env.get('PATH', '')}"})
    svc = Service("litellm", [str(exe), "--config", str(path), "--host", "127.0.0.1",
                              "--port", str(port), "--num_workers", "1"],
                  work / "litellm.log", env=env, cwd=work)
    base = f"http://127.0.0.1:{port}"
    svc.wait_ready(f"{base}/health/liveliness", 180)
    return svc, base, key
