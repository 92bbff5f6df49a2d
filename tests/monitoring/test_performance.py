"""Label maturity and the performance of matured cohorts, on hand-built prediction-log frames."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from fraud import metrics, schema
from monitoring.frames import (
    ALERT,
    CUSTOMER,
    LABEL,
    LABEL_KNOWN_AT,
    SCORE,
    THRESHOLD,
    TIME,
)
from monitoring.performance import (
    PerformanceConfig,
    ReferencePerformance,
    cohort_performance,
    matured_frauds,
    performance_checks,
    pooled_performance,
)

DAY = pd.Timestamp("2018-08-01")


def log_frame(
    days: int = 1,
    per_day: int = 400,
    fraud_rate: float = 0.1,
    seed: int = 0,
    start: pd.Timestamp = DAY,
    known_after_days: float = 2.0,
) -> pd.DataFrame:
    """`days` days of scored transactions whose labels (frauds only, as feedback sends them)
    are known `known_after_days` after each transaction."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    times = start + pd.to_timedelta(np.sort(rng.uniform(0, days * 86400, n)), unit="s")
    fraud = rng.random(n) < fraud_rate
    score = np.clip(np.where(fraud, rng.beta(4, 2, n), rng.beta(1, 6, n)), 0, 1)
    label = pd.array(np.where(fraud, 1, pd.NA), dtype="Int64")
    return pd.DataFrame(
        {
            TIME: times,
            CUSTOMER: rng.integers(0, 150, n),
            SCORE: score,
            ALERT: (score >= 0.5).astype(np.int64),
            THRESHOLD: 0.5,
            LABEL: label,
            LABEL_KNOWN_AT: times.where(fraud) + pd.Timedelta(days=known_after_days),
        }
    )


CFG = PerformanceConfig(maturity_days=7, min_frauds=5, check_cohorts=1)


def test_cohort_three_days_old_is_not_matured_eight_days_old_is() -> None:
    frame = log_frame(days=1)
    day_end = DAY + pd.Timedelta(days=1)
    assert cohort_performance(frame, day_end + pd.Timedelta(days=3), CFG) == []
    matured = cohort_performance(frame, day_end + pd.Timedelta(days=8), CFG)
    assert [c.start for c in matured] == [DAY.to_pydatetime()]


def test_cohort_matures_exactly_maturity_days_after_its_end() -> None:
    frame = log_frame(days=1)
    day_end = DAY + pd.Timedelta(days=1)
    assert cohort_performance(frame, day_end + pd.Timedelta(days=7, seconds=-1), CFG) == []
    assert len(cohort_performance(frame, day_end + pd.Timedelta(days=7), CFG)) == 1


def test_only_the_matured_days_of_a_window_are_measured() -> None:
    frame = log_frame(days=10)
    as_of = DAY + pd.Timedelta(days=10)  # days 0..2 ended >= 7 days before
    cohorts = cohort_performance(frame, as_of, CFG)
    assert [c.start.date() for c in cohorts] == [
        (DAY + pd.Timedelta(days=d)).date() for d in range(3)
    ]


def test_unlabelled_transactions_of_a_matured_cohort_count_as_genuine() -> None:
    frame = log_frame()
    (cohort,) = cohort_performance(frame, DAY + pd.Timedelta(days=9), CFG)
    truth = frame[LABEL].fillna(0).to_numpy(dtype=int)
    assert cohort.frauds == truth.sum()
    assert cohort.labelled == truth.sum()  # only the frauds carry a label
    assert cohort.transactions == len(frame)
    assert cohort.average_precision == pytest.approx(
        metrics.average_precision(truth, frame[SCORE].to_numpy())
    )


def test_labels_known_after_as_of_are_ignored() -> None:
    frame = log_frame(known_after_days=2)
    late = frame[LABEL].notna() & (frame[TIME] >= DAY + pd.Timedelta(hours=12))
    frame.loc[late, LABEL_KNOWN_AT] = DAY + pd.Timedelta(days=30)
    as_of = DAY + pd.Timedelta(days=9)
    (cohort,) = cohort_performance(frame, as_of, CFG)
    assert cohort.frauds == int(frame[LABEL].notna().sum() - late.sum())
    (later,) = cohort_performance(frame, DAY + pd.Timedelta(days=31), CFG)
    assert later.frauds == int(frame[LABEL].notna().sum())


def test_a_genuine_label_overrides_nothing_and_stays_genuine() -> None:
    frame = log_frame()
    frame[LABEL] = frame[LABEL].fillna(0)  # every transaction labelled, known at once
    frame[LABEL_KNOWN_AT] = frame[TIME]
    (cohort,) = cohort_performance(frame, DAY + pd.Timedelta(days=9), CFG)
    assert cohort.labelled == len(frame)
    assert cohort.frauds == int(frame[LABEL].sum())


def test_cohort_metrics_equal_fraud_metrics() -> None:
    frame = log_frame(per_day=600, seed=3)
    (cohort,) = cohort_performance(frame, DAY + pd.Timedelta(days=9), CFG)
    y = frame[LABEL].fillna(0).to_numpy(dtype=int)
    s = frame[SCORE].to_numpy()
    at = metrics.metrics_at_threshold(y, s, 0.5, metrics.CostModel())
    cards = pd.DataFrame(
        {schema.TX_DATETIME: frame[TIME], schema.CUSTOMER_ID: frame[CUSTOMER], schema.TX_FRAUD: y}
    )
    assert cohort.average_precision == pytest.approx(metrics.average_precision(y, s))
    assert cohort.recall == pytest.approx(at.recall)
    assert cohort.precision == pytest.approx(at.precision)
    assert cohort.alerts == at.alerts
    assert cohort.card_precision_at_k == pytest.approx(metrics.card_precision_at_k(cards, s, k=100))


