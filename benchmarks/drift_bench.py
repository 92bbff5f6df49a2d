#!/usr/bin/env python
"""Drift benchmark (issue 11): the monitor and the retraining trigger on daily batches of
simulated production with a known onset, many seeds, five scenarios, beside Evidently's untuned
DataDriftPreset.

1. World (benchmarks/drift/world.py): params.yaml's simulated population, its features, a model
   trained in process by the pipeline's train step on params.yaml's split (no MLflow store
   needed), and its reference (the test window scored, `fraud.registry.reference_frame`).
2. Per scenario and seed: a continuation of the population (`simulate_continuation`) under the
   scenario's regime preset (none, gradual_amount, new_terminals, concept, label_only) starting
   `--pre-days` after the first monitored day; features over the base's last days + the
   continuation, scored; fraud labels known `features.delay_days` (7) days after the transaction.
   A warm-up of the label checks' look-back (13 days) precedes the monitored days.
3. Each monitored day is one batch checked as `monitoring.job` does (benchmarks/drift/replay.py),
   as_of = the end of the day; the policy's state (cooldown, streak) carried across days.
4. Figures (benchmarks/drift/summary.py): false alarms per no-drift batch, detection rate and
   delay; CPU-seconds and peak traced memory per batch at 10k and 100k rows a day (each day of
   the label checks' look-back resampled to that size); the issue's targets.
5. Evidently's DataDriftPreset() (its dataset rule: share of drifted columns >= 0.5) on the
   first `--evidently-seeds` seeds' sampled days: the last 2 days before the onset and 3 days
   from the scenario's reference day (no drift: the last 5 days), with a sample of the reference.

    python benchmarks/drift_bench.py                  # about 8 minutes on 2 cores
    python benchmarks/drift_bench.py --quick          # small population, under a minute
    python benchmarks/drift_bench.py --markdown --seeds 12 --no-evidently
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, for `python <this>`

from benchmarks.common.evidently_preset import DATASET_DRIFT_SHARE, evidently_run
from benchmarks.common.machine import machine_info
from benchmarks.common.project import RESULTS_DIR, ROOT, git_dirty, git_head
from benchmarks.common.report import (
    command_line,
    fmt_bytes,
    markdown_table,
    rich_table,
    write_results,
)
from benchmarks.drift.replay import Monitor, batch_cost, build_monitor, replay
from benchmarks.drift.summary import (
    DETECTION_COLUMNS,
    DETECTORS,
    TARGET_COLUMNS,
    RunOutcome,
    detection_figures,
    detection_rows,
    reference_offset,
    target_rows,
)
from benchmarks.drift.world import SCENARIOS, World, build_world, production_frame, scenario_regime
from monitoring import frames
from monitoring.config import load_monitor_config

console = Console(width=None if sys.stdout.isatty() else 200)

# What the worker processes share (set before the pool forks: a fork copies it for free).
_WORLD: World | None = None
_MONITOR: Monitor | None = None


def evidently_flag(ref: pd.DataFrame, cur: pd.DataFrame, columns: list[str]) -> tuple[bool, float]:
    """Evidently's untuned DataDriftPreset on one batch: (its dataset flag, CPU-seconds)."""
    cpu, _, share = evidently_run(ref, cur, columns)
    return share >= DATASET_DRIFT_SHARE, cpu


