"""Run wrk and parse what it prints."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common.machine import children_cpu_s

LUA_DIR = Path(__file__).resolve().parent / "lua"
TRANSACTIONS_LUA = LUA_DIR / "transactions.lua"
BODIES_LUA = LUA_DIR / "bodies.lua"

_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_DURATION = r"([\d.]+)(us|ms|s|m|h)"


@dataclass
class WrkResult:
    """One wrk run, as wrk reports it (latencies in milliseconds)."""

    label: str
    url: str
    connections: int
    threads: int
    duration_s: float
    per_request: int = 1  # transactions per request (batch size, or 1)
    requests: int = 0
    elapsed_s: float = 0.0
    rps: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)  # "50%" -> ms, "99%" -> ms
    socket_errors: dict[str, int] = field(default_factory=dict)  # connect/read/write/timeout
    non_2xx: int = 0  # "Non-2xx or 3xx responses"
    wrk_rc: int = 0
    wrk_cpu_s: float = 0.0  # CPU-seconds wrk itself used
    server_cpu_s: float = 0.0  # CPU-seconds the server's processes (and its Redis) used
    server_process_cores: list[float] = field(default_factory=list)  # per process, busiest first
    uneven: bool = False  # fewer workers than configured did the work (connection placement)
    discarded: list[dict[str, Any]] = field(default_factory=list)  # earlier uneven attempts
    other_cpu_s: float = 0.0  # CPU-seconds every other process on the machine used
    steal_cpu_s: float = 0.0  # CPU-seconds stolen by the hypervisor (a VM's noisy neighbours)
    notes: list[str] = field(default_factory=list)
    output: str = ""

    @property
    def p50_ms(self) -> float | None:
        return self.latency_ms.get("50%")

    @property
    def p99_ms(self) -> float | None:
        return self.latency_ms.get("99%")

    @property
    def errors(self) -> int:
        """Non-2xx responses plus socket errors: a run with any is not a clean measurement."""
        return self.non_2xx + sum(self.socket_errors.values())

    @property
    def ok(self) -> bool:
        return self.wrk_rc == 0 and self.requests > 0 and self.errors == 0

    @property
    def cpu_ms_per_request(self) -> float | None:
        """The server's CPU time per completed request (for A, its Redis included)."""
        return self.server_cpu_s * 1e3 / self.requests if self.requests else None

    @property
    def tps(self) -> float:
        """Transactions per second (requests/s x transactions per request)."""
        return self.rps * self.per_request

    def error_text(self) -> str:
        parts = []
        if self.wrk_rc != 0:
            parts.append(f"wrk exited {self.wrk_rc}")
        if self.non_2xx:
            parts.append(f"{self.non_2xx} non-2xx")
        for kind, count in self.socket_errors.items():
            if count:
                parts.append(f"{count} socket {kind}")
        if self.requests == 0 and self.wrk_rc == 0:
            parts.append("no requests completed")
        return ", ".join(parts) or "0"


def to_ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_MS[unit]


def parse_wrk(output: str, result: WrkResult) -> WrkResult:
    """Fill `result` from wrk's text output (wrk 4.x with --latency)."""
    if m := re.search(r"(\d+) requests in " + _DURATION, output):
        result.requests = int(m.group(1))
        result.elapsed_s = to_ms(m.group(2), m.group(3)) / 1e3
    if m := re.search(r"Requests/sec:\s+([\d.]+)", output):
        result.rps = float(m.group(1))
    dist = output.split("Latency Distribution", 1)
    if len(dist) == 2:
        for m in re.finditer(r"^\s+(\d+)%\s+" + _DURATION + r"\s*$", dist[1], re.MULTILINE):
            result.latency_ms[f"{m.group(1)}%"] = to_ms(m.group(2), m.group(3))
    if m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        result.socket_errors = dict(
            zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True)
        )
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        result.non_2xx = int(m.group(1))
    return result


def wrk_path() -> str | None:
    return shutil.which("wrk")


def run_wrk(
    label: str,
    url: str,
    script: Path,
    script_args: list[str],
    *,
    connections: int,
    duration_s: float,
    threads: int = 1,
    timeout_s: float = 5.0,
    per_request: int = 1,
) -> WrkResult:
    """`wrk -tT -cC -dDs --timeout Xs --latency -s script url -- args`, parsed."""
    threads = max(1, min(threads, connections))
    cmd = [
        wrk_path() or "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        f"--timeout={timeout_s:g}s",
        "--latency",
        "-s",
        str(script),
        url,
        "--",
        *script_args,
    ]
    result = WrkResult(label, url, connections, threads, duration_s, per_request=per_request)
    cpu0 = children_cpu_s()  # wrk is the child that finishes in between
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=duration_s + timeout_s + 60
        )
        result.wrk_rc = proc.returncode
        result.output = proc.stdout + (f"\n[stderr]\n{proc.stderr}" if proc.stderr.strip() else "")
    except subprocess.TimeoutExpired as e:
        result.wrk_rc = -1
        result.output = f"wrk did not finish in time: {e}"
    result.wrk_cpu_s = children_cpu_s() - cpu0
    return parse_wrk(result.output, result)
