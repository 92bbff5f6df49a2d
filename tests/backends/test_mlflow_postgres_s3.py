"""The pipeline, the gate and the API on MLflow's production setup, with real servers: `mlflow
server` on PostgreSQL with its artifacts in an S3-compatible store (moto), chosen by settings
only (MLFLOW_TRACKING_URI; the S3 endpoint and keys for clients that write artifacts directly).

In order: `dvc repro` on a fresh tiny pipeline registers @champion (run, version and alias in
PostgreSQL, every artifact an object in the bucket, nothing in a local store); a weaker variant
is judged by the gate against that champion, read back from S3, and stays @challenger; the API
loads the champion from the server (the prediction log on PostgreSQL too) and, with the server
stopped, from its cache; with the server's PostgreSQL stopped under load, it keeps serving and
a reload fails cleanly, then is retried; last, the direct-to-S3 deployment (the clients hold the S3 keys, the
server never sees an artifact) registers and serves the same way.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import psycopg
import pytest
import yaml
from mlflow import MlflowClient

from fraud import registry
from fraud.predictions import PREDICTIONS_TABLE
from tests.backends.conftest import BUCKET
from tests.backends.servers import (
    FOREIGN_ENV_PREFIXES,
    MlflowServer,
    S3Server,
    mlflow_database_uri,
    mlflow_server,
)
from tests.conftest import PipelineRepo, make_pipeline_repo
from tests.pg_server import PostgresServer
from tests.reliability.test_faults import FAULT_AFTER, logged_ids_sqlite
from tests.serving.conftest import ADMIN_TOKEN, LiveServer, ServerPool, TransactionFactory
from tests.serving.test_log_durability import Drive, drive

pytestmark = [pytest.mark.backends, pytest.mark.e2e, pytest.mark.slow]

MODEL = registry.DEFAULT_MODEL_NAME
#: Files of a local MLflow store: none may appear where the pipeline or the server run.
LOCAL_STORES = ("mlruns", "mlartifacts", "mlflow.db")
#: A much weaker model than the tiny params' (60 trees of depth 3): the gate must keep it out.
WEAKER_TRAIN = {"n_estimators": 3, "max_depth": 1}


def client_env(base: dict[str, str], server: MlflowServer, s3: S3Server) -> dict[str, str]:
    """`base` without any S3 or MLflow setting of this machine, plus what `server` needs."""
    env = {k: v for k, v in base.items() if not k.startswith(FOREIGN_ENV_PREFIXES)}
    return {**env, **server.client_env(s3)}


def sql_rows(backend_store_uri: str, query: str) -> list[tuple[Any, ...]]:
    """Rows of `query` straight from MLflow's PostgreSQL database."""
    url = backend_store_uri.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url) as conn:
        return list(conn.execute(query).fetchall())


def local_stores(*dirs: Path) -> list[Path]:
    return [d / name for d in dirs for name in LOCAL_STORES if (d / name).exists()]


def registration(repo: PipelineRepo) -> dict[str, Any]:
    return dict(json.loads((repo.path / "reports/registration.json").read_text()))


def model_keys(s3: S3Server, prefix: str, mv: Any, run_id: str) -> list[str]:
    """The bucket's objects that hold a version: its logged model's and its run's artifacts."""
    model_id = str(mv.source).removeprefix("models:/")
    return [k for k in s3.keys(BUCKET, prefix) if model_id in k or run_id in k]


@pytest.fixture(scope="module")
def repo(
    tmp_path_factory: pytest.TempPathFactory, mlflow_backend: MlflowServer, s3_server: S3Server
) -> PipelineRepo:
    """A fresh tiny pipeline whose only MLflow setting is the tracking server's URL (no S3 key:
    the server proxies every artifact)."""
    made = make_pipeline_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    env = client_env(made.env, mlflow_backend, s3_server)
    assert not any(k.startswith("AWS_") for k in env)
    return PipelineRepo(made.path, env, mlflow_backend.url)


@pytest.fixture(scope="module")
def champion_run(repo: PipelineRepo) -> dict[str, Any]:
    """`dvc repro` end to end into the tracking server; the registration it reports."""
    repo.run("dvc", "repro", timeout=900)
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "first dvc repro on the tracking server")
    return registration(repo)


