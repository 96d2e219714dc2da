"""The jaxpr analysis that strict mode and the rewriter share: which values carry relevance, and
which plain operations on that path have a rule.

Relevance flows from ``x`` to the score. :func:`walk` follows "this value depends on ``x``" through a
jaxpr (into ``jit``, ``scan``, ``while``, ``cond``, ``remat`` and custom-derivative calls) and sorts
every equation on that path into one of four kinds:

* an lrpjax rule (a ``custom_vjp`` whose backward is marked, see :func:`lrpjax.rules.rule_name`);
  a ``no_relevance`` rule ends the path;
* :data:`STRUCTURAL`: moves, copies, selects or re-types values, so relevance passes its transpose
  unchanged; :data:`BLOCKING`: passes nothing;
* an operation :func:`rule_for` can replace by a rule (``a @ W``, ``a + b``, sums, max, scalings):
  :mod:`lrpjax.rewrite` evaluates the model with those replaced;
* anything else: :mod:`lrpjax.strict` refuses it (or warns).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax.numpy as jnp
from jax.extend import core as jex_core

from lrpjax import rules

CALLS = ("pjit", "jit", "closed_call", "core_call")
"""Call primitives whose bodies the rewriter inlines (so their operations can be rewritten)."""

# Operations that only move, copy, select or re-type values: relevance passes through their
# transpose correctly (copies' relevance is summed back, unselected branches get zero).
STRUCTURAL = frozenset({
    "reshape", "squeeze", "expand_dims", "broadcast_in_dim", "transpose", "slice", "dynamic_slice",
    "dynamic_update_slice", "concatenate", "gather", "pad", "rev", "select_n", "convert_element_type",
    "copy", "copy_p", "reduce_precision", "split", "optimization_barrier", "sharding_constraint",
    "device_put", "mesh_cast", "reshard", "pvary", "psum_invariant",
})
# Operations whose output carries no relevance (no gradient path).
BLOCKING = frozenset({"stop_gradient"})
LINEAR = frozenset({"add", "add_any", "sub", "mul", "div", "neg", "dot_general", "reduce_sum",
                    "cumsum", "conv_general_dilated", "scatter-add", "scatter_add"})


def is_float(var) -> bool:
    """Whether a jaxpr variable is floating (only floating values carry relevance)."""
    aval = getattr(var, "aval", None)
    dtype = getattr(aval, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jnp.inexact)


def open_jaxpr(j):
    """The ``Jaxpr`` of a ``Jaxpr`` or ``ClosedJaxpr``."""
    return j.jaxpr if isinstance(j, jex_core.ClosedJaxpr) else j


def scan_counts(p: dict) -> tuple[int, int]:
    """``(num_consts, num_carry)`` of a scan equation: explicit params up to jax 0.10, packed in the
    ``ft_in`` flat tree ``(consts, carry, xs)`` from jax 0.11 on."""
    if "num_consts" in p:
        return p["num_consts"], p["num_carry"]
    consts, carry, _ = p["ft_in"].unpack()
    return len(list(consts)), len(list(carry))


# ----------------------------------------------------------------------------------------------
# The rule table: plain operations with an LRP rule (applied by lrpjax.rewrite).

def shape_of(v) -> tuple:
    """The shape of a jaxpr variable."""
    return tuple(getattr(v.aval, "shape", ()))


def rule_for(eqn, tainted: Sequence[bool]) -> Optional[Callable]:
    """The rule implementing ``eqn`` (``fn(*invals) -> list of outvals``), or ``None`` if none fits."""
    name, p = eqn.primitive.name, eqn.params
    t = list(tainted)
    out = shape_of(eqn.outvars[0])
    if name == "reduce_sum" and t[0]:
        return lambda a: [rules.sum_over(a, p["axes"])]
    if name == "reduce_max" and t[0]:
        return lambda a: [rules.max_over(a, p["axes"])]
    if name == "neg" and t[0]:
        return lambda a: [rules.scale(a, -1.0)]
    if name == "mul" and t[0] != t[1]:
        k = 0 if t[0] else 1
        if shape_of(eqn.invars[k]) == out:
            return lambda a, b: [rules.scale((a, b)[k], (a, b)[1 - k])]
    if name == "div" and t[0] and not t[1] and shape_of(eqn.invars[0]) == out:
        return lambda a, b: [rules.scale(a, 1.0 / b)]
    if name in ("add", "add_any", "sub"):
        sign = -1.0 if name == "sub" else 1.0
        if all(t) and shape_of(eqn.invars[0]) == shape_of(eqn.invars[1]) == out:
            return lambda a, b: [rules.accumulate(a, b if sign > 0 else rules.scale(b, -1.0))]
        if t[0] != t[1]:
            k = 0 if t[0] else 1
            if shape_of(eqn.invars[k]) == out and len(out) >= 1:
                def bias_add(a, b):
                    x, c = (a, b)[k], (a, b)[1 - k]
                    if k == 1 and sign < 0:   # c - x = (-x) + c
                        x = rules.scale(x, -1.0)
                    elif sign < 0:            # x - c
                        c = -c
                    return [rules.linear(x, None, jnp.broadcast_to(c, out).astype(x.dtype))]
                return bias_add
    if name == "dot_general" and t[0] and not t[1]:
        (lc, rc), (lb, rb) = p["dimension_numbers"]
        lhs, rhs = shape_of(eqn.invars[0]), shape_of(eqn.invars[1])
        if (len(rhs) == 2 and tuple(lc) == (len(lhs) - 1,) and tuple(rc) == (0,) and not lb
                and not rb):
            return lambda a, w: [rules.linear(a, w.astype(a.dtype)).astype(eqn.outvars[0].aval.dtype)]
    return None


# ----------------------------------------------------------------------------------------------
# Taint analysis

_OUTER: list = []   # the user-level equation being walked (for locations of library internals)


def walk(jaxpr, tainted_in: list[bool], found: list, top: bool = False,
         rewrites: Optional[list] = None) -> list[bool]:
    """Propagate "depends on x" through ``jaxpr``; append offending equations to ``found`` and the ones
    :mod:`lrpjax.rewrite` will replace by rules to ``rewrites`` (only where ``top``: not in loops)."""
    taint = {}
    for v, t in zip(jaxpr.invars, tainted_in):
        taint[v] = t
    is_t = lambda v: isinstance(v, jex_core.Var) and taint.get(v, False)
    for eqn in jaxpr.eqns:
        ins = [is_t(v) for v in eqn.invars]
        outermost = not _OUTER
        if outermost:  # the user-level equation, for locations of library internals (e.g. relu's max)
            _OUTER.append(eqn)
        try:
            outs = _eqn(eqn, ins, found, top, rewrites) if any(ins) else [False] * len(eqn.outvars)
        finally:
            if outermost:
                _OUTER.pop()
        for v, t in zip(eqn.outvars, outs):
            taint[v] = bool(t) and is_float(v)
    return [is_t(v) for v in jaxpr.outvars]


def _fixpoint(body, n_consts: int, n_carry: int, ins: list[bool], found: list, n_out_extra: int):
    """Taint through a loop body ``consts + carry + xs -> carry + ys`` until the carry is stable."""
    consts, carry, xs = ins[:n_consts], ins[n_consts:n_consts + n_carry], ins[n_consts + n_carry:]
    while True:
        scratch: list = []
        out = walk(body, consts + carry + xs, scratch)
        new_carry = [a or b for a, b in zip(carry, out[:n_carry])]
        if new_carry == carry:
            found.extend(scratch)
            return out
        carry = new_carry


def out_taint(eqn, ins: list[bool]) -> list[bool]:
    """Which outputs of ``eqn`` carry relevance, given which inputs do."""
    return _eqn(eqn, ins, [], False, None)


def _eqn(eqn, ins: list[bool], found: list, top: bool = False,
         rewrites: Optional[list] = None) -> list[bool]:
    name = eqn.primitive.name
    n_out = len(eqn.outvars)
    p = eqn.params
    if name in BLOCKING:
        return [False] * n_out
    if name in STRUCTURAL:
        return [True] * n_out
    rule = rules.rule_name(p.get("bwd")) if name == "custom_vjp_call" else None
    if rule is not None:
        return [rule != "no_relevance"] * n_out
    if name == "scan":
        body = open_jaxpr(p["jaxpr"])
        return _fixpoint(body, *scan_counts(p), ins, found, 0)
    if name == "while":
        cn, bn = p["cond_nconsts"], p["body_nconsts"]
        body = open_jaxpr(p["body_jaxpr"])
        carry_in = ins[cn + bn:]
        return _fixpoint(body, bn, len(carry_in), ins[cn:cn + bn] + carry_in, found, 0)
    if name == "cond":
        outs = [False] * n_out
        for br in p["branches"]:
            o = walk(open_jaxpr(br), ins[1:], found)
            outs = [a or b for a, b in zip(outs, o)]
        return outs
    if top and rule_for(eqn, ins) is not None:
        if rewrites is not None:
            rewrites.append(eqn)
        return [True] * n_out
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):  # jit, remat, custom_jvp/vjp, shard_map, ...
        sub = p.get(key)
        body = None if sub is None else open_jaxpr(sub)
        if hasattr(body, "eqns") and len(body.invars) == len(ins):
            inline = top and name in CALLS  # jit-ed calls are inlined by the rewriter
            return walk(body, ins, found, inline, rewrites)
    found.append((eqn, _OUTER[0] if _OUTER else eqn))
    return [True] * n_out
