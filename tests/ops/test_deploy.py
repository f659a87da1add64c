"""Deployment files: compose.yaml (+ compose.cpu.yaml), the Dockerfiles, Prometheus, Grafana.

- Debian's ``docker-compose`` 1.29 validates both compose files (it needs no engine), with each
  profile (``shared-cache``, ``tracing``) enabled, and profiles leave plain ``up`` unchanged;
- every router service's config loads with the router's own loader and agrees with compose
  (the shared-cache replicas' Milvus, Envoy in front of them round robin, the tracing router's
  Jaeger); the shared-cache Envoy config, run for real, alternates between two servers;
- every path, Dockerfile, port and service name the files use exists and agrees with the others
  (router config, Prometheus targets, Grafana provisioning, the images' COPY sources);
- ``promtool`` checks the Prometheus config and rules and runs the alert unit tests;
- the model-builder script and the CPU Triton entrypoint do what compose relies on;
- every metric the dashboard and the alert rules query is one the router exports (its live
  ``/metrics`` after real traffic) or Triton 2.51 exports (the real ``tritonserver``'s endpoint);
- a real Prometheus scrapes a running router and answers a routing metric through its HTTP API.

Tools come from Debian packages and are not installed here: ``apt-get install -y
docker-compose prometheus`` (``prometheus`` ships ``promtool`` too).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml

from router_svc.config.loading import load_config
from router_svc.labels import CATEGORIES
from router_svc.triton.launcher import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / "compose.yaml"
COMPOSE_CPU = ROOT / "compose.cpu.yaml"
ROUTER_CONFIG = DEPLOY / "router-config.yaml"
SHARED_CACHE_CONFIG = DEPLOY / "router-config.shared-cache.yaml"
TRACING_CONFIG = DEPLOY / "router-config.tracing.yaml"
ENVOY_YAML = DEPLOY / "envoy" / "envoy.yaml"
ENVOY_SHARED_CACHE = DEPLOY / "envoy" / "envoy.shared-cache.yaml"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "router-svc.json"
DATASOURCE = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDER = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
MODEL_BUILDER = DEPLOY / "model-builder.sh"
TRITON_CPU = DEPLOY / "triton_cpu.py"

APT = {"docker-compose": "docker-compose", "promtool": "prometheus", "prometheus": "prometheus"}

# What plain `docker compose up` starts, and what each profile adds to it.
DEFAULT_SERVICES = frozenset({"model-builder", "triton", "router", "demo-phi4", "demo-mistral",
                              "demo-gemma", "prometheus", "grafana", "envoy"})
PROFILES = {
    "shared-cache": frozenset({"milvus-etcd", "milvus-minio", "milvus-standalone",
                               "router-shared-a", "router-shared-b", "envoy-shared-cache"}),
    "tracing": frozenset({"jaeger", "router-tracing"}),
}
# Every service running `router-svc serve`, and the config file it mounts.
ROUTERS = {"router": ROUTER_CONFIG, "router-shared-a": SHARED_CACHE_CONFIG,
           "router-shared-b": SHARED_CACHE_CONFIG, "router-tracing": TRACING_CONFIG}
# The config keys each variant changes; everything else must stay deploy/router-config.yaml's.
DERIVED_CONFIGS = {SHARED_CACHE_CONFIG: {"cache"}, TRACING_CONFIG: {"tracing"}}

# Every metric family Triton 2.51 (NGC 24.10) can export: docs/user_guide/metrics.md of r24.10.
# GPU ones need a GPU; response-cache ones need --cache-config; summaries need
# --metrics-config summary_latencies=true.
TRITON_GPU_METRICS = frozenset({
    "nv_gpu_utilization", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes",
    "nv_gpu_power_usage", "nv_gpu_power_limit", "nv_energy_consumption",
})
TRITON_OPTIONAL_METRICS = frozenset({
    "nv_cache_num_hits_per_model", "nv_cache_num_misses_per_model",
    "nv_cache_hit_duration_per_model", "nv_cache_miss_duration_per_model",
    "nv_inference_request_summary_us", "nv_inference_queue_summary_us",
    "nv_inference_compute_input_summary_us", "nv_inference_compute_infer_summary_us",
    "nv_inference_compute_output_summary_us", "nv_inference_first_response_histogram_ms",
})
TRITON_METRICS = frozenset({
    "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
    "nv_inference_exec_count", "nv_inference_pending_request_count",
    "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us", "nv_cpu_utilization", "nv_cpu_memory_total_bytes",
    "nv_cpu_memory_used_bytes", "nv_pinned_memory_pool_total_bytes",
    "nv_pinned_memory_pool_used_bytes",
}) | TRITON_GPU_METRICS | TRITON_OPTIONAL_METRICS

MATH = "What is the derivative of f(x) = x³ + 2x² - 5x + 7?"
CARD = "My credit card number is 1234-5678-9012-3456. Can you help me with my account?"


# ---------------------------------------------------------------------------- helpers


def tool(name: str) -> str:
    """A Debian tool's path; fails (does not skip) naming the package when it is missing."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.fail(f"{name} not found: apt-get install -y {APT[name]} (.ci/run installs it)")
    return path


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    kwargs.setdefault("cwd", ROOT)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, **kwargs)


def compose_config(*files: Path, profiles: tuple[str, ...] = ()) -> dict[str, Any]:
    """``docker-compose -f ... [--profile P ...] config``: the merged, interpolated configuration
    (1.29 prints every service, whatever the profiles; it validates with them enabled)."""
    args = [tool("docker-compose")]
    for f in files:
        args += ["-f", str(f)]
    for profile in profiles:
        args += ["--profile", profile]
    env = {k: v for k, v in os.environ.items()
           if k not in ("ROUTER_SVC_DATA", "MODEL_BUILD_ARGS", "COMPOSE_FILE")}
    env["GRAFANA_ADMIN_PASSWORD"] = "from-the-environment"
    res = run([*args, "config"], env=env)
    assert res.returncode == 0, f"{shlex.join(args)} config failed:\n{res.stderr}"
    assert "WARNING" not in res.stderr, res.stderr
    return yaml.safe_load(res.stdout)


@pytest.fixture(scope="module")
def configs() -> dict[str, dict[str, Any]]:
    return {"gpu": compose_config(COMPOSE), "cpu": compose_config(COMPOSE, COMPOSE_CPU)}


