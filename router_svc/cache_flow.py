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
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router_svc.cache import (
    CachedResponse,
    CachePlan,
    CacheStats,
    Hit,
    HnswCache,
    SemanticCache,
    plan_request,
    run_maintenance,
)
from router_svc.cache_capture import StreamCapture
from router_svc.config import CacheConfig
from router_svc.metrics import Metrics
from router_svc.pipeline import Routed

log = logging.getLogger(__name__)

HEADER = "x-router-cache"
SIMILARITY_HEADER = "x-router-cache-similarity"
PARTITION_HEADER = "x-router-cache-partition"
_PARTITION = re.compile(r"[0-9a-f]{64}")


def model_id(model_name: str, embedding_dim: int, tokenizer: Path) -> str:
    """Names the embedding space: a snapshot made under another one is not loaded."""
    digest = hashlib.sha256(Path(tokenizer).read_bytes()).hexdigest()[:16]
    return f"{model_name}:{embedding_dim}:{digest}"


@contextlib.asynccontextmanager
async def open_cache(config: CacheConfig, *, dim: int, model: str,
                     metrics: Metrics | None = None) -> AsyncIterator[HnswCache]:
    """The cache for the app's lifetime: snapshot loaded, sweeps and snapshots in the
    background, a last snapshot saved on the way out."""
    cache = HnswCache(dim, capacity=config.capacity, ttl_s=config.ttl_s, model_id=model,
                      events=metrics)
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


@dataclass
class Lookup:
    """What the cache did for one request: the plan (None: not cacheable) and a hit."""

    plan: CachePlan | None
    hit: Hit | None = None
    state: str = "off"  # x-router-cache: hit, miss or off

    def headers(self) -> dict[str, str]:
        h = {HEADER: self.state}
        if self.plan is not None:
            h[PARTITION_HEADER] = self.plan.partition
        if self.hit is not None:
            h[SIMILARITY_HEADER] = f"{self.hit.similarity:.4f}"
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

    @property
    def enabled(self) -> bool:
        return self.cache is not None

    def plan(self, routed: Routed, headers: Mapping[str, str]) -> CachePlan | None:
        if self.cache is None or routed.rejection is not None:
            return None
        return plan_request(
            enabled=True, target_model=routed.decision.model, body=routed.request.body,
            headers=headers, partition_header=self.config.partition_header,
            text=routed.category_text, embedding=routed.embedding,
            pii_found=bool(routed.entities or routed.decision.pii_types),
            pii_checked=routed.pii_status == "checked",
            store_pii_requests=self.config.store_pii_requests)

    async def lookup(self, routed: Routed, headers: Mapping[str, str]) -> Lookup:
        plan = self.plan(routed, headers)
        if plan is None or self.cache is None:
            return Lookup(None, state="miss" if self.enabled else "off")
        hit = None
        if plan.lookup:
            hit = await self.cache.lookup(plan.partition, plan.embedding, self.config.threshold,
                                          plan.text)
        return Lookup(plan, hit, "hit" if hit else "miss")

    async def store_body(self, lookup: Lookup, kind: str, body: Any) -> bool:
        """A non-streaming 2xx answer; stored only if complete."""
        if not lookup.may_store or self.cache is None:
            return False
        assert lookup.plan is not None
        response = CachedResponse.from_body(kind, body)  # type: ignore[arg-type]
        if response is None:
            return False
        return await self.cache.store(lookup.plan.partition, lookup.plan.embedding,
                                      lookup.plan.text, response)

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
        return await self.cache.store(lookup.plan.partition, lookup.plan.embedding,
                                      lookup.plan.text, response)

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
        return await self.cache.flush()

    async def invalidate(self, partition: Any) -> int | None:
        """Entries removed, or None when ``partition`` is not a partition key."""
        assert self.cache is not None
        if not isinstance(partition, str) or not _PARTITION.fullmatch(partition):
            return None
        return await self.cache.invalidate(partition)

