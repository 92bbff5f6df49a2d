"""Score feature rows with the XGBoost model at a fraction of the per-call cost of its wrapper.

`Booster.inplace_predict` spends about 200 µs per call in Python (type dispatch, a JSON config
built per call, array-interface checks) around a C call of about 60 µs for one row. A request
scores one row, so the wrapper would be most of the model's cost. `Predictor` calls the same C
entry point (`XGBoosterPredictFromDense`, what `inplace_predict` calls for a NumPy array) with
the configuration prepared once, on a float32 array it owns.

Even that C call costs 60-150 µs for one row (configuration parsing, thread dispatch, cold
caches between requests), for 100 trees of depth 3: a few hundred comparisons. So, for the
few rows of a request, `TreeTable` walks the trees itself: the booster's own trees (from its
JSON dump), laid out as complete binary trees in NumPy arrays and walked level by level for
all trees at once, with XGBoost's rules (`x < split` goes left, a missing value follows the
default direction, leaf values summed in float32 tree by tree from the base margin, then the
logistic). It is used only if, when the model is loaded, it reproduces the booster's own
predictions on thousands of probe rows around every split threshold (to 2e-7: float32
rounding of the logistic); otherwise, or for anything but `binary:logistic` numeric trees, the
C call serves.

Both fast paths use XGBoost internals (`xgboost.core._LIB`, the JSON model layout; the version
is pinned in pyproject.toml), and both fall back to `inplace_predict` if anything moved.
"""

from __future__ import annotations

import ctypes
import json
import logging
from typing import Any

import numpy as np
import xgboost as xgb

log = logging.getLogger("serving.predictor")


