"""Reference bins for drift statistics, and the two distances computed on them.

A continuous column is cut at its reference's quantiles (not at equal widths: heavy-tailed
amounts would land in one or two bins), so each bin holds about the same share of reference
rows; tied quantiles (a feature that is 0 for most rows) merge into one bin. A low-cardinality
column keeps its reference values as categories, plus one bin for values the reference never
had. Both give counts per bin, compared as shares with PSI or the Jensen-Shannon distance.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from scipy.spatial import distance

#: Share given to an empty bin before PSI's logarithm (Evidently's value).
PSI_EPSILON = 1e-4


def quantile_edges(values: np.ndarray, n_bins: int) -> list[float]:
    """Interior edges at the `n_bins`-quantiles of `values` (no NaN), ties merged.

    Bin i holds edges[i-1] < x <= edges[i]; the first and last bins are open-ended.
    """
    if values.size == 0:
        raise ValueError("quantile_edges needs at least one value")
    qs = np.quantile(values, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])
    return [float(q) for q in np.unique(qs)]


def bin_counts(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Rows of `values` (no NaN) per bin of `edges` (len(edges) + 1 bins)."""
    idx = np.searchsorted(np.asarray(edges, dtype=float), values, side="left")
    return np.bincount(idx, minlength=len(edges) + 1)


def category_counts(values: np.ndarray, categories: list[float]) -> np.ndarray:
    """Rows of `values` (no NaN) per category (sorted), then one count of every other value."""
    cats = np.asarray(categories, dtype=float)
    idx = np.searchsorted(cats, values, side="left")
    inside = idx < cats.size
    matched = np.zeros(values.shape, dtype=bool)
    matched[inside] = cats[idx[inside]] == values[inside]
    counts = np.bincount(idx[matched], minlength=cats.size)
    return np.append(counts, int((~matched).sum()))


def shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else np.zeros(counts.shape, dtype=float)


def psi(reference: np.ndarray, current: np.ndarray, eps: float = PSI_EPSILON) -> float:
    """Population stability index of two share vectors: sum (c - r) ln(c / r), empty bins at eps.

    Rules of thumb: < 0.1 stable, 0.1-0.25 a moderate shift, > 0.25 a large one.
    """
    r = np.maximum(reference, eps)
    c = np.maximum(current, eps)
    return float(np.sum((c - r) * np.log(c / r)))


def jensenshannon(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log, so in [0, sqrt(ln 2)]) of two share vectors."""
    return float(distance.jensenshannon(reference, current))


def noise_floor(n_bins: int, n_reference: int, n_current: int, alpha: float) -> float:
    """The PSI that sampling noise alone exceeds with probability `alpha` when both samples
    come from one distribution: for small differences n_eff * PSI ~ chi-square(n_bins - 1),
    with 1 / n_eff = 1 / n_reference + 1 / n_current."""
    if n_bins < 2 or n_current == 0 or n_reference == 0:
        return math.inf
    return float(stats.chi2.ppf(1 - alpha, n_bins - 1) * (1 / n_reference + 1 / n_current))


def js_from_psi(psi_value: float) -> float:
    """The Jensen-Shannon distance matching a small PSI: both are quadratic in the share
    differences near zero (JS^2 ~ chi2 / 8, PSI ~ chi2), so JS ~ sqrt(PSI / 8)."""
    return math.sqrt(psi_value / 8) if math.isfinite(psi_value) else math.inf
