"""benchmarks/prediction_log_bench.py on a small log: it must keep running against the
prediction-log package as it is (a benchmark broken by a refactor measures nothing), compare two
logs that differ only by the reader's tx_datetime index, and record the figures it prints."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from benchmarks import prediction_log_bench as bench


def test_benchmark_writes_both_logs_reads_the_same_window_and_records_the_figures(
    tmp_path: Path,
) -> None:
    out = tmp_path / "prediction_log.json"
    argv = ["--days", "2", "--per-day", "3000", "--batch", "500", "--repeats", "1"]
    assert bench.main([*argv, "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["predictions"] == 6000
    assert results["window_rows"] == 3000  # the second day, whole
    for log in ("contract", "baseline"):
        assert 0 < results["write_s"][log]["median"] <= results["write_s"][log]["p99"]
        assert results["read_window_s"][log] > results["read_window_s"][f"{log} query"] > 0
        assert results["file_bytes"][log] > 0


def test_baseline_log_lacks_only_the_window_index(tmp_path: Path) -> None:
    paths = {"contract": tmp_path / "c.db", "baseline": tmp_path / "b.db"}
    bench.write_logs(paths, [], [])

    def indexes(path: Path) -> set[str]:
        with sqlite3.connect(path) as conn:
            return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}

    assert indexes(paths["contract"]) - indexes(paths["baseline"]) == {bench.WINDOW_INDEX}
