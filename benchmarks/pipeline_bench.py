#!/usr/bin/env python
"""Pipeline benchmark: the real `dvc repro` of the default pipeline, and the two hot spots
against the Fraud Detection Handbook's reference code, measured in the same run.

What it does (see benchmarks/README.md for what each row means):

1. Copies the project's pipeline (dvc.yaml, params.yaml, fraud/, pipelines/, pyproject.toml,
   .dvcignore) into a temporary directory, makes it a fresh git + DVC repository and runs the
   real `dvc repro` once, streaming its output: each stage's wall time is the time from its
   "Running stage" line to the next one (so it includes Python start-up and DVC's own hashing
   and lock-file work), and a sampler polls the memory of the whole process tree every 50 ms
   (sum of PSS from /proc/<pid>/smaps_rollup, sum of RSS, largest process) and charges the peak
   to the running stage. `/usr/bin/time -v` around the whole run cross-checks the largest
   process's peak. Then a no-op `dvc repro` (nothing changed) and `fraud --help` (the start-up
   every stage pays), several times each, median.
2. Baselines on the same simulated data, in this process:
   * features: `fraud.features.compute_features` vs the handbook's pandas groupby + time-based
     rolling windows (`get_customer_spending_behaviour_features`,
     `get_count_risk_rolling_window`), the handbook's 15 features only, and a value check;
   * simulator: `fraud.simulator.simulate` vs the handbook's per-customer, per-day Python loop
     (`generate_transactions_table` inside `generate_dataset`, then `add_frauds`) on a subset of
     customers, as rows per second.
3. Prints one table (what, measured, target/baseline, ratio, pass/fail) and writes the same
   to benchmarks/results/pipeline.json, with the CPU-seconds other processes used during each
   part (a run where they used more than ~10% of the machine is not a clean measurement).

Targets (the issue): whole default `dvc repro` < 5 min; features stage on ~1.75M rows < 60 s;
peak memory < 4 GiB; no-op `dvc repro` < 5 s. Nothing here asserts: it reports.

    python benchmarks/pipeline_bench.py            # everything (about 4 minutes on 2 quiet cores)
    python benchmarks/pipeline_bench.py --quick    # smaller data everywhere (about 1.5 minutes)
    python benchmarks/pipeline_bench.py --skip-full  # baselines only, no dvc repro
"""

# The handbook's reference code below is kept as published (mutable default arguments,
# `column >= value` comparisons), so these two rules are off for this file.
# ruff: noqa: B006, SIM300

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import yaml
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, for `python <this>`

from benchmarks.common.machine import (
    busy_cpu_s,
    children_cpu_s,
    machine_info,
    own_cpu_s,
    wait_for_idle,
)
from benchmarks.common.project import (
    RESULTS_DIR,
    ROOT,
    git_dirty,
    git_head,
    offline_env,
)
from benchmarks.common.report import (
    GIB,
    command_line,
    fmt_bytes,
    fmt_rate,
    fmt_s,
    markdown_table,
    rich_table,
    verdict,
    write_results,
)
from fraud.features import FeatureConfig, compute_features
from fraud.simulator import SimulatorConfig, simulate

TARGET_REPRO_S = 300.0
TARGET_FEATURES_S = 60.0
TARGET_PEAK_RSS = 4 * GIB
TARGET_NOOP_S = 5.0

PROJECT_FILES = ["dvc.yaml", "params.yaml", "fraud", "pipelines", "pyproject.toml", ".dvcignore"]
HANDBOOK_15 = [
    "TX_AMOUNT",
    "TX_DURING_WEEKEND",
    "TX_DURING_NIGHT",
    *[f"CUSTOMER_ID_{k}_{w}DAY_WINDOW" for w in (1, 7, 30) for k in ("NB_TX", "AVG_AMOUNT")],
    *[f"TERMINAL_ID_{k}_{w}DAY_WINDOW" for w in (1, 7, 30) for k in ("NB_TX", "RISK")],
]

console = Console(width=None if sys.stdout.isatty() else 200)


# ============================================================================================
# Measuring helpers


