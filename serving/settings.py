"""Runtime settings of the API, from environment variables (prefix `FRAUD_`), with embedded
defaults so that `make serve` works with nothing set."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fraud import registry
from fraud.predictions import DEFAULT_PREDICTION_LOG


class ServingSettings(BaseSettings):
    """Every knob of the service; `FRAUD_<NAME>` sets it (e.g. `FRAUD_MODEL_ALIAS=challenger`).

    The MLflow store is MLflow's own `MLFLOW_TRACKING_URI` (default: ./mlflow.db).
    """

    model_config = SettingsConfigDict(env_prefix="FRAUD_", extra="ignore")

    model_name: str = registry.DEFAULT_MODEL_NAME
    model_alias: str = registry.ALIAS_CHAMPION
    #: Serve this registry version instead of the alias.
    model_version: str | None = None
    #: Where the last loaded model is cached, for start-up when the registry is unreachable.
    model_cache_dir: Path = Path(".cache/serving/model")
    #: Append-only prediction log: a SQLite file path (WAL mode, the embedded default) or a
    #: PostgreSQL URL (`postgresql://user@host:5432/db`) for several replicas.
    prediction_log: str = DEFAULT_PREDICTION_LOG
    #: Online feature state: `memory` (in the process, the embedded default; one worker) or a
    #: Redis URL (`redis://host:6379/0`) shared by every worker and replica.
    feature_store: str = "memory"
    #: Key prefix of the feature state in Redis (one per deployment sharing a Redis).
    redis_prefix: str = "fraud"
    #: Largest number of transactions in one /predict/batch call.
    max_batch: int = Field(1000, ge=1, le=100_000)
    #: Largest request body, bytes.
    max_body_bytes: int = Field(1_000_000, ge=1024)
    #: Token for /admin endpoints; without one they refuse every call.
    admin_token: SecretStr | None = None
    #: Seconds between polls of the registry alias (0: no background poll).
    reload_poll_seconds: float = Field(0.0, ge=0)
    #: Return per-feature contributions on every /predict (else only with ?explain=true).
    contributions_by_default: bool = False
    #: Number of top feature contributions returned.
    top_contributions: int = Field(5, ge=1, le=50)
    #: FastAPI's native OpenTelemetry (traces, metrics, logs to the globally configured
    #: providers, e.g. by `opentelemetry-instrument`); off: Prometheus /metrics only.
    opentelemetry: bool = False
    #: Address the server listens on (`python -m serving --host`).
    host: str = "127.0.0.1"
    #: Port (`--port`).
    port: int = Field(8000, ge=1, le=65_535)
    #: uvicorn worker processes (`--workers`); more than one needs a shared feature store.
    workers: int = Field(1, ge=1)
    #: uvicorn's log level (`--log-level`).
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "warning"

    @field_validator("prediction_log", mode="before")
    @classmethod
    def _path_as_text(cls, v: object) -> object:
        return str(v) if isinstance(v, Path) else v

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case(cls, v: object) -> object:
        return v.lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _workers_share_the_feature_store(self) -> Self:
        if self.workers > 1 and self.feature_store == "memory":
            raise ValueError(
                f"{self.workers} workers need a shared feature store: with "
                "FRAUD_FEATURE_STORE=memory each worker would see only part of every "
                "customer's history. Set FRAUD_FEATURE_STORE=redis://host:6379/0, or run one "
                "worker (FRAUD_WORKERS=1)."
            )
        return self
