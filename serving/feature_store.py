"""The online feature state in Redis, shared by every worker and replica of the API.

It stores the same raw records as the in-process `fraud.features.OnlineFeatureState`, in the
same binary layout, and computes features with the same function (`online_features`): only
where the records live differs.

Keys (`{prefix}` is `FRAUD_REDIS_PREFIX`, default `fraud`):

* `{prefix}:c:{customer}`: the customer's recent transactions, CUSTOMER_RECORD bytes appended;
* `{prefix}:t:{terminal}`: the terminal's recent transactions, TERMINAL_RECORD bytes appended;
* `{prefix}:f:{terminal}`: hash {transaction id: seconds} of its transactions labelled fraud;
* `{prefix}:x:{transaction}`: "terminal seconds" of every recent transaction (duplicates,
  and which terminal a late label belongs to);
* `{prefix}:l:{transaction}`: a label that arrived before its transaction;
* `{prefix}:seeded`: set once the history published with the model has been loaded.

Every script first checks `{prefix}:seeded` and refuses (`FRAUD_UNSEEDED`) without it: a Redis
that restarted without its data would otherwise give features computed from nothing, silently.
The store then answers BackendUnavailableError ("has lost its state") and seeds Redis again
from the model's history in the background (the first worker to see it; the others wait), as
a restart of the API would: the transactions recorded since the model's history are lost.

One Lua script per transaction, one round trip: it refuses a repeated id, drops the records
older than the lookback from the front, returns the customer's and terminal's records and the
terminal's fraud times, and appends the new transaction; all atomically, so concurrent workers
each see every transaction that was recorded before theirs. Keys also expire `lookback_days`
(wall clock) after their last write. Needs one Redis (not Redis Cluster: the scripts touch
keys of several entities).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import redis
import redis.asyncio as aioredis

from fraud.features import (
    CUSTOMER_RECORD,
    DAY_SECONDS,
    TERMINAL_RECORD,
    DuplicateTransactionError,
    FeatureConfig,
    Transaction,
    batch_features,
    customer_record,
    history_records,
    online_features,
    terminal_record,
    tx_seconds,
)
from serving.degradation import BackendUnavailableError

log = logging.getLogger("serving.feature_store")

# Every script's first line: refuse an unseeded Redis (the seeded key is every script's last key).
_REFUSE_UNSEEDED = """
if redis.call('EXISTS', KEYS[#KEYS]) == 0 then return redis.error_reply('FRAUD_UNSEEDED') end
"""

# The records of `key` after dropping those at or before `cutoff` from the front (rewriting the
# key when some were), always keeping the last one: it carries the time of the previous
# transaction.
_FRESH = """
local function fresh(key, cutoff, size)
  local v = redis.call('GET', key)
  if not v then return '' end
  local n = #v
  local off = 0
  while off + size < n and struct.unpack('<i8', v, off + 1) <= cutoff do off = off + size end
  if off > 0 then
    v = string.sub(v, off + 1)
    redis.call('SET', key, v, 'KEEPTTL')
  end
  return v
end
"""

# KEYS: customer, terminal, terminal frauds, transaction, early label, seeded (every script's
# last key: _REFUSE_UNSEEDED)
# ARGV: customer record, terminal record, "terminal seconds", ttl, customer cutoff,
#       terminal cutoff, transaction id, seconds
_RECORD = (
    _REFUSE_UNSEEDED
    + _FRESH
    + """
if not redis.call('SET', KEYS[4], ARGV[3], 'NX', 'EX', ARGV[4]) then return false end
local c = fresh(KEYS[1], tonumber(ARGV[5]), 24)
local t = fresh(KEYS[2], tonumber(ARGV[6]), 16)
local f = redis.call('HVALS', KEYS[3])
redis.call('APPEND', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('APPEND', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
local label = redis.call('GET', KEYS[5])
if label then
  redis.call('DEL', KEYS[5])
  if label == '1' then
    redis.call('HSET', KEYS[3], ARGV[7], ARGV[8])
    redis.call('EXPIRE', KEYS[3], ARGV[4])
  end
end
return {c, t, f}
"""
)

# A batch in one script. KEYS: the batch's distinct customers, distinct terminals, their fraud
# hashes (same order), then each transaction's key and early-label key, then the seeded key.
# ARGV: #customers, #terminals, #transactions, ttl, customer cutoff, terminal cutoff, then per
# transaction: customer index, terminal index, customer record, terminal record,
# "terminal seconds", transaction id, seconds.
_BATCH = (
    _REFUSE_UNSEEDED
    + _FRESH
    + """
local nc, nt, nx = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ttl = ARGV[4]
local xk, lk = 2 * nt + nc, 2 * nt + nc + nx
local dups = {}
for i = 1, nx do
  if redis.call('EXISTS', KEYS[xk + i]) == 1 then dups[#dups + 1] = i end
end
if #dups > 0 then return {0, dups} end
local cust, term, frauds, labels = {}, {}, {}, {}
for i = 1, nc do cust[i] = fresh(KEYS[i], tonumber(ARGV[5]), 24) end
for i = 1, nt do
  term[i] = fresh(KEYS[nc + i], tonumber(ARGV[6]), 16)
  frauds[i] = redis.call('HVALS', KEYS[nc + nt + i])
end
for i = 1, nx do
  local a = 6 + (i - 1) * 7
  local ci, ti = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  redis.call('SET', KEYS[xk + i], ARGV[a + 5], 'EX', ttl)
  redis.call('APPEND', KEYS[ci], ARGV[a + 3])
  redis.call('APPEND', KEYS[nc + ti], ARGV[a + 4])
  local label = redis.call('GET', KEYS[lk + i])
  labels[i] = label or ''
  if label then
    redis.call('DEL', KEYS[lk + i])
    if label == '1' then
      redis.call('HSET', KEYS[nc + nt + ti], ARGV[a + 6], ARGV[a + 7])
      redis.call('EXPIRE', KEYS[nc + nt + ti], ttl)
    end
  end
end
for i = 1, nc + nt do redis.call('EXPIRE', KEYS[i], ttl) end
return {1, cust, term, frauds, labels}
"""
)

# KEYS: transaction, early label, seeded; ARGV: label (0/1), ttl, frauds key prefix, transaction id
_LABEL = (
    _REFUSE_UNSEEDED
    + """
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
  return 0
end
local terminal, seconds = string.match(v, '(%S+) (%S+)')
local frauds = ARGV[3] .. terminal
if ARGV[1] == '1' then
  redis.call('HSET', frauds, ARGV[4], seconds)
  redis.call('EXPIRE', frauds, ARGV[2])
else
  redis.call('HDEL', frauds, ARGV[4])
end
return 1
"""
)


class RedisFeatureStore:
    """`fraud.features.FeatureStore` in Redis (see the module docstring)."""

    #: Seconds a worker waits for another one to finish seeding.
    SEED_WAIT_SECONDS = 300.0

    def __init__(self, url: str, cfg: FeatureConfig, *, prefix: str = "fraud") -> None:
        self.cfg = cfg
        self.url = url
        self.prefix = prefix
        self.r = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        _ping(self.r, url)
        self._record = self.r.register_script(_RECORD)
        self._label = self.r.register_script(_LABEL)
        self._batch = self.r.register_script(_BATCH)
        # The scoring path's client: asyncio, so that a worker does not idle during a round trip.
        self.ar = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._arecord = self.ar.register_script(_RECORD)
        self._abatch = self.ar.register_script(_BATCH)
        self._ttl = max(cfg.lookback_days, 1) * DAY_SECONDS
        self._cust_keep = cfg.customer_keep_days * DAY_SECONDS
        self._term_keep = cfg.terminal_keep_days * DAY_SECONDS
        self._seeded_key = f"{prefix}:seeded"
        self._history: pd.DataFrame | None = None  # what `seed` loaded: to seed again
        self._reseeding = threading.Lock()

    def _keys(self, tx: Transaction) -> list[str]:
        p = self.prefix
        return [
            f"{p}:c:{int(tx.customer_id)}",
            f"{p}:t:{int(tx.terminal_id)}",
            f"{p}:f:{int(tx.terminal_id)}",
            f"{p}:x:{int(tx.transaction_id)}",
            f"{p}:l:{int(tx.transaction_id)}",
            self._seeded_key,
        ]

    # -- seeding ----------------------------------------------------------------------------
    def seed(self, history: pd.DataFrame) -> None:
        """Load the history once per store: the first worker loads it, the others wait."""
        self._history = history
        done, lock = self._seeded_key, f"{self.prefix}:seeding"
        if self.r.exists(done):
            return
        if self.r.set(lock, "1", nx=True, ex=int(self.SEED_WAIT_SECONDS)):
            try:
                started = time.perf_counter()
                n = self._load(history)
                self.r.set(done, str(n))
                log.warning(
                    "feature store: seeded %d transactions into Redis in %.1f s",
                    n,
                    time.perf_counter() - started,
                )
            finally:
                self.r.delete(lock)
            return
        deadline = time.monotonic() + self.SEED_WAIT_SECONDS
        while not self.r.exists(done):
            if time.monotonic() > deadline:
                raise RuntimeError("feature store: timed out waiting for another worker to seed")
            time.sleep(0.2)

    def _load(self, history: pd.DataFrame) -> int:
        rec = history_records(history)
        p, ttl = self.prefix, self._ttl
        pipe = self.r.pipeline(transaction=False)

        def flush(force: bool = False) -> None:
            if force or len(pipe) >= 5_000:
                pipe.execute()

        for c, blob in rec.customers.items():
            pipe.append(f"{p}:c:{c}", blob)
            pipe.expire(f"{p}:c:{c}", ttl)
            flush()
        for term, blob in rec.terminals.items():
            pipe.append(f"{p}:t:{term}", blob)
            pipe.expire(f"{p}:t:{term}", ttl)
            flush()
        for term, frauds in rec.frauds.items():
            pipe.hset(f"{p}:f:{term}", mapping={str(k): str(v) for k, v in frauds.items()})
            pipe.expire(f"{p}:f:{term}", ttl)
            flush()
        for tid, term, t in rec.transactions:
            pipe.set(f"{p}:x:{tid}", f"{term} {t}", ex=ttl)
            flush()
        flush(force=True)
        return len(rec.transactions)

    # -- features ---------------------------------------------------------------------------
    def _features_from(self, tx: Transaction, t: int, reply: list[bytes]) -> dict[str, float]:
        cust, term, frauds = reply
        return online_features(
            self.cfg,
            t,
            float(tx.amount),
            int(tx.terminal_id),
            np.frombuffer(cust, dtype=CUSTOMER_RECORD),
            np.frombuffer(term, dtype=TERMINAL_RECORD)["t"],
            np.array([int(v) for v in frauds], dtype=np.int64),
        )

    def _args(self, tx: Transaction, t: int) -> list[bytes | str | int | float]:
        return [
            customer_record(t, float(tx.amount), int(tx.terminal_id)),
            terminal_record(t, int(tx.transaction_id)),
            f"{int(tx.terminal_id)} {t}",
            self._ttl,
            t - self._cust_keep,
            t - self._term_keep,
            int(tx.transaction_id),
            t,
        ]

    def features(self, tx: Transaction) -> dict[str, float]:
        """The features of one transaction, which is then recorded (one script, one round
        trip); a repeated id records nothing."""
        t = tx_seconds(tx.tx_datetime)
        try:
            reply = self._record(keys=self._keys(tx), args=self._args(tx, t))
        except redis.RedisError as e:
            raise self._unavailable(e) from e
        return self._single(tx, t, reply)

    def _unavailable(self, e: redis.RedisError) -> BackendUnavailableError:
        """What a failed call to Redis raises: the URL without its password, and why (a
        script's refusal of an unseeded Redis: it has lost its state, and is seeded again)."""
        if isinstance(e, redis.ResponseError) and "FRAUD_UNSEEDED" in str(e):
            return self._lost_state()
        return BackendUnavailableError(
            "feature store",
            f"the feature store (Redis at {_safe(self.url)}) is unavailable: "
            f"{type(e).__name__}: {e}",
        )

    async def acheck(self) -> None:
        """BackendUnavailableError unless Redis answers and holds the seeded state (a Redis
        that restarted without persistence comes back empty: features from it would be
        silently wrong, so the service says it is not ready)."""
        try:
            seeded = await self.ar.exists(self._seeded_key)
        except redis.RedisError as e:
            raise self._unavailable(e) from e
        if not seeded:
            raise self._lost_state()

    def _lost_state(self) -> BackendUnavailableError:
        """Redis came back without the seeded state: start seeding it again (once, in the
        background) and say so."""
        self._reseed_in_background()
        return BackendUnavailableError(
            "feature store",
            f"the feature store (Redis at {_safe(self.url)}) has lost its state (no "
            f"{self._seeded_key} key: it restarted without its data); it is being seeded "
            "again from the model's history, so retry shortly. Transactions recorded since "
            "then are lost: run Redis with persistence (appendonly yes)",
            state="has lost its state and is being seeded again",
        )

    def _reseed_in_background(self) -> None:
        if self._history is None or not self._reseeding.acquire(blocking=False):
            return  # never seeded by this process, or seeding already
        history = self._history

        def reseed() -> None:
            try:
                log.error("feature store: Redis has lost its state; seeding it again")
                self.seed(history)
            except Exception as e:  # the next request or /ready starts another attempt
                log.error("feature store: seeding again failed: %s: %s", type(e).__name__, e)
            finally:
                self._reseeding.release()

        threading.Thread(target=reseed, name="feature-store-reseed", daemon=True).start()

    def _single(self, tx: Transaction, t: int, reply: Any) -> dict[str, float]:
        if reply is None:
            raise DuplicateTransactionError([int(tx.transaction_id)])
        return self._features_from(tx, t, reply)

    def features_many(self, txs: Sequence[Transaction]) -> Sequence[dict[str, float]]:
        """Each transaction's features in order, as if recorded one after the other, in one
        round trip and one atomic script: a batch with an id already seen records nothing."""
        if len(txs) == 1:
            return [self.features(txs[0])]
        keys, args, finish = self._plan(txs)
        try:
            reply = self._batch(keys=keys, args=args)
        except redis.RedisError as e:
            raise self._unavailable(e) from e
        return finish(reply)

    async def afeatures_many(self, txs: Sequence[Transaction]) -> Sequence[dict[str, float]]:
        """`features_many` on the asyncio client: the worker serves other requests while
        Redis answers (a round trip is 100-150 µs on a small VM)."""
        try:
            if len(txs) == 1:
                tx = txs[0]
                t = tx_seconds(tx.tx_datetime)
                reply = await self._arecord(keys=self._keys(tx), args=self._args(tx, t))
                return [self._single(tx, t, reply)]
            keys, args, finish = self._plan(txs)
            return finish(await self._abatch(keys=keys, args=args))
        except redis.RedisError as e:
            raise self._unavailable(e) from e

    def _plan(
        self, txs: Sequence[Transaction]
    ) -> tuple[list[str], list[Any], Callable[[Any], Sequence[dict[str, float]]]]:
        ids = [int(tx.transaction_id) for tx in txs]
        if len(set(ids)) != len(ids):
            seen: set[int] = set()
            raise DuplicateTransactionError(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        p = self.prefix
        times = [tx_seconds(tx.tx_datetime) for tx in txs]
        customers = list(dict.fromkeys(int(tx.customer_id) for tx in txs))
        terminals = list(dict.fromkeys(int(tx.terminal_id) for tx in txs))
        ci = {c: i for i, c in enumerate(customers, start=1)}
        ti = {t: i for i, t in enumerate(terminals, start=1)}
        keys = (
            [f"{p}:c:{c}" for c in customers]
            + [f"{p}:t:{t}" for t in terminals]
            + [f"{p}:f:{t}" for t in terminals]
            + [f"{p}:x:{i}" for i in ids]
            + [f"{p}:l:{i}" for i in ids]
            + [self._seeded_key]
        )
        args: list[Any] = [
            len(customers),
            len(terminals),
            len(txs),
            self._ttl,
            min(times) - self._cust_keep,
            min(times) - self._term_keep,
        ]
        for tx, t in zip(txs, times, strict=True):
            c, term = int(tx.customer_id), int(tx.terminal_id)
            args += [
                ci[c],
                ti[term],
                customer_record(t, float(tx.amount), term),
                terminal_record(t, int(tx.transaction_id)),
                f"{term} {t}",
                int(tx.transaction_id),
                t,
            ]

        def finish(reply: Any) -> Sequence[dict[str, float]]:
            if reply[0] == 0:
                raise DuplicateTransactionError(ids[i - 1] for i in reply[1])
            _, cust, term_blobs, frauds, labels = reply
            return batch_features(
                self.cfg,
                txs,
                dict(zip(customers, cust, strict=True)),
                dict(zip(terminals, term_blobs, strict=True)),
                {t: [int(v) for v in f] for t, f in zip(terminals, frauds, strict=True) if f},
                {i: True for i, lab in zip(ids, labels, strict=True) if lab == b"1"},
                times,
            )

        return keys, args, finish

    # -- labels -----------------------------------------------------------------------------
    def add_label(self, transaction_id: int, is_fraud: bool) -> bool:
        tid = int(transaction_id)
        p = self.prefix
        try:
            known = self._label(
                keys=[f"{p}:x:{tid}", f"{p}:l:{tid}", self._seeded_key],
                args=[1 if is_fraud else 0, self._ttl, f"{p}:f:", tid],
            )
        except redis.RedisError as e:
            raise self._unavailable(e) from e
        return bool(known)

    def seen(self, transaction_id: int) -> bool:
        return bool(self.r.exists(f"{self.prefix}:x:{int(transaction_id)}"))

    def close(self) -> None:
        self.r.close()


def check_reachable(url: str) -> None:
    """RuntimeError naming Redis at `url` (without its password) and why, unless it answers:
    `python -m serving` checks before it starts, to exit with that one line."""
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        _ping(client, url)
    finally:
        client.close()


def _ping(client: redis.Redis, url: str) -> None:
    try:
        client.ping()
    except redis.RedisError as e:
        raise RuntimeError(f"feature store: cannot reach Redis at {_safe(url)}: {e}") from e


def _safe(url: str) -> str:
    """The URL without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
