"""The Triton model alone, load-tested with perf_analyzer (gRPC).

Input data is built from real prompts (MMLU-Pro questions and presidio PII sentences, a
realistic mix of token lengths; ``--seq-len`` fixes the shape). For each Triton configuration
it runs a concurrency sweep and a request-rate sweep, one perf_analyzer run per load point, and
reports throughput, p50/p95/p99 latency and Triton's server-side queue and compute time (from
perf_analyzer's verbose CSV), plus the average batch Triton executed (its statistics).

Without ``--triton-url`` it starts the embedded Triton (CPU, Python backend) itself, once per
configuration of the grid ``--queue-delay-us`` x ``--preferred`` x ``--instances``, rendered
into the model repository before start, so dynamic batching can be tuned by measurement.

Baseline, measured in the same run: raw onnxruntime in-process on the same prompts and
threads (``--ort-batches``, before and after the sweep); throughput is also given as a ratio
to the best in-process figure, p50 as a ratio to one in-process call at batch 1, and with a
grid, everything as a ratio to the first configuration at the same load point.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import tempfile
from pathlib import Path

from _common import (
    Output,
    add_model_args,
    add_output_args,
    check_model_dir,
    int_list,
    load_prompts,
    make_batches,
    markdown_table,
    median,
    num_list,
    plot_curves,
    progress,
    ratio,
    say,
    token_rows,
)

from router_svc.labels import MODEL_NAME


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="perf/triton_model.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--triton-url", default=None,
                    help="gRPC host:port of a running Triton (e.g. the NGC image on a GPU); "
                         "default: start the embedded CPU Triton per configuration")
    ap.add_argument("--model-name", default=MODEL_NAME, help="(default: %(default)s)")
    ap.add_argument("--concurrency-range", default="1,2,4,8,16,32",
                    help="concurrency levels: a list '1,4,16' or start:end:step; '' skips the "
                         "concurrency sweep (default: %(default)s)")
    ap.add_argument("--request-rate-range", default="25,50,100,150",
                    help="request rates (req/s): a list or start:end:step; '' skips the rate "
                         "sweep (default: %(default)s)")
    ap.add_argument("--request-distribution", choices=["constant", "poisson"],
                    default="constant")
    ap.add_argument("--pa-async", action="store_true",
                    help="perf_analyzer --async: a few threads keep the concurrency, instead "
                         "of one thread per request in flight (for high concurrency on a GPU)")
    ap.add_argument("--batch-size", type=int, default=1,
                    help="rows per request (perf_analyzer -b); above 1 needs --seq-len, since "
                         "one request's rows must share a shape (default: 1)")
    ap.add_argument("--duration", type=float, default=5.0,
                    help="perf_analyzer measurement window in seconds (-p) (default: %(default)s)")
    ap.add_argument("--max-trials", type=int, default=6,
                    help="windows per point before perf_analyzer gives up on stability; an "
                         "unstable point is re-run once and accepted, marked stable=no "
                         "(default: %(default)s)")
    ap.add_argument("--stability", type=float, default=15.0,
                    help="perf_analyzer --stability-percentage (default: %(default)s)")
    g = ap.add_argument_group("Triton configuration grid (embedded Triton only)")
    g.add_argument("--queue-delay-us", default="2000",
                   help="max_queue_delay_microseconds values, comma list (default: %(default)s)")
    g.add_argument("--preferred", default="8,16,32,64",
                   help="preferred_batch_size lists separated by ';', e.g. '8,16,32,64;4,8' "
                        "(default: %(default)s)")
    g.add_argument("--instances", default="1",
                   help="instance_group count values, comma list (default: %(default)s)")
    g.add_argument("--max-batch-size", type=int, default=64, help="(default: %(default)s)")
    g.add_argument("--ort-threads", type=int, default=0,
                   help="onnxruntime intra-op threads in Triton's model and in the in-process "
                        "baseline; 0 = onnxruntime decides (default: %(default)s)")
    b = ap.add_argument_group("in-process onnxruntime baseline")
    b.add_argument("--baseline", choices=["ort", "none"], default="ort",
                   help="measure in-process onnxruntime before and after the sweep "
                        "(default: %(default)s)")
    b.add_argument("--ort-batches", default="1,32",
                   help="in-process batch sizes (default: %(default)s)")
    b.add_argument("--ort-provider", choices=["cpu", "cuda"], default="cpu",
                   help="cuda needs onnxruntime-gpu (default: %(default)s)")
    add_output_args(ap)
    args = ap.parse_args(argv)
    args.concurrency = int_list(args.concurrency_range) if args.concurrency_range else []
    args.rates = num_list(args.request_rate_range) if args.request_rate_range else []
    if not args.concurrency and not args.rates:
        ap.error("nothing to measure: both --concurrency-range and --request-rate-range empty")
    args.delays = int_list(args.queue_delay_us)
    args.preferred_sets = [int_list(s) for s in args.preferred.split(";") if s.strip()]
    args.instance_counts = int_list(args.instances)
    for p in args.preferred_sets:
        if max(p) > args.max_batch_size:
            ap.error(f"--preferred {p}: sizes must be <= --max-batch-size {args.max_batch_size}")
    grid = len(args.delays) * len(args.preferred_sets) * len(args.instance_counts)
    if args.triton_url and grid > 1:
        ap.error("the configuration grid needs the embedded Triton: drop --triton-url, or give "
                 "one value each for --queue-delay-us, --preferred and --instances")
    if args.batch_size > 1 and not args.seq_len:
        ap.error("--batch-size > 1 needs --seq-len (rows of one request share one shape)")
    return args


def write_input_data(path: Path, rows) -> None:
    """perf_analyzer ``--input-data`` JSON: one entry per prompt row, ``content`` flattened and
    ``shape`` without the batch dimension (with ``-b B`` perf_analyzer batches B entries)."""
    data = [{"input_ids": {"content": i.tolist(), "shape": [len(i)]},
             "attention_mask": {"content": m.tolist(), "shape": [len(m)]}}
            for i, m in zip(rows.ids, rows.mask, strict=True)]
    path.write_text(json.dumps({"data": data}))


def triton_stats(url: str, model: str) -> tuple[int, int]:
    """(inference_count, execution_count) from Triton's statistics (gRPC)."""
    import tritonclient.grpc as grpcclient

    try:
        c = grpcclient.InferenceServerClient(url)
        js = c.get_inference_statistics(model, as_json=True)
        c.close()
    except Exception:
        return (0, 0)
    inf = sum(int(s.get("inference_count", 0)) for s in js.get("model_stats", []))
    exe = sum(int(s.get("execution_count", 0)) for s in js.get("model_stats", []))
    return inf, exe


