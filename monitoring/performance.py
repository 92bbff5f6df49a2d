"""Performance on matured labels: what the model really did, once the chargebacks are in.

Fraud labels arrive late (`POST /feedback`), so a day's performance can be measured only once
its labels have matured. A cohort (the transactions of one day, by transaction time) is
*matured* at `as_of` when `as_of - cohort_end >= maturity_days`; about when the simulator's
compromised-card frauds have been reported. In a matured cohort an unlabelled transaction counts
as genuine (no chargeback means legitimate), a labelled one takes its label; a label known only
after `as_of` is ignored, as a job run at `as_of` would not have had it.

The checks pool the latest matured cohorts (one day holds some 45 frauds: its AP alone is noisy)
and compare them with the champion's test-window figures.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from fraud import metrics, schema
from monitoring.checks import Check
from monitoring.frames import ALERT, CUSTOMER, LABEL, LABEL_KNOWN_AT, SCORE, TIME


class PerformanceConfig(BaseModel):
    """Label maturity and the performance checks' thresholds (params.yaml `monitor.performance`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: A cohort is matured once its end is at least this old at `as_of`.
    maturity_days: float = Field(default=7.0, ge=0)
    #: The length of a cohort (transaction time), from midnight.
    cohort_days: int = Field(default=1, ge=1)
    #: A cohort's (or pool's) metrics count only with at least this many frauds.
    min_frauds: int = Field(default=20, ge=1)
    #: The checks pool this many of the latest matured cohorts.
    check_cohorts: int = Field(default=3, ge=1)
    #: Fire when the pooled AP is this much (absolute) below the reference AP.
    #: 0.10, measured (benchmarks/drift_bench.py, 8 seeds): with 0.15 the label-only regime
    #: (frauds that look like their customers' usual transactions) was caught in 75% of seeds
    #: within 14 days, with 0.10 in all, 3.5 days (median) after its labels matured; no false
    #: alarm either way on 192 no-drift and 160 pre-onset batches.
    max_ap_drop: float = Field(default=0.10, gt=0, le=1)
    #: Fire when the pooled recall at the logged threshold is below this.
    min_recall: float = Field(default=0.5, ge=0, le=1)
    #: Card precision@k per day.
    top_k: int = Field(default=100, ge=1)


@dataclass(frozen=True)
class ReferencePerformance:
    """The figures the checks compare with: the champion's own test-window metrics."""

    average_precision: float
    recall: float
    description: str

    @classmethod
    def from_metrics(cls, values: Mapping[str, float], description: str) -> ReferencePerformance:
        """From a run's metrics (`average_precision`, `at_threshold.recall` or `recall`), as
        `reports/metrics.json` and the champion's MLflow run hold them.

        Raises ValueError naming the missing key.
        """
        recall_key = "at_threshold.recall" if "at_threshold.recall" in values else "recall"
        for key in ("average_precision", recall_key):
            if key not in values:
                raise ValueError(
                    f"reference metrics lack {key!r} (have: {sorted(values)}); pass the "
                    "champion's test-window metrics"
                )
        return cls(float(values["average_precision"]), float(values[recall_key]), description)

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, description: str, cfg: PerformanceConfig
    ) -> ReferencePerformance:
        """Measured on a labelled reference frame (e.g. the champion's test week, scored) by
        the same code as the cohorts, so that both count the same transactions.

        The registered test metrics leave out cards known to be compromised before the test
        day (the handbook's protocol): on the champion they read AP 0.73 where all rows of the
        same week give 0.79, and a production cohort (all rows) would hide a drop of that size.
        """
        require_columns(frame, [TIME, SCORE, ALERT, LABEL], "reference performance")
        all_known = frame[TIME].max() + pd.Timedelta(days=cfg.maturity_days + cfg.cohort_days)
        m = measure(
            frame, all_known, frame[TIME].min().floor("D"), frame[TIME].max().ceil("D"), cfg
        )
        if m.average_precision is None or m.recall is None:
            raise ValueError(
                f"reference frame: {m.frauds} frauds, fewer than min_frauds = {cfg.min_frauds}"
            )
        return cls(m.average_precision, m.recall, description)


