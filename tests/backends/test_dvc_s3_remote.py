"""DVC's remote on an S3-compatible store (moto's server, through dvc-s3), chosen by config only:
`dvc push` of a real pipeline's outputs, then a workspace with neither cache nor outputs gets
them back with `dvc pull`, byte for byte, and `dvc repro` has nothing left to do.

The endpoint is in the repository's config (no secret); the keys only in `.dvc/config.local`,
which git ignores, as docs/production-backends.md tells users to do.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.backends.conftest import BUCKET
from tests.backends.servers import FOREIGN_ENV_PREFIXES, S3Server
from tests.conftest import PipelineRepo, make_pipeline_repo

pytestmark = [pytest.mark.backends, pytest.mark.e2e, pytest.mark.slow]

PREFIX = "test_dvc_s3_remote/dvc"
REMOTE = "s3"


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def stage_outputs(repo: PipelineRepo) -> dict[str, bool]:
    """Every output in dvc.yaml (outs, metrics, plots) and whether DVC caches it."""
    found: dict[str, bool] = {}
    for stage in yaml.safe_load((repo.path / "dvc.yaml").read_text())["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                path, opts = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
                found[path] = (opts or {}).get("cache", True) is not False
    return found


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> PipelineRepo:
    """A tiny pipeline run with `dvc repro`, its default remote s3://BUCKET/PREFIX on moto."""
    made = make_pipeline_repo(tmp_path_factory.mktemp("dvc-s3") / "repo")
    # No S3 setting of this machine: only the repository's config may point DVC anywhere.
    env = {k: v for k, v in made.env.items() if not k.startswith(FOREIGN_ENV_PREFIXES)}
    env["MLFLOW_TRACKING_URI"] = made.tracking_uri
    repo = PipelineRepo(made.path, env, made.tracking_uri)
    repo.run("dvc", "remote", "add", "-d", REMOTE, f"s3://{BUCKET}/{PREFIX}")
    repo.run("dvc", "remote", "modify", REMOTE, "endpointurl", s3_server.url)
    repo.run("dvc", "remote", "modify", "--local", REMOTE, "access_key_id", s3_server.access_key)
    repo.run(
        "dvc", "remote", "modify", "--local", REMOTE, "secret_access_key", s3_server.secret_key
    )
    repo.run("dvc", "repro", timeout=900)
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "dvc repro with an S3 remote")
    return repo


def test_the_s3_keys_stay_out_of_git(repo: PipelineRepo, s3_server: S3Server) -> None:
    committed = repo.run("git", "show", "HEAD:.dvc/config").stdout
    assert f"s3://{BUCKET}/{PREFIX}" in committed and s3_server.url in committed
    assert s3_server.secret_key not in committed and s3_server.access_key not in committed
    tracked = repo.run("git", "ls-files").stdout.splitlines()
    assert ".dvc/config.local" not in tracked
    assert s3_server.secret_key in (repo.path / ".dvc/config.local").read_text()


def test_push_then_pull_into_an_empty_workspace_restores_every_output_and_repro_is_a_noop(
    repo: PipelineRepo, s3_server: S3Server
) -> None:
    outputs = stage_outputs(repo)
    cached = [p for p, is_cached in outputs.items() if is_cached]
    assert "data/raw/transactions.parquet" in cached and "models/model.ubj" in cached
    before = {p: md5(repo.path / p) for p in outputs}

    pushed = repo.run("dvc", "push")
    keys = s3_server.keys(BUCKET, PREFIX + "/")
    assert len(keys) >= len(cached), (pushed.stdout, keys)
    # The objects are DVC's content-addressed files: each cached output's md5 is a key.
    for path in cached:
        digest = before[path]
        assert f"{PREFIX}/files/md5/{digest[:2]}/{digest[2:]}" in keys, (path, keys)

    shutil.rmtree(repo.path / ".dvc" / "cache")
    for path in cached:
        (repo.path / path).unlink()
    pulled = repo.run("dvc", "pull")
    after = {p: md5(repo.path / p) for p in outputs}
    assert after == before, pulled.stdout
    status = json.loads(repo.run("dvc", "status", "--json").stdout)
    assert status == {}, status

    repro = repo.run("dvc", "repro")
    assert "Running stage" not in repro.stdout, repro.stdout
    assert {p: md5(repo.path / p) for p in outputs} == before
