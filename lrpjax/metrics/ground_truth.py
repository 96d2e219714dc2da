"""Ground-truth metrics: how well an attribution recovers the steps known to matter.

* :func:`topk_accuracy` -- share of sequences whose ``k`` largest ``|R_t|`` are exactly the marked steps.
* :func:`marked_share` -- share of ``sum_t |R_t|`` that falls on the marked steps, per sequence.
"""
from __future__ import annotations

import numpy as np

from lrpjax.metrics import arguments


def topk_accuracy(R_steps, marked, mask=None) -> float:
    """Share of sequences whose ``k`` largest ``|R_t|`` are exactly the ``k`` marked steps.

    A row counts as a hit iff every marked step has a strictly larger ``|R_t|`` than every unmarked
    step (``min_marked |R| > max_unmarked |R|``). **Ties** at the boundary therefore count as a miss
    (an attribution that is constant, e.g. all zeros, never scores), independent of any sort order.

    Args:
      R_steps: ``(N, T)`` relevance per step.
      marked: ``(N, k)`` integer positions in ``[0, T)``, distinct within a row.
      mask: ``None`` (all rows) or ``(N,)`` bool: only rows where it is True are counted.
    Returns:
      The share of hits among the counted rows (a float in ``[0, 1]``; ``nan`` if no row is counted).

    >>> import numpy as np, lrpjax
    >>> R = np.array([[0.1, -3.0, 2.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    >>> lrpjax.metrics.topk_accuracy(R, np.array([[1, 2], [0, 1]]))   # row 1: tie 1.0 == 1.0
    0.5
    """
    fn = "topk_accuracy"
    R = np.abs(arguments.steps(R_steps, fn))
    N, T = R.shape
    on = arguments.marked_mask(marked, N, T, fn)
    k = np.asarray(marked).shape[1]
    if np.any(on.sum(axis=1) != k):
        raise ValueError(f"{fn}: marked positions must be distinct within each row (rows "
                         f"{np.flatnonzero(on.sum(axis=1) != k)[:5].tolist()} repeat a position).")
    rows = np.ones(N, bool) if mask is None else arguments.row_vector(mask, N, "mask", fn, "bool")
    if not rows.any():
        return float("nan")
    lo = np.where(on, R, np.inf).min(axis=1)       # smallest |R| on a marked step
    hi = np.where(on, -np.inf, R).max(axis=1)      # largest |R| on an unmarked step
    return float(np.mean((lo > hi)[rows]))


def marked_share(R_steps, marked, lengths=None) -> np.ndarray:
    """Share of ``sum_t |R_t|`` on the marked steps, per sequence: ``(N,)`` float64.

    ``share_n = sum_{t marked, t < len_n} |R_nt| / sum_{t < len_n} |R_nt|``; a repeated position counts
    once; ``nan`` (no warning) for a row whose valid steps all have ``R = 0``.

    Args:
      R_steps: ``(N, T)``.
      marked: ``(N, k)`` integer positions in ``[0, T)``.
      lengths: ``None`` (all ``T`` steps valid) or ``(N,)`` integer valid lengths in ``[0, T]``.

    >>> import numpy as np, lrpjax
    >>> lrpjax.metrics.marked_share(np.array([[1.0, -3.0, 0.0, 4.0]]), np.array([[1]]))
    array([0.375])
    """
    fn = "marked_share"
    R = np.abs(arguments.steps(R_steps, fn))
    N, T = R.shape
    on = arguments.marked_mask(marked, N, T, fn)
    if lengths is not None:
        L = arguments.row_vector(lengths, N, "lengths", fn, "integer")
        if L.size and (L.min() < 0 or L.max() > T):
            raise ValueError(f"{fn}: lengths must lie in [0, {T}], got values in [{L.min()}, {L.max()}].")
        R = np.where(np.arange(T)[None, :] < L[:, None], R, 0.0)
    num, den = np.sum(np.where(on, R, 0.0), axis=1), np.sum(R, axis=1)
    return np.divide(num, den, out=np.full(N, np.nan), where=den > 0)
