"""Weight importers (lrpjax.importers): PyTorch, Keras, Arras reference and Flax linen layouts.

PyTorch round trips need torch (the ``test`` extra) and skip with a reason without it; the numpy-only
checks run the same key parsing against independent numpy implementations of each framework's
documented equations, so the importers stay covered without torch. Keras is never imported.
"""
import doctest

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lrpjax
from lrpjax import importers
from lrpjax.importers import (arras_lstm, from_flax_gru_cell, from_flax_lstm_cell, keras_gru,
                              keras_lstm, to_flax_bidirectional, to_flax_gru_cell, to_flax_lstm_cell,
                              to_flax_rnn, torch_gru, torch_lstm)

TOL = 1e-10
F64 = jnp.float64
B, T, E, D = 3, 6, 4, 5


@pytest.fixture
def torch():
    torch = pytest.importorskip("torch", reason="PyTorch round trips need torch (pip install -e '.[test]')")
    torch.set_num_threads(1)
    return torch


def sig(v):
    return 1.0 / (1.0 + np.exp(-v))


# ------------------------------------------------------------------------------------------------
# independent numpy references of the frameworks' documented equations

def np_torch_lstm_dir(x, w_ih, w_hh, b_ih, b_hh, reverse=False):
    """PyTorch nn.LSTM, one direction: rows i, f, g, o; x (B, T, e) -> hs (B, T, d), (h, c)."""
    d = w_hh.shape[1]
    b = (0 if b_ih is None else b_ih) + (0 if b_hh is None else b_hh)
    h, c = np.zeros((x.shape[0], d)), np.zeros((x.shape[0], d))
    hs = np.zeros(x.shape[:2] + (d,))
    for t in (range(x.shape[1])[::-1] if reverse else range(x.shape[1])):
        a = x[:, t] @ w_ih.T + h @ w_hh.T + b
        i, f, g, o = np.split(a, 4, axis=-1)
        c = sig(f) * c + sig(i) * np.tanh(g)
        h = sig(o) * np.tanh(c)
        hs[:, t] = h
    return hs, (h, c)


def np_torch_gru_dir(x, w_ih, w_hh, b_ih, b_hh, reverse=False):
    """PyTorch nn.GRU, one direction: rows r, z, n; n = tanh(W_in x + b_in + r * (W_hn h + b_hn))."""
    d = w_hh.shape[1]
    b_ih = np.zeros(3 * d) if b_ih is None else b_ih
    b_hh = np.zeros(3 * d) if b_hh is None else b_hh
    h = np.zeros((x.shape[0], d))
    hs = np.zeros(x.shape[:2] + (d,))
    for t in (range(x.shape[1])[::-1] if reverse else range(x.shape[1])):
        xr, xz, xn = np.split(x[:, t] @ w_ih.T + b_ih, 3, axis=-1)
        hr, hz, hn = np.split(h @ w_hh.T + b_hh, 3, axis=-1)
        r, z = sig(xr + hr), sig(xz + hz)
        n = np.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        hs[:, t] = h
    return hs, h


def np_torch_stack(run_dir, sd, x, L, bi):
    """Stacked (bi)directional PyTorch RNN from a numpy state dict; returns outputs and final states."""
    finals = []
    for k in range(L):
        outs = []
        for s in ("", "_reverse") if bi else ("",):
            hs, fin = run_dir(x, sd[f"weight_ih_l{k}{s}"], sd[f"weight_hh_l{k}{s}"],
                              sd.get(f"bias_ih_l{k}{s}"), sd.get(f"bias_hh_l{k}{s}"), reverse=bool(s))
            outs.append(hs)
            finals.append(fin)
        x = np.concatenate(outs, axis=-1)
    return x, finals


def random_torch_sd(rng, cell, L, bi, bias, e=E, d=D):
    G = {"LSTM": 4, "GRU": 3}[cell]
    sd = {}
    for k in range(L):
        for s in ("", "_reverse") if bi else ("",):
            sd[f"weight_ih_l{k}{s}"] = rng.normal(0, 0.6, (G * d, e if k == 0 else d * (1 + bi)))
            sd[f"weight_hh_l{k}{s}"] = rng.normal(0, 0.6, (G * d, d))
            if bias:
                sd[f"bias_ih_l{k}{s}"] = rng.normal(0, 0.6, G * d)
                sd[f"bias_hh_l{k}{s}"] = rng.normal(0, 0.6, G * d)
    return sd


