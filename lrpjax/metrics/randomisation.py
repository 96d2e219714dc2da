"""Model-parameter randomisation test (MPRT): a sanity check of an attribution method.

Adebayo et al. (2018), "Sanity Checks for Saliency Maps" (NeurIPS): an explanation that does not
change when the model's weights are replaced by random ones does not explain the model. The weights
are randomised layer by layer, cascading from the output layer down ("top_down"), and after each layer
the explanation of the randomised model is compared with the original one. Low similarity is good.

:func:`mprt` follows Quantus 0.6.0's ``MPRT`` (names, defaults, what it returns) for any attribution
method written as ``explain_fn(params, x) -> (N, T)`` and any weight pytree (lrpjax's
:class:`~lrpjax.LSTMParams`, nested dicts, Flax ``params``); the layers are named by key paths.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lrpjax.metrics import arguments
from lrpjax.metrics.correlation import pearson, spearman
from lrpjax.metrics.ground_truth import normalised

LAYER_ORDERS = ("top_down", "bottom_up", "independent")
SIMILARITIES = {"spearman": spearman, "pearson": pearson}


def _entry_name(entry) -> str:
    """One step of a JAX key path as a string: a dict key, an attribute name or a sequence index."""
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _layer_groups(params, layers, fn: str):
    """``(leaves, treedef, [(name, [leaf index, ...]), ...])`` for the ``layers`` (key paths)."""
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise ValueError(f"{fn}: layers must be a list of key paths (top layer first), e.g. "
                         f"['out', 'lstm2', 'lstm1'], got {type(layers).__name__}.")
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    paths = [tuple(_entry_name(e) for e in path) for path, _ in with_paths]
    groups, owner = [], {}
    for layer in layers:
        if isinstance(layer, str):
            prefix = tuple(layer.split("/")) if layer else ()
        elif isinstance(layer, tuple) and layer:
            prefix = tuple(str(k) for k in layer)
        else:
            raise ValueError(f"{fn}: each layer must be a key path: a string 'a/b' or a non-empty tuple "
                             f"('a', 'b'), got {layer!r}.")
        name = "/".join(prefix)
        idx = [i for i, p in enumerate(paths) if p[:len(prefix)] == prefix]
        if not idx:
            top = sorted({p[0] for p in paths if p})
            raise ValueError(f"{fn}: layer {name!r} matches no weight of params (key paths start with "
                             f"{top[:12]}; nested keys are joined with '/').")
        if name == "original" or name in dict(groups):
            raise ValueError(f"{fn}: layer names must be unique and not 'original', got {name!r} twice "
                             f"or as a name.")
        shared = [i for i in idx if i in owner]
        if shared:
            raise ValueError(f"{fn}: layers must not overlap: {owner[shared[0]]!r} and {name!r} both "
                             f"contain {'/'.join(paths[shared[0]])!r}.")
        owner.update({i: name for i in idx})
        groups.append((name, idx))
    return [leaf for _, leaf in with_paths], treedef, groups


def _randomise_leaves(leaves, idx, key, randomise, fn: str) -> list:
    """``leaves`` with those at ``idx`` randomised, one key each (split from ``key``)."""
    out = list(leaves)
    for i, k in zip(idx, jax.random.split(key, len(idx))):
        w = leaves[i]
        if randomise == "permute":
            new = w if np.ndim(w) == 0 else jax.random.permutation(k, w, axis=0)
        else:
            new = randomise(k, w)
            if np.shape(new) != np.shape(w):
                raise ValueError(f"{fn}: randomise(key, w) must return an array of w's shape "
                                 f"{np.shape(w)}, got shape {np.shape(new)}.")
            new = jnp.asarray(new, dtype=jnp.result_type(w))
        out[i] = new
    return out


def _explanation(explain_fn, params, x, fn: str, like: Optional[np.ndarray] = None) -> np.ndarray:
    R = np.asarray(explain_fn(params, x))
    if R.ndim != 2 or not np.issubdtype(R.dtype, np.floating) or (like is not None and R.shape != like.shape):
        want = "(N, T)" if like is None else f"{like.shape} (as for the original params)"
        raise ValueError(f"{fn}: explain_fn(params, x) must return a floating array of shape {want}, "
                         f"one value per step, got shape {R.shape} with dtype {R.dtype}.")
    if not np.all(np.isfinite(R)):
        raise ValueError(f"{fn}: explain_fn(params, x) returned {int(R.size - np.isfinite(R).sum())} "
                         f"NaN/inf value(s).")
    return R.astype(np.float64)


def mprt(params, layers: Sequence, explain_fn: Callable, x, key, *, lengths=None,
         similarity="spearman", layer_order: str = "top_down", randomise="permute", abs: bool = True,
         normalise: bool = True, normalise_func=None) -> dict:
    """Model-parameter randomisation test (Adebayo et al. 2018; Quantus' ``MPRT``): the similarity of
    each sequence's explanation before and after randomising the model's layers, lower is better.

    The layers are randomised one after the other in ``layers`` order, each on top of the previous
    ones (``layer_order="top_down"``, Quantus' default: cascading from the output layer, so list
    ``layers`` top first); ``"bottom_up"`` cascades in reverse order; ``"independent"`` randomises
    each layer alone. After each layer, ``explain_fn`` explains ``x`` with the randomised weights
    and ``similarity`` compares it, per sequence over the valid steps, with the original explanation.
    Both explanations are prepared as Quantus does: normalised if ``normalise`` (divided by their
    largest ``|R|`` over the batch: does not change a correlation), then ``|.|`` if ``abs``.

    Randomisation: ``"permute"`` (default) shuffles each weight array of the layer along its first
    axis (Quantus' TensorFlow models do this); Quantus' PyTorch models instead re-draw the weights
    with the layer's own initialiser: pass ``randomise=lambda key, w: ...`` for that (it returns an
    array of ``w``'s shape, e.g. ``jax.random.uniform(key, w.shape, w.dtype, -s, s)``). Layer ``i``
    of ``layers`` is randomised with ``jax.random.fold_in(key, i)`` (split over its arrays), so the
    result is deterministic given ``key`` and a layer gets the same values in every ``layer_order``.

    Args:
      params: the weights, a pytree (dicts, NamedTuples such as :class:`~lrpjax.LSTMParams`, lists).
      layers: the layers to randomise, top (output) layer first: key paths into ``params``, each a
        string with ``/`` between nested keys (``"out"``, ``"lstm2/wx"``, ``"params/Dense_0"``) or a
        tuple of keys; a layer is every array under its path; layers must not overlap.
      explain_fn: ``(params, x) -> (N, T)`` one relevance per step for the ``N`` sequences (any
        method: :func:`lrpjax.relevance` of a model built from ``params``, gradients, ...; jit it,
        it is called ``len(layers) + 2`` times with params of the same shapes).
      x: passed to ``explain_fn`` unchanged; key: a JAX PRNG key.
      lengths: ``None`` or ``(N,)`` valid lengths in ``[0, T]``: only steps ``t < lengths[n]`` are
        compared (padding would make any two explanations look alike).
      similarity: ``"spearman"`` (default, as Quantus), ``"pearson"``, or ``(a, b) -> float`` on two
        1-D arrays. A constant explanation gives ``nan`` for the two correlations.
      abs, normalise, normalise_func: as Quantus' ``MPRT`` (defaults ``True``, ``True``, ``None``).
    Returns:
      ``{"original": (N,), layer name: (N,), ...}`` float64, in the order randomised (as Quantus):
      ``"original"`` compares two calls of ``explain_fn`` on the unchanged params (1 for a
      deterministic method); each layer's entry is the similarity after randomising it (and, when
      cascading, the layers before it).

    >>> import jax, jax.numpy as jnp, lrpjax
    >>> k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
    >>> params = {"lstm1": lrpjax.init_lstm(k1, 3, 4), "lstm2": lrpjax.init_lstm(k2, 4, 4),
    ...           "out": {"w": jax.random.normal(k3, (4, 2)), "b": jnp.zeros(2)}}
    >>> def model(p, x):                                   # x (N, T, 3) -> logits (N, 2)
    ...     _, (c, h) = lrpjax.lstm(p["lstm2"], lrpjax.lstm(p["lstm1"], x)[0])
    ...     return lrpjax.dense(h, p["out"]["w"], p["out"]["b"])
    >>> explain = jax.jit(lambda p, x: lrpjax.relevance(lambda v: model(p, v), x, 0).sum(-1))
    >>> x = jax.random.normal(k4, (2, 6, 3))
    >>> scores = lrpjax.metrics.mprt(params, ["out", "lstm2", "lstm1"], explain, x, jax.random.key(1))
    >>> list(scores), scores["original"]
    (['original', 'out', 'lstm2', 'lstm1'], array([1., 1.]))
    """
    fn = "mprt"
    if layer_order not in LAYER_ORDERS:
        raise ValueError(f"{fn}: layer_order must be one of {LAYER_ORDERS}, got {layer_order!r}.")
    sim = SIMILARITIES.get(similarity) if isinstance(similarity, str) else similarity
    if not callable(sim):
        raise ValueError(f"{fn}: similarity must be one of {tuple(SIMILARITIES)} or a callable (a, b) -> "
                         f"float, got {similarity!r}.")
    if not (randomise == "permute" or callable(randomise)):
        raise ValueError(f"{fn}: randomise must be 'permute' or a callable (key, w) -> array, got "
                         f"{randomise!r}.")
    leaves, treedef, groups = _layer_groups(params, layers, fn)
    R0 = _explanation(explain_fn, params, x, fn)
    N, T = R0.shape
    valid = arguments.valid_steps(lengths, N, T, fn)

    def prepared(R):                    # as Quantus: padding dropped, normalised, then |.|
        A = np.where(valid, R, 0.0)
        A = normalised(A, normalise_func, fn) if normalise else A
        return np.abs(A) if abs else A

    A0 = prepared(R0)

    def compare(R):
        B = prepared(R)
        return np.array([sim(A0[n, valid[n]], B[n, valid[n]]) for n in range(N)], dtype=np.float64)

    scores = {"original": compare(_explanation(explain_fn, params, x, fn, R0))}
    order = list(enumerate(groups))
    if layer_order == "bottom_up":
        order = order[::-1]
    current = leaves
    for i, (name, idx) in order:
        start = leaves if layer_order == "independent" else current
        current = _randomise_leaves(start, idx, jax.random.fold_in(key, i), randomise, fn)
        scores[name] = compare(_explanation(explain_fn, jax.tree_util.tree_unflatten(treedef, current), x,
                                            fn, R0))
    return scores
