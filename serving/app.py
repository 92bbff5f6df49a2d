"""The FastAPI application: `create_app()`; run it with `python -m serving` (uvicorn).

Scoring path per transaction: validate the raw request (the data contract), compute its
features from the online state with the training definitions (`fraud.features`), score with the
native booster's `inplace_predict` (no pandas), log the prediction, update the state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import hmac
import logging
import math
import threading
import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from itertools import accumulate, chain
from operator import itemgetter
from typing import Annotated, Any, TypeVar

import numpy as np
import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fraud.features import (
    DuplicateTransactionError,
    FeatureBatch,
    FeatureConfig,
    FeatureStore,
    OnlineFeatureState,
    Transaction,
)
from fraud.predictions import FeedbackRow, PredictionRow, open_prediction_log
from fraud.schema import TransactionRecord, utc_naive_in_range
from serving.model_store import (
    ModelUnavailableError,
    ServingModel,
    load_serving_model,
    registry_version,
)
from serving.settings import ServingSettings

log = logging.getLogger("serving")


# ------------------------------------------------------------------------------------------
# Response and request models


class Contribution(BaseModel):
    feature: str
    value: float | None
    contribution: float


class Prediction(BaseModel):
    TRANSACTION_ID: int
    fraud_probability: float
    is_fraud: bool = Field(description="decision at the model's threshold")
    threshold: float
    model_name: str
    model_version: str
    model_alias: str | None
    contributions: list[Contribution] | None = Field(
        None, description="top per-feature contributions (log-odds), with ?explain=true"
    )


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transactions: list[TransactionRecord] = Field(min_length=1)


class BatchResponse(BaseModel):
    predictions: list[Prediction]


class Feedback(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"TRANSACTION_ID": 1_788_430, "is_fraud": True}]},
    )
    TRANSACTION_ID: int = Field(ge=0, le=2**63 - 1)
    is_fraud: bool
    known_at: dt.datetime | None = Field(
        None, description="when the label became known (default: now)"
    )

    @field_validator("known_at")
    @classmethod
    def _known_at_utc(cls, v: dt.datetime | None) -> dt.datetime | None:
        return None if v is None else utc_naive_in_range(v)


class FeedbackResponse(BaseModel):
    TRANSACTION_ID: int
    recorded: bool
    seen_by_this_service: bool


# ------------------------------------------------------------------------------------------
# Runtime state


class ScoreHistogram:
    """A Prometheus histogram of the scores served, observed a whole request at a time: a
    batch is one numpy bucket count instead of a locked Python call per score (1.5 µs each);
    a single score is one bisect."""

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation = name, documentation
        self._bounds = sorted(float(b) for b in buckets)
        self._np_bounds = np.asarray(self._bounds, dtype=np.float64)
        self._counts = [0] * (len(self._bounds) + 1)  # the last: above every bound (+Inf)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        # Prometheus buckets are "less than or equal": the first bound >= value.
        if len(values) < 16:
            scores = values.tolist()
            with self._lock:
                for v in scores:
                    self._counts[bisect_left(self._bounds, v)] += 1
                    self._sum += v
            return
        counts = np.bincount(
            np.searchsorted(self._np_bounds, values, side="left"), minlength=len(self._counts)
        ).tolist()
        total = float(np.sum(values, dtype=np.float64))
        with self._lock:
            self._counts = [a + b for a, b in zip(self._counts, counts, strict=True)]
            self._sum += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            cumulative = list(accumulate(self._counts))
            total = self._sum
        les = [floatToGoString(b) for b in self._bounds] + ["+Inf"]
        yield HistogramMetricFamily(
            self.name,
            self.documentation,
            buckets=list(zip(les, cumulative, strict=True)),
            sum_value=total,
        )


class Runtime:
    """What the service holds: the model, the online feature state, the log, the metrics."""

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.model: ServingModel | None = None
        self.state: FeatureStore | None = None
        self.log = open_prediction_log(settings.prediction_log)
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fraud_api_requests",
            "HTTP requests",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fraud_api_request_seconds",
            "request latency",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.scores = ScoreHistogram(
            "fraud_api_score",
            "fraud probabilities served",
            buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 0.8, 0.95, 1.0),
            registry=self.registry,
        )
        self.model_info = Gauge(
            "fraud_api_model_version",
            "serving model version (1 = serving)",
            ["name", "version", "source"],
            registry=self.registry,
        )

    def install(self, model: ServingModel) -> None:
        """Swap in a model; keep the live feature state when the feature definitions match."""
        if (
            self.state is None
            or self.model is None
            or self.model.feature_config != model.feature_config
        ):
            old_state = self.state
            self.state = open_feature_store(self.settings, model.feature_config, model.history)
            if old_state is not None:
                old_state.close()
        old = self.model
        self.model = model
        if old is not None:
            self.model_info.remove(old.name, old.version, old.source)
        self.model_info.labels(model.name, model.version, model.source).set(1)
        # The model, its history and a fresh in-process feature state are hundreds of
        # thousands of long-lived objects: left to the cyclic GC, every full collection
        # walks them all (measured: 230-270 ms, a pause in whichever request triggers it).
        # Frozen, a full collection only walks what requests allocate (about 20 ms).
        gc.collect()
        gc.freeze()

    def require_model(self) -> tuple[ServingModel, FeatureStore]:
        if self.model is None or self.state is None:
            raise HTTPException(
                503, detail="no model loaded: register one (make run) or check the registry"
            )
        return self.model, self.state


def open_feature_store(settings: ServingSettings, cfg: FeatureConfig, history: Any) -> FeatureStore:
    """The configured feature state, seeded with the model's history (Redis: once per store)."""
    if settings.feature_store == "memory":
        state = OnlineFeatureState(cfg)
        state.seed(history)
        return state
    from serving.feature_store import RedisFeatureStore

    redis_state = RedisFeatureStore(settings.feature_store, cfg, prefix=settings.redis_prefix)
    redis_state.seed(history)
    return redis_state


