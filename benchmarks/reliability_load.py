#!/usr/bin/env python
"""The reliability load: the API at 64 connections for 60 s with wrk, on both backend setups,
and the prediction log's row count against wrk's acknowledged (2xx) responses.

Setups (every file in a temporary directory, every server on a free 127.0.0.1 port):

* `sqlite`: `python -m serving` (one process), in-process feature state, SQLite log;
* `redis+postgres`: `python -m serving --workers 2`, the feature state in Redis, the log in
  PostgreSQL (tests/pg_server.py's throw-away server).

wrk sends raw transactions with unique ids (benchmarks/serving/lua/transactions.lua) for the
load's duration, then drains (benchmarks/reliability_load.lua): every request it sent is
answered before it stops, so the log's rows must equal its 2xx count exactly. Prints a table
(p50/p90/p99, requests per second, errors, log rows against acknowledged) and writes
benchmarks/results/reliability_load.json. tests/reliability/test_load.py runs the same
functions and asserts on them (zero errors, rows == 2xx).

    python benchmarks/reliability_load.py                      # the project's @champion, 60 s each
    python benchmarks/reliability_load.py --seconds 10 --setups sqlite
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, for `python <this>`

import pandas as pd
from rich.console import Console

from benchmarks.common.project import RESULTS_DIR, ROOT, git_head, offline_env
from benchmarks.common.report import (
    command_line,
    fmt_ms,
    markdown_table,
    rich_table,
    write_results,
)
from benchmarks.serving.procs import Service, free_port, http_status
from benchmarks.serving.wrk import WrkResult, run_wrk, wrk_path
from fraud import registry
from fraud.predictions import PREDICTIONS_TABLE

LOAD_LUA = Path(__file__).resolve().parent / "reliability_load.lua"
#: Seconds wrk keeps its connections open, sending nothing, after the load (< WRK_TIMEOUT_S).
DRAIN_S = 4
#: wrk's --timeout: a request unanswered for this long counts as a socket timeout (an error).
WRK_TIMEOUT_S = 30
#: Seconds an API may take to load its model in every worker (2 busy cores: normally ~5-10 s).
READY_TIMEOUT_S = 120
DEFAULT_RESULTS = RESULTS_DIR / "reliability_load.json"
#: The line each worker logs once its model is installed (serving.runtime.Runtime.load).
SERVING_LINE = "serving "


@dataclass(frozen=True)
class LoadSetup:
    """One way of running the API under the load."""

    name: str
    workers: int
    feature_store: str  # "memory" or a redis:// URL
    prediction_log: str  # a SQLite path or a postgresql:// URL


@dataclass
class LoadFigures:
    """What one load measured; `acknowledged` is wrk's 2xx count, `logged` the log's rows."""

    setup: str
    workers: int
    backends: str
    connections: int
    load_seconds: float
    requests: int
    non_2xx: int
    socket_errors: dict[str, int]
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    rps: float
    acknowledged: int
    logged: int
    wrk_rc: int
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    @property
    def log_matches(self) -> bool:
        return self.logged == self.acknowledged


@dataclass(frozen=True)
class TrafficShape:
    """Where wrk's transactions fall: after the model's history, on its customers and
    terminals (read from the model the API cached)."""

    t0: int  # epoch seconds of the first transaction
    customers: int
    terminals: int

    @classmethod
    def from_model_cache(cls, cache_dir: Path) -> TrafficShape:
        history = pd.read_parquet(cache_dir / registry.FEATURE_HISTORY_FILE)
        start = pd.Timestamp(history["TX_DATETIME"].max()).ceil("D") + pd.Timedelta(days=1)
        return cls(
            t0=int(start.timestamp()),
            customers=int(history["CUSTOMER_ID"].max()) + 1,
            terminals=int(history["TERMINAL_ID"].max()) + 1,
        )


def drive_load(
    predict_url: str,
    shape: TrafficShape,
    *,
    seconds: float,
    connections: int = 64,
    seq_base: int = 0,
    label: str = "load",
) -> WrkResult:
    """`seconds` of /predict from `connections` wrk connections, then the drain (see the module
    docstring); the latency distribution and counts as wrk reports them."""
    load_s = max(1, round(seconds))
    return run_wrk(
        label,
        predict_url,
        LOAD_LUA,
        [
            str(seq_base),
            "0.1",
            str(shape.t0),
            "0",
            "1",
            str(shape.customers),
            str(shape.terminals),
            str(load_s),
        ],
        connections=connections,
        duration_s=load_s + DRAIN_S,
        threads=1,
        timeout_s=WRK_TIMEOUT_S,
    )


def count_logged(prediction_log: str) -> int:
    """Rows in the log's predictions table, read directly (not through the API)."""
    sql = f"SELECT COUNT(*) FROM {PREDICTIONS_TABLE}"
    if prediction_log.startswith(("postgresql://", "postgres://")):
        import psycopg

        with psycopg.connect(prediction_log) as conn:
            row = conn.execute(sql).fetchone()
            return int(row[0]) if row else 0
    with closing(sqlite3.connect(f"file:{prediction_log}?mode=ro", uri=True)) as db:
        return int(db.execute(sql).fetchone()[0])


