"""The real `dvc repro` of the whole pipeline on tiny params, with a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from fraud import registry


@pytest.fixture(scope="module")
def client(pipeline_repo):
    mlflow.set_tracking_uri(pipeline_repo.tracking_uri)
    return MlflowClient(tracking_uri=pipeline_repo.tracking_uri)


def test_dvc_repro_registers_first_model_as_champion_with_lineage(pipeline_repo, client):
    mv = client.get_model_version_by_alias("fraud-detector", registry.ALIAS_CHAMPION)
    assert str(mv.version) == "1"
    lock = yaml.safe_load((pipeline_repo.path / "dvc.lock").read_text())
    raw_md5 = lock["stages"]["ingest"]["outs"][0]["md5"]
    assert mv.tags[registry.TAG_DATA_HASH] == raw_md5
    head = pipeline_repo.run("git", "rev-parse", "HEAD~1").stdout.strip()
    assert mv.tags[registry.TAG_GIT_COMMIT].startswith(head)
    assert len(mv.tags[registry.TAG_PARAMS_HASH]) == 64
    assert mv.tags[registry.TAG_DECISION] == "champion"
    assert "no current champion" in mv.tags[registry.TAG_REASON]
    assert mv.tags[registry.TAG_FEATURES].split(",")[0] == "TX_AMOUNT"
    assert 0 < float(mv.tags[registry.TAG_THRESHOLD]) < 1


def test_registered_run_has_model_card_metrics_and_feature_state(pipeline_repo, client):
    mv = client.get_model_version("fraud-detector", "1")
    run = client.get_run(mv.run_id)
    assert run.data.metrics["average_precision"] > 0.3
    assert "prequential.average_precision" in run.data.metrics
    paths = {a.path for a in client.list_artifacts(mv.run_id)}
    assert {"model_card.md", "evaluation", "feature_state", "model_info"} <= paths
    card = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="model_card.md")
    text = Path(card).read_text()
    assert "average precision" in text and "handbook" in text.lower()
    assert "Alert when score >=" in text


def test_metrics_and_plots_are_written_for_dvc(pipeline_repo):
    metrics = json.loads((pipeline_repo.path / "reports/metrics.json").read_text())
    for key in (
        "roc_auc",
        "average_precision",
        "card_precision_at_100",
        "threshold",
        "at_threshold.f1",
        "at_threshold.recall",
        "at_threshold.expected_cost",
    ):
        assert key in metrics
    out = pipeline_repo.run("dvc", "metrics", "show", "--json").stdout
    assert "average_precision" in out
    for name in ("pr_curve", "roc_curve", "calibration", "feature_importance"):
        rows = json.loads((pipeline_repo.path / f"reports/plots/{name}.json").read_text())
        assert len(rows) > 1
    png = (pipeline_repo.path / "reports/plots/evaluation.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_second_dvc_repro_with_nothing_changed_does_nothing(pipeline_repo, client):
    before = len(client.search_model_versions("name='fraud-detector'"))
    out = pipeline_repo.run("dvc", "repro").stdout
    assert "didn't change, skipping" in out
    assert "Running stage" not in out
    assert len(client.search_model_versions("name='fraud-detector'")) == before


def test_dvc_push_and_pull_roundtrip_through_local_remote(pipeline_repo):
    pipeline_repo.run("dvc", "push")
    raw = pipeline_repo.path / "data/raw/transactions.parquet"
    expected = raw.read_bytes()
    raw.unlink()
    pipeline_repo.run("dvc", "pull", "data/raw/transactions.parquet")
    assert raw.read_bytes() == expected


def test_worse_experiment_is_registered_as_challenger_not_champion(pipeline_repo, client):
    """`dvc exp run -S` trains a deliberately weak model; the gate keeps the champion."""
    # --temp: the experiment runs in a copy and leaves the workspace's outputs as they were.
    pipeline_repo.run(
        "dvc",
        "exp",
        "run",
        "--temp",
        "-S",
        "train.n_estimators=2",
        "-S",
        "train.max_depth=1",
        "-n",
        "weak",
    )
    versions = client.search_model_versions("name='fraud-detector'")
    newest = max(versions, key=lambda v: int(v.version))
    assert newest.tags[registry.TAG_DECISION] == "challenger"
    reason = newest.tags[registry.TAG_REASON]
    assert "champion" in reason or "floor" in reason
    assert str(client.get_model_version_by_alias("fraud-detector", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("fraud-detector", "challenger").version) == str(
        newest.version
    )
    shown = pipeline_repo.run("dvc", "exp", "show", "--json").stdout
    assert "weak" in shown
    assert "up to date" in pipeline_repo.run("dvc", "status").stdout


def test_failed_validation_stops_pipeline_and_keeps_previous_outputs(pipeline_repo, tmp_path):
    raw = pd.read_parquet(pipeline_repo.path / "data/raw/transactions.parquet")
    bad = raw.head(500).copy()
    bad.loc[bad.index[10], "TX_AMOUNT"] = -12.5
    bad_path = tmp_path / "bad.csv"
    bad.to_csv(bad_path, index=False)
    features = pipeline_repo.path / "data/features/transactions.parquet"
    model = pipeline_repo.path / "models/model.ubj"
    before = (features.read_bytes(), model.read_bytes())
    params_file = pipeline_repo.path / "params.yaml"
    original = params_file.read_text()
    try:
        params = yaml.safe_load(original)
        params["ingest"] = {"source": "file", "path": str(bad_path)}
        params_file.write_text(yaml.safe_dump(params))
        proc = pipeline_repo.run("dvc", "repro", check=False)
        assert proc.returncode != 0
        text = proc.stdout + proc.stderr
        assert "TX_AMOUNT" in text and "must not be negative" in text
        assert (features.read_bytes(), model.read_bytes()) == before
    finally:
        params_file.write_text(original)
        pipeline_repo.run("git", "checkout", "--", ".")
        pipeline_repo.run("dvc", "checkout", "-f", check=False)
        assert "up to date" in pipeline_repo.run("dvc", "status").stdout