class _GCPause:
    """No cyclic garbage collection while any batch request is being scored.

    A 1,000-transaction batch holds some 10,000 container objects (request models, feature
    rows, response items) until it answers, and frees them by reference counting. Left on,
    the collector runs ten times during it, promotes those still-live objects each time and so
    sets off full collections (about 20 ms each even with the state frozen): measured 5 ms per
    batch on average and most of the tail. Counted, so that overlapping requests (several
    batches in flight on one event loop) keep it off until the last one ends; a collector that
    was off before stays off.
    """

    def __init__(self) -> None:
        self._depth = 0
        self._switched_off = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        if self._depth == 0:
            self._switched_off = gc.isenabled()
            if self._switched_off:
                gc.disable()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and self._switched_off:
                gc.enable()


_gc_paused = _GCPause()


def _tx(r: TransactionRecord) -> Transaction:
    return Transaction(r.TRANSACTION_ID, r.TX_DATETIME, r.CUSTOMER_ID, r.TERMINAL_ID, r.TX_AMOUNT)


def _contributions(
    model: ServingModel, contrib: np.ndarray, values: dict[str, float], k: int
) -> list[dict[str, Any]]:
    """The `k` largest of one row's contributions (bias excluded), with the feature values."""
    top = np.argsort(-np.abs(contrib))[:k]
    out = []
    for i in top:
        v = values[model.features[i]]
        out.append(
            {
                "feature": model.features[i],
                "value": None if math.isnan(v) else v,
                "contribution": float(contrib[i]),
            }
        )
    return out


