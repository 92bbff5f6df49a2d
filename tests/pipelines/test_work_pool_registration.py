"""Registration on a Prefect work pool (`--work-pool NAME [--image IMAGE | --source DIR]` of
`python -m pipelines.deploy` and `python -m monitoring.deploy`), against a real Prefect server
with basic auth (PREFECT_SERVER_API_AUTH_STRING, as k8s/platform/prefect/ runs it) and two real
pools: a `kubernetes` one from the platform's own base job template (what the Kubernetes
registration Job does, minus Kubernetes) and a `process` one (a worker on one machine; the runs
themselves are tested in tests/backends/test_prefect_process_worker.py).

Both modules are tested here, on one server (it takes 20-35 s to start): the registration Job
runs them one after the other, and a flow run of either lands on the same pool.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.prefect_server import VENV_BIN, PrefectServer, prefect_server

IMAGE = "fraud-platform:0.1.0"
K8S_POOL = "fraud-flows"
PROCESS_POOL = "local-flows"
AUTH = "fraud-admin:not-a-real-password"
TEMPLATE = ROOT / "k8s/platform/prefect/base-job-template.json"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """`prefect server start` with basic auth, a `kubernetes` and a `process` work pool on it."""
    with prefect_server(tmp_path_factory.mktemp("prefect-home"), auth=AUTH) as started:
        for args in (
            [K8S_POOL, "--type", "kubernetes", "--base-job-template", str(TEMPLATE)],
            [PROCESS_POOL, "--type", "process"],
        ):
            created = subprocess.run(
                [str(VENV_BIN / "prefect"), "work-pool", "create", *args],
                env=started.env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert created.returncode == 0, created.stdout + created.stderr
        yield started


def _deployment(server: PrefectServer, name: str) -> dict[str, Any]:
    return server.get(f"/deployments/name/{name}")  # type: ignore[no-any-return]


def _run(server: PrefectServer, *args: str) -> subprocess.CompletedProcess[str]:
    return server.run(*args, cwd=ROOT)


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def register(
    server: PrefectServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Outcome]:
    """The command `python -m MODULE ARGS` run in this process as a client of the server (the
    subprocess tests above show the real commands; these save a Python start-up each)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings
    from typer.testing import CliRunner

    import monitoring.deploy
    import pipelines.deploy

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PREFECT_API_URL", server.api)

    def run(module: str, *args: str) -> Outcome:
        updates = {PREFECT_API_URL: server.api, PREFECT_API_AUTH_STRING: AUTH}
        with temporary_settings(updates=updates):  # type: ignore[arg-type]
            if module == "pipelines.deploy":
                try:
                    code = pipelines.deploy.main(list(args))
                except SystemExit as e:  # argparse's usage errors
                    code = int(e.code or 0)
                out = capsys.readouterr()
                return Outcome(code, out.out, out.err)
            result = CliRunner().invoke(monitoring.deploy.app, list(args))
            return Outcome(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.mark.slow  # the server takes 20-35 s to start
def test_the_server_refuses_an_api_call_without_the_auth_string(server):
    import httpx

    r = httpx.post(f"{server.api}/deployments/filter", json={}, timeout=10)
    assert r.status_code == 401


@pytest.mark.slow  # the server takes 20-35 s to start
def test_pipelines_deploy_registers_training_and_retraining_on_the_pool_with_the_image(server):
    args = ["-m", "pipelines.deploy", "--work-pool", K8S_POOL, "--image", IMAGE]
    args += ["--params", "/app/params.yaml", "--repo", "/var/lib/fraud/shared/repo"]
    proc = _run(server, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = {}
    for name, module, workdir in [
        ("training/production", "pipelines.flows.training", "runs/flow"),
        ("retraining/production", "pipelines.flows.retraining", "runs/retrain"),
    ]:
        d = _deployment(server, name)
        assert d["work_pool_name"] == K8S_POOL
        assert d["job_variables"] == {"image": IMAGE}
        # By module path: the job's image has the project installed, not this checkout's files.
        assert d["entrypoint"] == module
        assert not d["pull_steps"]
        assert d["parameters"] == {
            "params_path": "/app/params.yaml",
            "repo": "/var/lib/fraud/shared/repo",
            "workdir": workdir,
        }
        assert d["schedules"] == []  # on demand, or when monitoring asks
        ids[name] = d["id"]
        assert f"registered {name} ({d['id']}) on work pool {K8S_POOL}, image {IMAGE}" in (
            proc.stdout
        )

    # Idempotent: the registration Job may run again (a new image tag): same deployments, updated.
    again = _run(server, *args[:-4], "--image", "fraud-platform:0.1.1")
    assert again.returncode == 0, again.stdout + again.stderr
    for name, deployment_id in ids.items():
        d = _deployment(server, name)
        assert d["id"] == deployment_id
        assert d["job_variables"] == {"image": "fraud-platform:0.1.1"}


@pytest.mark.slow  # the server takes 20-35 s to start
def test_monitoring_deploy_registers_the_daily_schedule_on_the_pool(server):
    proc = _run(
        server, "-m", "monitoring.deploy", "--work-pool", K8S_POOL, "--image", IMAGE,
        "--params", "/app/params.yaml",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d = _deployment(server, "monitoring/daily")
    assert d["work_pool_name"] == K8S_POOL
    assert d["job_variables"] == {"image": IMAGE}
    assert d["entrypoint"] == "monitoring.flows.monitoring"
    [schedule] = d["schedules"]
    assert schedule["active"] is True
    assert (schedule["schedule"]["cron"], schedule["schedule"]["timezone"]) == ("15 0 * * *", "UTC")
    assert d["parameters"]["end"] == "scheduled"
    assert d["parameters"]["training_deployment"] == "retraining/production"
    # No prediction_log parameter: each job reads FRAUD_PREDICTION_LOG from its Secret.
    assert "prediction_log" not in d["parameters"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "name", "entrypoint"),
    [
        ("pipelines.deploy", "training/production", "pipelines/flows.py:training"),
        ("monitoring.deploy", "monitoring/daily", "monitoring/flows.py:monitoring"),
    ],
)
def test_a_process_pool_runs_the_flows_from_the_checkout_and_moving_to_images_drops_it(
    server, register, module, name, entrypoint
):
    proc = register(module, "--work-pool", PROCESS_POOL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d = _deployment(server, name)
    assert d["work_pool_name"] == PROCESS_POOL
    assert d["entrypoint"] == entrypoint
    assert d["job_variables"] == {}
    # The worker's run changes into the checkout: its code, its relative paths, no copy of it.
    assert d["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
    ]
    assert f"on work pool {PROCESS_POOL}, from the checkout {ROOT}" in proc.stdout

    # Registered again on the image pool, nothing of the checkout stays in the deployment.
    again = register(module, "--work-pool", K8S_POOL, "--image", IMAGE)
    assert again.returncode == 0, again.stdout + again.stderr
    d = _deployment(server, name)
    assert (d["work_pool_name"], d["job_variables"]) == (K8S_POOL, {"image": IMAGE})
    assert d["entrypoint"] == entrypoint.replace("/", ".").replace(".py:", ".")
    assert not d["pull_steps"]


@pytest.mark.slow
@pytest.mark.parametrize("module", ["pipelines.deploy", "monitoring.deploy"])
def test_registering_on_a_pool_the_server_does_not_have_fails_naming_it(server, module):
    proc = _run(server, "-m", module, "--work-pool", "no-such-pool")
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --work-pool no-such-pool: ") and "no work pool" in last


@pytest.mark.slow
@pytest.mark.parametrize("module", ["pipelines.deploy", "monitoring.deploy"])
def test_an_image_pool_without_an_image_and_a_process_pool_with_one_are_refused(
    server, register, module
):
    before = server.post("/deployments/filter", {})
    no_image = register(module, "--work-pool", K8S_POOL)
    assert no_image.returncode == 1
    assert (
        no_image.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"error: --image: work pool {K8S_POOL} is of type kubernetes, whose flow runs are jobs "
            "of an image"
        )
    ), no_image.stderr
    image = register(module, "--work-pool", PROCESS_POOL, "--image", IMAGE)
    assert image.returncode == 1
    assert (
        image.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: --image {IMAGE}: work pool {PROCESS_POOL} is of type process")
    ), image.stderr
    assert server.post("/deployments/filter", {}) == before  # nothing registered or changed


@pytest.mark.parametrize("module", ["pipelines.deploy", "monitoring.deploy"])
def test_an_image_or_a_source_without_a_work_pool_is_a_usage_error(module):
    # One real command line; the shared rule (fraud/work_pools.py) in-process below.
    proc = subprocess.run(
        [sys.executable, "-m", module, "--image", IMAGE, "--source", str(ROOT), "--dry-run"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--image and --source describe a work pool's jobs: they need --work-pool" in (
        proc.stderr
    )


def test_the_pool_options_are_checked_before_any_server_is_asked(tmp_path, monkeypatch):
    from fraud.work_pools import WorkPoolError, WorkPoolTarget

    with pytest.raises(WorkPoolError, match=r"^--source .*only for a process pool"):
        WorkPoolTarget.of(PROCESS_POOL, IMAGE, tmp_path)
    with pytest.raises(WorkPoolError, match=r"^--source .*missing: not a directory"):
        WorkPoolTarget.of(PROCESS_POOL, None, tmp_path / "missing")
    monkeypatch.chdir(tmp_path)  # the default source: where the command runs
    assert WorkPoolTarget.of(PROCESS_POOL, None, None).source == tmp_path.resolve()
    assert WorkPoolTarget.of(K8S_POOL, IMAGE, None).source is None


@pytest.mark.parametrize("module", ["pipelines.deploy", "monitoring.deploy"])
def test_a_source_that_is_not_the_project_checkout_is_refused_naming_the_missing_flows(
    module, tmp_path, capsys
):
    args = ["--work-pool", PROCESS_POOL, "--source", str(tmp_path), "--dry-run"]
    if module == "pipelines.deploy":
        from pipelines.deploy import main

        code, err = main(args), capsys.readouterr().err
    else:
        from typer.testing import CliRunner

        from monitoring.deploy import app

        result = CliRunner().invoke(app, args)
        code, err = result.exit_code, result.stderr
    assert code == 1
    flows = module.split(".")[0] + "/flows.py"
    assert err.startswith(f"error: --source {tmp_path}: it has no {flows}"), err


def test_dry_run_with_a_pool_shows_both_training_deployments_and_registers_nothing(capsys):
    from pipelines.deploy import main

    assert main(["--dry-run", "--work-pool", K8S_POOL, "--image", IMAGE]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["work_pool"], shown["image"]) == (K8S_POOL, IMAGE)
    assert [(d["name"], d["entrypoint"]) for d in shown["deployments"]] == [
        ("training/production", "pipelines.flows.training"),
        ("retraining/production", "pipelines.flows.retraining"),
    ]


def test_dry_run_without_an_image_shows_the_process_pool_registration_from_the_checkout(
    capsys, monkeypatch
):
    from pipelines.deploy import main

    monkeypatch.chdir(ROOT)
    assert main(["--dry-run", "--work-pool", PROCESS_POOL]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["work_pool"], shown["source"]) == (PROCESS_POOL, str(ROOT))
    assert "image" not in shown
    assert [d["entrypoint"] for d in shown["deployments"]] == [
        "pipelines/flows.py:training",
        "pipelines/flows.py:retraining",
    ]
