"""offline.env is the one home of the offline-safe defaults: the Makefile, .ci/run, the GitHub
workflow, tests/conftest.py and the benchmarks each read it and make its `${PROJECT_ROOT}` their
own root; all but the benchmarks keep a value already set in the environment. Each reader runs
here on a project copy whose offline.env holds variables that no reader could know unless it read
the file."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KEY_LINE = re.compile(r"^([A-Z_][A-Z0-9_]*)=(.*)$")

# What the project copy's offline.env holds: a path under the project, a value with "=" in it,
# and one the environment overrides (OVERRIDDEN).
TEST_ENV_FILE = """\
# comment lines and blank lines are skipped

FRAUD_TEST_STORE=sqlite:///${PROJECT_ROOT}/store.db
FRAUD_TEST_FLAGS=a=b,c
# overridden by the environment in every test
FRAUD_TEST_OVERRIDDEN=from-file
"""
OVERRIDE = {"FRAUD_TEST_OVERRIDDEN": "from-environment"}


def expected(project: Path) -> dict[str, str]:
    return {
        "FRAUD_TEST_STORE": f"sqlite:///{project}/store.db",
        "FRAUD_TEST_FLAGS": "a=b,c",
        "FRAUD_TEST_OVERRIDDEN": "from-environment",
    }


def real_keys() -> list[str]:
    lines = (ROOT / "offline.env").read_text().splitlines()
    return [m.group(1) for line in lines if (m := KEY_LINE.match(line))]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any variable of offline.env (so defaults show), plus `extra`."""
    keys = set(real_keys())
    return {**{k: v for k, v in os.environ.items() if k not in keys}, **extra}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "offline.env").write_text(TEST_ENV_FILE)
    return tmp_path


def parse_env_lines(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for line in text.splitlines() if (m := KEY_LINE.match(line))}


def test_offline_env_gives_a_reason_for_each_variable_and_no_machine_path():
    lines = (ROOT / "offline.env").read_text().splitlines()
    keys = real_keys()
    assert {"MLFLOW_DISABLE_TELEMETRY", "DVC_NO_ANALYTICS", "PREFECT_HOME"} <= set(keys)
    for i, line in enumerate(lines):
        if KEY_LINE.match(line):
            assert i > 0 and lines[i - 1].startswith("# "), f"no comment above {line!r}"
            value = line.split("=", 1)[1]
            assert " " not in value and not value.startswith(("'", '"')), line
            # A path of this machine would be absolute: paths start from the placeholder.
            assert not value.startswith("/") and ":////" not in value, line


def test_makefile_exports_the_files_variables_and_the_environment_overrides_them(project):
    shutil.copy(ROOT / "Makefile", project / "Makefile")
    proc = subprocess.run(
        ["make", "-s", "print-env"],
        cwd=project,
        env=clean_env(**OVERRIDE),
        capture_output=True,
        text=True,
        check=True,
    )
    assert parse_env_lines(proc.stdout) == expected(project)


def test_make_print_env_lists_every_variable_of_the_real_file():
    proc = subprocess.run(
        ["make", "-s", "print-env"],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    printed = parse_env_lines(proc.stdout)
    assert list(printed) == real_keys()
    assert printed["PREFECT_HOME"] == f"{ROOT}/.prefect"
    assert "(unset)" not in printed.values()


def ci_run_env_block() -> str:
    """The environment block of .ci/run: from its comment to the end of the loop over the file."""
    text = (ROOT / ".ci" / "run").read_text()
    m = re.search(
        r"^# Offline-safe defaults from offline\.env.*?^done <offline\.env$", text, re.M | re.S
    )
    assert m, ".ci/run no longer reads offline.env in its environment block"
    return m.group(0)


def test_ci_run_exports_the_files_variables_and_keeps_the_environments(project):
    script = (
        f"set -euo pipefail\nREPO_ROOT={project}\n{ci_run_env_block()}\n"
        'python3 -c "import json, os; print(json.dumps(dict(os.environ)))"\n'
    )
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=project,
        env=clean_env(**OVERRIDE),
        capture_output=True,
        text=True,
        check=True,
    )
    env = json.loads(proc.stdout)
    assert {k: env.get(k) for k in expected(project)} == expected(project)


def workflow() -> dict:
    return yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())


def runs_ci_script(job: str) -> bool:
    """Whether the job's only project command is `bash .ci/run`, which loads offline.env itself
    (the `.ci/run` test above checks that), after at most the installs of pinned tools."""
    runs = [s["run"].strip() for s in workflow()["jobs"][job]["steps"] if "run" in s]
    tools = [r for r in runs[:-1] if r.startswith("bash .github/scripts/install-")]
    return bool(runs) and runs[-1] == "bash .ci/run" and tools == runs[:-1]


def checks_out(job: str) -> bool:
    """Whether the job has the repository (a job that never checks it out runs none of it)."""
    return any(
        str(s.get("uses", "")).startswith("actions/checkout")
        for s in workflow()["jobs"][job]["steps"]
    )


@pytest.mark.parametrize(
    "job",
    sorted(j for j in workflow()["jobs"] if checks_out(j) and not runs_ci_script(j)),
)
def test_every_workflow_job_loads_the_file_before_its_commands(job, project):
    steps = workflow()["jobs"][job]["steps"]
    checkout = next(
        i for i, s in enumerate(steps) if str(s.get("uses", "")).startswith("actions/checkout")
    )
    first_run = next(i for i, s in enumerate(steps) if "run" in s)
    assert first_run == checkout + 1, f"{job}: a command runs before offline.env is loaded"
    github_env = project / "github_env"
    subprocess.run(
        ["bash", "-e", "-c", steps[first_run]["run"]],
        cwd=project,
        env=clean_env(**OVERRIDE, GITHUB_ENV=str(github_env), GITHUB_WORKSPACE=str(project)),
        check=True,
    )
    # The overridden variable is not written: the value already set stays.
    want = {k: v for k, v in expected(project).items() if k not in OVERRIDE}
    assert parse_env_lines(github_env.read_text()) == want


def test_the_workflow_does_not_set_the_files_variables_itself():
    wf = workflow()
    keys = set(real_keys())
    blocks = [("workflow", wf.get("env") or {})]
    for name, job in wf["jobs"].items():
        blocks.append((name, job.get("env") or {}))
        blocks += [(f"{name} step", s.get("env") or {}) for s in job["steps"]]
    for where, env in blocks:
        assert not keys & set(env), f"{where} sets {sorted(keys & set(env))}: offline.env has them"


def test_conftest_sets_the_files_variables_as_defaults(project):
    (project / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", project / "tests" / "conftest.py")
    code = (
        "import json, os, runpy; runpy.run_path('tests/conftest.py'); "
        "print(json.dumps(dict(os.environ)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=project,
        env=clean_env(**OVERRIDE),
        capture_output=True,
        text=True,
        check=True,
    )
    env = json.loads(proc.stdout)
    assert {k: env.get(k) for k in expected(project)} == expected(project)


def test_the_benchmarks_apply_the_file_to_the_project_they_run(tmp_path):
    from benchmarks.common.project import offline_env

    lines = (ROOT / "offline.env").read_text().replace("${PROJECT_ROOT}", str(tmp_path))
    assert offline_env(tmp_path) == parse_env_lines(lines)
    assert offline_env(tmp_path)["PREFECT_HOME"] == f"{tmp_path}/.prefect"
