"""Two routers, one cache: two real router apps (``create_app`` on real ports, the real
Triton embedding, the demo backends) sharing one Milvus (milvus-lite's server on loopback).
An answer stored through A is a hit through B, a flush through A is seen by B, tenants stay
apart, PII is stored by neither, and Milvus going away costs misses, never a failed request."""

from __future__ import annotations

import asyncio
import secrets

import aiohttp
import pytest

from tests.doors.http.test_cache import (
    ADMIN_ENV,
    PII_TEXT,
    QUESTION,
    TOKEN,
    admin,
    cached_router,
    calls,
    chat,
    chat_stream,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_backends")]


def milvus_cache(uri: str, collection: str | None = None, timeout_s: float = 5.0) -> dict:
    return {"backend": "milvus",
            "milvus": {"uri": uri, "collection": collection or "t_" + secrets.token_hex(6),
                       "timeout_s": timeout_s}}


async def two_routers(router_factory, uri: str, **cache) -> tuple[str, str]:
    settings = {**milvus_cache(uri), **cache}
    a = await cached_router(router_factory, **settings)
    b = await cached_router(router_factory, **settings)
    return a, b


async def ready(url: str) -> dict:
    async with aiohttp.ClientSession() as s, s.get(f"{url}/ready") as r:
        assert r.status == 200
        return await r.json()


async def test_an_answer_stored_through_one_replica_hits_through_the_other(
        router_factory, backends, milvus_server):
    a, b = await two_routers(router_factory, milvus_server.uri)
    assert (await ready(a))["cache"] == (await ready(b))["cache"] == "ok"
    first, h1 = await chat(a, QUESTION)
    assert h1["x-router-cache"] == "miss"
    second, h2 = await chat(b, QUESTION)
    assert h2["x-router-cache"] == "hit", dict(h2)
    assert second.choices[0].message.content == first.choices[0].message.content
    content, _, h3 = await chat_stream(b, QUESTION)  # replayed as a stream too
    assert h3["x-router-cache"] == "hit" and content == first.choices[0].message.content
    # and the other way round: a stream stored through B, a JSON hit through A
    other = "How do I reverse a list in Python?"
    streamed, _, h4 = await chat_stream(b, other)
    assert h4["x-router-cache"] == "miss"
    answer, h5 = await chat(a, other)
    assert h5["x-router-cache"] == "hit" and answer.choices[0].message.content == streamed
    assert calls(backends) == 2


async def test_a_flush_through_one_replica_is_seen_by_the_other(
        router_factory, backends, milvus_server, monkeypatch):
    monkeypatch.setenv(ADMIN_ENV, TOKEN)
    a, b = await two_routers(router_factory, milvus_server.uri, admin_token_env=ADMIN_ENV)
    await chat(a, QUESTION)
    _, h = await chat(b, QUESTION)
    assert h["x-router-cache"] == "hit"
    _, h = await chat(b, QUESTION)  # an exact repeat: B's repeat memo knows it now
    assert h["x-router-cache"] == "hit"
    status, body, _ = await admin(a, "POST", "/flush", TOKEN)
    assert status == 200 and body["removed"] == 1
    _, h = await chat(b, QUESTION)  # the memo must not serve what A flushed
    assert h["x-router-cache"] == "miss"
    assert calls(backends) == 2
    # entries: the shared collection's as last counted (by B's store here; the other
    # replicas' counts catch up in the background, within 5 x retry_s)
    status, stats, _ = await admin(b, "GET", "/stats", TOKEN)
    assert status == 200 and stats["entries"] == 1 and stats["stores"] == 1


async def test_tenants_stay_apart_and_pii_is_stored_by_neither(
        router_factory, backends, milvus_server):
    a, b = await two_routers(router_factory, milvus_server.uri, allow_all_pii=True)
    _, ha = await chat(a, QUESTION, key="alice-key")
    _, hb = await chat(b, QUESTION, key="bob-key")
    assert ha["x-router-cache"] == hb["x-router-cache"] == "miss"
    _, h = await chat(b, QUESTION, key="alice-key")
    assert h["x-router-cache"] == "hit"
    assert calls(backends) == 2
    for url in (a, b, a):
        _, h = await chat(url, PII_TEXT, model="phi4")
        assert "EMAIL" in h["x-router-pii"] and h["x-router-cache"] == "miss"
    assert calls(backends) == 5


async def test_milvus_going_away_costs_misses_not_requests(
        router_factory, backends, tmp_path):
    from router_svc.cache.milvus_server import MilvusLiteServer

    server = MilvusLiteServer(tmp_path / "outage.db").start()
    try:
        a, b = await two_routers(router_factory, server.uri,
                                 **milvus_cache(server.uri, timeout_s=1.0))
        await chat(a, QUESTION)
        _, h = await chat(b, QUESTION)
        assert h["x-router-cache"] == "hit"
        server.stop()
        for url in (a, b, a, b):  # every request answered, from the backend
            completion, h = await chat(url, QUESTION, key="other-key")
            assert h["x-router-cache"] == "miss" and completion.choices[0].message.content
            content, _, h = await chat_stream(url, "How do I reverse a list in Python?")
            assert h.get("x-router-cache") == "miss" and content, dict(h)
        assert (await ready(a))["cache"] == "degraded"  # ready all the same (status 200)
        server.start()  # the same data file: the answers are still there
        for _ in range(60):
            _, h = await chat(b, QUESTION)
            if h["x-router-cache"] == "hit":
                break
            await asyncio.sleep(0.5)
        assert h["x-router-cache"] == "hit"
        for _ in range(20):
            if (await ready(a))["cache"] == "ok":
                break
            await asyncio.sleep(0.5)
        assert (await ready(a))["cache"] == "ok"
    finally:
        server.stop()
