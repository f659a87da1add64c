"""The HTTP front door: parse, call the pipeline, proxy or answer, render errors. No decisions.

``create_app(config)`` is used by ``router-svc serve``, the embedded default and the tests.
Resources (Triton client, batcher, backend session, cache, ext_proc server) are started and
stopped by ``router_svc.resources``; what lives on the app is named in ``router_svc.app_state``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from router_svc.answers import (
    SSE_HEADERS,
    LocalAnswer,
    cache_answer,
    check_media_type,
    error_answer,
    error_reason,
    parse_json_object,
    rejection_answer,
    replay_answer,
    wants_usage,
)
from router_svc.app_state import (
    CACHE,
    CONFIG,
    EXTPROC,
    METRICS,
    MODEL_INFO,
    PROXY,
    ROUTER,
    TRITON,
)
from router_svc.backend_errors import UpstreamError, sse_error_event
from router_svc.cache_flow import CacheFront, Lookup
from router_svc.config import Config, ConfigError, load_config, parse_config
from router_svc.errors import (
    BackendError,
    BadRequest,
    PayloadTooLarge,
    RouterError,
)
from router_svc.metrics import Metrics, render
from router_svc.pipeline import Kind, Routed, classify_report
from router_svc.resources import cache_ctx, classifier_ctx, extproc_ctx, proxy_ctx

log = logging.getLogger("router_svc")

CLIENT_GONE = "router_client_gone"  # request key: the client hung up mid-answer

ENDPOINT_NAMES = {"/v1/chat/completions": "chat_completions", "/v1/completions": "completions",
                  "/api/v1/classify": "classify"}


# ---------------------------------------------------------------- errors

def error_response(err: RouterError, headers: dict[str, str] | None = None) -> web.Response:
    # An error may carry headers of its own (e.g. x-router-pii-check on a fail-closed 503).
    answer = error_answer(err, headers)
    return web.json_response(answer.json_body, status=answer.status, headers=answer.headers)


@web.middleware
async def error_middleware(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    metrics = request.app[METRICS]
    try:
        return await handler(request)
    except RouterError as e:
        metrics.count_error(error_reason(e))
        return error_response(e)
    except web.HTTPRequestEntityTooLarge:
        # (aiohttp's exception does not keep the limit as an attribute: read it from the config)
        metrics.count_error("bad_request")
        limit = request.app[CONFIG].proxy.max_body_bytes
        return error_response(PayloadTooLarge(
            f"Request body too large: limit is {limit} bytes (proxy.max_body_bytes)."))
    except web.HTTPException as e:
        if e.status >= 400:
            err = RouterError(e.reason, status=e.status,
                              type="invalid_request_error" if e.status < 500 else "server_error",
                              code="not_found" if e.status == 404 else None)
            allow = e.headers.get("Allow")  # 405 must say which methods are allowed
            return error_response(err, {"Allow": allow} if allow is not None else None)
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        metrics.count_error("client_disconnected")
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        metrics.count_error("internal")
        return error_response(RouterError("Internal router error; see the router's log."))


async def read_json(request: web.Request) -> dict[str, Any]:
    ctype = request.content_type  # aiohttp says application/octet-stream when it is absent
    if "Content-Type" not in request.headers:
        ctype = ""  # curl -d without -H, bare HTTP clients: read the body as JSON
    check_media_type(ctype)
    raw = await request.read()  # aiohttp enforces client_max_size (413) here
    return parse_json_object(raw)


# ---------------------------------------------------------------- handlers

async def handle_generation(request: web.Request, kind: Kind) -> web.StreamResponse:
    app = request.app
    metrics = app[METRICS]
    t0 = time.perf_counter()
    endpoint = "chat_completions" if kind == "chat" else "completions"
    status = 500
    model = "none"
    try:
        body = await read_json(request)
        router = app[ROUTER]
        repeat = await app[CACHE].repeat(kind, body, request.headers)
        if repeat is not None:  # the very same request as a cached one: no model call
            known, cached = repeat
            model = known.decision.model
            router.count_decision(known.decision, "cache_hit")
            status = 200
            return await _render(request, replay_answer(known.headers, cached, body))
        routed = await router.route(kind, body, count_routing=False)
        model = routed.decision.model
        if routed.rejection is not None:
            router.count_decision(routed.decision)
            status = 200
            return await answer_locally(request, routed)
        cached = await app[CACHE].lookup(routed, request.headers)
        router.count_decision(routed.decision, "cache_hit" if cached.hit else None)
        if cached.hit is not None:
            status = 200
            return await answer_from_cache(request, routed, cached)
        resp = await forward(request, routed, cached)
        status = 499 if request.get(CLIENT_GONE) else resp.status
        return resp
    except RouterError as e:
        status = e.status
        raise
    except web.HTTPException as e:  # e.g. 413 from aiohttp's body size limit
        status = e.status
        raise
    except (ConnectionResetError, asyncio.CancelledError):
        status = 499  # the client went away (nginx's "client closed request")
        raise
    finally:
        metrics.count_request(model, status)
        metrics.observe_request(endpoint, time.perf_counter() - t0)


async def answer_locally(request: web.Request, routed: Routed) -> web.StreamResponse:
    """A router-made answer (PII refusal) in the shape and mode the client asked for."""
    return await _render(request, rejection_answer(routed))


async def answer_from_cache(request: web.Request, routed: Routed,
                            cached: Lookup) -> web.StreamResponse:
    """A cache hit in the mode the client asked for; no backend call."""
    return await _render(request, cache_answer(routed, cached))


async def _render(request: web.Request, answer: LocalAnswer) -> web.StreamResponse:
    if not answer.stream:
        return web.json_response(answer.json_body, status=answer.status, headers=answer.headers)
    return await _send_events(request, answer.headers, list(answer.events))


async def _send_events(request: web.Request, headers: dict[str, str],
                       events: list[bytes]) -> web.StreamResponse:
    resp = web.StreamResponse(headers={**headers, **SSE_HEADERS})
    await resp.prepare(request)
    for ev in events:
        await resp.write(ev)
    await resp.write_eof()
    return resp


async def forward(request: web.Request, routed: Routed,
                  cached: Lookup) -> web.StreamResponse:
    app = request.app
    proxy, metrics, cache = app[PROXY], app[METRICS], app[CACHE]
    assert routed.target is not None
    path = "/chat/completions" if routed.kind == "chat" else "/completions"
    headers = {**routed.headers(), **cached.headers()}
    model = routed.decision.model
    if not routed.stream:
        try:
            res = await proxy.post_json(routed.target, path, routed.body, request.headers)
        except UpstreamError as e:
            metrics.count_error(e.reason)
            raise _backend_error(e, headers) from None
        metrics.observe_backend(model, res.backend_latency_s)
        metrics.count_tokens(model, res.usage)
        await cache.store_body(cached, routed.kind, res.body)
        # The backend's own bytes: parsed above for usage and the cache, not re-encoded.
        return web.Response(body=res.raw, status=res.status, headers=headers,
                            content_type="application/json", charset="utf-8")

    client_usage = wants_usage(routed)
    capture = cache.capture(cached, routed.kind)
    clean = False
    resp: web.StreamResponse | None = None
    try:
        async with proxy.stream(routed.target, path, routed.body, request.headers,
                                client_usage) as up:
            resp = web.StreamResponse(headers={**headers, **SSE_HEADERS})
            await resp.prepare(request)
            try:
                async for ev in up:
                    await resp.write(ev)
                    if capture is not None:
                        capture.feed(ev)
                clean = True
            except UpstreamError as e:  # headers are gone: report in-band, as OpenAI does
                metrics.count_error(e.reason)
                await resp.write(sse_error_event(e))
            result = up.result
        if result.ttft_s is not None:
            metrics.observe_ttft(model, result.ttft_s)
        if result.backend_latency_s is not None:
            metrics.observe_backend(model, result.backend_latency_s)
        metrics.count_tokens(model, result.usage)
        await resp.write_eof()
        if clean and result.completed:  # only a whole stream the client received is stored
            await cache.store_stream(cached, capture, result.usage)
        return resp
    except UpstreamError as e:
        metrics.count_error(e.reason)
        raise _backend_error(e, headers) from None
    except ConnectionResetError:
        # The client hung up mid-stream (a write failed); leaving ``async with`` closed the
        # backend call. Hand back the response already under way: aiohttp finishes it quietly,
        # where a raised exception would be logged as a 500. (A hang-up noticed while waiting
        # arrives as CancelledError instead; the error middleware counts that one.)
        if resp is None or not resp.prepared:
            raise
        metrics.count_error("client_disconnected")
        request[CLIENT_GONE] = True
        return resp


def _backend_error(e: UpstreamError, headers: dict[str, str]) -> BackendError:
    """The backend's failure in OpenAI format, with the routing headers (where it went)."""
    err = e.body.get("error", {}) if isinstance(e.body, dict) else {}
    out = BackendError(e.status, str(err.get("message", "backend error")),
                       type=err.get("type"), code=err.get("code"), param=err.get("param"))
    out.headers = headers  # type: ignore[attr-defined]  # error_response sends them
    return out


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await handle_generation(request, "chat")


