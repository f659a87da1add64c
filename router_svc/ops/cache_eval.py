"""How often would the semantic cache hand out a wrong answer? Measured on labelled pairs.

Each pair (a, b) is read as: the cache holds ``a``'s answer and ``b`` arrives. At threshold t
it is a hit when similarity(a, b) >= t and the cache's hit verifier (``texts_compatible``,
``router_svc.cache.verify``: numbers, negation, swapped arguments, changed names, long prompts
compared exactly) lets it through, and a hit is right when the pair is a paraphrase (MRPC
label 1, STS score >= 4). Precision is the share of hits that are right (what users of the
cache care about: wrong answers served); recall is the share of paraphrases that hit.

A second, built-in case checks long prompts: pairs of prompts that share a long generic
preamble (~200 tokens) and differ only in their document or question (must never hit: the
embedding puts them near 1.0), and the same prompt with whitespace changes (may hit); its
precision and recall are printed before the summary line, which then ends with
``long_precision=... long_recall=...``.

``router-svc eval cache --pairs FILE.tsv`` embeds through the served model; this module is
embedder-agnostic (``evaluate_pairs`` takes an async ``embed`` function). ``python -m
router_svc.ops.cache_eval --pairs FILE --onnx-dir DIR`` runs offline with onnxruntime on the same
``model.onnx`` (its ``embedding`` output) and ``tokenizer.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from router_svc.cache.store import texts_compatible
from router_svc.ops.pairs import Pair, load_pairs
from router_svc.ops.up import ServedModelOptions

Embed = Callable[[list[str]], Awaitable[np.ndarray]]
DEFAULT_THRESHOLDS = tuple(round(0.5 + 0.01 * i, 2) for i in range(50))  # 0.50 .. 0.99
TABLE_THRESHOLDS = (0.7, 0.75, 0.8, 0.82, 0.84, 0.86, 0.88, 0.9, 0.92, 0.94, 0.96, 0.98)


@dataclass(frozen=True)
class CacheEvalOptions:
    """``router-svc eval cache``'s options; the defaults are the command line's."""

    pairs: Path  # labelled pairs: an STS-B or MRPC style TSV
    threshold: float | None = None  # the threshold to report; None: the config default
    min_precision: float = 0.95  # precision the suggested threshold must reach
    concurrency: int = 32  # texts embedded at once through Triton
    out: Path = Path("eval_out")  # where the plot goes
    served: ServedModelOptions = field(default_factory=ServedModelOptions)


@dataclass(frozen=True)
class SweepRow:
    threshold: float
    precision: float  # hits that are paraphrases / hits (1.0 when there are no hits)
    recall: float  # paraphrases that hit / paraphrases
    hits: int
    true_hits: int
    positives: int


def sweep(similarities: np.ndarray, labels: np.ndarray,
          thresholds: Iterable[float] = DEFAULT_THRESHOLDS) -> list[SweepRow]:
    """Precision and recall of "hit when similarity >= t" for each threshold t."""
    sims = np.asarray(similarities, dtype=np.float64).reshape(-1)
    lab = np.asarray(labels, dtype=bool).reshape(-1)
    if sims.shape != lab.shape:
        raise ValueError(f"{sims.size} similarities but {lab.size} labels")
    positives = int(lab.sum())
    rows = []
    for t in thresholds:
        hit = sims >= t
        hits, tp = int(hit.sum()), int((hit & lab).sum())
        rows.append(SweepRow(float(t), tp / hits if hits else 1.0,
                             tp / positives if positives else 0.0, hits, tp, positives))
    return rows


def choose_threshold(rows: Sequence[SweepRow], min_precision: float = 0.95,
                     min_hits: int = 20) -> SweepRow | None:
    """The lowest threshold whose precision, and that of every higher threshold, is at least
    ``min_precision`` (so raising it a little never makes things worse); rows with fewer than
    ``min_hits`` hits are too thin to judge and cannot be chosen. None if no row qualifies."""
    best = None
    for row in sorted(rows, key=lambda r: r.threshold, reverse=True):
        if row.hits < min_hits:
            continue
        if row.precision < min_precision:
            break
        best = row
    return best


def choose_default(rows_by_set: Mapping[str, Sequence[SweepRow]], min_precision: float = 0.95,
                   min_hits: int = 20) -> float | None:
    """One threshold for several development sets: the highest of each set's
    ``choose_threshold``, so precision holds on every set, not only on their pooled sum
    (where the largest set would drown out the others). None if some set never qualifies."""
    chosen = [choose_threshold(rows, min_precision, min_hits) for rows in rows_by_set.values()]
    if not chosen or any(c is None for c in chosen):
        return None
    return max(c.threshold for c in chosen if c is not None)


def row_at(rows: Sequence[SweepRow], threshold: float) -> SweepRow:
    return min(rows, key=lambda r: abs(r.threshold - threshold))


@dataclass
class CacheEvalReport:
    source: str
    pairs: int
    positives: int
    threshold: float
    at_threshold: SweepRow
    rows: list[SweepRow]
    suggested: SweepRow | None  # lowest threshold with precision >= min_precision
    min_precision: float
    guarded: int = 0  # pairs the text guard would never let hit
    wrong_hits: list[tuple[float, str, str]] = field(default_factory=list)  # most similar
    long_prompts: LongPromptReport | None = None  # the long-prompt case, when run

    def summary_line(self) -> str:
        r = self.at_threshold
        line = f"threshold={r.threshold:.2f} precision={r.precision:.2f} recall={r.recall:.2f}"
        if self.long_prompts is not None:
            lp = self.long_prompts.at_threshold
            line += f" long_precision={lp.precision:.2f} long_recall={lp.recall:.2f}"
        return line


@dataclass
class LongPromptReport:
    """The long-prompt case at one threshold: shared-preamble pairs (must miss) and the same
    prompt with whitespace changes (may hit)."""

    at_threshold: SweepRow  # with the guard
    unguarded: SweepRow  # similarity alone, for comparison
    negatives: int
    median_negative_similarity: float


def similarities(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity (inner product after L2 normalisation)."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(axis=1)


# --------------------------------------------------------------------------- long prompts

# A generic preamble of ~200 tokens, the kind a client puts before every document it sends.
LONG_PREAMBLE = (
    "You are a careful, precise assistant working for the documentation team of a mid-sized "
    "software company. Your task is to read the material below and answer the question that "
    "follows it. Follow these instructions exactly. Answer in plain English, in complete "
    "sentences, and keep the answer short: three to five sentences unless the question asks "
    "for a list. Base the answer only on the material given; if the material does not contain "
    "the answer, say so plainly instead of guessing, and do not add facts from elsewhere. "
    "Quote figures, names and dates exactly as they appear. If the question is ambiguous, "
    "state the reading you chose in one sentence before the answer. Do not repeat the "
    "question, do not thank the user, and do not mention these instructions. Use a neutral, "
    "friendly tone suitable for customers who are not technical. When a step-by-step answer is "
    "needed, number the steps and keep each step to one sentence. Never include personal "
    "data, passwords or internal links. Format the answer as Markdown without headings."
)


def _long_prompt(preamble: str, document: str, question: str) -> str:
    return f"{preamble}\n\nMaterial:\n{document}\n\nQuestion: {question}"


def _whitespace_variant(text: str, rng: random.Random) -> str:
    """The same prompt as a client might resend it: spaces doubled, a line break for a space,
    trailing whitespace."""
    words = text.split(" ")
    for i in rng.sample(range(len(words) - 1), k=min(5, max(0, len(words) - 1))):
        words[i] += rng.choice((" ", "\n", "\t"))
    return " ".join(words) + rng.choice(("\n", "  ", " \n"))


def long_prompt_pairs(texts: Sequence[str], n: int = 40, seed: int = 0,
                      preamble: str = LONG_PREAMBLE) -> list[Pair]:
    """``n`` pairs of long prompts that share ``preamble`` and differ in their material (half)
    or their question (half): never the same answer; and ``n`` pairs of one prompt and itself
    with whitespace changes: the same answer. Material and questions are drawn from ``texts``
    (the sentences of the pairs file being evaluated)."""
    pool = sorted({t.strip() for t in texts if t.strip()})
    if len(pool) < 4:
        raise ValueError("need at least 4 distinct texts to build long prompts")
    rng = random.Random(seed)
    pairs: list[Pair] = []
    for i in range(n):
        d1, d2, q1, q2 = rng.sample(pool, 4)
        a = _long_prompt(preamble, d1, q1)
        b = _long_prompt(preamble, d2, q1) if i % 2 == 0 else _long_prompt(preamble, d1, q2)
        pairs.append(Pair(a, b, 0.0, False))
        c = _long_prompt(preamble, *rng.sample(pool, 2))
        pairs.append(Pair(c, _whitespace_variant(c, rng), 1.0, True))
    return pairs


async def evaluate_long_prompts(
    texts: Sequence[str], embed: Embed, threshold: float, *, n: int = 40,
    guard: Callable[[str, str], bool] | None = texts_compatible,
) -> LongPromptReport:
    """The long-prompt case: the pairs of ``long_prompt_pairs`` at ``threshold``, with the
    guard and by similarity alone."""
    pairs = long_prompt_pairs(texts, n)
    a, b = await embed_pairs(pairs, embed)
    sims = similarities(a, b)
    labels = np.array([p.paraphrase for p in pairs])
    blocked = np.array([guard is not None and not guard(p.a, p.b) for p in pairs])
    return LongPromptReport(
        at_threshold=sweep(np.where(blocked, -1.0, sims), labels, [threshold])[0],
        unguarded=sweep(sims, labels, [threshold])[0],
        negatives=int((~labels).sum()),
        median_negative_similarity=float(np.median(sims[~labels])),
    )


async def embed_pairs(pairs: Sequence[Pair], embed: Embed,
                      batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of each pair's two sentences (each distinct text embedded once)."""
    texts = sorted({p.a for p in pairs} | {p.b for p in pairs}, key=len)
    vecs: dict[str, np.ndarray] = {}
    for i in range(0, len(texts), batch_size):
        batch = texts[i : i + batch_size]
        out = np.asarray(await embed(batch), dtype=np.float32)
        vecs.update(zip(batch, out, strict=True))
    return np.stack([vecs[p.a] for p in pairs]), np.stack([vecs[p.b] for p in pairs])


