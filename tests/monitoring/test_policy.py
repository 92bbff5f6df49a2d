"""The retraining policy: signals, thresholds, minimum labels, cooldown, consecutive windows,
the reasons it gives, and its persistent state."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydantic import ValidationError

from monitoring.checks import Check
from monitoring.policy import Decision, PolicyState, RetrainPolicy, decide

AS_OF = dt.datetime(2018, 9, 1)


def check(name: str, kind: str = "data", fired: bool = True, statistic: float = 0.3) -> Check:
    return Check(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        method="wasserstein" if kind == "data" else "ap_drop",
        statistic=statistic,
        threshold=0.1,
        fired=fired,
        column=name.split(":")[-1] if kind == "data" else None,
    )


POLICY = RetrainPolicy(min_labelled_frauds=100, cooldown_days=7)


def run(checks: list[Check], policy: RetrainPolicy = POLICY, **kw: object) -> Decision:
    args: dict = {"labelled_frauds": 500, "last_trigger_at": None, "as_of": AS_OF, **kw}
    return decide(checks, policy=policy, **args)


def test_a_fired_signal_with_labels_and_no_cooldown_triggers() -> None:
    d = run([check("drift:TX_AMOUNT"), check("drift:TX_DURING_WEEKEND", fired=False)])
    assert d.trigger and d.signals == ["drift:TX_AMOUNT"]
    assert "drift:TX_AMOUNT on TX_AMOUNT fired: wasserstein = 0.3 (threshold 0.1)" in d.reasons
    assert "500 labelled frauds" in d.reasons[-1] and "no earlier trigger" in d.reasons[-1]


def test_nothing_fired_does_not_trigger_and_says_so() -> None:
    d = run([check("drift:TX_AMOUNT", fired=False)])
    assert not d.trigger and d.streak == 0
    assert d.reasons == [
        "no trigger signal: none of the 1 checks matching " + str(POLICY.trigger_on) + " fired"
    ]


def test_a_check_outside_trigger_on_is_not_a_signal() -> None:
    policy = RetrainPolicy(trigger_on=["performance"], min_labelled_frauds=0)
    d = run([check("drift:TX_AMOUNT")], policy)
    assert not d.trigger
    assert any("does not trigger on it" in r and "drift:TX_AMOUNT" in r for r in d.reasons)
    assert run([check("performance:average_precision", "performance")], policy).trigger


def test_trigger_on_matches_names_by_pattern() -> None:
    policy = RetrainPolicy(trigger_on=["drift:TX_*"], min_labelled_frauds=0)
    assert run([check("drift:TX_AMOUNT")], policy).trigger
    assert not run([check("drift:TERMINAL_ID_RISK_7DAY_WINDOW")], policy).trigger


def test_too_few_labelled_frauds_blocks_and_names_both_numbers() -> None:
    d = run([check("drift:TX_AMOUNT")], labelled_frauds=40)
    assert not d.trigger
    assert (
        "not retraining: only 40 labelled frauds in matured cohorts, the policy requires min_labelled_frauds = 100"
        in d.reasons
    )
    assert d.reasons[0].startswith("drift:TX_AMOUNT on TX_AMOUNT fired")


def test_cooldown_blocks_until_it_ends_by_as_of() -> None:
    last = AS_OF - dt.timedelta(days=3)
    d = run([check("drift:TX_AMOUNT")], last_trigger_at=last)
    assert not d.trigger
    assert any(
        "cooldown until 2018-09-05T00:00:00" in r and "last trigger at 2018-08-29" in r
        for r in d.reasons
    )
    after = run([check("drift:TX_AMOUNT")], last_trigger_at=AS_OF - dt.timedelta(days=7))
    assert after.trigger
    assert "beyond the 7-day cooldown" in after.reasons[-1]


def test_min_data_drifted_needs_several_data_checks_but_not_for_other_kinds() -> None:
    policy = RetrainPolicy(min_data_drifted=2, min_labelled_frauds=0)
    one = run([check("drift:TX_AMOUNT")], policy)
    assert not one.trigger and any("fewer than min_data_drifted = 2" in r for r in one.reasons)
    assert run([check("drift:TX_AMOUNT"), check("drift:TX_DURING_NIGHT")], policy).trigger
    assert run(
        [check("drift:TX_AMOUNT"), check("performance:recall", "performance")], policy
    ).signals == ["performance:recall"]


def test_consecutive_windows_need_a_streak() -> None:
    policy = RetrainPolicy(consecutive_windows=3, min_labelled_frauds=0)
    signal = [check("drift:TX_AMOUNT")]
    first = run(signal, policy, streak=0)
    assert not first.trigger and first.streak == 1
    assert any(
        "signals in 1 consecutive window(s), the policy requires consecutive_windows = 3" in r
        for r in first.reasons
    )
    assert not run(signal, policy, streak=1).trigger
    third = run(signal, policy, streak=2)
    assert third.trigger and third.streak == 3


def test_state_carries_the_streak_and_the_trigger_between_runs(tmp_path: Path) -> None:
    policy = RetrainPolicy(consecutive_windows=2, min_labelled_frauds=0, cooldown_days=7)
    path = tmp_path / "policy_state.json"
    signal = [check("drift:TX_AMOUNT")]
    decisions = []
    for day in range(4):
        as_of = AS_OF + dt.timedelta(days=day)
        state = PolicyState.read(path)
        d = decide(
            signal if day != 2 else [],  # a day without drift breaks the streak
            labelled_frauds=0,
            last_trigger_at=state.last_trigger_at,
            as_of=as_of,
            policy=policy,
            streak=state.streak_before(as_of),
        )
        state.after(d, as_of).write(path)
        decisions.append(d.trigger)
    assert decisions == [False, True, False, False]  # day 3: streak 1 again, and in cooldown
    state = PolicyState.read(path)
    assert state.last_trigger_at == AS_OF + dt.timedelta(days=1)
    assert state.streak == 1


def test_rerunning_the_same_as_of_does_not_count_the_window_twice() -> None:
    state = PolicyState(last_as_of=AS_OF, streak=2, previous_streak=1)
    assert state.streak_before(AS_OF) == 1
    assert state.streak_before(AS_OF + dt.timedelta(days=1)) == 2
    with pytest.raises(ValueError, match="fresh policy state"):
        state.streak_before(AS_OF - dt.timedelta(days=1))


def test_state_file_missing_is_fresh_and_a_corrupt_one_names_the_path(tmp_path: Path) -> None:
    assert PolicyState.read(tmp_path / "none.json") == PolicyState()
    bad = tmp_path / "state.json"
    bad.write_text('{"last_trigger": "2018-09-01"}')
    with pytest.raises(ValueError, match=r"state\.json"):
        PolicyState.read(bad)


def test_policy_is_strict_and_names_the_bad_key() -> None:
    with pytest.raises(ValidationError, match="cooldown"):
        RetrainPolicy(cooldown=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="consecutive_windows"):
        RetrainPolicy(consecutive_windows=0)
    with pytest.raises(ValueError, match="labelled_frauds"):
        run([check("drift:TX_AMOUNT")], labelled_frauds=-1)
