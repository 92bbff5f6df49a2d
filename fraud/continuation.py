"""Continue a simulated population past its period, optionally under a drift regime.

`simulate(cfg)` draws a population and its transactions in one random stream, so a drifted config
(new terminals, scaled amounts) draws other customers and terminals: it cannot stand for
production traffic after a model's training data. `simulate_continuation(base, start_day,
n_days, regime)` can:

* **the same population**: the customer and terminal profiles are drawn exactly as
  `simulate(base)` draws them (same seed, same order), so customers keep their spending, their
  rate and their reachable terminals;
* **later dates**: days `start_day .. start_day + n_days - 1` on the base's timeline (day 0 is
  `base.start_date`; `start_day = base.n_days` continues right after the base);
* **transaction ids after the base's**: from `base.first_transaction_id + len(simulate(base))`
  (counted without simulating the base: `base_transaction_count`), so base and continuation
  together have unique ids;
* **its own random stream**, seeded from the base's seed, `start_day` and the optional `seed`:
  the same call gives the same frame, another start or seed another one;
* **the base's fraud scenarios at steady state**: compromise windows that opened before
  `start_day` reach into the period, so the fraud rate does not restart from zero the way it
  does in the first weeks of `simulate`. The compromised terminals of windows that started on
  the base's days are the base's own (replayed from its stream: its choices do not depend on
  the transactions), so terminal-risk features computed over base + continuation go on without
  a break; compromised customers are drawn afresh (no feature reads customers' labels).
* **a drift regime** (`fraud.regimes.Regime`) from its onset day.

Common random numbers: the genuine draws, each fraud scenario and the regime's moves use
separate streams, so a continuation under a regime equals the no-drift continuation with the
same seed before the onset, and after it differs only in what the regime changes (a concept
regime keeps every input exactly; only labels change). Paired comparisons need no more seeds.

Simulate a whole production period in one call and split it by day afterwards: separate calls
per day would draw separate compromise windows each day, which no terminal-risk feature could
follow.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Iterator

import numpy as np
import pandas as pd

from fraud import schema
from fraud.regimes import MIMICRY_SCENARIO, Regime
from fraud.simulator import (
    GRID_SIZE,
    SECONDS_PER_DAY,
    Population,
    SimulatorConfig,
    _draw_genuine,
    generate_population,
)

# spawn_key namespaces of the streams derived from the base's seed (and the optional seed).
_PERIOD_STREAMS = 1
_NEW_TERMINAL_PLACEMENT = 2


def simulate_continuation(
    base: SimulatorConfig,
    start_day: int,
    n_days: int,
    regime: Regime | None = None,
    seed: int | None = None,
    *,
    first_transaction_id: int | None = None,
) -> pd.DataFrame:
    """Transactions of `base`'s population on days start_day .. start_day + n_days - 1.

    Same columns and dtypes as `simulate` (TX_FRAUD and TX_FRAUD_SCENARIO included; a regime's
    mimicking frauds are scenario 4), sorted by time. `regime` changes the world from its onset
    day (None: no drift). `seed` draws another continuation of the same period (the benchmark's
    seeds); `first_transaction_id` overrides the ids' start (default: right after the base's).
    """
    if start_day < 0:
        raise ValueError(f"start_day must be >= 0 (days since base.start_date), got {start_day}")
    if n_days < 1:
        raise ValueError(f"n_days must be >= 1, got {n_days}")
    if first_transaction_id is not None and first_transaction_id < 0:
        raise ValueError(f"first_transaction_id must be >= 0, got {first_transaction_id}")
    state = _base_state(base.model_dump_json())
    pop = state.population
    if first_transaction_id is None:
        first_transaction_id = base.first_transaction_id + state.n_transactions

    entropy = [base.seed] if seed is None else [base.seed, seed]
    period = np.random.SeedSequence(entropy, spawn_key=(_PERIOD_STREAMS, start_day))
    genuine_rng, terminals_rng, customers_rng, mimicry_rng, moves_rng = (
        np.random.default_rng(s) for s in period.spawn(5)
    )

    # The base's genuine process over the new dates; the base's own new terminals (if any) open
    # on their day of the base's timeline.
    period_cfg = base.model_copy(
        update={
            "n_days": n_days,
            "start_date": base.start_date + dt.timedelta(days=start_day),
            "first_transaction_id": 0,
        }
    )
    period_pop = dataclasses.replace(pop, terminal_open_day=pop.terminal_open_day - start_day)
    tx = _draw_genuine(period_cfg, period_pop, genuine_rng)
    day = tx["TX_TIME_DAYS"].to_numpy() + start_day
    amount = tx[schema.TX_AMOUNT].to_numpy().copy()
    terminal = tx[schema.TERMINAL_ID].to_numpy().copy()
    customer = tx[schema.CUSTOMER_ID].to_numpy()

    if regime is not None:
        w = regime.intensity(day)
        if regime.amount_scale != 1.0:
            amount = np.round(amount * (1.0 + (regime.amount_scale - 1.0) * w), 2)
        if regime.new_terminals:
            placement = np.random.default_rng(
                np.random.SeedSequence(entropy, spawn_key=(_NEW_TERMINAL_PLACEMENT,))
            )
            offsets, reachable = _new_terminals_by_customer(
                pop, regime.new_terminals, base.radius, placement
            )
            move = moves_rng.random(len(tx)) < regime.new_terminal_share * w
            pick = moves_rng.random(len(tx))
            c = customer[move]
            lens = offsets[c + 1] - offsets[c]
            chosen = reachable[
                offsets[c] + np.minimum((pick[move] * lens).astype(np.int64), lens - 1)
            ]
            terminal[move] = pop.terminal_xy.shape[0] + chosen

    fraud, scenario = _inject_frauds(
        base,
        regime,
        start_day,
        n_days,
        day,
        customer,
        terminal,
        amount,
        n_terminals=pop.terminal_xy.shape[0],
        base_compromised_terminals=state.compromised_terminals,
        rngs=(terminals_rng, customers_rng, mimicry_rng),
    )
    out = tx.drop(columns=["TX_TIME_DAYS"])
    out[schema.TRANSACTION_ID] = np.arange(len(out), dtype=np.int64) + first_transaction_id
    out[schema.TERMINAL_ID] = terminal
    out[schema.TX_AMOUNT] = amount
    out[schema.TX_FRAUD] = fraud
    out[schema.TX_FRAUD_SCENARIO] = scenario
    return schema.finalize_types(out)


def base_transaction_count(base: SimulatorConfig) -> int:
    """len(simulate(base)), without simulating the base's transactions (cached per config)."""
    return _base_state(base.model_dump_json()).n_transactions


