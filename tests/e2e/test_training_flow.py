"""The Prefect `training` flow: a real flow run on Prefect's temporary local server."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import httpx
import pytest
from mlflow import MlflowClient

from fraud import registry


@pytest.fixture(scope="module")
def flow_run(pipeline_repo):
    proc = pipeline_repo.run("fraud", "flow", timeout=900)
    return proc


def test_training_flow_runs_without_a_prefect_server_configured(flow_run):
    text = flow_run.stdout + flow_run.stderr
    assert "Completed" in text
    for task_name in (
        "fetch DVC data",
        "validate data contract",
        "train XGBoost",
        "register and gate in MLflow",
    ):
        assert task_name in text


def test_flow_and_dvc_repro_give_the_same_metrics_from_the_same_data(pipeline_repo, flow_run):
    dvc_metrics = json.loads((pipeline_repo.path / "reports/metrics.json").read_text())
    flow_metrics = json.loads((pipeline_repo.path / "runs/flow/reports/metrics.json").read_text())
    for key in ("average_precision", "roc_auc", "card_precision_at_100", "threshold"):
        assert flow_metrics[key] == pytest.approx(dvc_metrics[key], rel=1e-9), key


def test_flow_registers_an_equal_model_as_challenger(pipeline_repo, flow_run):
    client = MlflowClient(tracking_uri=pipeline_repo.tracking_uri)
    reg = json.loads((pipeline_repo.path / "runs/flow/reports/registration.json").read_text())
    mv = client.get_model_version("fraud-detector", reg["version"])
    assert mv.tags[registry.TAG_DECISION] == "challenger"
    assert "does not beat the champion" in mv.tags[registry.TAG_REASON]
    assert str(client.get_model_version_by_alias("fraud-detector", "champion").version) == "1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_training_flow_run_is_recorded_on_a_prefect_server_when_api_url_is_set(
    pipeline_repo, tmp_path
):
    port = _free_port()
    env = {**pipeline_repo.env, "PREFECT_HOME": str(tmp_path / "prefect-server")}
    server = subprocess.Popen(
        ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail("prefect server did not start within 180 s")
        proc = subprocess.run(
            ["fraud", "flow"],
            cwd=pipeline_repo.path,
            env={**env, "PREFECT_API_URL": api},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
        assert [r["state_type"] for r in runs] == ["COMPLETED"]
        tasks = httpx.post(f"{api}/task_runs/filter", json={}, timeout=10).json()
        assert {"train XGBoost", "register and gate in MLflow"} <= {
            t["name"].rsplit("-", 1)[0] for t in tasks
        }
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
