"""Batch scoring: score a file of raw transactions with a registered model.

Every input is checked before the registry is touched: the output's suffix, the input's
existence, format and data contract. The history-dependent features are computed over the file
itself, with the feature definitions the model was trained with (its `model_info/train_info.json`);
where the file has TX_FRAUD, labels older than the delay feed the terminal-risk features exactly
as in training. The metrics cover only the transactions with the full history the features look
back over (`features.lookback_days`) before them in the file: the earlier ones are scored on
partial history, as no model in production would be, and would bias the figures.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fraud import registry, schema
from fraud.features import compute_features
from fraud.validation import ContractViolationError, to_contract_frame
from pipelines.artifacts import atomic_path
from pipelines.errors import IngestError
from pipelines.evaluate import score_frame
from pipelines.ingest import load_transactions_file
from pipelines.params import Params
from pipelines.register import tracking_uri

CHUNK_ROWS = 200_000
OUTPUT_SUFFIXES = (".csv", ".parquet")


@dataclass(frozen=True)
class ScoreResult:
    """What `score_file` did: how many rows, with which model, and the metrics where it can."""

    rows: int
    model: str
    #: Metrics over the rows with full feature history; None without labels or without such rows.
    metrics: dict[str, float] | None
    #: Which rows the metrics cover, or why there are none; None when the file has no labels.
    metrics_scope: str | None = None
    #: What the user should know about the scores (a file with too little history).
    warnings: tuple[str, ...] = ()


def read_scoring_input(input_path: Path, output_path: Path, params: Params) -> pd.DataFrame:
    """Check both paths and the input's contract; the transactions in the contract's dtypes.

    Errors name the flag (`--input`, `--output`). TX_FRAUD is optional (scoring needs no labels).
    """
    if output_path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise IngestError(f"--output: {output_path} must end in .csv or .parquet")
    if not input_path.exists():
        raise IngestError(f"--input: {input_path} does not exist")
    raw = load_transactions_file(input_path, setting="--input")
    if raw.empty:
        raise IngestError(f"--input: {input_path} has no transactions")
    limits = dataclasses.replace(params.validate_.limits(), require_labels=False)
    try:
        return to_contract_frame(raw, limits)
    except ContractViolationError as e:
        raise IngestError(f"--input: {input_path}: {e}") from e


def full_history_start(df: pd.DataFrame, lookback_days: int) -> pd.Timestamp:
    """The first moment whose transactions have `lookback_days` of the file's history behind them."""
    return df[schema.TX_DATETIME].min() + pd.Timedelta(days=lookback_days)


def history_warnings(df: pd.DataFrame, lookback_days: int) -> tuple[str, ...]:
    """A warning when the file spans less history than the features look back over."""
    first, last = df[schema.TX_DATETIME].min(), df[schema.TX_DATETIME].max()
    span_days = (last - first) / pd.Timedelta(days=1)
    if span_days >= lookback_days:
        return ()
    return (
        f"--input covers {span_days:.1f} days ({first} .. {last}), less than the "
        f"{lookback_days} days of history the model's features look back over "
        "(features.lookback_days): every score lacks part of its history. Include "
        f"{lookback_days} days before the transactions you care about.",
    )


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


def full_history_metrics(
    df: pd.DataFrame, scores: np.ndarray, threshold: float, lookback_days: int, params: Params
) -> tuple[dict[str, float] | None, str]:
    """Metrics over the labelled rows with full feature history, and which rows those are.

    Without such rows, or without both classes among them, no metrics: the text says why.
    """
    since = full_history_start(df, lookback_days)
    full = (df[schema.TX_DATETIME] >= since).to_numpy()
    n = int(full.sum())
    if n == 0:
        return None, (
            f"no metrics: no transaction in --input has the {lookback_days} days of history "
            f"the features need before it (the first would be at {since})"
        )
    rows = df[full].reset_index(drop=True)
    frauds = int(rows[schema.TX_FRAUD].sum())
    scope = (
        f"the {n:,} transactions from {since} on ({frauds:,} frauds), the first with "
        f"{lookback_days} days of history before them; the {len(df) - n:,} earlier ones are "
        "scored but left out"
    )
    if frauds in (0, n):
        kind = "no fraud" if frauds == 0 else "only frauds"
        return None, f"no metrics: {scope}, and they hold {kind}"
    top_k = params.evaluate.top_k
    m = score_frame(rows, scores[full], threshold, top_k, params.evaluate.cost.model())
    keys = (
        "roc_auc",
        "average_precision",
        f"card_precision_at_{top_k}",
        "at_threshold.precision",
        "at_threshold.recall",
        "at_threshold.f1",
    )
    return {k: m[k] for k in keys}, f"metrics over {scope}"


def score_file(
    input_path: Path,
    output_path: Path,
    params: Params,
    model_version: str | None = None,
    console: Console | None = None,
) -> ScoreResult:
    """Check, featurise, score and write; metrics when the file has TX_FRAUD."""
    console = console or Console()
    df = read_scoring_input(input_path, output_path, params)
    mlflow.set_tracking_uri(tracking_uri())
    model, booster = registry.load_version(params.register_.model_name, version=model_version)
    lookback_days = model.feature_config.lookback_days
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
    metrics, scope = None, None
    if schema.TX_FRAUD in df.columns:
        metrics, scope = full_history_metrics(
            df, out["score"].to_numpy(), model.threshold, lookback_days, params
        )
    return ScoreResult(
        rows=len(out),
        model=model.label,
        metrics=metrics,
        metrics_scope=scope,
        warnings=history_warnings(df, lookback_days),
    )
