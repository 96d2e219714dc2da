"""The rule table: which LRP rule each plain JAX operation on the relevance path gets.

:func:`classify` is called by :func:`lrpjax._jaxpr.analyze` for every step of the flat program, in
order, and returns the step's :class:`~lrpjax._jaxpr.Rule` (its implementation with lrpjax's rules,
and which values it passes relevance to). The table, in the order it is consulted:

=============================================  ================================================================
operation on the relevance path                rule (:mod:`lrpjax.rules`)
=============================================  ================================================================
element-wise non-linear ``f(a)`` (tanh, relu,  identity (:func:`~lrpjax.rules.elementwise`); a chain of them on
gelu, silu, sigmoid, exp, ...)                 one value (``a * sigmoid(a)``, gelu) is one function of that value
``a * c``, ``a / c``, ``-a`` (``c`` constant)  :func:`~lrpjax.rules.scale` (epsilon rule, one input per unit)
``a + c``, ``a - c``                           :func:`~lrpjax.rules.linear`, identity weights, bias ``c``
``a + b``, ``a - b`` (two paths)               :func:`~lrpjax.rules.accumulate` (epsilon rule over the summands)
``gate * signal`` (gate: sigmoid or softmax)   :func:`~lrpjax.rules.gated` (the ``gate=`` rule)
``a @ W``, ``einsum(a, W)`` (W constant)       :func:`~lrpjax.rules.linear` (epsilon rule; a following ``+ b``
                                               is its bias)
``einsum(alpha, h)`` (alpha a softmax/gate)    gated products, then :func:`~lrpjax.rules.sum_over` (attention
                                               pooling)
``softmax(s)``                                 :func:`~lrpjax.rules.softmax` (AttnLRP)
``a.sum(axes)``, ``a.max(axes)``               :func:`~lrpjax.rules.sum_over`, :func:`~lrpjax.rules.max_over`
``maximum(a, b)`` (two paths)                  winner takes all
=============================================  ================================================================
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import jax.numpy as jnp
from jax.extend import core as jex_core

from lrpjax import rules
from lrpjax._epsilon import rule_name
from lrpjax._jaxpr import (ARITHMETIC, BLOCKING, CALLS, GATES, LINEAR, NONLINEAR, STRUCTURAL, Program,
                           Rule, Step, bind, elementwise_call, eqn_taint, is_float, open_jaxpr, scan_counts,
                           shape_of, sub_jaxpr, walk)

# structural operations through which a gate stays a gate (attention weights reshaped or masked)
_KEEPS_GATE = frozenset({"reshape", "squeeze", "expand_dims", "broadcast_in_dim", "transpose",
                         "convert_element_type", "copy", "select_n", "slice", "dynamic_slice"})


def analyze(closed_jaxpr, tainted_in: Sequence[bool]) -> Program:
    """The flat :class:`~lrpjax._jaxpr.Program` of ``closed_jaxpr`` (whose inputs ``tainted_in``
    depend on ``x``): ``jit`` calls inlined, every step tainted and given its rule."""
    prog = Program()
    jaxpr = open_jaxpr(closed_jaxpr)
    prog.inputs = [prog.new(v.aval, t and is_float(v)) for v, t in zip(jaxpr.invars, tainted_in)]
    prog.outputs = _inline(prog, jaxpr, getattr(closed_jaxpr, "consts", ()), prog.inputs, None)
    return prog


def _inline(prog: Program, jaxpr, consts, args, outer) -> list:
    local: dict = {}
    for v, c in zip(jaxpr.constvars, consts):
        k = prog.new(v.aval, False)
        prog.consts[k] = c
        prog.constant[k] = True
        local[v] = k
    local.update(zip(jaxpr.invars, args))
    atom = lambda v: v if isinstance(v, jex_core.Literal) else local[v]
    for eqn in jaxpr.eqns:
        ins = tuple(atom(v) for v in eqn.invars)
        tin = [prog.tainted(a) for a in ins]
        if eqn.primitive.name in CALLS and any(tin) and not elementwise_call(eqn, tin):
            body = sub_jaxpr(eqn)
            outs = _inline(prog, body[0], body[1], ins, outer or eqn)
        else:
            outs = tuple(prog.new(v.aval, False) for v in eqn.outvars)
            step = Step(eqn, ins, outs, outer or eqn)
            k = len(prog.steps)
            prog.steps.append(step)
            for o in outs:
                prog.producer[o] = k
            rule, out_t = classify(prog, k, step, tin)
            prog.rules.append(rule)
            constant = all(isinstance(a, jex_core.Literal) or prog.constant[a] for a in ins)
            for o, v, t in zip(outs, eqn.outvars, out_t):
                prog.taint[o] = bool(t) and is_float(v)
                prog.constant[o] = constant
        for v, o in zip(eqn.outvars, outs):
            local[v] = o
    return [atom(v) for v in jaxpr.outvars]


def classify(prog: Program, k: int, step: Step, tin: list[bool]) -> tuple[Rule, list[bool]]:
    """The rule of step ``k`` and which of its outputs depend on ``x``."""
    eqn, n_out = step.eqn, len(step.outs)
    name = eqn.primitive.name
    tainted = tuple(a for a, t in zip(step.ins, tin) if t)
    every = lambda gate: tainted
    if not any(tin):
        return Rule("plain"), [False] * n_out
    if name in BLOCKING:
        return Rule("blocking", feeds=lambda gate: ()), [False] * n_out
    if name in STRUCTURAL:
        if name in _KEEPS_GATE and any(prog.gate[a] for a in tainted):
            prog.gate[step.outs[0]] = True
        return Rule("structural", feeds=every), [True] * n_out
    if name == "custom_vjp_call" and rule_name(eqn.params.get("bwd")) is not None:
        return _lrpjax_rule(step, rule_name(eqn.params.get("bwd")), tin)
    if name in ("scan", "while", "cond"):
        return _loop(prog, k, step, tin)
    rule = _rewrite(prog, step, tin)
    if rule is not None:
        return rule, [True] * n_out
    body = sub_jaxpr(eqn)
    if body is not None:  # custom_jvp functions, remat, shard_map, ...: bound as they are
        found: list = []
        out_t = walk(body[0], list(tin), found, step.outer)
        prog.inner_found[k] = found
        return Rule("loop", feeds=every), out_t
    return Rule("offender", feeds=every, what=_what(prog, step, tin)), [True] * n_out


def _lrpjax_rule(step: Step, rule: str, tin) -> tuple[Rule, list[bool]]:
    n_out = len(step.outs)
    if rule == "no_relevance":
        return Rule("lrpjax", feeds=lambda gate: ()), [False] * n_out
    tainted = tuple(a for a, t in zip(step.ins, tin) if t)
    if rule == "gated":  # gated(gate, signal): under "all" the gate gets nothing
        sig = tuple(a for a, t in zip(step.ins[1:], tin[1:]) if t)
        return Rule("lrpjax", feeds=lambda gate: sig if gate == "all" else tainted), [True] * n_out
    return Rule("lrpjax", feeds=lambda gate: tainted), [True] * n_out


def _loop(prog: Program, k: int, step: Step, tin) -> tuple[Rule, list[bool]]:
    """scan / while / cond: bound as they are; offenders inside are found by walking the bodies. A
    scan's initial carry that does not depend on x but carries relevance becomes an initial state."""
    eqn = step.eqn
    found: list = []
    out_t = eqn_taint(eqn, list(tin), found, step.outer)
    prog.inner_found[k] = found
    if eqn.primitive.name == "scan":
        nc, ncarry = scan_counts(eqn.params)
        for j in range(ncarry):
            v = eqn.invars[nc + j]
            a = step.ins[nc + j]
            # a constant initial carry (zeros) that relevance reaches: report it as an initial state
            if (out_t[j] and is_float(v) and len(shape_of(v)) >= 1 and isinstance(a, int)
                    and prog.constant[a]):
                prog.carry_sinks.append((k, nc + j))
    tainted = tuple(a for a, t in zip(step.ins, tin) if t)
    return Rule("loop", feeds=lambda gate: tainted), out_t


