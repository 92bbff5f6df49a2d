"""The verdict: JSON round trip, atomic writes, and the one-screen summary."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from monitoring import verdict as verdict_module
from monitoring.checks import Check
from monitoring.estimate import Estimate, calibration_check
from monitoring.performance import CohortMetrics
from monitoring.policy import Decision
from monitoring.verdict import Verdict, render_summary

DAY = dt.datetime(2018, 8, 20)


def make_verdict(triggered: bool = True) -> Verdict:
    checks = [
        Check("drift:TX_AMOUNT", "data", "wasserstein", 0.31, 0.1, True, column="TX_AMOUNT"),
        Check(
            "drift:TX_DURING_WEEKEND",
            "data",
            "wasserstein",
            0.01,
            0.1,
            False,
            column="TX_DURING_WEEKEND",
        ),
        Check("prediction:score", "prediction", "psi", 0.05, 0.2, False),
        Check(
            "performance:average_precision",
            "performance",
            "ap_drop",
            0.02,
            0.15,
            False,
            detail={"frauds": 130},
        ),
        Check("estimate:average_precision", "estimate", "cbpe_floor", float("nan"), 0.5, False),
    ]
    cohort = CohortMetrics(
        DAY - dt.timedelta(days=8),
        DAY - dt.timedelta(days=7),
        7000,
        45,
        45,
        60,
        True,
        0.71,
        0.69,
        0.52,
        0.26,
        100,
    )
    thin = CohortMetrics(
        DAY - dt.timedelta(days=9),
        DAY - dt.timedelta(days=8),
        6900,
        3,
        3,
        55,
        False,
        None,
        None,
        None,
        None,
        100,
    )
    estimate = Estimate(
        DAY - dt.timedelta(days=1),
        DAY,
        7100,
        58,
        44.2,
        0.70,
        0.62,
        0.77,
        0.72,
        0.66,
        0.79,
        0.55,
        0.5,
        0.6,
    )
    return Verdict.build(
        window_start=DAY - dt.timedelta(days=14),
        window_end=DAY,
        as_of=DAY,
        model_name="fraud-detector",
        model_version="3",
        reference="champion v3 test week 2018-08-08..14",
        checks=checks,
        cohorts=[thin, cohort],
        estimates=[estimate],
        decision=Decision(
            triggered,
            ["drift:TX_AMOUNT fired: wasserstein = 0.31 (threshold 0.1)"],
            ["drift:TX_AMOUNT"],
            1,
        ),
        calibration=calibration_check([0.1, 0.2, 0.9, 0.8], [0, 0, 1, 1], bins=2),
    )


def test_drift_is_detected_when_any_check_fired_with_one_reason_each() -> None:
    v = make_verdict()
    assert v.drift_detected
    assert v.drift_reasons == [
        "drift:TX_AMOUNT on TX_AMOUNT fired: wasserstein = 0.31 (threshold 0.1)"
    ]
    assert v.retrain_triggered and v.retrain_reasons


def test_json_round_trip_keeps_everything_and_is_strict_json(tmp_path: Path) -> None:
    v = make_verdict()
    text = v.to_json()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    path = tmp_path / "verdict.json"
    v.write(path)
    back = Verdict.read(path)
    assert back.to_json() == text
    assert back.cohorts[1]["average_precision"] == 0.71
    assert back.checks[0] == v.checks[0]
    checks = back.check_objects()
    assert checks[0] == Check.from_dict(v.checks[0])
    assert checks[-1].statistic != checks[-1].statistic  # NaN came back as NaN


def test_a_failing_write_leaves_the_previous_verdict_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "verdict.json"
    old = make_verdict(triggered=False)
    old.write(path)
    before = path.read_text()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(verdict_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        make_verdict(triggered=True).write(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["verdict.json"]  # no temporary file left


def test_reading_a_verdict_with_an_unknown_key_names_it(tmp_path: Path) -> None:
    data = json.loads(make_verdict().to_json())
    data["retrain"] = True
    path = tmp_path / "v.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="retrain"):
        Verdict.read(path)


def test_summary_rows_cover_drift_performance_estimate_and_decision() -> None:
    rows = make_verdict().summary_rows()
    sections = [r[0] for r in rows]
    assert sections.count("data drift") == 2 and "prediction drift" in sections
    assert ("data drift", "TX_AMOUNT", "wasserstein 0.310 / 0.100", "DRIFT") in rows
    matured = [r for r in rows if r[0] == "matured"]
    assert "3 frauds: too few to count" in matured[0][2]
    assert "AP 0.710" in matured[1][2] and "CP@100 0.260" in matured[1][2]
    (estimate,) = [r for r in rows if r[0] == "estimate" and r[1] == "2018-08-19"]
    assert "AP 0.700 [0.620, 0.770]" in estimate[2]
    assert rows[-1][:2] == ("decision", "RETRAIN")


def test_render_summary_prints_one_table() -> None:
    out = io.StringIO()
    render_summary(make_verdict(), Console(file=out, width=160, color_system=None))
    text = out.getvalue()
    assert "fraud-detector v3" in text and "TX_AMOUNT" in text and "RETRAIN" in text
