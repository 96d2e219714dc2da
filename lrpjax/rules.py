"""LRP rules as ``jax.custom_vjp`` primitives: the LRP formulas live here and nowhere else.

The mechanism (one reverse pass computes relevance)
---------------------------------------------------
Inside :func:`lrpjax.relevance` a *rule context* is active. Under it, each rule below is a
``custom_vjp`` whose backward pass receives the **relevance** of its output as the cotangent and
returns the **relevance** of its inputs. The cotangent that reaches ``x`` is then the relevance
itself, so a single ``jax.vjp`` seeded with the target score computes LRP, and ``jit``/``vmap``/
sharding apply as to any gradient. Outside a rule context the same functions are plain,
differentiable JAX (``jax.grad`` of a model built from them is its ordinary gradient).

Rules (``s_j = +1 if z_j >= 0 else -1``, ``eps > 0``, ``0 <= bias_factor <= 1``):

* :func:`linear` -- epsilon rule for ``z_j = sum_k sum_i a_i^(k) W^(k)_ij + b_j`` over several incoming
  layers ``k``: ``R_i = sum_j (a_i W_ij + bias_factor * (b_j + eps*s_j) / N) / (z_j + eps*s_j) * R_j``,
  ``N`` = number of lower units over all incoming layers.
* :func:`accumulate` -- epsilon rule over summands ``z = t_1 + ... + t_K`` (a dense layer with identity
  weights, no bias, ``N = K * d``), e.g. the LSTM cell state ``c_t = f*c_{t-1} + i*g``.
* :func:`act` -- element-wise activation, relevance passes unchanged (identity rule).
* :func:`gated` -- gated product ``gate * signal`` with the rule chosen by ``gate=``:
  ``"all"`` (signal-take-all), ``"half"``, ``"prop"``, ``"abs"``.
* :func:`gate_preactivation` -- a gate's linear map: :func:`linear`, except under ``gate="all"`` where no
  relevance can ever reach a gate, so it is a :func:`no_relevance` computation and its backward matrix
  work is skipped entirely (a quarter of an LSTM's gradient work remains).
* :func:`no_relevance` -- a computation whose inputs receive no relevance (gates under ``"all"``,
  initial states), still differentiable for an outer ``jax.grad``.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Any, Callable, Iterator, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from lrpjax._checks import (DEFAULT_BIAS_FACTOR, DEFAULT_EPS, DEFAULT_GATE, GATE_RULES,
                            check_rule_options)
from lrpjax._epsilon import RULE_ATTRIBUTE, rule_name  # noqa: F401 - public here since 0.1
from lrpjax._epsilon import finite, mark_rule, messages, stabilised

Array = jax.Array


class RuleConfig(NamedTuple):
    """Options of the LRP rules (hashable: it parameterises the cached custom_vjp factories).

    eps: stabiliser of the epsilon rule (> 0).
    bias_factor: share of bias + stabiliser spread uniformly over the lower units (0 = the
      reference's default, 1 = exact global conservation).
    gate: rule for gated products, one of ``"all"`` (signal-take-all), ``"half"``, ``"prop"``, ``"abs"``.
    """

    eps: float = DEFAULT_EPS
    bias_factor: float = DEFAULT_BIAS_FACTOR
    gate: str = DEFAULT_GATE


def make_config(eps: float = DEFAULT_EPS, bias_factor: float = DEFAULT_BIAS_FACTOR,
                gate: str = DEFAULT_GATE) -> RuleConfig:
    """Validate rule options and return a :class:`RuleConfig`; raises ``ValueError`` naming the argument.

    The options are static Python numbers (they select the rules at trace time), not traced arrays.

    >>> make_config(eps=0.01, gate="half")
    RuleConfig(eps=0.01, bias_factor=0.0, gate='half')
    """
    return RuleConfig(*check_rule_options(eps, bias_factor, gate))


# ----------------------------------------------------------------------------------------------
# Rule context: which options are active, and the initial-state "sinks" that report the relevance
# reaching h_0 / c_0 (see relevance.py).

class _Context:
    def __init__(self, config: RuleConfig, sinks: Optional[Sequence[Array]]):
        self.config = config
        self.sinks = sinks           # None while collecting shapes; arrays while computing
        self.sink_specs: list = []   # (shape, dtype) of every initial state, in call order


_CONTEXT: contextvars.ContextVar[Optional[_Context]] = contextvars.ContextVar("lrpjax_context",
                                                                              default=None)
# Part of jax.jit's cache key: a model function the user jitted is re-traced under the rules instead of
# reusing a plain trace (and a plain call never reuses an LRP trace).
_JIT_KEY = jax.make_user_context(None)


@contextlib.contextmanager
def rule_context(config: RuleConfig, sinks: Optional[Sequence[Array]] = None) -> Iterator[_Context]:
    """Activate LRP rules while tracing a model (used by :func:`lrpjax.relevance`)."""
    ctx = _Context(config, sinks)
    token = _CONTEXT.set(ctx)
    try:
        with _JIT_KEY((config, sinks is None)):
            yield ctx
    finally:
        _CONTEXT.reset(token)


def current() -> Optional[RuleConfig]:
    """The active :class:`RuleConfig`, or ``None`` outside :func:`lrpjax.relevance` (plain mode)."""
    ctx = _CONTEXT.get()
    return None if ctx is None else ctx.config


def initial_state(value: Array) -> Array:
    """Mark ``value`` as an initial recurrent state whose relevance is reported, not dropped.

    In plain mode this is the identity. Under :func:`lrpjax.relevance` the state becomes a leaf: its
    forward value is unchanged, and the relevance that reaches it is returned in
    :attr:`lrpjax.Explanation.initial_state` (relevance does not flow on into whatever computed it).
    """
    ctx = _CONTEXT.get()
    if ctx is None:
        return value
    k = len(ctx.sink_specs)
    ctx.sink_specs.append((tuple(value.shape), value.dtype))
    value = no_relevance(lambda v: v, value)
    return value if ctx.sinks is None else ctx.sinks[k].astype(value.dtype) + value


# ----------------------------------------------------------------------------------------------
# The epsilon rule (its arithmetic is in lrpjax._epsilon) behind `linear` and `accumulate`.

def _matmul(a: Array, w: Optional[Array]) -> Array:
    """``a @ w``; ``w=None`` is the identity map (lower unit ``i`` feeds upper unit ``i`` only)."""
    return a if w is None else a @ w


def _affine(inputs, weights, bias):
    z = functools.reduce(jnp.add, [_matmul(a, w) for a, w in zip(inputs, weights)])
    return z if bias is None else z + bias


@functools.lru_cache(maxsize=None)
def _linear_rule(cfg: RuleConfig) -> Callable:
    def lrpjax_linear(inputs, weights, bias):
        return _affine(inputs, weights, bias)

    def fwd(inputs, weights, bias):
        z = _affine(inputs, weights, bias)
        return z, (inputs, weights, bias, z)

    @mark_rule("linear")
    def bwd(res, R):
        inputs, weights, bias, z = res
        n_lower = sum(a.shape[-1] for a in inputs)
        S, share = messages(z, R, bias, n_lower, cfg.eps, cfg.bias_factor)
        R_in = tuple(finite(a) * (S if w is None else S @ w.T) + share for a, w in zip(inputs, weights))
        return R_in, jax.tree.map(jnp.zeros_like, weights), jax.tree.map(jnp.zeros_like, bias)

    f = jax.custom_vjp(lrpjax_linear)
    f.defvjp(fwd, bwd)
    return f


def _as_tuple(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def linear(inputs: Array | Sequence[Array], weights: Optional[Array] | Sequence[Optional[Array]],
           bias: Optional[Array] = None) -> Array:
    """Linear map ``z = sum_k inputs[k] @ weights[k] + bias`` with the epsilon rule.

    Args:
      inputs: one array ``a`` of shape ``(..., n)`` or a sequence of them (several incoming layers,
        e.g. ``(x_t, h_prev)``), all with the same leading shape.
      weights: matching ``(n_k, m)`` matrices; ``None`` for an identity connection (``n_k = m``, e.g.
        a residual ``+ h`` or the product ``r * (W_hn h)`` inside a GRU's candidate).
      bias: ``(m,)`` or ``None``.
    Returns:
      ``z`` of shape ``(..., m)``. Under :func:`lrpjax.relevance` its backward is the epsilon rule with
      ``N = sum_k n_k``.

    >>> import jax.numpy as jnp, lrpjax
    >>> lrpjax.rules.linear(jnp.ones((2, 3)), jnp.ones((3, 4))).shape
    (2, 4)
    """
    inputs, weights = _as_tuple(inputs), _as_tuple(weights)
    if len(inputs) != len(weights):
        raise ValueError(f"linear: got {len(inputs)} inputs but {len(weights)} weight matrices.")
    for k, (a, w) in enumerate(zip(inputs, weights)):
        if w is not None and (w.ndim != 2 or a.shape[-1] != w.shape[0]):
            raise ValueError(f"linear: inputs[{k}] has shape {a.shape} but weights[{k}] has shape "
                             f"{w.shape}; expected weights[{k}] of shape ({a.shape[-1]}, m).")
    cfg = current()
    if cfg is None:
        return _affine(inputs, weights, bias)
    return _linear_rule(cfg)(inputs, weights, bias)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def no_relevance(fn: Callable, *args):
    """``fn(*args)`` computed with plain JAX, passing **no relevance** back to ``args``.

    Unlike ``stop_gradient`` the forward value stays differentiable for an *outer* ``jax.grad`` (e.g.
    the gradient of a relevance-based loss): only the relevance pass skips it, at no cost.
    """
    return fn(*args)


def _no_relevance_fwd(fn, *args):
    return fn(*args), args


@mark_rule("no_relevance")
def _no_relevance_bwd(fn, args, R):
    return jax.tree.map(jnp.zeros_like, args)


no_relevance.defvjp(_no_relevance_fwd, _no_relevance_bwd)


def gate_preactivation(inputs: Array | Sequence[Array], weights: Array | Sequence[Array],
                       bias: Optional[Array] = None) -> Array:
    """Pre-activation of gates: :func:`linear`, except under ``gate="all"``, where no relevance can
    ever reach a gate: then it is :func:`no_relevance` and costs no backward matrix work at all."""
    cfg = current()
    if cfg is not None and cfg.gate == "all":
        return no_relevance(_affine, _as_tuple(inputs), _as_tuple(weights), bias)
    return linear(inputs, weights, bias)


@functools.lru_cache(maxsize=None)
def _accumulate_rule(cfg: RuleConfig, n_terms: int) -> Callable:
    def lrpjax_accumulate(terms):
        return sum(terms)

    def fwd(terms):
        z = sum(terms)
        return z, (terms, z)

    @mark_rule("accumulate")
    def bwd(res, R):
        terms, z = res
        S, share = messages(z, R, None, n_terms * z.shape[-1], cfg.eps, cfg.bias_factor)
        return (tuple(t * S + share for t in terms),)

    f = jax.custom_vjp(lrpjax_accumulate)
    f.defvjp(fwd, bwd)
    return f


def accumulate(*terms: Array) -> Array:
    """Sum of same-shaped terms ``(..., d)`` with the epsilon rule over the summands.

    Treated as a dense layer from ``K*d`` lower units to ``d`` units with identity weights and no bias,
    ``N = K*d``: summand ``t_k`` gets ``t_k / (z + eps*s) * R`` plus, with ``bias_factor > 0``, an equal
    share of every unit's stabiliser term (the LSTM-LRP reference's convention).
    """
    if len({t.shape for t in terms}) != 1:
        raise ValueError(f"accumulate: all terms must have one shape, got {[t.shape for t in terms]}.")
    cfg = current()
    if cfg is None:
        return sum(terms)
    return _accumulate_rule(cfg, len(terms))(tuple(terms))


@functools.lru_cache(maxsize=None)
def _act_rule(fn: Callable) -> Callable:
    def lrpjax_act(z):
        return fn(z)

    def fwd(z):
        return fn(z), None

    @mark_rule("act")
    def bwd(_, R):
        return (R,)

    f = jax.custom_vjp(lrpjax_act)
    f.defvjp(fwd, bwd)
    return f


def act(fn: Callable[[Array], Array], z: Array) -> Array:
    """Element-wise activation ``fn(z)`` (tanh, sigmoid, ...) whose relevance passes unchanged."""
    if current() is None:
        return fn(z)
    return _act_rule(fn)(z)


@functools.lru_cache(maxsize=None)
def _elementwise_rule(dtype_pair: tuple) -> Callable:
    def lrpjax_elementwise(root, value):
        return value

    def fwd(root, value):
        return value, None

    @mark_rule("act")
    def bwd(_, R):
        return R.astype(dtype_pair[0]), jnp.zeros(R.shape, dtype_pair[1])

    f = jax.custom_vjp(lrpjax_elementwise)
    f.defvjp(fwd, bwd)
    return f


def elementwise(root: Array, value: Array) -> Array:
    """``value``, an element-wise function of ``root`` computed by plain JAX (``gelu(root)``,
    ``root * sigmoid(root)``, ...): the identity rule, relevance passes from ``value`` to ``root``
    unchanged and the intermediate values of the computation get none."""
    if current() is None:
        return value
    if root.shape != value.shape:
        raise ValueError(f"elementwise: root has shape {root.shape} but value {value.shape}.")
    return _elementwise_rule((root.dtype, value.dtype))(root, value)


@functools.lru_cache(maxsize=None)
def _softmax_rule(axes: tuple) -> Callable:
    def lrpjax_softmax(s, alpha):
        return alpha

    def fwd(s, alpha):
        return alpha, (s, alpha)

    @mark_rule("softmax")
    def bwd(res, R):
        s, alpha = res
        total = jnp.sum(R, axis=axes, keepdims=True)
        finite = jnp.isfinite(s)
        R_s = jnp.where(finite, jnp.where(finite, s, 0) * (R - alpha * total), 0)
        return R_s.astype(s.dtype), jnp.zeros_like(alpha)

    f = jax.custom_vjp(lrpjax_softmax)
    f.defvjp(fwd, bwd)
    return f


def softmax(s: Array, alpha: Array, axes: Sequence[int]) -> Array:
    """``alpha = softmax(s)`` over ``axes`` (``alpha`` computed by plain JAX) with the softmax rule
    of AttnLRP (Achtibat et al., 2024): ``R_s_i = s_i * (R_i - alpha_i * sum_j R_j)``; masked scores
    (``-inf``) get 0, never NaN. Under ``gate="all"`` no relevance reaches a softmax at all: attention
    weights are gates."""
    if current() is None:
        return alpha
    return _softmax_rule(tuple(sorted(k % s.ndim for k in _as_tuple(axes))))(s, alpha)


def _gate_split(rule: str, gate: Array, signal: Array, R: Array, eps: float) -> tuple[Array, Array]:
    """Relevance ``(R_gate, R_signal)`` of ``p = gate * signal`` under each gate rule."""
    if rule == "all":
        return jnp.zeros_like(R), R
    if rule == "half":
        return R / 2, R / 2
    if rule == "prop":
        u = stabilised(gate + signal, eps)
        return gate / u * R, signal / u * R
    if rule == "abs":
        ag, as_ = jnp.abs(gate), jnp.abs(signal)
        u = ag + as_ + eps
        return ag / u * R, as_ / u * R
    raise ValueError(f"gate must be one of {GATE_RULES}, got {rule!r}.")


@functools.lru_cache(maxsize=None)
def _gated_rule(cfg: RuleConfig) -> Callable:
    def lrpjax_gated(gate, signal):
        return gate * signal

    def fwd(gate, signal):
        return gate * signal, (gate, signal)

    @mark_rule("gated")
    def bwd(res, R):
        gate, signal = res
        return _gate_split(cfg.gate, gate, signal, R, cfg.eps)

    f = jax.custom_vjp(lrpjax_gated)
    f.defvjp(fwd, bwd)
    return f


def gated(gate: Array, signal: Array) -> Array:
    """Gated product ``gate * signal`` (same shapes); relevance split by the active gate rule."""
    cfg = current()
    if cfg is None:
        return gate * signal
    return _gated_rule(cfg)(gate, signal)


@functools.lru_cache(maxsize=None)
def _uniform_rule() -> Callable:
    def lrpjax_uniform(a, b):
        return a * b

    def fwd(a, b):
        return a * b, None

    @mark_rule("uniform")
    def bwd(_, R):
        return R / 2, R / 2

    f = jax.custom_vjp(lrpjax_uniform)
    f.defvjp(fwd, bwd)
    return f


def uniform_product(a: Array, b: Array) -> Array:
    """``a * b`` of two relevance paths that are both signals (the query and key of attention
    scores ``q . k``): the uniform rule of AttnLRP, each factor gets half of the product's relevance."""
    if current() is None:
        return a * b
    return _uniform_rule()(a, b)


# ----------------------------------------------------------------------------------------------
# Rules for plain JAX operations a user writes around the layers (applied by lrpjax.rewrite).

@functools.lru_cache(maxsize=None)
def _scale_rule(cfg: RuleConfig) -> Callable:
    def lrpjax_scale(a, c):
        return a * c

    def fwd(a, c):
        z = a * c
        return z, (z, c)

    @mark_rule("scale")
    def bwd(res, R):
        z, c = res
        S, share = messages(z[..., None], R[..., None], None, 1, cfg.eps, cfg.bias_factor)  # fan-in 1 per unit
        return (finite(z) * S[..., 0] + share[..., 0]).astype(R.dtype), jnp.zeros_like(c)

    f = jax.custom_vjp(lrpjax_scale)
    f.defvjp(fwd, bwd)
    return f


def scale(a: Array, c: Array) -> Array:
    """``a * c`` for a factor ``c`` that carries no relevance (a constant, a mask, ``-1``, ``1/T``):
    the epsilon rule of a unit with the single input ``a``, ``R_a = z/(z + eps*s) * R``."""
    cfg = current()
    if cfg is None:
        return a * c
    c = jnp.broadcast_to(jnp.asarray(c, a.dtype), jnp.broadcast_shapes(jnp.shape(a), jnp.shape(c)))
    return _scale_rule(cfg)(jnp.broadcast_to(a, c.shape), c)


@functools.lru_cache(maxsize=None)
def _sum_rule(cfg: RuleConfig, axes: tuple) -> Callable:
    def lrpjax_sum(a):
        return jnp.sum(a, axis=axes)

    def fwd(a):
        z = jnp.sum(a, axis=axes)
        return z, (a, z)

    @mark_rule("sum")
    def bwd(res, R):
        a, z = res
        S = R / stabilised(z, cfg.eps)
        R_a = finite(a) * jnp.expand_dims(S, axes)
        if cfg.bias_factor == 0.0:
            return (R_a,)
        # the stabiliser's share goes to the summands that are present: a masked or padded step
        # (an exact zero) gets exactly nothing, and conservation still holds with bias_factor=1
        present = (a != 0).astype(a.dtype)
        n = jnp.sum(present, axis=axes)
        share = cfg.bias_factor * (stabilised(z, cfg.eps) - z) * S / jnp.where(n > 0, n, 1)
        return (R_a + present * jnp.expand_dims(share, axes),)

    f = jax.custom_vjp(lrpjax_sum)
    f.defvjp(fwd, bwd)
    return f


def sum_over(a: Array, axes: Sequence[int]) -> Array:
    """``a.sum(axes)`` (sum / mean pooling, attention pooling) with the epsilon rule over each
    output's summands; with ``bias_factor > 0`` the stabiliser's share is spread over the summands
    that are non-zero (``N`` = their number), so masked or padded steps get exactly zero."""
    axes = tuple(sorted(k % a.ndim for k in _as_tuple(axes)))
    cfg = current()
    if cfg is None:
        return jnp.sum(a, axis=axes)
    return _sum_rule(cfg, axes)(a)


@functools.lru_cache(maxsize=None)
def _max_rule(axes: tuple) -> Callable:
    def lrpjax_max(a):
        return jnp.max(a, axis=axes)

    def fwd(a):
        z = jnp.max(a, axis=axes)
        return z, (a, z)

    @mark_rule("max")
    def bwd(res, R):
        a, z = res
        win = (a == jnp.expand_dims(z, axes)).astype(a.dtype)
        share = win / jnp.sum(win, axis=axes, keepdims=True)  # ties split evenly
        return (share * jnp.expand_dims(R, axes),)

    f = jax.custom_vjp(lrpjax_max)
    f.defvjp(fwd, bwd)
    return f


def max_over(a: Array, axes: Sequence[int]) -> Array:
    """``a.max(axes)`` (max pooling): winner-take-all, the relevance goes to the maximal entry."""
    axes = tuple(sorted(k % a.ndim for k in _as_tuple(axes)))
    if current() is None:
        return jnp.max(a, axis=axes)
    return _max_rule(axes)(a)


@functools.lru_cache(maxsize=None)
def _layer_norm_rule(cfg: RuleConfig, ln_eps: float, has_scale: bool, has_bias: bool) -> Callable:
    def forward(x, scale, bias):
        return _normalise(x, scale if has_scale else None, bias if has_bias else None, ln_eps)

    def lrpjax_layer_norm(x, scale, bias):
        return forward(x, scale, bias)[0]

    def fwd(x, scale, bias):
        y, sigma = forward(x, scale, bias)
        return y, (x, sigma, scale, bias, y)

    @mark_rule("layer_norm")
    def bwd(res, R):
        x, sigma, scale, bias, y = res
        g = scale if has_scale else jnp.ones_like(y)
        # with sigma held constant, y = x @ W + bias with W_ki = g_i / sigma * (delta_ki - 1/D)
        S, share = messages(y, R, bias if has_bias else None, y.shape[-1], cfg.eps, cfg.bias_factor)
        gS = g * S
        R_x = x / sigma * (gS - jnp.mean(gS, axis=-1, keepdims=True)) + share
        return R_x, jnp.zeros_like(scale), jnp.zeros_like(bias)

    f = jax.custom_vjp(lrpjax_layer_norm)
    f.defvjp(fwd, bwd)
    return f


def layer_norm(x: Array, scale: Optional[Array] = None, bias: Optional[Array] = None, *,
               epsilon: float = 1e-6) -> Array:
    """Layer normalisation over the last axis, ``(x - mean) / sqrt(var + epsilon) * scale + bias``.

    Rule: the standard deviation is held constant (as in conservative propagation for transformers),
    which makes the layer the affine map ``y = x W + bias`` with ``W_ki = scale_i / sigma *
    (delta_ki - 1/D)``; relevance then follows the epsilon rule with ``N = D``.
    """
    cfg = current()
    if cfg is None:
        return _normalise(x, scale, bias, epsilon)[0]
    s = jnp.zeros((), x.dtype) if scale is None else scale.astype(x.dtype)
    b = jnp.zeros((), x.dtype) if bias is None else bias.astype(x.dtype)
    return _layer_norm_rule(cfg, float(epsilon), scale is not None, bias is not None)(x, s, b)


def _normalise(x, scale, bias, epsilon):
    """Layer norm over the last axis; returns ``(y, sigma)``."""
    centred = x - jnp.mean(x, axis=-1, keepdims=True)
    sigma = jnp.sqrt(jnp.mean(jnp.square(centred), axis=-1, keepdims=True) + epsilon)
    y = centred / sigma
    y = y if scale is None else y * scale
    return (y if bias is None else y + bias), sigma


# ----------------------------------------------------------------------------------------------
# Embedding lookups: relevance per token (see lrpjax.explain_tokens).

class _Tokens:
    def __init__(self, mode: str, values: list):
        self.mode, self.values, self.k = mode, values, 0


_TOKENS: contextvars.ContextVar[Optional[_Tokens]] = contextvars.ContextVar("lrpjax_tokens",
                                                                            default=None)


@contextlib.contextmanager
def token_mode(mode: str, values: list) -> Iterator[None]:
    """``"capture"``: record every embedding lookup's output in ``values``; ``"inject"``: return
    ``values[k]`` from the k-th lookup instead (the embedded sequence being explained)."""
    token = _TOKENS.set(_Tokens(mode, values))
    try:
        with _JIT_KEY(("tokens", mode)):
            yield
    finally:
        _TOKENS.reset(token)


def token_mode_active() -> bool:
    return _TOKENS.get() is not None


def embed_lookup(table: Array, ids: Array, lookup: Optional[Callable] = None) -> Array:
    """``table[ids]``: an embedding lookup that :func:`lrpjax.explain_tokens` can explain per token.

    Use it (or Flax's ``Embed``, which lrpjax intercepts) so that integer token ids can be explained:
    the relevance of the looked-up vectors, summed over the embedding dimension, is the token's.
    """
    tok = _TOKENS.get()
    if tok is not None and tok.mode == "inject":
        out = tok.values[tok.k]
        tok.k += 1
        return out
    out = jnp.take(table, ids, axis=0) if lookup is None else lookup()
    if tok is not None:
        tok.values.append(out)
    return out


# ----------------------------------------------------------------------------------------------
# Convolutions (the gates of a ConvLSTM): the epsilon rule with each unit's own receptive field.

class ConvSpec(NamedTuple):
    """Static description of an N-d convolution ``(B, *spatial, C_in) -> (B, *spatial', C_out)``."""

    strides: tuple
    padding: Any
    dimension_numbers: tuple


def _conv(a: Array, k: Array, spec: ConvSpec) -> Array:
    return jax.lax.conv_general_dilated(a, k, spec.strides, spec.padding,
                                        dimension_numbers=spec.dimension_numbers)


def _conv_sum(inputs, kernels, bias, spec):
    z = functools.reduce(jnp.add, [_conv(a, k, spec) for a, k in zip(inputs, kernels)])
    return z if bias is None else z + bias


@functools.lru_cache(maxsize=None)
def _conv_rule(cfg: RuleConfig, spec: ConvSpec) -> Callable:
    def lrpjax_conv(inputs, kernels, bias):
        return _conv_sum(inputs, kernels, bias, spec)

    def fwd(inputs, kernels, bias):
        z = _conv_sum(inputs, kernels, bias, spec)
        return z, (inputs, kernels, bias, z)

    @mark_rule("conv")
    def bwd(res, R):
        inputs, kernels, bias, z = res
        zs = stabilised(z, cfg.eps)
        S = R / zs
        if cfg.bias_factor:
            # N_j: the real lower units in unit j's receptive field (padding excluded), all inputs
            fan_in = sum(_conv(jnp.ones_like(a), jnp.ones_like(k), spec)
                         for a, k in zip(inputs, kernels))
            absorbed = zs - z if bias is None else zs - z + bias
            per_unit = cfg.bias_factor * absorbed * S / fan_in
        R_in = []
        for a, k in zip(inputs, kernels):
            r = a * jax.vjp(lambda a_: _conv(a_, k, spec), a)[1](S)[0]
            if cfg.bias_factor:  # each unit's share goes to the lower units of its receptive field
                r = r + jax.vjp(lambda a_: _conv(a_, jnp.ones_like(k), spec), a)[1](per_unit)[0]
            R_in.append(r)
        return tuple(R_in), jax.tree.map(jnp.zeros_like, kernels), jax.tree.map(jnp.zeros_like, bias)

    f = jax.custom_vjp(lrpjax_conv)
    f.defvjp(fwd, bwd)
    return f


def conv(inputs: Sequence[Array], kernels: Sequence[Array], bias: Optional[Array],
         spec: ConvSpec) -> Array:
    """``sum_k conv(inputs[k], kernels[k]) + bias`` with the epsilon rule; ``N`` is a unit's fan-in
    (the real lower units of its receptive field over all inputs, padding excluded) and, with
    ``bias_factor > 0``, its bias and stabiliser share goes to exactly those units."""
    inputs, kernels = _as_tuple(inputs), _as_tuple(kernels)
    cfg = current()
    if cfg is None:
        return _conv_sum(inputs, kernels, bias, spec)
    return _conv_rule(cfg, spec)(inputs, kernels, bias)


def conv_gate_preactivation(inputs: Sequence[Array], kernels: Sequence[Array],
                            bias: Optional[Array], spec: ConvSpec) -> Array:
    """Gates of a ConvLSTM: :func:`conv`, except under ``gate="all"`` (no relevance reaches a gate),
    where it is :func:`no_relevance` -- the convolutional twin of :func:`gate_preactivation`."""
    inputs, kernels = _as_tuple(inputs), _as_tuple(kernels)
    cfg = current()
    if cfg is not None and cfg.gate == "all":
        return no_relevance(lambda a, k, b: _conv_sum(a, k, b, spec), inputs, kernels, bias)
    return conv(inputs, kernels, bias, spec)
