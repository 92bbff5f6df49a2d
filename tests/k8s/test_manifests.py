"""k8s/ as a cluster would get it: each overlay rendered by `kubectl kustomize`, validated
against Kubernetes' schemas (`kubernetes-validate --strict`, offline), and checked object by
object. Each check is a function that returns the problems it found, so that a test can also
prove that it fails on a broken render (see the tests at the end)."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

# Renders through a subprocess (kubectl): the integration tier.
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ["dev", "prod", "prod-canary"]
#: Each overlay's namespace (prod-canary is prod plus the canary).
NAMESPACES = {"dev": "fraud-dev", "prod": "fraud-prod", "prod-canary": "fraud-prod"}
#: The Secrets the user creates, with their keys: the one list, which docs/deploy.md shows.
USER_SECRETS_FILE = K8S / "user-secrets.yaml"
#: A recent Kubernetes release whose schemas kubernetes-validate bundles.
KUBERNETES_VERSION = "1.35.0"
APP_UID = 10001  # the Dockerfile's `fraud` user
#: The non-root user each image runs as: the images' own users (SeaweedFS's binary runs as any).
IMAGE_UIDS = {
    "fraud-api": APP_UID,  # ../Dockerfile's `fraud`
    "fraud-platform": APP_UID,  # deploy/platform.Dockerfile's `fraud`
    "docker.io/library/postgres": 999,  # the official image's `postgres`
    "docker.io/library/redis": 999,  # the official image's `redis`
    "docker.io/chrislusf/seaweedfs": 10002,
    "docker.io/nginxinc/nginx-unprivileged": 10001,  # any uid: it writes only its emptyDirs
}

Obj = dict[str, Any]


@cache
def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail(
            "kubectl is not installed: these tests render k8s/ with `kubectl kustomize` "
            "(kubectl has kustomize built in; CI machines have it at /usr/bin/kubectl)",
            pytrace=False,
        )
    return path


@cache
def rendered_text(overlay: str) -> str:
    proc = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"kubectl kustomize k8s/overlays/{overlay}:\n{proc.stderr}"
    return proc.stdout


def render(overlay: str) -> list[Obj]:
    """A fresh copy of the overlay's objects (tests may change theirs)."""
    return [d for d in yaml.safe_load_all(rendered_text(overlay)) if d]


def user_secrets() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(USER_SECRETS_FILE.read_text())


# --- what the objects hold -------------------------------------------------------------------


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def named(objs: list[Obj], kind: str, name: str) -> Obj | None:
    return next((o for o in of_kind(objs, kind) if o["metadata"]["name"] == name), None)


def pod_specs(objs: list[Obj]) -> Iterator[tuple[str, Obj]]:
    """(workload name, pod spec) of every workload with a pod template."""
    for o in objs:
        template = o.get("spec", {}).get("template")
        if template is not None:
            yield f"{o['kind']}/{o['metadata']['name']}", template["spec"]


def containers(pod: Obj, init: bool = True) -> list[Obj]:
    return pod.get("containers", []) + (pod.get("initContainers", []) if init else [])


def the_api(objs: list[Obj]) -> tuple[Obj, Obj]:
    """The API's Deployment and its container."""
    deployment = named(objs, "Deployment", "fraud-api")
    assert deployment is not None, "no Deployment fraud-api"
    pod = deployment["spec"]["template"]["spec"]
    return deployment, next(c for c in pod["containers"] if c["name"] == "api")


def effective_env(objs: list[Obj], container: Obj) -> dict[str, tuple[str, ...]]:
    """Each variable the container gets: ("value", v) or ("secret", name, key), env over envFrom."""
    env: dict[str, tuple[str, ...]] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            cm = named(objs, "ConfigMap", source["configMapRef"]["name"])
            for k, v in (cm or {}).get("data", {}).items():
                env[k] = ("value", v)
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = ("value", e["value"])
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = ("secret", ref["name"], ref["key"])
    return env


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --- the checks: each returns its problems ----------------------------------------------------


