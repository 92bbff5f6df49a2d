"""Prefect 3 flows: the same stage functions as `dvc repro`, as tasks with retries and logs.

`training` reads the DVC-versioned raw data (the workspace's, or the one at a git revision
through `dvc.api`), then validates, builds features, trains, evaluates and registers it, writing
into its own working directory (`runs/flow/` by default) so that it never disturbs the DVC
workspace. With no PREFECT_API_URL, Prefect starts a temporary local server for the run; with
PREFECT_API_URL set, the run is recorded on that server (and can be scheduled there).

`retraining` does the same on the DVC-versioned data grown by a file of production transactions
with matured labels (`python -m monitoring export`), with a split that follows the data (the
latest labelled weeks, `pipelines.retrain`). The production file is versioned with DVC under
`data/production/<md5>.<ext>` (its `.dvc` file is left for the user to commit) and the registered
version names its md5 and window in its tags. `pipelines.deploy` serves it as the deployment
`retraining/production` that the monitoring flow triggers.

A revision is resolved to its commit before any task runs: a name that git does not know fails
the flow at once (retrying cannot make it exist), and the data cannot change under a retry when a
branch moves.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import dvc.api
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from fraud import schema
from pipelines import artifacts, stages
from pipelines.params import Params, load_params
from pipelines.stages import Layout

RAW_PATH = "data/raw/transactions.parquet"


class UnknownRevisionError(ValueError):
    """The git revision names no commit of the repository."""


def resolve_revision(repo: str | Path, rev: str) -> str:
    """The commit that `rev` (a commit, branch or tag) names in the git repository `repo`."""
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        why = proc.stderr.strip() or "no commit, branch or tag of that name (see `git tag`)"
        raise UnknownRevisionError(
            f"--rev {rev}: not a revision of the git repository {Path(repo).resolve()}: {why}"
        )
    return proc.stdout.strip()


@task(name="fetch DVC data", retries=3, retry_delay_seconds=5, cache_policy=NO_CACHE)
def fetch_raw(repo: str, commit: str | None, layout: Layout) -> Path:
    """Copy the raw data DVC tracks (workspace, or at `commit`) into the flow's layout."""
    layout.raw.parent.mkdir(parents=True, exist_ok=True)
    tmp = layout.raw.with_suffix(".part")
    with dvc.api.open(RAW_PATH, repo=repo, rev=commit, mode="rb") as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, length=1 << 20)
    tmp.replace(layout.raw)
    return layout.raw


@task(name="validate data contract", cache_policy=NO_CACHE)
def validate(params: Params, layout: Layout) -> int:
    report = stages.stage_validate(params, layout)
    get_run_logger().info("%d rows satisfy the contract", report.rows)
    return report.rows


@task(name="compute point-in-time features", retries=1, cache_policy=NO_CACHE)
def features(params: Params, layout: Layout) -> list[str]:
    names = stages.stage_features(params, layout)
    get_run_logger().info("%d features", len(names))
    return names


@task(name="train XGBoost", cache_policy=NO_CACHE)
def train(params: Params, layout: Layout) -> dict[str, Any]:
    info = stages.stage_train(params, layout)
    get_run_logger().info(
        "trained on %d rows, threshold %.4f", info["rows_train"], info["threshold"]
    )
    return info


@task(name="evaluate on test window", cache_policy=NO_CACHE)
def evaluate(params: Params, layout: Layout) -> dict[str, Any]:
    m = stages.stage_evaluate(params, layout)
    get_run_logger().info("AP %.4f, ROC AUC %.4f", m["average_precision"], m["roc_auc"])
    return m


@task(name="prequential protocol", cache_policy=NO_CACHE)
def prequential(params: Params, layout: Layout) -> dict[str, Any]:
    out = stages.stage_prequential(params, layout)
    get_run_logger().info("prequential AP %.4f", out["summary"]["average_precision"])
    return out


@task(name="register and gate in MLflow", retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE)
def register(
    params: Params,
    layout: Layout,
    production_md5: str | None = None,
    production_window: str | None = None,
) -> dict[str, Any]:
    r = stages.stage_register(params, layout, production_md5, production_window)
    get_run_logger().info("%s v%s -> @%s: %s", r.model_name, r.version, r.alias, r.reason)
    return r.as_dict()


@flow(name="training", log_prints=True)
def training(
    params_path: str = "params.yaml",
    rev: str | None = None,
    repo: str = ".",
    workdir: str = "runs/flow",
    run_prequential: bool = True,
) -> dict[str, Any]:
    """Train, evaluate and register a model from the DVC-versioned data (workspace or `rev`).

    Raises UnknownRevisionError, before any task runs, when git does not know `rev`.
    """
    commit = resolve_revision(repo, rev) if rev is not None else None
    params = load_params(params_path)
    layout = Layout(Path(workdir))
    fetch_raw(repo, commit, layout)
    source = f"{rev} (commit {commit})" if rev is not None else "the workspace"
    get_run_logger().info("raw data %s of %s -> %s", RAW_PATH, source, layout.raw)
    validate(params, layout)
    features(params, layout)
    train(params, layout)
    metrics = evaluate(params, layout)
    if run_prequential:
        prequential(params, layout)
    registration = register(params, layout)
    return {"metrics": metrics, "registration": registration}


