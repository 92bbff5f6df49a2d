"""Where a monitored window comes from (`monitoring/sources.py`): a file of raw transactions
scored with the registered model, or the prediction log. Both must give the prediction-log
reader's layout, and a file's scores must be the model's on point-in-time features, with the
history published with the model standing in for the days before the file."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud import registry, schema
from fraud.features import compute_features
from fraud.predictions import WINDOW_COLUMNS, PredictionRow, open_prediction_log
from fraud.transactions_file import TransactionsFileError
from monitoring import frames
from monitoring.sources import file_window, log_window


@pytest.fixture(scope="module")
def champion(pipeline_repo):
    from tests.fraud.conftest import tracking_uri

    with tracking_uri(pipeline_repo.tracking_uri):
        version, booster = registry.load_version(registry.DEFAULT_MODEL_NAME)
    raw = pd.read_parquet(pipeline_repo.path / "data/raw/transactions.parquet")
    return version, booster, raw


def split_at(raw: pd.DataFrame, day: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    cut = pd.Timestamp(day)
    return raw[raw[schema.TX_DATETIME] < cut], raw[raw[schema.TX_DATETIME] >= cut]


def test_a_file_after_the_history_is_monitored_whole_with_the_scores_of_the_full_data(
    champion, tmp_path: Path
):
    version, booster, raw = champion
    before, after = split_at(raw, "2018-05-27")
    history = before[
        before[schema.TX_DATETIME]
        >= pd.Timestamp("2018-05-27") - pd.Timedelta(days=version.feature_config.lookback_days)
    ]
    path = tmp_path / "later.parquet"
    after.to_parquet(path, index=False)

    window = file_window(path, version, booster, history=history)

    frame = window.frame
    assert list(frame.columns[: len(WINDOW_COLUMNS)]) == list(WINDOW_COLUMNS)
    assert dict(frame.dtypes.iloc[: len(WINDOW_COLUMNS)].astype(str)) == WINDOW_COLUMNS
    assert sorted(frames.feature_columns(frame)) == sorted(version.features)
    assert frame[frames.TRANSACTION].tolist() == after[schema.TRANSACTION_ID].tolist()
    # The same features, hence scores, as on the whole data set: history stood in for the past.
    full = compute_features(raw, version.feature_config).set_index(schema.TRANSACTION_ID)
    expected = booster.inplace_predict(
        full.loc[after[schema.TRANSACTION_ID], version.features].to_numpy(np.float32)
    )
    np.testing.assert_allclose(frame[frames.SCORE], expected, rtol=1e-6)
    assert frame[frames.LABEL].tolist() == after[schema.TX_FRAUD].astype(int).tolist()
    assert (frame[frames.LABEL_KNOWN_AT] <= pd.Timestamp(window.as_of)).all()
    assert window.start == after[schema.TX_DATETIME].min().to_pydatetime()


def test_a_file_without_history_uses_its_first_days_as_history_and_says_so(
    champion, tmp_path: Path
):
    version, booster, raw = champion
    path = tmp_path / "all.parquet"
    raw.to_parquet(path, index=False)
    window = file_window(path, version, booster)
    first = raw[schema.TX_DATETIME].min()
    lookback = pd.Timedelta(days=version.feature_config.lookback_days)
    assert (window.frame[frames.TIME] >= first + lookback).all()
    assert len(window.frame) == int((raw[schema.TX_DATETIME] >= first + lookback).sum())
    assert any("history for the features only" in n for n in window.notes)


def test_an_unlabelled_csv_is_scored_with_no_labels_and_a_note(champion, tmp_path: Path):
    version, booster, raw = champion
    path = tmp_path / "unlabelled.csv"
    raw.drop(columns=[schema.TX_FRAUD, schema.TX_FRAUD_SCENARIO]).to_csv(path, index=False)
    window = file_window(path, version, booster)
    assert window.frame[frames.LABEL].isna().all()
    assert window.frame[frames.LABEL_KNOWN_AT].isna().all()
    assert any("no labels" in n for n in window.notes)


def test_a_missing_or_short_file_is_an_error_naming_the_flag(champion, tmp_path: Path):
    version, booster, raw = champion
    with pytest.raises(TransactionsFileError, match=r"--input: .* does not exist"):
        file_window(tmp_path / "nope.csv", version, booster)
    short = tmp_path / "short.parquet"
    raw[raw[schema.TX_DATETIME] < raw[schema.TX_DATETIME].min() + pd.Timedelta(days=3)].to_parquet(
        short, index=False
    )
    with pytest.raises(ValueError, match=r"--input: .* less than the .* days of history"):
        file_window(short, version, booster)


def _hourly_rows(
    t0: dt.datetime, n: int, version: Callable[[int], str] = lambda i: "1"
) -> list[PredictionRow]:
    """One prediction an hour from t0, amount 10 + i, by `version(i)`."""
    return [
        PredictionRow(
            i,
            (t0 + dt.timedelta(hours=i)).isoformat(),
            1,
            2,
            10.0 + i,
            {"TX_AMOUNT": 10.0 + i},
            0.1,
            0,
            0.5,
            "fraud-detector",
            version(i),
            t0.isoformat(),
        )
        for i in range(n)
    ]


def test_log_window_reads_the_logged_predictions_of_the_window_with_labels_known_by_as_of(
    tmp_path: Path,
):
    from fraud.predictions import FeedbackRow

    log = open_prediction_log(tmp_path / "log.sqlite")
    t0 = dt.datetime(2018, 10, 1)
    log.log_predictions(_hourly_rows(t0, 48))
    log.log_feedback(
        [
            FeedbackRow(3, 1, "2018-10-05T00:00:00", "2018-10-05T00:00:00"),
            FeedbackRow(4, 1, "2018-10-20T00:00:00", "2018-10-20T00:00:00"),
        ]
    )
    log.close()
    window = log_window(
        tmp_path / "log.sqlite", t0, t0 + dt.timedelta(days=1), t0 + dt.timedelta(days=10)
    )
    assert window.frame[frames.TRANSACTION].tolist() == list(range(24))
    labels = window.frame.set_index(frames.TRANSACTION)[frames.LABEL]
    assert labels[3] == 1 and pd.isna(labels[4])  # 4's label is known only after as_of
    assert frames.feature_columns(window.frame) == ["TX_AMOUNT"]


def test_log_window_of_a_version_leaves_out_other_versions_predictions_and_counts_them(
    tmp_path: Path,
):
    log = open_prediction_log(tmp_path / "log.sqlite")
    t0 = dt.datetime(2018, 10, 1)
    log.log_predictions(_hourly_rows(t0, 24, version=lambda i: "1" if i < 10 else "2"))
    log.close()
    end = t0 + dt.timedelta(days=1)
    window = log_window(tmp_path / "log.sqlite", t0, end, end, model_version="2")
    assert window.frame[frames.TRANSACTION].tolist() == list(range(10, 24))
    assert set(window.frame[frames.MODEL_VERSION]) == {"2"}
    assert len(window.notes) == 1 and "10 predictions" in window.notes[0]
    assert "v1: 10" in window.notes[0]
    everything = log_window(tmp_path / "log.sqlite", t0, end, end)
    assert len(everything.frame) == 24 and everything.notes == ()
