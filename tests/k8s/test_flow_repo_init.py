"""The training flows' git+DVC repository on the shared volume, made by the platform itself:
k8s/platform/prefect/init-flow-repo.sh run in the platform image as the registration Job's init
container runs it (uid 10001, read-only root filesystem with /tmp and HOME as emptyDirs, a host
directory as the shared volume, no network), and then read by the flows' own code.

* a fresh volume gets a repository seeded from the image: one commit by the platform's identity,
  a clean tree (the lineage commit is not `-dirty`), everything owned by uid 10001, the raw data
  made by `dvc repro ingest` and pushed to the DVC remote (a directory remote here: the in-cluster
  S3 store needs the network; the script pushes whenever FRAUD_DVC_REMOTE is set, and with it
  empty pushes nothing);
* the training flow's fetch_raw and the registry's git_commit read it at its commit in a pod
  whose root is read-only without podman's tmpfs on /var/tmp, as on Kubernetes (DVC's site
  cache would be there);
* a second run changes nothing; an existing repository is never replaced (not even with a fork's
  URL set); a non-empty directory that is not one is refused and kept; a failed clone leaves
  nothing behind; a fork is cloned with its credentials given to git only, never stored.

Needs podman and root (the stand-in base image), like test_platform_image.py. About a minute
once the image is built (deploy/build-platform-image.sh builds it when its sources changed).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.k8s.test_platform_image import image as image  # the module fixture: built image
from tests.k8s.test_platform_image import podman
from tests.k8s.test_platform_image import pytestmark as platform_image_marks

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "k8s" / "platform" / "prefect" / "init-flow-repo.sh"
#: Where the registration Job mounts the script and the shared volume (register-job.yaml).
SCRIPT_IN_POD = "/etc/prefect-work-pool/init-flow-repo.sh"
SHARED_IN_POD = "/var/lib/fraud/shared"
REPO_IN_POD = f"{SHARED_IN_POD}/repo"
REMOTE_IN_POD = "/srv/dvc-remote"
UID = 10001

# container, slow, platform, and skipped without podman or root, as the image's own tests.
pytestmark = platform_image_marks


def in_pod(
    image: str,
    shared: Path,
    command: list[str],
    env: dict[str, str] | None = None,
    volumes: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """`command` as the Job's pod runs it: uid 10001, read-only root, the emptyDirs as tmpfs, the
    shared volume and the script mounted where register-job.yaml mounts them. No tmpfs on
    /var/tmp (podman's --read-only adds one; Kubernetes does not), no network."""
    flags = [f"--env={k}={v}" for k, v in (env or {}).items()]
    return podman(
        "run",
        "--rm",
        "--read-only",
        "--read-only-tmpfs=false",
        f"--user={UID}:{UID}",
        "--network=none",
        "--tmpfs=/tmp:rw,U",
        "--tmpfs=/var/lib/fraud:rw,U",
        f"--volume={shared}:{SHARED_IN_POD}",
        f"--volume={SCRIPT}:{SCRIPT_IN_POD}:ro",
        *(f"--volume={v}" for v in volumes),
        *flags,
        image,
        *command,
    )


def init_repo(
    image: str, shared: Path, env: dict[str, str] | None = None, volumes: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return in_pod(
        image,
        shared,
        ["sh", SCRIPT_IN_POD],
        {"FRAUD_FLOW_REPO": REPO_IN_POD, **(env or {})},
        volumes,
    )


def git_in_pod(image: str, shared: Path, *args: str) -> str:
    """git in the repository as uid 10001 (root on the host would write root-owned files into it,
    e.g. a refreshed index, and git refuses a repository of another owner anyway)."""
    proc = in_pod(image, shared, ["git", "-C", REPO_IN_POD, *args])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def volume(path: Path) -> Path:
    """A directory as a PVC gives it to the pods: writable by uid 10001."""
    path.mkdir(parents=True)
    os.chown(path, UID, UID)
    return path


def snapshot(tree: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every path under `tree` with its size, mode, owner and modification time, read without
    touching anything."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            out[str(p.relative_to(tree))] = (st.st_size, st.st_mode, st.st_uid, st.st_mtime_ns)
    return out


def host_git_repo(path: Path, files: dict[str, str]) -> str:
    """A git repository with one commit of `files`, owned by uid 10001; its HEAD."""
    path.mkdir(parents=True)
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    ident = ["-c", "user.name=someone", "-c", "user.email=someone@example.invalid"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], [*ident, "commit", "-qm", "mine"]):
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=path, check=True, capture_output=True, text=True
    ).stdout.strip()
    subprocess.run(["chown", "-R", f"{UID}:{UID}", str(path)], check=True)
    return head


@pytest.fixture(scope="module")
def seeded(image, tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess[str], float]:
    """A fresh shared volume after the script's default path, with a directory DVC remote."""
    base = tmp_path_factory.mktemp("seeded")
    shared, remote = volume(base / "shared"), volume(base / "remote")
    t0 = time.monotonic()
    proc = init_repo(
        image,
        shared,
        {"FRAUD_DVC_REMOTE": REMOTE_IN_POD, "FRAUD_DVC_ENDPOINT_URL": ""},
        (f"{remote}:{REMOTE_IN_POD}",),
    )
    return shared, remote, proc, time.monotonic() - t0


def test_a_fresh_volume_gets_a_clean_repository_committed_by_the_platform(image, seeded):
    shared, _, proc, seconds = seeded
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"seeded in {seconds:.1f} s:\n{proc.stdout}")
    log = git_in_pod(image, shared, "log", "--format=%an <%ae>").splitlines()
    assert log == ["fraud-platform <fraud-platform@fraud-mlops.invalid>"]
    # Clean: the registry's lineage would record the commit as `-dirty` otherwise.
    assert git_in_pod(image, shared, "status", "--porcelain") == ""
    tracked = set(git_in_pod(image, shared, "ls-files").split())
    assert {
        "dvc.yaml", "dvc.lock", "params.yaml", ".dvc/config", "data/raw/.gitignore",
        "pipelines/ingest.py", "fraud/simulator.py",
    } <= tracked  # fmt: skip
    assert "data/raw/transactions.parquet" not in tracked  # DVC's, not git's
    lock = yaml.safe_load((shared / "repo" / "dvc.lock").read_text())
    assert [o["path"] for o in lock["stages"]["ingest"]["outs"]] == [
        "data/raw/transactions.parquet"
    ]
    # Only the repository: no temporary directory of the build left beside it.
    assert [p.name for p in shared.iterdir()] == ["repo"]
    not_owned = [p for p, (_, _, uid, _) in snapshot(shared).items() if uid != UID]
    assert not_owned == []
    # Machine settings in the uncommitted local config, the remote's keys nowhere.
    local = (shared / "repo" / ".dvc" / "config.local").read_text()
    assert "site_cache_dir = /tmp/dvc-site-cache" in local
    config = (shared / "repo" / ".dvc" / "config").read_text()
    assert f"url = {REMOTE_IN_POD}" in config and "access_key" not in config