class TreeTable:
    """The booster's trees as complete binary trees in arrays (see the module docstring)."""

    def __init__(self, booster: xgb.Booster) -> None:
        model = json.loads(booster.save_raw("json"))
        learner = model["learner"]
        if learner["objective"]["name"] != "binary:logistic":
            raise ValueError(f"objective {learner['objective']['name']} is not binary:logistic")
        gbm = learner["gradient_booster"]
        if gbm["name"] != "gbtree":
            raise ValueError(f"booster {gbm['name']} is not gbtree")
        trees = gbm["model"]["trees"]
        if any(any(t["split_type"]) for t in trees):
            raise ValueError("categorical splits")
        base = float(learner["learner_model_param"]["base_score"].strip("[]"))
        self.base_margin = np.float32(np.log(base / (1.0 - base)))

        def depth(t: dict[str, Any], n: int = 0) -> int:
            left = t["left_children"][n]
            return 0 if left == -1 else 1 + max(depth(t, left), depth(t, t["right_children"][n]))

        self.depth = d = max((depth(t) for t in trees), default=0)
        n_inner = 2**d - 1
        count = len(trees)
        self.feature = np.zeros((count, max(n_inner, 1)), dtype=np.intp)
        self.threshold = np.full((count, max(n_inner, 1)), np.inf, dtype=np.float32)
        self.default_left = np.ones((count, max(n_inner, 1)), dtype=bool)
        self.leaf = np.zeros((count, 2**d), dtype=np.float32)
        for i, t in enumerate(trees):
            self._fill(t, i, 0, 0, 0)
        self.trees = np.arange(count)[None, :]
        self.n_inner = n_inner

    def _fill(self, t: dict[str, Any], i: int, node: int, pos: int, level: int) -> None:
        left = t["left_children"][node]
        if level == self.depth:
            self.leaf[i, pos - (2**self.depth - 1)] = t["split_conditions"][node]
            return
        if left == -1:  # a leaf above the full depth: both ways lead to it
            self._fill(t, i, node, 2 * pos + 1, level + 1)
            self._fill(t, i, node, 2 * pos + 2, level + 1)
            return
        self.feature[i, pos] = t["split_indices"][node]
        self.threshold[i, pos] = t["split_conditions"][node]
        self.default_left[i, pos] = bool(t["default_left"][node])
        self._fill(t, i, left, 2 * pos + 1, level + 1)
        self._fill(t, i, t["right_children"][node], 2 * pos + 2, level + 1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        n = x.shape[0]
        rows = np.arange(n)[:, None]
        trees = self.trees
        pos = np.zeros((n, trees.shape[1]), dtype=np.intp)
        for _ in range(self.depth):
            v = x[rows, self.feature[trees, pos]]
            left = np.where(
                np.isnan(v), self.default_left[trees, pos], v < self.threshold[trees, pos]
            )
            pos = 2 * pos + 2 - left
        leaves = self.leaf[trees, pos - self.n_inner]
        margin = np.empty((n, leaves.shape[1] + 1), dtype=np.float32)
        margin[:, 0] = self.base_margin
        margin[:, 1:] = leaves
        total = np.cumsum(margin, axis=1, dtype=np.float32)[:, -1]  # tree by tree, as XGBoost
        # XGBoost: 1.0f / (expf(-x) + 1.0f); glibc's expf is correctly rounded, and so is
        # exp in float64 rounded once to float32 (NumPy's own float32 exp is not always).
        e = np.exp(-total.astype(np.float64)).astype(np.float32)
        return (np.float32(1.0) / (e + np.float32(1.0))).astype(np.float64)

    def probe_rows(self, n_features: int, n: int = 4096) -> np.ndarray:
        """Rows around every split threshold (both sides, exactly on it) and missing values."""
        rng = np.random.default_rng(0)
        x = rng.normal(0, 100, size=(n, n_features)).astype(np.float32)
        inner = np.isfinite(self.threshold)
        for f in range(n_features):
            thr = self.threshold[inner & (self.feature == f)]
            if len(thr):
                pick = rng.choice(thr, size=n)
                nudge = rng.choice(np.array([-1e-3, 0.0, 0.0, 1e-3], dtype=np.float32), size=n)
                x[:, f] = pick + nudge * np.maximum(np.abs(pick), 1)
        x[rng.random(x.shape) < 0.1] = np.nan
        return x


class Predictor:
    """`predict(x)` → probabilities for float32 rows `x` (n, n_features), one thread."""

    #: Up to this many rows, the tree table is faster than XGBoost's C call.
    TABLE_MAX_ROWS = 32

    def __init__(self, booster: xgb.Booster, n_features: int) -> None:
        self.booster = booster
        self.n_features = n_features
        self.table: TreeTable | None = None
        try:
            table = TreeTable(booster)
            x = table.probe_rows(n_features)
            want = np.asarray(booster.inplace_predict(x), dtype=np.float64)
            diff = float(np.max(np.abs(table.predict(x) - want)))
            if diff <= 2e-7:
                self.table = table
            else:
                log.warning("tree table differs from XGBoost by %.2g; not using it", diff)
        except Exception as e:
            log.warning("tree table unavailable (%s)", e)
        self.fast = self.fast_contribs = False
        try:
            self._prepare()
            probe = self._probe_rows()
            self.fast = self._agrees(probe)
            self.fast_contribs = self._contributions_agree(probe[:8])
        except Exception as e:  # internals changed: the public API still works
            log.warning("fast XGBoost path unavailable (%s); using inplace_predict", e)
            self.fast = self.fast_contribs = False
        if not self.fast:
            log.warning("serving with Booster.inplace_predict")

    def _prepare(self) -> None:
        from xgboost.core import _LIB, _check_call, c_bst_ulong

        self._lib = _LIB
        self._check = _check_call
        self._config = json.dumps(
            {
                "type": 0,  # probabilities (the objective's transformed output)
                "training": False,
                "iteration_begin": 0,
                "iteration_end": 0,
                "strict_shape": False,
                "missing": float("nan"),
                "cache_id": 0,
            }
        ).encode()
        self._contribs_config = json.dumps(
            {
                "type": 2,  # per-feature contributions (TreeSHAP), the bias last
                "training": False,
                "iteration_begin": 0,
                "iteration_end": 0,
                "strict_shape": False,
            }
        ).encode()
        self._dmatrix_config = json.dumps({"missing": float("nan"), "nthread": 1}).encode()
        self._shape = ctypes.POINTER(c_bst_ulong)()
        self._dims = c_bst_ulong()
        self._preds = ctypes.POINTER(ctypes.c_float)()
        self._null = ctypes.c_void_p()

    @staticmethod
    def _interface(x: np.ndarray) -> bytes:
        return json.dumps(
            {
                "data": (x.ctypes.data, True),
                "shape": list(x.shape),
                "strides": None,
                "typestr": "<f4",
                "version": 3,
            }
        ).encode()

    def _predict_fast(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._check(
            self._lib.XGBoosterPredictFromDense(
                self.booster.handle,
                self._interface(x),
                self._config,
                self._null,
                ctypes.byref(self._shape),
                ctypes.byref(self._dims),
                ctypes.byref(self._preds),
            )
        )
        return self._out().reshape(-1)

    def _out(self) -> np.ndarray:
        shape = [int(self._shape[i]) for i in range(self._dims.value)]
        n = 1
        for d in shape:
            n *= d
        # Copy out: the buffer belongs to the booster and the next call overwrites it.
        return np.ctypeslib.as_array(self._preds, shape=(n,)).reshape(shape).astype(np.float64)

    def _contributions_fast(self, x: np.ndarray) -> np.ndarray:
        """TreeSHAP through the C API: the DMatrix that `Booster.predict` needs, without the
        Python wrapper's checks (half the cost of a one-row explanation)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        handle = ctypes.c_void_p()
        self._check(
            self._lib.XGDMatrixCreateFromDense(
                self._interface(x), self._dmatrix_config, ctypes.byref(handle)
            )
        )
        try:
            self._check(
                self._lib.XGBoosterPredictFromDMatrix(
                    self.booster.handle,
                    handle,
                    self._contribs_config,
                    ctypes.byref(self._shape),
                    ctypes.byref(self._dims),
                    ctypes.byref(self._preds),
                )
            )
        finally:
            self._check(self._lib.XGDMatrixFree(handle))
        return self._out().reshape(len(x), -1)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Per-feature contributions (log-odds) of float32 rows `x`: (n, n_features + 1), the
        bias last; XGBoost's own `pred_contribs`."""
        if self.fast_contribs:
            return self._contributions_fast(x)
        return self._contributions_xgboost(x)

    def _contributions_xgboost(self, x: np.ndarray) -> np.ndarray:
        dm = xgb.DMatrix(np.asarray(x, dtype=np.float32), feature_names=self.booster.feature_names)
        return np.asarray(self.booster.predict(dm, pred_contribs=True), dtype=np.float64)

    def _probe_rows(self) -> np.ndarray:
        rng = np.random.default_rng(0)
        x = rng.normal(0, 50, size=(64, self.n_features)).astype(np.float32)
        x[rng.random(x.shape) < 0.1] = np.nan
        return x

    def _agrees(self, x: np.ndarray) -> bool:
        want = np.asarray(self.booster.inplace_predict(x), dtype=np.float64).reshape(-1)
        got = self._predict_fast(x)
        one = self._predict_fast(x[:1])
        ok = bool(np.array_equal(want, got) and np.array_equal(want[:1], one))
        if not ok:
            log.warning("fast XGBoost path disagrees with inplace_predict; not using it")
        return ok

    def _contributions_agree(self, x: np.ndarray) -> bool:
        ok = bool(np.array_equal(self._contributions_xgboost(x), self._contributions_fast(x)))
        if not ok:
            log.warning("fast contributions path disagrees with Booster.predict; not using it")
        return ok

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.table is not None and len(x) <= self.TABLE_MAX_ROWS:
            return self.table.predict(x)
        if self.fast:
            return self._predict_fast(x)
        return np.asarray(self.booster.inplace_predict(x), dtype=np.float64).reshape(-1)

    def __getstate__(self) -> dict[str, Any]:  # pragma: no cover - never pickled
        raise TypeError("Predictor holds C pointers and cannot be pickled")
