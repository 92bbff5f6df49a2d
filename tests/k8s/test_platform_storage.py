"""The platform's data services and MLflow on Kubernetes (k8s/platform/postgres, redis,
s3-seaweedfs, mlflow): each directory rendered by `kubectl kustomize` on its own and inside a
kustomization that sets a namespace (as an overlay will), validated with
`kubernetes-validate --strict`, and checked object by object. Each check is a function that
returns its problems, and the tests at the end break a render on purpose to prove that each one
can fail. The PostgreSQL init script also runs for real here, on a throwaway server, and MLflow's
init script's checks of its settings. (That script's work, migrations, auth config and client
user, needs MLflow's auth extra, which the platform image has and the dev venv has not: it runs in
the image, tests/k8s/test_platform_image.py.)
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.k8s.test_manifests import (
    containers,
    kubectl,
    missing_resources,
    named,
    of_kind,
    pod_specs,
    references,
    secrets_with_data,
    selects,
    unpinned_images,
    user_secrets,
    validate,
)
from tests.k8s.test_manifests import security_violations as base_security_violations
from tests.pg_server import postgres_server

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = ROOT / "k8s" / "platform"
SERVICES = ["postgres", "redis", "s3-seaweedfs", "mlflow"]
#: What each service's Service is called, on which port (the names the other services use).
SERVICE_PORTS = {
    "postgres": ("postgres", 5432),
    "redis": ("redis", 6379),
    "s3-seaweedfs": ("s3", 8333),
    "mlflow": ("mlflow", 5000),
}
#: The databases the platform needs (k8s/platform/postgres/kustomization.yaml).
DATABASES = {
    "mlflow": "mlflow",
    "mlflow_auth": "mlflow",
    "prefect": "prefect",
    "predictions": "fraud",
}

Obj = dict[str, Any]

# Renders through a subprocess (kubectl): the integration tier, like test_manifests.py.
pytestmark = pytest.mark.integration


@cache
def rendered_text(service: str) -> str:
    proc = subprocess.run(
        [kubectl(), "kustomize", str(PLATFORM / service)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"kubectl kustomize k8s/platform/{service}:\n{proc.stderr}"
    return proc.stdout


def render(service: str) -> list[Obj]:
    """A fresh copy of the directory's objects (tests may change theirs)."""
    return [d for d in yaml.safe_load_all(rendered_text(service)) if d]


def render_all() -> list[Obj]:
    return [o for s in SERVICES for o in render(s)]


def workloads(objs: list[Obj], kinds: tuple[str, ...] = ("Deployment", "StatefulSet")) -> list[Obj]:
    return [o for o in objs if o["kind"] in kinds]


def pod_labels(o: Obj) -> dict[str, str]:
    return dict(o["spec"]["template"]["metadata"].get("labels", {}))


# --- the checks: each returns its problems ----------------------------------------------------


def missing_probes(objs: list[Obj]) -> list[str]:
    """Long-running containers need all three probes (every one of these starts slowly at least
    once: initdb, an AOF load, migrations). Jobs run to completion: no probes."""
    return [
        f"{w['kind']}/{w['metadata']['name']} {c['name']}: no {p}"
        for w in workloads(objs)
        for c in w["spec"]["template"]["spec"]["containers"]
        for p in ("startupProbe", "readinessProbe", "livenessProbe")
        if p not in c
    ]


def security_violations(objs: list[Obj]) -> list[str]:
    """test_manifests.py's restricted security context (each image's own user, no service-link
    variables)."""
    return base_security_violations(objs)


def writable_paths_not_on_volumes(objs: list[Obj]) -> list[str]:
    """A read-only root needs a volume on every path the server writes: /tmp everywhere, and
    each server's data and runtime directories."""
    must = {
        "postgres": ["/tmp", "/var/run/postgresql", "/var/lib/postgresql/data"],
        "redis": ["/tmp", "/data"],
        "seaweedfs": ["/tmp", "/data"],
        "mlflow": ["/tmp", "/var/lib/fraud"],
        "create-buckets": ["/tmp"],
        "init": ["/tmp", "/var/lib/fraud", "/etc/mlflow-auth"],
    }
    problems = []
    for o in workloads(objs, ("Deployment", "StatefulSet", "Job")):
        pod = o["spec"]["template"]["spec"]
        writable = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v} | {
            t["metadata"]["name"] for t in o["spec"].get("volumeClaimTemplates", [])
        }
        for c in containers(pod):
            mounts = {
                m["mountPath"]
                for m in c.get("volumeMounts", [])
                if m["name"] in writable and not m.get("readOnly")
            }
            problems += [
                f"{o['kind']}/{o['metadata']['name']} {c['name']}: {path} is not a writable volume"
                for path in must.get(c["name"], ["/tmp"])
                if path not in mounts
            ]
    return problems


