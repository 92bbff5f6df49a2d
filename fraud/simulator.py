"""A seeded transaction simulator following the Fraud Detection Handbook.

Le Borgne et al., "Reproducible Machine Learning for Credit Card Fraud Detection - Practical
Handbook", chapter 3: customers and terminals are placed on a 100x100 grid; a customer uses the
terminals within a radius; each day a customer makes Poisson(mean_nb_tx_per_day) transactions
with normally distributed times and amounts; three fraud scenarios are then injected.

The handbook's reference code loops over customers and days in Python (minutes for 1.75M rows);
this one draws everything with vectorised numpy from one `numpy.random.Generator`, so it is
deterministic per seed and takes seconds. Its statistics follow the handbook's process; it does
not reproduce the handbook's exact rows (a different random stream).

Everything is a parameter (`SimulatorConfig`), so that monitoring can simulate drifted regimes:
scaled amounts or rates, a population of new terminals, and changed or new fraud scenarios. To
continue a simulated population into later days (the same customers and terminals, production
after the training data) with a drift regime that starts on a known day, see
`fraud/continuation.py` and `fraud/regimes.py`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from fraud import schema

SECONDS_PER_DAY = 86_400
GRID_SIZE = 100.0


class LargeAmountScenario(BaseModel):
    """Scenario 1: every transaction above `threshold` is a fraud."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    threshold: float = Field(220.0, gt=0)


class CompromisedTerminalScenario(BaseModel):
    """Scenario 2: each day `per_day` terminals are compromised; all their transactions in the
    next `days` days are frauds (phishing / skimming of a terminal)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    per_day: int = Field(2, ge=0)
    days: int = Field(28, ge=1)


class CompromisedCustomerScenario(BaseModel):
    """Scenario 3: each day `per_day` customers are compromised; in the next `days` days a
    `fraction` of their transactions get `amount_multiplier` times their amount and are frauds
    (card-not-present fraud with leaked credentials)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    per_day: int = Field(3, ge=0)
    days: int = Field(14, ge=1)
    fraction: float = Field(1 / 3, ge=0, le=1)
    amount_multiplier: float = Field(5.0, gt=0)


class FraudScenarios(BaseModel):
    model_config = ConfigDict(extra="forbid")
    large_amount: LargeAmountScenario = LargeAmountScenario()
    compromised_terminals: CompromisedTerminalScenario = CompromisedTerminalScenario()
    compromised_customers: CompromisedCustomerScenario = CompromisedCustomerScenario()


class NewTerminals(BaseModel):
    """A population of terminals that opens on `from_day` (a drifted regime)."""

    model_config = ConfigDict(extra="forbid")
    count: int = Field(0, ge=0)
    from_day: int = Field(0, ge=0)


class SimulatorConfig(BaseModel):
    """Every parameter of the simulator (params.yaml `simulator:`); defaults are the handbook's."""

    model_config = ConfigDict(extra="forbid")
    seed: int = 42
    n_customers: int = Field(5_000, ge=1)
    n_terminals: int = Field(10_000, ge=1)
    n_days: int = Field(183, ge=1)
    start_date: dt.date = dt.date(2018, 4, 1)
    radius: float = Field(5.0, gt=0)
    #: Multiplies every customer's mean and std amount (amount drift).
    amount_scale: float = Field(1.0, gt=0)
    #: Multiplies every customer's mean number of transactions per day (volume drift).
    tx_rate_scale: float = Field(1.0, gt=0)
    new_terminals: NewTerminals = NewTerminals()
    scenarios: FraudScenarios = FraudScenarios()
    #: Continue an existing population: transaction ids start here (drifted regimes appended to a
    #: base period keep unique ids).
    first_transaction_id: int = Field(0, ge=0)


