"""Unmodified flax.nnx models explained with the LRP rules, against the numpy oracles (float64)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lrpjax
import oracle
import oracle_rnn
from helpers import f64

E, D, C, T, B = 4, 3, 2, 5, 3
F64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)


def _np(v):
    return np.asarray(v[...])


def _snapshot(model):
    """Every array of the module's state (RNG keys as their raw data) as numpy."""
    to_np = lambda a: np.asarray(jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key)
                                 else a)
    return jax.tree.map(to_np, nnx.state(model))


def oracle_params(cell):
    """nnx cell -> (kind, oracle per-gate params)."""
    if isinstance(cell, nnx.OptimizedLSTMCell):
        wx, wh, b = _np(cell.dense_i.kernel), _np(cell.dense_h.kernel), _np(cell.dense_h.bias)
        blk = lambda a, k: a[..., k * D:(k + 1) * D]
        return "lstm", {"Wx": {q: blk(wx, k).T for k, q in enumerate("ifgo")},
                        "Wh": {q: blk(wh, k).T for k, q in enumerate("ifgo")},
                        "b": {q: blk(b, k) for k, q in enumerate("ifgo")}}
    if isinstance(cell, nnx.LSTMCell):
        lin = lambda s, q: getattr(cell, s + q + ("_" if s + q == "if" else ""))
        return "lstm", {"Wx": {q: _np(lin("i", q).kernel).T for q in "ifgo"},
                        "Wh": {q: _np(lin("h", q).kernel).T for q in "ifgo"},
                        "b": {q: _np(lin("h", q).bias) for q in "ifgo"}}
    if isinstance(cell, nnx.GRUCell):
        wx, bx, wh = _np(cell.dense_i.kernel), _np(cell.dense_i.bias), _np(cell.dense_h.kernel)
        blk = lambda a, k: a[..., k * D:(k + 1) * D]
        return "gru", {"Wx": {q: blk(wx, k).T for k, q in enumerate("rzn")},
                       "Wh": {q: blk(wh, k).T for k, q in enumerate("rzn")},
                       "b": {q: blk(bx, k) for k, q in enumerate("rzn")}, "bhn": np.zeros(D)}
    return "simple", {"Wi": _np(cell.dense_i.kernel).T, "Wh": _np(cell.dense_h.kernel).T,
                      "b": _np(cell.dense_i.bias)}


def oracle_direction(cell, x, R_hs, **kw):
    kind, p = oracle_params(cell)
    if kind == "lstm":
        fw = oracle.lstm_forward(x, p)
        R_x, R_h0, R_c0 = oracle.lstm_lrp(x, p, R_hs, **kw)
        return fw["h"], R_x, R_h0.sum() + R_c0.sum()
    if kind == "gru":
        R_x, R_h0 = oracle_rnn.gru_lrp(x, p, R_hs, **kw)
        return oracle_rnn.gru_forward(x, p)["h"], R_x, R_h0.sum()
    kw.pop("gate")
    R_x, R_h0 = oracle_rnn.simple_lrp(x, p, R_hs, **kw)
    return oracle_rnn.simple_forward(x, p)["h"], R_x, R_h0.sum()


class BiClassifier(nnx.Module):
    def __init__(self, cell_cls, rngs, use_bias=True):
        make = lambda: nnx.RNN(cell_cls(E, D, rngs=rngs, **F64))
        self.rnn = nnx.Bidirectional(make(), make(), return_carry=True, rngs=rngs)
        self.out = nnx.Linear(2 * D, C, use_bias=use_bias, rngs=rngs, **F64)

    def __call__(self, x, lengths=None):
        (cf, cb), _ = self.rnn(x, seq_lengths=lengths)
        last = lambda c: c[1] if isinstance(c, tuple) else c
        return self.out(jnp.concatenate([last(cf), last(cb)], -1))


CELLS = [nnx.LSTMCell, nnx.OptimizedLSTMCell, nnx.GRUCell, nnx.SimpleCell]


@pytest.mark.parametrize("cell_cls", CELLS)
@pytest.mark.parametrize("bias_factor, gate, use_bias", [(0.0, "all", True), (1.0, "all", False),
                                                         (1.0, "half", True), (0.0, "prop", True)])
