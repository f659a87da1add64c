"""The ext_proc front door without Envoy: the messages it builds (header and body mutations,
immediate responses, processing modes), the decisions it takes on request headers, the
response watcher on a chunked SSE stream, and the rewrite of the repository's Envoy config.
Envoy itself is in test_extproc.py."""

from __future__ import annotations

import json
from dataclasses import replace
from urllib.parse import urlsplit

import pytest
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from router_svc.cache.front import CacheFront, Lookup
from router_svc.config.loading import EXAMPLE_CONFIG, CacheConfig, load_config
from router_svc.core.endpoints import CHAT
from router_svc.core.errors import Overloaded
from router_svc.core.messages import parse_chat_request
from router_svc.core.metrics import Metrics
from router_svc.core.pipeline import Routed, Router
from router_svc.core.selection import BackendTarget, Decision
from router_svc.doors.extproc.proto import (
    DESTINATION,
    SELECTED_MODEL,
    Mode,
    common,
    credential_edit,
    destination,
    header_map,
    header_mutation,
    immediate,
    immediate_body,
    llm_mode,
    pass_through_mode,
    request_edit,
    upstream_path,
)
from router_svc.doors.extproc.response import ResponseWatch
from router_svc.doors.extproc.server import EnvoyRequest
from router_svc.flow.answers import LocalAnswer, error_answer
from router_svc.flow.relay import Relay
from router_svc.flow.request import Forward, RequestFlow
from router_svc.flow.runtime import Runtime
from router_svc.ops import envoy_launcher

ROOT = EXAMPLE_CONFIG.parents[1]
ROUTER_CONFIG = ROOT / "deploy" / "router-config.yaml"


def headers_msg(pairs: list[tuple[str, str]], *, raw: bool = True,
                end_of_stream: bool = False) -> pb.HttpHeaders:
    m = pb.HttpHeaders(end_of_stream=end_of_stream)
    for k, v in pairs:
        hv = (base_pb2.HeaderValue(key=k, raw_value=v.encode()) if raw
              else base_pb2.HeaderValue(key=k, value=v))
        m.headers.headers.append(hv)
    return m


def set_headers(m: pb.HeaderMutation) -> dict[str, str]:
    return {h.header.key: h.header.raw_value.decode() for h in m.set_headers}


# ---------------------------------------------------------------- building blocks


def test_header_map_reads_raw_and_plain_values_and_keeps_repeats():
    msg = headers_msg([(":path", "/v1/models"), ("Accept", "a")])
    msg.headers.headers.append(base_pb2.HeaderValue(key="accept", value="b"))
    got = header_map(msg)
    assert got[":path"] == "/v1/models"
    assert got.getall("ACCEPT") == ["a", "b"]


def test_header_mutation_overwrites_and_removes_lower_case():
    m = header_mutation({"X-Router-Model": "phi4"}, ["Authorization"])
    assert set_headers(m) == {"x-router-model": "phi4"}
    assert m.set_headers[0].append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    assert list(m.remove_headers) == ["authorization"]


def test_common_body_none_keeps_bytes_replace_empty_clears():
    assert not common().HasField("body_mutation")
    assert not common().HasField("header_mutation")
    assert common(body=b"x").body_mutation.body == b"x"
    cleared = common(body=b"")
    assert cleared.body_mutation.WhichOneof("mutation") == "clear_body"
    assert common(clear_route_cache=True).clear_route_cache


def test_immediate_json_answer_is_the_http_proxy_body_with_its_headers():
    body = {"error": {"message": "ü", "type": "rate_limit_error", "param": None, "code": "x"}}
    r = immediate(LocalAnswer(status=429, headers={"Retry-After": "1"}, json_body=body), "why")
    ir = r.immediate_response
    assert ir.status.code == 429 and ir.details == "why"
    assert immediate_body(ir) == json.dumps(body).encode()  # as aiohttp's json_response
    assert set_headers(ir.headers) == {"retry-after": "1", "content-type": "application/json"}


