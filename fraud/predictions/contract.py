"""The prediction-log contract: the tables and columns that `serving` writes and `monitoring` reads.

Two append-only tables. Timestamps are ISO 8601 text in UTC without an offset, so that their
text order is their time order in both backends.
"""

from __future__ import annotations

#: Where the API writes the log and monitoring reads it when FRAUD_PREDICTION_LOG is not set
#: (a SQLite file relative to the working directory; a postgresql:// URL selects PostgreSQL).
DEFAULT_PREDICTION_LOG = ".cache/serving/predictions.sqlite"

PREDICTIONS_TABLE = "predictions"
FEEDBACK_TABLE = "feedback"

#: column -> SQLite type, in order.
PREDICTION_COLUMNS: dict[str, str] = {
    "transaction_id": "INTEGER NOT NULL",
    "tx_datetime": "TEXT NOT NULL",  # ISO 8601, UTC
    "customer_id": "INTEGER NOT NULL",
    "terminal_id": "INTEGER NOT NULL",
    "amount": "REAL NOT NULL",
    "features": "TEXT NOT NULL",  # JSON object: feature name -> value (null for NaN)
    "score": "REAL NOT NULL",
    "is_alert": "INTEGER NOT NULL",
    "threshold": "REAL NOT NULL",
    "model_name": "TEXT NOT NULL",
    "model_version": "TEXT NOT NULL",
    "logged_at": "TEXT NOT NULL",  # ISO 8601, UTC, when the prediction was made
}

FEEDBACK_COLUMNS: dict[str, str] = {
    "transaction_id": "INTEGER NOT NULL",
    "is_fraud": "INTEGER NOT NULL",
    "known_at": "TEXT NOT NULL",  # when the label became known (ISO 8601, UTC)
    "received_at": "TEXT NOT NULL",
}

TABLES: dict[str, dict[str, str]] = {
    PREDICTIONS_TABLE: PREDICTION_COLUMNS,
    FEEDBACK_TABLE: FEEDBACK_COLUMNS,
}

#: Columns that hold a JSON object (a mapping in the rows given to the writer).
JSON_COLUMNS = frozenset({"features"})

#: (index name, table, column): what the reader filters and joins on, in both backends.
INDEXES: tuple[tuple[str, str, str], ...] = (
    (f"{PREDICTIONS_TABLE}_tx", PREDICTIONS_TABLE, "transaction_id"),
    (f"{PREDICTIONS_TABLE}_tx_datetime", PREDICTIONS_TABLE, "tx_datetime"),
    (f"{FEEDBACK_TABLE}_tx", FEEDBACK_TABLE, "transaction_id"),
)


class PredictionLogError(RuntimeError):
    """The prediction log cannot be opened, written or read; the message never holds a password."""


def checked_table(table: str) -> str:
    """`table` if it is one of the contract's tables; ValueError otherwise (it goes into SQL)."""
    if table not in TABLES:
        raise ValueError(f"unknown prediction-log table {table!r}; expected one of {list(TABLES)}")
    return table
