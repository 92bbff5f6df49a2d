"""Load the serving model from the MLflow registry, with a local cache as fallback.

Only XGBoost's native format is loaded (the `model.ubj` inside the MLflow model directory),
never a pickle. Everything the service needs travels with the model version (the registry
contract in `fraud/registry.py`): features, threshold, feature config, and the feature-state
history that seeds the online windows.
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


class ModelUnavailableError(RuntimeError):
    """Neither the registry nor the local cache has a model to serve."""


@dataclass
class ServingModel:
    name: str
    version: str
    alias: str | None
    run_id: str
    booster: xgb.Booster
    features: list[str]
    threshold: float
    feature_config: FeatureConfig
    history: pd.DataFrame
    lineage: dict[str, Any] = field(default_factory=dict)
    source: str = "registry"  # or "cache"
    predictor: Predictor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.predictor = Predictor(self.booster, len(self.features))


def _load_dir(d: Path, meta: dict[str, Any], source: str) -> ServingModel:
    booster = xgb.Booster()
    booster.load_model(str(d / "model.ubj"))
    booster.set_param({"nthread": 1})  # one thread per worker: no busy-waiting on the other core
    info = json.loads((d / "train_info.json").read_text())
    history = pd.read_parquet(d / "history.parquet")
    return ServingModel(
        name=meta["name"],
        version=str(meta["version"]),
        alias=meta.get("alias"),
        run_id=meta["run_id"],
        booster=booster,
        features=list(info["features"]),
        threshold=float(info["threshold"]),
        feature_config=FeatureConfig.model_validate(info.get("feature_config") or {}),
        history=history,
        lineage=meta.get("lineage", {}),
        source=source,
    )


def _model_version(client: Any, name: str, alias: str | None, version: str | None) -> Any:
    if version:
        return client.get_model_version(name, version)
    return client.get_model_version_by_alias(name, alias or registry.ALIAS_CHAMPION)


def registry_version(name: str, alias: str | None, version: str | None) -> str:
    """The version the alias (or `version`) points at now: one registry call, no download."""
    from mlflow import MlflowClient

    return str(_model_version(MlflowClient(), name, alias, version).version)


def fetch_from_registry(
    name: str, alias: str | None, version: str | None, cache_dir: Path
) -> ServingModel:
    """Download a model version into the cache (atomically) and load it."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    mv = _model_version(client, name, alias, version)
    run = client.get_run(str(mv.run_id))
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".model-", dir=cache_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it 0700: a container's non-root user must read it
    try:
        model_dir = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{mv.version}", dst_path=str(staging / "mlflow")
            )
        )
        ubj = next(model_dir.rglob("model.ubj"))
        shutil.copy2(ubj, staging / "model.ubj")
        for artifact, target in (
            (registry.ARTIFACT_MODEL_INFO, "train_info.json"),
            (registry.ARTIFACT_FEATURE_STATE, "history.parquet"),
        ):
            local = mlflow.artifacts.download_artifacts(
                run_id=mv.run_id, artifact_path=artifact, dst_path=str(staging / "a")
            )
            shutil.copy2(local, staging / target)
        shutil.rmtree(staging / "mlflow", ignore_errors=True)
        shutil.rmtree(staging / "a", ignore_errors=True)
        tags = dict(mv.tags or {})
        meta = {
            "name": name,
            "version": str(mv.version),
            "alias": None if version else (alias or registry.ALIAS_CHAMPION),
            "run_id": mv.run_id,
            "lineage": {
                "git_commit": tags.get(registry.TAG_GIT_COMMIT),
                "data_md5": tags.get(registry.TAG_DATA_HASH),
                "params_sha256": tags.get(registry.TAG_PARAMS_HASH),
                "train_window": tags.get(registry.TAG_TRAIN_WINDOW),
                "test_window": tags.get(registry.TAG_TEST_WINDOW),
                "decision": tags.get(registry.TAG_DECISION),
                "promotion_reason": tags.get(registry.TAG_REASON),
                "metrics": {k: v for k, v in run.data.metrics.items() if "." not in k},
            },
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=2))
        model = _load_dir(staging, meta, "registry")
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
    meta_path = cache_dir / "meta.json"
    if not meta_path.exists():
        raise ModelUnavailableError(f"no cached model in {cache_dir}")
    return _load_dir(cache_dir, json.loads(meta_path.read_text()), "cache")


def load_serving_model(
    name: str, alias: str | None, version: str | None, cache_dir: Path
) -> ServingModel:
    """From the registry; if it is unreachable or has no such model, from the local cache."""
    try:
        return fetch_from_registry(name, alias, version, cache_dir)
    except Exception as e:
        log.warning("registry unavailable (%s: %s); trying the local cache", type(e).__name__, e)
        try:
            return load_from_cache(cache_dir)
        except (ModelUnavailableError, OSError, ValueError) as cache_error:
            raise ModelUnavailableError(
                f"no model: registry failed ({type(e).__name__}: {e}); cache: {cache_error}"
            ) from e
