"""Client keys and cache tenants through the HTTP door: the official ``openai`` client, the
real router and Triton, the demo backends (which count what reached them)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
import openai
import pytest
import yaml

from router_svc.core.auth import hash_key
from router_svc.ops.demo_backends import RECEIVED

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_backends")]

MODELS = ("phi4", "mistral-small3.1", "gemma3:27b")
QUESTION = "Explain the theory of relativity."


def client(url: str, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def calls(backends) -> int:
    return sum(len(backends[m].app[RECEIVED]) for m in MODELS)


def write_keys(path: Path, *entries: dict) -> None:
    path.write_text(yaml.safe_dump({"keys": list(entries)}))


async def keyed_router(router_factory, keys: Path, **cache) -> str:
    def mutate(d: dict) -> None:
        d["auth"] = {"keys_file": str(keys), "reload_interval_s": 0.1}
        d["cache"] = {"enabled": True, **cache}

    return await router_factory(mutate=mutate)


async def chat(url: str, key: str, model: str = "auto", text: str = QUESTION):
    raw = await client(url, key).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}])
    return raw.parse(), raw.headers


async def test_keys_tenants_and_model_limits(router_factory, backends, tmp_path):
    keys = tmp_path / "keys.yaml"
    write_keys(keys, {"sha256": hash_key("sk-acme"), "tenant": "acme"},
               {"sha256": hash_key("sk-beta"), "tenant": "beta", "models": ["phi4"]})
    url = await keyed_router(router_factory, keys)

    with pytest.raises(openai.AuthenticationError) as e:  # a wrong key: 401 before any work
        await chat(url, "sk-wrong")
    assert e.value.status_code == 401 and e.value.code == "invalid_api_key"
    status, _, body = await post(url, {})  # no key at all
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.PermissionDeniedError) as denied:
        await chat(url, "sk-beta", model="mistral-small3.1")
    assert denied.value.status_code == 403 and "mistral-small3.1" in denied.value.message
    assert calls(backends) == 0

    _, h = await chat(url, "sk-acme")
    assert h["x-router-cache"] == "miss"
    _, h = await chat(url, "sk-acme")
    assert h["x-router-cache"] == "hit"  # the same tenant shares its answers
    _, h = await chat(url, "sk-beta")  # another tenant never gets acme's answer
    assert h["x-router-cache"] == "miss" and h["x-router-model"] == "phi4"  # routed within
    assert calls(backends) == 2

    beta_models = await client(url, "sk-beta").models.list()
    assert [m.id for m in beta_models.data] == ["auto", "phi4"]
    async with aiohttp.ClientSession() as s, s.get(f"{url}/v1/models") as r:
        assert r.status == 401 and (await r.json())["error"]["code"] == "invalid_api_key"


async def test_rotating_the_keys_file_needs_no_restart(router_factory, tmp_path):
    keys = tmp_path / "keys.yaml"
    write_keys(keys, {"sha256": hash_key("sk-old"), "tenant": "acme"})
    url = await keyed_router(router_factory, keys)
    await chat(url, "sk-old")
    write_keys(keys, {"sha256": hash_key("sk-new"), "tenant": "acme"})
    os.utime(keys, (time.time() + 5, time.time() + 5))  # a new mtime whatever the resolution
    deadline = time.monotonic() + 10
    while True:  # the router re-reads the file within reload_interval_s
        try:
            await chat(url, "sk-old")
        except openai.AuthenticationError:
            break
        assert time.monotonic() < deadline, "the old key still works"
        await asyncio.sleep(0.1)
    _, h = await chat(url, "sk-new")
    assert h["x-router-cache"] == "hit"  # the same tenant: its cache survives rotation


async def post(url: str, headers: dict[str, str] | list[tuple[str, str]]):
    body = {"model": "auto", "messages": [{"role": "user", "content": QUESTION}]}
    async with aiohttp.ClientSession() as s, s.post(
            f"{url}/v1/chat/completions", json=body, headers=headers) as r:
        return r.status, r.headers, await r.json()


async def test_without_keys_anonymous_callers_share_nothing(router_factory, backends):
    url = await router_factory(cache={"enabled": True})
    for _ in range(2):
        status, h, _ = await post(url, {})
        assert status == 200 and h["x-router-cache"] == "miss"
        assert "x-router-cache-partition" not in h
    assert calls(backends) == 2
    shared = await router_factory(cache={"enabled": True, "share_anonymous": True})
    await post(shared, {})
    _, h, _ = await post(shared, {})
    assert h["x-router-cache"] == "hit"


async def test_tenant_header_from_a_trusted_proxy_only(router_factory, backends):
    url = await router_factory(cache={"enabled": True, "partition_header": "X-Tenant"},
                               auth={"trusted_proxies": ["127.0.0.1/32"]})
    _, h1, _ = await post(url, {"X-Tenant": "acme"})
    _, h2, _ = await post(url, {"X-Tenant": "acme", "Authorization": "Bearer other"})
    assert h2["x-router-cache"] == "hit"  # the trusted header names the tenant
    assert h2["x-router-cache-partition"] == h1["x-router-cache-partition"]
    status, _, body = await post(url, [("X-Tenant", "acme"), ("X-Tenant", "beta")])
    assert status == 400 and body["error"]["code"] == "repeated_header"
    untrusted = await router_factory(cache={"enabled": True, "partition_header": "X-Tenant"},
                                     auth={"trusted_proxies": ["10.0.0.0/8"]})
    await post(untrusted, {"X-Tenant": "acme"})
    _, h, _ = await post(untrusted, {"X-Tenant": "acme"})
    assert h["x-router-cache"] == "miss"  # not from a trusted address: no tenant, no sharing
