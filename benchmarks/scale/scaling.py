"""How a scale factor changes the simulator's params: `factor` times the rows, at the same
density of customers and terminals, the split windows kept where they are.

A factor f is split between more days and more entities: days x f**days_exponent (0.5 by
default, so 16x is 4x the days and 4x the customers and terminals; 0 keeps the days fixed and
puts all of f into entities). Rows grow with customers x days, so they grow about f-fold.

"Same density": the simulator's grid is fixed at 100x100 (fraud.simulator.GRID_SIZE). A grid
sqrt(c) times wider with the same radius is the same geometry as the fixed grid with the radius
divided by sqrt(c) (scale every coordinate by 1/sqrt(c)): so the radius shrinks instead, and a
customer still reaches about as many terminals (78.5 on average) as at 1x. The fraud scenarios
that pick entities per day (compromised terminals and customers) pick c times as many, so the
fraud rate stays the same.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any


class ScaleError(ValueError):
    """A factor or the base params cannot give a valid scaled project."""


@dataclass(frozen=True)
class ScaledSimulator:
    """The simulator's size at one factor, and what the factor became."""

    factor: float
    days_factor: float
    entity_factor: float
    params: dict[str, Any]  # the new `simulator:` section

    def describe(self) -> str:
        p = self.params
        return (
            f"{p['n_customers']:,} customers, {p['n_terminals']:,} terminals, "
            f"{p['n_days']} days, radius {p['radius']:.3g}"
        )


def scale_simulator(base: dict[str, Any], factor: float, days_exponent: float) -> ScaledSimulator:
    """The `simulator:` section of params.yaml scaled by `factor` (see the module docstring).

    Factors below 1 (a quick smoke run) keep the days and shrink only the population.
    """
    if not factor > 0:
        raise ScaleError(f"--factors: {factor} must be > 0")
    if not 0 <= days_exponent <= 1:
        raise ScaleError(f"--days-exponent: {days_exponent} must be within [0, 1]")
    n_days0 = int(base["n_days"])
    n_days = max(1, round(n_days0 * factor**days_exponent)) if factor > 1 else n_days0
    days_factor = n_days / n_days0
    c = factor / days_factor
    out = dict(base)
    out["n_customers"] = max(1, round(int(base["n_customers"]) * c))
    out["n_terminals"] = max(1, round(int(base["n_terminals"]) * c))
    out["n_days"] = n_days
    out["radius"] = float(base["radius"]) / math.sqrt(c)
    scenarios = {k: dict(v) for k, v in base.get("scenarios", {}).items()}
    for name in ("compromised_terminals", "compromised_customers"):
        if name in scenarios and "per_day" in scenarios[name]:
            scenarios[name]["per_day"] = max(1, round(int(scenarios[name]["per_day"]) * c))
    out["scenarios"] = scenarios
    return ScaledSimulator(factor, days_factor, c, out)


def check_split_inside(params: dict[str, Any]) -> None:
    """Raise ScaleError unless the split's and the prequential folds' windows lie inside the
    simulated days (the stages would fail later with a less direct message)."""
    sim = params["simulator"]
    start = dt.date.fromisoformat(str(sim["start_date"]))
    end = start + dt.timedelta(days=int(sim["n_days"]))
    sp = params["split"]
    split_end = dt.date.fromisoformat(str(sp["train_start"])) + dt.timedelta(
        days=int(sp["train_days"]) + int(sp["delay_days"]) + int(sp["test_days"])
    )
    pq = params["evaluate"]["prequential"]
    pq_end = dt.date.fromisoformat(str(pq["last_train_start"])) + dt.timedelta(
        days=int(pq["train_days"]) + int(pq["delay_days"]) + int(pq["test_days"])
    )
    for name, last in (("split", split_end), ("evaluate.prequential", pq_end)):
        if last > end:
            raise ScaleError(
                f"{name}: its windows end on {last}, after the simulated data "
                f"({start} + {sim['n_days']} days): use a larger factor or --days-exponent"
            )