def test_nnx_bidirectional_matches_oracle(cell_cls, bias_factor, gate, use_bias):
    if cell_cls is nnx.SimpleCell and gate != "all":
        gate = "all"  # no gated product in a SimpleCell
    model = BiClassifier(cell_cls, nnx.Rngs(0), use_bias)
    x = np.random.default_rng(1).normal(size=(T, E))
    state_before = _snapshot(model)
    ex = lrpjax.explain(lambda x: model(x), f64(x), 1, bias_factor=bias_factor, gate=gate)
    # oracle: readout rule on [h_fwd, h_bwd], then each direction
    fwd_cell, bwd_cell = model.rnn.forward_rnn.cell, model.rnn.backward_rnn.cell
    kw = dict(eps=1e-3, bias_factor=bias_factor, gate=gate)
    zero = np.zeros((T, D))
    hf = oracle_direction(fwd_cell, x, zero, **kw)[0][-1]
    hb = oracle_direction(bwd_cell, x[::-1], zero, **kw)[0][-1]
    W = _np(model.out.kernel)
    b = None if model.out.bias is None else _np(model.out.bias)
    z = np.concatenate([hf, hb]) @ W + (0 if b is None else b)
    R_out = np.array([0.0, z[1]])
    Rf, Rb = oracle.lrp_linear([hf, hb], [W[:D], W[D:]], b, z, R_out, 1e-3, bias_factor)
    R_hs_f, R_hs_b = zero.copy(), zero.copy()
    R_hs_f[-1], R_hs_b[-1] = Rf, Rb
    _, Rx_f, init_f = oracle_direction(fwd_cell, x, R_hs_f, **kw)
    _, Rx_b, init_b = oracle_direction(bwd_cell, x[::-1], R_hs_b, **kw)
    want = Rx_f + Rx_b[::-1]
    scale = max(1.0, np.abs(want).max())
    np.testing.assert_allclose(ex.scores, z, atol=1e-12)
    np.testing.assert_allclose(ex.relevance, want, atol=1e-10 * scale)
    np.testing.assert_allclose(ex.initial_state, init_f + init_b, atol=1e-10 * scale)
    # the module is unchanged (parameters and RNG counters) and still runs plainly
    jax.tree.map(np.testing.assert_array_equal, state_before, _snapshot(model))
    np.testing.assert_allclose(model(f64(x)), z, atol=1e-12)


def test_nnx_classes_are_restored_after_tracing():
    originals = {c: c.__dict__["__call__"] for c in CELLS + [nnx.RNN, nnx.Linear]}
    model = BiClassifier(nnx.LSTMCell, nnx.Rngs(0))
    lrpjax.relevance(lambda x: model(x), f64(np.ones((T, E))))
    for c, fn in originals.items():
        assert c.__dict__["__call__"] is fn


def test_nnx_padded_batch_jit_vmap_and_plain_grad_trap():
    model = BiClassifier(nnx.LSTMCell, nnx.Rngs(2))
    lengths = jnp.array([5, 2, 4])
    x = np.random.default_rng(3).normal(size=(B, T, E))
    x[0, 5:], x[1, 2:], x[2, 4:] = 9.0, 9.0, 9.0
    x = f64(x)
    R = jax.jit(lambda x: lrpjax.relevance(lambda x: model(x, lengths), x, 0, bias_factor=1.0))(x)
    for b, L in enumerate([5, 2, 4]):
        assert np.all(np.asarray(R[b, L:]) == 0.0)
        one = lrpjax.relevance(lambda x: model(x[None])[0], x[b, :L], 0, bias_factor=1.0)
        np.testing.assert_allclose(R[b, :L], one, atol=1e-12)
    vm = jax.vmap(lambda xi, li: lrpjax.relevance(lambda x: model(x[None], li[None])[0], xi, 0,
                                                  bias_factor=1.0))(x, lengths)
    np.testing.assert_allclose(vm, R, atol=1e-12)
    # (a plain jax.grad of lambda x: model(x) raises in flax 0.12.8 because nnx.RNN draws from its
    # RNG stream inside the trace; lrpjax does not have that problem)


def test_nnx_unsupported_layer_named_with_its_path_and_classes_restored():
    class Head(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(D, 4, rngs=rngs)
            self.out = nnx.Linear(4, C, rngs=rngs)

        def __call__(self, h):
            return self.out(jnp.sort(self.lin(h), axis=-1))

    class M(nnx.Module):
        def __init__(self, rngs):
            self.rnn = nnx.RNN(nnx.LSTMCell(E, D, rngs=rngs))
            self.head = Head(rngs)

        def __call__(self, x):
            return self.head(self.rnn(x)[:, -1])

    m = M(nnx.Rngs(0))
    head_call = Head.__dict__["__call__"]
    with pytest.raises(lrpjax.UnsupportedOperationError, match=r"in layer Head\(head\)"):
        lrpjax.relevance(lambda x: m(x), jnp.ones((2, T, E), jnp.float32))
    assert Head.__dict__["__call__"] is head_call and "__call__" in M.__dict__
