"""The offline features on a Dask cluster, partitioned by entity: `compute_features`'s values,
bit for bit, from data that no single process has to hold.

The transactions arrive as row chunks in input order (futures of contract frames indexed by
their global row number: `scatter_chunks` for a frame in memory, `read_parquet_chunks` for a
file the workers can read). Then, on the workers:

* calendar flags: row by row, in each chunk;
* customer features: each chunk is split by customer into `partitions` runs of whole customers
  in order of first appearance (the order `compute_features` sorts them in), and each run goes
  through `customer_features`. Its amount sums continue the running totals of the runs before
  it (`customer_sums_after`, a cheap sequential chain of cumulative sums), which is what makes
  the last bit of every average, ratio and z-score equal to the in-process one;
* terminal features: each chunk is split by a hash of TERMINAL_ID and each partition of whole
  terminals goes through `terminal_features` (its sums are counts, exact in any order);
* each chunk gets its features back from the partitions that hold its rows, in its row order,
  with the columns in `compute_features`'s order.

A transaction only ever meets rows of its own customer or terminal, in the same functions as in
process, so the point-in-time rules hold as they do there. Rows with the same entity and time
keep their input order: every piece keeps its rows in input order.

Dask is imported only by the callers that pass a client: `fraud.features` never loads this
module at import time (the API image has no Dask).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fraud import schema
from fraud.features.config import FeatureConfig
from fraud.features.offline import (
    NO_CUSTOMERS_BEFORE,
    CustomerSums,
    calendar_features,
    continue_customer_sums,
    customer_centred_amounts,
    customer_features,
    terminal_features,
)

if TYPE_CHECKING:
    from dask.distributed import Client, Future


def scatter_chunks(client: Client, df: pd.DataFrame, n_chunks: int) -> list[Future]:
    """A frame of transactions as `n_chunks` row chunks on the workers, indexed by row number."""
    bounds = _chunk_bounds(len(df), n_chunks)
    frame = df.reset_index(drop=True)
    return [
        client.scatter(frame.iloc[a:b].set_axis(pd.RangeIndex(a, b)), hash=False)
        for a, b in itertools.pairwise(bounds)
    ]


def read_parquet_chunks(
    client: Client,
    path: str | Path,
    n_chunks: int,
    prepare: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    columns: list[str] | None = None,
    rows: tuple[int, int] | None = None,
) -> list[Future]:
    """A Parquet file (or its `rows` [start, stop)) as `n_chunks` row chunks, each read by a
    worker (the path must be readable there) and passed through `prepare` (e.g. the contract's
    types)."""
    import pyarrow.parquet as pq

    start, stop = rows if rows is not None else (0, pq.ParquetFile(path).metadata.num_rows)
    bounds = [start + b for b in _chunk_bounds(stop - start, n_chunks)]
    return [
        client.submit(_read_rows, str(path), a, b, prepare, columns, pure=False)
        for a, b in itertools.pairwise(bounds)
    ]


def compute_features_on_dask(
    client: Client, chunks: Sequence[Future], cfg: FeatureConfig, partitions: int
) -> list[Future]:
    """Futures of the chunks with every feature of `cfg` added, in chunk order: concatenated,
    `compute_features` of the whole history, bit for bit."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    bounds = [0, *client.gather([client.submit(_row_end, c) for c in chunks])]
    # Customers in order of first appearance, cut into `partitions` runs of whole customers.
    firsts = [client.submit(_first_rows, c) for c in chunks]
    first = client.submit(_earliest, firsts).result()
    customer_run = pd.Series(
        np.arange(len(first), dtype=np.int64) * partitions // max(len(first), 1),
        index=first.sort_values(kind="stable").index,
    )
    run_of = client.scatter(customer_run, broadcast=True, hash=False)
    by_customer = _repartition(client, chunks, _split_by_customer_run, run_of, partitions)
    by_terminal = _repartition(client, chunks, _split_by_terminal, None, partitions)

    centred = [client.submit(customer_centred_amounts, part) for part in by_customer]
    before: CustomerSums | Future = NO_CUSTOMERS_BEFORE
    customer_parts = []
    for part, values in zip(by_customer, centred, strict=True):
        customer_parts.append(client.submit(customer_features, part, cfg, before))
        before = client.submit(continue_customer_sums, values, before)
    terminal_parts = [client.submit(terminal_features, part, cfg) for part in by_terminal]

    row_bounds = np.asarray(bounds, dtype=np.int64)
    customer_pieces = [client.submit(_split_by_rows, p, row_bounds) for p in customer_parts]
    terminal_pieces = [client.submit(_split_by_rows, p, row_bounds) for p in terminal_parts]
    out = []
    for k, chunk in enumerate(chunks):
        mine_c = [client.submit(operator.getitem, p, k) for p in customer_pieces]
        mine_t = [client.submit(operator.getitem, p, k) for p in terminal_pieces]
        out.append(client.submit(_assemble, chunk, cfg, mine_c, mine_t))
    return out


