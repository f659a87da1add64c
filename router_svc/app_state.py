"""What lives on the aiohttp application (``app[KEY]``): the config, the metrics, the
pipeline and the resources it holds. Set by ``router_svc.resources`` and ``create_app``,
read by the handlers in ``router_svc.app``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from router_svc.cache_flow import CacheFront
from router_svc.config import Config
from router_svc.metrics import Metrics
from router_svc.pipeline import Router
from router_svc.proxy import Proxy
from router_svc.triton_client import ModelInfo, TritonClient

if TYPE_CHECKING:
    from router_svc.extproc import ExtProcServer

CONFIG = web.AppKey("config", Config)
METRICS = web.AppKey("metrics", Metrics)
ROUTER = web.AppKey("router", Router)
PROXY = web.AppKey("proxy", Proxy)
TRITON = web.AppKey("triton", TritonClient)
MODEL_INFO = web.AppKey("model_info", ModelInfo)
CACHE = web.AppKey("cache", CacheFront)
# The Envoy ext_proc gRPC server when it runs beside the HTTP proxy (extproc.ExtProcServer).
EXTPROC: web.AppKey[ExtProcServer] = web.AppKey("extproc")