def missing_probes(objs: list[Obj]) -> list[str]:
    """Every long-running container has readiness and liveness probes (a Job's run to completion
    and have none); the API a startup probe too."""
    problems = []
    for where, pod in pod_specs(objs):
        if where.startswith("Job/"):
            continue
        for c in containers(pod, init=False):
            wanted = ["readinessProbe", "livenessProbe"]
            if c["name"] == "api":
                wanted.append("startupProbe")  # the model and feature state load first
            problems += [f"{where} {c['name']}: no {p}" for p in wanted if p not in c]
    return problems


def missing_resources(objs: list[Obj]) -> list[str]:
    problems = []
    for where, pod in pod_specs(objs):
        for c in containers(pod):
            res = c.get("resources", {})
            for bound in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(bound, {}):
                        problems.append(f"{where} {c['name']}: no {bound}.{r}")
    return problems


def unpinned_images(objs: list[Obj]) -> list[str]:
    problems = []
    for where, pod in pod_specs(objs):
        for c in containers(pod):
            image = c["image"]
            if "@sha256:" in image:
                continue
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            if not tag or tag == "latest":
                problems.append(f"{where} {c['name']}: image {image!r} is not pinned by a tag")
    return problems


def selector_mismatches(objs: list[Obj]) -> list[str]:
    problems = []
    for d in of_kind(objs, "Deployment"):
        selector = d["spec"]["selector"]
        labels = d["spec"]["template"]["metadata"].get("labels", {})
        if set(selector) != {"matchLabels"} or not selects(selector["matchLabels"], labels):
            problems.append(f"Deployment/{d['metadata']['name']}: {selector} vs labels {labels}")
    return problems


def service_port_mismatches(objs: list[Obj]) -> list[str]:
    problems = []
    for svc in of_kind(objs, "Service"):
        selector = svc["spec"].get("selector", {})
        pods = [
            d["spec"]["template"]
            for d in objs
            if "template" in d.get("spec", {})
            and selects(selector, d["spec"]["template"]["metadata"].get("labels", {}))
        ]
        if not pods:
            problems.append(f"Service/{svc['metadata']['name']} selects no pods")
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for pod in pods:
                ports = [p for c in pod["spec"]["containers"] for p in c.get("ports", [])]
                if not any(target in (p.get("name"), p["containerPort"]) for p in ports):
                    problems.append(
                        f"Service/{svc['metadata']['name']}: targetPort {target!r} is no "
                        f"container port of the pods it selects"
                    )
    return problems


def dangling_scalers_and_budgets(objs: list[Obj]) -> list[str]:
    problems = []
    for hpa in of_kind(objs, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if ref["kind"] != "Deployment" or named(objs, "Deployment", ref["name"]) is None:
            problems.append(f"HPA/{hpa['metadata']['name']} targets missing {ref}")
    for pdb in of_kind(objs, "PodDisruptionBudget"):
        sel = pdb["spec"]["selector"].get("matchLabels", {})
        if not any(
            selects(sel, d["spec"]["template"]["metadata"].get("labels", {}))
            for d in of_kind(objs, "Deployment")
        ):
            problems.append(f"PDB/{pdb['metadata']['name']} selects no Deployment's pods")
    return problems


def references(pod: Obj) -> Iterator[tuple[str, str, str | None]]:
    """(kind, name, key or None) of every ConfigMap and Secret the pod uses."""
    for c in containers(pod):
        for source in c.get("envFrom", []):
            if "configMapRef" in source:
                yield "ConfigMap", source["configMapRef"]["name"], None
            if "secretRef" in source:
                yield "Secret", source["secretRef"]["name"], None
        for e in c.get("env", []):
            ref = e.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                yield "ConfigMap", ref["configMapKeyRef"]["name"], ref["configMapKeyRef"]["key"]
            if "secretKeyRef" in ref:
                yield "Secret", ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]
    for v in pod.get("volumes", []):
        if "configMap" in v:
            yield "ConfigMap", v["configMap"]["name"], None
        if "secret" in v:
            yield "Secret", v["secret"]["secretName"], None
        for s in v.get("projected", {}).get("sources", []):
            if "configMap" in s:
                yield "ConfigMap", s["configMap"]["name"], None
            if "secret" in s:
                yield "Secret", s["secret"]["name"], None


