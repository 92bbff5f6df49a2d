"""The FastAPI application: `create_app()` wires the runtime, the middlewares, the routes and
the docs; run it with `python -m serving` (uvicorn).

Scoring path per transaction: validate the raw request (the data contract), compute its
features from the online state with the training definitions (`fraud.features`), score with the
native booster (`serving.predictor`, no pandas), log the prediction, update the state
(`serving.scoring`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from fraud.predictions import open_prediction_log
from serving.json_io import validation_error_response
from serving.metrics import RequestMetrics
from serving.middleware import BodyLimit, FastPredict
from serving.openapi import install_docs, install_openapi
from serving.routes import admin, feedback, predict, status
from serving.runtime import Runtime, open_feature_store
from serving.settings import ServingSettings


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    """The API on `settings` (default: from the environment); the model loads at start-up."""
    settings = settings or ServingSettings()
    # Looked up here, at call time: benchmarks/serving/floor.py swaps both for no-ops.
    rt = Runtime(settings, open_prediction_log(settings.prediction_log), open_feature_store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(rt.load)
        poll = asyncio.create_task(rt.poll_alias()) if settings.reload_poll_seconds > 0 else None
        yield
        if poll:
            poll.cancel()
        rt.log.close()

    app = FastAPI(
        title="Fraud detection API",
        version="0.1.0",
        description="Scores raw card transactions with the MLflow `@champion` model, computing the "
        "customer and terminal features online with the same definitions as training.",
        lifespan=lifespan,
        docs_url=None,  # serving.openapi serves both from local assets
        redoc_url=None,
        # FastAPI's native OpenTelemetry asks the global providers on every request whether
        # one is configured (about 3% of a /predict); on only when asked for.
        telemetry=None
        if settings.opentelemetry
        else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = rt
    app.exception_handler(RequestValidationError)(validation_error_response)
    for group in (predict, feedback, status, admin):
        app.include_router(group.router)
    install_docs(app)
    install_openapi(app)

    # Pure ASGI middlewares; added last = outermost: RequestMetrics sees the 413s of BodyLimit
    # and the answers of FastPredict, which answers POST /predict before FastAPI's routing.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    # The route object the metrics label FastAPI's requests to /predict with (its path).
    predict_route = next(r for r in predict.router.routes if getattr(r, "path", "") == "/predict")
    app.add_middleware(FastPredict, runtime=rt, route=predict_route)
    app.add_middleware(RequestMetrics, metrics=rt.metrics)
    return app
