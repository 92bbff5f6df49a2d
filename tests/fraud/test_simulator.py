"""Data tests of the transaction simulator: determinism, the contract, and the handbook's fraud
scenarios (Le Borgne et al., chapter 3)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraud import schema
from fraud.simulator import SimulatorConfig, generate_population, simulate

SMALL = {"n_customers": 300, "n_terminals": 600, "n_days": 60}


def _cfg(seed: int = 7, **overrides: object) -> SimulatorConfig:
    return SimulatorConfig.model_validate({**SMALL, "seed": seed, **overrides})


def _only(scenario: str, **params: object) -> dict[str, object]:
    """A `scenarios` block with one scenario enabled (with `params`) and the others disabled."""
    names = ("large_amount", "compromised_terminals", "compromised_customers")
    block: dict[str, object] = {n: {"enabled": False} for n in names}
    block[scenario] = {"enabled": True, **params}
    return block


NO_FRAUD = {
    "large_amount": {"enabled": False},
    "compromised_terminals": {"enabled": False},
    "compromised_customers": {"enabled": False},
}


def _days(df: pd.DataFrame, cfg: SimulatorConfig) -> np.ndarray:
    """Day index of each transaction since the start of the simulation."""
    return ((df[schema.TX_DATETIME] - pd.Timestamp(cfg.start_date)).dt.days).to_numpy()


@pytest.fixture(scope="session")
def small_cfg() -> SimulatorConfig:
    return _cfg()


@pytest.fixture(scope="session")
def small(small_cfg: SimulatorConfig) -> pd.DataFrame:
    return simulate(small_cfg)


@pytest.fixture(scope="session")
def default_like_cfg() -> SimulatorConfig:
    # The handbook's population and scenario parameters, over 60 days instead of 183 (~0.6M rows).
    return SimulatorConfig(n_customers=5000, n_terminals=10000, n_days=60, seed=11)


@pytest.fixture(scope="session")
def default_like(default_like_cfg: SimulatorConfig) -> pd.DataFrame:
    return simulate(default_like_cfg)


# ------------------------------------------------------------------------------------------
# Determinism and the contract


def test_same_seed_gives_identical_frame(small: pd.DataFrame, small_cfg: SimulatorConfig) -> None:
    pd.testing.assert_frame_equal(simulate(small_cfg), small)


def test_different_seed_gives_different_frame(small: pd.DataFrame) -> None:
    other = simulate(_cfg(seed=8))
    same_shape = other.shape == small.shape
    assert not (same_shape and other.reset_index(drop=True).equals(small.reset_index(drop=True)))
    # Not just a relabelling: the amounts themselves differ.
    assert not np.array_equal(
        np.sort(other[schema.TX_AMOUNT].to_numpy())[:1000],
        np.sort(small[schema.TX_AMOUNT].to_numpy())[:1000],
    )


def test_output_has_exactly_the_contract_columns_and_dtypes(small: pd.DataFrame) -> None:
    expected = {**schema.RAW_COLUMNS, **schema.LABEL_COLUMNS}
    assert list(small.columns) == list(expected)
    assert {c: str(t) for c, t in small.dtypes.items()} == expected
    assert not small.isna().any().any()


def test_transactions_are_sorted_by_time_with_unique_consecutive_ids(small: pd.DataFrame) -> None:
    assert small[schema.TX_DATETIME].is_monotonic_increasing
    ids = small[schema.TRANSACTION_ID].to_numpy()
    assert ids[0] == 0
    np.testing.assert_array_equal(ids, np.arange(len(small)))


def test_transactions_lie_inside_the_simulated_period(
    small: pd.DataFrame, small_cfg: SimulatorConfig
) -> None:
    days = _days(small, small_cfg)
    assert days.min() >= 0
    assert days.max() == small_cfg.n_days - 1
    assert len(np.unique(days)) == small_cfg.n_days


def test_genuine_amounts_are_non_negative_cents(small: pd.DataFrame) -> None:
    amount = small[schema.TX_AMOUNT].to_numpy()
    assert (amount >= 0).all()
    np.testing.assert_allclose(amount, np.round(amount, 2), rtol=0, atol=1e-9)


def test_customers_only_use_terminals_within_the_radius(
    small: pd.DataFrame, small_cfg: SimulatorConfig
) -> None:
    # simulate() draws the population first from the seeded generator: redraw it the same way.
    pop = generate_population(small_cfg, np.random.default_rng(small_cfg.seed))
    c = small[schema.CUSTOMER_ID].to_numpy()
    t = small[schema.TERMINAL_ID].to_numpy()
    distance = np.linalg.norm(pop.customer_xy[c] - pop.terminal_xy[t], axis=1)
    assert distance.max() <= small_cfg.radius


# ------------------------------------------------------------------------------------------
# Fraud scenarios


def test_fraud_rates_per_scenario_match_the_handbooks_proportions(
    default_like: pd.DataFrame,
) -> None:
    # Expected at the handbook's parameters: scenario 2 ~ 2/10000 terminals x 28 days ~ 0.56% at
    # steady state (less during the first 28 days), scenario 3 ~ 3/5000 x 14 days x 1/3 ~ 0.28%,
    # scenario 1 (amount > 220 with mean amounts <= 100) well under 0.2%.
    rates = default_like[schema.TX_FRAUD_SCENARIO].value_counts(normalize=True)
    assert 0.0001 < rates.get(1, 0) < 0.002
    assert 0.002 < rates.get(2, 0) < 0.008
    assert 0.001 < rates.get(3, 0) < 0.005
    assert 0.004 < default_like[schema.TX_FRAUD].mean() < 0.012
    assert set(rates.index) == {0, 1, 2, 3}


def test_fraud_label_and_scenario_agree(small: pd.DataFrame) -> None:
    fraud = small[schema.TX_FRAUD].to_numpy()
    scenario = small[schema.TX_FRAUD_SCENARIO].to_numpy()
    np.testing.assert_array_equal(fraud == 1, scenario > 0)
    assert set(np.unique(fraud)) == {0, 1}


def test_every_amount_above_threshold_is_fraud(
    small: pd.DataFrame, small_cfg: SimulatorConfig
) -> None:
    threshold = small_cfg.scenarios.large_amount.threshold
    large = small[small[schema.TX_AMOUNT] > threshold]
    assert len(large) > 0
    assert (large[schema.TX_FRAUD] == 1).all()
    # Scenario 1 unless a later scenario overwrote the label.
    assert large[schema.TX_FRAUD_SCENARIO].isin([1, 2, 3]).all()
    assert (large[schema.TX_FRAUD_SCENARIO] == 1).any()


def test_scenario_1_labels_only_amounts_above_threshold(
    small: pd.DataFrame, small_cfg: SimulatorConfig
) -> None:
    s1 = small[small[schema.TX_FRAUD_SCENARIO] == 1]
    assert len(s1) > 0
    assert (s1[schema.TX_AMOUNT] > small_cfg.scenarios.large_amount.threshold).all()


def test_large_amount_alone_marks_exactly_the_amounts_above_threshold() -> None:
    cfg = _cfg(scenarios=_only("large_amount", threshold=120.0))
    df = simulate(cfg)
    above = (df[schema.TX_AMOUNT] > 120.0).to_numpy()
    assert above.sum() > 0
    np.testing.assert_array_equal(df[schema.TX_FRAUD].to_numpy() == 1, above)
    np.testing.assert_array_equal(df[schema.TX_FRAUD_SCENARIO].to_numpy(), np.where(above, 1, 0))


def test_compromised_terminal_frauds_fill_windows_of_at_most_days_days(
    small: pd.DataFrame, small_cfg: SimulatorConfig
) -> None:
    """Each scenario-2 fraud lies in a window [d, d + days) of its terminal in which every
    transaction is a fraud (scenario 2, or 3 when scenario 3 overwrote it) and d + days > its day.
    Robust to a terminal being compromised several times (windows then chain)."""
    days_len = small_cfg.scenarios.compromised_terminals.days
    df = small.assign(day=_days(small, small_cfg))
    s2 = df[df[schema.TX_FRAUD_SCENARIO] == 2]
    assert s2[schema.TERMINAL_ID].nunique() > 5
    # Transactions a compromise window cannot contain: genuine, or a scenario-1 label that
    # scenario 2 (applied after scenario 1) would have overwritten.
    blocking = df[df[schema.TX_FRAUD_SCENARIO].isin([0, 1])]
    blocked_days = blocking.groupby(schema.TERMINAL_ID)["day"].apply(
        lambda d: np.unique(d.to_numpy())
    )
    for terminal, frauds in s2.groupby(schema.TERMINAL_ID):
        b = blocked_days.get(terminal, np.zeros(0, dtype=np.int64))
        for d in np.unique(frauds["day"].to_numpy()):
            i = np.searchsorted(b, d, side="right")
            prev_block = b[i - 1] if i > 0 else -1
            assert prev_block != d, f"terminal {terminal}: genuine and scenario-2 on day {d}"
            next_block = b[i] if i < len(b) else None
            earliest_start = max(prev_block + 1, d - days_len + 1, 0)
            latest_start = d if next_block is None else min(d, next_block - days_len)
            assert earliest_start <= latest_start, (
                f"terminal {terminal}: scenario-2 fraud on day {d} fits no all-fraud window of "
                f"{days_len} days (genuine transactions on days {prev_block} and {next_block})"
            )


def test_compromised_terminal_frauds_span_at_most_days_days_per_compromise() -> None:
    # Only scenario 2 and a short window: a terminal's frauds span at most `days` days per
    # compromise, so no terminal compromised once has frauds spread over more than 3 days.
    cfg = _cfg(scenarios=_only("compromised_terminals", per_day=1, days=3))
    df = simulate(cfg).assign(day=lambda d: _days(d, cfg))
    s2 = df[df[schema.TX_FRAUD_SCENARIO] == 2]
    spans = s2.groupby(schema.TERMINAL_ID)["day"].agg(lambda d: d.max() - d.min() + 1)
    assert len(spans) > 10
    # At most n_days compromises: windows chain only for terminals drawn more than once.
    assert s2[schema.TERMINAL_ID].nunique() <= cfg.n_days
    assert (spans <= 3).mean() > 0.9


def test_compromised_customer_fraction_is_roughly_fraction_within_the_window(
    default_like: pd.DataFrame, default_like_cfg: SimulatorConfig
) -> None:
    s3cfg = default_like_cfg.scenarios.compromised_customers
    df = default_like.assign(day=_days(default_like, default_like_cfg))
    s3 = df[df[schema.TX_FRAUD_SCENARIO] == 3]
    first = s3.groupby(schema.CUSTOMER_ID)["day"].min()
    assert len(first) > 50
    sub = df[df[schema.CUSTOMER_ID].isin(first.index)]
    start = sub[schema.CUSTOMER_ID].map(first)
    in_window = sub[(sub["day"] >= start) & (sub["day"] < start + s3cfg.days)]
    share = (in_window[schema.TX_FRAUD_SCENARIO] == 3).mean()
    assert abs(share - s3cfg.fraction) < 0.08


def test_compromised_customer_fraction_is_exact_when_every_customer_is_compromised_daily() -> None:
    # Every customer compromised every day for one day: each day, int(n * fraction) of that
    # day's transactions are frauds (the handbook draws the fraction over the window's rows).
    cfg = _cfg(
        scenarios=_only(
            "compromised_customers", per_day=SMALL["n_customers"], days=1, fraction=0.25
        )
    )
    df = simulate(cfg).assign(day=lambda d: _days(d, cfg))
    per_day = df.groupby("day").agg(n=(schema.TX_FRAUD, "size"), frauds=(schema.TX_FRAUD, "sum"))
    np.testing.assert_array_equal(per_day["frauds"].to_numpy(), (per_day["n"] * 0.25).astype(int))
    assert set(df.loc[df[schema.TX_FRAUD] == 1, schema.TX_FRAUD_SCENARIO]) == {3}


def test_compromised_customer_frauds_have_multiplied_amounts() -> None:
    block = {"per_day": 5, "amount_multiplier": 1.0}
    plain = simulate(_cfg(scenarios=_only("compromised_customers", **block)))
    block["amount_multiplier"] = 5.0
    boosted = simulate(_cfg(scenarios=_only("compromised_customers", **block)))
    # The multiplier draws no random numbers: the same rows are frauds in both runs.
    np.testing.assert_array_equal(plain[schema.TX_FRAUD], boosted[schema.TX_FRAUD])
    hit = plain[schema.TX_FRAUD].to_numpy() == 1
    assert hit.sum() > 20
    before = plain[schema.TX_AMOUNT].to_numpy()[hit]
    after = boosted[schema.TX_AMOUNT].to_numpy()[hit]
    # A transaction drawn in two overlapping compromise windows is multiplied twice (25x), as in
    # the handbook's code; every fraud is multiplied by a power of the multiplier, most once.
    measurable = before >= 1.0
    times = np.log(after[measurable] / before[measurable]) / np.log(5.0)
    np.testing.assert_allclose(times, np.round(times), atol=0.01)
    assert (np.round(times) >= 1).all()
    assert (np.round(times) == 1).mean() > 0.8
    np.testing.assert_array_equal(
        boosted[schema.TX_AMOUNT].to_numpy()[~hit], plain[schema.TX_AMOUNT].to_numpy()[~hit]
    )


@pytest.mark.parametrize(
    ("scenario", "code"),
    [("large_amount", 1), ("compromised_terminals", 2), ("compromised_customers", 3)],
)
def test_disabling_a_scenario_removes_its_frauds(scenario: str, code: int) -> None:
    scenarios: dict[str, object] = {scenario: {"enabled": False}}
    df = simulate(_cfg(scenarios=scenarios))
    codes = set(df.loc[df[schema.TX_FRAUD] == 1, schema.TX_FRAUD_SCENARIO])
    assert code not in codes
    assert codes == {1, 2, 3} - {code}


@pytest.mark.parametrize("scenario", ["compromised_terminals", "compromised_customers"])
def test_zero_per_day_removes_the_scenarios_frauds(scenario: str) -> None:
    df = simulate(_cfg(scenarios={scenario: {"per_day": 0}}))
    code = 2 if scenario == "compromised_terminals" else 3
    assert not (df[schema.TX_FRAUD_SCENARIO] == code).any()


def test_disabling_every_scenario_gives_no_fraud() -> None:
    df = simulate(_cfg(scenarios=NO_FRAUD))
    assert len(df) > 10_000
    assert df[schema.TX_FRAUD].sum() == 0
    assert (df[schema.TX_FRAUD_SCENARIO] == 0).all()


# ------------------------------------------------------------------------------------------
# Drift knobs


def test_amount_scale_scales_the_mean_amount() -> None:
    base = simulate(_cfg(scenarios=NO_FRAUD))
    scaled = simulate(_cfg(scenarios=NO_FRAUD, amount_scale=2.0))
    ratio = scaled[schema.TX_AMOUNT].mean() / base[schema.TX_AMOUNT].mean()
    assert ratio == pytest.approx(2.0, rel=0.02)
    assert len(scaled) == pytest.approx(len(base), rel=0.02)


def test_tx_rate_scale_scales_the_number_of_transactions() -> None:
    base = simulate(_cfg(scenarios=NO_FRAUD))
    scaled = simulate(_cfg(scenarios=NO_FRAUD, tx_rate_scale=0.5))
    assert len(scaled) / len(base) == pytest.approx(0.5, rel=0.05)


def test_new_terminals_are_unused_before_from_day_and_used_after() -> None:
    cfg = _cfg(new_terminals={"count": 200, "from_day": 30})
    df = simulate(cfg)
    is_new = (df[schema.TERMINAL_ID] >= cfg.n_terminals).to_numpy()
    days = _days(df, cfg)
    assert not is_new[days < 30].any()
    assert is_new[days >= 30].sum() > 100
    assert df[schema.TERMINAL_ID].max() < cfg.n_terminals + 200


def test_first_transaction_id_offsets_ids_and_changes_nothing_else(small: pd.DataFrame) -> None:
    offset = simulate(_cfg(first_transaction_id=1_000_000))
    np.testing.assert_array_equal(
        offset[schema.TRANSACTION_ID].to_numpy(),
        small[schema.TRANSACTION_ID].to_numpy() + 1_000_000,
    )
    pd.testing.assert_frame_equal(
        offset.drop(columns=schema.TRANSACTION_ID), small.drop(columns=schema.TRANSACTION_ID)
    )
