"""The semantic cache: exact partition keys, a small interface, the in-process hnswlib store.

No HTTP here. A request is cached under two keys:

- an exact ``partition_key``: everything that changes the answer except the last user turn
  (target model, tenant, system prompt and earlier turns, generation parameters, chat vs
  completion), hashed;
- the ``embedding`` of the last user turn (the same Triton call that classifies the request),
  matched by inner product on L2-normalised vectors within the partition.

A hit needs both: the same partition and a similarity at or above the threshold. Anything the
key builder does not recognise goes into the key, so an unknown parameter can only cost a miss,
never serve a wrong answer.

``HnswCache`` keeps an index per partition (``router_svc.cache.index``: exact search while a
partition is small, an hnswlib HNSW index once it holds thousands of entries), a global LRU
over all entries, a TTL, and snapshots (``router_svc.cache.snapshot``). One global HNSW index
with hnswlib's ``filter`` was measured against it and is hundreds of times slower with many
partitions (perf/cache_bench.py). Lookups and stores run inline on the event loop (tens of
microseconds in a small partition, well under a millisecond at 100,000 entries in one);
sweeps, index rebuilds and snapshots run in a thread and hold the lock only briefly. Inline
callers never wait for that lock: a lookup that finds it taken is a miss, a store is skipped.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from router_svc.cache.entry import Entry
from router_svc.cache.index import (
    FlatIndex,
    HnswIndex,
    IndexKind,
    IndexParams,
    PartitionIndex,
    build_index,
    wanted_kind,
)
from router_svc.cache.keys import (
    ANONYMOUS,
    KINDS,
    NON_ANSWER_FIELDS,
    CachePlan,
    Kind,
    cache_directives,
    cache_tenant,
    partition_key,
    plan_request,
    request_kind,
    texts_compatible,
)
from router_svc.cache.response import CachedResponse, fresh_copy, is_complete
from router_svc.cache.snapshot import load_snapshot, save_snapshot

__all__ = [
    "ANONYMOUS",
    "KINDS",
    "NON_ANSWER_FIELDS",
    "CacheEvents",
    "CachePlan",
    "CacheStats",
    "CachedResponse",
    "Hit",
    "HnswCache",
    "IndexParams",
    "Kind",
    "PartitionInfo",
    "SemanticCache",
    "cache_directives",
    "cache_tenant",
    "fresh_copy",
    "is_complete",
    "partition_key",
    "plan_request",
    "request_kind",
    "run_maintenance",
    "texts_compatible",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    response: CachedResponse
    similarity: float
    text: str  # the stored query text that matched
    age_s: float
    entry_id: int


@dataclass(frozen=True)
class CacheStats:
    entries: int
    capacity: int
    partitions: int
    lookups: int
    hits: int
    misses: int
    stores: int
    duplicates: int  # stores skipped: a near-identical entry (similarity >= 0.999) was there
    evictions: int  # removed for capacity (LRU)
    expirations: int  # removed after their TTL
    removed: int  # removed by invalidate() and flush()
    guarded: int  # lookups that missed because the text guard refused the candidates
    reused: int  # adds that took a deleted slot (hnswlib replace_deleted; the slow path)
    rebuilds: int  # partition indexes rebuilt by sweeps (promotion to HNSW, compaction)
    busy: int  # lookups/stores skipped while a sweep or snapshot held the lock
    invalid: int  # embeddings refused (wrong dimension, zero or not finite)
    lookup_p50_ms: float
    lookup_p99_ms: float
    slots: int  # HNSW slots allocated over all partitions (live + deleted + free)
    hnsw_partitions: int  # partitions large enough for an HNSW index (the rest: exact)
    index_bytes: int  # vectors and graphs, as the indexes count them (hnswlib's own figure)

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hit_rate": round(self.hit_rate, 4)}


class PartitionInfo(NamedTuple):
    """One partition's index, as ``HnswCache.partition_info`` reports it."""

    kind: IndexKind  # "flat" (exact search) or "hnsw"
    entries: int  # live entries
    slots: int  # vectors the index has room for now
    deleted: int  # slots still holding removed entries (HNSW; flat compacts at once)


