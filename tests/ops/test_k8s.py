"""Kubernetes manifests (deploy/k8s): kustomize base, overlays ``gpu`` and ``cpu``, components.

- ``kubectl kustomize`` renders every overlay, and each overlay with each component;
- every rendered object validates against the Kubernetes 1.32 API schema, offline and strict
  (``kubernetes-validate``; the ServiceMonitor CRD is checked by hand);
- names, ports, labels, paths and images agree between the manifests, the router config (loaded
  with the router's own ``load_config``), the Dockerfile, compose and deploy/README.md, as
  tests/ops/test_deploy.py does for compose.

kubectl (1.32, with kustomize 5.5) is not installed by the venv: the tests fail, naming how to
install it, when it is missing.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from router_svc.config.loading import load_config
from router_svc.doors.http.app import create_app

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("gpu", "cpu")
COMPONENTS = ("shared-cache", "servicemonitor")
K8S_VERSION = "1.32.0"
NAMESPACE = "router-svc"
KUBECTL_HINT = (
    "kubectl not found: install kubectl 1.32 (it includes kustomize), e.g. "
    "curl -LO https://dl.k8s.io/release/v1.32.0/bin/linux/amd64/kubectl && "
    "install -m 0755 kubectl /usr/local/bin/kubectl, or apt-get install -y kubectl from "
    "https://pkgs.k8s.io/core:/stable:/v1.32/deb/"
)
CRD_GROUPS = ("monitoring.coreos.com/",)

Doc = dict[str, Any]


# ---------------------------------------------------------------------------- helpers


def find_kubectl(path: str | None = None, fallback: Path = Path("/usr/bin/kubectl")) -> str:
    """kubectl's path; fails (never skips) with how to install it."""
    found = shutil.which("kubectl", path=path) or (str(fallback) if fallback.exists() else None)
    if found is None:
        pytest.fail(KUBECTL_HINT)
    return found


def kustomize(directory: Path) -> list[Doc]:
    res = subprocess.run([find_kubectl(), "kustomize", str(directory)], capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 0, f"kubectl kustomize {directory}:\n{res.stderr}"
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def render_with(overlay: str, component: str, tmp: Path) -> list[Doc]:
    """An overlay plus a component, as the overlay's own commented ``components:`` line does
    it: a kustomization over both with the overlay's namespace (paths relative: kustomize
    takes no absolute ones)."""
    own = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
    tmp.mkdir(parents=True, exist_ok=True)
    rel = Path(os.path.relpath(K8S, tmp))
    (tmp / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": own["namespace"],
        "resources": [str(rel / "overlays" / overlay)],
        "components": [str(rel / "components" / component)],
    }))
    return kustomize(tmp)


@pytest.fixture(scope="module")
def renders(tmp_path_factory) -> dict[str, list[Doc]]:
    out = {o: kustomize(K8S / "overlays" / o) for o in OVERLAYS}
    for o in OVERLAYS:
        for c in COMPONENTS:
            out[f"{o}+{c}"] = render_with(o, c, tmp_path_factory.mktemp(f"{o}-{c}"))
    return out


def find(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    hits = [d for d in docs if d["kind"] == kind and (
        name is None or d["metadata"]["name"] == name)]
    assert len(hits) == 1, f"{kind} {name}: {len(hits)} found"
    return hits[0]


def pod_spec(doc: Doc) -> Doc:
    return doc["spec"]["template"]["spec"]


def container(doc: Doc, name: str) -> Doc:
    (c,) = [c for c in pod_spec(doc)["containers"] if c["name"] == name]
    return c


def all_containers(spec: Doc) -> list[Doc]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def workloads(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] in ("Deployment", "Job")]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pods_selected(docs: list[Doc], selector: dict[str, str]) -> list[str]:
    return [d["metadata"]["name"] for d in workloads(docs)
            if selects(selector, d["spec"]["template"]["metadata"]["labels"])]


