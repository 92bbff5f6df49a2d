"""The batch budget's floor app (benchmarks/serving/floor.py): the service's own request path
with the features and the log swapped out. It must keep answering like the service (same
route, same response items, in order) and must record nothing, or the budget it measures is
not the service's minus the features and the log."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

import serving.app as service
from benchmarks.serving.floor import ZeroFeatures, create_floor_app
from fraud.features import FeatureConfig, Transaction


def test_floor_app_answers_a_batch_like_the_service_and_records_nothing(
    tmp_path: Path, copy_pipeline_registry, use_tracking_uri, make_tx, monkeypatch
) -> None:
    # create_floor_app replaces these for good (it runs in its own server process): restore
    # them after this test.
    monkeypatch.setattr(service, "open_feature_store", service.open_feature_store)
    monkeypatch.setattr(service, "open_prediction_log", service.open_prediction_log)
    log_path = tmp_path / "predictions.sqlite"
    monkeypatch.setenv("FRAUD_PREDICTION_LOG", str(log_path))
    monkeypatch.setenv("FRAUD_MODEL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FRAUD_RELOAD_POLL_SECONDS", "0")
    uri = copy_pipeline_registry(tmp_path / "registry")
    txs = [make_tx() for _ in range(20)]
    with use_tracking_uri(uri), TestClient(create_floor_app()) as client:
        assert client.get("/ready").status_code == 200
        r = client.post("/predict/batch", json={"transactions": txs})
        again = client.post("/predict/batch", json={"transactions": txs})  # nothing recorded
        info = client.get("/model").json()
    assert r.status_code == 200, r.text
    predictions: list[dict[str, Any]] = r.json()["predictions"]
    assert [p["TRANSACTION_ID"] for p in predictions] == [t["TRANSACTION_ID"] for t in txs]
    assert set(predictions[0]) >= {
        "fraud_probability",
        "is_fraud",
        "threshold",
        "model_name",
        "model_version",
        "model_alias",
    }
    assert all(0.0 <= p["fraud_probability"] <= 1.0 for p in predictions)
    assert predictions[0]["model_version"] == str(info["version"])
    assert again.status_code == 200  # the same ids again: no state holds them
    assert not log_path.exists()


def test_floor_features_are_zero_but_the_amount() -> None:
    cfg = FeatureConfig()
    txs = [Transaction(i, dt.datetime(2024, 1, 1), 1, 2, 10.0 * i) for i in range(1, 4)]
    batch = ZeroFeatures(cfg).features_many(txs)
    assert batch.names == cfg.feature_names()
    assert batch.columns["TX_AMOUNT"].tolist() == [10.0, 20.0, 30.0]
    others = [n for n in batch.names if n != "TX_AMOUNT"]
    assert others and all(not batch.columns[n].any() for n in others)
