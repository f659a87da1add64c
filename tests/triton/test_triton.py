"""The model contract end to end: labels, ONNX parity, the real Triton, batching, failures."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import InferInput, model_config_pb2
from tritonclient.utils import InferenceServerException

from router_svc.config.schema import TritonConfig
from router_svc.labels import (
    CATEGORIES,
    CATEGORY_LOGITS,
    EMBEDDING,
    MODEL_NAME,
    PII_LOGITS,
    PII_TAGS,
)
from router_svc.triton.client import (
    InferOutputs,
    ModelContractError,
    TritonClient,
    TritonError,
    TritonTimeout,
    TritonUnavailable,
    map_error,
    parse_model_config,
)
from router_svc.triton.launcher import TritonServer, TritonStartError, free_port, session_pids
from router_svc.triton.python_model import (
    BadRequest,
    check_inputs,
    length_groups,
    pad_batch,
    quantises_at_run_time,
    run_rows,
    split_outputs,
)
from router_svc.triton.repository import (
    COMMITTED,
    DEFAULT_MAX_BATCH_SIZE,
    REPO_ROOT,
    label_parameters,
    onnx_output_dims,
    render_config,
)

TEXTS = [
    "Hi",
    "What is the derivative of x squared?",
    "My name is John Smith, my email is john.smith@example.com and my phone is 555-123-4567.",
    "Explain the difference between civil law and common law systems in three sentences, "
    "with an example of a famous case from each tradition and why it matters today.",
    "Which enzyme unwinds DNA during replication?",
]


def parse_pbtxt(text: str) -> dict:
    """A config.pbtxt as the JSON dict Triton's ``get_model_config(as_json=True)`` returns."""
    msg = text_format.Parse(text, model_config_pb2.ModelConfig())
    return json.loads(json_format.MessageToJson(msg, preserving_proto_field_name=True))


def encode(model_dir, texts):
    from export.onnx_export import encode_batch

    return encode_batch(model_dir / "tokenizer.json", texts)


def ort_outputs(model_dir, ids, mask) -> dict[str, np.ndarray]:
    from export.onnx_export import run_onnx

    return run_onnx(model_dir / "model.onnx", ids, mask)


# ---------------------------------------------------------------- label contract (no server)


@pytest.mark.parametrize("kind", sorted(COMMITTED))
def test_committed_config_is_rendered_from_labels(kind):
    path = REPO_ROOT / COMMITTED[kind]
    name = path.parent.name
    assert path.read_text() == render_config(kind, name=name), (
        f"{path} drifted from labels.py: run `python -m router_svc.triton.repository`")


@pytest.mark.parametrize("kind", ["onnxruntime", "python", "tensorrt"])
def test_rendered_config_parses_and_carries_labels(kind):
    cfg = parse_pbtxt(render_config(kind))
    info = parse_model_config(cfg)
    assert info.categories == CATEGORIES
    assert info.pii_tags == PII_TAGS
    assert info.max_sequence_length == 512
    assert info.max_batch_size >= 64
    assert info.input_dtype == ("INT32" if kind == "tensorrt" else "INT64")
    assert cfg["dynamic_batching"]["preferred_batch_size"]
    assert cfg["instance_group"][0]["kind"] == ("KIND_CPU" if kind == "python" else "KIND_GPU")
    # No queue policy by default: with one, Triton 2.51 holds some calls ~0.5 s
    # (repository.DEFAULT_QUEUE_TIMEOUT_US); asked for, it is rendered.
    assert "default_queue_policy" not in cfg["dynamic_batching"]
    asked = parse_pbtxt(render_config(kind, queue_timeout_us=QUEUE_TIMEOUT_US,
                                      max_queue_size=MAX_QUEUE_SIZE))
    assert_queue_policy(asked)


QUEUE_TIMEOUT_US, MAX_QUEUE_SIZE = 60_000_000, 1024


