"""What a running service holds and how it changes: the serving model and its online feature
state, the prediction log and the metrics (`Runtime`); loading the model at start-up, reloading
it when the registry alias moves; and the garbage collector's freeze and pause."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
from fastapi import HTTPException

from fraud import registry
from fraud.features import FeatureConfig, FeatureStore, OnlineFeatureState
from fraud.predictions import PredictionLogWriter
from serving.degradation import BackendUnavailableError, RegistryUnavailableError
from serving.metrics import ServiceMetrics
from serving.model_store import ModelUnavailableError, ServingModel, load_serving_model
from serving.settings import ServingSettings

log = logging.getLogger("serving")

#: Opens the configured feature state for a model's feature definitions, seeded with its history.
FeatureStoreOpener = Callable[[ServingSettings, FeatureConfig, pd.DataFrame], FeatureStore]


def open_feature_store(
    settings: ServingSettings, cfg: FeatureConfig, history: pd.DataFrame
) -> FeatureStore:
    """The configured feature state, seeded with the model's history (Redis: once per store)."""
    if settings.feature_store == "memory":
        state = OnlineFeatureState(cfg)
        state.seed(history)
        return state
    from serving.feature_store import RedisFeatureStore

    redis_state = RedisFeatureStore(settings.feature_store, cfg, prefix=settings.redis_prefix)
    redis_state.seed(history)
    return redis_state


class Runtime:
    """What the service holds: the model, the online feature state, the log, the metrics."""

    def __init__(
        self,
        settings: ServingSettings,
        prediction_log: PredictionLogWriter,
        feature_store: FeatureStoreOpener = open_feature_store,
    ) -> None:
        self.settings = settings
        self.model: ServingModel | None = None
        self.state: FeatureStore | None = None
        self.log = prediction_log
        self.metrics = ServiceMetrics()
        self._open_feature_store = feature_store
        #: Why the last write to the prediction log failed; None once a write succeeds.
        self.log_failure: str | None = None

    def install(self, model: ServingModel) -> None:
        """Swap in a model; keep the live feature state when the feature definitions match."""
        if (
            self.state is None
            or self.model is None
            or self.model.feature_config != model.feature_config
        ):
            old_state = self.state
            self.state = self._open_feature_store(
                self.settings, model.feature_config, model.history
            )
            if old_state is not None:
                old_state.close()
        old = self.model
        self.model = model
        if old is not None:
            self.metrics.model_version.remove(old.name, old.version, old.source)
        self.metrics.model_version.labels(model.name, model.version, model.source).set(1)
        # The model, its history and a fresh in-process feature state are hundreds of
        # thousands of long-lived objects: left to the cyclic GC, every full collection
        # walks them all (measured: 230-270 ms, a pause in whichever request triggers it).
        # Frozen, a full collection only walks what requests allocate (about 20 ms).
        gc.collect()
        gc.freeze()

    def require_model(self) -> tuple[ServingModel, FeatureStore]:
        """The model and its feature state; 503 while there is none."""
        if self.model is None or self.state is None:
            raise HTTPException(
                503, detail="no model loaded: register one (make run) or check the registry"
            )
        return self.model, self.state

    def load(self) -> None:
        """Install the configured model at start-up; without one, log why and serve 503s."""
        s = self.settings
        try:
            self.install(
                load_serving_model(s.model_name, s.model_alias, s.model_version, s.model_cache_dir)
            )
            assert self.model is not None
            log.warning(
                "serving %s v%s from %s", self.model.name, self.model.version, self.model.source
            )
        except ModelUnavailableError as e:
            log.error("no model to serve: %s", e)

    async def reload_if_changed(self) -> dict[str, Any]:
        """Load the alias's version and install it if it is not the one serving; the previous
        and the new version and where it came from. Raises ModelUnavailableError."""
        s = self.settings
        current = self.model
        if current is not None and current.source == "registry":
            # A poll should not download the model when the alias has not moved.
            try:
                target = await asyncio.to_thread(
                    registry.resolve_version, s.model_name, s.model_alias, s.model_version
                )
            except Exception as e:
                # The registry is down: the cache holds the model already serving, so falling
                # back to it would only hide the failure. Keep serving; the caller retries.
                raise RegistryUnavailableError(
                    f"the model registry ({_registry_uri()}) is unavailable, so the model was "
                    f"not reloaded; still serving {current.name} v{current.version}: "
                    f"{type(e).__name__}: {_first_line(e)}"
                ) from e
            if target == current.version:
                return {"previous_version": target, "version": target, "source": current.source}
        new = await asyncio.to_thread(
            load_serving_model, s.model_name, s.model_alias, s.model_version, s.model_cache_dir
        )
        before = self.model.version if self.model else None
        if before != new.version or self.model is None:
            self.install(new)
        return {"previous_version": before, "version": new.version, "source": new.source}

    async def not_ready_because(self) -> list[str]:
        """Why the service should take no traffic now (empty: ready): no model, the shared
        feature state unreachable (asked on every call), or the prediction log's last write
        failed and a probe write still fails (so /ready turns true again once it recovers,
        without waiting for traffic)."""
        if self.model is None or self.state is None:
            return ["no model loaded"]
        reasons = []
        check = getattr(self.state, "acheck", None)  # the Redis store; in-process: none
        if check is not None:
            try:
                await check()
            except BackendUnavailableError as e:
                reasons.append(str(e))
        if self.log_failure is not None:
            probe = getattr(self.log, "probe", None)
            try:
                if probe is None:
                    raise RuntimeError(self.log_failure)
                await asyncio.to_thread(probe)
                self.log_failure = None
            except Exception as e:
                reasons.append(f"the prediction log cannot be written: {_first_line(e)}")
        return reasons

    async def poll_alias(self) -> None:
        """Reload whenever the alias moves, every `reload_poll_seconds`, until cancelled."""
        while True:
            await asyncio.sleep(self.settings.reload_poll_seconds)
            try:
                await self.reload_if_changed()
            except Exception as e:
                log.warning("alias poll failed: %s", e)


def _registry_uri() -> str:
    """The registry's URI, without a password (what a reload's error names)."""
    from fraud.predictions import redact_url

    return redact_url(os.environ.get("MLFLOW_TRACKING_URI", "the default store"))


def _first_line(e: BaseException) -> str:
    """The first line of an error's message (MLflow's and psycopg's run to several)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class GCPause:
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


#: The process's one pause (the collector is process-wide): `with gc_paused(): ...`.
gc_paused = GCPause()
