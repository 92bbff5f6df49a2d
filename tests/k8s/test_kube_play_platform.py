"""The platform of the dev overlay run for real with `podman kube play`, as far as this machine
can: MLflow's Deployment (init container and server, basic auth) on a real PostgreSQL and a real
S3-compatible store, a model registered into it by the pipeline's own register stage, then the
API's Deployment loading that @champion from the MLflow pod and logging its predictions to
PostgreSQL; and the Prefect server (basic auth) and the Evidently UI's container.

Every object played is taken from `kubectl kustomize k8s/overlays/dev`, and only what this
machine needs is changed (`played`, `mlflow_objects`, `api_objects`, `prefect_objects`,
`evidently_objects`):
  1. only the Deployments and the ConfigMaps their pods name are played: podman 4.3 runs no
     Service, NetworkPolicy, ServiceAccount, Role, PVC, HPA, PDB, Job or StatefulSet here, and
     the images of PostgreSQL, Redis, SeaweedFS and nginx cannot be pulled (no registry);
  2. the Secrets are created with `podman secret create` (test values, JSON of key -> base64),
     not played: podman 4.3 stores a played Secret object as its YAML text and then fails to
     read it back for `secretKeyRef` ("secret ... is not valid JSON");
  3. `$(VAR)` in a command is expanded here as the kubelet would (podman passes it literally):
     MLflow's --artifacts-destination;
  4. PostgreSQL is the test's server (tests/pg_server.py, prepared by the postgres init script:
     roles mlflow, prefect and fraud and their databases), reached through a TCP forwarder on
     the gateway of podman's kube network (`host.containers.internal` in every pod), since the
     server listens on 127.0.0.1 only; its URLs are the Secrets' values (in a cluster,
     postgres:5432);
  5. the S3 store is moto in server mode on the same gateway, the bucket created by the test
     (the bucket Job's work): MLFLOW_S3_ENDPOINT_URL in MLflow's ConfigMap points there;
  6. the API's image is the locally built tag (deploy/build-api-image.sh, shared with the API's
     kube play test); the platform image keeps its rendered name fraud-platform:0.1.0, which
     deploy/build-platform-image.sh builds;
  7. `hostAliases` on the API's pod: `mlflow` -> the MLflow pod's address (the Service's name;
     podman's CNI network here has no DNS), so MLFLOW_TRACKING_URI=http://mlflow:5000 from the
     ConfigMap is used as rendered;
  8. the API's feature state is `memory` (no Redis here), its prediction log the PostgreSQL
     database `predictions`, both through the Secret fraud-api-secrets as in the cluster;
  9. the Evidently pod runs without its nginx sidecar (no nginx image): its UI container
     alone, which listens on 127.0.0.1 in the pod, so it is called from inside the pod.
  10. `restartPolicy: OnFailure` instead of a Deployment's Always: podman applies the pod's
     policy to init containers too, restarts MLflow's finished init container, and kube play's
     removal of it then fails ("cannot remove container ... as it is running");
  11. each containerPort gets a hostPort on 127.0.0.1, a free port: podman 4.3 publishes every
     containerPort without one on 0.0.0.0 at the same number (MLflow on the host's port 5000).
  12. the Evidently UI's volume of the flows' reports (a PersistentVolumeClaim shared with the
     flow-run jobs) is an emptyDir: no claim can be bound here, and the UI starts on an empty
     workspace.
The test reaches each pod at its address on podman's bridge (no hostPort needed, as root);
MLflow accepts only the Host names of its --allowed-hosts, so the test's MLflow client sends
`Host: mlflow:5000`, as an in-cluster client does. Probes never run under podman here (no
systemd timers): the test polls each probe's path itself. Needs podman, catatonit, root and
PostgreSQL's server binaries.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from tests.k8s.test_kube_play import pytestmark as kube_play_marks
from tests.k8s.test_manifests import named
from tests.k8s.test_manifests import render as render_overlay
from tests.k8s.test_platform_storage import PASSWORDS
from tests.k8s.test_platform_storage import pg_server as pg_server  # the module fixture
from tests.pg_server import free_port

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = str(ROOT / "deploy" / "containers.conf")
VENV_BIN = Path(sys.executable).parent
#: The network podman kube play puts pods on by default (CNI bridge, no DNS).
KUBE_NETWORK = "podman-default-kube-network"
PLATFORM_IMAGE = "fraud-platform:0.1.0"
#: The API image's local tag, shared with test_kube_play.py and the container smoke test.
API_IMAGE = "localhost/fraud-api:smoke"
READY_TIMEOUT_S = 300
BUCKET = "fraud-mlflow"  # MLFLOW_ARTIFACTS_DESTINATION=s3://fraud-mlflow/artifacts
#: Test values of the Secrets (k8s/user-secrets.yaml names the keys).
MLFLOW_ADMIN = ("admin", "admin-password-0123")
MLFLOW_CLIENT = ("fraud-client", "client-password-0123")
PREFECT_AUTH = "fraud:prefect-password-0123"
S3_KEYS = ("test-access-key", "test-secret-key")
#: A transaction of the data contract (fraud.schema.TransactionRecord).
TRANSACTION: dict[str, Any] = {
    "TRANSACTION_ID": 987650001,
    "TX_DATETIME": "2018-10-01T08:15:00",
    "CUSTOMER_ID": 1,
    "TERMINAL_ID": 1,
    "TX_AMOUNT": 57.16,
}

Obj = dict[str, Any]

# test_kube_play.py's marks (container, slow; podman, root and catatonit), and `platform`.
pytestmark = [*kube_play_marks, pytest.mark.platform]


def podman(
    *args: str, check: bool = True, timeout: float = 300, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["podman", *args],
        env={**os.environ, "CONTAINERS_CONF": CONTAINERS_CONF},
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
    )
    if check:
        assert proc.returncode == 0, f"podman {' '.join(args[:3])}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def build(script: str, image: str) -> str:
    t0 = time.monotonic()
    proc = subprocess.run(
        ["bash", str(ROOT / "deploy" / script), image],
        capture_output=True,
        text=True,
        timeout=60 * 60,
    )
    assert proc.returncode == 0, f"deploy/{script}:\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}"
    print(f"deploy/{script} {image}: {time.monotonic() - t0:.0f} s")
    return image


# --- the host side: the network's gateway, PostgreSQL through a forwarder, moto ---------------


def kube_network_gateway() -> str:
    """The gateway of podman's kube network (host.containers.internal in every played pod),
    with the bridge up, so that the test's servers can listen on it before the first pod."""
    if podman("network", "exists", KUBE_NETWORK, check=False).returncode != 0:
        podman("network", "create", KUBE_NETWORK)
    info = json.loads(podman("network", "inspect", KUBE_NETWORK).stdout)[0]
    gateway = str(info["subnets"][0]["gateway"])
    if not bindable(gateway):
        # The CNI bridge (and its address) appears with the network's first container.
        podman("run", "--rm", f"--network={KUBE_NETWORK}", PLATFORM_IMAGE, "true")
    assert bindable(gateway), f"the gateway {gateway} of {KUBE_NETWORK} is not on this host"
    return gateway


