"""The Envoy External Processor door: Envoy's ext_proc gRPC stream in, the request flow that
the HTTP door uses (``flow.request``), Envoy's instructions out.

Envoy opens one ``Process`` stream per HTTP request. ``EnvoyRequest`` is that request:

1. request headers: a generation path (``core.endpoints``) asks for the whole body
   (``mode_override``: buffered request, streamed response); any other path is let through
   and the stream ends there. A wrong method or media type, or a request without a body, is
   answered at once as the HTTP door would.
2. request body: ``Exchange.decide``. A ``Local`` outcome becomes an ``ImmediateResponse``
   with the HTTP door's body; a ``Forward`` becomes a body and header mutation that Envoy
   routes on (``proto.request_edit``).
3. response headers and body: ``response.ResponseWatch`` feeds the flow's ``Relay``.

A client that sends the routing headers itself never picks the route: they are removed on
the way in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from multidict import CIMultiDict

from router_svc.core.endpoints import CLIENT_GONE, ENDPOINTS, BadPath, canonical_path
from router_svc.core.errors import BadRequest, RouterError
from router_svc.doors.extproc.proto import (
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
from router_svc.doors.extproc.response import ResponseWatch
from router_svc.flow.answers import (
    check_raw_encoding,
    error_answer,
    media_type,
    models_answer,
    not_served,
)
from router_svc.flow.request import Exchange, Local
from router_svc.flow.runtime import Runtime

log = logging.getLogger("router_svc.extproc")


class RouterTimeout(RouterError):
    status = 504
    type = "server_error"
    default_code = "router_timeout"


class EnvoyRequest:
    """One HTTP request as Envoy shows it to the processor, start to end."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.exchange: Exchange | None = None  # set for generation requests
        self.answered = False  # a local answer or the backend's was decided
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
        spoofed = [h for h in ROUTING_HEADERS if h in self.headers]
        method = self.headers.get(":method", "").upper()
        try:  # every spelling of a path is read as the backend would read it
            path = canonical_path(self.headers.get(":path", ""))
        except BadPath as e:
            return self.answer(Local(error_answer(BadRequest(
                f"The request path cannot be read one way only ({e}).")), "bad_path"))
        endpoint = ENDPOINTS.get(path)
        if endpoint is None:
            config = self.runtime.config
            if path in config.extproc.passthrough_paths:  # unchanged, no more messages
                return request_headers_reply(
                    common(remove=spoofed, clear_route_cache=bool(spoofed)), pass_through_mode())
            if path == "/v1/models" and method == "GET":
                try:
                    caller = self.runtime.gate.identify(self.headers, None)
                except RouterError as e:
                    return self.answer(Local(error_answer(e), "unauthorized"))
                served = [m for m in config.model_config if caller.may_use(m)]
                return self.answer(Local(models_answer(
                    config.routing.alias, served, int(time.time())), "models"))
            return self.answer(Local(error_answer(not_served(path)), "not_found"))
        if method != "POST":
            err = RouterError("Method Not Allowed", status=405, type="invalid_request_error")
            return self.answer(Local(error_answer(err, {"Allow": "POST"}), "method_not_allowed"))
        flow = self.runtime.flow
        assert flow is not None
        self.exchange = flow.begin(endpoint, self.headers, door="extproc")
        try:
            self.exchange.check_media_type(media_type(self.headers.get("content-type")))
            check_raw_encoding(self.headers.get("content-encoding"))
        except RouterError as e:
            return self.error(e)
        if msg.end_of_stream:  # no body at all: what the HTTP door says about an empty one
            return await self.route(b"")
        return request_headers_reply(common(remove=spoofed), llm_mode())

    async def on_request_body(self, msg: pb.HttpBody) -> pb.ProcessingResponse:
        if self.exchange is None or self.answered:
            return request_body_reply()  # a path let through (mode override not allowed)
        return await self.route(msg.body)

    async def route(self, raw: bytes) -> pb.ProcessingResponse:
        """The body's decision within ``extproc.message_timeout_s`` (Envoy stops waiting at
        its ``message_timeout``; the pipeline's own Triton deadline is shorter still)."""
        budget = self.runtime.config.extproc.message_timeout_s
        ex = self.exchange
        assert ex is not None
        try:
            # The cache reads Cache-Control, the tenant header and Authorization by name.
            outcome = await asyncio.wait_for(ex.decide(raw, self.headers), budget)
        except TimeoutError:
            return self.error(RouterTimeout(
                f"The router did not decide within {budget:g}s (extproc.message_timeout_s)."),
                reason="internal")
        if isinstance(outcome, Local):
            return self.answer(outcome)
        self.answered = True
        relay = ex.relay(outcome, time.perf_counter())  # (the backend call's span starts)
        edit = request_edit(outcome.model, outcome.target, outcome.body, outcome.headers,
                            outcome.endpoint.backend_path, self.headers.get(":path", ""),
                            relay.trace_headers)
        self.watch = ResponseWatch(
            outcome, relay,
            on_status=lambda status, retry_after: ex.backend_status(outcome, status,
                                                                    retry_after))
        return edit.reply()

    def answer(self, local: Local) -> pb.ProcessingResponse:
        self.done(local.answer.status)
        return immediate(local.answer, f"router_{local.why}")

    def error(self, err: RouterError, *, reason: str | None = None) -> pb.ProcessingResponse:
        assert self.exchange is not None
        return self.answer(self.exchange.error(err, reason=reason))

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
        """Count the request, once, as soon as its answer is known: before Envoy gets the
        last reply, so the client never sees the end first."""
        self.answered = True
        if self.exchange is not None:
            self.exchange.finish(status)

    def finish(self) -> None:
        """The stream is over; an answer that did not reach its end is the client's going."""
        self.done(CLIENT_GONE)


class ExternalProcessor(pb_grpc.ExternalProcessorServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def Process(self, request_iterator: AsyncIterator[pb.ProcessingRequest],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ProcessingResponse]:
        ex = EnvoyRequest(self.runtime)
        try:
            async for req in request_iterator:
                yield await ex.handle(req)
        finally:
            ex.finish()


class ExtProcServer:
    """The gRPC server: ``await start(host, port)`` (port 0 picks one: see ``.port``) and
    ``await stop(grace)``, which refuses new streams and gives those in flight ``grace``
    seconds to finish (an answer still streaming through Envoy)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.port = 0
        self._server: grpc.aio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        # A request body is at most proxy.max_body_bytes; the message around it a little more.
        limit = self.runtime.config.proxy.max_body_bytes + (1 << 20)
        server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),  # a second server on a taken port must fail, not share
        ])
        pb_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(self.runtime), server)
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
