"""The label-free estimate (CBPE): calibration, recalibration, the estimate against realised
performance on labels drawn from the scores, and the estimate-vs-realised gap."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from fraud import metrics
from monitoring.estimate import (
    EstimateConfig,
    Recalibrator,
    calibration_check,
    estimate_checks,
    estimate_cohorts,
    estimate_performance,
)
from monitoring.frames import ALERT, CUSTOMER, LABEL, LABEL_KNOWN_AT, SCORE, TIME
from monitoring.performance import PerformanceConfig

T0 = dt.datetime(2018, 8, 1)
T1 = dt.datetime(2018, 8, 2)
CFG = EstimateConfig(n_draws=200, seed=0)


def probabilities(n: int, rng: np.random.Generator) -> np.ndarray:
    """Fraud probabilities shaped like a fraud model's: most near 0, a few high."""
    return np.where(rng.random(n) < 0.02, rng.beta(3, 2, n), rng.beta(0.5, 200, n))


def test_estimate_equals_realised_performance_in_expectation_on_calibrated_scores() -> None:
    inside = {"ap": 0, "recall": 0}
    estimated, realised = [], []
    seeds = range(40)
    for seed in seeds:
        rng = np.random.default_rng(seed)
        p = probabilities(4000, rng)
        alert = p >= 0.3
        est = estimate_performance(
            p, alert, CFG.model_copy(update={"seed": seed}), start=T0, end=T1
        )
        y = (rng.random(len(p)) < p).astype(int)  # the truth: labels drawn from the scores
        ap = metrics.average_precision(y, p)
        recall = float(y[alert].sum() / y.sum())
        inside["ap"] += est.average_precision_low <= ap <= est.average_precision_high
        inside["recall"] += est.recall_low <= recall <= est.recall_high
        estimated.append(est.average_precision)
        realised.append(ap)
    # a 90% interval: inside most of the time (binomial slack for 40 seeds)
    assert inside["ap"] >= 0.75 * len(seeds) and inside["recall"] >= 0.75 * len(seeds)
    assert np.mean(estimated) == pytest.approx(np.mean(realised), abs=0.02)


def test_estimate_of_certain_scores_is_exact() -> None:
    p = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    alert = np.array([1, 0, 0, 1, 1, 0], dtype=bool)
    est = estimate_performance(p, alert, CFG, start=T0, end=T1)
    assert est.expected_frauds == 3
    assert est.recall == est.recall_low == est.recall_high == pytest.approx(2 / 3)
    assert est.precision == est.precision_low == pytest.approx(2 / 3)
    assert est.average_precision == est.average_precision_high == pytest.approx(1.0)


def test_estimate_rejects_scores_that_are_not_probabilities() -> None:
    with pytest.raises(ValueError, match="scores"):
        estimate_performance(np.array([0.2, 1.5]), np.array([0, 1]), CFG, start=T0, end=T1)
    with pytest.raises(ValueError, match="alerts"):
        estimate_performance(np.array([0.2, 0.5]), np.array([1]), CFG, start=T0, end=T1)


def test_calibration_check_passes_calibrated_scores_and_flags_overconfident_ones() -> None:
    rng = np.random.default_rng(1)
    p = probabilities(50_000, rng)
    y = (rng.random(len(p)) < p).astype(int)
    good = calibration_check(p, y, bins=10)
    assert good.acceptable and good.relative_ece < 0.25
    bad = calibration_check(np.sqrt(p), y, bins=10)  # every score inflated
    assert not bad.acceptable and bad.relative_ece > 1
    check = bad.as_check()
    assert (
        check.fired and check.name == "estimate:calibration" and check.statistic == bad.relative_ece
    )


def test_isotonic_recalibration_fixes_ece_without_changing_ap() -> None:
    rng = np.random.default_rng(2)
    fit_p, test_p = probabilities(50_000, rng), probabilities(50_000, rng)
    fit_y = (rng.random(len(fit_p)) < fit_p).astype(int)
    test_y = (rng.random(len(test_p)) < test_p).astype(int)
    distorted = np.sqrt  # a monotone miscalibration
    recal = Recalibrator.fit(distorted(fit_p), fit_y)
    before = calibration_check(distorted(test_p), test_y)
    fixed_scores = recal(distorted(test_p))
    after = calibration_check(fixed_scores, test_y)
    assert not before.acceptable and after.acceptable
    assert after.ece < before.ece / 5
    assert metrics.average_precision(test_y, fixed_scores) == metrics.average_precision(
        test_y, distorted(test_p)
    )


