"""Start, watch and stop the servers under test (each in its own process group)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

import psutil


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status of GET `url`, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, ValueError):
        return None


def http_text(url: str, timeout: float = 5.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return str(r.read().decode("utf-8", "replace"))
    except (OSError, ValueError):
        return None


class Service:
    """A server process started in its own session (process group), logging to a file.

    `ready` is a probe that returns True once the server answers as ready. `stop()` sends
    SIGTERM to the whole group (uvicorn's workers, MLflow's uvicorn child), then SIGKILL.
    """

    def __init__(
        self,
        name: str,
        cmd: list[str],
        *,
        env: dict[str, str],
        cwd: Path,
        log_path: Path,
        ready: Callable[[], bool],
        workers: int = 1,
    ) -> None:
        self.name = name
        self.workers = workers  # worker processes expected to share the load
        self.cmd = cmd
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.ready = ready
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._t0 = 0.0
        self.startup_s: float | None = None
        self.start_error: str | None = None

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        try:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends all of it
            )
        except OSError as e:  # e.g. the program is not installed
            self.start_error = f"could not run {self.cmd[0]}: {e}"
            self._log.write(self.start_error.encode() + b"\n")

    def wait_ready(self, timeout_s: float, consecutive: int = 3) -> str | None:
        """Poll until `ready()` holds `consecutive` times in a row (with several workers, each
        probe may reach another one). None when ready; else why it is not."""
        if self.proc is None:
            return self.start_error or "not started"
        deadline = self._t0 + timeout_s
        streak = 0
        while time.perf_counter() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                return f"exited with code {rc} before it was ready"
            if self.ready():
                streak += 1
                if streak >= consecutive:
                    self.startup_s = time.perf_counter() - self._t0
                    return None
                time.sleep(0.05)
                continue
            streak = 0
            time.sleep(0.25)
        return f"not ready after {timeout_s:.0f} s"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        """The leader and all its descendants, now."""
        if not self.running():
            return []
        assert self.proc is not None
        try:
            p = psutil.Process(self.proc.pid)
            return [p.pid, *(c.pid for c in p.children(recursive=True))]
        except psutil.Error:
            return []

    def cpu_by_pid(self) -> dict[int, float]:
        """CPU-seconds used so far by each live process of this service."""
        out: dict[int, float] = {}
        for pid in self.pids():
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(pid).cpu_times()
                out[pid] = float(t.user + t.system)
        return out

    def cpu_s(self) -> float:
        """CPU-seconds used so far by the processes of this service that are still alive."""
        return sum(self.cpu_by_pid().values())

    def stop(self, grace_s: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(proc.pid, sig)  # the group this harness created for it
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    # The leader is gone; make sure no worker of its group outlived it.
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []


def redis_command(port: int, *args: str, timeout: float = 2.0) -> str | None:
    """One Redis command over RESP; the reply's first line without its type byte (None when
    nothing answers). Enough for PING and DBSIZE, no client library needed."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(payload.encode())
            data = b""
            while not data.endswith(b"\r\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    line = data.split(b"\r\n", 1)[0].decode(errors="replace")
    return line[1:] if line else None


def redis_service(port: int, workdir: Path) -> Service:
    """`redis-server` on 127.0.0.1:port with no persistence, its files in `workdir`."""
    cmd = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
    ]
    return Service(
        "redis",
        cmd,
        env=dict(os.environ),
        cwd=workdir,
        log_path=workdir / "redis.log",
        ready=lambda: redis_command(port, "PING") == "PONG",
    )
