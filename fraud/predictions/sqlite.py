"""The prediction log in one SQLite file (the embedded default): the writer, and the reader's query.

The writer commits each call's rows in one transaction before it returns. WAL with
synchronous=NORMAL: a commit is in the WAL file (in the OS's page cache) when it returns, durable
against a crash of the service, not necessarily against a power loss or an OS crash (the last
transactions not yet fsynced by a checkpoint).
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fraud.predictions.contract import (
    FEEDBACK_COLUMNS,
    FEEDBACK_TABLE,
    INDEXES,
    PREDICTION_COLUMNS,
    PREDICTIONS_TABLE,
    TABLES,
    PredictionLogError,
    checked_table,
)
from fraud.predictions.rows import FeedbackRow, PredictionRow, features_as_json

log = logging.getLogger("fraud.predictions")

#: One row that `probe` rewrites: a write that proves the file takes writes. Not part of the
#: contract (no reader looks at it).
PROBE_TABLE = "prediction_log_write_probe"
#: Bytes the probe writes: more than a request's rows, so that a probe that fits where the
#: next request's rows would not (the last pages of a full disk) does not report a recovery.
PROBE_BYTES = 64 * 1024


class SQLitePredictionLog:
    """SQLite in WAL mode; thread-safe writer, one connection per process.

    Checkpoints (copying committed pages from the WAL into the database file) run in a
    background thread on a connection of their own, every `checkpoint_seconds` after a write,
    instead of inside whichever commit crosses SQLite's 1,000-page mark: there they took 15-25 ms
    every few 1,000-row batches (the tail of the batch endpoint). The thread starts with the
    first write. The commit itself, and so what is durable when a response is sent, is
    unchanged. The writer still checkpoints by itself past `WAL_BACKSTOP_PAGES` should the
    thread fall behind.
    """

    #: Pages in the WAL past which a commit checkpoints by itself (the thread normally keeps
    #: the WAL far below: about 4 MB of pages per second at 30,000 logged rows a second).
    WAL_BACKSTOP_PAGES = 20_000

    def __init__(self, path: Path, *, checkpoint_seconds: float = 0.2) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=5.0
        )
        self._create_schema()
        self._conn.execute(f"PRAGMA wal_autocheckpoint={self.WAL_BACKSTOP_PAGES}")
        self._written = threading.Event()
        self._closing = threading.Event()
        self._checkpoint_seconds = checkpoint_seconds
        self._checkpointer: threading.Thread | None = None  # started by the first write
        self.checkpoints = 0
        self._insert_prediction = (
            f"INSERT INTO {PREDICTIONS_TABLE} ({', '.join(PREDICTION_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(PREDICTION_COLUMNS))})"
        )
        self._insert_feedback = (
            f"INSERT INTO {FEEDBACK_TABLE} ({', '.join(FEEDBACK_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(FEEDBACK_COLUMNS))})"
        )

    def _create_schema(self) -> None:
        """Switch to WAL and create the tables and indexes, tolerating a sibling worker doing
        the same.

        Two uvicorn workers open the same file at start-up; switching the journal mode
        and creating tables take locks that SQLite can refuse with "database is locked"
        without calling the busy handler, so the whole (idempotent) block is retried.
        """
        statements = [
            "PRAGMA busy_timeout=5000",
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            *(
                f"CREATE TABLE IF NOT EXISTS {table} "
                f"({', '.join(f'{c} {t}' for c, t in cols.items())})"
                for table, cols in TABLES.items()
            ),
            *(
                f"CREATE INDEX IF NOT EXISTS {name} ON {table}({column})"
                for name, table, column in INDEXES
            ),
            f"CREATE TABLE IF NOT EXISTS {PROBE_TABLE} "
            "(id INTEGER PRIMARY KEY, probed_at TEXT, padding BLOB)",
        ]
        attempts = 50
        for attempt in range(attempts):
            try:
                for statement in statements:
                    self._conn.execute(statement)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(0.02 * (attempt + 1))

    def __repr__(self) -> str:
        return f"SQLitePredictionLog({str(self.path)!r})"

    def log_predictions(self, rows: Sequence[PredictionRow]) -> None:
        """Commit `rows` in one transaction before returning (features as JSON)."""
        features = features_as_json([r.features for r in rows])
        prepared = [(*r[:5], f, *r[6:]) for r, f in zip(rows, features, strict=True)]
        self._write(self._insert_prediction, prepared)

    def log_feedback(self, rows: Sequence[FeedbackRow]) -> None:
        """Commit `rows` in one transaction before returning."""
        self._write(self._insert_feedback, rows)

    def _write(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(sql, rows)
                self._conn.execute("COMMIT")
            except BaseException:
                self._end_failed_transaction()
                raise
            self._wake_checkpointer()

    def _end_failed_transaction(self) -> None:
        """Roll back what a failed write left open. A COMMIT that fails (disk full, read-only
        file system, I/O error) may have rolled back by itself or not: left open, every later
        BEGIN would fail ("cannot start a transaction within a transaction") even once the
        disk has room again."""
        if not self._conn.in_transaction:
            return
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error as e:
            log.warning("prediction log %s: rollback after a failed write failed: %s", self.path, e)

    def probe(self) -> None:
        """Commit a write now (one row of its own table, never read): PredictionLogError,
        naming the file and SQLite's reason, if the log cannot take writes (disk full,
        read-only). What the API's /ready asks after a failed write."""
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat()
        try:
            self._write(
                f"INSERT OR REPLACE INTO {PROBE_TABLE} (id, probed_at, padding) "
                "VALUES (?, ?, zeroblob(?))",
                [(1, now, PROBE_BYTES)],
            )
        except sqlite3.Error as e:
            raise PredictionLogError(
                f"prediction log {self.path}: cannot write: {e}{_file_system_state(self.path)}"
            ) from e

    def _wake_checkpointer(self) -> None:
        """Signal the checkpoint thread, starting it on the first write (and again in a forked
        child, where the parent's thread does not exist)."""
        if self._checkpointer is None or not self._checkpointer.is_alive():
            if self._closing.is_set():
                return
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop,
                args=(self._checkpoint_seconds,),
                name="prediction-log-checkpoint",
                daemon=True,
            )
            self._checkpointer.start()
        self._written.set()

    def _checkpoint_loop(self, interval: float) -> None:
        conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=5.0)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            while not self._closing.is_set():
                if not self._written.wait(timeout=1.0):
                    continue
                self._written.clear()
                try:
                    # PASSIVE: copies what it can without waiting for (or blocking) writers.
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
                except sqlite3.Error as e:  # the next round tries again
                    log.warning("prediction log checkpoint failed: %s", e)
                self._closing.wait(interval)
        finally:
            conn.close()

    def count(self, table: str = PREDICTIONS_TABLE) -> int:
        """Number of rows in `table` (one of the contract's tables)."""
        with self._lock:
            sql = f"SELECT COUNT(*) FROM {checked_table(table)}"
            return int(self._conn.execute(sql).fetchone()[0])

    def close(self) -> None:
        """Stop the checkpoint thread and close the connection."""
        self._closing.set()
        self._written.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=10)
        with self._lock:
            self._conn.close()


