"""Offline/online parity: `OnlineFeatureState`, fed one transaction at a time, must give the same
numbers as `compute_features` on the whole period, for every row and every feature.

Labels are given to the online state up front with `add_label`: it only reads the labels of
transactions in the terminal windows (t - delay - w, t - delay], which are all older than the
delay, so this is what a stream that delivers each label `delay_days` late would give.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraud import schema
from fraud.features import FeatureConfig, OnlineFeatureState, Transaction, compute_features
from fraud.simulator import SimulatorConfig, simulate


@pytest.fixture(scope="module")
def period() -> pd.DataFrame:
    # ~25k transactions over 40 days: every window (up to delay 7 + 30 days) fills up.
    df = simulate(SimulatorConfig(n_customers=300, n_terminals=600, n_days=40, seed=5))
    assert 15_000 < len(df) < 40_000
    return df


def _transactions(df: pd.DataFrame) -> list[Transaction]:
    return [
        Transaction(int(i), t, int(c), int(term), float(a))
        for i, t, c, term, a in zip(
            df[schema.TRANSACTION_ID],
            df[schema.TX_DATETIME],
            df[schema.CUSTOMER_ID],
            df[schema.TERMINAL_ID],
            df[schema.TX_AMOUNT],
            strict=True,
        )
    ]


def replay(
    state: OnlineFeatureState, df: pd.DataFrame, labels: bool = True, batch: int = 1
) -> pd.DataFrame:
    """Online features of every row of `df`, in its order (labels of `df` added up front),
    one transaction at a time (`online_features`) or in batches (`batch_features`)."""
    if labels and schema.TX_FRAUD in df.columns:
        for tid, y in zip(df[schema.TRANSACTION_ID], df[schema.TX_FRAUD], strict=True):
            state.add_label(int(tid), bool(y))
    txs = _transactions(df)
    if batch == 1:
        rows = [state.features(tx) for tx in txs]
    else:
        rows = []
        for start in range(0, len(txs), batch):
            rows += state.features_many(txs[start : start + batch])
    return pd.DataFrame(rows, index=df.index)


def assert_parity(offline: pd.DataFrame, online: pd.DataFrame, names: list[str]) -> None:
    # The online dict's key order is irrelevant: the model reads it through `vector(names)`.
    assert set(names) <= set(online.columns)
    for name in names:
        a, b = offline[name].to_numpy(np.float64), online[name].to_numpy(np.float64)
        bad = ~np.isclose(a, b, rtol=1e-9, atol=0.0, equal_nan=True)
        assert not bad.any(), (
            f"{name}: {bad.sum()} of {len(a)} rows differ, first at row "
            f"{np.flatnonzero(bad)[0]}: offline {a[bad][0]!r} vs online {b[bad][0]!r}"
        )


ZSCORE = "CUSTOMER_ID_AMOUNT_ZSCORE_30DAY"


@pytest.fixture(scope="module", params=[1, 250], ids=["one-at-a-time", "batches-of-250"])
def full_replay(
    request: pytest.FixtureRequest, period: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    cfg = FeatureConfig()
    return compute_features(period, cfg), replay(
        OnlineFeatureState(cfg), period, batch=request.param
    )


def test_batches_split_into_waves_of_independent_transactions(period: pd.DataFrame) -> None:
    """Batches with repeated customers and terminals take several waves (the replay above
    exercises the within-batch dependencies)."""
    from fraud.features import _wave_numbers

    head = period.iloc[:250]
    waves = _wave_numbers(head[schema.CUSTOMER_ID].tolist(), head[schema.TERMINAL_ID].tolist())
    assert max(waves) >= 2
    assert _wave_numbers([1, 2, 1, 3], [5, 6, 7, 6]) == [0, 0, 1, 1]


def test_online_replay_computes_every_feature_and_exercises_every_case(
    full_replay: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    _, online = full_replay
    assert sorted(online.columns) == sorted(FeatureConfig().feature_names())
    # The comparison below is not vacuous: risk, history and NaN cases all occur.
    assert (online["TERMINAL_ID_RISK_7DAY_WINDOW"] > 0).sum() > 100
    assert online[ZSCORE].isna().sum() > 0
    assert online[ZSCORE].notna().sum() > len(online) // 2
    assert (online["CUSTOMER_TERMINAL_NB_PREV_TX_30DAY"] > 0).sum() > 100


@pytest.mark.parametrize("name", FeatureConfig().feature_names())
def test_online_replay_matches_offline_feature_on_every_row(
    full_replay: tuple[pd.DataFrame, pd.DataFrame], name: str
) -> None:
    offline, online = full_replay
    assert_parity(offline, online, [name])


def test_online_state_seeded_from_history_matches_offline_features(period: pd.DataFrame) -> None:
    cfg = FeatureConfig()
    offline = compute_features(period, cfg)
    cut = period[schema.TX_DATETIME].iloc[0] + pd.Timedelta(days=20)
    history, rest = (
        period[period[schema.TX_DATETIME] < cut],
        period[period[schema.TX_DATETIME] >= cut],
    )
    assert len(history) > 5_000 and len(rest) > 5_000
    for batch in (1, 400):
        state = OnlineFeatureState(cfg)
        state.seed(history)
        online = replay(state, rest, batch=batch)
        assert_parity(offline.loc[rest.index], online, cfg.feature_names())


def test_handbook_feature_set_has_parity_too(period: pd.DataFrame) -> None:
    cfg = FeatureConfig(
        history_window_days=0,
        customer_windows_days=(2, 5),
        terminal_windows_days=(3,),
        delay_days=2,
    )
    head = period.iloc[:6_000]
    for batch in (1, 100):
        online = replay(OnlineFeatureState(cfg), head, batch=batch)
        assert_parity(compute_features(head, cfg), online, cfg.feature_names())


def test_unlabelled_online_state_matches_unlabelled_offline_features(period: pd.DataFrame) -> None:
    cfg = FeatureConfig()
    head = period.iloc[:6_000]
    offline = compute_features(head.drop(columns=[schema.TX_FRAUD, schema.TX_FRAUD_SCENARIO]), cfg)
    online = replay(OnlineFeatureState(cfg), head, labels=False)
    assert_parity(offline, online, cfg.feature_names())
    assert (online["TERMINAL_ID_RISK_30DAY_WINDOW"] == 0).all()


def test_features_without_update_do_not_record_the_transaction(period: pd.DataFrame) -> None:
    cfg = FeatureConfig()
    state = OnlineFeatureState(cfg)
    tx = _transactions(period.iloc[:1])[0]
    first = state.features(tx, update=False)
    again = state.features(tx, update=False)
    assert again == pytest.approx(first, nan_ok=True)
    assert again["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 1.0
    recorded = state.features(tx)  # records it
    assert recorded["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 1.0
    assert state.features(tx)["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 2.0


def test_vector_orders_features_by_the_given_names() -> None:
    state = OnlineFeatureState(FeatureConfig())
    v = state.vector({"a": 1.0, "b": 2.0, "c": 3.0}, ["c", "a"])
    assert v.dtype == np.float32
    np.testing.assert_array_equal(v, np.array([3.0, 1.0], dtype=np.float32))


def test_zero_delay_terminal_features_have_parity() -> None:
    rows = pd.DataFrame(
        {
            schema.TRANSACTION_ID: [0, 1],
            schema.TX_DATETIME: pd.to_datetime(["2018-04-01 10:00", "2018-04-01 11:00"]),
            schema.CUSTOMER_ID: [1, 2],
            schema.TERMINAL_ID: [5, 5],
            schema.TX_AMOUNT: [10.0, 20.0],
            schema.TX_FRAUD: np.array([1, 0], dtype=np.int8),
        }
    )
    cfg = FeatureConfig(delay_days=0)
    offline = compute_features(rows, cfg)
    online = replay(OnlineFeatureState(cfg), rows)
    # In one batch, the second depends on the first through the terminal (and its label).
    batched = replay(OnlineFeatureState(cfg), rows, batch=2)
    pd.testing.assert_frame_equal(batched, online)
    # The first transaction has nothing before it on its terminal: no count, no risk.
    assert online["TERMINAL_ID_NB_TX_1DAY_WINDOW"].tolist() == [0.0, 1.0]
    assert online["TERMINAL_ID_RISK_1DAY_WINDOW"].tolist() == [0.0, 1.0]
    assert_parity(offline, online, cfg.feature_names())