def replicas(service: dict[str, Any]) -> int:
    return int((service.get("deploy") or {}).get("replicas", 1))


def published_ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(published, target) pairs, from the short ("8000:8000") or long form."""
    out = []
    for p in service.get("ports", []):
        if isinstance(p, dict):
            if p.get("published") is not None:
                out.append((int(p["published"]), int(p["target"])))
        else:
            parts = str(p).split("/")[0].split(":")
            if len(parts) >= 2:
                out.append((int(parts[-2]), int(parts[-1])))
    return out


def container_ports(service: dict[str, Any]) -> set[int]:
    return {t for _, t in published_ports(service)} | {int(e) for e in service.get("expose", [])}


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of every volume: an absolute path for binds, a name for volumes."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out.append((str(v.get("source", "")), str(v["target"])))
        else:
            parts = str(v).split(":")
            out.append((parts[0], parts[1]))
    return out


def hostnames(config: dict[str, Any]) -> dict[str, str]:
    """Name or network alias -> the service that answers it (zero-replica services excluded)."""
    names = {}
    for name, svc in config["services"].items():
        if replicas(svc) == 0:
            continue
        names[name] = name
        for net in (svc.get("networks") or {}).values():
            for alias in (net or {}).get("aliases", []):
                names[alias] = name
    return names


def bind_target(service: dict[str, Any], source: Path) -> str:
    found = [t for s, t in mounts(service) if Path(s) == source]
    assert found, f"{source} is not mounted in {service.get('image')}: {mounts(service)}"
    return found[0]


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def flag(cmd: list[str], name: str) -> str:
    for i, arg in enumerate(cmd):
        if arg == name:
            return cmd[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} not in {cmd}")


# ---------------------------------------------------------------------------- compose


@pytest.mark.parametrize("profiles", [(), ("shared-cache",), ("tracing",),
                                      ("shared-cache", "tracing")],
                         ids=["plain", "shared-cache", "tracing", "both"])
@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, COMPOSE_CPU)], ids=["gpu", "cpu"])
def test_docker_compose_config_validates(files, profiles):
    config = compose_config(*files, profiles=profiles)
    cpu = {"triton-cpu"} if COMPOSE_CPU in files else set()
    assert set(config["services"]) == DEFAULT_SERVICES.union(cpu, *PROFILES.values())


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_profiles_leave_plain_up_unchanged(configs, variant):
    """Without a profile, exactly the default services start; each profile's services are in
    it alone, and no default service needs one of them (plain `up` would then start it)."""
    services = configs[variant]["services"]
    profiled = {name: set(svc.get("profiles") or ()) for name, svc in services.items()}
    default = {name for name, p in profiled.items() if not p}
    assert default == DEFAULT_SERVICES | ({"triton-cpu"} if variant == "cpu" else set())
    for profile, names in PROFILES.items():
        assert {n for n, p in profiled.items() if profile in p} == names, profile
        assert all(profiled[n] == {profile} for n in names), profile
    for name in default:
        needs = set(services[name].get("depends_on") or {})
        assert not needs - default, f"{name} depends on profile services {needs - default}"
    files = ["-f", str(COMPOSE)] + (["-f", str(COMPOSE_CPU)] if variant == "cpu" else [])
    args = [tool("docker-compose"), *files, "config", "--profiles"]
    res = run(args, env={**os.environ, "GRAFANA_ADMIN_PASSWORD": "x"})
    assert res.returncode == 0, res.stderr
    assert set(res.stdout.split()) == set(PROFILES)


def test_triton_on_the_gpu(configs):
    triton = configs["gpu"]["services"]["triton"]
    assert triton["image"].startswith("nvcr.io/nvidia/tritonserver:24.10")  # Triton 2.51
    cmd = command(triton)
    assert cmd[0] == "tritonserver"
    assert flag(cmd, "--model-repository") == "/models"
    assert flag(cmd, "--model-control-mode") == "none"
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    assert ("models", "/models") in mounts(triton)
    assert {p for p, _ in published_ports(triton)} == {8000, 8001, 8002}


def test_cpu_override_replaces_the_gpu_triton(configs):
    services = configs["cpu"]["services"]
    assert replicas(services["triton"]) == 0  # never created: its GPU reservation is inert
    names = hostnames(configs["cpu"])
    assert names["triton"] == "triton-cpu"
    cpu = services["triton-cpu"]
    assert "deploy" not in cpu
    assert container_ports(cpu) >= {8000, 8001, 8002}
    assert services["router"]["depends_on"]["triton-cpu"]["condition"] == "service_healthy"
    cmd = command(cpu)
    # The script is in the router image, where the Dockerfile copies deploy/triton_cpu.py.
    copies = [a.split() for i, a in dockerfile_instructions(ROOT / "Dockerfile") if i == "COPY"]
    assert cmd[0] == "python" and [str(TRITON_CPU.relative_to(ROOT)), cmd[1]] in copies, copies
    model_dir = flag(cmd, "--model-dir")
    assert any(model_dir.startswith(t + "/") for s, t in mounts(cpu) if s == "models")


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_every_path_and_dockerfile_exists(configs, variant):
    config = configs[variant]
    declared_volumes = set(config.get("volumes") or {})
    for name, svc in config["services"].items():
        build = svc.get("build")
        if build:
            context = Path(build["context"])
            assert context.is_dir(), f"{name}: build context {context} missing"
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
        for source, _ in mounts(svc):
            if source.startswith("/"):
                hint = "" if Path(source).is_relative_to(ROOT) else (
                    " (the training data: ../shared/data beside the checkout, or ROUTER_SVC_DATA)")
                assert Path(source).exists(), f"{name}: bind source {source} missing{hint}"
            else:
                assert source in declared_volumes, f"{name}: volume {source!r} not declared"


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_published_ports_are_unique(configs, variant):
    seen: dict[int, str] = {}
    for name, svc in configs[variant]["services"].items():
        if replicas(svc) == 0:
            continue
        for published, _ in published_ports(svc):  # unique over all profiles: they combine
            assert published not in seen, f"port {published}: {seen.get(published)} and {name}"
            seen[published] = name
    by_profile = {p: {port for port, name in seen.items() if name in names}
                  for p, names in PROFILES.items()}
    assert set(seen) - set().union(*by_profile.values()) == {
        8000, 8001, 8002, 8801, 9090, 3000, 10000}
    assert by_profile == {"shared-cache": {19530, 9091, 10001}, "tracing": {16686, 4317, 8802}}


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_dependencies_can_be_met(configs, variant):
    services = configs[variant]["services"]
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            target = services[dep]
            condition = (spec or {}).get("condition", "service_started")
            if condition == "service_healthy" and replicas(target):
                assert target.get("healthcheck", {}).get("test"), f"{name} waits on {dep}'s health"
            if condition == "service_completed_successfully":
                assert target.get("restart", "no") == "no", f"{dep} is a one-shot job"


def test_model_builder_fills_the_shared_volume(configs):
    services = configs["gpu"]["services"]
    builder = services["model-builder"]
    assert ("models", "/models") in mounts(builder)
    data = [s for s, t in mounts(builder) if t == "/data"]
    # compose writes the path as found; a checkout may reach ../shared through a link
    assert [str(Path(d).resolve()) for d in data] == [
        str((ROOT.parent / "shared" / "data").resolve())]
    for name in ("triton", *ROUTERS):
        assert ("models", "/models") in mounts(services[name]), name
        assert all(t != "/models" or s == "models" for s, t in mounts(services[name]))


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def router_cfg(service: dict[str, Any], path: Path):
    """The router's own loader on ``path``, with the service's environment: no warnings."""
    cfg = load_config(path, environ=environment(service))
    assert not cfg.warnings, (path.name, cfg.warnings)
    return cfg


def waits_healthy(service: dict[str, Any], dependency: str) -> bool:
    spec = (service.get("depends_on") or {}).get(dependency)
    return (spec or {}).get("condition") == "service_healthy"


def test_every_router_service_is_known(configs):
    """A service running `router-svc serve` is in ROUTERS, so the checks below cover it."""
    for config in configs.values():
        serving = {n for n, svc in config["services"].items()
                   if command(svc)[:2] == ["router-svc", "serve"]}
        assert serving == set(ROUTERS)


@pytest.mark.parametrize("path", sorted(DERIVED_CONFIGS), ids=lambda p: p.name)
def test_router_config_variants_differ_only_where_they_should(path):
    """deploy/router-config.*.yaml are deploy/router-config.yaml with one block changed, so a
    fix to the base config cannot be forgotten in them."""
    base, variant = (yaml.safe_load(p.read_text()) for p in (ROUTER_CONFIG, path))
    changed = {k for k in base.keys() | variant.keys() if base.get(k) != variant.get(k)}
    assert changed == DERIVED_CONFIGS[path]


@pytest.mark.parametrize("name", sorted(ROUTERS))
def test_router_config_matches_the_compose_services(configs, name):
    path = ROUTERS[name]
    for variant, config in configs.items():
        services = config["services"]
        names = hostnames(config)
        router = services[name]
        config_path = bind_target(router, path)
        assert flag(command(router), "--config") == config_path

        cfg = router_cfg(router, path)
        assert cfg.listen.host == "0.0.0.0"
        assert cfg.listen.port in container_ports(router)
        if name == "router":
            assert cfg.listen.port in {t for _, t in published_ports(router)}

        host, port = cfg.triton.url.rsplit(":", 1)
        assert host in names, f"{variant}: triton.url host {host!r} is no service"
        assert int(port) in container_ports(services[names[host]])
        assert waits_healthy(router, names[host]), f"{variant}: {name} starts before Triton"

        assert cfg.tokenizer is not None
        assert any(cfg.tokenizer.is_relative_to(t) for s, t in mounts(router) if s == "models")

        for model, mc in cfg.model_config.items():
            url = urlsplit(mc.backend.base_url)
            assert url.hostname in names, f"{model}: backend host {url.hostname!r} is no service"
            backend = services[names[url.hostname]]
            assert int(flag(command(backend), "--port")) == url.port
            assert flag(command(backend), "--host") == "0.0.0.0"
            assert url.port in container_ports(backend)
            assert flag(command(backend), "--name") == mc.backend.model
            assert waits_healthy(router, names[url.hostname]), (variant, name, url.hostname)


def test_shared_cache_replicas_share_one_milvus(configs):
    """Both replicas: cache.backend milvus at the milvus-standalone service's gRPC port, started
    once Milvus is healthy (its health check asks Milvus itself), which starts once etcd and
    MinIO are; its etcd and MinIO addresses are those services' ports."""
    for variant, config in configs.items():
        services = config["services"]
        names = hostnames(config)
        replicas_ = [n for n, p in ROUTERS.items() if p == SHARED_CACHE_CONFIG]
        assert len(replicas_) == 2
        for name in replicas_:
            router = services[name]
            cfg = router_cfg(router, SHARED_CACHE_CONFIG)
            assert cfg.cache.enabled and cfg.cache.backend == "milvus"
            assert cfg.cache.milvus.consistency_level == "Strong"
            uri = urlsplit(cfg.cache.milvus.uri)
            assert uri.hostname in names, f"{variant}: Milvus host {uri.hostname!r} is no service"
            milvus = services[names[uri.hostname]]
            assert names[uri.hostname] == "milvus-standalone"
            assert uri.port == 19530 and uri.port in container_ports(milvus)
            assert waits_healthy(router, "milvus-standalone"), f"{variant}: {name}"
            # The admin token comes from the environment (empty: endpoints disabled).
            assert cfg.cache.admin_token_env in environment(router)
            # The image has the Milvus client: the `milvus` extra of pyproject.toml.
            extra = router["build"]["args"]["ROUTER_SVC_EXTRAS"]
            assert extra == "milvus"
            assert router["image"] != services["router"]["image"], "the plain image stays lean"
        assert command(services[replicas_[0]]) == command(services[replicas_[1]])
        assert mounts(services[replicas_[0]]) == mounts(services[replicas_[1]])

        milvus = services["milvus-standalone"]
        assert command(milvus) == ["milvus", "run", "standalone"]
        assert "9091/healthz" in " ".join(milvus["healthcheck"]["test"])
        assert 9091 in container_ports(milvus)
        env = environment(milvus)
        for key, service, port in (("ETCD_ENDPOINTS", "milvus-etcd", 2379),
                                   ("MINIO_ADDRESS", "milvus-minio", 9000)):
            host, _, p = env[key].partition(":")
            assert names.get(host) == service and int(p) == port, (key, env[key])
            assert port in container_ports(services[service]), (service, port)
            assert waits_healthy(milvus, service), service
        assert any(t == "/var/lib/milvus" for _, t in mounts(milvus))
        assert "2379" in flag(command(services["milvus-etcd"]), "-listen-client-urls")


