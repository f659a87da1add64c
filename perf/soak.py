"""Soak: the router for ``--minutes`` at half its measured maximum ``auto`` throughput (issue 17).

One stack for the whole run, each service in its own process: the embedded CPU Triton, the demo
backend (answers at once) and ``router-svc serve`` with the example config, the semantic cache
on (``cache.enabled``; every simulated tenant sends ``Authorization: Bearer soak-<tenant>``: the
router keeps each tenant's answers apart and, by default, shares none between callers without a
credential).

1. Maximum: after ``--warmup-s`` of unmeasured load, a closed-loop ramp over the same mix
   (``--ramp-concurrency``, ``--ramp-s`` each, own tenants); the best completed good
   requests/s is the maximum.
2. Soak: open loop at ``--rate-fraction`` (0.5) of that maximum for ``--minutes``, latency
   counted from when each request was due (no coordinated omission). The mix, per request:
   ~``--repeat-fraction`` exact repeats of an earlier cacheable answer of the same tenant
   (should hit the cache), ~``--bad-fraction`` bad requests (``temperature: "hot"``, an unknown
   model, broken JSON, no ``messages``), the rest fresh prompts: ``--long-fraction`` long ones
   (MMLU-Pro questions joined to ``--long-tokens`` 2,000-4,000 tokens), the others short
   (MMLU-Pro questions and presidio PII sentences, 30% PII); ``--stream-fraction`` of the good
   requests ask ``stream: true``.

Expected answers: a bad request gets a 4xx in OpenAI's error format (``{"error": {"message",
"type", "param", "code"}}``), counted as expected; a good one a 200 with a whole JSON body, or a
whole event stream ending in ``data: [DONE]``. Anything else (another status, a cut stream, a
timeout, a refused connection) is an unexpected error, counted by kind.

Every window (``--window-s``, 60 s) gives: requests due, completed/s, p50/p99 of good requests
(and per kind), errors by kind, the repeats' cache hit rate and the router process's RSS
(``VmRSS`` of ``/proc/<pid>/status``; also sampled every 5 s for the plot). RSS growth is
measured from the end of the first window (the warm-up: Triton shapes, caches, pools) to the
end of the run. Goals: 0 unexpected errors, RSS growth < 10%.

    python perf/soak.py --minutes 2                # a check that it runs (~4 min in all)
    nohup python perf/soak.py --minutes 30 > perf/results/soak-$(date +%Y%m%d-%H%M%S).log 2>&1 &
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    Output,
    add_model_args,
    add_output_args,
    check_model_dir,
    int_list,
    load_prompts,
    markdown_table,
    pct,
    progress,
    ratio,
    say,
)
from _stack import Service, router_config, start_backend, start_router, triton_url_or_start

RSS_GOAL = 0.10
CHARS_PER_TOKEN = 4.13  # MMLU-Pro questions with the model's WordPiece tokenizer (measured)
BAD_KINDS = ("bad_type", "unknown_model", "bad_json", "no_messages")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="perf/soak.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap, int8=True)
    ap.add_argument("--triton-url", default=None,
                    help="gRPC host:port of a running Triton (default: start the embedded one)")
    ap.add_argument("--minutes", type=float, default=30.0, help="(default: %(default)s)")
    ap.add_argument("--window-s", type=float, default=60.0,
                    help="seconds per reported window (default: %(default)s)")
    ap.add_argument("--rate", type=float, default=None,
                    help="requests/s of the soak; default: --rate-fraction of the ramp's maximum")
    ap.add_argument("--rate-fraction", type=float, default=0.5, help="(default: %(default)s)")
    ap.add_argument("--ramp-concurrency", default="4,8,16",
                    help="closed-loop concurrencies of the maximum ramp (default: %(default)s)")
    ap.add_argument("--ramp-s", type=float, default=15.0,
                    help="seconds per ramp step; long prompts take seconds each, so a short "
                         "step counts mostly the quick ones (default: %(default)s)")
    ap.add_argument("--warmup-s", type=float, default=10.0,
                    help="unmeasured closed-loop load (concurrency 4) before the ramp: Triton's "
                         "first calls of each shape are slow (default: %(default)s)")
    ap.add_argument("--repeat-fraction", type=float, default=0.30, help="(default: %(default)s)")
    ap.add_argument("--stream-fraction", type=float, default=0.20, help="(default: %(default)s)")
    ap.add_argument("--bad-fraction", type=float, default=0.05, help="(default: %(default)s)")
    ap.add_argument("--long-fraction", type=float, default=0.05,
                    help="share of all requests that are fresh long prompts (default: "
                         "%(default)s)")
    ap.add_argument("--long-tokens", default="2000,4000",
                    help="token range of the long prompts (default: %(default)s)")
    ap.add_argument("--tenants", type=int, default=4, help="(default: %(default)s)")
    ap.add_argument("--cache-capacity", type=int, default=None,
                    help="cache.capacity of the router (default: the example config's, 10,000); "
                         "a small one reaches eviction early, so the RSS must level off")
    ap.add_argument("--timeout-s", type=float, default=120.0,
                    help="client timeout per request (default: %(default)s)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    args.ramp = int_list(args.ramp_concurrency)
    lo, hi = int_list(args.long_tokens)
    args.long_range = (lo, hi)
    if args.repeat_fraction + args.bad_fraction + args.long_fraction > 1:
        ap.error("--repeat-fraction + --bad-fraction + --long-fraction must be at most 1")
    return args


# ---------------------------------------------------------------- the mix


@dataclass
class Req:
    kind: str  # short, long, repeat, or one of BAD_KINDS
    body: bytes
    headers: dict[str, str]
    stream: bool

    @property
    def bad(self) -> bool:
        return self.kind in BAD_KINDS


def chat(text: str, stream: bool, model: str = "auto") -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}],
                            "max_tokens": 32}
    if stream:
        body["stream"] = True
    return body


class Mix:
    """Deterministic request mix. Fresh prompts cycle through the pool; each cycle uses new
    tenants, so a prompt met again in a later cycle is still a miss (and what should hit is
    exactly the repeats)."""

    def __init__(self, args, short: list[str], questions: list[str], prefix: str, seed: int):
        self.args = args
        self.short = short
        self.questions = questions
        self.prefix = prefix
        self.rng = random.Random(seed)
        self.order = itertools.count()
        self.cacheable: deque[Req] = deque(maxlen=2000)  # answered, stored: repeat these

    def tenant_headers(self, cycle: int) -> dict[str, str]:
        tenant = f"{self.prefix}-{cycle}-{self.rng.randrange(self.args.tenants)}"
        return {"Content-Type": "application/json", "Authorization": f"Bearer {tenant}"}

    def next(self) -> Req:
        a, u = self.args, self.rng.random()
        if u < a.bad_fraction:
            return self.bad(BAD_KINDS[self.rng.randrange(len(BAD_KINDS))])
        if u < a.bad_fraction + a.repeat_fraction and self.cacheable:
            return self.rng.choice(self.cacheable)
        stream = self.rng.random() < a.stream_fraction
        if u < a.bad_fraction + a.repeat_fraction + a.long_fraction:
            return Req("long", json.dumps(chat(self.long_text(), stream)).encode(),
                       self.tenant_headers(0), stream)
        i = next(self.order)
        text = self.short[i % len(self.short)]
        return Req("short", json.dumps(chat(text, stream)).encode(),
                   self.tenant_headers(i // len(self.short)), stream)

    def long_text(self) -> str:
        """Random questions, one per line, up to a random length in ``--long-tokens``."""
        want = self.rng.randint(*self.args.long_range) * CHARS_PER_TOKEN
        parts: list[str] = []
        size = 0
        while size < want:
            q = self.rng.choice(self.questions)
            parts.append(q)
            size += len(q) + 1
        return "\n".join(parts)

    def bad(self, kind: str) -> Req:
        h = self.tenant_headers(0)
        text = self.short[self.rng.randrange(len(self.short))]
        if kind == "bad_json":
            return Req(kind, b'{"model": "auto", "messages": [{"role": "user", "content": "',
                       h, False)
        body = {"bad_type": {**chat(text, False), "temperature": "hot"},
                "unknown_model": chat(text, False, model="no-such-model"),
                "no_messages": {"model": "auto", "max_tokens": 32}}[kind]
        return Req(kind, json.dumps(body).encode(), h, False)


# ---------------------------------------------------------------- one request


@dataclass
class Record:
    kind: str
    stream: bool
    due: float  # seconds since the soak began
    latency_s: float
    outcome: str  # ok, expected_4xx, or the unexpected error's kind
    cache: str | None = None  # x-router-cache of a good answer
    lag_s: float = 0.0  # open loop: send time - due time
    detail: str = ""  # an unexpected answer's error message (what the router said)


def judge(req: Req, status: int, headers: Any, raw: bytes) -> str:
    """``ok``, ``expected_4xx`` or the kind of unexpected answer."""
    if req.bad:
        if not 400 <= status < 500:
            return f"{req.kind}_answered_{status}"
        return "expected_4xx" if openai_error(raw) else f"{req.kind}_not_openai_error"
    if status != 200:
        return f"http_{status}"
    if req.stream:
        if "text/event-stream" not in headers.get("Content-Type", ""):
            return "stream_not_sse"
        return "ok" if raw.rstrip().endswith(b"data: [DONE]") else "stream_incomplete"
    try:
        return "ok" if "choices" in json.loads(raw) else "answer_without_choices"
    except ValueError:
        return "answer_not_json"


def openai_error(raw: bytes) -> bool:
    try:
        err = json.loads(raw).get("error")
    except (ValueError, AttributeError):
        return False
    return (isinstance(err, dict) and isinstance(err.get("message"), str)
            and isinstance(err.get("type"), str) and "param" in err and "code" in err)


def error_message(raw: bytes) -> str:
    try:
        return str(json.loads(raw)["error"]["message"])[:160]
    except (ValueError, KeyError, TypeError):
        return raw[:160].decode("utf-8", "replace")


async def send(session, url: str, req: Req, mix: Mix) -> tuple[str, str | None, str]:
    """One request, its whole answer read: (outcome, x-router-cache, detail of an unexpected
    answer). A good answer that was stored goes into the pool the repeats are drawn from."""
    try:
        async with session.post(url, data=req.body, headers=req.headers) as r:
            raw = await r.read()
            outcome = judge(req, r.status, r.headers, raw)
            cache = r.headers.get("x-router-cache")
            if (outcome == "ok" and req.kind != "repeat" and cache == "miss"
                    and r.headers.get("x-router-pii") == "none"):
                mix.cacheable.append(Req("repeat", req.body, req.headers, req.stream))
            unexpected = outcome not in ("ok", "expected_4xx")
            return outcome, cache, error_message(raw) if unexpected else ""
    except TimeoutError:
        return "client_timeout", None, ""
    except Exception as e:  # counted by kind; one failure must not end the soak
        return f"exc_{type(e).__name__}", None, str(e)[:160]


# ---------------------------------------------------------------- the router's memory


def rss_mb(pid: int) -> float:
    """VmRSS of one process plus its descendants (the router starts none today), in MiB."""
    total = 0.0
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
    return total


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for c in (task / "children").read_text().split():
                out += [int(c), *descendants(int(c))]
    return out


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- load


async def ramp(session, url: str, mix: Mix, args, prog) -> list[dict]:
    """Closed loop at each concurrency for ``--ramp-s``: completed good requests/s."""
    rows = []
    task = prog.add_task("ramp (maximum)", total=len(args.ramp) * args.ramp_s)
    for conc in args.ramp:
        row = await ramp_step(session, url, mix, conc, args.ramp_s,
                              lambda dt: prog.advance(task, dt))
        rows.append(row)
        say(f"ramp: concurrency {conc}: {row['throughput']:.1f} good req/s, p50 "
            f"{row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms, unexpected {row['unexpected']}")
    return rows


async def ramp_step(session, url: str, mix: Mix, conc: int, seconds: float, tick) -> dict:
    recs: list[Record] = []
    t0 = time.perf_counter()
    t_end = t0 + seconds

    async def worker() -> None:
        while (start := time.perf_counter()) < t_end:
            req = mix.next()
            outcome, cache, detail = await send(session, url, req, mix)
            recs.append(Record(req.kind, req.stream, start - t0, time.perf_counter() - start,
                               outcome, cache, detail=detail))

    ticker = asyncio.create_task(_tick(tick, t_end))
    await asyncio.gather(*(worker() for _ in range(conc)))
    ticker.cancel()
    took = time.perf_counter() - t0
    good = [r.latency_s for r in recs if r.outcome == "ok"]
    return {"concurrency": conc, "throughput": len(good) / took,
            "p50_ms": pct(good, 50) * 1000, "p99_ms": pct(good, 99) * 1000,
            "unexpected": sum(1 for r in recs if r.outcome not in ("ok", "expected_4xx")),
            "seconds": took}


async def _tick(tick, until: float) -> None:
    prev = time.perf_counter()
    while prev < until:
        await asyncio.sleep(0.5)
        now = time.perf_counter()
        tick(min(now, until) - prev)
        prev = now


@dataclass
class Soak:
    records: list[Record] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MiB) every 5 s
    window_rss: list[float] = field(default_factory=list)  # MiB at each window's end
    window_cpu: list[float] = field(default_factory=list)  # router CPU s at each window's end
    window_load: list[float] = field(default_factory=list)  # the machine's 1-min load average
    window_counters: list[dict[str, float]] = field(default_factory=list)  # router /metrics
    unfinished: int = 0


async def soak(session, base: str, mix: Mix, args, rate: float, router: Service,
               prog) -> Soak:
    """Open loop at ``rate`` for ``--minutes``; a monitor samples RSS and prints each window."""
    out = Soak()
    duration = args.minutes * 60
    t0 = time.perf_counter()
    tasks: set[asyncio.Task] = set()
    task = prog.add_task("soak", total=duration)

    async def one(req: Req, due: float) -> None:
        sent = time.perf_counter()
        outcome, cache, detail = await send(session, url, req, mix)
        out.records.append(Record(req.kind, req.stream, due - t0, time.perf_counter() - due,
                                  outcome, cache, sent - due, detail))

    url = f"{base}/v1/chat/completions"
    monitor = asyncio.create_task(watch(out, args, t0, duration, router.proc.pid, prog, task,
                                        lambda: router_errors(session, base)))
    for i in itertools.count():
        due = t0 + i / rate
        if due >= t0 + duration:
            break
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        t = asyncio.create_task(one(mix.next(), due))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=args.timeout_s + 5)
        for t in pending:
            t.cancel()
        out.unfinished = len(pending)
    await monitor
    return out


async def watch(out: Soak, args, t0: float, duration: float, pid: int, prog, task,
                counters: Callable[[], Awaitable[dict[str, float]]]) -> None:
    """RSS every 5 s; at each window's end, its RSS and a line with the window so far."""
    n_windows = max(1, round(duration / args.window_s))
    next_window = 1
    while True:
        await asyncio.sleep(5.0 - (time.perf_counter() - t0) % 5.0)
        now = time.perf_counter() - t0
        mem = rss_mb(pid)
        out.rss.append((now, mem))
        prog.update(task, completed=min(now, duration))
        if now + 0.5 >= next_window * args.window_s and next_window <= n_windows:
            out.window_rss.append(mem)
            out.window_cpu.append(cpu_s(pid))
            out.window_load.append(os.getloadavg()[0])
            try:  # the router's own error counters name the cause of a 5xx
                out.window_counters.append(await counters())
            except Exception as e:
                say(f"/metrics did not answer: {type(e).__name__}")
                out.window_counters.append({})
            w = window_stats(out.records, next_window - 1, args.window_s)
            prog.update(task, description=f"soak: window {next_window}/{n_windows}, "
                                          f"RSS {mem:.0f} MiB")
            say(f"window {next_window}: {w['requests']} due, p50 {w['p50_ms']:.0f} ms, p99 "
                f"{w['p99_ms']:.0f} ms, unexpected {w['unexpected']}, expected 4xx "
                f"{w['expected_4xx']}, RSS {mem:.1f} MiB (answers still arriving)")
            next_window += 1
        if now >= duration and next_window > n_windows:
            return