# ----------------------------------------------------------------------------------------------
# Element-wise chains: the value each one is a function of

def _chain(prog: Program, a) -> tuple:
    """Values from ``a`` back to the start of its element-wise chain (``a`` first)."""
    return prog.chains.get(a, (a,))


def _common(prog: Program, values) -> Optional[int]:
    """The nearest value all of ``values`` are element-wise functions of, or ``None``."""
    chains = [_chain(prog, a) for a in values]
    rest = [set(c) for c in chains[1:]]
    for a in chains[0]:
        if all(a in r for r in rest):
            return a
    return None


def _rewrite(prog: Program, step: Step, tin) -> Optional[Rule]:
    eqn = step.eqn
    name = eqn.primitive.name
    tainted = [a for a, t in zip(step.ins, tin) if t]
    out = step.outs[0]
    same_shape = all(prog.shape(a) == prog.shape(out) for a in tainted)
    if elementwise_call(eqn, tin):  # jax.nn.relu / silu / softplus / ...: identity as a whole
        return _identity(prog, step, tainted[0])
    if name in ARITHMETIC or name in NONLINEAR:
        if same_shape:
            src = _common(prog, tainted)
            if src is not None:  # a function of one value: extend its chain
                prog.chains[out] = (out,) + _chain(prog, src if len(tainted) > 1 else tainted[0])
                if len(tainted) > 1:
                    return _identity(prog, step, src)
                if name in NONLINEAR:
                    if name in GATES:
                        prog.gate[out] = True
                    return _identity(prog, step, tainted[0])
        return _arithmetic(prog, step, tin)
    return _reduction(prog, step, tin)