def unresolved_references(objs: list[Obj]) -> list[str]:
    documented = user_secrets()
    problems = []
    for where, pod in pod_specs(objs):
        for kind, name, key in references(pod):
            obj = named(objs, kind, name)
            if obj is not None:
                data = {**obj.get("data", {}), **obj.get("stringData", {})}
                if key is not None and key not in data:
                    problems.append(f"{where}: {kind}/{name} has no key {key!r}")
            elif kind == "Secret" and name in documented:
                if key is not None and key not in documented[name]:
                    problems.append(f"{where}: key {key!r} of Secret/{name} is not documented")
            else:
                problems.append(f"{where}: {kind}/{name} is neither rendered nor user-created")
    return problems


def image_name(image: str) -> str:
    """The image without its tag or digest (a registry port is not a tag)."""
    image = image.split("@", 1)[0]
    head, _, last = image.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def api_clients(objs: list[Obj]) -> set[str]:
    """The service accounts that a RoleBinding grants something: the pods that talk to the
    Kubernetes API (the Prefect worker, which starts the flow runs' Jobs)."""
    return {
        s["name"]
        for b in of_kind(objs, "RoleBinding")
        for s in b.get("subjects", [])
        if s.get("kind") == "ServiceAccount"
    }


def security_violations(objs: list[Obj]) -> list[str]:
    """Every pod: non-root as its image's own user, read-only root, no privilege, all capabilities
    dropped, seccomp RuntimeDefault, and no service-account token unless a Role needs one."""
    clients = api_clients(objs)
    problems = []
    for where, pod in pod_specs(objs):
        psc = pod.get("securityContext", {})
        wants_token = pod.get("serviceAccountName") in clients
        if pod.get("automountServiceAccountToken") is not wants_token:
            problems.append(f"{where}: automountServiceAccountToken is not {wants_token}")
        if pod.get("enableServiceLinks") is not False:
            problems.append(f"{where}: enableServiceLinks is not false")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: pod seccompProfile is not RuntimeDefault")
        for c in containers(pod):
            csc = c.get("securityContext", {})
            name = f"{where} {c['name']}"
            if not csc.get("runAsNonRoot", psc.get("runAsNonRoot")):
                problems.append(f"{name}: runAsNonRoot is not true")
            uid = csc.get("runAsUser", psc.get("runAsUser"))
            expected = IMAGE_UIDS.get(image_name(c["image"]))
            if expected is None or uid != expected:
                problems.append(f"{name}: runAsUser {uid} is not the image's user {expected}")
            if csc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{name}: readOnlyRootFilesystem is not true")
            if csc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}: allowPrivilegeEscalation is not false")
            if csc.get("privileged"):
                problems.append(f"{name}: privileged")
            if csc.get("capabilities", {}).get("drop") != ["ALL"] or csc.get(
                "capabilities", {}
            ).get("add"):
                problems.append(f"{name}: capabilities are not drop [ALL] with nothing added")
            seccomp = csc.get("seccompProfile", psc.get("seccompProfile", {}))
            if seccomp.get("type") != "RuntimeDefault":
                problems.append(f"{name}: seccompProfile is not RuntimeDefault")
    return problems


def writable_paths_not_on_emptydirs(objs: list[Obj]) -> list[str]:
    """Every path setting of the API lies on an emptyDir mount, and so do HOME and /tmp."""
    deployment, api = the_api(objs)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"].get("volumes", [])}
    mounts = [
        m["mountPath"]
        for m in api.get("volumeMounts", [])
        if "emptyDir" in volumes.get(m["name"], {}) and not m.get("readOnly")
    ]
    env = effective_env(objs, api)
    paths = {"/tmp": "tempfile", "/var/lib/fraud": "HOME (the image's)"}
    problems = []
    for name in ("FRAUD_MODEL_CACHE_DIR", "FRAUD_PREDICTION_LOG"):
        value = env.get(name)
        if value is None:
            problems.append(f"{name} is not set")
        elif value[0] == "value" and "://" not in value[1]:
            paths[value[1]] = name
    return problems + [
        f"{setting}: {path} is not on a writable emptyDir mount"
        for path, setting in paths.items()
        if not any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)
    ]


