"""Fixtures shared by the door tests: Envoy in front of a router's ext_proc server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from router_svc.config.loading import parse_config
from router_svc.doors.extproc.server import ExtProcServer
from router_svc.ops import envoy_launcher
from router_svc.ops.serve import Serving, serving
from router_svc.triton.launcher import free_port
from tests.conftest import BACKEND_NAMES, ROOT, example_config_data, wire_config

MODELS = tuple(BACKEND_NAMES)


@dataclass
class Stack:
    envoy: envoy_launcher.EnvoyProcess
    http: str  # the HTTP door beside it (same runtime: router, cache and metrics)
    serving: Serving

    @property
    def url(self) -> str:
        return self.envoy.url

    @property
    def extproc(self) -> ExtProcServer:
        assert self.serving.extproc is not None
        return self.serving.extproc


@pytest.fixture
async def envoy_stack(trained_triton, trained_model_dir, backends, tmp_path
                      ) -> AsyncIterator[Callable[..., Any]]:
    """``await envoy_stack(mutate=None, failure_mode_allow=None, extproc_up=True, **config)``:
    the router app with its ext_proc server, and Envoy in front of it. ``extproc_up=False``
    points Envoy at a port where nothing listens (the ext_proc server down);
    ``span_exporter``: the router's spans go there (``serving.runtime.tracing``)."""
    stack = contextlib.AsyncExitStack()
    envoys: list[envoy_launcher.EnvoyProcess] = []

    async def make(mutate: Callable[[dict], None] | None = None, *,
                   failure_mode_allow: bool | None = None, extproc_up: bool = True,
                   models: dict[str, tuple[str, int]] | None = None,
                   span_exporter: Any = None, **overrides: Any) -> Stack:
        data = wire_config(example_config_data(), trained_triton.grpc_url, backends,
                           trained_model_dir / "tokenizer.json")
        data.update(overrides)
        data["extproc"] = {"port": 0, **data.get("extproc", {})}
        if mutate:
            mutate(data)
        s = await stack.enter_async_context(serving(
            parse_config(data, ROOT), host="127.0.0.1", port=0, extproc=extproc_up,
            startup_timeout_s=10, shutdown_timeout_s=5, span_exporter=span_exporter))
        http = f"http://127.0.0.1:{s.http_port}"
        ext_port = s.extproc.port if s.extproc is not None else free_port()
        addrs = models or {m: ("127.0.0.1", backends[BACKEND_NAMES[m]].port) for m in MODELS}
        to = envoy_launcher.Addresses(free_port(), free_port(), ("127.0.0.1", ext_port), addrs)
        config = envoy_launcher.rewrite(envoy_launcher.load(), to,
                                        failure_mode_allow=failure_mode_allow)
        envoy = envoy_launcher.EnvoyProcess(config, tmp_path / f"envoy{len(envoys)}")
        envoys.append(envoy)
        await asyncio.to_thread(envoy.start)
        return Stack(envoy, http, s)

    try:
        yield make
    finally:
        for e in envoys:
            e.stop()
        await stack.aclose()
