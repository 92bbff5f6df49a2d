"""The API as it runs: `python -m serving` (uvicorn) on 127.0.0.1, serving the pipeline's
registered champion (fraud-detector v1) from a copy of its MLflow registry."""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from contextlib import closing

import pytest
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from fraud import registry
from fraud.predictions import FEEDBACK_TABLE, PREDICTIONS_TABLE


@pytest.fixture(scope="module")
def http(live_server):
    with live_server.client() as c:
        yield c


@pytest.fixture(scope="module")
def train_info(pipeline_repo) -> dict:
    return json.loads((pipeline_repo.path / "models/train_info.json").read_text())


def log_db(live_server) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{live_server.prediction_log}?mode=ro", uri=True)


def test_health_answers_ok(http):
    r = http.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_ready_reports_champion_v1_loaded_from_the_registry(http):
    r = http.get("/ready")
    assert r.status_code == 200
    assert r.json() == {"ready": True, "model_version": "1", "source": "registry"}


def test_model_is_cached_for_starts_without_registry(live_server):
    names = {p.name for p in live_server.cache_dir.iterdir()}
    assert {"model.ubj", "train_info.json", "history.parquet", "meta.json"} <= names
    meta = json.loads((live_server.cache_dir / "meta.json").read_text())
    assert (meta["name"], meta["version"], meta["alias"]) == ("fraud-detector", "1", "champion")


def test_predict_returns_probability_decision_at_threshold_and_champion_v1(
    http, make_tx, train_info
):
    r = http.post("/predict", json=make_tx())
    assert r.status_code == 200, r.text
    p = r.json()
    assert 0.0 <= p["fraud_probability"] <= 1.0
    assert p["threshold"] == pytest.approx(train_info["threshold"], rel=1e-12)
    assert p["is_fraud"] == (p["fraud_probability"] >= p["threshold"])
    assert (p["model_name"], p["model_version"], p["model_alias"]) == (
        "fraud-detector",
        "1",
        "champion",
    )
    assert "contributions" not in p  # only with ?explain=true


def test_decisions_follow_the_threshold_on_both_sides(http, make_tx):
    """A customer's usual amounts stay under the threshold; a sudden amount many times the
    customer's mean (the large-amount fraud pattern) goes above it."""
    customer, terminal = 17, 99
    usual = [
        http.post(
            "/predict", json=make_tx(CUSTOMER_ID=customer, TERMINAL_ID=terminal, TX_AMOUNT=30.0)
        ).json()
        for _ in range(3)
    ]
    huge = http.post(
        "/predict", json=make_tx(CUSTOMER_ID=customer, TERMINAL_ID=terminal, TX_AMOUNT=9_000.0)
    ).json()
    for p in [*usual, huge]:
        assert p["is_fraud"] == (p["fraud_probability"] >= p["threshold"])
    assert not usual[-1]["is_fraud"]
    assert huge["is_fraud"]
    assert huge["fraud_probability"] > usual[-1]["fraud_probability"]


def test_explain_returns_top_contributions_sorted_by_magnitude_naming_model_features(
    http, make_tx, train_info
):
    r = http.post("/predict", params={"explain": "true"}, json=make_tx())
    assert r.status_code == 200, r.text
    contributions = r.json()["contributions"]
    assert len(contributions) == 5  # FRAUD_TOP_CONTRIBUTIONS default
    names = [c["feature"] for c in contributions]
    assert set(names) <= set(train_info["features"])
    assert len(set(names)) == len(names)
    magnitudes = [abs(c["contribution"]) for c in contributions]
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert all(math.isfinite(c["contribution"]) for c in contributions)
    assert all(c["value"] is None or math.isfinite(c["value"]) for c in contributions)


def test_batch_preserves_request_order(http, make_tx):
    txs = [make_tx() for _ in range(12)]
    shuffled = [txs[i] for i in (5, 0, 11, 3, 7, 1, 9, 2, 10, 4, 8, 6)]
    r = http.post("/predict/batch", json={"transactions": shuffled})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["TRANSACTION_ID"] for p in preds] == [t["TRANSACTION_ID"] for t in shuffled]
    assert all(0.0 <= p["fraud_probability"] <= 1.0 for p in preds)


