"""Offline DVC plots: the page inlines Vega instead of loading it from a CDN; the calibration
plot has equal-count bins and the diagonal."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
import yaml

from fraud import schema
from pipelines import dvc_plots
from pipelines.evaluate import CALIBRATION_BINS, EvaluationResult, write_plots

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


# --- The calibration plot ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def calibration_plots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """write_plots on skewed scores, as fraud scores are (most near 0): (out dir, scores)."""
    rng = np.random.default_rng(0)
    n = 9_973  # deciles fall between scores, where pd.qcut and scikit-learn agree on the bins
    scores = rng.beta(0.3, 12.0, n)
    y = (rng.random(n) < scores).astype(int)
    test = pd.DataFrame({schema.TX_FRAUD: y, "x": scores})
    booster = xgb.train({"max_depth": 1}, xgb.DMatrix(test[["x"]], label=y), num_boost_round=2)
    metrics = {
        "average_precision": 0.5,
        "roc_auc": 0.8,
        "at_threshold.recall": 0.5,
        "at_threshold.precision": 0.5,
    }
    out = tmp_path_factory.mktemp("plots")
    write_plots(EvaluationResult(metrics, test, scores), booster, out, threshold=0.2)
    return out, scores


def test_calibration_bins_hold_equal_numbers_of_transactions(calibration_plots) -> None:
    out, scores = calibration_plots
    rows = json.loads((out / "calibration.json").read_text())
    deciles = pd.Series(scores).groupby(pd.qcut(scores, CALIBRATION_BINS), observed=True).mean()
    assert len(rows) == CALIBRATION_BINS
    assert [r["predicted"] for r in rows] == pytest.approx(deciles.to_list(), rel=1e-12)
    assert all(r["perfectly_calibrated"] == r["predicted"] for r in rows)


def _project_plot_definitions() -> list[dict]:
    return yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["plots"]


def test_calibration_plot_is_defined_once_with_its_diagonal_and_bins() -> None:
    dvc_yaml = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())
    in_stages = [
        next(iter(plot)) if isinstance(plot, dict) else plot
        for stage in dvc_yaml["stages"].values()
        for plot in stage.get("plots", [])
    ]
    assert "reports/plots/calibration.json" not in in_stages  # DVC would draw it twice
    (definition,) = [
        d["reports/plots/calibration.json"]
        for d in _project_plot_definitions()
        if "reports/plots/calibration.json" in d
    ]
    assert definition["y"] == ["observed", "perfectly_calibrated"]
    assert definition["title"] == f"Calibration ({CALIBRATION_BINS} quantile bins)"


@pytest.mark.integration  # dvc in a subprocess
def test_dvc_draws_the_calibration_plot_with_the_diagonal(calibration_plots, tmp_path) -> None:
    out, _ = calibration_plots
    repo = tmp_path / "repo"
    (repo / "reports" / "plots").mkdir(parents=True)
    _run(["git", "init", "-q"], repo)
    _run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    shutil.copy(out / "calibration.json", repo / "reports" / "plots" / "calibration.json")
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"plots": _project_plot_definitions()}))
    shown = subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "show", "--json"],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    )
    (plot,) = json.loads(shown.stdout)["data"]["reports/plots/calibration.json"]
    values = plot["content"]["data"]["values"]
    assert {v["field"] for v in values} == {"observed", "perfectly_calibrated"}
    diagonal = [v for v in values if v["field"] == "perfectly_calibrated"]
    assert all(v["dvc_inferred_y_value"] == v["predicted"] for v in diagonal)
    assert plot["content"]["title"]["text"] == f"Calibration ({CALIBRATION_BINS} quantile bins)"
