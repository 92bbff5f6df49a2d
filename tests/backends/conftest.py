"""Fixtures of the production-backend tests: one PostgreSQL and one moto S3 server for the
session, and an MLflow tracking server on them per module (its own database and artifact
prefix, so modules never see each other's runs). The starters are in tests/backends/servers.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends.servers import (
    MlflowServer,
    S3Server,
    mlflow_database_uri,
    mlflow_server,
    moto_s3_server,
)
from tests.pg_server import PostgresServer, postgres_server

#: The bucket every backend test shares; each user writes under a prefix of its own.
BUCKET = "fraud-backends"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session (a database per user: `create_database`)."""
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server for the session, with the bucket BUCKET."""
    with moto_s3_server(tmp_path_factory.mktemp("moto"), buckets=[BUCKET]) as server:
        yield server


def _module_key(request: pytest.FixtureRequest) -> str:
    """A name for the requesting module that PostgreSQL and S3 accept (`test_x` -> `test_x`)."""
    return re.sub(r"[^a-z0-9_]", "_", Path(str(request.path)).stem.lower())


@pytest.fixture(scope="module")
def mlflow_backend(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    pg_server: PostgresServer,
    s3_server: S3Server,
) -> Iterator[MlflowServer]:
    """`mlflow server` for this module: a fresh PostgreSQL database, artifacts proxied to
    s3://BUCKET/<module>/mlflow (clients need only MLFLOW_TRACKING_URI)."""
    key = _module_key(request)
    with mlflow_server(
        tmp_path_factory.mktemp("mlflow-server"),
        mlflow_database_uri(pg_server, f"mlflow_{key}"),
        s3_server,
        BUCKET,
        prefix=f"{key}/mlflow",
    ) as server:
        yield server
