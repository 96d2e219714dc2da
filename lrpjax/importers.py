"""Weight importers: trained LSTM/GRU weights from other frameworks onto lrpjax and Flax linen.

Everything here takes plain arrays (numpy arrays, or torch tensors, which are converted), so no other
framework has to be installed to import its weights.

============================  ==========================================================================
function                      source -> target
============================  ==========================================================================
:func:`torch_lstm`            PyTorch ``nn.LSTM`` state dict -> per-layer :class:`~lrpjax.LSTMParams`
:func:`torch_gru`             PyTorch ``nn.GRU`` state dict -> per-layer :class:`~lrpjax.GRUParams`
:func:`keras_lstm`            Keras ``LSTM`` weights (``layer.get_weights()``) -> ``LSTMParams``
:func:`keras_gru`             Keras ``GRU(reset_after=True)`` weights -> ``GRUParams``
:func:`arras_lstm`            one side of the Arras et al. (2017) reference BiLSTM -> ``LSTMParams``
:func:`from_arras_bilstm`     the whole reference BiLSTM classifier -> a model function
:func:`to_flax_lstm_cell`     ``LSTMParams`` -> linen ``LSTMCell`` / ``OptimizedLSTMCell`` param tree
:func:`to_flax_gru_cell`      ``GRUParams`` -> linen ``GRUCell`` param tree
:func:`from_flax_lstm_cell`   linen ``LSTMCell`` / ``OptimizedLSTMCell`` param tree -> ``LSTMParams``
:func:`from_flax_gru_cell`    linen ``GRUCell`` param tree -> ``GRUParams``
:func:`to_flax_rnn`           ``{"cell": ...}``, the tree of linen ``nn.RNN(cell)``
:func:`to_flax_bidirectional` ``{"forward_rnn": {"cell": ...}, "backward_rnn": {"cell": ...}}``
============================  ==========================================================================

All of them assume the frameworks' default activations (sigmoid gates, tanh cell input and output).
A PyTorch multi-layer state dict becomes a list that :func:`lrpjax.stacked_lstm` runs as is.
"""
from __future__ import annotations

import os
import re
from typing import Any, Callable, Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from lrpjax import rules
from lrpjax.cells import GRUParams, LSTMParams, bilstm, gru_params, lstm_params

__all__ = ["arras_lstm", "from_flax_gru_cell", "from_flax_lstm_cell", "keras_gru", "keras_lstm",
           "to_flax_bidirectional", "to_flax_gru_cell", "to_flax_lstm_cell", "to_flax_rnn",
           "torch_gru", "torch_lstm"]

FlaxTree = dict
"""A nested ``dict`` of arrays as Flax linen keeps parameters (``{"ii": {"kernel": ...}, ...}``)."""

LSTMLayer = Union[LSTMParams, tuple]
GRULayer = Union[GRUParams, tuple]


def _to_numpy(v: Any) -> np.ndarray:
    """A numpy array from a numpy/JAX array or a torch tensor (detached, moved to the CPU)."""
    if hasattr(v, "detach"):  # torch.Tensor, without importing torch
        v = v.detach().cpu()
        if str(getattr(v, "dtype", "")) == "torch.bfloat16":  # numpy has no bfloat16
            v = v.float()
    return np.asarray(v)


# ------------------------------------------------------------------------------------------------
# PyTorch

_TORCH_KEY = re.compile(r"(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?")


