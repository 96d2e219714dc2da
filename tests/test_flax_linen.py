"""Unmodified flax.linen models explained with the LRP rules, against the numpy oracle (float64)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lrpjax
import oracle
from helpers import f64

E, D, C, T, B = 4, 3, 2, 5, 3
F64 = dict(param_dtype=jnp.float64)


def oracle_lstm_params(cell_params):
    """Flax LSTMCell params -> the oracle's per-gate layout (the whole bias sits on the h side)."""
    P = {k: {kk: np.asarray(vv) for kk, vv in v.items()} for k, v in cell_params.items()}
    return {"Wx": {q: P["i" + q]["kernel"].T for q in "ifgo"},
            "Wh": {q: P["h" + q]["kernel"].T for q in "ifgo"},
            "b": {q: P["h" + q]["bias"] for q in "ifgo"}}


class BiClassifier(nn.Module):
    cell: type = nn.LSTMCell
    use_bias: bool = True

    @nn.compact
    def __call__(self, x, seq_lengths=None):
        (cf, cb), _ = nn.Bidirectional(nn.RNN(self.cell(D, **F64)), nn.RNN(self.cell(D, **F64)),
                                       return_carry=True)(x, seq_lengths=seq_lengths)
        return nn.Dense(C, use_bias=self.use_bias, **F64)(jnp.concatenate([cf[1], cb[1]], -1))


def cells(P):
    """Cells built inline in a compact __call__ land at <CellClass>_0, _1, ... of the parent."""
    return [P[k] for k in sorted(P) if "LSTMCell_" in k]


def oracle_bilstm(variables, x, target, bias_factor, gate="all"):
    P = variables["params"]
    pf, pb = (oracle_lstm_params(c) for c in cells(P))
    hf = oracle.lstm_forward(x, pf)["h"][-1]
    hb = oracle.lstm_forward(x[::-1], pb)["h"][-1]
    W = np.asarray(P["Dense_0"]["kernel"])
    b = np.asarray(P["Dense_0"]["bias"]) if "bias" in P["Dense_0"] else None
    z = np.concatenate([hf, hb]) @ W + (0 if b is None else b)
    R_out = np.zeros(C)
    R_out[target] = z[target]
    Rf, Rb = oracle.lrp_linear([hf, hb], [W[:D], W[D:]], b, z, R_out, 1e-3, bias_factor)
    R_hs_f, R_hs_b = np.zeros((T, D)), np.zeros((T, D))
    R_hs_f[-1], R_hs_b[-1] = Rf, Rb
    kw = dict(eps=1e-3, bias_factor=bias_factor, gate=gate)
    Rx_f, h0f, c0f = oracle.lstm_lrp(x, pf, R_hs_f, **kw)
    Rx_b, h0b, c0b = oracle.lstm_lrp(x[::-1], pb, R_hs_b, **kw)
    return Rx_f + Rx_b[::-1], h0f.sum() + c0f.sum() + h0b.sum() + c0b.sum(), z


@pytest.mark.parametrize("cell", [nn.LSTMCell, nn.OptimizedLSTMCell])
@pytest.mark.parametrize("bias_factor", [0.0, 1.0])
@pytest.mark.parametrize("use_bias", [True, False])
def test_linen_bilstm_dense_matches_oracle(cell, bias_factor, use_bias):
    model = BiClassifier(cell, use_bias)
    x = np.random.default_rng(0).normal(size=(T, E))
    variables = model.init(jax.random.key(1), f64(x))
    before = jax.tree.map(np.array, variables)
    ex = lrpjax.explain(lambda x: model.apply(variables, x), f64(x), 1, bias_factor=bias_factor)
    R, init, z = oracle_bilstm(variables, x, 1, bias_factor)
    np.testing.assert_allclose(ex.scores, z, atol=1e-12)
    np.testing.assert_allclose(ex.relevance, R, atol=1e-10)
    np.testing.assert_allclose(ex.initial_state, init, atol=1e-10)
    # the user's params are untouched
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, variables))


@pytest.mark.parametrize("gate", ["half", "prop", "abs"])
def test_linen_bilstm_other_gate_rules(gate):
    model = BiClassifier()
    x = np.random.default_rng(1).normal(size=(T, E))
    variables = model.init(jax.random.key(2), f64(x))
    R = lrpjax.relevance(lambda x: model.apply(variables, x), f64(x), 0, gate=gate)
    want = oracle_bilstm(variables, x, 0, 0.0, gate)[0]
    np.testing.assert_allclose(R, want, atol=1e-10 * max(1.0, np.abs(want).max()))


