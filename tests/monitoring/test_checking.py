"""The checks of a window without I/O (`monitoring/checking.py`), shared by the job and the
drift benchmark: the Evidently report must be given each column's own method and threshold,
the ones its drift check used (TX_AMOUNT is an amount, not a plain feature)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from monitoring.checking import drift_checks, prepare_monitor
from monitoring.config import MonitorConfig


def reference(n: int = 5_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    score = rng.beta(0.5, 20, n)
    amount = rng.lognormal(3.5, 0.8, n)
    return pd.DataFrame(
        {
            "transaction_id": np.arange(n),
            "tx_datetime": pd.date_range("2018-08-08", periods=n, freq="2min"),
            "customer_id": rng.integers(0, 500, n),
            "terminal_id": rng.integers(0, 1000, n),
            "amount": amount,
            "score": score,
            "is_alert": (score > 0.1).astype("int64"),
            "threshold": 0.1,
            "is_fraud": pd.array(rng.random(n) < score, dtype="Int64"),
            "TX_AMOUNT": amount,
            "TX_DURING_NIGHT": (rng.random(n) < 0.2).astype(float),
            "TERMINAL_ID_RISK_7DAY_WINDOW": rng.random(n),
        }
    )


def test_the_report_columns_are_the_drift_checks_methods_and_thresholds():
    ref = reference()
    monitor = prepare_monitor(MonitorConfig(), ref, {"TX_AMOUNT": 3.0, "TX_DURING_NIGHT": 1.0})
    checks, _, _ = drift_checks(monitor, reference(seed=1))
    columns = monitor.evidently_columns()
    checked = {c.column: (c.method, c.threshold) for c in checks if c.column in columns}
    assert checked == columns
    assert set(columns) == {
        "amount",
        "score",
        "TX_AMOUNT",
        "TX_DURING_NIGHT",
        "TERMINAL_ID_RISK_7DAY_WINDOW",
    }
    cfg = MonitorConfig().drift
    assert columns["TX_AMOUNT"] == ("psi", cfg.amount.threshold)
    assert columns["TX_DURING_NIGHT"] == ("psi", cfg.categorical.threshold)