def test_the_milvus_extra_reaches_the_router_image():
    """compose builds the shared-cache replicas with ROUTER_SVC_EXTRAS=milvus: the Dockerfile
    must take that build argument and install the extra (pymilvus; the loader refuses a milvus
    cache without it), and pyproject.toml must define it."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r"^milvus = \[", pyproject, re.M), "no `milvus` extra in pyproject.toml"
    instructions = dockerfile_instructions(ROOT / "Dockerfile")
    assert ("ARG", "ROUTER_SVC_EXTRAS") in [(i, a.split("=")[0]) for i, a in instructions], (
        "the Dockerfile declares no ARG ROUTER_SVC_EXTRAS")
    installs = " ".join(a for i, a in instructions if i == "RUN" and "pip install" in a)
    assert "[$ROUTER_SVC_EXTRAS]" in installs or "[${ROUTER_SVC_EXTRAS}]" in installs, installs


def test_tracing_router_sends_to_jaeger(configs):
    for variant, config in configs.items():
        services = config["services"]
        names = hostnames(config)
        router = services["router-tracing"]
        cfg = router_cfg(router, TRACING_CONFIG)
        t = cfg.tracing
        assert t.enabled and t.protocol == "grpc" and t.sample_ratio == 1.0
        assert t.service_name == "router-svc"
        url = urlsplit(t.endpoint)
        assert url.hostname in names, f"{variant}: tracing host {url.hostname!r} is no service"
        jaeger = services[names[url.hostname]]
        assert jaeger["image"].startswith("jaegertracing/all-in-one:")
        assert url.port == 4317 and url.port in container_ports(jaeger)
        assert environment(jaeger).get("COLLECTOR_OTLP_ENABLED") == "true"
        assert 16686 in container_ports(jaeger)  # the UI
        assert names[url.hostname] in (router.get("depends_on") or {})
        assert not load_config(ROUTER_CONFIG).tracing.enabled  # the plain router stays untraced


def test_envoy_matches_the_compose_services(configs):
    """compose's envoy runs deploy/envoy/envoy.yaml: its listener is the published port, its
    ext_proc cluster is the router's extproc port, each backend cluster a service's port."""
    envoy_yaml = ENVOY_YAML
    cfg = yaml.safe_load(envoy_yaml.read_text())
    router_cfg = load_config(ROUTER_CONFIG)
    for variant, config in configs.items():
        services = config["services"]
        names = hostnames(config)
        envoy = services["envoy"]
        assert flag(command(envoy), "-c") == bind_target(envoy, envoy_yaml)
        listen = cfg["static_resources"]["listeners"][0]["address"]["socket_address"]
        assert listen["address"] == "0.0.0.0"
        assert (listen["port_value"], listen["port_value"]) in published_ports(envoy)
        assert "router" in (envoy.get("depends_on") or {})
        for c in cfg["static_resources"]["clusters"]:
            if c["type"] == "ORIGINAL_DST":
                continue
            sa = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
                "address"]["socket_address"]
            host, port = sa["address"], sa["port_value"]
            assert host in names, f"{variant}: cluster {c['name']} host {host!r} is no service"
            if names[host] == "router":
                assert router_cfg.extproc.enabled and port == router_cfg.extproc.port
            else:
                assert port in container_ports(services[names[host]]), (c["name"], port)


def hcm(listener: dict[str, Any]) -> dict[str, Any]:
    (f,) = [f for chain in listener["filter_chains"] for f in chain["filters"]
            if f["name"] == "envoy.filters.network.http_connection_manager"]
    return f["typed_config"]


def lb_endpoints(cluster: dict[str, Any]) -> list[tuple[str, int]]:
    return [(sa["address"], sa["port_value"])
            for locality in cluster["load_assignment"]["endpoints"]
            for e in locality["lb_endpoints"]
            for sa in [e["endpoint"]["address"]["socket_address"]]]


def test_shared_cache_envoy_balances_both_replicas(configs):
    """envoy-shared-cache (the stack's own Envoy image) publishes its listener and sends every
    request to one cluster of both shared-cache replicas on the router's port, round robin,
    with a health check on the router's readiness."""
    cfg = yaml.safe_load(ENVOY_SHARED_CACHE.read_text())
    shared = load_config(SHARED_CACHE_CONFIG)
    replicas_ = {n for n, p in ROUTERS.items() if p == SHARED_CACHE_CONFIG}
    (listener,) = cfg["static_resources"]["listeners"]
    routes = [r for vh in hcm(listener)["route_config"]["virtual_hosts"] for r in vh["routes"]]
    assert {r["route"]["cluster"] for r in routes} == {"routers"}
    assert not [f for f in hcm(listener)["http_filters"] if "ext_proc" in f["name"]]
    (cluster,) = [c for c in cfg["static_resources"]["clusters"] if c["name"] == "routers"]
    assert cluster["lb_policy"] == "ROUND_ROBIN" and cluster["type"] == "STRICT_DNS"
    (hc,) = cluster["health_checks"]
    assert hc["http_health_check"]["path"] == "/ready"
    for variant, config in configs.items():
        services = config["services"]
        names = hostnames(config)
        envoy = services["envoy-shared-cache"]
        assert envoy["image"] == services["envoy"]["image"]
        assert flag(command(envoy), "-c") == bind_target(envoy, ENVOY_SHARED_CACHE)
        listen = listener["address"]["socket_address"]
        assert listen["address"] == "0.0.0.0"
        assert (listen["port_value"], listen["port_value"]) in published_ports(envoy)
        endpoints = lb_endpoints(cluster)
        assert len(endpoints) == len(set(endpoints)) == 2
        assert {names.get(host) for host, _ in endpoints} == replicas_, (variant, endpoints)
        assert {port for _, port in endpoints} == {shared.listen.port}
        assert set(envoy.get("depends_on") or {}) == replicas_


@pytest.mark.integration
async def test_shared_cache_envoy_alternates_and_skips_an_unready_replica(tmp_path):
    """The file's own Envoy config, addresses moved to loopback (and the health check's period
    shortened), in front of two servers: requests alternate; a server whose /ready fails gets
    none until it passes again."""
    from aiohttp import web

    from router_svc.ops.envoy_launcher import EnvoyProcess

    ready = {"a": True, "b": True}
    seen: list[str] = []

    def app_for(name: str) -> web.Application:
        async def chat(request: web.Request) -> web.Response:
            seen.append(name)
            return web.json_response({"replica": name})

        async def is_ready(request: web.Request) -> web.Response:
            return web.Response(status=200 if ready[name] else 503)

        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_get("/ready", is_ready)
        return app

    runners, ports = [], {}
    for name in ("a", "b"):
        runner = web.AppRunner(app_for(name))
        await runner.setup()
        ports[name] = free_port()
        await web.TCPSite(runner, "127.0.0.1", ports[name]).start()
        runners.append(runner)
    cfg = yaml.safe_load(ENVOY_SHARED_CACHE.read_text())
    admin_port, listen_port = free_port(), free_port()
    cfg["admin"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": admin_port}
    cfg["static_resources"]["listeners"][0]["address"]["socket_address"] = {
        "address": "127.0.0.1", "port_value": listen_port}
    (cluster,) = cfg["static_resources"]["clusters"]
    cluster["type"] = "STATIC"
    cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        for p in ports.values()]}]
    cluster["health_checks"][0].update(interval="0.2s", no_traffic_interval="0.2s")
    envoy = EnvoyProcess(cfg, tmp_path)
    await asyncio.to_thread(envoy.start)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:

            async def health() -> dict[str, str]:
                async with s.get(f"{envoy.admin_url}/clusters") as r:
                    text = await r.text()
                flags = dict(re.findall(r"^routers::127\.0\.0\.1:(\d+)::health_flags::(\S+)$",
                                        text, re.M))
                return {n: flags.get(str(p), "") for n, p in ports.items()}

            async def both_healthy():
                return set((await health()).values()) == {"healthy"}

            await _eventually(both_healthy, "both servers healthy in Envoy")
            body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
            for _ in range(8):
                async with s.post(f"{envoy.url}/v1/chat/completions", json=body) as r:
                    assert r.status == 200
            assert sorted(seen) == ["a"] * 4 + ["b"] * 4
            assert all(x != y for x, y in itertools.pairwise(seen)), seen  # round robin

            ready["b"] = False

            async def b_out():
                return "failed_active_hc" in (await health())["b"]

            await _eventually(b_out, "b taken out of rotation")
            seen.clear()
            for _ in range(6):
                async with s.post(f"{envoy.url}/v1/chat/completions", json=body) as r:
                    assert r.status == 200
            assert seen == ["a"] * 6
    finally:
        await asyncio.to_thread(envoy.stop)
        for runner in runners:
            await runner.cleanup()


