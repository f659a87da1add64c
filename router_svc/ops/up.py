"""``router-svc up``: the whole stack on localhost, in one process tree.

1. check the ports (before anything slow), read and validate the config;
2. the model: ``model.onnx`` + ``tokenizer.json`` in ``--model-dir``, built first if missing;
3. Triton from the ``nvidia-pytriton`` wheel (``TritonServer``), unless ``--triton-url``;
4. one demo backend per model in ``model_config`` (ports ``--backend-base-port``, +1, ...),
   unless ``--no-backends``;
5. the router (``create_app``) on ``--port``, then a banner with curl lines to try;
6. on Ctrl-C or SIGTERM: router, backends, then Triton stop (Triton's whole session is
   killed if it outlives its stop timeout, so no ``tritonserver`` is left behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import shlex
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from router_svc.config.loading import (
    EXAMPLE_CONFIG,
    Config,
    ConfigError,
    _UniqueKeyLoader,
    parse_config,
)
from router_svc.config.schema import PiiModelConfig
from router_svc.labels import MODEL_NAME

log = logging.getLogger("router_svc.up")

MODEL_FILES = ("model.onnx", "tokenizer.json")
CLASSIFY_EXAMPLE = "Call John Smith at 555-123-4567 about my chemistry homework"
TORCH_PIP = "pip install -e '.[build]'   (torch==2.13.0 takes the CPU wheel; or run ./scripts/up)"


DEFAULT_MODEL_DIR = Path("model_repository/semantic_router/1")
DEFAULT_DATA_DIR = Path("../shared/data")


@dataclass(frozen=True)
class UpOptions:
    """``router-svc up``'s options; the defaults are the command line's."""

    config: Path | None = None  # None: the example config, config.example.yaml
    port: int | None = None  # None: the config's listen.port
    model_dir: Path = DEFAULT_MODEL_DIR  # model.onnx + tokenizer.json, built there if missing
    data_dir: Path = DEFAULT_DATA_DIR  # training data for a build
    int8: bool = True  # serve model.int8.onnx (quantised from model.onnx if missing); False: fp32
    triton_url: str | None = None  # gRPC host:port of a running Triton; None: start one
    no_backends: bool = False  # the config's own backends instead of the demo ones
    backend_base_port: int = 9101  # first port of the demo backends, one per model
    cache: str | None = None  # "milvus": the cache on an embedded Milvus (milvus-lite)


@dataclass(frozen=True)
class ServedModelOptions:
    """Which served model the ``router-svc eval`` commands measure: the one a running Triton
    serves (``triton_url``), or the embedded Triton started on ``model_dir`` when None. The
    defaults are the command line's."""

    triton_url: str | None = None
    model_dir: Path = DEFAULT_MODEL_DIR  # model.onnx and tokenizer.json
    model_name: str = MODEL_NAME
    int8: bool = True  # serve model.int8.onnx from model_dir, as `up` does; False: model.onnx
    # classifier.category_model.exemplars for the measurement: "auto" (the build's file in
    # model_dir, if any), "off" (the category head alone), or a path
    exemplars: str = "auto"
    # The PII windows the texts are read in (classifier.pii_model.window_tokens / window_stride):
    # the router's defaults unless told otherwise.
    window_tokens: int = PiiModelConfig.window_tokens
    window_stride: int = PiiModelConfig.window_stride


class PortInUse(Exception):
    """A port ``up`` needs is taken; the message names it and the flag that changes it."""


@dataclass
class Plan:
    """Everything decided before anything starts."""

    data: dict[str, Any]  # the config as YAML data, to be completed with the Triton URL
    base_dir: Path  # where relative paths in the config resolve
    source: Path
    host: str
    port: int
    model_dir: Path
    triton_url: str | None  # None: start the embedded Triton
    demo: list[tuple[str, str, int]]  # (backend model name, host, port) per demo backend
    int8: bool = True  # serve model.int8.onnx (made from model.onnx if missing)
    milvus_port: int | None = None  # start milvus-lite there (`--cache milvus`)


MILVUS_PORT = 19530
MILVUS_DB = Path(".work/milvus-lite/cache.db")  # relative to the working directory


