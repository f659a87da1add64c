"""``router-svc eval conversations``: does a conversation keep its model, and at what cost?

Conversations are built from held-out MMLU-Pro questions (``router-svc model heldout``): a
first question, then turns that are either generic follow-ups ("Can you explain that step by
step?", "Why?", ...) or real topic changes (a new question of another category), with a short
assistant answer between turns. Every turn goes through the router's own decision path
(``Router.route`` over the served model, as ``router-svc serve`` builds it), carrying the whole
history as chat clients send it.

Reported: the share of follow-up turns that keep the conversation's model (goal >= 0.95), the
share of topic changes that switch (goal >= 0.85), both against
``routing.conversation.switch_confidence`` (a sweep, replayed with the pure decision functions
over the turns' own categories), and the latency of a follow-up in a 10-turn conversation
against a single-turn request (goal: at most 1.5x), medians and p99.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import random
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from router_svc.config.loading import EXAMPLE_CONFIG, Config, load_config
from router_svc.core.conversation import SwitchPolicy, Topic, follow
from router_svc.core.selection import select_model
from router_svc.ops.up import ServedModelOptions

TurnKind = Literal["start", "follow_up", "topic_change"]
DATA_CANDIDATES = (Path("eval_out/heldout/mmlu_val.jsonl"), Path(".work/heldout/mmlu_val.jsonl"))
SWEEP = tuple(round(0.50 + 0.01 * i, 2) for i in range(50))  # 0.50 .. 0.99
GOALS = {"keep": 0.95, "switch": 0.85, "latency_ratio": 1.5}

# Generic follow-ups: they say nothing about a subject, only about the answer before them.
FOLLOW_UPS = (
    "Can you explain that step by step?",
    "Why?",
    "And the next one?",
    "Can you give an example?",
    "Thanks, what else?",
    "Thanks! And what about the second one?",
    "I don't get it. Can you say it more simply?",
    "Are you sure?",
    "What if it were the other way around?",
    "Could you summarise that in one sentence?",
    "Which option would you pick then?",
    "Go on.",
    "Can you show the working?",
    "Why is that the right answer and not the others?",
    "OK, what's a good way to remember this?",
    "Can you make it shorter?",
    "Is there another way to solve it?",
    "What would change if the numbers were different?",
    "Please double-check your answer.",
    "Great, thanks. Can you elaborate on the last point?",
)


@dataclass(frozen=True)
class ConversationEvalOptions:
    """``router-svc eval conversations``' options; the defaults are the command line's."""

    data: Path | None = None  # MMLU-Pro style JSONL; None: the first of DATA_CANDIDATES
    out: Path = Path("eval_out")
    served: ServedModelOptions = field(default_factory=ServedModelOptions)
    config: Path | None = None  # the router config (None: the example)
    switch_confidence: float | None = None  # None: the config's
    conversations: int = 120
    turns: int = 10  # user turns per conversation
    topic_change_rate: float = 0.3  # share of later turns that are a new question
    latency_samples: int = 80
    concurrency: int = 4  # conversations routed at once (turns of one are in order)
    seed: int = 0


@dataclass(frozen=True)
class TurnSpec:
    text: str
    kind: TurnKind
    category: str  # the gold category of the question the conversation is about
    answer: str  # the assistant's reply after this turn


@dataclass
class TurnResult:
    kind: TurnKind
    text: str
    gold: str
    own: Topic  # the turn read on its own (what routing without conversation would use)
    model: str
    verdict: str
    reason: str


# --------------------------------------------------------------------------- conversations


def answer_for(question: str) -> str:
    """A short assistant reply of the kind that sits between turns (it is scanned for PII,
    not categorised; its length is what matters for the cost)."""
    words = question.split()
    gist = " ".join(words[:24]) + (" ..." if len(words) > 24 else "")
    return (f"Let's work through it. The question: {gist} First, recall the relevant "
            "definitions; then apply them to the numbers given, checking each option in turn. "
            "Putting it together, the best answer is (B).")


def build_conversations(questions: Sequence[tuple[str, str]], n: int, turns: int,
                        change_rate: float, seed: int = 0) -> list[list[TurnSpec]]:
    """``questions``: (text, category). Each conversation starts with a question; each later
    turn is a topic change (a question of another category) with probability
    ``change_rate``, else a generic follow-up."""
    rng = random.Random(seed)
    by_cat: dict[str, list[str]] = {}
    for text, cat in questions:
        by_cat.setdefault(cat, []).append(text)
    cats = sorted(by_cat)
    out = []
    for _ in range(n):
        cat = rng.choice(cats)
        q = rng.choice(by_cat[cat])
        conv = [TurnSpec(q, "start", cat, answer_for(q))]
        for _ in range(turns - 1):
            if rng.random() < change_rate and len(cats) > 1:
                cat = rng.choice([c for c in cats if c != cat])
                q = rng.choice(by_cat[cat])
                conv.append(TurnSpec(q, "topic_change", cat, answer_for(q)))
            else:
                f = rng.choice(FOLLOW_UPS)
                conv.append(TurnSpec(f, "follow_up", cat, "Sure. " + answer_for(q)))
        out.append(conv)
    return out


def messages_for(conv: Sequence[TurnSpec], upto: int) -> list[dict[str, str]]:
    """The chat history a client sends for turn ``upto`` (0-based): every earlier turn and
    its answer, then the turn."""
    msgs = [{"role": "system", "content": "You are a helpful assistant."}]
    for t in conv[:upto]:
        msgs += [{"role": "user", "content": t.text}, {"role": "assistant", "content": t.answer}]
    msgs.append({"role": "user", "content": conv[upto].text})
    return msgs


# --------------------------------------------------------------------------- scoring


def replay(config: Config, results: Sequence[Sequence[TurnResult]],
           switch_confidence: float | None) -> dict[str, Any]:
    """Keep and switch rates with the pure decision functions over the turns' own topics;
    ``switch_confidence`` None: routing without conversations (every turn on its own)."""
    alias, thr = config.routing.alias, config.classifier.category_model.threshold
    policy = SwitchPolicy(thr, switch_confidence if switch_confidence is not None else 0.0)
    kept = follow_ups = switched = changes = confident = confident_switched = 0
    for conv in results:
        topic: Topic | None = None
        model = None
        for r in conv:
            if switch_confidence is None:
                topic, verdict = r.own, "new"
            else:
                topic, verdict = follow(topic, r.own, policy)
            assert topic is not None
            now = select_model(config, alias, topic.category, topic.confidence, ()).model
            if r.kind == "follow_up":
                follow_ups += 1
                kept += now == model
            elif r.kind == "topic_change":
                changes += 1
                moved = verdict == "switched" if switch_confidence is not None else True
                switched += moved
                if r.own.confidence >= thr:
                    confident += 1
                    confident_switched += moved
            model = now
    return {"switch_confidence": switch_confidence,
            "keep_rate": kept / max(1, follow_ups), "switch_rate": switched / max(1, changes),
            "switch_rate_confident": confident_switched / max(1, confident),
            "follow_ups": follow_ups, "topic_changes": changes,
            "confident_topic_changes": confident}


def observed(config: Config, results: Sequence[Sequence[TurnResult]]) -> dict[str, Any]:
    """The rates as the router decided them (headers and models of the real runs)."""
    alias = config.routing.alias
    kept = fu = sw = tc = right = 0
    for conv in results:
        prev = None
        for r in conv:
            if r.kind == "follow_up":
                fu += 1
                kept += r.model == prev
            elif r.kind == "topic_change":
                tc += 1
                sw += r.verdict == "switched"
                alone = select_model(config, alias, r.own.category, r.own.confidence, ()).model
                right += r.model == alone
            prev = r.model
    return {"keep_rate": kept / max(1, fu), "switch_rate": sw / max(1, tc),
            "topic_change_model_as_alone": right / max(1, tc), "follow_ups": fu,
            "topic_changes": tc}


def pct(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


# --------------------------------------------------------------------------- running


@contextlib.asynccontextmanager
async def served_router(opts: ConversationEvalOptions, config: Config) -> AsyncIterator[Any]:
    """A factory of ``Router``s over one served classifier, set up as the runtime sets it up
    (PII window, stride and threshold, batching wait from the config)."""
    from export.evaluate import served_classifier
    from router_svc.classify.classifier import ScanMemory
    from router_svc.core.metrics import Metrics
    from router_svc.core.pipeline import Router

    async with served_classifier(opts.served) as clf:
        pm = config.classifier.pii_model
        clf.window = min(pm.window_tokens, clf.window)
        clf.stride, clf.pii_threshold = pm.window_stride, pm.threshold
        clf.pii_type_thresholds = dict(pm.type_thresholds)
        clf.batcher.max_wait_s = config.batching.max_wait_ms / 1000

        def make(cfg: Config) -> Router:
            # A replica of its own: the shared model and batcher, its own memory of texts read.
            mine = copy.copy(clf)
            mine.memory = ScanMemory(cfg.classifier.pii_model.memory_entries)
            return Router(cfg, mine, Metrics.create(models=list(cfg.model_config)), environ={})

        yield make


async def run_conversations(router: Any, convs: list[list[TurnSpec]],
                            concurrency: int) -> list[list[TurnResult]]:
    from tqdm.auto import tqdm

    sem = asyncio.Semaphore(concurrency)
    bar = tqdm(total=sum(map(len, convs)), desc="turns", unit="turn")

    async def one(conv: list[TurnSpec]) -> list[TurnResult]:
        out = []
        async with sem:
            for i, t in enumerate(conv):
                r = await router.route("chat", {"model": "auto",
                                                "messages": messages_for(conv, i)})
                cls = r.classification
                assert cls is not None, "the classifier did not answer"
                turn = r.conversation
                out.append(TurnResult(t.kind, t.text, t.category,
                                      Topic(cls.category, cls.confidence), r.decision.model,
                                      turn.verdict if turn else "none", r.decision.reason))
                bar.update(1)
        return out

    try:
        return list(await asyncio.gather(*(one(c) for c in convs)))
    finally:
        bar.close()


async def measure_latency(make: Any, config: Config, convs: list[list[TurnSpec]],
                          samples: int) -> dict[str, Any]:
    """Sequential ``Router.route`` times (ms), one request at a time, the kinds interleaved:
    a single-turn question; the last follow-up of a 10-turn conversation with the memory warm
    (the turn before went through the same router), cold (another replica: the earlier turns
    are categorised in the same model call), and with conversations off."""
    from tqdm.auto import tqdm

    off = dataclasses.replace(config, routing=dataclasses.replace(
        config.routing, conversation=dataclasses.replace(config.routing.conversation,
                                                         enabled=False)))
    warm, cold_router, off_router = make(config), None, make(off)
    times: dict[str, list[float]] = {"single_turn": [], "follow_up_10_warm": [],
                                     "follow_up_10_cold": [], "follow_up_10_off": []}
    last = [c for c in convs if len(c) >= 10 and c[9].kind == "follow_up"] or convs

    async def timed(router: Any, body: dict) -> float:
        t = time.perf_counter()
        await router.route("chat", body)
        return (time.perf_counter() - t) * 1e3

    for i in tqdm(range(samples), desc="latency", unit="sample"):
        conv = last[i % len(last)]
        n = min(10, len(conv)) - 1
        single = {"model": "auto", "messages": messages_for(conv[:1], 0)}
        follow_up = {"model": "auto", "messages": messages_for(conv, n)}
        await warm.route("chat", {"model": "auto", "messages": messages_for(conv, n - 1)})
        cold_router = make(config)  # nothing remembered
        jobs = [("single_turn", warm, single), ("follow_up_10_warm", warm, follow_up),
                ("follow_up_10_cold", cold_router, follow_up),
                ("follow_up_10_off", off_router, follow_up)]
        k = i % len(jobs)
        for name, router, body in jobs[k:] + jobs[:k]:  # rotate: no kind always goes first
            times[name].append(await timed(router, body))
    out: dict[str, Any] = {name: {"median_ms": statistics.median(v), "p99_ms": pct(v, 0.99),
                                  "n": len(v)} for name, v in times.items()}
    base = out["single_turn"]
    for name in ("follow_up_10_warm", "follow_up_10_cold", "follow_up_10_off"):
        out[name]["median_ratio_to_single"] = out[name]["median_ms"] / base["median_ms"]
        out[name]["p99_ratio_to_single"] = out[name]["p99_ms"] / base["p99_ms"]
    off_med = out["follow_up_10_off"]["median_ms"]
    out["conversation_overhead_median_ms"] = out["follow_up_10_warm"]["median_ms"] - off_med
    return out


def data_path(given: Path | None) -> Path:
    if given is not None:
        return given
    for p in DATA_CANDIDATES:
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"no held-out questions at {' or '.join(map(str, DATA_CANDIDATES))}: write them with "
        "`router-svc model heldout --out eval_out/heldout`, or pass --data")


async def eval_conversations(opts: ConversationEvalOptions) -> dict[str, Any]:
    from export.data import load_mmlu

    config = load_config(opts.config or EXAMPLE_CONFIG)
    # A measurement waits for the model rather than fail over (a busy machine, a long queue).
    config = dataclasses.replace(config, triton=dataclasses.replace(
        config.triton, timeout_s=max(config.triton.timeout_s, 60.0)))
    if opts.switch_confidence is not None:
        conv_cfg = dataclasses.replace(config.routing.conversation,
                                       switch_confidence=opts.switch_confidence)
        config = dataclasses.replace(config, routing=dataclasses.replace(
            config.routing, conversation=conv_cfg))
    path = data_path(opts.data)
    examples, _ = load_mmlu(path)
    convs = build_conversations([(e.text, e.category) for e in examples], opts.conversations,
                                opts.turns, opts.topic_change_rate, opts.seed)
    async with served_router(opts, config) as make:
        t = time.perf_counter()
        results = await run_conversations(make(config), convs, opts.concurrency)
        routed_s = time.perf_counter() - t
        latency = await measure_latency(make, config, convs, opts.latency_samples)
    chosen = config.routing.conversation.switch_confidence
    sweep = [replay(config, results, s) for s in SWEEP]
    summary = {
        "data": str(path), "conversations": len(convs), "turns": opts.turns,
        "topic_change_rate": opts.topic_change_rate, "seed": opts.seed,
        "category_threshold": config.classifier.category_model.threshold,
        "switch_confidence": chosen,
        "observed": observed(config, results),
        "replayed": replay(config, results, chosen),
        "without_conversations": replay(config, results, None),
        "latency": latency, "goals": GOALS, "routed_seconds": routed_s,
        "sweep": sweep,
    }
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "conversations.json").write_text(json.dumps(summary, indent=2))
    with (out / "conversation_misses.jsonl").open("w") as f:
        for conv in results:
            for r in conv:
                miss = (r.kind == "follow_up" and r.verdict != "kept") or (
                    r.kind == "topic_change" and r.verdict != "switched")
                if miss:
                    f.write(json.dumps({"kind": r.kind, "text": r.text[:300], "gold": r.gold,
                                        "own": [r.own.category, round(r.own.confidence, 3)],
                                        "verdict": r.verdict, "model": r.model}) + "\n")
    plot_sweep(summary, out / "conversation_sweep.png")
    print_summary(summary)
    return summary


def plot_sweep(s: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["switch_confidence"] for r in s["sweep"]]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(xs, [r["keep_rate"] for r in s["sweep"]], label="follow-ups that keep the model")
    ax.plot(xs, [r["switch_rate"] for r in s["sweep"]], label="topic changes that switch")
    ax.plot(xs, [r["switch_rate_confident"] for r in s["sweep"]], linestyle=":",
            label="... of which the question alone is confident")
    ax.axhline(GOALS["keep"], color="C0", linestyle="--", linewidth=0.8)
    ax.axhline(GOALS["switch"], color="C1", linestyle="--", linewidth=0.8)
    ax.axhline(s["without_conversations"]["keep_rate"], color="grey", linestyle="-.",
               linewidth=0.8, label="follow-ups that keep, without conversations")
    ax.axvline(s["switch_confidence"], color="black", linewidth=0.8, label="chosen")
    ax.axvline(s["category_threshold"], color="grey", linewidth=0.6, linestyle=":")
    ax.set_xlabel("routing.conversation.switch_confidence (at least the category threshold)")
    ax.set_ylabel("share of turns")
    ax.set_ylim(0, 1.02)
    ax.set_title("One model per conversation: keep and switch vs threshold")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_summary(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    o, base, lat = s["observed"], s["without_conversations"], s["latency"]

    def goal(v: float, g: float, low: bool = False) -> str:
        ok = v <= g if low else v >= g
        return "[green]met[/]" if ok else "[red]missed[/]"

    t = Table(title=f"conversations ({s['conversations']} x {s['turns']} turns, "
                    f"switch_confidence {s['switch_confidence']})")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_column("goal", justify="right")
    t.add_row(f"follow-ups that keep the model (n={o['follow_ups']})",
              f"{o['keep_rate']:.3f}", f">= {GOALS['keep']} {goal(o['keep_rate'], GOALS['keep'])}")
    t.add_row("  same, without conversations", f"{base['keep_rate']:.3f}", "")
    t.add_row(f"topic changes that switch (n={o['topic_changes']})", f"{o['switch_rate']:.3f}",
              f">= {GOALS['switch']} {goal(o['switch_rate'], GOALS['switch'])}")
    t.add_row("  of those confident alone (n="
              f"{s['replayed']['confident_topic_changes']})",
              f"{s['replayed']['switch_rate_confident']:.3f}", "")
    t.add_row("  routed as the new question alone", f"{o['topic_change_model_as_alone']:.3f}",
              "")
    single = lat["single_turn"]
    t.add_row("single-turn request, median / p99",
              f"{single['median_ms']:.1f} / {single['p99_ms']:.1f} ms", "")
    for name, label in (("follow_up_10_warm", "10-turn follow-up"),
                        ("follow_up_10_cold", "  memory cold (other replica)"),
                        ("follow_up_10_off", "  conversations off")):
        v = lat[name]
        t.add_row(f"{label}, median / p99",
                  f"{v['median_ms']:.1f} / {v['p99_ms']:.1f} ms "
                  f"({v['median_ratio_to_single']:.2f}x / {v['p99_ratio_to_single']:.2f}x)",
                  f"<= {GOALS['latency_ratio']}x "
                  f"{goal(v['median_ratio_to_single'], GOALS['latency_ratio'], low=True)}"
                  if name == "follow_up_10_warm" else "")
    t.add_row("conversation logic, median extra vs off",
              f"{lat['conversation_overhead_median_ms']:+.2f} ms", "")
    Console().print(t)


def main(opts: ConversationEvalOptions) -> int:
    s = asyncio.run(eval_conversations(opts))
    o, lat = s["observed"], s["latency"]["follow_up_10_warm"]
    print(f"keep_rate={o['keep_rate']:.3f} switch_rate={o['switch_rate']:.3f} "
          f"follow_up_10_median_ratio={lat['median_ratio_to_single']:.2f} "
          f"p99_ratio={lat['p99_ratio_to_single']:.2f}")
    return 0
