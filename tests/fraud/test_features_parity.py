"""Offline/online parity: `OnlineFeatureState`, fed one transaction at a time (`online_features`)
or in batches (`batch_features`) through `features_many`, the API's path, must give the same
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
from fraud.features.batch import _entity_order_kept
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
    rows: list[dict[str, float]] = []
    for start in range(0, len(txs), batch):
        rows += state.features_many(txs[start : start + batch])
    return pd.DataFrame(rows, index=df.index)


def assert_parity(offline: pd.DataFrame, online: pd.DataFrame, names: list[str]) -> None:
    # The online dict's key order is irrelevant: the API reads the model's columns by name.
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


def _one_at_a_time(cfg: FeatureConfig, history: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    state = OnlineFeatureState(cfg)
    state.seed(history)
    return replay(state, rows, labels=False)


def test_batch_spanning_more_than_the_delay_counts_its_own_earlier_labels(
    period: pd.DataFrame,
) -> None:
    """One time-ordered batch of 40 days on a few terminals: labels of the batch's own early
    transactions (known up front, as pending labels) count for its later ones once they are
    older than the delay; the merged path gives what offline features give."""
    few = period[period[schema.TERMINAL_ID].isin(period[schema.TERMINAL_ID].unique()[:40])]
    assert len(few) > 1_000 and few[schema.TX_FRAUD].sum() > 0
    cfg = FeatureConfig()
    qt = few[schema.TX_DATETIME].to_numpy("datetime64[s]").astype(np.int64)
    assert _entity_order_kept(
        qt, few[schema.CUSTOMER_ID].to_numpy(), few[schema.TERMINAL_ID].to_numpy()
    )
    online = replay(OnlineFeatureState(cfg), few, batch=len(few))
    assert (online["TERMINAL_ID_RISK_30DAY_WINDOW"] > 0).sum() > 20
    assert_parity(compute_features(few, cfg), online, cfg.feature_names())


@pytest.mark.parametrize("shuffle", [False, True], ids=["time-order", "out-of-order"])
def test_batch_features_equal_one_at_a_time_in_the_same_arrival_order(
    period: pd.DataFrame, shuffle: bool
) -> None:
    """Batches are defined by the one-at-a-time replay in list order, whichever path computes
    them: merged when each entity's times keep their order, waves when some arrive late."""
    cfg = FeatureConfig()
    cut = period[schema.TX_DATETIME].iloc[0] + pd.Timedelta(days=20)
    history = period[period[schema.TX_DATETIME] < cut]
    rows = period[period[schema.TX_DATETIME] >= cut].iloc[:3_000]
    if shuffle:  # reverse every block of 7: late arrivals for some customers and terminals
        order = np.concatenate([np.arange(i, i + 7)[::-1] for i in range(0, len(rows) - 6, 7)])
        rows = rows.iloc[order]
    qt = rows[schema.TX_DATETIME].to_numpy("datetime64[s]").astype(np.int64)
    kept = _entity_order_kept(
        qt[:1_000],
        rows[schema.CUSTOMER_ID].to_numpy()[:1_000],
        rows[schema.TERMINAL_ID].to_numpy()[:1_000],
    )
    assert kept is not shuffle
    state = OnlineFeatureState(cfg)
    state.seed(history)
    batched = replay(state, rows, labels=False, batch=1_000)
    single = _one_at_a_time(cfg, history, rows)
    assert_parity(single, batched, cfg.feature_names())


def test_batches_processed_out_of_time_order_equal_one_at_a_time(period: pd.DataFrame) -> None:
    """Two clients send the same period's transactions (even and odd rows) in time-ordered
    batches: the stored records of one are then interleaved in time with the other's batch,
    and a stored record's high-amount flag counts the batch's older records (a low ratio makes
    the flags sensitive to every record of that history)."""
    cfg = FeatureConfig(high_amount_ratio=1.2)
    cut = period[schema.TX_DATETIME].iloc[0] + pd.Timedelta(days=20)
    history = period[period[schema.TX_DATETIME] < cut]
    rows = period[period[schema.TX_DATETIME] >= cut].iloc[:6_000]
    even, odd = rows.iloc[0::2], rows.iloc[1::2]
    arrival = pd.concat([even.iloc[:1_500], odd.iloc[:1_500], even.iloc[1_500:], odd.iloc[1_500:]])
    state = OnlineFeatureState(cfg)
    state.seed(history)
    batched = replay(state, arrival, labels=False, batch=1_500)
    single = _one_at_a_time(cfg, history, arrival)
    high = "CUSTOMER_ID_NB_PREV_HIGH_AMOUNT_14DAY"
    assert (batched[high] > 0).sum() > 100
    assert_parity(single, batched, cfg.feature_names())


def test_single_and_batch_paths_agree_on_an_exact_high_amount_tie() -> None:
    """A stored amount of exactly 1.5x its history's mean (10 after 5, 10, 5), with an older
    unrelated amount in the customer's list: window sums taken as differences of float64
    running sums once made the one-transaction path see 1.5000000000000004 and count it."""
    import datetime as dt
    from copy import deepcopy

    cfg = FeatureConfig(
        customer_windows_days=(1, 2),
        terminal_windows_days=(1, 2),
        delay_days=1,
        history_window_days=2,
        high_amount_window_days=2,
        high_amount_ratio=1.5,
        terminal_fraud_window_days=2,
    )
    epoch = dt.datetime(1970, 1, 1)
    stored = [
        (1522541633, 5.0),
        (1522566700, 10.0),
        (1522614618, 10.0),
        (1522728449, 5.0),
        (1522805680, 10.0),
        (1522871033, 5.0),
        (1522877354, 10.0),
        (1522903934, 5.0),
        (1522954522, 18.734993646034308),
        (1523017771, 10.0),
    ]
    state = OnlineFeatureState(cfg)
    for k, (t, amount) in enumerate(stored):
        state.observe(Transaction(100 + k, epoch + dt.timedelta(seconds=t), 2, 1, amount))
    txs = [
        Transaction(7, dt.datetime(2018, 4, 1, 5, 48, 57), 2, 1, 5.0),
        Transaction(35, dt.datetime(2018, 4, 1, 13, 1, 40), 2, 1, 1.3797578773010633),
        Transaction(15, dt.datetime(2018, 4, 5, 0, 28, 36), 2, 1, 5.0),
    ]
    single_state = deepcopy(state)
    single = [single_state.features_many([tx])[0] for tx in txs]
    batch = list(state.features_many(txs))
    high = "CUSTOMER_ID_NB_PREV_HIGH_AMOUNT_2DAY"
    assert [f[high] for f in single] == [f[high] for f in batch] == [0.0, 1.0, 1.0]
