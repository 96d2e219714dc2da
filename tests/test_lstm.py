"""LSTM layers: forward values and LRP against the literal numpy oracle (float64, 1e-10)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lrpjax
import oracle
from helpers import f64, random_oracle_params, to_lrpjax

TOL = 1e-10
E, D, T, C = 4, 3, 5, 2


def _close(got, want, tol=TOL):
    want = np.asarray(want)
    # "prop" can amplify relevance by orders of magnitude (u = gate + signal + eps*sign may be tiny):
    # compare relative to the largest value there.
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("variant", list(lrpjax.VARIANT_GATES))
def test_forward_equals_literal_lstm(variant):
    rng = np.random.default_rng(0)
    P = random_oracle_params(rng, E, D, variant)
    x = rng.normal(size=(T, E))
    h0, c0 = rng.normal(size=D), rng.normal(size=D)
    want = oracle.lstm_forward(x, P, variant=variant, h0=h0, c0=c0)
    hs, (c, h) = lrpjax.lstm(to_lrpjax(P, variant), f64(x), variant=variant, h0=f64(h0),
                             c0=f64(c0))
    np.testing.assert_allclose(hs, want["h"], atol=1e-12)
    np.testing.assert_allclose(h, want["h"][-1], atol=1e-12)
    np.testing.assert_allclose(c, want["c"][-1], atol=1e-12)


@pytest.mark.parametrize("order, layout", [("igfo", "rows"), ("ifgo", "rows"), ("ifco", "columns"),
                                           ("oigf", "columns")])
def test_gate_orders_and_two_biases_import_the_same_cell(order, layout):
    rng = np.random.default_rng(1)
    P = random_oracle_params(rng, E, D, "standard")
    x = rng.normal(size=(T, E))
    hs, _ = lrpjax.lstm(to_lrpjax(P, "standard", order, layout, split_bias=True), f64(x))
    np.testing.assert_allclose(hs, oracle.lstm_forward(x, P)["h"], atol=1e-12)


def _per_step_readout_case(variant, gate, bias_factor, reverse, seed=0):
    """LSTM whose every hidden state feeds the readout (relevance arrives at each h_t)."""
    rng = np.random.default_rng(seed)
    P = random_oracle_params(rng, E, D, variant)
    x = rng.normal(size=(T, E))
    h0, c0 = rng.normal(size=D) * 0.5, rng.normal(size=D) * 0.5
    Wout = rng.normal(size=(T * D, C))
    params = to_lrpjax(P, variant)

    def model(x):
        hs, _ = lrpjax.lstm(params, x, variant=variant, h0=f64(h0), c0=f64(c0), reverse=reverse)
        return lrpjax.dense(hs.reshape(-1), f64(Wout))

    ex = lrpjax.explain(model, f64(x), target=1, bias_factor=bias_factor, gate=gate)

    # oracle: reversed reading = forward reading of x[::-1] with outputs flipped back
    x_or = x[::-1] if reverse else x
    hs_or = oracle.lstm_forward(x_or, P, variant=variant, h0=h0, c0=c0)["h"]
    hs_al = hs_or[::-1] if reverse else hs_or
    z = hs_al.reshape(-1) @ Wout
    R_out = np.zeros(C)
    R_out[1] = z[1]
    R_hs = oracle.lrp_linear([hs_al.reshape(-1)], [Wout], None, z, R_out, 1e-3,
                             bias_factor)[0].reshape(T, D)
    R_x, R_h0, R_c0 = oracle.lstm_lrp(x_or, P, R_hs[::-1] if reverse else R_hs, eps=1e-3,
                                      bias_factor=bias_factor, gate=gate, variant=variant, h0=h0,
                                      c0=c0)
    return ex, z, (R_x[::-1] if reverse else R_x), R_h0, R_c0


@pytest.mark.parametrize("variant", list(lrpjax.VARIANT_GATES))
@pytest.mark.parametrize("gate", lrpjax.GATE_RULES)
@pytest.mark.parametrize("bias_factor", [0.0, 1.0])
def test_lstm_lrp_matches_oracle(variant, gate, bias_factor):
    ex, z, R_x, R_h0, R_c0 = _per_step_readout_case(variant, gate, bias_factor, reverse=False)
    np.testing.assert_allclose(ex.scores, z, atol=1e-12)
    _close(ex.relevance, R_x)
    c_rel, h_rel = ex.state_relevance  # the layer creates c_0 first, then h_0
    _close(c_rel, R_c0)
    _close(h_rel, R_h0)


@pytest.mark.parametrize("variant", ["standard", "rudder"])
def test_reversed_lstm_lrp_matches_oracle(variant):
    ex, z, R_x, R_h0, R_c0 = _per_step_readout_case(variant, "all", 1.0, reverse=True, seed=3)
    np.testing.assert_allclose(ex.scores, z, atol=1e-12)
    _close(ex.relevance, R_x)
    _close(ex.state_relevance[0], R_c0)
    _close(ex.state_relevance[1], R_h0)


@pytest.mark.parametrize("variant", list(lrpjax.VARIANT_GATES))
@pytest.mark.parametrize("gate", ["all", "half"])
def test_global_conservation_with_bias_factor_one(variant, gate):
    ex, z, *_ = _per_step_readout_case(variant, gate, 1.0, reverse=False, seed=5)
    np.testing.assert_allclose(ex.total + ex.initial_state, z[1], atol=1e-10)
    np.testing.assert_allclose(ex.absorbed, 0.0, atol=1e-10)


def test_stacked_layers_match_oracle_composition():
    rng = np.random.default_rng(7)
    P1 = random_oracle_params(rng, E, D, "standard")
    P2 = random_oracle_params(rng, D, D, "standard")
    Wout = rng.normal(size=(D, C))
    x = rng.normal(size=(T, E))
    layers = [to_lrpjax(P1, "standard"), to_lrpjax(P2, "standard")]

    def model(x):
        _, finals = lrpjax.stacked_lstm(layers, x)
        return lrpjax.dense(finals[-1][1], f64(Wout))

    ex = lrpjax.explain(model, f64(x), target=0, bias_factor=1.0)
    h1 = oracle.lstm_forward(x, P1)["h"]
    h2 = oracle.lstm_forward(h1, P2)["h"]
    z = h2[-1] @ Wout
    R_out = np.array([z[0], 0.0])
    R_top = np.zeros((T, D))
    R_top[-1] = oracle.lrp_linear([h2[-1]], [Wout], None, z, R_out, 1e-3, 1.0)[0]
    R_h1, R2_h0, R2_c0 = oracle.lstm_lrp(h1, P2, R_top, bias_factor=1.0)
    R_x, R1_h0, R1_c0 = oracle.lstm_lrp(x, P1, R_h1, bias_factor=1.0)
    _close(ex.relevance, R_x)
    want_init = R1_h0.sum() + R1_c0.sum() + R2_h0.sum() + R2_c0.sum()
    np.testing.assert_allclose(ex.initial_state, want_init, atol=TOL)
    np.testing.assert_allclose(ex.total + ex.initial_state, z[0], atol=1e-10)


def _padded_batch(rng, lengths, e=E):
    B, Tm = len(lengths), max(lengths)
    x = rng.normal(size=(B, Tm, e))
    for b, L in enumerate(lengths):
        x[b, L:] = rng.normal(size=(Tm - L, e)) * 100  # garbage in the padding must not matter
    return x


@pytest.mark.parametrize("kind", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("gate", ["all", "prop"])
def test_padding_is_exactly_zero_and_valid_part_equals_unpadded(kind, gate):
    rng = np.random.default_rng(11)
    P, Pb = random_oracle_params(rng, E, D, "standard"), random_oracle_params(rng, E, D, "standard")
    pf, pb = to_lrpjax(P, "standard"), to_lrpjax(Pb, "standard")
    Wout = f64(rng.normal(size=(2 * D if kind == "bidirectional" else D, C)))
    lengths = [5, 2, 4, 1]
    x = _padded_batch(rng, lengths)

    def model(x, lengths=None):
        if kind == "bidirectional":
            _, ((_, hf), (_, hb)) = lrpjax.bilstm(pf, pb, x, lengths=lengths)
            return lrpjax.dense((hf, hb), (Wout[:D], Wout[D:]))
        _, (_, h) = lrpjax.lstm(pf, x, lengths=lengths, reverse=kind == "reverse")
        return lrpjax.dense(h, Wout)

    L = jnp.array(lengths)
    ex = lrpjax.explain(lambda x: model(x, L), f64(x), target=jnp.array([0, 1, 1, 0]),
                        bias_factor=1.0, gate=gate)
    for b, n in enumerate(lengths):
        assert np.all(np.asarray(ex.relevance[b, n:]) == 0.0)
        single = lrpjax.explain(model, f64(x[b, :n]), target=[0, 1, 1, 0][b], bias_factor=1.0,
                                gate=gate)
        _close(ex.relevance[b, :n], single.relevance, 1e-12)
        np.testing.assert_allclose(ex.scores[b], single.scores, atol=1e-12)
        np.testing.assert_allclose(ex.initial_state[b], single.initial_state, atol=1e-10)


def test_zero_length_sequence_keeps_initial_state():
    p = lrpjax.init_lstm(jax.random.key(0), E, D, dtype=jnp.float64)
    x = jnp.ones((2, 3, E))
    h0 = jnp.arange(2 * D, dtype=jnp.float64).reshape(2, D)
    hs, (c, h) = lrpjax.lstm(p, x, lengths=jnp.array([0, 3]), h0=h0)
    np.testing.assert_array_equal(h[0], h0[0])
    np.testing.assert_array_equal(hs[0], 0.0)


@pytest.mark.parametrize("bad, match", [
    (dict(variant="peephole"), "variant"),
    (dict(lengths=jnp.array([1, 2, 3])), "lengths"),
    (dict(lengths=jnp.array([1.0, 2.0])), "lengths"),
    (dict(lengths=jnp.array([1, 9])), "lengths"),
])
def test_lstm_rejects_bad_arguments(bad, match):
    p = lrpjax.init_lstm(jax.random.key(0), E, D)
    with pytest.raises(ValueError, match=match):
        lrpjax.lstm(p, jnp.ones((2, 4, E)), **bad)


def test_lstm_rejects_params_that_do_not_fit_x():
    p = lrpjax.init_lstm(jax.random.key(0), E + 1, D)
    with pytest.raises(ValueError, match="e=4"):
        lrpjax.lstm(p, jnp.ones((4, E)))


@pytest.mark.parametrize("kwargs, match", [
    (dict(gate_order="ifgx"), "gate_order"), (dict(layout="diagonal"), "layout"),
    (dict(gate_order="ifg"), "gate_order"),
])
def test_lstm_params_rejects_bad_layouts(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lrpjax.lstm_params(np.zeros((8, 3)), np.zeros((8, 2)), **kwargs)


def test_lstm_params_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="wx"):
        lrpjax.lstm_params(np.zeros((8, 3)), np.zeros((8, 2)), layout="columns")
    with pytest.raises(ValueError, match="b must have shape"):
        lrpjax.lstm_params(np.zeros((8, 3)), np.zeros((8, 2)), np.zeros(7), layout="rows")


def _stepwise_lstm(p, x, h0, c0, variant, reverse):
    """The layer as a plain scan of the step-by-step cell rules (lrpjax.cells.lstm_cell), no lengths."""
    xs = x[:, ::-1] if reverse else x
    carry = (lrpjax.rules.initial_state(c0), lrpjax.rules.initial_state(h0))

    def step(carry, x_t):
        c, h = lrpjax.cells.lstm_cell(p, carry, x_t, variant=variant)
        return (c, h), h

    fin, hs = jax.lax.scan(step, carry, jnp.swapaxes(xs, 0, 1))
    hs = jnp.swapaxes(hs, 0, 1)
    return (hs[:, ::-1] if reverse else hs), fin


@pytest.mark.parametrize("variant,reverse,bias_factor,also", [
    ("standard", True, 0.3, "grad"), ("no_forget", False, 0.0, "vmap"), ("no_output", True, 0.0, "")])
def test_fused_layer_kernel_equals_step_by_step_rules(variant, reverse, bias_factor, also):
    """lrpjax.lstm runs gate="all" through one fused kernel (lrpjax.fused); it must give exactly the
    relevance of the step-by-step rules, also for the initial states, under jit and vmap, and its
    outer gradient (a relevance-based loss) must be the same too."""
    rng = np.random.default_rng(11)
    B = 3
    p = to_lrpjax(random_oracle_params(rng, E, D, variant), variant)
    x = f64(rng.normal(size=(B, T, E)))
    h0, c0 = f64(rng.normal(size=(B, D)) * 0.5), f64(rng.normal(size=(B, D)) * 0.5)
    W1, W2 = f64(rng.normal(size=(D, C))), f64(rng.normal(size=(T * D, C)))

    def model(layer):
        def fn(x):
            hs, (_, h) = layer(x)
            return lrpjax.rules.linear((h, hs.reshape(hs.shape[0], -1)), (W1, W2))
        return fn

    fused = model(lambda x: lrpjax.lstm(p, x, h0=h0, c0=c0, variant=variant, reverse=reverse))
    stepwise = model(lambda x: _stepwise_lstm(p, x, h0, c0, variant, reverse))
    kw = dict(target=1, bias_factor=bias_factor)
    want = lrpjax.explain(stepwise, x, **kw)
    got = jax.jit(lambda x: lrpjax.explain(fused, x, **kw))(x)
    _close(got.relevance, want.relevance)
    for a, b in zip(got.state_relevance, want.state_relevance):
        _close(a, b)
    assert np.abs(np.asarray(want.relevance)).max() > 1e-3  # the case is not trivially zero
    if also == "grad":
        loss = lambda f: (lambda x: jnp.sum(lrpjax.relevance(f, x, **kw) ** 2))
        _close(jax.grad(loss(fused))(x), jax.grad(loss(stepwise))(x))
    if also != "vmap":
        return
    # rows are independent: vmap over single sequences (h0/c0 of row 0) equals the batch
    one = lambda layer: model(lambda x: layer(x[None]))
    f1 = one(lambda x: lrpjax.lstm(p, x, h0=h0[:1], c0=c0[:1], variant=variant, reverse=reverse))
    s1 = one(lambda x: _stepwise_lstm(p, x, h0[:1], c0[:1], variant, reverse))
    _close(jax.vmap(lambda r: lrpjax.relevance(f1, r, **kw))(x), jax.vmap(
        lambda r: lrpjax.relevance(s1, r, **kw))(x))


def test_fused_kernel_padding_with_lengths_and_reverse_matches_unpadded():
    """Padded rows (with a zero-length row) through the fused kernel: the valid part equals the
    unpadded sequence's relevance, padded steps get exactly 0, a zero-length row hands everything to
    its initial state."""
    rng = np.random.default_rng(12)
    p = to_lrpjax(random_oracle_params(rng, E, D, "standard"), "standard")
    W = f64(rng.normal(size=(2 * D, C)))
    lengths = np.array([T, 3, 0, 1])
    x = f64(rng.normal(size=(4, T, E)))

    def model(x, lengths=None):
        _, (_, hf) = lrpjax.lstm(p, x, lengths=lengths)
        _, (_, hb) = lrpjax.lstm(p, x, lengths=lengths, reverse=True)
        return lrpjax.rules.linear((hf, hb), (W[:D], W[D:]))

    ex = lrpjax.explain(lambda x: model(x, jnp.asarray(lengths)), x, target=0)
    for i, L in enumerate(lengths):
        if L == 0:
            assert np.all(np.asarray(ex.relevance[i]) == 0)
            continue
        one = lrpjax.explain(model, x[i:i + 1, :L], target=0)
        _close(ex.relevance[i, :L], one.relevance[0])
        assert np.all(np.asarray(ex.relevance[i, L:]) == 0)
        for a, b in zip(ex.state_relevance, one.state_relevance):
            _close(a[i], b[0])
