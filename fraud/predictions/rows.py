"""The rows the writer takes, one per prediction and one per late label, and how their
features are written as JSON.

NamedTuples, so that the backends pass them to the database positionally, as the contract's
columns in order, with no conversion per row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import orjson


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


def features_as_json(features: Sequence[Mapping[str, float]]) -> list[str]:
    """Each row's features as a JSON object; NaN and ±inf become null (standard JSON for any
    reader, and what JSONB accepts).

    One orjson call for the whole list, split between the objects (a row holds only names and
    numbers, so "},{" occurs only there): 3x faster than a call per row, and about 20x faster
    than psycopg's Jsonb adapter (`json.dumps` per row), which took most of a 1,000-row COPY.
    """
    if not features:
        return []
    text = orjson.dumps(features).decode()
    return [f"{{{part}}}" for part in text[2:-2].split("},{")]
