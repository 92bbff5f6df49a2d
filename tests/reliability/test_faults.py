"""The API under load while a backend fails, on real servers: the registry (`mlflow server`)
stops, Redis stops, PostgreSQL restarts, the API itself is SIGKILLed, the log's disk fills up.

Each test names the fault and what must hold. In every case: no 500 (a failure is a 503 with
the reason), no 200 for a prediction that is not in the log, every 200 in the log exactly once,
and recovery once the backend is back without restarting the API. The load is
tests/serving/test_log_durability.py's `drive` (8 client threads, ids tracked per response); the
fault is injected from its progress callback while the clients keep sending.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psycopg
import pytest
import redis

from fraud.features import OnlineFeatureState, Transaction
from fraud.predictions import PREDICTIONS_TABLE
from serving.feature_store import RedisFeatureStore
from serving.model_store import load_from_cache
from tests.backends.servers import ServerProcess, clean_env
from tests.pg_server import PostgresServer, free_port
from tests.reliability.conftest import PersistentRedis
from tests.serving.conftest import LiveServer, ServerPool
from tests.serving.test_log_durability import Drive, drive
from tests.serving.test_reload_and_fallback import register_new_champion

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow]

#: Transactions prepared per test: more than the clients send before the fault is over (the
#: drive is bounded in time: tests/serving/test_log_durability.DRIVE_SECONDS).
TRANSACTIONS = 6000
FAULT_AFTER = 300  # acknowledged predictions before the fault
OUTAGE_503S = 20  # requests that must meet the outage before the backend comes back
RECOVERY_TIMEOUT = 60.0  # seconds the API may take to answer /ready 200 again
AFTER_RECOVERY = 100  # acknowledged predictions after the backend is back
API_READY_TIMEOUT = 180.0  # seconds an API may take to load its model on a busy machine


class Stream(list[dict[str, Any]]):
    """Transactions for `drive`, which slices them into one share per client: each share stops
    yielding once `stop()` is called, so a drive ends when the test has seen what it needs
    instead of at its time bound."""

    def __init__(self, transactions: list[dict[str, Any]]) -> None:
        super().__init__(transactions)
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def __getitem__(self, index: Any) -> Any:
        part = super().__getitem__(index)
        if not isinstance(index, slice):
            return part
        stopped = self._stopped

        class Share:
            def __iter__(self) -> Iterator[dict[str, Any]]:
                for tx in part:
                    if stopped.is_set():
                        return
                    yield tx

        return Share()


def start_api(
    servers: ServerPool, tracking_uri: str, *, env: dict[str, str] | None = None
) -> LiveServer:
    """`servers.start`, waiting up to API_READY_TIMEOUT for /ready (other suites load the
    machine: 60 s was not always enough for a model load on 2 busy cores)."""
    server = servers.start(tracking_uri, env=env, wait=False)
    server.wait_ready(timeout=API_READY_TIMEOUT)
    return server


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.1)


def ready(url: str) -> httpx.Response:
    return httpx.get(url + "/ready", timeout=30)


def logged_ids_sqlite(path: Path) -> list[int]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return [r[0] for r in db.execute(f"SELECT transaction_id FROM {PREDICTIONS_TABLE}")]


def logged_ids_postgres(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(f"SELECT transaction_id FROM {PREDICTIONS_TABLE}")]


def assert_every_2xx_logged_once(out: Drive, logged: list[int], in_flight: int = 0) -> None:
    """No acknowledged prediction missing, none logged twice, nothing logged that was not sent;
    logged but unacknowledged: at most `in_flight` (a write whose outcome the API could not
    know, answered 503)."""
    acknowledged = set(out.acknowledged)
    assert len(logged) == len(set(logged)), "a prediction logged twice"
    assert not acknowledged - set(logged), (
        f"{len(acknowledged - set(logged))} acknowledged predictions missing from the log"
    )
    assert set(logged) <= set(out.sent)
    assert len(set(logged) - acknowledged) <= in_flight, set(logged) - acknowledged


def assert_no_500(out: Drive, server_output: str) -> None:
    assert out.transport_errors == [], out.transport_errors[:5]
    assert set(out.statuses) <= {200, 503}, out.statuses
    assert "Traceback" not in server_output, server_output[-3000:]


class Outage:
    """The phases of a fault driven from `drive`'s progress callback: `inject` once
    FAULT_AFTER predictions are acknowledged, `during` once OUTAGE_503S requests met it,
    `recover`, and the count of acknowledgements at each step."""

    def __init__(
        self,
        inject: Callable[[], None],
        during: Callable[[], None],
        recover: Callable[[], None],
    ) -> None:
        self.inject, self.during, self.recover = inject, during, recover
        self.stream: Stream | None = None
        self.injected_at = self.recovered_at = -1
        self.errors_before = 0
        self.error: BaseException | None = None

    def drive(self, url: str, transactions: list[dict[str, Any]]) -> Drive:
        """`drive` the transactions through the outage; the clients stop once AFTER_RECOVERY
        predictions were acknowledged after it."""
        self.stream = Stream(transactions)
        return drive(url, self.stream, pause_after_error=0.05, progress=self)

    def __call__(self, progress: Drive) -> None:
        if self.recovered_at >= 0 and self.stream is not None:
            if len(progress.acknowledged) >= self.recovered_at + AFTER_RECOVERY:
                self.stream.stop()
            return
        if self.error is not None:
            if self.stream is not None:
                self.stream.stop()
            return
        try:
            if self.injected_at < 0 and len(progress.acknowledged) >= FAULT_AFTER:
                self.errors_before = sum(n for s, n in progress.statuses.items() if s != 200)
                self.inject()
                self.injected_at = len(progress.acknowledged)
            elif self.injected_at >= 0:
                met = sum(n for s, n in progress.statuses.items() if s != 200)
                if met - self.errors_before >= OUTAGE_503S:
                    self.during()
                    self.recover()
                    self.recovered_at = len(progress.acknowledged)
        except BaseException as e:  # reported by the test after the drive
            self.error = e

    def check(self, out: Drive) -> None:
        if self.error is not None:
            raise self.error
        assert self.injected_at >= 0, "the fault was never injected"
        assert self.recovered_at >= 0, f"the outage was never met: {out.statuses}"
        assert len(out.acknowledged) >= self.recovered_at + AFTER_RECOVERY, (
            f"only {len(out.acknowledged) - self.recovered_at} predictions after recovery"
        )


# --- the registry ------------------------------------------------------------------------------


@pytest.fixture
def registry_server(registry_copy: str, tmp_path: Path) -> Iterator[tuple[str, ServerProcess]]:
    """`mlflow server --workers 1` on a copy of the pipeline's SQLite registry; its URL."""
    port = free_port()
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        *("--backend-store-uri", registry_copy),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
    ]
    env = clean_env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    process = ServerProcess(cmd, tmp_path / "mlflow", env, tmp_path / "mlflow-server.log")
    url = f"http://127.0.0.1:{port}"
    process.start()
    try:
        process.wait_until(url + "/health", "mlflow server")
        yield url, process
    finally:
        process.stop()


