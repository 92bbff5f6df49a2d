"""A throwaway PostgreSQL server for the tests: `initdb` in a temporary directory, trust auth,
listening on a free 127.0.0.1 port (and a Unix socket in the same directory), stopped and
removed at the end.

PostgreSQL refuses to run as root: under root, the server's files belong to the `postgres` user
and `initdb` and `postgres` run as that user (subprocess's user=); otherwise as the current
user. The postmaster is a child of the test process, so a test can SIGKILL it (a crash) and
start it again on the same data (crash recovery). The binaries are found with
`FRAUD_TEST_PG_BIN`, then `pg_config --bindir`, then /usr/lib/postgresql/<newest>/bin (Debian's
layout); without them the tests skip with the reason.

Shared by the tests of several packages: `from tests.pg_server import ...` (pytest puts the
repository root on sys.path, pyproject.toml's `pythonpath`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

#: Seconds to wait for the server to start or stop.
PG_TIMEOUT = 60


def _has_server(bindir: Path) -> bool:
    return all((bindir / b).is_file() for b in ("initdb", "postgres"))


def find_pg_bin() -> Path | None:
    """The directory holding initdb and postgres, or None."""
    env = os.environ.get("FRAUD_TEST_PG_BIN")
    if env:
        return Path(env) if _has_server(Path(env)) else None
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if out.returncode == 0 and _has_server(Path(out.stdout.strip())):
            return Path(out.stdout.strip())
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return next((p for p in reversed(debian) if _has_server(p)), None)


def skip_reason() -> str | None:
    """Why a PostgreSQL server cannot be started here, or None if it can."""
    if find_pg_bin() is None:
        return (
            "PostgreSQL server binaries (initdb, postgres) not found: "
            "apt-get install postgresql, or set FRAUD_TEST_PG_BIN to their directory"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run PostgreSQL as"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state, ppid, ...), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def _running(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and fields[1] == str(pid):
                found.append(int(entry.name))
    return found


def _wait_gone(pids: list[int]) -> None:
    """Wait for a dead postmaster's backends to exit (they notice its death within moments): a
    new postmaster refuses to start while they hold the old one's shared memory."""
    deadline = time.monotonic() + PG_TIMEOUT
    for pid in pids:
        while time.monotonic() < deadline and _running(pid):
            time.sleep(0.02)


class PostgresServer:
    """One PostgreSQL cluster in its own temporary directory; the postmaster is a child of this
    process (so that a SIGKILL'd one is reaped and can be restarted at once)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        # PostgreSQL refuses to run as root: run it as `postgres`, which must own its files.
        self.owner: dict[str, Any] = {}
        # Not under pytest's tmp_path: that is private to root, and the server runs as postgres.
        self.base = Path(tempfile.mkdtemp(prefix="fraud-test-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            self.owner = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            os.chown(self.base, user.pw_uid, user.pw_gid)
        self.data = self.base / "data"
        self.log_file = self.base / "server.log"
        self.port = free_port()
        self.user = "postgres"
        self.proc: subprocess.Popen[bytes] | None = None

    def server_log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def init(self) -> None:
        cmd = [
            str(self.bindir / "initdb"),
            *("-D", str(self.data), "-U", self.user, "--auth=trust"),
            *("--encoding=UTF8", "--locale=C.UTF-8"),
            "--no-sync",  # the cluster is thrown away (its commits are still fsynced)
        ]
        out = subprocess.run(
            cmd, cwd=self.base, capture_output=True, text=True, timeout=PG_TIMEOUT, **self.owner
        )
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr}")

    def start(self) -> None:
        """Start (or restart after `stop` or `kill`) on the same port and data; returns once it
        accepts connections (after crash recovery, if any)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    *("-D", str(self.data), "-h", "127.0.0.1", "-p", str(self.port)),
                    *("-k", str(self.base), "-c", "max_connections=50"),
                ],
                cwd=self.base,
                stdout=log,
                stderr=subprocess.STDOUT,
                **self.owner,
            )
        deadline = time.monotonic() + PG_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"PostgreSQL exited with {self.proc.returncode}:\n{self.server_log()}"
                )
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL not ready in {PG_TIMEOUT} s: {e}\n{self.server_log()}"
                    ) from e
                time.sleep(0.05)

    def stop(self) -> None:
        """Immediate shutdown (SIGQUIT): no checkpoint; the next start recovers from the WAL."""
        if self.proc is not None and self.proc.poll() is None:
            backends = _children(self.proc.pid)
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=PG_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=PG_TIMEOUT)
            _wait_gone(backends)

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash of PostgreSQL): its backends exit when they see it
        gone; the next `start` runs crash recovery from the WAL."""
        assert self.proc is not None and self.proc.poll() is None, "not running"
        backends = _children(self.proc.pid)
        self.proc.kill()
        self.proc.wait(timeout=PG_TIMEOUT)
        _wait_gone(backends)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL server, removed on exit; skips the test when there is none."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    bindir = find_pg_bin()
    assert bindir is not None
    server = PostgresServer(bindir)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()