# ---------------------------------------------------------------- summary


def window_stats(records: list[Record], w: int, window_s: float) -> dict[str, Any]:
    rs = [r for r in records if w * window_s <= r.due < (w + 1) * window_s]
    good = [r for r in rs if r.outcome == "ok"]
    lat = [r.latency_s * 1000 for r in good]
    errors = Counter(r.outcome for r in rs if r.outcome not in ("ok", "expected_4xx"))
    repeats = [r for r in good if r.kind == "repeat"]
    row: dict[str, Any] = {
        "window": w + 1, "requests": len(rs), "throughput": len(rs) / window_s,
        "ok": len(good), "expected_4xx": sum(1 for r in rs if r.outcome == "expected_4xx"),
        "unexpected": sum(errors.values()),
        "unexpected_by_kind": " ".join(f"{k}:{v}" for k, v in sorted(errors.items())),
        "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
        "repeat_hit_rate": ratio(sum(1 for r in repeats if r.cache == "hit"), len(repeats)),
        "gen_lag_p99_ms": pct([r.lag_s * 1000 for r in rs], 99),
    }
    for kind in ("short", "long", "repeat"):
        row[f"p50_{kind}_ms"] = pct([r.latency_s * 1000 for r in good if r.kind == kind], 50)
    row["p50_stream_ms"] = pct([r.latency_s * 1000 for r in good if r.stream], 50)
    return row