def test_prometheus_scrapes_compose_services(configs):
    prom = yaml.safe_load(PROMETHEUS_YML.read_text())
    for rule_file in prom["rule_files"]:
        assert (PROMETHEUS_YML.parent / rule_file).is_file(), rule_file
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert {"router", "triton"} <= set(jobs)
    router_port = load_config(ROUTER_CONFIG).listen.port
    for config in configs.values():
        services = config["services"]
        names = hostnames(config)
        svc = services["prometheus"]
        target_dir = bind_target(svc, PROMETHEUS_YML.parent)
        assert flag(command(svc), "--config.file") == f"{target_dir}/{PROMETHEUS_YML.name}"
        for job in ("router", "triton"):
            for target in jobs[job]["static_configs"][0]["targets"]:
                host, port = target.rsplit(":", 1)
                assert host in names, f"{job}: {host!r} is no service"
                assert int(port) in container_ports(services[names[host]]) | {router_port}
        assert jobs["router"]["static_configs"][0]["targets"] == [f"router:{router_port}"]
        assert jobs["triton"]["static_configs"][0]["targets"] == ["triton:8002"]


def test_grafana_provisioning_matches_compose(configs):
    services = configs["gpu"]["services"]
    grafana = services["grafana"]
    assert bind_target(grafana, GRAFANA / "provisioning") == "/etc/grafana/provisioning"
    dashboards_dir = bind_target(grafana, DASHBOARD.parent)
    provider = yaml.safe_load(DASHBOARD_PROVIDER.read_text())["providers"][0]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == dashboards_dir
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_dir}/{DASHBOARD.name}"

    (ds,) = yaml.safe_load(DATASOURCE.read_text())["datasources"]
    url = urlsplit(ds["url"])
    assert url.hostname == "prometheus" and url.port in container_ports(services["prometheus"])

    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == ds["uid"], p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == ds["uid"], p["title"]
    titles = {p["title"] for p in dash["panels"]}
    for wanted in ("Requests by model", "Routing decisions by category", "Cache hit ratio",
                   "PII entities by type and action", "End-to-end latency",
                   "Classification latency", "Backend latency by model",
                   "Time to first token by model", "Token usage by model",
                   "Triton queue vs compute time per request", "Batch sizes"):
        assert wanted in titles, wanted


