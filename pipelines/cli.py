"""`fraud`: the command line of the pipeline. `dvc.yaml` calls one subcommand per stage.

Each subcommand reads params.yaml, runs one stage (pipelines/stages.py) and prints what it did.
A domain error (bad params, a data contract violation, an unusable window) prints one clear
message and exits with status 1; nothing downstream is overwritten. Messages are printed as text,
never as rich markup: theirs hold brackets (`e.g. [row=3, ...]`) that markup would swallow.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipelines.errors import ComputeError, IngestError, ParamsError, TrainingError
from pipelines.layout import Layout

if TYPE_CHECKING:
    from pipelines.params import Params

app = typer.Typer(
    help="Fraud-detection pipeline: the stages that `dvc repro` runs, batch scoring and the "
    "Prefect training flow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(width=None if sys.stdout.isatty() else 110)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read")]
F = TypeVar("F", bound=Callable[..., Any])
# ContractViolationError is a ValueError too: caught below without importing pandas here.
DOMAIN_ERRORS = (ParamsError, IngestError, TrainingError, ComputeError, FileNotFoundError)


def _error(message: str) -> None:
    """Print an error message on stderr as plain text."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _domain_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (
            *DOMAIN_ERRORS,
            ValueError,
        ) as e:  # steps raise ValueError with an actionable message
            _error(str(e))
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _load(params: Path) -> Params:
    from pipelines.params import load_params

    return load_params(params)


def _done(stage: str, t0: float, detail: str) -> None:
    console.print(
        f"[green]✓[/] {stage} [dim]({time.perf_counter() - t0:.1f} s)[/] {escape(detail)}",
        highlight=False,
    )


@app.command()
@_domain_errors
def ingest(params: ParamsOpt = Path("params.yaml")) -> None:
    """Simulate transactions (or load ingest.path) into data/raw/transactions.parquet."""
    from pipelines.stages import stage_ingest

    t0 = time.perf_counter()
    p = _load(params)
    with console.status(f"ingesting from {p.ingest.source} ..."):
        r = stage_ingest(p, Layout())
    _done("ingest", t0, f"{r.rows:,} transactions, {r.frauds or 0:,} frauds, {r.first} .. {r.last}")


@app.command()
@_domain_errors
def validate(params: ParamsOpt = Path("params.yaml")) -> None:
    """Check data/raw against the data contract; a violation names column, rule and rows."""
    from fraud.validation import ContractViolationError
    from pipelines.stages import stage_validate

    t0 = time.perf_counter()
    layout = Layout()
    try:
        r = stage_validate(_load(params), layout)
    except ContractViolationError as e:
        _error(str(e))
        # The path stage_validate writes the whole report to, every example row included.
        failed = layout.failed_validation_report
        err.print(f"  every violation: {escape(str(failed))}", highlight=False)
        raise typer.Exit(1) from None
    _done("validate", t0, f"{r.rows:,} rows satisfy the contract")


@app.command()
@_domain_errors
def features(params: ParamsOpt = Path("params.yaml")) -> None:
    """Compute point-in-time features into data/features/transactions.parquet."""
    from pipelines.stages import stage_features

    t0 = time.perf_counter()
    with console.status("computing features ..."):
        names = stage_features(_load(params), Layout())
    _done("features", t0, f"{len(names)} features")


@app.command()
@_domain_errors
def train(params: ParamsOpt = Path("params.yaml")) -> None:
    """Train XGBoost on the time split's train window; write models/model.ubj."""
    from pipelines.stages import stage_train

    t0 = time.perf_counter()
    with console.status("training ..."):
        info = stage_train(_load(params), Layout())
    _done(
        "train",
        t0,
        f"{info['rows_train']:,} rows ({info['frauds_train']} frauds), "
        f"threshold {info['threshold']:.4f}, validation AP {info['validation_ap']:.4f}",
    )


@app.command()
@_domain_errors
def evaluate(params: ParamsOpt = Path("params.yaml")) -> None:
    """Metrics on the test window (reports/metrics.json) and plots (reports/plots/)."""
    from pipelines.stages import stage_evaluate

    t0 = time.perf_counter()
    m = stage_evaluate(_load(params), Layout())
    _done("evaluate", t0, f"AP {m['average_precision']:.4f}, ROC AUC {m['roc_auc']:.4f}")


