"""The machine a benchmark runs on: the CPU-seconds used by this process, its children, the
whole machine and the hypervisor's other guests (so that a run can say how much other work
competed with it), waiting for the machine to be quiet, and what it is, for the results."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import resource
import subprocess
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console

from benchmarks.common.project import ROOT
from benchmarks.common.report import GIB


def busy_cpu_s() -> float:
    """CPU-seconds the whole machine has been busy (all processes, all CPUs)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0))


def own_cpu_s() -> float:
    """CPU-seconds of this process alone (its children: `children_cpu_s`)."""
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def children_cpu_s() -> float:
    """CPU-seconds of this process's finished, waited-for children."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def steal_cpu_s() -> float:
    """CPU-seconds the hypervisor gave to other guests while this VM wanted to run."""
    return float(getattr(psutil.cpu_times(), "steal", 0.0))


def wait_for_idle(console: Console, limit: float, timeout: float) -> None:
    """Wait up to `timeout` seconds for the 1-minute load average to drop below `limit`."""
    t0 = time.monotonic()
    while timeout > 0 and os.getloadavg()[0] >= limit and time.monotonic() - t0 < timeout:
        console.print(f"waiting for load < {limit} (now {os.getloadavg()[0]:.2f}) ...")
        time.sleep(15)


def machine_info(packages: Iterable[str]) -> dict[str, Any]:
    """When and on what a run measured: date, host, CPUs, memory, Python and `packages`."""
    vm = psutil.virtual_memory()
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "mem_total_gib": round(vm.total / GIB, 1),
        "mem_available_gib": round(vm.available / GIB, 1),
        "python": platform.python_version(),
        "versions": {p: package_version(p) for p in packages},
    }


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def package_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def command_output(cmd: list[str]) -> str:
    """What `cmd` prints (stdout and stderr, stripped; "" when it cannot run), e.g. a version."""
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return ""
