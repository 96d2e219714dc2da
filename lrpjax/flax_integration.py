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
``ConvLSTMCell``                     the LSTM rules, the gates' convolutions with the epsilon rule
                                     over each unit's receptive field (:func:`lrpjax.rules.conv`)
``Dense``                            epsilon rule (with or without bias)
``LayerNorm`` (last axis)            standard deviation held constant, then the epsilon rule of the
                                     resulting affine map (:func:`lrpjax.rules.layer_norm`)
``Embed``                            :func:`lrpjax.explain_tokens` explains integer token ids
``Dropout`` (deterministic)          identity (Flax returns the input unchanged)
================================  ===============================================================

Any other module runs as written inside a ``jax.named_scope`` naming its class and path, so strict
mode's error says which layer holds an operation without an LRP rule.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional

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


def _layer_norm(module, x, *args, **kwargs):
    P = module.variables.get("params", {})
    dt = _dtype(module, x)
    scale = P["scale"].astype(dt) if module.use_scale else None
    bias = P["bias"].astype(dt) if module.use_bias else None
    return rules.layer_norm(x.astype(dt), scale, bias, epsilon=module.epsilon)


def _ln_supported(module) -> bool:
    return (module.reduction_axes in (-1, (-1,)) and module.feature_axes in (-1, (-1,))
            and getattr(module, "axis_name", None) is None)


def _embed(module, ids, next_fun):
    return rules.embed_lookup(None, ids, lookup=lambda: next_fun(ids))


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
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        if isinstance(module, nn.Embed) and rules.token_mode_active():
            return _embed(module, *args, next_fun=lambda ids: next_fun(ids, **kwargs))
        if rules.current() is None:
            return next_fun(*args, **kwargs)
        if isinstance(module, nn.LayerNorm) and _ln_supported(module):
            return _layer_norm(module, *args, **kwargs)
        if isinstance(module, nn.ConvLSTMCell):
            return _conv_lstm_cell(module, *args, next_fun=lambda *a: next_fun(*a, **kwargs))
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


# ------------------------------------------------------------------------------------------------
# flax.nnx: the supported classes' __call__ are swapped for rule-based versions while relevance
# traces the model (a scoped, reversible class patch; the module objects themselves are untouched).

def _val(v) -> Array:
    return v[...]


def _nnx_dt(module, *arrays):
    return module.dtype if getattr(module, "dtype", None) is not None else jnp.result_type(*arrays)


def _nnx_lstm_cell(self, carry, inputs):
    c, h = carry
    if hasattr(self, "dense_i"):  # OptimizedLSTMCell: fused kernels, columns i, f, g, o
        wx, wh, b = _val(self.dense_i.kernel), _val(self.dense_h.kernel), _val(self.dense_h.bias)
    else:
        names = {"i": "i", "f": "f", "g": "g", "o": "o"}
        lin = lambda side, q: getattr(self, side + q + ("_" if side + q == "if" else ""))
        wx = jnp.concatenate([_val(lin("i", q).kernel) for q in names], -1)
        wh = jnp.concatenate([_val(lin("h", q).kernel) for q in names], -1)
        b = jnp.concatenate([_val(lin("h", q).bias) for q in names], -1)
    dt = _nnx_dt(self, inputs, h, wx)
    params = LSTMParams(wx.astype(dt), wh.astype(dt), b.astype(dt))
    z = _make_preactivations(params, "standard", h.shape[-1])(inputs.astype(dt), h.astype(dt))
    c_new, h_new = _cell("standard", z, c.astype(dt), self.gate_fn, self.activation_fn)
    return (c_new, h_new), h_new


def _nnx_gru_cell(self, carry, inputs):
    h = carry
    wx, bx, wh = _val(self.dense_i.kernel), _val(self.dense_i.bias), _val(self.dense_h.kernel)
    dt = _nnx_dt(self, inputs, h, wx)
    wx, bx, wh = wx.astype(dt), bx.astype(dt), wh.astype(dt)
    d = h.shape[-1]
    # nnx's GRUCell has no recurrent candidate bias: n = act(x W_n + b_n + r * (h U_n))
    h_new = gru_cell(inputs.astype(dt), h.astype(dt), w_rz=(wx[:, :2 * d], wh[:, :2 * d]),
                     b_rz=bx[:2 * d], w_n=wx[:, 2 * d:], b_n=bx[2 * d:], u_n=wh[:, 2 * d:], b_hn=None,
                     gate_fn=self.gate_fn, act_fn=self.activation_fn)
    return h_new, h_new


def _nnx_simple_cell(self, carry, inputs):
    wx, b, wh = _val(self.dense_i.kernel), _val(self.dense_i.bias), _val(self.dense_h.kernel)
    dt = _nnx_dt(self, inputs, carry, wx)
    h = carry.astype(dt)
    ins, ws = [inputs.astype(dt), h], [wx.astype(dt), wh.astype(dt)]
    if self.residual:
        ins.append(h)
        ws.append(None)
    h_new = rules.act(self.activation_fn, rules.linear(tuple(ins), tuple(ws), b.astype(dt)))
    return h_new, h_new


def _nnx_linear(self, inputs):
    k = _val(self.kernel)
    dt = _nnx_dt(self, inputs, k)
    bias = None if self.bias is None else _val(self.bias).astype(dt)
    return rules.linear(inputs.astype(dt), k.astype(dt), bias)