def figures_of(
    setup: LoadSetup, result: WrkResult, seconds: float, logged: int, backends: str
) -> LoadFigures:
    load_s = max(1, round(seconds))
    return LoadFigures(
        setup=setup.name,
        workers=setup.workers,
        backends=backends,
        connections=result.connections,
        load_seconds=load_s,
        requests=result.requests,
        non_2xx=result.non_2xx,
        socket_errors=dict(result.socket_errors),
        p50_ms=result.latency_ms.get("50%"),
        p90_ms=result.latency_ms.get("90%"),
        p99_ms=result.latency_ms.get("99%"),
        max_ms=_max_latency_ms(result.output),
        # wrk's own Requests/sec divides by the drain too: the load's seconds only.
        rps=result.requests / load_s,
        acknowledged=result.requests - result.non_2xx,
        logged=logged,
        wrk_rc=result.wrk_rc,
    )


def _max_latency_ms(output: str) -> float | None:
    """The Max column of wrk's Latency line."""
    import re

    from benchmarks.serving.wrk import to_ms

    m = re.search(r"^\s+Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m|h)", output, re.MULTILINE)
    return to_ms(m.group(1), m.group(2)) if m else None


def wait_all_workers(service: Service, workers: int, timeout_s: float) -> str | None:
    """None once /ready answers and each of the `workers` processes logged its model; else why
    not. (wrk opens its connections at once: a worker still loading would get none of them.)"""
    deadline = time.monotonic() + timeout_s
    why = service.wait_ready(timeout_s)
    if why:
        return why
    while time.monotonic() < deadline:
        if sum(SERVING_LINE in line for line in service.log_lines()) >= workers:
            return None
        if not service.running():
            return "exited"
        time.sleep(0.2)
    return f"{workers} workers did not all load their model within {timeout_s:.0f} s"


@contextmanager
def running_api(
    setup: LoadSetup,
    *,
    tracking_uri: str,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
) -> Iterator[tuple[str, Service, Path]]:
    """`python -m serving` as `setup` says, ready in every worker; yields (base URL, service,
    model cache dir); stopped (its process group) on the way out."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cache = workdir / "model-cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    env.update(offline_env(ROOT))
    env.update(
        {
            "MLFLOW_TRACKING_URI": tracking_uri,
            "PYTHONUNBUFFERED": "1",
            "FRAUD_MODEL_CACHE_DIR": str(cache),
            "FRAUD_PREDICTION_LOG": setup.prediction_log,
            "FRAUD_FEATURE_STORE": setup.feature_store,
            "FRAUD_REDIS_PREFIX": f"load-{setup.name}-{port}",
            "FRAUD_WORKERS": str(setup.workers),
        }
    )
    env.update(extra_env or {})
    base = f"http://127.0.0.1:{port}"
    service = Service(
        f"api-{setup.name}",
        [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=ROOT,
        log_path=workdir / "api.log",
        ready=lambda: http_status(base + "/ready") == 200,
        workers=setup.workers,
    )
    service.start()
    try:
        why = wait_all_workers(service, setup.workers, READY_TIMEOUT_S)
        if why:
            raise RuntimeError(f"API ({setup.name}) not ready: {why}\n{service.log_tail()}")
        yield base, service, cache
    finally:
        service.stop()


def measure(
    setup: LoadSetup,
    *,
    tracking_uri: str,
    workdir: Path,
    seconds: float,
    connections: int = 64,
    backends: str = "",
) -> LoadFigures:
    """Start the API as `setup` says, load it, stop it, and count the log's rows."""
    with running_api(setup, tracking_uri=tracking_uri, workdir=workdir) as (base, service, cache):
        shape = TrafficShape.from_model_cache(cache)
        result = drive_load(
            base + "/predict", shape, seconds=seconds, connections=connections, label=setup.name
        )
        alive = service.running()
    logged = count_logged(setup.prediction_log)
    figures = figures_of(setup, result, seconds, logged, backends or setup.name)
    if not alive:
        figures.notes.append("the API exited during the load")
    if result.wrk_rc != 0:
        figures.notes.append(result.output[-500:])
    return figures


