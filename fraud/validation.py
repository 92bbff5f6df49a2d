"""The data contract's validator: check raw transactions against `fraud/schema.py`.

Every rule is a vectorised check that yields the offending rows; a violation names the column,
the rule, how many rows break it and a few example rows, so that the fix is obvious. The
pipeline's validate stage, batch scoring and monitoring's file mode all check data with it; in
the pipeline any violation stops the run (the CLI exits non-zero) and nothing downstream is
overwritten.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from fraud import schema
from fraud.schema import ContractLimits

MAX_EXAMPLES = 5
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Violation:
    column: str
    rule: str
    rows: int
    examples: list[dict[str, object]] = field(default_factory=list)

    def describe(self) -> str:
        ex = "; ".join(
            ", ".join(f"{k}={v}" for k, v in e.items()) for e in self.examples[:MAX_EXAMPLES]
        )
        if not self.examples:  # a rule of the whole file (a missing column): no row to show
            return f"{self.column}: {self.rule} ({self.rows} rows)"
        return f"{self.column}: {self.rule} ({self.rows} rows), e.g. [{ex}]"


@dataclass
class ValidationReport:
    rows: int
    violations: list[Violation]
    frauds: int | None = None
    first: str | None = None
    last: str | None = None

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "frauds": self.frauds,
            "first": self.first,
            "last": self.last,
            "violations": [asdict(v) for v in self.violations],
        }


class ContractViolationError(ValueError):
    """The data breaks the contract; `report` has every violation."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        lines = "\n  ".join(v.describe() for v in report.violations)
        super().__init__(
            f"{len(report.violations)} data contract violation(s) in {report.rows} rows:\n  {lines}"
        )


def _examples(
    df: pd.DataFrame, mask: np.ndarray | pd.Series, column: str
) -> list[dict[str, object]]:
    idx = np.flatnonzero(np.asarray(mask))[:MAX_EXAMPLES]
    cols = [c for c in (schema.TRANSACTION_ID, column) if c in df.columns]
    out = []
    for i in idx:
        row: dict[str, object] = {"row": int(i)}
        for c in cols:
            v = df[c].iloc[i]
            row[c] = None if pd.isna(v) else (v.item() if hasattr(v, "item") else str(v))
        out.append(row)
    return out


