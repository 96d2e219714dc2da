"""``lrpjax.relevance`` and ``lrpjax.explain``: one reverse pass, seeded with the target's score.

Data flow: validate the options and ``x`` -> trace ``model_fn`` under the rule context (collects the
initial states, and the strict checker reads the trace) -> ``jax.vjp`` of the model with the rules
active -> seed the cotangent with the target's logit (other classes 0) -> the cotangent that comes back
at ``x`` is the relevance (see :mod:`lrpjax.rules`).
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from lrpjax import rewrite, rules, strict as strict_mode
from lrpjax._rule_table import analyze
from lrpjax import _lookup
from lrpjax._checks import (DEFAULT_BIAS_FACTOR, DEFAULT_EPS, DEFAULT_GATE, batch_rows, check_model_fn,
                            check_scores, check_x, pick, resolve_target, target_seed, with_class_axis)
from lrpjax.flax_integration import flax_rules

Array = jax.Array
PyTree = Any


class Explanation(NamedTuple):
    """Everything :func:`explain` computes (a pytree: it can be returned from ``jit``/``vmap``).

    Shapes for scores ``(C,)`` / batched scores ``(B, C)``:

    relevance: the structure, shapes and dtypes of ``x``.
    scores: ``(C,)`` / ``(B, C)`` model outputs (logits).
    target: ``()`` / ``(B,)`` explained class.
    total: ``()`` / ``(B,)`` sum of input relevance.
    initial_state: ``()`` / ``(B,)`` relevance that reached the initial recurrent states (h_0, c_0).
    absorbed: ``()`` / ``(B,)`` relevance taken by biases and stabilisers:
      ``scores[target] - total - initial_state`` (0 up to rounding for ``bias_factor=1`` with a
      conservative gate rule).
    state_relevance: tuple with the full relevance of each initial state, in the order the model
      created them (e.g. ``c_0``, ``h_0`` of the forward, then of the backward direction).

    Scalar outputs (scores ``()`` / ``(B,)``) are reported as ``(1,)`` / ``(B, 1)`` with target 0.
    From :func:`explain_per_step`: scores ``(B, S, C)``; target, total, initial_state, absorbed
    ``(B, S)``; relevance and each state relevance ``(B, S, ...)``.
    """

    relevance: PyTree
    scores: Array
    target: Array
    total: Array
    initial_state: Array
    absorbed: Array
    state_relevance: tuple


@contextlib.contextmanager
def _tracing(cfg: rules.RuleConfig, sinks, model_fn=None):
    """Rules active while ``model_fn`` is traced."""
    with rules.rule_context(cfg, sinks) as ctx, flax_rules(model_fn):
        yield ctx


def full_precision():
    """Context in which float32 matrix products are computed in full float32 (``"highest"``), unless
    the user set ``jax_default_matmul_precision`` themselves.

    LRP divides by the forward pre-activations ``z + eps * sign(z)``. On NVIDIA GPUs (TF32) and TPUs
    (bfloat16 passes) the default float32 matmul keeps about 10 mantissa bits: ``z`` moves by ~1e-3
    relative, and the relevance of units whose inputs nearly cancel by far more (measured on an H100:
    up to 28 % of the largest relevance of a sentence, vs 3e-6 with full precision). The relevance
    pass therefore traces the model and the rules under this context; on CPU it changes nothing.
    """
    if jax.config.jax_default_matmul_precision is not None:
        return contextlib.nullcontext()
    return jax.default_matmul_precision("highest")


def _compute(model_fn: Callable, x: PyTree, target, eps, bias_factor, gate, strict,
             fn: str = "relevance"):
    """Shared core: returns (relevance, scores, target, state_relevance). Scalar outputs (``()``,
    or ``(B,)`` for a batched ``x``) get a class axis of size 1; an out-of-range traced target seeds
    its row with NaN."""
    check_model_fn(model_fn, fn)
    with full_precision():
        scores, backward = _forward(with_class_axis(model_fn), x,
                                    rules.make_config(eps, bias_factor, gate), strict)
        t = resolve_target(target, scores)
        R, R_states = backward(target_seed(scores, t))
    return R, scores, t, R_states


def _forward(model_fn: Callable, x: PyTree, cfg: rules.RuleConfig, strict: bool):
    """Trace ``model_fn`` under the rules and run it once: returns ``(scores, backward)`` where
    ``backward(seed)`` (seed shaped like the scores) is ``(relevance of x, relevance of each initial
    state)``. Call it inside :func:`full_precision`."""
    if not isinstance(strict, bool):
        raise ValueError(f"strict must be True or False, got {strict!r}.")
    if not callable(model_fn):
        raise ValueError(f"model_fn must be callable (x -> class scores), got {type(model_fn).__name__}.")
    leaves = check_x(x)

    specs: list = []

    def collect(x):
        with _tracing(cfg, None, model_fn) as ctx:
            out = model_fn(x)
        specs[:] = ctx.sink_specs
        return out

    closed, out_shape = jax.make_jaxpr(collect, return_shape=True)(x)
    check_scores(out_shape)
    traced = analyze(closed, [True] * len(leaves))
    strict_mode.check(traced, cfg.gate, strict)

    def run(x, sinks):
        with _tracing(cfg, sinks, model_fn):
            return model_fn(x)

    sinks = tuple(jnp.zeros(shape, dtype) for shape, dtype in specs)
    prog = None
    if traced.rewrites:
        # plain jnp operations on the relevance path: evaluate the model's program with rules
        closed_run = jax.make_jaxpr(run)(x, sinks)
        prog = analyze(closed_run, [True] * len(leaves) + [False] * len(sinks))
    if prog is None:
        scores, vjp = jax.vjp(run, x, sinks)
        return scores, vjp

    carries = tuple(jnp.zeros(prog.avals[prog.steps[k].ins[pos]].shape,
                              prog.avals[prog.steps[k].ins[pos]].dtype)
                    for k, pos in prog.carry_sinks)

    def run_program(x, sinks, carries):
        with rules.rule_context(cfg, sinks):
            return rewrite.evaluate(prog, jax.tree.leaves(x) + list(sinks), carries)[0]

    scores, vjp = jax.vjp(run_program, x, sinks, carries)

    def backward(seed):
        R, R_sinks, R_carries = vjp(seed)
        return R, tuple(R_sinks) + tuple(R_carries)
    return scores, backward


def relevance(model_fn: Callable[[PyTree], Array], x: PyTree, target=None, *, eps: float = DEFAULT_EPS,
              bias_factor: float = DEFAULT_BIAS_FACTOR, gate: str = DEFAULT_GATE, strict: bool = True) -> PyTree:
    """LRP relevance of ``x`` for the ``target`` class score of ``model_fn(x)``.

    Args:
      model_fn: ``x -> scores``, logits of shape ``(C,)`` or ``(B, C)``, built from lrpjax's layers and
        rules (:func:`lrpjax.lstm`, :func:`lrpjax.dense`, ...) plus any reshaping/slicing/indexing.
        Scalar outputs (regression, one binary logit): ``()``, or ``(B,)`` for a batched ``x`` (its
        first leaf has rank >= 3 and ``B`` rows) -- each row explained on its own, exactly as the
        ``(B, 1)`` model with target 0. Not a Flax module or ``model.apply`` itself: pass
        ``lambda x: model.apply(params, x)``.
      x: an array or pytree of floating arrays, e.g. ``(T, e)`` or ``(B, T, e)`` embedded sequences.
      target: ``None`` (the argmax class), an int, or an int array ``(B,)`` for batched scores.
        Relevance starts at the target's logit; other classes start at 0. May be traced under ``jit``:
        a traced target outside ``[0, C)`` makes that row's relevance NaN (a concrete one raises).
      eps: epsilon-rule stabiliser (> 0).
      bias_factor: in ``[0, 1]``; 0 = the reference's default (biases absorb relevance), 1 = biases
        and stabilisers spread their share over the lower units (exact conservation).
      gate: rule for gated products: ``"all"`` (signal-take-all, default), ``"half"``, ``"prop"``,
        ``"abs"``.
      strict: raise :class:`lrpjax.UnsupportedOperationError` if ``x`` reaches the score through an
        operation without an LRP rule; ``False`` uses its plain gradient and warns once.
    Returns:
      Relevance with exactly the structure, shapes and dtypes of ``x``.

    Works under ``jax.jit`` and ``jax.vmap``, in float32 and float64. Rows of a batch are independent.

    >>> import jax, jax.numpy as jnp, lrpjax
    >>> p = lrpjax.init_lstm(jax.random.key(0), 4, 8)
    >>> W = jax.random.normal(jax.random.key(1), (8, 3))
    >>> model = lambda x: lrpjax.dense(lrpjax.lstm(p, x)[1][1], W)
    >>> lrpjax.relevance(model, jnp.ones((6, 4))).shape
    (6, 4)
    """
    return _compute(model_fn, x, target, eps, bias_factor, gate, strict)[0]


def explain(model_fn: Callable[[PyTree], Array], x: PyTree, target=None, *, eps: float = DEFAULT_EPS,
            bias_factor: float = DEFAULT_BIAS_FACTOR, gate: str = DEFAULT_GATE, strict: bool = True) -> Explanation:
    """Like :func:`relevance`, with the conservation report (see :class:`Explanation`).

    For batched scores ``(B, C)`` every leaf of ``x`` and every initial state must have the leading
    batch axis ``B`` (so that totals can be reported per row).

    >>> import jax, jax.numpy as jnp, lrpjax
    >>> p = lrpjax.init_lstm(jax.random.key(0), 4, 8)
    >>> W = jax.random.normal(jax.random.key(1), (8, 3))
    >>> model = lambda x: lrpjax.dense(lrpjax.lstm(p, x)[1][1], W)
    >>> ex = lrpjax.explain(model, jnp.ones((2, 6, 4)), bias_factor=1.0)
    >>> bool(jnp.allclose(ex.total + ex.initial_state, ex.scores[jnp.arange(2), ex.target], atol=1e-4))
    True
    """
    R, scores, t, R_states = _compute(model_fn, x, target, eps, bias_factor, gate, strict, "explain")
    batched = scores.ndim == 2
    B = scores.shape[0] if batched else None

    def row_sum(a: Array, what: str) -> Array:
        if not batched:
            return jnp.sum(a)
        if a.ndim == 0 or a.shape[0] != B:
            raise ValueError(f"explain: {what} has shape {a.shape}, without the leading batch axis "
                             f"of size B={B} of the scores; cannot report totals per row.")
        return jnp.sum(a.reshape(B, -1), axis=1)

    zero = jnp.zeros(scores.shape[:-1], scores.dtype)
    total = sum((row_sum(a, "a leaf of x").astype(scores.dtype) for a in jax.tree.leaves(R)), zero)
    init = sum((row_sum(a, "an initial state").astype(scores.dtype) for a in R_states), zero)
    score_t = jnp.take_along_axis(scores, t[..., None], axis=-1)[..., 0]
    return Explanation(R, scores, t, total, init, score_t - total - init, tuple(R_states))


def _per_step_shape(out: Any, x: PyTree) -> tuple:
    """Per-step scores as ``(B, S, C)`` / ``(S, C)`` (``C = 1`` for one scalar per step)."""
    shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
    if shape is not None and jnp.issubdtype(dtype, jnp.floating) and 1 <= len(shape) <= 3:
        shape = tuple(shape)
        scalar = len(shape) == 1 or (len(shape) == 2 and batch_rows(x) == shape[0])
        return shape + (1,) if scalar else shape
    raise ValueError(f"relevance_per_step: model_fn(x) must return one floating array of per-step "
                     f"scores (B, S, C) or (S, C) (one scalar per step: (B, S) / (S,)); got shape "
                     f"{shape} with dtype {dtype}. For one output per sequence use lrpjax.relevance.")


def _flat_scores(model_fn: Callable, box: list, x: PyTree) -> Array:
    out = model_fn(x)
    box[:] = [_per_step_shape(out, x)]
    return out.reshape(-1)


def _rows_first(a: Array, B: int, what: str) -> Array:
    """``(S, B, ...)`` -> ``(B, S, ...)``; ``a`` must have the scores' batch axis."""
    if a.ndim < 2 or a.shape[1] != B:
        raise ValueError(f"relevance_per_step: {a.shape[1:]} is the shape of {what}, without the leading "
                         f"batch axis of size B={B} of the scores (B, S, C); give every leaf of x and "
                         f"every initial state the batch axis first.")
    return jnp.moveaxis(a, 0, 1)


