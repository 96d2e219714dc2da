"""Correlation coefficients used by the metrics (host side, float64)."""
from __future__ import annotations

import numpy as np


def _pair(a, b, fn: str) -> tuple[np.ndarray, np.ndarray]:
    """``a``, ``b`` flattened to float64, checked: the same number of values, all finite."""
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"{fn}: a and b must have the same number of values, got {np.shape(a)} "
                         f"({x.size} values) and {np.shape(b)} ({y.size} values).")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError(f"{fn}: a and b must be finite (got NaN/inf values).")
    return x, y


def pearson(a, b) -> float:
    """Pearson correlation of two equally sized arrays (flattened), in float64.

    Returns ``nan`` (without a warning) if either input is constant or has fewer than 2 values.
    Raises ``ValueError`` if the sizes differ or a value is NaN/inf.

    >>> import numpy as np, lrpjax
    >>> round(lrpjax.metrics.pearson(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 7.0])), 4)
    0.9934
    >>> lrpjax.metrics.pearson(np.ones(3), np.arange(3.0))
    nan
    """
    x, y = _pair(a, b, "pearson")
    if x.size < 2:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    sx, sy = np.sqrt(np.sum(dx * dx)), np.sqrt(np.sum(dy * dy))
    if sx == 0.0 or sy == 0.0:
        return float("nan")
    return float(np.clip(np.sum(dx * dy) / (sx * sy), -1.0, 1.0))


def _average_ranks(v) -> np.ndarray:
    """Ranks ``1..n`` of a 1-D array (float64), tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(np.asarray(v), return_inverse=True, return_counts=True)
    last = np.cumsum(counts).astype(np.float64)          # rank of the last value in each tie group
    return (last - (counts - 1) / 2.0)[inverse.ravel()]


def spearman(a, b) -> float:
    """Spearman rank correlation of two equally sized arrays (flattened), in float64: the Pearson
    correlation of their ranks, tied values sharing their average rank (as ``scipy.stats.spearmanr``
    and Quantus' ``correlation_spearman``, the default similarity of its MPRT).

    Returns ``nan`` (without a warning) if either input is constant or has fewer than 2 values, and
    exactly ``1.0`` for two arrays in the same order. Raises ``ValueError`` if the sizes differ or a
    value is NaN/inf.

    >>> import numpy as np, lrpjax
    >>> lrpjax.metrics.spearman(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 70.0]))
    1.0
    >>> round(lrpjax.metrics.spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 2.0])), 4)
    0.3162
    >>> lrpjax.metrics.spearman(np.ones(3), np.arange(3.0))
    nan
    """
    x, y = _pair(a, b, "spearman")
    if x.size < 2:
        return float("nan")
    rx, ry = _average_ranks(x), _average_ranks(y)
    dx, dy = rx - rx.mean(), ry - ry.mean()
    sxy, sxx, syy = np.sum(dx * dy), np.sum(dx * dx), np.sum(dy * dy)
    if sxx == 0.0 or syy == 0.0:
        return float("nan")
    return float(np.clip(sxy / np.sqrt(sxx * syy), -1.0, 1.0))   # sqrt(s * s) == s: equal ranks give 1
