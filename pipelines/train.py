"""Train step: XGBoost on a time split, threshold chosen on a validation window, native format.

Imbalance (under 1% frauds): by default no re-weighting. Average precision and card
precision@k only depend on the ranking, which re-weighting does not improve here (measured in
docs/model.md), while it distorts the probabilities that the cost-based threshold and the API
return. `train.imbalance: scale_pos_weight` sets negatives/positives as the positive weight.

The model is trained twice: once on the train window minus its last `validation_days` to choose
the cost-optimal threshold (and, with `train.search.enabled`, the hyperparameters) on data the
model has not seen, then on the whole train window with the same settings.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from fraud import schema
from fraud.metrics import CostModel, average_precision, cost_optimal_threshold
from pipelines.artifacts import atomic_path, write_json
from pipelines.errors import TrainingError
from pipelines.params import TrainParams
from pipelines.splits import TimeSplit


def xgb_params(p: TrainParams, y: np.ndarray | None = None) -> dict[str, Any]:
    """The booster parameters of `p` (`scale_pos_weight` from the labels when asked)."""
    params: dict[str, Any] = {
        "objective": "binary:logistic",
        "eval_metric": "aucpr",
        "max_depth": p.max_depth,
        "eta": p.learning_rate,
        "tree_method": p.tree_method,
        "min_child_weight": p.min_child_weight,
        "subsample": p.subsample,
        "colsample_bytree": p.colsample_bytree,
        "nthread": p.nthread,
        "seed": p.seed,
    }
    if p.base_score is not None:
        params["base_score"] = p.base_score
    if p.imbalance == "scale_pos_weight" and y is not None and y.sum() > 0:
        params["scale_pos_weight"] = float((len(y) - y.sum()) / y.sum())
    return params


def check_training_window(rows: int, frauds: int, features: list[str], p: TrainParams) -> None:
    """Raise a TrainingError naming the key when a window cannot train a model."""
    if rows == 0:
        raise TrainingError("the training window has no transactions: check split.train_start")
    if frauds == 0 or frauds == rows:
        raise TrainingError("the training window needs both frauds and genuine transactions")
    unknown = [f for f in p.monotone_increasing if f not in features]
    if unknown:
        raise TrainingError(f"train.monotone_increasing: {unknown} are not model features")


def fit_booster(frame: pd.DataFrame, features: list[str], p: TrainParams) -> xgb.Booster:
    """Fit one booster on `frame` (needs TX_FRAUD with both classes)."""
    y = frame[schema.TX_FRAUD].to_numpy()
    check_training_window(len(frame), int(y.sum()), features, p)
    params = xgb_params(p, y)
    if p.monotone_increasing:
        params["monotone_constraints"] = {f: 1 for f in p.monotone_increasing}
    dtrain = xgb.DMatrix(frame[features].to_numpy(np.float32), label=y, feature_names=features)
    return xgb.train(params, dtrain, num_boost_round=p.n_estimators)


def predict(booster: xgb.Booster, frame: pd.DataFrame, features: list[str]) -> np.ndarray:
    """Fraud probabilities for the rows of `frame` (in-place predict, no DMatrix)."""
    if len(frame) == 0:
        return np.zeros(0)
    return np.asarray(
        booster.inplace_predict(frame[features].to_numpy(np.float32)), dtype=np.float64
    )


def _window(df: pd.DataFrame, start: dt.date, end: dt.date) -> pd.DataFrame:
    t = df[schema.TX_DATETIME]
    return df[(t >= pd.Timestamp(start)) & (t < pd.Timestamp(end))]


SEARCH_SPACE: dict[str, list[Any]] = {
    "max_depth": [2, 3, 4, 6],
    "learning_rate": [0.05, 0.1, 0.2],
    "n_estimators": [100, 200, 400],
    "min_child_weight": [1.0, 3.0, 10.0],
    "subsample": [0.8, 1.0],
    "colsample_bytree": [0.7, 1.0],
}


def random_search(
    fit: pd.DataFrame, valid: pd.DataFrame, features: list[str], base: TrainParams, n_iter: int
) -> tuple[TrainParams, list[dict[str, Any]]]:
    """Random search scored by AP on the validation window; the base params are trial 0."""
    trials: list[dict[str, Any]] = []
    best, best_ap = base, -1.0
    for cand in search_candidates(base, n_iter):
        booster = fit_booster(fit, features, cand)
        ap = average_precision(valid[schema.TX_FRAUD].to_numpy(), predict(booster, valid, features))
        trials.append(search_trial(cand, ap))
        if ap > best_ap:
            best, best_ap = cand, ap
    return best, trials


def search_candidates(base: TrainParams, n_iter: int) -> list[TrainParams]:
    """The random search's candidates: the base params, then `n_iter - 1` draws (seeded)."""
    rng = np.random.default_rng(base.seed)
    candidates = [base]
    for _ in range(n_iter - 1):
        changes = {k: v[int(rng.integers(len(v)))] for k, v in SEARCH_SPACE.items()}
        candidates.append(base.model_copy(update=changes))
    return candidates