# ---------------------------------------------------------------------------- Dockerfiles


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def dockerignored(rel: str, patterns: list[str]) -> bool:
    parts = Path(rel).parts
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch.fnmatch(prefix, pattern) or (
                    pattern.startswith("**/") and fnmatch.fnmatch(parts[i - 1], pattern[3:])):
                return True
    return False


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.builder"])
def test_dockerfile_copies_existing_files(dockerfile):
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    copies = [args for instr, args in dockerfile_instructions(ROOT / dockerfile) if instr == "COPY"]
    assert copies
    for args in copies:
        sources = [a for a in shlex.split(args) if not a.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"{dockerfile}: COPY {source}: missing"
            assert not dockerignored(source, patterns), f"{dockerfile}: {source} is .dockerignored"


def test_router_image_has_no_torch():
    instructions = dockerfile_instructions(ROOT / "Dockerfile")
    assert instructions[0] == ("FROM", "python:3.11-slim")
    installs = [a for i, a in instructions if i == "RUN" and "pip install" in a]
    assert installs and not any("torch" in a.split("&&")[0] or "[" in a.split("&&")[0]
                                for a in installs), installs
    assert ("EXPOSE", "8801") in instructions
    assert any(i == "USER" and not a.startswith(("0", "root")) for i, a in instructions)
    assert any(i == "HEALTHCHECK" and "/health" in a for i, a in instructions)
    assert ("CMD", '["router-svc", "serve", "--config", "/etc/router-svc/config.yaml"]') in (
        instructions)
    builder = dockerfile_instructions(ROOT / "Dockerfile.builder")
    torch_line = next(a for i, a in builder if i == "RUN" and "torch" in a)
    assert "download.pytorch.org/whl/cpu" in torch_line and "torch==2.13.0" in torch_line


def test_router_image_config_edit_gives_a_valid_container_config(tmp_path):
    """The Dockerfile's sed over the example config (listen, Triton, tokenizer) still applies."""
    (run_line,) = [a for i, a in dockerfile_instructions(ROOT / "Dockerfile")
                   if i == "RUN" and "/etc/router-svc/config.yaml" in a]
    target = tmp_path / "config.yaml"
    shutil.copy(ROOT / "router_svc" / "config.example.yaml", target)
    script = run_line.replace("/etc/router-svc/config.yaml", str(target)).replace(
        "router-svc check-config",
        f"{shlex.quote(sys.executable)} -m router_svc.ops.cli check-config")
    res = run(["sh", "-c", script])
    assert res.returncode == 0, f"{script}\n{res.stdout}{res.stderr}"
    cfg = load_config(target)
    assert cfg.listen.host == "0.0.0.0"
    assert cfg.triton.url == "triton:8001"
    assert cfg.tokenizer == Path("/models/semantic_router/1/tokenizer.json")


# ---------------------------------------------------------------------------- model builder


def _builder_env(tmp_path: Path, data: Path, stub_exit: int = 0) -> dict[str, str]:
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir(exist_ok=True)
    stub = stub_dir / "router-svc"
    stub.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {tmp_path}/calls\n'
        'out=""; dir=""; prev=""\n'
        'for a in "$@"; do [ "$prev" = "--out" ] && out="$a"; '
        '[ "$prev" = "--model-dir" ] && dir="$a"; prev="$a"; done\n'
        f'if [ "$2" = exemplars ]; then [ {stub_exit} = 0 ] && '
        'echo ex > "$dir/category_exemplars.npz"; '
        f"exit {stub_exit}; fi\n"
        'mkdir -p "$out" && echo onnx > "$out/model.onnx" && echo tok > "$out/tokenizer.json"\n'
        'echo ex > "$out/category_exemplars.npz"\n'
        f"exit {stub_exit}\n")
    stub.chmod(0o755)
    return {**os.environ, "PATH": f"{stub_dir}:{os.environ['PATH']}",
            "MODEL_REPOSITORY": str(tmp_path / "models"), "DATA_DIR": str(data),
            "MODEL_CONFIG": str(ROOT / "model_repository/semantic_router/config.pbtxt"),
            "MODEL_BUILD_ARGS": "--quick --seed 1"}