def _identity(prog: Program, step: Step, src) -> Rule:
    eqn = step.eqn
    extra = (src,)

    def impl(*vals):
        outs = bind(eqn, *vals[:-1])
        return [rules.elementwise(vals[-1], o) if jnp.issubdtype(o.dtype, jnp.inexact)
                and o.shape == vals[-1].shape else o for o in outs]
    return Rule("rewrite", impl, extra, lambda gate: extra)


def _arithmetic(prog: Program, step: Step, tin) -> Optional[Rule]:
    """Element-wise arithmetic of one path with a constant, or of two different paths."""
    name = step.eqn.primitive.name
    out = step.outs[0]
    out_shape = prog.shape(out)
    tainted = tuple(a for a, t in zip(step.ins, tin) if t)
    every = lambda gate: tainted
    if len(tainted) == 1:
        k = list(tin).index(True)
        if prog.shape(step.ins[k]) != out_shape:
            return None
        if name == "neg":
            return Rule("rewrite", lambda a: [rules.scale(a, -1.0)], (), every)
        if name == "mul":
            return Rule("rewrite", lambda a, b: [rules.scale((a, b)[k], (a, b)[1 - k])], (), every)
        if name == "div" and k == 0:
            return Rule("rewrite", lambda a, b: [rules.scale(a, 1.0 / b)], (), every)
        if name in ("add", "add_any", "sub") and len(out_shape) >= 1:
            return Rule("rewrite", _bias_add(k, name == "sub", out_shape), (), every)
        return None
    # two paths; lax broadcasts size-1 axes, so bring both to the output's shape first
    full = lambda a, b: (jnp.broadcast_to(a, out_shape), jnp.broadcast_to(b, out_shape))
    if name in ("add", "add_any", "sub"):
        sign = -1.0 if name == "sub" else 1.0

        def add(a, b):
            a, b = full(a, b)
            return [rules.accumulate(a, b if sign > 0 else rules.scale(b, -1.0))]
        return Rule("rewrite", add, (), every)
    if name in ("max", "min"):  # winner takes all: relevance to the selected value
        pick = (lambda a, b: a >= b) if name == "max" else (lambda a, b: a <= b)
        return Rule("rewrite", lambda a, b: [jnp.where(pick(*full(a, b)), *full(a, b))], (), every)
    if name == "mul":
        return _gated_product(prog, step, full)
    if name == "div":
        return _softmax(prog, step)
    return None


def _bias_add(k: int, subtract: bool, out_shape: tuple) -> Callable:
    def bias_add(a, b):
        x, c = (a, b)[k], (a, b)[1 - k]
        if k == 1 and subtract:   # c - x = (-x) + c
            x = rules.scale(x, -1.0)
        elif subtract:            # x - c
            c = -c
        return [rules.linear(x, None, jnp.broadcast_to(c, out_shape).astype(x.dtype))]
    return bias_add


