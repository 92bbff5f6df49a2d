#!/usr/bin/env python
"""Drift-detection calibration: false alarms on no-drift days, detection on shifted days, CPU.

What it does (docs/monitoring.md, "Drift detection" has the table this printed and what it means):

1. Reference: the training window's rows (params.yaml `split`: 2018-07-04 .. 2018-07-31) of
   data/features/transactions.parquet, scored by the registered champion (`fraud.registry`,
   MLflow store `MLFLOW_TRACKING_URI`, default sqlite:///<project>/mlflow.db), in the
   monitoring frame layout (`monitoring.frames`).
2. Current batches: each later day (2018-08-01 .. 2018-09-30), a no-drift period of the default
   simulation, so every firing is a false alarm. Then the same days with the raw amounts
   multiplied by 1.1 and 1.3 from 2018-08-01 on, and with a share of the terminals replaced by
   new, unseen ones from that day on (their transactions move there, so terminal counts, risk
   and customer-terminal features shift); features are recomputed with `compute_features` from
   the modified raw transactions (two weeks of history before the onset included) and rescored.
3. Each batch goes through `monitoring.drift.detect_drift` twice (PSI and Jensen-Shannon on the
   same reference bins) and through `drift_detected` with the defaults of `DriftConfig` and the
   champion's top-5 features by gain as the important ones. Per column group and method, the
   false-alarm rate per daily batch at several thresholds and the detection rate on the shifted
   days come from the recorded statistics.
4. CPU-seconds per batch (process time) at 10k and 100k rows, and the same batches through
   Evidently's untuned `DataDriftPreset` (`Report.run`) on a sample of the days, with its
   per-column flags and its "half the columns" dataset flag beside ours.

    python benchmarks/monitoring_calibration.py               # about 2-3 minutes
    python benchmarks/monitoring_calibration.py --no-score    # without the MLflow store
    python benchmarks/monitoring_calibration.py --evidently-days 0 --markdown
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, for `python <this>`

from benchmarks.common.evidently_preset import DATASET_DRIFT_SHARE, evidently_run
from benchmarks.common.machine import machine_info
from benchmarks.common.project import RESULTS_DIR, ROOT, git_dirty, git_head
from benchmarks.common.report import command_line, markdown_table, rich_table, write_results
from fraud.features import FeatureConfig, compute_features
from monitoring.checks import Check
from monitoring.drift import (
    ColumnRule,
    DriftConfig,
    DriftReference,
    detect_drift,
    drift_detected,
    fit_reference,
    top_features,
)
from monitoring.frames import ALERT, AMOUNT, SCORE

DATA = ROOT / "data" / "features" / "transactions.parquet"
REF_START, REF_END = "2018-07-04", "2018-08-01"  # params.yaml split: 28 days from train_start
ONSET, LAST = "2018-08-01", "2018-10-01"
HISTORY_START = "2018-06-01"  # recomputed features need 30 days of customer history + delays
RAW = ["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD"]
RAW_EXTRA = ["TX_FRAUD_SCENARIO"]
THRESHOLDS = {
    "psi": [0.01, 0.02, 0.05, 0.1, 0.2],
    "jensenshannon": [0.02, 0.05, 0.1],
}
TARGET_FALSE_ALARMS = 0.01
TARGET_CPU_10K = 1.0

console = Console(width=None if sys.stdout.isatty() else 200)


@dataclass
class Model:
    features: list[str]
    threshold: float
    predict: Callable[[np.ndarray], np.ndarray]
    importance: dict[str, float]
    label: str


@dataclass
class Scenario:
    name: str
    frame: pd.DataFrame  # the monitoring layout, rows on/after ONSET
    shifted: bool
    columns: Sequence[str] = ()  # the columns a detector should see move (plus the score)
    #: Detection is counted on the first this many days (a new terminal population ages into
    #: the normal one: its terminals build a history); None: every day (a lasting shift).
    window_days: int | None = None
    records: list[dict[str, Any]] = field(default_factory=list)


# ============================================================================================
# Data


def load_model(no_score: bool) -> Model | None:
    if no_score:
        return None
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlflow.db'}")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from fraud.registry import load_version

    reg, booster = load_version("fraud-detector", alias="champion")
    return Model(
        features=reg.features,
        threshold=reg.threshold,
        predict=lambda x: np.asarray(booster.inplace_predict(x)),
        importance={
            k: float(v)  # type: ignore[arg-type]  # gain is one float per feature
            for k, v in booster.get_score(importance_type="gain").items()
        },
        label=reg.label,
    )


def to_frame(df: pd.DataFrame, features: Sequence[str], model: Model | None) -> pd.DataFrame:
    """Feature rows in the monitoring layout (log columns first, then one column per feature)."""
    out = pd.DataFrame(
        {
            "transaction_id": df["TRANSACTION_ID"].to_numpy(),
            "tx_datetime": df["TX_DATETIME"].to_numpy(),
            "customer_id": df["CUSTOMER_ID"].to_numpy(),
            "terminal_id": df["TERMINAL_ID"].to_numpy(),
            AMOUNT: df["TX_AMOUNT"].to_numpy(dtype=float),
        }
    )
    if model is not None:
        score = model.predict(df[model.features].to_numpy(dtype=np.float32))
        out[SCORE] = score.astype(float)
        out[ALERT] = (score >= model.threshold).astype(np.int64)
    for f in features:
        out[f] = df[f].to_numpy(dtype=float)
    return out


def shifted_features(
    raw: pd.DataFrame, fcfg: FeatureConfig, *, amount_x: float = 1.0, new_terminals: float = 0.0
) -> pd.DataFrame:
    """Features recomputed after the shift: amounts x `amount_x`, and the transactions of a
    `new_terminals` share of the terminals moved to new terminals, from ONSET on."""
    df = raw[raw["TX_DATETIME"] >= HISTORY_START].copy()
    after = (df["TX_DATETIME"] >= ONSET).to_numpy()
    if amount_x != 1.0:
        df.loc[after, "TX_AMOUNT"] = (df.loc[after, "TX_AMOUNT"] * amount_x).round(2)
    if new_terminals:
        terminals = np.unique(df["TERMINAL_ID"].to_numpy())
        rng = np.random.default_rng(7)
        moved = rng.choice(terminals, size=round(new_terminals * terminals.size), replace=False)
        offset = int(terminals.max()) + 1
        hit = after & df["TERMINAL_ID"].isin(moved).to_numpy()
        df.loc[hit, "TERMINAL_ID"] = df.loc[hit, "TERMINAL_ID"] + offset
    feats = compute_features(df[[*RAW, *[c for c in RAW_EXTRA if c in df.columns]]], fcfg)
    return feats[feats["TX_DATETIME"] >= ONSET]


# ============================================================================================
# Running the detector


def method_config(base: DriftConfig, method: str) -> DriftConfig:
    """`base` with every column rule's method set to `method` (same bins and sample floors)."""

    def swap(r: ColumnRule) -> ColumnRule:
        return r.model_copy(update={"method": method})

    return base.model_copy(
        update={
            "continuous": swap(base.continuous),
            "categorical": swap(base.categorical),
            "amount": swap(base.amount),
            "score": swap(base.score),
        }
    )


