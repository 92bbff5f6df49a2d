"""The demo's sandbox: a directory with everything the loop writes, so that the project's own
registry, prediction log and reports are never touched, and a second run starts afresh.

    runs/drift-demo/
      .drift-demo                 marks the directory as the demo's (only such a one is replaced)
      params.yaml                 the project's, with monitor.reports_dir/workspace in here
      data/raw/transactions.parquet (+ .dvc)   the simulated base data, versioned by DVC
      data/production/            the production files the retrainings add (dvc add)
      mlflow.db, mlartifacts/     the demo's MLflow store and registry
      .prefect/                   the Prefect server's database
      predictions.sqlite          the API's prediction log
      monitoring/                 verdicts, Evidently reports, the workspace for the dashboards
      logs/                       each service's output
      timeline.json, timeline.md, timeline.png   what the demo saw
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fraud.features import FeatureConfig
from fraud.simulator import SimulatorConfig, simulate
from monitoring.config import MonitorConfig, load_monitor_config

MARKER = ".drift-demo"
RAW = Path("data/raw/transactions.parquet")


class SandboxError(RuntimeError):
    """The sandbox cannot be built; the message says why."""


@dataclass(frozen=True)
class Sandbox:
    """The demo's directory and what lives where in it."""

    root: Path
    simulator: SimulatorConfig
    features: FeatureConfig
    monitor: MonitorConfig

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def raw(self) -> Path:
        return self.root / RAW

    @property
    def prediction_log(self) -> Path:
        return self.root / "predictions.sqlite"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of every process of the demo (and of the demo itself): the
        sandbox's MLflow store, Prefect home, prediction log and model cache."""
        env = dict(os.environ)
        # A project's PREFECT_API_URL points at another server: the demo runs its own.
        env.pop("PREFECT_API_URL", None)
        env.update(
            {
                "MLFLOW_TRACKING_URI": self.tracking_uri,
                "PREFECT_HOME": str(self.root / ".prefect"),
                "FRAUD_PREDICTION_LOG": str(self.prediction_log),
                "FRAUD_MODEL_CACHE_DIR": str(self.root / ".cache" / "serving" / "model"),
                # The executable's directory first: `dvc` and `git` hooks find the venv's tools.
                "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
            }
        )
        env.update(extra)
        return env


def _check_replaceable(root: Path) -> None:
    if root.exists() and any(root.iterdir()) and not (root / MARKER).exists():
        raise SandboxError(
            f"workdir: {root} exists and is not a drift demo's directory (no {MARKER} file): "
            "refusing to replace it; choose another --workdir or remove it yourself"
        )


def _run(root: Path, env: dict[str, str], *argv: str) -> None:
    proc = subprocess.run(list(argv), cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SandboxError(
            f"{' '.join(argv)} failed in {root} (exit {proc.returncode}):\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )


def demo_params(project_params: Path, root: Path) -> dict[str, Any]:
    """The project's params with the monitoring job's files inside the sandbox."""
    if not project_params.exists():
        raise SandboxError(f"params: {project_params} does not exist")
    params = yaml.safe_load(project_params.read_text()) or {}
    if not isinstance(params, dict):
        raise SandboxError(f"params: {project_params} is not a YAML mapping")
    monitor = dict(params.get("monitor") or {})
    monitor["reports_dir"] = str((root / "monitoring").resolve())
    monitor["workspace"] = str((root / "monitoring" / "workspace").resolve())
    params["monitor"] = monitor
    return params


def build_sandbox(project_params: Path, root: Path) -> Sandbox:
    """Replace `root` with a fresh sandbox: params, the simulated base data versioned by DVC in
    a git repository of its own. Raises SandboxError naming what failed."""
    root = root.resolve()
    _check_replaceable(root)
    params = demo_params(project_params, root)
    if (params.get("ingest") or {}).get("source", "simulator") != "simulator":
        raise SandboxError(
            f"params: {project_params} ingests a file (ingest.source: file); the demo continues "
            "the simulator's population, so it needs ingest.source: simulator"
        )
    try:
        simulator = SimulatorConfig.model_validate(params.get("simulator") or {})
        features = FeatureConfig.model_validate(params.get("features") or {})
    except ValueError as e:
        raise SandboxError(f"params: {project_params}: {e}") from e
    if root.exists():
        shutil.rmtree(root)
    (root / "logs").mkdir(parents=True)
    (root / MARKER).write_text("made by `python -m monitoring.demo`; replaced at each run\n")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monitor = load_monitor_config(root / "params.yaml")
    sandbox = Sandbox(root, simulator, features, monitor)
    raw = simulate(simulator)
    sandbox.raw.parent.mkdir(parents=True)
    raw.to_parquet(sandbox.raw, index=False)
    env = sandbox.env()
    git = ["git", "-c", "user.name=drift demo", "-c", "user.email=drift-demo@localhost"]
    _run(root, env, "git", "init", "-q")
    _run(root, env, sys.executable, "-m", "dvc", "init", "-q")
    _run(root, env, sys.executable, "-m", "dvc", "config", "core.analytics", "false")
    _run(root, env, sys.executable, "-m", "dvc", "add", "-q", str(RAW))
    (root / ".gitignore").write_text(
        "/mlflow.db\n/mlartifacts/\n/.prefect/\n/.cache/\n/logs/\n/monitoring/\n/runs/\n"
        "/predictions.sqlite*\n/timeline.*\n"
    )
    _run(root, env, *git, "add", "-A")
    _run(root, env, *git, "commit", "-qm", "drift demo: simulated base data")
    return sandbox