def np_keras_lstm(x, kernel, rk, bias):
    """Keras LSTM: columns i, f, c, o; x (T, e)."""
    d = rk.shape[0]
    h, c = np.zeros(d), np.zeros(d)
    hs = []
    for x_t in x:
        i, f, cc, o = np.split(x_t @ kernel + h @ rk + (0 if bias is None else bias), 4)
        c = sig(f) * c + sig(i) * np.tanh(cc)
        h = sig(o) * np.tanh(c)
        hs.append(h)
    return np.stack(hs), (h, c)


def np_keras_gru(x, kernel, rk, bias):
    """Keras GRU(reset_after=True): columns z, r, h; bias (2, 3d) = (input, recurrent)."""
    d = rk.shape[0]
    bias = np.zeros((2, 3 * d)) if bias is None else bias
    h = np.zeros(d)
    hs = []
    for x_t in x:
        xz, xr, xh = np.split(x_t @ kernel + bias[0], 3)
        rz, rr, rh = np.split(h @ rk + bias[1], 3)
        z, r = sig(xz + rz), sig(xr + rr)
        hh = np.tanh(xh + r * rh)
        h = z * h + (1 - z) * hh
        hs.append(h)
    return np.stack(hs), h


def lrpjax_gru_stack(layers, x, lengths=None):
    """Stacked (bi)directional GRU with lrpjax.gru; returns outputs and [h per direction]."""
    finals = []
    for layer in layers:
        if isinstance(layer, lrpjax.GRUParams):
            x, h = lrpjax.gru(layer, x, lengths=lengths)
            finals.append(h)
        else:
            hf, h_f = lrpjax.gru(layer[0], x, lengths=lengths)
            hb, h_b = lrpjax.gru(layer[1], x, lengths=lengths, reverse=True)
            x = jnp.concatenate([hf, hb], axis=-1)
            finals += [h_f, h_b]
    return x, finals


def flat_lstm_finals(finals):
    """lrpjax.stacked_lstm finals -> [(h, c) per layer and direction] (PyTorch's h_n/c_n order)."""
    out = []
    for fin in finals:
        for c, h in (fin if isinstance(fin[0], tuple) else (fin,)):
            out.append((h, c))
    return out


def flax_stack(cell_cls, layers, x, lengths=None):
    """Apply linen nn.RNN / nn.Bidirectional layer by layer with the converted params (float64)."""
    cell = lambda: cell_cls(D, param_dtype=F64)
    finals = []
    for layer in layers:
        if not isinstance(layer, (lrpjax.LSTMParams, lrpjax.GRUParams)):
            mod = nn.Bidirectional(nn.RNN(cell()), nn.RNN(cell()), return_carry=True)
            (cf, cb), x = mod.apply({"params": to_flax_bidirectional(*layer)}, x, seq_lengths=lengths)
            finals += [cf, cb]
        else:
            carry, x = nn.RNN(cell(), return_carry=True).apply({"params": to_flax_rnn(layer)}, x,
                                                                 seq_lengths=lengths)
            finals.append(carry)
    return x, finals


def close(a, b, tol=TOL):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=tol)


LSTM_CASES = [(1, False, True), (2, False, True), (2, True, True), (2, True, False)]
LSTM_CELLS = [nn.LSTMCell, nn.OptimizedLSTMCell]


# ------------------------------------------------------------------------------------------------
# PyTorch round trips (need torch)

def _torch_run(torch, module, x, lengths=None):
    with torch.no_grad():
        for p in module.parameters():      # away from the near-linear regime of the default init
            p.mul_(2.0)
        xt = torch.from_numpy(x)
        if lengths is None:
            return module(xt)
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.as_tensor(lengths),
                                                         batch_first=True, enforce_sorted=False)
        out, state = module(packed)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out, state