def base_population(base: SimulatorConfig) -> Population:
    """The customer and terminal profiles of `simulate(base)` (cached per config; do not
    modify the arrays)."""
    return _base_state(base.model_dump_json()).population


@dataclasses.dataclass(frozen=True)
class _BaseState:
    """What a continuation takes from `simulate(base)`."""

    population: Population
    n_transactions: int
    #: The terminals simulate(base) compromises on each of its days (scenario 2), one row a day.
    compromised_terminals: np.ndarray


@functools.lru_cache(maxsize=4)
def _base_state(base_json: str) -> _BaseState:
    base = SimulatorConfig.model_validate_json(base_json)
    rng = np.random.default_rng(base.seed)
    pop = generate_population(base, rng)
    if base.new_terminals.count:
        # Transactions at terminals not open yet are dropped and re-drawn: only the whole draw
        # tells how many remain and where the stream stands after it.
        n_transactions = len(_draw_genuine(base, pop, rng))
    else:
        n_transactions = _replay_genuine_draws(base, pop, rng)
    # simulate's scenario 2 draws next, and its choices do not depend on the transactions.
    s2 = base.scenarios.compromised_terminals
    n_t = pop.terminal_xy.shape[0]
    per_day = min(s2.per_day, n_t) if s2.enabled else 0
    chosen = np.zeros((base.n_days, per_day), dtype=np.int64)
    if per_day:
        for day in range(base.n_days):
            chosen[day] = rng.choice(n_t, size=per_day, replace=False)
    return _BaseState(pop, n_transactions, chosen)


