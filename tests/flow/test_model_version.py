"""A new model version served by Triton: the router re-reads its labels before decoding its
outputs, and refuses (fail closed, /ready false) labels its config cannot route."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from threadpoolctl import threadpool_info, threadpool_limits
from tritonclient.grpc.aio import InferenceServerClient

from router_svc.classify.exemplars import Exemplars
from router_svc.config.loading import EXAMPLE_CONFIG, parse_config
from router_svc.core.errors import ServiceUnavailable
from router_svc.flow.runtime import Runtime
from router_svc.labels import CATEGORIES
from router_svc.triton.launcher import TritonServer
from router_svc.triton.repository import MODEL_NAME

pytestmark = pytest.mark.integration

BODY = {"model": "auto", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}


def new_version(server: TritonServer, version: str, before: list[str],
                categories: list[str]) -> None:
    """Add ``version`` to the served repository with these category labels in the config
    (``before``: the labels there now)."""
    model = server.work_dir / "models" / MODEL_NAME
    shutil.copytree(model / "1", model / version, symlinks=True)
    config = model / "config.pbtxt"
    text = config.read_text()
    old = json.dumps(before).replace('"', '\\"')
    assert old in text
    config.write_text(text.replace(old, json.dumps(categories).replace('"', '\\"')))


async def test_labels_follow_the_served_version(tiny_model_dir, tmp_path):
    server = TritonServer(tiny_model_dir, work_dir=tmp_path / "triton",
                          extra_args=["--model-control-mode=explicit",
                                      f"--load-model={MODEL_NAME}"])
    await server.astart()
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    # exemplars for version 1 (random vectors of the tiny model's 32-wide embedding)
    exemplars = tmp_path / "exemplars.npz"
    rng = np.random.default_rng(0)
    Exemplars(rng.normal(size=(20, 32)).astype(np.float32),
              np.eye(len(CATEGORIES), dtype=np.float32)[rng.integers(0, len(CATEGORIES), 20)],
              tuple(CATEGORIES)).save(exemplars)
    data |= {"triton": {"url": server.grpc_url, "timeout_s": 10},
             "tokenizer": str(tiny_model_dir / "tokenizer.json"),
             "classifier": {"on_error": {"routing": "fail_closed", "pii": "block"},
                            "category_model": {"exemplars": str(exemplars)}}}
    rt = Runtime(parse_config(data, tmp_path), startup_timeout_s=30)
    admin = InferenceServerClient(server.grpc_url)
    threadpool_limits(limits=2, user_api="blas")  # as a 2-core host would have it
    try:
        async with rt.running():
            # One BLAS thread (the exemplars' vote): its spinning threads would take the cores
            # Triton runs on.
            assert {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"} == {1}
            assert rt.router is not None and rt.model_info is not None
            assert rt.model_info.version == "1"
            await rt.router.route("chat", BODY)
            assert rt.router.classifier.categories == list(CATEGORIES)
            assert rt.router.classifier.exemplars is not None

            reordered = list(reversed(CATEGORIES))
            new_version(server, "2", list(CATEGORIES), reordered)
            await admin.load_model(MODEL_NAME)
            routed = await rt.router.route("chat", BODY)
            assert rt.model_info.version == "2"
            assert rt.router.classifier.categories == reordered
            # built for version 1's embedding and label order: not applied to version 2's
            assert rt.router.classifier.exemplars is None
            assert routed.decision.category in reordered
            assert await rt.ready()

            unknown = ["maths" if c == "math" else c for c in CATEGORIES]
            new_version(server, "3", reordered, unknown)
            await admin.load_model(MODEL_NAME)
            with pytest.raises(ServiceUnavailable):  # fail closed, never mis-decoded
                await rt.router.route("chat", BODY)
            assert rt.model_problem is not None and "math" in rt.model_problem
            assert not await rt.ready()
            assert rt.model_info.version == "2"  # the labels in use are still version 2's
    finally:
        await admin.close()
        await server.astop()
