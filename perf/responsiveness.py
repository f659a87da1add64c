"""Does the router stay responsive while it processes one maximal request? (issue 17)

Tokenisation and the other CPU work of a large request run off the event loop, so ``/health``,
``/metrics`` and small requests should answer as before while one maximal request is in flight.
One stack for the whole run, each service in its own process: the embedded CPU Triton, the demo
backend (answers at once) and ``router-svc serve`` with the example config (cache off).

Phases, alternating per round (A B C, C B A, ...):

- A ``idle``: small chat requests (``model: auto``, a 5-15 word MMLU-Pro prompt) open loop at
  ``--rate`` per second (a few in flight at once), the same prompts to the explicit model
  ``passthrough`` (no classification, no Triton call: the proxy path alone) at
  ``--passthrough-rate``, ``GET /health`` every ``--health-interval`` and ``GET /metrics`` every
  ``--metrics-interval``;
- B ``maximal``: the same while one client sends a maximal request back to back: one message of
  MMLU-Pro questions (one paragraph, no PII expected) holding just under
  ``limits.max_scan_tokens`` (32768) tokens as the router counts them (~100k characters);
- C ``gzip``: as B, but the maximal body is padded with JSON whitespace to just under
  ``proxy.max_body_bytes`` and sent ``Content-Encoding: gzip`` (the router inflates 4 MiB).

Every latency counts from when the request was due (open loop: a stalled event loop shows as
latency, not as fewer requests). Reported side by side: p50/p95/p99 of small ``auto`` and
``passthrough`` requests, ``/health`` and ``/metrics`` per phase, the ratios to A, the maximal
request's own latency, the share of the phase a maximal request was in flight, and every
non-2xx answer. The maximal request's Triton work (~340 rows of 128 tokens) shares the model
with the small ``auto`` requests; ``/health``, ``/metrics`` and ``passthrough`` need none, so
they show the event loop alone.

    python perf/responsiveness.py                  # 3-5 min: 20 s per phase, one round, and
                                                   # each heavy phase waits for its last maximal
    python perf/responsiveness.py --phases A,B --duration 5     # quick check
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import itertools
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from _common import (
    Output,
    add_output_args,
    alternating,
    check_model_dir,
    latency_ms,
    markdown_table,
    mmlu_questions,
    progress,
    ratio,
    say,
)
from _stack import PASSTHROUGH, router_config, start_backend, start_router, triton_url_or_start

PHASE_NAMES = {"A": "idle", "B": "maximal", "C": "gzip"}
KINDS = ("small", "passthrough", "health", "metrics")  # measured in every phase


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from _common import DEFAULT_DATA_DIR, DEFAULT_MODEL_DIR

    ap = argparse.ArgumentParser(prog="perf/responsiveness.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR,
                    help="folder with model.onnx and tokenizer.json (default: %(default)s)")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                    help="shared data folder with mmlu_pro/ (default: %(default)s)")
    ap.add_argument("--triton-url", default=None,
                    help="gRPC host:port of a running Triton (default: start the embedded one)")
    ap.add_argument("--phases", default="A,B,C",
                    help="A (idle), B (maximal request), C (gzip body) (default: %(default)s)")
    ap.add_argument("--duration", type=float, default=20.0,
                    help="seconds measured per phase per round (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=1, help="(default: %(default)s)")
    ap.add_argument("--rate", type=float, default=8.0,
                    help="small requests per second, open loop (default: %(default)s)")
    ap.add_argument("--passthrough-rate", type=float, default=4.0,
                    help="small requests per second to the explicit model `passthrough` (no "
                         "classification, no Triton call: the proxy path alone); 0: none "
                         "(default: %(default)s)")
    ap.add_argument("--health-interval", type=float, default=0.05,
                    help="seconds between /health polls (default: %(default)s)")
    ap.add_argument("--metrics-interval", type=float, default=0.25,
                    help="seconds between /metrics polls; 0: none (default: %(default)s)")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds between starting the maximal client and measuring "
                         "(default: %(default)s)")
    ap.add_argument("--token-margin", type=int, default=256,
                    help="the maximal prompt holds max_scan_tokens minus this (default: "
                         "%(default)s)")
    ap.add_argument("--max-queue-wait-ms", type=float, default=0,
                    help="batching.max_queue_wait_ms of the router; 0 keeps the config's (a job "
                         "none of whose rows reached Triton in that time is answered 503) "
                         "(default: %(default)s)")
    ap.add_argument("--max-batch-tokens", type=int, default=0,
                    help="batching.max_batch_tokens of the router (padded tokens per Triton "
                         "call); 0 keeps the config's (default: %(default)s)")
    ap.add_argument("--max-job-tokens", type=int, default=0,
                    help="batching.max_job_tokens of the router (one request's padded tokens "
                         "per Triton call); 0 keeps the config's (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    args.phase_list = [p.strip().upper() for p in args.phases.split(",") if p.strip()]
    if not args.phase_list or not set(args.phase_list) <= set(PHASE_NAMES):
        ap.error("--phases: a comma list of A, B, C")
    return args


# ---------------------------------------------------------------- request bodies


def small_prompts(questions: list[str], n: int, rng: random.Random) -> list[str]:
    """The first 5-15 words of random questions: short chat prompts, no PII."""
    out = []
    for q in rng.sample(questions, n):
        words = q.split()
        out.append(" ".join(words[: rng.randint(5, 15)]))
    return out


@dataclass(frozen=True)
class Limits:
    """What the generated router config (the example config) sets for the limits tested."""

    max_scan_tokens: int
    max_body_bytes: int
    window: int
    stride: int

    @staticmethod
    def of(cfg: dict) -> Limits:
        pm = cfg["classifier"]["pii_model"]
        return Limits(int(cfg["limits"]["max_scan_tokens"]),
                      int(cfg["proxy"]["max_body_bytes"]), int(pm["window_tokens"]),
                      int(pm["window_stride"]))


def scan_tokens(tokenizer_json: Path, lim: Limits) -> Callable[[str], int]:
    """Counts a prompt's tokens as the router's limit does (its own classifier's plan with the
    config's PII windows), so the maximal prompt lands just under the limit."""
    from router_svc.classify.classifier import Classifier
    from router_svc.classify.tokenization import TextTokenizer

    clf = Classifier(TextTokenizer(tokenizer_json), None, [], [],  # type: ignore[arg-type]
                     window=lim.window, stride=lim.stride)
    return lambda text: clf.plan(text, [text]).tokens


def maximal_prompt(questions: list[str], tokenizer_json: Path, lim: Limits, target: int,
                   rng: random.Random) -> tuple[str, int]:
    """Varied questions, one per line (one paragraph), cut after the token that brings the
    router's count to ``target``; returns the text and that count."""
    from router_svc.classify.tokenization import TextTokenizer

    pool = questions[:]
    rng.shuffle(pool)
    text = "\n".join(pool)[: lim.max_scan_tokens * 8]  # the router's chars-per-token bound
    offsets = TextTokenizer(tokenizer_json).windows(text, len(text) + 2, len(text))[0].offsets
    count = scan_tokens(tokenizer_json, lim)
    end = offsets[1:-1][min(target, len(offsets) - 2) - 1][1]
    while (n := count(text[:end])) > target:  # a word split differently at the cut
        end -= 64
    return text[:end], n


def chat_body(text: str, max_tokens: int = 16, model: str = "auto") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens}


