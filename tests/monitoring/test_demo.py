"""The drift demo's parts that need no service: its settings, the sandbox's params and
refusals, the production it sends and the labels it sends back, and its summary arithmetic.
The demo itself runs for real in tests/e2e/test_drift_demo.py."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from fraud import schema
from monitoring.demo.config import DemoConfig
from monitoring.demo.runner import won_back
from monitoring.demo.sandbox import MARKER, SandboxError, build_sandbox, demo_params
from monitoring.demo.traffic import KNOWN_AT, simulate_production

pytestmark = pytest.mark.unit


def test_demo_config_names_the_field_and_what_was_expected():
    with pytest.raises(ValidationError, match=r"unknown regime 'sudden'; the presets are"):
        DemoConfig(regime="sudden")
    with pytest.raises(ValidationError, match=r"onset_day \(10\) must fall within the 10 days"):
        DemoConfig(days=10, onset_day=10)
    with pytest.raises(ValidationError, match=r"label_delay_min_days \(5\) is above"):
        DemoConfig(label_delay_min_days=5, label_delay_max_days=2)


def test_demo_params_put_the_monitoring_files_in_the_sandbox_and_keep_the_rest(tmp_path):
    src = tmp_path / "params.yaml"
    src.write_text(yaml.safe_dump({"split": {"train_days": 9}, "monitor": {"window_days": 2}}))
    params = demo_params(src, tmp_path / "box")
    assert params["split"] == {"train_days": 9}
    assert params["monitor"]["window_days"] == 2
    assert params["monitor"]["reports_dir"] == str((tmp_path / "box" / "monitoring").resolve())
    assert params["monitor"]["workspace"].startswith(params["monitor"]["reports_dir"])


def test_the_sandbox_is_never_built_over_a_directory_that_is_not_a_demos(tmp_path):
    (tmp_path / "box").mkdir()
    (tmp_path / "box" / "thesis.tex").write_text("years of work")
    (tmp_path / "params.yaml").write_text("{}\n")
    with pytest.raises(SandboxError, match=r"is not a drift demo's directory"):
        build_sandbox(tmp_path / "params.yaml", tmp_path / "box")
    assert (tmp_path / "box" / "thesis.tex").read_text() == "years of work"
    assert not (tmp_path / "box" / MARKER).exists()


def test_the_sandbox_refuses_params_that_ingest_a_file(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ingest": {"source": "file"}}))
    with pytest.raises(SandboxError, match=r"needs ingest.source: simulator"):
        build_sandbox(tmp_path / "params.yaml", tmp_path / "box")
    assert not (tmp_path / "box").exists()


@pytest.fixture(scope="module")
def production(tiny_params, tiny_transactions):
    return simulate_production(
        tiny_params.simulator,
        tiny_transactions,
        12,
        "concept",
        4,
        seed=0,
        label_delay_days=(1.0, 7.0),
        history_label_days=tiny_params.features.delay_days,
    )


def test_production_continues_the_base_with_the_regime_on_its_day(production, tiny_params):
    sim = tiny_params.simulator
    assert production.first_day == dt.date(2018, 4, 1) + dt.timedelta(days=sim.n_days)
    assert production.onset == production.first_day + dt.timedelta(days=4)
    days = production.frame[schema.TX_DATETIME].dt.date
    assert days.min() == production.first_day and days.nunique() == 12
    assert len(production.of_day(production.day(3))) == (days == production.day(3)).sum()


def test_every_fraud_label_comes_back_once_within_the_delay(production):
    frauds = production.frame[production.frame[schema.TX_FRAUD] == 1]
    labels = production.labels.set_index(schema.TRANSACTION_ID)[KNOWN_AT]
    delay = (
        labels.loc[frauds[schema.TRANSACTION_ID]].to_numpy() - frauds[schema.TX_DATETIME].to_numpy()
    )
    assert pd.Series(delay).between(pd.Timedelta(days=1), pd.Timedelta(days=7)).all()
    # Consecutive (after, until] windows send each label exactly once.
    sent = []
    after = None
    for i in range(production.days + 7):
        until = dt.datetime.combine(production.day(i + 1), dt.time())
        sent.extend(production.labels_known(after, until)[schema.TRANSACTION_ID].tolist())
        after = until
    assert sorted(sent) == sorted(production.labels[schema.TRANSACTION_ID].tolist())
    assert len(set(sent)) == len(sent)


def test_the_base_frauds_the_published_history_did_not_know_come_back_after_its_end(
    production, tiny_transactions, tiny_params
):
    start = pd.Timestamp(production.first_day)
    young = tiny_transactions[
        (tiny_transactions[schema.TX_FRAUD] == 1)
        & (
            tiny_transactions[schema.TX_DATETIME]
            >= start - pd.Timedelta(days=tiny_params.features.delay_days)
        )
    ]
    assert len(young) > 0
    labels = production.labels.set_index(schema.TRANSACTION_ID)[KNOWN_AT]
    assert set(young[schema.TRANSACTION_ID]) <= set(labels.index)
    assert (labels.loc[young[schema.TRANSACTION_ID]] >= start).all()
    older = tiny_transactions[tiny_transactions[schema.TX_DATETIME] < start - pd.Timedelta(days=8)]
    assert not set(older[schema.TRANSACTION_ID]) & set(labels.index)


def _summary(old_before: float, old_after: float, new_after: float) -> dict:
    return {
        "before_onset": {"models": {"1": {"average_precision": old_before}}},
        "after_promotion": {
            "models": {"1": {"average_precision": old_after}, "4": {"average_precision": new_after}}
        },
    }


def test_won_back_is_the_share_of_the_lost_average_precision_that_the_new_model_recovers():
    assert won_back(_summary(0.8, 0.4, 0.7), "1") == pytest.approx(0.75)
    assert won_back(_summary(0.8, 0.4, 0.3), "1") == pytest.approx(-0.25)
    assert won_back(_summary(0.8, 0.85, 0.9), "1") is None  # nothing was lost
    assert won_back({"before_onset": None, "after_promotion": None}, "1") is None
