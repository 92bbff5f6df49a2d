"""The serving predictor gives the booster's own probabilities, whichever path serves a call:
the tree table (a few rows), XGBoost's C entry point, or `inplace_predict`."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from serving.predictor import Predictor, TreeTable


def _booster(objective: str, depth: int, seed: int, **extra: object) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 10, size=(3_000, 6)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan  # learn default directions
    y = (np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) * 0.5 + rng.normal(0, 5, 3_000)) > 3
    params = {"objective": objective, "max_depth": depth, "eta": 0.3, "nthread": 1, **extra}
    return xgb.train(params, xgb.DMatrix(x, label=y.astype(np.float32)), num_boost_round=40)


@pytest.mark.parametrize("depth", [1, 3, 6])
@pytest.mark.parametrize("base_score", [0.5, 0.1])
def test_tree_table_matches_xgboost_to_one_float32_ulp(depth: int, base_score: float) -> None:
    booster = _booster("binary:logistic", depth, seed=depth, base_score=base_score)
    table = TreeTable(booster)
    assert table.depth == depth or table.depth < depth  # a tree may stop early
    x = table.probe_rows(6, n=5_000)
    assert np.isnan(x).any()
    got, want = table.predict(x), booster.inplace_predict(x).astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-7)
    assert (got == want).mean() > 0.99


def test_predictor_uses_the_table_for_a_few_rows_and_xgboost_for_many() -> None:
    booster = _booster("binary:logistic", 3, seed=1)
    p = Predictor(booster, 6)
    assert p.table is not None and p.fast
    x = TreeTable(booster).probe_rows(6, n=200)
    want = booster.inplace_predict(x).astype(np.float64)
    np.testing.assert_allclose(p.predict(x[:1]), want[:1], atol=2e-7)  # table
    np.testing.assert_array_equal(p.predict(x), want)  # C entry point: XGBoost's own numbers


def test_predictor_without_a_logistic_objective_falls_back_to_xgboost() -> None:
    booster = _booster("reg:squarederror", 3, seed=2)
    p = Predictor(booster, 6)
    assert p.table is None
    x = np.random.default_rng(0).normal(0, 10, size=(5, 6)).astype(np.float32)
    np.testing.assert_array_equal(p.predict(x), booster.inplace_predict(x).astype(np.float64))


@pytest.mark.parametrize("names", [None, [f"f{i}" for i in range(6)]], ids=["unnamed", "named"])
def test_contributions_equal_xgboost_pred_contribs_on_the_fast_path_and_the_fallback(
    names: list[str] | None,
) -> None:
    booster = _booster("binary:logistic", 4, seed=2)
    booster.feature_names = names
    p = Predictor(booster, 6)
    x = TreeTable(booster).probe_rows(6, n=50)
    assert np.isnan(x).any()
    want = booster.predict(xgb.DMatrix(x, feature_names=names), pred_contribs=True)
    assert p.fast_contribs
    for rows in (x[:1], x):
        got = p.contributions(rows)
        assert got.shape == (len(rows), 7)
        np.testing.assert_array_equal(got, want[: len(rows)].astype(np.float64))
    p.fast_contribs = False  # what serves when XGBoost's internals change
    np.testing.assert_array_equal(p.contributions(x), want.astype(np.float64))
    # Contributions and the bias add up to the margin of the prediction.
    margin = booster.predict(xgb.DMatrix(x, feature_names=names), output_margin=True)
    np.testing.assert_allclose(p.contributions(x).sum(axis=1), margin, rtol=1e-5, atol=1e-5)
