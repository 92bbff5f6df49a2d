"""The old and the new champion on the same transactions: what retraining won back.

The transactions are read from the prediction log with the features the API computed for them
(`fraud.predictions.read_window`), so each model scores exactly what was served, whichever model
served it; the labels are the simulation's truth, all of them (the monitoring job only ever sees
the matured ones)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fraud import schema
from fraud.metrics import average_precision
from fraud.predictions import read_window
from fraud.registry import load_version
from monitoring import frames


@dataclass(frozen=True)
class ModelScore:
    """One model on a set of days."""

    version: str
    average_precision: float
    recall: float  # at the model's own threshold
    alerts: int


@dataclass(frozen=True)
class Comparison:
    """Models scored on the same transactions of [start, end)."""

    start: dt.date
    end: dt.date  # exclusive
    transactions: int
    frauds: int
    scores: dict[str, ModelScore]

    def as_dict(self) -> dict[str, object]:
        return {
            "start": self.start.isoformat(),
            "end": (self.end - dt.timedelta(days=1)).isoformat(),
            "transactions": self.transactions,
            "frauds": self.frauds,
            "models": {v: s.__dict__ for v, s in self.scores.items()},
        }


def with_truth(frame: pd.DataFrame, truth: pd.DataFrame) -> np.ndarray:
    """The simulation's labels of the log frame's transactions, in its order."""
    labels = truth.set_index(schema.TRANSACTION_ID)[schema.TX_FRAUD]
    y = frame[frames.TRANSACTION].map(labels)
    if y.isna().any():
        raise ValueError(f"{int(y.isna().sum())} logged transactions are not in the simulation")
    return y.to_numpy(dtype=int)


def served_frame(log: str, start: dt.date, end: dt.date) -> pd.DataFrame:
    return read_window(
        log, dt.datetime.combine(start, dt.time()), dt.datetime.combine(end, dt.time())
    )


def compare(
    log: str,
    truth: pd.DataFrame,
    model_name: str,
    versions: list[str],
    start: dt.date,
    end: dt.date,
) -> Comparison:
    """Every version in `versions` scored on the logged transactions of [start, end)."""
    frame = served_frame(log, start, end)
    y = with_truth(frame, truth)
    out = {}
    for v in versions:
        described, booster = load_version(model_name, version=v)
        missing = [f for f in described.features if f not in frame.columns]
        if missing:
            raise ValueError(f"v{v} needs features the log does not hold: {missing}")
        s = np.asarray(booster.inplace_predict(frame[described.features].to_numpy(np.float32)))
        alert = s >= described.threshold
        frauds = max(int(y.sum()), 1)
        out[v] = ModelScore(
            version=v,
            average_precision=float(average_precision(y, s)),
            recall=float((alert & (y == 1)).sum() / frauds),
            alerts=int(alert.sum()),
        )
    return Comparison(start, end, len(frame), int(y.sum()), out)


def daily_average_precision(
    log: str, truth: pd.DataFrame, model_name: str, versions: list[str], first: dt.date, days: int
) -> pd.DataFrame:
    """Per day: the served scores' AP, and each version's AP on the same transactions."""
    end = first + dt.timedelta(days=days)
    frame = served_frame(log, first, end)
    frame["y"] = with_truth(frame, truth)
    frame["day"] = frame[frames.TIME].dt.normalize()
    scored = {}
    for v in versions:
        described, booster = load_version(model_name, version=v)
        scored[v] = np.asarray(
            booster.inplace_predict(frame[described.features].to_numpy(np.float32))
        )
    rows = []
    for day, idx in frame.groupby("day").indices.items():
        y = frame["y"].to_numpy()[idx]
        row: dict[str, object] = {"day": pd.Timestamp(day).date(), "frauds": int(y.sum())}
        row["served"] = (
            average_precision(y, frame[frames.SCORE].to_numpy()[idx]) if y.any() else None
        )
        for v, s in scored.items():
            row[f"v{v}"] = average_precision(y, s[idx]) if y.any() else None
        rows.append(row)
    return pd.DataFrame(rows)
