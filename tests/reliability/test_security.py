"""Security of the API against a real uvicorn server (`python -m serving`): the admin endpoints
refuse without the token, compare it in constant time and never log it; the model loader serves
only the registered bytes (the SHA-256 recorded at registration, `fraud.registry.contract.
TAG_MODEL_SHA256`) in XGBoost's native format, whether it comes from the registry or from the
local cache, and refuses a tampered artifact or a pickle with a message naming the version.

Registry changes happen on private copies of the pipeline's store; a version a test tampers with
has its own copy of the MLflow model directory, so the pipeline's artifacts are never touched.
"""

from __future__ import annotations

import hmac
import json
import pickle
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from fastapi import HTTPException
from mlflow import MlflowClient
from pydantic import SecretStr

from fraud import registry
from serving import deps
from tests.fraud.test_registry_reader import WritesAMarkerWhenUnpickled
from tests.reliability.conftest import READY_TIMEOUT, start_server
from tests.serving.conftest import (
    LiveServer,
    ServerPool,
    TransactionFactory,
    copy_registry,
    mlflow_tracking_uri,
)

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow]


MODEL = registry.DEFAULT_MODEL_NAME
TOKEN = "security-tests-admin-token-7d1f"  # not a secret: only these test servers accept it
UNREACHABLE = "http://127.0.0.1:9"  # nothing listens on port 9
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


@pytest.fixture(scope="module")
def new_tx(pipeline_repo) -> TransactionFactory:
    return TransactionFactory(pd.read_parquet(pipeline_repo.path / "data/raw/transactions.parquet"))


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[ServerPool]:
    servers = ServerPool(tmp_path / "servers")
    yield servers
    servers.stop_all()


def wait_not_ready(server: LiveServer, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
    """Poll /ready until the server answers (503 expected: no model); bounded."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.url, timeout=5) as c:
        while time.monotonic() < deadline:
            assert server.proc.poll() is None, server.output()
            try:
                r = c.get("/ready")
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            assert r.status_code == 503, r.text
            return dict(r.json())
    raise AssertionError(f"no answer from /ready within {timeout} s:\n{server.output()}")


# ------------------------------------------------------------------------------------------
# The admin token


@pytest.fixture(scope="module")
def admin_server(pipeline_repo, tmp_path_factory) -> Iterator[LiveServer]:
    """A server with the admin token, logging at uvicorn's most verbose level, trace (which
    logs every ASGI message and scope, headers as placeholders; the service never turns on
    uvicorn's access log)."""
    base = tmp_path_factory.mktemp("admin")
    servers = ServerPool(base)
    try:  # stopped also when it never got ready
        yield start_server(
            servers,
            copy_registry(pipeline_repo.tracking_uri, base / "registry"),
            admin_token=TOKEN,
            env={"FRAUD_LOG_LEVEL": "trace"},
        )
    finally:
        servers.stop_all()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN.upper()}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer " + "A" * 8000},
        {"Authorization": f"Token {TOKEN}"},
        {"X-Admin-Token": TOKEN},
    ],
    ids=[
        "none",
        "empty",
        "bearer-empty",
        "wrong",
        "prefix",
        "longer",
        "other-case",
        "basic-scheme",
        "8000-chars",
        "token-scheme",
        "other-header",
    ],
)
def test_admin_reload_refuses_without_the_right_bearer_token_with_401(
    admin_server: LiveServer, headers: dict[str, str]
):
    with admin_server.client() as c:
        r = c.post("/admin/reload", headers=headers)
    assert r.status_code == 401, r.text
    assert r.json() == {"detail": "missing or wrong bearer token"}


def test_admin_reload_with_a_non_ascii_token_is_refused_without_a_5xx(admin_server: LiveServer):
    """Bytes httpx will not send (UTF-8 in a header), written to the socket: uvicorn refuses
    the request (400) or the token check does (401)."""
    host, port = admin_server.url.removeprefix("http://").split(":")
    request = (
        "POST /admin/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
        f"Authorization: Bearer tökén-💳{TOKEN}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(request)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 401), answer[:500]


def test_admin_reload_with_the_token_reloads(admin_server: LiveServer):
    with admin_server.client() as c:
        r = c.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == "1"


def test_neither_the_admin_token_nor_a_wrong_one_is_ever_logged(admin_server: LiveServer):
    wrong = "wrong-token-that-someone-mistyped-42"
    with admin_server.client() as c:
        assert c.post("/admin/reload", headers={"Authorization": f"Bearer {wrong}"}).status_code
        assert c.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}).status_code
    output = admin_server.output()
    assert "serving fraud-detector v1" in output, output[-3000:]  # the log is being written
    assert "/admin/reload" in output, output[-3000:]  # trace: every request's scope
    assert TOKEN not in output
    assert wrong not in output


