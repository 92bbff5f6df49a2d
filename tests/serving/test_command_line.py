"""`python -m serving`: where it listens, how many workers and at what log level come from
`ServingSettings` (`FRAUD_HOST`, `FRAUD_PORT`, `FRAUD_WORKERS`, `FRAUD_LOG_LEVEL`), validated
before anything starts, with the command line's flags overriding them."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import uvicorn
from pydantic import ValidationError

import serving.__main__ as command
from serving import feature_store
from serving.settings import ServingSettings


def run_serving(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    return subprocess.run(
        [sys.executable, "-m", "serving", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def uvicorn_run(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What `main()` would start uvicorn with (uvicorn is not started)."""
    for name in list(os.environ):
        if name.startswith("FRAUD_"):
            monkeypatch.delenv(name)
    called: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: called.update(app=app, **kw))
    # Nor is Redis asked whether it answers (tests/reliability/test_faults.py runs that check
    # for real, with Redis down).
    monkeypatch.setattr(feature_store, "check_reachable", lambda url: called.update(redis=url))
    # main() exports what it resolved, for the workers: setenv then delenv makes monkeypatch
    # put each of these back as it was before the test, set or not.
    for name in ("FRAUD_HOST", "FRAUD_PORT", "FRAUD_WORKERS", "FRAUD_LOG_LEVEL"):
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    return called


def test_defaults_are_one_worker_on_localhost_8000_logging_warnings(uvicorn_run, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["serving"])
    command.main()
    assert uvicorn_run["app"] == "serving.app:create_app"
    assert (uvicorn_run["host"], uvicorn_run["port"]) == ("127.0.0.1", 8000)
    assert (uvicorn_run["workers"], uvicorn_run["log_level"]) == (1, "warning")


def test_environment_sets_host_port_workers_and_log_level(uvicorn_run, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["serving"])
    for name, value in {
        "FRAUD_HOST": "0.0.0.0",
        "FRAUD_PORT": "9100",
        "FRAUD_WORKERS": "3",
        "FRAUD_LOG_LEVEL": "INFO",
        "FRAUD_FEATURE_STORE": "redis://127.0.0.1:6379/0",
    }.items():
        monkeypatch.setenv(name, value)
    command.main()
    assert (uvicorn_run["host"], uvicorn_run["port"]) == ("0.0.0.0", 9100)
    assert (uvicorn_run["workers"], uvicorn_run["log_level"]) == (3, "info")
    assert uvicorn_run["redis"] == "redis://127.0.0.1:6379/0"  # checked before starting


def test_flags_override_the_environment_and_the_workers_see_the_result(uvicorn_run, monkeypatch):
    monkeypatch.setenv("FRAUD_PORT", "9100")
    monkeypatch.setenv("FRAUD_WORKERS", "4")  # memory store: only valid once --workers 1 wins
    monkeypatch.setattr(
        sys, "argv", ["serving", "--port", "9200", "--workers", "1", "--log-level", "debug"]
    )
    command.main()
    assert (uvicorn_run["port"], uvicorn_run["workers"]) == (9200, 1)
    assert uvicorn_run["log_level"] == "debug"
    # Each worker builds the app's settings from the environment: they must agree.
    assert ServingSettings().workers == 1
    assert os.environ["FRAUD_PORT"] == "9200"


def test_more_than_one_worker_on_the_in_process_store_is_refused_naming_the_setting():
    r = run_serving("--workers", "2")
    assert r.returncode == 2
    assert "FRAUD_FEATURE_STORE" in r.stderr and "2 workers" in r.stderr, r.stderr
    r = run_serving(FRAUD_WORKERS="2")
    assert r.returncode == 2
    assert "FRAUD_FEATURE_STORE" in r.stderr, r.stderr


@pytest.mark.parametrize(
    "env",
    [
        {"FRAUD_WORKERS": "0"},
        {"FRAUD_PORT": "70000"},
        {"FRAUD_PORT": "eighty"},
        {"FRAUD_LOG_LEVEL": "loud"},
    ],
)
def test_invalid_setting_is_refused_before_start_naming_its_variable(env: dict[str, str]):
    r = run_serving(**env)
    assert r.returncode == 2
    (name,) = env
    assert f"error: {name}:" in r.stderr, r.stderr


def test_settings_reject_several_workers_without_a_shared_store():
    with pytest.raises(ValidationError, match="FRAUD_FEATURE_STORE"):
        ServingSettings(workers=2)
    assert ServingSettings(workers=2, feature_store="redis://127.0.0.1:6379/0").workers == 2


def test_help_lists_every_setting_of_the_settings_class():
    r = run_serving("--help")
    assert r.returncode == 0, r.stderr
    for name in ServingSettings.model_fields:
        assert f"FRAUD_{name.upper()} " in r.stdout, name
    for flag in ("--host", "--port", "--workers", "--log-level"):
        assert flag in r.stdout
