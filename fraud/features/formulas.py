"""The feature formulas, each defined once, for all three implementations.

The one-transaction path (`online_features`) computes its values on Python numbers: a numpy
call per value would cost more than the formula on the API's hot path. The offline and batch
paths (and the one-transaction path's per-record steps) compute on arrays. A formula that needs both forms has them side by side here (`amount_ratio` and
`amount_ratios`, ...), with the same arithmetic in the same order, so that every path gives the
same bits; tests/fraud/test_feature_formulas.py checks each pair.
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np

from fraud.features.config import DAY_SECONDS, HOUR_SECONDS

# -- calendar (seconds since the epoch, UTC; Python ints or int64 arrays alike) -------------


@overload
def during_weekend(seconds: int) -> bool: ...
@overload
def during_weekend(seconds: np.ndarray) -> np.ndarray: ...
def during_weekend(seconds: int | np.ndarray) -> bool | np.ndarray:
    """Saturday or Sunday (UTC) at `seconds` since the epoch."""
    # 1970-01-01 was a Thursday (weekday 3); Saturday and Sunday are weekdays 5 and 6.
    return (seconds // DAY_SECONDS + 3) % 7 >= 5


@overload
def during_night(seconds: int, night_end_hour: int) -> bool: ...
@overload
def during_night(seconds: np.ndarray, night_end_hour: int) -> np.ndarray: ...
def during_night(seconds: int | np.ndarray, night_end_hour: int) -> bool | np.ndarray:
    """From midnight to the end of hour `night_end_hour` (UTC), inclusive."""
    return (seconds % DAY_SECONDS) // HOUR_SECONDS <= night_end_hour


# -- the customer's amounts against their previous ones -------------------------------------


def amount_ratio(amount: float, prev_sum: float, prev_count: int) -> float:
    """Amount over the mean of the customer's previous amounts; NaN with none or a mean <= 0."""
    if prev_count == 0:
        return math.nan
    mean = prev_sum / prev_count
    return amount / mean if mean > 0 else math.nan


def amount_ratios(
    amounts: np.ndarray, prev_means: np.ndarray, prev_counts: np.ndarray
) -> np.ndarray:
    """`amount_ratio` of arrays, from the previous amounts' means (any value where count is 0)."""
    # Dividing by NaN where the ratio is undefined gives NaN without a floating-point warning,
    # so no np.errstate (it costs more than the formula on the one-transaction path).
    defined = (prev_counts > 0) & (prev_means > 0)
    return amounts / np.where(defined, prev_means, np.nan)


def is_high_amount(
    amounts: np.ndarray, prev_means: np.ndarray, prev_counts: np.ndarray, high_amount_ratio: float
) -> np.ndarray:
    """Whether each amount is more than `high_amount_ratio` times its previous amounts' mean
    (an undefined ratio is not)."""
    return amount_ratios(amounts, prev_means, prev_counts) > high_amount_ratio


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


def population_variances(sums: np.ndarray, sumsqs: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """E[x^2] - mean^2 from sums and sums of squares, floored at 0 (as `amount_zscore`)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        means = sums / counts
        return np.maximum(sumsqs / counts - means * means, 0.0)


def amount_zscores(
    amounts: np.ndarray,
    prev_means: np.ndarray,
    prev_variances: np.ndarray,
    prev_counts: np.ndarray,
    min_std: float,
) -> np.ndarray:
    """`amount_zscore` of arrays, from the previous amounts' means and variances."""
    with np.errstate(divide="ignore", invalid="ignore"):
        std = np.maximum(np.sqrt(prev_variances), min_std)
        return np.where(prev_counts >= 2, (amounts - prev_means) / std, np.nan)


# -- the terminal ---------------------------------------------------------------------------


def terminal_risk(frauds: int, count: int) -> float:
    """Share of the window's transactions labelled fraud; 0.0 for an empty window (the
    handbook's fillna(0))."""
    return frauds / count if count > 0 else 0.0


def terminal_risks(frauds: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """`terminal_risk` of arrays."""
    return np.divide(frauds, counts, out=np.zeros(len(counts)), where=counts > 0)


# -- window sums ----------------------------------------------------------------------------


def prefix_sums(values: np.ndarray) -> np.ndarray:
    """Prefix sums with a leading zero, in extended precision: a window's sum is the difference
    of two of them, exact to float64, so every path's window sums (and their ties) agree."""
    out = np.zeros(len(values) + 1, dtype=np.longdouble)
    np.cumsum(values, dtype=np.longdouble, out=out[1:])
    return out
