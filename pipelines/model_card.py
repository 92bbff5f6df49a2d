"""A Markdown model card for every registered version (an MLflow artifact)."""

from __future__ import annotations

from typing import Any

from pipelines.evaluate import HANDBOOK_REFERENCE
from pipelines.register import Decision, Lineage


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def render_model_card(
    *,
    model_name: str,
    version: str,
    decision: Decision,
    train_info: dict[str, Any],
    metrics: dict[str, Any],
    prequential: dict[str, Any] | None,
    lineage: Lineage,
    top_k: int,
) -> str:
    """The card: windows, data hash, features, metrics beside the handbook's, threshold, limits."""
    w = train_info["train_window"]
    cost = metrics.get("cost_model", {})
    lines = [
        f"# Model card: {model_name} v{version}",
        "",
        f"**Alias:** `@{decision.alias}`  ",
        f"**Promotion decision:** {decision.reason}",
        "",
        "## What it is",
        "An XGBoost gradient-boosted tree classifier (native UBJSON format) that scores a card",
        "transaction's probability of fraud from the transaction and point-in-time features of",
        "its customer's and terminal's recent history.",
        "",
        "## Data and lineage",
        f"- Train window: {w['train']} ({train_info['rows_train']} transactions, "
        f"{train_info['frauds_train']} frauds); delay gap: {w['delay']}; test window: {w['test']}",
        f"- Threshold chosen on the last {train_info['rows_validation']} transactions of the train "
        "window (validation), never on the test window",
        f"- Raw data md5 (DVC): `{lineage.data_md5}`",
        f"- Git commit: `{lineage.git_commit}`; params sha256: `{lineage.params_sha256[:16]}...`",
        "",
        "## Features",
        ", ".join(f"`{f}`" for f in train_info["features"]),
        "",
        "## Metrics on the test window (known compromised cards removed, as in the handbook)",
        "| metric | this model | handbook XGBoost |",
        "| --- | --- | --- |",
        f"| average precision | {_fmt(metrics['average_precision'])} | "
        f"{HANDBOOK_REFERENCE['xgboost']['average_precision']} |",
        f"| ROC AUC | {_fmt(metrics['roc_auc'])} | {HANDBOOK_REFERENCE['xgboost']['roc_auc']} |",
        f"| card precision@{top_k} | {_fmt(metrics[f'card_precision_at_{top_k}'])} | "
        f"{HANDBOOK_REFERENCE['xgboost']['card_precision_at_100']} |",
    ]
    if prequential:
        s = prequential["summary"]
        lines += [
            "",
            f"Handbook protocol ({len(prequential['folds'])} prequential folds of 7/7/7 days): "
            f"AP {s['average_precision']:.4f} ± {s['average_precision_std']:.4f}, "
            f"ROC AUC {s['roc_auc']:.4f}, CP@{top_k} {s[f'card_precision_at_{top_k}']:.4f} "
            "(handbook: logistic regression AP 0.623, random forest 0.678, XGBoost 0.687).",
        ]
    lines += [
        "",
        "## Operating threshold and its cost assumptions",
        f"- Alert when score >= {train_info['threshold']:.6f}",
        f"- Cost model: a missed fraud costs {cost.get('missed_fraud')}, an alert costs "
        f"{cost.get('alert')} (params.yaml `evaluate.cost`)",
        f"- On the test window: {int(metrics['at_threshold.alerts'])} alerts, precision "
        f"{metrics['at_threshold.precision']:.3f}, recall {metrics['at_threshold.recall']:.3f}, "
        f"F1 {metrics['at_threshold.f1']:.3f}, expected cost {metrics['at_threshold.expected_cost']:.0f}",
        "",
        "## Intended use",
        "Ranking card transactions for investigation by a fraud team (card precision@k), and a",
        "real-time decision at the threshold above. Scores are probabilities from an unweighted",
        "model and can be compared across versions.",
        "",
        "## Known limits",
        "- Trained on simulated data (the Fraud Detection Handbook's generator) unless "
        "`ingest.source: file` was used: check the data hash above.",
        "- Frauds at a newly compromised terminal are invisible to the terminal-risk features "
        "for the label delay (7 days by default); amount-based frauds below a customer's usual "
        "amounts are hard to catch.",
        "- Features need the customer's and terminal's recent history: the serving API seeds it "
        "from the `feature_state/` artifact; scores of cards never seen before are less reliable.",
        "- The threshold assumes the cost model above; change `evaluate.cost` to match yours.",
    ]
    return "\n".join(lines) + "\n"