async def score_transactions(
    rt: Runtime, records: list[TransactionRecord], explain: bool
) -> list[dict[str, Any]]:
    """Features, scores, log and state update for a list of transactions (in order); the
    predictions as JSON-ready dicts (the `Prediction` schema)."""
    model, state = rt.require_model()
    try:
        feats = await state.afeatures_many([_tx(r) for r in records])
    except DuplicateTransactionError as e:
        raise HTTPException(
            409, detail={"error": "duplicate TRANSACTION_ID", "ids": e.ids[:20]}
        ) from e
    names = model.features
    if isinstance(feats, FeatureBatch):  # a batch, by column: no per-row dicts
        x = feats.matrix(names)
        logged: Sequence[dict[str, float]] = feats.rows()
    else:
        row = itemgetter(*names) if len(names) > 1 else lambda f: (f[names[0]],)
        x = np.fromiter(
            chain.from_iterable(map(row, feats)), dtype=np.float32, count=len(feats) * len(names)
        ).reshape(len(feats), -1)
        logged = feats
    raw = model.predictor.predict(x)
    rt.scores.observe_many(raw)
    scores = raw.tolist()
    threshold, name, version, alias = model.threshold, model.name, model.version, model.alias
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat()
    rows = [
        PredictionRow(
            r.TRANSACTION_ID,
            r.TX_DATETIME.isoformat(),
            r.CUSTOMER_ID,
            r.TERMINAL_ID,
            r.TX_AMOUNT,
            f,
            score,
            int(score >= threshold),
            threshold,
            name,
            version,
            now,
        )
        for r, f, score in zip(records, logged, scores, strict=True)
    ]
    preds: list[dict[str, Any]] = [
        {
            "TRANSACTION_ID": r.TRANSACTION_ID,
            "fraud_probability": score,
            "is_fraud": score >= threshold,
            "threshold": threshold,
            "model_name": name,
            "model_version": version,
            "model_alias": alias,
        }
        for r, score in zip(records, scores, strict=True)
    ]
    if explain:
        top = rt.settings.top_contributions
        contribs = model.predictor.contributions(x)[:, :-1]  # one call for the whole request
        for pred, f, contrib in zip(preds, feats, contribs, strict=True):
            pred["contributions"] = _contributions(model, contrib, f, top)
    try:
        rt.log.log_predictions(rows)
    except Exception as e:  # the log's backend is down: no acknowledgement without a record
        log.error("prediction log write failed: %s", e)
        raise HTTPException(
            503,
            detail="the prediction log is unavailable, so the prediction was not returned; "
            "the transaction was counted in the online features, so a retry with the same "
            "TRANSACTION_ID is refused (409)",
        ) from e
    return preds


def _json_response(content: Any) -> Response:
    """Serialised once, here; FastAPI passes a Response through without re-validating it
    against `response_model` (which still documents it)."""
    return Response(orjson.dumps(content), media_type="application/json")


_M = TypeVar("_M", bound=BaseModel)


# FastAPI documents the 422 of the bodies it validates; these endpoints validate their own.
_VALIDATION_ERROR: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "Validation Error",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
        },
    }
}


def _json_body(schema: str) -> dict[str, Any]:
    """OpenAPI for a required JSON body of components/schemas/`schema`."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }
    }


async def _parse_body(request: Request, model: type[_M]) -> _M:
    """The JSON body as `model`, validated straight from the bytes by pydantic-core: about
    half of what FastAPI's own body handling costs (decode, then validate the objects). Errors
    are FastAPI's: a 422 with each error's location under "body"."""
    body = await request.body()
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise RequestValidationError(
            [{**err, "loc": ("body", *err["loc"])} for err in e.errors(include_url=False)]
        ) from None


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


class BodyLimit:
    """Refuse bodies above `max_bytes` with 413, whether they declare a Content-Length or are
    chunked (counted as they stream in, never buffered beyond the limit)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = JSONResponse(
            {"detail": f"body larger than {self.max_bytes} bytes"}, status_code=413
        )
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await too_large(scope, receive, send)
            return
        received = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Answer 413 now; the app sees the body end here, and what it answers
                    # to that truncated body is dropped by `guarded_send`.
                    refused = True
                    await too_large(scope, receive, send)
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """Prometheus request counts and latencies by route template, method and status."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.rt = runtime
        # The labelled children, looked up once: `labels()` costs a lock and a tuple per call.
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._latencies: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            # Any token is a valid HTTP method: bound the label's values.
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            key = (endpoint, method, status)
            counter = self._counters.get(key)
            if counter is None:
                counter = self._counters[key] = self.rt.requests.labels(
                    endpoint, method, str(status)
                )
            counter.inc()
            latency = self._latencies.get(endpoint)
            if latency is None:
                latency = self._latencies[endpoint] = self.rt.latency.labels(endpoint)
            latency.observe(time.perf_counter() - start)


class FastPredict:
    """The hot path: `POST /predict` without a query string, answered here, below the metrics
    and above FastAPI's routing, exception and dependency layers (about a third of a request's
    CPU). It does what the `/predict` route does, with the same functions; anything but the
    happy path (invalid body, oversized or chunked body) goes down to the route unchanged,
    with the body replayed, so that errors are FastAPI's own; an HTTPException (409, 503) is
    answered as FastAPI's handler would."""

    def __init__(self, app: ASGIApp, runtime: Runtime, route: Any) -> None:
        self.app = app
        self.rt = runtime
        self.route = route
        self.limit = runtime.settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != "/predict"
            or scope["method"] != "POST"
            or scope["query_string"]
        ):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if not length.isdigit() or int(length) > self.limit:
            await self.app(scope, receive, send)
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        scope["route"] = self.route  # for the metrics' endpoint label
        try:
            tx = TransactionRecord.model_validate_json(body)
        except ValidationError:
            await self.app(scope, _replay(body), send)
            return
        try:
            pred = (
                await score_transactions(self.rt, [tx], self.rt.settings.contributions_by_default)
            )[0]
            status, content = 200, pred
        except HTTPException as e:
            status, content = e.status_code, {"detail": e.detail}
        payload = orjson.dumps(content)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


