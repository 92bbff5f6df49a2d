"""Fixtures of the serving tests: copies of the pipeline's MLflow registry, real uvicorn servers
(`python -m serving`) on free 127.0.0.1 ports, and transactions that follow the tiny data.

Servers run in subprocesses with every path (model cache, prediction log) in a temporary
directory; each is polled on /ready in a bounded loop and terminated in teardown. Registry
mutations happen on a copy of `pipeline_repo`'s mlflow.db, never on the original (other test
modules expect champion v1 there).
"""

from __future__ import annotations

import itertools
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

ADMIN_TOKEN = "serving-tests-admin-token"
#: Seconds a server may take to become ready (it normally takes ~5 s on 2 cores).
READY_TIMEOUT = 180.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def copy_registry(tracking_uri: str, dest: Path) -> str:
    """Copy the SQLite MLflow store behind `tracking_uri` into `dest`; returns the copy's URI.

    The artifact locations stored in the db are absolute URIs into the original repo's
    mlartifacts, so reads of existing versions work from the copy.
    """
    src = Path(tracking_uri.removeprefix("sqlite:///"))
    assert src.exists(), f"no MLflow store at {src}"
    dest.mkdir(parents=True, exist_ok=True)
    # SQLite's backup API: a consistent snapshot, whatever the journal mode.
    with (
        closing(sqlite3.connect(src)) as source,
        closing(sqlite3.connect(dest / "mlflow.db")) as target,
    ):
        source.backup(target)
    return f"sqlite:///{dest / 'mlflow.db'}"


@contextmanager
def mlflow_tracking_uri(uri: str) -> Iterator[None]:
    """Point this process's MLflow (global URI and env var) at `uri`, and restore both after.

    `mlflow.set_tracking_uri` also writes MLFLOW_TRACKING_URI into os.environ, so the env var is
    restored separately.
    """
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with tracking_utils._use_tracking_uri(uri):
            yield
    finally:
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env


