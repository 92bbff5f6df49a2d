"""The Prefect `training` flow: a real flow run on Prefect's temporary local server."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time

import pytest
from mlflow import MlflowClient

from fraud import registry
from pipelines.flows import UnknownRevisionError, training
from tests.conftest import ROOT
from tests.prefect_server import prefect_server


def readme_flow_commands() -> list[str]:
    """The command lines of the README's ```bash block under "## Prefect", comments dropped."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme[readme.index("## Prefect") :], re.S)
    assert block, 'no ```bash block under "## Prefect" in README.md'
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]


@pytest.fixture(scope="module")
def flow_run(pipeline_repo):
    """The README's example of a flow on the data at a git revision, run as written after
    `make run` (here: the tiny pipeline's `dvc repro`, committed)."""
    commands = readme_flow_commands()
    tag = next(c for c in commands if c.startswith("git tag"))
    flow = next(c for c in commands if c.startswith("fraud flow --rev"))
    pipeline_repo.run(*shlex.split(tag))
    return pipeline_repo.run(*shlex.split(flow), timeout=900)


def test_readme_flow_example_on_a_git_revision_runs(pipeline_repo, flow_run):
    text = flow_run.stdout + flow_run.stderr
    assert "Completed" in text
    rev = shlex.split(next(c for c in readme_flow_commands() if c.startswith("fraud flow")))[-1]
    commit = pipeline_repo.run("git", "rev-parse", rev).stdout.strip()
    assert f"{rev} (commit {commit})" in text


def test_flow_with_an_unknown_revision_fails_in_one_line_naming_it(pipeline_repo):
    started = time.monotonic()
    proc = pipeline_repo.run("fraud", "flow", "--rev", "v1.0", check=False, timeout=120)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: --rev v1.0: not a revision of the git repository")
    assert time.monotonic() - started < 30  # no retries, no Prefect server started


def test_training_flow_refuses_an_unknown_revision_before_any_task(pipeline_repo, tmp_path):
    with pytest.raises(UnknownRevisionError, match="no-such-tag"):
        training.fn(rev="no-such-tag", repo=str(pipeline_repo.path), workdir=str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_training_flow_runs_without_a_prefect_server_configured(flow_run):
    text = flow_run.stdout + flow_run.stderr
    assert "Completed" in text
    for task_name in (
        "fetch DVC data",
        "validate data contract",
        "train XGBoost",
        "register and gate in MLflow",
    ):
        assert task_name in text


def test_flow_and_dvc_repro_give_the_same_metrics_from_the_same_data(pipeline_repo, flow_run):
    dvc_metrics = json.loads((pipeline_repo.path / "reports/metrics.json").read_text())
    flow_metrics = json.loads((pipeline_repo.path / "runs/flow/reports/metrics.json").read_text())
    for key in ("average_precision", "roc_auc", "card_precision_at_100", "threshold"):
        assert flow_metrics[key] == pytest.approx(dvc_metrics[key], rel=1e-9), key


def test_flow_registers_an_equal_model_as_challenger(pipeline_repo, flow_run):
    client = MlflowClient(tracking_uri=pipeline_repo.tracking_uri)
    reg = json.loads((pipeline_repo.path / "runs/flow/reports/registration.json").read_text())
    mv = client.get_model_version("fraud-detector", reg["version"])
    assert mv.tags[registry.TAG_DECISION] == "challenger"
    assert "does not beat the champion" in mv.tags[registry.TAG_REASON]
    assert str(client.get_model_version_by_alias("fraud-detector", "champion").version) == "1"


def test_runs_of_one_commit_have_names_that_tell_them_apart(pipeline_repo, flow_run):
    client = MlflowClient(tracking_uri=pipeline_repo.tracking_uri)
    experiment = client.get_experiment_by_name("fraud-detection")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) >= 2  # dvc repro's and the flow's
    names = [r.info.run_name for r in runs]
    assert len(set(names)) == len(names)
    for r in runs:
        tags = r.data.tags
        assert r.info.run_name.startswith(f"train-{tags[registry.TAG_GIT_COMMIT][:8]}-")
        assert f"-params-{tags[registry.TAG_PARAMS_HASH][:8]}-" in r.info.run_name


@pytest.mark.slow
def test_training_flow_run_is_recorded_on_a_prefect_server_when_api_url_is_set(
    pipeline_repo, tmp_path
):
    with prefect_server(tmp_path / "prefect-server", env=pipeline_repo.env) as server:
        proc = subprocess.run(
            ["fraud", "flow"],
            cwd=pipeline_repo.path,
            env=server.env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs = server.post("/flow_runs/filter", {})
        assert [r["state_type"] for r in runs] == ["COMPLETED"]
        tasks = server.post("/task_runs/filter", {})
        assert {"train XGBoost", "register and gate in MLflow"} <= {
            t["name"].rsplit("-", 1)[0] for t in tasks
        }
