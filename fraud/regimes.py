"""Drift regimes: how the simulated world changes after a known day.

A `Regime` is applied by `fraud.continuation.simulate_continuation`, which continues a base
population (the same customers and terminals, later dates). A regime starts on `onset_day` and
reaches full intensity either at once (`ramp_days` 0 or 1: sudden) or linearly over `ramp_days`
days (gradual). Every change is stated at full intensity and scaled by the day's intensity in
[0, 1] (`Regime.intensity`):

* **amounts** (`amount_scale`): every amount multiplied, e.g. prices growing (covariate drift);
* **a new terminal population** (`new_terminals`, `new_terminal_share`): terminals appended after
  the base's, placed on the grid; that share of transactions moves to the customer's new
  terminals (a new shop chain, a new acquirer);
* **the fraud pattern** with stable inputs (concept drift): the compromised-terminal scenario
  stops (`stop_compromised_terminals`), the large-amount rule's threshold moves
  (`large_amount_threshold`), or frauds that mimic their customers' genuine transactions appear
  (`mimicry`: amounts and terminals as usual, only the label differs);
* **the fraud rate** (`fraud_rate_scale`): more or fewer compromises a day (prior shift).

Day numbers, `onset_day` included, are absolute day indexes on the base's timeline: day 0 is the
base's `start_date`, its period is days 0 .. n_days - 1, and a continuation right after it starts
on day `n_days`. So a regime means the same calendar day whichever continuation applies it.

`regime_preset(name, onset_day)` gives the drift benchmark's scenarios (`PRESETS`), tuned for the
default population (5,000 customers, 10,000 terminals).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

#: TX_FRAUD_SCENARIO of a fraud that mimics its customer's genuine transactions (codes 4+ are
#: free for drifted regimes, fraud.schema.SCENARIO_NAMES).
MIMICRY_SCENARIO = 4


class MimicryScenario(BaseModel):
    """Frauds that look like genuine transactions of the same customers: each day `per_day`
    customers are compromised, and in the next `days` days a `fraction` of their genuine
    transactions are frauds with their usual amounts and terminals (account takeover by a
    fraudster who spends like the cardholder). Inputs do not change; only the labels do."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    per_day: float = Field(0.0, ge=0)
    days: int = Field(14, ge=1)
    fraction: float = Field(1 / 3, ge=0, le=1)


class Regime(BaseModel):
    """A change of the simulated world from `onset_day` on (see the module docstring).

    The defaults change nothing: `Regime(onset_day=d)` continues the base population as it was.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: A label for reports and benchmark tables.
    name: str = "custom"
    #: First day of the change, as an absolute day index (0 = the base's start_date).
    onset_day: int = Field(ge=0)
    #: 0 or 1: sudden (full intensity on onset_day); k > 1: intensity rises linearly, 1/k on
    #: onset_day, full on onset_day + k - 1.
    ramp_days: int = Field(0, ge=0)
    #: Multiplies every amount at full intensity (compromised customers' multiplied amounts too).
    amount_scale: float = Field(1.0, gt=0)
    #: The large-amount scenario's threshold at full intensity (None: the base's). Amounts between
    #: the old and the new threshold change label while the amounts themselves do not.
    large_amount_threshold: float | None = Field(None, gt=0)
    #: Number of new terminals, appended after the base's (ids from the base's terminal count).
    #: They can be compromised like the others, and the compromises a day grow with the terminal
    #: count, so the compromised-terminal fraud rate stays the base's.
    new_terminals: int = Field(0, ge=0)
    #: Share of transactions that move to the customer's new terminals at full intensity (those
    #: within the customer's radius, else the nearest new terminal).
    new_terminal_share: float = Field(0.0, ge=0, le=1)
    #: The compromised-terminal scenario stops: new compromises fade with the intensity, and no
    #: compromised-terminal fraud remains once the intensity is full.
    stop_compromised_terminals: bool = False
    #: Frauds that mimic genuine transactions (per_day 0: none), scaled by the intensity.
    mimicry: MimicryScenario = MimicryScenario()
    #: Multiplies the compromises a day of the compromised-terminal, compromised-customer and
    #: mimicry scenarios at full intensity.
    fraud_rate_scale: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _new_terminals_come_with_a_share(self) -> Regime:
        if self.new_terminal_share > 0 and self.new_terminals == 0:
            raise ValueError(
                "new_terminal_share > 0 needs new_terminals > 0 (terminals to move to)"
            )
        if self.new_terminals > 0 and self.new_terminal_share == 0:
            raise ValueError(
                "new_terminals > 0 needs new_terminal_share > 0 (or no customer uses them)"
            )
        return self

    @property
    def full_day(self) -> int:
        """The first day at full intensity."""
        return self.onset_day + max(self.ramp_days, 1) - 1

    def intensity(self, days: np.ndarray | int) -> np.ndarray:
        """The regime's intensity in [0, 1] on each absolute day index: 0 before onset_day, then
        a linear ramp over ramp_days days (a step when sudden)."""
        d = np.asarray(days, dtype=np.float64)
        ramp = max(self.ramp_days, 1)
        return np.clip((d - self.onset_day + 1) / ramp, 0.0, 1.0)


#: What each preset is for (the drift benchmark's scenarios (a)-(e), plus a prior shift).
PRESETS: dict[str, str] = {
    "none": "no drift: the base population continues as it was (its only variation is the "
    "day-to-day noise of the draws and weekend days)",
    "gradual_amount": "amounts grow 30% over 30 days, 1% a day; the large-amount rule follows "
    "them (220 -> 286), so what is fraud stays the same relative to customers' spending",
    "new_terminals": "2,000 new terminals (20% more) open on onset_day and take 25% of the "
    "transactions at once",
    "concept": "the fraud pattern changes on onset_day with the inputs unchanged: the "
    "compromised-terminal scenario stops and the large-amount rule moves from 220 to 180, so "
    "amounts of 180-220 (about 0.5% of transactions) become frauds; about as many frauds as "
    "before, of another kind, which a retrained model can learn",
    "label_only": "frauds that mimic their customers' genuine transactions appear on onset_day "
    "(6 customers a day, a third of their transactions for 14 days: +0.55% fraud rate); inputs "
    "and scores are as before, so only the matured labels show the fall in precision and recall",
    "fraud_rate": "twice as many compromised terminals and customers a day from onset_day "
    "(prior shift)",
}


def regime_preset(name: str, onset_day: int, ramp_days: int | None = None) -> Regime:
    """The named preset (`PRESETS`) starting on `onset_day` (absolute day index).

    `ramp_days` overrides the preset's ramp (e.g. a sudden amount shift, or a gradual concept
    change)."""
    fields: dict[str, dict[str, Any]] = {
        "none": {},
        "gradual_amount": {
            "ramp_days": 30,
            "amount_scale": 1.3,
            "large_amount_threshold": 220.0 * 1.3,
        },
        "new_terminals": {"new_terminals": 2_000, "new_terminal_share": 0.25},
        "concept": {"stop_compromised_terminals": True, "large_amount_threshold": 180.0},
        "label_only": {"mimicry": {"per_day": 6, "days": 14, "fraction": 1 / 3}},
        "fraud_rate": {"fraud_rate_scale": 2.0},
    }
    if name not in fields:
        raise ValueError(f"unknown regime preset {name!r}; the presets are {sorted(PRESETS)}")
    spec = {"name": name, "onset_day": onset_day, **fields[name]}
    if ramp_days is not None:
        spec["ramp_days"] = ramp_days
    return Regime.model_validate(spec)
