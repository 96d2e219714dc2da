"""Attribution baselines with the call shape of :func:`lrpjax.relevance`.

Every method takes ``(model_fn, x, target=None, **options)``:

* ``model_fn(x)`` returns class scores (logits): ``(C,)`` for ``x`` of shape ``(T, F)`` (one sequence),
  ``(B, C)`` for ``x`` of shape ``(B, T, F)`` (a batch; rows must be independent, as for ``relevance``);
  or one scalar per row, ``()`` / ``(B,)``, explained as class 0 of the ``(1,)`` / ``(B, 1)`` model.
  Flax nnx models called as ``lambda x: model(x)`` work as they are (their layers run as plain JAX,
  see :func:`lrpjax.flax_integration.traceable`); a linen module or ``model.apply`` itself is refused.
* ``target``: ``None`` (the argmax class of ``model_fn(x)``, per row), an int, or an int array ``(B,)``;
  it may be traced under ``jit`` (a traced value outside ``[0, C)`` gives NaN for its row). The
  explained score is the target's **logit**. The target is fixed at ``x`` (integrated gradients and
  occlusion keep it along the path / for the occluded inputs).

Methods (``s(x)`` = the target logit; ``x0`` = the baseline input):

============================  ============  ========================================================
function                      returns       definition
============================  ============  ========================================================
:func:`lrp`                   like ``x``    :func:`lrpjax.relevance` (LRP, rule options as keywords)
:func:`gradient`              like ``x``    ``d s / d x``
:func:`sensitivity`           ``(..., T)``  ``sum_f (d s / d x_tf)**2`` (squared L2 norm per step)
:func:`gradient_x_input`      like ``x``    ``x * d s / d x``
:func:`integrated_gradients`  like ``x``    ``(x - x0) * mean_k grad s(x0 + a_k (x - x0))``,
                                            midpoint rule ``a_k = (k + 1/2) / steps``
:func:`occlusion`             ``(..., T)``  ``s(x) - s(x, step t's features set to value)``
:func:`random_relevance`      like ``x``    seeded standard normal values (the floor)
============================  ============  ========================================================

:data:`METHODS` maps these names (``"lrp"``, ``"gradient"``, ``"sensitivity"``, ``"gradient_x_input"``,
``"integrated_gradients"``, ``"occlusion"``, ``"random"``) to the functions; :func:`per_step` reduces
any of their results to one value per time step. All methods work under ``jax.jit`` and ``jax.vmap``,
in float32 and float64. Gradients are taken with full float32 matmul precision (as ``relevance``), so
the methods compare like for like on GPU/TPU.
"""
from __future__ import annotations

import contextlib
import numbers
from typing import Callable, Iterator, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from lrpjax._checks import (check_model_fn, check_scores, check_x, concrete, pick, resolve_target,
                            target_seed, with_class_axis)
from lrpjax.flax_integration import traceable
from lrpjax.relevance import explain, full_precision, relevance

Array = jax.Array

__all__ = ["Attribution", "IGResult", "attribute", "METHODS", "explain_ig", "gradient", "gradient_x_input", "integrated_gradients",
           "integrated_gradients_completeness", "lrp", "occlusion", "per_step", "random_relevance",
           "sensitivity"]


# ----------------------------------------------------------------------------------------------
# Validation and the target score

