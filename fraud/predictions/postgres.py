"""The prediction log in PostgreSQL (psycopg 3, imported when used): the writer, the reader's
connection and query, and URLs shown without their password.

With the server's default `synchronous_commit = on` (and `fsync = on`), a commit returns once its
WAL record is flushed to disk: durable against a crash of the service, of PostgreSQL and of the
machine (on storage that honours flushes).
"""

from __future__ import annotations

import logging
import re
import select
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from fraud.predictions.contract import (
    FEEDBACK_TABLE,
    INDEXES,
    JSON_COLUMNS,
    PREDICTION_COLUMNS,
    PREDICTIONS_TABLE,
    TABLES,
    PredictionLogError,
    checked_table,
)
from fraud.predictions.rows import FeedbackRow, PredictionRow, features_as_json

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("fraud.predictions")

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_SQLITE_TO_POSTGRES = {"INTEGER": "BIGINT", "REAL": "DOUBLE PRECISION", "TEXT": "TEXT"}
#: The contract's ISO 8601 text columns.
_TIMESTAMPS = frozenset({"tx_datetime", "logged_at", "known_at", "received_at"})


def postgres_column_type(column: str, sqlite_type: str) -> str:
    """The PostgreSQL type of a contract column: INTEGER -> BIGINT, REAL -> DOUBLE PRECISION,
    TEXT -> TEXT (timestamps stay ISO 8601 text, as in SQLite), JSON columns -> JSONB; the
    constraints (NOT NULL) are kept."""
    base, _, rest = sqlite_type.partition(" ")
    pg = "JSONB" if column in JSON_COLUMNS else _SQLITE_TO_POSTGRES[base.upper()]
    return f"{pg} {rest}".strip()


def is_postgres_url(target: str | Path) -> bool:
    """True for a PostgreSQL URL (`postgresql://` or `postgres://`), False for a SQLite path;
    PredictionLogError for a URL of another kind (rather than take it for a file name)."""
    if not isinstance(target, str):
        return False
    if target.lower().startswith(POSTGRES_SCHEMES):
        return True
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", target):
        raise PredictionLogError(
            f"unsupported prediction log URL {redact_url(target)}: use postgresql://... "
            "or a SQLite file path"
        )
    return False


def _url_passwords(url: str) -> list[str]:
    """The password-like parts of `url` as written: the user info after ':' (up to the last
    '@', whatever libpq makes of it) and every `password=` parameter, raw and decoded."""
    _, sep, rest = url.partition("://")
    found: list[str] = []
    if sep:
        at = rest.rfind("@")
        if at != -1:
            found.append(rest[:at].partition(":")[2])
        found += re.findall(r"(?i)[?&]password=([^&]*)", rest)
    return [v for p in found for v in {p, unquote(p)} if v]


