"""The drift demo's loop (see the package docstring): build, start, send, monitor, retrain."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from monitoring.demo.config import DemoConfig
from monitoring.demo.sandbox import Sandbox, SandboxError, build_sandbox
from monitoring.demo.services import (
    Service,
    ServiceError,
    free_port,
    log_tail,
    start_api,
    start_prefect_server,
    start_retraining_worker,
)
from monitoring.demo.timeline import DayRow, decision_text, markdown, plot, write_timeline
from monitoring.demo.traffic import SLOT, ApiClient, Production, simulate_production


class Say(Protocol):
    def __call__(self, text: str) -> None: ...


class DemoError(RuntimeError):
    """The demo could not go on; the message says where and why."""


@dataclass(frozen=True)
class DemoResult:
    rows: list[DayRow]
    summary: dict[str, Any]
    workdir: Path


def check_label_delay(cfg: DemoConfig, sandbox: Sandbox) -> None:
    """Labels must come back within the features' delay and the monitor's maturity, or the
    online features and the matured cohorts would miss some."""
    slot = SLOT / pd.Timedelta(days=1)
    limit = min(sandbox.features.delay_days - slot, sandbox.monitor.performance.maturity_days)
    if cfg.label_delay_max_days > limit:
        raise DemoError(
            f"label_delay_max_days ({cfg.label_delay_max_days:g}) is above {limit:.3g} days: "
            "features.delay_days (less the traffic's one-hour slot) and "
            "monitor.performance.maturity_days assume every label is back by then"
        )


def train_first_champion(sandbox: Sandbox, api_url: str) -> float:
    """The Prefect `training` flow on the sandbox's DVC data: the first champion."""
    t0 = time.perf_counter()
    log_path = sandbox.logs / "training.log"
    argv = [sys.executable, "-m", "pipelines.cli", "flow", "--params", str(sandbox.params)]
    with open(log_path, "ab") as out:
        proc = subprocess.run(
            argv,
            cwd=sandbox.root,
            env=sandbox.env(PREFECT_API_URL=api_url),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if proc.returncode != 0:
        raise DemoError(
            f"the training flow failed (exit {proc.returncode}); the end of {log_path}:\n"
            f"{log_tail(log_path)}"
        )
    return time.perf_counter() - t0


def fired_checks(verdict_path: str) -> list[str]:
    doc = json.loads(Path(verdict_path).read_text())
    return [c["name"] for c in doc.get("checks", []) if c.get("fired")]


def run_demo(cfg: DemoConfig, say: Say) -> DemoResult:
    """The whole demo; `say` prints progress. Services are stopped whatever happens."""
    t_start = time.perf_counter()
    say(f"building the sandbox in {cfg.workdir} (simulated base data, git + DVC) ...")
    try:
        sandbox = build_sandbox(cfg.params, cfg.workdir)
    except SandboxError as e:
        raise DemoError(str(e)) from e
    check_label_delay(cfg, sandbox)
    production = simulate_production(
        sandbox.simulator,
        pd.read_parquet(sandbox.raw),
        cfg.days,
        cfg.regime,
        cfg.onset_day,
        seed=cfg.seed,
        label_delay_days=(cfg.label_delay_min_days, cfg.label_delay_max_days),
        history_label_days=sandbox.features.delay_days,
    )
    last = production.day(cfg.days - 1)
    say(
        f"production: {len(production.frame):,} transactions, {production.first_day} .. {last}; "
        f"regime {cfg.regime!r} from {production.onset}"
    )
    prefect_port = cfg.prefect_port or free_port()
    api_url = f"http://127.0.0.1:{prefect_port}/api"
    # This process runs the monitoring flows and reads the registry: the sandbox's, too.
    os.environ.update(sandbox.env(PREFECT_API_URL=api_url))
    if not cfg.verbose:
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    services: list[Service] = []
    try:
        say("starting the Prefect server ...")
        services.append(start_prefect_server(sandbox, prefect_port))
        say(f"Prefect server at {api_url.removesuffix('/api')} (its UI shows every flow run)")
        say("training the first champion with the Prefect `training` flow ...")
        seconds = train_first_champion(sandbox, api_url)
        say(f"first champion registered ({seconds:.0f} s)")
        from monitoring.flows import TRAINING_DEPLOYMENT

        services.append(start_retraining_worker(sandbox, api_url, TRAINING_DEPLOYMENT))
        say(f"serving the deployment {TRAINING_DEPLOYMENT} (python -m pipelines.deploy)")
        api_port = cfg.api_port or free_port()
        services.append(start_api(sandbox, api_port, cfg.reload_poll_seconds))
        client = ApiClient(services[-1].url)
        first_version = client.serving_version()
        assert first_version is not None
        say(f"prediction API at {services[-1].url}, serving v{first_version}")
        rows, promotions = replay_days(cfg, sandbox, production, client, api_url, say)
        client.close()
    except ServiceError as e:
        raise DemoError(str(e)) from e
    finally:
        for service in reversed(services):
            service.stop()
    summary = summarize(cfg, sandbox, production, rows, first_version, promotions)
    summary["seconds"] = round(time.perf_counter() - t_start, 1)
    write_timeline(sandbox.root / "timeline.json", rows, summary)
    (sandbox.root / "timeline.md").write_text(markdown(rows))
    return DemoResult(rows, summary, sandbox.root)


def replay_days(
    cfg: DemoConfig,
    sandbox: Sandbox,
    production: Production,
    client: ApiClient,
    api_url: str,
    say: Say,
) -> tuple[list[DayRow], list[tuple[dt.date, str]]]:
    """Each day: its traffic through the API, the labels known by its end through /feedback,
    the monitoring flow, and, when it triggers retraining, the flow run to its gate decision."""
    from monitoring.demo.retraining import newest_outcome, wait_for_flow_run
    from monitoring.flows import monitoring

    rows: list[DayRow] = []
    promotions: list[tuple[dt.date, str]] = []
    labels_until: dt.datetime | None = None
    model_name = sandbox.monitor.model_name
    for i in range(cfg.days):
        day = production.day(i)
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time())
        t0 = time.perf_counter()
        sent, labels, labels_until = client.send_day(production, day, labels_until, cfg.batch_size)
        t1 = time.perf_counter()
        summary = monitoring(
            params_path=str(sandbox.params),
            prediction_log=str(sandbox.prediction_log),
            end=end.isoformat(),
        )
        t2 = time.perf_counter()
        row = DayRow(
            day=day,
            regime_on=day >= production.onset,
            transactions=sent.transactions,
            alerts=sent.alerts,
            frauds=sent.frauds,
            labels_sent=labels,
            served_by=sent.versions,
            drift_detected=summary.drift_detected,
            signals=fired_checks(summary.verdict_path),
            retrain_triggered=summary.retrain_triggered,
            decision=(summary.retrain_reasons or ["-"])[-1],
        )
        if summary.retrain_triggered and summary.retraining_run_id is None:
            row.retraining = summary.retraining  # not started: the sentence says why
        elif summary.retraining_run_id is not None:
            say(f"{day}: retraining triggered; waiting for its flow run ...")
            ended = wait_for_flow_run(
                api_url, summary.retraining_run_id, cfg.retrain_timeout_seconds
            )
            if ended.state != "COMPLETED":
                row.retraining = f"flow run {ended.name} {ended.state}: {ended.message}"
            else:
                outcome = newest_outcome(model_name)
                assert outcome is not None
                row.retraining = f"v{outcome.version} {outcome.decision} ({ended.seconds:.0f} s): {outcome.reason}"
                if outcome.promoted:
                    wait_until_served(client, outcome.version, 10 * cfg.reload_poll_seconds + 60)
                    row.promoted_version = outcome.version
                    promotions.append((day, outcome.version))
        row.seconds = {
            "traffic": round(t1 - t0, 2),
            "monitoring": round(t2 - t1, 2),
            "retraining": round(time.perf_counter() - t2, 2),
        }
        rows.append(row)
        say(day_line(row))
    return rows, promotions


