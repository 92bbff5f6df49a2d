"""Drift detection: what fires, what does not, and what the verdict says."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraud.features import FeatureConfig, compute_features
from fraud.simulator import SimulatorConfig, simulate
from monitoring.checks import Check
from monitoring.drift import (
    ColumnRule,
    DatasetRule,
    DriftConfig,
    DriftInputError,
    DriftReference,
    detect_drift,
    drift_detected,
    fit_reference,
    top_features,
)
from monitoring.frames import ALERT, AMOUNT, SCORE, TIME

THRESHOLD = 0.2
EXTRA = [f"F_{i}" for i in range(10)]


def frame(
    n: int,
    seed: int,
    *,
    amount_x: float = 1.0,
    night: float = 0.2,
    score_x: float = 1.0,
    shift: dict[str, float] | None = None,
) -> pd.DataFrame:
    """A monitoring frame: log columns, then features (continuous, mostly-zero, binary)."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.5, 0.9, n) * amount_x
    score = np.clip(rng.beta(0.3, 8.0, n) * score_x, 0, 1)
    out = pd.DataFrame(
        {
            TIME: pd.Timestamp("2018-08-01") + pd.to_timedelta(rng.integers(0, 86_400, n), "s"),
            AMOUNT: amount,
            SCORE: score,
            ALERT: (score >= THRESHOLD).astype(np.int64),
            "TX_AMOUNT": amount,
            "TX_DURING_WEEKEND": np.zeros(n),
            "TX_DURING_NIGHT": (rng.random(n) < night).astype(float),
            "TERMINAL_ID_RISK_7DAY_WINDOW": np.where(rng.random(n) < 0.9, 0.0, rng.random(n)),
        }
    )
    for name in EXTRA:
        out[name] = rng.normal(0.0, 1.0, n)
    for name, by in (shift or {}).items():
        out[name] = out[name] + by
    return out


@pytest.fixture(scope="module")
def cfg() -> DriftConfig:
    return DriftConfig()


@pytest.fixture(scope="module")
def ref(cfg: DriftConfig) -> DriftReference:
    return fit_reference(frame(40_000, seed=0), cfg)


def fired(checks: list[Check]) -> set[str]:
    return {str(c.column) for c in checks if c.fired}


def test_identical_distributions_fire_no_check_and_no_drift(
    ref: DriftReference, cfg: DriftConfig
) -> None:
    checks = detect_drift(ref, frame(10_000, seed=1), cfg)
    assert fired(checks) == set()
    drifted, reasons = drift_detected(checks, cfg)
    assert not drifted
    assert reasons[0].startswith("no drift")


def test_one_check_per_column_then_score_and_alert_rate(
    ref: DriftReference, cfg: DriftConfig
) -> None:
    checks = detect_drift(ref, frame(5_000, seed=1), cfg)
    names = [c.name for c in checks]
    assert len(names) == len(set(names))
    assert {c.column for c in checks if c.kind == "data"} >= {AMOUNT, "TX_AMOUNT", *EXTRA}
    assert [c.column for c in checks if c.kind == "prediction"] == [SCORE, ALERT]


def test_shifted_amount_fires_on_amount_and_names_it(ref: DriftReference, cfg: DriftConfig) -> None:
    checks = detect_drift(ref, frame(10_000, seed=2, amount_x=1.3), cfg)
    assert {AMOUNT, "TX_AMOUNT"} <= fired(checks)
    amount = next(c for c in checks if c.column == AMOUNT)
    assert amount.detail["current"]["mean"] > 1.25 * amount.detail["reference"]["mean"]
    drifted, reasons = drift_detected(checks, cfg)
    assert drifted
    assert any("raw amount" in r and "psi" in r for r in reasons)


def test_binary_proportion_change_fires_as_categorical(
    ref: DriftReference, cfg: DriftConfig
) -> None:
    checks = detect_drift(ref, frame(10_000, seed=3, night=0.35), cfg)
    night = next(c for c in checks if c.column == "TX_DURING_NIGHT")
    assert night.fired
    assert night.detail["column_kind"] == "categorical"
    assert night.detail["current_shares"]["1"] == pytest.approx(0.35, abs=0.02)


def test_score_shift_fires_as_prediction_drift(ref: DriftReference, cfg: DriftConfig) -> None:
    checks = detect_drift(ref, frame(10_000, seed=4, score_x=1.5), cfg)
    score = next(c for c in checks if c.column == SCORE)
    assert score.fired and score.kind == "prediction"
    drifted, reasons = drift_detected(checks, cfg)
    assert drifted and any("the score drifted" in r for r in reasons)


