"""Append-only prediction log in SQLite (WAL mode): every prediction and every late label.

Each request's rows are committed before the response is sent, so an acknowledged prediction
survives a crash of the service (WAL with synchronous=NORMAL is durable against process crashes;
a power loss can lose the last transactions not yet checkpointed by the OS).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fraud.predictions import (
    FEEDBACK_COLUMNS,
    FEEDBACK_TABLE,
    PREDICTION_COLUMNS,
    PREDICTIONS_TABLE,
)


def _json_features(features: dict[str, float]) -> str:
    return json.dumps(
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in features.items()}
    )


class PredictionLog:
    """Thread-safe writer; one connection per process."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        for table, cols in (
            (PREDICTIONS_TABLE, PREDICTION_COLUMNS),
            (FEEDBACK_TABLE, FEEDBACK_COLUMNS),
        ):
            spec = ", ".join(f"{c} {t}" for c, t in cols.items())
            self._conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({spec})")
        self._conn.execute(
            f"CREATE INDEX IF NOT EXISTS {PREDICTIONS_TABLE}_tx ON {PREDICTIONS_TABLE}(transaction_id)"
        )
        self._insert_prediction = (
            f"INSERT INTO {PREDICTIONS_TABLE} ({', '.join(PREDICTION_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(PREDICTION_COLUMNS))})"
        )
        self._insert_feedback = (
            f"INSERT INTO {FEEDBACK_TABLE} ({', '.join(FEEDBACK_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(FEEDBACK_COLUMNS))})"
        )

    def log_predictions(self, rows: Iterable[Sequence[Any]]) -> None:
        """Rows in PREDICTION_COLUMNS order (features as a dict); committed before returning."""
        prepared = [(*r[:5], _json_features(r[5]), *r[6:]) for r in rows]
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.executemany(self._insert_prediction, prepared)
            self._conn.execute("COMMIT")

    def log_feedback(self, rows: Iterable[Sequence[Any]]) -> None:
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.executemany(self._insert_feedback, list(rows))
            self._conn.execute("COMMIT")

    def count(self, table: str = PREDICTIONS_TABLE) -> int:
        with self._lock:
            return int(self._conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
