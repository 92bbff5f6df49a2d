"""Data and prediction drift of a window of scored transactions against the model's reference.

Per column an effect size, not a p-value: a daily window holds ~10,000 transactions, on which a
K-S or chi-square test at p < 0.05 rejects for shifts nobody should act on (and for the ordinary
difference between one day and the reference month). The statistic is PSI (or, by choice, the
Jensen-Shannon distance) on bins fixed once from the reference: continuous columns at the
reference's deciles (`monitoring.binning`), low-cardinality ones by value. The alert rate is a
ratio with a minimum effect that must also be significant. The thresholds are calibrated on the
simulator's no-drift days (benchmarks/monitoring_calibration.py, docs/monitoring.md, "Drift detection").

    ref = fit_reference(reference_frame, cfg)        # once per model; ref.model_dump_json()
    checks = detect_drift(ref, window_frame, cfg)    # per batch: one Check per column
    drifted, reasons = drift_detected(checks, cfg)   # the data set's verdict, in plain words

Frames are in `monitoring.frames`' layout. The dataset-level rule is not "half the columns":
the score, the alert rate, the raw amount or any important feature drifting is enough, as is a
share of all features.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from monitoring import binning
from monitoring.checks import Check
from monitoring.frames import ALERT, AMOUNT, SCORE, feature_columns

Method = Literal["psi", "jensenshannon"]
Role = Literal["feature", "amount", "score"]
Kind = Literal["continuous", "categorical"]

#: The alert-rate check's method: the rate ratio, fired only when a two-proportion z-test agrees.
ALERT_METHOD = "alert_rate_ratio"
#: Summary quantiles shown in a check's detail.
_QUANTILES = (0.5, 0.9, 0.99)


class DriftInputError(ValueError):
    """A reference or window frame cannot be checked (missing or non-numeric column, no rows)."""


class ColumnRule(BaseModel):
    """How one column is compared: the statistic, its threshold, the bins, the minimum sample."""

    model_config = ConfigDict(extra="forbid")
    method: Method = "psi"
    #: Fires at or above this value of the statistic.
    threshold: float = Field(0.2, gt=0)
    #: Quantile bins of a continuous column (tied quantiles merge, so some columns get fewer).
    n_bins: int = Field(10, ge=2, le=100)
    #: Below this many non-missing rows in the window the check does not fire and says why.
    min_rows: int = Field(200, ge=1)
    #: The statistic must also exceed the level sampling noise alone reaches with this
    #: probability (a chi-square bound that shrinks as the window grows): a small window
    #: cannot fire on noise, a large one still needs the effect size `threshold`.
    noise_alpha: float = Field(1e-3, gt=0, lt=1)


class AlertRateRule(BaseModel):
    """The share of alerts: fires when current / reference is at least `max_ratio` (or at most
    1 / `max_ratio`) and a two-proportion z-test gives p < `alpha`."""

    model_config = ConfigDict(extra="forbid")
    max_ratio: float = Field(1.75, gt=1)
    alpha: float = Field(1e-3, gt=0, lt=1)
    #: The window must be large enough to expect this many alerts at the reference rate.
    min_expected_alerts: float = Field(10.0, gt=0)


class DatasetRule(BaseModel):
    """Which drifts make `drift_detected` (any one is enough)."""

    model_config = ConfigDict(extra="forbid")
    #: The model's most important features (e.g. `top_features(booster.get_score(...), 5)`).
    important_columns: list[str] = Field(default_factory=list)
    on_score: bool = True
    on_alert_rate: bool = True
    on_amount: bool = True
    #: Fires when at least this share of the checked features drifted.
    drifted_share: float = Field(0.25, gt=0, le=1)


class DriftConfig(BaseModel):
    """Per-column methods and thresholds, per-column overrides, and the dataset-level rule."""

    model_config = ConfigDict(extra="forbid")
    # Calibrated on the simulator's no-drift days (docs/monitoring.md, "Drift detection"): the largest daily
    # PSI seen was 0.045 for a feature (terminal fraud ages), 0.002 for the amount, 0.003 for
    # the score; each threshold leaves a margin of 2x or more above that.
    continuous: ColumnRule = ColumnRule(method="psi", threshold=0.1, n_bins=10)
    categorical: ColumnRule = ColumnRule(method="psi", threshold=0.05)
    amount: ColumnRule = ColumnRule(method="psi", threshold=0.01, n_bins=10)
    score: ColumnRule = ColumnRule(method="psi", threshold=0.02, n_bins=10)
    alert_rate: AlertRateRule = AlertRateRule()
    #: A column with at most this many distinct reference values is compared by value.
    max_categories: int = Field(10, ge=2)
    #: Model features that are the raw amount under another name: compared with `amount`'s rule.
    amount_features: list[str] = Field(default_factory=lambda: ["TX_AMOUNT"])
    #: Features that a window's dates fix (a weekday's batch has no weekend rows): not checked.
    calendar_columns: list[str] = Field(default_factory=lambda: ["TX_DURING_WEEKEND"])
    #: Rules for named columns (a feature, `amount` or `score`), replacing their group's rule.
    overrides: dict[str, ColumnRule] = Field(default_factory=dict)
    dataset: DatasetRule = DatasetRule()

    def rule_for(self, name: str, role: Role, kind: Kind) -> ColumnRule:
        if name in self.overrides:
            return self.overrides[name]
        if role == "score":
            return self.score
        if role == "amount":
            return self.amount
        return self.categorical if kind == "categorical" else self.continuous


class ColumnReference(BaseModel):
    """One column's reference: its bins and how many reference rows fell in each."""

    model_config = ConfigDict(extra="forbid")
    name: str
    role: Role
    kind: Kind
    edges: list[float] = Field(default_factory=list)  # continuous: interior bin edges
    categories: list[float] = Field(default_factory=list)  # categorical: values (+ "other")
    counts: list[int]
    n: int
    n_missing: int
    summary: dict[str, float]


