"""Code tests of the offline implementation (`compute_features`) on hand-made transactions.

2018-04-07 is a Saturday; every frame below is built around it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fraud import schema
from fraud.features import FeatureConfig, compute_features
from fraud.simulator import SimulatorConfig, simulate

CFG = FeatureConfig()  # windows 1/7/30 days, delay 7 days, night <= 6h, history 30 days

Row = tuple[int, str, int, int, float, int]  # id, datetime, customer, terminal, amount, fraud


def frame(rows: list[Row]) -> pd.DataFrame:
    ids, times, customers, terminals, amounts, frauds = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            schema.TRANSACTION_ID: np.asarray(ids, dtype=np.int64),
            schema.TX_DATETIME: pd.to_datetime(list(times)),
            schema.CUSTOMER_ID: np.asarray(customers, dtype=np.int64),
            schema.TERMINAL_ID: np.asarray(terminals, dtype=np.int64),
            schema.TX_AMOUNT: np.asarray(amounts, dtype=np.float64),
            schema.TX_FRAUD: np.asarray(frauds, dtype=np.int8),
        }
    )


def features_of(rows: list[Row], tx_id: int, cfg: FeatureConfig = CFG) -> pd.Series:
    """The feature row of transaction `tx_id`."""
    out = compute_features(frame(rows), cfg)
    return out.set_index(schema.TRANSACTION_ID).loc[tx_id]


# ------------------------------------------------------------------------------------------
# Customer windows (t - w, t], current transaction included


def test_customer_windows_include_the_current_transaction() -> None:
    f = features_of([(1, "2018-04-10 12:00", 7, 1, 42.0, 0)], 1)
    for w in (1, 7, 30):
        assert f[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"] == 1
        assert f[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"] == 42.0


def test_customer_window_covers_t_minus_w_exclusive_to_t_inclusive() -> None:
    rows: list[Row] = [
        (1, "2018-04-03 12:00:00", 7, 1, 1000.0, 0),  # exactly 7 days before: not in 7d
        (2, "2018-04-03 12:00:01", 7, 1, 70.0, 0),  # just inside 7d
        (3, "2018-04-09 12:00:00", 7, 1, 500.0, 0),  # exactly 1 day before: not in 1d
        (4, "2018-04-09 12:00:01", 7, 1, 10.0, 0),  # just inside 1d
        (5, "2018-04-10 12:00:00", 7, 1, 20.0, 0),  # the transaction
        (6, "2018-04-10 12:00:01", 7, 1, 9999.0, 0),  # later: never used
        (7, "2018-04-10 11:00:00", 8, 1, 8888.0, 0),  # another customer
    ]
    f = features_of(rows, 5)
    assert f["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 2
    assert f["CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"] == pytest.approx((10 + 20) / 2)
    assert f["CUSTOMER_ID_NB_TX_7DAY_WINDOW"] == 4
    assert f["CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW"] == pytest.approx((70 + 500 + 10 + 20) / 4)
    assert f["CUSTOMER_ID_NB_TX_30DAY_WINDOW"] == 5
    assert f["CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW"] == pytest.approx((1000 + 600) / 5)


def test_transactions_with_the_same_customer_and_time_count_in_input_order() -> None:
    rows: list[Row] = [
        (1, "2018-04-10 12:00", 7, 1, 10.0, 0),
        (2, "2018-04-10 12:00", 7, 2, 30.0, 0),
    ]
    out = compute_features(frame(rows), CFG)
    assert out["CUSTOMER_ID_NB_TX_1DAY_WINDOW"].tolist() == [1, 2]
    assert out["CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"].tolist() == [10.0, 20.0]
    assert out["CUSTOMER_ID_HOURS_SINCE_PREV_TX"].iloc[1] == 0.0


# ------------------------------------------------------------------------------------------
# Terminal risk (t - delay - w, t - delay]


def _terminal_rows(young_fraud: int = 1, old_fraud: int = 1) -> list[Row]:
    # Target at 2018-04-20 12:00, delay 7 days: the 1-day window is (04-12 12:00, 04-13 12:00].
    return [
        (1, "2018-04-12 12:00:00", 1, 5, 10.0, 1),  # exactly t - delay - 1d: outside the 1d window
        (2, "2018-04-13 00:00:00", 2, 5, 10.0, 0),  # inside
        (3, "2018-04-13 12:00:00", 3, 5, 10.0, old_fraud),  # exactly t - delay: inside
        (4, "2018-04-13 12:00:01", 4, 5, 10.0, young_fraud),  # younger than the delay
        (5, "2018-04-19 12:00:00", 5, 5, 10.0, young_fraud),  # younger than the delay
        (6, "2018-04-13 06:00:00", 6, 9, 10.0, 1),  # another terminal
        (9, "2018-04-20 12:00:00", 9, 5, 10.0, 0),  # the transaction
    ]


def test_terminal_risk_uses_only_transactions_between_delay_plus_window_and_delay() -> None:
    f = features_of(_terminal_rows(), 9)
    assert f["TERMINAL_ID_NB_TX_1DAY_WINDOW"] == 2
    assert f["TERMINAL_ID_RISK_1DAY_WINDOW"] == pytest.approx(1 / 2)
    assert f["TERMINAL_ID_NB_TX_7DAY_WINDOW"] == 3
    assert f["TERMINAL_ID_RISK_7DAY_WINDOW"] == pytest.approx(2 / 3)


def test_terminal_risk_ignores_labels_younger_than_delay() -> None:
    with_young = features_of(_terminal_rows(young_fraud=1), 9)
    without_young = features_of(_terminal_rows(young_fraud=0), 9)
    cols = [f"TERMINAL_ID_RISK_{w}DAY_WINDOW" for w in (1, 7, 30)]
    pd.testing.assert_series_equal(with_young[cols], without_young[cols])


def test_terminal_risk_uses_labels_older_than_delay() -> None:
    with_old = features_of(_terminal_rows(old_fraud=1), 9)
    without_old = features_of(_terminal_rows(old_fraud=0), 9)
    assert with_old["TERMINAL_ID_RISK_1DAY_WINDOW"] == pytest.approx(1 / 2)
    assert without_old["TERMINAL_ID_RISK_1DAY_WINDOW"] == 0.0


def test_terminal_risk_is_zero_without_transactions_in_the_window() -> None:
    rows: list[Row] = [
        (1, "2018-04-19 12:00", 1, 5, 10.0, 1),  # same terminal, younger than the delay
        (2, "2018-04-20 12:00", 2, 5, 10.0, 1),
    ]
    f = features_of(rows, 2)
    for w in (1, 7, 30):
        assert f[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"] == 0
        assert f[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"] == 0.0


def test_unlabelled_data_gives_zero_risk_and_the_same_counts() -> None:
    df = frame(_terminal_rows())
    labelled = compute_features(df, CFG)
    unlabelled = compute_features(df.drop(columns=schema.TX_FRAUD), CFG)
    for w in (1, 7, 30):
        assert (unlabelled[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"] == 0.0).all()
        np.testing.assert_array_equal(
            unlabelled[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"],
            labelled[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"],
        )
    assert (labelled["TERMINAL_ID_RISK_7DAY_WINDOW"] > 0).any()


# ------------------------------------------------------------------------------------------
# Calendar flags


@pytest.mark.parametrize(
    ("when", "weekend", "night"),
    [
        ("2018-04-06 23:59:59", 0.0, 0.0),  # Friday evening
        ("2018-04-07 00:00:00", 1.0, 1.0),  # Saturday midnight
        ("2018-04-08 06:59:59", 1.0, 1.0),  # Sunday, hour 6 is still night
        ("2018-04-08 07:00:00", 1.0, 0.0),
        ("2018-04-09 03:00:00", 0.0, 1.0),  # Monday night
        ("2018-04-09 12:00:00", 0.0, 0.0),
    ],
)
def test_weekend_and_night_flags(when: str, weekend: float, night: float) -> None:
    f = features_of([(1, when, 1, 1, 10.0, 0)], 1)
    assert f["TX_DURING_WEEKEND"] == weekend
    assert f["TX_DURING_NIGHT"] == night


def test_night_end_hour_moves_the_night_boundary() -> None:
    f = features_of([(1, "2018-04-09 07:30", 1, 1, 10.0, 0)], 1, FeatureConfig(night_end_hour=7))
    assert f["TX_DURING_NIGHT"] == 1.0


# ------------------------------------------------------------------------------------------
# Customer history features (previous transactions only)


def _history_rows() -> list[Row]:
    return [
        (1, "2018-03-11 08:30:00", 7, 5, 1000.0, 0),  # exactly 30 days before: outside history
        (2, "2018-04-01 08:30:00", 7, 5, 10.0, 0),
        (3, "2018-04-09 12:00:00", 7, 6, 20.0, 0),
        (4, "2018-04-09 13:00:00", 8, 5, 20.0, 0),  # another customer at the same terminal
        (5, "2018-04-10 08:30:00", 7, 5, 45.0, 0),  # the transaction
    ]


def test_amount_ratio_is_amount_over_mean_of_previous_amounts_in_history_window() -> None:
    f = features_of(_history_rows(), 5)
    assert f["CUSTOMER_ID_AMOUNT_RATIO_30DAY"] == pytest.approx(45 / 15)


def test_amount_zscore_uses_mean_and_population_std_of_previous_amounts() -> None:
    f = features_of(_history_rows(), 5)
    assert f["CUSTOMER_ID_AMOUNT_ZSCORE_30DAY"] == pytest.approx((45 - 15) / 5)  # std of 10, 20


def test_hours_since_previous_transaction_is_measured_from_the_customers_last_one() -> None:
    out = compute_features(frame(_history_rows()), CFG).set_index(schema.TRANSACTION_ID)
    assert out.loc[5, "CUSTOMER_ID_HOURS_SINCE_PREV_TX"] == pytest.approx(20.5)
    # Not limited to the history window: 21 days between the customer's first two.
    assert out.loc[2, "CUSTOMER_ID_HOURS_SINCE_PREV_TX"] == pytest.approx(21 * 24)


def test_customer_terminal_count_counts_previous_pairs_inside_the_history_window() -> None:
    out = compute_features(frame(_history_rows()), CFG).set_index(schema.TRANSACTION_ID)
    # Customer 7 used terminal 5 on 04-01 (counted) and on 03-11 (exactly 30 days: not counted).
    assert out.loc[5, "CUSTOMER_TERMINAL_NB_PREV_TX_30DAY"] == 1
    assert out.loc[3, "CUSTOMER_TERMINAL_NB_PREV_TX_30DAY"] == 0  # first time at terminal 6
    assert out.loc[4, "CUSTOMER_TERMINAL_NB_PREV_TX_30DAY"] == 0  # other customer's pair


def test_history_features_are_nan_without_previous_transactions() -> None:
    f = features_of([(1, "2018-04-10 12:00", 7, 5, 45.0, 0)], 1)
    assert math.isnan(f["CUSTOMER_ID_AMOUNT_RATIO_30DAY"])
    assert math.isnan(f["CUSTOMER_ID_AMOUNT_ZSCORE_30DAY"])
    assert math.isnan(f["CUSTOMER_ID_HOURS_SINCE_PREV_TX"])
    assert f["CUSTOMER_TERMINAL_NB_PREV_TX_30DAY"] == 0


def test_history_older_than_the_window_gives_nan_ratio_but_a_defined_gap() -> None:
    rows: list[Row] = [
        (1, "2018-03-01 12:00", 7, 5, 10.0, 0),
        (2, "2018-04-10 12:00", 7, 5, 45.0, 0),
    ]
    f = features_of(rows, 2)
    assert math.isnan(f["CUSTOMER_ID_AMOUNT_RATIO_30DAY"])
    assert f["CUSTOMER_ID_HOURS_SINCE_PREV_TX"] == pytest.approx(40 * 24)
    assert f["CUSTOMER_TERMINAL_NB_PREV_TX_30DAY"] == 0


def test_zscore_is_nan_with_a_single_previous_amount() -> None:
    one_prev = features_of(
        [(1, "2018-04-09 12:00", 7, 5, 10.0, 0), (2, "2018-04-10 12:00", 7, 5, 45.0, 0)], 2
    )
    assert one_prev["CUSTOMER_ID_AMOUNT_RATIO_30DAY"] == pytest.approx(4.5)
    assert math.isnan(one_prev["CUSTOMER_ID_AMOUNT_ZSCORE_30DAY"])


@pytest.mark.parametrize(
    ("previous", "min_std", "expected"),
    [
        ((10.0, 10.0), 1.0, (45 - 10) / 1.0),  # zero spread: the floor, not a division by 0
        ((10.0, 10.0), 0.5, (45 - 10) / 0.5),
        ((42.90, 42.97), 1.0, (45 - 42.935) / 1.0),  # std 0.035 is below the floor
        ((10.0, 20.0), 1.0, (45 - 15) / 5.0),  # std 5 is above it
    ],
)
def test_zscore_divides_by_the_std_floor_when_previous_amounts_barely_vary(
    previous: tuple[float, float], min_std: float, expected: float
) -> None:
    rows: list[Row] = [
        (1, "2018-04-08 12:00", 7, 5, previous[0], 0),
        (2, "2018-04-09 12:00", 7, 5, previous[1], 0),
        (3, "2018-04-10 12:00", 7, 5, 45.0, 0),
    ]
    f = features_of(rows, 3, FeatureConfig(zscore_min_std=min_std))
    assert f["CUSTOMER_ID_AMOUNT_ZSCORE_30DAY"] == pytest.approx(expected, rel=1e-12)


def test_amount_ratio_is_nan_when_previous_amounts_average_zero() -> None:
    rows: list[Row] = [
        (1, "2018-04-09 12:00", 7, 5, 0.0, 0),
        (2, "2018-04-10 12:00", 7, 5, 45.0, 0),
    ]
    assert math.isnan(features_of(rows, 2)["CUSTOMER_ID_AMOUNT_RATIO_30DAY"])


# ------------------------------------------------------------------------------------------
# Output shape


@pytest.fixture(scope="module")
def simulated() -> pd.DataFrame:
    return simulate(SimulatorConfig(n_customers=100, n_terminals=200, n_days=40, seed=3))


def test_output_rows_follow_the_input_order_even_when_shuffled(simulated: pd.DataFrame) -> None:
    reference = compute_features(simulated, CFG)
    shuffled_input = simulated.sample(frac=1.0, random_state=0)
    shuffled = compute_features(shuffled_input, CFG)
    pd.testing.assert_index_equal(shuffled.index, shuffled_input.index)
    np.testing.assert_array_equal(
        shuffled[schema.TRANSACTION_ID].to_numpy(), shuffled_input[schema.TRANSACTION_ID].to_numpy()
    )
    # Every row carries its own transaction's features, whatever the order it came in.
    pd.testing.assert_frame_equal(shuffled.sort_index(), reference, check_exact=False, rtol=1e-12)


def test_compute_features_adds_every_feature_and_keeps_the_input_columns(
    simulated: pd.DataFrame,
) -> None:
    out = compute_features(simulated, CFG)
    assert list(out.columns[: simulated.shape[1]]) == list(simulated.columns)
    assert set(CFG.feature_names()) <= set(out.columns)
    assert len(out) == len(simulated)
    pd.testing.assert_frame_equal(out[simulated.columns], simulated)


def test_history_window_zero_computes_no_history_features(simulated: pd.DataFrame) -> None:
    cfg = FeatureConfig(history_window_days=0)
    out = compute_features(simulated, cfg)
    added = set(out.columns) - set(simulated.columns)
    assert added == set(cfg.feature_names()) - {schema.TX_AMOUNT}


def _customer_after(
    other_rows: int, other_amount: float, amounts: tuple[float, ...]
) -> pd.DataFrame:
    """Customer 2 with `amounts` (hours apart, the last is the one scored) after `other_rows`
    transactions of customer 1 with `other_amount` (first in the input)."""
    start = pd.Timestamp("2018-04-01")
    rows: list[Row] = [
        (i, str(start + pd.Timedelta(seconds=i)), 1, 1, other_amount + (i % 7) / 100, 0)
        for i in range(other_rows)
    ]
    rows += [
        (other_rows + j, str(pd.Timestamp("2018-04-02 10:00") + pd.Timedelta(hours=j)), 2, 2, a, 0)
        for j, a in enumerate(amounts)
    ]
    return frame(rows)


LOW_SPREAD = (42.90, 42.97, 89.00)


def test_amount_zscore_does_not_depend_on_other_customers_amounts() -> None:
    amounts = (95.27, 92.86, 102.72)
    exact = (102.72 - (95.27 + 92.86) / 2) / (abs(95.27 - 92.86) / 2)
    alone = compute_features(_customer_after(0, 99_999.0, amounts), CFG)
    crowded = compute_features(_customer_after(2000, 99_999.0, amounts), CFG)
    z_alone = alone["CUSTOMER_ID_AMOUNT_ZSCORE_30DAY"].iloc[-1]
    z_crowded = crowded["CUSTOMER_ID_AMOUNT_ZSCORE_30DAY"].iloc[-1]
    assert z_alone == pytest.approx(exact, rel=1e-9)
    assert z_crowded == pytest.approx(z_alone, rel=1e-9)


def test_average_amount_does_not_depend_on_other_customers_amounts() -> None:
    alone = compute_features(_customer_after(0, 99_999.0, LOW_SPREAD), CFG).iloc[-1]
    crowded = compute_features(_customer_after(1000, 99_999.0, LOW_SPREAD), CFG).iloc[-1]
    for name in ("CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW", "CUSTOMER_ID_AMOUNT_RATIO_30DAY"):
        assert crowded[name] == pytest.approx(alone[name], rel=1e-12)
    assert alone["CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"] == pytest.approx(sum(LOW_SPREAD) / 3)
