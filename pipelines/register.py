"""Register step: log the run to MLflow, register the model, and gate its promotion.

The gate: the new version becomes `@champion` only if it passes every absolute floor of
`register.gate.floors` and, when a champion exists, beats it on the same test rows: the lower
bound of the paired-bootstrap confidence interval of AP(new) - AP(champion) must exceed
`register.gate.min_improvement`. Otherwise it becomes `@challenger`. A floor the champion itself
misses on the same rows, where the new version does at least as well, does not hold the new
version back: after a regime change (the drift demo's concept drift: fewer compromised cards a
day cap card precision@100 below its floor), a floor that no model can pass would keep the
drifted champion serving forever; the reason names every floor waived so. The decision, its reason and
the figures of both models are tagged on the version, written to the model card and printed.

A registration killed after its model version exists but before its alias moves (SIGKILL, a
lost machine) leaves that version without an alias and its MLflow run RUNNING: the gate and
the API never see it (they read aliases), and the rerun registers a version of its own. So that
nobody takes the orphan for a decided model, the next registration on the same host tags it
`registration.interrupted` and ends its run as KILLED (`mark_interrupted_registrations`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import socket
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow import MlflowClient

from fraud import registry, schema
from fraud.metrics import (
    BootstrapComparison,
    average_precision,
    card_precision_at_k,
    paired_bootstrap_ap,
    roc_auc,
)
from fraud.registry.contract import TAG_PRODUCTION_MD5, TAG_PRODUCTION_WINDOW
from pipelines.params import GateParams

EXPERIMENT_NAME = "fraud-detection"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: Run tag: the registering process, `<host>:<pid>`, so that a later registration can tell an
#: interrupted registration (its process gone) from one still under way.
TAG_REGISTRATION_WRITER = "registration.writer"
#: Version tag on a version whose registration was killed before its alias was set.
TAG_INTERRUPTED = "registration.interrupted"

log = logging.getLogger("pipelines")


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


def run_name(lineage: Lineage, started: dt.datetime) -> str:
    """The MLflow run's name: the commit, data and params it trained from, and when (UTC).

    Runs of one commit (a `dvc exp run`, the Prefect flow, another data revision) differ by the
    data or params hash, and by the time when they trained the same thing again.
    """
    commit = lineage.git_commit
    short_commit = commit[:8] + ("-dirty" if commit.endswith("-dirty") else "")
    return (
        f"train-{short_commit}-data-{lineage.data_md5[:8]}-params-{lineage.params_sha256[:8]}"
        f"-{started.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"
    )


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


def waivable_floors(
    failed: list[str],
    gate: GateParams,
    candidate_on_rows: dict[str, float],
    champion_on_rows: dict[str, float],
) -> dict[str, str]:
    """The failed floors (by name) that the champion misses too on the same rows while the
    candidate does at least as well there, each with a sentence saying so."""
    waived = {}
    for name in failed:
        floor, cand, champ = (
            gate.floors[name],
            candidate_on_rows.get(name),
            champion_on_rows.get(name),
        )
        if cand is None or champ is None or not (champ < floor and cand >= champ):
            continue
        waived[name] = (
            f"{name} floor {floor:.4f} waived: the champion is below it too on the same rows "
            f"({champ:.4f}; this model {cand:.4f})"
        )
    return waived


def promotion_decision(
    metrics: dict[str, float],
    gate: GateParams,
    comparison: BootstrapComparison | None,
    champion_version: str | None = None,
    *,
    candidate_on_rows: dict[str, float] | None = None,
    champion_on_rows: dict[str, float] | None = None,
) -> Decision:
    """Decide champion or challenger from the candidate's metrics and the paired comparison.

    `candidate_on_rows` / `champion_on_rows`: the floors' metrics of both models on the
    comparison's rows; a floor both miss there, the candidate no worse, is waived (see the
    module docstring). Without a champion every floor holds."""
    missed = [
        name
        for name, floor in gate.floors.items()
        if not (metrics.get(name, float("nan")) >= floor)
    ]
    waived = {}
    if comparison is not None and candidate_on_rows and champion_on_rows:
        waived = waivable_floors(missed, gate, candidate_on_rows, champion_on_rows)
    failed = [
        f"{name} {metrics.get(name, float('nan')):.4f} < floor {gate.floors[name]:.4f}"
        for name in missed
        if name not in waived
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
    if waived:
        figures += "; " + "; ".join(waived.values())
    if c.ci_low > gate.min_improvement:
        return Decision(True, f"beats the champion: {figures}", [], c.as_dict())
    return Decision(
        False,
        f"does not beat the champion by more than {gate.min_improvement:+.4f} with "
        f"{c.confidence:.0%} confidence: {figures}",
        [],
        c.as_dict(),
    )


def floor_metrics(
    frame: pd.DataFrame, scores: np.ndarray, floors: dict[str, float]
) -> dict[str, float]:
    """The floors' metrics that can be computed from scores alone (`average_precision`,
    `roc_auc`, `card_precision_at_<k>`) on `frame`'s labelled rows; others are left out."""
    y = frame[schema.TX_FRAUD].to_numpy()
    out = {}
    for name in floors:
        if name == "average_precision":
            out[name] = average_precision(y, scores)
        elif name == "roc_auc":
            out[name] = roc_auc(y, scores)
        elif name.startswith("card_precision_at_") and name.rsplit("_", 1)[1].isdigit():
            out[name] = card_precision_at_k(frame, scores, int(name.rsplit("_", 1)[1]))
    return out


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


