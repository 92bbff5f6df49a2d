"""Prefect 3 flows: the same stage functions as `dvc repro`, as tasks with retries and logs.

`training` reads the DVC-versioned raw data (the workspace's, or the one at a git revision
through `dvc.api`), then validates, builds features, trains, evaluates and registers it, writing
into its own working directory (`runs/flow/` by default) so that it never disturbs the DVC
workspace. With no PREFECT_API_URL, Prefect starts a temporary local server for the run; with
PREFECT_API_URL set, the run is recorded on that server (and can be scheduled there).

A revision is resolved to its commit before any task runs: a name that git does not know fails
the flow at once (retrying cannot make it exist), and the data cannot change under a retry when a
branch moves.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import dvc.api
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines import stages
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
def register(params: Params, layout: Layout) -> dict[str, Any]:
    r = stages.stage_register(params, layout)
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