def _gated_product(prog: Program, step: Step, full: Callable) -> Optional[Rule]:
    """``gate * signal`` where exactly one factor is a gate (a sigmoid or softmax output)."""
    a, b = step.ins
    if prog.gate[a] == prog.gate[b]:
        return None
    g = 0 if prog.gate[a] else 1
    gate_id, sig_id = step.ins[g], step.ins[1 - g]
    feeds = lambda gate: (sig_id,) if gate == "all" else (sig_id, gate_id)

    def product(x, y):
        x, y = full(x, y)
        return [rules.gated((x, y)[g], (x, y)[1 - g])]
    return Rule("rewrite", product, (), feeds)


def _softmax(prog: Program, step: Step) -> Optional[Rule]:
    """``exp(s - max) / sum(exp(s - max))`` (``jax.nn.softmax``, Flax's ``nn.softmax``)."""
    num, den = step.ins
    s_red = prog.step_of(den)
    while s_red is not None and s_red.eqn.primitive.name in ("broadcast_in_dim", "reshape",
                                                             "expand_dims"):
        s_red = prog.step_of(s_red.ins[0])
    s_exp = prog.step_of(num)
    if (s_red is None or s_red.eqn.primitive.name != "reduce_sum" or s_red.ins[0] != num
            or s_exp is None or s_exp.eqn.primitive.name != "exp"):
        return None
    s = s_exp.ins[0]
    s_sub = prog.step_of(s)
    if s_sub is not None and s_sub.eqn.primitive.name == "sub" and prog.tainted(s_sub.ins[0]):
        s = s_sub.ins[0]   # softmax is shift invariant: its input is the scores before the shift
    axes = tuple(s_red.eqn.params["axes"])
    prog.gate[step.outs[0]] = True
    _attention_scores(prog, s)
    return Rule("rewrite", lambda n, d, sv: [rules.softmax(sv, n / d, axes)], (s,),
                lambda gate: (s,))


def _attention_scores(prog: Program, s) -> None:
    """Scores ``q . k`` of two relevance paths feeding a softmax (dot-product attention): the
    contraction gets AttnLRP's uniform rule (epsilon rule over the products, half to each factor)
    instead of being refused. Follows ``s`` back through scalings, bias adds and selections."""
    step = prog.step_of(s)
    while step is not None and step.eqn.primitive.name != "dot_general":
        tainted = [a for a in step.ins if prog.tainted(a)]
        if len(tainted) != 1:
            return
        step = prog.step_of(tainted[0])
    if step is None:
        return
    k = prog.producer[step.outs[0]]
    if prog.rules[k].kind == "offender" and prog.rules[k].what == "product":
        shapes = [prog.shape(a) for a in step.ins]
        ins = tuple(step.ins)
        impl = _contraction(0, shapes, step.eqn.params["dimension_numbers"],
                            step.eqn.outvars[0].aval.dtype, lambda a, b: rules.uniform_product(a, b))
        prog.rules[k] = Rule("rewrite", impl, (), lambda gate: ins)


# ----------------------------------------------------------------------------------------------
# Reductions and contractions

def _reduction(prog: Program, step: Step, tin) -> Optional[Rule]:
    eqn, name = step.eqn, step.eqn.primitive.name
    tainted = tuple(a for a, t in zip(step.ins, tin) if t)
    every = lambda gate: tainted
    p = eqn.params
    if name == "reduce_sum":
        return Rule("rewrite", lambda a: [rules.sum_over(a, p["axes"])], (), every)
    if name == "reduce_max":
        return Rule("rewrite", lambda a: [rules.max_over(a, p["axes"])], (), every)
    if name != "dot_general":
        return None
    (lc, rc), (lb, rb) = p["dimension_numbers"]
    out_dtype = eqn.outvars[0].aval.dtype
    shapes = [prog.shape(a) for a in step.ins]
    if len(tainted) == 1 and not lb and not rb:
        return Rule("rewrite", _dot_linear(list(tin).index(True), shapes, lc, rc, out_dtype), (), every,
                    "dot")
    if len(tainted) == 2 and prog.gate[step.ins[0]] != prog.gate[step.ins[1]]:
        g = 0 if prog.gate[step.ins[0]] else 1
        gate_id, sig_id = step.ins[g], step.ins[1 - g]
        feeds = lambda gate: (sig_id,) if gate == "all" else (sig_id, gate_id)
        return Rule("rewrite", _contraction(g, shapes, p["dimension_numbers"], out_dtype, rules.gated),
                    (), feeds)
    return None


