"""Data tests of the contract validator: simulator output passes; each kind of bad row is
rejected with a message that names the column, the rule and the offending row."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud import schema
from fraud.schema import ContractLimits
from fraud.simulator import SimulatorConfig, simulate
from fraud.validation import (
    ContractViolationError,
    ValidationReport,
    Violation,
    to_contract_frame,
    validate_transactions,
)

LIMITS = ContractLimits()
BAD_ROW = 7  # position of the row each test breaks


@pytest.fixture(scope="session")
def good() -> pd.DataFrame:
    df = simulate(SimulatorConfig(n_customers=50, n_terminals=100, n_days=10, seed=2))
    assert df[schema.TX_FRAUD].sum() > 0
    return df


def _only_violation(report: ValidationReport) -> Violation:
    assert not report.ok
    assert len(report.violations) == 1, [v.describe() for v in report.violations]
    return report.violations[0]


def _assert_names_row(v: Violation, df: pd.DataFrame, row: int = BAD_ROW) -> None:
    """The violation's examples and message point at the offending row and its id."""
    assert v.rows == 1
    assert v.examples[0]["row"] == row
    text = v.describe()
    assert f"row={row}" in text
    tid = df[schema.TRANSACTION_ID].iloc[row]
    if not pd.isna(tid):
        assert v.examples[0][schema.TRANSACTION_ID] == pytest.approx(float(tid))


def test_validator_accepts_simulator_output(good: pd.DataFrame) -> None:
    report = validate_transactions(good, LIMITS)
    assert report.ok, [v.describe() for v in report.violations]
    assert report.rows == len(good)
    assert report.frauds == int(good[schema.TX_FRAUD].sum())
    assert report.first == str(good[schema.TX_DATETIME].min())
    assert report.last == str(good[schema.TX_DATETIME].max())
    assert report.as_dict()["ok"] is True


