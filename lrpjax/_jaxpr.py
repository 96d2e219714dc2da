"""The jaxpr analysis that strict mode and the rewriter share: which values carry relevance, which
plain operations on that path have a rule, and which of them receive any relevance at all.

Relevance flows from ``x`` to the score. :func:`analyze` inlines the model's ``jit`` calls into one flat
:class:`Program`, follows "this value depends on ``x``" forward and sorts every step on that path:

* an lrpjax rule (a ``custom_vjp`` whose backward is marked, see :func:`lrpjax.rules.rule_name`);
* :data:`STRUCTURAL`: moves, copies, selects or re-types values, so relevance passes its transpose
  unchanged; :data:`BLOCKING`: passes nothing;
* a plain operation with a rule in :mod:`lrpjax._rule_table` (``a @ W``, sums, element-wise
  activations, gated products, softmax, attention pooling, ...): :mod:`lrpjax.rewrite` evaluates the
  model with those replaced;
* anything else: an offender, refused by :mod:`lrpjax.strict` (or warned about) -- but only if
  relevance reaches it. A backward pass over the program marks the values that receive relevance
  under the chosen gate rule: under ``gate="all"`` the branch that computes a gate (attention scores,
  masks, softmax) receives none, so whatever it contains is accepted.

User-written ``scan``/``while``/``cond`` bodies are not rewritten; :func:`walk` looks inside them for
operations without a rule.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax.numpy as jnp
from jax.extend import core as jex_core

from lrpjax._epsilon import rule_name

CALLS = ("pjit", "jit", "closed_call", "core_call")
"""Call primitives whose bodies are inlined (so their operations can be rewritten)."""

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
# Element-wise arithmetic (epsilon rules when one operand is a constant).
ARITHMETIC = frozenset({"add", "add_any", "sub", "mul", "div", "neg"})
# Element-wise non-linear functions: on a single relevance path, relevance passes unchanged.
NONLINEAR = frozenset({
    "tanh", "logistic", "exp", "exp2", "log", "log1p", "expm1", "sin", "cos", "tan", "asin", "acos",
    "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "abs", "sqrt", "rsqrt", "cbrt", "integer_pow",
    "pow", "square", "erf", "erfc", "erf_inv", "max", "min", "clamp", "sign", "floor", "ceil", "round",
    "lgamma", "digamma", "logaddexp",
})
ELEMENTWISE = ARITHMETIC | NONLINEAR | {"select_n", "convert_element_type", "copy", "copy_p"}
GATES = frozenset({"logistic"})
"""Primitives whose output is a gate (a sigmoid); softmax outputs are recognised as a pattern."""


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


def shape_of(v) -> tuple:
    """The shape of a jaxpr variable."""
    return tuple(getattr(v.aval, "shape", ()))


def sub_jaxpr(eqn) -> Optional[tuple]:
    """``(jaxpr, consts)`` of a call-like equation's body, or ``None``."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(key)
        body = None if sub is None else open_jaxpr(sub)
        if hasattr(body, "eqns") and len(body.invars) == len(eqn.invars):
            return body, tuple(getattr(sub, "consts", ()))
    return None


def bind(eqn, *invals) -> list:
    """Evaluate one equation as it is (plain JAX); returns the list of its outputs."""
    params = eqn.primitive.get_bind_params(eqn.params)
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


# ----------------------------------------------------------------------------------------------
# Taint analysis inside loop bodies (not rewritten: every plain operation there is an offender)

def walk(jaxpr, tainted_in: list[bool], found: list, outer=None) -> list[bool]:
    """Propagate "depends on x" through ``jaxpr``; append ``(equation, outer equation)`` for each
    operation without an LRP rule to ``found``."""
    taint = dict(zip(jaxpr.invars, tainted_in))
    is_t = lambda v: isinstance(v, jex_core.Var) and taint.get(v, False)
    for eqn in jaxpr.eqns:
        ins = [is_t(v) for v in eqn.invars]
        outs = eqn_taint(eqn, ins, found, outer or eqn) if any(ins) else [False] * len(eqn.outvars)
        for v, t in zip(eqn.outvars, outs):
            taint[v] = bool(t) and is_float(v)
    return [is_t(v) for v in jaxpr.outvars]


