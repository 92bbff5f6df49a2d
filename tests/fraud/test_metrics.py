"""Code tests of the fraud metrics against scikit-learn, brute force and hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from fraud import schema
from fraud.metrics import (
    CostModel,
    _weighted_ap,
    average_precision,
    card_precision_at_k,
    cost_optimal_threshold,
    metrics_at_threshold,
    paired_bootstrap_ap,
    roc_auc,
)


def _labels_and_scores(
    seed: int, n: int = 400, rate: float = 0.1, decimals: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Random labels and scores that are informative, rounded so that many scores tie."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(np.int64)
    y[:2] = [0, 1]  # both classes, always
    scores = np.round(np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0, 1), decimals)
    return y, scores


# ------------------------------------------------------------------------------------------
# Threshold-free


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_matches_scikit_learn(seed: int) -> None:
    y, s = _labels_and_scores(seed)
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_scikit_learn(seed: int) -> None:
    y, s = _labels_and_scores(seed)
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_roc_auc_is_nan_with_a_single_class() -> None:
    assert math.isnan(roc_auc(np.zeros(5), np.linspace(0, 1, 5)))


# ------------------------------------------------------------------------------------------
# Card precision@k


def _cards_frame() -> tuple[pd.DataFrame, np.ndarray]:
    rows = [
        # day 1: A's card score is the max of its transactions (0.9) and it is compromised
        # because one of them (neither its first, last nor best-scored) is a fraud
        ("2018-04-01 08:00", "A", 0, 0.20),
        ("2018-04-01 12:00", "A", 1, 0.05),
        ("2018-04-01 23:59", "A", 0, 0.90),
        ("2018-04-01 10:00", "B", 0, 0.80),
        ("2018-04-01 11:00", "C", 0, 0.60),
        # day 2: A (detected on day 1) is blocked; C and D follow
        ("2018-04-02 00:01", "A", 1, 0.95),
        ("2018-04-02 10:00", "B", 0, 0.50),
        ("2018-04-02 11:00", "C", 1, 0.70),
        ("2018-04-02 12:00", "D", 0, 0.60),
        # day 3: A is still blocked
        ("2018-04-03 10:00", "A", 1, 0.99),
        ("2018-04-03 11:00", "E", 0, 0.10),
    ]
    card_ids = {"A": 1, "B": 2, "C": 3, "D": 4, "E": 5}
    frame = pd.DataFrame(
        {
            schema.TX_DATETIME: pd.to_datetime([r[0] for r in rows]),
            schema.CUSTOMER_ID: [card_ids[r[1]] for r in rows],
            schema.TX_FRAUD: [r[2] for r in rows],
        }
    )
    return frame, np.array([r[3] for r in rows])


def test_card_precision_at_k_uses_max_score_per_card_and_blocks_detected_cards() -> None:
    frame, scores = _cards_frame()
    # k=2. Day 1: top cards A (0.9, compromised), B (0.8) -> 1/2; A is detected.
    # Day 2 without A: C (0.7, compromised), D (0.6) -> 1/2. Day 3 without A: E -> 0/2.
    assert card_precision_at_k(frame, scores, k=2) == pytest.approx((0.5 + 0.5 + 0.0) / 3)


def test_card_precision_at_k_without_removal_counts_known_cards_again() -> None:
    frame, scores = _cards_frame()
    # Day 1: 1/2; day 2: A (0.95) and C (0.7) -> 2/2; day 3: A (0.99), E -> 1/2.
    got = card_precision_at_k(frame, scores, k=2, remove_detected_compromised_cards=False)
    assert got == pytest.approx((0.5 + 1.0 + 0.5) / 3)


def test_card_precision_at_k_divides_by_k_when_fewer_cards_than_k() -> None:
    frame, scores = _cards_frame()
    # Day 1: A -> 1/10; day 2 (A blocked): C -> 1/10; day 3 (A blocked): 0.
    assert card_precision_at_k(frame, scores, k=10) == pytest.approx((0.1 + 0.1 + 0.0) / 3)


def test_card_precision_at_k_is_invariant_to_row_order() -> None:
    frame, scores = _cards_frame()
    perm = np.random.default_rng(0).permutation(len(frame))
    shuffled = card_precision_at_k(frame.iloc[perm].reset_index(drop=True), scores[perm], k=2)
    assert shuffled == pytest.approx(card_precision_at_k(frame, scores, k=2))


# ------------------------------------------------------------------------------------------
# Operating threshold and cost


def _cost(y: np.ndarray, s: np.ndarray, threshold: float, cost: CostModel) -> float:
    alert = s >= threshold
    return cost.alert * alert.sum() + cost.missed_fraud * (y.astype(bool) & ~alert).sum()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(
    "cost", [CostModel(100.0, 5.0), CostModel(10.0, 3.0), CostModel(100.0, 1.0)]
)
def test_cost_optimal_threshold_minimises_cost_like_brute_force(seed: int, cost: CostModel) -> None:
    y, s = _labels_and_scores(seed, n=300)
    candidates = np.r_[np.unique(s), np.inf]  # every distinct score, and "no alert"
    best = min(_cost(y, s, t, cost) for t in candidates)
    threshold = cost_optimal_threshold(y, s, cost)
    assert _cost(y, s, threshold, cost) == pytest.approx(best)
    assert metrics_at_threshold(y, s, threshold, cost).expected_cost == pytest.approx(best)


def test_cost_optimal_threshold_alerts_on_nothing_when_alerts_cost_more_than_frauds() -> None:
    y, s = _labels_and_scores(0)
    cost = CostModel(missed_fraud=1.0, alert=1000.0)
    threshold = cost_optimal_threshold(y, s, cost)
    assert threshold > s.max()
    m = metrics_at_threshold(y, s, threshold, cost)
    assert m.alerts == 0
    assert m.false_negatives == y.sum()


def test_cost_optimal_threshold_alerts_on_every_fraud_when_alerts_are_free() -> None:
    y, s = _labels_and_scores(1)
    threshold = cost_optimal_threshold(y, s, CostModel(missed_fraud=100.0, alert=0.0))
    assert (s[y == 1] >= threshold).all()


def test_cost_optimal_threshold_of_no_transactions_is_no_alert() -> None:
    threshold = cost_optimal_threshold(np.array([], dtype=np.int64), np.array([]), CostModel())
    assert threshold > 1.0


def test_metrics_at_threshold_counts_alerts_at_or_above_the_threshold() -> None:
    y = np.array([1, 1, 0, 0, 1, 0])
    s = np.array([0.9, 0.4, 0.8, 0.1, 0.5, 0.49])
    m = metrics_at_threshold(y, s, 0.5, CostModel(missed_fraud=100.0, alert=5.0))
    assert (m.alerts, m.true_positives, m.false_positives, m.false_negatives) == (3, 2, 1, 1)
    assert m.precision == pytest.approx(2 / 3)
    assert m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.expected_cost == pytest.approx(5 * 3 + 100 * 1)
    assert m.cost_per_transaction == pytest.approx(115 / 6)
    assert m.as_dict()["alerts"] == 3.0


def test_metrics_at_threshold_without_alerts_has_zero_precision_and_recall() -> None:
    m = metrics_at_threshold(np.array([1, 0]), np.array([0.2, 0.1]), 0.5, CostModel())
    assert (m.alerts, m.precision, m.recall, m.f1) == (0, 0.0, 0.0, 0.0)
    assert m.expected_cost == pytest.approx(100.0)


# ------------------------------------------------------------------------------------------
# Paired bootstrap


def test_paired_bootstrap_of_identical_scores_has_zero_difference() -> None:
    y, s = _labels_and_scores(3)
    c = paired_bootstrap_ap(y, s, s.copy(), n_resamples=200, seed=1)
    assert c.mean_difference == 0.0
    assert c.ci_low <= 0.0 <= c.ci_high
    assert c.prob_candidate_better == 0.0
    assert c.candidate_ap == c.reference_ap


def test_paired_bootstrap_detects_a_clearly_better_candidate() -> None:
    rng = np.random.default_rng(4)
    y = (rng.random(2000) < 0.05).astype(int)
    strong = rng.normal(2.0 * y, 1.0)
    weak = rng.normal(0.5 * y, 1.0)
    c = paired_bootstrap_ap(y, strong, weak, n_resamples=300, seed=0)
    assert c.candidate_ap == pytest.approx(average_precision_score(y, strong))
    assert c.reference_ap == pytest.approx(average_precision_score(y, weak))
    assert c.ci_low > 0
    assert c.prob_candidate_better > 0.99
    assert c.mean_difference == pytest.approx(c.candidate_ap - c.reference_ap, abs=0.05)
    reverse = paired_bootstrap_ap(y, weak, strong, n_resamples=300, seed=0)
    assert reverse.ci_high < 0


def test_paired_bootstrap_is_deterministic_per_seed() -> None:
    y, s = _labels_and_scores(5)
    other = np.round(s + np.random.default_rng(9).normal(0, 0.1, len(s)), 2)
    a = paired_bootstrap_ap(y, s, other, n_resamples=100, seed=7)
    b = paired_bootstrap_ap(y, s, other, n_resamples=100, seed=7)
    c = paired_bootstrap_ap(y, s, other, n_resamples=100, seed=8)
    assert a == b
    assert (a.ci_low, a.ci_high, a.mean_difference) != (c.ci_low, c.ci_high, c.mean_difference)


def test_paired_bootstrap_interval_is_the_quantile_interval_of_paired_resample_differences() -> (
    None
):
    y, s = _labels_and_scores(8, n=200)
    other = np.round(s + np.random.default_rng(2).normal(0, 0.15, len(s)), 2)
    c = paired_bootstrap_ap(y, s, other, n_resamples=150, confidence=0.9, seed=3)
    # Independent re-computation with scikit-learn: the same rows (same generator, one batch of
    # draws) for both models, AP difference per resample, central 90% interval.
    draws = np.random.default_rng(3).integers(0, len(y), size=(150, len(y)))
    diffs = np.array(
        [
            average_precision_score(y[i], s[i]) - average_precision_score(y[i], other[i])
            for i in draws
        ]
    )
    assert c.mean_difference == pytest.approx(diffs.mean(), abs=1e-12)
    assert c.ci_low == pytest.approx(np.quantile(diffs, 0.05), abs=1e-12)
    assert c.ci_high == pytest.approx(np.quantile(diffs, 0.95), abs=1e-12)
    assert c.prob_candidate_better == pytest.approx(np.mean(diffs > 0))


def test_paired_bootstrap_reports_its_settings() -> None:
    y, s = _labels_and_scores(6)
    c = paired_bootstrap_ap(y, s, s[::-1].copy(), n_resamples=60, confidence=0.9, seed=0)
    assert (c.n_resamples, c.confidence) == (60, 0.9)
    assert c.ci_low <= c.mean_difference <= c.ci_high
    assert set(c.as_dict()) >= {"ci_low", "ci_high", "mean_difference", "candidate_ap"}


def _sorted_inputs(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    group_end = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    return order, y[order].astype(np.float64), group_end


@pytest.mark.parametrize("decimals", [1, 2, 6])
def test_weighted_ap_with_unit_weights_equals_scikit_learn_including_ties(decimals: int) -> None:
    y, s = _labels_and_scores(decimals, n=500, decimals=decimals)
    _, ys, group_end = _sorted_inputs(y, s)
    got = _weighted_ap(ys, np.ones((1, len(y))), group_end)
    assert got.shape == (1,)
    assert got[0] == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_weighted_ap_with_counts_equals_scikit_learn_with_sample_weights() -> None:
    y, s = _labels_and_scores(11, n=300, decimals=1)
    counts = np.random.default_rng(0).integers(0, 4, size=(3, len(y))).astype(np.float64)
    order, ys, group_end = _sorted_inputs(y, s)
    got = _weighted_ap(ys, counts[:, order], group_end)
    expected = [average_precision_score(y, s, sample_weight=w) for w in counts]
    np.testing.assert_allclose(got, expected, atol=1e-12)