def _check_input(x, fn: str) -> Array:
    """``x`` must be one floating array ``(T, F)`` or ``(B, T, F)`` (finite where concrete)."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise ValueError(f"{fn}: x must be a floating array of shape (T, F) or (B, T, F), got "
                         f"{type(x).__name__}.")
    check_x(x)
    if x.ndim not in (2, 3):
        raise ValueError(f"{fn}: x must have shape (T, F) or (B, T, F) (2 or 3 dimensions), got shape "
                         f"{tuple(x.shape)} ({x.ndim} dimensions).")
    return x


def _check_model_out(scores, x: Array, fn: str) -> None:
    check_scores(scores)
    want = "(C,)" if x.ndim == 2 else f"({x.shape[0]}, C)"
    ok = scores.ndim == 1 if x.ndim == 2 else (scores.ndim == 2 and scores.shape[0] == x.shape[0])
    if not ok:
        raise ValueError(f"{fn}: model_fn(x) for x of shape {tuple(x.shape)} must return scores of "
                         f"shape {want}, got {tuple(scores.shape)}.")


@contextlib.contextmanager
def _running(model_fn: Callable, fn: str) -> Iterator[Callable]:
    """Context for a method's model calls: full float32 matmuls, nnx models traceable by ``jax.grad``
    (:func:`lrpjax.flax_integration.traceable`); yields ``model_fn`` with scalar outputs (``()`` /
    ``(B,)``) given a class axis of size 1."""
    check_model_fn(model_fn, fn)
    with full_precision(), traceable(model_fn):
        yield with_class_axis(model_fn)


def _scores_and_target(model_fn: Callable, x: Array, target, fn: str):
    if not callable(model_fn):
        raise ValueError(f"{fn}: model_fn must be callable (x -> class scores), got "
                         f"{type(model_fn).__name__}.")
    scores = model_fn(x)
    _check_model_out(scores, x, fn)
    return scores, resolve_target(target, scores)


def _grad_fixed(model_fn: Callable, x: Array, t: Array) -> Array:
    """``d s_t / d x`` for a given (resolved) target ``t``; rows of a batch are independent."""
    scores, vjp = jax.vjp(model_fn, x)
    return vjp(target_seed(scores, t, scaled=False))[0]   # NaN rows for a traced out-of-range t


def _as_static_int(value, name: str, fn: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {value!r}.")
    return int(value)


def _check_batch_size(batch_size, fn: str) -> Optional[int]:
    return None if batch_size is None else _as_static_int(batch_size, "batch_size", fn, 1)


def _broadcastable(value, x: Array, name: str, fn: str) -> Array:
    """``value`` as an array of ``x``'s dtype that broadcasts to ``x.shape`` (finite where concrete)."""
    v = jnp.asarray(value)
    if not (jnp.issubdtype(v.dtype, jnp.floating) or jnp.issubdtype(v.dtype, jnp.integer)):
        raise ValueError(f"{fn}: {name} must be a real number or array, got dtype {v.dtype}.")
    try:
        ok = np.broadcast_shapes(v.shape, x.shape) == tuple(x.shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{fn}: {name} must be broadcastable to x's shape {tuple(x.shape)}, got shape "
                         f"{tuple(v.shape)}.")
    values = concrete(v)
    if values is not None and not np.all(np.isfinite(values)):
        raise ValueError(f"{fn}: {name} contains NaN/inf values.")
    return v.astype(x.dtype)


# ----------------------------------------------------------------------------------------------
# Gradient family

def gradient(model_fn: Callable[[Array], Array], x: Array, target=None) -> Array:
    """Gradient of the target logit w.r.t. the input: ``d s_target / d x``.

    Args:
      model_fn: ``x -> logits``, ``(T, F) -> (C,)`` or ``(B, T, F) -> (B, C)``.
      x: ``(T, F)`` or ``(B, T, F)`` floating array.
      target: ``None`` (argmax per row), an int, or an int array ``(B,)``; may be traced.
    Returns:
      An array with the shape and dtype of ``x``.

    >>> import jax, jax.numpy as jnp, lrpjax
    >>> W = jnp.arange(12.0).reshape(2, 3, 2)               # (T, F, C)
    >>> model = lambda x: jnp.einsum("...tf,tfc->...c", x, W)
    >>> lrpjax.baselines.gradient(model, jnp.ones((2, 3)), target=1)
    Array([[ 1.,  3.,  5.],
           [ 7.,  9., 11.]], dtype=float32)
    """
    x = _check_input(x, "gradient")
    with _running(model_fn, "gradient") as model_fn:
        _, t = _scores_and_target(model_fn, x, target, "gradient")
        return _grad_fixed(model_fn, x, t)