def test_immediate_sse_answer_has_event_stream_headers():
    events = (b'data: {"a":1}\n\n', b"data: [DONE]\n\n")
    ir = immediate(LocalAnswer(headers={"x-router-model": "phi4"}, events=events), "d")
    ir = ir.immediate_response
    assert ir.status.code == 200 and immediate_body(ir) == b"".join(events)
    assert set_headers(ir.headers) == {"x-router-model": "phi4",
                                       "content-type": "text/event-stream",
                                       "cache-control": "no-cache"}


def test_error_answer_carries_retry_after_and_error_headers():
    a = error_answer(Overloaded("full", retry_after_s=0.2))
    assert a.status == 429 and a.headers == {"Retry-After": "1"}
    assert a.json_body == {"error": {"message": "full", "type": "rate_limit_error",
                                     "param": None, "code": "overloaded"}}


def test_processing_modes():
    m = llm_mode()
    assert (m.request_body_mode, m.response_body_mode) == (Mode.BUFFERED, Mode.STREAMED)
    assert m.request_header_mode == m.response_header_mode == Mode.SEND
    p = pass_through_mode()
    assert (p.request_body_mode, p.response_body_mode) == (Mode.NONE, Mode.NONE)
    assert p.response_header_mode == Mode.SKIP


# ---------------------------------------------------------------- the routed request


@pytest.mark.parametrize(("url", "want"), [
    ("http://127.0.0.1:9101/v1", "127.0.0.1:9101"),
    ("http://backend/v1", "backend:80"),
    ("https://api.example.com/v1", "api.example.com:443"),
    ("http://[::1]:8000/v1", "[::1]:8000"),
])
def test_destination(url, want):
    assert destination(url) == want


def test_upstream_path_only_when_the_prefix_differs():
    assert upstream_path("http://h/v1", "/chat/completions", "/v1/chat/completions") is None
    assert upstream_path("http://h/openai/v1", "/chat/completions",
                         "/v1/chat/completions?x=1") == "/openai/v1/chat/completions?x=1"
    assert upstream_path("http://h", "/completions", "/v1/completions") == "/completions"


def test_credentials_as_the_http_proxy_forwards_them():
    t = BackendTarget("http://h/v1", "m")
    assert credential_edit(t) == ({}, ["proxy-authorization", "cookie", "x-api-key",
                                       "authorization", "openai-organization", "openai-project"])
    own_key = credential_edit(replace(t, api_key="sk-1", forward_client_auth=True))
    assert own_key[0] == {"authorization": "Bearer sk-1"}
    assert "openai-organization" in own_key[1] and "authorization" not in own_key[1]
    client = credential_edit(replace(t, forward_client_auth=True))
    assert client[0] == {}
    assert not {"authorization", "openai-organization", "openai-project"} & set(client[1])


def test_request_edit_sets_body_length_and_routing_headers():
    target = BackendTarget("http://127.0.0.1:9101/v1", "phi-4")
    body = {"model": "phi-4", "messages": [{"role": "user", "content": "é"}]}
    edit = request_edit("phi4", target, body, {"x-router-model": "phi4"}, "/chat/completions",
                        "/v1/chat/completions")
    assert json.loads(edit.body) == body
    h = edit.set_headers
    assert h["content-length"] == str(len(edit.body))
    assert h[SELECTED_MODEL] == "phi4" and h[DESTINATION] == "127.0.0.1:9101"
    assert h["x-router-model"] == "phi4" and ":path" not in h
    assert "authorization" in edit.remove_headers
    c = edit.reply().request_body.response
    assert c.clear_route_cache and c.body_mutation.body == edit.body
    assert set_headers(c.header_mutation) == h