def bindable(address: str) -> bool:
    try:
        socket.create_server((address, 0)).close()
        return True
    except OSError:
        return False


class TcpForwarder:
    """Connections to (listen address, a free port) forwarded to `target`: the pods reach the
    test's PostgreSQL, which listens on 127.0.0.1 only (tests/pg_server.py)."""

    def __init__(self, address: str, target: tuple[str, int]) -> None:
        self.server = socket.create_server((address, 0))
        self.port = int(self.server.getsockname()[1])
        self.target = target
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:  # closed
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:  # either side closing ends the connection both ways
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self.server.close()


@dataclass
class HostServices:
    """What the pods reach on the host: PostgreSQL (forwarded) and moto's S3."""

    gateway: str
    pg: Any  # tests.pg_server.PostgresServer, prepared by the postgres init script
    pg_port: int  # the forwarder's, on the gateway
    s3_url: str  # from the pods and from the test

    def pg_url(self, role: str, database: str, driver: str = "postgresql") -> str:
        password = PASSWORDS[f"{role.upper()}_DB_PASSWORD"]
        return f"{driver}://{role}:{password}@host.containers.internal:{self.pg_port}/{database}"

    def s3(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            aws_access_key_id=S3_KEYS[0],
            aws_secret_access_key=S3_KEYS[1],
            region_name="us-east-1",
        )


