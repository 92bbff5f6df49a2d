"""Publishing a model version by the registry contract: its model, files and tags.

The register step decides what to publish and with which alias (the gate); these functions
decide where each part goes, beside the reader that reads it back. The `log_*` functions log
into the active MLflow run; MLflow is imported inside them.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fraud.registry import contract

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import xgboost as xgb


def lineage_tags(*, git_commit: str, data_md5: str, params_sha256: str) -> dict[str, str]:
    """The tags that say what a model was trained from: on its run and on its version."""
    return {
        contract.TAG_GIT_COMMIT: git_commit,
        contract.TAG_DATA_HASH: data_md5,
        contract.TAG_PARAMS_HASH: params_sha256,
    }


def version_tags(
    *,
    git_commit: str,
    data_md5: str,
    params_sha256: str,
    train_window: str,
    test_window: str,
    threshold: float,
    features: Sequence[str],
    decision: str,
    reason: str,
    production_md5: str | None = None,
    production_window: str | None = None,
    model_sha256: str | None = None,
) -> dict[str, str]:
    """Every tag a model version carries: lineage, windows, threshold, features, gate decision,
    the SHA-256 of its native model file (`native_model_sha256`), which readers check before
    loading; and, on a version retrained with production data, that data's md5 and window."""
    optional = {
        key: value
        for key, value in (
            (contract.TAG_PRODUCTION_MD5, production_md5),
            (contract.TAG_PRODUCTION_WINDOW, production_window),
            (contract.TAG_MODEL_SHA256, model_sha256),
        )
        if value is not None
    }
    return {
        **lineage_tags(git_commit=git_commit, data_md5=data_md5, params_sha256=params_sha256),
        contract.TAG_TRAIN_WINDOW: train_window,
        contract.TAG_TEST_WINDOW: test_window,
        contract.TAG_THRESHOLD: repr(float(threshold)),
        contract.TAG_FEATURES: ",".join(features),
        contract.TAG_DECISION: decision,
        contract.TAG_REASON: reason[: contract.MAX_TAG_LENGTH],
        **optional,
    }


def native_model_sha256(booster: xgb.Booster) -> str:
    """SHA-256 (hex) of the model file `log_native_model` writes for `booster`: MLflow saves it
    with `Booster.save_model` in the native format, the same bytes as `save_raw` in it."""
    raw = booster.save_raw(raw_format=contract.NATIVE_MODEL_FORMAT)
    return hashlib.sha256(raw).hexdigest()


def log_native_model(
    booster: xgb.Booster, example: pd.DataFrame, example_scores: np.ndarray
) -> str:
    """Log the booster as the run's MLflow model in XGBoost's native UBJSON; returns its URI.

    The requirements are given, not inferred: inference names both xgboost and xgboost-cpu.
    """
    import mlflow
    import xgboost as xgb
    from mlflow.models import infer_signature

    info = mlflow.xgboost.log_model(
        booster,
        name=contract.ARTIFACT_MODEL,
        signature=infer_signature(example, example_scores),
        input_example=example,
        model_format=contract.NATIVE_MODEL_FORMAT,
        pip_requirements=[f"xgboost-cpu=={xgb.__version__}"],
    )
    return str(info.model_uri)


def log_version_files(
    *,
    train_info: Mapping[str, Any],
    feature_history: pd.DataFrame,
    evaluation_files: Iterable[Path],
) -> None:
    """Log the train info, the feature-state history and the evaluation files that exist."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        info_path = Path(tmp) / contract.TRAIN_INFO_FILE
        info_path.write_text(json.dumps(train_info, indent=2, default=str))
        mlflow.log_artifact(str(info_path), artifact_path=contract.MODEL_INFO_DIR)
        history_path = Path(tmp) / contract.FEATURE_HISTORY_FILE
        feature_history.to_parquet(history_path, index=False)
        mlflow.log_artifact(str(history_path), artifact_path=contract.FEATURE_STATE_DIR)
    for path in evaluation_files:
        if path.exists():
            mlflow.log_artifact(str(path), artifact_path=contract.EVALUATION_DIR)


def log_model_card(text: str) -> None:
    """Log the model card at the root of the run's artifacts."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        card = Path(tmp) / contract.ARTIFACT_MODEL_CARD
        card.write_text(text)
        mlflow.log_artifact(str(card))
