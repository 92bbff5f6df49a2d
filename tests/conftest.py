"""Shared fixtures: tiny data from the project's own simulator, a tiny trained model, and a
real `dvc repro` of the whole pipeline in a temporary copy of the project."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Generator
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


# --- Test tiers, and the tests that did not run -------------------------------------------------

TIERS = ("unit", "integration", "e2e", "container")
#: Fixtures that run the whole pipeline, start a real service (uvicorn, Redis, PostgreSQL) or
#: point MLflow at a store (its schema migrations alone take seconds): a test that uses one,
#: itself or through another fixture, is an integration test.
SERVICE_FIXTURES = frozenset(
    {
        "pipeline_repo",
        "live_server",
        "servers",
        "module_servers",
        "redis_url",
        "pg_server",
        "use_tracking_uri",
    }
)
#: Parameter values for which a fixture starts a service with `request.getfixturevalue`, which a
#: test's fixture closure does not show (the prediction log's PostgreSQL backend).
SERVICE_PARAMS = frozenset({"postgres"})


def tier_of(item: pytest.Item) -> str:
    """The tier of a test: its own tier marker if it has one, else where it is and what it uses."""
    for tier in TIERS:
        if item.get_closest_marker(tier):
            return tier
    if item.path.parent.name == "e2e":
        return "e2e"
    callspec = getattr(item, "callspec", None)
    params = {str(v) for v in callspec.params.values()} if callspec else set()
    if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())) or SERVICE_PARAMS & params:
        return "integration"
    return "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item)
        if not item.get_closest_marker(tier):
            item.add_marker(tier)


def ci_is_set() -> bool:
    """Whether this run is CI's (CI set to anything but empty, 0 or false, as CI services do)."""
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false"}


class SkippedTests:
    """Makes skipped tests loud: grouped by reason in a block at the very end of the run, with
    the command that installs what they miss; with CI set, a skip fails the run, because CI
    installs everything (`make system-deps`) and a test that did not run there proves nothing."""

    def __init__(self) -> None:
        self.by_reason: dict[str, list[str]] = defaultdict(list)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # A skip's longrepr is (path, line, reason); an expected failure's is its traceback.
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
            self.by_reason[reason].append(report.nodeid)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.by_reason and ci_is_set() and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    # tryfirst on a wrapper: outermost, so the block comes after pytest's short summary.
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_terminal_summary(
        self, terminalreporter: pytest.TerminalReporter
    ) -> Generator[None, None, None]:
        result = yield
        if not self.by_reason:
            return result
        tr = terminalreporter
        total = sum(len(ids) for ids in self.by_reason.values())
        tr.write_sep("=", f"{total} TESTS DID NOT RUN (skipped)", red=True, bold=True)
        for reason, ids in sorted(self.by_reason.items(), key=lambda kv: -len(kv[1])):
            modules = Counter(nodeid.split("::")[0] for nodeid in ids)
            tr.write_line(f"{len(ids):5d}  {reason}", bold=True)
            tr.write_line("       in " + ", ".join(f"{m} ({n})" for m, n in modules.items()))
        tr.write_line("")
        tr.write_line(
            "Install what they need (Debian or Ubuntu; root or sudo), then run them again:  "
            "make system-deps",
            bold=True,
        )
        if ci_is_set():
            tr.write_line("CI is set: a skipped test fails the run (exit status 1).", red=True)
        tr.write_sep("=", red=True)
        return result


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SkippedTests(), "skipped-tests")
