"""The rows the writer takes: one per prediction, one per late label.

NamedTuples, so that the backends pass them to the database positionally, as the contract's
columns in order, with no conversion per row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple


class PredictionRow(NamedTuple):
    """One scored transaction; fields are `PREDICTION_COLUMNS` in order."""

    transaction_id: int
    tx_datetime: str  # ISO 8601, UTC
    customer_id: int
    terminal_id: int
    amount: float
    features: Mapping[str, float]  # stored as JSON; NaN and ±inf become null
    score: float
    is_alert: int
    threshold: float
    model_name: str
    model_version: str
    logged_at: str  # ISO 8601, UTC


class FeedbackRow(NamedTuple):
    """One fraud label that arrived after the prediction; fields are `FEEDBACK_COLUMNS` in order."""

    transaction_id: int
    is_fraud: int
    known_at: str  # when the label became known (ISO 8601, UTC)
    received_at: str  # when the service received it (ISO 8601, UTC)
