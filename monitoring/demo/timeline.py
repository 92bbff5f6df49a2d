"""What the demo saw, day by day: rows, the console line of each, the files, and the picture."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from monitoring.verdict import write_text_atomic

#: Short names of the checks in the console line (the verdict has the full ones).
_SHORT = {"performance": "perf", "prediction": "pred", "estimate": "est", "data": "data"}


@dataclass
class DayRow:
    """One simulated day: the traffic, the labels, the monitoring run, what retraining did."""

    day: dt.date
    regime_on: bool
    transactions: int
    alerts: int
    frauds: int  # truth, in the day's transactions
    labels_sent: int  # labels that came back through /feedback during the day
    served_by: dict[str, int]  # model version -> predictions
    drift_detected: bool
    signals: list[str]  # the checks that fired
    retrain_triggered: bool
    decision: str  # the policy's last reason
    retraining: str | None = None  # the flow run and the gate's decision
    promoted_version: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["day"] = self.day.isoformat()
        return d

    def signal_text(self, limit: int = 3) -> str:
        if not self.signals:
            return "-"
        shown = ", ".join(self.signals[:limit])
        return shown + (f" +{len(self.signals) - limit}" if len(self.signals) > limit else "")

    def served_text(self) -> str:
        return "+".join(f"v{v}" for v in sorted(self.served_by, key=int)) or "-"


def decision_text(row: DayRow) -> str:
    if row.retraining:
        return row.retraining
    if row.retrain_triggered:
        return "retraining triggered"
    return row.decision


def write_timeline(path: Path, rows: list[DayRow], summary: dict[str, Any]) -> None:
    """timeline.json: every day and the demo's summary (written atomically)."""
    doc = {"summary": summary, "days": [r.as_dict() for r in rows]}
    write_text_atomic(path, json.dumps(doc, indent=2, default=str) + "\n")


def markdown(rows: list[DayRow]) -> str:
    lines = [
        "| day | regime | transactions | alerts | frauds | labels back | served by | drift | "
        "signals | retraining |",
        "|---|---|---:|---:|---:|---:|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.day} | {'changed' if r.regime_on else 'as trained'} | {r.transactions:,} | "
            f"{r.alerts:,} | {r.frauds:,} | {r.labels_sent:,} | {r.served_text()} | "
            f"{'yes' if r.drift_detected else 'no'} | {r.signal_text(5)} | "
            f"{decision_text(r).replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"


def plot(
    path: Path,
    rows: list[DayRow],
    daily: pd.DataFrame,
    first_version: str,
    promoted: list[tuple[dt.date, str]],
    onset: dt.date,
) -> None:
    """timeline.png: each day's average precision (truth labels) of the served model and of
    the first champion on the same transactions, with the onset, the drift flags, the
    retrainings triggered and the promotions marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 5.5), dpi=110)
    days = pd.to_datetime(daily["day"])
    ax.plot(days, daily["served"], "-o", ms=3.5, color="#1f77b4", label="served model")
    col = f"v{first_version}"
    if col in daily:
        ax.plot(days, daily[col], "--", color="#999999", label=f"v{first_version} (first champion)")
    ax.axvline(pd.Timestamp(onset), color="#d62728", lw=1.5)
    ax.text(pd.Timestamp(onset), 1.02, " regime changes", color="#d62728", va="bottom", fontsize=9)
    drift = [pd.Timestamp(r.day) for r in rows if r.drift_detected]
    ax.scatter(
        drift, [0.03] * len(drift), marker="s", s=18, color="#ff7f0e", label="drift detected"
    )
    trig = [pd.Timestamp(r.day) for r in rows if r.retrain_triggered]
    ax.scatter(
        trig, [0.09] * len(trig), marker="^", s=60, color="#9467bd", label="retraining triggered"
    )
    for day, version in promoted:
        ax.axvline(pd.Timestamp(day), color="#2ca02c", lw=1.5, ls=":")
        ax.text(
            pd.Timestamp(day),
            1.02,
            f" v{version} champion",
            color="#2ca02c",
            va="bottom",
            fontsize=9,
        )
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("average precision of the day (all labels)")
    ax.set_title("Drift demo: detection, retraining, promotion", loc="left")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=9)
    fig.autofmt_xdate()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.part")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)
