"""A real Prefect server for the tests: `prefect server start` on a free 127.0.0.1 port, with its
own PREFECT_HOME (and so its own SQLite database) in a directory the caller gives, optionally
with basic auth (PREFECT_SERVER_API_AUTH_STRING, as k8s/platform/prefect/ runs it); stopped on
exit, its whole process group. Also a `prefect worker start` of a work pool, stopped the same way.

    with prefect_server(tmp_path / "prefect") as server:
        subprocess.run([...], env=server.env)   # a client: PREFECT_API_URL (and auth) set
        server.post("/flow_runs/filter", {})

A fresh database takes 20-35 s to migrate on 2 busy cores: the start-up wait is generous and
bounded, and a failure shows the server's own log. Importing this module starts nothing.
Shared by the tests of several packages: `from tests.prefect_server import ...`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import OFFLINE_ENV
from tests.pg_server import free_port

VENV_BIN = Path(sys.executable).parent
#: Seconds the server may take to answer /api/health (a fresh database migrates first).
START_TIMEOUT = 180.0


def _stop_group(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM the process group `proc` leads, then SIGKILL what is left of it."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # Children (the flow-run processes of a worker) may outlive the leader.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


@dataclass(frozen=True)
class PrefectServer:
    """A running Prefect server: its API URL, a client environment for it, its log."""

    api: str
    #: For clients (CLI, flows, workers): the caller's environment with PREFECT_API_URL (and
    #: PREFECT_API_AUTH_STRING with auth) set.
    env: dict[str, str]
    log_path: Path
    auth: tuple[str, str] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def get(self, path: str) -> Any:
        r = httpx.get(f"{self.api}{path}", auth=self.auth, timeout=30)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: Any) -> Any:
        r = httpx.post(f"{self.api}{path}", json=body, auth=self.auth, timeout=30)
        r.raise_for_status()
        return r.json()

    def run(
        self, *args: str, cwd: str | Path | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        """`python ARGS` (e.g. "-m", "pipelines.deploy") as a client of this server."""
        return subprocess.run(
            [sys.executable, *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def log(self) -> str:
        return _read(self.log_path)


@contextmanager
def prefect_server(
    home: Path,
    *,
    env: Mapping[str, str] | None = None,
    auth: str | None = None,
    timeout: float = START_TIMEOUT,
) -> Iterator[PrefectServer]:
    """`prefect server start` with PREFECT_HOME `home` (created), answering on a free port.

    env: the environment to start from (default: this process's with offline.env's defaults);
    PREFECT_API_URL is removed from it, PREFECT_HOME set to `home`. auth: "user:password" for
    the server's basic auth (/api/health answers without it, as Kubernetes probes need).
    Raises RuntimeError with the server's log when it exits or does not answer in `timeout`.
    """
    home.mkdir(parents=True, exist_ok=True)
    base = dict(env) if env is not None else {**os.environ, **OFFLINE_ENV}
    base.pop("PREFECT_API_URL", None)
    base.pop("PREFECT_API_AUTH_STRING", None)
    base["PREFECT_HOME"] = str(home)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server_env = dict(base)
    client_env = {**base, "PREFECT_API_URL": api}
    if auth is not None:
        server_env["PREFECT_SERVER_API_AUTH_STRING"] = auth
        client_env["PREFECT_API_AUTH_STRING"] = auth
    log_path = home / "server.log"
    with open(log_path, "ab") as log:
        command = [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1"]
        proc = subprocess.Popen(
            [*command, "--port", str(port)],
            env=server_env,
            cwd=home,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped whole
        )
    user, _, password = (auth or "").partition(":")
    server = PrefectServer(
        api, client_env, log_path, (user, password) if auth is not None else None, proc
    )
    try:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"prefect server exited with {proc.returncode}:\n{server.log()[-4000:]}"
                )
            try:
                r = httpx.get(f"{api}/health", timeout=5)
                last = f"{r.status_code} {r.text[:200]}"
                if r.status_code == 200:
                    break
            except httpx.HTTPError as e:
                last = repr(e)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"prefect server not ready in {timeout:.0f} s (last: {last}):\n"
                    f"{server.log()[-4000:]}"
                )
            time.sleep(0.5)
        yield server
    finally:
        _stop_group(proc)


@dataclass(frozen=True)
class PrefectWorker:
    """A running `prefect worker start`: its process and log."""

    pool: str
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False, compare=False)

    def running(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return _read(self.log_path)


@contextmanager
def prefect_worker(
    server: PrefectServer,
    pool: str,
    cwd: Path,
    *,
    worker_type: str = "process",
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
) -> Iterator[PrefectWorker]:
    """`prefect worker start --pool POOL --type TYPE` in `cwd`, a client of `server`; its flow-run
    processes inherit its environment (`env` over the server's client env). Stopped on exit,
    with the flow runs it started (its process group)."""
    worker_env = {**server.env, **(env or {})}
    worker_env.setdefault("PREFECT_WORKER_QUERY_SECONDS", "2")  # the default 15 s: slow tests
    path = log_path or cwd / f"prefect-worker-{pool}.log"
    with open(path, "ab") as log:
        command = [str(VENV_BIN / "prefect"), "worker", "start", "--pool", pool]
        proc = subprocess.Popen(
            [*command, "--type", worker_type],
            env=worker_env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield PrefectWorker(pool, path, proc)
    finally:
        _stop_group(proc)
