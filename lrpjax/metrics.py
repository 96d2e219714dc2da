"""Metrics for comparing attributions: ground-truth recovery and word deletion.

* :func:`topk_accuracy` -- share of sequences whose ``k`` largest ``|R_t|`` are exactly the marked steps.
* :func:`marked_share` -- share of ``sum_t |R_t|`` that falls on the marked steps, per sequence.
* :func:`pearson` -- Pearson correlation of two attributions (``nan`` for a constant input, no warning).
* :func:`deletion_curve` -- accuracy after deleting the ``1..k_max`` most (or least) relevant words
  (Arras et al. 2017, "Explaining Recurrent Neural Network Predictions in Sentiment Analysis").

``R_steps`` is one value per time step, ``(N, T)`` (reduce ``x``-shaped attributions with
:func:`lrpjax.baselines.per_step`). The first three metrics run on the host (NumPy, float64) and accept
NumPy or JAX arrays; :func:`deletion_curve` runs the model in one jitted call.
"""
from __future__ import annotations

import numbers
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = ["deletion_curve", "marked_share", "pearson", "topk_accuracy"]

ORDERS = ("most", "least")


def _steps(R_steps, fn: str) -> np.ndarray:
    R = np.asarray(R_steps)
    if R.ndim != 2 or not np.issubdtype(R.dtype, np.floating):
        raise ValueError(f"{fn}: R_steps must be a floating array of shape (N, T) (one value per step; "
                         f"reduce x-shaped attributions with lrpjax.baselines.per_step), got shape "
                         f"{R.shape} with dtype {R.dtype}.")
    if not np.all(np.isfinite(R)):
        raise ValueError(f"{fn}: R_steps contains {int(R.size - np.isfinite(R).sum())} NaN/inf value(s).")
    return R.astype(np.float64)


def _marked_mask(marked, N: int, T: int, fn: str) -> np.ndarray:
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


def _row_vector(a, N: int, name: str, fn: str, kind: str) -> np.ndarray:
    v = np.asarray(a)
    ok_dtype = np.issubdtype(v.dtype, np.bool_) if kind == "bool" else np.issubdtype(v.dtype, np.integer)
    if v.shape != (N,) or not ok_dtype:
        article = "an" if kind[0] in "aeiou" else "a"
        raise ValueError(f"{fn}: {name} must be {article} {kind} array of shape ({N},), got shape {v.shape} "
                         f"with dtype {v.dtype}.")
    return v


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
    R = np.abs(_steps(R_steps, fn))
    N, T = R.shape
    on = _marked_mask(marked, N, T, fn)
    k = np.asarray(marked).shape[1]
    if np.any(on.sum(axis=1) != k):
        raise ValueError(f"{fn}: marked positions must be distinct within each row (rows "
                         f"{np.flatnonzero(on.sum(axis=1) != k)[:5].tolist()} repeat a position).")
    rows = np.ones(N, bool) if mask is None else _row_vector(mask, N, "mask", fn, "bool")
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
    R = np.abs(_steps(R_steps, fn))
    N, T = R.shape
    on = _marked_mask(marked, N, T, fn)
    if lengths is not None:
        L = _row_vector(lengths, N, "lengths", fn, "integer")
        if L.size and (L.min() < 0 or L.max() > T):
            raise ValueError(f"{fn}: lengths must lie in [0, {T}], got values in [{L.min()}, {L.max()}].")
        R = np.where(np.arange(T)[None, :] < L[:, None], R, 0.0)
    num, den = np.sum(np.where(on, R, 0.0), axis=1), np.sum(R, axis=1)
    return np.divide(num, den, out=np.full(N, np.nan), where=den > 0)


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


# ----------------------------------------------------------------------------------------------
# Word deletion

