"""The Redis feature state gives the offline features too, and keeps its promises across
clients: duplicates refused, late and early labels, history seeded once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from fraud import schema
from fraud.features import (
    DuplicateTransactionError,
    FeatureConfig,
    OnlineFeatureState,
    Transaction,
    compute_features,
)
from fraud.simulator import SimulatorConfig, simulate
from serving.degradation import BackendUnavailableError
from serving.feature_store import RedisFeatureStore
from tests.fraud.test_features_parity import _transactions, assert_parity
from tests.serving.redis_server import redis_server


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="module")
def period() -> pd.DataFrame:
    return simulate(SimulatorConfig(n_customers=150, n_terminals=300, n_days=40, seed=11))


def _store(
    url: str, name: str, cfg: FeatureConfig | None = None, history: pd.DataFrame | None = None
) -> RedisFeatureStore:
    """A store on its own prefix, seeded with `history` (none: an empty one; an unseeded
    store refuses every script)."""
    store = RedisFeatureStore(url, cfg or FeatureConfig(), prefix=f"test-{name}")
    if history is not None:
        store.seed(history)
    return store


def test_redis_store_seeded_from_history_matches_offline_features(
    redis_url: str, period: pd.DataFrame
) -> None:
    cfg = FeatureConfig()
    offline = compute_features(period, cfg)
    cut = period[schema.TX_DATETIME].iloc[0] + pd.Timedelta(days=20)
    history = period[period[schema.TX_DATETIME] < cut]
    rest = period[period[schema.TX_DATETIME] >= cut]
    store = _store(redis_url, "parity", cfg)
    store.seed(history)
    # Labels of the rest arrive before their transactions (kept until they arrive).
    for tid, y in zip(rest[schema.TRANSACTION_ID], rest[schema.TX_FRAUD], strict=True):
        store.add_label(int(tid), bool(y))
    txs = _transactions(rest)
    rows: list[dict[str, float]] = []
    for start in range(0, len(txs), 500):  # batches, one round trip each
        rows += store.features_many(txs[start : start + 500])
    online = pd.DataFrame(rows, index=rest.index)
    assert (online["TERMINAL_ID_RISK_7DAY_WINDOW"] > 0).sum() > 50
    assert_parity(offline.loc[rest.index], online, cfg.feature_names())


def test_two_clients_share_one_state(redis_url: str, period: pd.DataFrame) -> None:
    cfg = FeatureConfig()
    head = period.iloc[:4_000]
    a = _store(redis_url, "shared", cfg, history=head.iloc[:0])
    b = _store(redis_url, "shared", cfg, history=head.iloc[:0])
    txs = _transactions(head)
    # Alternate clients, as two workers behind one socket would.
    rows = [(a if i % 2 else b).features(tx) for i, tx in enumerate(txs)]
    unlabelled = compute_features(head.drop(columns=[schema.TX_FRAUD]), cfg)
    assert_parity(unlabelled, pd.DataFrame(rows, index=head.index), cfg.feature_names())


def test_repeated_transaction_id_is_refused_and_records_nothing(
    redis_url: str, period: pd.DataFrame
) -> None:
    store = _store(redis_url, "dup", history=period.iloc[:0])
    first, second = _transactions(period.iloc[:2])
    store.features(first)
    with pytest.raises(DuplicateTransactionError) as e:
        store.features_many([second, first])
    assert e.value.ids == [first.transaction_id]
    assert not store.seen(second.transaction_id)  # the batch was refused as a whole
    with pytest.raises(DuplicateTransactionError):
        store.features_many([second, second])


def test_late_label_counts_for_terminal_risk_after_the_delay(
    redis_url: str, period: pd.DataFrame
) -> None:
    cfg = FeatureConfig(delay_days=1)
    store = _store(redis_url, "label", cfg, history=period.iloc[:0])
    t0 = pd.Timestamp("2018-05-01 10:00")
    store.features(Transaction(1, t0, 1, 7, 20.0))
    assert store.add_label(1, True) is True
    assert store.add_label(999, True) is False  # not seen (yet)
    later = store.features(Transaction(2, t0 + pd.Timedelta(days=1, hours=1), 2, 7, 20.0))
    assert later["TERMINAL_ID_RISK_1DAY_WINDOW"] == 1.0
    assert later["TERMINAL_ID_NB_FRAUD_28DAY_WINDOW"] == 1.0
    store.add_label(1, False)  # corrected
    again = store.features(Transaction(3, t0 + pd.Timedelta(days=1, hours=2), 3, 7, 20.0))
    assert again["TERMINAL_ID_RISK_1DAY_WINDOW"] == 0.0


def test_seed_loads_history_once(redis_url: str, period: pd.DataFrame) -> None:
    head = period.iloc[:1_000]
    a = _store(redis_url, "seed-once")
    a.seed(head)
    b = _store(redis_url, "seed-once")
    b.seed(head)  # a second worker: must not append the history twice
    tx = _transactions(period.iloc[1_000:1_001])[0]
    memory = OnlineFeatureState(FeatureConfig())
    memory.seed(head)
    want = memory.features(tx)
    got = b.features(tx)
    assert np.allclose([got[k] for k in want], [want[k] for k in want], rtol=1e-9, equal_nan=True)


def test_unreachable_redis_names_the_url_without_password() -> None:
    with pytest.raises(RuntimeError, match=r"redis://:\*\*\*@127.0.0.1:1/0"):
        RedisFeatureStore("redis://:secret@127.0.0.1:1/0", FeatureConfig())


def _wait_seeded(store: RedisFeatureStore, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not store.r.exists(f"{store.prefix}:seeded"):
        assert time.monotonic() < deadline, "not seeded again within the timeout"
        time.sleep(0.05)


def test_a_redis_that_lost_its_state_is_refused_by_every_script_and_seeded_again(
    redis_url: str, period: pd.DataFrame
) -> None:
    """Redis restarted without its data (here: its keys deleted): features, batches and labels
    answer BackendUnavailableError saying the state was lost, nothing is computed from the empty
    state, and the store seeds itself again from the history in the background; then features
    are the history's again."""
    head, rest = period.iloc[:1_000], period.iloc[1_000:1_003]
    store = _store(redis_url, "lost", history=head)
    tx, *batch = _transactions(rest)
    loop = asyncio.new_event_loop()  # one loop: the store's asyncio client keeps to it
    lose = [
        ("features", lambda: store.features(tx)),
        ("features_many", lambda: store.features_many(batch)),
        ("add_label", lambda: store.add_label(int(tx.transaction_id), True)),
        ("acheck", lambda: loop.run_until_complete(store.acheck())),
        ("afeatures_many", lambda: loop.run_until_complete(store.afeatures_many([tx]))),
    ]
    for name, call in lose:
        store.r.delete(*store.r.keys(f"{store.prefix}:*"))
        with pytest.raises(BackendUnavailableError, match="has lost its state") as e:
            call()
        assert e.value.backend == "feature store", name
        assert not store.r.exists(f"{store.prefix}:x:{int(tx.transaction_id)}"), name
        _wait_seeded(store)
    loop.close()
    memory = OnlineFeatureState(FeatureConfig())
    memory.seed(head)
    want = memory.features(tx)
    got = store.features(tx)
    assert np.allclose([got[k] for k in want], [want[k] for k in want], rtol=1e-9, equal_nan=True)
    # The batch was refused as a whole, so its transactions were never recorded.
    assert not any(store.seen(int(b.transaction_id)) for b in batch)


def test_a_store_never_seeded_is_refused_and_not_seeded_from_nothing(
    redis_url: str, period: pd.DataFrame
) -> None:
    store = _store(redis_url, "never")
    tx = _transactions(period.iloc[:1])[0]
    with pytest.raises(BackendUnavailableError, match="has lost its state"):
        store.features(tx)
    time.sleep(0.5)
    assert not store.r.exists(f"{store.prefix}:seeded")
    assert not store.seen(int(tx.transaction_id))
