"""Point-in-time correct feature definitions, computed the same way offline and online.

One `FeatureConfig` defines every feature and its column name. Three implementations compute it:

* `compute_features` (offline, `offline.py`): vectorised over a whole history with sorted keys
  and `searchsorted`, 1.75M transactions in a few seconds. The pipeline's features stage and
  batch scoring use it.
* `online_features` (`online.py`): the features of one incoming transaction from its
  customer's and terminal's records, on Python scalars (the API's hot path).
* `batch_features` (`batch.py`): the same online definition vectorised over a list of
  transactions, each seeing the ones before it.

The online ones read raw records kept in one binary layout (`records.py`) by the in-process
`OnlineFeatureState` (`state.py`) or the Redis store of the serving package; both keep the
`FeatureStore` interface (`store.py`). Every formula is written once (`formulas.py`), and
`tests/fraud/test_features_parity.py` checks that the three implementations give the same
numbers.

Point-in-time rules (what makes them correct):

* customer windows cover (t - w, t] and include the current transaction, which is known at
  scoring time; nothing after t is ever used;
* terminal windows cover (t - delay - w, t - delay]: a fraud label is only known `delay_days`
  after the transaction (investigation delay), so labels younger than that are never used;
* "previous" features (amount ratio, recency, customer-terminal history) exclude the current
  transaction.

Rows with the same entity and timestamp are ordered by their position in the input (time order,
then TRANSACTION_ID), the same order in which a stream would deliver them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fraud.features.batch import FeatureBatch, batch_features
    from fraud.features.config import DAY_SECONDS, FeatureConfig, FeatureNames
    from fraud.features.offline import compute_features
    from fraud.features.online import online_features
    from fraud.features.records import (
        CUSTOMER_RECORD,
        TERMINAL_RECORD,
        HistoryRecords,
        customer_record,
        history_records,
        terminal_record,
    )
    from fraud.features.state import OnlineFeatureState, ShardedDict
    from fraud.features.store import (
        DuplicateTransactionError,
        FeatureStore,
        Transaction,
        tx_seconds,
    )

#: Where each re-exported name lives. Imported on first use (PEP 562), so that a caller loads
#: only the modules it uses: the pipeline's stages never load the online modules, and DVC,
#: which hashes the code each stage runs, does not rerun the pipeline when only they change.
_HOME: dict[str, str] = {
    "FeatureBatch": "batch",
    "batch_features": "batch",
    "DAY_SECONDS": "config",
    "FeatureConfig": "config",
    "FeatureNames": "config",
    "compute_features": "offline",
    "online_features": "online",
    "CUSTOMER_RECORD": "records",
    "TERMINAL_RECORD": "records",
    "HistoryRecords": "records",
    "customer_record": "records",
    "history_records": "records",
    "terminal_record": "records",
    "OnlineFeatureState": "state",
    "ShardedDict": "state",
    "DuplicateTransactionError": "store",
    "FeatureStore": "store",
    "Transaction": "store",
    "tx_seconds": "store",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'fraud.features' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"fraud.features.{home}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME])


__all__ = [
    "CUSTOMER_RECORD",
    "DAY_SECONDS",
    "TERMINAL_RECORD",
    "DuplicateTransactionError",
    "FeatureBatch",
    "FeatureConfig",
    "FeatureNames",
    "FeatureStore",
    "HistoryRecords",
    "OnlineFeatureState",
    "ShardedDict",
    "Transaction",
    "batch_features",
    "compute_features",
    "customer_record",
    "history_records",
    "online_features",
    "terminal_record",
    "tx_seconds",
]