def assert_queue_policy(cfg: dict) -> None:
    """Triton rejects work queued past the timeout (stale: its caller gave up) or the size."""
    policy = cfg["dynamic_batching"]["default_queue_policy"]
    assert policy.get("timeout_action", "REJECT") == "REJECT"  # the enum's default: omitted
    assert int(policy["default_timeout_microseconds"]) == QUEUE_TIMEOUT_US
    assert policy["allow_timeout_override"] is True
    assert int(policy["max_queue_size"]) == MAX_QUEUE_SIZE
    # above the router's gRPC deadline per call: only work whose caller gave up is dropped
    assert TritonConfig().timeout_s * 1e6 < QUEUE_TIMEOUT_US


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"category_labels": None}, "'category_labels' is missing"),
        ({"pii_tags": "[\"O\", "}, "'pii_tags' is not valid JSON"),
        ({"pii_tags": "\"O\""}, "'pii_tags' must be a non-empty JSON list"),
        ({"embedding_dim": "abc"}, "'embedding_dim' must be a positive integer"),
        ({"category_labels": json.dumps(["a", "b"])}, "labels do not belong to this model"),
    ],
)
def test_contract_errors_name_the_parameter_and_the_fix(params, fragment):
    p = label_parameters()
    for k, v in params.items():
        if v is None:
            del p[k]
        else:
            p[k] = v
    cfg = parse_pbtxt(render_config("python", parameters=p))
    with pytest.raises(ModelContractError, match="render_config") as e:
        parse_model_config(cfg)
    assert fragment in str(e.value)


def test_python_model_pads_and_splits_ragged_requests():
    a = (np.array([[101, 5, 102]]), np.array([[1, 1, 1]]))
    b = (np.array([[101, 102], [101, 102]]), np.array([[1, 1], [1, 0]]))
    ids, mask = pad_batch([a, b])
    assert ids.shape == (3, 3) and ids[1:, 2].tolist() == [0, 0] and mask[1:, 2].tolist() == [0, 0]
    outs = {"pii_logits": np.arange(3 * 3 * 2).reshape(3, 3, 2), "embedding": np.ones((3, 4))}
    pa, pb = split_outputs(outs, [(1, 3), (2, 2)])
    assert pa["pii_logits"].shape == (1, 3, 2) and pb["pii_logits"].shape == (2, 2, 2)
    assert pb["embedding"].shape == (2, 4)
    with pytest.raises(BadRequest, match="same shape"):
        check_inputs(a[0], b[1], 512)
    with pytest.raises(BadRequest, match="INT64"):
        check_inputs(a[0].astype(np.int32), a[1].astype(np.int32), 512)
    with pytest.raises(BadRequest, match="max_sequence_length"):
        check_inputs(a[0], a[1], 2)


def test_python_model_groups_requests_by_length():
    # near lengths share a run; a short request is not padded to a long one
    assert length_groups([(1, 100), (1, 98), (1, 20), (1, 19)]) == [[0, 1], [2, 3]]
    # two batch-32 requests of 180 and 120 tokens: padding would waste 25%, so two runs
    assert length_groups([(32, 180), (32, 120)]) == [[0], [1]]
    assert length_groups([(4, 64)] * 3) == [[0, 1, 2]]
    assert length_groups([]) == []


def test_run_rows_runs_each_row_alone_without_its_padding():
    seen = []

    def run(ids, mask):
        seen.append(ids.shape)
        n = ids.shape[1]
        return {"category_logits": ids[:, :1] * 1.0, "embedding": np.full((1, 2), n * 1.0),
                "pii_logits": np.ones((1, n, 3))}

    ids = np.array([[101, 7, 8, 102], [101, 9, 102, 0], [101, 102, 0, 0]])
    mask = (ids > 0).astype(np.int64)
    mask[2] = [1, 0, 1, 0]  # not ones-then-zeros: runs whole
    out = run_rows(run, ids, mask)
    assert seen == [(1, 4), (1, 3), (1, 4)]
    assert out["embedding"][:, 0].tolist() == [4, 3, 4]
    assert out["pii_logits"].shape == (3, 4, 3)
    assert out["pii_logits"][1].sum(1).tolist() == [3, 3, 3, 0]  # zero beyond its tokens
    assert out["category_logits"][:, 0].tolist() == [101, 101, 101]


