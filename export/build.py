"""``router-svc model build``: data, training, calibration, ONNX export, parity, summary.

Everything the router needs lands in one folder (by default the Triton model version folder):
``model.onnx``, ``tokenizer.json``, ``category_exemplars.npz`` (``export/exemplars.py``) and
``build_report.json`` (every measured figure).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from router_svc.classify.exemplars import FILE_NAME as EXEMPLARS_FILE
from router_svc.labels import CATEGORIES, PII_TAGS
from router_svc.triton.repository import INT8_MODEL_FILE, INT8_STAMP_FILE

DEFAULT_OUT = Path("model_repository/semantic_router/1")
DEFAULT_DATA = Path("../shared/data")
# Hand-written short user-style prompts, 8-10 per category (never trained on): MMLU-Pro's long
# exam questions alone hid that a higher learning rate made short prompts less sure.
SHORT_PROMPTS = Path(__file__).parent / "eval_data" / "short_prompts.jsonl"
PII_CATEGORY_TARGETS = ("uniform", "plain", "none")


class BuildError(Exception):
    """A user-facing build failure (missing data, missing torch, bad backbone)."""


@dataclass
class BuildOptions:
    backbone: str = "all-MiniLM-L6-v2"
    out_dir: Path = DEFAULT_OUT
    data_dir: Path = DEFAULT_DATA
    head_layers: int = 2
    epochs: int = 3
    # The exam questions (44% of the training tokens) and the seed questions train in this many
    # of the epochs (None: all); the category head has learnt them by then, the PII head goes on.
    category_epochs: int | None = 2
    # The PII rows set among exam sentences (``context_fraction``; 27% of the tokens): likewise.
    context_epochs: int | None = 2
    # Generated PII rows (export/pii_templates.py). Measured on held-out rows through Triton
    # (val category / PII entity F1 / short prompts): 4000 -> 0.826 / 0.759 / 0.684 (66% above
    # 0.6); 7000 -> 0.841 / 0.777 / 0.684 (72%), the build 10.8 -> 12.4 min on a quiet machine.
    generated_pii: int = 7000
    offtopic: int = 800
    max_length: int = 128
    seed: int = 0
    threshold: float = 0.6
    # The int8 model the CPU Triton serves by default (model.int8.onnx and its stamp).
    quantize: bool = True
    # ORT applies the same graph optimisations when a session loads, and the saved optimised
    # graph holds CPU-only fused ops; measured no faster here, so it is an extra file, off.
    optimize: bool = False
    limit: int | None = None  # subsample every data set (smoke runs and tests)
    lr_heads: float = 1e-3
    # Trainable top layers' learning rate. Measured on the held-out PII rows: 5e-5 -> 1.5e-4
    # took entity F1 0.687 -> 0.705 and category 0.818 -> 0.829; 3e-4 (with more name
    # templates) 0.718 and 0.826.
    lr_layers: float = 3e-4
    # Scales the category loss's gradient into the shared encoder (forward unchanged), so the
    # PII head keeps more of it. Measured on held-out rows through Triton (val category /
    # PII entity F1 / short prompts): 1.0 -> 0.842 / 0.744 / 0.667; 0.4 -> 0.832 / 0.754 /
    # 0.667; 0.17 -> 0.826 / 0.759 / 0.684, ECE 0.030.
    category_grad_scale: float = 0.17
    # Category target of the PII rows: "uniform" (all of them, as off-topic prompts), "plain"
    # (only rows without MMLU-Pro context sentences around them; those get no category loss)
    # or "none". Measured with 7,000 generated rows: "none" routes short prompts better (above
    # 0.6: 72% -> 81%, accurate there 0.79 -> 0.84) but lets 19% of the held-out PII chit-chat
    # ("Have you been to a ... concert?") through with a confident category (uniform: 0%), and
    # PII F1 0.777 -> 0.764. Chit-chat must stay below the threshold, so "uniform".
    pii_category_target: str = "uniform"
    threads: int | None = None  # torch intra-op threads (None: one per core)
    presidio_repeat: int = 3
    context_fraction: float = 0.3
    # Rows of 2-4 PII examples one after another (``data.joined_examples``), trained like the
    # context rows (``context_epochs``): PII a few lines into a long prompt.
    joined_rows: int = 2000
    # The hand-written short user-style questions (export/category_seeds.jsonl) as category
    # training rows, and the generic conversation turns (export/exemplars.GENERIC_TURNS) as
    # no-topic rows, each this many times: exam questions are all the head sees otherwise.
    # Both are exemplars as well; the held-out short prompts and conversations are neither.
    seed_repeat: int = 1
    # The cache's hit verifier (export/pair_verifier.py), written next to the model: opt-in.
    # Trained here (2 cores, one or two epochs) it did not beat the text rules it would stand
    # beside (perf/README.md, "Cache hit verifier model"), and it adds ~30 min to the build.
    pair_verifier: bool = False
    pair_verifier_epochs: int = 1


def quick_options(**overrides) -> BuildOptions:
    """A real but small build for the test suite (a few minutes on 2 cores): one trainable
    head layer (a linear PII head on the frozen encoder misses card numbers), on a subset."""
    base = {"head_layers": 1, "epochs": 3, "generated_pii": 3000, "offtopic": 400,
            "limit": 2500, "joined_rows": 0}
    return BuildOptions(**{**base, **overrides})


@dataclass
class StepTimer:
    steps: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, fn, *args, **kwargs):
        from rich.console import Console

        Console(stderr=True).print(f"[bold cyan]▶ {name}[/]")
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        self.steps[name] = time.perf_counter() - t
        return out


def write_heldout(data_dir: Path, out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """The build's held-out splits as eval files (the same deterministic split as ``build``
    with this seed): ``mmlu_val.jsonl`` (question, category) for ``eval category`` and
    ``pii_test.json`` (presidio-research format, held-out templates) for ``eval pii``."""
    from export import data as D

    opts = BuildOptions(data_dir=data_dir, seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    mmlu, _ = D.load_mmlu(_data_file(opts, "mmlu_pro/questions.jsonl"))
    _, val = D.split_mmlu(mmlu, val_fraction=0.1, seed=seed)
    pres, _ = D.load_presidio(_data_file(opts, "pii/synth_dataset_v2.json"))
    _, test = D.split_presidio(pres, test_fraction=0.25, seed=seed)
    paths = {"category": out_dir / "mmlu_val.jsonl", "pii": out_dir / "pii_test.json"}
    paths["category"].write_text("".join(
        json.dumps({"question": e.text, "category": e.category}) + "\n" for e in val))
    rows = [{"full_text": e.text, "template_id": e.template_id,
             "spans": [{"entity_type": sp.type, "entity_value": e.text[sp.start:sp.end],
                        "start_position": sp.start, "end_position": sp.end} for sp in e.spans]}
            for e in test]
    paths["pii"].write_text(json.dumps(rows, indent=1))
    return paths


def require_torch() -> None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise BuildError(
            "the model build needs torch and transformers, which the router itself does not: "
            "pip install 'router-svc[build]' (torch==2.13.0 takes the CPU build)"
        ) from e


def _data_file(opts: BuildOptions, rel: str) -> Path:
    p = opts.data_dir / rel
    if not p.is_file():
        raise BuildError(f"training data {p} not found: pass --data-dir pointing at shared/data")
    return p


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def sts_spearman(embed, pairs) -> float:
    """Spearman of cosine similarity against gold scores (embeddings are L2-normalised)."""
    ea = embed([p.a for p in pairs])
    eb = embed([p.b for p in pairs])
    return spearman((ea * eb).sum(1), np.array([p.score for p in pairs]))


def pii_category(target: str, source: str) -> int:
    """The category target of a PII training row from ``source`` (see
    ``BuildOptions.pii_category_target``): the uniform distribution or no category loss."""
    from export.data import CONTEXT_SUFFIX
    from export.train import NO_CATEGORY, UNIFORM

    if target == "uniform" or (target == "plain" and not source.endswith(CONTEXT_SUFFIX)):
        return UNIFORM
    return NO_CATEGORY


def build(opts: BuildOptions) -> dict:
    if opts.pii_category_target not in PII_CATEGORY_TARGETS:
        raise BuildError(f"pii_category_target={opts.pii_category_target!r}: use one of "
                         f"{', '.join(map(repr, PII_CATEGORY_TARGETS))}")
    require_torch()
    import torch

    from export import data as D
    from export.backbone import BackboneError, load_backbone
    from export.modeling import DualHeadModel
    from export.onnx_export import (
        export_onnx,
        optimize_onnx,
        parity,
        shared_encoder,
        write_int8,
    )
    from export.train import (
        UNIFORM,
        Example,
        TrainConfig,
        cache_features,
        expected_calibration_error,
        fit_temperature,
        predict_cached,
        seed_everything,
        train,
    )
    from router_svc.classify.tokenization import TextTokenizer
    from router_svc.ops.pairs import load_pairs

    if opts.threads:
        torch.set_num_threads(opts.threads)
    seed_everything(opts.seed)
    timer = StepTimer()
    report: dict = {"options": {k: str(v) for k, v in asdict(opts).items()}}

    try:
        bb = timer.run("load backbone", load_backbone, opts.backbone)
    except BackboneError as e:
        raise BuildError(str(e)) from e
    tok = TextTokenizer(bb.tokenizer_json)
    model = DualHeadModel(bb.model, len(CATEGORIES), len(PII_TAGS), opts.head_layers)

    # ---- data
    mmlu, mmlu_rep = D.load_mmlu(_data_file(opts, "mmlu_pro/questions.jsonl"))
    mmlu_train, mmlu_val = D.split_mmlu(mmlu, val_fraction=0.1, seed=opts.seed)
    pres, pres_rep = D.load_presidio(_data_file(opts, "pii/synth_dataset_v2.json"))
    pres_train, pres_test = D.split_presidio(pres, test_fraction=0.25, seed=opts.seed)
    generated = D.generate_pii(opts.generated_pii, opts.seed)
    off_train = D.offtopic_prompts(opts.offtopic, opts.seed)
    off_test = D.offtopic_prompts(300, opts.seed + 1000)
    sts = load_pairs(_data_file(opts, "paraphrase/glue_STS-B_original_sts-test.tsv")).pairs
    if opts.limit:
        n = opts.limit
        mmlu_train, mmlu_val, pres_train, pres_test = (
            mmlu_train[:n], mmlu_val[:n], pres_train[:n], pres_test[:n])
        generated, off_train, off_test, sts = generated[:n], off_train[:n], off_test[:n], sts[:n]
    report["data"] = {
        "mmlu": {"train": len(mmlu_train), "val": len(mmlu_val), **asdict(mmlu_rep)},
        "presidio": {"train": len(pres_train), "test": len(pres_test), **asdict(pres_rep)},
        "generated_pii": len(generated),
        "pii_types_in_training": D.summarise_types(pres_train + generated),
        "offtopic": {"train": len(off_train), "test": len(off_test)},
        "sts_pairs": len(sts),
    }
    cat_index = {c: i for i, c in enumerate(CATEGORIES)}

    def cat_examples(items, epochs: int | None = None) -> list[Example]:
        wins = tok.truncated([e.text for e in items], opts.max_length)
        return [Example(ids=w.ids, category=cat_index[e.category], epochs=epochs)
                for w, e in zip(wins, items, strict=True)]

    def pii_examples(items, epochs: int | None = None) -> list[Example]:
        out = []
        wins = tok.truncated([e.text for e in items], opts.max_length)
        for w, e in zip(wins, items, strict=True):
            tags = D.align_bio(e.text, e.spans, w.offsets)
            out.append(Example(ids=w.ids, category=pii_category(opts.pii_category_target, e.source),
                               tags=tags, epochs=epochs))
        return out

    # The presidio-research rows carry the annotation conventions the held-out templates use
    # (address blocks, single names, NRP spellings): weight them up against generated rows.
    pii_train = pres_train * opts.presidio_repeat + generated
    # PII among benign text (as in long prompts), so windows deep in a prompt score like
    # short sentences do; truncation at max_length keeps the example's start in view.
    pii_context = D.with_context(pii_train, [e.text for e in mmlu_train if len(e.text) < 300],
                                 opts.context_fraction, opts.seed)
    pii_joined = D.joined_examples(pii_train, opts.joined_rows, opts.seed)
    from export.exemplars import GENERIC_TURNS, SEEDS, load_examples

    def uniform_examples(texts: list[str]) -> list[Example]:
        return [Example(ids=w.ids, category=UNIFORM) for w in tok.truncated(texts, opts.max_length)]

    seeds = load_examples(SEEDS)
    seed_wins = tok.truncated([t for t, _ in seeds], opts.max_length)
    # Short user questions teach the head that short can be sure; turns that only point back
    # at the answer before them ("is there a faster way?") teach it that they carry no topic,
    # so a conversation's follow-up does not move it. The chit-chat comes last (exemplars).
    train_ex = (cat_examples(mmlu_train, opts.category_epochs)
                + [Example(ids=w.ids, category=c, epochs=opts.category_epochs)
                   for w, (_, c) in zip(seed_wins, seeds, strict=True)]
                * opts.seed_repeat
                + pii_examples(pii_train)
                + pii_examples(pii_context, opts.context_epochs)
                + pii_examples(pii_joined, opts.context_epochs)
                + uniform_examples(list(GENERIC_TURNS)) * opts.seed_repeat
                + uniform_examples(off_train))
    val_ex = cat_examples(mmlu_val)
    short_ex = cat_examples(D.load_mmlu(SHORT_PROMPTS)[0])
    off_ex = [Example(ids=w.ids) for w in tok.truncated(off_test, opts.max_length)]
    pii_test_ex = pii_examples(pres_test)

    # ---- frozen features, then training of the head branch
    model.eval()
    with torch.no_grad():
        emb_before = sts_spearman(lambda t: embed_texts(model, tok, t), sts)
    report["sts_spearman_before"] = emb_before
    with tempfile.TemporaryDirectory() as tmp:
        # The frozen layers run in onnxruntime here (faster than torch on a CPU); they are
        # the model's own weights, so the features are the same to float rounding.
        encode = shared_encoder(model, Path(tmp) / "shared.onnx", opts.threads)
        c_train = timer.run("encode (frozen layers)", cache_features, model, train_ex,
                            encode=encode)
        c_val = cache_features(model, val_ex, desc="encoding val", encode=encode)
        c_off = cache_features(model, off_ex, desc="encoding off-topic", encode=encode)
        c_pii = cache_features(model, pii_test_ex, desc="encoding pii test", encode=encode)
        c_short = cache_features(model, short_ex, desc="encoding short prompts", encode=encode)
    cfg = TrainConfig(epochs=opts.epochs, seed=opts.seed, lr_heads=opts.lr_heads,
                      lr_layers=opts.lr_layers, category_grad_scale=opts.category_grad_scale)
    log = timer.run("train", train, model, c_train, cfg)
    report["train"] = {"steps": len(log.losses), "final_loss": float(np.mean(log.losses[-50:])),
                       "seconds": log.seconds, "config": asdict(cfg)}

    # ---- calibration and validation
    val_logits, _ = predict_cached(model, c_val)
    y = np.array([e.category for e in val_ex])
    temperature = fit_temperature(val_logits, y)
    model.temperature.fill_(temperature)
    off_logits = predict_cached(model, c_off)[0]
    report["category"] = category_report(val_logits, y, temperature, opts.threshold,
                                         off_logits, expected_calibration_error)
    short = category_report(predict_cached(model, c_short)[0],
                            np.array([e.category for e in short_ex]), temperature,
                            opts.threshold, off_logits, expected_calibration_error)
    report["category_short_prompts"] = {
        "rows": len(short_ex), "accuracy": short["accuracy"],
        "share_above_threshold": short["val_share_above_threshold"],
        "accuracy_above_threshold": short["val_accuracy_above_threshold"]}
    # ---- category exemplars: the head's second opinion in the router (classify/exemplars.py)
    from export.exemplars import below_share, make_exemplars, vote_report
    from export.train import embed_cached

    n_topic = len(mmlu_train)  # train_ex starts with them and ends with the chit-chat
    topic_vecs = np.concatenate([
        timer.run("embed exemplars", embed_cached, model, c_train, range(n_topic)),
        embed_texts(model, tok, [t for t, _ in seeds])])
    none_vecs = np.concatenate([
        embed_cached(model, c_train, range(len(train_ex) - len(off_train), len(train_ex))),
        embed_texts(model, tok, list(GENERIC_TURNS))])
    exemplars = make_exemplars(topic_vecs, [e.category for e in train_ex[:n_topic]]
                               + [c for _, c in seeds], none_vecs)
    report["category_exemplars"] = {
        "count": len(exemplars.vectors), "seeds": len(seeds), "k": exemplars.k,
        "tau": exemplars.tau,
        "weight": exemplars.weight,
        "val": vote_report(exemplars, val_logits / temperature,
                           embed_cached(model, c_val, range(len(val_ex))), y, opts.threshold),
        "short_prompts": vote_report(
            exemplars, predict_cached(model, c_short)[0] / temperature,
            embed_cached(model, c_short, range(len(short_ex))),
            np.array([e.category for e in short_ex]), opts.threshold),
        "offtopic_below_threshold": below_share(
            exemplars, off_logits / temperature, embed_cached(model, c_off, range(len(off_ex))),
            opts.threshold),
    }
    _, pii_logits = predict_cached(model, c_pii)
    report["pii_token_f1_val"] = token_f1(pii_logits, [e.tags for e in pii_test_ex])

    with torch.no_grad():
        emb_after = sts_spearman(lambda t: embed_texts(model, tok, t), sts)
    report["sts_spearman_after"] = emb_after

    # ---- export
    out = opts.out_dir
    out.mkdir(parents=True, exist_ok=True)
    drop_stale_outputs(out, opts)
    exemplars.save(out / EXEMPLARS_FILE)
    onnx_path = out / "model.onnx"
    raw_path = out / "model.raw.onnx.tmp"
    timer.run("export onnx", export_onnx, model, raw_path)
    shutil.copyfile(bb.tokenizer_json, out / "tokenizer.json")
    probe = [e.text for e in mmlu_val[:6]] + [e.text for e in pres_test[:6]] + off_test[:4]
    raw_path.replace(onnx_path)
    if opts.optimize:
        timer.run("optimise onnx", optimize_onnx, onnx_path, out / "model.opt.onnx")
    par = timer.run("parity check", parity, model, onnx_path, out / "tokenizer.json", probe)
    report["parity"] = asdict(par)
    if not par.ok:
        raise BuildError(f"ONNX parity check failed: {par}")
    if opts.quantize:
        report["int8"] = str(timer.run("quantise int8", write_int8, out))
    if opts.pair_verifier:
        from export.pair_verifier import VerifierOptions
        from export.pair_verifier import train as train_pair_verifier

        pv = timer.run("train pair verifier", train_pair_verifier, VerifierOptions(
            out_dir=out, data_dir=opts.data_dir, epochs=opts.pair_verifier_epochs,
            seed=opts.seed, threads=opts.threads,
            limit=opts.limit * 4 if opts.limit else None))
        report["pair_verifier"] = {"train": pv["train"], "validation": pv["validation"]}
    report["labels"] = {"categories": list(CATEGORIES), "pii_tags": list(PII_TAGS)}
    report["embedding_dim"] = int(model.category_head[1].in_features)
    report["steps_seconds"] = timer.steps
    report["backbone"] = bb.source
    (out / "build_report.json").write_text(json.dumps(report, indent=2, default=str))
    print_summary(report)
    return report


def drop_stale_outputs(out: Path, opts: BuildOptions) -> None:
    """Files an earlier build left in ``out`` that this one will not write: an int8 or
    optimised model of the old weights would be served (``--int8``) as this build's."""
    if not opts.quantize:  # `up` quantises this build's model.onnx when it serves int8
        (out / INT8_MODEL_FILE).unlink(missing_ok=True)
        (out / INT8_STAMP_FILE).unlink(missing_ok=True)
    if not opts.optimize:
        (out / "model.opt.onnx").unlink(missing_ok=True)


