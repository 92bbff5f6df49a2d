"""The offline implementation: every feature of a whole history at once, vectorised.

Each entity's transactions are sorted by (entity, time, input position) under one int64 key,
entity << 32 | seconds; a window's bounds are then one `searchsorted` for all rows, and its sums
differences of prefix sums. 1.75M transactions take a few seconds. The pipeline's features
stage and batch scoring use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fraud import schema
from fraud.features.config import DAY_SECONDS, FeatureConfig
from fraud.features.formulas import (
    amount_ratios,
    amount_zscores,
    during_night,
    during_weekend,
    is_high_amount,
    population_variances,
    prefix_sums,
    terminal_risks,
)

_KEY_SHIFT = np.int64(1) << np.int64(32)


def compute_features(df: pd.DataFrame, cfg: FeatureConfig) -> pd.DataFrame:
    """Add the feature columns to a frame of transactions (contract schema, any order).

    Terminal risk needs TX_FRAUD; without it (unlabelled data) risk features are 0, as they are
    online before any label has arrived. Returns a new frame in the input's row order.
    """
    out = df.copy()
    for columns in (
        _calendar_columns(df, cfg),
        _customer_columns(df, cfg),
        _terminal_columns(df, cfg),
    ):
        for name, values in columns.items():
            out[name] = values
    return out


# Each family below reads only its own entity's rows: the customer features only the rows of the
# same customer, the terminal features only those of the same terminal. That is what lets
# fraud/features/distributed.py compute them per entity partition with these very functions and
# get the same values as over the whole history.


def calendar_features(df: pd.DataFrame, cfg: FeatureConfig) -> pd.DataFrame:
    """The weekend and night flags of each row (row by row: any partition of rows works)."""
    return pd.DataFrame(_calendar_columns(df, cfg), index=df.index)


@dataclass(frozen=True)
class CustomerSums:
    """Where the running totals behind the customer windows stand before a frame's first
    customer: the sums of centred amounts and of their squares over every customer before it."""

    amount: np.longdouble
    square: np.longdouble


NO_CUSTOMERS_BEFORE = CustomerSums(np.longdouble(0), np.longdouble(0))


def customer_features(
    df: pd.DataFrame, cfg: FeatureConfig, before: CustomerSums = NO_CUSTOMERS_BEFORE
) -> pd.DataFrame:
    """The customer windows and customer-history features of each row, in the input's order.

    A row's values depend only on the rows of its own customer, up to the last bit of the
    amount sums: those are differences of running totals over all customers in order of first
    appearance, whose rounding depends on where the totals stand (`before`). `df` may hold any
    run of whole customers, in that order, with `before` from `customer_sums_after` of the
    customers before them: the values are then bit for bit those of the whole history.
    """
    return pd.DataFrame(_customer_columns(df, cfg, before), index=df.index)


def customer_sums_after(df: pd.DataFrame, before: CustomerSums) -> CustomerSums:
    """Where the running totals stand after the customers of `df` (see `customer_features`)."""
    return continue_customer_sums(customer_centred_amounts(df), before)


def customer_centred_amounts(df: pd.DataFrame) -> np.ndarray:
    """The amounts behind the running totals: sorted by (customer, time, input position) and
    centred on their customer's mean (the slow part of `customer_sums_after`)."""
    if len(df) == 0:
        return np.empty(0, dtype=np.float64)
    _, seconds = _seconds(df)
    return _customer_order(df, seconds)[4]


def continue_customer_sums(centred: np.ndarray, before: CustomerSums) -> CustomerSums:
    """The running totals after adding `customer_centred_amounts` to `before` (a quick,
    sequential step: chained over runs of customers, it gives each run its `before`)."""
    return CustomerSums(
        _prefix_sums_from(centred, before.amount)[-1],
        _prefix_sums_from(centred * centred, before.square)[-1],
    )


def terminal_features(df: pd.DataFrame, cfg: FeatureConfig) -> pd.DataFrame:
    """The terminal windows and terminal-fraud features of each row, in the input's order.

    A row's values depend only on the rows of its own terminal: `df` may hold any set of whole
    terminals (a partition by TERMINAL_ID).
    """
    return pd.DataFrame(_terminal_columns(df, cfg), index=df.index)