def start_moto(address: str) -> tuple[subprocess.Popen[bytes], str]:
    with socket.create_server((address, 0)) as s:
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [str(VENV_BIN / "moto_server"), "-H", address, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://{address}:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"moto_server exited with {proc.returncode}"
        try:
            if httpx.get(url + "/moto-api/", timeout=2).status_code < 500:
                return proc, url
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "moto_server did not answer within 60 s"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def platform_image() -> str:
    return build("build-platform-image.sh", PLATFORM_IMAGE)


@pytest.fixture(scope="module")
def host_services(platform_image: str, pg_server: Any) -> Iterator[HostServices]:
    gateway = kube_network_gateway()
    forwarder = TcpForwarder(gateway, ("127.0.0.1", pg_server.port))
    moto, s3_url = start_moto(gateway)
    try:
        services = HostServices(gateway, pg_server, forwarder.port, s3_url)
        services.s3().create_bucket(Bucket=BUCKET)  # the bucket Job's work in the cluster
        yield services
    finally:
        moto.terminate()
        moto.wait(timeout=30)
        forwarder.close()


# --- playing objects ----------------------------------------------------------------------


def played(objs: list[Obj], deployment: str) -> list[Obj]:
    """The Deployment and the ConfigMaps its pod names (change 1), copied, with the podman
    changes every pod needs (changes 10 and 11)."""
    dep = copy.deepcopy(named(objs, "Deployment", deployment))
    assert dep is not None, f"no Deployment {deployment} in the dev overlay"
    pod = dep["spec"]["template"]["spec"]
    pod["restartPolicy"] = "OnFailure"  # change 10
    for c in pod.get("initContainers", []) + pod["containers"]:
        for port in c.get("ports", []):  # change 11
            port.update(hostIP="127.0.0.1", hostPort=free_port())
    names = {v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v}
    for c in pod.get("initContainers", []) + pod["containers"]:
        names |= {s["configMapRef"]["name"] for s in c.get("envFrom", []) if "configMapRef" in s}
    maps = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] in names]
    return [*copy.deepcopy(maps), dep]


def pod_of(objs: list[Obj]) -> Obj:
    dep = next(o for o in objs if o["kind"] == "Deployment")
    return dict(dep["spec"]["template"]["spec"])


def container(objs: list[Obj], name: str) -> Obj:
    return next(c for c in pod_of(objs)["containers"] if c["name"] == name)


def config_map(objs: list[Obj], prefix: str) -> Obj:
    return next(
        o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(prefix)
    )


