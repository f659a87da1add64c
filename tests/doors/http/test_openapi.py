"""``GET /openapi.json``: the router's own API described, and held to its description.

Unit: the document is structurally sound OpenAPI 3.1 (every ``$ref`` resolves, every route of
``create_app`` is described, operations are well formed, the parameter schemas follow
``core.params``) and it is served.

Integration: a bounded property-based run against a live router (real Triton, the demo
backends, cache and its admin endpoints on). Requests are drawn from the document itself
(schema-valid bodies), then broken (wrong types, edge numbers, unicode, nested junk, bytes
that are not JSON, wrong content types, wrong methods, unknown paths). Every answer must come
within a timeout, never be a 5xx, be a status the document lists for that operation, and every
error must be OpenAI's ``{"error": {message, type, param, code}}`` (its schema in the document).
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import os
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from router_svc.config.loading import parse_config
from router_svc.core.params import PARAMS
from router_svc.doors.http.app import create_app
from router_svc.doors.http.openapi import OPENAPI_PATH, openapi_document, openapi_json
from router_svc.flow.runtime import Runtime
from tests.conftest import ROOT, example_config_data
from tests.fuzz.strategies import EDGE_NUMBERS, EDGE_STRINGS, encode, errors, from_schema
from tests.fuzz.strategies import json_values as junk_values

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _unstarted_app() -> web.Application:
    """The real app over a runtime that is built but not started (no Triton needed)."""
    config = parse_config(example_config_data(), ROOT)
    return create_app(config, runtime=Runtime(config))


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return ([node["$ref"]] if "$ref" in node else []) + [
            r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _lookup(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"unresolved $ref {ref}"
        node = node[part]
    return node


# ---------------------------------------------------------------- the document


def test_every_ref_resolves() -> None:
    doc = openapi_document()
    refs = _refs(doc)
    assert refs
    for ref in refs:
        _lookup(doc, ref)
    # and nothing in components is dead weight
    used = set(refs)
    for kind, entries in doc["components"].items():
        if kind == "securitySchemes":
            continue
        for name in entries:
            assert f"#/components/{kind}/{name}" in used, f"unused component {kind}/{name}"


def test_document_is_structurally_openapi_3_1() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1.")
    assert doc["info"]["title"] and doc["info"]["version"]
    schemes = doc["components"]["securitySchemes"]
    op_ids: list[str] = []
    for path, item in doc["paths"].items():
        assert path.startswith("/")
        assert item and set(item) <= set(METHODS), (path, set(item))
        for method, op in item.items():
            op_ids.append(op["operationId"])
            assert op["summary"]
            assert op["responses"], (method, path)
            for status, resp in op["responses"].items():
                assert status == "default" or (status.isdigit() and 100 <= int(status) < 600)
                resp = _lookup(doc, resp["$ref"]) if "$ref" in resp else resp
                assert resp["description"]
                for media in resp.get("content", {}).values():
                    assert "schema" in media
            if "requestBody" in op:
                assert method in ("post", "put", "patch"), (method, path)
                assert "application/json" in op["requestBody"]["content"]
            for requirement in op.get("security", []):
                assert set(requirement) <= set(schemes)
    assert len(op_ids) == len(set(op_ids)), "operationId must be unique"


def test_every_error_response_is_the_openai_shape() -> None:
    doc = openapi_document()
    error = _lookup(doc, "#/components/schemas/Error")
    assert set(error["required"]) == {"message", "type", "param", "code"}
    for name, resp in doc["components"]["responses"].items():
        assert resp["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorResponse"}, name
    for path, item in doc["paths"].items():
        for status, resp in (s for op in item.values() for s in op["responses"].items()):
            if (path, status) == ("/ready", "503"):  # not ready is an answer, not an error
                continue
            if status == "default" or int(status) >= 400:
                assert resp["$ref"].startswith("#/components/responses/"), (path, status)


def test_every_route_of_the_app_is_described() -> None:
    doc = openapi_document()
    routes = {(r.method.lower(), r.resource.canonical) for r in _unstarted_app().router.routes()
              if r.resource is not None and r.method != "HEAD"}  # HEAD comes with each GET
    for method, path in routes:
        if path == OPENAPI_PATH:
            continue
        assert path in doc["paths"], f"{path} is served but not in the OpenAPI document"
        if method != "*":  # /v1/responses answers any method (the same 404)
            assert method in doc["paths"][path], f"{method.upper()} {path} is not described"
    served = {p for _, p in routes}
    assert set(doc["paths"]) <= served, set(doc["paths"]) - served


def test_parameter_schemas_follow_the_checks() -> None:
    schemas = openapi_document()["components"]["schemas"]
    chat = schemas["ChatCompletionRequest"]["properties"]
    completion = schemas["CompletionRequest"]["properties"]
    assert set(PARAMS) <= set(chat) and set(PARAMS) <= set(completion)
    assert chat["temperature"] == {"type": ["number", "null"], "minimum": 0, "maximum": 2}
    assert chat["top_p"]["maximum"] == 1 and chat["n"]["minimum"] == 1
    assert chat["logprobs"] == {"type": ["boolean", "null"]}
    assert completion["logprobs"]["type"] == ["integer", "null"]
    assert completion["logprobs"]["maximum"] == 5
    assert chat["messages"]["minItems"] == 1
    content = schemas["Content"]["anyOf"]
    assert {"type": "string"} in content
    assert schemas["ChatCompletionRequest"]["required"] == ["model", "messages"]


def test_schema_valid_examples_validate() -> None:
    """The strategies and checker of tests/fuzz agree with each other on the document."""
    doc = openapi_document()
    ok = {"model": "auto", "messages": [{"role": "user", "content": "Hi"}], "temperature": 1}
    assert errors(ok, {"$ref": "#/components/schemas/ChatCompletionRequest"}, doc) == []
    bad = {**ok, "temperature": 3, "messages": []}
    assert len(errors(bad, {"$ref": "#/components/schemas/ChatCompletionRequest"}, doc)) == 2
    err = {"error": {"message": "m", "type": "invalid_request_error", "param": None,
                     "code": None}}
    assert errors(err, {"$ref": "#/components/schemas/ErrorResponse"}, doc) == []


async def test_the_document_is_served(aiohttp_client) -> None:
    client = await aiohttp_client(_unstarted_app())
    r = await client.get(OPENAPI_PATH)
    assert r.status == 200
    assert r.content_type == "application/json"
    assert await r.json() == openapi_document()
    assert await r.read() == openapi_json()
    r = await client.post(OPENAPI_PATH)
    assert r.status == 405
    assert set((await r.json())["error"]) == {"message", "type", "param", "code"}


# ---------------------------------------------------------------- the live property run

TOKEN = "openapi-admin-token"
ADMIN_ENV = "ROUTER_TEST_OPENAPI_ADMIN_TOKEN"
TIMEOUT_S = 10.0  # per request: longer is a hang
# A longer hunt: ROUTER_TEST_OPENAPI_EXAMPLES=2000 pytest -m integration -k openapi
EXAMPLES = int(os.environ.get("ROUTER_TEST_OPENAPI_EXAMPLES", "250"))
MODELS = ("auto", "phi4", "mistral-small3.1", "gemma3:27b")
CONTENT_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x",
                 "application/json; charset=latin-1", "application/vnd.api+json", "",
                 "application/octet-stream", "APPLICATION/JSON", "application/jsonx",
                 "*/*", "application/json, text/plain")


@dataclass
class Req:
    method: str
    path: str
    body: bytes | None
    headers: dict[str, str] = field(default_factory=dict)
    op: dict[str, Any] | None = None  # the documented operation, when method and path are

    def __repr__(self) -> str:  # what a failure report shows
        body = self.body if self.body is None or len(self.body) < 600 else self.body[:600]
        return f"Req({self.method} {self.path} headers={self.headers} body={body!r})"


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes
    elapsed_s: float


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    # weighted towards the generation endpoints: that is where the checks are
    ops = [(m.upper(), p, op) for p, item in doc["paths"].items() for m, op in item.items()]
    generation = [o for o in ops if "generation" in o[2]["tags"] and "requestBody" in o[2]]
    return ops + generation * 4


def _request_schema(op: dict[str, Any]) -> dict[str, Any] | None:
    body = op.get("requestBody")
    return body["content"]["application/json"]["schema"] if body else None


@st.composite
def _valid_body(draw: st.DrawFn, op: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    body = draw(from_schema(_request_schema(op), doc))
    if "model" in body or draw(st.integers(0, 3)):
        body["model"] = draw(st.sampled_from(MODELS))  # mostly a model that exists
    return body


@st.composite
def _broken_body(draw: st.DrawFn, body: dict[str, Any]) -> dict[str, Any]:
    """One field of a valid body replaced by junk, an edge value, or dropped."""
    body = dict(body)
    names = sorted(set(body) | {"model", "messages", "prompt", "stream", *PARAMS})
    name = draw(st.sampled_from(names))
    how = draw(st.sampled_from(("junk", "number", "string", "drop", "nest")))
    if how == "drop":
        body.pop(name, None)
    elif how == "junk":
        body[name] = draw(junk_values)
    elif how == "number":
        body[name] = draw(st.sampled_from(EDGE_NUMBERS))
    elif how == "string":
        body[name] = draw(st.sampled_from(EDGE_STRINGS))
    else:  # the field wrapped in a few levels of arrays and objects
        value: Any = body.get(name)
        for key in draw(st.lists(st.sampled_from(("", "0", "role", "content")), max_size=40)):
            value = [value] if not key else {key: value}
        body[name] = value
    return body


_not_json = st.one_of(
    st.binary(max_size=200),
    st.sampled_from((b"", b"{", b"[" * 3000, b"{\"a\":" * 3000, b"\xef\xbb\xbf{}", b"\x00",
                     b"{\"model\": \"auto\"}garbage", b"NaN", b"{\"model\": 1e999}",
                     b"{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":\"\\ud800"
                     b"\"}]}")),
)


def _headers(draw: st.DrawFn, path: str, ctype: str | None) -> dict[str, str]:
    headers = {} if ctype is None else {"Content-Type": ctype}
    if path.startswith("/admin/"):
        token = draw(st.sampled_from((TOKEN, TOKEN, "wrong", None)))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
    if draw(st.integers(0, 5)) == 0:
        headers["Cache-Control"] = draw(st.sampled_from(("no-cache", "no-store", "max-age=0")))
    return headers


@st.composite
def requests(draw: st.DrawFn, doc: dict[str, Any]) -> Req:
    method, path, op = draw(st.sampled_from(_operations(doc)))
    kind = draw(st.sampled_from(("valid",) * 3 + ("broken",) * 3 + (
        "json_junk", "not_json", "content_type", "compressed", "wrong_method",
        "unknown_path")))
    schema = _request_schema(op)
    ctype: str | None = draw(st.sampled_from(("application/json",) * 4 + (None,)))
    if kind == "unknown_path":
        tail = draw(st.text(alphabet="abcv1/._~-%20AZ", max_size=24))
        return Req(draw(st.sampled_from(("GET", "POST"))), "/" + tail, b"{}",
                   _headers(draw, "/", ctype))
    if kind == "wrong_method":
        method = draw(st.sampled_from(
            [m for m in ("GET", "POST", "PUT", "DELETE", "PATCH") if m.lower() not in
             doc["paths"][path]]))
        op = None
    body: bytes | None = None
    if schema is not None or kind in ("json_junk", "not_json"):
        value: Any = draw(_valid_body(op, doc)) if schema is not None and op else {}
        if kind == "broken":
            value = draw(_broken_body(value))
        elif kind == "json_junk":
            value = draw(junk_values)
        body = draw(_not_json) if kind == "not_json" else encode(
            value, ascii_only=draw(st.booleans()))
    if kind == "content_type":
        ctype = draw(st.sampled_from(CONTENT_TYPES) | st.text(
            alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=30))
    headers = _headers(draw, path, ctype)
    if kind == "compressed" and body is not None:  # encoded as it says (a wrong one: below)
        encoding = draw(st.sampled_from(("gzip", "deflate", "identity")))
        body = {"gzip": gzip.compress, "deflate": zlib.compress}.get(encoding, bytes)(body)
        headers["Content-Encoding"] = encoding
    return Req(method, path, body, headers, op)


def send(base: str, req: Req) -> Answer:
    """One request on a fresh connection; a socket timeout is a hang."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT_S)
    t0 = time.monotonic()
    try:
        conn.request(req.method, req.path, body=req.body, headers=req.headers)
        resp = conn.getresponse()
        body = resp.read()
    except TimeoutError:
        raise AssertionError(f"no answer within {TIMEOUT_S:g} s (a hang) to {req!r}") from None
    finally:
        conn.close()
    return Answer(resp.status, resp.getheader("Content-Type", ""), body, time.monotonic() - t0)


