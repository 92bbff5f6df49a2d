"""The online feature store's interface: what the API gives it and what it promises.

Two stores keep it: the in-process `OnlineFeatureState` and the Redis one of the serving
package (`serving.feature_store.RedisFeatureStore`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

import numpy as np
import pandas as pd

from fraud.features.config import FeatureConfig

_EPOCH = dt.datetime(1970, 1, 1)
_SECOND = dt.timedelta(seconds=1)


class Transaction(NamedTuple):
    """One raw transaction as the online state sees it (a tuple: cheap to make per request)."""

    transaction_id: int
    tx_datetime: dt.datetime | np.datetime64 | pd.Timestamp
    customer_id: int
    terminal_id: int
    amount: float


class DuplicateTransactionError(ValueError):
    """A transaction id the state has already recorded (within its lookback)."""

    def __init__(self, ids: Iterable[int]) -> None:
        self.ids = sorted(set(ids))
        super().__init__(f"transaction ids already seen: {self.ids[:20]}")


def tx_seconds(value: dt.datetime | np.datetime64 | pd.Timestamp) -> int:
    """Seconds since the epoch, floored (as offline); naive datetimes are UTC."""
    if isinstance(value, dt.datetime):  # pd.Timestamp is one too
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return int((value - _EPOCH) // _SECOND)
    return int(np.asarray(value, dtype="datetime64[s]").astype(np.int64))


class FeatureStore(Protocol):
    """The online feature state behind the API: in-process (`OnlineFeatureState`) or shared
    (`serving.feature_store.RedisFeatureStore`)."""

    cfg: FeatureConfig

    def seed(self, history: pd.DataFrame) -> None: ...

    def features_many(self, txs: Sequence[Transaction]) -> Sequence[dict[str, float]]: ...

    async def afeatures_many(self, txs: Sequence[Transaction]) -> Sequence[dict[str, float]]: ...

    def add_label(self, transaction_id: int, is_fraud: bool) -> bool: ...

    def seen(self, transaction_id: int) -> bool: ...

    def close(self) -> None: ...
