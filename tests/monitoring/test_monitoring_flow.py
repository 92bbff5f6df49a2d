"""The Prefect monitoring flows (`monitoring/flows.py`) and their daily deployment
(`monitoring/deploy.py`).

One real run, in a subprocess as a user starts it, on Prefect's temporary local server (its own
PREFECT_HOME, no PREFECT_API_URL): `replay` over the last two days of a real prediction log whose
amounts grew, against the tiny pipeline's registered champion. The first day triggers
retraining, which cannot start without a server and says so; the second is in the cooldown.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fraud import registry, schema
from monitoring.flows import (
    SCHEDULED,
    TRAINING_DEPLOYMENT,
    MonitoringSummary,
    monitoring,
    request_retraining,
    window_end,
)
from monitoring.verdict import Verdict
from tests.monitoring.prediction_logs import log_scored_frame

DRIFT_FROM = pd.Timestamp("2018-06-01")  # the tiny data ends on 2018-06-09
DAYS = ("2018-06-08", "2018-06-09")


def write_prediction_log(pipeline_repo, path: Path) -> None:
    """The tiny data after the champion's training, amounts x1.5 from DRIFT_FROM, scored by the
    champion into a real prediction log, with every fraud's label sent two days later."""
    from monitoring.sources import file_window
    from tests.fraud.conftest import tracking_uri

    rows = pd.read_parquet(pipeline_repo.path / "data/raw/transactions.parquet")
    rows.loc[rows[schema.TX_DATETIME] >= DRIFT_FROM, schema.TX_AMOUNT] *= 1.5
    source = path.with_suffix(".parquet")
    rows.to_parquet(source, index=False)
    with tracking_uri(pipeline_repo.tracking_uri):
        version, booster = registry.load_version(registry.DEFAULT_MODEL_NAME)
        scored = file_window(source, version, booster).frame
    log_scored_frame(path, scored, version)


