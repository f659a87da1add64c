"""The relay both doors feed: the usage chunk the client did not ask for is dropped, the
first token and usage are recorded, and only a complete clean stream is stored."""

from __future__ import annotations

import json

import pytest

from router_svc.cache.front import CacheFront, Lookup
from router_svc.cache.keys import plan_request
from router_svc.cache.store import HnswCache
from router_svc.config.loading import CacheConfig
from router_svc.core.endpoints import CHAT
from router_svc.core.messages import parse_chat_request
from router_svc.core.metrics import Metrics
from router_svc.core.pipeline import Routed
from router_svc.core.selection import BackendTarget, Decision
from router_svc.flow.relay import Relay
from router_svc.flow.request import Forward
from tests.fakes import DIM, embedding_of

TEXT = "the derivative of x^3"
CHUNKS = [{"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "phi4",
           "choices": [{"index": 0, "delta": {"role": "assistant", "content": "3x"},
                        "finish_reason": None}]},
          {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "phi4",
           "choices": [{"index": 0, "delta": {"content": "^2"}, "finish_reason": "stop"}]}]
USAGE = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "phi4",
         "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}


def event(obj) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"


STREAM = [event(CHUNKS[0]), event(CHUNKS[1]), event(USAGE), event(b"[DONE]")]


@pytest.fixture
async def cache():
    c = HnswCache(DIM, capacity=10, ttl_s=60)
    yield CacheFront(CacheConfig(enabled=True), c, environ={})
    await c.close()


def forward(cache: CacheFront, include_usage: bool = False) -> Forward:
    body = {"model": "auto", "messages": [{"role": "user", "content": TEXT}], "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    routed = Routed("chat", parse_chat_request(body),
                    Decision("phi4", "math", 0.9, "category", "route", frozenset()),
                    {**body, "model": "phi4"}, BackendTarget("http://127.0.0.1:1/v1", "phi4"),
                    category_text=TEXT)
    plan = plan_request(enabled=True, target_model="phi4", body=body, headers={},
                        tenant="key:t", text=TEXT, embedding=embedding_of(TEXT),
                        pii_found=False, pii_checked=True, store_pii_requests=False)
    return Forward(routed, Lookup(plan, state="miss"), CHAT)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"router_{name}", labels) or 0.0


@pytest.mark.parametrize("include_usage", [False, True])
async def test_usage_chunk_reaches_only_a_client_that_asked(cache, include_usage) -> None:
    metrics = Metrics.create(models=["phi4"])
    relay = Relay(forward(cache, include_usage), cache, metrics)
    kept = [ev for ev in STREAM if relay.keep(ev)]
    assert kept == (STREAM if include_usage else [STREAM[0], STREAM[1], STREAM[3]])
    await relay.stream_ended(clean=True)
    assert relay.completed
    assert sample(metrics, "tokens_total", model="phi4", kind="completion") == 2
    assert sample(metrics, "ttft_seconds_count", model="phi4") == 1
    assert sample(metrics, "backend_seconds_count", model="phi4") == 1


async def test_a_clean_complete_stream_is_stored_and_replayable(cache) -> None:
    fwd = forward(cache)
    relay = Relay(fwd, cache, Metrics.create(models=["phi4"]))
    for ev in STREAM:
        relay.keep(ev)
    await relay.stream_ended(clean=True)
    assert fwd.lookup.plan is not None
    hit = await cache.cache.lookup(fwd.lookup.plan.partition, embedding_of(TEXT), 0.97, TEXT)
    assert hit is not None and hit.similarity > 0.999
    assert hit.response.replay_json()["choices"][0]["message"]["content"] == "3x^2"


@pytest.mark.parametrize("stream", [STREAM[:3], STREAM])
async def test_a_cut_or_unclean_stream_is_never_stored(cache, stream) -> None:
    fwd = forward(cache)
    relay = Relay(fwd, cache, Metrics.create(models=["phi4"]))
    for ev in stream:
        relay.keep(ev)
    await relay.stream_ended(clean=False)
    assert cache.cache.stats().entries == 0