def test_registry_stopped_mid_load_keeps_serving_and_a_reload_fails_cleanly_then_succeeds(
    registry_server: tuple[str, ServerProcess],
    registry_copy: str,
    servers: ServerPool,
    make_tx: Callable[..., dict[str, Any]],
    admin_headers: dict[str, str],
    use_tracking_uri: Any,
) -> None:
    """The MLflow server stops under load: /predict keeps answering 200 with the loaded
    version, /ready stays true, /admin/reload answers 503 naming the registry (no traceback)
    and changes nothing; with the server back (the alias moved meanwhile), a retry loads it."""
    url, mlflow = registry_server
    api = start_api(servers, url)
    assert api.wait_ready()["source"] == "registry"
    transactions = [make_tx() for _ in range(TRANSACTIONS)]
    seen: dict[str, Any] = {}

    phase = {"stopped_at": -1, "back_at": -1}
    failure: list[BaseException] = []

    def outage(progress: Drive) -> None:
        """Stop the server, try a reload, move the alias, restart the server, retry the reload:
        all while the clients keep sending."""
        if phase["stopped_at"] >= 0 or len(progress.acknowledged) < FAULT_AFTER:
            return
        phase["stopped_at"] = len(progress.acknowledged)
        try:
            mlflow.stop()
            with api.client() as c:
                seen["reload_down"] = c.post("/admin/reload", headers=admin_headers)
                seen["ready_down"] = c.get("/ready")
                seen["predict_down"] = c.post("/predict", json=(tx := make_tx()))
                seen["predict_down_id"] = tx["TRANSACTION_ID"]
            # The alias moves while the server is down (in its database), then it comes back.
            seen["new_version"] = register_new_champion(registry_copy, use_tracking_uri)
            mlflow.start()
            mlflow.wait_until(url + "/health", "mlflow server")
            with api.client() as c:
                seen["reload_back"] = c.post("/admin/reload", headers=admin_headers)
            phase["back_at"] = len(progress.acknowledged)
        except BaseException as e:  # reported below, not lost in the drive
            failure.append(e)
        stream.stop()

    stream = Stream(transactions)
    out = drive(api.url, stream, progress=outage)
    if failure:
        raise failure[0]
    assert phase["back_at"] >= 0, "the registry was never stopped"
    assert_no_500(out, api.output())
    # A registry that is down fails no prediction.
    assert set(out.statuses) == {200}, out.statuses

    down = seen["reload_down"]
    assert down.status_code == 503, down.text
    detail = down.json()["detail"]
    assert "registry" in detail and url in detail and "still serving" in detail, detail
    assert seen["ready_down"].status_code == 200, seen["ready_down"].text
    assert seen["predict_down"].status_code == 200
    assert seen["predict_down"].json()["model_version"] == "1"

    back = seen["reload_back"]
    assert back.status_code == 200, back.text
    assert back.json() == {
        "previous_version": "1",
        "version": seen["new_version"],
        "source": "registry",
    }
    logged = logged_ids_sqlite(api.prediction_log)
    assert seen["predict_down_id"] in logged  # sent beside the load, while the registry was down
    logged.remove(seen["predict_down_id"])
    assert_every_2xx_logged_once(out, logged)