def sensitivity(model_fn: Callable[[Array], Array], x: Array, target=None) -> Array:
    """Sensitivity analysis: squared L2 norm of the gradient over the feature axis, per step.

    Returns ``sum_f (d s_target / d x[..., t, f])**2`` of shape ``(T,)`` / ``(B, T)`` (always >= 0;
    it says how sensitive the score is to a step, not in which direction). Arguments as :func:`gradient`.

    >>> import jax.numpy as jnp, lrpjax
    >>> W = jnp.arange(12.0).reshape(2, 3, 2)
    >>> model = lambda x: jnp.einsum("...tf,tfc->...c", x, W)
    >>> lrpjax.baselines.sensitivity(model, jnp.ones((2, 3)), target=1)   # 1+9+25, 49+81+121
    Array([ 35., 251.], dtype=float32)
    """
    x = _check_input(x, "sensitivity")
    with _running(model_fn, "sensitivity") as model_fn:
        _, t = _scores_and_target(model_fn, x, target, "sensitivity")
        g = _grad_fixed(model_fn, x, t)
    return jnp.sum(jnp.square(g), axis=-1)


def gradient_x_input(model_fn: Callable[[Array], Array], x: Array, target=None) -> Array:
    """Gradient x Input: ``x * d s_target / d x``, shape and dtype of ``x``. Arguments as :func:`gradient`.

    >>> import jax.numpy as jnp, lrpjax
    >>> W = jnp.arange(12.0).reshape(2, 3, 2)
    >>> model = lambda x: jnp.einsum("...tf,tfc->...c", x, W)
    >>> lrpjax.baselines.gradient_x_input(model, 2 * jnp.ones((2, 3)), target=0)
    Array([[ 0.,  4.,  8.],
           [12., 16., 20.]], dtype=float32)
    """
    x = _check_input(x, "gradient_x_input")
    with _running(model_fn, "gradient_x_input") as model_fn:
        _, t = _scores_and_target(model_fn, x, target, "gradient_x_input")
        return x * _grad_fixed(model_fn, x, t)


# ----------------------------------------------------------------------------------------------
# Integrated gradients

class IGResult(NamedTuple):
    """Integrated gradients with their completeness report (a pytree).

    attribution: like ``x``: ``(x - x0) * mean_k grad s(x0 + a_k (x - x0))``.
    completeness_error: ``()`` / ``(B,)``: ``sum(attribution) - (score - baseline_score)`` per row; the
      quadrature error of the path integral (0 in exact arithmetic as ``steps`` grows).
    score: ``()`` / ``(B,)`` target logit at ``x``.
    baseline_score: ``()`` / ``(B,)`` target logit at the baseline ``x0``.
    target: ``()`` / ``(B,)`` explained class (resolved at ``x``).
    """

    attribution: Array
    completeness_error: Array
    score: Array
    baseline_score: Array
    target: Array