def test_recall_and_precision_follow_the_logged_alerts_not_the_score() -> None:
    frame = log_frame(seed=4)
    frame[ALERT] = 0  # e.g. a threshold of 1.0 was in force: nothing was alerted
    (cohort,) = cohort_performance(frame, DAY + pd.Timedelta(days=9), CFG)
    assert cohort.recall == 0.0 and cohort.precision == 0.0 and cohort.alerts == 0


def test_cohort_with_too_few_frauds_has_no_metrics() -> None:
    frame = log_frame(per_day=200, fraud_rate=0.01, seed=1)
    cfg = PerformanceConfig(min_frauds=50)
    (cohort,) = cohort_performance(frame, DAY + pd.Timedelta(days=9), cfg)
    assert not cohort.counted
    assert cohort.average_precision is None and cohort.recall is None
    assert performance_checks(frame, DAY + pd.Timedelta(days=9), REF, cfg) == []


def test_matured_frauds_sums_the_cohorts() -> None:
    frame = log_frame(days=4)
    cohorts = cohort_performance(frame, DAY + pd.Timedelta(days=12), CFG)
    assert len(cohorts) == 4
    assert matured_frauds(cohorts) == int(frame[LABEL].notna().sum())


REF = ReferencePerformance(average_precision=0.8, recall=0.7, description="champion test week")


def test_pooled_performance_takes_the_latest_matured_cohorts() -> None:
    frame = log_frame(days=6)
    cfg = CFG.model_copy(update={"check_cohorts": 2})
    pool = pooled_performance(frame, DAY + pd.Timedelta(days=12), cfg)  # days 0..4 matured
    assert pool is not None
    assert pool.start == (DAY + pd.Timedelta(days=3)).to_pydatetime()
    assert pool.end == (DAY + pd.Timedelta(days=5)).to_pydatetime()
    rows = frame[(frame[TIME] >= DAY + pd.Timedelta(days=3)) & (frame[TIME] < pool.end)]
    assert pool.transactions == len(rows)


def test_performance_checks_fire_when_scores_lose_their_ranking() -> None:
    frame = log_frame(seed=2)
    as_of = DAY + pd.Timedelta(days=9)
    healthy = {c.name: c for c in performance_checks(frame, as_of, REF, CFG)}
    assert set(healthy) == {"performance:average_precision", "performance:recall"}
    assert not any(c.fired for c in healthy.values())
    broken = frame.copy()
    broken[SCORE] = np.random.default_rng(0).random(len(frame))  # no relation to fraud
    broken[ALERT] = (broken[SCORE] >= 0.9).astype(np.int64)
    fired = {c.name: c for c in performance_checks(broken, as_of, REF, CFG)}
    ap = fired["performance:average_precision"]
    assert ap.fired and ap.kind == "performance"
    assert ap.statistic == pytest.approx(REF.average_precision - ap.detail["value"])
    assert fired["performance:recall"].fired
    assert fired["performance:recall"].statistic < CFG.min_recall


def test_reference_from_run_metrics_names_a_missing_key() -> None:
    ref = ReferencePerformance.from_metrics(
        {"average_precision": 0.73, "at_threshold.recall": 0.72}, "v1"
    )
    assert (ref.average_precision, ref.recall) == (0.73, 0.72)
    with pytest.raises(ValueError, match="recall"):
        ReferencePerformance.from_metrics({"average_precision": 0.73}, "v1")


def test_config_is_strict_and_names_the_bad_key() -> None:
    with pytest.raises(ValidationError, match="maturity_day"):
        PerformanceConfig(maturity_day=7)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="cohort_days"):
        PerformanceConfig(cohort_days=0)


def test_a_frame_without_labels_is_rejected_naming_the_column() -> None:
    frame = log_frame().drop(columns=[LABEL])
    with pytest.raises(ValueError, match="is_fraud"):
        cohort_performance(frame, DAY + pd.Timedelta(days=9), CFG)


def test_as_of_accepts_an_aware_time_as_utc() -> None:
    frame = log_frame()
    aware = dt.datetime(2018, 8, 9, 2, tzinfo=dt.timezone(dt.timedelta(hours=2)))  # 00:00 UTC
    assert len(cohort_performance(frame, aware, CFG)) == 1
    with pytest.raises(ValueError, match="as_of"):
        cohort_performance(frame, "not a time", CFG)


def test_reference_from_a_frame_is_measured_like_a_cohort() -> None:
    frame = log_frame(days=2, seed=7)
    ref = ReferencePerformance.from_frame(frame, "test week", CFG)
    y = frame[LABEL].fillna(0).to_numpy(dtype=int)
    assert ref.average_precision == pytest.approx(
        metrics.average_precision(y, frame[SCORE].to_numpy())
    )
    with pytest.raises(ValueError, match="min_frauds"):
        ReferencePerformance.from_frame(frame.head(10), "tiny", CFG)
