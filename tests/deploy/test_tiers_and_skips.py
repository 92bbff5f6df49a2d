"""tests/conftest.py's hooks, run by a real pytest in a subprocess on small generated test files:
every test gets one tier marker (what `make test-fast` selects), and skipped tests are listed in
a block at the end of the run, with the command that installs what they need, and fail the run
when CI is set."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Each test runs pytest in a subprocess: not in-process, so not in the unit tier.
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

SKIPPING_TESTS = """
import pytest

def test_runs():
    pass

@pytest.mark.skipif(True, reason="redis-server is not installed (Debian package redis-server)")
def test_needs_redis():
    pass

def test_needs_redis_too():
    pytest.skip("redis-server is not installed (Debian package redis-server)")

@pytest.mark.skipif(True, reason="podman is not installed")
def test_needs_podman():
    pass

@pytest.mark.xfail(reason="a known bug, not a missing package")
def test_known_bug():
    assert False
"""


def run_pytest(
    tmp_path: Path, files: dict[str, str], *args: str, ci: str | None = None
) -> subprocess.CompletedProcess[str]:
    """pytest with the project's conftest as a plugin, on `files` written under `tmp_path`."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    # Only the hooks under test: other installed plugins (hypothesis, anyio, ...) take 5 s to load.
    env.update(PYTHONPATH=str(ROOT), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    if ci is not None:
        env["CI"] = ci
    plugins = ["-p", "tests.conftest", "-p", "no:cacheprovider"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", *plugins, "-ra", "--rootdir", str(tmp_path), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_skipped_tests_are_listed_by_reason_at_the_end_with_the_install_command(tmp_path):
    proc = run_pytest(tmp_path, {"test_some.py": SKIPPING_TESTS})

    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    block = out[out.index(" 3 TESTS DID NOT RUN (skipped) ") :]
    # After pytest's own short summary, before its last line.
    assert out.index("short test summary info") < out.index(block)
    assert "    2  redis-server is not installed (Debian package redis-server)" in block
    assert "in test_some.py (2)" in block
    assert "    1  podman is not installed" in block
    assert "make system-deps" in block
    assert "known bug" not in block  # an expected failure is not a test that did not run
    assert "CI is set" not in block
    assert block.rstrip().splitlines()[-1].startswith("=") and "1 passed, 3 skipped" in block


def test_a_skipped_test_fails_the_run_when_ci_is_set(tmp_path):
    proc = run_pytest(tmp_path, {"test_some.py": SKIPPING_TESTS}, ci="true")

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "CI is set: a skipped test fails the run" in proc.stdout


def test_a_run_without_skips_passes_with_ci_set_and_prints_no_block(tmp_path):
    proc = run_pytest(tmp_path, {"test_some.py": "def test_runs():\n    pass\n"}, ci="true")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "DID NOT RUN" not in proc.stdout


def test_ci_set_to_false_is_not_ci(tmp_path):
    proc = run_pytest(tmp_path, {"test_some.py": SKIPPING_TESTS}, ci="false")

    assert proc.returncode == 0, proc.stdout + proc.stderr


TIERED_TESTS = {
    "test_plain.py": "def test_plain():\n    pass\n",
    "test_services.py": """
        import pytest

        @pytest.fixture
        def redis_url():
            return "redis://127.0.0.1:6379/0"

        @pytest.fixture
        def store(redis_url):
            return redis_url

        @pytest.fixture(params=["sqlite", "postgres"])
        def target(request):
            return request.param

        def test_store(store):
            pass

        def test_log(target):
            pass

        @pytest.mark.container
        def test_image():
            pass

        @pytest.mark.integration
        def test_marked_by_hand():
            pass
    """,
    "e2e/test_pipeline.py": "def test_repro():\n    pass\n",
}


#: Prints each collected test's tier markers, after tests/conftest.py has assigned them.
PRINT_TIERS = """
def pytest_collection_finish(session):
    for item in session.items:
        tiers = [m.name for m in item.iter_markers() if m.name != "parametrize"]
        print("TIERS", item.nodeid, ",".join(tiers))
"""


def test_each_test_gets_the_tier_of_its_directory_fixtures_and_parameters(tmp_path):
    proc = run_pytest(tmp_path, {**TIERED_TESTS, "conftest.py": PRINT_TIERS}, "--collect-only")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    tiers = dict(line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("TIERS"))
    assert tiers == {
        "test_plain.py::test_plain": "unit",
        "test_services.py::test_store": "integration",  # redis_url through another fixture
        "test_services.py::test_log[sqlite]": "unit",
        "test_services.py::test_log[postgres]": "integration",
        "test_services.py::test_image": "container",
        "test_services.py::test_marked_by_hand": "integration",
        "e2e/test_pipeline.py::test_repro": "e2e",
    }