def _fixpoint(body, n_consts: int, n_carry: int, ins: list[bool], found: list, outer):
    """Taint through a loop body ``consts + carry + xs -> carry + ys`` until the carry is stable."""
    consts, carry, xs = ins[:n_consts], ins[n_consts:n_consts + n_carry], ins[n_consts + n_carry:]
    while True:
        scratch: list = []
        out = walk(body, consts + carry + xs, scratch, outer)
        new_carry = [a or b for a, b in zip(carry, out[:n_carry])]
        if new_carry == carry:
            found.extend(scratch)
            return out
        carry = new_carry


def eqn_taint(eqn, ins: list[bool], found: list, outer) -> list[bool]:
    """Which outputs of one equation depend on x; offenders inside its bodies go to ``found``."""
    name = eqn.primitive.name
    n_out = len(eqn.outvars)
    p = eqn.params
    if name in BLOCKING:
        return [False] * n_out
    if name in STRUCTURAL:
        return [True] * n_out
    rule = rule_name(p.get("bwd")) if name == "custom_vjp_call" else None
    if rule is not None:
        return [rule != "no_relevance"] * n_out
    if name == "scan":
        return _fixpoint(open_jaxpr(p["jaxpr"]), *scan_counts(p), ins, found, outer)
    if name == "while":
        cn, bn = p["cond_nconsts"], p["body_nconsts"]
        carry_in = ins[cn + bn:]
        return _fixpoint(open_jaxpr(p["body_jaxpr"]), bn, len(carry_in), ins[cn:cn + bn] + carry_in,
                         found, outer)
    if name == "cond":
        outs = [False] * n_out
        for br in p["branches"]:
            o = walk(open_jaxpr(br), ins[1:], found, outer)
            outs = [a or b for a, b in zip(outs, o)]
        return outs
    body = sub_jaxpr(eqn)  # jit, remat, custom_jvp/vjp, shard_map, ...
    if body is not None:
        return walk(body[0], ins, found, outer)
    found.append((eqn, outer))
    return [True] * n_out


# ----------------------------------------------------------------------------------------------
# The flat program: the model's top level with its jit calls inlined

class Step(NamedTuple):
    """One equation of the flat program: ``ins`` are value ids (ints) or literals, ``outs`` ids."""

    eqn: Any
    ins: tuple
    outs: tuple
    outer: Any     # the user-level equation it came from (for source locations)


class Rule(NamedTuple):
    """How a step treats relevance.

    kind: ``"plain"`` (no relevance path), ``"structural"``, ``"blocking"``, ``"lrpjax"`` (a rule
      already in the model), ``"rewrite"`` (replaced by ``impl``), ``"loop"`` (a scan/while/cond,
      bound as it is), ``"offender"`` (no rule).
    impl: ``impl(*invals, *extra_vals) -> list of outvals`` for ``"rewrite"``.
    extra: value ids whose values ``impl`` also needs (e.g. the input of an element-wise chain).
    feeds: ``feeds(gate) -> ids`` that receive relevance from this step under a gate rule.
    what: for offenders, the kind of problem (see :mod:`lrpjax.strict`).
    """

    kind: str
    impl: Optional[Callable] = None
    extra: tuple = ()
    feeds: Optional[Callable] = None
    what: str = ""