# --- reading -------------------------------------------------------------------------------------


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to an existing log (a reader never creates one)."""
    if not path.is_file():
        raise PredictionLogError(f"no prediction log at {path}")
    conn = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False, timeout=5.0
    )
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def window_query(*, labels_known_by: bool, model_version: bool) -> str:
    """The reader's one query (named parameters `start`, `end`, and `known_by` and `version`
    when asked for): the window's predictions in time order, each with its latest label.

    The label is looked up per prediction through the index on feedback(transaction_id), so the
    cost follows the window, not the whole feedback table. Timestamps are compared as text:
    ISO 8601 in UTC sorts as time.
    """
    known_by = "AND l.known_at <= :known_by" if labels_known_by else ""
    version = "AND p.model_version = :version" if model_version else ""
    columns = ", ".join(f"p.{c}" for c in PREDICTION_COLUMNS)
    return f"""
        SELECT {columns}, f.is_fraud, f.known_at
        FROM {PREDICTIONS_TABLE} AS p
        LEFT JOIN {FEEDBACK_TABLE} AS f ON f.rowid = (
            SELECT l.rowid FROM {FEEDBACK_TABLE} AS l
            WHERE l.transaction_id = p.transaction_id {known_by}
            ORDER BY l.received_at DESC, l.rowid DESC
            LIMIT 1
        )
        WHERE p.tx_datetime >= :start AND p.tx_datetime < :end {version}
        ORDER BY p.tx_datetime, p.rowid
    """


def _file_system_state(path: Path) -> str:
    """What SQLite's message does not say ("disk I/O error", "unable to open database file"):
    whether the log's file system is read-only or (nearly) full; empty when neither. Asked by
    creating a file: a file system that the kernel turned read-only after a disk error still
    shows `rw` to statvfs (ext4's emergency_ro) but refuses writes with EROFS."""
    try:
        fd, name = tempfile.mkstemp(prefix=".write-check-", dir=path.parent)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        if e.errno == errno.EROFS:
            return f" (the file system of {path.parent} is read-only)"
        if e.errno != errno.ENOSPC:
            return f" ({path.parent}: {e.strerror})"
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return ""
    free = st.f_bavail * st.f_frsize
    if free < 2 * PROBE_BYTES:
        return f" (the file system of {path.parent} is full: {free:,} bytes free)"
    return ""
