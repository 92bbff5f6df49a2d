"""Offline DVC plots: the page inlines Vega instead of loading it from a CDN."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import dvc_plots

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Shared with `make plots`, so npm installs the packages once per checkout, not once per test.
SHARED_VEGA_DIR = dvc_plots.default_vega_dir(PROJECT_ROOT)

needs_npm = pytest.mark.skipif(
    shutil.which("npm") is None,
    reason="npm is not on PATH: it installs vega/vega-lite/vega-embed (apt-get install -y npm)",
)


def _run(command: list[str], cwd: Path) -> None:
    subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True)


@pytest.fixture
def plot_repo(tmp_path: Path) -> Path:
    """A throwaway git + DVC repo whose dvc.yaml plots a small precision-recall curve."""
    repo = tmp_path / "repo"
    (repo / "reports").mkdir(parents=True)
    _run(["git", "init", "-q"], repo)
    _run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    points = [
        {"recall": 0.0, "precision": 1.0},
        {"recall": 0.4375, "precision": 0.8125},
        {"recall": 1.0, "precision": 0.0731},
    ]
    (repo / "reports" / "prc.json").write_text(json.dumps({"prc": points}), encoding="utf8")
    (repo / "dvc.yaml").write_text(
        "plots:\n"
        "  - reports/prc.json:\n"
        "      template: simple\n"
        "      x: recall\n"
        "      y: precision\n"
        "      title: Tiny PR curve\n",
        encoding="utf8",
    )
    return repo


@pytest.mark.integration  # dvc in a subprocess, and npm installs Vega from its registry
@needs_npm
def test_render_plots_inlines_vega_and_the_data(plot_repo: Path, tmp_path: Path) -> None:
    index = dvc_plots.render_plots(plot_repo, tmp_path / "plots", vega_dir=SHARED_VEGA_DIR)

    assert index == (tmp_path / "plots" / "index.html").resolve()
    html = index.read_text(encoding="utf8")
    # No script is loaded from anywhere: no CDN, no file next to the page.
    assert re.search(r"<script[^>]*\bsrc\s*=", html) is None
    assert "https://cdn" not in html
    for build in dvc_plots.vega_build_paths(SHARED_VEGA_DIR):
        source = build.read_text(encoding="utf8")
        assert source[:2000] in html, f"{build.name} is not inlined"
    assert "vegaEmbed(" in html
    assert "Tiny PR curve" in html
    assert "0.4375" in html and "0.8125" in html


def test_missing_npm_is_named_in_the_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dvc_plots.shutil, "which", lambda _name: None)

    with pytest.raises(RuntimeError, match="npm"):
        dvc_plots.render_plots(tmp_path, tmp_path / "plots", vega_dir=tmp_path / "empty-cache")