# ------------------------------------------------------------------------------------------
# The app


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    settings = settings or ServingSettings()
    rt = Runtime(settings)

    def load() -> None:
        try:
            rt.install(
                load_serving_model(
                    settings.model_name,
                    settings.model_alias,
                    settings.model_version,
                    settings.model_cache_dir,
                )
            )
            assert rt.model is not None
            log.warning("serving %s v%s from %s", rt.model.name, rt.model.version, rt.model.source)
        except ModelUnavailableError as e:
            log.error("no model to serve: %s", e)

    async def poll() -> None:
        while True:
            await asyncio.sleep(settings.reload_poll_seconds)
            try:
                await reload_if_changed()
            except Exception as e:
                log.warning("alias poll failed: %s", e)

    async def reload_if_changed() -> dict[str, Any]:
        current = rt.model
        if current is not None and current.source == "registry":
            # A poll should not download the model when the alias has not moved.
            try:
                target = await asyncio.to_thread(
                    registry_version,
                    settings.model_name,
                    settings.model_alias,
                    settings.model_version,
                )
            except Exception:  # the registry is down: the full load below falls back to the cache
                target = None
            if target == current.version:
                return {"previous_version": target, "version": target, "source": current.source}
        new = await asyncio.to_thread(
            load_serving_model,
            settings.model_name,
            settings.model_alias,
            settings.model_version,
            settings.model_cache_dir,
        )
        before = rt.model.version if rt.model else None
        if before != new.version or rt.model is None:
            rt.install(new)
        return {"previous_version": before, "version": new.version, "source": new.source}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(load)
        task = asyncio.create_task(poll()) if settings.reload_poll_seconds > 0 else None
        yield
        if task:
            task.cancel()
        rt.log.close()

    app = FastAPI(
        title="Fraud detection API",
        version="0.1.0",
        description="Scores raw card transactions with the MLflow `@champion` model, computing the "
        "customer and terminal features online with the same definitions as training.",
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry asks the global providers on every request whether
        # one is configured (about 3% of a /predict); on only when asked for.
        telemetry=None
        if settings.opentelemetry
        else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = rt

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 with field-level details; inputs that JSON cannot carry (NaN, inf) become text."""
        return JSONResponse(status_code=422, content={"detail": _json_safe(exc.errors())})

    # Pure ASGI middlewares (Starlette's @app.middleware("http") costs a task and a stream per
    # request). Added last = outermost: Metrics sees the 413s of BodyLimit too.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    @app.post(
        "/predict",
        response_model=Prediction,
        response_model_exclude_none=True,
        # The body is parsed in the endpoint (below); its schema is registered in `openapi`.
        openapi_extra=_json_body("TransactionRecord"),
        responses=_VALIDATION_ERROR,
    )
    async def predict(request: Request, explain: Annotated[bool, Query()] = False) -> Prediction:
        """Score one raw transaction."""
        tx = await _parse_body(request, TransactionRecord)
        return _json_response(  # type: ignore[return-value]
            (await score_transactions(rt, [tx], explain or settings.contributions_by_default))[0]
        )

    @app.post(
        "/predict/batch",
        response_model=BatchResponse,
        response_model_exclude_none=True,
        openapi_extra=_json_body("BatchRequest"),
        responses=_VALIDATION_ERROR,
    )
    async def predict_batch(
        request: Request, explain: Annotated[bool, Query()] = False
    ) -> BatchResponse:
        """Score up to FRAUD_MAX_BATCH transactions (default 1000), in the order given."""
        await request.body()  # the upload first (kept by the request): no pause while it comes
        with _gc_paused():
            batch = await _parse_body(request, BatchRequest)
            if len(batch.transactions) > settings.max_batch:
                raise HTTPException(
                    413,
                    detail=f"at most {settings.max_batch} transactions per batch, "
                    f"got {len(batch.transactions)}",
                )
            predictions = await score_transactions(
                rt, batch.transactions, explain or settings.contributions_by_default
            )
            return _json_response({"predictions": predictions})  # type: ignore[return-value]

    @app.post("/feedback", response_model=FeedbackResponse)
    async def feedback(fb: Feedback) -> FeedbackResponse:
        """Record a late fraud label; terminal risk uses it once older than the delay."""
        _, state = rt.require_model()
        seen = state.add_label(fb.TRANSACTION_ID, fb.is_fraud)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        known = (
            fb.known_at.astimezone(dt.UTC).replace(tzinfo=None)
            if fb.known_at and fb.known_at.tzinfo
            else (fb.known_at or now)
        )
        rt.log.log_feedback(
            [FeedbackRow(fb.TRANSACTION_ID, int(fb.is_fraud), known.isoformat(), now.isoformat())]
        )
        return FeedbackResponse(
            TRANSACTION_ID=fb.TRANSACTION_ID,
            recorded=True,
            seen_by_this_service=seen,
        )

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(response: Response) -> dict[str, Any]:
        """Readiness: a model and its feature state are loaded."""
        if rt.model is None or rt.state is None:
            response.status_code = 503
            return {"ready": False, "reason": "no model loaded"}
        return {"ready": True, "model_version": rt.model.version, "source": rt.model.source}

    @app.get("/model")
    async def model_info() -> dict[str, Any]:
        """The serving model's lineage: version, alias, run, commit, data hash, metrics, reason."""
        model, _ = rt.require_model()
        return {
            "name": model.name,
            "version": model.version,
            "alias": model.alias,
            "run_id": model.run_id,
            "source": model.source,
            "threshold": model.threshold,
            "features": model.features,
            **model.lineage,
        }

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(rt.registry), media_type=CONTENT_TYPE_LATEST)

    def require_admin(authorization: Annotated[str | None, Header()] = None) -> None:
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        if not token:
            raise HTTPException(403, detail="admin endpoints are disabled: set FRAUD_ADMIN_TOKEN")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, detail="missing or wrong bearer token")

    @app.post("/admin/reload", dependencies=[Depends(require_admin)])
    async def admin_reload() -> dict[str, Any]:
        """Reload the model from the registry alias without dropping requests."""
        try:
            return await reload_if_changed()
        except ModelUnavailableError as e:
            raise HTTPException(503, detail=str(e)) from e

    predict_route = next(r for r in app.routes if getattr(r, "path", None) == "/predict")
    app.add_middleware(FastPredict, runtime=rt, route=predict_route)
    app.add_middleware(Metrics, runtime=rt)
    fastapi_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's schema plus the request bodies that the endpoints parse themselves."""
        if app.openapi_schema is None:
            schemas = fastapi_openapi().setdefault("components", {}).setdefault("schemas", {})
            for body in (TransactionRecord, BatchRequest):
                js = body.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(js.pop("$defs", {}))
                schemas[body.__name__] = js
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
