"""Evidently's untuned `DataDriftPreset()`, the baseline the monitoring benchmarks put beside
the monitor's own checks (benchmarks/monitoring_calibration.py, benchmarks/drift_bench.py)."""

from __future__ import annotations

import time
import warnings

import pandas as pd

#: Evidently's dataset-level rule: the data set drifted when this share of columns did.
DATASET_DRIFT_SHARE = 0.5


def evidently_run(
    ref: pd.DataFrame, cur: pd.DataFrame, columns: list[str]
) -> tuple[float, dict[str, bool], float]:
    """CPU-seconds, per-column drift flags and the drifted share of DataDriftPreset()."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    dd = DataDefinition(numerical_columns=columns)
    t0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snap = Report([DataDriftPreset()]).run(
            Dataset.from_pandas(cur[columns], data_definition=dd),
            Dataset.from_pandas(ref[columns], data_definition=dd),
        )
    cpu = time.process_time() - t0
    flags: dict[str, bool] = {}
    share = 0.0
    for m in snap.dict()["metrics"]:
        conf = m["config"]
        if conf["type"].endswith("ValueDrift"):
            value, thr = float(m["value"]), float(conf["threshold"])
            p_value = "p_value" in str(conf.get("method", "")).lower()
            flags[conf["column"]] = value < thr if p_value else value >= thr
        elif conf["type"].endswith("DriftedColumnsCount"):
            share = float(m["value"]["share"])
    return cpu, flags, share
