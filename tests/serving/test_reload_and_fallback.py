"""Model lifecycle of the running service: a new @champion picked up by /admin/reload under load
without a failed request, and start-up from the local model cache when the registry is down.

Registry changes happen on a private copy of the pipeline's mlflow.db.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from contextlib import closing
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from fraud import registry
from fraud.predictions import PREDICTIONS_TABLE

MODEL = registry.DEFAULT_MODEL_NAME
UNREACHABLE = "http://127.0.0.1:9"  # nothing listens on port 9 (discard)
#: MLflow HTTP settings that make an unreachable registry fail within a second (its defaults
#: retry for minutes: see the last test).
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}

LOAD_THREADS = 4
LOAD_PER_THREAD = 75  # ~300 requests in all ...
LOAD_AFTER_RELOAD = 10  # ... and at least this many per thread once the reload has answered
LOAD_MAX_PER_THREAD = 150
LOAD_RELOAD_AFTER = 100  # requests answered before the reload is called
LOAD_SECONDS = 40.0
#: Seconds within which a service whose registry is down should serve its cached model.
#: A normal start takes ~5 s here; a Kubernetes liveness probe would not wait minutes.
CACHE_START_BUDGET = 20.0


@pytest.fixture(scope="module", autouse=True)
def server_with_default_mlflow_http(module_servers, live_server, tmp_path_factory):
    """Started first, checked last: registry down, MLflow's default HTTP retries, a good cache.
    (Waiting for it overlaps with the other tests of this module.)"""
    cache = tmp_path_factory.mktemp("default-mlflow-http") / "model-cache"
    shutil.copytree(live_server.cache_dir, cache)
    return module_servers.start(UNREACHABLE, cache_dir=cache, wait=False)


def register_new_champion(tracking_uri: str, use_tracking_uri) -> str:
    """A new version of the same model artifact, made @champion; returns its version.

    The global URI is set too: MLflow's SQL registry resolves a `models:/m-...` source with a
    default `MlflowClient()`, not the client's own URI.
    """
    with use_tracking_uri(tracking_uri):
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        v1 = client.get_model_version(MODEL, "1")
        assert v1.source is not None
        mv = client.create_model_version(
            MODEL, source=v1.source, run_id=v1.run_id, tags=dict(v1.tags or {})
        )
        client.set_registered_model_alias(MODEL, registry.ALIAS_CHAMPION, mv.version)
    return str(mv.version)


def test_reload_under_load_fails_no_request_and_then_serves_the_new_champion(
    servers, registry_copy, make_tx, use_tracking_uri, admin_headers
):
    server = servers.start(registry_copy)
    # The service does not poll the alias (FRAUD_RELOAD_POLL_SECONDS=0): it changes model only
    # on the reload below.
    new_version = register_new_champion(registry_copy, use_tracking_uri)
    results: list[list[tuple[Any, Any, list[int]]]] = [[] for _ in range(LOAD_THREADS)]
    reloaded = threading.Event()
    deadline = time.monotonic() + LOAD_SECONDS

    def load(k: int) -> None:
        after = 0
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for i in range(LOAD_MAX_PER_THREAD):
                if time.monotonic() > deadline:
                    break
                if reloaded.is_set():
                    after += 1
                    if after > LOAD_AFTER_RELOAD and i >= LOAD_PER_THREAD:
                        break
                try:
                    if k == 0:  # one client sends small batches
                        txs = [make_tx(), make_tx(), make_tx()]
                        r = c.post("/predict/batch", json={"transactions": txs})
                        body = r.json()
                        versions = {p["model_version"] for p in body.get("predictions", [])}
                    else:
                        txs = [make_tx()]
                        r = c.post("/predict", json=txs[0])
                        versions = {r.json().get("model_version")}
                    results[k].append((r.status_code, versions, [t["TRANSACTION_ID"] for t in txs]))
                except Exception as e:
                    results[k].append((repr(e), set(), []))

    threads = [threading.Thread(target=load, args=(k,), daemon=True) for k in range(LOAD_THREADS)]
    for t in threads:
        t.start()
    while sum(map(len, results)) < LOAD_RELOAD_AFTER and time.monotonic() < deadline:
        time.sleep(0.005)
    with server.client() as c:
        r = c.post("/admin/reload", headers=admin_headers)
    reloaded.set()
    for t in threads:
        t.join(timeout=LOAD_SECONDS + 10)
    assert not any(t.is_alive() for t in threads)

    assert r.status_code == 200, r.text
    assert r.json() == {"previous_version": "1", "version": new_version, "source": "registry"}
    flat = [x for per_thread in results for x in per_thread]
    failed = [x for x in flat if x[0] != 200]
    assert not failed, f"{len(failed)} of {len(flat)} requests failed: {failed[:5]}"
    assert len(flat) >= LOAD_THREADS * LOAD_PER_THREAD
    # The reload happened during the load, and no client saw the old model after the new one.
    assert set().union(*(v for _, v, _ in flat)) == {"1", new_version}
    for per_thread in results:
        versions = [v for _, vs, _ in per_thread for v in sorted(vs, key=int)]
        assert versions == sorted(versions, key=int)

    with server.client() as c:
        assert c.get("/ready").json() == {
            "ready": True,
            "model_version": new_version,
            "source": "registry",
        }
        model = c.get("/model").json()
        metrics = c.get("/metrics").text
    assert (model["version"], model["alias"]) == (new_version, "champion")
    gauges = {
        s.labels["version"]: s.value
        for f in text_string_to_metric_families(metrics)
        for s in f.samples
        if s.name == "fraud_api_model_version"
    }
    assert gauges == {new_version: 1.0}  # the old version's series is gone

    # Every acknowledged prediction is in the log, with the version that scored it.
    acknowledged = {tid for _, _, ids in flat for tid in ids}
    with closing(sqlite3.connect(f"file:{server.prediction_log}?mode=ro", uri=True)) as db:
        logged = db.execute(f"SELECT transaction_id, model_version FROM {PREDICTIONS_TABLE}")
        rows = logged.fetchall()
    assert len(rows) == len(acknowledged)
    assert {tid for tid, _ in rows} == acknowledged
    assert {v for _, v in rows} == {"1", new_version}


def test_registry_down_at_start_serves_the_model_a_previous_run_cached(
    servers, registry_copy, make_tx, admin_headers
):
    first = servers.start(registry_copy)
    assert first.wait_ready()["source"] == "registry"
    first.stop()
    assert (first.cache_dir / "model.ubj").exists()

    second = servers.start(UNREACHABLE, cache_dir=first.cache_dir, env=FAIL_FAST)
    with second.client() as c:
        assert c.get("/ready").json() == {
            "ready": True,
            "model_version": "1",
            "source": "cache",
        }
        r = c.post("/predict", json=make_tx())
        assert r.status_code == 200, r.text
        p = r.json()
        assert 0.0 <= p["fraud_probability"] <= 1.0
        assert (p["model_version"], p["model_alias"]) == ("1", "champion")
        model = c.get("/model").json()
        assert model["source"] == "cache"
        assert model["git_commit"] and model["data_md5"]
        # A reload while the registry is still down keeps serving the cached model.
        reload = c.post("/admin/reload", headers=admin_headers)
        assert reload.status_code == 200, reload.text
        assert reload.json()["source"] == "cache"
        assert c.post("/predict", json=make_tx()).status_code == 200
    assert "registry unavailable" in second.output()


def test_registry_down_and_no_cache_is_not_ready_but_live(servers, tmp_path):
    server = servers.start(UNREACHABLE, cache_dir=tmp_path / "nothing", env=FAIL_FAST, wait=False)
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=server.url, timeout=2) as c:
        while time.monotonic() < deadline:
            try:
                health = c.get("/health")
                break
            except httpx.TransportError:
                assert server.proc.poll() is None, server.output()
                time.sleep(0.1)
        else:
            pytest.fail(f"server never answered /health:\n{server.output()}")
        assert health.status_code == 200
        ready = c.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["ready"] is False
        assert c.get("/model").status_code == 503


def test_registry_down_with_default_mlflow_settings_serves_from_cache_promptly(
    server_with_default_mlflow_http,
):
    server = server_with_default_mlflow_http
    remaining = CACHE_START_BUDGET - (time.monotonic() - server.started_at)
    ready = server.wait_ready(timeout=max(remaining, 1.0))
    assert ready["source"] == "cache"