def _dot_linear(k: int, shapes, lc, rc, out_dtype) -> Callable:
    """``dot_general`` of a relevance path (operand ``k``) with constant weights as one linear
    layer: the contracted axes are the lower units, the weights' free axes the upper units."""
    a_shape, w_shape = shapes[k], shapes[1 - k]
    ac, wc = (list(lc), list(rc)) if k == 0 else (list(rc), list(lc))
    a_free = [i for i in range(len(a_shape)) if i not in ac]
    w_free = [i for i in range(len(w_shape)) if i not in wc]
    n = math.prod(a_shape[i] for i in ac)
    m = math.prod(w_shape[i] for i in w_free)
    lead = tuple(a_shape[i] for i in a_free)
    upper = tuple(w_shape[i] for i in w_free)

    def flat(a, w, bias=None):
        a2 = jnp.transpose(a, a_free + ac).reshape(lead + (n,))
        w2 = jnp.transpose(w, wc + w_free).reshape(n, m).astype(a.dtype)
        b2 = None
        if bias is not None:  # bias in dot_general's output layout
            bias = jnp.broadcast_to(bias, _out_shape(k, lead, upper)).astype(a.dtype)
            if k == 1:
                bias = jnp.moveaxis(bias, tuple(range(len(upper))),
                                    tuple(range(len(lead), len(lead) + len(upper))))
            b2 = bias.reshape(lead + (m,))
        z = rules.linear(a2, w2, b2).reshape(lead + upper)
        if k == 1:   # dot_general puts the weights' (lhs) free axes first
            z = jnp.moveaxis(z, tuple(range(len(lead), len(lead) + len(upper))),
                             tuple(range(len(upper))))
        return [z.astype(out_dtype)]

    def impl(x, y, bias=None):
        return flat((x, y)[k], (x, y)[1 - k], bias)
    return impl


def _out_shape(k: int, lead: tuple, upper: tuple) -> tuple:
    return lead + upper if k == 0 else upper + lead


def _contraction(g: int, shapes, dimension_numbers, out_dtype, product: Callable) -> Callable:
    """``einsum(a, b)`` of two relevance paths as its products ``product(gate, signal)`` (operand
    ``g`` is the gate), then the epsilon rule over the summands of each output
    (:func:`lrpjax.rules.sum_over`). With :func:`lrpjax.rules.gated` this is attention pooling."""
    (lc, rc), (lb, rb) = dimension_numbers
    ls, rs = shapes
    lf = [i for i in range(len(ls)) if i not in lc and i not in lb]
    rf = [i for i in range(len(rs)) if i not in rc and i not in rb]
    nb, nl, nr, nc = len(lb), len(lf), len(rf), len(lc)
    full = (tuple(ls[i] for i in lb) + tuple(ls[i] for i in lf) + tuple(rs[i] for i in rf)
            + tuple(ls[i] for i in lc))

    def impl(x, y):
        lt = jnp.transpose(x, list(lb) + lf + list(lc))
        lt = jnp.expand_dims(lt, tuple(range(nb + nl, nb + nl + nr)))
        rt = jnp.transpose(y, list(rb) + rf + list(rc))
        rt = jnp.expand_dims(rt, tuple(range(nb, nb + nl)))
        lt, rt = jnp.broadcast_to(lt, full), jnp.broadcast_to(rt, full)
        gate, signal = (lt, rt) if g == 0 else (rt, lt)
        dtype = jnp.result_type(gate, signal)
        products = product(gate.astype(dtype), signal.astype(dtype))
        z = rules.sum_over(products, tuple(range(len(full) - nc, len(full))))
        return [z.astype(out_dtype)]
    return impl


# ----------------------------------------------------------------------------------------------
# Offenders: what kind of problem (strict mode's message depends on it)

def _what(prog: Program, step: Step, tin) -> str:
    name = step.eqn.primitive.name
    n_tainted = sum(tin)
    if name in ("mul", "div", "dot_general") and n_tainted >= 2:
        return "product"
    if name in LINEAR:
        return "linear"
    return "nonlinear"


__all__ = ["analyze", "classify"]