def test_alert_rate_change_fires_with_its_rates(ref: DriftReference, cfg: DriftConfig) -> None:
    current = frame(10_000, seed=5)
    rng = np.random.default_rng(5)
    extra = rng.random(len(current)) < 2 * current[ALERT].mean()  # about triples the rate
    current[ALERT] = (current[ALERT].astype(bool) | extra).astype(np.int64)
    checks = detect_drift(ref, current, cfg)
    alert = next(c for c in checks if c.column == ALERT)
    assert alert.fired
    assert alert.statistic >= cfg.alert_rate.max_ratio
    assert alert.detail["p_value"] < cfg.alert_rate.alpha
    _, reasons = drift_detected(checks, cfg)
    assert any("alert rate moved" in r for r in reasons)


def test_small_alert_rate_wobble_does_not_fire(ref: DriftReference, cfg: DriftConfig) -> None:
    current = frame(10_000, seed=6)
    rng = np.random.default_rng(6)
    extra = rng.random(len(current)) < 0.2 * current[ALERT].mean()  # +20%
    current[ALERT] = (current[ALERT].astype(bool) | extra).astype(np.int64)
    alert = next(c for c in detect_drift(ref, current, cfg) if c.column == ALERT)
    assert not alert.fired


def test_too_small_window_does_not_fire_and_says_why(ref: DriftReference, cfg: DriftConfig) -> None:
    checks = detect_drift(ref, frame(50, seed=7, amount_x=3.0, score_x=3.0), cfg)
    assert fired(checks) == set()
    amount = next(c for c in checks if c.column == AMOUNT)
    assert "min_rows=200" in amount.detail["skipped"]
    alert = next(c for c in checks if c.column == ALERT)
    assert "min_expected_alerts" in alert.detail["skipped"]
    drifted, reasons = drift_detected(checks, cfg)
    assert not drifted and "too few to judge" in reasons[0]


def test_noise_floor_keeps_a_few_hundred_rows_from_firing_on_noise(
    ref: DriftReference, cfg: DriftConfig
) -> None:
    # The amount's threshold (0.01) is below what 300 rows of noise reach on 10 bins.
    fires = [
        next(c for c in detect_drift(ref, frame(300, seed=s), cfg) if c.column == AMOUNT)
        for s in range(20)
    ]
    assert not any(c.fired for c in fires)
    assert all(c.detail["noise_floor"] > cfg.amount.threshold for c in fires)


def test_empty_window_fires_nothing_and_says_so(ref: DriftReference, cfg: DriftConfig) -> None:
    checks = detect_drift(ref, frame(10, seed=8).iloc[:0], cfg)
    assert fired(checks) == set()
    drifted, reasons = drift_detected(checks, cfg)
    assert not drifted
    assert "the current window has no rows" in reasons[0]


def test_missing_column_error_names_it(ref: DriftReference, cfg: DriftConfig) -> None:
    with pytest.raises(DriftInputError, match="TERMINAL_ID_RISK_7DAY_WINDOW"):
        detect_drift(ref, frame(1_000, seed=9).drop(columns="TERMINAL_ID_RISK_7DAY_WINDOW"), cfg)


def test_non_numeric_column_error_names_it(ref: DriftReference, cfg: DriftConfig) -> None:
    current = frame(1_000, seed=9)
    current["F_3"] = "x"
    with pytest.raises(DriftInputError, match="'F_3'"):
        detect_drift(ref, current, cfg)


def test_unknown_override_or_important_column_error_names_it() -> None:
    with pytest.raises(DriftInputError, match="NOT_A_FEATURE"):
        fit_reference(frame(1_000, 0), DriftConfig(overrides={"NOT_A_FEATURE": ColumnRule()}))
    with pytest.raises(DriftInputError, match=r"important_columns.*NOPE"):
        fit_reference(frame(1_000, 0), DriftConfig(dataset=DatasetRule(important_columns=["NOPE"])))


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="threshhold"):
        DriftConfig.model_validate({"amount": {"threshhold": 0.1}})


def test_nan_values_are_left_out_and_counted(ref: DriftReference, cfg: DriftConfig) -> None:
    current = frame(5_000, seed=10)
    current.loc[current.index[:1_000], "F_0"] = np.nan
    check = next(c for c in detect_drift(ref, current, cfg) if c.column == "F_0")
    assert not check.fired
    assert check.detail["n_missing_current"] == 1_000
    assert check.detail["n_current"] == 4_000


