"""The prediction log's writer on both backends, on real databases: a SQLite file, and a
PostgreSQL server started for this module (tests/pg_server.py).

Rows are read back with plain sqlite3 / psycopg, not through the code under test.
"""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest

from fraud.predictions import (
    FEEDBACK_COLUMNS,
    FEEDBACK_TABLE,
    PREDICTION_COLUMNS,
    PREDICTIONS_TABLE,
    FeedbackRow,
    PredictionLogError,
    PredictionRow,
    open_prediction_log,
)
from fraud.predictions.postgres import PostgresPredictionLog
from fraud.predictions.sqlite import SQLitePredictionLog
from tests.pg_server import PostgresServer, postgres_server

_databases = itertools.count()


@pytest.fixture(scope="module")
def pg_server():
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def target(request, tmp_path: Path) -> str:
    """A fresh log target: a SQLite path, or a URL to a new PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "log" / "predictions.sqlite")
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create_database(f"log_{next(_databases)}")


@pytest.fixture
def plog(target: str):
    log = open_prediction_log(target)
    yield log
    log.close()


def query(target: str, sql: str) -> list[tuple[Any, ...]]:
    if target.startswith("postgresql://"):
        with psycopg.connect(target) as conn:
            return conn.execute(sql).fetchall()
    with closing(sqlite3.connect(f"file:{target}?mode=ro", uri=True)) as db:
        return db.execute(sql).fetchall()


def read_rows(target: str, table: str) -> list[dict[str, Any]]:
    """Every row of `table` in insertion order, as dicts, features parsed from JSON."""
    cols = list(PREDICTION_COLUMNS if table == PREDICTIONS_TABLE else FEEDBACK_COLUMNS)
    order = "ctid" if target.startswith("postgresql://") else "rowid"
    rows = query(target, f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}")
    out = [dict(zip(cols, r, strict=True)) for r in rows]
    for r in out:
        if isinstance(r.get("features"), str):
            r["features"] = json.loads(r["features"])
    return out


def prediction(i: int, **features: float) -> PredictionRow:
    return PredictionRow(
        transaction_id=i,
        tx_datetime="2018-10-01T08:15:00",
        customer_id=4961,
        terminal_id=3412,
        amount=57.16,
        features=features or {"CUSTOMER_ID_NB_TX_1DAY_WINDOW": 3.0},
        score=0.125,
        is_alert=i % 2,
        threshold=0.5,
        model_name="fraud-detector",
        model_version="7",
        logged_at="2026-01-02T03:04:05.678901",
    )


def test_prediction_row_fields_are_the_contract_columns_in_order():
    assert PredictionRow._fields == tuple(PREDICTION_COLUMNS)
    assert FeedbackRow._fields == tuple(FEEDBACK_COLUMNS)


def test_predictions_round_trip_every_column_one_row_and_several(target, plog):
    plog.log_predictions([prediction(1, a=1.5, b=0.0)])  # one row
    plog.log_predictions([prediction(2, a=2.5), prediction(3, a=3.5)])  # several in one call
    rows = read_rows(target, PREDICTIONS_TABLE)
    assert [r["transaction_id"] for r in rows] == [1, 2, 3]
    assert rows[0] == {
        "transaction_id": 1,
        "tx_datetime": "2018-10-01T08:15:00",
        "customer_id": 4961,
        "terminal_id": 3412,
        "amount": 57.16,
        "features": {"a": 1.5, "b": 0.0},
        "score": 0.125,
        "is_alert": 1,
        "threshold": 0.5,
        "model_name": "fraud-detector",
        "model_version": "7",
        "logged_at": "2026-01-02T03:04:05.678901",
    }
    assert [r["features"] for r in rows[1:]] == [{"a": 2.5}, {"a": 3.5}]


def test_a_large_call_stores_each_rows_own_features(target, plog):
    """The features of a call's rows are serialised together and split between the objects:
    every row must get back exactly its own object, empty ones included."""
    features = [
        {"a": i / 8, "b": -i - 0.5, "gap": math.nan if i % 3 else 12.25} for i in range(200)
    ]
    features[5] = {}
    features[6] = {}
    features[199] = {}
    plog.log_predictions([prediction(i)._replace(features=f) for i, f in enumerate(features)])
    stored = [r["features"] for r in read_rows(target, PREDICTIONS_TABLE)]
    expected = [{k: (None if math.isnan(v) else v) for k, v in f.items()} for f in features]
    assert stored == expected


def test_feedback_round_trips(target, plog):
    plog.log_feedback([FeedbackRow(11, 1, "2018-10-08T00:00:00", "2026-01-02T00:00:00")])
    plog.log_feedback(
        [
            FeedbackRow(12, 0, "2018-10-09T00:00:00", "2026-01-03T00:00:00"),
            FeedbackRow(13, 1, "k", "r"),
        ]
    )
    assert read_rows(target, FEEDBACK_TABLE) == [
        {
            "transaction_id": 11,
            "is_fraud": 1,
            "known_at": "2018-10-08T00:00:00",
            "received_at": "2026-01-02T00:00:00",
        },
        {
            "transaction_id": 12,
            "is_fraud": 0,
            "known_at": "2018-10-09T00:00:00",
            "received_at": "2026-01-03T00:00:00",
        },
        {"transaction_id": 13, "is_fraud": 1, "known_at": "k", "received_at": "r"},
    ]


def test_nan_and_infinite_features_are_stored_as_json_null(target, plog):
    plog.log_predictions([prediction(1, gap=math.nan, ratio=math.inf, n=2.0)])
    plog.log_predictions([prediction(2, gap=math.nan), prediction(3, gap=-math.inf)])
    features = [r["features"] for r in read_rows(target, PREDICTIONS_TABLE)]
    assert features == [{"gap": None, "ratio": None, "n": 2.0}, {"gap": None}, {"gap": None}]


def test_count_follows_each_table_and_refuses_unknown_tables(plog):
    assert plog.count() == plog.count(PREDICTIONS_TABLE) == 0
    assert plog.count(FEEDBACK_TABLE) == 0
    plog.log_predictions([prediction(i) for i in range(5)])
    plog.log_predictions([prediction(5)])
    plog.log_feedback([FeedbackRow(1, 1, "k", "r")])
    plog.log_predictions([])  # nothing to write is not an error
    assert plog.count() == 6
    assert plog.count(FEEDBACK_TABLE) == 1
    with pytest.raises(ValueError, match="unknown prediction-log table"):
        plog.count("predictions; DROP TABLE predictions")


def test_a_call_that_fails_writes_none_of_its_rows_and_the_log_keeps_working(target, plog):
    bad = prediction(2)._replace(tx_datetime=None)  # type: ignore[arg-type]  # NOT NULL column
    with pytest.raises((sqlite3.IntegrityError, psycopg.errors.NotNullViolation)):
        plog.log_predictions([prediction(1), bad, prediction(3)])
    assert plog.count() == 0
    plog.log_predictions([prediction(4)])
    assert [r["transaction_id"] for r in read_rows(target, PREDICTIONS_TABLE)] == [4]


def test_concurrent_calls_from_threads_lose_no_row(plog):
    threads, calls = 8, 40

    def work(t: int) -> None:
        for c in range(calls):
            plog.log_predictions([prediction(t * 1000 + c)])

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert plog.count() == threads * calls


def test_reopening_keeps_the_tables_and_their_rows(target):
    first = open_prediction_log(target)
    first.log_predictions([prediction(1)])
    first.close()
    second = open_prediction_log(target)  # CREATE ... IF NOT EXISTS on existing tables
    try:
        second.log_predictions([prediction(2)])
        assert second.count() == 2
    finally:
        second.close()


def _indexes(target: str) -> set[str]:
    if target.startswith("postgresql://"):
        return {r[0] for r in query(target, "SELECT indexname FROM pg_indexes")}
    return {r[0] for r in query(target, "SELECT name FROM sqlite_master WHERE type = 'index'")}


def test_a_log_made_before_the_reader_gets_its_indexes_when_opened(target):
    """Logs written by earlier versions had the tables and one index only: opening one adds
    the indexes the reader filters and joins on, and keeps its rows."""
    old = [
        *(
            f"CREATE TABLE {t} ({', '.join(f'{c} {s}' for c, s in cols.items())})"
            for t, cols in (
                (PREDICTIONS_TABLE, PREDICTION_COLUMNS),
                (FEEDBACK_TABLE, FEEDBACK_COLUMNS),
            )
        ),
        f"CREATE INDEX {PREDICTIONS_TABLE}_tx ON {PREDICTIONS_TABLE}(transaction_id)",
        f"INSERT INTO {FEEDBACK_TABLE} VALUES (1, 1, 'k', 'r')",
    ]
    if target.startswith("postgresql://"):
        with psycopg.connect(target, autocommit=True) as conn:
            for statement in old:
                conn.execute(statement.replace("features TEXT", "features JSONB"))
    else:
        Path(target).parent.mkdir(parents=True)
        with closing(sqlite3.connect(target)) as db, db:
            for statement in old:
                db.execute(statement)
    assert f"{PREDICTIONS_TABLE}_tx_datetime" not in _indexes(target)
    log = open_prediction_log(target)
    try:
        assert log.count(FEEDBACK_TABLE) == 1
    finally:
        log.close()
    assert {
        f"{PREDICTIONS_TABLE}_tx",
        f"{PREDICTIONS_TABLE}_tx_datetime",
        f"{FEEDBACK_TABLE}_tx",
    } <= _indexes(target)


def test_factory_picks_the_backend_from_the_target(tmp_path: Path, pg_server: PostgresServer):
    for path in (str(tmp_path / "a.sqlite"), tmp_path / "b.sqlite"):
        log = open_prediction_log(path)
        assert type(log) is SQLitePredictionLog
        log.close()
    url = pg_server.create_database(f"log_{next(_databases)}")
    for scheme_url in (url, url.replace("postgresql://", "postgres://", 1)):
        log = open_prediction_log(scheme_url)
        assert type(log) is PostgresPredictionLog
        log.close()


@pytest.mark.parametrize(
    "url", ["mysql://u:hunter2@db/x", "postgresql+psycopg://u:hunter2@db/x", "sqlite:///x.db"]
)
def test_factory_refuses_other_urls_instead_of_creating_a_file_named_after_them(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PredictionLogError, match="unsupported prediction log URL") as e:
        open_prediction_log(url)
    assert "hunter2" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def _open_and_log(path: str, barrier: Any, worker: int) -> int:
    barrier.wait()
    log = SQLitePredictionLog(Path(path))
    log.log_feedback(
        [FeedbackRow(worker, 1, "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:01+00:00")]
    )
    count = log.count(FEEDBACK_TABLE)
    log.close()
    return count


# Spawns 5 pools of 4 processes (12-23 s on 2 cores): not a unit test.
@pytest.mark.integration
def test_workers_opening_a_new_sqlite_log_at_the_same_moment_all_start(tmp_path: Path):
    """Several uvicorn workers create the same log file at start-up: none may die of a lock."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    for attempt in range(5):
        path = tmp_path / f"race-{attempt}.sqlite"
        with ctx.Manager() as manager:
            barrier = manager.Barrier(4)
            with ctx.Pool(4) as pool:
                counts = pool.starmap(_open_and_log, [(str(path), barrier, w) for w in range(4)])
        assert len(counts) == 4
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute(f"SELECT COUNT(*) FROM {FEEDBACK_TABLE}").fetchone()[0] == 4


