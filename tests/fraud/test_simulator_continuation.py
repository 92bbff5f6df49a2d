"""Data tests of the simulator's continuation (fraud.continuation) and its drift regimes
(fraud.regimes): the same population on later dates, ids after the base's, steady-state fraud,
and each regime moving its statistic after its onset and not before."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from fraud import schema
from fraud.continuation import base_transaction_count, simulate_continuation
from fraud.regimes import MIMICRY_SCENARIO, PRESETS, Regime, regime_preset
from fraud.simulator import SimulatorConfig, generate_population, simulate

BASE = SimulatorConfig(n_customers=500, n_terminals=1_000, n_days=60, seed=5)
START, N_DAYS, ONSET = 60, 42, 74  # the regime starts on the continuation's 15th day
INPUTS = [schema.TX_DATETIME, schema.CUSTOMER_ID, schema.TERMINAL_ID, schema.TX_AMOUNT]


def _day(df: pd.DataFrame, cfg: SimulatorConfig = BASE) -> np.ndarray:
    """Absolute day index of each transaction (0 = cfg.start_date)."""
    return (df[schema.TX_DATETIME] - pd.Timestamp(cfg.start_date)).dt.days.to_numpy()


@functools.cache
def _continued(name: str | None = None, ramp_days: int | None = None) -> pd.DataFrame:
    regime = None if name is None else regime_preset(name, ONSET, ramp_days)
    return simulate_continuation(BASE, START, N_DAYS, regime)


@pytest.fixture(scope="module")
def base_frame() -> pd.DataFrame:
    return simulate(BASE)


@pytest.fixture(scope="module")
def calm() -> pd.DataFrame:
    return _continued()


def _split(df: pd.DataFrame, at: int = ONSET) -> tuple[pd.DataFrame, pd.DataFrame]:
    day = _day(df)
    return df[day < at], df[day >= at]


# ------------------------------------------------------------------------------------------
# The same population, later dates, ids after the base's


def test_continuation_has_the_columns_and_dtypes_of_simulate(
    calm: pd.DataFrame, base_frame: pd.DataFrame
) -> None:
    assert list(calm.columns) == list(base_frame.columns)
    assert dict(calm.dtypes) == dict(base_frame.dtypes)
    assert not calm.isna().any().any()
    assert calm[schema.TX_DATETIME].is_monotonic_increasing


def test_continuation_covers_exactly_the_days_asked_for(calm: pd.DataFrame) -> None:
    np.testing.assert_array_equal(np.unique(_day(calm)), np.arange(START, START + N_DAYS))
    assert calm[schema.TX_DATETIME].min() >= pd.Timestamp("2018-05-31")  # 2018-04-01 + 60 days
    other = simulate_continuation(BASE, 100, 3)
    np.testing.assert_array_equal(np.unique(_day(other)), [100, 101, 102])


def test_ids_continue_right_after_the_bases_and_are_unique_together(
    calm: pd.DataFrame, base_frame: pd.DataFrame
) -> None:
    ids = calm[schema.TRANSACTION_ID].to_numpy()
    assert ids[0] == base_frame[schema.TRANSACTION_ID].max() + 1
    np.testing.assert_array_equal(ids, ids[0] + np.arange(len(calm)))
    both = pd.concat([base_frame, calm])[schema.TRANSACTION_ID]
    assert both.is_unique


def test_explicit_first_transaction_id_sets_the_ids_and_nothing_else(calm: pd.DataFrame) -> None:
    moved = simulate_continuation(BASE, START, N_DAYS, first_transaction_id=10**9)
    assert moved[schema.TRANSACTION_ID].iloc[0] == 10**9
    pd.testing.assert_frame_equal(
        moved.drop(columns=schema.TRANSACTION_ID), calm.drop(columns=schema.TRANSACTION_ID)
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"first_transaction_id": 12_345, "seed": 6},
        {"amount_scale": 1.4, "tx_rate_scale": 0.7, "radius": 3.0},
        {"new_terminals": {"count": 150, "from_day": 20}},
    ],
    ids=["plain", "offset-ids", "scaled", "base-with-new-terminals"],
)
def test_base_transaction_count_is_the_number_of_rows_simulate_draws(
    overrides: dict[str, object],
) -> None:
    cfg = SimulatorConfig.model_validate({**BASE.model_dump(), "n_days": 30, **overrides})
    base = simulate(cfg)
    assert base_transaction_count(cfg) == len(base)
    first = simulate_continuation(cfg, cfg.n_days, 1)[schema.TRANSACTION_ID].iloc[0]
    assert first == base[schema.TRANSACTION_ID].max() + 1


def test_compromised_terminals_of_the_bases_last_weeks_stay_compromised(
    calm: pd.DataFrame, base_frame: pd.DataFrame
) -> None:
    # Terminal-risk features read the last weeks' labels: the windows open at the base's end must
    # go on, or the model would see the base's compromised terminals fall quiet and new ones
    # appear at once, a drift that the simulator made up.
    def s2_terminals(df: pd.DataFrame, days: range) -> set[int]:
        rows = df[np.isin(_day(df), list(days)) & (df[schema.TX_FRAUD_SCENARIO] == 2).to_numpy()]
        return set(rows[schema.TERMINAL_ID])

    base_end = s2_terminals(base_frame, range(BASE.n_days - 27, BASE.n_days))
    cont_start = s2_terminals(calm, range(START, START + 2))
    # Fresh draws would share ~6% (56 of 1,000 terminals compromised at a time); the rest are
    # the two new days' compromises and terminals without a transaction in the base's last days.
    assert len(cont_start) >= 20
    assert len(base_end & cont_start) / len(cont_start) > 0.8


def test_customers_keep_the_spending_and_rate_of_their_base_profiles(calm: pd.DataFrame) -> None:
    # The profiles as simulate(BASE) draws them, redrawn independently of the continuation.
    pop = generate_population(BASE, np.random.default_rng(BASE.seed))
    genuine = calm[calm[schema.TX_FRAUD_SCENARIO] == 0]
    per_customer = genuine.groupby(schema.CUSTOMER_ID)[schema.TX_AMOUNT].agg(["mean", "size"])
    busy = per_customer[per_customer["size"] >= 30]
    assert len(busy) > 200
    profile = pop.customer_mean_amount[busy.index.to_numpy()]
    assert np.corrcoef(busy["mean"], profile)[0, 1] > 0.97
    assert np.median(np.abs(busy["mean"] / profile - 1)) < 0.1
    per_day = calm.groupby(schema.CUSTOMER_ID).size() / N_DAYS
    rate = pop.customer_mean_nb_tx[per_day.index.to_numpy()]
    assert np.corrcoef(per_day, rate)[0, 1] > 0.95


def test_customers_use_only_base_terminals_within_their_radius(calm: pd.DataFrame) -> None:
    pop = generate_population(BASE, np.random.default_rng(BASE.seed))
    c = calm[schema.CUSTOMER_ID].to_numpy()
    t = calm[schema.TERMINAL_ID].to_numpy()
    assert t.max() < BASE.n_terminals
    assert np.linalg.norm(pop.customer_xy[c] - pop.terminal_xy[t], axis=1).max() <= BASE.radius


def test_same_call_repeats_exactly_and_other_starts_or_seeds_differ(calm: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(simulate_continuation(BASE, START, N_DAYS), calm)
    later = simulate_continuation(BASE, START + 1, N_DAYS)
    reseeded = simulate_continuation(BASE, START, N_DAYS, seed=1)
    for other in (later, reseeded):
        amounts = other[schema.TX_AMOUNT].to_numpy()[:1000]
        assert not np.array_equal(amounts, calm[schema.TX_AMOUNT].to_numpy()[:1000])
    # The same calendar days drawn from another start are not the same rows either.
    overlap = later[_day(later) == START + 5][schema.TX_AMOUNT].to_numpy()
    assert not np.array_equal(overlap, calm[_day(calm) == START + 5][schema.TX_AMOUNT].to_numpy())


def test_no_drift_continuation_matches_the_last_weeks_of_a_default_size_base() -> None:
    # The handbook's population (5,000 customers, 10,000 terminals) over 60 days, ~0.6M rows.
    base_cfg = SimulatorConfig(n_days=60, seed=11)
    base = simulate(base_cfg)
    tail = base[_day(base, base_cfg) >= 32]  # 28 days at steady state (compromises last 28)
    cont = simulate_continuation(base_cfg, 60, 28)
    first_week = cont[_day(cont, base_cfg) < 67]
    assert len(cont) / 28 == pytest.approx(len(tail) / 28, rel=0.02)
    q = [0.5, 0.9, 0.99]
    np.testing.assert_allclose(
        cont[schema.TX_AMOUNT].quantile(q), tail[schema.TX_AMOUNT].quantile(q), rtol=0.03
    )
    assert cont[schema.TX_FRAUD].mean() == pytest.approx(tail[schema.TX_FRAUD].mean(), rel=0.25)
    # Compromises that opened before the start are drawn too: no ramp-up in the first week
    # (without them the first week would have about half the steady rate).
    assert first_week[schema.TX_FRAUD].mean() == pytest.approx(
        tail[schema.TX_FRAUD].mean(), rel=0.3
    )
    for code in (1, 2, 3):
        assert (cont[schema.TX_FRAUD_SCENARIO] == code).mean() == pytest.approx(
            (tail[schema.TX_FRAUD_SCENARIO] == code).mean(), rel=0.35
        )


# ------------------------------------------------------------------------------------------
# Regimes


def test_intensity_is_zero_before_onset_then_ramps_linearly_to_one() -> None:
    gradual = Regime(onset_day=10, ramp_days=5)
    expected = [0.0] * 10 + [0.2, 0.4, 0.6, 0.8, 1.0] + [1.0] * 5
    np.testing.assert_allclose(gradual.intensity(np.arange(20)), expected)
    assert gradual.full_day == 14
    for ramp in (0, 1):
        sudden = Regime(onset_day=10, ramp_days=ramp)
        np.testing.assert_array_equal(sudden.intensity(np.arange(8, 13)), [0, 0, 1, 1, 1])
        assert sudden.full_day == 10


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_regime_changes_nothing_before_its_onset(name: str, calm: pd.DataFrame) -> None:
    before_regime, _ = _split(_continued(name))
    before_calm, _ = _split(calm)
    pd.testing.assert_frame_equal(before_regime, before_calm)


def test_none_preset_is_the_no_drift_continuation(calm: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(_continued("none"), calm)


def test_gradual_amount_grows_amounts_day_by_day_to_the_full_scale(calm: pd.DataFrame) -> None:
    drifted = _continued("gradual_amount", ramp_days=10)
    regime = regime_preset("gradual_amount", ONSET, ramp_days=10)
    # Paired rows (the same draws): a genuine amount's ratio is the day's scale.
    genuine = (calm[schema.TX_FRAUD_SCENARIO] == 0).to_numpy() & (
        calm[schema.TX_AMOUNT].to_numpy() > 5
    )
    ratio = pd.Series(
        drifted[schema.TX_AMOUNT].to_numpy()[genuine] / calm[schema.TX_AMOUNT].to_numpy()[genuine]
    ).groupby(_day(calm)[genuine])
    daily = ratio.median()
    assert (daily[daily.index < ONSET] == 1.0).all()
    ramp = daily[(daily.index >= ONSET - 1) & (daily.index <= regime.full_day)].to_numpy()
    assert (np.diff(ramp) > 0).all()  # strictly rising through the ramp
    np.testing.assert_allclose(daily[daily.index >= regime.full_day], 1.3, rtol=0.002)
    # Unpaired: the mean amount after the ramp is 30% above the mean before the onset.
    before, _ = _split(drifted)
    _, after = _split(drifted, regime.full_day)
    assert after[schema.TX_AMOUNT].mean() / before[schema.TX_AMOUNT].mean() == pytest.approx(
        1.3, rel=0.05
    )
    # The large-amount rule follows the amounts (220 -> 286): every amount above 286 is a fraud,
    # and amounts of 220-286 are no longer frauds by that rule.
    assert after.loc[after[schema.TX_AMOUNT] > 286, schema.TX_FRAUD].eq(1).all()
    grown = after[
        after[schema.TX_AMOUNT].between(220.01, 286) & after[schema.TX_FRAUD_SCENARIO].ne(3)
    ]
    assert len(grown) > 20
    assert grown[schema.TX_FRAUD].mean() < 0.3


def test_new_terminals_take_their_share_from_the_onset_and_no_row_before() -> None:
    drifted = _continued("new_terminals")
    regime = regime_preset("new_terminals", ONSET)
    is_new = drifted[schema.TERMINAL_ID].to_numpy() >= BASE.n_terminals
    day = _day(drifted)
    assert not is_new[day < ONSET].any()
    daily_share = pd.Series(is_new[day >= ONSET]).groupby(day[day >= ONSET]).mean()
    assert daily_share.min() > 0.18
    assert daily_share.mean() == pytest.approx(regime.new_terminal_share, abs=0.02)
    new_ids = drifted.loc[is_new, schema.TERMINAL_ID]
    assert new_ids.max() < BASE.n_terminals + regime.new_terminals
    assert new_ids.nunique() > 300  # spread over the population, not a few terminals
    # Moved, not added: the same number of transactions as without the regime.
    assert len(drifted) == len(_continued())


def test_concept_regime_keeps_inputs_and_changes_what_is_fraud(calm: pd.DataFrame) -> None:
    drifted = _continued("concept")
    # The same rows as without drift (paired draws): only the labels differ.
    pd.testing.assert_frame_equal(drifted[INPUTS], calm[INPUTS])
    before, after = _split(drifted)
    q = [0.1, 0.25, 0.5, 0.75, 0.9]  # the top 1% is mostly compromised customers (x5)
    np.testing.assert_allclose(
        after[schema.TX_AMOUNT].quantile(q), before[schema.TX_AMOUNT].quantile(q), rtol=0.05
    )
    volume = pd.concat(
        [p.groupby(schema.TERMINAL_ID).size() / _days_in(p) for p in (before, after)], axis=1
    ).fillna(0)
    assert volume.corr().iloc[0, 1] > 0.7
    assert volume.sum().iloc[1] == pytest.approx(volume.sum().iloc[0], rel=0.05)
    # What is fraud: no compromised terminal after the onset; amounts in (180, 220] become
    # frauds.
    assert (after[schema.TX_FRAUD_SCENARIO] == 2).sum() == 0
    assert (before[schema.TX_FRAUD_SCENARIO] == 2).sum() > 50
    # (Scenario 3 multiplies amounts: its rows are left out of the band.)
    band = [
        p[p[schema.TX_AMOUNT].between(180.01, 220) & p[schema.TX_FRAUD_SCENARIO].ne(3)]
        for p in (before, after)
    ]
    assert len(band[1]) > 20
    assert band[0][schema.TX_FRAUD].mean() < 0.2
    assert band[1][schema.TX_FRAUD].mean() == 1.0
    # Below 180, frauds were compromised terminals' (any amount); after the onset none is left.
    small = [
        p[p[schema.TX_AMOUNT].le(180) & p[schema.TX_FRAUD_SCENARIO].ne(3)] for p in (before, after)
    ]
    assert small[0][schema.TX_FRAUD].mean() > 0.02
    assert small[1][schema.TX_FRAUD].sum() == 0


def _days_in(df: pd.DataFrame) -> int:
    return len(np.unique(_day(df)))


def test_label_only_adds_frauds_that_look_like_genuine_transactions(calm: pd.DataFrame) -> None:
    drifted = _continued("label_only")
    pd.testing.assert_frame_equal(drifted[INPUTS], calm[INPUTS])
    before, after = _split(drifted)
    assert not (before[schema.TX_FRAUD_SCENARIO] == MIMICRY_SCENARIO).any()
    mimics = after[after[schema.TX_FRAUD_SCENARIO] == MIMICRY_SCENARIO]
    assert len(mimics) > 100
    assert after[schema.TX_FRAUD].mean() > before[schema.TX_FRAUD].mean() + 0.02
    # Amounts as the customers' usual ones (scenario 3's are five times theirs).
    genuine = after[after[schema.TX_FRAUD] == 0].groupby(schema.CUSTOMER_ID)[schema.TX_AMOUNT]
    usual = mimics[schema.CUSTOMER_ID].map(genuine.mean())
    assert np.median(mimics[schema.TX_AMOUNT] / usual) == pytest.approx(1.0, abs=0.15)
    # Frauds of the base's scenarios keep their codes and rows.
    kept = calm[schema.TX_FRAUD_SCENARIO].to_numpy() > 0
    np.testing.assert_array_equal(
        drifted[schema.TX_FRAUD_SCENARIO].to_numpy()[kept],
        calm[schema.TX_FRAUD_SCENARIO].to_numpy()[kept],
    )


def test_fraud_rate_regime_doubles_the_compromises(calm: pd.DataFrame) -> None:
    regime = regime_preset("fraud_rate", START - 28)
    drifted = simulate_continuation(BASE, START, N_DAYS, regime)
    pd.testing.assert_frame_equal(drifted[INPUTS[:3]], calm[INPUTS[:3]])
    # From four weeks in, every window open is one drawn under the regime (not the base's).
    late = _day(calm) >= START + 28
    for code in (2, 3):
        ratio = (drifted[schema.TX_FRAUD_SCENARIO].to_numpy()[late] == code).sum() / (
            calm[schema.TX_FRAUD_SCENARIO].to_numpy()[late] == code
        ).sum()
        assert 1.5 < ratio < 2.6, f"scenario {code}: {ratio:.2f}x"


# ------------------------------------------------------------------------------------------
# Bad input


def test_every_preset_name_builds_a_regime_and_an_unknown_one_names_the_presets() -> None:
    for name in PRESETS:
        assert regime_preset(name, 5).name == name
    with pytest.raises(ValueError, match="'gradual_amount'"):
        regime_preset("gradual", 5)


def test_regime_rejects_unknown_fields_and_terminals_nobody_uses() -> None:
    with pytest.raises(ValidationError, match="amount_sclae"):
        Regime.model_validate({"onset_day": 3, "amount_sclae": 2.0})
    with pytest.raises(ValidationError, match="new_terminal_share"):
        Regime(onset_day=3, new_terminals=100)
    with pytest.raises(ValidationError, match="new_terminals"):
        Regime(onset_day=3, new_terminal_share=0.2)
    with pytest.raises(ValidationError, match="onset_day"):
        Regime(onset_day=-1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"start_day": -1, "n_days": 3}, "start_day"),
        ({"start_day": 60, "n_days": 0}, "n_days"),
        ({"start_day": 60, "n_days": 3, "first_transaction_id": -5}, "first_transaction_id"),
    ],
)
def test_bad_arguments_raise_an_error_naming_them(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        simulate_continuation(BASE, **kwargs)
