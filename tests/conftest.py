"""Shared fixtures: tiny data from the project's own simulator, a tiny trained model, and a
real `dvc repro` of the whole pipeline in a temporary copy of the project."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY_PARAMS = ROOT / "tests" / "tiny_params.yaml"


def read_offline_env(path: Path, project_root: Path) -> dict[str, str]:
    """offline.env's KEY=value pairs, `${PROJECT_ROOT}` replaced by `project_root`."""
    pairs = (
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if re.match(r"[A-Z_][A-Z0-9_]*=", line)
    )
    return {key: value.replace("${PROJECT_ROOT}", str(project_root)) for key, value in pairs}


# offline.env's defaults, and an author for the commits of the temporary git repositories.
OFFLINE_ENV = {
    **read_offline_env(ROOT / "offline.env", ROOT),
    "GIT_AUTHOR_NAME": "tests",
    "GIT_AUTHOR_EMAIL": "tests@example.invalid",
    "GIT_COMMITTER_NAME": "tests",
    "GIT_COMMITTER_EMAIL": "tests@example.invalid",
}
for _k, _v in OFFLINE_ENV.items():
    os.environ.setdefault(_k, _v)


def _deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = (
            _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def tiny_params_dict() -> dict:
    """The repo's params.yaml with tests/tiny_params.yaml's overrides (complete, as DVC wants)."""
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    return _deep_merge(base, yaml.safe_load(TINY_PARAMS.read_text()))


@pytest.fixture(scope="session")
def tiny_params():
    from pipelines.params import Params

    return Params.model_validate(tiny_params_dict())


@pytest.fixture(scope="session")
def tiny_transactions(tiny_params) -> pd.DataFrame:
    from fraud.simulator import simulate

    return simulate(tiny_params.simulator)


@pytest.fixture(scope="session")
def tiny_features(tiny_params, tiny_transactions) -> pd.DataFrame:
    from fraud.features import compute_features

    return compute_features(tiny_transactions, tiny_params.features)


@pytest.fixture(scope="session")
def tiny_model(tiny_params, tiny_features):
    """(booster, TrainResult) trained on the tiny data's train window."""
    from pipelines.train import train_model

    return train_model(
        tiny_features,
        tiny_params.features.feature_names(),
        tiny_params.split.split(),
        tiny_params.split.validation_days,
        tiny_params.train,
        tiny_params.evaluate.cost.model(),
    )


@dataclass
class PipelineRepo:
    """A temporary copy of the project where `dvc repro` has run with the tiny params."""

    path: Path
    env: dict[str, str]
    tracking_uri: str

    def run(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            list(args), cwd=self.path, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc


# .gitignore too: what the repository commits (reports/metrics.json, ...) is what DVC can compare.
PROJECT_FILES = ["dvc.yaml", "fraud", "pipelines", "pyproject.toml", ".dvcignore", ".gitignore"]


def make_pipeline_repo(dest: Path) -> PipelineRepo:
    """Copy the project's pipeline into `dest` with the tiny params, as a fresh git+DVC repo."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    (dest / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(), sort_keys=False))
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        **OFFLINE_ENV,
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "MLFLOW_TRACKING_URI": f"sqlite:///{dest / 'mlflow.db'}",
        "PREFECT_HOME": str(dest / ".prefect"),
    }
    env.pop("PREFECT_API_URL", None)
    repo = PipelineRepo(dest, env, env["MLFLOW_TRACKING_URI"])
    repo.run("git", "init", "-q")
    repo.run("dvc", "init", "-q")
    repo.run("dvc", "config", "core.analytics", "false")
    repo.run("dvc", "config", "core.autostage", "true")
    # Relative, as in the repository's .dvc/config: a copy of this repo pushes to its own remote.
    (dest / ".dvc-remote").mkdir()
    repo.run("dvc", "remote", "add", "-d", "local", ".dvc-remote")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "tiny pipeline")
    return repo


@pytest.fixture(scope="session")
def pipeline_repo(tmp_path_factory) -> PipelineRepo:
    """The whole pipeline run for real: `dvc repro` with a real MLflow SQLite store."""
    repo = make_pipeline_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    repo.run("dvc", "repro")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "first dvc repro")
    return repo