def test_only_run_time_quantisation_is_batch_dependent(tiny_model_dir, tmp_path):
    import onnx

    from export.onnx_export import quantize_int8

    q = tmp_path / "model.int8.onnx"
    quantize_int8(tiny_model_dir / "model.onnx", q)
    assert {n.op_type for n in onnx.load(str(q)).graph.node} & {"DynamicQuantizeLinear",
                                                                  "MatMulInteger"}
    assert quantises_at_run_time(str(q))
    assert not quantises_at_run_time(str(tiny_model_dir / "model.onnx"))


def test_error_mapping():
    def err(status):
        return map_error(InferenceServerException("boom", status=status), "infer")

    assert type(err("StatusCode.DEADLINE_EXCEEDED")) is TritonTimeout
    assert type(err("StatusCode.UNAVAILABLE")) is TritonUnavailable
    assert type(err("StatusCode.INVALID_ARGUMENT")) is TritonError
    assert isinstance(err("StatusCode.DEADLINE_EXCEEDED"), TritonUnavailable)


async def test_unreachable_server_is_unavailable():
    async with TritonClient(f"127.0.0.1:{free_port()}", timeout_s=2) as c:
        assert not await c.ready()
        with pytest.raises(TritonUnavailable):
            await c.load_model_info()


# ---------------------------------------------------------------- ONNX export


def test_onnx_outputs_match_label_counts(tiny_model_dir):
    dims = onnx_output_dims(tiny_model_dir / "model.onnx")
    assert dims[CATEGORY_LOGITS][1:] == [len(CATEGORIES)]
    assert dims[PII_LOGITS][2:] == [len(PII_TAGS)]
    assert isinstance(dims[PII_LOGITS][1], str)  # dynamic sequence axis
    assert all(isinstance(d[0], str) for d in dims.values())  # dynamic batch axis


def test_onnx_parity_tiny(tiny_model_dir):
    from export.onnx_export import parity
    from export.tiny import tiny_dual_head

    rep = parity(tiny_dual_head(0), tiny_model_dir / "model.onnx",
                 tiny_model_dir / "tokenizer.json", TEXTS)
    assert rep.max_abs_diff < 1e-4, rep
    assert rep.argmax_identical and rep.ok
    assert len(set(rep.seq_lengths)) == len(TEXTS)  # padding really happened


# ---------------------------------------------------------------- real Triton


@pytest.mark.integration
async def test_runtime_client_against_the_embedded_tritonserver(triton):
    """The runtime's tritonclient (2.73+, protobuf 6) against the tritonserver 2.51 of the
    nvidia-pytriton wheel: the pairing that every test on the ``triton`` fixture runs."""
    from importlib.metadata import version

    from google.protobuf import __version__ as protobuf_version
    from tritonclient.grpc.aio import InferenceServerClient

    client = InferenceServerClient(triton.grpc_url)
    try:
        meta = await client.get_server_metadata()
    finally:
        await client.close()
    assert meta.name == "triton" and meta.version == "2.51.0", meta
    assert tuple(int(p) for p in version("tritonclient").split(".")[:2]) >= (2, 73)
    assert int(protobuf_version.split(".")[0]) == 6


@pytest.mark.integration
async def test_label_contract_from_triton(triton, tiny_model_dir):
    async with TritonClient(triton.grpc_url, MODEL_NAME, timeout_s=10) as c:
        assert await c.ready()
        info = await c.load_model_info()
    assert info.categories == CATEGORIES and info.pii_tags == PII_TAGS
    assert info.max_batch_size >= 64 and info.max_sequence_length == 512
    dims = onnx_output_dims(tiny_model_dir / "model.onnx")
    assert dims[EMBEDDING][1] == info.embedding_dim
    assert dims[CATEGORY_LOGITS][1] == len(info.categories)
    assert dims[PII_LOGITS][2] == len(info.pii_tags)


@pytest.mark.integration
async def test_triton_drops_requests_queued_past_their_timeout(triton, tiny_model_dir,
                                                                tmp_path):
    """A queue policy asked for loads: Triton serves it back, and a request that waits in the
    queue past its timeout (here a per-request override of 1 us, behind full batches that keep
    the one instance busy) is rejected without running. The session's Triton has none (the
    default)."""
    async with TritonClient(triton.grpc_url, timeout_s=10) as c:
        served = await c._client.get_model_config(MODEL_NAME, as_json=True, client_timeout=10)
        assert "default_queue_policy" not in served["config"]["dynamic_batching"]
    server = await TritonServer(tiny_model_dir, work_dir=tmp_path,
                                queue_timeout_us=QUEUE_TIMEOUT_US,
                                max_queue_size=MAX_QUEUE_SIZE).astart()
    try:
        await _queued_past_timeout(server, tiny_model_dir)
    finally:
        server.stop()