def test_model_builder_builds_once_and_copies_the_config(tmp_path):
    data = tmp_path / "data"
    (data / "mmlu_pro").mkdir(parents=True)
    (data / "mmlu_pro" / "questions.jsonl").write_text("{}\n")
    env = _builder_env(tmp_path, data)
    model = tmp_path / "models" / "semantic_router"

    first = run(["sh", str(MODEL_BUILDER)], env=env)
    assert first.returncode == 0, first.stderr
    assert (model / "config.pbtxt").read_text() == (
        ROOT / "model_repository/semantic_router/config.pbtxt").read_text()
    assert sorted(p.name for p in (model / "1").iterdir()) == [
        "category_exemplars.npz", "model.onnx", "tokenizer.json"]
    (call,) = (tmp_path / "calls").read_text().splitlines()
    args = call.split()
    assert args[:2] == ["model", "build"]
    assert flag(args, "--data-dir") == str(data)
    assert args[-3:] == ["--quick", "--seed", "1"]

    second = run(["sh", str(MODEL_BUILDER)], env=env)
    assert second.returncode == 0, second.stderr
    assert "nothing to build" in second.stdout
    assert len((tmp_path / "calls").read_text().splitlines()) == 1


def test_model_builder_adds_exemplars_to_a_model_built_before(tmp_path):
    """A volume from before the build wrote exemplars: the builder writes them next to the
    model (and nothing else); a failure there leaves the model serving without them."""
    data = tmp_path / "data"
    (data / "mmlu_pro").mkdir(parents=True)
    (data / "mmlu_pro" / "questions.jsonl").write_text("{}\n")
    version = tmp_path / "models" / "semantic_router" / "1"
    version.mkdir(parents=True)
    for f in ("model.onnx", "tokenizer.json", "build_report.json"):
        (version / f).write_text("old\n")
    res = run(["sh", str(MODEL_BUILDER)], env=_builder_env(tmp_path, data, stub_exit=1))
    assert res.returncode == 0, res.stderr  # a failed exemplar step does not stop the stack
    assert "no category exemplars written" in res.stderr
    (call,) = (tmp_path / "calls").read_text().splitlines()
    assert call.split()[:2] == ["model", "exemplars"]
    assert flag(call.split(), "--model-dir") == str(version)
    assert flag(call.split(), "--data-dir") == str(data)

    res = run(["sh", str(MODEL_BUILDER)], env=_builder_env(tmp_path, data))
    assert res.returncode == 0, res.stderr
    assert (version / "category_exemplars.npz").is_file()
    assert (version / "model.onnx").read_text() == "old\n"  # not rebuilt
    res = run(["sh", str(MODEL_BUILDER)], env=_builder_env(tmp_path, data))
    assert len((tmp_path / "calls").read_text().splitlines()) == 2  # once written, left alone


def test_model_builder_without_data_or_with_a_failed_build(tmp_path):
    env = _builder_env(tmp_path, tmp_path / "no-data")
    res = run(["sh", str(MODEL_BUILDER)], env=env)
    assert res.returncode == 2
    assert "ROUTER_SVC_DATA" in res.stderr

    data = tmp_path / "data"
    (data / "mmlu_pro").mkdir(parents=True)
    (data / "mmlu_pro" / "questions.jsonl").write_text("{}\n")
    env = _builder_env(tmp_path, data, stub_exit=1)
    res = run(["sh", str(MODEL_BUILDER)], env=env)
    assert res.returncode != 0
    assert not (tmp_path / "models" / "semantic_router" / "1" / "model.onnx").exists()


# ---------------------------------------------------------------------------- Prometheus rules


def test_promtool_checks_config_and_rules():
    promtool = tool("promtool")
    for args in (["check", "config", str(PROMETHEUS_YML)], ["check", "rules", str(ALERTS)],
                 ["test", "rules", str(ALERT_TESTS)]):
        res = run([promtool, *args])
        assert res.returncode == 0, f"promtool {' '.join(args)}:\n{res.stdout}{res.stderr}"