# ------------------------------------------------------------------------------------------
# Retraining on production data

PRODUCTION_DIR = "data/production"


@dataclasses.dataclass(frozen=True)
class ProductionFile:
    """A validated production file: its contract rows, md5 (DVC's hash) and window."""

    path: Path
    frame: pd.DataFrame
    md5: str
    window: str


@task(name="read production data", cache_policy=NO_CACHE)
def read_production(
    production_path: str, production_window: str | None, params: Params
) -> ProductionFile:
    """Read and validate the production file (labels required); fails naming the problem."""
    from fraud.transactions_file import read_transactions_file
    from fraud.validation import to_contract_frame
    from pipelines.register import file_md5

    raw = read_transactions_file(production_path, "production_path")
    limits = dataclasses.replace(params.validate_.limits(), require_labels=True)
    frame = to_contract_frame(raw, limits)
    if frame.empty:
        raise ValueError(f"production_path: {production_path} holds no transactions")
    times = frame[schema.TX_DATETIME]
    window = production_window or f"{times.min().date()}..{times.max().date()}"
    md5 = file_md5(production_path)
    get_run_logger().info(
        "production data %s: %d transactions, %d frauds, window %s, md5 %s",
        production_path,
        len(frame),
        int(frame[schema.TX_FRAUD].sum()),
        window,
        md5,
    )
    return ProductionFile(Path(production_path), frame, md5, window)


def version_production_file(production: ProductionFile, repo: str | Path) -> Path:
    """Copy the file to `<repo>/data/production/<md5><ext>` and `dvc add` it; the .dvc file's path.

    The content-addressed name makes a second run with the same file a no-op for DVC."""
    repo = Path(repo)
    rel = Path(PRODUCTION_DIR) / f"{production.md5}{production.path.suffix.lower()}"
    dest = repo / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        tmp = dest.with_name(f".{dest.name}.part")
        shutil.copyfile(production.path, tmp)
        tmp.replace(dest)
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "add", "-q", str(rel)],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"dvc add {rel} in {repo.resolve()} failed: {(proc.stderr or proc.stdout).strip()}"
        )
    return rel.with_name(rel.name + ".dvc")


@task(name="add production data", cache_policy=NO_CACHE)
def add_production(production: ProductionFile, repo: str, layout: Layout) -> dict[str, Any]:
    """Append the production rows to the fetched raw data, write it back atomically, and version
    the production file with DVC."""
    from pipelines.retrain import combine_with_production

    base = pd.read_parquet(layout.raw)
    combined = combine_with_production(base, production.frame)
    added = len(combined) - len(base)
    dvc_file = version_production_file(production, repo)
    artifacts.write_parquet(combined, layout.raw)
    log = get_run_logger()
    log.info(
        "added %d production transactions (%d already in the data) -> %d rows in %s",
        added,
        len(production.frame) - added,
        len(combined),
        layout.raw,
    )
    log.info(
        "production data versioned by DVC as %s: commit it (git add %s .gitignore && git commit)"
        " and `dvc push` so that this model's data can be restored",
        dvc_file,
        dvc_file,
    )
    return {
        "production_md5": production.md5,
        "production_window": production.window,
        "rows_added": added,
        "rows": len(combined),
        "dvc_file": str(dvc_file),
    }


@task(name="split following the data", cache_policy=NO_CACHE)
def follow_data(params: Params, layout: Layout) -> Params:
    from pipelines.retrain import params_following_data

    times = pd.read_parquet(layout.raw, columns=[schema.TX_DATETIME])
    followed = params_following_data(params, times)
    windows = followed.split.split().describe()
    get_run_logger().info(
        "split following the data: train %s, delay %s, test %s",
        windows["train"],
        windows["delay"],
        windows["test"],
    )
    return followed


@flow(name="retraining", log_prints=True)
def retraining(
    production_path: str,
    params_path: str = "params.yaml",
    repo: str = ".",
    workdir: str = "runs/retrain",
    production_window: str | None = None,
    run_prequential: bool = False,
) -> dict[str, Any]:
    """Retrain on the DVC-versioned data of the workspace plus a production file with matured
    labels (contract schema), on the latest weeks, then register and gate the model.

    A missing file or a contract violation fails the flow before any data is fetched.
    """
    params = load_params(params_path)
    layout = Layout(Path(workdir))
    production = read_production(production_path, production_window, params)
    fetch_raw(repo, None, layout)
    added = add_production(production, repo, layout)
    followed = follow_data(params, layout)
    validate(followed, layout)
    features(followed, layout)
    train(followed, layout)
    metrics = evaluate(followed, layout)
    if run_prequential:
        prequential(followed, layout)
    registration = register(followed, layout, production.md5, production.window)
    return {
        "metrics": metrics,
        "registration": registration,
        "production": added,
        "split": followed.split.split().describe(),
    }