def gzip_body(body: dict, inflated_bytes: int) -> bytes:
    """``body`` padded with JSON whitespace to exactly ``inflated_bytes``, gzip-compressed."""
    raw = json.dumps(body).encode()
    head, tail = raw[:1], raw[1:]  # the spaces go right after the opening brace
    pad = inflated_bytes - len(raw)
    if pad < 0:
        raise ValueError(f"the body is already {len(raw)} bytes, over {inflated_bytes}")
    return gzip.compress(head + b" " * pad + tail, compresslevel=6)


# ---------------------------------------------------------------- load


@dataclass
class Sample:
    round: int
    phase: str
    kind: str  # small, health, metrics, maximal
    t: float  # when it was due (perf_counter)
    latency_s: float
    status: str  # HTTP status, or the exception's name


async def timed(session, method: str, url: str, **kw) -> str:
    """One request, its body read; the status as text (an exception's name on failure)."""
    try:
        async with session.request(method, url, **kw) as r:
            await r.read()
            return str(r.status)
    except Exception as e:  # counted as a non-2xx answer, the run goes on
        return type(e).__name__


async def paced(interval_s: float, until: float,
                one: Callable[[float], Awaitable[None]]) -> None:
    """Open loop: ``one(due)`` every ``interval_s`` until ``until``, whatever the answers do."""
    t0 = time.perf_counter()
    tasks = []
    for i in itertools.count():
        due = t0 + i * interval_s
        if due >= until:
            break
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)


