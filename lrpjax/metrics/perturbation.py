"""Perturbation-based faithfulness metrics for sequence models, after Quantus 0.6.0.

Each metric replaces time steps (tokens) of ``x`` with a baseline and records the model's score for
the target class. The names, arguments, defaults and score directions follow Quantus 0.6.0 (Hedström
et al. 2023, "Quantus: An Explainable AI Toolkit ...", JMLR 24(34)), which only accepts PyTorch and
TensorFlow models; a "feature" of Quantus is a whole time step here (``R`` is summed over features).

* :func:`pixel_flipping` -- step flipping curve, most / least relevant first (Bach et al. 2015; Samek
  et al. 2017). Lower is better for ``"morf"``.
* :func:`region_perturbation` -- curve of score drops when windows of ``patch_size`` steps are
  replaced (Samek et al. 2017). Higher is better for ``"morf"`` (Quantus lists "lower").
* :func:`faithfulness_correlation` -- Pearson correlation of relevance sums and score drops over
  random subsets (Bhatt et al. 2020). Higher is better.
* :func:`monotonicity_correlation` -- Spearman correlation of relevance and the score variance
  caused by replacing each step (Nguyen & Martinez 2020). Higher is better.
* :func:`sensitivity_n` -- Pearson correlation, across examples, of relevance and score drops
  (Ancona et al. 2018, as Quantus implements it). Higher is better.
* :func:`completeness` -- ``sum R - (f(x) - f(baseline))`` (Sundararajan et al. 2017). Zero is best.
* :func:`perturb` -- the step replacement they all use, on its own.

Common arguments: ``model_fn(x, lengths) -> scores (N, C)`` (jittable and hashable: one compilation
per model, shapes and options), ``x (N, T, F)`` floating, ``R (N, T)`` one relevance per step or
``(N, T, F)`` (summed over features, after ``abs``), ``target (N,)`` ints, ``lengths (N,)`` in
``[1, T]`` (default ``T``). Only valid steps ``t < lengths[n]`` are perturbed or ranked; the padding
stays as it is and its relevance is ignored. ``softmax`` selects probabilities or logits (the default
is Quantus' for that metric). Results are float64 NumPy arrays.

Baselines (``perturb_baseline``): ``"zero"``; a number; an ``(F,)`` vector (e.g. an UNK embedding);
an ``(N, T, F)`` array; ``"mean"`` (per sequence and feature over its valid steps; Quantus: one number,
the mean of the whole, already perturbed, input); ``"black"`` / ``"white"`` (min / max over the
sequence's valid values, as Quantus); ``"uniform"`` (alias ``"noise"``): values drawn from
``U[uniform_low, uniform_high)`` (``perturb_func_kwargs``, default ``[0, 1)``: Quantus' "uniform", which
draws one number per example and replacement instead of one per value). Randomness (``"uniform"``,
``order="random"``, random subsets) comes from ``key``: ``k_order, k_fill = jax.random.split(key)``;
the values of draw ``j`` are ``jax.random.uniform(jax.random.fold_in(k_fill, j), x.shape, x.dtype,
low, high)``. Each metric's docstring says which draw and which ``k_order`` numbers it uses.

Not taken from Quantus: its ``normalise=True`` (division by the batch's max ``|R|``; no metric here
but :func:`completeness` depends on a positive rescaling, and there it would break conservation),
custom ``perturb_func``, ``similarity_func`` and explanation functions.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from lrpjax.metrics import arguments
from lrpjax.metrics.correlation import pearson, spearman

Array = jax.Array

PERTURB_BASELINES = ("zero", "mean", "black", "white", "uniform", "noise")
PERTURB_ORDERS = ("morf", "lerf", "random")


class _Data(NamedTuple):
    x: Array              # (N, T, F)
    lengths: np.ndarray   # (N,) int
    R: np.ndarray         # (N, T) float64, padding zeroed
    target: np.ndarray    # (N,) int


class _Baseline(NamedTuple):
    mode: str             # "const", "mean", "black", "white", "uniform"
    const: Array
    low: float
    high: float


# --------------------------------------------------------------------------------------------
# argument checks

def _int_arg(fn: str, name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {value!r}.")
    return int(value)


def _check_x(fn: str, x) -> Array:
    x = jnp.asarray(x)
    if x.ndim != 3 or not jnp.issubdtype(x.dtype, jnp.floating) or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{fn}: x must be a floating array of shape (N, T, F) with N, T >= 1, got shape "
                         f"{tuple(x.shape)} with dtype {x.dtype}.")
    return x


def _check_lengths(fn: str, lengths, N: int, T: int) -> np.ndarray:
    if lengths is None:
        return np.full(N, T, np.int64)
    L = arguments.row_vector(lengths, N, "lengths", fn, "integer").astype(np.int64)
    if L.min() < 1 or L.max() > T:
        raise ValueError(f"{fn}: lengths must lie in [1, {T}] (T={T}), got values in [{L.min()}, {L.max()}].")
    return L


def _check_relevance(fn: str, R, shape: tuple, take_abs: bool) -> np.ndarray:
    R = np.asarray(R)
    if R.shape not in (shape[:2], shape) or not np.issubdtype(R.dtype, np.floating):
        raise ValueError(f"{fn}: R must be a floating array of shape (N, T) = {shape[:2]} or (N, T, F) = "
                         f"{shape} like x, got shape {R.shape} with dtype {R.dtype}.")
    if not np.all(np.isfinite(R)):
        raise ValueError(f"{fn}: R contains {int(R.size - np.isfinite(R).sum())} NaN/inf value(s).")
    R = np.abs(R.astype(np.float64)) if take_abs else R.astype(np.float64)
    return R.sum(-1) if R.ndim == 3 else R


def _check_model(fn: str, model_fn, x: Array, lengths: np.ndarray, target: np.ndarray) -> None:
    if not callable(model_fn):
        raise ValueError(f"{fn}: model_fn must be callable ((x, lengths) -> scores (N, C)), got "
                         f"{type(model_fn).__name__}.")
    N = x.shape[0]
    out = jax.eval_shape(model_fn, jax.ShapeDtypeStruct(x.shape, x.dtype),
                         jax.ShapeDtypeStruct((N,), jnp.int32))
    if not hasattr(out, "shape") or len(out.shape) != 2 or out.shape[0] != N:
        raise ValueError(f"{fn}: model_fn(x, lengths) must return scores of shape (N, C) = ({N}, C), got "
                         f"{getattr(out, 'shape', type(out).__name__)}.")
    C = out.shape[1]
    if target.min() < 0 or target.max() >= C:
        raise ValueError(f"{fn}: target must lie in [0, {C}) for C={C} classes, got values in "
                         f"[{target.min()}, {target.max()}].")


def _prepare(fn: str, model_fn, x, R, target, lengths, take_abs: bool) -> _Data:
    x = _check_x(fn, x)
    N, T, F = x.shape
    L = _check_lengths(fn, lengths, N, T)
    R = _check_relevance(fn, R, (N, T, F), take_abs)
    y = arguments.row_vector(target, N, "target", fn, "integer").astype(np.int64)
    _check_model(fn, model_fn, x, L, y)
    R = np.where(np.arange(T) < L[:, None], R, 0.0)
    return _Data(x, L, R, y)


def _check_baseline(fn: str, perturb_baseline, perturb_func_kwargs, x: Array) -> _Baseline:
    kw = dict(perturb_func_kwargs or {})
    unknown = sorted(set(kw) - {"uniform_low", "uniform_high"})
    if unknown:
        raise ValueError(f"{fn}: perturb_func_kwargs accepts only 'uniform_low' and 'uniform_high', got "
                         f"{unknown}.")
    low, high = float(kw.get("uniform_low", 0.0)), float(kw.get("uniform_high", 1.0))
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ValueError(f"{fn}: perturb_func_kwargs needs finite uniform_low <= uniform_high, got "
                         f"[{low}, {high}].")
    none = jnp.zeros((), x.dtype)
    if isinstance(perturb_baseline, str):
        if perturb_baseline not in PERTURB_BASELINES:
            raise ValueError(f"{fn}: perturb_baseline must be one of {PERTURB_BASELINES}, a number, an "
                             f"(F,) or (N, T, F) array, got {perturb_baseline!r}.")
        mode = {"zero": "const", "noise": "uniform"}.get(perturb_baseline, perturb_baseline)
        return _Baseline(mode, none, low, high)
    b = np.asarray(perturb_baseline)
    if b.shape not in ((), x.shape[2:], x.shape) or not (np.issubdtype(b.dtype, np.number)
                                                          and np.all(np.isfinite(b))):
        raise ValueError(f"{fn}: perturb_baseline must be one of {PERTURB_BASELINES}, a finite number, "
                         f"an (F,) = {x.shape[2:]} or (N, T, F) = {tuple(x.shape)} array, got shape "
                         f"{b.shape} with dtype {b.dtype}.")
    return _Baseline("const", jnp.broadcast_to(jnp.asarray(b, x.dtype), x.shape), low, high)


def _keys(fn: str, key, needed: bool, why: str):
    """``(k_order, k_fill)``; ``key`` may be None when nothing random is asked for."""
    if key is None:
        if needed:
            raise ValueError(f"{fn}: key must be a jax.random key ({why}), got None.")
        key = jax.random.key(0)
    try:
        k_order, k_fill = jax.random.split(key)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{fn}: key must be a jax.random key (jax.random.key(seed) or "
                         f"jax.random.PRNGKey(seed)), got {type(key).__name__}: {e}") from None
    return k_order, k_fill


# --------------------------------------------------------------------------------------------
# ranking (host, float64) and the jitted evaluation of perturbed inputs

def _rank(values: np.ndarray, n_valid: np.ndarray) -> np.ndarray:
    """``(N, M)`` int: rank of each entry in increasing ``values`` among the first ``n_valid[n]``
    (ties: earlier first); the invalid entries come after them."""
    N, M = values.shape
    v = np.where(np.arange(M) < n_valid[:, None], values, np.inf)
    perm = np.argsort(v, axis=1, kind="stable")
    rank = np.empty_like(perm)
    np.put_along_axis(rank, perm, np.broadcast_to(np.arange(M), (N, M)), axis=1)
    return rank


def _ordering(fn: str, order: str, scores: np.ndarray, n_valid: np.ndarray, k_order, dtype) -> np.ndarray:
    if order not in PERTURB_ORDERS:
        raise ValueError(f"{fn}: order must be one of {PERTURB_ORDERS}, got {order!r}.")
    if order == "random":
        values = np.asarray(jax.random.uniform(k_order, scores.shape, dtype), np.float64)
    else:
        values = -scores if order == "morf" else scores
    return _rank(values, n_valid)


def _fill(mode: str, x, valid, const, k_fill, draw, low, high):
    if mode == "const":
        return jnp.broadcast_to(const, x.shape)
    if mode == "mean":
        v = valid[..., None]
        return jnp.broadcast_to(jnp.sum(jnp.where(v, x, 0), 1, keepdims=True)
                                / jnp.sum(v, 1, keepdims=True).astype(x.dtype), x.shape)
    if mode in ("black", "white"):
        big = jnp.asarray(jnp.inf, x.dtype)
        lo = jnp.min(jnp.where(valid[..., None], x, big), (1, 2), keepdims=True)
        hi = jnp.max(jnp.where(valid[..., None], x, -big), (1, 2), keepdims=True)
        return jnp.broadcast_to(lo if mode == "black" else hi, x.shape)
    return jax.random.uniform(jax.random.fold_in(k_fill, draw), x.shape, x.dtype, low, high)


def _target_score(model_fn, softmax: bool, x, lengths, target):
    s = model_fn(x, lengths)
    if softmax:
        s = jax.nn.softmax(s, axis=-1)
    return jnp.take_along_axis(s, target[:, None], axis=1)[:, 0]


def _evaluate(model_fn, softmax: bool, mode: str, x, lengths, target, masks, mask_id, draw_id, const,
              k_fill, low, high):
    """Scores of ``x`` ``(N,)`` and of the ``I`` perturbed inputs ``(I, N)``: input ``i`` replaces the
    valid steps of ``masks[mask_id[i]]`` by the baseline (draw ``draw_id[i]``)."""
    valid = jnp.arange(x.shape[1]) < lengths[:, None]

    def one(i):
        m = (masks[mask_id[i]] & valid)[..., None]
        fill = _fill(mode, x, valid, const, k_fill, draw_id[i], low, high)
        return _target_score(model_fn, softmax, jnp.where(m, fill, x), lengths, target)

    scores = jax.lax.map(one, jnp.arange(mask_id.shape[0]))
    return _target_score(model_fn, softmax, x, lengths, target), scores


_evaluate_jit = jax.jit(_evaluate, static_argnums=(0, 1, 2))


def _run(model_fn, softmax, d: _Data, base: _Baseline, masks, mask_id, draw_id, k_fill):
    """Host wrapper of the jitted evaluation: ``y0 (N,)``, ``ys (N, I)`` float64."""
    y0, ys = _evaluate_jit(model_fn, bool(softmax), base.mode, d.x, jnp.asarray(d.lengths, jnp.int32),
                           jnp.asarray(d.target, jnp.int32), jnp.asarray(masks, bool),
                           jnp.asarray(mask_id, jnp.int32), jnp.asarray(draw_id, jnp.int32), base.const,
                           k_fill, jnp.asarray(base.low, d.x.dtype), jnp.asarray(base.high, d.x.dtype))
    return np.asarray(y0, np.float64), np.asarray(ys, np.float64).T


def _trapezoid(curve: np.ndarray) -> float:
    """Quantus' AUC (``np.trapz`` with ``dx=1``): 0 for a single point."""
    return float(np.sum((curve[1:] + curve[:-1]) / 2.0))


