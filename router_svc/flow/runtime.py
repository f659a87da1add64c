"""What both doors share, started and stopped once: the backend client, the Triton client,
batcher, classifier and ``Router``, the semantic cache, the metrics and the request flow.

``async with Runtime(config).running() as rt:`` starts everything in order (waiting for
Triton, checking the config's categories against the served model) and stops it in reverse.
No web framework here: the HTTP door and the ext_proc server are each handed a started one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from router_svc.backend.proxy import Proxy
from router_svc.cache.front import (
    CacheFront,
    model_id,
    open_cache,
    open_milvus_cache,
    open_verifier,
)
from router_svc.classify import exemplars as exemplar_files
from router_svc.classify import recognisers
from router_svc.classify.batcher import Batcher, BatchStats
from router_svc.classify.classifier import Classifier
from router_svc.classify.exemplars import Exemplars, ExemplarsError
from router_svc.classify.tokenization import TextTokenizer
from router_svc.config.loading import Config, ConfigError
from router_svc.core.auth import Gate
from router_svc.core.metrics import Metrics
from router_svc.core.pipeline import Router
from router_svc.flow.request import RequestFlow
from router_svc.tracing.provider import Tracing
from router_svc.triton.client import ModelContractError, ModelInfo, TritonError
from router_svc.triton.fleet import TritonFleet

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

# Triton calls in flight per server: one runs while the next is sent (classify/batcher.py).
CALLS_PER_TRITON = 2
DEFAULT_TOKENIZER = Path("model_repository/semantic_router/1/tokenizer.json")


def check_labels(config: Config, model_categories: tuple[str, ...]) -> None:
    """The model is the authority on labels: a category it cannot output is a config error."""
    for i, c in enumerate(config.categories):
        if c.name not in model_categories:
            raise ConfigError([
                f"categories[{i}].name: {c.name!r} is not a category of the served model "
                f"(it knows: {', '.join(model_categories)}); rename or remove it"])


def tokenizer_path(config: Config, tokenizer: Path | None = None) -> Path:
    return tokenizer or config.tokenizer or DEFAULT_TOKENIZER


def one_blas_thread() -> None:
    """Keep BLAS to one thread in this process. The router's BLAS calls (the exemplars' vote
    and the cache's exact search: matrix-vector products, well under a millisecond on one
    thread) are small, and OpenBLAS's default of a thread per core, spinning after each call,
    takes the cores Triton and onnxruntime need on the same host: measured, it doubled a
    ~500-token classification on 2 cores and made a semantic cache hit slower than a miss
    (perf/README.md, "Classification latency by prompt length")."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


