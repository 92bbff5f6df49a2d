"""Training with xgboost.dask on a real LocalCluster (2 worker processes), and the stages with
`compute.engine: dask`: the same kind of model and files as in process, an AP within a measured
tolerance, and a bad `compute` value refused with its key."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
import yaml
from dask.distributed import Client, LocalCluster

from fraud.metrics import average_precision
from fraud.registry import load_booster
from pipelines import stages
from pipelines.layout import Layout
from pipelines.params import Params, ParamsError, load_params
from pipelines.splits import TimeSplit, train_test_frames
from pipelines.train import TrainingError, predict, save_model
from pipelines.train_dask import DASK_EXACT_MAX_BIN, DASK_TREE_METHOD, train_model_on_dask
from tests.conftest import tiny_params_dict
from tests.dask_cluster import cluster_client, local_cluster

pytestmark = [pytest.mark.backends, pytest.mark.integration, pytest.mark.slow]

#: Largest |AP(dask) - AP(in process)| on the test window accepted. Measured on the tiny data
#: (tests/tiny_params.yaml: hist both ways; 2 workers, 4 partitions), simulator seeds 7, 8, 9:
#: gaps of -0.0159 (+0.0016 in another run: the rows' spread over the workers varies), +0.0022
#: and +0.0002, with 60-75 frauds in the test week, where one fraud ranked differently moves
#: AP by about 0.01. The tolerance allows a few such frauds (the default data's gap, exact in
#: process against hist with 4096 bins on Dask, is in docs/model.md).
AP_TOLERANCE = 0.04


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with local_cluster() as c:
        yield c


@pytest.fixture(scope="module")
def client(cluster: LocalCluster) -> Iterator[Client]:
    with cluster_client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def features_file(tmp_path_factory: pytest.TempPathFactory, tiny_features: pd.DataFrame) -> Path:
    path = tmp_path_factory.mktemp("dask-train") / "features.parquet"
    # Several row groups, as the Dask features stage writes them.
    tiny_features.to_parquet(path, index=False, row_group_size=10_000)
    return path


def _train_on_dask(
    client: Client, path: Path, params: Params, partitions: int = 4, **changes: Any
) -> tuple[xgb.Booster, Any]:
    return train_model_on_dask(
        client,
        path,
        params.features.feature_names(),
        params.split.split(),
        params.split.validation_days,
        params.train.model_copy(update=changes),
        params.evaluate.cost.model(),
        partitions,
    )


@pytest.fixture(scope="module")
def dask_model(client: Client, features_file: Path, tiny_params: Params) -> tuple[Any, Any]:
    return _train_on_dask(client, features_file, tiny_params)


def _test_ap(booster: xgb.Booster, features: pd.DataFrame, params: Params) -> float:
    _, test = train_test_frames(features, params.split.split())
    names = params.features.feature_names()
    return average_precision(test["TX_FRAUD"].to_numpy(), predict(booster, test, names))


def test_dask_model_scores_within_the_measured_tolerance_of_the_in_process_model(
    dask_model: tuple[Any, Any], tiny_model: tuple[Any, Any], tiny_features, tiny_params
) -> None:
    ap_dask = _test_ap(dask_model[0], tiny_features, tiny_params)
    ap_local = _test_ap(tiny_model[0], tiny_features, tiny_params)
    assert ap_local > 0.3  # a real model, not two equally useless ones
    assert abs(ap_dask - ap_local) <= AP_TOLERANCE, (ap_dask, ap_local)


def test_dask_model_is_a_plain_booster_with_the_same_attributes_and_protocol(
    dask_model: tuple[Any, Any], tiny_model: tuple[Any, Any], tiny_params, tmp_path: Path
) -> None:
    booster, result = dask_model
    local_booster, local_result = tiny_model
    assert isinstance(booster, xgb.Booster)
    assert booster.attr("features") == local_booster.attr("features")
    assert float(booster.attr("threshold") or "nan") == result.threshold
    assert 0 < result.threshold < 1
    # The same windows: the same rows trained on and validated on.
    assert (result.rows_train, result.frauds_train, result.rows_validation) == (
        local_result.rows_train,
        local_result.frauds_train,
        local_result.rows_validation,
    )
    assert booster.num_boosted_rounds() == tiny_params.train.n_estimators
    # Saved by the same code, in the native format, and loaded as the registry loads it.
    model_path, info_path = tmp_path / "model.ubj", tmp_path / "train_info.json"
    save_model(booster, result, model_path, info_path)
    assert model_path.read_bytes()[:1] == b"{"
    rows = np.random.default_rng(0).random((50, len(result.features)), dtype=np.float32)
    np.testing.assert_array_equal(
        load_booster(model_path).inplace_predict(rows), booster.inplace_predict(rows)
    )
    info = json.loads(info_path.read_text())
    assert info["engine"]["engine"] == "dask" and info["engine"]["workers"] == 2


def test_exact_tree_method_trains_with_hist_on_dask_and_says_so(
    client: Client, features_file: Path, tiny_params: Params
) -> None:
    booster, result = _train_on_dask(
        client, features_file, tiny_params, partitions=2, tree_method="exact", n_estimators=5
    )
    trainer = json.loads(booster.save_config())["learner"]["gradient_booster"]
    assert trainer["gbtree_train_param"]["tree_method"] == DASK_TREE_METHOD == "hist"
    assert trainer["tree_train_param"]["max_bin"] == str(DASK_EXACT_MAX_BIN) == "4096"
    assert result.engine["tree_method"] == "hist" and result.engine["max_bin"] == 4096
    assert "exact" in result.engine["why"]
    assert result.params["tree_method"] == "exact"  # what params asked for, beside what ran


def test_random_search_on_dask_scores_every_trial_and_keeps_the_best(
    client: Client, features_file: Path, tiny_params: Params
) -> None:
    search = tiny_params.train.search.model_copy(update={"enabled": True, "n_iter": 2})
    _, result = _train_on_dask(
        client, features_file, tiny_params, partitions=2, search=search, n_estimators=10
    )
    assert len(result.search_trials) == 2
    best = max(result.search_trials, key=lambda t: t["validation_ap"])
    assert result.params["max_depth"] == best["max_depth"]
    assert result.params["n_estimators"] == best["n_estimators"]


def test_empty_training_window_on_dask_fails_naming_the_key(
    client: Client, features_file: Path, tiny_params: Params
) -> None:
    with pytest.raises(TrainingError, match="train_start"):
        train_model_on_dask(
            client,
            features_file,
            tiny_params.features.feature_names(),
            TimeSplit(dt.date(2010, 1, 1), 14, 7, 7),
            4,
            tiny_params.train,
            tiny_params.evaluate.cost.model(),
            2,
        )


def _layout_with_raw(root: Path, raw: Path) -> Layout:
    layout = Layout(root)
    layout.raw.parent.mkdir(parents=True)
    shutil.copy(raw, layout.raw)
    return layout


def test_stages_with_the_dask_engine_write_the_same_files_as_in_process(
    cluster: LocalCluster,
    tiny_params: Params,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """features -> train -> evaluate through pipelines.stages on a tmp layout, once per engine;
    the Dask run on the cluster named by DASK_SCHEDULER_ADDRESS, as on Kubernetes."""
    local = Layout(tmp_path / "local")
    stages.stage_ingest(tiny_params, local)
    on_dask = _layout_with_raw(tmp_path / "dask", local.raw)
    dask_params = tiny_params.model_copy(
        update={"compute": tiny_params.compute.model_copy(update={"engine": "dask"})}
    )
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
    for params, layout in ((tiny_params, local), (dask_params, on_dask)):
        stages.stage_features(params, layout)
        stages.stage_train(params, layout)
        stages.stage_evaluate(params, layout)

    def files(layout: Layout) -> set[str]:
        return {str(p.relative_to(layout.root)) for p in layout.root.rglob("*") if p.is_file()}

    assert files(on_dask) == files(local)
    pd.testing.assert_frame_equal(
        pd.read_parquet(on_dask.features), pd.read_parquet(local.features), check_exact=True
    )
    info = json.loads(on_dask.train_info.read_text())
    assert "engine" not in json.loads(local.train_info.read_text())
    assert info["engine"]["engine"] == "dask"
    assert load_booster(on_dask.model).attr("threshold") == repr(info["threshold"])
    ap_dask = json.loads(on_dask.metrics.read_text())["average_precision"]
    ap_local = json.loads(local.metrics.read_text())["average_precision"]
    assert abs(ap_dask - ap_local) <= AP_TOLERANCE


def test_features_stage_starts_and_closes_its_own_local_cluster_without_an_address(
    tiny_params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    src = Layout(tmp_path / "src")
    stages.stage_ingest(tiny_params, src)
    layout = _layout_with_raw(tmp_path / "own", src.raw)
    compute = tiny_params.compute.model_copy(
        update={"engine": "dask", "n_workers": 1, "partitions": 2, "memory_limit": "1GiB"}
    )
    names = stages.stage_features(tiny_params.model_copy(update={"compute": compute}), layout)
    assert names == tiny_params.features.feature_names()
    assert len(pd.read_parquet(layout.features)) == len(pd.read_parquet(layout.raw))


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"engine": "spark"}, "compute.engine"),
        ({"partitions": 0}, "compute.partitions"),
        ({"n_workers": 0}, "compute.n_workers"),
        ({"memory_limit": "lots"}, "compute.memory_limit"),
        ({"scheduler": "tcp://x:8786"}, "compute.scheduler"),
    ],
)
def test_a_bad_compute_value_is_refused_naming_the_key(
    change: dict[str, Any], key: str, tmp_path: Path
) -> None:
    data = tiny_params_dict()
    data["compute"] = {**data.get("compute", {}), **change}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        load_params(path)


def test_in_process_stages_ignore_the_dask_knobs(
    tiny_features: pd.DataFrame, tiny_params: Params, tmp_path: Path
) -> None:
    """With the default engine, compute's Dask knobs change nothing: the same model, bit for bit."""
    knobs = tiny_params.compute.model_copy(update={"partitions": 3, "n_workers": 5})
    models = []
    for name, params in (
        ("default", tiny_params),
        ("knobs", tiny_params.model_copy(update={"compute": knobs})),
    ):
        layout = Layout(tmp_path / name)
        layout.features.parent.mkdir(parents=True)
        tiny_features.to_parquet(layout.features, index=False)
        stages.stage_train(params, layout)
        models.append(layout.model.read_bytes())
    assert models[0] == models[1]
