"""Features step: validated raw transactions -> point-in-time features (fraud/features/offline.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fraud.features import FeatureConfig, compute_features
from fraud.schema import ContractLimits
from fraud.validation import to_contract_frame
from pipelines.artifacts import write_parquet


@dataclass(frozen=True)
class FeaturesResult:
    rows: int
    features: list[str]


def build_features(
    raw_path: str | Path, cfg: FeatureConfig, limits: ContractLimits, output: str | Path
) -> FeaturesResult:
    """Compute every feature of `cfg` over the whole history and write it next to the raw columns."""
    raw = pd.read_parquet(raw_path)
    df = to_contract_frame(raw, limits)
    feats = compute_features(df, cfg)
    write_parquet(feats, output)
    return FeaturesResult(rows=len(feats), features=cfg.feature_names())