def deletion_order(R_steps: Array, lengths: Array, order: str = "most") -> Array:
    """Rank of each step in the deletion order, ``(N, T)`` int32: 0 is deleted first.

    ``order="most"``: decreasing relevance (signed); ``"least"``: increasing. Only valid steps
    (``t < lengths[n]``) come before the padding; ties go to the earlier position. Jittable.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}.")
    T = R_steps.shape[-1]
    key = -R_steps if order == "most" else R_steps
    key = jnp.where(jnp.arange(T) < lengths[:, None], key, jnp.inf)
    perm = jnp.argsort(key, axis=-1, stable=True)          # perm[n, j] = step deleted j-th
    return jnp.argsort(perm, axis=-1).astype(jnp.int32)    # the inverse permutation


def _deletion_accuracies(model_fn, x_emb, lengths, labels, R_steps, fill, k_max: int, order: str):
    rank = deletion_order(R_steps, lengths, order)
    valid = jnp.arange(x_emb.shape[1]) < lengths[:, None]

    def accuracy(k):
        drop = (rank < k) & valid                           # the k first in order (all if k > length)
        logits = model_fn(jnp.where(drop[..., None], fill, x_emb), lengths)
        return jnp.sum(jnp.argmax(logits, axis=-1) == labels, dtype=jnp.int32)

    return jax.lax.map(accuracy, jnp.arange(k_max + 1))


_deletion_jit = jax.jit(_deletion_accuracies, static_argnums=(0, 6, 7))


def deletion_curve(model_fn: Callable[[Array, Array], Array], x_emb, lengths, labels, R_steps, *,
                   k_max: int = 5, order: str = "most", fill=0.0) -> np.ndarray:
    """Accuracy of ``model_fn`` after deleting the ``k = 0..k_max`` most / least relevant words.

    Deleting a word sets its embedding to ``fill``. ``order="most"`` deletes the words with the
    highest (signed) relevance first: for correctly classified sentences and the relevance of the
    true class, the accuracy should drop fast. ``order="least"`` deletes the lowest-relevance words
    first: for misclassified sentences and the relevance of the true class, the share predicted as
    the label should rise. Both report ``mean(argmax model_fn(x_deleted, lengths) == labels)``; select
    the sentences (correct / misclassified) before calling. Only valid steps ``t < lengths[n]`` are
    deleted; a sentence with fewer than ``k`` words has all of them deleted. Ties in relevance go to
    the earlier position. ``lengths`` stay as given (the deleted words remain in the sequence as
    ``fill``, as in Arras et al. 2017).

    Args:
      model_fn: ``(x_emb (N, T, E), lengths (N,)) -> logits (N, C)``; must be jittable and hashable (a
        function; one compilation per model_fn, shapes, ``k_max`` and ``order``).
      x_emb: ``(N, T, E)`` floating embedded sentences (padded).
      lengths: ``(N,)`` integer lengths in ``[1, T]``.
      labels: ``(N,)`` integer labels.
      R_steps: ``(N, T)`` relevance per word (the padding's values are ignored).
      k_max: largest number of deleted words (int >= 0).
      order: ``"most"`` or ``"least"``.
      fill: number or ``(E,)`` array that replaces a deleted word's embedding.
    Returns:
      ``(k_max + 1,)`` float64 NumPy array; index ``k`` is the accuracy after ``k`` deletions (index 0:
      nothing deleted).

    >>> import jax.numpy as jnp, numpy as np, lrpjax
    >>> model = lambda x, l: jnp.stack([x.sum((1, 2)), jnp.zeros(x.shape[0])], -1)  # class 0 iff sum > 0
    >>> x = jnp.array([[[3.0], [-1.0], [0.5]]])                                   # one sentence
    >>> R = np.array([[3.0, -1.0, 0.5]])
    >>> lrpjax.metrics.deletion_curve(model, x, jnp.array([3]), jnp.array([0]), R, k_max=2)
    array([1., 0., 0.])
    >>> lrpjax.metrics.deletion_curve(model, x, jnp.array([3]), jnp.array([0]), R, k_max=2, order="least")
    array([1., 1., 1.])
    """
    fn = "deletion_curve"
    if order not in ORDERS:
        raise ValueError(f"{fn}: order must be one of {ORDERS}, got {order!r}.")
    if isinstance(k_max, bool) or not isinstance(k_max, numbers.Integral) or k_max < 0:
        raise ValueError(f"{fn}: k_max must be an int >= 0, got {k_max!r}.")
    if not callable(model_fn):
        raise ValueError(f"{fn}: model_fn must be callable ((x_emb, lengths) -> logits), got "
                         f"{type(model_fn).__name__}.")
    x = jnp.asarray(x_emb)
    if x.ndim != 3 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{fn}: x_emb must be a floating array of shape (N, T, E), got shape "
                         f"{tuple(x.shape)} with dtype {x.dtype}.")
    N, T, E = x.shape
    if N == 0:
        raise ValueError(f"{fn}: x_emb must hold at least one sentence (N >= 1), got shape {tuple(x.shape)}.")
    R = _steps(R_steps, fn)
    if R.shape != (N, T):
        raise ValueError(f"{fn}: R_steps must have shape (N, T) = {(N, T)} like x_emb, got {R.shape}.")
    L = _row_vector(lengths, N, "lengths", fn, "integer")
    if L.size and (L.min() < 1 or L.max() > T):
        raise ValueError(f"{fn}: lengths must lie in [1, {T}], got values in [{L.min()}, {L.max()}].")
    y = _row_vector(labels, N, "labels", fn, "integer")
    f = jnp.asarray(fill, x.dtype)
    if f.shape not in ((), (E,)):
        raise ValueError(f"{fn}: fill must be a number or an array of shape ({E},), got shape {f.shape}.")
    hits = _deletion_jit(model_fn, x, jnp.asarray(L), jnp.asarray(y), jnp.asarray(np.asarray(R_steps)),
                         f, int(k_max), order)
    return np.asarray(hits, np.float64) / N