def test_request_edit_carries_the_routers_traceparent():
    target = BackendTarget("http://127.0.0.1:9101/v1", "phi-4")
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    edit = request_edit("phi4", target, {}, {}, "/chat/completions", "/v1/chat/completions",
                        {"traceparent": tp})
    assert edit.set_headers["traceparent"] == tp
    assert "tracestate" in edit.remove_headers  # the client's, of another parent span
    edit = request_edit("phi4", target, {}, {}, "/chat/completions", "/v1/chat/completions",
                        {"traceparent": tp, "tracestate": "v=1"})
    assert edit.set_headers["tracestate"] == "v=1" and "tracestate" not in edit.remove_headers
    off = request_edit("phi4", target, {}, {}, "/chat/completions", "/v1/chat/completions")
    assert "traceparent" not in off.set_headers and "tracestate" not in off.remove_headers


# ---------------------------------------------------------------- request headers


def door(passthrough: tuple[str, ...] = ()) -> Runtime:
    """A runtime that was never started: enough for what is decided at the headers."""
    cfg = load_config(EXAMPLE_CONFIG)
    cfg = replace(cfg, extproc=replace(cfg.extproc, passthrough_paths=passthrough))
    rt = Runtime(cfg)
    # No classifier: nothing here reaches one.
    rt.flow = RequestFlow(Router(cfg, None, rt.metrics), rt.cache, rt.metrics, rt.gate)
    return rt


def request_headers(method: str, path: str, extra=(), end_of_stream=False) -> pb.ProcessingRequest:
    msg = headers_msg([(":method", method), (":path", path), *extra],
                      end_of_stream=end_of_stream)
    return pb.ProcessingRequest(request_headers=msg)


async def test_passthrough_paths_pass_and_lose_spoofed_routing_headers():
    ex = EnvoyRequest(door(passthrough=("/v1/embeddings",)))
    r = await ex.handle(request_headers("POST", "/v1//embeddings/", [(SELECTED_MODEL, "phi4")]))
    c = r.request_headers.response
    assert list(c.header_mutation.remove_headers) == [SELECTED_MODEL] and c.clear_route_cache
    assert r.mode_override.request_body_mode == Mode.NONE
    assert ex.exchange is None


@pytest.mark.parametrize("path", ["/v1/embeddings", "/v1/responses", "/V1/CHAT/COMPLETIONS",
                                  "/admin", "/v1/chat/completions/extra"])
async def test_any_other_path_is_404_and_never_forwarded(path):
    r = await EnvoyRequest(door()).handle(request_headers("POST", path))
    ir = r.immediate_response
    assert ir.status.code == 404
    err = json.loads(immediate_body(ir))["error"]
    assert err["code"] == "not_found" and err["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", ["/v1/%63hat/completions", "//v1//chat/completions",
                                  "/v1/./chat/completions/", "/v1/x/../chat/completions?a=1",
                                  "/v1\\chat\\completions"])
async def test_spellings_of_a_generation_path_are_that_path(path):
    r = await EnvoyRequest(door()).handle(request_headers(
        "POST", path, [("content-type", "application/json")]))
    assert r.WhichOneof("response") == "request_headers"
    assert r.mode_override.request_body_mode == Mode.BUFFERED  # read and checked like any


async def test_an_escaped_slash_is_refused():
    r = await EnvoyRequest(door()).handle(request_headers("POST", "/v1/chat%2Fcompletions"))
    assert r.immediate_response.status.code == 400


async def test_models_are_listed_by_the_router_itself():
    r = await EnvoyRequest(door()).handle(request_headers("GET", "/v1/models", end_of_stream=True))
    ids = [m["id"] for m in json.loads(immediate_body(r.immediate_response))["data"]]
    assert ids[0] == "auto" and "phi4" in ids


async def test_generation_request_asks_for_the_body_and_drops_spoofed_headers():
    ex = EnvoyRequest(door())
    r = await ex.handle(request_headers("POST", "/v1/chat/completions?x=1", [
        ("content-type", "application/json; charset=utf-8"), (DESTINATION, "10.0.0.1:80")]))
    assert r.WhichOneof("response") == "request_headers"
    assert list(r.request_headers.response.header_mutation.remove_headers) == [DESTINATION]
    assert r.mode_override.request_body_mode == Mode.BUFFERED
    assert r.mode_override.response_body_mode == Mode.STREAMED