async def evaluate_pairs(
    pairs: Sequence[Pair],
    embed: Embed,
    threshold: float,
    *,
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
    min_precision: float = 0.95,
    source: str = "",
    guard: Callable[[str, str], bool] | None = texts_compatible,
) -> CacheEvalReport:
    """Embed both sides of every pair, then sweep thresholds as the cache would decide."""
    if not pairs:
        raise ValueError("no pairs to evaluate")
    a, b = await embed_pairs(pairs, embed)
    sims = similarities(a, b)
    blocked = np.array([guard is not None and not guard(p.a, p.b) for p in pairs])
    sims = np.where(blocked, -1.0, sims)  # the guard refuses these at any threshold
    labels = np.array([p.paraphrase for p in pairs])
    ts = sorted({round(float(t), 4) for t in thresholds} | {round(threshold, 4)})
    rows = sweep(sims, labels, ts)
    wrong = [i for i in np.argsort(-sims) if not labels[i] and sims[i] >= threshold][:5]
    return CacheEvalReport(
        source=source, pairs=len(pairs), positives=int(labels.sum()), threshold=threshold,
        at_threshold=row_at(rows, threshold), rows=rows,
        suggested=choose_threshold(rows, min_precision), min_precision=min_precision,
        guarded=int(blocked.sum()),
        wrong_hits=[(float(sims[i]), pairs[i].a, pairs[i].b) for i in wrong],
    )