def _torch_layers(state_dict: Any, *, cell: str, gates: int, num_layers: Optional[int],
                  bidirectional: Optional[bool], prefix: str) -> tuple[list, bool]:
    """Check a PyTorch RNN state dict and return per-layer, per-direction ``(w_ih, w_hh, b_ih, b_hh)``."""
    if callable(getattr(state_dict, "state_dict", None)):  # an nn.Module itself
        state_dict = state_dict.state_dict()
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"expected a state dict (a mapping of names to arrays), got "
                        f"{type(state_dict).__name__}.")
    keys = {k[len(prefix):]: k for k in state_dict
            if isinstance(k, str) and k.startswith(prefix) and _TORCH_KEY.fullmatch(k[len(prefix):])}
    if not keys:
        found = sorted({k[:m.start()] for k in state_dict if isinstance(k, str)
                        for m in [_TORCH_KEY.search(k)] if m and m.end() == len(k)})
        hint = (f" Keys of an RNN were found under the prefix(es) {found}: pass prefix=..." if found
                else f" The state dict has the keys {sorted(map(str, state_dict))[:12]}.")
        raise ValueError(f"no nn.{cell} parameters (weight_ih_l0, weight_hh_l0, ...) found with "
                         f"prefix={prefix!r}.{hint}")
    proj = sorted(prefix + k for k in keys if "_hr_" in k)
    if proj:
        raise ValueError(f"the state dict has projection weights {proj}: nn.{cell} with proj_size > 0 "
                         f"(h = W_hr (o * tanh(c))) is not supported.")
    matches = {k: _TORCH_KEY.fullmatch(k) for k in keys}
    if num_layers is None:
        num_layers = 1 + max(int(m.group(3)) for m in matches.values())
    if bidirectional is None:
        bidirectional = any(m.group(4) for m in matches.values())
    has_bias = any(m.group(1) == "bias" for m in matches.values())
    dirs = ("", "_reverse") if bidirectional else ("",)
    names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if has_bias else ())
    expected = [[[f"{n}_l{k}{s}" for n in names] for s in dirs] for k in range(num_layers)]
    flat = {n for layer in expected for direction in layer for n in direction}
    missing = [prefix + n for n in sorted(flat) if n not in keys]
    unexpected = sorted(prefix + k for k in keys if k not in flat)
    if missing or unexpected:
        raise ValueError(
            f"state dict does not match nn.{cell}(num_layers={num_layers}, "
            f"bidirectional={bidirectional}, bias={has_bias}): "
            + "; ".join(s for s in (f"missing keys {missing}" if missing else "",
                                    f"unexpected keys {unexpected}" if unexpected else "") if s)
            + ". Leave num_layers/bidirectional as None to infer them from the keys.")
    arr = {n: _to_numpy(state_dict[prefix + n]) for n in flat}
    w_hh0 = arr["weight_hh_l0"]
    if w_hh0.ndim != 2 or w_hh0.shape[0] != gates * w_hh0.shape[1]:
        other = {3: "an nn.GRU", 4: "an nn.LSTM"}
        ratio = w_hh0.shape[0] / w_hh0.shape[1] if w_hh0.ndim == 2 and w_hh0.shape[1] else None
        hint = (f" (it looks like {other[int(ratio)]} state dict)"
                if ratio in other and int(ratio) != gates else "")
        raise ValueError(f"{prefix}weight_hh_l0 has shape {w_hh0.shape}, expected ({gates}*hidden, "
                         f"hidden) for nn.{cell}{hint}.")
    d = w_hh0.shape[1]
    e = arr["weight_ih_l0"].shape[1] if arr["weight_ih_l0"].ndim == 2 else None
    bad = []
    for k in range(num_layers):
        n_in = e if k == 0 else d * len(dirs)
        for s in dirs:
            want = {"weight_ih": (gates * d, n_in), "weight_hh": (gates * d, d),
                    "bias_ih": (gates * d,), "bias_hh": (gates * d,)}
            for n in names:
                got = arr[f"{n}_l{k}{s}"].shape
                if got != want[n]:
                    bad.append(f"{prefix}{n}_l{k}{s}: expected {want[n]}, got {got}")
    if bad:
        raise ValueError(f"shape mismatch for nn.{cell} with hidden_size={d}, input_size={e}, "
                         f"{len(dirs)} direction(s): " + "; ".join(bad) + ".")
    get = lambda name: arr.get(name)
    layers = [[tuple(get(f"{n}_l{k}{s}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
               for s in dirs] for k in range(num_layers)]
    return layers, bidirectional


def torch_lstm(state_dict: Mapping[str, Any], *, num_layers: Optional[int] = None,
               bidirectional: Optional[bool] = None, prefix: str = "") -> list[LSTMLayer]:
    """Per-layer :class:`~lrpjax.LSTMParams` from a PyTorch ``nn.LSTM`` state dict.

    Args:
      state_dict: ``lstm.state_dict()`` (or the module itself, or a whole model's state dict with
        ``prefix``): ``weight_ih_l{k}`` ``(4d, in_k)``, ``weight_hh_l{k}`` ``(4d, d)``, ``bias_ih_l{k}``,
        ``bias_hh_l{k}`` ``(4d,)`` (absent for ``bias=False``), ``..._reverse`` for the backward
        direction; rows in gate order i, f, g, o. Values: numpy arrays or torch tensors.
        ``in_0`` is the input size, ``in_k = d * directions`` above.
      num_layers, bidirectional: inferred from the keys when ``None``; when given they must match.
      prefix: key prefix of the LSTM inside a larger model, e.g. ``"encoder.lstm."``.
    Returns:
      one item per layer: ``LSTMParams`` (``wx (in_k, 4d)``, ``wh (d, 4d)``, ``b (4d,)`` = the sum
      of both biases), or a pair ``(forward, backward)`` when bidirectional; the list runs as is
      in :func:`lrpjax.stacked_lstm` (``batch_first`` inputs ``(B, T, e)``).
    Raises:
      ValueError: missing/unexpected keys, wrong shapes (expected vs. actual), or ``proj_size > 0``.

    >>> import numpy as np, lrpjax
    >>> from lrpjax.importers import torch_lstm
    >>> sd = {"weight_ih_l0": np.zeros((8, 3)), "weight_hh_l0": np.zeros((8, 2)),
    ...       "bias_ih_l0": np.zeros(8), "bias_hh_l0": np.zeros(8)}      # nn.LSTM(3, 2)
    >>> [p] = torch_lstm(sd)
    >>> p.wx.shape, p.wh.shape, p.b.shape
    ((3, 8), (2, 8), (8,))
    >>> hs, finals = lrpjax.stacked_lstm([p], np.ones((1, 5, 3)))
    >>> hs.shape
    (1, 5, 2)
    """
    layers, bi = _torch_layers(state_dict, cell="LSTM", gates=4, num_layers=num_layers,
                               bidirectional=bidirectional, prefix=prefix)
    build = lambda w: lstm_params(*w, gate_order="ifgo", layout="rows")
    return [tuple(build(w) for w in layer) if bi else build(layer[0]) for layer in layers]


def torch_gru(state_dict: Mapping[str, Any], *, num_layers: Optional[int] = None,
              bidirectional: Optional[bool] = None, prefix: str = "") -> list[GRULayer]:
    """Per-layer :class:`~lrpjax.GRUParams` from a PyTorch ``nn.GRU`` state dict.

    Keys and arguments as for :func:`torch_lstm`, with ``3d`` rows in the order r, z, n. PyTorch's
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``: ``b_hn`` (the n rows of ``bias_hh``) becomes
    ``GRUParams.bhn``; the r and z rows of both biases are summed into ``b``.

    Returns one ``GRUParams`` (``wx (in_k, 3d)``, ``wh (d, 3d)``, ``b (3d,)``, ``bhn (d,)``) per layer,
    or a ``(forward, backward)`` pair per layer when bidirectional (run the backward one with
    ``lrpjax.gru(..., reverse=True)``).

    >>> import numpy as np, lrpjax
    >>> from lrpjax.importers import torch_gru
    >>> sd = {"weight_ih_l0": np.zeros((6, 3)), "weight_hh_l0": np.zeros((6, 2))}  # nn.GRU(3, 2, bias=False)
    >>> [p] = torch_gru(sd)
    >>> p.wx.shape, p.bhn.shape
    ((3, 6), (2,))
    >>> lrpjax.gru(p, np.ones((5, 3)))[0].shape
    (5, 2)
    """
    layers, bi = _torch_layers(state_dict, cell="GRU", gates=3, num_layers=num_layers,
                               bidirectional=bidirectional, prefix=prefix)
    build = lambda w: gru_params(*w, gate_order="rzn", layout="rows")
    return [tuple(build(w) for w in layer) if bi else build(layer[0]) for layer in layers]


# ------------------------------------------------------------------------------------------------
# Keras

def _check_keras(kernel, recurrent_kernel, gates: int, cell: str) -> tuple[np.ndarray, np.ndarray, int]:
    k, rk = _to_numpy(kernel), _to_numpy(recurrent_kernel)
    if rk.ndim != 2 or rk.shape[1] != gates * rk.shape[0]:
        raise ValueError(f"Keras {cell} recurrent_kernel must have shape (units, {gates}*units), got "
                         f"{rk.shape}.")
    d = rk.shape[0]
    if k.ndim != 2 or k.shape[1] != gates * d:
        raise ValueError(f"Keras {cell} kernel must have shape (input_dim, {gates}*units) = "
                         f"(input_dim, {gates * d}), got {k.shape}.")
    return k, rk, d


def keras_lstm(kernel: Any, recurrent_kernel: Any, bias: Any = None) -> LSTMParams:
    """:class:`~lrpjax.LSTMParams` from a Keras ``LSTM`` layer (``keras_lstm(*layer.get_weights())``).

    Args:
      kernel: ``(in, 4d)``, columns in gate order i, f, c, o.
      recurrent_kernel: ``(d, 4d)``, same columns.
      bias: ``(4d,)``, or ``None`` for ``use_bias=False``.

    Keras' defaults (``activation="tanh"``, ``recurrent_activation="sigmoid"``) are assumed; the
    ``hard_sigmoid`` default of old Keras versions is a different cell.

    >>> import numpy as np
    >>> from lrpjax.importers import keras_lstm
    >>> p = keras_lstm(np.zeros((3, 8)), np.zeros((2, 8)), np.zeros(8))   # LSTM(2) on 3 features
    >>> p.wx.shape, p.wh.shape, p.b.shape
    ((3, 8), (2, 8), (8,))
    """
    k, rk, d = _check_keras(kernel, recurrent_kernel, 4, "LSTM")
    if bias is not None:
        bias = _to_numpy(bias)
        if bias.shape != (4 * d,):
            raise ValueError(f"Keras LSTM bias must have shape (4*units,) = ({4 * d},), got {bias.shape}.")
    return lstm_params(k, rk, bias, gate_order="ifco", layout="columns")


def keras_gru(kernel: Any, recurrent_kernel: Any, bias: Any = None, *,
              reset_after: bool = True) -> GRUParams:
    """:class:`~lrpjax.GRUParams` from a Keras ``GRU(reset_after=True)`` layer (Keras' default).

    Args:
      kernel: ``(in, 3d)``, columns in the order z, r, h (h is the candidate, lrpjax's n).
      recurrent_kernel: ``(d, 3d)``, same columns.
      bias: ``(2, 3d)``: row 0 the input bias, row 1 the recurrent bias (its h part lies inside the
        reset product: ``hh = tanh(x W_h + b_h + r * (h U_h + b'_h))``); ``None`` for ``use_bias=False``.
      reset_after: must be ``True``. ``reset_after=False`` (old Keras / TF1 cuDNN-incompatible GRU)
        applies the reset gate *before* the recurrent matmul, ``tanh(x W_h + (r * h) U_h + b_h)``:
        a different cell, which lrpjax does not implement; it raises ``ValueError``.

    Update: ``h' = z * h + (1 - z) * hh``, the same convention as PyTorch and Flax.

    >>> import numpy as np
    >>> from lrpjax.importers import keras_gru
    >>> p = keras_gru(np.zeros((3, 6)), np.zeros((2, 6)), np.zeros((2, 6)))   # GRU(2) on 3 features
    >>> p.wx.shape, p.b.shape, p.bhn.shape
    ((3, 6), (6,), (2,))
    """
    if not reset_after:
        raise ValueError("Keras GRU with reset_after=False is not supported: it applies the reset gate "
                         "before the recurrent matmul (hh = tanh(x W_h + (r * h) U_h + b_h)), a different "
                         "cell from lrpjax's GRU (PyTorch/Flax form, r * (h U_h + b'_h)). Retrain or "
                         "convert with reset_after=True, Keras' default.")
    k, rk, d = _check_keras(kernel, recurrent_kernel, 3, "GRU")
    b = b_h = None
    if bias is not None:
        bias = _to_numpy(bias)
        if bias.shape != (2, 3 * d):
            extra = (" (a (3*units,) bias belongs to reset_after=False, which is unsupported)"
                     if bias.shape == (3 * d,) else "")
            raise ValueError(f"Keras GRU(reset_after=True) bias must have shape (2, 3*units) = "
                             f"(2, {3 * d}) (input and recurrent bias), got {bias.shape}{extra}.")
        b, b_h = bias[0], bias[1]
    return gru_params(k, rk, b, b_h, gate_order="zrn", layout="columns")


# ------------------------------------------------------------------------------------------------
# Arras et al. (2017) reference

def arras_lstm(weights: Union[Mapping, str, os.PathLike], side: str) -> LSTMParams:
    """:class:`~lrpjax.LSTMParams` of one direction of the Arras et al. (2017) reference BiLSTM.

    Args:
      weights: the reference weight dict (or an ``.npz`` path), keys ``Wxh_{side}`` ``(4d, e)``,
        ``Whh_{side}`` ``(4d, d)``, ``bxh_{side}``, ``bhh_{side}`` ``(4d,)``; rows in gate order i, g, f, o.
      side: ``"Left"`` (reads the sequence forwards) or ``"Right"`` (backwards: run it with
        ``reverse=True``, or as the second half of :func:`lrpjax.bilstm`).

    >>> import numpy as np
    >>> from lrpjax.importers import arras_lstm
    >>> w = {"Wxh_Left": np.zeros((8, 3)), "Whh_Left": np.zeros((8, 2)),
    ...      "bxh_Left": np.zeros(8), "bhh_Left": np.zeros(8)}
    >>> arras_lstm(w, "Left").wx.shape
    (3, 8)
    """
    if side not in ("Left", "Right"):
        raise ValueError(f"side must be 'Left' or 'Right', got {side!r}.")
    if isinstance(weights, (str, os.PathLike)):
        with np.load(weights) as f:
            weights = {k: f[k] for k in f.files}
    names = [f"{n}_{side}" for n in ("Wxh", "Whh", "bxh", "bhh")]
    missing = [n for n in names if n not in weights]
    if missing:
        raise ValueError(f"weights lack the reference key(s) {missing}.")
    wxh, whh, bxh, bhh = (_to_numpy(weights[n]) for n in names)
    d = whh.shape[0] // 4 if whh.ndim == 2 else -1   # the gate rows fix the hidden size
    e = wxh.shape[1] if wxh.ndim == 2 else -1
    want = {names[0]: (4 * d, e), names[1]: (4 * d, d), names[2]: (4 * d,), names[3]: (4 * d,)}
    bad = [f"{n}: expected {want[n]}, got {a.shape}" for n, a in zip(names, (wxh, whh, bxh, bhh))
           if a.shape != want[n]]
    if bad:
        raise ValueError("shape mismatch in the reference weights: " + "; ".join(bad) + ".")
    return lstm_params(wxh, whh, bxh, bhh, gate_order="igfo", layout="rows")


ARRAS_KEYS = ("Wxh_Left", "Whh_Left", "bxh_Left", "bhh_Left", "Wxh_Right", "Whh_Right", "bxh_Right",
              "bhh_Right", "Why_Left", "Why_Right")


def load_arras_weights(weights: Union[Mapping, str, os.PathLike]) -> dict:
    """Read the reference's weight dict (a mapping, or an ``.npz`` path) into numpy arrays and check it.

    The weights are *read*, never shipped: the released model is a research fixture (see the data
    README)."""
    if isinstance(weights, (str, os.PathLike)):
        with np.load(weights) as f:
            weights = {k: f[k] for k in f.files}
    missing = [k for k in ARRAS_KEYS if k not in weights]
    if missing:
        raise ValueError(f"weights lack the reference key(s) {missing}; expected {list(ARRAS_KEYS)}.")
    w = {k: _to_numpy(weights[k]) for k in ARRAS_KEYS}
    for side in ("Left", "Right"):
        d = arras_lstm(w, side).wh.shape[0]   # checks the LSTM weights' shapes
        C = w["Why_Left"].shape[0] if w["Why_Left"].ndim == 2 else -1
        if w[f"Why_{side}"].shape != (C, d):
            raise ValueError(f"Why_{side} has shape {w[f'Why_{side}'].shape}, expected ({C}, {d}).")
    return w


def from_arras_bilstm(weights: Union[Mapping, str, os.PathLike]) -> Callable:
    """Model function of the Arras et al. (2017) reference bidirectional LSTM classifier.

    Args:
      weights: mapping or ``.npz`` path with the keys ``Wxh_Left, Whh_Left, bxh_Left, bhh_Left`` (and
        ``_Right``), ``Why_Left, Why_Right``: stacked gate rows in the order i, g, f, o, two biases,
        the left LSTM reads ``x`` forwards, the right one backwards, no output bias.
    Returns:
      ``model_fn(x, lengths=None)`` mapping embedded inputs ``(T, e)`` or ``(B, T, e)`` (optionally
      padded, with ``lengths (B,)``) to class scores ``(C,)`` / ``(B, C)``; parameters are cast to
      ``x``'s dtype.

    >>> import lrpjax, jax.numpy as jnp
    >>> model = lrpjax.importers.from_arras_bilstm("../shared/data/sst_bilstm_li2016/weights.npz")  # doctest: +SKIP
    >>> lrpjax.relevance(model, jnp.zeros((7, 60)) + 0.1, target=4).shape  # doctest: +SKIP
    (7, 60)
    """
    w = load_arras_weights(weights)
    pf, pb = arras_lstm(w, "Left"), arras_lstm(w, "Right")   # gate order i, g, f, o; two biases
    out_l, out_r = w["Why_Left"].T, w["Why_Right"].T

    def model_fn(x: jax.Array, lengths: Optional[jax.Array] = None) -> jax.Array:
        x = jnp.asarray(x)
        cast = lambda a: jnp.asarray(a, x.dtype)
        _, ((_, h_fwd), (_, h_bwd)) = bilstm(jax.tree.map(cast, pf), jax.tree.map(cast, pb), x,
                                             lengths=lengths)
        return rules.linear((h_fwd, h_bwd), (cast(out_l), cast(out_r)))

    return model_fn


# ------------------------------------------------------------------------------------------------
# Flax linen

_FLAX_LSTM_GATES = "ifgo"  # linen names: ii/hi, if/hf, ig/hg, io/ho


def to_flax_lstm_cell(p: LSTMParams) -> FlaxTree:
    """Param tree of a linen ``nn.LSTMCell`` / ``nn.OptimizedLSTMCell`` (identical trees) from ``p``.

    ``ii, if, ig, io``: ``{"kernel": (in, d)}`` (no bias); ``hi, hf, hg, ho``: ``{"kernel": (d, d),
    "bias": (d,)}``: the whole bias (lrpjax's ``b``, the sum of the sources' biases) goes to the h side.
    Only the ``standard`` variant (4 gate blocks) exists in Flax. Arrays keep ``p``'s dtype; build the
    cell with a matching ``param_dtype`` (e.g. ``jnp.float64``), since the initial carry takes it.

    >>> import jax, jax.numpy as jnp, flax.linen as nn, lrpjax
    >>> from lrpjax.importers import to_flax_lstm_cell, to_flax_rnn
    >>> p = lrpjax.init_lstm(jax.random.key(0), 3, 2)
    >>> sorted(to_flax_lstm_cell(p))
    ['hf', 'hg', 'hi', 'ho', 'if', 'ig', 'ii', 'io']
    >>> x = jnp.ones((1, 5, 3), jnp.float32)
    >>> y = nn.RNN(nn.LSTMCell(2)).apply({"params": to_flax_rnn(p)}, x)
    >>> bool(jnp.allclose(y, lrpjax.lstm(p, x)[0], atol=1e-6))
    True
    """
    d = p.wh.shape[0]
    if p.wx.ndim != 2 or p.wh.shape != (d, 4 * d) or p.wx.shape[1] != 4 * d or p.b.shape != (4 * d,):
        raise ValueError(f"Flax LSTMCell needs standard-variant LSTMParams (4 gate blocks): wx (in, {4 * d}), "
                         f"wh ({d}, {4 * d}), b ({4 * d},); got wx {p.wx.shape}, wh {p.wh.shape}, "
                         f"b {p.b.shape}.")
    tree = {}
    for k, q in enumerate(_FLAX_LSTM_GATES):
        s = slice(k * d, (k + 1) * d)
        tree["i" + q] = {"kernel": p.wx[:, s]}
        tree["h" + q] = {"kernel": p.wh[:, s], "bias": p.b[s]}
    return tree


def to_flax_gru_cell(p: GRUParams) -> FlaxTree:
    """Param tree of a linen ``nn.GRUCell`` from ``p``.

    ``ir, iz, in``: ``{"kernel": (in, d), "bias": (d,)}``; ``hr, hz``: ``{"kernel": (d, d)}``;
    ``hn``: ``{"kernel": (d, d), "bias": (d,)}`` (``b_hn``, inside the reset product).

    >>> import jax, jax.numpy as jnp, flax.linen as nn, lrpjax
    >>> from lrpjax.importers import to_flax_gru_cell, to_flax_rnn
    >>> p = lrpjax.init_gru(jax.random.key(0), 3, 2)
    >>> sorted(to_flax_gru_cell(p))
    ['hn', 'hr', 'hz', 'in', 'ir', 'iz']
    >>> x = jnp.ones((1, 5, 3), jnp.float32)
    >>> y = nn.RNN(nn.GRUCell(2)).apply({"params": to_flax_rnn(p)}, x)
    >>> bool(jnp.allclose(y, lrpjax.gru(p, x)[0], atol=1e-6))
    True
    """
    d = p.wh.shape[0]
    if (p.wx.ndim != 2 or p.wh.shape != (d, 3 * d) or p.wx.shape[1] != 3 * d or p.b.shape != (3 * d,)
            or p.bhn.shape != (d,)):
        raise ValueError(f"GRUParams must have wx (in, {3 * d}), wh ({d}, {3 * d}), b ({3 * d},), bhn "
                         f"({d},); got wx {p.wx.shape}, wh {p.wh.shape}, b {p.b.shape}, bhn {p.bhn.shape}.")
    blk = lambda a, k: a[..., k * d:(k + 1) * d]
    return {"ir": {"kernel": blk(p.wx, 0), "bias": blk(p.b, 0)},
            "iz": {"kernel": blk(p.wx, 1), "bias": blk(p.b, 1)},
            "in": {"kernel": blk(p.wx, 2), "bias": blk(p.b, 2)},
            "hr": {"kernel": blk(p.wh, 0)},
            "hz": {"kernel": blk(p.wh, 1)},
            "hn": {"kernel": blk(p.wh, 2), "bias": p.bhn}}


def _unwrap(tree: Mapping) -> Mapping:
    """Accept ``{"params": ...}`` and ``nn.RNN``'s ``{"cell": ...}`` around a cell's tree."""
    for key in ("params", "cell"):
        if isinstance(tree, Mapping) and set(tree) == {key}:
            tree = tree[key]
    return tree


def _flax_get(tree: Mapping, name: str, leaf: str, cell: str, shape: Optional[tuple] = None,
              required: bool = True):
    sub = tree.get(name)
    if not isinstance(sub, Mapping) or (required and leaf not in sub):
        raise ValueError(f"Flax {cell} param tree lacks {name}/{leaf}; it has {sorted(tree)} (expected "
                         f"the tree of the cell itself, or {{'cell': ...}} / {{'params': ...}} around it).")
    if leaf not in sub:
        return None
    a = _to_numpy(sub[leaf])
    if shape is not None and a.shape != shape:
        raise ValueError(f"Flax {cell} {name}/{leaf} has shape {a.shape}, expected {shape}.")
    return a


def from_flax_lstm_cell(tree: Mapping) -> LSTMParams:
    """:class:`~lrpjax.LSTMParams` from a linen ``nn.LSTMCell`` / ``nn.OptimizedLSTMCell`` param tree.

    The inverse of :func:`to_flax_lstm_cell`: reads ``ii, if, ig, io`` (kernel ``(in, d)``; a bias there
    is added too) and ``hi, hf, hg, ho`` (kernel ``(d, d)``, bias ``(d,)``). A surrounding
    ``{"params": ...}`` or ``{"cell": ...}`` (``nn.RNN``) is unwrapped.

    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> from lrpjax.importers import from_flax_lstm_cell
    >>> variables = nn.RNN(nn.LSTMCell(2)).init(jax.random.key(0), jnp.ones((1, 5, 3), jnp.float32))
    >>> p = from_flax_lstm_cell(variables["params"]["cell"])
    >>> p.wx.shape, p.wh.shape
    ((3, 8), (2, 8))
    """
    tree = _unwrap(tree)
    cell = "LSTMCell"
    hi = _flax_get(tree, "hi", "kernel", cell)
    d = hi.shape[-1]
    e = _flax_get(tree, "ii", "kernel", cell).shape[0]
    wx, wh, b = [], [], []
    for q in _FLAX_LSTM_GATES:
        wx.append(_flax_get(tree, "i" + q, "kernel", cell, (e, d)))
        wh.append(_flax_get(tree, "h" + q, "kernel", cell, (d, d)))
        bias = np.zeros((d,), wx[-1].dtype)
        for side in "ih":
            v = _flax_get(tree, side + q, "bias", cell, (d,), required=side == "h")
            bias = bias if v is None else bias + v
        b.append(bias)
    return lstm_params(np.concatenate(wx, 1), np.concatenate(wh, 1), np.concatenate(b),
                       gate_order="ifgo", layout="columns")


def from_flax_gru_cell(tree: Mapping) -> GRUParams:
    """:class:`~lrpjax.GRUParams` from a linen ``nn.GRUCell`` param tree (inverse of :func:`to_flax_gru_cell`).

    Reads ``ir, iz, in`` (kernel ``(in, d)`` + bias), ``hr, hz`` (kernel ``(d, d)``; a bias there is
    added to the gate bias) and ``hn`` (kernel + bias ``b_hn``). ``{"params"/"cell": ...}`` is unwrapped.

    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> from lrpjax.importers import from_flax_gru_cell
    >>> variables = nn.RNN(nn.GRUCell(2)).init(jax.random.key(0), jnp.ones((1, 5, 3), jnp.float32))
    >>> p = from_flax_gru_cell(variables)
    >>> p.wx.shape, p.bhn.shape
    ((3, 6), (2,))
    """
    tree = _unwrap(tree)
    cell = "GRUCell"
    hn = _flax_get(tree, "hn", "kernel", cell)
    d = hn.shape[-1]
    e = _flax_get(tree, "ir", "kernel", cell).shape[0]
    wx = [_flax_get(tree, "i" + q, "kernel", cell, (e, d)) for q in "rzn"]
    wh = [_flax_get(tree, "h" + q, "kernel", cell, (d, d)) for q in "rzn"]
    b = [_flax_get(tree, "i" + q, "bias", cell, (d,)) for q in "rzn"]
    zeros = np.zeros((d,), wx[0].dtype)
    bh = [_flax_get(tree, "h" + q, "bias", cell, (d,), required=q == "n") for q in "rzn"]
    bh = [zeros if v is None else v for v in bh]
    return gru_params(np.concatenate(wx, 1), np.concatenate(wh, 1), np.concatenate(b),
                      np.concatenate(bh), gate_order="rzn", layout="columns")


def _to_flax_cell(p: Union[LSTMParams, GRUParams]) -> FlaxTree:
    if isinstance(p, LSTMParams):
        return to_flax_lstm_cell(p)
    if isinstance(p, GRUParams):
        return to_flax_gru_cell(p)
    raise TypeError(f"expected LSTMParams or GRUParams, got {type(p).__name__}.")


def to_flax_rnn(p: Union[LSTMParams, GRUParams]) -> FlaxTree:
    """``{"cell": ...}``: the params of linen ``nn.RNN(nn.LSTMCell(d))`` (or ``OptimizedLSTMCell``) for
    :class:`~lrpjax.LSTMParams`, of ``nn.RNN(nn.GRUCell(d))`` for :class:`~lrpjax.GRUParams`.

    Apply with ``module.apply({"params": to_flax_rnn(p)}, x)``, ``x`` of shape ``(B, T, in)``.

    >>> import jax, lrpjax
    >>> from lrpjax.importers import to_flax_rnn
    >>> list(to_flax_rnn(lrpjax.init_gru(jax.random.key(0), 3, 2)))
    ['cell']
    """
    return {"cell": _to_flax_cell(p)}


def to_flax_bidirectional(p_fwd: Union[LSTMParams, GRUParams],
                          p_bwd: Union[LSTMParams, GRUParams]) -> FlaxTree:
    """``{"forward_rnn": {"cell": ...}, "backward_rnn": {"cell": ...}}``: the params of linen
    ``nn.Bidirectional(nn.RNN(cell), nn.RNN(cell))`` (default merge: concatenation, forward first, as
    :func:`lrpjax.bilstm`).

    >>> import jax, lrpjax
    >>> from lrpjax.importers import to_flax_bidirectional
    >>> p = lrpjax.init_lstm(jax.random.key(0), 3, 2)
    >>> sorted(to_flax_bidirectional(p, p))
    ['backward_rnn', 'forward_rnn']
    """
    return {"forward_rnn": to_flax_rnn(p_fwd), "backward_rnn": to_flax_rnn(p_bwd)}
