"""LRP rules for plain JAX operations written around lrpjax's layers (pooling, merges, readouts).

A user's model -- or an unmodified Flax module -- often combines the recurrent layers with plain
``jnp`` code: ``hs.mean(axis=1)``, ``jnp.max(hs, axis=1)``, ``h_fwd + h_bwd``, ``h @ W + b``. Their
plain gradients would scale or duplicate relevance, so when the model's jaxpr contains such an
operation on the path from ``x`` to the score, :func:`lrpjax.relevance` evaluates that jaxpr with each
of them replaced by its rule (everything else, lrpjax's own rules included, is bound unchanged):

=====================================  ==================================================================
operation on the relevance path        rule (:mod:`lrpjax.rules`)
=====================================  ==================================================================
``a @ W`` (``W`` not from ``x``)        :func:`~lrpjax.rules.linear` (epsilon rule)
``a + b``, ``a - b`` (both from ``x``)  :func:`~lrpjax.rules.accumulate` (epsilon rule over the summands)
``a + c``, ``a - c`` (``c`` not)        :func:`~lrpjax.rules.linear` with identity weights and bias ``c``
``a * c``, ``a / c``, ``-a``            :func:`~lrpjax.rules.scale` (epsilon rule, one input per unit)
``a.sum(axes)`` (and so ``a.mean``)     :func:`~lrpjax.rules.sum_over` (epsilon rule over the summands)
``a.max(axes)``                         :func:`~lrpjax.rules.max_over` (winner takes all)
=====================================  ==================================================================

Rewrites apply at the top level of the model and inside ``jit``-ed functions it calls, not inside
user-written ``scan``/``while``/``cond`` bodies. Non-linear element-wise functions (``tanh``, ``exp``,
``gelu``, ...) are never rewritten: strict mode refuses them (see :mod:`lrpjax.strict`).
"""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
from jax.extend import core as jex_core

from lrpjax import rules
from lrpjax._jaxpr import CALLS, is_float, out_taint, rule_for, shape_of


def _bias_fusions(jaxpr) -> dict:
    """``{index of a dot_general: index of the add that is its only use}``."""
    uses: dict = {}
    for k, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if isinstance(v, jex_core.Var):
                uses.setdefault(v, []).append(k)
    outs = {v for v in jaxpr.outvars if isinstance(v, jex_core.Var)}
    fusions = {}
    for k, eqn in enumerate(jaxpr.eqns):
        if eqn.primitive.name != "dot_general":
            continue
        out = eqn.outvars[0]
        users = uses.get(out, [])
        if out in outs or len(users) != 1:
            continue
        nxt = jaxpr.eqns[users[0]]
        if (nxt.primitive.name in ("add", "add_any") and shape_of(nxt.outvars[0]) == shape_of(out)
                and sum(v is out for v in nxt.invars) == 1):
            fusions[k] = users[0]
    return fusions


def evaluate(closed_jaxpr, tainted_in: Sequence[bool], *args):
    """Evaluate ``closed_jaxpr`` on ``args`` with the rewritable operations replaced by their rules."""
    return _eval(closed_jaxpr.jaxpr, closed_jaxpr.consts, list(args), list(tainted_in))[0]


def _eval(jaxpr, consts, args, tainted_in):
    env, taint = {}, {}
    for v, c in zip(jaxpr.constvars, consts):
        env[v], taint[v] = c, False
    for v, a, tt in zip(jaxpr.invars, args, tainted_in):
        env[v], taint[v] = a, tt
    read = lambda v: v.val if isinstance(v, jex_core.Literal) else env[v]
    is_t = lambda v: not isinstance(v, jex_core.Literal) and taint.get(v, False)
    fused = _bias_fusions(jaxpr)
    pending: dict = {}
    for k, eqn in enumerate(jaxpr.eqns):
        if k in pending:  # the `+ b` of a deferred `a @ W`: one neuron layer, one epsilon rule
            (a, w), product = pending.pop(k)
            slot = 0 if eqn.invars[0] is product else 1
            out = eqn.outvars[0]
            if not is_t(eqn.invars[1 - slot]):
                b = jnp.broadcast_to(read(eqn.invars[1 - slot]), shape_of(out)).astype(a.dtype)
                z = rules.linear(a, w.astype(a.dtype), b)
                env[out], taint[out] = z.astype(out.aval.dtype), True
                continue
            # both sides carry relevance after all: the matmul alone, then the sum rule below
            env[eqn.invars[slot]] = rules.linear(a, w.astype(a.dtype)).astype(
                eqn.invars[slot].aval.dtype)
            taint[eqn.invars[slot]] = True
        invals = [read(v) for v in eqn.invars]
        tin = [is_t(v) for v in eqn.invars]
        name = eqn.primitive.name
        impl = rule_for(eqn, tin) if any(tin) else None
        if impl is not None and k in fused and tin == [True, False]:
            pending[fused[k]] = (invals, eqn.outvars[0])  # computed at the `+ b`, with the bias
            continue
        if impl is not None:
            outvals, tout = impl(*invals), [True] * len(eqn.outvars)
        elif name in CALLS and any(tin):  # inline jit-ed functions so their operations can be rewritten
            sub = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
            sub_j = sub.jaxpr if hasattr(sub, "jaxpr") else sub
            sub_c = sub.consts if hasattr(sub, "consts") else ()
            outvals, tout = _eval(sub_j, sub_c, invals, tin)
        else:
            params = eqn.primitive.get_bind_params(eqn.params)
            with eqn.ctx.manager:
                outvals = eqn.primitive.bind(*invals, **params)
            if not eqn.primitive.multiple_results:
                outvals = [outvals]
            tout = out_taint(eqn, tin) if any(tin) else [False] * len(eqn.outvars)
        for v, val, tt in zip(eqn.outvars, outvals, tout):
            env[v], taint[v] = val, bool(tt) and is_float(v)
    return [read(v) for v in jaxpr.outvars], [is_t(v) for v in jaxpr.outvars]