class CacheEvents(Protocol):
    """What the cache reports as it works; ``metrics.Metrics`` implements it."""

    def observe_cache_lookup(self, seconds: float, similarity: float | None) -> None: ...
    def count_cache_store(self) -> None: ...
    def count_cache_evictions(self, reason: str, n: int = 1) -> None: ...
    def set_cache_entries(self, n: int) -> None: ...


class SemanticCache(ABC):
    """The interface the app uses; a shared store for several replicas can take its place."""

    @abstractmethod
    async def lookup(self, partition: str, embedding: np.ndarray, threshold: float,
                     text: str | None = None) -> Hit | None:
        """The most similar live entry of ``partition`` with similarity >= ``threshold``
        (and, given the query ``text``, one ``texts_compatible`` with it), or None."""

    @abstractmethod
    async def store(
        self, partition: str, embedding: np.ndarray, text: str, response: CachedResponse,
        tenant: str = "",
    ) -> bool:
        """Store a complete answer, counted against ``tenant``'s share; False if skipped
        (near-identical entry, busy, invalid)."""

    @abstractmethod
    async def invalidate(self, partition: str) -> int:
        """Remove every entry of ``partition``; the number removed."""

    @abstractmethod
    async def flush(self) -> int:
        """Remove every entry; the number removed."""

    @abstractmethod
    def stats(self) -> CacheStats: ...

    async def drain(self) -> None:  # noqa: B027 - a no-op default, not abstract
        """Wait for the background work queued so far; nothing to wait for by default."""

    @abstractmethod
    async def close(self) -> None: ...


# --------------------------------------------------------------------------- the store


