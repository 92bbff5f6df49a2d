"""Bad requests against the app in-process (FastAPI's TestClient, lifespan included): every
malformed request gets a 4xx with details that name the field, never a 500.

The app serves the pipeline's champion from a copy of its registry; a second app has an empty
registry and an empty model cache, and must say so with 503s.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fraud.predictions import PREDICTIONS_TABLE
from fraud.schema import ContractLimits
from serving.app import create_app
from serving.settings import ServingSettings

MAX_BATCH = 5
MAX_BODY = 4096
TOKEN = "validation-tests-token"


@pytest.fixture(scope="module")
def served(
    tmp_path_factory, copy_pipeline_registry, use_tracking_uri
) -> Iterator[tuple[TestClient, ServingSettings]]:
    base = tmp_path_factory.mktemp("api-validation")
    uri = copy_pipeline_registry(base / "registry")
    settings = ServingSettings(
        model_cache_dir=base / "model-cache",
        prediction_log=base / "predictions.sqlite",
        max_batch=MAX_BATCH,
        max_body_bytes=MAX_BODY,
        admin_token=TOKEN,
        reload_poll_seconds=0,
    )
    with (
        use_tracking_uri(uri),
        TestClient(create_app(settings), raise_server_exceptions=False) as c,
    ):
        assert c.get("/ready").status_code == 200, c.get("/ready").text
        yield c, settings


@pytest.fixture(scope="module")
def client(served) -> TestClient:
    return served[0]


@pytest.fixture(scope="module")
def empty_served(
    tmp_path_factory, use_tracking_uri
) -> Iterator[tuple[TestClient, ServingSettings]]:
    """No model anywhere: a fresh, empty registry and an empty cache; no admin token."""
    base = tmp_path_factory.mktemp("api-no-model")
    settings = ServingSettings(
        model_cache_dir=base / "model-cache",
        prediction_log=base / "predictions.sqlite",
        admin_token=None,
        reload_poll_seconds=0,
    )
    with (
        use_tracking_uri(f"sqlite:///{base / 'empty-mlflow.db'}"),
        TestClient(create_app(settings), raise_server_exceptions=False) as c,
    ):
        yield c, settings


@pytest.fixture(scope="module")
def empty_client(empty_served) -> TestClient:
    return empty_served[0]


def logged_rows(settings: ServingSettings) -> int:
    with closing(sqlite3.connect(settings.prediction_log)) as db:
        return int(db.execute(f"SELECT COUNT(*) FROM {PREDICTIONS_TABLE}").fetchone()[0])


def assert_422_naming(r, *loc: Any) -> list[dict[str, Any]]:
    """A 422 whose detail is pydantic's error list with one error at exactly `loc`."""
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail
    assert all({"loc", "msg", "type"} <= set(e) for e in detail), detail
    locs = [tuple(e["loc"]) for e in detail]
    assert tuple(loc) in locs, f"{loc} not among {locs}"
    return detail


def post_raw(client: TestClient, path: str, body: bytes | str) -> Any:
    return client.post(path, content=body, headers={"content-type": "application/json"})


# ------------------------------------------------------------------------------------------
# /predict


def test_valid_transaction_is_scored(client, make_tx):
    r = client.post("/predict", json=make_tx())
    assert r.status_code == 200, r.text
    assert 0.0 <= r.json()["fraud_probability"] <= 1.0


@pytest.mark.parametrize(
    "body",
    ['{"TRANSACTION_ID": 1,', "not json at all", '{"TRANSACTION_ID": 1}}', "{'a': 1}"],
)
def test_invalid_json_is_422_json_invalid(client, body):
    r = post_raw(client, "/predict", body)
    assert r.status_code == 422, r.text
    assert [e["type"] for e in r.json()["detail"]] == ["json_invalid"]


@pytest.mark.parametrize("body", ["[]", '"a string"', "42", "null", "true"])
def test_json_that_is_not_an_object_is_422_on_the_body(client, body):
    r = post_raw(client, "/predict", body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("TRANSACTION_ID", "abc"),
        ("TRANSACTION_ID", 2.5),
        ("CUSTOMER_ID", [1, 2]),
        ("TERMINAL_ID", {"id": 3}),
        ("TX_AMOUNT", "lots"),
        ("TX_AMOUNT", None),
        ("TX_DATETIME", 12.5e30),
        ("TX_DATETIME", "tomorrow at noon"),
        ("TX_DATETIME", "2018-02-30T10:00:00"),
    ],
)
def test_wrong_type_is_422_naming_the_field(client, make_tx, field, value):
    assert_422_naming(client.post("/predict", json=make_tx(**{field: value})), "body", field)


