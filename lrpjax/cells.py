"""LSTM building blocks in pure functional JAX, built from :mod:`lrpjax.rules`.

Every non-linear step of the cell goes through a rule, so the same code is a plain LSTM under
``jax.grad`` and an LRP-explained LSTM under :func:`lrpjax.relevance`.

Cell variants (``variant=``; the gate blocks each one stores, in this canonical column order):

=============  ======  ===============================================================
variant        blocks  equations (``a_q = x_t W^x_q + h_{t-1} W^h_q + b_q`` unless noted)
=============  ======  ===============================================================
``standard``   i f g o ``c = f*c' + i*g``, ``h = o*tanh(c)``
``no_forget``  i g o   ``c = c' + i*g`` (f = 1), ``h = o*tanh(c)``
``no_output``  i f g   ``c = f*c' + i*g``, ``h = tanh(c)``
``rudder``     i g     ``a_g = x_t W^x_g + b_g`` (input only), ``a_i = h_{t-1} W^h_i + b_i`` (recurrent
                       only), ``c = c' + i*g``, ``h = c`` (linear output); unused blocks are ignored
=============  ======  ===============================================================

``i, f, o = sigmoid(a)``, ``g = tanh(a_g)``; ``c'``, ``h_{t-1}`` are the previous states.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lrpjax import _checks, fused, rules

Array = jax.Array

VARIANT_GATES = {"standard": "ifgo", "no_forget": "igo", "no_output": "ifg", "rudder": "ig"}


class LSTMParams(NamedTuple):
    """Weights of one LSTM direction (a pytree), gate blocks in canonical order (see module doc).

    wx: ``(e, G*d)`` input-to-gates kernel; wh: ``(d, G*d)`` recurrent kernel; b: ``(G*d,)`` bias
    (the sum of the input and recurrent biases when the source had two).
    """

    wx: Array
    wh: Array
    b: Array


def _check_variant(variant: str) -> str:
    if variant not in VARIANT_GATES:
        raise ValueError(f"variant must be one of {tuple(VARIANT_GATES)}, got {variant!r}.")
    return VARIANT_GATES[variant]


def lstm_params(wx, wh, b=None, b2=None, *, gate_order: str = "ifgo", layout: str = "columns",
                variant: str = "standard") -> LSTMParams:
    """Build :class:`LSTMParams` from stacked weights of any framework.

    Args:
      wx: input kernel, ``(in, G*d)`` for ``layout="columns"`` (Keras, Flax) or ``(G*d, in)`` for
        ``layout="rows"`` (PyTorch ``weight_ih``, the Arras reference ``Wxh``).
      wh: recurrent kernel, ``(d, G*d)`` or ``(G*d, d)`` likewise.
      b, b2: one or two bias vectors ``(G*d,)`` (two are summed: only the sum matters); ``None`` = 0.
      gate_order: order of the stacked gate blocks, letters ``i f g o`` (``c`` is accepted for the
        cell input ``g``): ``"igfo"`` (Arras reference), ``"ifgo"`` (PyTorch, Flax), ``"ifco"`` (Keras).
        For variants with fewer gates give only those letters, e.g. ``"igo"``.
      layout: ``"columns"`` or ``"rows"``.
      variant: cell variant (see module doc).

    >>> import numpy as np, lrpjax
    >>> w_ih, w_hh = np.zeros((8, 3)), np.zeros((8, 2))       # PyTorch nn.LSTM(3, 2) layout
    >>> p = lrpjax.lstm_params(w_ih, w_hh, np.zeros(8), np.zeros(8), gate_order="ifgo", layout="rows")
    >>> p.wx.shape, p.wh.shape, p.b.shape
    ((3, 8), (2, 8), (8,))
    """
    canon = _check_variant(variant)
    order = gate_order.lower().replace("c", "g")
    if sorted(order) != sorted(canon):
        raise ValueError(f"gate_order {gate_order!r} must be an ordering of the gates {canon!r} of "
                         f"variant {variant!r} (use 'c' or 'g' for the cell input).")
    if layout not in ("columns", "rows"):
        raise ValueError(f"layout must be 'columns' ((in, G*d), Keras/Flax) or 'rows' ((G*d, in), "
                         f"PyTorch/reference), got {layout!r}.")
    wx, wh = jnp.asarray(wx), jnp.asarray(wh)
    if wx.ndim != 2 or wh.ndim != 2:
        raise ValueError(f"wx and wh must be 2-D, got shapes {wx.shape} and {wh.shape}.")
    if layout == "rows":
        wx, wh = wx.T, wh.T
    G = len(canon)
    if wh.shape[1] % G or wh.shape[1] // G != wh.shape[0] or wx.shape[1] != wh.shape[1]:
        raise ValueError(f"with layout={layout!r} and {G} gates expected wx (in, {G}*d) and wh "
                         f"(d, {G}*d) after orientation; got wx {wx.shape}, wh {wh.shape}.")
    d = wh.shape[0]
    bias = jnp.zeros((G * d,), wx.dtype)
    for k, v in (("b", b), ("b2", b2)):
        if v is not None:
            v = jnp.asarray(v)
            if v.shape != (G * d,):
                raise ValueError(f"{k} must have shape ({G * d},), got {v.shape}.")
            bias = bias + v
    perm = np.concatenate([np.arange(d) + order.index(q) * d for q in canon])
    return LSTMParams(wx[:, perm], wh[:, perm], bias[perm])


def init_lstm(key: Array, e: int, d: int, *, variant: str = "standard",
              dtype=jnp.float32) -> LSTMParams:
    """Random :class:`LSTMParams` (uniform in ``±1/sqrt(d)``, as PyTorch initialises LSTMs).

    >>> import jax, lrpjax
    >>> lrpjax.init_lstm(jax.random.key(0), 4, 3).wx.shape
    (4, 12)
    """
    G = len(_check_variant(variant))
    k1, k2, k3 = jax.random.split(key, 3)
    s = 1.0 / np.sqrt(d)
    u = lambda k, shape: jax.random.uniform(k, shape, dtype, -s, s)
    return LSTMParams(u(k1, (e, G * d)), u(k2, (d, G * d)), u(k3, (G * d,)))


def _block(a: Array, canon: str, q: str, d: int) -> Array:
    k = canon.index(q)
    return a[..., k * d:(k + 1) * d]


def lstm_preactivations(p: LSTMParams, variant: str, d: int) -> Callable[[Array, Array], dict]:
    """Slice the weights once (outside the time loop) and return ``(x_t, h) -> {gate: a_q}``.

    ``x_t`` ``(..., e)``, ``h`` ``(..., d)``; each ``a_q`` is ``(..., d)``, for the gate blocks of the
    ``variant`` (see the module doc)."""
    canon = VARIANT_GATES[variant]
    if variant == "rudder":
        wxg, bg = _block(p.wx, canon, "g", d), _block(p.b, canon, "g", d)
        whi, bi = _block(p.wh, canon, "i", d), _block(p.b, canon, "i", d)
        return lambda x_t, h: {"g": rules.linear(x_t, wxg, bg),
                               "i": rules.gate_preactivation(h, whi, bi)}
    if rules.current() is None:  # plain LSTM: one fused map for all gates
        def plain(x_t, h):
            z = rules.linear((x_t, h), (p.wx, p.wh), p.b)
            return {q: _block(z, canon, q, d) for q in canon}
        return plain
    # LRP: the cell input gets the epsilon rule; the gates go through gate_preactivation, which under
    # signal-take-all passes no relevance and costs no backward work.
    gates = canon.replace("g", "")
    cols = lambda a: jnp.concatenate([_block(a, canon, q, d) for q in gates], axis=-1)
    wxg, whg, bg = (_block(a, canon, "g", d) for a in p)
    wxs, whs, bs = cols(p.wx), cols(p.wh), cols(p.b)

    def lrp(x_t, h):
        zs = rules.gate_preactivation((x_t, h), (wxs, whs), bs)
        out = {q: zs[..., k * d:(k + 1) * d] for k, q in enumerate(gates)}
        out["g"] = rules.linear((x_t, h), (wxg, whg), bg)
        return out
    return lrp


def lstm_cell_update(variant: str, z: dict, c: Array, gate_fn: Callable = jax.nn.sigmoid,
                     act_fn: Callable = jnp.tanh) -> tuple[Array, Array]:
    """One LSTM step from pre-activations ``z`` (``{gate: (..., d)}``) and the previous cell state
    ``c`` ``(..., d)``: returns ``(c_new, h_new)``, each ``(..., d)``."""
    g = rules.act(act_fn, z["g"])
    ig = rules.gated(rules.act(gate_fn, z["i"]), g)
    if "f" in z:
        c_new = rules.accumulate(rules.gated(rules.act(gate_fn, z["f"]), c), ig)
    else:
        c_new = rules.accumulate(c, ig)
    if variant == "rudder":
        return c_new, c_new
    tc = rules.act(act_fn, c_new)
    return c_new, (rules.gated(rules.act(gate_fn, z["o"]), tc) if "o" in z else tc)


def lstm_cell(params: LSTMParams, carry: tuple[Array, Array], x_t: Array, *,
              variant: str = "standard", gate_fn: Callable = jax.nn.sigmoid,
              act_fn: Callable = jnp.tanh) -> tuple[Array, Array]:
    """One LSTM step with the LRP rules: ``carry = (c, h)`` ``(..., d)`` each, ``x_t`` ``(..., e)``;
    returns ``(c_new, h_new)``. (The Flax integration computes Flax's cells with it.)

    >>> import jax, jax.numpy as jnp, lrpjax
    >>> p = lrpjax.init_lstm(jax.random.key(0), 4, 3)
    >>> c, h = lrpjax.cells.lstm_cell(p, (jnp.zeros(3), jnp.zeros(3)), jnp.ones(4))
    >>> c.shape, h.shape
    ((3,), (3,))
    """
    c, h = carry
    z = lstm_preactivations(params, variant, h.shape[-1])(x_t, h)
    return lstm_cell_update(variant, z, c, gate_fn, act_fn)


def _check_lengths(lengths, B: int, T: int):
    lengths = jnp.asarray(lengths)
    if lengths.shape != (B,) or not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise ValueError(f"lengths must be an integer array of shape ({B},) (one length per "
                         f"sequence), got {lengths.dtype} {lengths.shape}.")
    concrete = _checks.concrete(lengths)
    if concrete is not None:
        lo, hi = int(concrete.min(initial=0)), int(concrete.max(initial=0))
        if lo < 0 or hi > T:
            raise ValueError(f"lengths must lie in [0, T={T}], got values in [{lo}, {hi}].")
    return lengths


def _reverse_in_length(a: Array, lengths: Optional[Array]) -> Array:
    """Reverse ``a`` ``(B, T, ...)`` along time within each sequence's valid prefix (an involution)."""
    if lengths is None:
        return a[:, ::-1]
    T = a.shape[1]
    t = jnp.arange(T)[None, :]
    idx = jnp.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    idx = idx.reshape(idx.shape + (1,) * (a.ndim - 2))
    return jnp.take_along_axis(a, idx, axis=1)


def lstm(params: LSTMParams, x: Array, *, lengths: Optional[Array] = None,
         h0: Optional[Array] = None, c0: Optional[Array] = None, reverse: bool = False,
         variant: str = "standard") -> tuple[Array, tuple[Array, Array]]:
    """Run one LSTM direction over a sequence or a padded batch of sequences.

    Args:
      params: :class:`LSTMParams` with ``wx (e, G*d)``.
      x: ``(T, e)`` or ``(B, T, e)``.
      lengths: ``None`` or ``(B,)`` integer valid lengths for a padded batch (a scalar for unbatched
        ``x``). Steps ``t >= length`` neither change the state nor receive relevance (exactly 0), and the
        valid part equals running the unpadded sequence.
      h0, c0: initial states ``(d,)`` or ``(B, d)``; default zeros. The relevance that reaches them is
        reported by :func:`lrpjax.explain` as ``initial_state``.
      reverse: read each sequence backwards (``x[len-1], ..., x[0]``); outputs stay aligned with ``x``.
      variant: cell variant (see module doc).
    Returns:
      ``hs`` of shape ``(T, d)`` / ``(B, T, d)`` (zeros at padded steps) and the final ``(c, h)`` of
      shape ``(d,)`` / ``(B, d)`` (the state after each sequence's last valid step).

    >>> import jax, jax.numpy as jnp, lrpjax
    >>> p = lrpjax.init_lstm(jax.random.key(0), 4, 3)
    >>> hs, (c, h) = lrpjax.lstm(p, jnp.ones((2, 5, 4)), lengths=jnp.array([5, 2]))
    >>> hs.shape, h.shape
    ((2, 5, 3), (2, 3))
    """
    canon = _check_variant(variant)
    x, lengths, unbatched = _prepare(x, lengths)
    B, T, e = x.shape
    d = params.wh.shape[0]
    if params.wx.shape != (e, len(canon) * d) or params.wh.shape != (d, len(canon) * d):
        raise ValueError(f"params do not fit x: x has e={e} features, so expected wx ({e}, "
                         f"{len(canon)}*d) and wh (d, {len(canon)}*d) for variant {variant!r}; got wx "
                         f"{params.wx.shape}, wh {params.wh.shape}.")
    params = jax.tree.map(lambda a: jnp.asarray(a, x.dtype), params)

    def state(v):
        return _initial_state(v, d, B, unbatched, x.dtype)

    carry = (state(c0), state(h0))
    cfg = rules.current()
    if variant in fused.FUSED_VARIANTS and (cfg is None or cfg.gate == "all"):
        # the same rules as the step-by-step cell below, fused over the whole layer (lrpjax.fused)
        gates = VARIANT_GATES[variant]
        flip = reverse and lengths is not None   # without lengths the kernel scans backwards itself
        back = reverse and not flip
        if cfg is None:
            layer = functools.partial(fused.lstm_forward, gates=gates, reverse=back)
        else:
            layer = fused.lrp_all_kernel(cfg.eps, cfg.bias_factor, gates, back)
        hs, (c, h) = _run_layer(lambda xt, valid: layer(*params, xt, *carry, valid), x, lengths,
                                flip)
    else:
        preact = lstm_preactivations(params, variant, d)

        def step(carry, x_t):
            c, h = carry
            c_new, h_new = lstm_cell_update(variant, preact(x_t, h), c)
            return (c_new, h_new), h_new

        hs, (c, h) = _run(step, carry, x, lengths, reverse)
    if unbatched:
        return hs[0], (c[0], h[0])
    return hs, (c, h)


def _initial_state(v, d: int, B: int, unbatched: bool, dtype) -> Array:
    """Initial state ``(B, d)`` (default zeros) whose relevance is reported (rules.initial_state);
    registered with the caller's shape, ``(d,)`` for an unbatched ``x``."""
    shape = (d,) if unbatched else (B, d)
    v = jnp.zeros(shape, dtype) if v is None else jnp.broadcast_to(jnp.asarray(v, dtype), shape)
    return jnp.broadcast_to(rules.initial_state(v), (B, d))


def _run(step, carry, x: Array, lengths: Optional[Array], reverse: bool):
    """Scan ``step(carry, x_t) -> (carry, out)`` over ``x (B, T, e)``; padded steps keep the carry and
    output zeros; ``reverse`` reads each sequence backwards within its length, outputs aligned to ``x``.
    """
    T = x.shape[1]
    xs = _reverse_in_length(x, lengths) if reverse else x

    def masked(carry, inp):
        x_t, t = inp
        new, out = step(carry, x_t)
        if lengths is None:
            return new, out
        valid = (t < lengths)[:, None]
        new = jax.tree.map(lambda a, b: jnp.where(valid, a, b), new, carry)
        return new, jnp.where(valid, out, jnp.zeros_like(out))

    carry, hs = jax.lax.scan(masked, carry, (jnp.swapaxes(xs, 0, 1), jnp.arange(T)))
    hs = jnp.swapaxes(hs, 0, 1)
    if reverse:
        hs = _reverse_in_length(hs, lengths)
    return hs, carry


def _run_layer(layer, x: Array, lengths: Optional[Array], reverse: bool):
    """Like :func:`_run` for a whole-layer kernel ``layer(x (T, B, e), valid (T, B, 1) | None) ->
    (hs (T, B, d), carry)``."""
    T = x.shape[1]
    xs = _reverse_in_length(x, lengths) if reverse else x
    valid = None if lengths is None else jnp.arange(T)[:, None, None] < lengths[None, :, None]
    hs, carry = layer(jnp.swapaxes(xs, 0, 1), valid)
    hs = jnp.swapaxes(hs, 0, 1)
    if reverse:
        hs = _reverse_in_length(hs, lengths)
    return hs, carry


def _prepare(x, lengths):
    """Batch an unbatched ``x`` and check ``lengths``; returns ``(x, lengths, unbatched)``."""
    x = jnp.asarray(x)
    unbatched = x.ndim == 2
    if unbatched:
        x = x[None]
        if lengths is not None:
            lengths = jnp.reshape(jnp.asarray(lengths), (1,))
    if x.ndim != 3:
        raise ValueError(f"x must have shape (T, e) or (B, T, e), got {x.shape}.")
    if lengths is not None:
        lengths = _check_lengths(lengths, x.shape[0], x.shape[1])
    return x, lengths, unbatched


def bilstm(params_fwd: LSTMParams, params_bwd: LSTMParams, x: Array, *,
           lengths: Optional[Array] = None, variant: str = "standard"):
    """Bidirectional LSTM: a forward and a reversed :func:`lstm`, outputs concatenated per step.

    Returns ``hs`` ``(..., T, 2d)`` (forward half first) and ``((c_f, h_f), (c_b, h_b))``, where the
    backward final state is the one after reading ``x[0]``.
    """
    hf, fin_f = lstm(params_fwd, x, lengths=lengths, variant=variant)
    hb, fin_b = lstm(params_bwd, x, lengths=lengths, variant=variant, reverse=True)
    return jnp.concatenate([hf, hb], axis=-1), (fin_f, fin_b)


def stacked_lstm(layers: Sequence, x: Array, *, lengths: Optional[Array] = None,
                 variant: str = "standard"):
    """Stack of LSTM layers; each item of ``layers`` is :class:`LSTMParams` (unidirectional) or a pair
    ``(params_fwd, params_bwd)`` (bidirectional). Layer ``k+1`` reads layer ``k``'s hidden states.

    Returns the last layer's ``hs`` and the list of every layer's final states.
    """
    finals = []
    for layer in layers:
        if isinstance(layer, LSTMParams):
            x, fin = lstm(layer, x, lengths=lengths, variant=variant)
        else:
            x, fin = bilstm(layer[0], layer[1], x, lengths=lengths, variant=variant)
        finals.append(fin)
    return x, finals


# ------------------------------------------------------------------------------------------------
# GRU (the form of PyTorch nn.GRU, Keras GRU(reset_after=True) and Flax GRUCell)

class GRUParams(NamedTuple):
    """Weights of one GRU direction (a pytree), column blocks in the order r, z, n.

    wx: ``(e, 3d)`` input kernel; wh: ``(d, 3d)`` recurrent kernel; b: ``(3d,)`` bias of the input side
    (for r and z the sum of input and recurrent biases when the source had two); bhn: ``(d,)`` bias of
    the recurrent candidate map, inside the reset product.

    ``r = sigmoid(x W_r + h U_r + b_r)``, ``z = sigmoid(x W_z + h U_z + b_z)``,
    ``n = tanh(x W_n + b_n + r * (h U_n + bhn))``, ``h' = (1 - z) * n + z * h``.
    """

    wx: Array
    wh: Array
    b: Array
    bhn: Array


@functools.lru_cache(maxsize=None)
def _one_minus(gate_fn: Callable) -> Callable:
    """``a -> 1 - gate_fn(a)`` (one function object per gate_fn, so rule caches stay small)."""
    return lambda a: 1.0 - gate_fn(a)


def gru_params(wx, wh, b=None, b_h=None, *, gate_order: str = "rzn",
               layout: str = "columns") -> GRUParams:
    """Build :class:`GRUParams` from stacked GRU weights.

    Args:
      wx, wh: input and recurrent kernels, ``(in, 3d)``/``(d, 3d)`` for ``layout="columns"`` (Keras,
        Flax) or ``(3d, in)``/``(3d, d)`` for ``layout="rows"`` (PyTorch ``weight_ih``/``weight_hh``).
      b: input-side bias ``(3d,)`` (PyTorch ``bias_ih``, Keras ``bias[0]``); ``None`` = 0.
      b_h: recurrent bias ``(3d,)`` (PyTorch ``bias_hh``, Keras ``bias[1]``); its r and z blocks add to
        ``b``, its n block becomes ``bhn``; ``None`` = 0.
      gate_order: ``"rzn"`` (PyTorch, Flax) or ``"zrn"`` (Keras, which calls n "h").
      layout: ``"columns"`` or ``"rows"``.
    """
    order = gate_order.lower().replace("h", "n")
    if sorted(order) != sorted("rzn"):
        raise ValueError(f"gate_order must be an ordering of 'rzn' (PyTorch/Flax 'rzn', Keras 'zrn'), "
                         f"got {gate_order!r}.")
    if layout not in ("columns", "rows"):
        raise ValueError(f"layout must be 'columns' or 'rows', got {layout!r}.")
    wx, wh = jnp.asarray(wx), jnp.asarray(wh)
    if wx.ndim != 2 or wh.ndim != 2:
        raise ValueError(f"wx and wh must be 2-D, got shapes {wx.shape} and {wh.shape}.")
    if layout == "rows":
        wx, wh = wx.T, wh.T
    if wh.shape[1] % 3 or wh.shape[1] // 3 != wh.shape[0] or wx.shape[1] != wh.shape[1]:
        raise ValueError(f"expected wx (in, 3*d) and wh (d, 3*d) after orientation; got wx {wx.shape}, "
                         f"wh {wh.shape} (layout={layout!r}).")
    d = wh.shape[0]
    vecs = []
    for k, v in (("b", b), ("b_h", b_h)):
        v = jnp.zeros((3 * d,), wx.dtype) if v is None else jnp.asarray(v)
        if v.shape != (3 * d,):
            raise ValueError(f"{k} must have shape ({3 * d},), got {v.shape}.")
        vecs.append(v)
    perm = np.concatenate([np.arange(d) + order.index(q) * d for q in "rzn"])
    bi, bh = vecs[0][perm], vecs[1][perm]
    return GRUParams(wx[:, perm], wh[:, perm], bi.at[:2 * d].add(bh[:2 * d]), bh[2 * d:])


def init_gru(key: Array, e: int, d: int, *, dtype=jnp.float32) -> GRUParams:
    """Random :class:`GRUParams` (uniform in ``±1/sqrt(d)``, as PyTorch initialises GRUs)."""
    k = jax.random.split(key, 4)
    s = 1.0 / np.sqrt(d)
    u = lambda kk, shape: jax.random.uniform(kk, shape, dtype, -s, s)
    return GRUParams(u(k[0], (e, 3 * d)), u(k[1], (d, 3 * d)), u(k[2], (3 * d,)), u(k[3], (d,)))


def gru_cell(x_t: Array, h: Array, *, w_rz: tuple, b_rz: Optional[Array], w_n: Array,
             b_n: Optional[Array], u_n: Array, b_hn: Optional[Array], shared_gate: bool = False,
             reset: bool = True, gate_fn: Callable = jax.nn.sigmoid,
             act_fn: Callable = jnp.tanh) -> Array:
    """One GRU / MGU step with the LRP rules (also used for Flax's ``GRUCell`` and ``MGUCell``).

    ``w_rz = (W, U)``: input and recurrent kernels of the gates (columns r then z, or only f for MGU
    with ``shared_gate=True``, where the one gate f is both reset and update gate). Candidate:
    ``a_n = x W_n + b_n + r * (h U_n + b_hn)`` (``reset=False``: ``x W_n + b_n + h U_n``).

    Rules: ``h' = (1-z)*n + z*h`` is the epsilon rule over its two summands; both gated products give
    the gate (``1-z``, ``z``) nothing under ``"all"``; ``n = tanh(a_n)`` passes relevance; ``a_n`` is the
    epsilon rule over ``x`` (e units) and the product ``r*m`` (d units, identity weights), ``N = e + d``;
    ``r*m`` gives ``m = h U_n + b_hn`` everything under ``"all"``, and ``m`` is the epsilon rule to ``h``
    (``N = d``). Relevance that a rule other than ``"all"`` gives to ``1-z`` and ``z`` passes both
    element-wise maps and adds at z's pre-activation.
    """
    d = h.shape[-1]
    a_g = rules.gate_preactivation((x_t, h), w_rz, b_rz)
    a_r, a_z = (a_g, a_g) if shared_gate else (a_g[..., :d], a_g[..., d:])
    if reset:
        m = rules.linear(h, u_n, b_hn)
        a_n = rules.linear((x_t, rules.gated(rules.act(gate_fn, a_r), m)), (w_n, None), b_n)
    else:
        a_n = rules.linear((x_t, h), (w_n, u_n), b_n)
    n = rules.act(act_fn, a_n)
    keep = rules.gated(rules.act(_one_minus(gate_fn), a_z), n)
    return rules.accumulate(keep, rules.gated(rules.act(gate_fn, a_z), h))


def gru(params: GRUParams, x: Array, *, lengths: Optional[Array] = None, h0: Optional[Array] = None,
        reverse: bool = False) -> tuple[Array, Array]:
    """Run one GRU direction over ``(T, e)`` or a padded batch ``(B, T, e)``.

    Returns ``hs`` ``(..., T, d)`` (zeros at padded steps) and the final ``h`` ``(..., d)``. Arguments as
    for :func:`lstm`; the initial state's relevance is reported by :func:`lrpjax.explain`.

    >>> import jax, jax.numpy as jnp, lrpjax
    >>> p = lrpjax.init_gru(jax.random.key(0), 4, 3)
    >>> hs, h = lrpjax.gru(p, jnp.ones((2, 5, 4)), lengths=jnp.array([5, 2]))
    >>> hs.shape, h.shape
    ((2, 5, 3), (2, 3))
    """
    x, lengths, unbatched = _prepare(x, lengths)
    B, T, e = x.shape
    d = params.wh.shape[0]
    if params.wx.shape != (e, 3 * d) or params.wh.shape != (d, 3 * d):
        raise ValueError(f"params do not fit x: x has e={e} features, so expected wx ({e}, 3*d) and wh "
                         f"(d, 3*d); got wx {params.wx.shape}, wh {params.wh.shape}.")
    p = jax.tree.map(lambda a: jnp.asarray(a, x.dtype), params)
    kw = dict(w_rz=(p.wx[:, :2 * d], p.wh[:, :2 * d]), b_rz=p.b[:2 * d], w_n=p.wx[:, 2 * d:],
              b_n=p.b[2 * d:], u_n=p.wh[:, 2 * d:], b_hn=p.bhn)

    def step(h, x_t):
        h_new = gru_cell(x_t, h, **kw)
        return h_new, h_new

    hs, h = _run(step, _initial_state(h0, d, B, unbatched, x.dtype), x, lengths, reverse)
    return (hs[0], h[0]) if unbatched else (hs, h)
