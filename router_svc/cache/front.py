"""The semantic cache around one routed request, for the front door: no HTTP here.

``open_cache`` builds the in-process ``HnswCache`` for the served model (loading and saving
the snapshot, running maintenance); ``CacheFront`` plans, looks up and stores answers for
routed requests and says which ``x-router-cache*`` headers an answer carries. ``app.py``
renders what it decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router_svc.cache.capture import StreamCapture
from router_svc.cache.keys import Kind, cache_directives, cache_tenant, request_fingerprint
from router_svc.cache.pair_model import ModelVerifier, PairModel
from router_svc.cache.store import (
    CachedResponse,
    CachePlan,
    CacheStats,
    Hit,
    HnswCache,
    SemanticCache,
    plan_request,
    run_maintenance,
)
from router_svc.config.loading import CacheConfig, ConfigError, VerifierConfig
from router_svc.core import json_codec
from router_svc.core.auth import Caller
from router_svc.core.messages import usage_requested
from router_svc.core.metrics import Metrics
from router_svc.core.pipeline import Routed
from router_svc.core.selection import Decision
from router_svc.tracing.spans import span

log = logging.getLogger(__name__)

HEADER = "x-router-cache"
SIMILARITY_HEADER = "x-router-cache-similarity"
PARTITION_HEADER = "x-router-cache-partition"
REPEAT_HEADER = "x-router-cache-repeat"
_PARTITION = re.compile(r"[0-9a-f]{64}")


def model_id(model_name: str, embedding_dim: int, tokenizer: Path) -> str:
    """Names the embedding space: a snapshot made under another one is not loaded."""
    digest = hashlib.sha256(Path(tokenizer).read_bytes()).hexdigest()[:16]
    return f"{model_name}:{embedding_dim}:{digest}"


VERIFIER_FILE = "pair_verifier.onnx"  # written by export/pair_verifier.py next to the tokenizer


def verifier_path(config: VerifierConfig, tokenizer: Path) -> Path | None:
    """The cross-encoder file ``cache.verifier.model`` names, or None (text rules alone).

    "auto" takes the one next to the tokenizer when the model build wrote it; a path that is
    not a file is a ``ConfigError``."""
    if config.model == "off":
        return None
    if config.model == "auto":
        found = Path(tokenizer).parent / VERIFIER_FILE
        if found.is_file():
            return found
        log.info("cache: no %s next to %s: candidate hits are vetted by the text rules "
                 "(cache.verifier.model; `router-svc model build --pair-verifier` writes one)",
                 VERIFIER_FILE, tokenizer)
        return None
    path = Path(config.model)
    if not path.is_file():
        raise ConfigError([f"cache.verifier.model: {path} is not a file; give the "
                           f"{VERIFIER_FILE} written by the model build, \"auto\" or \"off\""])
    return path


@contextlib.contextmanager
def open_verifier(config: VerifierConfig, tokenizer: Path) -> Iterator[ModelVerifier | None]:
    path = verifier_path(config, tokenizer)
    if path is None:
        yield None
        return
    verifier = ModelVerifier(PairModel(path, tokenizer, threads=config.threads),
                             config.min_probability, config.timeout_s)
    log.info("cache: candidate hits verified by %s (serve at p >= %g)", path,
             config.min_probability)
    try:
        yield verifier
    finally:
        verifier.close()


@contextlib.asynccontextmanager
async def open_cache(config: CacheConfig, *, dim: int, model: str,
                     metrics: Metrics | None = None) -> AsyncIterator[HnswCache]:
    """The cache for the app's lifetime: snapshot loaded, sweeps and snapshots in the
    background, a last snapshot saved on the way out."""
    cache = HnswCache(dim, capacity=config.capacity, ttl_s=config.ttl_s, model_id=model,
                      events=metrics, tenant_quota=config.max_entries_per_tenant)
    snap = config.persistence_dir
    if snap is not None:
        await cache.load(snap)
    task = asyncio.get_running_loop().create_task(run_maintenance(
        cache, sweep_interval_s=min(60.0, config.ttl_s), snapshot_dir=snap,
        snapshot_interval_s=config.snapshot_interval_s))
    try:
        yield cache
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if snap is not None:
            await cache.save(snap)
        await cache.close()


@contextlib.asynccontextmanager
async def open_milvus_cache(config: CacheConfig, *, dim: int, model: str,
                            metrics: Metrics | None = None,
                            environ: Mapping[str, str] | None = None,
                            ) -> AsyncIterator[SemanticCache]:
    """The shared cache on Milvus (``cache.backend: milvus``) for the app's lifetime: the
    collection created or checked (one of another model or dimension is a ``ConfigError``),
    expired rows swept and an outage retried in the background. Milvus unreachable at start-up
    is not fatal: the cache starts degraded (bypassed) and resumes when Milvus answers."""
    from router_svc.cache.milvus import MilvusCache

    m = config.milvus
    env = os.environ if environ is None else environ
    cache = MilvusCache(
        m.uri, dim, collection=m.collection, model_id=model,
        token=env.get(m.token_env) if m.token_env else None,
        consistency_level=m.consistency_level, timeout_s=m.timeout_s,
        capacity=config.capacity, ttl_s=config.ttl_s,
        tenant_quota=config.max_entries_per_tenant,
        max_answer_bytes=config.max_answer_bytes, events=metrics)
    try:
        await cache.start()
    except BaseException:
        await cache.close()
        raise
    task = asyncio.get_running_loop().create_task(
        cache.maintain(sweep_interval_s=min(60.0, config.ttl_s)))
    try:
        yield cache
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await cache.close()


@dataclass(frozen=True)
class Remembered:
    """What the pipeline said about a request whose answer is in the cache: enough to look
    the answer up again for the very same request without tokenising or calling Triton."""

    plan: CachePlan
    decision: Decision
    headers: dict[str, str]  # the routed request's x-router-* headers


class RepeatMemo:
    """Request fingerprint -> ``Remembered``, least recently used out first.

    Only requests whose answer was stored or hit, that passed the PII check with nothing
    found, enter: an identical request gets the same classification (the model is
    deterministic), so skipping the model call skips no decision. The memo holds no answers:
    a repeat still looks the answer up in the cache, so TTL, eviction, flush and invalidation
    apply to it as to any lookup, and a miss there falls back to the whole pipeline.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._items: OrderedDict[str, Remembered] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, fingerprint: str) -> Remembered | None:
        item = self._items.get(fingerprint)
        if item is not None:
            self._items.move_to_end(fingerprint)
        return item

    def put(self, fingerprint: str, item: Remembered) -> None:
        self._items[fingerprint] = item
        self._items.move_to_end(fingerprint)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def forget(self, fingerprint: str) -> None:
        self._items.pop(fingerprint, None)

    def clear(self) -> None:
        self._items.clear()


