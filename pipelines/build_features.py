"""Features step: validated raw transactions -> point-in-time features (fraud/features/offline.py),
in this process or on a Dask cluster (fraud/features/distributed.py), with the same values."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from fraud.features import FeatureConfig, compute_features

# Module level (they import Dask only when called), so that DVC's code deps of the features
# stage, traced with the default engine, include the Dask path too.
from fraud.features.distributed import compute_features_on_dask, read_parquet_chunks
from fraud.schema import ContractLimits
from fraud.validation import to_contract_frame
from pipelines.artifacts import atomic_path, write_parquet

if TYPE_CHECKING:
    from dask.distributed import Client

log = logging.getLogger("pipelines")


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


def build_features_on_dask(
    client: Client,
    raw_path: str | Path,
    cfg: FeatureConfig,
    limits: ContractLimits,
    output: str | Path,
    partitions: int,
) -> FeaturesResult:
    """`build_features` on a Dask cluster: the same file content (the same frame, one row group
    per chunk), from data this process never holds whole.

    The workers read `raw_path` themselves (on a remote cluster it must be on a volume they
    share); each chunk is checked against the contract's row rules on its worker (the validate
    stage has checked the rules across rows, such as unique ids, on the whole file). The result
    is streamed to `output` chunk by chunk, in row order.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from dask.distributed import wait

    prepare = functools.partial(to_contract_frame, limits=limits)
    chunks = read_parquet_chunks(client, raw_path, partitions, prepare)
    log.info("features on dask: %d chunks, %d entity partitions", len(chunks), partitions)
    results = compute_features_on_dask(client, chunks, cfg, partitions)
    rows = 0
    with atomic_path(output) as tmp:
        writer: pq.ParquetWriter | None = None
        try:
            for i, future in enumerate(results):
                wait(future)
                chunk = future.result()
                future.release()  # the workers may drop it once written
                table = pa.Table.from_pandas(chunk, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table.cast(writer.schema))
                rows += len(chunk)
                log.info(
                    "features on dask: chunk %d/%d written (%d rows)", i + 1, len(results), rows
                )
            if writer is None:  # no transactions: the in-process step's empty frame
                empty = to_contract_frame(pd.read_parquet(raw_path).iloc[0:0], limits)
                compute_features(empty, cfg).to_parquet(tmp, index=False)
        finally:
            if writer is not None:
                writer.close()
    return FeaturesResult(rows=rows, features=cfg.feature_names())
