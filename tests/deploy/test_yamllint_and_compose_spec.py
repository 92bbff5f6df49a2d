"""The YAML the platform ships is checked offline: yamllint on all of it, and compose.yaml
against the Compose specification (compose-spec parses it strictly: no Docker needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from compose_spec import PyCompose

ROOT = Path(__file__).resolve().parents[2]
YAML_FILES = [
    ROOT / "compose.yaml",
    ROOT / "dvc.yaml",
    ROOT / "params.yaml",
    ROOT / ".yamllint.yaml",
    *sorted((ROOT / ".github").rglob("*.yml")),
]


def test_repository_yaml_passes_yamllint():
    files = [str(p) for p in YAML_FILES if p.exists()]
    assert len(files) >= 4
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-c", str(ROOT / ".yamllint.yaml"), *files],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_follows_the_compose_specification():
    compose = PyCompose.from_yaml((ROOT / "compose.yaml").read_text())
    assert set(compose.service_names()) == {"api", "mlflow"}


def test_compose_api_service_is_hardened_and_talks_to_the_mlflow_server():
    api = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["api"]
    assert api["read_only"] is True
    assert api["cap_drop"] == ["ALL"]
    # The image has MLflow's client only: the registry must be an MLflow server.
    assert api["environment"]["MLFLOW_TRACKING_URI"].startswith("http://mlflow:")
    assert all(p.startswith("127.0.0.1:") for p in api["ports"])


@pytest.mark.parametrize(
    ("change", "expected"),
    [(("read_only:", "read_onyl:"), "read_onyl"), (("cap_drop:", "cap_drops:"), "cap_drops")],
)
def test_compose_validation_rejects_a_misspelt_key(change, expected):
    """The check above can fail: a typo in a service key is refused, naming the key."""
    text = (ROOT / "compose.yaml").read_text().replace(*change)
    with pytest.raises(ValueError, match=expected):
        PyCompose.from_yaml(text)
