"""The figures of the drift benchmark, drawn from the per-batch outcomes of every run.

A run is one (scenario, seed): its monitored days, the onset among them. Figures per scenario
and detector (the dataset drift rule, the verdict's drift_detected, the retraining trigger, and
Evidently's untuned DataDriftPreset on the sampled days):

* false alarms per batch: the share of no-drift batches that fired (days before the onset;
  every day of the no-drift scenario);
* detection rate: the share of runs with a firing on or after the onset;
* delay in batches after the onset, and after the scenario's *reference day* (the day a
  detector can first be expected to see it, `REFERENCE_DAY`): median and 90th percentile
  over the runs that detected (undetected runs count as the horizon + 1 in the percentiles).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DETECTORS = {
    "drift_rule": "drift rule (data + prediction)",
    "verdict_drift": "verdict drift_detected (+ label checks)",
    "trigger": "retraining trigger (policy)",
    "evidently": "Evidently DataDriftPreset (untuned, sampled days)",
}


def reference_offset(scenario: str, maturity_days: int) -> int | None:
    """Days after the onset at which the scenario becomes detectable (None: no drift).

    gradual_amount: the first day at a 5% amount shift (1% a day, 1/30 of +30% on the onset
    day: the 5th day); new_terminals: the onset day; concept and label_only: the first day whose
    as_of sees the onset day's cohort matured (cohort_days 1: onset + maturity_days)."""
    return {
        "none": None,
        "gradual_amount": 4,
        "new_terminals": 0,
        "concept": maturity_days,
        "label_only": maturity_days,
    }[scenario]


@dataclass(frozen=True)
class RunOutcome:
    """One (scenario, seed): per monitored day (relative to the onset) whether each fired."""

    scenario: str
    seed: int
    offsets: list[int]  # each batch's day minus the onset day
    fired: dict[str, list[bool]]  # detector -> per batch (evidently: sampled days only)
    evidently_offsets: list[int]


def _first(offsets: Sequence[int], fired: Sequence[bool], start: int) -> int | None:
    for o, f in zip(offsets, fired, strict=True):
        if o >= start and f:
            return o
    return None


def _pct(x: float | None) -> str:
    return "—" if x is None or np.isnan(x) else f"{x:.1%}"


def _num(x: float | None) -> str:
    return "—" if x is None or np.isnan(x) else f"{x:g}"


def detection_figures(
    runs: Sequence[RunOutcome], scenario: str, detector: str, maturity_days: int
) -> dict[str, Any]:
    """False alarms, detection rate and delays of one detector on one scenario's runs."""
    mine = [r for r in runs if r.scenario == scenario and detector in r.fired]
    ref = reference_offset(scenario, maturity_days)
    quiet = fired_quiet = 0
    delays_onset: list[float] = []
    delays_ref: list[float] = []
    detected = 0
    for r in mine:
        offsets = r.evidently_offsets if detector == "evidently" else r.offsets
        flags = r.fired[detector]
        for o, f in zip(offsets, flags, strict=True):
            if ref is None or o < 0:
                quiet += 1
                fired_quiet += int(f)
        if ref is None or not offsets:
            continue
        horizon = max(offsets)
        first = _first(offsets, flags, 0)
        first_ref = _first(offsets, flags, ref)
        detected += first is not None
        delays_onset.append(first if first is not None else horizon + 1)
        delays_ref.append(first_ref - ref if first_ref is not None else horizon + 1 - ref)
    runs_n = len(mine)
    out: dict[str, Any] = {
        "runs": runs_n,
        "no_drift_batches": quiet,
        "false_alarms": fired_quiet,
        "false_alarm_rate": fired_quiet / quiet if quiet else None,
        "reference_offset": ref,
    }
    if ref is not None and runs_n:
        out |= {
            "detection_rate": detected / runs_n,
            "delay_onset_median": float(np.median(delays_onset)),
            "delay_onset_p90": float(np.percentile(delays_onset, 90)),
            "delay_reference_median": float(np.median(delays_ref)),
            "delay_reference_p90": float(np.percentile(delays_ref, 90)),
            "delays_reference": delays_ref,
        }
    return out


def detection_rows(figures: dict[str, dict[str, dict[str, Any]]]) -> list[list[str]]:
    rows = []
    for scenario, by_detector in figures.items():
        for detector, f in by_detector.items():
            if not f["runs"]:
                continue
            rows.append(
                [
                    scenario,
                    DETECTORS[detector],
                    f"{f['false_alarms']}/{f['no_drift_batches']} ({_pct(f['false_alarm_rate'])})",
                    _pct(f.get("detection_rate")),
                    _num(f.get("delay_onset_median")),
                    _num(f.get("delay_onset_p90")),
                    "—" if f["reference_offset"] is None else f"+{f['reference_offset']}",
                    _num(f.get("delay_reference_median")),
                    _num(f.get("delay_reference_p90")),
                ]
            )
    return rows


DETECTION_COLUMNS = [
    "scenario",
    "detector",
    "false alarms / no-drift batches",
    "detected",
    "delay after onset (median)",
    "(p90)",
    "reference day",
    "delay after reference (median)",
    "(p90)",
]


def target_rows(
    figures: dict[str, dict[str, dict[str, Any]]], cpu_10k: float | None
) -> list[list[str]]:
    """The issue's targets, each with its measured figure and PASS / FAIL / n/a."""

    def get(scenario: str, detector: str) -> dict[str, Any]:
        return figures.get(scenario, {}).get(detector, {"runs": 0})

    rows: list[list[str]] = []
    none = get("none", "trigger")
    rate = none.get("false_alarm_rate")
    rows.append(
        [
            "retrain-trigger false alarms, no drift",
            "<= 1% of batches",
            _pct(rate),
            "n/a" if rate is None else "PASS" if rate <= 0.01 else "FAIL",
        ]
    )
    for scenario, what, limit, key in (
        ("new_terminals", "new terminal population detected in its first batch", 0, "verdict_drift"),
        ("gradual_amount", "gradual amount drift, batches after a 5% shift", 5, "verdict_drift"),
        ("concept", "concept drift, batches after labels make it detectable", 2, "verdict_drift"),
    ):  # fmt: skip
        f = get(scenario, key)
        delays = f.get("delays_reference")
        if not delays:
            rows.append([what, "", "—", "n/a"])
            continue
        within = float(np.mean(np.asarray(delays) <= limit))
        if scenario == "new_terminals":
            rows.append(
                [what, ">= 95% of seeds", _pct(within), "PASS" if within >= 0.95 else "FAIL"]
            )
        else:
            p90 = f["delay_reference_p90"]
            rows.append(
                [
                    what,
                    f"<= {limit} (p90 over seeds)",
                    f"p90 {p90:g}, {_pct(within)} of seeds within",
                    "PASS" if p90 <= limit else "FAIL",
                ]
            )
    rows.append(
        [
            "CPU-seconds per 10k-row batch (drift + label checks)",
            "<= 1",
            "—" if cpu_10k is None else f"{cpu_10k:.3f}",
            "n/a" if cpu_10k is None else "PASS" if cpu_10k <= 1.0 else "FAIL",
        ]
    )
    return rows


TARGET_COLUMNS = ["target", "required", "measured", "verdict"]
