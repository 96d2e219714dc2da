"""Explain unmodified Flax models: their layers are replaced by lrpjax's rules while being traced.

``lrpjax.relevance(lambda x: model.apply(params, x), x)`` works on a ``flax.linen`` model as it is:
while ``relevance`` traces the function, a linen method interceptor (``nn.intercept_methods``, scoped to
that trace and undone afterwards) computes each supported layer from the module's own parameters with
the LRP rules of :mod:`lrpjax.rules`. Forward values are unchanged (to float rounding), the module and
its params are never modified, and outside ``relevance`` nothing is intercepted.

Supported linen layers and their rules:

================================  ===============================================================
``LSTMCell``, ``OptimizedLSTMCell``  the LSTM rules (:func:`lrpjax.lstm`), custom ``gate_fn``/
                                     ``activation_fn`` pass relevance unchanged
``GRUCell``                          :func:`lrpjax.cells.gru_cell`
``MGUCell``                          :func:`lrpjax.cells.gru_cell` with one shared gate f (reset and
                                     update); ``reset_gate=False``: ``a_n`` fed by x and h, ``N = e+d``
``SimpleCell``                       epsilon rule over x, h (and h again for ``residual=True``,
                                     ``N = e+2d``), the activation passes relevance
``RNN``, ``Bidirectional``           Flax's own scan, reversal, ``seq_lengths`` and merge; the initial
                                     carry (default or given) becomes a reported initial state
``ConvLSTMCell``                     the LSTM rules, the gates' convolutions with the epsilon rule
                                     over each unit's receptive field (:func:`lrpjax.rules.conv`)
``Dense``                            epsilon rule (with or without bias)
``LayerNorm`` (last axis)            standard deviation held constant, then the epsilon rule of the
                                     resulting affine map (:func:`lrpjax.rules.layer_norm`)
``Embed``                            :func:`lrpjax.explain_tokens` explains integer token ids
``Dropout`` (deterministic)          identity (Flax returns the input unchanged)
================================  ===============================================================

Any other module runs as written inside a ``jax.named_scope`` naming its class and path, so strict
mode's error says which layer holds an operation without an LRP rule.

Layout: :mod:`.linen` (the method interceptor) and :mod:`.nnx` (the class patches) only read each
module's weights; :mod:`._cells` computes the layers from them with the rules. Flax itself is imported
only when the model uses it (this package's import does not pull it in).
"""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator, Optional

from lrpjax._checks import check_model_fn


@contextlib.contextmanager
def linen_rules() -> Iterator[None]:
    """Context: linen modules called while tracing under :func:`lrpjax.relevance` use LRP rules."""
    from lrpjax.flax_integration import linen
    with linen.linen_rules():
        yield


@contextlib.contextmanager
def nnx_rules(model_fn: Optional[Callable] = None, plain: bool = False) -> Iterator[None]:
    """Context: flax.nnx modules called while tracing under :func:`lrpjax.relevance` use LRP rules
    (the supported classes' ``__call__`` are swapped for the duration and restored afterwards).
    ``plain=True``: they are swapped even outside a rule context (see :func:`traceable`)."""
    from lrpjax.flax_integration import nnx
    with nnx.nnx_rules(model_fn, plain=plain):
        yield


@contextlib.contextmanager
def flax_rules(model_fn: Optional[Callable] = None) -> Iterator[None]:
    """Context: the Flax layers (linen and/or nnx, whichever is imported) that ``model_fn`` calls are
    computed with the LRP rules while it is traced. A scoped, reversible change; nothing happens if
    Flax is not in use."""
    if model_fn is not None:  # a linen module or `model.apply` without params: our one-line error
        check_model_fn(model_fn, "lrpjax")
    with contextlib.ExitStack() as stack:
        if "flax.linen" in sys.modules:  # the user's model may be a linen module
            stack.enter_context(linen_rules())
        if "flax.nnx" in sys.modules:  # ... or an nnx module
            stack.enter_context(nnx_rules(model_fn))
        yield


@contextlib.contextmanager
def traceable(model_fn: Optional[Callable] = None) -> Iterator[None]:
    """Context: the Flax nnx models that ``model_fn`` calls can be traced by plain ``jax.grad``,
    ``jax.vjp``, ``jax.jit`` (the baselines use it). The supported nnx classes compute themselves
    with lrpjax's layers, which outside :func:`lrpjax.relevance` are plain JAX: the same values and
    the plain gradient (``nnx.RNN`` as a ``lax.scan`` that leaves the module's RNG stream alone). Linen
    models need nothing; nothing happens if Flax is not in use.

    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> rnn = nnx.RNN(nnx.LSTMCell(3, 4, rngs=nnx.Rngs(0)))
    >>> with traceable(lambda x: rnn(x)):
    ...     g = jax.grad(lambda x: rnn(x).sum())(jnp.ones((2, 5, 3)))
    >>> g.shape
    (2, 5, 3)
    """
    if model_fn is not None:
        check_model_fn(model_fn, "lrpjax")
    with contextlib.ExitStack() as stack:
        if "flax.nnx" in sys.modules:
            stack.enter_context(nnx_rules(model_fn, plain=True))
        yield


__all__ = ["flax_rules", "linen_rules", "nnx_rules", "traceable"]
