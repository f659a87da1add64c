"""``router-svc up``: planning and port checks in process; then end to end, the real command in a
subprocess on free ports with the quick-built model, one routed request through the ``openai``
client and a clean SIGTERM stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from router_svc.ops import cli
from router_svc.ops.up import (
    PortInUse,
    UpOptions,
    check_ports,
    ensure_exemplars,
    ensure_int8,
    ensure_model,
    plan,
)
from router_svc.triton.launcher import free_port, session_pids

MATH = "What is the derivative of f(x) = x³ + 2x² - 5x + 7?"
ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("ROUTER_SVC_DATA", ROOT.parent / "shared" / "data"))
DEMO_MODELS = ("phi4", "mistral-small3.1", "gemma3:27b")  # the example config's models


def _free_run(n: int) -> int:
    """A base port with ``n`` consecutive free ports."""
    for _ in range(50):
        base = free_port()
        if base + n < 65536 and all(_is_free(base + i) for i in range(n)):
            return base
    raise RuntimeError(f"no {n} consecutive free ports")


def _is_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _children(pid: int) -> dict[int, str]:
    """Direct children of ``pid``: {pid: command name}."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2 :].split()
        if rest[0] != "Z" and int(rest[1]) == pid:
            out[int(d.name)] = comm
    return out


def _triton_children(pid: int) -> dict[int, str]:
    return {p: c for p, c in _children(pid).items() if c == "tritonserver"}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


def _cli_up_options(monkeypatch, *argv: str) -> UpOptions:
    """The options ``router-svc up ARGV`` hands to ``up``."""
    import router_svc.ops.up

    seen: list[UpOptions] = []
    monkeypatch.setattr(router_svc.ops.up, "up", lambda opts: seen.append(opts) or 0)
    assert cli.main(["up", *argv]) == 0
    return seen[0]


def test_up_options_are_the_command_lines(monkeypatch, tmp_path):
    assert _cli_up_options(monkeypatch) == UpOptions()  # the same defaults
    cfg, model_dir, data_dir = tmp_path / "c.yaml", tmp_path / "m", tmp_path / "d"
    assert _cli_up_options(
        monkeypatch, "--config", str(cfg), "--port", "18123", "--model-dir", str(model_dir),
        "--data-dir", str(data_dir), "--int8", "--triton-url", "10.0.0.1:8001",
        "--no-backends", "--backend-base-port", "19500",
    ) == UpOptions(config=cfg, port=18123, model_dir=model_dir, data_dir=data_dir, int8=True,
                   triton_url="10.0.0.1:8001", no_backends=True, backend_base_port=19500)


def test_plan_wires_demo_backends_model_dir_and_port(tmp_path):
    p = plan(UpOptions(port=18123, backend_base_port=19500, model_dir=tmp_path))
    assert p.port == 18123 and p.triton_url is None
    assert p.demo == [("phi4", "127.0.0.1", 19500), ("mistral-small3.1", "127.0.0.1", 19501),
                      ("gemma3:27b", "127.0.0.1", 19502)]
    urls = {k: m["backend"]["base_url"] for k, m in p.data["model_config"].items()}
    assert urls == {"phi4": "http://127.0.0.1:19500/v1",
                    "mistral-small3.1": "http://127.0.0.1:19501/v1",
                    "gemma3:27b": "http://127.0.0.1:19502/v1"}
    assert p.data["tokenizer"] == str(tmp_path.resolve() / "tokenizer.json")


def test_plan_without_demo_backends_keeps_the_configs():
    p = plan(UpOptions(no_backends=True, triton_url="10.0.0.1:8001"))
    assert p.demo == [] and p.triton_url == "10.0.0.1:8001"
    assert p.data["model_config"]["phi4"]["backend"]["base_url"] == "http://127.0.0.1:9101/v1"


def test_ports_in_use_are_named_with_the_flag_that_moves_them():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        with pytest.raises(PortInUse, match=rf"port {taken} .*--port"):
            check_ports(plan(UpOptions(port=taken, backend_base_port=_free_run(3))))
        with pytest.raises(PortInUse, match=rf"port {taken} .*'phi4'.*--backend-base-port"):
            check_ports(plan(UpOptions(port=free_port(), backend_base_port=taken)))


