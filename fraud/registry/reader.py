"""Reading a registered model version: its metadata, train info and lineage, and its files.

The one reader of the registry contract, for the pipeline's gate and batch scoring, the API's
model store and monitoring. A version is asked for by alias (default `@champion`) or by number;
a number wins when both are given. MLflow's tracking URI is its own (`mlflow.set_tracking_uri`,
else `MLFLOW_TRACKING_URI`), and MLflow is imported inside the functions that call it so the
domain core imports without it. Only XGBoost's native format is loaded, never a pickle, and a
version's model file is checked against the SHA-256 recorded at registration before it is
loaded (`contract.TAG_MODEL_SHA256`; a version registered before that tag existed is loaded with
a warning).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fraud.features import FeatureConfig
from fraud.registry import contract

if TYPE_CHECKING:
    import xgboost as xgb
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger("fraud.registry")

#: MLflow's error codes for an unknown model, version or alias (an unknown alias is
#: INVALID_PARAMETER_VALUE); any other error, such as an unreachable server, propagates.
_NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


class ModelNotFoundError(ValueError):
    """No registered version of the model matches the requested alias or version."""


class ModelIntegrityError(ValueError):
    """A model file that is not the one registered (its SHA-256 differs from the recorded one)
    or not in XGBoost's native format: refused before anything parses it."""


@dataclass(frozen=True)
class VersionLineage:
    """Where a version comes from and why it holds its alias: its tags and its run's metrics.

    A field is None when the version does not carry that tag.
    """

    git_commit: str | None = None
    data_md5: str | None = None
    params_sha256: str | None = None
    train_window: str | None = None
    test_window: str | None = None
    decision: str | None = None
    reason: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_tags(cls, tags: Mapping[str, str], run_metrics: Mapping[str, float]) -> VersionLineage:
        """From a version's tags and its run's metrics, keeping the test window's metrics only
        (the prequential ones are logged as `prequential.<name>`)."""
        return cls(
            git_commit=tags.get(contract.TAG_GIT_COMMIT),
            data_md5=tags.get(contract.TAG_DATA_HASH),
            params_sha256=tags.get(contract.TAG_PARAMS_HASH),
            train_window=tags.get(contract.TAG_TRAIN_WINDOW),
            test_window=tags.get(contract.TAG_TEST_WINDOW),
            decision=tags.get(contract.TAG_DECISION),
            reason=tags.get(contract.TAG_REASON),
            metrics={k: float(v) for k, v in run_metrics.items() if "." not in k},
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the keys the API's `GET /model` shows (the reason as
        `promotion_reason`)."""
        return {
            "git_commit": self.git_commit,
            "data_md5": self.data_md5,
            "params_sha256": self.params_sha256,
            "train_window": self.train_window,
            "test_window": self.test_window,
            "decision": self.decision,
            "promotion_reason": self.reason,
            "metrics": dict(self.metrics),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VersionLineage:
        """The inverse of `as_dict`; a missing key is an unknown value."""
        return cls(
            git_commit=d.get("git_commit"),
            data_md5=d.get("data_md5"),
            params_sha256=d.get("params_sha256"),
            train_window=d.get("train_window"),
            test_window=d.get("test_window"),
            decision=d.get("decision"),
            reason=d.get("promotion_reason"),
            metrics=dict(d.get("metrics") or {}),
        )


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version as the registry describes it: what a consumer needs besides the model."""

    name: str
    version: str
    alias: str | None  # None when asked for by version
    run_id: str
    features: list[str]  # the model's column order
    threshold: float
    feature_config: FeatureConfig
    train_info: dict[str, Any]  # the parsed train_info.json
    lineage: VersionLineage
    #: SHA-256 of the native model file recorded at registration; None on a version registered
    #: before the tag existed.
    model_sha256: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    @classmethod
    def from_train_info(
        cls,
        *,
        name: str,
        version: str,
        alias: str | None,
        run_id: str,
        train_info: dict[str, Any],
        lineage: VersionLineage,
        model_sha256: str | None = None,
    ) -> RegisteredVersion:
        """Features, threshold and feature config taken from the version's train info."""
        return cls(
            name=name,
            version=str(version),
            alias=alias,
            run_id=run_id,
            features=list(train_info["features"]),
            threshold=float(train_info["threshold"]),
            feature_config=FeatureConfig.model_validate(train_info.get("feature_config") or {}),
            train_info=train_info,
            lineage=lineage,
            model_sha256=model_sha256,
        )


