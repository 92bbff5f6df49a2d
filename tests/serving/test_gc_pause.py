"""The batch endpoint's pause of the cyclic garbage collector (`serving.runtime.GCPause`)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from serving.runtime import GCPause


@pytest.fixture(autouse=True)
def _restore_gc():
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


def test_overlapping_batches_keep_the_collector_off_until_the_last_one_ends():
    gc.enable()
    pause = GCPause()
    seen: list[tuple[str, bool]] = []

    async def batch(name: str, hold: asyncio.Event) -> None:
        with pause():
            seen.append((f"{name} in", gc.isenabled()))
            await hold.wait()
        seen.append((f"{name} out", gc.isenabled()))

    async def main() -> None:
        first, second = asyncio.Event(), asyncio.Event()
        a = asyncio.create_task(batch("a", first))
        b = asyncio.create_task(batch("b", second))
        await asyncio.sleep(0)
        first.set()  # a ends while b is still scoring
        await a
        second.set()
        await b

    asyncio.run(main())
    assert seen == [("a in", False), ("b in", False), ("a out", False), ("b out", True)]


def test_a_collector_switched_off_before_stays_off():
    gc.disable()
    pause = GCPause()
    with pause():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_the_collector_comes_back_when_the_block_raises():
    gc.enable()
    pause = GCPause()
    with pytest.raises(RuntimeError), pause():
        raise RuntimeError("scoring failed")
    assert gc.isenabled()