@pytest.mark.parametrize(
    "field", ["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT"]
)
def test_missing_field_is_422_naming_the_field(client, make_tx, field):
    tx = make_tx()
    del tx[field]
    detail = assert_422_naming(client.post("/predict", json=tx), "body", field)
    assert detail[0]["type"] == "missing"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("TX_AMOUNT", -1.0),
        ("TX_AMOUNT", ContractLimits().max_amount * 10),
        ("TX_AMOUNT", 1e308),
        ("TRANSACTION_ID", -7),
        ("CUSTOMER_ID", -1),
        ("TERMINAL_ID", 2**64),
        ("TX_DATETIME", "1999-12-31T23:59:59"),
        ("TX_DATETIME", "2100-01-01T00:00:00"),
    ],
)
def test_out_of_contract_value_is_422_naming_the_field(client, make_tx, field, value):
    assert_422_naming(client.post("/predict", json=make_tx(**{field: value})), "body", field)


def test_unknown_field_is_422_naming_it(client, make_tx):
    detail = assert_422_naming(
        client.post("/predict", json=make_tx(TX_FRAUD=1)), "body", "TX_FRAUD"
    )
    assert detail[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_amount_is_422_not_500(client, make_tx, literal):
    body = json.dumps(make_tx(TX_AMOUNT=0.5)).replace("0.5", literal)
    assert_422_naming(post_raw(client, "/predict", body), "body", "TX_AMOUNT")


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_datetime_overflowing_utc_is_422_not_500(client, make_tx, value):
    assert_422_naming(
        client.post("/predict", json=make_tx(TX_DATETIME=value)), "body", "TX_DATETIME"
    )


def test_explain_that_is_not_a_boolean_is_422_naming_the_query(client, make_tx):
    r = client.post("/predict", params={"explain": "perhaps"}, json=make_tx())
    assert_422_naming(r, "query", "explain")


# ------------------------------------------------------------------------------------------
# /predict/batch


def test_batch_item_with_a_bad_field_is_422_naming_item_and_field(client, make_tx):
    batch = [make_tx(), make_tx(TX_AMOUNT=-3), make_tx()]
    r = client.post("/predict/batch", json={"transactions": batch})
    assert_422_naming(r, "body", "transactions", 1, "TX_AMOUNT")


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"transactions": []}, ("body", "transactions")),
        ({"transactions": {"a": 1}}, ("body", "transactions")),
        ({}, ("body", "transactions")),
        ({"transactions": None}, ("body", "transactions")),
        ({"transactions": [], "priority": "high"}, ("body", "priority")),
    ],
)
def test_malformed_batch_envelope_is_422_naming_the_field(client, body, loc):
    assert_422_naming(client.post("/predict/batch", json=body), *loc)


def test_batch_over_max_batch_is_413_and_nothing_is_logged(served, make_tx):
    client, settings = served
    before = logged_rows(settings)
    batch = [make_tx() for _ in range(MAX_BATCH + 1)]
    r = client.post("/predict/batch", json={"transactions": batch})
    assert r.status_code == 413, r.text
    assert str(MAX_BATCH) in r.json()["detail"]
    assert logged_rows(settings) == before
    # The same transactions, within the limit, are fine: none was recorded by the refusal.
    ok = client.post("/predict/batch", json={"transactions": batch[:MAX_BATCH]})
    assert ok.status_code == 200, ok.text


def test_batch_at_max_batch_is_accepted(client, make_tx):
    r = client.post("/predict/batch", json={"transactions": [make_tx() for _ in range(MAX_BATCH)]})
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == MAX_BATCH


# ------------------------------------------------------------------------------------------
# Body size


def test_body_over_max_body_bytes_is_413_before_parsing(served, make_tx):
    client, settings = served
    body = json.dumps(make_tx()) + " " * settings.max_body_bytes
    r = post_raw(client, "/predict", body)
    assert r.status_code == 413, r.text
    assert str(settings.max_body_bytes) in r.json()["detail"]


def test_body_over_max_body_bytes_is_413_even_if_it_is_not_json(client):
    r = post_raw(client, "/predict/batch", b"x" * (MAX_BODY + 1))
    assert r.status_code == 413, r.text


