"""The semantic cache through the front door: the official ``openai`` client, the real router
(``create_app`` on a real port), the real Triton embedding and the demo backends, which count
what reached them (a hit must not)."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from router_svc.labels import PII_TYPES
from router_svc.ops.demo_backends import OPTIONS, RECEIVED

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_backends")]

MODELS = ("phi4", "mistral-small3.1", "gemma3:27b")
QUESTION = "Explain the theory of relativity."
PARAPHRASE = "Please explain the theory of relativity."  # 0.975 with the served embedding
SHARED_WORDS = "Explain the theory of evolution."  # 0.52: same words, another question
OPPOSITE = ("Is it safe to eat raw chicken?", "Is it unsafe to eat raw chicken?")  # 0.99
ADMIN_ENV = "ROUTER_TEST_CACHE_ADMIN_TOKEN"
TOKEN = "s3cret-admin-token"


def client(url: str, key: str = "test") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def calls(backends) -> int:
    return sum(len(backends[m].app[RECEIVED]) for m in MODELS)


def set_backends(backends, **opts) -> None:
    for m in MODELS:
        for k, v in opts.items():
            setattr(backends[m].app[OPTIONS], k, v)


async def cached_router(router_factory, allow_all_pii: bool = False, **cache) -> str:
    settings = {"enabled": True, **cache}

    def mutate(d: dict) -> None:
        d.update(cache=settings)
        if allow_all_pii:  # PII tests here are about storing, not about the model's precision
            # Every type listed (not allow_by_default, which would skip the PII scan).
            for m in d["model_config"].values():
                m["pii_policy"] = {"allow_by_default": False,
                                   "pii_types_allowed": list(PII_TYPES)}

    return await router_factory(mutate=mutate)


async def chat(url: str, text: str | list[dict], key: str = "test", **kw):
    """(completion, headers) of one non-streaming call."""
    messages = user(text) if isinstance(text, str) else text
    raw = await client(url, key).chat.completions.with_raw_response.create(
        model=kw.pop("model", "auto"), messages=messages, **kw)
    return raw.parse(), raw.headers


async def chat_stream(url: str, text: str, key: str = "test", **kw):
    """(content, chunks, headers) of one streaming call, parsed by the openai client."""
    raw = await client(url, key).chat.completions.with_raw_response.create(
        model="auto", messages=user(text), stream=True, **kw)
    chunks = [c async for c in raw.parse()]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return content, chunks, raw.headers


# ---------------------------------------------------------------- hit and miss


async def test_second_identical_request_hits_without_a_backend_call(router_factory, backends):
    url = await cached_router(router_factory)
    first, h1 = await chat(url, QUESTION)
    assert h1["x-router-cache"] == "miss"
    assert len(h1["x-router-cache-partition"]) == 64
    assert calls(backends) == 1
    second, h2 = await chat(url, QUESTION)
    assert h2["x-router-cache"] == "hit", dict(h2)
    assert float(h2["x-router-cache-similarity"]) >= 0.999
    assert h2["x-router-cache-partition"] == h1["x-router-cache-partition"]
    for h in ("x-router-model", "x-router-category", "x-router-confidence", "x-router-pii"):
        assert h2[h] == h1[h]
    assert calls(backends) == 1  # the hit never reached a backend
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.id != first.id and second.id.startswith("chatcmpl-")
    assert second.created >= first.created
    assert second.usage == first.usage
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as r:
        text = await r.text()
    assert 'reason="cache_hit"' in text
    assert 'router_cache_requests_total{result="hit"} 1.0' in text or "result=\"hit\"" in text


async def test_disabled_cache_says_off(router_factory, backends):
    url = await router_factory()
    _, h1 = await chat(url, QUESTION)
    _, h2 = await chat(url, QUESTION)
    assert h1["x-router-cache"] == h2["x-router-cache"] == "off"
    assert "x-router-cache-partition" not in h2
    assert calls(backends) == 2


async def test_near_duplicate_hits_and_same_words_or_opposite_miss(router_factory, backends):
    url = await cached_router(router_factory)
    stored, _ = await chat(url, QUESTION)
    near, h = await chat(url, PARAPHRASE)
    print(f"similarity {QUESTION!r} -> {PARAPHRASE!r}: {h.get('x-router-cache-similarity')}")
    assert h["x-router-cache"] == "hit"
    assert float(h["x-router-cache-similarity"]) >= 0.97
    assert near.choices[0].message.content == stored.choices[0].message.content
    assert calls(backends) == 1

    _, h = await chat(url, SHARED_WORDS)
    assert h["x-router-cache"] == "miss"
    assert calls(backends) == 2

    a, b = OPPOSITE
    await chat(url, a)
    other, h = await chat(url, b)
    assert h["x-router-cache"] == "miss"  # 0.99 similar, but the text guard refuses
    assert calls(backends) == 4
    assert "unsafe" in other.choices[0].message.content


@pytest.fixture(scope="module")
def tiny_pair_verifier(tmp_path_factory):
    from export.tiny import build_tiny_pair_verifier

    return build_tiny_pair_verifier(tmp_path_factory.mktemp("pv") / "pair_verifier.onnx")


@pytest.mark.parametrize("min_probability, paraphrase_state", [(1.0, "miss"), (0.0, "hit")])
async def test_the_verifier_model_decides_a_candidate_hit(router_factory, backends,
                                                          tiny_pair_verifier, min_probability,
                                                          paraphrase_state):
    url = await cached_router(router_factory, repeat_memo=False, verifier={
        "model": str(tiny_pair_verifier), "min_probability": min_probability})
    stored, _ = await chat(url, QUESTION)
    _, h = await chat(url, PARAPHRASE)  # a candidate the text rules pass: the model decides
    assert h["x-router-cache"] == paraphrase_state
    assert calls(backends) == (2 if paraphrase_state == "miss" else 1)
    again, h = await chat(url, QUESTION)  # the very same text: served without the model
    assert h["x-router-cache"] == "hit"
    assert again.choices[0].message.content == stored.choices[0].message.content
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as r:
        text = await r.text()
    outcome = "refused" if paraphrase_state == "miss" else "served"
    assert f'router_cache_verifications_total{{outcome="{outcome}"}} 1.0' in text
    assert 'router_cache_verifications_total{outcome="same_text"} 1.0' in text


async def test_tenants_never_share_answers(router_factory, backends):
    url = await cached_router(router_factory)
    _, ha = await chat(url, QUESTION, key="alice-key")
    _, hb = await chat(url, QUESTION, key="bob-key")
    assert ha["x-router-cache"] == hb["x-router-cache"] == "miss"
    assert ha["x-router-cache-partition"] != hb["x-router-cache-partition"]
    assert calls(backends) == 2
    _, ha2 = await chat(url, QUESTION, key="alice-key")
    assert ha2["x-router-cache"] == "hit"
    assert calls(backends) == 2


async def test_partition_header_shares_within_a_tenant(router_factory, backends):
    # Believed from a trusted proxy only (here: loopback, where the test client is).
    url = await router_factory(cache={"enabled": True, "partition_header": "X-Tenant-Id"},
                               auth={"trusted_proxies": ["127.0.0.1/32"]})
    c1 = client(url, "alice-key")
    c2 = client(url, "bob-key")
    r1 = await c1.chat.completions.with_raw_response.create(
        model="auto", messages=user(QUESTION), extra_headers={"X-Tenant-Id": "acme"})
    r2 = await c2.chat.completions.with_raw_response.create(
        model="auto", messages=user(QUESTION), extra_headers={"X-Tenant-Id": "acme"})
    assert r1.headers["x-router-cache"] == "miss"
    assert r2.headers["x-router-cache"] == "hit"
    assert calls(backends) == 1


async def test_other_system_prompt_or_temperature_misses(router_factory, backends):
    url = await cached_router(router_factory)
    await chat(url, QUESTION)
    sys_a = [{"role": "system", "content": "Answer in French."}, *user(QUESTION)]
    _, h = await chat(url, sys_a)
    assert h["x-router-cache"] == "miss"
    _, h = await chat(url, QUESTION, temperature=0.2)
    assert h["x-router-cache"] == "miss"
    _, h = await chat(url, QUESTION, max_tokens=5)
    assert h["x-router-cache"] == "miss"
    assert calls(backends) == 4
    _, h = await chat(url, sys_a)  # each variant is its own partition, and hits there
    assert h["x-router-cache"] == "hit"
    _, h = await chat(url, QUESTION, temperature=0.2)
    assert h["x-router-cache"] == "hit"
    assert calls(backends) == 4


# ---------------------------------------------------------------- streams


async def test_streaming_hit_replays_a_valid_stream(router_factory, backends):
    url = await cached_router(router_factory)
    stored, _ = await chat(url, QUESTION)
    content, chunks, h = await chat_stream(url, QUESTION)
    assert h["x-router-cache"] == "hit"
    assert h["content-type"].startswith("text/event-stream")
    assert content == stored.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {c.id for c in chunks} != {stored.id} and len({c.id for c in chunks}) == 1
    assert calls(backends) == 1
    # include_usage: the replay ends with the usage chunk, as a backend would
    _, chunks, _ = await chat_stream(url, QUESTION, stream_options={"include_usage": True})
    assert chunks[-1].choices == [] and chunks[-1].usage == stored.usage
    assert calls(backends) == 1


async def test_stream_stored_answer_serves_json_and_stream(router_factory, backends):
    url = await cached_router(router_factory)
    content, _, h = await chat_stream(url, QUESTION)
    assert h["x-router-cache"] == "miss"
    assert calls(backends) == 1
    again, _, h = await chat_stream(url, QUESTION)
    assert h["x-router-cache"] == "hit"
    assert again == content
    completion, h = await chat(url, QUESTION)
    assert h["x-router-cache"] == "hit"
    assert completion.choices[0].message.content == content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert calls(backends) == 1


async def test_completions_endpoint_hits_too(router_factory, backends):
    url = await cached_router(router_factory)
    c = client(url)
    r1 = await c.completions.with_raw_response.create(model="auto", prompt=QUESTION)
    r2 = await c.completions.with_raw_response.create(model="auto", prompt=QUESTION)
    assert r1.headers["x-router-cache"] == "miss"
    assert r2.headers["x-router-cache"] == "hit"
    assert r2.parse().choices[0].text == r1.parse().choices[0].text
    stream = await c.completions.create(model="auto", prompt=QUESTION, stream=True)
    text = "".join([ch.choices[0].text async for ch in stream if ch.choices])
    assert text == r1.parse().choices[0].text
    assert calls(backends) == 1


# ---------------------------------------------------------------- what is never stored


async def test_backend_error_is_not_stored(router_factory, backends):
    url = await cached_router(router_factory)
    set_backends(backends, fail_status=500)
    with pytest.raises(openai.InternalServerError) as e:
        await chat(url, QUESTION)
    assert e.value.response.headers["x-router-cache"] == "miss"
    set_backends(backends, fail_status=None)
    _, h = await chat(url, QUESTION)
    assert h["x-router-cache"] == "miss"  # the 500 was not stored
    _, h = await chat(url, QUESTION)
    assert h["x-router-cache"] == "hit"


async def test_aborted_stream_is_not_stored(router_factory, backends):
    url = await cached_router(router_factory)
    set_backends(backends, abort_after_chunks=2)
    with pytest.raises(openai.APIError):
        await chat_stream(url, QUESTION)
    set_backends(backends, abort_after_chunks=None)
    _, h = await chat(url, QUESTION)
    assert h["x-router-cache"] == "miss"
    n = calls(backends)
    _, h = await chat(url, QUESTION)
    assert h["x-router-cache"] == "hit"
    assert calls(backends) == n


async def test_cache_control_no_cache_and_no_store(router_factory, backends):
    url = await cached_router(router_factory)
    await chat(url, QUESTION)
    _, h = await chat(url, QUESTION, extra_headers={"Cache-Control": "no-cache"})
    assert h["x-router-cache"] == "miss"  # looked up: no; the backend answered
    assert calls(backends) == 2
    _, h = await chat(url, QUESTION, extra_headers={"Cache-Control": "no-store"})
    assert h["x-router-cache"] == "miss"  # no-store: neither served from nor stored in
    assert calls(backends) == 3
    other = "How do I reverse a list in Python?"
    _, h = await chat(url, other, extra_headers={"Cache-Control": "no-store"})
    _, h = await chat(url, other)
    assert h["x-router-cache"] == "miss"
    assert calls(backends) == 5
    _, h = await chat(url, QUESTION)
    assert h["x-router-cache"] == "hit"


PII_TEXT = "Please send the report to john.doe@company.com"  # EMAIL: phi4 allows it


async def test_requests_with_pii_are_not_stored(router_factory, backends):
    url = await cached_router(router_factory, allow_all_pii=True)
    _, h = await chat(url, PII_TEXT, model="phi4")
    assert "EMAIL" in h["x-router-pii"], dict(h)
    _, h = await chat(url, PII_TEXT, model="phi4")
    assert h["x-router-cache"] == "miss"
    assert calls(backends) == 2


async def test_store_pii_requests_opts_in(router_factory, backends):
    url = await cached_router(router_factory, allow_all_pii=True, store_pii_requests=True)
    await chat(url, PII_TEXT, model="phi4")
    _, h = await chat(url, PII_TEXT, model="phi4")
    assert h["x-router-cache"] == "hit"
    assert calls(backends) == 1


# ---------------------------------------------------------------- admin


async def admin(url: str, method: str, path: str, token: str | None = None, **kw):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with aiohttp.ClientSession() as s, s.request(
            method, f"{url}/admin/cache{path}", headers=headers, **kw) as r:
        return r.status, await r.json(), r.headers


async def test_admin_endpoints_need_the_token(router_factory, backends, monkeypatch):
    monkeypatch.setenv(ADMIN_ENV, TOKEN)
    url = await cached_router(router_factory, admin_token_env=ADMIN_ENV)
    _, h = await chat(url, QUESTION)
    # Another model's partition, named rather than left to the classifier's choice.
    other = next(m for m in MODELS if m != h["x-router-model"])
    _, h2 = await chat(url, "How do I reverse a list in Python?", model=other)
    partition = h["x-router-cache-partition"]
    assert h2["x-router-cache-partition"] != partition

    for token in (None, "wrong", TOKEN + "x"):
        for method, path in (("GET", "/stats"), ("POST", "/flush"), ("POST", "/invalidate")):
            status, body, headers = await admin(url, method, path, token,
                                                json={"partition": partition})
            assert status == 401, (method, path, token)
            assert body["error"]["type"] == "invalid_request_error"
            assert headers["WWW-Authenticate"] == "Bearer"

    status, stats, _ = await admin(url, "GET", "/stats", TOKEN)
    assert status == 200 and stats["entries"] == 2 and stats["stores"] == 2
    status, body, _ = await admin(url, "POST", "/invalidate", TOKEN, json={"partition": "x"})
    assert status == 400 and body["error"]["param"] == "partition"
    status, body, _ = await admin(url, "POST", "/invalidate", TOKEN,
                                  json={"partition": partition})
    assert status == 200 and body["removed"] == 1  # only that partition (routed model)
    _, h = await chat(url, QUESTION)
    assert h["x-router-cache"] == "miss"  # gone, and stored again
    _, h = await chat(url, "How do I reverse a list in Python?", model=other)
    assert h["x-router-cache"] == "hit"  # the other partition was left alone
    status, body, _ = await admin(url, "POST", "/flush", TOKEN)
    assert status == 200 and body["removed"] == 2
    status, stats, _ = await admin(url, "GET", "", TOKEN)
    assert stats["entries"] == 0


async def test_admin_is_404_when_disabled(router_factory, monkeypatch):
    monkeypatch.delenv(ADMIN_ENV, raising=False)
    url = await cached_router(router_factory)
    status, body, _ = await admin(url, "GET", "/stats", TOKEN)
    assert status == 404 and body["error"]["code"] == "not_found"
    url = await cached_router(router_factory, admin_token_env=ADMIN_ENV)  # env var unset
    status, _, _ = await admin(url, "POST", "/flush", TOKEN)
    assert status == 404


# ---------------------------------------------------------------- persistence


async def test_snapshot_survives_a_restart(router_factory, backends, tmp_path):
    snap = str(tmp_path / "snap")
    url = await cached_router(router_factory, persistence_dir=snap)
    first, _ = await chat(url, QUESTION)
    await router_factory.stop(url)  # shutdown writes the snapshot
    assert (tmp_path / "snap").is_dir()
    url2 = await cached_router(router_factory, persistence_dir=snap)
    again, h = await chat(url2, QUESTION)
    assert h["x-router-cache"] == "hit"
    assert again.choices[0].message.content == first.choices[0].message.content
    assert calls(backends) == 1


async def test_corrupt_snapshot_starts_empty(router_factory, backends, tmp_path):
    snap = tmp_path / "snap"
    snap.mkdir()
    (snap / "CURRENT").write_text("garbage-that-does-not-exist\n")
    url = await cached_router(router_factory, persistence_dir=str(snap))
    _, h = await chat(url, QUESTION)
    assert h["x-router-cache"] == "miss"
    _, h = await chat(url, QUESTION)
    assert h["x-router-cache"] == "hit"



# ---------------------------------------------------------------- the repeat memo


async def classifications(url: str) -> float:
    """How many classifications (tokenise + Triton) the router has run."""
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith("router_classification_seconds_count"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_exact_repeat_is_answered_without_the_model(router_factory, backends):
    url = await cached_router(router_factory)
    first, h1 = await chat(url, QUESTION)
    assert h1["x-router-cache"] == "miss" and "x-router-cache-repeat" not in h1
    n = await classifications(url)
    assert n >= 1
    again, h2 = await chat(url, QUESTION)
    assert h2["x-router-cache"] == "hit" and h2["x-router-cache-repeat"] == "1"
    assert await classifications(url) == n  # no tokenising, no Triton call
    for h in ("x-router-model", "x-router-category", "x-router-confidence", "x-router-pii",
              "x-router-cache-partition"):
        assert h2[h] == h1[h]
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.id != first.id
    # streaming is no part of the identity: the repeat replays as SSE
    content, chunks, h3 = await chat_stream(url, QUESTION)
    assert h3["x-router-cache-repeat"] == "1" and content == first.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert calls(backends) == 1 and await classifications(url) == n
    # a paraphrase is a semantic hit (model call), then a repeat of it is not
    _, h4 = await chat(url, PARAPHRASE)
    assert h4["x-router-cache"] == "hit" and "x-router-cache-repeat" not in h4
    assert await classifications(url) == n + 1
    _, h5 = await chat(url, PARAPHRASE)
    assert h5["x-router-cache-repeat"] == "1" and await classifications(url) == n + 1
    assert h5["x-router-cache-similarity"] == h4["x-router-cache-similarity"]


async def test_repeat_memo_keeps_tenants_and_cache_rules(router_factory, backends, monkeypatch):
    monkeypatch.setenv(ADMIN_ENV, TOKEN)
    url = await cached_router(router_factory, admin_token_env=ADMIN_ENV)
    await chat(url, QUESTION, key="alice-key")
    _, h = await chat(url, QUESTION, key="bob-key")  # another tenant: a full miss
    assert h["x-router-cache"] == "miss" and "x-router-cache-repeat" not in h
    assert calls(backends) == 2
    _, h = await chat(url, QUESTION, key="alice-key", temperature=0.3)  # another body
    assert h["x-router-cache"] == "miss"
    _, h = await chat(url, QUESTION, key="alice-key", extra_headers={"Cache-Control": "no-cache"})
    assert h["x-router-cache"] == "miss"
    assert calls(backends) == 4
    status, _, _ = await admin(url, "POST", "/flush", TOKEN)
    assert status == 200
    _, h = await chat(url, QUESTION, key="alice-key")  # flushed: the memo does not answer
    assert h["x-router-cache"] == "miss" and "x-router-cache-repeat" not in h
    assert calls(backends) == 5
    # malformed stream flag on a repeat: the full path's 400, not a replay
    async with aiohttp.ClientSession() as s, s.post(
            f"{url}/v1/chat/completions", headers={"Authorization": "Bearer alice-key"},
            json={"model": "auto", "messages": user(QUESTION), "stream": "yes"}) as r:
        assert r.status == 400
        assert (await r.json())["error"]["type"] == "invalid_request_error"


async def test_repeat_memo_never_skips_a_pii_check(router_factory, backends):
    url = await cached_router(router_factory, allow_all_pii=True)
    await chat(url, PII_TEXT, model="phi4")
    n = await classifications(url)
    _, h = await chat(url, PII_TEXT, model="phi4")
    assert "EMAIL" in h["x-router-pii"] and "x-router-cache-repeat" not in h
    assert await classifications(url) == n + 1  # checked again


async def test_repeat_memo_can_be_turned_off(router_factory, backends):
    url = await cached_router(router_factory, repeat_memo=False)
    await chat(url, QUESTION)
    n = await classifications(url)
    _, h = await chat(url, QUESTION)
    assert h["x-router-cache"] == "hit" and "x-router-cache-repeat" not in h
    assert await classifications(url) == n + 1
