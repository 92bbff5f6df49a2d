"""Property-based API tests from the app's own OpenAPI schema (schemathesis, in-process ASGI):
whatever schemathesis generates, valid or not, the API never answers with a 5xx.

Bounded: 30 examples per operation and mode (valid, invalid), derandomized: the same cases on
every run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from serving.app import create_app
from serving.settings import ServingSettings


@pytest.fixture(scope="module")
def registry(tmp_path_factory, copy_pipeline_registry, use_tracking_uri) -> Iterator[str]:
    uri = copy_pipeline_registry(tmp_path_factory.mktemp("schemathesis") / "registry")
    with use_tracking_uri(uri):
        yield uri


def app_settings(base: Path) -> ServingSettings:
    return ServingSettings(
        model_cache_dir=base / "model-cache",
        prediction_log=base / "predictions.sqlite",
        max_batch=50,
        admin_token=None,
        reload_poll_seconds=0,
    )


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory) -> Any:
    """The app's own OpenAPI document (generating it does not start the app)."""
    app = create_app(app_settings(tmp_path_factory.mktemp("openapi")))
    return schemathesis.openapi.from_dict(app.openapi())


@pytest.fixture
def app(registry, tmp_path) -> Any:
    """A fresh app per test: schemathesis's pytest plugin ends every ASGI lifespan at each
    test's teardown, and the app's lifespan closes its prediction log for good."""
    return create_app(app_settings(tmp_path))


#: Operations with a request body: valid and invalid requests are generated.
WITH_INPUT = [("POST", "/predict"), ("POST", "/predict/batch"), ("POST", "/feedback")]
#: Operations without inputs (one app serves all of them: each app start loads the model).
WITHOUT_INPUT = [
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/model"),
    ("GET", "/metrics"),
    ("POST", "/admin/reload"),
]


def test_schema_lists_exactly_these_operations(api_schema):
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == set(WITH_INPUT + WITHOUT_INPUT)


def run_cases(api_schema, app, method: str, path: str, mode: GenerationMode) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=30,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case) -> None:
        case.call_and_validate(app=app, checks=[not_a_server_error])

    check()


# schemathesis.pytest.from_fixture (its lazy schema) fails on pytest 9.2 (it sets
# `request.node._nodeid`, which pytest 9.2 no longer has): drive Hypothesis directly instead.
@pytest.mark.parametrize(("method", "path"), WITH_INPUT)
def test_valid_and_invalid_requests_never_get_a_server_error(api_schema, app, method, path):
    run_cases(api_schema, app, method, path, GenerationMode.POSITIVE)
    run_cases(api_schema, app, method, path, GenerationMode.NEGATIVE)


def test_endpoints_without_input_never_answer_with_a_server_error(api_schema, app):
    for method, path in WITHOUT_INPUT:
        run_cases(api_schema, app, method, path, GenerationMode.POSITIVE)