@dataclass
class LiveServer:
    """One `python -m serving` subprocess."""

    url: str
    tracking_uri: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    cache_dir: Path
    prediction_log: Path
    log_file: Path
    started_at: float = field(default_factory=time.monotonic)
    ready: bool = False

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def output(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
        """Poll /ready until it answers 200 (bounded); fail with the server's output."""
        deadline = time.monotonic() + timeout
        last: str = "no answer"
        with httpx.Client(base_url=self.url, timeout=2.0) as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"server exited with {self.proc.returncode} before ready:\n{self.output()}"
                    )
                try:
                    r = c.get("/ready")
                    last = f"{r.status_code} {r.text}"
                    if r.status_code == 200:
                        self.ready = True
                        return dict(r.json())
                except httpx.TransportError as e:
                    last = repr(e)
                time.sleep(0.1)
        raise AssertionError(
            f"server not ready within {timeout:.0f} s (last /ready: {last}):\n{self.output()}"
        )

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down gracefully), SIGKILL if it has not exited after 5 s.
        A server never seen ready is killed at once: in its lifespan start-up it ignores SIGTERM."""
        if self.proc.poll() is None and not self.ready:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class ServerPool:
    """Starts servers and stops every one of them at teardown."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.servers: list[LiveServer] = []
        self._n = itertools.count()

    def start(
        self,
        tracking_uri: str,
        *,
        cache_dir: Path | None = None,
        env: dict[str, str] | None = None,
        admin_token: str | None = ADMIN_TOKEN,
        wait: bool = True,
    ) -> LiveServer:
        workdir = self.base / f"server-{next(self._n)}"
        workdir.mkdir(parents=True)
        cache_dir = cache_dir or workdir / "model-cache"
        log_path = workdir / "predictions.sqlite"
        port = free_port()
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("FRAUD_", "MLFLOW_HTTP_REQUEST_"))
        }
        full_env.update(
            {
                "MLFLOW_TRACKING_URI": tracking_uri,
                "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "FRAUD_MODEL_CACHE_DIR": str(cache_dir),
                "FRAUD_PREDICTION_LOG": str(log_path),
                "PYTHONUNBUFFERED": "1",
            }
        )
        full_env.pop("MLFLOW_REGISTRY_URI", None)
        if admin_token:
            full_env["FRAUD_ADMIN_TOKEN"] = admin_token
        full_env.update(env or {})
        out = workdir / "server.log"
        with out.open("wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(port)],
                cwd=workdir,
                env=full_env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        server = LiveServer(
            url=f"http://127.0.0.1:{port}",
            tracking_uri=tracking_uri,
            proc=proc,
            workdir=workdir,
            cache_dir=cache_dir,
            prediction_log=log_path,
            log_file=out,
        )
        self.servers.append(server)
        if wait:
            server.wait_ready()
        return server

    def stop_all(self) -> None:
        for s in self.servers:
            s.stop()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[ServerPool]:
    """Start servers within one test; all are terminated at its end."""
    pool = ServerPool(tmp_path / "servers")
    yield pool
    pool.stop_all()


@pytest.fixture(scope="module")
def module_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    pool = ServerPool(tmp_path_factory.mktemp("module-servers"))
    yield pool
    pool.stop_all()


@pytest.fixture(scope="session")
def live_server(pipeline_repo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the session, on a copy of the pipeline's registry (champion v1)."""
    base = tmp_path_factory.mktemp("live-server")
    pool = ServerPool(base)
    server = pool.start(copy_registry(pipeline_repo.tracking_uri, base / "registry"))
    yield server
    pool.stop_all()


@pytest.fixture(scope="session")
def admin_headers() -> dict[str, str]:
    """The Authorization header the test servers accept on /admin endpoints."""
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="session")
def copy_pipeline_registry(pipeline_repo) -> Callable[[Path], str]:
    """`copy_pipeline_registry(dest)`: copy the pipeline's registry into `dest`; returns its URI."""
    return lambda dest: copy_registry(pipeline_repo.tracking_uri, dest)


@pytest.fixture(scope="session")
def use_tracking_uri() -> Callable[[str], Any]:
    """`with use_tracking_uri(uri):` points this process's MLflow at `uri` (restored after)."""
    return mlflow_tracking_uri


@pytest.fixture
def registry_copy(pipeline_repo, tmp_path: Path) -> str:
    """A private copy of the pipeline's registry that a test may mutate."""
    return copy_registry(pipeline_repo.tracking_uri, tmp_path / "registry")


@pytest.fixture(scope="session")
def raw_transactions(pipeline_repo) -> pd.DataFrame:
    """The raw data the pipeline trained on (the tiny simulation)."""
    return pd.read_parquet(pipeline_repo.path / "data/raw/transactions.parquet")


class TransactionFactory:
    """Valid, unique transactions after the end of the pipeline's data (where the served
    model's feature-state history ends), one minute apart, on known customers and terminals."""

    def __init__(self, raw: pd.DataFrame) -> None:
        self._ids = itertools.count(int(raw["TRANSACTION_ID"].max()) + 1_000_000)
        self._start = raw["TX_DATETIME"].max().ceil("D")
        self._minutes = itertools.count()
        self.customers = sorted(raw["CUSTOMER_ID"].unique().tolist())
        self.terminals = sorted(raw["TERMINAL_ID"].unique().tolist())

    def __call__(self, **overrides: Any) -> dict[str, Any]:
        i = next(self._ids)
        when = self._start + pd.Timedelta(minutes=next(self._minutes))
        tx: dict[str, Any] = {
            "TRANSACTION_ID": i,
            "TX_DATETIME": when.isoformat(),
            "CUSTOMER_ID": int(self.customers[i % len(self.customers)]),
            "TERMINAL_ID": int(self.terminals[(7 * i) % len(self.terminals)]),
            "TX_AMOUNT": round(20.0 + (i % 97) * 1.37, 2),
        }
        tx.update(overrides)
        return tx


@pytest.fixture(scope="session")
def make_tx(raw_transactions: pd.DataFrame) -> Callable[..., dict[str, Any]]:
    """`make_tx(**overrides)`: a new valid transaction with a fresh TRANSACTION_ID."""
    return TransactionFactory(raw_transactions)
