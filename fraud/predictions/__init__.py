"""The prediction log: every prediction the service made and every late fraud label.

`serving` writes it (`open_prediction_log`, typed rows), `monitoring` reads it (`read_window`,
`PredictionLogReader`); the tables and columns are the contract in `contract.py`. Backends: one
SQLite file in WAL mode (the embedded default) or a PostgreSQL database.
"""

from fraud.predictions.contract import (
    DEFAULT_PREDICTION_LOG,
    FEEDBACK_COLUMNS,
    FEEDBACK_TABLE,
    PREDICTION_COLUMNS,
    PREDICTIONS_TABLE,
    PredictionLogError,
)
from fraud.predictions.postgres import redact_url
from fraud.predictions.reader import WINDOW_COLUMNS, PredictionLogReader, read_window
from fraud.predictions.rows import FeedbackRow, PredictionRow
from fraud.predictions.writer import PredictionLogWriter, open_prediction_log

__all__ = [
    "DEFAULT_PREDICTION_LOG",
    "FEEDBACK_COLUMNS",
    "FEEDBACK_TABLE",
    "PREDICTIONS_TABLE",
    "PREDICTION_COLUMNS",
    "WINDOW_COLUMNS",
    "FeedbackRow",
    "PredictionLogError",
    "PredictionLogReader",
    "PredictionLogWriter",
    "PredictionRow",
    "open_prediction_log",
    "read_window",
    "redact_url",
]
