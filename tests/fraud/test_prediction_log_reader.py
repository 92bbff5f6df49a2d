"""The prediction log's reader on both backends, on real databases (a SQLite file, and a
PostgreSQL server started for this module: tests/pg_server.py): which predictions a window
holds, their typed columns, the features as columns, and the labels joined in."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import sqlite3
from contextlib import closing
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from fraud.predictions import (
    WINDOW_COLUMNS,
    FeedbackRow,
    PredictionLogError,
    PredictionLogReader,
    PredictionRow,
    open_prediction_log,
    postgres,
    read_window,
    sqlite,
)
from tests.pg_server import PostgresServer, postgres_server

_databases = itertools.count()


@pytest.fixture(scope="module")
def pg_server():
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def target(request, tmp_path: Path) -> str:
    """A new, empty log: a SQLite path, or a URL to a new PostgreSQL database."""
    if request.param == "sqlite":
        url = str(tmp_path / "predictions.sqlite")
    else:
        server: PostgresServer = request.getfixturevalue("pg_server")
        url = server.create_database(f"log_{next(_databases)}")
    open_prediction_log(url).close()
    return url


def prediction(i: int, tx_datetime: str, **features: float) -> PredictionRow:
    return PredictionRow(
        transaction_id=i,
        tx_datetime=tx_datetime,
        customer_id=100 + i,
        terminal_id=200 + i,
        amount=10.5 * i,
        features=features or {"TX_AMOUNT": 10.5 * i},
        score=i / 100,
        is_alert=i % 2,
        threshold=0.5,
        model_name="fraud-detector",
        model_version="7",
        logged_at="2026-01-02T03:04:05.678901",
    )


def write(target: str, predictions=(), feedback=()) -> None:
    log = open_prediction_log(target)
    try:
        for row in predictions:  # one call each, like the service's requests
            log.log_predictions([row])
        if feedback:
            log.log_feedback(list(feedback))
    finally:
        log.close()


def test_a_window_holds_the_transactions_from_its_start_up_to_not_including_its_end(target):
    times = {
        1: "2018-10-01T23:59:59.999999",  # before
        2: "2018-10-02T12:00:00.500000",
        3: "2018-10-02T00:00:00",  # exactly the start: in
        4: "2018-10-03T00:00:00",  # exactly the end: out
        5: "2018-10-02T23:59:59.999999",
    }
    write(target, [prediction(i, t) for i, t in times.items()])
    window = read_window(target, "2018-10-02", dt.datetime(2018, 10, 3))
    assert window["transaction_id"].tolist() == [3, 2, 5]  # in transaction-time order
    assert window["tx_datetime"].tolist() == [
        pd.Timestamp("2018-10-02T00:00:00"),
        pd.Timestamp("2018-10-02T12:00:00.5"),
        pd.Timestamp("2018-10-02T23:59:59.999999"),
    ]


def test_window_bounds_with_a_time_zone_are_converted_to_utc(target):
    write(target, [prediction(1, "2018-10-01T22:30:00"), prediction(2, "2018-10-02T01:00:00")])
    paris = dt.timezone(dt.timedelta(hours=2))
    window = read_window(
        target, dt.datetime(2018, 10, 2, 0, 30, tzinfo=paris), "2018-10-02T02:00:00+00:00"
    )
    assert window["transaction_id"].tolist() == [1, 2]


def test_the_frame_has_typed_columns_and_the_logged_values(target):
    write(target, [prediction(3, "2018-10-02T08:15:00", TX_AMOUNT=31.5)])
    window = read_window(target, "2018-10-02", "2018-10-03")
    assert list(window.columns) == [*WINDOW_COLUMNS, "TX_AMOUNT"]
    assert window.dtypes.astype(str).to_dict() == {**WINDOW_COLUMNS, "TX_AMOUNT": "float64"}
    row = window.iloc[0].to_dict()
    assert pd.isna(row.pop("is_fraud")) and pd.isna(row.pop("label_known_at"))  # no label yet
    assert row == {
        "transaction_id": 3,
        "tx_datetime": pd.Timestamp("2018-10-02T08:15:00"),
        "customer_id": 103,
        "terminal_id": 203,
        "amount": 31.5,
        "score": 0.03,
        "is_alert": 1,
        "threshold": 0.5,
        "model_name": "fraud-detector",
        "model_version": "7",
        "logged_at": pd.Timestamp("2026-01-02T03:04:05.678901"),
        "TX_AMOUNT": 31.5,
    }


def test_features_become_one_float_column_per_name_with_nan_where_missing(target):
    write(
        target,
        [
            prediction(1, "2018-10-02T01:00:00", B_RISK=0.25, A_NB_TX=3.0),
            prediction(2, "2018-10-02T02:00:00", B_RISK=math.nan, A_NB_TX=4.0),  # null in JSON
            prediction(3, "2018-10-02T03:00:00")._replace(features={}),
            prediction(4, "2018-10-02T04:00:00", A_NB_TX=5.0, C_NEW=1.5),  # another model's
        ],
    )
    window = read_window(target, "2018-10-02", "2018-10-03")
    features = window[["A_NB_TX", "B_RISK", "C_NEW"]]
    assert list(window.columns) == [*WINDOW_COLUMNS, "A_NB_TX", "B_RISK", "C_NEW"]
    assert (features.dtypes == "float64").all()
    expected = pd.DataFrame(
        {
            "A_NB_TX": [3.0, 4.0, math.nan, 5.0],
            "B_RISK": [0.25, math.nan, math.nan, math.nan],
            "C_NEW": [math.nan, math.nan, math.nan, 1.5],
        }
    )
    pd.testing.assert_frame_equal(features.reset_index(drop=True), expected)


def test_each_transaction_carries_its_last_received_label_and_none_without_one(target):
    write(
        target,
        [prediction(i, f"2018-10-02T0{i}:00:00") for i in (1, 2, 3)],
        [
            FeedbackRow(1, 0, "2018-10-05T00:00:00", "2026-01-01T00:00:00"),
            FeedbackRow(3, 1, "2018-10-06T00:00:00", "2026-01-01T00:00:01"),
            FeedbackRow(1, 1, "2018-10-04T00:00:00", "2026-01-01T00:00:02"),  # received last
            FeedbackRow(99, 1, "2018-10-04T00:00:00", "2026-01-01T00:00:03"),  # not predicted
        ],
    )
    window = read_window(target, "2018-10-02", "2018-10-03")
    assert window["transaction_id"].tolist() == [1, 2, 3]  # one row each, labels or not
    assert window["is_fraud"].tolist() == [1, pd.NA, 1]
    assert window["label_known_at"].tolist() == [
        pd.Timestamp("2018-10-04"),
        pd.NaT,
        pd.Timestamp("2018-10-06"),
    ]


def test_labels_known_after_labels_known_by_are_not_seen(target):
    write(
        target,
        [prediction(i, f"2018-10-02T0{i}:00:00") for i in (1, 2, 3)],
        [
            FeedbackRow(1, 1, "2018-10-04T00:00:00", "2026-01-01T00:00:00"),
            FeedbackRow(2, 1, "2018-10-09T00:00:00", "2026-01-01T00:00:01"),  # known later
            FeedbackRow(3, 0, "2018-10-04T12:00:00", "2026-01-01T00:00:02"),
            FeedbackRow(3, 1, "2018-10-09T00:00:00", "2026-01-01T00:00:03"),  # a late correction
        ],
    )
    by = dt.datetime(2018, 10, 5)
    window = read_window(target, "2018-10-02", "2018-10-03", labels_known_by=by)
    assert window["is_fraud"].tolist() == [1, pd.NA, 0]
    at_known = read_window(target, "2018-10-02", "2018-10-03", labels_known_by="2018-10-09")
    assert at_known["is_fraud"].tolist() == [1, 1, 1]  # known exactly then counts


def test_model_version_keeps_only_that_versions_predictions(target):
    write(
        target,
        [
            prediction(1, "2018-10-02T01:00:00"),
            prediction(2, "2018-10-02T02:00:00")._replace(model_version="8"),
        ],
    )
    window = read_window(target, "2018-10-02", "2018-10-03", model_version="8")
    assert window["transaction_id"].tolist() == [2]
    assert window["model_version"].tolist() == ["8"]


def test_an_empty_window_is_an_empty_frame_with_the_typed_columns(target):
    write(target, [prediction(1, "2018-10-01T01:00:00")])
    window = read_window(target, "2018-10-02", "2018-10-03")
    assert window.empty
    assert window.dtypes.astype(str).to_dict() == WINDOW_COLUMNS


def test_a_reader_sees_rows_committed_after_it_opened(target):
    """A monitoring job keeps its reader open while the service goes on writing."""
    with PredictionLogReader(target) as reader:
        assert reader.read_window("2018-10-02", "2018-10-03").empty
        write(target, [prediction(1, "2018-10-02T01:00:00")])
        assert reader.read_window("2018-10-02", "2018-10-03")["transaction_id"].tolist() == [1]


def test_a_reader_never_creates_a_log(tmp_path: Path):
    missing = tmp_path / "nothing.sqlite"
    with pytest.raises(PredictionLogError, match="no prediction log at"):
        PredictionLogReader(missing)
    with pytest.raises(PredictionLogError, match="unsupported prediction log URL"):
        PredictionLogReader("mysql://u:hunter2@db/x")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("labels_known_by", [False, True])
def test_the_window_query_uses_the_indexes_on_time_and_on_the_labels_transaction(
    target: str, labels_known_by: bool
):
    """Reading a day must not scan the whole log: the database filters through the index on
    the transaction time and finds each label through the index on its transaction id."""
    write(target, [prediction(i, f"2018-10-0{i}T01:00:00") for i in range(1, 4)])
    params = {"start": "2018-10-02", "end": "2018-10-03", "known_by": "2018-10-04"}
    if target.startswith("postgresql://"):
        sql = postgres.window_query(labels_known_by=labels_known_by, model_version=False)
        with psycopg.connect(target) as conn:
            conn.execute("SET enable_seqscan = off")  # a 3-row table: make the choice visible
            plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN {sql}", params).fetchall())
    else:
        sql = sqlite.window_query(labels_known_by=labels_known_by, model_version=False)
        with closing(sqlite3.connect(target)) as db:
            plan = "\n".join(r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "predictions_tx_datetime" in plan
    assert "feedback_tx" in plan
    assert "Seq Scan" not in plan  # PostgreSQL
    assert not any(step.startswith("SCAN") for step in plan.splitlines())  # SQLite


def test_time_range_is_the_first_and_last_transaction_time_or_none_when_empty(tmp_path):
    from fraud.predictions import PredictionLogReader, PredictionRow, open_prediction_log

    path = tmp_path / "log.sqlite"
    log = open_prediction_log(path)
    with PredictionLogReader(path) as reader:
        assert reader.time_range() is None
    times = ["2018-10-02T10:00:00", "2018-10-01T09:30:00", "2018-10-03T23:59:59"]
    log.log_predictions(
        [
            PredictionRow(i, t, 1, 2, 5.0, {"TX_AMOUNT": 5.0}, 0.1, 0, 0.5, "m", "1", t)
            for i, t in enumerate(times)
        ]
    )
    log.close()
    with PredictionLogReader(path) as reader:
        first, last = reader.time_range() or (None, None)
    assert (first, last) == (dt.datetime(2018, 10, 1, 9, 30), dt.datetime(2018, 10, 3, 23, 59, 59))
