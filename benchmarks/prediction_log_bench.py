#!/usr/bin/env python
"""Prediction-log benchmark: what the reader's indexes cost the writer and buy the reader.

The log (`fraud.predictions`) is written by the API, one commit per request, and read by
monitoring, one window of transaction time at a time. The contract indexes what the reader
filters and joins on: `predictions(tx_datetime)` and `feedback(transaction_id)`. This measures,
in one run, on two SQLite logs written side by side with the same rows:

* **contract**: the log as `open_prediction_log` creates it (all its indexes);
* **baseline**: the same log without the `tx_datetime` index (the log before the reader
  existed; it kept `feedback(transaction_id)`, without which every window row would scan the
  whole feedback table).

Writes: `--days` days of `--per-day` predictions, in requests of `--batch` rows, alternately to
each log (so both see the same machine), plus late labels for 1% of them; the median and p99
time of one `log_predictions` call. Reads: `read_window` of one day in the middle (with its
labels), `--repeats` times each, alternately; the median. Prints one table with the ratio
against the baseline and writes benchmarks/results/prediction_log.json. Nothing here asserts.

    python benchmarks/prediction_log_bench.py               # ~1 minute on 2 cores
    python benchmarks/prediction_log_bench.py --per-day 20000 --days 3   # a quick look
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, for `python <this>`

from benchmarks.common.machine import machine_info
from benchmarks.common.project import RESULTS_DIR, git_dirty, git_head
from benchmarks.common.report import (
    command_line,
    fmt_ms,
    markdown_table,
    rich_table,
    write_results,
)
from fraud.predictions import (
    FeedbackRow,
    PredictionLogReader,
    PredictionRow,
    open_prediction_log,
)
from fraud.predictions.contract import INDEXES, PREDICTIONS_TABLE
from fraud.predictions.sqlite import window_query

#: The index the baseline log does without: the one on what the reader's window filters.
WINDOW_INDEX = next(name for name, table, column in INDEXES if column == "tx_datetime")
T0 = dt.datetime(2018, 10, 1)
N_FEATURES = 23
COLUMNS = ["what", "contract log", "baseline (no tx_datetime index)", "ratio"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--days", type=int, default=5, help="days of predictions (default 5)")
    p.add_argument(
        "--per-day", type=int, default=100_000, help="predictions per day (default 100,000)"
    )
    p.add_argument("--batch", type=int, default=1_000, help="rows per request (default 1,000)")
    p.add_argument("--repeats", type=int, default=5, help="reads of the window per log")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    p.add_argument(
        "--json",
        type=Path,
        default=RESULTS_DIR / "prediction_log.json",
        help="where to write the results (default benchmarks/results/prediction_log.json)",
    )
    args = p.parse_args(argv)
    for name in ("days", "per_day", "batch", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def make_batches(args: argparse.Namespace) -> list[list[PredictionRow]]:
    """`days * per_day` predictions in time order, cut into requests of `batch` rows."""
    rng = random.Random(args.seed)
    names = [f"FEATURE_{i:02d}" for i in range(N_FEATURES)]
    total = args.days * args.per_day
    step = 86_400 / args.per_day
    logged = T0.isoformat()
    rows = [
        PredictionRow(
            transaction_id=i,
            tx_datetime=(T0 + dt.timedelta(seconds=i * step)).isoformat(),
            customer_id=rng.randrange(5_000),
            terminal_id=rng.randrange(10_000),
            amount=round(rng.uniform(1, 200), 2),
            features={n: rng.random() for n in names},
            score=rng.random(),
            is_alert=0,
            threshold=0.5,
            model_name="fraud-detector",
            model_version="1",
            logged_at=logged,
        )
        for i in range(total)
    ]
    return [rows[i : i + args.batch] for i in range(0, total, args.batch)]


def feedback_rows(args: argparse.Namespace) -> list[FeedbackRow]:
    """Late labels for 1% of the transactions, known a week after them."""
    rng = random.Random(args.seed + 1)
    total = args.days * args.per_day
    step = 86_400 / args.per_day
    out = []
    for i in sorted(rng.sample(range(total), max(1, total // 100))):
        known = (T0 + dt.timedelta(seconds=i * step, days=7)).isoformat()
        out.append(FeedbackRow(i, 1, known, known))
    return out


def write_logs(
    paths: dict[str, Path], batches: list[list[PredictionRow]], labels: list[FeedbackRow]
) -> dict[str, list[float]]:
    """Write every batch to each log, alternately; the seconds of each `log_predictions`."""
    logs = {name: open_prediction_log(path) for name, path in paths.items()}
    with sqlite3.connect(paths["baseline"]) as conn:
        conn.execute(f"DROP INDEX {WINDOW_INDEX}")
    times: dict[str, list[float]] = {name: [] for name in logs}
    try:
        with Progress(transient=True) as progress:
            task = progress.add_task("writing both logs", total=len(batches))
            for rows in batches:
                for name, log in logs.items():
                    t = time.perf_counter()
                    log.log_predictions(rows)
                    times[name].append(time.perf_counter() - t)
                progress.advance(task)
        for log in logs.values():
            log.log_feedback(labels)
    finally:
        for log in logs.values():
            log.close()
    return times


def read_windows(
    paths: dict[str, Path], args: argparse.Namespace
) -> tuple[dict[str, list[float]], int]:
    """Read one day in the middle of the log from each, alternately; seconds per read, rows."""
    start = T0 + dt.timedelta(days=args.days // 2)
    end = start + dt.timedelta(days=1)
    readers = {name: PredictionLogReader(path) for name, path in paths.items()}
    times: dict[str, list[float]] = {n: [] for name in readers for n in (name, f"{name} query")}
    frames: dict[str, Any] = {}
    try:
        for _ in range(args.repeats):
            for name, reader in readers.items():
                t = time.perf_counter()
                frames[name] = reader.read_window(start, end)
                times[name].append(time.perf_counter() - t)
    finally:
        for reader in readers.values():
            reader.close()
    # The query alone (rows fetched, no frame): what the index changes.
    sql = window_query(labels_known_by=False, model_version=False)
    params = {"start": start.isoformat(), "end": end.isoformat()}
    for _ in range(args.repeats):
        for name, path in paths.items():
            with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as conn:
                t = time.perf_counter()
                conn.execute(sql, params).fetchall()
                times[f"{name} query"].append(time.perf_counter() - t)
            conn.close()
    a, b = frames["contract"], frames["baseline"]
    if not a.equals(b):
        raise RuntimeError("the two logs returned different windows: the benchmark is broken")
    return times, len(a)


def ratio(x: float) -> str:
    """A ratio to the baseline, two decimals (the write costs differ by a few percent)."""
    return f"{x:.2f}x"


def p99(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, round(0.99 * (len(values) - 1)))]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    total = args.days * args.per_day
    dirty = git_dirty(["fraud/predictions", "benchmarks/prediction_log_bench.py"])
    console.print(
        f"{total:,} predictions over {args.days} days in requests of {args.batch:,}, "
        f"two SQLite logs side by side (commit {git_head()}{' + changes' if dirty else ''})"
    )
    t = time.perf_counter()
    batches = make_batches(args)
    labels = feedback_rows(args)
    console.print(f"made the rows in {time.perf_counter() - t:.1f} s")
    with tempfile.TemporaryDirectory(prefix="prediction-log-bench-") as tmp:
        paths = {"contract": Path(tmp) / "contract.db", "baseline": Path(tmp) / "baseline.db"}
        writes = write_logs(paths, batches, labels)
        reads, window_rows = read_windows(paths, args)
        sizes = {name: path.stat().st_size for name, path in paths.items()}
        with sqlite3.connect(paths["contract"]) as conn:
            indexes = [r[1] for r in conn.execute(f"PRAGMA index_list({PREDICTIONS_TABLE})")]
        if WINDOW_INDEX not in indexes:
            raise RuntimeError(
                f"the contract log has no {WINDOW_INDEX} index on {PREDICTIONS_TABLE}"
            )

    def ms(v: float) -> float:
        return v * 1000

    w = {n: (statistics.median(v), p99(v)) for n, v in writes.items()}
    r = {n: statistics.median(v) for n, v in reads.items()}
    rows = [
        [
            f"write {args.batch:,} predictions, one commit: median ms",
            fmt_ms(ms(w["contract"][0])),
            fmt_ms(ms(w["baseline"][0])),
            ratio(w["contract"][0] / w["baseline"][0]),
        ],
        [
            f"write {args.batch:,} predictions: p99 ms",
            fmt_ms(ms(w["contract"][1])),
            fmt_ms(ms(w["baseline"][1])),
            ratio(w["contract"][1] / w["baseline"][1]),
        ],
        [
            f"read_window of one day ({window_rows:,} rows, labels joined): median ms",
            fmt_ms(ms(r["contract"])),
            fmt_ms(ms(r["baseline"])),
            ratio(r["contract"] / r["baseline"]),
        ],
        [
            "  of which the SQL query (rows fetched, no frame): median ms",
            fmt_ms(ms(r["contract query"])),
            fmt_ms(ms(r["baseline query"])),
            ratio(r["contract query"] / r["baseline query"]),
        ],
        [
            "file size, MiB",
            f"{sizes['contract'] / 2**20:.0f}",
            f"{sizes['baseline'] / 2**20:.0f}",
            ratio(sizes["contract"] / sizes["baseline"]),
        ],
    ]
    console.print(rich_table("Prediction log (SQLite, WAL)", COLUMNS, rows))
    console.print(
        "ratio = contract / baseline: above 1x the contract's indexes cost, below 1x they save"
    )
    if args.markdown:
        console.print(markdown_table(COLUMNS, rows), highlight=False, soft_wrap=True)
    out = {
        "command": command_line(),
        "commit": git_head(),
        "dirty": dirty,
        "machine": machine_info(["orjson", "pyarrow", "pandas"]),
        "predictions": total,
        "batch": args.batch,
        "window_rows": window_rows,
        "write_s": {n: {"median": v[0], "p99": v[1]} for n, v in w.items()},
        "read_window_s": r,
        "file_bytes": sizes,
    }
    console.print(f"wrote {write_results(args.json, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
