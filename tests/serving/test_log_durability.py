"""Durability of the prediction log under load and crashes, on real servers: `python -m serving`
(uvicorn) with a SQLite file or a PostgreSQL database (tests/pg_server.py) as its log, driven
by concurrent HTTP clients (threads, one httpx client each, at most one request in flight each).

The guarantee: a prediction acknowledged with a 200 is in the log (committed before the
response). So after any crash, acknowledged ids ⊆ logged ids ⊆ sent ids, and the rows logged
but never acknowledged are at most the requests in flight when it crashed (one per client).

Every loop is bounded in count and time; the traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest

from fraud.predictions import PREDICTIONS_TABLE
from tests.pg_server import PostgresServer, postgres_server

CLIENTS = 8
LOAD_REQUESTS = 1600  # per backend, all acknowledged
CRASH_REQUESTS = 2400  # prepared per crash test; the crash comes before they are all sent
CRASH_AFTER = 400  # acknowledged predictions before the crash
DRIVE_SECONDS = 60.0  # upper bound on one drive of the load

_databases = itertools.count()


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request) -> str:
    return str(request.param)


@pytest.fixture
def api(backend: str, servers, registry_copy: str, request):
    """A running API whose prediction log is `backend`; returns (server, log reader)."""
    env: dict[str, str] = {}
    url = ""
    if backend == "postgres":
        pg: PostgresServer = request.getfixturevalue("pg_server")
        url = pg.create_database(f"durability_{next(_databases)}")
        env["FRAUD_PREDICTION_LOG"] = url
    server = servers.start(registry_copy, env=env)

    def logged_ids() -> list[int]:
        """Every transaction id in the predictions table (read after the fact, not via serving)."""
        sql = f"SELECT transaction_id FROM {PREDICTIONS_TABLE}"
        if url:
            with psycopg.connect(url) as conn:
                return [r[0] for r in conn.execute(sql).fetchall()]
        with closing(sqlite3.connect(f"file:{server.prediction_log}?mode=ro", uri=True)) as db:
            return [r[0] for r in db.execute(sql).fetchall()]

    return server, logged_ids


@dataclass
class Drive:
    """The outcome of a load: the ids sent, the ids acknowledged (200 naming that id), the
    statuses, the transport errors (no answer), and anything else that went wrong in a client."""

    sent: list[int] = field(default_factory=list)
    acknowledged: list[int] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: list[str] = field(default_factory=list)
    client_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def drive(
    url: str,
    transactions: list[dict[str, Any]],
    *,
    stop_on_transport_error: bool = False,
    pause_after_error: float = 0.0,
    progress: Callable[[Drive], None] | None = None,
) -> Drive:
    """POST each transaction to /predict from CLIENTS threads (each its own share, in order);
    bounded by DRIVE_SECONDS. `progress` is called from the driving thread while clients run."""
    out = Drive()
    lock = threading.Lock()
    deadline = time.monotonic() + DRIVE_SECONDS
    shares = [transactions[i::CLIENTS] for i in range(CLIENTS)]

    def client(share: list[dict[str, Any]]) -> None:
        try:
            send(share)
        except Exception as e:  # reported by the test, not lost in the thread
            with lock:
                out.client_errors.append(repr(e))

    def send(share: list[dict[str, Any]]) -> None:
        with httpx.Client(base_url=url, timeout=30.0) as http:
            for tx in share:
                if time.monotonic() > deadline:
                    return
                tid = tx["TRANSACTION_ID"]
                with lock:
                    out.sent.append(tid)
                try:
                    r = http.post("/predict", json=tx)
                except httpx.TransportError as e:
                    with lock:
                        out.transport_errors.append(repr(e))
                    if stop_on_transport_error:
                        return
                    time.sleep(pause_after_error)
                    continue
                answered = r.json()["TRANSACTION_ID"] if r.status_code == 200 else None
                with lock:
                    out.statuses[r.status_code] += 1
                    if answered == tid:
                        out.acknowledged.append(tid)
                    elif r.status_code == 200:
                        out.client_errors.append(f"200 for {tid} names {answered}")
                if r.status_code != 200:
                    time.sleep(pause_after_error)

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(s,), daemon=True) for s in shares]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline + 5:
        if progress:
            progress(out)
        time.sleep(0.005)
    for t in threads:
        t.join(timeout=max(0.0, deadline + 35 - time.monotonic()))
    out.seconds = time.monotonic() - start
    assert not any(t.is_alive() for t in threads), "clients still running after their deadline"
    assert out.client_errors == []
    return out


def test_every_acknowledged_prediction_under_concurrent_load_is_logged_exactly_once(
    api, make_tx, backend: str
):
    server, logged_ids = api
    transactions = [make_tx() for _ in range(LOAD_REQUESTS)]
    out = drive(server.url, transactions)

    assert out.transport_errors == []
    assert out.statuses == Counter({200: LOAD_REQUESTS}), out.statuses
    logged = logged_ids()
    assert len(logged) == len(out.acknowledged) == LOAD_REQUESTS
    assert (
        sorted(logged)
        == sorted(out.acknowledged)
        == sorted(t["TRANSACTION_ID"] for t in transactions)
    )
    print(f"{backend}: {LOAD_REQUESTS} requests from {CLIENTS} clients in {out.seconds:.1f} s")


def test_api_killed_mid_load_loses_no_acknowledged_prediction(api, make_tx, backend: str):
    server, logged_ids = api
    transactions = [make_tx() for _ in range(CRASH_REQUESTS)]

    def kill_mid_load(progress: Drive) -> None:
        if server.proc.poll() is None and len(progress.acknowledged) >= CRASH_AFTER:
            server.proc.kill()  # SIGKILL: no shutdown, no flush, no close

    out = drive(server.url, transactions, stop_on_transport_error=True, progress=kill_mid_load)
    assert server.proc.wait(timeout=10) == -9, "the server was not killed by the test"
    assert CRASH_AFTER <= len(out.acknowledged) < CRASH_REQUESTS, "not killed mid-load"
    assert out.transport_errors, "no client saw the crash"

    logged = logged_ids()
    acknowledged, sent = set(out.acknowledged), set(out.sent)
    assert len(logged) == len(set(logged)), "a prediction logged twice"
    assert not acknowledged - set(logged), "acknowledged predictions missing from the log"
    assert set(logged) <= sent
    # Logged but not acknowledged: only requests in flight at the kill, at most one per client.
    assert len(set(logged) - acknowledged) <= CLIENTS
    if backend == "sqlite":
        with closing(sqlite3.connect(server.prediction_log)) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    print(
        f"{backend}: killed after {len(acknowledged)} acknowledged; "
        f"{len(logged)} logged ({len(set(logged) - acknowledged)} in flight)"
    )


def test_postgres_killed_mid_load_keeps_acknowledged_predictions_and_the_api_reconnects(
    pg_server: PostgresServer, servers, registry_copy: str, make_tx
):
    """PostgreSQL itself crashes (SIGKILL of the postmaster) under load: requests fail (5xx)
    while it is down, never with a false 200; once it has recovered from its WAL, the same API
    process logs again, and every prediction acknowledged before, during or after is there."""
    url = pg_server.create_database(f"durability_{next(_databases)}")
    # Trust auth ignores the password: it is there to check that the API's output never shows it.
    with_password = url.replace("postgres@", "postgres:hunter2@", 1)
    server = servers.start(registry_copy, env={"FRAUD_PREDICTION_LOG": with_password})
    transactions = [make_tx() for _ in range(CRASH_REQUESTS)]
    phase = {"killed_at": 0, "restarted_at": 0}

    def crash_and_recover(progress: Drive) -> None:
        n = len(progress.acknowledged)
        if not phase["killed_at"] and n >= CRASH_AFTER:
            phase["killed_at"] = n
            pg_server.kill()
            time.sleep(0.5)  # some requests meet the outage
            pg_server.start()
            phase["restarted_at"] = len(progress.acknowledged)

    out = drive(server.url, transactions, pause_after_error=0.05, progress=crash_and_recover)
    assert phase["killed_at"], "PostgreSQL was not killed"
    assert server.proc.poll() is None, f"the API died:\n{server.output()}"
    assert out.transport_errors == []
    # 503 with a reason while the log is down, never a 200 without a record.
    assert set(out.statuses) <= {200, 503}, out.statuses
    assert out.statuses[503] > 0, "no request met the outage"
    assert len(out.acknowledged) > phase["restarted_at"] + 100, "the API did not log again"

    with psycopg.connect(url) as conn:
        logged = [r[0] for r in conn.execute(f"SELECT transaction_id FROM {PREDICTIONS_TABLE}")]
    acknowledged = set(out.acknowledged)
    assert len(logged) == len(set(logged)), "a prediction logged twice"
    assert not acknowledged - set(logged), "acknowledged predictions missing after recovery"
    assert set(logged) <= set(out.sent)
    # A statement in flight when PostgreSQL died may have committed while its request failed.
    assert len(set(logged) - acknowledged) <= 1
    output = server.output()
    assert "prediction log at postgresql://postgres:***@127.0.0.1" in output
    assert "hunter2" not in output
    print(
        f"postgres crash: killed after {phase['killed_at']} acknowledged, "
        f"{out.statuses[503]} requests failed during the outage, "
        f"{len(acknowledged) - phase['restarted_at']} acknowledged after the restart"
    )
