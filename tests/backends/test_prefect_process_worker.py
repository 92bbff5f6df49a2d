"""The training and monitoring deployments on a real Prefect server, run by a real process worker:
issue 13's "Prefect server started for the tests, the deployments registered on it and run by a
process worker" (the Kubernetes work pool is the k8s/ version of the same).

One server (its own PREFECT_HOME and database), one `process` work pool, and a fresh project
checkout with the tiny params (`make_pipeline_repo`, plus `monitoring/`, and `dvc repro ingest`
so that DVC versions the raw data). In it, as a user would: `python -m pipelines.deploy
--work-pool POOL` and `python -m monitoring.deploy --work-pool POOL` register the deployments
(no image: the pool runs processes), and `prefect worker start --pool POOL --type process` runs
them. Then `run_deployment`: training completes and registers a model version in the
checkout's MLflow store; a run with a bad parameter ends FAILED with the error in its logs; the
same worker then runs monitoring on a file, which completes and writes its report.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from mlflow import MlflowClient

from fraud import registry
from tests.conftest import ROOT, PipelineRepo, make_pipeline_repo
from tests.prefect_server import (
    VENV_BIN,
    PrefectServer,
    PrefectWorker,
    prefect_server,
    prefect_worker,
)

pytestmark = [pytest.mark.backends, pytest.mark.e2e, pytest.mark.slow]

POOL = "local-flows"
#: Seconds a flow run may take to end (the tiny training: ~1-2 minutes on 2 busy cores).
RUN_TIMEOUT = 600
#: Seconds to wait for a finished run's last log lines to reach the server.
LOG_WAIT = 60


@dataclass(frozen=True)
class Platform:
    server: PrefectServer
    worker: PrefectWorker
    repo: PipelineRepo
    registered: str  # the registration commands' output

    def run_deployment(self, name: str, parameters: dict[str, Any]) -> Any:
        """A flow run of deployment `name`, waited for (bounded): the FlowRun, state included."""
        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.server.api}):
            return run_deployment(name, parameters=parameters, timeout=RUN_TIMEOUT, poll_interval=1)

    def logs(self, flow_run_id: Any, *expected: str) -> str:
        """Every log line of a flow run (its tasks' too), in order, once each `expected` text is
        in them or LOG_WAIT seconds passed: a run's process ships its logs in batches, which may
        reach the server after the run's final state."""
        deadline = time.monotonic() + LOG_WAIT
        while True:
            rows = self.server.post(
                "/logs/filter",
                {"logs": {"flow_run_id": {"any_": [str(flow_run_id)]}}, "sort": "TIMESTAMP_ASC"},
            )
            text = "\n".join(r["message"] for r in rows)
            if all(e in text for e in expected) or time.monotonic() > deadline:
                return text
            time.sleep(1)

    def explain(self, run: Any) -> str:
        """What to read when a run did not end as expected."""
        return (
            f"state {run.state!r}\n--- flow-run logs:\n{self.logs(run.id)[-4000:]}\n"
            f"--- worker log:\n{self.worker.log()[-4000:]}"
        )


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """Server, pool, a checkout with DVC-versioned raw data, the deployments registered with the
    project's commands, and a process worker started in the checkout; all stopped afterwards."""
    tmp = tmp_path_factory.mktemp("prefect-worker")
    repo = make_pipeline_repo(tmp / "repo")
    shutil.copytree(
        ROOT / "monitoring",
        repo.path / "monitoring",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    repo.run("dvc", "repro", "ingest")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "the raw data, versioned by DVC")
    with prefect_server(tmp / "prefect", env=repo.env) as server:
        created = subprocess.run(
            [str(VENV_BIN / "prefect"), "work-pool", "create", POOL, "--type", "process"],
            env=server.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        outputs = []
        for module in ("pipelines.deploy", "monitoring.deploy"):
            proc = server.run("-m", module, "--work-pool", POOL, cwd=repo.path)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            outputs.append(proc.stdout)
        with prefect_worker(server, POOL, repo.path, log_path=tmp / "worker.log") as worker:
            yield Platform(server, worker, repo, "".join(outputs))


@pytest.fixture(scope="module")
def training_run(platform: Platform) -> Any:
    return platform.run_deployment("training/production", {"run_prequential": False})


@pytest.fixture(scope="module")
def failed_run(platform: Platform, training_run: Any) -> Any:
    return platform.run_deployment("training/production", {"rev": "no-such-tag"})


@pytest.fixture(scope="module")
def monitoring_run(platform: Platform, training_run: Any, failed_run: Any) -> Any:
    """Monitoring on a file (the tiny data set, whole: its first weeks are the features'
    history), after the failed run: the same worker must still be serving."""
    data = platform.repo.path.parent / "later.parquet"
    shutil.copyfile(platform.repo.path / "data/raw/transactions.parquet", data)
    return platform.run_deployment("monitoring/daily", {"input_path": str(data)})


def test_the_commands_register_the_deployments_on_a_process_pool_to_run_from_the_checkout(
    platform: Platform,
):
    source = platform.repo.path.resolve()
    for name, entrypoint in [
        ("training/production", "pipelines/flows.py:training"),
        ("retraining/production", "pipelines/flows.py:retraining"),
        ("monitoring/daily", "monitoring/flows.py:monitoring"),
    ]:
        d = platform.server.get(f"/deployments/name/{name}")
        assert d["work_pool_name"] == POOL
        assert d["entrypoint"] == entrypoint
        assert "image" not in d["job_variables"]
        assert d["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(source)}}
        ]
        assert f"registered {name} ({d['id']}) on work pool {POOL}, from the checkout" in (
            platform.registered
        )


def test_the_worker_runs_the_training_deployment_which_registers_a_model_version(
    platform: Platform, training_run: Any
):
    assert training_run.state.is_completed(), platform.explain(training_run)
    client = MlflowClient(tracking_uri=platform.repo.tracking_uri)
    [version] = client.search_model_versions(f"name='{registry.DEFAULT_MODEL_NAME}'")
    # The first version of an empty registry: the gate makes it the champion.
    assert version.tags[registry.TAG_DECISION] == "champion", version.tags
    # The run's working directory was the checkout: its relative workdir is there.
    assert (platform.repo.path / "runs/flow/reports/registration.json").is_file()


def test_the_training_run_logs_show_each_stage(platform: Platform, training_run: Any):
    stages = (
        "raw data data/raw/transactions.parquet of the workspace",
        "rows satisfy the contract",
        "features",
        "trained on",
        "AP ",
        f"{registry.DEFAULT_MODEL_NAME} v1 -> @champion",
    )
    logs = platform.logs(training_run.id, *stages)
    for line in stages:
        assert line in logs, f"{line!r} not in the flow-run logs:\n{logs[-3000:]}"


def test_a_run_with_a_bad_parameter_fails_with_the_error_in_its_logs(
    platform: Platform, failed_run: Any
):
    assert failed_run.state.is_failed(), platform.explain(failed_run)
    error = "--rev no-such-tag: not a revision of the git repository"
    logs = platform.logs(failed_run.id, error)
    assert error in logs, logs[-3000:]


def test_the_worker_keeps_serving_and_runs_monitoring_which_writes_its_report(
    platform: Platform, failed_run: Any, monitoring_run: Any
):
    assert failed_run.state.is_failed()
    assert monitoring_run.state.is_completed(), platform.explain(monitoring_run)
    assert platform.worker.running()
    reports = platform.repo.path / "reports/monitoring"
    [verdict] = list(reports.glob("*/verdict.json"))
    assert (verdict.parent / "report.html").stat().st_size > 100_000
    # Relative to the run's working directory, the checkout (params.yaml's reports_dir).
    summary = f"verdict {verdict.relative_to(platform.repo.path)}"
    logs = platform.logs(monitoring_run.id, summary)
    assert "model v1): drift" in logs and summary in logs, logs[-3000:]