def group_of(c: Check) -> str:
    if c.column == SCORE:
        return "score"
    if c.column == ALERT:
        return "alert rate"
    if c.column == AMOUNT:
        return "amount"
    return f"{c.detail.get('column_kind', 'categorical')} features"


def run_days(
    sc: Scenario, ref: DriftReference, cfg: DriftConfig, js_cfg: DriftConfig
) -> list[float]:
    """Every day of the scenario through both methods; returns CPU-seconds per daily batch."""
    cpu: list[float] = []
    for day, batch in sc.frame.groupby(sc.frame["tx_datetime"].dt.normalize()):
        t0 = time.process_time()
        checks = detect_drift(ref, batch, cfg)
        flag, reasons = drift_detected(checks, cfg)
        cpu.append(time.process_time() - t0)
        js = {c.name: c.statistic for c in detect_drift(ref, batch, js_cfg)}
        for c in checks:
            if "skipped" in c.detail:
                continue
            sc.records.append(
                {
                    "scenario": sc.name,
                    "day": day,
                    "rows": len(batch),
                    "check": c.name,
                    "column": c.column,
                    "group": group_of(c),
                    "psi": c.statistic if c.method == "psi" else np.nan,
                    "jensenshannon": js.get(c.name, np.nan)
                    if c.method != "alert_rate_ratio"
                    else np.nan,
                    "ratio": c.statistic if c.column == ALERT else np.nan,
                    "p_value": c.detail.get("p_value", np.nan),
                    "fired": c.fired,
                    "flag": flag,
                    "reasons": " | ".join(reasons),
                }
            )
    return cpu


def cpu_per_batch(ref: DriftReference, frame: pd.DataFrame, cfg: DriftConfig, rows: int) -> float:
    batch = frame.sample(rows, random_state=1, replace=len(frame) < rows)
    best = np.inf
    for _ in range(3):
        t0 = time.process_time()
        drift_detected(detect_drift(ref, batch, cfg), cfg)
        best = min(best, time.process_time() - t0)
    return float(best)


