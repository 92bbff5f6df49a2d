"""The API under sustained load: 60 s at 64 connections with wrk on 127.0.0.1, zero errors, the
p99 recorded, and the prediction log's rows equal to the acknowledged (2xx) responses; once
with one process on SQLite and the in-process state, once with two worker processes sharing
Redis (feature state) and PostgreSQL (log).

The driver is benchmarks/reliability_load.py's (wrk with unique transaction ids, then a drain so
that every request sent is answered before wrk stops); each test prints its figures and merges
them into benchmarks/results/reliability_load.json (FRAUD_RELIABILITY_RESULTS elsewhere).
FRAUD_RELIABILITY_LOAD_SECONDS shortens the load for a quick local run (CI: the full 60 s).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.reliability_load import (
    DEFAULT_RESULTS,
    LoadFigures,
    LoadSetup,
    measure,
    merge_results,
    report,
)
from benchmarks.serving.wrk import wrk_path
from tests.pg_server import PostgresServer
from tests.serving.redis_server import redis_server

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow]

LOAD_SECONDS = float(os.environ.get("FRAUD_RELIABILITY_LOAD_SECONDS", "60"))
CONNECTIONS = 64
RESULTS = Path(os.environ.get("FRAUD_RELIABILITY_RESULTS", str(DEFAULT_RESULTS)))


@pytest.fixture(autouse=True)
def _wrk() -> None:
    if wrk_path() is None:
        pytest.skip("wrk is not installed (Debian package wrk)")


def check_and_record(figures: LoadFigures) -> None:
    """Print and record the figures, then hold them to the load's promises."""
    report(merge_results(RESULTS, [figures]), RESULTS)
    assert figures.wrk_rc == 0, figures.notes
    assert figures.requests > 0, "wrk completed no request"
    assert figures.notes == [], figures.notes
    assert not any(figures.socket_errors.values()), figures.socket_errors
    assert figures.non_2xx == 0, f"{figures.non_2xx} responses were not 2xx"
    assert figures.p99_ms is not None, "wrk reported no latency distribution"
    # Every acknowledged prediction is in the log, and nothing else is: wrk's drain means no
    # request was still in flight when it stopped.
    assert figures.logged == figures.acknowledged, (
        f"{figures.logged} rows logged for {figures.acknowledged} acknowledged responses"
    )


def test_one_process_on_sqlite_serves_64_connections_without_error_and_logs_every_2xx(
    registry_copy: str, tmp_path: Path
) -> None:
    setup = LoadSetup("sqlite", 1, "memory", str(tmp_path / "predictions.sqlite"))
    figures = measure(
        setup,
        tracking_uri=registry_copy,
        workdir=tmp_path / "api",
        seconds=LOAD_SECONDS,
        connections=CONNECTIONS,
        backends="1 process, memory state, SQLite log",
    )
    check_and_record(figures)


def test_two_workers_on_redis_and_postgres_serve_64_connections_without_error_and_log_every_2xx(
    registry_copy: str, tmp_path: Path, pg_server: PostgresServer
) -> None:
    with redis_server(tmp_path / "redis") as redis_url:
        setup = LoadSetup(
            "redis+postgres", 2, redis_url, pg_server.create_database("reliability_load")
        )
        figures = measure(
            setup,
            tracking_uri=registry_copy,
            workdir=tmp_path / "api",
            seconds=LOAD_SECONDS,
            connections=CONNECTIONS,
            backends="2 workers, Redis state, PostgreSQL log",
        )
    check_and_record(figures)
