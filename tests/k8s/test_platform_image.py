"""The platform image (deploy/platform.Dockerfile), built by deploy/build-platform-image.sh (once
per state of its sources), and what k8s/platform/mlflow runs from it, for real:

* every service's command is there (`mlflow server`, `prefect`, the Evidently, Prefect-Kubernetes
  and boto3 modules, the flows), as uid 10001 with HOME /var/lib/fraud, and no pip in the venv;
* MLflow's init script (k8s/platform/mlflow/mlflow-init.py) in the image against a throwaway
  PostgreSQL prepared by k8s/platform/postgres/init-databases.sh, logged in as the role `mlflow`
  (not the superuser): schema created, auth config written, client user created, then idempotent,
  then a new client password reset;
* the Deployment's own `mlflow server` command line in the image, on a read-only root with the
  manifest's writable paths as tmpfs: /health open, everything else behind basic auth, the
  client user can work, a foreign Host header is refused.

Needs podman and root (the stand-in base image), like the API image's test; and PostgreSQL's
server binaries for the database part (tests/pg_server.py). Select with `pytest -m container`.
"""

from __future__ import annotations

import base64
import configparser
import importlib
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.k8s.test_platform_storage import named, render
from tests.k8s.test_platform_storage import pg_server as pg_server  # the module fixture
from tests.pg_server import free_port

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "deploy" / "build-platform-image.sh"
IMAGE = "fraud-platform:0.1.0"
CONTAINERS_CONF = str(ROOT / "deploy" / "containers.conf")
INIT_SCRIPT = ROOT / "k8s" / "platform" / "mlflow" / "mlflow-init.py"

# The API image test's marks (container, slow; skipped without podman or root: the same base
# image), and `platform`. Imported at run time, as test_kube_play.py does: a static import would
# make `mypy tests/k8s tests/deploy` see that file under two names.
pytestmark = [
    *importlib.import_module("tests.deploy.test_api_container_image").pytestmark,
    pytest.mark.platform,
]


