"""Word deletion (Arras et al. 2017, "Explaining Recurrent Neural Network Predictions in Sentiment
Analysis"): accuracy after deleting the most / least relevant words, in one jitted call."""
from __future__ import annotations

import numbers
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lrpjax.metrics import arguments

Array = jax.Array

ORDERS = ("most", "least")


def deletion_order(R_steps: Array, lengths: Array, order: str = "most") -> Array:
    """Rank of each step in the deletion order, ``(N, T)`` int32: 0 is deleted first.

    ``order="most"``: decreasing relevance (signed); ``"least"``: increasing. Only valid steps
    (``t < lengths[n]``) come before the padding; ties go to the earlier position. Jittable.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}.")
    T = R_steps.shape[-1]
    key = -R_steps if order == "most" else R_steps
    key = jnp.where(jnp.arange(T) < lengths[:, None], key, jnp.inf)
    perm = jnp.argsort(key, axis=-1, stable=True)          # perm[n, j] = step deleted j-th
    return jnp.argsort(perm, axis=-1).astype(jnp.int32)    # the inverse permutation


def _deletion_accuracies(model_fn, x_emb, lengths, labels, R_steps, fill, k_max: int, order: str):
    rank = deletion_order(R_steps, lengths, order)
    valid = jnp.arange(x_emb.shape[1]) < lengths[:, None]

    def accuracy(k):
        drop = (rank < k) & valid                           # the k first in order (all if k > length)
        logits = model_fn(jnp.where(drop[..., None], fill, x_emb), lengths)
        return jnp.argmax(logits, axis=-1) == labels

    return jax.lax.map(accuracy, jnp.arange(k_max + 1))      # (k_max + 1, N) per-sentence outcomes


_deletion_jit = jax.jit(_deletion_accuracies, static_argnums=(0, 6, 7))


def deletion_curve(model_fn: Callable[[Array, Array], Array], x_emb, lengths, labels, R_steps, *,
                   k_max: int = 5, order: str = "most", fill=0.0, per_sentence: bool = False) -> np.ndarray:
    """Accuracy of ``model_fn`` after deleting the ``k = 0..k_max`` most / least relevant words.

    Deleting a word sets its embedding to ``fill``. ``order="most"`` deletes the words with the
    highest (signed) relevance first: for correctly classified sentences and the relevance of the
    true class, the accuracy should drop fast. ``order="least"`` deletes the lowest-relevance words
    first: for misclassified sentences and the relevance of the true class, the share predicted as
    the label should rise. Both report ``mean(argmax model_fn(x_deleted, lengths) == labels)``; select
    the sentences (correct / misclassified) before calling. Only valid steps ``t < lengths[n]`` are
    deleted; a sentence with fewer than ``k`` words has all of them deleted. Ties in relevance go to
    the earlier position. ``lengths`` stay as given (the deleted words remain in the sequence as
    ``fill``, as in Arras et al. 2017).

    Args:
      model_fn: ``(x_emb (N, T, E), lengths (N,)) -> logits (N, C)``; must be jittable and hashable (a
        function; one compilation per model_fn, shapes, ``k_max`` and ``order``).
      x_emb: ``(N, T, E)`` floating embedded sentences (padded).
      lengths: ``(N,)`` integer lengths in ``[1, T]``.
      labels: ``(N,)`` integer labels.
      R_steps: ``(N, T)`` relevance per word (the padding's values are ignored).
      k_max: largest number of deleted words (int >= 0).
      order: ``"most"`` or ``"least"``.
      fill: number or ``(E,)`` array that replaces a deleted word's embedding.
      per_sentence: return the outcome of every sentence instead of the accuracy (for paired
        comparisons of methods on the same sentences).
    Returns:
      ``(k_max + 1,)`` float64 NumPy array; index ``k`` is the accuracy after ``k`` deletions (index 0:
      nothing deleted). With ``per_sentence=True``: ``(k_max + 1, N)`` bool, whether sentence ``n`` is
      classified as its label after ``k`` deletions.

    >>> import jax.numpy as jnp, numpy as np, lrpjax
    >>> model = lambda x, l: jnp.stack([x.sum((1, 2)), jnp.zeros(x.shape[0])], -1)  # class 0 iff sum > 0
    >>> x = jnp.array([[[3.0], [-1.0], [0.5]]])                                   # one sentence
    >>> R = np.array([[3.0, -1.0, 0.5]])
    >>> lrpjax.metrics.deletion_curve(model, x, jnp.array([3]), jnp.array([0]), R, k_max=2)
    array([1., 0., 0.])
    >>> lrpjax.metrics.deletion_curve(model, x, jnp.array([3]), jnp.array([0]), R, k_max=2, order="least")
    array([1., 1., 1.])
    """
    fn = "deletion_curve"
    if order not in ORDERS:
        raise ValueError(f"{fn}: order must be one of {ORDERS}, got {order!r}.")
    if isinstance(k_max, bool) or not isinstance(k_max, numbers.Integral) or k_max < 0:
        raise ValueError(f"{fn}: k_max must be an int >= 0, got {k_max!r}.")
    if not callable(model_fn):
        raise ValueError(f"{fn}: model_fn must be callable ((x_emb, lengths) -> logits), got "
                         f"{type(model_fn).__name__}.")
    x = jnp.asarray(x_emb)
    if x.ndim != 3 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{fn}: x_emb must be a floating array of shape (N, T, E), got shape "
                         f"{tuple(x.shape)} with dtype {x.dtype}.")
    N, T, E = x.shape
    if N == 0:
        raise ValueError(f"{fn}: x_emb must hold at least one sentence (N >= 1), got shape {tuple(x.shape)}.")
    R = arguments.steps(R_steps, fn)
    if R.shape != (N, T):
        raise ValueError(f"{fn}: R_steps must have shape (N, T) = {(N, T)} like x_emb, got {R.shape}.")
    L = arguments.row_vector(lengths, N, "lengths", fn, "integer")
    if L.size and (L.min() < 1 or L.max() > T):
        raise ValueError(f"{fn}: lengths must lie in [1, {T}], got values in [{L.min()}, {L.max()}].")
    y = arguments.row_vector(labels, N, "labels", fn, "integer")
    f = jnp.asarray(fill, x.dtype)
    if f.shape not in ((), (E,)):
        raise ValueError(f"{fn}: fill must be a number or an array of shape ({E},), got shape {f.shape}.")
    hits = _deletion_jit(model_fn, x, jnp.asarray(L), jnp.asarray(y), jnp.asarray(np.asarray(R_steps)),
                         f, int(k_max), order)
    hits = np.asarray(hits)
    return hits if per_sentence else hits.mean(axis=1, dtype=np.float64)