# --------------------------------------------------------------------------------------------
# the metrics

def perturb(x, mask, *, lengths=None, perturb_baseline="zero", key=None,
            perturb_func_kwargs: Optional[dict] = None) -> Array:
    """``x`` with the valid masked steps replaced by a baseline (the replacement all metrics use).

    Args:
      x: ``(N, T, F)`` floating.
      mask: ``(N, T)`` bool, True at the steps to replace; steps ``t >= lengths[n]`` stay as they are.
      lengths: ``(N,)`` ints in ``[1, T]`` (default ``T``).
      perturb_baseline: see the module doc (``"zero"``, number, ``(F,)`` / ``(N, T, F)`` array,
        ``"mean"``, ``"black"``, ``"white"``, ``"uniform"`` / ``"noise"``).
      key: jax.random key, needed for ``"uniform"`` (draw 0 of the module doc's schedule).
      perturb_func_kwargs: ``{"uniform_low": ..., "uniform_high": ...}`` for ``"uniform"``.
    Returns:
      ``(N, T, F)`` array of ``x``'s dtype.

    >>> import jax.numpy as jnp, lrpjax
    >>> x = jnp.array([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])        # N=1, T=3, F=2; step 2 is padding
    >>> lrpjax.metrics.perturb(x, jnp.array([[True, False, True]]), lengths=jnp.array([2]),
    ...                        perturb_baseline="mean")
    Array([[[2., 3.],
            [3., 4.],
            [9., 9.]]], dtype=float32)
    """
    fn = "perturb"
    x = _check_x(fn, x)
    N, T, _ = x.shape
    L = _check_lengths(fn, lengths, N, T)
    m = np.asarray(mask)
    if m.shape != (N, T) or m.dtype != np.bool_:
        raise ValueError(f"{fn}: mask must be a bool array of shape (N, T) = {(N, T)}, got shape {m.shape} "
                         f"with dtype {m.dtype}.")
    base = _check_baseline(fn, perturb_baseline, perturb_func_kwargs, x)
    _, k_fill = _keys(fn, key, base.mode == "uniform", "perturb_baseline='uniform' draws random values")
    valid = jnp.arange(T) < jnp.asarray(L)[:, None]
    fill = _fill(base.mode, x, valid, base.const, k_fill, 0, base.low, base.high)
    return jnp.where((jnp.asarray(m) & valid)[..., None], fill, x)