def unresolved_references(objs: list[Obj]) -> list[str]:
    """Every ConfigMap is rendered (with the key used); every Secret is one the user creates,
    listed in k8s/user-secrets.yaml with the key used."""
    documented = user_secrets()
    problems = []
    for where, pod in pod_specs(objs):
        for kind, name, key in references(pod):
            obj = named(objs, kind, name)
            if kind == "ConfigMap":
                if obj is None:
                    problems.append(f"{where}: ConfigMap/{name} is not rendered")
                elif key is not None and key not in obj.get("data", {}):
                    problems.append(f"{where}: ConfigMap/{name} has no key {key!r}")
            elif name not in documented:
                problems.append(f"{where}: Secret/{name} is not in k8s/user-secrets.yaml")
            elif key is not None and key not in documented[name]:
                problems.append(f"{where}: key {key!r} of Secret/{name} is not documented")
    return problems


def service_problems(objs: list[Obj]) -> list[str]:
    """Each Service selects pods, and its targetPort is a named container port of them."""
    problems = []
    for svc in of_kind(objs, "Service"):
        pods = [w for w in workloads(objs) if selects(svc["spec"]["selector"], pod_labels(w))]
        if not pods:
            problems.append(f"Service/{svc['metadata']['name']} selects no pods")
        for port in svc["spec"]["ports"]:
            for w in pods:
                names = {
                    p.get("name")
                    for c in w["spec"]["template"]["spec"]["containers"]
                    for p in c.get("ports", [])
                }
                if port["targetPort"] not in names:
                    problems.append(
                        f"Service/{svc['metadata']['name']}: targetPort {port['targetPort']!r} "
                        f"is no named port of {w['metadata']['name']}"
                    )
    return problems


def network_policy_problems(objs: list[Obj]) -> list[str]:
    """Each policy selects rendered pods; the ports it opens in are ports of those pods; every
    long-running pod with a port has a way in."""
    problems = []
    templates = workloads(objs, ("Deployment", "StatefulSet", "Job"))
    covered: set[str] = set()
    for pol in of_kind(objs, "NetworkPolicy"):
        sel = pol["spec"]["podSelector"].get("matchLabels", {})
        pods = [w for w in templates if selects(sel, pod_labels(w))]
        if not pods:
            problems.append(f"NetworkPolicy/{pol['metadata']['name']} selects no pod")
        for rule in pol["spec"].get("ingress", []):
            if not rule.get("from"):
                problems.append(f"NetworkPolicy/{pol['metadata']['name']}: ingress from anywhere")
            for port in rule.get("ports", []):
                for w in pods:
                    ports = [
                        p for c in w["spec"]["template"]["spec"]["containers"] for p in c["ports"]
                    ]
                    if not any(port["port"] in (p.get("name"), p["containerPort"]) for p in ports):
                        problems.append(
                            f"NetworkPolicy/{pol['metadata']['name']}: port {port['port']!r} is "
                            f"not a port of {w['metadata']['name']}"
                        )
                    covered.add(w["metadata"]["name"])
    for w in workloads(objs):
        has_ports = any(c.get("ports") for c in w["spec"]["template"]["spec"]["containers"])
        if has_ports and w["metadata"]["name"] not in covered:
            problems.append(f"{w['kind']}/{w['metadata']['name']}: no NetworkPolicy lets in")
    return problems


def label_problems(objs: list[Obj]) -> list[str]:
    problems = []
    for o in objs:
        labels = o["metadata"].get("labels", {})
        if labels.get("app.kubernetes.io/part-of") != "fraud-mlops":
            problems.append(f"{o['kind']}/{o['metadata']['name']}: not part-of fraud-mlops")
        if "app.kubernetes.io/name" not in labels:
            problems.append(f"{o['kind']}/{o['metadata']['name']}: no app.kubernetes.io/name")
    return problems


