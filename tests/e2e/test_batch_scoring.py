"""`fraud score` (make score) on a file the pipeline wrote, against the registered champion."""

from __future__ import annotations

import pandas as pd
import pytest


def test_batch_scores_equal_pipeline_test_scores_for_the_same_transactions(pipeline_repo, tmp_path):
    raw = pd.read_parquet(pipeline_repo.path / "data/raw/transactions.parquet")
    src = tmp_path / "transactions.csv"
    raw.to_csv(src, index=False)
    out = tmp_path / "scores.parquet"
    proc = pipeline_repo.run("fraud", "score", "--input", str(src), "--output", str(out))
    assert "average_precision" in proc.stdout  # the file has TX_FRAUD: metrics are printed
    scores = pd.read_parquet(out)
    assert len(scores) == len(raw)
    assert scores["TRANSACTION_ID"].tolist() == raw["TRANSACTION_ID"].tolist()
    assert scores["score"].between(0, 1).all()
    expected = pd.read_parquet(pipeline_repo.path / "reports/test_scores.parquet")
    merged = expected.merge(scores, on="TRANSACTION_ID", suffixes=("_pipeline", "_batch"))
    assert len(merged) == len(expected)
    assert merged["score_batch"].to_numpy() == pytest.approx(
        merged["score_pipeline"].to_numpy(), abs=1e-6
    )


def test_batch_scoring_unlabelled_file_writes_csv_without_metrics(pipeline_repo, tmp_path):
    raw = pd.read_parquet(pipeline_repo.path / "data/raw/transactions.parquet").head(2000)
    src = tmp_path / "unlabelled.parquet"
    raw.drop(columns=["TX_FRAUD", "TX_FRAUD_SCENARIO"]).to_parquet(src)
    out = tmp_path / "scores.csv"
    proc = pipeline_repo.run(
        "fraud", "score", "-i", str(src), "-o", str(out), "--model-version", "1"
    )
    assert "average_precision" not in proc.stdout
    scores = pd.read_csv(out)
    assert list(scores.columns) == [
        "TRANSACTION_ID",
        "score",
        "is_alert",
        "threshold",
        "model_version",
    ]
    assert (scores["model_version"] == 1).all()


def test_batch_scoring_rejects_bad_rows_with_the_column_named(pipeline_repo, tmp_path):
    raw = pd.read_parquet(pipeline_repo.path / "data/raw/transactions.parquet").head(100)
    raw["TX_DATETIME"] = raw["TX_DATETIME"].astype(str)
    raw.loc[5, "TX_DATETIME"] = "yesterday-ish"
    src = tmp_path / "bad.csv"
    raw.to_csv(src, index=False)
    out = tmp_path / "scores.csv"
    proc = pipeline_repo.run("fraud", "score", "-i", str(src), "-o", str(out), check=False)
    assert proc.returncode == 1
    assert "TX_DATETIME" in proc.stderr and "does not parse" in proc.stderr
    assert not out.exists()


def test_batch_scoring_with_unknown_model_version_fails_clearly(pipeline_repo, tmp_path):
    raw = pd.read_parquet(pipeline_repo.path / "data/raw/transactions.parquet").head(10)
    src = tmp_path / "x.parquet"
    raw.to_parquet(src)
    proc = pipeline_repo.run(
        "fraud",
        "score",
        "-i",
        str(src),
        "-o",
        str(tmp_path / "o.csv"),
        "--model-version",
        "999",
        check=False,
    )
    assert proc.returncode == 1
    assert "version 999" in proc.stderr
