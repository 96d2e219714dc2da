"""``flax.nnx``: supported classes' ``__call__`` are swapped for rule-based versions during the trace.

:func:`nnx_rules` is a scoped, reversible class patch: for the duration of :func:`lrpjax.relevance`'s
trace the classes in :data:`PATCHES` compute themselves from their own weights with the shared cells
of :mod:`._cells`, and the classes of the other modules found in the model function get a named scope
(their path) for strict-mode errors. The module objects themselves are never touched, and a patched
call outside a rule context (e.g. another thread's) runs the original.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from typing import Callable, Iterator, Optional

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.recurrent import flip_sequences  # public (documented) helper

from lrpjax import rules
from lrpjax.flax_integration import _cells

Array = jax.Array


def _val(v) -> Array:
    return v[...]


def _lstm_cell(self, carry, inputs):
    if hasattr(self, "dense_i"):  # OptimizedLSTMCell: fused kernels, columns i, f, g, o
        wx, wh, b = _val(self.dense_i.kernel), _val(self.dense_h.kernel), _val(self.dense_h.bias)
    else:  # LSTMCell: one Linear per gate and side (note `if_`: `if` is a keyword)
        lin = lambda side, q: getattr(self, side + q + ("_" if side + q == "if" else ""))
        cat = lambda side, leaf: jnp.concatenate([_val(getattr(lin(side, q), leaf)) for q in "ifgo"], -1)
        wx, wh, b = cat("i", "kernel"), cat("h", "kernel"), cat("h", "bias")
    dt = _cells.dtype_of(self, inputs, carry[1], wx)
    return _cells.lstm(carry, inputs, wx, wh, b, self.gate_fn, self.activation_fn, dt)


def _gru_cell(self, carry, inputs):
    wx, bx, wh = _val(self.dense_i.kernel), _val(self.dense_i.bias), _val(self.dense_h.kernel)
    d = carry.shape[-1]
    # nnx's GRUCell has no recurrent candidate bias: n = act(x W_n + b_n + r * (h U_n))
    return _cells.gru(carry, inputs, w_rz=(wx[:, :2 * d], wh[:, :2 * d]), b_rz=bx[:2 * d],
                      w_n=wx[:, 2 * d:], b_n=bx[2 * d:], u_n=wh[:, 2 * d:], b_hn=None,
                      gate_fn=self.gate_fn, act_fn=self.activation_fn,
                      dtype=_cells.dtype_of(self, inputs, carry, wx))


def _simple_cell(self, carry, inputs):
    wx = _val(self.dense_i.kernel)
    return _cells.simple(carry, inputs, wx, _val(self.dense_h.kernel), _val(self.dense_i.bias),
                         self.residual, self.activation_fn, _cells.dtype_of(self, inputs, carry, wx))


def _linear(self, inputs):
    k = _val(self.kernel)
    bias = None if self.bias is None else _val(self.bias)
    return _cells.dense(inputs, k, bias, _cells.dtype_of(self, inputs, k))


def _layer_norm(self, x, *args, **kwargs):
    if not (self.reduction_axes in (-1, (-1,)) and self.feature_axes in (-1, (-1,))):
        return type(self).__call__.__wrapped__(self, x, *args, **kwargs)
    return _cells.layer_norm(x, None if self.scale is None else _val(self.scale),
                             None if self.bias is None else _val(self.bias), self.epsilon,
                             _cells.dtype_of(self, x))


def _embed(self, ids):
    original = type(self).__call__.__wrapped__
    return rules.embed_lookup(None, ids, lookup=lambda: original(self, ids))


def _zero_carry(cell, shape):
    """The carry nnx would create, without drawing from (and mutating) the module's RNG stream."""
    mem = tuple(shape[:-1]) + (cell.hidden_features,)
    init = cell.carry_init or (lambda key, s, dt: jnp.zeros(s, dt))
    make = lambda: init(jax.random.key(0), mem, cell.param_dtype)
    return (make(), make()) if isinstance(cell, (nnx.LSTMCell, nnx.OptimizedLSTMCell)) else make()