def secret_names(objs: list[Obj]) -> set[str]:
    pod = pod_of(objs)
    return {
        e["valueFrom"]["secretKeyRef"]["name"]
        for c in pod.get("initContainers", []) + pod["containers"]
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


@dataclass
class Played:
    """A played Deployment: its pod's name and address on the kube network, its manifest."""

    name: str
    manifest: Path
    objs: list[Obj]
    address: str = ""
    containers: list[str] = field(default_factory=list)

    def container_name(self, name: str) -> str:
        return f"{self.name}-pod-0-{name}"

    def running(self, name: str) -> bool:
        state = podman(
            "inspect", "-f", "{{.State.Running}}", self.container_name(name), check=False
        )
        return state.stdout.strip() == "true"

    def logs(self, name: str, tail: int = 60) -> str:
        out = podman("logs", "--tail", str(tail), self.container_name(name), check=False)
        return out.stdout + out.stderr


class Secrets:
    """Podman secrets standing in for the user's Secrets (change 2); removed at the end."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def create(self, name: str, data: dict[str, str]) -> None:
        podman("secret", "rm", name, check=False)
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        podman("secret", "create", name, "-", stdin=json.dumps(encoded))
        self.names.append(name)

    def remove(self) -> None:
        for name in self.names:
            podman("secret", "rm", name, check=False)


def play(objs: list[Obj], manifest: Path) -> Played:
    dep = next(o for o in objs if o["kind"] == "Deployment")
    manifest.write_text(yaml.safe_dump_all(objs, sort_keys=False))
    pod = Played(dep["metadata"]["name"], manifest, objs)
    pod.containers = [c["name"] for c in pod_of(objs)["containers"]]
    t0 = time.monotonic()
    # Returns once the init containers ran; a failed play may leave a pod behind.
    started = podman("kube", "play", str(manifest), timeout=600, check=False)
    if started.returncode != 0:
        logs = "".join(pod.logs(c) for c in [*init_names(objs), *pod.containers])
        podman("kube", "down", str(manifest), check=False, timeout=120)
        pytest.fail(f"podman kube play {manifest.name}:\n{started.stderr}\n{logs}")
    print(f"podman kube play {manifest.name}: {time.monotonic() - t0:.0f} s")
    inspect = json.loads(podman("inspect", pod.container_name(pod.containers[0])).stdout)[0]
    pod.address = inspect["NetworkSettings"]["Networks"][KUBE_NETWORK]["IPAddress"]
    return pod


def init_names(objs: list[Obj]) -> list[str]:
    return [c["name"] for c in pod_of(objs).get("initContainers", [])]


def down(pod: Played) -> None:
    for name in pod.containers:
        print(f"--- {pod.container_name(name)} ---\n{pod.logs(name)}")
    podman("kube", "down", str(pod.manifest), check=False, timeout=120)


def wait_for(
    pod: Played,
    name: str,
    url: str,
    *,
    ok: int = 200,
    timeout_s: float = READY_TIMEOUT_S,
    **kw: Any,
) -> httpx.Response:
    """GET `url` until it answers `ok`, while the container runs; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=5, **kw)
            if r.status_code == ok:
                return r
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as e:
            last = f"{type(e).__name__}: {e}"
        assert pod.running(name), f"{pod.container_name(name)} exited ({last}):\n{pod.logs(name)}"
        time.sleep(1)
    pytest.fail(f"{url} did not answer {ok} within {timeout_s:.0f} s (last: {last})")


# --- MLflow -------------------------------------------------------------------------------


def mlflow_objects(objs: list[Obj], host: HostServices) -> list[Obj]:
    kept = played(objs, "mlflow")
    server = container(kept, "mlflow")
    settings = config_map(kept, "mlflow-server-config")["data"]
    settings["MLFLOW_S3_ENDPOINT_URL"] = host.s3_url  # change 5
    server["command"] = [  # change 3
        a.replace("$(MLFLOW_ARTIFACTS_DESTINATION)", settings["MLFLOW_ARTIFACTS_DESTINATION"])
        for a in server["command"]
    ]
    return kept


def mlflow_secrets(secrets: Secrets, host: HostServices) -> None:
    secrets.create(
        "mlflow-server",
        {
            "backend-store-uri": host.pg_url("mlflow", "mlflow", "postgresql+psycopg"),
            "auth-database-uri": host.pg_url("mlflow", "mlflow_auth", "postgresql+psycopg"),
            "admin-username": MLFLOW_ADMIN[0],
            "admin-password": MLFLOW_ADMIN[1],
            "flask-secret-key": "test-flask-secret-key-0123",
        },
    )
    secrets.create(
        "mlflow-client-credentials", {"username": MLFLOW_CLIENT[0], "password": MLFLOW_CLIENT[1]}
    )
    secrets.create("s3-credentials", {"access-key-id": S3_KEYS[0], "secret-access-key": S3_KEYS[1]})


@pytest.fixture(scope="module")
def secrets() -> Iterator[Secrets]:
    created = Secrets()
    try:
        yield created
    finally:
        created.remove()


