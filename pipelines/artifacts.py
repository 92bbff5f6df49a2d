"""Atomic writes: a stage that fails leaves its previous outputs intact.

Every stage output is written to a temporary file beside its target and renamed over it only
once complete (rename is atomic on POSIX), and the DVC stages mark their outputs `persist` so that
DVC does not delete them before running the stage.

A writer killed between the two (SIGKILL, power loss) leaves its temporary file behind; its name
holds the host and process id of its writer, and the next write of the same target removes the
temporary files of writers on this host that are gone, so that an interrupted stage leaves no
stray copy of an output for `git add` to pick up once it has run again.
"""

from __future__ import annotations

import glob
import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd


def _writer_tag() -> str:
    """This process's part of a temporary file's name: `<host>-<pid>` (no dots)."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
    return f"{host}-{os.getpid()}"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporaries(target: str | Path) -> list[Path]:
    """Remove the temporary files of `target` left by writers on this host that no longer
    run (killed half-way); returns them. Writers elsewhere, and live ones, are left alone."""
    target = Path(target)
    host = _writer_tag().rsplit("-", 1)[0]
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.{re.escape(host)}-(\d+)\.[^.]+\.tmp$")
    removed = []
    for path in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        found = pattern.match(path.name)
        if found and not _process_exists(int(found.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces `target`, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.{_writer_tag()}.", suffix=".tmp", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600 files: give outputs the usual permissions (umask applies).
    umask = os.umask(0)
    os.umask(umask)
    tmp_path.chmod(0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_parquet(df: pd.DataFrame, target: str | Path) -> None:
    with atomic_path(target) as tmp:
        df.to_parquet(tmp, index=False)


def write_json(obj: Any, target: str | Path) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_text(text: str, target: str | Path) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
