"""The project the benchmarks measure: where it is, the environment its tools run in, and which
commit (and which uncommitted changes) a run measured.

A benchmark run as a script (`python benchmarks/pipeline_bench.py`) has only its own folder on
`sys.path`: it puts the project root there itself, in one line, before it imports this module.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Where the benchmarks write their JSON results by default (git-ignored).
RESULTS_DIR = ROOT / "benchmarks" / "results"
#: The project's offline-safe defaults, as the Makefile, CI and the tests read them.
OFFLINE_ENV_FILE = ROOT / "offline.env"
PROJECT_ROOT_PLACEHOLDER = "${PROJECT_ROOT}"


def offline_env(project_root: Path) -> dict[str, str]:
    """offline.env's KEY=value pairs for a project at `project_root` (a benchmark's temporary
    copy, or ROOT): its `${PROJECT_ROOT}` made that path."""
    out: dict[str, str] = {}
    for line in OFFLINE_ENV_FILE.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier() and key.isupper():
            out[key] = value.replace(PROJECT_ROOT_PLACEHOLDER, str(project_root))
    return out


def git_head() -> str:
    """The short hash of the commit checked out in ROOT ("unknown" without git)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"


def git_dirty(paths: Iterable[str]) -> list[str]:
    """`git status --porcelain` lines for `paths`: the uncommitted changes a run measured."""
    try:
        return subprocess.run(
            ["git", "status", "--porcelain", "--", *paths],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
    except OSError:
        return []