def summarize(out: Soak, args, rate: float, maximum: float) -> tuple[list[dict], dict]:
    n_windows = max(1, round(args.minutes * 60 / args.window_s))
    rows = [window_stats(out.records, w, args.window_s) for w in range(n_windows)]
    for i, r in enumerate(rows):
        r["rss_mb"] = out.window_rss[i] if i < len(out.window_rss) else float("nan")
        if 0 < i < len(out.window_cpu):  # the router's CPU share over the window
            r["router_cpu_pct"] = (out.window_cpu[i] - out.window_cpu[i - 1]) / args.window_s * 100
        if i < len(out.window_load):
            r["loadavg_1m"] = out.window_load[i]
        if i < len(out.window_counters):
            r["router_errors"] = counter_delta(out.window_counters, i)
            # rows (128-token windows) waiting for Triton: a backlog means saturation
            r["queue_rows"] = out.window_counters[i].get("router_queue_depth", float("nan"))
            r["cache_entries"] = out.window_counters[i].get("router_cache_entries", float("nan"))
            r["cache_evictions"] = sum(v for k, v in out.window_counters[i].items()
                                       if k.startswith("router_cache_evictions_total"))
    errors = Counter(r.outcome for r in out.records if r.outcome not in ("ok", "expected_4xx"))
    if out.unfinished:
        errors["unfinished_at_end"] = out.unfinished
    base, end = rows[0]["rss_mb"], rows[-1]["rss_mb"]
    repeats = [r for r in out.records if r.kind == "repeat" and r.outcome == "ok"]
    kinds = Counter(r.kind for r in out.records)
    s = {
        "minutes": args.minutes, "rate": rate, "maximum": maximum,
        "requests": len(out.records) + out.unfinished, "by_kind": dict(kinds),
        "streams": sum(1 for r in out.records if r.stream),
        "ok": sum(1 for r in out.records if r.outcome == "ok"),
        "expected_4xx": sum(1 for r in out.records if r.outcome == "expected_4xx"),
        "unexpected": sum(errors.values()), "unexpected_by_kind": dict(errors),
        "p50_first_ms": rows[0]["p50_ms"], "p99_first_ms": rows[0]["p99_ms"],
        "p50_last_ms": rows[-1]["p50_ms"], "p99_last_ms": rows[-1]["p99_ms"],
        "rss_start_mb": base, "rss_end_mb": end,
        "rss_max_mb": max((m for _, m in out.rss), default=float("nan")),
        "rss_growth": ratio(end - base, base),
        "rss_slope_mib_per_10min_second_half": rss_slope(out.rss, args.minutes * 60 / 2) * 600,
        "repeat_hit_rate": ratio(sum(1 for r in repeats if r.cache == "hit"), len(repeats)),
        "unexpected_details": unexpected_details(out.records),
    }
    s["goals_met"] = s["unexpected"] == 0 and s["rss_growth"] < RSS_GOAL
    return rows, s