@dataclass
class Population:
    """Customer and terminal profiles (the handbook's profile tables, as arrays)."""

    customer_xy: np.ndarray
    customer_mean_amount: np.ndarray
    customer_std_amount: np.ndarray
    customer_mean_nb_tx: np.ndarray
    terminal_xy: np.ndarray
    terminal_open_day: np.ndarray
    #: CSR lists of the terminals within the radius of each customer.
    available_offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    available_terminals: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def generate_population(cfg: SimulatorConfig, rng: np.random.Generator) -> Population:
    """Draw customer and terminal profiles and each customer's reachable terminals."""
    from scipy.spatial import cKDTree  # imported when used: it is slow to load

    n_c, n_t = cfg.n_customers, cfg.n_terminals + cfg.new_terminals.count
    customer_xy = rng.uniform(0, GRID_SIZE, size=(n_c, 2))
    mean_amount = rng.uniform(5, 100, size=n_c) * cfg.amount_scale
    std_amount = mean_amount / 2
    mean_nb_tx = rng.uniform(0, 4, size=n_c) * cfg.tx_rate_scale
    terminal_xy = rng.uniform(0, GRID_SIZE, size=(n_t, 2))
    open_day = np.zeros(n_t, dtype=np.int64)
    open_day[cfg.n_terminals :] = cfg.new_terminals.from_day

    tree = cKDTree(terminal_xy)
    neighbours = tree.query_ball_point(customer_xy, r=cfg.radius, return_sorted=True)
    lengths = np.fromiter((len(n) for n in neighbours), dtype=np.int64, count=n_c)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = (
        np.concatenate([np.asarray(n, dtype=np.int64) for n in neighbours])
        if offsets[-1]
        else np.zeros(0, dtype=np.int64)
    )
    return Population(
        customer_xy, mean_amount, std_amount, mean_nb_tx, terminal_xy, open_day, offsets, flat
    )


def _draw_genuine(cfg: SimulatorConfig, pop: Population, rng: np.random.Generator) -> pd.DataFrame:
    n_c, n_days = cfg.n_customers, cfg.n_days
    lengths = np.diff(pop.available_offsets)
    counts = rng.poisson(pop.customer_mean_nb_tx[:, None], size=(n_c, n_days))
    counts[lengths == 0, :] = 0  # the handbook: no reachable terminal, no transaction
    flat_counts = counts.ravel()
    cust = np.repeat(np.repeat(np.arange(n_c), n_days), flat_counts)
    day = np.repeat(np.tile(np.arange(n_days), n_c), flat_counts)

    seconds = np.rint(rng.normal(SECONDS_PER_DAY / 2, 20_000, size=cust.size)).astype(np.int64)
    amount = rng.normal(pop.customer_mean_amount[cust], pop.customer_std_amount[cust])
    negative = amount < 0
    amount[negative] = rng.uniform(0, pop.customer_mean_amount[cust[negative]] * 2)
    amount = np.round(amount, 2)

    # Uniform choice among the terminals within the radius that are open on that day.
    pick = rng.random(cust.size)
    starts, lens = pop.available_offsets[cust], lengths[cust]
    terminal = pop.available_terminals[
        starts + np.minimum((pick * lens).astype(np.int64), lens - 1)
    ]
    if cfg.new_terminals.count:
        closed = pop.terminal_open_day[terminal] > day
        # Re-draw among the customer's reachable terminals (up to 8 times); transactions still
        # at a terminal that is not open yet are dropped.
        for _ in range(8):
            if not closed.any():
                break
            redraw = rng.random(int(closed.sum()))
            c = cust[closed]
            terminal[closed] = pop.available_terminals[
                pop.available_offsets[c]
                + np.minimum((redraw * lengths[c]).astype(np.int64), lengths[c] - 1)
            ]
            closed = pop.terminal_open_day[terminal] > day
        keep_open = ~closed
        cust, day, seconds, amount, terminal = (
            a[keep_open] for a in (cust, day, seconds, amount, terminal)
        )

    inside_day = (seconds > 0) & (seconds < SECONDS_PER_DAY)  # the handbook drops the rest
    cust, day, seconds, terminal = (a[inside_day] for a in (cust, day, seconds, terminal))
    amount = amount[inside_day]
    tx_seconds = day * SECONDS_PER_DAY + seconds
    order = np.lexsort((terminal, cust, tx_seconds))
    start = np.datetime64(cfg.start_date, "s")
    return pd.DataFrame(
        {
            schema.TRANSACTION_ID: np.arange(order.size, dtype=np.int64) + cfg.first_transaction_id,
            schema.TX_DATETIME: (start + tx_seconds[order].astype("timedelta64[s]")).astype(
                "datetime64[ns]"
            ),
            schema.CUSTOMER_ID: cust[order].astype(np.int64),
            schema.TERMINAL_ID: terminal[order].astype(np.int64),
            schema.TX_AMOUNT: amount[order],
            "TX_TIME_DAYS": day[order],
        }
    )


