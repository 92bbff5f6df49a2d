"""Batch scoring: score a file of raw transactions with a registered model.

The history-dependent features are computed over the file itself, with the feature definitions
the model was trained with (its `model_info/train_info.json`); where the file has TX_FRAUD,
labels older than the delay feed the terminal-risk features exactly as in training, and the
metrics are printed. Give the file enough history before the transactions you care about (the
features look back up to `lookback_days`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fraud import registry, schema
from fraud.features import compute_features
from fraud.metrics import CostModel
from fraud.schema import ContractLimits
from pipelines.artifacts import atomic_path
from pipelines.evaluate import score_frame
from pipelines.ingest import load_transactions_file
from pipelines.params import Params
from pipelines.register import tracking_uri
from pipelines.validate import to_contract_frame

CHUNK_ROWS = 200_000


@dataclass(frozen=True)
class ScoreResult:
    rows: int
    model: str
    metrics: dict[str, float] | None


def score_frame_with_model(
    df: pd.DataFrame,
    model: registry.RegisteredVersion,
    booster: xgb.Booster,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Scores for contract-typed transactions, in their order: id, score, decision, model."""
    feats = compute_features(df, model.feature_config)
    x = feats[model.features].to_numpy(np.float32)
    scores = np.empty(len(df), dtype=np.float64)
    task = progress.add_task("scoring", total=len(df)) if progress else None
    for start in range(0, len(df), CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, len(df))
        scores[start:stop] = booster.inplace_predict(x[start:stop])
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
    mlflow.set_tracking_uri(tracking_uri())
    model, booster = registry.load_version(params.register_.model_name, version=model_version)
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
        out = score_frame_with_model(df, model, booster, progress)
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
