"""Strict mode: refuse to explain through operations that have no LRP rule.

Under :func:`lrpjax.relevance` the backward pass carries relevance, so every operation on the path
from ``x`` to the score must either be an lrpjax rule or move values without changing them (reshape,
slice, concatenate, gather, select, ...). Anything else -- a bare ``jnp.tanh``, ``jax.nn.gelu``,
``softmax``, ``exp``, but also a hand-written ``x @ W`` or ``a + b`` -- would be differentiated as a plain
gradient and give a silently wrong explanation. This module walks the model's jaxpr, follows which
values depend on ``x`` (through ``jit``, ``scan``, ``while``, ``cond``, ``remat``, custom derivatives),
and reports each offending operation with its source line.
"""
from __future__ import annotations

import warnings
from typing import Iterable, Optional

import jax
from jax.extend import core as jex_core

try:  # source lines of jaxpr equations (a stable helper, but private)
    from jax._src import source_info_util as _siu
except ImportError:  # pragma: no cover
    _siu = None

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


class UnsupportedOperationError(ValueError):
    """Raised in strict mode when ``x`` reaches the score through an operation with no LRP rule."""


def _where(eqn) -> str:
    """Source line of an equation, plus the layer it was traced in (Flax modules get a named scope)."""
    if _siu is None:
        return "unknown location"
    try:
        where = _siu.summarize(eqn.source_info)
    except Exception:  # pragma: no cover - best effort only
        where = "unknown location"
    scope = str(getattr(eqn.source_info, "name_stack", "") or "")
    layers = [part for part in scope.split("/") if "(" in part]  # e.g. "Dense(Head_0/Dense_1)"
    return where + (f" in layer {layers[-1]}" if layers else "")


def _is_float(var) -> bool:
    aval = getattr(var, "aval", None)
    dtype = getattr(aval, "dtype", None)
    return dtype is not None and jax.numpy.issubdtype(dtype, jax.numpy.inexact)


def _rule_name(eqn):
    bwd = eqn.params.get("bwd")
    f = getattr(bwd, "f", bwd)
    while hasattr(f, "func"):  # functools.partial
        f = f.func
    return getattr(f, "_lrpjax_rule", None)


def _open(j):
    """(jaxpr, n_consts_prefix) for a Jaxpr or ClosedJaxpr."""
    return (j.jaxpr if isinstance(j, jex_core.ClosedJaxpr) else j)


_OUTER: list = []


def _walk(jaxpr, tainted_in: list[bool], found: list, top: bool = False,
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
            taint[v] = bool(t) and _is_float(v)
    return [is_t(v) for v in jaxpr.outvars]


def _fixpoint(body, n_consts: int, n_carry: int, ins: list[bool], found: list, n_out_extra: int):
    """Taint through a loop body ``consts + carry + xs -> carry + ys`` until the carry is stable."""
    consts, carry, xs = ins[:n_consts], ins[n_consts:n_consts + n_carry], ins[n_consts + n_carry:]
    while True:
        scratch: list = []
        out = _walk(body, consts + carry + xs, scratch)
        new_carry = [a or b for a, b in zip(carry, out[:n_carry])]
        if new_carry == carry:
            found.extend(scratch)
            return out
        carry = new_carry


def out_taint(eqn, ins: list[bool]) -> list[bool]:
    """Which outputs of ``eqn`` carry relevance, given which inputs do."""
    return _eqn(eqn, ins, [], False, None)


def _scan_counts(p: dict) -> tuple[int, int]:
    """``(num_consts, num_carry)`` of a scan equation: explicit params up to jax 0.10, packed in the
    ``ft_in`` flat tree ``(consts, carry, xs)`` from jax 0.11 on."""
    if "num_consts" in p:
        return p["num_consts"], p["num_carry"]
    consts, carry, _ = p["ft_in"].unpack()
    return len(list(consts)), len(list(carry))


def _eqn(eqn, ins: list[bool], found: list, top: bool = False,
         rewrites: Optional[list] = None) -> list[bool]:
    from lrpjax import rewrite
    name = eqn.primitive.name
    n_out = len(eqn.outvars)
    p = eqn.params
    if name in BLOCKING:
        return [False] * n_out
    if name in STRUCTURAL:
        return [True] * n_out
    if name == "custom_vjp_call" and _rule_name(eqn) is not None:
        return [_rule_name(eqn) != "no_relevance"] * n_out
    if name == "scan":
        body = _open(p["jaxpr"])
        return _fixpoint(body, *_scan_counts(p), ins, found, 0)
    if name == "while":
        cn, bn = p["cond_nconsts"], p["body_nconsts"]
        body = _open(p["body_jaxpr"])
        carry_in = ins[cn + bn:]
        return _fixpoint(body, bn, len(carry_in), ins[cn:cn + bn] + carry_in, found, 0)
    if name == "cond":
        outs = [False] * n_out
        for br in p["branches"]:
            o = _walk(_open(br), ins[1:], found)
            outs = [a or b for a, b in zip(outs, o)]
        return outs
    if top and rewrite.rule_for(eqn, ins) is not None:
        if rewrites is not None:
            rewrites.append(eqn)
        return [True] * n_out
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):  # jit, remat, custom_jvp/vjp, shard_map, ...
        sub = p.get(key)
        if sub is not None and hasattr(_open(sub), "eqns") and len(_open(sub).invars) == len(ins):
            inline = top and name in rewrite.CALLS  # jit-ed calls are inlined by the rewriter
            return _walk(_open(sub), ins, found, inline, rewrites)
    found.append((eqn, _OUTER[0] if _OUTER else eqn))
    return [True] * n_out