COLUMNS = [
    "setup",
    "workers",
    "c",
    "s",
    "requests",
    "req/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "errors",
    "2xx (acked)",
    "log rows",
    "rows == acked",
]


def table_rows(figures: list[LoadFigures]) -> list[list[str]]:
    return [
        [
            f.backends,
            str(f.workers),
            str(f.connections),
            f"{f.load_seconds:g}",
            f"{f.requests:,}",
            f"{f.rps:,.0f}",
            fmt_ms(f.p50_ms),
            fmt_ms(f.p90_ms),
            fmt_ms(f.p99_ms),
            fmt_ms(f.max_ms),
            str(f.errors),
            f"{f.acknowledged:,}",
            f"{f.logged:,}",
            "yes" if f.log_matches else f"NO ({f.logged - f.acknowledged:+d})",
        ]
        for f in figures
    ]


def report(figures: list[LoadFigures], results_path: Path | None = DEFAULT_RESULTS) -> str:
    """Print the table (and its Markdown), write the JSON; returns the Markdown."""
    console = Console(width=160)
    rows = table_rows(figures)
    console.print(rich_table("Reliability load (wrk, 127.0.0.1)", COLUMNS, rows, left=1))
    md = markdown_table(COLUMNS, rows, left=1)
    print(md)
    if results_path is not None:
        shown = write_results(
            results_path,
            {
                "command": command_line(),
                "commit": git_head(),
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "figures": [asdict(f) | {"errors": f.errors} for f in figures],
                "markdown": md,
            },
        )
        print(f"results: {shown}")
    return md


def merge_results(path: Path, figures: list[LoadFigures]) -> list[LoadFigures]:
    """`figures` with the other setups already in `path` (the tests run one setup each)."""
    try:
        earlier = json.loads(path.read_text())["figures"]
    except (OSError, ValueError, KeyError):
        return figures
    names = {f.setup for f in figures}
    kept: list[LoadFigures] = []
    for item in earlier:
        if item.get("setup") in names:
            continue
        item.pop("errors", None)
        try:
            kept.append(LoadFigures(**item))
        except TypeError:
            continue
    return [*kept, *figures]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--setups", default="sqlite,redis+postgres")
    parser.add_argument("--json", type=Path, default=DEFAULT_RESULTS)
    args = parser.parse_args(argv)
    if wrk_path() is None:
        parser.error("wrk is not installed (apt-get install wrk)")
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or offline_env(ROOT)["MLFLOW_TRACKING_URI"]
    wanted = [s.strip() for s in args.setups.split(",") if s.strip()]
    figures: list[LoadFigures] = []
    with tempfile.TemporaryDirectory(prefix="reliability-load-") as tmp:
        base = Path(tmp)
        for name in wanted:
            if name == "sqlite":
                setup = LoadSetup("sqlite", 1, "memory", str(base / "sqlite" / "log.sqlite"))
                figures.append(
                    measure(
                        setup,
                        tracking_uri=tracking_uri,
                        workdir=base / "sqlite",
                        seconds=args.seconds,
                        connections=args.connections,
                        backends="1 process, memory state, SQLite log",
                    )
                )
            elif name == "redis+postgres":
                figures.append(_measure_shared(base, tracking_uri, args.seconds, args.connections))
            else:
                parser.error(f"unknown setup {name!r}: sqlite or redis+postgres")
    report(figures, args.json)
    return 0 if all(f.errors == 0 and f.log_matches for f in figures) else 1


def _measure_shared(base: Path, tracking_uri: str, seconds: float, connections: int) -> LoadFigures:
    """The two-worker setup on a throw-away Redis and PostgreSQL."""
    from benchmarks.serving.procs import redis_service
    from tests.pg_server import postgres_server

    redis_port = free_port()
    (base / "redis").mkdir(parents=True, exist_ok=True)
    redis = redis_service(redis_port, base / "redis")
    redis.start()
    try:
        why = redis.wait_ready(60)
        if why:
            raise RuntimeError(f"redis-server: {why}")
        with postgres_server() as pg:
            url = pg.create_database("reliability_load")
            setup = LoadSetup("redis+postgres", 2, f"redis://127.0.0.1:{redis_port}/0", url)
            return measure(
                setup,
                tracking_uri=tracking_uri,
                workdir=base / "shared",
                seconds=seconds,
                connections=connections,
                backends="2 workers, Redis state, PostgreSQL log",
            )
    finally:
        redis.stop()


def as_dict(figures: LoadFigures) -> dict[str, Any]:
    return asdict(figures) | {"errors": figures.errors}


if __name__ == "__main__":
    sys.exit(main())
