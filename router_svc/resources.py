"""The app's resources, each started and stopped by one aiohttp ``cleanup_ctx``: the backend
session (``proxy_ctx``), the Triton client, batcher and pipeline (``classifier_ctx``, which
waits for Triton and checks the config's categories against the served model), the semantic
cache (``cache_ctx``) and the Envoy ext_proc server (``extproc_ctx``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from router_svc.app_state import CACHE, EXTPROC, METRICS, MODEL_INFO, PROXY, ROUTER, TRITON
from router_svc.batcher import Batcher, BatchStats
from router_svc.cache_flow import model_id, open_cache
from router_svc.classifier import Classifier
from router_svc.config import Config, ConfigError
from router_svc.pipeline import Router
from router_svc.proxy import Proxy
from router_svc.tokenization import TextTokenizer
from router_svc.triton_client import TritonClient


def check_labels(config: Config, model_categories: tuple[str, ...]) -> None:
    """The model is the authority on labels: a category it cannot output is a config error."""
    for i, c in enumerate(config.categories):
        if c.name not in model_categories:
            raise ConfigError([
                f"categories[{i}].name: {c.name!r} is not a category of the served model "
                f"(it knows: {', '.join(model_categories)}); rename or remove it"])


def _tokenizer_path(config: Config, tokenizer: Path | None) -> Path:
    if tokenizer is not None:
        return tokenizer
    if config.tokenizer is not None:
        return config.tokenizer
    return Path("model_repository/semantic_router/1/tokenizer.json")


def classifier_ctx(config: Config, tokenizer: Path | None, startup_timeout_s: float):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        metrics = app[METRICS]
        client = TritonClient(config.triton.url, config.triton.model_name,
                              timeout_s=config.triton.timeout_s)
        app[TRITON] = client
        try:
            info = await _wait_for_model(client, startup_timeout_s)
            check_labels(config, info.categories)
            app[MODEL_INFO] = info
            tok = TextTokenizer(_tokenizer_path(config, tokenizer))
        except BaseException:
            await client.close()  # start-up failed: do not leak the gRPC channel
            raise
        stats = BatchStats(
            on_batch=lambda rows, tokens, s: metrics.observe_triton_batch(s, rows, tokens),
            on_depth=metrics.queue_depth.set,
        )

        async def infer(ids, mask):
            out = await client.infer(ids, mask)
            return out.category_logits, out.pii_logits, out.embedding

        b = config.batching
        batcher = Batcher(infer, max_batch_size=min(b.max_batch_size, info.max_batch_size),
                          max_wait_s=b.max_wait_ms / 1000, max_queue=b.max_queue,
                          max_batch_tokens=b.max_batch_tokens, stats=stats)
        await batcher.start()
        pm = config.classifier.pii_model
        clf = Classifier(tok, batcher, list(info.categories), list(info.pii_tags),
                         pii_threshold=pm.threshold,
                         window=min(pm.window_tokens, info.max_sequence_length),
                         stride=pm.window_stride)
        app[ROUTER] = Router(config, clf, metrics)
        try:
            yield
        finally:
            await batcher.stop()
            await client.close()

    return ctx


async def _wait_for_model(client: TritonClient, timeout_s: float):
    """Triton may still be starting (compose): retry until the model answers or time is up.

    Triton still down when the time is up fails start-up (``serve`` exits with this message)
    rather than serving without a classifier; once started, a Triton outage is handled per
    request by ``classifier.on_error`` and the router reconnects by itself.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await client.load_model_info()
        except Exception as e:
            if not _retryable(e):
                raise
            if time.monotonic() >= deadline:  # a TritonError: say where we looked
                raise type(e)(
                    f"Triton at {client.url} (triton.url) did not serve model "
                    f"{client.model_name!r} within {timeout_s:g}s: {e}", e.status) from e
            await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def _retryable(e: Exception) -> bool:
    from router_svc.triton_client import TritonError

    return isinstance(e, TritonError)


def cache_ctx(config: Config, tokenizer: Path | None):
    """The semantic cache (``cache.enabled``) for the served model's embedding."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if not config.cache.enabled:
            yield
            return
        info = app[MODEL_INFO]
        mid = model_id(info.name, info.embedding_dim, _tokenizer_path(config, tokenizer))
        async with open_cache(config.cache, dim=info.embedding_dim, model=mid,
                              metrics=app[METRICS]) as cache:
            front = app[CACHE]
            front.cache = cache
            try:
                yield
            finally:
                front.cache = None

    return ctx


def proxy_ctx(config: Config):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        p = config.proxy
        proxy = Proxy.create(connect_timeout_s=p.connect_timeout_s,
                             read_timeout_s=p.read_timeout_s)
        app[PROXY] = proxy
        try:
            yield
        finally:
            await proxy.close()

    return ctx


def extproc_ctx(config: Config, port: int | None):
    """The Envoy ext_proc server over this app's router, cache and metrics: one pipeline,
    two front doors. Stopped first on the way out, giving streams in flight
    ``extproc.grace_s``."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        from router_svc.extproc import Door, ExtProcServer

        server = ExtProcServer(Door(config, app[ROUTER], app[CACHE], app[METRICS]))
        await server.start(config.extproc.host, config.extproc.port if port is None else port)
        app[EXTPROC] = server
        try:
            yield
        finally:
            await server.stop(config.extproc.grace_s)

    return ctx
