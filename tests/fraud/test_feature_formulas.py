"""The feature formulas: each scalar form (the one-transaction path) and its array form (the
offline and batch paths) give the same bits, edge cases included."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fraud.features.formulas import (
    amount_ratio,
    amount_ratios,
    amount_zscore,
    amount_zscores,
    during_night,
    during_weekend,
    is_high_amount,
    population_variances,
    prefix_sums,
    terminal_risk,
    terminal_risks,
)

# Previous amounts of a customer: none, one, equal ones (zero spread), a mean of zero, a
# negative mean, close amounts (cancellation in E[x^2] - mean^2), ordinary ones.
PREVIOUS = [
    (),
    (10.0,),
    (10.0, 10.0),
    (0.0, 0.0),
    (-5.0, 1.0),
    (42.90, 42.97),
    (95.27, 92.86, 102.72),
    (1e6 + 0.1, 1e6 + 0.2, 1e6 + 0.3),
]


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _sums(prev: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts = np.array([len(prev)])
    sums = np.array([sum(prev)], dtype=np.float64)
    sumsqs = np.array([sum(x * x for x in prev)], dtype=np.float64)
    return counts, sums, sumsqs


def test_calendar_flags_of_ints_and_arrays_are_the_utc_calendars() -> None:
    rng = np.random.default_rng(0)
    seconds = np.concatenate(
        [rng.integers(-(10**9), 2 * 10**9, 2_000), np.arange(-3, 4) * 86_400 - 1]
    )
    stamps = pd.to_datetime(seconds, unit="s")
    weekend = during_weekend(seconds)
    np.testing.assert_array_equal(weekend, stamps.weekday >= 5)
    assert [during_weekend(int(s)) for s in seconds] == weekend.tolist()
    for night_end_hour in (0, 6, 23):
        night = during_night(seconds, night_end_hour)
        np.testing.assert_array_equal(night, stamps.hour <= night_end_hour)
        assert [during_night(int(s), night_end_hour) for s in seconds] == night.tolist()


@pytest.mark.parametrize("prev", PREVIOUS)
def test_amount_ratio_of_arrays_equals_the_scalar(prev: tuple[float, ...]) -> None:
    counts, sums, _ = _sums(prev)
    with np.errstate(divide="ignore", invalid="ignore"):
        means = sums / counts
    for amount in (0.0, 45.0, 1e6):
        scalar = amount_ratio(amount, float(sums[0]), len(prev))
        assert _same(float(amount_ratios(np.array([amount]), means, counts)[0]), scalar)
        high = bool(is_high_amount(np.array([amount]), means, counts, 3.0)[0])
        assert high == (scalar > 3.0)  # NaN: not high


@pytest.mark.parametrize("prev", PREVIOUS)
@pytest.mark.parametrize("min_std", [1.0, 0.01])
def test_amount_zscore_of_arrays_equals_the_scalar(prev: tuple[float, ...], min_std: float) -> None:
    counts, sums, sumsqs = _sums(prev)
    with np.errstate(divide="ignore", invalid="ignore"):
        means = sums / counts
    variances = population_variances(sums, sumsqs, counts)
    for amount in (0.0, 45.0, 1e6 + 0.4):
        scalar = amount_zscore(amount, float(sums[0]), float(sumsqs[0]), len(prev), min_std)
        vector = amount_zscores(np.array([amount]), means, variances, counts, min_std)
        assert _same(float(vector[0]), scalar)


def test_zscore_is_nan_below_two_previous_amounts_and_floored_without_spread() -> None:
    assert math.isnan(amount_zscore(45.0, 10.0, 100.0, 1, 1.0))
    assert amount_zscore(45.0, 20.0, 200.0, 2, 0.5) == (45.0 - 10.0) / 0.5


def test_terminal_risk_of_arrays_equals_the_scalar_and_is_zero_for_an_empty_window() -> None:
    frauds, counts = [0, 0, 1, 3, 2], [0, 4, 3, 3, 7]
    risks = terminal_risks(np.array(frauds), np.array(counts, dtype=np.float64))
    assert risks.tolist() == [terminal_risk(f, c) for f, c in zip(frauds, counts, strict=True)]
    assert risks[0] == 0.0 and risks[2] == 1 / 3


def test_prefix_sums_give_window_sums_exact_to_float64() -> None:
    # Ten 0.1s: summed in float64 they make 0.9999999999999999; the extended-precision prefix
    # rounds once, to 1.0, so a window's sum does not depend on the values around it.
    prefix = prefix_sums(np.full(10, 0.1))
    assert prefix[0] == 0 and len(prefix) == 11
    assert float(prefix[10] - prefix[0]) == 1.0
    assert float(np.cumsum(np.full(10, 0.1))[-1]) != 1.0