class Program:
    """The analysed, flat model: steps, their rules, and per value: dependence on ``x`` (taint), the
    value it is an element-wise function of (``root``), whether it is a gate, and its producer."""

    def __init__(self):
        self.steps: list[Step] = []
        self.rules: list[Rule] = []
        self.avals: list = []
        self.taint: list[bool] = []
        self.root: list[int] = []
        self.gate: list[bool] = []
        self.constant: list[bool] = []   # computed from constants only (no input at all)
        self.producer: dict[int, int] = {}
        self.consts: dict[int, Any] = {}
        self.inputs: list[int] = []
        self.outputs: list = []
        self.inner_found: dict[int, list] = {}   # step index -> offenders inside its loop bodies
        self.carry_sinks: list[tuple[int, int]] = []   # (step index, carry position)
        self.chains: dict[int, tuple] = {}   # value -> the element-wise chain it ends (itself first)

    def new(self, aval, tainted: bool) -> int:
        k = len(self.avals)
        self.avals.append(aval)
        self.taint.append(bool(tainted))
        self.root.append(k)
        self.gate.append(False)
        self.constant.append(False)
        return k

    def tainted(self, a) -> bool:
        return isinstance(a, int) and self.taint[a]

    def shape(self, a) -> tuple:
        return tuple(getattr(self.avals[a] if isinstance(a, int) else a.aval, "shape", ()))

    def step_of(self, a) -> Optional[Step]:
        k = self.producer.get(a) if isinstance(a, int) else None
        return None if k is None else self.steps[k]

    def needed(self, gate: str) -> list[bool]:
        """Backward pass: which values receive relevance under ``gate``."""
        need = [False] * len(self.avals)
        for a in self.outputs:
            if self.tainted(a):
                need[a] = True
        for step, rule in zip(reversed(self.steps), reversed(self.rules)):
            if any(need[o] for o in step.outs) and rule.feeds is not None:
                for a in rule.feeds(gate):
                    if self.tainted(a):
                        need[a] = True
        return need

    def offenders(self, gate: str) -> list:
        """``(equation, outer equation, what)`` for each operation without a rule that relevance
        reaches under ``gate``."""
        need = self.needed(gate)
        found = []
        for k, (step, rule) in enumerate(zip(self.steps, self.rules)):
            if not any(need[o] for o in step.outs):
                continue
            if rule.kind == "offender":
                found.append((step.eqn, step.outer, rule.what))
            found.extend((e, o, "loop") for e, o in self.inner_found.get(k, ()))
        return found

    @property
    def rewrites(self) -> bool:
        """Whether evaluating the model needs this program (rules to apply or carries to report)."""
        return bool(self.carry_sinks) or any(r.kind == "rewrite" for r in self.rules)


def elementwise_call(eqn, tin: Sequence[bool]) -> bool:
    """Whether a call (``jit``, ``custom_jvp_call``) is an element-wise non-linear function of its
    single input that carries relevance (``jax.nn.silu``, ``relu``, ``softplus``, ``leaky_relu``)."""
    body = sub_jaxpr(eqn)
    if body is None or sum(tin) != 1:
        return False
    k = list(tin).index(True)
    x = eqn.invars[k]
    if any(is_float(o) and shape_of(o) != shape_of(x) for o in eqn.outvars):
        return False
    return _elementwise_body(body[0], k)


def _elementwise_body(jaxpr, k: int) -> bool:
    """Every value depending on input ``k`` is an element-wise function of it, and at least one step
    is non-linear in it (a mask applied with ``where`` alone is a selection, not an activation)."""
    x = jaxpr.invars[k]
    dep = {x}
    nonlinear = False
    for eqn in jaxpr.eqns:
        d = [isinstance(v, jex_core.Var) and v in dep for v in eqn.invars]
        if not any(d):
            continue
        name = eqn.primitive.name
        if any(is_float(o) and shape_of(o) != shape_of(x) for o in eqn.outvars):
            return False
        if name in ELEMENTWISE or name in ("eq", "ne", "lt", "le", "gt", "ge", "is_finite", "not",
                                           "and", "or", "stop_gradient"):
            nonlinear |= name in NONLINEAR or (name == "select_n" and d[0])
        elif sub_jaxpr(eqn) is not None and sum(d) == 1:
            if not _elementwise_body(sub_jaxpr(eqn)[0], d.index(True)):
                return False
            nonlinear = True
        else:
            return False
        dep.update(eqn.outvars)
    return nonlinear