def gather_frame(client: Client, futures: Sequence[Future]) -> pd.DataFrame:
    """The chunks as one frame (for data that fits in this process; the stage streams them)."""
    parts = client.gather(list(futures))
    return pd.concat(parts) if parts else pd.DataFrame()


# -- the tasks (plain functions of pandas frames, run on the workers) ------------------------


def _chunk_bounds(rows: int, n_chunks: int) -> list[int]:
    n = max(1, min(n_chunks, rows)) if rows else 1
    return [rows * i // n for i in range(n + 1)]


def _read_rows(
    path: str,
    start: int,
    stop: int,
    prepare: Callable[[pd.DataFrame], pd.DataFrame] | None,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    groups, first_row, offset = [], None, 0
    for i in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(i).num_rows
        if offset < stop and offset + n > start:
            groups.append(i)
            first_row = offset if first_row is None else first_row
        offset += n
    table = (
        pf.read_row_groups(groups, columns=columns)
        if groups
        else pf.schema_arrow.empty_table().select(columns or pf.schema_arrow.names)
    )
    skip = start - (first_row or 0)
    frame = table.to_pandas().iloc[skip : skip + stop - start]
    frame = frame.set_axis(pd.RangeIndex(start, stop))
    return prepare(frame) if prepare is not None else frame


def _row_end(chunk: pd.DataFrame) -> int:
    return int(chunk.index[-1]) + 1 if len(chunk) else 0


def _first_rows(chunk: pd.DataFrame) -> pd.Series:
    """Each customer's first row number in the chunk."""
    rows = pd.Series(chunk.index.to_numpy(), index=chunk[schema.CUSTOMER_ID].to_numpy())
    return rows.groupby(level=0, sort=False).min()


def _earliest(firsts: list[pd.Series]) -> pd.Series:
    both = pd.concat(firsts)
    return both.groupby(level=0, sort=False).min()


def _split_by_customer_run(chunk: pd.DataFrame, run_of: pd.Series, n: int) -> list[pd.DataFrame]:
    runs = run_of.reindex(chunk[schema.CUSTOMER_ID].to_numpy()).to_numpy()
    return _split(chunk, runs, n)


def _split_by_terminal(chunk: pd.DataFrame, _: None, n: int) -> list[pd.DataFrame]:
    hashes = pd.util.hash_array(chunk[schema.TERMINAL_ID].to_numpy())
    return _split(chunk, (hashes % np.uint64(n)).astype(np.int64), n)


def _split(chunk: pd.DataFrame, part: np.ndarray, n: int) -> list[pd.DataFrame]:
    # Boolean selection keeps each piece's rows in input order.
    return [chunk[part == j] for j in range(n)]


def _repartition(
    client: Client,
    chunks: Sequence[Future],
    split: Callable[[pd.DataFrame, Any, int], list[pd.DataFrame]],
    arg: Any,
    n: int,
) -> list[Future]:
    """Partition j of the result: piece j of every chunk, concatenated in chunk (row) order."""
    pieces = [client.submit(split, c, arg, n) for c in chunks]
    return [
        client.submit(_concat, [client.submit(operator.getitem, p, j) for p in pieces])
        for j in range(n)
    ]


def _concat(pieces: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(pieces)


def _split_by_rows(part: pd.DataFrame, bounds: np.ndarray) -> list[pd.DataFrame]:
    """The rows of `part` (indexed by row number, increasing) cut at the chunks' bounds."""
    cuts = np.searchsorted(part.index.to_numpy(), bounds)
    return [part.iloc[a:b] for a, b in itertools.pairwise(cuts)]


def _assemble(
    chunk: pd.DataFrame,
    cfg: FeatureConfig,
    customer_pieces: list[pd.DataFrame],
    terminal_pieces: list[pd.DataFrame],
) -> pd.DataFrame:
    """The chunk with its features, columns in `compute_features`'s order."""
    out = chunk.copy()
    families = (
        calendar_features(chunk, cfg),
        pd.concat(customer_pieces).sort_index(),
        pd.concat(terminal_pieces).sort_index(),
    )
    for family in families:
        if not family.index.equals(chunk.index):
            raise RuntimeError("a feature partition lost or repeated rows of a chunk")
        for name in family.columns:
            out[name] = family[name].to_numpy()
    return out