async def _queued_past_timeout(server: TritonServer, tiny_model_dir) -> None:
    async with TritonClient(server.grpc_url, timeout_s=60) as c:
        await c.load_model_info()
        raw = c._client
        served = await raw.get_model_config(MODEL_NAME, as_json=True, client_timeout=10)
        assert_queue_policy(served["config"])
        long_ids = np.full((DEFAULT_MAX_BATCH_SIZE, 512), 1996, dtype=np.int64)
        busy = [asyncio.ensure_future(c.infer(long_ids, np.ones_like(long_ids)))
                for _ in range(3)]
        await asyncio.sleep(0)  # the full batches go out first
        ids, mask = encode(tiny_model_dir, TEXTS[:1])
        inputs = [InferInput("input_ids", list(ids.shape), "INT64"),
                  InferInput("attention_mask", list(mask.shape), "INT64")]
        inputs[0].set_data_from_numpy(ids)
        inputs[1].set_data_from_numpy(mask)
        with pytest.raises(InferenceServerException, match=r"(?i)timeout"):
            await raw.infer(MODEL_NAME, inputs, timeout=1, client_timeout=60)
        outs = await asyncio.gather(*busy)  # the ones within their timeout still ran
    assert all(o.embedding.shape[0] == DEFAULT_MAX_BATCH_SIZE for o in outs)


@pytest.mark.integration
async def test_triton_infer_matches_onnxruntime(triton, tiny_model_dir):
    ids, mask = encode(tiny_model_dir, TEXTS)
    ref = ort_outputs(tiny_model_dir, ids, mask)
    async with TritonClient(triton.grpc_url, timeout_s=10) as c:
        await c.load_model_info()
        out = await c.infer(ids, mask)
        # The same rows as separate requests of their own lengths, at once: the dynamic batcher
        # may hand them to execute() together, which pads them and trims pii_logits back.
        lens = mask.sum(1)
        singles = await asyncio.gather(*(c.infer(ids[i:i + 1, :n], mask[i:i + 1, :n])
                                         for i, n in enumerate(lens)))
    assert isinstance(out, InferOutputs)
    np.testing.assert_allclose(out.category_logits, ref[CATEGORY_LOGITS], atol=1e-5)
    np.testing.assert_allclose(out.embedding, ref[EMBEDDING], atol=1e-5)
    np.testing.assert_allclose(out.pii_logits, ref[PII_LOGITS], atol=1e-5)
    for i, (n, s) in enumerate(zip(lens, singles, strict=True)):
        assert s.pii_logits.shape == (1, n, len(PII_TAGS))
        np.testing.assert_allclose(s.category_logits[0], ref[CATEGORY_LOGITS][i], atol=1e-4)
        np.testing.assert_allclose(s.embedding[0], ref[EMBEDDING][i], atol=1e-4)
        np.testing.assert_allclose(s.pii_logits[0], ref[PII_LOGITS][i, :n], atol=1e-4)


@pytest.mark.integration
async def test_dynamic_batching_under_concurrency(triton, tiny_model_dir):
    ids, mask = encode(tiny_model_dir, TEXTS)
    # A full batch of the longest rows first: it runs alone (it fills max_batch_size) and keeps
    # the model instance busy while the single rows arrive, so they queue and Triton must batch
    # them. Without it, on a loaded machine each single row could finish before the next came.
    long_rows = DEFAULT_MAX_BATCH_SIZE
    long_ids = np.full((long_rows, 512), 1996, dtype=np.int64)
    long_ids[:, 0], long_ids[:, -1] = 101, 102
    long_mask = np.ones_like(long_ids)
    async with TritonClient(triton.grpc_url, timeout_s=60) as c:
        await c.load_model_info()
        before = await c.model_statistics()
        n = 64
        busy = asyncio.ensure_future(c.infer(long_ids, long_mask))
        await asyncio.sleep(0)  # the long request goes out first
        outs = await asyncio.gather(*(c.infer(ids[i % len(TEXTS)][None], mask[i % len(TEXTS)][None])
                                      for i in range(n)))
        await busy
        # Triton records an execution's statistics after its responses went out: wait for them.
        for _ in range(50):
            after = await c.model_statistics()
            if after.inference_count - before.inference_count >= n + long_rows:
                break
            await asyncio.sleep(0.1)
    assert len(outs) == n
    inferences = after.inference_count - before.inference_count - long_rows
    executions = after.execution_count - before.execution_count - 1  # the long batch's own
    assert inferences == n
    assert executions < inferences, f"{executions} executions for {inferences} rows: no batching"