def test_linen_padded_batch_with_seq_lengths_jit_and_vmap():
    model = BiClassifier()
    rng = np.random.default_rng(2)
    lengths = np.array([5, 2, 4])
    x = rng.normal(size=(B, T, E))
    for b, L in enumerate(lengths):
        x[b, L:] = 50.0  # padding garbage must not matter
    variables = model.init(jax.random.key(3), f64(x))
    f = jax.jit(lambda x, l: lrpjax.explain(lambda x: model.apply(variables, x, l), x,
                                            bias_factor=1.0))
    ex = f(f64(x), jnp.asarray(lengths))
    for b, L in enumerate(lengths):
        assert np.all(np.asarray(ex.relevance[b, L:]) == 0.0)
        one = lrpjax.explain(lambda x: model.apply(variables, x), f64(x[b, :L]),
                             int(ex.target[b]), bias_factor=1.0)
        np.testing.assert_allclose(ex.relevance[b, :L], one.relevance, atol=1e-12)
        np.testing.assert_allclose(ex.scores[b], one.scores, atol=1e-12)
    np.testing.assert_allclose(ex.absorbed, 0.0, atol=1e-10)
    # vmap over rows (each row explained with its own length)
    vm = jax.vmap(lambda x, l: lrpjax.relevance(lambda x: model.apply(variables, x[None], l[None])[0],
                                                x))(f64(x), jnp.asarray(lengths))
    np.testing.assert_allclose(vm, lrpjax.relevance(lambda x: model.apply(variables, x,
                                                                          jnp.asarray(lengths)),
                                                    f64(x)), atol=1e-12)