# --- Redis (the shared feature state) ----------------------------------------------------------


def test_redis_stopped_under_load_answers_503_with_the_reason_and_recovers_when_it_is_back(
    persistent_redis: PersistentRedis,
    servers: ServerPool,
    registry_copy: str,
    make_tx: Callable[..., dict[str, Any]],
) -> None:
    """Redis stops under load: every request that needs the feature state answers 503 naming
    it (never a 500), /ready is 503 with the reason while it is down, /feedback too; once Redis
    is back with its data, the same API process answers 200 again and /ready is true."""
    api = start_api(
        servers,
        registry_copy,
        env={"FRAUD_FEATURE_STORE": persistent_redis.url, "FRAUD_REDIS_PREFIX": "redis-stop"},
    )
    transactions = [make_tx() for _ in range(TRANSACTIONS)]
    seen: dict[str, httpx.Response] = {}

    def during() -> None:
        with api.client() as c:
            seen["predict"] = c.post("/predict", json=make_tx())
            seen["batch"] = c.post("/predict/batch", json={"transactions": [make_tx(), make_tx()]})
            seen["feedback"] = c.post("/feedback", json={"TRANSACTION_ID": 1, "is_fraud": True})
            seen["ready"] = c.get("/ready")

    def recover() -> None:
        persistent_redis.start()
        wait_for(lambda: ready(api.url).status_code == 200, RECOVERY_TIMEOUT, "/ready 200")

    outage = Outage(persistent_redis.stop, during, recover)
    out = outage.drive(api.url, transactions)
    outage.check(out)
    assert_no_500(out, api.output())
    assert out.statuses[503] >= OUTAGE_503S

    for name in ("predict", "batch", "feedback"):
        r = seen[name]
        assert r.status_code == 503, (name, r.text)
        assert "feature store is unavailable" in r.json()["detail"], (name, r.text)
    assert seen["ready"].status_code == 503
    reason = seen["ready"].json()["reason"]
    assert f"Redis at {persistent_redis.url}" in reason and "unavailable" in reason, reason
    # Redis down fails a request before anything is logged: the log holds exactly the 200s.
    assert_every_2xx_logged_once(out, logged_ids_sqlite(api.prediction_log))