def _say(msg: str) -> None:
    print(f"router-svc up: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- planning


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"<file>: cannot read {path}: {e.strerror or e}"], path) from e
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ConfigError([f"<yaml>: {e}"], path) from e
    if not isinstance(data, dict):
        raise ConfigError(["<top level>: expected a mapping; start from config.example.yaml"], path)
    return data


def plan(opts: UpOptions) -> Plan:
    source = Path(opts.config) if opts.config else EXAMPLE_CONFIG
    data = _load_yaml(source)
    model_dir = Path(opts.model_dir).expanduser().resolve()
    listen = dict(data.get("listen") or {})
    host = str(listen.get("host", "127.0.0.1"))
    port = opts.port if opts.port is not None else int(listen.get("port", 8801))
    data["listen"] = {**listen, "host": host, "port": port}
    data["tokenizer"] = str(model_dir / "tokenizer.json")
    if opts.triton_url:
        data["triton"] = {**(data.get("triton") or {}), "url": opts.triton_url}

    demo: list[tuple[str, str, int]] = []
    models = data.get("model_config")
    if not opts.no_backends and isinstance(models, dict):
        rewired = {}
        for i, (key, entry) in enumerate(models.items()):
            entry = dict(entry or {})
            backend = dict(entry.get("backend") or {})
            name = str(backend.get("model") or key)
            bport = opts.backend_base_port + i
            backend["base_url"] = f"http://127.0.0.1:{bport}/v1"
            backend.pop("api_key_env", None)  # the demo backends take no key
            entry["backend"] = backend
            rewired[key] = entry
            demo.append((name, "127.0.0.1", bport))
        data["model_config"] = rewired

    milvus_port = None
    if opts.cache == "milvus":  # the shared cache, on an embedded Milvus for a try-out
        milvus_port = MILVUS_PORT
        cache = dict(data.get("cache") or {})
        data["cache"] = {**cache, "enabled": True, "backend": "milvus",
                         "milvus": {**(cache.get("milvus") or {}),
                                    "uri": f"http://127.0.0.1:{milvus_port}"}}

    # Validate now (fast, before a build or Triton start); the real parse follows with the URL.
    parse_config(data, source.resolve().parent, source=source)
    return Plan(data=data, base_dir=source.resolve().parent, source=source, host=host, port=port,
                model_dir=model_dir, triton_url=opts.triton_url, demo=demo, int8=opts.int8,
                milvus_port=milvus_port)


