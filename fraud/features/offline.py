"""The offline implementation: every feature of a whole history at once, vectorised.

Each entity's transactions are sorted by (entity, time, input position) under one int64 key,
entity << 32 | seconds; a window's bounds are then one `searchsorted` for all rows, and its sums
differences of prefix sums. 1.75M transactions take a few seconds. The pipeline's features
stage and batch scoring use it.
"""

from __future__ import annotations

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
    names = cfg.names
    n = len(df)
    out = df.copy()
    seconds_abs = out[schema.TX_DATETIME].to_numpy(dtype="datetime64[s]").astype(np.int64)
    t0 = seconds_abs.min() if n else 0
    seconds = seconds_abs - t0
    if n and seconds.max() >= 2**31:
        raise ValueError("TX_DATETIME spans more than 68 years; split the data")
    amount = out[schema.TX_AMOUNT].to_numpy(dtype=np.float64)
    out[names.weekend] = during_weekend(seconds_abs).astype(np.float64)
    out[names.night] = during_night(seconds_abs, cfg.night_end_hour).astype(np.float64)

    # Customer windows (t - w, t], current transaction included.
    order, key = _sorted_keys(out[schema.CUSTOMER_ID].to_numpy(), seconds)
    pos = np.arange(n)
    amount_sorted = amount[order]
    # Sums over a window are differences of prefix sums. Centring each amount on its customer's
    # mean keeps the running totals small, so a window's sum (and the variance, which cancels
    # digits) does not depend on the rounding of every other customer's totals. The shift is
    # exact algebra: it is added back below.
    customer_codes = key >> 32
    customer_mean = np.bincount(customer_codes, weights=amount_sorted) / np.maximum(
        np.bincount(customer_codes), 1
    )
    row_centre = customer_mean[customer_codes]
    centred = amount_sorted - row_centre
    amount_prefix = prefix_sums(centred)
    square_prefix = prefix_sums(centred * centred)
    for cw in names.customer_windows:
        lo = np.searchsorted(key, key - cw.days * DAY_SECONDS, side="right")
        count = (pos + 1 - lo).astype(np.float64)
        window_mean = row_centre + _window_sums(amount_prefix, lo, pos + 1) / count
        _scatter(out, cw.nb_tx, order, count)
        _scatter(out, cw.avg_amount, order, window_mean)

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
        _scatter(out, history.amount_ratio, order, ratio)
        _scatter(out, history.amount_zscore, order, zscore)
        if history.nb_prev_high_amount is not None:
            high = is_high_amount(amount_sorted, prev_mean, prev_count, cfg.high_amount_ratio)
            high_prefix = prefix_sums(high.astype(np.float64))
            high_lo = np.searchsorted(
                key, key - history.high_amount_days * DAY_SECONDS, side="right"
            )
            _scatter(
                out, history.nb_prev_high_amount, order, _window_sums(high_prefix, high_lo, pos)
            )
        same_customer_as_prev = np.zeros(n, dtype=bool)
        same_customer_as_prev[1:] = (key[1:] >> 32) == (key[:-1] >> 32)
        prev_key = np.empty(n, dtype=np.int64)
        prev_key[0] = 0
        prev_key[1:] = key[:-1]
        gap_hours = np.where(same_customer_as_prev, (key - prev_key) / 3600.0, np.nan)
        _scatter(out, history.hours_since_prev_tx, order, gap_hours)

        pair = out[schema.CUSTOMER_ID].to_numpy().astype(np.int64) * np.int64(2**31) + out[
            schema.TERMINAL_ID
        ].to_numpy().astype(np.int64)
        pair_order, pair_key = _sorted_keys(pair, seconds)
        pair_lo = np.searchsorted(pair_key, pair_key - history.days * DAY_SECONDS, side="right")
        _scatter(
            out,
            history.customer_terminal_nb_prev_tx,
            pair_order,
            (pos - pair_lo).astype(float),
        )

    # Terminal windows (t - delay - w, t - delay]: only labels older than the delay.
    order, key = _sorted_keys(out[schema.TERMINAL_ID].to_numpy(), seconds)
    if schema.TX_FRAUD in out.columns:
        fraud = out[schema.TX_FRAUD].to_numpy(dtype=np.float64)[order]
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
        _scatter(out, tw.nb_tx, order, count)
        _scatter(out, tw.risk, order, terminal_risks(_window_sums(fraud_prefix, lo, hi), count))
    if (terminal_fraud := names.terminal_fraud) is not None:
        lo = np.searchsorted(key, key - delay - terminal_fraud.days * DAY_SECONDS, side="right")
        _scatter(out, terminal_fraud.nb_fraud, order, _window_sums(fraud_prefix, lo, hi))
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
        _scatter(out, terminal_fraud.first_fraud_age, order, np.where(first_ok, first_age, np.nan))
        _scatter(out, terminal_fraud.last_fraud_age, order, np.where(last_ok, last_age, np.nan))
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


def _scatter(out: pd.DataFrame, name: str, order: np.ndarray, sorted_values: np.ndarray) -> None:
    """Column `name` of `out` from values in sorted order (`order`: sorted -> input row)."""
    values = np.empty(len(order), dtype=np.float64)
    values[order] = sorted_values
    out[name] = values
