"""The registry reader (`fraud.registry`) against the real MLflow SQLite store that the tiny
pipeline's `dvc repro` wrote (`pipeline_repo`: v1 @champion).

Reads go to that store; the test that registers a version works on a copy of it, so other
modules still find champion v1 there. Other modules may add challenger versions to the
original, so no test here depends on how many versions it holds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from mlflow import MlflowClient

from fraud import registry, schema
from fraud.features import FeatureConfig
from tests.fraud.conftest import tracking_uri

MODEL = registry.DEFAULT_MODEL_NAME


@pytest.fixture
def store_copy(pipeline_repo, tmp_path) -> Iterator[str]:
    """A copy of the pipeline's store (its artifacts stay where the original's are)."""
    src = Path(pipeline_repo.tracking_uri.removeprefix("sqlite:///"))
    with (
        closing(sqlite3.connect(src)) as source,
        closing(sqlite3.connect(tmp_path / "mlflow.db")) as target,
    ):
        source.backup(target)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracking_uri(uri):
        yield uri


def registration(pipeline_repo) -> dict:
    return json.loads((pipeline_repo.path / "reports/registration.json").read_text())


def train_info(pipeline_repo) -> dict:
    return json.loads((pipeline_repo.path / "models/train_info.json").read_text())


def test_champion_is_read_with_the_train_info_and_lineage_the_pipeline_published(
    pipeline_repo, pipeline_store
):
    v = registry.read_version(MODEL)
    reg = registration(pipeline_repo)
    info = train_info(pipeline_repo)
    metrics = json.loads((pipeline_repo.path / "reports/metrics.json").read_text())
    raw = (pipeline_repo.path / "data/raw/transactions.parquet").read_bytes()

    assert (v.name, v.version, v.alias, v.run_id) == (MODEL, "1", "champion", reg["run_id"])
    assert v.label == f"{MODEL} v1"
    assert v.features == info["features"] and v.features[0] == "TX_AMOUNT"
    assert v.threshold == info["threshold"]
    assert v.feature_config == FeatureConfig.model_validate(info["feature_config"])
    assert v.train_info == info
    assert v.lineage.git_commit == reg["lineage"]["git_commit"]
    assert v.lineage.data_md5 == hashlib.md5(raw).hexdigest()
    assert v.lineage.params_sha256 == reg["lineage"]["params_sha256"]
    assert v.lineage.train_window == info["train_window"]["train"]
    assert v.lineage.test_window == metrics["window"]["test"]
    assert v.lineage.decision == "champion"
    assert v.lineage.reason == reg["reason"]
    assert v.lineage.metrics["average_precision"] == pytest.approx(metrics["average_precision"])
    # The prequential protocol's metrics are logged on the run too, but are not the version's.
    assert not any("." in k for k in v.lineage.metrics)


def test_a_version_asked_for_by_number_has_no_alias_and_the_same_description(pipeline_store):
    by_alias = registry.read_version(MODEL, alias=registry.ALIAS_CHAMPION)
    by_number = registry.read_version(MODEL, version="1")
    assert by_number.alias is None
    assert by_number == dataclasses.replace(by_alias, alias=None)


def test_the_version_number_wins_when_both_alias_and_version_are_given(pipeline_store):
    assert registry.read_version(MODEL, alias="no-such-alias", version="1").version == "1"


def test_resolve_version_follows_the_alias_when_it_moves(store_copy):
    assert registry.resolve_version(MODEL) == "1"
    client = MlflowClient()
    v1 = client.get_model_version(MODEL, "1")
    assert v1.source is not None
    new = client.create_model_version(
        MODEL, source=v1.source, run_id=v1.run_id, tags=dict(v1.tags or {})
    )
    client.set_registered_model_alias(MODEL, registry.ALIAS_CHAMPION, new.version)
    assert registry.resolve_version(MODEL) == str(new.version) != "1"
    assert registry.resolve_version(MODEL, version="1") == "1"
    assert registry.read_version(MODEL).version == str(new.version)


@pytest.mark.parametrize(
    ("name", "alias", "version", "what"),
    [
        (MODEL, "retired", None, "no @retired of model 'fraud-detector'"),
        (MODEL, None, "999", "no version 999 of model 'fraud-detector'"),
        (MODEL, None, "abc", "no version abc of model 'fraud-detector'"),
        ("no-such-model", None, None, "no @champion of model 'no-such-model'"),
    ],
)
def test_a_missing_alias_or_version_is_a_model_not_found_error_saying_what_and_where(
    pipeline_store, name, alias, version, what
):
    for read in (registry.resolve_version, registry.read_version):
        with pytest.raises(registry.ModelNotFoundError) as e:
            read(name, alias, version)
        message = str(e.value)
        assert message.startswith(what), message
        assert pipeline_store.removeprefix("sqlite:///") in message
        assert "`make run`" in message


def test_download_writes_the_native_model_train_info_and_history_and_nothing_else(
    pipeline_repo, pipeline_store, tmp_path
):
    dest = tmp_path / "v1"
    v = registry.download_version(MODEL, version="1", dest=dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [registry.NATIVE_MODEL_FILE, registry.TRAIN_INFO_FILE, registry.FEATURE_HISTORY_FILE]
    )
    assert v == registry.read_version(MODEL, version="1")
    assert json.loads((dest / registry.TRAIN_INFO_FILE).read_text()) == train_info(pipeline_repo)
    history = pd.read_parquet(dest / registry.FEATURE_HISTORY_FILE)
    assert list(history.columns) == [*schema.RAW_COLUMNS, schema.TX_FRAUD]
    assert len(history) > 0


def test_downloaded_booster_scores_like_the_one_the_pipeline_trained(
    pipeline_repo, pipeline_store, tmp_path
):
    v = registry.download_version(MODEL, dest=tmp_path)
    downloaded = registry.load_booster(tmp_path / registry.NATIVE_MODEL_FILE)
    trained = registry.load_booster(pipeline_repo.path / "models/model.ubj")
    x = pd.read_parquet(pipeline_repo.path / "data/features/transactions.parquet")[v.features]
    x = x.to_numpy(np.float32)
    assert np.array_equal(downloaded.inplace_predict(x), trained.inplace_predict(x))
    assert downloaded.num_boosted_rounds() == trained.num_boosted_rounds() > 0


def test_load_version_gives_the_description_and_a_one_thread_booster(pipeline_store):
    v, booster = registry.load_version(MODEL)
    assert v == registry.read_version(MODEL)
    assert json.loads(booster.save_config())["learner"]["generic_param"]["nthread"] == "1"


def test_version_tags_are_what_the_reader_reads_back_as_lineage():
    reason = "beats the champion " + "x" * 5000
    tags = registry.version_tags(
        git_commit="abc",
        data_md5="d" * 32,
        params_sha256="p" * 64,
        train_window="2018-04-01 .. 2018-05-01",
        test_window="2018-05-08 .. 2018-05-15",
        threshold=0.125,
        features=["TX_AMOUNT", "TX_DURING_NIGHT"],
        decision=registry.ALIAS_CHAMPION,
        reason=reason,
    )
    assert tags[registry.TAG_FEATURES] == "TX_AMOUNT,TX_DURING_NIGHT"
    assert float(tags[registry.TAG_THRESHOLD]) == 0.125
    assert len(tags[registry.TAG_REASON]) == registry.MAX_TAG_LENGTH  # MLflow's limit
    lineage = registry.VersionLineage.from_tags(
        tags, {"average_precision": 0.7, "prequential.x": 1}
    )
    assert lineage == registry.VersionLineage(
        git_commit="abc",
        data_md5="d" * 32,
        params_sha256="p" * 64,
        train_window="2018-04-01 .. 2018-05-01",
        test_window="2018-05-08 .. 2018-05-15",
        decision="champion",
        reason=reason[: registry.MAX_TAG_LENGTH],
        metrics={"average_precision": 0.7},
    )


def test_lineage_round_trips_through_the_api_dict_with_the_keys_get_model_shows():
    lineage = registry.VersionLineage(
        git_commit="abc", decision="challenger", reason="why", metrics={"roc_auc": 0.9}
    )
    d = lineage.as_dict()
    assert set(d) == {
        "git_commit",
        "data_md5",
        "params_sha256",
        "train_window",
        "test_window",
        "decision",
        "promotion_reason",
        "metrics",
    }
    assert d["promotion_reason"] == "why"
    assert registry.VersionLineage.from_dict(json.loads(json.dumps(d))) == lineage


# ------------------------------------------------------------------------------------------
# Model integrity: the SHA-256 recorded at registration, and XGBoost's native format only


def tiny_booster() -> xgb.Booster:
    rng = np.random.default_rng(0)
    x = rng.random((200, 3))
    return xgb.train({"nthread": 1}, xgb.DMatrix(x, label=(x[:, 0] > 0.5)), num_boost_round=3)


class WritesAMarkerWhenUnpickled:
    """Unpickling this object creates `path`: proof that something unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (_touch, (str(self.path), "unpickled"))


