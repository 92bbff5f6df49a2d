"""Hostile input against a real uvicorn server (`python -m serving`, default limits: 1,000
transactions per batch, 1 MB bodies): a hand-written corpus of requests that try to break the
API, each of which must get a 4xx (never a 5xx) whose body names what was wrong, leave the
server serving, and leave the prediction log holding exactly the accepted predictions.

The corpus: huge integers (beyond 2**63 and 2**64, 10**100, a 100,000-digit literal), `1e400`,
NaN and Infinity, 100,000 levels of nested JSON, 10 MB bodies (declared and chunked), wrong
content types (text/plain, form, multipart, msgpack, none), unicode, emoji, right-to-left marks
and NUL in ids, invalid UTF-8, epoch 0 and year-9999 timestamps (as text and as numbers),
duplicate transaction ids within a batch, across requests and across two worker processes, and
a 1,000-transaction batch with one bad row. Cases already covered in-process by
tests/serving/test_api_validation.py are not repeated here.

A ledger keeps every TRANSACTION_ID the server answered 200 for; after every case the log must
hold exactly those, once each.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pandas as pd
import pytest

from fraud.predictions import FEEDBACK_TABLE, PREDICTIONS_TABLE
from tests.reliability.conftest import start_server
from tests.serving.conftest import LiveServer, ServerPool, TransactionFactory, copy_registry

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow]


MAX_BODY = 1_000_000  # ServingSettings.max_body_bytes' default
MAX_BATCH = 1000  # ServingSettings.max_batch's default
TEN_MB = 10 * 1024 * 1024
DEPTH = 100_000

Tx = dict[str, Any]


# ------------------------------------------------------------------------------------------
# The server and what it logged


@dataclass
class Ledger:
    """What the server acknowledged: every TRANSACTION_ID answered 200, and the outcome of
    every case of the corpus."""

    accepted: list[int] = field(default_factory=list)
    feedback: int = 0
    cases: dict[str, int] = field(default_factory=dict)  # case -> status


@dataclass
class Hostile:
    server: LiveServer
    client: httpx.Client
    ledger: Ledger

    def logged_ids(self) -> list[int]:
        with closing(sqlite3.connect(self.server.prediction_log)) as db:
            rows = db.execute(f"SELECT transaction_id FROM {PREDICTIONS_TABLE}").fetchall()
        return sorted(int(r[0]) for r in rows)

    def feedback_rows(self) -> int:
        with closing(sqlite3.connect(self.server.prediction_log)) as db:
            return int(db.execute(f"SELECT COUNT(*) FROM {FEEDBACK_TABLE}").fetchone()[0])

    def accept(self, r: httpx.Response) -> None:
        """Record the predictions of a 200 answer in the ledger."""
        assert r.status_code == 200, r.text
        body = r.json()
        for p in body.get("predictions", [body]):
            self.ledger.accepted.append(int(p["TRANSACTION_ID"]))

    def assert_log_is_the_ledger(self) -> None:
        assert self.logged_ids() == sorted(self.ledger.accepted)
        assert self.feedback_rows() == self.ledger.feedback

    def assert_still_serving(self, new_tx: Callable[..., Tx]) -> None:
        """A valid transaction is scored and logged; the process is alive; no traceback."""
        assert self.server.proc.poll() is None, self.server.output()
        r = self.client.post("/predict", json=new_tx())
        self.accept(r)
        self.assert_log_is_the_ledger()
        assert "Traceback" not in self.server.output(), self.server.output()[-5000:]


@pytest.fixture(scope="module")
def new_tx(pipeline_repo) -> TransactionFactory:
    """`new_tx(**overrides)`: a valid transaction with a fresh TRANSACTION_ID, after the
    pipeline's data, on known customers and terminals (the serving tests' factory)."""
    return TransactionFactory(pd.read_parquet(pipeline_repo.path / "data/raw/transactions.parquet"))


@pytest.fixture(scope="module")
def hostile(pipeline_repo, tmp_path_factory) -> Iterator[Hostile]:
    """One server with default limits on a copy of the pipeline's registry (champion v1)."""
    base = tmp_path_factory.mktemp("hostile-input")
    pool = ServerPool(base)
    try:  # stopped also when it never got ready
        server = start_server(pool, copy_registry(pipeline_repo.tracking_uri, base / "registry"))
        with server.client(timeout=120) as client:
            yield Hostile(server, client, Ledger())
    finally:
        pool.stop_all()


