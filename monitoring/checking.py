"""The checks of one window, without I/O: what the job runs on the log or a file, and what the
drift benchmark runs on simulated days, so that both measure the same thing.

`prepare_monitor` fits what every window of one model shares (the drift reference, the
reference performance, the model's important features); `check_window` runs every check of a
window: data and prediction drift on `current`, performance and the label-free estimate on
`longer` (the matured cohorts and the recent ones, which reach further back than the window).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from monitoring.checks import Check
from monitoring.config import MonitorConfig
from monitoring.drift import (
    DriftReference,
    detect_drift,
    drift_detected,
    fit_reference,
    top_features,
)
from monitoring.estimate import Estimate, estimate_checks, estimate_cohorts
from monitoring.performance import (
    CohortMetrics,
    ReferencePerformance,
    cohort_performance,
    performance_checks,
    pooled_performance,
)
from monitoring.verdict import describe_check


@dataclass(frozen=True)
class Monitor:
    """What every window of one model is checked with."""

    #: The settings, with the model's most important features in `drift.dataset`.
    cfg: MonitorConfig
    drift_reference: DriftReference
    reference_performance: ReferencePerformance
    important_features: list[str]

    @property
    def days_back(self) -> int:
        return label_days_back(self.cfg)

    def evidently_columns(self) -> dict[str, tuple[str, float]]:
        """Each checked column with the method and threshold its drift check uses, for the
        Evidently report (which bins continuous columns its own way, so its statistic can
        differ from the verdict's, which decides)."""
        drift = self.cfg.drift
        columns = [*self.drift_reference.columns]
        if self.drift_reference.score is not None:
            columns.append(self.drift_reference.score)
        out: dict[str, tuple[str, float]] = {}
        for col in columns:
            rule = drift.rule_for(col.name, col.role, col.kind)
            out[col.name] = (rule.method, rule.threshold)
        return out


def label_days_back(cfg: MonitorConfig) -> int:
    """Days before as_of that the label checks read: the cohorts that matured (maturity plus
    the cohorts they pool) and the recent ones the estimate covers."""
    perf, est = cfg.performance, cfg.estimate
    return int(perf.maturity_days + perf.cohort_days * (perf.check_cohorts + est.recent_cohorts))


def prepare_monitor(
    cfg: MonitorConfig,
    reference: pd.DataFrame,
    importance: Mapping[str, float],
    description: str = "the model's test window",
) -> Monitor:
    """Fit the drift reference and measure the reference performance (once per model)."""
    important = top_features(dict(importance), cfg.top_features)
    drift = cfg.drift.model_copy(
        update={"dataset": cfg.drift.dataset.model_copy(update={"important_columns": important})}
    )
    cfg = cfg.model_copy(update={"drift": drift})
    performance = ReferencePerformance.from_frame(reference, description, cfg.performance)
    return Monitor(cfg, fit_reference(reference, drift), performance, important)


def drift_checks(m: Monitor, current: pd.DataFrame) -> tuple[list[Check], bool, list[str]]:
    """Data and prediction drift of the window: (checks, the data set's flag, its reasons)."""
    if current.empty:
        return [], False, []
    checks = detect_drift(m.drift_reference, current, m.cfg.drift)
    drifted, reasons = drift_detected(checks, m.cfg.drift)
    return checks, drifted, reasons


def label_checks(m: Monitor, longer: pd.DataFrame, as_of: dt.datetime) -> list[Check]:
    """Performance on the matured cohorts and the label-free estimate's checks at `as_of`."""
    cfg = m.cfg
    checks = performance_checks(longer, as_of, m.reference_performance, cfg.performance)
    return checks + estimate_checks(longer, as_of, cfg.performance, cfg.estimate)


@dataclass(frozen=True)
class WindowChecks:
    checks: list[Check]
    #: Drift in the data set's sense (`drift_detected`) or any label check fired.
    drifted: bool
    reasons: list[str]
    cohorts: list[CohortMetrics]
    #: The latest matured cohorts pooled, as the performance checks measure them (None: none).
    pooled: CohortMetrics | None
    estimates: list[Estimate]


def check_window(
    m: Monitor, current: pd.DataFrame, longer: pd.DataFrame, as_of: dt.datetime
) -> WindowChecks:
    """Every check of a window (see the module's docstring)."""
    checks, drifted, reasons = drift_checks(m, current)
    labels = label_checks(m, longer, as_of)
    for c in labels:
        if c.fired:
            drifted = True
            reasons.append(describe_check(c))
    cohorts = cohort_performance(longer, as_of, m.cfg.performance)
    pooled = pooled_performance(longer, as_of, m.cfg.performance)
    estimates = estimate_cohorts(longer, as_of, m.cfg.performance, m.cfg.estimate)
    return WindowChecks([*checks, *labels], drifted, reasons, cohorts, pooled, estimates)
