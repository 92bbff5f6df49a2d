"""Where a monitored window comes from: the prediction log (what the API served, with the
labels known by then) or a file of raw transactions scored here with the model, as batch
scoring does. Both give a frame in the layout of `monitoring/frames.py`."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fraud import schema
from fraud.features import compute_features
from fraud.predictions import read_window
from fraud.registry import reference_frame
from fraud.schema import ContractLimits
from fraud.transactions_file import read_transactions_file
from fraud.validation import to_contract_frame
from monitoring import frames

if TYPE_CHECKING:
    import xgboost as xgb

    from fraud.registry import RegisteredVersion


@dataclass(frozen=True)
class Window:
    """A monitored window: its rows, the period they cover, and what to know about them."""

    frame: pd.DataFrame
    start: dt.datetime
    end: dt.datetime
    #: The time the checks take as "now": labels known after it are not used.
    as_of: dt.datetime
    source: str
    notes: tuple[str, ...] = ()


def log_window(
    target: str | Path,
    start: dt.datetime,
    end: dt.datetime,
    as_of: dt.datetime,
    *,
    model_version: str | None = None,
) -> Window:
    """The predictions logged for transactions in [start, end), with the labels known by
    `as_of` (raises fraud.predictions.PredictionLogError when the log cannot be read).

    With `model_version`, only that version's predictions: its scores are what its reference is
    compared with, and its matured cohorts are its own performance. After a new champion takes
    over, the older version's rows of the window are left out, and a note counts them: otherwise
    the old model's fall, which the retraining answered, would keep firing for a week of labels.
    """
    frame = read_window(target, start, end, labels_known_by=as_of)
    notes: tuple[str, ...] = ()
    if model_version is not None and len(frame):
        mine = (frame[frames.MODEL_VERSION].astype(str) == str(model_version)).to_numpy()
        if not mine.all():
            others = frame.loc[~mine, frames.MODEL_VERSION].astype(str).value_counts()
            listed = ", ".join(f"v{v}: {n:,}" for v, n in others.sort_index().items())
            notes = (
                f"{int((~mine).sum()):,} predictions in {start} .. {end} were made by other "
                f"versions ({listed}) and are left out: the checks judge v{model_version}'s own",
            )
            frame = frame[mine].reset_index(drop=True)
    return Window(frame, start, end, as_of, source=f"prediction log {target}", notes=notes)


def file_window(
    path: str | Path,
    version: RegisteredVersion,
    booster: xgb.Booster,
    *,
    history: pd.DataFrame | None = None,
    setting: str = "--input",
) -> Window:
    """The transactions of a file (contract schema, labels optional), scored with `version`.

    The features need `feature_config.lookback_days` of history before each transaction. When
    the file starts after `history` ends (the raw tail published with the model, as the API
    seeds its state with it), the history is put before it and every row of the file is
    monitored; otherwise the file's own first days are its history, used for the features only
    (a note says so). History labels not yet known when the model was published count as 0, as
    they do in the API. A file's labels count as known at its end (it is checked after the
    fact), so its labelled cohorts can be matured.
    """
    raw = read_transactions_file(path, setting)
    if raw.empty:
        raise ValueError(f"{setting}: {path} has no transactions")
    df = to_contract_frame(raw, ContractLimits(require_labels=False))
    notes: list[str] = []
    labelled = schema.TX_FRAUD in df and df[schema.TX_FRAUD].notna().any()
    if not labelled:
        notes.append(
            "the file has no labels: the terminal-risk features are computed without its "
            "frauds (as the API does before labels arrive) and no performance is measured"
        )
    lookback = pd.Timedelta(days=version.feature_config.lookback_days)
    first = df[schema.TX_DATETIME].min()
    monitored_from = first + lookback
    if history is not None and len(history) and history[schema.TX_DATETIME].max() < first:
        past = history[[*schema.RAW_COLUMNS, schema.TX_FRAUD]].copy()
        past[schema.TX_FRAUD] = past[schema.TX_FRAUD].fillna(0)
        if not labelled:
            past = past.drop(columns=schema.TX_FRAUD)
        current = df if labelled else df.drop(columns=schema.TX_FRAUD, errors="ignore")
        both = pd.concat([past, current], ignore_index=True)
        feats = compute_features(both, version.feature_config).iloc[len(past) :]
        feats = feats.reset_index(drop=True)
        monitored_from = min(first, history[schema.TX_DATETIME].min() + lookback)
        notes.append(f"history: the {len(past):,} transactions published with {version.label}")
    else:
        feats = compute_features(df, version.feature_config)
    full = (feats[schema.TX_DATETIME] >= monitored_from).to_numpy()
    if not full.any():
        raise ValueError(
            f"{setting}: {path} spans less than the {version.feature_config.lookback_days} days "
            f"of history the features need before the first monitored transaction"
        )
    if not full.all():
        notes.append(
            f"the first {int((~full).sum()):,} transactions (before {monitored_from}) are "
            f"history for the features only: they lack {version.feature_config.lookback_days} "
            f"days of history and are not monitored"
        )
    rows = feats[full].reset_index(drop=True)
    if schema.TX_FRAUD not in rows or not labelled:
        rows[schema.TX_FRAUD] = pd.array([pd.NA] * len(rows), dtype="Int64")
    scores = booster.inplace_predict(rows[version.features].to_numpy(np.float32))
    frame = reference_frame(rows, scores, features=version.features, threshold=version.threshold)
    end_time = frame[frames.TIME].max()
    known = frame[frames.LABEL].notna()
    at_label = frame.columns.get_loc(frames.LABEL)
    frame.insert(at_label, "model_name", version.name)
    frame.insert(at_label + 1, frames.MODEL_VERSION, version.version)
    frame.insert(at_label + 2, "logged_at", end_time)
    frame.insert(
        at_label + 4,  # after the label
        frames.LABEL_KNOWN_AT,
        pd.Series(end_time, index=frame.index).where(known),
    )
    start = frame[frames.TIME].min().to_pydatetime()
    end = (end_time + pd.Timedelta(seconds=1)).to_pydatetime()
    return Window(frame, start, end, end, source=f"file {path}", notes=tuple(notes))
