"""The `fraud` CLI prints domain errors as text: rich markup must not swallow their brackets."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project directory with default params, as the current directory."""
    (tmp_path / "params.yaml").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _transactions(amounts: list[float]) -> pd.DataFrame:
    n = len(amounts)
    return pd.DataFrame(
        {
            "TRANSACTION_ID": range(n),
            "TX_DATETIME": pd.date_range("2018-04-01 08:00", periods=n, freq="h"),
            "CUSTOMER_ID": [7] * n,
            "TERMINAL_ID": [3] * n,
            "TX_AMOUNT": amounts,
            "TX_FRAUD": [0] * n,
        }
    )


def test_contract_violation_shows_its_example_rows_and_the_report_file(project: Path) -> None:
    raw = project / "data/raw/transactions.parquet"
    raw.parent.mkdir(parents=True)
    _transactions([12.5, -5.0, 30.0]).to_parquet(raw)

    result = CliRunner().invoke(app, ["validate"])

    assert result.exit_code == 1
    assert "TX_AMOUNT: must not be negative (1 rows)" in result.stderr
    assert "e.g. [row=1, TRANSACTION_ID=1, TX_AMOUNT=-5.0]" in result.stderr
    assert "reports/validation.failed.json" in result.stderr
    assert (project / "reports/validation.failed.json").is_file()


def test_domain_error_keeps_brackets_in_what_it_names(project: Path) -> None:
    missing = "data/[new] transactions.csv"
    (project / "params.yaml").write_text(
        yaml.safe_dump({"ingest": {"source": "file", "path": missing}})
    )

    result = CliRunner().invoke(app, ["ingest"])

    assert result.exit_code == 1
    assert f"ingest.path: {missing} does not exist" in result.stderr
