"""Shared argument checks and defaults (internal: imported by the public modules, not re-exported).

One place for what several modules must agree on: the rule options' defaults and validation, the
"is this value concrete?" test, the checks of ``x``, of the model's scores and of ``target``, and the
one-line rendering of an exception for error messages.
"""
from __future__ import annotations

import numbers
from typing import Any, Optional

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
            f"(B, C); got {jax.tree.map(lambda a: getattr(a, 'shape', a), out)} "
            f"with dtype {dtype}.")


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
    """``scores[..., t]`` per row: ``(C,), () -> ()``; ``(B, C), (B,) -> (B,)``."""
    return jnp.take_along_axis(scores, t[..., None], axis=-1)[..., 0]