def check(req: Req, ans: Answer, doc: dict[str, Any]) -> None:
    where = f"{req!r} -> {ans.status} {ans.body[:500]!r}"
    assert ans.status < 500, f"5xx from client input: {where}"
    if req.op is not None:
        documented = req.op["responses"]
        assert str(ans.status) in documented or "default" in documented, \
            f"status not in the OpenAPI document: {where}"
    if ans.status >= 400:
        assert ans.content_type.startswith("application/json"), where
        payload = json.loads(ans.body)
        problems = errors(payload, {"$ref": "#/components/schemas/ErrorResponse"}, doc)
        assert not problems, f"{problems}: {where}"
        err = payload["error"]
        assert err["message"], where
        if ans.status != 429:
            assert err["type"] == "invalid_request_error", where
    elif ans.content_type.startswith("text/event-stream"):
        assert ans.body.endswith(b"data: [DONE]\n\n"), where
    elif ans.content_type.startswith("application/json") and req.op is not None:
        schema = req.op["responses"][str(ans.status)]["content"]["application/json"]["schema"]
        problems = errors(json.loads(ans.body), schema, doc)
        assert not problems, f"{problems}: {where}"


def explicit_requests(doc: dict[str, Any]) -> list[Req]:
    """Cases worth sending every run, whatever Hypothesis draws."""
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    json_ct = {"Content-Type": "application/json"}
    valid = {"model": "auto", "messages": [{"role": "user", "content": "Hi"}]}
    return [
        Req("POST", "/v1/chat/completions", encode(valid), json_ct, chat),
        Req("POST", "/v1/chat/completions", encode({**valid, "stream": True}), json_ct, chat),
        # over proxy.max_body_bytes (4 MiB): 413, still in OpenAI's shape
        Req("POST", "/v1/chat/completions", b'{"x": "' + b"a" * (4 << 20) + b'"}', json_ct,
            chat),
        Req("POST", "/v1/chat/completions", b"[" * 100_000, json_ct, chat),
        Req("POST", "/v1/chat/completions", encode(valid), {"Content-Type": "text/plain"}, chat),
        Req("DELETE", "/v1/chat/completions", None, {}),
        # 10 MiB once inflated, 10 KiB on the wire: the limit holds after decoding
        Req("POST", "/v1/chat/completions", gzip.compress(b" " * (10 << 20)),
            {**json_ct, "Content-Encoding": "gzip"}, chat),
        Req("GET", "/v1/%63hat/completions", None, {}),
    ]


