"""The feature configuration (params.yaml `features:`) and the column names it gives.

Every feature's name is built here, once per configuration (`FeatureConfig.names`); the
offline, one-transaction and batch implementations all take their names from it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fraud import schema

DAY_SECONDS = 86_400
HOUR_SECONDS = 3_600


class FeatureConfig(BaseModel):
    """Which features to compute (params.yaml `features:`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    customer_windows_days: tuple[int, ...] = (1, 7, 30)
    terminal_windows_days: tuple[int, ...] = (1, 7, 30)
    #: Days before a fraud label is known (the handbook's delay period).
    delay_days: int = Field(7, ge=0)
    #: A transaction at or before this hour (0-23) is a night transaction (handbook: 6).
    night_end_hour: int = Field(6, ge=0, le=23)
    #: Window of the customer's own history behind the amount ratio, z-score and
    #: customer-terminal novelty features (0 disables them; with terminal_fraud_window_days 0
    #: too, the features are the handbook's 15).
    history_window_days: int = Field(30, ge=0)
    #: Count the customer's previous transactions, within this many days, whose amount was more
    #: than `high_amount_ratio` times their own history's mean (0 disables; needs the history).
    high_amount_window_days: int = Field(14, ge=0)
    high_amount_ratio: float = Field(3.0, gt=0)
    #: Smallest standard deviation of a customer's amounts used by the z-score (currency units).
    zscore_min_std: float = Field(1.0, gt=0)
    #: Terminal fraud recency over (t - delay - w, t - delay]: number of known frauds and the age
    #: in days of the first and last of them (0 disables). Compromises last weeks: the age tells
    #: the model when one is probably over.
    terminal_fraud_window_days: int = Field(28, ge=0)

    @field_validator("customer_windows_days", "terminal_windows_days")
    @classmethod
    def _positive_sorted(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(w <= 0 for w in v):
            raise ValueError("window sizes must be positive numbers of days")
        return tuple(sorted(set(v)))

    def feature_names(self) -> list[str]:
        """The model's input columns, in order."""
        return list(self.names.ordered)

    @property
    def names(self) -> FeatureNames:
        """Every feature's column name under this configuration (built once per configuration)."""
        return _names_of(self)

    @property
    def lookback_days(self) -> int:
        """How much history the features of a transaction need."""
        return max(self.customer_keep_days, self.terminal_keep_days)

    @property
    def customer_keep_days(self) -> int:
        """Days of a customer's history that any customer feature reads."""
        # The high-amount count looks back `high_amount_window_days` at transactions whose own
        # ratio needed `history_window_days` before them.
        high = (
            self.high_amount_window_days + self.history_window_days
            if self.high_amount_feature
            else 0
        )
        return max(max(self.customer_windows_days, default=0), self.history_window_days, high)

    @property
    def terminal_keep_days(self) -> int:
        """Days of a terminal's history that any terminal feature reads (delay included)."""
        return self.delay_days + max(
            max(self.terminal_windows_days, default=0), self.terminal_fraud_window_days
        )

    @property
    def high_amount_feature(self) -> bool:
        """Whether the count of previous high amounts is computed (it needs the history)."""
        return bool(self.history_window_days and self.high_amount_window_days)


class CustomerWindowNames(NamedTuple):
    """The columns of one customer window (t - days, t], the current transaction included."""

    days: int
    nb_tx: str
    avg_amount: str


class TerminalWindowNames(NamedTuple):
    """The columns of one terminal window (t - delay - days, t - delay]."""

    days: int
    nb_tx: str
    risk: str


class HistoryNames(NamedTuple):
    """The columns read from the customer's previous transactions within `days`."""

    days: int
    amount_ratio: str
    amount_zscore: str
    hours_since_prev_tx: str
    customer_terminal_nb_prev_tx: str
    #: Window of the count of previous high amounts (0 and None when it is disabled).
    high_amount_days: int
    nb_prev_high_amount: str | None


class TerminalFraudNames(NamedTuple):
    """The columns of the terminal's known frauds in (t - delay - days, t - delay]."""

    days: int
    nb_fraud: str
    first_fraud_age: str
    last_fraud_age: str


@dataclass(frozen=True)
class FeatureNames:
    """Every feature's column name for one configuration, by family; None for a family the
    configuration disables. `ordered` is the model's input columns, in order."""

    amount: str
    weekend: str
    night: str
    customer_windows: tuple[CustomerWindowNames, ...]
    terminal_windows: tuple[TerminalWindowNames, ...]
    history: HistoryNames | None
    terminal_fraud: TerminalFraudNames | None
    ordered: tuple[str, ...]


@functools.lru_cache(maxsize=64)
def _names_of(cfg: FeatureConfig) -> FeatureNames:
    # Cached by the (frozen, hashable) configuration: the one-transaction path asks per call.
    customer_windows = tuple(
        CustomerWindowNames(
            w, f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW", f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"
        )
        for w in cfg.customer_windows_days
    )
    terminal_windows = tuple(
        TerminalWindowNames(
            w, f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW", f"TERMINAL_ID_RISK_{w}DAY_WINDOW"
        )
        for w in cfg.terminal_windows_days
    )
    history = None
    if h := cfg.history_window_days:
        hw = cfg.high_amount_window_days if cfg.high_amount_feature else 0
        history = HistoryNames(
            h,
            f"CUSTOMER_ID_AMOUNT_RATIO_{h}DAY",
            f"CUSTOMER_ID_AMOUNT_ZSCORE_{h}DAY",
            "CUSTOMER_ID_HOURS_SINCE_PREV_TX",
            f"CUSTOMER_TERMINAL_NB_PREV_TX_{h}DAY",
            hw,
            f"CUSTOMER_ID_NB_PREV_HIGH_AMOUNT_{hw}DAY" if hw else None,
        )
    terminal_fraud = None
    if fw := cfg.terminal_fraud_window_days:
        terminal_fraud = TerminalFraudNames(
            fw,
            f"TERMINAL_ID_NB_FRAUD_{fw}DAY_WINDOW",
            f"TERMINAL_ID_FIRST_FRAUD_AGE_{fw}DAY_WINDOW",
            f"TERMINAL_ID_LAST_FRAUD_AGE_{fw}DAY_WINDOW",
        )
    amount, weekend, night = schema.TX_AMOUNT, "TX_DURING_WEEKEND", "TX_DURING_NIGHT"
    ordered = [amount, weekend, night]
    for cw in customer_windows:
        ordered += [cw.nb_tx, cw.avg_amount]
    for tw in terminal_windows:
        ordered += [tw.nb_tx, tw.risk]
    if history is not None:
        ordered += [
            history.amount_ratio,
            history.amount_zscore,
            history.hours_since_prev_tx,
            history.customer_terminal_nb_prev_tx,
        ]
        if history.nb_prev_high_amount is not None:
            ordered.append(history.nb_prev_high_amount)
    if terminal_fraud is not None:
        ordered += [
            terminal_fraud.nb_fraud,
            terminal_fraud.first_fraud_age,
            terminal_fraud.last_fraud_age,
        ]
    return FeatureNames(
        amount=amount,
        weekend=weekend,
        night=night,
        customer_windows=customer_windows,
        terminal_windows=terminal_windows,
        history=history,
        terminal_fraud=terminal_fraud,
        ordered=tuple(ordered),
    )