def _touch(path: str, text: str) -> None:
    Path(path).write_text(text)


def test_native_model_sha256_is_the_hash_of_the_file_mlflow_saves(tmp_path):
    booster = tiny_booster()
    # mlflow.xgboost.save_model writes the booster with save_model(".../model.ubj").
    booster.save_model(tmp_path / registry.NATIVE_MODEL_FILE)
    expected = hashlib.sha256((tmp_path / registry.NATIVE_MODEL_FILE).read_bytes()).hexdigest()
    assert registry.native_model_sha256(booster) == expected
    assert registry.file_sha256(tmp_path / registry.NATIVE_MODEL_FILE) == expected


def test_version_tags_carry_the_model_hash_only_when_given():
    common: dict[str, Any] = dict(
        git_commit="abc",
        data_md5="d",
        params_sha256="p",
        train_window="w",
        test_window="t",
        threshold=0.5,
        features=["TX_AMOUNT"],
        decision="champion",
        reason="why",
    )
    assert registry.TAG_MODEL_SHA256 not in registry.version_tags(**common)
    tags = registry.version_tags(**common, model_sha256="ab" * 32)
    assert tags[registry.TAG_MODEL_SHA256] == "ab" * 32


def test_load_booster_verifies_the_hash_before_loading(tmp_path):
    path = tmp_path / registry.NATIVE_MODEL_FILE
    tiny_booster().save_model(path)
    good = registry.file_sha256(path)
    assert registry.load_booster(path, good, "m v1").num_boosted_rounds() == 3
    with pytest.raises(registry.ModelIntegrityError) as e:
        registry.load_booster(path, "0" * 64, "fraud-detector v7")
    message = str(e.value)
    assert message.startswith("fraud-detector v7: model file model.ubj has SHA-256 " + good)
    assert "0" * 64 in message and registry.TAG_MODEL_SHA256 in message


