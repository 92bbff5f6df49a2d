"""The monitoring job's settings: params.yaml's `monitor:` section, validated here.

The pipeline reads the rest of params.yaml; `monitor:` is monitoring's own (the pipeline keeps
it out of the params hash of its models). Every key is optional; a wrong key or value is an
error that names it (`monitor.drift.amount.threshold: ...`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fraud.registry import ALIAS_CHAMPION, DEFAULT_MODEL_NAME
from monitoring.drift import DriftConfig
from monitoring.estimate import EstimateConfig
from monitoring.performance import PerformanceConfig
from monitoring.policy import RetrainPolicy


class MonitorConfigError(ValueError):
    """params.yaml's `monitor:` section is not valid; the message names the key."""


class MonitorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_name: str = DEFAULT_MODEL_NAME
    #: The version monitored: the alias the API serves.
    model_alias: str = ALIAS_CHAMPION
    #: Days of transactions a run checks for drift (by transaction time).
    window_days: int = Field(1, ge=1)
    #: Where verdicts, HTML reports and the policy's state are written.
    reports_dir: Path = Path("reports/monitoring")
    #: The Evidently workspace the dashboards read.
    workspace: Path = Path("reports/monitoring/workspace")
    #: The dashboard's project, and how many of the model's most important features it plots.
    project: str = "fraud-detector monitoring"
    top_features: int = Field(5, ge=1, le=23)
    drift: DriftConfig = DriftConfig()
    performance: PerformanceConfig = PerformanceConfig()
    estimate: EstimateConfig = EstimateConfig()
    retrain: RetrainPolicy = RetrainPolicy()


def load_monitor_config(path: str | Path = "params.yaml") -> MonitorConfig:
    """params.yaml's `monitor:` section (defaults when the file or the section is absent)."""
    p = Path(path)
    raw: Any = {}
    if p.exists():
        try:
            raw = (yaml.safe_load(p.read_text()) or {}).get("monitor") or {}
        except yaml.YAMLError as e:
            raise MonitorConfigError(f"{p}: not valid YAML: {e}") from e
    try:
        return MonitorConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"monitor.{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise MonitorConfigError(f"{p}: {problems}") from e
