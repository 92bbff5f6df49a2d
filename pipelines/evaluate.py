"""Evaluate step: fraud-grade metrics on the test window, DVC plots and pictures.

Also the handbook's prequential protocol (`prequential_evaluation`): several train/delay/test
folds a week apart, so our figures can sit beside the Fraud Detection Handbook's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve

from fraud import schema
from fraud.metrics import (
    CostModel,
    average_precision,
    card_precision_at_k,
    metrics_at_threshold,
    roc_auc,
)
from pipelines.artifacts import atomic_path, write_json, write_parquet
from pipelines.params import TrainParams
from pipelines.splits import TimeSplit, prequential_splits, train_test_frames
from pipelines.train import fit_booster, predict

#: The Fraud Detection Handbook's published test-set results (chapter 5, model selection,
#: prequential protocol on its simulated data), for comparison in reports and model cards.
HANDBOOK_REFERENCE: dict[str, dict[str, float]] = {
    "logistic_regression": {"average_precision": 0.623},
    "random_forest": {"average_precision": 0.678},
    "xgboost": {"average_precision": 0.687, "card_precision_at_100": 0.30, "roc_auc": 0.87},
}
#: Calibration bins hold equal numbers of transactions (quantiles of the scores): with fraud
#: this rare, equal-width bins above the lowest hold a handful of transactions each, and their
#: observed fraud rates jump about.
CALIBRATION_BINS = 10


def score_frame(
    frame: pd.DataFrame, scores: np.ndarray, threshold: float, top_k: int, cost: CostModel
) -> dict[str, float]:
    """Every metric of one set of scores on labelled transactions."""
    y = frame[schema.TX_FRAUD].to_numpy()
    at = metrics_at_threshold(y, scores, threshold, cost).as_dict()
    return {
        "roc_auc": roc_auc(y, scores),
        "average_precision": average_precision(y, scores),
        f"card_precision_at_{top_k}": card_precision_at_k(frame, scores, top_k),
        "transactions": float(len(y)),
        "frauds": float(y.sum()),
        **{f"at_threshold.{k}": v for k, v in at.items()},
    }


@dataclass(frozen=True)
class EvaluationResult:
    metrics: dict[str, Any]
    test: pd.DataFrame
    scores: np.ndarray


def evaluate_model(
    booster: xgb.Booster,
    features_frame: pd.DataFrame,
    feature_names: list[str],
    split: TimeSplit,
    threshold: float,
    top_k: int,
    cost: CostModel,
) -> EvaluationResult:
    """Metrics of the model on the split's test window (known compromised cards removed)."""
    _, test = train_test_frames(features_frame, split)
    if len(test) == 0 or test[schema.TX_FRAUD].sum() == 0:
        raise ValueError(
            f"the test window {split.describe()['test']} has no frauds to evaluate on: "
            "check split.* against the data's dates"
        )
    scores = predict(booster, test, feature_names)
    metrics: dict[str, Any] = score_frame(test, scores, threshold, top_k, cost)
    metrics["window"] = split.describe()
    metrics["cost_model"] = {"missed_fraud": cost.missed_fraud, "alert": cost.alert}
    return EvaluationResult(metrics, test, scores)


def _downsample(df: pd.DataFrame, n: int = 400) -> pd.DataFrame:
    if len(df) <= n:
        return df
    idx = np.unique(np.linspace(0, len(df) - 1, n).round().astype(int))
    return df.iloc[idx]


