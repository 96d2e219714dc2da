"""``flax.linen``: a method interceptor computes supported layers with the LRP rules.

While :func:`lrpjax.relevance` traces the model, :func:`linen_rules` installs a linen method
interceptor (``nn.intercept_methods``, scoped to that trace and undone afterwards). It reads each
supported module's own parameters and calls the shared cell in :mod:`._cells`; any other module runs as
written inside a ``jax.named_scope`` naming its class and path, so strict mode's error names the layer.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp

from lrpjax import rules
from lrpjax.cells import lstm_cell_update
from lrpjax.flax_integration import _cells

Array = jax.Array


def _params(module) -> dict:
    return module.variables["params"]


def _lstm_cell(module, carry, inputs):
    P = _params(module)
    cat = lambda names, leaf: jnp.concatenate([P[n][leaf] for n in names], axis=-1)
    wx, wh = cat(("ii", "if", "ig", "io"), "kernel"), cat(("hi", "hf", "hg", "ho"), "kernel")
    b = cat(("hi", "hf", "hg", "ho"), "bias")
    dt = _cells.dtype_of(module, inputs, carry[1], P["ii"]["kernel"])
    return _cells.lstm(carry, inputs, wx, wh, b, module.gate_fn, module.activation_fn, dt)


def _gru_like(module, carry, inputs, *, shared_gate: bool):
    P = _params(module)
    gates = ("f",) if shared_gate else ("r", "z")
    bias = lambda n: P[n].get("bias")
    cat = lambda side, leaf: jnp.concatenate([P[side + g][leaf] for g in gates], -1)
    return _cells.gru(
        carry, inputs, w_rz=(cat("i", "kernel"), cat("h", "kernel")), b_rz=cat("i", "bias"),
        w_n=P["in"]["kernel"], b_n=bias("in"), u_n=P["hn"]["kernel"], b_hn=bias("hn"),
        gate_fn=module.gate_fn, act_fn=module.activation_fn,
        dtype=_cells.dtype_of(module, inputs, carry, P["in"]["kernel"]), shared_gate=shared_gate,
        reset=not shared_gate or module.reset_gate)


def _simple_cell(module, carry, inputs):
    P = _params(module)
    return _cells.simple(carry, inputs, P["i"]["kernel"], P["h"]["kernel"], P["i"]["bias"],
                         module.residual, module.activation_fn,
                         _cells.dtype_of(module, inputs, carry, P["i"]["kernel"]))


def _dense(module, inputs):
    P = _params(module)
    return _cells.dense(inputs, P["kernel"], P.get("bias"), _cells.dtype_of(module, inputs, P["kernel"]))


def _layer_norm(module, x, *args, **kwargs):
    P = module.variables.get("params", {})
    return _cells.layer_norm(x, P["scale"] if module.use_scale else None,
                             P["bias"] if module.use_bias else None, module.epsilon,
                             _cells.dtype_of(module, x))


def _ln_supported(module) -> bool:
    return (module.reduction_axes in (-1, (-1,)) and module.feature_axes in (-1, (-1,))
            and getattr(module, "axis_name", None) is None)


def _rnn(module, next_fun, args, kwargs):
    """Let Flax run its RNN, but with the initial carry registered as a reported initial state."""
    inputs = args[0]
    carry = kwargs.get("initial_carry")
    if carry is None:  # what flax.linen.RNN would create itself (zeros by default)
        time_major = module.time_major if kwargs.get("time_major") is None else kwargs["time_major"]
        t = 0 if time_major else inputs.ndim - (module.cell.num_feature_axes + 1)
        key = kwargs.get("init_key")
        carry = module.cell.initialize_carry(jax.random.key(0) if key is None else key,
                                             inputs.shape[:t] + inputs.shape[t + 1:])
    return next_fun(*args, **dict(kwargs, initial_carry=_cells.initial_carry(carry)))


def _conv_lstm_cell(module, carry, inputs, next_fun):
    """``ConvLSTMCell``: gates ``conv_ih(x) + conv_hh(h)`` in the order i, g, f, o, ``f + 1``; the
    gates' convolutions use the epsilon rule over each unit's receptive field."""
    padding = module.padding if isinstance(module.padding, str) else tuple(map(tuple, module.padding))
    if isinstance(padding, str) and padding not in ("SAME", "VALID"):
        return next_fun(carry, inputs)  # e.g. CIRCULAR: no rule here; strict mode will say so
    c, h = carry
    P = _params(module)
    dt = _cells.dtype_of(module, inputs, h, P["ih"]["kernel"])
    nd = len(module.kernel_size)
    unbatched = inputs.ndim == nd + 1
    x, h, c = (a[None] if unbatched else a for a in (inputs.astype(dt), h.astype(dt), c.astype(dt)))
    sp = "DHW"[-nd:] if nd <= 3 else None
    spec = rules.ConvSpec(tuple(module.strides or (1,) * nd), padding,
                          ("N" + sp + "C", sp + "IO", "N" + sp + "C"))
    F = module.features
    blk = {q: slice(k * F, (k + 1) * F) for k, q in enumerate("igfo")}
    kx, kh = P["ih"]["kernel"].astype(dt), P["hh"]["kernel"].astype(dt)
    bias = jnp.zeros((4 * F,), dt)
    for name in ("ih", "hh"):
        if "bias" in P[name]:
            bias = bias + P[name]["bias"].astype(dt)
    bias = bias.at[blk["f"]].add(1.0)  # f = sigmoid(f + 1): the constant is part of f's bias
    cols = lambda a, qs: jnp.concatenate([a[..., blk[q]] for q in qs], axis=-1)
    z = {"g": rules.conv((x, h), (kx[..., blk["g"]], kh[..., blk["g"]]), bias[blk["g"]], spec)}
    zg = rules.conv_gate_preactivation((x, h), (cols(kx, "ifo"), cols(kh, "ifo")), cols(bias, "ifo"),
                                       spec)
    for k, q in enumerate("ifo"):
        z[q] = zg[..., k * F:(k + 1) * F]
    c_new, h_new = lstm_cell_update("standard", z, c)
    if unbatched:
        c_new, h_new = c_new[0], h_new[0]
    return (c_new, h_new), h_new


HANDLERS: dict = {
    nn.LSTMCell: _lstm_cell,
    nn.OptimizedLSTMCell: _lstm_cell,
    nn.GRUCell: lambda m, c, x: _gru_like(m, c, x, shared_gate=False),
    nn.MGUCell: lambda m, c, x: _gru_like(m, c, x, shared_gate=True),
    nn.SimpleCell: _simple_cell,
    nn.Dense: _dense,
}
"""linen class -> ``handler(module, *args)`` computing it with the rules."""


def _module_name(module) -> str:
    path = ".".join(str(p) for p in getattr(module, "path", ()) or ())
    return f"{type(module).__name__}({path or 'top-level'})"


def _intercept(next_fun: Callable, args: tuple, kwargs: dict, context: Any):
    module = context.module
    if context.method_name != "__call__":
        return next_fun(*args, **kwargs)
    if isinstance(module, nn.Embed) and rules.token_mode_active():
        ids = args[0]
        return rules.embed_lookup(None, ids, lookup=lambda: next_fun(ids, **kwargs))
    if rules.current() is None:
        return next_fun(*args, **kwargs)
    if isinstance(module, nn.LayerNorm) and _ln_supported(module):
        return _layer_norm(module, *args, **kwargs)
    if isinstance(module, nn.ConvLSTMCell):
        return _conv_lstm_cell(module, *args, next_fun=lambda *a: next_fun(*a, **kwargs))
    handler = HANDLERS.get(type(module))
    if handler is not None:
        return handler(module, *args, **kwargs)
    if isinstance(module, nn.RNN):
        return _rnn(module, next_fun, args, kwargs)
    with jax.named_scope(_module_name(module)):  # strict-mode errors name the layer
        return next_fun(*args, **kwargs)


@contextlib.contextmanager
def linen_rules() -> Iterator[None]:
    """Context: linen modules called while tracing under :func:`lrpjax.relevance` use LRP rules."""
    with nn.intercept_methods(_intercept):
        yield