def validate_transactions(raw: pd.DataFrame, limits: ContractLimits) -> ValidationReport:
    """Check every rule of the contract; returns a report (no exception)."""
    violations: list[Violation] = []

    def check(column: str, rule: str, mask: np.ndarray | pd.Series, frame: pd.DataFrame) -> None:
        n = int(np.asarray(mask).sum())
        if n:
            violations.append(Violation(column, rule, n, _examples(frame, mask, column)))

    required = list(schema.RAW_COLUMNS) + ([schema.TX_FRAUD] if limits.require_labels else [])
    missing = [c for c in required if c not in raw.columns]
    for c in missing:
        # A near miss (case, spaces) is the usual cause: name the column the file has instead.
        near = [str(f) for f in raw.columns if str(f).strip().upper() == c and str(f) != c]
        hint = f" (the file has {near[0]!r}: names are exact, upper case)" if near else ""
        found = ", ".join(map(str, raw.columns))
        violations.append(
            Violation(c, f"required column is missing{hint}; the file's columns: {found}", len(raw))
        )
    if missing:
        return ValidationReport(len(raw), violations)

    df = schema.coerce_types(raw)
    # Show the original value in examples: that is what the user has to find in their file.
    shown = raw

    for col in df.columns.intersection(list(schema.RAW_COLUMNS) + list(schema.LABEL_COLUMNS)):
        was_null = raw[col].isna().to_numpy()
        now_null = df[col].isna().to_numpy()
        if col == schema.TX_FRAUD_SCENARIO:
            continue  # optional, may be empty where unknown
        check(col, "must not be null", was_null, shown)
        kind = "a datetime" if col == schema.TX_DATETIME else "a number"
        check(col, f"must be {kind} (value does not parse)", now_null & ~was_null, shown)

    for col in (schema.TRANSACTION_ID, schema.CUSTOMER_ID, schema.TERMINAL_ID):
        v = df[col]
        present = v.notna()
        check(col, "must be a whole number", present & ~schema.is_integral(v.fillna(0)), shown)
        check(col, "must not be negative", present & (v < 0), shown)
        # Compare as float: 2**63 - 1 rounds up to 2**63 in float64.
        check(col, f"must be at most {INT64_MAX} (int64)", present & (v >= 2.0**63), shown)

    amount = df[schema.TX_AMOUNT]
    present = amount.notna()
    finite = np.isfinite(amount.to_numpy(dtype="float64", na_value=np.nan))
    check(schema.TX_AMOUNT, "must be finite", present & ~finite, shown)
    check(schema.TX_AMOUNT, "must not be negative", present & (amount < 0), shown)
    check(
        schema.TX_AMOUNT,
        f"must not exceed validate.max_amount={limits.max_amount:g} (absurd amount)",
        present & finite & (amount > limits.max_amount),
        shown,
    )

    ts = df[schema.TX_DATETIME]
    lo, hi = pd.Timestamp(limits.min_datetime), pd.Timestamp(limits.max_datetime)
    check(
        schema.TX_DATETIME,
        f"must lie between {lo.date()} and {hi.date()}",
        ts.notna() & ((ts < lo) | (ts >= hi)),
        shown,
    )
    values = ts.to_numpy()
    back_in_time = np.zeros(len(ts), dtype=bool)
    if len(ts) > 1:
        prev_max = pd.Series(values).ffill().cummax().shift(1).to_numpy()
        back_in_time = ts.notna().to_numpy() & (values < prev_max)
    check(
        schema.TX_DATETIME,
        "rows must be in time order (earlier than a previous row; sort the file by TX_DATETIME)",
        back_in_time,
        shown,
    )

    dup = df[schema.TRANSACTION_ID].notna() & df[schema.TRANSACTION_ID].duplicated(keep="first")
    check(schema.TRANSACTION_ID, "must be unique (duplicate id)", dup, shown)

    if schema.TX_FRAUD in df.columns:
        y = df[schema.TX_FRAUD]
        check(schema.TX_FRAUD, "must be 0 or 1", y.notna() & ~y.isin([0, 1]), shown)
    if schema.TX_FRAUD_SCENARIO in df.columns:
        s = df[schema.TX_FRAUD_SCENARIO]
        check(
            schema.TX_FRAUD_SCENARIO,
            "must be a whole number from 0 to 127 where given",
            s.notna() & ~(schema.is_integral(s.fillna(0)) & (s >= 0) & (s <= 127)),
            shown,
        )

    frauds = (
        int(df[schema.TX_FRAUD].sum()) if schema.TX_FRAUD in df.columns and not violations else None
    )
    return ValidationReport(
        rows=len(df),
        violations=violations,
        frauds=frauds,
        first=str(ts.min()) if len(ts) else None,
        last=str(ts.max()) if len(ts) else None,
    )


def to_contract_frame(raw: pd.DataFrame, limits: ContractLimits) -> pd.DataFrame:
    """Validate and return the frame in the contract's dtypes; raises ContractViolationError."""
    report = validate_transactions(raw, limits)
    if not report.ok:
        raise ContractViolationError(report)
    cols = [c for c in {**schema.RAW_COLUMNS, **schema.LABEL_COLUMNS} if c in raw.columns]
    df = schema.coerce_types(raw[cols])
    if schema.TX_FRAUD_SCENARIO in df.columns:
        df[schema.TX_FRAUD_SCENARIO] = df[schema.TX_FRAUD_SCENARIO].fillna(-1)
    return schema.finalize_types(df)
