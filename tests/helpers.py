"""Shared test helpers: run a rule's backward pass directly, convert oracle params."""
import jax
import jax.numpy as jnp
import numpy as np

import lrpjax
from lrpjax import rules


def rule_vjp(fn, args, R, *, eps=1e-3, bias_factor=0.0, gate="all"):
    """Forward value and relevance of ``args`` when ``R`` arrives at ``fn(*args)`` under the rules."""
    with rules.rule_context(rules.make_config(eps, bias_factor, gate)):
        out, vjp = jax.vjp(fn, *args)
    return out, vjp(R)


def random_oracle_params(rng, e, d, variant, scale=0.5):
    """Per-gate oracle params {"Wx": {q: (d, e)}, "Wh": {q: (d, d)}, "b": {q: (d,)}}."""
    gates = lrpjax.VARIANT_GATES[variant]
    return {"Wx": {q: rng.normal(0, scale, (d, e)) for q in gates},
            "Wh": {q: rng.normal(0, scale, (d, d)) for q in gates},
            "b": {q: rng.normal(0, scale, (d,)) for q in gates}}


def to_lrpjax(params, variant, gate_order=None, layout="rows", split_bias=False):
    """Stack oracle per-gate params in ``gate_order`` / ``layout`` and import them with lstm_params."""
    gates = lrpjax.VARIANT_GATES[variant]
    order = gate_order or gates
    q_of = lambda c: "g" if c == "c" else c
    wx = np.concatenate([params["Wx"][q_of(c)] for c in order], axis=0)   # rows (G*d, e)
    wh = np.concatenate([params["Wh"][q_of(c)] for c in order], axis=0)
    b = np.concatenate([params["b"][q_of(c)] for c in order])
    if layout == "columns":
        wx, wh = wx.T, wh.T
    b1, b2 = (0.25 * b, 0.75 * b) if split_bias else (b, None)
    return lrpjax.lstm_params(wx, wh, b1, b2, gate_order=order, layout=layout, variant=variant)


def np64(a):
    return np.asarray(a, dtype=np.float64)


def f64(a):
    return jnp.asarray(a, dtype=jnp.float64)