class Runtime:
    """The started parts. ``router``, ``triton``, ``model_info`` and ``proxy`` are set while
    ``running()``; ``cache`` and ``metrics`` exist from construction (the cache disabled
    until it starts)."""

    def __init__(self, config: Config, *, tokenizer: Path | None = None,
                 startup_timeout_s: float = 60.0,
                 span_exporter: SpanExporter | None = None) -> None:
        self.config = config
        # Traces (``tracing``): started first, flushed and shut down last; ``span_exporter``
        # replaces OTLP (tests: the SDK's InMemorySpanExporter).
        self.tracing = Tracing(config.tracing, exporter=span_exporter)
        self.tokenizer = tokenizer_path(config, tokenizer)
        self.startup_timeout_s = startup_timeout_s
        self.metrics = Metrics.create(models=[*config.model_config, config.routing.alias],
                                      categories=None)
        self.cache = CacheFront(config.cache, None)
        self.gate = Gate.for_config(config)  # a bad keys file fails here, at start-up
        self.triton: TritonFleet | None = None
        self.model_info: ModelInfo | None = None
        self.router: Router | None = None
        self.proxy: Proxy | None = None
        self.flow: RequestFlow | None = None
        self.model_problem: str | None = None  # set while the served model does not fit
        self._bad_version: str | None = None
        self._reload_lock = asyncio.Lock()
        self._classifier_obj: Classifier | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Runtime]:
        one_blas_thread()
        async with contextlib.AsyncExitStack() as stack:
            self.tracing.start()
            stack.push_async_callback(self.tracing.shutdown)
            p = self.config.proxy
            self.proxy = Proxy.create(limit=p.max_connections,
                                      connect_timeout_s=p.connect_timeout_s,
                                      read_timeout_s=p.read_timeout_s,
                                      pool_timeout_s=p.pool_timeout_s)
            stack.push_async_callback(self.proxy.close)
            await stack.enter_async_context(self._classifier())
            await stack.enter_async_context(self._cache())
            assert self.router is not None
            self.flow = RequestFlow(self.router, self.cache, self.metrics, self.gate,
                                    recorder=self.tracing.recorder)
            (log.info if self.gate.enabled else log.warning)(self.gate.describe())
            yield self

    def triton_servers(self) -> dict[str, int]:
        """For ``/ready``: the servers of ``triton.url`` up and down (skipped until probed)."""
        members = self.triton.members if self.triton is not None else []
        down = sum(m.down for m in members)
        return {"up": len(members) - down, "down": down}

    async def ready(self) -> bool:
        return (self.triton is not None and self.model_problem is None
                and await self.triton.ready())

    def cache_state(self) -> str:
        """For ``/ready``: ``off``, ``ok``, or ``degraded`` (a shared cache that is being
        bypassed because its store is down or slow; the router still serves)."""
        cache = self.cache.cache
        if cache is None:
            return "off"
        return "degraded" if getattr(cache, "degraded", False) else "ok"

    async def _model_changed(self, version: str) -> None:
        """Triton serves another version of the model: re-read its labels before its outputs
        are decoded. Labels the config cannot route fail every classification (the
        ``on_error`` policy answers) and ``/ready``, until a model that fits is served."""
        async with self._reload_lock:
            if self.model_info is not None and self.model_info.version == version:
                return  # another batch re-read them meanwhile
            if self._bad_version == version:
                raise ModelContractError(self.model_problem or "model labels do not fit")
            assert self.triton is not None
            info = await self.triton.load_model_info()
            try:
                check_labels(self.config, info.categories)
            except ConfigError as e:
                self._bad_version = version
                self.model_problem = (f"Triton serves version {version} of the model, whose "
                                      f"labels the config cannot route: {e.problems[0]}")
                log.error("%s", self.model_problem)
                raise ModelContractError(self.model_problem) from None
            clf = self._classifier_obj
            if clf is not None:
                clf.categories, clf.pii_tags = list(info.categories), list(info.pii_tags)
                pm = self.config.classifier.pii_model
                clf.window = min(pm.window_tokens, info.max_sequence_length)
                clf.memory.clear()  # texts read by the old version are read again
                if clf.exemplars is not None:
                    # Built from the old version's embedding and label order: the head decides
                    # alone until a router start loads the new build's file.
                    clf.exemplars = None
                    log.warning("classifier: category exemplars dropped (they belong to the "
                                "model version they were built with); restart the router to "
                                "load the new build's")
            old = self.model_info
            self.model_info, self.model_problem, self._bad_version = info, None, None
            removed = await self.cache.flush() if self.cache.enabled else 0
            log.warning("Triton now serves version %s of %s (was %s): labels re-read; %d "
                        "cached answers dropped (their embeddings came from the old version)",
                        version, info.name, old.version if old else "?", removed)

    @contextlib.asynccontextmanager
    async def _classifier(self) -> AsyncIterator[None]:
        config, metrics = self.config, self.metrics
        t = config.triton
        client = TritonFleet(t.url, t.model_name, timeout_s=t.timeout_s,
                             resolve_interval_s=t.resolve_interval_s)
        self.triton = client
        try:
            info = await wait_for_model(client, self.startup_timeout_s)
            check_labels(config, info.categories)
            self.model_info = info
            tok = TextTokenizer(self.tokenizer)
            exemplars = open_exemplars(config.classifier.category_model.exemplars,
                                       Path(self.tokenizer).parent, info)
        except BaseException:
            await client.close()  # start-up failed: do not leak the gRPC channel
            raise
        stats = BatchStats(
            on_batch=lambda rows, tokens, s: metrics.observe_triton_batch(s, rows, tokens),
            on_depth=metrics.queue_depth.set,
        )

        async def infer(ids, mask):
            out = await client.infer(ids, mask)
            if out.version and self.model_info and out.version != self.model_info.version:
                await self._model_changed(out.version)  # labels first, then decoding
            return out.category_logits, out.pii_logits, out.embedding

        b = config.batching
        batcher = Batcher(infer, max_batch_size=min(b.max_batch_size, info.max_batch_size),
                          max_wait_s=b.max_wait_ms / 1000, max_queue=b.max_queue,
                          max_batch_tokens=b.max_batch_tokens,
                          max_job_tokens=b.max_job_tokens,
                          max_queue_wait_s=b.max_queue_wait_ms / 1000, stats=stats,
                          max_inflight=CALLS_PER_TRITON * len(client.members))
        # Each Triton of a fleet gets as many calls at once as a lone one does.
        client.on_size = lambda n: batcher.set_max_inflight(CALLS_PER_TRITON * n)
        for state, down in (("up", False), ("down", True)):
            metrics.triton_servers.labels(state).set_function(
                lambda down=down: sum(m.down == down for m in client.members))
        await batcher.start()
        pm = config.classifier.pii_model
        if pm.recognisers:
            recognisers.prepare()
        clf = Classifier(tok, batcher, list(info.categories), list(info.pii_tags),
                         pii_threshold=pm.threshold, pii_type_thresholds=pm.type_thresholds,
                         window=min(pm.window_tokens, info.max_sequence_length),
                         stride=pm.window_stride, recognisers=pm.recognisers,
                         memory_entries=pm.memory_entries, exemplars=exemplars)
        self.router = Router(config, clf, metrics)
        self._classifier_obj = clf
        try:
            yield
        finally:
            await batcher.stop()
            await client.close()

    @contextlib.asynccontextmanager
    async def _cache(self) -> AsyncIterator[None]:
        """The semantic cache (``cache.enabled``) for the served model's embedding."""
        if not self.config.cache.enabled:
            yield
            return
        info = self.model_info
        assert info is not None
        mid = model_id(info.name, info.embedding_dim, self.tokenizer)
        opener = open_milvus_cache if self.config.cache.backend == "milvus" else open_cache
        async with opener(self.config.cache, dim=info.embedding_dim, model=mid,
                          metrics=self.metrics) as cache:
            with open_verifier(self.config.cache.verifier, self.tokenizer) as verifier:
                self.cache.cache = cache
                self.cache.verifier, self.cache.metrics = verifier, self.metrics
                try:
                    yield
                finally:
                    self.cache.cache = self.cache.verifier = None