@pytest.mark.parametrize("L,bi,bias", LSTM_CASES)
@pytest.mark.parametrize("cell_cls", LSTM_CELLS, ids=lambda c: c.__name__)
def test_torch_lstm_matches_lrpjax_and_flax(torch, L, bi, bias, cell_cls):
    torch.manual_seed(0)
    m = torch.nn.LSTM(E, D, num_layers=L, bidirectional=bi, bias=bias, batch_first=True).double()
    x = np.random.default_rng(1).normal(size=(B, T, E))
    out, (h_n, c_n) = _torch_run(torch, m, x)
    layers = torch_lstm(m.state_dict())
    assert len(layers) == L and all(isinstance(p, lrpjax.LSTMParams) != bi for p in layers)
    jax.tree.map(close, torch_lstm(m), layers)  # the module itself is accepted too
    hs, finals = lrpjax.stacked_lstm(layers, x)
    close(hs, out)
    for j, (h, c) in enumerate(flat_lstm_finals(finals)):
        close(h, h_n[j])
        close(c, c_n[j])
    if bi and L == 1:
        hs_bi, _ = lrpjax.bilstm(*layers[0], x)
        close(hs_bi, out)
    y, fl = flax_stack(cell_cls, layers, x)
    close(y, out)
    for j, (c, h) in enumerate(fl):
        close(h, h_n[j])
        close(c, c_n[j])


@pytest.mark.parametrize("cell_cls", LSTM_CELLS, ids=lambda c: c.__name__)
def test_torch_bilstm_padded_batch(torch, cell_cls):
    """Packed sequences in torch = ``lengths`` in lrpjax = ``seq_lengths`` in flax (backward reads each
    sequence from its own last valid step)."""
    torch.manual_seed(3)
    m = torch.nn.LSTM(E, D, num_layers=2, bidirectional=True, batch_first=True).double()
    x = np.random.default_rng(4).normal(size=(B, T, E))
    lengths = np.array([T, 2, 4])
    out, (h_n, c_n) = _torch_run(torch, m, x, lengths)
    layers = torch_lstm(m.state_dict())
    hs, finals = lrpjax.stacked_lstm(layers, x, lengths=jnp.asarray(lengths))
    close(hs, out)
    for j, (h, c) in enumerate(flat_lstm_finals(finals)):
        close(h, h_n[j])
        close(c, c_n[j])
    y, fl = flax_stack(cell_cls, layers, x, lengths=jnp.asarray(lengths))
    valid = np.arange(T)[None, :] < lengths[:, None]
    close(np.asarray(y)[valid], out.numpy()[valid])
    for j, (c, h) in enumerate(fl):
        close(h, h_n[j])
        close(c, c_n[j])


@pytest.mark.parametrize("L,bi,bias", LSTM_CASES)
def test_torch_gru_matches_lrpjax_and_flax(torch, L, bi, bias):
    torch.manual_seed(0)
    m = torch.nn.GRU(E, D, num_layers=L, bidirectional=bi, bias=bias, batch_first=True).double()
    x = np.random.default_rng(2).normal(size=(B, T, E))
    out, h_n = _torch_run(torch, m, x)
    layers = torch_gru(m.state_dict())
    hs, finals = lrpjax_gru_stack(layers, x)
    close(hs, out)
    for j, h in enumerate(finals):
        close(h, h_n[j])
    y, fl = flax_stack(nn.GRUCell, layers, x)
    close(y, out)
    for j, h in enumerate(fl):
        close(h, h_n[j])


def test_torch_gru_padded_batch(torch):
    torch.manual_seed(5)
    m = torch.nn.GRU(E, D, num_layers=1, bidirectional=True, batch_first=True).double()
    x = np.random.default_rng(6).normal(size=(B, T, E))
    lengths = np.array([3, T, 1])
    out, h_n = _torch_run(torch, m, x, lengths)
    hs, finals = lrpjax_gru_stack(torch_gru(m.state_dict()), x, lengths=jnp.asarray(lengths))
    close(hs, out)
    for j, h in enumerate(finals):
        close(h, h_n[j])


def test_torch_model_prefix_and_tensors(torch):
    """A whole model's state dict: prefix selects the RNN; without it the error names the prefix."""
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, E)
            self.lstm = torch.nn.LSTM(E, D, batch_first=True)
            self.out = torch.nn.Linear(D, 2)

    net = Net().double()
    [p] = torch_lstm(net.state_dict(), prefix="lstm.")
    close(p.wx[:, :D], net.lstm.weight_ih_l0.detach().numpy()[:D].T)
    with pytest.raises(ValueError, match=r"prefix.*'lstm\.'"):
        torch_lstm(net.state_dict())


def test_torch_proj_size_rejected(torch):
    m = torch.nn.LSTM(E, D, proj_size=2, batch_first=True)
    with pytest.raises(ValueError, match=r"weight_hr_l0.*proj_size > 0"):
        torch_lstm(m.state_dict())


