"""The embedding lookup of a token model, found in its jaxpr, and the model run around it.

:func:`lrpjax.explain_tokens` explains a model ``ids -> scores`` on the output of its embedding lookup.
Flax ``Embed`` and :func:`lrpjax.rules.embed_lookup` are intercepted while the model is traced; any
other lookup is found here. :func:`find_lookups` follows "depends on the ids" forward through the
model's jaxpr (into ``jit`` calls, ``remat`` and custom-derivative functions). A *lookup* is an equation
on the path to the outputs whose floating output is the first to depend on the ids:

* ``gather`` from a floating table that does not depend on the ids, indexed by values computed from the
  ids (``table[ids]``, ``jnp.take(table, ids, axis=0)``, Flax ``Embed``);
* ``dot_general`` of a one-hot (floats converted from comparisons of the ids, e.g.
  ``jax.nn.one_hot(ids, V)``, possibly reshaped or selected) with a floating table that does not
  depend on the ids (``one_hot(ids, V) @ table``).

Any other float computed from the ids (``ids * 0.1``, ``ids.astype(float)``) is not a lookup.

:func:`evaluate` then runs the jaxpr up to the lookup (capture: its output is the embedded input) or
with the lookup's output replaced by given embeddings (inject), binding every other equation as it is.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import jax.numpy as jnp
from jax.extend import core as jex_core
from jax.extend import source_info_util

from lrpjax._jaxpr import bind, is_float, open_jaxpr, scan_counts

INLINE = frozenset({"pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
                    "custom_vjp_call_jaxpr", "checkpoint", "remat", "remat2"})
"""Call primitives whose bodies are evaluated inline, so a lookup inside them can be replaced."""

# taint: unrelated to the ids / integers or booleans from the ids / a one-hot of them / any other float
# that depends on the ids (after a lookup, or a number made from the ids)
NONE, IDS, HOT, EMB = 0, 1, 2, 3
KEEPS_HOT = frozenset({"reshape", "broadcast_in_dim", "transpose", "squeeze", "expand_dims", "slice",
                       "concatenate", "select_n", "convert_element_type", "copy", "copy_p", "rev",
                       "dynamic_slice", "gather", "pad"})
"""Operations whose float output is still a one-hot when every float input is one (or a constant)."""


class Lookup(NamedTuple):
    """One lookup: ``path`` (equation indices from the top-level jaxpr down into inlined calls), the
    ``eqn`` itself, ``container``: the loop or other primitive it sits in (``None``: none), and
    ``live``: whether its output reaches the outputs."""

    path: tuple
    eqn: Any
    container: Optional[str]
    live: bool = True

    def describe(self) -> str:
        """e.g. ``gather at model.py:12 (Tok.__call__)``."""
        try:
            where = source_info_util.summarize(self.eqn.source_info)
        except Exception:  # pragma: no cover - best effort only
            where = "unknown location"
        inside = f" inside a `{self.container}`" if self.container else ""
        return f"`{self.eqn.primitive.name}` at {where}{inside}"


def _sub(eqn):
    """``(jaxpr, consts)`` of an inlined call's body."""
    p = eqn.params
    sub = next(p[k] for k in ("jaxpr", "call_jaxpr", "fun_jaxpr") if k in p)
    return open_jaxpr(sub), getattr(sub, "consts", ())


def _is_lookup(eqn, taint: list) -> bool:
    """``gather(table, idx)`` or ``dot_general`` of a one-hot and a table (see the module docstring)."""
    if not eqn.outvars or not is_float(eqn.outvars[0]):
        return False
    name, v = eqn.primitive.name, eqn.invars
    if name == "gather":
        return taint[0] == NONE and is_float(v[0]) and taint[1] == IDS
    if name == "dot_general":
        return sorted(taint) == [NONE, HOT] and all(is_float(u) for u in v)
    return False


def _derived(eqn, ins: list, out) -> int:
    """Taint of an output of an equation whose inputs depend on the ids only (no lookup yet)."""
    if not is_float(out):
        return IDS
    name, v = eqn.primitive.name, eqn.invars
    if name == "convert_element_type" and ins[0] == IDS:  # a comparison (bool) becomes a one-hot
        return HOT if getattr(v[0].aval, "dtype", None) == jnp.bool_ else EMB
    floats = [t for u, t in zip(v, ins) if is_float(u)]
    if name in KEEPS_HOT and all(t in (NONE, HOT) for t in floats):
        return HOT
    return EMB


