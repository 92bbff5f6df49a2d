"""The window's Evidently report, built for real on small frames in the monitoring layout."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from monitoring.dashboard import add_snapshot as add_run
from monitoring.dashboard import dashboard_model, get_or_create_project, open_workspace
from monitoring.report import (
    ESTIMATED_AVERAGE_PRECISION_LOWER,
    MATURED_AVERAGE_PRECISION,
    ReportInputError,
    build_report,
    save_html,
)
from monitoring.ui import OFFLINE_ENV, main, ui_environment

WHEN = datetime(2018, 8, 15)
COLUMNS = {
    "TX_AMOUNT": ("wasserstein", 0.1),
    "TX_DURING_NIGHT": ("psi", 0.2),
    "score": ("psi", 0.2),
}


def _frame(
    n: int, *, amount_shift: float = 0.0, labelled: float = 1.0, seed: int = 0
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    fraud = rng.random(n) < 0.1
    score = np.where(fraud, rng.beta(5, 2, n), rng.beta(1, 10, n))
    label = pd.array(fraud.astype(int), dtype="Int64")
    label[rng.random(n) >= labelled] = pd.NA
    amount = rng.lognormal(3.5, 0.8, n) * (1 + amount_shift)
    return pd.DataFrame(
        {
            "tx_datetime": pd.date_range("2018-08-08", periods=n, freq="min"),
            "amount": amount,
            "score": score,
            "is_alert": score >= 0.5,
            "is_fraud": label,
            "TX_AMOUNT": amount,
            "TX_DURING_NIGHT": (rng.random(n) < 0.2).astype(float),
        }
    )


def _metrics(snapshot: Any) -> dict[str, Any]:
    return {m["metric_name"]: m["value"] for m in snapshot.dict()["metrics"]}


def _drift_tests(snapshot: Any) -> dict[str, str]:
    return {
        t["name"].removeprefix("Value Drift for column "): str(t["status"]).rsplit(".", 1)[-1]
        for t in snapshot.dict()["tests"]
        if t["name"].startswith("Value Drift for column ")
    }


@pytest.fixture(scope="module")
def shifted() -> Any:
    """Reference vs a current window whose amounts grew by half; 60% of its labels known."""
    return build_report(
        _frame(3000),
        _frame(1500, amount_shift=0.5, labelled=0.6, seed=1),
        columns=COLUMNS,
        timestamp=WHEN,
        performance={MATURED_AVERAGE_PRECISION: 0.71, ESTIMATED_AVERAGE_PRECISION_LOWER: 0.6},
    )


def test_shifted_amount_is_reported_drifted_with_the_given_method_and_the_others_not(
    shifted: Any,
) -> None:
    metrics = _metrics(shifted)
    assert metrics["ValueDrift(column=TX_AMOUNT,method=wasserstein,threshold=0.1)"] > 0.1
    assert metrics["ValueDrift(column=TX_DURING_NIGHT,method=psi,threshold=0.2)"] < 0.2
    assert _drift_tests(shifted) == {
        "TX_AMOUNT": "FAIL",
        "TX_DURING_NIGHT": "SUCCESS",
        "score": "SUCCESS",
    }


def test_each_column_is_computed_once_and_the_score_is_prediction_drift(shifted: Any) -> None:
    metrics = _metrics(shifted)
    drift = sorted(k for k in metrics if k.startswith("ValueDrift("))
    assert drift == [
        "ValueDrift(column=TX_AMOUNT,method=wasserstein,threshold=0.1)",
        "ValueDrift(column=TX_DURING_NIGHT,method=psi,threshold=0.2)",
        "ValueDrift(column=score,method=psi,threshold=0.2)",
    ]
    # Not the preset's legacy table, which computes every column again (see monitoring.report).
    assert not [k for k in metrics if k.startswith("DriftedColumnsCount(")]


def test_score_distribution_and_alert_rate_are_the_windows(shifted: Any) -> None:
    current = _frame(1500, amount_shift=0.5, labelled=0.6, seed=1)
    metrics = _metrics(shifted)
    assert metrics["MeanValue(column=is_alert)"] == pytest.approx(current["is_alert"].mean())
    assert metrics["MeanValue(column=score)"] == pytest.approx(current["score"].mean())
    assert metrics["QuantileValue(column=score,quantile=0.99)"] == pytest.approx(
        current["score"].quantile(0.99)
    )


def test_quality_is_measured_on_the_labelled_rows_only(shifted: Any) -> None:
    current = _frame(1500, amount_shift=0.5, labelled=0.6, seed=1)
    known = current[current["is_fraud"].notna()]
    frauds = known[known["is_fraud"] == 1]
    metrics = _metrics(shifted)
    assert metrics["LabelledRowsQuality(measure=recall)"] == pytest.approx(
        frauds["is_alert"].mean()
    )
    assert 0.5 < metrics["LabelledRowsQuality(measure=average_precision)"] <= 1.0


def test_values_computed_outside_evidently_are_metrics_of_the_snapshot(shifted: Any) -> None:
    metrics = _metrics(shifted)
    assert metrics["FraudMonitoringValue(name=matured_average_precision)"] == 0.71
    assert metrics["FraudMonitoringValue(name=estimated_average_precision_lower)"] == 0.6


def test_window_without_labels_reports_no_quality() -> None:
    snapshot = build_report(
        _frame(1000), _frame(500, labelled=0.0, seed=2), columns=COLUMNS, timestamp=WHEN
    )
    assert not [k for k in _metrics(snapshot) if k.startswith("LabelledRowsQuality")]


def test_html_is_written_whole_and_loads_nothing_from_elsewhere(
    shifted: Any, tmp_path: Path
) -> None:
    path = save_html(shifted, tmp_path / "reports" / "window.html")
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>") or "<html" in html[:500]
    assert not re.findall(r"""<script[^>]+src=["']?https?://""", html, flags=re.I)
    assert not re.findall(r"""<link[^>]+href=["']?https?://""", html, flags=re.I)
    assert "TX_AMOUNT" in html
    assert [p.name for p in path.parent.iterdir()] == ["window.html"]  # no temp file left