def test_torch_gru_state_dict_to_lstm_is_named(torch):
    m = torch.nn.GRU(E, D, batch_first=True)
    with pytest.raises(ValueError, match=r"weight_hh_l0 has shape \(15, 5\).*nn\.GRU"):
        torch_lstm(m.state_dict())


# ------------------------------------------------------------------------------------------------
# the same importers on numpy state dicts (no torch needed)

@pytest.mark.parametrize("L,bi,bias", LSTM_CASES + [(3, True, True)])
def test_torch_lstm_numpy_state_dict(L, bi, bias):
    rng = np.random.default_rng(L * 10 + bi * 2 + bias)
    sd = random_torch_sd(rng, "LSTM", L, bi, bias)
    x = rng.normal(size=(B, T, E))
    ref, ref_fin = np_torch_stack(np_torch_lstm_dir, sd, x, L, bi)
    hs, finals = lrpjax.stacked_lstm(torch_lstm(sd), x)
    close(hs, ref)
    for (h, c), (rh, rc) in zip(flat_lstm_finals(finals), ref_fin):
        close(h, rh)
        close(c, rc)


@pytest.mark.parametrize("L,bi,bias", LSTM_CASES)
def test_torch_gru_numpy_state_dict(L, bi, bias):
    rng = np.random.default_rng(100 + L * 10 + bi * 2 + bias)
    sd = random_torch_sd(rng, "GRU", L, bi, bias)
    x = rng.normal(size=(B, T, E))
    ref, ref_fin = np_torch_stack(np_torch_gru_dir, sd, x, L, bi)
    layers = torch_gru(sd)
    hs, finals = lrpjax_gru_stack(layers, x)
    close(hs, ref)
    for h, rh in zip(finals, ref_fin):
        close(h, rh)
    y, _ = flax_stack(nn.GRUCell, layers, x)
    close(y, ref)


def test_torch_explicit_layout_arguments():
    sd = random_torch_sd(np.random.default_rng(0), "LSTM", 2, True, True)
    assert len(torch_lstm(sd, num_layers=2, bidirectional=True)) == 2
    with pytest.raises(ValueError, match=r"missing keys .*weight_ih_l2"):
        torch_lstm(sd, num_layers=3)
    with pytest.raises(ValueError, match=r"unexpected keys .*weight_ih_l1"):
        torch_lstm(sd, num_layers=1)
    with pytest.raises(ValueError, match=r"unexpected keys .*weight_ih_l0_reverse"):
        torch_lstm(sd, bidirectional=False)


def test_torch_bad_state_dicts_name_keys_and_shapes():
    rng = np.random.default_rng(0)
    sd = random_torch_sd(rng, "LSTM", 2, False, True)
    bad = dict(sd)
    del bad["bias_hh_l1"]
    with pytest.raises(ValueError, match=r"missing keys \['bias_hh_l1'\]"):
        torch_lstm(bad)
    bad = dict(sd, weight_ih_l1=np.zeros((4 * D, D + 1)))
    with pytest.raises(ValueError, match=r"weight_ih_l1: expected \(20, 5\), got \(20, 6\)"):
        torch_lstm(bad)
    bad = dict(sd, bias_ih_l0=np.zeros(7))
    with pytest.raises(ValueError, match=r"bias_ih_l0: expected \(20,\), got \(7,\)"):
        torch_lstm(bad)
    with pytest.raises(ValueError, match=r"weight_hh_l0 has shape \(20, 5\).*3\*hidden.*nn\.LSTM"):
        torch_gru(sd)
    with pytest.raises(ValueError, match=r"no nn\.LSTM parameters .*prefix\(es\) \['rnn\.'\]"):
        torch_lstm({"rnn." + k: v for k, v in sd.items()})
    with pytest.raises(ValueError, match=r"weight_hr_l0.*proj_size > 0"):
        torch_lstm(dict(sd, weight_hr_l0=np.zeros((2, D))))
    with pytest.raises(ValueError, match="no nn.GRU parameters"):
        torch_gru({"fc.weight": np.zeros((2, 2))})
    with pytest.raises(TypeError):
        torch_lstm([np.zeros(3)])


# ------------------------------------------------------------------------------------------------
# Keras (no keras needed: its documented equations in numpy)

