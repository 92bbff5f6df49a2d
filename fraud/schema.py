"""The raw transaction data contract, defined once.

Backs the pipeline's validate step and (in `serving/`) the API's request model. A transaction is
what a payment system sends: an id, a timestamp, a card (customer), a terminal and an amount.
Labelled data adds TX_FRAUD and, where known, TX_FRAUD_SCENARIO.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

TRANSACTION_ID = "TRANSACTION_ID"
TX_DATETIME = "TX_DATETIME"
CUSTOMER_ID = "CUSTOMER_ID"
TERMINAL_ID = "TERMINAL_ID"
TX_AMOUNT = "TX_AMOUNT"
TX_FRAUD = "TX_FRAUD"
TX_FRAUD_SCENARIO = "TX_FRAUD_SCENARIO"

#: Columns every transaction has, with the dtype the platform works in.
RAW_COLUMNS: dict[str, str] = {
    TRANSACTION_ID: "int64",
    TX_DATETIME: "datetime64[ns]",
    CUSTOMER_ID: "int64",
    TERMINAL_ID: "int64",
    TX_AMOUNT: "float64",
}
#: Extra columns of labelled data.
LABEL_COLUMNS: dict[str, str] = {TX_FRAUD: "int8", TX_FRAUD_SCENARIO: "int8"}

#: Scenario codes (Fraud Detection Handbook): 0 genuine, 1 large amount, 2 compromised terminal,
#: 3 compromised customer. 4+ are free for new scenarios of drifted regimes.
SCENARIO_NAMES: dict[int, str] = {
    0: "genuine",
    1: "large_amount",
    2: "compromised_terminal",
    3: "compromised_customer",
}


@dataclass(frozen=True)
class ContractLimits:
    """Bounds of a plausible transaction, from params.yaml `validate:`."""

    max_amount: float = 100_000.0
    min_datetime: str = "2000-01-01"
    max_datetime: str = "2100-01-01"
    require_labels: bool = True
    required: tuple[str, ...] = field(default=tuple(RAW_COLUMNS))


def empty_frame(labelled: bool = True) -> pd.DataFrame:
    """An empty frame with the contract's columns and dtypes."""
    cols = dict(RAW_COLUMNS)
    if labelled:
        cols.update(LABEL_COLUMNS)
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in cols.items()})


def coerce_types(df: pd.DataFrame) -> pd.DataFrame:
    """Cast the contract's columns to their dtypes; leaves unparseable values for the validator.

    Values that cannot be converted become NaN/NaT so that validation can name the rows, instead
    of failing here with a cast error that names nothing.
    """
    out = df.copy()
    for col in (TRANSACTION_ID, CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT, TX_FRAUD, TX_FRAUD_SCENARIO):
        if col in out.columns and not pd.api.types.is_numeric_dtype(out[col]):
            out[col] = pd.to_numeric(out[col], errors="coerce")
    if TX_DATETIME in out.columns and not pd.api.types.is_datetime64_any_dtype(out[TX_DATETIME]):
        out[TX_DATETIME] = pd.to_datetime(out[TX_DATETIME], errors="coerce", format="mixed")
    if TX_DATETIME in out.columns and getattr(out[TX_DATETIME].dt, "tz", None) is not None:
        out[TX_DATETIME] = out[TX_DATETIME].dt.tz_convert("UTC").dt.tz_localize(None)
    return out


def finalize_types(df: pd.DataFrame) -> pd.DataFrame:
    """Cast a validated frame to the contract's exact dtypes (no nulls may remain)."""
    out = df.copy()
    for col, dtype in {**RAW_COLUMNS, **LABEL_COLUMNS}.items():
        if col in out.columns:
            out[col] = out[col].astype(dtype)
    if TX_DATETIME in out.columns:
        out[TX_DATETIME] = out[TX_DATETIME].astype("datetime64[ns]")
    return out


def is_integral(series: pd.Series) -> pd.Series:
    """True where a numeric value is a whole number (so an id column can be int64)."""
    values = series.to_numpy(dtype="float64", na_value=np.nan)
    return pd.Series(np.isfinite(values) & (np.floor(values) == values), index=series.index)