def pixel_flipping(model_fn: Callable[[Array, Array], Array], x, R, target, *, lengths=None, key=None,
                   features_in_step: int = 1, order: str = "morf", perturb_baseline="black",
                   perturb_func_kwargs: Optional[dict] = None, abs: bool = False, softmax: bool = True,
                   return_auc_per_sample: bool = False) -> np.ndarray:
    """Step (token) flipping: the target score while more and more steps are replaced, in order of relevance.

    Quantus ``PixelFlipping`` (Bach et al. 2015, "On pixel-wise explanations for non-linear classifier
    decisions by layer-wise relevance propagation"; Samek et al. 2017, "Evaluating the visualization of
    what a deep neural network has learned"). Column ``k`` is the score (softmax probability by default,
    as Quantus) of the target after replacing the first ``(k + 1) * features_in_step`` valid steps in
    ``order``; like Quantus, the curve has no point for the unperturbed input and the replacements
    accumulate. ``"morf"``: most relevant (signed, after ``abs``) first -- the Quantus metric, lower is
    better; ``"lerf"``: least relevant first (higher is better); ``"random"``: a random order from
    ``k_order`` (``jax.random.uniform(k_order, (N, T), x.dtype)``, ascending). Ties: earlier step first
    (Quantus' ``argsort`` leaves them unspecified). The baseline is draw 0 for every column. Quantus
    requires ``features_in_step`` to divide the input size; here a sequence's last group may be smaller.

    Args:
      model_fn, x, R, target, lengths, key, perturb_baseline, perturb_func_kwargs, softmax: see the module
        doc; ``x (N, T, F)``, ``R (N, T)`` or ``(N, T, F)``, ``target (N,)``.
      features_in_step: steps replaced per point of the curve (int >= 1).
      order: ``"morf"``, ``"lerf"`` or ``"random"`` (not a Quantus ``PixelFlipping`` argument).
      abs: use ``|R|`` (Quantus' ``abs``).
      return_auc_per_sample: return the area under each curve instead (trapezoid rule, ``dx=1``, over the
        sequence's own ``ceil(lengths[n] / features_in_step)`` points, as Quantus on the unpadded input).
    Returns:
      ``(N, K)`` float64 curves with ``K = ceil(T / features_in_step)`` (after a sequence's own points,
      everything valid is replaced and the value repeats), or ``(N,)`` AUCs.

    >>> import jax.numpy as jnp, lrpjax
    >>> model = lambda x, l: jnp.stack([x.sum((1, 2)), -x.sum((1, 2))], -1)   # logit 0 = sum(x)
    >>> x = jnp.array([[[3.0], [-1.0], [0.5]]])
    >>> R = x[..., 0]                                                          # exact for class 0
    >>> lrpjax.metrics.pixel_flipping(model, x, R, jnp.array([0]), perturb_baseline="zero", softmax=False)
    array([[-0.5, -1. ,  0. ]])
    >>> lrpjax.metrics.pixel_flipping(model, x, R, jnp.array([0]), perturb_baseline="zero", softmax=False,
    ...                               return_auc_per_sample=True)
    array([-1.25])
    """
    fn = "pixel_flipping"
    fis = _int_arg(fn, "features_in_step", features_in_step)
    d = _prepare(fn, model_fn, x, R, target, lengths, abs)
    base = _check_baseline(fn, perturb_baseline, perturb_func_kwargs, d.x)
    k_order, k_fill = _keys(fn, key, order == "random" or base.mode == "uniform",
                            "order='random' or perturb_baseline='uniform' draw random values")
    rank = _ordering(fn, order, d.R, d.lengths, k_order, d.x.dtype)
    K = -(-d.x.shape[1] // fis)
    masks = rank[None] < (np.arange(1, K + 1) * fis)[:, None, None]
    _, curve = _run(model_fn, softmax, d, base, masks, np.arange(K), np.zeros(K), k_fill)
    if not return_auc_per_sample:
        return curve
    own = -(-d.lengths // fis)
    return np.array([_trapezoid(curve[n, :own[n]]) for n in range(len(own))])


def region_perturbation(model_fn: Callable[[Array, Array], Array], x, R, target, *, lengths=None,
                        key=None, patch_size: int = 8, order: str = "morf", regions_evaluation: int = 100,
                        perturb_baseline="black", perturb_func_kwargs: Optional[dict] = None,
                        abs: bool = False, softmax: bool = True,
                        return_auc_per_sample: bool = False) -> np.ndarray:
    """Region perturbation: the drop of the target score while windows of steps are replaced, by relevance.

    Quantus ``RegionPerturbation`` (Samek et al. 2017, "Evaluating the visualization of what a deep
    neural network has learned", IEEE TNNLS 28(11)). A sequence of length ``L`` is cut into
    ``ceil(L / patch_size)`` non-overlapping windows of ``patch_size`` steps, centred as Quantus pads an
    image: the first window starts ``floor((-L mod patch_size) / 2)`` steps before step 0 (so the first
    and last windows may be shorter). Windows are ranked by their summed relevance (``"morf"``: largest
    first, ``"lerf"``: smallest first, ``"random"``: ``jax.random.uniform(k_order, (N, ceil(T /
    patch_size)), x.dtype)`` ascending; ties: earlier window first). Column ``k`` is ``f(x) - f(x with
    the first k + 1 windows replaced)``, for the first ``regions_evaluation`` windows; replacements
    accumulate; the baseline is draw 0. Quantus reports the curves and, as ``get_auc_score``, the mean
    over examples of their trapezoid areas (the quantity its plot calls AOPC); Samek et al.'s AOPC is
    ``curve.sum(1) / (K + 1)`` (their ``k = 0`` term is 0). A faithful ``"morf"`` explanation gives a
    large area (Quantus declares "lower is better" for this metric).

    Args:
      model_fn, x, R, target, lengths, key, perturb_baseline, perturb_func_kwargs, softmax: see the module
        doc; ``x (N, T, F)``, ``R (N, T)`` or ``(N, T, F)``, ``target (N,)``.
      patch_size: window length in steps (int >= 1).
      order: ``"morf"``, ``"lerf"`` or ``"random"``.
      regions_evaluation: number of windows replaced, one per point (int >= 1).
      abs: use ``|R|``.
      return_auc_per_sample: return each curve's trapezoid area (``dx=1``) over the sequence's own
        ``min(regions_evaluation, ceil(lengths[n] / patch_size))`` points.
    Returns:
      ``(N, K)`` float64 curves, ``K = min(regions_evaluation, ceil(T / patch_size))`` (a sequence with
      fewer windows repeats its last value), or ``(N,)`` areas.

    >>> import jax.numpy as jnp, lrpjax
    >>> model = lambda x, l: jnp.stack([x.sum((1, 2)), -x.sum((1, 2))], -1)
    >>> x = jnp.array([[[1.0], [2.0], [-1.0], [5.0]]])                # windows {0, 1} and {2, 3}
    >>> lrpjax.metrics.region_perturbation(model, x, x[..., 0], jnp.array([0]), patch_size=2,
    ...                                    perturb_baseline="zero", softmax=False)
    array([[4., 7.]])
    """
    fn = "region_perturbation"
    p = _int_arg(fn, "patch_size", patch_size)
    n_eval = _int_arg(fn, "regions_evaluation", regions_evaluation)
    d = _prepare(fn, model_fn, x, R, target, lengths, abs)
    base = _check_baseline(fn, perturb_baseline, perturb_func_kwargs, d.x)
    k_order, k_fill = _keys(fn, key, order == "random" or base.mode == "uniform",
                            "order='random' or perturb_baseline='uniform' draw random values")
    N, T = d.R.shape
    n_windows = -(-d.lengths // p)
    offset = ((-d.lengths) % p) // 2
    window = np.minimum((np.arange(T) + offset[:, None]) // p, n_windows[:, None] - 1)   # (N, T)
    sums = np.zeros((N, -(-T // p)))
    np.add.at(sums, (np.arange(N)[:, None], window), d.R)                # padding relevance is 0
    step_rank = np.take_along_axis(_ordering(fn, order, sums, n_windows, k_order, d.x.dtype), window, 1)
    K = min(n_eval, sums.shape[1])
    masks = step_rank[None] < np.arange(1, K + 1)[:, None, None]
    y0, ys = _run(model_fn, softmax, d, base, masks, np.arange(K), np.zeros(K), k_fill)
    curve = y0[:, None] - ys
    if not return_auc_per_sample:
        return curve
    own = np.minimum(n_eval, n_windows)
    return np.array([_trapezoid(curve[n, :own[n]]) for n in range(N)])


def faithfulness_correlation(model_fn: Callable[[Array, Array], Array], x, R, target, *, subset_size: int,
                             lengths=None, key=None, nr_runs: int = 100, perturb_baseline="black",
                             perturb_func_kwargs: Optional[dict] = None, abs: bool = False,
                             softmax: bool = False) -> np.ndarray:
    """Pearson correlation, over random subsets of steps, of their summed relevance and the score drop.

    Quantus ``FaithfulnessCorrelation`` (Bhatt et al. 2020, "Evaluating and aggregating feature-based
    model explanations", IJCAI). For each of ``nr_runs`` runs, ``subset_size`` distinct valid steps are
    drawn uniformly (run ``r``: the steps with the smallest ``jax.random.uniform(jax.random.fold_in(
    k_order, r), (N, T), x.dtype)``) and replaced (baseline draw ``r``); the example's score is the
    Pearson correlation of ``sum_{t in S} R[t]`` with ``f(x) - f(x_S)`` over the runs (``nan`` if either
    is constant). Logits by default (``softmax=False``, as Quantus). Higher is better.

    Args:
      model_fn, x, R, target, lengths, key, perturb_baseline, perturb_func_kwargs, softmax: see the module
        doc; ``key`` is required.
      subset_size: steps per subset, in ``[1, min(lengths)]`` (no default: Quantus' 224 counts pixels).
      nr_runs: number of subsets per example (int >= 2).
      abs: use ``|R|``.
    Returns:
      ``(N,)`` float64 correlations.

    >>> import jax, jax.numpy as jnp, lrpjax
    >>> model = lambda x, l: jnp.stack([x.sum((1, 2)), -x.sum((1, 2))], -1)
    >>> x = jnp.array([[[3.0], [-1.0], [0.5], [2.0]]])
    >>> lrpjax.metrics.faithfulness_correlation(model, x, x[..., 0], jnp.array([0]), subset_size=2,
    ...     nr_runs=10, perturb_baseline="zero", key=jax.random.key(0)).round(6)
    array([1.])
    """
    fn = "faithfulness_correlation"
    runs = _int_arg(fn, "nr_runs", nr_runs, 2)
    d = _prepare(fn, model_fn, x, R, target, lengths, abs)
    size = _int_arg(fn, "subset_size", subset_size)
    if size > d.lengths.min():
        raise ValueError(f"{fn}: subset_size must lie in [1, min(lengths)] = [1, {d.lengths.min()}], got "
                         f"{size}.")
    base = _check_baseline(fn, perturb_baseline, perturb_func_kwargs, d.x)
    k_order, k_fill = _keys(fn, key, True, "the subsets are random")
    N, T = d.R.shape
    u = np.asarray(jax.vmap(lambda r: jax.random.uniform(jax.random.fold_in(k_order, r), (N, T),
                                                         d.x.dtype))(jnp.arange(runs)), np.float64)
    masks = np.stack([_rank(u[r], d.lengths) < size for r in range(runs)])
    y0, ys = _run(model_fn, softmax, d, base, masks, np.arange(runs), np.arange(runs), k_fill)
    att = np.einsum("rnt,nt->nr", masks, d.R)
    return np.array([pearson(att[n], y0[n] - ys[n]) for n in range(N)])


def monotonicity_correlation(model_fn: Callable[[Array, Array], Array], x, R, target, *, lengths=None,
                             key=None, nr_samples: int = 100, features_in_step: int = 1, eps: float = 1e-5,
                             perturb_baseline="uniform", perturb_func_kwargs: Optional[dict] = None,
                             abs: bool = True, softmax: bool = True) -> np.ndarray:
    """Spearman correlation of the steps' relevance and the score variance their replacement causes.

    Quantus ``MonotonicityCorrelation`` (Nguyen & Martinez 2020, "On quantitative aspects of model
    interpretability", arXiv:2007.07584). The valid steps, in increasing relevance (``|R|`` by default,
    ``abs=True`` as Quantus; ties: earlier first), form groups of ``features_in_step``. Group ``k`` alone
    is replaced ``nr_samples`` times (baseline draw ``k * nr_samples + s``; the replacements do not
    accumulate), giving ``v_k = mean_s (f(x_ks) - f(x))^2 / f(x)^2`` (the division only when
    ``|f(x)| >= eps``; it rescales a row, which Spearman ignores). The score is Spearman's rho of
    ``(sum of R in group k)_k`` and ``(v_k)_k`` over the example's own ``ceil(lengths[n] /
    features_in_step)`` groups (average ranks for ties, ``nan`` if either is constant). Softmax
    probabilities by default. A deterministic baseline is evaluated once per group (every sample would
    be the same). Higher is better.

    Args:
      model_fn, x, R, target, lengths, key, perturb_baseline, perturb_func_kwargs, softmax: see the module
        doc; ``key`` is needed for the default ``perturb_baseline="uniform"``.
      nr_samples: replacements per group (int >= 1).
      features_in_step: steps per group (int >= 1).
      eps: threshold on ``|f(x)|`` (float >= 0).
      abs: use ``|R|`` (default True, as Quantus).
    Returns:
      ``(N,)`` float64 rank correlations.

    >>> import jax.numpy as jnp, lrpjax
    >>> model = lambda x, l: jnp.stack([x.sum((1, 2)), -x.sum((1, 2))], -1)
    >>> x = jnp.array([[[3.0], [-1.0], [0.5], [2.0]]])
    >>> lrpjax.metrics.monotonicity_correlation(model, x, x[..., 0], jnp.array([0]),
    ...                                         perturb_baseline="zero", softmax=False)
    array([1.])
    """
    fn = "monotonicity_correlation"
    samples = _int_arg(fn, "nr_samples", nr_samples)
    fis = _int_arg(fn, "features_in_step", features_in_step)
    if not (isinstance(eps, numbers.Real) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"{fn}: eps must be a finite number >= 0, got {eps!r}.")
    d = _prepare(fn, model_fn, x, R, target, lengths, abs)
    base = _check_baseline(fn, perturb_baseline, perturb_func_kwargs, d.x)
    _, k_fill = _keys(fn, key, base.mode == "uniform", "perturb_baseline='uniform' draws random values")
    N, T = d.R.shape
    group = _rank(d.R, d.lengths) // fis                               # (N, T); valid steps first
    K = -(-T // fis)
    S = samples if base.mode == "uniform" else 1
    masks = group[None] == np.arange(K)[:, None, None]
    y0, ys = _run(model_fn, softmax, d, base, masks, np.repeat(np.arange(K), S), np.arange(K * S), k_fill)
    inv = np.where(np.abs(y0) >= eps, 1.0 / np.where(y0 == 0, 1.0, np.abs(y0)), 1.0) ** 2
    var = np.mean((ys.reshape(N, K, S) - y0[:, None, None]) ** 2, axis=2) * inv[:, None]
    att = np.einsum("knt,nt->nk", masks, d.R)
    own = -(-d.lengths // fis)
    return np.array([spearman(att[n, :own[n]], var[n, :own[n]]) for n in range(N)])


def sensitivity_n(model_fn: Callable[[Array, Array], Array], x, R, target, *, lengths=None, key=None,
                  n_max_percentage: float = 0.8, features_in_step: int = 1, perturb_baseline="black",
                  perturb_func_kwargs: Optional[dict] = None, abs: bool = False,
                  softmax: bool = True) -> np.ndarray:
    """Sensitivity-n as Quantus computes it: per ``n``, a Pearson correlation across the batch.

    Quantus ``SensitivityN`` (after Ancona et al. 2018, "Towards better understanding of gradient-based
    attribution methods for deep neural networks", ICLR). The valid steps are replaced cumulatively in
    decreasing relevance (ties: earlier first), ``features_in_step`` at a time. For point ``k`` (``n = (k
    + 1) * features_in_step`` steps replaced) the score is the Pearson correlation, across the ``N``
    examples, of the relevance of the ``features_in_step`` steps replaced at point ``k`` (not of all
    ``n``: Quantus' definition) and ``f(x) - f(x_n)``, for ``k < int(n_max_percentage * min(lengths) //
    features_in_step)`` (Quantus uses the input size). Ancona et al. instead correlate, per example,
    ``sum_{t in S} R[t]`` with the drop over random subsets ``S`` of size ``n``. Softmax probabilities by
    default; the baseline is draw 0. Higher is better. Needs ``N >= 2`` examples (else ``nan``).

    Args:
      model_fn, x, R, target, lengths, key, perturb_baseline, perturb_func_kwargs, softmax: see the module
        doc.
      n_max_percentage: share of the shortest sequence's steps evaluated (in ``(0, 1]``).
      features_in_step: steps replaced per point (int >= 1).
      abs: use ``|R|``.
    Returns:
      ``(K,)`` float64 correlations, one per ``n`` (not one per example).

    >>> import jax.numpy as jnp, lrpjax
    >>> model = lambda x, l: jnp.stack([x.sum((1, 2)), -x.sum((1, 2))], -1)
    >>> x = jnp.array([[[3.0], [1.0], [0.0]], [[0.5], [2.0], [0.0]], [[4.0], [0.0], [2.0]]])
    >>> lrpjax.metrics.sensitivity_n(model, x, x[..., 0], jnp.array([0, 0, 0]), perturb_baseline="zero",
    ...                              softmax=False, n_max_percentage=0.7).round(4)
    array([1.    , 0.9942])
    """
    fn = "sensitivity_n"
    fis = _int_arg(fn, "features_in_step", features_in_step)
    if not (isinstance(n_max_percentage, numbers.Real) and 0 < n_max_percentage <= 1):
        raise ValueError(f"{fn}: n_max_percentage must lie in (0, 1], got {n_max_percentage!r}.")
    d = _prepare(fn, model_fn, x, R, target, lengths, abs)
    K = int(n_max_percentage * int(d.lengths.min()) // fis)
    if K < 1:
        raise ValueError(f"{fn}: int(n_max_percentage * min(lengths) // features_in_step) must be >= 1, got "
                         f"int({n_max_percentage} * {d.lengths.min()} // {fis}) = {K}.")
    base = _check_baseline(fn, perturb_baseline, perturb_func_kwargs, d.x)
    _, k_fill = _keys(fn, key, base.mode == "uniform", "perturb_baseline='uniform' draws random values")
    rank = _rank(-d.R, d.lengths)
    masks = rank[None] < (np.arange(1, K + 1) * fis)[:, None, None]
    y0, ys = _run(model_fn, softmax, d, base, masks, np.arange(K), np.zeros(K), k_fill)
    step = (rank // fis)[None] == np.arange(K)[:, None, None]
    att = np.einsum("knt,nt->nk", step, d.R)
    delta = y0[:, None] - ys
    return np.array([pearson(att[:, k], delta[:, k]) for k in range(K)])


def completeness(model_fn: Callable[[Array, Array], Array], x, R, target, *, lengths=None, key=None,
                 perturb_baseline="black", perturb_func_kwargs: Optional[dict] = None, abs: bool = False,
                 softmax: bool = False, output_func: Optional[Callable] = None,
                 tolerance: Optional[float] = None) -> np.ndarray:
    """Completeness gap ``sum_t R[t] - output_func(f(x) - f(baseline))`` per example.

    Quantus ``Completeness`` (Sundararajan et al. 2017, "Axiomatic attribution for deep networks", ICML;
    also summation-to-delta, Shrikumar et al. 2017, and conservation, Montavon et al. 2018). The baseline
    input replaces every valid step (draw 0). Logits by default (``softmax=False``, as Quantus).
    Quantus reports the boolean ``sum R == output_func(f(x) - f(baseline))`` (exact equality; "higher"
    is better); here the gap (0 is best), or ``|gap| <= tolerance`` when ``tolerance`` is given
    (``tolerance=0.0`` is Quantus' test). Quantus divides ``R`` by the batch's largest ``|R|`` first
    (``normalise=True``); here ``R`` is used as given.

    Args:
      model_fn, x, R, target, lengths, key, perturb_baseline, perturb_func_kwargs, softmax: see the module
        doc.
      abs: use ``|R|``.
      output_func: NumPy function applied to the ``(N,)`` score differences (default identity).
      tolerance: ``None`` (return the gap) or a number >= 0 (return booleans).
    Returns:
      ``(N,)`` float64 gaps, or ``(N,)`` bool.

    >>> import jax.numpy as jnp, lrpjax
    >>> model = lambda x, l: jnp.stack([x.sum((1, 2)) + 1.0, -x.sum((1, 2))], -1)
    >>> x = jnp.array([[[3.0], [-1.0], [0.5]]])
    >>> lrpjax.metrics.completeness(model, x, x[..., 0], jnp.array([0]), perturb_baseline="zero")
    array([0.])
    >>> lrpjax.metrics.completeness(model, x, 2 * x[..., 0], jnp.array([0]), perturb_baseline="zero",
    ...                             tolerance=0.1)
    array([False])
    """
    fn = "completeness"
    if tolerance is not None and not (isinstance(tolerance, numbers.Real) and tolerance >= 0):
        raise ValueError(f"{fn}: tolerance must be None or a number >= 0, got {tolerance!r}.")
    d = _prepare(fn, model_fn, x, R, target, lengths, abs)
    base = _check_baseline(fn, perturb_baseline, perturb_func_kwargs, d.x)
    _, k_fill = _keys(fn, key, base.mode == "uniform", "perturb_baseline='uniform' draws random values")
    N, T = d.R.shape
    y0, ys = _run(model_fn, softmax, d, base, np.ones((1, N, T), bool), [0], [0], k_fill)
    delta = y0 - ys[:, 0]
    if output_func is not None:
        delta = np.asarray(output_func(delta), np.float64)
        if delta.shape != (N,):
            raise ValueError(f"{fn}: output_func must map the ({N},) score differences to shape ({N},), "
                             f"got {delta.shape}.")
    gap = d.R.sum(1) - delta
    return gap if tolerance is None else np.abs(gap) <= tolerance
