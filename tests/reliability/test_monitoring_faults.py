"""A monitoring run that dies half-way, then runs again: no double retraining, no lost one.

The monitoring flow runs as users and the daily deployment run it (`python -m monitoring.flows
run`, in a subprocess, against a real Prefect server on which a `retraining` deployment is
registered, as `pipelines.deploy` registers it; no worker, so a requested retraining stays a
scheduled flow run that the test counts). It is SIGKILLed at four points, by a `sitecustomize`
module on PYTHONPATH (the faults never live in the project's code):

- before its verdict is written (the verdict, the state and the request: none done);
- after the verdict, before the policy state is written;
- after the state (the trigger recorded), before the retraining is requested;
- right after the retraining is requested, before the flow ends.

Then the same window runs again, cleanly. Each time: exactly one retraining flow run for the
window, a verdict that is complete and says retraining was triggered, no temporary file, and
(once) the next day in the cooldown requests nothing. Each case has its own deployment, reports
folder and `as_of` (a second after the window's end, plus the case's index): Prefect's
idempotency keys are per flow, and the cases must not answer each other.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from fraud import registry, schema
from monitoring.policy import Decision, PolicyState
from monitoring.verdict import Verdict
from tests.conftest import PipelineRepo
from tests.monitoring.prediction_logs import log_scored_frame
from tests.prefect_server import PrefectServer
from tests.prefect_server import prefect_server as start_prefect_server

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.slow]

DRIFT_FROM = pd.Timestamp("2018-06-01")  # the tiny data ends on 2018-06-09
WINDOW_END = dt.datetime(2018, 6, 9)  # the window of 2018-06-08: it triggers retraining
NEXT_END = WINDOW_END + dt.timedelta(days=1)  # the next day: in the cooldown
FLOW = "retraining"

SITECUSTOMIZE = '''
"""Fault injection for tests/reliability/test_monitoring_faults.py (never in the project)."""
import os
import signal
import sys

_SPEC = os.environ.get("FRAUD_TEST_KILL_AT", "")
if _SPEC and "monitoring.flows" in sys.orig_argv:
    def _die():
        sys.stderr.write(f"fault injected: SIGKILL at {_SPEC}\\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    if _SPEC == "verdict":
        from monitoring.verdict import Verdict

        Verdict.write = lambda self, *a, **k: _die()
    elif _SPEC == "state":
        from monitoring.policy import PolicyState

        PolicyState.write = lambda self, *a, **k: _die()
    elif _SPEC in ("request", "after-request"):
        import prefect.deployments as deployments

        _run = deployments.run_deployment

        def _run_or_die(*a, **k):
            if _SPEC == "request":
                _die()
            run = _run(*a, **k)
            _die()
            return run

        deployments.run_deployment = _run_or_die
'''


def flow_runs(server: PrefectServer, deployment: str) -> list[dict[str, Any]]:
    """The flow runs of the deployment named `deployment` (of any flow) on `server`."""
    body = {"deployments": {"name": {"any_": [deployment]}}}
    return [run for run in server.post("/flow_runs/filter", body) if run["deployment_id"]]


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    # Minutes when other suites load both cores (20-35 s on an idle machine).
    with start_prefect_server(tmp_path_factory.mktemp("prefect-home"), timeout=400) as server:
        yield server


CASES = ["verdict", "state", "request", "after-request"]
REGISTER = """
import sys
from prefect.flows import EntrypointType
from pipelines.flows import retraining

for name in sys.argv[1:]:
    retraining.to_deployment(name=name, entrypoint_type=EntrypointType.MODULE_PATH).apply()
"""


@pytest.fixture(scope="module")
def deployments(prefect_server: PrefectServer, pipeline_repo: PipelineRepo) -> list[str]:
    """One `retraining` deployment per case (and one for the clean run), on the server."""
    names = [f"case-{c}" for c in ["clean", *CASES]]
    env = {**pipeline_repo.env, "PREFECT_API_URL": prefect_server.api}
    proc = subprocess.run(
        [sys.executable, "-c", REGISTER, *names],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return names


@pytest.fixture(scope="module")
def prediction_log(pipeline_repo: PipelineRepo, tmp_path_factory) -> Path:
    """The tiny data, amounts x1.5 from DRIFT_FROM, scored by the champion into a real
    prediction log, every fraud's label sent two days later (as test_monitoring_flow.py)."""
    from monitoring.sources import file_window
    from tests.fraud.conftest import tracking_uri

    path = tmp_path_factory.mktemp("monitoring-log") / "predictions.sqlite"
    rows = pd.read_parquet(pipeline_repo.path / "data/raw/transactions.parquet")
    rows.loc[rows[schema.TX_DATETIME] >= DRIFT_FROM, schema.TX_AMOUNT] *= 1.5
    source = path.with_suffix(".parquet")
    rows.to_parquet(source, index=False)
    with tracking_uri(pipeline_repo.tracking_uri):
        version, booster = registry.load_version(registry.DEFAULT_MODEL_NAME)
        scored = file_window(source, version, booster).frame
    log_scored_frame(path, scored, version)
    return path


@pytest.fixture(scope="module")
def fault_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("monitoring-fault-hook")
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder


@dataclass
class Monitoring:
    """Runs `python -m monitoring.flows run` for one case: its reports, deployment, as_of."""

    repo: PipelineRepo
    server: PrefectServer
    log: Path
    folder: Path
    deployment: str
    offset: int  # seconds after the window's end: the case's own as_of
    fault_dir: Path

    @property
    def reports(self) -> Path:
        return self.folder / "reports"

    def run(self, end: dt.datetime, kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
        params = self.folder / "params.yaml"
        if not params.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            monitor = {
                "reports_dir": str(self.reports),
                "workspace": str(self.folder / "workspace"),
                "retrain": {"min_labelled_frauds": 1},
            }
            params.write_text(yaml.safe_dump({"monitor": monitor}))
        env = {**self.repo.env, "PREFECT_API_URL": self.server.api}
        if kill_at:
            env |= {"PYTHONPATH": str(self.fault_dir), "FRAUD_TEST_KILL_AT": kill_at}
        as_of = end + dt.timedelta(seconds=self.offset)
        args = ["--end", end.isoformat(), "--as-of", as_of.isoformat()]
        args += ["--prediction-log", str(self.log), "--params", str(params), "--no-report"]
        args += ["--training-deployment", f"{FLOW}/{self.deployment}", "--json"]
        return subprocess.run(
            [sys.executable, "-m", "monitoring.flows", "run", *args],
            cwd=self.folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    def summary(self, proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        [line] = [x for x in proc.stdout.splitlines() if x.startswith("{")]
        return json.loads(line)  # type: ignore[no-any-return]

    def retrainings(self) -> list[dict[str, Any]]:
        return flow_runs(self.server, self.deployment)

    def strays(self) -> list[str]:
        return [str(p) for p in self.reports.rglob("*.tmp")] if self.reports.exists() else []


@pytest.fixture
def monitoring(pipeline_repo, prefect_server, prediction_log, deployments, fault_dir, tmp_path):
    def make(case: str) -> Monitoring:
        offset = 1 + ([None, *CASES].index(None if case == "clean" else case))
        return Monitoring(
            pipeline_repo,
            prefect_server,
            prediction_log,
            tmp_path / case,
            f"case-{case}",
            offset,
            fault_dir,
        )

    return make


def test_a_clean_run_requests_one_retraining_and_a_rerun_of_its_window_no_second(monitoring):
    m = monitoring("clean")

    first = m.summary(m.run(WINDOW_END))
    again = m.summary(m.run(WINDOW_END))

    assert first["retrain_triggered"] and first["retraining"].startswith("retraining started")
    # The rerun decides as the run did (its own trigger is no cooldown for it) and asks again
    # with the same idempotency key: Prefect answers with the same flow run.
    assert again["retrain_triggered"], again["retrain_reasons"]
    assert again["retraining_run_id"] == first["retraining_run_id"]
    assert [r["id"] for r in m.retrainings()] == [first["retraining_run_id"]]


@pytest.mark.parametrize("kill_at", CASES)
def test_a_monitoring_run_killed_half_way_then_rerun_retrains_exactly_once(kill_at, monitoring):
    m = monitoring(kill_at)
    verdict_path = m.reports / "2018-06-08" / "verdict.json"

    killed = m.run(WINDOW_END, kill_at=kill_at)

    assert killed.returncode == -9, killed.stderr[-3000:]
    assert f"fault injected: SIGKILL at {kill_at}" in killed.stderr
    # The verdict is absent (killed before it was written) or complete, never a part.
    if kill_at == "verdict":
        assert not verdict_path.exists()
    else:
        assert Verdict.read(verdict_path).retrain_triggered
    assert m.strays() == []
    expected_before = 1 if kill_at == "after-request" else 0
    assert len(m.retrainings()) == expected_before

    rerun = m.summary(m.run(WINDOW_END))

    assert rerun["retrain_triggered"], rerun["retrain_reasons"]
    assert rerun["retraining"].startswith("retraining started"), rerun["retraining"]
    runs = m.retrainings()
    assert [r["id"] for r in runs] == [rerun["retraining_run_id"]]  # exactly one
    assert Verdict.read(verdict_path).retrain_triggered
    assert m.strays() == []
    RESULTS[kill_at] = f"1 retraining flow run after the kill and the rerun ({runs[0]['name']})"

    if kill_at == "after-request":  # the next day is in the cooldown: nothing more
        nxt = m.summary(m.run(NEXT_END))
        assert not nxt["retrain_triggered"]
        assert any("cooldown" in r for r in nxt["retrain_reasons"]), nxt["retrain_reasons"]
        assert len(m.retrainings()) == 1


RESULTS: dict[str, str] = {}


def test_a_rerun_of_the_same_as_of_decides_from_the_state_before_that_run():
    """The policy state's part of the fix, without servers: a triggered run's own trigger is
    no cooldown for its rerun, while the next day's run is in the cooldown."""
    t = dt.datetime(2018, 6, 9)
    earlier = t - dt.timedelta(days=30)
    state = PolicyState(last_trigger_at=earlier, last_as_of=t - dt.timedelta(days=1))
    after = state.after(Decision(True, ["x"], ["drift"], 1), t)

    assert after.last_trigger_at == t
    assert after.trigger_before(t) == earlier  # the rerun of t
    assert after.trigger_before(t + dt.timedelta(days=1)) == t  # the next day: cooldown
    # A rerun that triggers again keeps the state as the first run left it.
    assert after.after(Decision(True, ["x"], ["drift"], 1), t) == after


def test_zz_print_the_monitoring_fault_results(capsys: pytest.CaptureFixture[str]):
    with capsys.disabled():
        print(f"\nmonitoring killed half-way: {len(RESULTS)} kill points")
        for key, value in RESULTS.items():
            print(f"  killed at {key}: {value}")