def redact_url(url: str) -> str:
    """`url` with its password (in the user info or a `password=` parameter) replaced by ***."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    at = rest.rfind("@")  # an unescaped '@' in a password belongs to the user info
    if at != -1:
        user, colon, _ = rest[:at].partition(":")
        if colon:
            rest = f"{user}:***@{rest[at + 1 :]}"
    rest = re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", rest)
    return f"{scheme}://{rest}"


def scrub_secrets(text: str, secrets: Iterable[str]) -> str:
    """`text` (a libpq message) without any of `secrets`, nor any quoted value that is part of
    one (libpq quotes the values it rejects, e.g. a malformed password read as a port)."""
    secrets = [s for s in secrets if s]
    for s in sorted(secrets, key=len, reverse=True):
        text = text.replace(s, "***")
    return re.sub(
        r"([\"'])([^\"']*)\1",
        lambda m: f"{m[1]}***{m[1]}" if m[2] and any(m[2] in s for s in secrets) else m[0],
        text,
    )


class PostgresConnector:
    """Opens connections to one database, with errors that name the URL without its password."""

    #: Seconds to wait for a connection when the URL does not say (libpq waits forever).
    CONNECT_TIMEOUT = 10

    def __init__(self, url: str, *, application_name: str) -> None:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        self.url = redact_url(url)
        self._secrets = _url_passwords(url)
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as e:
            raise PredictionLogError(
                f"invalid PostgreSQL URL for the prediction log {self.url}: {self.scrub(e)}"
            ) from None
        self._secrets.append(str(params.get("password") or ""))
        self._conninfo = url
        self._kwargs: dict[str, Any] = {"application_name": application_name}
        if "connect_timeout" not in params:
            self._kwargs["connect_timeout"] = self.CONNECT_TIMEOUT

    def scrub(self, e: BaseException) -> str:
        """The message of `e` without the URL's password."""
        return scrub_secrets(str(e).strip(), self._secrets)

    def connect(self) -> psycopg.Connection[Any]:
        """A new autocommit connection; PredictionLogError if the server cannot be reached."""
        import psycopg

        try:
            return psycopg.connect(self._conninfo, autocommit=True, **self._kwargs)
        except psycopg.Error as e:
            raise PredictionLogError(
                f"cannot connect to the prediction log at {self.url}: {self.scrub(e)}"
            ) from None


