"""The monitoring job end to end (`monitoring/job.py`, `python -m monitoring run`): real model
and reference from the tiny pipeline's MLflow store, real prediction log, real Evidently report
and workspace. A window without drift gives a clean verdict; the same window with its amounts
scaled is flagged and triggers retraining with reasons; a bad input is one line and exit 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fraud import registry, schema
from monitoring import frames
from monitoring.config import MonitorConfig
from monitoring.job import run_monitor
from monitoring.verdict import Verdict
from tests.monitoring.prediction_logs import log_scored_frame


@pytest.fixture
def store(pipeline_repo):
    from tests.fraud.conftest import tracking_uri

    with tracking_uri(pipeline_repo.tracking_uri):
        yield pipeline_repo


def later_rows(pipeline_repo) -> pd.DataFrame:
    """The tiny data set, whole: its first 44 days are the features' history, the rest (from
    mid-May, after the tiny champion's training window) is monitored."""
    return pd.read_parquet(pipeline_repo.path / "data/raw/transactions.parquet")


def config(tmp_path: Path, **kw) -> MonitorConfig:
    base = {"reports_dir": tmp_path / "reports", "workspace": tmp_path / "workspace"}
    return MonitorConfig.model_validate({**base, **kw})


def test_a_file_without_drift_gets_a_clean_verdict_a_report_and_a_dashboard_run(
    store, tmp_path: Path
):
    path = tmp_path / "later.parquet"
    later_rows(store).to_parquet(path, index=False)
    cfg = config(tmp_path, retrain={"min_labelled_frauds": 1})

    result = run_monitor(cfg, input_path=path)

    v = Verdict.read(result.verdict_path)
    assert v == result.verdict
    assert not v.drift_detected and not v.retrain_triggered, v.drift_reasons
    assert v.model_name == registry.DEFAULT_MODEL_NAME and v.model_version == "1"
    kinds = {c["kind"] for c in v.checks}
    assert {"data", "prediction"} <= kinds
    assert result.report_path is not None and result.report_path.stat().st_size > 100_000
    assert json.loads((cfg.reports_dir / "latest.json").read_text())["as_of"] == v.as_of
    from evidently.ui.workspace import Workspace

    ws = Workspace(str(cfg.workspace))
    project = ws.search_project(cfg.project)[0]
    assert len(ws.list_runs(project.id)) == 1


def test_the_same_file_with_amounts_scaled_is_flagged_and_triggers_retraining_with_reasons(
    store, tmp_path: Path
):
    rows = later_rows(store)
    later = rows[schema.TX_DATETIME] >= pd.Timestamp("2018-05-20")
    rows.loc[later, schema.TX_AMOUNT] *= 1.5
    path = tmp_path / "drifted.parquet"
    rows.to_parquet(path, index=False)
    cfg = config(tmp_path, retrain={"min_labelled_frauds": 1})

    v = run_monitor(cfg, input_path=path, write_report=False).verdict

    assert v.drift_detected
    fired = {c["name"] for c in v.checks if c["fired"]}
    assert "drift:amount" in fired and "drift:score" in fired
    assert any("amount" in r for r in v.drift_reasons)
    assert v.retrain_triggered
    assert any(r.startswith("retraining:") for r in v.retrain_reasons)
    # A rerun of the same window (after a crash, or by hand) decides as the run did: its own
    # trigger is no cooldown for it, and its request carries the same idempotency key.
    again = run_monitor(cfg, input_path=path, write_report=False).verdict
    assert again.retrain_triggered and again.retrain_reasons == v.retrain_reasons


def test_a_log_run_checks_the_latest_day_with_the_labels_known_by_then(store, tmp_path: Path):
    from monitoring.sources import file_window

    version, booster = registry.load_version(registry.DEFAULT_MODEL_NAME)
    path = tmp_path / "later.parquet"
    later_rows(store).to_parquet(path, index=False)
    scored = file_window(path, version, booster).frame
    log_path = tmp_path / "predictions.sqlite"
    log_scored_frame(log_path, scored, version)

    v = run_monitor(config(tmp_path), prediction_log=str(log_path), write_report=False).verdict

    last_day = scored[frames.TIME].max().floor("D")
    assert pd.Timestamp(v.window_start) == last_day
    assert pd.Timestamp(v.window_end) == last_day + pd.Timedelta(days=1)
    assert v.extra["transactions"] == int((scored[frames.TIME] >= last_day).sum())
    assert v.cohorts, "cohorts older than the maturity are measured with their labels"
    assert all(c["frauds"] > 0 for c in v.cohorts)


def test_the_command_line_says_in_one_line_what_is_wrong_and_exits_1(store, tmp_path: Path):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "monitoring", "run", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )

    missing = run("--prediction-log", str(tmp_path / "none.sqlite"))
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"error: no prediction log at {tmp_path / 'none.sqlite'}"
    ]
    (tmp_path / "params.yaml").write_text("monitor:\n  window_dayz: 2\n")
    bad = run("--input", "x.csv")
    assert bad.returncode == 1
    assert "monitor.window_dayz" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    wrong = run("--end", "yesterday")
    assert wrong.returncode == 2 and "--end" in wrong.stderr
