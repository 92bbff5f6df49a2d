#!/usr/bin/env python
"""Pauses of the online state's transaction index: a plain dict against `ShardedDict`.

The in-process state keeps every transaction of the lookback in an index (id -> terminal,
time) and deletes the oldest as time moves on. A plain dict rehashes all its entries when it
grows, and rebuilds itself now and then at the same size as deletions leave dummies: the
request that happens to insert at that moment waits. `fraud.features.ShardedDict` splits the
index into 256 dicts by a hash of the id. This inserts `--n` consecutive ids into each,
deleting the oldest beyond `--keep` (an eviction queue), times every insertion, and prints the
worst pauses, the worst run of `--batch` consecutive insertions (what a `/predict/batch`
request waits: the parts' growths fall within a few thousand insertions of each other, so a
batch meets several) and the cost per insertion, with the ratios. Never asserts.

    python benchmarks/serving/state_stalls.py                   # about 5 s
    python benchmarks/serving/state_stalls.py --n 6000000 --keep 3000000 --markdown
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project, for `python <this>`

from benchmarks.common.report import markdown_table, rich_table
from fraud.features import ShardedDict

console = Console()


def run(index: Any, n: int, keep: int, pause_ms: float, batch: int) -> dict[str, float]:
    """Insert n ids (evicting beyond `keep`); the insertion times, summarised."""
    order: deque[int] = deque()
    clock = time.perf_counter
    worst: list[float] = []
    total = 0.0
    samples: list[float] = []
    in_batch = worst_batch = slowest = 0.0
    for i in range(n):
        tid = 1_000_000_000 + i
        t = clock()
        index[tid] = (i & 0xFFFF, i)
        order.append(tid)
        if len(order) > keep:
            index.pop(order.popleft(), None)
        dt_ = clock() - t
        total += dt_
        slowest = max(slowest, dt_)
        in_batch += dt_
        if (i + 1) % batch == 0:
            worst_batch = max(worst_batch, in_batch)
            in_batch = 0.0
        if i % 97 == 0:
            samples.append(dt_)
        if dt_ * 1e3 >= pause_ms:
            worst.append(dt_)
    worst.sort(reverse=True)
    return {
        "total_s": total,
        "median_us": statistics.median(samples) * 1e6,
        "worst_ms": slowest * 1e3,
        "pauses": len(worst),
        "pause_total_ms": sum(worst) * 1e3,
        "worst_batch_ms": worst_batch * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--n", type=int, default=3_000_000, help="ids inserted (default 3,000,000)")
    ap.add_argument(
        "--keep", type=int, default=1_500_000, help="entries kept (older ones are deleted)"
    )
    ap.add_argument("--pause-ms", type=float, default=5.0, help="an insertion this slow is a pause")
    ap.add_argument("--batch", type=int, default=1000, help="insertions per batch (default 1,000)")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = ap.parse_args(argv)
    gc.disable()  # the cyclic collector's own pauses are not what is measured here
    results = {}
    for name, make in (("dict", dict), ("ShardedDict (256 parts)", ShardedDict)):
        console.print(f"{name}: {args.n:,} insertions, keeping {args.keep:,} ...")
        results[name] = run(make(), args.n, args.keep, args.pause_ms, args.batch)
    base, new = results["dict"], results["ShardedDict (256 parts)"]
    columns = [
        "index",
        "worst pause ms",
        f"pauses >= {args.pause_ms:g} ms",
        "their total ms",
        f"worst batch of {args.batch:,} ms",
        "median µs per insertion",
        "total s",
    ]
    rows = [
        [
            name,
            f"{r['worst_ms']:.1f}",
            str(r["pauses"]),
            f"{r['pause_total_ms']:.0f}",
            f"{r['worst_batch_ms']:.1f}",
            f"{r['median_us']:.2f}",
            f"{r['total_s']:.2f}",
        ]
        for name, r in results.items()
    ]
    rows.append(
        [
            "ratio dict / ShardedDict",
            f"{base['worst_ms'] / new['worst_ms']:.1f}x",
            "",
            "",
            f"{base['worst_batch_ms'] / new['worst_batch_ms']:.1f}x",
            f"{base['median_us'] / new['median_us']:.2f}x",
            f"{base['total_s'] / new['total_s']:.2f}x",
        ]
    )
    if args.markdown:
        print(markdown_table(columns, rows))
    else:
        console.print(rich_table(f"{args.n:,} insertions, {args.keep:,} kept", columns, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