class AlertReference(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int
    alerts: int

    @property
    def rate(self) -> float:
        return self.alerts / self.n if self.n else 0.0


class DriftReference(BaseModel):
    """What a batch is compared with, computed once per model; JSON with `model_dump_json()`,
    back with `DriftReference.model_validate_json(text)`."""

    model_config = ConfigDict(extra="forbid")
    n_rows: int
    columns: list[ColumnReference]  # the features, then the raw amount
    skipped: list[str] = Field(default_factory=list)  # calendar columns, not checked
    score: ColumnReference | None = None
    alert: AlertReference | None = None


def top_features(importance: Mapping[str, float], k: int = 5) -> list[str]:
    """The `k` features of highest importance (e.g. XGBoost's `get_score(importance_type=
    "gain")`), for `DatasetRule.important_columns`."""
    return [n for n, _ in sorted(importance.items(), key=lambda kv: -kv[1])[:k]]


def fit_reference(reference: pd.DataFrame, cfg: DriftConfig) -> DriftReference:
    """Bins and counts of every feature, the amount and (when present) the score and alerts.

    Features are the frame's non-log columns (`monitoring.frames.feature_columns`); the score
    and alert-rate references are left out when the frame has no `score` / `is_alert`.
    """
    if len(reference) == 0:
        raise DriftInputError("the reference frame has no rows")
    if AMOUNT not in reference.columns:
        raise DriftInputError(f"the reference frame has no {AMOUNT!r} column")
    features = feature_columns(reference)
    known = {*features, AMOUNT, SCORE}
    for what, names in (
        ("overrides", list(cfg.overrides)),
        ("dataset.important_columns", cfg.dataset.important_columns),
    ):
        unknown = sorted(set(names) - known)
        if unknown:
            raise DriftInputError(
                f"DriftConfig.{what} names column(s) the reference does not have: {unknown}"
            )
    calendar = [c for c in features if c in cfg.calendar_columns]
    columns = [
        _fit_column(reference, f, "amount" if f in cfg.amount_features else "feature", cfg)
        for f in features
        if f not in calendar
    ]
    columns.append(_fit_column(reference, AMOUNT, "amount", cfg))
    score = _fit_column(reference, SCORE, "score", cfg) if SCORE in reference.columns else None
    alert = None
    if ALERT in reference.columns:
        flags = _numeric(reference, ALERT, "reference")
        flags = flags[~np.isnan(flags)]
        alert = AlertReference(n=int(flags.size), alerts=int((flags > 0).sum()))
    return DriftReference(
        n_rows=len(reference), columns=columns, skipped=calendar, score=score, alert=alert
    )


def detect_drift(ref: DriftReference, current: pd.DataFrame, cfg: DriftConfig) -> list[Check]:
    """One Check per reference column (kind "data"), then the score and the alert rate (kind
    "prediction") when the reference has them. A check that cannot judge (too few rows, all
    missing, calendar column) does not fire and says why in `detail["skipped"]`."""
    needed = [c.name for c in ref.columns]
    needed += [SCORE] if ref.score else []
    needed += [ALERT] if ref.alert else []
    missing = [c for c in needed if c not in current.columns]
    if missing:
        raise DriftInputError(
            f"the current window lacks column(s) the reference has: {missing} "
            f"(present: {sorted(current.columns)[:10]}{' ...' if current.shape[1] > 10 else ''})"
        )
    checks = [_column_check(col, current, cfg, "data") for col in ref.columns]
    for name in ref.skipped:
        checks.append(_skipped_calendar(name, cfg))
    if ref.score is not None:
        checks.append(_column_check(ref.score, current, cfg, "prediction"))
    if ref.alert is not None:
        checks.append(_alert_check(ref.alert, current, cfg.alert_rate))
    return checks


def drift_detected(checks: Sequence[Check], cfg: DriftConfig) -> tuple[bool, list[str]]:
    """The data set's verdict and its reasons, naming columns and statistics.

    Drift when any of: the score, the alert rate, the raw amount or an important feature drifted
    (each as `cfg.dataset` enables), or at least `drifted_share` of the checked features did.
    """
    rule = cfg.dataset
    judged = [c for c in checks if "skipped" not in c.detail]
    if not judged:
        why = sorted({str(c.detail.get("skipped")) for c in checks}) or ["no checks were run"]
        return False, [f"no drift check could be judged: {'; '.join(why)}"]
    reasons: list[str] = []
    fired = [c for c in judged if c.fired]
    features = [c for c in judged if c.kind == "data" and c.column != AMOUNT]
    drifted_features = [c for c in features if c.fired]
    for c in fired:
        if c.column == SCORE and rule.on_score:
            reasons.append(f"prediction drift: the score {_says(c)}")
        elif c.column == ALERT and rule.on_alert_rate:
            reasons.append(f"prediction drift: the alert rate {_says(c)}")
        elif c.column == AMOUNT and rule.on_amount:
            reasons.append(f"data drift: the raw amount {_says(c)}")
        elif c.column in rule.important_columns:
            reasons.append(f"data drift: important feature {c.column} {_says(c)}")
    share = len(drifted_features) / len(features) if features else 0.0
    summary = (
        f"{len(drifted_features)} of {len(features)} features drifted ({share:.0%}; the rule "
        f"is >= {rule.drifted_share:.0%})"
    )
    if features and share >= rule.drifted_share:
        reasons.append(f"data drift: {summary}: {', '.join(c.name for c in drifted_features)}")
    if reasons:
        return True, reasons
    if fired:
        return False, [
            f"no decisive drift: {', '.join(f'{c.column} {_says(c)}' for c in fired)}; "
            f"none is the score, the alert rate, the amount or an important feature, and {summary}"
        ]
    return False, [f"no drift: all {len(judged)} judged checks are within their thresholds"]


# ------------------------------------------------------------------------------------------


def _says(c: Check) -> str:
    if c.method == ALERT_METHOD:
        d = c.detail
        return (
            f"moved from {d['reference_rate']:.3%} to {d['current_rate']:.3%} (ratio "
            f"{c.statistic:.2f}, limit {c.threshold:g}x, p = {d['p_value']:.1e})"
        )
    return f"drifted ({c.method} {c.statistic:.3f} >= {c.threshold:g})"


def _numeric(frame: pd.DataFrame, name: str, which: str) -> np.ndarray:
    try:
        return pd.to_numeric(frame[name], errors="raise").to_numpy(dtype=float, na_value=np.nan)
    except (ValueError, TypeError) as e:
        raise DriftInputError(f"column {name!r} of the {which} frame is not numeric: {e}") from e


def _summary(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    qs = np.quantile(values, _QUANTILES)
    out = {"mean": float(values.mean())}
    out.update({f"p{round(q * 100)}": float(v) for q, v in zip(_QUANTILES, qs, strict=True)})
    return out


def _fit_column(frame: pd.DataFrame, name: str, role: Role, cfg: DriftConfig) -> ColumnReference:
    values = _numeric(frame, name, "reference")
    valid = values[~np.isnan(values)]
    if valid.size == 0:
        raise DriftInputError(f"column {name!r} of the reference frame has no non-missing value")
    distinct = np.unique(valid)
    kind: Kind = (
        "categorical" if role != "score" and distinct.size <= cfg.max_categories else "continuous"
    )
    rule = cfg.rule_for(name, role, kind)
    if kind == "categorical":
        categories = [float(v) for v in distinct]
        edges: list[float] = []
        counts = binning.category_counts(valid, categories)
    else:
        categories = []
        edges = binning.quantile_edges(valid, rule.n_bins)
        counts = binning.bin_counts(valid, edges)
    return ColumnReference(
        name=name,
        role=role,
        kind=kind,
        edges=edges,
        categories=categories,
        counts=[int(c) for c in counts],
        n=int(valid.size),
        n_missing=int(values.size - valid.size),
        summary=_summary(valid),
    )


def _column_check(
    col: ColumnReference, current: pd.DataFrame, cfg: DriftConfig, kind: Any
) -> Check:
    rule = cfg.rule_for(col.name, col.role, col.kind)
    values = _numeric(current, col.name, "current")
    valid = values[~np.isnan(values)]
    detail: dict[str, Any] = {
        "column_kind": col.kind,
        "n_reference": col.n,
        "n_current": int(valid.size),
        "n_missing_current": int(values.size - valid.size),
        "reference": col.summary,
    }
    base: dict[str, Any] = {
        "name": f"drift:{col.name}",
        "kind": kind,
        "method": rule.method,
        "column": col.name,
    }
    if valid.size < rule.min_rows:
        detail["skipped"] = (
            "the current window has no rows"
            if values.size == 0
            else f"{valid.size} non-missing rows in the window, fewer than min_rows="
            f"{rule.min_rows}: too few to judge"
        )
        return Check(**base, statistic=0.0, threshold=rule.threshold, fired=False, detail=detail)
    if col.kind == "categorical":
        counts = binning.category_counts(valid, col.categories)
        labels = [f"{v:g}" for v in col.categories] + ["other"]
        detail["reference_shares"] = dict(
            zip(labels, _rounded(binning.shares(np.asarray(col.counts))), strict=True)
        )
        detail["current_shares"] = dict(zip(labels, _rounded(binning.shares(counts)), strict=True))
    else:
        counts = binning.bin_counts(valid, col.edges)
        detail["current"] = _summary(valid)
        detail["bins"] = len(col.edges) + 1
    ref_shares = binning.shares(np.asarray(col.counts, dtype=float))
    cur_shares = binning.shares(counts)
    floor = binning.noise_floor(len(col.counts), col.n, int(valid.size), rule.noise_alpha)
    if rule.method == "psi":
        stat = binning.psi(ref_shares, cur_shares)
    else:
        stat = binning.jensenshannon(ref_shares, cur_shares)
        floor = binning.js_from_psi(floor)
    detail["noise_floor"] = floor
    fired = stat >= rule.threshold and stat >= floor
    return Check(**base, statistic=stat, threshold=rule.threshold, fired=fired, detail=detail)


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in values]


def _skipped_calendar(name: str, cfg: DriftConfig) -> Check:
    rule = cfg.rule_for(name, "feature", "categorical")
    return Check(
        name=f"drift:{name}",
        kind="data",
        method=rule.method,
        statistic=0.0,
        threshold=rule.threshold,
        fired=False,
        column=name,
        detail={
            "skipped": "calendar feature (DriftConfig.calendar_columns): the window's dates fix "
            "its distribution, e.g. a weekday's batch has no weekend rows"
        },
    )


def _alert_check(ref: AlertReference, current: pd.DataFrame, rule: AlertRateRule) -> Check:
    flags = _numeric(current, ALERT, "current")
    flags = flags[~np.isnan(flags)]
    n, alerts = int(flags.size), int((flags > 0).sum())
    p0 = ref.rate
    p1 = alerts / n if n else 0.0
    detail: dict[str, Any] = {
        "n_reference": ref.n,
        "n_current": n,
        "reference_alerts": ref.alerts,
        "current_alerts": alerts,
        "reference_rate": p0,
        "current_rate": p1,
        "alpha": rule.alpha,
    }
    base: dict[str, Any] = {
        "name": "drift:alert_rate",
        "kind": "prediction",
        "method": ALERT_METHOD,
        "column": ALERT,
    }
    expected = p0 * n
    if ref.alerts == 0 or expected < rule.min_expected_alerts:
        detail["skipped"] = (
            "the current window has no rows"
            if n == 0
            else "the reference has no alerts"
            if ref.alerts == 0
            else f"{n} rows in the window: {expected:.1f} alerts expected at the reference rate, "
            f"fewer than min_expected_alerts={rule.min_expected_alerts:g}: too few to judge"
        )
        return Check(**base, statistic=1.0, threshold=rule.max_ratio, fired=False, detail=detail)
    ratio = p1 / p0
    pooled = (ref.alerts + alerts) / (ref.n + n)
    se = math.sqrt(pooled * (1 - pooled) * (1 / ref.n + 1 / n))
    z = (p1 - p0) / se if se > 0 else 0.0
    p_value = math.erfc(abs(z) / math.sqrt(2))
    detail.update(z=z, p_value=p_value)
    big = ratio >= rule.max_ratio or ratio <= 1 / rule.max_ratio
    return Check(
        **base,
        statistic=ratio,
        threshold=rule.max_ratio,
        fired=big and p_value < rule.alpha,
        detail=detail,
    )