def test_batch_with_explain_returns_contributions_for_each_transaction(http, make_tx):
    r = http.post(
        "/predict/batch",
        params={"explain": "true"},
        json={"transactions": [make_tx(), make_tx()]},
    )
    assert r.status_code == 200, r.text
    assert [len(p["contributions"]) for p in r.json()["predictions"]] == [5, 5]


def test_feedback_is_recorded_in_the_feedback_table(live_server, http, make_tx):
    tx = make_tx()
    assert http.post("/predict", json=tx).status_code == 200
    r = http.post(
        "/feedback",
        json={
            "TRANSACTION_ID": tx["TRANSACTION_ID"],
            "is_fraud": True,
            "known_at": "2018-06-20T12:00:00+02:00",
        },
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "TRANSACTION_ID": tx["TRANSACTION_ID"],
        "recorded": True,
        "seen_by_this_service": True,
    }
    with closing(log_db(live_server)) as db:
        rows = db.execute(
            f"SELECT is_fraud, known_at FROM {FEEDBACK_TABLE} WHERE transaction_id = ?",
            (tx["TRANSACTION_ID"],),
        ).fetchall()
    assert rows == [(1, "2018-06-20T10:00:00")]  # UTC


def test_feedback_for_an_unseen_transaction_is_recorded_and_says_so(live_server, http):
    r = http.post("/feedback", json={"TRANSACTION_ID": 123, "is_fraud": False})
    assert r.status_code == 200, r.text
    assert r.json()["seen_by_this_service"] is False
    with closing(log_db(live_server)) as db:
        rows = db.execute(
            f"SELECT is_fraud FROM {FEEDBACK_TABLE} WHERE transaction_id = 123"
        ).fetchall()
    assert rows == [(0,)]


def test_every_acknowledged_prediction_has_exactly_one_log_row(live_server, http, make_tx):
    single = [make_tx() for _ in range(15)]
    batch = [make_tx() for _ in range(25)]
    acknowledged = {}
    for tx in single:
        r = http.post("/predict", json=tx)
        assert r.status_code == 200
        acknowledged[tx["TRANSACTION_ID"]] = r.json()
    r = http.post("/predict/batch", json={"transactions": batch})
    assert r.status_code == 200
    acknowledged.update({p["TRANSACTION_ID"]: p for p in r.json()["predictions"]})
    # A refused duplicate must not add a row.
    assert http.post("/predict", json=single[0]).status_code == 409

    ids = sorted(acknowledged)
    with closing(log_db(live_server)) as db:
        rows = db.execute(
            f"SELECT transaction_id, score, is_alert, threshold, model_name, model_version, "
            f"features FROM {PREDICTIONS_TABLE} WHERE transaction_id BETWEEN ? AND ?",
            (ids[0], ids[-1]),
        ).fetchall()
    assert sorted(r[0] for r in rows) == ids
    for tid, score, is_alert, threshold, name, version, features in rows:
        p = acknowledged[tid]
        assert score == pytest.approx(p["fraud_probability"], abs=1e-12)
        assert bool(is_alert) == p["is_fraud"]
        assert threshold == pytest.approx(p["threshold"])
        assert (name, version) == ("fraud-detector", "1")
        assert len(json.loads(features)) == 23


