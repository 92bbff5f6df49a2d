"""`python -m monitoring.ui --workspace DIR`: the Evidently UI on the monitoring workspace.

Starts `evidently ui` with the offline-safe environment (no telemetry), after making sure the
project and its dashboard exist, and prints the project's URL. `make dashboards` runs it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

#: What `evidently ui` and the libraries under it need to stay quiet offline.
OFFLINE_ENV = {
    "DO_NOT_TRACK": "true",  # Evidently's own usage events
    "ITERATIVE_DO_NOT_TRACK": "1",  # iterative-telemetry, which Evidently's logger uses
}


def ui_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with the offline settings forced on."""
    return {**(os.environ if base is None else base), **OFFLINE_ENV}


def ui_command(workspace: str | Path, host: str, port: int) -> list[str]:
    """The `evidently ui` command line, run by this interpreter (the venv's Evidently)."""
    return [
        sys.executable,
        "-m",
        "evidently.cli",
        "ui",
        "--workspace",
        str(workspace),
        "--host",
        host,
        "--port",
        str(port),
    ]


def project_url(host: str, port: int, project_id: object) -> str:
    return f"http://{host}:{port}/projects/{project_id}"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.ui",
        description="Start the Evidently UI on the monitoring workspace (offline-safe).",
    )
    parser.add_argument("--workspace", required=True, type=Path, help="workspace directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", default=8085, type=int, help="port (default 8085)")
    parser.add_argument(
        "--project", default=None, help="project name (default: the monitoring project)"
    )
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port: {args.port} is not a TCP port")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Ensure the project and its dashboard, print its URL, then become `evidently ui`."""
    args = _parse(argv)
    os.environ.update(OFFLINE_ENV)  # before Evidently is imported
    from monitoring.dashboard import PROJECT_NAME, get_or_create_project, open_workspace

    ws = open_workspace(args.workspace)
    project = get_or_create_project(ws, args.project or PROJECT_NAME)
    print(f"Evidently UI for {project.name!r}: {project_url(args.host, args.port, project.id)}")
    sys.stdout.flush()
    command = ui_command(args.workspace, args.host, args.port)
    os.execve(command[0], command, ui_environment())


if __name__ == "__main__":
    main()