def embed_texts(model, tok, texts: list[str], batch: int = 64) -> np.ndarray:
    import torch

    from export.train import pad_ids

    wins = tok.truncated(texts, 128)
    order = np.argsort([len(w.ids) for w in wins])
    out = np.zeros((len(texts), model.category_head[1].in_features), np.float32)
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        ids, mask = pad_ids([wins[i].ids for i in idx])
        h = model.shared_forward(ids, mask)
        out[idx] = model.embedding_from_shared(h, mask).numpy()
    del torch
    return out


def category_report(logits: np.ndarray, y: np.ndarray, temperature: float, threshold: float,
                    off_logits: np.ndarray, ece_fn) -> dict:
    def softmax(z):
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    p_raw, p = softmax(logits), softmax(logits / temperature)
    pred = p.argmax(1)
    f1s = []
    for c in range(len(CATEGORIES)):
        tp = ((pred == c) & (y == c)).sum()
        prec = tp / max(1, (pred == c).sum())
        rec = tp / max(1, (y == c).sum())
        f1s.append(0.0 if tp == 0 else 2 * prec * rec / (prec + rec))
    conf = p.max(1)
    off_conf = softmax(off_logits / temperature).max(1)
    above = conf >= threshold
    return {
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(np.mean(f1s)),
        "temperature": temperature,
        "ece_before": ece_fn(p_raw, y),
        "ece_after": ece_fn(p, y),
        "threshold": threshold,
        "val_share_above_threshold": float(above.mean()),
        "val_accuracy_above_threshold": float((pred[above] == y[above]).mean()) if above.any()
        else 0.0,
        "offtopic_share_below_threshold": float((off_conf < threshold).mean()),
        "offtopic_median_confidence": float(np.median(off_conf)),
    }


