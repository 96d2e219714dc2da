"""Explain unmodified Flax models: their layers are replaced by lrpjax's rules while being traced.

``lrpjax.relevance(lambda x: model.apply(params, x), x)`` works on a ``flax.linen`` model as it is:
while ``relevance`` traces the function, a linen method interceptor (``nn.intercept_methods``, scoped to
that trace and undone afterwards) computes each supported layer from the module's own parameters with
the LRP rules of :mod:`lrpjax.rules`. Forward values are unchanged (to float rounding), the module and
its params are never modified, and outside ``relevance`` nothing is intercepted.

Supported linen layers and their rules:

================================  ===============================================================
``LSTMCell``, ``OptimizedLSTMCell``  the LSTM rules (:func:`lrpjax.lstm`), custom ``gate_fn``/
                                     ``activation_fn`` pass relevance unchanged
``GRUCell``                          :func:`lrpjax.cells.gru_cell`
``MGUCell``                          :func:`lrpjax.cells.gru_cell` with one shared gate f (reset and
                                     update); ``reset_gate=False``: ``a_n`` fed by x and h, ``N = e+d``
``SimpleCell``                       epsilon rule over x, h (and h again for ``residual=True``,
                                     ``N = e+2d``), the activation passes relevance
``RNN``, ``Bidirectional``           Flax's own scan, reversal, ``seq_lengths`` and merge; the initial
                                     carry (default or given) becomes a reported initial state
``Dense``                            epsilon rule (with or without bias)
``Dropout`` (deterministic)          identity (Flax returns the input unchanged)
================================  ===============================================================

Any other module runs as written inside a ``jax.named_scope`` naming its class and path, so strict
mode's error says which layer holds an operation without an LRP rule.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp

from lrpjax import rules
from lrpjax.cells import LSTMParams, _cell, _make_preactivations, gru_cell

Array = jax.Array


def _p(module) -> dict:
    return module.variables["params"]


def _dtype(module, *arrays) -> Any:
    return module.dtype if getattr(module, "dtype", None) is not None else jnp.result_type(*arrays)


def _lstm_cell(module, carry, inputs):
    c, h = carry
    P = _p(module)
    dt = _dtype(module, inputs, h, P["ii"]["kernel"])
    cat = lambda names, leaf: jnp.concatenate([P[n][leaf].astype(dt) for n in names], axis=-1)
    params = LSTMParams(cat(("ii", "if", "ig", "io"), "kernel"), cat(("hi", "hf", "hg", "ho"), "kernel"),
                        cat(("hi", "hf", "hg", "ho"), "bias"))
    d = h.shape[-1]
    z = _make_preactivations(params, "standard", d)(inputs.astype(dt), h.astype(dt))
    c_new, h_new = _cell("standard", z, c.astype(dt), module.gate_fn, module.activation_fn)
    return (c_new, h_new), h_new


def _gru_like(module, carry, inputs, *, shared_gate: bool):
    h = carry
    P = _p(module)
    gates = ("f",) if shared_gate else ("r", "z")
    dt = _dtype(module, inputs, h, P["in"]["kernel"])
    k = lambda n: P[n]["kernel"].astype(dt)
    b = lambda n: P[n]["bias"].astype(dt) if "bias" in P[n] else None
    reset = not shared_gate or module.reset_gate
    h_new = gru_cell(
        inputs.astype(dt), h.astype(dt),
        w_rz=(jnp.concatenate([k("i" + g) for g in gates], -1),
              jnp.concatenate([k("h" + g) for g in gates], -1)),
        b_rz=jnp.concatenate([b("i" + g) for g in gates], -1), w_n=k("in"), b_n=b("in"), u_n=k("hn"),
        b_hn=b("hn"), shared_gate=shared_gate, reset=reset, gate_fn=module.gate_fn,
        act_fn=module.activation_fn)
    return h_new, h_new


def _simple_cell(module, carry, inputs):
    P = _p(module)
    dt = _dtype(module, inputs, carry, P["i"]["kernel"])
    h = carry.astype(dt)
    ins, ws = [inputs.astype(dt), h], [P["i"]["kernel"].astype(dt), P["h"]["kernel"].astype(dt)]
    if module.residual:  # h' = act(W_i x + b + W_h h + h): the residual is an identity connection
        ins.append(h)
        ws.append(None)
    h_new = rules.act(module.activation_fn, rules.linear(tuple(ins), tuple(ws),
                                                         P["i"]["bias"].astype(dt)))
    return h_new, h_new


def _dense(module, inputs):
    P = _p(module)
    dt = _dtype(module, inputs, P["kernel"])
    bias = P["bias"].astype(dt) if "bias" in P else None
    return rules.linear(inputs.astype(dt), P["kernel"].astype(dt), bias)


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
    kwargs = dict(kwargs, initial_carry=jax.tree.map(rules.initial_state, carry))
    return next_fun(*args, **kwargs)


def _handlers() -> dict:
    import flax.linen as nn
    return {
        nn.LSTMCell: _lstm_cell,
        nn.OptimizedLSTMCell: _lstm_cell,
        nn.GRUCell: lambda m, c, x: _gru_like(m, c, x, shared_gate=False),
        nn.MGUCell: lambda m, c, x: _gru_like(m, c, x, shared_gate=True),
        nn.SimpleCell: _simple_cell,
        nn.Dense: _dense,
    }


def _module_name(module) -> str:
    path = ".".join(str(p) for p in getattr(module, "path", ()) or ())
    return f"{type(module).__name__}({path or 'top-level'})"


def _interceptor(handlers: dict) -> Callable:
    import flax.linen as nn

    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if rules.current() is None or context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        handler = handlers.get(type(module))
        if handler is not None:
            return handler(module, *args, **kwargs)
        if isinstance(module, nn.RNN):
            return _rnn(module, next_fun, args, kwargs)
        with jax.named_scope(_module_name(module)):  # strict-mode errors name the layer
            return next_fun(*args, **kwargs)

    return intercept


@contextlib.contextmanager
def linen_rules() -> Iterator[None]:
    """Context: linen modules called while tracing under :func:`lrpjax.relevance` use LRP rules."""
    import flax.linen as nn
    with nn.intercept_methods(_interceptor(_handlers())):
        yield
