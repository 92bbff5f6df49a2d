"""The serving model: a registered version downloaded into a local cache, the cache as fallback.

The registry is read through `fraud.registry`, the one reader of the registry contract: only
XGBoost's native format is loaded, never a pickle, and everything the service needs travels
with the version (features, threshold, feature config, and the feature-state history that seeds
the online windows). The cache directory holds the files `fraud.registry.download_version`
writes plus `meta.json` (name, version, alias, run, lineage and the model file's SHA-256), so
the service can start from it when the registry is down. The registry's model file is checked
against the hash recorded at registration, the cache's against the one in `meta.json`: a
tampered file is refused, never loaded.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import xgboost as xgb

from fraud import registry
from fraud.features import FeatureConfig
from serving.predictor import Predictor

log = logging.getLogger("serving.model")

#: The cache's description of the version, beside the files of the registry contract.
META_FILE = "meta.json"


class ModelUnavailableError(RuntimeError):
    """Neither the registry nor the local cache has a model to serve."""


@dataclass
class ServingModel:
    """A registered version loaded for scoring, with the history that seeds its feature state."""

    registered: registry.RegisteredVersion
    booster: xgb.Booster
    history: pd.DataFrame
    source: str = "registry"  # or "cache"
    predictor: Predictor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.predictor = Predictor(self.booster, len(self.features))

    @property
    def name(self) -> str:
        return self.registered.name

    @property
    def version(self) -> str:
        return self.registered.version

    @property
    def alias(self) -> str | None:
        return self.registered.alias

    @property
    def run_id(self) -> str:
        return self.registered.run_id

    @property
    def features(self) -> list[str]:
        return self.registered.features

    @property
    def threshold(self) -> float:
        return self.registered.threshold

    @property
    def feature_config(self) -> FeatureConfig:
        return self.registered.feature_config

    @property
    def lineage(self) -> dict[str, Any]:
        """The lineage keys `GET /model` shows."""
        return self.registered.lineage.as_dict()


def fetch_from_registry(
    name: str, alias: str | None, version: str | None, cache_dir: Path
) -> ServingModel:
    """Download a model version into the cache (atomically: a reader sees the old cache or the
    new one, never a mix) and load it."""
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".model-", dir=cache_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it 0700: a container's non-root user must read it
    try:
        registered = registry.download_version(name, alias, version, dest=staging)
        meta = {
            "name": registered.name,
            "version": registered.version,
            "alias": registered.alias,
            "run_id": registered.run_id,
            "lineage": registered.lineage.as_dict(),
            # Verified against the registered hash by download_version, or, on a version
            # registered without one, the hash as downloaded: the cache is checked either way.
            "model_sha256": registry.file_sha256(staging / registry.NATIVE_MODEL_FILE),
        }
        (staging / META_FILE).write_text(json.dumps(meta, indent=2))
        model = _load_files(staging, registered, "registry")
        old = cache_dir.with_name(cache_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if cache_dir.exists():
            cache_dir.rename(old)
        staging.rename(cache_dir)
        shutil.rmtree(old, ignore_errors=True)
        return model
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_from_cache(cache_dir: Path) -> ServingModel:
    """The version last fetched into `cache_dir`, without the registry; a model file whose
    SHA-256 is not the one `meta.json` recorded is refused (ModelIntegrityError)."""
    meta_path = cache_dir / META_FILE
    if not meta_path.exists():
        raise ModelUnavailableError(f"no cached model in {cache_dir}")
    meta = json.loads(meta_path.read_text())
    registered = registry.RegisteredVersion.from_train_info(
        name=meta["name"],
        version=str(meta["version"]),
        alias=meta.get("alias"),
        run_id=meta["run_id"],
        train_info=json.loads((cache_dir / registry.TRAIN_INFO_FILE).read_text()),
        lineage=registry.VersionLineage.from_dict(meta.get("lineage") or {}),
        model_sha256=meta.get("model_sha256"),
    )
    registry.verify_model_file(
        cache_dir / registry.NATIVE_MODEL_FILE,
        registered.model_sha256,
        f"cached {registered.label} in {cache_dir}",
    )
    return _load_files(cache_dir, registered, "cache")


def load_serving_model(
    name: str, alias: str | None, version: str | None, cache_dir: Path
) -> ServingModel:
    """From the registry; if it is unreachable or has no such model, from the local cache."""
    try:
        return fetch_from_registry(name, alias, version, cache_dir)
    except registry.ModelIntegrityError as e:
        log.error("refused the registry's model (%s); trying the local cache", e)
        error: Exception = e
    except Exception as e:
        log.warning("registry unavailable (%s: %s); trying the local cache", type(e).__name__, e)
        error = e
    try:
        return load_from_cache(cache_dir)
    except (ModelUnavailableError, OSError, ValueError) as cache_error:
        raise ModelUnavailableError(
            f"no model: registry failed ({type(error).__name__}: {error}); cache: {cache_error}"
        ) from error


def _load_files(d: Path, registered: registry.RegisteredVersion, source: str) -> ServingModel:
    return ServingModel(
        registered=registered,
        booster=registry.load_booster(d / registry.NATIVE_MODEL_FILE),
        history=pd.read_parquet(d / registry.FEATURE_HISTORY_FILE),
        source=source,
    )
