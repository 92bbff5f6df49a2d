"""Ingest step: simulate transactions or load a user's CSV/Parquet into data/raw/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fraud import schema
from fraud.simulator import SimulatorConfig, simulate
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
    """Read a CSV or Parquet file as it is: types are checked by the validate step, which can
    then name the rows whose values do not parse. Errors name `setting`, where the path came
    from (a params.yaml key or a command-line flag)."""
    p = Path(path)
    if not p.exists():
        raise IngestError(f"{setting}: {p} does not exist")
    suffix = p.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            df = pd.read_parquet(p)
        elif suffix in {".csv", ".gz", ".txt"}:
            df = pd.read_csv(p, dtype={schema.TX_DATETIME: "string"}, low_memory=False)
        else:
            raise IngestError(f"{setting}: {p} must be a .csv or .parquet file, not {suffix!r}")
    except (OSError, ValueError, pd.errors.ParserError) as e:
        if isinstance(e, IngestError):
            raise
        raise IngestError(f"{setting}: cannot read {p}: {e}") from e
    # Mixed-type object columns cannot go to Parquet as they are: keep them as text.
    for col in df.columns:
        if df[col].dtype == object:
            df[col] = df[col].astype("string")
    return df


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
