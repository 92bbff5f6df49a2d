"""`dvc exp show`, `dvc metrics diff` and `dvc plots diff` compare real numbers: the metrics and
plot files are committed, and a rerun writes them byte for byte, so a clone stays clean."""

from __future__ import annotations

import json
from typing import Any

import pytest

AP = "average_precision"


def _metrics(entry: dict[str, Any]) -> dict[str, Any]:
    return entry["data"]["metrics"]["reports/metrics.json"]["data"]


def _max_depth(entry: dict[str, Any]) -> int:
    return entry["data"]["params"]["params.yaml"]["data"]["train"]["max_depth"]


@pytest.mark.slow
def test_exp_show_and_metrics_diff_read_the_metrics_of_commits_and_experiments(pipeline_copy):
    repo = pipeline_copy
    repo.run("dvc", "exp", "run", "-S", "train.max_depth=2", "-n", "shallow")
    shown = json.loads(repo.run("dvc", "exp", "show", "--json").stdout)
    workspace, baseline = shown[0], shown[1]
    experiment = baseline["experiments"][0]["revs"][0]
    assert (workspace["rev"], experiment["name"]) == ("workspace", "shallow")
    assert (_max_depth(baseline), _max_depth(experiment)) == (3, 2)
    for entry in (workspace, baseline, experiment):
        assert 0 < _metrics(entry)[AP] < 1, entry["rev"]
        prequential = entry["data"]["metrics"]["reports/prequential.json"]["data"]
        assert 0 < prequential["summary"][AP] < 1, entry["rev"]
    assert _metrics(workspace)[AP] == _metrics(experiment)[AP] != _metrics(baseline)[AP]

    diff = json.loads(repo.run("dvc", "metrics", "diff", "--json").stdout)
    assert diff["reports/metrics.json"][AP] == {
        "old": _metrics(baseline)[AP],
        "new": _metrics(workspace)[AP],
        "diff": _metrics(workspace)[AP] - _metrics(baseline)[AP],
    }

    plots = json.loads(repo.run("dvc", "plots", "diff", "HEAD", "--json").stdout)
    (pr_curve,) = plots["data"]["reports/plots/pr_curve.json"]
    revs = {row["rev"] for row in pr_curve["content"]["data"]["values"]}
    assert revs == {"workspace", "HEAD"}


def test_rerunning_the_stages_rewrites_the_committed_reports_byte_for_byte(pipeline_copy):
    repo = pipeline_copy
    committed = repo.run("git", "ls-files", "reports").stdout.split()
    assert {"reports/metrics.json", "reports/prequential.json"} <= set(committed)
    assert "reports/plots/pr_curve.json" in committed
    repo.run("dvc", "repro", "--force", "--single-item", "train", "evaluate", "prequential")
    assert repo.run("git", "status", "--porcelain").stdout == ""
    assert "up to date" in repo.run("dvc", "status").stdout
