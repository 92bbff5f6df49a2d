"""The drift benchmark: its figures from known outcomes, and a smoke run on a tiny world."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.drift.summary import (  # noqa: E402
    DETECTION_COLUMNS,
    RunOutcome,
    detection_figures,
    detection_rows,
    target_rows,
)
from benchmarks.drift_bench import SCENARIOS, main  # noqa: E402


def outcome(scenario: str, seed: int, fired_at: list[int]) -> RunOutcome:
    offsets = list(range(-3, 10))
    flags = [o in fired_at for o in offsets]
    return RunOutcome(scenario, seed, offsets, {"trigger": flags}, [])


def test_false_alarms_count_only_batches_before_the_onset_and_delays_count_from_the_reference():
    runs = [
        outcome("concept", 0, [-2, 8]),  # a false alarm, then 1 batch after onset + 7
        outcome("concept", 1, [7]),  # on the reference day
        outcome("concept", 2, []),  # missed: counts as the horizon + 1
    ]
    f = detection_figures(runs, "concept", "trigger", maturity_days=7)
    assert (f["false_alarms"], f["no_drift_batches"]) == (1, 9)
    assert f["detection_rate"] == pytest.approx(2 / 3)
    assert f["delays_reference"] == [1, 0, 3]
    assert f["delay_reference_median"] == 1


def test_every_batch_of_the_no_drift_scenario_is_a_false_alarm_candidate():
    f = detection_figures([outcome("none", 0, [5])], "none", "trigger", maturity_days=7)
    assert (f["false_alarms"], f["no_drift_batches"]) == (1, 13)
    assert "detection_rate" not in f


def test_a_trigger_false_alarm_rate_above_one_percent_fails_its_target():
    figures = {
        "none": {"trigger": detection_figures([outcome("none", 0, [5])], "none", "trigger", 7)}
    }
    rows = {r[0]: r[3] for r in target_rows(figures, cpu_10k=0.5)}
    assert rows["retrain-trigger false alarms, no drift"] == "FAIL"
    assert rows["CPU-seconds per 10k-row batch (drift + label checks)"] == "PASS"
    assert rows["concept drift, batches after labels make it detectable"] == "n/a"


@pytest.mark.slow
def test_a_tiny_run_reports_every_scenario_and_detector_and_writes_its_json(tmp_path: Path):
    out = tmp_path / "drift.json"
    results = main(
        [
            "--quick",
            "--seeds", "1",
            "--days", "5",
            "--pre-days", "2",
            "--no-evidently",
            "--workers", "1",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert set(results["figures"]) == set(SCENARIOS)
    rows = detection_rows(results["figures"])
    assert len(rows) == 3 * len(SCENARIOS)  # three detectors, Evidently skipped
    assert all(len(r) == len(DETECTION_COLUMNS) for r in rows)
    assert {r[0] for r in rows} == set(SCENARIOS)
    assert [r[3] for r in results["targets"]] and all(
        r[3] in {"PASS", "FAIL", "n/a"} for r in results["targets"]
    )
    assert len(results["batches"]) == 5 * len(SCENARIOS)
    assert results["cost"]["10000"]["cpu_total"] > 0
    written = json.loads(out.read_text())
    assert written["settings"]["seeds"] == 1
