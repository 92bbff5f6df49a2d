"""The batch implementation: the online definition vectorised over a list of transactions.

`batch_features` gives each transaction of a batch the features `online_features` would give
it if the ones before it in the list had been scored and recorded first. The in-process state
and the Redis store call it for every request of more than one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from fraud.features.config import DAY_SECONDS, FeatureConfig
from fraud.features.formulas import (
    amount_ratios,
    amount_zscores,
    during_night,
    during_weekend,
    is_high_amount,
    population_variances,
    prefix_sums,
    terminal_risks,
)
from fraud.features.records import (
    CUSTOMER_RECORD,
    TERMINAL_RECORD,
    customer_record,
    terminal_record,
)
from fraud.features.store import Transaction, tx_seconds

_GROUP_SHIFT = np.int64(40)  # time offsets below 2**40 s; group numbers above
_TIME_MASK = (np.int64(1) << _GROUP_SHIFT) - 1


class FeatureBatch(Sequence[dict[str, float]]):
    """The features of a batch of transactions, by column (`columns[name]`: float64, one value
    per transaction, in order). A sequence of per-transaction dicts for callers that want rows;
    `matrix` gives the model's input in one step, without building them."""

    __slots__ = ("_rows", "columns", "names")

    def __init__(self, columns: dict[str, np.ndarray]) -> None:
        self.columns = columns
        self.names = list(columns)
        self._rows: list[dict[str, float]] | None = None

    def __len__(self) -> int:
        return len(self.columns[self.names[0]]) if self.names else 0

    def rows(self) -> list[dict[str, float]]:
        """Every transaction's features as a dict (built once)."""
        if self._rows is None:
            names = self.names
            values = zip(*(self.columns[k].tolist() for k in names), strict=True)
            self._rows = [dict(zip(names, row, strict=True)) for row in values]
        return self._rows

    def __getitem__(self, i):  # type: ignore[no-untyped-def,override]
        return self.rows()[i]

    def __iter__(self) -> Iterator[dict[str, float]]:
        return iter(self.rows())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FeatureBatch):
            other = other.rows()
        return isinstance(other, list) and self.rows() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FeatureBatch({len(self)} transactions, {len(self.names)} features)"

    def matrix(self, names: Sequence[str], dtype: type = np.float32) -> np.ndarray:
        """The features in `names` order, one row per transaction."""
        out: np.ndarray = np.empty((len(self), len(names)), dtype=dtype)
        for j, name in enumerate(names):
            out[:, j] = self.columns[name]
        return out


class _Batch(NamedTuple):
    """A batch's transactions by column, in list order."""

    seconds: np.ndarray
    customer: np.ndarray
    terminal: np.ndarray
    amount: np.ndarray
    #: whether the transaction's fraud label is already known (it arrived before it)
    labelled: np.ndarray