def _live(jaxpr, live_out: Sequence[bool]) -> list:
    """Per equation, which of its outputs reach a live output of ``jaxpr``."""
    live = {v for v, keep in zip(jaxpr.outvars, live_out) if keep and isinstance(v, jex_core.Var)}
    per_eqn: list = [None] * len(jaxpr.eqns)
    for k in range(len(jaxpr.eqns) - 1, -1, -1):
        eqn = jaxpr.eqns[k]
        per_eqn[k] = [v in live for v in eqn.outvars]
        if any(per_eqn[k]):
            live.update(v for v in eqn.invars if isinstance(v, jex_core.Var))
    return per_eqn


def _nested(eqn, ins: list, found: list, path: tuple) -> list:
    """Taint through a loop, branch or other non-inlined body; its lookups are recorded (and refused)."""
    name, p = eqn.primitive.name, eqn.params
    bodies: list = []
    if name == "scan":
        n_consts, n_carry = scan_counts(p)
        bodies = [(open_jaxpr(p["jaxpr"]), ins, (n_consts, n_carry))]
    elif name == "while":
        cn, bn = p["cond_nconsts"], p["body_nconsts"]
        bodies = [(open_jaxpr(p["body_jaxpr"]), ins[cn:], (bn, len(ins) - cn - bn))]
    elif name == "cond":
        bodies = [(open_jaxpr(b), ins[1:], None) for b in p["branches"]]
    else:
        for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
            body = open_jaxpr(p[key]) if key in p else None
            if hasattr(body, "eqns") and len(body.invars) == len(ins):
                bodies = [(body, ins, None)]
    inner: list = []
    for body, body_ins, loop in bodies:
        body_ins = list(body_ins)
        while True:  # loops: until the carry's taint is stable
            scratch: list = []
            out = walk(body, body_ins, [True] * len(body.outvars), scratch, path, name)
            lo, n = loop or (0, 0)
            carry = [max(a, b) for a, b in zip(body_ins[lo:lo + n], out[:n])]
            if carry == body_ins[lo:lo + n]:
                break
            body_ins[lo:lo + n] = carry
        inner.extend(f for f in scratch if f.live)
    found.extend(Lookup(f.path, f.eqn, f.container or name) for f in inner)
    return [EMB if inner or is_float(v) or max(ins) == EMB else IDS for v in eqn.outvars]


def walk(jaxpr, taint_in: Sequence[int], live_out: Sequence[bool], found: list, path: tuple = (),
         container: Optional[str] = None) -> list:
    """Propagate the taint (:data:`NONE`, :data:`IDS`, :data:`HOT`, :data:`EMB`) through ``jaxpr``;
    append every lookup to ``found`` (in a loop or other body: live ones only). Returns the outputs'
    taint."""
    taint = dict(zip(jaxpr.invars, taint_in))
    get = lambda v: taint.get(v, NONE) if isinstance(v, jex_core.Var) else NONE
    live = _live(jaxpr, live_out)
    for k, eqn in enumerate(jaxpr.eqns):
        ins = [get(v) for v in eqn.invars]
        if max(ins, default=NONE) == NONE:
            outs = [NONE] * len(eqn.outvars)
        elif eqn.primitive.name in INLINE:
            outs = walk(_sub(eqn)[0], ins, live[k], found, path + (k,), container)
        elif max(ins) < EMB and _is_lookup(eqn, ins):
            found.append(Lookup(path + (k,), eqn, container, any(live[k])))
            outs = [EMB] * len(eqn.outvars)
        elif any(key in eqn.params for key in ("jaxpr", "body_jaxpr", "branches", "call_jaxpr")):
            outs = _nested(eqn, ins, found, path + (k,)) if any(live[k]) else [EMB] * len(
                eqn.outvars)
        elif max(ins) < EMB:
            outs = [_derived(eqn, ins, v) for v in eqn.outvars]
        else:
            outs = [EMB] * len(eqn.outvars)
        taint.update(zip(eqn.outvars, outs))
    return [get(v) for v in jaxpr.outvars]


def find_lookups(closed_jaxpr, n_ids: int = 1) -> list:
    """The lookups (:class:`Lookup`, dead ones included) of a jaxpr whose first ``n_ids`` inputs are
    the token ids.

    >>> import jax, jax.numpy as jnp
    >>> table = jnp.ones((5, 3))
    >>> closed = jax.make_jaxpr(lambda ids: (table[ids] * 2.0).sum())(jnp.array([1, 2]))
    >>> [f.eqn.primitive.name for f in find_lookups(closed)]
    ['gather']
    """
    jaxpr = open_jaxpr(closed_jaxpr)
    taint = [IDS] * n_ids + [NONE] * (len(jaxpr.invars) - n_ids)
    found: list = []
    walk(jaxpr, taint, [True] * len(jaxpr.outvars), found)
    return found