@pytest.mark.parametrize("use_bias", [True, False])
def test_keras_lstm(use_bias):
    rng = np.random.default_rng(7)
    k, rk = rng.normal(0, 0.6, (E, 4 * D)), rng.normal(0, 0.6, (D, 4 * D))
    b = rng.normal(0, 0.6, 4 * D) if use_bias else None
    x = rng.normal(size=(T, E))
    ref, (rh, rc) = np_keras_lstm(x, k, rk, b)
    hs, (c, h) = lrpjax.lstm(keras_lstm(k, rk, b), x)
    close(hs, ref)
    close(h, rh)
    close(c, rc)


@pytest.mark.parametrize("use_bias", [True, False])
def test_keras_gru(use_bias):
    rng = np.random.default_rng(8)
    k, rk = rng.normal(0, 0.6, (E, 3 * D)), rng.normal(0, 0.6, (D, 3 * D))
    b = rng.normal(0, 0.6, (2, 3 * D)) if use_bias else None
    x = rng.normal(size=(T, E))
    ref, rh = np_keras_gru(x, k, rk, b)
    p = keras_gru(k, rk, b)
    hs, h = lrpjax.gru(p, x)
    close(hs, ref)
    close(h, rh)
    y = nn.RNN(nn.GRUCell(D, param_dtype=F64)).apply({"params": to_flax_rnn(p)}, x[None])
    close(y[0], ref)


def test_keras_errors():
    rng = np.random.default_rng(0)
    k3, rk3 = rng.normal(size=(E, 3 * D)), rng.normal(size=(D, 3 * D))
    with pytest.raises(ValueError, match=r"reset_after=False is not supported.*before the recurrent"):
        keras_gru(k3, rk3, np.zeros(3 * D), reset_after=False)
    with pytest.raises(ValueError, match=r"\(2, 15\).*got \(15,\).*reset_after=False"):
        keras_gru(k3, rk3, np.zeros(3 * D))
    with pytest.raises(ValueError,
                       match=r"recurrent_kernel must have shape \(units, 4\*units\), got \(5, 15\)"):
        keras_lstm(k3, rk3)
    with pytest.raises(ValueError, match=r"kernel must have shape \(input_dim, 3\*units\) = "
                                         r"\(input_dim, 15\), got \(4, 14\)"):
        keras_gru(k3[:, :-1], rk3)
    with pytest.raises(ValueError, match=r"LSTM bias must have shape .*\(20,\), got \(19,\)"):
        keras_lstm(rng.normal(size=(E, 4 * D)), rng.normal(size=(D, 4 * D)), np.zeros(19))


# ------------------------------------------------------------------------------------------------
# Flax linen layouts and round trips

@pytest.mark.parametrize("cell_cls", LSTM_CELLS, ids=lambda c: c.__name__)
def test_flax_lstm_round_trip(cell_cls):
    x = jax.random.normal(jax.random.key(1), (B, T, E), F64)
    rnn = nn.RNN(cell_cls(D, param_dtype=F64), return_carry=True)
    params = rnn.init(jax.random.key(0), x)["params"]
    # non-zero h-side biases, so the bias placement is tested
    params = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(a.size), a.shape, F64),
                          params)
    p = from_flax_lstm_cell(params["cell"])
    assert jax.tree.map(jnp.shape, to_flax_lstm_cell(p)) == jax.tree.map(jnp.shape, params["cell"])
    jax.tree.map(close, to_flax_lstm_cell(p), params["cell"])
    close(from_flax_lstm_cell({"params": params}).wx, p.wx)   # wrappers are unwrapped
    (c, h), y = rnn.apply({"params": params}, x)
    hs, (c2, h2) = lrpjax.lstm(p, x)
    close(hs, y)
    close(h2, h)
    close(c2, c)


def test_flax_gru_round_trip():
    x = jax.random.normal(jax.random.key(1), (B, T, E), F64)
    rnn = nn.RNN(nn.GRUCell(D, param_dtype=F64), return_carry=True)
    params = rnn.init(jax.random.key(0), x)["params"]
    params = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(a.size), a.shape, F64),
                          params)
    p = from_flax_gru_cell(params)
    jax.tree.map(close, to_flax_gru_cell(p), params["cell"])
    h, y = rnn.apply({"params": params}, x)
    hs, h2 = lrpjax.gru(p, x)
    close(hs, y)
    close(h2, h)


