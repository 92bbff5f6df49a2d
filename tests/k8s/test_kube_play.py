"""The dev overlay's API Deployment run for real with `podman kube play`: the rendered pod spec
(security context, read-only root filesystem, env from the ConfigMap, emptyDirs, probe paths)
on the image built from ../Dockerfile, serving a model cache written by the real loader.

What this machine needs, and nothing else, is changed in the render (`for_podman`):
  1. only the ConfigMap and the Deployment are kept: podman 4.3 runs no Service, HPA, PDB,
     NetworkPolicy, ServiceAccount or Namespace;
  2. the image is the locally built tag (deploy/build-api-image.sh, shared with the container
     smoke test: built once per state of the sources);
  3. the model: no MLflow server here (http://mlflow:5000 does not resolve, so the API falls back
     to its cache), so a serving model cache written by serving.model_store is mounted read-only
     as a hostPath at FRAUD_MODEL_CACHE_DIR, over the `state` emptyDir that holds it in a
     cluster (the emptyDir stays, for HOME, the loader's staging and the prediction log);
  4. a hostPort on 127.0.0.1 (a free port) to reach the pod;
  5. the user's Secret `fraud-api-secrets` (k8s/user-secrets.yaml), which the dev overlay's API
     requires for its backends, is played beside the pod with the embedded ones: the prediction
     log as SQLite on the `state` emptyDir and the feature state in the process (no PostgreSQL or
     Redis here: tests/k8s/test_kube_play_platform.py plays the API on real servers).
Probes become podman healthchecks that need systemd timers, which CI machines lack, so they
never run: the test calls each probe's path itself. Needs podman and root, like the image test.
"""

from __future__ import annotations

import base64
import copy
import importlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

# The sibling tests' helpers: how an overlay is rendered and read (test_manifests) and how the
# image test writes its model cache. Imported at run time: `mypy tests/k8s tests/deploy` checks
# those files under their bare module names, and a static `from tests.k8s.test_manifests import`
# would make it see one file under two names.
manifests = importlib.import_module("tests.k8s.test_manifests")
image_test = importlib.import_module("tests.deploy.test_api_container_image")
render, the_api, effective_env = manifests.render, manifests.the_api, manifests.effective_env

ROOT = Path(__file__).resolve().parents[2]
BUILD_IMAGE = ROOT / "deploy" / "build-api-image.sh"
CONTAINERS_CONF = ROOT / "deploy" / "containers.conf"
#: The tag the container smoke test builds too (deploy/container-smoke.sh): one build for both.
IMAGE = "localhost/fraud-api:smoke"
APP_UID = 10001
READY_TIMEOUT_S = 180
#: A transaction of the data contract (fraud.schema.TransactionRecord).
TRANSACTION: dict[str, Any] = {
    "TRANSACTION_ID": 987654321,
    "TX_DATETIME": "2018-10-01T08:15:00",
    "CUSTOMER_ID": 1,
    "TERMINAL_ID": 1,
    "TX_AMOUNT": 57.16,
}
#: Change 5: the backends' Secret as played here (the embedded backends, on the pod's emptyDir).
BACKENDS_SECRET = "fraud-api-secrets"
BACKENDS = {
    "prediction-log-url": "/var/lib/fraud/predictions.sqlite",
    "feature-store-url": "memory",
}

Obj = dict[str, Any]

# The image test's marks (container, slow; skipped without podman or root), and catatonit: the
# pod's infra (pause) container, which podman builds locally from that binary.
pytestmark = [
    *image_test.pytestmark,
    pytest.mark.skipif(
        shutil.which("catatonit") is None and not Path("/usr/libexec/podman/catatonit").exists(),
        reason="catatonit is not installed (Debian package catatonit; podman kube play needs it)",
    ),
]


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}
    proc = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    if check:
        assert proc.returncode == 0, f"podman {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def for_podman(objs: list[Obj], image: str, model_dir: Path, port: int) -> list[Obj]:
    """The objects podman runs, with the changes of this module's docstring, nothing else."""
    deployment, _ = the_api(objs)  # change 1: the API's Deployment and its ConfigMaps
    configmaps = {
        name
        for kind, name, _ in manifests.references(deployment["spec"]["template"]["spec"])
        if kind == "ConfigMap"
    }
    kept = copy.deepcopy(
        [deployment]
        + [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] in configmaps]
    )
    deployment, api = the_api(kept)
    pod = deployment["spec"]["template"]["spec"]
    api["image"] = image  # change 2
    cache_dir = effective_env(kept, api)["FRAUD_MODEL_CACHE_DIR"][1]  # change 3
    pod["volumes"].append(
        {"name": "model-cache", "hostPath": {"path": str(model_dir), "type": "Directory"}}
    )
    api["volumeMounts"].append({"name": "model-cache", "mountPath": cache_dir, "readOnly": True})
    http = next(p for p in api["ports"] if p["name"] == "http")  # change 4
    http.update(hostPort=port, hostIP="127.0.0.1")
    secret = {  # change 5
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": BACKENDS_SECRET},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in BACKENDS.items()},
    }
    return [secret, *kept]