def secrets_with_data(objs: list[Obj]) -> list[str]:
    return [
        f"Secret/{o['metadata'].get('name')} carries data"
        for o in objs
        if isinstance(o, dict)
        and o.get("kind") == "Secret"
        and (o.get("data") or o.get("stringData"))
    ]


# --- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_readiness_liveness_and_the_api_a_startup_probe(overlay):
    assert missing_probes(render(overlay)) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_requests_and_limits_cpu_and_memory(overlay):
    assert missing_resources(render(overlay)) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_is_pinned_by_a_tag_that_is_not_latest(overlay):
    assert unpinned_images(render(overlay)) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_deployment_selector_matches_its_pod_template_labels(overlay):
    assert selector_mismatches(render(overlay)) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_target_port_is_a_container_port_of_the_pods_it_selects(overlay):
    assert service_port_mismatches(render(overlay)) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_hpa_and_pdb_targets_an_existing_deployment(overlay):
    objs = render(overlay)
    assert of_kind(objs, "HorizontalPodAutoscaler") and of_kind(objs, "PodDisruptionBudget")
    assert dangling_scalers_and_budgets(objs) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_configmap_and_secret_referenced_exists_or_is_user_created(overlay):
    assert unresolved_references(render(overlay)) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_and_container_runs_non_root_read_only_without_privileges(overlay):
    assert security_violations(render(overlay)) == []


def test_the_pods_user_is_the_images_user():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"^USER {APP_UID}(:{APP_UID})?$", dockerfile, re.M)
    assert f"useradd --uid {APP_UID}" in dockerfile


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_path_the_api_writes_is_on_an_emptydir(overlay):
    assert writable_paths_not_on_emptydirs(render(overlay)) == []