def rss_slope(samples: list[tuple[float, float]], since_s: float) -> float:
    """Least-squares MiB per second of the RSS samples after ``since_s``: a leak keeps a
    positive slope, a high-water mark from a burst (queued requests) flattens."""
    pts = [(t, m) for t, m in samples if t >= since_s]
    if len(pts) < 3:
        return float("nan")
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mm = sum(m for _, m in pts) / n
    var = sum((t - mt) ** 2 for t, _ in pts)
    return sum((t - mt) * (m - mm) for t, m in pts) / var if var else float("nan")


def counter_delta(snapshots: list[dict[str, float]], i: int) -> str:
    """What the router's error counters added during window ``i`` (``name{label}:n``)."""
    now, before = snapshots[i], snapshots[i - 1] if i else {}
    parts = []
    for name, v in sorted(now.items()):
        d = v - before.get(name, 0.0)
        if d and "_created" not in name and name.startswith(("router_errors",
                                                             "router_classifier_failures")):
            short = name.removeprefix("router_").replace("_total", "")
            parts.append(f"{short}:{d:g}")
    return " ".join(parts)


def unexpected_details(records: list[Record], top: int = 10) -> list[dict[str, Any]]:
    """The most frequent unexpected answers by kind and message, with how long they took (a
    queue deadline shows as a fixed latency, an outage as a quick answer)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in records:
        if r.outcome not in ("ok", "expected_4xx"):
            groups.setdefault((r.outcome, r.detail), []).append(r.latency_s)
    ranked = sorted(groups.items(), key=lambda kv: -len(kv[1]))[:top]
    return [{"outcome": o, "detail": d, "count": len(lat), "latency_s_min": min(lat),
             "latency_s_max": max(lat)} for (o, d), lat in ranked]


def plot(path: Path, rows: list[dict], out: Soak, window_s: float) -> Path | None:
    """p50/p99 per window (log), throughput, and RSS over time (5 s samples, window ends)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib is not installed: no plot (pip install -e '.[perf]')")
        return None
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(11, 7.5), sharex=True)
    mid = [(r["window"] - 0.5) * window_s / 60 for r in rows]
    ax.plot(mid, [r["p50_ms"] for r in rows], "o-", label="p50 (good requests)")
    ax.plot(mid, [r["p99_ms"] for r in rows], "s--", label="p99")
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    ax.grid(True, which="both", alpha=0.3)
    errs = [(m, r["p99_ms"]) for m, r in zip(mid, rows, strict=True) if r["unexpected"]]
    if errs:
        ax.scatter([m for m, _ in errs], [p for _, p in errs], marker="x", s=80, zorder=3,
                   color="red", label="window with unexpected errors")
    tw = ax.twinx()
    tw.plot(mid, [r["throughput"] for r in rows], ":", color="grey", label="requests/s")
    tw.set_ylabel("requests due / s")
    tw.set_ylim(0, max(r["throughput"] for r in rows) * 1.4)
    lines = ax.get_legend_handles_labels()
    tl = tw.get_legend_handles_labels()
    ax.legend(lines[0] + tl[0], lines[1] + tl[1], fontsize=8, loc="upper left")
    ax.set_title("latency per window")
    ax2.plot([t / 60 for t, _ in out.rss], [m for _, m in out.rss], "-", lw=1,
             label="router RSS (5 s samples)")
    ax2.plot([(i + 1) * window_s / 60 for i in range(len(out.window_rss))], out.window_rss, "o",
             label="at window end")
    if out.window_rss:
        base = out.window_rss[0]
        ax2.axhline(base * (1 + RSS_GOAL), color="red", ls=":", lw=1,
                    label=f"+{RSS_GOAL:.0%} of the first window's end")
    ax2.set_xlabel("minutes")
    ax2.set_ylabel("RSS (MiB)")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8, loc="lower right")
    ax2.set_title("router process memory")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- main