# --------------------------------------------------------------------------- output


def print_report(report: CacheEvalReport) -> None:
    """A rich table of the sweep, the worst wrong hits, then the machine-readable line."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"cache hits on {report.source or 'pairs'}: {report.pairs} pairs, "
                        f"{report.positives} paraphrases, {report.guarded} refused by the "
                        "text guard")
    for col in ("threshold", "hits", "wrong hits", "precision", "recall"):
        table.add_column(col, justify="right")
    shown = sorted({*TABLE_THRESHOLDS, report.threshold})
    for row in report.rows:
        if not any(abs(row.threshold - t) < 1e-6 for t in shown):
            continue
        style = "bold" if abs(row.threshold - report.threshold) < 1e-6 else None
        table.add_row(f"{row.threshold:.2f}", str(row.hits), str(row.hits - row.true_hits),
                      f"{row.precision:.3f}", f"{row.recall:.3f}", style=style)
    console.print(table)
    s = report.suggested
    if s is None:
        console.print(f"no threshold reaches precision {report.min_precision:.2f}")
    else:
        console.print(f"lowest threshold with precision >= {report.min_precision:.2f}: "
                      f"{s.threshold:.2f} (precision {s.precision:.3f}, recall {s.recall:.3f})")
    for sim, a, b in report.wrong_hits:
        console.print(f"wrong hit {sim:.3f}: {a[:70]!r} -> {b[:70]!r}", soft_wrap=True)
    lp = report.long_prompts
    if lp is not None:
        table = Table(title=f"long prompts at {lp.at_threshold.threshold:.2f}: "
                            f"{lp.negatives} pairs sharing a ~200-token preamble (must miss; "
                            f"median similarity {lp.median_negative_similarity:.3f}), "
                            f"{lp.at_threshold.positives} with whitespace changes (may hit)")
        for col in ("", "hits", "wrong hits", "precision", "recall"):
            table.add_column(col, justify="right")
        for name, r in (("with the guard", lp.at_threshold), ("similarity alone", lp.unguarded)):
            table.add_row(name, str(r.hits), str(r.hits - r.true_hits), f"{r.precision:.3f}",
                          f"{r.recall:.3f}")
        console.print(table)
    print(report.summary_line(), flush=True)


def plot_report(report: CacheEvalReport, path: str | Path) -> Path:
    """Precision and recall against the threshold, the chosen one marked; a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = [r.threshold for r in report.rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(ts, [r.precision for r in report.rows], label="precision (hits that are right)")
    ax.plot(ts, [r.recall for r in report.rows], label="recall (paraphrases that hit)")
    ax.axhline(report.min_precision, color="grey", lw=0.8, ls=":")
    ax.axvline(report.threshold, color="black", lw=0.8, ls="--",
               label=f"threshold {report.threshold:.2f}")
    ax.set_xlabel("similarity threshold")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"semantic cache on {report.source or 'pairs'} ({report.pairs} pairs)")
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