@app.command()
@_domain_errors
def prequential(params: ParamsOpt = Path("params.yaml")) -> None:
    """The handbook's prequential protocol (reports/prequential.json)."""
    from pipelines.stages import stage_prequential

    t0 = time.perf_counter()
    with console.status("prequential folds ..."):
        out = stage_prequential(_load(params), Layout())
    s = out["summary"]
    _done("prequential", t0, f"AP {s['average_precision']:.4f} ± {s['average_precision_std']:.4f}")


@app.command()
@_domain_errors
def register(params: ParamsOpt = Path("params.yaml")) -> None:
    """Log to MLflow, register `fraud-detector` and gate @champion vs @challenger."""
    from pipelines.stages import stage_register

    t0 = time.perf_counter()
    with console.status("registering in MLflow ..."):
        r = stage_register(_load(params), Layout())
    _done("register", t0, f"{r.model_name} v{r.version} -> @{r.alias}")
    console.print(f"  reason: {escape(r.reason)}", highlight=False)


@app.command()
def summary(params: ParamsOpt = Path("params.yaml")) -> None:
    """Print the last run's metrics, the registered version and where to look."""
    layout = Layout()
    try:
        m = json.loads(layout.metrics.read_text())
        reg = json.loads(layout.registration.read_text())
    except FileNotFoundError as e:
        _error(f"{e.filename} is missing: run `dvc repro` first")
        raise typer.Exit(1) from None
    pq = json.loads(layout.prequential.read_text()) if layout.prequential.exists() else None
    k = _load(params).evaluate.top_k
    t = Table(
        title=escape(f"Test window {m['window']['test']} (trained on {m['window']['train']})")
    )
    t.add_column("metric")
    t.add_column("this model", justify="right")
    t.add_column("handbook XGBoost", justify="right")
    t.add_row("ROC AUC", f"{m['roc_auc']:.4f}", "")
    t.add_row("average precision", f"{m['average_precision']:.4f}", "")
    t.add_row(f"card precision@{k}", f"{m[f'card_precision_at_{k}']:.4f}", "")
    t.add_row("threshold (cost-optimal on validation)", f"{m['threshold']:.4f}", "")
    t.add_row(
        "precision / recall / F1 at threshold",
        f"{m['at_threshold.precision']:.3f} / {m['at_threshold.recall']:.3f} / "
        f"{m['at_threshold.f1']:.3f}",
        "",
    )
    t.add_row(
        f"expected cost ({m['cost_model']['missed_fraud']:g}/miss, "
        f"{m['cost_model']['alert']:g}/alert)",
        f"{m['at_threshold.expected_cost']:,.0f}",
        "",
    )
    if pq:
        s = pq["summary"]
        n = len(pq["folds"])
        t.add_section()
        t.add_row(
            f"handbook protocol ({n} folds, 7-day training): AP",
            f"{s['average_precision']:.4f} ± {s['average_precision_std']:.4f}",
            "0.687",
        )
        t.add_row("  ROC AUC", f"{s['roc_auc']:.4f}", "0.87")
        t.add_row(f"  card precision@{k}", f"{s[f'card_precision_at_{k}']:.4f}", "0.30")
    console.print(t)
    console.print(
        f"[bold]{escape(reg['model_name'])} v{reg['version']} -> @{reg['alias']}[/]: "
        f"{escape(reg['reason'])}",
        highlight=False,
    )
    console.print("Look at:")
    console.print(
        f"  MLflow UI:   make mlflow-ui   (store: {escape(reg['tracking_uri'])})",
        highlight=False,
    )
    console.print(f"  pictures:    {escape(str(layout.plots / 'evaluation.png'))}", highlight=False)
    console.print("  DVC plots:   make plots  ->  reports/plots/index.html", highlight=False)
    console.print(
        "  experiments: dvc exp run -S train.max_depth=4 && dvc exp show", highlight=False
    )