@pytest.mark.parametrize(
    ("columns", "field"),
    [
        ({"NOT_A_COLUMN": ("psi", 0.2)}, "NOT_A_COLUMN"),
        ({"TX_AMOUNT": ("no_such_method", 0.2)}, "TX_AMOUNT"),
        ({"TX_AMOUNT": ("psi", -1.0)}, "TX_AMOUNT"),
        ({}, "columns"),
    ],
)
def test_bad_column_settings_are_refused_naming_the_column(
    columns: dict[str, tuple[str, float]], field: str
) -> None:
    with pytest.raises(ReportInputError, match=field):
        build_report(_frame(200), _frame(200, seed=3), columns=columns, timestamp=WHEN)


def test_non_finite_outside_value_is_refused_naming_it() -> None:
    with pytest.raises(ReportInputError, match="matured_recall"):
        build_report(
            _frame(200),
            _frame(200, seed=3),
            columns=COLUMNS,
            timestamp=WHEN,
            performance={"matured_recall": float("nan")},
        )


def test_project_is_found_again_and_its_dashboard_not_duplicated(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")
    first = get_or_create_project(ws)
    again = get_or_create_project(open_workspace(tmp_path / "ws"))
    assert again.id == first.id
    stored = ws.get_dashboard(first.id)
    assert len(stored.panels) == len(dashboard_model().panels)
    assert [len(t.panels) for t in stored.tabs] == [len(t.panels) for t in dashboard_model().tabs]
    assert len(ws.list_projects()) == 1


def test_a_workspace_is_opened_once_per_process_and_afresh_when_its_directory_is_new(
    tmp_path: Path,
) -> None:
    import shutil

    ws = open_workspace(tmp_path / "ws")
    get_or_create_project(ws)
    assert open_workspace(tmp_path / "ws") is ws  # no second read of every snapshot
    shutil.rmtree(tmp_path / "ws")
    again = get_or_create_project(open_workspace(tmp_path / "ws"))
    assert (tmp_path / "ws" / str(again.id)).is_dir()  # made again on disk, not only in memory


def test_added_run_is_dated_by_the_windows_end_not_the_run(shifted: Any, tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")
    project = get_or_create_project(ws)
    ref = add_run(ws, project, shifted)
    run = ws.get_run(project.id, ref.id)
    assert run is not None and run.timestamp == WHEN


def test_ui_runs_offline_and_help_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    env = ui_environment({"PATH": "/bin"})
    assert env["DO_NOT_TRACK"] == "true" and env["ITERATIVE_DO_NOT_TRACK"] == "1"
    assert set(OFFLINE_ENV) <= set(env)
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert "--workspace" in capsys.readouterr().out