# ------------------------------------------------------------------------------------------
# The corpus


def with_literal(tx: Tx, name: str, literal: str) -> bytes:
    """`tx` as JSON with field `name` set to the raw JSON text `literal` (NaN, 1e400, ...)."""
    marker = "__HOSTILE__"
    return json.dumps({**tx, name: marker}).replace(f'"{marker}"', literal).encode()


def with_value(tx: Tx, name: str, value: Any) -> bytes:
    return json.dumps({**tx, name: value}).encode()


def nested_list(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class Case:
    """One hostile request: its body built from a fresh valid transaction, and what the answer
    must be: `status`, and for a 422 the error location (`loc`) or type (`error_type`)."""

    name: str
    body: Callable[[Tx], bytes | Iterator[bytes]]
    status: int
    path: str = "/predict"
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    loc: tuple[Any, ...] | None = None
    error_type: str | None = None
    query: str = ""


def field_case(name: str, fld: str, literal: str, json_error: bool = False) -> Case:
    """`fld` set to the raw JSON text `literal`: a 422 naming the field, or with `json_error`
    a 422 json_invalid saying where in the body."""
    return Case(
        name,
        lambda tx: with_literal(tx, fld, literal),
        422,
        loc=None if json_error else ("body", fld),
        error_type="json_invalid" if json_error else None,
    )


def value_case(name: str, fld: str, value: Any, status: int = 422) -> Case:
    return Case(
        name,
        lambda tx: with_value(tx, fld, value),
        status,
        loc=("body", fld) if status == 422 else None,
    )


def ten_mb_chunks(tx: Tx) -> Iterator[bytes]:
    """A valid transaction padded to 10 MB, sent chunked (no Content-Length)."""
    head = json.dumps(tx).encode()[:-1]
    yield head
    for _ in range(TEN_MB // 65536):
        yield b" " * 65536
    yield b"}"


FEEDBACK_OK = {"TRANSACTION_ID": 1, "is_fraud": True}

CORPUS: list[Case] = [
    # Huge numbers
    field_case("id 2**63 (one over the contract)", "TRANSACTION_ID", str(2**63)),
    field_case("id 2**64", "TRANSACTION_ID", str(2**64)),
    field_case("id 2**64 + 1", "TRANSACTION_ID", str(2**64 + 1)),
    field_case("id -2**64", "TRANSACTION_ID", str(-(2**64))),
    field_case("id 10**100", "TRANSACTION_ID", str(10**100)),
    # Beyond 4,300 digits the JSON parser itself refuses the number, saying where it is.
    field_case("id of 100,000 digits", "TRANSACTION_ID", "9" * 100_000, json_error=True),
    field_case("customer 2**64", "CUSTOMER_ID", str(2**64)),
    field_case("terminal 10**30", "TERMINAL_ID", str(10**30)),
    field_case("id 1e400", "TRANSACTION_ID", "1e400"),
    field_case("id 1.5", "TRANSACTION_ID", "1.5"),
    field_case("amount 1e400", "TX_AMOUNT", "1e400"),
    field_case("amount -1e400", "TX_AMOUNT", "-1e400"),
    field_case("amount 1e99999999", "TX_AMOUNT", "1e99999999"),
    field_case("amount 10**30 + 0.5", "TX_AMOUNT", str(10**30) + ".5"),
    field_case("amount of 100,000 digits", "TX_AMOUNT", "9" * 100_000, json_error=True),
    # NaN and Infinity (literals JSON does not have) in the fields test_api_validation leaves
    field_case("id NaN", "TRANSACTION_ID", "NaN"),
    field_case("id Infinity", "TRANSACTION_ID", "Infinity"),
    field_case("customer -Infinity", "CUSTOMER_ID", "-Infinity"),
    field_case("datetime NaN", "TX_DATETIME", "NaN"),
    field_case("datetime 1e400", "TX_DATETIME", "1e400"),
    # Timestamps far in the past and the future, as text and as numbers
    value_case("datetime epoch 0 (text)", "TX_DATETIME", "1970-01-01T00:00:00"),
    value_case("datetime epoch 0 UTC (text)", "TX_DATETIME", "1970-01-01T00:00:00Z"),
    value_case("datetime epoch 0 (number)", "TX_DATETIME", 0),
    value_case("datetime year 1 (text)", "TX_DATETIME", "0001-01-01T00:00:00"),
    value_case("datetime year 9999 (text)", "TX_DATETIME", "9999-12-31T23:59:59.999999"),
    value_case("datetime year 9999 UTC (text)", "TX_DATETIME", "9999-12-31T23:59:59Z"),
    value_case("datetime year 9999 (number)", "TX_DATETIME", 253402300799),
    value_case("datetime past year 9999 (number)", "TX_DATETIME", 10**15),
    value_case("datetime negative number", "TX_DATETIME", -(10**12)),
    value_case("datetime year 10000", "TX_DATETIME", "10000-01-01T00:00:00"),
    value_case("datetime hour 25", "TX_DATETIME", "2018-10-01T25:00:00"),
    value_case("datetime offset +25:00", "TX_DATETIME", "2018-10-01T08:15:00+25:00"),
    # Unicode, emoji, right-to-left and NUL in ids
    value_case("id emoji", "TRANSACTION_ID", "💳"),
    value_case("id Arabic-Indic digits", "TRANSACTION_ID", "١٢٣"),
    value_case("id full-width digits", "TRANSACTION_ID", "１２３"),
    value_case("id mathematical digits", "TRANSACTION_ID", "𝟙𝟚𝟛"),
    value_case("id right-to-left override", "TRANSACTION_ID", "\u202e321"),
    value_case("id right-to-left mark", "TRANSACTION_ID", "\u200f123"),
    value_case("id with NUL", "TRANSACTION_ID", "12\u0000"),
    value_case("id only NUL", "TRANSACTION_ID", "\u0000"),
    value_case("customer zero-width space", "CUSTOMER_ID", "1\u200b2"),
    value_case("terminal Hebrew", "TERMINAL_ID", "מסוף"),
    field_case("id lone surrogate", "TRANSACTION_ID", '"123\\ud800"', json_error=True),
    # 100,000 Arabic-Indic digits: 600 KB escaped (\\u0663 each), under the body limit.
    value_case("id of 100,000 Arabic-Indic digits", "TRANSACTION_ID", "٣" * 100_000),
    Case(
        "unknown field named by an emoji",
        lambda tx: json.dumps({**tx, "💳\u202e": 1}).encode(),
        422,
        loc=("body", "💳\u202e"),
    ),
    Case(
        "invalid UTF-8 in a string",
        lambda tx: with_literal(tx, "TX_DATETIME", "MARK").replace(b"MARK", b'"2018\xff\xfe"'),
        422,
        error_type="json_invalid",
    ),
    Case(
        "UTF-16 body",
        lambda tx: json.dumps(tx).encode("utf-16"),
        422,
        error_type="json_invalid",
    ),
    # Deeply nested JSON: no RecursionError, no 500
    Case(
        f"{DEPTH:,} nested lists in a field",
        lambda tx: with_literal(tx, "TRANSACTION_ID", nested_list(DEPTH)),
        422,
        error_type="json_invalid",
    ),
    Case(
        f"{DEPTH:,} nested objects",
        lambda tx: nested_object(DEPTH).encode(),
        422,
        error_type="json_invalid",
    ),
    Case(
        f"{DEPTH:,} nested lists as the body",
        lambda tx: nested_list(DEPTH).encode(),
        422,
        error_type="json_invalid",
    ),
    Case(
        f"batch of {DEPTH:,} nested lists",
        lambda tx: f'{{"transactions": {nested_list(DEPTH)}}}'.encode(),
        422,
        path="/predict/batch",
        error_type="json_invalid",
    ),
    Case(
        f"feedback with {DEPTH:,} nested objects",
        lambda tx: (
            json.dumps({**FEEDBACK_OK, "known_at": "X"})
            .replace('"X"', nested_object(DEPTH))
            .encode()
        ),
        # Parsed by serving.json_io like the scoring bodies: pydantic-core's depth limit, a
        # 422 json_invalid (FastAPI's own parsing answered a vague 400 here).
        422,
        path="/feedback",
        error_type="json_invalid",
    ),
    Case(
        "explain given 100 levels deep",
        lambda tx: json.dumps(tx).encode(),
        422,
        query="explain=" + "[" * 100,
        loc=("query", "explain"),
    ),
    # 10 MB bodies (the limit is 1 MB)
    Case("10 MB /predict", lambda tx: json.dumps(tx).encode() + b" " * TEN_MB, 413),
    Case("10 MB /predict, chunked", ten_mb_chunks, 413),
    Case(
        "10 MB batch",
        lambda tx: json.dumps({"transactions": [tx] * (TEN_MB // len(json.dumps(tx)))}).encode(),
        413,
        path="/predict/batch",
    ),
    Case("10 MB /feedback", lambda tx: b"[" + b"1," * (TEN_MB // 2) + b"1]", 413, path="/feedback"),
    Case("10 MB of NUL bytes", lambda tx: b"\x00" * TEN_MB, 413),
    # Wrong content types: refused before the body is read, whatever it holds (a browser
    # sends these cross-site without a preflight, so reading them as JSON would let any page
    # post transactions)
    Case(
        "text/plain that is not JSON",
        lambda tx: b"TRANSACTION_ID is 1",
        415,
        headers={"content-type": "text/plain"},
    ),
    Case(
        "form-encoded",
        lambda tx: str(httpx.QueryParams({k: str(v) for k, v in tx.items()})).encode(),
        415,
        headers={"content-type": "application/x-www-form-urlencoded"},
    ),
    Case(
        "multipart form",
        lambda tx: (
            b'--x\r\nContent-Disposition: form-data; name="TRANSACTION_ID"\r\n\r\n1\r\n--x--\r\n'
        ),
        415,
        headers={"content-type": "multipart/form-data; boundary=x"},
    ),
    Case(
        "msgpack",
        lambda tx: msgpack.packb(tx),
        415,
        headers={"content-type": "application/msgpack"},
    ),
    Case("no content type, not JSON", lambda tx: b"\x80\x04", 415, headers={}),
    Case("no content type, JSON", lambda tx: json.dumps(tx).encode(), 415, headers={}),
    Case(
        "text/plain that is JSON",
        lambda tx: json.dumps(tx).encode(),
        415,
        headers={"content-type": "text/plain"},
    ),
    Case(
        "form content type, JSON batch",
        lambda tx: json.dumps({"transactions": [tx]}).encode(),
        415,
        path="/predict/batch",
        headers={"content-type": "application/x-www-form-urlencoded"},
    ),
    Case(
        "text/plain feedback",
        lambda tx: json.dumps(FEEDBACK_OK).encode(),
        415,
        path="/feedback",
        headers={"content-type": "text/plain"},
    ),
    Case(
        "application/jsonp (not JSON)",
        lambda tx: json.dumps(tx).encode(),
        415,
        headers={"content-type": "application/jsonp"},
    ),
    Case("empty body", lambda tx: b"", 422, error_type="json_invalid"),
    # Feedback
    Case(
        "feedback id 2**64",
        lambda tx: json.dumps({**FEEDBACK_OK, "TRANSACTION_ID": 2**64}).encode(),
        422,
        path="/feedback",
        loc=("body", "TRANSACTION_ID"),
    ),
    Case(
        "feedback id emoji",
        lambda tx: json.dumps({**FEEDBACK_OK, "TRANSACTION_ID": "🙂"}).encode(),
        422,
        path="/feedback",
        loc=("body", "TRANSACTION_ID"),
    ),
    Case(
        "feedback known_at epoch 0",
        lambda tx: json.dumps({**FEEDBACK_OK, "known_at": "1970-01-01T00:00:00"}).encode(),
        422,
        path="/feedback",
        loc=("body", "known_at"),
    ),
    Case(
        "feedback known_at NaN",
        lambda tx: json.dumps({**FEEDBACK_OK, "known_at": "X"}).replace('"X"', "NaN").encode(),
        422,
        path="/feedback",
        loc=("body", "known_at"),
    ),
    Case(
        "feedback is_fraud NUL",
        lambda tx: json.dumps({**FEEDBACK_OK, "is_fraud": "\u0000"}).encode(),
        422,
        path="/feedback",
        loc=("body", "is_fraud"),
    ),
]


def assert_answer(case: Case, r: httpx.Response) -> None:
    """The status the case expects (never a 5xx), with a body that says what was wrong."""
    assert r.status_code < 500, f"{case.name}: {r.status_code} {r.text[:2000]}"
    assert r.status_code == case.status, f"{case.name}: {r.status_code} {r.text[:2000]}"
    detail = r.json()["detail"]
    if case.status == 413:
        assert str(MAX_BODY) in detail, detail
    elif case.status == 415:
        got = case.headers.get("content-type")
        assert "Content-Type: application/json" in detail, detail
        assert (repr(got) if got else "no Content-Type header") in detail, detail
    elif case.status == 422:
        assert isinstance(detail, list) and detail, detail
        assert all({"loc", "msg", "type"} <= set(e) for e in detail), detail
        if case.loc is not None:
            locs = [tuple(e["loc"]) for e in detail]
            assert case.loc in locs, f"{case.name}: {case.loc} not among {locs}"
        if case.error_type is not None:
            assert [e["type"] for e in detail] == [case.error_type], detail
            assert detail[0]["loc"] == ["body"], detail
        if case.error_type == "json_invalid":
            assert detail[0]["msg"].startswith("Invalid JSON: "), detail[0]["msg"]


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_hostile_request_gets_a_4xx_naming_the_problem_and_nothing_is_logged(
    hostile: Hostile, new_tx, case: Case
):
    before = hostile.logged_ids()
    url = case.path + (f"?{case.query}" if case.query else "")
    r = hostile.client.post(url, content=case.body(new_tx()), headers=case.headers)
    hostile.ledger.cases[case.name] = r.status_code
    assert_answer(case, r)
    assert hostile.logged_ids() == before
    hostile.assert_still_serving(new_tx)


# ------------------------------------------------------------------------------------------
# Accepted oddities: what is scored, is logged once


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("application/json; charset=utf-8", "application/json; charset=utf-8"),
        ("APPLICATION/JSON", "APPLICATION/JSON"),
        ("a vendor +json type", "application/vnd.fraud.transaction+json"),
    ],
)
def test_json_under_any_json_media_type_is_scored_and_logged_once(
    hostile: Hostile, new_tx, name, content_type
):
    """Every JSON media type is read as JSON (parameters and case aside, `+json` suffixes too,
    as FastAPI reads them): a valid transaction is scored and logged, once."""
    tx = new_tx()
    headers = {"content-type": content_type}
    r = hostile.client.post("/predict", content=json.dumps(tx).encode(), headers=headers)
    hostile.ledger.cases[f"JSON as {name}"] = r.status_code
    hostile.accept(r)
    assert r.json()["TRANSACTION_ID"] == tx["TRANSACTION_ID"]
    hostile.assert_log_is_the_ledger()


@pytest.mark.parametrize(
    ("name", "field_name", "literal"),
    [
        ("amount 1e-400 (underflows to 0)", "TX_AMOUNT", "1e-400"),
        ("amount -0.0", "TX_AMOUNT", "-0.0"),
        ("id as a numeric string", "TRANSACTION_ID", None),
    ],
)
def test_edge_values_within_the_contract_are_scored_and_logged_once(
    hostile: Hostile, new_tx, name, field_name, literal
):
    tx = new_tx()
    if literal is None:
        body = with_value(tx, field_name, str(tx[field_name]))
    else:
        body = with_literal(tx, field_name, literal)
    r = hostile.client.post("/predict", content=body, headers=JSON)
    hostile.ledger.cases[name] = r.status_code
    hostile.accept(r)
    assert r.json()["TRANSACTION_ID"] == tx["TRANSACTION_ID"]
    hostile.assert_log_is_the_ledger()


# ------------------------------------------------------------------------------------------
# Duplicates


def test_a_transaction_id_sent_twice_is_409_the_second_time_and_logged_once(
    hostile: Hostile, new_tx
):
    tx = new_tx()
    hostile.accept(hostile.client.post("/predict", json=tx))
    for again in (tx, {**tx, "TX_AMOUNT": 1.0}, {**tx, "TX_DATETIME": new_tx()["TX_DATETIME"]}):
        r = hostile.client.post("/predict", json=again)
        assert r.status_code == 409, r.text
        assert r.json()["detail"]["ids"] == [tx["TRANSACTION_ID"]]
    hostile.ledger.cases["duplicate id across requests"] = 409
    assert hostile.logged_ids().count(tx["TRANSACTION_ID"]) == 1
    hostile.assert_still_serving(new_tx)


def test_a_batch_repeating_an_id_is_409_and_logs_none_of_it(hostile: Hostile, new_tx):
    batch = [new_tx() for _ in range(10)]
    batch.append({**batch[3], "TX_AMOUNT": 2.0})
    r = hostile.client.post("/predict/batch", json={"transactions": batch})
    assert r.status_code == 409, r.text
    assert r.json()["detail"]["ids"] == [batch[3]["TRANSACTION_ID"]]
    hostile.ledger.cases["duplicate id within a batch"] = 409
    hostile.assert_log_is_the_ledger()
    # Nothing of the refused batch was recorded: without the repeat, all of it is scored.
    hostile.accept(hostile.client.post("/predict/batch", json={"transactions": batch[:-1]}))
    hostile.assert_log_is_the_ledger()


# ------------------------------------------------------------------------------------------
# A 1,000-transaction batch with one bad row


@pytest.mark.parametrize(
    ("name", "index", "fld", "literal"),
    [
        ("negative amount", 637, "TX_AMOUNT", "-1"),
        ("NaN amount", 0, "TX_AMOUNT", "NaN"),
        ("emoji id", 999, "TRANSACTION_ID", '"💳"'),
        ("year 9999", 500, "TX_DATETIME", '"9999-12-31T23:59:59"'),
        ("id 2**64", 1, "CUSTOMER_ID", str(2**64)),
    ],
)
def test_a_1000_transaction_batch_with_one_bad_row_is_422_naming_the_row_and_logs_nothing(
    hostile: Hostile, new_tx, name, index, fld, literal
):
    batch = [new_tx() for _ in range(MAX_BATCH)]
    marker = "__BAD__"
    bad = [*batch[:index], {**batch[index], fld: marker}, *batch[index + 1 :]]
    body = json.dumps({"transactions": bad}).replace(f'"{marker}"', literal)
    before = hostile.logged_ids()
    r = hostile.client.post("/predict/batch", content=body, headers=JSON)
    hostile.ledger.cases[f"1,000-row batch, {name} at row {index}"] = r.status_code
    assert r.status_code == 422, r.text[:2000]
    locs = [tuple(e["loc"]) for e in r.json()["detail"]]
    assert locs == [("body", "transactions", index, fld)], locs
    assert hostile.logged_ids() == before
    # The same batch with the row mended: every one of the 1,000 is scored and logged once.
    ok = hostile.client.post("/predict/batch", json={"transactions": batch})
    hostile.accept(ok)
    assert len(ok.json()["predictions"]) == MAX_BATCH
    hostile.assert_log_is_the_ledger()


def test_a_1001_transaction_batch_is_413_and_logs_nothing(hostile: Hostile, new_tx):
    batch = [new_tx() for _ in range(MAX_BATCH + 1)]
    r = hostile.client.post("/predict/batch", json={"transactions": batch})
    hostile.ledger.cases["1,001-row batch"] = r.status_code
    assert r.status_code == 413, r.text
    assert f"at most {MAX_BATCH}" in r.json()["detail"]
    hostile.assert_log_is_the_ledger()


# ------------------------------------------------------------------------------------------
# Malformed HTTP below the application


def raw_http(server: LiveServer, request: bytes) -> bytes:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("name", "request_bytes"),
    [
        (
            "Content-Length not a number",
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
        ),
        (
            "negative Content-Length",
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}",
        ),
        (
            "Content-Length longer than the body",
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 5000\r\n\r\n{"TRANSACTION_ID": 1',
        ),
        ("NUL in the request line", b"POST /pre\x00dict HTTP/1.1\r\nHost: x\r\n\r\n"),
    ],
)
def test_malformed_http_is_refused_or_dropped_without_a_5xx(
    hostile: Hostile, new_tx, name, request_bytes
):
    answer = raw_http(hostile.server, request_bytes)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    hostile.ledger.cases[f"HTTP: {name}"] = status
    # 0: the server closed the connection without answering (a truncated body).
    assert status == 0 or 400 <= status < 500, answer[:500]
    hostile.assert_still_serving(new_tx)


# ------------------------------------------------------------------------------------------
# Duplicates across two processes (two uvicorn workers sharing Redis)


def test_one_id_sent_at_once_to_two_worker_processes_is_scored_once(
    pipeline_repo, tmp_path: Path, new_tx
):
    """Two worker processes on one Redis feature state: 40 concurrent requests with the same
    TRANSACTION_ID get exactly one 200 and 409s, and the log holds it once."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.serving.redis_server import redis_server

    with redis_server(tmp_path / "redis") as url:
        pool = ServerPool(tmp_path / "servers")
        try:
            server = start_server(
                pool,
                copy_registry(pipeline_repo.tracking_uri, tmp_path / "registry"),
                env={"FRAUD_FEATURE_STORE": url, "FRAUD_WORKERS": "2"},
            )
            ids = []
            for _ in range(3):
                tx = new_tx()
                ids.append(tx["TRANSACTION_ID"])

                def send(_: int, tx: Tx = tx) -> int:
                    # A new connection each: the kernel spreads them over both workers.
                    with httpx.Client(base_url=server.url, timeout=60) as c:
                        return c.post("/predict", json=tx).status_code

                with ThreadPoolExecutor(8) as ex:
                    statuses = sorted(ex.map(send, range(40)))
                assert statuses == [200] + [409] * 39, statuses
            with closing(sqlite3.connect(server.prediction_log)) as db:
                logged = sorted(
                    int(r[0]) for r in db.execute(f"SELECT transaction_id FROM {PREDICTIONS_TABLE}")
                )
            assert logged == sorted(ids)
        finally:
            pool.stop_all()


# ------------------------------------------------------------------------------------------


def test_the_corpus_ran_every_case_and_the_log_holds_exactly_the_accepted(hostile: Hostile):
    """Last in the module: the count of cases, and the log against the ledger once more."""
    refused = {k: v for k, v in hostile.ledger.cases.items() if v != 200}
    accepted = {k: v for k, v in hostile.ledger.cases.items() if v == 200}
    print(
        f"\nhostile input: {len(hostile.ledger.cases)} cases "
        f"({len(refused)} refused with a 4xx, {len(accepted)} accepted); "
        f"{len(hostile.ledger.accepted)} predictions acknowledged and logged"
    )
    assert all(c.name in hostile.ledger.cases for c in CORPUS)
    assert all(400 <= v < 500 or v in (0, 200) for v in hostile.ledger.cases.values())
    hostile.assert_log_is_the_ledger()


# ------------------------------------------------------------------------------------------
# Schemathesis with thousands of generated cases (the in-process test of tests/serving runs 30
# per operation and mode; this runs EXAMPLES), in-process and over HTTP against uvicorn


#: Generated requests per operation with a body, in each mode (valid, invalid).
EXAMPLES = 400
#: Per operation without inputs (few distinct requests exist; Hypothesis stops when done).
EXAMPLES_WITHOUT_INPUT = 20
#: Over HTTP, per operation with a body and mode (a real connection per case costs more).
EXAMPLES_HTTP = 100


@dataclass
class SchemathesisRun:
    cases: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


def run_schemathesis(
    api_schema: Any, method: str, path: str, mode: Any, examples: int, call: Callable[[Any], Any]
) -> SchemathesisRun:
    """Hypothesis drives schemathesis's strategy for one operation (as test_schemathesis does;
    its pytest plugin does not work on pytest 9.2); `call(case)` sends and validates."""
    from hypothesis import HealthCheck, given, settings

    run = SchemathesisRun()
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        response = call(case)
        run.cases += 1
        run.by_status[response.status_code] = run.by_status.get(response.status_code, 0) + 1

    check()
    return run


@pytest.fixture(scope="module")
def schemathesis_schema(tmp_path_factory) -> Any:
    """The app's own OpenAPI document, built as tests/serving/test_schemathesis.py builds it."""
    import schemathesis

    from serving.app import create_app
    from tests.serving import test_schemathesis

    app = create_app(test_schemathesis.app_settings(tmp_path_factory.mktemp("openapi")))
    return schemathesis.openapi.from_dict(app.openapi())


def operations_and_modes() -> list[tuple[str, str, Any, int]]:
    from schemathesis import GenerationMode

    from tests.serving import test_schemathesis

    with_input = [
        (m, p, mode, EXAMPLES)
        for m, p in test_schemathesis.WITH_INPUT
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]
    without = [
        (m, p, GenerationMode.POSITIVE, EXAMPLES_WITHOUT_INPUT)
        for m, p in test_schemathesis.WITHOUT_INPUT
    ]
    return with_input + without


def test_thousands_of_generated_requests_in_process_never_get_a_server_error(
    schemathesis_schema, pipeline_repo, tmp_path
):
    import time

    from schemathesis.checks import not_a_server_error

    from serving.app import create_app
    from tests.serving import test_schemathesis
    from tests.serving.conftest import mlflow_tracking_uri

    uri = copy_registry(pipeline_repo.tracking_uri, tmp_path / "registry")
    total = SchemathesisRun()
    rows = []
    t0 = time.monotonic()
    with mlflow_tracking_uri(uri):
        app = create_app(test_schemathesis.app_settings(tmp_path))
        for method, path, mode, examples in operations_and_modes():
            run = run_schemathesis(
                schemathesis_schema,
                method,
                path,
                mode,
                examples,
                lambda case: case.call_and_validate(app=app, checks=[not_a_server_error]),
            )
            rows.append(f"  {method} {path} {mode.value}: {run.cases} cases {run.by_status}")
            total.cases += run.cases
    seconds = time.monotonic() - t0
    print(f"\nschemathesis in-process: {total.cases} cases in {seconds:.0f} s", *rows, sep="\n")
    assert total.cases >= 2000


def test_generated_requests_over_http_to_uvicorn_never_get_a_server_error(
    schemathesis_schema, pipeline_repo, tmp_path
):
    """The same generation against a real server (its own: what it scores is not the corpus
    ledger's), through uvicorn's HTTP parsing and the FastPredict middleware."""
    import requests
    from schemathesis.checks import not_a_server_error

    pool = ServerPool(tmp_path / "servers")
    try:
        server = start_server(
            pool, copy_registry(pipeline_repo.tracking_uri, tmp_path / "registry")
        )
        total = 0
        rows = []
        t0 = time.monotonic()
        with requests.Session() as session:
            for method, path, mode, examples in operations_and_modes():
                run = run_schemathesis(
                    schemathesis_schema,
                    method,
                    path,
                    mode,
                    min(examples, EXAMPLES_HTTP),
                    lambda case: case.call_and_validate(
                        base_url=server.url, session=session, checks=[not_a_server_error]
                    ),
                )
                rows.append(f"  {method} {path} {mode.value}: {run.cases} cases {run.by_status}")
                total += run.cases
        seconds = time.monotonic() - t0
        print(f"\nschemathesis over HTTP: {total} cases in {seconds:.0f} s", *rows, sep="\n")
        assert server.proc.poll() is None
        assert "Traceback" not in server.output(), server.output()[-5000:]
        assert total >= 500
    finally:
        pool.stop_all()
