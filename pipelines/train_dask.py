"""Train step on a Dask cluster (`compute.engine: dask`): `xgboost.dask` on the train window.

The same protocol as pipelines/train.py, step for step: a scout model on the train window
minus its last `validation_days` picks the cost-optimal threshold (and, with
`train.search.enabled`, the hyperparameters: the same seeded candidates) on the validation
days, then the model is trained on the whole window. The result is the same `xgb.Booster`
with the same attributes, saved by the same `save_model`: the registry, the evaluation and the
API cannot tell how it was trained. Only the validation scores and labels come back to this
process; the windows stay on the workers.

Tree method: xgboost.dask supports `hist` and `approx`, not `exact` (the in-process default:
it scored a higher AP on this data). With `train.tree_method: exact`, the Dask path trains
with `hist` and 4096 bins (`DASK_TREE_METHOD`, `DASK_EXACT_MAX_BIN`) and records it in
train_info.json's `engine`; the measured AP gap is in docs/model.md. The model also depends a little on how the rows are spread over the
workers (the histogram bins are sketched per worker and merged): `compute.partitions` and the
number of workers are results-changing knobs.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xgboost as xgb

from fraud import schema
from fraud.metrics import CostModel, average_precision, cost_optimal_threshold
from pipelines.errors import TrainingError
from pipelines.params import TrainParams
from pipelines.splits import TimeSplit
from pipelines.train import (
    TrainResult,
    check_training_window,
    search_candidates,
    search_trial,
    xgb_params,
)

if TYPE_CHECKING:
    import dask.dataframe as dd
    from dask.distributed import Client

log = logging.getLogger("pipelines")

#: What the Dask path trains with when params ask for `exact`, which xgboost.dask lacks:
#: `hist` with 4096 bins, which docs/model.md measured as close to exact (prequential AP 0.731
#: vs 0.732), where hist's default 256 bins lose the 220 amount rule of scenario 1 (0.715).
DASK_TREE_METHOD = "hist"
DASK_EXACT_MAX_BIN = 4096


def dask_tree_method(p: TrainParams) -> str:
    """The tree method xgboost.dask trains `p` with (`exact` becomes `DASK_TREE_METHOD`)."""
    return DASK_TREE_METHOD if p.tree_method == "exact" else p.tree_method


def dask_booster_params(p: TrainParams) -> dict[str, Any]:
    """`xgb_params(p)` for xgboost.dask: the tree method of `dask_tree_method` (with
    `DASK_EXACT_MAX_BIN` bins in place of exact), the workers' own threads (no `nthread`)."""
    params = xgb_params(p)
    params["tree_method"] = dask_tree_method(p)
    if p.tree_method == "exact":
        params["max_bin"] = DASK_EXACT_MAX_BIN
    del params["nthread"]  # each worker trains with its own threads
    return params


def train_model_on_dask(
    client: Client,
    features_path: str | Path,
    feature_names: list[str],
    split: TimeSplit,
    validation_days: int,
    p: TrainParams,
    cost: CostModel,
    partitions: int,
) -> tuple[xgb.Booster, TrainResult]:
    """`train_model` on a Dask cluster, reading the train window from the features file
    (a path the workers can read)."""
    if validation_days >= split.train_days:
        raise TrainingError("split.validation_days must be smaller than split.train_days")
    valid_start = split.train_end - dt.timedelta(days=validation_days)
    columns = [schema.TX_DATETIME, schema.TX_FRAUD, *feature_names]
    train = _window(client, features_path, columns, split.train_start, split.train_end, partitions)
    train = client.persist(train)
    fit_part = _between(train, split.train_start, valid_start)
    valid = _between(train, valid_start, split.train_end)
    method = dask_tree_method(p)
    if method != p.tree_method:
        log.warning(
            "train on dask: train.tree_method %s is not supported by xgboost.dask "
            "(hist and approx only): training with %s, %d bins",
            p.tree_method,
            method,
            DASK_EXACT_MAX_BIN,
        )
    trials: list[dict[str, Any]] = []
    if p.search.enabled:
        best, best_ap = p, -1.0
        for i, cand in enumerate(search_candidates(p, p.search.n_iter)):
            y_cand, s_cand = _scores(
                client,
                fit_booster_on_dask(client, fit_part, feature_names, cand),
                valid,
                feature_names,
            )
            ap = average_precision(y_cand, s_cand)
            trials.append(search_trial(cand, ap))
            log.info(
                "train on dask: search trial %d/%d, validation AP %.4f", i + 1, p.search.n_iter, ap
            )
            if ap > best_ap:
                best, best_ap = cand, ap
        p = best
    scout = fit_booster_on_dask(client, fit_part, feature_names, p)
    y_valid, valid_scores = _scores(client, scout, valid, feature_names)
    threshold = cost_optimal_threshold(y_valid, valid_scores, cost)
    booster = fit_booster_on_dask(client, train, feature_names, p)
    booster.set_attr(threshold=repr(threshold), features=",".join(feature_names))
    rows_train, frauds_train = client.compute(
        [train[schema.TX_FRAUD].size, train[schema.TX_FRAUD].sum()], sync=True
    )
    result = TrainResult(
        features=feature_names,
        threshold=threshold,
        params=p.model_dump(mode="json"),
        train_window=split.describe(),
        rows_train=int(rows_train),
        frauds_train=int(frauds_train),
        rows_validation=len(y_valid),
        validation_ap=average_precision(y_valid, valid_scores) if y_valid.any() else float("nan"),
        search_trials=trials,
        engine={
            "engine": "dask",
            "tree_method": method,
            "max_bin": DASK_EXACT_MAX_BIN if method != p.tree_method else 256,
            "why": (
                f"xgboost.dask has no {p.tree_method} tree method; hist with "
                f"{DASK_EXACT_MAX_BIN} bins comes closest (docs/model.md)"
                if method != p.tree_method
                else "as train.tree_method asks"
            ),
            "workers": len(client.scheduler_info().get("workers", {})),
            "partitions": partitions,
        },
    )
    return booster, result


