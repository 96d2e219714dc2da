"""Whole-layer LSTM kernels: the plain forward and signal-take-all LRP, one scan each way.

:func:`lrpjax.lstm` uses this module for the standard, ``no_forget`` and ``no_output`` cells (sigmoid
gates, tanh). The step-by-step rules of :mod:`lrpjax.rules` remain the definition: the kernel computes
the same relevance (epsilon rule at the cell state's two summands and at the cell input's
pre-activation, identity at tanh, gates get nothing), and the oracle tests hold it to 1e-10 in float64.

Why it is faster than the step-by-step rules under ``jax.vjp``: the forward scan stores two ``(B, d)``
factors per step instead of every rule's inputs (``bias_factor=0``), the reverse scan carries only the
cell-input messages and does one ``(B, d) @ (d, d)`` product per step (the gradient's backward does
``(B, 4d) @ (4d, e + d)``), and the relevance of every ``x_t`` is one matmul after the reverse scan,
``R_x = x * (S @ W_{x,g}^T) + share``.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from lrpjax._epsilon import mark_rule, message_factors

Array = jax.Array

FUSED_VARIANTS = ("standard", "no_forget", "no_output")
"""Cell variants (see :mod:`lrpjax.cells`) that the fused kernels compute."""


def _cell(wx, wh, b, gates: str, c, h, x_t):
    """One plain LSTM step: ``(c_new, h_new, forget term, input term, cell-input pre-activation)``."""
    d = wh.shape[0]
    z = x_t @ wx + h @ wh + b   # per step: on CPU one hoisted (T*B, e) matmul was 2x slower
    a = {q: z[..., k * d:(k + 1) * d] for k, q in enumerate(gates)}
    ig = jax.nn.sigmoid(a["i"]) * jnp.tanh(a["g"])
    fc = jax.nn.sigmoid(a["f"]) * c if "f" in a else c
    c_new = fc + ig
    tc = jnp.tanh(c_new)
    h_new = jax.nn.sigmoid(a["o"]) * tc if "o" in a else tc
    return c_new, h_new, fc, ig, a["g"]


def _scan(wx, wh, b, x, c0, h0, valid, gates: str, reverse: bool, residuals: Optional[Callable]):
    """Scan the cell over time-major ``x`` ``(T, B, e)`` (from ``x[T-1]`` down with ``reverse``);
    ``valid`` is ``(T, B, 1)`` bool or ``None`` (valid steps are a prefix of each sequence). Returns ``hs`` ``(T, B, d)`` (zeros at invalid steps),
    the final ``(c, h)`` and the stacked ``residuals(fc, ig, c_new, zg)`` of every step."""
    def step(carry, inp):
        c, h = carry
        x_t, v = inp
        c_new, h_new, fc, ig, zg = _cell(wx, wh, b, gates, c, h, x_t)
        res = () if residuals is None else residuals(fc, ig, c_new, zg)
        if v is None:
            return (c_new, h_new), (h_new, res)
        return (jnp.where(v, c_new, c), jnp.where(v, h_new, h)), (jnp.where(v, h_new, 0), res)

    (c, h), (hs, res) = jax.lax.scan(step, (c0, h0), (x, valid), reverse=reverse)
    return hs, (c, h), res


def lstm_forward(wx: Array, wh: Array, b: Array, x: Array, c0: Array, h0: Array,
                 valid: Optional[Array], gates: str, reverse: bool = False):
    """Plain (differentiable) LSTM over time-major ``x`` ``(T, B, e)``: gate blocks ``gates`` (e.g.
    ``"ifgo"``) in ``wx (e, G*d)``, ``wh (d, G*d)``, ``b (G*d,)``; ``c0``, ``h0`` ``(B, d)``; ``valid``
    ``(T, B, 1)`` or ``None``; ``reverse`` reads ``x[T-1]`` first (only with ``valid=None``). Returns
    ``hs`` ``(T, B, d)`` (aligned with ``x``) and the final ``(c, h)``."""
    hs, fin, _ = _scan(wx, wh, b, x, c0, h0, valid, gates, reverse, None)
    return hs, fin


@functools.lru_cache(maxsize=None)
def lrp_all_kernel(eps: float, bias_factor: float, gates: str, reverse: bool = False) -> Callable:
    """The LSTM layer under ``gate="all"`` as one ``custom_vjp`` with the arguments of
    :func:`lstm_forward` (less ``gates``): its backward maps the relevance of ``hs`` and of the final
    ``(c, h)`` to the relevance of ``x``, ``c0`` and ``h0`` (the weights get none)."""
    plain = bias_factor == 0.0

    def layer(wx, wh, b, x, c0, h0, valid):
        return lstm_forward(wx, wh, b, x, c0, h0, valid, gates, reverse)

    def fwd(wx, wh, b, x, c0, h0, valid):
        d, e = wh.shape[0], x.shape[-1]
        bg = b[gates.index("g") * d:(gates.index("g") + 1) * d]

        def residuals(fc, ig, c_new, zg):
            u, w = message_factors(c_new, None, 2 * d, eps, bias_factor)   # c = fc + ig
            ug, wg = message_factors(zg, bg, e + d, eps, bias_factor)        # z_g = x W + h U + b
            return (fc * u, ig * u * ug) if plain else (fc * u, ig * u, ug, w, wg)

        hs, fin, res = _scan(wx, wh, b, x, c0, h0, valid, gates, reverse, residuals)
        return (hs, fin), (wx, wh, x, h0, hs, valid, res)

    @mark_rule("lstm_layer")
    def bwd(saved, R):
        wx, wh, x, h0, hs, valid, res = saved
        R_hs, (R_c, R_h) = R
        d = wh.shape[0]
        k = gates.index("g")
        wxg, whg = wx[:, k * d:(k + 1) * d], wh[:, k * d:(k + 1) * d]
        # the state before each step (at valid steps, a prefix of the sequence, this is hs shifted)
        h_prev = (jnp.concatenate([hs[1:], h0[None]]) if reverse else
                  jnp.concatenate([h0[None], hs[:-1]]))

        def step(carry, inp):
            Rc, Rh = carry
            R_out, h_p, r, v = inp
            Rc_new = Rc + Rh + R_out        # h = o * tanh(c): all of h's relevance to c
            if plain:
                R_prev_c, Sg, share = r[0] * Rc_new, r[1] * Rc_new, None
            else:
                fcu, igu, ug, w, wg = r
                sh = jnp.sum(w * Rc_new, axis=-1, keepdims=True)
                R_prev_c = fcu * Rc_new + sh    # f * c_prev: all to c_prev
                R_g = igu * Rc_new + sh         # i * g: all to g, identity at tanh
                Sg, share = ug * R_g, jnp.sum(wg * R_g, axis=-1, keepdims=True)
            R_prev_h = h_p * (Sg @ whg.T)
            if share is not None:
                R_prev_h = R_prev_h + share
            if v is not None:               # a padded step passes relevance on untouched
                R_prev_c, R_prev_h = jnp.where(v, R_prev_c, Rc), jnp.where(v, R_prev_h, Rh)
                Sg = jnp.where(v, Sg, 0)
                share = None if share is None else jnp.where(v, share, 0)
            return (R_prev_c, R_prev_h), (Sg, share)

        (R_c0, R_h0), (Sg, share) = jax.lax.scan(step, (R_c, R_h), (R_hs, h_prev, res, valid),
                                                 reverse=not reverse)
        R_x = x * (Sg @ wxg.T)              # every step's input relevance in one matmul
        if share is not None:
            R_x = R_x + share
        zeros = jnp.zeros_like
        return zeros(wx), zeros(wh), jnp.zeros(wh.shape[1:], wh.dtype), R_x, R_c0, R_h0, None

    f = jax.custom_vjp(layer)
    f.defvjp(fwd, bwd)
    return f
