"""The raw transaction data contract, defined once.

Backs the pipeline's validate step and (in `serving/`) the API's request model. A transaction is
what a payment system sends: an id, a timestamp, a card (customer), a terminal and an amount.
Labelled data adds TX_FRAUD and, where known, TX_FRAUD_SCENARIO.
"""

from __future__ import annotations

import datetime as dt
import functools
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
        # utc=True: a file may mix offsets (+02:00, Z) and naive times (UTC by the contract);
        # without it pandas returns an object column of mixed datetimes that nothing can compare.
        out[TX_DATETIME] = pd.to_datetime(
            out[TX_DATETIME], errors="coerce", format="mixed", utc=True
        )
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


# --------------------------------------------------------------------------------------------
# The same contract for one transaction arriving online (the API's request model).

from pydantic import BaseModel, ConfigDict, Field, field_validator  # noqa: E402

_LIMITS = ContractLimits()


class TransactionRecord(BaseModel):
    """One raw transaction, as a payment system sends it. Unknown fields are rejected."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    TRANSACTION_ID: 1_788_430,
                    TX_DATETIME: "2018-10-01T08:15:00",
                    CUSTOMER_ID: 4961,
                    TERMINAL_ID: 3412,
                    TX_AMOUNT: 57.16,
                }
            ]
        },
    )

    TRANSACTION_ID: int = Field(ge=0, le=2**63 - 1, description="unique id of the transaction")
    TX_DATETIME: dt.datetime = Field(description="ISO 8601; a time zone is converted to UTC")
    CUSTOMER_ID: int = Field(ge=0, le=2**63 - 1, description="the card")
    TERMINAL_ID: int = Field(ge=0, le=2**63 - 1, description="the terminal")
    TX_AMOUNT: float = Field(
        ge=0, le=_LIMITS.max_amount, allow_inf_nan=False, description="amount, >= 0"
    )

    @field_validator("TX_DATETIME")
    @classmethod
    def _utc_naive(cls, v: dt.datetime) -> dt.datetime:
        return utc_naive_in_range(v)


@functools.lru_cache(maxsize=8)
def _datetime_bounds(lo: str, hi: str) -> tuple[dt.datetime, dt.datetime]:
    # Parsed once per pair: the API validates every transaction's datetime against them.
    return dt.datetime.fromisoformat(lo), dt.datetime.fromisoformat(hi)


def utc_naive_in_range(v: dt.datetime, limits: ContractLimits = _LIMITS) -> dt.datetime:
    """A datetime in UTC without tzinfo, within the contract's range (ValueError otherwise)."""
    lo, hi = _datetime_bounds(limits.min_datetime, limits.max_datetime)
    if v.tzinfo is not None:
        try:
            v = v.astimezone(dt.UTC).replace(tzinfo=None)
        except OverflowError:
            raise ValueError(f"must lie between {lo.date()} and {hi.date()}") from None
    if not lo <= v < hi:
        raise ValueError(f"must lie between {lo.date()} and {hi.date()}")
    return v
