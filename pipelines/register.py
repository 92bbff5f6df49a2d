"""Register step: log the run to MLflow, register the model, and gate its promotion.

The gate: the new version becomes `@champion` only if it passes every absolute floor of
`register.gate.floors` and, when a champion exists, beats it on the same test rows: the lower
bound of the paired-bootstrap confidence interval of AP(new) - AP(champion) must exceed
`register.gate.min_improvement`. Otherwise it becomes `@challenger`. The decision, its reason and
the figures of both models are tagged on the version, written to the model card and printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from fraud import registry, schema
from fraud.features import FeatureConfig
from fraud.metrics import BootstrapComparison, paired_bootstrap_ap
from pipelines.params import GateParams

EXPERIMENT_NAME = "fraud-detection"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


# ------------------------------------------------------------------------------------------
# Lineage


@dataclass(frozen=True)
class Lineage:
    git_commit: str
    data_md5: str
    params_sha256: str


def file_md5(path: str | Path) -> str:
    """md5 of a file's bytes: what DVC 3 records for a single-file output in dvc.lock."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit(cwd: str | Path = ".") -> str:
    """HEAD's commit, with `-dirty` when tracked files changed; `unknown` outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def params_sha256(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


# ------------------------------------------------------------------------------------------
# The gate (pure: no MLflow)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    floors_failed: list[str] = field(default_factory=list)
    comparison: dict[str, float] | None = None

    @property
    def alias(self) -> str:
        return registry.ALIAS_CHAMPION if self.promote else registry.ALIAS_CHALLENGER


def promotion_decision(
    metrics: dict[str, float],
    gate: GateParams,
    comparison: BootstrapComparison | None,
    champion_version: str | None = None,
) -> Decision:
    """Decide champion or challenger from the candidate's metrics and the paired comparison."""
    failed = [
        f"{name} {metrics.get(name, float('nan')):.4f} < floor {floor:.4f}"
        for name, floor in gate.floors.items()
        if not (metrics.get(name, float("nan")) >= floor)
    ]
    if failed:
        return Decision(
            False,
            "fails absolute floors: " + "; ".join(failed),
            failed,
            comparison.as_dict() if comparison else None,
        )
    if comparison is None:
        return Decision(
            True, f"no current champion; passes every floor (AP {metrics['average_precision']:.4f})"
        )
    c = comparison
    figures = (
        f"AP {c.candidate_ap:.4f} vs champion v{champion_version} {c.reference_ap:.4f}, "
        f"difference {c.mean_difference:+.4f}, {c.confidence:.0%} CI "
        f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}] over {c.n_resamples} paired resamples"
    )
    if c.ci_low > gate.min_improvement:
        return Decision(True, f"beats the champion: {figures}", [], c.as_dict())
    return Decision(
        False,
        f"does not beat the champion by more than {gate.min_improvement:+.4f} with "
        f"{c.confidence:.0%} confidence: {figures}",
        [],
        c.as_dict(),
    )


# ------------------------------------------------------------------------------------------
# MLflow


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def ensure_experiment(name: str = EXPERIMENT_NAME) -> str:
    """The experiment's id; a local store puts its artifacts in ./mlartifacts."""
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    uri = mlflow.get_tracking_uri()
    location = None
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        location = Path("mlartifacts").resolve().as_uri()
    return str(mlflow.create_experiment(name, artifact_location=location))


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


def load_champion(model_name: str) -> LoadedModel | None:
    """The current `@champion`, or None when there is none."""
    try:
        return load_registered_model(model_name)
    except ModelNotFoundError:
        return None


