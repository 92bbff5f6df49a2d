"""The Dask cluster a stage runs on when `compute.engine: dask` (params.yaml).

Which cluster is deployment, not experiment, so it is not in params.yaml: Dask's own
DASK_SCHEDULER_ADDRESS (or `scheduler-address` in Dask's configuration) names a running
scheduler, e.g. a cluster on Kubernetes whose workers run this project's image; without it the
stage starts a LocalCluster of `compute.n_workers` processes and closes it when done. Dask is
imported here only when a stage asks for a cluster: the in-process engine and the API image
never load it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pipelines.errors import ComputeError
from pipelines.params import ComputeParams

if TYPE_CHECKING:
    from dask.distributed import Client

log = logging.getLogger("pipelines")

#: Seconds to wait for a scheduler, or for a LocalCluster's workers, on a busy machine.
CONNECT_TIMEOUT_S = 120


def scheduler_address() -> str | None:
    """The scheduler to use: DASK_SCHEDULER_ADDRESS, else Dask's `scheduler-address` config."""
    import dask

    address = os.environ.get("DASK_SCHEDULER_ADDRESS") or dask.config.get("scheduler-address", None)
    return str(address) if address else None


@contextmanager
def dask_client(cfg: ComputeParams) -> Iterator[Client]:
    """A client of the configured cluster, closed on exit (with the LocalCluster it started)."""
    import dask

    # distributed's config defaults first: imported inside the set below, distributed would add
    # them under the keys the set inserted, and leaving the set would delete them all (the next
    # LocalCluster in this process then failed with KeyError 'require-encryption').
    import dask.distributed

    # Dask's 30 s TCP timeout drops the client of a busy machine (an event loop starved for
    # 10 s and more was seen with 2 cores under load): wait as long as for a connection.
    timeouts = {
        "distributed.comm.timeouts.connect": f"{CONNECT_TIMEOUT_S}s",
        "distributed.comm.timeouts.tcp": f"{CONNECT_TIMEOUT_S}s",
    }
    with dask.config.set(timeouts):
        try:
            yield from _client(cfg)
        except Exception as e:
            if not _lost_work(e):
                raise
            raise ComputeError(_lost_work_message(cfg, e)) from e


def _lost_work(e: BaseException) -> bool:
    """Whether `e` is Dask saying that work was lost: a task whose workers kept dying
    (KilledWorker), or a result cancelled because what it needed was gone."""
    from concurrent.futures import CancelledError

    from dask.distributed import KilledWorker

    return isinstance(e, KilledWorker | CancelledError)


def _lost_work_message(cfg: ComputeParams, e: BaseException) -> str:
    address = scheduler_address()
    where = (
        f"the cluster at {address}"
        if address
        else f"the LocalCluster ({cfg.n_workers} workers of compute.memory_limit "
        f"{cfg.memory_limit} each)"
    )
    return (
        f"the Dask cluster lost work it could not recover ({type(e).__name__}: {e}). Most "
        f"often a worker went past its memory limit and was restarted, losing the data it "
        f"held (its log says 'exceeded 95% memory budget'): {where} holds the whole features "
        "stage's data at its peak, about 0.45 GiB per million rows. Raise compute.memory_limit "
        "or compute.n_workers, or run on a larger cluster (docs/scaling.md)"
    )


def _client(cfg: ComputeParams) -> Iterator[Client]:
    from dask.distributed import Client, LocalCluster

    address = scheduler_address()
    if address:
        log.info("dask: connecting to the scheduler at %s (DASK_SCHEDULER_ADDRESS)", address)
        with Client(address, timeout=CONNECT_TIMEOUT_S) as client:
            _log_cluster(client)
            yield client
        return
    log.info(
        "dask: starting a LocalCluster of %d workers x %d threads, %s each",
        cfg.n_workers,
        cfg.threads_per_worker,
        cfg.memory_limit,
    )
    with (
        LocalCluster(
            n_workers=cfg.n_workers,
            threads_per_worker=cfg.threads_per_worker,
            memory_limit=cfg.memory_limit,
            processes=True,
            # A free port: other runs on this machine may hold 8787.
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster, timeout=CONNECT_TIMEOUT_S) as client,
    ):
        client.wait_for_workers(cfg.n_workers, timeout=CONNECT_TIMEOUT_S)
        _log_cluster(client)
        yield client


def _log_cluster(client: Client) -> None:
    info = client.scheduler_info()
    workers = info.get("workers", {})
    threads = sum(int(w.get("nthreads", 0)) for w in workers.values())
    log.info("dask: %d workers, %d threads", len(workers), threads)
    # The dashboard needs bokeh, which the project does not install: only a link that works.
    if "dashboard" in info.get("services", {}):
        log.info("dask: dashboard at %s", client.dashboard_link)
