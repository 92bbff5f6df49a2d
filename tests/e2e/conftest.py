"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import dataclasses
import shutil
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import PipelineRepo


def copy_pipeline_repo(pipeline_repo: PipelineRepo, dest: Path) -> PipelineRepo:
    """A copy of `pipeline_repo` at `dest` (git, DVC cache, outputs, its own DVC remote) with
    an empty MLflow store and Prefect home of its own."""
    shutil.copytree(
        pipeline_repo.path,
        dest,
        symlinks=True,
        ignore=lambda src, names: (
            {"mlflow.db", "mlartifacts", ".prefect", "runs"} & set(names)
            if src == str(pipeline_repo.path)
            else set()
        ),
    )
    uri = f"sqlite:///{dest / 'mlflow.db'}"
    env = {**pipeline_repo.env, "MLFLOW_TRACKING_URI": uri, "PREFECT_HOME": str(dest / ".prefect")}
    return dataclasses.replace(pipeline_repo, path=dest, env=env, tracking_uri=uri)


@pytest.fixture
def pipeline_copy(pipeline_repo: PipelineRepo, tmp_path: Path) -> PipelineRepo:
    """A throwaway copy of `pipeline_repo` with an empty MLflow store of its own: for tests
    that change files, run experiments or register."""
    return copy_pipeline_repo(pipeline_repo, tmp_path / "repo")