@dataclass
class RegistrationResult:
    model_name: str
    version: str
    alias: str
    run_id: str
    decision: str
    reason: str
    tracking_uri: str
    lineage: dict[str, str]
    comparison: dict[str, float] | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def register_model(
    *,
    booster: xgb.Booster,
    train_info: dict[str, Any],
    metrics: dict[str, Any],
    prequential: dict[str, Any] | None,
    test_features: pd.DataFrame,
    params: dict[str, Any],
    gate: GateParams,
    model_name: str,
    lineage: Lineage,
    artifacts: dict[str, Path],
    feature_history: pd.DataFrame,
    model_card: Any,
) -> RegistrationResult:
    """Log, register and gate one model. `model_card(decision, version) -> str` renders the card."""
    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    experiment_id = ensure_experiment()
    features: list[str] = train_info["features"]
    y = test_features[schema.TX_FRAUD].to_numpy()
    candidate_scores = np.asarray(
        booster.inplace_predict(test_features[features].to_numpy(np.float32))
    )

    champion = load_champion(model_name)
    comparison = None
    champion_version = None
    # A champion whose features this data lacks cannot be compared: the floors alone decide.
    if champion is not None and set(champion.features) <= set(test_features.columns):
        champion_version = champion.version
        champ_scores = np.asarray(
            champion.booster.inplace_predict(test_features[champion.features].to_numpy(np.float32))
        )
        comparison = paired_bootstrap_ap(
            y, candidate_scores, champ_scores, gate.n_resamples, gate.confidence, seed=0
        )
    scalar_metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    decision = promotion_decision(scalar_metrics, gate, comparison, champion_version)

    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"train-{lineage.git_commit[:8]}"
    ) as run:
        flat = {k: v for k, v in _flatten(params).items()}
        mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})
        mlflow.log_metrics(
            {k.replace("@", "_at_"): v for k, v in scalar_metrics.items() if np.isfinite(v)}
        )
        if prequential:
            mlflow.log_metrics({f"prequential.{k}": v for k, v in prequential["summary"].items()})
        mlflow.set_tags(
            {
                registry.TAG_GIT_COMMIT: lineage.git_commit,
                registry.TAG_DATA_HASH: lineage.data_md5,
                registry.TAG_PARAMS_HASH: lineage.params_sha256,
            }
        )
        example = test_features[features].head(5).astype("float32")
        signature = infer_signature(example, candidate_scores[:5])
        info = mlflow.xgboost.log_model(
            booster,
            name=registry.ARTIFACT_MODEL,
            signature=signature,
            input_example=example,
            model_format="ubj",
            pip_requirements=[f"xgboost-cpu=={xgb.__version__}"],
        )
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            (t / "train_info.json").write_text(json.dumps(train_info, indent=2, default=str))
            mlflow.log_artifact(str(t / "train_info.json"), artifact_path="model_info")
            history_path = t / "history.parquet"
            feature_history.to_parquet(history_path, index=False)
            mlflow.log_artifact(str(history_path), artifact_path="feature_state")
        for path in artifacts.values():
            if Path(path).exists():
                mlflow.log_artifact(str(path), artifact_path="evaluation")

        tags = {
            registry.TAG_GIT_COMMIT: lineage.git_commit,
            registry.TAG_DATA_HASH: lineage.data_md5,
            registry.TAG_PARAMS_HASH: lineage.params_sha256,
            registry.TAG_TRAIN_WINDOW: train_info["train_window"]["train"],
            registry.TAG_TEST_WINDOW: metrics["window"]["test"],
            registry.TAG_THRESHOLD: repr(float(train_info["threshold"])),
            registry.TAG_FEATURES: ",".join(features),
            registry.TAG_DECISION: decision.alias,
            registry.TAG_REASON: decision.reason[:4000],
        }
        mv = mlflow.register_model(info.model_uri, model_name, tags=tags)
        version = str(mv.version)
        client.update_model_version(model_name, version, description=decision.reason[:4000])
        client.set_registered_model_alias(model_name, decision.alias, version)
        with tempfile.TemporaryDirectory() as tmp:
            card = Path(tmp) / registry.ARTIFACT_MODEL_CARD
            card.write_text(model_card(decision, version))
            mlflow.log_artifact(str(card))
        mlflow.set_tag(registry.TAG_DECISION, decision.alias)
        run_id = run.info.run_id

    return RegistrationResult(
        model_name=model_name,
        version=version,
        alias=decision.alias,
        run_id=run_id,
        decision=decision.alias,
        reason=decision.reason,
        tracking_uri=mlflow.get_tracking_uri(),
        lineage=asdict(lineage),
        comparison=decision.comparison,
    )
