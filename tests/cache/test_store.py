"""The semantic cache: keys, hits and misses, isolation, TTL, LRU, slots, snapshots, concurrency."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router_svc.cache.capture import StreamCapture
from router_svc.cache.index import FlatIndex
from router_svc.cache.snapshot import save_snapshot
from router_svc.cache.store import (
    ANONYMOUS,
    CachedResponse,
    HnswCache,
    IndexParams,
    cache_directives,
    cache_tenant,
    fresh_copy,
    is_complete,
    partition_key,
    plan_request,
    run_maintenance,
    texts_compatible,
)
from router_svc.core.metrics import Metrics

DIM = 32
T = 0.9  # threshold used throughout
HNSW = IndexParams(hnsw_min_entries=1)  # every partition on HNSW from its first entry
# The behaviour must not depend on the index kind: exact (flat) and HNSW partitions both.
both_kinds = pytest.mark.parametrize("params", [None, HNSW], ids=["flat", "hnsw"])


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def unit(seed: int, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def at_similarity(v: np.ndarray, sim: float, seed: int = 99) -> np.ndarray:
    """A unit vector whose inner product with unit ``v`` is exactly ``sim``."""
    u = unit(seed, v.size)
    u = u - (u @ v) * v
    u /= np.linalg.norm(u)
    return (sim * v + np.sqrt(1 - sim * sim) * u).astype(np.float32)


def chat_body(content: str = "hello", **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "phi4",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        **extra,
    }


def answer(content: str = "hello") -> CachedResponse:
    r = CachedResponse.from_body("chat", chat_body(content))
    assert r is not None
    return r


def request(text: str = "What is 2+2?", **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": text}], **extra}


# --------------------------------------------------------------------------- keys


def test_partition_key_covers_what_changes_the_answer() -> None:
    base = partition_key("phi4", "key:a", request())
    assert len(base) == 64 and int(base, 16) >= 0
    assert partition_key("phi4", "key:a", request()) == base
    # the last user turn's text is what the embedding matches, not part of the key
    assert partition_key("phi4", "key:a", request("What's two plus two?")) == base
    different = [
        partition_key("gemma3:27b", "key:a", request()),
        partition_key("phi4", "key:b", request()),
        partition_key("phi4", "key:a", request(temperature=0.2)),
        partition_key("phi4", "key:a", request(top_p=0.5)),
        partition_key("phi4", "key:a", request(max_tokens=10)),
        partition_key("phi4", "key:a", request(seed=1)),
        partition_key("phi4", "key:a", request(n=2)),
        partition_key("phi4", "key:a", request(tools=[{"type": "function"}])),
        partition_key("phi4", "key:a", request(response_format={"type": "json_object"})),
        partition_key("phi4", "key:a", request(top_k=5)),  # unknown extras count too
        partition_key("phi4", "key:a", {**request(), "messages": [
            {"role": "system", "content": "Be verbose."},
            {"role": "user", "content": "What is 2+2?"}]}),
        partition_key("phi4", "key:a", {**request(), "messages": [
            {"role": "user", "content": "earlier"}, {"role": "assistant", "content": "ok"},
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 2+2?"}]}),
        partition_key("phi4", "key:a", {**request(), "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"},
                                         {"type": "image_url", "image_url": {"url": "x"}}]}]}),
        partition_key("phi4", "key:a", {"model": "auto", "prompt": "What is 2+2?"}),
    ]
    assert base not in different
    assert len(set(different)) == len(different)


def test_partition_key_ignores_stream_and_bookkeeping() -> None:
    base = partition_key("phi4", "key:a", request())
    assert partition_key("phi4", "key:a", request(stream=True)) == base
    extras = {"stream_options": {"include_usage": True}, "user": "u1", "metadata": {"a": "b"}}
    assert partition_key("phi4", "key:a", request(stream=True, **extras)) == base
    assert partition_key("phi4", "key:a", {**request(), "model": "phi4"}) == base


def test_completion_prompt_shape_is_part_of_the_key() -> None:
    one = partition_key("phi4", ANONYMOUS, {"model": "auto", "prompt": "a\nb"})
    two = partition_key("phi4", ANONYMOUS, {"model": "auto", "prompt": ["a", "b"]})
    assert one != two


def test_cache_tenant() -> None:
    assert cache_tenant(None, {"user": "u1"}, by_user=True) is None  # shares nothing
    assert cache_tenant("key:a", {"user": "u1"}, by_user=False) == "key:a"
    assert cache_tenant("key:a", {"user": "u1"}, by_user=True) == "key:a|user:u1"
    assert cache_tenant("key:a", {"user": 7}, by_user=True) == "key:a"  # not a user id
    assert cache_tenant("key:a", {}, by_user=True) == "key:a"


# --------------------------------------------------------------------------- responses


def test_fresh_copy_gives_a_new_id_and_created() -> None:
    body = chat_body()
    out = fresh_copy(body, now=1800000000.7)
    assert out["id"].startswith("chatcmpl-") and out["id"] != body["id"]
    assert out["created"] == 1800000000
    assert body["id"] == "chatcmpl-abc123" and body["created"] == 1700000000
    out["choices"][0]["message"]["content"] = "changed"
    assert body["choices"][0]["message"]["content"] == "hello"  # deep copy
    assert fresh_copy({"object": "text_completion"})["id"].startswith("cmpl-")
    assert fresh_copy({"id": "abc", "object": "chat.completion"})["id"].startswith("chatcmpl-")
    assert fresh_copy(body)["id"] != fresh_copy(body)["id"]


def test_only_complete_answers_are_cacheable() -> None:
    assert is_complete("chat", chat_body())
    assert not is_complete("completion", chat_body())
    assert not is_complete("chat", {"error": {"message": "boom"}})
    partial = chat_body()
    partial["choices"][0]["finish_reason"] = None
    assert CachedResponse.from_body("chat", partial) is None
    assert CachedResponse.from_body("chat", {**chat_body(), "choices": []}) is None
    text = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "text": "x", "finish_reason": "length"}]}
    assert is_complete("completion", text)


def test_replay_sse_parses_with_the_openai_client() -> None:
    import httpx
    import openai
    from openai.types.chat import ChatCompletionChunk

    events = answer("four").replay_sse(include_usage=True)
    assert events[-1] == b"data: [DONE]\n\n"
    response = httpx.Response(200, content=b"".join(events),
                              headers={"content-type": "text/event-stream"},
                              request=httpx.Request("POST", "http://test/v1/chat/completions"))
    client = openai.OpenAI(api_key="x", base_url="http://test/v1")
    chunks = list(openai.Stream(cast_to=ChatCompletionChunk, response=response, client=client))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "four"
    assert len({c.id for c in chunks}) == 1 and chunks[0].id != "chatcmpl-abc123"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 7


def test_stream_capture_round_trip_and_refusals() -> None:
    cap = StreamCapture("chat")
    for ev in answer("streamed answer").replay_sse():
        cap.feed(ev)
    got = cap.response(usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3})
    assert got is not None
    assert got.body["choices"][0]["message"]["content"] == "streamed answer"
    assert got.body["usage"]["total_tokens"] == 3

    aborted = StreamCapture("chat")
    for ev in answer().replay_sse()[:-1]:  # no [DONE]
        aborted.feed(ev)
    assert aborted.response() is None

    errored = StreamCapture("chat")
    for ev in answer().replay_sse()[:-1]:
        errored.feed(ev)
    errored.feed(b'data: {"error": {"message": "backend died"}}\n\n')
    errored.feed(b"data: [DONE]\n\n")
    assert errored.response() is None

    tools = StreamCapture("chat")
    base = {"id": "chatcmpl-t", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    for delta, fin in [
        ({"role": "assistant", "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function",
             "function": {"name": "f", "arguments": ""}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}, None),
        ({}, "tool_calls"),
    ]:
        tools.feed(b"data: " + json.dumps(
            {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": fin}]}).encode())
    tools.feed(b"data: [DONE]")
    msg = tools.response().body["choices"][0]["message"]  # type: ignore[union-attr]
    assert msg["content"] is None
    assert msg["tool_calls"] == [{"id": "call_1", "type": "function",
                                  "function": {"name": "f", "arguments": '{"a": 1}'}}]


# --------------------------------------------------------------------------- the store


@both_kinds
async def test_hit_and_miss(params: IndexParams | None) -> None:
    cache = HnswCache(DIM, params=params)
    v = unit(1)
    assert await cache.lookup("p", v, T) is None  # empty
    assert await cache.store("p", v, "What is 2+2?", answer("4"))
    hit = await cache.lookup("p", v, T)
    assert hit is not None and hit.similarity == pytest.approx(1.0, abs=1e-5)
    assert hit.text == "What is 2+2?"
    assert hit.response.body["choices"][0]["message"]["content"] == "4"
    assert await cache.lookup("p", unit(2), T) is None
    s = cache.stats()
    assert (s.lookups, s.hits, s.misses, s.stores, s.entries) == (3, 1, 2, 1, 1)


@both_kinds
async def test_near_duplicate_hits_dissimilar_misses(params: IndexParams | None) -> None:
    cache = HnswCache(DIM, params=params)
    v = unit(1)
    await cache.store("p", v, "q", answer())
    hit = await cache.lookup("p", at_similarity(v, 0.95), T)
    assert hit is not None and hit.similarity == pytest.approx(0.95, abs=1e-4)
    assert hit.text == "q"
    assert await cache.lookup("p", at_similarity(v, 0.85), T) is None
    assert await cache.lookup("p", -v, T) is None
    # the best match wins among several
    w = at_similarity(v, 0.97, seed=5)
    await cache.store("p", w, "w", answer("w"))
    hit = await cache.lookup("p", w, T)
    assert hit is not None and hit.text == "w"


@pytest.mark.parametrize(
    ("a", "b", "ok"),
    [
        ("How do I reset my password?", "How can I reset my password?", True),
        ("Is it safe to drink tap water?", "Is it unsafe to drink tap water?", False),
        ("Is it safe to drink tap water?", "Is it not safe to drink tap water?", False),
        ("Why isn't my code compiling?", "Why is my code compiling?", False),
        ("Why isn't my code compiling?", "Why is my code not compiling?", True),
        ("Convert 100 USD to EUR", "Convert 200 USD to EUR", False),
        ("Convert 1,000 USD to EUR", "convert 1000 usd to eur", True),
        ("How do I connect the VPN?", "How do I disconnect the VPN?", False),
        ("Is the series infinite?", "Is the series finite?", False),
        ("What does the United Nations do?", "What do the United Nations do?", True),
    ],
)
def test_text_guard(a: str, b: str, ok: bool) -> None:
    assert texts_compatible(a, b) is ok
    assert texts_compatible(b, a) is ok


@both_kinds
async def test_guard_turns_an_opposite_question_into_a_miss(params: IndexParams | None) -> None:
    cache = HnswCache(DIM, params=params)
    v = unit(7)
    safe, unsafe = "Is it safe to drink tap water?", "Is it unsafe to drink tap water?"
    await cache.store("p", v, safe, answer("yes"))
    # The embedding puts these two at 0.99: only the text tells them apart.
    assert await cache.lookup("p", at_similarity(v, 0.99), T, text=unsafe) is None
    assert cache.stats().guarded == 1
    hit = await cache.lookup("p", at_similarity(v, 0.99), T, text=safe)
    assert hit is not None and hit.text == safe
    hit = await cache.lookup("p", v, T)  # no text: similarity alone decides
    assert hit is not None and hit.text == safe
    # a near-identical vector with an incompatible text is stored, not taken as a duplicate
    assert await cache.store("p", at_similarity(v, 0.9995), unsafe, answer("no"))
    hit = await cache.lookup("p", at_similarity(v, 0.9995), T, text=unsafe)
    assert hit is not None and hit.text == unsafe
    off = HnswCache(DIM, params=params, guard=None)
    await off.store("p", v, safe, answer("yes"))
    hit = await off.lookup("p", at_similarity(v, 0.99), T, text=unsafe)
    assert hit is not None and hit.text == safe


async def test_unnormalised_and_invalid_embeddings() -> None:
    cache = HnswCache(DIM)
    v = unit(3)
    assert await cache.store("p", 7.5 * v, "q", answer())
    hit = await cache.lookup("p", 0.1 * v, T)  # normalised on the way in
    assert hit is not None and hit.text == "q"
    assert hit.similarity == pytest.approx(1.0, abs=1e-5)
    assert await cache.lookup("p", np.zeros(DIM), T) is None
    assert await cache.lookup("p", np.ones(DIM + 1), T) is None  # wrong dimension: a miss
    assert not await cache.store("p", np.full(DIM, np.nan), "q", answer())
    assert cache.stats().invalid == 3


@both_kinds
async def test_tenants_and_parameters_never_share_answers(params: IndexParams | None) -> None:
    cache = HnswCache(DIM, params=params)
    v = unit(4)
    alice = partition_key("phi4", "key:alice", request())
    bob = partition_key("phi4", "key:bob", request())
    await cache.store(alice, v, "What is 2+2?", answer())
    hit = await cache.lookup(alice, v, T)
    assert hit is not None and hit.text == "What is 2+2?"
    assert await cache.lookup(bob, v, T) is None
    rude = [{"role": "system", "content": "Be rude."}, {"role": "user", "content": "2+2?"}]
    other_system = partition_key("phi4", "key:alice", {**request(), "messages": rude})
    hotter = partition_key("phi4", "key:alice", request(temperature=1.5))
    assert await cache.lookup(other_system, v, T) is None
    assert await cache.lookup(hotter, v, T) is None


@both_kinds
async def test_no_duplicates(params: IndexParams | None) -> None:
    cache = HnswCache(DIM, params=params)
    v = unit(5)
    assert await cache.store("p", v, "q", answer("first"))
    assert not await cache.store("p", at_similarity(v, 0.9995), "q again", answer("second"))
    assert await cache.store("p", at_similarity(v, 0.99), "close", answer("third"))
    assert await cache.store("other", v, "q", answer("elsewhere"))  # other partitions are apart
    s = cache.stats()
    assert (s.entries, s.duplicates) == (3, 1)
    hit = await cache.lookup("p", v, T)
    assert hit is not None and hit.response.body["choices"][0]["message"]["content"] == "first"


@both_kinds
async def test_ttl_expiry_with_an_injected_clock(params: IndexParams | None) -> None:
    clock = Clock()
    cache = HnswCache(DIM, params=params, ttl_s=60, clock=clock)
    v = unit(6)
    await cache.store("p", v, "q", answer())
    clock.t += 59
    hit = await cache.lookup("p", v, T)
    assert hit is not None and hit.text == "q"
    clock.t += 2  # hits do not extend the TTL
    assert await cache.lookup("p", v, T) is None
    s = cache.stats()
    assert (s.entries, s.expirations, s.partitions) == (0, 1, 0)
    # an expired twin does not block storing a fresh answer
    await cache.store("p", v, "q", answer("old"))
    clock.t += 61
    assert await cache.store("p", v, "q", answer("new"))
    hit = await cache.lookup("p", v, T)
    assert hit is not None and hit.response.body["choices"][0]["message"]["content"] == "new"


@both_kinds
async def test_sweep_removes_expired_entries(params: IndexParams | None) -> None:
    clock = Clock()
    cache = HnswCache(DIM, params=params, ttl_s=10, clock=clock)
    for i in range(20):
        await cache.store(f"p{i % 3}", unit(100 + i), f"q{i}", answer())
        clock.t += 1
    assert await cache.sweep() == 11  # now t0+20: stored at t0..t0+10 have expired
    assert cache.stats().entries == 9 and cache.stats().expirations == 11
    clock.t += 100
    assert cache.sweep_sync() == 9
    assert cache.stats().entries == 0 and cache.stats().partitions == 0


@both_kinds
async def test_eviction_at_capacity_is_lru(params: IndexParams | None) -> None:
    cache = HnswCache(DIM, params=params, capacity=3)
    a, b, c, d = (unit(i) for i in (11, 12, 13, 14))
    for v, name in ((a, "a"), (b, "b"), (c, "c")):
        await cache.store("p", v, name, answer(name))
    hit = await cache.lookup("p", a, T)  # a is now the most recently used
    assert hit is not None and hit.text == "a"
    await cache.store("q", d, "d", answer("d"))  # eviction is global, over all partitions
    assert await cache.lookup("p", b, T) is None  # b was least recently used
    for v, part, name in ((a, "p", "a"), (c, "p", "c"), (d, "q", "d")):
        hit = await cache.lookup(part, v, T)
        assert hit is not None and hit.text == name
        assert hit.response.body["choices"][0]["message"]["content"] == name
    s = cache.stats()
    assert (s.entries, s.evictions) == (3, 1)


@both_kinds
async def test_one_tenant_cannot_flush_the_others(params: IndexParams | None) -> None:
    cache = HnswCache(DIM, params=params, capacity=6)
    quiet = [unit(i) for i in (1, 2)]
    for i, v in enumerate(quiet):
        await cache.store("quiet-p", v, f"q{i}", answer(), tenant="quiet")
    for i in range(40):  # a tenant storing far more than the capacity
        await cache.store(f"noisy-p{i % 3}", unit(100 + i), f"n{i}", answer(), tenant="noisy")
    for i, v in enumerate(quiet):  # the largest tenant lost its own entries, not these
        hit = await cache.lookup("quiet-p", v, T)
        assert hit is not None and hit.text == f"q{i}"
    assert cache.stats().entries == 6
    assert await cache.lookup("noisy-p0", unit(100), T) is None  # its oldest went first
    assert await cache.lookup("noisy-p0", unit(139), T) is not None  # its newest stays


@both_kinds
async def test_a_tenant_quota_replaces_the_tenants_own_entries(
        params: IndexParams | None) -> None:
    cache = HnswCache(DIM, params=params, capacity=100, tenant_quota=3)
    for i in range(5):
        await cache.store("p", unit(i), f"a{i}", answer(), tenant="a")
    await cache.store("q", unit(50), "b0", answer(), tenant="b")
    assert cache.stats().entries == 4 and cache.stats().evictions == 2
    assert await cache.lookup("p", unit(0), T) is None
    assert [await cache.lookup("p", unit(i), T) is not None for i in (2, 3, 4)] == [True] * 3
    assert await cache.lookup("q", unit(50), T) is not None


async def test_tenants_survive_a_snapshot(tmp_path: Path) -> None:
    cache = HnswCache(DIM, capacity=3, model_id="m")
    await cache.store("p", unit(1), "a", answer(), tenant="a")
    await cache.store("q", unit(2), "b1", answer(), tenant="b")
    await cache.store("q", unit(3), "b2", answer(), tenant="b")
    assert await cache.save(tmp_path)
    again = HnswCache(DIM, capacity=3, model_id="m")
    assert await again.load(tmp_path) == 3
    await again.store("q", unit(4), "b3", answer(), tenant="b")  # b is the largest
    assert await again.lookup("p", unit(1), T) is not None
    assert await again.lookup("q", unit(2), T) is None


@pytest.mark.parametrize(("slot_factor", "slots"), [(1.0, 8), (2.0, 16)])
async def test_deleted_slots_are_reused(slot_factor: float, slots: int) -> None:
    params = IndexParams(initial_slots=4, slot_factor=slot_factor, hnsw_min_entries=1)
    cache = HnswCache(DIM, capacity=8, params=params)
    for i in range(200):
        assert await cache.store("p", unit(1000 + i), f"q{i}", answer())
    s = cache.stats()
    assert s.entries == 8 and s.evictions == 192
    # grew to its slot budget once, then only reused deleted slots
    assert s.slots == slots and s.reused == 200 - slots
    info = cache.partition_info("p")
    assert info is not None and info.kind == "hnsw"
    assert info.entries + info.deleted == slots  # every slot holds a live or deleted entry
    for i in range(192, 200):
        hit = await cache.lookup("p", unit(1000 + i), T)
        assert hit is not None and hit.text == f"q{i}"
    for i in range(192):
        assert await cache.lookup("p", unit(1000 + i), T) is None


async def test_sweep_compacts_a_churning_partition_back_to_free_slots() -> None:
    params = IndexParams(initial_slots=4, hnsw_min_entries=1, flat_max_entries=0)
    cache = HnswCache(DIM, capacity=16, params=params)
    for i in range(32):  # 16 live, 16 deleted, all 32 slots used
        await cache.store("p", unit(1000 + i), f"q{i}", answer())
    info = cache.partition_info("p")
    assert info is not None and (info.entries, info.deleted) == (16, 16)
    await cache.sweep()
    # The last store also queued the same compaction as a background build, which starts
    # once the sweep yields; while it holds the lock a lookup answers "busy" (None).
    await cache.drain()
    info = cache.partition_info("p")
    assert info is not None and info.kind == "hnsw"
    assert info.deleted == 0 and info.entries == 16
    assert info.slots == 32
    await cache.store("p", unit(5000), "new", answer())  # a free slot again: no reuse
    assert cache.stats().reused == 0
    for i in range(17, 32):
        hit = await cache.lookup("p", unit(1000 + i), T)
        assert hit is not None and hit.text == f"q{i}"


@pytest.mark.parametrize(("flat_max", "kind"), [(0, "hnsw"), (1024, "flat")])
async def test_compaction_frees_slots_of_shrunken_partitions(flat_max: int, kind: str) -> None:
    params = IndexParams(initial_slots=4, hnsw_min_entries=1, flat_max_entries=flat_max)
    cache = HnswCache(DIM, capacity=64, params=params)
    for i in range(64):
        await cache.store("big", unit(2000 + i), f"big{i}", answer())
    for i in range(60):  # evicts 60 of big's entries: 4 live, 60 deleted slots
        await cache.store("other", unit(3000 + i), "q", answer())
    big = cache.partition_info("big")
    assert big is not None and big.slots == 64
    assert (big.kind, big.entries, big.deleted) == ("hnsw", 4, 60)
    await cache.sweep()
    big = cache.partition_info("big")
    assert big is not None
    assert big.kind == kind and big.deleted == 0  # rebuilt, or demoted to exact search
    if kind == "hnsw":
        assert (cache.stats().slots, cache.stats().rebuilds) == (8 + 64, 1)
    else:  # "other" (60 live) is below flat_max_entries too
        assert (cache.stats().slots, cache.stats().rebuilds) == (0, 2)
    for i in range(60, 64):  # survivors still found after the rebuild
        hit = await cache.lookup("big", unit(2000 + i), T)
        assert hit is not None and hit.text == f"big{i}"
    assert await cache.store("big", unit(4000), "q", answer())


@both_kinds
async def test_invalidate_and_flush(params: IndexParams | None) -> None:
    cache = HnswCache(DIM, params=params)
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
    assert await cache.store("a", unit(0), "q", answer())


async def test_a_busy_lock_means_miss_not_wait() -> None:
    cache = HnswCache(DIM)
    await cache.store("p", unit(1), "q", answer())
    with cache._lock:  # what a snapshot or sweep thread does for a moment
        assert await cache.lookup("p", unit(1), T) is None
        assert not await cache.store("p", unit(2), "q", answer())
    assert cache.stats().busy == 2
    hit = await cache.lookup("p", unit(1), T)
    assert hit is not None and hit.text == "q"


async def test_closed_cache_neither_hits_nor_stores() -> None:
    cache = HnswCache(DIM)
    await cache.store("p", unit(1), "q", answer())
    await cache.close()
    assert await cache.lookup("p", unit(1), T) is None
    assert not await cache.store("p", unit(2), "q", answer())


async def test_events_reach_the_metrics() -> None:
    m = Metrics.create()
    cache = HnswCache(DIM, capacity=1, events=m)
    await cache.store("p", unit(1), "q", answer())
    await cache.lookup("p", unit(1), T)
    await cache.lookup("p", unit(2), T)
    await cache.store("p", unit(2), "q", answer())
    value = m.registry.get_sample_value
    assert value("router_cache_requests_total", {"result": "hit"}) == 1
    assert value("router_cache_requests_total", {"result": "miss"}) == 1
    assert value("router_cache_stores_total") == 2
    assert value("router_cache_evictions_total", {"reason": "capacity"}) == 1
    assert value("router_cache_entries") == 1
    assert value("router_cache_lookup_seconds_count") == 2
    assert value("router_cache_hit_similarity_count") == 1
    assert value("router_cache_hit_similarity_bucket", {"le": "0.999"}) == 0


# --------------------------------------------------------------------------- snapshots


@both_kinds
async def test_snapshot_round_trip(tmp_path: Path, params: IndexParams | None) -> None:
    clock = Clock()
    cache = HnswCache(DIM, params=params, capacity=10, ttl_s=100, clock=clock, model_id="m1")
    for i in range(6):
        await cache.store(f"p{i % 2}", unit(i), f"q{i}", answer(f"a{i}"))
    clock.t += 50
    await cache.store("p0", unit(6), "q6", answer("a6"))  # expires 50 s after the others
    await cache.lookup("p0", unit(0), T)  # most recently used now
    assert await cache.save(tmp_path / "snap")
    assert await cache.save(tmp_path / "snap")  # a second snapshot replaces the first
    assert len([p for p in (tmp_path / "snap").iterdir() if p.name.startswith("snap-")]) == 1

    clock.t += 60  # the first six have expired by the time the snapshot is loaded
    again = HnswCache(DIM, params=params, capacity=10, ttl_s=100, clock=clock, model_id="m1")
    assert await again.load(tmp_path / "snap") == 1
    hit = await again.lookup("p0", unit(6), T)
    assert hit is not None and hit.text == "q6"
    assert hit.response.body == answer("a6").body
    assert await again.lookup("p0", unit(0), T) is None

    clock.t -= 60  # loaded in time: all seven, LRU order kept
    third = HnswCache(DIM, params=params, capacity=7, ttl_s=100, clock=clock, model_id="m1")
    assert await third.load(tmp_path / "snap") == 7
    await third.store("p1", unit(50), "new", answer())  # evicts the least recently used: q1
    assert await third.lookup("p1", unit(1), T) is None
    ids = []
    for i in (0, 2, 3, 4, 5, 6):  # the loaded entries that are left
        hit = await third.lookup(f"p{i % 2}", unit(i), T)
        assert hit is not None and hit.text == f"q{i}"
        assert hit.response.body == answer(f"a{i}").body
        ids.append(hit.entry_id)
    hit = await third.lookup("p1", unit(50), T)
    assert hit is not None and hit.text == "new"
    # ids go on after the loaded ones: a new entry never takes a loaded entry's id
    assert hit.entry_id not in ids and third.next_id > max([*ids, hit.entry_id])


@both_kinds
async def test_snapshot_files_are_the_owners_only(tmp_path: Path,
                                                  params: IndexParams | None) -> None:
    cache = HnswCache(DIM, params=params, capacity=10, ttl_s=100, model_id="m1")
    for i in range(4):
        await cache.store(f"p{i % 2}", unit(i), f"q{i}", answer(f"a{i}"))
    old = os.umask(0o022)  # a permissive umask must not make cached answers readable
    try:
        assert await cache.save(tmp_path / "snap")
    finally:
        os.umask(old)
    paths = list((tmp_path / "snap").rglob("*"))
    assert any(p.is_file() and p.suffix in (".npy", ".hnsw") for p in paths)
    for path in [tmp_path / "snap", *paths]:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


@both_kinds
async def test_snapshot_keeps_most_recent_when_capacity_shrank(
    tmp_path: Path, params: IndexParams | None
) -> None:
    cache = HnswCache(DIM, params=params, capacity=10)
    for i in range(6):
        await cache.store("p", unit(i), f"q{i}", answer())
    await cache.lookup("p", unit(0), T)
    await cache.save(tmp_path)
    small = HnswCache(DIM, params=params, capacity=2)
    assert await small.load(tmp_path) == 2
    for i in (0, 5):
        hit = await small.lookup("p", unit(i), T)
        assert hit is not None and hit.text == f"q{i}"
    assert await small.lookup("p", unit(1), T) is None
    assert small.stats().entries == 2


def _corrupt_index(d: Path) -> None:
    f = next(d.glob("snap-*/p0*"))
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    f.write_bytes(bytes(raw))


def _truncate_meta(d: Path) -> None:
    f = next(d.glob("snap-*/meta.json"))
    f.write_bytes(f.read_bytes()[:50])


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda d: (d / "CURRENT").unlink(), "no snapshot"),
        (lambda d: (d / "CURRENT").write_text("../../etc"), "not a snapshot"),
        (_corrupt_index, "checksum"),
        (_truncate_meta, "unusable"),
        (lambda d: next(d.glob("snap-*/p0*")).unlink(), "unusable"),
    ],
)
@both_kinds
async def test_missing_or_corrupt_snapshot_gives_empty_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Any, why: str,
    params: IndexParams | None,
) -> None:
    cache = HnswCache(DIM, params=params)
    for i in range(4):
        await cache.store("p", unit(i), "q", answer())
    assert await cache.save(tmp_path)
    damage(tmp_path)
    fresh = HnswCache(DIM)
    with caplog.at_level(logging.WARNING, logger="router_svc"):
        assert await fresh.load(tmp_path) == 0
    assert why in caplog.text
    assert fresh.stats().entries == 0
    assert await fresh.store("p", unit(0), "q", answer())  # and it works


async def test_snapshot_of_another_model_or_dimension_is_not_loaded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = HnswCache(DIM, model_id="build-a")
    await cache.store("p", unit(0), "q", answer())
    await cache.save(tmp_path)
    with caplog.at_level(logging.WARNING, logger="router_svc"):
        assert await HnswCache(DIM, model_id="build-b").load(tmp_path) == 0
        assert await HnswCache(DIM + 1, model_id="build-a").load(tmp_path) == 0
        assert await HnswCache(DIM, model_id="build-a").load(tmp_path / "nowhere") == 0
    assert "build-b" in caplog.text and "no snapshot" in caplog.text


async def test_save_failure_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = HnswCache(DIM)
    await cache.store("p", unit(0), "q", answer())
    with caplog.at_level(logging.WARNING, logger="router_svc"):
        assert not await cache.save(blocker)
    assert "failed" in caplog.text


# --------------------------------------------------------------------------- concurrency


async def test_concurrent_lookups_and_stores(tmp_path: Path) -> None:
    # Partitions flip between exact and HNSW while lookups and stores go on.
    params = IndexParams(initial_slots=2, hnsw_min_entries=20, flat_max_entries=10)
    cache = HnswCache(DIM, capacity=150, params=params)
    stop = threading.Event()

    def maintenance() -> None:  # sweeps and snapshots in a thread, as in production
        while not stop.is_set():
            cache.sweep_sync()
            cache._rebuild("p0")
            save_snapshot(cache, tmp_path)
            stop.wait(0.002)

    worker = threading.Thread(target=maintenance)
    worker.start()
    try:
        async def one(i: int, r: int) -> Any:
            await asyncio.sleep(0)
            k = i - i % 3  # i = k stores, k + 1 and k + 2 look the same up
            vec = unit(5000 + 900 * r + k)  # fresh vectors every round
            if i == k:
                return await cache.store(f"p{k % 4}", vec, f"q{i}", answer())
            return await cache.lookup(f"p{k % 4}", vec, T)

        # A store skips while maintenance holds the lock, so how many of a round's 300 get in
        # depends on the machine (on a loaded CI box once under 100 of 900 in three rounds).
        # Rounds go on until more were stored than the capacity, so eviction is exercised.
        results = []
        rounds = 0
        while rounds < 3 or (cache.stats().stores <= 150 and rounds < 100):
            results += await asyncio.gather(*(one(i, rounds) for i in range(900)))
            rounds += 1
    finally:
        stop.set()
        worker.join()
    await cache.drain()  # index builds the stores queued
    s = cache.stats()
    lookups = sum(1 for i in range(900) if i % 3) * rounds
    assert s.lookups == lookups == s.hits + s.misses
    assert s.entries <= 150 and s.entries == len(cache) == len(cache._lru)
    assert s.stores - s.evictions - s.expirations - s.removed == s.entries
    infos = [cache.partition_info(k) for k in cache.partition_keys()]
    assert all(info is not None for info in infos)
    assert sum(info.entries for info in infos if info) == s.entries
    assert s.hits > 0 and s.evictions > 0 and sum(r is True for r in results) == s.stores
    for info in infos:  # every live entry is still findable
        assert info is not None and info.deleted >= 0
    restored = HnswCache(DIM, capacity=150)
    assert await restored.load(tmp_path) > 0


# --------------------------------------------------------------------------- policy


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, (True, True)),
        ("", (True, True)),
        ("no-cache", (False, True)),
        ("No-Store", (False, False)),
        ("max-age=0, no-cache", (False, True)),
        ("private, max-age=60", (True, True)),
    ],
)
def test_cache_directives(value: str | None, expected: tuple[bool, bool]) -> None:
    assert cache_directives(value) == expected


def test_plan_request() -> None:
    v = unit(1)
    common = {"enabled": True, "target_model": "phi4", "body": request(),
              "tenant": "key:k", "text": "What is 2+2?", "embedding": v,
              "pii_found": False, "pii_checked": True}
    plan = plan_request(headers={"Authorization": "Bearer k"}, **common)
    assert plan is not None and plan.lookup and plan.store and plan.tenant == "key:k"
    assert plan.partition == partition_key("phi4", "key:k", request())
    assert plan_request(headers={}, **{**common, "tenant": None}) is None  # shares nothing
    assert plan_request(headers={}, **{**common, "enabled": False}) is None
    assert plan_request(headers={}, **{**common, "text": "  "}) is None
    assert plan_request(headers={}, **{**common, "embedding": None}) is None
    no_cache = plan_request(headers={"cache-control": "no-cache"}, **common)
    assert no_cache is not None and not no_cache.lookup and no_cache.store
    no_store = plan_request(headers={"Cache-Control": "no-store"}, **common)
    assert no_store is not None and not no_store.store and no_store.why_not_store == "no-store"
    pii = plan_request(headers={}, **{**common, "pii_found": True})
    assert pii is not None and pii.lookup and not pii.store and pii.why_not_store == "pii"
    unchecked = plan_request(headers={}, **{**common, "pii_checked": False})
    assert unchecked is not None and unchecked.why_not_store == "pii_unchecked"
    allowed = plan_request(headers={}, **{**common, "pii_found": True, "store_pii_requests": True})
    assert allowed is not None and allowed.store


class SavingCache(HnswCache):
    """Sets ``saved`` once a snapshot has been written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.saved = asyncio.Event()

    async def save(self, directory: str | Path) -> bool:
        ok = await super().save(directory)
        if ok:
            self.saved.set()
        return ok


