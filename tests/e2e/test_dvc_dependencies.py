"""dvc.yaml lists all the code each stage runs, and dvc.lock records the code as it is: otherwise
`dvc repro` reports everything up to date while the model, the metrics or the gate would differ."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT
from tests.e2e.dvc_code_deps import missing_code_deps, stage_code, stale_lock_entries

ALL_STAGES = {"ingest", "validate", "features", "train", "evaluate", "prequential", "register"}
REGENERATE = "python -m tests.e2e.dvc_code_deps prints each stage's deps"


@pytest.mark.slow
def test_every_stage_depends_on_all_the_code_it_runs(pipeline_copy):
    code = stage_code(pipeline_copy.path, pipeline_copy.env)
    assert set(code) == ALL_STAGES
    # The tracing sees what each stage runs, and only that: the steps are imported per stage.
    assert {"pipelines/cli.py", "pipelines/stages.py", "fraud/schema.py"} <= code["ingest"]
    assert "pipelines/register.py" in code["register"]
    assert not {"pipelines/train.py", "pipelines/register.py"} & code["ingest"]
    missing = missing_code_deps(pipeline_copy.path, code)
    assert not missing, "dvc.yaml misses code that these stages run (add it to their deps; " + (
        f"{REGENERATE}):\n" + "\n".join(f"  {s}: {', '.join(f)}" for s, f in missing.items())
    )


def test_committed_dvc_lock_records_the_current_code():
    stale = stale_lock_entries(ROOT)
    assert not stale, (
        "dvc.lock does not record the code as it is: run `dvc repro` (or `make run`) and commit "
        "dvc.lock.\n" + "\n".join(f"  {line}" for line in stale)
    )


# A changed file -> the stages that must rerun, and stages that must not (their code is not it).
CHANGES = {
    "fraud/schema.py": (ALL_STAGES, set()),
    "fraud/metrics.py": ({"train", "evaluate", "prequential", "register"}, set()),
    "fraud/features/__init__.py": (ALL_STAGES, set()),  # in a directory dep
    "pipelines/ingest.py": ({"ingest"}, ALL_STAGES - {"ingest"}),
    "pipelines/train.py": (
        {"train", "evaluate", "prequential", "register"},
        {"ingest", "validate", "features"},
    ),
    "pipelines/register.py": ({"register"}, ALL_STAGES - {"register"}),
}


def test_changing_code_a_stage_runs_makes_dvc_status_report_that_stage(pipeline_copy):
    repo = pipeline_copy
    assert stale_lock_entries(repo.path) == [], "dvc.lock just written by dvc repro"
    wrong = []
    for path, (must, must_not) in CHANGES.items():
        file = repo.path / path
        original = file.read_bytes()
        file.write_bytes(original + b"# a change\n")
        try:
            status = json.loads(repo.run("dvc", "status", "--json").stdout)
            stale = {line.split(":")[0] for line in stale_lock_entries(repo.path)}
        finally:
            file.write_bytes(original)
        changed = {
            stage
            for stage, entries in status.items()
            for entry in entries
            if isinstance(entry, dict)
            for dep in entry.get("changed deps", {})
            if path == dep or path.startswith(f"{dep}/")
        }
        if not must <= changed or changed & must_not:
            wrong.append(f"{path}: dvc status reports {sorted(changed)}, expected {sorted(must)}")
        if stale != changed:
            wrong.append(f"{path}: the lock check finds {sorted(stale)}, DVC {sorted(changed)}")
    assert not wrong, "\n".join(wrong)
    assert json.loads(repo.run("dvc", "status", "--json").stdout) == {}
