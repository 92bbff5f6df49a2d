"""Ingest step: simulate transactions or load a user's CSV/Parquet into data/raw/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fraud import schema
from fraud.simulator import SimulatorConfig, simulate
from fraud.transactions_file import TransactionsFileError, read_transactions_file
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


def ingest(
    source: str, simulator: SimulatorConfig, path: str | None, output: str | Path
) -> IngestResult:
    """Write the raw transactions of `source` ("simulator" or "file") to `output` (Parquet)."""
    if source == "simulator":
        df = simulate(simulator)
    elif source == "file":
        if not path:
            raise IngestError("ingest.path: required when ingest.source is 'file'")
        df = load_transactions_file(path)
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