async def run(args, out: Output) -> tuple[Soak, list[dict], float, float, dict]:
    import aiohttp

    from router_svc.triton.launcher import free_port

    prompts = load_prompts(args.data_dir, args.prompts, args.pii_fraction, args.seed)
    short = [p.text for p in prompts]
    questions = [p.text for p in load_prompts(args.data_dir, 4096, 0.0, args.seed + 1)]
    work = Path(tempfile.mkdtemp(prefix="perf-soak-", dir=args.out_dir))
    extra: dict[str, Any] = {"work_dir": str(work)}
    with contextlib.ExitStack() as stack:
        url = await triton_url_or_start(stack, args.triton_url, args.model_dir, work, args.int8)
        backend, backend_url = start_backend(work)
        stack.callback(backend.stop)
        cfg = router_config(url, args.model_dir / "tokenizer.json", backend_url, free_port(),
                            cache=True)
        if args.cache_capacity:
            cfg["cache"]["capacity"] = args.cache_capacity
        extra["cache_capacity"] = cfg["cache"].get("capacity")
        router, base = start_router(work, cfg)
        stack.callback(router.stop)
        chat_url = f"{base}/v1/chat/completions"
        say(f"router {base} (pid {router.proc.pid}), demo backend {backend_url}, Triton {url}")
        extra["rss_before_ramp_mb"] = rss_mb(router.proc.pid)
        timeout = aiohttp.ClientTimeout(total=args.timeout_s)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=timeout) as session:
            with progress() as prog:
                if args.warmup_s > 0:
                    say(f"warm-up: {args.warmup_s:g} s at concurrency 4, not measured")
                    await ramp_step(session, chat_url, Mix(args, short, questions, "warm",
                                                           args.seed + 3), 4, args.warmup_s,
                                    lambda dt: None)
                ramp_rows = await ramp(session, chat_url, Mix(args, short, questions, "ramp",
                                                              args.seed + 7), args, prog)
                maximum = max(r["throughput"] for r in ramp_rows)
                rate = args.rate or args.rate_fraction * maximum
                extra["rss_after_ramp_mb"] = rss_mb(router.proc.pid)
                say(f"maximum {maximum:.1f} good req/s; soak at {rate:.2f} req/s for "
                    f"{args.minutes:g} min")
                mix = Mix(args, short, questions, "soak", args.seed)
                result = await soak(session, base, mix, args, rate, router, prog)
            extra["router_metrics_errors"] = await router_errors(session, base)
        extra["router_log_tail"] = router.tail(20)
    return result, ramp_rows, maximum, rate, extra


