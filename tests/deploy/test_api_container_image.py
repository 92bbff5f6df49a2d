"""The API container: build it with podman and smoke-test it (deploy/container-smoke.sh) with a
model cache written by the real serving loader from the pipeline's registry.

Needs podman (`apt-get install -y podman runc debootstrap`) and root for the one-off base image
build (deploy/build-base-image.sh); skipped without podman. Select with `pytest -m container`.
The image is built by deploy/build-api-image.sh, once per state of the sources: the `podman kube
play` test of k8s/ (tests/k8s/test_kube_play.py) runs the same tag without building it again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fraud import registry

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "deploy" / "container-smoke.sh"

pytestmark = [
    pytest.mark.container,
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("podman") is None,
        reason="podman is not installed (apt-get install -y podman runc debootstrap)",
    ),
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="building the stand-in base image (deploy/build-base-image.sh) needs root",
    ),
]


def write_serving_model_cache(tracking_uri: str, cache: Path) -> Path:
    """A serving model cache of the registry's @champion at `cache`, written by the real loader
    (serving.model_store); also what tests/k8s/test_kube_play.py mounts into the pod."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from serving.model_store import fetch_from_registry

    # MLFLOW_TRACKING_URI and MLflow's global URI (which set_tracking_uri also writes to the
    # environment) point at the pipeline's store, and both are restored afterwards.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        with tracking_utils._use_tracking_uri(tracking_uri):
            model = fetch_from_registry(
                registry.DEFAULT_MODEL_NAME, registry.ALIAS_CHAMPION, None, cache
            )
    assert model.source == "registry"
    return cache


@pytest.fixture(scope="module")
def model_cache(pipeline_repo, tmp_path_factory) -> Path:
    """A serving model cache of the pipeline's @champion, written by serving.model_store."""
    return write_serving_model_cache(
        pipeline_repo.tracking_uri, tmp_path_factory.mktemp("container") / "model"
    )


def test_container_serves_a_prediction_as_non_root_from_a_cached_model(model_cache: Path) -> None:
    assert {p.name for p in model_cache.iterdir()} >= {
        "model.ubj",
        "train_info.json",
        "history.parquet",
        "meta.json",
    }
    proc = subprocess.run(
        ["bash", str(SMOKE), str(model_cache)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=40 * 60,
    )
    print(proc.stdout[-8000:])
    print(proc.stderr[-8000:])
    assert proc.returncode == 0, f"container smoke test failed (exit {proc.returncode})"
    assert "SMOKE OK" in proc.stdout


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": str(ROOT / "deploy" / "containers.conf")}
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, env=env, check=check, timeout=timeout
    )


def test_container_runs_as_uid_10001_on_a_read_only_root_that_refuses_writes_even_as_root(
    model_cache: Path, tmp_path: Path
) -> None:
    """The image as production runs it (read-only root, every capability dropped, the model
    cache mounted read-only, a tmpfs for the prediction log): it scores as uid 10001, and a
    write anywhere on the root filesystem fails with EROFS, for root too, so the read-only
    root, not only file permissions, is what stops it."""
    import json
    import socket
    import time

    import httpx

    image = "fraud-api:smoke"
    build = subprocess.run(
        ["bash", str(ROOT / "deploy" / "build-api-image.sh"), image],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=40 * 60,
        env={**os.environ, "CONTAINERS_CONF": str(ROOT / "deploy" / "containers.conf")},
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    assert podman("image", "inspect", image, "--format", "{{.Config.User}}").stdout.strip() == (
        "10001:10001"
    )
    models = tmp_path / "model"
    shutil.copytree(model_cache, models)
    models.chmod(0o755)
    for f in models.iterdir():
        f.chmod(0o644)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = f"fraud-api-readonly-{os.getpid()}"
    podman(
        "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000",
        "--read-only", "--tmpfs", "/var/lib/fraud:rw,U",
        "-v", f"{models}:/var/lib/fraud/model:ro",
        "--cap-drop=ALL", "--security-opt=no-new-privileges",
        "-e", "MLFLOW_TRACKING_URI=http://127.0.0.1:9",
        image,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            while True:
                try:
                    if c.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, podman("logs", name, check=False).stdout
                time.sleep(1)
            r = c.post(
                "/predict",
                json={
                    "TRANSACTION_ID": 987654322,
                    "TX_DATETIME": "2018-10-01T08:15:00",
                    "CUSTOMER_ID": 1,
                    "TERMINAL_ID": 1,
                    "TX_AMOUNT": 57.16,
                },
            )
            assert r.status_code == 200, r.text
        state = json.loads(podman("inspect", name).stdout)[0]
        assert state["HostConfig"]["ReadonlyRootfs"] is True
        assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
        # The process that serves is the app user's too, not only `podman exec`'s default.
        assert podman("exec", name, "sh", "-c", "stat -c %u /proc/1").stdout.strip() == "10001"
        for path in ("/app/probe", "/opt/venv/probe", "/etc/probe", "/probe", "/usr/probe"):
            for user in ("10001", "0"):
                w = podman("exec", "--user", user, name, "touch", path, check=False)
                assert w.returncode != 0, f"{path} writable as uid {user}"
                assert "Read-only file system" in w.stderr, (path, user, w.stderr)
        # What the service must write: the tmpfs for the prediction log, and nothing else.
        assert podman("exec", name, "touch", "/var/lib/fraud/probe", check=False).returncode == 0
        logged = podman("exec", name, "ls", "/var/lib/fraud").stdout.split()
        assert "predictions.sqlite" in logged, logged
    finally:
        podman("rm", "-f", "-t", "2", name, check=False)