def test_no_secret_object_in_the_repository_or_the_renders_carries_data():
    # k8s/ (new files too, before they are committed) and every YAML file git tracks.
    tracked = subprocess.run(
        ["git", "ls-files", "*.yaml", "*.yml"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    files = {*K8S.rglob("*.yaml"), *K8S.rglob("*.yml"), *(ROOT / f for f in tracked)}
    in_files = [o for p in files if p.exists() for o in yaml.safe_load_all(p.read_text()) if o]
    rendered = [o for overlay in OVERLAYS for o in render(overlay)]
    assert any(isinstance(o, dict) and o.get("kind") == "Kustomization" for o in in_files)
    assert secrets_with_data(in_files + rendered) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlay_passes_strict_schema_validation(overlay, tmp_path):
    out = tmp_path / f"{overlay}.yaml"
    out.write_text(rendered_text(overlay))
    proc = validate(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).with_name("kubernetes-validate")
    return subprocess.run(
        [str(cli), "--strict", "--quiet", "-k", KUBERNETES_VERSION, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_prod_runs_two_replicas_on_redis_and_postgresql_from_the_users_secret():
    objs = render("prod")
    deployment, api = the_api(objs)
    hpa = named(objs, "HorizontalPodAutoscaler", "fraud-api")
    pdb = named(objs, "PodDisruptionBudget", "fraud-api")
    assert hpa is not None and pdb is not None
    assert deployment["spec"]["replicas"] >= 2
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert pdb["spec"] == {**pdb["spec"], "minAvailable": 1} and "maxUnavailable" not in pdb["spec"]
    env = effective_env(objs, api)
    assert env["FRAUD_FEATURE_STORE"] == ("secret", "fraud-api-secrets", "feature-store-url")
    assert env["FRAUD_PREDICTION_LOG"] == ("secret", "fraud-api-secrets", "prediction-log-url")
    # No second source for them: not in the ConfigMap either.
    data = [cm.get("data", {}) for cm in of_kind(objs, "ConfigMap")]
    assert not any({"FRAUD_FEATURE_STORE", "FRAUD_PREDICTION_LOG"} & set(d) for d in data)
    admin = next(e for e in api["env"] if e["name"] == "FRAUD_ADMIN_TOKEN")
    assert admin["valueFrom"]["secretKeyRef"].get("optional") is False


def test_dev_runs_one_replica_on_the_shared_backends_and_never_blocks_a_drain():
    objs = render("dev")
    deployment, api = the_api(objs)
    hpa = named(objs, "HorizontalPodAutoscaler", "fraud-api")
    pdb = named(objs, "PodDisruptionBudget", "fraud-api")
    assert hpa is not None and pdb is not None
    assert deployment["spec"]["replicas"] == 1
    assert hpa["spec"]["maxReplicas"] == 1
    assert pdb["spec"].get("maxUnavailable") == 1 and "minAvailable" not in pdb["spec"]
    env = effective_env(objs, api)
    # prod's code path: the monitoring jobs read the log from PostgreSQL, the state is in Redis.
    assert env["FRAUD_FEATURE_STORE"] == ("secret", "fraud-api-secrets", "feature-store-url")
    assert env["FRAUD_PREDICTION_LOG"] == ("secret", "fraud-api-secrets", "prediction-log-url")
    assert env["FRAUD_WORKERS"] == ("value", "1")
    # ... and those servers are in the namespace.
    assert {"postgres", "redis"} <= {s["metadata"]["name"] for s in of_kind(objs, "StatefulSet")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_settings_match_the_image_and_its_in_cluster_registry(overlay):
    objs = render(overlay)
    deployment, api = the_api(objs)
    env = effective_env(objs, api)
    assert api["image"].split(":")[0] == "fraud-api"
    assert env["FRAUD_HOST"] == ("value", "0.0.0.0")
    assert [p["containerPort"] for p in api["ports"] if p["name"] == "http"] == [
        int(env["FRAUD_PORT"][1])
    ]
    # The image has MLflow's client only: the registry must be a server.
    assert re.fullmatch(r"http://mlflow:\d+", env["MLFLOW_TRACKING_URI"][1])
    assert all(k.startswith(("FRAUD_", "MLFLOW_", "DO_NOT_TRACK")) for k in env)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == env["FRAUD_PORT"][1]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_rollout_drains_before_the_server_stops(overlay):
    deployment, api = the_api(render(overlay))
    pod = deployment["spec"]["template"]["spec"]
    sleep = api["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep" and int(sleep[1]) >= 5
    assert pod["terminationGracePeriodSeconds"] >= int(sleep[1]) + 20
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["enableServiceLinks"] is False
    keys = {t["topologyKey"] for t in pod["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_allow_only_the_apis_flows(overlay):
    objs = render(overlay)
    policies = of_kind(objs, "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert len(deny) == 1 and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny[0]["spec"] and "egress" not in deny[0]["spec"]
    _, api = the_api(objs)
    deployment, _ = the_api(objs)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    api_policies = [
        p
        for p in policies
        if p["spec"]["podSelector"]
        and selects(p["spec"]["podSelector"].get("matchLabels", {}), pod_labels)
    ]
    ingress = [r for p in api_policies for r in p["spec"].get("ingress", [])]
    # One way in: the API's own named port.
    assert [port["port"] for r in ingress for port in r["ports"]] == ["http"]
    assert "http" in {p["name"] for p in api["ports"]}
    egress_ports = {
        (port["protocol"], port["port"])
        for p in api_policies
        for r in p["spec"].get("egress", [])
        for port in r["ports"]
    }
    assert egress_ports == {("UDP", 53), ("TCP", 53), ("TCP", 5000), ("TCP", 5432), ("TCP", 6379)}
    # Every pod of the platform is selected by some allow policy (else default deny isolates it).
    for where, _ in pod_specs(objs):
        workload = next(o for o in objs if f"{o['kind']}/{o['metadata']['name']}" == where)
        labels = workload["spec"]["template"]["metadata"].get("labels", {})
        assert any(
            p["spec"]["podSelector"]
            and selects(p["spec"]["podSelector"].get("matchLabels", {}), labels)
            for p in policies
        ), f"{where}: no NetworkPolicy allows it anything"
    ns = of_kind(objs, "Namespace")
    assert [n["metadata"]["name"] for n in ns] == [NAMESPACES[overlay]]
    assert ns[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_user_created_secrets_are_shown_in_the_deploy_docs():
    docs = (ROOT / "docs" / "deploy.md").read_text()
    for name, keys in user_secrets().items():
        assert f"create secret generic {name}" in docs
        for key in keys:
            assert f"--from-literal={key}=" in docs, key


def test_k8s_yaml_passes_yamllint():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "yamllint",
            "--strict",
            "-c",
            str(ROOT / ".yamllint.yaml"),
            str(K8S),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the checks can fail: each one on a render broken on purpose -------------------------------


def broken(change: str) -> list[Obj]:
    """The prod render with one thing broken."""
    objs = copy.deepcopy(render("prod"))
    deployment, api = the_api(objs)
    pod = deployment["spec"]["template"]["spec"]
    if change == "no readiness probe":
        del api["readinessProbe"]
    elif change == "no memory limit":
        del api["resources"]["limits"]["memory"]
    elif change == "latest":
        api["image"] = "fraud-api:latest"
    elif change == "no tag":
        api["image"] = "ghcr.io/example/fraud-api"
    elif change == "selector":
        deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = "other"
    elif change == "target port":
        named(objs, "Service", "fraud-api")["spec"]["ports"][0]["targetPort"] = "https"  # type: ignore[index]
    elif change == "hpa target":
        hpa = named(objs, "HorizontalPodAutoscaler", "fraud-api")
        hpa["spec"]["scaleTargetRef"]["name"] = "fraud-ap"  # type: ignore[index]
    elif change == "unknown secret key":
        api["env"][1]["valueFrom"]["secretKeyRef"]["key"] = "database-url"
    elif change == "missing configmap":
        objs = [o for o in objs if o["kind"] != "ConfigMap"]
    elif change == "writable root":
        api["securityContext"]["readOnlyRootFilesystem"] = False
    elif change == "root":
        api["securityContext"]["runAsUser"] = 0
    elif change == "no tmp":
        api["volumeMounts"] = [m for m in api["volumeMounts"] if m["mountPath"] != "/tmp"]
    elif change == "secret with data":
        objs.append({"kind": "Secret", "metadata": {"name": "x"}, "data": {"a": "Yg=="}})
    elif change == "token":
        del pod["automountServiceAccountToken"]
    return objs


@pytest.mark.parametrize(
    ("change", "check"),
    [
        ("no readiness probe", missing_probes),
        ("no memory limit", missing_resources),
        ("latest", unpinned_images),
        ("no tag", unpinned_images),
        ("selector", selector_mismatches),
        ("target port", service_port_mismatches),
        ("hpa target", dangling_scalers_and_budgets),
        ("unknown secret key", unresolved_references),
        ("missing configmap", unresolved_references),
        ("writable root", security_violations),
        ("root", security_violations),
        ("token", security_violations),
        ("no tmp", writable_paths_not_on_emptydirs),
        ("secret with data", secrets_with_data),
    ],
)
def test_each_check_reports_a_render_broken_on_purpose(change, check):
    assert check(render("prod")) == []
    assert check(broken(change)) != []


def test_strict_validation_rejects_a_misspelt_field(tmp_path):
    out = tmp_path / "typo.yaml"
    out.write_text(rendered_text("dev").replace("readinessProbe:", "readinesProbe:"))
    proc = validate(out)
    assert proc.returncode != 0
    assert "readinesProbe" in proc.stdout + proc.stderr