async def router_errors(session, base: str) -> dict[str, float]:
    """The router's own error and failure counters (Prometheus text), to name a cause."""
    async with session.get(f"{base}/metrics") as r:
        text = await r.text()
    out = {}
    for line in text.splitlines():
        if line.startswith(("router_errors_total", "router_classifier_failures_total",
                            "router_cache_requests_total", "router_cache_entries",
                            "router_cache_evictions_total",
                            "router_queue_depth")):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_model_dir(args.model_dir)
    out = Output("soak", args)
    try:
        import uvloop

        result, ramp_rows, maximum, rate, extra = uvloop.run(run(args, out))
    except ImportError:
        result, ramp_rows, maximum, rate, extra = asyncio.run(run(args, out))
    rows, s = summarize(result, args, rate, maximum)
    out.write_csv(rows)
    out.write_csv(ramp_rows, "-ramp.csv")
    out.write_csv([{"seconds": t, "rss_mb": m} for t, m in result.rss], "-rss.csv")
    out.write_csv([{"kind": r.kind, "stream": int(r.stream), "due_s": r.due,
                    "latency_ms": r.latency_s * 1000, "outcome": r.outcome, "cache": r.cache,
                    "lag_ms": r.lag_s * 1000, "detail": r.detail} for r in result.records],
                  "-requests.csv")
    print(f"## Soak: {args.minutes:g} min at {rate:.2f} req/s ({args.rate_fraction:g} x the "
          f"ramp's maximum {maximum:.1f} req/s)\n")
    print(markdown_table(rows, [
        ("window", "window"), ("requests", "due"), ("throughput", "due/s"), ("ok", "ok"),
        ("expected_4xx", "expected 4xx"), ("unexpected", "unexpected"),
        ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("p50_short_ms", "p50 short"),
        ("p50_long_ms", "p50 long"), ("p50_repeat_ms", "p50 repeat"),
        ("p50_stream_ms", "p50 stream"), ("repeat_hit_rate", "repeat hits"),
        ("rss_mb", "RSS MiB"), ("router_cpu_pct", "router CPU %"),
        ("cache_entries", "cache entries"), ("queue_rows", "queued rows"),
        ("gen_lag_p99_ms", "gen lag p99 ms"),
        ("loadavg_1m", "load 1m")],
        digits={"rss_mb": 1, "repeat_hit_rate": 2}))
    for r in rows:
        if r.get("router_errors"):
            print(f"window {r['window']}: router counters {r['router_errors']}")
    print()
    print(markdown_table([{
        "requests": s["requests"], "unexpected": s["unexpected"],
        "expected_4xx": s["expected_4xx"],
        "p50": f"{s['p50_first_ms']:.0f} -> {s['p50_last_ms']:.0f}",
        "p99": f"{s['p99_first_ms']:.0f} -> {s['p99_last_ms']:.0f}",
        "rss": f"{s['rss_start_mb']:.1f} -> {s['rss_end_mb']:.1f} (max {s['rss_max_mb']:.1f})",
        "growth": f"{s['rss_growth']:+.1%}", "hits": f"{s['repeat_hit_rate']:.2f}",
        "slope": f"{s['rss_slope_mib_per_10min_second_half']:+.2f}",
        "goals": "met" if s["goals_met"] else "NOT met"}], [
        ("requests", "requests"), ("unexpected", "unexpected errors"),
        ("expected_4xx", "expected 4xx"), ("p50", "p50 ms first -> last window"),
        ("p99", "p99 ms first -> last window"),
        ("rss", "router RSS MiB, end of window 1 -> end"), ("growth", "RSS growth"),
        ("slope", "RSS MiB per 10 min, 2nd half"),
        ("hits", "repeat hit rate"), ("goals", "0 errors, growth < 10%")]))
    print(f"\nrequests by kind: {s['by_kind']}, streams {s['streams']}")
    print(f"unexpected by kind: {s['unexpected_by_kind'] or 'none'}")
    for d in s["unexpected_details"]:
        print(f"  {d['count']} x {d['outcome']} after {d['latency_s_min']:.1f}-"
              f"{d['latency_s_max']:.1f} s: {d['detail']}")
    print(f"router error counters: {extra.get('router_metrics_errors') or 'none'}")
    if out.plot:
        plot(out.path(".png"), rows, result, args.window_s)
    out.finish(summary=s, ramp=ramp_rows, **extra)
    return 0 if s["goals_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
