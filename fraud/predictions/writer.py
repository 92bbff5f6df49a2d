"""What the service writes to: one interface over the SQLite and PostgreSQL backends."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from fraud.predictions.contract import PREDICTIONS_TABLE
from fraud.predictions.postgres import PostgresPredictionLog, is_postgres_url
from fraud.predictions.rows import FeedbackRow, PredictionRow
from fraud.predictions.sqlite import SQLitePredictionLog


class PredictionLogWriter(Protocol):
    """An append-only prediction log; every call's rows are committed before it returns, so a
    service that writes before it answers never acknowledges an unlogged prediction."""

    def log_predictions(self, rows: Sequence[PredictionRow]) -> None:
        """Commit `rows` in one transaction before returning."""
        ...

    def log_feedback(self, rows: Sequence[FeedbackRow]) -> None:
        """Commit `rows` in one transaction before returning."""
        ...

    def count(self, table: str = PREDICTIONS_TABLE) -> int:
        """Number of rows in `table` (one of the contract's tables)."""
        ...

    def close(self) -> None:
        """Release the connection (and the SQLite checkpoint thread)."""
        ...


def open_prediction_log(target: str | Path) -> PredictionLogWriter:
    """The prediction log at `target`: a PostgreSQL URL (`postgresql://user@host:5432/db` or
    `postgres://...`), else a SQLite file path; its tables and indexes are created if missing.

    Raises PredictionLogError (naming the URL without its password) when PostgreSQL cannot be
    reached, or for a URL of another kind (rather than create a SQLite file named after it).
    """
    if is_postgres_url(target):
        return PostgresPredictionLog(str(target))
    return SQLitePredictionLog(Path(target))
