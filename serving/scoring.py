"""Scoring a request's transactions: features from the online state, the model's scores,
the decisions at its threshold, optional per-feature contributions, and the prediction log's
rows, committed before anything is returned."""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
from fastapi import HTTPException

from fraud.features import DuplicateTransactionError, FeatureBatch, Transaction
from fraud.predictions import PredictionRow
from fraud.schema import TransactionRecord
from serving.degradation import BackendUnavailableError
from serving.model_store import ServingModel
from serving.runtime import Runtime

log = logging.getLogger("serving")


def _transaction(r: TransactionRecord) -> Transaction:
    return Transaction(r.TRANSACTION_ID, r.TX_DATETIME, r.CUSTOMER_ID, r.TERMINAL_ID, r.TX_AMOUNT)


def top_contributions(
    model: ServingModel, contrib: np.ndarray, values: dict[str, float], k: int
) -> list[dict[str, Any]]:
    """The `k` largest of one row's contributions (bias excluded), with the feature values."""
    top = np.argsort(-np.abs(contrib))[:k]
    out = []
    for i in top:
        v = values[model.features[i]]
        out.append(
            {
                "feature": model.features[i],
                "value": None if math.isnan(v) else v,
                "contribution": float(contrib[i]),
            }
        )
    return out


async def score_transactions(
    rt: Runtime, records: list[TransactionRecord], explain: bool
) -> list[dict[str, Any]]:
    """Features, scores, log and state update for a list of transactions (in order); the
    predictions as JSON-ready dicts (the `Prediction` schema).

    Raises HTTPException: 503 without a model or when the log cannot be written, 409 for a
    TRANSACTION_ID already scored (or repeated in `records`).
    """
    model, state = rt.require_model()
    try:
        feats = await state.afeatures_many([_transaction(r) for r in records])
    except DuplicateTransactionError as e:
        raise HTTPException(
            409, detail={"error": "duplicate TRANSACTION_ID", "ids": e.ids[:20]}
        ) from e
    except BackendUnavailableError as e:  # Redis down: nothing was recorded or logged
        log.error("%s", e)
        raise HTTPException(
            503,
            detail=f"the {e.backend} {e.state}, so the transaction was not scored: "
            "retry later with the same TRANSACTION_ID",
        ) from e
    names = model.features
    if isinstance(feats, FeatureBatch):  # a batch, by column: no per-row dicts
        x = feats.matrix(names)
        logged: Sequence[dict[str, float]] = feats.rows()
    else:
        row = itemgetter(*names) if len(names) > 1 else lambda f: (f[names[0]],)
        x = np.fromiter(
            chain.from_iterable(map(row, feats)), dtype=np.float32, count=len(feats) * len(names)
        ).reshape(len(feats), -1)
        logged = feats
    raw = model.predictor.predict(x)
    rt.metrics.scores.observe_many(raw)
    scores = raw.tolist()
    threshold, name, version, alias = model.threshold, model.name, model.version, model.alias
    rt.metrics.count_decisions(version, len(scores), int(np.count_nonzero(raw >= threshold)))
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat()
    rows = [
        PredictionRow(
            r.TRANSACTION_ID,
            r.TX_DATETIME.isoformat(),
            r.CUSTOMER_ID,
            r.TERMINAL_ID,
            r.TX_AMOUNT,
            f,
            score,
            int(score >= threshold),
            threshold,
            name,
            version,
            now,
        )
        for r, f, score in zip(records, logged, scores, strict=True)
    ]
    preds: list[dict[str, Any]] = [
        {
            "TRANSACTION_ID": r.TRANSACTION_ID,
            "fraud_probability": score,
            "is_fraud": score >= threshold,
            "threshold": threshold,
            "model_name": name,
            "model_version": version,
            "model_alias": alias,
        }
        for r, score in zip(records, scores, strict=True)
    ]
    if explain:
        top = rt.settings.top_contributions
        contribs = model.predictor.contributions(x)[:, :-1]  # one call for the whole request
        for pred, f, contrib in zip(preds, feats, contribs, strict=True):
            pred["contributions"] = top_contributions(model, contrib, f, top)
    try:
        rt.log.log_predictions(rows)
    except Exception as e:  # the log's backend is down: no acknowledgement without a record
        log.error("prediction log write failed: %s", e)
        rt.log_failure = f"{type(e).__name__}: {e}"
        raise HTTPException(
            503,
            detail="the prediction log is unavailable, so the prediction was not returned; "
            "the transaction was counted in the online features, so a retry with the same "
            "TRANSACTION_ID is refused (409)",
        ) from e
    if rt.log_failure is not None:
        rt.log_failure = None
    return preds
