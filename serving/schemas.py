"""The API's request and response bodies (the transaction itself is the data contract's
`fraud.schema.TransactionRecord`)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fraud.schema import TransactionRecord, utc_naive_in_range


class Contribution(BaseModel):
    feature: str
    value: float | None
    contribution: float


class Prediction(BaseModel):
    TRANSACTION_ID: int
    fraud_probability: float
    is_fraud: bool = Field(description="decision at the model's threshold")
    threshold: float
    model_name: str
    model_version: str
    model_alias: str | None
    contributions: list[Contribution] | None = Field(
        None, description="top per-feature contributions (log-odds), with ?explain=true"
    )


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transactions: list[TransactionRecord] = Field(min_length=1)


class BatchResponse(BaseModel):
    predictions: list[Prediction]


class Feedback(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"TRANSACTION_ID": 1_788_430, "is_fraud": True}]},
    )
    TRANSACTION_ID: int = Field(ge=0, le=2**63 - 1)
    is_fraud: bool
    known_at: dt.datetime | None = Field(
        None, description="when the label became known (default: now)"
    )

    @field_validator("known_at")
    @classmethod
    def _known_at_utc(cls, v: dt.datetime | None) -> dt.datetime | None:
        # Naive UTC from here on: the route stores it as it is.
        return None if v is None else utc_naive_in_range(v)


class FeedbackResponse(BaseModel):
    TRANSACTION_ID: int
    recorded: bool
    seen_by_this_service: bool
