"""Model tests: a quality floor on the tiny data, invariance and directional expectations."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fraud import schema
from fraud.features import compute_features
from fraud.metrics import average_precision, roc_auc
from pipelines.splits import train_test_frames
from pipelines.train import predict


def _test_rows(tiny_params, frame: pd.DataFrame) -> pd.DataFrame:
    return train_test_frames(frame, tiny_params.split.split())[1]


def test_tiny_model_reaches_quality_floor_on_its_test_window(
    tiny_params, tiny_features, tiny_model
):
    booster, info = tiny_model
    test = _test_rows(tiny_params, tiny_features)
    scores = predict(booster, test, info.features)
    y = test[schema.TX_FRAUD].to_numpy()
    assert average_precision(y, scores) >= 0.45
    assert roc_auc(y, scores) >= 0.75
    # and far better than chance (the fraud rate)
    assert average_precision(y, scores) > 10 * y.mean()


def test_score_does_not_change_when_only_transaction_ids_change(
    tiny_params, tiny_transactions, tiny_model
):
    booster, info = tiny_model
    renumbered = tiny_transactions.copy()
    renumbered[schema.TRANSACTION_ID] = renumbered[schema.TRANSACTION_ID] * 7 + 1_000_003
    a = compute_features(tiny_transactions, tiny_params.features)
    b = compute_features(renumbered, tiny_params.features)
    ta, tb = _test_rows(tiny_params, a), _test_rows(tiny_params, b)
    np.testing.assert_array_equal(
        predict(booster, ta, info.features), predict(booster, tb, info.features)
    )


def test_much_larger_amount_for_the_same_customer_does_not_lower_the_score(
    tiny_params, tiny_transactions, tiny_model
):
    """Multiply one transaction per customer on the last test day by 5 (the compromised-card
    pattern): its score must not go down. Only that customer's own features can change."""
    booster, info = tiny_model
    split = tiny_params.split.split()
    last_day = pd.Timestamp(split.test_end) - pd.Timedelta(days=1)
    day_rows = tiny_transactions[tiny_transactions[schema.TX_DATETIME].dt.floor("D") == last_day]
    day_rows = day_rows[day_rows[schema.TX_FRAUD] == 0]
    chosen = day_rows.groupby(schema.CUSTOMER_ID).tail(1).index  # the customer's last tx that day
    assert len(chosen) >= 100
    bigger = tiny_transactions.copy()
    bigger.loc[chosen, schema.TX_AMOUNT] *= 5
    before = compute_features(tiny_transactions, tiny_params.features).loc[chosen]
    after = compute_features(bigger, tiny_params.features).loc[chosen]
    s0 = predict(booster, before, info.features)
    s1 = predict(booster, after, info.features)
    lowered = s1 < s0 - 1e-6
    assert lowered.mean() <= 0.02, f"{lowered.sum()} of {len(s0)} scores went down"
    assert np.median(s1) > np.median(s0)