def token_f1(pii_logits: list[np.ndarray], tags: list[list[int]]) -> float:
    """Token-level micro F1 over non-O tags (a quick check; entity-level F1 is `eval pii`)."""
    tp = fp = fn = 0
    for lg, t in zip(pii_logits, tags, strict=True):
        t = np.array(t)
        keep = t != -100
        pred = lg.argmax(-1)[keep]
        gold = t[keep]
        tp += int(((pred == gold) & (gold != 0)).sum())
        fp += int(((pred != gold) & (pred != 0)).sum())
        fn += int(((pred != gold) & (gold != 0)).sum())
    return 2 * tp / max(1, 2 * tp + fp + fn)


def print_summary(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    cat, sh = report["category"], report["category_short_prompts"]
    t = Table(title="router-svc model build")
    t.add_column("measure")
    t.add_column("value", justify="right")
    rows = [
        ("backbone", report["backbone"]),
        ("category accuracy (MMLU-Pro val)", f"{cat['accuracy']:.3f}"),
        ("category macro-F1", f"{cat['macro_f1']:.3f}"),
        ("temperature", f"{cat['temperature']:.3f}"),
        ("ECE before → after", f"{cat['ece_before']:.3f} → {cat['ece_after']:.3f}"),
        (f"off-topic below {cat['threshold']}", f"{cat['offtopic_share_below_threshold']:.1%}"),
        (f"val above {cat['threshold']} (accuracy there)",
         f"{cat['val_share_above_threshold']:.1%} ({cat['val_accuracy_above_threshold']:.3f})"),
        ("short prompts: accuracy, above threshold",
         f"{sh['accuracy']:.3f}, {sh['share_above_threshold']:.1%}"),
        *(() if "category_exemplars" not in report else [
            (f"with {report['category_exemplars']['count']} exemplars: val, short prompts "
             "accuracy (above threshold)",
             ", ".join(f"{r['accuracy']:.3f} ({r['share_above_threshold']:.1%})" for r in (
                 report["category_exemplars"]["val"]["with_exemplars"],
                 report["category_exemplars"]["short_prompts"]["with_exemplars"])))]),
        ("PII token F1 (held-out templates)", f"{report['pii_token_f1_val']:.3f}"),
        ("STS-B Spearman before → after",
         f"{report['sts_spearman_before']:.4f} → {report['sts_spearman_after']:.4f}"),
        ("ONNX parity max |diff|", f"{report['parity']['max_abs_diff']:.2e}"),
        ("ONNX argmax identical", str(report["parity"]["argmax_identical"])),
    ]
    if pv := report.get("pair_verifier"):
        cut = pv["validation"]["by_logit_cut"]["0"]
        rows.append(("pair verifier, validation P / R at p 0.5",
                     f"{cut['precision']:.3f} / {cut['recall']:.3f}"))
    rows += [(f"time: {k}", f"{v:.0f} s") for k, v in report["steps_seconds"].items()]
    for r in rows:
        t.add_row(*r)
    Console().print(t)