def _replay_genuine_draws(base: SimulatorConfig, pop: Population, rng: np.random.Generator) -> int:
    """Advance `rng` through simulate's genuine draws (simulator._draw_genuine, for a base without
    new terminals) without building the frame; returns the number of transactions it keeps.
    test_simulator_continuation checks both against simulate(cfg)."""
    counts = rng.poisson(pop.customer_mean_nb_tx[:, None], size=(base.n_customers, base.n_days))
    counts[np.diff(pop.available_offsets) == 0, :] = 0
    cust = np.repeat(np.arange(base.n_customers), counts.sum(axis=1))
    seconds = np.rint(rng.normal(SECONDS_PER_DAY / 2, 20_000, size=cust.size))
    amount = rng.normal(pop.customer_mean_amount[cust], pop.customer_std_amount[cust])
    negative = amount < 0
    rng.uniform(0, pop.customer_mean_amount[cust[negative]] * 2)
    rng.random(cust.size)  # the terminal picks
    return int(((seconds > 0) & (seconds < SECONDS_PER_DAY)).sum())


def _new_terminals_by_customer(
    pop: Population, count: int, radius: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """CSR lists of each customer's new terminals: those within the radius, else the nearest
    (index into the new population, 0 .. count - 1)."""
    from scipy.spatial import cKDTree  # imported when used: it is slow to load

    tree = cKDTree(rng.uniform(0, GRID_SIZE, size=(count, 2)))
    within = tree.query_ball_point(pop.customer_xy, r=radius, return_sorted=True)
    _, nearest = tree.query(pop.customer_xy)
    lists = [np.asarray(n if n else [nearest[i]], dtype=np.int64) for i, n in enumerate(within)]
    lengths = np.fromiter((len(n) for n in lists), dtype=np.int64, count=len(lists))
    return np.concatenate([[0], np.cumsum(lengths)]), np.concatenate(lists)


def _daily_counts(rates: np.ndarray) -> np.ndarray:
    """Whole numbers of compromises per day whose running total follows the running total of
    `rates` (a constant whole rate gives itself every day)."""
    totals = np.floor(np.cumsum(rates) + 1e-9).astype(np.int64)
    return np.diff(np.concatenate([[0], totals]))


def _start_days(start_day: int, days: int, n_days: int) -> np.ndarray:
    """The absolute start days of the compromise windows that reach the period: from
    `days - 1` days before it (windows already open on its first day) to its last day."""
    return start_day + np.arange(1 - days, n_days)


def _counts(start_days: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """`_daily_counts` of the rates per start day; none before the base's day 0."""
    return _daily_counts(np.where(start_days >= 0, rates, 0.0))


def _windows(
    counts: np.ndarray,
    population: np.ndarray,
    days: int,
    last_day: int,
    bounds: np.ndarray,
    rng: np.random.Generator,
    given: list[np.ndarray | None] | None = None,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """For each start day of `_start_days` (`counts` and `population` are per start day), the
    compromised units and the row range [lo, hi) of the window [start, start + days), cut at
    last_day (exclusive, relative to the period) and to the period. `given[i]`, where not None,
    are start day i's units, drawn by the base."""
    n_days = len(bounds) - 1
    for i, (k, n) in enumerate(zip(counts, population, strict=True)):
        start = 1 - days + i
        known = None if given is None else given[i]
        chosen = rng.choice(n, size=min(int(k), int(n)), replace=False) if known is None else known
        lo = bounds[min(max(start, 0), n_days)]
        hi = bounds[min(max(min(start + days, last_day), 0), n_days)]
        yield lo, hi, chosen


def _customer_frauds(
    counts: np.ndarray,
    days: int,
    fraction: float,
    customer: np.ndarray,
    n_customers: int,
    bounds: np.ndarray,
    rng: np.random.Generator,
    skip_frauds: np.ndarray | None = None,
) -> Iterator[np.ndarray]:
    """For each compromise window of customers, a `fraction` of the compromised customers' rows
    in it (the handbook's scenario 3 draw); rows already labelled in `skip_frauds` (read as the
    caller updates it) are left out."""
    population = np.full(len(counts), n_customers)
    for lo, hi, chosen in _windows(counts, population, days, len(bounds) - 1, bounds, rng):
        rows = lo + np.flatnonzero(np.isin(customer[lo:hi], chosen))
        if skip_frauds is not None:
            rows = rows[skip_frauds[rows] == 0]
        k = int(len(rows) * fraction)
        if k:
            yield rng.choice(rows, size=k, replace=False)


def _inject_frauds(
    base: SimulatorConfig,
    regime: Regime | None,
    start_day: int,
    n_days: int,
    day: np.ndarray,
    customer: np.ndarray,
    terminal: np.ndarray,
    amount: np.ndarray,
    *,
    n_terminals: int,
    base_compromised_terminals: np.ndarray,
    rngs: tuple[np.random.Generator, np.random.Generator, np.random.Generator],
) -> tuple[np.ndarray, np.ndarray]:
    """The base's scenarios 1-3 under the regime, and the regime's mimicking frauds (scenario
    4); multiplies compromised customers' amounts in place. Returns TX_FRAUD, TX_FRAUD_SCENARIO.

    Compromised-terminal windows that started on the base's days are the base's own (its
    terminal-risk history goes on); the other windows, customers' included, are drawn here."""
    terminals_rng, customers_rng, mimicry_rng = rngs
    fraud = np.zeros(len(day), dtype=np.int8)
    scenario = np.zeros(len(day), dtype=np.int8)
    bounds = np.searchsorted(day - start_day, np.arange(n_days + 1), side="left")
    sc = base.scenarios
    # Without a regime: its default fields at intensity 0 every day, i.e. the base's scenarios.
    r = regime if regime is not None else Regime(onset_day=0)
    level = regime.intensity if regime is not None else (lambda d: np.zeros(np.shape(d)))

    def rate_scale(days: np.ndarray) -> np.ndarray:
        return 1.0 + (r.fraud_rate_scale - 1.0) * level(days)

    if sc.large_amount.enabled:
        threshold = np.full(len(day), sc.large_amount.threshold)
        if r.large_amount_threshold is not None:
            threshold += (r.large_amount_threshold - threshold) * level(day)
        large = amount > threshold
        fraud[large], scenario[large] = 1, 1

    s2 = sc.compromised_terminals
    if s2.enabled and s2.per_day:
        starts = _start_days(start_day, s2.days, n_days)
        new = np.where(level(starts) > 0, r.new_terminals, 0)
        # As many compromises per terminal as before: the fraud rate stays the base's.
        rates = s2.per_day * rate_scale(starts) * (n_terminals + new) / n_terminals
        last_day = n_days
        if r.stop_compromised_terminals:
            rates = rates * (1.0 - level(starts))
            last_day = min(n_days, r.full_day - start_day)
        base_days = len(base_compromised_terminals)
        given = [base_compromised_terminals[d] if 0 <= d < base_days else None for d in starts]
        for lo, hi, chosen in _windows(
            _counts(starts, rates),
            n_terminals + new,
            s2.days,
            last_day,
            bounds,
            terminals_rng,
            given,
        ):
            hit = lo + np.flatnonzero(np.isin(terminal[lo:hi], chosen))
            fraud[hit], scenario[hit] = 1, 2

    s3 = sc.compromised_customers
    if s3.enabled and s3.per_day:
        starts = _start_days(start_day, s3.days, n_days)
        counts = _counts(starts, s3.per_day * rate_scale(starts))
        for hit in _customer_frauds(
            counts, s3.days, s3.fraction, customer, base.n_customers, bounds, customers_rng
        ):
            amount[hit] = np.round(amount[hit] * s3.amount_multiplier, 2)
            fraud[hit], scenario[hit] = 1, 3

    m = r.mimicry
    if m.per_day:
        starts = _start_days(start_day, m.days, n_days)
        counts = _counts(starts, m.per_day * level(starts) * rate_scale(starts))
        for hit in _customer_frauds(
            counts, m.days, m.fraction, customer, base.n_customers, bounds, mimicry_rng, fraud
        ):
            fraud[hit], scenario[hit] = 1, MIMICRY_SCENARIO
    return fraud, scenario