class Stacked(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.RNN(nn.LSTMCell(D, **F64))(x)              # every step feeds the next layer
        h = nn.RNN(nn.LSTMCell(D, **F64), reverse=True, keep_order=True)(h)
        return nn.Dense(C, **F64)(h[..., 0, :])           # the reversed layer's last state (at t=0)


def test_linen_stacked_reverse_keep_order_matches_oracle():
    model = Stacked()
    x = np.random.default_rng(4).normal(size=(T, E))
    v = model.init(jax.random.key(5), f64(x))
    P = v["params"]
    p1, p2 = (oracle_lstm_params(c) for c in cells(P))
    h1 = oracle.lstm_forward(x, p1)["h"]
    h2r = oracle.lstm_forward(h1[::-1], p2)["h"]          # reads h1[T-1] ... h1[0]
    W, b = np.asarray(P["Dense_0"]["kernel"]), np.asarray(P["Dense_0"]["bias"])
    z = h2r[-1] @ W + b
    R_out = np.array([0.0, z[1]])
    R_top = np.zeros((T, D))
    R_top[-1] = oracle.lrp_linear([h2r[-1]], [W], b, z, R_out, 1e-3, 1.0)[0]
    R_h1_rev, *_ = oracle.lstm_lrp(h1[::-1], p2, R_top, bias_factor=1.0)
    R_x, *_ = oracle.lstm_lrp(x, p1, R_h1_rev[::-1], bias_factor=1.0)
    ex = lrpjax.explain(lambda x: model.apply(v, x), f64(x), 1, bias_factor=1.0)
    np.testing.assert_allclose(ex.scores, z, atol=1e-12)
    np.testing.assert_allclose(ex.relevance, R_x, atol=1e-10)
    np.testing.assert_allclose(ex.absorbed, 0.0, atol=1e-10)


def test_linen_initial_carry_is_reported():
    class WithCarry(nn.Module):
        @nn.compact
        def __call__(self, x, carry):
            c, _ = nn.RNN(nn.LSTMCell(D, **F64), return_carry=True)(x, initial_carry=carry)
            return nn.Dense(C, use_bias=False, **F64)(c[1])
    model = WithCarry()
    rng = np.random.default_rng(6)
    x, c0, h0 = rng.normal(size=(T, E)), rng.normal(size=D), rng.normal(size=D)
    v = model.init(jax.random.key(7), f64(x), (f64(c0), f64(h0)))
    ex = lrpjax.explain(lambda x: model.apply(v, x, (f64(c0), f64(h0))), f64(x), 0, bias_factor=1.0)
    P = v["params"]
    p = oracle_lstm_params(cells(P)[0])
    hT = oracle.lstm_forward(x, p, h0=h0, c0=c0)["h"][-1]
    W = np.asarray(P["Dense_0"]["kernel"])
    z = hT @ W
    R_hs = np.zeros((T, D))
    R_hs[-1] = oracle.lrp_linear([hT], [W], None, z, np.array([z[0], 0.0]), 1e-3, 1.0)[0]
    R_x, R_h0, R_c0 = oracle.lstm_lrp(x, p, R_hs, bias_factor=1.0, h0=h0, c0=c0)
    np.testing.assert_allclose(ex.relevance, R_x, atol=1e-10)
    np.testing.assert_allclose(ex.state_relevance[0], R_c0, atol=1e-10)
    np.testing.assert_allclose(ex.state_relevance[1], R_h0, atol=1e-10)


def test_unsupported_layer_named_in_strict_error():
    class Head(nn.Module):
        @nn.compact
        def __call__(self, h):
            return nn.Dense(C)(jnp.sort(nn.Dense(4)(h), axis=-1))

    class M(nn.Module):
        @nn.compact
        def __call__(self, x):
            return Head()(nn.RNN(nn.LSTMCell(D))(x)[:, -1])

    m = M()
    x = jnp.ones((2, T, E), jnp.float32)
    v = m.init(jax.random.key(0), x)
    with pytest.raises(lrpjax.UnsupportedOperationError, match=r"layer Head\(Head_0\)"):
        lrpjax.relevance(lambda x: m.apply(v, x), x)


def test_plain_apply_and_grad_unaffected():
    model = BiClassifier()
    x = f64(np.random.default_rng(8).normal(size=(B, T, E)))
    v = model.init(jax.random.key(9), x)
    f = lambda x: model.apply(v, x)
    g1 = jax.grad(lambda x: f(x)[0, 0])(x)
    lrpjax.relevance(f, x)
    g2 = jax.grad(lambda x: f(x)[0, 0])(x)
    np.testing.assert_array_equal(g1, g2)
    assert not np.allclose(g2 * x, lrpjax.relevance(f, x, 0))


# ------------------------------------------------------------------------------------------------
# GRU, MGU and SimpleCell (oracle: tests/oracle_rnn.py)

import oracle_rnn  # noqa: E402


def _np(tree):
    return jax.tree.map(np.asarray, tree)


def oracle_gru_like(kind, P, **kw):
    """Flax cell params -> (oracle forward, oracle lrp, oracle params)."""
    P = _np(P)
    if kind == "gru":
        op = {"Wx": {q: P["i" + q]["kernel"].T for q in "rzn"},
              "Wh": {q: P["h" + q]["kernel"].T for q in "rzn"},
              "b": {q: P["i" + q]["bias"] for q in "rzn"}, "bhn": P["hn"]["bias"]}
        return oracle_rnn.gru_forward, oracle_rnn.gru_lrp, op, {}
    if kind == "mgu":
        op = {"Wx": {q: P["i" + q]["kernel"].T for q in "fn"},
              "Wh": {q: P["h" + q]["kernel"].T for q in "fn"},
              "b": {q: P["i" + q]["bias"] for q in "fn"}}
        if "bias" in P["hn"]:
            op["bhn"] = P["hn"]["bias"]
        return oracle_rnn.mgu_forward, oracle_rnn.mgu_lrp, op, {"reset_gate": kw["reset_gate"]}
    op = {"Wi": P["i"]["kernel"].T, "Wh": P["h"]["kernel"].T, "b": P["i"]["bias"]}
    return oracle_rnn.simple_forward, oracle_rnn.simple_lrp, op, {"residual": kw["residual"]}


CELLS = [
    ("gru", lambda: nn.GRUCell(D, **F64), {}),
    ("mgu", lambda: nn.MGUCell(D, **F64), {"reset_gate": True}),
    ("mgu", lambda: nn.MGUCell(D, reset_gate=False, **F64), {"reset_gate": False}),
    ("simple", lambda: nn.SimpleCell(D, **F64), {"residual": False}),
    ("simple", lambda: nn.SimpleCell(D, residual=True, **F64), {"residual": True}),
]


class EveryStep(nn.Module):
    """RNN whose every output step feeds the readout (relevance arrives at each h_t)."""
    make_cell: object
    reverse: bool = False

    @nn.compact
    def __call__(self, x):
        hs = nn.RNN(self.make_cell(), reverse=self.reverse, keep_order=True)(x)
        return nn.Dense(C, **F64)(hs.reshape(hs.shape[:-2] + (-1,)))


# SimpleCell has no gated product, so only gate="all" is meaningful for it
CASES = [(k, mk, kw, g) for k, mk, kw in CELLS for g in lrpjax.GATE_RULES if k != "simple" or g == "all"]


@pytest.mark.parametrize("kind, make_cell, kw, gate", CASES)
@pytest.mark.parametrize("bias_factor", [0.0, 1.0])
def test_linen_gru_mgu_simple_match_oracle(kind, make_cell, kw, gate, bias_factor):
    model = EveryStep(make_cell)
    x = np.random.default_rng(10).normal(size=(T, E))
    v = model.init(jax.random.key(11), f64(x))
    P = v["params"]
    cell_p = P[[k for k in P if k != "Dense_0"][0]]
    fwd, lrp, op, extra = oracle_gru_like(kind, cell_p, **kw)
    hs = fwd(x, op, **extra)["h"]
    W, b = np.asarray(P["Dense_0"]["kernel"]), np.asarray(P["Dense_0"]["bias"])
    z = hs.reshape(-1) @ W + b
    R_out = np.array([z[0], 0.0])
    R_hs = oracle.lrp_linear([hs.reshape(-1)], [W], b, z, R_out, 1e-3,
                             bias_factor)[0].reshape(T, D)
    okw = dict(eps=1e-3, bias_factor=bias_factor, **extra)
    if kind != "simple":
        okw["gate"] = gate
    R_x, R_h0 = lrp(x, op, R_hs, **okw)
    ex = lrpjax.explain(lambda x: model.apply(v, x), f64(x), 0, bias_factor=bias_factor, gate=gate)
    scale = max(1.0, np.abs(R_x).max())
    np.testing.assert_allclose(ex.scores, z, atol=1e-12)
    np.testing.assert_allclose(ex.relevance, R_x, atol=1e-10 * scale)
    np.testing.assert_allclose(ex.state_relevance[0], R_h0, atol=1e-10 * scale)


@pytest.mark.parametrize("kind, make_cell, kw", CELLS[:2])
def test_linen_gru_reverse_and_padding(kind, make_cell, kw):
    model = EveryStep(make_cell, reverse=True)
    x = np.random.default_rng(12).normal(size=(T, E))
    v = model.init(jax.random.key(13), f64(x))
    P = v["params"]
    fwd, lrp, op, extra = oracle_gru_like(kind, P[[k for k in P if k != "Dense_0"][0]], **kw)
    hs_rev = fwd(x[::-1], op, **extra)["h"]          # reading order
    hs = hs_rev[::-1]                                 # keep_order: aligned with x
    W, b = np.asarray(P["Dense_0"]["kernel"]), np.asarray(P["Dense_0"]["bias"])
    z = hs.reshape(-1) @ W + b
    R_hs = oracle.lrp_linear([hs.reshape(-1)], [W], b, z, np.array([0.0, z[1]]), 1e-3,
                             1.0)[0].reshape(T, D)
    R_x, _ = lrp(x[::-1], op, R_hs[::-1], bias_factor=1.0, **extra)
    ex = lrpjax.explain(lambda x: model.apply(v, x), f64(x), 1, bias_factor=1.0)
    np.testing.assert_allclose(ex.relevance, R_x[::-1], atol=1e-10)
    np.testing.assert_allclose(ex.absorbed, 0.0, atol=1e-10)

    class Last(nn.Module):  # padded batch: the carry at each row's last valid step
        @nn.compact
        def __call__(self, x, lengths):
            c, _ = nn.RNN(make_cell(), return_carry=True)(x, seq_lengths=lengths)
            return nn.Dense(C, **F64)(c)

    m2 = Last()
    lengths = jnp.array([5, 3, 1])
    xb = f64(np.random.default_rng(14).normal(size=(3, T, E)))
    v2 = m2.init(jax.random.key(15), xb, lengths)
    R = jax.jit(lambda x: lrpjax.relevance(lambda x: m2.apply(v2, x, lengths), x, 0))(xb)
    for r, L in enumerate([5, 3, 1]):
        assert np.all(np.asarray(R[r, L:]) == 0.0)
        one = lrpjax.relevance(lambda x: m2.apply(v2, x[None], jnp.array([L]))[0], xb[r, :L], 0)
        np.testing.assert_allclose(R[r, :L], one, atol=1e-12)
