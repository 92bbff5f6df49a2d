"""The registry contract: what `pipelines` writes to MLflow and `serving` reads back.

Names of the registered model, its aliases, the tag keys of a model version's lineage and
promotion decision, and the artifact paths published with each model.
"""

from __future__ import annotations

DEFAULT_MODEL_NAME = "fraud-detector"
ALIAS_CHAMPION = "champion"
ALIAS_CHALLENGER = "challenger"

# Tag keys on every model version.
TAG_GIT_COMMIT = "lineage.git_commit"
TAG_DATA_HASH = "lineage.data_md5"  # md5 of data/raw/transactions.parquet, as DVC records it
TAG_PARAMS_HASH = "lineage.params_sha256"
TAG_TRAIN_WINDOW = "lineage.train_window"
TAG_TEST_WINDOW = "lineage.test_window"
TAG_DECISION = "gate.decision"  # "champion" or "challenger"
TAG_REASON = "gate.reason"
TAG_THRESHOLD = "model.threshold"
TAG_FEATURES = "model.features"  # comma-separated, in the model's column order

# Artifact paths inside the MLflow run of a model version.
ARTIFACT_MODEL = "model"  # MLflow model (xgboost flavor, native .ubj inside)
ARTIFACT_MODEL_INFO = "model_info/train_info.json"  # features, threshold, windows, params
ARTIFACT_MODEL_CARD = "model_card.md"
ARTIFACT_FEATURE_STATE = "feature_state/history.parquet"  # recent raw history seeding online state
