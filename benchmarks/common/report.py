"""How the benchmarks report: verdicts against targets, tables (rich on the terminal, Markdown
for benchmarks/README.md), the numbers in them, and the JSON results file."""

from __future__ import annotations

import json
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from benchmarks.common.project import RESULTS_DIR, ROOT

GIB = 1024**3
MIB = 1024**2

#: How a verdict cell looks on the terminal (Markdown shows the word).
VERDICT_STYLE = {
    "PASS": "[green]PASS[/]",
    "FAIL": "[bold red]FAIL[/]",
    "n/a": "[yellow]n/a[/]",
    "info": "[dim]info[/]",
}
#: A cell starting with one of these says the measurement is not clean: shown in red.
FLAGS = ("FLAGGED", "FAILED")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _alignments(
    columns: Sequence[str], left: int, text_columns: Collection[str], centered: Collection[str]
) -> list[str]:
    """Text on the left (the first `left` columns and `text_columns`), numbers on the right."""
    return [
        "center" if col in centered else "left" if i < left or col in text_columns else "right"
        for i, col in enumerate(columns)
    ]


def rich_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    left: int = 1,
    text_columns: Collection[str] = (),
    centered: Collection[str] = (),
) -> Table:
    """A table for the terminal: verdicts coloured (`VERDICT_STYLE`), flagged cells in red,
    every other cell printed as it is (no rich markup)."""
    t = Table(title=title, title_justify="left")
    for col, justify in zip(
        columns, _alignments(columns, left, text_columns, centered), strict=True
    ):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    for cells in rows:
        shown = [escape(c) for c in cells]
        t.add_row(
            *(
                VERDICT_STYLE.get(c, f"[bold red]{c}[/]" if c.startswith(FLAGS) else c)
                for c in shown
            )
        )
    return t


def markdown_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    left: int = 1,
    text_columns: Collection[str] = (),
    centered: Collection[str] = (),
) -> str:
    """The same table in Markdown, aligned the same way."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    marks = {"left": "---", "right": "---:", "center": ":---:"}
    align = [marks[a] for a in _alignments(columns, left, text_columns, centered)]
    return "\n".join([line(columns), line(align), *(line(r) for r in rows)])


def fmt_s(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def fmt_bytes(b: float | None) -> str:
    if b is None:
        return "—"
    return f"{b / GIB:.2f} GiB" if b >= GIB else f"{b / MIB:.0f} MiB"


def fmt_rate(r: float) -> str:
    """Rows per second."""
    return f"{r / 1e6:.2f} M rows/s" if r >= 1e6 else f"{r / 1e3:.1f} k rows/s"


def fmt_ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}x" if x < 100 else f"{x:.0f}x"


def command_line() -> str:
    """How this benchmark was started, for its results."""
    return " ".join([Path(sys.executable).name, *sys.argv])


def write_results(path: Path, results: dict[str, Any]) -> str:
    """Write `results` as JSON to `path` and return the path as shown (relative to the project
    when inside it); RESULTS_DIR gets a .gitignore that keeps the results out of git."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ignore = path.parent / ".gitignore"
    if path.parent == RESULTS_DIR and not ignore.exists():
        ignore.write_text("*.json\n")
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
