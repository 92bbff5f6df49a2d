"""Fixtures of the reliability tests (load and faults against real servers).

The serving tests' fixtures are reused, imported (not copied): the API as `python -m serving`
subprocesses on free ports (`servers`), private copies of the pipeline's registry, unique
transactions after the tiny data. Added here: a throw-away PostgreSQL per module, and a Redis
that persists its data (append-only file, fsync on every write) so that it can be stopped and
started again with its state, as a production Redis would be run.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pg_server import PostgresServer, free_port, postgres_server
from tests.serving.conftest import LiveServer, ServerPool
from tests.serving.conftest import admin_headers as admin_headers
from tests.serving.conftest import copy_pipeline_registry as copy_pipeline_registry
from tests.serving.conftest import make_tx as make_tx
from tests.serving.conftest import raw_transactions as raw_transactions
from tests.serving.conftest import registry_copy as registry_copy
from tests.serving.conftest import servers as servers
from tests.serving.conftest import use_tracking_uri as use_tracking_uri
from tests.serving.redis_server import REDIS_SERVER

#: Seconds a backend server may take to start on a busy 2-core machine.
START_TIMEOUT = 60.0


#: Seconds a server may take to become ready: ~5 s on an idle machine, but other suites run
#: beside these ones (the serving tests' 60 s was seen too short at a load average of 15).
READY_TIMEOUT = 240.0


def start_server(pool: ServerPool, tracking_uri: str, **kw: Any) -> LiveServer:
    """`pool.start(...)`, waiting up to READY_TIMEOUT for /ready."""
    server = pool.start(tracking_uri, wait=False, **kw)
    server.wait_ready(timeout=READY_TIMEOUT)
    return server


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the module's tests (each test creates its own database)."""
    with postgres_server() as server:
        yield server


class PersistentRedis:
    """`redis-server` on a fixed free port with an append-only file fsynced on every write:
    `stop()` then `start()` brings it back with every key it had."""

    def __init__(self, workdir: Path) -> None:
        if REDIS_SERVER is None:
            pytest.skip("redis-server is not installed (Debian package redis-server)")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redis

        assert REDIS_SERVER is not None
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with (self.workdir / "redis.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    REDIS_SERVER,
                    *("--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "yes", "--appendfsync", "always"),
                    *("--dir", str(self.workdir)),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                client = redis.Redis.from_url(self.url, socket_timeout=2)
                client.ping()
                # After a restart Redis answers LOADING until the append-only file is read.
                client.dbsize()
                client.close()
                return
            except redis.RedisError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start: {(self.workdir / 'redis.log').read_text()}"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[PersistentRedis]:
    """A running `PersistentRedis` of the test's own; stopped at the end."""
    server = PersistentRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
