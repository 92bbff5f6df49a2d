"""`python -m monitoring.demo run`: the drift demo (what `make drift-demo` runs)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from fraud.regimes import PRESETS
from monitoring.demo.config import DemoConfig

console = Console(highlight=False, soft_wrap=True)
app = typer.Typer(
    help="The drift demo: simulated production through the API, drift found by the monitoring "
    "flow, a model retrained through Prefect, gated and served. Runs in a sandbox directory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _commands() -> None:
    """The drift demo (`run`)."""


def _fmt(ap: float | None) -> str:
    return "-" if ap is None else f"{ap:.3f}"


def print_summary(summary: dict[str, Any], workdir: Path) -> None:
    first = summary["first_champion"]
    console.rule("what the demo found")
    console.print(
        f"regime {summary['regime']!r} from {summary['onset']}; drift first detected "
        f"{summary['drift_first_detected'] or 'never'}; false alarms before the onset: "
        f"{summary['false_alarms_before_onset']}"
    )
    for r in summary["retrainings"]:
        console.print(f"  retraining on {r['day']}: {r['outcome'][:160]}")
    before = summary.get("before_onset")
    if before:
        ap = before["models"][first]["average_precision"]
        console.print(
            f"average precision before the drift ({before['start']} .. {before['end']}, "
            f"{before['transactions']:,} tx, {before['frauds']} frauds): v{first} {_fmt(ap)}"
        )
    drifted = summary["drifted_days"]
    console.print(
        f"average precision on the drifted days ({drifted['start']} .. {drifted['end']}, "
        f"{drifted['transactions']:,} tx, {drifted['frauds']} frauds): v{first} "
        f"{_fmt(drifted['models'][first]['average_precision'])}"
    )
    after = summary.get("after_promotion")
    if after:
        parts = ", ".join(
            f"v{v} {_fmt(m['average_precision'])} (recall {m['recall']:.2f})"
            for v, m in after["models"].items()
        )
        console.print(
            f"on the drifted days after the promotion ({after['start']} .. {after['end']}, "
            f"{after['transactions']:,} tx, {after['frauds']} frauds), the same transactions "
            f"scored by both: {parts}"
        )
    share = summary.get("won_back")
    if share is not None and share > 1:
        console.print(
            "retraining won back all the average precision the drift took, and more: the "
            f"retrained model beats v{first} before the drift"
        )
    elif share is not None:
        console.print(f"retraining won back {share:.0%} of the average precision the drift took")
    elif not summary["promotions"]:
        console.print("no retrained model was promoted in these days")
    console.print(f"done in {summary['seconds']:.0f} s. Look at:")
    console.print(f"  {workdir}/timeline.png       the days, drift flags, retrainings, promotion")
    console.print(
        f"  {workdir}/timeline.md        the timeline as a table (timeline.json: all of it)"
    )
    console.print(
        f"  {workdir}/monitoring/<day>/  each day's verdict.json and Evidently report.html"
    )
    console.print(
        f"  make dashboards WORKSPACE={workdir}/monitoring/workspace    the drift dashboards"
    )


@app.command("run")
def run(
    params: Annotated[Path, typer.Option(help="params.yaml (population, split, monitor)")] = Path(
        "params.yaml"
    ),
    workdir: Annotated[
        Path, typer.Option(help="the sandbox directory (replaced: only a demo's)")
    ] = Path("runs/drift-demo"),
    regime: Annotated[
        str, typer.Option(help=f"drift preset: {', '.join(sorted(PRESETS))}")
    ] = "concept",
    onset_day: Annotated[int, typer.Option(help="days of production before the change")] = 3,
    days: Annotated[int, typer.Option(help="days of production sent and monitored")] = 42,
    seed: Annotated[
        int, typer.Option(help="seed of the production (another seed, another run)")
    ] = 0,
    label_delay_max_days: Annotated[
        float, typer.Option(help="labels come back 1 to this many days after the transaction")
    ] = 6.9,
    api_port: Annotated[
        int | None, typer.Option(help="the API's port (default: a free one)")
    ] = None,
    prefect_port: Annotated[
        int | None, typer.Option(help="the Prefect server's port (default: a free one)")
    ] = None,
    verbose: Annotated[bool, typer.Option(help="show Prefect's log of every flow run")] = False,
) -> None:
    """Run the drift demo from scratch (about 11 minutes on 2 cores with the defaults)."""
    try:
        cfg = DemoConfig(
            params=params,
            workdir=workdir,
            regime=regime,
            onset_day=onset_day,
            days=days,
            seed=seed,
            label_delay_min_days=min(1.0, label_delay_max_days),
            label_delay_max_days=label_delay_max_days,
            api_port=api_port,
            prefect_port=prefect_port,
            verbose=verbose,
        )
    except ValidationError as e:
        for err in e.errors():
            where = ".".join(str(x) for x in err["loc"]) or "options"
            print(f"error: {where}: {err['msg']}", file=sys.stderr)
        raise typer.Exit(2) from None
    from monitoring.demo.runner import DemoError, run_demo

    try:
        result = run_demo(cfg, lambda text: console.print(text))
    except DemoError as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(1) from None
    print_summary(result.summary, result.workdir)


def main() -> None:  # pragma: no cover
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    app()