def wait_until_served(client: ApiClient, version: str, timeout: float) -> None:
    """Until the API's alias poll has installed `version`."""
    t0 = time.monotonic()
    while client.serving_version() != version:
        if time.monotonic() - t0 > timeout:
            raise DemoError(f"the API did not pick up v{version} within {timeout:.0f} s")
        time.sleep(0.5)


def day_line(row: DayRow) -> str:
    flag = "DRIFT" if row.drift_detected else "  -  "
    return (
        f"{row.day}  {'changed' if row.regime_on else '       '}  {row.transactions:>6,} tx "
        f"{row.alerts:>4,} alerts {row.labels_sent:>4,} labels  {row.served_text():>6}  {flag}  "
        f"{row.signal_text():<40.40}  {decision_text(row)[:120]}"
    )


def summarize(
    cfg: DemoConfig,
    sandbox: Sandbox,
    production: Production,
    rows: list[DayRow],
    first_version: str,
    promotions: list[tuple[dt.date, str]],
) -> dict[str, Any]:
    """What the demo found, with the models compared on the same drifted transactions."""
    from monitoring.demo.evaluation import compare, daily_average_precision

    model_name = sandbox.monitor.model_name
    log = str(sandbox.prediction_log)
    truth = production.frame
    last = production.day(cfg.days - 1) + dt.timedelta(days=1)
    summary: dict[str, Any] = {
        "regime": cfg.regime,
        "onset": production.onset.isoformat(),
        "days": cfg.days,
        "first_champion": first_version,
        "drift_first_detected": next(
            (r.day.isoformat() for r in rows if r.drift_detected and r.regime_on), None
        ),
        "false_alarms_before_onset": sum(r.drift_detected for r in rows if not r.regime_on),
        "retrainings": [
            {"day": r.day.isoformat(), "outcome": r.retraining} for r in rows if r.retraining
        ],
        "promotions": [{"day": d.isoformat(), "version": v} for d, v in promotions],
    }
    versions = [first_version] + [v for _, v in promotions]
    before = compare(
        log, truth, model_name, [first_version], production.first_day, production.onset
    )
    summary["before_onset"] = before.as_dict() if before.transactions else None
    if promotions:
        # The new champion's own unseen days: from the day after its promotion to the end (its
        # training data stop a delay and a test window earlier).
        day, version = promotions[-1]
        start = day + dt.timedelta(days=1)
        if start < last:
            after = compare(log, truth, model_name, [first_version, version], start, last)
            summary["after_promotion"] = after.as_dict()
    drifted = compare(log, truth, model_name, versions[:1], production.onset, last)
    summary["drifted_days"] = drifted.as_dict()
    daily = daily_average_precision(
        log, truth, model_name, [first_version], production.first_day, cfg.days
    )
    plot(sandbox.root / "timeline.png", rows, daily, first_version, promotions, production.onset)
    summary["won_back"] = won_back(summary, first_version)
    return summary


def won_back(summary: dict[str, Any], first_version: str) -> float | None:
    """(new - old) / (old before the drift - old on the drifted days): the share of the AP the
    drift took that retraining won back, on the days after the promotion."""
    after, before = summary.get("after_promotion"), summary.get("before_onset")
    if not after or not before:
        return None
    models = after["models"]
    new = [v for v in models if v != first_version]
    if not new:
        return None
    old_before = before["models"][first_version]["average_precision"]
    old_after = models[first_version]["average_precision"]
    new_after = models[new[0]]["average_precision"]
    lost = old_before - old_after
    return None if lost <= 0 else (new_after - old_after) / lost
