"""The batch implementation's parts: the waves that order a batch's dependent transactions, the
check that picks the one-pass path, and `FeatureBatch`, the result the API scores. Its numbers
are checked against the offline and one-at-a-time ones in test_features_parity.py."""

from __future__ import annotations

import numpy as np

from fraud import schema
from fraud.features import FeatureBatch, FeatureConfig, OnlineFeatureState
from fraud.features.batch import _entity_order_kept, _wave_numbers
from fraud.simulator import SimulatorConfig, simulate


def test_a_transaction_waits_one_wave_after_the_last_that_shares_its_customer_or_terminal() -> None:
    assert _wave_numbers([1, 2, 1, 3], [5, 6, 7, 6]) == [0, 0, 1, 1]
    assert _wave_numbers([1, 1, 1], [5, 6, 7]) == [0, 1, 2]
    assert _wave_numbers([1, 2, 3], [5, 6, 7]) == [0, 0, 0]


def test_a_simulated_batch_splits_into_several_waves() -> None:
    head = simulate(SimulatorConfig(n_customers=50, n_terminals=100, n_days=3, seed=5)).iloc[:250]
    waves = _wave_numbers(head[schema.CUSTOMER_ID].tolist(), head[schema.TERMINAL_ID].tolist())
    assert max(waves) >= 2


def test_entity_order_is_kept_only_when_no_entity_goes_back_in_time() -> None:
    seconds = np.array([10, 20, 5, 30])
    interleaved = np.array([1, 1, 2, 2])  # each entity's times ascend: kept
    assert _entity_order_kept(seconds, interleaved)
    back = np.array([1, 1, 1, 2])  # entity 1 goes 20 -> 5
    assert not _entity_order_kept(seconds, interleaved, back)


def test_feature_batch_gives_rows_and_the_models_matrix_from_its_columns() -> None:
    batch = FeatureBatch({"a": np.array([1.0, 2.0]), "b": np.array([np.nan, 4.0])})
    assert len(batch) == 2
    assert batch[1] == {"a": 2.0, "b": 4.0}
    assert [r["a"] for r in batch] == [1.0, 2.0]
    m = batch.matrix(["b", "a"])
    assert m.dtype == np.float32 and m.shape == (2, 2)
    np.testing.assert_array_equal(m, np.array([[np.nan, 1.0], [4.0, 2.0]], dtype=np.float32))


def test_an_empty_batch_has_no_rows() -> None:
    empty = OnlineFeatureState(FeatureConfig()).features_many([])
    assert len(empty) == 0 and list(empty) == []
