"""Time-based splits: train window, delay gap, test window. Never random.

The handbook's protocol (chapter 5): a model trained on [start, start + train_days) is tested on
the days after a delay gap of `delay_days`, during which labels are not yet known. Cards known to
be compromised before a test day (frauds in the training window, or in the delay window up to the
day before) are removed from that test day: investigators have already blocked them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

from fraud import schema


@dataclass(frozen=True)
class TimeSplit:
    """Dates of one train / delay / test split."""

    train_start: dt.date
    train_days: int
    delay_days: int
    test_days: int

    @property
    def train_end(self) -> dt.date:
        return self.train_start + dt.timedelta(days=self.train_days)

    @property
    def test_start(self) -> dt.date:
        return self.train_end + dt.timedelta(days=self.delay_days)

    @property
    def test_end(self) -> dt.date:
        return self.test_start + dt.timedelta(days=self.test_days)

    def shifted(self, days: int) -> TimeSplit:
        """The same split moved by `days` (negative: earlier)."""
        return TimeSplit(
            self.train_start + dt.timedelta(days=days),
            self.train_days,
            self.delay_days,
            self.test_days,
        )

    def describe(self) -> dict[str, str]:
        return {
            "train": f"{self.train_start} .. {self.train_end - dt.timedelta(days=1)}",
            "delay": f"{self.train_end} .. {self.test_start - dt.timedelta(days=1)}",
            "test": f"{self.test_start} .. {self.test_end - dt.timedelta(days=1)}",
        }


def _between(df: pd.DataFrame, start: dt.date, end: dt.date) -> pd.Series:
    t = df[schema.TX_DATETIME]
    return (t >= pd.Timestamp(start)) & (t < pd.Timestamp(end))


def train_test_frames(
    df: pd.DataFrame, split: TimeSplit, remove_known_compromised: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training rows and the test rows of `split` (handbook's `get_train_test_set`)."""
    train = df[_between(df, split.train_start, split.train_end)]
    if not remove_known_compromised:
        return train, df[_between(df, split.test_start, split.test_end)]
    known = set(train.loc[train[schema.TX_FRAUD] == 1, schema.CUSTOMER_ID].unique())
    parts = []
    for d in range(split.test_days):
        day = split.test_start + dt.timedelta(days=d)
        # Frauds of the delay window's day d-1 are known on test day d (handbook's rule).
        seen_day = split.train_end + dt.timedelta(days=d - 1)
        seen = df[_between(df, seen_day, seen_day + dt.timedelta(days=1))]
        known |= set(seen.loc[seen[schema.TX_FRAUD] == 1, schema.CUSTOMER_ID].unique())
        test_day = df[_between(df, day, day + dt.timedelta(days=1))]
        parts.append(test_day[~test_day[schema.CUSTOMER_ID].isin(known)])
    test = pd.concat(parts) if parts else df.iloc[0:0]
    return train, test


def prequential_splits(
    last: TimeSplit, n_folds: int, step_days: int | None = None
) -> list[TimeSplit]:
    """`n_folds` splits ending with `last`, each shifted back by `step_days` (default test_days)."""
    step = step_days or last.test_days
    return [last.shifted(-step * i) for i in range(n_folds)]