NEEDS = ("explain_tokens needs exactly one embedding lookup on the path to the score (a float table "
         "indexed by the integer ids: table[ids], jnp.take, one_hot(ids, V) @ table, Flax Embed)")
EXPLAIN_INSTEAD = "or pass the embedded input to lrpjax.explain"


def single_lookup(lookups: Sequence[Lookup]) -> Lookup:
    """The one live lookup of ``lookups``; a one-line ``ValueError`` saying what was found otherwise.

    >>> import jax, jax.numpy as jnp
    >>> table = jnp.ones((5, 3))
    >>> closed = jax.make_jaxpr(lambda ids: table[ids] + table[ids + 1])(jnp.array([1, 2]))
    >>> single_lookup(find_lookups(closed))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: explain_tokens needs exactly one embedding lookup ..., found 2: `gather` at ...
    """
    live = [f for f in lookups if f.live]
    if not live:
        raise ValueError(f"{NEEDS}, found none; give the ids to the lookup as integers, "
                         f"{EXPLAIN_INSTEAD}.")
    if len(live) > 1:
        raise ValueError(f"{NEEDS}, found {len(live)}: {'; '.join(f.describe() for f in live)}; "
                         f"look all tables up at once (e.g. jnp.concatenate([t1, t2], -1)[ids]), "
                         f"{EXPLAIN_INSTEAD}.")
    if live[0].container is not None:
        raise ValueError(f"{NEEDS} outside loops and branches, found {live[0].describe()}; look the "
                         f"ids up before the loop, {EXPLAIN_INSTEAD}.")
    return live[0]


def _needed(jaxpr, k: int) -> set:
    """Indices of the equations before ``k`` that equation ``k``'s inputs depend on."""
    need = {v for v in jaxpr.eqns[k].invars if isinstance(v, jex_core.Var)}
    keep = set()
    for j in range(k - 1, -1, -1):
        if any(v in need for v in jaxpr.eqns[j].outvars):
            keep.add(j)
            need.update(v for v in jaxpr.eqns[j].invars if isinstance(v, jex_core.Var))
    return keep


def _eval(jaxpr, consts, args, path: tuple, value):
    """``(True, lookup output)`` (capture, ``value is None``) or ``(False, outputs)`` (inject)."""
    env = dict(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    read = lambda v: v.val if isinstance(v, jex_core.Literal) else env[v]
    k_path = path[0]
    keep = _needed(jaxpr, k_path) if value is None else None
    for k, eqn in enumerate(jaxpr.eqns):
        if keep is not None and k < k_path and k not in keep:
            continue  # capture: only what the lookup needs
        invals = [read(v) for v in eqn.invars]
        if k == k_path and len(path) == 1:
            if value is None:
                return True, bind(eqn, *invals)[0]
            outs = [value]
        elif k == k_path:
            sub, sub_consts = _sub(eqn)
            done, outs = _eval(sub, sub_consts, invals, path[1:], value)
            if done:
                return True, outs
        else:
            outs = bind(eqn, *invals)
        env.update(zip(eqn.outvars, outs))
    return False, [read(v) for v in jaxpr.outvars]


def evaluate(closed_jaxpr, lookup: Lookup, args: Sequence, value=None):
    """``value=None``: the lookup's output for the inputs ``args``; otherwise the jaxpr's outputs
    (a list) with ``value`` in place of the lookup's output.

    >>> import jax, jax.numpy as jnp
    >>> table = jnp.arange(6.0).reshape(3, 2)
    >>> closed = jax.make_jaxpr(lambda ids: jnp.take(table, ids, axis=0).sum())(jnp.array([0, 2]))
    >>> [lk] = find_lookups(closed)
    >>> evaluate(closed, lk, [jnp.array([0, 2])]).tolist()
    [[0.0, 1.0], [4.0, 5.0]]
    >>> evaluate(closed, lk, [jnp.array([0, 2])], jnp.ones((2, 2)))[0].item()
    4.0
    """
    jaxpr = open_jaxpr(closed_jaxpr)
    consts = getattr(closed_jaxpr, "consts", ())
    if value is not None:
        want = tuple(lookup.eqn.outvars[0].aval.shape)
        if tuple(jnp.shape(value)) != want:
            raise ValueError(f"embeddings of shape {tuple(jnp.shape(value))} given for an embedding "
                             f"lookup whose output has shape {want}; pass arrays shaped like emb.")
    return _eval(jaxpr, consts, list(args), lookup.path, value)[1]