def test_every_alert_has_a_unit_test():
    rules = yaml.safe_load(ALERTS.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert {"RouterDown", "RouterHighErrorRatio", "RouterHighP99Latency", "TritonNotReady",
            "RouterCacheHitRatioCollapse"} <= alerts
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    fired = {c["alertname"] for t in tests for c in t["alert_rule_test"] if c["exp_alerts"]}
    assert alerts == fired


# ---------------------------------------------------------------------------- metric names

METRIC_NAME = re.compile(r"(?<![\w:])((?:router|nv)_[A-Za-z0-9_]+)\b")
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


def metric_names(expr: str) -> set[str]:
    """router_* / nv_* metric names in a PromQL expression (not inside label values)."""
    return set(METRIC_NAME.findall(QUOTED.sub('""', expr)))


def dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        exprs.append(q.get("query", "") if isinstance(q, dict) else str(q or ""))
    return exprs


def alert_queries() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def exposed_names(text: str) -> tuple[set[str], dict[str, str]]:
    """Names with samples, and the ``# TYPE`` declarations (name -> kind) of an exposition."""
    sampled = {m.group(1) for m in re.finditer(r"^([A-Za-z_:][\w:]*)[{ ]", text, re.M)}
    return sampled, dict(re.findall(r"^# TYPE (\S+) (\S+)", text, re.M))


def sample_names(types: dict[str, str]) -> set[str]:
    """The sample names that declared families produce (prometheus_client conventions)."""
    out = set()
    for name, kind in types.items():
        out.add(name)
        if kind in ("histogram", "summary"):
            out |= {f"{name}_sum", f"{name}_count"}
        if kind == "histogram":
            out.add(f"{name}_bucket")
        if kind == "counter" and not name.endswith("_total"):
            out.add(f"{name}_total")
    return out


def test_metric_name_extraction():
    expr = ('sum by (le) (rate(router_request_seconds_bucket{endpoint=~"x|router_fake"}[5m]))'
            ' / on() nv_inference_count{model="semantic_router"} and router:recorded_rule')
    assert metric_names(expr) == {"router_request_seconds_bucket", "nv_inference_count"}


def test_queries_name_only_known_triton_metrics():
    queried = set().union(*map(metric_names, dashboard_queries() + alert_queries()))
    triton = {n for n in queried if n.startswith("nv_")}
    assert triton, "the dashboard shows Triton's own metrics"
    assert triton <= TRITON_METRICS, f"not Triton 2.51 metrics: {sorted(triton - TRITON_METRICS)}"


async def _router_traffic(url: str) -> None:
    """A routed request, a streamed one (time to first token), one with PII, a completion."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        for body in (
            {"model": "auto", "messages": [{"role": "user", "content": MATH}]},
            {"model": "auto", "stream": True, "stream_options": {"include_usage": True},
             "messages": [{"role": "user", "content": "Explain supply and demand."}]},
            {"model": "auto", "messages": [{"role": "user", "content": CARD}]},  # PII: refused
        ):
            async with s.post(f"{url}/v1/chat/completions", json=body) as r:
                await r.read()
                assert r.status == 200, await r.text()
        async with s.post(f"{url}/v1/completions", json={"model": "auto", "prompt": MATH}) as r:
            assert r.status == 200, await r.text()


@pytest.mark.integration
@pytest.mark.usefixtures("clean_backends")
async def test_queries_name_only_metrics_the_router_and_triton_export(router_factory,
                                                                      trained_triton):
    url = await router_factory()
    await _router_traffic(url)
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as r:
        router_text = await r.text()
    sampled, types = exposed_names(router_text)
    declared = sample_names(types)
    queried = set().union(*map(metric_names, dashboard_queries() + alert_queries()))
    router_queried = {n for n in queried if n.startswith("router_")}
    unknown = router_queried - (sampled | declared)
    assert not unknown, f"queried but not exported by the router: {sorted(unknown)}"
    # The traffic above makes the panels' core series real samples, not only declarations.
    # (router_pii_entities_total gets samples only if the model finds the card number: how well
    # it does is tests/test_app.py's business, so here it only has to be declared.)
    for name in ("router_requests_total", "router_routing_decisions_total",
                 "router_request_seconds_bucket", "router_classification_seconds_bucket",
                 "router_backend_seconds_bucket", "router_ttft_seconds_bucket",
                 "router_tokens_total", "router_triton_batch_size_bucket",
                 "router_triton_seconds_bucket", "router_cache_requests_total"):
        assert name in router_queried, f"the dashboard should show {name}"
        assert name in sampled, f"{name} has no samples after real traffic"
    assert "router_pii_entities_total" in router_queried

    triton_text = await asyncio.to_thread(
        lambda: urllib.request.urlopen(trained_triton.metrics_url, timeout=10).read().decode())
    t_sampled, t_types = exposed_names(triton_text)
    live = t_sampled | set(t_types)
    assert live <= TRITON_METRICS | {n for n in live if not n.startswith("nv_")}, (
        f"Triton exports names missing from TRITON_METRICS: {sorted(live - TRITON_METRICS)}")
    triton_queried = {n for n in queried if n.startswith("nv_")} - TRITON_GPU_METRICS
    assert triton_queried <= live, f"not on Triton's endpoint: {sorted(triton_queried - live)}"


# ---------------------------------------------------------------------------- CPU Triton


@pytest.mark.integration
def test_cpu_triton_entrypoint_listens_on_all_interfaces(trained_model_dir, tmp_path):
    ports = [free_port() for _ in range(3)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = (tmp_path / "out.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(TRITON_CPU), "--model-dir", str(trained_model_dir),
         "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
         "--metrics-port", str(ports[2]), "--work-dir", str(tmp_path / "work")],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        ready = False
        while time.monotonic() < deadline and proc.poll() is None and not ready:
            health = f"http://127.0.0.1:{ports[0]}/v2/health/ready"
            with contextlib.suppress(OSError), urllib.request.urlopen(health, timeout=2) as r:
                ready = r.status == 200
            time.sleep(0.5)
        out = (tmp_path / "out.log").read_text()
        assert ready, f"CPU Triton not ready:\n{out[-3000:]}"
        for _ in range(20):  # the log follower copies Triton's log once a second
            out = (tmp_path / "out.log").read_text()
            if "triton-cpu: ready" in out:
                break
            time.sleep(0.25)
        assert f"Started GRPCInferenceService at 0.0.0.0:{ports[1]}" in out
        assert f"Started HTTPService at 0.0.0.0:{ports[0]}" in out
        assert f"Started Metrics Service at 0.0.0.0:{ports[2]}" in out
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


# ---------------------------------------------------------------------------- real Prometheus


async def _prom_query(s: aiohttp.ClientSession, base: str, expr: str) -> list[dict[str, Any]]:
    async with s.get(f"{base}/api/v1/query", params={"query": expr}) as r:
        body = await r.json()
    assert body["status"] == "success", f"{expr}: {body}"
    return body["data"]["result"]


async def _eventually(fn, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, AssertionError):
            last = await fn()
            if last:
                return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last: {last})")


@pytest.mark.integration
@pytest.mark.usefixtures("clean_backends")
async def test_real_prometheus_scrapes_the_router(router_factory, tmp_path):
    prometheus = tool("prometheus")
    url = await router_factory()
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": "router",
                            "static_configs": [{"targets": [urlsplit(url).netloc]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
            async def ready():
                if proc.poll() is not None:
                    raise RuntimeError(f"prometheus exited with status {proc.returncode}:\n"
                                       + (tmp_path / "prometheus.log").read_text())
                async with s.get(f"{base}/-/ready") as r:
                    return r.status == 200

            await _eventually(ready, "Prometheus ready")

            async def scraped():
                res = await _prom_query(s, base, 'up{job="router"} == 1')
                return res

            await _eventually(scraped, "a successful scrape of the router")

            async with s.post(f"{url}/v1/chat/completions", json={
                    "model": "auto", "messages": [{"role": "user", "content": MATH}]}) as r:
                assert r.status == 200, await r.text()
                headers = r.headers
            category = headers["x-router-category"]
            expected = {"category": category if category in CATEGORIES else "other",
                        "model": headers["x-router-model"], "reason": headers["x-router-reason"]}
            selector = ", ".join(f'{k}="{v}"' for k, v in expected.items())

            async def routed():
                return await _prom_query(
                    s, base, f'router_routing_decisions_total{{job="router", {selector}}}')

            (series,) = await _eventually(routed, f"router_routing_decisions_total{{{selector}}}")
            assert {k: series["metric"][k] for k in expected} == expected
            assert float(series["value"][1]) == 1.0

            # The alert rules load and evaluate against real router series without errors.
            async def rules_evaluated():
                async with s.get(f"{base}/api/v1/rules") as r:
                    groups = (await r.json())["data"]["groups"]
                rules = [rule for g in groups for rule in g["rules"]]
                if not rules or any(ru["lastEvaluation"].startswith("0001") for ru in rules):
                    return None
                return groups

            groups = await _eventually(rules_evaluated, "the alert rules to be evaluated")
            want = {g["name"] for g in yaml.safe_load(ALERTS.read_text())["groups"]}
            assert {g["name"] for g in groups} == want
            bad = [(ru["name"], ru.get("lastError")) for g in groups for ru in g["rules"]
                   if ru["health"] != "ok"]
            assert not bad, bad

            # Every dashboard query is valid PromQL (Grafana's variables filled in).
            for expr in dashboard_queries():
                if expr.startswith("label_values("):
                    continue
                q = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
                await _prom_query(s, base, q)
            by_category = next(
                t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"]
                if p["title"] == "Routing decisions by category" for t in p["targets"])

            async def panel_shows_the_category():
                result = await _prom_query(s, base, by_category.replace(
                    "$__rate_interval", "10s").replace("$instance", ".*"))
                return expected["category"] in {r["metric"].get("category") for r in result}

            await _eventually(panel_shows_the_category, "the category panel's series")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_inner_services_listen_on_localhost_only(configs, variant):
    """Triton, Prometheus, Grafana, Milvus and Jaeger are for this host; the routers and the
    Envoys serve clients (etcd and MinIO publish nothing: only Milvus talks to them)."""
    services = configs[variant]["services"]
    for name in ("milvus-etcd", "milvus-minio", "router-shared-a", "router-shared-b"):
        assert not published_ports(services[name]), name  # behind envoy-shared-cache / Milvus
    for name in ("triton", "prometheus", "grafana", "milvus-standalone", "jaeger"):
        for p in services[name].get("ports", []):
            host = p.get("host_ip") if isinstance(p, dict) else str(p).rsplit(":", 2)[0]
            assert host == "127.0.0.1", (name, p)


def test_grafana_password_comes_from_the_environment(configs):
    env = configs["gpu"]["services"]["grafana"]["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "from-the-environment"
    args = [tool("docker-compose"), "-f", str(COMPOSE), "config"]
    no_env = {k: v for k, v in os.environ.items() if k != "GRAFANA_ADMIN_PASSWORD"}
    res = run(args, env=no_env)
    assert res.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in res.stderr


def _seconds(value: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|h|m|s)", value))


@pytest.mark.parametrize("name", sorted(ROUTERS))
def test_stop_grace_period_covers_the_routers_drain(configs, name):
    cfg = load_config(ROUTERS[name])
    drain = max(60.0, cfg.extproc.grace_s + 5)  # ops.serve: the HTTP door's shutdown timeout
    for variant in ("gpu", "cpu"):
        grace = configs[variant]["services"][name].get("stop_grace_period", "10s")
        assert _seconds(str(grace)) > drain, (variant, grace)


def test_cpu_triton_serves_the_int8_model_the_build_made_from_this_model(
        tiny_model_dir, tmp_path, capsys):
    import importlib.util
    import shutil

    from router_svc.ops.up import ensure_int8

    spec = importlib.util.spec_from_file_location("triton_cpu", TRITON_CPU)
    triton_cpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(triton_cpu)
    model_dir = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model_dir)
    assert triton_cpu.served_file(model_dir, fp32=False) == "model.onnx"  # none: said, fp32
    assert "model.int8.onnx is missing or was not made from this model.onnx" in (
        capsys.readouterr().err)
    ensure_int8(model_dir)
    capsys.readouterr()
    assert triton_cpu.served_file(model_dir, fp32=False) == "model.int8.onnx"
    assert triton_cpu.served_file(model_dir, fp32=True) == "model.onnx"
    assert capsys.readouterr().err == ""
