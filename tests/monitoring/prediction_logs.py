"""Test helper: a scored monitoring frame written into a real prediction log, as the API would
have logged it, with every fraud's label sent back a few days later through the feedback
table (the tests of the job and of the flows read it back)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from fraud.predictions import FeedbackRow, PredictionRow, open_prediction_log
from fraud.registry import RegisteredVersion
from monitoring import frames


def log_scored_frame(
    path: Path, scored: pd.DataFrame, version: RegisteredVersion, label_delay_days: float = 2
) -> None:
    """Log every row of `scored` (the `monitoring.frames` layout) at its transaction time, and
    each fraud's label `label_delay_days` after it."""
    feats = frames.feature_columns(scored)
    log = open_prediction_log(path)
    log.log_predictions(
        [
            PredictionRow(
                int(r.transaction_id),
                r.tx_datetime.isoformat(),
                int(r.customer_id),
                int(r.terminal_id),
                float(r.amount),
                {f: float(getattr(r, f)) for f in feats},
                float(r.score),
                int(r.is_alert),
                float(r.threshold),
                version.name,
                version.version,
                r.tx_datetime.isoformat(),
            )
            for r in scored.itertuples()
        ]
    )
    frauds = scored[scored[frames.LABEL] == 1]
    delay = dt.timedelta(days=label_delay_days)
    log.log_feedback(
        [
            FeedbackRow(int(t), 1, (d + delay).isoformat(), d.isoformat())
            for t, d in zip(frauds[frames.TRANSACTION], frauds[frames.TIME], strict=True)
        ]
    )
    log.close()
