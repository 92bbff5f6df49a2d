"""The Dask cluster of the features and train stages (`pipelines.compute.dask_client`) on a real
LocalCluster: work lost to workers that die of memory fails the stage with one line naming the
memory limit and what to change, not Dask's "Future cancelled ... already forgotten"."""

from __future__ import annotations

import time

import pytest

from pipelines.compute import dask_client
from pipelines.errors import ComputeError
from pipelines.params import ComputeParams

pytestmark = [pytest.mark.backends, pytest.mark.integration, pytest.mark.slow]


def _hold_memory(mib: int, seconds: float) -> int:
    """Allocate and touch `mib` MiB, then hold it (long enough for the nanny to see it)."""
    block = bytearray(mib << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(seconds)
    return len(block)


def test_a_task_that_outgrows_its_worker_fails_the_stage_naming_the_memory_limit() -> None:
    """A task needing 1 GiB on a worker limited to 400 MiB: the nanny restarts the worker each
    time, the scheduler gives up (KilledWorker), and the stage's error says what happened and
    which settings to raise."""
    cfg = ComputeParams(engine="dask", n_workers=1, memory_limit="400MiB")
    started = time.monotonic()
    with pytest.raises(ComputeError) as e, dask_client(cfg) as client:
        client.submit(_hold_memory, 1024, 10.0, pure=False).result(timeout=300)
    message = str(e.value)
    assert "KilledWorker" in message, message
    assert "LocalCluster (1 workers of compute.memory_limit 400MiB each)" in message, message
    assert "Raise compute.memory_limit or compute.n_workers" in message, message
    assert time.monotonic() - started < 300


def test_other_errors_in_a_stage_on_dask_pass_through_unchanged() -> None:
    cfg = ComputeParams(engine="dask", n_workers=1, memory_limit="1GiB")
    with pytest.raises(ZeroDivisionError), dask_client(cfg) as client:
        client.submit(lambda: 1 / 0, pure=False).result(timeout=120)
