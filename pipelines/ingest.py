"""Ingest step: simulate transactions or load a user's CSV/Parquet into data/raw/.

A user's file is checked against the data contract before it is written: a file that breaks it
(unreadable, empty, a missing column, values that do not parse, duplicate ids, ...) stops the
stage with every violation and leaves the previous data/raw/transactions.parquet as it was,
instead of replacing good data with data that the validate stage would then refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fraud import schema
from fraud.schema import ContractLimits
from fraud.simulator import SimulatorConfig, simulate
from fraud.transactions_file import TransactionsFileError, read_transactions_file
from fraud.validation import ContractViolationError, validate_transactions
from pipelines.artifacts import write_parquet
from pipelines.errors import IngestError

__all__ = ["IngestError", "IngestResult", "ingest", "load_transactions_file"]


@dataclass(frozen=True)
class IngestResult:
    rows: int
    frauds: int | None
    first: str
    last: str
    source: str


def load_transactions_file(path: str | Path, setting: str = "ingest.path") -> pd.DataFrame:
    """`fraud.transactions_file.read_transactions_file`, its errors as the pipeline's."""
    try:
        return read_transactions_file(path, setting)
    except TransactionsFileError as e:
        raise IngestError(str(e)) from e


def check_transactions_file(
    df: pd.DataFrame, path: str | Path, limits: ContractLimits, setting: str = "ingest.path"
) -> None:
    """Raise IngestError, naming the file and every violation, unless `df` (read from `path`)
    holds transactions that satisfy the contract."""
    if df.empty:
        raise IngestError(
            f"{setting}: {path} holds no transactions (columns {list(df.columns)}, no rows)"
        )
    report = validate_transactions(df, limits)
    if not report.ok:
        raise IngestError(f"{setting}: {path}: {ContractViolationError(report)}")


def ingest(
    source: str,
    simulator: SimulatorConfig,
    path: str | None,
    output: str | Path,
    limits: ContractLimits | None = None,
) -> IngestResult:
    """Write the raw transactions of `source` ("simulator" or "file") to `output` (Parquet).

    A file is checked against the contract (`limits`: params.yaml's `validate:`) first: one
    that breaks it raises IngestError and `output` is left untouched.
    """
    if source == "simulator":
        df = simulate(simulator)
    elif source == "file":
        if not path:
            raise IngestError("ingest.path: required when ingest.source is 'file'")
        df = load_transactions_file(path)
        check_transactions_file(df, path, limits or ContractLimits())
    else:
        raise IngestError(f"ingest.source: expected 'simulator' or 'file', got {source!r}")
    write_parquet(df, output)
    dt_col = (
        df[schema.TX_DATETIME] if schema.TX_DATETIME in df.columns else pd.Series([], dtype=str)
    )
    frauds = None
    if schema.TX_FRAUD in df.columns:
        frauds = int(pd.to_numeric(df[schema.TX_FRAUD], errors="coerce").fillna(0).sum())
    return IngestResult(
        rows=len(df),
        frauds=frauds,
        first=str(dt_col.min()) if len(dt_col) else "",
        last=str(dt_col.max()) if len(dt_col) else "",
        source=source if source == "simulator" else str(path),
    )
