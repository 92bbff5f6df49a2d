"""The README's DVC commands work as a new user types them: in a clone where `make run` has
run (here: the tiny pipeline), in a shell that did only what the README says."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import OFFLINE_ENV, ROOT

ACTIVATE = "source .venv/bin/activate"
# Files of the repository that the commands use besides the pipeline's (make plots: the Makefile).
CLONE_FILES = ("Makefile", "constraints.txt", "offline.env")


def everyday_dvc_commands(readme: str) -> list[str]:
    """The command lines of the ```bash block that follows "Everyday DVC"."""
    start = readme.index("Everyday DVC")
    block = re.search(r"```bash\n(.*?)```", readme[start:], re.S)
    assert block, 'no ```bash block after "Everyday DVC" in README.md'
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_says_to_activate_the_venv_before_its_dvc_commands():
    readme = (ROOT / "README.md").read_text()
    assert readme.index(ACTIVATE) < readme.index("Everyday DVC")
    assert everyday_dvc_commands(readme)[0].startswith("dvc repro")


def _as_a_clone(repo: Path) -> None:
    """What a clone after `make run` has besides the pipeline: the Makefile, the venv, npm's
    vega builds (installed by the first `make plots`; shared, so that no test needs npm)."""
    for name in CLONE_FILES:
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, repo / name)
    venv = repo / ".venv"
    venv.mkdir()
    for entry in Path(sys.prefix).iterdir():  # links to the test venv: nothing installed
        (venv / entry.name).symlink_to(entry)
    (venv / ".installed").unlink(missing_ok=True)
    (venv / ".installed").touch()  # newer than pyproject.toml: make does not reinstall
    if (ROOT / ".cache" / "vega").is_dir():
        (repo / ".cache").mkdir()
        (repo / ".cache" / "vega").symlink_to(ROOT / ".cache" / "vega")


@pytest.mark.slow
def test_everyday_dvc_commands_run_as_written(pipeline_copy):
    assert sys.prefix != sys.base_prefix, "the tests run in the project's venv"
    repo = pipeline_copy.path
    _as_a_clone(repo)
    pipeline_copy.run("git", "add", "-A")
    pipeline_copy.run("git", "commit", "-qm", "the rest of the repository")
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    # A user's shell: no venv on PATH, no MLflow or Prefect settings; only the telemetry switches
    # (calls this machine refuses) and a git author, not offline.env's paths into this checkout.
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))},
        **{k: v for k, v in OFFLINE_ENV.items() if str(ROOT) not in v},
        "PATH": path,
    }
    env.pop("VIRTUAL_ENV", None)
    failed = []
    for command in everyday_dvc_commands((ROOT / "README.md").read_text()):
        proc = subprocess.run(
            ["bash", "-c", f"{ACTIVATE} && {command}"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            failed.append(
                f"$ {command}\nexit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            )
    assert not failed, "README commands that fail as written:\n\n" + "\n\n".join(failed)
    assert (repo / "mlflow.db").is_file(), "the README's default MLflow store is in the project"
