"""`fraud score` (make score) on a file the pipeline wrote, against the registered champion."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from fraud.features import FeatureConfig
from tests.conftest import PipelineRepo

RAW = "data/raw/transactions.parquet"


@pytest.fixture(scope="module")
def whole_file_scored(
    pipeline_repo: PipelineRepo, tmp_path_factory: pytest.TempPathFactory
) -> tuple[pd.DataFrame, Path, subprocess.CompletedProcess[str]]:
    """The pipeline's whole raw file (labelled, as CSV) scored with @champion."""
    raw = pd.read_parquet(pipeline_repo.path / RAW)
    tmp = tmp_path_factory.mktemp("scoring")
    src = tmp / "transactions.csv"
    raw.to_csv(src, index=False)
    out = tmp / "scores.parquet"
    proc = pipeline_repo.run("fraud", "score", "--input", str(src), "--output", str(out))
    return raw, out, proc


def test_batch_scores_equal_pipeline_test_scores_for_the_same_transactions(
    pipeline_repo, whole_file_scored
):
    raw, out, proc = whole_file_scored
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


def test_batch_metrics_cover_only_the_transactions_with_full_feature_history(whole_file_scored):
    raw, out, proc = whole_file_scored
    lookback = FeatureConfig().lookback_days  # the tiny pipeline's features are the defaults
    since = raw["TX_DATETIME"].min() + pd.Timedelta(days=lookback)
    full = (raw["TX_DATETIME"] >= since).to_numpy()
    assert 0 < full.sum() < len(raw)
    assert f"the {full.sum():,} transactions from {since} on" in proc.stdout
    assert f"the {(~full).sum():,} earlier ones are scored but left out" in proc.stdout
    printed = re.search(r"average_precision: ([0-9.]+)", proc.stdout)
    assert printed, proc.stdout
    scores = pd.read_parquet(out)["score"].to_numpy()
    expected = average_precision_score(raw["TX_FRAUD"].to_numpy()[full], scores[full])
    assert float(printed.group(1)) == pytest.approx(expected, abs=5e-5)
    assert proc.stderr.count("warning") == 0  # 70 days of data cover the 44 days of history


def test_batch_scoring_a_file_shorter_than_the_feature_history_warns_and_says_why_no_metrics(
    pipeline_repo, tmp_path
):
    raw = pd.read_parquet(pipeline_repo.path / RAW)
    short = raw[raw["TX_DATETIME"] < raw["TX_DATETIME"].min() + pd.Timedelta(days=20)]
    src = tmp_path / "short.parquet"
    short.to_parquet(src)
    out = tmp_path / "scores.csv"
    proc = pipeline_repo.run("fraud", "score", "-i", str(src), "-o", str(out))
    lookback = FeatureConfig().lookback_days
    assert "warning: --input covers 20.0 days" in proc.stderr
    assert f"less than the {lookback} days of history" in proc.stderr
    assert (
        f"no metrics: no transaction in --input has the {lookback} days of history" in proc.stdout
    )
    assert "average_precision" not in proc.stdout
    assert len(pd.read_csv(out)) == len(short)  # every transaction is still scored


def _not_a_parquet_file(path: Path) -> None:
    path.write_bytes(b"this is not parquet")


def _negative_amount(path: Path) -> None:
    df = pd.DataFrame(
        {
            "TRANSACTION_ID": [1, 2],
            "TX_DATETIME": ["2018-04-01 10:00:00", "2018-04-01 11:00:00"],
            "CUSTOMER_ID": [1, 1],
            "TERMINAL_ID": [2, 2],
            "TX_AMOUNT": [10.0, -5.0],
        }
    )
    df.to_csv(path, index=False)


@pytest.mark.parametrize(
    ("input_name", "make_input", "output_name", "message"),
    [
        ("missing.csv", None, "scores.csv", "--input: {input} does not exist"),
        ("tx.xlsx", Path.touch, "scores.csv", "--input: {input} must be a .csv or .parquet"),
        ("tx.parquet", _not_a_parquet_file, "scores.csv", "--input: cannot read {input}"),
        (
            "tx.csv",
            _negative_amount,
            "scores.csv",
            "e.g. [row=1, TRANSACTION_ID=2, TX_AMOUNT=-5.0]",
        ),
        ("tx.csv", _negative_amount, "scores.json", "--output: {output} must end in .csv or"),
    ],
    ids=["missing", "not-csv-or-parquet", "unreadable", "contract-violation", "output-suffix"],
)
def test_batch_scoring_checks_every_input_before_touching_the_registry(
    pipeline_repo, tmp_path, input_name, make_input, output_name, message
):
    src, out = tmp_path / input_name, tmp_path / output_name
    if make_input is not None:
        make_input(src)
    untouched = tmp_path / "registry.db"  # MLflow would create it on first use
    proc = subprocess.run(
        ["fraud", "score", "-i", str(src), "-o", str(out)],
        cwd=pipeline_repo.path,
        env={**pipeline_repo.env, "MLFLOW_TRACKING_URI": f"sqlite:///{untouched}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert message.format(input=src, output=out) in proc.stderr
    assert "ingest.path" not in proc.stderr  # the user gave a flag, not params.yaml's key
    assert not untouched.exists()
    assert not out.exists()
