"""The rule recognisers' cost per 500-token prompt, beside the model's own decode (issue 18:
the rules may add at most 1 ms per 500-token prompt).

Prompts of ``--tokens`` tokens (the model's tokenizer) are made by joining real prompts line
by line: MMLU-Pro questions and presidio PII sentences, in three mixes: ``prose`` (questions
only), ``mix`` (``--pii-fraction`` PII sentences) and ``pii`` (PII sentences only: the worst
case, a number, a name or an address in nearly every sentence). Each is read as the router reads
it: PII windows of ``--window`` tokens every ``--stride`` (the config's 128/96); the real model's
logits come from in-process onnxruntime once per window (not timed).

Timed per prompt, alternating in rounds (A B, B A, ...), one call at a time on one thread:

- ``decode``: ``Classifier.decode`` with the recognisers off (the model's own decode: category
  pooling, BIO decoding of every window, merging the windows);
- ``rules``: ``recognise(text)`` and ``with_rules(model entities, rule entities, text)`` (the
  union, whole person names, address starts), what ``Classifier.decode`` adds with
  ``classifier.pii_model.recognisers: true``.

Reported per mix, in milliseconds: p50 and p99 over all calls (prompts x rounds), and p50 and
p99 over the prompts of each prompt's fastest round ("best"): on a shared machine the other
processes' load lands in the per-call figures, far less in the fastest of several rounds.
Rules as a share of decode is the ratio of the p50s.

    python perf/recognisers.py                 # 100 prompts a mix, 7 rounds: a few minutes
    python perf/recognisers.py --prompts 20 --rounds 3   # a quick check
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

import numpy as np
from _common import (
    Output,
    add_model_args,
    add_output_args,
    alternating,
    check_model_dir,
    load_prompts,
    markdown_table,
    pad_batch,
    pct,
    progress,
    say,
)

from router_svc.classify.batcher import RowOutput
from router_svc.classify.classifier import Classifier
from router_svc.classify.recognisers import prepare, recognise, with_rules
from router_svc.classify.tokenization import TextTokenizer
from router_svc.labels import CATEGORIES, PII_TAGS

BUDGET_MS = 1.0  # issue 18: per 500-token prompt


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="perf/recognisers.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.set_defaults(prompts=100)
    add_output_args(ap)
    ap.add_argument("--tokens", type=int, default=500, help="tokens a prompt (default: 500)")
    ap.add_argument("--window", type=int, default=128, help="PII window (default: 128)")
    ap.add_argument("--stride", type=int, default=96, help="window stride (default: 96)")
    ap.add_argument("--rounds", type=int, default=7, help="timing rounds (default: 7)")
    ap.add_argument("--mixes", default="prose,mix,pii",
                    help="comma-separated of prose, mix, pii (default: %(default)s)")
    return ap.parse_args(argv)


def long_prompts(tok: TextTokenizer, data_dir, n: int, tokens: int, pii_fraction: float,
                 seed: int) -> list[str]:
    """``n`` texts of ``tokens`` tokens: real prompts joined line by line, cut at a token (one
    paragraph: the category is read in the same windows as the PII)."""
    pool = [p.text for p in load_prompts(data_dir, n * 12, pii_fraction, seed)]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts: list[str] = []
        while True:
            parts.append(rng.choice(pool))
            text = "\n".join(parts)
            (win,) = tok.windows(text, 10**6, 10**6)
            if len(win.ids) - 2 >= tokens:
                out.append(text[:win.offsets[tokens][1]])
                break
    return out


def model_outputs(sess, clf: Classifier, texts: list[str]) -> list[tuple]:
    """(plan, outputs) per text: the rows the router would send, run once through the model."""
    from _ort import infer

    plans = [clf.plan(t, [t]) for t in texts]
    rows = [(i, k, w) for i, p in enumerate(plans) for k, w in enumerate(p.rows)]
    outs: dict[tuple[int, int], RowOutput] = {}
    for b in range(0, len(rows), 32):
        chunk = rows[b:b + 32]
        ids = [np.asarray(w.ids, dtype=np.int64) for _, _, w in chunk]
        ids_b, mask_b = pad_batch(ids, [np.ones_like(a) for a in ids])
        cat, pii, emb = infer(sess, ids_b, mask_b)
        for j, (i, k, w) in enumerate(chunk):
            outs[i, k] = RowOutput(cat[j], pii[j, :len(w.ids)], emb[j])
    return [(p, [outs[i, k] for k in range(len(p.rows))]) for i, p in enumerate(plans)]


def main(argv=None) -> int:
    args = parse_args(argv)
    check_model_dir(args.model_dir)
    from _ort import session

    out = Output("recognisers", args)
    tok = TextTokenizer(args.model_dir / "tokenizer.json")
    clf = Classifier(tok, None, list(CATEGORIES), list(PII_TAGS),  # type: ignore[arg-type]
                     pii_threshold=0.7, window=args.window, stride=args.stride,
                     recognisers=False)
    sess = session(args.model_dir / "model.onnx", threads=0)
    fractions = {"prose": 0.0, "mix": args.pii_fraction, "pii": 1.0}
    mixes = [m for m in args.mixes.split(",") if m]
    prepare()  # the suffix list and the word lists, as the router reads them at start-up
    rows = []
    for mix in mixes:
        say(f"{mix}: building {args.prompts} prompts of {args.tokens} tokens, running the model")
        texts = long_prompts(tok, args.data_dir, args.prompts, args.tokens, fractions[mix],
                             args.seed)
        work = model_outputs(sess, clf, texts)
        model_ents = [clf.decode(p, o, [t]).pii[0] for t, (p, o) in zip(texts, work, strict=True)]
        samples: dict[str, list[list[float]]] = {
            "decode": [[] for _ in texts], "rules": [[] for _ in texts]}
        with progress() as bar:
            task = bar.add_task(f"{mix} timing", total=args.rounds * 2 * len(texts))
            for _, side in alternating(["decode", "rules"], args.rounds):
                for i, text in enumerate(texts):
                    plan, outputs = work[i]
                    if side == "decode":
                        t0 = time.perf_counter()
                        clf.decode(plan, outputs, [text])
                        samples["decode"][i].append(time.perf_counter() - t0)
                    else:
                        t0 = time.perf_counter()
                        with_rules(model_ents[i], recognise(text), text)
                        samples["rules"][i].append(time.perf_counter() - t0)
                    bar.advance(task)
        d = [s * 1e3 for per in samples["decode"] for s in per]
        r = [s * 1e3 for per in samples["rules"] for s in per]
        d_best = [min(per) * 1e3 for per in samples["decode"]]
        r_best = [min(per) * 1e3 for per in samples["rules"]]
        rows.append({
            "mix": mix, "prompts": len(texts), "tokens": args.tokens,
            "windows_per_prompt": float(np.mean([len(p.rows) for p, _ in work])),
            "chars_per_prompt": float(np.mean([len(t) for t in texts])),
            "decode_p50_ms": pct(d, 50), "decode_p99_ms": pct(d, 99),
            "rules_p50_ms": pct(r, 50), "rules_p99_ms": pct(r, 99),
            "decode_best_p50_ms": pct(d_best, 50), "decode_best_p99_ms": pct(d_best, 99),
            "rules_best_p50_ms": pct(r_best, 50), "rules_best_p99_ms": pct(r_best, 99),
            "rules_share_of_decode_p50": pct(r, 50) / pct(d, 50),
            "rule_entities_per_prompt": float(np.mean([len(recognise(t)) for t in texts])),
            "within_budget_p50": pct(r, 50) <= BUDGET_MS,
            "loadavg_1m_at_end": os.getloadavg()[0],
        })
    _print_rich(rows)
    print(markdown_table(rows, [
        ("mix", "mix"), ("windows_per_prompt", "windows"), ("decode_p50_ms", "decode p50 ms"),
        ("decode_p99_ms", "decode p99 ms"), ("rules_p50_ms", "rules p50 ms"),
        ("rules_p99_ms", "rules p99 ms"), ("decode_best_p50_ms", "decode best p50"),
        ("rules_best_p50_ms", "rules best p50"), ("rules_best_p99_ms", "rules best p99"),
        ("rules_share_of_decode_p50", "rules/decode p50"),
        ("rule_entities_per_prompt", "entities")],
        digits={k: 3 for k in ("rules_p50_ms", "rules_p99_ms", "rules_best_p50_ms",
                               "rules_best_p99_ms")}))
    out.write_csv(rows)
    out.finish(budget_ms=BUDGET_MS)
    return 0


def _print_rich(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"the rules vs the model's decode, per {rows[0]['tokens']}-token "
                    f"prompt (ms; budget {BUDGET_MS} ms)")
    for c in ("mix", "windows", "decode p50", "decode p99", "rules p50", "rules p99",
              "decode best p50", "rules best p50", "rules best p99", "rules/decode",
              "entities"):
        t.add_column(c, justify="left" if c == "mix" else "right")
    for r in rows:
        ok = "green" if r["rules_p50_ms"] <= BUDGET_MS else "red"
        t.add_row(r["mix"], f"{r['windows_per_prompt']:.1f}", f"{r['decode_p50_ms']:.3f}",
                  f"{r['decode_p99_ms']:.3f}", f"[{ok}]{r['rules_p50_ms']:.3f}[/]",
                  f"{r['rules_p99_ms']:.3f}", f"{r['decode_best_p50_ms']:.3f}",
                  f"{r['rules_best_p50_ms']:.3f}", f"{r['rules_best_p99_ms']:.3f}",
                  f"{r['rules_share_of_decode_p50']:.2f}", f"{r['rule_entities_per_prompt']:.1f}")
    Console(width=160).print(t)


if __name__ == "__main__":
    sys.exit(main())