def explain_ig(model_fn: Callable[[Array], Array], x: Array, target=None, *, baseline=None,
               steps: int = 32, batch_size: Optional[int] = None) -> IGResult:
    """Integrated gradients along the straight path from ``baseline`` to ``x``, with the completeness error.

    Quadrature: the **midpoint rule**, ``IG = (x - x0) * (1/steps) sum_{k<steps} grad s(x0 + a_k (x - x0))``
    with ``a_k = (k + 1/2) / steps`` (error O(1/steps**2) for a smooth model; exact for a linear one).
    The target is resolved at ``x`` and kept fixed along the path.

    Args:
      model_fn, x, target: as :func:`gradient`.
      baseline: ``None`` (all zeros) or an array broadcastable to ``x.shape`` (e.g. ``(F,)`` for one
        reference feature vector, or ``(T, F)``).
      steps: number of gradient evaluations (int >= 1, static).
      batch_size: ``None`` evaluates all ``steps`` path points in one vectorised call (memory of
        ``steps`` model batches); an int evaluates them in sequential chunks of that many
        (:func:`jax.lax.map`), same result.
    Returns:
      :class:`IGResult`.

    >>> import jax.numpy as jnp, lrpjax
    >>> model = lambda x: jnp.stack([jnp.sum(x ** 2), -jnp.sum(x)])
    >>> r = lrpjax.baselines.explain_ig(model, jnp.ones((2, 2)), target=0, steps=4)
    >>> r.attribution                                        # exact for s = sum x**2: x**2
    Array([[1., 1.],
           [1., 1.]], dtype=float32)
    >>> float(r.completeness_error)
    0.0
    """
    fn = "integrated_gradients"
    x = _check_input(x, fn)
    steps = _as_static_int(steps, "steps", fn, 1)
    batch_size = _check_batch_size(batch_size, fn)
    x0 = jnp.zeros_like(x) if baseline is None else jnp.broadcast_to(
        _broadcastable(baseline, x, "baseline", fn), x.shape)
    with _running(model_fn, fn) as model_fn:
        scores, t = _scores_and_target(model_fn, x, target, fn)
        base_scores = model_fn(x0)
        delta = x - x0
        alphas = (jnp.arange(steps, dtype=x.dtype) + 0.5) / steps
        grads = jax.lax.map(lambda a: _grad_fixed(model_fn, x0 + a * delta, t), alphas,
                            batch_size=batch_size)
    ig = delta * jnp.mean(grads, axis=0)
    s, s0 = pick(scores, t), pick(base_scores, t)
    total = jnp.sum(ig.reshape(ig.shape[:-2] + (-1,)), axis=-1)
    return IGResult(ig, (total - (s - s0)).astype(x.dtype), s, s0, t)


def integrated_gradients(model_fn: Callable[[Array], Array], x: Array, target=None, *, baseline=None,
                         steps: int = 32, batch_size: Optional[int] = None) -> Array:
    """Integrated gradients (midpoint rule), shape and dtype of ``x``; see :func:`explain_ig`.

    >>> import jax.numpy as jnp, lrpjax
    >>> w = jnp.array([[1.0, -2.0], [3.0, 0.5]])
    >>> model = lambda x: jnp.stack([jnp.sum(w * x), 0.0])   # linear: IG = (x - x0) * w
    >>> lrpjax.baselines.integrated_gradients(model, jnp.ones((2, 2)), 0, baseline=0.5, steps=1)
    Array([[ 0.5 , -1.  ],
           [ 1.5 ,  0.25]], dtype=float32)
    """
    return explain_ig(model_fn, x, target, baseline=baseline, steps=steps,
                      batch_size=batch_size).attribution


def integrated_gradients_completeness(model_fn: Callable[[Array], Array], x: Array, target=None, *,
                                      baseline=None, steps: int = 32,
                                      batch_size: Optional[int] = None) -> Array:
    """``sum(IG) - (s(x) - s(baseline))`` per row: ``()`` / ``(B,)``; see :func:`explain_ig`.

    >>> import jax.numpy as jnp, lrpjax
    >>> model = lambda x: jnp.stack([jnp.sum(jnp.sin(x)), 0.0])
    >>> err = lambda n: abs(float(lrpjax.baselines.integrated_gradients_completeness(
    ...     model, jnp.ones((3, 2)), 0, steps=n)))
    >>> err(64) < err(8) < 1e-2
    True
    """
    return explain_ig(model_fn, x, target, baseline=baseline, steps=steps,
                      batch_size=batch_size).completeness_error


# ----------------------------------------------------------------------------------------------
# Occlusion, random, LRP

