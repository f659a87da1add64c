"""What the router adds (issue 3's performance targets), measured side by side in one run.

Every service runs in its own process: the embedded Triton (unless ``--triton-url``), one demo
OpenAI-compatible backend that answers at once, the router (``router-svc serve`` with the
example config pointed at them plus an explicit model ``passthrough`` whose PII policy allows
everything, so the router runs no classification for it) and, for part c, LiteLLM's proxy.

(a) pass-through overhead: ``passthrough`` through the router versus the same body sent to the
    demo backend directly, open loop at ``--rate`` requests/s for ``--duration`` seconds per
    target per round, alternating targets every round; added p50/p99 latency = router minus
    direct, per round, median over rounds. Target: p50 added <= 1 ms. Also the CPU time
    the router and forwarder processes spend per request (/proc), steadier than latency here.
    With ``--tracing``, a second router with ``tracing.enabled`` (every request sampled)
    runs as target ``router+tracing`` in the same rounds, exporting over OTLP/gRPC to
    ``perf/otlp_sink.py``, a local collector that accepts and drops spans: what tracing adds
    per pass-through request = router+tracing minus router, per round, median over rounds.
    Target: p50 added <= 0.1 ms. A collector that accepts is production's steady state (the
    exporter thread encodes and sends every span); an endpoint that is not listening would
    measure the failure mode instead (connection retries, then spans dropped when the queue
    is full), and an in-process exporter that drops spans would skip the encoding and send.
(b) the ``auto`` path (classification + routing + proxy) versus Triton-only classification of
    the same prompts (the router's async TritonClient: one prompt per request at the same
    concurrency, and pre-batched ``--triton-batch`` rows per request), closed loop at
    ``--concurrency``, alternating. Target: auto >= 80% of the better Triton-only figure.
    The floor, in the same rounds: ``perf/forwarder.py``, a bare aiohttp server that
    forwards each body to the backend and decides nothing (what one more Python process hop
    costs here); the router's own work is what it adds above that floor.
(c) LiteLLM's proxy (``litellm[proxy]`` in its own venv, ``perf/.venv-litellm``, installed on
    first use) in front of the same backend, as a third target of (a). If it cannot be
    installed or started the script says why and goes on.
(d) perf_analyzer ``--service-kind openai --endpoint v1/chat/completions``: direct backend
    (baseline), router pass-through, router ``auto``, router ``auto`` on a cache-hit mix
    (``--repeat-prompts`` prompts repeated, through a second router whose semantic cache is
    enabled) and LiteLLM, over ``--pa-concurrency``; throughput and p50/p99 as ratios to
    direct.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
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
    int_list,
    latency_ms,
    load_prompts,
    make_batches,
    markdown_table,
    median,
    plot_bars,
    plot_curves,
    progress,
    ratio,
    say,
    token_rows,
)
from _loadgen import closed_loop, http_sender, open_loop
from _stack import (
    PASSTHROUGH,
    litellm_binary,
    router_config,
    start_backend,
    start_forwarder,
    start_litellm,
    start_otlp_sink,
    triton_url_or_start,
)
from _stack import start_router as start_router_proc

ADDED_P50_TARGET_MS = 1.0
TRACING_P50_TARGET_MS = 0.1
TRACED = "router+tracing"
AUTO_TARGET = 0.80
PARTS = ("a", "b", "c", "d")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="perf/router_overhead.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap, int8=True)
    ap.add_argument("--parts", default="a,b,c,d",
                    help="which parts to run, comma list of a,b,c,d (default: %(default)s)")
    ap.add_argument("--triton-url", default=None,
                    help="gRPC host:port of a running Triton serving the model in --model-dir "
                         "(default: start the embedded one)")
    ap.add_argument("--rounds", type=int, default=5, help="A/B rounds (default: %(default)s)")
    ap.add_argument("--duration", type=float, default=10.0,
                    help="seconds per target per round (default: %(default)s)")
    ap.add_argument("--warmup", type=float, default=1.0, help="(default: %(default)s)")
    a = ap.add_argument_group("(a)/(c) pass-through")
    a.add_argument("--rate", type=float, default=50.0,
                   help="open-loop request rate, requests/s (default: %(default)s)")
    a.add_argument("--max-tokens", type=int, default=32, help="(default: %(default)s)")
    a.add_argument("--tracing", action="store_true",
                   help="also run a router with tracing on (every request sampled, OTLP/gRPC "
                        "to perf/otlp_sink.py) as target 'router+tracing'")
    b = ap.add_argument_group("(b) auto path vs Triton-only")
    b.add_argument("--concurrency", type=int, default=64,
                   help="closed-loop concurrency (default: %(default)s)")
    b.add_argument("--triton-batch", type=int, default=32,
                   help="rows per request in the pre-batched Triton-only mode; 0 skips it "
                        "(default: %(default)s)")
    a.add_argument("--baseline-root", type=Path, default=None,
                   help="also run the router of another checkout (e.g. `git worktree add "
                        "/tmp/base <commit>`) as target 'router@base', same config, same rounds")
    c = ap.add_argument_group("(c) LiteLLM")
    c.add_argument("--litellm-venv", type=Path, default=None,
                   help="virtualenv with litellm[proxy] (default: perf/.venv-litellm)")
    c.add_argument("--no-install", action="store_true",
                   help="do not install LiteLLM (or perf_analyzer's libraries) when missing")
    d = ap.add_argument_group("(d) perf_analyzer, OpenAI service kind")
    d.add_argument("--pa-concurrency", default="1,8,32",
                   help="concurrency levels (default: %(default)s)")
    d.add_argument("--pa-duration", type=float, default=5.0,
                   help="perf_analyzer measurement window, seconds (default: %(default)s)")
    d.add_argument("--pa-max-trials", type=int, default=6, help="(default: %(default)s)")
    d.add_argument("--repeat-prompts", type=int, default=16,
                   help="distinct prompts (MMLU-Pro, no PII) in the cache-hit mix, sent to a "
                        "second router with the semantic cache enabled (default: %(default)s)")
    ap.add_argument("--cache", action="store_true",
                    help="also enable the semantic cache in the main router's config (default: "
                         "off, so every request is classified and proxied)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    args.part_set = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not args.part_set <= set(PARTS):
        ap.error(f"--parts: choose from {','.join(PARTS)}")
    return args


def chat_body(model: str, text: str, max_tokens: int) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens}


async def check_target(session, url: str, body: bytes,
                       headers: dict[str, str] | None = None) -> str | None:
    """None when one request through ``url`` answers 200, else why not."""
    try:
        async with session.post(url, data=body, headers={"Content-Type": "application/json",
                                                         **(headers or {})}) as r:
            text = await r.text()
            return None if r.status == 200 else f"HTTP {r.status}: {text[:200]}"
    except Exception as e:
        return f"{type(e).__name__}: {e}"


# ---------------------------------------------------------------- (a) and (c)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def part_a(args, session, prog, targets: dict[str, tuple[str, dict]],
                 texts: list[str], pids: dict[str, int] | None = None) -> list[dict]:
    """``targets``: name -> (URL, extra headers). ``pids``: target -> the process in the
    middle (router, forwarder), whose CPU time per request is reported: a steadier figure
    than latency on a shared machine."""
    pids = pids or {}
    bodies = [json.dumps(chat_body(PASSTHROUGH, t, args.max_tokens)).encode() for t in texts]
    for name, (url, headers) in list(targets.items()):
        why = await check_target(session, url, bodies[0], headers)
        if why:
            say(f"(a) {name} at {url} does not answer ({why}); left out")
            del targets[name]
    runs: dict[str, list[dict]] = {n: [] for n in targets}
    lat: dict[str, list[float]] = {n: [] for n in targets}
    plan = alternating(list(targets), args.rounds)
    task = prog.add_task("(a) pass-through", total=len(plan) * (args.duration + args.warmup))
    for r, name in plan:
        prog.update(task, description=f"(a) round {r + 1}/{args.rounds}: {name} "
                                      f"@ {args.rate:g}/s")
        statuses: Counter = Counter()
        url, headers = targets[name]
        pid = pids.get(name)
        cpu0 = process_cpu_s(pid) if pid else 0.0
        run = await open_loop(http_sender(session, url, headers, statuses=statuses), bodies,
                              args.rate, args.duration, args.warmup,
                              tick=lambda dt: prog.advance(task, dt))
        s = run.summary()
        if pid:  # the warm-up's requests are in the CPU time too
            sent = s["ok"] + s["failed"] + round(args.rate * args.warmup)
            s["cpu_us_per_req"] = (process_cpu_s(pid) - cpu0) / max(1, sent) * 1e6
        s["statuses"] = dict(statuses)
        runs[name].append(s)
        lat[name].extend(run.latencies_s)
    out = []
    direct = runs.get("direct", [])
    for name in targets:
        rs = runs[name]
        pooled = latency_ms(lat[name])
        row = {
            "part": "a", "target": name, "rate": args.rate,
            "throughput": median(r["throughput"] for r in rs),
            "ok": sum(r["ok"] for r in rs), "failed": sum(r["failed"] for r in rs),
            "p50_ms": median(r["p50_ms"] for r in rs), "p95_ms": median(r["p95_ms"] for r in rs),
            "p99_ms": median(r["p99_ms"] for r in rs),
            "pooled_p50_ms": pooled["p50_ms"], "pooled_p99_ms": pooled["p99_ms"],
            "gen_lag_p99_ms": median(r.get("gen_lag_p99_ms", float("nan")) for r in rs),
            "cpu_us_per_req": median(r.get("cpu_us_per_req", float("nan")) for r in rs),
        }
        if direct:
            row["added_p50_ms"] = median(r["p50_ms"] - d["p50_ms"]
                                         for r, d in zip(rs, direct, strict=True))
            row["added_p99_ms"] = median(r["p99_ms"] - d["p99_ms"]
                                         for r, d in zip(rs, direct, strict=True))
            row["p50_x_direct"] = median(ratio(r["p50_ms"], d["p50_ms"])
                                         for r, d in zip(rs, direct, strict=True))
            row["p99_x_direct"] = median(ratio(r["p99_ms"], d["p99_ms"])
                                         for r, d in zip(rs, direct, strict=True))
        floor = runs.get("forwarder", [])
        if name == "router" and floor:
            row["above_floor_p50_ms"] = median(r["p50_ms"] - f["p50_ms"]
                                               for r, f in zip(rs, floor, strict=True))
            row["above_floor_p99_ms"] = median(r["p99_ms"] - f["p99_ms"]
                                               for r, f in zip(rs, floor, strict=True))
        if name == "router" and direct:
            row["target_check"] = (f"p50 added <= {ADDED_P50_TARGET_MS:g} ms: "
                                   + ("met" if row["added_p50_ms"] <= ADDED_P50_TARGET_MS
                                      else "not met"))
        untraced = runs.get("router", [])
        if name == TRACED and untraced:  # what tracing adds: the same router without it
            row["tracing_p50_ms"] = median(r["p50_ms"] - u["p50_ms"]
                                           for r, u in zip(rs, untraced, strict=True))
            row["tracing_p99_ms"] = median(r["p99_ms"] - u["p99_ms"]
                                           for r, u in zip(rs, untraced, strict=True))
            row["tracing_cpu_us_per_req"] = median(
                r.get("cpu_us_per_req", float("nan")) - u.get("cpu_us_per_req", float("nan"))
                for r, u in zip(rs, untraced, strict=True))
            row["target_check"] = (f"tracing adds p50 <= {TRACING_P50_TARGET_MS:g} ms: "
                                   + ("met" if row["tracing_p50_ms"] <= TRACING_P50_TARGET_MS
                                      else "not met"))
        row["per_round_p50_ms"] = " ".join(f"{r['p50_ms']:.2f}" for r in rs)
        out.append(row)
    return out


# ---------------------------------------------------------------- (b)


async def part_b(args, session, prog, client, router_url: str, texts: list[str],
                 rows, base_url: str | None = None) -> list[dict]:
    """``base_url``: the router of ``--baseline-root``, a fourth side ('router@base auto')."""
    auto_bodies = [json.dumps(chat_body("auto", t, args.max_tokens)).encode() for t in texts]
    single = [(rows.ids[i][None, :], rows.mask[i][None, :]) for i in range(len(rows))]
    batched = make_batches(rows, args.triton_batch) if args.triton_batch > 0 else []
    statuses: Counter = Counter()

    async def triton_send(item) -> bool:
        await client.infer(item[0], item[1])
        return True

    sides = {
        "triton per-prompt": lambda tick: closed_loop(
            triton_send, single, args.concurrency, args.duration, args.warmup, tick),
        "router auto": lambda tick: closed_loop(
            http_sender(session, f"{router_url}/v1/chat/completions", statuses=statuses),
            auto_bodies, args.concurrency, args.duration, args.warmup, tick),
    }
    if base_url:
        sides["router@base auto"] = lambda tick: closed_loop(
            http_sender(session, f"{base_url}/v1/chat/completions", statuses=Counter()),
            auto_bodies, args.concurrency, args.duration, args.warmup, tick)
    if batched:
        sides[f"triton batch {args.triton_batch}"] = lambda tick: closed_loop(
            triton_send, batched, 2, args.duration, args.warmup, tick,
            units=lambda item: len(item[0]))
    why = await check_target(session, f"{router_url}/v1/chat/completions", auto_bodies[0])
    if why:
        say(f"(b) the router's auto path does not answer: {why}")
        return []
    plan = alternating(list(sides), args.rounds)
    task = prog.add_task("(b) auto vs Triton", total=len(plan) * (args.duration + args.warmup))
    runs: dict[str, list[dict]] = {n: [] for n in sides}
    for r, name in plan:
        prog.update(task, description=f"(b) round {r + 1}/{args.rounds}: {name} "
                                      f"@ concurrency {args.concurrency}")
        run = await sides[name](lambda dt: prog.advance(task, dt))
        runs[name].append(run.summary())
    triton_names = [n for n in sides if n.startswith("triton")]
    best_per_round = [max(runs[n][i]["throughput"] for n in triton_names)
                      for i in range(args.rounds)]
    out = []
    for name in sides:
        rs = runs[name]
        row = {"part": "b", "target": name, "concurrency": args.concurrency,
               "throughput": median(r["throughput"] for r in rs),
               "ok": sum(r["ok"] for r in rs), "failed": sum(r["failed"] for r in rs),
               "p50_ms": median(r["p50_ms"] for r in rs),
               "p99_ms": median(r["p99_ms"] for r in rs),
               "x_triton_best": median(ratio(r["throughput"], b)
                                       for r, b in zip(rs, best_per_round, strict=True)),
               "x_triton_per_prompt": median(
                   ratio(r["throughput"], t["throughput"])
                   for r, t in zip(rs, runs["triton per-prompt"], strict=True)),
               "per_round": " ".join(f"{r['throughput']:.1f}" for r in rs)}
        if name == "router auto":
            row["statuses"] = dict(statuses)
            row["target_check"] = (f"auto >= {AUTO_TARGET:.0%} of Triton-only: "
                                   + ("met" if row["x_triton_best"] >= AUTO_TARGET
                                      else "not met"))
        out.append(row)
    return out


# ---------------------------------------------------------------- (d)


def pa_openai(args, prog, work: Path,
              scenarios: dict[str, tuple[str, list[dict], dict]]) -> list[dict]:
    """``scenarios``: name -> (host:port, request bodies, extra headers)."""
    from _pa import PerfAnalyzerFailed, PerfAnalyzerMissing, read_csv, setup

    try:
        pa = setup(install=not args.no_install)
    except PerfAnalyzerMissing as e:
        say(f"(d) skipped: {e}")
        return []
    levels = int_list(args.pa_concurrency)
    files = {}
    for name, (_, bodies, _) in scenarios.items():
        f = work / f"openai-{name.replace(' ', '_')}.json"
        f.write_text(json.dumps({"data": [{"payload": [b]} for b in bodies]}))
        files[name] = f
    task = prog.add_task("(d) perf_analyzer openai", total=len(levels) * len(scenarios))
    found: dict[tuple[str, int], dict] = {}
    for c in levels:  # scenarios of one level back to back, so they share machine conditions
        for name, (host, bodies, headers) in scenarios.items():
            prog.update(task, description=f"(d) perf_analyzer: {name} @ concurrency {c}")
            tag = f"{name.replace(' ', '_')}-c{c}"
            csv_path = work / f"pa-{tag}.csv"
            cmd = ["-m", bodies[0]["model"], "--service-kind", "openai", "--async",
                   "--endpoint", "v1/chat/completions", "-u", host, "-i", "http",
                   "--input-data", str(files[name]), "--concurrency-range", str(c),
                   "-p", str(int(args.pa_duration * 1000)), "-f", str(csv_path)]
            for k, v in headers.items():
                cmd += ["-H", f"{k}:{v}"]
            timeout = args.pa_duration * (args.pa_max_trials + 2) + 60
            stable = "yes"
            try:
                try:
                    pa.run([*cmd, "-r", str(args.pa_max_trials), "-s", "15"],
                           work / f"pa-{tag}.log", timeout)
                except PerfAnalyzerFailed as e:
                    if "stable" not in str(e).lower():
                        raise
                    stable = "no"
                    pa.run([*cmd, "-r", "3", "-s", "1000"], work / f"pa-{tag}.log", timeout)
                r = (read_csv(csv_path) or [{}])[0]
            except PerfAnalyzerFailed as e:
                say(f"(d) {name} @ {c} failed: {e}")
                r, stable = {}, "failed"
            r["stable"] = stable
            found[(name, c)] = r
            prog.advance(task)
    out = []
    for c in levels:
        base = found.get(("direct", c), {})
        for name in scenarios:
            r = found[(name, c)]
            out.append({
                "part": "d", "target": name, "concurrency": c,
                "throughput": r.get("throughput", float("nan")),
                "p50_ms": r.get("p50_ms", float("nan")), "p95_ms": r.get("p95_ms", float("nan")),
                "p99_ms": r.get("p99_ms", float("nan")),
                "x_direct": ratio(r.get("throughput", float("nan")),
                                  base.get("throughput", float("nan"))),
                "p50_x_direct": ratio(r.get("p50_ms", float("nan")),
                                      base.get("p50_ms", float("nan"))),
                "p99_x_direct": ratio(r.get("p99_ms", float("nan")),
                                      base.get("p99_ms", float("nan"))),
                "added_p50_ms": r.get("p50_ms", float("nan")) - base.get("p50_ms", float("nan")),
                "stable": r.get("stable", "?"),
            })
    return out


# ---------------------------------------------------------------- main


async def run(args, out: Output) -> dict[str, list[dict]]:
    import aiohttp

    from router_svc.triton.client import TritonClient
    from router_svc.triton.launcher import free_port

    work = Path(tempfile.mkdtemp(prefix="perf-router-overhead-", dir=out.dir))
    prompts = load_prompts(args.data_dir, args.prompts, args.pii_fraction, args.seed)
    texts = [p.text for p in prompts]
    results: dict[str, list[dict]] = {}
    with contextlib.ExitStack() as stack:
        url = await triton_url_or_start(stack, args.triton_url, args.model_dir, work,
                                       args.int8)
        backend, backend_url = start_backend(work)
        stack.callback(backend.stop)
        cfg = router_config(url, args.model_dir / "tokenizer.json", backend_url, free_port(),
                            cache=args.cache)
        router, router_url = start_router_proc(work, cfg)
        stack.callback(router.stop)
        say(f"demo backend {backend_url}, router {router_url}, Triton {url}")
        litellm_url, litellm_auth = None, {}
        if "c" in args.part_set and ({"a", "d"} & args.part_set):
            exe, why = litellm_binary(args.litellm_venv or _default_venv(),
                                      install=not args.no_install)
            if exe is None:
                say(f"(c) LiteLLM not available, carrying on without it: {why}")
            else:
                try:
                    lite, litellm_url, key = start_litellm(exe, work, backend_url)
                    litellm_auth = {"Authorization": f"Bearer {key}"}
                    stack.callback(lite.stop)
                    say(f"(c) {why}, proxy on {litellm_url}")
                except RuntimeError as e:
                    say(f"(c) LiteLLM did not start, carrying on without it: {e}")
        elif "c" in args.part_set:
            say("(c) LiteLLM is measured inside parts a and d; neither was asked for")
        cache_url = None
        if "d" in args.part_set:
            try:
                cache_cfg = router_config(url, args.model_dir / "tokenizer.json", backend_url,
                                          free_port(), cache=True)
                cache_router, cache_url = start_router_proc(work, cache_cfg, "router-cache")
                stack.callback(cache_router.stop)
                say(f"(d) router with the semantic cache on {cache_url}")
            except RuntimeError as e:
                say(f"(d) a router with cache.enabled did not start; the cache-hit mix goes to "
                    f"the main router: {e}")

        conn = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
            with progress() as prog:
                base_url = None
                if args.baseline_root:
                    bcfg = router_config(url, args.model_dir / "tokenizer.json",
                                         backend_url, free_port(), root=args.baseline_root)
                    base, base_url = start_router_proc(work, bcfg, "router-base",
                                                       root=args.baseline_root)
                    stack.callback(base.stop)
                if "a" in args.part_set:
                    fwd, fwd_url = start_forwarder(work, backend_url)
                    stack.callback(fwd.stop)
                    targets = {"direct": (f"{backend_url}/chat/completions", {}),
                               "router": (f"{router_url}/v1/chat/completions", {}),
                               "forwarder": (f"{fwd_url}/chat/completions", {})}
                    if litellm_url:
                        targets["litellm"] = (f"{litellm_url}/v1/chat/completions",
                                              litellm_auth)
                    pids = {"router": router.proc.pid, "forwarder": fwd.proc.pid}
                    sink_stats = None
                    if args.tracing:
                        sink, endpoint, sink_stats = start_otlp_sink(work)
                        stack.callback(sink.stop)
                        tcfg = router_config(url, args.model_dir / "tokenizer.json",
                                             backend_url, free_port(), cache=args.cache,
                                             tracing={"enabled": True, "endpoint": endpoint,
                                                      "protocol": "grpc",
                                                      "sample_ratio": 1.0})
                        traced, traced_url = start_router_proc(work, tcfg, "router-tracing")
                        stack.callback(traced.stop)
                        targets[TRACED] = (f"{traced_url}/v1/chat/completions", {})
                        pids[TRACED] = traced.proc.pid
                        say(f"(a) router with tracing on {traced_url}, spans to {endpoint} "
                            "(perf/otlp_sink.py)")
                    if base_url:
                        targets["router@base"] = (f"{base_url}/v1/chat/completions", {})
                        pids["router@base"] = base.proc.pid
                    results["a"] = await part_a(args, session, prog, targets, texts, pids)
                    if sink_stats:  # the spans did go out: count what the collector got
                        await asyncio.sleep(6)  # the batch processor's 5 s schedule
                        async with session.get(sink_stats) as r:
                            got = await r.json()
                        out.meta["otlp_sink"] = got
                        say(f"(a) the OTLP sink received {got['spans']} spans in "
                            f"{got['exports']} exports ({got['bytes']} bytes)")
                if "b" in args.part_set:
                    rows = token_rows(args.model_dir / "tokenizer.json", texts, args.max_len,
                                      args.seq_len)
                    client = TritonClient(url, timeout_s=120.0)
                    try:
                        await client.load_model_info()
                        results["b"] = await part_b(args, session, prog, client, router_url,
                                                    texts, rows, base_url)
                    finally:
                        await client.close()
                if "d" in args.part_set:
                    host = router_url.removeprefix("http://")
                    cache_host = (cache_url or router_url).removeprefix("http://")
                    repeat = [p.text for p in prompts if p.source == "mmlu"][
                        : args.repeat_prompts] or texts[: args.repeat_prompts]
                    mk = args.max_tokens
                    passthrough = [chat_body(PASSTHROUGH, t, mk) for t in texts]
                    scenarios = {
                        "direct": (backend_url.removeprefix("http://").removesuffix("/v1"),
                                   passthrough, {}),
                        "router passthrough": (host, passthrough, {}),
                        "router auto": (host, [chat_body("auto", t, mk) for t in texts], {}),
                        "router auto cache-hit mix": (
                            cache_host, [chat_body("auto", repeat[i % len(repeat)], mk)
                                         for i in range(len(texts))], {}),
                    }
                    if litellm_url:
                        scenarios["litellm"] = (litellm_url.removeprefix("http://"), passthrough,
                                                litellm_auth)
                    results["d"] = await asyncio.to_thread(pa_openai, args, prog, work,
                                                           scenarios)
                    if cache_url:  # did the cache-hit mix hit? ask once more and look
                        body = json.dumps(chat_body("auto", repeat[0], mk)).encode()
                        async with session.post(f"{cache_url}/v1/chat/completions", data=body,
                                                headers={"Content-Type": "application/json"}
                                                ) as resp:
                            await resp.read()
                            state = resp.headers.get("x-router-cache", "(no header)")
                        say(f"(d) cache-hit mix: a repeated prompt now answers with "
                            f"x-router-cache: {state}")
                        out.meta["cache_check"] = state
    out.meta["work_dir"] = str(work)
    return results


def _default_venv() -> Path:
    from _stack import LITELLM_VENV

    return LITELLM_VENV


def main(argv=None) -> int:
    args = parse_args(argv)
    check_model_dir(args.model_dir)
    out = Output("router_overhead", args)
    import uvloop

    results = uvloop.run(run(args, out))
    all_rows = [r for part in ("a", "b", "d") for r in results.get(part, [])]
    if not all_rows:
        say("nothing was measured")
        return 1
    out.write_csv(all_rows)
    if results.get("a"):
        print(f"## (a) pass-through overhead, open loop at {args.rate:g} req/s, "
              f"{args.rounds} rounds x {args.duration:g}s (baseline: direct)\n")
        print(markdown_table(results["a"], [
            ("target", "target"), ("throughput", "req/s"), ("ok", "ok"), ("failed", "failed"),
            ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"), ("p99_ms", "p99 ms"),
            ("added_p50_ms", "added p50 ms"), ("added_p99_ms", "added p99 ms"),
            ("p50_x_direct", "p50 x direct"), ("p99_x_direct", "p99 x direct"),
            ("cpu_us_per_req", "proxy CPU us/req"),
            ("gen_lag_p99_ms", "gen lag p99 ms")], digits={"added_p50_ms": 2,
                                                           "added_p99_ms": 2, "p50_ms": 2,
                                                           "cpu_us_per_req": 0}))
        for r in results["a"]:
            if r.get("target_check"):
                print(f"\nrouter: {r['target_check']}")
            if "tracing_p50_ms" in r:
                print(f"tracing on, every request sampled, minus tracing off: p50 "
                      f"{r['tracing_p50_ms'] * 1000:+.0f} us, p99 "
                      f"{r['tracing_p99_ms'] * 1000:+.0f} us, router CPU "
                      f"{r['tracing_cpu_us_per_req']:+.0f} us/request")
            if "above_floor_p50_ms" in r:
                print(f"router above the bare aiohttp forwarder (the floor of one more hop): "
                      f"p50 {r['above_floor_p50_ms']:+.2f} ms, "
                      f"p99 {r['above_floor_p99_ms']:+.2f} ms")
        print()
    if results.get("b"):
        print(f"## (b) auto path vs Triton-only classification, closed loop at concurrency "
              f"{args.concurrency}, {args.rounds} rounds x {args.duration:g}s (prompts/s)\n")
        print(markdown_table(results["b"], [
            ("target", "target"), ("throughput", "prompts/s"),
            ("x_triton_best", "x Triton best"), ("x_triton_per_prompt", "x Triton per-prompt"),
            ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("ok", "ok"), ("failed", "failed"),
            ("per_round", "per round")]))
        for r in results["b"]:
            if r.get("target_check"):
                print(f"\nrouter: {r['target_check']} (answers by status: {r['statuses']})")
        print()
    if results.get("d"):
        print("## (d) perf_analyzer --service-kind openai --endpoint v1/chat/completions "
              "(baseline: direct)\n")
        print(markdown_table(results["d"], [
            ("target", "target"), ("concurrency", "concurrency"), ("throughput", "req/s"),
            ("x_direct", "x direct"), ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"),
            ("p99_ms", "p99 ms"), ("added_p50_ms", "added p50 ms"),
            ("p50_x_direct", "p50 x direct"), ("p99_x_direct", "p99 x direct"),
            ("stable", "stable")]))
    if out.plot:
        if results.get("a"):
            names = [r["target"] for r in results["a"]]
            plot_bars(out.path("-a.png"), f"(a) pass-through latency at {args.rate:g} req/s",
                      ["p50", "p99"], {n: [r["p50_ms"], r["p99_ms"]]
                                       for n, r in zip(names, results["a"], strict=True)},
                      "latency (ms)", baseline="direct" if "direct" in names else names[0])
        if results.get("b"):
            plot_bars(out.path("-b.png"), f"(b) throughput at concurrency {args.concurrency}",
                      ["prompts/s"], {r["target"]: [r["throughput"]] for r in results["b"]},
                      "prompts/s", baseline="triton per-prompt", target=AUTO_TARGET)
        if results.get("d"):
            series: dict[str, list[dict]] = {}
            for r in results["d"]:
                if r["throughput"] == r["throughput"]:
                    series.setdefault(r["target"], []).append(r)
            if "direct" in series:
                plot_curves(out.path("-d.png"), "(d) perf_analyzer, OpenAI chat completions",
                            series, baseline="direct", load_key="concurrency",
                            load_label="concurrency", tput_label="requests/s")
    out.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