def _port_taken(host: str, port: int) -> bool:
    """Whether a listening socket holds ``host:port`` (SO_REUSEADDR, as aiohttp binds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _router_port_error(p: Plan) -> PortInUse:
    return PortInUse(f"port {p.port} ({p.host}) is already in use, so the router cannot listen "
                     f"there; pass --port to use another (or stop what holds it)")


def check_ports(p: Plan) -> None:
    if _port_taken(p.host, p.port):
        raise _router_port_error(p)
    for name, host, port in p.demo:
        if _port_taken(host, port):
            raise PortInUse(
                f"port {port} is already in use, so the demo backend {name!r} cannot listen "
                f"there; pass --backend-base-port to move the demo backends "
                f"({len(p.demo)} consecutive ports), or --no-backends to use the config's own")
    if p.milvus_port is not None and _port_taken("127.0.0.1", p.milvus_port):
        raise PortInUse(f"port {p.milvus_port} is already in use, so the embedded Milvus "
                        f"(--cache milvus) cannot listen there; stop what holds it")


# ---------------------------------------------------------------- the model


def model_missing(model_dir: Path) -> list[str]:
    return [f for f in MODEL_FILES if not (model_dir / f).is_file()]


def ensure_model(model_dir: Path, data_dir: Path) -> None:
    """Build the model into ``model_dir`` if a file is missing (into a sibling folder first,
    so an interrupted or failed build never leaves a half-written model behind)."""
    missing = model_missing(model_dir)
    if not missing:
        return
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        from export.build import BuildError

        raise BuildError(
            f"{model_dir} has no {' or '.join(missing)}, and building the model needs torch "
            f"and transformers, which are not installed. Install them with:\n  {TORCH_PIP}\n"
            f"or point --model-dir at a built model, or --triton-url at a running Triton."
        ) from None
    from export.build import BuildOptions, build

    _say(f"{model_dir} has no {' or '.join(missing)}: building the model first "
         f"(a few minutes on CPU; progress follows)")
    tmp = model_dir.parent / f".{model_dir.name}.building"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        build(BuildOptions(out_dir=tmp, data_dir=Path(data_dir)))
        model_dir.mkdir(parents=True, exist_ok=True)
        for f in tmp.iterdir():
            f.replace(model_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_exemplars(model_dir: Path, data_dir: Path) -> None:
    """``category_exemplars.npz`` for a model built before the build wrote it (the category's
    exemplar vote; about 2 minutes on 2 cores). Skipped, with the router's own note at start,
    when the model has no build report (not built here) or the data is not there."""
    from router_svc.classify.exemplars import FILE_NAME

    if ((model_dir / FILE_NAME).is_file() or not (model_dir / "build_report.json").is_file()
            or not (Path(data_dir) / "mmlu_pro" / "questions.jsonl").is_file()):
        return
    from export.exemplars import main as write_exemplars

    _say(f"{model_dir} has no {FILE_NAME} (built before the build wrote it): writing it "
         "(about 2 minutes on CPU)")
    write_exemplars(["--model-dir", str(model_dir), "--data-dir", str(data_dir)])


def ensure_int8(model_dir: Path) -> None:
    """``model.int8.onnx`` quantised from ``model.onnx`` unless the one there was made from
    this very ``model.onnx`` with the present scheme (seconds; no torch)."""
    from router_svc.triton.repository import INT8_MODEL_FILE, int8_is_current

    if int8_is_current(model_dir):
        return
    from export.onnx_export import write_int8

    target = model_dir / INT8_MODEL_FILE
    why = "out of date" if target.is_file() else "missing"
    print(f"router-svc: {target} {why}: quantising {model_dir / 'model.onnx'} (int8, dynamic, "
          "per-channel weights)", file=sys.stderr, flush=True)
    write_int8(model_dir)


def served_model_file(model_dir: Path, int8: bool) -> str:
    """The file in ``model_dir`` Triton serves: ``model.onnx``, or with ``int8`` the int8 file,
    quantised first if missing."""
    from router_svc.triton.repository import model_file_for

    if int8:
        ensure_int8(model_dir)
    return model_file_for(int8)


# ---------------------------------------------------------------- running


def banner(p: Plan, config: Config, triton_url: str, triton_http: str | None) -> str:
    shown = "127.0.0.1" if p.host in ("0.0.0.0", "::", "") else p.host
    base = f"http://{shown}:{p.port}"
    alias = config.routing.alias
    top_math = config.category("math")
    math_model = top_math.ranked()[0].model if top_math and top_math.model_scores else "?"

    def chat(text: str, *, stream: bool = False) -> str:
        body: dict[str, Any] = {"model": alias, "messages": [{"role": "user", "content": text}]}
        if stream:
            body["stream"] = True
        flags = "-N" if stream else "-i"
        return (f"curl -s {flags} {base}/v1/chat/completions -H 'Content-Type: application/json' "
                f"-d {shlex.quote(json.dumps(body, ensure_ascii=False))}")

    lines = [
        "",
        "router-svc is up",
        f"  router    {base}/v1   (OpenAI-compatible; model {alias!r} routes)",
        f"  Triton    gRPC {triton_url}" + (f", HTTP {triton_http}" if triton_http else ""),
    ]
    if p.demo:
        lines.append("  backends  demo servers that echo the prompt and say which model they are:")
        lines += [f"            {n:<18} http://{h}:{port}/v1" for n, h, port in p.demo]
    else:
        lines.append("  backends  from the config:")
        lines += [f"            {k:<18} {m.backend.base_url}"
                  for k, m in config.model_config.items()]
    lines += [
        f"  config    {p.source}",
        "",
        f"# 1. a math question -> {math_model} when the category is confident enough, else the "
        f"default model (see the x-router-* headers)",
        chat("What is the derivative of f(x) = x³ + 2x² - 5x + 7?"),
        f"# 2. a greeting: no confident category -> default model {config.default_model}",
        chat("Hello, how are you today?"),
        "# 3. a credit card number: refused with finish_reason content_filter",
        chat("My credit card number is 1234-5678-9012-3456. Can you help me with my account?"),
        "# 4. an e-mail address: allowed by the policy, routed normally",
        chat("Please send the report to john.doe@company.com"),
        "# streaming (server-sent events, passed through chunk by chunk)",
        chat("Explain the Pythagorean theorem briefly.", stream=True),
        "# the decision without proxying: category, confidence, PII entities, chosen model",
        f"curl -s {base}/api/v1/classify -H 'Content-Type: application/json' -d "
        + shlex.quote(json.dumps({"messages": [{"role": "user", "content": CLASSIFY_EXAMPLE}]})),
        f"curl -s {base}/v1/models",
        f"curl -s {base}/metrics | grep '^router_'",
        "",
        "Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


async def _serve(p: Plan, stop: asyncio.Event) -> None:
    from aiohttp import web

    from router_svc.doors.http.app import create_app
    from router_svc.ops.demo_backends import run_backends
    from router_svc.triton.launcher import TritonServer
    from router_svc.triton.repository import model_file_for

    triton: TritonServer | None = None
    supervisor: asyncio.Task[None] | None = None
    backends = None
    runner: web.AppRunner | None = None
    milvus = None
    try:
        if p.milvus_port is not None:
            from router_svc.cache.milvus_server import MilvusLiteServer

            milvus = MilvusLiteServer(MILVUS_DB, port=p.milvus_port)
            await asyncio.to_thread(milvus.start)
            _say(f"Milvus (milvus-lite) on {milvus.uri}, data in {MILVUS_DB}")
        triton_url, triton_http = p.triton_url, None
        if triton_url is None:
            model_file = model_file_for(p.int8)
            precision = "int8; --fp32 for model.onnx" if p.int8 else "fp32"
            _say(f"starting Triton (CPU, Python backend) with {p.model_dir / model_file} "
                 f"({precision})")
            t0 = time.monotonic()
            triton = TritonServer(p.model_dir, model_file=model_file,
                                  startup_timeout_s=180,
                                  avoid_ports=[p.port, *(port for _, _, port in p.demo)])
            await triton.astart()
            triton_url, triton_http = triton.grpc_url, triton.http_url
            _say(f"Triton ready on {triton_url} (gRPC) in {time.monotonic() - t0:.0f} s")
            supervisor = asyncio.get_running_loop().create_task(triton.supervise(stop, _say))
        if stop.is_set():
            return
        if p.demo:
            try:
                backends = await run_backends(p.demo)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise PortInUse(f"a demo backend port is in use ({e}); pass "
                                    f"--backend-base-port to move them") from None
                raise
            _say("demo backends on " + ", ".join(f"{n}:{port}" for n, _, port in p.demo))

        data = {**p.data, "triton": {**(p.data.get("triton") or {}), "url": triton_url}}
        config = parse_config(data, p.base_dir, source=p.source)
        for w in config.warnings:
            log.warning("config: %s", w)
        app = create_app(config, startup_timeout_s=60)
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                               shutdown_timeout=5.0)
        await runner.setup()  # connects to Triton and reads the model's labels
        site = web.TCPSite(runner, p.host, p.port)
        try:
            await site.start()
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise _router_port_error(p) from None
            raise
        print(banner(p, config, triton_url, triton_http), flush=True)
        await stop.wait()
        _say("stopping")
    finally:
        if runner is not None:
            await runner.cleanup()
        if backends is not None:
            await backends.cleanup()
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        if triton is not None:
            await triton.astop()
            _say("Triton stopped")
        if milvus is not None:
            await asyncio.to_thread(milvus.stop)


async def _main(p: Plan) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await _serve(p, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def up(opts: UpOptions) -> int:
    import uvloop

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        p = plan(opts)
        check_ports(p)
        if p.triton_url is None:
            ensure_model(p.model_dir, opts.data_dir)
            ensure_exemplars(p.model_dir, opts.data_dir)
            if p.int8:
                ensure_int8(p.model_dir)
        elif not (p.model_dir / "tokenizer.json").is_file():
            raise FileNotFoundError(
                f"{p.model_dir / 'tokenizer.json'} not found: with --triton-url, --model-dir "
                f"must hold the tokenizer.json of the model that Triton serves")
        uvloop.run(_main(p))
    except PortInUse as e:
        print(f"router-svc: error: {e}", file=sys.stderr)
        return 2
    return 0