def _compute_per_step(model_fn: Callable, x: PyTree, target, eps, bias_factor, gate, strict, fn: str):
    """One forward, then the backward vmapped over the ``S`` seeds (one per output step)."""
    check_model_fn(model_fn, fn)
    box: list = []
    with full_precision():
        flat, backward = _forward(functools.partial(_flat_scores, model_fn, box), x,
                                  rules.make_config(eps, bias_factor, gate), strict)
        scores = flat.reshape(box[0])
        t = resolve_target(target, scores)
        S = scores.shape[-2]
        own = jnp.eye(S, dtype=bool).reshape((S,) + (1,) * (scores.ndim - 2) + (S, 1))
        seeds = jnp.where(own, target_seed(scores, t)[None], 0).reshape(S, -1)   # seed s: step s only
        R, R_states = jax.vmap(backward)(seeds)
    if scores.ndim == 3:
        B = scores.shape[0]
        R = jax.tree.map(lambda a: _rows_first(a, B, "a leaf of x"), R)
        R_states = [_rows_first(a, B, "an initial state") for a in R_states]
    return R, scores, t, tuple(R_states)


def relevance_per_step(model_fn: Callable[[PyTree], Array], x: PyTree, target=None, *,
                       eps: float = DEFAULT_EPS, bias_factor: float = DEFAULT_BIAS_FACTOR,
                       gate: str = DEFAULT_GATE, strict: bool = True) -> PyTree:
    """LRP relevance of ``x`` for every output step of a model with per-step outputs (taggers,
    forecasters, return decomposition), in one vectorised call.

    Output step ``s`` is explained exactly as ``relevance(lambda v: model_fn(v)[:, s], x, target[:, s])``
    (unbatched: ``model_fn(v)[s]``), but the model runs forward once and the backward pass is
    ``vmap``-ed over the ``S`` seeds (no loop over ``s``).

    Args:
      model_fn: ``x -> scores`` of shape ``(B, S, C)`` (or ``(S, C)`` for one sequence); one scalar
        per step: ``(B, S)`` for a batched ``x`` (first leaf of rank >= 3 with ``B`` rows), ``(S,)``.
      x: an array or pytree of floating arrays; batched: every leaf has the leading axis ``B``.
      target: ``None`` (argmax per step), an int, or an int array ``(B, S)`` / ``(S,)``; may be traced
        (a traced out-of-range value makes that step's relevance NaN).
      eps, bias_factor, gate, strict: as :func:`relevance`.
    Returns:
      Per leaf of ``x``: ``(B, S, *leaf.shape[1:])`` (unbatched ``(S, *leaf.shape)``).

    Memory: the backward pass runs for ``S`` seeds at once (``S`` times a gradient's).

    >>> import jax, jax.numpy as jnp, lrpjax
    >>> p = lrpjax.init_lstm(jax.random.key(0), 4, 8)
    >>> W = jax.random.normal(jax.random.key(1), (8, 3))
    >>> tagger = lambda x: lrpjax.dense(lrpjax.lstm(p, x)[0], W)     # (B, T, 3): one label per step
    >>> lrpjax.relevance_per_step(tagger, jnp.ones((2, 6, 4))).shape
    (2, 6, 6, 4)
    """
    return _compute_per_step(model_fn, x, target, eps, bias_factor, gate, strict,
                             "relevance_per_step")[0]