def occlusion(model_fn: Callable[[Array], Array], x: Array, target=None, *, value=0.0,
              batch_size: Optional[int] = None) -> Array:
    """Occlusion per time step: ``s(x) - s(x with all features of step t replaced by value)``.

    Args:
      model_fn, x, target: as :func:`gradient` (the target is resolved at the unoccluded ``x``).
      value: replacement, a number or an array broadcastable to ``x.shape`` (e.g. ``(F,)``: a
        reference feature vector such as the mean embedding; ``(T, F)``: a reference sequence).
      batch_size: ``None`` evaluates the ``T`` occluded inputs in one vectorised call (``T`` model
        batches at once); an int evaluates them in sequential chunks of that many, same result.
    Returns:
      ``(T,)`` / ``(B, T)`` in ``x``'s dtype. A step the model ignores (e.g. padding when the model
      takes ``lengths``) gets exactly 0.

    >>> import jax.numpy as jnp, lrpjax
    >>> w = jnp.array([[1.0, -2.0], [3.0, 0.5]])
    >>> model = lambda x: jnp.stack([jnp.sum(w * x), 0.0])
    >>> lrpjax.baselines.occlusion(model, jnp.ones((2, 2)), 0)        # per-step sum_f x_tf w_tf
    Array([-1. ,  3.5], dtype=float32)
    """
    fn = "occlusion"
    x = _check_input(x, fn)
    batch_size = _check_batch_size(batch_size, fn)
    v = _broadcastable(value, x, "value", fn)
    T = x.shape[-2]
    with _running(model_fn, fn) as model_fn:
        scores, t = _scores_and_target(model_fn, x, target, fn)

        def occluded(step):
            hide = (jnp.arange(T) == step)[:, None]        # (T, 1): step's features
            return pick(model_fn(jnp.where(hide, v, x)), t)

        s_occ = jax.lax.map(occluded, jnp.arange(T), batch_size=batch_size)   # (T,) / (T, B)
    return jnp.moveaxis(pick(scores, t)[None] - s_occ, 0, -1).astype(x.dtype)


def random_relevance(model_fn: Callable[[Array], Array], x: Array, target=None, *, seed=0,
                     rows: Optional[Array] = None) -> Array:
    """Seeded standard normal values with the shape and dtype of ``x``: the floor of any comparison.

    Deterministic for a given ``seed`` (an int, may be traced) and shape; different seeds give different
    values. ``model_fn`` and ``target`` are accepted for the uniform signature and not used. The rows
    of a batch get different values, so a batch is not the concatenation of per-row calls (under
    ``vmap`` every row gets the same values) -- unless ``rows`` is given: an int array ``(B,)`` of row
    ids (e.g. dataset indices) for a batched ``x`` ``(B, T, F)``; row ``b`` then draws from
    ``fold_in(key(seed), rows[b])``, whatever batch it is in (the job runner's ``method="random"``).

    >>> import jax.numpy as jnp, lrpjax
    >>> r = lrpjax.baselines.random_relevance(None, jnp.ones((4, 3)), seed=1)
    >>> r.shape, bool((r == lrpjax.baselines.random_relevance(None, jnp.ones((4, 3)), seed=1)).all())
    ((4, 3), True)
    """
    x = _check_input(x, "random_relevance")
    s = jnp.asarray(seed)
    if isinstance(seed, bool) or not jnp.issubdtype(s.dtype, jnp.integer) or s.shape != ():
        raise ValueError(f"random_relevance: seed must be an int, got {seed!r}.")
    if rows is None:
        return jax.random.normal(jax.random.key(s), x.shape, x.dtype)
    rows = jnp.asarray(rows)
    if x.ndim != 3 or rows.shape != x.shape[:1] or not jnp.issubdtype(rows.dtype, jnp.integer):
        raise ValueError(f"random_relevance: rows must be an int array of shape (B,) = "
                         f"{tuple(x.shape[:1])} for a batch x (B, T, F); got {rows.dtype} "
                         f"{tuple(rows.shape)} for x of shape {tuple(x.shape)}.")
    draw = lambda i: jax.random.normal(jax.random.fold_in(jax.random.key(s), i), x.shape[1:], x.dtype)
    return jax.vmap(draw)(rows)


def lrp(model_fn: Callable[[Array], Array], x, target=None, **rule_kw):
    """LRP: :func:`lrpjax.relevance` (``eps``, ``bias_factor``, ``gate``, ``strict`` as keywords)."""
    return relevance(model_fn, x, target, **rule_kw)