def _seconds(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Seconds since the epoch, and since the frame's first transaction (only differences of
    the latter are used, so any origin gives the same features)."""
    seconds_abs = df[schema.TX_DATETIME].to_numpy(dtype="datetime64[s]").astype(np.int64)
    t0 = seconds_abs.min() if len(df) else 0
    seconds = seconds_abs - t0
    if len(df) and seconds.max() >= 2**31:
        raise ValueError("TX_DATETIME spans more than 68 years; split the data")
    return seconds_abs, seconds


def _calendar_columns(df: pd.DataFrame, cfg: FeatureConfig) -> dict[str, np.ndarray]:
    names = cfg.names
    seconds_abs = df[schema.TX_DATETIME].to_numpy(dtype="datetime64[s]").astype(np.int64)
    return {
        names.weekend: during_weekend(seconds_abs).astype(np.float64),
        names.night: during_night(seconds_abs, cfg.night_end_hour).astype(np.float64),
    }


def _customer_names(cfg: FeatureConfig) -> list[str]:
    names = cfg.names
    out = [c for cw in names.customer_windows for c in (cw.nb_tx, cw.avg_amount)]
    if (history := names.history) is not None:
        out += [history.amount_ratio, history.amount_zscore]
        if history.nb_prev_high_amount is not None:
            out.append(history.nb_prev_high_amount)
        out += [history.hours_since_prev_tx, history.customer_terminal_nb_prev_tx]
    return out


def _terminal_names(cfg: FeatureConfig) -> list[str]:
    names = cfg.names
    out = [c for tw in names.terminal_windows for c in (tw.nb_tx, tw.risk)]
    if (terminal_fraud := names.terminal_fraud) is not None:
        out += [terminal_fraud.nb_fraud, terminal_fraud.first_fraud_age]
        out.append(terminal_fraud.last_fraud_age)
    return out


def _customer_order(
    df: pd.DataFrame, seconds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by (customer, time, input position): the order, the keys, the amounts,
    each row's customer mean and the amounts centred on it."""
    order, key = _sorted_keys(df[schema.CUSTOMER_ID].to_numpy(), seconds)
    amount_sorted = df[schema.TX_AMOUNT].to_numpy(dtype=np.float64)[order]
    # Centring each amount on its customer's mean keeps the running totals small, so a window's
    # sum (and the variance, which cancels digits) barely depends on the rounding of every
    # other customer's totals. The shift is exact algebra: it is added back by the callers.
    customer_codes = key >> 32
    customer_mean = np.bincount(customer_codes, weights=amount_sorted) / np.maximum(
        np.bincount(customer_codes), 1
    )
    row_centre = customer_mean[customer_codes]
    return order, key, amount_sorted, row_centre, amount_sorted - row_centre


def _prefix_sums_from(values: np.ndarray, start: np.longdouble) -> np.ndarray:
    """`prefix_sums` continued from `start` (with 0, the very same numbers)."""
    if start == 0:
        return prefix_sums(values)
    out = np.empty(len(values) + 1, dtype=np.longdouble)
    out[0] = start
    out[1:] = values
    return np.cumsum(out, dtype=np.longdouble)