def explain_per_step(model_fn: Callable[[PyTree], Array], x: PyTree, target=None, *,
                     eps: float = DEFAULT_EPS, bias_factor: float = DEFAULT_BIAS_FACTOR,
                     gate: str = DEFAULT_GATE, strict: bool = True) -> Explanation:
    """Like :func:`relevance_per_step`, with the conservation report per output step: an
    :class:`Explanation` whose ``scores`` are ``(B, S, C)`` (``C = 1`` for scalar steps), ``target``,
    ``total``, ``initial_state`` and ``absorbed`` ``(B, S)`` (unbatched ``(S,)``), ``relevance`` and
    each of ``state_relevance`` ``(B, S, ...)``.

    >>> import jax, jax.numpy as jnp, lrpjax
    >>> p = lrpjax.init_lstm(jax.random.key(0), 4, 8)
    >>> forecaster = lambda x: lrpjax.lstm(p, x)[0].sum(-1)             # (B, T): one value per step
    >>> ex = lrpjax.explain_per_step(forecaster, jnp.ones((2, 6, 4)), bias_factor=1.0)
    >>> ex.total.shape, bool(jnp.allclose(ex.total + ex.initial_state, ex.scores[..., 0], atol=1e-4))
    ((2, 6), True)
    """
    R, scores, t, R_states = _compute_per_step(model_fn, x, target, eps, bias_factor, gate, strict,
                                               "explain_per_step")
    lead = scores.ndim - 1                                  # (B, S) or (S,)
    step_sum = lambda a: jnp.sum(a.reshape(a.shape[:lead] + (-1,)), axis=-1).astype(scores.dtype)
    zero = jnp.zeros(scores.shape[:-1], scores.dtype)
    total = sum((step_sum(a) for a in jax.tree.leaves(R)), zero)
    init = sum((step_sum(a) for a in R_states), zero)
    return Explanation(R, scores, t, total, init, pick(scores, t) - total - init, R_states)


