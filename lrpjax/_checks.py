"""Shared argument checks and defaults (internal: imported by the public modules, not re-exported).

One place for what several modules must agree on: the rule options' defaults and validation, the
"is this value concrete?" test, the checks of ``x``, of the model's scores and of ``target``, and the
one-line rendering of an exception for error messages.
"""
from __future__ import annotations

import functools
import numbers
import sys
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_EPS = 1e-3
"""Default stabiliser of the epsilon rule (the reference's ``eps``)."""
DEFAULT_BIAS_FACTOR = 0.0
"""Default share of bias + stabiliser spread over the lower units (0 = the reference's default)."""
GATE_RULES = ("all", "half", "prop", "abs")
"""Rules for gated products ``gate * signal``: signal-take-all, half, proportional, absolute."""
DEFAULT_GATE = "all"


def check_rule_options(eps, bias_factor, gate) -> tuple[float, float, str]:
    """Validate the rule options; raises ``ValueError`` naming the argument, the value and the range.

    >>> check_rule_options(1e-3, 0, "all")
    (0.001, 0.0, 'all')
    """
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0 or eps != eps:
        raise ValueError(f"eps must be a number > 0 (the epsilon-rule stabiliser), got {eps!r}.")
    if (isinstance(bias_factor, bool) or not isinstance(bias_factor, numbers.Real)
            or not 0.0 <= bias_factor <= 1.0):
        raise ValueError(f"bias_factor must be a number in [0, 1] (0 = reference default, "
                         f"1 = exact conservation), got {bias_factor!r}.")
    if gate not in GATE_RULES:
        raise ValueError(f"gate must be one of {GATE_RULES}, got {gate!r}.")
    return float(eps), float(bias_factor), gate


def concrete(a: Any) -> Optional[np.ndarray]:
    """``a`` as a numpy array, or ``None`` when it is traced (inside ``jit``/``vmap``): checks of
    values run where they can and are left to the caller's data pipeline where they cannot."""
    try:
        return np.asarray(a)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def is_int(v: Any) -> bool:
    """A Python or numpy integer (``bool`` excluded)."""
    return isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool)


def one_line(msg: Any) -> str:
    """An exception or message on one line (for error rows and one-line CLI errors)."""
    return " ".join(str(msg).split())


