"""k8s/platform/prefect/ and k8s/platform/evidently/ as a cluster would get them: each directory
rendered standalone and inside a kustomization that sets a namespace, validated with
`kubernetes-validate --strict`, and checked object by object with the generic checks of
test_manifests.py, plus what is particular to them: the worker's Role, the work pool's base job
template (rendered into a real flow-run Job by prefect-kubernetes), and the Evidently UI behind
its proxy. Each particular check is a function returning its problems, proven able to fail on an
object broken on purpose.

The job-template test needs prefect-kubernetes (the project's `platform` extra, which the
platform image installs): `pip install -e '.[platform]'`, or point PREFECT_KUBERNETES_PYTHON at
an interpreter that has it and Prefect 3.8.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import textwrap
from functools import cache
from typing import Any

import pytest
import yaml

from tests.k8s.test_manifests import (
    K8S,
    Obj,
    containers,
    effective_env,
    kubectl,
    missing_resources,
    named,
    of_kind,
    pod_specs,
    references,
    secrets_with_data,
    security_violations,
    selector_mismatches,
    service_port_mismatches,
    unpinned_images,
    unresolved_references,
    user_secrets,
    validate,
)

pytestmark = pytest.mark.integration

DIRS = ["prefect", "evidently"]
PREFECT = K8S / "platform" / "prefect"
TEMPLATE = PREFECT / "base-job-template.json"


@cache
def rendered_text(directory: str) -> str:
    target = K8S / "platform" / directory
    proc = subprocess.run(
        [kubectl(), "kustomize", str(target)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"kubectl kustomize {target}:\n{proc.stderr}"
    return proc.stdout


def render(directory: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all(rendered_text(directory)) if d]


def both() -> list[Obj]:
    return render("prefect") + render("evidently")


def template() -> dict[str, Any]:
    return json.loads(TEMPLATE.read_text())  # type: ignore[no-any-return]


# --- checks particular to these directories ----------------------------------------------------


def missing_probes(objs: list[Obj]) -> list[str]:
    """Readiness and liveness on every long-running container (Jobs run to completion: none)."""
    return [
        f"{where} {c['name']}: no {p}"
        for where, pod in pod_specs(objs)
        if not where.startswith("Job/")
        for c in containers(pod, init=False)
        for p in ("readinessProbe", "livenessProbe")
        if p not in c
    ]


def token_violations(objs: list[Obj]) -> list[str]:
    """Only the worker mounts a service-account token; every pod turns service links off."""
    problems = []
    for where, pod in pod_specs(objs):
        wants_token = where == "Deployment/prefect-worker"
        if pod.get("automountServiceAccountToken") is not wants_token:
            problems.append(f"{where}: automountServiceAccountToken is not {wants_token}")
        if pod.get("enableServiceLinks") is not False:
            problems.append(f"{where}: enableServiceLinks is not false")
    return problems


#: What prefect-kubernetes 0.8's worker does in its namespace, and nothing else.
WORKER_RULES = {
    ("batch", "jobs"): {"create", "get", "list", "watch", "delete"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "pods/log"): {"get"},
    ("", "events"): {"create"},
}


def role_problems(objs: list[Obj]) -> list[str]:
    role = named(objs, "Role", "prefect-worker")
    binding = named(objs, "RoleBinding", "prefect-worker")
    if role is None or binding is None:
        return ["no Role/RoleBinding prefect-worker"]
    problems = []
    if of_kind(objs, "ClusterRole") or of_kind(objs, "ClusterRoleBinding"):
        problems.append("cluster-wide RBAC")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            if "*" in rule.get(field, []):
                problems.append(f"wildcard in {field}: {rule}")
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    if granted != WORKER_RULES:
        problems.append(f"grants {granted}, expected {WORKER_RULES}")
    subjects = [(s["kind"], s["name"]) for s in binding["subjects"]]
    if subjects != [("ServiceAccount", "prefect-worker")] or binding["roleRef"]["kind"] != "Role":
        problems.append(f"binding: {binding['roleRef']} to {subjects}")
    worker = named(objs, "Deployment", "prefect-worker")
    if worker is None or worker["spec"]["template"]["spec"].get("serviceAccountName") != (
        "prefect-worker"
    ):
        problems.append("the worker does not run as ServiceAccount prefect-worker")
    return problems


def job_pod(t: dict[str, Any]) -> Obj:
    return t["job_configuration"]["job_manifest"]["spec"]["template"]  # type: ignore[no-any-return]


def template_problems(t: dict[str, Any], objs: list[Obj]) -> list[str]:
    """The flow-run pods: secure, sized, on the shared volume, with the platform's settings and
    only Secret references that the user creates."""
    problems = []
    pod = job_pod(t)
    spec = pod["spec"]
    variables = t["variables"]["properties"]
    fake: Obj = {"metadata": {"name": "flow-run"}, "spec": {"template": pod}}
    # The image is the deployment's ("{{ image }}"); the checks need the default's user.
    resolved: Obj = copy.deepcopy(fake)
    for c in resolved["spec"]["template"]["spec"]["containers"]:
        c["image"] = variables["image"]["default"]
    problems += security_violations([{"kind": "Job", **resolved}])
    problems += unresolved_references([{"kind": "Job", **fake}])
    [c] = spec["containers"]
    if c["image"] != "{{ image }}" or c.get("args") != "{{ command }}":
        problems.append("the container does not take the deployment's image and command")
    if not variables["image"]["default"].startswith("fraud-platform:"):
        problems.append(f"default image {variables['image']['default']}")
    for bound in ("request", "limit"):
        for r in ("cpu", "memory"):
            if not variables[f"{r}_{bound}"].get("default"):
                problems.append(f"no default {r}_{bound}")
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in spec["volumes"]
        if "persistentVolumeClaim" in v
    }
    pvc_names = {o["metadata"]["name"] for o in of_kind(objs, "PersistentVolumeClaim")}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    if claims.get(mounts.get(c.get("workingDir", ""), "")) not in pvc_names:
        problems.append("the working directory is not the shared volume")
    env = {e["name"]: e for e in c["env"]}
    if env.get("MLFLOW_TRACKING_URI", {}).get("value") != "http://mlflow:5000":
        problems.append("MLFLOW_TRACKING_URI is not the in-cluster server")
    for name in ("FRAUD_PREDICTION_LOG", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        if "secretKeyRef" not in env.get(name, {}).get("valueFrom", {}):
            problems.append(f"{name} is not from a Secret")
    if any("value" in e and "PASSWORD" in e["name"] for e in c["env"]):
        problems.append("a password as a plain value")
    labels = pod["metadata"]["labels"]
    for opt_in in ("mlflow-client", "postgres-client"):
        if labels.get(f"fraud-mlops/{opt_in}") != "true":
            problems.append(f"flow-run pods lack the opt-in label fraud-mlops/{opt_in}")
    if variables["service_account_name"]["default"] not in {
        o["metadata"]["name"] for o in of_kind(objs, "ServiceAccount")
    }:
        problems.append("the flow-run ServiceAccount is not rendered")
    return problems


def flow_repo_problems(objs: list[Obj]) -> list[str]:
    """The registration Job first makes the flows' repository (init-flow-repo.sh, from its
    ConfigMap) on the shared volume, where the flow runs work, at the path it then registers as
    the flows' `repo` (one ConfigMap key for both), with the S3 keys by reference and the labels
    of a pod on that volume and of an S3 client."""
    job = named(objs, "Job", "prefect-register")
    if job is None:
        return ["no Job prefect-register"]
    pod = job["spec"]["template"]
    spec = pod["spec"]
    inits = spec.get("initContainers", [])
    if [c["name"] for c in inits] != ["flow-repo"]:
        return [f"init containers {[c['name'] for c in inits]}, expected ['flow-repo']"]
    [init] = inits
    [register] = spec["containers"]
    problems = []
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in init.get("volumeMounts", [])}
    script_dir, _, script = init["command"][-1].rpartition("/")
    cm_name = volumes.get(mounts.get(script_dir, ""), {}).get("configMap", {}).get("name")
    cm = named(objs, "ConfigMap", cm_name) if cm_name else None
    if init["command"][0] != "sh" or cm is None or script not in cm.get("data", {}):
        problems.append(f"{init['command']} is not a script of a rendered ConfigMap")
    workdir = job_pod(template())["spec"]["containers"][0]["workingDir"]
    claim = volumes.get(mounts.get(workdir, ""), {}).get("persistentVolumeClaim", {})
    if claim.get("claimName") != "fraud-flows-data":
        problems.append(f"the shared volume is not mounted at the flow runs' {workdir}")
    env = effective_env(objs, init)
    repo = env.get("FRAUD_FLOW_REPO", ("",))[-1]
    if not repo.startswith(workdir + "/"):
        problems.append(f"FRAUD_FLOW_REPO {repo!r} is not on the shared volume")
    entry: Obj = next((e for e in register.get("env", []) if e["name"] == "FRAUD_FLOW_REPO"), {})
    registered = entry.get("valueFrom", {}).get("configMapKeyRef", {})
    source = next((s["configMapRef"]["name"] for s in init.get("envFrom", [])), None)
    if (registered.get("name"), registered.get("key")) != (source, "FRAUD_FLOW_REPO"):
        problems.append(
            "registration and init container read FRAUD_FLOW_REPO from different places"
        )
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        if env.get(key, ("",))[0] != "secret" or env[key][1] != "s3-credentials":
            problems.append(f"{key} is not from Secret s3-credentials")
    labels = pod["metadata"]["labels"]
    for opt_in in ("s3-client", "flows-volume"):
        if labels.get(f"fraud-mlops/{opt_in}") != "true":
            problems.append(f"the registration pod lacks the label fraud-mlops/{opt_in}")
    return problems


def proxy_problems(objs: list[Obj]) -> list[str]:
    """The Evidently UI is reachable only through its authenticating proxy."""
    problems = []
    deployment = named(objs, "Deployment", "evidently")
    svc = named(objs, "Service", "evidently")
    assert deployment is not None and svc is not None
    pod = deployment["spec"]["template"]["spec"]
    by_name = {c["name"]: c for c in pod["containers"]}
    ui, proxy = by_name["ui"], by_name["proxy"]
    if ui.get("ports"):
        problems.append("the UI container declares a port")
    command = ui["command"]
    if command[command.index("--host") + 1] != "127.0.0.1":
        problems.append("the UI listens beyond 127.0.0.1")
    proxy_ports = {p["name"] for p in proxy.get("ports", [])}
    if {p["targetPort"] for p in svc["spec"]["ports"]} != proxy_ports:
        problems.append("the Service targets something other than the proxy")
    if not any(v.get("secret", {}).get("secretName") == "evidently-auth" for v in pod["volumes"]):
        problems.append("the proxy has no htpasswd Secret")
    ingress_ports = {
        port["port"]
        for p in of_kind(objs, "NetworkPolicy")
        for r in p["spec"].get("ingress", [])
        for port in r.get("ports", [])
    }
    if ingress_ports != proxy_ports:
        problems.append(f"ingress allowed on {ingress_ports}")
    return problems


# --- render and validate --------------------------------------------------------------------


@pytest.mark.parametrize("directory", DIRS)
def test_each_directory_renders_standalone_and_passes_strict_validation(directory, tmp_path):
    out = tmp_path / f"{directory}.yaml"
    out.write_text(rendered_text(directory))
    proc = validate(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_both_directories_render_into_a_namespace_together(tmp_path):
    """As an overlay will use them: one kustomization, one namespace, every object in it."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "fraud-test",
                "resources": [os.path.relpath(K8S / "platform" / d, tmp_path) for d in DIRS],
            }
        )
    )
    proc = subprocess.run(
        [kubectl(), "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "all.yaml").write_text(proc.stdout)
    checked = validate(tmp_path / "all.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    objs = [o for o in yaml.safe_load_all(proc.stdout) if o]
    assert {o["metadata"].get("namespace") for o in objs} == {"fraud-test"}
    binding = named(objs, "RoleBinding", "prefect-worker")
    assert binding is not None
    assert binding["subjects"][0]["namespace"] == "fraud-test"


@pytest.mark.parametrize("directory", DIRS)
def test_every_object_is_labelled_with_its_service_and_the_platform(directory):
    for o in render(directory):
        labels = o["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == directory, o["metadata"]["name"]
        assert labels.get("app.kubernetes.io/part-of") == "fraud-mlops"


def test_the_generic_checks_pass_on_every_workload():
    objs = both()
    assert missing_probes(objs) == []
    assert missing_resources(objs) == []
    assert unpinned_images(objs) == []
    assert selector_mismatches(objs) == []
    assert service_port_mismatches(objs) == []
    assert security_violations([o for o in objs if o["metadata"]["name"] != "prefect-worker"]) == []
    assert token_violations(objs) == []
    assert unresolved_references(objs) == []
    assert secrets_with_data(objs) == []


def test_only_the_worker_mounts_a_token_and_only_because_its_role_binding_needs_it():
    objs = both()
    assert security_violations(objs) == []
    unbound = [o for o in objs if o["kind"] != "RoleBinding"]
    assert security_violations(unbound) == [
        "Deployment/prefect-worker: automountServiceAccountToken is not False"
    ]


def test_slow_starting_servers_have_startup_probes():
    objs = both()
    for name, container in [("prefect-server", "server"), ("evidently", "ui")]:
        deployment = named(objs, "Deployment", name)
        assert deployment is not None
        [c] = [
            c
            for c in deployment["spec"]["template"]["spec"]["containers"]
            if c["name"] == container
        ]
        assert "startupProbe" in c


def test_every_secret_referenced_is_in_user_secrets_with_its_key():
    documented = user_secrets()
    refs = {
        (n, k) for _, pod in pod_specs(both()) for kind, n, k in references(pod) if kind == "Secret"
    }
    refs |= {
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in job_pod(template())["spec"]["containers"][0]["env"]
        if "valueFrom" in e
    }
    assert refs, "no Secret referenced"
    for name, key in refs:
        assert name in documented, name
        assert key is None or key in documented[name], (name, key)
    assert set(documented["prefect-server"]) == {"database-url", "auth-string"}
    assert set(documented["evidently-auth"]) == {"htpasswd"}


def test_commands_pass_host_and_port_explicitly():
    objs = both()
    server = named(objs, "Deployment", "prefect-server")
    assert server is not None
    [c] = server["spec"]["template"]["spec"]["containers"]
    assert c["command"][-4:] == ["--host", "0.0.0.0", "--port", "4200"]
    assert [p["containerPort"] for p in c["ports"]] == [4200]
    svc = named(objs, "Service", "prefect")
    assert svc is not None and svc["spec"]["ports"][0]["port"] == 4200
    config = named(objs, "ConfigMap", next(
        o["metadata"]["name"] for o in of_kind(objs, "ConfigMap")
        if o["metadata"]["name"].startswith("prefect-config")
    ))  # fmt: skip
    assert config is not None
    assert config["data"]["PREFECT_API_URL"] == "http://prefect:4200/api"


def test_the_server_and_worker_authenticate_with_the_same_secret_and_the_jobs_get_a_reference():
    objs = both()
    env_of = {}
    for name in ("prefect-server", "prefect-worker", "prefect-register"):
        workload = next(o for o in objs if o["metadata"]["name"] == name and "spec" in o)
        [c] = workload["spec"]["template"]["spec"]["containers"]
        env_of[name] = {e["name"]: e for e in c.get("env", [])}
    auth = ("prefect-server", "auth-string")

    def ref(e: dict[str, Any]) -> tuple[str, str]:
        r = e["valueFrom"]["secretKeyRef"]
        return r["name"], r["key"]

    assert ref(env_of["prefect-server"]["PREFECT_SERVER_API_AUTH_STRING"]) == auth
    assert ref(env_of["prefect-worker"]["PREFECT_API_AUTH_STRING"]) == auth
    assert ref(env_of["prefect-register"]["PREFECT_API_AUTH_STRING"]) == auth
    worker = env_of["prefect-worker"]
    prefix = "PREFECT_INTEGRATIONS_KUBERNETES_WORKER_API_AUTH_STRING_SECRET_"
    assert (worker[prefix + "NAME"]["value"], worker[prefix + "KEY"]["value"]) == auth
    # The observer watches this namespace only (its Role is namespaced).
    ns = worker["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"]["valueFrom"]
    assert ns == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_the_worker_role_grants_only_what_prefect_kubernetes_needs():
    assert role_problems(both()) == []


def test_the_registration_job_registers_every_deployment_with_the_image_it_runs():
    objs = both()
    job = named(objs, "Job", "prefect-register")
    assert job is not None
    [c] = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    # kustomize rewrites the container's image, not this value: they must agree.
    assert env["FLOW_IMAGE"] == c["image"]
    script = (PREFECT / "register.sh").read_text()
    assert 'work-pool create "$POOL" --type kubernetes' in script and "--overwrite" in script
    assert 'python -m pipelines.deploy --work-pool "$POOL" --image "$FLOW_IMAGE"' in script
    assert 'python -m monitoring.deploy --work-pool "$POOL" --image "$FLOW_IMAGE"' in script
    worker = named(objs, "Deployment", "prefect-worker")
    assert worker is not None
    command = worker["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--pool") + 1] == env["POOL"]
    assert command[command.index("--type") + 1] == "kubernetes"


@pytest.mark.parametrize("script", ["register.sh", "init-flow-repo.sh"])
def test_the_job_scripts_are_valid_shell(script):
    proc = subprocess.run(["sh", "-n", str(PREFECT / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", str(PREFECT / script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


def test_the_registration_job_makes_the_flows_repository_first_on_the_shared_volume():
    assert flow_repo_problems(render("prefect")) == []


def test_the_job_template_makes_secure_flow_run_pods_on_the_shared_volume():
    assert template_problems(template(), render("prefect")) == []


def test_the_job_template_keeps_every_variable_of_prefect_kubernetes():
    """The worker fills these placeholders: a variable dropped from the template would make a
    deployment's job variable (e.g. `image`) silently do nothing."""
    t = template()
    placeholders = set(json.dumps(t["job_configuration"]).split("{{ ")[1:])
    used = {p.split(" }}")[0] for p in placeholders}
    assert used <= set(t["variables"]["properties"])
    assert {"image", "namespace", "command", "env", "labels", "service_account_name"} <= used


PREFECT_KUBERNETES_PYTHON = os.environ.get("PREFECT_KUBERNETES_PYTHON", sys.executable)

RENDER_JOB = textwrap.dedent(
    """
    import asyncio, json, sys, uuid
    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.worker import KubernetesWorker, KubernetesWorkerJobConfiguration

    async def main():
        template = json.load(open(sys.argv[1]))
        default = KubernetesWorker.get_default_base_job_template()
        config = await KubernetesWorkerJobConfiguration.from_template_and_values(
            template, {"image": "fraud-platform:0.1.0"}
        )
        config.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), name="run", flow_id=uuid.uuid4()))
        # What the worker does before it creates the Job (its auth-string Secret settings).
        await KubernetesWorker._replace_env_variable_with_secret(
            None, "PREFECT_API_AUTH_STRING", config, "prefect-server", "auth-string"
        )
        print(json.dumps({"job": config.job_manifest, "default": default}))

    asyncio.run(main())
    """
)


@cache
def flow_run_job() -> tuple[Obj, dict[str, Any]]:
    """The Job prefect-kubernetes makes of the template for a flow run, and its own default."""
    env = {
        **os.environ,
        "PREFECT_API_URL": "http://prefect:4200/api",
        "PREFECT_API_AUTH_STRING": "user:not-a-real-password",
    }
    proc = subprocess.run(
        [PREFECT_KUBERNETES_PYTHON, "-c", RENDER_JOB, str(TEMPLATE)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    if "No module named 'prefect_kubernetes'" in proc.stderr:
        pytest.fail(
            f"prefect-kubernetes is not importable by {PREFECT_KUBERNETES_PYTHON}: install the "
            "platform extra (pip install -e '.[platform]') or set PREFECT_KUBERNETES_PYTHON",
            pytrace=False,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    return out["job"], out["default"]


def test_prefect_kubernetes_turns_the_template_into_a_valid_flow_run_job(tmp_path):
    job, default = flow_run_job()
    # The same variables as prefect-kubernetes' own default template: none lost, none invented.
    assert set(template()["variables"]["properties"]) == set(default["variables"]["properties"])
    job = copy.deepcopy(job)
    pod = job["spec"]["template"]["spec"]
    # prefect-kubernetes requires these two in the pod spec (its manifest check), where
    # Kubernetes ignores them with a warning; the strict schema rejects them, so drop them here.
    assert (pod.pop("completions"), pod.pop("parallelism")) == (1, 1)
    job["metadata"]["name"] = job["metadata"].pop("generateName") + "x"
    (tmp_path / "job.json").write_text(json.dumps(job))
    proc = validate(tmp_path / "job.json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [c] = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert c["image"] == "fraud-platform:0.1.0"
    assert c["args"] == ["prefect", "flow-run", "execute"]
    assert env["PREFECT_API_URL"]["value"] == "http://prefect:4200/api"
    # The auth string reaches the pod as a Secret reference, never as a value in the Job.
    assert env["PREFECT_API_AUTH_STRING"] == {
        "name": "PREFECT_API_AUTH_STRING",
        "valueFrom": {"secretKeyRef": {"name": "prefect-server", "key": "auth-string"}},
    }
    assert "not-a-real-password" not in json.dumps(job)
    assert "secretKeyRef" in env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]
    assert (
        security_violations([{"kind": "Job", "metadata": {"name": "run"}, "spec": job["spec"]}])
        == []
    )
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert (
        labels["app.kubernetes.io/component"] == "flow-run" and "prefect.io/flow-run-id" in labels
    )


def test_the_evidently_ui_is_reachable_only_through_the_auth_proxy():
    assert proxy_problems(render("evidently")) == []


def test_the_ui_and_the_jobs_share_one_volume_and_one_node():
    objs = both()
    ui = named(objs, "Deployment", "evidently")
    assert ui is not None
    ui_pod = ui["spec"]["template"]
    job = job_pod(template())
    register = named(objs, "Job", "prefect-register")
    assert register is not None
    claim = "fraud-flows-data"
    for pod in (ui_pod, job, register["spec"]["template"]):
        claims = [
            v["persistentVolumeClaim"]["claimName"]
            for v in pod["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        ]
        assert claims == [claim]
        # ReadWriteOnce: each carries the label that the others' required affinity selects.
        assert pod["metadata"]["labels"]["fraud-mlops/flows-volume"] == "true"
        [term] = pod["spec"]["affinity"]["podAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        assert term["labelSelector"]["matchLabels"] == {"fraud-mlops/flows-volume": "true"}
    pvc = named(objs, "PersistentVolumeClaim", claim)
    assert pvc is not None and pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    # The UI serves the workspace the monitoring jobs write: their working directory (the
    # volume) + monitor.workspace's default (monitoring/config.py).
    from monitoring.config import MonitorConfig

    workdir = job["spec"]["containers"][0]["workingDir"]
    command = ui_pod["spec"]["containers"][0]["command"]
    assert command[command.index("--workspace") + 1] == f"{workdir}/{MonitorConfig().workspace}"


def test_network_policies_allow_only_the_flows_of_prefect_and_evidently():
    objs = both()
    egress = {
        p["metadata"]["name"]: {
            (port["protocol"], port["port"])
            for r in p["spec"].get("egress", [])
            for port in r["ports"]
        }
        for p in of_kind(objs, "NetworkPolicy")
    }
    dns = {("UDP", 53), ("TCP", 53)}
    assert egress["prefect-worker-egress"] == dns | {("TCP", 4200), ("TCP", 443), ("TCP", 6443)}
    assert egress["prefect-register-egress"] == dns | {("TCP", 4200)}
    # The flows' repository: the S3 store (dev's DVC remote), HTTPS (a fork, a cloud bucket).
    assert egress["prefect-register-repo-egress"] == {("TCP", 8333), ("TCP", 443)}
    assert egress["prefect-server-egress"] == dns | {("TCP", 5432)}
    assert egress["prefect-flow-run-egress"] == dns | {
        ("TCP", 4200), ("TCP", 5000), ("TCP", 5432), ("TCP", 8333), ("TCP", 443)
    }  # fmt: skip
    server_in = named(objs, "NetworkPolicy", "prefect-server-ingress")
    assert server_in is not None
    [rule] = server_in["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "prefect"}}}]


def test_yamllint_passes_on_these_directories():
    proc = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-c", str(K8S.parent / ".yamllint.yaml"),
         str(PREFECT), str(K8S / "platform" / "evidently")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the particular checks can fail ------------------------------------------------------------


def test_role_check_rejects_a_wildcard_and_an_extra_grant():
    objs = copy.deepcopy(both())
    role = named(objs, "Role", "prefect-worker")
    assert role is not None
    role["rules"][0]["verbs"] = ["*"]
    assert any("wildcard" in p for p in role_problems(objs))
    objs = copy.deepcopy(both())
    role = named(objs, "Role", "prefect-worker")
    assert role is not None
    role["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
    assert role_problems(objs) != []


@pytest.mark.parametrize(
    "change",
    ["writable root", "plain password", "unknown secret", "no working volume", "no opt-in label"],
)
def test_template_check_rejects_a_broken_template(change):
    t = template()
    pod = job_pod(t)
    [c] = pod["spec"]["containers"]
    if change == "writable root":
        c["securityContext"]["readOnlyRootFilesystem"] = False
    elif change == "plain password":
        c["env"] = [e for e in c["env"] if e["name"] != "MLFLOW_TRACKING_PASSWORD"]
        c["env"].append({"name": "MLFLOW_TRACKING_PASSWORD", "value": "hunter2"})
    elif change == "unknown secret":
        c["env"][1]["valueFrom"]["secretKeyRef"]["name"] = "mlflow-secrets"
    elif change == "no working volume":
        c["workingDir"] = "/app"
    elif change == "no opt-in label":
        del pod["metadata"]["labels"]["fraud-mlops/mlflow-client"]
    assert template_problems(template(), render("prefect")) == []
    assert template_problems(t, render("prefect")) != []


@pytest.mark.parametrize(
    "change", ["no init container", "repo off the volume", "another key", "no s3 label", "script"]
)
def test_flow_repo_check_rejects_a_broken_registration_job(change):
    objs = copy.deepcopy(render("prefect"))
    job = named(objs, "Job", "prefect-register")
    assert job is not None
    pod = job["spec"]["template"]
    [init] = pod["spec"]["initContainers"]
    if change == "no init container":
        del pod["spec"]["initContainers"]
    elif change == "repo off the volume":
        cm = next(o for o in of_kind(objs, "ConfigMap") if "FRAUD_FLOW_REPO" in o["data"])
        cm["data"]["FRAUD_FLOW_REPO"] = "/tmp/repo"
    elif change == "another key":
        ref = next(e for e in pod["spec"]["containers"][0]["env"] if e["name"] == "FRAUD_FLOW_REPO")
        ref["valueFrom"]["configMapKeyRef"]["key"] = "FRAUD_GIT_URL"
    elif change == "no s3 label":
        del pod["metadata"]["labels"]["fraud-mlops/s3-client"]
    elif change == "script":
        init["command"] = ["sh", "/etc/prefect-work-pool/init-repo.sh"]
    assert flow_repo_problems(render("prefect")) == []
    assert flow_repo_problems(objs) != []


@pytest.mark.parametrize("change", ["ui port", "ui host", "service to ui", "no htpasswd"])
def test_proxy_check_rejects_a_ui_reachable_without_the_proxy(change):
    objs = copy.deepcopy(render("evidently"))
    deployment = named(objs, "Deployment", "evidently")
    assert deployment is not None
    pod = deployment["spec"]["template"]["spec"]
    ui = next(c for c in pod["containers"] if c["name"] == "ui")
    if change == "ui port":
        ui["ports"] = [{"name": "ui", "containerPort": 8000}]
    elif change == "ui host":
        ui["command"][ui["command"].index("--host") + 1] = "0.0.0.0"
    elif change == "service to ui":
        named(objs, "Service", "evidently")["spec"]["ports"][0]["targetPort"] = 8000  # type: ignore[index]
    elif change == "no htpasswd":
        pod["volumes"] = [v for v in pod["volumes"] if "secret" not in v]
    assert proxy_problems(objs) != []


def test_token_check_rejects_a_token_on_a_pod_that_never_calls_kubernetes():
    objs = copy.deepcopy(both())
    server = named(objs, "Deployment", "prefect-server")
    assert server is not None
    server["spec"]["template"]["spec"]["automountServiceAccountToken"] = True
    assert token_violations(objs) == [
        "Deployment/prefect-server: automountServiceAccountToken is not False"
    ]
