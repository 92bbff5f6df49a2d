"""The scale benchmark's results: one `StageRun` per factor, engine and stage; the table with
ratios against 1x in-process, the log-log slope of each stage's cost against rows, the CSV and
the plot."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.common.report import GIB, fmt_bytes, fmt_rate, fmt_ratio, fmt_s

BASELINE_ENGINE = "local"


@dataclass
class StageRun:
    """One stage's process tree at one factor on one engine."""

    factor: float
    engine: str
    stage: str
    rows: int = 0  # rows of the factor's raw file
    status: str = "ok"  # ok | failed: ... | stopped: memory ... | stopped: timeout ...
    wall_s: float = 0.0  # process start to exit (interpreter start-up and imports included)
    command_s: float | None = None  # what the `fraud <stage>` command prints (its own work)
    cpu_s: float = 0.0  # CPU-seconds of the stage's process and every process it waited for
    peak_pss: int = 0  # peak sum of PSS over the stage's process tree (each page once)
    peak_rss_sum: int = 0  # peak sum of RSS (shared pages counted in every process)
    peak_proc_rss: int = 0  # peak RSS of the largest single process
    processes_at_peak: int = 0
    other_cpu_share: float = 0.0  # share of the machine other processes used meanwhile
    rows_per_s: float | None = None  # score only: rows / command's own time
    at_peak: list[tuple[int, str, int, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def baseline(runs: Sequence[StageRun], stage: str) -> StageRun | None:
    """The smallest factor's in-process run of `stage` (1x when it was measured)."""
    cands = [r for r in runs if r.stage == stage and r.engine == BASELINE_ENGINE and r.ok]
    return min(cands, key=lambda r: r.factor, default=None)


def slope(runs: Sequence[StageRun], stage: str, engine: str, attr: str) -> float | None:
    """Least-squares slope of log(attr) against log(rows): 1 = linear in the data."""
    pts = [
        (math.log(r.rows), math.log(v))
        for r in runs
        if r.stage == stage and r.engine == engine and r.ok and r.rows
        for v in [getattr(r, attr)]
        if v
    ]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in pts) / sxx


TABLE_COLUMNS = [
    "factor",
    "engine",
    "stage",
    "rows",
    "wall",
    "command's own",
    "CPU",
    "peak memory (sum of PSS)",
    "largest process",
    "wall vs 1x local",
    "memory vs 1x local",
    "other CPU",
    "status",
]


def table_rows(runs: Sequence[StageRun]) -> list[list[str]]:
    out = []
    for r in runs:
        base = baseline(runs, r.stage)
        wall_ratio = r.wall_s / base.wall_s if base and r.ok and base.wall_s else None
        mem_ratio = r.peak_pss / base.peak_pss if base and base.peak_pss else None
        own = fmt_s(r.command_s)
        if r.rows_per_s:
            own += f" ({fmt_rate(r.rows_per_s)})"
        out.append(
            [
                f"{r.factor:g}x",
                r.engine,
                r.stage,
                f"{r.rows:,}",
                fmt_s(r.wall_s),
                own,
                fmt_s(r.cpu_s),
                fmt_bytes(r.peak_pss),
                fmt_bytes(r.peak_proc_rss),
                fmt_ratio(wall_ratio),
                fmt_ratio(mem_ratio),
                f"{r.other_cpu_share:.0%}",
                r.status if r.ok else f"FAILED {r.status}",
            ]
        )
    return out


SLOPE_COLUMNS = [
    "stage",
    "engine",
    "wall-time slope",
    "CPU-time slope",
    "memory slope",
    "largest at",
    "memory per million rows",
]


def slope_rows(runs: Sequence[StageRun]) -> list[list[str]]:
    """Per stage and engine: how cost grows with rows (log-log slope), and its largest run."""
    out = []
    keys = dict.fromkeys((r.stage, r.engine) for r in runs)
    for stage, engine in keys:
        mine = [r for r in runs if r.stage == stage and r.engine == engine and r.ok]
        if not mine:
            continue
        top = max(mine, key=lambda r: r.rows)
        ws, ms = slope(runs, stage, engine, "wall_s"), slope(runs, stage, engine, "peak_pss")
        cs = slope(runs, stage, engine, "cpu_s")
        out.append(
            [
                stage,
                engine,
                "—" if ws is None else f"{ws:.2f}",
                "—" if cs is None else f"{cs:.2f}",
                "—" if ms is None else f"{ms:.2f}",
                f"{top.factor:g}x: {fmt_s(top.wall_s)}, {fmt_bytes(top.peak_pss)}",
                fmt_bytes(top.peak_pss / max(top.rows, 1) * 1e6),
            ]
        )
    return out


def write_csv(path: Path, runs: Sequence[StageRun]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = [k for k in asdict(runs[0]) if k != "at_peak"] if runs else []
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in runs:
            w.writerow(asdict(r))


def plot(path: Path, runs: Sequence[StageRun], title: str) -> None:
    """Wall time, CPU time and peak memory against rows, log-log: one colour per stage, a solid line for
    in-process, dashed for Dask; a run that did not finish is an x at what it reached."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(dict.fromkeys(r.stage for r in runs))
    engines = list(dict.fromkeys(r.engine for r in runs))
    colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(stages)}
    styles = {"local": "-", "dask": "--"}
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.6))
    for ax, attr, label in (
        (axes[0], "wall_s", "wall time (s)"),
        (axes[1], "cpu_s", "CPU time of the process tree (s)"),
        (axes[2], "peak_pss", "peak memory of the process tree (GiB)"),
    ):
        scale = 1 / GIB if attr == "peak_pss" else 1.0
        for stage in stages:
            for engine in engines:
                mine = sorted(
                    (r for r in runs if r.stage == stage and r.engine == engine and r.rows),
                    key=lambda r: r.rows,
                )
                done = [r for r in mine if r.ok]
                if done:
                    ax.plot(
                        [r.rows for r in done],
                        [getattr(r, attr) * scale for r in done],
                        styles.get(engine, ":"),
                        marker="o",
                        color=colours[stage],
                        label=f"{stage} ({engine})",
                    )
                for r in mine:
                    if not r.ok:
                        ax.plot(r.rows, getattr(r, attr) * scale, "x", ms=10, color=colours[stage])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows of raw transactions")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[2].legend(fontsize=7, ncol=2, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
