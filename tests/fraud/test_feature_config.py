"""The feature configuration: its validation, the history it needs, and the names it gives
(each feature's column name is built once, from the configuration)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fraud.features import FeatureConfig

HANDBOOK_15 = [
    "TX_AMOUNT",
    "TX_DURING_WEEKEND",
    "TX_DURING_NIGHT",
    "CUSTOMER_ID_NB_TX_1DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW",
    "CUSTOMER_ID_NB_TX_7DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW",
    "CUSTOMER_ID_NB_TX_30DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW",
    "TERMINAL_ID_NB_TX_1DAY_WINDOW",
    "TERMINAL_ID_RISK_1DAY_WINDOW",
    "TERMINAL_ID_NB_TX_7DAY_WINDOW",
    "TERMINAL_ID_RISK_7DAY_WINDOW",
    "TERMINAL_ID_NB_TX_30DAY_WINDOW",
    "TERMINAL_ID_RISK_30DAY_WINDOW",
]


def test_history_window_zero_leaves_the_handbooks_15_features_and_no_history_feature() -> None:
    names = FeatureConfig(history_window_days=0).feature_names()
    assert names[:15] == HANDBOOK_15
    history_words = ("AMOUNT_RATIO", "ZSCORE", "HOURS_SINCE", "CUSTOMER_TERMINAL", "HIGH_AMOUNT")
    assert not [n for n in names if any(word in n for word in history_words)]


def test_disabling_every_optional_window_gives_exactly_the_handbooks_15_features() -> None:
    # The handbook's windows are `*_windows_days`; every `*_window_days` enables an extra family.
    optional = {f: 0 for f in FeatureConfig.model_fields if f.endswith("_window_days")}
    assert "history_window_days" in optional
    assert FeatureConfig(**optional).feature_names() == HANDBOOK_15


def test_window_sizes_are_sorted_deduplicated_and_positive() -> None:
    cfg = FeatureConfig(customer_windows_days=(30, 1, 7, 7))
    assert cfg.customer_windows_days == (1, 7, 30)
    with pytest.raises(ValidationError, match="positive"):
        FeatureConfig(terminal_windows_days=(0, 7))


def test_lookback_covers_the_delay_plus_the_longest_terminal_window() -> None:
    no_high = FeatureConfig(high_amount_window_days=0)
    assert no_high.lookback_days == 7 + 30  # delay + the longest terminal window
    assert (
        FeatureConfig(delay_days=0, history_window_days=60, high_amount_window_days=0).lookback_days
        == 60
    )


def test_lookback_covers_the_history_behind_the_high_amount_count() -> None:
    """A transaction 14 days back needed its own 30 days of history to be flagged high."""
    assert FeatureConfig().lookback_days == 14 + 30
    assert FeatureConfig(history_window_days=0).lookback_days == 7 + 30


# The model's input columns under the default configuration, as the registered models know them:
# a rename or a reordering would break every model trained before it.
DEFAULT_FEATURES = [
    *HANDBOOK_15,
    "CUSTOMER_ID_AMOUNT_RATIO_30DAY",
    "CUSTOMER_ID_AMOUNT_ZSCORE_30DAY",
    "CUSTOMER_ID_HOURS_SINCE_PREV_TX",
    "CUSTOMER_TERMINAL_NB_PREV_TX_30DAY",
    "CUSTOMER_ID_NB_PREV_HIGH_AMOUNT_14DAY",
    "TERMINAL_ID_NB_FRAUD_28DAY_WINDOW",
    "TERMINAL_ID_FIRST_FRAUD_AGE_28DAY_WINDOW",
    "TERMINAL_ID_LAST_FRAUD_AGE_28DAY_WINDOW",
]


def test_default_feature_names_and_their_order_are_those_of_the_registered_models() -> None:
    assert FeatureConfig().feature_names() == DEFAULT_FEATURES


def test_window_sizes_are_written_into_the_names() -> None:
    cfg = FeatureConfig(
        customer_windows_days=(2,),
        terminal_windows_days=(3,),
        history_window_days=10,
        high_amount_window_days=5,
        terminal_fraud_window_days=9,
    )
    assert cfg.feature_names() == [
        "TX_AMOUNT",
        "TX_DURING_WEEKEND",
        "TX_DURING_NIGHT",
        "CUSTOMER_ID_NB_TX_2DAY_WINDOW",
        "CUSTOMER_ID_AVG_AMOUNT_2DAY_WINDOW",
        "TERMINAL_ID_NB_TX_3DAY_WINDOW",
        "TERMINAL_ID_RISK_3DAY_WINDOW",
        "CUSTOMER_ID_AMOUNT_RATIO_10DAY",
        "CUSTOMER_ID_AMOUNT_ZSCORE_10DAY",
        "CUSTOMER_ID_HOURS_SINCE_PREV_TX",
        "CUSTOMER_TERMINAL_NB_PREV_TX_10DAY",
        "CUSTOMER_ID_NB_PREV_HIGH_AMOUNT_5DAY",
        "TERMINAL_ID_NB_FRAUD_9DAY_WINDOW",
        "TERMINAL_ID_FIRST_FRAUD_AGE_9DAY_WINDOW",
        "TERMINAL_ID_LAST_FRAUD_AGE_9DAY_WINDOW",
    ]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"history_window_days": 0},
        {"high_amount_window_days": 0},
        {"terminal_fraud_window_days": 0},
        {"customer_windows_days": (), "terminal_windows_days": ()},
    ],
)
def test_names_by_family_are_exactly_the_ordered_names(changes: dict[str, object]) -> None:
    """Every implementation writes its columns under the family names: together they must be the
    model's columns, no more and no fewer, and a disabled family has no names."""
    cfg = FeatureConfig(**changes)
    names = cfg.names
    by_family = [names.amount, names.weekend, names.night]
    for cw in names.customer_windows:
        by_family += [cw.nb_tx, cw.avg_amount]
    for tw in names.terminal_windows:
        by_family += [tw.nb_tx, tw.risk]
    if names.history is not None:
        h = names.history
        by_family += [h.amount_ratio, h.amount_zscore, h.hours_since_prev_tx]
        by_family += [h.customer_terminal_nb_prev_tx]
        if h.nb_prev_high_amount is not None:
            by_family.append(h.nb_prev_high_amount)
    if names.terminal_fraud is not None:
        f = names.terminal_fraud
        by_family += [f.nb_fraud, f.first_fraud_age, f.last_fraud_age]
    assert sorted(by_family) == sorted(cfg.feature_names())
    assert len(set(by_family)) == len(by_family)
    assert (names.history is None) == (cfg.history_window_days == 0)
    assert (names.terminal_fraud is None) == (cfg.terminal_fraud_window_days == 0)
    if names.history is not None:
        assert (names.history.nb_prev_high_amount is None) == (not cfg.high_amount_feature)


def test_names_are_built_once_per_configuration_and_follow_a_changed_copy() -> None:
    cfg = FeatureConfig()
    assert cfg.names is FeatureConfig().names  # cached by value: the hot path asks per call
    changed = cfg.model_copy(update={"history_window_days": 10})
    assert "CUSTOMER_ID_AMOUNT_RATIO_10DAY" in changed.feature_names()
    assert "CUSTOMER_ID_AMOUNT_RATIO_30DAY" in cfg.feature_names()
