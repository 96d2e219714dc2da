"""The epsilon rule's arithmetic, shared by every rule of :mod:`lrpjax.rules` (internal).

For an upper unit ``z_j`` fed by lower units ``a_i`` (``z_j = sum_i a_i w_ij + b_j``), with
``s_j = +1 if z_j >= 0 else -1``: the message ``S_j = R_j / (z_j + eps*s_j)``, lower unit ``i`` gets
``a_i * sum_j w_ij S_j``, plus, with ``bias_factor > 0``, an equal share
``bias_factor * sum_j (b_j + eps*s_j) * S_j / N`` of what the bias and stabiliser would absorb.
Also here: how a ``custom_vjp`` backward is marked as an lrpjax rule (strict mode reads the mark).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

Array = jax.Array


def stabilised(z: Array, eps: float) -> Array:
    """``z + eps * s`` with ``s = +1 if z >= 0 else -1``; never smaller than eps in magnitude.

    >>> stabilised(jnp.array([0.0, -2.0]), 0.5).tolist()
    [0.5, -2.5]
    """
    return z + jnp.where(z >= 0, eps, -eps).astype(z.dtype)


def messages(z: Array, R: Array, bias: Optional[Array], n_lower: int, eps: float,
             bias_factor: float) -> tuple[Array, Array]:
    """Messages and bias share of the epsilon rule.

    Returns ``S = R / (z + eps*s)`` (shape of ``z``) and
    ``share = bias_factor * sum_j (b_j + eps*s_j) * S_j / N`` (shape ``z.shape[:-1] + (1,)``), so that
    lower unit ``i`` of incoming layer ``k`` gets ``a_i * (S @ W^(k).T)_i + share``.
    """
    zs = stabilised(z, eps)
    S = R / zs
    if bias_factor == 0.0:
        return S, jnp.zeros(z.shape[:-1] + (1,), z.dtype)
    absorbed = zs - z if bias is None else zs - z + bias   # b_j + eps*s_j
    # a unit at -inf (a masked attention score) takes no relevance: keep the others' share finite
    share = bias_factor * jnp.sum(finite(absorbed) * S, axis=-1, keepdims=True) / n_lower
    return S, share


def message_factors(z: Array, bias: Optional[Array], n_lower: int, eps: float,
                    bias_factor: float) -> tuple[Array, Optional[Array]]:
    """:func:`messages` as factors known before the relevance: ``(u, w)`` with ``S = u * R`` and
    ``share = sum_j w_j R_j`` (``w = None`` when ``bias_factor == 0``). A whole-layer kernel stores them
    in its forward pass, so its reverse pass only multiplies (see :mod:`lrpjax.fused`).

    >>> u, w = message_factors(jnp.array([1.0, -3.0]), None, 2, 1.0, 0.0)
    >>> u.tolist(), w
    ([0.5, -0.25], None)
    """
    zs = stabilised(z, eps)
    u = 1 / zs
    if bias_factor == 0.0:
        return u, None
    absorbed = zs - z if bias is None else zs - z + bias
    return u, (bias_factor / n_lower) * finite(absorbed) * u


def finite(a: Array) -> Array:
    """``a`` with infinite entries (masked scores) set to 0: their relevance is 0, never NaN."""
    return jnp.where(jnp.isfinite(a), a, 0)


RULE_ATTRIBUTE = "lrpjax_rule"
"""Attribute naming the rule on each custom_vjp backward (how strict mode recognises a rule)."""


def mark_rule(name: str) -> Callable[[Callable], Callable]:
    """Decorator: mark a custom_vjp backward as the lrpjax rule ``name``."""
    def mark(bwd: Callable) -> Callable:
        setattr(bwd, RULE_ATTRIBUTE, name)
        return bwd
    return mark


def rule_name(bwd: Any) -> Optional[str]:
    """The rule a custom_vjp backward implements (``"linear"``, ``"no_relevance"``, ...), or ``None``
    for any other function; sees through ``functools.partial`` and JAX's wrappers (``.f``)."""
    f = getattr(bwd, "f", bwd)
    while hasattr(f, "func"):  # functools.partial
        f = f.func
    return getattr(f, RULE_ATTRIBUTE, None)