@pytest.mark.parametrize(("method", "ctype", "eos", "status", "code"), [
    ("GET", None, True, 405, None),
    ("POST", "text/plain", False, 415, "unsupported_media_type"),
    ("POST", "application/json", True, 400, None),  # no body: not valid JSON, as the proxy says
    ("POST", "application/json+gzip", False, 415, "unsupported_content_encoding"),
])
async def test_refusals_at_the_headers(method, ctype, eos, status, code):
    d = door()
    ex = EnvoyRequest(d)
    extra = [("content-type", ctype)] if ctype else []
    if ctype and ctype.endswith("+gzip"):  # a compressed body: its inflated size is unknown
        extra = [("content-type", "application/json"), ("content-encoding", "gzip")]
    r = await ex.handle(request_headers(method, "/v1/chat/completions", extra, eos))
    ir = r.immediate_response
    assert ir.status.code == status
    err = json.loads(immediate_body(ir))["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == code
    if status == 405:
        assert set_headers(ir.headers)["allow"] == "POST"
    if status == 400:
        assert err["message"].startswith("The body is not valid JSON")
    ex.finish()
    label = d.metrics.bounds.model("none")
    counted = d.metrics.requests_total.labels(model=label, status=str(status))._value.get()
    assert counted == (0 if status == 405 else 1)  # as the HTTP proxy: 405 is the router's


# ---------------------------------------------------------------- the answer, chunk by chunk


def routed(stream: bool, include_usage: bool = False) -> Routed:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    d = Decision("phi4", "math", 0.9, "category", "route", frozenset())
    return Routed("chat", parse_chat_request(body), d, {**body, "model": "phi4"},
                  BackendTarget("http://127.0.0.1:1/v1", "phi4"))


def watch_for(r: Routed, metrics: Metrics) -> ResponseWatch:
    fwd = Forward(r, Lookup(None), CHAT)
    return ResponseWatch(fwd, Relay(fwd, CacheFront(CacheConfig(), None), metrics, 0.0))


def sse(*objs) -> bytes:
    return b"".join(b"data: " + json.dumps(o).encode() + b"\n\n" for o in objs)


CHUNKS = [{"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "phi4",
           "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"},
                        "finish_reason": None}]},
          {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "phi4",
           "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
          {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "phi4",
           "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2,
                                    "total_tokens": 3}}]


@pytest.mark.parametrize("include_usage", [False, True])
async def test_sse_split_anywhere_strips_only_the_usage_chunk(include_usage):
    metrics = Metrics.create(models=["phi4"])
    watch = watch_for(routed(True, include_usage), metrics)
    h = await watch.on_headers({":status": "200", "content-type": "text/event-stream"}, False)
    assert set_headers(h.response_headers.response.header_mutation)["x-router-model"] == "phi4"
    stream = sse(*CHUNKS) + b"data: [DONE]\n\n"
    pieces = [stream[i:i + 7] for i in range(0, len(stream), 7)]  # events cut mid-line
    out = b""
    for i, piece in enumerate(pieces):
        r = (await watch.on_body(piece, i == len(pieces) - 1)).response_body.response
        m = r.body_mutation
        out += piece if not r.HasField("body_mutation") else (
            b"" if m.WhichOneof("mutation") == "clear_body" else m.body)
    want = stream if include_usage else sse(*CHUNKS[:2]) + b"data: [DONE]\n\n"
    assert out == want
    assert watch.complete
    tokens = metrics.tokens_total.labels(model="phi4", kind="completion")._value.get()
    assert tokens == 2  # counted from the usage chunk, shown to the client or not


async def test_error_answer_becomes_openai_json():
    metrics = Metrics.create(models=["phi4"])
    watch = watch_for(routed(False), metrics)
    h = (await watch.on_headers({":status": "503", "content-type": "text/plain"},
                                False)).response_headers.response.header_mutation
    assert set_headers(h)["content-type"] == "application/json"
    assert "content-length" in h.remove_headers
    first = (await watch.on_body(b"upstream connect error ", False)).response_body.response
    assert first.body_mutation.WhichOneof("mutation") == "clear_body"
    last = (await watch.on_body(b"http://127.0.0.1:1/v1 refused", True)).response_body.response
    err = json.loads(last.body_mutation.body)["error"]
    assert err["type"] == "server_error"
    assert "upstream connect error" in err["message"] and "127.0.0.1:1" not in err["message"]


