"""Retraining's pure parts: growing the data with production rows, and a split that follows it;
and the production file's checks that fail the retraining flow before any training."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pandas as pd
import pytest

from fraud import schema
from fraud.schema import ContractLimits
from fraud.transactions_file import TransactionsFileError
from fraud.validation import ContractViolationError, validate_transactions
from pipelines.flows import read_production
from pipelines.params import Params, SplitParams
from pipelines.retrain import (
    DataTooShortError,
    ProductionDataError,
    combine_with_production,
    params_following_data,
    split_following_data,
)


def frame(ids, days, fraud=None, amounts=None, scenario=True) -> pd.DataFrame:
    """Contract rows: one transaction per id at noon of the given day of June 2018."""
    n = len(ids)
    out = pd.DataFrame(
        {
            schema.TRANSACTION_ID: pd.Series(ids, dtype="int64"),
            schema.TX_DATETIME: pd.to_datetime([f"2018-06-{d:02d} 12:00" for d in days]),
            schema.CUSTOMER_ID: pd.Series(range(n), dtype="int64"),
            schema.TERMINAL_ID: pd.Series(range(n), dtype="int64"),
            schema.TX_AMOUNT: pd.Series(amounts or [10.0] * n, dtype="float64"),
            schema.TX_FRAUD: pd.Series(fraud or [0] * n, dtype="int8"),
        }
    )
    if scenario:
        out[schema.TX_FRAUD_SCENARIO] = out[schema.TX_FRAUD].astype("int8")
    return out


def test_combine_appends_production_rows_sorted_by_time_with_null_scenario():
    base = frame([1, 2], [1, 2], fraud=[0, 1])
    prod = frame([4, 3], [5, 3], fraud=[1, 0], scenario=False)
    out = combine_with_production(base, prod)
    assert out[schema.TRANSACTION_ID].tolist() == [1, 2, 3, 4]
    assert out[schema.TX_FRAUD].tolist() == [0, 1, 0, 1]
    assert out[schema.TX_FRAUD_SCENARIO].tolist() == [0, 1, pd.NA, pd.NA]
    assert list(out.columns) == list(base.columns)
    assert validate_transactions(out, ContractLimits()).ok  # the contract allows null scenarios


def test_combine_drops_production_rows_identical_to_base_rows():
    base = frame([1, 2], [1, 2])
    prod = frame([2, 3], [2, 3], scenario=False)
    prod.loc[0, schema.CUSTOMER_ID] = 1  # id 2's row exactly as in base
    prod.loc[0, schema.TERMINAL_ID] = 1
    out = combine_with_production(base, prod)
    assert out[schema.TRANSACTION_ID].tolist() == [1, 2, 3]


def test_combine_names_ids_in_both_with_a_different_content():
    base = frame([1, 2], [1, 2])
    prod = frame([2, 3], [2, 3], fraud=[1, 0])
    prod.loc[0, [schema.CUSTOMER_ID, schema.TERMINAL_ID]] = 1
    with pytest.raises(ProductionDataError, match=r"different content .*: 2$"):
        combine_with_production(base, prod)


def test_combine_names_ids_repeated_in_production_with_different_content():
    base = frame([1], [1])
    prod = frame([5, 5], [3, 4])
    with pytest.raises(ProductionDataError, match="under one TRANSACTION_ID: 5"):
        combine_with_production(base, prod)


def test_combine_refuses_production_rows_earlier_than_the_base_end():
    base = frame([1, 2], [1, 10])
    prod = frame([3, 4], [5, 11])
    with pytest.raises(ProductionDataError, match=r"1 production transaction\(s\) .*\(ids 3\)"):
        combine_with_production(base, prod)


def test_combine_names_a_missing_label_column():
    base = frame([1], [1])
    with pytest.raises(ProductionDataError, match="production data lacks the column"):
        combine_with_production(base, frame([2], [2]).drop(columns=[schema.TX_FRAUD]))


def _days(first: dt.date, last: dt.date) -> pd.DataFrame:
    times = pd.date_range(
        pd.Timestamp(first), pd.Timestamp(last) + pd.Timedelta(hours=23), freq="6h"
    )
    return pd.DataFrame({schema.TX_DATETIME: times})


def test_split_follows_the_data_so_the_test_window_ends_on_its_last_day():
    split = SplitParams(train_days=14, delay_days=7, test_days=7, validation_days=4)
    out = split_following_data(_days(dt.date(2018, 4, 1), dt.date(2018, 7, 7)), split)
    s = out.split()
    assert s.test_end == dt.date(2018, 7, 8)  # exclusive: the test window includes 2018-07-07
    assert s.describe()["test"] == "2018-07-01 .. 2018-07-07"
    assert (out.train_days, out.delay_days, out.test_days, out.validation_days) == (14, 7, 7, 4)
    assert out.train_start == dt.date(2018, 6, 10)


def test_split_of_data_exactly_as_long_as_the_split_starts_on_its_first_day():
    split = SplitParams(train_days=14, delay_days=7, test_days=7)
    out = split_following_data(_days(dt.date(2018, 6, 1), dt.date(2018, 6, 28)), split)
    assert out.train_start == dt.date(2018, 6, 1)


def test_split_of_too_short_data_names_the_days_needed():
    split = SplitParams(train_days=14, delay_days=7, test_days=7)
    with pytest.raises(DataTooShortError, match=r"spans 27 day\(s\) .* needs 28"):
        split_following_data(_days(dt.date(2018, 6, 2), dt.date(2018, 6, 28)), split)


def test_params_following_data_move_the_prequential_folds_with_the_split():
    params = Params()
    out = params_following_data(params, _days(dt.date(2018, 4, 1), dt.date(2018, 9, 30)))
    shift = out.split.train_start - params.split.train_start
    assert out.split.split().test_end == dt.date(2018, 10, 1)
    pq = out.evaluate.prequential
    assert pq.last_train_start == params.evaluate.prequential.last_train_start + shift
    assert out.train == params.train


def test_reading_a_missing_production_file_names_the_setting(tmp_path):
    with pytest.raises(TransactionsFileError, match=r"production_path: .*does not exist"):
        read_production.fn(str(tmp_path / "missing.parquet"), None, Params())


def test_reading_production_without_labels_is_a_contract_violation(tmp_path):
    path = tmp_path / "p.parquet"
    frame([1, 2], [1, 2]).drop(columns=[schema.TX_FRAUD, schema.TX_FRAUD_SCENARIO]).to_parquet(path)
    with pytest.raises(ContractViolationError, match=schema.TX_FRAUD):
        read_production.fn(str(path), None, Params())


def test_deploy_dry_run_prints_the_deployment_monitoring_triggers(capsys):
    from pipelines.deploy import main

    assert main(["--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["name"] == "retraining/production"
    assert out["entrypoint"] == "pipelines/flows.py:retraining"
    assert out["parameters"]["workdir"] == "runs/retrain"


def test_deploy_refuses_without_a_prefect_server(monkeypatch, capsys):
    from pipelines.deploy import main

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert main([]) == 1
    assert "PREFECT_API_URL is not set" in capsys.readouterr().err


def test_version_tags_name_the_production_data_only_when_given():
    from fraud.registry import contract, version_tags

    common: dict[str, Any] = dict(
        git_commit="c",
        data_md5="d",
        params_sha256="p",
        train_window="t",
        test_window="w",
        threshold=0.5,
        features=["a"],
        decision="challenger",
        reason="r",
    )
    plain = version_tags(**common)
    assert contract.TAG_PRODUCTION_MD5 not in plain
    assert contract.TAG_PRODUCTION_WINDOW not in plain
    tags = version_tags(**common, production_md5="abc", production_window="2018-10-01..2018-10-28")
    assert tags[contract.TAG_PRODUCTION_MD5] == "abc"
    assert tags[contract.TAG_PRODUCTION_WINDOW] == "2018-10-01..2018-10-28"
