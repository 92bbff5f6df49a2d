"""A real Dask LocalCluster of 2 worker processes for the tests of the Dask path (the features
and the training), and a client of it, with the timeouts a busy machine needs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dask
from dask.distributed import Client, LocalCluster

#: A machine busy with other tests can starve Dask's event loops past the 30 s TCP timeout.
TIMEOUTS = {"distributed.comm.timeouts.connect": "120s", "distributed.comm.timeouts.tcp": "120s"}
N_WORKERS = 2


@contextmanager
def local_cluster() -> Iterator[LocalCluster]:
    """2 worker processes of 1 thread and 2 GiB each, the dashboard on a free port."""
    with (
        dask.config.set(TIMEOUTS),
        LocalCluster(
            n_workers=N_WORKERS,
            threads_per_worker=1,
            processes=True,
            dashboard_address="127.0.0.1:0",
            memory_limit="2GiB",
        ) as cluster,
    ):
        yield cluster


@contextmanager
def cluster_client(cluster: LocalCluster) -> Iterator[Client]:
    """A client of `cluster`, once all its workers are up."""
    with dask.config.set(TIMEOUTS), Client(cluster, timeout=120) as client:
        client.wait_for_workers(N_WORKERS, timeout=120)
        yield client
