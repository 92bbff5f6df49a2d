#!/usr/bin/env python
"""Where a `/predict/batch` request's CPU goes, and what 100,000 transactions/s would leave
for the online features, the state and the prediction log. See benchmarks/README.md
("The batch budget").

Two measurements of the registered model, one after the other:

1. In process: the service's ASGI app called directly (no HTTP), one worker with the in-process
   state and the SQLite log, `--batches` requests of `--batch-size` transactions (unique ids,
   times in order after the published history, random customers, terminals and amounts), with
   timers around each stage; medians per request.
2. Over HTTP, driven by wrk with the serving benchmark's script (`lua/transactions.lua`):
   S, the service (`python -m serving`, 1 worker, in-process state); S2, the service on one
   worker per core (at least 2) with the Redis state (a private redis-server, its CPU
   counted); F1 and F2, the floor app (`benchmarks/serving/floor.py`: the same app with the
   features and the log swapped for no-ops) on 1 worker and on as many as S2. For each:
   transactions/s, and CPU per 1,000 transactions of the server and of wrk (which shares the
   machine's cores).

Then the budget, twice. One worker can use one core: 100,000 tx/s allows it 10 ms of CPU per
1,000 transactions, of which the floor (F1) takes its share; the rest is what the features,
the state and the log could use, against what they use now (S - F1). N workers on N cores:
N x 10 ms for everything on the machine (wrk included), against S2 - F2. Prints tables
(rich, or markdown with --markdown); never asserts. The servers import a copy of fraud/ and
serving/ taken at the start.

    python benchmarks/serving/budget.py              # about 1.5 minutes
    python benchmarks/serving/budget.py --markdown --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project, for `python <this>`

from benchmarks.common.report import markdown_table, rich_table
from benchmarks.serving.procs import (
    Service,
    free_port,
    http_status,
    redis_service,
)
from benchmarks.serving.run import (
    TEXT_COLUMNS,
    Payloads,
    Sequence,
    base_env,
    console,
    measured,
    prepare_payloads,
    resolve_version,
    service_env,
    snapshot_code,
    use_registry_env,
)
from benchmarks.serving.wrk import TRANSACTIONS_LUA, WrkResult, run_wrk, wrk_path

TARGET_TPS = 100_000
ID_ORIGIN = 2_000_000_000  # in-process ids; wrk's start at 1e9 (and go to other servers)


# ============================================================================================
# 1. In process


def _stage_timers() -> tuple[dict[str, list[float]], list[tuple[str, str]]]:
    """Wrap each stage of the batch path with a timer (module attributes, looked up at call
    time); returns the timings and the stages in table order (label, what it covers)."""
    import fraud.features as features
    import fraud.predictions.sqlite as plog
    import serving.predictor as predictor
    import serving.routes.predict as route

    timings: dict[str, list[float]] = defaultdict(list)
    stages = [
        ("parse", "parse and validate the body (`model_validate_json`)"),
        ("features", "features (`batch_features`)"),
        ("record", "record the batch in the state"),
        ("rows", "feature rows as dicts (for the log)"),
        ("score", "score (XGBoost C API)"),
        ("json", "logged features as JSON (one orjson call)"),
        ("sqlite", "SQLite insert and commit"),
        ("response", "response body (orjson)"),
    ]

    def wrap(owner: Any, name: str, label: str, is_async: bool = False) -> None:
        f = getattr(owner, name)
        if is_async:

            async def timed_async(*a: Any, **k: Any) -> Any:
                t = time.perf_counter()
                try:
                    return await f(*a, **k)
                finally:
                    timings[label].append(time.perf_counter() - t)

            setattr(owner, name, timed_async)
        else:

            def timed(*a: Any, **k: Any) -> Any:
                t = time.perf_counter()
                try:
                    return f(*a, **k)
                finally:
                    timings[label].append(time.perf_counter() - t)

            setattr(owner, name, timed)

    wrap(route, "parse_json_body", "parse", is_async=True)
    wrap(features.OnlineFeatureState, "_compute", "features")
    wrap(features.OnlineFeatureState, "_record_many", "record")
    wrap(features.FeatureBatch, "rows", "rows")
    wrap(predictor.Predictor, "predict", "score")
    wrap(plog, "features_as_json", "json")
    wrap(plog.SQLitePredictionLog, "_write", "sqlite")
    wrap(route, "json_response", "response")
    return timings, stages


def _bodies(p: Payloads, n_batches: int, size: int, seed: int = 7) -> list[bytes]:
    """Request bodies like the wrk script's: ids and times in order, the rest random."""
    import datetime as dt

    import orjson

    rng = random.Random(seed)
    t0 = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=p.t0)
    out, seq = [], 0
    for _ in range(n_batches):
        txs = []
        for _ in range(size):
            txs.append(
                {
                    "TRANSACTION_ID": ID_ORIGIN + seq,
                    "TX_DATETIME": (t0 + dt.timedelta(seconds=seq // 10)).isoformat(),
                    "CUSTOMER_ID": rng.randrange(p.customers),
                    "TERMINAL_ID": rng.randrange(p.terminals),
                    "TX_AMOUNT": round(5 + rng.random() * 295, 2),
                }
            )
            seq += 1
        out.append(orjson.dumps({"transactions": txs}))
    return out


def in_process(args: argparse.Namespace, p: Payloads, tmp: Path) -> list[list[str]]:
    """Rows of the stage table: stage, median ms per request, mean ms."""
    os.environ.update(service_env({}, tmp / "inproc", p, "memory", args.batch_size))
    timings, stages = _stage_timers()
    from serving.app import create_app

    app = create_app()
    warm = 5
    bodies = _bodies(p, args.batches + warm, args.batch_size)
    whole: list[float] = []

    async def call(body: bytes) -> None:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        statuses: list[int] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/predict/batch",
            "raw_path": b"/predict/batch",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        await app(scope, receive, send)  # type: ignore[arg-type]
        if statuses != [200]:
            raise RuntimeError(f"/predict/batch answered {statuses} in process")

    async def main() -> None:
        async with app.router.lifespan_context(app):
            for i, body in enumerate(bodies):
                if i == warm:
                    for v in timings.values():
                        v.clear()
                t = time.perf_counter()
                await call(body)
                if i >= warm:
                    whole.append(time.perf_counter() - t)

    console.print(f"[bold]in process[/]: {args.batches} batches of {args.batch_size} ...")
    asyncio.run(main())
    rows = []
    medians = 0.0
    for key, what in stages:
        v = timings.get(key) or [0.0]
        med = statistics.median(v)
        medians += med
        rows.append([what, f"{med * 1e3:.2f}", f"{statistics.fmean(v) * 1e3:.2f}"])
    med_all = statistics.median(whole)
    rows.append(
        [
            "everything else (log rows, response items, histogram, framework)",
            f"{(med_all - medians) * 1e3:.2f}",
            "",
        ]
    )
    rows.append(
        [
            f"whole request ({args.batch_size / med_all:,.0f} tx/s on one core)",
            f"{med_all * 1e3:.2f}",
            f"{statistics.fmean(whole) * 1e3:.2f}",
        ]
    )
    return rows


# ============================================================================================
# 2. Over HTTP


def over_http(args: argparse.Namespace, p: Payloads, tmp: Path) -> dict[str, WrkResult]:
    env0 = base_env(tmp)
    seq = Sequence()
    results: dict[str, WrkResult] = {}
    many = _many_workers()
    plans: list[tuple[str, list[str], int]] = [
        ("S", [sys.executable, "-m", "serving"], 1),
        ("S2", [sys.executable, "-m", "serving"], many),
        ("F1", [sys.executable, "-m", "uvicorn", "benchmarks.serving.floor:create_floor_app"], 1),
        (
            "F2",
            [sys.executable, "-m", "uvicorn", "benchmarks.serving.floor:create_floor_app"],
            many,
        ),
    ]
    for key, cmd, workers in plans:
        d = tmp / key
        d.mkdir(parents=True)
        cpu: list[Service] = []
        store = "memory"
        if key == "S2":
            if shutil.which("redis-server") is None:
                console.print("[yellow]S2 skipped[/]: redis-server is not installed")
                continue
            redis_port = free_port()
            redis = redis_service(redis_port, d)
            redis.start()
            if redis.wait_ready(30, consecutive=1) is not None:
                console.print(f"[red]S2: redis-server did not start[/]\n{redis.log_tail(10)}")
                redis.stop()
                continue
            cpu.append(redis)
            store = f"redis://127.0.0.1:{redis_port}/0"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **service_env(env0, d, p, store, args.batch_size),
            "UV_TCP_SINGLE_ACCEPT": "1",
        }
        if key.startswith("S"):
            cmd = [*cmd, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        else:
            cmd = [*cmd, "--factory", "--host", "127.0.0.1", "--port", str(port)]
            cmd += ["--workers", str(workers), "--no-access-log", "--log-level", "warning"]
        svc = Service(
            key,
            cmd,
            env=env,
            cwd=d,  # not ROOT: `python -m` puts the cwd first on sys.path, before the snapshot
            log_path=d / "server.log",
            ready=functools.partial(_is_ready, url),
            workers=workers,
        )
        console.print(f"[bold]{key}[/]: starting {' '.join(cmd[1:4])} ({workers} worker(s)) ...")
        svc.start()
        try:
            why = svc.wait_ready(args.start_timeout, consecutive=3 * workers)
            if why is not None:
                console.print(f"  [red]failed to start[/]: {why}\n{svc.log_tail(20)}")
                continue
            connections = args.connections * workers

            def once(
                label: str, duration: float, url: str = url, c: int = connections
            ) -> WrkResult:
                script_args = [seq.next, 0.1, p.t0, args.batch_size, 1, p.customers, p.terminals]
                r = run_wrk(
                    label,
                    url + "/predict/batch",
                    TRANSACTIONS_LUA,
                    [f"{x:g}" if isinstance(x, float) else str(x) for x in script_args],
                    connections=c,
                    duration_s=duration,
                    timeout_s=10,
                    per_request=args.batch_size,
                )
                seq.advance(r)
                return r

            once(f"{key} warm-up", args.warmup)
            for _attempt in range(args.uneven_retries + 1):
                r = measured(
                    lambda key=key, once=once: once(key, args.duration),  # type: ignore[misc]
                    [svc, *cpu],
                )
                if not r.uneven:
                    break
                console.print(f"  [yellow]uneven[/] ({r.server_process_cores}): again")
            results[key] = r
            console.print(
                f"  {r.tps:,.0f} tx/s, {_per_k(r.server_cpu_s, r, args):.1f} ms server CPU per "
                f"1,000 tx, cores {r.server_process_cores}"
                + (f", errors: {r.error_text()}" if r.errors else "")
            )
        finally:
            svc.stop()
            for other in cpu:
                other.stop()
    return results


def _is_ready(url: str) -> bool:
    return http_status(f"{url}/ready") == 200


def _many_workers() -> int:
    """Workers of S2 and F2: one per core, at least 2."""
    return max(2, os.cpu_count() or 1)


def _per_k(cpu_s: float, r: WrkResult, args: argparse.Namespace) -> float:
    """CPU milliseconds per 1,000 transactions."""
    tx = r.requests * args.batch_size
    return cpu_s * 1e3 / tx * 1000 if tx else float("nan")


def http_rows(results: dict[str, WrkResult], args: argparse.Namespace) -> list[list[str]]:
    titles = {
        "S": "S: the service (features, in-process state, SQLite log)",
        "S2": "S2: the service, Redis state (its CPU included)",
        "F1": "F1: floor (no features, no log)",
        "F2": "F2: floor",
    }
    rows = []
    for key, r in results.items():
        rows.append(
            [
                titles[key],
                str(_many_workers() if key in ("S2", "F2") else 1),
                str(r.connections),
                f"{r.tps:,.0f}",
                f"{_per_k(r.server_cpu_s, r, args):.1f}",
                f"{_per_k(r.wrk_cpu_s, r, args):.1f}",
                f"{r.p50_ms:.1f}" if r.p50_ms is not None else "-",
                f"{r.p99_ms:.1f}" if r.p99_ms is not None else "-",
                r.error_text() if r.errors else "0",
            ]
        )
    return rows


def budget_rows(results: dict[str, WrkResult], args: argparse.Namespace) -> list[list[str]]:
    """What 100,000 tx/s allows per 1,000 transactions, against what is used: on one worker
    (the in-process state lives in one process, so one core) and on every core (a shared
    state; the load generator runs on the same cores)."""
    many = _many_workers()
    per_core = 1e3 / TARGET_TPS * 1000  # ms of CPU per 1,000 transactions on one core
    rows: list[list[str]] = []
    for title, service, floor_key, n in (
        ("one worker, in-process state", "S", "F1", 1),
        (f"{many} workers on {many} cores, Redis state", "S2", "F2", many),
    ):
        s, f = results.get(service), results.get(floor_key)
        if f is None:
            continue
        allowed = per_core * n
        floor = _per_k(f.server_cpu_s, f, args)
        client = _per_k(f.wrk_cpu_s, f, args) if n > 1 else 0.0
        left = allowed - floor - client
        rows.append([f"**{title}**: CPU per 1,000 tx at {TARGET_TPS:,} tx/s", f"{allowed:.1f}"])
        rows.append(
            [f"  the floor ({floor_key}): HTTP, parse, score, log rows, response", f"{floor:.1f}"]
        )
        if n > 1:
            rows.append(["  the load generator (wrk), on the same cores", f"{client:.1f}"])
        rows.append(["  left for the features, the state and the log", f"{left:.1f}"])
        if s is not None:
            used = _per_k(s.server_cpu_s, s, args) - floor
            rows.append([f"  what they take now ({service} - {floor_key})", f"{used:.1f}"])
            if left > 0:
                rows.append(["  so they must get cheaper by", f"{used / left:.1f}x"])
    return rows


# ============================================================================================
# CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--model-name", default="fraud-detector", help="registered model name")
    ap.add_argument("--alias", default="champion", help="registry alias (default champion)")
    ap.add_argument("--version", default=None, help="a model version instead of the alias")
    ap.add_argument("--batch-size", type=int, default=1000, help="transactions per request")
    ap.add_argument("--batches", type=int, default=200, help="in-process requests (medians)")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of wrk warm-up")
    ap.add_argument(
        "--connections", type=int, default=4, help="wrk connections per worker (default 4)"
    )
    ap.add_argument("--start-timeout", type=float, default=180.0, help="seconds to get ready")
    ap.add_argument(
        "--uneven-retries", type=int, default=3, help="re-runs of an uneven S2 or F2 (default 3)"
    )
    ap.add_argument("--no-in-process", action="store_true", help="skip the in-process stages")
    ap.add_argument("--no-http", action="store_true", help="skip the HTTP runs")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = ap.parse_args(argv)
    if args.batch_size < 8:
        ap.error("--batch-size must be at least 8 (smaller batches take the per-row path)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.no_http and wrk_path() is None:
        console.print("[red]wrk is not installed[/] (apt-get install wrk), or use --no-http")
        return 2
    with tempfile.TemporaryDirectory(prefix="budget-") as t:
        tmp = Path(t)
        snapshot_code(tmp)
        use_registry_env(base_env(tmp))
        version = resolve_version(args.model_name, args.alias, args.version)
        payloads = prepare_payloads(args.model_name, version, tmp, args.batch_size)
        console.print(f"model {args.model_name} v{version}, batches of {args.batch_size}")
        tables: list[tuple[str, list[str], list[list[str]]]] = []
        if not args.no_http:
            results = over_http(args, payloads, tmp)
            tables.append(
                (
                    f"/predict/batch over HTTP ({args.batch_size} tx per request)",
                    [
                        "server",
                        "workers",
                        "c",
                        "tx/s",
                        "server CPU ms / 1,000 tx",
                        "wrk CPU ms / 1,000 tx",
                        "p50 ms",
                        "p99 ms",
                        "errors",
                    ],
                    http_rows(results, args),
                )
            )
            tables.append(
                ("The budget", ["CPU per 1,000 transactions", "ms"], budget_rows(results, args))
            )
        if not args.no_in_process:
            with contextlib.chdir(tmp):
                rows = in_process(args, payloads, tmp)
            tables.insert(
                0,
                (
                    f"In process, one worker, per request of {args.batch_size} "
                    f"(median of {args.batches})",
                    ["stage", "median ms", "mean ms"],
                    rows,
                ),
            )
    for title, columns, rows in tables:
        if args.markdown:
            print(f"\n**{title}**\n\n{markdown_table(columns, rows, text_columns=TEXT_COLUMNS)}")
        else:
            console.print(rich_table(title, columns, rows, text_columns=TEXT_COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