class UnitVectors:
    """Embeddings as unit vectors of the cache's dimension (both backends): ``None`` for one of
    another size (logged once: the served model does not fit the cache) or of no length."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._warned = False

    def __call__(self, embedding: Any) -> np.ndarray | None:
        v = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if v.size != self.dim:
            if not self._warned:
                log.error("cache: embedding has %d dimensions, the cache %d; not cached",
                          v.size, self.dim)
                self._warned = True
            return None
        norm = float(np.linalg.norm(v))
        if not np.isfinite(norm) or norm == 0.0:
            return None
        return v / norm


class HnswCache(SemanticCache):
    """In-process semantic cache: an index per partition (exact while small, hnswlib HNSW
    from ``params.hnsw_min_entries`` on), a global LRU over all entries, and a TTL.

    ``clock`` (wall-clock seconds) decides expiry and is injectable for tests. ``model_id``
    names the embedding model: a snapshot made with another one is not loaded. ``guard``
    (default ``texts_compatible``; None turns it off) vets candidates when lookups pass the
    query text.
    """

    def __init__(
        self,
        dim: int = 384,
        *,
        capacity: int = 10_000,
        ttl_s: float = 3600.0,
        model_id: str = "",
        params: IndexParams | None = None,
        dedupe_similarity: float = 0.999,
        guard: Callable[[str, str], bool] | None = texts_compatible,
        clock: Callable[[], float] = time.time,
        events: CacheEvents | None = None,
        latency_window: int = 4096,
        tenant_quota: int | None = None,
    ) -> None:
        if dim <= 0 or capacity <= 0 or ttl_s <= 0:
            raise ValueError("dim, capacity and ttl_s must be positive")
        self.dim, self.capacity, self.ttl_s, self.model_id = dim, capacity, ttl_s, model_id
        self.params = params or IndexParams()
        self.slot_budget = max(capacity, int(capacity * self.params.slot_factor))
        self.dedupe_similarity = dedupe_similarity
        self.guard = guard
        self.clock = clock
        self.events = events
        self._lock = threading.Lock()  # the indexes and entries
        self._stats_lock = threading.Lock()  # lookup counters, taken when the main one is not
        self.snapshot_lock = threading.Lock()  # held by a snapshot: one at a time
        self._partitions: dict[str, PartitionIndex] = {}
        self._entries: dict[int, Entry] = {}  # insertion order = expiry order
        self._lru: OrderedDict[int, None] = OrderedDict()  # least recently used first
        # The same order per tenant: at capacity the largest tenant loses its own LRU entry.
        self._by_tenant: dict[str, OrderedDict[int, None]] = {}
        self.tenant_quota = tenant_quota
        self._next_id = 0
        self._tick = 0
        self._latency: deque[float] = deque(maxlen=latency_window)
        self._n = dict.fromkeys(
            ("lookups", "hits", "misses", "stores", "duplicates", "evictions", "expirations",
             "removed", "guarded", "reused", "rebuilds", "busy", "invalid"), 0)
        self._closed = False
        self._vector = UnitVectors(dim)
        self._promoting: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()


    # ---- bookkeeping (caller holds the lock)

    def _touch(self, e: Entry) -> None:
        self._tick += 1
        e.touched = self._tick
        self._lru[e.id] = None
        self._lru.move_to_end(e.id)
        own = self._by_tenant.setdefault(e.tenant, OrderedDict())
        own[e.id] = None
        own.move_to_end(e.id)

    def _remove(self, entry_id: int) -> None:
        e = self._entries.pop(entry_id)
        self._lru.pop(entry_id, None)
        own = self._by_tenant.get(e.tenant)
        if own is not None:
            own.pop(entry_id, None)
            if not own:
                del self._by_tenant[e.tenant]
        part = self._partitions[e.partition]
        part.remove(entry_id)
        if not len(part):  # an empty partition frees its index
            del self._partitions[e.partition]

    def _expire(self, ids: list[int]) -> None:
        for i in ids:
            self._remove(i)
        self._n["expirations"] += len(ids)
        if ids and self.events:
            self.events.count_cache_evictions("expired", len(ids))

    def _entries_changed(self) -> None:
        if self.events:
            self.events.set_cache_entries(len(self._entries))

    def _compatible(self, text: str | None, e: Entry) -> bool:
        return text is None or self.guard is None or text == e.text or self.guard(text, e.text)

    # ---- the synchronous core

    def _lookup_locked(self, partition: str, vec: np.ndarray, threshold: float,
                       text: str | None) -> Hit | None:
        now = self.clock()
        best: tuple[Entry, float] | None = None
        guarded = False
        for _ in range(2):  # once more if expired neighbours hid the live ones
            part = self._partitions.get(partition)
            if part is None:
                break
            expired: list[int] = []
            for entry_id, sim in part.search(vec, 4):  # most similar first
                e = self._entries[entry_id]
                if e.expires_at <= now:
                    expired.append(entry_id)
                elif sim < threshold:
                    break
                elif not self._compatible(text, e):
                    guarded = True
                else:
                    best = (e, sim)
                    break
            self._expire(expired)
            if expired:
                self._entries_changed()
            if best is not None or not expired:
                break
        if best is None:
            if guarded:
                self._n["guarded"] += 1
            return None
        e, sim = best
        e.hits += 1
        self._touch(e)
        return Hit(e.response, min(sim, 1.0), e.text, max(0.0, now - e.created_at), e.id)

    def _largest_tenant(self) -> OrderedDict[int, None]:
        """The LRU order of the tenant holding the most entries (one tenant cannot flush the
        others: it evicts its own first). Ties: the one whose LRU entry is oldest."""
        return max(self._by_tenant.values(),
                   key=lambda own: (len(own), -self._entries[next(iter(own))].touched))

    def _store_locked(self, partition: str, vec: np.ndarray, text: str,
                      response: CachedResponse, tenant: str = "") -> bool:
        now = self.clock()
        part = self._partitions.get(partition)
        if part is not None:
            expired: list[int] = []
            for entry_id, sim in part.search(vec, 4):
                e = self._entries[entry_id]
                if sim < self.dedupe_similarity:
                    break
                if e.expires_at <= now:
                    expired.append(entry_id)
                elif self._compatible(text, e):
                    self._n["duplicates"] += 1
                    return False
            self._expire(expired)
        evicted = 0
        own = self._by_tenant.get(tenant)
        while own and self.tenant_quota is not None and len(own) >= self.tenant_quota:
            self._remove(next(iter(own)))  # over its quota: a tenant replaces its own
            evicted += 1
            own = self._by_tenant.get(tenant)
        while len(self._entries) >= self.capacity:
            self._remove(next(iter(self._largest_tenant())))
            evicted += 1
        if evicted:
            self._n["evictions"] += evicted
            if self.events:
                self.events.count_cache_evictions("capacity", evicted)
        part = self._partitions.get(partition)
        if part is None:
            part = self._partitions[partition] = self._new_partition()
        entry_id = self._next_id
        self._next_id += 1
        if part.add(entry_id, vec):
            self._n["reused"] += 1
        e = Entry(entry_id, partition, text, response, now, now + self.ttl_s, 0, tenant=tenant)
        self._entries[entry_id] = e
        self._touch(e)
        self._n["stores"] += 1
        if self.events:
            self.events.count_cache_store()
        self._entries_changed()
        return True

    def _new_partition(self) -> PartitionIndex:
        if self.params.hnsw_min_entries <= 1:
            return HnswIndex(self.dim, self.params, self.slot_budget,
                             slots=min(self.params.initial_slots, self.slot_budget))
        return FlatIndex(self.dim, self.params.initial_slots)

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self._n[key] += 1

    def _count_lookup(self, seconds: float, hit: Hit | None) -> None:
        with self._stats_lock:
            self._n["lookups"] += 1
            self._n["hits" if hit else "misses"] += 1
            self._latency.append(seconds)
        if self.events:
            self.events.observe_cache_lookup(seconds, hit.similarity if hit else None)

    def _do_lookup(self, partition: str, embedding: Any, threshold: float, text: str | None,
                   blocking: bool) -> Hit | None:
        t0 = time.perf_counter()
        vec = self._vector(embedding)
        hit = None
        if self._closed:
            pass
        elif vec is None:
            self._count("invalid")
        elif self._lock.acquire(blocking=blocking):
            try:
                hit = self._lookup_locked(partition, vec, threshold, text)
            finally:
                self._lock.release()
        else:
            self._count("busy")
        self._count_lookup(time.perf_counter() - t0, hit)
        return hit

    def _do_store(self, partition: str, embedding: Any, text: str, response: CachedResponse,
                  blocking: bool, tenant: str = "") -> bool:
        if self._closed or response.kind not in KINDS:
            return False
        vec = self._vector(embedding)
        if vec is None:
            self._count("invalid")
            return False
        if not self._lock.acquire(blocking=blocking):
            self._count("busy")
            return False
        try:
            return self._store_locked(partition, vec, text, response, tenant)
        finally:
            self._lock.release()

    def lookup_sync(self, partition: str, embedding: Any, threshold: float,
                    text: str | None = None) -> Hit | None:
        """``lookup`` for threads: waits for the lock instead of missing."""
        return self._do_lookup(partition, embedding, threshold, text, blocking=True)

    def store_sync(self, partition: str, embedding: Any, text: str,
                   response: CachedResponse, tenant: str = "") -> bool:
        return self._do_store(partition, embedding, text, response, blocking=True,
                              tenant=tenant)

    def invalidate_sync(self, partition: str) -> int:
        with self._lock:
            part = self._partitions.get(partition)
            ids = sorted(part.ids) if part else []
            for i in ids:
                self._remove(i)
            self._n["removed"] += len(ids)
            self._entries_changed()
            return len(ids)

    def flush_sync(self) -> int:
        with self._lock:
            n = len(self._entries)
            self._partitions.clear()
            self._entries.clear()
            self._lru.clear()
            self._by_tenant.clear()
            self._n["removed"] += n
            self._entries_changed()
            return n

    def sweep_sync(self, *, rebuild: bool = True, chunk: int = 1000) -> int:
        """Remove expired entries (the lock held ``chunk`` removals at a time), then rebuild
        the partitions that need it (``cache_index.wanted_kind``: promotion to HNSW, or as many
        deleted slots as live entries), each built outside the lock. Returns the number
        expired."""
        total = 0
        while True:
            with self._lock:
                now = self.clock()
                ids: list[int] = []
                for entry_id, e in self._entries.items():
                    if e.expires_at > now or len(ids) >= chunk:
                        break
                    ids.append(entry_id)
                self._expire(ids)
                if ids:
                    self._entries_changed()
            total += len(ids)
            if len(ids) < chunk:
                break
        if rebuild:
            for key in list(self._partitions):
                self._rebuild(key)
        return total

    def _rebuild(self, key: str, max_catch_up: int = 64) -> bool:
        """Rebuild one partition's index as ``wanted_kind`` from its live vectors outside the
        lock, then swap it in, applying up to ``max_catch_up`` adds and removals made
        meanwhile (more: a later sweep tries again)."""
        with self._lock:
            part = self._partitions.get(key)
            kind = wanted_kind(part, self.params) if part is not None else None
            if part is None or kind is None:
                return False
            ids = sorted(part.ids)
            vecs = part.vectors(ids)
        fresh = build_index(kind, self.dim, self.params, self.slot_budget, ids, vecs)
        with self._lock:
            if self._partitions.get(key) is not part:
                return False
            now_ids = part.ids
            added, removed = sorted(now_ids - set(ids)), set(ids) - now_ids
            if len(added) + len(removed) > max_catch_up:
                return False
            for i in removed:
                fresh.remove(i)
            for i, v in zip(added, part.vectors(added), strict=True):
                fresh.add(i, v)
            self._partitions[key] = fresh
            self._n["rebuilds"] += 1
            return True

    def _promote_soon(self, key: str) -> None:
        """After an async store: build the HNSW index of a partition that outgrew exact
        search in a thread now rather than at the next sweep."""
        part = self._partitions.get(key)
        if part is None or key in self._promoting or wanted_kind(part, self.params) != "hnsw":
            return
        self._promoting.add(key)

        async def promote() -> None:
            try:
                await asyncio.to_thread(self._rebuild, key)
            except Exception:
                log.exception("cache: building the HNSW index of a partition failed")
            finally:
                self._promoting.discard(key)

        task = asyncio.get_running_loop().create_task(promote())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- for snapshots (router_svc.cache.snapshot) and tests

    @property
    def next_id(self) -> int:
        """The id the next stored entry gets."""
        return self._next_id

    def partition_keys(self) -> list[str]:
        """The keys of the partitions that hold entries now."""
        with self._lock:
            return list(self._partitions)

    def partition_info(self, key: str) -> PartitionInfo | None:
        """Partition ``key``'s index kind and size, or None if it holds no entries."""
        with self._lock:
            part = self._partitions.get(key)
            if part is None:
                return None
            return PartitionInfo(part.kind, len(part), part.slots, part.deleted)

    def export_partition(
        self, key: str, stem: Path
    ) -> tuple[Path, PartitionIndex, list[int], list[Entry]] | None:
        """Save one partition's index to ``stem`` + its kind's suffix: the file, the index,
        the labels as saved and copies of the live entries; None if the partition is gone."""
        with self._lock:
            part = self._partitions.get(key)
            if part is None:
                return None
            path = stem.with_suffix(part.suffix)
            labels = part.save(path)
            now = self.clock()
            live = [copy.copy(self._entries[i]) for i in sorted(part.ids)]
            return path, part, labels, [e for e in live if e.expires_at > now]

    def install(self, indexes: dict[str, PartitionIndex], entries: list[Entry],
                next_id: int) -> int:
        """Replace the whole state with loaded partitions (entries in expiry order); the
        number of entries."""
        with self._lock:
            self._partitions = {k: p for k, p in indexes.items() if len(p)}
            self._entries = {e.id: e for e in entries}
            self._lru = OrderedDict()
            self._by_tenant = {}
            for e in sorted(entries, key=lambda e: e.touched):
                self._lru[e.id] = None
                self._by_tenant.setdefault(e.tenant, OrderedDict())[e.id] = None
            self._next_id = max(self._next_id, next_id)
            self._tick = max([self._tick, *(e.touched for e in entries)])
            self._entries_changed()
            return len(entries)

    # ---- the async interface (inline: never waits for the lock)

    async def lookup(self, partition: str, embedding: Any, threshold: float,
                     text: str | None = None) -> Hit | None:
        return self._do_lookup(partition, embedding, threshold, text, blocking=False)

    async def store(self, partition: str, embedding: Any, text: str,
                    response: CachedResponse, tenant: str = "") -> bool:
        stored = self._do_store(partition, embedding, text, response, blocking=False,
                                tenant=tenant)
        if stored:
            self._promote_soon(partition)
        return stored

    async def invalidate(self, partition: str) -> int:
        return await asyncio.to_thread(self.invalidate_sync, partition)

    async def flush(self) -> int:
        return await asyncio.to_thread(self.flush_sync)

    async def sweep(self) -> int:
        return await asyncio.to_thread(self.sweep_sync)

    async def save(self, directory: str | Path) -> bool:
        return await asyncio.to_thread(save_snapshot, self, Path(directory))

    async def load(self, directory: str | Path) -> int:
        return await asyncio.to_thread(load_snapshot, self, Path(directory))

    async def drain(self) -> None:
        """Wait until the background index builds queued so far have finished."""
        while pending := {t for t in self._tasks if not t.done()}:
            await asyncio.wait(pending)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()

    def stats(self) -> CacheStats:
        with self._stats_lock:
            lat = np.array(self._latency, dtype=np.float64) * 1e3
            counts = dict(self._n)
        # No lock: a snapshot may hold it; len() and list() of a dict are atomic under the GIL.
        entries, parts = len(self._entries), list(self._partitions.values())
        slots = sum(p.slots for p in parts if p.kind == "hnsw")
        p50, p99 = (float(np.percentile(lat, 50)), float(np.percentile(lat, 99))) if lat.size \
            else (0.0, 0.0)
        return CacheStats(
            entries=entries, capacity=self.capacity, partitions=len(parts), **counts,
            lookup_p50_ms=p50, lookup_p99_ms=p99, slots=slots,
            hnsw_partitions=sum(p.kind == "hnsw" for p in parts),
            index_bytes=sum(p.nbytes for p in parts),
        )

    def __len__(self) -> int:
        return len(self._entries)


async def run_maintenance(
    cache: HnswCache,
    *,
    sweep_interval_s: float = 60.0,
    snapshot_dir: str | Path | None = None,
    snapshot_interval_s: float = 300.0,
) -> None:
    """Background task: sweep expired entries every ``sweep_interval_s`` and, with a
    ``snapshot_dir``, save a snapshot every ``snapshot_interval_s``. Runs until cancelled;
    a failing round is logged and the next one runs."""
    next_snapshot = time.monotonic() + snapshot_interval_s
    while True:
        await asyncio.sleep(sweep_interval_s)
        try:
            await cache.sweep()
            if snapshot_dir is not None and time.monotonic() >= next_snapshot:
                next_snapshot = time.monotonic() + snapshot_interval_s
                await cache.save(snapshot_dir)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("cache maintenance failed; retrying at the next interval")
