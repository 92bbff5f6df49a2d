"""The benchmark's world: a base population, a model trained on it, its reference, and the
daily production batches of each scenario in the monitoring frame layout.

* The base is the simulator of params.yaml (`simulator:`), or a smaller population (`--quick`).
* The model is trained in process with the pipeline's own step (`pipelines.train.train_model`,
  params.yaml `split:` and `train:`), so the benchmark needs no MLflow store; the reference is
  its test window scored, built with `fraud.registry.reference_frame` as the register step does.
* Production continues the base (`fraud.continuation.simulate_continuation`, same customers and
  terminals, later days) under a regime preset with a known onset (`fraud.regimes`). Features
  are computed with `compute_features` over the base's last days + the continuation (point in
  time, as `monitoring.sources.file_window` does with a history), scored by the model.
* Labels arrive late: a fraud's label is known `label_delay_days` after the transaction (the
  features' delay); a genuine transaction gets no feedback (the monitor counts an unlabelled
  transaction of a matured cohort as genuine).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from fraud import schema
from fraud.continuation import simulate_continuation
from fraud.features import FeatureConfig, compute_features
from fraud.regimes import Regime, regime_preset
from fraud.registry import reference_frame
from fraud.simulator import SimulatorConfig, simulate
from monitoring import frames
from pipelines.params import Params, load_params
from pipelines.train import train_model

#: The benchmark's scenarios: (key, regime preset, what it is).
SCENARIOS: dict[str, str] = {
    "none": "none",
    "gradual_amount": "gradual_amount",
    "new_terminals": "new_terminals",
    "concept": "concept",
    "label_only": "label_only",
}
#: The population of `--quick` (the default population is params.yaml's).
QUICK_POPULATION = {"n_customers": 600, "n_terminals": 1_200}


@dataclass(frozen=True)
class World:
    """What every scenario shares: the base, its features' history, the model, the reference."""

    base: SimulatorConfig
    feature_config: FeatureConfig
    history: pd.DataFrame  # the base's last `lookback + delay` days (raw, labelled)
    booster: xgb.Booster
    features: list[str]
    threshold: float
    importance: dict[str, float]
    reference: pd.DataFrame  # the test window scored (monitoring layout)
    label_delay_days: int
    train_seconds: float

    @property
    def start_day(self) -> int:
        """The continuation's first day (right after the base)."""
        return self.base.n_days

    def day(self, index: int) -> pd.Timestamp:
        """The calendar day of an absolute day index (0 = the base's start_date)."""
        return pd.Timestamp(self.base.start_date) + pd.Timedelta(days=index)


def build_world(params_path: Path, *, quick: bool) -> World:
    """Simulate the base, compute its features, train the model and build its reference."""
    import time

    params: Params = load_params(params_path)
    base = params.simulator
    if quick:
        base = base.model_copy(update=QUICK_POPULATION)
    fcfg = params.features
    raw = simulate(base)
    t0 = time.perf_counter()
    feats = compute_features(raw, fcfg)
    names = fcfg.feature_names()
    split = params.split.split()
    booster, result = train_model(
        feats,
        names,
        split,
        params.split.validation_days,
        params.train,
        params.evaluate.cost.model(),
    )
    train_seconds = time.perf_counter() - t0
    booster.set_param({"nthread": 1})
    t_start, t_end = pd.Timestamp(split.test_start), pd.Timestamp(split.test_end)
    test = feats[(feats[schema.TX_DATETIME] >= t_start) & (feats[schema.TX_DATETIME] < t_end)]
    test = test.reset_index(drop=True)
    scores = score(booster, test, result.features)
    reference = reference_frame(test, scores, features=result.features, threshold=result.threshold)
    keep_days = fcfg.lookback_days + fcfg.delay_days + 1
    last = raw[schema.TX_DATETIME].max().normalize()
    history = raw[raw[schema.TX_DATETIME] >= last - pd.Timedelta(days=keep_days)]
    gains = booster.get_score(importance_type="gain")
    return World(
        base=base,
        feature_config=fcfg,
        history=history.reset_index(drop=True),
        booster=booster,
        features=result.features,
        threshold=result.threshold,
        importance={k: float(v) for k, v in gains.items() if isinstance(v, int | float)},
        reference=reference,
        label_delay_days=fcfg.delay_days,
        train_seconds=train_seconds,
    )


def score(booster: xgb.Booster, rows: pd.DataFrame, features: list[str]) -> np.ndarray:
    return np.asarray(booster.inplace_predict(rows[features].to_numpy(np.float32)), dtype=float)


def scenario_regime(world: World, name: str, onset_day: int) -> Regime:
    """The preset of scenario `name` from `onset_day`, its new terminals scaled to the base's
    terminal count (the presets are tuned for 10,000 terminals)."""
    if name not in SCENARIOS:
        raise ValueError(f"scenario: unknown {name!r}; the scenarios are {sorted(SCENARIOS)}")
    regime = regime_preset(SCENARIOS[name], onset_day)
    if regime.new_terminals:
        scaled = max(1, round(regime.new_terminals * world.base.n_terminals / 10_000))
        regime = regime.model_copy(update={"new_terminals": scaled})
    return regime


def production_frame(world: World, regime: Regime, n_days: int, seed: int) -> pd.DataFrame:
    """`n_days` of production from the continuation's start under `regime`, scored, in the
    monitoring layout, with each fraud's label known `label_delay_days` after it."""
    cont = simulate_continuation(world.base, world.start_day, n_days, regime, seed=seed)
    both = pd.concat([world.history, cont], ignore_index=True)
    feats = compute_features(both, world.feature_config).iloc[len(world.history) :]
    feats = feats.reset_index(drop=True)
    frame = reference_frame(
        feats,
        score(world.booster, feats, world.features),
        features=world.features,
        threshold=world.threshold,
    )
    fraud = frame[frames.LABEL].fillna(0).to_numpy(dtype=bool)
    frame[frames.LABEL] = pd.array(np.where(fraud, 1, pd.NA), dtype="Int64")
    known_at = frame[frames.TIME] + pd.Timedelta(days=world.label_delay_days)
    frame.insert(
        frame.columns.get_loc(frames.LABEL) + 1,
        frames.LABEL_KNOWN_AT,
        known_at.where(pd.Series(fraud, index=frame.index)),
    )
    return frame


def day_bounds(world: World, index: int) -> tuple[dt.datetime, dt.datetime]:
    start = world.day(index)
    return start.to_pydatetime(), (start + pd.Timedelta(days=1)).to_pydatetime()