def test_redis_restarted_empty_refuses_to_score_from_nothing_and_seeds_itself_again(
    persistent_redis: PersistentRedis,
    servers: ServerPool,
    registry_copy: str,
    make_tx: Callable[..., dict[str, Any]],
) -> None:
    """Redis restarts without its data under load (its append-only file gone): requests answer
    503 saying the feature state was lost (never a score computed from an empty state, never a
    500), /ready says so too, and the API seeds Redis again from the model's history by itself:
    /ready turns true and the same process scores again, without a restart."""
    prefix = "redis-empty"
    api = start_api(
        servers,
        registry_copy,
        env={"FRAUD_FEATURE_STORE": persistent_redis.url, "FRAUD_REDIS_PREFIX": prefix},
    )
    transactions = [make_tx() for _ in range(TRANSACTIONS)]
    seen: dict[str, httpx.Response] = {}

    def restart_empty() -> None:
        persistent_redis.stop()
        for path in persistent_redis.workdir.iterdir():
            if path.name != "redis.log":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        persistent_redis.start()

    def during() -> None:
        with api.client() as c:
            seen["predict"] = c.post("/predict", json=make_tx())
            seen["ready"] = c.get("/ready")

    def recover() -> None:
        wait_for(lambda: ready(api.url).status_code == 200, RECOVERY_TIMEOUT, "/ready 200")

    outage = Outage(restart_empty, during, recover)
    out = outage.drive(api.url, transactions)
    outage.check(out)
    assert_no_500(out, api.output())
    assert out.statuses[503] >= OUTAGE_503S

    assert seen["predict"].status_code == 503, seen["predict"].text
    assert "has lost its state" in seen["predict"].json()["detail"], seen["predict"].text
    assert seen["ready"].status_code == 503
    assert "has lost its state" in seen["ready"].json()["reason"], seen["ready"].text
    # Seeded again with the whole history the model was published with, once.
    history = load_from_cache(api.cache_dir).history
    client = redis.Redis.from_url(persistent_redis.url)
    try:
        assert int(client.get(f"{prefix}:seeded") or -1) == len(history)
    finally:
        client.close()
    assert api.output().count("Redis has lost its state; seeding it again") >= 1
    assert_every_2xx_logged_once(out, logged_ids_sqlite(api.prediction_log))


