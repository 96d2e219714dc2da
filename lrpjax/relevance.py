"""``lrpjax.relevance`` and ``lrpjax.explain``: one reverse pass, seeded with the target's score.

Data flow: validate the options and ``x`` -> trace ``model_fn`` under the rule context (collects the
initial states, and the strict checker reads the trace) -> ``jax.vjp`` of the model with the rules
active -> seed the cotangent with the target's logit (other classes 0) -> the cotangent that comes back
at ``x`` is the relevance (see :mod:`lrpjax.rules`).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from lrpjax import rewrite, rules, strict as strict_mode
from lrpjax._checks import (DEFAULT_BIAS_FACTOR, DEFAULT_EPS, DEFAULT_GATE, check_scores, check_x,
                            resolve_target)
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


def _compute(model_fn: Callable, x: PyTree, target, eps, bias_factor, gate, strict):
    """Shared core: returns (relevance, scores, target, state_relevance)."""
    with full_precision():
        scores, backward = _forward(model_fn, x, rules.make_config(eps, bias_factor, gate), strict)
        t = resolve_target(target, scores)
        seed = jax.nn.one_hot(t, scores.shape[-1], dtype=scores.dtype) * scores
        R, R_states = backward(seed)
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
    needs_rewrite = strict_mode.check(closed, [True] * len(leaves), strict)

    def run(x, sinks):
        with _tracing(cfg, sinks, model_fn):
            return model_fn(x)

    sinks = tuple(jnp.zeros(shape, dtype) for shape, dtype in specs)
    if needs_rewrite:  # plain jnp operations on the relevance path: evaluate the jaxpr with rules
        closed_run = jax.make_jaxpr(run)(x, sinks)
        tainted = [True] * len(leaves) + [False] * len(sinks)  # initial states are leaves, not x

        def run(x, sinks):  # noqa: F811 - same function, with the operations rewritten
            with rules.rule_context(cfg, sinks):
                flat = jax.tree.leaves(x) + list(sinks)
                return rewrite.evaluate(closed_run, tainted, *flat)[0]

    scores, vjp = jax.vjp(run, x, sinks)
    return scores, vjp


def relevance(model_fn: Callable[[PyTree], Array], x: PyTree, target=None, *, eps: float = DEFAULT_EPS,
              bias_factor: float = DEFAULT_BIAS_FACTOR, gate: str = DEFAULT_GATE, strict: bool = True) -> PyTree:
    """LRP relevance of ``x`` for the ``target`` class score of ``model_fn(x)``.

    Args:
      model_fn: ``x -> scores``, logits of shape ``(C,)`` or ``(B, C)``, built from lrpjax's layers and
        rules (:func:`lrpjax.lstm`, :func:`lrpjax.dense`, ...) plus any reshaping/slicing/indexing.
      x: an array or pytree of floating arrays, e.g. ``(T, e)`` or ``(B, T, e)`` embedded sequences.
      target: ``None`` (the argmax class), an int, or an int array ``(B,)`` for batched scores.
        Relevance starts at the target's logit; other classes start at 0. May be traced under ``jit``.
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
    R, scores, t, R_states = _compute(model_fn, x, target, eps, bias_factor, gate, strict)
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


def explain_tokens(model_fn: Callable[[Array], Array], ids: Array, target=None, *,
                   eps: float = DEFAULT_EPS, bias_factor: float = DEFAULT_BIAS_FACTOR,
                   gate: str = DEFAULT_GATE, strict: bool = True) -> Explanation:
    """Explain a model that takes integer token ids and embeds them itself (Flax ``Embed`` or
    :func:`lrpjax.rules.embed_lookup`), e.g. ``lambda ids: model.apply(params, ids)``.

    The embedding lookup's output is explained as the input; ``relevance`` is its relevance summed
    over the embedding dimension: one value per token, shape of ``ids`` (``(T,)`` or ``(B, T)``).
    The model must contain exactly one embedding lookup.

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
    ids = jnp.asarray(ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ValueError(f"ids must be integer token ids, got dtype {ids.dtype}; for embedded "
                         f"(float) inputs use lrpjax.explain.")

    emb, on_embeddings = embedding_input(model_fn, ids)
    ex = explain(on_embeddings, emb, target, eps=eps, bias_factor=bias_factor, gate=gate,
                 strict=strict)
    return ex._replace(relevance=jnp.sum(ex.relevance, axis=-1))


def embedding_input(model_fn: Callable[[Array], Array], ids: Array) -> tuple[Array, Callable]:
    """Split a token model at its embedding lookup: returns ``(emb, on_embeddings)``.

    ``emb`` is the lookup's output ``(*ids.shape, E)`` and ``on_embeddings(e)`` runs ``model_fn(ids)``
    with ``e`` in place of the lookup's output, so any attribution method can explain a token model on
    its embeddings (:func:`explain_tokens` uses it; so do the job runner's baselines). The model must
    contain exactly one lookup (a Flax ``Embed`` or :func:`lrpjax.rules.embed_lookup`).

    >>> import jax.numpy as jnp, lrpjax
    >>> table = jnp.arange(12.0).reshape(4, 3)
    >>> model = lambda ids: lrpjax.rules.embed_lookup(table, ids).sum(-1)
    >>> emb, f = lrpjax.embedding_input(model, jnp.array([1, 2]))
    >>> emb.shape, f(jnp.zeros((2, 3))).tolist()
    ((2, 3), [0.0, 0.0])
    """
    def embedded(ids):  # jitted: XLA keeps only the lookup, the rest of the model is dead code
        captured: list = []
        with rules.token_mode("capture", captured), flax_rules(model_fn):
            model_fn(ids)
        if len(captured) != 1:
            raise ValueError(f"explain_tokens needs exactly one embedding lookup in the model (a Flax "
                             f"Embed or lrpjax.rules.embed_lookup), found {len(captured)}.")
        return captured[0]

    def on_embeddings(e):
        # Under relevance's rule context the Flax hooks are already active (entering them twice would
        # register the initial states twice); a plain caller (a baseline) needs them for the injection.
        hooks = flax_rules(model_fn) if rules.current() is None else contextlib.nullcontext()
        with rules.token_mode("inject", [e]), hooks:
            return model_fn(ids)

    return jax.jit(embedded)(ids), on_embeddings
