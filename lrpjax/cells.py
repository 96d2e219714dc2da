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

from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lrpjax import rules

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


def _make_preactivations(p: LSTMParams, variant: str, d: int):
    """Slice the weights once (outside the time loop) and return ``(x_t, h) -> {gate: a_q}``."""
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


def _cell(variant: str, z: dict, c: Array) -> tuple[Array, Array]:
    """One LSTM step from pre-activations ``z``: returns ``(c_new, h_new)``."""
    sig = jax.nn.sigmoid
    g = rules.act(jnp.tanh, z["g"])
    ig = rules.gated(rules.act(sig, z["i"]), g)
    if "f" in z:
        c_new = rules.accumulate(rules.gated(rules.act(sig, z["f"]), c), ig)
    else:
        c_new = rules.accumulate(c, ig)
    if variant == "rudder":
        return c_new, c_new
    tc = rules.act(jnp.tanh, c_new)
    return c_new, (rules.gated(rules.act(sig, z["o"]), tc) if "o" in z else tc)


def _concrete(a) -> Optional[np.ndarray]:
    """``a`` as a numpy array, or ``None`` when it is traced (inside jit/vmap)."""
    try:
        return np.asarray(a)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_lengths(lengths, B: int, T: int):
    lengths = jnp.asarray(lengths)
    if lengths.shape != (B,) or not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise ValueError(f"lengths must be an integer array of shape ({B},) (one length per "
                         f"sequence), got {lengths.dtype} {lengths.shape}.")
    concrete = _concrete(lengths)
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
    x = jnp.asarray(x)
    unbatched = x.ndim == 2
    if unbatched:
        x = x[None]
        if lengths is not None:
            lengths = jnp.reshape(jnp.asarray(lengths), (1,))
    if x.ndim != 3:
        raise ValueError(f"x must have shape (T, e) or (B, T, e), got {x.shape}.")
    B, T, e = x.shape
    d = params.wh.shape[0]
    if params.wx.shape != (e, len(canon) * d) or params.wh.shape != (d, len(canon) * d):
        raise ValueError(f"params do not fit x: x has e={e} features, so expected wx ({e}, "
                         f"{len(canon)}*d) and wh (d, {len(canon)}*d) for variant {variant!r}; got wx "
                         f"{params.wx.shape}, wh {params.wh.shape}.")
    params = jax.tree.map(lambda a: jnp.asarray(a, x.dtype), params)
    if lengths is not None:
        lengths = _check_lengths(lengths, B, T)

    def state(v):
        # registered with the caller's shape ((d,) for an unbatched x) so its relevance reports match
        shape = (d,) if unbatched else (B, d)
        v = jnp.zeros(shape, x.dtype) if v is None else jnp.broadcast_to(jnp.asarray(v, x.dtype),
                                                                         shape)
        return jnp.broadcast_to(rules.initial_state(v), (B, d))
    c, h = state(c0), state(h0)

    xs = _reverse_in_length(x, lengths) if reverse else x
    preact = _make_preactivations(params, variant, d)

    def step(carry, inp):
        c, h = carry
        x_t, t = inp
        c_new, h_new = _cell(variant, preact(x_t, h), c)
        if lengths is None:
            return (c_new, h_new), h_new
        valid = (t < lengths)[:, None]
        c_new, h_new = jnp.where(valid, c_new, c), jnp.where(valid, h_new, h)
        return (c_new, h_new), jnp.where(valid, h_new, jnp.zeros_like(h_new))

    (c, h), hs = jax.lax.scan(step, (c, h), (jnp.swapaxes(xs, 0, 1), jnp.arange(T)))
    hs = jnp.swapaxes(hs, 0, 1)
    if reverse:
        hs = _reverse_in_length(hs, lengths)
    if unbatched:
        return hs[0], (c[0], h[0])
    return hs, (c, h)


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