async def completions(request: web.Request) -> web.StreamResponse:
    return await handle_generation(request, "completion")


async def classify(request: web.Request) -> web.Response:
    body = await read_json(request)
    kind: Kind = "completion" if "prompt" in body and "messages" not in body else "chat"
    body.setdefault("model", request.app[CONFIG].routing.alias)
    routed = await request.app[ROUTER].route(kind, body)
    report = classify_report(routed)
    plan = request.app[CACHE].plan(routed, request.headers)
    if plan is not None:  # what the cache would do (no lookup: stats stay the traffic's)
        report["cache"] = {"partition": plan.partition, "lookup": plan.lookup,
                           "store": plan.store, "why_not_store": plan.why_not_store or None}
    return web.json_response(report, headers=routed.headers())


# ---------------------------------------------------------------- cache admin

def _admin(request: web.Request) -> CacheFront | web.Response:
    """The cache if the bearer token is right; else the answer (404 disabled, 401)."""
    front = request.app[CACHE]
    token = front.admin_token()
    if token is None:
        raise web.HTTPNotFound()
    if not front.authorized(token, request.headers.get("Authorization")):
        err = RouterError("Invalid or missing admin token (Authorization: Bearer <token>).",
                          status=401, type="invalid_request_error", code="invalid_api_key")
        return error_response(err, {"WWW-Authenticate": "Bearer"})
    return front


