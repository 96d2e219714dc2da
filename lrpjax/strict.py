"""Strict mode: refuse to explain through operations that have no LRP rule.

Under :func:`lrpjax.relevance` the backward pass carries relevance, so every operation on the path
from ``x`` to the score must be an lrpjax rule, move values without changing them (reshape, slice,
concatenate, gather, select, ...), or be a plain operation with a rule in :mod:`lrpjax._rule_table`
(linear maps, sums, element-wise activations, gated products, softmax, attention pooling). Anything
else that relevance reaches -- a product of two input-dependent values that is not a gated product, a
non-linear operation that is not element-wise (``sort``, ``cumprod``, ...), a plain operation inside
a user-written ``scan`` body -- would be differentiated as a plain gradient and give a silently wrong
explanation. This module reports each such operation with its source line and the fix for that case.

Only operations that relevance actually reaches count: under ``gate="all"`` the branch computing a
gate (attention scores, masks, the softmax) receives no relevance, so whatever it contains is fine.
"""
from __future__ import annotations

import warnings
from jax.extend import source_info_util

from lrpjax._jaxpr import Program

UNKNOWN_LOCATION = "unknown location"


class UnsupportedOperationError(ValueError):
    """Raised in strict mode when ``x`` reaches the score through an operation with no LRP rule."""


def _where(eqn) -> str:
    """Source line of an equation, plus the layer it was traced in (Flax modules get a named scope)."""
    try:
        where = source_info_util.summarize(eqn.source_info)
    except Exception:  # pragma: no cover - best effort only
        where = UNKNOWN_LOCATION
    scope = str(getattr(eqn.source_info, "name_stack", "") or "")
    layers = [part for part in scope.split("/") if "(" in part]  # e.g. "Dense(Head_0/Dense_1)"
    return where + (f" in layer {layers[-1]}" if layers else "")


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


_FIXES = {
    "linear": "linear operation(s) outside lrpjax's rules (the plain gradient would scale or "
              "duplicate relevance instead of redistributing it). Fix: write linear maps with "
              "lrpjax.linear / lrpjax.dense (epsilon rule), sums of branches with lrpjax.accumulate, "
              "masks with jnp.where.",
    "product": "a product of two values that both depend on the input, where neither factor is a gate "
               "(a sigmoid or softmax output): no LRP rule. Fix: if one factor gates the other, compute "
               "it with jax.nn.sigmoid / jax.nn.softmax or write lrpjax.gated(gate, signal); if this "
               "branch should get no relevance, wrap it in jax.lax.stop_gradient.",
    "nonlinear": "non-linear operation(s) that are not element-wise: no LRP rule. Fix: if this branch "
                 "should get no relevance (e.g. it only computes attention scores), wrap it in "
                 "jax.lax.stop_gradient or keep gate='all'; an element-wise function can be wrapped "
                 "as lrpjax.act(fn, z) (relevance passes unchanged).",
    "loop": "plain operation(s) inside a user-written scan/while/cond body, where lrpjax rewrites "
            "nothing. Fix: build the loop body from lrpjax's cells and rules (lrpjax.cells.lstm_cell, "
            "lrpjax.linear, lrpjax.act, lrpjax.accumulate) or Flax's recurrent cells.",
}


def _describe(found: list) -> list[str]:
    """One line per source location and kind of problem, naming its primitives and the fix."""
    by_loc: dict = {}
    for e, outer, what in found:
        loc = _where(e)
        if loc.startswith(("unknown", " ")) or not loc.strip():  # inside a library function
            loc = f"{_where(outer)} (inside `{_fn_name(outer)}`)"
        if what == "loop":
            loc = f"{loc}, in the loop at {_where(outer)}" if outer is not e else loc
        names = by_loc.setdefault((loc, what), [])
        names.append(e.primitive.name)
    lines = []
    for (loc, what), names in by_loc.items():
        ops = ", ".join(f"`{n}`" for n in dict.fromkeys(names))
        lines.append(f"  - {ops} at {loc}: {_FIXES[what]}")
    return lines


_WARNED: set = set()


def check(prog: Program, gate: str, strict: bool) -> None:
    """Raise :class:`UnsupportedOperationError` (strict) or warn once per operation (non-strict) for
    the operations without a rule that relevance reaches under ``gate``."""
    found = prog.offenders(gate)
    if not found:
        return
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