async def maximal_client(session, url: str, body: bytes, headers: dict[str, str], rnd: int,
                         phase: str, stop: asyncio.Event, out: list[Sample],
                         busy: list[tuple[float, float]], pii: Counter) -> None:
    """Back to back, one at a time, until ``stop``; ``busy`` gets each one's (start, end)."""
    while not stop.is_set():
        t = time.perf_counter()
        status = "?"
        try:
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
                status = str(r.status)
                pii[r.headers.get("x-router-pii", "(none)")] += 1
        except Exception as e:
            status = type(e).__name__
        end = time.perf_counter()
        out.append(Sample(rnd, phase, "maximal", t, end - t, status))
        busy.append((t, end))


def overlap(busy: list[tuple[float, float]], a: float, b: float) -> float:
    """Seconds of [a, b] covered by the intervals in ``busy`` (they do not overlap)."""
    return sum(max(0.0, min(e, b) - max(s, a)) for s, e in busy)


async def run_phase(session, base: str, args, rnd: int, phase: str,
                    smalls: dict[str, list[bytes]],
                    heavy: tuple[bytes, dict[str, str]] | None, tick: Callable[[float], None],
                    pii: Counter) -> tuple[list[Sample], float]:
    """One phase: the paced small/health/metrics streams, with the maximal client beside them
    when ``heavy`` is given; returns the samples and the share of the measured time a maximal
    request was in flight."""
    samples: list[Sample] = []
    busy: list[tuple[float, float]] = []
    stop = asyncio.Event()
    client = None
    if heavy is not None:
        client = asyncio.create_task(maximal_client(
            session, f"{base}/v1/chat/completions", heavy[0], heavy[1], rnd, phase, stop,
            samples, busy, pii))
        await asyncio.sleep(args.settle)  # the first one is being read and tokenised
    t0 = time.perf_counter()
    until = t0 + args.duration
    chat_headers = {"Content-Type": "application/json"}
    counter = itertools.count()

    def sampler(kind: str, method: str, url: str, make_kw: Callable[[], dict]):
        async def one(due: float) -> None:
            status = await timed(session, method, url, **make_kw())
            samples.append(Sample(rnd, phase, kind, due, time.perf_counter() - due, status))
        return one

    def chat(kind: str):
        bodies = smalls[kind]
        return sampler(kind, "POST", f"{base}/v1/chat/completions",
                       lambda: {"data": bodies[next(counter) % len(bodies)],
                                "headers": chat_headers})

    streams = [paced(1.0 / args.rate, until, chat("small")),
               paced(args.health_interval, until, sampler("health", "GET", f"{base}/health",
                                                          dict))]
    if args.passthrough_rate > 0:
        streams.append(paced(1.0 / args.passthrough_rate, until, chat("passthrough")))
    if args.metrics_interval > 0:
        streams.append(paced(args.metrics_interval, until,
                             sampler("metrics", "GET", f"{base}/metrics", dict)))
    ticker = asyncio.create_task(_tick(tick))
    try:
        await asyncio.gather(*streams)
    finally:
        ticker.cancel()
    t1 = time.perf_counter()
    if client is not None:
        stop.set()
        await client  # the one in flight finishes: its latency counts too
    share = overlap(busy, t0, t1) / (t1 - t0) if heavy is not None else 0.0
    return samples, share


async def _tick(tick: Callable[[float], None]) -> None:
    prev = time.perf_counter()
    while True:
        await asyncio.sleep(0.25)
        now = time.perf_counter()
        tick(now - prev)
        prev = now


# ---------------------------------------------------------------- summary


def summarize(samples: list[Sample], phases: list[str],
              in_flight: dict[str, list[float]]) -> list[dict]:
    """One row per phase and kind, pooled over rounds; ratios to phase A of the same kind."""
    rows = []
    for phase in phases:
        for kind in (*KINDS, "maximal"):
            s = [x for x in samples if x.phase == phase and x.kind == kind]
            if not s:
                continue
            ok = [x.latency_s for x in s if x.status.startswith("2")]
            bad = Counter(x.status for x in s if not x.status.startswith("2"))
            lat = latency_ms(ok)
            rows.append({"phase": f"{phase} {PHASE_NAMES[phase]}", "kind": kind, "n": len(s),
                         "non_2xx": sum(bad.values()),
                         "non_2xx_by_status": " ".join(f"{k}:{v}" for k, v in bad.items()),
                         "p50_ms": lat["p50_ms"], "p95_ms": lat["p95_ms"],
                         "p99_ms": lat["p99_ms"],
                         "max_ms": max(ok) * 1000 if ok else float("nan"),
                         "in_flight_share": (sum(in_flight[phase]) / len(in_flight[phase])
                                             if in_flight.get(phase) else float("nan"))})
    base = {r["kind"]: r for r in rows if r["phase"].startswith("A ")}
    for r in rows:
        b = base.get(r["kind"])
        r["p50_x_A"] = ratio(r["p50_ms"], b["p50_ms"]) if b else float("nan")
        r["p99_x_A"] = ratio(r["p99_ms"], b["p99_ms"]) if b else float("nan")
    return rows