async def test_maintenance_task_sweeps_and_snapshots(tmp_path: Path) -> None:
    clock = Clock()
    cache = SavingCache(DIM, ttl_s=10, clock=clock)
    await cache.store("p", unit(1), "old", answer())
    clock.t += 20
    await cache.store("p", unit(2), "new", answer())
    task = asyncio.create_task(run_maintenance(
        cache, sweep_interval_s=0.01, snapshot_dir=tmp_path, snapshot_interval_s=0.0))
    # A round sweeps, then saves: the first snapshot comes after the first sweep.
    await asyncio.wait_for(cache.saved.wait(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cache.stats().expirations == 1 and cache.stats().entries == 1
    assert await HnswCache(DIM, ttl_s=10, clock=clock).load(tmp_path) == 1


# --------------------------------------------------------------------------- index kinds


def test_flat_index_is_exact_and_compact() -> None:
    index = FlatIndex(DIM, slots=2)
    vecs = {i: unit(7000 + i) for i in range(40)}
    for i, v in vecs.items():
        index.add(i, v)
    assert len(index) == 40 and index.slots == 64 and index.deleted == 0
    for i in range(0, 40, 2):
        index.remove(i)  # the last row moves into the hole
    assert index.ids == set(range(1, 40, 2))
    for i in range(1, 40, 2):
        (label, sim), *_ = index.search(vecs[i], 3)
        assert label == i and sim == pytest.approx(1.0, abs=1e-5)
        assert np.allclose(index.vectors([i])[0], vecs[i])
    sims = [s for _, s in index.search(unit(1), 5)]
    assert sims == sorted(sims, reverse=True)
    for i in range(1, 37, 2):
        index.remove(i)
    assert index.slots < 64  # shrinks when mostly empty
    assert index.search(vecs[39], 10)[0][0] == 39
    assert index.search(vecs[39], 0) == []


async def test_partitions_start_exact_then_move_to_hnsw_and_back() -> None:
    params = IndexParams(hnsw_min_entries=8, flat_max_entries=4, initial_slots=4)
    cache = HnswCache(DIM, capacity=12, params=params)
    for i in range(7):
        await cache.store("p", unit(8000 + i), f"q{i}", answer())
    info = cache.partition_info("p")
    assert info is not None and (info.kind, info.entries) == ("flat", 7)
    await cache.store("p", unit(8007), "q7", answer())  # the 8th: built in a thread
    await cache.drain()
    info = cache.partition_info("p")
    assert info is not None and (info.kind, info.entries) == ("hnsw", 8)
    s = cache.stats()
    assert s.hnsw_partitions == 1 and s.rebuilds == 1
    for i in range(8):
        hit = await cache.lookup("p", unit(8000 + i), T)
        assert hit is not None and hit.text == f"q{i}"
    for i in range(11):  # evicts p's oldest entries: deleted slots pile up
        await cache.store("other", unit(9000 + i), "o", answer())
    info = cache.partition_info("p")
    assert info is not None and info.entries == 1 and info.deleted >= 7
    await cache.sweep()  # fewer live entries than flat_max_entries: back to exact
    info = cache.partition_info("p")
    assert info is not None and (info.kind, info.entries) == ("flat", 1)
    hit = await cache.lookup("p", unit(8007), T)
    assert hit is not None and hit.text == "q7"
    await cache.drain()  # "other" reached hnsw_min_entries too: its build runs in a thread


async def test_hnsw_index_costs_megabytes_so_small_partitions_stay_exact() -> None:
    flat, hnsw = HnswCache(DIM), HnswCache(DIM, params=HNSW)
    for cache in (flat, hnsw):
        for p in range(5):
            await cache.store(f"p{p}", unit(p), "q", answer())
    assert flat.stats().hnsw_partitions == 0 and hnsw.stats().hnsw_partitions == 5
    assert flat.stats().index_bytes < 5 * 16 * (DIM * 4 + 8) + 1