def resolve_version(name: str, alias: str | None = None, version: str | None = None) -> str:
    """The version number `alias` (or `version`) points at now: one registry call, no download."""
    from mlflow import MlflowClient

    return str(_model_version(MlflowClient(), name, alias, version).version)


def read_version(
    name: str, alias: str | None = None, version: str | None = None
) -> RegisteredVersion:
    """A version's metadata, lineage and train info (downloads train_info.json only)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    mv = _model_version(client, name, alias, version)
    with tempfile.TemporaryDirectory() as tmp:
        info_path = _download_run_file(str(mv.run_id), contract.ARTIFACT_MODEL_INFO, Path(tmp))
        train_info = json.loads(info_path.read_text())
    return _describe(client, mv, name, alias, version, train_info)


def download_version(
    name: str, alias: str | None = None, version: str | None = None, *, dest: Path
) -> RegisteredVersion:
    """Download into `dest` every file a consumer of the version needs, and describe it.

    `dest` then holds `contract.NATIVE_MODEL_FILE` (the UBJSON found inside the MLflow model
    directory), `contract.TRAIN_INFO_FILE` and `contract.FEATURE_HISTORY_FILE`, replacing files
    of those names; nothing else is left there. Raises ModelIntegrityError, leaving `dest` as it
    was, when the model file's SHA-256 is not the one recorded at registration.
    """
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    mv = _model_version(client, name, alias, version)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=dest) as tmp:
        model_dir = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{mv.version}", dst_path=str(Path(tmp) / "model")
            )
        )
        native = next(model_dir.rglob(contract.NATIVE_MODEL_FILE), None)
        if native is None:
            raise ValueError(
                f"{name} v{mv.version} has no {contract.NATIVE_MODEL_FILE} (XGBoost's native "
                f"format) in its MLflow model: only native models are loaded, never pickles"
            )
        verify_model_file(
            native, (mv.tags or {}).get(contract.TAG_MODEL_SHA256), f"{name} v{mv.version}"
        )
        shutil.move(native, dest / contract.NATIVE_MODEL_FILE)
        for artifact, file_name in (
            (contract.ARTIFACT_MODEL_INFO, contract.TRAIN_INFO_FILE),
            (contract.ARTIFACT_FEATURE_STATE, contract.FEATURE_HISTORY_FILE),
        ):
            shutil.move(_download_run_file(str(mv.run_id), artifact, Path(tmp)), dest / file_name)
    train_info = json.loads((dest / contract.TRAIN_INFO_FILE).read_text())
    return _describe(client, mv, name, alias, version, train_info)


def load_version(
    name: str, alias: str | None = None, version: str | None = None
) -> tuple[RegisteredVersion, xgb.Booster]:
    """A version's description and its booster, for scoring in this process."""
    with tempfile.TemporaryDirectory() as tmp:
        registered = download_version(name, alias, version, dest=Path(tmp))
        return registered, load_booster(Path(tmp) / contract.NATIVE_MODEL_FILE)


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_model_file(path: Path, expected_sha256: str | None, label: str) -> str:
    """Check a model file against the SHA-256 recorded for it; returns the file's SHA-256.

    Raises ModelIntegrityError naming `label` (the version), the expected and the actual hash.
    Without a recorded hash (a version registered before `contract.TAG_MODEL_SHA256` existed)
    the file is allowed, with a warning: refusing would stop every existing registry's service.
    """
    actual = file_sha256(path)
    if expected_sha256 is None:
        log.warning(
            "%s has no recorded SHA-256 (tag %s; registered before model hashes were recorded): "
            "loading %s unverified (SHA-256 %s)",
            label,
            contract.TAG_MODEL_SHA256,
            path.name,
            actual,
        )
    elif actual != expected_sha256.strip().lower():
        raise ModelIntegrityError(
            f"{label}: model file {path.name} has SHA-256 {actual}, but {expected_sha256} was "
            f"recorded at registration (tag {contract.TAG_MODEL_SHA256}): refusing to load a "
            "model file that is not the registered one (tampered or corrupted)"
        )
    return actual


