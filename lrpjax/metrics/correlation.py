"""Correlation coefficients used by the metrics (host side, float64)."""
from __future__ import annotations

import numpy as np


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
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"pearson: a and b must have the same number of values, got {np.shape(a)} "
                         f"({x.size} values) and {np.shape(b)} ({y.size} values).")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("pearson: a and b must be finite (got NaN/inf values).")
    if x.size < 2:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    sx, sy = np.sqrt(np.sum(dx * dx)), np.sqrt(np.sum(dy * dy))
    if sx == 0.0 or sy == 0.0:
        return float("nan")
    return float(np.clip(np.sum(dx * dy) / (sx * sy), -1.0, 1.0))
