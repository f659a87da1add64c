"""The semantic cache's behaviour on both backends (in-process hnswlib, Milvus on loopback),
and what only the shared one has: its collection checked at start-up, large answers
compressed, and Milvus down or slow bypassing the cache without failing anything."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from router_svc.cache.milvus import MilvusCache, decode_payload, encode_payload, literal
from router_svc.cache.store import HnswCache, SemanticCache, partition_key
from router_svc.config.schema import ConfigError
from router_svc.core.metrics import Metrics
from tests.cache.test_store import DIM, Clock, T, answer, at_similarity, request, unit

MakeCache = Callable[..., Awaitable[SemanticCache]]


def _collection() -> str:
    return "t_" + secrets.token_hex(6)


@pytest.fixture(params=["hnswlib", "milvus"])
async def make_cache(request: pytest.FixtureRequest) -> AsyncIterator[MakeCache]:
    """``await make_cache(**kw)``: a fresh, empty cache of the parametrised backend."""
    made: list[SemanticCache] = []
    server = request.getfixturevalue("milvus_server") if request.param == "milvus" else None

    async def make(**kw: Any) -> SemanticCache:
        if server is None:
            cache: SemanticCache = HnswCache(DIM, **kw)
        else:
            cache = MilvusCache(server.uri, DIM, collection=_collection(), model_id="m",
                                timeout_s=5.0, **kw)
            assert await cache.start()
        made.append(cache)
        return cache

    yield make
    for c in made:
        await c.close()


def content(hit: Any) -> str:
    return hit.response.body["choices"][0]["message"]["content"]


# --------------------------------------------------------------------------- both backends


async def test_hit_and_miss(make_cache: MakeCache) -> None:
    cache = await make_cache()
    v = unit(1)
    assert await cache.lookup("p", v, T) is None
    assert await cache.store("p", v, "What is 2+2?", answer("4"))
    hit = await cache.lookup("p", v, T)
    assert hit is not None and hit.similarity == pytest.approx(1.0, abs=1e-5)
    assert hit.text == "What is 2+2?" and content(hit) == "4"
    assert await cache.lookup("p", unit(2), T) is None
    s = cache.stats()
    assert (s.lookups, s.hits, s.misses, s.stores, s.entries) == (3, 1, 2, 1, 1)


async def test_threshold_and_best_match(make_cache: MakeCache) -> None:
    cache = await make_cache()
    v = unit(1)
    await cache.store("p", v, "q", answer())
    hit = await cache.lookup("p", at_similarity(v, 0.95), T)
    assert hit is not None and hit.similarity == pytest.approx(0.95, abs=1e-4)
    assert await cache.lookup("p", at_similarity(v, 0.85), T) is None
    assert await cache.lookup("p", -v, T) is None
    w = at_similarity(v, 0.97, seed=5)
    await cache.store("p", w, "w", answer("w"))
    hit = await cache.lookup("p", w, T)
    assert hit is not None and hit.text == "w"


async def test_the_text_guard_vets_candidates(make_cache: MakeCache) -> None:
    cache = await make_cache()
    v = unit(7)
    safe, unsafe = "Is it safe to drink tap water?", "Is it unsafe to drink tap water?"
    await cache.store("p", v, safe, answer("yes"))
    assert await cache.lookup("p", at_similarity(v, 0.99), T, text=unsafe) is None
    assert cache.stats().guarded == 1
    hit = await cache.lookup("p", at_similarity(v, 0.99), T, text=safe)
    assert hit is not None and hit.text == safe
    # near-identical vector, incompatible text: stored, not a duplicate
    assert await cache.store("p", at_similarity(v, 0.9995), unsafe, answer("no"))
    hit = await cache.lookup("p", at_similarity(v, 0.9995), T, text=unsafe)
    assert hit is not None and content(hit) == "no"


async def test_partitions_tenants_and_parameters_stay_apart(make_cache: MakeCache) -> None:
    cache = await make_cache()
    v = unit(4)
    alice = partition_key("phi4", "key:alice", request())
    bob = partition_key("phi4", "key:bob", request())
    await cache.store(alice, v, "What is 2+2?", answer(), tenant="key:alice")
    assert await cache.lookup(alice, v, T) is not None
    assert await cache.lookup(bob, v, T) is None
    hotter = partition_key("phi4", "key:alice", request(temperature=1.5))
    assert await cache.lookup(hotter, v, T) is None
    # partition names that are not plain hex still filter exactly
    odd = 'tenant "x"|user:\\bob'
    await cache.store(odd, v, "odd", answer("odd"), tenant=odd)
    hit = await cache.lookup(odd, v, T)
    assert hit is not None and content(hit) == "odd"
    assert await cache.lookup('tenant "x"|user:\\bo', v, T) is None


async def test_no_duplicates(make_cache: MakeCache) -> None:
    cache = await make_cache()
    v = unit(5)
    assert await cache.store("p", v, "q", answer("first"))
    assert not await cache.store("p", at_similarity(v, 0.9995), "q again", answer("second"))
    assert await cache.store("p", at_similarity(v, 0.99), "close", answer("third"))
    assert await cache.store("other", v, "q", answer("elsewhere"))
    s = cache.stats()
    assert (s.entries, s.duplicates) == (3, 1)
    hit = await cache.lookup("p", v, T)
    assert hit is not None and content(hit) == "first"


async def test_ttl_with_an_injected_clock(make_cache: MakeCache) -> None:
    clock = Clock()
    cache = await make_cache(ttl_s=60, clock=clock)
    v = unit(6)
    await cache.store("p", v, "q", answer())
    clock.t += 59
    assert await cache.lookup("p", v, T) is not None
    clock.t += 2  # hits do not extend the TTL
    assert await cache.lookup("p", v, T) is None
    # an expired twin does not block storing a fresh answer
    assert await cache.store("p", v, "q", answer("new"))
    hit = await cache.lookup("p", v, T)
    assert hit is not None and content(hit) == "new"
    clock.t += 61
    assert await cache.sweep() >= 1  # type: ignore[attr-defined]
    assert cache.stats().entries == 0 and cache.stats().expirations >= 1


async def test_invalidate_and_flush(make_cache: MakeCache) -> None:
    cache = await make_cache()
    for i in range(5):
        await cache.store("a", unit(i), f"a{i}", answer())
        await cache.store("b", unit(i), f"b{i}", answer())
    assert await cache.invalidate("a") == 5
    assert await cache.invalidate("a") == 0
    assert await cache.lookup("a", unit(0), T) is None
    hit = await cache.lookup("b", unit(0), T)
    assert hit is not None and hit.text == "b0"
    assert cache.stats().entries == 5
    assert await cache.flush() == 5
    assert cache.stats().entries == 0 and cache.stats().removed == 10
    assert await cache.lookup("b", unit(0), T) is None
    assert await cache.store("a", unit(0), "q", answer())


async def test_capacity_evicts_the_largest_tenants_oldest(make_cache: MakeCache) -> None:
    cache = await make_cache(capacity=6)
    quiet = [unit(i) for i in (1, 2)]
    for i, v in enumerate(quiet):
        await cache.store("quiet-p", v, f"q{i}", answer(), tenant="quiet")
    for i in range(20):
        await cache.store(f"noisy-p{i % 3}", unit(100 + i), f"n{i}", answer(), tenant="noisy")
    for i, v in enumerate(quiet):
        hit = await cache.lookup("quiet-p", v, T)
        assert hit is not None and hit.text == f"q{i}"
    assert cache.stats().entries <= 6
    assert await cache.lookup("noisy-p0", unit(100), T) is None  # its oldest went first
    assert await cache.lookup("noisy-p1", unit(119), T) is not None  # its newest stays


async def test_a_tenant_quota_replaces_the_tenants_own_entries(make_cache: MakeCache) -> None:
    cache = await make_cache(capacity=100, tenant_quota=3)
    for i in range(5):
        await cache.store("p", unit(i), f"a{i}", answer(), tenant="a")
    await cache.store("q", unit(50), "b0", answer(), tenant="b")
    assert cache.stats().entries == 4 and cache.stats().evictions == 2
    assert await cache.lookup("p", unit(0), T) is None
    assert [await cache.lookup("p", unit(i), T) is not None for i in (2, 3, 4)] == [True] * 3
    assert await cache.lookup("q", unit(50), T) is not None


async def test_invalid_embeddings_are_refused(make_cache: MakeCache) -> None:
    cache = await make_cache()
    v = unit(3)
    assert await cache.store("p", 7.5 * v, "q", answer())
    hit = await cache.lookup("p", 0.1 * v, T)
    assert hit is not None and hit.similarity == pytest.approx(1.0, abs=1e-5)
    assert await cache.lookup("p", [0.0] * DIM, T) is None
    assert await cache.lookup("p", [1.0] * (DIM + 1), T) is None
    assert cache.stats().invalid == 2


# --------------------------------------------------------------------------- Milvus only


def test_payloads_round_trip_compressed_when_large() -> None:
    small, large = answer("x"), answer("y" * 50_000)
    p = encode_payload("q", small)
    assert p[0] == "j" and decode_payload(p)[1].body == small.body
    p = encode_payload("q", large)
    assert p[0] == "z" and len(p) < 2000 and decode_payload(p) == ("q", large)
    assert literal("0f" * 32) == "0f" * 32
    assert literal('a"b').startswith("~") and '"' not in literal('a"b')


async def test_large_answers_compressed_or_refused(milvus_server) -> None:
    cache = MilvusCache(milvus_server.uri, DIM, collection=_collection(), timeout_s=5.0,
                        max_answer_bytes=100_000)
    assert await cache.start()
    try:
        assert await cache.store("p", unit(1), "q", answer("a" * 90_000))  # compresses well
        hit = await cache.lookup("p", unit(1), T)
        assert hit is not None and content(hit) == "a" * 90_000
        assert not await cache.store("p", unit(2), "q", answer("b" * 120_000))  # over the cap
        random_text = secrets.token_urlsafe(70_000)  # does not compress under one field
        assert not await cache.store("p", unit(3), "q", answer(random_text))
        assert cache.stats().invalid == 2
    finally:
        await cache.close()


async def test_another_dimension_or_model_is_a_config_error(milvus_server) -> None:
    name = _collection()
    first = MilvusCache(milvus_server.uri, DIM, collection=name, model_id="minilm:32:abc")
    assert await first.start()
    await first.close()
    same = MilvusCache(milvus_server.uri, DIM, collection=name, model_id="minilm:32:abc")
    assert await same.start()  # what a restart or a second replica does
    await same.close()
    for dim, model in ((DIM * 2, "minilm:32:abc"), (DIM, "other:32:def")):
        wrong = MilvusCache(milvus_server.uri, dim, collection=name, model_id=model)
        with pytest.raises(ConfigError) as e:
            await wrong.start()
        assert "cache.milvus.collection" in str(e.value) and name in str(e.value)
        await wrong.close()


async def test_two_caches_share_one_collection(milvus_server) -> None:
    name = _collection()
    a = MilvusCache(milvus_server.uri, DIM, collection=name, timeout_s=5.0)
    b = MilvusCache(milvus_server.uri, DIM, collection=name, timeout_s=5.0)
    assert await a.start() and await b.start()
    try:
        await a.store("p", unit(1), "q", answer("from a"))
        hit = await b.lookup("p", unit(1), T)
        assert hit is not None and content(hit) == "from a"
        assert await b.flush() == 1
        assert await a.lookup("p", unit(1), T) is None
    finally:
        await a.close()
        await b.close()


async def test_unreachable_milvus_bypasses_the_cache(tmp_path) -> None:
    from router_svc.cache.milvus_server import MilvusLiteServer

    metrics = Metrics.create()
    server = MilvusLiteServer(tmp_path / "down.db").start()
    cache = MilvusCache(server.uri, DIM, collection="c", timeout_s=1.0, retry_s=0.2,
                        events=metrics)
    try:
        assert await cache.start() and not cache.degraded
        await cache.store("p", unit(1), "q", answer("kept"))
        server.stop()
        t0 = time.monotonic()
        assert await cache.lookup("p", unit(1), T) is None  # a miss, not an error
        assert not await cache.store("p", unit(2), "q", answer())
        assert time.monotonic() - t0 < 10
        assert cache.degraded and cache.problem
        assert await cache.flush() == 0
        errors = metrics.registry.get_sample_value(
            "router_cache_backend_errors_total", {"op": "lookup"})
        assert errors == 1
        t0 = time.monotonic()
        for _ in range(20):  # degraded: skipped at once, no waiting on Milvus per call
            assert await cache.lookup("p", unit(1), T) is None
        assert time.monotonic() - t0 < 1.0
        server.start()  # the same data file: the entry is still there
        task = asyncio.get_running_loop().create_task(cache.maintain(sweep_interval_s=60))
        try:
            for _ in range(100):
                if not cache.degraded:
                    break
                await asyncio.sleep(0.2)
            assert not cache.degraded
            hit = await cache.lookup("p", unit(1), T)
            assert hit is not None and content(hit) == "kept"
        finally:
            task.cancel()
    finally:
        await cache.close()
        server.stop()


async def test_a_slow_milvus_misses_within_the_deadline(milvus_server) -> None:
    cache = MilvusCache(milvus_server.uri, DIM, collection=_collection(), timeout_s=0.3)
    assert await cache.start()
    original = cache._search_sync

    def slow(*args: Any) -> Any:
        time.sleep(2.0)
        return original(*args)

    cache._search_sync = slow  # type: ignore[method-assign]
    try:
        t0 = time.monotonic()
        assert await cache.lookup("p", unit(1), T) is None
        assert time.monotonic() - t0 < 1.5
        assert cache.degraded and "deadline" in (cache.problem or "")
    finally:
        await cache.close()


async def test_milvus_down_at_start_up_starts_degraded() -> None:
    cache = MilvusCache("http://127.0.0.1:9", DIM, collection="c", timeout_s=0.5)
    try:
        assert not await cache.start()
        assert cache.degraded
        assert await cache.lookup("p", unit(1), T) is None
        assert not await cache.store("p", unit(1), "q", answer())
    finally:
        await cache.close()


# --------------------------------------------------------------------------- config and up


def _config(cache: dict) -> Any:
    from router_svc.config.loading import parse_config
    from tests.conftest import ROOT, example_config_data

    data = example_config_data()
    data["cache"] = {**data.get("cache", {}), **cache}
    return parse_config(data, ROOT)


def test_the_milvus_section_is_read_and_checked() -> None:
    c = _config({"enabled": True, "backend": "milvus",
                 "milvus": {"uri": "http://milvus:19530", "collection": "answers",
                            "consistency_level": "Bounded", "timeout_s": 0.25}}).cache
    assert (c.backend, c.milvus.uri, c.milvus.collection) == ("milvus", "http://milvus:19530",
                                                             "answers")
    assert (c.milvus.consistency_level, c.milvus.timeout_s) == ("Bounded", 0.25)
    assert _config({}).cache.backend == "hnswlib"
    for bad, field in (({"collection": "no-dashes"}, "cache.milvus.collection"),
                       ({"uri": "milvus:19530"}, "cache.milvus.uri"),
                       ({"consistency_level": "Weak"}, "cache.milvus.consistency_level"),
                       ({"timeout_s": 0}, "cache.milvus.timeout_s")):
        with pytest.raises(ConfigError) as e:
            _config({"enabled": True, "backend": "milvus", "milvus": bad})
        assert field in str(e.value)
    with pytest.raises(ConfigError, match=r"cache\.backend"):
        _config({"backend": "redis"})


def test_up_cache_milvus_starts_an_embedded_milvus(monkeypatch) -> None:
    import router_svc.ops.up
    from router_svc.ops import cli
    from router_svc.ops.up import UpOptions, plan

    seen: list[UpOptions] = []
    monkeypatch.setattr(router_svc.ops.up, "up", lambda opts: seen.append(opts) or 0)
    assert cli.main(["up", "--cache", "milvus"]) == 0
    assert seen[0] == UpOptions(cache="milvus")
    p = plan(seen[0])
    assert p.milvus_port == 19530
    assert p.data["cache"]["enabled"] and p.data["cache"]["backend"] == "milvus"
    assert p.data["cache"]["milvus"]["uri"] == "http://127.0.0.1:19530"
    assert plan(UpOptions()).milvus_port is None
