"""What monitoring reads: a window of predictions as a typed frame, each with its fraud label.

One query per window; the database filters on the transaction time and joins the latest label
(both through indexes), and the features' JSON is parsed in one call for the whole window.
"""

from __future__ import annotations

import datetime as dt
import io
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import pyarrow.json

from fraud.predictions import postgres, sqlite
from fraud.predictions.contract import PREDICTION_COLUMNS, PREDICTIONS_TABLE, PredictionLogError

#: The frame's columns before the features (one float column per feature name follows, in
#: name order: PostgreSQL's JSONB does not keep the order the service logged them in).
WINDOW_COLUMNS: dict[str, str] = {
    "transaction_id": "int64",
    "tx_datetime": "datetime64[ns]",
    "customer_id": "int64",
    "terminal_id": "int64",
    "amount": "float64",
    "score": "float64",
    "is_alert": "int64",
    "threshold": "float64",
    "model_name": "object",
    "model_version": "object",
    "logged_at": "datetime64[ns]",
    "is_fraud": "Int64",  # <NA>: no label (known by then)
    "label_known_at": "datetime64[ns]",
}
_QUERY_COLUMNS = [*PREDICTION_COLUMNS, "is_fraud", "label_known_at"]


def _iso_utc(t: dt.datetime | str) -> str:
    """`t` as the log writes times: ISO 8601 in UTC without an offset (a naive time is UTC)."""
    ts = pd.Timestamp(t)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return str(ts.to_pydatetime().isoformat())


def _parse_times(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, format="ISO8601", utc=True).dt.tz_localize(None)


def _features_frame(texts: list[str], index: pd.Index) -> pd.DataFrame:
    """One float column per feature name (NaN where a row has none or logged null), parsed
    from newline-delimited JSON by Arrow in one call (1.3-2x faster than orjson followed by
    building the frame from dicts)."""
    if not texts:
        return pd.DataFrame(index=index)
    table = pyarrow.json.read_json(io.BytesIO("\n".join(texts).encode()))
    frame = table.to_pandas().astype("float64")
    frame.index = index
    return frame[sorted(frame.columns)]


def _window_frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    raw = pd.DataFrame.from_records(rows, columns=_QUERY_COLUMNS)
    features = _features_frame(raw.pop("features").tolist(), raw.index)
    clash = set(features.columns) & set(WINDOW_COLUMNS)
    if clash:
        raise PredictionLogError(
            f"logged feature names {sorted(clash)} are also prediction-log columns"
        )
    for column in ("tx_datetime", "logged_at", "label_known_at"):
        raw[column] = _parse_times(raw[column])
    typed = raw.astype(WINDOW_COLUMNS)[list(WINDOW_COLUMNS)]
    return pd.concat([typed, features], axis=1)


class PredictionLogReader:
    """A read-only view of the prediction log at `target` (a PostgreSQL URL or a SQLite path,
    as for `open_prediction_log`); one connection, thread-safe.

    Raises PredictionLogError if PostgreSQL cannot be reached or the SQLite file does not exist
    (a reader never creates a log).
    """

    def __init__(self, target: str | Path) -> None:
        self._lock = threading.Lock()
        self._conn: Any
        if postgres.is_postgres_url(target):
            connector = postgres.PostgresConnector(
                str(target), application_name="fraud-prediction-log-reader"
            )
            self.target = connector.url
            self._conn = connector.connect()
            self._query = postgres.window_query
        else:
            self.target = str(target)
            self._conn = sqlite.connect_read_only(Path(target))
            self._query = sqlite.window_query

    def __repr__(self) -> str:
        return f"PredictionLogReader({self.target!r})"

    def read_window(
        self,
        start: dt.datetime | str,
        end: dt.datetime | str,
        *,
        labels_known_by: dt.datetime | str | None = None,
        model_version: str | None = None,
    ) -> pd.DataFrame:
        """The predictions whose transaction time is in [start, end), in time order, one row
        each: `WINDOW_COLUMNS` then one float column per logged feature name.

        Each carries its transaction's label, the last one received; with `labels_known_by`,
        only labels known by then (`known_at <= labels_known_by`), as a concept-drift job
        replaying that moment would have had them. With `model_version`, only that version's
        predictions. Times are UTC; an aware datetime is converted.
        """
        params = {"start": _iso_utc(start), "end": _iso_utc(end)}
        if labels_known_by is not None:
            params["known_by"] = _iso_utc(labels_known_by)
        if model_version is not None:
            params["version"] = model_version
        sql = self._query(
            labels_known_by=labels_known_by is not None, model_version=model_version is not None
        )
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return _window_frame(rows)

    def time_range(self) -> tuple[dt.datetime, dt.datetime] | None:
        """The first and last transaction times in the log (None when it is empty): where a
        monitoring job that was given no window finds the latest day (uses the tx_datetime
        index in both backends)."""
        sql = f"SELECT MIN(tx_datetime), MAX(tx_datetime) FROM {PREDICTIONS_TABLE}"
        with self._lock:
            first, last = self._conn.execute(sql).fetchone()
        if first is None:
            return None
        return (
            pd.Timestamp(first).to_pydatetime(),
            pd.Timestamp(last).to_pydatetime(),
        )

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> PredictionLogReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_window(
    target: str | Path,
    start: dt.datetime | str,
    end: dt.datetime | str,
    *,
    labels_known_by: dt.datetime | str | None = None,
    model_version: str | None = None,
) -> pd.DataFrame:
    """`PredictionLogReader(target).read_window(...)` for a single window (opens and closes)."""
    with PredictionLogReader(target) as reader:
        return reader.read_window(
            start, end, labels_known_by=labels_known_by, model_version=model_version
        )
