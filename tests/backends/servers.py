"""Real production backends for the tests, each on a free 127.0.0.1 port: moto's S3 server
(`moto_server`, in the venv through the dev extra) and `mlflow server` on PostgreSQL with its
artifacts in that S3 (proxied by the server, or written directly by the clients).

Importing this module starts nothing and needs no server, so any test package can import it:

    from tests.backends.servers import moto_s3_server, mlflow_server, mlflow_database_uri

    with postgres_server() as pg, moto_s3_server(tmp / "s3", buckets=["fraud"]) as s3:
        with mlflow_server(tmp / "mlflow", mlflow_database_uri(pg, "mlflow"), s3, "fraud") as ml:
            env = {"MLFLOW_TRACKING_URI": ml.url}  # a client needs nothing else (proxied)

Every starter waits for readiness (bounded, generous: other tests load the machine) and fails
with the server's own log; every server is stopped on exit, its whole process group (`mlflow
server` runs uvicorn as a child process). PostgreSQL comes from `tests/pg_server.py`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.pg_server import free_port

if TYPE_CHECKING:
    from tests.pg_server import PostgresServer

VENV_BIN = Path(sys.executable).parent
#: Seconds a server may take to answer (MLflow migrates a fresh PostgreSQL schema first: ~20 s).
START_TIMEOUT = 180.0
#: moto accepts any keys; these never reach a real S3 (the endpoint is always the local one).
S3_ACCESS_KEY = "testing-access-key"
S3_SECRET_KEY = "testing-secret-key"
S3_REGION = "us-east-1"
#: Environment variables that could point a child at a real S3 or a foreign MLflow: removed from
#: every server's and client's environment before the test's own values are set.
FOREIGN_ENV_PREFIXES = ("AWS_", "MLFLOW_S3_", "MLFLOW_TRACKING_", "MLFLOW_REGISTRY_URI")


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without credentials or endpoints of a real S3 or MLflow, plus
    `extra`: the base of every server's and client's environment here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV_PREFIXES)}
    env["PATH"] = str(VENV_BIN) + os.pathsep + env.get("PATH", "")
    env.update(extra or {})
    return env


class ServerProcess:
    """A server subprocess in its own process group with its output in a log file; `stop`
    ends the whole group (SIGTERM, then SIGKILL after `grace` seconds)."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict[str, str], log_file: Path) -> None:
        self.cmd = cmd
        self.cwd = cwd
        self.env = env
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert not self.running(), "already running"
        self.cwd.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def wait_until(self, url: str, what: str, timeout: float = START_TIMEOUT) -> None:
        """Poll `url` until it answers below 500 (bounded); fail with the server's log."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            if not self.running():
                code = self.proc.returncode if self.proc else None
                raise RuntimeError(f"{what} exited with {code}:\n{self.output()[-4000:]}")
            try:
                r = httpx.get(url, timeout=5)
                last = f"{r.status_code} {r.text[:200]}"
                if r.status_code < 500:
                    return
            except httpx.HTTPError as e:
                last = repr(e)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{what} not ready in {timeout:.0f} s (last: {last}):\n{self.output()[-4000:]}"
                )
            time.sleep(0.3)

    def stop(self, grace: float = 15.0) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid  # the group's id: start_new_session made the server its leader
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            break
        # Children (uvicorn under `mlflow server`) may outlive the leader for a moment.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                return
            time.sleep(0.1)


# --- S3: moto in server mode --------------------------------------------------------------


@dataclass
class S3Server:
    """A running moto S3 server: its endpoint URL, the keys it accepts, and helpers."""

    url: str
    process: ServerProcess = field(repr=False)
    access_key: str = S3_ACCESS_KEY
    secret_key: str = S3_SECRET_KEY
    region: str = S3_REGION

    def client(self) -> Any:
        """A boto3 S3 client on this endpoint."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in `bucket` under `prefix`, sorted."""
        paginator = self.client().get_paginator("list_objects_v2")
        return sorted(
            obj["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        )

    def credentials_env(self) -> dict[str, str]:
        """The AWS variables a client of this endpoint needs (boto3, s3fs/dvc-s3, MLflow)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def mlflow_env(self) -> dict[str, str]:
        """What MLflow (server, or a client writing artifacts directly) needs for this S3."""
        return {**self.credentials_env(), "MLFLOW_S3_ENDPOINT_URL": self.url}


@contextmanager
def moto_s3_server(
    workdir: Path, buckets: Sequence[str] = (), host: str = "127.0.0.1"
) -> Iterator[S3Server]:
    """moto's S3 server on a free port of `host` with `buckets` created; stopped on exit.

    moto keeps its objects in memory: they are gone when it stops. `host`: another local
    address to listen on (e.g. a container network's gateway, for pods to reach it).
    """
    with socket.create_server((host, 0)) as s:
        port = int(s.getsockname()[1])
    process = ServerProcess(
        [str(VENV_BIN / "moto_server"), "-H", host, "-p", str(port)],
        cwd=workdir,
        env=clean_env(),
        log_file=workdir / "moto.log",
    )
    server = S3Server(f"http://{host}:{port}", process)
    try:
        process.start()
        process.wait_until(server.url + "/moto-api/", "moto_server")
        for bucket in buckets:
            server.create_bucket(bucket)
        yield server
    finally:
        process.stop()


# --- MLflow tracking server on PostgreSQL + S3 ---------------------------------------------


def mlflow_database_uri(pg: PostgresServer, database: str) -> str:
    """A new database on `pg` for MLflow's tracking store; its SQLAlchemy URI (psycopg 3: the
    venv has no psycopg2, SQLAlchemy's default driver for `postgresql://`)."""
    url = pg.create_database(database)
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@dataclass
class MlflowServer:
    """A running `mlflow server`: its URL, where it keeps artifacts, and stop/start (same port,
    same stores) for tests of a registry that goes away and comes back."""

    url: str
    backend_store_uri: str
    artifact_uri: str  # s3://BUCKET/PREFIX
    proxied: bool  # True: clients send artifacts through the server (--artifacts-destination)
    workdir: Path  # its working directory and log (where a local store would appear)
    process: ServerProcess = field(repr=False)

    def client_env(self, s3: S3Server) -> dict[str, str]:
        """The environment a client of this server needs: the tracking URI only when the
        server proxies artifacts; the S3 endpoint and keys too when clients write directly."""
        env = {"MLFLOW_TRACKING_URI": self.url}
        if not self.proxied:
            env.update(s3.mlflow_env())
        return env

    def start(self) -> None:
        """Start (or restart after `stop`) and wait for /health."""
        self.process.start()
        self.process.wait_until(self.url + "/health", "mlflow server")

    def stop(self) -> None:
        self.process.stop()

    def output(self) -> str:
        return self.process.output()


@contextmanager
def mlflow_server(
    workdir: Path,
    backend_store_uri: str,
    s3: S3Server,
    bucket: str,
    prefix: str = "mlflow",
    *,
    proxied: bool = True,
) -> Iterator[MlflowServer]:
    """`mlflow server --workers 1` on a free 127.0.0.1 port, on `backend_store_uri` (see
    `mlflow_database_uri`), artifacts under s3://`bucket`/`prefix` on `s3`; stopped on exit.

    proxied=True: `--artifacts-destination` (the server alone holds the S3 keys; clients need
    only MLFLOW_TRACKING_URI). proxied=False: `--default-artifact-root --no-serve-artifacts`
    (clients read and write S3 themselves: `MlflowServer.client_env`). The S3 endpoint and keys
    are in the server's environment only; job execution is off (it forks seven workers).
    """
    port = free_port()
    artifact_uri = f"s3://{bucket}/{prefix}"
    storage = (
        ["--artifacts-destination", artifact_uri, "--serve-artifacts"]
        if proxied
        else ["--default-artifact-root", artifact_uri, "--no-serve-artifacts"]
    )
    cmd = [
        str(VENV_BIN / "mlflow"),
        "server",
        *("--backend-store-uri", backend_store_uri),
        *storage,
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        *("--allowed-hosts", f"127.0.0.1:{port},localhost:{port}"),
    ]
    env = clean_env(
        {
            **s3.mlflow_env(),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
        }
    )
    process = ServerProcess(cmd, cwd=workdir, env=env, log_file=workdir / "server.log")
    server = MlflowServer(
        url=f"http://127.0.0.1:{port}",
        backend_store_uri=backend_store_uri,
        artifact_uri=artifact_uri,
        proxied=proxied,
        workdir=workdir,
        process=process,
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
