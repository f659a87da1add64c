"""Shared pieces of the perf/ scripts: prompts, token rows, statistics, rounds, output.

Every script measures a baseline and its candidates in the same run, alternating them in
rounds (A B A B ...) so that slow drifts of a shared machine fall on both; figures are medians
over rounds, latencies as p50 and p99, and every figure is also given as a ratio to the
baseline. Results go to ``perf/results/<script>-<timestamp>.csv`` (plus a ``.meta.json`` with
the machine and the command line, and PNG plots), a Markdown table goes to stdout, progress to
stderr.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # router_svc / export importable without an install
    sys.path.insert(0, str(ROOT))

DEFAULT_DATA_DIR = Path(os.environ.get("ROUTER_SVC_DATA", ROOT.parent / "shared" / "data"))
DEFAULT_MODEL_DIR = ROOT / "model_repository" / "semantic_router" / "1"
RESULTS_DIR = ROOT / "perf" / "results"


# ---------------------------------------------------------------- arguments


def add_model_args(p, *, prompts: bool = True, int8: bool = False) -> None:
    """``--model-dir`` and the prompt-mix options shared by every script; ``--int8`` for
    the scripts that start the embedded Triton."""
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR,
                   help="folder with model.onnx and tokenizer.json (default: %(default)s)")
    if int8:
        p.add_argument("--int8", action="store_true",
                       help="the embedded Triton serves model.int8.onnx from --model-dir")
    if not prompts:
        return
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help="shared data folder with mmlu_pro/ and pii/ (default: %(default)s)")
    p.add_argument("--prompts", type=int, default=1024,
                   help="number of distinct prompts in the mix (default: %(default)s)")
    p.add_argument("--pii-fraction", type=float, default=0.3,
                   help="share of PII sentences in the mix, the rest MMLU-Pro questions "
                        "(default: %(default)s)")
    p.add_argument("--max-len", type=int, default=256,
                   help="truncate token rows to this many tokens, [CLS]/[SEP] included; the "
                        "router's PII window is 256 (default: %(default)s)")
    p.add_argument("--seq-len", type=int, default=None,
                   help="pad/truncate every row to exactly this many tokens (fixed shape, e.g. 64 "
                        "for the GPU target); default: the prompts' own lengths")
    p.add_argument("--seed", type=int, default=0, help="prompt sampling seed (default: 0)")


def add_output_args(p) -> None:
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR,
                   help="where CSV, meta JSON and PNG files go (default: %(default)s)")
    p.add_argument("--tag", default="", help="a label appended to the output file names")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plots")


def int_list(text: str) -> list[int]:
    """``"1,8,32"`` or perf_analyzer's ``"start:end[:step]"`` (inclusive, linear)."""
    return [int(v) for v in num_list(text)]


def num_list(text: str) -> list[float]:
    text = text.strip()
    if ":" in text:
        parts = [float(x) for x in text.split(":")]
        if len(parts) not in (2, 3):
            raise ValueError(f"{text!r}: use start:end or start:end:step")
        start, end = parts[0], parts[1]
        step = parts[2] if len(parts) == 3 else 1.0
        if step <= 0 or end < start:
            raise ValueError(f"{text!r}: need start <= end and step > 0")
        out, v = [], start
        while v <= end + 1e-9:
            out.append(v)
            v += step
        return out
    return [float(x) for x in text.split(",") if x.strip()]


def check_model_dir(model_dir: Path, need_onnx: bool = True) -> None:
    """Exit with a clear message unless ``model_dir`` has ``tokenizer.json`` (and
    ``model.onnx`` when ``need_onnx``)."""
    wanted = ("model.onnx", "tokenizer.json") if need_onnx else ("tokenizer.json",)
    missing = [f for f in wanted if not (model_dir / f).is_file()]
    if missing:
        sys.exit(
            f"error: {model_dir} has no {' or '.join(missing)}. Build the model "
            f"(`router-svc model build`), or for a smoke test build the tiny one:\n"
            f"  python -c \"from export.tiny import build_tiny_model; "
            f"build_tiny_model(__import__('pathlib').Path('.work/tiny'))\"\n"
            f"and pass --model-dir .work/tiny"
        )


