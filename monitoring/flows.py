"""Prefect 3 flows of the monitoring job: `monitoring` (one window) and `monitoring replay`
(one window per day of a range, what `make drift-demo` runs).

The job itself is `monitoring.job.run_monitor`; the flow only wires it into Prefect: a task that
loads params.yaml's `monitor:` section, a task that checks the window and writes its verdict and
report, and, when the verdict triggers retraining, a task that asks Prefect for a run of the
`training` flow's deployment. Monitoring never imports `pipelines`: retraining starts only as a
flow run of a deployment on a Prefect server (`request_retraining`).

With no PREFECT_API_URL, Prefect starts a temporary local server for the run (about 20 s);
with PREFECT_API_URL set, the runs are recorded on that server, and `python -m monitoring.deploy`
serves the flow there on a daily schedule.

    python -m monitoring.flows run                          # the log's latest day
    python -m monitoring.flows run --end 2018-10-15         # the day before 2018-10-15
    python -m monitoring.flows run --input month.parquet    # a file, scored with the champion
    python -m monitoring.flows replay 2018-10-01 2018-10-14 # one run per day, in order
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from fraud.predictions import DEFAULT_PREDICTION_LOG, PredictionLogReader
from monitoring.config import MonitorConfig, load_monitor_config
from monitoring.export import export_log, write_export
from monitoring.job import RunResult, run_monitor
from monitoring.verdict import Verdict

#: The deployment of the `training` flow that a triggered retraining runs ("<flow>/<deployment>").
#: Serving it is the training side's job (pipelines); monitoring only names it.
TRAINING_DEPLOYMENT = "retraining/production"  # pipelines/deploy.py serves it
#: The value of `end` that makes a scheduled run check the day before its scheduled start.
SCHEDULED = "scheduled"


@dataclass(frozen=True)
class MonitoringSummary:
    """What one monitoring flow run found and did (the verdict's decisions, where it is)."""

    window_start: str
    window_end: str
    as_of: str
    model_version: str
    transactions: int
    drift_detected: bool
    retrain_triggered: bool
    drift_reasons: list[str]
    retrain_reasons: list[str]
    verdict_path: str
    report_path: str | None
    #: What happened to the retraining request: the training flow run started, or why not.
    #: None when the verdict did not trigger retraining.
    retraining: str | None = None
    #: The id of the training flow run the request started (None when none started).
    retraining_run_id: str | None = None

    @classmethod
    def from_result(
        cls, result: RunResult, retraining: RetrainingRequest | None = None
    ) -> MonitoringSummary:
        v = result.verdict
        return cls(
            window_start=v.window_start,
            window_end=v.window_end,
            as_of=v.as_of,
            model_version=v.model_version,
            transactions=int(v.extra.get("transactions", 0)),
            drift_detected=v.drift_detected,
            retrain_triggered=v.retrain_triggered,
            drift_reasons=list(v.drift_reasons),
            retrain_reasons=list(v.retrain_reasons),
            verdict_path=str(result.verdict_path),
            report_path=str(result.report_path) if result.report_path else None,
            retraining=retraining.message if retraining else None,
            retraining_run_id=retraining.flow_run_id if retraining else None,
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def line(self) -> str:
        """The one-line summary the flow logs."""
        why = self.drift_reasons[0] if self.drift_reasons else "no check fired"
        return (
            f"window {self.window_start} .. {self.window_end} ({self.transactions:,} tx, "
            f"model v{self.model_version}): drift {'DETECTED' if self.drift_detected else 'none'}"
            f" ({why}); retraining {'TRIGGERED' if self.retrain_triggered else 'not triggered'}"
            f"; verdict {self.verdict_path}"
        )


@dataclass(frozen=True)
class RetrainingRequest:
    """What asking for a retraining did: a sentence, and the flow run's id if one started."""

    message: str
    flow_run_id: str | None = None

    def __str__(self) -> str:
        return self.message


def request_retraining(
    verdict: Verdict,
    *,
    deployment: str = TRAINING_DEPLOYMENT,
    api_url: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> RetrainingRequest:
    """Ask Prefect for a run of the training deployment: what happened, and the run's id.

    Starts the run only through the Prefect API (`run_deployment`, not waiting for it): there
    must be a Prefect server (PREFECT_API_URL, or `api_url`) on which `deployment` is served.
    Without one, or when the server has no such deployment or cannot be reached, nothing starts
    and the sentence says why and what to run instead. Never raises for those cases: the
    verdict is already written and the request is recorded in the flow's result.
    """
    if not verdict.retrain_triggered:
        return RetrainingRequest("retraining not requested: the verdict did not trigger it")
    if api_url is None:
        from prefect.settings import PREFECT_API_URL

        api_url = PREFECT_API_URL.value()
    if not api_url:
        return RetrainingRequest(
            f"retraining requested but not started: no Prefect server (PREFECT_API_URL is "
            f"unset), so the deployment {deployment} cannot run; run it by hand (`make retrain "
            f"PRODUCTION=<the exported file>`), or serve it on a Prefect server (`make "
            f"retrain-serve`) and set PREFECT_API_URL"
        )
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    key = f"retrain:{verdict.model_name}:{verdict.model_version}:{verdict.as_of}"
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            run = run_deployment(
                deployment,
                timeout=0,  # start it, do not wait: training takes longer than monitoring
                parameters=parameters or {},
                tags=["retraining", f"window:{verdict.window_start[:10]}"],
                idempotency_key=key,  # a retried monitoring task does not start a second one
            )
    except ObjectNotFound:
        return RetrainingRequest(
            f"retraining requested but not started: the Prefect server at {api_url} has no "
            f"deployment {deployment}; serve it (`make retrain-serve`)"
        )
    except Exception as e:  # the server is down or refuses: say so, keep the verdict
        return RetrainingRequest(
            f"retraining requested but not started: {deployment} on {api_url}: {e}"
        )
    # Called from sync code, run_deployment runs to completion (its async twin is separate).
    assert isinstance(run, FlowRun)
    return RetrainingRequest(
        f"retraining started: flow run {run.name!r} ({run.id}) of deployment {deployment}",
        str(run.id),
    )


def window_end(end: str | None) -> dt.datetime | None:
    """The window's end from the `end` parameter: None (the log's latest day), an ISO date or
    time (UTC), or "scheduled" (midnight UTC of the flow run's scheduled start: a run scheduled
    at 00:15 checks the day that just ended, even if it starts late)."""
    if end is None:
        return None
    if end == SCHEDULED:
        from prefect.runtime import flow_run

        start = flow_run.scheduled_start_time
        moment = dt.datetime.fromisoformat(str(start)) if start else dt.datetime.now(dt.UTC)
        if moment.tzinfo is not None:
            moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
        return dt.datetime.combine(moment.date(), dt.time())
    return _iso(end, "end")


def _iso(value: str, name: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{name}: {value!r} is not an ISO 8601 date or time (e.g. 2018-10-15)"
        ) from None
    if parsed.tzinfo is not None:  # the log's times are naive UTC
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


@task(name="load monitoring params", cache_policy=NO_CACHE)
def load_config(params_path: str) -> MonitorConfig:
    return load_monitor_config(params_path)


@task(name="check drift and performance, write verdict and report", cache_policy=NO_CACHE)
def check_window(
    cfg: MonitorConfig,
    input_path: str | None,
    prediction_log: str,
    end: dt.datetime | None,
    as_of: dt.datetime | None,
    write_report: bool,
) -> RunResult:
    result = run_monitor(
        cfg,
        input_path=Path(input_path) if input_path else None,
        prediction_log=prediction_log,
        end=end,
        as_of=as_of,
        write_report=write_report,
    )
    logger = get_run_logger()
    for note in result.notes:
        logger.info("note: %s", note)
    fired = [c["name"] for c in result.verdict.checks if c.get("fired")]
    logger.info("%d checks, fired: %s", len(result.verdict.checks), ", ".join(fired) or "none")
    return result


@task(name="export production data", cache_policy=NO_CACHE)
def export_production(
    cfg: MonitorConfig,
    verdict: Verdict,
    verdict_path: Path,
    prediction_log: str,
    input_path: str | None,
) -> dict[str, Any]:
    """The retraining flow's parameters: the production transactions with matured labels in
    the contract's schema (from the log's first transaction to the window's as_of), or the
    checked file itself, as an absolute path (the training deployment runs elsewhere)."""
    if input_path is not None:
        path = Path(input_path).resolve()
        window = f"{verdict.window_start[:10]}..{verdict.window_end[:10]}"
        return {"production_path": str(path), "production_window": window}
    as_of = dt.datetime.fromisoformat(verdict.as_of)
    with PredictionLogReader(prediction_log) as reader:
        span = reader.time_range()
    assert span is not None  # the verdict was computed from the log
    export = export_log(prediction_log, span[0], as_of, as_of, cfg.performance)
    out = (verdict_path.parent / "production.parquet").resolve()
    write_export(export.frame, out)
    window = f"{span[0].date()}..{(export.matured_until - dt.timedelta(days=1)).date()}"
    get_run_logger().info(
        "exported %d transactions with matured labels (%s) to %s; %d younger left out",
        len(export.frame),
        window,
        out,
        export.left_out,
    )
    return {"production_path": str(out), "production_window": window}


@task(name="request retraining", cache_policy=NO_CACHE)
def request_retraining_task(
    verdict: Verdict, deployment: str, parameters: dict[str, Any] | None = None
) -> RetrainingRequest:
    outcome = request_retraining(verdict, deployment=deployment, parameters=parameters)
    get_run_logger().info("%s", outcome.message)
    return outcome


@flow(name="monitoring")
def monitoring(
    params_path: str = "params.yaml",
    prediction_log: str | None = None,
    end: str | None = None,
    as_of: str | None = None,
    input_path: str | None = None,
    write_report: bool = True,
    training_deployment: str = TRAINING_DEPLOYMENT,
) -> MonitoringSummary:
    """Monitor one window (the prediction log's, or a file's), write its verdict, and request
    retraining through Prefect when the verdict triggers it.

    prediction_log: SQLite path or postgresql:// URL (default: FRAUD_PREDICTION_LOG, else the
    contract's default); end: the window's end (ISO, exclusive; "scheduled" for the day before
    the scheduled start; default: the end of the log's latest day); as_of: the time whose known
    labels are used (default: the window's end); input_path: a transactions file instead of
    the log.
    """
    target = prediction_log or os.environ.get("FRAUD_PREDICTION_LOG") or DEFAULT_PREDICTION_LOG
    stop, known = window_end(end), _iso(as_of, "as_of") if as_of else None
    cfg = load_config(params_path)
    result = check_window(cfg, input_path, target, stop, known, write_report)
    retraining = None
    if result.verdict.retrain_triggered:
        parameters = export_production(cfg, result.verdict, result.verdict_path, target, input_path)
        retraining = request_retraining_task(result.verdict, training_deployment, parameters)
    summary = MonitoringSummary.from_result(result, retraining)
    get_run_logger().info("%s", summary.line())
    return summary


@flow(name="monitoring replay")
def replay(
    first_day: dt.date,
    last_day: dt.date,
    params_path: str = "params.yaml",
    prediction_log: str | None = None,
    write_report: bool = True,
    training_deployment: str = TRAINING_DEPLOYMENT,
) -> list[MonitoringSummary]:
    """Run the monitoring flow for each day from first_day to last_day (inclusive), in order:
    the window of day d ends at d + 1 day and uses the labels known by then, as a daily run
    at midnight would have. The retraining policy's state carries from day to day."""
    if last_day < first_day:
        raise ValueError(f"last_day: {last_day} is before first_day {first_day}")
    summaries = []
    day = first_day
    while day <= last_day:
        summaries.append(
            monitoring(
                params_path=params_path,
                prediction_log=prediction_log,
                end=(day + dt.timedelta(days=1)).isoformat(),
                write_report=write_report,
                training_deployment=training_deployment,
            )
        )
        day += dt.timedelta(days=1)
    triggered = [s.window_start[:10] for s in summaries if s.retrain_triggered]
    get_run_logger().info(
        "replayed %d days: drift on %d, retraining triggered on %s",
        len(summaries),
        sum(s.drift_detected for s in summaries),
        ", ".join(triggered) or "none",
    )
    return summaries


# --- command line ---------------------------------------------------------------------------

app = typer.Typer(
    help="The monitoring job as Prefect flows (a temporary local server unless PREFECT_API_URL "
    "is set).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOpt = Annotated[Path, typer.Option(help="params.yaml with the `monitor:` section")]
LogOpt = Annotated[
    str | None,
    typer.Option(
        help="the prediction log: SQLite path or postgresql:// URL (default: "
        f"FRAUD_PREDICTION_LOG, else {DEFAULT_PREDICTION_LOG})"
    ),
]
ReportOpt = Annotated[
    bool, typer.Option(help="write the Evidently report and add the run to the workspace")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the result as JSON on stdout")]
DeploymentOpt = Annotated[
    str, typer.Option(help="the training deployment a triggered retraining runs")
]


def _fail(e: Exception) -> typer.Exit:
    print(f"error: {e}", file=sys.stderr)
    return typer.Exit(1)


@app.command("run")
def run_cmd(
    input_path: Annotated[
        Path | None, typer.Option("--input", help="a transactions file instead of the log")
    ] = None,
    end: Annotated[str | None, typer.Option(help="the window's end (ISO, exclusive)")] = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="labels known by then")] = None,
    prediction_log: LogOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    report: ReportOpt = True,
    training_deployment: DeploymentOpt = TRAINING_DEPLOYMENT,
    as_json: JsonOpt = False,
) -> None:
    """Run the monitoring flow once."""
    try:
        summary = monitoring(
            params_path=str(params),
            prediction_log=prediction_log,
            end=end,
            as_of=as_of,
            input_path=str(input_path) if input_path else None,
            write_report=report,
            training_deployment=training_deployment,
        )
    except Exception as e:
        raise _fail(e) from None
    print(json.dumps(summary.as_dict()) if as_json else summary.line())


@app.command("replay")
def replay_cmd(
    first_day: Annotated[dt.datetime, typer.Argument(formats=["%Y-%m-%d"])],
    last_day: Annotated[dt.datetime, typer.Argument(formats=["%Y-%m-%d"])],
    prediction_log: LogOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    report: ReportOpt = True,
    training_deployment: DeploymentOpt = TRAINING_DEPLOYMENT,
    as_json: JsonOpt = False,
) -> None:
    """Run the monitoring flow for each day from FIRST_DAY to LAST_DAY (inclusive)."""
    try:
        summaries = replay(
            first_day.date(),
            last_day.date(),
            params_path=str(params),
            prediction_log=prediction_log,
            write_report=report,
            training_deployment=training_deployment,
        )
    except Exception as e:
        raise _fail(e) from None
    for s in summaries:
        print(json.dumps(s.as_dict()) if as_json else s.line())


def main() -> None:  # pragma: no cover
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