@pytest.fixture(scope="module")
def replayed(pipeline_repo, tmp_path_factory):
    """(the replay command's process, its summaries, the reports folder)."""
    tmp = tmp_path_factory.mktemp("monitoring-flow")
    log_path = tmp / "predictions.sqlite"
    write_prediction_log(pipeline_repo, log_path)
    reports = tmp / "reports"
    params = tmp / "params.yaml"
    monitor = {
        "reports_dir": str(reports),
        "workspace": str(tmp / "workspace"),
        "retrain": {"min_labelled_frauds": 1},
    }
    params.write_text(yaml.safe_dump({"monitor": monitor}))
    env = {**pipeline_repo.env, "PREFECT_HOME": str(tmp / "prefect")}
    env.pop("PREFECT_API_URL", None)
    args = ["--prediction-log", str(log_path), "--params", str(params), "--no-report", "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "monitoring.flows", "replay", *DAYS, *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summaries = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, summaries, reports


def test_replay_runs_the_monitoring_flow_once_per_day_on_the_temporary_server(replayed):
    proc, summaries, _ = replayed
    assert [s["window_start"][:10] for s in summaries] == list(DAYS)
    logs = proc.stdout + proc.stderr
    assert "Finished in state Completed()" in logs
    assert logs.count("Beginning subflow run") >= 2 or logs.count("Beginning flow run") >= 3


def test_the_run_logs_name_each_task_and_a_one_line_summary(replayed):
    proc, summaries, _ = replayed
    logs = proc.stderr + proc.stdout
    for name in (
        "load monitoring params",
        "check drift and performance, write verdict and report",
        "request retraining",
    ):
        assert name in logs, name
    assert f"window {summaries[0]['window_start']} .. {summaries[0]['window_end']}" in logs
    assert "replayed 2 days: drift on 2, retraining triggered on 2018-06-08" in logs


def test_each_summary_matches_the_verdict_file_it_names(replayed):
    _, summaries, reports = replayed
    for s in summaries:
        path = Path(s["verdict_path"])
        assert path.is_file() and path.is_relative_to(reports)
        v = Verdict.read(path)
        assert (s["window_start"], s["window_end"], s["as_of"]) == (
            v.window_start,
            v.window_end,
            v.as_of,
        )
        assert s["drift_detected"] == v.drift_detected
        assert s["retrain_triggered"] == v.retrain_triggered
        assert s["drift_reasons"] == v.drift_reasons
        assert s["retrain_reasons"] == v.retrain_reasons


def test_drifted_days_trigger_retraining_once_then_the_cooldown_holds(replayed):
    _, (first, second), _ = replayed
    assert first["drift_detected"] and second["drift_detected"]
    assert first["retrain_triggered"] and not second["retrain_triggered"]
    assert any("cooldown" in r for r in second["retrain_reasons"])
    assert second["retraining"] is None


def test_a_triggered_retraining_without_a_server_is_recorded_with_how_to_run_it(replayed):
    _, (first, _), _ = replayed
    assert first["retraining"].startswith("retraining requested but not started")
    assert "PREFECT_API_URL is unset" in first["retraining"]
    assert TRAINING_DEPLOYMENT in first["retraining"]


def test_a_trigger_exports_the_production_data_with_matured_labels_for_the_retraining(replayed):
    proc, (first, _), _ = replayed
    logs = proc.stderr + proc.stdout
    assert "export production data" in logs
    production = Path(first["verdict_path"]).parent / "production.parquet"
    frame = pd.read_parquet(production)
    assert list(frame.columns) == [*schema.RAW_COLUMNS, schema.TX_FRAUD]
    # Only cohorts matured by the window's as_of (7 days): none after as_of - 7 days.
    as_of = pd.Timestamp(first["as_of"])
    assert len(frame) and frame[schema.TX_DATETIME].max() < as_of - pd.Timedelta(days=7)
    assert int(frame[schema.TX_FRAUD].sum()) > 0


def _verdict(triggered: bool) -> Verdict:
    return Verdict(
        window_start="2018-06-08T00:00:00",
        window_end="2018-06-09T00:00:00",
        as_of="2018-06-09T00:00:00",
        model_name="fraud-detector",
        model_version="1",
        reference="test",
        checks=[],
        cohorts=[],
        estimates=[],
        drift_detected=triggered,
        drift_reasons=[],
        retrain_triggered=triggered,
        retrain_reasons=[],
    )


def test_request_retraining_without_a_server_returns_its_reason_and_starts_nothing():
    request = request_retraining(_verdict(True), deployment="training/nightly", api_url="")
    reason = request.message
    assert request.flow_run_id is None
    assert reason.startswith("retraining requested but not started: no Prefect server")
    assert "training/nightly" in reason and "make retrain PRODUCTION=" in reason


def test_request_retraining_of_a_verdict_that_did_not_trigger_asks_for_nothing():
    reason = request_retraining(_verdict(False), api_url="http://127.0.0.1:9/api").message
    assert reason == "retraining not requested: the verdict did not trigger it"


def test_request_retraining_with_an_unreachable_server_says_so_instead_of_failing():
    request = request_retraining(_verdict(True), api_url="http://127.0.0.1:9/api")
    reason = request.message
    assert request.flow_run_id is None
    assert reason.startswith("retraining requested but not started: retraining/production on")
    assert "127.0.0.1:9" in reason


def test_window_end_reads_dates_times_and_refuses_other_text_naming_the_parameter():
    assert window_end(None) is None
    assert window_end("2018-06-09") == dt.datetime(2018, 6, 9)
    assert window_end("2018-06-09T02:00:00+02:00") == dt.datetime(2018, 6, 9)
    with pytest.raises(ValueError, match=r"^end: 'yesterday' is not an ISO 8601"):
        window_end("yesterday")


def test_window_end_of_a_run_outside_a_schedule_is_todays_midnight_utc():
    assert window_end(SCHEDULED) == dt.datetime.combine(dt.datetime.now(dt.UTC).date(), dt.time())


def test_the_flow_refuses_a_bad_as_of_before_any_task_runs(tmp_path):
    with pytest.raises(ValueError, match="as_of: 'soon'"):
        monitoring.fn(params_path=str(tmp_path / "none.yaml"), as_of="soon")


def test_summary_line_says_drift_retraining_and_where_the_verdict_is():
    s = MonitoringSummary(
        "2018-06-08T00:00:00",
        "2018-06-09T00:00:00",
        "2018-06-09T00:00:00",
        "3",
        1234,
        True,
        True,
        ["drift:amount: psi 0.4 > 0.1"],
        ["retraining: drift:amount"],
        "/r/verdict.json",
        None,
    )
    line = s.line()
    assert "1,234 tx, model v3" in line and "drift DETECTED (drift:amount" in line
    assert "retraining TRIGGERED" in line and line.endswith("verdict /r/verdict.json")


# --- the daily deployment (monitoring/deploy.py) -------------------------------------------


def test_the_daily_deployment_declares_its_cron_schedule_and_the_scheduled_window():
    from monitoring.deploy import DEFAULT_CRON, monitoring_deployment

    d = monitoring_deployment(prediction_log="postgresql://monitor@db/fraud")

    assert d.name == "daily" and d.entrypoint == "monitoring.flows.monitoring"
    from prefect.client.schemas.schedules import CronSchedule

    [schedule] = d.schedules or []
    assert isinstance(schedule.schedule, CronSchedule)
    assert (schedule.schedule.cron, schedule.schedule.timezone) == (DEFAULT_CRON, "UTC")
    assert d.parameters == {
        "params_path": "params.yaml",
        "end": SCHEDULED,
        "write_report": True,
        "training_deployment": TRAINING_DEPLOYMENT,
        "prediction_log": "postgresql://monitor@db/fraud",
    }
    # The server validates a run's parameters against the flow's signature.
    assert set(d.parameters) <= set(d._parameter_openapi_schema.properties)


def test_a_deployment_with_a_bad_cron_is_refused_naming_it():
    from monitoring.deploy import monitoring_deployment

    with pytest.raises(ValueError, match=r"^cron: 'every day' is not a valid cron"):
        monitoring_deployment(cron="every day")


def test_deploy_dry_run_prints_the_deployment_without_serving():
    from typer.testing import CliRunner

    from monitoring.deploy import app

    out = CliRunner().invoke(app, ["--dry-run", "--name", "hourly", "--cron", "5 * * * *"])

    assert out.exit_code == 0, out.output
    shown = json.loads(out.stdout)
    assert shown["deployment"] == "monitoring/hourly"
    assert shown["schedules"] == [{"cron": "5 * * * *", "timezone": "UTC"}]


def test_deploy_without_a_prefect_server_exits_1_saying_a_schedule_needs_one():
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from typer.testing import CliRunner

    from monitoring.deploy import app

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        out = CliRunner().invoke(app, [])

    assert out.exit_code == 1
    assert out.stderr.startswith("error: PREFECT_API_URL is not set")
