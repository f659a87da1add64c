"""What lives on the aiohttp application: the started ``Runtime`` (config, metrics, router,
cache, backend client), under one typed key."""

from __future__ import annotations

from aiohttp import web

from router_svc.flow.runtime import Runtime

RUNTIME = web.AppKey("runtime", Runtime)