def test_calendar_column_is_not_checked_and_says_why(ref: DriftReference, cfg: DriftConfig) -> None:
    current = frame(5_000, seed=11)
    current["TX_DURING_WEEKEND"] = 1.0  # a Saturday's batch
    check = next(c for c in detect_drift(ref, current, cfg) if c.column == "TX_DURING_WEEKEND")
    assert not check.fired and "calendar feature" in check.detail["skipped"]


def test_override_changes_one_columns_method_and_threshold(ref: DriftReference) -> None:
    cfg = DriftConfig(overrides={"F_1": ColumnRule(method="jensenshannon", threshold=0.05)})
    checks = detect_drift(fit_reference(frame(20_000, 0), cfg), frame(5_000, 12), cfg)
    f1 = next(c for c in checks if c.column == "F_1")
    assert (f1.method, f1.threshold) == ("jensenshannon", 0.05)
    assert next(c for c in checks if c.column == "F_2").method == "psi"


def test_reference_round_trips_through_json(ref: DriftReference, cfg: DriftConfig) -> None:
    again = DriftReference.model_validate_json(ref.model_dump_json())
    current = frame(5_000, seed=13, amount_x=1.2)
    assert detect_drift(again, current, cfg) == detect_drift(ref, current, cfg)


def test_two_important_features_drifting_fire_where_half_the_columns_would_not(
    ref: DriftReference,
) -> None:
    cfg = DriftConfig(dataset=DatasetRule(important_columns=["F_0", "F_1"]))
    checks = detect_drift(ref, frame(10_000, seed=14, shift={"F_0": 0.8, "F_1": 0.8}), cfg)
    data = [c for c in checks if c.kind == "data" and "skipped" not in c.detail]
    assert fired(checks) == {"F_0", "F_1"}
    assert sum(c.fired for c in data) / len(data) < 0.5  # Evidently's default rule: no drift
    drifted, reasons = drift_detected(checks, cfg)
    assert drifted
    assert any("important feature F_0" in r for r in reasons)
    assert any("important feature F_1" in r for r in reasons)


def test_unimportant_feature_alone_is_reported_but_not_drift(ref: DriftReference) -> None:
    cfg = DriftConfig(dataset=DatasetRule(important_columns=["F_0"]))
    checks = detect_drift(ref, frame(10_000, seed=15, shift={"F_5": 0.8}), cfg)
    drifted, reasons = drift_detected(checks, cfg)
    assert fired(checks) == {"F_5"}
    assert not drifted and "F_5" in reasons[0] and "no decisive drift" in reasons[0]


def test_a_share_of_features_drifting_fires(ref: DriftReference, cfg: DriftConfig) -> None:
    shifted = {name: 0.8 for name in EXTRA[:4]}
    drifted, reasons = drift_detected(detect_drift(ref, frame(10_000, 16, shift=shifted), cfg), cfg)
    assert drifted and any("4 of 13 features drifted" in r for r in reasons)


def test_top_features_orders_by_importance() -> None:
    assert top_features({"a": 1.0, "b": 3.0, "c": 2.0}, 2) == ["b", "c"]


@pytest.fixture(scope="module")
def simulated() -> pd.DataFrame:
    sim = simulate(SimulatorConfig(n_customers=500, n_terminals=1_000, n_days=70, seed=11))
    feats = compute_features(sim, FeatureConfig())
    out = pd.DataFrame({TIME: feats["TX_DATETIME"], AMOUNT: feats["TX_AMOUNT"]})
    for name in FeatureConfig().names.ordered:
        out[name] = feats[name].astype(float)
    return out


def test_simulator_weekend_and_weekday_batches_do_not_fire(simulated: pd.DataFrame) -> None:
    cfg = DriftConfig()
    day = simulated[TIME].dt.normalize()
    start = day.min()
    ref = fit_reference(
        simulated[(day >= start + pd.Timedelta(days=35)) & (day < start + pd.Timedelta(days=63))],
        cfg,
    )
    later = simulated[day >= start + pd.Timedelta(days=63)]
    weekend = later[later[TIME].dt.dayofweek >= 5]
    weekday = later[later[TIME].dt.dayofweek < 5].head(len(weekend))
    assert len(weekend) > 1_000
    for batch in (weekend, weekday):
        checks = detect_drift(ref, batch, cfg)
        assert fired(checks) == set(), [c for c in checks if c.fired]
        assert drift_detected(checks, cfg)[0] is False