def ort_baseline(args, rows, prog, label: str) -> dict[int, dict]:
    from _ort import run_closed, session

    sess = session(args.model_dir / "model.onnx", args.ort_threads, args.ort_provider)
    out = {}
    for b in int_list(args.ort_batches):
        batches = make_batches(rows, b)
        task = prog.add_task(f"onnxruntime in-process {label}, batch {b}",
                             total=args.duration + 0.5)
        m = run_closed(sess, batches, args.duration, 0.5,
                       tick=lambda dt, t=task: prog.advance(t, dt))
        prog.update(task, completed=args.duration + 0.5)
        out[b] = m.summary()
    return out


def run_point(pa, args, url: str, data: Path, mode: str, load: float, work: Path, tag: str):
    from _pa import PerfAnalyzerFailed, read_csv

    csv_path = work / f"pa-{tag}-{mode}-{load:g}.csv"
    base = ["-m", args.model_name, "-u", url, "-i", "grpc", "--input-data", str(data),
            "-b", str(args.batch_size), "-p", str(int(args.duration * 1000)),
            "-f", str(csv_path), "--verbose-csv"]
    if args.pa_async:
        base.append("--async")
    if mode == "concurrency":
        base += ["--concurrency-range", f"{int(load)}"]
    else:
        base += ["--request-rate-range", f"{load:g}",
                 "--request-distribution", args.request_distribution]
    timeout = args.duration * (args.max_trials + 2) + 60
    log = work / f"pa-{tag}-{mode}-{load:g}.log"
    stable = "yes"
    try:
        pa.run([*base, "-r", str(args.max_trials), "-s", str(args.stability)], log, timeout)
    except PerfAnalyzerFailed as e:
        if "stable" not in str(e).lower() and "unstable" not in str(e).lower():
            raise
        stable = "no"  # accept the next measurement as it is
        pa.run([*base, "-r", "3", "-s", "1000"], log, timeout)
    rows = read_csv(csv_path)
    if not rows:
        raise RuntimeError(f"perf_analyzer wrote no results to {csv_path} (log {log})")
    r = rows[0]
    r["stable"] = stable
    return r


