"""A real Milvus for the cache tests: milvus-lite's server binary on a loopback port, started
once per session and stopped at the end (skipped where the ``milvus`` extra is missing)."""

from __future__ import annotations

import importlib.util
import logging

import pytest


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    if importlib.util.find_spec("pymilvus") is None or importlib.util.find_spec(
            "milvus_lite") is None:
        pytest.skip("the milvus extra is not installed (pip install 'router-svc[milvus]')")
    from router_svc.cache.milvus_server import MilvusLiteServer

    # pymilvus logs every failed RPC at ERROR; the outage tests make many on purpose.
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    server = MilvusLiteServer(tmp_path_factory.mktemp("milvus") / "cache.db")
    server.start()
    try:
        yield server
    finally:
        server.stop()