def test_a_tampered_model_file_is_refused_naming_expected_and_actual_hash(tmp_path):
    path = tmp_path / registry.NATIVE_MODEL_FILE
    tiny_booster().save_model(path)
    recorded = registry.file_sha256(path)
    other = tiny_booster()
    other.set_attr(tampered="yes")  # still a valid native model, but not the registered one
    other.save_model(path)
    with pytest.raises(registry.ModelIntegrityError, match=recorded) as e:
        registry.verify_model_file(path, recorded, "fraud-detector v3")
    assert registry.file_sha256(path) in str(e.value)
    assert "fraud-detector v3" in str(e.value)


def test_a_version_without_a_recorded_hash_is_allowed_with_a_warning(tmp_path, caplog):
    path = tmp_path / registry.NATIVE_MODEL_FILE
    tiny_booster().save_model(path)
    with caplog.at_level("WARNING", logger="fraud.registry"):
        assert registry.verify_model_file(path, None, "fraud-detector v1") == (
            registry.file_sha256(path)
        )
    assert "fraud-detector v1 has no recorded SHA-256" in caplog.text
    assert "unverified" in caplog.text


def test_a_pickle_renamed_model_ubj_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled.txt"
    path = tmp_path / registry.NATIVE_MODEL_FILE
    path.write_bytes(pickle.dumps(WritesAMarkerWhenUnpickled(marker)))
    with pytest.raises(registry.ModelIntegrityError, match="Python pickle") as e:
        registry.load_booster(path)
    assert "never pickles" in str(e.value)
    assert not marker.exists()
    # A pickled booster too (what `mlflow.xgboost` would write with a pickle format).
    path.write_bytes(pickle.dumps(tiny_booster()))
    with pytest.raises(registry.ModelIntegrityError, match="Python pickle"):
        registry.load_booster(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("model.pkl", b"{}", "the name must end in .ubj or .json, got '.pkl'"),
        ("model", b"{}", "got 'no suffix'"),
        ("model.ubj", b"", "nothing (empty file)"),
        ("model.json", b"<xml/>", "begins with bytes 3c 78 6d 6c"),
    ],
)
def test_anything_but_a_native_model_file_is_refused_before_parsing(
    tmp_path, name, content, message
):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(registry.ModelIntegrityError, match=re.escape(message)):
        registry.load_booster(path)