def _writer() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _writer_gone(writer: str) -> bool:
    """Whether the process `<host>:<pid>` is known to be gone (only this host's can be)."""
    host, _, pid = writer.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def mark_interrupted_registrations(client: MlflowClient, model_name: str) -> list[str]:
    """Tag the versions of `model_name` whose registration was killed before their alias was
    set, and end their runs as KILLED; returns their numbers.

    Such a version holds no alias, its run is still RUNNING and the process that registered it
    (the run's `registration.writer`) is gone from this host. A registration under way, one on
    another host, or one from before the writer tag, is left alone.
    """
    try:
        aliased = set(client.get_registered_model(model_name).aliases.values())
    except mlflow.exceptions.MlflowException:  # no such model yet
        return []
    marked = []
    for mv in client.search_model_versions(f"name='{model_name}'"):
        if str(mv.version) in aliased or TAG_INTERRUPTED in mv.tags or not mv.run_id:
            continue
        run = client.get_run(mv.run_id)
        writer = run.data.tags.get(TAG_REGISTRATION_WRITER)
        if run.info.status != "RUNNING" or writer is None or not _writer_gone(writer):
            continue
        client.set_model_version_tag(
            model_name,
            mv.version,
            TAG_INTERRUPTED,
            f"the registration ({writer}) was killed before the alias "
            f"{mv.tags.get(registry.TAG_DECISION)!r} "
            "was set: never gated into use; a later registration superseded it",
        )
        client.set_terminated(mv.run_id, "KILLED")
        marked.append(str(mv.version))
    if marked:
        log.warning("%s: interrupted registrations marked: v%s", model_name, ", v".join(marked))
    return marked


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
    reference: pd.DataFrame,
    model_card: Any,
    production_md5: str | None = None,
    production_window: str | None = None,
) -> RegistrationResult:
    """Log, register and gate one model. `model_card(decision, version) -> str` renders the card;
    `reference` (`fraud.registry.reference_frame`) is published for monitoring. A model retrained
    with production data names that data (`production_md5`, `production_window`) in its tags."""
    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    experiment_id = ensure_experiment()
    mark_interrupted_registrations(client, model_name)
    features: list[str] = train_info["features"]
    y = test_features[schema.TX_FRAUD].to_numpy()
    candidate_scores = np.asarray(
        booster.inplace_predict(test_features[features].to_numpy(np.float32))
    )

    try:
        champion, champion_booster = registry.load_version(model_name, registry.ALIAS_CHAMPION)
    except registry.ModelNotFoundError:  # the first model: the floors alone decide
        champion = None
    comparison = None
    champion_version = None
    candidate_on_rows: dict[str, float] = {}
    champion_on_rows: dict[str, float] = {}
    # A champion whose features this data lacks cannot be compared: the floors alone decide.
    if champion is not None and set(champion.features) <= set(test_features.columns):
        champion_version = champion.version
        champ_scores = np.asarray(
            champion_booster.inplace_predict(test_features[champion.features].to_numpy(np.float32))
        )
        comparison = paired_bootstrap_ap(
            y, candidate_scores, champ_scores, gate.n_resamples, gate.confidence, seed=0
        )
        candidate_on_rows = floor_metrics(test_features, candidate_scores, gate.floors)
        champion_on_rows = floor_metrics(test_features, champ_scores, gate.floors)
    scalar_metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    decision = promotion_decision(
        scalar_metrics,
        gate,
        comparison,
        champion_version,
        candidate_on_rows=candidate_on_rows,
        champion_on_rows=champion_on_rows,
    )

    with mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name(lineage, dt.datetime.now(dt.UTC))
    ) as run:
        mlflow.set_tag(TAG_REGISTRATION_WRITER, _writer())
        flat = {k: v for k, v in _flatten(params).items()}
        mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})
        mlflow.log_metrics(
            {k.replace("@", "_at_"): v for k, v in scalar_metrics.items() if np.isfinite(v)}
        )
        if prequential:
            mlflow.log_metrics({f"prequential.{k}": v for k, v in prequential["summary"].items()})
        mlflow.set_tags(
            registry.lineage_tags(
                git_commit=lineage.git_commit,
                data_md5=lineage.data_md5,
                params_sha256=lineage.params_sha256,
            )
        )
        model_uri = registry.log_native_model(
            booster,
            example=test_features[features].head(5).astype("float32"),
            example_scores=candidate_scores[:5],
        )
        registry.log_version_files(
            train_info=train_info,
            feature_history=feature_history,
            evaluation_files=[Path(p) for p in artifacts.values()],
        )
        registry.log_reference(reference)
        tags = registry.version_tags(
            git_commit=lineage.git_commit,
            data_md5=lineage.data_md5,
            params_sha256=lineage.params_sha256,
            train_window=train_info["train_window"]["train"],
            test_window=metrics["window"]["test"],
            threshold=float(train_info["threshold"]),
            features=features,
            decision=decision.alias,
            reason=decision.reason,
            production_md5=production_md5,
            production_window=production_window,
            model_sha256=registry.native_model_sha256(booster),
        )
        production_tags = {
            k: v for k, v in tags.items() if k in (TAG_PRODUCTION_MD5, TAG_PRODUCTION_WINDOW)
        }
        if production_tags:
            mlflow.set_tags(production_tags)
        mv = mlflow.register_model(model_uri, model_name, tags=tags)
        version = str(mv.version)
        client.update_model_version(
            model_name, version, description=decision.reason[: registry.MAX_TAG_LENGTH]
        )
        if decision.promote and champion_version is not None:
            # The replaced champion stays reachable: `fraud rollback` puts it back. Set before
            # @champion moves, so that a champion never exists without its way back.
            client.set_model_version_tag(
                model_name, version, registry.TAG_REPLACED, str(champion_version)
            )
            client.set_registered_model_alias(
                model_name, registry.ALIAS_PREVIOUS, str(champion_version)
            )
        client.set_registered_model_alias(model_name, decision.alias, version)
        registry.log_model_card(model_card(decision, version))
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
