"""The features on a real Dask LocalCluster (2 worker processes) equal `compute_features`'s,
bit for bit, whatever the number of chunks and entity partitions; the point-in-time rules hold."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from dask.distributed import Client

from fraud import schema
from fraud.features import FeatureConfig, compute_features
from fraud.features.distributed import compute_features_on_dask, gather_frame, scatter_chunks
from fraud.simulator import SimulatorConfig, simulate
from tests.dask_cluster import cluster_client, local_cluster

pytestmark = [pytest.mark.backends, pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with local_cluster() as cluster, cluster_client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def larger() -> pd.DataFrame:
    """Larger than the tiny data (about 100,000 rows): several partitions of many customers and
    terminals each."""
    return simulate(SimulatorConfig(n_customers=1000, n_terminals=2000, n_days=50, seed=11))


@pytest.fixture(scope="module")
def larger_on_dask(client: Client, larger: pd.DataFrame) -> pd.DataFrame:
    return on_dask(client, larger, FeatureConfig(), chunks=5, partitions=7)


def on_dask(
    client: Client,
    df: pd.DataFrame,
    cfg: FeatureConfig,
    chunks: int,
    partitions: int,
) -> pd.DataFrame:
    futures = compute_features_on_dask(client, scatter_chunks(client, df, chunks), cfg, partitions)
    return gather_frame(client, futures).set_axis(df.index)


def test_dask_features_equal_in_process_features_exactly_on_the_tiny_data(
    client: Client, tiny_params, tiny_transactions: pd.DataFrame
) -> None:
    cfg = tiny_params.features
    expected = compute_features(tiny_transactions, cfg)
    for chunks, partitions in ((1, 1), (3, 4)):
        got = on_dask(client, tiny_transactions, cfg, chunks, partitions)
        pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_dask_features_equal_in_process_features_exactly_on_several_partitions(
    larger: pd.DataFrame, larger_on_dask: pd.DataFrame
) -> None:
    cfg = FeatureConfig()
    expected = compute_features(larger, cfg)
    got = larger_on_dask
    assert len(got) > 80_000
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    # Not a vacuous comparison: every family has values, and the customers' amount features
    # come from running totals that crossed partitions.
    assert got[cfg.names.history.amount_zscore].notna().mean() > 0.9  # type: ignore[union-attr]
    assert (got[cfg.names.terminal_windows[-1].risk] > 0).any()


def test_dask_features_do_not_depend_on_the_input_order_nor_reorder_rows(
    client: Client, larger: pd.DataFrame
) -> None:
    cfg = FeatureConfig()
    shuffled = larger.iloc[:30_000].sample(frac=1.0, random_state=4)
    got = on_dask(client, shuffled, cfg, chunks=4, partitions=3)
    pd.testing.assert_frame_equal(got, compute_features(shuffled, cfg), check_exact=True)
    np.testing.assert_array_equal(
        got[schema.TRANSACTION_ID].to_numpy(), shuffled[schema.TRANSACTION_ID].to_numpy()
    )


def test_more_partitions_than_customers_leaves_empty_partitions_harmless(
    client: Client, tiny_transactions: pd.DataFrame
) -> None:
    cfg = FeatureConfig()
    few = tiny_transactions[tiny_transactions[schema.CUSTOMER_ID] < 3]
    assert few[schema.CUSTOMER_ID].nunique() == 3
    got = on_dask(client, few, cfg, chunks=2, partitions=8)
    pd.testing.assert_frame_equal(got, compute_features(few, cfg), check_exact=True)


def test_dask_features_of_a_transaction_never_see_later_rows(
    client: Client, larger: pd.DataFrame, larger_on_dask: pd.DataFrame
) -> None:
    """Cut the history at a time T: every row up to T keeps its features. A feature that read a
    later row (of its customer, its terminal, or any other) would change."""
    cfg = FeatureConfig()
    full = larger_on_dask
    cut = larger[schema.TX_DATETIME].iloc[0] + pd.Timedelta(days=30)
    before = larger[larger[schema.TX_DATETIME] <= cut]
    assert 0 < len(before) < len(larger)
    truncated = on_dask(client, before, cfg, chunks=3, partitions=5)
    names = cfg.feature_names()
    # Counts and labels are exact; averages are sums of the customer's own amounts, centred on
    # a mean the cut changes, so they agree to rounding (the parity tests' tolerance).
    for name in names:
        a = truncated[name].to_numpy(np.float64)
        b = full.loc[before.index, name].to_numpy(np.float64)
        bad = ~np.isclose(a, b, rtol=1e-9, atol=0.0, equal_nan=True)
        assert not bad.any(), f"{name}: {bad.sum()} rows changed when later rows were removed"
