"""The prediction log's backends (SQLite, PostgreSQL) behind one interface, on real databases:
a SQLite file, and a PostgreSQL server started for this module (tests/serving/pg.py).

Rows are read back with plain sqlite3 / psycopg, not through the code under test.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg import PostgresServer, free_port, postgres_server

from fraud.predictions import (
    FEEDBACK_COLUMNS,
    FEEDBACK_TABLE,
    PREDICTION_COLUMNS,
    PREDICTIONS_TABLE,
)
from serving.prediction_log import (
    PostgresPredictionLog,
    PredictionLogBackend,
    PredictionLogError,
    SQLitePredictionLog,
    open_prediction_log,
    redact_url,
)

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


def read_rows(target: str, table: str) -> list[dict[str, Any]]:
    """Every row of `table` in insertion order, as dicts, features parsed from JSON."""
    cols = list(PREDICTION_COLUMNS if table == PREDICTIONS_TABLE else FEEDBACK_COLUMNS)
    if target.startswith("postgresql://"):
        with psycopg.connect(target) as conn:
            rows = conn.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY ctid").fetchall()
    else:
        with closing(sqlite3.connect(f"file:{target}?mode=ro", uri=True)) as db:
            rows = db.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY rowid").fetchall()
    out = [dict(zip(cols, r, strict=True)) for r in rows]
    for r in out:
        if isinstance(r.get("features"), str):
            r["features"] = json.loads(r["features"])
    return out


def prediction(i: int, **features: float) -> tuple[Any, ...]:
    """A row as the service passes it: PREDICTION_COLUMNS order, features as a dict."""
    return (
        i,
        "2018-10-01T08:15:00",
        4961,
        3412,
        57.16,
        features or {"CUSTOMER_ID_NB_TX_1DAY_WINDOW": 3.0},
        0.125,
        i % 2,
        0.5,
        "fraud-detector",
        "7",
        "2026-01-02T03:04:05.678901",
    )


def test_both_backends_implement_the_interface(plog):
    assert isinstance(plog, PredictionLogBackend)


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
    rows = [prediction(i) for i in range(len(features))]
    plog.log_predictions([(*r[:5], f, *r[6:]) for r, f in zip(rows, features, strict=True)])
    stored = [r["features"] for r in read_rows(target, PREDICTIONS_TABLE)]
    expected = [{k: (None if math.isnan(v) else v) for k, v in f.items()} for f in features]
    assert stored == expected


def test_feedback_round_trips(target, plog):
    plog.log_feedback([(11, 1, "2018-10-08T00:00:00", "2026-01-02T00:00:00")])
    plog.log_feedback([(12, 0, "2018-10-09T00:00:00", "2026-01-03T00:00:00"), (13, 1, "k", "r")])
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
    plog.log_feedback([(1, 1, "k", "r")])
    plog.log_predictions([])  # nothing to write is not an error
    assert plog.count() == 6
    assert plog.count(FEEDBACK_TABLE) == 1
    with pytest.raises(ValueError, match="unknown prediction-log table"):
        plog.count("predictions; DROP TABLE predictions")


def test_a_call_that_fails_writes_none_of_its_rows_and_the_log_keeps_working(target, plog):
    bad = list(prediction(2))
    bad[1] = None  # tx_datetime is NOT NULL
    with pytest.raises((sqlite3.IntegrityError, psycopg.errors.NotNullViolation)):
        plog.log_predictions([prediction(1), tuple(bad), prediction(3)])
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


def test_postgres_tables_have_the_contract_columns_with_mapped_types(pg_server: PostgresServer):
    url = pg_server.create_database(f"log_{next(_databases)}")
    open_prediction_log(url).close()
    with psycopg.connect(url) as conn:
        for table, contract in (
            (PREDICTIONS_TABLE, PREDICTION_COLUMNS),
            (FEEDBACK_TABLE, FEEDBACK_COLUMNS),
        ):
            cols = conn.execute(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                "WHERE table_name = %s ORDER BY ordinal_position",
                (table,),
            ).fetchall()
            expected = {
                "INTEGER": "bigint",
                "REAL": "double precision",
                "TEXT": "text",
            }
            assert [c[0] for c in cols] == list(contract)
            for name, data_type, nullable in cols:
                sqlite_type = contract[name].split()[0]
                assert data_type == ("jsonb" if name == "features" else expected[sqlite_type])
                assert nullable == ("NO" if "NOT NULL" in contract[name] else "YES")


def test_unreachable_postgres_fails_at_start_naming_the_url_without_its_password():
    port = free_port()  # nothing listens there
    with pytest.raises(PredictionLogError) as e:
        open_prediction_log(f"postgresql://fraud:hunter2@127.0.0.1:{port}/predictions")
    message = str(e.value)
    assert f"postgresql://fraud:***@127.0.0.1:{port}/predictions" in message
    assert "cannot connect" in message and "Connection refused" in message
    assert "hunter2" not in message
    assert e.value.__cause__ is None and e.value.__suppress_context__


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://fraud:hunt%zzer2@127.0.0.1:5432/db",  # libpq quotes the bad token
        "postgresql://fraud@127.0.0.1:5432/db?password=%zzhunter2",
        "postgresql://fraud:hunter2@127.0.0.1:5432/db?unknown_option=1",
    ],
)
def test_malformed_postgres_url_error_hides_the_password(url: str):
    with pytest.raises(PredictionLogError, match="invalid PostgreSQL URL") as e:
        open_prediction_log(url)
    assert "hunt" not in str(e.value) and "zz" not in str(e.value)
    assert "***" in str(e.value)


def test_redact_url_hides_passwords_in_user_info_and_parameters():
    assert redact_url("postgresql://u:p@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("postgres://u:p@ss@h/db") == "postgres://u:***@h/db"
    assert redact_url("postgresql://u@h/db?password=p&sslmode=require") == (
        "postgresql://u@h/db?password=***&sslmode=require"
    )
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"


def test_postgres_reconnects_once_after_the_server_dropped_the_connection(
    pg_server: PostgresServer, caplog: pytest.LogCaptureFixture
):
    url = pg_server.create_database(f"log_{next(_databases)}")
    # Trust auth ignores the password: it is there to check that no log line shows it.
    with_password = url.replace("postgres@", "postgres:hunter2@", 1)
    log = open_prediction_log(with_password)
    try:
        log.log_predictions([prediction(1)])
        with psycopg.connect(url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'fraud-serving' AND datname = current_database()"
            ).fetchall()
            assert killed == [(True,)]
            # pg_terminate_backend only signals: wait until the backend has really gone, so
            # its farewell is on our socket before the next write (as after any real drop).
            for _ in range(200):
                left = admin.execute(
                    "SELECT COUNT(*) FROM pg_stat_activity "
                    "WHERE application_name = 'fraud-serving' AND datname = current_database()"
                ).fetchone()
                if left == (0,):
                    break
                time.sleep(0.01)
        with caplog.at_level(logging.WARNING, logger="serving.prediction_log"):
            log.log_predictions([prediction(2)])  # seen dropped before sending: reconnect
            log.log_predictions([prediction(3), prediction(4)])
        assert log.count() == 4
        assert "connection lost; reconnecting" in caplog.text
        assert "hunter2" not in caplog.text and "hunter2" not in repr(log)
    finally:
        log.close()


def test_postgres_down_fails_the_call_clearly_then_recovers_when_it_is_back(
    pg_server: PostgresServer,
):
    url = pg_server.create_database(f"log_{next(_databases)}")
    log = open_prediction_log(url)
    try:
        log.log_predictions([prediction(1)])
        pg_server.stop()
        try:
            with pytest.raises(PredictionLogError, match=r"prediction log at postgresql://"):
                log.log_predictions([prediction(2)])
        finally:
            pg_server.start()
        log.log_predictions([prediction(3)])
        assert [r["transaction_id"] for r in read_rows(url, PREDICTIONS_TABLE)] == [1, 3]
    finally:
        log.close()


def _open_and_log(path: str, barrier: Any, worker: int) -> int:
    barrier.wait()
    log = SQLitePredictionLog(Path(path))
    log.log_feedback([(worker, 1, "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:01+00:00")])
    count = log.count(FEEDBACK_TABLE)
    log.close()
    return count


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
