"""Classification latency by prompt length, fp32 and int8 served, side by side in one run.

What: the whole classification of one prompt through the real router, ``POST /api/v1/classify``
(body ``{"model": "auto", "messages": [{"role": "user", "content": TEXT}]}``: tokenising into
PII windows, the router's batcher, the Triton call(s), decoding category, PII and embedding,
the routing decision, the JSON answer), one request at a time, for prompts of about 32, 128,
512 and 2,000 tokens (``--lengths``). The goal it checks: a ~500-token prompt in at most
50 ms p50 on a 2-core CPU.

Variants, each its own stack (the embedded CPU Triton and ``router-svc serve``, each in its own
process, with the example config; semantic cache off, ``classifier.pii_model.memory_entries``
0):

- ``fp32``: Triton serves ``model.onnx``, default PII windows (``window_tokens`` 144,
  ``window_stride`` 128, from the example config): the baseline unless ``--before``;
- ``int8``: Triton serves ``model.int8.onnx`` (quantised from ``model.onnx`` first if missing,
  ``router_svc.ops.up.ensure_int8``), same windows;
- ``--before DIR``: the router of another checkout (an earlier commit) serving fp32 in
  ``--before-windows``, against the same Triton setup: the baseline, first;
- ``--windows 256/224,...``: more window settings (``window_tokens/window_stride``), each for
  every precision of ``--precisions``; named e.g. ``int8 256/224``.

How: every stack is started before anything is measured and stays up; only the variant whose
turn it is gets requests (one at a time, over one kept-alive connection), the others get none
meanwhile (starting and stopping stacks per turn would cost minutes and disturb the caches of
the one measured). Variants take turns in rounds, their order reversed every other round
(A B, B A, ...), so a slow drift of a shared machine falls on all of them. In its turn a variant
gets ``--requests-per-round`` prompts of each length, the lengths interleaved (32, 128, 512, 2000,
32, ...). Every variant gets the very same texts in the same order (a paired comparison); within
a variant every text is new (a unique ``Question N:`` prefix and its own run of questions), so
neither the scan memory nor anything else can answer from an earlier request. ``--warmup``
requests per length per variant go first, unmeasured.

Prompts: MMLU-Pro questions (``--data-dir``/mmlu_pro/questions.jsonl, whitespace folded so a
prompt stays one paragraph), concatenated from a random start until the target is reached and
cut at the last word boundary at or below it; tokens counted with the model's
``tokenizer.json`` (``tokenizers``, no truncation, special tokens not counted), the count the
router's windows are laid over. The table gives the texts' mean token count.

Reported per variant and length, pooled over rounds: p50, p99 and mean latency (client-side,
request sent to answer read), p50 and p99 as a ratio to the baseline at the same length, the
median of the per-text ratios to the baseline (same text, same round: the paired figure), ms
per token at p50, and non-200 answers. Output: a Markdown table and a rich table on stdout,
``<out>/classify_latency-<stamp>.csv`` (the table), ``-samples.csv`` (every request),
``.meta.json`` (machine, options, texts) and ``.png`` (p50/p99 by length per variant, log x;
ratios to the baseline), and a last line ``fp32_512_p50_ms=... int8_512_p50_ms=...``.

    python perf/classify_latency.py                          # fp32 and int8, 4 lengths
    python perf/classify_latency.py --windows 256/224 --rounds 5 --requests-per-round 20
    python perf/classify_latency.py --model-dir .work/test-model-bb1b0070c7c5e8b7 \\
        --lengths 32,512 --rounds 1 --requests-per-round 3 --out /tmp/cl_smoke   # smoke
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    DEFAULT_DATA_DIR,
    DEFAULT_MODEL_DIR,
    RESULTS_DIR,
    ROOT,
    Output,
    alternating,
    check_model_dir,
    fmt,
    latency_ms,
    markdown_table,
    median,
    mmlu_questions,
    progress,
    ratio,
    say,
)
from _stack import router_config, start_router

PRECISIONS = ("fp32", "int8")
GOAL_TOKENS = 512  # the "~500-token prompt"
GOAL_P50_MS = 50.0
PATH = "/api/v1/classify"


# ---------------------------------------------------------------- arguments


def default_model_dir() -> Path:
    """The built model if there is one, else the first test model (``.work/test-model-*``)."""
    if (DEFAULT_MODEL_DIR / "model.onnx").is_file():
        return DEFAULT_MODEL_DIR
    tests = sorted(p for p in (ROOT / ".work").glob("test-model-*") if p.is_dir())
    return tests[0] if tests else DEFAULT_MODEL_DIR


def parse_windows(text: str) -> list[tuple[int, int]]:
    """``"128/96,256/224"`` -> [(128, 96), (256, 224)] (window_tokens/window_stride)."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        w, sep, s = part.partition("/")
        if not sep or not w.strip().isdigit() or not s.strip().isdigit():
            raise ValueError(f"{part!r}: use WINDOW/STRIDE, e.g. 256/224")
        window, stride = int(w), int(s)
        if window < 8 or not 1 <= stride <= window:
            raise ValueError(f"{part!r}: need window >= 8 and 1 <= stride <= window")
        out.append((window, stride))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="perf/classify_latency.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=default_model_dir(),
                    help="folder with model.onnx and tokenizer.json; model.int8.onnx is made "
                         "there if missing (default: %(default)s)")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                    help="shared data folder with mmlu_pro/ (default: %(default)s)")
    ap.add_argument("--lengths", default="32,128,512,2000",
                    help="prompt lengths in tokens (default: %(default)s)")
    ap.add_argument("--precisions", default="fp32,int8",
                    help="served models: fp32 (model.onnx), int8 (model.int8.onnx) "
                         "(default: %(default)s)")
    ap.add_argument("--windows", default="",
                    help="more PII window settings WINDOW/STRIDE, comma-separated, e.g. "
                         "128/64,256/224: each a variant for every precision, beside the "
                         "example config's (144/128)")
    ap.add_argument("--before", type=Path,
                    help="a checkout of an earlier commit (e.g. `git worktree add /tmp/before "
                         "COMMIT`): its router, serving fp32 in --before-windows, is one more "
                         "variant and the baseline")
    ap.add_argument("--before-windows", default="128/96",
                    help="that router's PII windows (default: %(default)s, the example "
                         "config's before 144/128)")
    ap.add_argument("--rounds", type=int, default=5, help="(default: %(default)s)")
    ap.add_argument("--requests-per-round", type=int, default=20,
                    help="requests per length per variant in each round (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=3,
                    help="unmeasured requests per length per variant first (default: "
                         "%(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="prompt sampling seed (default: 0)")
    ap.add_argument("--out", "--out-dir", dest="out_dir", type=Path,
                    default=RESULTS_DIR / "classify_latency",
                    help="where CSV, meta JSON, PNG and the work folder go (default: "
                         "%(default)s)")
    ap.add_argument("--tag", default="", help="a label appended to the output file names")
    ap.add_argument("--no-plot", action="store_true", help="skip the PNG")
    args = ap.parse_args(argv)
    try:
        args.length_list = sorted({int(x) for x in args.lengths.split(",") if x.strip()})
        args.window_list = parse_windows(args.windows)
        (args.before_window,) = parse_windows(args.before_windows)
    except ValueError as e:
        ap.error(f"--lengths/--windows: {e}")
    if not args.length_list or args.length_list[0] < 4:
        ap.error("--lengths: positive token counts of at least 4")
    args.precision_list = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if not args.precision_list or not set(args.precision_list) <= set(PRECISIONS):
        ap.error(f"--precisions: a comma list of {', '.join(PRECISIONS)}")
    if args.rounds < 1 or args.requests_per_round < 1 or args.warmup < 0:
        ap.error("--rounds and --requests-per-round at least 1, --warmup at least 0")
    return args


# ---------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    precision: str  # fp32 or int8
    window: int
    stride: int
    default_window: bool
    root: Path | None = None  # the router of another checkout (``--before``)

    @property
    def name(self) -> str:
        if self.root is not None:
            return f"before {self.precision} {self.window}/{self.stride}"
        return self.precision if self.default_window else (
            f"{self.precision} {self.window}/{self.stride}")

    @property
    def key(self) -> str:
        """The name as a summary-line key: ``fp32``, ``int8_w256s224``, ``before``."""
        if self.root is not None:
            return "before"
        return self.precision if self.default_window else (
            f"{self.precision}_w{self.window}s{self.stride}")


def make_variants(precisions: list[str], windows: list[tuple[int, int]],
                  default: tuple[int, int]) -> list[Variant]:
    """Every precision with the default windows, then with each extra setting (default ones
    given again are skipped); fp32 first when it is there (the baseline)."""
    order = sorted(precisions, key=PRECISIONS.index)
    extra = [w for w in dict.fromkeys(windows) if w != default]
    out = [Variant(p, *default, True) for p in order]
    out += [Variant(p, w, s, False) for w, s in extra for p in order]
    return out


# ---------------------------------------------------------------- prompts


@dataclass(frozen=True)
class Text:
    length: int  # the target
    body: bytes  # the request body
    tokens: int  # the text's tokens (no special tokens)
    chars: int


def load_tokenizer(path: Path):
    """The model's tokenizer without its truncation and padding (its file sets both to 128)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_truncation()
    tok.no_padding()
    return tok


def cut_at(tok, text: str, length: int) -> str:
    """``text`` cut after its last whole word within the first ``length`` tokens."""
    enc = tok.encode(text, add_special_tokens=False)
    if len(enc.ids) <= length:
        return text
    words = enc.word_ids
    n = length
    while n > 1 and words[n] is not None and words[n] == words[n - 1]:
        n -= 1  # token n continues the word token n-1 is in: cut before that word
    return text[: enc.offsets[n - 1][1]]


def make_texts(tok, questions: list[str], lengths: list[int], per_length: int,
               seed: int) -> dict[int, list[Text]]:
    """``per_length`` texts per target length, each with a unique prefix ("Question N:") and
    its own random run of questions."""
    rng = random.Random(seed)
    counts = [len(e.ids) for e in tok.encode_batch(questions, add_special_tokens=False)]
    out: dict[int, list[Text]] = {}
    uid = 0
    for length in lengths:
        texts = []
        for _ in range(per_length):
            uid += 1
            parts, have = [f"Question {uid}:"], 4
            i = rng.randrange(len(questions))
            while have < length + 16:  # a little over; cut back to the target below
                parts.append(questions[i % len(questions)])
                have += counts[i % len(questions)]
                i += 1
            text = cut_at(tok, " ".join(parts), length)
            tokens = len(tok.encode(text, add_special_tokens=False).ids)
            body = json.dumps({"model": "auto",
                               "messages": [{"role": "user", "content": text}]}).encode()
            texts.append(Text(length, body, tokens, len(text)))
        out[length] = texts
    return out


# ---------------------------------------------------------------- stacks


@dataclass
class Stack:
    variant: Variant
    host: str
    port: int
    conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes) -> tuple[float, int]:
        """One classification over the kept-alive connection: (seconds, HTTP status; 0 for a
        connection error, after which the next call reconnects)."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        t = time.perf_counter()
        try:
            self.conn.request("POST", PATH, body=body,
                              headers={"Content-Type": "application/json"})
            r = self.conn.getresponse()
            r.read()
            status = r.status
        except (OSError, http.client.HTTPException):
            self.close()
            status = 0
        return time.perf_counter() - t, status

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def start_stack(stack: contextlib.ExitStack, v: Variant, model_dir: Path, work: Path) -> Stack:
    """Triton serving the variant's model and a router with its windows, stopped by
    ``stack``. No backend: classification makes no backend call (the config's URLs point at a
    closed port)."""
    from router_svc.ops.up import served_model_file
    from router_svc.triton.launcher import TritonServer, free_port

    label = v.key.replace("_", "-")
    model_file = served_model_file(model_dir, v.precision == "int8")
    say(f"{v.name}: starting Triton ({model_file}) and the router")
    triton = TritonServer(model_dir, work_dir=work / f"triton-{label}", startup_timeout_s=300,
                          model_file=model_file)
    triton.start()
    stack.callback(triton.stop)
    cfg = router_config(triton.grpc_url, model_dir / "tokenizer.json",
                        "http://127.0.0.1:9/v1", free_port())
    cfg["classifier"]["pii_model"].update(window_tokens=v.window, window_stride=v.stride,
                                          memory_entries=0)
    router, base = start_router(work, cfg, label=f"router-{label}", root=v.root)
    stack.callback(router.stop)
    port = int(base.rsplit(":", 1)[1])
    s = Stack(v, "127.0.0.1", port)
    stack.callback(s.close)
    return s


def default_windows() -> tuple[int, int]:
    """The example config's PII windows (what a router runs unless told otherwise)."""
    pm = router_config("127.0.0.1:1", Path("tokenizer.json"), "http://127.0.0.1:1/v1",
                       1)["classifier"]["pii_model"]
    return int(pm["window_tokens"]), int(pm["window_stride"])


# ---------------------------------------------------------------- measuring


@dataclass
class Sample:
    round: int  # -1: warm-up
    variant: str
    length: int
    index: int  # the text's index at that length (the same text for every variant)
    tokens: int
    latency_s: float
    status: int


def interleaved(lengths: list[int], indices: range) -> list[tuple[int, int]]:
    """(length, index) for a turn: the lengths in turn, 32, 128, 512, 2000, 32, ..."""
    return [(length, i) for i in indices for length in lengths]


def measure(stacks: list[Stack], texts: dict[int, list[Text]], args) -> list[Sample]:
    lengths, rpr, warm = args.length_list, args.requests_per_round, args.warmup
    plan = alternating([s.variant.name for s in stacks], args.rounds)
    by_name = {s.variant.name: s for s in stacks}
    total = len(stacks) * len(lengths) * (warm + args.rounds * rpr)
    samples: list[Sample] = []
    with progress() as prog:
        task = prog.add_task("warm-up", total=total)
        turns = [(-1, s.variant.name) for s in stacks] + plan
        for rnd, name in turns:
            first = 0 if rnd < 0 else warm + rnd * rpr
            count = warm if rnd < 0 else rpr
            what = "warm-up" if rnd < 0 else f"round {rnd + 1}/{args.rounds}"
            prog.update(task, description=f"{what}: {name}")
            stack = by_name[name]
            for length, i in interleaved(lengths, range(first, first + count)):
                t = texts[length][i]
                took, status = stack.post(t.body)
                samples.append(Sample(rnd, name, length, i, t.tokens, took, status))
                prog.advance(task)
            if rnd >= 0:
                say(turn_line(samples, rnd, name, lengths))
    return samples


def turn_line(samples: list[Sample], rnd: int, name: str, lengths: list[int]) -> str:
    parts = [f"round {rnd + 1} {name}:"]
    for length in lengths:
        ok = [s.latency_s for s in samples
              if s.round == rnd and s.variant == name and s.length == length
              and s.status == 200]
        parts.append(f"{length} tok p50 {latency_ms(ok)['p50_ms']:.1f} ms;")
    return " ".join(parts)


# ---------------------------------------------------------------- summary


def summarize(samples: list[Sample], variants: list[Variant], lengths: list[int],
              texts: dict[int, list[Text]]) -> list[dict[str, Any]]:
    """One row per variant and length, pooled over rounds; ratios to the first variant."""
    measured = [s for s in samples if s.round >= 0]
    base = variants[0].name
    lat = {(s.variant, s.length, s.round, s.index): s.latency_s
           for s in measured if s.status == 200}
    rows = []
    for v in variants:
        for length in lengths:
            mine = [s for s in measured if s.variant == v.name and s.length == length]
            ok = [s.latency_s for s in mine if s.status == 200]
            bad = Counter(str(s.status) for s in mine if s.status != 200)
            stats = latency_ms(ok)
            paired = [lat[(v.name, length, s.round, s.index)] / b for s in mine
                      if (b := lat.get((base, length, s.round, s.index)))
                      and (v.name, length, s.round, s.index) in lat]
            used = {s.index for s in mine}
            tokens = [texts[length][i].tokens for i in used]
            mean_tokens = sum(tokens) / len(tokens) if tokens else float("nan")
            rows.append({
                "variant": v.name, "precision": v.precision,
                "window": f"{v.window}/{v.stride}", "length": length,
                "tokens": mean_tokens, "n": len(ok), "non_200": sum(bad.values()),
                "non_200_by_status": " ".join(f"{k}:{n}" for k, n in bad.items()),
                "p50_ms": stats["p50_ms"], "p99_ms": stats["p99_ms"],
                "mean_ms": stats["mean_ms"], "ms_per_token": ratio(stats["p50_ms"], mean_tokens),
                "paired_x_base": median(paired),
            })
    by_key = {(r["variant"], r["length"]): r for r in rows}
    for r in rows:
        b = by_key[(base, r["length"])]
        r["p50_x_base"] = ratio(r["p50_ms"], b["p50_ms"])
        r["p99_x_base"] = ratio(r["p99_ms"], b["p99_ms"])
        r["goal"] = ("" if r["length"] != GOAL_TOKENS
                     else "met" if r["p50_ms"] <= GOAL_P50_MS else "not met")
    return rows


COLUMNS = [("variant", "variant"), ("length", "length"), ("tokens", "tokens"), ("n", "n"),
           ("non_200", "non-200"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
           ("mean_ms", "mean ms"), ("p50_x_base", "p50 x base"), ("p99_x_base", "p99 x base"),
           ("paired_x_base", "paired x base"), ("ms_per_token", "ms/token"),
           ("goal", f"p50 <= {GOAL_P50_MS:g} ms")]
DIGITS = {"p50_ms": 2, "p99_ms": 2, "mean_ms": 2, "ms_per_token": 3, "tokens": 0}


def rich_table(rows: list[dict[str, Any]], title: str):
    from rich.table import Table

    table = Table(title=title)
    last = max(r["length"] for r in rows)
    for key, head in COLUMNS:
        table.add_column(head, justify="left" if key in ("variant", "goal") else "right")
    for r in rows:
        cells = []
        for key, _ in COLUMNS:
            d = DIGITS.get(key, 3 if "x_" in key else 1)
            cells.append(fmt(r[key], d) if key != "tokens" else f"{r[key]:.0f}")
        table.add_row(*cells, end_section=r["length"] == last)  # a line after each variant
    return table


def plot(path: Path, rows: list[dict[str, Any]], variants: list[Variant]) -> Path | None:
    """p50 (solid) and p99 (dashed) by prompt length per variant, log x and y; on the right
    the p50 as a ratio to the baseline at each length."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter
    except ImportError:
        say("matplotlib is not installed: no plot (pip install -e '.[perf]')")
        return None
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    base = variants[0].name
    for i, v in enumerate(variants):
        pts = sorted((r for r in rows if r["variant"] == v.name), key=lambda r: r["length"])
        x = [r["tokens"] for r in pts]
        ax.plot(x, [r["p50_ms"] for r in pts], "o-", color=f"C{i}", label=f"{v.name} p50")
        ax.plot(x, [r["p99_ms"] for r in pts], "s--", color=f"C{i}", alpha=0.6,
                label=f"{v.name} p99")
        ax2.plot(x, [r["p50_x_base"] for r in pts], "o-", color=f"C{i}", label=v.name)
    ax.axhline(GOAL_P50_MS, color="red", lw=1, ls=":",
               label=f"goal: p50 <= {GOAL_P50_MS:g} ms at ~{GOAL_TOKENS} tokens")
    ax.plot([GOAL_TOKENS], [GOAL_P50_MS], "r*", markersize=12)
    ticks = sorted({r["length"] for r in rows})
    for a in (ax, ax2):
        a.set_xscale("log")
        a.set_xticks(ticks, [str(t) for t in ticks])
        a.xaxis.set_minor_formatter(NullFormatter())
        a.set_xlabel("prompt tokens (log)")
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=8)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("latency per request (ms, log)")
    ax.set_title("POST /api/v1/classify, one request at a time")
    ax2.axhline(1.0, color="grey", lw=1)
    ax2.set_ylabel(f"p50 ratio to {base}")
    ax2.set_title(f"p50 ratio to {base} (same run, same length)")
    fig.suptitle("Classification latency by prompt length")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_line(rows: list[dict[str, Any]], variants: list[Variant]) -> str:
    keys = {v.name: v.key for v in variants}
    return " ".join(f"{keys[r['variant']]}_{r['length']}_p50_ms={r['p50_ms']:.2f}"
                    for r in rows)


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_model_dir(args.model_dir)
    variants = make_variants(args.precision_list, args.window_list, default_windows())
    if args.before is not None:
        variants.insert(0, Variant("fp32", *args.before_window, False, root=args.before))
    tok = load_tokenizer(args.model_dir / "tokenizer.json")
    per_length = args.warmup + args.rounds * args.requests_per_round
    texts = make_texts(tok, mmlu_questions(args.data_dir), args.length_list, per_length,
                       args.seed)
    info: dict[str, Any] = {
        "variants": [v.name for v in variants], "baseline": variants[0].name,
        "texts_per_length": per_length,
        "tokens_per_length": {n: {"min": min(t.tokens for t in ts),
                                  "max": max(t.tokens for t in ts),
                                  "mean_chars": sum(t.chars for t in ts) / len(ts)}
                              for n, ts in texts.items()}}
    out = Output("classify_latency", args, info)
    for n, ts in texts.items():
        say(f"{n} tokens: {len(ts)} texts, {info['tokens_per_length'][n]['min']}-"
            f"{info['tokens_per_length'][n]['max']} tokens")
    work = Path(tempfile.mkdtemp(prefix="perf-classify-latency-", dir=out.dir))
    info["work_dir"] = str(work)
    with contextlib.ExitStack() as stack:
        stacks = [start_stack(stack, v, args.model_dir, work) for v in variants]
        samples = measure(stacks, texts, args)
    rows = summarize(samples, variants, args.length_list, texts)
    out.write_csv(rows)
    out.write_csv([{"round": s.round, "variant": s.variant, "length": s.length,
                    "text": s.index, "tokens": s.tokens, "latency_ms": s.latency_s * 1000,
                    "status": s.status} for s in samples], "-samples.csv")
    title = (f"POST {PATH}, one request at a time: {args.rounds} round(s) x "
             f"{args.requests_per_round} requests per length per variant; base = "
             f"{variants[0].name}")
    print(f"## {title}\n")
    print(markdown_table(rows, COLUMNS, digits=DIGITS))
    from rich.console import Console

    Console(width=200).print(rich_table(rows, title))
    if out.plot:
        plot(out.path(".png"), rows, variants)
    out.finish(**info)
    print(summary_line(rows, variants))
    return 1 if any(r["non_200"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
