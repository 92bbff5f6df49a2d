"""The in-process online feature state: each entity's records in memory, in one process.

The default feature store of the API (`serving.feature_store.RedisFeatureStore` is the shared
one). Its transaction index is a `ShardedDict`, so that no request waits for a big dict to grow.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

import numpy as np
import pandas as pd

from fraud.features.batch import batch_features
from fraud.features.config import DAY_SECONDS, FeatureConfig
from fraud.features.online import online_features
from fraud.features.records import (
    CUSTOMER_RECORD,
    EMPTY_CUSTOMER_RECORDS,
    EMPTY_TIMES,
    TERMINAL_RECORD,
    customer_record,
    history_records,
    last_time,
    leading_stale,
    sort_by_time,
    terminal_record,
)
from fraud.features.store import DuplicateTransactionError, Transaction, tx_seconds

V = TypeVar("V")
_CUSTOMER_SIZE = CUSTOMER_RECORD.itemsize
_TERMINAL_SIZE = TERMINAL_RECORD.itemsize


class ShardedDict(Generic[V]):
    """A dict of integer keys split into 2**`bits` dicts by a hash of the key.

    A dict grows by rehashing every entry at once, and one whose old entries are deleted (an
    eviction queue) rebuilds itself now and then at the same size: measured, the caller of the
    insertion that grows a dict stalls 23 ms at 0.7 million entries, 84 ms at 2.8 million, and
    proportionally beyond (a lookback of busy days holds tens of millions). Split, each part
    grows on its own, so no insertion rehashes more than about 1/2**`bits` of the entries. The
    part is chosen by a hash of the key, not its low bits: consecutive ids spread by their low
    bits would keep the parts at equal sizes, so every part would grow within the same few
    hundred insertions (one batch request would wait for all of them); hashed, the parts' sizes
    differ a little and their growths spread over several batches. Measured
    (`benchmarks/serving/state_stalls.py`, 3 million insertions, 1.5 million kept): worst
    single insertion 0.6 ms instead of 83-97, worst run of 1,000 insertions 17-18 ms instead of
    83-97; 0.6 µs per insertion instead of 0.13.
    """

    __slots__ = ("_mask", "_shards")

    def __init__(self, bits: int = 8) -> None:
        self._mask = (1 << bits) - 1
        self._shards: list[dict[int, V]] = [{} for _ in range(1 << bits)]

    def get(self, key: int, default: V | None = None) -> V | None:
        return self._shards[hash((key,)) & self._mask].get(key, default)

    def __contains__(self, key: int) -> bool:
        return key in self._shards[hash((key,)) & self._mask]

    def __getitem__(self, key: int) -> V:
        return self._shards[hash((key,)) & self._mask][key]

    def __setitem__(self, key: int, value: V) -> None:
        self._shards[hash((key,)) & self._mask][key] = value

    def pop(self, key: int, default: V | None = None) -> V | None:
        return self._shards[hash((key,)) & self._mask].pop(key, default)

    def present(self, keys: Iterable[int]) -> list[int]:
        """The keys of `keys` that are in the dict, in order."""
        shards, mask = self._shards, self._mask
        return [k for k in keys if k in shards[hash((k,)) & mask]]

    def update(self, pairs: Iterable[tuple[int, V]]) -> None:
        shards, mask = self._shards, self._mask
        for key, value in pairs:
            shards[hash((key,)) & mask][key] = value

    def __len__(self) -> int:
        return sum(map(len, self._shards))


class OnlineFeatureState:
    """The in-process feature state: per-entity records in memory (one process).

    `features_many(txs)` returns the features of each transaction given everything recorded
    before it and then records it. Fraud labels arrive separately (`add_label`) and count for
    terminal risk only once the transaction is older than the delay, as offline; a label that
    arrives before its transaction is kept until the transaction does. State older than the
    lookback is evicted. A customer's records are kept in time order (a late arrival is sorted
    in), so that the batch features never sort them.
    """

    #: Labels waiting for their transaction, at most (the oldest are dropped beyond).
    MAX_PENDING_LABELS = 1_000_000

    def __init__(self, cfg: FeatureConfig) -> None:
        self.cfg = cfg
        self._cust: dict[int, bytearray] = {}
        self._term: dict[int, bytearray] = {}
        self._frauds: dict[int, dict[int, int]] = {}
        # id -> (terminal, seconds) of every transaction in the lookback
        self._txs: ShardedDict[tuple[int, int]] = ShardedDict()
        self._order: deque[tuple[int, int]] = deque()  # (seconds, id), for eviction
        self._pending: dict[int, bool] = {}
        self._newest = 0
        self._cust_keep = cfg.customer_keep_days * DAY_SECONDS
        self._term_keep = cfg.terminal_keep_days * DAY_SECONDS
        self._keep = cfg.lookback_days * DAY_SECONDS

    # -- state updates --------------------------------------------------------------------
    def add_label(self, transaction_id: int, is_fraud: bool) -> bool:
        """Record a (late) fraud label; False when the transaction has not arrived (yet)."""
        tid = int(transaction_id)
        known = self._txs.get(tid)
        if known is None:
            self._pending[tid] = bool(is_fraud)
            if len(self._pending) > self.MAX_PENDING_LABELS:
                del self._pending[next(iter(self._pending))]
            return False
        terminal, t = known
        if is_fraud:
            self._frauds.setdefault(terminal, {})[tid] = t
        else:
            self._frauds.get(terminal, {}).pop(tid, None)
        return True

    def seen(self, transaction_id: int) -> bool:
        """Whether the transaction is recorded (within the lookback)."""
        return int(transaction_id) in self._txs

    def observe(self, tx: Transaction) -> None:
        """Record a transaction without computing its features."""
        self._record(
            int(tx.transaction_id),
            tx_seconds(tx.tx_datetime),
            int(tx.customer_id),
            int(tx.terminal_id),
            float(tx.amount),
        )

    def seed(self, history: pd.DataFrame) -> None:
        """Load recent history (contract schema, with TX_FRAUD where labels are known)."""
        rec = history_records(history)
        for c, blob in rec.customers.items():
            self._cust.setdefault(c, bytearray()).extend(blob)
        for term, blob in rec.terminals.items():
            self._term.setdefault(term, bytearray()).extend(blob)
        for term, fr in rec.frauds.items():
            self._frauds.setdefault(term, {}).update(fr)
        for tid, term, t in rec.transactions:
            self._txs[tid] = (term, t)
            self._order.append((t, tid))
        self._newest = max(self._newest, rec.newest)
        self._evict()

    def _record(self, tid: int, t: int, customer: int, terminal: int, amount: float) -> None:
        customer_blob = self._cust.get(customer)
        if customer_blob is None:
            customer_blob = self._cust[customer] = bytearray()
        late = len(customer_blob) and last_time(customer_blob, _CUSTOMER_SIZE) > t
        customer_blob += customer_record(t, amount, terminal)
        if late:
            sort_by_time(customer_blob)
        terminal_blob = self._term.get(terminal)
        if terminal_blob is None:
            terminal_blob = self._term[terminal] = bytearray()
        terminal_blob += terminal_record(t, tid)
        self._txs[tid] = (terminal, t)
        self._order.append((t, tid))
        if self._pending and self._pending.pop(tid, False):
            self._frauds.setdefault(terminal, {})[tid] = t
        if t > self._newest:
            self._newest = t
            self._evict()
        self._trim(customer_blob, _CUSTOMER_SIZE, t - self._cust_keep)
        self._trim(terminal_blob, _TERMINAL_SIZE, t - self._term_keep)

    def _record_many(self, txs: Sequence[Transaction], ts: Sequence[int] | None = None) -> None:
        """`_record` of each transaction in order, with the per-record work done once per
        batch: records packed by numpy, one trim per entity (at its newest time in the batch:
        trims only ever drop records at or before a cutoff, so the last one decides), one
        eviction (the horizon only moves forward)."""
        if len(txs) < 8:
            for tx in txs:
                self.observe(tx)
            return
        ids = [int(tx.transaction_id) for tx in txs]
        if ts is None:
            ts = [tx_seconds(tx.tx_datetime) for tx in txs]
        customers = [int(tx.customer_id) for tx in txs]
        terminals = [int(tx.terminal_id) for tx in txs]
        customer_records = np.empty(len(txs), dtype=CUSTOMER_RECORD)
        customer_records["t"] = ts
        customer_records["amount"] = [float(tx.amount) for tx in txs]
        customer_records["terminal"] = terminals
        terminal_records = np.empty(len(txs), dtype=TERMINAL_RECORD)
        terminal_records["t"], terminal_records["id"] = ts, ids
        customer_bytes = memoryview(customer_records.tobytes())
        terminal_bytes = memoryview(terminal_records.tobytes())
        csize, tsize = _CUSTOMER_SIZE, _TERMINAL_SIZE
        cust, term = self._cust, self._term
        customer_newest: dict[int, int] = {}
        terminal_newest: dict[int, int] = {}
        late: dict[int, bytearray] = {}
        for k, (c, tm, t) in enumerate(zip(customers, terminals, ts, strict=True)):
            customer_blob = cust.get(c)
            if customer_blob is None:
                customer_blob = cust[c] = bytearray()
            elif len(customer_blob) and last_time(customer_blob, csize) > t:
                late[c] = customer_blob
            customer_blob += customer_bytes[k * csize : (k + 1) * csize]
            terminal_blob = term.get(tm)
            if terminal_blob is None:
                terminal_blob = term[tm] = bytearray()
            terminal_blob += terminal_bytes[k * tsize : (k + 1) * tsize]
            if customer_newest.get(c, t) <= t:
                customer_newest[c] = t
            if terminal_newest.get(tm, t) <= t:
                terminal_newest[tm] = t
        self._txs.update(zip(ids, zip(terminals, ts, strict=True), strict=True))
        self._order.extend(zip(ts, ids, strict=True))
        if self._pending:
            for tid, tm, t in zip(ids, terminals, ts, strict=True):
                if self._pending.pop(tid, False):
                    self._frauds.setdefault(tm, {})[tid] = t
        newest = max(ts)
        if newest > self._newest:
            self._newest = newest
            self._evict()
        for customer_blob in late.values():  # older than what was recorded (concurrent requests)
            sort_by_time(customer_blob)
        trim = self._trim
        for c, t in customer_newest.items():
            trim(cust[c], csize, t - self._cust_keep)
        for tm, t in terminal_newest.items():
            trim(term[tm], tsize, t - self._term_keep)

    @staticmethod
    def _trim(blob: bytearray, itemsize: int, cutoff: int) -> None:
        # Trim in chunks: only once the 16th record is stale (most calls read 8 bytes).
        at = 16 * itemsize
        if len(blob) > at and int.from_bytes(blob[at : at + 8], "little", signed=True) <= cutoff:
            k = leading_stale(blob, itemsize, cutoff)
            if k:
                del blob[: k * itemsize]

    def _evict(self) -> None:
        horizon = self._newest - self._keep
        order, txs = self._order, self._txs
        while order and order[0][0] <= horizon:
            _, tid = order.popleft()
            known = txs.pop(tid, None)
            if known is not None:
                fr = self._frauds.get(known[0])
                if fr is not None and fr.pop(tid, None) is not None and not fr:
                    del self._frauds[known[0]]

    # -- features ---------------------------------------------------------------------------
    def features(self, tx: Transaction) -> dict[str, float]:
        """The features of one transaction, which is then recorded (`features_many` of one)."""
        return self.features_many([tx])[0]

    def features_many(self, txs: Sequence[Transaction]) -> Sequence[dict[str, float]]:
        """Features of each transaction in order, each recorded before the next; refuses the
        whole list (recording nothing) if an id was already seen or repeats."""
        ids = [int(tx.transaction_id) for tx in txs]
        dup = self._txs.present(ids)
        if dup or len(set(ids)) != len(ids):
            seen: set[int] = set()
            dup += [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
            raise DuplicateTransactionError(dup)
        ts = [tx_seconds(tx.tx_datetime) for tx in txs] if len(txs) > 1 else None
        out = self._compute(txs, ts)
        self._record_many(txs, ts)
        return out

    async def afeatures_many(self, txs: Sequence[Transaction]) -> Sequence[dict[str, float]]:
        """`features_many` for asyncio callers (the in-process state never waits)."""
        return self.features_many(txs)

    def close(self) -> None:
        """Nothing to release (the interface of `FeatureStore`)."""

    def _compute(
        self, txs: Sequence[Transaction], seconds: Sequence[int] | None = None
    ) -> Sequence[dict[str, float]]:
        """The features of `txs` from the state, without recording them."""
        cust, term, fr = self._cust, self._term, self._frauds
        if len(txs) == 1:
            tx = txs[0]
            customer_blob = cust.get(int(tx.customer_id))
            terminal_blob = term.get(int(tx.terminal_id))
            fraud_times = fr.get(int(tx.terminal_id))
            return [
                online_features(
                    self.cfg,
                    tx_seconds(tx.tx_datetime),
                    float(tx.amount),
                    int(tx.terminal_id),
                    np.frombuffer(customer_blob, dtype=CUSTOMER_RECORD)
                    if customer_blob
                    else EMPTY_CUSTOMER_RECORDS,
                    np.frombuffer(terminal_blob, dtype=TERMINAL_RECORD)["t"]
                    if terminal_blob
                    else EMPTY_TIMES,
                    np.fromiter(fraud_times.values(), dtype=np.int64, count=len(fraud_times))
                    if fraud_times
                    else EMPTY_TIMES,
                )
            ]
        customers = {int(tx.customer_id) for tx in txs}
        terminals = {int(tx.terminal_id) for tx in txs}
        pending = self._pending
        return batch_features(
            self.cfg,
            txs,
            {c: cust[c] for c in customers if c in cust},
            {t: term[t] for t in terminals if t in term},
            {t: fr[t].values() for t in terminals if t in fr},
            {int(tx.transaction_id): True for tx in txs if pending.get(int(tx.transaction_id))}
            if pending
            else None,
            seconds,
        )
