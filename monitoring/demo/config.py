"""The drift demo's settings (`python -m monitoring.demo run --help` lists them)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fraud.regimes import PRESETS


class DemoConfig(BaseModel):
    """What the demo simulates and where it runs. Defaults: the concept-drift preset three days
    into six weeks of production, on params.yaml's population."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The project's params.yaml: its simulator, features, split, train and monitor sections.
    params: Path = Path("params.yaml")
    #: The sandbox directory (replaced at each run; it must be a demo's or not exist).
    workdir: Path = Path("runs/drift-demo")
    #: A drift preset of fraud.regimes (`none` runs the loop without drift).
    regime: str = "concept"
    #: Days of production before the regime changes (0: from the first day).
    onset_day: int = Field(3, ge=0)
    #: Days of production, each sent through the API and monitored.
    days: int = Field(42, ge=1, le=366)
    #: A fraud's label is sent back through /feedback between these many days after the
    #: transaction (uniformly); at most the features' label delay less the traffic's one-hour
    #: slot, so that the online terminal-risk features know it when the offline ones do.
    label_delay_min_days: float = Field(1.0, ge=0)
    label_delay_max_days: float = Field(6.9, gt=0)
    #: Transactions per /predict/batch call (at most the API's FRAUD_MAX_BATCH, 1000).
    batch_size: int = Field(1000, ge=1, le=1000)
    #: Seed of the production's random streams (another seed, another production).
    seed: int = 0
    #: The API's alias poll (FRAUD_RELOAD_POLL_SECONDS): how soon it serves a new champion.
    reload_poll_seconds: float = Field(2.0, gt=0)
    #: How long a retraining flow run may take before the demo gives up on it.
    retrain_timeout_seconds: float = Field(1800, gt=0)
    #: Ports of the API and the Prefect server (None: a free port).
    api_port: int | None = Field(None, ge=1, le=65_535)
    prefect_port: int | None = Field(None, ge=1, le=65_535)
    #: Keep Prefect's own log lines of every flow run on the console (else warnings only).
    verbose: bool = False

    @field_validator("regime")
    @classmethod
    def _known_regime(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(f"unknown regime {v!r}; the presets are {sorted(PRESETS)}")
        return v

    @model_validator(mode="after")
    def _delays_in_order(self) -> DemoConfig:
        if self.label_delay_min_days > self.label_delay_max_days:
            raise ValueError(
                f"label_delay_min_days ({self.label_delay_min_days:g}) is above "
                f"label_delay_max_days ({self.label_delay_max_days:g})"
            )
        if self.onset_day >= self.days:
            raise ValueError(
                f"onset_day ({self.onset_day}) must fall within the {self.days} days of production"
            )
        return self