def search_trial(cand: TrainParams, validation_ap: float) -> dict[str, Any]:
    """One trial's record in `TrainResult.search_trials`."""
    return {**{k: getattr(cand, k) for k in SEARCH_SPACE}, "validation_ap": validation_ap}


@dataclass
class TrainResult:
    features: list[str]
    threshold: float
    params: dict[str, Any]
    train_window: dict[str, str]
    rows_train: int
    frauds_train: int
    rows_validation: int
    validation_ap: float
    search_trials: list[dict[str, Any]] = field(default_factory=list)
    #: The FeatureConfig the features were computed with (batch scoring and serving reuse it).
    feature_config: dict[str, Any] = field(default_factory=dict)
    #: Where it was trained when not in process (pipelines/train_dask.py): the engine, the
    #: tree method it used and why. Left out of the info file for the in-process engine.
    engine: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["engine"] is None:
            del out["engine"]
        return out


def train_model(
    features_frame: pd.DataFrame,
    feature_names: list[str],
    split: TimeSplit,
    validation_days: int,
    p: TrainParams,
    cost: CostModel,
) -> tuple[xgb.Booster, TrainResult]:
    """Train on the split's train window; choose the threshold on its last `validation_days`."""
    if validation_days >= split.train_days:
        raise TrainingError("split.validation_days must be smaller than split.train_days")
    train = _window(features_frame, split.train_start, split.train_end)
    valid_start = split.train_end - dt.timedelta(days=validation_days)
    fit_part = _window(train, split.train_start, valid_start)
    valid = _window(train, valid_start, split.train_end)
    trials: list[dict[str, Any]] = []
    if p.search.enabled:
        p, trials = random_search(fit_part, valid, feature_names, p, p.search.n_iter)
    scout = fit_booster(fit_part, feature_names, p)
    valid_scores = predict(scout, valid, feature_names)
    y_valid = valid[schema.TX_FRAUD].to_numpy()
    threshold = cost_optimal_threshold(y_valid, valid_scores, cost)
    booster = fit_booster(train, feature_names, p)
    booster.set_attr(threshold=repr(threshold), features=",".join(feature_names))
    result = TrainResult(
        features=feature_names,
        threshold=threshold,
        params=p.model_dump(mode="json"),
        train_window=split.describe(),
        rows_train=len(train),
        frauds_train=int(train[schema.TX_FRAUD].sum()),
        rows_validation=len(valid),
        validation_ap=average_precision(y_valid, valid_scores) if y_valid.any() else float("nan"),
        search_trials=trials,
    )
    return booster, result


def save_model(
    booster: xgb.Booster, result: TrainResult, model_path: Path, info_path: Path
) -> None:
    """Write the booster in XGBoost's native UBJSON format (never pickle) and its info JSON."""
    with atomic_path(model_path) as tmp:
        tmp.write_bytes(bytes(booster.save_raw(raw_format="ubj")))
    write_json(result.as_dict(), info_path)
