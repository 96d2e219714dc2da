"""Evaluate a model with LRP rules in place of the plain JAX operations it is written with.

A user's model -- or an unmodified Flax module -- combines the recurrent layers with plain ``jnp``
code: ``hs.mean(axis=1)``, ``h_fwd + h_bwd``, ``tanh(h @ W + b)``, an attention softmax and
``einsum("bt,btd->bd", alpha, hs)``. Their plain gradients would scale, duplicate or invert relevance,
so when the model's jaxpr contains such an operation on the path from ``x`` to the score,
:func:`lrpjax.relevance` evaluates the model's flat program (:func:`lrpjax._rule_table.analyze`) with
each of them replaced by its rule; everything else, lrpjax's own rules included, is bound unchanged.
The table of operations and rules is in :mod:`lrpjax._rule_table` and in
``docs/attention-heads-outputs.md``.

Two more things happen here:

* ``a @ W`` directly followed by ``+ b`` is one neuron layer: one epsilon rule with bias ``b``;
* a user-written ``scan`` (``nn.scan``, ``lax.scan``) whose initial carry is a constant (zeros) gets
  that carry replaced by a reported initial state, so its relevance lands in
  :attr:`lrpjax.Explanation.initial_state` instead of being absorbed.

Rewrites apply at the top level of the model and inside ``jit``-ed functions it calls, not inside
user-written ``scan``/``while``/``cond`` bodies.
"""
from __future__ import annotations

from typing import Sequence

from jax.extend import core as jex_core

from lrpjax import rules
from lrpjax._jaxpr import Program, bind


def _bias_fusions(prog: Program) -> dict:
    """``{index of a dot_general step: index of the "+ b" step that is its only use}``."""
    uses: dict = {}
    for k, step in enumerate(prog.steps):
        for a in step.ins:
            if isinstance(a, int):
                uses.setdefault(a, []).append(k)
    outputs = {a for a in prog.outputs if isinstance(a, int)}
    fusions = {}
    for k, (step, rule) in enumerate(zip(prog.steps, prog.rules)):
        if rule.kind != "rewrite" or rule.what != "dot":
            continue
        out = step.outs[0]
        users = uses.get(out, [])
        if out in outputs or len(users) != 1:
            continue
        nxt = prog.steps[users[0]]
        if (nxt.eqn.primitive.name in ("add", "add_any") and prog.shape(nxt.outs[0]) == prog.shape(out)
                and sum(a == out for a in nxt.ins if isinstance(a, int)) == 1):
            fusions[k] = users[0]
    return fusions


def evaluate(prog: Program, args: Sequence, carry_sinks: Sequence = ()) -> list:
    """Evaluate ``prog`` on its flat inputs ``args`` with its rewritable steps replaced by rules.

    ``carry_sinks`` holds one array per entry of ``prog.carry_sinks``: added to that scan's initial
    carry (which then passes no relevance on), so the relevance reaching it is reported.
    """
    env: dict = dict(prog.consts)
    env.update(zip(prog.inputs, args))
    read = lambda a: a.val if isinstance(a, jex_core.Literal) else env[a]
    fused = _bias_fusions(prog)
    pending: dict = {}
    sinks: dict = {}
    for (k, pos), s in zip(prog.carry_sinks, carry_sinks):
        sinks.setdefault(k, []).append((pos, s))
    for k, (step, rule) in enumerate(zip(prog.steps, prog.rules)):
        if k in pending:  # the `+ b` of a deferred `a @ W`: one neuron layer, one epsilon rule
            dot_k, dot_vals = pending.pop(k)
            dot_out = prog.steps[dot_k].outs[0]
            other = [a for a in step.ins if a is not dot_out and a != dot_out]
            if len(other) == 1 and not prog.tainted(other[0]):
                env[step.outs[0]] = prog.rules[dot_k].impl(*dot_vals, bias=read(other[0]))[0]
                continue
            env[dot_out] = prog.rules[dot_k].impl(*dot_vals)[0]  # both sides carry relevance
        invals = [read(a) for a in step.ins]
        if rule.kind == "rewrite":
            if k in fused:
                pending[fused[k]] = (k, invals)
                continue
            outs = rule.impl(*invals, *[read(a) for a in rule.extra])
        else:
            for pos, s in sinks.get(k, ()):
                invals[pos] = s.astype(invals[pos].dtype) + rules.no_relevance(lambda v: v, invals[pos])
            outs = bind(step.eqn, *invals)
        env.update(zip(step.outs, outs))
    return [read(a) for a in prog.outputs]
