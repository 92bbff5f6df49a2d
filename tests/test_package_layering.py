"""Who may import whom (docs/architecture.md), read from every import statement of the code:
`fraud` imports none of the other packages; `pipelines`, `serving` and `monitoring` import
`fraud` and not each other (monitoring starts retraining only through a Prefect flow run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fraud", "pipelines", "serving", "monitoring")
ALLOWED = {
    "fraud": {"fraud"},
    "pipelines": {"fraud", "pipelines"},
    "serving": {"fraud", "serving"},
    "monitoring": {"fraud", "monitoring"},
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level project package, line) of every import in the file, also inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES:
                found.add((top, node.lineno))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_what_the_architecture_allows(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    wrong = [
        f"{f.relative_to(ROOT)}:{line} imports {top}"
        for f in files
        for top, line in sorted(imported_packages(f))
        if top not in ALLOWED[package]
    ]
    assert not wrong, "\n".join(wrong)


def test_the_rule_is_able_to_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from pipelines.train import train_model\n")
    assert imported_packages(bad) == {("pipelines", 2)}