def test_the_seeded_raw_data_is_pushed_to_the_dvc_remote(seeded):
    shared, remote, proc, _ = seeded
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lock = yaml.safe_load((shared / "repo" / "dvc.lock").read_text())
    md5 = lock["stages"]["ingest"]["outs"][0]["md5"]
    assert (remote / "files" / "md5" / md5[:2] / md5[2:]).is_file()


READ_LIKE_THE_FLOWS = """
import sys
from pathlib import Path

import pandas as pd

from pipelines.flows import fetch_raw, resolve_revision
from pipelines.layout import Layout
from pipelines.register import git_commit

repo = sys.argv[1]
commit = resolve_revision(repo, "HEAD")
raw = fetch_raw.fn(repo, commit, Layout(Path("/tmp/run")))
df = pd.read_parquet(raw)
print(commit, git_commit(repo), len(df), int(df["TX_FRAUD"].sum()))
"""


def test_the_training_flow_reads_the_raw_data_at_the_repository_commit(image, seeded):
    """The flows' own functions, in a pod like a flow run's (working directory the volume)."""
    shared, _, proc, _ = seeded
    assert proc.returncode == 0, proc.stdout + proc.stderr
    head = git_in_pod(image, shared, "rev-parse", "HEAD").strip()
    read = in_pod(
        image, shared, ["sh", "-c", f"cd {SHARED_IN_POD} && python -c '{READ_LIKE_THE_FLOWS}' "
                        f"{REPO_IN_POD}"],
    )  # fmt: skip
    assert read.returncode == 0, read.stderr[-3000:]
    commit, lineage, rows, frauds = read.stdout.split()
    assert commit == lineage == head  # lineage without `-dirty`
    assert int(rows) > 100_000 and int(frauds) > 0
    # The numbers the seed's ingest reported: the same data.
    assert f"{int(rows):,} transactions, {int(frauds):,} frauds" in proc.stdout