@app.command()
@_domain_errors
def score(
    input: Annotated[
        Path, typer.Option("--input", "-i", help="CSV or Parquet of raw transactions")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="where to write the scores (.csv or .parquet)")
    ],
    model_version: Annotated[
        str | None, typer.Option("--model-version", help="registry version (default: @champion)")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Batch-score a file of raw transactions with a registered model."""
    from pipelines.score import score_file

    t0 = time.perf_counter()
    res = score_file(input, output, _load(params), model_version, console)
    for warning in res.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    _done("score", t0, f"{res.rows:,} transactions scored with {res.model} -> {output}")
    if res.metrics_scope:
        console.print(f"  {escape(res.metrics_scope)}", highlight=False, soft_wrap=True)
    for key, value in (res.metrics or {}).items():
        console.print(f"  {key}: {value:.4f}", highlight=False)


@app.command()
@_domain_errors
def flow(
    rev: Annotated[
        str | None, typer.Option("--rev", help="git revision of the DVC data (default: workspace)")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Run the Prefect `training` flow (temporary local server unless PREFECT_API_URL is set)."""
    from pipelines.flows import resolve_revision, training

    if rev is not None:
        resolve_revision(".", rev)  # before Prefect starts: a bad name is one line, not a run
    state = training(params_path=str(params), rev=rev)
    console.print(state)


@app.command()
@_domain_errors
def retrain(
    production: Annotated[
        Path,
        typer.Option(
            "--production",
            help="production transactions with matured labels, contract schema (e.g. from "
            "`python -m monitoring export`)",
        ),
    ],
    window: Annotated[
        str | None,
        typer.Option(help="the production period, for the lineage (e.g. 2018-10-01..2018-10-28)"),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Run the Prefect `retraining` flow: the DVC data plus PRODUCTION, trained on the latest
    weeks, registered and gated (temporary local server unless PREFECT_API_URL is set)."""
    from pipelines.flows import retraining

    if not production.exists():  # before Prefect starts: a wrong path is one line, not a run
        _error(f"--production: {production} does not exist")
        raise typer.Exit(1)
    state = retraining(
        production_path=str(production.resolve()), params_path=str(params), production_window=window
    )
    console.print(state)


ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="registered model (default: params.yaml's register.model_name)"),
]
ReasonOpt = Annotated[
    str, typer.Option("--reason", help="why: recorded on the version with who and when")
]
ByOpt = Annotated[
    str | None, typer.Option("--by", help="who (default: $FRAUD_OPERATOR, else the login name)")
]


def _model_name(model: str | None, params: Path) -> str:
    if model:
        return model
    return _load(params).register_.model_name if params.exists() else "fraud-detector"


def _print_move(move: Any) -> None:
    console.print(
        f"[green]✓[/] {escape(move.model_name)}: @champion v{move.replaced or '-'} -> "
        f"v{move.champion} ({move.action} by {escape(move.by)}); @previous: "
        f"{'v' + move.previous if move.previous else 'none'}",
        highlight=False,
    )
    console.print(
        "  the API serves it after its next alias poll (FRAUD_RELOAD_POLL_SECONDS) or "
        "POST /admin/reload",
        highlight=False,
    )


@app.command()
@_domain_errors
def promote(
    version: Annotated[str, typer.Argument(help="the registry version to make @champion")],
    reason: ReasonOpt,
    model: ModelOpt = None,
    by: ByOpt = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Make VERSION the @champion by hand; the champion it replaces becomes @previous."""
    from pipelines.promote import promote as promote_version

    _print_move(promote_version(_model_name(model, params), version, reason=reason, by=by))


@app.command()
@_domain_errors
def rollback(
    reason: ReasonOpt,
    model: ModelOpt = None,
    by: ByOpt = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Put @champion back on @previous (the champion before the last `fraud promote`)."""
    from pipelines.promote import rollback as rollback_champion

    _print_move(rollback_champion(_model_name(model, params), reason=reason, by=by))


@app.command()
def plots(out: Annotated[Path, typer.Option("--out")] = Path("reports/plots")) -> None:
    """Render the DVC plots to an HTML page that works offline."""
    from pipelines.dvc_plots import render_plots

    try:
        page = render_plots(Path.cwd(), out)
    except RuntimeError as e:
        _error(str(e))
        raise typer.Exit(1) from None
    console.print(f"open {escape(str(page))}", highlight=False)


def _configure_logging() -> None:
    """Send the project's own loggers to stderr at FRAUD_LOG_LEVEL (default WARNING).

    Only `fraud` and `pipelines` are configured, never the root logger: a root handler set here
    would take over Prefect's loggers (its task-run names vanish from `fraud flow`'s output).
    """
    level = os.environ.get("FRAUD_LOG_LEVEL", "WARNING").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
    for name in ("fraud", "pipelines"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


def main() -> None:  # pragma: no cover
    _configure_logging()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