def batch_features(
    cfg: FeatureConfig,
    txs: Sequence[Transaction],
    customers: Mapping[int, bytes | bytearray],
    terminals: Mapping[int, bytes | bytearray],
    frauds: Mapping[int, Iterable[int]],
    labels: Mapping[int, bool] | None = None,
    seconds: Sequence[int] | None = None,
) -> FeatureBatch:
    """The features of each transaction of `txs`, in order, each as if the ones before it in
    `txs` had been recorded first: the online definition, vectorised over the batch.

    `customers[c]`: customer c's earlier transactions (CUSTOMER_RECORD bytes, arrival order);
    `terminals[term]`: the terminal's (TERMINAL_RECORD bytes); `frauds[term]`: times of its
    transactions labelled fraud; `labels`: labels already known for transactions of `txs`;
    `seconds`: `tx_seconds` of each transaction, when the caller has them. Records later than a
    transaction's time (arrived out of order) are ignored for it; the windows are those of
    `compute_features`, which `tests/fraud/test_features_parity.py` checks.

    When every customer's and every terminal's transactions in `txs` are in time order (a
    stream's batch), the batch's own transactions are merged into the stored records and each
    window is one `searchsorted` over the whole batch (`_merged_features`). Otherwise a later
    entry could be recorded before an earlier one with an older time (and with `delay_days` 0 a
    label of the batch could count in the same second), and the batch is computed in waves of
    transactions that share no customer and no terminal (`_waves`).
    """
    if not txs:
        return FeatureBatch({name: np.empty(0) for name in cfg.names.ordered})
    size = len(txs)
    if seconds is None:
        seconds = [tx_seconds(tx.tx_datetime) for tx in txs]
    batch = _Batch(
        seconds=np.fromiter(seconds, dtype=np.int64, count=size),
        customer=np.fromiter((tx.customer_id for tx in txs), dtype=np.int64, count=size),
        terminal=np.fromiter((tx.terminal_id for tx in txs), dtype=np.int64, count=size),
        amount=np.fromiter((tx.amount for tx in txs), dtype=np.float64, count=size),
        labelled=(
            np.fromiter(
                (bool(labels.get(int(tx.transaction_id))) for tx in txs), dtype=bool, count=size
            )
            if labels
            else np.zeros(size, dtype=bool)
        ),
    )
    if cfg.delay_days and _entity_order_kept(batch.seconds, batch.customer, batch.terminal):
        return FeatureBatch(_merged_features(cfg, batch, customers, terminals, frauds))
    return FeatureBatch(_waves(cfg, txs, batch, customers, terminals, frauds))


def _entity_order_kept(seconds: np.ndarray, *entities: np.ndarray) -> bool:
    """Whether, for each entity of each grouping, the batch's times never go back in list
    order (true of a stream in time order, whatever the entities interleave)."""
    for entity in entities:
        order = np.argsort(entity, kind="stable")
        by_entity, times = entity[order], seconds[order]
        if bool(((by_entity[1:] == by_entity[:-1]) & (times[1:] < times[:-1])).any()):
            return False
    return True


def _wave_numbers(customers: Sequence[int], terminals: Sequence[int]) -> list[int]:
    """Split a batch into waves: a transaction goes one wave after the last earlier one that
    shares its customer or terminal, so no two transactions of a wave depend on each other."""
    last_of_customer: dict[int, int] = {}
    last_of_terminal: dict[int, int] = {}
    waves = []
    for c, term in zip(customers, terminals, strict=True):
        w = max(last_of_customer.get(c, -1), last_of_terminal.get(term, -1)) + 1
        last_of_customer[c] = last_of_terminal[term] = w
        waves.append(w)
    return waves


def _waves(
    cfg: FeatureConfig,
    txs: Sequence[Transaction],
    batch: _Batch,
    customers: Mapping[int, bytes | bytearray],
    terminals: Mapping[int, bytes | bytearray],
    frauds: Mapping[int, Iterable[int]],
) -> dict[str, np.ndarray]:
    """`batch_features` in waves: each wave's transactions share no customer and no terminal,
    and are recorded before the next wave."""
    seconds, customer_ids, terminal_ids, amounts = (a.tolist() for a in batch[:4])
    out: dict[str, np.ndarray] = {}
    customer_blobs = dict(customers)
    terminal_blobs = dict(terminals)
    fraud_times = {k: list(v) for k, v in frauds.items()}
    by_wave: dict[int, list[int]] = {}
    for i, w in enumerate(_wave_numbers(customer_ids, terminal_ids)):
        by_wave.setdefault(w, []).append(i)
    last_wave = max(by_wave)
    for w in sorted(by_wave):
        idx = by_wave[w]
        # One wave shares no customer and no terminal: merged features, labels of this batch
        # only for the waves after the one that records them.
        wave = _Batch(
            batch.seconds[idx],
            batch.customer[idx],
            batch.terminal[idx],
            batch.amount[idx],
            np.zeros(len(idx), dtype=bool),
        )
        cols = _merged_features(cfg, wave, customer_blobs, terminal_blobs, fraud_times)
        for name, values in cols.items():
            if name not in out:
                out[name] = np.empty(len(txs), dtype=np.float64)
            out[name][idx] = values
        if w == last_wave:
            break
        for i in idx:
            # Record the transaction for the waves after this one.
            c, term, t = customer_ids[i], terminal_ids[i], seconds[i]
            customer_blobs[c] = customer_blobs.get(c, b"") + customer_record(t, amounts[i], term)
            terminal_blobs[term] = terminal_blobs.get(term, b"") + terminal_record(
                t, int(txs[i].transaction_id)
            )
            if batch.labelled[i]:
                fraud_times.setdefault(term, []).append(t)
    return out


