"""Production data with matured labels in the contract's schema (`monitoring/export.py`):
only cohorts matured by as_of, each with its last label known by then, unlabelled ones genuine;
what retraining on production will learn from and `ingest.source: file` can read."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pandas as pd

from fraud import schema
from fraud.predictions import FeedbackRow, PredictionRow, open_prediction_log
from fraud.transactions_file import read_transactions_file
from fraud.validation import validate_transactions
from monitoring.export import export_log
from monitoring.performance import PerformanceConfig

T0 = dt.datetime(2018, 10, 1)


def make_log(path: Path) -> None:
    """Ten days of 24 hourly transactions; ids 5 and 30 fraud (known 2 days later), id 200 a
    fraud known only on day 12, id 7 labelled fraud then corrected to genuine."""
    log = open_prediction_log(path)
    rows = []
    for i in range(240):
        t = (T0 + dt.timedelta(hours=i)).isoformat()
        rows.append(
            PredictionRow(
                i,
                t,
                i % 7,
                i % 11,
                10.0 + i,
                {"TX_AMOUNT": 10.0 + i},
                0.1,
                0,
                0.5,
                "fraud-detector",
                "1",
                t,
            )
        )
    log.log_predictions(rows)
    known = (T0 + dt.timedelta(days=2)).isoformat()
    later = (T0 + dt.timedelta(days=12)).isoformat()
    log.log_feedback(
        [
            FeedbackRow(5, 1, known, known),
            FeedbackRow(30, 1, known, known),
            FeedbackRow(7, 1, known, known),
            FeedbackRow(
                7,
                0,
                (T0 + dt.timedelta(days=3)).isoformat(),
                (T0 + dt.timedelta(days=3)).isoformat(),
            ),
            FeedbackRow(200, 1, later, later),
        ]
    )
    log.close()


def test_only_matured_cohorts_are_exported_with_the_labels_known_by_as_of(tmp_path: Path):
    make_log(tmp_path / "log.sqlite")
    as_of = T0 + dt.timedelta(days=10)  # days 0..2 have matured (7 days)
    out = export_log(
        tmp_path / "log.sqlite", T0, T0 + dt.timedelta(days=10), as_of, PerformanceConfig()
    )
    frame = out.frame
    assert frame[schema.TRANSACTION_ID].tolist() == list(range(72))
    assert out.left_out == 240 - 72
    assert out.matured_until == T0 + dt.timedelta(days=3)
    frauds = frame.loc[frame[schema.TX_FRAUD] == 1, schema.TRANSACTION_ID].tolist()
    assert frauds == [5, 30]  # 7 was corrected to genuine; 200 is not matured
    assert list(frame.columns) == [*schema.RAW_COLUMNS, schema.TX_FRAUD]
    assert validate_transactions(frame, schema.ContractLimits()).ok


def test_the_command_writes_a_file_the_pipeline_can_ingest_and_names_a_wrong_output(
    tmp_path: Path,
):
    make_log(tmp_path / "log.sqlite")
    out = tmp_path / "production.parquet"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "monitoring",
                "export",
                "--prediction-log",
                str(tmp_path / "log.sqlite"),
                "--start",
                "2018-10-01",
                "--end",
                "2018-10-11",
                "--as-of",
                "2018-10-11",
                *args,
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )

    ok = run("--output", str(out))
    assert ok.returncode == 0, ok.stderr
    assert "wrote 72 transactions (2 frauds)" in ok.stdout
    back = read_transactions_file(out, "ingest.path")
    assert len(back) == 72 and int(pd.to_numeric(back[schema.TX_FRAUD]).sum()) == 2
    bad = run("--output", str(tmp_path / "x.json"))
    assert bad.returncode == 2 and "--output" in bad.stderr
