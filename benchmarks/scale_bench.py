#!/usr/bin/env python
"""Scale benchmark: how the pipeline's wall time and peak memory grow with the data, stage by
stage, in-process and on a Dask LocalCluster, and batch scoring's rows per second.

For each factor (default 1, 4, 16) it makes a temporary copy of the project (the pipeline
benchmark's `prepare_project`: git + DVC, its own MLflow SQLite store) with the simulator
scaled (benchmarks/scale/scaling.py: f times the rows, days x f**0.5 and customers and
terminals x the rest at the same density), then runs every stage as DVC does, one
`python -m pipelines.cli STAGE` process after the other (not `dvc repro`: a stage is timed from
its process start to its exit, without DVC's hashing). A thread samples the stage's whole
process tree every 50 ms (sum of PSS from /proc/<pid>/smaps_rollup, so the LocalCluster's
worker processes count, and shared pages once). Then `make score`'s command
(`python -m pipelines.cli score`) on the factor's raw file with the registered version: rows per
second over the command's own time. With the `dask` engine, the stages that have a Dask path
run again in the same copy with params.yaml's `compute.engine: dask`.

MLflow is in because `make score` loads a registered model: the register stage registers into
the copy's SQLite store. Prefect is out (the stages run as DVC runs them).

A stage whose tree passes --max-memory (or the machine's available memory falls below
--min-available) is stopped and reported with what it reached; so is one over --stage-timeout.

    python -m benchmarks.scale_bench                                  # 1, 4, 16 x local, dask
    python -m benchmarks.scale_bench --factors 1,4 --engines local    # a quicker curve
    python -m benchmarks.scale_bench --factors 0.1 --no-plot          # smoke run (~1 minute)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psutil
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks.common.machine import busy_cpu_s, machine_info, wait_for_idle
from benchmarks.common.project import RESULTS_DIR, ROOT, git_dirty, git_head
from benchmarks.common.report import (
    GIB,
    command_line,
    fmt_bytes,
    markdown_table,
    rich_table,
    write_results,
)
from benchmarks.pipeline_bench import PROJECT_FILES, RssSampler, bench_env, prepare_project
from benchmarks.scale.curve import (
    SLOPE_COLUMNS,
    TABLE_COLUMNS,
    StageRun,
    plot,
    slope_rows,
    table_rows,
    write_csv,
)
from benchmarks.scale.scaling import ScaleError, check_split_inside, scale_simulator

#: The stages in dvc.yaml's order; register only to give `score` a registered model.
STAGES = ["ingest", "validate", "features", "train", "evaluate", "prequential", "register"]
#: The stages whose code switches on `compute.engine` (pipelines/params.py's compute section).
DASK_STAGES = ["features", "train"]
FIGURE = ROOT / "benchmarks" / "figures" / "scale.png"
COMMAND_DONE = re.compile(r"✓ (\w+) \(([\d.]+) s\)")

console = Console(width=None if sys.stdout.isatty() else 200)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.scale_bench",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--factors", default="1,4,16", help="data-size factors (default 1,4,16)")
    p.add_argument("--engines", default="local,dask", help="local, dask or both (default both)")
    p.add_argument(
        "--days-exponent",
        type=float,
        default=0.5,
        help="days grow x factor**E, customers and terminals x the rest (default 0.5; 0: days "
        "fixed)",
    )
    p.add_argument("--dask-workers", type=int, default=2, help="LocalCluster workers (default 2)")
    p.add_argument("--dask-partitions", type=int, default=None, help="compute.partitions")
    p.add_argument(
        "--dask-memory-limit",
        help="compute.memory_limit of each LocalCluster worker, e.g. 8GiB (default: params.yaml's)",
    )
    p.add_argument(
        "--code",
        choices=["head", "worktree"],
        default="head",
        help="measure the committed pipeline (default) or the working tree's files",
    )
    p.add_argument(
        "--skip-stages",
        default="",
        help="comma-separated stages to leave out (prequential: 4 more fits like train's; "
        "train,evaluate,register with --score-model-from)",
    )
    p.add_argument(
        "--score-model-from",
        type=Path,
        metavar="DIR",
        help="score with the model that another project copy registered (its mlflow.db and "
        "reports/registration.json), e.g. a kept 1x copy: the scoring cost depends on the rows "
        "and the model's size, not on the data that trained it",
    )
    p.add_argument("--no-score", action="store_true", help="leave out batch scoring")
    p.add_argument(
        "--max-memory", type=float, default=18.0, help="GiB: stop a stage whose tree passes it"
    )
    p.add_argument(
        "--min-available",
        type=float,
        default=1.5,
        help="GiB: stop a stage when the machine's available memory falls below it",
    )
    p.add_argument("--stage-timeout", type=float, default=3600.0, help="seconds per stage")
    p.add_argument("--wait-idle", type=float, default=0.0, help="wait up to S s for load < 0.5")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary project copies")
    p.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "scale.json")
    p.add_argument("--csv", type=Path, default=RESULTS_DIR / "scale.csv")
    p.add_argument("--plot", type=Path, default=FIGURE, help=f"default {FIGURE.relative_to(ROOT)}")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="measure nothing: merge these results files (runs done apart, e.g. 16x after 1x "
        "and 4x) into one table, CSV and plot",
    )
    args = p.parse_args(argv)
    try:
        args.factor_list = [float(x) for x in args.factors.split(",") if x.strip()]
    except ValueError:
        p.error(f"--factors: {args.factors!r} is not a comma-separated list of numbers")
    args.engine_list = [e.strip() for e in args.engines.split(",") if e.strip()]
    for e in args.engine_list:
        if e not in ("local", "dask"):
            p.error(f"--engines: {e!r} is not one of local, dask")
    args.skip = {x.strip() for x in args.skip_stages.split(",") if x.strip()}
    # The Dask stages read the raw file and the validation report: ingest and validate always
    # run in process; the in-process features only when nothing else makes them.
    skippable = {"train", "evaluate", "prequential", "register"}
    if "dask" in args.engine_list:
        skippable.add("features")
    elif skippable <= args.skip:  # nothing reads the features: scoring featurises the file itself
        skippable |= {"validate", "features"}
    for x in args.skip:
        if x not in skippable:
            p.error(f"--skip-stages: {x!r} is not one of {', '.join(sorted(skippable))}")
    return args


# ============================================================================================
# One stage, measured


def over_limits(peak: int, t0: float, args: argparse.Namespace) -> str | None:
    """Why a stage must stop now (its memory, the machine's, its time), or None."""
    avail = psutil.virtual_memory().available
    if peak > args.max_memory * GIB:
        return f"stopped: memory {fmt_bytes(peak)} > --max-memory {args.max_memory:g} GiB"
    if avail < args.min_available * GIB:
        return f"stopped: the machine's available memory fell to {fmt_bytes(avail)}"
    if time.perf_counter() - t0 > args.stage_timeout:
        return f"stopped: timeout {args.stage_timeout:.0f} s"
    return None


def run_stage(
    cmd: list[str], run: StageRun, tmp: Path, env: dict[str, str], args: argparse.Namespace
) -> None:
    """Run `cmd` in `tmp`, sample its process tree, fill `run` (stopping it when over limits)."""
    log = tmp / f"bench-{run.engine}-{run.stage}.log"
    t0, busy0 = time.perf_counter(), busy_cpu_s()
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        sampler = RssSampler(proc.pid, lambda: "stage")
        sampler.start()
        # os.wait4, not Popen.poll/wait: the exit status and the CPU time of the stage and of
        # every process it waited for (a LocalCluster's workers), robust to other work on the
        # machine, which wall time is not.
        reaped = None
        try:
            while reaped is None:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    reaped = status, usage
                    break
                why = over_limits(sampler.peak_tree.get("stage", 0), t0, args)
                if why and run.ok:
                    run.status = why
                    os.killpg(proc.pid, 9)  # our own child's session
                time.sleep(0.2)
        finally:
            if reaped is None:  # interrupted: stop the stage and reap it
                os.killpg(proc.pid, 9)
                _, status, usage = os.wait4(proc.pid, 0)
            sampler.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    run.cpu_s = usage.ru_utime + usage.ru_stime
    run.wall_s = time.perf_counter() - t0
    run.peak_pss = sampler.peak_tree.get("stage", 0)
    run.peak_rss_sum = sampler.peak_tree_rss.get("stage", 0)
    run.peak_proc_rss = sampler.peak_proc.get("stage", 0)
    run.at_peak = sampler.at_peak.get("stage", [])
    run.processes_at_peak = len(run.at_peak)
    other = max(busy_cpu_s() - busy0 - run.cpu_s, 0.0)
    run.other_cpu_share = other / max(run.wall_s * (os.cpu_count() or 1), 1e-9)
    text = log.read_text(errors="replace")
    if m := COMMAND_DONE.search(text):
        run.command_s = float(m.group(2))
    if run.ok and proc.returncode != 0:
        tail = " / ".join(line for line in text.strip().splitlines()[-3:])
        run.status = f"failed: exit {proc.returncode}: {tail[-300:]}"


# ============================================================================================
# One factor: a project copy, every stage in-process, then the Dask stages, then scoring


def base_params(code: str) -> dict[str, Any]:
    """params.yaml as committed (`--code head`) or as in the working tree."""
    if code == "head":
        text = subprocess.run(
            ["git", "show", "HEAD:params.yaml"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    else:
        text = (ROOT / "params.yaml").read_text()
    params: dict[str, Any] = yaml.safe_load(text)
    return params


def write_params(tmp: Path, update: dict[str, Any]) -> dict[str, Any]:
    """Merge `update` (sections) into the copy's params.yaml; the merged params."""
    path = tmp / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in update.items():
        if isinstance(values, dict) and isinstance(params.get(section), dict):
            params[section].update(values)
        else:
            params[section] = values
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def dask_params(base: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """params.yaml's `compute:` for a LocalCluster of --dask-workers processes."""
    if "compute" not in base:
        raise ScaleError(
            "--engines dask: params.yaml has no `compute:` section (compute.engine: local|dask)"
        )
    compute: dict[str, Any] = {"engine": "dask"}
    if "n_workers" in base["compute"]:
        compute["n_workers"] = args.dask_workers
    if args.dask_partitions:
        compute["partitions"] = args.dask_partitions
    if args.dask_memory_limit:
        compute["memory_limit"] = args.dask_memory_limit
    return compute


def bench_factor(
    factor: float,
    args: argparse.Namespace,
    progress: Progress,
    runs: list[StageRun],
    save: Callable[[], None],
) -> dict[str, Any]:
    """Every stage of one factor; `save()` after each, so a run cut short keeps its figures."""
    tmp = Path(tempfile.mkdtemp(prefix=f"fraud-scale-{factor:g}x-"))
    env = bench_env(tmp)
    env.pop("DASK_SCHEDULER_ADDRESS", None)  # the LocalCluster, not somebody's cluster
    base = base_params(args.code)
    scaled = scale_simulator(base["simulator"], factor, args.days_exponent)
    info: dict[str, Any] = {"factor": factor, "simulator": scaled.describe(), "dir": str(tmp)}
    try:
        prepare_project(tmp, env, {})
        if args.code == "head":
            code_from_head(tmp, env)
        params = write_params(tmp, {"simulator": scaled.params})
        check_split_inside(params)
        console.print(f"[bold]{factor:g}x[/]: {scaled.describe()} in {tmp}")
        plan = [("local", s) for s in STAGES if s not in args.skip]
        if "dask" in args.engine_list:
            compute = dask_params(base, args)
            plan += [("dask", s) for s in DASK_STAGES]
        task = progress.add_task(f"{factor:g}x", total=len(plan) + (0 if args.no_score else 1))
        rows = 0
        switched = False
        for engine, stage in plan:
            if engine == "dask" and not switched:
                write_params(tmp, {"compute": compute})
                switched = True
            progress.update(task, description=f"{factor:g}x {engine} {stage}")
            run = StageRun(factor, engine, stage, rows)
            run_stage([sys.executable, "-m", "pipelines.cli", stage], run, tmp, env, args)
            if stage == "ingest" and run.ok:
                rows = raw_rows(tmp)
                run.rows = rows
            runs.append(run)
            save()
            progress.advance(task)
            console.print(summary_line(run))
            if not run.ok and engine == "local" and stage in ("ingest", "validate", "features"):
                break  # nothing downstream can run
        if not args.no_score:
            progress.update(task, description=f"{factor:g}x score")
            score_run(tmp, env, args, factor, rows, runs)
            save()
            progress.advance(task)
        return info
    finally:
        if args.keep_tmp:
            console.print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def code_from_head(tmp: Path, env: dict[str, str]) -> None:
    """Replace the copy's pipeline files with the committed ones: a run of an hour must not
    measure (or break on) someone's half-made edit in a shared checkout."""
    paths = [p for p in PROJECT_FILES if (ROOT / p).exists()]
    archive = subprocess.run(
        ["git", "archive", "HEAD", *paths], cwd=ROOT, capture_output=True, check=True
    ).stdout
    for p in paths:
        target = tmp / p
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
    subprocess.run(["git", "add", "-A"], cwd=tmp, env=env, check=True, capture_output=True)
    subprocess.run(
        ["git", "commit", "-q", "--allow-empty", "-m", f"the pipeline at {git_head()}"],
        cwd=tmp,
        env=env,
        check=True,
        capture_output=True,
    )


def raw_rows(tmp: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(tmp / "data/raw/transactions.parquet").metadata.num_rows)


def score_run(
    tmp: Path,
    env: dict[str, str],
    args: argparse.Namespace,
    factor: float,
    rows: int,
    runs: list[StageRun],
) -> None:
    """`make score`'s command on the factor's raw file, with the version the register stage
    registered (named: it may have stayed @challenger at a gate)."""
    run = StageRun(factor, "local", "score", rows)
    model_dir = args.score_model_from or tmp
    reg = model_dir / "reports/registration.json"
    if not reg.exists():
        run.status = f"failed: no registered model ({reg} does not exist)"
        runs.append(run)
        return
    version = str(json.loads(reg.read_text())["version"])
    if args.score_model_from:
        env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{(model_dir / 'mlflow.db').resolve()}"}
    cmd = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "score",
        "--input",
        "data/raw/transactions.parquet",
    ]
    cmd += ["--output", str(tmp / "scores.parquet"), "--model-version", version]
    run_stage(cmd, run, tmp, env, args)
    if run.ok and run.command_s:
        run.rows_per_s = rows / run.command_s
    runs.append(run)
    console.print(summary_line(run))


def summary_line(r: StageRun) -> str:
    state = "[green]ok[/]" if r.ok else f"[bold red]{r.status}[/]"
    return (
        f"  {r.factor:g}x {r.engine:5} {r.stage:12} {r.wall_s:8.1f} s  "
        f"{fmt_bytes(r.peak_pss):>9} ({r.processes_at_peak} proc)  {state}"
    )


# ============================================================================================


def print_tables(runs: list[StageRun], markdown: bool) -> None:
    rows = table_rows(runs)
    console.print(
        rich_table("Scale: wall time and peak memory per stage", TABLE_COLUMNS, rows, left=3)
    )
    srows = slope_rows(runs)
    console.print(
        rich_table("How cost grows with rows (log-log slope)", SLOPE_COLUMNS, srows, left=2)
    )
    if markdown:
        print(markdown_table(TABLE_COLUMNS, rows, left=3), "\n")
        print(markdown_table(SLOPE_COLUMNS, srows, left=2, text_columns={"largest at"}))


def write_outputs(runs: list[StageRun], args: argparse.Namespace) -> None:
    """The CSV and the plot (the JSON is written by the caller)."""
    if not runs:
        return
    write_csv(args.csv, runs)
    console.print(f"csv: {args.csv}")
    if not args.no_plot:
        title = (
            f"fraud pipeline scale curve, {os.cpu_count()} CPUs, git {git_head()}, "
            f"days x f^{args.days_exponent:g}, customers and terminals x the rest"
        )
        plot(args.plot, runs, title)
        console.print(f"plot: {args.plot}")


def report_merged(args: argparse.Namespace) -> int:
    """--from-json: the runs of several results files as one table, CSV and plot. A stage
    measured again at the same factor and engine (the in-process ingest and validate that a
    Dask-only run repeats) keeps the first file's figures."""
    runs: list[StageRun] = []
    sources = []
    for path in args.from_json:
        data = json.loads(path.read_text())
        sources.append(
            {"file": str(path), "command": data.get("command"), "git": data.get("git_commit")}
        )
        seen = {(r.factor, r.engine, r.stage) for r in runs}
        runs += [
            StageRun(**{**r, "at_peak": [tuple(x) for x in r.get("at_peak", [])]})
            for r in data["runs"]
            if (r["factor"], r["engine"], r["stage"]) not in seen
        ]
    runs.sort(key=lambda r: (r.factor, r.engine != "local"))
    print_tables(runs, args.markdown)
    merged = {"command": command_line(), "merged_from": sources, "runs": [asdict(r) for r in runs]}
    console.print(f"results: {write_results(args.json, merged)}")
    write_outputs(runs, args)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return report_merged(args)
    base = base_params(args.code)
    try:
        for f in args.factor_list:
            scale_simulator(base["simulator"], f, args.days_exponent)
        if "dask" in args.engine_list:
            dask_params(base, args)
    except ScaleError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        return 2
    wait_for_idle(console, 0.5, args.wait_idle)
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    runs: list[StageRun] = []
    factors: list[dict[str, Any]] = []
    head = git_head()  # the commit the copies take their code from (--code head)

    def save() -> None:
        results = {
            "command": command_line(),
            "git_commit": head,
            "code": args.code,
            "git_dirty": git_dirty(PROJECT_FILES) if args.code == "worktree" else [],
            "machine": machine_info(
                ["pandas", "numpy", "xgboost-cpu", "dask", "distributed", "mlflow"]
            ),
            "load_start": load_start,
            "load_end": os.getloadavg()[0],
            "wall_s": time.perf_counter() - started,
            "days_exponent": args.days_exponent,
            "factors": factors,
            "runs": [asdict(r) for r in runs],
        }
        write_results(args.json, results)

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        for f in args.factor_list:
            try:
                factors.append(bench_factor(f, args, progress, runs, save))
            except (ScaleError, RuntimeError) as e:
                console.print(f"[bold red]{f:g}x failed:[/] {e}", highlight=False)
                factors.append({"factor": f, "error": str(e)})
    print_tables(runs, args.markdown)
    save()
    console.print(f"results: {args.json}")
    write_outputs(runs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
