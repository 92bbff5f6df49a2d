"""Metrics that fraud teams use, with the Fraud Detection Handbook's definitions.

* threshold-free: ROC AUC, average precision (area under the PR curve, what the handbook calls
  AP), card precision@k per day (`card_precision_at_k`);
* at an operating threshold: precision, recall, F1, alerts and expected cost, with the threshold
  chosen to minimise cost (`cost_optimal_threshold`);
* `paired_bootstrap_ap` compares two models on the same transactions for the promotion gate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from fraud import schema


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve (step-wise, as scikit-learn computes it)."""
    from sklearn.metrics import average_precision_score  # imported when used: it is slow to load

    return float(average_precision_score(y_true, scores))


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y_true)) < 2:
        return float("nan")
    return float(roc_auc_score(y_true, scores))


def card_precision_at_k(
    frame: pd.DataFrame,
    scores: np.ndarray,
    k: int = 100,
    remove_detected_compromised_cards: bool = True,
) -> float:
    """Mean over days of the share of truly compromised cards among the k riskiest cards.

    The handbook's definition (chapter 4.3): each day, a card's score is the maximum score of its
    transactions that day and it is compromised if any of them is a fraud; the k cards with the
    highest scores are checked by investigators, and the precision is compromised/k. Cards found
    compromised leave the following days (they are blocked).
    """
    day = frame[schema.TX_DATETIME].dt.floor("D").to_numpy()
    df = pd.DataFrame(
        {
            "day": day,
            "card": frame[schema.CUSTOMER_ID].to_numpy(),
            "fraud": frame[schema.TX_FRAUD].to_numpy(),
            "score": np.asarray(scores, dtype=np.float64),
        }
    )
    per_card = df.groupby(["day", "card"], sort=True).agg(
        score=("score", "max"), fraud=("fraud", "max")
    )
    detected: set[int] = set()
    precisions = []
    for _, cards in per_card.groupby(level="day", sort=True):
        cards = cards.droplevel("day")
        if detected:
            cards = cards[~cards.index.isin(list(detected))]
        top = cards.sort_values("score", ascending=False, kind="stable").head(k)
        hits = top.index[top["fraud"].to_numpy() == 1]
        precisions.append(len(hits) / k)
        if remove_detected_compromised_cards:
            detected.update(int(c) for c in hits)
    return float(np.mean(precisions)) if precisions else float("nan")


@dataclass(frozen=True)
class CostModel:
    """What an error costs (params.yaml `evaluate.cost`): a missed fraud and an alert."""

    missed_fraud: float = 100.0
    alert: float = 5.0


@dataclass(frozen=True)
class ThresholdMetrics:
    threshold: float
    alerts: int
    true_positives: int
    false_positives: int
    false_negatives: int
    precision: float
    recall: float
    f1: float
    expected_cost: float
    cost_per_transaction: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def metrics_at_threshold(
    y_true: np.ndarray, scores: np.ndarray, threshold: float, cost: CostModel
) -> ThresholdMetrics:
    """Confusion counts, precision/recall/F1 and expected cost when alerting on score >= threshold."""
    y = np.asarray(y_true).astype(bool)
    alert = np.asarray(scores) >= threshold
    tp = int(np.sum(alert & y))
    fp = int(np.sum(alert & ~y))
    fn = int(np.sum(~alert & y))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    total = cost.alert * (tp + fp) + cost.missed_fraud * fn
    return ThresholdMetrics(
        float(threshold), tp + fp, tp, fp, fn, precision, recall, f1, total, total / max(len(y), 1)
    )


def cost_optimal_threshold(y_true: np.ndarray, scores: np.ndarray, cost: CostModel) -> float:
    """The score threshold that minimises alert cost + missed-fraud cost on these labels.

    Alerting on score >= threshold; evaluated at every distinct score (and at "no alert").
    """
    y = np.asarray(y_true).astype(np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if len(s) == 0:
        return float(np.nextafter(1.0, np.inf))  # nothing to alert on: above every probability
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    alerts = np.arange(1, len(s) + 1)
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    costs = cost.alert * alerts + cost.missed_fraud * (y.sum() - tp)
    costs = np.where(last_of_tie, costs, np.inf)
    best = int(np.argmin(costs))
    no_alert_cost = cost.missed_fraud * y.sum()
    if no_alert_cost <= costs[best]:
        return float(np.nextafter(s.max(initial=1.0), np.inf))
    return float(s_sorted[best])


@dataclass(frozen=True)
class BootstrapComparison:
    """Paired bootstrap of AP(candidate) - AP(reference) on the same transactions."""

    candidate_ap: float
    reference_ap: float
    mean_difference: float
    ci_low: float
    ci_high: float
    confidence: float
    n_resamples: int
    prob_candidate_better: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def _weighted_ap(y_sorted: np.ndarray, w: np.ndarray, group_end: np.ndarray) -> np.ndarray:
    """AP per row of weights `w` (resamples x n) for scores already sorted descending.

    `group_end` marks the last row of each run of tied scores: precision and recall are read
    only there, which matches scikit-learn's handling of ties.
    """
    tp = np.cumsum(w * y_sorted, axis=1)
    fp = np.cumsum(w * (1 - y_sorted), axis=1)
    tp, fp = tp[:, group_end], fp[:, group_end]
    total_pos = tp[:, -1:]
    precision = tp / np.maximum(tp + fp, 1e-12)
    recall = tp / np.maximum(total_pos, 1e-12)
    d_recall = np.diff(np.concatenate([np.zeros((w.shape[0], 1)), recall], axis=1), axis=1)
    return np.sum(d_recall * precision, axis=1)


def paired_bootstrap_ap(
    y_true: np.ndarray,
    candidate_scores: np.ndarray,
    reference_scores: np.ndarray,
    n_resamples: int = 500,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapComparison:
    """Resample transactions with replacement (the same draw for both models) and return the
    distribution of the AP difference, so that noise in one test window cannot promote a model."""
    y = np.asarray(y_true, dtype=np.float64)
    rng = np.random.default_rng(seed)
    n = len(y)
    prepared = []
    for s in (candidate_scores, reference_scores):
        s = np.asarray(s, dtype=np.float64)
        order = np.argsort(-s, kind="stable")
        s_sorted = s[order]
        group_end = np.r_[s_sorted[1:] != s_sorted[:-1], True]
        prepared.append((order, y[order], group_end))
    diffs = []
    batch = max(1, min(n_resamples, 20_000_000 // max(n, 1)))
    done = 0
    while done < n_resamples:
        b = min(batch, n_resamples - done)
        draws = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        counts = np.bincount(draws.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        ap = [_weighted_ap(ys, counts[:, order], ge) for order, ys, ge in prepared]
        diffs.append(ap[0] - ap[1])
        done += b
    d = np.concatenate(diffs)
    alpha = 1 - confidence
    return BootstrapComparison(
        candidate_ap=average_precision(y, candidate_scores),
        reference_ap=average_precision(y, reference_scores),
        mean_difference=float(d.mean()),
        ci_low=float(np.quantile(d, alpha / 2)),
        ci_high=float(np.quantile(d, 1 - alpha / 2)),
        confidence=confidence,
        n_resamples=n_resamples,
        prob_candidate_better=float(np.mean(d > 0)),
    )
