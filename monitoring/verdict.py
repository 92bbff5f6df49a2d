"""The verdict of one monitoring run: every check, the cohort figures, the decision; as JSON.

`Verdict.write` replaces the file atomically (a temporary file in the same folder, renamed over
the target), so a run that fails half-way leaves the previous verdict intact. `summary_rows`
and `render_summary` give the one-screen summary `make monitor` prints.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitoring.checks import Check

if TYPE_CHECKING:
    from rich.console import Console

    from monitoring.estimate import CalibrationReport, Estimate
    from monitoring.performance import CohortMetrics
    from monitoring.policy import Decision

SCHEMA_VERSION = 1


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file renamed over it: readers see the old
    file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _number(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else str(x)


def describe_check(check: Check) -> str:
    """One sentence: the check, its statistic, its threshold and the outcome."""
    where = f" on {check.column}" if check.column else ""
    outcome = "fired" if check.fired else "did not fire"
    return (
        f"{check.name}{where} {outcome}: {check.method} = {_number(check.statistic)} "
        f"(threshold {_number(check.threshold)})"
    )


def _json_safe(value: Any) -> Any:
    """NaN and infinities as null: strict JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


@dataclass(frozen=True)
class Verdict:
    """What one monitoring run found and decided."""

    window_start: str  # ISO 8601, UTC, transaction time
    window_end: str
    as_of: str
    model_name: str
    model_version: str
    reference: str  # what the checks compared with
    checks: list[dict[str, Any]]
    cohorts: list[dict[str, Any]]  # CohortMetrics.as_dict of every matured cohort
    estimates: list[dict[str, Any]]  # Estimate.as_dict of every recent cohort
    drift_detected: bool
    drift_reasons: list[str]
    retrain_triggered: bool
    retrain_reasons: list[str]
    calibration: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. report paths

    @classmethod
    def build(
        cls,
        *,
        window_start: dt.datetime,
        window_end: dt.datetime,
        as_of: dt.datetime,
        model_name: str,
        model_version: str,
        reference: str,
        checks: Iterable[Check],
        cohorts: Iterable[CohortMetrics] = (),
        estimates: Iterable[Estimate] = (),
        decision: Decision,
        calibration: CalibrationReport | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Verdict:
        """The verdict from the run's parts: drift is detected when any check fired (each
        fired check is a reason); the retraining decision is the policy's."""
        checks = list(checks)
        fired = [c for c in checks if c.fired]
        return cls(
            window_start=window_start.isoformat(),
            window_end=window_end.isoformat(),
            as_of=as_of.isoformat(),
            model_name=model_name,
            model_version=str(model_version),
            reference=reference,
            checks=[c.as_dict() for c in checks],
            cohorts=[c.as_dict() for c in cohorts],
            estimates=[e.as_dict() for e in estimates],
            drift_detected=bool(fired),
            drift_reasons=[describe_check(c) for c in fired],
            retrain_triggered=decision.trigger,
            retrain_reasons=list(decision.reasons),
            calibration=calibration.as_dict() if calibration is not None else None,
            extra=dict(extra or {}),
        )

    def check_objects(self) -> list[Check]:
        """The checks as `Check`s (a statistic stored as null reads back as NaN)."""
        return [
            Check.from_dict(
                {**d, "statistic": _float(d["statistic"]), "threshold": _float(d["threshold"])}
            )
            for d in self.checks
        ]

    def to_json(self) -> str:
        return json.dumps(_json_safe(asdict(self)), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Verdict:
        """Parse a verdict; raises ValueError naming a missing or unknown key."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("verdict: expected a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"verdict: unknown key(s) {unknown}")
        try:
            return cls(**data)
        except TypeError as e:
            raise ValueError(f"verdict: {e}") from e

    def write(self, path: Path) -> None:
        """Write atomically: a failure leaves the previous verdict at `path` intact."""
        write_text_atomic(Path(path), self.to_json())

    @classmethod
    def read(cls, path: Path) -> Verdict:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    def summary_rows(self) -> list[tuple[str, str, str, str]]:
        """(section, item, value, status) rows: drift per feature, prediction drift,
        performance on matured cohorts, the estimate for recent ones, the decision."""
        rows: list[tuple[str, str, str, str]] = []
        section = {"data": "data drift", "prediction": "prediction drift"}
        for kind in ("data", "prediction"):
            for c in (c for c in self.checks if c["kind"] == kind):
                rows.append(
                    (
                        section[kind],
                        c.get("column") or c["name"],
                        f"{c['method']} {_shown(c['statistic'])} / {_shown(c['threshold'])}",
                        _status(c["fired"]),
                    )
                )
        for m in self.cohorts:
            value = (
                f"AP {_shown(m['average_precision'])}  recall {_shown(m['recall'])}  "
                f"precision {_shown(m['precision'])}  CP@{m['k']} "
                f"{_shown(m['card_precision_at_k'])}  ({m['frauds']} frauds)"
                if m["counted"]
                else f"{m['frauds']} frauds: too few to count"
            )
            rows.append(("matured", m["start"][:10], value, ""))
        for e in self.estimates:
            value = (
                f"AP {_shown(e['average_precision'])} [{_shown(e['average_precision_low'])}, "
                f"{_shown(e['average_precision_high'])}]  recall {_shown(e['recall'])} "
                f"[{_shown(e['recall_low'])}, {_shown(e['recall_high'])}]  "
                f"(~{_shown(e['expected_frauds'])} frauds)"
            )
            rows.append(("estimate", e["start"][:10], value, ""))
        for c in (c for c in self.checks if c["kind"] in ("performance", "estimate")):
            rows.append(
                (
                    c["kind"],
                    c["name"],
                    f"{c['method']} {_shown(c['statistic'])} / {_shown(c['threshold'])}",
                    _status(c["fired"]),
                )
            )
        decision = "RETRAIN" if self.retrain_triggered else "no retraining"
        rows.append(("decision", decision, "; ".join(self.retrain_reasons), ""))
        return rows


def _float(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _shown(x: Any) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def _status(fired: bool) -> str:
    return "DRIFT" if fired else "ok"


def render_summary(verdict: Verdict, console: Console) -> None:
    """Print the verdict's summary as one rich table."""
    from rich.table import Table

    table = Table(
        title=(
            f"{verdict.model_name} v{verdict.model_version}: "
            f"{verdict.window_start} .. {verdict.window_end} (as of {verdict.as_of})"
        ),
        show_lines=False,
    )
    for name in ("section", "item", "value", "status"):
        table.add_column(name, overflow="fold")
    styles = {"DRIFT": "bold red", "ok": "green"}
    for section, item, value, status in verdict.summary_rows():
        style = "bold" if section == "decision" else None
        table.add_row(
            section, item, value, f"[{styles[status]}]{status}[/]" if status else "", style=style
        )
    console.print(table)
