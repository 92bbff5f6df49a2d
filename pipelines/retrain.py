"""Retraining on production data (pure: no I/O): the training data grown by a production window,
and a split that follows the data instead of fixed dates.

Overlaps between the base data and the production file are handled this way:

* a transaction id present in both with the same content (time, customer, terminal, amount,
  label) is the same transaction exported twice (e.g. overlapping export windows): the base's
  row is kept and the production copy dropped;
* an id present in both with a different content is an error naming the ids: two different
  transactions cannot share an id, and silently keeping either would train on a guess;
* the production rows that remain must not start before the base's last transaction: a row in
  the middle of the base period would change the point-in-time features of base rows that were
  already trained on, and means the file is not production data that follows the base.

The split keeps params' train / delay / test / validation lengths and moves them so that the test
window ends at the end of the data's last day: the model trains on the latest labelled weeks.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from fraud import schema
from pipelines.params import Params, SplitParams

#: The columns that identify a transaction's content, compared for ids in both frames.
CONTENT_COLUMNS = (*schema.RAW_COLUMNS, schema.TX_FRAUD)
_MAX_NAMED = 10


class ProductionDataError(ValueError):
    """The production data cannot be combined with the base data; the message says why."""


class DataTooShortError(ValueError):
    """The data spans fewer days than the split needs; the message names both."""


def _named(ids: pd.Series | list[int]) -> str:
    ids = sorted(int(i) for i in ids)
    more = f" and {len(ids) - _MAX_NAMED} more" if len(ids) > _MAX_NAMED else ""
    return ", ".join(str(i) for i in ids[:_MAX_NAMED]) + more


def combine_with_production(base: pd.DataFrame, production: pd.DataFrame) -> pd.DataFrame:
    """`base` with `production`'s transactions appended (both labelled contract frames, e.g.
    `fraud.validation.to_contract_frame(..., require_labels=True)`), sorted by time then id.

    The result has `base`'s columns; production rows without TX_FRAUD_SCENARIO (a real fraud's
    scenario is not known) leave it null, as the contract allows ("where given"), so the column
    becomes the nullable Int8; `to_contract_frame` reads such nulls as -1.
    Raises ProductionDataError naming the ids present in both with a different content, the
    missing columns, or the production rows earlier than the base's last transaction.
    """
    for name, frame in (("base", base), ("production", production)):
        missing = [c for c in CONTENT_COLUMNS if c not in frame.columns]
        if missing:
            raise ProductionDataError(f"{name} data lacks the column(s) {', '.join(missing)}")
    prod = production.copy()
    base = base.copy()
    for col in base.columns:
        if col not in prod.columns:
            if col != schema.TX_FRAUD_SCENARIO:
                raise ProductionDataError(f"production data lacks the column {col}")
            prod[col] = pd.Series(pd.NA, index=prod.index, dtype="Int8")
            base[col] = base[col].astype("Int8")
    prod = prod[list(base.columns)].astype(base.dtypes.to_dict())

    dup_in_prod = prod[schema.TRANSACTION_ID].duplicated(keep=False)
    if dup_in_prod.any():
        dups = prod.loc[dup_in_prod]
        conflicting = dups.drop_duplicates(list(CONTENT_COLUMNS))[schema.TRANSACTION_ID]
        conflicting = conflicting[conflicting.duplicated()]
        if len(conflicting):
            raise ProductionDataError(
                "production data has different transactions under one TRANSACTION_ID: "
                + _named(conflicting.unique().tolist())
            )
        prod = prod.drop_duplicates(schema.TRANSACTION_ID)

    cols = list(CONTENT_COLUMNS)
    shared = prod[schema.TRANSACTION_ID].isin(base[schema.TRANSACTION_ID])
    if shared.any():
        both = prod.loc[shared, cols].merge(
            base[cols], on=schema.TRANSACTION_ID, suffixes=("", "_base")
        )
        differs = pd.Series(False, index=both.index)
        for c in cols[1:]:
            differs |= both[c].ne(both[f"{c}_base"])
        if differs.any():
            raise ProductionDataError(
                "TRANSACTION_ID(s) present in the base and the production data with a different "
                f"content ({', '.join(cols[1:])}): {_named(both.loc[differs, cols[0]].tolist())}"
            )
        prod = prod.loc[~shared]

    if len(prod) and len(base):
        base_end = base[schema.TX_DATETIME].max()
        early = prod[schema.TX_DATETIME] < base_end
        if early.any():
            raise ProductionDataError(
                f"{int(early.sum())} production transaction(s) are earlier than the base data's "
                f"last transaction ({base_end}), from {prod.loc[early, schema.TX_DATETIME].min()}"
                f" (ids {_named(prod.loc[early, schema.TRANSACTION_ID].tolist())}): production "
                "data must follow the data the model was trained on"
            )
    out = pd.concat([base, prod], ignore_index=True)
    return out.sort_values(
        [schema.TX_DATETIME, schema.TRANSACTION_ID], kind="stable", ignore_index=True
    )


def split_following_data(data: pd.DataFrame, split: SplitParams) -> SplitParams:
    """`split`'s lengths, placed so that the test window ends at the end of `data`'s last day.

    Raises DataTooShortError when the data's first day is after the train window's start (the
    data spans fewer days than train + delay + test)."""
    if data.empty:
        raise DataTooShortError("the data is empty: no split can follow it")
    times = data[schema.TX_DATETIME]
    first: dt.date = times.min().date()
    last: dt.date = times.max().date()
    test_end = last + dt.timedelta(days=1)
    needed = split.train_days + split.delay_days + split.test_days
    train_start = test_end - dt.timedelta(days=needed)
    if train_start < first:
        have = (test_end - first).days
        raise DataTooShortError(
            f"the data spans {have} day(s) ({first} .. {last}) but the split needs {needed} "
            f"(split.train_days {split.train_days} + split.delay_days {split.delay_days} + "
            f"split.test_days {split.test_days}), from {train_start} to {last}"
        )
    return split.model_copy(update={"train_start": train_start})


def params_following_data(params: Params, data: pd.DataFrame) -> Params:
    """`params` with the split following `data`, and the prequential protocol moved with it (its
    last fold keeps its place relative to the split)."""
    split = split_following_data(data, params.split)
    shift = split.train_start - params.split.train_start
    pq = params.evaluate.prequential
    evaluate = params.evaluate.model_copy(
        update={
            "prequential": pq.model_copy(update={"last_train_start": pq.last_train_start + shift})
        }
    )
    return params.model_copy(update={"split": split, "evaluate": evaluate})
