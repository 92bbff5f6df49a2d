"""The demo's long-running processes: the Prefect server, the worker that serves the retraining
deployment, and the prediction API. Each is a subprocess of the demo with its output in
`logs/<name>.log`; a service that dies or does not come up is an error quoting its log's tail."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from monitoring.demo.sandbox import Sandbox


class ServiceError(RuntimeError):
    """A service did not start or died; the message quotes its log."""


def free_port() -> int:
    """A TCP port nothing listens on now (on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text[-lines:])


@dataclass
class Service:
    """A subprocess of the demo, with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    url: str

    def alive(self) -> bool:
        return self.proc.poll() is None

    def failure(self, what: str) -> ServiceError:
        return ServiceError(
            f"{self.name} {what}; the end of {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> float:
        """Seconds until `ready()` held; raises ServiceError if the process exits or time is up."""
        t0 = time.monotonic()
        while True:
            if not self.alive():
                raise self.failure(f"exited with code {self.proc.returncode} before {what}")
            try:
                if ready():
                    return time.monotonic() - t0
            except (httpx.HTTPError, OSError):
                pass
            if time.monotonic() - t0 > timeout:
                raise self.failure(f"did not get to {what} within {timeout:.0f} s")
            time.sleep(0.5)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start(name: str, argv: list[str], sandbox: Sandbox, env: dict[str, str], url: str) -> Service:
    log_path = sandbox.logs / f"{name}.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            argv, cwd=sandbox.root, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return Service(name, proc, log_path, url)


def _ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


def start_prefect_server(sandbox: Sandbox, port: int, timeout: float = 180) -> Service:
    """`prefect server start` on 127.0.0.1:`port`, its database in the sandbox."""
    url = f"http://127.0.0.1:{port}/api"
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
    env = sandbox.env(PREFECT_SERVER_ANALYTICS_ENABLED="false")
    service = start("prefect-server", [*argv, "--port", str(port)], sandbox, env, url)
    service.wait_until(lambda: _ok(f"{url}/health"), timeout, "answering /api/health")
    return service


def deployment_exists(api_url: str, name: str) -> bool:
    """Whether the Prefect server at `api_url` has the deployment `flow/deployment`."""
    flow_name, deployment = name.split("/", 1)
    r = httpx.get(f"{api_url}/deployments/name/{flow_name}/{deployment}", timeout=5)
    return r.status_code == 200


def start_retraining_worker(
    sandbox: Sandbox, api_url: str, deployment: str, timeout: float = 180
) -> Service:
    """`python -m pipelines.deploy` serving the retraining deployment on the sandbox's data."""
    argv = [
        sys.executable,
        "-m",
        "pipelines.deploy",
        "--params",
        str(sandbox.params),
        "--repo",
        str(sandbox.root),
        "--workdir",
        str(sandbox.root / "runs" / "retrain"),
    ]
    # The served process polls for runs every PREFECT_RUNNER_POLL_FREQUENCY seconds (10 by
    # default): 2 s, so that a triggered retraining starts at once.
    env = sandbox.env(PREFECT_API_URL=api_url, PREFECT_RUNNER_POLL_FREQUENCY="2")
    service = start("retraining-worker", argv, sandbox, env, api_url)
    service.wait_until(
        lambda: deployment_exists(api_url, deployment), timeout, f"serving {deployment}"
    )
    return service


def start_api(
    sandbox: Sandbox, port: int, reload_poll_seconds: float, timeout: float = 180
) -> Service:
    """The prediction API on 127.0.0.1:`port`: the sandbox's champion, its log, an alias poll."""
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(port)]
    env = sandbox.env(FRAUD_RELOAD_POLL_SECONDS=str(reload_poll_seconds))
    service = start("api", argv, sandbox, env, url)
    service.wait_until(lambda: _ok(f"{url}/ready"), timeout, "ready (/ready: a model loaded)")
    return service