def _rnn(self, inputs, *, initial_carry=None, seq_lengths=None, return_carry=None,
         time_major=None, reverse=None, keep_order=None, rngs=None):
    """flax.nnx.RNN's semantics (reverse, keep_order, seq_lengths, return_carry) with a plain
    ``lax.scan``, so it can be traced by ``jax.vjp`` directly (nnx.scan cannot)."""
    return_carry = self.return_carry if return_carry is None else return_carry
    time_major = self.time_major if time_major is None else time_major
    reverse = self.reverse if reverse is None else reverse
    keep_order = self.keep_order if keep_order is None else keep_order
    t_ax = 0 if time_major else inputs.ndim - (self.cell.num_feature_axes + 1)
    n_batch = inputs.ndim - self.cell.num_feature_axes - 1
    flip = lambda a: flip_sequences(a, seq_lengths, num_batch_dims=n_batch, time_major=time_major)
    if reverse:
        inputs = flip(inputs)
    if initial_carry is None:
        initial_carry = _zero_carry(self.cell, inputs.shape[:t_ax] + inputs.shape[t_ax + 1:])
    carry = _cells.initial_carry(initial_carry)
    slice_carry = seq_lengths is not None and return_carry

    def body(carry, x):
        carry, y = self.cell(carry, x)
        return carry, ((carry, y) if slice_carry else y)

    carry, ys = jax.lax.scan(body, carry, jnp.moveaxis(inputs, t_ax, 0))
    if slice_carry:
        carries, ys = ys
        carry = _cells.last_carry(carries, seq_lengths)
    outputs = jnp.moveaxis(ys, 0, t_ax)
    if reverse and keep_order:
        outputs = flip(outputs)
    return (carry, outputs) if return_carry else outputs


PATCHES: dict = {nnx.LSTMCell: _lstm_cell, nnx.OptimizedLSTMCell: _lstm_cell, nnx.GRUCell: _gru_cell,
                 nnx.SimpleCell: _simple_cell, nnx.Linear: _linear, nnx.RNN: _rnn,
                 nnx.LayerNorm: _layer_norm, nnx.Embed: _embed}
"""nnx class -> replacement ``__call__`` computing it with the rules."""


_PLAIN: contextvars.ContextVar[bool] = contextvars.ContextVar("lrpjax_nnx_plain", default=False)
"""True inside :func:`nnx_rules` with ``plain=True`` (this thread/context only)."""


def _patched(cls, replacement):
    original = cls.__call__

    def __call__(self, *args, **kwargs):
        if rules.current() is None and not rules.token_mode_active() and not _PLAIN.get():
            return original(self, *args, **kwargs)  # e.g. another thread's call
        return replacement(self, *args, **kwargs)
    __call__.__wrapped__ = original
    return __call__


def _roots(fn) -> list:
    """nnx modules reachable from a model function (its closure, globals, bound self, partial args)."""
    found, candidates = [], [fn]
    if isinstance(fn, functools.partial):
        candidates += [fn.func, *fn.args, *fn.keywords.values()]
    if hasattr(fn, "__self__"):
        candidates.append(fn.__self__)
    for c in list(candidates):
        if inspect.isfunction(c):
            try:
                cv = inspect.getclosurevars(c)
            except (TypeError, ValueError):
                continue
            candidates += list(cv.nonlocals.values()) + list(cv.globals.values())
    for c in candidates:
        if isinstance(c, nnx.Module) and all(c is not f for f in found):
            found.append(c)
    return found


def _scoped(original, names: dict):
    def __call__(self, *args, **kwargs):
        name = f"{type(self).__name__}({names.get(id(self), '?')})"
        with jax.named_scope(name):  # strict-mode errors name the layer and its path
            return original(self, *args, **kwargs)
    __call__.__wrapped__ = original
    return __call__


@contextlib.contextmanager
def nnx_rules(model_fn: Optional[Callable] = None, plain: bool = False) -> Iterator[None]:
    """Context: flax.nnx modules called while tracing under :func:`lrpjax.relevance` use LRP rules.

    The supported classes' ``__call__`` are replaced for the duration and restored afterwards; the
    classes of the other modules found in ``model_fn`` get a named scope (their path) for errors.
    ``plain=True``: the replacements run even outside a rule context, where lrpjax's rules are plain
    JAX: the same values and the plain gradient, traceable by ``jax.grad``/``jax.jit`` (nnx.RNN as a
    ``lax.scan`` that does not touch the module's RNG stream).
    """
    patches = {cls: _patched(cls, fn) for cls, fn in PATCHES.items()}
    names: dict = {}
    for root in (_roots(model_fn) if model_fn is not None else []):
        for path, node in nnx.iter_graph(root):
            if isinstance(node, nnx.Module):
                names.setdefault(id(node), ".".join(map(str, path)) or "top-level")
                cls = type(node)
                if cls not in patches and not any(issubclass(cls, p) for p in patches):
                    patches[cls] = _scoped(cls.__call__, names)
    saved = {cls: cls.__dict__.get("__call__") for cls in patches}
    token = _PLAIN.set(True) if plain else None
    try:
        for cls, fn in patches.items():
            cls.__call__ = fn
        yield
    finally:
        if token is not None:
            _PLAIN.reset(token)
        for cls, fn in saved.items():
            if fn is None:
                del cls.__call__
            else:
                cls.__call__ = fn