def test_the_token_is_compared_with_hmac_compare_digest_whatever_its_length(monkeypatch):
    """Constant time: every comparison goes through hmac.compare_digest with the given and the
    configured token (bytes), also when their lengths differ; never `==` on the strings."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(deps.hmac, "compare_digest", recording)
    runtime: Any = SimpleNamespace(settings=SimpleNamespace(admin_token=SecretStr(TOKEN)))
    for given in ("short", TOKEN[:-1] + "X", TOKEN + "-longer", ""):
        with pytest.raises(HTTPException) as e:
            deps.require_admin(runtime, f"Bearer {given}")
        assert e.value.status_code == 401
    with pytest.raises(HTTPException):
        deps.require_admin(runtime, None)
    deps.require_admin(runtime, f"Bearer {TOKEN}")  # accepted: no exception
    assert calls == [
        (b"short", TOKEN.encode()),
        ((TOKEN[:-1] + "X").encode(), TOKEN.encode()),
        ((TOKEN + "-longer").encode(), TOKEN.encode()),
        (b"", TOKEN.encode()),
        (b"", TOKEN.encode()),
        (TOKEN.encode(), TOKEN.encode()),
    ]


def test_admin_endpoints_are_disabled_without_a_configured_token(
    pool: ServerPool, pipeline_repo, tmp_path
):
    server = start_server(
        pool, copy_registry(pipeline_repo.tracking_uri, tmp_path / "registry"), admin_token=None
    )
    with server.client() as c:
        for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": f"Bearer {TOKEN}"}):
            r = c.post("/admin/reload", headers=headers)
            assert r.status_code == 403, r.text
            assert "FRAUD_ADMIN_TOKEN" in r.json()["detail"]


# ------------------------------------------------------------------------------------------
# Model integrity: the registered bytes, in the native format, or nothing


def other_booster() -> xgb.Booster:
    """A valid native model that is not the registered one."""
    rng = np.random.default_rng(1)
    x = rng.random((100, 3))
    return xgb.train({"nthread": 1}, xgb.DMatrix(x, label=x[:, 0] > 0.5), num_boost_round=2)


def champion_with_own_model_dir(
    tracking_uri: str, workdir: Path, *, drop_hash_tag: bool = False
) -> tuple[str, Path]:
    """Register, in the store at `tracking_uri`, a new version of v1's model from a private copy
    of its MLflow model directory, and make it @champion; returns its version and the path of
    its native model file (for a test to tamper with)."""
    with mlflow_tracking_uri(tracking_uri):
        import mlflow

        client = MlflowClient()
        v1 = client.get_model_version(MODEL, "1")
        model_dir = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{MODEL}/1", dst_path=str(workdir / "own-model")
            )
        )
        tags = dict(v1.tags or {})
        assert tags.get(registry.TAG_MODEL_SHA256), "the pipeline did not record the model hash"
        if drop_hash_tag:
            del tags[registry.TAG_MODEL_SHA256]
        mv = client.create_model_version(
            MODEL, source=model_dir.as_uri(), run_id=v1.run_id, tags=tags
        )
        client.set_registered_model_alias(MODEL, registry.ALIAS_CHAMPION, mv.version)
    return str(mv.version), next(model_dir.rglob(registry.NATIVE_MODEL_FILE))


def test_a_tampered_registry_artifact_is_refused_and_nothing_is_served(
    pool: ServerPool, pipeline_repo, tmp_path, new_tx
):
    uri = copy_registry(pipeline_repo.tracking_uri, tmp_path / "registry")
    version, native = champion_with_own_model_dir(uri, tmp_path)
    recorded = registry.file_sha256(native)
    other_booster().save_model(native)
    server = pool.start(uri, cache_dir=tmp_path / "empty-cache", wait=False)
    assert wait_not_ready(server) == {"ready": False, "reason": "no model loaded"}
    output = server.output()
    assert f"{MODEL} v{version}: model file model.ubj has SHA-256 " in output, output
    assert recorded in output and registry.file_sha256(native) in output
    with server.client() as c:
        r = c.post("/predict", json=new_tx())
    assert r.status_code == 503, r.text
    assert not (tmp_path / "empty-cache").exists()  # nothing of the tampered version was kept


def test_a_tampered_registry_artifact_leaves_the_service_on_its_verified_cache(
    pool: ServerPool, pipeline_repo, tmp_path, new_tx
):
    uri = copy_registry(pipeline_repo.tracking_uri, tmp_path / "registry")
    first = start_server(pool, uri)  # caches v1 from the registry
    first.stop()
    version, native = champion_with_own_model_dir(uri, tmp_path)
    other_booster().save_model(native)
    server = start_server(pool, uri, cache_dir=first.cache_dir)
    with server.client() as c:
        model = c.get("/model").json()
        assert (model["version"], model["source"]) == ("1", "cache"), model
        assert c.post("/predict", json=new_tx()).status_code == 200
    assert f"refused the registry's model ({MODEL} v{version}" in server.output()


def test_a_tampered_cache_is_refused_at_start_up(pool: ServerPool, pipeline_repo, tmp_path):
    first = start_server(pool, copy_registry(pipeline_repo.tracking_uri, tmp_path / "registry"))
    first.stop()
    meta = json.loads((first.cache_dir / "meta.json").read_text())
    cached = first.cache_dir / registry.NATIVE_MODEL_FILE
    assert meta["model_sha256"] == registry.file_sha256(cached)
    other_booster().save_model(cached)
    # The registry is down: the cache is all there is, and it is not what was fetched.
    server = pool.start(UNREACHABLE, cache_dir=first.cache_dir, env=FAIL_FAST, wait=False)
    assert wait_not_ready(server) == {"ready": False, "reason": "no model loaded"}
    output = server.output()
    assert f"cached {MODEL} v1 in {first.cache_dir}: model file model.ubj has SHA-256" in output
    assert meta["model_sha256"] in output


def test_a_cache_written_before_hashes_is_served_with_a_warning(
    pool: ServerPool, pipeline_repo, tmp_path, new_tx
):
    first = start_server(pool, copy_registry(pipeline_repo.tracking_uri, tmp_path / "registry"))
    first.stop()
    meta_path = first.cache_dir / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["model_sha256"]
    meta_path.write_text(json.dumps(meta))
    server = start_server(pool, UNREACHABLE, cache_dir=first.cache_dir, env=FAIL_FAST)
    with server.client() as c:
        assert c.get("/model").json()["source"] == "cache"
        assert c.post("/predict", json=new_tx()).status_code == 200
    assert "has no recorded SHA-256" in server.output()


def test_a_pickle_renamed_model_ubj_is_refused_and_never_unpickled(
    pool: ServerPool, pipeline_repo, tmp_path
):
    """A version registered without a hash (as before the tag existed) whose model.ubj is a
    pickle: the format check refuses it before anything could unpickle it."""
    uri = copy_registry(pipeline_repo.tracking_uri, tmp_path / "registry")
    version, native = champion_with_own_model_dir(uri, tmp_path, drop_hash_tag=True)
    marker = tmp_path / "unpickled.txt"
    native.write_bytes(pickle.dumps(WritesAMarkerWhenUnpickled(marker)))
    server = pool.start(uri, cache_dir=tmp_path / "empty-cache", wait=False)
    assert wait_not_ready(server) == {"ready": False, "reason": "no model loaded"}
    output = server.output()
    assert "not an XGBoost native model" in output and "Python pickle" in output, output
    assert f"{MODEL} v{version} has no recorded SHA-256" in output
    assert not marker.exists()


def test_the_registered_hash_is_the_hash_of_what_the_service_caches(
    pool: ServerPool, pipeline_repo, tmp_path
):
    uri = copy_registry(pipeline_repo.tracking_uri, tmp_path / "registry")
    server = start_server(pool, uri)
    with mlflow_tracking_uri(uri):
        recorded = MlflowClient().get_model_version(MODEL, "1").tags[registry.TAG_MODEL_SHA256]
    assert registry.file_sha256(server.cache_dir / registry.NATIVE_MODEL_FILE) == recorded
    assert json.loads((server.cache_dir / "meta.json").read_text())["model_sha256"] == recorded
