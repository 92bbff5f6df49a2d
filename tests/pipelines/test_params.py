"""Code tests of params.yaml loading: the repository's file is valid, and a bad key fails with
its key path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from fraud.features import FeatureConfig
from fraud.simulator import SimulatorConfig
from pipelines.params import Params, ParamsError, load_params

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data = yaml.safe_load(REPO_PARAMS.read_text())
    assert isinstance(data, dict)
    return data


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_repository_params_yaml_loads_with_its_values(raw: dict[str, Any]) -> None:
    params = load_params(REPO_PARAMS)
    assert isinstance(params, Params)
    assert params.train.max_depth == raw["train"]["max_depth"]
    assert params.simulator == SimulatorConfig.model_validate(raw["simulator"])
    assert params.features == FeatureConfig.model_validate(raw["features"])
    assert params.validate_.max_amount == raw["validate"]["max_amount"]
    assert params.register_.gate.floors == raw["register"]["gate"]["floors"]
    assert params.evaluate.cost.model().missed_fraud == raw["evaluate"]["cost"]["missed_fraud"]


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        (("train", "max_depth"), "deep", "train.max_depth"),
        (("train", "max_depth"), 99, "train.max_depth"),
        (
            ("simulator", "scenarios", "large_amount", "threshold"),
            -1,
            "simulator.scenarios.large_amount.threshold",
        ),
        (("validate", "max_amount"), "lots", "validate.max_amount"),
        (("split", "train_start"), "someday", "split.train_start"),
        (("features", "customer_windows_days"), [0, 7], "features.customer_windows_days"),
    ],
)
def test_wrong_value_raises_params_error_naming_the_key_path(
    tmp_path: Path, raw: dict[str, Any], path: tuple[str, ...], value: object, key: str
) -> None:
    data = copy.deepcopy(raw)
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(ParamsError, match=rf"{key}: "):
        load_params(_write(tmp_path, data))


@pytest.mark.parametrize(
    ("section", "key"),
    [(("train",), "max_dept"), ((), "trian"), (("simulator", "scenarios"), "card_testing")],
)
def test_unknown_key_raises_params_error_naming_the_key_path(
    tmp_path: Path, raw: dict[str, Any], section: tuple[str, ...], key: str
) -> None:
    data = copy.deepcopy(raw)
    node = data
    for part in section:
        node = node[part]
    node[key] = 3
    with pytest.raises(ParamsError, match=r"Extra inputs are not permitted") as err:
        load_params(_write(tmp_path, data))
    assert ".".join([*section, key]) + ":" in str(err.value)


def test_missing_file_raises_params_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ParamsError, match="not found") as err:
        load_params(missing)
    assert str(missing) in str(err.value)


def test_invalid_yaml_raises_params_error(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train: {max_depth: 3\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(path)


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("")
    assert load_params(path) == Params()
