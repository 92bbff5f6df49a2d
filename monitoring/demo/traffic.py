"""Production for the demo: simulated after the base data, sent through the API, labelled late.

`simulate_production` continues the base population (`fraud.continuation`) for the demo's days
under its regime, in one call (a split by day afterwards keeps the compromise windows whole), and
draws when each fraud's label comes back. `ApiClient` sends a day's transactions through
`POST /predict/batch` and the labels known by a moment through `POST /feedback`, with the time
they became known (`known_at`, on the simulated clock): the monitoring job and the online
features see them as a bank's chargebacks would arrive.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from dataclasses import dataclass

import httpx
import numpy as np
import pandas as pd

from fraud import schema
from fraud.continuation import simulate_continuation
from fraud.regimes import Regime, regime_preset
from fraud.simulator import SimulatorConfig

#: The columns a payment system sends (the request's fields).
REQUEST_COLUMNS = list(schema.RAW_COLUMNS)
KNOWN_AT = "LABEL_KNOWN_AT"


@dataclass(frozen=True)
class Production:
    """The demo's production period: every transaction with its truth, and its labels' times."""

    frame: pd.DataFrame  # contract columns + TX_FRAUD, TX_FRAUD_SCENARIO
    #: Every label that comes back during the period (TRANSACTION_ID, LABEL_KNOWN_AT): the
    #: production's frauds, and the base's last frauds that the model's published history
    #: did not know yet.
    labels: pd.DataFrame
    first_day: dt.date
    days: int
    regime: Regime
    start_index: int  # the first day's index on the base's timeline (day 0: its start_date)

    @property
    def onset(self) -> dt.date:
        """The regime's first day (calendar)."""
        return self.first_day + dt.timedelta(days=self.regime.onset_day - self.start_index)

    def day(self, i: int) -> dt.date:
        return self.first_day + dt.timedelta(days=i)

    def of_day(self, day: dt.date) -> pd.DataFrame:
        start = pd.Timestamp(day)
        times = self.frame[schema.TX_DATETIME]
        return self.frame[(times >= start) & (times < start + pd.Timedelta(days=1))]

    def labels_known(self, after: dt.datetime | None, until: dt.datetime) -> pd.DataFrame:
        """The labels (TRANSACTION_ID, LABEL_KNOWN_AT) that became known in (after, until]."""
        known = self.labels[KNOWN_AT]
        mask = known <= pd.Timestamp(until)
        if after is not None:
            mask &= known > pd.Timestamp(after)
        return self.labels[mask]


def _label_times(
    frauds: pd.DataFrame, rng: np.random.Generator, delay_days: tuple[float, float]
) -> pd.DataFrame:
    delays = pd.to_timedelta(rng.uniform(*delay_days, len(frauds)), unit="D")
    return pd.DataFrame(
        {
            schema.TRANSACTION_ID: frauds[schema.TRANSACTION_ID].to_numpy(),
            KNOWN_AT: (frauds[schema.TX_DATETIME] + delays).to_numpy(),
        }
    )


def simulate_production(
    base: SimulatorConfig,
    base_data: pd.DataFrame,
    days: int,
    regime_name: str,
    onset_day: int,
    *,
    seed: int,
    label_delay_days: tuple[float, float],
    history_label_days: int,
) -> Production:
    """`days` days right after the base's period (`base_data`, simulated from `base`), the
    preset `regime_name` from `onset_day` days in; each fraud's label known a uniform
    `label_delay_days` after the transaction.

    The base's frauds of its last `history_label_days` days (the features' label delay) are
    unknown in the history the model publishes; their labels come back too, as they would
    after a model was trained, no earlier than the base's end."""
    start = base.n_days
    regime = regime_preset(regime_name, start + onset_day)
    frame = simulate_continuation(base, start, days, regime, seed=seed)
    rng = np.random.default_rng([seed, start, days])
    first = dt.date.fromisoformat(str(base.start_date)) + dt.timedelta(days=start)
    base_end = pd.Timestamp(first)
    times = base_data[schema.TX_DATETIME]
    tail = base_data[
        (base_data[schema.TX_FRAUD] == 1)
        & (times >= base_end - pd.Timedelta(days=history_label_days))
    ]
    late = _label_times(tail, rng, label_delay_days)
    late[KNOWN_AT] = late[KNOWN_AT].clip(lower=base_end)
    ours = _label_times(frame[frame[schema.TX_FRAUD] == 1], rng, label_delay_days)
    labels = pd.concat([late, ours], ignore_index=True).sort_values(KNOWN_AT, ignore_index=True)
    return Production(frame, labels, first, days, regime, start)


