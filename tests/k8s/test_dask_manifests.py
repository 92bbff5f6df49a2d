"""k8s/dask, the Dask cluster component, as a cluster would get it: each overlay that runs the
flows (dev, prod) rendered with the component by `kubectl kustomize`, validated strictly
(`kubernetes-validate`, offline), its pods held to the platform's generic checks
(tests/k8s/test_manifests.py), and the facts that make the cluster usable: the scheduler address
the flow runs get is the Service's, the worker's `--memory-limit` is its container's memory
limit, the network policies let the flow runs and the workers reach what they must, and the
component changes nothing else of the overlay. Each check returns its problems, and the tests at
the end break a render on purpose to show that each one can fail."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.k8s.test_manifests import (
    K8S,
    Obj,
    containers,
    effective_env,
    kubectl,
    missing_probes,
    missing_resources,
    named,
    of_kind,
    pod_specs,
    render,
    security_violations,
    selector_mismatches,
    selects,
    service_port_mismatches,
    unpinned_images,
    unresolved_references,
    validate,
)

# Renders through a subprocess (kubectl): the integration tier, as test_manifests.
pytestmark = pytest.mark.integration

COMPONENT = K8S / "dask"
#: The overlays that run the flows (the platform's Prefect): those the component is for.
OVERLAYS = ["dev", "prod"]
FLOW_RUN_LABELS = {"app.kubernetes.io/name": "prefect", "app.kubernetes.io/component": "flow-run"}
MIB = 1024**2


def rendered_with_dask_text(overlay: str, workdir: Path) -> str:
    """`overlay` with the component in its own `components:` list, as a user adds it (so that
    the overlay's `images:` and patches apply to the component's objects too): rendered from a
    copy of k8s/ in `workdir`."""
    copy_ = workdir / "k8s"
    shutil.copytree(K8S, copy_)
    path = copy_ / "overlays" / overlay / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text())
    kustomization.setdefault("components", []).append("../../dask")
    path.write_text(yaml.safe_dump(kustomization, sort_keys=False))
    proc = subprocess.run(
        [kubectl(), "kustomize", str(path.parent)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"kubectl kustomize {overlay} + k8s/dask:\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {o: rendered_with_dask_text(o, tmp_path_factory.mktemp(f"dask-{o}")) for o in OVERLAYS}


def objects(text: str) -> list[Obj]:
    return [o for o in yaml.safe_load_all(text) if o]


def deployment_container(objs: list[Obj], name: str) -> Obj:
    d = named(objs, "Deployment", name)
    assert d is not None, f"no Deployment {name}"
    return d["spec"]["template"]["spec"]["containers"][0]


def option(args: list[str], flag: str) -> str | None:
    """The value of `--flag=value` in a command line."""
    return next((a.split("=", 1)[1] for a in args if a.startswith(f"{flag}=")), None)


def quantity_bytes(q: str) -> int:
    """A Kubernetes memory quantity (binary or decimal suffix) in bytes."""
    m = re.fullmatch(r"(\d+)([KMGT]i?)?", q)
    assert m, f"unsupported quantity {q!r}"
    powers = {"K": 1, "M": 2, "G": 3, "T": 4}
    unit = m.group(2) or ""
    base = 1024 if unit.endswith("i") else 1000
    return int(m.group(1)) * (base ** powers[unit[0]] if unit else 1)


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in a command argument."""
    return re.sub(
        r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value
    )


# --- the checks: each returns its problems ----------------------------------------------------


def scheduler_address_problems(objs: list[Obj]) -> list[str]:
    """The address in the ConfigMap dask-cluster is the scheduler Service's name and the port
    that reaches the scheduler's --port; the registration Job (which gives it to the work pool)
    and the workers get that same address."""
    cm = named(objs, "ConfigMap", "dask-cluster")
    if cm is None:
        return ["no ConfigMap dask-cluster"]
    address = cm.get("data", {}).get("DASK_SCHEDULER_ADDRESS", "")
    m = re.fullmatch(r"tcp://([a-z0-9-]+):(\d+)", address)
    if not m:
        return [f"DASK_SCHEDULER_ADDRESS {address!r} is not tcp://<service>:<port>"]
    host, port = m.group(1), int(m.group(2))
    problems = []
    svc = named(objs, "Service", host)
    scheduler = named(objs, "Deployment", "dask-scheduler")
    if svc is None or scheduler is None:
        return [f"no Service {host} or no Deployment dask-scheduler"]
    template = scheduler["spec"]["template"]
    if not selects(svc["spec"].get("selector", {}), template["metadata"].get("labels", {})):
        problems.append(f"Service/{host} does not select the scheduler's pods")
    container = template["spec"]["containers"][0]
    by_name = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    sport = next((p for p in svc["spec"]["ports"] if p["port"] == port), None)
    if sport is None:
        problems.append(f"Service/{host} has no port {port}")
    else:
        target = sport.get("targetPort", port)
        target = by_name.get(target, target)
        listening = option(container["command"], "--port")
        if listening is None or int(listening) != target:
            problems.append(
                f"Service port {port} -> {target}, the scheduler listens on {listening}"
            )
    for where, c in (
        ("Job/prefect-register", registration_container(objs)),
        ("Deployment/dask-worker", deployment_container(objs, "dask-worker")),
    ):
        got = effective_env(objs, c).get("DASK_SCHEDULER_ADDRESS") if c else None
        if got != ("value", address):
            problems.append(f"{where}: DASK_SCHEDULER_ADDRESS is {got}, not {address!r}")
    return problems