def main(argv=None) -> int:
    args = parse_args(argv)
    check_model_dir(args.model_dir, need_onnx=not (args.triton_url and args.baseline == "none"))
    from _pa import PerfAnalyzerFailed, PerfAnalyzerMissing, setup

    try:
        pa = setup()
    except PerfAnalyzerMissing as e:
        say(f"error: {e}")
        return 2
    out = Output("triton_model", args)
    prompts = load_prompts(args.data_dir, args.prompts, args.pii_fraction, args.seed)
    rows = token_rows(args.model_dir / "tokenizer.json", [p.text for p in prompts],
                      args.max_len, args.seq_len)
    say(f"prompts: {rows.describe()}")
    work = Path(tempfile.mkdtemp(prefix="perf-triton-model-", dir=out.dir))
    data = work / "input_data.json"
    write_input_data(data, rows)

    configs = [dict(max_queue_delay_us=d, preferred_batch_sizes=p, instance_count=n)
               for d, p, n in itertools.product(args.delays, args.preferred_sets,
                                                args.instance_counts)]
    points = [("concurrency", float(c)) for c in args.concurrency]
    points += [("rate", float(r)) for r in args.rates]
    results: list[dict] = []
    ort_before = ort_after = {}
    with progress() as prog:
        if args.baseline == "ort":
            ort_before = ort_baseline(args, rows, prog, "(before)")
        overall = prog.add_task("perf_analyzer points", total=len(configs) * len(points))
        for ci, cfg in enumerate(configs):
            label = ("external" if args.triton_url else
                     f"delay {cfg['max_queue_delay_us']}us, pref "
                     f"{'/'.join(map(str, cfg['preferred_batch_sizes']))}, "
                     f"x{cfg['instance_count']}")
            with contextlib.ExitStack() as stack:
                url = args.triton_url
                if url is None:
                    from router_svc.triton.launcher import TritonServer

                    task = prog.add_task(f"starting Triton ({label})", total=None)
                    server = TritonServer(
                        args.model_dir, work_dir=work / f"triton-{ci}", startup_timeout_s=300,
                        max_batch_size=args.max_batch_size,
                        ort_intra_op_threads=args.ort_threads, **cfg)
                    stack.enter_context(server)
                    prog.remove_task(task)
                    url = server.grpc_url
                for mode, load in points:
                    prog.update(overall, description=f"[{label}] {mode} {load:g}")
                    before = triton_stats(url, args.model_name)
                    try:
                        r = run_point(pa, args, url, data, mode, load, work, f"c{ci}")
                    except (PerfAnalyzerFailed, RuntimeError) as e:
                        say(f"point {mode}={load:g} failed: {e}")
                        r = {"throughput": float("nan"), "stable": "failed"}
                    after = triton_stats(url, args.model_name)
                    d_inf, d_exe = after[0] - before[0], after[1] - before[1]
                    results.append({
                        "config": label, "config_index": ci, "mode": mode, "load": load,
                        "throughput": r.get("throughput", float("nan")) * 1.0,
                        "p50_ms": r.get("p50_ms", float("nan")),
                        "p95_ms": r.get("p95_ms", float("nan")),
                        "p99_ms": r.get("p99_ms", float("nan")),
                        "avg_ms": r.get("avg_ms", float("nan")),
                        "server_queue_ms": r.get("server_queue_ms", float("nan")),
                        "server_compute_ms": sum(r.get(k, 0.0) for k in (
                            "server_compute_input_ms", "server_compute_infer_ms",
                            "server_compute_output_ms")) if "server_compute_infer_ms" in r
                        else float("nan"),
                        "server_compute_infer_ms": r.get("server_compute_infer_ms",
                                                         float("nan")),
                        "client_overhead_ms": r.get("client_send_ms", 0.0)
                        + r.get("client_recv_ms", 0.0),
                        "avg_exec_batch": d_inf / d_exe if d_exe else float("nan"),
                        "stable": r.get("stable", "?"),
                        **{k: v for k, v in r.items() if k not in ("load", "stable")
                           and k.startswith(("Server", "Client", "response", "request"))},
                    })
                    prog.advance(overall)
        if args.baseline == "ort":
            ort_after = ort_baseline(args, rows, prog, "(after)")

    # ---- ratios
    ort = {b: {k: median([ort_before[b][k], ort_after[b][k]]) for k in ort_before[b]
               if isinstance(ort_before[b][k], float)} for b in ort_before}
    best_ort = max((v["seqs_per_s"] for v in ort.values()), default=float("nan"))
    ort1_p50 = ort.get(1, {}).get("p50_ms", float("nan"))
    first = {(r["mode"], r["load"]): r for r in results if r["config_index"] == 0}
    for r in results:
        r["seqs_per_s"] = r["throughput"]  # perf_analyzer's inferences/s count rows (x -b)
        r["queue_share"] = ratio(r["server_queue_ms"],
                                 r["server_queue_ms"] + r["server_compute_ms"])
        r["x_ort_best"] = ratio(r["seqs_per_s"], best_ort)
        r["p50_x_ort_b1"] = ratio(r["p50_ms"], ort1_p50)
        f = first.get((r["mode"], r["load"]))
        r["x_cfg0"] = ratio(r["seqs_per_s"], f["seqs_per_s"]) if f else float("nan")
        r["p99_x_cfg0"] = ratio(r["p99_ms"], f["p99_ms"]) if f else float("nan")

    # ---- output
    base_rows = [{"config": f"onnxruntime in-process ({args.ort_provider}, threads "
                            f"{args.ort_threads or 'auto'})", "batch": b,
                  "seqs_per_s": v["seqs_per_s"], "p50_ms": v["p50_ms"], "p99_ms": v["p99_ms"],
                  "before": ort_before[b]["seqs_per_s"], "after": ort_after[b]["seqs_per_s"],
                  "x_best": ratio(v["seqs_per_s"], best_ort)} for b, v in ort.items()]
    out.write_csv(results)
    if base_rows:
        out.write_csv(base_rows, "-baseline.csv")
    cols = [("config", "config"), ("mode", "mode"), ("load", "load"),
            ("seqs_per_s", "seq/s"), ("x_ort_best", "x ort best"),
            ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"), ("p99_ms", "p99 ms"),
            ("p50_x_ort_b1", "p50 x ort b1"), ("server_queue_ms", "queue ms"),
            ("server_compute_ms", "compute ms"), ("queue_share", "queue share"),
            ("avg_exec_batch", "exec batch"), ("stable", "stable")]
    if len(configs) > 1:
        cols[5:5] = [("x_cfg0", "x cfg0"), ("p99_x_cfg0", "p99 x cfg0")]
    print(f"## Triton model `{args.model_name}` via perf_analyzer (gRPC, batch "
          f"{args.batch_size}, {rows.describe()})\n")
    if base_rows:
        print("Baseline: in-process onnxruntime, same prompts and threads (median of before and "
              "after the sweep)\n")
        print(markdown_table(base_rows, [("config", "baseline"), ("batch", "batch"),
                                         ("seqs_per_s", "seq/s"), ("before", "before"),
                                         ("after", "after"), ("x_best", "x best"),
                                         ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms")]))
        print()
    print(markdown_table(results, cols))
    if out.plot and results:
        for mode, load_label in (("concurrency", "concurrency"), ("rate", "request rate (/s)")):
            series: dict[str, list[dict]] = {}
            for r in results:
                if r["mode"] == mode and r["throughput"] == r["throughput"]:
                    series.setdefault(r["config"], []).append(
                        {"load": r["load"], "throughput": r["seqs_per_s"],
                         "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"]})
            if series:
                plot_curves(out.path(f"-{mode}.png"),
                            f"Triton model, {mode} sweep (perf_analyzer)", series,
                            baseline=next(iter(series)), load_key="load",
                            load_label=load_label, tput_label="sequences/s")
    out.finish(work_dir=str(work), ort_baseline=ort)
    return 0


if __name__ == "__main__":
    sys.exit(main())
