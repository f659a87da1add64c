"""The floor of one more Python hop: an aiohttp server that forwards each POST body to one
backend over a pooled client session and returns the answer, deciding nothing.

``perf/router_overhead.py`` part (a) measures it next to the router, so the router's added
latency splits into what any aiohttp proxy process costs on this machine (the floor: an
extra process to wake, parse and send) and what the router's own work adds on top.

    python perf/forwarder.py --port 9200 --backend http://127.0.0.1:9101/v1
"""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)


async def forward(request: web.Request) -> web.Response:
    body = await request.read()
    url = request.app["backend"] + request.match_info["tail"]
    async with request.app[SESSION].post(
            url, data=body, headers={"Content-Type": "application/json"}) as r:
        raw = await r.read()
        return web.Response(body=raw, status=r.status, content_type="application/json")


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def make_app(backend: str) -> web.Application:
    app = web.Application()
    app["backend"] = backend.rstrip("/")

    async def session_ctx(app: web.Application):
        app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session_ctx)
    app.router.add_get("/health", health)
    app.router.add_post("/v1{tail:/.*}", forward)
    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--backend", required=True, help="backend base URL, e.g. http://h:p/v1")
    args = ap.parse_args()
    try:
        import uvloop  # the router runs on uvloop too: same event loop, fair floor

        uvloop.install()
    except ImportError:
        pass
    web.run_app(make_app(args.backend), host=args.host, port=args.port, access_log=None,
                print=None)


if __name__ == "__main__":
    main()