def replay_mode(body: Mapping[str, Any]) -> tuple[bool, bool] | None:
    """``(stream, include_usage)`` of a request whose fields are otherwise known valid, or
    None when ``stream``/``stream_options`` are malformed (the full path reports the error)."""
    stream, options = body.get("stream", False), body.get("stream_options")
    if stream is None:
        stream = False
    if not isinstance(stream, bool) or (options is not None and not isinstance(options, dict)):
        return None
    return stream, usage_requested(body)


@dataclass
class Lookup:
    """What the cache did for one request: the plan (None: not cacheable) and a hit."""

    plan: CachePlan | None
    hit: Hit | None = None
    state: str = "off"  # x-router-cache: hit, miss or off
    # Set when a stored answer or a hit may be remembered for a repeat of this request.
    memo: tuple[str, Remembered] | None = None
    repeat: bool = False  # answered through the repeat memo (no model call)

    def headers(self) -> dict[str, str]:
        h = {HEADER: self.state}
        if self.plan is not None:
            h[PARTITION_HEADER] = self.plan.partition
        if self.hit is not None:
            h[SIMILARITY_HEADER] = f"{self.hit.similarity:.4f}"
        if self.repeat:
            h[REPEAT_HEADER] = "1"
        return h

    @property
    def may_store(self) -> bool:
        return self.plan is not None and self.plan.store and self.hit is None