def run_property(base: str, doc: dict[str, Any], max_examples: int) -> Counter[str]:
    """The Hypothesis run, in a worker thread (blocking client) while the router serves on the
    test's event loop. Returns the statuses seen per kind of path, for a sanity check."""
    seen: Counter[str] = Counter()

    @settings(max_examples=max_examples, deadline=timedelta(seconds=5), database=None,
              phases=(Phase.explicit, Phase.generate, Phase.shrink),
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much])
    @given(req=requests(doc))
    def prop(req: Req) -> None:
        ans = send(base, req)
        check(req, ans, doc)
        seen[f"{req.method} {req.path if req.op else '?'} {ans.status}"] += 1

    for req in explicit_requests(doc):
        prop = example(req=req)(prop)
    prop()
    return seen


async def _cached_router(router_factory, monkeypatch) -> str:
    monkeypatch.setenv(ADMIN_ENV, TOKEN)

    def mutate(data: dict) -> None:
        data["cache"] = {**data.get("cache", {}), "enabled": True, "admin_token_env": ADMIN_ENV}

    return await router_factory(mutate=mutate)


@pytest.mark.integration
@pytest.mark.usefixtures("clean_backends")
async def test_live_router_answers_everything_as_documented(router_factory, monkeypatch):
    url = await _cached_router(router_factory, monkeypatch)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{url}{OPENAPI_PATH}") as r:
            assert r.status == 200
            doc = await r.json()
        # one warm-up call: the first classification pays for Triton's warm-up
        async with s.post(f"{url}/v1/chat/completions", json={
                "model": "auto", "messages": [{"role": "user", "content": "Hello"}]}) as r:
            assert r.status == 200
    t0 = time.monotonic()
    seen = await asyncio.to_thread(run_property, url, doc, EXAMPLES)
    elapsed = time.monotonic() - t0
    print(f"\n{sum(seen.values())} requests in {elapsed:.1f} s; statuses: "
          f"{sorted(Counter(k.rsplit(' ', 1)[1] for k in seen.elements()).items())}")
    ok = sum(n for k, n in seen.items() if k.endswith(" 200") and "/completions" in k)
    assert ok >= 10, f"too few valid generation requests got through: {seen}"
    async with aiohttp.ClientSession() as s, s.get(f"{url}/health") as r:
        assert r.status == 200  # still healthy afterwards


@pytest.mark.integration
@pytest.mark.usefixtures("clean_backends")
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
async def test_a_body_not_encoded_as_declared_is_a_4xx(router_factory, encoding: str):
    url = await router_factory()
    valid = {"model": "auto", "messages": [{"role": "user", "content": "Hi"}]}
    req = Req("POST", "/v1/chat/completions", encode(valid),
              {"Content-Type": "application/json", "Content-Encoding": encoding})
    ans = await asyncio.to_thread(send, url, req)
    assert ans.status == 400, (ans.status, ans.body)
