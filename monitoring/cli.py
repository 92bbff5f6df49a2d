"""`python -m monitoring`: run the monitoring job once, over the prediction log or a file.

    python -m monitoring run                         # the latest day of the prediction log
    python -m monitoring run --end 2018-10-15        # the day before 2018-10-15 (a replay)
    python -m monitoring run --input month.parquet   # a file of transactions, scored here

It prints a one-screen summary and writes reports/monitoring/<window>/verdict.json (every check,
drift_detected, retrain_triggered and why) and report.html (Evidently), and adds the run to the
dashboards' workspace (`make dashboards`). Exit status 0 whatever the verdict; 1 on an error
(bad params, unreadable log or file, no model), with one line that says what to fix.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fraud.predictions import DEFAULT_PREDICTION_LOG

app = typer.Typer(
    help="Monitoring: drift and performance checks on the prediction log or a file, Evidently "
    "reports and dashboards, and the retraining decision.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def _time(value: str | None, flag: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 date or time (e.g. 2018-10-15)", param_hint=flag
        ) from None


@app.callback()
def _main() -> None:
    """Monitoring: drift and performance checks, reports, dashboards, retraining decision."""


@app.command()
def run(
    input_path: Annotated[
        Path | None,
        typer.Option(
            "--input",
            help="a CSV or Parquet file of transactions (contract schema, labels optional) to "
            "score with the model and check, instead of the prediction log",
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(
            help="end of the window (exclusive, transaction time, UTC); default: the end of the "
            "day of the log's latest transaction"
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="the time the checks take as now (labels known later are not used); "
            "default: the window's end",
        ),
    ] = None,
    prediction_log: Annotated[
        str | None,
        typer.Option(
            help="the API's prediction log: a SQLite path or a postgresql:// URL "
            f"(default: FRAUD_PREDICTION_LOG, else {DEFAULT_PREDICTION_LOG})"
        ),
    ] = None,
    params: Annotated[Path, typer.Option(help="params.yaml with the `monitor:` section")] = Path(
        "params.yaml"
    ),
    report: Annotated[
        bool, typer.Option(help="write the Evidently report and add the run to the workspace")
    ] = True,
) -> None:
    """Check one window against the monitored model's reference and write its verdict."""
    from fraud.predictions import PredictionLogError
    from fraud.registry import ModelNotFoundError
    from fraud.transactions_file import TransactionsFileError
    from fraud.validation import ContractViolationError
    from monitoring.config import MonitorConfigError, load_monitor_config
    from monitoring.job import MonitorError, run_monitor
    from monitoring.verdict import render_summary

    target = prediction_log or os.environ.get("FRAUD_PREDICTION_LOG") or DEFAULT_PREDICTION_LOG
    window_end, checked_as_of = _time(end, "--end"), _time(as_of, "--as-of")
    try:
        cfg = load_monitor_config(params)
        result = run_monitor(
            cfg,
            input_path=input_path,
            prediction_log=target,
            end=window_end,
            as_of=checked_as_of,
            write_report=report,
        )
    except (
        MonitorConfigError,
        MonitorError,
        PredictionLogError,
        ModelNotFoundError,
        TransactionsFileError,
        ContractViolationError,
        FileNotFoundError,
        ValueError,
    ) as e:
        err.print(f"error: {e}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    render_summary(result.verdict, console)
    for note in result.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    console.print(f"verdict: {result.verdict_path}", markup=False, highlight=False)
    if result.report_path:
        console.print(f"report:  {result.report_path}", markup=False, highlight=False)


@app.command()
def export(
    output: Annotated[
        Path, typer.Option(help="where to write the transactions (.parquet or .csv)")
    ],
    start: Annotated[str, typer.Option(help="first transaction time (UTC, ISO 8601)")],
    end: Annotated[str, typer.Option(help="end of the period (exclusive)")],
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="labels known by then count (default: now, UTC)"),
    ] = None,
    prediction_log: Annotated[
        str | None, typer.Option(help="as for `run` (default: FRAUD_PREDICTION_LOG)")
    ] = None,
    params: Annotated[Path, typer.Option(help="params.yaml (monitor.performance)")] = Path(
        "params.yaml"
    ),
) -> None:
    """Write the log's transactions whose labels have matured, in the data contract's schema."""
    from fraud.predictions import PredictionLogError
    from fraud.validation import ContractViolationError
    from monitoring.config import MonitorConfigError, load_monitor_config
    from monitoring.export import export_log, write_export

    if output.suffix.lower() not in {".parquet", ".csv"}:
        raise typer.BadParameter(f"{output} must end in .parquet or .csv", param_hint="--output")
    first, stop = _time(start, "--start"), _time(end, "--end")
    known_by = _time(as_of, "--as-of") or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert first is not None and stop is not None
    target = prediction_log or os.environ.get("FRAUD_PREDICTION_LOG") or DEFAULT_PREDICTION_LOG
    try:
        cfg = load_monitor_config(params)
        result = export_log(target, first, stop, known_by, cfg.performance)
        write_export(result.frame, output)
    except (MonitorConfigError, PredictionLogError, ContractViolationError, OSError) as e:
        err.print(f"error: {e}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    frauds = int(result.frame["TX_FRAUD"].sum())
    console.print(
        f"wrote {len(result.frame):,} transactions ({frauds:,} frauds) to {output}; "
        f"{result.left_out:,} younger ones left out (labels not matured by {known_by})",
        markup=False,
        highlight=False,
    )


def main() -> None:  # pragma: no cover
    # MLflow draws a progress bar per artifact download: noise in a job's log.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
