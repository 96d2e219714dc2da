"""Argument checks shared by the metrics: each names the metric, the argument, and expected vs actual."""
from __future__ import annotations

import numpy as np


def steps(R_steps, fn: str) -> np.ndarray:
    R = np.asarray(R_steps)
    if R.ndim != 2 or not np.issubdtype(R.dtype, np.floating):
        raise ValueError(f"{fn}: R_steps must be a floating array of shape (N, T) (one value per step; "
                         f"reduce x-shaped attributions with lrpjax.baselines.per_step), got shape "
                         f"{R.shape} with dtype {R.dtype}.")
    if not np.all(np.isfinite(R)):
        raise ValueError(f"{fn}: R_steps contains {int(R.size - np.isfinite(R).sum())} NaN/inf value(s).")
    return R.astype(np.float64)


def marked_mask(marked, N: int, T: int, fn: str) -> np.ndarray:
    """``(N, T)`` bool: True at the marked positions; validates ``marked`` ``(N, k)`` ints in ``[0, T)``."""
    m = np.asarray(marked)
    if m.ndim != 2 or m.shape[0] != N or not np.issubdtype(m.dtype, np.integer):
        raise ValueError(f"{fn}: marked must be an integer array of shape (N, k) = ({N}, k) of step "
                         f"positions, got shape {m.shape} with dtype {m.dtype}.")
    if m.size and (m.min() < 0 or m.max() >= T):
        raise ValueError(f"{fn}: marked positions must lie in [0, {T}) for T={T} steps, got values in "
                         f"[{m.min()}, {m.max()}].")
    mask = np.zeros((N, T), dtype=bool)
    mask[np.arange(N)[:, None], m] = True
    return mask


def row_vector(a, N: int, name: str, fn: str, kind: str) -> np.ndarray:
    v = np.asarray(a)
    ok_dtype = np.issubdtype(v.dtype, np.bool_) if kind == "bool" else np.issubdtype(v.dtype, np.integer)
    if v.shape != (N,) or not ok_dtype:
        article = "an" if kind[0] in "aeiou" else "a"
        raise ValueError(f"{fn}: {name} must be {article} {kind} array of shape ({N},), got shape {v.shape} "
                         f"with dtype {v.dtype}.")
    return v


def valid_steps(lengths, N: int, T: int, fn: str) -> np.ndarray:
    """``(N, T)`` bool, True at ``t < lengths[n]`` (all True for ``lengths=None``); checks ``lengths``
    ``(N,)`` integers in ``[0, T]``."""
    if lengths is None:
        return np.ones((N, T), bool)
    L = row_vector(lengths, N, "lengths", fn, "integer")
    if L.size and (L.min() < 0 or L.max() > T):
        raise ValueError(f"{fn}: lengths must lie in [0, {T}], got values in [{L.min()}, {L.max()}].")
    return np.arange(T)[None, :] < L[:, None]