def registration_container(objs: list[Obj]) -> Obj | None:
    job = named(objs, "Job", "prefect-register")
    if job is None:
        return None
    return next(c for c in job["spec"]["template"]["spec"]["containers"] if c["name"] == "register")


def worker_memory_problems(objs: list[Obj]) -> list[str]:
    """The worker's --memory-limit, as Kubernetes expands it, is its container's memory limit
    (as Dask parses it), and the request equals the limit (no overcommitted worker memory)."""
    from dask.utils import parse_bytes

    c = deployment_container(objs, "dask-worker")
    limits = c.get("resources", {}).get("limits", {})
    requests = c.get("resources", {}).get("requests", {})
    if "memory" not in limits:
        return ["dask-worker: no memory limit"]
    limit = quantity_bytes(str(limits["memory"]))
    env: dict[str, str] = {}
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("resourceFieldRef")
        if "value" in e:
            env[e["name"]] = e["value"]
        elif (
            ref
            and ref.get("resource") == "limits.memory"
            and ref.get("containerName")
            in (
                None,
                c["name"],
            )
        ):
            env[e["name"]] = str(limit // quantity_bytes(str(ref.get("divisor", "1"))))
    arg = option(c["command"], "--memory-limit")
    if arg is None:
        return ["dask-worker: no --memory-limit"]
    value = expand(arg, env)
    problems = []
    try:
        parsed = parse_bytes(value)
    except ValueError:
        return [f"dask-worker: --memory-limit={value} is not a size Dask reads"]
    if parsed != limit:
        problems.append(f"dask-worker: --memory-limit={value} ({parsed} B) != limit {limit} B")
    if quantity_bytes(str(requests.get("memory", "0"))) != limit:
        problems.append("dask-worker: memory request != limit")
    return problems


def network_problems(objs: list[Obj]) -> list[str]:
    """Flow runs may reach the scheduler and the workers, the workers the scheduler and each
    other (ingress of the receiving pods and egress of the sending ones both allow it)."""
    policies = of_kind(objs, "NetworkPolicy")

    def labels_of(name: str) -> dict[str, str]:
        d = named(objs, "Deployment", name)
        return d["spec"]["template"]["metadata"]["labels"] if d else {}

    def ports_of(name: str) -> dict[str, int]:
        c = deployment_container(objs, name)
        return {p["name"]: p["containerPort"] for p in c.get("ports", [])}

    def allowed(direction: str, src: dict[str, str], dst: dict[str, str], port: int) -> bool:
        """Some policy selecting the pod at this end allows `port` to/from the other end."""
        here, there = (src, dst) if direction == "egress" else (dst, src)
        peer_key = "to" if direction == "egress" else "from"
        named_ports = ports_of("dask-scheduler") | ports_of("dask-worker")
        for p in policies:
            sel = p["spec"]["podSelector"].get("matchLabels", {})
            if not sel or not selects(sel, here):
                continue
            for rule in p["spec"].get(direction, []):
                peers = rule.get(peer_key)
                if peers is not None and not any(
                    "podSelector" in q
                    and "namespaceSelector" not in q
                    and selects(q["podSelector"].get("matchLabels", {}), there)
                    for q in peers
                ):
                    continue
                for rp in rule.get("ports", []):
                    if named_ports.get(rp["port"], rp["port"]) == port:
                        return True
        return False

    sched, worker = labels_of("dask-scheduler"), labels_of("dask-worker")
    sp, wp = ports_of("dask-scheduler"), ports_of("dask-worker")
    paths = [
        ("flow run", FLOW_RUN_LABELS, "scheduler", sched, sp.get("comm", -1)),
        ("flow run", FLOW_RUN_LABELS, "worker", worker, wp.get("worker", -1)),
        ("worker", worker, "scheduler", sched, sp.get("comm", -1)),
        ("worker", worker, "worker", worker, wp.get("worker", -1)),
        ("worker", worker, "nanny", worker, wp.get("nanny", -1)),
    ]
    return [
        f"{a} -> {b}:{port}: {direction} not allowed"
        for a, src, b, dst, port in paths
        for direction in ("egress", "ingress")
        if not allowed(direction, src, dst, port)
    ]


def flow_run_pod(objs: list[Obj]) -> Obj | None:
    """The flow runs' pod spec: the work pool's base job template (a ConfigMap's JSON)."""
    for cm in of_kind(objs, "ConfigMap"):
        text = cm.get("data", {}).get("base-job-template.json")
        if text:
            manifest = json.loads(text)["job_configuration"]["job_manifest"]
            return manifest["spec"]["template"]["spec"]
    return None


def shared_volume_problems(objs: list[Obj]) -> list[str]:
    """The workers read the stages' files by the flow runs' absolute paths: they mount the flow
    runs' volume at the same path, and share its node (the ReadWriteOnce volume's affinity)."""
    flow = flow_run_pod(objs)
    worker = named(objs, "Deployment", "dask-worker")
    if flow is None or worker is None:
        return ["no work pool template or no dask-worker"]

    def mounts(pod: Obj) -> dict[str, str]:
        """claimName -> mountPath of the pod's first container."""
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod.get("volumes", [])
            if "persistentVolumeClaim" in v
        }
        return {
            claims[m["name"]]: m["mountPath"]
            for m in pod["containers"][0].get("volumeMounts", [])
            if m["name"] in claims
        }

    pod = worker["spec"]["template"]["spec"]
    theirs, mine = mounts(flow), mounts(pod)
    problems = [
        f"dask-worker mounts {claim} at {mine.get(claim)}, the flow runs at {path}"
        for claim, path in theirs.items()
        if mine.get(claim) != path
    ]
    labels = worker["spec"]["template"]["metadata"]["labels"]
    if labels.get("fraud-mlops/flows-volume") != "true":
        problems.append("dask-worker lacks the label fraud-mlops/flows-volume")
    if pod.get("affinity") != flow.get("affinity"):
        problems.append("dask-worker's affinity is not the flow runs' (the volume's node)")
    return problems