def _pss(pid: int) -> int | None:
    """Proportional set size (shared pages split between their users), from smaps_rollup."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass
class TreeSample:
    rss_sum: int = 0  # sum of RSS: counts pages shared between processes (and forks) twice
    pss_sum: int = 0  # sum of PSS: each page once; what the tree really holds
    biggest_rss: int = 0  # the largest single process
    procs: list[tuple[int, str, int, int]] = field(default_factory=list)  # pid, cmd, rss, pss


def tree_memory(root: psutil.Process) -> TreeSample:
    """Memory of `root` and all its descendants, now."""
    out = TreeSample()
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return out
    for p in procs:
        try:
            rss = p.memory_info().rss
            cmd = " ".join(os.path.basename(c) for c in p.cmdline()[:3])
        except psutil.Error:
            continue
        pss = _pss(p.pid)
        pss = rss if pss is None else pss
        out.rss_sum += rss
        out.pss_sum += pss
        out.biggest_rss = max(out.biggest_rss, rss)
        out.procs.append((p.pid, cmd, rss, pss))
    return out


class RssSampler(threading.Thread):
    """Polls a process tree's memory; `label()` says which phase (stage) samples belong to."""

    def __init__(self, pid: int, label: Callable[[], str], interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.label = label
        self.interval = interval
        self.stop_event = threading.Event()
        self.peak_tree: dict[str, int] = {}  # sum of PSS
        self.peak_tree_rss: dict[str, int] = {}  # sum of RSS
        self.peak_proc: dict[str, int] = {}  # largest process RSS
        self.at_peak: dict[str, list[tuple[int, str, int, int]]] = {}
        self.samples = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            snap = tree_memory(self.proc)
            key = self.label()
            if snap.pss_sum > self.peak_tree.get(key, -1):
                self.peak_tree[key] = snap.pss_sum
                self.at_peak[key] = snap.procs
            self.peak_tree_rss[key] = max(self.peak_tree_rss.get(key, 0), snap.rss_sum)
            self.peak_proc[key] = max(self.peak_proc.get(key, 0), snap.biggest_rss)
            self.samples += 1
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


@contextmanager
def peak_rss_of_self(out: dict[str, int]) -> Iterator[None]:
    """Peak RSS of this process while the block runs (sampled), minus RSS before it."""
    sampler = RssSampler(os.getpid(), lambda: "x", interval=0.02)
    before = psutil.Process().memory_info().rss
    sampler.start()
    try:
        yield
    finally:
        sampler.stop()
        out["peak"] = sampler.peak_proc.get("x", before)
        out["delta"] = max(out["peak"] - before, 0)


def own_and_children_cpu_s() -> float:
    """CPU-seconds of this process and its finished (waited-for) children: dvc repro's tree."""
    return own_cpu_s() + children_cpu_s()


@dataclass
class Section:
    """How busy the machine was with other work while one part of the benchmark ran."""

    name: str
    wall_s: float = 0.0
    load_start: float = 0.0
    load_end: float = 0.0
    own_cpu_s: float = 0.0
    other_cpu_s: float = 0.0  # CPU-seconds used by processes that are not this benchmark

    @property
    def other_share(self) -> float:
        """Share of the machine's CPU capacity used by other processes during the section."""
        return self.other_cpu_s / max(self.wall_s * (os.cpu_count() or 1), 1e-9)


@contextmanager
def section(name: str, out: list[Section]) -> Iterator[None]:
    sec = Section(name, load_start=os.getloadavg()[0])
    t0, busy0, own0 = time.perf_counter(), busy_cpu_s(), own_and_children_cpu_s()
    try:
        yield
    finally:
        sec.wall_s = time.perf_counter() - t0
        sec.own_cpu_s = own_and_children_cpu_s() - own0
        sec.other_cpu_s = max(busy_cpu_s() - busy0 - sec.own_cpu_s, 0.0)
        sec.load_end = os.getloadavg()[0]
        out.append(sec)


def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[Any, list[float]]:
    times, result = [], None
    for _ in range(repeats):
        result = None  # free the previous result before the next call (peak memory)
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return result, times


# ============================================================================================
# 1. The real dvc repro in a temporary copy of the project


@dataclass
class StageFigures:
    name: str
    wall_s: float = 0.0  # "Running stage" line to the next one (or the end of dvc repro)
    command_s: float | None = None  # what the `fraud <stage>` command itself reports
    peak_tree_pss: int = 0  # peak sum of PSS over the dvc process tree during the stage
    peak_tree_rss: int = 0  # peak sum of RSS (shared pages counted in every process)
    peak_proc_rss: int = 0  # peak RSS of the largest single process during the stage
    at_peak: list[tuple[int, str, int, int]] = field(default_factory=list)  # pid, cmd, rss, pss


@dataclass
class PipelineFigures:
    rows: int | None = None
    total_s: float = 0.0
    stages: list[StageFigures] = field(default_factory=list)
    peak_tree_pss: int = 0
    peak_tree_rss: int = 0
    peak_proc_rss: int = 0
    time_v_max_rss: int | None = None  # /usr/bin/time -v "Maximum resident set size"
    time_v_wall: str | None = None
    setup_s: float = 0.0
    noop_s: list[float] = field(default_factory=list)
    noop_up_to_date: bool = False
    cli_startup_s: list[float] = field(default_factory=list)  # `fraud --help`, per run
    code_from: str = ""
    rss_samples: int = 0


def bench_env(tmp: Path) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    env = dict(os.environ)
    for k in ("PREFECT_API_URL", "VIRTUAL_ENV_PROMPT"):
        env.pop(k, None)
    env.update(
        # The project's offline defaults, its MLflow store and Prefect home those of the copy.
        offline_env(tmp),
        PATH=venv_bin + os.pathsep + env.get("PATH", ""),
        # The stages import fraud/ and pipelines/ from the copy, not from the editable install.
        PYTHONPATH=str(tmp),
        PYTHONUNBUFFERED="1",
        COLUMNS="200",
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@example.invalid",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@example.invalid",
    )
    return env


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def prepare_project(tmp: Path, env: dict[str, str], sim_overrides: dict[str, Any]) -> None:
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tmp / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, tmp / name)
    if sim_overrides:
        params = yaml.safe_load((tmp / "params.yaml").read_text())
        params["simulator"].update(sim_overrides)
        (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n/.prefect/\n/time-v.txt\n")
    run(["git", "init", "-q"], tmp, env)
    run(["dvc", "init", "-q"], tmp, env)
    run(["dvc", "config", "core.analytics", "false"], tmp, env)
    run(["dvc", "config", "core.check_update", "false"], tmp, env)
    run(["dvc", "config", "core.autostage", "true"], tmp, env)
    run(["dvc", "config", "--local", "core.site_cache_dir", str(tmp / ".dvc-site-cache")], tmp, env)
    run(["git", "add", "-A"], tmp, env)
    run(["git", "commit", "-qm", "benchmark copy of the pipeline"], tmp, env)


RUNNING_STAGE = re.compile(r"Running stage '([^']+)'")
COMMAND_DONE = re.compile(r"✓ (\w+) \(([\d.]+) s\)")


def run_repro(tmp: Path, env: dict[str, str], echo: bool) -> PipelineFigures:
    """One real `dvc repro`, streamed: per-stage wall time and the process tree's peak RSS."""
    figs = PipelineFigures()
    time_v = Path("/usr/bin/time")
    time_file = tmp / "time-v.txt"
    cmd = ["dvc", "repro"]
    if time_v.exists():
        cmd = [str(time_v), "-v", "-o", str(time_file), *cmd]
    current = {"stage": "(dvc start-up)"}
    starts: list[tuple[str, float]] = []
    command_s: dict[str, float] = {}
    lines: list[str] = []

    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    sampler = RssSampler(proc.pid, lambda: current["stage"])
    sampler.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.perf_counter()
            line = line.rstrip("\n")
            lines.append(line)
            if m := RUNNING_STAGE.search(line):
                current["stage"] = m.group(1)
                starts.append((m.group(1), now))
            if m := COMMAND_DONE.search(line):
                command_s[m.group(1)] = float(m.group(2))
            if echo and line.strip():
                console.print(f"  [dim]│ {now - t0:6.1f}s[/] {line}", markup=True, highlight=False)
        rc = proc.wait()
    except BaseException:
        os.killpg(proc.pid, 15)  # our own child's process group
        proc.wait()
        raise
    finally:
        end = time.perf_counter()
        sampler.stop()
    if rc != 0:
        tail = "\n".join(lines[-40:])
        raise RuntimeError(f"dvc repro exited {rc}:\n{tail}")

    figs.total_s = end - t0
    figs.rss_samples = sampler.samples
    bounds = [*(s for _, s in starts[1:]), end]
    for (name, start), stop in zip(starts, bounds, strict=True):
        figs.stages.append(
            StageFigures(
                name=name,
                wall_s=stop - start,
                command_s=command_s.get(name),
                peak_tree_pss=sampler.peak_tree.get(name, 0),
                peak_tree_rss=sampler.peak_tree_rss.get(name, 0),
                peak_proc_rss=sampler.peak_proc.get(name, 0),
                at_peak=sampler.at_peak.get(name, []),
            )
        )
    figs.peak_tree_pss = max(sampler.peak_tree.values(), default=0)
    figs.peak_tree_rss = max(sampler.peak_tree_rss.values(), default=0)
    figs.peak_proc_rss = max(sampler.peak_proc.values(), default=0)
    if time_file.exists():
        text = time_file.read_text()
        if m := re.search(r"Maximum resident set size \(kbytes\): (\d+)", text):
            figs.time_v_max_rss = int(m.group(1)) * 1024
        if m := re.search(r"Elapsed \(wall clock\) time.*: (\S+)", text):
            figs.time_v_wall = m.group(1)
    return figs


def run_noop(tmp: Path, env: dict[str, str], repeats: int) -> tuple[list[float], bool]:
    times, up_to_date = [], True
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = run(["dvc", "repro"], tmp, env)
        times.append(time.perf_counter() - t0)
        out = proc.stdout + proc.stderr
        up_to_date &= "Running stage" not in out
    return times, up_to_date


def run_cli_startup(tmp: Path, env: dict[str, str], repeats: int) -> list[float]:
    """What every stage pays before its work starts: `fraud --help` imports the CLI module."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(["fraud", "--help"], tmp, env)
        times.append(time.perf_counter() - t0)
    return times


def bench_pipeline(args: argparse.Namespace, sim_overrides: dict[str, Any]) -> PipelineFigures:
    tmp = Path(tempfile.mkdtemp(prefix="fraud-bench-"))
    env = bench_env(tmp)
    try:
        t0 = time.perf_counter()
        prepare_project(tmp, env, sim_overrides)
        setup_s = time.perf_counter() - t0
        code_from = run([sys.executable, "-c", "import fraud; print(fraud.__file__)"], tmp, env)
        console.print(f"[bold]dvc repro[/] in {tmp} (stages import {code_from.stdout.strip()})")
        figs = run_repro(tmp, env, echo=not args.no_echo)
        figs.setup_s = setup_s
        figs.code_from = code_from.stdout.strip()
        raw = tmp / "data/raw/transactions.parquet"
        figs.rows = pd.read_parquet(raw, columns=["TRANSACTION_ID"]).shape[0]
        console.print(f"no-op dvc repro x{args.noop_repeats} ...")
        figs.noop_s, figs.noop_up_to_date = run_noop(tmp, env, args.noop_repeats)
        figs.cli_startup_s = run_cli_startup(tmp, env, args.noop_repeats)
        return figs
    finally:
        if args.keep_tmp:
            console.print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


# ============================================================================================
# 2a. The Fraud Detection Handbook's feature transformation (chapter 3.4, "Baseline feature
# transformation"), reproduced as published: per-row `apply` for the date features, then a
# pandas groupby-apply with time-based rolling windows per customer and per terminal.


def hb_is_weekend(tx_datetime):
    weekday = tx_datetime.weekday()
    is_weekend = weekday >= 5
    return int(is_weekend)


def hb_is_night(tx_datetime):
    tx_hour = tx_datetime.hour
    is_night = tx_hour <= 6
    return int(is_night)


def hb_get_customer_spending_behaviour_features(
    customer_transactions, windows_size_in_days=[1, 7, 30]
):
    customer_transactions = customer_transactions.sort_values("TX_DATETIME")
    customer_transactions.index = customer_transactions.TX_DATETIME
    for window_size in windows_size_in_days:
        SUM_AMOUNT_TX_WINDOW = (
            customer_transactions["TX_AMOUNT"].rolling(str(window_size) + "d").sum()
        )
        NB_TX_WINDOW = customer_transactions["TX_AMOUNT"].rolling(str(window_size) + "d").count()
        AVG_AMOUNT_TX_WINDOW = SUM_AMOUNT_TX_WINDOW / NB_TX_WINDOW
        customer_transactions["CUSTOMER_ID_NB_TX_" + str(window_size) + "DAY_WINDOW"] = list(
            NB_TX_WINDOW
        )
        customer_transactions["CUSTOMER_ID_AVG_AMOUNT_" + str(window_size) + "DAY_WINDOW"] = list(
            AVG_AMOUNT_TX_WINDOW
        )
    customer_transactions.index = customer_transactions.TRANSACTION_ID
    return customer_transactions


def hb_get_count_risk_rolling_window(
    terminal_transactions, delay_period=7, windows_size_in_days=[1, 7, 30], feature="TERMINAL_ID"
):
    terminal_transactions = terminal_transactions.sort_values("TX_DATETIME")
    terminal_transactions.index = terminal_transactions.TX_DATETIME
    NB_FRAUD_DELAY = terminal_transactions["TX_FRAUD"].rolling(str(delay_period) + "d").sum()
    NB_TX_DELAY = terminal_transactions["TX_FRAUD"].rolling(str(delay_period) + "d").count()
    for window_size in windows_size_in_days:
        NB_FRAUD_DELAY_WINDOW = (
            terminal_transactions["TX_FRAUD"].rolling(str(delay_period + window_size) + "d").sum()
        )
        NB_TX_DELAY_WINDOW = (
            terminal_transactions["TX_FRAUD"].rolling(str(delay_period + window_size) + "d").count()
        )
        NB_FRAUD_WINDOW = NB_FRAUD_DELAY_WINDOW - NB_FRAUD_DELAY
        NB_TX_WINDOW = NB_TX_DELAY_WINDOW - NB_TX_DELAY
        RISK_WINDOW = NB_FRAUD_WINDOW / NB_TX_WINDOW
        terminal_transactions[feature + "_NB_TX_" + str(window_size) + "DAY_WINDOW"] = list(
            NB_TX_WINDOW
        )
        terminal_transactions[feature + "_RISK_" + str(window_size) + "DAY_WINDOW"] = list(
            RISK_WINDOW
        )
    terminal_transactions.index = terminal_transactions.TRANSACTION_ID
    # Replace NA values with 0 (all undefined risk scores where NB_TX_WINDOW is 0)
    terminal_transactions.fillna(0, inplace=True)
    return terminal_transactions


def handbook_features(transactions_df: pd.DataFrame) -> pd.DataFrame:
    transactions_df = transactions_df.copy()
    with warnings.catch_warnings():  # pandas 2.2+ warns that apply sees the grouping columns
        warnings.simplefilter("ignore")
        transactions_df["TX_DURING_WEEKEND"] = transactions_df.TX_DATETIME.apply(hb_is_weekend)
        transactions_df["TX_DURING_NIGHT"] = transactions_df.TX_DATETIME.apply(hb_is_night)
        transactions_df = transactions_df.groupby("CUSTOMER_ID").apply(
            lambda x: hb_get_customer_spending_behaviour_features(
                x, windows_size_in_days=[1, 7, 30]
            )
        )
        transactions_df = transactions_df.sort_values("TX_DATETIME").reset_index(drop=True)
        transactions_df = transactions_df.groupby("TERMINAL_ID").apply(
            lambda x: hb_get_count_risk_rolling_window(
                x, delay_period=7, windows_size_in_days=[1, 7, 30], feature="TERMINAL_ID"
            )
        )
        transactions_df = transactions_df.sort_values("TX_DATETIME").reset_index(drop=True)
    return transactions_df


# ============================================================================================
# 2b. The handbook's simulator (chapter 3.2, "Transaction data simulator"), as published:
# profile tables built row by row, then one Python loop per customer and per day.


def hb_generate_customer_profiles_table(n_customers, random_state=0):
    np.random.seed(random_state)
    customer_id_properties = []
    for customer_id in range(n_customers):
        x_customer_id = np.random.uniform(0, 100)
        y_customer_id = np.random.uniform(0, 100)
        mean_amount = np.random.uniform(5, 100)
        std_amount = mean_amount / 2
        mean_nb_tx_per_day = np.random.uniform(0, 4)
        customer_id_properties.append(
            [customer_id, x_customer_id, y_customer_id, mean_amount, std_amount, mean_nb_tx_per_day]
        )
    return pd.DataFrame(
        customer_id_properties,
        columns=[
            "CUSTOMER_ID",
            "x_customer_id",
            "y_customer_id",
            "mean_amount",
            "std_amount",
            "mean_nb_tx_per_day",
        ],
    )


def hb_generate_terminal_profiles_table(n_terminals, random_state=0):
    np.random.seed(random_state)
    terminal_id_properties = []
    for terminal_id in range(n_terminals):
        x_terminal_id = np.random.uniform(0, 100)
        y_terminal_id = np.random.uniform(0, 100)
        terminal_id_properties.append([terminal_id, x_terminal_id, y_terminal_id])
    return pd.DataFrame(
        terminal_id_properties, columns=["TERMINAL_ID", "x_terminal_id", "y_terminal_id"]
    )


def hb_get_list_terminals_within_radius(customer_profile, x_y_terminals, r):
    x_y_customer = customer_profile[["x_customer_id", "y_customer_id"]].values.astype(float)
    squared_diff_x_y = np.square(x_y_customer - x_y_terminals)
    dist_x_y = np.sqrt(np.sum(squared_diff_x_y, axis=1))
    available_terminals = list(np.where(dist_x_y < r)[0])
    return available_terminals


def hb_generate_transactions_table(customer_profile, start_date="2018-04-01", nb_days=10):
    customer_transactions = []
    random.seed(int(customer_profile.CUSTOMER_ID))
    np.random.seed(int(customer_profile.CUSTOMER_ID))
    for day in range(nb_days):
        nb_tx = np.random.poisson(customer_profile.mean_nb_tx_per_day)
        if nb_tx > 0:
            for _tx in range(nb_tx):
                time_tx = int(np.random.normal(86400 / 2, 20000))
                if (time_tx > 0) and (time_tx < 86400):
                    amount = np.random.normal(
                        customer_profile.mean_amount, customer_profile.std_amount
                    )
                    if amount < 0:
                        amount = np.random.uniform(0, customer_profile.mean_amount * 2)
                    amount = np.round(amount, decimals=2)
                    if len(customer_profile.available_terminals) > 0:
                        terminal_id = random.choice(customer_profile.available_terminals)
                        customer_transactions.append(
                            [
                                time_tx + day * 86400,
                                day,
                                customer_profile.CUSTOMER_ID,
                                terminal_id,
                                amount,
                            ]
                        )
    customer_transactions = pd.DataFrame(
        customer_transactions,
        columns=["TX_TIME_SECONDS", "TX_TIME_DAYS", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT"],
    )
    if len(customer_transactions) > 0:
        customer_transactions["TX_DATETIME"] = pd.to_datetime(
            customer_transactions["TX_TIME_SECONDS"], unit="s", origin=start_date
        )
        customer_transactions = customer_transactions[
            [
                "TX_DATETIME",
                "CUSTOMER_ID",
                "TERMINAL_ID",
                "TX_AMOUNT",
                "TX_TIME_SECONDS",
                "TX_TIME_DAYS",
            ]
        ]
    return customer_transactions


def hb_generate_dataset(
    n_customers=10000, n_terminals=1000000, nb_days=90, start_date="2018-04-01", r=5
):
    timings = {}
    start_time = time.perf_counter()
    customer_profiles_table = hb_generate_customer_profiles_table(n_customers, random_state=0)
    terminal_profiles_table = hb_generate_terminal_profiles_table(n_terminals, random_state=1)
    x_y_terminals = terminal_profiles_table[["x_terminal_id", "y_terminal_id"]].values.astype(float)
    customer_profiles_table["available_terminals"] = customer_profiles_table.apply(
        lambda x: hb_get_list_terminals_within_radius(x, x_y_terminals=x_y_terminals, r=r), axis=1
    )
    customer_profiles_table["nb_terminals"] = customer_profiles_table.available_terminals.apply(len)
    timings["profiles_s"] = time.perf_counter() - start_time

    start_time = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transactions_df = (
            customer_profiles_table.groupby("CUSTOMER_ID")
            .apply(lambda x: hb_generate_transactions_table(x.iloc[0], nb_days=nb_days))
            .reset_index(drop=True)
        )
    timings["transactions_s"] = time.perf_counter() - start_time

    start_time = time.perf_counter()
    transactions_df = transactions_df.sort_values("TX_DATETIME")
    transactions_df.reset_index(inplace=True, drop=True)
    transactions_df.reset_index(inplace=True)
    transactions_df.rename(columns={"index": "TRANSACTION_ID"}, inplace=True)
    timings["sort_s"] = time.perf_counter() - start_time
    return customer_profiles_table, terminal_profiles_table, transactions_df, timings


def hb_add_frauds(customer_profiles_table, terminal_profiles_table, transactions_df):
    transactions_df["TX_FRAUD"] = 0
    transactions_df["TX_FRAUD_SCENARIO"] = 0
    # Scenario 1
    transactions_df.loc[transactions_df.TX_AMOUNT > 220, "TX_FRAUD"] = 1
    transactions_df.loc[transactions_df.TX_AMOUNT > 220, "TX_FRAUD_SCENARIO"] = 1
    # Scenario 2
    for day in range(transactions_df.TX_TIME_DAYS.max()):
        compromised_terminals = terminal_profiles_table.TERMINAL_ID.sample(n=2, random_state=day)
        compromised_transactions = transactions_df[
            (transactions_df.TX_TIME_DAYS >= day)
            & (transactions_df.TX_TIME_DAYS < day + 28)
            & (transactions_df.TERMINAL_ID.isin(compromised_terminals))
        ]
        transactions_df.loc[compromised_transactions.index, "TX_FRAUD"] = 1
        transactions_df.loc[compromised_transactions.index, "TX_FRAUD_SCENARIO"] = 2
    # Scenario 3
    for day in range(transactions_df.TX_TIME_DAYS.max()):
        compromised_customers = customer_profiles_table.CUSTOMER_ID.sample(
            n=3, random_state=day
        ).values
        compromised_transactions = transactions_df[
            (transactions_df.TX_TIME_DAYS >= day)
            & (transactions_df.TX_TIME_DAYS < day + 14)
            & (transactions_df.CUSTOMER_ID.isin(compromised_customers))
        ]
        nb_compromised_transactions = len(compromised_transactions)
        random.seed(day)
        index_fauds = random.sample(
            list(compromised_transactions.index.values), k=int(nb_compromised_transactions / 3)
        )
        transactions_df.loc[index_fauds, "TX_AMOUNT"] = (
            transactions_df.loc[index_fauds, "TX_AMOUNT"] * 5
        )
        transactions_df.loc[index_fauds, "TX_FRAUD"] = 1
        transactions_df.loc[index_fauds, "TX_FRAUD_SCENARIO"] = 3
    return transactions_df


# ============================================================================================
# 2. Baselines


@dataclass
class SimulatorFigures:
    full_customers: int
    full_rows: int
    full_s: float
    subset_customers: int
    ours_rows: int
    ours_s: list[float]
    hb_rows: int
    hb_s: float
    hb_parts: dict[str, float]
    hb_frauds_s: float
    hb_full_estimate_s: float
    hb_fraud_rate: float
    ours_fraud_rate: float

    @property
    def ours_rate(self) -> float:
        return self.ours_rows / statistics.median(self.ours_s)

    @property
    def hb_rate(self) -> float:
        return self.hb_rows / self.hb_s


def bench_simulator(
    cfg: SimulatorConfig, subset_customers: int
) -> tuple[SimulatorFigures, pd.DataFrame]:
    console.print(f"[bold]simulator[/]: simulate() with {cfg.n_customers} customers ...")
    full, full_times = timed(lambda: simulate(cfg))
    sub_cfg = cfg.model_copy(update={"n_customers": subset_customers})
    console.print(
        f"[bold]simulator[/]: simulate() vs the handbook's loop, {subset_customers} customers ..."
    )
    ours, ours_times = timed(lambda: simulate(sub_cfg), repeats=3)
    t0 = time.perf_counter()
    cust, term, tx, parts = hb_generate_dataset(
        n_customers=subset_customers,
        n_terminals=cfg.n_terminals,
        nb_days=cfg.n_days,
        start_date=str(cfg.start_date),
        r=cfg.radius,
    )
    t1 = time.perf_counter()
    tx = hb_add_frauds(cust, term, tx)
    hb_s = time.perf_counter() - t0
    frauds_s = time.perf_counter() - t1
    # The per-customer loop scales with customers; profiles with customers x terminals;
    # add_frauds with days x rows. Extrapolate each part to the full population.
    scale = cfg.n_customers / subset_customers
    estimate = (parts["profiles_s"] + parts["transactions_s"] + parts["sort_s"] + frauds_s) * scale
    figs = SimulatorFigures(
        full_customers=cfg.n_customers,
        full_rows=len(full),
        full_s=full_times[0],
        subset_customers=subset_customers,
        ours_rows=len(ours),
        ours_s=ours_times,
        hb_rows=len(tx),
        hb_s=hb_s,
        hb_parts=parts,
        hb_frauds_s=frauds_s,
        hb_full_estimate_s=estimate,
        hb_fraud_rate=float(tx.TX_FRAUD.mean()),
        ours_fraud_rate=float(ours.TX_FRAUD.mean()),
    )
    return figs, full


@dataclass
class FeatureFigures:
    rows: int
    customers: int | str
    ours15_s: list[float]
    ours_default_s: list[float]
    n_default_features: int
    hb_s: float
    ours15_mem: dict[str, int]
    hb_mem: dict[str, int]
    allclose: bool  # np.allclose over every row
    allclose_outside_ties: bool  # ... over the rows that are not same-second ties of an entity
    rows_differing: int
    rows_differing_outside_ties: int
    tie_rows: int
    max_abs_diff: float
    max_abs_diff_outside_ties: float
    per_feature: dict[str, dict[str, float]]


def bench_features(df: pd.DataFrame, customers: int, repeats: int) -> FeatureFigures:
    if customers:
        keep = np.sort(df["CUSTOMER_ID"].unique())[:customers]
        df = df[df["CUSTOMER_ID"].isin(keep)].reset_index(drop=True)
    hb15 = FeatureConfig(history_window_days=0)
    default = FeatureConfig()
    console.print(f"[bold]features[/]: compute_features on {len(df):,} rows (x{repeats}) ...")
    mem_ours: dict[str, int] = {}
    with peak_rss_of_self(mem_ours):
        ours, ours_times = timed(lambda: compute_features(df, hb15), repeats=repeats)
    _, default_times = timed(lambda: compute_features(df, default), repeats=repeats)
    console.print(
        f"[bold]features[/]: the handbook's pandas rolling windows on {len(df):,} rows ..."
    )
    mem_hb: dict[str, int] = {}
    with peak_rss_of_self(mem_hb):
        hb, hb_times = timed(lambda: handbook_features(df))

    a = ours.set_index("TRANSACTION_ID")
    b = hb.set_index("TRANSACTION_ID").loc[a.index]
    # Two transactions of one customer (or terminal) in the same second: we order them by input
    # position (as a stream delivers them); the handbook's sort_values (quicksort, not stable)
    # may swap them, which swaps their window counts. Such rows are reported apart.
    tie = (
        a.duplicated(["CUSTOMER_ID", "TX_DATETIME"], keep=False)
        | a.duplicated(["TERMINAL_ID", "TX_DATETIME"], keep=False)
    ).to_numpy()
    bad = np.zeros(len(a), dtype=bool)
    per_feature, worst, worst_no_tie = {}, 0.0, 0.0
    for col in HANDBOOK_15:
        x = a[col].to_numpy(dtype=np.float64)
        y = b[col].to_numpy(dtype=np.float64)
        close = np.isclose(x, y)
        bad |= ~close
        absdiff = np.abs(x - y)
        diff = float(absdiff.max()) if len(x) else 0.0
        diff_no_tie = float(absdiff[~tie].max()) if (~tie).any() else 0.0
        worst, worst_no_tie = max(worst, diff), max(worst_no_tie, diff_no_tie)
        per_feature[col] = {
            "max_abs_diff": diff,
            "max_abs_diff_outside_ties": diff_no_tie,
            "rows_differing": int((~close).sum()),
        }
    return FeatureFigures(
        rows=len(df),
        customers=customers or "all",
        ours15_s=ours_times,
        ours_default_s=default_times,
        n_default_features=len(default.feature_names()),
        hb_s=hb_times[0],
        ours15_mem=mem_ours,
        hb_mem=mem_hb,
        allclose=bool(not bad.any()),
        allclose_outside_ties=bool(not (bad & ~tie).any()),
        rows_differing=int(bad.sum()),
        rows_differing_outside_ties=int((bad & ~tie).sum()),
        tie_rows=int(tie.sum()),
        max_abs_diff=worst,
        max_abs_diff_outside_ties=worst_no_tie,
        per_feature=per_feature,
    )


# ============================================================================================
# Report


@dataclass
class Row:
    what: str
    measured: str
    target: str
    ratio: str
    verdict: str  # PASS / FAIL / info
    value: float | None = None
    target_value: float | None = None


def mem_ratio(ours: int, baseline: int) -> str:
    if ours <= baseline:
        return f"{baseline / max(ours, 1):.1f}x less"
    return f"{ours / max(baseline, 1):.1f}x more"


def build_rows(
    pipe: PipelineFigures | None, sim: SimulatorFigures | None, feat: FeatureFigures | None
) -> list[Row]:
    rows: list[Row] = []
    if pipe:
        n = f"{pipe.rows:,} rows" if pipe.rows else ""
        rows.append(
            Row(
                f"dvc repro, whole default pipeline ({n})",
                fmt_s(pipe.total_s),
                f"< {fmt_s(TARGET_REPRO_S)}",
                f"{pipe.total_s / TARGET_REPRO_S:.2f} of target",
                verdict(pipe.total_s < TARGET_REPRO_S),
                pipe.total_s,
                TARGET_REPRO_S,
            )
        )
        for st in pipe.stages:
            share = f"{st.wall_s / pipe.total_s:.0%} of repro"
            if st.name == "features":
                rows.append(
                    Row(
                        "  stage features (wall, incl. DVC hashing)",
                        fmt_s(st.wall_s),
                        f"< {fmt_s(TARGET_FEATURES_S)}",
                        f"{st.wall_s / TARGET_FEATURES_S:.2f} of target; {share}",
                        verdict(st.wall_s < TARGET_FEATURES_S),
                        st.wall_s,
                        TARGET_FEATURES_S,
                    )
                )
            else:
                rows.append(
                    Row(
                        f"  stage {st.name} (wall)", fmt_s(st.wall_s), "—", share, "info", st.wall_s
                    )
                )
        peak_stage = max(pipe.stages, key=lambda s: s.peak_tree_pss)
        rows.append(
            Row(
                f"peak memory, dvc process tree, sum of PSS (in stage {peak_stage.name})",
                fmt_bytes(pipe.peak_tree_pss),
                f"< {fmt_bytes(TARGET_PEAK_RSS)}",
                f"{pipe.peak_tree_pss / TARGET_PEAK_RSS:.2f} of target",
                verdict(pipe.peak_tree_pss < TARGET_PEAK_RSS),
                pipe.peak_tree_pss,
                TARGET_PEAK_RSS,
            )
        )
        rows.append(
            Row(
                "  sum of RSS over the tree (shared pages counted per process)",
                fmt_bytes(pipe.peak_tree_rss),
                f"< {fmt_bytes(TARGET_PEAK_RSS)}",
                f"{pipe.peak_tree_rss / TARGET_PEAK_RSS:.2f} of target",
                verdict(pipe.peak_tree_rss < TARGET_PEAK_RSS),
                pipe.peak_tree_rss,
                TARGET_PEAK_RSS,
            )
        )
        if pipe.time_v_max_rss:
            rows.append(
                Row(
                    "  largest single process (/usr/bin/time -v max RSS)",
                    fmt_bytes(pipe.time_v_max_rss),
                    f"< {fmt_bytes(TARGET_PEAK_RSS)}",
                    f"{pipe.time_v_max_rss / TARGET_PEAK_RSS:.2f} of target",
                    verdict(pipe.time_v_max_rss < TARGET_PEAK_RSS),
                    pipe.time_v_max_rss,
                    TARGET_PEAK_RSS,
                )
            )
        med = statistics.median(pipe.noop_s)
        rows.append(
            Row(
                f"no-op dvc repro (median of {len(pipe.noop_s)})",
                fmt_s(med),
                f"< {fmt_s(TARGET_NOOP_S)}",
                f"{med / TARGET_NOOP_S:.2f} of target",
                verdict(med < TARGET_NOOP_S and pipe.noop_up_to_date),
                med,
                TARGET_NOOP_S,
            )
        )
        if pipe.cli_startup_s:
            cli = statistics.median(pipe.cli_startup_s)
            n_stages = len(pipe.stages)
            rows.append(
                Row(
                    f"  `fraud` CLI start-up (fraud --help, median of {len(pipe.cli_startup_s)})",
                    fmt_s(cli),
                    "—",
                    f"x {n_stages} stages = {cli * n_stages / pipe.total_s:.0%} of repro",
                    "info",
                    cli,
                )
            )
    if feat:
        ours = statistics.median(feat.ours15_s)
        subset = "" if feat.customers == "all" else f", first {feat.customers} customers"
        rows.append(
            Row(
                f"features: compute_features, handbook's 15 ({feat.rows:,} rows{subset})",
                fmt_s(ours),
                f"handbook pandas: {fmt_s(feat.hb_s)}",
                f"{feat.hb_s / ours:.0f}x faster",
                verdict(ours < feat.hb_s),
                ours,
                feat.hb_s,
            )
        )
        rows.append(
            Row(
                "  peak extra RSS during the call (ours vs handbook)",
                fmt_bytes(feat.ours15_mem["delta"]),
                f"handbook: {fmt_bytes(feat.hb_mem['delta'])}",
                mem_ratio(feat.ours15_mem["delta"], feat.hb_mem["delta"]),
                "info",
                feat.ours15_mem["delta"],
                feat.hb_mem["delta"],
            )
        )
        rows.append(
            Row(
                f"  compute_features, default config ({feat.n_default_features} features)",
                fmt_s(statistics.median(feat.ours_default_s)),
                "—",
                f"{feat.hb_s / statistics.median(feat.ours_default_s):.0f}x faster than handbook's 15",
                "info",
                statistics.median(feat.ours_default_s),
            )
        )
        rows.append(
            Row(
                "  same values as the handbook (np.allclose, 15 features, all rows)",
                str(feat.allclose),
                "True",
                f"{feat.rows_differing} of {feat.rows:,} rows differ, all in same-second "
                f"ties ({feat.tie_rows} tie rows)"
                if feat.allclose_outside_ties
                else f"{feat.rows_differing_outside_ties} rows differ outside ties",
                "info" if feat.allclose_outside_ties else "FAIL",
            )
        )
        rows.append(
            Row(
                "  ... excluding same-entity same-second ties (order only)",
                str(feat.allclose_outside_ties),
                "True",
                f"max |diff| {feat.max_abs_diff_outside_ties:.1e}",
                verdict(feat.allclose_outside_ties),
            )
        )
    if sim:
        rows.append(
            Row(
                f"simulator: simulate(), {sim.full_customers} customers ({sim.full_rows:,} rows)",
                fmt_s(sim.full_s),
                f"handbook (extrapolated): {fmt_s(sim.hb_full_estimate_s)}",
                f"{sim.hb_full_estimate_s / sim.full_s:.0f}x faster",
                "info",
                sim.full_s,
                sim.hb_full_estimate_s,
            )
        )
        rows.append(
            Row(
                f"simulator: {sim.subset_customers} customers, rows/s (ours vs handbook loop)",
                fmt_rate(sim.ours_rate),
                f"handbook: {fmt_rate(sim.hb_rate)}",
                f"{sim.ours_rate / sim.hb_rate:.0f}x faster",
                verdict(sim.ours_rate > sim.hb_rate),
                sim.ours_rate,
                sim.hb_rate,
            )
        )
    return rows


STAGE_COLUMNS = [
    "stage",
    "wall",
    "command's own",
    "share",
    "peak PSS, tree",
    "peak RSS sum, tree",
    "largest process RSS",
]


def stage_cells(pipe: PipelineFigures) -> list[list[str]]:
    return [
        [
            st.name,
            fmt_s(st.wall_s),
            fmt_s(st.command_s),
            f"{st.wall_s / pipe.total_s:.0%}",
            fmt_bytes(st.peak_tree_pss),
            fmt_bytes(st.peak_tree_rss),
            fmt_bytes(st.peak_proc_rss),
        ]
        for st in pipe.stages
    ]


SUMMARY_COLUMNS = ["what", "measured", "target / baseline", "ratio", "pass/fail"]
SUMMARY_CENTERED = {"pass/fail"}


def summary_cells(rows: list[Row]) -> list[list[str]]:
    return [[r.what, r.measured, r.target, r.ratio, r.verdict] for r in rows]


def markdown(rows: list[Row], pipe: PipelineFigures | None) -> str:
    """The same tables as Markdown (for benchmarks/README.md)."""
    cells = summary_cells(rows)
    for row in cells:  # Markdown drops leading spaces: indent the sub-rows with &nbsp;
        if row[0].startswith("  "):
            row[0] = f"&nbsp;&nbsp;{row[0].strip()}"
    out = markdown_table(SUMMARY_COLUMNS, cells, centered=SUMMARY_CENTERED)
    if pipe:
        out += "\n\n" + markdown_table(STAGE_COLUMNS, stage_cells(pipe))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark the real `dvc repro` of the default pipeline (time per stage, peak "
        "RSS, no-op repro) and the features and simulator steps against the Fraud Detection "
        "Handbook's reference code, measured in the same run. Prints a table and writes JSON.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smaller run: 1,000 customers / 2,000 terminals in the pipeline and the "
        "simulator, feature baseline on 300 customers, simulator baseline on 100",
    )
    p.add_argument("--skip-full", action="store_true", help="skip the dvc repro (baselines only)")
    p.add_argument("--skip-baselines", action="store_true", help="skip the handbook baselines")
    p.add_argument(
        "--features-customers",
        type=int,
        default=None,
        help="run the feature baseline on the rows of the first N customers only "
        "(0 = all rows; default: all, or 300 with --quick)",
    )
    p.add_argument(
        "--sim-customers",
        type=int,
        default=None,
        help="customers for the simulator comparison (default 500, 100 with --quick)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="repeats of our (fast) feature code; median (default 3)",
    )
    p.add_argument(
        "--noop-repeats", type=int, default=3, help="no-op dvc repro runs; median (default 3)"
    )
    p.add_argument(
        "--json",
        type=Path,
        default=RESULTS_DIR / "pipeline.json",
        help="where to write the results (default benchmarks/results/pipeline.json)",
    )
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary project directory")
    p.add_argument("--no-echo", action="store_true", help="do not echo dvc repro's output")
    p.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to this long for the 1-minute load average to drop below 0.5",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quick_sim = {"n_customers": 1000, "n_terminals": 2000} if args.quick else {}
    features_customers = args.features_customers
    if features_customers is None:
        features_customers = 300 if args.quick else 0
    sim_customers = args.sim_customers or (100 if args.quick else 500)

    wait_for_idle(console, 0.5, args.wait_idle)
    machine = {  # with the git commit and local changes the copy is taken from
        **machine_info(("dvc", "pandas", "numpy", "xgboost-cpu", "mlflow")),
        "git_head": git_head(),
        "pipeline_files_dirty": git_dirty(PROJECT_FILES),
    }
    load_before = os.getloadavg()
    console.print(
        f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}"
        f" on {os.cpu_count()} CPUs"
    )
    if load_before[0] > 0.5:
        console.print("[yellow]the machine is busy: timings will be inflated[/]")

    t_start = time.perf_counter()
    pipe = sim = feat = None
    sections: list[Section] = []
    if not args.skip_full:
        with section("pipeline (dvc repro, no-op, CLI start-up)", sections):
            pipe = bench_pipeline(args, quick_sim)
        console.print(rich_table("dvc repro, per stage", STAGE_COLUMNS, stage_cells(pipe)))
    if not args.skip_baselines:
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        cfg = SimulatorConfig.model_validate({**params["simulator"], **quick_sim})
        with section("simulator baseline", sections):
            sim, data = bench_simulator(cfg, sim_customers)
        with section("features baseline", sections):
            feat = bench_features(data, features_customers, args.repeats)
        del data
    load_after = os.getloadavg()
    for sec in sections:
        note = "[yellow] (other work competed for the CPUs)[/]" if sec.other_share > 0.1 else ""
        console.print(
            f"{sec.name}: {fmt_s(sec.wall_s)}, load {sec.load_start:.2f} -> {sec.load_end:.2f}, "
            f"other processes used {sec.other_cpu_s:.1f} CPU-s "
            f"({sec.other_share:.0%} of the machine){note}"
        )

    rows = build_rows(pipe, sim, feat)
    mode = (
        "QUICK (smaller data; the targets are for the full default run)" if args.quick else "full"
    )
    title = (
        f"Pipeline benchmark ({mode}); load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after; {os.cpu_count()} CPUs"
    )
    console.print(
        rich_table(title, SUMMARY_COLUMNS, summary_cells(rows), centered=SUMMARY_CENTERED)
    )
    if feat and not feat.allclose_outside_ties:
        console.print("per-feature differences:", feat.per_feature)

    out = {
        "command": command_line(),
        "mode": "quick" if args.quick else "full",
        "machine": machine,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "sections": [{**asdict(sec), "other_share": sec.other_share} for sec in sections],
        "elapsed_s": time.perf_counter() - t_start,
        "targets": {
            "repro_s": TARGET_REPRO_S,
            "features_stage_s": TARGET_FEATURES_S,
            "peak_rss_bytes": TARGET_PEAK_RSS,
            "noop_repro_s": TARGET_NOOP_S,
        },
        "table": [asdict(r) for r in rows],
        "pipeline": asdict(pipe) if pipe else None,
        "simulator": asdict(sim) if sim else None,
        "features": asdict(feat) if feat else None,
    }
    if args.markdown:
        print(markdown(rows, pipe))
    console.print(f"wrote {write_results(args.json, out)}")
    failed = [r.what.strip() for r in rows if r.verdict == "FAIL"]
    if failed:
        console.print(f"[bold red]{len(failed)} row(s) miss their target or baseline[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
