"""The online state's records: one binary layout shared by the in-process state and Redis.

The online state is raw events only: each customer's recent transactions (time, amount,
terminal), each terminal's recent transactions (time, id) and the times of its transactions
labelled fraud. Records of one entity are appended to one byte string, little-endian, so that
numpy reads them without copying and a Redis script can append and trim them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fraud import schema

#: One customer transaction, as stored (24 bytes, little-endian).
CUSTOMER_RECORD = np.dtype([("t", "<i8"), ("amount", "<f8"), ("terminal", "<i8")])
#: One terminal transaction, as stored (16 bytes, little-endian).
TERMINAL_RECORD = np.dtype([("t", "<i8"), ("id", "<i8")])
EMPTY_CUSTOMER_RECORDS = np.empty(0, dtype=CUSTOMER_RECORD)
EMPTY_TIMES = np.empty(0, dtype=np.int64)
#: One CUSTOMER_RECORD from (t, amount, terminal): a customer's transaction at `t` (seconds).
customer_record: Callable[[int, float, int], bytes] = struct.Struct("<qdq").pack
#: One TERMINAL_RECORD from (t, transaction id): a terminal's transaction at `t` (seconds).
terminal_record: Callable[[int, int], bytes] = struct.Struct("<qq").pack


def last_time(blob: bytes | bytearray, itemsize: int) -> int:
    """The time of the last record of a non-empty `blob` (every record starts with its time)."""
    return int.from_bytes(blob[-itemsize : 8 - itemsize], "little", signed=True)


def sort_by_time(blob: bytearray) -> None:
    """Customer records in time order (stable: arrival order within a second), in place, so
    that the batch features need not sort them."""
    records = np.frombuffer(bytes(blob), dtype=CUSTOMER_RECORD)
    blob[:] = records[np.argsort(records["t"], kind="stable")].tobytes()


def leading_stale(blob: bytes | bytearray, itemsize: int, cutoff: int) -> int:
    """How many records at the start of `blob` are at or before `cutoff` (the last record is
    always kept: it carries the customer's time of previous transaction)."""
    n = len(blob) // itemsize
    if n <= 1:
        return 0
    times = np.frombuffer(blob, dtype="<i8", count=n * itemsize // 8)[:: itemsize // 8]
    fresh = times[: n - 1] > cutoff
    return int(np.argmax(fresh)) if fresh.any() else n - 1


@dataclass(frozen=True)
class HistoryRecords:
    """A history frame as the online state stores it (`history_records`)."""

    customers: dict[int, bytes]
    terminals: dict[int, bytes]
    #: terminal -> {transaction id: seconds} of its transactions labelled fraud
    frauds: dict[int, dict[int, int]]
    #: (transaction id, terminal, seconds) of every transaction, in time order
    transactions: list[tuple[int, int, int]]
    newest: int


def history_records(history: pd.DataFrame) -> HistoryRecords:
    """Per-entity records of a history frame (contract schema; TX_FRAUD where labels are known)."""
    ordered = history.sort_values([schema.TX_DATETIME, schema.TRANSACTION_ID], kind="stable")
    seconds = ordered[schema.TX_DATETIME].to_numpy(dtype="datetime64[s]").astype(np.int64)
    ids = ordered[schema.TRANSACTION_ID].to_numpy(dtype=np.int64)
    customers = ordered[schema.CUSTOMER_ID].to_numpy(dtype=np.int64)
    terminals = ordered[schema.TERMINAL_ID].to_numpy(dtype=np.int64)
    customer_records = np.empty(len(ordered), dtype=CUSTOMER_RECORD)
    customer_records["t"] = seconds
    customer_records["amount"] = ordered[schema.TX_AMOUNT].to_numpy(np.float64)
    customer_records["terminal"] = terminals
    terminal_records = np.empty(len(ordered), dtype=TERMINAL_RECORD)
    terminal_records["t"], terminal_records["id"] = seconds, ids
    frauds: dict[int, dict[int, int]] = {}
    if schema.TX_FRAUD in ordered.columns:
        label = ordered[schema.TX_FRAUD].to_numpy(dtype=np.float64)
        for i in np.flatnonzero(label == 1):
            frauds.setdefault(int(terminals[i]), {})[int(ids[i])] = int(seconds[i])
    return HistoryRecords(
        customers=_grouped_blobs(customers, customer_records),
        terminals=_grouped_blobs(terminals, terminal_records),
        frauds=frauds,
        transactions=list(zip(ids.tolist(), terminals.tolist(), seconds.tolist(), strict=True)),
        newest=int(seconds.max()) if len(seconds) else 0,
    )


def _grouped_blobs(keys: np.ndarray, records: np.ndarray) -> dict[int, bytes]:
    """Each key's records as one blob, in their order."""
    if not len(keys):  # an empty history (a model published with none)
        return {}
    order = np.argsort(keys, kind="stable")  # keeps time order within an entity
    k, r = keys[order], records[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    ends = np.r_[starts[1:], len(k)]
    return {int(k[a]): r[a:b].tobytes() for a, b in zip(starts, ends, strict=True)}