def podman(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args],
        env={**os.environ, "CONTAINERS_CONF": CONTAINERS_CONF},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def image() -> str:
    proc = subprocess.run(
        ["bash", str(BUILD), IMAGE], capture_output=True, text=True, timeout=60 * 60
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return IMAGE


def run_in_image(image: str, script: str, *opts: str) -> subprocess.CompletedProcess[str]:
    return podman(
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/var/lib/fraud:rw,U",
        *opts,
        image,
        "sh",
        "-c",
        script,
    )


def test_the_image_has_every_services_command_and_runs_as_uid_10001(image):
    proc = run_in_image(
        image,
        "id -u; id -g; echo $HOME; mlflow server --help >/dev/null && echo mlflow-server-ok; "
        "prefect version | grep -E '^(Version|  prefect-kubernetes)'; "
        "python -c 'import prefect_kubernetes, boto3, evidently, flask_wtf, psycopg; "
        'import pipelines.flows, monitoring.flows, serving.app; print("imports-ok")\'; '
        "test -e /opt/venv/bin/pip || echo no-pip-in-venv",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.split()
    assert lines[:3] == ["10001", "10001", "/var/lib/fraud"]
    assert "mlflow-server-ok" in lines and "imports-ok" in lines and "no-pip-in-venv" in lines
    assert "3.8.8" in proc.stdout and "prefect-kubernetes:" in proc.stdout


def run_init(image: str, env: dict[str, str], config_dir: Path) -> subprocess.CompletedProcess[str]:
    """mlflow-init.py in the image, as the init container runs it; host network for the test's
    PostgreSQL on 127.0.0.1, the auth config written to a host directory to inspect it."""
    flags = [f"--env={k}={v}" for k, v in env.items()]
    return podman(
        "run",
        "--rm",
        "--read-only",
        "--network=host",
        "--tmpfs=/var/lib/fraud:rw,U",
        "--tmpfs=/tmp:rw,U",
        f"--volume={INIT_SCRIPT}:/etc/mlflow-init/mlflow-init.py:ro",
        f"--volume={config_dir}:/etc/mlflow-auth",
        *flags,
        image,
        "python",
        "/etc/mlflow-init/mlflow-init.py",
        timeout=300,
    )


def test_mlflow_init_migrates_postgresql_as_the_owner_role_and_creates_the_client_user(
    image, pg_server, tmp_path
):
    base = f"postgresql+psycopg://mlflow@127.0.0.1:{pg_server.port}"
    config_dir = tmp_path / "auth"
    config_dir.mkdir()
    os.chown(config_dir, 10001, 10001)
    env = {
        "MLFLOW_BACKEND_STORE_URI": f"{base}/mlflow",
        # A percent-encoded character, as a URL-quoted password would have.
        "MLFLOW_AUTH_DATABASE_URI": f"{base}/mlflow_auth?application_name=mlflow%2Dauth",
        "AUTH_CONFIG_PATH": "/etc/mlflow-auth/basic_auth.ini",
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_CLIENT_USERNAME": "fraud-client",
        "MLFLOW_CLIENT_PASSWORD": "client-password-0123",
    }
    first = run_init(image, env, config_dir)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "created user 'fraud-client'" in first.stdout
    with psycopg.connect(pg_server.url("mlflow")) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables").fetchall()}
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'experiments'"
        ).fetchone()
    assert {"experiments", "runs", "registered_models", "alembic_version"} <= tables
    assert owner == ("mlflow",)
    config = config_dir / "basic_auth.ini"
    assert config.stat().st_mode & 0o777 == 0o600 and config.stat().st_uid == 10001
    parser = configparser.ConfigParser()
    parser.read(config)
    assert parser["mlflow"]["database_uri"] == env["MLFLOW_AUTH_DATABASE_URI"]
    assert parser["mlflow"]["default_permission"] == "READ"

    again = run_init(image, env, config_dir)
    assert again.returncode == 0 and "is up to date" in again.stdout, again.stderr
    rotated = run_init(image, {**env, "MLFLOW_CLIENT_PASSWORD": "new-password-01234"}, config_dir)
    assert rotated.returncode == 0 and "reset the password" in rotated.stdout, rotated.stderr


@pytest.fixture
def mlflow_server(image) -> Iterator[str]:
    """The Deployment's init script and server command in the image, with SQLite stores and a
    local artifact directory standing in for PostgreSQL and S3; port 5000 of the container on a
    free 127.0.0.1 port."""
    deployment = named(render("mlflow"), "Deployment", "mlflow")
    assert deployment is not None
    server = deployment["spec"]["template"]["spec"]["containers"][0]
    command = [
        a.replace("$(MLFLOW_ARTIFACTS_DESTINATION)", "/var/lib/fraud/artifacts")
        for a in server["command"]
    ]
    port = free_port()
    name = f"mlflow-test-{port}"
    env = {
        "MLFLOW_BACKEND_STORE_URI": "sqlite:////var/lib/fraud/mlflow.db",
        "MLFLOW_AUTH_DATABASE_URI": "sqlite:////var/lib/fraud/auth.db",
        "AUTH_CONFIG_PATH": "/etc/mlflow-auth/basic_auth.ini",
        "MLFLOW_AUTH_CONFIG_PATH": "/etc/mlflow-auth/basic_auth.ini",
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-password-0123",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret-key",
        "MLFLOW_CLIENT_USERNAME": "fraud-client",
        "MLFLOW_CLIENT_PASSWORD": "client-password-0123",
    }
    started = podman(
        "run",
        "-d",
        f"--name={name}",
        "--read-only",
        "--tmpfs=/var/lib/fraud:rw,U",
        "--tmpfs=/tmp:rw,U",
        "--tmpfs=/etc/mlflow-auth:rw,U",
        f"--volume={INIT_SCRIPT}:/etc/mlflow-init/mlflow-init.py:ro",
        f"--publish=127.0.0.1:{port}:5000",
        *(f"--env={k}={v}" for k, v in env.items()),
        image,
        "sh",
        "-c",
        'python /etc/mlflow-init/mlflow-init.py && exec "$@"',
        "sh",
        *command,
    )
    assert started.returncode == 0, started.stderr
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=3) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, podman("logs", name).stderr[-4000:]
            time.sleep(1)
        yield url
    finally:
        podman("rm", "-f", name)


def call(url: str, host: str, user: str | None = None, password: str = "") -> int:
    """The status of a request, sent with the Host header a client in the cluster would send."""
    request = urllib.request.Request(url, headers={"Host": host})
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_the_deployments_mlflow_command_serves_only_authenticated_users(mlflow_server):
    search = f"{mlflow_server}/api/2.0/mlflow/experiments/search?max_results=1"
    client = ("fraud-client", "client-password-0123")
    assert call(f"{mlflow_server}/health", "10.0.0.7:5000") == 200  # the kubelet's probe
    assert call(search, "mlflow:5000") == 401
    assert call(search, "mlflow:5000", "fraud-client", "wrong-password-00") == 401
    assert call(search, "mlflow:5000", *client) == 200
    assert call(search, "mlflow.fraud-dev.svc.cluster.local:5000", *client) == 200
    assert call(search, "localhost:5000", "admin", "admin-password-0123") == 200
    # DNS rebinding: a name the server does not serve.
    assert call(search, "evil.example:5000", *client) == 403