def _nnx_layer_norm(self, x, *args, **kwargs):
    if not (self.reduction_axes in (-1, (-1,)) and self.feature_axes in (-1, (-1,))):
        return self.__class__.__call__.__wrapped__(self, x, *args, **kwargs)
    dt = _nnx_dt(self, x)
    scale = None if self.scale is None else _val(self.scale).astype(dt)
    bias = None if self.bias is None else _val(self.bias).astype(dt)
    return rules.layer_norm(x.astype(dt), scale, bias, epsilon=self.epsilon)


def _nnx_embed(self, ids):
    original = type(self).__call__.__wrapped__
    return rules.embed_lookup(None, ids, lookup=lambda: original(self, ids))


def _nnx_zero_carry(cell, shape):
    """The carry nnx would create, without drawing from (and mutating) the module's RNG stream."""
    mem = tuple(shape[:-1]) + (cell.hidden_features,)
    init = cell.carry_init or (lambda key, s, dt: jnp.zeros(s, dt))
    make = lambda: init(jax.random.key(0), mem, cell.param_dtype)
    from flax import nnx
    return (make(), make()) if isinstance(cell, (nnx.LSTMCell, nnx.OptimizedLSTMCell)) else make()


def _nnx_rnn(self, inputs, *, initial_carry=None, seq_lengths=None, return_carry=None,
             time_major=None, reverse=None, keep_order=None, rngs=None):
    """flax.nnx.RNN's semantics (reverse, keep_order, seq_lengths, return_carry) with a plain
    ``lax.scan``, so it can be traced by ``jax.vjp`` directly (nnx.scan cannot)."""
    from flax.nnx.nn.recurrent import _select_last_carry, flip_sequences
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
        initial_carry = _nnx_zero_carry(self.cell, inputs.shape[:t_ax] + inputs.shape[t_ax + 1:])
    carry = jax.tree.map(rules.initial_state, initial_carry)
    slice_carry = seq_lengths is not None and return_carry

    def body(carry, x):
        carry, y = self.cell(carry, x)
        return carry, ((carry, y) if slice_carry else y)

    carry, ys = jax.lax.scan(body, carry, jnp.moveaxis(inputs, t_ax, 0))
    if slice_carry:
        carries, ys = ys
        carry = _select_last_carry(carries, seq_lengths)
    outputs = jnp.moveaxis(ys, 0, t_ax)
    if reverse and keep_order:
        outputs = flip(outputs)
    return (carry, outputs) if return_carry else outputs


def _nnx_patches() -> dict:
    from flax import nnx
    return {nnx.LSTMCell: _nnx_lstm_cell, nnx.OptimizedLSTMCell: _nnx_lstm_cell,
            nnx.GRUCell: _nnx_gru_cell, nnx.SimpleCell: _nnx_simple_cell, nnx.Linear: _nnx_linear,
            nnx.RNN: _nnx_rnn, nnx.LayerNorm: _nnx_layer_norm, nnx.Embed: _nnx_embed}


def _patched(cls, replacement):
    original = cls.__call__

    def __call__(self, *args, **kwargs):
        if rules.current() is None and not rules.token_mode_active():  # e.g. another thread's call
            return original(self, *args, **kwargs)
        return replacement(self, *args, **kwargs)
    __call__.__wrapped__ = original
    return __call__


def _nnx_roots(fn) -> list:
    """nnx modules reachable from a model function (its closure, globals, bound self, partial args)."""
    import functools
    import inspect
    from flax import nnx
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
def nnx_rules(model_fn: Optional[Callable] = None) -> Iterator[None]:
    """Context: flax.nnx modules called while tracing under :func:`lrpjax.relevance` use LRP rules.

    The supported classes' ``__call__`` are replaced for the duration and restored afterwards; the
    classes of the other modules found in ``model_fn`` get a named scope (their path) for errors.
    """
    from flax import nnx
    patches = {cls: _patched(cls, fn) for cls, fn in _nnx_patches().items()}
    names: dict = {}
    for root in (_nnx_roots(model_fn) if model_fn is not None else []):
        for path, node in nnx.iter_graph(root):
            if isinstance(node, nnx.Module):
                names.setdefault(id(node), ".".join(map(str, path)) or "top-level")
                cls = type(node)
                if cls not in patches and not any(issubclass(cls, p) for p in patches):
                    patches[cls] = _scoped(cls.__call__, names)
    saved = {cls: cls.__dict__.get("__call__") for cls in patches}
    try:
        for cls, fn in patches.items():
            cls.__call__ = fn
        yield
    finally:
        for cls, fn in saved.items():
            if fn is None:
                del cls.__call__
            else:
                cls.__call__ = fn


def _conv_lstm_cell(module, carry, inputs, next_fun):
    """linen ``ConvLSTMCell``: gates ``conv_ih(x) + conv_hh(h)`` in the order i, g, f, o, ``f + 1``."""
    padding = module.padding if isinstance(module.padding, str) else tuple(map(tuple, module.padding))
    if isinstance(padding, str) and padding not in ("SAME", "VALID"):
        return next_fun(carry, inputs)  # e.g. CIRCULAR: no rule here; strict mode will say so
    c, h = carry
    P = _p(module)
    dt = _dtype(module, inputs, h, P["ih"]["kernel"])
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
    cfg = rules.current()
    gates = (lambda *a: rules._conv_sum(*a, spec)) if cfg.gate == "all" else None
    args = ((x, h), (cols(kx, "ifo"), cols(kh, "ifo")), cols(bias, "ifo"))
    zg = rules.no_relevance(gates, *args) if gates else rules.conv(*args, spec)
    for k, q in enumerate("ifo"):
        z[q] = zg[..., k * F:(k + 1) * F]
    c_new, h_new = _cell("standard", z, c)
    if unbatched:
        c_new, h_new = c_new[0], h_new[0]
    return (c_new, h_new), h_new