def port_number(c: Doc, port: int | str) -> int:
    """A container port by number or name."""
    if isinstance(port, int):
        assert port in {p["containerPort"] for p in c["ports"]}, (c["name"], port)
        return port
    (num,) = [p["containerPort"] for p in c["ports"] if p.get("name") == port]
    return num


def service_port(svc: Doc, name: str) -> Doc:
    (p,) = [p for p in svc["spec"]["ports"] if p["name"] == name]
    return p


def mount_of(doc: Doc, c: Doc, path: str) -> tuple[str, Doc]:
    """(mountPath, volume) of the mount that holds ``path`` in container ``c``."""
    volumes = {v["name"]: v for v in pod_spec(doc)["volumes"]}
    hits = [m for m in c.get("volumeMounts", [])
            if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert hits, f"{c['name']}: nothing mounted at {path}"
    m = max(hits, key=lambda m: len(m["mountPath"]))
    return m["mountPath"], volumes[m["name"]]


def flag(cmd: list[str], name: str) -> str:
    for i, arg in enumerate(cmd):
        if arg == name:
            return cmd[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} not in {cmd}")


def router_config_doc(docs: list[Doc]) -> tuple[Doc, str, str]:
    """The ConfigMap the router mounts, the key its --config names, and that path."""
    router = find(docs, "Deployment", "router")
    c = container(router, "router")
    path = flag(c["command"], "--config")
    mount, volume = mount_of(router, c, path)
    key = path[len(mount):].lstrip("/")
    cm = find(docs, "ConfigMap", volume["configMap"]["name"])
    assert key in cm["data"], f"{cm['metadata']['name']} has no {key}"
    return cm, key, path


def load_router_config(docs: list[Doc], tmp_path: Path):
    cm, key, _ = router_config_doc(docs)
    f = tmp_path / key
    f.write_text(cm["data"][key])
    # Files the config names inside the container (the tokenizer on the model volume) need not
    # exist here, as for compose's router config in test_deploy.py.
    return load_config(f, environ={})


def dockerfile(name: str = "Dockerfile") -> list[tuple[str, str]]:
    out, pending = [], ""
    for line in (ROOT / name).read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, rest = (pending + line).strip().partition(" ")
        pending = ""
        out.append((word.upper(), rest.strip()))
    return out


def compose(name: str = "compose.yaml") -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())["services"]