@dataclass(frozen=True)
class DaySent:
    """What one day of traffic did at the API."""

    transactions: int
    alerts: int
    frauds: int  # the simulation's truth, in the day's transactions
    versions: dict[str, int]  # predictions by the model version that made them
    seconds: float


#: Traffic is sent in slots of this length, each after the labels known by its start: a label
#: that comes back before a transaction needs it reaches the API first.
SLOT = pd.Timedelta(hours=1)


class ApiError(RuntimeError):
    """The API refused or failed a call; the message has its status and body."""


class ApiClient:
    """The few calls the demo makes to the prediction API."""

    def __init__(self, base_url: str, timeout: float = 60) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _post(self, path: str, body: bytes) -> httpx.Response:
        r = self.http.post(path, content=body, headers={"content-type": "application/json"})
        if r.status_code != 200:
            raise ApiError(f"POST {path} answered {r.status_code}: {r.text[:500]}")
        return r

    def predict(self, rows: pd.DataFrame, batch_size: int) -> tuple[int, Counter[str]]:
        """Score `rows` in batches, in time order, as the payment system would send them: the
        alerts, and the predictions by the model version that made them."""
        alerts = 0
        versions: Counter[str] = Counter()
        req = rows[REQUEST_COLUMNS]
        for i in range(0, len(req), batch_size):
            part = req.iloc[i : i + batch_size]
            records = part.to_json(orient="records", date_format="iso", date_unit="s")
            body = b'{"transactions":' + records.encode() + b"}"
            for p in self._post("/predict/batch", body).json()["predictions"]:
                alerts += bool(p["is_fraud"])
                versions[p["model_version"]] += 1
        return alerts, versions

    def send_labels(self, frauds: pd.DataFrame) -> int:
        """One `POST /feedback` per fraud label (TRANSACTION_ID, LABEL_KNOWN_AT), with the
        time it became known."""
        for tx_id, known in zip(
            frauds[schema.TRANSACTION_ID].tolist(), frauds[KNOWN_AT].tolist(), strict=True
        ):
            body = {"TRANSACTION_ID": int(tx_id), "is_fraud": True, "known_at": known.isoformat()}
            self._post("/feedback", json.dumps(body).encode())
        return len(frauds)

    def send_day(
        self,
        production: Production,
        day: dt.date,
        labels_until: dt.datetime | None,
        batch_size: int,
    ) -> tuple[DaySent, int, dt.datetime]:
        """A day of traffic, one `SLOT` at a time, each after the labels known by its start,
        then the labels known by the day's end: (what the API did, labels sent, the time up to
        which labels are sent)."""
        t0 = time.perf_counter()
        rows = production.of_day(day)
        slots = rows[schema.TX_DATETIME].dt.floor(SLOT)
        alerts, labels = 0, 0
        versions: Counter[str] = Counter()
        for start, part in rows.groupby(slots, sort=True):
            moment = pd.Timestamp(start).to_pydatetime()
            labels += self.send_labels(production.labels_known(labels_until, moment))
            labels_until = moment
            slot_alerts, slot_versions = self.predict(part, batch_size)
            alerts += slot_alerts
            versions.update(slot_versions)
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time())
        labels += self.send_labels(production.labels_known(labels_until, end))
        frauds = int(rows[schema.TX_FRAUD].sum())
        sent = DaySent(len(rows), alerts, frauds, dict(versions), time.perf_counter() - t0)
        return sent, labels, end

    def serving_version(self) -> str | None:
        r = self.http.get("/ready")
        return str(r.json().get("model_version")) if r.status_code == 200 else None