# ---------------------------------------------------------------- prompts


@dataclass(frozen=True)
class Prompt:
    text: str
    source: str  # "mmlu" or "pii"


def load_prompts(data_dir: Path, n: int, pii_fraction: float = 0.3, seed: int = 0) -> list[Prompt]:
    """A deterministic mix of real prompts: MMLU-Pro questions and presidio PII sentences."""
    mmlu_path = data_dir / "mmlu_pro" / "questions.jsonl"
    pii_path = data_dir / "pii" / "synth_dataset_v2.json"
    for p in (mmlu_path, pii_path):
        if not p.is_file():
            sys.exit(f"error: {p} not found; pass --data-dir (the shared data folder)")
    questions = []
    with open(mmlu_path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                q = json.loads(line).get("question")
                if isinstance(q, str) and q.strip():
                    questions.append(q.strip())
    pii = [r["full_text"] for r in json.loads(pii_path.read_text(encoding="utf-8"))
           if isinstance(r, dict) and isinstance(r.get("full_text"), str) and r["full_text"]]
    rng = random.Random(seed)
    n_pii = round(n * pii_fraction)
    picks = [Prompt(t, "pii") for t in _sample(rng, pii, n_pii)]
    picks += [Prompt(t, "mmlu") for t in _sample(rng, questions, n - n_pii)]
    rng.shuffle(picks)
    return picks


def _sample(rng: random.Random, items: list[str], k: int) -> list[str]:
    if k <= len(items):
        return rng.sample(items, k)
    return [rng.choice(items) for _ in range(k)]  # more than there are: repeats


@dataclass
class Rows:
    """Tokenised prompts: one model row each (``[CLS] ... [SEP]``), optionally fixed length."""

    ids: list[np.ndarray]  # int64 [len_i]
    mask: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> list[int]:
        return [int(m.sum()) for m in self.mask]

    def describe(self) -> str:
        n = np.array(self.lengths)
        shape = {len(i) for i in self.ids}
        fixed = f", fixed shape {shape.pop()}" if len(shape) == 1 else ""
        return (f"{len(n)} rows, tokens p50 {np.median(n):.0f} mean {n.mean():.1f} "
                f"max {n.max()}{fixed}")


def token_rows(tokenizer_json: Path, texts: Sequence[str], max_len: int = 256,
               seq_len: int | None = None) -> Rows:
    """The first window of each text, as the router's classifier makes it."""
    from router_svc.classify.tokenization import TextTokenizer

    tok = TextTokenizer(tokenizer_json)
    limit = seq_len or max_len
    wins = tok.truncated(list(texts), limit)
    ids_out, mask_out = [], []
    for w in wins:
        ids = np.asarray(w.ids, dtype=np.int64)
        mask = np.ones_like(ids)
        if seq_len is not None and len(ids) < seq_len:
            pad = seq_len - len(ids)
            ids = np.concatenate([ids, np.full(pad, tok.pad_id, dtype=np.int64)])
            mask = np.concatenate([mask, np.zeros(pad, dtype=np.int64)])
        ids_out.append(ids)
        mask_out.append(mask)
    return Rows(ids_out, mask_out)


def pad_batch(ids: Sequence[np.ndarray], mask: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Pad to the longest row, as the router's batcher and the Triton model do."""
    n = max(len(a) for a in ids)
    out_i = np.zeros((len(ids), n), dtype=np.int64)
    out_m = np.zeros((len(ids), n), dtype=np.int64)
    for r, (a, m) in enumerate(zip(ids, mask, strict=True)):
        out_i[r, : len(a)] = a
        out_m[r, : len(m)] = m
    return out_i, out_m


def make_batches(rows: Rows, batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Consecutive rows in groups of ``batch`` (wrapping around), each padded to its longest."""
    n = len(rows)
    count = max(1, n // batch) if n >= batch else 1
    out = []
    for b in range(count):
        idx = [(b * batch + k) % n for k in range(batch)]
        out.append(pad_batch([rows.ids[i] for i in idx], [rows.mask[i] for i in idx]))
    return out


# ---------------------------------------------------------------- statistics


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float(
        "nan")


def latency_ms(lat_s: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and mean of latencies given in seconds, in milliseconds."""
    if not len(lat_s):
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan"),
                "mean_ms": float("nan")}
    a = np.asarray(lat_s, dtype=np.float64) * 1000
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


def median(values: Iterable[float]) -> float:
    vals = [v for v in values if v == v]  # drop NaN
    return statistics.median(vals) if vals else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b and b == b and a == a else float("nan")


def alternating(names: Sequence[str], rounds: int) -> list[tuple[int, str]]:
    """(round, name) in A B A B order, reversed every other round (A B, B A, ...) so neither
    side always runs first after a pause."""
    out = []
    for r in range(rounds):
        order = list(names) if r % 2 == 0 else list(reversed(names))
        out += [(r, n) for n in order]
    return out


# ---------------------------------------------------------------- machine and output


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, timeout=5).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def gpu_name() -> str | None:
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                           text=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "host": platform.node(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "commit": git_commit(),
        "loadavg_1m_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    gpu = gpu_name()
    if gpu:
        info["gpu"] = gpu
    for mod in ("onnxruntime", "tritonclient", "aiohttp", "numpy"):
        try:
            from importlib.metadata import version

            info[mod] = version(mod)
        except Exception:
            pass
    return info


class Output:
    """One run's output files: ``<out>/<script>-<stamp>[-tag].{csv,meta.json,*.png}``."""

    def __init__(self, script: str, args, extra_meta: dict[str, Any] | None = None):
        self.dir = Path(args.out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        tag = f"-{args.tag}" if getattr(args, "tag", "") else ""
        self.stem = f"{script}-{stamp}{tag}"
        self.plot = not getattr(args, "no_plot", False)
        self.meta = {"script": script,
                     "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
                     "args": {k: str(v) for k, v in vars(args).items()},
                     "machine": machine_info(), **(extra_meta or {})}
        self.files: list[Path] = []
        load = self.meta["machine"].get("loadavg_1m_at_start")
        cpus = self.meta["machine"].get("cpus") or 1
        busy = f" (busy: load {load:.1f} on {cpus} CPUs: numbers will be noisy)" if (
            load is not None and load > 0.5 * cpus) else ""
        m = self.meta["machine"]
        say(f"{script}: {m['cpu']} x{cpus}{', ' + m['gpu'] if 'gpu' in m else ''}, "
            f"commit {m['commit']}{busy}")

    def path(self, suffix: str) -> Path:
        p = self.dir / f"{self.stem}{suffix}"
        self.files.append(p)
        return p

    def write_csv(self, rows: list[dict[str, Any]], suffix: str = ".csv") -> Path:
        p = self.path(suffix)
        cols: list[str] = []
        for r in rows:
            cols += [k for k in r if k not in cols]
        with open(p, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            for r in rows:
                w.writerow({k: _csv_value(v) for k, v in r.items()})
        return p

    def finish(self, **extra: Any) -> None:
        self.meta.update(extra)
        self.meta["files"] = [str(f) for f in self.files]
        p = self.dir / f"{self.stem}.meta.json"
        p.write_text(json.dumps(self.meta, indent=2, default=str))
        print()
        for f in [*self.files, p]:
            print(f"- `{_rel(f)}`")


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fmt(v: Any, digits: int = 1) -> str:
    if isinstance(v, float):
        if v != v:
            return "-"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if digits == 1 and abs(v) < 10:
            return f"{v:.2f}"  # small latencies: 0.23 ms, not 0.2
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]] | None = None,
                   digits: dict[str, int] | None = None) -> str:
    """``columns``: (key, heading); ratio columns (``x_``/``ratio``) get 2-3 decimals."""
    if not rows:
        return "(no rows)"
    if columns is None:
        columns = [(k, k) for k in rows[0]]
    digits = digits or {}

    def cell(k: str, v: Any) -> str:
        d = digits.get(k, 3 if any(s in k for s in ("ratio", "share", "x_")) else 1)
        return fmt(v, d)

    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "| " + " | ".join("---:" if isinstance(rows[0].get(k), (int, float)) else "---"
                            for k, _ in columns) + " |"
    body = ["| " + " | ".join(cell(k, r.get(k, "")) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


# ---------------------------------------------------------------- progress


def progress():
    """A rich progress bar on stderr (the Markdown table owns stdout)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=False)


# ---------------------------------------------------------------- plots


def plot_curves(path: Path, title: str, series: dict[str, list[dict[str, float]]],
                baseline: str, load_key: str, load_label: str,
                tput_key: str = "throughput", tput_label: str = "throughput (/s)") -> Path | None:
    """Throughput against latency (p50 solid, p99 dashed) per series, and on the right the
    same curves as ratios to ``baseline`` at each load point (throughput and p99)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib is not installed: no plot (pip install -e '.[perf]')")
        return None
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    base = {r[load_key]: r for r in series.get(baseline, [])}
    for i, (name, pts) in enumerate(series.items()):
        color = f"C{i}"
        pts = sorted(pts, key=lambda r: r[load_key])
        x = [r[tput_key] for r in pts]
        ax.plot(x, [r["p50_ms"] for r in pts], "o-", color=color, label=f"{name} p50")
        ax.plot(x, [r["p99_ms"] for r in pts], "s--", color=color, label=f"{name} p99",
                alpha=0.7)
        if base and name != baseline:
            common = [r for r in pts if r[load_key] in base]
            lx = [r[load_key] for r in common]
            ax2.plot(lx, [ratio(r[tput_key], base[r[load_key]][tput_key]) for r in common],
                     "o-", color=color, label=f"{name} throughput")
            ax2.plot(lx, [ratio(r["p99_ms"], base[r[load_key]]["p99_ms"]) for r in common],
                     "s--", color=color, alpha=0.7, label=f"{name} p99 latency")
    ax.set_xlabel(tput_label)
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("absolute")
    ax2.axhline(1.0, color="grey", lw=1)
    ax2.set_xlabel(load_label)
    ax2.set_ylabel(f"ratio to {baseline}")
    ax2.grid(True, alpha=0.3)
    if ax2.lines[1:]:
        ax2.legend(fontsize=8)
    ax2.set_title(f"ratio to {baseline} (same run, same load)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bars(path: Path, title: str, groups: list[str], series: dict[str, list[float]],
              ylabel: str, baseline: str, target: float | None = None) -> Path | None:
    """Grouped bars (absolute) and the same as ratios to ``baseline`` on the right (with a
    dotted ``target`` line where one is given)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib is not installed: no plot (pip install -e '.[perf]')")
        return None
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    n = len(series)
    width = 0.8 / max(1, n)
    xs = np.arange(len(groups))
    base = series.get(baseline)
    for i, (name, vals) in enumerate(series.items()):
        ax.bar(xs + i * width, vals, width, label=name, color=f"C{i}")
        if base is not None:
            ax2.bar(xs + i * width, [ratio(v, b) for v, b in zip(vals, base, strict=True)],
                    width, label=name, color=f"C{i}")
    ax2.axhline(1.0, color="grey", lw=1)
    if target is not None:
        ax2.axhline(target, color="red", lw=1, ls=":", label=f"target {target:g}")
    for a in (ax, ax2):
        a.set_xticks(xs + width * (n - 1) / 2, groups)
        a.legend(fontsize=8)
        a.grid(True, axis="y", alpha=0.3)
    ax.set_ylabel(ylabel)
    ax.set_title("absolute")
    ax2.set_ylabel(f"ratio to {baseline}")
    ax2.set_title(f"ratio to {baseline} (same run)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def mmlu_questions(data_dir: Path) -> list[str]:
    path = data_dir / "mmlu_pro" / "questions.jsonl"
    if not path.is_file():
        sys.exit(f"error: {path} not found; pass --data-dir (the shared data folder)")
    """MMLU-Pro question texts, whitespace folded (one paragraph each); exits if missing."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            q = json.loads(line).get("question") if line.strip() else None
            if isinstance(q, str) and q.strip():
                out.append(" ".join(q.split()))  # one line each: the prompt stays one paragraph
    return out
