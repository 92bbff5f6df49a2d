"""The prediction-log contract: what `serving` writes and `monitoring` reads.

Embedded default: one SQLite file in WAL mode with two append-only tables.
"""

from __future__ import annotations

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
