"""Interop with models trained elsewhere: the Arras et al. (2017) reference BiLSTM.

The weights are *read*, never shipped: the released model is a research fixture (see the data README).
"""
from __future__ import annotations

import os
from typing import Callable, Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from lrpjax import rules
from lrpjax.cells import bilstm, lstm_params

ARRAS_KEYS = ("Wxh_Left", "Whh_Left", "bxh_Left", "bhh_Left", "Wxh_Right", "Whh_Right", "bxh_Right",
              "bhh_Right", "Why_Left", "Why_Right")


def load_arras_weights(weights: Union[Mapping, str, os.PathLike]) -> dict:
    """Read the reference's weight dict (a mapping, or an ``.npz`` path) into numpy arrays and check it."""
    if isinstance(weights, (str, os.PathLike)):
        with np.load(weights) as f:
            weights = {k: f[k] for k in f.files}
    missing = [k for k in ARRAS_KEYS if k not in weights]
    if missing:
        raise ValueError(f"weights lack the reference key(s) {missing}; expected {list(ARRAS_KEYS)}.")
    w = {k: np.asarray(weights[k]) for k in ARRAS_KEYS}
    d4, e = w["Wxh_Left"].shape
    d, C = d4 // 4, w["Why_Left"].shape[0]
    expected = {"Wxh": (4 * d, e), "Whh": (4 * d, d), "bxh": (4 * d,), "bhh": (4 * d,)}
    for side in ("Left", "Right"):
        for k, shape in expected.items():
            if w[f"{k}_{side}"].shape != shape:
                raise ValueError(f"{k}_{side} has shape {w[f'{k}_{side}'].shape}, expected {shape}.")
        if w[f"Why_{side}"].shape != (C, d):
            raise ValueError(f"Why_{side} has shape {w[f'Why_{side}'].shape}, expected ({C}, {d}).")
    return w


def from_arras_bilstm(weights: Union[Mapping, str, os.PathLike]) -> Callable:
    """Model function of the reference bidirectional LSTM classifier.

    Args:
      weights: mapping or ``.npz`` path with the keys ``Wxh_Left, Whh_Left, bxh_Left, bhh_Left`` (and
        ``_Right``), ``Why_Left, Why_Right``: stacked gate rows in the order i, g, f, o, two biases,
        the left LSTM reads ``x`` forwards, the right one backwards, no output bias.
    Returns:
      ``model_fn(x, lengths=None)`` mapping embedded inputs ``(T, e)`` or ``(B, T, e)`` (optionally
      padded, with ``lengths (B,)``) to class scores ``(C,)`` / ``(B, C)``; parameters are cast to
      ``x``'s dtype.

    >>> import lrpjax, jax.numpy as jnp
    >>> model = lrpjax.interop.from_arras_bilstm("../shared/data/sst_bilstm_li2016/weights.npz")  # doctest: +SKIP
    >>> lrpjax.relevance(model, jnp.zeros((7, 60)) + 0.1, target=4).shape  # doctest: +SKIP
    (7, 60)
    """
    w = load_arras_weights(weights)
    side = lambda s: lstm_params(w[f"Wxh_{s}"], w[f"Whh_{s}"], w[f"bxh_{s}"], w[f"bhh_{s}"],
                                 gate_order="igfo", layout="rows")
    pf, pb = side("Left"), side("Right")
    out_l, out_r = w["Why_Left"].T, w["Why_Right"].T

    def model_fn(x: jax.Array, lengths: Optional[jax.Array] = None) -> jax.Array:
        x = jnp.asarray(x)
        cast = lambda a: jnp.asarray(a, x.dtype)
        _, ((_, h_fwd), (_, h_bwd)) = bilstm(jax.tree.map(cast, pf), jax.tree.map(cast, pb), x,
                                             lengths=lengths)
        return rules.linear((h_fwd, h_bwd), (cast(out_l), cast(out_r)))

    return model_fn
