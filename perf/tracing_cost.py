"""What tracing costs the router's process per pass-through request, split into the request's
own path and the exporter's thread: steadier than latency on a shared machine.

One process holds the router (``create_app``) and a client sending it ``--requests``
sequential pass-through requests (model ``passthrough``, no classification) through a real
socket, against the demo backend and an embedded Triton in their own processes. The CPU
time of this process per request (``time.process_time``, every thread) is taken for three
routers in turn, ``--rounds`` times (alternating, medians reported):

- ``off``: the example config, tracing off;
- ``on, spans dropped``: tracing on, every request sampled, the batch processor handing the
  spans to an exporter that drops them (the spans recorded and made, nothing encoded);
- ``on, OTLP``: tracing on, the OTLP/gRPC exporter sending every span to
  ``perf/otlp_sink.py`` (a local collector that accepts and drops them): production's cost.

``on, spans dropped`` minus ``off`` is what the request's own path pays (on the event loop,
before its answer); ``on, OTLP`` minus ``on, spans dropped`` is the exporter thread's
encoding and sending, which runs in batches (512 spans or every 5 s) beside the event loop.
The client's share of the CPU is the same in all three and cancels out of the differences.

    python perf/tracing_cost.py --requests 2000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    Output,
    add_model_args,
    add_output_args,
    check_model_dir,
    markdown_table,
    median,
    say,
)
from _stack import router_config, start_backend, start_otlp_sink

VARIANTS = ("off", "on, spans dropped", "on, OTLP")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="perf/tracing_cost.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap, prompts=False)
    ap.add_argument("--requests", type=int, default=2000,
                    help="measured requests per router per round (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=200, help="(default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=5, help="(default: %(default)s)")
    add_output_args(ap)
    return ap.parse_args(argv)


def dropping_exporter():
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    return Drop()


async def cpu_per_request(args, cfg: dict, exporter) -> float:
    """This process's CPU microseconds per request through a router built from ``cfg``."""
    import aiohttp
    from aiohttp import web

    from router_svc.config.loading import parse_config
    from router_svc.doors.http.app import create_app
    from router_svc.doors.http.state import RUNTIME

    app = create_app(parse_config(cfg, "."), startup_timeout_s=60, span_exporter=exporter)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        body = json.dumps({"model": "passthrough", "max_tokens": 16, "messages": [
            {"role": "user", "content": "What is the capital of France? Answer briefly."}]})
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession() as s:
            async def send(n: int) -> None:
                for _ in range(n):
                    async with s.post(url, data=body, headers=headers) as r:
                        await r.read()
                        assert r.status == 200, r.status

            await send(args.warmup)
            tracing = app[RUNTIME].tracing
            await asyncio.to_thread(tracing.force_flush)
            t = time.process_time()
            await send(args.requests)
            await asyncio.to_thread(tracing.force_flush)  # the export of these requests too
            return (time.process_time() - t) / args.requests * 1e6
    finally:
        await runner.cleanup()


async def run(args, out: Output) -> list[dict]:
    from router_svc.triton.launcher import TritonServer

    work = Path(tempfile.mkdtemp(prefix="perf-tracing-cost-", dir=out.dir))
    with contextlib.ExitStack() as stack:
        server = TritonServer(args.model_dir, work_dir=work / "triton", startup_timeout_s=300)
        await server.astart()
        stack.callback(server.stop)
        backend, backend_url = start_backend(work)
        stack.callback(backend.stop)
        sink, endpoint, _ = start_otlp_sink(work)
        stack.callback(sink.stop)
        tok = args.model_dir / "tokenizer.json"
        configs = {
            "off": (router_config(server.grpc_url, tok, backend_url, 0), None),
            "on, spans dropped": (router_config(server.grpc_url, tok, backend_url, 0,
                                                tracing={"enabled": True}), "drop"),
            "on, OTLP": (router_config(server.grpc_url, tok, backend_url, 0,
                                       tracing={"enabled": True, "endpoint": endpoint}), None),
        }
        runs: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for r in range(args.rounds):
            order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))
            for name in order:
                cfg, exp = configs[name]
                runs[name].append(await cpu_per_request(
                    args, cfg, dropping_exporter() if exp == "drop" else None))
                say(f"round {r + 1}/{args.rounds} {name}: {runs[name][-1]:.0f} us CPU/request")
    off = runs["off"]
    rows = []
    for name in VARIANTS:
        rs = runs[name]
        rows.append({"variant": name, "cpu_us_per_req": median(rs),
                     "added_us": median(a - b for a, b in zip(rs, off, strict=True)),
                     "per_round": " ".join(f"{x:.0f}" for x in rs)})
    out.meta["work_dir"] = str(work)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    check_model_dir(args.model_dir)
    out = Output("tracing_cost", args)
    import uvloop

    rows = uvloop.run(run(args, out))
    out.write_csv(rows)
    print(f"## CPU per pass-through request, router and client in one process, "
          f"{args.requests} requests x {args.rounds} rounds (baseline: off)\n")
    print(markdown_table(rows, [("variant", "tracing"), ("cpu_us_per_req", "CPU us/request"),
                                ("added_us", "added us/request"), ("per_round", "per round")],
                         digits={"cpu_us_per_req": 0, "added_us": 0}))
    dropped = rows[1]["added_us"]
    otlp = rows[2]["added_us"]
    print(f"\nthe request's own path: {dropped:+.0f} us; the exporter's thread (encoding, "
          f"sending): {otlp - dropped:+.0f} us; in all {otlp:+.0f} us per request")
    out.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
