"""`python -m monitoring.demo run` for real, small: the tiny population, a new terminal
population from the second day of production, ten days. A real Prefect server, the training
flow, the served retraining deployment, the API (uvicorn) and the monitoring flow each day; the
retraining is triggered, runs as a flow run of `retraining/production`, and its gate decision is
recorded in the timeline and in the demo's own registry."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from fraud.registry import contract
from tests.conftest import OFFLINE_ENV, tiny_params_dict

DAYS = 10
ONSET = 1


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("drift-demo")
    params = tiny_params_dict()
    # The tiny population has ~10 frauds a day: a retraining may start on fewer labelled ones.
    params["monitor"] = {"retrain": {"min_labelled_frauds": 5}}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    workdir = tmp / "sandbox"
    env = {**OFFLINE_ENV, **os.environ}
    env.pop("PREFECT_API_URL", None)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    argv = [
        sys.executable,
        "-m",
        "monitoring.demo",
        "run",
        "--params",
        str(tmp / "params.yaml"),
        "--workdir",
        str(workdir),
        "--regime",
        "new_terminals",
        "--onset-day",
        str(ONSET),
        "--days",
        str(DAYS),
    ]
    proc = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    return {
        "out": out,
        "tmp": tmp,
        "workdir": workdir,
        "timeline": json.loads((workdir / "timeline.json").read_text()),
    }


def test_the_demo_triggers_a_retraining_and_records_the_gate_decision(demo):
    days = demo["timeline"]["days"]
    assert len(days) == DAYS
    retrained = [d for d in days if d["retraining"]]
    assert retrained, demo["out"]
    first = retrained[0]
    # Triggered by the policy's signals (here the data checks of the new terminals' counts).
    assert first["retrain_triggered"] and first["signals"]
    assert first["retraining"].startswith(("v2 champion", "v2 challenger")), first["retraining"]
    # The gate's reason, as the register step wrote it, is in the timeline and the printout.
    assert "retraining on " + first["day"] in demo["out"]


def test_the_retrained_version_is_in_the_demos_own_registry_with_its_production_lineage(demo):
    client = MlflowClient(tracking_uri=f"sqlite:///{demo['workdir'] / 'mlflow.db'}")
    v2 = client.get_model_version(contract.DEFAULT_MODEL_NAME, "2")
    assert v2.tags[contract.TAG_DECISION] in {"champion", "challenger"}
    assert v2.tags[contract.TAG_REASON]
    assert v2.tags[contract.TAG_PRODUCTION_WINDOW].startswith("2018-06-10..")
    # The production file the retraining added is versioned by DVC in the sandbox's repository.
    dvc_files = list((demo["workdir"] / "data" / "production").glob("*.dvc"))
    assert len(dvc_files) == 1
    assert v2.tags[contract.TAG_PRODUCTION_MD5] in dvc_files[0].read_text()


def test_every_transaction_sent_was_logged_once_by_the_api(demo):
    days = demo["timeline"]["days"]
    with sqlite3.connect(demo["workdir"] / "predictions.sqlite") as db:
        logged = db.execute(
            "select count(*), count(distinct transaction_id) from predictions"
        ).fetchone()
    sent = sum(d["transactions"] for d in days)
    assert logged == (sent, sent)
    assert sum(sum(d["served_by"].values()) for d in days) == sent


def test_the_demo_leaves_its_picture_reports_and_nothing_outside_its_sandbox(demo):
    workdir = demo["workdir"]
    png = workdir / "timeline.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert (workdir / "timeline.md").read_text().count("\n| 2018-") == DAYS
    verdicts = sorted((workdir / "monitoring").glob("2018-*/verdict.json"))
    assert len(verdicts) == DAYS
    assert list((workdir / "monitoring" / "workspace").iterdir())
    # The working directory got only the params file the test wrote and the sandbox.
    assert sorted(p.name for p in demo["tmp"].iterdir()) == ["params.yaml", "sandbox"]


def test_the_demo_refuses_to_replace_a_directory_that_is_not_a_demos(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    proc = subprocess.run(
        [sys.executable, "-m", "monitoring.demo", "run", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "is not a drift demo's directory" in proc.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"
