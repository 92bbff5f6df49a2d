"""Batch scoring: score a file of raw transactions with a registered model.

The history-dependent features are computed over the file itself, with the feature definitions
the model was trained with (its `model_info/train_info.json`); where the file has TX_FRAUD,
labels older than the delay feed the terminal-risk features exactly as in training, and the
metrics are printed. Give the file enough history before the transactions you care about (the
features look back up to `lookback_days`).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fraud import registry, schema
from fraud.features import FeatureConfig, compute_features
from fraud.metrics import CostModel
from fraud.schema import ContractLimits
from pipelines.artifacts import atomic_path
from pipelines.evaluate import score_frame
from pipelines.ingest import load_transactions_file
from pipelines.params import Params
from pipelines.register import tracking_uri
from pipelines.validate import to_contract_frame

CHUNK_ROWS = 200_000


class ModelNotFoundError(ValueError):
    """No registered model matches the requested alias or version."""


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    booster: xgb.Booster
    features: list[str]
    threshold: float
    feature_config: FeatureConfig

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"


def load_registered_model(name: str, version: str | None = None) -> LoadedModel:
    """A registered version (or @champion) with its features, threshold and feature config."""
    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    try:
        mv = (
            client.get_model_version(name, version)
            if version
            else client.get_model_version_by_alias(name, registry.ALIAS_CHAMPION)
        )
    except MlflowException as e:
        what = f"version {version}" if version else f"@{registry.ALIAS_CHAMPION}"
        raise ModelNotFoundError(
            f"no {what} of model {name!r} in {mlflow.get_tracking_uri()}: run `make run` first"
        ) from e
    booster = mlflow.xgboost.load_model(f"models:/{name}/{mv.version}")
    if isinstance(booster, xgb.XGBModel):
        booster = booster.get_booster()
    booster.set_param({"nthread": 1})
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=mv.run_id, artifact_path=registry.ARTIFACT_MODEL_INFO, dst_path=tmp
        )
        info = json.loads(Path(local).read_text())
    return LoadedModel(
        name=name,
        version=str(mv.version),
        booster=booster,
        features=list(info["features"]),
        threshold=float(info["threshold"]),
        feature_config=FeatureConfig.model_validate(info.get("feature_config") or {}),
    )


@dataclass(frozen=True)
class ScoreResult:
    rows: int
    model: str
    metrics: dict[str, float] | None


def score_frame_with_model(
    df: pd.DataFrame, model: LoadedModel, progress: Progress | None = None
) -> pd.DataFrame:
    """Scores for contract-typed transactions, in their order: id, score, decision, model."""
    feats = compute_features(df, model.feature_config)
    x = feats[model.features].to_numpy(np.float32)
    scores = np.empty(len(df), dtype=np.float64)
    task = progress.add_task("scoring", total=len(df)) if progress else None
    for start in range(0, len(df), CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, len(df))
        scores[start:stop] = model.booster.inplace_predict(x[start:stop])
        if progress is not None and task is not None:
            progress.advance(task, stop - start)
    return pd.DataFrame(
        {
            schema.TRANSACTION_ID: df[schema.TRANSACTION_ID].to_numpy(),
            "score": scores,
            "is_alert": scores >= model.threshold,
            "threshold": model.threshold,
            "model_version": model.version,
        }
    )


def score_file(
    input_path: Path,
    output_path: Path,
    params: Params,
    model_version: str | None = None,
    console: Console | None = None,
) -> ScoreResult:
    """Read, validate, featurise, score and write; metrics when the file has TX_FRAUD."""
    console = console or Console()
    if output_path.suffix.lower() not in {".csv", ".parquet"}:
        raise ValueError(f"--output: {output_path} must end in .csv or .parquet")
    model = load_registered_model(params.register_.model_name, model_version)
    raw = load_transactions_file(input_path)
    v = params.validate_
    limits = ContractLimits(v.max_amount, v.min_datetime, v.max_datetime, require_labels=False)
    df = to_contract_frame(raw, limits)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        out = score_frame_with_model(df, model, progress)
    with atomic_path(output_path) as tmp:
        if output_path.suffix.lower() == ".csv":
            out.to_csv(tmp, index=False)
        else:
            out.to_parquet(tmp, index=False)
    metrics: dict[str, Any] | None = None
    if schema.TX_FRAUD in df.columns and df[schema.TX_FRAUD].nunique() == 2:
        m = score_frame(
            df,
            out["score"].to_numpy(),
            model.threshold,
            params.evaluate.top_k,
            CostModel(params.evaluate.cost.missed_fraud, params.evaluate.cost.alert),
        )
        metrics = {
            k: v
            for k, v in m.items()
            if k
            in {
                "roc_auc",
                "average_precision",
                f"card_precision_at_{params.evaluate.top_k}",
                "at_threshold.precision",
                "at_threshold.recall",
                "at_threshold.f1",
            }
        }
    return ScoreResult(rows=len(out), model=model.label, metrics=metrics)
