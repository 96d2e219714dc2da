"""GRU layer: forward values and LRP against the literal numpy oracle (float64, 1e-10),
plus self-checks of the GRU / MGU / SimpleCell oracle (conservation)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lrpjax
import oracle
import oracle_rnn
from helpers import f64

TOL = 1e-10
E, D, T, C = 4, 3, 5, 2
GATES = ("r", "z", "n")


def _close(got, want, tol=TOL):
    want = np.asarray(want)
    # "prop" can amplify relevance (u = gate + signal + eps*sign may be tiny): compare relative to
    # the largest value there.
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * max(1.0, np.abs(want).max()))


def _gru_oracle_params(rng, e=E, d=D, scale=0.5):
    return {"Wx": {q: rng.normal(0, scale, (d, e)) for q in GATES},
            "Wh": {q: rng.normal(0, scale, (d, d)) for q in GATES},
            "b": {q: rng.normal(0, scale, (d,)) for q in GATES},
            "bhn": rng.normal(0, scale, (d,))}


def _to_lrpjax(P):
    """Per-gate oracle params -> GRUParams (columns r, z, n; a @ W convention)."""
    wx = np.concatenate([P["Wx"][q].T for q in GATES], axis=1)   # (e, 3d)
    wh = np.concatenate([P["Wh"][q].T for q in GATES], axis=1)   # (d, 3d)
    b = np.concatenate([P["b"][q] for q in GATES])
    return lrpjax.GRUParams(f64(wx), f64(wh), f64(b), f64(P["bhn"]))


# ---------------------------------------------------------------------------
# Oracle self-checks
# ---------------------------------------------------------------------------
def _rand_R(rng, T_, d):
    return rng.normal(size=(T_, d))


@pytest.mark.parametrize("gate", ["all", "half"])
def test_gru_oracle_conserves(gate):
    rng = np.random.default_rng(20)
    P = _gru_oracle_params(rng)
    x = rng.normal(size=(T, E))
    h0 = rng.normal(size=D)
    R_hs = _rand_R(rng, T, D)
    R_x, R_h0 = oracle_rnn.gru_lrp(x, P, R_hs, bias_factor=1.0, gate=gate, h0=h0)
    np.testing.assert_allclose(R_x.sum() + R_h0.sum(), R_hs.sum(), atol=1e-10)


def test_gru_oracle_forward_matches_plain_numpy():
    rng = np.random.default_rng(21)
    P = _gru_oracle_params(rng)
    x = rng.normal(size=(T, E))
    h = rng.normal(size=D)
    fw = oracle_rnn.gru_forward(x, P, h0=h)
    sig = lambda v: 1 / (1 + np.exp(-v))
    for t in range(T):
        r = sig(P["Wx"]["r"] @ x[t] + P["Wh"]["r"] @ h + P["b"]["r"])
        z = sig(P["Wx"]["z"] @ x[t] + P["Wh"]["z"] @ h + P["b"]["z"])
        n = np.tanh(P["Wx"]["n"] @ x[t] + P["b"]["n"] + r * (P["Wh"]["n"] @ h + P["bhn"]))
        h = (1 - z) * n + z * h
        np.testing.assert_allclose(fw["h"][t], h, atol=1e-13)


@pytest.mark.parametrize("reset_gate", [True, False])
def test_mgu_oracle_conserves(reset_gate):
    rng = np.random.default_rng(22)
    P = {"Wx": {q: rng.normal(0, 0.5, (D, E)) for q in "fn"},
         "Wh": {q: rng.normal(0, 0.5, (D, D)) for q in "fn"},
         "b": {q: rng.normal(0, 0.5, (D,)) for q in "fn"},
         "bhn": rng.normal(0, 0.5, (D,))}
    x = rng.normal(size=(T, E))
    h0 = rng.normal(size=D)
    R_hs = _rand_R(rng, T, D)
    R_x, R_h0 = oracle_rnn.mgu_lrp(x, P, R_hs, bias_factor=1.0, gate="all", h0=h0,
                                   reset_gate=reset_gate)
    np.testing.assert_allclose(R_x.sum() + R_h0.sum(), R_hs.sum(), atol=1e-10)
    # the MGU with reset_gate is the GRU with r = z = f
    if reset_gate:
        G = {"Wx": {"r": P["Wx"]["f"], "z": P["Wx"]["f"], "n": P["Wx"]["n"]},
             "Wh": {"r": P["Wh"]["f"], "z": P["Wh"]["f"], "n": P["Wh"]["n"]},
             "b": {"r": P["b"]["f"], "z": P["b"]["f"], "n": P["b"]["n"]}, "bhn": P["bhn"]}
        np.testing.assert_allclose(oracle_rnn.mgu_forward(x, P, h0=h0)["h"],
                                   oracle_rnn.gru_forward(x, G, h0=h0)["h"], atol=1e-14)


@pytest.mark.parametrize("residual", [False, True])
def test_simple_oracle_conserves(residual):
    rng = np.random.default_rng(23)
    P = {"Wi": rng.normal(0, 0.5, (D, E)), "Wh": rng.normal(0, 0.5, (D, D)),
         "b": rng.normal(0, 0.5, (D,))}
    x = rng.normal(size=(T, E))
    h0 = rng.normal(size=D)
    fw = oracle_rnn.simple_forward(x, P, h0=h0, residual=residual)
    h = h0
    for t in range(T):
        h = np.tanh(P["Wi"] @ x[t] + P["b"] + P["Wh"] @ h + (h if residual else 0))
        np.testing.assert_allclose(fw["h"][t], h, atol=1e-13)
    R_hs = _rand_R(rng, T, D)
    R_x, R_h0 = oracle_rnn.simple_lrp(x, P, R_hs, bias_factor=1.0, h0=h0, residual=residual)
    np.testing.assert_allclose(R_x.sum() + R_h0.sum(), R_hs.sum(), atol=1e-10)


# ---------------------------------------------------------------------------
# Library GRU vs oracle
# ---------------------------------------------------------------------------
def test_forward_equals_literal_gru():
    rng = np.random.default_rng(0)
    P = _gru_oracle_params(rng)
    x = rng.normal(size=(T, E))
    h0 = rng.normal(size=D)
    want = oracle_rnn.gru_forward(x, P, h0=h0)["h"]
    hs, h = lrpjax.gru(_to_lrpjax(P), f64(x), h0=f64(h0))
    np.testing.assert_allclose(hs, want, atol=1e-12)
    np.testing.assert_allclose(h, want[-1], atol=1e-12)


def _per_step_readout_case(gate, bias_factor, reverse, seed=0):
    """GRU whose every hidden state feeds the readout (relevance arrives at each h_t)."""
    rng = np.random.default_rng(seed)
    P = _gru_oracle_params(rng)
    x = rng.normal(size=(T, E))
    h0 = rng.normal(size=D) * 0.5
    Wout = rng.normal(size=(T * D, C))
    params = _to_lrpjax(P)

    def model(x):
        hs, _ = lrpjax.gru(params, x, h0=f64(h0), reverse=reverse)
        return lrpjax.dense(hs.reshape(-1), f64(Wout))

    ex = lrpjax.explain(model, f64(x), target=1, bias_factor=bias_factor, gate=gate)

    # oracle: reversed reading = forward reading of x[::-1] with outputs flipped back
    x_or = x[::-1] if reverse else x
    hs_or = oracle_rnn.gru_forward(x_or, P, h0=h0)["h"]
    hs_al = hs_or[::-1] if reverse else hs_or
    z = hs_al.reshape(-1) @ Wout
    R_out = np.zeros(C)
    R_out[1] = z[1]
    R_hs = oracle.lrp_linear([hs_al.reshape(-1)], [Wout], None, z, R_out, 1e-3,
                             bias_factor)[0].reshape(T, D)
    R_x, R_h0 = oracle_rnn.gru_lrp(x_or, P, R_hs[::-1] if reverse else R_hs, eps=1e-3,
                                   bias_factor=bias_factor, gate=gate, h0=h0)
    return ex, z, (R_x[::-1] if reverse else R_x), R_h0


@pytest.mark.parametrize("gate", lrpjax.GATE_RULES)
@pytest.mark.parametrize("bias_factor", [0.0, 1.0])
def test_gru_lrp_matches_oracle(gate, bias_factor):
    ex, z, R_x, R_h0 = _per_step_readout_case(gate, bias_factor, reverse=False)
    np.testing.assert_allclose(ex.scores, z, atol=1e-12)
    _close(ex.relevance, R_x)
    assert len(ex.state_relevance) == 1
    _close(ex.state_relevance[0], R_h0)
    np.testing.assert_allclose(ex.initial_state, R_h0.sum(), atol=TOL * max(1, np.abs(R_h0).max()))


@pytest.mark.parametrize("gate", ["all", "prop"])
def test_reversed_gru_lrp_matches_oracle(gate):
    ex, z, R_x, R_h0 = _per_step_readout_case(gate, 1.0, reverse=True, seed=3)
    np.testing.assert_allclose(ex.scores, z, atol=1e-12)
    _close(ex.relevance, R_x)
    _close(ex.state_relevance[0], R_h0)


@pytest.mark.parametrize("gate", ["all", "half"])
def test_global_conservation_with_bias_factor_one(gate):
    ex, z, *_ = _per_step_readout_case(gate, 1.0, reverse=False, seed=5)
    np.testing.assert_allclose(ex.relevance.sum() + ex.initial_state, z[1], atol=1e-10)
    np.testing.assert_allclose(ex.absorbed, 0.0, atol=1e-10)


def _padded_batch(rng, lengths, e=E):
    B, Tm = len(lengths), max(lengths)
    x = rng.normal(size=(B, Tm, e))
    for b, L in enumerate(lengths):
        x[b, L:] = rng.normal(size=(Tm - L, e)) * 100  # garbage in the padding must not matter
    return x


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("gate", ["all", "prop"])
def test_padding_is_exactly_zero_and_valid_part_equals_unpadded(reverse, gate):
    rng = np.random.default_rng(11)
    params = _to_lrpjax(_gru_oracle_params(rng))
    Wout = f64(rng.normal(size=(D, C)))
    lengths = [5, 2, 4, 1]
    x = _padded_batch(rng, lengths)
    h0 = rng.normal(size=(len(lengths), D)) * 0.5

    def model(x, lengths=None, h0=None):
        _, h = lrpjax.gru(params, x, lengths=lengths, h0=h0, reverse=reverse)
        return lrpjax.dense(h, Wout)

    L = jnp.array(lengths)
    targets = [0, 1, 1, 0]
    ex = lrpjax.explain(lambda x: model(x, L, f64(h0)), f64(x), target=jnp.array(targets),
                        bias_factor=1.0, gate=gate)
    for b, n in enumerate(lengths):
        assert np.all(np.asarray(ex.relevance[b, n:]) == 0.0)
        single = lrpjax.explain(lambda x: model(x, h0=f64(h0[b])), f64(x[b, :n]), target=targets[b],
                                bias_factor=1.0, gate=gate)
        _close(ex.relevance[b, :n], single.relevance, 1e-12)
        np.testing.assert_allclose(ex.scores[b], single.scores, atol=1e-12)
        _close(ex.state_relevance[0][b], single.state_relevance[0], 1e-12)
        np.testing.assert_allclose(ex.initial_state[b], single.initial_state, atol=1e-10)


def test_padded_steps_keep_state_and_output_zero():
    rng = np.random.default_rng(12)
    params = _to_lrpjax(_gru_oracle_params(rng))
    x = f64(_padded_batch(rng, [5, 2]))
    h0 = f64(rng.normal(size=(2, D)))
    hs, h = lrpjax.gru(params, x, lengths=jnp.array([5, 2]), h0=h0)
    np.testing.assert_array_equal(hs[1, 2:], 0.0)
    hs1, h1 = lrpjax.gru(params, x[1, :2], h0=h0[1])
    np.testing.assert_allclose(h[1], h1, atol=1e-12)
    np.testing.assert_allclose(hs[1, :2], hs1, atol=1e-12)


# ---------------------------------------------------------------------------
# Importing stacked weights
# ---------------------------------------------------------------------------
def test_gru_params_pytorch_and_keras_layouts_match_oracle():
    rng = np.random.default_rng(1)
    P = _gru_oracle_params(rng)
    x = rng.normal(size=(T, E))
    h0 = rng.normal(size=D)
    want = oracle_rnn.gru_forward(x, P, h0=h0)["h"]

    # PyTorch: weight_ih (3d, e), weight_hh (3d, d) rows r, z, n; bias_ih, bias_hh (3d,)
    # b_r = b_ir + b_hr, b_z = b_iz + b_hz, b_n = b_in, bhn = b_hn
    w_ih = np.concatenate([P["Wx"][q] for q in GATES], axis=0)
    w_hh = np.concatenate([P["Wh"][q] for q in GATES], axis=0)
    b_ih = np.concatenate([0.3 * P["b"]["r"], 0.6 * P["b"]["z"], P["b"]["n"]])
    b_hh = np.concatenate([0.7 * P["b"]["r"], 0.4 * P["b"]["z"], P["bhn"]])
    pt = lrpjax.gru_params(w_ih, w_hh, b_ih, b_hh, gate_order="rzn", layout="rows")
    hs, _ = lrpjax.gru(pt, f64(x), h0=f64(h0))
    np.testing.assert_allclose(hs, want, atol=1e-12)

    # Keras reset_after=True: kernel (e, 3d), recurrent_kernel (d, 3d) columns z, r, n;
    # bias (2, 3d): bias[0] input side, bias[1] recurrent side (its n block = bhn)
    order = "zrn"
    kernel = np.concatenate([P["Wx"][q].T for q in order], axis=1)
    rec = np.concatenate([P["Wh"][q].T for q in order], axis=1)
    bias = np.stack([np.concatenate([0.5 * P["b"]["z"], -1.0 * P["b"]["r"], P["b"]["n"]]),
                     np.concatenate([0.5 * P["b"]["z"], 2.0 * P["b"]["r"], P["bhn"]])])
    ke = lrpjax.gru_params(kernel, rec, bias[0], bias[1], gate_order=order, layout="columns")
    hs, _ = lrpjax.gru(ke, f64(x), h0=f64(h0))
    np.testing.assert_allclose(hs, want, atol=1e-12)

    # both imports and the direct GRUParams hold the same arrays
    direct = _to_lrpjax(P)
    for imported in (pt, ke):
        for a, b in zip(imported, direct):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-14)


def test_gru_params_single_bias_means_zero_bhn():
    rng = np.random.default_rng(2)
    P = _gru_oracle_params(rng)
    P["bhn"] = np.zeros(D)
    x = rng.normal(size=(T, E))
    wx = np.concatenate([P["Wx"][q].T for q in GATES], axis=1)
    wh = np.concatenate([P["Wh"][q].T for q in GATES], axis=1)
    b = np.concatenate([P["b"][q] for q in GATES])
    hs, _ = lrpjax.gru(lrpjax.gru_params(wx, wh, b), f64(x))
    np.testing.assert_allclose(hs, oracle_rnn.gru_forward(x, P)["h"], atol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(gate_order="rzx"), "gate_order"), (dict(gate_order="rz"), "gate_order"),
    (dict(gate_order="rrn"), "gate_order"), (dict(layout="diagonal"), "layout"),
])
def test_gru_params_rejects_bad_layouts(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lrpjax.gru_params(np.zeros((E, 3 * D)), np.zeros((D, 3 * D)), **kwargs)


@pytest.mark.parametrize("args, kwargs", [
    ((np.zeros((E, 3 * D)), np.zeros((D, 3 * D + 1))), {}),           # wh not (d, 3d)
    ((np.zeros((E, 3 * D + 1)), np.zeros((D, 3 * D))), {}),           # wx width != 3d
    ((np.zeros((E, 3 * D)), np.zeros((D, 3 * D)), np.zeros(3 * D - 1)), {}),   # bad b
    ((np.zeros((E, 3 * D)), np.zeros((D, 3 * D)), np.zeros(3 * D), np.zeros(2)), {}),  # bad b_h
    ((np.zeros((E, 3 * D)), np.zeros((D, 3 * D))), dict(layout="rows")),   # columns given as rows
    ((np.zeros((3 * D, E)), np.zeros((3 * D, D))), dict(layout="columns")),  # rows given as columns
    ((np.zeros((E, 3 * D, 1)), np.zeros((D, 3 * D))), {}),             # not 2-D
])
def test_gru_params_rejects_wrong_shapes(args, kwargs):
    with pytest.raises(ValueError):
        lrpjax.gru_params(*args, **kwargs)


# ---------------------------------------------------------------------------
# Transformations
# ---------------------------------------------------------------------------
def test_jit_and_vmap_of_relevance_equal_eager_batch():
    rng = np.random.default_rng(9)
    params = _to_lrpjax(_gru_oracle_params(rng))
    Wout = f64(rng.normal(size=(D, 3)))
    B = 4
    x = f64(rng.normal(size=(B, T, E)))
    t = jnp.array([0, 2, 1, 2])
    model = lambda x: lrpjax.dense(lrpjax.gru(params, x)[1], Wout)
    eager = lrpjax.relevance(model, x, t, bias_factor=1.0, gate="half")
    jitted = jax.jit(lambda x, t: lrpjax.relevance(model, x, t, bias_factor=1.0, gate="half"))(x, t)
    mapped = jax.vmap(lambda xi, ti: lrpjax.relevance(model, xi, ti, bias_factor=1.0,
                                                      gate="half"))(x, t)
    np.testing.assert_allclose(jitted, eager, atol=1e-12)
    np.testing.assert_allclose(mapped, eager, atol=1e-12)
    # and each row equals the unbatched call
    for b in range(B):
        single = lrpjax.relevance(model, x[b], int(t[b]), bias_factor=1.0, gate="half")
        np.testing.assert_allclose(eager[b], single, atol=1e-12)