@pytest.fixture(scope="module")
def challenger_run(repo: PipelineRepo, champion_run: dict[str, Any]) -> dict[str, Any]:
    """A weaker train params variant, `dvc repro` again: the gate compares it with @champion."""
    params_file = repo.path / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["train"].update(WEAKER_TRAIN)
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    repo.run("dvc", "repro", timeout=900)
    return registration(repo)


@pytest.fixture(scope="module")
def make_tx(repo: PipelineRepo, champion_run: dict[str, Any]) -> TransactionFactory:
    return TransactionFactory(pd.read_parquet(repo.path / "data/raw/transactions.parquet"))


@pytest.fixture
def api_servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerPool]:
    """`python -m serving` processes without any S3 or MLflow setting of this machine."""
    for key in list(os.environ):
        if key.startswith(FOREIGN_ENV_PREFIXES):
            monkeypatch.delenv(key)
    pool = ServerPool(tmp_path)
    yield pool
    pool.stop_all()


def test_dvc_repro_registers_the_champion_in_postgresql_with_every_artifact_in_s3(
    repo: PipelineRepo,
    champion_run: dict[str, Any],
    mlflow_backend: MlflowServer,
    s3_server: S3Server,
) -> None:
    assert champion_run["tracking_uri"] == mlflow_backend.url
    assert champion_run["decision"] == registry.ALIAS_CHAMPION, champion_run["reason"]
    client = MlflowClient(tracking_uri=mlflow_backend.url)
    mv = client.get_model_version_by_alias(MODEL, registry.ALIAS_CHAMPION)
    assert str(mv.version) == champion_run["version"] == "1"
    run = client.get_run(champion_run["run_id"])
    assert run.info.status == "FINISHED"
    assert "average_precision" in run.data.metrics
    # The same facts in PostgreSQL's own tables: the tracking store is the database.
    store = mlflow_backend.backend_store_uri
    assert sql_rows(store, "SELECT name, alias, version FROM registered_model_aliases") == [
        (MODEL, registry.ALIAS_CHAMPION, 1)
    ]
    assert sql_rows(
        store, f"SELECT status FROM runs WHERE run_uuid = '{champion_run['run_id']}'"
    ) == [("FINISHED",)]
    # Every artifact of the registry contract is an object in the bucket, under the server's
    # destination; the experiment's artifact location is the server's proxy, not a local path.
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.artifact_location.startswith("mlflow-artifacts:"), experiment
    keys = model_keys(s3_server, "test_mlflow_postgres_s3/mlflow/", mv, run.info.run_id)
    expected = [
        f"{registry.ARTIFACT_MODEL}.{registry.NATIVE_MODEL_FORMAT}",
        f"{registry.MODEL_INFO_DIR}/{registry.TRAIN_INFO_FILE}",
        f"{registry.FEATURE_STATE_DIR}/{registry.FEATURE_HISTORY_FILE}",
        f"{registry.MONITORING_DIR}/{registry.REFERENCE_FILE}",
        registry.ARTIFACT_MODEL_CARD,
    ]
    missing = [e for e in expected if not any(k.endswith(e) for k in keys)]
    assert not missing, f"not in s3://{BUCKET}: {missing}; the version's objects: {keys}"
    # No local store anywhere: not in the pipeline's repository, not beside the server.
    assert local_stores(repo.path, mlflow_backend.workdir) == []
    assert sorted(p.name for p in mlflow_backend.workdir.iterdir()) == ["server.log"]


def test_the_gate_judges_a_weaker_challenger_against_the_champion_read_from_s3(
    champion_run: dict[str, Any], challenger_run: dict[str, Any], mlflow_backend: MlflowServer
) -> None:
    assert challenger_run["version"] == "2"
    assert challenger_run["decision"] == registry.ALIAS_CHALLENGER, challenger_run["reason"]
    # The gate compared the two on the same rows: it downloaded the champion from the bucket.
    assert challenger_run["comparison"] is not None, challenger_run["reason"]
    assert challenger_run["comparison"]["ci_low"] <= 0.0, challenger_run["comparison"]
    client = MlflowClient(tracking_uri=mlflow_backend.url)
    assert client.get_model_version_by_alias(MODEL, registry.ALIAS_CHAMPION).version == "1"
    v2 = client.get_model_version_by_alias(MODEL, registry.ALIAS_CHALLENGER)
    assert v2.version == "2"
    assert v2.tags[registry.TAG_DECISION] == registry.ALIAS_CHALLENGER
    assert v2.tags[registry.TAG_REASON] == challenger_run["reason"]