def compose_command(svc: dict[str, Any]) -> list[str]:
    cmd = svc["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


# ---------------------------------------------------------------------------- rendering


def test_missing_kubectl_fails_with_how_to_install(tmp_path):
    with pytest.raises(pytest.fail.Exception, match=r"install kubectl 1\.32"):
        find_kubectl(path=str(tmp_path), fallback=tmp_path / "no-kubectl")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_part(renders, overlay):
    docs = renders[overlay]
    kinds = {(d["kind"], d["metadata"]["name"].rsplit("-", 1)[0] if d["kind"] == "ConfigMap"
              else d["metadata"]["name"]) for d in docs}
    assert {("Namespace", NAMESPACE), ("Deployment", "router"), ("Service", "router"),
            ("ConfigMap", "router-config"), ("HorizontalPodAutoscaler", "router"),
            ("PodDisruptionBudget", "router"), ("Deployment", "triton"), ("Service", "triton"),
            ("PodDisruptionBudget", "triton"), ("NetworkPolicy", "triton-ingress"),
            ("Job", "model-build"), ("PersistentVolumeClaim", "models"),
            ("PersistentVolumeClaim", "training-data")} <= kinds
    assert not [d for d in docs if d["apiVersion"].startswith(CRD_GROUPS)]
    for d in docs:
        meta = d["metadata"]
        if d["kind"] != "Namespace":
            assert meta.get("namespace") == NAMESPACE, (d["kind"], meta["name"])
        assert meta["labels"]["app.kubernetes.io/part-of"] == "router-svc", meta["name"]
        if d["kind"] != "Namespace":
            assert meta["labels"].get("app.kubernetes.io/name"), (d["kind"], meta["name"])
    ns = find(docs, "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for w in workloads(docs):
        labels = w["spec"]["template"]["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/component",
                    "app.kubernetes.io/part-of"):
            assert labels.get(key), (w["metadata"]["name"], key)


def schema_docs(renders) -> list[tuple[str, Doc]]:
    return [(name, d) for name, docs in renders.items() for d in docs]


def test_every_object_validates_against_the_kubernetes_schema(renders):
    checked = set()
    for name, d in schema_docs(renders):
        if d["apiVersion"].startswith(CRD_GROUPS):
            continue  # test_servicemonitor_component
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{name}: {d['kind']} {d['metadata']['name']}: {e.message}")
        checked.add((d["kind"], d["metadata"]["name"]))
    loader = yaml.safe_load((K8S / "tools" / "loader.yaml").read_text())
    kubernetes_validate.validate(loader, K8S_VERSION, strict=True)
    assert len(checked) >= 15


def test_the_validator_is_strict():
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
           "spec": {"ports": [{"port": 80, "targetPort": 80}], "clusterIp": "None"}}
    with pytest.raises(kubernetes_validate.ValidationError, match="clusterIp"):
        kubernetes_validate.validate(svc, K8S_VERSION, strict=True)


# ---------------------------------------------------------------------------- router config


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_router_config_points_at_the_triton_headless_service(renders, overlay, tmp_path):
    docs = renders[overlay]
    cfg = load_router_config(docs, tmp_path)
    host, port = cfg.triton.url.rsplit(":", 1)
    svc_name, ns, *rest = host.split(".")
    assert rest == ["svc", "cluster", "local"], host
    svc = find(docs, "Service", svc_name)
    assert ns == svc["metadata"]["namespace"] == NAMESPACE
    assert svc["spec"]["clusterIP"] == "None", "Triton's Service must be headless"
    assert pods_selected(docs, svc["spec"]["selector"]) == ["triton"]
    grpc = service_port(svc, "grpc")
    assert grpc["port"] == int(port)
    triton = find(docs, "Deployment", "triton")
    assert port_number(container(triton, "triton"), grpc["targetPort"]) == int(port) == 8001


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_router_config_is_composes_but_for_the_addresses(renders, overlay, tmp_path):
    """Everything but triton.url and the backends' base_url equals deploy/router-config.yaml;
    the demo backends' Service ports lead to the container serving that model."""
    docs = renders[overlay]
    cm, key, _ = router_config_doc(docs)
    k8s = yaml.safe_load(cm["data"][key])
    compose_cfg = yaml.safe_load((ROOT / "deploy" / "router-config.yaml").read_text())
    for raw in (k8s, compose_cfg):
        raw["triton"].pop("url")
        for mc in raw["model_config"].values():
            mc["backend"].pop("base_url")
    assert k8s == compose_cfg

    cfg = load_router_config(docs, tmp_path)
    demo = find(docs, "Deployment", "demo-backends")
    for model, mc in cfg.model_config.items():
        url = urlsplit(mc.backend.base_url)
        svc = find(docs, "Service", url.hostname)
        assert pods_selected(docs, svc["spec"]["selector"]) == ["demo-backends"]
        (sp,) = [p for p in svc["spec"]["ports"] if p["port"] == url.port]
        (c,) = [c for c in pod_spec(demo)["containers"]
                if sp["targetPort"] in {p["name"] for p in c["ports"]}]
        cmd = c["command"]
        assert int(flag(cmd, "--port")) == port_number(c, sp["targetPort"]), model
        assert flag(cmd, "--name") == mc.backend.model
        assert flag(cmd, "--host") == "0.0.0.0"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_router_ports_config_service_and_dockerfile_agree(renders, overlay, tmp_path):
    docs = renders[overlay]
    cfg = load_router_config(docs, tmp_path)
    router = find(docs, "Deployment", "router")
    c = container(router, "router")
    svc = find(docs, "Service", "router")
    assert pods_selected(docs, svc["spec"]["selector"]) == ["router"]
    http = service_port(svc, "http")
    expose = {int(a) for i, a in dockerfile() if i == "EXPOSE"}
    assert port_number(c, http["targetPort"]) == cfg.listen.port == http["port"]
    assert expose == {cfg.listen.port}
    assert cfg.listen.host == "0.0.0.0"
    assert cfg.extproc.enabled
    assert port_number(c, service_port(svc, "extproc")["targetPort"]) == cfg.extproc.port
    _, _, path = router_config_doc(docs)
    cmd = [a for i, a in dockerfile() if i == "CMD"][-1]
    assert c["command"] == yaml.safe_load(cmd), "the image's own command, config path included"
    assert path == "/etc/router-svc/config.yaml"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_scrape_annotations_hit_what_the_router_serves(renders, overlay, tmp_path):
    docs = renders[overlay]
    cfg = load_router_config(docs, tmp_path)
    served = {r.resource.canonical for r in create_app(cfg).router.routes()}
    router = find(docs, "Deployment", "router")
    c = container(router, "router")
    probes = {k: c[k]["httpGet"] for k in ("readinessProbe", "livenessProbe", "startupProbe")}
    assert probes["readinessProbe"]["path"] == "/ready"
    assert probes["livenessProbe"]["path"] == "/health"
    for probe in probes.values():
        assert probe["path"] in served
        assert port_number(c, probe["port"]) == cfg.listen.port
    ann = router["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert int(ann["prometheus.io/port"]) == cfg.listen.port
    assert ann["prometheus.io/path"] == "/metrics" and "/metrics" in served

    triton = find(docs, "Deployment", "triton")
    t = container(triton, "triton")
    assert t["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert t["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert port_number(t, t["readinessProbe"]["httpGet"]["port"]) == 8000
    t_ann = triton["spec"]["template"]["metadata"]["annotations"]
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "triton"]
    compose_port = int(job["static_configs"][0]["targets"][0].rsplit(":", 1)[1])
    assert int(t_ann["prometheus.io/port"]) == port_number(t, "metrics") == compose_port
    assert t_ann["prometheus.io/path"] == "/metrics"


# ---------------------------------------------------------------------------- wiring


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_pdbs_and_hpa_target_the_right_deployments(renders, overlay):
    docs = renders[overlay]
    for d in docs:
        if d["kind"] == "Deployment":
            assert selects(d["spec"]["selector"]["matchLabels"],
                           d["spec"]["template"]["metadata"]["labels"])
    for svc in (d for d in docs if d["kind"] == "Service"):
        assert len(pods_selected(docs, svc["spec"]["selector"])) == 1, svc["metadata"]["name"]
    for name in ("router", "triton"):
        pdb = find(docs, "PodDisruptionBudget", name)
        assert pods_selected(docs, pdb["spec"]["selector"]["matchLabels"]) == [name]
    hpa = find(docs, "HorizontalPodAutoscaler", "router")
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", "router")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert "replicas" not in find(docs, "Deployment", "router")["spec"], "the HPA decides"
    router_pdb = find(docs, "PodDisruptionBudget", "router")
    assert router_pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_router_pods_reach_tritons_grpc_port(renders, overlay, tmp_path):
    docs = renders[overlay]
    cfg = load_router_config(docs, tmp_path)
    np = find(docs, "NetworkPolicy", "triton-ingress")
    assert np["spec"]["policyTypes"] == ["Ingress"]
    assert pods_selected(docs, np["spec"]["podSelector"]["matchLabels"]) == ["triton"]
    t = container(find(docs, "Deployment", "triton"), "triton")
    rules = np["spec"]["ingress"]
    (router_rule,) = [r for r in rules if any(
        "namespaceSelector" not in f and pods_selected(docs, f["podSelector"]["matchLabels"])
        for f in r["from"])]
    assert [pods_selected(docs, f["podSelector"]["matchLabels"]) for f in router_rule["from"]] \
        == [["router"]]
    assert [port_number(t, p["port"]) for p in router_rule["ports"]] == [
        int(cfg.triton.url.rsplit(":", 1)[1])]
    others = [r for r in rules if r is not router_rule]
    for r in others:  # Prometheus only, from its own namespace, to the metrics port only
        for f in r["from"]:
            assert f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] != (
                NAMESPACE)
            assert not pods_selected(docs, f["podSelector"]["matchLabels"])
        ann = find(docs, "Deployment", "triton")["spec"]["template"]["metadata"]["annotations"]
        assert [port_number(t, p["port"]) for p in r["ports"]] == [
            int(ann["prometheus.io/port"])]
    assert len(others) == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_locked_down_with_resources(renders, overlay):
    (user,) = [a for i, a in dockerfile() if i == "USER"]
    uid = int(user.split(":")[0])
    docs = renders[overlay]
    specs = [(w["metadata"]["name"], pod_spec(w)) for w in workloads(docs)]
    loader = yaml.safe_load((K8S / "tools" / "loader.yaml").read_text())
    specs.append(("loader", loader["spec"]))
    assert {n for n, _ in specs} >= {"router", "triton", "model-build", "demo-backends"}
    for name, spec in specs:
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, name
        assert psc["runAsUser"] == uid, name
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        for c in all_containers(spec):
            where = f"{name}/{c['name']}"
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc["capabilities"].get("add"), where
            assert sc["readOnlyRootFilesystem"] is True, where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (where, kind)
            for pod_level in ("runAsUser", "runAsNonRoot"):
                assert sc.get(pod_level, psc[pod_level]) == psc[pod_level], where


def test_the_dockerfile_user_is_the_uid_the_manifests_use():
    (user,) = [a for i, a in dockerfile() if i == "USER"]
    run = " ".join(a for i, a in dockerfile() if i == "RUN")
    assert re.search(rf"useradd .*--uid {user.split(':')[0]}\b", run)


# ---------------------------------------------------------------------------- model volume


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_triton_reads_the_model_where_the_build_writes_it(renders, overlay, tmp_path):
    docs = renders[overlay]
    job = find(docs, "Job", "model-build")
    builder = container(job, "model-builder")
    env = {e["name"]: e["value"] for e in builder["env"]}
    repo_mount, repo_vol = mount_of(job, builder, env["MODEL_REPOSITORY"])
    assert repo_mount == env["MODEL_REPOSITORY"]
    claim = repo_vol["persistentVolumeClaim"]["claimName"]
    find(docs, "PersistentVolumeClaim", claim)
    assert "command" not in builder and "args" not in builder, "the image runs model-builder.sh"
    assert ("CMD", '["/bin/sh", "/usr/local/bin/model-builder"]') in dockerfile(
        "Dockerfile.builder")
    data_mount, data_vol = mount_of(job, builder, env["DATA_DIR"])
    assert data_mount == env["DATA_DIR"]
    find(docs, "PersistentVolumeClaim", data_vol["persistentVolumeClaim"]["claimName"])
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # deploy/model-builder.sh writes $MODEL_REPOSITORY/semantic_router/1/{model.onnx,tokenizer.json}
    script = (ROOT / "deploy" / "model-builder.sh").read_text()
    assert 'model="$repo/semantic_router"' in script and '"$model/1/model.onnx"' in script
    model_dir = f"{env['MODEL_REPOSITORY']}/semantic_router/1"

    triton = find(docs, "Deployment", "triton")
    t = container(triton, "triton")
    if overlay == "gpu":
        repo = flag(t["command"], "--model-repository")
        assert repo == env["MODEL_REPOSITORY"]
        assert repo == flag(compose_command(compose()["triton"]), "--model-repository")
        _, vol = mount_of(triton, t, repo)
    else:
        served = flag(t["command"], "--model-dir")
        assert served == model_dir
        cpu = compose("compose.cpu.yaml")["triton-cpu"]
        assert served == flag(compose_command(cpu), "--model-dir")
        _, vol = mount_of(triton, t, served)
    assert vol["persistentVolumeClaim"]["claimName"] == claim

    cfg = load_router_config(docs, tmp_path)
    assert str(cfg.tokenizer) == f"{model_dir}/tokenizer.json"
    router = find(docs, "Deployment", "router")
    _, rvol = mount_of(router, container(router, "router"), str(cfg.tokenizer))
    assert rvol["persistentVolumeClaim"]["claimName"] == claim
    # The init containers wait for the very files the build writes last / the router reads.
    waits = {w["metadata"]["name"]: " ".join(pod_spec(w)["initContainers"][0]["command"])
             for w in (triton, router)}
    assert f"{model_dir}/model.onnx" in waits["triton"]
    assert str(cfg.tokenizer) in waits["router"]


def test_the_build_waits_for_the_data_the_readme_tells_how_to_copy(renders):
    job = find(renders["gpu"], "Job", "model-build")
    (wait,) = pod_spec(job)["initContainers"]
    script = " ".join(wait["command"])
    readme = (ROOT / "deploy" / "README.md").read_text()
    assert "/data/.complete" in script and "touch /data/.complete" in readme
    assert f"-c {wait['name']}" in readme
    mount, _ = mount_of(job, wait, "/data/.complete")
    assert mount == {e["name"]: e["value"] for e in container(job, "model-builder")["env"]}[
        "DATA_DIR"]


# ---------------------------------------------------------------------------- images


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_composes(renders, overlay):
    docs = renders[overlay]
    services = compose()
    router_image = services["router"]["image"]
    assert container(find(docs, "Deployment", "router"), "router")["image"] == router_image
    assert container(find(docs, "Job", "model-build"), "model-builder")["image"] == (
        services["model-builder"]["image"])
    demo = find(docs, "Deployment", "demo-backends")
    assert {c["image"] for c in pod_spec(demo)["containers"]} == {
        services[f"demo-{m}"]["image"] for m in ("phi4", "mistral", "gemma")}
    triton = container(find(docs, "Deployment", "triton"), "triton")
    if overlay == "gpu":
        assert triton["image"] == services["triton"]["image"]
    else:
        assert triton["image"] == compose("compose.cpu.yaml")["triton-cpu"]["image"]
    for w in workloads(docs):
        for c in pod_spec(w).get("initContainers", []):
            assert c["image"] == router_image, (w["metadata"]["name"], c["name"])


def test_gpu_triton_runs_composes_command_on_a_gpu(renders):
    docs = renders["gpu"]
    triton = find(docs, "Deployment", "triton")
    t = container(triton, "triton")
    assert t["command"] == compose_command(compose()["triton"])
    assert t["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
        pod_spec(triton)["tolerations"])
    cpu_docs = yaml.safe_dump(renders["cpu"])
    assert "nvidia.com/gpu" not in cpu_docs


def test_cpu_triton_runs_deploy_triton_cpu_py(renders):
    docs = renders["cpu"]
    triton = find(docs, "Deployment", "triton")
    t = container(triton, "triton")
    cpu = compose("compose.cpu.yaml")["triton-cpu"]
    assert t["command"] == compose_command(cpu)
    # The script is in the router image, where the Dockerfile copies deploy/triton_cpu.py.
    copies = [a.split() for i, a in dockerfile() if i == "COPY"]
    assert ["deploy/triton_cpu.py", t["command"][1]] in copies, copies
    shm = [v for v in pod_spec(triton)["volumes"] if v.get("emptyDir", {}).get("medium")]
    (dshm,) = shm
    assert mount_of(triton, t, "/dev/shm")[1] is dshm
    assert dshm["emptyDir"]["sizeLimit"] == cpu["shm_size"].replace("m", "Mi")
    res = t["resources"]
    assert res["requests"] == res["limits"], "Guaranteed QoS: whole cores"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_router_grace_period_covers_its_drain(renders, overlay, tmp_path):
    docs = renders[overlay]
    cfg = load_router_config(docs, tmp_path)
    drain = max(60.0, cfg.extproc.grace_s + 5)  # ops.serve: the HTTP door's shutdown timeout
    spec = pod_spec(find(docs, "Deployment", "router"))
    pre_stop = container(find(docs, "Deployment", "router"), "router")["lifecycle"]["preStop"]
    assert spec["terminationGracePeriodSeconds"] > drain + pre_stop["sleep"]["seconds"]


# ---------------------------------------------------------------------------- components


def helm_milvus_release(readme: str) -> tuple[str, str]:
    m = re.search(r"helm install (\S+) zilliztech/milvus --namespace (\S+)", readme)
    assert m, "deploy/README.md shows the Milvus helm install"
    return m.group(1), m.group(2)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_shared_cache_component_points_at_the_helm_milvus(renders, overlay, tmp_path):
    docs = renders[f"{overlay}+shared-cache"]
    cfg = load_router_config(docs, tmp_path)
    assert cfg.cache.enabled and cfg.cache.backend == "milvus"
    release, ns = helm_milvus_release((ROOT / "deploy" / "README.md").read_text())
    # The chart names its Service after the release when the release name contains "milvus".
    assert "milvus" in release
    uri = urlsplit(cfg.cache.milvus.uri)
    assert (uri.scheme, uri.hostname, uri.port) == (
        "http", f"{release}.{ns}.svc.cluster.local", 19530)
    # Nothing but the cache section differs from the overlay's own config, and that section is
    # compose's shared-cache one but for the address and the token.
    cm, key, _ = router_config_doc(docs)
    base_cm, base_key, _ = router_config_doc(renders[overlay])
    shared, base = yaml.safe_load(cm["data"][key]), yaml.safe_load(base_cm["data"][base_key])
    cache = shared.pop("cache")
    assert cache != base.pop("cache")
    assert shared == base
    compose_cache = yaml.safe_load(
        (ROOT / "deploy" / "router-config.shared-cache.yaml").read_text())["cache"]
    for c in (cache, compose_cache):
        c["milvus"].pop("uri")
        c["milvus"].pop("token_env", None)
    assert cache == compose_cache
    router = container(find(docs, "Deployment", "router"), "router")
    env = {e["name"]: e for e in router.get("env", [])}
    for var in (cfg.cache.milvus.token_env, cfg.cache.admin_token_env):
        assert env[var]["valueFrom"]["secretKeyRef"]["optional"] is True, var
    # The router image with pymilvus: compose's shared-cache routers', built as the README says.
    shared_router = compose()["router-shared-a"]
    assert router["image"] == shared_router["image"] != compose()["router"]["image"]
    extras = shared_router["build"]["args"]["ROUTER_SVC_EXTRAS"]
    image = router["image"].removesuffix(":latest")
    assert f"docker build --build-arg ROUTER_SVC_EXTRAS={extras} -t {image} ." in (
        (ROOT / "deploy" / "README.md").read_text())
    # Only the router container changes image: the rest stays on compose's.
    others = [c["image"] for w in workloads(docs) for c in all_containers(pod_spec(w))
              if c is not router]
    assert router["image"] not in others


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_servicemonitor_component_scrapes_router_and_triton(renders, overlay, tmp_path):
    docs = renders[f"{overlay}+servicemonitor"]
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert {m["metadata"]["name"] for m in monitors} == {"router", "triton"}
    cfg = load_router_config(docs, tmp_path)
    for m in monitors:
        assert m["apiVersion"] == "monitoring.coreos.com/v1"
        assert m["metadata"]["namespace"] == NAMESPACE
        (svc,) = [s for s in docs if s["kind"] == "Service"
                  and selects(m["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        assert svc["metadata"]["name"] == m["metadata"]["name"]
        (ep,) = m["spec"]["endpoints"]
        sp = service_port(svc, ep["port"])
        assert ep["path"] == "/metrics"
        if svc["metadata"]["name"] == "router":
            assert sp["port"] == cfg.listen.port
        else:
            assert sp["port"] == 8002