def test_missing_model_is_built_beside_then_moved_in(tmp_path, monkeypatch):
    import export.build

    seen = {}

    def fake_build(opts):
        seen["out"] = opts.out_dir
        opts.out_dir.mkdir(parents=True)
        for f in ("model.onnx", "tokenizer.json", "build_report.json"):
            (opts.out_dir / f).write_text(f)

    monkeypatch.setattr(export.build, "build", fake_build)
    model_dir = tmp_path / "semantic_router" / "1"
    ensure_model(model_dir, tmp_path)
    assert seen["out"] != model_dir  # never half-written in place
    assert sorted(f.name for f in model_dir.iterdir()) == [
        "build_report.json", "model.onnx", "tokenizer.json"]
    assert not seen["out"].exists()
    ensure_model(model_dir, tmp_path)  # present: no second build
    assert len(list(model_dir.parent.iterdir())) == 1


def test_exemplars_are_written_for_a_model_built_before(monkeypatch, tmp_path):
    from export import exemplars

    calls: list[list[str]] = []
    monkeypatch.setattr(exemplars, "main", lambda argv: calls.append(argv) or 0)
    model_dir, data = tmp_path / "m", tmp_path / "data"
    model_dir.mkdir()
    (data / "mmlu_pro").mkdir(parents=True)
    for f in ("model.onnx", "tokenizer.json"):
        (model_dir / f).write_text(f)
    ensure_exemplars(model_dir, data)
    assert calls == []  # no build report: not built by router-svc, nothing to rebuild from
    (model_dir / "build_report.json").write_text("{}")
    ensure_exemplars(model_dir, data)
    assert calls == []  # no training data here
    (data / "mmlu_pro" / "questions.jsonl").write_text("{}\n")
    ensure_exemplars(model_dir, data)
    assert calls == [["--model-dir", str(model_dir), "--data-dir", str(data)]]
    (model_dir / "category_exemplars.npz").write_bytes(b"x")
    ensure_exemplars(model_dir, data)
    assert len(calls) == 1  # present: left alone


def test_int8_is_quantised_from_the_built_model_when_missing(tiny_model_dir, tmp_path):
    import shutil

    from router_svc.triton.repository import INT8_MODEL_FILE, write_python_repository

    model_dir = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model_dir)
    p = plan(UpOptions(int8=True, model_dir=model_dir))
    assert p.int8
    with pytest.raises(FileNotFoundError, match="--quantize"):
        write_python_repository(tmp_path / "repo", model_dir, model_file=INT8_MODEL_FILE)
    ensure_int8(model_dir)
    q = model_dir / INT8_MODEL_FILE
    assert q.is_file() and 0 < q.stat().st_size < (model_dir / "model.onnx").stat().st_size
    assert [f.name for f in model_dir.iterdir() if f.name.startswith(".")] == []
    repo = write_python_repository(tmp_path / "repo", model_dir, model_file=INT8_MODEL_FILE)
    assert (repo / "semantic_router" / "1" / "model.onnx").resolve() == q.resolve()
    mtime = q.stat().st_mtime_ns
    ensure_int8(model_dir)  # present and made from this model.onnx: left as it is
    assert q.stat().st_mtime_ns == mtime


def test_an_int8_model_of_other_weights_or_an_older_scheme_is_quantised_again(
        tiny_model_dir, tmp_path):
    import json
    import shutil

    from router_svc.triton.repository import (
        INT8_MODEL_FILE,
        INT8_STAMP_FILE,
        int8_is_current,
    )

    model_dir = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / INT8_MODEL_FILE).write_bytes(b"an int8 model of a build before")
    assert not int8_is_current(model_dir)  # no stamp: unknown origin
    ensure_int8(model_dir)
    assert int8_is_current(model_dir)
    made = (model_dir / INT8_MODEL_FILE).read_bytes()
    assert made != b"an int8 model of a build before"
    stamp = json.loads((model_dir / INT8_STAMP_FILE).read_text())
    (model_dir / INT8_STAMP_FILE).write_text(json.dumps({**stamp, "scheme": "per tensor"}))
    assert not int8_is_current(model_dir)  # an older scheme
    ensure_int8(model_dir)
    assert int8_is_current(model_dir)
    onnx = model_dir / "model.onnx"  # a rebuilt model.onnx (here: the same bytes and one more)
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    assert not int8_is_current(model_dir)