@pytest.fixture(scope="module")
def dev_render() -> list[Obj]:
    return render_overlay("dev")


@pytest.fixture(scope="module")
def mlflow_pod(
    dev_render: list[Obj], host_services: HostServices, secrets: Secrets, tmp_path_factory: Any
) -> Iterator[Played]:
    objs = mlflow_objects(dev_render, host_services)
    mlflow_secrets(secrets, host_services)
    assert secret_names(objs) <= set(secrets.names), "a Secret the pod names was not created"
    manifest = tmp_path_factory.mktemp("kube-play-mlflow") / "mlflow.podman.yaml"
    t0 = time.monotonic()
    pod = play(objs, manifest)
    try:
        wait_for(pod, "mlflow", f"http://{pod.address}:5000/health")
        print(f"MLflow healthy {time.monotonic() - t0:.0f} s after kube play started")
        yield pod
    finally:
        down(pod)


class InClusterHost:
    """An MLflow request-header provider: `Host: mlflow:5000`, what a client in the cluster
    sends (the server refuses Host names outside its --allowed-hosts)."""

    def in_context(self) -> bool:
        return True

    def request_headers(self) -> dict[str, str]:
        return {"Host": "mlflow:5000"}


@dataclass
class Registered:
    version: str
    run_id: str
    tracking_uri: str


@pytest.fixture(scope="module")
def registered(mlflow_pod: Played, pipeline_repo: Any) -> Iterator[Registered]:
    """The tiny pipeline's model registered into the played MLflow by the pipeline's register
    stage, logged in as the client user (the flow-run jobs' user)."""
    from mlflow.tracking._tracking_service import utils as tracking_utils
    from mlflow.tracking.request_header.registry import _request_header_provider_registry

    from pipelines.layout import Layout
    from pipelines.params import load_params
    from pipelines.stages import stage_register

    uri = f"http://{mlflow_pod.address}:5000"
    providers = _request_header_provider_registry._registry
    providers.append(InClusterHost())
    try:
        with pytest.MonkeyPatch.context() as mp, tracking_utils._use_tracking_uri(uri):
            mp.setenv("MLFLOW_TRACKING_URI", uri)
            mp.setenv("MLFLOW_TRACKING_USERNAME", MLFLOW_CLIENT[0])
            mp.setenv("MLFLOW_TRACKING_PASSWORD", MLFLOW_CLIENT[1])
            # The first registration on a fresh authenticated server: MLflow's basic-auth app
            # answers 403, not 404, to the gate's lookup of @champion of a model that does not
            # exist yet, which fraud.registry's reader takes for "no champion yet".
            t0 = time.monotonic()
            result = stage_register(
                load_params(pipeline_repo.path / "params.yaml"), Layout(pipeline_repo.path)
            )
            print(f"register stage against the played MLflow: {time.monotonic() - t0:.1f} s")
            assert result.alias == "champion", f"the tiny model was not promoted: {result}"
            yield Registered(result.version, result.run_id, uri)
    finally:
        providers.remove(next(p for p in providers if isinstance(p, InClusterHost)))


def mlflow_call(pod: Played, path: str, auth: tuple[str, str] | None = None) -> httpx.Response:
    return httpx.get(
        f"http://{pod.address}:5000{path}", headers={"Host": "mlflow:5000"}, auth=auth, timeout=10
    )


def test_mlflow_answers_health_openly_and_nothing_else_without_its_users(mlflow_pod: Played):
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert mlflow_call(mlflow_pod, "/health").status_code == 200  # the probes' path
    assert mlflow_call(mlflow_pod, search).status_code == 401
    assert (
        mlflow_call(mlflow_pod, search, (MLFLOW_CLIENT[0], "wrong-password-0")).status_code == 401
    )
    assert mlflow_call(mlflow_pod, search, MLFLOW_CLIENT).status_code == 200
    assert mlflow_call(mlflow_pod, search, MLFLOW_ADMIN).status_code == 200