class PostgresPredictionLog:
    """PostgreSQL through psycopg 3; thread-safe, one connection per process guarded by a lock.

    Each call is one statement in autocommit mode, hence one transaction that is committed
    before the call returns: an INSERT for one row (one round trip), a COPY for several.

    A connection that dropped while idle (server restart, `pg_terminate_backend`, idle timeout,
    failover) is seen before the rows are sent, then reopened once. A connection that drops while
    a statement is in flight fails the call without a retry: whether that statement committed is
    unknown, and a retry could log the rows twice; the next call reconnects.
    """

    def __init__(self, url: str) -> None:
        self._connector = PostgresConnector(url, application_name="fraud-serving")
        self.url = self._connector.url
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._insert = {
            t: f"INSERT INTO {t} ({', '.join(c)}) VALUES ({', '.join(['%s'] * len(c))})"
            for t, c in TABLES.items()
        }
        self._copy = {t: f"COPY {t} ({', '.join(c)}) FROM STDIN" for t, c in TABLES.items()}
        with self._lock:
            self._create_tables(self._connect())

    def __repr__(self) -> str:
        return f"PostgresPredictionLog({self.url!r})"

    def _connect(self) -> psycopg.Connection[Any]:
        self._conn = self._connector.connect()
        return self._conn

    @staticmethod
    def _usable(conn: psycopg.Connection[Any]) -> bool:
        """False if the connection is closed, or dropped while idle: between our calls the
        server sends nothing on it, so anything to read is its farewell (an error, or EOF)."""
        if conn.closed or conn.broken:
            return False
        try:
            readable, _, _ = select.select([conn.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def _connection(self) -> psycopg.Connection[Any]:
        """The open connection, or a new one (once) if it dropped since the last call."""
        conn = self._conn
        if conn is not None and self._usable(conn):
            return conn
        if conn is not None:
            log.warning("prediction log at %s: connection lost; reconnecting", self.url)
            conn.close()
            self._conn = None
        return self._connect()

    @staticmethod
    def _create_tables(conn: psycopg.Connection[Any]) -> None:
        with conn.transaction(), conn.cursor() as cur:
            # Several workers or replicas may start at once: CREATE ... IF NOT EXISTS is not
            # atomic in PostgreSQL, so serialise it with a transaction-scoped advisory lock.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('fraud-prediction-log-schema'))")
            for table, cols in TABLES.items():
                spec = ", ".join(f"{c} {postgres_column_type(c, t)}" for c, t in cols.items())
                cur.execute(f"CREATE TABLE IF NOT EXISTS {table} ({spec})")
            for name, table, column in INDEXES:
                cur.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table}({_ordered(column)})")

    def log_predictions(self, rows: Sequence[PredictionRow]) -> None:
        """Commit `rows` in one statement before returning (features as JSONB, sent as JSON
        text that the server parses)."""
        features = features_as_json([r.features for r in rows])
        prepared = [(*r[:5], f, *r[6:]) for r, f in zip(rows, features, strict=True)]
        self._write(PREDICTIONS_TABLE, prepared)

    def log_feedback(self, rows: Sequence[FeedbackRow]) -> None:
        """Commit `rows` in one statement before returning."""
        self._write(FEEDBACK_TABLE, rows)

    def _write(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        import psycopg

        if not rows:
            return
        with self._lock:
            conn = self._connection()
            try:
                # Autocommit: the single statement is the transaction, committed (and, with
                # synchronous_commit=on, flushed to the server's disk) when it returns.
                if len(rows) == 1:
                    conn.execute(self._insert[table], rows[0])
                else:
                    with conn.cursor() as cur, cur.copy(self._copy[table]) as copy:
                        for row in rows:
                            copy.write_row(row)
            except psycopg.Error as e:
                if conn.broken or conn.closed:
                    raise PredictionLogError(
                        f"prediction log at {self.url}: connection lost while writing "
                        f"{len(rows)} row(s) to {table} (committed or not: unknown): "
                        f"{self._connector.scrub(e)}"
                    ) from None
                raise

    def probe(self) -> None:
        """A round trip on the (re)opened connection: PredictionLogError, naming the URL without
        its password, while the server cannot be reached. What the API's /ready asks after a
        failed write."""
        import psycopg

        with self._lock:
            try:
                self._connection().execute("SELECT 1")
            except psycopg.Error as e:
                raise PredictionLogError(
                    f"prediction log at {self.url}: {self._connector.scrub(e)}"
                ) from None

    def count(self, table: str = PREDICTIONS_TABLE) -> int:
        """Number of rows in `table` (one of the contract's tables)."""
        with self._lock:
            row = self._connection().execute(f"SELECT COUNT(*) FROM {checked_table(table)}")
            result = row.fetchone()
            return int(result[0]) if result else 0

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# --- reading -------------------------------------------------------------------------------------


def _ordered(column: str) -> str:
    """`column` as the reader compares it: text by byte order (ISO 8601 in UTC sorts as time),
    whatever the database's collation; indexes are built on the same expression."""
    return f'{column} COLLATE "C"' if column.rpartition(".")[2] in _TIMESTAMPS else column


def window_query(*, labels_known_by: bool, model_version: bool) -> str:
    """The reader's one query (named parameters `start`, `end`, and `known_by` and `version`
    when asked for): the window's predictions in time order, each with its latest label.

    The label is looked up per prediction through the index on feedback(transaction_id)
    (LATERAL), so the cost follows the window, not the whole feedback table. The features come
    back as JSON text, parsed in bulk by the reader rather than one object at a time by psycopg.
    """
    known_by = f"AND {_ordered('l.known_at')} <= %(known_by)s" if labels_known_by else ""
    version = "AND p.model_version = %(version)s" if model_version else ""
    columns = ", ".join(
        f"p.{c}::text" if c in JSON_COLUMNS else f"p.{c}" for c in PREDICTION_COLUMNS
    )
    tx_datetime = _ordered("p.tx_datetime")
    return f"""
        SELECT {columns}, f.is_fraud, f.known_at
        FROM {PREDICTIONS_TABLE} AS p
        LEFT JOIN LATERAL (
            SELECT l.is_fraud, l.known_at FROM {FEEDBACK_TABLE} AS l
            WHERE l.transaction_id = p.transaction_id {known_by}
            ORDER BY {_ordered("l.received_at")} DESC, l.ctid DESC
            LIMIT 1
        ) AS f ON TRUE
        WHERE {tx_datetime} >= %(start)s AND {tx_datetime} < %(end)s {version}
        ORDER BY {tx_datetime}, p.ctid
    """