async def cache_stats(request: web.Request) -> web.Response:
    front = _admin(request)
    if isinstance(front, web.Response):
        return front
    return web.json_response(front.stats().as_dict())


async def cache_flush(request: web.Request) -> web.Response:
    front = _admin(request)
    if isinstance(front, web.Response):
        return front
    return web.json_response({"removed": await front.flush()})


async def cache_invalidate(request: web.Request) -> web.Response:
    front = _admin(request)
    if isinstance(front, web.Response):
        return front
    partition = (await read_json(request)).get("partition")
    removed = await front.invalidate(partition)
    if removed is None:
        raise BadRequest("'partition' must be a partition key as sent in the "
                         "x-router-cache-partition header (64 hex digits).", param="partition")
    return web.json_response({"partition": partition, "removed": removed})


async def models(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG]
    now = int(time.time())
    data = [{"id": cfg.routing.alias, "object": "model", "created": now, "owned_by": "router-svc"}]
    data += [{"id": name, "object": "model", "created": now, "owned_by": "router-svc"}
             for name in cfg.model_config]
    return web.json_response({"object": "list", "data": data})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    client = request.app.get(TRITON)
    ok = client is not None and await client.ready()
    return web.json_response({"ready": ok, "triton": "ready" if ok else "unavailable"},
                             status=200 if ok else 503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    body, ctype = render(request.app[METRICS], request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": ctype})


def create_app(config: Config, *, tokenizer: Path | None = None,
               startup_timeout_s: float = 60.0, extproc: bool | None = None,
               extproc_port: int | None = None) -> web.Application:
    """``extproc``: also run the Envoy ext_proc server (default: ``extproc.enabled``), on
    ``extproc_port`` (default: ``extproc.port``; 0 picks a free one)."""
    app = web.Application(middlewares=[error_middleware],
                          client_max_size=config.proxy.max_body_bytes)
    app[CONFIG] = config
    app[METRICS] = Metrics.create(models=[*config.model_config, config.routing.alias],
                                  categories=None)
    app.cleanup_ctx.append(proxy_ctx(config))
    app[CACHE] = CacheFront(config.cache, None)
    app.cleanup_ctx.append(classifier_ctx(config, tokenizer, startup_timeout_s))
    app.cleanup_ctx.append(cache_ctx(config, tokenizer))
    if config.extproc.enabled if extproc is None else extproc:
        app.cleanup_ctx.append(extproc_ctx(config, extproc_port))
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/api/v1/classify", classify)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/admin/cache", cache_stats)
    app.router.add_get("/admin/cache/stats", cache_stats)
    app.router.add_post("/admin/cache/flush", cache_flush)
    app.router.add_post("/admin/cache/invalidate", cache_invalidate)
    return app


async def _freeze_startup_objects(app: web.Application) -> None:
    """Runs after the resources started: what exists now (config, tokenizer, clients, cache
    index) lives as long as the process, and the garbage collector need not walk it again on
    every full collection while requests are served."""
    gc.collect()
    gc.freeze()


def serve(config_path: Path, *, extproc: bool | None = None,
          extproc_port: int | None = None) -> int:
    """``router-svc serve`` (ext_proc too when ``extproc.enabled``) and ``router-svc extproc``
    (``extproc=True``: the ext_proc server, with the HTTP app beside it for health, readiness,
    metrics and the OpenAI routes)."""
    import uvloop

    config = load_config(config_path)
    for w in config.warnings:
        log.warning("config: %s", w)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvloop.install()
    app = create_app(config, extproc=extproc, extproc_port=extproc_port)
    app.on_startup.append(_freeze_startup_objects)
    # The ext_proc grace period runs inside aiohttp's shutdown: leave it room.
    web.run_app(app, host=config.listen.host, port=config.listen.port,
                handler_cancellation=True, access_log=None,
                shutdown_timeout=max(60.0, config.extproc.grace_s + 5))
    return 0


__all__ = ["CACHE", "CONFIG", "EXTPROC", "METRICS", "MODEL_INFO", "PROXY", "ROUTER", "TRITON",
           "ConfigError", "create_app", "parse_config", "serve"]