def explain_tokens(model_fn: Callable[[Array], Array], ids: Array, target=None, *,
                   eps: float = DEFAULT_EPS, bias_factor: float = DEFAULT_BIAS_FACTOR,
                   gate: str = DEFAULT_GATE, strict: bool = True) -> Explanation:
    """Explain a model that takes integer token ids and embeds them itself, e.g.
    ``lambda ids: model.apply(params, ids)``.

    The embedding lookup's output is explained as the input; ``relevance`` is its relevance summed
    over the embedding dimension: one value per token, shape of ``ids`` (``(T,)`` or ``(B, T)``).
    The model must contain exactly one lookup of a float table by the ids on the path to the score,
    outside loops: ``table[ids]`` (e.g. a ``self.param`` table), ``jnp.take(table, ids, axis=0)``,
    ``jax.nn.one_hot(ids, V) @ table``, Flax ``Embed`` / ``nnx.Embed`` or
    :func:`lrpjax.rules.embed_lookup` (see :func:`embedding_input`); zero or several raise a
    ``ValueError`` naming what was found.

    >>> import jax, jax.numpy as jnp, flax.linen as nn, lrpjax
    >>> class M(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, ids):
    ...         h = nn.RNN(nn.LSTMCell(8))(nn.Embed(100, 6)(ids))
    ...         return nn.Dense(2)(h[..., -1, :])
    >>> ids = jnp.array([[3, 14, 15, 9], [2, 6, 5, 3]])
    >>> v = M().init(jax.random.key(0), ids)
    >>> lrpjax.explain_tokens(lambda ids: M().apply(v, ids), ids).relevance.shape
    (2, 4)
    """
    emb, on_embeddings = embedding_input(model_fn, ids)
    ex = explain(on_embeddings, emb, target, eps=eps, bias_factor=bias_factor, gate=gate,
                 strict=strict)
    return ex._replace(relevance=jnp.sum(ex.relevance, axis=-1))


