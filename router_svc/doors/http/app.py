"""The HTTP door: read the request, hand it to the flow, render the outcome. No decisions.

``create_app(config)`` starts its own ``Runtime`` (tests, the embedded default);
``create_app(config, runtime=rt)`` serves a started one, shared with the ext_proc server
(``router-svc serve``). Everything lives on the app under one key, ``RUNTIME``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from router_svc.backend.errors import UpstreamError, sse_error_event
from router_svc.config.loading import Config
from router_svc.core.endpoints import CHAT, CLIENT_GONE, COMPLETION, Endpoint
from router_svc.core.errors import BadRequest, PayloadTooLarge, RouterError
from router_svc.core.metrics import render as render_metrics
from router_svc.core.pipeline import classify_report
from router_svc.doors.http.openapi import OPENAPI_PATH, openapi_json
from router_svc.doors.http.state import RUNTIME
from router_svc.flow.answers import (
    SSE_HEADERS,
    LocalAnswer,
    backend_error,
    error_answer,
    error_reason,
    models_answer,
    not_served,
    parse_json_object,
)
from router_svc.flow.request import Exchange, Forward, Local, Outcome
from router_svc.flow.runtime import Runtime

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("router_svc")

GONE = web.RequestKey("client_gone", bool)  # the client hung up mid-answer


# ---------------------------------------------------------------- errors

def error_response(err: RouterError, headers: dict[str, str] | None = None) -> web.Response:
    # An error may carry headers of its own (e.g. x-router-pii-check on a fail-closed 503).
    answer = error_answer(err, headers)
    return web.json_response(answer.json_body, status=answer.status, headers=answer.headers)


@web.middleware
async def error_middleware(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    metrics = request.app[RUNTIME].metrics
    try:
        return await handler(request)
    except RouterError as e:
        metrics.count_error(error_reason(e))
        return error_response(e)
    except web.HTTPRequestEntityTooLarge:
        # (aiohttp's exception does not keep the limit as an attribute: read it from the config)
        metrics.count_error("bad_request")
        limit = request.app[RUNTIME].config.proxy.max_body_bytes
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


async def read_body(request: web.Request) -> bytes:
    ctype = request.content_type  # aiohttp says application/octet-stream when it is absent
    if "Content-Type" not in request.headers:
        ctype = ""  # curl -d without -H, bare HTTP clients: read the body as JSON
    Exchange.check_media_type(ctype)
    try:
        return await request.read()  # aiohttp enforces client_max_size (413) here
    except web.RequestPayloadError as e:  # e.g. Content-Encoding: gzip on a plain body
        raise BadRequest(f"The body could not be read as sent: {e}.",
                         code="unreadable_body") from None


async def read_json(request: web.Request) -> dict[str, Any]:
    return parse_json_object(await read_body(request))


# ---------------------------------------------------------------- handlers

async def handle_generation(request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
    """Render the flow's outcome: a local answer, or the backend's answer relayed."""
    flow = request.app[RUNTIME].flow
    assert flow is not None
    ex = flow.begin(endpoint, request.headers)
    status = 500
    try:
        try:
            raw = await read_body(request)
        except RouterError as e:
            outcome: Outcome = ex.error(e)
        else:
            outcome = await ex.decide(raw, request.headers, request.remote)
        if isinstance(outcome, Local):
            status = outcome.answer.status
            return await render(request, outcome.answer)
        resp = await forward(request, ex, outcome)
        status = CLIENT_GONE if request.get(GONE) else resp.status
        return resp
    except web.HTTPException as e:  # e.g. 413 from aiohttp's body size limit
        status = e.status
        raise
    except (ConnectionResetError, asyncio.CancelledError):
        status = CLIENT_GONE
        raise
    finally:
        ex.finish(status)


async def render(request: web.Request, answer: LocalAnswer) -> web.StreamResponse:
    """A router-made answer in the mode the client asked for (JSON or SSE)."""
    if answer.json_body is not None:
        return web.json_response(answer.json_body, status=answer.status, headers=answer.headers)
    resp = web.StreamResponse(status=answer.status, headers={**answer.headers, **SSE_HEADERS})
    await resp.prepare(request)
    for ev in answer.events:
        await resp.write(ev)
    await resp.write_eof()
    return resp


async def forward(request: web.Request, ex: Exchange, fwd: Forward) -> web.StreamResponse:
    """Send ``fwd`` and relay the answer; a backend that fails before any byte of its answer
    reached the client hands the request to the next model (``Exchange.failed``)."""
    while True:
        try:
            if fwd.routed.stream:
                return await forward_stream(request, ex, fwd)
            return await forward_json(request, ex, fwd)
        except UpstreamError as e:
            nxt = ex.failed(fwd, e)
            if nxt is None:
                return await render(request, ex.error(backend_error(e), headers=fwd.headers,
                                                      reason=e.reason).answer)
            fwd = nxt


async def forward_json(request: web.Request, ex: Exchange, fwd: Forward) -> web.Response:
    """A non-streaming answer; ``UpstreamError`` when the backend failed."""
    proxy = request.app[RUNTIME].proxy
    assert proxy is not None
    relay = ex.relay(fwd)
    res = await proxy.post_json(fwd.target, fwd.endpoint.backend_path, fwd.body,
                                request.headers, trace_headers=relay.trace_headers)
    ex.answered(fwd, res.status)
    await relay.json_ended(res.body)
    # The backend's own bytes: parsed above for usage and the cache, not re-encoded; a masked
    # request's answer is re-encoded with the client's values put back.
    restored = relay.restored_body(res.body)
    return web.Response(body=res.raw if restored is None else restored, status=res.status,
                        headers=fwd.headers,
                        content_type="application/json", charset="utf-8")


async def forward_stream(request: web.Request, ex: Exchange,
                         fwd: Forward) -> web.StreamResponse:
    """A streamed answer. ``UpstreamError`` only while nothing was sent to the client; a
    failure after that is reported in-band, as OpenAI does."""
    proxy = request.app[RUNTIME].proxy
    assert proxy is not None
    relay = ex.relay(fwd)
    clean = False
    resp: web.StreamResponse | None = None
    try:
        async with proxy.stream(fwd.target, fwd.endpoint.backend_path, fwd.body,
                                request.headers, trace_headers=relay.trace_headers) as up:
            ex.answered(fwd, up.result.status)
            resp = web.StreamResponse(headers={**fwd.headers, **SSE_HEADERS})
            await resp.prepare(request)
            try:
                write_timeout = request.app[RUNTIME].config.proxy.client_write_timeout_s
                async for ev in up:
                    if relay.keep(ev):  # (restored: a masked answer gets its values back)
                        await write_within(request, resp, relay.restored(ev), write_timeout)
                clean = True
            except UpstreamError as e:  # headers are gone: report in-band, as OpenAI does
                relay.failed(e.reason)
                await resp.write(sse_error_event(e))
        await resp.write_eof()
        await relay.stream_ended(clean=clean)
        return resp
    except ConnectionResetError:
        # The client hung up mid-stream (a write failed); leaving ``async with`` closed the
        # backend call. Hand back the response already under way: aiohttp finishes it quietly,
        # where a raised exception would be logged as a 500. (A hang-up noticed while waiting
        # arrives as CancelledError instead; the error middleware counts that one.)
        if resp is None or not resp.prepared:
            raise
        request.app[RUNTIME].metrics.count_error("client_disconnected")
        await relay.stream_ended(clean=False)
        request[GONE] = True
        return resp


async def write_within(request: web.Request, resp: web.StreamResponse, data: bytes,
                       timeout_s: float) -> None:
    """One write to a streaming client; a client that stops reading is cut off (its
    connection aborted, so no later write waits on it either) and counts as gone."""
    try:
        async with asyncio.timeout(timeout_s):
            await resp.write(data)
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError(f"client read nothing for {timeout_s:g}s") from None


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await handle_generation(request, CHAT)


async def completions(request: web.Request) -> web.StreamResponse:
    return await handle_generation(request, COMPLETION)


async def classify(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    assert rt.router is not None
    body = await read_json(request)
    kind = "completion" if "prompt" in body and "messages" not in body else "chat"
    body.setdefault("model", rt.config.routing.alias)
    caller = rt.gate.identify(request.headers, request.remote)
    routed = await rt.router.route(kind, body, allowed=caller.models, headers=request.headers)
    report = classify_report(routed)
    plan = rt.cache.plan(routed, request.headers, caller)
    if plan is not None:  # what the cache would do (no lookup: stats stay the traffic's)
        report["cache"] = {"partition": plan.partition, "lookup": plan.lookup,
                           "store": plan.store, "why_not_store": plan.why_not_store or None}
    return web.json_response(report, headers=routed.headers())


# ---------------------------------------------------------------- cache admin

def _admin(request: web.Request) -> web.Response | None:
    """None if the bearer token is right; else the answer (404 disabled, 401)."""
    front = request.app[RUNTIME].cache
    token = front.admin_token()
    if token is None:
        raise web.HTTPNotFound()
    if not front.authorized(token, request.headers.get("Authorization")):
        err = RouterError("Invalid or missing admin token (Authorization: Bearer <token>).",
                          status=401, type="invalid_request_error", code="invalid_api_key")
        return error_response(err, {"WWW-Authenticate": "Bearer"})
    return None


async def cache_stats(request: web.Request) -> web.Response:
    return _admin(request) or web.json_response(request.app[RUNTIME].cache.stats().as_dict())


async def cache_flush(request: web.Request) -> web.Response:
    return _admin(request) or web.json_response(
        {"removed": await request.app[RUNTIME].cache.flush()})


async def cache_invalidate(request: web.Request) -> web.Response:
    if (refused := _admin(request)) is not None:
        return refused
    partition = (await read_json(request)).get("partition")
    removed = await request.app[RUNTIME].cache.invalidate(partition)
    if removed is None:
        raise BadRequest("'partition' must be a partition key as sent in the "
                         "x-router-cache-partition header (64 hex digits).", param="partition")
    return web.json_response({"partition": partition, "removed": removed})


async def models(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    cfg = rt.config
    caller = rt.gate.identify(request.headers, request.remote)
    served = {k: v for k, v in cfg.model_config.items() if caller.may_use(k)}
    return await render(request, models_answer(cfg.routing.alias, served, int(time.time())))


async def responses(request: web.Request) -> web.Response:
    raise not_served(request.path)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    ok = await rt.ready()
    # A degraded cache (Milvus down: bypassed) is reported, never a reason to be unready.
    return web.json_response({"ready": ok, "triton": "ready" if ok else "unavailable",
                              "triton_servers": rt.triton_servers(),
                              "cache": rt.cache_state()}, status=200 if ok else 503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    body, ctype = render_metrics(request.app[RUNTIME].metrics, request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": ctype})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=openapi_json(), content_type="application/json")


def create_app(config: Config, *, runtime: Runtime | None = None,
               tokenizer: Path | None = None, startup_timeout_s: float = 60.0,
               span_exporter: SpanExporter | None = None) -> web.Application:
    """The HTTP door. Without ``runtime`` the app starts and stops one of its own
    (``span_exporter``: where its spans go in place of OTLP, e.g. a test's)."""
    app = web.Application(middlewares=[error_middleware],
                          client_max_size=config.proxy.max_body_bytes)
    if runtime is None:
        runtime = Runtime(config, tokenizer=tokenizer, startup_timeout_s=startup_timeout_s,
                          span_exporter=span_exporter)

        async def run(app: web.Application) -> AsyncIterator[None]:
            async with runtime.running():
                yield

        app.cleanup_ctx.append(run)
    app[RUNTIME] = runtime
    app.router.add_post(CHAT.path, chat_completions)
    app.router.add_post(COMPLETION.path, completions)
    app.router.add_get("/v1/models", models)
    app.router.add_route("*", "/v1/responses", responses)
    app.router.add_post("/api/v1/classify", classify)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/admin/cache", cache_stats)
    app.router.add_get("/admin/cache/stats", cache_stats)
    app.router.add_post("/admin/cache/flush", cache_flush)
    app.router.add_post("/admin/cache/invalidate", cache_invalidate)
    app.router.add_get(OPENAPI_PATH, openapi)
    return app
