"""The retraining policy: which fired checks start a retraining, and when not to.

A check is a *signal* when its kind or name matches one of `trigger_on` (shell-style patterns:
"performance", "estimate:ap_gap", "drift:TX_*"). Retraining is triggered when there is a signal
(data checks count only when at least `min_data_drifted` of them fired) in `consecutive_windows`
windows in a row, the matured cohorts hold at least `min_labelled_frauds` labelled frauds (a
model retrained on fewer would learn nothing), and the last trigger is older than the cooldown
(by `as_of`, i.e. transaction time, so a replay behaves as production would). Every reason is a
sentence naming the check, its statistic and threshold, or the rule that held it back.

`PolicyState` is what the policy remembers between runs (the last trigger, the streak of
windows with a signal), as a small JSON file beside the verdicts. A run at the same `as_of` as
the last one (a rerun after a crash, or by hand) decides from the state *before* that run, so
it decides as that run did: a trigger is not held back by its own cooldown, and the retraining
request it makes again carries the same idempotency key (`monitoring.flows`), which Prefect
answers with the run it already started instead of a second one.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from monitoring.checks import Check
from monitoring.verdict import describe_check, write_text_atomic


class RetrainPolicy(BaseModel):
    """When a monitoring run triggers retraining (params.yaml `monitor.retrain`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Patterns matched against each fired check's kind and name.
    trigger_on: list[str] = Field(
        default_factory=lambda: [
            "data",
            "prediction",
            "performance",
            "estimate:ap_gap",
            "estimate:recall_gap",
        ],
        min_length=1,
    )
    #: Data-drift checks are a signal only when at least this many fired (one feature of 23
    #: drifting alone is more often noise than a new regime).
    min_data_drifted: int = Field(default=1, ge=1)
    #: Labelled frauds in matured cohorts needed before retraining makes sense.
    min_labelled_frauds: int = Field(default=100, ge=0)
    #: Days (of as_of) after a trigger during which no new trigger fires.
    cooldown_days: float = Field(default=7.0, ge=0)
    #: Windows in a row with a signal before a trigger (1: the first one triggers).
    consecutive_windows: int = Field(default=1, ge=1)


@dataclass(frozen=True)
class Decision:
    """Whether to retrain, and why (also why not)."""

    trigger: bool
    reasons: list[str]
    signals: list[str] = field(default_factory=list)  # names of the checks that were signals
    streak: int = 0  # windows in a row with a signal, this one included


def _matches(check: Check, patterns: list[str]) -> bool:
    return any(
        fnmatch.fnmatchcase(check.kind, p) or fnmatch.fnmatchcase(check.name, p) for p in patterns
    )


def _signals(checks: list[Check], policy: RetrainPolicy) -> tuple[list[Check], list[str]]:
    """The fired checks that count as signals, and sentences about the fired ones that don't."""
    fired = [c for c in checks if c.fired]
    eligible = [c for c in fired if _matches(c, policy.trigger_on)]
    notes = [
        f"{describe_check(c)}, but the policy does not trigger on it (trigger_on: "
        f"{policy.trigger_on})"
        for c in fired
        if c not in eligible
    ]
    data = [c for c in eligible if c.kind == "data"]
    if data and len(data) < policy.min_data_drifted:
        names = ", ".join(c.name for c in data)
        notes.append(
            f"{len(data)} data check(s) fired ({names}), fewer than min_data_drifted = "
            f"{policy.min_data_drifted}: not a signal"
        )
        eligible = [c for c in eligible if c.kind != "data"]
    return eligible, notes


def decide(
    checks: Iterable[Check],
    *,
    labelled_frauds: int,
    last_trigger_at: dt.datetime | None,
    as_of: dt.datetime,
    policy: RetrainPolicy,
    streak: int = 0,
) -> Decision:
    """Apply `policy` to one run's checks at `as_of`.

    `streak`: the windows in a row before this one that had a signal (`PolicyState` keeps it).
    """
    if labelled_frauds < 0:
        raise ValueError(f"labelled_frauds: must be >= 0, got {labelled_frauds}")
    checks = list(checks)
    signals, reasons = _signals(checks, policy)
    if not signals:
        reasons.insert(
            0,
            f"no trigger signal: none of the {len(checks)} checks matching "
            f"{policy.trigger_on} fired",
        )
        return Decision(False, reasons, [], 0)
    reasons = [describe_check(c) for c in signals] + reasons
    new_streak = streak + 1
    blocked = []
    if new_streak < policy.consecutive_windows:
        blocked.append(
            f"signals in {new_streak} consecutive window(s), the policy requires "
            f"consecutive_windows = {policy.consecutive_windows}"
        )
    if labelled_frauds < policy.min_labelled_frauds:
        blocked.append(
            f"only {labelled_frauds} labelled frauds in matured cohorts, the policy requires "
            f"min_labelled_frauds = {policy.min_labelled_frauds}"
        )
    if last_trigger_at is not None:
        until = last_trigger_at + dt.timedelta(days=policy.cooldown_days)
        if as_of < until:
            blocked.append(
                f"cooldown until {until.isoformat()} (last trigger at "
                f"{last_trigger_at.isoformat()}, cooldown_days = {policy.cooldown_days:g})"
            )
    if blocked:
        return Decision(
            False,
            [*reasons, *(f"not retraining: {b}" for b in blocked)],
            [c.name for c in signals],
            new_streak,
        )
    reasons.append(
        f"retraining: signals in {new_streak} consecutive window(s) (required "
        f"{policy.consecutive_windows}), {labelled_frauds} labelled frauds (required "
        f"{policy.min_labelled_frauds}), "
        + (
            "no earlier trigger"
            if last_trigger_at is None
            else f"last trigger at {last_trigger_at.isoformat()}, beyond the "
            f"{policy.cooldown_days:g}-day cooldown"
        )
    )
    return Decision(True, reasons, [c.name for c in signals], new_streak)


class PolicyState(BaseModel):
    """What the policy remembers between runs (JSON beside the verdicts)."""

    model_config = ConfigDict(extra="forbid")

    last_trigger_at: dt.datetime | None = None
    #: The as_of of the last run, its streak, and the streak before it (so that running the
    #: same as_of again recomputes instead of counting the window twice).
    last_as_of: dt.datetime | None = None
    streak: int = Field(default=0, ge=0)
    previous_streak: int = Field(default=0, ge=0)
    #: The last trigger before the last run's, for the same reason: a rerun of a run that
    #: triggered must not find itself in its own cooldown.
    previous_trigger_at: dt.datetime | None = None

    def streak_before(self, as_of: dt.datetime) -> int:
        """The streak to pass to `decide` for a run at `as_of`.

        Raises ValueError when `as_of` is before the last run's (replaying from the start
        needs a fresh state).
        """
        if self.last_as_of is None:
            return 0
        if as_of < self.last_as_of:
            raise ValueError(
                f"as_of {as_of.isoformat()} is before the last run's "
                f"({self.last_as_of.isoformat()}): start a replay with a fresh policy state"
            )
        return self.previous_streak if as_of == self.last_as_of else self.streak

    def trigger_before(self, as_of: dt.datetime) -> dt.datetime | None:
        """The last trigger to pass to `decide` for a run at `as_of`: for a rerun of the last
        run's `as_of`, the one before that run (its own trigger is not a cooldown for it)."""
        if self.last_as_of is not None and as_of == self.last_as_of:
            return self.previous_trigger_at
        return self.last_trigger_at

    def after(self, decision: Decision, as_of: dt.datetime) -> PolicyState:
        """The state once the run at `as_of` decided `decision` (a trigger resets the streak)."""
        before = self.trigger_before(as_of)
        return PolicyState(
            last_trigger_at=as_of if decision.trigger else before,
            last_as_of=as_of,
            streak=0 if decision.trigger else decision.streak,
            previous_streak=self.streak_before(as_of),
            previous_trigger_at=before,
        )

    @classmethod
    def read(cls, path: Path) -> PolicyState:
        """The state at `path`; a fresh one when the file does not exist yet."""
        path = Path(path)
        if not path.exists():
            return cls()
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, ValidationError) as e:
            raise ValueError(f"policy state {path}: {e}") from e

    def write(self, path: Path) -> None:
        """Write atomically (a failure leaves the previous state intact)."""
        write_text_atomic(Path(path), self.model_dump_json(indent=2) + "\n")
