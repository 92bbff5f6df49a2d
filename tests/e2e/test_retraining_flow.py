"""The Prefect `retraining` flow run for real (temporary local server, in a subprocess) on a copy
of the tiny pipeline repo with a registered champion, with four weeks of production traffic that
continue its population under a drift regime, labelled as matured."""

from __future__ import annotations

import datetime as dt
import json
import sys

import pandas as pd
import pytest
from mlflow import MlflowClient

from fraud import registry, schema
from fraud.continuation import simulate_continuation
from fraud.regimes import regime_preset
from fraud.registry import contract
from pipelines.register import file_md5
from tests.conftest import PipelineRepo
from tests.e2e.conftest import copy_pipeline_repo

PRODUCTION_DAYS = 28  # the tiny split's train + delay + test: the split lies in production alone


@pytest.fixture(scope="module")
def repo(pipeline_repo: PipelineRepo, tmp_path_factory) -> PipelineRepo:
    """A copy of the tiny pipeline repo whose `dvc repro` model is registered as champion v1."""
    copy = copy_pipeline_repo(pipeline_repo, tmp_path_factory.mktemp("retrain") / "repo")
    copy.run(sys.executable, "-m", "pipelines.cli", "register")
    return copy


@pytest.fixture(scope="module")
def production(repo: PipelineRepo, tiny_params) -> tuple[str, str, pd.DataFrame]:
    """(path, window, frame): production weeks after the tiny data, amounts drifting from their
    second week, in the export's schema (no fraud scenarios)."""
    sim = tiny_params.simulator
    frame = simulate_continuation(
        sim, sim.n_days, PRODUCTION_DAYS, regime_preset("gradual_amount", sim.n_days + 7)
    ).drop(columns=[schema.TX_FRAUD_SCENARIO])
    path = repo.path.parent / "production.parquet"
    frame.to_parquet(path, index=False)
    start = dt.date.fromisoformat(str(sim.start_date)) + dt.timedelta(days=sim.n_days)
    window = f"{start}..{start + dt.timedelta(days=PRODUCTION_DAYS - 1)}"
    return str(path), window, frame


@pytest.fixture(scope="module")
def retrained(repo: PipelineRepo, production) -> dict:
    path, window, _ = production
    code = (
        "import json; from pipelines.flows import retraining; "
        f"r = retraining(production_path={path!r}, production_window={window!r}); "
        "print('RESULT=' + json.dumps(r, default=str))"
    )
    proc = repo.run(sys.executable, "-c", code, timeout=600)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT="))
    return {"result": json.loads(line.removeprefix("RESULT=")), "log": proc.stdout + proc.stderr}


def test_retraining_registers_a_new_version_naming_the_production_md5_and_window(
    repo, production, retrained
):
    path, window, _ = production
    reg = retrained["result"]["registration"]
    assert reg["version"] == "2"
    mv = MlflowClient(tracking_uri=repo.tracking_uri).get_model_version("fraud-detector", "2")
    assert mv.tags[contract.TAG_PRODUCTION_MD5] == file_md5(path)
    assert mv.tags[contract.TAG_PRODUCTION_WINDOW] == window


def test_retraining_split_ends_its_test_window_on_the_production_data_last_day(
    repo, production, retrained
):
    _, _, frame = production
    last_day = frame[schema.TX_DATETIME].max().date()
    test = retrained["result"]["split"]["test"]
    assert test.endswith(f".. {last_day}")
    mv = MlflowClient(tracking_uri=repo.tracking_uri).get_model_version("fraud-detector", "2")
    assert mv.tags[registry.TAG_TEST_WINDOW] == test


def test_retraining_versions_the_production_file_with_dvc(repo, production, retrained):
    path, _, _ = production
    md5 = file_md5(path)
    dvc_file = repo.path / "data" / "production" / f"{md5}.parquet.dvc"
    assert retrained["result"]["production"]["dvc_file"] == f"data/production/{md5}.parquet.dvc"
    assert f"md5: {md5}" in dvc_file.read_text()
    assert (repo.path / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).exists()


def test_retraining_gate_compares_with_the_champion_and_records_its_decision(repo, retrained):
    client = MlflowClient(tracking_uri=repo.tracking_uri)
    mv = client.get_model_version("fraud-detector", "2")
    reg = retrained["result"]["registration"]
    assert mv.tags[registry.TAG_DECISION] == reg["decision"] in {"champion", "challenger"}
    assert reg["comparison"] is not None  # compared with champion v1 on the new test window
    assert "champion v1" in mv.tags[registry.TAG_REASON]
    alias = client.get_model_version_by_alias("fraud-detector", reg["decision"])
    assert str(alias.version) == "2"
    # A promotion keeps the replaced champion as @previous, where `fraud rollback` goes back to.
    aliases = client.get_registered_model("fraud-detector").aliases
    if reg["decision"] == "champion":
        assert str(aliases[registry.ALIAS_PREVIOUS]) == "1"
        assert mv.tags[registry.TAG_REPLACED] == "1"
    else:
        assert registry.ALIAS_PREVIOUS not in aliases
        assert registry.TAG_REPLACED not in mv.tags


def test_retraining_flow_logs_each_task_and_the_dvc_file_to_commit(retrained):
    log = retrained["log"]
    for name in (
        "read production data",
        "fetch DVC data",
        "add production data",
        "split following the data",
        "train XGBoost",
        "register and gate in MLflow",
    ):
        assert name in log, name
    assert "Completed" in log
    assert "commit it" in log
