"""Point-in-time correct feature definitions, computed the same way offline and online.

One `FeatureConfig` defines every feature. Two implementations compute it:

* `compute_features` (offline): vectorised over a whole history with sorted keys and
  `searchsorted`, 1.75M transactions in a few seconds. The pipeline's features stage and batch
  scoring use it.
* `OnlineFeatureState` (online): keeps per-customer and per-terminal windows in memory and
  computes the features of one incoming transaction from what it has seen so far. The serving
  API uses it; `tests/fraud/test_features_parity.py` checks that both give the same numbers.

Point-in-time rules (what makes them correct):

* customer windows cover (t - w, t] and include the current transaction, which is known at
  scoring time; nothing after t is ever used;
* terminal windows cover (t - delay - w, t - delay]: a fraud label is only known `delay_days`
  after the transaction (investigation delay), so labels younger than that are never used;
* "previous" features (amount ratio, recency, customer-terminal history) exclude the current
  transaction.

Rows with the same entity and timestamp are ordered by their position in the input (time order,
then TRANSACTION_ID), the same order in which a stream would deliver them.
"""

from __future__ import annotations

import datetime as dt
import math
import struct
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, NamedTuple, Protocol, TypeVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fraud import schema

DAY_SECONDS = 86_400
V = TypeVar("V")
_KEY_SHIFT = np.int64(1) << np.int64(32)


