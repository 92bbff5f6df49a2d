"""Code tests of the promotion gate (`promotion_decision`, pure: no MLflow) and the lineage
hashes recorded with a registered model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud import registry, schema
from fraud.metrics import BootstrapComparison, paired_bootstrap_ap
from pipelines.params import GateParams
from pipelines.register import Decision, file_md5, params_sha256, promotion_decision

FLOORS = {"average_precision": 0.5, "roc_auc": 0.8}
PASSING = {"average_precision": 0.72, "roc_auc": 0.91}


def gate(min_improvement: float = 0.0) -> GateParams:
    return GateParams(floors=FLOORS, min_improvement=min_improvement)


@pytest.fixture(scope="module")
def labels_and_models() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = (rng.random(3000) < 0.05).astype(int)
    strong = rng.normal(2.5 * y, 1.0)
    weak = rng.normal(0.8 * y, 1.0)
    return y, strong, weak


@pytest.fixture(scope="module")
def better(labels_and_models: tuple[np.ndarray, np.ndarray, np.ndarray]) -> BootstrapComparison:
    y, strong, weak = labels_and_models
    return paired_bootstrap_ap(y, strong, weak, n_resamples=200, seed=0)


@pytest.fixture(scope="module")
def worse(labels_and_models: tuple[np.ndarray, np.ndarray, np.ndarray]) -> BootstrapComparison:
    y, strong, weak = labels_and_models
    return paired_bootstrap_ap(y, weak, strong, n_resamples=200, seed=0)


@pytest.fixture(scope="module")
def equal(labels_and_models: tuple[np.ndarray, np.ndarray, np.ndarray]) -> BootstrapComparison:
    y, strong, _ = labels_and_models
    return paired_bootstrap_ap(y, strong, strong.copy(), n_resamples=200, seed=0)


def _comparison(ci_low: float, ci_high: float) -> BootstrapComparison:
    return BootstrapComparison(
        candidate_ap=0.80,
        reference_ap=0.75,
        mean_difference=(ci_low + ci_high) / 2,
        ci_low=ci_low,
        ci_high=ci_high,
        confidence=0.95,
        n_resamples=300,
        prob_candidate_better=0.9,
    )


def test_first_model_passing_the_floors_is_promoted_as_there_is_no_champion() -> None:
    d = promotion_decision(PASSING, gate(), comparison=None)
    assert d.promote
    assert d.alias == registry.ALIAS_CHAMPION
    assert "no current champion" in d.reason
    assert "0.7200" in d.reason
    assert d.floors_failed == []


@pytest.mark.parametrize(("metric", "value"), [("average_precision", 0.49), ("roc_auc", 0.5)])
def test_model_failing_a_floor_is_not_promoted_and_the_reason_names_metric_and_floor(
    metric: str, value: float, better: BootstrapComparison
) -> None:
    metrics = {**PASSING, metric: value}
    for comparison in (None, better):  # even when it would beat the champion
        d = promotion_decision(metrics, gate(), comparison, champion_version="3")
        assert not d.promote
        assert d.alias == registry.ALIAS_CHALLENGER
        assert f"{metric} {value:.4f} < floor {FLOORS[metric]:.4f}" in d.reason
        assert len(d.floors_failed) == 1 and metric in d.floors_failed[0]


def test_model_missing_a_floor_metric_fails_that_floor() -> None:
    d = promotion_decision({"average_precision": 0.9}, gate(), None)
    assert not d.promote
    assert "roc_auc nan < floor 0.8000" in d.reason


def test_floor_equal_to_the_metric_passes() -> None:
    assert promotion_decision(dict(FLOORS), gate(), None).promote


def test_clearly_better_model_is_promoted_over_the_champion(better: BootstrapComparison) -> None:
    assert better.ci_low > 0  # the synthetic candidate is clearly better
    d = promotion_decision(PASSING, gate(), better, champion_version="3")
    assert d.promote
    assert d.alias == registry.ALIAS_CHAMPION
    assert "beats the champion" in d.reason
    assert f"{better.candidate_ap:.4f} vs champion v3 {better.reference_ap:.4f}" in d.reason
    assert d.comparison == better.as_dict()


@pytest.mark.parametrize("which", ["worse", "equal"])
def test_worse_or_equal_model_becomes_challenger_with_both_aps_in_the_reason(
    which: str, request: pytest.FixtureRequest
) -> None:
    comparison: BootstrapComparison = request.getfixturevalue(which)
    d = promotion_decision(PASSING, gate(), comparison, champion_version="7")
    assert not d.promote
    assert d.alias == registry.ALIAS_CHALLENGER
    assert "does not beat the champion" in d.reason
    assert f"{comparison.candidate_ap:.4f}" in d.reason
    assert f"champion v7 {comparison.reference_ap:.4f}" in d.reason
    assert d.floors_failed == []
    assert d.comparison == comparison.as_dict()


def test_min_improvement_must_be_exceeded_by_the_lower_bound_of_the_interval() -> None:
    c = _comparison(ci_low=0.03, ci_high=0.09)
    assert promotion_decision(PASSING, gate(0.0), c, "1").promote
    assert promotion_decision(PASSING, gate(0.02), c, "1").promote
    held = promotion_decision(PASSING, gate(0.05), c, "1")
    assert not held.promote
    assert "by more than +0.0500" in held.reason
    # The bound itself is not enough: the lower bound must exceed it.
    assert not promotion_decision(PASSING, gate(0.03), c, "1").promote


def test_decision_alias_follows_promote() -> None:
    assert Decision(True, "").alias == registry.ALIAS_CHAMPION
    assert Decision(False, "").alias == registry.ALIAS_CHALLENGER


# ------------------------------------------------------------------------------------------
# Lineage hashes


def test_file_md5_is_the_md5_of_the_file_bytes(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # several read chunks
    path = tmp_path / "data.parquet"
    path.write_bytes(data)
    assert file_md5(path) == hashlib.md5(data).hexdigest()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert file_md5(str(path)) != hashlib.md5(data).hexdigest()


def test_params_sha256_ignores_key_order_and_changes_with_any_value() -> None:
    a = {"train": {"max_depth": 3, "learning_rate": 0.1}, "split": {"train_days": 28}}
    b = {"split": {"train_days": 28}, "train": {"learning_rate": 0.1, "max_depth": 3}}
    assert params_sha256(a) == params_sha256(b)
    assert len(params_sha256(a)) == 64
    changed = {"train": {"max_depth": 4, "learning_rate": 0.1}, "split": {"train_days": 28}}
    assert params_sha256(changed) != params_sha256(a)


def test_a_floor_the_champion_misses_too_on_the_same_rows_is_waived_and_named(
    better: BootstrapComparison,
) -> None:
    metrics = {**PASSING, "roc_auc": 0.7}
    d = promotion_decision(
        metrics,
        gate(),
        better,
        "3",
        candidate_on_rows={"average_precision": 0.7, "roc_auc": 0.72},
        champion_on_rows={"average_precision": 0.6, "roc_auc": 0.65},
    )
    assert d.promote
    assert "roc_auc floor 0.8000 waived: the champion is below it too" in d.reason
    assert "(0.6500; this model 0.7200)" in d.reason


def test_a_floor_is_held_when_the_champion_passes_it_or_does_better_or_there_is_none(
    better: BootstrapComparison,
) -> None:
    metrics = {**PASSING, "roc_auc": 0.7}
    champion_passes = {"average_precision": 0.6, "roc_auc": 0.85}
    champion_better = {"average_precision": 0.6, "roc_auc": 0.75}
    candidate = {"average_precision": 0.7, "roc_auc": 0.72}
    for champion in (champion_passes, champion_better):
        d = promotion_decision(
            metrics, gate(), better, "3", candidate_on_rows=candidate, champion_on_rows=champion
        )
        assert not d.promote and "roc_auc 0.7000 < floor 0.8000" in d.reason
    first = promotion_decision(
        metrics, gate(), None, candidate_on_rows=candidate, champion_on_rows=champion_better
    )
    assert not first.promote and "fails absolute floors" in first.reason


def test_a_waived_floor_does_not_promote_a_model_that_does_not_beat_the_champion(
    equal: BootstrapComparison,
) -> None:
    d = promotion_decision(
        {**PASSING, "roc_auc": 0.7},
        gate(),
        equal,
        "3",
        candidate_on_rows={"roc_auc": 0.7},
        champion_on_rows={"roc_auc": 0.7},
    )
    assert not d.promote
    assert d.reason.startswith("does not beat the champion") and "waived" in d.reason


def test_floor_metrics_computes_the_floors_it_can_from_scores_on_the_rows(
    tiny_features: pd.DataFrame,
) -> None:
    from pipelines.register import floor_metrics

    frame = tiny_features.iloc[:20_000]
    scores = frame[schema.TX_FRAUD].to_numpy() * 0.9 + 0.05  # a perfect ranking
    out = floor_metrics(
        frame,
        scores,
        {"average_precision": 0.5, "roc_auc": 0.8, "card_precision_at_10": 0.1, "cost": 1.0},
    )
    assert out["average_precision"] == pytest.approx(1.0)
    assert out["roc_auc"] == pytest.approx(1.0)
    assert 0 < out["card_precision_at_10"] <= 1
    assert "cost" not in out
