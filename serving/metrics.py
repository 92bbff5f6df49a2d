"""The service's Prometheus metrics: requests, latencies, the scores served and the model
version (`ServiceMetrics`), and the pure-ASGI middleware that counts every request
(`RequestMetrics`)."""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from itertools import accumulate
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString
from starlette.types import ASGIApp, Message, Receive, Scope, Send


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
        """Count every score of one request."""
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
        """The histogram as Prometheus collects it (cumulative buckets)."""
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


class ServiceMetrics:
    """The service's Prometheus registry and what it holds (one per app, not the global one)."""

    def __init__(self) -> None:
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
        # The decisions, by the version that made them: the alert rate per model (a canary's
        # @challenger beside the stable @champion) is alerts / predictions, exactly, whatever
        # each version's threshold; the score histogram's buckets could only approximate it.
        self.predictions = Counter(
            "fraud_api_predictions",
            "transactions scored",
            ["model_version"],
            registry=self.registry,
        )
        self.alerts = Counter(
            "fraud_api_alerts",
            "transactions scored at or above the model's threshold (alerts raised)",
            ["model_version"],
            registry=self.registry,
        )
        self.model_version = Gauge(
            "fraud_api_model_version",
            "serving model version (1 = serving)",
            ["name", "version", "source"],
            registry=self.registry,
        )

    def count_decisions(self, version: str, scored: int, alerts: int) -> None:
        """Count a batch of decisions made by model `version`."""
        self.predictions.labels(version).inc(scored)
        if alerts:
            self.alerts.labels(version).inc(alerts)

    def exposition(self) -> bytes:
        """Every metric in Prometheus's text format (`prometheus_client.CONTENT_TYPE_LATEST`)."""
        return generate_latest(self.registry)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """Prometheus request counts and latencies by route template, method and status."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics
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
                counter = self._counters[key] = self.metrics.requests.labels(
                    endpoint, method, str(status)
                )
            counter.inc()
            latency = self._latencies.get(endpoint)
            if latency is None:
                latency = self._latencies[endpoint] = self.metrics.latency.labels(endpoint)
            latency.observe(time.perf_counter() - start)
