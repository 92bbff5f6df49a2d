"""The pipeline's stages: each reads its inputs from the project layout, calls the step
functions, and writes its outputs atomically. `dvc.yaml` runs them through the CLI; the Prefect
flow runs the very same functions as tasks. No logic of its own lives in either orchestrator.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fraud import schema
from pipelines import artifacts
from pipelines.layout import Layout
from pipelines.params import Params

# Each stage imports its own steps, so `fraud ingest` loads neither XGBoost nor MLflow and the
# code a stage runs (its dvc.yaml deps) is only what that stage needs.
if TYPE_CHECKING:
    from fraud.validation import ValidationReport
    from pipelines.ingest import IngestResult
    from pipelines.register import Decision, RegistrationResult

log = logging.getLogger("pipelines")


def stage_ingest(params: Params, layout: Layout) -> IngestResult:
    from pipelines.ingest import ingest

    return ingest(
        params.ingest.source,
        params.simulator,
        params.ingest.path,
        layout.raw,
        params.validate_.limits(),
    )


def stage_validate(
    params: Params, layout: Layout, raw: pd.DataFrame | None = None
) -> ValidationReport:
    """Check the raw data; raises ContractViolationError (the report is written either way,
    beside the previous one, as `validation.failed.json`)."""
    from fraud.validation import ContractViolationError, validate_transactions

    frame = raw if raw is not None else pd.read_parquet(layout.raw)
    report = validate_transactions(frame, params.validate_.limits())
    if not report.ok:
        artifacts.write_json(report.as_dict(), layout.failed_validation_report)
        raise ContractViolationError(report)
    artifacts.write_json(report.as_dict(), layout.validation_report)
    layout.failed_validation_report.unlink(missing_ok=True)
    return report


def stage_features(params: Params, layout: Layout, raw_path: Path | None = None) -> list[str]:
    """The features stage, in this process or on Dask (`compute.engine`), with the same values."""
    # Both engines' modules are imported whatever the engine (Dask itself only when used), so
    # that the stage's traced code deps in dvc.yaml hold the Dask path too.
    from pipelines.build_features import build_features, build_features_on_dask
    from pipelines.compute import dask_client

    raw = raw_path or layout.raw
    if params.compute.engine == "dask":
        with dask_client(params.compute) as client:
            res = build_features_on_dask(
                client,
                # Absolute: the workers do not share this process's working directory.
                Path(raw).resolve(),
                params.features,
                params.validate_.limits(),
                layout.features,
                params.compute.partitions,
            )
        return res.features

    res = build_features(raw, params.features, params.validate_.limits(), layout.features)
    return res.features


def stage_train(params: Params, layout: Layout) -> dict[str, Any]:
    """The train stage, in this process or with xgboost.dask (`compute.engine`): the same model
    format, threshold rule and info file."""
    # As in stage_features: the Dask path's modules are code deps of the stage either way.
    from pipelines.compute import dask_client
    from pipelines.train import save_model, train_model
    from pipelines.train_dask import train_model_on_dask

    if params.compute.engine == "dask":
        with dask_client(params.compute) as client:
            booster, result = train_model_on_dask(
                client,
                layout.features.resolve(),
                params.features.feature_names(),
                params.split.split(),
                params.split.validation_days,
                params.train,
                params.evaluate.cost.model(),
                params.compute.partitions,
            )
        result.feature_config = params.features.model_dump(mode="json")
        save_model(booster, result, layout.model, layout.train_info)
        return result.as_dict()

    frame = pd.read_parquet(layout.features)
    booster, result = train_model(
        frame,
        params.features.feature_names(),
        params.split.split(),
        params.split.validation_days,
        params.train,
        params.evaluate.cost.model(),
    )
    result.feature_config = params.features.model_dump(mode="json")
    save_model(booster, result, layout.model, layout.train_info)
    return result.as_dict()


def stage_evaluate(params: Params, layout: Layout) -> dict[str, Any]:
    from fraud.registry import load_booster
    from pipelines.evaluate import evaluate_model, write_plots, write_test_scores

    frame = pd.read_parquet(layout.features)
    info = artifacts.read_json(layout.train_info)
    booster = load_booster(layout.model)
    result = evaluate_model(
        booster,
        frame,
        info["features"],
        params.split.split(),
        info["threshold"],
        params.evaluate.top_k,
        params.evaluate.cost.model(),
    )
    write_plots(result, booster, layout.plots, info["threshold"])
    write_test_scores(result, layout.test_scores)
    metrics = {**result.metrics, "threshold": info["threshold"]}
    artifacts.write_json(metrics, layout.metrics)
    return metrics


def stage_prequential(params: Params, layout: Layout) -> dict[str, Any]:
    from pipelines.evaluate import prequential_evaluation

    frame = pd.read_parquet(layout.features)
    pq = params.evaluate.prequential
    out = prequential_evaluation(
        frame,
        params.features.feature_names(),
        pq.last_split(),
        pq.n_folds,
        params.train,
        params.evaluate.top_k,
    )
    artifacts.write_json(out, layout.prequential)
    return out


def feature_history(frame: pd.DataFrame, lookback_days: int, delay_days: int) -> pd.DataFrame:
    """The raw tail that seeds the online feature state, with only the labels already known
    at its end (those older than the delay)."""
    end = frame[schema.TX_DATETIME].max()
    tail = frame[frame[schema.TX_DATETIME] > end - pd.Timedelta(days=lookback_days)]
    cols = [*list(schema.RAW_COLUMNS), schema.TX_FRAUD]
    out = tail[cols].copy()
    young = out[schema.TX_DATETIME] > end - pd.Timedelta(days=delay_days)
    out[schema.TX_FRAUD] = out[schema.TX_FRAUD].astype("float64").mask(young)
    return out.reset_index(drop=True)


def stage_register(
    params: Params,
    layout: Layout,
    production_md5: str | None = None,
    production_window: str | None = None,
) -> RegistrationResult:
    """Register and gate the trained model; a model retrained with production data names it
    (its DVC md5 and window) in the version's tags."""
    from fraud.registry import load_booster, reference_frame
    from pipelines.model_card import render_model_card
    from pipelines.register import Lineage, file_md5, git_commit, params_sha256, register_model

    frame = pd.read_parquet(layout.features)
    info = artifacts.read_json(layout.train_info)
    metrics = artifacts.read_json(layout.metrics)
    prequential = artifacts.read_json(layout.prequential) if layout.prequential.exists() else None
    scores = pd.read_parquet(layout.test_scores)
    test = frame.set_index(schema.TRANSACTION_ID).loc[scores[schema.TRANSACTION_ID]].reset_index()
    booster = load_booster(layout.model)
    # Monitoring's reference: every transaction of the test window (production scores every
    # card; the gate's rows leave out the cards already known to be compromised).
    split = params.split.split()
    times = frame[schema.TX_DATETIME]
    window_rows = frame[
        (times >= pd.Timestamp(split.test_start)) & (times < pd.Timestamp(split.test_end))
    ].reset_index(drop=True)
    reference = reference_frame(
        window_rows,
        booster.inplace_predict(window_rows[info["features"]].to_numpy(np.float32)),
        features=info["features"],
        threshold=float(info["threshold"]),
    )
    raw_dump = params.model_dump(mode="json", by_alias=True)
    lineage = Lineage(
        git_commit=git_commit(layout.root),
        data_md5=file_md5(layout.raw),
        params_sha256=params_sha256(raw_dump),
    )
    name = params.register_.model_name
    top_k = params.evaluate.top_k

    def card(decision: Decision, version: str) -> str:
        return render_model_card(
            model_name=name,
            version=version,
            decision=decision,
            train_info=info,
            metrics=metrics,
            prequential=prequential,
            lineage=lineage,
            top_k=top_k,
        )

    plot_files = {p.stem: p for p in sorted(layout.plots.glob("*"))}
    plot_files.update({"metrics": layout.metrics, "prequential": layout.prequential})
    result = register_model(
        booster=booster,
        train_info=info,
        metrics=metrics,
        prequential=prequential,
        test_features=test,
        params=raw_dump,
        gate=params.register_.gate,
        model_name=name,
        lineage=lineage,
        artifacts=plot_files,
        feature_history=feature_history(
            frame, params.features.lookback_days, params.features.delay_days
        ),
        reference=reference,
        model_card=card,
        production_md5=production_md5,
        production_window=production_window,
    )
    artifacts.write_json(
        {**result.as_dict(), "registered_at": dt.datetime.now(dt.UTC).isoformat()},
        layout.registration,
    )
    return result
