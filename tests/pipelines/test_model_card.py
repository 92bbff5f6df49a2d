"""The model card compares like with like: one test week alone, the prequential protocol's
figures beside the handbook's figures from that protocol."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.evaluate import HANDBOOK_REFERENCE
from pipelines.model_card import render_model_card
from pipelines.register import Decision, Lineage

TEST_WINDOW = "2018-08-08 .. 2018-08-14"
METRICS: dict[str, Any] = {
    "average_precision": 0.7321,
    "roc_auc": 0.9093,
    "card_precision_at_100": 0.2871,
    "at_threshold.alerts": 412.0,
    "at_threshold.precision": 0.61,
    "at_threshold.recall": 0.72,
    "at_threshold.f1": 0.66,
    "at_threshold.expected_cost": 12345.0,
    "cost_model": {"missed_fraud": 100.0, "alert": 5.0},
    "window": {"test": TEST_WINDOW},
}
PREQUENTIAL: dict[str, Any] = {
    "summary": {
        "average_precision": 0.7371,
        "average_precision_std": 0.0118,
        "roc_auc": 0.8882,
        "roc_auc_std": 0.0051,
        "card_precision_at_100": 0.3121,
        "card_precision_at_100_std": 0.0102,
    },
    "folds": [
        {
            "window": {
                "train": f"2018-07-{d:02d} .. 2018-07-{d + 6:02d}",
                "delay": f"2018-07-{d + 7:02d} .. 2018-07-{d + 13:02d}",
                "test": f"2018-07-{d + 14:02d} .. 2018-07-{d + 20:02d}",
            }
        }
        for d in (4, 11)
    ],
}


def _card(prequential: dict[str, Any] | None) -> str:
    return render_model_card(
        model_name="fraud-detector",
        version="3",
        decision=Decision(True, "no current champion"),
        train_info={
            "train_window": {"train": "a .. b", "delay": "c .. d", "test": TEST_WINDOW},
            "rows_train": 1000,
            "frauds_train": 10,
            "rows_validation": 200,
            "features": ["TX_AMOUNT"],
            "threshold": 0.25,
        },
        metrics=METRICS,
        prequential=prequential,
        lineage=Lineage("0123abcd", "md5md5", "f" * 64),
        top_k=100,
    )


def _table_after(card: str, heading: str) -> list[list[str]]:
    """The rows (header first, separator dropped) of the first Markdown table after `heading`."""
    section = card[card.index(heading) :]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("## "):
            break
        if line.startswith("|") and not line.startswith("| ---"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_test_window_metrics_stand_alone_without_handbook_figures() -> None:
    table = _table_after(_card(PREQUENTIAL), "## Metrics on the test window")
    assert table == [
        ["metric", "this model"],
        ["average precision", "0.7321"],
        ["ROC AUC", "0.9093"],
        ["card precision@100", "0.2871"],
    ]


def test_prequential_figures_sit_beside_the_handbooks_own_prequential_figures() -> None:
    card = _card(PREQUENTIAL)
    table = _table_after(card, "## The handbook's protocol")
    header, *rows = table
    assert header[:3] == ["metric", "this model", "handbook XGBoost"]
    by_metric = {row[0]: row for row in rows}
    assert by_metric["average precision"][1:3] == [
        "0.7371 ± 0.0118",
        f"{HANDBOOK_REFERENCE['xgboost']['average_precision']:g}",
    ]
    assert by_metric["ROC AUC"][1:3] == ["0.8882 ± 0.0051", "0.87"]
    assert by_metric["card precision@100"][1:3] == ["0.3121 ± 0.0102", "0.3"]
    assert "2 folds a week apart, each trained on 7 days and tested on 7 days" in card
    assert "after a 7-day delay" in card


@pytest.mark.parametrize("prequential", [PREQUENTIAL, None], ids=["prequential", "none"])
def test_no_test_window_figure_is_set_beside_a_handbook_figure(
    prequential: dict[str, Any] | None,
) -> None:
    card = _card(prequential)
    handbook = {f"{v:g}" for ref in HANDBOOK_REFERENCE.values() for v in ref.values()}
    for line in card.splitlines():
        cells = {cell.strip() for cell in line.strip("|").split("|")}
        if handbook & cells:
            assert not {"0.7321", "0.9093", "0.2871"} & cells, line
    if prequential is None:
        assert "no handbook comparison" in card
