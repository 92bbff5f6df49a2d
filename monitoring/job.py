"""One monitoring run: a window of production (the prediction log, or a file) against the
monitored model's reference, every check, the verdict, the Evidently report and dashboard, and
the retraining decision.

The steps are the modules' (drift, performance, estimate, policy, report, dashboard); this
module only wires them and decides where files go:

    reports/monitoring/<window>/verdict.json   every check, drift_detected, retrain_triggered
    reports/monitoring/<window>/report.html    the Evidently report of the window
    reports/monitoring/latest.json             a copy of the last verdict
    reports/monitoring/policy_state.json       what the retraining policy remembers
    reports/monitoring/workspace/              the Evidently workspace (`make dashboards`)

A run writes the verdict last, atomically: a run that fails leaves the previous files intact.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from fraud.predictions import DEFAULT_PREDICTION_LOG, PredictionLogReader
from fraud.registry import load_version, read_reference
from monitoring import frames
from monitoring.checking import (
    Monitor,
    WindowChecks,
    check_window,
    label_days_back,
    prepare_monitor,
)
from monitoring.config import MonitorConfig
from monitoring.estimate import calibration_check
from monitoring.performance import (
    matured_frauds,
)
from monitoring.policy import PolicyState, decide
from monitoring.sources import Window, file_window, log_window
from monitoring.verdict import Verdict, write_text_atomic

if TYPE_CHECKING:
    import xgboost as xgb

    from fraud.registry import RegisteredVersion

log = logging.getLogger("monitoring")


class MonitorError(RuntimeError):
    """The run cannot be done as asked (empty log, no window, ...); the message says why."""


@dataclass(frozen=True)
class RunResult:
    verdict: Verdict
    verdict_path: Path
    report_path: Path | None
    notes: tuple[str, ...]


def day_window(
    target: str | Path, cfg: MonitorConfig, end: dt.datetime | None
) -> tuple[dt.datetime, dt.datetime]:
    """The window a log run checks: `cfg.window_days` ending at `end`, or, without `end`, the
    days up to the end of the day of the log's latest transaction."""
    if end is None:
        with PredictionLogReader(target) as reader:
            span = reader.time_range()
        if span is None:
            raise MonitorError(f"the prediction log {target} holds no predictions yet")
        end = pd.Timestamp(span[1]).floor("D").to_pydatetime() + dt.timedelta(days=1)
    return end - dt.timedelta(days=cfg.window_days), end


def load_window(
    cfg: MonitorConfig,
    version: RegisteredVersion,
    booster: xgb.Booster,
    *,
    input_path: Path | None,
    prediction_log: str,
    bounds: tuple[dt.datetime, dt.datetime] | None,
    as_of: dt.datetime | None,
) -> tuple[Window, pd.DataFrame]:
    """(the window whose drift is checked, the longer frame the label checks read); `bounds`
    is the log window's [start, end) (`day_window`), None for a file."""
    if input_path is not None:
        import tempfile

        from fraud.registry import FEATURE_HISTORY_FILE, download_version

        with tempfile.TemporaryDirectory() as tmp:
            download_version(version.name, version=version.version, dest=Path(tmp))
            history = pd.read_parquet(Path(tmp) / FEATURE_HISTORY_FILE)
        window = file_window(input_path, version, booster, history=history)
        return window, window.frame
    assert bounds is not None, "a log window needs its bounds"
    start, stop = bounds
    as_of = as_of or stop
    window = log_window(prediction_log, start, stop, as_of, model_version=version.version)
    # Labels mature later than the window: the label checks read further back.
    back = dt.timedelta(days=label_days_back(cfg))
    longer = log_window(
        prediction_log, stop - back, stop, as_of, model_version=version.version
    ).frame
    return window, longer