def test_mlflow_keeps_its_stores_in_postgresql_as_the_mlflow_role(
    mlflow_pod: Played, host_services: HostServices
):
    # The init container migrated both databases and created the client user in the auth store.
    pg = host_services.pg
    with psycopg.connect(pg.url("mlflow")) as conn:
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'experiments'"
        ).fetchone()
    with psycopg.connect(pg.url("mlflow_auth")) as conn:
        users = {r[0] for r in conn.execute("SELECT username FROM users").fetchall()}
    assert owner == ("mlflow",)
    assert {MLFLOW_ADMIN[0], MLFLOW_CLIENT[0]} <= users


def test_a_registered_champion_and_its_artifacts_land_in_the_s3_bucket(
    mlflow_pod: Played, registered: Registered, host_services: HostServices
):
    auth = MLFLOW_CLIENT
    alias = mlflow_call(
        mlflow_pod,
        "/api/2.0/mlflow/registered-models/alias?name=fraud-detector&alias=champion",
        auth,
    )
    assert alias.status_code == 200, alias.text
    assert alias.json()["model_version"]["version"] == registered.version
    # The server proxies artifacts to S3: the native model is in the bucket, under the run's id.
    keys: list[str] = []
    pages = host_services.s3().get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    for page in pages:
        keys += [o["Key"] for o in page.get("Contents", [])]
    assert any(k.startswith("artifacts/") and k.endswith("model.ubj") for k in keys), keys
    assert any(registered.run_id in k or "/models/" in k for k in keys), keys
    assert any(k.endswith("feature_state/history.parquet") for k in keys), keys


# --- the API, on the played MLflow --------------------------------------------------------


def api_objects(objs: list[Obj], mlflow_address: str) -> list[Obj]:
    kept = played(objs, "fraud-api")
    api = container(kept, "api")
    api["image"] = API_IMAGE  # change 6
    pod = pod_of(kept)
    pod["hostAliases"] = [{"ip": mlflow_address, "hostnames": ["mlflow"]}]  # change 7
    next(o for o in kept if o["kind"] == "Deployment")["spec"]["template"]["spec"] = pod
    return kept


@pytest.fixture(scope="module")
def api_image() -> str:
    return build("build-api-image.sh", API_IMAGE)


@pytest.fixture(scope="module")
def api_pod(
    dev_render: list[Obj],
    api_image: str,
    mlflow_pod: Played,
    registered: Registered,
    host_services: HostServices,
    secrets: Secrets,
    tmp_path_factory: Any,
) -> Iterator[Played]:
    objs = api_objects(dev_render, mlflow_pod.address)
    secrets.create(  # change 8
        "fraud-api-secrets",
        {
            "prediction-log-url": host_services.pg_url("fraud", "predictions"),
            "feature-store-url": "memory",
            "admin-token": "test-admin-token-0123",
        },
    )
    assert secret_names(objs) <= set(secrets.names), "a Secret the pod names was not created"
    manifest = tmp_path_factory.mktemp("kube-play-api") / "fraud-api.podman.yaml"
    pod = play(objs, manifest)
    try:
        yield pod
    finally:
        down(pod)