@pytest.mark.integration
async def test_bad_request_fails_alone(triton, tiny_model_dir):
    ids, mask = encode(tiny_model_dir, TEXTS[:2])
    bad_ids = ids.copy()
    bad_ids[0, 1] = 10**7  # outside the vocabulary: onnxruntime's Gather fails
    async with TritonClient(triton.grpc_url, timeout_s=10) as c:
        await c.load_model_info()
        results = await asyncio.gather(
            c.infer(bad_ids[:1], mask[:1]), *(c.infer(ids, mask) for _ in range(4)),
            return_exceptions=True)
        # Shapes the model rejects itself (Triton only checks dtype and rank).
        raw = c._client
        t_ids = InferInput("input_ids", [1, 3], "INT64")
        t_ids.set_data_from_numpy(np.array([[101, 7, 102]], dtype=np.int64))
        t_mask = InferInput("attention_mask", [1, 2], "INT64")
        t_mask.set_data_from_numpy(np.array([[1, 1]], dtype=np.int64))
        with pytest.raises(InferenceServerException, match="same shape"):
            await raw.infer(MODEL_NAME, [t_ids, t_mask], client_timeout=10)
        assert await c.ready()
    assert isinstance(results[0], TritonError) and not isinstance(results[0], TritonUnavailable)
    assert all(isinstance(r, InferOutputs) for r in results[1:]), results


@pytest.mark.integration
async def test_missing_label_parameter_is_a_contract_error(tiny_model_dir, tmp_path):
    params = label_parameters(embedding_dim=32)
    del params["pii_tags"]
    cfg = render_config("python", embedding_dim=32, parameters=params)
    server = TritonServer(tiny_model_dir, work_dir=tmp_path, config_text=cfg)
    await server.astart()
    try:
        async with TritonClient(server.grpc_url, timeout_s=10) as c:
            with pytest.raises(ModelContractError, match="'pii_tags' is missing"):
                await c.load_model_info()
    finally:
        await server.astop()
    assert server.process.poll() is not None
    assert session_pids(server.pid) == [], "a tritonserver or stub process outlived stop()"


@pytest.mark.integration
def test_broken_config_fails_fast_with_the_log(tiny_model_dir, tmp_path):
    cfg = render_config("python", embedding_dim=32).replace("max_batch_size: 64",
                                                            "max_batch_size: sixty-four")
    server = TritonServer(tiny_model_dir, work_dir=tmp_path, config_text=cfg,
                          startup_timeout_s=60)
    t0 = time.monotonic()
    with pytest.raises(TritonStartError) as e:
        server.start()
    assert time.monotonic() - t0 < 30
    msg = str(e.value)
    assert "exited with status" in msg and "config.pbtxt" in msg and "sixty" in msg, msg
    assert server.process.poll() is not None
    assert session_pids(server.pid) == []


