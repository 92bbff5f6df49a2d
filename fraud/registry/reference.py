"""The reference data published with each model version, for monitoring: writer and reader.

Monitoring compares production windows with what the model was shown to do well on. That is
the model's test window, not its training rows: its scores are out of sample, as production's
are (in-sample scores are over-confident, the more so the deeper the trees; the default model's
happen to be close: alert rate 1.06% on its training rows, 1.09% on its test week), and its
labels give the reference performance. All of the window's transactions, as production scores
them: the version's reported metrics leave out the cards already known to be compromised (the
handbook's protocol), which makes its test AP 0.732 where all rows give 0.793, so monitoring
measures the reference's performance on this frame, never from the reported metrics. Each row
is one transaction in the layout the prediction-log reader returns
(`fraud.predictions.WINDOW_COLUMNS` that a training row can have, then one float column per
model feature), so a production window and the reference are compared column by column.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fraud import schema
from fraud.registry import contract

if TYPE_CHECKING:
    from fraud.registry.reader import RegisteredVersion

#: The log columns a reference has, with their dtypes (those of `WINDOW_COLUMNS`).
REFERENCE_LOG_COLUMNS: dict[str, str] = {
    "transaction_id": "int64",
    "tx_datetime": "datetime64[ns]",
    "customer_id": "int64",
    "terminal_id": "int64",
    "amount": "float64",
    "score": "float64",
    "is_alert": "int64",
    "threshold": "float64",
    "is_fraud": "Int64",
}


def reference_frame(
    rows: pd.DataFrame, scores: np.ndarray, *, features: Sequence[str], threshold: float
) -> pd.DataFrame:
    """The reference of a model: `rows` (contract columns, TX_FRAUD and the model's features,
    one per scored transaction) with their `scores`, in the prediction-log reader's layout."""
    if len(rows) != len(scores):
        raise ValueError(f"reference: {len(rows)} rows but {len(scores)} scores")
    missing = [c for c in (*schema.RAW_COLUMNS, schema.TX_FRAUD, *features) if c not in rows]
    if missing:
        raise ValueError(f"reference: rows lack the columns {missing}")
    score = np.asarray(scores, dtype="float64")
    log = pd.DataFrame(
        {
            "transaction_id": rows[schema.TRANSACTION_ID].to_numpy(),
            "tx_datetime": pd.to_datetime(rows[schema.TX_DATETIME]).to_numpy(),
            "customer_id": rows[schema.CUSTOMER_ID].to_numpy(),
            "terminal_id": rows[schema.TERMINAL_ID].to_numpy(),
            "amount": rows[schema.TX_AMOUNT].to_numpy(),
            "score": score,
            "is_alert": (score >= threshold).astype("int64"),
            "threshold": float(threshold),
            "is_fraud": rows[schema.TX_FRAUD].to_numpy(),
        }
    ).astype(REFERENCE_LOG_COLUMNS)
    feats = rows[list(features)].astype("float64").reset_index(drop=True)
    return pd.concat([log, feats[sorted(features)]], axis=1)


def log_reference(reference: pd.DataFrame) -> None:
    """Log the reference into the active MLflow run, where `read_reference` finds it."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / contract.REFERENCE_FILE
        reference.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=contract.MONITORING_DIR)


def read_reference(
    name: str, alias: str | None = None, version: str | None = None
) -> tuple[RegisteredVersion, pd.DataFrame]:
    """A version's description and its reference frame (raises ModelNotFoundError as
    `read_version` does, and a clear error for a version published before references were)."""
    from mlflow.exceptions import MlflowException

    from fraud.registry.reader import _download_run_file, read_version

    described = read_version(name, alias, version)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = _download_run_file(described.run_id, contract.ARTIFACT_REFERENCE, Path(tmp))
        except (MlflowException, OSError) as e:
            raise FileNotFoundError(
                f"{described.label} has no {contract.ARTIFACT_REFERENCE}: it was registered "
                f"before models carried their monitoring reference; retrain it (make run)"
            ) from e
        return described, pd.read_parquet(path)
