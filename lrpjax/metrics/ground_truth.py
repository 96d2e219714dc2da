"""Ground-truth metrics: how well an attribution recovers the steps known to matter.

* :func:`topk_accuracy` -- share of sequences whose ``k`` largest ``|R_t|`` are exactly the marked steps.
* :func:`marked_share` -- share of ``sum_t |R_t|`` that falls on the marked steps, per sequence.
* :func:`relevance_rank_accuracy`, :func:`relevance_mass_accuracy` -- the localisation metrics of
  Arras et al. (2022, "CLEVR-XAI") for a ground-truth mask over steps, per sequence, with the
  arguments, defaults and score direction (higher is better) of Quantus 0.6.0.
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
    R = np.where(arguments.valid_steps(lengths, N, T, fn), R, 0.0)
    num, den = np.sum(np.where(on, R, 0.0), axis=1), np.sum(R, axis=1)
    return np.divide(num, den, out=np.full(N, np.nan), where=den > 0)


# ---------------------------------------------------------------------------------------------
# Localisation metrics of Arras et al. (2022), with the arguments and defaults of Quantus 0.6.0

def _localisation_inputs(R_steps, mask, lengths, abs, normalise, normalise_func, fn):
    """``(A, inside, valid)``, each ``(N, T)``: the relevance as the metric scores it (padding zeroed,
    then normalised, then ``|.|`` if asked, in Quantus' order), the mask's valid steps, the valid steps."""
    R = arguments.steps(R_steps, fn)
    N, T = R.shape
    m = np.asarray(mask)
    if m.shape != (N, T) or not np.issubdtype(m.dtype, np.bool_):
        raise ValueError(f"{fn}: mask must be a bool array of shape (N, T) = ({N}, {T}) (True on the "
                         f"ground-truth steps), got shape {m.shape} with dtype {m.dtype}.")
    valid = arguments.valid_steps(lengths, N, T, fn)
    A = np.where(valid, R, 0.0)
    if normalise:
        A = normalised(A, normalise_func, fn)
    if abs:
        A = np.abs(A)
    return A, m & valid, valid


def normalised(A, normalise_func, fn: str) -> np.ndarray:
    """``normalise_func(A)`` (checked: same shape, finite), or by default ``A / max |A|`` over the
    whole array (Quantus' ``normalise_by_max`` with its default axes; an all-zero ``A`` is returned
    as is). ``A`` is ``(N, T)`` float64; so is the result."""
    if normalise_func is None:
        top = np.max(np.abs(A), initial=0.0)
        return A / top if top > 0 else A
    if not callable(normalise_func):
        raise ValueError(f"{fn}: normalise_func must be None or a callable (N, T) -> (N, T), got "
                         f"{type(normalise_func).__name__}.")
    out = np.asarray(normalise_func(A), dtype=np.float64)
    if out.shape != A.shape or not np.all(np.isfinite(out)):
        raise ValueError(f"{fn}: normalise_func must return finite values of the shape it is given "
                         f"{A.shape}, got shape {out.shape}"
                         + ("" if out.shape != A.shape else " with NaN/inf values") + ".")
    return out


def relevance_rank_accuracy(R_steps, mask, lengths=None, *, abs: bool = False, normalise: bool = True,
                            normalise_func=None) -> np.ndarray:
    """Relevance rank accuracy (Arras et al. 2022, "CLEVR-XAI: A benchmark dataset for the ground truth
    evaluation of neural network explanations", Inf. Fusion 81): per sequence, the share of the ``K``
    ground-truth steps among the ``K`` steps with the largest relevance. ``(N,)`` float64, higher is better.

    ``score_n = |top_K(A_n) & GT_n| / K_n`` with ``GT_n`` the mask's valid steps, ``K_n = |GT_n|`` and
    ``A_n`` the relevance of the valid steps (``t < lengths[n]``; padded steps are never ranked), made
    as Quantus' ``RelevanceRankAccuracy`` makes it: divided by its largest ``|value|`` over the whole
    batch if ``normalise`` (does not change the ranks), then ``|.|`` if ``abs``. With the default
    ``abs=False`` the largest *signed* relevance ranks first.

    **Ties** (which Quantus leaves to the order of NumPy's unstable ``argsort``): tied steps share the
    places left at the top-``K`` boundary equally, i.e. the score is its mean over every order of the
    tied steps. A constant relevance therefore scores ``K / #valid steps`` (chance), not more or less.
    Identical to Quantus for relevance without ties. ``nan`` (no warning) where the mask has no valid
    step (Quantus: ``nan`` for an empty mask, with a warning).

    Args:
      R_steps: ``(N, T)`` relevance per step.
      mask: ``(N, T)`` bool, True on the ground-truth steps (Quantus' ``s_batch``); True on a padded
        step is ignored.
      lengths: ``None`` (all ``T`` steps valid) or ``(N,)`` integer valid lengths in ``[0, T]``.
      abs, normalise, normalise_func: as in Quantus (defaults ``False``, ``True``, ``None``);
        ``normalise_func`` maps the ``(N, T)`` float64 batch (zeros at padded steps) to its normalised
        values; ``None`` divides by the batch's largest ``|R|``.

    >>> import numpy as np, lrpjax
    >>> R = np.array([[0.1, -3.0, 2.0, 0.5], [1.0, 1.0, 1.0, 1.0]])
    >>> gt = np.array([[False, True, True, False], [True, True, False, False]])
    >>> lrpjax.metrics.relevance_rank_accuracy(R, gt)           # row 0: top-2 = steps 2, 3
    array([0.5, 0.5])
    >>> lrpjax.metrics.relevance_rank_accuracy(R, gt, abs=True)  # row 0: top-2 = steps 1, 2
    array([1. , 0.5])
    """
    fn = "relevance_rank_accuracy"
    A, inside, valid = _localisation_inputs(R_steps, mask, lengths, abs, normalise, normalise_func, fn)
    N, T = A.shape
    K = inside.sum(axis=1)
    order = np.argsort(np.where(valid, -A, np.inf), axis=1, kind="stable")   # largest first, padding last
    S = np.take_along_axis(np.where(valid, A, -np.inf), order, axis=1)
    pos = np.broadcast_to(np.arange(T), (N, T))
    first = np.ones((N, T), bool)
    first[:, 1:] = S[:, 1:] != S[:, :-1]
    last = np.ones((N, T), bool)
    last[:, :-1] = first[:, 1:]
    start = np.maximum.accumulate(np.where(first, pos, 0), axis=1)            # tie group [start, end)
    end = np.minimum.accumulate(np.where(last, pos + 1, T)[:, ::-1], axis=1)[:, ::-1]
    share = np.clip(K[:, None] - start, 0, end - start) / (end - start)       # P(step in the top K)
    hits = np.sum(share * np.take_along_axis(inside, order, axis=1), axis=1)
    return np.divide(hits, K, out=np.full(N, np.nan), where=K > 0)


def relevance_mass_accuracy(R_steps, mask, lengths=None, *, abs: bool = False, normalise: bool = True,
                            normalise_func=None) -> np.ndarray:
    """Relevance mass accuracy (Arras et al. 2022, "CLEVR-XAI", Inf. Fusion 81): per sequence, the
    relevance on the ground-truth steps over the relevance on all valid steps. ``(N,)`` float64,
    higher is better.

    ``score_n = sum_{t in GT_n} A_nt / sum_{t < len_n} A_nt``, with ``A`` made as in
    :func:`relevance_rank_accuracy` (Quantus' ``RelevanceMassAccuracy``: normalise, then ``|.|`` if
    ``abs``). With the default ``abs=False`` the sums are *signed*, as in Quantus: negative relevance
    can push the score below 0 or above 1; ``abs=True`` gives a share in ``[0, 1]`` (like
    :func:`marked_share`). ``nan`` (no warning) where the mask has no valid step or the denominator is
    0, e.g. all-zero relevance (Quantus: ``nan`` with a warning, or ``inf`` for a zero denominator).

    Args:
      R_steps: ``(N, T)``; mask: ``(N, T)`` bool; lengths: ``None`` or ``(N,)`` integers in ``[0, T]``;
      abs, normalise, normalise_func: as in :func:`relevance_rank_accuracy`.

    >>> import numpy as np, lrpjax
    >>> R = np.array([[1.0, -3.0, 0.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    >>> gt = np.array([[False, True, False, True], [True, False, False, False]])
    >>> lrpjax.metrics.relevance_mass_accuracy(R, gt)
    array([0.5, nan])
    >>> lrpjax.metrics.relevance_mass_accuracy(R, gt, abs=True)
    array([0.875,   nan])
    """
    fn = "relevance_mass_accuracy"
    A, inside, valid = _localisation_inputs(R_steps, mask, lengths, abs, normalise, normalise_func, fn)
    num, den = np.sum(np.where(inside, A, 0.0), axis=1), np.sum(np.where(valid, A, 0.0), axis=1)
    return np.divide(num, den, out=np.full(A.shape[0], np.nan), where=(den != 0) & inside.any(axis=1))