def test_the_json_native_format_is_loaded_too(tmp_path):
    path = tmp_path / "model.json"
    tiny_booster().save_model(path)
    assert registry.load_booster(path).num_boosted_rounds() == 3


def test_the_pipelines_version_records_the_hash_of_the_native_model_it_trained(
    pipeline_repo, pipeline_store, tmp_path
):
    v = registry.download_version(MODEL, version="1", dest=tmp_path)
    trained = registry.file_sha256(pipeline_repo.path / "models/model.ubj")
    assert v.model_sha256 == trained
    assert registry.file_sha256(tmp_path / registry.NATIVE_MODEL_FILE) == trained
    assert MlflowClient().get_model_version(MODEL, "1").tags[registry.TAG_MODEL_SHA256] == trained


def _version_with_own_model_dir(tmp_path: Path, *, tags: dict[str, str]) -> tuple[str, Path]:
    """A new version of MODEL in the current (copied) store whose MLflow model directory is a
    private copy of v1's, so a test may tamper with it; v1's run supplies the other files."""
    import mlflow

    client = MlflowClient()
    v1 = client.get_model_version(MODEL, "1")
    model_dir = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{MODEL}/1", dst_path=str(tmp_path / "own-model")
        )
    )
    new = client.create_model_version(MODEL, source=model_dir.as_uri(), run_id=v1.run_id, tags=tags)
    return str(new.version), next(model_dir.rglob(registry.NATIVE_MODEL_FILE))


def test_download_refuses_a_tampered_artifact_and_replaces_nothing_in_dest(store_copy, tmp_path):
    v1_tags = dict(MlflowClient().get_model_version(MODEL, "1").tags or {})
    version, native = _version_with_own_model_dir(tmp_path, tags=v1_tags)
    # Tamper with the registered file: another valid booster in its place.
    tiny_booster().save_model(native)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / registry.NATIVE_MODEL_FILE).write_bytes(b"the previous model")
    with pytest.raises(registry.ModelIntegrityError) as e:
        registry.download_version(MODEL, version=version, dest=dest)
    message = str(e.value)
    assert message.startswith(f"{MODEL} v{version}: model file model.ubj has SHA-256 ")
    assert v1_tags[registry.TAG_MODEL_SHA256] in message
    assert registry.file_sha256(native) in message
    assert sorted(p.name for p in dest.iterdir()) == [registry.NATIVE_MODEL_FILE]
    assert (dest / registry.NATIVE_MODEL_FILE).read_bytes() == b"the previous model"
    with pytest.raises(registry.ModelIntegrityError):
        registry.load_version(MODEL, version=version)


def test_a_version_registered_before_the_hash_tag_is_loaded_with_a_warning(
    store_copy, tmp_path, caplog
):
    legacy = {
        k: v
        for k, v in (MlflowClient().get_model_version(MODEL, "1").tags or {}).items()
        if k != registry.TAG_MODEL_SHA256
    }
    version, _ = _version_with_own_model_dir(tmp_path, tags=legacy)
    with caplog.at_level("WARNING", logger="fraud.registry"):
        v, booster = registry.load_version(MODEL, version=version)
    assert v.model_sha256 is None and booster.num_boosted_rounds() > 0
    assert f"{MODEL} v{version} has no recorded SHA-256" in caplog.text
