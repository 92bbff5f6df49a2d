"""The layout of the frames every check reads: one row per scored transaction.

It is the prediction-log reader's (`fraud.predictions.read_window`): the columns of
`fraud.predictions.WINDOW_COLUMNS`, then one float column per model feature. The reference
frame published with a model (its training data, scored by it) has the same layout; columns a
reference cannot have (`logged_at`, `threshold`, ...) may be missing from it.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from fraud.predictions import WINDOW_COLUMNS

#: When the transaction happened (UTC, naive): windows and cohorts are cut on it.
TIME = "tx_datetime"
TRANSACTION = "transaction_id"
CUSTOMER = "customer_id"
TERMINAL = "terminal_id"
#: The raw amount (also a model feature under the contract's name `TX_AMOUNT`).
AMOUNT = "amount"
#: The model's fraud probability, and whether it was at or above the threshold.
SCORE = "score"
ALERT = "is_alert"
THRESHOLD = "threshold"
MODEL_VERSION = "model_version"
#: The transaction's fraud label (0/1, nullable Int64: <NA> while unknown) and when it became
#: known.
LABEL = "is_fraud"
LABEL_KNOWN_AT = "label_known_at"


def feature_columns(frame: pd.DataFrame, known: Iterable[str] = WINDOW_COLUMNS) -> list[str]:
    """The model-feature columns of a monitoring frame: every column that is not the log's."""
    skip = set(known)
    return [c for c in frame.columns if c not in skip]
