"""The label-free estimate: performance of recent cohorts from the scores alone (CBPE).

Confidence-based performance estimation, as NannyML's CBPE does: if the scores are calibrated
probabilities, a transaction's unknown label is Bernoulli(score). Recall and precision at the
logged decision follow as ratios of expectations; AP and every interval come from drawing the
labels many times (vectorised) and taking quantiles of the metric over the draws.

It holds only while the scores stay calibrated, so calibration is checked first, on the
reference with labels (`calibration_check`), and an optional monotone recalibration
(`Recalibrator`, isotonic, strictly increasing so that ranking and AP are unchanged) maps the
scores before estimating. What no label-free method can see (the fraud pattern changes while the
inputs and scores stay the same) shows up as a gap between the estimate and the realised figure
once a cohort matures: `estimate_checks` measures it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitoring.checks import Check
from monitoring.frames import ALERT, SCORE
from monitoring.performance import (
    PerformanceConfig,
    as_timestamp,
    cohort_starts,
    is_matured,
    matured_cohorts,
    measure,
    require_columns,
)

#: Cap on draws x rows held at once (int32 cumulative sums: ~20 MB).
_CHUNK_CELLS = 5_000_000


class EstimateConfig(BaseModel):
    """The estimate's draws and the estimate checks' thresholds (params.yaml `monitor.estimate`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_draws: int = Field(default=200, ge=20, le=10_000)
    lower_quantile: float = Field(default=0.05, gt=0, lt=1)
    upper_quantile: float = Field(default=0.95, gt=0, lt=1)
    seed: int = 0
    #: The checks pool this many of the latest cohorts without matured labels.
    recent_cohorts: int = Field(default=3, ge=1)
    #: Fire when the estimated AP / recall of the recent cohorts is below these.
    min_ap: float = Field(default=0.5, ge=0, le=1)
    min_recall: float = Field(default=0.5, ge=0, le=1)
    #: Fire when, on the latest matured cohorts, the estimate exceeds the realised figure by
    #: more than this (absolute) and the realised figure is below the estimate's interval.
    max_ap_gap: float = Field(default=0.15, gt=0, le=1)
    max_recall_gap: float = Field(default=0.15, gt=0, le=1)
    #: Calibration: quantile bins of the expected calibration error, and its acceptable maximum
    #: relative to the reference fraud rate (ECE / fraud rate).
    calibration_bins: int = Field(default=10, ge=2, le=1000)
    max_relative_ece: float = Field(default=0.25, gt=0)

    @model_validator(mode="after")
    def _quantiles_ordered(self) -> EstimateConfig:
        if self.lower_quantile >= self.upper_quantile:
            raise ValueError(
                f"lower_quantile ({self.lower_quantile}) must be below upper_quantile "
                f"({self.upper_quantile})"
            )
        return self


@dataclass(frozen=True)
class Estimate:
    """Estimated performance of a set of transactions, with [low, high] quantile intervals."""

    start: dt.datetime
    end: dt.datetime
    transactions: int
    alerts: int
    expected_frauds: float
    average_precision: float
    average_precision_low: float
    average_precision_high: float
    recall: float
    recall_low: float
    recall_high: float
    precision: float
    precision_low: float
    precision_high: float
    matured: bool = False

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["start"], d["end"] = self.start.isoformat(), self.end.isoformat()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Estimate:
        return cls(
            **{
                **d,
                "start": dt.datetime.fromisoformat(d["start"]),
                "end": dt.datetime.fromisoformat(d["end"]),
            }
        )


@dataclass(frozen=True)
class CalibrationReport:
    """Expected calibration error on quantile bins of the reference, and whether it is small
    enough for the estimate to be trusted."""

    ece: float
    relative_ece: float  # ece / fraud rate: ECE alone looks tiny when frauds are 0.7%
    max_relative_ece: float
    acceptable: bool
    fraud_rate: float
    mean_score: float
    transactions: int
    bins: list[dict[str, float]] = field(default_factory=list)  # mean_score, fraud_rate, n

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def as_check(self) -> Check:
        """The calibration as a check: fired when the estimate cannot be trusted."""
        return Check(
            name="estimate:calibration",
            kind="estimate",
            method="relative_ece",
            statistic=self.relative_ece,
            threshold=self.max_relative_ece,
            fired=not self.acceptable,
            detail={"ece": self.ece, "fraud_rate": self.fraud_rate, "mean_score": self.mean_score},
        )


def _validated(scores: Any, labels: Any | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or len(s) == 0:
        raise ValueError("scores: need a non-empty one-dimensional array")
    if not np.all((s >= 0) & (s <= 1)):
        raise ValueError("scores: every score must be a probability in [0, 1] (NaN is not)")
    if labels is None:
        return s, None
    y = np.asarray(labels, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"labels: {len(y)} labels for {len(s)} scores")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels: every label must be 0 or 1")
    return s, y


def calibration_check(
    reference_scores: Any,
    reference_labels: Any,
    *,
    bins: int = 10,
    max_relative_ece: float = 0.25,
) -> CalibrationReport:
    """Expected calibration error of the scores on `bins` equal-count bins (sorted by score):
    sum over bins of |mean score - fraud rate| weighted by the bin's share."""
    s, y = _validated(reference_scores, reference_labels)
    assert y is not None
    order = np.argsort(s, kind="stable")
    table = []
    ece = 0.0
    for idx in np.array_split(order, min(bins, len(s))):
        mean_s, rate = float(s[idx].mean()), float(y[idx].mean())
        ece += len(idx) / len(s) * abs(mean_s - rate)
        table.append({"mean_score": mean_s, "fraud_rate": rate, "n": float(len(idx))})
    fraud_rate = float(y.mean())
    relative = ece / fraud_rate if fraud_rate > 0 else float("inf")
    return CalibrationReport(
        ece=ece,
        relative_ece=relative,
        max_relative_ece=max_relative_ece,
        acceptable=relative <= max_relative_ece,
        fraud_rate=fraud_rate,
        mean_score=float(s.mean()),
        transactions=len(s),
        bins=table,
    )


@dataclass(frozen=True)
class Recalibrator:
    """A monotone map of scores to calibrated probabilities: isotonic regression's knots,
    interpolated, plus a tiny share of the raw score so the map is strictly increasing (isotonic
    regression is flat between knots; ties would change AP, which must not move)."""

    knots_x: tuple[float, ...]
    knots_y: tuple[float, ...]
    #: The raw score's weight: breaks ties without moving any probability by more than this.
    tie_break: float = 1e-6

    @classmethod
    def fit(cls, scores: Any, labels: Any) -> Recalibrator:
        """Isotonic regression of the labels on the scores (the reference, with labels)."""
        from sklearn.isotonic import IsotonicRegression  # slow to import: only when fitting

        s, y = _validated(scores, labels)
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        iso.fit(s, y)
        return cls(
            tuple(float(v) for v in iso.X_thresholds_), tuple(float(v) for v in iso.y_thresholds_)
        )

    def __call__(self, scores: Any) -> np.ndarray:
        s, _ = _validated(scores)
        mapped = np.interp(s, self.knots_x, self.knots_y)
        return (1 - self.tie_break) * mapped + self.tie_break * s

    def as_dict(self) -> dict[str, Any]:
        return {"knots_x": list(self.knots_x), "knots_y": list(self.knots_y)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recalibrator:
        return cls(tuple(d["knots_x"]), tuple(d["knots_y"]))


def _draw_metrics(
    p: np.ndarray, alert: np.ndarray, n_draws: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AP, recall and precision at the alerts for `n_draws` label vectors ~ Bernoulli(p).

    A draw without a fraud has NaN metrics (AP and recall are undefined there).
    """
    order = np.argsort(-p, kind="stable")
    p_sorted, alert_sorted = p[order], alert[order]
    # Precision and recall are read at the last row of each run of tied scores (as
    # scikit-learn's average_precision_score does).
    group_end = np.flatnonzero(np.r_[p_sorted[1:] != p_sorted[:-1], True])
    ranks = (group_end + 1).astype(np.float64)
    n_alerts = max(int(alert.sum()), 1)
    aps, recalls, precisions = [], [], []
    per_chunk = max(1, _CHUNK_CELLS // len(p))
    for done in range(0, n_draws, per_chunk):
        b = min(per_chunk, n_draws - done)
        y = rng.random((b, len(p))) < p_sorted
        tp = np.cumsum(y, axis=1, dtype=np.int32)[:, group_end].astype(np.float64)
        positives = tp[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            recall_curve = tp / positives[:, None]
            d_recall = np.diff(recall_curve, axis=1, prepend=0.0)
            aps.append(np.sum(d_recall * (tp / ranks), axis=1))
            caught = (y & alert_sorted).sum(axis=1)
            recalls.append(caught / positives)
            precisions.append(caught / n_alerts)
    return np.concatenate(aps), np.concatenate(recalls), np.concatenate(precisions)


def estimate_performance(
    scores: Any,
    alerts: Any,
    cfg: EstimateConfig,
    *,
    start: dt.datetime,
    end: dt.datetime,
    matured: bool = False,
) -> Estimate:
    """The estimate for one set of transactions from calibrated `scores` and the logged alerts.

    Recall and precision: expected caught frauds over expected frauds / alerts (CBPE's ratio of
    expectations); AP: the mean over the draws; intervals: the configured quantiles of the draws.
    """
    p, _ = _validated(scores)
    alert = np.asarray(alerts).astype(bool)
    if alert.shape != p.shape:
        raise ValueError(f"alerts: {len(alert)} alerts for {len(p)} scores")
    rng = np.random.default_rng(cfg.seed)
    ap, recall, precision = _draw_metrics(p, alert, cfg.n_draws, rng)
    q = [cfg.lower_quantile, cfg.upper_quantile]
    expected_frauds = float(p.sum())
    expected_caught = float(p[alert].sum())

    def interval(values: np.ndarray) -> tuple[float, float]:
        finite = values[np.isfinite(values)]
        if len(finite) == 0:
            return float("nan"), float("nan")
        low, high = np.quantile(finite, q)
        return float(low), float(high)

    finite_ap = ap[np.isfinite(ap)]
    return Estimate(
        start=start,
        end=end,
        transactions=len(p),
        alerts=int(alert.sum()),
        expected_frauds=expected_frauds,
        average_precision=float(finite_ap.mean()) if len(finite_ap) else float("nan"),
        average_precision_low=interval(ap)[0],
        average_precision_high=interval(ap)[1],
        recall=expected_caught / expected_frauds if expected_frauds > 0 else float("nan"),
        recall_low=interval(recall)[0],
        recall_high=interval(recall)[1],
        precision=expected_caught / int(alert.sum()) if alert.any() else 0.0,
        precision_low=interval(precision)[0],
        precision_high=interval(precision)[1],
        matured=matured,
    )


def _probabilities(rows: pd.DataFrame, recalibrator: Recalibrator | None) -> np.ndarray:
    scores = rows[SCORE].to_numpy(dtype=np.float64)
    return recalibrator(scores) if recalibrator is not None else scores


def _estimate_rows(
    rows: pd.DataFrame,
    start: pd.Timestamp,
    end: pd.Timestamp,
    matured: bool,
    cfg: EstimateConfig,
    recalibrator: Recalibrator | None,
) -> Estimate:
    return estimate_performance(
        _probabilities(rows, recalibrator),
        rows[ALERT].to_numpy(dtype=np.int64),
        cfg,
        start=start.to_pydatetime(),
        end=end.to_pydatetime(),
        matured=matured,
    )


def _recent_cohorts(
    frame: pd.DataFrame, as_of: pd.Timestamp, perf: PerformanceConfig
) -> list[tuple[pd.Timestamp, pd.DataFrame]]:
    require_columns(frame, [SCORE, ALERT], "label-free estimate")
    return [
        (pd.Timestamp(s), rows)
        for s, rows in frame.groupby(cohort_starts(frame, perf), sort=True)
        if not is_matured(pd.Timestamp(s), as_of, perf)
    ]


def estimate_cohorts(
    frame: pd.DataFrame,
    as_of: dt.datetime | str,
    perf: PerformanceConfig,
    cfg: EstimateConfig,
    recalibrator: Recalibrator | None = None,
) -> list[Estimate]:
    """The estimate for every cohort of `frame` whose labels have not matured at `as_of`."""
    t = as_timestamp(as_of)
    length = pd.Timedelta(days=perf.cohort_days)
    return [
        _estimate_rows(rows, s, s + length, False, cfg, recalibrator)
        for s, rows in _recent_cohorts(frame, t, perf)
    ]


def _pool(
    cohorts: list[tuple[pd.Timestamp, pd.DataFrame]], perf: PerformanceConfig
) -> tuple[pd.Timestamp, pd.Timestamp, pd.DataFrame]:
    end = cohorts[-1][0] + pd.Timedelta(days=perf.cohort_days)
    return cohorts[0][0], end, pd.concat([rows for _, rows in cohorts])


def estimate_checks(
    frame: pd.DataFrame,
    as_of: dt.datetime | str,
    perf: PerformanceConfig,
    cfg: EstimateConfig,
    recalibrator: Recalibrator | None = None,
) -> list[Check]:
    """Checks of kind "estimate".

    * `estimate:average_precision`, `estimate:recall`: the estimate for the latest
      `recent_cohorts` cohorts without matured labels, pooled, below its floor;
    * `estimate:ap_gap`, `estimate:recall_gap`: on the latest matured cohorts (the pool the
      performance checks use), the estimate minus the realised figure above `max_*_gap` with
      the realised figure below the estimate's interval: the labels say the model does worse
      than its own scores predict, so the relation between inputs and fraud has changed.
    """
    t = as_timestamp(as_of)
    checks: list[Check] = []
    recent = _recent_cohorts(frame, t, perf)[-cfg.recent_cohorts :]
    if recent:
        start, end, rows = _pool(recent, perf)
        est = _estimate_rows(rows, start, end, False, cfg, recalibrator)
        detail = {
            "window": f"{start.isoformat()} .. {end.isoformat()}",
            "transactions": est.transactions,
            "expected_frauds": est.expected_frauds,
        }
        for name, value, low, high, floor in (
            ("average_precision", est.average_precision, est.average_precision_low,
             est.average_precision_high, cfg.min_ap),
            ("recall", est.recall, est.recall_low, est.recall_high, cfg.min_recall),
        ):  # fmt: skip
            checks.append(
                Check(
                    name=f"estimate:{name}",
                    kind="estimate",
                    method="cbpe_floor",
                    statistic=value,
                    threshold=floor,
                    fired=bool(value < floor),
                    detail={**detail, "low": low, "high": high},
                )
            )
    matured = matured_cohorts(frame, t, perf)[-perf.check_cohorts :]
    if matured:
        start, end, rows = _pool(matured, perf)
        realised = measure(rows, t, start, end, perf)
        if realised.counted:
            assert realised.average_precision is not None and realised.recall is not None
            est = _estimate_rows(rows, start, end, True, cfg, recalibrator)
            detail = {
                "window": f"{start.isoformat()} .. {end.isoformat()}",
                "frauds": realised.frauds,
                "expected_frauds": est.expected_frauds,
            }
            for name, estimated, low, real, limit in (
                ("ap_gap", est.average_precision, est.average_precision_low,
                 realised.average_precision, cfg.max_ap_gap),
                ("recall_gap", est.recall, est.recall_low, realised.recall, cfg.max_recall_gap),
            ):  # fmt: skip
                gap = estimated - real
                checks.append(
                    Check(
                        name=f"estimate:{name}",
                        kind="estimate",
                        method="estimate_minus_realised",
                        statistic=gap,
                        threshold=limit,
                        fired=bool(gap > limit and real < low),
                        detail={**detail, "estimate": estimated, "low": low, "realised": real},
                    )
                )
    return checks
