"""A local OpenTelemetry collector that accepts every span and keeps none: the far end of the
router's OTLP exporter in ``perf/router_overhead.py --tracing``.

It speaks OTLP over gRPC (``opentelemetry.proto.collector.trace.v1.TraceService/Export``,
as Jaeger, Tempo and the OpenTelemetry Collector do on port 4317) and answers each export at
once, so the router pays what it pays in production with a collector beside it (each span
built, batched, encoded and sent by the exporter's thread) and nothing for a slow or
missing collector. ``GET /stats`` on the HTTP port says how many spans arrived (a check that
the router really exported them); ``GET /health`` is for the start-up wait.

    python perf/otlp_sink.py --grpc-port 4317 --port 9300
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as pb_grpc

STATS = web.AppKey("stats", dict)


class Sink(pb_grpc.TraceServiceServicer):
    def __init__(self, stats: dict[str, int]) -> None:
        self.stats = stats

    async def Export(self, request: pb.ExportTraceServiceRequest,
                     context: grpc.aio.ServicerContext) -> pb.ExportTraceServiceResponse:
        self.stats["exports"] += 1
        self.stats["spans"] += sum(len(ss.spans) for rs in request.resource_spans
                                   for ss in rs.scope_spans)
        self.stats["bytes"] += request.ByteSize()
        return pb.ExportTraceServiceResponse()


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS])


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def main(grpc_port: int, http_port: int) -> None:
    counts = {"exports": 0, "spans": 0, "bytes": 0}
    server = grpc.aio.server()
    pb_grpc.add_TraceServiceServicer_to_server(Sink(counts), server)
    if not server.add_insecure_port(f"127.0.0.1:{grpc_port}"):
        raise SystemExit(f"cannot listen on 127.0.0.1:{grpc_port}")
    await server.start()
    app = web.Application()
    app[STATS] = counts
    app.router.add_get("/stats", stats)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await server.stop(None)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grpc-port", type=int, required=True, help="OTLP/gRPC port")
    ap.add_argument("--port", type=int, required=True, help="HTTP port (/health, /stats)")
    args = ap.parse_args()
    asyncio.run(main(args.grpc_port, args.port))