def run_one(task: dict[str, Any]) -> dict[str, Any]:
    """One (scenario, seed): its production, the daily replay, Evidently on sampled days."""
    world, monitor = _WORLD, _MONITOR
    assert world is not None and monitor is not None
    scenario, seed = task["scenario"], task["seed"]
    first = world.start_day + monitor.days_back  # the warm-up fills the label checks' look-back
    onset = first + task["pre_days"]
    n_days = monitor.days_back + task["days"]
    frame = production_frame(world, scenario_regime(world, scenario, onset), n_days, seed)
    days = [world.day(i) for i in range(first, first + task["days"])]
    onset_ts = world.day(onset)
    results = replay(monitor, frame, days)
    offsets = [int((d - onset_ts).days) for d in days]
    fired: dict[str, list[bool]] = {
        "drift_rule": [r.drift_rule for r in results],
        "verdict_drift": [r.verdict_drift for r in results],
        "trigger": [r.trigger for r in results],
    }
    ev_offsets: list[int] = []
    ev_cpu: list[float] = []
    if task["evidently"]:
        ref = world.reference.sample(
            min(task["evidently_reference"], len(world.reference)), random_state=0
        )
        columns = [frames.AMOUNT, *world.features, frames.SCORE]
        ref_day = reference_offset(scenario, int(monitor.cfg.performance.maturity_days))
        wanted = offsets[-5:] if ref_day is None else [-2, -1, ref_day, ref_day + 1, ref_day + 2]
        if task["quick"]:
            wanted = wanted[1:3]
        flags = []
        for o in [o for o in wanted if o in offsets]:
            day = onset_ts + pd.Timedelta(days=o)
            batch = frame[frame[frames.TIME].dt.normalize() == day]
            flag, cpu = evidently_flag(ref, batch, columns)
            ev_offsets.append(o)
            flags.append(flag)
            ev_cpu.append(cpu)
        fired["evidently"] = flags
    cost = None
    if task["cost"]:
        day = world.day(first + task["days"] - 1)
        cost = {str(n): batch_cost(monitor, frame, day, n) for n in task["cost_rows"]}
    return {
        "outcome": RunOutcome(scenario, seed, offsets, fired, ev_offsets),
        "batches": [{**r.as_dict(), "offset": o} for r, o in zip(results, offsets, strict=True)],
        "cpu_per_batch": [r.cpu_drift + r.cpu_labels for r in results],
        "evidently_cpu": ev_cpu,
        "cost": cost,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--seeds", type=int, default=None, help="seeds per scenario (default 8; quick 2)"
    )
    ap.add_argument(
        "--days", type=int, default=None, help="monitored days per run (default 24; quick 14)"
    )
    ap.add_argument(
        "--pre-days",
        type=int,
        default=None,
        help="monitored days before the onset (default 10; quick 4)",
    )
    ap.add_argument("--quick", action="store_true", help="small population: a fast check")
    ap.add_argument("--no-evidently", action="store_true", help="skip Evidently's preset")
    ap.add_argument("--evidently-seeds", type=int, default=1, help="seeds Evidently runs on")
    ap.add_argument(
        "--evidently-reference",
        type=int,
        default=20_000,
        help="reference rows sampled for Evidently",
    )
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--markdown", action="store_true", help="print the tables in Markdown")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "drift.json")
    args = ap.parse_args(argv)
    quick = args.quick
    args.seeds = args.seeds if args.seeds is not None else (2 if quick else 8)
    args.days = args.days if args.days is not None else (14 if quick else 24)
    args.pre_days = args.pre_days if args.pre_days is not None else (4 if quick else 10)
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        ap.error(f"--scenarios: unknown {unknown}; the scenarios are {list(SCENARIOS)}")
    args.scenario_list = names
    for name in ("seeds", "days", "workers"):
        if getattr(args, name) < 1:
            ap.error(f"--{name}: must be >= 1")
    if not 1 <= args.pre_days < args.days:
        ap.error(f"--pre-days: must be in 1 .. --days - 1 ({args.days - 1})")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark; returns the results (also written as JSON)."""
    global _WORLD, _MONITOR
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    with console.status("simulating the base population and training the model"):
        world = build_world(args.params, quick=args.quick)
        cfg = load_monitor_config(args.params)  # params.yaml's monitor: section, as the job
        monitor = build_monitor(cfg, world.reference, world.importance)
    setup_s = time.perf_counter() - t0
    _WORLD, _MONITOR = world, monitor
    cost_rows = [10_000] if args.quick else [10_000, 100_000]
    tasks = [
        {
            "scenario": s,
            "seed": seed,
            "days": args.days,
            "pre_days": args.pre_days,
            "evidently": not args.no_evidently and seed < args.evidently_seeds,
            "evidently_reference": min(args.evidently_reference, 5_000)
            if args.quick
            else args.evidently_reference,
            "quick": args.quick,
            "cost": s == "none" and seed == 0,
            "cost_rows": cost_rows,
        }
        for seed in range(args.seeds)
        for s in args.scenario_list
    ]
    outs: list[dict[str, Any]] = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=not console.is_terminal) as progress:
        bar = progress.add_task("scenario x seed runs", total=len(tasks))
        if args.workers > 1:
            with mp.get_context("fork").Pool(args.workers) as pool:
                for out in pool.imap_unordered(run_one, tasks):
                    outs.append(out)
                    progress.advance(bar)
        else:
            for task in tasks:
                outs.append(run_one(task))
                progress.advance(bar)
    wall = time.perf_counter() - t0
    runs = [o["outcome"] for o in outs]
    maturity = int(cfg.performance.maturity_days)
    figures = {
        s: {d: detection_figures(runs, s, d, maturity) for d in DETECTORS}
        for s in args.scenario_list
    }
    cost = next((o["cost"] for o in outs if o["cost"]), None)
    cpu_all = [c for o in outs for c in o["cpu_per_batch"]]
    ev_cpu = [c for o in outs for c in o["evidently_cpu"]]
    cpu_10k = cost["10000"]["cpu_total"] if cost else None
    return {
        "benchmark": "drift",
        "started": started.isoformat(timespec="seconds"),
        "command": command_line(),
        "git_commit": git_head(),
        "uncommitted": git_dirty(
            ["monitoring", "fraud", "benchmarks/drift", "benchmarks/drift_bench.py"]
        ),
        "machine": machine_info(["evidently", "xgboost-cpu", "pandas", "numpy"]),
        "settings": {
            "quick": args.quick,
            "seeds": args.seeds,
            "days": args.days,
            "pre_days": args.pre_days,
            "scenarios": args.scenario_list,
            "population": {
                "customers": world.base.n_customers,
                "terminals": world.base.n_terminals,
            },
            "continuation_start": str(world.day(world.start_day).date()),
            "warmup_days": monitor.days_back,
            "label_delay_days": world.label_delay_days,
            "evidently": None
            if args.no_evidently
            else {"seeds": args.evidently_seeds, "reference_rows": args.evidently_reference},
            "monitor": cfg.model_dump(mode="json"),
        },
        "model": {
            "threshold": world.threshold,
            "reference_rows": len(world.reference),
            "reference_average_precision": monitor.reference_performance.average_precision,
            "reference_recall": monitor.reference_performance.recall,
            "important_features": monitor.cfg.drift.dataset.important_columns,
        },
        "figures": figures,
        "targets": target_rows(figures, cpu_10k),
        "cost": cost,
        "cpu_per_daily_batch": {
            "median": float(np.median(cpu_all)) if cpu_all else None,
            "max": float(np.max(cpu_all)) if cpu_all else None,
        },
        "evidently_cpu_per_batch": {
            "median": float(np.median(ev_cpu)) if ev_cpu else None,
            "batches": len(ev_cpu),
        },
        "seconds": {"setup": setup_s, "wall": wall},
        "batches": sorted(
            [
                {"scenario": o["outcome"].scenario, "seed": o["outcome"].seed, **b}
                for o in outs
                for b in o["batches"]
            ],
            key=lambda b: (b["scenario"], b["seed"], b["day"]),
        ),
    }


def cost_rows(results: dict[str, Any]) -> list[list[str]]:
    cost = results["cost"] or {}
    rows = []
    for n, c in cost.items():
        rows.append(
            [
                f"{int(n):,}",
                f"{int(c['label_rows']):,}",
                f"{c['cpu_drift']:.3f}",
                f"{c['cpu_labels']:.3f}",
                f"{c['cpu_total']:.3f}",
                fmt_bytes(c["peak_bytes"]),
            ]
        )
    ev = results["evidently_cpu_per_batch"]
    if ev["median"] is not None:
        rows.append(["Evidently preset, one day (~10k)", "—", f"{ev['median']:.2f}", "—", "—", "—"])
    return rows


COST_COLUMNS = [
    "rows a day",
    "label-check rows (13 days)",
    "CPU-s drift",
    "CPU-s label checks",
    "CPU-s total",
    "peak traced memory",
]


def print_results(results: dict[str, Any], markdown: bool) -> None:
    tables = [
        ("Detection per scenario", DETECTION_COLUMNS, detection_rows(results["figures"]), 2),
        ("Targets", TARGET_COLUMNS, results["targets"], 1),
        ("Cost per batch", COST_COLUMNS, cost_rows(results), 1),
    ]
    for title, cols, rows, left in tables:
        if markdown:
            console.print(f"\n**{title}**\n", markup=False)
            console.print(markdown_table(cols, rows, left=left), markup=False, soft_wrap=True)
        else:
            console.print(rich_table(title, cols, rows, left=left))
    s = results["settings"]
    console.print(
        f"\n{s['seeds']} seeds x {len(s['scenarios'])} scenarios, {s['days']} monitored days "
        f"({s['pre_days']} before the onset), population {s['population']['customers']:,} "
        f"customers; setup {results['seconds']['setup']:.0f} s, wall {results['seconds']['wall']:.0f} s",
        markup=False,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results = run(args)
    print_results(results, args.markdown)
    shown = write_results(args.out, results)
    console.print(f"results: {shown}", markup=False)
    return results


if __name__ == "__main__":
    main()
