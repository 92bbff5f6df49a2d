"""A Markdown model card for every registered version (an MLflow artifact).

Figures are compared like for like only: the test window's metrics (one week) stand alone; the
prequential protocol's means over several weeks stand beside the handbook's figures, which come
from that same protocol.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pipelines.evaluate import HANDBOOK_REFERENCE
from pipelines.register import Decision, Lineage


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _handbook(model: str, metric: str) -> str:
    value = HANDBOOK_REFERENCE[model].get(metric)
    return "" if value is None else f"{value:g}"


def _days(window: str) -> int:
    """Days in a window as TimeSplit.describe() writes it: `first .. last`, both included."""
    first, last = (dt.date.fromisoformat(d.strip()) for d in window.split(".."))
    return (last - first).days + 1


def _prequential_section(prequential: dict[str, Any] | None, top_k: int) -> list[str]:
    """The handbook's protocol: our means over its folds beside the handbook's own figures."""
    lines = ["## The handbook's protocol, beside the handbook's figures"]
    if not prequential:
        return [*lines, "Not run for this version (`fraud prequential`): no handbook comparison."]
    s = prequential["summary"]
    folds = prequential["folds"]
    tests = ", ".join(f["window"]["test"] for f in folds)
    train, delay, test = (_days(folds[0]["window"][k]) for k in ("train", "delay", "test"))
    lines += [
        f"The Fraud Detection Handbook's prequential protocol (chapter 5): {len(folds)} folds a "
        f"week apart, each trained on {train} days and tested on {test} days after a {delay}-day "
        f"delay (test windows {tests}); mean ± standard deviation over the folds. The "
        "handbook's figures (its published results, on its simulated data) come from the same "
        "protocol.",
        "",
        "| metric | this model | handbook XGBoost | handbook random forest "
        "| handbook logistic regression |",
        "| --- | --- | --- | --- | --- |",
    ]
    cp = f"card_precision_at_{top_k}"
    for label, key in (
        ("average precision", "average_precision"),
        ("ROC AUC", "roc_auc"),
        (f"card precision@{top_k}", cp),
    ):
        ours = f"{s[key]:.4f} ± {s[f'{key}_std']:.4f}"
        reference = key if key != cp else "card_precision_at_100" if top_k == 100 else ""
        handbook = [
            _handbook(model, reference)
            for model in ("xgboost", "random_forest", "logistic_regression")
        ]
        lines.append(f"| {label} | {ours} | {' | '.join(handbook)} |")
    return lines


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
    """The card: lineage, features, test-window metrics, the handbook comparison, threshold."""
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
        "## Metrics on the test window",
        f"This model on its own test window ({w['test']}: one week after the delay gap, known "
        "compromised cards removed as in the handbook). One week's figures: the handbook "
        "publishes none to set beside them (see the protocol below).",
        "",
        "| metric | this model |",
        "| --- | --- |",
        f"| average precision | {_fmt(metrics['average_precision'])} |",
        f"| ROC AUC | {_fmt(metrics['roc_auc'])} |",
        f"| card precision@{top_k} | {_fmt(metrics[f'card_precision_at_{top_k}'])} |",
        "",
        *_prequential_section(prequential, top_k),
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
