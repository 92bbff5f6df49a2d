"""The Prefect `training` flow: a real flow run on Prefect's temporary local server."""

from __future__ import annotations

import json

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