def run_monitor(
    cfg: MonitorConfig,
    *,
    input_path: Path | None = None,
    prediction_log: str = DEFAULT_PREDICTION_LOG,
    end: dt.datetime | None = None,
    as_of: dt.datetime | None = None,
    write_report: bool = True,
) -> RunResult:
    """Monitor one window and write its verdict (and report, and dashboard run)."""
    # The inputs first, the registry after: a wrong path is said before any download.
    if input_path is not None and not Path(input_path).exists():
        raise MonitorError(f"--input: {input_path} does not exist")
    bounds = None if input_path is not None else day_window(prediction_log, cfg, end)
    version, reference = read_reference(cfg.model_name, alias=cfg.model_alias)
    _, booster = load_version(cfg.model_name, version=version.version)
    window, longer = load_window(
        cfg,
        version,
        booster,
        input_path=input_path,
        prediction_log=prediction_log,
        bounds=bounds,
        as_of=as_of,
    )
    current, t = window.frame, window.as_of
    notes = list(window.notes)
    if current.empty:
        notes.append(f"no transactions in {window.start} .. {window.end}: nothing to compare")
    importance = booster.get_score(importance_type="gain")
    gains = {k: float(v) for k, v in importance.items() if isinstance(v, int | float)}
    monitor = prepare_monitor(
        cfg, reference, gains, f"{version.label}'s test window, all transactions"
    )
    found = check_window(monitor, current, longer, t)
    checks, drifted, drift_reasons = found.checks, found.drifted, found.reasons
    cohorts, estimates = found.cohorts, found.estimates
    calibration = calibration_check(
        reference[frames.SCORE],
        reference[frames.LABEL].astype(float),
        bins=cfg.estimate.calibration_bins,
        max_relative_ece=cfg.estimate.max_relative_ece,
    )

    out_dir = cfg.reports_dir / window_name(window)
    state_path = cfg.reports_dir / "policy_state.json"
    state = PolicyState.read(state_path)
    decision = decide(
        checks,
        labelled_frauds=matured_frauds(cohorts),
        last_trigger_at=state.trigger_before(t),
        as_of=t,
        policy=cfg.retrain,
        streak=state.streak_before(t),
    )
    report_path = None
    if write_report and not current.empty:
        report_path = write_evidently(monitor, found, reference, current, window)
    verdict = Verdict.build(
        window_start=window.start,
        window_end=window.end,
        as_of=t,
        model_name=version.name,
        model_version=version.version,
        reference=f"{version.label}'s test window ({len(reference):,} transactions)",
        checks=checks,
        cohorts=cohorts,
        estimates=estimates,
        decision=decision,
        calibration=calibration,
        extra={
            "source": window.source,
            "transactions": len(current),
            "notes": notes,
            "important_features": monitor.important_features,
            "report": str(report_path) if report_path else None,
        },
    )
    verdict = dataclasses.replace(verdict, drift_detected=drifted, drift_reasons=drift_reasons)
    verdict_path = out_dir / "verdict.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    verdict.write(verdict_path)
    write_text_atomic(cfg.reports_dir / "latest.json", verdict.to_json())
    state.after(decision, t).write(state_path)
    log.info("monitoring %s: drift %s, retrain %s", window_name(window), drifted, decision.trigger)
    return RunResult(verdict, verdict_path, report_path, tuple(notes))


def window_name(window: Window) -> str:
    """The folder of a window's files: its first and last day."""
    last = window.end - dt.timedelta(microseconds=1)
    first, last_day = window.start.date(), last.date()
    return str(first) if first == last_day else f"{first}_{last_day}"


def write_evidently(
    monitor: Monitor,
    found: WindowChecks,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    window: Window,
) -> Path:
    """The window's Evidently report (HTML) and its run in the dashboard's workspace: the same
    methods and thresholds as the checks, and the figures they computed."""
    from monitoring.dashboard import add_snapshot, get_or_create_project, open_workspace
    from monitoring.report import (
        DRIFTED_INPUT_COLUMNS,
        DRIFTED_INPUT_SHARE,
        ESTIMATED_AVERAGE_PRECISION,
        ESTIMATED_AVERAGE_PRECISION_LOWER,
        ESTIMATED_AVERAGE_PRECISION_UPPER,
        MATURED_AVERAGE_PRECISION,
        MATURED_RECALL,
        build_report,
        save_html,
    )

    cfg = monitor.cfg
    inputs = [c for c in found.checks if c.kind == "data"]
    values: dict[str, float] = {DRIFTED_INPUT_COLUMNS: float(sum(c.fired for c in inputs))}
    if inputs:
        values[DRIFTED_INPUT_SHARE] = values[DRIFTED_INPUT_COLUMNS] / len(inputs)
    pool = found.pooled
    if pool is not None and pool.counted and pool.average_precision is not None:
        values[MATURED_AVERAGE_PRECISION] = pool.average_precision
        values[MATURED_RECALL] = float(pool.recall or 0.0)
    if found.estimates:
        last = found.estimates[-1]
        values[ESTIMATED_AVERAGE_PRECISION] = last.average_precision
        values[ESTIMATED_AVERAGE_PRECISION_LOWER] = last.average_precision_low
        values[ESTIMATED_AVERAGE_PRECISION_UPPER] = last.average_precision_high
    snapshot = build_report(
        reference,
        current,
        columns=monitor.evidently_columns(),
        timestamp=window.end,
        performance=values,
        metadata={"window": window_name(window), "source": window.source},
    )
    path = save_html(snapshot, cfg.reports_dir / window_name(window) / "report.html")
    ws = open_workspace(cfg.workspace)
    project = get_or_create_project(ws, cfg.project, top_features=monitor.important_features)
    add_snapshot(ws, project, snapshot)
    return path