def plot_cdf(path: Path, samples: list[Sample], phases: list[str]) -> Path | None:
    """Latency CDF per kind (small, /health, /metrics), one curve per phase."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
    except ImportError:
        say("matplotlib is not installed: no plot (pip install -e '.[perf]')")
        return None
    kinds = [k for k in KINDS if any(s.kind == k for s in samples)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.2 * len(kinds), 4.5), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for i, phase in enumerate(phases):
            lat = np.sort([s.latency_s * 1000 for s in samples
                           if s.kind == kind and s.phase == phase and s.status.startswith("2")])
            if not len(lat):
                continue
            y = np.arange(1, len(lat) + 1) / len(lat)
            ax.step(lat, y, where="post", color=f"C{i}",
                    label=f"{phase} {PHASE_NAMES[phase]} (p99 {np.percentile(lat, 99):.1f} ms)")
        ax.axhline(0.99, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("latency from due time (ms, log)")
        ax.set_ylabel("share of requests")
        ax.set_title(kind if kind == "small" else f"/{kind}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Responsiveness: A idle vs B/C one maximal request in flight")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- main


async def run(args, out: Output) -> tuple[list[Sample], dict[str, list[float]], dict]:
    import aiohttp

    from router_svc.triton.launcher import free_port

    rng = random.Random(args.seed)
    questions = mmlu_questions(args.data_dir)
    tokenizer = args.model_dir / "tokenizer.json"
    # The limits come from the config the router will run with (Triton/backend URLs later).
    lim = Limits.of(router_config("127.0.0.1:1", tokenizer, "http://127.0.0.1:1/v1", 1))
    limit, body_limit = lim.max_scan_tokens, lim.max_body_bytes
    text, tokens = maximal_prompt(questions, tokenizer, lim, limit - args.token_margin, rng)
    maximal = json.dumps(chat_body(text)).encode()
    gz = gzip_body(chat_body(text), body_limit - 1024)
    info = {"maximal_tokens": tokens, "maximal_chars": len(text), "max_scan_tokens": limit,
            "maximal_body_bytes": len(maximal), "gzip_inflated_bytes": body_limit - 1024,
            "gzip_sent_bytes": len(gz), "max_body_bytes": body_limit}
    say(f"maximal prompt: {tokens} tokens (limit {limit}), {len(text):,} characters; gzip body "
        f"{len(gz):,} bytes inflating to {body_limit - 1024:,} (limit {body_limit:,})")
    prompts = small_prompts(questions, 512, rng)
    smalls = {"small": [json.dumps(chat_body(p)).encode() for p in prompts],
              "passthrough": [json.dumps(chat_body(p, model=PASSTHROUGH)).encode()
                              for p in prompts]}
    json_h = {"Content-Type": "application/json"}
    heavy = {"A": None, "B": (maximal, json_h),
             "C": (gz, {**json_h, "Content-Encoding": "gzip"})}
    work = Path(tempfile.mkdtemp(prefix="perf-responsiveness-", dir=args.out_dir))
    samples: list[Sample] = []
    in_flight: dict[str, list[float]] = {}
    pii: Counter = Counter()
    with contextlib.ExitStack() as stack:
        url = await triton_url_or_start(stack, args.triton_url, args.model_dir, work)
        backend, backend_url = start_backend(work)
        stack.callback(backend.stop)
        cfg = router_config(url, tokenizer, backend_url, free_port())
        assert Limits.of(cfg) == lim
        if args.max_queue_wait_ms > 0:
            cfg["batching"]["max_queue_wait_ms"] = args.max_queue_wait_ms
        if args.max_batch_tokens > 0:
            cfg["batching"]["max_batch_tokens"] = args.max_batch_tokens
        if args.max_job_tokens > 0:
            cfg["batching"]["max_job_tokens"] = args.max_job_tokens
        router, base = start_router(work, cfg)
        stack.callback(router.stop)
        say(f"router {base}, demo backend {backend_url}, Triton {url}")
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=timeout) as session:
            await warm_up(session, base, smalls, heavy, args.phase_list)
            plan = alternating(args.phase_list, args.rounds)
            per_phase = args.duration + args.settle
            with progress() as prog:
                task = prog.add_task("phases", total=len(plan) * per_phase)
                for rnd, phase in plan:
                    prog.update(task, description=f"round {rnd + 1}/{args.rounds}: {phase} "
                                                  f"{PHASE_NAMES[phase]}")
                    if heavy[phase] is None:
                        prog.advance(task, args.settle)
                    got, share = await run_phase(
                        session, base, args, rnd, phase, smalls, heavy[phase],
                        lambda dt: prog.advance(task, dt), pii)
                    samples += got
                    in_flight.setdefault(phase, []).append(share)
                    say(_phase_line(phase, got, share))
    info["maximal_pii_header"] = dict(pii)
    info["work_dir"] = str(work)
    return samples, in_flight, info


async def warm_up(session, base: str, smalls: dict[str, list[bytes]],
                  heavy: dict[str, tuple[bytes, dict[str, str]] | None],
                  phases: list[str]) -> None:
    """A few small requests and one maximal request (the first heavy phase's body; the other
    holds the same prompt), unmeasured. A 4xx means the body is wrong (the run stops); a 5xx is
    said, and counted in the phases like any other answer."""
    url = f"{base}/v1/chat/completions"
    for body in smalls["small"][:8] + smalls["passthrough"][:4]:
        status = await timed(session, "POST", url, data=body,
                             headers={"Content-Type": "application/json"})
        if status != "200":
            raise SystemExit(f"error: a small request answered {status} in the warm-up")
    for phase in phases:
        h = heavy[phase]
        if h is None:
            continue
        t = time.perf_counter()
        async with session.post(url, data=h[0], headers=h[1]) as r:
            text = await r.text()
        took = time.perf_counter() - t
        if 400 <= r.status < 500:
            raise SystemExit(f"error: the phase {phase} body answered {r.status} after "
                             f"{took:.1f} s: {text[:300]}")
        say(f"warm-up: phase {phase}'s maximal request answered {r.status} in {took:.2f} s "
            f"(x-router-pii: {r.headers.get('x-router-pii')})"
            + ("" if r.status == 200 else f": {text[:200]}"))
        return


def _phase_line(phase: str, got: list[Sample], share: float) -> str:
    parts = [f"{phase} {PHASE_NAMES[phase]}:"]
    for kind in (*KINDS, "maximal"):
        ok = [s.latency_s for s in got if s.kind == kind and s.status.startswith("2")]
        bad = sum(1 for s in got if s.kind == kind and not s.status.startswith("2"))
        if ok or bad:
            lat = latency_ms(ok)
            parts.append(f"{kind} n={len(ok) + bad} p50 {lat['p50_ms']:.1f} "
                         f"p99 {lat['p99_ms']:.1f} ms non-2xx {bad};")
    if share:
        parts.append(f"maximal in flight {share:.0%}")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_model_dir(args.model_dir)
    out = Output("responsiveness", args)
    try:
        import uvloop

        samples, in_flight, info = uvloop.run(run(args, out))
    except ImportError:
        samples, in_flight, info = asyncio.run(run(args, out))
    rows = summarize(samples, args.phase_list, in_flight)
    out.write_csv(rows)
    t0 = min((s.t for s in samples), default=0.0)
    # due (or start) time since the first sample: lines a stall up with the maximal requests
    out.write_csv([{"round": s.round, "phase": s.phase, "kind": s.kind, "t_s": s.t - t0,
                    "latency_ms": s.latency_s * 1000, "status": s.status} for s in samples],
                  "-samples.csv")
    print(f"## Responsiveness: {args.rate:g} small req/s, /health every "
          f"{args.health_interval * 1000:g} ms, {args.duration:g} s per phase x {args.rounds} "
          f"round(s); maximal prompt {info['maximal_tokens']} tokens "
          f"({info['maximal_chars']:,} chars)\n")
    print(markdown_table(rows, [
        ("phase", "phase"), ("kind", "kind"), ("n", "n"), ("non_2xx", "non-2xx"),
        ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"), ("p99_ms", "p99 ms"), ("max_ms", "max ms"),
        ("p50_x_A", "p50 x A"), ("p99_x_A", "p99 x A"), ("in_flight_share", "maximal share")],
        digits={"p50_ms": 2, "p95_ms": 2, "p99_ms": 2, "in_flight_share": 2}))
    bad = [f"{r['phase']} {r['kind']}: {r['non_2xx_by_status']}" for r in rows if r["non_2xx"]]
    print(f"\nnon-2xx answers: {'; '.join(bad) if bad else 'none'}")
    print(f"maximal answers' x-router-pii: {info['maximal_pii_header']}")
    if out.plot:
        plot_cdf(out.path(".png"), samples, args.phase_list)
    out.finish(**info)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