# ============================================================================================
# Evidently's untuned preset on the same batches


# ============================================================================================
# Tables


def pct(x: float) -> str:
    return "—" if np.isnan(x) else f"{x:.1%}"


def in_window(records: pd.DataFrame, sc: Scenario) -> pd.DataFrame:
    if sc.window_days is None:
        return records
    return records[records["day"] < pd.Timestamp(ONSET) + pd.Timedelta(days=sc.window_days)]


def scenario_label(sc: Scenario) -> str:
    return sc.name if sc.window_days is None else f"{sc.name} (first {sc.window_days} days)"


def calibration_rows(records: pd.DataFrame, scenarios: list[Scenario]) -> list[list[str]]:
    """Per group, method and threshold: false alarms per column-day on no drift (and per day
    for any column of the group), detection on each shifted scenario's target columns."""
    rows: list[list[str]] = []
    base = records[records["scenario"] == "no drift"]
    shifted = [s for s in scenarios if s.shifted]
    for group in sorted(base["group"].unique()):
        if group == "alert rate":
            continue
        g = base[base["group"] == group]
        for method, thresholds in THRESHOLDS.items():
            for thr in thresholds:
                fired = g[method] >= thr
                per_day = fired.groupby(g["day"]).any().mean()
                cells = [
                    group,
                    method,
                    f"{thr:g}",
                    pct(fired.mean()),
                    pct(float(per_day)),
                    f"{g[method].quantile(0.99):.3f}",
                ]
                for s in shifted:
                    r = in_window(records[records["scenario"] == s.name], s)
                    r = r[r["column"].isin([*s.columns, SCORE]) & (r["group"] == group)]
                    if r.empty:
                        cells.append("—")
                    else:
                        cells.append(pct(float((r[method] >= thr).groupby(r["day"]).any().mean())))
                rows.append(cells)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--no-score", action="store_true", help="skip the champion: no score or alert checks"
    )
    ap.add_argument(
        "--evidently-days",
        type=int,
        default=6,
        help="no-drift days also run through Evidently (0: none)",
    )
    ap.add_argument(
        "--evidently-reference",
        type=int,
        default=50_000,
        help="reference rows sampled for Evidently",
    )
    ap.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    ap.add_argument("--records", type=Path, help="also write every check's statistics (Parquet)")
    ap.add_argument("--json", type=Path, default=RESULTS_DIR / "monitoring_calibration.json")
    args = ap.parse_args()
    t_start = time.perf_counter()

    model = load_model(args.no_score)
    fcfg = FeatureConfig()
    features = list(fcfg.names.ordered)
    raw = pd.read_parquet(DATA)
    console.print(f"{len(raw):,} rows; model: {model.label if model else 'none (--no-score)'}")
    ref_rows = raw[(raw["TX_DATETIME"] >= REF_START) & (raw["TX_DATETIME"] < REF_END)]
    reference = to_frame(ref_rows, features, model)
    important = top_features(model.importance, 5) if model else []
    cfg = DriftConfig().model_copy(
        update={
            "dataset": DriftConfig().dataset.model_copy(update={"important_columns": important})
        }
    )
    js_cfg = method_config(cfg, "jensenshannon")
    t0 = time.process_time()
    ref = fit_reference(reference, cfg)
    fit_cpu = time.process_time() - t0
    console.print(
        f"reference: {len(reference):,} rows, fitted in {fit_cpu:.2f} CPU-s; important: {important}"
    )

    after = raw[(raw["TX_DATETIME"] >= ONSET) & (raw["TX_DATETIME"] < LAST)]
    terminal_cols = [f for f in features if f.startswith(("TERMINAL_ID", "CUSTOMER_TERMINAL"))]
    scenarios = [Scenario("no drift", to_frame(after, features, model), shifted=False)]
    for name, kw, cols, window in (
        ("amount x1.1", {"amount_x": 1.1}, [AMOUNT, "TX_AMOUNT"], None),
        ("amount x1.3", {"amount_x": 1.3}, [AMOUNT, "TX_AMOUNT"], None),
        ("10% new terminals", {"new_terminals": 0.1}, terminal_cols, 7),
    ):
        t0 = time.perf_counter()
        feats = shifted_features(raw, fcfg, **kw)  # type: ignore[arg-type]
        feats = feats[feats["TX_DATETIME"] < LAST]
        scenarios.append(
            Scenario(
                name,
                to_frame(feats, features, model),
                shifted=True,
                columns=cols,
                window_days=window,
            )
        )
        console.print(f"scenario {name}: features recomputed in {time.perf_counter() - t0:.1f} s")

    cpu_days: dict[str, list[float]] = {}
    for sc in scenarios:
        cpu_days[sc.name] = run_days(sc, ref, cfg, js_cfg)
    records = pd.DataFrame([r for sc in scenarios for r in sc.records])
    if args.records:
        records.to_parquet(args.records)

    # -- dataset-level flag and per-check false alarms at the defaults
    flags = records.groupby(["scenario", "day"])["flag"].first()
    verdict_rows = []
    for sc in scenarios:
        f = flags.loc[sc.name]
        f = f[f.index < pd.Timestamp(ONSET) + pd.Timedelta(days=sc.window_days or 10_000)]
        fired_checks = in_window(records[records["scenario"] == sc.name], sc)
        fired_checks = fired_checks[fired_checks["fired"]]
        top = fired_checks["check"].value_counts().head(4)
        verdict_rows.append(
            [
                scenario_label(sc),
                str(len(f)),
                pct(float(f.mean())),
                "yes" if bool(f.iloc[0]) else "no",
                "false alarms" if not sc.shifted else "detection",
                ", ".join(f"{k} ({v})" for k, v in top.items()) or "—",
            ]
        )
    defaults_cols = [
        "scenario",
        "daily batches",
        "drift_detected",
        "on 2018-08-01",
        "meaning",
        "checks that fired (days)",
    ]

    calib_cols = [
        "group",
        "method",
        "threshold",
        "false alarms / column-day",
        "days with any",
        "p99 no drift",
    ] + [f"detect: {s.name}" for s in scenarios if s.shifted]
    calib = calibration_rows(records, scenarios)

    # -- alert rate on its own (statistic = ratio)
    alert = records[records["group"] == "alert rate"]

    # -- CPU per batch
    nodrift = scenarios[0].frame
    cpu10 = cpu_per_batch(ref, nodrift, cfg, 10_000)
    cpu100 = cpu_per_batch(ref, nodrift, cfg, 100_000)
    cpu_rows = [
        [
            "ours: detect_drift + drift_detected",
            "10k",
            f"{cpu10:.3f}",
            "≤ 1",
            "PASS" if cpu10 <= TARGET_CPU_10K else "FAIL",
        ],
        ["ours", "100k", f"{cpu100:.3f}", "", "info"],
        [
            "ours: fit_reference (once per model)",
            f"{len(reference) // 1000}k ref",
            f"{fit_cpu:.2f}",
            "",
            "info",
        ],
    ]

    # -- Evidently's untuned preset
    ev_rows: list[list[str]] = []
    ev: dict[str, Any] = {}
    if args.evidently_days:
        ev_cols = [AMOUNT, *features, *([SCORE] if model else [])]
        ev_ref = reference.sample(min(args.evidently_reference, len(reference)), random_state=0)
        days = sorted(nodrift["tx_datetime"].dt.normalize().unique())
        picked = [
            days[i] for i in np.linspace(0, len(days) - 1, args.evidently_days).round().astype(int)
        ]
        col_flags, shares, cpus = [], [], []
        for d in picked:
            batch = nodrift[nodrift["tx_datetime"].dt.normalize() == d]
            cpu, fl, share = evidently_run(ev_ref, batch, ev_cols)
            cpus.append(cpu)
            col_flags.append(fl)
            shares.append(share)
        fa = pd.DataFrame(col_flags)
        t_cur = nodrift.sample(100_000, random_state=1)
        cpu_ev100, _, _ = evidently_run(ev_ref, t_cur, ev_cols)
        shifted_ev = []
        for sc in scenarios[1:]:
            # a lasting shift: a day a month in; a population that ages in: its first day
            last_day = pd.Timestamp(ONSET) + pd.Timedelta(days=0 if sc.window_days else 30)
            batch = sc.frame[sc.frame["tx_datetime"].dt.normalize() == last_day]
            _, fl, share = evidently_run(ev_ref, batch, ev_cols)
            ours = records[(records["scenario"] == sc.name) & (records["day"] == last_day)]
            shifted_ev.append(
                [
                    sc.name,
                    str(last_day.date()),
                    ", ".join(sorted(k for k, v in fl.items() if v)) or "—",
                    f"{share:.0%} → {'drift' if share >= DATASET_DRIFT_SHARE else 'no drift'}",
                    ", ".join(sorted(ours.loc[ours["fired"], "column"].astype(str))) or "—",
                    "drift" if bool(ours["flag"].iloc[0]) else "no drift",
                ]
            )
        ev = {
            "days": [str(pd.Timestamp(d).date()) for d in picked],
            "cpu_per_batch": cpus,
            "cpu_100k": cpu_ev100,
            "false_alarms_per_column_day": float(fa.to_numpy().mean()),
            "columns_firing": {k: int(v) for k, v in fa.sum().items() if v},
            "dataset_flag_days": int(sum(s >= DATASET_DRIFT_SHARE for s in shares)),
            "shifted": shifted_ev,
        }
        cpu_rows += [
            [
                f"Evidently DataDriftPreset ({len(ev_ref) // 1000}k ref)",
                "10k",
                f"{np.median(cpus):.2f}",
                "≤ 1",
                "PASS" if np.median(cpus) <= 1 else "FAIL",
            ],
            ["Evidently", "100k", f"{cpu_ev100:.2f}", "", "info"],
        ]
        ev_rows = [
            [
                "no drift",
                str(len(picked)),
                pct(ev["false_alarms_per_column_day"]),
                f"{ev['dataset_flag_days']} of {len(picked)}",
                ", ".join(f"{k} ({v})" for k, v in ev["columns_firing"].items()) or "—",
            ]
        ]

    # -- print
    console.print(
        rich_table(
            "drift_detected at the defaults (daily batches)",
            defaults_cols,
            verdict_rows,
            text_columns=["meaning", "checks that fired (days)"],
        )
    )
    console.print(rich_table("Per-column methods and thresholds", calib_cols, calib, left=2))
    alert_rows = [
        [
            name,
            f"{g['ratio'].min():.2f}",
            f"{g['ratio'].median():.2f}",
            f"{g['ratio'].max():.2f}",
            pct(float(g["fired"].mean())),
        ]
        for name, g in alert.groupby("scenario", sort=False)
    ]
    alert_cols = ["scenario", "ratio min", "median", "max", "fired (days)"]
    if alert_rows:
        console.print(rich_table("Alert rate: current / reference per day", alert_cols, alert_rows))
    console.print(
        rich_table(
            "CPU-seconds per batch", ["what", "rows", "CPU-s", "target", "verdict"], cpu_rows
        )
    )
    if ev_rows:
        console.print(
            rich_table(
                "Evidently's untuned DataDriftPreset, no-drift days",
                [
                    "scenario",
                    "batches",
                    "false alarms / column-day",
                    "dataset flag (half the columns)",
                    "columns that fired (days)",
                ],
                ev_rows,
                text_columns=["columns that fired (days)"],
            )
        )
        console.print(
            rich_table(
                "A shifted day (onset for new terminals, a month in for amounts): Evidently vs ours",
                [
                    "scenario",
                    "day",
                    "Evidently columns",
                    "Evidently share",
                    "our columns",
                    "our drift_detected",
                ],
                ev["shifted"],
                text_columns=["Evidently columns", "our columns"],
            )
        )
    if args.markdown:
        print(
            markdown_table(
                defaults_cols, verdict_rows, text_columns=["meaning", "checks that fired (days)"]
            )
        )
        print()
        print(markdown_table(calib_cols, calib, left=2))
        print()
        print(markdown_table(alert_cols, alert_rows))
        print()
        print(markdown_table(["what", "rows", "CPU-s", "target", "verdict"], cpu_rows))
        if ev_rows:
            print()
            print(
                markdown_table(
                    [
                        "scenario",
                        "batches",
                        "false alarms / column-day",
                        "dataset flag (half the columns)",
                        "columns that fired (days)",
                    ],
                    ev_rows,
                )
            )
            print()
            print(
                markdown_table(
                    [
                        "scenario",
                        "day",
                        "Evidently columns",
                        "Evidently share",
                        "our columns",
                        "our drift_detected",
                    ],
                    ev["shifted"],
                )
            )
    path = write_results(
        args.json,
        {
            "command": command_line(),
            "git": {"head": git_head(), "dirty": git_dirty(["monitoring", "benchmarks"])},
            "machine": machine_info(["numpy", "pandas", "scipy", "evidently"]),
            "config": cfg.model_dump(),
            "defaults": verdict_rows,
            "calibration": calib,
            "alert_rate": alert_rows,
            "cpu": cpu_rows,
            "cpu_daily_batches_median": {k: float(np.median(v)) for k, v in cpu_days.items()},
            "evidently": ev,
            "wall_s": time.perf_counter() - t_start,
        },
    )
    console.print(f"results: {path}; {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
