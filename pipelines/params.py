"""Typed view of params.yaml, validated at the edge so a bad key fails with its name."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fraud.features import FeatureConfig
from fraud.metrics import CostModel
from fraud.schema import ContractLimits
from fraud.simulator import SimulatorConfig
from pipelines.errors import ParamsError
from pipelines.splits import TimeSplit

__all__ = ["Params", "ParamsError", "load_params"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IngestParams(_Strict):
    source: Literal["simulator", "file"] = "simulator"
    path: str | None = None


_CONTRACT = ContractLimits()  # the contract's defaults, defined once in fraud/schema.py


class ValidateParams(_Strict):
    max_amount: float = Field(_CONTRACT.max_amount, gt=0)
    min_datetime: str = _CONTRACT.min_datetime
    max_datetime: str = _CONTRACT.max_datetime
    require_labels: bool = _CONTRACT.require_labels

    def limits(self) -> ContractLimits:
        return ContractLimits(
            self.max_amount, self.min_datetime, self.max_datetime, self.require_labels
        )


class SplitParams(_Strict):
    train_start: dt.date = dt.date(2018, 7, 4)
    train_days: int = Field(28, ge=1)
    delay_days: int = Field(7, ge=0)
    test_days: int = Field(7, ge=1)
    validation_days: int = Field(7, ge=1)

    def split(self) -> TimeSplit:
        return TimeSplit(self.train_start, self.train_days, self.delay_days, self.test_days)


class SearchParams(_Strict):
    enabled: bool = False
    n_iter: int = Field(12, ge=1)


class TrainParams(_Strict):
    n_estimators: int = Field(200, ge=1)
    max_depth: int = Field(3, ge=1, le=16)
    learning_rate: float = Field(0.1, gt=0, le=1)
    tree_method: Literal["exact", "hist", "approx"] = "exact"
    base_score: float | None = Field(0.5, gt=0, lt=1)
    min_child_weight: float = Field(1.0, ge=0)
    subsample: float = Field(1.0, gt=0, le=1)
    colsample_bytree: float = Field(1.0, gt=0, le=1)
    imbalance: Literal["none", "scale_pos_weight"] = "none"
    #: Features whose increase may never lower the score (XGBoost monotone constraints).
    monotone_increasing: list[str] = []
    nthread: int = Field(2, ge=1)
    seed: int = 0
    search: SearchParams = SearchParams()


class PrequentialParams(_Strict):
    n_folds: int = Field(4, ge=1)
    last_train_start: dt.date = dt.date(2018, 7, 25)
    train_days: int = Field(7, ge=1)
    delay_days: int = Field(7, ge=0)
    test_days: int = Field(7, ge=1)

    def last_split(self) -> TimeSplit:
        return TimeSplit(self.last_train_start, self.train_days, self.delay_days, self.test_days)


class CostParams(_Strict):
    missed_fraud: float = Field(100.0, ge=0)
    alert: float = Field(5.0, ge=0)

    def model(self) -> CostModel:
        return CostModel(self.missed_fraud, self.alert)


class EvaluateParams(_Strict):
    top_k: int = Field(100, ge=1)
    cost: CostParams = CostParams()
    prequential: PrequentialParams = PrequentialParams()


class GateParams(_Strict):
    metric: Literal["average_precision"] = "average_precision"
    min_improvement: float = 0.0
    confidence: float = Field(0.95, gt=0.5, lt=1)
    n_resamples: int = Field(300, ge=50)
    floors: dict[str, float] = {"average_precision": 0.5, "roc_auc": 0.8}


class RegisterParams(_Strict):
    model_name: str = "fraud-detector"
    gate: GateParams = GateParams()


_MEMORY = re.compile(r"^(auto|0|\d+(\.\d+)?\s*([kMGT]i?B|B))$")


class ComputeParams(_Strict):
    """Where the features stage and training run (pipelines/compute.py).

    `local` (the default): in this process. `dask`: on a Dask cluster, the one at Dask's own
    DASK_SCHEDULER_ADDRESS when set (deployment, not experiment: a remote cluster), else a
    LocalCluster of `n_workers` x `threads_per_worker` (`memory_limit` each) that the stage
    starts and closes. `partitions` is the number of pieces the data is cut into: row chunks,
    entity partitions of the features, the training data's partitions (the features do not
    depend on it; the Dask-trained model does, a little).
    """

    engine: Literal["local", "dask"] = "local"
    partitions: int = Field(8, ge=1)
    n_workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str = "4GiB"

    @field_validator("memory_limit")
    @classmethod
    def _dask_memory(cls, v: str) -> str:
        if not _MEMORY.match(v.strip()):
            raise ValueError(
                f"{v!r} is not a memory size: expected e.g. '4GiB', '512MiB', 'auto' or 0"
            )
        return v.strip()


class Params(_Strict):
    simulator: SimulatorConfig = SimulatorConfig()
    ingest: IngestParams = IngestParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    features: FeatureConfig = FeatureConfig()
    split: SplitParams = SplitParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    register_: RegisterParams = Field(RegisterParams(), alias="register")
    compute: ComputeParams = ComputeParams()
    #: Monitoring's own section, validated by `monitoring.config`; kept out of the params dump
    #: (and so out of a model's params hash): it does not change what is trained.
    monitor: dict[str, Any] = Field(default_factory=dict, exclude=True)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; errors name the key path (e.g. `train.max_depth`)."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError as e:
        raise ParamsError(f"{p}: not found") from e
    except yaml.YAMLError as e:
        raise ParamsError(f"{p}: not valid YAML: {e}") from e
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise ParamsError(f"{p}: {problems}") from e
