"""The API's request model: `fraud.schema.TransactionRecord`, the data contract for one
transaction. Every rejection must name the offending field in the error's `loc`."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from fraud.schema import ContractLimits, TransactionRecord

VALID: dict[str, Any] = {
    "TRANSACTION_ID": 1_788_430,
    "TX_DATETIME": "2018-10-01T08:15:00",
    "CUSTOMER_ID": 4961,
    "TERMINAL_ID": 3412,
    "TX_AMOUNT": 57.16,
}


def errors_of(**changes: Any) -> list[ErrorDetails]:
    body = {**VALID, **changes}
    with pytest.raises(ValidationError) as exc:
        TransactionRecord.model_validate(body)
    return exc.value.errors()


def failing_fields(errors: list[ErrorDetails]) -> set[str]:
    return {str(e["loc"][0]) for e in errors if e["loc"]}


def test_valid_transaction_is_accepted_with_its_values():
    r = TransactionRecord.model_validate(VALID)
    assert r.model_dump() == {
        "TRANSACTION_ID": 1_788_430,
        "TX_DATETIME": dt.datetime(2018, 10, 1, 8, 15),
        "CUSTOMER_ID": 4961,
        "TERMINAL_ID": 3412,
        "TX_AMOUNT": 57.16,
    }


def test_valid_transaction_from_json_is_accepted():
    r = TransactionRecord.model_validate_json(
        '{"TRANSACTION_ID": 1, "TX_DATETIME": "2018-10-01T08:15:00", "CUSTOMER_ID": 2, '
        '"TERMINAL_ID": 3, "TX_AMOUNT": 0}'
    )
    assert r.TX_AMOUNT == 0.0


@pytest.mark.parametrize(
    ("given", "utc"),
    [
        ("2018-10-01T10:15:00+02:00", dt.datetime(2018, 10, 1, 8, 15)),
        ("2018-10-01T03:15:00-05:00", dt.datetime(2018, 10, 1, 8, 15)),
        ("2018-10-01T08:15:00Z", dt.datetime(2018, 10, 1, 8, 15)),
        ("2018-10-01T00:30:00+01:00", dt.datetime(2018, 9, 30, 23, 30)),
    ],
)
def test_datetime_with_time_zone_is_converted_to_naive_utc(given, utc):
    when = TransactionRecord.model_validate({**VALID, "TX_DATETIME": given}).TX_DATETIME
    assert when == utc
    assert when.tzinfo is None


def test_contract_limits_themselves_are_accepted():
    limits = ContractLimits()
    r = TransactionRecord.model_validate(
        {
            **VALID,
            "TX_AMOUNT": limits.max_amount,
            "TX_DATETIME": limits.min_datetime + "T00:00:00",
            "TRANSACTION_ID": 0,
            "CUSTOMER_ID": 2**63 - 1,
        }
    )
    assert r.model_dump()["TX_AMOUNT"] == limits.max_amount


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("TRANSACTION_ID", "not a number"),
        ("TRANSACTION_ID", 1.5),
        ("TRANSACTION_ID", [1]),
        ("CUSTOMER_ID", {"id": 1}),
        ("TERMINAL_ID", None),
        ("TX_AMOUNT", "fifty"),
        ("TX_AMOUNT", [57.16]),
        ("TX_DATETIME", {"date": "2018-10-01"}),
        ("TX_DATETIME", None),
    ],
)
def test_wrong_type_is_rejected_naming_the_field(field, value):
    assert failing_fields(errors_of(**{field: value})) == {field}


@pytest.mark.parametrize("field", list(VALID))
def test_missing_field_is_rejected_naming_the_field(field):
    body = {k: v for k, v in VALID.items() if k != field}
    with pytest.raises(ValidationError) as exc:
        TransactionRecord.model_validate(body)
    errors = exc.value.errors()
    assert [e["type"] for e in errors] == ["missing"]
    assert failing_fields(errors) == {field}


def test_negative_amount_is_rejected():
    errors = errors_of(TX_AMOUNT=-0.01)
    assert failing_fields(errors) == {"TX_AMOUNT"}
    assert errors[0]["type"] == "greater_than_equal"


def test_amount_above_contract_maximum_is_rejected():
    errors = errors_of(TX_AMOUNT=ContractLimits().max_amount + 0.01)
    assert failing_fields(errors) == {"TX_AMOUNT"}
    assert errors[0]["type"] == "less_than_equal"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_amount_is_rejected(value):
    errors = errors_of(TX_AMOUNT=value)
    assert failing_fields(errors) == {"TX_AMOUNT"}
    assert errors[0]["type"] == "finite_number"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_amount_in_json_is_rejected(literal):
    body = (
        '{"TRANSACTION_ID": 1, "TX_DATETIME": "2018-10-01T08:15:00", "CUSTOMER_ID": 2, '
        f'"TERMINAL_ID": 3, "TX_AMOUNT": {literal}}}'
    )
    with pytest.raises(ValidationError) as exc:
        TransactionRecord.model_validate_json(body)
    assert failing_fields(exc.value.errors()) == {"TX_AMOUNT"}


@pytest.mark.parametrize(
    "value", ["yesterday", "2018-13-01T00:00:00", "2018-10-01T25:00:00", "01/10/2018", ""]
)
def test_unparseable_datetime_is_rejected(value):
    assert failing_fields(errors_of(TX_DATETIME=value)) == {"TX_DATETIME"}


@pytest.mark.parametrize(
    "value",
    [
        "1999-12-31T23:59:59",
        "2100-01-01T00:00:00",
        "2150-06-01T00:00:00",
        "1970-01-01T00:00:00",
        "2000-01-01T00:30:00+01:00",  # 1999-12-31 23:30 UTC
    ],
)
def test_datetime_outside_contract_range_is_rejected(value):
    errors = errors_of(TX_DATETIME=value)
    assert failing_fields(errors) == {"TX_DATETIME"}
    assert "2000-01-01" in errors[0]["msg"] and "2100-01-01" in errors[0]["msg"]


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_datetime_whose_utc_instant_overflows_is_a_validation_error(value):
    assert failing_fields(errors_of(TX_DATETIME=value)) == {"TX_DATETIME"}


def test_unknown_field_is_rejected_naming_it():
    errors = errors_of(TX_FRAUD=1)
    assert failing_fields(errors) == {"TX_FRAUD"}
    assert errors[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize("field", ["TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID"])
def test_negative_id_is_rejected_naming_the_field(field):
    errors = errors_of(**{field: -1})
    assert failing_fields(errors) == {field}
    assert errors[0]["type"] == "greater_than_equal"


@pytest.mark.parametrize("field", ["TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID"])
def test_id_beyond_int64_is_rejected_naming_the_field(field):
    assert failing_fields(errors_of(**{field: 2**63})) == {field}


def test_every_bad_field_of_one_transaction_is_reported():
    errors = errors_of(TRANSACTION_ID=-5, TX_AMOUNT=-1, TX_DATETIME="never", extra="x")
    assert failing_fields(errors) == {"TRANSACTION_ID", "TX_AMOUNT", "TX_DATETIME", "extra"}