async def wait_for_model(client: TritonFleet, timeout_s: float) -> ModelInfo:
    """Triton may still be starting (compose): retry until the model answers or time is up.

    Triton still down when the time is up fails start-up (``serve`` exits with this message)
    rather than serving without a classifier; once started, a Triton outage is handled per
    request by ``classifier.on_error`` and the router reconnects by itself.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await client.load_model_info()
        except TritonError as e:
            if time.monotonic() >= deadline:  # say where we looked
                raise type(e)(
                    f"Triton at {client.url} (triton.url) did not serve model "
                    f"{client.model_name!r} within {timeout_s:g}s: {e}", e.status) from e
            await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def open_exemplars(setting: str, model_dir: Path, info: ModelInfo) -> Exemplars | None:
    """``classifier.category_model.exemplars`` for the served model; a file that is missing
    (named explicitly) or does not fit the model is a ``ConfigError`` at start-up."""
    try:
        path = exemplar_files.exemplar_file(setting, model_dir)
        if path is None:
            if setting == "auto":
                log.info("classifier: no %s in %s: the category head decides alone "
                         "(router-svc model exemplars --model-dir DIR writes one)",
                         exemplar_files.FILE_NAME, model_dir)
            return None
        ex = exemplar_files.load_exemplars(path, info.categories, info.embedding_dim)
    except ExemplarsError as e:
        raise ConfigError([f"classifier.category_model.exemplars: {e}"]) from None
    log.info("classifier: the category head refined by %d exemplars from %s (k %d, weight %g)",
             len(ex.vectors), path, ex.k, ex.weight)
    return ex
