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
from typing import Iterable

from jax.extend import source_info_util

from lrpjax._jaxpr import LINEAR, open_jaxpr, walk

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


def find_unsupported(closed_jaxpr, tainted_in: Iterable[bool]) -> tuple[list, list]:
    """Equations of ``closed_jaxpr`` on the path from the tainted inputs that have no LRP rule, and
    those that :mod:`lrpjax.rewrite` replaces by a rule."""
    found: list = []
    rewrites: list = []
    walk(open_jaxpr(closed_jaxpr), list(tainted_in), found, True, rewrites)
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
