"""The Envoy External Processor front door: Envoy's ext_proc gRPC stream in, the same decision
pipeline as the HTTP proxy (``Router.route``, ``CacheFront``), Envoy's instructions out.

Envoy opens one ``Process`` stream per HTTP request. ``Exchange`` is that request:

1. request headers: an OpenAI generation path (``/v1/chat/completions``, ``/v1/completions``)
   asks for the whole body (``mode_override``: buffered request, streamed response); any other
   path is let through and the stream ends there. A wrong method or media type, or a request
   without a body, is answered at once as the HTTP proxy would.
2. request body: parse, route, cache lookup, exactly as ``app.handle_generation``. A PII refusal,
   a cache hit or a client mistake becomes an ``ImmediateResponse`` with the HTTP proxy's body
   (``answers.py``); a routed request becomes a body and header mutation that Envoy routes on
   (``extproc_proto.request_edit``).
3. response headers and body: ``extproc_response.ResponseWatch``.

Metrics are the HTTP proxy's (same names and labels: the two doors are one router). A client
that sends the routing headers itself never picks the route: they are removed on the way in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from multidict import CIMultiDict

from router_svc.answers import (
    LocalAnswer,
    cache_answer,
    check_media_type,
    error_answer,
    error_reason,
    media_type,
    parse_json_object,
    rejection_answer,
    replay_answer,
)
from router_svc.cache_flow import CacheFront
from router_svc.config import Config
from router_svc.errors import RouterError
from router_svc.extproc_proto import (
    ROUTING_HEADERS,
    common,
    header_map,
    immediate,
    llm_mode,
    pass_through_mode,
    request_body_reply,
    request_edit,
    request_headers_reply,
    response_body_reply,
    response_headers_reply,
    trailers_reply,
)
from router_svc.extproc_response import ResponseWatch
from router_svc.metrics import Metrics
from router_svc.pipeline import Kind, Router
from router_svc.stream_events import ask_for_usage

log = logging.getLogger("router_svc.extproc")

# path -> (kind, the backend path under its base URL, the metrics endpoint label)
ENDPOINTS: dict[str, tuple[Kind, str, str]] = {
    "/v1/chat/completions": ("chat", "/chat/completions", "chat_completions"),
    "/v1/completions": ("completion", "/completions", "completions"),
}
CLIENT_GONE = 499  # the stream ended before the answer did (nginx's "client closed request")


@dataclass
class Door:
    """What every exchange shares: one router, one cache, one set of metrics."""

    config: Config
    router: Router
    cache: CacheFront
    metrics: Metrics


class RouterTimeout(RouterError):
    status = 504
    type = "server_error"
    default_code = "router_timeout"


class Exchange:
    """One HTTP request as Envoy shows it to the processor, start to end."""

    def __init__(self, door: Door) -> None:
        self.door = door
        self.t0 = time.perf_counter()
        self.headers: dict[str, str] = {}
        self.endpoint: tuple[Kind, str, str] | None = None  # set for generation requests
        self.model = "none"
        self.status: int | None = None  # set once the answer is known (counted then)
        self.watch: ResponseWatch | None = None

    async def handle(self, req: pb.ProcessingRequest) -> pb.ProcessingResponse:
        which = req.WhichOneof("request")
        try:
            if which == "request_headers":
                return await self.on_request_headers(req.request_headers)
            if which == "request_body":
                return await self.on_request_body(req.request_body)
            if which == "response_headers":
                return await self.on_response_headers(req.response_headers)
            if which == "response_body":
                return await self.on_response_body(req.response_body)
        except Exception:
            if which in ("request_headers", "request_body"):
                log.exception("ext_proc: unhandled error on %s", which)
                return self.error(RouterError("Internal router error; see the router's log."),
                                  reason="internal")
            # The answer is already on its way: let it through rather than break it.
            log.exception("ext_proc: unhandled error on %s; passing it on unchanged", which)
            return (response_headers_reply() if which == "response_headers"
                    else response_body_reply())
        return trailers_reply(which == "request_trailers")

    # ---------------------------------------------------------------- request

    async def on_request_headers(self, msg: pb.HttpHeaders) -> pb.ProcessingResponse:
        self.headers = header_map(msg)
        path = self.headers.get(":path", "").split("?", 1)[0]
        spoofed = [h for h in ROUTING_HEADERS if h in self.headers]
        endpoint = ENDPOINTS.get(path)
        if endpoint is None:  # not ours: unchanged, and no more messages for this request
            return request_headers_reply(common(remove=spoofed, clear_route_cache=bool(spoofed)),
                                         pass_through_mode())
        if self.headers.get(":method", "").upper() != "POST":
            err = RouterError("Method Not Allowed", status=405, type="invalid_request_error")
            return self.answer(error_answer(err, {"Allow": "POST"}), "router_method_not_allowed")
        self.endpoint = endpoint
        try:
            check_media_type(media_type(self.headers.get("content-type")))
        except RouterError as e:
            return self.error(e)
        if msg.end_of_stream:  # no body at all: what the HTTP proxy says about an empty one
            return await self.route(b"")
        return request_headers_reply(common(remove=spoofed), llm_mode())

    async def on_request_body(self, msg: pb.HttpBody) -> pb.ProcessingResponse:
        if self.endpoint is None or self.watch is not None or self.status is not None:
            return request_body_reply()  # a path let through (mode override not allowed)
        return await self.route(msg.body)

    async def route(self, raw: bytes) -> pb.ProcessingResponse:
        """The body's decision within ``extproc.message_timeout_s`` (Envoy stops waiting at
        its ``message_timeout``; the pipeline's own Triton deadline is shorter still)."""
        budget = self.door.config.extproc.message_timeout_s
        try:
            return await asyncio.wait_for(self._route(raw), budget)
        except TimeoutError:
            return self.error(RouterTimeout(
                f"The router did not decide within {budget:g}s (extproc.message_timeout_s)."),
                reason="internal")

    async def _route(self, raw: bytes) -> pb.ProcessingResponse:
        door, endpoint = self.door, self.endpoint
        assert endpoint is not None
        kind, backend_path, _ = endpoint
        # The cache reads Cache-Control, the tenant header and Authorization by name.
        headers = CIMultiDict(self.headers)
        try:
            body = parse_json_object(raw)
            repeat = await door.cache.repeat(kind, body, headers)
            if repeat is not None:  # the very same request as a cached one: no model call
                known, hit = repeat
                self.model = known.decision.model
                door.router.count_decision(known.decision, "cache_hit")
                return self.answer(replay_answer(known.headers, hit, body), "router_cache_hit")
            routed = await door.router.route(kind, body, count_routing=False)
            self.model = routed.decision.model
            if routed.rejection is not None:
                door.router.count_decision(routed.decision)
                return self.answer(rejection_answer(routed), "router_pii_rejected")
            cached = await door.cache.lookup(routed, headers)
            door.router.count_decision(routed.decision, "cache_hit" if cached.hit else None)
            if cached.hit is not None:
                return self.answer(cache_answer(routed, cached), "router_cache_hit")
        except RouterError as e:
            return self.error(e)
        assert routed.target is not None
        upstream = ask_for_usage(routed.body) if routed.stream else routed.body
        edit = request_edit(routed.decision.model, routed.target, upstream,
                            {**routed.headers(), **cached.headers()}, backend_path,
                            self.headers.get(":path", ""))
        self.watch = ResponseWatch(routed, cached, door.cache, door.metrics, time.perf_counter())
        return edit.reply()

    def answer(self, answer: LocalAnswer, details: str) -> pb.ProcessingResponse:
        self.done(answer.status)
        return immediate(answer, details)

    def error(self, err: RouterError, *, reason: str | None = None) -> pb.ProcessingResponse:
        self.door.metrics.count_error(reason or error_reason(err))
        return self.answer(error_answer(err), f"router_error_{err.status}")

    # ---------------------------------------------------------------- response

    async def on_response_headers(self, msg: pb.HttpHeaders) -> pb.ProcessingResponse:
        if self.watch is None:
            return response_headers_reply()
        reply = await self.watch.on_headers(header_map(msg), msg.end_of_stream)
        if self.watch.complete:
            self.done(self.watch.status)
        return reply

    async def on_response_body(self, msg: pb.HttpBody) -> pb.ProcessingResponse:
        if self.watch is None:
            return response_body_reply()
        reply = await self.watch.on_body(msg.body, msg.end_of_stream)
        if self.watch.complete:
            self.done(self.watch.status)
        return reply

    # ---------------------------------------------------------------- the end

    def done(self, status: int) -> None:
        """Count the request as the HTTP proxy does, once, as soon as its answer is known:
        before Envoy gets the last reply, so the client never sees the end first."""
        if self.status is not None:
            return
        self.status = status
        if self.endpoint is None:
            return
        m = self.door.metrics
        m.count_request(self.model, status)
        m.observe_request(self.endpoint[2], time.perf_counter() - self.t0)

    def finish(self) -> None:
        """The stream is over; an answer that did not reach its end is the client's going."""
        self.done(CLIENT_GONE)