def test_sqlite_checkpoints_in_the_background_thread_not_in_the_commit(tmp_path: Path):
    """Committed rows reach the database file through the log's own checkpoint thread (in WAL
    mode only a checkpoint writes that file); the writer's automatic checkpoint is set far
    beyond these rows."""
    path = tmp_path / "p.sqlite"
    plog = SQLitePredictionLog(path, checkpoint_seconds=0.05)
    try:
        wal_limit = plog._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        assert wal_limit == SQLitePredictionLog.WAL_BACKSTOP_PAGES
        plog.log_predictions([prediction(i) for i in range(300)])
        pages = plog._conn.execute("PRAGMA page_count").fetchone()[0]
        page_size = plog._conn.execute("PRAGMA page_size").fetchone()[0]
        assert pages > 10  # the rows span many pages, all of them in the WAL at first
        deadline = time.monotonic() + 10
        while path.stat().st_size < pages * page_size and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.stat().st_size == pages * page_size
        assert plog.checkpoints >= 1
    finally:
        plog.close()
    assert plog._checkpointer is not None and not plog._checkpointer.is_alive()
    # The file alone (the WAL ignored) holds every row.
    with closing(sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)) as conn:
        assert conn.execute(f"SELECT COUNT(*) FROM {PREDICTIONS_TABLE}").fetchone()[0] == 300