def test_a_second_run_changes_nothing(image, seeded):
    shared, remote, proc, _ = seeded
    assert proc.returncode == 0, proc.stdout + proc.stderr
    before, head = snapshot(shared), git_in_pod(image, shared, "rev-parse", "HEAD")
    again = init_repo(
        image, shared, {"FRAUD_DVC_REMOTE": REMOTE_IN_POD}, (f"{remote}:{REMOTE_IN_POD}",)
    )
    assert again.returncode == 0, again.stderr
    assert "left as it is" in again.stdout
    assert snapshot(shared) == before
    assert git_in_pod(image, shared, "rev-parse", "HEAD") == head


def test_an_existing_repository_is_never_replaced_not_even_by_a_fork(image, tmp_path):
    shared = volume(tmp_path / "shared")
    host_git_repo(shared / "repo", {"notes.md": "the user's own work\n"})
    upstream = tmp_path / "upstream"
    host_git_repo(upstream, {".dvc/config": "[core]\n"})
    before = snapshot(shared)
    proc = init_repo(
        image, shared, {"FRAUD_GIT_URL": "file:///srv/upstream"}, (f"{upstream}:/srv/upstream:ro",)
    )
    assert proc.returncode == 0, proc.stderr
    assert "left as it is" in proc.stdout
    assert snapshot(shared) == before


def test_a_directory_that_is_not_a_repository_is_refused_and_kept(image, tmp_path):
    shared = volume(tmp_path / "shared")
    volume(shared / "repo")
    (shared / "repo" / "precious.txt").write_text("not mine to delete\n")
    before = snapshot(shared)
    proc = init_repo(image, shared)
    assert proc.returncode != 0
    assert "is not empty and not a git repository" in proc.stderr
    assert snapshot(shared) == before


def test_a_failed_clone_leaves_nothing_behind(image, tmp_path):
    shared = volume(tmp_path / "shared")
    proc = init_repo(image, shared, {"FRAUD_GIT_URL": "file:///srv/no-such-fork"})
    assert proc.returncode != 0
    assert "git clone file:///srv/no-such-fork failed" in proc.stderr
    # Neither the repository nor the temporary directory it was being built in.
    assert list(shared.iterdir()) == []


def test_a_fork_is_cloned_with_its_credentials_given_to_git_only(image, tmp_path):
    shared = volume(tmp_path / "shared")
    upstream = tmp_path / "upstream"
    head = host_git_repo(
        upstream,
        {".dvc/config": "[core]\n    remote = store\n['remote \"store\"']\n    url = s3://fork\n"},
    )
    token = "not-a-real-token-7f3a"
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "git-credentials").write_text(f"https://someone:{token}@example.invalid\n")
    proc = init_repo(
        image,
        shared,
        {"FRAUD_GIT_URL": "file:///srv/upstream"},
        (f"{upstream}:/srv/upstream:ro", f"{secret}:/etc/flow-repo-git:ro"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert git_in_pod(image, shared, "rev-parse", "HEAD").strip() == head
    for path in (shared / "repo").rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    local = (shared / "repo" / ".dvc" / "config.local").read_text()
    assert "site_cache_dir = /tmp/dvc-site-cache" in local
    assert [p.name for p in shared.iterdir()] == ["repo"]
