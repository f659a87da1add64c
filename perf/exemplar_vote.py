"""What the category exemplars' vote adds to a request's decode (``classifier.category_model
.exemplars``): ``Classifier.decode`` with the vote and without it, side by side.

Prompts: the 114 hand-written short prompts (one window) and ``--prompts`` texts of
``--tokens`` tokens made as in ``perf/recognisers.py``. The model's outputs come from
in-process onnxruntime once per window (not timed). Timed per prompt, alternating in rounds
(A B, B A, ...), one call at a time: ``head`` (decode, exemplars off) and ``vote`` (decode
with the build's ``category_exemplars.npz``). Reported in milliseconds: p50 and p99 over all
calls, and the vote's extra p50.

    python perf/exemplar_vote.py                    # a minute or two
    python perf/exemplar_vote.py --prompts 20 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from _common import (
    Output,
    add_model_args,
    add_output_args,
    alternating,
    check_model_dir,
    markdown_table,
    pct,
    progress,
    say,
)
from recognisers import long_prompts, model_outputs

from export.build import SHORT_PROMPTS
from export.data import load_mmlu
from router_svc.classify.classifier import Classifier
from router_svc.classify.exemplars import FILE_NAME, load_exemplars
from router_svc.classify.tokenization import TextTokenizer
from router_svc.labels import CATEGORIES, PII_TAGS


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="perf/exemplar_vote.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.set_defaults(prompts=40)
    add_output_args(ap)
    ap.add_argument("--tokens", type=int, default=500, help="tokens a long prompt (default: 500)")
    ap.add_argument("--rounds", type=int, default=7, help="timing rounds (default: 7)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    check_model_dir(args.model_dir)
    from _ort import session

    out = Output("exemplar_vote", args)
    tok = TextTokenizer(args.model_dir / "tokenizer.json")
    ex = load_exemplars(args.model_dir / FILE_NAME, CATEGORIES, embedding_dim=384)
    sides = {
        "head": Classifier(tok, None, list(CATEGORIES), list(PII_TAGS),  # type: ignore[arg-type]
                           pii_threshold=0.7, window=128, stride=96, recognisers=False),
        "vote": Classifier(tok, None, list(CATEGORIES), list(PII_TAGS),  # type: ignore[arg-type]
                           pii_threshold=0.7, window=128, stride=96, recognisers=False,
                           exemplars=ex),
    }
    sess = session(args.model_dir / "model.onnx", threads=0)
    sets = {"short prompts": [e.text for e in load_mmlu(SHORT_PROMPTS)[0]],
            f"{args.tokens}-token prompts": long_prompts(tok, args.data_dir, args.prompts,
                                                         args.tokens, 0.3, args.seed)}
    rows = []
    for name, texts in sets.items():
        say(f"{name}: {len(texts)} prompts through the model")
        work = model_outputs(sess, sides["head"], texts)
        samples: dict[str, list[float]] = {"head": [], "vote": []}
        with progress() as bar:
            task = bar.add_task(f"{name} timing", total=args.rounds * 2 * len(texts))
            for _, side in alternating(list(sides), args.rounds):
                clf = sides[side]
                for text, (plan, outputs) in zip(texts, work, strict=True):
                    t0 = time.perf_counter()
                    clf.decode(plan, outputs, [text])
                    samples[side].append((time.perf_counter() - t0) * 1e3)
                    bar.advance(task)
        h, v = samples["head"], samples["vote"]
        rows.append({"prompts": name, "n": len(texts), "exemplars": len(ex.vectors),
                     "head_p50_ms": pct(h, 50), "head_p99_ms": pct(h, 99),
                     "vote_p50_ms": pct(v, 50), "vote_p99_ms": pct(v, 99),
                     "extra_p50_ms": pct(v, 50) - pct(h, 50),
                     "ratio_p50": pct(v, 50) / pct(h, 50),
                     "loadavg_1m_at_end": os.getloadavg()[0]})
    print(markdown_table(rows, [
        ("prompts", "prompts"), ("head_p50_ms", "decode p50 ms"), ("head_p99_ms", "p99"),
        ("vote_p50_ms", "with the vote p50 ms"), ("vote_p99_ms", "p99"),
        ("extra_p50_ms", "extra p50 ms"), ("ratio_p50", "ratio p50")],
        digits={k: 3 for k in ("head_p50_ms", "head_p99_ms", "vote_p50_ms", "vote_p99_ms",
                               "extra_p50_ms")}))
    out.write_csv(rows)
    out.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
