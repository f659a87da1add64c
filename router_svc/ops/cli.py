"""The ``router-svc`` command line. Each subcommand imports what it needs lazily, so the
router's own commands never pay for (or require) torch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from router_svc.config.schema import PiiModelConfig
from router_svc.labels import MODEL_NAME


def _add_triton_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--triton-url",
        help="gRPC address of a running Triton (host:port); "
        "without it the embedded CPU Triton is started with --model-dir",
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        default=Path("model_repository/semantic_router/1"),
        help="folder with model.onnx and tokenizer.json (default: %(default)s)",
    )
    p.add_argument("--model-name", default=MODEL_NAME)
    _add_int8_arg(p)
    p.add_argument("--exemplars", default="auto",
                   help="the category's exemplar vote: auto (the build's "
                   "category_exemplars.npz in --model-dir, if any), off (the head alone), or a "
                   "file (default: %(default)s)")
    p.add_argument("--window-tokens", type=int, default=PiiModelConfig.window_tokens,
                   help="tokens per model window, as classifier.pii_model.window_tokens "
                   "(default: the router's, %(default)s)")
    p.add_argument("--window-stride", type=int, default=PiiModelConfig.window_stride,
                   help="the most tokens from one window's start to the next's, as "
                   "classifier.pii_model.window_stride (default: the router's, %(default)s)")


def _add_int8_arg(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--fp32", dest="int8", action="store_false",
                   help="the embedded CPU Triton serves model.onnx (fp32) instead of the int8 "
                   "model.int8.onnx it serves by default (made from model.onnx when missing "
                   "or out of date; perf/README.md, 'int8 as the CPU default')")
    g.add_argument("--int8", dest="int8", action="store_true",
                   help="serve model.int8.onnx (the default)")
    p.set_defaults(int8=True)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="router-svc", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="Triton + model (built if missing) + demo backends + router")
    up.add_argument("--config", type=Path,
                    help="router config (default: the example config, config.example.yaml)")
    up.add_argument("--port", type=int,
                    help="router port (default: the config's listen.port, 8801 in the example)")
    up.add_argument("--model-dir", type=Path, default=Path("model_repository/semantic_router/1"),
                    help="folder with model.onnx and tokenizer.json, built there if missing "
                    "(default: %(default)s)")
    up.add_argument("--data-dir", type=Path, default=Path("../shared/data"),
                    help="training data for a build (default: %(default)s)")
    _add_int8_arg(up)
    up.add_argument("--triton-url",
                    help="gRPC host:port of a running Triton serving the model "
                    "(default: start the embedded CPU Triton)")
    up.add_argument("--no-backends", action="store_true",
                    help="use the config's own backends instead of starting the demo ones")
    up.add_argument("--backend-base-port", type=int, default=9101,
                    help="first port of the demo backends, one per model in model_config "
                    "(default: %(default)s)")
    up.add_argument("--cache", choices=("milvus",),
                    help="milvus: turn the semantic cache on, shared through an embedded "
                    "Milvus (milvus-lite on 127.0.0.1:19530; needs router-svc[milvus])")

    serve = sub.add_parser("serve", help="run the router against a running Triton")
    serve.add_argument("--config", type=Path, required=True)

    ext = sub.add_parser(
        "extproc",
        help="run the Envoy External Processor (gRPC) front door, with the HTTP one beside it",
        description="Serves envoy.service.ext_proc.v3.ExternalProcessor for Envoy's ext_proc "
        "filter (deploy/envoy/envoy.yaml) over the same pipeline and cache as the HTTP proxy, "
        "which runs beside it on listen.port (health, readiness, metrics, OpenAI routes).")
    ext.add_argument("--config", type=Path, required=True)
    ext.add_argument("--port", type=int,
                     help="gRPC port (default: the config's extproc.port, 50051 in the example)")

    auth = sub.add_parser("auth", help="client keys")
    asub = auth.add_subparsers(dest="auth_command", required=True)
    asub.add_parser("hash-key", help="print the sha256 of a key read from stdin, for "
                    "auth.keys_file (the key itself is never stored)")
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config", type=Path)

    model = sub.add_parser("model", help="model build")
    msub = model.add_subparsers(dest="model_command", required=True)
    b = msub.add_parser("build", help="train, calibrate and export the dual-head model")
    b.add_argument(
        "--backbone",
        default="all-MiniLM-L6-v2",
        help="DistilBERT folder or hub id, or all-MiniLM-L6-v2 (default, offline)",
    )
    b.add_argument("--out", type=Path, default=Path("model_repository/semantic_router/1"))
    b.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    b.add_argument("--epochs", type=int, default=3)
    b.add_argument("--category-epochs", type=int, default=2,
                   help="epochs the exam and seed questions train in; 0: all")
    b.add_argument("--context-epochs", type=int, default=2,
                   help="epochs the PII rows set among exam sentences train in; 0: all")
    b.add_argument("--joined-rows", type=int, default=2000,
                   help="training rows of 2-4 PII examples one after another (PII a few "
                   "lines into a long prompt), trained like --context-epochs (default: "
                   "%(default)s; 0: none)")
    b.add_argument("--head-layers", type=int, default=2)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--quantize", action=argparse.BooleanOptionalAction, default=True,
                   help="write model.int8.onnx, the int8 model the CPU Triton serves by "
                   "default (default: on; --no-quantize skips it, `up` then quantises on start)")
    b.add_argument("--threads", type=int, help="torch threads (default: one per core)")
    b.add_argument("--quick", action="store_true",
                   help="small frozen-encoder build in about a minute (tests, smoke runs)")
    b.add_argument("--limit", type=int, help="use at most N examples per data set (smoke test)")
    b.add_argument("--pair-verifier", action="store_true",
                   help="also train the cache's hit verifier model (pair_verifier.onnx, "
                        "experimental; ~30 min on 2 cores)")

    h = msub.add_parser("heldout", help="write the build's held-out splits as eval files",
                        description="mmlu_val.jsonl (for eval category) and pii_test.json (for "
                        "eval pii): the validation and held-out-template splits the build "
                        "reports on, for the same --seed.")
    h.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    h.add_argument("--out", type=Path, default=Path("eval_out/heldout"))
    h.add_argument("--seed", type=int, default=0)

    x = msub.add_parser("exemplars", help="write category_exemplars.npz for a model built "
                        "before the build did (the category's exemplar vote)",
                        description="The build's MMLU-Pro training questions, the shipped "
                        "short seed questions per category (export/category_seeds.jsonl), your "
                        "--examples and the build's chit-chat, embedded by the model in "
                        "--model-dir (its build_report.json gives the split's seed), written "
                        "next to it; prints the category figures with and without the vote.")
    x.add_argument("--model-dir", type=Path, default=Path("model_repository/semantic_router/1"))
    x.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    x.add_argument("--examples", type=Path, action="append", default=[],
                   help="a JSONL file of your own labelled prompts ({\"text\", \"category\"} "
                   "per line), added to the exemplars; repeatable")

    ev = sub.add_parser("eval", help="evaluate the served model")
    esub = ev.add_subparsers(dest="eval_command", required=True)
    ec = esub.add_parser("category", help="accuracy, macro-F1, confusion matrix, calibration")
    ec.add_argument("--data", type=Path, required=True)
    ec.add_argument("--threshold", type=float, default=0.6)
    ec.add_argument("--preamble", action="store_true",
                    help="put each question after a generic ~200-token instruction, as long "
                         "chat prompts do: the category must still be the question's")
    ec.add_argument("--out", type=Path, default=Path("eval_out"))
    _add_triton_args(ec)
    ep = esub.add_parser("pii", help="entity-level precision/recall/F1 per type, PR curves, "
                         "per-type thresholds")
    ep.add_argument("--data", type=Path, required=True)
    ep.add_argument("--threshold", type=float, default=0.5)
    ep.add_argument("--presidio", action="store_true", help="also run Microsoft Presidio")
    ep.add_argument("--no-recognisers", dest="recognisers", action="store_false",
                    help="headline figures from the model alone (all views are reported)")
    ep.add_argument("--type-thresholds", type=Path, metavar="YAML",
                    help="per-type thresholds to decode with: a router config (its "
                    "classifier.pii_model.type_thresholds) or the pii_thresholds.yaml that "
                    "--choose-thresholds writes; other types use --threshold")
    ep.add_argument("--choose-thresholds", action="store_true",
                    help="choose per-type thresholds for recall (the highest whose recall is "
                    "within 0.005 of the best) on one half of --data split by template id, "
                    "report them against --threshold on the other half, and write "
                    "pii_thresholds.yaml (a config snippet) to --out")
    ep.add_argument("--join-tokens", type=int, default=0, metavar="N",
                    help="read the records, shuffled, one per line in texts of about N tokens "
                    "(PII a few lines into a long prompt, e.g. 500); 0: each alone (default)")
    ep.add_argument("--out", type=Path, default=Path("eval_out"))
    _add_triton_args(ep)
    ca = esub.add_parser("cache", help="semantic cache hit precision/recall on paraphrase pairs")
    ca.add_argument("--pairs", type=Path, required=True,
                    help="labelled pairs: an STS-B or MRPC style TSV")
    ca.add_argument("--threshold", type=float,
                    help="similarity threshold to report (default: the config default)")
    ca.add_argument("--min-precision", type=float, default=0.95,
                    help="precision the suggested threshold must reach (default: %(default)s)")
    ca.add_argument("--concurrency", type=int, default=32,
                    help="texts embedded at once through Triton (default: %(default)s)")
    ca.add_argument("--out", type=Path, default=Path("eval_out"))
    _add_triton_args(ca)
    cv = esub.add_parser(
        "conversations", help="one model per conversation: follow-ups kept, topic changes "
        "switched, latency of a long conversation's turn",
        description="Conversations of held-out MMLU-Pro questions, generic follow-ups and "
        "topic changes, routed turn by turn through the router's decision path; keep and "
        "switch rates against routing.conversation.switch_confidence, and the latency of a "
        "10-turn follow-up against a single-turn request (conversations.json, "
        "conversation_sweep.png, conversation_misses.jsonl in --out).")
    cv.add_argument("--data", type=Path,
                    help="MMLU-Pro style JSONL (default: eval_out/heldout/mmlu_val.jsonl or "
                    ".work/heldout/mmlu_val.jsonl, from `router-svc model heldout`)")
    cv.add_argument("--config", type=Path, help="router config (default: the example config)")
    cv.add_argument("--switch-confidence", type=float,
                    help="routing.conversation.switch_confidence to run with (default: the "
                    "config's)")
    cv.add_argument("--conversations", type=int, default=120)
    cv.add_argument("--turns", type=int, default=10, help="user turns per conversation")
    cv.add_argument("--topic-change-rate", type=float, default=0.3,
                    help="share of later turns that are a new question (default: %(default)s)")
    cv.add_argument("--latency-samples", type=int, default=80)
    cv.add_argument("--seed", type=int, default=0)
    cv.add_argument("--out", type=Path, default=Path("eval_out"))
    _add_triton_args(cv)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        # User mistakes (bad config, missing files) get one clear line, not a traceback.

        if isinstance(e, user_error_types()):
            print(f"router-svc: error: {e}", file=sys.stderr)
            return 2
        raise


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "model":
        from export.build import BuildOptions, build, quick_options, write_heldout

        if args.model_command == "exemplars":
            from export.exemplars import main as write_exemplars

            return write_exemplars(["--model-dir", str(args.model_dir),
                                    "--data-dir", str(args.data_dir),
                                    *(a for f in args.examples for a in ("--examples", str(f)))])
        if args.model_command == "heldout":
            for name, path in write_heldout(args.data_dir, args.out, args.seed).items():
                print(f"{name}: {path}")
            return 0
        if args.quick:
            build(quick_options(out_dir=args.out, data_dir=args.data_dir, seed=args.seed))
            return 0
        build(
            BuildOptions(
                backbone=args.backbone,
                out_dir=args.out,
                data_dir=args.data_dir,
                epochs=args.epochs,
                category_epochs=args.category_epochs or None,
                context_epochs=args.context_epochs or None,
                joined_rows=args.joined_rows,
                head_layers=args.head_layers,
                seed=args.seed,
                quantize=args.quantize,
                limit=args.limit,
                threads=args.threads,
                pair_verifier=args.pair_verifier,
            )
        )
        return 0
    if args.command == "eval":
        from router_svc.ops.up import ServedModelOptions

        served = ServedModelOptions(triton_url=args.triton_url, model_dir=args.model_dir,
                                    model_name=args.model_name, int8=args.int8,
                                    exemplars=args.exemplars,
                                    window_tokens=args.window_tokens,
                                    window_stride=args.window_stride)
        if args.eval_command == "conversations":
            from router_svc.ops import conversation_eval as ce

            return ce.main(ce.ConversationEvalOptions(
                data=args.data, out=args.out, served=served, config=args.config,
                switch_confidence=args.switch_confidence, conversations=args.conversations,
                turns=args.turns, topic_change_rate=args.topic_change_rate,
                latency_samples=args.latency_samples, seed=args.seed))
        if args.eval_command == "cache":
            import asyncio

            from router_svc.ops.cache_eval import CacheEvalOptions, eval_served

            asyncio.run(eval_served(CacheEvalOptions(
                pairs=args.pairs, threshold=args.threshold, min_precision=args.min_precision,
                concurrency=args.concurrency, out=args.out, served=served)))
            return 0
        from export import evaluate

        if args.eval_command == "category":
            return evaluate.main(evaluate.CategoryEvalOptions(
                data=args.data, threshold=args.threshold, out=args.out, served=served,
                preamble=args.preamble))
        return evaluate.main(evaluate.PiiEvalOptions(
            data=args.data, threshold=args.threshold, presidio=args.presidio, out=args.out,
            served=served, recognisers=args.recognisers,
            type_thresholds=(evaluate.read_type_thresholds(args.type_thresholds)
                             if args.type_thresholds else None),
            choose_thresholds=args.choose_thresholds, join_tokens=args.join_tokens))
    if args.command == "auth":
        from router_svc.core.auth import hash_key

        key = sys.stdin.readline().strip()
        if not key:
            print("router-svc: error: no key on stdin", file=sys.stderr)
            return 2
        print(hash_key(key))
        return 0
    if args.command == "check-config":
        from router_svc.config.loading import load_config

        cfg = load_config(args.config)
        for w in cfg.warnings:
            print(f"warning: {w}", file=sys.stderr)
        print(
            f"{args.config}: OK ({len(cfg.categories)} categories, "
            f"{len(cfg.model_config)} models, default_model {cfg.default_model})"
        )
        return 0
    if args.command == "serve":
        from router_svc.ops.serve import serve

        return serve(args.config)
    if args.command == "extproc":
        from router_svc.ops.serve import serve

        return serve(args.config, extproc=True, extproc_port=args.port)
    if args.command == "up":
        from router_svc.ops.up import UpOptions, up

        return up(UpOptions(
            config=args.config, port=args.port, model_dir=args.model_dir,
            data_dir=args.data_dir, int8=args.int8, triton_url=args.triton_url,
            no_backends=args.no_backends, backend_base_port=args.backend_base_port,
            cache=args.cache))
    raise AssertionError(args.command)


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions the command line reports as one clear line (user mistakes, not bugs)."""
    from export.backbone import BackboneError
    from export.build import BuildError
    from export.data import DataError
    from router_svc.classify.tokenization import TokenizerError
    from router_svc.config.loading import ConfigError
    from router_svc.triton.client import ModelContractError, TritonError
    from router_svc.triton.launcher import TritonStartError

    return (ConfigError, BuildError, BackboneError, DataError, TokenizerError,
            ModelContractError, TritonError, TritonStartError, FileNotFoundError)


if __name__ == "__main__":
    sys.exit(main())