def embedding_input(model_fn: Callable[[Array], Array], ids: Array) -> tuple[Array, Callable]:
    """Split a token model at its embedding lookup: returns ``(emb, on_embeddings)``.

    ``emb`` is the lookup's output ``(*ids.shape, E)`` and ``on_embeddings(e)`` runs ``model_fn(ids)``
    with ``e`` in place of the lookup's output, so any attribution method can explain a token model on
    its embeddings (:func:`explain_tokens` uses it; so do the job runner's baselines).

    The lookup is found in the model's jaxpr (:mod:`lrpjax._lookup`): the first operation whose float
    output depends on the ids, a ``gather`` from a table that does not (``table[ids]``,
    ``jnp.take``) or a one-hot times such a table. Flax ``Embed`` and
    :func:`lrpjax.rules.embed_lookup` are replaced through Flax's interception; any other lookup by
    evaluating the model's jaxpr with the lookup's output replaced (traced under the active rule
    context, so that :func:`lrpjax.relevance` still computes the Flax layers with the rules).

    >>> import jax.numpy as jnp, lrpjax
    >>> table = jnp.arange(12.0).reshape(4, 3)
    >>> model = lambda ids: table[ids].sum(-1)
    >>> emb, f = lrpjax.embedding_input(model, jnp.array([1, 2]))
    >>> emb.tolist(), f(jnp.zeros((2, 3))).tolist()
    ([[3.0, 4.0, 5.0], [6.0, 7.0, 8.0]], [0.0, 0.0])
    """
    ids = jnp.asarray(ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ValueError(f"ids must be integer token ids, got dtype {ids.dtype}; for embedded "
                         f"(float) inputs use lrpjax.explain.")
    intercepted: list = []

    def traced(ids):  # Flax Embed / embed_lookup announce themselves; every lookup is in the jaxpr
        with rules.token_mode("capture", intercepted), flax_rules(model_fn):
            return model_fn(ids)

    closed, out_shape = jax.make_jaxpr(traced, return_shape=True)(ids)
    found = _lookup.find_lookups(closed)
    lookup = _lookup.single_lookup(found)
    emb = _lookup.evaluate(closed, lookup, [ids])
    if emb.shape[:-1] != ids.shape or emb.ndim != ids.ndim + 1:
        raise ValueError(f"the embedding lookup {lookup.describe()} gives shape {emb.shape}, not "
                         f"(*ids.shape, E) for ids of shape {ids.shape}; look up the ids as given "
                         f"(table[ids]), {_lookup.EXPLAIN_INSTEAD}.")
    if len(intercepted) == 1 and len(found) == 1:  # Flax Embed or embed_lookup: the same lookup

        def on_embeddings(e):
            # Under relevance's rule context the Flax hooks are already active (entering them twice
            # would register the initial states twice); a plain caller (a baseline) needs them.
            hooks = flax_rules(model_fn) if rules.current() is None else contextlib.nullcontext()
            with rules.token_mode("inject", [e]), hooks:
                return model_fn(ids)

        return emb, on_embeddings
    tree = jax.tree.structure(out_shape)

    def on_embeddings(e):  # noqa: F811 - any other lookup: evaluate the jaxpr with it replaced
        c, lk = closed, lookup
        if rules.current() is not None:  # traced again under the rules (initial states: once)
            c = jax.make_jaxpr(lambda i: model_fn(i))(ids)  # a fresh function: no cached trace
            lk = _lookup.single_lookup(_lookup.find_lookups(c))
        return jax.tree.unflatten(tree, _lookup.evaluate(c, lk, [ids], e))

    return emb, on_embeddings
