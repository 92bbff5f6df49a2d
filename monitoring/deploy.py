"""`python -m monitoring.deploy`: the monitoring flow on a Prefect server, daily.

The deployment and its schedule are declared here, in code: `monitoring/daily`, cron
"15 0 * * *" in UTC, each run checking the day that ended at midnight (`end="scheduled"`) over
the prediction log. It needs a Prefect server (PREFECT_API_URL), which keeps the schedule;
Prefect's temporary local server dies with the process that started it, so it cannot hold one.

By default this process is the worker: it polls the server and runs each scheduled (or manually
triggered) flow run in a subprocess, until stopped (Ctrl-C). With `--work-pool NAME` it registers
the deployment on that work pool instead and exits, and the pool's worker runs the runs
(fraud/work_pools.py): on a `process` pool, `prefect worker start --pool NAME --type process`
runs them from this checkout (`--source`, default the current directory: `monitoring/flows.py`,
and relative paths read there); on a pool of images (Kubernetes, k8s/platform/prefect/), each
run is a job of `--image IMAGE`. Registering again updates the deployment in place.

    prefect server start --host 127.0.0.1 --port 4200 &        # once, in its own terminal
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python -m monitoring.deploy                                 # serve monitoring/daily
    prefect deployment run monitoring/daily                     # a run now, besides the schedule
    python -m monitoring.deploy --dry-run                       # show the deployment, serve nothing
    python -m monitoring.deploy --work-pool local               # register on a process pool
    python -m monitoring.deploy --work-pool k8s --image fraud-platform:0.1.0   # register only
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fraud.work_pools import WorkPoolError, WorkPoolTarget, prepare, register_on_work_pool
from monitoring.flows import SCHEDULED, TRAINING_DEPLOYMENT

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

DEFAULT_NAME = "daily"
#: 00:15 UTC: the day's last transactions have been logged; the run checks that day.
DEFAULT_CRON = "15 0 * * *"
DEFAULT_TIMEZONE = "UTC"


def monitoring_deployment(
    *,
    name: str = DEFAULT_NAME,
    cron: str = DEFAULT_CRON,
    timezone: str = DEFAULT_TIMEZONE,
    params_path: str = "params.yaml",
    prediction_log: str | None = None,
    write_report: bool = True,
    training_deployment: str = TRAINING_DEPLOYMENT,
) -> RunnerDeployment:
    """The monitoring flow's deployment with its cron schedule and parameters (not yet served).

    The flow is referenced by module path (`monitoring.flows.monitoring`), so the served runs
    find it from any working directory of an environment where the project is installed;
    relative paths in the parameters (params.yaml, a SQLite log) are read from the serving
    process's working directory. Raises ValueError naming `cron` when it is not a cron string.
    """
    from prefect.deployments.runner import RunnerDeployment
    from prefect.flows import EntrypointType
    from prefect.schedules import Cron

    from monitoring.flows import monitoring

    try:
        schedule = Cron(cron, timezone=timezone)
    except ValueError as e:
        raise ValueError(f"cron: {cron!r} is not a valid cron schedule ({e})") from None
    parameters: dict[str, Any] = {
        "params_path": params_path,
        "end": SCHEDULED,
        "write_report": write_report,
        "training_deployment": training_deployment,
    }
    if prediction_log is not None:
        parameters["prediction_log"] = prediction_log
    deployment = monitoring.to_deployment(
        name=name,
        schedule=schedule,
        parameters=parameters,
        description="Daily monitoring of the prediction log: drift, matured-label performance, "
        "the label-free estimate, the verdict, and retraining through "
        f"{training_deployment} when the policy triggers it.",
        tags=["monitoring"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    # Called from sync code, to_deployment returns the deployment (not a coroutine).
    assert isinstance(deployment, RunnerDeployment)
    return deployment


def describe(deployment: RunnerDeployment) -> dict[str, Any]:
    """What the deployment runs, when and with which parameters (for --dry-run and logs)."""
    return {
        "deployment": f"monitoring/{deployment.name}",
        "entrypoint": deployment.entrypoint,
        "schedules": [
            {
                "cron": getattr(s.schedule, "cron", None),
                "timezone": getattr(s.schedule, "timezone", None),
            }
            for s in deployment.schedules or []
        ],
        "parameters": deployment.parameters,
    }


def register(deployment: RunnerDeployment, target: WorkPoolTarget) -> None:
    """Create or update the deployment on the target's work pool (nothing is built or pushed);
    exit 1 with the reason when the pool cannot take it or the server refuses it."""
    from prefect.deployments.runner import DeploymentApplyError

    try:
        [deployment_id] = register_on_work_pool([deployment], target)
    except WorkPoolError as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(1) from None
    except DeploymentApplyError as e:
        print(
            f"error: registering monitoring/{deployment.name} on work pool {target.pool}: {e}",
            file=sys.stderr,
        )
        raise typer.Exit(1) from None
    print(f"registered monitoring/{deployment.name} ({deployment_id}) {target.sentence()}")


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def serve(
    name: Annotated[str, typer.Option(help="the deployment's name")] = DEFAULT_NAME,
    cron: Annotated[str, typer.Option(help="when it runs (cron, in --timezone)")] = DEFAULT_CRON,
    timezone: Annotated[str, typer.Option(help="the cron's time zone")] = DEFAULT_TIMEZONE,
    params: Annotated[Path, typer.Option(help="params.yaml with the `monitor:` section")] = Path(
        "params.yaml"
    ),
    prediction_log: Annotated[
        str | None,
        typer.Option(
            help="the prediction log (SQLite path or postgresql:// URL); default: the served "
            "runs' FRAUD_PREDICTION_LOG, else the contract's default"
        ),
    ] = None,
    report: Annotated[bool, typer.Option(help="write the Evidently report each run")] = True,
    training_deployment: Annotated[
        str, typer.Option(help="the training deployment a triggered retraining runs")
    ] = TRAINING_DEPLOYMENT,
    work_pool: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="register the deployment on this work pool and exit, instead of serving it; a "
            "process pool runs it from --source, a pool of images (kubernetes) from --image",
        ),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            help="the image the work pool's jobs run: required for a pool whose jobs run an "
            "image (kubernetes, docker), refused for a process pool"
        ),
    ] = None,
    source: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="for a process pool: the project checkout its worker runs the flow from, and "
            "the runs' working directory (default: the current directory)",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the deployment as JSON and serve nothing")
    ] = False,
) -> None:
    """Serve the monitoring flow on the Prefect server at PREFECT_API_URL, on a daily schedule
    (or, with --work-pool, register it on a work pool and exit).

    Serving runs until stopped; each scheduled run checks the day that ended at midnight (UTC).
    """
    if work_pool is None and (image is not None or source is not None):
        print(
            "error: --image and --source describe a work pool's jobs: they need --work-pool",
            file=sys.stderr,
        )
        raise typer.Exit(2)
    target = None
    if work_pool is not None:
        try:
            target = WorkPoolTarget.of(work_pool, image, source)
        except WorkPoolError as e:
            print(f"error: {e}", file=sys.stderr)
            raise typer.Exit(2) from None
    try:
        deployment = monitoring_deployment(
            name=name,
            cron=cron,
            timezone=timezone,
            params_path=str(params),
            prediction_log=prediction_log,
            write_report=report,
            training_deployment=training_deployment,
        )
        if target is not None:
            deployment = prepare(deployment, target)
    except ValueError as e:  # a bad cron, or a --source without the project's flows
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(1) from None
    if dry_run:
        shown = describe(deployment)
        if target is not None:
            shown |= target.describe()
        print(json.dumps(shown, indent=2))
        return
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        print(
            "error: PREFECT_API_URL is not set: a schedule needs a Prefect server that outlives "
            "this process (`prefect server start`, then export "
            "PREFECT_API_URL=http://127.0.0.1:4200/api)",
            file=sys.stderr,
        )
        raise typer.Exit(1)
    if target is not None:
        register(deployment, target)
        return
    from prefect import serve as prefect_serve

    prefect_serve(deployment)


def main() -> None:  # pragma: no cover
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
