"""``router-svc serve`` and ``router-svc extproc``: one ``Runtime``, the HTTP door on
``listen``, and the Envoy ext_proc server beside it when asked. Both doors share the runtime
(one Triton client, batcher, cache and set of metrics); neither owns the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from router_svc.config.loading import Config, load_config
from router_svc.doors.extproc.server import ExtProcServer
from router_svc.doors.http.app import create_app
from router_svc.flow.runtime import Runtime

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("router_svc")


@dataclass
class Serving:
    runtime: Runtime
    http_port: int
    extproc: ExtProcServer | None


@contextlib.asynccontextmanager
async def serving(config: Config, *, host: str | None = None, port: int | None = None,
                  extproc: bool | None = None, extproc_port: int | None = None,
                  tokenizer: Path | None = None, startup_timeout_s: float = 60.0,
                  shutdown_timeout_s: float | None = None,
                  span_exporter: SpanExporter | None = None) -> AsyncIterator[Serving]:
    """The router up until the block ends. ``port``/``extproc_port`` 0: a free one;
    ``extproc`` None: ``extproc.enabled``. On the way out the ext_proc server stops first,
    giving streams in flight ``extproc.grace_s``, then the HTTP door drains, then the runtime
    stops (the last spans flushed). ``span_exporter``: spans there instead of OTLP (tests)."""
    runtime = Runtime(config, tokenizer=tokenizer, startup_timeout_s=startup_timeout_s,
                      span_exporter=span_exporter)
    with_extproc = config.extproc.enabled if extproc is None else extproc
    async with runtime.running():
        runner = web.AppRunner(
            create_app(config, runtime=runtime), handler_cancellation=True, access_log=None,
            shutdown_timeout=shutdown_timeout_s or max(60.0, config.extproc.grace_s + 5))
        await runner.setup()
        ext: ExtProcServer | None = None
        try:
            if with_extproc:
                ext = ExtProcServer(runtime)
                await ext.start(config.extproc.host,
                                config.extproc.port if extproc_port is None else extproc_port)
            site = web.TCPSite(runner, config.listen.host if host is None else host,
                               config.listen.port if port is None else port)
            await site.start()
            bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            yield Serving(runtime, bound, ext)
        finally:
            if ext is not None:
                await ext.stop(config.extproc.grace_s)
            await runner.cleanup()


async def _run(config: Config, extproc: bool | None, extproc_port: int | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serving(config, extproc=extproc, extproc_port=extproc_port) as s:
        # What exists now lives as long as the process: the garbage collector need not walk
        # it again on every full collection while requests are served.
        gc.collect()
        gc.freeze()
        log.info("router listening on http://%s:%d", config.listen.host, s.http_port)
        await stop.wait()
        log.info("stopping")


def serve(config_path: Path, *, extproc: bool | None = None,
          extproc_port: int | None = None) -> int:
    """``router-svc serve`` (ext_proc too when ``extproc.enabled``) and ``router-svc extproc``
    (``extproc=True``: the ext_proc server, with the HTTP door beside it for health,
    readiness, metrics and the OpenAI routes)."""
    import uvloop

    config = load_config(config_path)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for w in config.warnings:
        log.warning("config: %s", w)
    uvloop.run(_run(config, extproc, extproc_port))
    return 0