def test_model_shows_lineage_of_the_registered_version(http, pipeline_repo, live_server):
    r = http.get("/model")
    assert r.status_code == 200, r.text
    m = r.json()
    registration = json.loads((pipeline_repo.path / "reports/registration.json").read_text())
    metrics = json.loads((pipeline_repo.path / "reports/metrics.json").read_text())
    raw_md5 = hashlib.md5(
        (pipeline_repo.path / "data/raw/transactions.parquet").read_bytes()
    ).hexdigest()
    assert (m["name"], m["version"], m["alias"], m["source"]) == (
        "fraud-detector",
        "1",
        "champion",
        "registry",
    )
    assert m["run_id"] == registration["run_id"]
    assert m["git_commit"] == registration["lineage"]["git_commit"]
    assert len(m["git_commit"]) == 40
    assert m["data_md5"] == raw_md5
    assert m["params_sha256"] == registration["lineage"]["params_sha256"]
    assert m["decision"] == "champion"
    assert m["promotion_reason"]
    assert m["metrics"]["average_precision"] == pytest.approx(metrics["average_precision"])
    assert m["metrics"]["roc_auc"] == pytest.approx(metrics["roc_auc"])
    assert m["threshold"] == pytest.approx(metrics["threshold"])
    assert m["train_window"] and m["test_window"]
    # ... and these are the tags the registry holds for the version.
    client = MlflowClient(
        tracking_uri=live_server.tracking_uri, registry_uri=live_server.tracking_uri
    )
    mv = client.get_model_version("fraud-detector", "1")
    assert m["git_commit"] == mv.tags[registry.TAG_GIT_COMMIT]
    assert m["data_md5"] == mv.tags[registry.TAG_DATA_HASH]


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def test_metrics_expose_request_counters_latency_scores_and_model_version(http, make_tx):
    def predict_count(samples) -> float:
        return sum(
            v
            for n, labels, v in samples
            if n == "fraud_api_requests_total"
            and labels == {"endpoint": "/predict", "method": "POST", "status": "200"}
        )

    before = predict_count(_samples(http.get("/metrics").text))
    for _ in range(3):
        assert http.post("/predict", json=make_tx()).status_code == 200
    assert http.post("/predict", json=make_tx(TX_AMOUNT=-1)).status_code == 422
    r = http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples = _samples(r.text)
    assert predict_count(samples) == before + 3
    assert any(
        n == "fraud_api_requests_total"
        and labels == {"endpoint": "/predict", "method": "POST", "status": "422"}
        and v >= 1
        for n, labels, v in samples
    )
    assert (
        "fraud_api_model_version",
        {"name": "fraud-detector", "version": "1", "source": "registry"},
        1.0,
    ) in samples
    assert any(n == "fraud_api_request_seconds_count" and v >= 3 for n, _, v in samples)
    assert any(n == "fraud_api_score_count" and v >= 3 for n, _, v in samples)


def test_metrics_count_each_versions_predictions_and_the_alerts_at_its_threshold(http, make_tx):
    def counts(samples) -> tuple[float, float]:
        got = {n: v for n, labels, v in samples if labels == {"model_version": "1"}}
        return got.get("fraud_api_predictions_total", 0.0), got.get("fraud_api_alerts_total", 0.0)

    predictions, alerts = counts(_samples(http.get("/metrics").text))
    raised = 0
    for _ in range(4):
        body = http.post("/predict", json=make_tx()).json()
        raised += int(body["is_fraud"])
    batch = http.post("/predict/batch", json={"transactions": [make_tx() for _ in range(5)]})
    raised += sum(int(p["is_fraud"]) for p in batch.json()["predictions"])
    assert counts(_samples(http.get("/metrics").text)) == (predictions + 9, alerts + raised)


def test_metrics_count_unknown_http_methods_under_one_label_value(http):
    """Uncommon methods (WebDAV's, here; any token with other HTTP parsers) must not grow the
    label set."""
    for method in ("PROPFIND", "PURGE", "PROPFIND"):
        assert http.request(method, "/health").status_code == 405
    samples = _samples(http.get("/metrics").text)
    methods = {labels.get("method") for n, labels, _ in samples if n == "fraud_api_requests_total"}
    assert "PROPFIND" not in methods and "PURGE" not in methods
    assert any(
        n == "fraud_api_requests_total"
        and labels == {"endpoint": "/health", "method": "OTHER", "status": "405"}
        and v >= 3
        for n, labels, v in samples
    )
