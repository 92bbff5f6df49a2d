"""The monitor replayed day by day over one scenario's production, as `monitoring.job` wires it.

Each day D is one batch, checked at as_of = the end of D (labels known by then only):

* data and prediction drift of D's transactions against the reference (`detect_drift`) and the
  dataset rule (`drift_detected`), with the model's top features by gain as the important ones;
* performance on the latest matured cohorts and the label-free estimate on the recent ones
  (`performance_checks`, `estimate_checks`) over the days the job reads (`maturity_days` plus
  the cohorts they pool), any of them firing making the verdict's `drift_detected` true;
* the retraining policy (`decide`) with its state carried across days (cooldown, streak), as
  the job keeps it in `policy_state.json`.

The job reads MLflow and the prediction log and then calls `monitoring.checking`; this calls
the same functions (`prepare_monitor`, `drift_checks`, `label_checks`) on frames in memory, so
the benchmark measures the job's checks, not a copy of them.
"""

from __future__ import annotations

import datetime as dt
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from monitoring import frames
from monitoring.checking import Monitor, drift_checks, label_checks, prepare_monitor
from monitoring.checks import Check
from monitoring.config import MonitorConfig
from monitoring.performance import cohort_performance, matured_frauds
from monitoring.policy import PolicyState, decide

__all__ = ["BatchResult", "Monitor", "batch_cost", "build_monitor", "check_batch", "replay"]


def build_monitor(
    cfg: MonitorConfig, reference: pd.DataFrame, importance: dict[str, float]
) -> Monitor:
    """The job's first steps: the important features, the fitted reference, its performance."""
    return prepare_monitor(cfg, reference, importance, "test window")


@dataclass
class BatchResult:
    """One batch's outcome."""

    day: int  # absolute day index
    rows: int
    drift_rule: bool  # drift_detected on the data and prediction checks
    verdict_drift: bool  # the verdict's drift_detected: the rule or any label check fired
    trigger: bool  # the retraining policy fired
    fired: list[str] = field(default_factory=list)
    cpu_drift: float = 0.0  # detect_drift + drift_detected
    cpu_labels: float = 0.0  # performance_checks + estimate_checks
    stats: dict[str, float] = field(default_factory=dict)  # statistics worth explaining

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def check_batch(
    m: Monitor, current: pd.DataFrame, longer: pd.DataFrame, as_of: dt.datetime
) -> tuple[list[Check], bool, bool, float, float]:
    """(checks, drift rule flag, verdict flag, CPU-s of the drift part, of the label part)."""
    t0 = time.process_time()
    checks, rule, _ = drift_checks(m, current)
    t1 = time.process_time()
    labels = label_checks(m, longer, as_of)
    t2 = time.process_time()
    verdict = rule or any(c.fired for c in labels)
    return [*checks, *labels], rule, verdict, t1 - t0, t2 - t1


def replay(m: Monitor, frame: pd.DataFrame, days: list[pd.Timestamp]) -> list[BatchResult]:
    """Every day of `days` (in order) as one batch of `frame`, the policy's state carried over."""
    state = PolicyState()
    times = frame[frames.TIME]
    out: list[BatchResult] = []
    for day in days:
        stop = day + pd.Timedelta(days=1)
        as_of = stop.to_pydatetime()
        current = frame[(times >= day) & (times < stop)]
        longer = frame[(times >= stop - pd.Timedelta(days=m.days_back)) & (times < stop)]
        checks, rule, verdict, cpu_d, cpu_l = check_batch(m, current, longer, as_of)
        cohorts = cohort_performance(longer, as_of, m.cfg.performance)
        decision = decide(
            checks,
            labelled_frauds=matured_frauds(cohorts),
            last_trigger_at=state.last_trigger_at,
            as_of=as_of,
            policy=m.cfg.retrain,
            streak=state.streak_before(as_of),
        )
        state = state.after(decision, as_of)
        out.append(
            BatchResult(
                day=int((day - pd.Timestamp("1970-01-01")).days),
                rows=len(current),
                drift_rule=rule,
                verdict_drift=verdict,
                trigger=decision.trigger,
                fired=[c.name for c in checks if c.fired],
                cpu_drift=cpu_d,
                cpu_labels=cpu_l,
                stats=_stats(checks),
            )
        )
    return out


def _stats(checks: list[Check]) -> dict[str, float]:
    """The statistics a missed target is explained with: amount and score PSI, alert ratio,
    the pooled matured AP and recall, the estimate gaps."""
    keep = {
        "drift:amount",
        "drift:TX_AMOUNT",
        "drift:score",
        "alert_rate",
        "performance:average_precision",
        "performance:recall",
        "estimate:ap_gap",
        "estimate:recall_gap",
    }
    out: dict[str, float] = {}
    for c in checks:
        if c.name in keep or c.name.startswith("prediction:"):
            out[c.name] = float(c.statistic)
    drifted = [c for c in checks if c.kind == "data" and c.fired]
    out["data_drifted"] = float(len(drifted))
    return out


def resample_days(frame: pd.DataFrame, rows_per_day: int, seed: int) -> pd.DataFrame:
    """Each day of `frame` resampled (with replacement) to `rows_per_day` rows: a population
    scaled up for the cost at 100k rows a day, with the same distributions."""
    rng = np.random.default_rng(seed)
    parts = []
    for _, rows in frame.groupby(frame[frames.TIME].dt.normalize()):
        parts.append(rows.iloc[rng.integers(0, len(rows), rows_per_day)])
    return pd.concat(parts, ignore_index=True)


def batch_cost(
    m: Monitor, frame: pd.DataFrame, day: pd.Timestamp, rows: int, *, repeats: int = 3
) -> dict[str, float]:
    """CPU-seconds (best of `repeats`) and peak traced memory of one batch's checks when a day
    holds `rows` transactions: the drift part on the day, the label part on the job's days."""
    stop = day + pd.Timedelta(days=1)
    times = frame[frames.TIME]
    longer = frame[(times >= stop - pd.Timedelta(days=m.days_back)) & (times < stop)]
    longer = resample_days(longer, rows, seed=rows)
    current = longer[longer[frames.TIME] >= day]
    as_of = stop.to_pydatetime()
    best_d = best_l = np.inf
    for _ in range(repeats):
        _, _, _, cpu_d, cpu_l = check_batch(m, current, longer, as_of)
        best_d, best_l = min(best_d, cpu_d), min(best_l, cpu_l)
    tracemalloc.start()
    try:
        check_batch(m, current, longer, as_of)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {
        "rows": float(len(current)),
        "label_rows": float(len(longer)),
        "cpu_drift": float(best_d),
        "cpu_labels": float(best_l),
        "cpu_total": float(best_d + best_l),
        "peak_bytes": float(peak),
    }