class FeatureConfig(BaseModel):
    """Which features to compute (params.yaml `features:`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    customer_windows_days: tuple[int, ...] = (1, 7, 30)
    terminal_windows_days: tuple[int, ...] = (1, 7, 30)
    #: Days before a fraud label is known (the handbook's delay period).
    delay_days: int = Field(7, ge=0)
    #: A transaction at or before this hour (0-23) is a night transaction (handbook: 6).
    night_end_hour: int = Field(6, ge=0, le=23)
    #: Window of the customer's own history behind the amount ratio, z-score and
    #: customer-terminal novelty features (0 disables them; with terminal_fraud_window_days 0
    #: too, the features are the handbook's 15).
    history_window_days: int = Field(30, ge=0)
    #: Count the customer's previous transactions, within this many days, whose amount was more
    #: than `high_amount_ratio` times their own history's mean (0 disables; needs the history).
    high_amount_window_days: int = Field(14, ge=0)
    high_amount_ratio: float = Field(3.0, gt=0)
    #: Smallest standard deviation of a customer's amounts used by the z-score (currency units).
    zscore_min_std: float = Field(1.0, gt=0)
    #: Terminal fraud recency over (t - delay - w, t - delay]: number of known frauds and the age
    #: in days of the first and last of them (0 disables). Compromises last weeks: the age tells
    #: the model when one is probably over.
    terminal_fraud_window_days: int = Field(28, ge=0)

    @field_validator("customer_windows_days", "terminal_windows_days")
    @classmethod
    def _positive_sorted(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(w <= 0 for w in v):
            raise ValueError("window sizes must be positive numbers of days")
        return tuple(sorted(set(v)))

    def feature_names(self) -> list[str]:
        """The model's input columns, in order."""
        names = [schema.TX_AMOUNT, "TX_DURING_WEEKEND", "TX_DURING_NIGHT"]
        for w in self.customer_windows_days:
            names += [f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW", f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"]
        for w in self.terminal_windows_days:
            names += [f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW", f"TERMINAL_ID_RISK_{w}DAY_WINDOW"]
        if self.history_window_days:
            h = self.history_window_days
            names += [
                f"CUSTOMER_ID_AMOUNT_RATIO_{h}DAY",
                f"CUSTOMER_ID_AMOUNT_ZSCORE_{h}DAY",
                "CUSTOMER_ID_HOURS_SINCE_PREV_TX",
                f"CUSTOMER_TERMINAL_NB_PREV_TX_{h}DAY",
            ]
            if self.high_amount_window_days:
                names.append(f"CUSTOMER_ID_NB_PREV_HIGH_AMOUNT_{self.high_amount_window_days}DAY")
        if self.terminal_fraud_window_days:
            w = self.terminal_fraud_window_days
            names += [
                f"TERMINAL_ID_NB_FRAUD_{w}DAY_WINDOW",
                f"TERMINAL_ID_FIRST_FRAUD_AGE_{w}DAY_WINDOW",
                f"TERMINAL_ID_LAST_FRAUD_AGE_{w}DAY_WINDOW",
            ]
        return names

    @property
    def lookback_days(self) -> int:
        """How much history the features of a transaction need."""
        return max(self.customer_keep_days, self.terminal_keep_days)

    @property
    def customer_keep_days(self) -> int:
        """Days of a customer's history that any customer feature reads."""
        # The high-amount count looks back `high_amount_window_days` at transactions whose own
        # ratio needed `history_window_days` before them.
        high = (
            self.high_amount_window_days + self.history_window_days
            if self.high_amount_feature
            else 0
        )
        return max(max(self.customer_windows_days, default=0), self.history_window_days, high)

    @property
    def terminal_keep_days(self) -> int:
        """Days of a terminal's history that any terminal feature reads (delay included)."""
        return self.delay_days + max(
            max(self.terminal_windows_days, default=0), self.terminal_fraud_window_days
        )

    @property
    def high_amount_feature(self) -> bool:
        return bool(self.history_window_days and self.high_amount_window_days)


# --------------------------------------------------------------------------------------------
# Scalar definitions shared by both implementations (the formulas live here, once).


def weekend_flag(weekday: int) -> float:
    """1.0 on Saturday and Sunday (weekday 5, 6)."""
    return float(weekday >= 5)


def night_flag(hour: int, night_end_hour: int) -> float:
    """1.0 from midnight to `night_end_hour` inclusive."""
    return float(hour <= night_end_hour)


def safe_ratio(num: float, den: float) -> float:
    """num/den, 0.0 when there is nothing to divide by (the handbook's fillna(0))."""
    return num / den if den > 0 else 0.0


def amount_ratio(amount: float, prev_sum: float, prev_count: int) -> float:
    """Amount relative to the mean of the customer's previous amounts; NaN with no history."""
    if prev_count == 0:
        return math.nan
    mean = prev_sum / prev_count
    return amount / mean if mean > 0 else math.nan


def amount_zscore(
    amount: float, prev_sum: float, prev_sumsq: float, prev_count: int, min_std: float
) -> float:
    """(amount - mean) / max(std, min_std) of previous amounts; NaN with fewer than two.

    The floor keeps the score finite for customers who always pay the same amount, and keeps the
    result stable where E[x^2] - mean^2 loses its digits to cancellation.
    """
    if prev_count < 2:
        return math.nan
    mean = prev_sum / prev_count
    var = max(prev_sumsq / prev_count - mean * mean, 0.0)
    return (amount - mean) / max(math.sqrt(var), min_std)


# --------------------------------------------------------------------------------------------
# Offline


def _sorted_keys(entity: np.ndarray, seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order by (entity, time, input position) and the int64 key entity<<32 | seconds."""
    codes, _ = pd.factorize(entity, sort=False)
    order = np.lexsort((np.arange(len(entity)), seconds, codes))
    key = codes[order].astype(np.int64) * _KEY_SHIFT + seconds[order]
    return order, key


def _prefix(values: np.ndarray) -> np.ndarray:
    """Prefix sums with a leading zero, in extended precision so window differences are exact
    to float64 (the online implementation sums each window directly)."""
    out = np.zeros(len(values) + 1, dtype=np.longdouble)
    np.cumsum(values, dtype=np.longdouble, out=out[1:])
    return out


def _window_diff(prefix: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return (prefix[hi] - prefix[lo]).astype(np.float64)


def compute_features(df: pd.DataFrame, cfg: FeatureConfig) -> pd.DataFrame:
    """Add the feature columns to a frame of transactions (contract schema, any order).

    Terminal risk needs TX_FRAUD; without it (unlabelled data) risk features are 0, as they are
    online before any label has arrived. Returns a new frame in the input's row order.
    """
    n = len(df)
    out = df.copy()
    ts = out[schema.TX_DATETIME]
    seconds_abs = ts.to_numpy(dtype="datetime64[s]").astype(np.int64)
    t0 = seconds_abs.min() if n else 0
    seconds = seconds_abs - t0
    if n and seconds.max() >= 2**31:
        raise ValueError("TX_DATETIME spans more than 68 years; split the data")
    amount = out[schema.TX_AMOUNT].to_numpy(dtype=np.float64)
    out["TX_DURING_WEEKEND"] = (ts.dt.weekday >= 5).astype(np.float64)
    out["TX_DURING_NIGHT"] = (ts.dt.hour <= cfg.night_end_hour).astype(np.float64)

    # Customer windows (t - w, t], current transaction included.
    order, key = _sorted_keys(out[schema.CUSTOMER_ID].to_numpy(), seconds)
    pos = np.arange(n)
    a_sorted = amount[order]
    # Sums over a window are differences of prefix sums. Centring each amount on its customer's
    # mean keeps the running totals small, so a window's sum (and the variance, which cancels
    # digits) does not depend on the rounding of every other customer's totals. The shift is
    # exact algebra: it is added back below.
    codes_sorted = key >> 32
    centre = np.bincount(codes_sorted, weights=a_sorted) / np.maximum(np.bincount(codes_sorted), 1)
    m_row = centre[codes_sorted]
    c_sorted = a_sorted - m_row
    amount_prefix = _prefix(c_sorted)
    sq_prefix = _prefix(c_sorted * c_sorted)
    for w in cfg.customer_windows_days:
        lo = np.searchsorted(key, key - w * DAY_SECONDS, side="right")
        count = (pos + 1 - lo).astype(np.float64)
        mean_w = m_row + _window_diff(amount_prefix, lo, pos + 1) / count
        _scatter(out, f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW", order, count)
        _scatter(out, f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW", order, mean_w)

    if cfg.history_window_days:
        h = cfg.history_window_days
        lo = np.searchsorted(key, key - h * DAY_SECONDS, side="right")
        prev_count = pos - lo  # previous transactions only
        prev_sum_c = _window_diff(amount_prefix, lo, pos)
        prev_sq_c = _window_diff(sq_prefix, lo, pos)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_c = prev_sum_c / prev_count
            mean = m_row + mean_c
            ratio = np.where((prev_count > 0) & (mean > 0), a_sorted / mean, np.nan)
            var = np.maximum(prev_sq_c / prev_count - mean_c * mean_c, 0.0)
            std = np.maximum(np.sqrt(var), cfg.zscore_min_std)
            z = np.where(prev_count >= 2, (a_sorted - mean) / std, np.nan)
        _scatter(out, f"CUSTOMER_ID_AMOUNT_RATIO_{h}DAY", order, ratio)
        _scatter(out, f"CUSTOMER_ID_AMOUNT_ZSCORE_{h}DAY", order, z)
        if cfg.high_amount_feature:
            hw = cfg.high_amount_window_days
            with np.errstate(invalid="ignore"):
                high_prefix = _prefix((ratio > cfg.high_amount_ratio).astype(np.float64))
            hlo = np.searchsorted(key, key - hw * DAY_SECONDS, side="right")
            _scatter(
                out,
                f"CUSTOMER_ID_NB_PREV_HIGH_AMOUNT_{hw}DAY",
                order,
                _window_diff(high_prefix, hlo, pos),
            )
        same_entity_prev = np.zeros(n, dtype=bool)
        same_entity_prev[1:] = (key[1:] >> 32) == (key[:-1] >> 32)
        prev_key = np.empty(n, dtype=np.int64)
        prev_key[0] = 0
        prev_key[1:] = key[:-1]
        gap_hours = np.where(same_entity_prev, (key - prev_key) / 3600.0, np.nan)
        _scatter(out, "CUSTOMER_ID_HOURS_SINCE_PREV_TX", order, gap_hours)

        pair = out[schema.CUSTOMER_ID].to_numpy().astype(np.int64) * np.int64(2**31) + out[
            schema.TERMINAL_ID
        ].to_numpy().astype(np.int64)
        porder, pkey = _sorted_keys(pair, seconds)
        plo = np.searchsorted(pkey, pkey - h * DAY_SECONDS, side="right")
        _scatter(out, f"CUSTOMER_TERMINAL_NB_PREV_TX_{h}DAY", porder, (pos - plo).astype(float))

    # Terminal windows (t - delay - w, t - delay]: only labels older than the delay.
    order, key = _sorted_keys(out[schema.TERMINAL_ID].to_numpy(), seconds)
    if schema.TX_FRAUD in out.columns:
        fraud = out[schema.TX_FRAUD].to_numpy(dtype=np.float64)[order]
    else:
        fraud = np.zeros(n)
    fraud_prefix = _prefix(fraud)
    delay = cfg.delay_days * DAY_SECONDS
    # Labels older than the delay; never the transaction itself (with delay 0, the same second's
    # later rows are excluded too, as online, where they have not arrived yet).
    hi = np.minimum(np.searchsorted(key, key - delay, side="right"), pos)
    for w in cfg.terminal_windows_days:
        lo = np.searchsorted(key, key - delay - w * DAY_SECONDS, side="right")
        count = (hi - lo).astype(np.float64)
        frauds = _window_diff(fraud_prefix, lo, hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            risk = np.where(count > 0, frauds / count, 0.0)
        _scatter(out, f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW", order, count)
        _scatter(out, f"TERMINAL_ID_RISK_{w}DAY_WINDOW", order, risk)
    if cfg.terminal_fraud_window_days:
        w = cfg.terminal_fraud_window_days
        lo = np.searchsorted(key, key - delay - w * DAY_SECONDS, side="right")
        _scatter(
            out, f"TERMINAL_ID_NB_FRAUD_{w}DAY_WINDOW", order, _window_diff(fraud_prefix, lo, hi)
        )
        # Index of the first fraud at or after i, and of the last fraud at or before i.
        is_fraud = fraud == 1
        next_fraud = np.minimum.accumulate(np.where(is_fraud, pos, n)[::-1])[::-1]
        prev_fraud = np.maximum.accumulate(np.where(is_fraud, pos, -1))
        has = hi > lo
        first = np.where(has, next_fraud[np.minimum(lo, n - 1)], n)
        first_ok = has & (first < hi)
        last = np.where(has, prev_fraud[np.maximum(hi - 1, 0)], -1)
        last_ok = first_ok & (last >= lo)
        first_age = (key - key[np.minimum(first, n - 1)]) / DAY_SECONDS
        last_age = (key - key[np.maximum(last, 0)]) / DAY_SECONDS
        _scatter(
            out,
            f"TERMINAL_ID_FIRST_FRAUD_AGE_{w}DAY_WINDOW",
            order,
            np.where(first_ok, first_age, np.nan),
        )
        _scatter(
            out,
            f"TERMINAL_ID_LAST_FRAUD_AGE_{w}DAY_WINDOW",
            order,
            np.where(last_ok, last_age, np.nan),
        )
    return out


def _scatter(out: pd.DataFrame, name: str, order: np.ndarray, sorted_values: np.ndarray) -> None:
    values = np.empty(len(order), dtype=np.float64)
    values[order] = sorted_values
    out[name] = values


# --------------------------------------------------------------------------------------------
# Online
#
# The online state is raw events only: each customer's recent transactions (time, amount,
# terminal), each terminal's recent transactions (time, id) and the times of its transactions
# labelled fraud. `online_features` computes every feature of one incoming transaction from
# those arrays; the in-process `OnlineFeatureState` below and the Redis store of the serving
# package (`serving/feature_store.py`) keep the same records in the same binary layout and call
# the same function, so both give what `compute_features` gives.

#: One customer transaction, as stored (24 bytes, little-endian).
CUSTOMER_RECORD = np.dtype([("t", "<i8"), ("amount", "<f8"), ("terminal", "<i8")])
#: One terminal transaction, as stored (16 bytes, little-endian).
TERMINAL_RECORD = np.dtype([("t", "<i8"), ("id", "<i8")])
_PACK_CUSTOMER = struct.Struct("<qdq").pack
_PACK_TERMINAL = struct.Struct("<qq").pack
_EPOCH = dt.datetime(1970, 1, 1)
_SECOND = dt.timedelta(seconds=1)
_EMPTY_TIMES = np.empty(0, dtype=np.int64)


class Transaction(NamedTuple):
    """One raw transaction as the online state sees it (a tuple: cheap to make per request)."""

    transaction_id: int
    tx_datetime: dt.datetime | np.datetime64 | pd.Timestamp
    customer_id: int
    terminal_id: int
    amount: float


class DuplicateTransactionError(ValueError):
    """A transaction id the state has already recorded (within its lookback)."""

    def __init__(self, ids: Iterable[int]) -> None:
        self.ids = sorted(set(ids))
        super().__init__(f"transaction ids already seen: {self.ids[:20]}")


def tx_seconds(value: dt.datetime | np.datetime64 | pd.Timestamp) -> int:
    """Seconds since the epoch, floored (as offline); naive datetimes are UTC."""
    if isinstance(value, dt.datetime):  # pd.Timestamp is one too
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return int((value - _EPOCH) // _SECOND)
    return int(np.asarray(value, dtype="datetime64[s]").astype(np.int64))


def customer_record(t: int, amount: float, terminal: int) -> bytes:
    return _PACK_CUSTOMER(t, amount, terminal)


def terminal_record(t: int, transaction_id: int) -> bytes:
    return _PACK_TERMINAL(t, transaction_id)


_CUSTOMER_SIZE = CUSTOMER_RECORD.itemsize


def _last_time(blob: bytearray, itemsize: int) -> int:
    return int.from_bytes(blob[-itemsize : 8 - itemsize], "little", signed=True)


def _sort_by_time(blob: bytearray) -> None:
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


def online_features(
    cfg: FeatureConfig,
    t: int,
    amount: float,
    terminal: int,
    customer: np.ndarray,
    terminal_times: np.ndarray,
    fraud_times: np.ndarray,
) -> dict[str, float]:
    """The features of one transaction at `t` (seconds) from what arrived before it: the
    single-transaction form of `batch_features` (fewer, scalar steps: about 4x faster for one).

    `customer`: the customer's earlier transactions (CUSTOMER_RECORD, arrival order);
    `terminal_times`: times of the terminal's earlier transactions; `fraud_times`: times of the
    terminal's transactions labelled fraud. Records later than `t` are ignored.
    """
    day = DAY_SECONDS
    f: dict[str, float] = {
        schema.TX_AMOUNT: amount,
        # 1970-01-01 was a Thursday (weekday 3).
        "TX_DURING_WEEKEND": weekend_flag((t // day + 3) % 7),
        "TX_DURING_NIGHT": night_flag((t % day) // 3600, cfg.night_end_hour),
    }
    s = customer["t"]
    if len(s) > 1 and bool((s[1:] < s[:-1]).any()):
        customer = customer[np.argsort(s, kind="stable")]
        s = customer["t"]
    n = int(np.searchsorted(s, t, side="right"))
    a = customer["amount"][:n]
    s = s[:n]
    csum = _prefix_ld(a)  # extended precision, as the batch and offline paths: same ties
    cwin = cfg.customer_windows_days
    h = cfg.history_window_days
    hw = cfg.high_amount_window_days if cfg.high_amount_feature else 0
    bounds = [t - w * day for w in cwin] + [t - h * day, t - hw * day]
    lows = np.searchsorted(s, bounds, side="right").tolist()
    for w, lo in zip(cwin, lows, strict=False):
        count = n - lo + 1
        f[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"] = float(count)
        f[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"] = (float(csum[n] - csum[lo]) + amount) / count
    if h:
        lo = lows[len(cwin)]
        prev = n - lo
        psum = float(csum[n] - csum[lo])
        sq = a[lo:]
        psq = float(np.dot(sq, sq))
        ratio = amount_ratio(amount, psum, prev)
        f[f"CUSTOMER_ID_AMOUNT_RATIO_{h}DAY"] = ratio
        f[f"CUSTOMER_ID_AMOUNT_ZSCORE_{h}DAY"] = amount_zscore(
            amount, psum, psq, prev, cfg.zscore_min_std
        )
        f["CUSTOMER_ID_HOURS_SINCE_PREV_TX"] = (t - int(s[n - 1])) / 3600.0 if n else math.nan
        f[f"CUSTOMER_TERMINAL_NB_PREV_TX_{h}DAY"] = float(
            np.count_nonzero(customer["terminal"][lo:n] == terminal)
        )
        if hw:
            hlo = lows[len(cwin) + 1]
            high = 0
            if hlo < n:
                j = np.arange(hlo, n)
                jlo = np.searchsorted(s, s[hlo:] - h * day, side="right")
                cnt = j - jlo
                with np.errstate(divide="ignore", invalid="ignore"):
                    mean = (csum[j] - csum[jlo]).astype(np.float64) / cnt
                    high = int(
                        np.count_nonzero(
                            (cnt > 0) & (mean > 0) & (a[hlo:] / mean > cfg.high_amount_ratio)
                        )
                    )
            f[f"CUSTOMER_ID_NB_PREV_HIGH_AMOUNT_{hw}DAY"] = float(high)
    hi = t - cfg.delay_days * day
    twin = cfg.terminal_windows_days
    fw = cfg.terminal_fraud_window_days
    tb = [hi] + [hi - w * day for w in twin] + ([hi - fw * day] if fw else [])
    tt = np.sort(terminal_times)
    ti = np.searchsorted(tt, tb, side="right").tolist()
    if len(fraud_times):
        ft = np.sort(fraud_times)
        fi = np.searchsorted(ft, tb, side="right").tolist()
    else:
        ft, fi = _EMPTY_TIMES, [0] * len(tb)
    for k, w in enumerate(twin, start=1):
        count = ti[0] - ti[k]
        f[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"] = float(count)
        f[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"] = safe_ratio(fi[0] - fi[k], count)
    if fw:
        first, end = fi[-1], fi[0]
        nb = end - first
        f[f"TERMINAL_ID_NB_FRAUD_{fw}DAY_WINDOW"] = float(nb)
        f[f"TERMINAL_ID_FIRST_FRAUD_AGE_{fw}DAY_WINDOW"] = (
            (t - int(ft[first])) / day if nb else math.nan
        )
        f[f"TERMINAL_ID_LAST_FRAUD_AGE_{fw}DAY_WINDOW"] = (
            (t - int(ft[end - 1])) / day if nb else math.nan
        )
    return f


def _wave_numbers(customers: Sequence[int], terminals: Sequence[int]) -> list[int]:
    """Split a batch into waves: a transaction goes one wave after the last earlier one that
    shares its customer or terminal, so no two transactions of a wave depend on each other."""
    last_c: dict[int, int] = {}
    last_t: dict[int, int] = {}
    waves = []
    for c, term in zip(customers, terminals, strict=True):
        w = max(last_c.get(c, -1), last_t.get(term, -1)) + 1
        last_c[c] = last_t[term] = w
        waves.append(w)
    return waves


def _grouped(blobs: Sequence[bytes | bytearray], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-entity record blobs: the records and each entity's start offset."""
    lens = np.fromiter((len(b) for b in blobs), dtype=np.int64, count=len(blobs))
    lens //= dtype.itemsize
    starts = np.zeros(len(blobs), dtype=np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    return np.frombuffer(b"".join(blobs), dtype=dtype), starts


def _keys(group: np.ndarray, t: np.ndarray, base: int) -> np.ndarray:
    return (group << _GROUP_SHIFT) | (t - base)


_GROUP_SHIFT = np.int64(40)  # time offsets below 2**40 s; group numbers above
_TIME_MASK = (np.int64(1) << _GROUP_SHIFT) - 1


def _sorted_by_key(records: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(key) > 1 and bool((key[1:] < key[:-1]).any()):  # some arrived out of time order
        order = np.argsort(key, kind="stable")
        return records[order], key[order]
    return records, key


def _prefix_ld(values: np.ndarray) -> np.ndarray:
    out = np.zeros(len(values) + 1, dtype=np.longdouble)
    np.cumsum(values, dtype=np.longdouble, out=out[1:])
    return out


class FeatureBatch(Sequence[dict[str, float]]):
    """The features of a batch of transactions, by column (`columns[name]`: float64, one value
    per transaction, in order). A sequence of per-transaction dicts for callers that want rows;
    `matrix` gives the model's input in one step, without building them."""

    __slots__ = ("_rows", "columns", "names")

    def __init__(self, columns: dict[str, np.ndarray]) -> None:
        self.columns = columns
        self.names = list(columns)
        self._rows: list[dict[str, float]] | None = None

    def __len__(self) -> int:
        return len(self.columns[self.names[0]]) if self.names else 0

    def rows(self) -> list[dict[str, float]]:
        """Every transaction's features as a dict (built once)."""
        if self._rows is None:
            names = self.names
            values = zip(*(self.columns[k].tolist() for k in names), strict=True)
            self._rows = [dict(zip(names, row, strict=True)) for row in values]
        return self._rows

    def __getitem__(self, i):  # type: ignore[no-untyped-def,override]
        return self.rows()[i]

    def __iter__(self) -> Iterator[dict[str, float]]:
        return iter(self.rows())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FeatureBatch):
            other = other.rows()
        return isinstance(other, list) and self.rows() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FeatureBatch({len(self)} transactions, {len(self.names)} features)"

    def matrix(self, names: Sequence[str], dtype: type = np.float32) -> np.ndarray:
        """The features in `names` order, one row per transaction."""
        out: np.ndarray = np.empty((len(self), len(names)), dtype=dtype)
        for j, name in enumerate(names):
            out[:, j] = self.columns[name]
        return out


class _Batch(NamedTuple):
    """A batch's transactions by column (seconds, customer, terminal, amount, known fraud)."""

    t: np.ndarray
    customer: np.ndarray
    terminal: np.ndarray
    amount: np.ndarray
    labelled: np.ndarray


def _entity_order_kept(qt: np.ndarray, *groups: np.ndarray) -> bool:
    """Whether, for each entity of each grouping, the batch's times never go back in list
    order (true of a stream in time order, whatever the entities interleave)."""
    for g in groups:
        order = np.argsort(g, kind="stable")
        gs, ts = g[order], qt[order]
        if bool(((gs[1:] == gs[:-1]) & (ts[1:] < ts[:-1])).any()):
            return False
    return True


def batch_features(
    cfg: FeatureConfig,
    txs: Sequence[Transaction],
    customers: Mapping[int, bytes | bytearray],
    terminals: Mapping[int, bytes | bytearray],
    frauds: Mapping[int, Iterable[int]],
    labels: Mapping[int, bool] | None = None,
    seconds: Sequence[int] | None = None,
) -> FeatureBatch:
    """The features of each transaction of `txs`, in order, each as if the ones before it in
    `txs` had been recorded first: the online definition, vectorised over the batch.

    `customers[c]`: customer c's earlier transactions (CUSTOMER_RECORD bytes, arrival order);
    `terminals[term]`: the terminal's (TERMINAL_RECORD bytes); `frauds[term]`: times of its
    transactions labelled fraud; `labels`: labels already known for transactions of `txs`;
    `seconds`: `tx_seconds` of each transaction, when the caller has them. Records later than a
    transaction's time (arrived out of order) are ignored for it; the windows are those of
    `compute_features`, which `tests/fraud/test_features_parity.py` checks.

    When every customer's and every terminal's transactions in `txs` are in time order (a
    stream's batch), the batch's own transactions are merged into the stored records and each
    window is one `searchsorted` over the whole batch (`_merged_features`). Otherwise a later
    entry could be recorded before an earlier one with an older time (and with `delay_days` 0 a
    label of the batch could count in the same second), and the batch is computed in waves of
    transactions that share no customer and no terminal (`_waves`).
    """
    if not txs:
        return FeatureBatch({name: np.empty(0) for name in cfg.feature_names()})
    if seconds is None:
        seconds = [tx_seconds(tx.tx_datetime) for tx in txs]
    qt = np.fromiter(seconds, dtype=np.int64, count=len(txs))
    qc = np.fromiter((tx.customer_id for tx in txs), dtype=np.int64, count=len(txs))
    qterm = np.fromiter((tx.terminal_id for tx in txs), dtype=np.int64, count=len(txs))
    qa = np.fromiter((tx.amount for tx in txs), dtype=np.float64, count=len(txs))
    labelled = (
        np.fromiter(
            (bool(labels.get(int(tx.transaction_id))) for tx in txs), dtype=bool, count=len(txs)
        )
        if labels
        else np.zeros(len(txs), dtype=bool)
    )
    batch = _Batch(qt, qc, qterm, qa, labelled)
    if cfg.delay_days and _entity_order_kept(qt, qc, qterm):
        return FeatureBatch(_merged_features(cfg, batch, customers, terminals, frauds))
    return FeatureBatch(_waves(cfg, txs, batch, customers, terminals, frauds))


def _waves(
    cfg: FeatureConfig,
    txs: Sequence[Transaction],
    batch: _Batch,
    customers: Mapping[int, bytes | bytearray],
    terminals: Mapping[int, bytes | bytearray],
    frauds: Mapping[int, Iterable[int]],
) -> dict[str, np.ndarray]:
    """`batch_features` in waves: each wave's transactions share no customer and no terminal,
    and are recorded before the next wave."""
    q_t, q_c, q_term, q_a = (a.tolist() for a in batch[:4])
    out: dict[str, np.ndarray] = {}
    cust = dict(customers)
    term = dict(terminals)
    fr = {k: list(v) for k, v in frauds.items()}
    waves = _wave_numbers(q_c, q_term)
    by_wave: dict[int, list[int]] = {}
    for i, w in enumerate(waves):
        by_wave.setdefault(w, []).append(i)
    last_wave = max(by_wave)
    for w in sorted(by_wave):
        idx = by_wave[w]
        # One wave shares no customer and no terminal: merged features, labels of this batch
        # only for the waves after the one that records them.
        wave = _Batch(
            batch.t[idx],
            batch.customer[idx],
            batch.terminal[idx],
            batch.amount[idx],
            np.zeros(len(idx), dtype=bool),
        )
        cols = _merged_features(cfg, wave, cust, term, fr)
        for name, values in cols.items():
            if name not in out:
                out[name] = np.empty(len(txs), dtype=np.float64)
            out[name][idx] = values
        if w == last_wave:
            break
        for i in idx:
            # Record the transaction for the waves after this one.
            c, tm, t = q_c[i], q_term[i], q_t[i]
            cust[c] = cust.get(c, b"") + _PACK_CUSTOMER(t, q_a[i], tm)
            term[tm] = term.get(tm, b"") + _PACK_TERMINAL(t, int(txs[i].transaction_id))
            if batch.labelled[i]:
                fr.setdefault(tm, []).append(t)
    return out


def _merged_features(
    cfg: FeatureConfig,
    batch: _Batch,
    customers: Mapping[int, bytes | bytearray],
    terminals: Mapping[int, bytes | bytearray],
    frauds: Mapping[int, Iterable[int]],
) -> dict[str, np.ndarray]:
    """`batch_features` of a batch whose entities' times never go back, in one pass.

    Every window sum is the sum over two sorted runs: S, the stored records of the
    transaction's customer (or terminal), one group per transaction as if each were alone; B,
    the batch's own records sorted by (entity, time, arrival), of which those before the
    transaction's own record arrived before it.
    """
    qt, qc, qterm, qa, labelled = batch
    day = DAY_SECONDS
    q = len(qt)
    g = np.arange(q, dtype=np.int64)
    cols: dict[str, np.ndarray] = {
        schema.TX_AMOUNT: qa,
        "TX_DURING_WEEKEND": ((qt // day + 3) % 7 >= 5).astype(np.float64),  # 1970-01-01: Thu
        "TX_DURING_NIGHT": ((qt % day) // 3600 <= cfg.night_end_hour).astype(np.float64),
    }

    # -- customer windows (t - w, t], the current transaction included ----------------------
    recs, starts = _grouped([customers.get(c, b"") for c in qc.tolist()], CUSTOMER_RECORD)
    lens = np.diff(np.r_[starts, len(recs)])
    far = cfg.customer_keep_days * day + 1
    base = min(int(qt.min()) - far, int(recs["t"].min()) if len(recs) else 0)
    recs, key = _sorted_by_key(recs, _keys(np.repeat(g, lens), recs["t"], base))
    rt, ra = recs["t"], recs["amount"]
    qk = _keys(g, qt, base)
    n = np.searchsorted(key, qk, side="right")  # stored records at or before t
    _, cg = np.unique(qc, return_inverse=True)
    border = np.lexsort((g, qt, cg))
    bkey, bt, ba = _keys(cg[border], qt[border], base), qt[border], qa[border]
    bn = np.empty(q, dtype=np.int64)
    bn[border] = g  # the transaction's own place among the batch's records
    bqk = _keys(cg, qt, base)

    def lows(w: int) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.searchsorted(key, qk - w * day, side="right"),
            np.searchsorted(bkey, bqk - w * day, side="right"),
        )

    def window_sum(prefix: np.ndarray, bprefix: np.ndarray, lo: np.ndarray, blo: np.ndarray):  # type: ignore[no-untyped-def]
        return ((prefix[n] - prefix[lo]) + (bprefix[bn] - bprefix[blo])).astype(np.float64)

    cs, bcs = _prefix_ld(ra), _prefix_ld(ba)
    for w in cfg.customer_windows_days:
        lo, blo = lows(w)
        count = ((n - lo) + (bn - blo) + 1).astype(np.float64)
        cols[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"] = count
        cols[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"] = (window_sum(cs, bcs, lo, blo) + qa) / count
    h = cfg.history_window_days
    if h:
        lo, blo = lows(h)
        prev = (n - lo) + (bn - blo)
        psum = window_sum(cs, bcs, lo, blo)
        psq = window_sum(_prefix_ld(ra * ra), _prefix_ld(ba * ba), lo, blo)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = psum / prev
            ratio = np.where((prev > 0) & (mean > 0), qa / mean, np.nan)
            var = np.maximum(psq / prev - mean * mean, 0.0)
            z = np.where(
                prev >= 2, (qa - mean) / np.maximum(np.sqrt(var), cfg.zscore_min_std), np.nan
            )
        cols[f"CUSTOMER_ID_AMOUNT_RATIO_{h}DAY"] = ratio
        cols[f"CUSTOMER_ID_AMOUNT_ZSCORE_{h}DAY"] = z
        has_s = n > starts
        bfirst = np.searchsorted(bkey, bqk & ~_TIME_MASK, side="left")  # customer's first
        has_b = bn > bfirst
        last = np.where(has_s, rt[np.maximum(n - 1, 0)] if len(rt) else 0, np.iinfo(np.int64).min)
        last = np.where(has_b, np.maximum(last, bt[np.maximum(bn - 1, 0)]), last)
        cols["CUSTOMER_ID_HOURS_SINCE_PREV_TX"] = np.where(
            has_s | has_b, (qt - last) / 3600.0, np.nan
        )
        same = np.zeros(len(recs) + 1, dtype=np.int64)
        np.cumsum(recs["terminal"] == qterm[key >> _GROUP_SHIFT], out=same[1:])
        # The batch's earlier records of the same customer at the same terminal.
        porder = np.lexsort((g, qt, qterm, cg))
        pc, pt = cg[porder], qterm[porder]
        pair = np.cumsum(np.r_[True, (pc[1:] != pc[:-1]) | (pt[1:] != pt[:-1])]) - 1
        pkey = _keys(pair, qt[porder], base)
        pn = np.empty(q, dtype=np.int64)
        pn[porder] = g
        plo = np.searchsorted(pkey, pkey[pn] - h * day, side="right")
        cols[f"CUSTOMER_TERMINAL_NB_PREV_TX_{h}DAY"] = ((same[n] - same[lo]) + (pn - plo)).astype(
            np.float64
        )
        if cfg.high_amount_feature:
            hw = cfg.high_amount_window_days
            hlo, bhlo = lows(hw)
            # Was each stored record in a 14-day window a high amount against the history
            # before it? That history is the stored records before it and the batch's records
            # older than it (a stored record can be newer than some of the batch's when batches
            # arrive out of time order; all of those arrived before the transaction).
            rg = key >> _GROUP_SHIFT
            cand = np.flatnonzero(rt > qt[rg] - hw * day) if len(rt) else g[:0]
            flags = np.zeros(len(recs) + 1, dtype=np.int64)
            if len(cand):
                clo = np.searchsorted(key, key[cand] - h * day, side="right")
                cnt = cand - clo
                csum = (cs[cand] - cs[clo]).astype(np.float64)
                late = np.flatnonzero(rt[cand] > bt[bfirst[rg[cand]]])  # newer than one
                if len(late):
                    ck = _keys(cg[rg[cand[late]]], rt[cand[late]], base)
                    b_hi = np.searchsorted(bkey, ck, side="left")
                    b_lo = np.searchsorted(bkey, ck - h * day, side="right")
                    cnt[late] += b_hi - b_lo
                    csum[late] += (bcs[b_hi] - bcs[b_lo]).astype(np.float64)
                with np.errstate(divide="ignore", invalid="ignore"):
                    cmean = csum / cnt
                    high = (cnt > 0) & (cmean > 0) & (ra[cand] / cmean > cfg.high_amount_ratio)
                hit = np.zeros(len(recs), dtype=np.int64)
                hit[cand] = high
                np.cumsum(hit, out=flags[1:])
            # A batch record's history is the transaction's own: its flag is its own ratio's.
            bflags = np.zeros(q + 1, dtype=np.int64)
            np.cumsum((ratio > cfg.high_amount_ratio)[border], out=bflags[1:])
            cols[f"CUSTOMER_ID_NB_PREV_HIGH_AMOUNT_{hw}DAY"] = (
                (flags[n] - flags[hlo]) + (bflags[bn] - bflags[bhlo])
            ).astype(np.float64)

    # -- terminal windows (t - delay - w, t - delay] -------------------------------------------
    trecs, tstarts = _grouped([terminals.get(t, b"") for t in qterm.tolist()], TERMINAL_RECORD)
    tgroup = np.repeat(g, np.diff(np.r_[tstarts, len(trecs)]))
    ft_lists = [list(frauds.get(t, ())) for t in qterm.tolist()]
    fcount = np.fromiter((len(f) for f in ft_lists), dtype=np.int64, count=q)
    ftimes = np.fromiter((x for f in ft_lists for x in f), dtype=np.int64, count=int(fcount.sum()))
    hi = qt - cfg.delay_days * day
    tw = cfg.terminal_windows_days
    fw = cfg.terminal_fraud_window_days
    far = (cfg.delay_days + max(max(tw, default=0), fw)) * day + 1
    tbase = min(
        int(qt.min()) - far,
        int(trecs["t"].min()) if len(trecs) else 0,
        int(ftimes.min()) if len(ftimes) else 0,
    )
    tkey = np.sort(_keys(tgroup, trecs["t"], tbase))
    fkey = np.sort(_keys(np.repeat(g, fcount), ftimes, tbase))
    hk = _keys(g, hi, tbase)
    # The batch's records by (terminal, time, arrival): a transaction never counts its own
    # record or later ones (with delay 0 they are in range); labels of the batch's own
    # transactions (`labelled`) count like stored ones.
    _, tg = np.unique(qterm, return_inverse=True)
    torder = np.lexsort((g, qt, tg))
    btkey = _keys(tg[torder], qt[torder], tbase)
    bt_own = np.empty(q, dtype=np.int64)
    bt_own[torder] = g
    bfkey = np.sort(_keys(tg[labelled], qt[labelled], tbase))
    bhk = _keys(tg, hi, tbase)
    t_hi = np.searchsorted(tkey, hk, side="right")
    bt_hi = np.minimum(np.searchsorted(btkey, bhk, side="right"), bt_own)
    f_hi = np.searchsorted(fkey, hk, side="right")
    bf_hi = np.searchsorted(bfkey, bhk, side="right")
    for w in tw:
        t_lo = np.searchsorted(tkey, hk - w * day, side="right")
        bt_lo = np.searchsorted(btkey, bhk - w * day, side="right")
        f_lo = np.searchsorted(fkey, hk - w * day, side="right")
        bf_lo = np.searchsorted(bfkey, bhk - w * day, side="right")
        count = ((t_hi - t_lo) + (bt_hi - bt_lo)).astype(np.float64)
        cols[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"] = count
        with np.errstate(divide="ignore", invalid="ignore"):
            cols[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"] = np.where(
                count > 0, ((f_hi - f_lo) + (bf_hi - bf_lo)) / count, 0.0
            )
    if fw:
        f_lo = np.searchsorted(fkey, hk - fw * day, side="right")
        bf_lo = np.searchsorted(bfkey, bhk - fw * day, side="right")
        nb, bnb = f_hi - f_lo, bf_hi - bf_lo
        first = np.full(q, np.iinfo(np.int64).max, dtype=np.int64)
        last = np.full(q, np.iinfo(np.int64).min, dtype=np.int64)
        for k, lo_, hi_, has in ((fkey, f_lo, f_hi, nb > 0), (bfkey, bf_lo, bf_hi, bnb > 0)):
            if len(k):
                times = (k & _TIME_MASK) + tbase
                first = np.where(has, np.minimum(first, times[np.minimum(lo_, len(k) - 1)]), first)
                last = np.where(has, np.maximum(last, times[np.maximum(hi_ - 1, 0)]), last)
        total = nb + bnb
        cols[f"TERMINAL_ID_NB_FRAUD_{fw}DAY_WINDOW"] = total.astype(np.float64)
        cols[f"TERMINAL_ID_FIRST_FRAUD_AGE_{fw}DAY_WINDOW"] = np.where(
            total > 0, (qt - first) / day, np.nan
        )
        cols[f"TERMINAL_ID_LAST_FRAUD_AGE_{fw}DAY_WINDOW"] = np.where(
            total > 0, (qt - last) / day, np.nan
        )
    return cols


def vector(features: Mapping[str, float], names: Iterable[str]) -> np.ndarray:
    """Features as a float32 row in the model's column order."""
    return np.fromiter((features[n] for n in names), dtype=np.float32)


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


def _grouped_blobs(keys: np.ndarray, records: np.ndarray) -> dict[int, bytes]:
    order = np.argsort(keys, kind="stable")  # keeps time order within an entity
    k, r = keys[order], records[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]]) if len(k) else np.empty(0, int)
    ends = np.r_[starts[1:], len(k)]
    return {int(k[a]): r[a:b].tobytes() for a, b in zip(starts, ends, strict=True)}


def history_records(history: pd.DataFrame) -> HistoryRecords:
    """Per-entity records of a history frame (contract schema; TX_FRAUD where labels are known)."""
    ordered = history.sort_values([schema.TX_DATETIME, schema.TRANSACTION_ID], kind="stable")
    t = ordered[schema.TX_DATETIME].to_numpy(dtype="datetime64[s]").astype(np.int64)
    ids = ordered[schema.TRANSACTION_ID].to_numpy(dtype=np.int64)
    cust = ordered[schema.CUSTOMER_ID].to_numpy(dtype=np.int64)
    term = ordered[schema.TERMINAL_ID].to_numpy(dtype=np.int64)
    crec = np.empty(len(ordered), dtype=CUSTOMER_RECORD)
    crec["t"], crec["amount"], crec["terminal"] = (
        t,
        ordered[schema.TX_AMOUNT].to_numpy(np.float64),
        term,
    )
    trec = np.empty(len(ordered), dtype=TERMINAL_RECORD)
    trec["t"], trec["id"] = t, ids
    frauds: dict[int, dict[int, int]] = {}
    if schema.TX_FRAUD in ordered.columns:
        label = ordered[schema.TX_FRAUD].to_numpy(dtype=np.float64)
        for i in np.flatnonzero(label == 1):
            frauds.setdefault(int(term[i]), {})[int(ids[i])] = int(t[i])
    return HistoryRecords(
        customers=_grouped_blobs(cust, crec),
        terminals=_grouped_blobs(term, trec),
        frauds=frauds,
        transactions=list(zip(ids.tolist(), term.tolist(), t.tolist(), strict=True)),
        newest=int(t.max()) if len(t) else 0,
    )


class FeatureStore(Protocol):
    """The online feature state behind the API: in-process (`OnlineFeatureState`) or shared
    (`serving.feature_store.RedisFeatureStore`)."""

    cfg: FeatureConfig

    def seed(self, history: pd.DataFrame) -> None: ...

    def features_many(self, txs: Sequence[Transaction]) -> Sequence[dict[str, float]]: ...

    async def afeatures_many(self, txs: Sequence[Transaction]) -> Sequence[dict[str, float]]: ...

    def add_label(self, transaction_id: int, is_fraud: bool) -> bool: ...

    def seen(self, transaction_id: int) -> bool: ...

    def close(self) -> None: ...


class ShardedDict(Generic[V]):
    """A dict of integer keys split into 2**`bits` dicts by a hash of the key.

    A dict grows by rehashing every entry at once, and one whose old entries are deleted (an
    eviction queue) rebuilds itself now and then at the same size: measured, the caller of the
    insertion that grows a dict stalls 23 ms at 0.7 million entries, 84 ms at 2.8 million, and
    proportionally beyond (a lookback of busy days holds tens of millions). Split, each part
    grows on its own, so no insertion rehashes more than about 1/2**`bits` of the entries. The
    part is chosen by a hash of the key, not its low bits: consecutive ids spread by their low
    bits would keep the parts at equal sizes, so every part would grow within the same few
    hundred insertions (one batch request would wait for all of them); hashed, the parts' sizes
    differ a little and their growths spread over several batches. Measured
    (`benchmarks/serving/state_stalls.py`, 3 million insertions, 1.5 million kept): worst
    single insertion 0.6 ms instead of 83-97, worst run of 1,000 insertions 17-18 ms instead of
    83-97; 0.6 µs per insertion instead of 0.13.
    """

    __slots__ = ("_mask", "_shards")

    def __init__(self, bits: int = 8) -> None:
        self._mask = (1 << bits) - 1
        self._shards: list[dict[int, V]] = [{} for _ in range(1 << bits)]

    def get(self, key: int, default: V | None = None) -> V | None:
        return self._shards[hash((key,)) & self._mask].get(key, default)

    def __contains__(self, key: int) -> bool:
        return key in self._shards[hash((key,)) & self._mask]

    def __getitem__(self, key: int) -> V:
        return self._shards[hash((key,)) & self._mask][key]

    def __setitem__(self, key: int, value: V) -> None:
        self._shards[hash((key,)) & self._mask][key] = value

    def pop(self, key: int, default: V | None = None) -> V | None:
        return self._shards[hash((key,)) & self._mask].pop(key, default)

    def present(self, keys: Iterable[int]) -> list[int]:
        """The keys of `keys` that are in the dict, in order."""
        shards, mask = self._shards, self._mask
        return [k for k in keys if k in shards[hash((k,)) & mask]]

    def update(self, pairs: Iterable[tuple[int, V]]) -> None:
        shards, mask = self._shards, self._mask
        for key, value in pairs:
            shards[hash((key,)) & mask][key] = value

    def __len__(self) -> int:
        return sum(map(len, self._shards))


class OnlineFeatureState:
    """The in-process feature state: per-entity records in memory (one process).

    `features(tx)` returns the features of `tx` given everything recorded before it and then
    records `tx`. Fraud labels arrive separately (`add_label`) and count for terminal risk only
    once the transaction is older than the delay, as offline; a label that arrives before its
    transaction is kept until the transaction does. State older than the lookback is evicted.
    A customer's records are kept in time order (a late arrival is sorted in), so that the
    batch features never sort them.
    """

    #: Labels waiting for their transaction, at most (the oldest are dropped beyond).
    MAX_PENDING_LABELS = 1_000_000

    def __init__(self, cfg: FeatureConfig) -> None:
        self.cfg = cfg
        self._cust: dict[int, bytearray] = {}
        self._term: dict[int, bytearray] = {}
        self._frauds: dict[int, dict[int, int]] = {}
        # id -> (terminal, seconds) of every transaction in the lookback
        self._txs: ShardedDict[tuple[int, int]] = ShardedDict()
        self._order: deque[tuple[int, int]] = deque()  # (seconds, id), for eviction
        self._pending: dict[int, bool] = {}
        self._newest = 0
        self._cust_keep = cfg.customer_keep_days * DAY_SECONDS
        self._term_keep = cfg.terminal_keep_days * DAY_SECONDS
        self._keep = cfg.lookback_days * DAY_SECONDS

    # -- state updates --------------------------------------------------------------------
    def add_label(self, transaction_id: int, is_fraud: bool) -> bool:
        """Record a (late) fraud label; False when the transaction has not arrived (yet)."""
        tid = int(transaction_id)
        known = self._txs.get(tid)
        if known is None:
            self._pending[tid] = bool(is_fraud)
            if len(self._pending) > self.MAX_PENDING_LABELS:
                del self._pending[next(iter(self._pending))]
            return False
        terminal, t = known
        if is_fraud:
            self._frauds.setdefault(terminal, {})[tid] = t
        else:
            self._frauds.get(terminal, {}).pop(tid, None)
        return True

    def seen(self, transaction_id: int) -> bool:
        return int(transaction_id) in self._txs

    def _record(self, tid: int, t: int, c: int, term: int, amount: float) -> None:
        cb = self._cust.get(c)
        if cb is None:
            cb = self._cust[c] = bytearray()
        late = len(cb) and _last_time(cb, _CUSTOMER_SIZE) > t
        cb += _PACK_CUSTOMER(t, amount, term)
        if late:
            _sort_by_time(cb)
        tb = self._term.get(term)
        if tb is None:
            tb = self._term[term] = bytearray()
        tb += _PACK_TERMINAL(t, tid)
        self._txs[tid] = (term, t)
        self._order.append((t, tid))
        if self._pending and self._pending.pop(tid, False):
            self._frauds.setdefault(term, {})[tid] = t
        if t > self._newest:
            self._newest = t
            self._evict()
        self._trim(cb, CUSTOMER_RECORD.itemsize, t - self._cust_keep)
        self._trim(tb, TERMINAL_RECORD.itemsize, t - self._term_keep)

    def _record_many(self, txs: Sequence[Transaction], ts: Sequence[int] | None = None) -> None:
        """`_record` of each transaction in order, with the per-record work done once per
        batch: records packed by numpy, one trim per entity (at its newest time in the batch:
        trims only ever drop records at or before a cutoff, so the last one decides), one
        eviction (the horizon only moves forward)."""
        if len(txs) < 8:
            for tx in txs:
                self.observe(tx)
            return
        ids = [int(tx.transaction_id) for tx in txs]
        if ts is None:
            ts = [tx_seconds(tx.tx_datetime) for tx in txs]
        cs = [int(tx.customer_id) for tx in txs]
        terms = [int(tx.terminal_id) for tx in txs]
        crec = np.empty(len(txs), dtype=CUSTOMER_RECORD)
        crec["t"], crec["amount"], crec["terminal"] = ts, [float(tx.amount) for tx in txs], terms
        trec = np.empty(len(txs), dtype=TERMINAL_RECORD)
        trec["t"], trec["id"] = ts, ids
        cview, tview = memoryview(crec.tobytes()), memoryview(trec.tobytes())
        ci, ti = CUSTOMER_RECORD.itemsize, TERMINAL_RECORD.itemsize
        cust, term = self._cust, self._term
        c_newest: dict[int, int] = {}
        t_newest: dict[int, int] = {}
        late: dict[int, bytearray] = {}
        for k, (c, tm, t) in enumerate(zip(cs, terms, ts, strict=True)):
            cb = cust.get(c)
            if cb is None:
                cb = cust[c] = bytearray()
            elif len(cb) and _last_time(cb, ci) > t:
                late[c] = cb
            cb += cview[k * ci : (k + 1) * ci]
            tb = term.get(tm)
            if tb is None:
                tb = term[tm] = bytearray()
            tb += tview[k * ti : (k + 1) * ti]
            if c_newest.get(c, t) <= t:
                c_newest[c] = t
            if t_newest.get(tm, t) <= t:
                t_newest[tm] = t
        self._txs.update(zip(ids, zip(terms, ts, strict=True), strict=True))
        self._order.extend(zip(ts, ids, strict=True))
        if self._pending:
            for tid, tm, t in zip(ids, terms, ts, strict=True):
                if self._pending.pop(tid, False):
                    self._frauds.setdefault(tm, {})[tid] = t
        newest = max(ts)
        if newest > self._newest:
            self._newest = newest
            self._evict()
        for cb in late.values():  # older than what was recorded (concurrent requests)
            _sort_by_time(cb)
        trim = self._trim
        for c, t in c_newest.items():
            trim(cust[c], ci, t - self._cust_keep)
        for tm, t in t_newest.items():
            trim(term[tm], ti, t - self._term_keep)

    @staticmethod
    def _trim(blob: bytearray, itemsize: int, cutoff: int) -> None:
        # Trim in chunks: only once the 16th record is stale (most calls read 8 bytes).
        at = 16 * itemsize
        if len(blob) > at and int.from_bytes(blob[at : at + 8], "little", signed=True) <= cutoff:
            k = leading_stale(blob, itemsize, cutoff)
            if k:
                del blob[: k * itemsize]

    def _evict(self) -> None:
        horizon = self._newest - self._keep
        order, txs = self._order, self._txs
        while order and order[0][0] <= horizon:
            _, tid = order.popleft()
            known = txs.pop(tid, None)
            if known is not None:
                fr = self._frauds.get(known[0])
                if fr is not None and fr.pop(tid, None) is not None and not fr:
                    del self._frauds[known[0]]

    def observe(self, tx: Transaction) -> None:
        """Record a transaction without computing its features."""
        self._record(
            int(tx.transaction_id),
            tx_seconds(tx.tx_datetime),
            int(tx.customer_id),
            int(tx.terminal_id),
            float(tx.amount),
        )

    def seed(self, history: pd.DataFrame) -> None:
        """Load recent history (contract schema, with TX_FRAUD where labels are known)."""
        rec = history_records(history)
        for c, blob in rec.customers.items():
            self._cust.setdefault(c, bytearray()).extend(blob)
        for term, blob in rec.terminals.items():
            self._term.setdefault(term, bytearray()).extend(blob)
        for term, fr in rec.frauds.items():
            self._frauds.setdefault(term, {}).update(fr)
        for tid, term, t in rec.transactions:
            self._txs[tid] = (term, t)
            self._order.append((t, tid))
        self._newest = max(self._newest, rec.newest)
        self._evict()

    # -- features ---------------------------------------------------------------------------
    def features(self, tx: Transaction, *, update: bool = True) -> dict[str, float]:
        """The features of `tx` (computed before recording it when `update` is true)."""
        if update:
            return self.features_many([tx], check_duplicates=False)[0]
        return self._compute([tx])[0]

    def _compute(
        self, txs: Sequence[Transaction], seconds: Sequence[int] | None = None
    ) -> Sequence[dict[str, float]]:
        cust, term, fr = self._cust, self._term, self._frauds
        if len(txs) == 1:
            tx = txs[0]
            cb = cust.get(int(tx.customer_id))
            tb = term.get(int(tx.terminal_id))
            fd = fr.get(int(tx.terminal_id))
            return [
                online_features(
                    self.cfg,
                    tx_seconds(tx.tx_datetime),
                    float(tx.amount),
                    int(tx.terminal_id),
                    np.frombuffer(cb, dtype=CUSTOMER_RECORD) if cb else _EMPTY_CUSTOMER,
                    np.frombuffer(tb, dtype=TERMINAL_RECORD)["t"] if tb else _EMPTY_TIMES,
                    np.fromiter(fd.values(), dtype=np.int64, count=len(fd)) if fd else _EMPTY_TIMES,
                )
            ]
        cs = {int(tx.customer_id) for tx in txs}
        ts = {int(tx.terminal_id) for tx in txs}
        pending = self._pending
        return batch_features(
            self.cfg,
            txs,
            {c: cust[c] for c in cs if c in cust},
            {t: term[t] for t in ts if t in term},
            {t: fr[t].values() for t in ts if t in fr},
            {int(tx.transaction_id): True for tx in txs if pending.get(int(tx.transaction_id))}
            if pending
            else None,
            seconds,
        )

    def features_many(
        self, txs: Sequence[Transaction], *, check_duplicates: bool = True
    ) -> Sequence[dict[str, float]]:
        """Features of each transaction in order, each recorded before the next; refuses the
        whole list (recording nothing) if an id was already seen or repeats."""
        if check_duplicates:
            ids = [int(tx.transaction_id) for tx in txs]
            dup = self._txs.present(ids)
            if dup or len(set(ids)) != len(ids):
                seen: set[int] = set()
                dup += [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
                raise DuplicateTransactionError(dup)
        ts = [tx_seconds(tx.tx_datetime) for tx in txs] if len(txs) > 1 else None
        out = self._compute(txs, ts)
        self._record_many(txs, ts)
        return out

    async def afeatures_many(self, txs: Sequence[Transaction]) -> Sequence[dict[str, float]]:
        """`features_many` for asyncio callers (the in-process state never waits)."""
        return self.features_many(txs)

    def close(self) -> None:
        pass

    def vector(self, features: Mapping[str, float], names: Iterable[str]) -> np.ndarray:
        """Features as a float32 row in the model's column order."""
        return vector(features, names)


_EMPTY_CUSTOMER = np.empty(0, dtype=CUSTOMER_RECORD)