def find_unsupported(closed_jaxpr, tainted_in: Iterable[bool]) -> tuple[list, list]:
    """Equations of ``closed_jaxpr`` on the path from the tainted inputs that have no LRP rule, and
    those that :mod:`lrpjax.rewrite` replaces by a rule."""
    found: list = []
    rewrites: list = []
    _walk(_open(closed_jaxpr), list(tainted_in), found, True, rewrites)
    return found, rewrites


def _fn_name(eqn) -> str:
    """The user-visible name of a call-like equation (``relu`` for jax.nn.relu's custom_jvp_call)."""
    if isinstance(eqn.params.get("name"), str):
        return eqn.params["name"]
    for key in ("call_jaxpr", "jaxpr"):
        info = getattr(getattr(eqn.params.get(key), "jaxpr", eqn.params.get(key)), "debug_info", None)
        src = getattr(info, "func_src_info", None) or ""
        if src:
            return src.split(" ")[0]
    return eqn.primitive.name


def _describe(eqns: list) -> list[str]:
    """One line per source location, naming its primitives, what kind of problem it is and the fix."""
    by_loc: dict = {}
    for e, outer in eqns:
        loc = _where(e)
        if loc.startswith(("unknown", " ")) or not loc.strip():  # inside a library function
            inner = _fn_name(outer)
            loc = f"{_where(outer)} (inside `{inner}`)"
        by_loc.setdefault(loc, []).append(e.primitive.name)
    lines = []
    for loc, names in by_loc.items():
        names = list(dict.fromkeys(names))
        ops = ", ".join(f"`{n}`" for n in names)
        if all(n in LINEAR for n in names):
            lines.append(
                f"  - {ops} at {loc}: linear operation(s) outside lrpjax's rules (the plain gradient "
                f"would scale or duplicate relevance instead of redistributing it). Fix: write linear "
                f"maps with lrpjax.linear / lrpjax.dense (epsilon rule), sums of branches with "
                f"lrpjax.accumulate, masks with jnp.where.")
        else:
            lines.append(
                f"  - {ops} at {loc}: non-linear operation(s) with no LRP rule. Fix: use lrpjax's "
                f"layers, or wrap an element-wise activation as lrpjax.act(fn, z) (relevance passes "
                f"unchanged).")
    return lines


_WARNED: set = set()


def check(closed_jaxpr, tainted_in: Iterable[bool], strict: bool) -> bool:
    """Raise :class:`UnsupportedOperationError` (strict) or warn once per operation (non-strict).

    Returns whether the model contains operations that :mod:`lrpjax.rewrite` must replace by rules.
    """
    found, rewrites = find_unsupported(closed_jaxpr, tainted_in)
    if not found:
        return bool(rewrites)
    lines = _describe(found)
    if strict:
        raise UnsupportedOperationError(
            "lrpjax.relevance: the input reaches the score through operation(s) that have no LRP rule:\n"
            + "\n".join(lines)
            + "\nOr pass strict=False to treat them with their plain gradient (the explanation is then "
              "not pure LRP, and a warning says so).")
    new = [ln for ln in lines if ln not in _WARNED]
    if new:
        _WARNED.update(new)
        warnings.warn("lrpjax.relevance(strict=False): these operations are treated with their plain "
                      "gradient, not an LRP rule:\n" + "\n".join(new), stacklevel=3)
    return bool(rewrites)