def test_the_api_loads_the_champion_from_the_mlflow_pod_and_logs_to_postgresql(
    api_pod: Played, registered: Registered, host_services: HostServices
):
    api = container(api_pod.objs, "api")
    base = f"http://{api_pod.address}:8000"
    t0 = time.monotonic()
    ready = wait_for(api_pod, "api", base + api["readinessProbe"]["httpGet"]["path"]).json()
    print(f"API ready after {time.monotonic() - t0:.1f} s: {ready}")
    # Its model cache is an emptyDir that starts empty: the model came over HTTP from MLflow.
    assert ready == {"ready": True, "model_version": registered.version, "source": "registry"}

    r = httpx.post(base + "/predict", json=TRANSACTION, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model_name"], body["model_version"]) == ("fraud-detector", registered.version)
    with psycopg.connect(host_services.pg.url("predictions")) as conn:
        logged = conn.execute(
            "SELECT model_version FROM predictions WHERE transaction_id = %s",
            (TRANSACTION["TRANSACTION_ID"],),
        ).fetchall()
    assert logged == [(registered.version,)], logged


# --- the Prefect server and the Evidently UI ------------------------------------------------


@pytest.fixture(scope="module")
def prefect_pod(
    dev_render: list[Obj], host_services: HostServices, secrets: Secrets, tmp_path_factory: Any
) -> Iterator[Played]:
    objs = played(dev_render, "prefect-server")
    secrets.create(
        "prefect-server",
        {
            "database-url": host_services.pg_url("prefect", "prefect", "postgresql+asyncpg"),
            "auth-string": PREFECT_AUTH,
        },
    )
    assert secret_names(objs) <= set(secrets.names), "a Secret the pod names was not created"
    pod = play(objs, tmp_path_factory.mktemp("kube-play-prefect") / "prefect.podman.yaml")
    try:
        yield pod
    finally:
        down(pod)


def test_the_prefect_server_on_postgresql_answers_only_with_its_auth_string(
    prefect_pod: Played, host_services: HostServices
):
    server = container(prefect_pod.objs, "server")
    base = f"http://{prefect_pod.address}:4200"
    t0 = time.monotonic()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):  # open, as the kubelet's
        wait_for(prefect_pod, "server", base + server[probe]["httpGet"]["path"])
    print(f"Prefect server healthy and ready after {time.monotonic() - t0:.1f} s")
    flows = base + "/api/flows/filter"
    assert httpx.post(flows, json={}, timeout=10).status_code == 401
    wrong = httpx.post(flows, json={}, auth=("fraud", "wrong-password-0"), timeout=10)
    assert wrong.status_code == 401
    user, password = PREFECT_AUTH.split(":", 1)
    assert httpx.post(flows, json={}, auth=(user, password), timeout=10).status_code == 200
    # Its database is the test's PostgreSQL (migrated on start), owned by the role prefect.
    with psycopg.connect(host_services.pg.url("prefect")) as conn:
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'flow'").fetchone()
    assert owner == ("prefect",)


def evidently_objects(objs: list[Obj]) -> list[Obj]:
    """The UI container alone (change 9); the flows' volume (a PVC) as an emptyDir (change 12)."""
    kept = played(objs, "evidently")
    pod = pod_of(kept)
    pod["containers"] = [c for c in pod["containers"] if c["name"] == "ui"]
    mounted = {m["name"] for m in pod["containers"][0]["volumeMounts"]}
    pod["volumes"] = [
        {"name": v["name"], "emptyDir": {}} if "persistentVolumeClaim" in v else v
        for v in pod["volumes"]
        if v["name"] in mounted
    ]
    kept = [o for o in kept if o["kind"] == "Deployment"]  # the proxy's ConfigMap goes too
    kept[0]["spec"]["template"]["spec"] = pod
    return kept


@pytest.fixture(scope="module")
def evidently_pod(
    dev_render: list[Obj], platform_image: str, tmp_path_factory: Any
) -> Iterator[Played]:
    objs = evidently_objects(dev_render)
    pod = play(objs, tmp_path_factory.mktemp("kube-play-evidently") / "evidently.podman.yaml")
    try:
        yield pod
    finally:
        down(pod)


def test_the_evidently_ui_container_answers_its_probes_in_the_pod(evidently_pod: Played):
    # The UI listens on 127.0.0.1 in the pod (only the proxy is reachable): run each exec probe's
    # command in the container, as the kubelet would.
    ui = container(evidently_pod.objs, "ui")
    name = evidently_pod.container_name("ui")
    deadline = time.monotonic() + READY_TIMEOUT_S
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        while True:
            run = podman("exec", name, *ui[probe]["exec"]["command"], check=False, timeout=30)
            if run.returncode == 0:
                break
            assert evidently_pod.running("ui"), evidently_pod.logs("ui")
            assert time.monotonic() < deadline, f"{probe}: {run.stderr[-2000:]}"
            time.sleep(1)
    version = podman(
        "exec",
        name,
        "python",
        "-c",
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/api/version')"
        ".read().decode())",
    )
    assert "version" in version.stdout, version.stdout