def foreign_changes(with_dask: list[Obj], without: list[Obj]) -> list[str]:
    """Objects of the overlay that the component changed, but the registration Job's env."""

    def key(o: Obj) -> tuple[str, str]:
        return o["kind"], o["metadata"]["name"]

    mine = {key(o): o for o in with_dask}
    problems = []
    for o in without:
        got = copy.deepcopy(mine.get(key(o)))
        if got is None:
            problems.append(f"{key(o)} is gone")
            continue
        if key(o) == ("Job", "prefect-register"):
            c = got["spec"]["template"]["spec"]["containers"][0]
            c["envFrom"] = [
                s for s in c["envFrom"] if s != {"configMapRef": {"name": "dask-cluster"}}
            ]
        if got != o:
            problems.append(f"{key(o)} differs with the component")
    return problems


# --- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_with_the_dask_component_passes_strict_schema_validation(
    overlay, renders, tmp_path
):
    out = tmp_path / f"{overlay}-dask.yaml"
    out.write_text(renders[overlay])
    proc = validate(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    objs = objects(renders[overlay])
    assert named(objs, "Deployment", "dask-scheduler") and named(objs, "Deployment", "dask-worker")


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize(
    "check",
    [
        missing_probes,
        missing_resources,
        unpinned_images,
        selector_mismatches,
        service_port_mismatches,
        unresolved_references,
        security_violations,
    ],
)
def test_the_dask_pods_pass_the_platforms_generic_pod_checks(overlay, check, renders):
    assert check(objects(renders[overlay])) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_flow_runs_get_the_scheduler_services_address(overlay, renders):
    assert scheduler_address_problems(objects(renders[overlay])) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_memory_limit_is_the_containers_limit(overlay, renders):
    assert worker_memory_problems(objects(renders[overlay])) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_let_flow_runs_and_workers_reach_the_cluster(overlay, renders):
    objs = objects(renders[overlay])
    assert network_problems(objs) == []
    for where, _ in pod_specs(objs):
        if "dask" in where:
            workload = next(o for o in objs if f"{o['kind']}/{o['metadata']['name']}" == where)
            labels = workload["spec"]["template"]["metadata"]["labels"]
            assert any(
                selects(p["spec"]["podSelector"].get("matchLabels", {}), labels)
                for p in of_kind(objs, "NetworkPolicy")
                if p["spec"]["podSelector"]
            ), where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_read_the_stages_files_where_the_flow_runs_write_them(overlay, renders):
    assert shared_volume_problems(objects(renders[overlay])) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_component_changes_nothing_else_of_the_overlay(overlay, renders):
    assert foreign_changes(objects(renders[overlay]), render(overlay)) == []


def test_the_dask_images_follow_the_overlays_platform_image(renders):
    objs = objects(renders["prod"])
    images = {
        c["image"] for where, pod in pod_specs(objs) if "dask" in where for c in containers(pod)
    }
    flow_image = {
        e["value"]
        for e in registration_container(objs)["env"]  # type: ignore[index]
        if e["name"] == "FLOW_IMAGE"
    }
    assert images == flow_image, (images, flow_image)


# --- the checks can fail -----------------------------------------------------------------------


def _break(objs: list[Obj], change: str) -> list[Obj]:
    objs = copy.deepcopy(objs)
    worker = deployment_container(objs, "dask-worker")
    if change == "address port":
        cm = named(objs, "ConfigMap", "dask-cluster")
        cm["data"]["DASK_SCHEDULER_ADDRESS"] = "tcp://dask-scheduler:8787"  # type: ignore[index]
    elif change == "address host":
        cm = named(objs, "ConfigMap", "dask-cluster")
        cm["data"]["DASK_SCHEDULER_ADDRESS"] = "tcp://scheduler:8786"  # type: ignore[index]
    elif change == "job without address":
        c = registration_container(objs)
        c["envFrom"] = c["envFrom"][:-1]  # type: ignore[index]
    elif change == "fixed memory limit":
        worker["command"] = [
            "--memory-limit=4GiB" if a.startswith("--memory-limit") else a
            for a in worker["command"]
        ]
    elif change == "bigger container":
        worker["resources"]["limits"]["memory"] = "16Gi"
        for e in worker["env"]:
            if e["name"] == "MEMORY_LIMIT_MIB":
                e["valueFrom"]["resourceFieldRef"]["containerName"] = "other"
    elif change == "volume path":
        worker["volumeMounts"][-1]["mountPath"] = "/data"
    elif change == "no affinity":
        del named(objs, "Deployment", "dask-worker")["spec"]["template"]["spec"]["affinity"]  # type: ignore[index]
    elif change == "no worker ingress":
        objs = [o for o in objs if o["metadata"]["name"] != "dask-worker-ingress"]
    elif change == "relabel":
        named(objs, "Deployment", "mlflow")["metadata"]["labels"]["app.kubernetes.io/name"] = "dask"  # type: ignore[index]
    return objs


@pytest.mark.parametrize(
    ("change", "check"),
    [
        ("address port", scheduler_address_problems),
        ("address host", scheduler_address_problems),
        ("job without address", scheduler_address_problems),
        ("fixed memory limit", worker_memory_problems),
        ("bigger container", worker_memory_problems),
        ("volume path", shared_volume_problems),
        ("no affinity", shared_volume_problems),
        ("no worker ingress", network_problems),
        ("relabel", None),
    ],
)
def test_each_check_reports_a_render_broken_on_purpose(
    change: str, check: Callable[[list[Obj]], list[str]] | None, renders
):
    objs = objects(renders["prod"])
    if check is None:
        assert foreign_changes(objs, render("prod")) == []
        assert foreign_changes(_break(objs, change), render("prod")) != []
        return
    assert check(objs) == []
    assert check(_break(objs, change)) != []


def test_strict_validation_rejects_a_misspelt_field_in_the_component(renders, tmp_path):
    out = tmp_path / "typo.yaml"
    out.write_text(renders["prod"].replace("resourceFieldRef:", "resourceFieldReff:"))
    proc = validate(out)
    assert proc.returncode != 0
    assert "resourceFieldReff" in proc.stdout + proc.stderr


def test_the_registration_gives_every_flow_run_the_dask_scheduler_address(tmp_path):
    """register.sh's template step (its first Python heredoc, run as the Job runs it) puts the
    Job's DASK_SCHEDULER_ADDRESS into the work pool's env default, which the job configuration
    hands to every flow run; without the variable the env default stays as it was."""
    script = (K8S / "platform" / "prefect" / "register.sh").read_text()
    code = re.search(r"python - <<'PY'\n(.*?)\nPY\n", script, re.S)
    assert code, "register.sh has no Python heredoc"
    source = K8S / "platform" / "prefect" / "base-job-template.json"
    out = tmp_path / "template.json"
    step = (
        code.group(1)
        .replace("/etc/prefect-work-pool/base-job-template.json", str(source))
        .replace("/tmp/base-job-template.json", str(out))
    )
    base = {"POD_NAMESPACE": "fraud-dev", "FLOW_IMAGE": "fraud-platform:test", "PATH": "/usr/bin"}
    address = "tcp://dask-scheduler:8786"
    for extra, expected in [({"DASK_SCHEDULER_ADDRESS": address}, address), ({}, None)]:
        subprocess.run(["python3", "-c", step], env={**base, **extra}, check=True, timeout=60)
        template = json.loads(out.read_text())
        assert template["job_configuration"]["env"] == "{{ env }}"
        env_default = template["variables"]["properties"]["env"].get("default", {})
        assert env_default.get("DASK_SCHEDULER_ADDRESS") == expected
