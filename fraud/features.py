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

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fraud import schema

DAY_SECONDS = 86_400
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


@dataclass(frozen=True)
class Transaction:
    """One raw transaction as the online state sees it."""

    transaction_id: int
    tx_datetime: np.datetime64 | pd.Timestamp
    customer_id: int
    terminal_id: int
    amount: float


def _seconds(value: np.datetime64 | pd.Timestamp) -> int:
    return int(pd.Timestamp(value).value // 1_000_000_000)  # floor to seconds, as offline


class OnlineFeatureState:
    """Per-customer and per-terminal windows kept in memory, updated one transaction at a time.

    `features(tx)` returns the features of `tx` given everything observed before it and then
    records `tx`. Fraud labels arrive separately (`add_label`) and count for terminal risk only
    once the transaction is older than the delay, as offline. Transactions must arrive in time
    order per entity (the payment stream's order); state older than the lookback is evicted.
    """

    def __init__(self, cfg: FeatureConfig) -> None:
        self.cfg = cfg
        # customer -> (seconds, amount, was a high amount for that customer)
        self._cust: dict[int, deque[tuple[int, float, bool]]] = {}
        self._cust_last: dict[int, int] = {}
        self._pair: dict[tuple[int, int], deque[int]] = {}
        self._term: dict[int, deque[tuple[int, int]]] = {}
        self._labels: dict[int, int] = {}
        self._cust_keep = cfg.customer_keep_days
        self._term_keep = cfg.terminal_keep_days

    # -- state updates --------------------------------------------------------------------
    def add_label(self, transaction_id: int, is_fraud: bool) -> None:
        """Record a (late) fraud label."""
        self._labels[int(transaction_id)] = int(bool(is_fraud))

    def _previous_amounts(self, c: int, t: int) -> list[float]:
        """The customer's amounts in (t - history, t), before the current transaction."""
        lo = t - self.cfg.history_window_days * DAY_SECONDS
        return [a for (s, a, _) in self._cust.get(c, ()) if s > lo]

    def _is_high(self, amount: float, prev: list[float]) -> bool:
        ratio = amount_ratio(amount, math.fsum(prev), len(prev))
        return bool(ratio > self.cfg.high_amount_ratio)  # NaN (no history) is not high

    def observe(self, tx: Transaction, *, high: bool | None = None) -> None:
        """Record a transaction without computing its features (seeding from history)."""
        t = _seconds(tx.tx_datetime)
        c, term = int(tx.customer_id), int(tx.terminal_id)
        amount = float(tx.amount)
        if high is None:
            high = self.cfg.high_amount_feature and self._is_high(
                amount, self._previous_amounts(c, t)
            )
        cq = self._cust.setdefault(c, deque())
        cq.append((t, amount, high))
        _evict(cq, t - self._cust_keep * DAY_SECONDS)
        self._cust_last[c] = t
        if self.cfg.history_window_days:
            pq = self._pair.setdefault((c, term), deque())
            pq.append(t)
            while pq and pq[0] <= t - self.cfg.history_window_days * DAY_SECONDS:
                pq.popleft()
        tq = self._term.setdefault(term, deque())
        tq.append((t, int(tx.transaction_id)))
        _evict(tq, t - self._term_keep * DAY_SECONDS)

    def seed(self, history: pd.DataFrame) -> None:
        """Load recent history (contract schema, with TX_FRAUD where labels are known)."""
        ordered = history.sort_values([schema.TX_DATETIME, schema.TRANSACTION_ID], kind="stable")
        for row in ordered.itertuples(index=False):
            self.observe(
                Transaction(
                    getattr(row, schema.TRANSACTION_ID),
                    getattr(row, schema.TX_DATETIME),
                    getattr(row, schema.CUSTOMER_ID),
                    getattr(row, schema.TERMINAL_ID),
                    getattr(row, schema.TX_AMOUNT),
                )
            )
        if schema.TX_FRAUD in ordered.columns:
            for tid, label in zip(
                ordered[schema.TRANSACTION_ID], ordered[schema.TX_FRAUD], strict=True
            ):
                if not pd.isna(label):
                    self._labels[int(tid)] = int(label)

    # -- features ---------------------------------------------------------------------------
    def features(self, tx: Transaction, *, update: bool = True) -> dict[str, float]:
        """The features of `tx` (computed before recording it when `update` is true)."""
        cfg = self.cfg
        ts = pd.Timestamp(tx.tx_datetime)
        t = _seconds(tx.tx_datetime)
        amount = float(tx.amount)
        c, term = int(tx.customer_id), int(tx.terminal_id)
        f: dict[str, float] = {
            schema.TX_AMOUNT: amount,
            "TX_DURING_WEEKEND": weekend_flag(ts.weekday()),
            "TX_DURING_NIGHT": night_flag(ts.hour, cfg.night_end_hour),
        }
        cq = self._cust.get(c, deque())
        high = False
        for w in cfg.customer_windows_days:
            lo = t - w * DAY_SECONDS
            amounts = [a for (s, a, _) in cq if s > lo] + [amount]
            f[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"] = float(len(amounts))
            f[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"] = math.fsum(amounts) / len(amounts)
        if cfg.history_window_days:
            h = cfg.history_window_days
            lo = t - h * DAY_SECONDS
            prev = self._previous_amounts(c, t)
            # Same summation as offline: exact sums rounded once (fsum), then float64 algebra.
            psum, psq = math.fsum(prev), math.fsum(a * a for a in prev)
            ratio = amount_ratio(amount, psum, len(prev))
            f[f"CUSTOMER_ID_AMOUNT_RATIO_{h}DAY"] = ratio
            f[f"CUSTOMER_ID_AMOUNT_ZSCORE_{h}DAY"] = amount_zscore(
                amount, psum, psq, len(prev), cfg.zscore_min_std
            )
            last = self._cust_last.get(c)
            f["CUSTOMER_ID_HOURS_SINCE_PREV_TX"] = (
                (t - last) / 3600.0 if last is not None else math.nan
            )
            pq = self._pair.get((c, term), deque())
            f[f"CUSTOMER_TERMINAL_NB_PREV_TX_{h}DAY"] = float(sum(1 for s in pq if s > lo))
            if cfg.high_amount_feature:
                hw = cfg.high_amount_window_days
                hlo = t - hw * DAY_SECONDS
                f[f"CUSTOMER_ID_NB_PREV_HIGH_AMOUNT_{hw}DAY"] = float(
                    sum(1 for (s, _, was_high) in cq if s > hlo and was_high)
                )
                high = bool(ratio > cfg.high_amount_ratio)
        tq = self._term.get(term, deque())
        hi = t - cfg.delay_days * DAY_SECONDS
        for w in cfg.terminal_windows_days:
            lo = hi - w * DAY_SECONDS
            ids = [i for (s, i) in tq if lo < s <= hi]
            frauds = sum(self._labels.get(i, 0) for i in ids)
            f[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"] = float(len(ids))
            f[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"] = safe_ratio(frauds, len(ids))
        if cfg.terminal_fraud_window_days:
            w = cfg.terminal_fraud_window_days
            lo = hi - w * DAY_SECONDS
            fraud_times = [s for (s, i) in tq if lo < s <= hi and self._labels.get(i, 0) == 1]
            f[f"TERMINAL_ID_NB_FRAUD_{w}DAY_WINDOW"] = float(len(fraud_times))
            f[f"TERMINAL_ID_FIRST_FRAUD_AGE_{w}DAY_WINDOW"] = (
                (t - fraud_times[0]) / DAY_SECONDS if fraud_times else math.nan
            )
            f[f"TERMINAL_ID_LAST_FRAUD_AGE_{w}DAY_WINDOW"] = (
                (t - fraud_times[-1]) / DAY_SECONDS if fraud_times else math.nan
            )
        if update:
            self.observe(tx, high=high)
        return f

    def vector(self, features: Mapping[str, float], names: Iterable[str]) -> np.ndarray:
        """Features as a float32 row in the model's column order."""
        return np.fromiter((features[n] for n in names), dtype=np.float32)


def _evict(q: deque[Any], older_or_equal: int) -> None:
    while q and q[0][0] <= older_or_equal:
        q.popleft()