def _merged_features(
    cfg: FeatureConfig,
    batch: _Batch,
    customers: Mapping[int, bytes | bytearray],
    terminals: Mapping[int, bytes | bytearray],
    frauds: Mapping[int, Iterable[int]],
) -> dict[str, np.ndarray]:
    """`batch_features` of a batch whose entities' times never go back, in one pass.

    Every window sum is the sum over two sorted runs: the stored run, the stored records of the
    transaction's customer (or terminal), one group per transaction as if each were alone; the
    batch run, the batch's own records sorted by (entity, time, arrival), of which those before
    the transaction's own record arrived before it.
    """
    names = cfg.names
    cols: dict[str, np.ndarray] = {
        names.amount: batch.amount,
        names.weekend: during_weekend(batch.seconds).astype(np.float64),
        names.night: during_night(batch.seconds, cfg.night_end_hour).astype(np.float64),
    }
    cols.update(_customer_columns(cfg, batch, customers))
    cols.update(_terminal_columns(cfg, batch, terminals, frauds))
    return cols


def _customer_columns(
    cfg: FeatureConfig, batch: _Batch, customers: Mapping[int, bytes | bytearray]
) -> dict[str, np.ndarray]:
    """The customer features of `_merged_features`: windows (t - w, t], the transaction
    included, and the history of previous transactions."""
    names, day = cfg.names, DAY_SECONDS
    seconds, amounts = batch.seconds, batch.amount
    size = len(seconds)
    tx_index = np.arange(size, dtype=np.int64)
    cols: dict[str, np.ndarray] = {}

    # The stored run: each transaction's group holds its customer's stored records.
    stored, stored_starts = _grouped(
        [customers.get(c, b"") for c in batch.customer.tolist()], CUSTOMER_RECORD
    )
    group_sizes = np.diff(np.r_[stored_starts, len(stored)])
    far = cfg.customer_keep_days * day + 1
    base = min(int(seconds.min()) - far, int(stored["t"].min()) if len(stored) else 0)
    stored, stored_key = _sorted_by_key(
        stored, _keys(np.repeat(tx_index, group_sizes), stored["t"], base)
    )
    stored_seconds, stored_amounts = stored["t"], stored["amount"]
    tx_stored_key = _keys(tx_index, seconds, base)
    stored_end = np.searchsorted(stored_key, tx_stored_key, side="right")  # records up to t
    # The batch run: the batch's own records by (customer, time, arrival).
    _, customer_group = np.unique(batch.customer, return_inverse=True)
    batch_order = np.lexsort((tx_index, seconds, customer_group))
    batch_key = _keys(customer_group[batch_order], seconds[batch_order], base)
    batch_seconds, batch_amounts = seconds[batch_order], amounts[batch_order]
    batch_end = np.empty(size, dtype=np.int64)
    batch_end[batch_order] = tx_index  # the transaction's own place in the batch run
    tx_batch_key = _keys(customer_group, seconds, base)

    def window_starts(days: int) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.searchsorted(stored_key, tx_stored_key - days * day, side="right"),
            np.searchsorted(batch_key, tx_batch_key - days * day, side="right"),
        )

    def window_sums(
        stored_prefix: np.ndarray,
        batch_prefix: np.ndarray,
        stored_lo: np.ndarray,
        batch_lo: np.ndarray,
    ) -> np.ndarray:
        return (
            (stored_prefix[stored_end] - stored_prefix[stored_lo])
            + (batch_prefix[batch_end] - batch_prefix[batch_lo])
        ).astype(np.float64)

    stored_amount_prefix = prefix_sums(stored_amounts)
    batch_amount_prefix = prefix_sums(batch_amounts)
    for cw in names.customer_windows:
        stored_lo, batch_lo = window_starts(cw.days)
        count = ((stored_end - stored_lo) + (batch_end - batch_lo) + 1).astype(np.float64)
        cols[cw.nb_tx] = count
        cols[cw.avg_amount] = (
            window_sums(stored_amount_prefix, batch_amount_prefix, stored_lo, batch_lo) + amounts
        ) / count
    history = names.history
    if history is None:
        return cols
    h = history.days
    stored_lo, batch_lo = window_starts(h)
    prev_count = (stored_end - stored_lo) + (batch_end - batch_lo)
    prev_sum = window_sums(stored_amount_prefix, batch_amount_prefix, stored_lo, batch_lo)
    prev_sumsq = window_sums(
        prefix_sums(stored_amounts * stored_amounts),
        prefix_sums(batch_amounts * batch_amounts),
        stored_lo,
        batch_lo,
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        prev_mean = prev_sum / prev_count
    prev_variance = population_variances(prev_sum, prev_sumsq, prev_count)
    cols[history.amount_ratio] = amount_ratios(amounts, prev_mean, prev_count)
    cols[history.amount_zscore] = amount_zscores(
        amounts, prev_mean, prev_variance, prev_count, cfg.zscore_min_std
    )

    has_stored = stored_end > stored_starts
    batch_first = np.searchsorted(batch_key, tx_batch_key & ~_TIME_MASK, side="left")
    has_batch = batch_end > batch_first  # the customer's first record in the batch run is older
    last = np.where(
        has_stored,
        stored_seconds[np.maximum(stored_end - 1, 0)] if len(stored_seconds) else 0,
        np.iinfo(np.int64).min,
    )
    last = np.where(has_batch, np.maximum(last, batch_seconds[np.maximum(batch_end - 1, 0)]), last)
    cols[history.hours_since_prev_tx] = np.where(
        has_stored | has_batch, (seconds - last) / 3600.0, np.nan
    )

    # Stored records at the transaction's terminal, as prefix counts over the stored run.
    stored_same_terminal = np.zeros(len(stored) + 1, dtype=np.int64)
    np.cumsum(
        stored["terminal"] == batch.terminal[stored_key >> _GROUP_SHIFT],
        out=stored_same_terminal[1:],
    )
    # The batch's earlier records of the same customer at the same terminal.
    pair_order = np.lexsort((tx_index, seconds, batch.terminal, customer_group))
    pair_customer, pair_terminal = customer_group[pair_order], batch.terminal[pair_order]
    new_pair = np.r_[
        True,
        (pair_customer[1:] != pair_customer[:-1]) | (pair_terminal[1:] != pair_terminal[:-1]),
    ]
    pair_key = _keys(np.cumsum(new_pair) - 1, seconds[pair_order], base)
    pair_end = np.empty(size, dtype=np.int64)
    pair_end[pair_order] = tx_index
    pair_lo = np.searchsorted(pair_key, pair_key[pair_end] - h * day, side="right")
    cols[history.customer_terminal_nb_prev_tx] = (
        (stored_same_terminal[stored_end] - stored_same_terminal[stored_lo]) + (pair_end - pair_lo)
    ).astype(np.float64)

    if history.nb_prev_high_amount is None:
        return cols
    hw = history.high_amount_days
    high_lo, batch_high_lo = window_starts(hw)
    # Was each stored record in a 14-day window a high amount against the history before it?
    # That history is the stored records before it and the batch's records older than it (a
    # stored record can be newer than some of the batch's when batches arrive out of time
    # order; all of those arrived before the transaction).
    stored_tx = stored_key >> _GROUP_SHIFT  # the transaction whose group holds the record
    candidates = (
        np.flatnonzero(stored_seconds > seconds[stored_tx] - hw * day)
        if len(stored_seconds)
        else tx_index[:0]
    )
    stored_high_prefix = np.zeros(len(stored) + 1, dtype=np.int64)
    if len(candidates):
        candidate_lo = np.searchsorted(stored_key, stored_key[candidates] - h * day, side="right")
        candidate_count = candidates - candidate_lo
        candidate_sum = (
            stored_amount_prefix[candidates] - stored_amount_prefix[candidate_lo]
        ).astype(np.float64)
        # Stored records newer than their customer's first record in the batch run.
        late = np.flatnonzero(
            stored_seconds[candidates] > batch_seconds[batch_first[stored_tx[candidates]]]
        )
        if len(late):
            late_key = _keys(
                customer_group[stored_tx[candidates[late]]],
                stored_seconds[candidates[late]],
                base,
            )
            batch_hi = np.searchsorted(batch_key, late_key, side="left")
            batch_lo = np.searchsorted(batch_key, late_key - h * day, side="right")
            candidate_count[late] += batch_hi - batch_lo
            candidate_sum[late] += (
                batch_amount_prefix[batch_hi] - batch_amount_prefix[batch_lo]
            ).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            candidate_mean = candidate_sum / candidate_count
        stored_high = np.zeros(len(stored), dtype=np.int64)
        stored_high[candidates] = is_high_amount(
            stored_amounts[candidates], candidate_mean, candidate_count, cfg.high_amount_ratio
        )
        np.cumsum(stored_high, out=stored_high_prefix[1:])
    # A batch record's history is the transaction's own: its flag is its own ratio's.
    batch_high_prefix = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(
        is_high_amount(amounts, prev_mean, prev_count, cfg.high_amount_ratio)[batch_order],
        out=batch_high_prefix[1:],
    )
    cols[history.nb_prev_high_amount] = (
        (stored_high_prefix[stored_end] - stored_high_prefix[high_lo])
        + (batch_high_prefix[batch_end] - batch_high_prefix[batch_high_lo])
    ).astype(np.float64)
    return cols


def _terminal_columns(
    cfg: FeatureConfig,
    batch: _Batch,
    terminals: Mapping[int, bytes | bytearray],
    frauds: Mapping[int, Iterable[int]],
) -> dict[str, np.ndarray]:
    """The terminal features of `_merged_features`: windows (t - delay - w, t - delay]."""
    names, day = cfg.names, DAY_SECONDS
    seconds, labelled = batch.seconds, batch.labelled
    size = len(seconds)
    tx_index = np.arange(size, dtype=np.int64)
    terminal_ids = batch.terminal.tolist()
    cols: dict[str, np.ndarray] = {}

    # The stored runs: each transaction's group holds its terminal's records and fraud times.
    stored, stored_starts = _grouped([terminals.get(t, b"") for t in terminal_ids], TERMINAL_RECORD)
    stored_group = np.repeat(tx_index, np.diff(np.r_[stored_starts, len(stored)]))
    fraud_lists = [list(frauds.get(t, ())) for t in terminal_ids]
    fraud_counts = np.fromiter((len(f) for f in fraud_lists), dtype=np.int64, count=size)
    fraud_seconds = np.fromiter(
        (x for f in fraud_lists for x in f), dtype=np.int64, count=int(fraud_counts.sum())
    )
    window_end = seconds - cfg.delay_days * day
    fraud_window = names.terminal_fraud
    far = (
        cfg.delay_days
        + max(max(cfg.terminal_windows_days, default=0), cfg.terminal_fraud_window_days)
    ) * day + 1
    base = min(
        int(seconds.min()) - far,
        int(stored["t"].min()) if len(stored) else 0,
        int(fraud_seconds.min()) if len(fraud_seconds) else 0,
    )
    stored_key = np.sort(_keys(stored_group, stored["t"], base))
    stored_fraud_key = np.sort(_keys(np.repeat(tx_index, fraud_counts), fraud_seconds, base))
    tx_stored_end_key = _keys(tx_index, window_end, base)
    # The batch run: the batch's records by (terminal, time, arrival). A transaction never
    # counts its own record or later ones (with delay 0 they are in range); labels of the
    # batch's own transactions (`labelled`) count like stored ones.
    _, terminal_group = np.unique(batch.terminal, return_inverse=True)
    batch_order = np.lexsort((tx_index, seconds, terminal_group))
    batch_key = _keys(terminal_group[batch_order], seconds[batch_order], base)
    batch_own = np.empty(size, dtype=np.int64)
    batch_own[batch_order] = tx_index
    batch_fraud_key = np.sort(_keys(terminal_group[labelled], seconds[labelled], base))
    tx_batch_end_key = _keys(terminal_group, window_end, base)

    stored_hi = np.searchsorted(stored_key, tx_stored_end_key, side="right")
    batch_hi = np.minimum(np.searchsorted(batch_key, tx_batch_end_key, side="right"), batch_own)
    stored_fraud_hi = np.searchsorted(stored_fraud_key, tx_stored_end_key, side="right")
    batch_fraud_hi = np.searchsorted(batch_fraud_key, tx_batch_end_key, side="right")
    for tw in names.terminal_windows:
        span = tw.days * day
        stored_lo = np.searchsorted(stored_key, tx_stored_end_key - span, side="right")
        batch_lo = np.searchsorted(batch_key, tx_batch_end_key - span, side="right")
        stored_fraud_lo = np.searchsorted(stored_fraud_key, tx_stored_end_key - span, side="right")
        batch_fraud_lo = np.searchsorted(batch_fraud_key, tx_batch_end_key - span, side="right")
        count = ((stored_hi - stored_lo) + (batch_hi - batch_lo)).astype(np.float64)
        cols[tw.nb_tx] = count
        cols[tw.risk] = terminal_risks(
            (stored_fraud_hi - stored_fraud_lo) + (batch_fraud_hi - batch_fraud_lo), count
        )
    if fraud_window is None:
        return cols
    span = fraud_window.days * day
    stored_fraud_lo = np.searchsorted(stored_fraud_key, tx_stored_end_key - span, side="right")
    batch_fraud_lo = np.searchsorted(batch_fraud_key, tx_batch_end_key - span, side="right")
    stored_nb = stored_fraud_hi - stored_fraud_lo
    batch_nb = batch_fraud_hi - batch_fraud_lo
    first = np.full(size, np.iinfo(np.int64).max, dtype=np.int64)
    last = np.full(size, np.iinfo(np.int64).min, dtype=np.int64)
    for fraud_key, lo, hi, has in (
        (stored_fraud_key, stored_fraud_lo, stored_fraud_hi, stored_nb > 0),
        (batch_fraud_key, batch_fraud_lo, batch_fraud_hi, batch_nb > 0),
    ):
        if len(fraud_key):
            times = (fraud_key & _TIME_MASK) + base
            first = np.where(
                has, np.minimum(first, times[np.minimum(lo, len(fraud_key) - 1)]), first
            )
            last = np.where(has, np.maximum(last, times[np.maximum(hi - 1, 0)]), last)
    total = stored_nb + batch_nb
    cols[fraud_window.nb_fraud] = total.astype(np.float64)
    cols[fraud_window.first_fraud_age] = np.where(total > 0, (seconds - first) / day, np.nan)
    cols[fraud_window.last_fraud_age] = np.where(total > 0, (seconds - last) / day, np.nan)
    return cols


def _grouped(blobs: Sequence[bytes | bytearray], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-entity record blobs: the records and each entity's start offset."""
    lens = np.fromiter((len(b) for b in blobs), dtype=np.int64, count=len(blobs))
    lens //= dtype.itemsize
    starts = np.zeros(len(blobs), dtype=np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    return np.frombuffer(b"".join(blobs), dtype=dtype), starts


def _keys(group: np.ndarray, seconds: np.ndarray, base: int) -> np.ndarray:
    """One sortable int64 per record: its group, then its time since `base`."""
    return (group << _GROUP_SHIFT) | (seconds - base)


def _sorted_by_key(records: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Records and keys in key order (as they are when every record arrived in time order)."""
    if len(key) > 1 and bool((key[1:] < key[:-1]).any()):  # some arrived out of time order
        order = np.argsort(key, kind="stable")
        return records[order], key[order]
    return records, key