def test_validator_accepts_csv_text_of_simulator_output(good: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    good.to_csv(path, index=False)
    raw = pd.read_csv(path)  # TX_DATETIME comes back as text
    assert raw[schema.TX_DATETIME].dtype == object
    assert validate_transactions(raw, LIMITS).ok


@pytest.mark.parametrize("column", [*list(schema.RAW_COLUMNS), schema.TX_FRAUD])
def test_missing_required_column_is_named(good: pd.DataFrame, column: str) -> None:
    v = _only_violation(validate_transactions(good.drop(columns=column), LIMITS))
    assert v.column == column
    assert "required column is missing" in v.rule
    assert column in v.describe()


def test_missing_labels_are_accepted_when_labels_are_not_required(good: pd.DataFrame) -> None:
    unlabelled = good.drop(columns=[schema.TX_FRAUD, schema.TX_FRAUD_SCENARIO])
    report = validate_transactions(unlabelled, ContractLimits(require_labels=False))
    assert report.ok
    assert report.frauds is None


def _set(column: str, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def breaker(df: pd.DataFrame) -> pd.DataFrame:
        out = df.copy()
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            out[column] = out[column].astype(object)
        elif pd.api.types.is_integer_dtype(out[column]):
            fits = float(value).is_integer() and abs(float(value)) < 2**62
            out[column] = out[column].astype(np.int64 if fits else np.float64)
        out.loc[out.index[BAD_ROW], column] = value
        return out

    return breaker


# (column, value, words of the rule)
BAD_VALUES = [
    (schema.TX_AMOUNT, None, "must not be null"),
    (schema.TX_DATETIME, None, "must not be null"),
    (schema.CUSTOMER_ID, None, "must not be null"),
    (schema.TX_FRAUD, None, "must not be null"),
    (schema.TX_AMOUNT, "12,50", "must be a number (value does not parse)"),
    (schema.TERMINAL_ID, "T-17", "must be a number (value does not parse)"),
    (schema.TX_DATETIME, "not a date", "must be a datetime (value does not parse)"),
    (schema.TX_AMOUNT, -0.01, "must not be negative"),
    (schema.TX_AMOUNT, 100_000.01, "must not exceed validate.max_amount=100000"),
    (schema.TX_AMOUNT, np.inf, "must be finite"),
    (schema.TRANSACTION_ID, 7.5, "must be a whole number"),
    (schema.CUSTOMER_ID, 3.25, "must be a whole number"),
    (schema.TRANSACTION_ID, -7, "must not be negative"),
    (schema.TERMINAL_ID, -1, "must not be negative"),
    (schema.TX_FRAUD, 2, "must be 0 or 1"),
    (schema.TX_FRAUD_SCENARIO, -1, "must be a whole number from 0 to 127"),
    (schema.TX_FRAUD_SCENARIO, 1.5, "must be a whole number from 0 to 127"),
]


@pytest.mark.parametrize(("column", "value", "rule"), BAD_VALUES)
def test_bad_value_is_rejected_naming_column_rule_and_row(
    good: pd.DataFrame, column: str, value: object, rule: str
) -> None:
    bad = _set(column, value)(good)
    v = _only_violation(validate_transactions(bad, LIMITS))
    assert v.column == column
    assert rule in v.rule
    assert v.describe().startswith(f"{column}: {rule}")
    _assert_names_row(v, bad)


def test_unparseable_value_is_shown_as_the_user_wrote_it(good: pd.DataFrame) -> None:
    bad = _set(schema.TX_AMOUNT, "12,50")(good)
    v = _only_violation(validate_transactions(bad, LIMITS))
    assert v.examples[0][schema.TX_AMOUNT] == "12,50"


def test_amount_equal_to_max_amount_is_accepted(good: pd.DataFrame) -> None:
    assert validate_transactions(_set(schema.TX_AMOUNT, 100_000.0)(good), LIMITS).ok
    v = _only_violation(
        validate_transactions(_set(schema.TX_AMOUNT, 600.0)(good), ContractLimits(max_amount=500.0))
    )
    assert "max_amount=500" in v.rule


def test_negative_infinite_amount_is_rejected(good: pd.DataFrame) -> None:
    report = validate_transactions(_set(schema.TX_AMOUNT, -np.inf)(good), LIMITS)
    rules = {v.rule for v in report.violations}
    assert "must be finite" in rules
    assert all(v.column == schema.TX_AMOUNT for v in report.violations)


def test_missing_scenario_is_accepted_where_unknown(good: pd.DataFrame) -> None:
    bad = good.astype({schema.TX_FRAUD_SCENARIO: "float64"})
    bad.loc[bad.index[BAD_ROW], schema.TX_FRAUD_SCENARIO] = np.nan
    assert validate_transactions(bad, LIMITS).ok


def test_duplicate_transaction_id_names_the_second_occurrence(good: pd.DataFrame) -> None:
    bad = good.copy()
    bad.loc[bad.index[BAD_ROW], schema.TRANSACTION_ID] = bad[schema.TRANSACTION_ID].iloc[2]
    v = _only_violation(validate_transactions(bad, LIMITS))
    assert v.column == schema.TRANSACTION_ID
    assert "must be unique" in v.rule
    _assert_names_row(v, bad)


def test_out_of_order_timestamp_names_the_row_that_goes_back_in_time(good: pd.DataFrame) -> None:
    bad = good.copy()
    bad.loc[bad.index[BAD_ROW], schema.TX_DATETIME] = bad[schema.TX_DATETIME].iloc[
        BAD_ROW - 3
    ] - pd.Timedelta(seconds=1)
    v = _only_violation(validate_transactions(bad, LIMITS))
    assert v.column == schema.TX_DATETIME
    assert "time order" in v.rule
    _assert_names_row(v, bad)


def test_equal_timestamps_are_in_order(good: pd.DataFrame) -> None:
    bad = good.copy()
    bad.loc[bad.index[BAD_ROW], schema.TX_DATETIME] = bad[schema.TX_DATETIME].iloc[BAD_ROW - 1]
    assert validate_transactions(bad, LIMITS).ok


@pytest.mark.parametrize(
    ("row", "when"),
    [(0, "1999-12-31 23:59:59"), (-1, "2100-01-01 00:00:00")],
)
def test_datetime_out_of_range_is_rejected(good: pd.DataFrame, row: int, when: str) -> None:
    bad = good.copy()
    bad.loc[bad.index[row], schema.TX_DATETIME] = pd.Timestamp(when)
    v = _only_violation(validate_transactions(bad, LIMITS))
    assert v.column == schema.TX_DATETIME
    assert "must lie between 2000-01-01 and 2100-01-01" in v.rule
    _assert_names_row(v, bad, row % len(bad))


def test_many_bad_rows_are_counted_with_a_few_examples(good: pd.DataFrame) -> None:
    bad = good.copy()
    bad[schema.TX_AMOUNT] = -bad[schema.TX_AMOUNT] - 1
    v = _only_violation(validate_transactions(bad, LIMITS))
    assert v.rows == len(bad)
    assert len(v.examples) == 5
    assert [e["row"] for e in v.examples] == [0, 1, 2, 3, 4]


def test_several_rules_broken_are_all_reported(good: pd.DataFrame) -> None:
    bad = _set(schema.TX_FRAUD, 3)(_set(schema.TX_AMOUNT, -5.0)(good))
    report = validate_transactions(bad, LIMITS)
    assert {(v.column, v.rule) for v in report.violations} == {
        (schema.TX_AMOUNT, "must not be negative"),
        (schema.TX_FRAUD, "must be 0 or 1"),
    }
    assert report.frauds is None


# ------------------------------------------------------------------------------------------
# to_contract_frame


def test_to_contract_frame_returns_contract_dtypes_from_csv_text(
    good: pd.DataFrame, tmp_path: Path
) -> None:
    path = tmp_path / "tx.csv"
    good.to_csv(path, index=False)
    out = to_contract_frame(pd.read_csv(path), LIMITS)
    expected = {**schema.RAW_COLUMNS, **schema.LABEL_COLUMNS}
    assert {c: str(t) for c, t in out.dtypes.items()} == expected
    pd.testing.assert_frame_equal(out, good)


def test_to_contract_frame_drops_extra_columns_and_marks_unknown_scenarios(
    good: pd.DataFrame,
) -> None:
    raw = good.assign(NOTE="x").astype({schema.TX_FRAUD_SCENARIO: "float64"})
    raw.loc[raw.index[BAD_ROW], schema.TX_FRAUD_SCENARIO] = np.nan
    out = to_contract_frame(raw, LIMITS)
    assert "NOTE" not in out.columns
    assert out[schema.TX_FRAUD_SCENARIO].dtype == np.int8
    assert out[schema.TX_FRAUD_SCENARIO].iloc[BAD_ROW] == -1


def test_to_contract_frame_raises_an_error_naming_every_broken_column(good: pd.DataFrame) -> None:
    bad = _set(schema.TX_FRAUD, 3)(_set(schema.TX_AMOUNT, "abc")(good))
    with pytest.raises(ContractViolationError) as err:
        to_contract_frame(bad, LIMITS)
    message = str(err.value)
    assert "2 data contract violation(s)" in message
    assert f"{schema.TX_AMOUNT}: must be a number" in message
    assert f"{schema.TX_FRAUD}: must be 0 or 1" in message
    assert f"row={BAD_ROW}" in message
    assert len(err.value.report.violations) == 2


def test_scenario_code_that_does_not_fit_the_contract_dtype_is_rejected(good: pd.DataFrame) -> None:
    bad = _set(schema.TX_FRAUD_SCENARIO, 300)(good)
    report = validate_transactions(bad, LIMITS)
    assert not report.ok, (
        f"accepted; to_contract_frame gives {to_contract_frame(bad, LIMITS)[schema.TX_FRAUD_SCENARIO].iloc[BAD_ROW]}"
    )


def test_id_that_does_not_fit_int64_is_rejected(good: pd.DataFrame) -> None:
    bad = _set(schema.TRANSACTION_ID, float(2**63))(good)
    report = validate_transactions(bad, LIMITS)
    assert not report.ok, (
        f"accepted; to_contract_frame gives {to_contract_frame(bad, LIMITS)[schema.TRANSACTION_ID].iloc[BAD_ROW]}"
    )