def test_chunked_body_over_max_body_bytes_is_413(client, make_tx):
    tx = json.dumps(make_tx()).encode()

    def chunks() -> Iterator[bytes]:
        yield tx[:-1]
        for _ in range(4 * MAX_BODY // 1024):
            yield b" " * 1024
        yield b"}"

    r = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text


# ------------------------------------------------------------------------------------------
# Duplicates


def test_same_transaction_id_twice_is_409_and_logged_once(served, make_tx):
    client, settings = served
    tx = make_tx()
    assert client.post("/predict", json=tx).status_code == 200
    before = logged_rows(settings)
    r = client.post("/predict", json=tx)
    assert r.status_code == 409, r.text
    assert r.json()["detail"]["ids"] == [tx["TRANSACTION_ID"]]
    assert logged_rows(settings) == before


def test_batch_repeating_an_id_is_409_and_scores_nothing(served, make_tx):
    client, settings = served
    a, b = make_tx(), make_tx()
    before = logged_rows(settings)
    r = client.post("/predict/batch", json={"transactions": [a, b, {**a, "TX_AMOUNT": 1.0}]})
    assert r.status_code == 409, r.text
    assert "duplicate" in r.json()["detail"]["error"]
    assert logged_rows(settings) == before
    # Neither transaction was recorded by the refused batch: both can still be scored.
    assert client.post("/predict/batch", json={"transactions": [a, b]}).status_code == 200


def test_batch_containing_an_already_scored_id_is_409_naming_it(client, make_tx):
    seen = make_tx()
    assert client.post("/predict", json=seen).status_code == 200
    r = client.post("/predict/batch", json={"transactions": [make_tx(), seen]})
    assert r.status_code == 409
    assert r.json()["detail"]["ids"] == [seen["TRANSACTION_ID"]]


# ------------------------------------------------------------------------------------------
# /feedback


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"TRANSACTION_ID": 1}, ("body", "is_fraud")),
        ({"is_fraud": True}, ("body", "TRANSACTION_ID")),
        ({"TRANSACTION_ID": 1, "is_fraud": "maybe"}, ("body", "is_fraud")),
        ({"TRANSACTION_ID": -1, "is_fraud": True}, ("body", "TRANSACTION_ID")),
        ({"TRANSACTION_ID": 1, "is_fraud": True, "known_at": "soon"}, ("body", "known_at")),
        ({"TRANSACTION_ID": 1, "is_fraud": True, "label": 1}, ("body", "label")),
    ],
)
def test_malformed_feedback_is_422_naming_the_field(client, body, loc):
    assert_422_naming(client.post("/feedback", json=body), *loc)


def test_feedback_known_at_overflowing_utc_is_4xx_not_500(client):
    r = client.post(
        "/feedback",
        json={"TRANSACTION_ID": 1, "is_fraud": True, "known_at": "9999-12-31T23:00:00-05:00"},
    )
    assert 400 <= r.status_code < 500, r.text


# ------------------------------------------------------------------------------------------
# /admin/reload


def test_admin_reload_without_authorization_is_401(client):
    r = client.post("/admin/reload")
    assert r.status_code == 401, r.text


@pytest.mark.parametrize(
    "header", ["Bearer wrong", f"Bearer {TOKEN}x", TOKEN[:-1], "Basic " + TOKEN, "Bearer "]
)
def test_admin_reload_with_wrong_token_is_401(client, header):
    r = client.post("/admin/reload", headers={"Authorization": header})
    assert r.status_code == 401, r.text
    assert "token" in r.json()["detail"]


def test_admin_reload_with_the_token_reloads_the_same_champion(client):
    r = client.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.json() == {"previous_version": "1", "version": "1", "source": "registry"}


def test_admin_reload_without_a_configured_token_is_403_for_any_header(empty_client):
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": f"Bearer {TOKEN}"}):
        r = empty_client.post("/admin/reload", headers=headers)
        assert r.status_code == 403, r.text
        assert "FRAUD_ADMIN_TOKEN" in r.json()["detail"]


# ------------------------------------------------------------------------------------------
# No model at all


def test_without_any_model_the_process_is_live(empty_client):
    assert empty_client.get("/health").json() == {"status": "ok"}


def test_without_any_model_ready_is_503_with_the_reason(empty_client):
    r = empty_client.get("/ready")
    assert r.status_code == 503
    assert r.json() == {"ready": False, "reason": "no model loaded"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/predict", "tx"),
        ("POST", "/predict/batch", "batch"),
        ("POST", "/feedback", {"TRANSACTION_ID": 1, "is_fraud": True}),
        ("GET", "/model", None),
    ],
)
def test_without_any_model_scoring_endpoints_are_503_saying_no_model(
    empty_client, make_tx, method, path, body
):
    if body == "tx":
        body = make_tx()
    elif body == "batch":
        body = {"transactions": [make_tx()]}
    r = empty_client.request(method, path, json=body)
    assert r.status_code == 503, r.text
    assert "no model loaded" in r.json()["detail"]


def test_without_any_model_bad_input_is_still_422(empty_client, make_tx):
    assert_422_naming(
        empty_client.post("/predict", json=make_tx(TX_AMOUNT=-1)), "body", "TX_AMOUNT"
    )


def test_without_any_model_nothing_is_logged(empty_served, make_tx):
    client, settings = empty_served
    assert client.post("/predict", json=make_tx()).status_code == 503
    assert logged_rows(settings) == 0