def predict(server: LiveServer, make_tx: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    with server.client() as c:
        r = c.post("/predict", json=make_tx())
    assert r.status_code == 200, r.text
    body = dict(r.json())
    assert 0.0 <= body["fraud_probability"] <= 1.0, body
    return body


def test_the_api_serves_the_champion_from_the_tracking_server_and_then_from_its_cache(
    challenger_run: dict[str, Any],
    mlflow_backend: MlflowServer,
    pg_server: PostgresServer,
    api_servers: ServerPool,
    make_tx: TransactionFactory,
    tmp_path: Path,
) -> None:
    cache = tmp_path / "model-cache"
    prediction_log = pg_server.create_database("predictions_mlflow_backend")
    api = api_servers.start(
        mlflow_backend.url, cache_dir=cache, env={"FRAUD_PREDICTION_LOG": prediction_log}
    )
    ready = api.wait_ready()
    assert ready["source"] == "registry"
    assert ready["model_version"] == "1"  # @champion, not the newer @challenger
    with api.client() as c:
        model = c.get("/model").json()
    assert model["version"] == "1", model
    before = predict(api, make_tx)
    with psycopg.connect(prediction_log) as conn:
        logged = conn.execute(f"SELECT count(*) FROM {PREDICTIONS_TABLE}").fetchone()
    assert logged == (1,)
    api.stop()

    mlflow_backend.stop()
    try:
        with pytest.raises(httpx.TransportError):
            httpx.get(mlflow_backend.url + "/health", timeout=5)
        again = api_servers.start(
            mlflow_backend.url, cache_dir=cache, env={"FRAUD_PREDICTION_LOG": prediction_log}
        )
        ready = again.wait_ready()
        assert ready["source"] == "cache"
        assert ready["model_version"] == "1"
        after = predict(again, make_tx)
        assert after["model_version"] == before["model_version"]
    finally:
        mlflow_backend.start()


def test_the_registry_database_stopped_under_load_keeps_serving_and_a_reload_is_retried(
    challenger_run: dict[str, Any],
    mlflow_backend: MlflowServer,
    pg_server: PostgresServer,
    api_servers: ServerPool,
    make_tx: TransactionFactory,
) -> None:
    """PostgreSQL under `mlflow server` stops while the API is under load (the server itself
    stays up and answers errors): /predict keeps answering 200 with the loaded version and
    /ready stays true; /admin/reload answers 503 naming the registry within the client's
    timeout and keeps the model; with the database back (the alias moved meanwhile), a retried
    reload loads the new champion. Every acknowledged prediction is logged once."""
    api = api_servers.start(mlflow_backend.url)
    assert api.wait_ready()["model_version"] == "1"
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    seen: dict[str, Any] = {}
    failure: list[BaseException] = []

    def outage(progress: Drive) -> None:
        if seen or failure or len(progress.acknowledged) < FAULT_AFTER:
            return
        try:
            pg_server.stop()
            try:
                with api.client(timeout=60) as c:
                    started = time.monotonic()
                    seen["reload_down"] = c.post("/admin/reload", headers=headers)
                    seen["reload_down_s"] = time.monotonic() - started
                    seen["ready_down"] = c.get("/ready")
                    seen["predict_down"] = c.post("/predict", json=make_tx())
                # The server is up all along: it answers, with errors.
                seen["server_health"] = httpx.get(mlflow_backend.url + "/health", timeout=10)
            finally:
                pg_server.start()
            client = MlflowClient(tracking_uri=mlflow_backend.url)
            v1 = client.get_model_version(MODEL, "1")
            # Over REST, a `models:/m-...` source needs the logged model's id beside it.
            moved = client.create_model_version(
                MODEL,
                source=str(v1.source),
                run_id=v1.run_id,
                tags=dict(v1.tags or {}),
                model_id=str(v1.source).removeprefix("models:/"),
            )
            client.set_registered_model_alias(MODEL, registry.ALIAS_CHAMPION, moved.version)
            seen["new_version"] = str(moved.version)
            # What an operator (or the alias poll) does: retry until the registry answers.
            with api.client(timeout=60) as c:
                deadline = time.monotonic() + 120
                while (r := c.post("/admin/reload", headers=headers)).status_code != 200:
                    assert r.status_code == 503 and time.monotonic() < deadline, r.text
                    time.sleep(1)
                seen["reload_back"] = r
        except BaseException as e:  # reported below, not lost in the drive
            failure.append(e)

    transactions = [make_tx() for _ in range(1500)]
    out = drive(api.url, transactions, progress=outage)
    if failure:
        raise failure[0]
    assert "reload_back" in seen, f"the outage never happened: {out.statuses}"
    assert out.transport_errors == [] and out.client_errors == [], out
    assert set(out.statuses) == {200}, out.statuses  # a registry down fails no prediction
    assert "Traceback" not in api.output(), api.output()[-3000:]

    down = seen["reload_down"]
    assert down.status_code == 503, down.text
    detail = down.json()["detail"]
    assert "registry" in detail and mlflow_backend.url in detail, detail
    assert "still serving" in detail, detail
    assert seen["reload_down_s"] < 30, seen["reload_down_s"]
    assert seen["server_health"].status_code == 200
    assert seen["ready_down"].status_code == 200, seen["ready_down"].text
    assert seen["predict_down"].status_code == 200, seen["predict_down"].text
    assert seen["predict_down"].json()["model_version"] == "1"
    assert seen["reload_back"].json() == {
        "previous_version": "1",
        "version": seen["new_version"],
        "source": "registry",
    }
    logged = logged_ids_sqlite(api.prediction_log)
    logged.remove(seen["predict_down"].json()["TRANSACTION_ID"])  # sent beside the load
    assert len(logged) == len(set(logged)), "a prediction logged twice"
    assert set(logged) == set(out.acknowledged)


def test_direct_s3_artifacts_register_and_serve_with_the_keys_on_the_clients_only(
    repo: PipelineRepo,
    champion_run: dict[str, Any],
    pg_server: PostgresServer,
    s3_server: S3Server,
    api_servers: ServerPool,
    tmp_path: Path,
) -> None:
    prefix = "test_mlflow_postgres_s3_direct/mlflow"
    with mlflow_server(
        tmp_path / "mlflow-direct",
        mlflow_database_uri(pg_server, "mlflow_direct"),
        s3_server,
        BUCKET,
        prefix=prefix,
        proxied=False,
    ) as direct:
        env = client_env(repo.env, direct, s3_server)
        assert env["MLFLOW_S3_ENDPOINT_URL"] == s3_server.url
        # The register stage as dvc.yaml runs it, on the pipeline's outputs, into this server.
        PipelineRepo(repo.path, env, direct.url).run("python", "-m", "pipelines.cli", "register")
        result = registration(repo)
        assert result["tracking_uri"] == direct.url
        # The first version of this registry: the floors alone decide its alias (the outputs
        # are the last repro's, the weaker variant's when the whole module runs).
        assert result["version"] == "1"
        client = MlflowClient(tracking_uri=direct.url)
        mv = client.get_model_version_by_alias(MODEL, result["alias"])
        assert mv.version == "1"
        run = client.get_run(result["run_id"])
        assert run.info.artifact_uri.startswith(f"s3://{BUCKET}/{prefix}/"), run.info
        keys = model_keys(s3_server, prefix + "/", mv, run.info.run_id)
        assert any(k.endswith(f"{registry.FEATURE_STATE_DIR}/history.parquet") for k in keys)
        assert any(k.endswith(f".{registry.NATIVE_MODEL_FORMAT}") for k in keys), keys
        # The server never carried an artifact: no proxy request in its log.
        assert "mlflow-artifacts" not in direct.output()

        api = api_servers.start(
            direct.url, env={**s3_server.mlflow_env(), "FRAUD_MODEL_ALIAS": result["alias"]}
        )
        ready = api.wait_ready()
        assert ready == {"ready": True, "model_version": mv.version, "source": "registry"}
        assert local_stores(repo.path, direct.workdir) == []