def test_lrpjax_to_flax_to_lrpjax():
    p = lrpjax.init_lstm(jax.random.key(0), E, D, dtype=F64)
    jax.tree.map(close, from_flax_lstm_cell(to_flax_lstm_cell(p)), p)
    g = lrpjax.init_gru(jax.random.key(1), E, D, dtype=F64)
    jax.tree.map(close, from_flax_gru_cell(to_flax_gru_cell(g)), g)
    tree = to_flax_bidirectional(p, p)
    assert set(tree) == {"forward_rnn", "backward_rnn"} and set(tree["forward_rnn"]) == {"cell"}


def test_flax_errors():
    p = lrpjax.init_lstm(jax.random.key(0), E, D, dtype=F64)
    tree = to_flax_lstm_cell(p)
    bad = {k: v for k, v in tree.items() if k != "hg"}
    with pytest.raises(ValueError, match=r"lacks hg/kernel"):
        from_flax_lstm_cell(bad)
    bad = dict(tree, io={"kernel": np.zeros((E, D + 1))})
    with pytest.raises(ValueError, match=r"io/kernel has shape \(4, 6\), expected \(4, 5\)"):
        from_flax_lstm_cell(bad)
    bad = dict(tree, hf={"kernel": tree["hf"]["kernel"]})
    with pytest.raises(ValueError, match=r"lacks hf/bias"):
        from_flax_lstm_cell(bad)
    g = to_flax_gru_cell(lrpjax.init_gru(jax.random.key(1), E, D, dtype=F64))
    with pytest.raises(ValueError, match=r"lacks hn/bias"):
        from_flax_gru_cell(dict(g, hn={"kernel": g["hn"]["kernel"]}))
    with pytest.raises(ValueError, match=r"standard-variant"):
        to_flax_lstm_cell(lrpjax.init_lstm(jax.random.key(0), E, D, variant="no_forget"))
    with pytest.raises(TypeError):
        to_flax_rnn({"wx": 1})


# ------------------------------------------------------------------------------------------------
# Arras reference

def test_arras_lstm_synthetic():
    rng = np.random.default_rng(9)
    w = {}
    for s in ("Left", "Right"):
        w.update({f"Wxh_{s}": rng.normal(0, 0.6, (4 * D, E)), f"Whh_{s}": rng.normal(0, 0.6, (4 * D, D)),
                  f"bxh_{s}": rng.normal(0, 0.6, 4 * D), f"bhh_{s}": rng.normal(0, 0.6, 4 * D)})
    x = rng.normal(size=(T, E))
    for s, rev in (("Left", False), ("Right", True)):
        # reference gate rows i, g, f, o -> PyTorch rows i, f, g, o
        perm = np.concatenate([np.arange(D) + k * D for k in (0, 2, 1, 3)])
        ref, _ = np_torch_lstm_dir(x[None], w[f"Wxh_{s}"][perm], w[f"Whh_{s}"][perm],
                                   w[f"bxh_{s}"][perm], w[f"bhh_{s}"][perm], reverse=rev)
        hs, _ = lrpjax.lstm(arras_lstm(w, s), x, reverse=rev)
        close(hs, ref[0])
    with pytest.raises(ValueError, match="side must be"):
        arras_lstm(w, "left")
    with pytest.raises(ValueError, match=r"lack .*bhh_Left"):
        arras_lstm({k: v for k, v in w.items() if k != "bhh_Left"}, "Left")
    with pytest.raises(ValueError, match=r"Whh_Left: expected \(20, 5\), got \(20, 4\)"):
        arras_lstm(dict(w, Whh_Left=np.zeros((4 * D, 4))), "Left")


def test_arras_lstm_matches_interop(arras_weights):
    model = lrpjax.interop.from_arras_bilstm(arras_weights)
    pf, pb = arras_lstm(arras_weights, "Left"), arras_lstm(arras_weights, "Right")
    x = np.random.default_rng(0).normal(size=(7, pf.wx.shape[0]))
    _, ((_, hf), (_, hb)) = lrpjax.bilstm(pf, pb, x)
    scores = hf @ arras_weights["Why_Left"].T + hb @ arras_weights["Why_Right"].T
    close(scores, model(x))


# ------------------------------------------------------------------------------------------------

def test_docstring_examples_run():
    res = doctest.testmod(importers, optionflags=doctest.ELLIPSIS)
    assert res.attempted >= 15 and res.failed == 0