def check_native_format(path: Path) -> None:
    """Refuse (ModelIntegrityError) a model file that is not XGBoost's native JSON or UBJSON.

    Both begin with `{`; a pickle begins with 0x80, and is never handed to anything that could
    unpickle it. The suffix must be one of `contract.NATIVE_MODEL_SUFFIXES` too, because XGBoost
    picks the parser from it.
    """
    if path.suffix not in contract.NATIVE_MODEL_SUFFIXES:
        raise ModelIntegrityError(
            f"{path}: not an XGBoost native model file: the name must end in "
            f"{' or '.join(contract.NATIVE_MODEL_SUFFIXES)}, got {path.suffix or 'no suffix'!r}"
        )
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    if not head.startswith(b"{"):
        kind = " (a Python pickle?)" if head[:1] == b"\x80" else ""
        raise ModelIntegrityError(
            f"{path}: not an XGBoost native model (JSON or UBJSON, which begin with '{{'): it "
            f"begins with bytes {head[:8].hex(' ') or 'nothing (empty file)'}{kind}; only "
            "native models are loaded, never pickles"
        )


def load_booster(path: Path, expected_sha256: str | None = None, label: str = "") -> xgb.Booster:
    """An XGBoost model in its native format (JSON or UBJSON), set to score on one thread.

    Refused with ModelIntegrityError, before XGBoost parses it, when the file is not in the
    native format, or when `expected_sha256` is given and the file's SHA-256 differs (`label`
    names the model in the message). One thread per process: with other work on the other
    core, more threads busy-wait and make single-row predictions many times slower.
    """
    import xgboost as xgb

    check_native_format(path)
    if expected_sha256 is not None:
        verify_model_file(path, expected_sha256, label or str(path))

    booster = xgb.Booster()
    booster.load_model(str(path))
    booster.set_param({"nthread": 1})
    return booster


def _model_version(
    client: MlflowClient, name: str, alias: str | None, version: str | None
) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        if version:
            return client.get_model_version(name, version)
        return client.get_model_version_by_alias(name, alias or contract.ALIAS_CHAMPION)
    except MlflowException as e:
        # MLflow's basic-auth app answers PERMISSION_DENIED, not not-found, for a model that does
        # not exist yet (the first registration on a fresh authenticated server): not-found
        # when the model is not there, a real refusal otherwise.
        missing = e.error_code in _NOT_FOUND_CODES or (
            e.error_code == "PERMISSION_DENIED" and not _model_exists(client, name)
        )
        if not missing:
            raise
        import mlflow

        what = f"version {version}" if version else f"@{alias or contract.ALIAS_CHAMPION}"
        raise ModelNotFoundError(
            f"no {what} of model {name!r} in {mlflow.get_tracking_uri()}: "
            "`make run` trains and registers one"
        ) from e


def _model_exists(client: MlflowClient, name: str) -> bool:
    """Whether the registry has a model `name` that this user can see."""
    escaped = name.replace("'", "\\'")
    return bool(client.search_registered_models(filter_string=f"name = '{escaped}'"))


def _download_run_file(run_id: str, artifact_path: str, dst: Path) -> Path:
    import mlflow

    return Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=str(dst)
        )
    )


def _describe(
    client: MlflowClient,
    mv: ModelVersion,
    name: str,
    alias: str | None,
    version: str | None,
    train_info: dict[str, Any],
) -> RegisteredVersion:
    run = client.get_run(str(mv.run_id))
    return RegisteredVersion.from_train_info(
        name=name,
        version=str(mv.version),
        alias=None if version else (alias or contract.ALIAS_CHAMPION),
        run_id=str(mv.run_id),
        train_info=train_info,
        lineage=VersionLineage.from_tags(dict(mv.tags or {}), run.data.metrics),
        model_sha256=(mv.tags or {}).get(contract.TAG_MODEL_SHA256),
    )
