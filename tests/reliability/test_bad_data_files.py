"""Bad data files, for the pipeline's file ingest and for `make score`: each is refused with one
clear error that names the file, the column (and the row where there is one) and what was
expected, or, where the file is good data in another spelling (a UTF-8 BOM, mixed time zones,
an extra column), read as the same transactions. Nothing is lost or overwritten: the previous
data/raw/transactions.parquet and a previous scores file keep their bytes.

The commands are the ones users and DVC run: the ingest stage's `pipelines.cli ingest` (what
`dvc repro` runs, in a scratch project per case with the pipeline's good raw data in place) and
`pipelines.cli score` (what `make score` runs) against the session's tiny pipeline registry.
Every case calls the CLI's app in this process (a subprocess costs 3-5 s of imports per case);
one case of each, and one real `dvc repro` on a bad file, run as subprocesses, as users do.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fraud import schema
from fraud.schema import ContractLimits
from fraud.validation import to_contract_frame
from tests.conftest import PipelineRepo
from tests.fraud.conftest import tracking_uri

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.slow]

RAW = Path("data/raw/transactions.parquet")
#: The transactions the files are built from: the first days of the tiny data.
DAYS = 10


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Case:
    """A bad (or unusual) file and what must come of it.

    `expect`: the texts the error must hold (besides the file's name), or None when the file
    must be accepted as the clean transactions.
    """

    name: str
    suffix: str
    write: Callable[[pd.DataFrame, Path], None]
    expect: tuple[str, ...] | None


def _csv(df: pd.DataFrame, path: Path, **kw: object) -> None:
    df.to_csv(path, index=False, **kw)  # type: ignore[call-overload]


def _missing_column(df: pd.DataFrame, path: Path) -> None:
    _csv(df.drop(columns=[schema.TX_AMOUNT]), path)


def _lower_case_column(df: pd.DataFrame, path: Path) -> None:
    _csv(df.rename(columns={schema.CUSTOMER_ID: "customer_id"}), path)


def _extra_column(df: pd.DataFrame, path: Path) -> None:
    # The Fraud Detection Handbook's own files carry these two.
    out = df.copy()
    seconds = (out[schema.TX_DATETIME] - out[schema.TX_DATETIME].min()).dt.total_seconds()
    out["TX_TIME_SECONDS"] = seconds.astype("int64")
    out["TX_TIME_DAYS"] = (seconds // 86400).astype("int64")
    _csv(out, path)


def _amount_as_text(df: pd.DataFrame, path: Path) -> None:
    out = df.copy()
    out[schema.TX_AMOUNT] = out[schema.TX_AMOUNT].map(lambda a: f"{a:.2f}")
    out.loc[out.index[7], schema.TX_AMOUNT] = "12,50"  # a decimal comma
    _csv(out, path)


def _fractional_customer_parquet(df: pd.DataFrame, path: Path) -> None:
    out = df.copy()
    out[schema.CUSTOMER_ID] = out[schema.CUSTOMER_ID].astype("float64")
    out.loc[out.index[4], schema.CUSTOMER_ID] = 4.5
    out.to_parquet(path, index=False)


def _datetime_as_text(df: pd.DataFrame, path: Path) -> None:
    out = df.copy()
    out[schema.TX_DATETIME] = out[schema.TX_DATETIME].astype(str)
    out.loc[out.index[5], schema.TX_DATETIME] = "yesterday"
    _csv(out, path)


def _truncated_parquet(df: pd.DataFrame, path: Path) -> None:
    df.to_parquet(path, index=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random_bytes_parquet(df: pd.DataFrame, path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(50_000))


def _empty_file(df: pd.DataFrame, path: Path) -> None:
    path.write_bytes(b"")


def _header_only(df: pd.DataFrame, path: Path) -> None:
    _csv(df.head(0), path)


def _mixed_time_zones(df: pd.DataFrame, path: Path) -> None:
    """The same instants, a third with +02:00 (local time two hours ahead), a third with Z,
    a third naive (UTC by the contract)."""
    out = df.copy()
    ts = out[schema.TX_DATETIME]
    text = ts.dt.strftime("%Y-%m-%dT%H:%M:%S")
    plus2 = (ts + pd.Timedelta(hours=2)).dt.strftime("%Y-%m-%dT%H:%M:%S+02:00")
    kind = np.arange(len(out)) % 3
    out[schema.TX_DATETIME] = np.where(kind == 0, plus2, np.where(kind == 1, text + "Z", text))
    _csv(out, path)


def _bom_csv(df: pd.DataFrame, path: Path) -> None:
    _csv(df, path, encoding="utf-8-sig")


def _duplicate_ids(df: pd.DataFrame, path: Path) -> None:
    out = df.copy()
    out.loc[out.index[9], schema.TRANSACTION_ID] = out[schema.TRANSACTION_ID].iloc[8]
    _csv(out, path)


def _nan_amounts(df: pd.DataFrame, path: Path) -> None:
    out = df.copy()
    out.loc[out.index[[3, 11]], schema.TX_AMOUNT] = np.nan
    out.to_parquet(path, index=False)


CASES = [
    Case("missing column", ".csv", _missing_column, ("TX_AMOUNT", "required column is missing")),
    Case(
        "column name in lower case",
        ".csv",
        _lower_case_column,
        ("CUSTOMER_ID", "required column is missing", "the file has 'customer_id'"),
    ),
    Case("extra columns (the handbook's)", ".csv", _extra_column, None),
    Case(
        "wrong dtype: amount as text",
        ".csv",
        _amount_as_text,
        ("TX_AMOUNT", "must be a number (value does not parse)", "row=7", "12,50"),
    ),
    Case(
        "wrong dtype: fractional customer id (Parquet)",
        ".parquet",
        _fractional_customer_parquet,
        ("CUSTOMER_ID", "must be a whole number", "row=4", "4.5"),
    ),
    Case(
        "wrong dtype: a date that is a word",
        ".csv",
        _datetime_as_text,
        ("TX_DATETIME", "must be a datetime (value does not parse)", "row=5", "yesterday"),
    ),
    Case("truncated Parquet", ".parquet", _truncated_parquet, ("cannot read", "Parquet")),
    Case(
        "random bytes named .parquet",
        ".parquet",
        _random_bytes_parquet,
        ("cannot read", "Parquet"),
    ),
    Case("empty file (0 bytes)", ".csv", _empty_file, ("is empty (0 bytes)",)),
    Case("empty Parquet (0 bytes)", ".parquet", _empty_file, ("is empty (0 bytes)",)),
    Case("header-only CSV", ".csv", _header_only, ("no transactions",)),
    Case("mixed time zones (+02:00, Z, naive)", ".csv", _mixed_time_zones, None),
    Case("CSV with a UTF-8 BOM", ".csv", _bom_csv, None),
    Case(
        "duplicate transaction ids",
        ".csv",
        _duplicate_ids,
        ("TRANSACTION_ID", "must be unique (duplicate id)", "row=9"),
    ),
    Case(
        "NaN amounts",
        ".parquet",
        _nan_amounts,
        ("TX_AMOUNT", "must not be null (2 rows)", "row=3", "row=11"),
    ),
]
IDS = [c.name for c in CASES]
#: Results of both commands, for the count printed at the end.
OUTCOMES: dict[str, str] = {}


@pytest.fixture(scope="module")
def repo(pipeline_repo: PipelineRepo) -> PipelineRepo:
    """The tiny pipeline after one good `dvc repro`: good raw data and a @champion."""
    return pipeline_repo


@pytest.fixture(scope="module")
def clean(repo: PipelineRepo) -> pd.DataFrame:
    raw = pd.read_parquet(repo.path / RAW)
    end = raw[schema.TX_DATETIME].min().normalize() + pd.Timedelta(days=DAYS)
    return raw[raw[schema.TX_DATETIME] < end].reset_index(drop=True)


@pytest.fixture(scope="module")
def files(clean: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad-files")
    out = {}
    for i, case in enumerate(CASES):
        path = folder / f"case{i:02d}{case.suffix}"
        case.write(clean, path)
        out[case.name] = path
    clean_path = folder / "clean.csv"
    _csv(clean, clean_path)
    out["clean"] = clean_path
    return out


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def run_process(repo: PipelineRepo, cwd: Path, *args: str) -> Outcome:
    """`python -m pipelines.cli ARGS` in `cwd`, as DVC and `make score` run it."""
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=cwd,
        env=repo.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Outcome]:
    """The CLI's app in this process, in `cwd`, with the repository's MLflow store."""
    from typer.testing import CliRunner

    from pipelines.cli import app

    def invoke(repo: PipelineRepo, cwd: Path, *args: str) -> Outcome:
        monkeypatch.chdir(cwd)
        with tracking_uri(repo.tracking_uri):  # restored afterwards, for the session's others
            result = CliRunner().invoke(app, list(args))
        # An exception the CLI did not turn into a message would be a traceback for a user.
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
        return Outcome(result.exit_code, result.stdout, result.stderr)

    return invoke


def assert_clear_error(proc: Outcome, path: Path, expect: tuple[str, ...]) -> None:
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "Traceback" not in text, text
    first = proc.stderr.lstrip().splitlines()[0]
    assert first.startswith("error: "), proc.stderr
    assert str(path) in proc.stderr, proc.stderr
    for needle in expect:
        assert needle in proc.stderr, (needle, proc.stderr)


def scratch_project(repo: PipelineRepo, dest: Path, data_file: Path) -> tuple[Path, Path]:
    """A project folder with the pipeline's good raw data and params reading `data_file`."""
    (dest / RAW.parent).mkdir(parents=True)
    shutil.copy2(repo.path / RAW, dest / RAW)
    params = yaml.safe_load((repo.path / "params.yaml").read_text())
    params["ingest"] = {"source": "file", "path": str(data_file)}
    params_path = dest / "params.yaml"
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    return dest / RAW, params_path


def contract_frame(path: Path) -> pd.DataFrame:
    """What the features stage reads from a raw file: the contract's frame."""
    return to_contract_frame(pd.read_parquet(path), ContractLimits())


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_file_ingest_refuses_a_bad_file_clearly_and_keeps_the_raw_data(
    case: Case, repo: PipelineRepo, files: dict[str, Path], run, tmp_path: Path
):
    path = files[case.name]
    raw, params = scratch_project(repo, tmp_path / "project", path)
    before = md5(raw)

    proc = run(repo, tmp_path / "project", "ingest", "--params", str(params))

    if case.expect is None:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        # The same transactions as the clean file gives, whatever the spelling.
        clean_raw, clean_params = scratch_project(repo, tmp_path / "clean", files["clean"])
        ok = run(repo, tmp_path / "clean", "ingest", "--params", str(clean_params))
        assert ok.returncode == 0, ok.stderr
        pd.testing.assert_frame_equal(contract_frame(raw), contract_frame(clean_raw))
        OUTCOMES[f"ingest: {case.name}"] = "read as the clean transactions"
    else:
        assert_clear_error(proc, path, ("ingest.path", *case.expect))
        assert md5(raw) == before
        OUTCOMES[f"ingest: {case.name}"] = "refused: " + proc.stderr.splitlines()[0][:100]
    strays = [p.name for p in raw.parent.iterdir() if p.name.endswith(".tmp")]
    assert strays == []


@pytest.fixture(scope="module")
def clean_scores(repo: PipelineRepo, files: dict[str, Path], tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("clean-scores") / "scores.csv"
    proc = run_process(
        repo, repo.path, "score", "--input", str(files["clean"]), "--output", str(out)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return pd.read_csv(out)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_batch_scoring_refuses_a_bad_file_clearly_and_keeps_the_previous_scores(
    case: Case, repo: PipelineRepo, files: dict[str, Path], clean_scores, run, tmp_path: Path
):
    path = files[case.name]
    output = tmp_path / "scores.csv"
    clean_scores.to_csv(output, index=False)  # the scores of an earlier run
    before = md5(output)

    proc = run(repo, repo.path, "score", "--input", str(path), "--output", str(output))

    if case.expect is None:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        pd.testing.assert_frame_equal(pd.read_csv(output), clean_scores)
        OUTCOMES[f"score: {case.name}"] = "scored as the clean transactions"
    else:
        assert_clear_error(proc, path, ("--input", *case.expect))
        assert md5(output) == before
        OUTCOMES[f"score: {case.name}"] = "refused: " + proc.stderr.splitlines()[0][:100]
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]  # no temporary file left


@pytest.mark.parametrize("command", ["ingest", "score"])
def test_the_command_as_a_process_exits_1_with_one_error_line_naming_file_column_and_rows(
    command: str, repo: PipelineRepo, files: dict[str, Path], tmp_path: Path
):
    path = files["NaN amounts"]
    if command == "ingest":
        watched, params = scratch_project(repo, tmp_path / "project", path)
        before = md5(watched)
        proc = run_process(repo, tmp_path / "project", "ingest", "--params", str(params))
    else:
        watched = tmp_path / "scores.parquet"
        watched.write_bytes(b"the scores of an earlier run")
        before = md5(watched)
        proc = run_process(repo, repo.path, "score", "--input", str(path), "--output", str(watched))
    setting = "ingest.path" if command == "ingest" else "--input"
    assert_clear_error(proc, path, (setting, "TX_AMOUNT: must not be null (2 rows)", "row=3"))
    assert md5(watched) == before


def test_dvc_repro_on_a_bad_file_stops_at_ingest_and_changes_no_output(
    repo: PipelineRepo, files: dict[str, Path]
):
    outputs = [
        repo.path / p
        for p in (RAW, "data/features/transactions.parquet", "models/model.ubj", "dvc.lock")
    ]
    before = [md5(p) for p in outputs]
    params_file = repo.path / "params.yaml"
    original = params_file.read_text()
    path = files["NaN amounts"]
    try:
        params = yaml.safe_load(original)
        params["ingest"] = {"source": "file", "path": str(path)}
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        proc = repo.run("dvc", "repro", check=False)
        status = repo.run("dvc", "status", "ingest").stdout
    finally:
        params_file.write_text(original)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text
    assert str(path) in text and "TX_AMOUNT: must not be null (2 rows)" in text
    assert "Traceback" not in text
    assert [md5(p) for p in outputs] == before
    assert "changed" in status  # the stage is not recorded as done
    assert "up to date" in repo.run("dvc", "status").stdout
    OUTCOMES["dvc repro: NaN amounts"] = "stopped at ingest, every output unchanged"


def test_zz_print_the_count_of_bad_file_cases(capsys: pytest.CaptureFixture[str]):
    """Prints how many cases ran and what came of each (docs/reliability.md's figure)."""
    refused = sum(v.startswith("refused") for v in OUTCOMES.values())
    with capsys.disabled():
        print(f"\nbad data files: {len(OUTCOMES)} cases, {refused} refused with a clear error and")
        print(f"  nothing overwritten, {len(OUTCOMES) - refused} read as the clean transactions")
        for key, value in OUTCOMES.items():
            print(f"  {key}: {value}")