def test_recalibration_is_strictly_increasing_and_round_trips() -> None:
    rng = np.random.default_rng(3)
    p = probabilities(5000, rng)
    recal = Recalibrator.fit(p, (rng.random(len(p)) < p).astype(int))
    grid = np.linspace(0, 1, 2001)
    assert np.all(np.diff(recal(grid)) > 0)
    again = Recalibrator.from_dict(recal.as_dict())
    assert np.array_equal(again(grid), recal(grid))


def window(
    days: int,
    rows_per_day: int,
    seed: int,
    truth: str = "calibrated",
) -> pd.DataFrame:
    """A log window whose frauds are drawn from the scores (`calibrated`) or from a distorted
    relation (`distorted`: the scores say nothing about which transactions are frauds)."""
    rng = np.random.default_rng(seed)
    n = days * rows_per_day
    times = T0 + pd.to_timedelta(np.sort(rng.uniform(0, days * 86400, n)), unit="s")
    p = probabilities(n, rng)
    q = p if truth == "calibrated" else rng.permutation(p)
    fraud = rng.random(n) < q
    return pd.DataFrame(
        {
            TIME: times,
            CUSTOMER: rng.integers(0, 2000, n),
            SCORE: p,
            ALERT: (p >= 0.3).astype(np.int64),
            LABEL: pd.array(np.where(fraud, 1, pd.NA), dtype="Int64"),
            LABEL_KNOWN_AT: times.where(fraud) + pd.Timedelta(days=1),
        }
    )


PERF = PerformanceConfig(maturity_days=7, min_frauds=20, check_cohorts=3)
AS_OF = T0 + dt.timedelta(days=14)  # days 0..6 matured, 7..13 recent


def test_estimate_covers_only_cohorts_without_matured_labels() -> None:
    frame = window(days=14, rows_per_day=1000, seed=0)
    estimates = estimate_cohorts(frame, AS_OF, PERF, CFG)
    assert [e.start.date() for e in estimates] == [
        (T0 + dt.timedelta(days=d)).date() for d in range(7, 14)
    ]
    assert not any(e.matured for e in estimates)


def test_gap_does_not_fire_when_labels_follow_the_scores() -> None:
    frame = window(days=14, rows_per_day=3000, seed=5)
    checks = {c.name: c for c in estimate_checks(frame, AS_OF, PERF, CFG)}
    assert set(checks) == {
        "estimate:average_precision",
        "estimate:recall",
        "estimate:ap_gap",
        "estimate:recall_gap",
    }
    assert not checks["estimate:ap_gap"].fired
    assert not checks["estimate:recall_gap"].fired


def test_gap_fires_when_labels_are_drawn_from_distorted_scores() -> None:
    frame = window(days=14, rows_per_day=3000, seed=5, truth="distorted")
    checks = {c.name: c for c in estimate_checks(frame, AS_OF, PERF, CFG)}
    gap = checks["estimate:ap_gap"]
    assert gap.fired and gap.kind == "estimate"
    assert gap.statistic == pytest.approx(gap.detail["estimate"] - gap.detail["realised"])
    assert gap.detail["realised"] < gap.detail["low"]
    assert checks["estimate:recall_gap"].fired
    # the label-free floors cannot see it: the scores look as confident as ever
    assert not checks["estimate:average_precision"].fired


def test_estimate_floor_fires_when_scores_lose_confidence() -> None:
    frame = window(days=14, rows_per_day=1000, seed=6)
    frame[SCORE] = 0.01 + 0.001 * np.random.default_rng(0).random(len(frame))
    frame[ALERT] = 0
    checks = {c.name: c for c in estimate_checks(frame, AS_OF, PERF, CFG)}
    assert checks["estimate:average_precision"].fired
    assert checks["estimate:recall"].fired


def test_config_is_strict_and_checks_quantile_order() -> None:
    with pytest.raises(ValidationError, match="n_draw"):
        EstimateConfig(n_draw=100)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="lower_quantile"):
        EstimateConfig(lower_quantile=0.9, upper_quantile=0.1)
