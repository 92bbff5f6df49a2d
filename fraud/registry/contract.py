"""The registry contract: the names, tags and artifact paths `pipelines` writes to MLflow and
every reader (`serving`, batch scoring, monitoring) reads back.

Artifact paths are given as a directory and a file name, because MLflow logs a local file into
a directory of the run (`log_artifact(local, artifact_path=directory)`); the full path is
derived from both, so each path is written once.
"""

from __future__ import annotations

DEFAULT_MODEL_NAME = "fraud-detector"
ALIAS_CHAMPION = "champion"
ALIAS_CHALLENGER = "challenger"
#: The champion that the current one replaced, set by the gate when it promotes and by `fraud
#: promote`: where `fraud rollback` puts @champion back.
ALIAS_PREVIOUS = "previous"

# Tag keys on every model version.
TAG_GIT_COMMIT = "lineage.git_commit"
TAG_DATA_HASH = "lineage.data_md5"  # md5 of data/raw/transactions.parquet, as DVC records it
TAG_PARAMS_HASH = "lineage.params_sha256"
TAG_TRAIN_WINDOW = "lineage.train_window"
TAG_TEST_WINDOW = "lineage.test_window"
#: On a version retrained with production data only: the md5 of the production file as DVC
#: versions it (`dvc add data/production/<file>`), and the production window it holds.
TAG_PRODUCTION_MD5 = "lineage.production_md5"
TAG_PRODUCTION_WINDOW = "lineage.production_window"
TAG_DECISION = "gate.decision"  # "champion" or "challenger"
#: On a version made @champion (by the gate or by hand): the version it replaced, so that
#: successive rollbacks walk back through the champions.
TAG_REPLACED = "promotion.replaced_version"
TAG_REASON = "gate.reason"
TAG_THRESHOLD = "model.threshold"
TAG_FEATURES = "model.features"  # comma-separated, in the model's column order
#: SHA-256 (hex) of the native model file's bytes as registered: readers refuse a downloaded or
#: cached model file whose bytes differ (tampered or corrupted) before loading it.
TAG_MODEL_SHA256 = "model.sha256"
#: Longest tag value written: MLflow rejects longer model-version tags and descriptions.
MAX_TAG_LENGTH = 4000

# Artifacts inside the MLflow run of a model version.
ARTIFACT_MODEL = "model"  # MLflow model (xgboost flavor)
NATIVE_MODEL_FORMAT = "ubj"  # XGBoost's native UBJSON, never a pickle
NATIVE_MODEL_FILE = f"model.{NATIVE_MODEL_FORMAT}"  # its name inside the MLflow model directory
#: The only model files a reader loads: XGBoost's native UBJSON and JSON.
NATIVE_MODEL_SUFFIXES = (".ubj", ".json")

MODEL_INFO_DIR = "model_info"
TRAIN_INFO_FILE = "train_info.json"  # features, threshold, feature config, windows, params
ARTIFACT_MODEL_INFO = f"{MODEL_INFO_DIR}/{TRAIN_INFO_FILE}"

FEATURE_STATE_DIR = "feature_state"
FEATURE_HISTORY_FILE = "history.parquet"  # recent raw history seeding the online state
ARTIFACT_FEATURE_STATE = f"{FEATURE_STATE_DIR}/{FEATURE_HISTORY_FILE}"

EVALUATION_DIR = "evaluation"  # metrics and pictures of the test window

MONITORING_DIR = "monitoring"
#: The data monitoring compares production with: the test window's rows, with the model's
#: out-of-sample scores and the labels, in the prediction-log reader's layout
#: (`fraud.registry.reference`).
REFERENCE_FILE = "reference.parquet"
ARTIFACT_REFERENCE = f"{MONITORING_DIR}/{REFERENCE_FILE}"
ARTIFACT_MODEL_CARD = "model_card.md"  # at the root of the run's artifacts