@pytest.mark.integration
def test_up_serves_routes_and_stops_cleanly(trained_model_dir, tmp_path):
    from openai import OpenAI

    port, base = free_port(), _free_run(3)
    log_path = tmp_path / "up.log"
    cmd = [sys.executable, "-m", "router_svc.ops.cli", "up", "--port", str(port),
           "--backend-base-port", str(base), "--model-dir", str(trained_model_dir),
           "--data-dir", str(DATA_DIR)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
    tritons: dict[int, str] = {}

    def output() -> str:
        return log_path.read_text(errors="replace")

    try:
        deadline = time.monotonic() + 240
        while _get(f"http://127.0.0.1:{port}/ready") != 200:
            assert proc.poll() is None, f"router-svc up exited with {proc.returncode}:\n{output()}"
            assert time.monotonic() < deadline, f"not ready after 240 s:\n{output()}"
            time.sleep(0.5)
        started_s = time.monotonic() - t0
        tritons = _triton_children(proc.pid)
        assert tritons, f"no tritonserver child of router-svc up: {_children(proc.pid)}"

        # the banner went out once the router listened: the reference's examples on our port
        deadline = time.monotonic() + 10
        while "Ctrl-C stops everything" not in output() and time.monotonic() < deadline:
            time.sleep(0.1)
        out = output()
        assert f"http://127.0.0.1:{port}/v1/chat/completions" in out
        for text in ("Hello, how are you today?", "1234-5678-9012-3456",
                     "john.doe@company.com", "/api/v1/classify", "/v1/models", "/metrics"):
            assert text in out, text

        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0,
                        timeout=30)
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": MATH}])
        model = raw.headers.get("x-router-model")
        answer = raw.parse().choices[0].message.content
        assert model in DEMO_MODELS, dict(raw.headers)
        # the demo backend that answered says its name, and it is the one the header names
        assert answer == f"[{model}] You said: {MATH}"
        assert raw.headers.get("x-router-category") == "math", dict(raw.headers)
        assert model == "phi4", dict(raw.headers)  # math's best model in the example config
        print(f"\nrouter-svc up ready in {started_s:.1f} s")

        # Triton dies: up restarts it on the same ports, says so, and the router follows
        for pid in tritons:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        died = time.monotonic()
        deadline = died + 180
        while "Triton restarted" not in output():
            assert proc.poll() is None, f"router-svc up exited with {proc.returncode}:\n{output()}"
            assert time.monotonic() < deadline, f"Triton not restarted:\n{output()}"
            time.sleep(0.2)
        assert "Triton exited with status" in output()
        while _get(f"http://127.0.0.1:{port}/ready") != 200:
            assert time.monotonic() < deadline, f"router not ready again:\n{output()}"
            time.sleep(0.2)
        print(f"Triton killed: restarted and the router ready again in "
              f"{time.monotonic() - died:.1f} s")
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": MATH}])
        assert raw.headers.get("x-router-model") == "phi4", dict(raw.headers)
        assert not set(tritons) & set(_triton_children(proc.pid))  # a new Triton
        tritons = {**tritons, **_triton_children(proc.pid)}

        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        assert rc == 0, output()
        assert "Triton stopped" in output()
        for pid in tritons:
            assert not _alive(pid), f"tritonserver {pid} outlived router-svc up"
            assert session_pids(pid) == [], f"Triton's session {pid} has processes left"
        assert _get(f"http://127.0.0.1:{port}/health") == 0  # the router no longer listens
        assert all(_is_free(base + i) for i in range(3))  # nor do the demo backends
    finally:
        if proc.poll() is None:
            # A run that failed before the Tritons were listed: list them now, since SIGKILL
            # gives `up` no chance to stop Triton, which runs in a session of its own.
            tritons = tritons or _triton_children(proc.pid)
            proc.kill()
            proc.wait(10)
        for pid in tritons:  # a failed run must not leave a Triton behind either
            for p in session_pids(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
