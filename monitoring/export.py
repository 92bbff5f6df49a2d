"""Production data with matured labels, in the data contract's schema: what retraining on
production learns from, and what `ingest.source: file` can ingest.

A transaction is exported once its cohort has matured by `as_of` (its day ended at least
`maturity_days` before): its label is the last one known by then, and a transaction without a
label counts as genuine (no chargeback in the maturity period), as the performance checks count
it. Younger transactions are left out: their missing labels mean "not known yet", not genuine.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fraud import schema
from fraud.predictions import read_window
from fraud.schema import ContractLimits
from fraud.validation import to_contract_frame
from monitoring import frames
from monitoring.performance import PerformanceConfig, cohort_starts, is_matured


@dataclass(frozen=True)
class Export:
    frame: pd.DataFrame  # the contract's columns, TX_FRAUD included
    matured_until: dt.datetime  # transactions before this time are exported
    left_out: int  # transactions of the window whose labels had not matured


def matured_transactions(
    window: pd.DataFrame, as_of: dt.datetime, cfg: PerformanceConfig
) -> Export:
    """The window's transactions whose labels matured by `as_of`, as contract rows."""
    as_of_ts = pd.Timestamp(as_of)
    starts = cohort_starts(window, cfg)
    matured = starts.map(lambda s: is_matured(s, as_of_ts, cfg)).astype(bool)
    rows = window[matured.to_numpy()]
    known = rows[frames.LABEL].notna()
    if frames.LABEL_KNOWN_AT in rows:
        known &= rows[frames.LABEL_KNOWN_AT].le(as_of_ts).fillna(False)
    label = rows[frames.LABEL].where(known, 0).fillna(0).astype("int64")
    raw = pd.DataFrame(
        {
            schema.TRANSACTION_ID: rows[frames.TRANSACTION].to_numpy(),
            schema.TX_DATETIME: rows[frames.TIME].to_numpy(),
            schema.CUSTOMER_ID: rows[frames.CUSTOMER].to_numpy(),
            schema.TERMINAL_ID: rows[frames.TERMINAL].to_numpy(),
            schema.TX_AMOUNT: rows[frames.AMOUNT].to_numpy(),
            schema.TX_FRAUD: label.to_numpy(),
        }
    )
    contract = to_contract_frame(raw, ContractLimits(require_labels=True))
    last_matured = (
        starts[matured].max() + pd.Timedelta(days=cfg.cohort_days) if matured.any() else None
    )
    until = last_matured if last_matured is not None else pd.Timestamp(window[frames.TIME].min())
    return Export(contract, until.to_pydatetime(), int((~matured).sum()))


def export_log(
    target: str | Path,
    start: dt.datetime,
    end: dt.datetime,
    as_of: dt.datetime,
    cfg: PerformanceConfig,
) -> Export:
    """The prediction log's transactions in [start, end) with their labels matured by `as_of`."""
    return matured_transactions(read_window(target, start, end, labels_known_by=as_of), as_of, cfg)


def write_export(frame: pd.DataFrame, path: Path) -> None:
    """Write `frame` to `path` (.parquet or .csv) through a temporary file renamed over it: a
    failed write leaves the previous file as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    try:
        if path.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