def _inject_frauds(
    cfg: SimulatorConfig, tx: pd.DataFrame, pop: Population, rng: np.random.Generator
) -> pd.DataFrame:
    n = len(tx)
    fraud = np.zeros(n, dtype=np.int8)
    scenario = np.zeros(n, dtype=np.int8)
    amount = tx[schema.TX_AMOUNT].to_numpy().copy()
    days = tx["TX_TIME_DAYS"].to_numpy()  # sorted: transactions are in time order
    day_bounds = np.searchsorted(days, np.arange(cfg.n_days + 1), side="left")
    sc = cfg.scenarios

    if sc.large_amount.enabled:
        hit = amount > sc.large_amount.threshold
        fraud[hit], scenario[hit] = 1, 1

    if sc.compromised_terminals.enabled and sc.compromised_terminals.per_day:
        s2 = sc.compromised_terminals
        n_t = pop.terminal_xy.shape[0]
        # compromised_until[t]: last day (exclusive) a terminal is compromised, per start day.
        terminals = tx[schema.TERMINAL_ID].to_numpy()
        for start_day in range(cfg.n_days):
            chosen = rng.choice(n_t, size=min(s2.per_day, n_t), replace=False)
            lo, hi = day_bounds[start_day], day_bounds[min(start_day + s2.days, cfg.n_days)]
            hit = lo + np.flatnonzero(np.isin(terminals[lo:hi], chosen))
            fraud[hit], scenario[hit] = 1, 2

    if sc.compromised_customers.enabled and sc.compromised_customers.per_day:
        s3 = sc.compromised_customers
        customers = tx[schema.CUSTOMER_ID].to_numpy()
        for start_day in range(cfg.n_days):
            chosen = rng.choice(
                cfg.n_customers, size=min(s3.per_day, cfg.n_customers), replace=False
            )
            lo, hi = day_bounds[start_day], day_bounds[min(start_day + s3.days, cfg.n_days)]
            candidates = lo + np.flatnonzero(np.isin(customers[lo:hi], chosen))
            k = int(len(candidates) * s3.fraction)
            if k:
                hit = rng.choice(candidates, size=k, replace=False)
                amount[hit] = np.round(amount[hit] * s3.amount_multiplier, 2)
                fraud[hit], scenario[hit] = 1, 3

    out = tx.drop(columns=["TX_TIME_DAYS"])
    out[schema.TX_AMOUNT] = amount
    out[schema.TX_FRAUD] = fraud
    out[schema.TX_FRAUD_SCENARIO] = scenario
    return out


def simulate(cfg: SimulatorConfig | None = None) -> pd.DataFrame:
    """Simulate labelled transactions in the contract's schema, sorted by time.

    Deterministic for a given config (the seed is part of it).
    """
    cfg = cfg or SimulatorConfig()
    rng = np.random.default_rng(cfg.seed)
    pop = generate_population(cfg, rng)
    tx = _draw_genuine(cfg, pop, rng)
    return schema.finalize_types(_inject_frauds(cfg, tx, pop, rng))