@pytest.mark.integration
async def test_int8_model_answers_a_row_the_same_in_any_batch(tiny_model_dir, tmp_path):
    """A run-time-quantised model served by Triton: a prompt's outputs do not depend on what
    it is batched or padded with (the Python model runs it alone, cut to its tokens)."""
    from export.onnx_export import quantize_int8

    qdir = tmp_path / "int8"
    quantize_int8(tiny_model_dir / "model.onnx", qdir / "model.onnx")
    shutil.copy2(tiny_model_dir / "tokenizer.json", qdir / "tokenizer.json")
    ids, mask = encode(tiny_model_dir, TEXTS)
    lens = mask.sum(1)
    i = int(np.argmin(lens))  # the shortest row: padded the most in the batch
    n = int(lens[i])
    server = TritonServer(qdir, work_dir=tmp_path / "triton")
    await server.astart()
    try:
        async with TritonClient(server.grpc_url, timeout_s=30) as c:
            await c.load_model_info()
            batched = await c.infer(ids, mask)
            alone = await c.infer(ids[i:i + 1, :n], mask[i:i + 1, :n])
    finally:
        await server.astop()
    np.testing.assert_array_equal(batched.category_logits[i], alone.category_logits[0])
    np.testing.assert_array_equal(batched.embedding[i], alone.embedding[0])
    np.testing.assert_array_equal(batched.pii_logits[i, :n], alone.pii_logits[0])
    # ... where a whole-batch run of the same int8 model differs (the reason for all this)
    ref = ort_outputs(qdir, ids, mask)
    assert not np.array_equal(ref[EMBEDDING][i], alone.embedding[0])


@pytest.mark.integration
def test_stop_leaves_no_process(tiny_model_dir, tmp_path, monkeypatch):
    # Relative paths too (tritonserver runs in the work dir; `--out-dir .work/x` once broke it).
    monkeypatch.chdir(tmp_path)
    model_rel = os.path.relpath(tiny_model_dir, tmp_path)
    with TritonServer(model_rel, work_dir=Path("work")) as server:
        pids = session_pids(server.pid)
        assert server.pid in pids and len(pids) >= 2  # the server and its Python stub
    assert server.process.returncode == 0
    assert session_pids(server.pid) == []


def test_ports_the_caller_will_bind_are_not_given_to_triton(tmp_path, monkeypatch):
    """``up`` picks the router's and demo backends' ports before Triton starts; the kernel may
    hand one of them out again as "free", and Triton must skip it (its gRPC server on the
    router's port made ``up`` answer HTTP with HTTP/2 frames)."""
    import router_svc.triton.launcher as launcher

    handed_out = iter([7001, 7002, 7001, 7003, 7004, 7005])
    monkeypatch.setattr(launcher, "free_port", lambda: next(handed_out))
    server = TritonServer(tmp_path, work_dir=tmp_path, avoid_ports=[7001, 7002])
    assert (server.http_port, server.grpc_port, server.metrics_port) == (7003, 7004, 7005)


def test_a_restart_installs_the_backend_over_a_stub_still_running(tiny_model_dir, tmp_path):
    """When only the server died, a stub of it may still run the installed stub binary: the
    restart's install must not write that file in place (ETXTBSY), as it once did."""
    import subprocess

    server = TritonServer(tiny_model_dir, work_dir=tmp_path / "triton")
    server._prepare()
    stub = tmp_path / "triton" / "backends" / "python" / "triton_python_backend_stub"
    original = stub.read_bytes()
    shutil.copy2(shutil.which("sleep"), stub)  # an executable that keeps running
    busy = subprocess.Popen([str(stub), "60"])
    try:
        time.sleep(0.2)
        assert busy.poll() is None
        server._prepare()  # the file is in use: copied aside and renamed over
        assert stub.read_bytes() == original
    finally:
        busy.kill()
        busy.wait()


async def test_the_supervisor_outlives_a_failed_restart(tiny_model_dir, tmp_path):
    """A restart that raises (any error, not only a start timeout) is said and tried again
    after the backoff; the supervisor never ends silently while Triton is down."""
    import subprocess

    server = TritonServer(tiny_model_dir, work_dir=tmp_path / "triton")
    server.process = subprocess.Popen(["true"])
    server.process.wait()  # Triton has died
    said: list[str] = []
    restarted = asyncio.Event()
    attempts = 0

    async def astart():
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise OSError(26, "Text file busy")
        server.process = subprocess.Popen(["sleep", "60"])
        restarted.set()
        return server

    async def astop():
        return None

    server.astart, server.astop = astart, astop  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(server.supervise(stop, said.append, poll_s=0.05))
    try:
        await asyncio.wait_for(restarted.wait(), 10)
        await asyncio.sleep(0.1)
        assert not task.done()
        assert any("restart failed" in s and "Text file busy" in s for s in said), said
        assert any("Triton restarted" in s for s in said), said
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        server.process.kill()
        server.process.wait()