def fit_booster_on_dask(
    client: Client, frame: dd.DataFrame, features: list[str], p: TrainParams
) -> xgb.Booster:
    """`fit_booster` with xgboost.dask: the same checks and booster parameters (the tree method
    of `dask_tree_method`; the workers' own threads instead of `train.nthread`)."""
    import xgboost.dask as dxgb

    frame = client.persist(frame)
    sizes = client.compute(frame.map_partitions(len), sync=True).to_numpy()
    # A worker holding only empty partitions would train on a DMatrix without feature names.
    frame = frame.partitions[[int(i) for i in np.flatnonzero(sizes)]] if sizes.any() else frame
    y = frame[schema.TX_FRAUD]
    rows, frauds = int(sizes.sum()), int(client.compute(y.sum(), sync=True))
    check_training_window(rows, frauds, features, p)
    params = dask_booster_params(p)
    if p.imbalance == "scale_pos_weight":
        params["scale_pos_weight"] = float((rows - frauds) / frauds)
    if p.monotone_increasing:
        # By position rather than by name (what XGBoost turns the in-process dict into): the
        # names are checked against each worker's data.
        params["monotone_constraints"] = (
            "(" + ",".join("1" if f in p.monotone_increasing else "0" for f in features) + ")"
        )
    dtrain = dxgb.DaskDMatrix(client, frame[features].astype(np.float32), y, feature_names=features)
    out = dxgb.train(client, params, dtrain, num_boost_round=p.n_estimators, verbose_eval=False)
    booster: xgb.Booster = out["booster"]
    return booster


def _scores(
    client: Client, booster: xgb.Booster, frame: dd.DataFrame, features: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The labels and fraud probabilities of `frame`'s rows, in the same order."""
    import xgboost.dask as dxgb

    scores = dxgb.inplace_predict(client, booster, frame[features].astype(np.float32))
    y, s = client.compute([frame[schema.TX_FRAUD], scores], sync=True)
    return np.asarray(y), np.asarray(s, dtype=np.float64)


def _window(
    client: Client,
    path: str | Path,
    columns: list[str],
    start: dt.date,
    end: dt.date,
    partitions: int,
) -> dd.DataFrame:
    """The rows of [start, end) of a features file in `partitions` partitions, read by the
    workers (the row groups that can hold the window, cut evenly, so that every worker gets
    its share of the training rows)."""
    import dask.dataframe as dd

    from fraud.features.distributed import read_parquet_chunks

    rows = _rows_that_may_hold(path, pd.Timestamp(start), pd.Timestamp(end))
    keep = functools.partial(_rows_between, start=start, end=end)
    chunks = read_parquet_chunks(client, path, partitions, keep, columns=columns, rows=rows)
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).schema_arrow.empty_table().select(columns).to_pandas()
    return dd.from_delayed(chunks, meta=meta, verify_meta=False)


def _rows_that_may_hold(path: str | Path, lo: pd.Timestamp, hi: pd.Timestamp) -> tuple[int, int]:
    """The row range [start, stop) of the row groups whose TX_DATETIME statistics overlap
    [lo, hi) (all rows where a group has no statistics)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    col = meta.schema.to_arrow_schema().get_field_index(schema.TX_DATETIME)
    first, last, offset = None, 0, 0
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        stats = group.column(col).statistics
        overlaps = (
            stats is None
            or not stats.has_min_max
            or (pd.Timestamp(stats.max) >= lo and pd.Timestamp(stats.min) < hi)
        )
        if overlaps:
            first = offset if first is None else first
            last = offset + group.num_rows
        offset += group.num_rows
    return (first, last) if first is not None else (0, 0)


def _rows_between(frame: pd.DataFrame, start: dt.date, end: dt.date) -> pd.DataFrame:
    t = frame[schema.TX_DATETIME]
    return frame[(t >= pd.Timestamp(start)) & (t < pd.Timestamp(end))]


def _between(frame: dd.DataFrame, start: dt.date, end: dt.date) -> dd.DataFrame:
    t = frame[schema.TX_DATETIME]
    return frame[(t >= pd.Timestamp(start)) & (t < pd.Timestamp(end))]