class CacheFront:
    """The cache policy of the front door over a ``SemanticCache`` (None: disabled)."""

    def __init__(self, config: CacheConfig, cache: SemanticCache | None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.cache = cache
        self._env = os.environ if environ is None else environ
        self.memo = RepeatMemo(config.capacity)
        self.verifier: ModelVerifier | None = None  # the cross-encoder (cache.verifier)
        self.metrics: Metrics | None = None

    @property
    def enabled(self) -> bool:
        return self.cache is not None

    def tenant(self, caller: Caller, body: Mapping[str, Any]) -> str | None:
        return cache_tenant(caller.tenant, body, self.config.partition_by_user)

    def plan(self, routed: Routed, headers: Mapping[str, str],
             caller: Caller) -> CachePlan | None:
        if self.cache is None or routed.rejection is not None:
            return None
        return plan_request(
            enabled=True, target_model=routed.decision.model, body=routed.request.body,
            headers=headers, tenant=self.tenant(caller, routed.request.body),
            text=routed.category_text, embedding=routed.embedding,
            pii_found=bool(routed.entities or routed.decision.pii_types),
            pii_checked=routed.pii_status == "checked",
            store_pii_requests=self.config.store_pii_requests,
            masked=routed.decision.action == "mask")

    async def lookup(self, routed: Routed, headers: Mapping[str, str],
                     caller: Caller) -> Lookup:
        plan = self.plan(routed, headers, caller)
        if plan is None or self.cache is None:
            return Lookup(None, state="miss" if self.enabled else "off")
        hit = None
        if plan.lookup:
            with span("cache.lookup") as s:
                hit = await self._lookup(plan, s)
                if s is not None:
                    s.set_attribute("router.cache", "hit" if hit else "miss")
                    if hit is not None:
                        s.set_attribute("router.cache.similarity", round(hit.similarity, 4))
        memo = None
        if plan.store and self.config.repeat_memo:  # PII checked, none found, storable
            memo = (request_fingerprint(routed.kind, routed.request.body, plan.tenant),
                    Remembered(plan, routed.decision, routed.headers()))
        found = Lookup(plan, hit, "hit" if hit else "miss", memo)
        if hit is not None:
            self._remember(found)
        return found

    async def _lookup(self, plan: CachePlan, s: Any) -> Hit | None:
        """The store's candidate (nearest above the threshold, text rules passed), served only
        if the verifier's model, when there is one, agrees; ``s``: the lookup's span or None."""
        assert self.cache is not None
        hit = await self.cache.lookup(plan.partition, plan.embedding, self.config.threshold,
                                      plan.text)
        if hit is None or self.verifier is None or plan.text is None:
            return hit
        verdict = await self.verifier.check(plan.text, hit.text)
        if self.metrics is not None:
            self.metrics.count_cache_verification(verdict.outcome)
        if s is not None:
            s.set_attribute("router.cache.verifier", verdict.outcome)
        return hit if verdict.serve else None

    def _remember(self, lookup: Lookup) -> None:
        if lookup.memo is not None:
            self.memo.put(*lookup.memo)

    async def repeat(self, kind: Kind, body: Mapping[str, Any], headers: Mapping[str, str],
                     caller: Caller) -> tuple[Remembered, Lookup] | None:
        """A hit for the very same request as one answered or stored before, found without
        the model; None: take the whole pipeline."""
        if self.cache is None or not self.config.repeat_memo or not len(self.memo):
            return None
        if not cache_directives(headers.get("Cache-Control"))[0] or replay_mode(body) is None:
            return None
        tenant = self.tenant(caller, body)
        if tenant is None:
            return None
        fingerprint = request_fingerprint(kind, body, tenant)
        known = self.memo.get(fingerprint)
        if known is None:
            return None
        plan = known.plan
        with span("cache.lookup", {"router.cache.repeat": True}) as s:
            hit = await self._lookup(plan, s)
            if s is not None:
                s.set_attribute("router.cache", "hit" if hit else "miss")
        if hit is None:  # expired, evicted, flushed or invalidated
            self.memo.forget(fingerprint)
            return None
        return known, Lookup(plan, hit, "hit", repeat=True)

    async def store_body(self, lookup: Lookup, kind: str, body: Any) -> bool:
        """A non-streaming 2xx answer; stored only if complete."""
        if not lookup.may_store or self.cache is None:
            return False
        assert lookup.plan is not None
        response = CachedResponse.from_body(kind, body)  # type: ignore[arg-type]
        if response is None:
            return False
        return await self._store(lookup, response)

    async def _store(self, lookup: Lookup, response: CachedResponse) -> bool:
        assert self.cache is not None and lookup.plan is not None
        size = len(json_codec.dumps(response.body))
        if size > self.config.max_answer_bytes:
            log.debug("cache: answer of %d bytes not stored (cache.max_answer_bytes)", size)
            return False
        stored = await self.cache.store(lookup.plan.partition, lookup.plan.embedding,
                                        lookup.plan.text, response, tenant=lookup.plan.tenant)
        if stored:
            self._remember(lookup)
        return stored

    def capture(self, lookup: Lookup, kind: str) -> StreamCapture | None:
        """A capture to feed every forwarded event, or None when nothing will be stored."""
        return StreamCapture(kind) if lookup.may_store else None  # type: ignore[arg-type]

    async def store_stream(self, lookup: Lookup, capture: StreamCapture | None,
                           usage: Any = None) -> bool:
        """After a stream ended cleanly (call it only then): store the reassembled answer."""
        if capture is None or self.cache is None or lookup.plan is None:
            return False
        response = capture.response(usage)
        if response is None:
            if capture.failed:
                log.debug("cache: stream not stored: %s", capture.failed)
            return False
        return await self._store(lookup, response)

    # ---- admin

    def admin_token(self) -> str | None:
        """The bearer token of the admin endpoints; None: they are disabled."""
        name = self.config.admin_token_env
        if self.cache is None or not name:
            return None
        return self._env.get(name) or None

    @staticmethod
    def authorized(token: str, authorization: str | None) -> bool:
        scheme, _, given = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.encode())

    def stats(self) -> CacheStats:
        assert self.cache is not None
        return self.cache.stats()

    async def flush(self) -> int:
        assert self.cache is not None
        self.memo.clear()
        return await self.cache.flush()

    async def invalidate(self, partition: Any) -> int | None:
        """Entries removed, or None when ``partition`` is not a partition key."""
        assert self.cache is not None
        if not isinstance(partition, str) or not _PARTITION.fullmatch(partition):
            return None
        return await self.cache.invalidate(partition)