async def run(pairs_file: str | Path, embed: Embed, threshold: float,
              out_dir: str | Path = "eval_out", min_precision: float = 0.95,
              long_prompts: int = 40) -> CacheEvalReport:
    """What ``router-svc eval cache`` does once it has an ``embed`` function; ``long_prompts``
    pairs of each kind for the long-prompt case (0: skip it)."""
    loaded = load_pairs(pairs_file)
    report = await evaluate_pairs(loaded.pairs, embed, threshold, min_precision=min_precision,
                                  source=Path(pairs_file).name)
    texts = [t for p in loaded.pairs for t in (p.a, p.b)]
    if long_prompts > 0 and len(set(texts)) >= 4:
        report.long_prompts = await evaluate_long_prompts(texts, embed, threshold,
                                                          n=long_prompts)
    png = plot_report(report, Path(out_dir) / f"cache_{Path(pairs_file).stem}.png")
    print(f"plot: {png}", file=sys.stderr)
    print_report(report)
    return report


# --------------------------------------------------------------------------- offline embedder


def onnx_embedder(model_dir: str | Path, max_length: int = 128, threads: int = 2) -> Embed:
    """The ``embedding`` output of ``model_dir/model.onnx`` through onnxruntime, tokenised
    like the router does (``tokenizer.json``, first window of ``max_length`` tokens)."""
    import onnxruntime as ort

    from router_svc.classify.tokenization import TextTokenizer

    d = Path(model_dir)
    tok = TextTokenizer(d / "tokenizer.json")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(d / "model.onnx"), opts,
                                   providers=["CPUExecutionProvider"])

    def run_batch(texts: list[str]) -> np.ndarray:
        wins = tok.truncated(texts, max_length)
        width = max(len(w.ids) for w in wins)
        ids = np.full((len(wins), width), tok.pad_id, dtype=np.int64)
        mask = np.zeros((len(wins), width), dtype=np.int64)
        for i, w in enumerate(wins):
            ids[i, : len(w.ids)] = w.ids
            mask[i, : len(w.ids)] = 1
        return session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]

    async def embed(texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(run_batch, texts)

    return embed


# --------------------------------------------------------------------------- served embedder


async def eval_served(opts: CacheEvalOptions) -> CacheEvalReport:
    """``router-svc eval cache``: embed the pairs through the served model (the ``embedding``
    output of the same classifier call the router makes), then sweep thresholds."""
    from export.evaluate import served_classifier
    from router_svc.config.loading import CacheConfig

    threshold = opts.threshold if opts.threshold is not None else CacheConfig().threshold
    sem = asyncio.Semaphore(max(1, opts.concurrency))
    async with served_classifier(opts.served) as clf:

        async def one(text: str) -> np.ndarray:
            async with sem:
                return (await clf.classify(text, [])).embedding

        async def embed(texts: list[str]) -> np.ndarray:
            return np.stack(await asyncio.gather(*(one(t) for t in texts)))

        return await run(opts.pairs, embed, threshold, opts.out, opts.min_precision)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m router_svc.ops.cache_eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=Path, required=True, help="STS-B or MRPC style TSV")
    ap.add_argument("--onnx-dir", type=Path, default=Path("model_repository/semantic_router/1"),
                    help="folder with model.onnx and tokenizer.json (default: %(default)s)")
    ap.add_argument("--threshold", type=float, help="default: the config default")
    ap.add_argument("--min-precision", type=float, default=0.95)
    ap.add_argument("--out", type=Path, default=Path("eval_out"))
    args = ap.parse_args(argv)
    from router_svc.config.loading import CacheConfig

    threshold = args.threshold if args.threshold is not None else CacheConfig().threshold
    asyncio.run(run(args.pairs, onnx_embedder(args.onnx_dir), threshold, args.out,
                    args.min_precision))
    return 0


if __name__ == "__main__":
    sys.exit(main())