def check_x(x: Any) -> list:
    """The leaves of ``x``: floating arrays, finite where concrete. Returns the leaves in order."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(x)
    if not leaves:
        raise ValueError("x must be an array or a pytree with at least one array, got an empty pytree.")
    for path, leaf in leaves:
        name = "x" + jax.tree_util.keystr(path)
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"{name} must be a floating-point array (relevance is defined on real-valued inputs), "
                f"got {type(leaf).__name__} with dtype {dtype}. Integer token ids: embed them first and "
                f"explain the embedded sequence.")
        values = concrete(leaf)
        if values is not None and not np.all(np.isfinite(values)):
            bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
            raise ValueError(f"{name} contains {bad} NaN/inf value(s); relevance of non-finite inputs "
                             f"is undefined. Clean or mask them (use lengths= for padding) first.")
    return [leaf for _, leaf in leaves]


def check_scores(out: Any) -> None:
    """``model_fn(x)`` must be one floating array of class scores ``(C,)`` or ``(B, C)``."""
    shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
    if shape is None or len(shape) not in (1, 2) or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"model_fn(x) must return one floating array of class scores (logits) with shape (C,) or "
            f"(B, C) (or one scalar output per row: () / (B,)); got "
            f"{jax.tree.map(lambda a: getattr(a, 'shape', a), out)} with dtype {dtype}.")


def batch_rows(x: Any) -> Optional[int]:
    """``B`` when ``x`` is a batch (its first leaf has rank >= 3: ``(B, T, F, ...)``), else ``None``.

    >>> import jax.numpy as jnp
    >>> batch_rows(jnp.ones((4, 6, 3))), batch_rows({"a": jnp.ones((6, 3))})
    (4, None)
    """
    leaves = jax.tree.leaves(x)
    shape = tuple(getattr(leaves[0], "shape", ())) if leaves else ()
    return shape[0] if len(shape) >= 3 else None


def scalar_outputs(shape: tuple, x: Any) -> bool:
    """Whether scores of this ``shape`` are scalar outputs (one number per row, no class axis):
    ``()`` for one sequence, or ``(B,)`` for a batched ``x`` with ``B`` rows (:func:`batch_rows`).

    >>> import jax.numpy as jnp
    >>> scalar_outputs((4,), jnp.ones((4, 6, 3))), scalar_outputs((4,), jnp.ones((6, 3)))
    (True, False)
    """
    shape = tuple(shape)
    return shape == () or (len(shape) == 1 and batch_rows(x) == shape[0])


def _add_class_axis(model_fn: Callable, x: Any) -> Any:
    out = model_fn(x)
    shape = getattr(out, "shape", None)
    return out[..., None] if shape is not None and scalar_outputs(shape, x) else out


def with_class_axis(model_fn: Callable) -> Callable:
    """``model_fn`` whose scalar outputs (:func:`scalar_outputs`) get a class axis of size 1:
    ``()`` -> ``(1,)``, ``(B,)`` -> ``(B, 1)``; class scores pass unchanged. A ``functools.partial``,
    so the Flax hooks still find the modules ``model_fn`` closes over.

    >>> import jax.numpy as jnp
    >>> with_class_axis(lambda x: x.sum((1, 2)))(jnp.ones((4, 6, 3))).shape
    (4, 1)
    """
    return functools.partial(_add_class_axis, model_fn)


def _flax_misuse(model_fn: Any) -> Optional[str]:
    """What is wrong when ``model_fn`` is a linen module or its ``apply`` without params, else None."""
    nn = sys.modules.get("flax.linen")
    if nn is None:
        return None
    fix = "pass a function of x instead: lambda x: model.apply(params, x) (params = model.init(key, x))."
    for f in (model_fn, getattr(model_fn, "__wrapped__", None)):
        owner = getattr(f, "__self__", None)
        if isinstance(f, nn.Module) and f.scope is None:
            return (f"model_fn is the flax.linen module {type(f).__name__} itself, which has no "
                    f"parameters bound; {fix}")
        if isinstance(owner, nn.Module) and getattr(f, "__name__", "") in ("apply", "init",
                                                                           "init_with_output"):
            return (f"model_fn is {type(owner).__name__}.{f.__name__}, which takes the variables first "
                    f"({f.__name__}(variables, x)), not x; {fix}")
    return None


def check_model_fn(model_fn: Any, fn: str) -> None:
    """``model_fn`` must be a callable ``x -> scores``. A Flax linen module (unbound) or its ``apply``
    passed without params raises a one-line ``ValueError`` showing ``lambda x: model.apply(params, x)``
    (checked before anything is traced; Flax is looked at only if it is already imported).

    >>> check_model_fn(lambda x: x, "relevance")
    """
    if not callable(model_fn):
        raise ValueError(f"{fn}: model_fn must be callable (x -> class scores), got "
                         f"{type(model_fn).__name__}.")
    problem = _flax_misuse(model_fn)
    if problem is not None:
        raise ValueError(f"{fn}: {problem}")


def target_seed(scores: jax.Array, t: jax.Array, scaled: bool = True) -> jax.Array:
    """The backward seed: ``one_hot(t) * scores`` (``scaled=False``: ``one_hot(t)``), shape of
    ``scores`` ``(..., C)``. Rows whose ``t`` lies outside ``[0, C)`` (possible only for a traced
    target; concrete ones are refused by :func:`resolve_target`) are seeded with NaN, so their result
    is NaN rather than a plausible all-zero one.

    >>> import jax.numpy as jnp
    >>> target_seed(jnp.array([[1.0, 2.0], [3.0, 4.0]]), jnp.array([1, 2])).tolist()
    [[0.0, 2.0], [nan, nan]]
    """
    C = scores.shape[-1]
    seed = jax.nn.one_hot(t, C, dtype=scores.dtype)
    seed = seed * scores if scaled else seed
    valid = (t >= 0) & (t < C)
    return jnp.where(valid[..., None], seed, jnp.nan).astype(scores.dtype)


def resolve_target(target: Any, scores: jax.Array) -> jax.Array:
    """The explained class per row, ``()`` / ``(B,)`` int32: the argmax for ``None``, else ``target``
    checked for dtype, shape and (where concrete) range."""
    C = scores.shape[-1]
    batch = scores.shape[:-1]
    if target is None:
        return jnp.argmax(jax.lax.stop_gradient(scores), axis=-1).astype(jnp.int32)
    t = jnp.asarray(target)
    if not jnp.issubdtype(t.dtype, jnp.integer):
        raise ValueError(f"target must be None, an int or an integer array, got dtype {t.dtype}.")
    if t.shape not in ((), batch):
        raise ValueError(f"target must have shape () or {batch} for scores of shape {scores.shape}, "
                         f"got {t.shape}.")
    tc = concrete(t)
    if tc is not None and tc.size and (tc.min() < 0 or tc.max() >= C):
        raise ValueError(f"target must lie in [0, {C}) for {C} classes, got values in "
                         f"[{tc.min()}, {tc.max()}].")
    return jnp.broadcast_to(t, batch).astype(jnp.int32)


def pick(scores: jax.Array, t: jax.Array) -> jax.Array:
    """``scores[..., t]`` per row: ``(C,), () -> ()``; ``(B, C), (B,) -> (B,)``; NaN where ``t`` is
    outside ``[0, C)`` (a traced out-of-range target)."""
    C = scores.shape[-1]
    picked = jnp.take_along_axis(scores, jnp.clip(t, 0, C - 1)[..., None], axis=-1)[..., 0]
    return jnp.where((t >= 0) & (t < C), picked, jnp.nan).astype(scores.dtype)