def mlflow_command_problems(objs: list[Obj]) -> list[str]:
    """The server's command line: host and port explicit (the port the Service targets), the
    basic-auth app, proxied artifacts to the configured destination, the in-cluster Host names
    allowed, and no database URL (it carries a password) among the arguments."""
    deployment = named(objs, "Deployment", "mlflow")
    if deployment is None:
        return ["no Deployment mlflow"]
    server = next(c for c in deployment["spec"]["template"]["spec"]["containers"])
    args = server["command"] + server.get("args", [])
    opts = dict(a.removeprefix("--").split("=", 1) for a in args if a.startswith("--") and "=" in a)
    port = next(p["containerPort"] for p in server["ports"] if p["name"] == "http")
    problems = []
    if args[:2] != ["mlflow", "server"]:
        problems.append(f"the command is not `mlflow server`: {args[:2]}")
    if opts.get("host") != "0.0.0.0":
        problems.append(f"--host is {opts.get('host')!r}, not 0.0.0.0")
    if opts.get("port") != str(port) or port != 5000:
        problems.append(f"--port is {opts.get('port')!r}, the container port {port}")
    if opts.get("app-name") != "basic-auth":
        problems.append(f"--app-name is {opts.get('app-name')!r}, not basic-auth")
    if opts.get("workers") != "1":
        problems.append("--workers is not 1")
    if "--serve-artifacts" not in args:
        problems.append("artifacts are not proxied (--serve-artifacts)")
    if opts.get("artifacts-destination") != "$(MLFLOW_ARTIFACTS_DESTINATION)":
        problems.append(
            "--artifacts-destination is not the ConfigMap's MLFLOW_ARTIFACTS_DESTINATION"
        )
    hosts = opts.get("allowed-hosts", "").split(",")
    if not {"mlflow:5000", "mlflow.*.svc.cluster.local:5000"} <= set(hosts):
        problems.append(f"--allowed-hosts misses the Service's names: {hosts}")
    if any(re.search(r"(postgres|sqlite|mysql)[a-z+]*://", a) for a in args):
        problems.append("a database URL is on the command line")
    env = {e["name"]: e for e in server.get("env", [])}
    for name, (secret, key) in {
        "MLFLOW_BACKEND_STORE_URI": ("mlflow-server", "backend-store-uri"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": ("mlflow-server", "admin-password"),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": ("mlflow-server", "flask-secret-key"),
        "AWS_SECRET_ACCESS_KEY": ("s3-credentials", "secret-access-key"),
    }.items():
        ref = env.get(name, {}).get("valueFrom", {}).get("secretKeyRef", {})
        if (ref.get("name"), ref.get("key")) != (secret, key):
            problems.append(f"{name} is not from Secret {secret}/{key}")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        # /health is the one path that neither basic auth nor the Host check guards.
        if server.get(probe, {}).get("httpGet", {}).get("path") != "/health":
            problems.append(f"{probe} does not call /health")
    return problems


# --- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_each_platform_directory_passes_strict_schema_validation(service, tmp_path):
    out = tmp_path / f"{service}.yaml"
    out.write_text(rendered_text(service))
    proc = validate(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_directories_render_together_into_a_namespace_and_validate(tmp_path):
    """As an overlay will use them: every object lands in the namespace, no name collides."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "fraud-test",
                "resources": [os.path.relpath(PLATFORM / s, tmp_path) for s in SERVICES],
            }
        )
    )
    proc = subprocess.run(
        [kubectl(), "kustomize", "--load-restrictor=LoadRestrictionsNone", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    objs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert {o["metadata"].get("namespace") for o in objs} == {"fraud-test"}
    keys = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(keys) == len(set(keys))
    out = tmp_path / "all.yaml"
    out.write_text(proc.stdout)
    check = validate(out)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_every_server_has_startup_readiness_and_liveness_probes(service):
    assert missing_probes(render(service)) == []


@pytest.mark.parametrize("service", SERVICES)
def test_every_container_requests_and_limits_cpu_and_memory(service):
    assert missing_resources(render(service)) == []


@pytest.mark.parametrize("service", SERVICES)
def test_every_image_is_pinned_by_a_tag_that_is_not_latest(service):
    assert unpinned_images(render(service)) == []


@pytest.mark.parametrize("service", SERVICES)
def test_every_pod_runs_as_its_images_user_read_only_without_privileges(service):
    assert security_violations(render(service)) == []


@pytest.mark.parametrize("service", SERVICES)
def test_every_written_path_is_on_a_volume(service):
    assert writable_paths_not_on_volumes(render(service)) == []


@pytest.mark.parametrize("service", SERVICES)
def test_every_secret_is_user_created_and_listed_with_its_key(service):
    objs = render(service)
    assert unresolved_references(objs) == []
    assert secrets_with_data(objs) == [] and not of_kind(objs, "Secret")


@pytest.mark.parametrize("service", SERVICES)
def test_the_service_has_its_in_cluster_name_and_port_and_targets_a_named_port(service):
    objs = render(service)
    name, port = SERVICE_PORTS[service]
    svc = named(objs, "Service", name)
    assert svc is not None and [p["port"] for p in svc["spec"]["ports"]] == [port]
    assert service_problems(objs) == []


@pytest.mark.parametrize("service", SERVICES)
def test_network_policies_select_real_pods_and_open_only_their_ports(service):
    objs = render(service)
    assert of_kind(objs, "NetworkPolicy")
    assert network_policy_problems(objs) == []


@pytest.mark.parametrize("service", SERVICES)
def test_every_object_carries_the_platform_labels(service):
    assert label_problems(render(service)) == []


def test_mlflow_runs_with_explicit_host_and_port_and_the_basic_auth_app():
    assert mlflow_command_problems(render("mlflow")) == []


def test_mlflow_migrates_before_it_serves_and_never_beside_an_older_server():
    deployment = named(render("mlflow"), "Deployment", "mlflow")
    assert deployment is not None
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    init = deployment["spec"]["template"]["spec"]["initContainers"]
    assert [c["command"] for c in init] == [["python", "/etc/mlflow-init/mlflow-init.py"]]


def test_redis_gets_its_password_from_the_secret_never_as_an_argument():
    sts = named(render("redis"), "StatefulSet", "redis")
    assert sts is not None
    redis = sts["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in redis["env"]}
    assert env["REDIS_PASSWORD"] == {"name": "redis-credentials", "key": "password"}
    script = redis["args"][0]
    # The config arrives on stdin (`redis-server -`), the password expanded from the variable.
    assert 'requirepass "$REDIS_PASSWORD"' in script and "redis-server -" in script
    assert "--requirepass" not in " ".join(redis["command"] + redis["args"])
    assert "maxmemory-policy noeviction" in script and "appendonly yes" in script


def test_postgres_init_script_creates_every_database_the_platform_needs():
    cm = next(c for c in of_kind(render("postgres"), "ConfigMap"))
    script = cm["data"]["init-databases.sh"]
    for db, owner in DATABASES.items():
        assert f"CREATE DATABASE {db} OWNER {owner};" in script


# --- the checks can fail: each one on a render broken on purpose -------------------------------


def broken(change: str) -> list[Obj]:
    objs = copy.deepcopy(render_all())
    mlflow = named(objs, "Deployment", "mlflow")
    postgres = named(objs, "StatefulSet", "postgres")
    assert mlflow is not None and postgres is not None
    server = mlflow["spec"]["template"]["spec"]["containers"][0]
    pg = postgres["spec"]["template"]["spec"]["containers"][0]
    if change == "no startup probe":
        del pg["startupProbe"]
    elif change == "no cpu request":
        del server["resources"]["requests"]["cpu"]
    elif change == "latest":
        pg["image"] = "docker.io/library/postgres:latest"
    elif change == "root":
        pg["securityContext"]["runAsUser"] = 0
    elif change == "wrong uid":
        pg["securityContext"]["runAsUser"] = 10001
    elif change == "service links":
        del mlflow["spec"]["template"]["spec"]["enableServiceLinks"]
    elif change == "no run dir":
        pg["volumeMounts"] = [m for m in pg["volumeMounts"] if m["name"] != "run"]
    elif change == "undocumented key":
        server["env"][0]["valueFrom"]["secretKeyRef"]["key"] = "database-url"
    elif change == "target port":
        named(objs, "Service", "postgres")["spec"]["ports"][0]["targetPort"] = "pg"  # type: ignore[index]
    elif change == "policy port":
        pol = named(objs, "NetworkPolicy", "redis-ingress")
        pol["spec"]["ingress"][0]["ports"][0]["port"] = "http"  # type: ignore[index]
    elif change == "policy from anywhere":
        del named(objs, "NetworkPolicy", "mlflow-ingress")["spec"]["ingress"][0]["from"]  # type: ignore[index]
    elif change == "no label":
        del postgres["metadata"]["labels"]["app.kubernetes.io/part-of"]
    elif change == "no host":
        server["command"] = [a for a in server["command"] if not a.startswith("--host")]
    elif change == "default port":
        server["command"] = [a.replace("--port=5000", "--port=5001") for a in server["command"]]
    elif change == "no auth":
        server["command"] = [a for a in server["command"] if not a.startswith("--app-name")]
    elif change == "url in args":
        server["command"].append("--backend-store-uri=postgresql+psycopg://u:p@postgres/mlflow")
    return objs


@pytest.mark.parametrize(
    ("change", "check"),
    [
        ("no startup probe", missing_probes),
        ("no cpu request", missing_resources),
        ("latest", unpinned_images),
        ("root", security_violations),
        ("wrong uid", security_violations),
        ("service links", security_violations),
        ("no run dir", writable_paths_not_on_volumes),
        ("undocumented key", unresolved_references),
        ("target port", service_problems),
        ("policy port", network_policy_problems),
        ("policy from anywhere", network_policy_problems),
        ("no label", label_problems),
        ("no host", mlflow_command_problems),
        ("default port", mlflow_command_problems),
        ("no auth", mlflow_command_problems),
        ("url in args", mlflow_command_problems),
    ],
)
def test_each_check_reports_a_render_broken_on_purpose(change, check):
    assert check(render_all()) == []
    assert check(broken(change)) != []


# --- the scripts, run for real ----------------------------------------------------------------

PASSWORDS = {
    "POSTGRES_USER": "postgres",
    "MLFLOW_DB_PASSWORD": "mlflow-secret-0123",
    "PREFECT_DB_PASSWORD": "prefect-secret-0123",
    "FRAUD_DB_PASSWORD": "fraud-secret-0123",
}


def init_script(tmp_path: Path) -> Path:
    cm = next(c for c in of_kind(render("postgres"), "ConfigMap"))
    path = tmp_path / "init-databases.sh"
    path.write_text(cm["data"]["init-databases.sh"])
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def pg_server():
    """A throwaway PostgreSQL on which the init script ran, as the image's entrypoint runs it."""
    with postgres_server() as server:
        script = init_script(Path(server.base))
        env = {
            **os.environ,
            **PASSWORDS,
            "PATH": f"{server.bindir}:{os.environ['PATH']}",
            "PGHOST": "127.0.0.1",
            "PGPORT": str(server.port),
        }
        proc = subprocess.run(
            ["bash", str(script)], env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield server


def test_postgres_init_script_creates_the_roles_and_databases_each_owner_alone_may_use(pg_server):
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        owners: dict[str, str] = dict(
            conn.execute(
                "SELECT d.datname, r.rolname FROM pg_database d JOIN pg_roles r "
                "ON d.datdba = r.oid WHERE d.datname = ANY(%s)",
                (list(DATABASES),),
            ).fetchall()
        )
        hashed: dict[str, str] = dict(
            conn.execute(
                "SELECT rolname, rolpassword FROM pg_authid WHERE rolname IN "
                "('mlflow', 'prefect', 'fraud')"
            ).fetchall()
        )
    assert owners == DATABASES
    assert all(h and h.startswith("SCRAM-SHA-256$") for h in hashed.values()), hashed
    # CONNECT was revoked from PUBLIC: a role reaches its own databases only.
    base = f"postgresql://{{}}@127.0.0.1:{pg_server.port}/{{}}"
    psycopg.connect(base.format("fraud", "predictions")).close()
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(base.format("fraud", "mlflow")).close()


def test_postgres_init_script_refuses_an_empty_password(tmp_path):
    env = {**os.environ, **PASSWORDS, "PREFECT_DB_PASSWORD": ""}
    proc = subprocess.run(
        ["bash", str(init_script(tmp_path))], env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode != 0
    assert "PREFECT_DB_PASSWORD is empty" in proc.stderr


def run_mlflow_init(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = next(
        c
        for c in of_kind(render("mlflow"), "ConfigMap")
        if c["metadata"]["name"].startswith("mlflow-init")
    )
    path = tmp_path / "mlflow-init.py"
    path.write_text(script["data"]["mlflow-init.py"])
    return subprocess.run(
        [sys.executable, str(path)],
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_mlflow_init_refuses_the_admin_as_the_client_user(tmp_path):
    db = tmp_path / "x.db"
    proc = run_mlflow_init(
        tmp_path,
        {
            "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{db}",
            "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{tmp_path / 'auth.db'}",
            "AUTH_CONFIG_PATH": str(tmp_path / "basic_auth.ini"),
            "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
            "MLFLOW_CLIENT_USERNAME": "admin",
            "MLFLOW_CLIENT_PASSWORD": "client-password-0123",
        },
    )
    assert proc.returncode != 0
    assert "is the admin user" in proc.stderr


def test_mlflow_init_names_the_missing_setting(tmp_path):
    proc = run_mlflow_init(tmp_path, {"MLFLOW_BACKEND_STORE_URI": ""})
    assert proc.returncode != 0
    assert "MLFLOW_BACKEND_STORE_URI is empty" in proc.stderr