def test_redis_unreachable_at_start_up_exits_with_one_line_naming_it_without_the_password(
    tmp_path: Path,
) -> None:
    """`python -m serving` with Redis down exits 3 with one line naming Redis (its password
    masked) for the supervisor to start it again: no traceback, no model download first."""
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "serving", "--port", str(free_port())],
        env=clean_env({"FRAUD_FEATURE_STORE": f"redis://:hunter2@127.0.0.1:{port}/0"}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 3, output
    assert f"cannot reach Redis at redis://:***@127.0.0.1:{port}/0" in done.stderr, output
    assert "hunter2" not in output and "Traceback" not in output, output
    assert len(done.stderr.strip().splitlines()) == 1, output


# --- PostgreSQL (the prediction log) -----------------------------------------------------------


def test_postgres_restarted_under_load_fails_only_with_503s_and_logs_every_2xx_once(
    pg_server: PostgresServer,
    servers: ServerPool,
    registry_copy: str,
    make_tx: Callable[..., dict[str, Any]],
) -> None:
    """PostgreSQL (the prediction log) is shut down and started again while the load runs:
    requests answer 503 naming the log while it is down, /ready is 503 with the reason, and the
    same API process logs again after the restart; every 200's row is there, once."""
    url = pg_server.create_database("faults_pg_restart")
    api = start_api(servers, registry_copy, env={"FRAUD_PREDICTION_LOG": url})
    transactions = [make_tx() for _ in range(TRANSACTIONS)]
    seen: dict[str, httpx.Response] = {}

    def during() -> None:
        with api.client() as c:
            seen["predict"] = c.post("/predict", json=make_tx())
            seen["ready"] = c.get("/ready")

    def recover() -> None:
        pg_server.start()
        wait_for(lambda: ready(api.url).status_code == 200, RECOVERY_TIMEOUT, "/ready 200")

    outage = Outage(pg_server.stop, during, recover)
    out = outage.drive(api.url, transactions)
    outage.check(out)
    assert_no_500(out, api.output())
    assert out.statuses[503] >= OUTAGE_503S

    assert seen["predict"].status_code == 503
    assert "prediction log is unavailable" in seen["predict"].json()["detail"]
    assert seen["ready"].status_code == 503
    reason = seen["ready"].json()["reason"]
    assert "prediction log" in reason and f"127.0.0.1:{pg_server.port}" in reason, reason
    # A statement in flight when the server went down may have committed unanswered.
    assert_every_2xx_logged_once(out, logged_ids_postgres(url), in_flight=1)


# --- the API itself, SIGKILLed, with its feature state in Redis --------------------------------


def _transaction(tx: dict[str, Any]) -> Transaction:
    return Transaction(
        int(tx["TRANSACTION_ID"]),
        pd.Timestamp(tx["TX_DATETIME"]),
        int(tx["CUSTOMER_ID"]),
        int(tx["TERMINAL_ID"]),
        float(tx["TX_AMOUNT"]),
    )


def logged_features(path: Path, transaction_id: int) -> dict[str, float]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        (text,) = db.execute(
            f"SELECT features FROM {PREDICTIONS_TABLE} WHERE transaction_id = ?",
            (transaction_id,),
        ).fetchone()
    return {k: math.nan if v is None else float(v) for k, v in json.loads(text).items()}


def test_api_sigkilled_under_load_loses_no_acknowledged_prediction_and_resumes_the_feature_state(
    persistent_redis: PersistentRedis,
    servers: ServerPool,
    registry_copy: str,
    make_tx: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    """SIGKILL of the API under load, its feature state in Redis: every acknowledged prediction
    is in the log; a new process on the same Redis and log continues each customer's and
    terminal's windows: a following transaction's features equal those of an uninterrupted
    in-process state fed the same history and the same transactions."""
    log_path = tmp_path / "predictions.sqlite"
    env = {
        "FRAUD_FEATURE_STORE": persistent_redis.url,
        "FRAUD_REDIS_PREFIX": "sigkill",
        "FRAUD_PREDICTION_LOG": str(log_path),
    }
    first = start_api(servers, registry_copy, env=env)
    transactions = [make_tx() for _ in range(TRANSACTIONS)]

    def kill_mid_load(progress: Drive) -> None:
        if first.proc.poll() is None and len(progress.acknowledged) >= FAULT_AFTER:
            first.proc.kill()

    out = drive(first.url, transactions, stop_on_transport_error=True, progress=kill_mid_load)
    assert first.proc.wait(timeout=30) == -9, "the API was not killed by the test"
    assert FAULT_AFTER <= len(out.acknowledged) < len(transactions)
    assert set(out.statuses) == {200}, out.statuses
    # In flight at the kill: at most one request per client, logged or not.
    assert_every_2xx_logged_once(out, logged_ids_sqlite(log_path), in_flight=8)

    second = start_api(servers, registry_copy, env=env)
    model = load_from_cache(second.cache_dir)
    # What Redis recorded: every acknowledged transaction, and those in flight that reached it.
    store = RedisFeatureStore(persistent_redis.url, model.feature_config, prefix="sigkill")
    sent_ids = set(out.sent)
    sent = [tx for tx in transactions if tx["TRANSACTION_ID"] in sent_ids]
    recorded = [tx for tx in sent if store.seen(tx["TRANSACTION_ID"])]
    store.close()
    assert set(out.acknowledged) <= {tx["TRANSACTION_ID"] for tx in recorded}

    uninterrupted = OnlineFeatureState(model.feature_config)
    uninterrupted.seed(model.history)
    history_only = OnlineFeatureState(model.feature_config)
    history_only.seed(model.history)
    for tx in sorted(recorded, key=lambda t: t["TX_DATETIME"]):
        uninterrupted.features(_transaction(tx))

    # Following transactions on the customers and terminals the load used last.
    last = sorted(recorded, key=lambda t: t["TX_DATETIME"])[-3:]
    following = [
        make_tx(CUSTOMER_ID=tx["CUSTOMER_ID"], TERMINAL_ID=tx["TERMINAL_ID"]) for tx in last
    ]
    carried = False
    with second.client() as c:
        for tx in following:
            r = c.post("/predict", json=tx)
            assert r.status_code == 200, r.text
    for tx in following:
        got = logged_features(log_path, tx["TRANSACTION_ID"])
        want = uninterrupted.features(_transaction(tx))
        fresh = history_only.features(_transaction(tx))
        names = model.features
        assert np.allclose(
            [got[n] for n in names], [want[n] for n in names], rtol=1e-9, equal_nan=True
        ), {n: (got[n], want[n]) for n in names if not np.isclose(got[n], want[n], equal_nan=True)}
        carried |= not np.allclose(
            [fresh[n] for n in names], [want[n] for n in names], equal_nan=True
        )
    assert carried, "the load left no trace in the features: the comparison proves nothing"


# --- the log's disk full (SQLite on a small tmpfs) ---------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for the test (root only), unmounted at its end."""
    mount_point = tmp_path / "logdisk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root, CAP_SYS_ADMIN): {done.stderr}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill(disk: Path, leave_bytes: int) -> Path:
    """A ballast file that leaves about `leave_bytes` free on `disk`, or none: the API writes
    its log while the ballast grows, so the disk may fill before the ballast reaches its size,
    and a full disk is what the caller wants (unbuffered, so closing has nothing to flush)."""
    ballast = disk / "ballast"
    st = os.statvfs(disk)
    size = max(0, st.f_bavail * st.f_frsize - leave_bytes)
    with ballast.open("wb", buffering=0) as f:
        chunk = b"\0" * (1 << 20)
        while size > 0:
            try:
                n = f.write(chunk[: min(size, len(chunk))])
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
            size -= n or 0
    return ballast


def assert_log_outage_answered(
    out: Drive, api: LiveServer, seen: dict[str, Any], because: str
) -> None:
    """The log's disk failed under load: only 200s and 503s, enough of them met the outage, the
    /predict sent during it is a 503 naming the log, and /ready is 503 saying the log cannot be
    written `because`."""
    assert_no_500(out, api.output())
    assert out.statuses[503] >= OUTAGE_503S
    r = seen["predict"]
    assert r.status_code == 503, r.text
    assert "prediction log is unavailable" in r.json()["detail"]
    assert seen["ready"].status_code == 503
    reason = seen["ready"].json()["reason"]
    assert "prediction log cannot be written" in reason and because in reason, reason


def test_full_log_disk_answers_503_is_not_ready_and_recovers_when_space_returns(
    small_disk: Path,
    servers: ServerPool,
    registry_copy: str,
    make_tx: Callable[..., dict[str, Any]],
) -> None:
    """The SQLite log's file system fills up under load (a real ENOSPC, on a tmpfs): requests
    answer 503 naming the log (never 500, never a 200 without its row), /ready is 503 saying
    the log cannot be written and why; once space is freed, /ready is true again (its probe
    write succeeds, no traffic needed) and the same process logs again."""
    log_path = small_disk / "predictions.sqlite"
    api = start_api(servers, registry_copy, env={"FRAUD_PREDICTION_LOG": str(log_path)})
    transactions = [make_tx() for _ in range(TRANSACTIONS)]
    seen: dict[str, Any] = {}
    ballast: list[Path] = []

    def inject() -> None:
        ballast.append(fill(small_disk, leave_bytes=256 * 1024))

    def during() -> None:
        with api.client() as c:
            seen["predict"] = c.post("/predict", json=make_tx())
            seen["ready"] = c.get("/ready")

    def recover() -> None:
        ballast[0].unlink()
        wait_for(lambda: ready(api.url).status_code == 200, RECOVERY_TIMEOUT, "/ready 200")
        seen["ready_back"] = ready(api.url)

    outage = Outage(inject, during, recover)
    try:
        out = outage.drive(api.url, transactions)
    finally:
        for b in ballast:
            b.unlink(missing_ok=True)
    outage.check(out)
    assert_log_outage_answered(out, api, seen, because="full")
    assert seen["ready_back"].json()["ready"] is True
    # A failed commit is rolled back: the log holds exactly the acknowledged predictions.
    assert_every_2xx_logged_once(out, logged_ids_sqlite(log_path))
    api.stop()
    with closing(sqlite3.connect(log_path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# --- the log's disk turned read-only (ext4 on a loop device, remounted by a disk error) -------


@pytest.fixture
def ext4_disk(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A 32 MiB ext4 file system on a loop device mounted with `errors=remount-ro` (root only),
    and its sysfs `trigger_fs_error`: writing to it makes the kernel remount the file system
    read-only as on a real disk error, under files open for writing (which a plain
    `mount -o remount,ro` refuses with EBUSY). Unmounted at the end."""
    image, mount_point = tmp_path / "ext4.img", tmp_path / "rodisk"
    mount_point.mkdir()
    with image.open("wb") as f:
        f.truncate(32 << 20)
    for cmd in (
        ["mkfs.ext4", "-q", "-F", str(image)],
        ["mount", "-o", "loop,errors=remount-ro", str(image), str(mount_point)],
    ):
        try:
            done = subprocess.run(cmd, capture_output=True, text=True)
        except FileNotFoundError as e:
            pytest.skip(f"{cmd[0]} is not installed (Debian package e2fsprogs): {e}")
        if done.returncode != 0:
            pytest.skip(f"cannot {cmd[0]} here (needs root and a loop device): {done.stderr}")
    try:
        device = next(
            line.split()[0]
            for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1] == str(mount_point)
        )
        trigger = Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error"
        if not trigger.exists():
            pytest.skip(f"this kernel has no {trigger}")
        yield mount_point, trigger
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_log_disk_turned_read_only_answers_503_is_not_ready_and_acknowledges_nothing_unwritten(
    ext4_disk: tuple[Path, Path],
    servers: ServerPool,
    registry_copy: str,
    make_tx: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    """The SQLite log's file system turns read-only under load (the kernel's answer to a disk
    error): requests answer 503 naming the log (never 500, never a 200 without its row), and
    /ready is 503 saying the file system is read-only. No recovery in place: the disk needs
    an operator (or the pod a new volume); what was acknowledged is all in the file."""
    disk, trigger = ext4_disk
    log_path = disk / "predictions.sqlite"
    api = start_api(servers, registry_copy, env={"FRAUD_PREDICTION_LOG": str(log_path)})
    transactions = Stream([make_tx() for _ in range(TRANSACTIONS)])
    seen: dict[str, httpx.Response] = {}
    phase = {"errors_before": -1}
    failure: list[BaseException] = []

    def progress(p: Drive) -> None:
        errors = sum(n for s, n in p.statuses.items() if s != 200)
        try:
            if phase["errors_before"] < 0:
                if len(p.acknowledged) >= FAULT_AFTER:
                    phase["errors_before"] = errors
                    trigger.write_text("reliability test: the log's disk fails")
            elif errors - phase["errors_before"] >= OUTAGE_503S and not seen:
                with api.client() as c:
                    seen["predict"] = c.post("/predict", json=make_tx())
                    seen["ready"] = c.get("/ready")
                transactions.stop()
        except BaseException as e:  # reported below, not lost in the drive
            failure.append(e)
            transactions.stop()

    out = drive(api.url, transactions, pause_after_error=0.05, progress=progress)
    if failure:
        raise failure[0]
    assert seen, f"the read-only disk was never met: {out.statuses}"
    options = next(
        line.split()[3]
        for line in Path("/proc/mounts").read_text().splitlines()
        if str(disk) in line
    ).split(",")
    # Older kernels flip the mount to `ro`; newer ones keep `rw` and add `emergency_ro`.
    assert {"ro", "emergency_ro"} & set(options), f"not remounted read-only: {options}"
    assert_log_outage_answered(out, api, seen, because="is read-only")
    # What the file holds (read from a copy: the read-only disk cannot take SQLite's locks):
    # every acknowledged prediction, and nothing that was not acknowledged.
    copy = tmp_path / "log-copy"
    copy.mkdir()
    for f in disk.glob("predictions.sqlite*"):
        shutil.copy2(f, copy / f.name)
    assert_every_2xx_logged_once(out, logged_ids_sqlite(copy / log_path.name))
