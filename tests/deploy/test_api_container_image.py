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
