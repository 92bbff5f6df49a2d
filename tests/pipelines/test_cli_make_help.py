"""`make help`: every target's name stands apart from its description, in one aligned column."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_separates_every_target_from_its_description_in_one_column() -> None:
    documented = re.findall(r"^([a-z-]+):.*## ", (ROOT / "Makefile").read_text(), re.M)
    proc = subprocess.run(
        ["make", "--no-print-directory", "-s", "help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    lines = proc.stdout.splitlines()
    parsed = [re.fullmatch(r"  make ([a-z-]+)( +)(\S.*)", line) for line in lines]
    assert all(parsed), [line for line, m in zip(lines, parsed, strict=True) if not m]
    assert [m.group(1) for m in parsed if m] == documented
    description_columns = {m.start(3) for m in parsed if m}
    assert len(description_columns) == 1, lines  # aligned: sized from the longest name