def resolved_env(objs: list[Obj], container: Obj) -> dict[str, tuple[str, ...]]:
    """The container's env, with the values of the Secrets that are played (change 5)."""
    secrets = {o["metadata"]["name"]: o["data"] for o in objs if o["kind"] == "Secret"}
    env = effective_env(objs, container)
    for name, value in env.items():
        if value[0] == "secret" and value[2] in secrets.get(value[1], {}):
            env[name] = ("value", base64.b64decode(secrets[value[1]][value[2]]).decode())
    return env


def readable_copy(cache: Path, dest: Path) -> Path:
    """The cache, readable by the pod's user through the bind mount (the loader writes 0700)."""
    shutil.copytree(cache, dest)
    dest.chmod(0o755)
    for f in dest.iterdir():
        f.chmod(0o644)
    return dest


@pytest.fixture(scope="module")
def api_image() -> str:
    proc = subprocess.run(
        ["bash", str(BUILD_IMAGE), IMAGE], capture_output=True, text=True, timeout=40 * 60
    )
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    assert proc.returncode == 0, "deploy/build-api-image.sh failed"
    return IMAGE


@pytest.fixture(scope="module")
def model_cache(pipeline_repo, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("kube-play")
    cache = image_test.write_serving_model_cache(pipeline_repo.tracking_uri, base / "written")
    return readable_copy(cache, base / "model")


class Pod:
    """The played pod: its manifest, container and base URL."""

    def __init__(self, manifest: Path, objs: list[Obj], port: int) -> None:
        self.manifest = manifest
        self.deployment, self.api = the_api(objs)
        self.container = f"{self.deployment['metadata']['name']}-pod-0-{self.api['name']}"
        self.base = f"http://127.0.0.1:{port}"
        self.env = resolved_env(objs, self.api)

    def running(self) -> bool:
        state = podman("inspect", "-f", "{{.State.Running}}", self.container, check=False)
        return state.stdout.strip() == "true"

    def exec(self, command: str) -> subprocess.CompletedProcess:
        return podman("exec", self.container, "sh", "-c", command, check=False)


def play(manifest: Path, objs: list[Obj], port: int) -> Iterator[Pod]:
    """Play the objects; each Secret becomes a podman secret first. podman 4.3 reads a secret
    that a pod's secretKeyRef names as JSON {key: base64 value}, which is not how it stores a
    Secret played from the file ("secret ... is not valid JSON"): so not in the file."""
    secrets = [o for o in objs if o["kind"] == "Secret"]
    manifest.write_text(
        yaml.safe_dump_all([o for o in objs if o["kind"] != "Secret"], sort_keys=False)
    )
    pod = Pod(manifest, objs, port)
    try:
        for s in secrets:
            name = s["metadata"]["name"]
            podman("secret", "rm", name, check=False)
            data = manifest.with_name(f"{name}.json")
            data.write_text(json.dumps(s["data"]))
            podman("secret", "create", name, str(data))
            data.unlink()
        podman("kube", "play", str(manifest), timeout=300)
        yield pod
    finally:
        logs = podman("logs", "--tail", "40", pod.container, check=False)
        print(f"--- {pod.container} logs ---\n{logs.stdout}{logs.stderr}")
        podman("kube", "down", str(manifest), check=False, timeout=120)
        for s in secrets:
            podman("secret", "rm", s["metadata"]["name"], check=False)


@pytest.fixture(scope="module")
def pod(api_image: str, model_cache: Path, tmp_path_factory) -> Iterator[Pod]:
    port = free_port()
    objs = for_podman(render("dev"), api_image, model_cache, port)
    manifest = tmp_path_factory.mktemp("kube-play-manifest") / "fraud-api-dev.podman.yaml"
    yield from play(manifest, objs, port)


def wait_ready(pod: Pod, path: str, timeout_s: float = READY_TIMEOUT_S) -> httpx.Response:
    """GET `path` until it answers 200, while the container runs; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            r = httpx.get(pod.base + path, timeout=5)
            if r.status_code == 200:
                return r
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as e:
            last = f"{type(e).__name__}: {e}"
        assert pod.running(), f"{pod.container} exited before {path} answered 200 ({last})"
        time.sleep(1)
    pytest.fail(f"{path} did not answer 200 within {timeout_s:.0f}s (last: {last})")


def test_kube_play_of_the_dev_deployment_serves_a_prediction_from_the_cached_model(
    pod: Pod, model_cache: Path
) -> None:
    t0 = time.monotonic()
    ready = wait_ready(pod, pod.api["readinessProbe"]["httpGet"]["path"])
    print(f"ready after {time.monotonic() - t0:.1f}s: {ready.text}")
    meta = json.loads((model_cache / "meta.json").read_text())

    r = httpx.post(pod.base + "/predict", json=TRANSACTION, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert 0.0 <= body["fraud_probability"] <= 1.0
    assert body["TRANSACTION_ID"] == TRANSACTION["TRANSACTION_ID"]
    assert (body["model_name"], body["model_version"]) == (meta["name"], str(meta["version"]))


def test_every_probe_path_of_the_rendered_container_answers_200(pod: Pod) -> None:
    # podman turns the probes into healthchecks that never run here (no systemd timers): call
    # each probe's path, on the port the probe names, as the kubelet would.
    wait_ready(pod, pod.api["readinessProbe"]["httpGet"]["path"])
    ports = {p["name"]: p["containerPort"] for p in pod.api["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = pod.api[probe]["httpGet"]
        assert ports.get(get["port"], get["port"]) == 8000, f"{probe} is not on the API's port"
        r = httpx.get(pod.base + get["path"], timeout=get.get("timeoutSeconds", 3))
        assert r.status_code == 200, f"{probe} {get['path']}: {r.status_code} {r.text[:200]}"


def test_the_pod_runs_as_the_non_root_user_without_capabilities(pod: Pod) -> None:
    ids = pod.exec("id -u; id -g")
    assert ids.returncode == 0, ids.stderr
    assert ids.stdout.split() == [str(APP_UID), str(APP_UID)]
    status = pod.exec("grep -E '^(CapEff|NoNewPrivs):' /proc/self/status")
    fields = dict(line.split(":\t") for line in status.stdout.strip().splitlines())
    assert fields == {"CapEff": "0000000000000000", "NoNewPrivs": "1"}, status.stdout


def test_the_root_filesystem_is_read_only_and_the_emptydirs_and_log_are_written(
    pod: Pod,
) -> None:
    wait_ready(pod, pod.api["readinessProbe"]["httpGet"]["path"])
    # Another id: the API refuses (409) a transaction id it has already scored.
    tx = {**TRANSACTION, "TRANSACTION_ID": TRANSACTION["TRANSACTION_ID"] + 1}
    httpx.post(pod.base + "/predict", json=tx, timeout=30).raise_for_status()

    root = pod.exec("touch /x")
    assert root.returncode != 0 and "Read-only file system" in root.stderr, root
    model = pod.exec(f"touch {pod.env['FRAUD_MODEL_CACHE_DIR'][1]}/x")
    assert model.returncode != 0, "the mounted model cache is writable"
    for mount in pod.api["volumeMounts"]:
        if mount.get("readOnly"):
            continue
        probe = pod.exec(f"touch {mount['mountPath']}/.kube-play-probe")
        assert probe.returncode == 0, f"emptyDir {mount['mountPath']}: {probe.stderr}"
    log = pod.env["FRAUD_PREDICTION_LOG"][1]
    written = pod.exec(f"test -s {log} && ls -ln {log}")
    assert written.returncode == 0, f"the prediction log {log} was not written: {written.stderr}"
    assert f" {APP_UID} " in written.stdout, written.stdout