async def test_error_without_a_body_gets_one():
    watch = watch_for(routed(False), Metrics.create(models=["phi4"]))
    c = (await watch.on_headers({":status": "502"}, True)).response_headers.response
    assert c.status == pb.CommonResponse.CONTINUE_AND_REPLACE
    err = json.loads(c.body_mutation.body)["error"]
    assert err["type"] == "server_error" and "502" in err["message"]
    assert watch.complete and watch.status == 502


# ---------------------------------------------------------------- the Envoy config


def test_rewrite_changes_only_addresses():
    cfg = envoy_launcher.load()
    models = {"phi4": ("127.0.0.1", 1001), "mistral-small3.1": ("127.0.0.1", 1002),
              "gemma3:27b": ("127.0.0.1", 1003)}
    to = envoy_launcher.Addresses(2000, 2001, ("127.0.0.1", 2002), models)
    out = envoy_launcher.rewrite(cfg, to, failure_mode_allow=True)
    assert envoy_launcher.ext_proc_filter(out)["failure_mode_allow"] is True
    assert envoy_launcher.ext_proc_filter(cfg)["failure_mode_allow"] is False  # not mutated
    assert out["static_resources"]["listeners"][0]["address"]["socket_address"] == {
        "address": "127.0.0.1", "port_value": 2000}
    clusters = {c["name"]: c for c in out["static_resources"]["clusters"]}
    for model, cluster in envoy_launcher.model_clusters(out).items():
        ep = clusters[cluster]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
        assert ep["endpoint"]["address"]["socket_address"]["port_value"] == models[model][1]
    assert clusters["original_destination"] == next(
        c for c in cfg["static_resources"]["clusters"] if c["name"] == "original_destination")
    with pytest.raises(envoy_launcher.EnvoyError, match="phi4"):
        envoy_launcher.rewrite(cfg, replace(to, models={}))


def test_repository_envoy_config_matches_the_router_config_and_compose():
    """Every model of deploy/router-config.yaml has its route and a cluster at its backend;
    the default route goes to default_model's backend; the ext_proc cluster is the router's
    extproc port; the filter buffers requests and streams responses."""
    cfg = envoy_launcher.load()
    router = load_config(ROUTER_CONFIG)
    assert router.extproc.enabled and router.extproc.host == "0.0.0.0"
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}

    def address(cluster: str) -> tuple[str, int]:
        sa = clusters[cluster]["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
            "endpoint"]["address"]["socket_address"]
        return sa["address"], sa["port_value"]

    routes = envoy_launcher.model_clusters(cfg)
    assert set(routes) == set(router.model_config)
    for model, cluster in routes.items():
        url = urlsplit(router.model_config[model].backend.base_url)
        assert address(cluster) == (url.hostname, url.port), model
    ext = envoy_launcher.ext_proc_filter(cfg)
    assert address(ext["grpc_service"]["envoy_grpc"]["cluster_name"]) == (
        "router", router.extproc.port)
    mode = ext["processing_mode"]
    assert (mode["request_body_mode"], mode["response_body_mode"]) == ("BUFFERED", "STREAMED")
    assert ext["allow_mode_override"] is True
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]
    default = hcm["route_config"]["virtual_hosts"][0]["routes"][-1]
    assert default["match"] == {"prefix": "/"}
    assert default["route"]["cluster"] == routes[router.default_model]
    removed = {m["remove"] for m in hcm["early_header_mutation_extensions"][0]["typed_config"][
        "mutations"]}
    assert removed == {SELECTED_MODEL, DESTINATION}
    assert yaml.safe_dump(cfg)  # plain YAML, no templating
