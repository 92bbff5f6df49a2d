"""The floor of a request on this stack: the service's own app with the online features and
the prediction log swapped for no-ops, for `benchmarks/serving/budget.py`.

Everything else is the service's: uvicorn (uvloop, httptools), FastAPI and the middlewares,
the request model, the log rows, XGBoost on the registered model, the JSON response and the
metrics. The features are zeros but for TX_AMOUNT (the trees walk as deep either way), and the
log drops its rows. What the features, the state and the log cost over HTTP is the service's
CPU per request minus this app's, measured in the same run.

    uvicorn benchmarks.serving.floor:create_floor_app --factory --workers 2 --no-access-log

Never a way to serve predictions: it records nothing and every score is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

import serving.app as service
from fraud import schema
from fraud.features import FeatureBatch, FeatureConfig, Transaction
from fraud.predictions import PREDICTIONS_TABLE


class ZeroFeatures:
    """`FeatureStore` that keeps no state: every feature is 0 but the amount."""

    def __init__(self, cfg: FeatureConfig) -> None:
        self.cfg = cfg
        self.names = cfg.feature_names()

    def seed(self, history: Any) -> None:
        pass

    def features_many(self, txs: Sequence[Transaction]) -> FeatureBatch:
        columns = {name: np.zeros(len(txs)) for name in self.names}
        columns[schema.TX_AMOUNT] = np.fromiter(
            (tx.amount for tx in txs), dtype=np.float64, count=len(txs)
        )
        return FeatureBatch(columns)

    async def afeatures_many(self, txs: Sequence[Transaction]) -> FeatureBatch:
        return self.features_many(txs)

    def add_label(self, transaction_id: int, is_fraud: bool) -> bool:
        return False

    def seen(self, transaction_id: int) -> bool:
        return False

    def close(self) -> None:
        pass


class DroppedLog:
    """A `fraud.predictions.PredictionLogWriter` that keeps nothing."""

    def log_predictions(self, rows: Iterable[Sequence[Any]]) -> None:
        pass

    def log_feedback(self, rows: Iterable[Sequence[Any]]) -> None:
        pass

    def count(self, table: str = PREDICTIONS_TABLE) -> int:
        return 0

    def close(self) -> None:
        pass


def create_floor_app() -> Any:
    """The service's app (`serving.app.create_app`) on `ZeroFeatures` and `DroppedLog`."""
    service.open_feature_store = lambda settings, cfg, history: ZeroFeatures(cfg)  # type: ignore[assignment]
    service.open_prediction_log = lambda target: DroppedLog()  # type: ignore[assignment]
    return service.create_app()