@dataclass(frozen=True)
class CohortMetrics:
    """One matured cohort's (or a pool of cohorts') performance.

    The metrics are None when the cohort has fewer frauds than `min_frauds` (`counted` False).
    """

    start: dt.datetime
    end: dt.datetime
    transactions: int
    frauds: int  # labelled frauds known by as_of
    labelled: int  # transactions with a label known by as_of
    alerts: int
    counted: bool
    average_precision: float | None
    recall: float | None
    precision: float | None
    card_precision_at_k: float | None
    k: int

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["start"], d["end"] = self.start.isoformat(), self.end.isoformat()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CohortMetrics:
        return cls(
            **{
                **d,
                "start": dt.datetime.fromisoformat(d["start"]),
                "end": dt.datetime.fromisoformat(d["end"]),
            }
        )


def as_timestamp(t: dt.datetime | pd.Timestamp | str, name: str = "as_of") -> pd.Timestamp:
    """`t` as a naive UTC timestamp (the frames' convention); an aware time is converted."""
    try:
        ts = pd.Timestamp(t)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{name}: not a time: {t!r}") from e
    if ts is pd.NaT:
        raise ValueError(f"{name}: not a time: {t!r}")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


def require_columns(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    """Raise ValueError naming the columns `what` needs that `frame` lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: the frame lacks column(s) {missing} (see monitoring.frames)")


def cohort_starts(frame: pd.DataFrame, cfg: PerformanceConfig) -> pd.Series:
    """Each row's cohort: the start of its `cohort_days`-long period (from 1970-01-01)."""
    return frame[TIME].dt.floor(f"{cfg.cohort_days}D")


def is_matured(cohort_start: pd.Timestamp, as_of: pd.Timestamp, cfg: PerformanceConfig) -> bool:
    """Whether the cohort starting at `cohort_start` has matured labels at `as_of`."""
    cohort_end = cohort_start + pd.Timedelta(days=cfg.cohort_days)
    return bool(as_of - cohort_end >= pd.Timedelta(days=cfg.maturity_days))


def labels_at(frame: pd.DataFrame, as_of: pd.Timestamp) -> tuple[np.ndarray, np.ndarray]:
    """(label known by as_of, effective label): a row without a label known by `as_of` is 0,
    the genuine class; right only for matured rows."""
    known = frame[LABEL].notna().to_numpy()
    if LABEL_KNOWN_AT in frame.columns:
        known_at = frame[LABEL_KNOWN_AT]
        known &= (known_at.isna() | (known_at <= as_of)).to_numpy()
    values = frame[LABEL].fillna(0).to_numpy(dtype=np.int64)
    return known, np.where(known, values, 0)


def _alerts(frame: pd.DataFrame) -> np.ndarray:
    return frame[ALERT].to_numpy(dtype=np.int64).astype(bool)


def measure(
    rows: pd.DataFrame,
    as_of: pd.Timestamp,
    start: pd.Timestamp,
    end: pd.Timestamp,
    cfg: PerformanceConfig,
) -> CohortMetrics:
    """The performance of `rows` (matured rows: unlabelled counts as genuine) with fraud.metrics."""
    known, y = labels_at(rows, as_of)
    scores = rows[SCORE].to_numpy(dtype=np.float64)
    alert = _alerts(rows)
    frauds = int(y.sum())
    counted = frauds >= cfg.min_frauds
    ap = recall = precision = cp = None
    if counted:
        tp = int(np.sum(alert & (y == 1)))
        ap = metrics.average_precision(y, scores)
        recall = tp / frauds
        precision = tp / int(alert.sum()) if alert.any() else 0.0
        cards = pd.DataFrame(
            {
                schema.TX_DATETIME: rows[TIME].to_numpy(),
                schema.CUSTOMER_ID: rows[CUSTOMER].to_numpy(),
                schema.TX_FRAUD: y,
            }
        )
        cp = metrics.card_precision_at_k(cards, scores, k=cfg.top_k)
    return CohortMetrics(
        start=start.to_pydatetime(),
        end=end.to_pydatetime(),
        transactions=len(rows),
        frauds=frauds,
        labelled=int(known.sum()),
        alerts=int(alert.sum()),
        counted=counted,
        average_precision=ap,
        recall=recall,
        precision=precision,
        card_precision_at_k=cp,
        k=cfg.top_k,
    )


def matured_cohorts(
    frame: pd.DataFrame, as_of: pd.Timestamp, cfg: PerformanceConfig
) -> list[tuple[pd.Timestamp, pd.DataFrame]]:
    """(cohort start, its rows) for every matured cohort of `frame`, oldest first."""
    require_columns(frame, [TIME, SCORE, ALERT, LABEL, CUSTOMER], "cohort performance")
    out = []
    for start, rows in frame.groupby(cohort_starts(frame, cfg), sort=True):
        start = pd.Timestamp(start)
        if is_matured(start, as_of, cfg):
            out.append((start, rows))
    return out


def cohort_performance(
    frame: pd.DataFrame, as_of: dt.datetime | str, cfg: PerformanceConfig
) -> list[CohortMetrics]:
    """Performance of every matured cohort of the window `frame` at `as_of`, oldest first."""
    t = as_timestamp(as_of)
    length = pd.Timedelta(days=cfg.cohort_days)
    return [measure(rows, t, s, s + length, cfg) for s, rows in matured_cohorts(frame, t, cfg)]


def pooled_performance(
    frame: pd.DataFrame, as_of: dt.datetime | str, cfg: PerformanceConfig
) -> CohortMetrics | None:
    """The performance of the latest `check_cohorts` matured cohorts taken together (None when
    no cohort has matured)."""
    t = as_timestamp(as_of)
    latest = matured_cohorts(frame, t, cfg)[-cfg.check_cohorts :]
    if not latest:
        return None
    rows = pd.concat([r for _, r in latest])
    end = latest[-1][0] + pd.Timedelta(days=cfg.cohort_days)
    return measure(rows, t, latest[0][0], end, cfg)


def matured_frauds(cohorts: list[CohortMetrics]) -> int:
    """Labelled frauds in matured cohorts: what the retraining policy's minimum counts."""
    return sum(c.frauds for c in cohorts)


def performance_checks(
    frame: pd.DataFrame,
    as_of: dt.datetime | str,
    reference: ReferencePerformance,
    cfg: PerformanceConfig,
) -> list[Check]:
    """Checks of kind "performance" on the latest matured cohorts pooled: AP drop against the
    reference, recall at the logged threshold against a floor.

    No check when no cohort has matured or the pool has fewer than `min_frauds` frauds (too few
    labels to say anything): the verdict's cohort metrics show why.
    """
    pool = pooled_performance(frame, as_of, cfg)
    if pool is None or not pool.counted:
        return []
    assert pool.average_precision is not None and pool.recall is not None
    detail = {
        "window": f"{pool.start.isoformat()} .. {pool.end.isoformat()}",
        "transactions": pool.transactions,
        "frauds": pool.frauds,
        "reference": reference.description,
    }
    drop = reference.average_precision - pool.average_precision
    return [
        Check(
            name="performance:average_precision",
            kind="performance",
            method="ap_drop",
            statistic=drop,
            threshold=cfg.max_ap_drop,
            fired=drop > cfg.max_ap_drop,
            detail={
                **detail,
                "value": pool.average_precision,
                "reference_value": reference.average_precision,
            },
        ),
        Check(
            name="performance:recall",
            kind="performance",
            method="recall_floor",
            statistic=pool.recall,
            threshold=cfg.min_recall,
            fired=pool.recall < cfg.min_recall,
            detail={**detail, "reference_value": reference.recall, "precision": pool.precision},
        ),
    ]
