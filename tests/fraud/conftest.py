"""Fixtures of the core's tests that read the real MLflow store of the tiny pipeline."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


@contextmanager
def tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's global URI and MLFLOW_TRACKING_URI (which setting the URI also writes) at
    `uri`, both restored afterwards."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with tracking_utils._use_tracking_uri(uri):
            yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture
def pipeline_store(pipeline_repo) -> Iterator[str]:
    with tracking_uri(pipeline_repo.tracking_uri):
        yield pipeline_repo.tracking_uri
