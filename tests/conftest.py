"""Shared fixtures, started once per session and stopped at the end:

- ``tiny_model_dir`` / ``triton``: a tiny random model on a real Triton (mechanics, seconds);
- ``trained_model_dir`` / ``trained_triton``: a real quick build of the dual-head model
  (frozen MiniLM encoder, trained heads; about a minute, cached by source hash under .work/);
- ``backends``: three demo OpenAI-compatible backends standing in for vLLM/Ollama;
- ``router_factory``: the real app (``create_app``) on a real port, against the above.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("ROUTER_SVC_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """``model.onnx`` + ``tokenizer.json`` of a tiny random dual-head model (a few seconds)."""
    from export.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def triton(tiny_model_dir, tmp_path_factory):
    """A real ``tritonserver`` (Python backend, CPU) serving the tiny model; stopped at the end."""
    from router_svc.triton.launcher import TritonServer

    server = TritonServer(tiny_model_dir, work_dir=tmp_path_factory.mktemp("triton"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _source_hash() -> str:
    """Hash of what shapes the quick model: its code, its data and its options."""
    from export.build import quick_options

    h = hashlib.sha256(repr(quick_options()).encode())
    names = ["backbone", "build", "data", "exemplars", "modeling", "onnx_export",
             "pii_templates", "train"]
    files = [ROOT / "export" / f"{n}.py" for n in names] + [
        ROOT / "router_svc" / "labels.py", ROOT / "router_svc" / "classify" / "tokenization.py",
        ROOT / "export" / "category_seeds.jsonl"]
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def trained_model_dir() -> Path:
    """A real quick build (``model build --quick``), reused while its sources are unchanged.

    ``ROUTER_SVC_TEST_MODEL=<dir with model.onnx and tokenizer.json>`` uses that model instead
    (e.g. the full build in model_repository/semantic_router/1) without building anything.
    """
    from export.build import build, quick_options

    if given := os.environ.get("ROUTER_SVC_TEST_MODEL"):
        path = Path(given).resolve()
        missing = [f for f in ("model.onnx", "tokenizer.json") if not (path / f).is_file()]
        if missing:
            pytest.fail(f"ROUTER_SVC_TEST_MODEL={given}: {', '.join(missing)} missing")
        return path
    out = ROOT / ".work" / f"test-model-{_source_hash()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    # Several test sessions may start at once: one builds, the others wait for it.
    with open(out.parent / "test-model.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "model.onnx").is_file():
            tmp = out.with_suffix(".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            build(quick_options(out_dir=tmp, data_dir=DATA_DIR))
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
    return out


@pytest.fixture(scope="session")
def trained_triton(trained_model_dir, tmp_path_factory):
    from router_svc.triton.launcher import TritonServer

    server = TritonServer(trained_model_dir, work_dir=tmp_path_factory.mktemp("triton_trained"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


BACKEND_NAMES = {"phi4": "phi4", "mistral-small3.1": "mistral-small3.1", "gemma3:27b": "gemma3:27b"}


@pytest.fixture(scope="session")
async def backends():
    """The demo backends on free ports, named as in the example config."""
    from router_svc.ops.demo_backends import run_backends

    runner = await run_backends([(name, "127.0.0.1", 0) for name in BACKEND_NAMES.values()])
    try:
        yield runner
    finally:
        await runner.cleanup()


def example_config_data() -> dict[str, Any]:
    from router_svc.config.loading import EXAMPLE_CONFIG

    return yaml.safe_load(EXAMPLE_CONFIG.read_text())


def wire_config(data: dict[str, Any], triton_url: str, backends, tokenizer: Path) -> dict:
    """The example config pointed at this session's Triton, backends and tokenizer."""
    data = {**data, "triton": {**data.get("triton", {}), "url": triton_url},
            "tokenizer": str(tokenizer)}
    mc = {}
    for name, m in data["model_config"].items():
        b = dict(m["backend"])
        b["base_url"] = backends[BACKEND_NAMES[name]].base_url
        mc[name] = {**m, "backend": b}
    data["model_config"] = mc
    return data


RouterFactory = Callable[..., Awaitable[str]]


@pytest.fixture
async def router_factory(
    trained_triton, trained_model_dir, backends
) -> AsyncIterator[RouterFactory]:
    """``await router_factory(**config_overrides) -> base_url`` of a running router
    (``span_exporter=``: its spans go there, e.g. the SDK's InMemorySpanExporter, flushed
    when it stops: ``await router_factory.stop(url)``)."""
    from router_svc.config.loading import parse_config
    from router_svc.doors.http.app import create_app

    runners: list[web.AppRunner] = []
    by_url: dict[str, web.AppRunner] = {}

    async def make(mutate: Callable[[dict], None] | None = None, *,
                   span_exporter: Any = None, **overrides: Any) -> str:
        data = wire_config(example_config_data(), trained_triton.grpc_url, backends,
                           trained_model_dir / "tokenizer.json")
        data.update(overrides)
        if mutate:
            mutate(data)
        config = parse_config(data, ROOT)
        app = create_app(config, startup_timeout_s=10, span_exporter=span_exporter)
        runner = web.AppRunner(app, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}"
        by_url[url] = runner
        return url

    async def stop(url: str) -> None:
        """Shut one router down now (its cleanup runs, e.g. the cache snapshot)."""
        runner = by_url.pop(url)
        runners.remove(runner)
        await runner.cleanup()

    make.stop = stop  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        for r in runners:
            await r.cleanup()


def _reset_backends(runner) -> None:
    from dataclasses import fields

    from router_svc.ops.demo_backends import OPTIONS, RECEIVED, BackendOptions

    defaults = BackendOptions()
    for b in runner.backends.values():
        b.app[RECEIVED].clear()
        opts = b.app[OPTIONS]  # mutated in place: the running app's mapping is frozen
        for f in fields(BackendOptions):
            setattr(opts, f.name, getattr(defaults, f.name))


@pytest.fixture
def clean_backends(backends):
    """The demo backends with nothing received and default options, before and after a test."""
    _reset_backends(backends)
    try:
        yield backends
    finally:
        _reset_backends(backends)
