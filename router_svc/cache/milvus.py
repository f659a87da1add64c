"""The semantic cache on Milvus: one cache shared by every router replica (``cache.backend:
milvus``).

The same ``SemanticCache`` contract as ``HnswCache``: the partition key is an exact filter,
the embedding is matched by COSINE similarity on L2-normalised vectors, candidates pass the
text guard (``texts_compatible``), expired entries are filtered on lookup and swept in the
background, and stores skip near-duplicates and respect ``capacity`` and the per-tenant quota.

One row per answer in one collection (created on first use, checked at start-up)::

    id INT64 (random, primary) | vector FLOAT_VECTOR(dim) | partition VARCHAR | tenant VARCHAR
    created_at DOUBLE | expires_at DOUBLE | payload VARCHAR (the query text and the answer)

The collection's description names the embedding model; a collection made for another model
or dimension is a ``ConfigError`` naming ``cache.milvus.collection``. Eviction is by age
(oldest first) rather than by last use: recording every hit would rewrite the row (Milvus has
no partial update). At capacity the tenant holding the most entries loses its oldest first, as
in ``HnswCache``, evicting a few percent at once so the scan that finds them is rare.

pymilvus is blocking: every call runs on a small thread pool with a deadline. A call that
fails or runs past it bypasses the cache (a lookup misses, a store is skipped) and marks the
cache ``degraded``; further calls are skipped at once while the background task probes Milvus
every ``retry_s``, and the cache resumes when it answers. The router never fails a request
because of it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import secrets
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from router_svc.cache.keys import KINDS, texts_compatible
from router_svc.cache.response import CachedResponse
from router_svc.cache.store import CacheEvents, CacheStats, Hit, SemanticCache, UnitVectors
from router_svc.config.schema import ConfigError
from router_svc.core import json_codec

__all__ = ["MilvusCache", "decode_payload", "encode_payload", "literal"]

log = logging.getLogger(__name__)

# The largest VARCHAR Milvus holds; an answer that does not fit even compressed is refused.
MAX_PAYLOAD = 65_535
COMPRESS_FROM = 4096  # payloads this large (bytes of JSON) are stored zlib-compressed
_MODEL_TAG = "router-svc semantic cache; model="
_SAFE = re.compile(r"[A-Za-z0-9_.:@+/=|-]{0,128}")
_CANDIDATES = 4  # nearest neighbours vetted per lookup (the text guard may refuse some)


def literal(value: str) -> str:
    """``value`` as it is stored in a filtered VARCHAR field: itself when it is plain (hex
    partition keys, tenant names), else ``~`` and a digest, so no quote or backslash ever
    reaches a filter expression (milvus-lite has no expression templates)."""
    if _SAFE.fullmatch(value):
        return value
    import hashlib

    return "~" + hashlib.sha256(value.encode()).hexdigest()[:48]


def encode_payload(text: str, response: CachedResponse) -> str:
    """The query text and the answer as one VARCHAR: ``j`` + JSON, or ``z`` + base64 of the
    zlib-compressed JSON when it is ``COMPRESS_FROM`` bytes or more."""
    raw = json_codec.dumps({"v": 1, "text": text, "kind": response.kind, "body": response.body})
    if len(raw) < COMPRESS_FROM:
        return "j" + raw.decode()
    return "z" + base64.b64encode(zlib.compress(raw, 6)).decode("ascii")


def decode_payload(payload: str) -> tuple[str, CachedResponse]:
    if payload[:1] == "z":
        raw = zlib.decompress(base64.b64decode(payload[1:]))
    elif payload[:1] == "j":
        raw = payload[1:].encode()
    else:
        raise ValueError(f"unknown payload encoding {payload[:1]!r}")
    d = json_codec.loads(raw)
    return d["text"], CachedResponse(d["kind"], d["body"])


class _Bypass(Exception):
    """The call was not made or did not finish in time: the cache is bypassed."""


class MilvusCache(SemanticCache):
    """A ``SemanticCache`` in one Milvus collection shared by several routers.

    ``await start()`` connects and creates or checks the collection; ``await maintain()``
    (a background task) sweeps expired rows and reconnects after an outage. ``clock`` (wall
    clock seconds) decides expiry and is injectable for tests; all replicas sharing a
    collection should run on synchronised clocks.
    """

    def __init__(
        self,
        uri: str,
        dim: int = 384,
        *,
        collection: str = "router_cache",
        model_id: str = "",
        token: str | None = None,
        consistency_level: str = "Strong",
        timeout_s: float = 1.0,
        capacity: int = 10_000,
        ttl_s: float = 3600.0,
        tenant_quota: int | None = None,
        max_answer_bytes: int = 256 * 1024,
        dedupe_similarity: float = 0.999,
        guard: Callable[[str, str], bool] | None = texts_compatible,
        clock: Callable[[], float] = time.time,
        events: CacheEvents | None = None,
        retry_s: float = 2.0,
        evict_fraction: float = 0.02,
        max_inflight: int = 64,
        latency_window: int = 4096,
    ) -> None:
        if dim <= 0 or capacity <= 0 or ttl_s <= 0 or timeout_s <= 0:
            raise ValueError("dim, capacity, ttl_s and timeout_s must be positive")
        self.uri, self.dim, self.collection, self.model_id = uri, dim, collection, model_id
        self.token = token
        self.consistency_level = consistency_level
        self.timeout_s = timeout_s
        self.capacity, self.ttl_s, self.tenant_quota = capacity, ttl_s, tenant_quota
        self.max_answer_bytes = max_answer_bytes
        self.dedupe_similarity = dedupe_similarity
        self.guard = guard
        self.clock = clock
        self.events = events
        self.retry_s = retry_s
        self.evict_fraction = evict_fraction
        self.max_inflight = max_inflight
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="milvus-cache")
        # pymilvus logs every failed call with its traceback; during an outage that is a
        # flood. The rate-limited warning below says it once (set the level to see them).
        pm = logging.getLogger("pymilvus")
        if pm.level == logging.NOTSET:
            pm.setLevel(logging.CRITICAL)
        self._client: Any = None
        self._connect_lock = threading.Lock()
        self._healthy = False
        self._problem: str | None = "not connected yet"
        self._inflight = 0
        self._closed = False
        self._entries = 0  # as last counted (count(*) after stores, sweeps, flushes)
        self._latency: deque[float] = deque(maxlen=latency_window)
        self._n = dict.fromkeys(
            ("lookups", "hits", "misses", "stores", "duplicates", "evictions", "expirations",
             "removed", "guarded", "busy", "invalid"), 0)
        self._warned_at = -1e9
        self._suppressed = 0
        self._unit = UnitVectors(dim)

    # ------------------------------------------------------------------ health

    @property
    def degraded(self) -> bool:
        """Milvus is unreachable, slow or unusable: the cache is being bypassed."""
        return not self._healthy

    @property
    def problem(self) -> str | None:
        """Why the cache is degraded, or None."""
        return None if self._healthy else self._problem

    def _warn(self, what: str) -> None:
        """A warning at most every 30 s, saying how many were held back."""
        now = time.monotonic()
        if now - self._warned_at < 30.0:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last warning)" if self._suppressed else ""
        self._suppressed = 0
        self._warned_at = now
        log.warning("cache: Milvus at %s: %s; the cache is bypassed until it answers%s",
                    self.uri, what, more)

    def _failed(self, op: str, error: BaseException) -> None:
        if isinstance(error, TimeoutError | asyncio.TimeoutError):
            what = f"{op} ran past its {self.timeout_s:g}s deadline"
        else:
            what = f"{op} failed: {type(error).__name__}: {str(error)[:200]}"
        self._healthy, self._problem = False, what
        counter = getattr(self.events, "count_cache_backend_error", None)
        if counter is not None:
            counter(op)
        self._warn(what)

    # ------------------------------------------------------------------ calls off the loop

    async def _call(self, op: str, fn: Callable[..., Any], *args: Any,
                    deadline_s: float | None = None) -> Any:
        """``fn(client, *args)`` on the pool within the deadline; ``_Bypass`` when the cache
        is degraded, closed, saturated, or the call fails or times out."""
        client = self._client
        if self._closed:
            raise _Bypass
        if not self._healthy or client is None or self._inflight >= self.max_inflight:
            self._count("busy")  # skipped: Milvus down or slow (see ``problem``)
            raise _Bypass
        self._inflight += 1
        fut = asyncio.get_running_loop().run_in_executor(self._pool, fn, client, *args)
        fut.add_done_callback(self._call_done)
        try:
            # The gRPC deadline is timeout_s per call; the outer one adds a margin for the
            # pool's queue so a stuck thread can never hold a request.
            return await asyncio.wait_for(fut, deadline_s or self.timeout_s * 1.5)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._failed(op, e)
            raise _Bypass from e

    def _call_done(self, fut: asyncio.Future[Any]) -> None:
        self._inflight -= 1
        if not fut.cancelled():
            fut.exception()  # retrieved: a late failure after a timeout is not "never retrieved"

    def _opts(self) -> dict[str, Any]:
        return {"timeout": self.timeout_s, "consistency_level": self.consistency_level}

    # ------------------------------------------------------------------ connecting

    def _connect_sync(self) -> None:
        """A client and a checked collection (created on first use); raises ``ConfigError``
        for a collection of another model or dimension, anything else when unreachable."""
        with self._connect_lock:
            from pymilvus import MilvusClient

            client = self._client
            if client is None:
                client = MilvusClient(uri=self.uri, token=self.token or "",
                                      timeout=self.timeout_s * 5, dedicated=True)
            try:
                self._ensure_collection(client)
            except BaseException:
                if client is not self._client:
                    _close_quietly(client)
                raise
            self._client = client

    def _ensure_collection(self, client: Any) -> None:
        t = self.timeout_s * 5
        if not client.has_collection(self.collection, timeout=t):
            try:
                self._create_collection(client, t)
                log.info("cache: created Milvus collection %r at %s (dim %d, COSINE)",
                         self.collection, self.uri, self.dim)
            except Exception:
                if not client.has_collection(self.collection, timeout=t):
                    raise  # not another replica creating it at the same moment
        desc = client.describe_collection(self.collection, timeout=t)
        self._check_schema(desc)
        client.load_collection(self.collection, timeout=t)

    def _create_collection(self, client: Any, t: float) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                            description=_MODEL_TAG + self.model_id)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("partition", DataType.VARCHAR, max_length=128)
        schema.add_field("tenant", DataType.VARCHAR, max_length=128)
        schema.add_field("created_at", DataType.DOUBLE)
        schema.add_field("expires_at", DataType.DOUBLE)
        schema.add_field("payload", DataType.VARCHAR, max_length=MAX_PAYLOAD)
        index = client.prepare_index_params()
        # AUTOINDEX: HNSW on a Milvus standalone or cluster for float vectors; milvus-lite
        # (tests, `up --cache milvus`) supports only FLAT, IVF_FLAT and AUTOINDEX.
        index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
        client.create_collection(self.collection, schema=schema, index_params=index,
                                 consistency_level=self.consistency_level, timeout=t)

    def _check_schema(self, desc: dict[str, Any]) -> None:
        fields = {f["name"]: f for f in desc.get("fields", [])}
        problems = []
        vec = fields.get("vector")
        dim = int((vec or {}).get("params", {}).get("dim", -1))
        missing = {"id", "vector", "partition", "tenant", "expires_at", "payload"} - set(fields)
        if missing:
            problems.append(f"it has no field(s) {', '.join(sorted(missing))}")
        elif dim != self.dim:
            problems.append(f"its vectors have {dim} dimensions, the served model's {self.dim}")
        description = str(desc.get("description", ""))
        theirs = description[len(_MODEL_TAG):] if description.startswith(_MODEL_TAG) else None
        if not missing and theirs is not None and self.model_id and theirs != self.model_id:
            problems.append(f"it was made for embedding model {theirs!r}, the served one is "
                            f"{self.model_id!r}")
        if problems:
            raise ConfigError([
                f"cache.milvus.collection: Milvus collection {self.collection!r} at {self.uri} "
                f"does not fit: {'; '.join(problems)}. Name another collection (one per "
                "embedding model), or drop this one if its answers are no longer wanted"])

    async def start(self) -> bool:
        """Connect, create or check the collection. A collection that does not fit raises
        ``ConfigError``; Milvus unreachable is a warning: the cache starts degraded and
        ``maintain`` keeps trying. True when connected."""
        return await self._reconnect(raise_config=True)

    async def _reconnect(self, *, raise_config: bool = False) -> bool:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(self._pool, self._connect_sync),
                                   self.timeout_s * 10)
        except ConfigError as e:
            self._healthy, self._problem = False, e.problems[0]
            if raise_config:
                raise
            log.error("cache: %s", e.problems[0])
            return False
        except Exception as e:
            self._failed("connect", e)
            self._drop_client()
            return False
        if not self._healthy:
            log.info("cache: Milvus at %s (collection %r) answers; cache in use",
                     self.uri, self.collection)
        self._healthy, self._problem = True, None
        await self._refresh_count()
        return True

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            self._pool.submit(_close_quietly, client)

    # ------------------------------------------------------------------ vectors and counters

    def _vector(self, embedding: Any) -> list[float] | None:
        v = self._unit(embedding)
        return None if v is None else v.tolist()

    def _count(self, key: str, n: int = 1) -> None:
        self._n[key] += n

    def _set_entries(self, n: int) -> None:
        self._entries = max(0, n)
        if self.events:
            self.events.set_cache_entries(self._entries)

    def _compatible(self, text: str | None, stored: str) -> bool:
        return text is None or self.guard is None or text == stored or self.guard(text, stored)

    @staticmethod
    def _live(partition: str, now: float) -> str:
        return f'partition == "{literal(partition)}" and expires_at > {now:.6f}'

    # ------------------------------------------------------------------ blocking bodies

    def _search_sync(self, client: Any, vec: list[float], partition: str,
                     now: float) -> list[dict[str, Any]]:
        res = client.search(
            self.collection, data=[vec], anns_field="vector", limit=_CANDIDATES,
            filter=self._live(partition, now), output_fields=["payload", "created_at"],
            search_params={"metric_type": "COSINE"}, **self._opts())
        return list(res[0]) if res else []

    def _count_sync(self, client: Any, flt: str = "") -> int:
        rows = client.query(self.collection, filter=flt, output_fields=["count(*)"],
                            **self._opts())
        return int(rows[0]["count(*)"]) if rows else 0

    def _delete_sync(self, client: Any, flt: str) -> int:
        n = self._count_sync(client, flt)
        if n:
            client.delete(self.collection, filter=flt, timeout=self.timeout_s)
        return n

    def _rows_sync(self, client: Any, flt: str, n: int) -> list[dict[str, Any]]:
        """Up to ``n`` rows' id, tenant and created_at (a query holds 16,384 at most)."""
        fields = ["id", "tenant", "created_at"]
        if n <= 16_384:
            return list(client.query(self.collection, filter=flt, output_fields=fields,
                                     limit=max(1, n), **self._opts()))
        it = client.query_iterator(self.collection, batch_size=4096, filter=flt,
                                   output_fields=fields, timeout=self.timeout_s * 5)
        rows: list[dict[str, Any]] = []
        try:
            while batch := it.next():
                rows.extend(batch)
        finally:
            it.close()
        return rows

    def _delete_ids_sync(self, client: Any, ids: list[int]) -> None:
        for i in range(0, len(ids), 1000):
            chunk = ids[i:i + 1000]
            client.delete(self.collection, filter=f"id in {chunk}", timeout=self.timeout_s)

    def _make_room_sync(self, client: Any, tenant: str) -> int:
        """Tenant quota, then capacity: the rows removed to fit one more."""
        evicted = 0
        lit = literal(tenant)
        if self.tenant_quota is not None:
            own = self._count_sync(client, f'tenant == "{lit}"')
            if own >= self.tenant_quota:
                rows = self._rows_sync(client, f'tenant == "{lit}"', own)
                rows.sort(key=lambda r: r["created_at"])
                ids = [int(r["id"]) for r in rows[:own - self.tenant_quota + 1]]
                self._delete_ids_sync(client, ids)
                evicted += len(ids)
        total = self._count_sync(client)
        if total >= self.capacity:
            # Below capacity by a few percent at once: the scan that follows is rare.
            need = total - self.capacity + 1 + int(self.capacity * self.evict_fraction)
            rows = self._rows_sync(client, "", total)
            by_tenant: dict[str, list[dict[str, Any]]] = {}
            for r in sorted(rows, key=lambda r: r["created_at"], reverse=True):
                by_tenant.setdefault(r["tenant"], []).append(r)  # newest first, pop() oldest
            ids = []
            while len(ids) < need and by_tenant:
                # The largest tenant loses its oldest; ties: the one whose oldest is oldest.
                name = max(by_tenant, key=lambda k: (len(by_tenant[k]),
                                                     -by_tenant[k][-1]["created_at"]))
                ids.append(int(by_tenant[name].pop()["id"]))
                if not by_tenant[name]:
                    del by_tenant[name]
            self._delete_ids_sync(client, ids)
            evicted += len(ids)
            total -= len(ids)
        self._entries = total
        return evicted

    def _store_sync(self, client: Any, partition: str, vec: list[float], text: str,
                    payload: str, tenant: str, now: float) -> str:
        for h in self._search_sync(client, vec, partition, now):
            if h["distance"] < self.dedupe_similarity:
                break
            stored, _ = decode_payload(h["entity"]["payload"])
            if self._compatible(text, stored):
                return "duplicate"
        evicted = self._make_room_sync(client, tenant)
        client.insert(self.collection, [{
            "id": secrets.randbits(63) or 1, "vector": vec, "partition": literal(partition),
            "tenant": literal(tenant), "created_at": now, "expires_at": now + self.ttl_s,
            "payload": payload}], timeout=self.timeout_s)
        self._entries += 1
        return f"stored:{evicted}"

    # ------------------------------------------------------------------ the interface

    async def lookup(self, partition: str, embedding: Any, threshold: float,
                     text: str | None = None) -> Hit | None:
        t0 = time.perf_counter()
        hit = None
        vec = self._vector(embedding)
        if vec is None:
            self._count("invalid")
        else:
            now = self.clock()
            try:
                found = await self._call("lookup", self._search_sync, vec, partition, now)
            except _Bypass:
                found = []
            guarded = False
            for h in found:
                sim = float(h["distance"])
                if sim < threshold:
                    break
                try:
                    stored, response = decode_payload(h["entity"]["payload"])
                except Exception:
                    log.warning("cache: an unreadable Milvus row (id %s) was skipped", h["id"])
                    continue
                if not self._compatible(text, stored):
                    guarded = True
                    continue
                age = max(0.0, now - float(h["entity"]["created_at"]))
                hit = Hit(response, min(sim, 1.0), stored, age, int(h["id"]))
                break
            if hit is None and guarded:
                self._count("guarded")
        seconds = time.perf_counter() - t0
        self._count("lookups")
        self._count("hits" if hit else "misses")
        self._latency.append(seconds)
        if self.events:
            self.events.observe_cache_lookup(seconds, hit.similarity if hit else None)
        return hit

    async def store(self, partition: str, embedding: Any, text: str,
                    response: CachedResponse, tenant: str = "") -> bool:
        if self._closed or response.kind not in KINDS:
            return False
        vec = self._vector(embedding)
        payload = encode_payload(text, response)
        too_big = len(json_codec.dumps(response.body)) > self.max_answer_bytes
        if vec is None or too_big or len(payload.encode()) > MAX_PAYLOAD:
            if vec is not None:
                log.debug("cache: answer too large for the cache (%d bytes stored)",
                          len(payload))
            self._count("invalid")
            return False
        try:
            # A store scans for evictions now and then: a longer deadline than a lookup's.
            done = await self._call("store", self._store_sync, partition, vec, text, payload,
                                    tenant, self.clock(), deadline_s=self.timeout_s * 6)
        except _Bypass:
            return False
        if done == "duplicate":
            self._count("duplicates")
            return False
        evicted = int(done.split(":", 1)[1])
        self._count("stores")
        if evicted:
            self._count("evictions", evicted)
        if self.events:
            self.events.count_cache_store()
            if evicted:
                self.events.count_cache_evictions("capacity", evicted)
            self.events.set_cache_entries(self._entries)
        return True

    async def invalidate(self, partition: str) -> int:
        flt = f'partition == "{literal(partition)}"'
        try:
            n = await self._call("invalidate", self._delete_sync, flt)
        except _Bypass:
            return 0
        self._count("removed", n)
        await self._refresh_count()
        return int(n)

    async def flush(self) -> int:
        try:
            n = await self._call("flush", self._delete_sync, "id >= 0",
                                 deadline_s=self.timeout_s * 6)
        except _Bypass:
            return 0
        self._count("removed", n)
        self._set_entries(0)
        return int(n)

    async def sweep(self) -> int:
        """Delete expired rows (whichever replica stored them); the number removed."""
        try:
            n = await self._call("sweep", self._delete_sync, f"expires_at <= {self.clock():.6f}",
                                 deadline_s=self.timeout_s * 6)
        except _Bypass:
            return 0
        if n:
            self._count("expirations", n)
            if self.events:
                self.events.count_cache_evictions("expired", n)
        await self._refresh_count()
        return int(n)

    async def _refresh_count(self) -> None:
        with contextlib.suppress(_Bypass):
            self._set_entries(await self._call("count", self._count_sync))

    async def maintain(self, *, sweep_interval_s: float = 60.0) -> None:
        """Background task: sweep every ``sweep_interval_s``; while degraded, try to
        reconnect every ``retry_s``. Runs until cancelled."""
        next_sweep = time.monotonic() + sweep_interval_s
        while True:
            await asyncio.sleep(self.retry_s if self.degraded else
                                max(0.0, min(self.retry_s * 5, next_sweep - time.monotonic())))
            try:
                if self.degraded:
                    await self._reconnect()
                elif time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + sweep_interval_s
                    await self.sweep()
                else:
                    await self._refresh_count()  # other replicas store too
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cache maintenance failed; retrying at the next interval")

    def stats(self) -> CacheStats:
        lat = np.array(self._latency, dtype=np.float64) * 1e3
        p50, p99 = (float(np.percentile(lat, 50)), float(np.percentile(lat, 99))) if lat.size \
            else (0.0, 0.0)
        # Shared: ``entries`` is the collection's (all replicas) as last counted; the
        # counters are this replica's; partitions and index figures are Milvus's own.
        return CacheStats(
            entries=self._entries, capacity=self.capacity, partitions=0, **self._n,
            reused=0, rebuilds=0, lookup_p50_ms=p50, lookup_p99_ms=p99, slots=0,
            hnsw_partitions=0, index_bytes=0)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, _close_quietly, client)
        self._pool.shutdown(wait=False, cancel_futures=True)


def _close_quietly(client: Any) -> None:
    try:
        client.close()
    except Exception:  # closing a broken connection
        log.debug("cache: closing the Milvus client failed", exc_info=True)
