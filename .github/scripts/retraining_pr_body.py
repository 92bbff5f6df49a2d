"""The body of the pull request that monitor.yml opens after a triggered retraining: why it ran
(the monitoring verdict's reasons), what the gate decided, and the retrained model's metrics
against the ones committed on the branch (reports/metrics.json), as a Markdown table.

    python .github/scripts/retraining_pr_body.py --summary summary.json \
        --base reports/metrics.json --new runs/retrain/reports/metrics.json \
        --registration runs/retrain/reports/registration.json --dvc-file data/production/x.parquet.dvc

The base metrics come from `dvc repro` on the DVC data and the new ones from the retraining on
that data plus production weeks, on a test window that follows the data: the table shows how
the numbers moved, not a paired comparison (that is the gate's, on the same rows, quoted above
the table). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: The metrics a reviewer reads first, in this order; others follow alphabetically.
HEADLINE = ("average_precision", "roc_auc", "card_precision_at_100")


def flat_numbers(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every numeric leaf of a metrics file, keyed by its dotted path (as `dvc metrics` does)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_numbers(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def metrics_table(base: dict[str, Any], new: dict[str, Any]) -> str:
    """| metric | main | retrained | change |, headline metrics first; '—' where one side lacks it."""
    old, cur = flat_numbers(base), flat_numbers(new)
    names = [n for n in HEADLINE if n in old or n in cur]
    names += sorted((set(old) | set(cur)) - set(names))
    rows = ["| metric | main | retrained | change |", "| --- | ---: | ---: | ---: |"]
    for n in names:
        a, b = old.get(n), cur.get(n)
        change = f"{b - a:+.4f}" if a is not None and b is not None else "—"
        rows.append(f"| {n} | {_fmt(a)} | {_fmt(b)} | {change} |")
    return "\n".join(rows)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def body(
    summary: dict[str, Any],
    base: dict[str, Any],
    new: dict[str, Any],
    registration: dict[str, Any],
    dvc_file: str,
) -> str:
    reasons = summary.get("retrain_reasons") or ["(none recorded)"]
    window = f"{summary.get('window_start', '?')[:10]} .. {summary.get('window_end', '?')[:10]}"
    lines = [
        f"The monitoring run of {window} (model version {summary.get('model_version', '?')}, "
        f"{summary.get('transactions', 0):,} transactions) triggered a retraining:",
        "",
        *[f"- {r}" for r in reasons],
        "",
        f"The retraining added the production transactions with matured labels, versioned by DVC "
        f"as `{dvc_file}` (pushed to the DVC remote), and registered "
        f"`{registration.get('model_name', '?')}` version {registration.get('version', '?')}.",
        "",
        f"**Gate: {registration.get('decision', '?')}**: {registration.get('reason', '')}",
        "",
        metrics_table(base, new),
        "",
        "Merging records this data in the repository's history, so this model's training data "
        "can be restored (`dvc pull`). The gate has already set the alias above in the registry; "
        "to undo it, `fraud rollback --reason ...` (docs/ci-cd.md, monitor.yml).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--summary", type=Path, required=True, help="monitoring flow's --json")
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--new", type=Path, required=True)
    parser.add_argument("--registration", type=Path, required=True)
    parser.add_argument("--dvc-file", required=True)
    args = parser.parse_args(argv)
    try:
        summary, base, new, registration = (
            json.loads(p.read_text())
            for p in (args.summary, args.base, args.new, args.registration)
        )
    except (OSError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(body(summary, base, new, registration, args.dvc_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
