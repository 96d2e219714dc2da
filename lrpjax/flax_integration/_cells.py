"""Flax's layers computed with lrpjax's rules, from plain weight arrays (shared by linen and nnx).

Each function here is "the shared cell": :mod:`.linen` and :mod:`.nnx` only read a module's weights
(their param trees differ) and call one of these. Casting follows Flax: the module's ``dtype`` if set,
else the promoted dtype of the inputs and weights.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from lrpjax import rules
from lrpjax.cells import LSTMParams, gru_cell, lstm_cell

Array = jax.Array


def dtype_of(module: Any, *arrays: Array) -> Any:
    """Flax's computation dtype: ``module.dtype`` if set, else the arrays' promoted dtype."""
    return module.dtype if getattr(module, "dtype", None) is not None else jnp.result_type(*arrays)


def lstm(carry: tuple[Array, Array], inputs: Array, wx: Array, wh: Array, b: Array,
         gate_fn: Callable, act_fn: Callable, dtype: Any):
    """Flax's ``LSTMCell``/``OptimizedLSTMCell`` step: kernels ``wx (e, 4d)``, ``wh (d, 4d)`` and bias
    ``b (4d,)`` with gate columns i, f, g, o. Returns ``((c, h), h)``."""
    c, h = carry
    params = LSTMParams(wx.astype(dtype), wh.astype(dtype), b.astype(dtype))
    c_new, h_new = lstm_cell(params, (c.astype(dtype), h.astype(dtype)), inputs.astype(dtype),
                             gate_fn=gate_fn, act_fn=act_fn)
    return (c_new, h_new), h_new


def gru(h: Array, inputs: Array, *, w_rz: tuple, b_rz: Optional[Array], w_n: Array,
        b_n: Optional[Array], u_n: Array, b_hn: Optional[Array], gate_fn: Callable, act_fn: Callable,
        dtype: Any, shared_gate: bool = False, reset: bool = True):
    """Flax's ``GRUCell``/``MGUCell`` step (see :func:`lrpjax.cells.gru_cell`). Returns ``(h, h)``."""
    cast = lambda a: None if a is None else a.astype(dtype)
    h_new = gru_cell(inputs.astype(dtype), h.astype(dtype), w_rz=tuple(map(cast, w_rz)),
                     b_rz=cast(b_rz), w_n=cast(w_n), b_n=cast(b_n), u_n=cast(u_n), b_hn=cast(b_hn),
                     shared_gate=shared_gate, reset=reset, gate_fn=gate_fn, act_fn=act_fn)
    return h_new, h_new


def simple(carry: Array, inputs: Array, wx: Array, wh: Array, b: Array, residual: bool,
           act_fn: Callable, dtype: Any):
    """Flax's ``SimpleCell``: ``h' = act(x W_i + b + h W_h (+ h))``, the epsilon rule over x, h (and h
    again for ``residual=True``: an identity connection), the activation passes relevance."""
    h = carry.astype(dtype)
    ins, ws = [inputs.astype(dtype), h], [wx.astype(dtype), wh.astype(dtype)]
    if residual:
        ins.append(h)
        ws.append(None)
    h_new = rules.act(act_fn, rules.linear(tuple(ins), tuple(ws), b.astype(dtype)))
    return h_new, h_new


def dense(inputs: Array, kernel: Array, bias: Optional[Array], dtype: Any) -> Array:
    """``Dense``/``Linear``: the epsilon rule (with or without bias)."""
    bias = None if bias is None else bias.astype(dtype)
    return rules.linear(inputs.astype(dtype), kernel.astype(dtype), bias)


def layer_norm(x: Array, scale: Optional[Array], bias: Optional[Array], epsilon: float,
               dtype: Any) -> Array:
    """``LayerNorm`` over the last axis (see :func:`lrpjax.rules.layer_norm`)."""
    cast = lambda a: None if a is None else a.astype(dtype)
    return rules.layer_norm(x.astype(dtype), cast(scale), cast(bias), epsilon=epsilon)


def initial_carry(carry: Any) -> Any:
    """Register every array of an RNN's initial carry as a reported initial state."""
    return jax.tree.map(rules.initial_state, carry)


def last_carry(carries: Any, seq_lengths: Array) -> Any:
    """The carry after each sequence's last valid step, from carries stacked over time ``(T, B, ...)``."""
    last = seq_lengths - 1
    return jax.tree.map(lambda a: a[last, jnp.arange(a.shape[1])], carries)
