"""Registration on a Prefect work pool (`--work-pool NAME --image IMAGE` of
`python -m pipelines.deploy` and `python -m monitoring.deploy`), against a real Prefect server
with basic auth (PREFECT_SERVER_API_AUTH_STRING, as k8s/platform/prefect/ runs it) and a real
`process` work pool: what the Kubernetes registration Job does, minus Kubernetes.

Both modules are tested here, on one server (it takes 20-35 s to start): the registration Job
runs them one after the other, and a flow run of either lands on the same pool.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import OFFLINE_ENV, ROOT

IMAGE = "fraud-platform:0.1.0"
POOL = "fraud-flows"
AUTH = "fraud-admin:not-a-real-password"


@dataclass(frozen=True)
class PrefectServer:
    api: str
    env: dict[str, str]

    def get(self, path: str) -> Any:
        r = httpx.get(f"{self.api}{path}", auth=tuple(AUTH.split(":")), timeout=10)  # type: ignore[arg-type]
        r.raise_for_status()
        return r.json()

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
            timeout=180,
        )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> Iterator[PrefectServer]:
    """`prefect server start` with basic auth, and a `process` work pool on it."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    base = {**os.environ, **OFFLINE_ENV, "PREFECT_HOME": str(home)}
    base.pop("PREFECT_API_URL", None)
    bindir = str(Path(sys.executable).parent)
    server = subprocess.Popen(
        [f"{bindir}/prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={**base, "PREFECT_SERVER_API_AUTH_STRING": AUTH},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{port}/api"
    client_env = {**base, "PREFECT_API_URL": api, "PREFECT_API_AUTH_STRING": AUTH}
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                # /api/health answers without credentials: what the Kubernetes probes call.
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail("prefect server did not start within 180 s")
        pool = subprocess.run(
            [f"{bindir}/prefect", "work-pool", "create", POOL, "--type", "process"],
            env=client_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert pool.returncode == 0, pool.stdout + pool.stderr
        yield PrefectServer(api, client_env)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def _deployment(server: PrefectServer, name: str) -> dict[str, Any]:
    return server.get(f"/deployments/name/{name}")  # type: ignore[no-any-return]


@pytest.mark.slow  # the server takes 20-35 s to start
def test_the_server_refuses_an_api_call_without_the_auth_string(prefect_server):
    r = httpx.post(f"{prefect_server.api}/deployments/filter", json={}, timeout=10)
    assert r.status_code == 401


@pytest.mark.slow  # the server takes 20-35 s to start
def test_pipelines_deploy_registers_training_and_retraining_on_the_pool_with_the_image(
    prefect_server,
):
    args = ["-m", "pipelines.deploy", "--work-pool", POOL, "--image", IMAGE]
    args += ["--params", "/app/params.yaml", "--repo", "/var/lib/fraud/shared/repo"]
    proc = prefect_server.run(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = {}
    for name, module, workdir in [
        ("training/production", "pipelines.flows.training", "runs/flow"),
        ("retraining/production", "pipelines.flows.retraining", "runs/retrain"),
    ]:
        d = _deployment(prefect_server, name)
        assert d["work_pool_name"] == POOL
        assert d["job_variables"] == {"image": IMAGE}
        # By module path: the job's image has the project installed, not this checkout's files.
        assert d["entrypoint"] == module
        assert d["parameters"] == {
            "params_path": "/app/params.yaml",
            "repo": "/var/lib/fraud/shared/repo",
            "workdir": workdir,
        }
        assert d["schedules"] == []  # on demand, or when monitoring asks
        ids[name] = d["id"]
        assert f"registered {name} ({d['id']}) on work pool {POOL}" in proc.stdout

    # Idempotent: the registration Job may run again (a new image tag): same deployments, updated.
    again = prefect_server.run(*args[:-4], "--image", "fraud-platform:0.1.1")
    assert again.returncode == 0, again.stdout + again.stderr
    for name, deployment_id in ids.items():
        d = _deployment(prefect_server, name)
        assert d["id"] == deployment_id
        assert d["job_variables"] == {"image": "fraud-platform:0.1.1"}


@pytest.mark.slow  # the server takes 20-35 s to start
def test_monitoring_deploy_registers_the_daily_schedule_on_the_pool(prefect_server):
    proc = prefect_server.run(
        "-m", "monitoring.deploy", "--work-pool", POOL, "--image", IMAGE,
        "--params", "/app/params.yaml",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d = _deployment(prefect_server, "monitoring/daily")
    assert d["work_pool_name"] == POOL
    assert d["job_variables"] == {"image": IMAGE}
    assert d["entrypoint"] == "monitoring.flows.monitoring"
    [schedule] = d["schedules"]
    assert schedule["active"] is True
    assert (schedule["schedule"]["cron"], schedule["schedule"]["timezone"]) == ("15 0 * * *", "UTC")
    assert d["parameters"]["end"] == "scheduled"
    assert d["parameters"]["training_deployment"] == "retraining/production"
    # No prediction_log parameter: each job reads FRAUD_PREDICTION_LOG from its Secret.
    assert "prediction_log" not in d["parameters"]


@pytest.mark.slow
@pytest.mark.parametrize("module", ["pipelines.deploy", "monitoring.deploy"])
def test_registering_on_a_pool_the_server_does_not_have_fails_naming_it(prefect_server, module):
    proc = prefect_server.run("-m", module, "--work-pool", "no-such-pool", "--image", IMAGE)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "no-such-pool" in last, proc.stderr


@pytest.mark.parametrize("module", ["pipelines.deploy", "monitoring.deploy"])
def test_a_work_pool_without_an_image_is_a_usage_error(module):
    proc = subprocess.run(
        [sys.executable, "-m", module, "--work-pool", POOL, "--dry-run"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--work-pool and --image go together" in proc.stderr


def test_dry_run_with_a_pool_shows_both_training_deployments_and_registers_nothing(capsys):
    from pipelines.deploy import main

    assert main(["--dry-run", "--work-pool", POOL, "--image", IMAGE]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["work_pool"], shown["image"]) == (POOL, IMAGE)
    assert [d["name"] for d in shown["deployments"]] == [
        "training/production",
        "retraining/production",
    ]