class ExternalProcessor(pb_grpc.ExternalProcessorServicer):
    def __init__(self, door: Door) -> None:
        self.door = door

    async def Process(self, request_iterator: AsyncIterator[pb.ProcessingRequest],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ProcessingResponse]:
        ex = Exchange(self.door)
        try:
            async for req in request_iterator:
                yield await ex.handle(req)
        finally:
            ex.finish()


class ExtProcServer:
    """The gRPC server: ``await start(host, port)`` (port 0 picks one: see ``.port``) and
    ``await stop(grace)``, which refuses new streams and gives those in flight ``grace``
    seconds to finish (an answer still streaming through Envoy)."""

    def __init__(self, door: Door) -> None:
        self.door = door
        self.port = 0
        self._server: grpc.aio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        # A request body is at most proxy.max_body_bytes; the message around it a little more.
        limit = self.door.config.proxy.max_body_bytes + (1 << 20)
        server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),  # a second server on a taken port must fail, not share
        ])
        pb_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(self.door), server)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as e:  # grpcio raises when it cannot bind
            raise OSError(f"ext_proc server cannot listen on {address}: {e}") from None
        if not bound:
            raise OSError(f"ext_proc server cannot listen on {address}")
        await server.start()
        self._server, self.port = server, bound
        log.info("ext_proc server listening on %s:%d", host, bound)
        return bound

    async def stop(self, grace: float | None = None) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)