METHODS: dict[str, Callable] = {
    "lrp": lrp,
    "gradient": gradient,
    "sensitivity": sensitivity,
    "gradient_x_input": gradient_x_input,
    "integrated_gradients": integrated_gradients,
    "occlusion": occlusion,
    "random": random_relevance,
}
"""Method name -> function with the uniform signature ``(model_fn, x, target=None, **kw)``."""


class Attribution(NamedTuple):
    """What :func:`attribute` returns (a pytree).

    relevance: the method's result, like ``x`` or per step (``sensitivity``, ``occlusion``).
    scores: ``(C,)`` / ``(B, C)`` the model's scores at ``x``.
    target: ``()`` / ``(B,)`` the explained class.
    """

    relevance: Array
    scores: Array
    target: Array


def attribute(method: str, model_fn: Callable[[Array], Array], x: Array, target=None,
              **options) -> Attribution:
    """Any method of :data:`METHODS` by name, with the model's scores and the resolved target.

    Args:
      method: a key of :data:`METHODS` (``"lrp"``, ``"gradient"``, ...).
      model_fn, x, target: as the methods (``x`` ``(T, F)`` or ``(B, T, F)``).
      **options: the method's keywords (``eps``/``bias_factor``/``gate``/``strict`` for ``"lrp"``,
        ``steps``/``baseline`` for integrated gradients, ``seed``/``rows`` for ``"random"``, ...).
    Returns:
      :class:`Attribution` ``(relevance, scores, target)``. The gradient methods cost one forward
      and one backward pass (the scores come from the same forward).

    >>> import jax.numpy as jnp, lrpjax
    >>> W = jnp.arange(12.0).reshape(2, 3, 2)
    >>> model = lambda x: jnp.einsum("...tf,tfc->...c", x, W)
    >>> a = lrpjax.baselines.attribute("gradient_x_input", model, jnp.ones((2, 3)))
    >>> a.relevance.shape, a.scores.tolist(), int(a.target)
    ((2, 3), [30.0, 36.0], 1)
    """
    if method not in METHODS:
        raise ValueError(f"attribute: method must be one of {tuple(METHODS)}, got {method!r}.")
    if method == "lrp":
        ex = explain(model_fn, x, target, **options)
        return Attribution(ex.relevance, ex.scores, ex.target)
    x = _check_input(x, method)
    with _running(model_fn, method) as model_fn:
        if method in ("gradient", "gradient_x_input") and not options:  # one forward + one backward
            scores, vjp = jax.vjp(model_fn, x)
            _check_model_out(scores, x, method)
            t = resolve_target(target, scores)
            (g,) = vjp(target_seed(scores, t, scaled=False))
            return Attribution(g * x if method == "gradient_x_input" else g, scores, t)
        scores, t = _scores_and_target(model_fn, x, target, method)
        return Attribution(METHODS[method](model_fn, x, t, **options), scores, t)


def per_step(attribution: Array, x: Array) -> Array:
    """One value per time step: ``x``-shaped attributions summed over the feature axis; per-step
    results (``sensitivity``, ``occlusion``: shape ``x.shape[:-1]``) pass through unchanged.

    >>> import jax.numpy as jnp, lrpjax
    >>> x = jnp.ones((2, 5, 3))
    >>> lrpjax.baselines.per_step(x, x).shape, lrpjax.baselines.per_step(x[..., 0], x).shape
    ((2, 5), (2, 5))
    """
    a_shape, x_shape = tuple(jnp.shape(attribution)), tuple(jnp.shape(x))
    if a_shape == x_shape:
        return jnp.sum(attribution, axis=-1)
    if a_shape == x_shape[:-1]:
        return jnp.asarray(attribution)
    raise ValueError(f"per_step: attribution must have x's shape {x_shape} or the per-step shape "
                     f"{x_shape[:-1]}, got {a_shape}.")
