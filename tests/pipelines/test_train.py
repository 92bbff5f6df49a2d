"""Code tests of the train step: search, errors that name the key, native-format round trip."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from fraud.registry import load_booster
from pipelines.splits import TimeSplit, train_test_frames
from pipelines.train import TrainingError, predict, save_model, train_model


def _train(tiny_params, tiny_features, **changes):
    p = tiny_params.train.model_copy(update=changes)
    return train_model(
        tiny_features,
        tiny_params.features.feature_names(),
        tiny_params.split.split(),
        tiny_params.split.validation_days,
        p,
        tiny_params.evaluate.cost.model(),
    )


def test_random_search_scores_every_trial_on_the_validation_window(tiny_params, tiny_features):
    search = tiny_params.train.search.model_copy(update={"enabled": True, "n_iter": 3})
    _, result = _train(tiny_params, tiny_features, search=search)
    assert len(result.search_trials) == 3
    assert all(0 <= t["validation_ap"] <= 1 for t in result.search_trials)
    best = max(result.search_trials, key=lambda t: t["validation_ap"])
    assert result.params["max_depth"] == best["max_depth"]
    assert result.params["n_estimators"] == best["n_estimators"]


def test_threshold_is_chosen_on_validation_days_not_the_test_window(tiny_params, tiny_features):
    _, result = _train(tiny_params, tiny_features)
    split = tiny_params.split.split()
    assert result.rows_validation > 0
    assert 0 < result.threshold < 1
    # the validation window ends where training ends, before the delay and the test window
    assert result.train_window["train"].endswith(str(split.train_end - dt.timedelta(days=1)))


def test_training_window_without_data_fails_naming_the_key(tiny_params, tiny_features):
    empty = TimeSplit(dt.date(2010, 1, 1), 14, 7, 7)
    with pytest.raises(TrainingError, match="train_start"):
        train_model(
            tiny_features,
            tiny_params.features.feature_names(),
            empty,
            4,
            tiny_params.train,
            tiny_params.evaluate.cost.model(),
        )


def test_unknown_monotone_feature_fails_naming_the_key(tiny_params, tiny_features):
    with pytest.raises(TrainingError, match=r"train\.monotone_increasing"):
        _train(tiny_params, tiny_features, monotone_increasing=["NOT_A_FEATURE"])


def test_model_round_trips_through_native_ubjson_with_identical_scores(
    tiny_params, tiny_features, tiny_model, tmp_path
):
    booster, result = tiny_model
    model_path, info_path = tmp_path / "model.ubj", tmp_path / "train_info.json"
    save_model(booster, result, model_path, info_path)
    raw = model_path.read_bytes()
    assert raw[:1] == b"{" and not raw.startswith(b"\x80")  # UBJSON object, not a pickle
    assert json.loads(info_path.read_text())["features"] == result.features
    _, test = train_test_frames(tiny_features, tiny_params.split.split())
    np.testing.assert_array_equal(
        predict(load_booster(model_path), test, result.features),
        predict(booster, test, result.features),
    )
