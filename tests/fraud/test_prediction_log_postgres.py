"""What only the PostgreSQL backend of the prediction log does, against a real server started
for this module (tests/pg_server.py): the contract's types mapped, connection failures and
drops, and URLs that never show their password."""

from __future__ import annotations

import itertools
import logging
import time

import psycopg
import pytest

from fraud.predictions import (
    FEEDBACK_COLUMNS,
    FEEDBACK_TABLE,
    PREDICTION_COLUMNS,
    PREDICTIONS_TABLE,
    PredictionLogError,
    PredictionRow,
    open_prediction_log,
    redact_url,
)
from tests.pg_server import PostgresServer, free_port, postgres_server

_databases = itertools.count()


@pytest.fixture(scope="module")
def pg_server():
    with postgres_server() as server:
        yield server


def prediction(i: int) -> PredictionRow:
    return PredictionRow(
        i, "2018-10-01T08:15:00", 4961, 3412, 57.16, {"a": 1.0}, 0.125, 0, 0.5, "m", "7", "t"
    )


def logged_ids(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(f"SELECT transaction_id FROM {PREDICTIONS_TABLE} ORDER BY ctid")
        return [r[0] for r in rows.fetchall()]


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
        with caplog.at_level(logging.WARNING, logger="fraud.predictions"):
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
        assert logged_ids(url) == [1, 3]
    finally:
        log.close()