def _customer_columns(
    df: pd.DataFrame, cfg: FeatureConfig, before: CustomerSums = NO_CUSTOMERS_BEFORE
) -> dict[str, np.ndarray]:
    names = cfg.names
    n = len(df)
    if n == 0:
        return {name: np.empty(0, dtype=np.float64) for name in _customer_names(cfg)}
    out: dict[str, np.ndarray] = {}
    _, seconds = _seconds(df)

    # Customer windows (t - w, t], current transaction included. Sums over a window are
    # differences of prefix sums of the centred amounts.
    order, key, amount_sorted, row_centre, centred = _customer_order(df, seconds)
    pos = np.arange(n)
    amount_prefix = _prefix_sums_from(centred, before.amount)
    square_prefix = _prefix_sums_from(centred * centred, before.square)
    for cw in names.customer_windows:
        lo = np.searchsorted(key, key - cw.days * DAY_SECONDS, side="right")
        count = (pos + 1 - lo).astype(np.float64)
        window_mean = row_centre + _window_sums(amount_prefix, lo, pos + 1) / count
        out[cw.nb_tx] = _unsort(order, count)
        out[cw.avg_amount] = _unsort(order, window_mean)

    if (history := names.history) is not None:
        lo = np.searchsorted(key, key - history.days * DAY_SECONDS, side="right")
        prev_count = pos - lo  # previous transactions only
        prev_sum_centred = _window_sums(amount_prefix, lo, pos)
        with np.errstate(divide="ignore", invalid="ignore"):
            prev_mean = row_centre + prev_sum_centred / prev_count
        prev_variance = population_variances(
            prev_sum_centred, _window_sums(square_prefix, lo, pos), prev_count
        )
        ratio = amount_ratios(amount_sorted, prev_mean, prev_count)
        zscore = amount_zscores(
            amount_sorted, prev_mean, prev_variance, prev_count, cfg.zscore_min_std
        )
        out[history.amount_ratio] = _unsort(order, ratio)
        out[history.amount_zscore] = _unsort(order, zscore)
        if history.nb_prev_high_amount is not None:
            high = is_high_amount(amount_sorted, prev_mean, prev_count, cfg.high_amount_ratio)
            high_prefix = prefix_sums(high.astype(np.float64))
            high_lo = np.searchsorted(
                key, key - history.high_amount_days * DAY_SECONDS, side="right"
            )
            out[history.nb_prev_high_amount] = _unsort(
                order, _window_sums(high_prefix, high_lo, pos)
            )
        same_customer_as_prev = np.zeros(n, dtype=bool)
        same_customer_as_prev[1:] = (key[1:] >> 32) == (key[:-1] >> 32)
        prev_key = np.empty(n, dtype=np.int64)
        prev_key[0] = 0
        prev_key[1:] = key[:-1]
        gap_hours = np.where(same_customer_as_prev, (key - prev_key) / 3600.0, np.nan)
        out[history.hours_since_prev_tx] = _unsort(order, gap_hours)

        pair = df[schema.CUSTOMER_ID].to_numpy().astype(np.int64) * np.int64(2**31) + df[
            schema.TERMINAL_ID
        ].to_numpy().astype(np.int64)
        pair_order, pair_key = _sorted_keys(pair, seconds)
        pair_lo = np.searchsorted(pair_key, pair_key - history.days * DAY_SECONDS, side="right")
        out[history.customer_terminal_nb_prev_tx] = _unsort(
            pair_order, (pos - pair_lo).astype(float)
        )
    return out


def _terminal_columns(df: pd.DataFrame, cfg: FeatureConfig) -> dict[str, np.ndarray]:
    names = cfg.names
    n = len(df)
    if n == 0:
        return {name: np.empty(0, dtype=np.float64) for name in _terminal_names(cfg)}
    out: dict[str, np.ndarray] = {}
    _, seconds = _seconds(df)
    pos = np.arange(n)
    # Terminal windows (t - delay - w, t - delay]: only labels older than the delay.
    order, key = _sorted_keys(df[schema.TERMINAL_ID].to_numpy(), seconds)
    if schema.TX_FRAUD in df.columns:
        fraud = df[schema.TX_FRAUD].to_numpy(dtype=np.float64)[order]
    else:
        fraud = np.zeros(n)
    fraud_prefix = prefix_sums(fraud)
    delay = cfg.delay_days * DAY_SECONDS
    # Labels older than the delay; never the transaction itself (with delay 0, the same second's
    # later rows are excluded too, as online, where they have not arrived yet).
    hi = np.minimum(np.searchsorted(key, key - delay, side="right"), pos)
    for tw in names.terminal_windows:
        lo = np.searchsorted(key, key - delay - tw.days * DAY_SECONDS, side="right")
        count = (hi - lo).astype(np.float64)
        out[tw.nb_tx] = _unsort(order, count)
        out[tw.risk] = _unsort(order, terminal_risks(_window_sums(fraud_prefix, lo, hi), count))
    if (terminal_fraud := names.terminal_fraud) is not None:
        lo = np.searchsorted(key, key - delay - terminal_fraud.days * DAY_SECONDS, side="right")
        out[terminal_fraud.nb_fraud] = _unsort(order, _window_sums(fraud_prefix, lo, hi))
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
        out[terminal_fraud.first_fraud_age] = _unsort(order, np.where(first_ok, first_age, np.nan))
        out[terminal_fraud.last_fraud_age] = _unsort(order, np.where(last_ok, last_age, np.nan))
    return out


def _sorted_keys(entity: np.ndarray, seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order by (entity, time, input position) and the int64 key entity<<32 | seconds."""
    codes, _ = pd.factorize(entity, sort=False)
    order = np.lexsort((np.arange(len(entity)), seconds, codes))
    key = codes[order].astype(np.int64) * _KEY_SHIFT + seconds[order]
    return order, key


def _window_sums(prefix: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The sums over [lo, hi) of the values behind `prefix` (`prefix_sums`), as float64."""
    return (prefix[hi] - prefix[lo]).astype(np.float64)


def _unsort(order: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    """Values in sorted order (`order`: sorted -> input row) back in the input's row order."""
    values = np.empty(len(order), dtype=np.float64)
    values[order] = sorted_values
    return values