def write_plots(
    result: EvaluationResult, booster: xgb.Booster, out_dir: Path, threshold: float
) -> dict[str, Path]:
    """DVC plot data (JSON) and matching PNG pictures of PR, ROC, calibration, importance."""
    y = result.test[schema.TX_FRAUD].to_numpy()
    s = result.scores
    out_dir.mkdir(parents=True, exist_ok=True)
    precision, recall, _ = precision_recall_curve(y, s)
    pr = _downsample(pd.DataFrame({"recall": recall[::-1], "precision": precision[::-1]}))
    fpr, tpr, _ = roc_curve(y, s)
    roc = _downsample(pd.DataFrame({"fpr": fpr, "tpr": tpr}))
    prob_true, prob_pred = calibration_curve(y, s, n_bins=CALIBRATION_BINS, strategy="quantile")
    # The diagonal as a second series, so that DVC's plot shows it beside the observed rates.
    calib = pd.DataFrame(
        {"predicted": prob_pred, "observed": prob_true, "perfectly_calibrated": prob_pred}
    )
    gain = {k: float(v) for k, v in booster.get_score(importance_type="total_gain").items()}  # type: ignore[arg-type]
    total = sum(gain.values()) or 1.0
    imp = (
        pd.DataFrame({"feature": list(gain), "importance": [v / total for v in gain.values()]})
        .sort_values("importance", ascending=False)
        .reset_index(drop=True)
    )
    paths = {}
    for name, frame in (
        ("pr_curve", pr),
        ("roc_curve", roc),
        ("calibration", calib),
        ("feature_importance", imp),
    ):
        paths[name] = out_dir / f"{name}.json"
        write_json(frame.to_dict(orient="records"), paths[name])

    ap, auc = result.metrics["average_precision"], result.metrics["roc_auc"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    ax = axes[0, 0]
    ax.plot(pr["recall"], pr["precision"], lw=2)
    at = result.metrics
    ax.scatter(
        [at["at_threshold.recall"]],
        [at["at_threshold.precision"]],
        color="red",
        zorder=3,
        label=f"threshold {threshold:.3f}",
    )
    ax.set(
        xlabel="recall",
        ylabel="precision",
        title=f"Precision-recall (AP {ap:.3f})",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    ax.axhline(y.mean(), color="grey", ls=":", label=f"fraud rate {y.mean():.4f}")
    ax.legend(loc="lower left")
    ax = axes[0, 1]
    ax.plot(roc["fpr"], roc["tpr"], lw=2)
    ax.plot([0, 1], [0, 1], color="grey", ls=":")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC (AUC {auc:.3f})")
    ax = axes[1, 0]
    ax.plot(calib["predicted"], calib["observed"], marker="o", label="observed")
    lim = max(calib["predicted"].max(), calib["observed"].max(), 1e-3)
    ax.plot([0, lim], [0, lim], color="grey", ls=":", label="perfectly calibrated")
    ax.set(
        xlabel="mean predicted probability",
        ylabel="observed fraud rate",
        title=f"Calibration ({CALIBRATION_BINS} quantile bins)",
    )
    ax.legend(loc="upper left")
    ax = axes[1, 1]
    top = imp.head(15).iloc[::-1]
    ax.barh(top["feature"], top["importance"])
    ax.set(xlabel="share of total gain", title="Feature importance")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    png = out_dir / "evaluation.png"
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    paths["evaluation_png"] = png
    return paths


def write_test_scores(result: EvaluationResult, path: Path) -> None:
    """Scores of the test rows: the promotion gate compares models on exactly these rows."""
    t = result.test
    write_parquet(
        pd.DataFrame(
            {
                schema.TRANSACTION_ID: t[schema.TRANSACTION_ID].to_numpy(),
                schema.TX_DATETIME: t[schema.TX_DATETIME].to_numpy(),
                schema.CUSTOMER_ID: t[schema.CUSTOMER_ID].to_numpy(),
                schema.TX_FRAUD: t[schema.TX_FRAUD].to_numpy(),
                "score": result.scores,
            }
        ),
        path,
    )


def prequential_evaluation(
    features_frame: pd.DataFrame,
    feature_names: list[str],
    last_split: TimeSplit,
    n_folds: int,
    p: TrainParams,
    top_k: int,
) -> dict[str, Any]:
    """The handbook's prequential protocol: train/delay/test folds shifted back a week each."""
    folds: list[dict[str, Any]] = []
    for split in prequential_splits(last_split, n_folds):
        train, test = train_test_frames(features_frame, split)
        booster = fit_booster(train, feature_names, p)
        s = predict(booster, test, feature_names)
        y = test[schema.TX_FRAUD].to_numpy()
        folds.append(
            {
                "window": split.describe(),
                "average_precision": average_precision(y, s),
                "roc_auc": roc_auc(y, s),
                f"card_precision_at_{top_k}": card_precision_at_k(test, s, top_k),
            }
        )
    keys = ["average_precision", "roc_auc", f"card_precision_at_{top_k}"]
    summary = {k: float(np.mean([f[k] for f in folds])) for k in keys}
    summary.update({f"{k}_std": float(np.std([f[k] for f in folds])) for k in keys})
    return {"summary": summary, "folds": folds, "handbook_reference": HANDBOOK_REFERENCE}
