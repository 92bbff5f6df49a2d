"""Reading a user's file of transactions (CSV or Parquet) as it is, for the contract's
validator (`fraud.validation`) to check: the pipeline's file ingest, batch scoring and
monitoring's file mode read files this one way."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fraud import schema


class TransactionsFileError(ValueError):
    """The file is missing, of an unknown kind or unreadable; the message names the setting."""


def read_transactions_file(path: str | Path, setting: str) -> pd.DataFrame:
    """Read a CSV or Parquet file as it is: types are checked by the validator, which can then
    name the rows whose values do not parse. Errors name `setting`, where the path came from
    (a params.yaml key or a command-line flag)."""
    p = Path(path)
    if not p.exists():
        raise TransactionsFileError(f"{setting}: {p} does not exist")
    suffix = p.suffix.lower()
    if suffix not in {".parquet", ".pq", ".csv", ".gz", ".txt"}:
        raise TransactionsFileError(
            f"{setting}: {p} must be a .csv or .parquet file, not {suffix!r}"
        )
    if p.is_file() and p.stat().st_size == 0:
        raise TransactionsFileError(
            f"{setting}: {p} is empty (0 bytes): expected a CSV with a header row and one "
            "transaction per line, or a Parquet file"
        )
    try:
        if suffix in {".parquet", ".pq"}:
            df = pd.read_parquet(p)
        else:
            df = pd.read_csv(p, dtype={schema.TX_DATETIME: "string"}, low_memory=False)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise TransactionsFileError(f"{setting}: cannot read {p}: {e}") from e
    # Mixed-type object columns cannot go to Parquet as they are: keep them as text.
    for col in df.columns:
        if df[col].dtype == object:
            df[col] = df[col].astype("string")
    return df
