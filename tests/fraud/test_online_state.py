"""The in-process online state's bookkeeping: what it records and when, the transaction index
(`ShardedDict`) and its eviction. The features themselves are checked against the offline
pipeline in test_features_parity.py."""

from __future__ import annotations

import datetime as dt
import math
import random

import pytest

from fraud.features import (
    DuplicateTransactionError,
    FeatureConfig,
    OnlineFeatureState,
    ShardedDict,
    Transaction,
)


def test_sharded_dict_answers_like_a_dict_for_integer_keys() -> None:
    rng = random.Random(3)
    plain: dict[int, tuple[int, int]] = {}
    sharded: ShardedDict[tuple[int, int]] = ShardedDict(bits=4)
    keys = [rng.randrange(-(2**40), 2**62) for _ in range(300)] + list(range(-20, 20))
    for step in range(20_000):
        key = rng.choice(keys)
        op = rng.random()
        if op < 0.45:
            plain[key] = sharded_value = (step, key % 7)
            sharded[key] = sharded_value
        elif op < 0.6:
            assert sharded.pop(key, None) == plain.pop(key, None)
        elif op < 0.7:
            pairs = [(k, (step, i)) for i, k in enumerate(rng.sample(keys, 5))]
            plain.update(pairs)
            sharded.update(pairs)
        else:
            assert sharded.get(key) == plain.get(key)
            assert (key in sharded) == (key in plain)
            if key in plain:
                assert sharded[key] == plain[key]
        assert len(sharded) == len(plain)
    assert sharded.present(keys) == [k for k in keys if k in plain]
    with pytest.raises(KeyError):
        sharded[2**63]


def test_sharded_dict_parts_share_consecutive_ids_unevenly_enough_to_grow_apart() -> None:
    # Each part holds about its share (no part does all the rehashing), but not exactly: parts
    # of equal size would all grow within the same few hundred insertions, i.e. in one batch.
    sharded: ShardedDict[int] = ShardedDict(bits=8)
    sharded.update((10**9 + i, i) for i in range(100_000))
    sizes = [len(part) for part in sharded._shards]
    share = 100_000 / 256
    assert len(sizes) == 256
    assert 0.75 * share < min(sizes) and max(sizes) < 1.25 * share
    assert max(sizes) - min(sizes) >= 20


def _tx(tid: int, when: dt.datetime, customer: int = 1, terminal: int = 2) -> Transaction:
    return Transaction(tid, when, customer, terminal, 10.0)


def test_online_state_forgets_transactions_older_than_its_lookback() -> None:
    cfg = FeatureConfig()
    state = OnlineFeatureState(cfg)
    t0 = dt.datetime(2024, 1, 1)
    state.observe(_tx(1, t0))
    state.observe(_tx(2, t0 + dt.timedelta(days=1)))
    assert state.seen(1) and state.seen(2)
    assert state.add_label(1, True) is True
    state.observe(_tx(3, t0 + dt.timedelta(days=cfg.lookback_days, seconds=1)))
    assert not state.seen(1)  # older than the lookback: evicted, with its label
    assert state.seen(2) and state.seen(3)
    assert state.add_label(1, True) is False  # no longer known: kept as pending
    assert len(state._txs) == 2


def test_online_state_refuses_an_id_it_holds_and_records_nothing_of_that_batch() -> None:
    state = OnlineFeatureState(FeatureConfig())
    t0 = dt.datetime(2024, 1, 1)
    state.features_many([_tx(i, t0 + dt.timedelta(minutes=i)) for i in range(1, 11)])
    again = [_tx(i, t0 + dt.timedelta(hours=1, minutes=i)) for i in range(11, 20)] + [_tx(5, t0)]
    with pytest.raises(DuplicateTransactionError) as e:
        state.features_many(again)
    assert e.value.ids == [5]
    assert not state.seen(11)
    assert len(state._txs) == 10


def test_features_are_computed_before_the_transaction_is_recorded() -> None:
    state = OnlineFeatureState(FeatureConfig())
    t0 = dt.datetime(2024, 1, 1)
    hour = dt.timedelta(hours=1)
    first = state.features_many([_tx(1, t0)])[0]
    assert first["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 1.0  # itself, once
    assert math.isnan(first["CUSTOMER_ID_HOURS_SINCE_PREV_TX"])
    assert state.seen(1)
    state.observe(_tx(2, t0 + hour))  # recorded without features
    third = state.features(_tx(3, t0 + 2 * hour))
    assert third["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 3.0
    assert third["CUSTOMER_ID_HOURS_SINCE_PREV_TX"] == 1.0
    # In a batch, each transaction sees the ones before it, and all are recorded.
    batch = state.features_many([_tx(i, t0 + i * hour) for i in range(4, 14)])
    assert [f["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] for f in batch] == [float(i) for i in range(4, 14)]
    assert all(state.seen(i) for i in range(1, 14))
    with pytest.raises(DuplicateTransactionError):
        state.features(_tx(3, t0 + 20 * hour))
    assert state.features(_tx(14, t0 + 14 * hour))["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 14.0
