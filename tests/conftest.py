"""Shared fixtures: a tiny model built once, and one real Triton serving it for the session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """``model.onnx`` + ``tokenizer.json`` of a tiny random dual-head model (a few seconds)."""
    pytest.importorskip("torch", reason="building the tiny model needs the build extra (torch)")
    from export.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def triton(tiny_model_dir, tmp_path_factory):
    """A real ``tritonserver`` (Python backend, CPU) serving the tiny model; stopped at the end."""
    from router_svc.triton_launcher import TritonServer

    server = TritonServer(tiny_model_dir, work_dir=tmp_path_factory.mktemp("triton"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
