"""Each LRP rule against the literal numpy oracle (float64, 1e-10), in isolation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lrpjax
import oracle
from helpers import f64, rule_vjp
from lrpjax import rules

TOL = 1e-10


@pytest.mark.parametrize("bias_factor", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("eps", [1e-3, 0.3])
def test_linear_epsilon_rule_matches_oracle(bias_factor, with_bias, eps):
    rng = np.random.default_rng(1)
    a1, a2 = rng.normal(size=5), rng.normal(size=3)
    W1, W2 = rng.normal(size=(5, 4)), rng.normal(size=(3, 4))
    b = rng.normal(size=4) if with_bias else None
    R = rng.normal(size=4)
    z, (ins, _, _) = rule_vjp(lambda i, w, bb: rules.linear(i, w, bb), ((f64(a1), f64(a2)),
                              (f64(W1), f64(W2)), None if b is None else f64(b)), f64(R),
                              eps=eps, bias_factor=bias_factor)
    want = oracle.lrp_linear([a1, a2], [W1, W2], b, None, R, eps, bias_factor)
    np.testing.assert_allclose(z, a1 @ W1 + a2 @ W2 + (0 if b is None else b), atol=TOL)
    for got, exp in zip(ins, want):
        np.testing.assert_allclose(got, exp, atol=TOL, rtol=0)


def test_linear_sign_of_zero_is_plus_one():
    # z_0 = 0 exactly: the stabiliser must be +eps (R_i = a_i w_i0 / eps * R_0), not -eps or 0.
    a = np.array([1.0, -1.0])
    W = np.array([[2.0, 1.0], [2.0, 0.5]])
    R = np.array([1.0, 0.0])
    _, (ins, _) = rule_vjp(lambda i, w: rules.linear(i, w), ((f64(a),), (f64(W),)), f64(R),
                           eps=1e-3)
    np.testing.assert_allclose(ins[0], [2.0 / 1e-3, -2.0 / 1e-3], rtol=1e-12)
    np.testing.assert_allclose(ins[0], oracle.lrp_linear([a], [W], None, None, R, 1e-3, 0.0)[0],
                               atol=TOL)


def test_linear_batched_rows_are_independent():
    rng = np.random.default_rng(2)
    A, W, b, R = rng.normal(size=(6, 5)), rng.normal(size=(5, 3)), rng.normal(size=3), rng.normal(
        size=(6, 3))
    _, (RA,) = rule_vjp(lambda a: rules.linear(a, f64(W), f64(b)), (f64(A),), f64(R),
                        bias_factor=0.5)
    for r in range(6):
        want = oracle.lrp_linear([A[r]], [W], b, None, R[r], 1e-3, 0.5)[0]
        np.testing.assert_allclose(RA[r], want, atol=TOL)


@pytest.mark.parametrize("bias_factor", [0.0, 1.0])
def test_accumulate_matches_oracle_dense_with_identity_weights(bias_factor):
    rng = np.random.default_rng(3)
    d = 4
    t1, t2, R = rng.normal(size=d), rng.normal(size=d), rng.normal(size=d)
    t1[0], t2[0] = 0.5, -0.5  # c_0 = 0 exactly: sign(0) = +1
    _, (r1, r2) = rule_vjp(lambda a, b: rules.accumulate(a, b), (f64(t1), f64(t2)), f64(R),
                           bias_factor=bias_factor)
    I = np.eye(d)
    w1, w2 = oracle.lrp_linear([t1, t2], [I, I], None, None, R, 1e-3, bias_factor)
    np.testing.assert_allclose(r1, w1, atol=TOL)
    np.testing.assert_allclose(r2, w2, atol=TOL)
    if bias_factor == 1.0:
        np.testing.assert_allclose(np.sum(r1) + np.sum(r2), np.sum(R), atol=TOL)


def test_act_passes_relevance_unchanged():
    R = np.array([0.3, -2.0, 5.0])
    for fn in (jnp.tanh, jax.nn.sigmoid):
        out, (r,) = rule_vjp(lambda z: rules.act(fn, z), (f64([0.0, 1.0, -3.0]),), f64(R))
        np.testing.assert_array_equal(r, R)
        np.testing.assert_allclose(out, fn(f64([0.0, 1.0, -3.0])))


@pytest.mark.parametrize("rule", lrpjax.GATE_RULES)
def test_gated_rules_match_oracle(rule):
    rng = np.random.default_rng(4)
    gate = rng.uniform(0, 1, 7)
    signal = rng.normal(size=7)
    signal[0] = -gate[0]  # gate + signal = 0 exactly: prop's sign(0) = +1
    R = rng.normal(size=7)
    out, (rg, rs) = rule_vjp(lambda g, s: rules.gated(g, s), (f64(gate), f64(signal)), f64(R),
                             gate=rule)
    want_g, want_s = oracle.lrp_gated(gate, signal, R, rule, 1e-3)
    np.testing.assert_allclose(out, gate * signal, atol=TOL)
    np.testing.assert_allclose(rg, want_g, rtol=1e-12, atol=TOL)
    np.testing.assert_allclose(rs, want_s, rtol=1e-12, atol=TOL)


def test_plain_mode_is_ordinary_jax():
    # Outside lrpjax.relevance the rules are plain functions with ordinary gradients.
    a, W = f64([1.0, 2.0]), f64([[1.0], [3.0]])
    g = jax.grad(lambda a: rules.linear(a, W)[0] * jnp.sum(rules.gated(a, a)))(a)
    z = float(a @ W[:, 0])
    np.testing.assert_allclose(g, W[:, 0] * jnp.sum(a * a) + z * 2 * a)


@pytest.mark.parametrize("kwargs, name", [
    (dict(eps=0.0), "eps"), (dict(eps=-1.0), "eps"), (dict(eps=float("nan")), "eps"),
    (dict(bias_factor=1.5), "bias_factor"), (dict(bias_factor=-0.1), "bias_factor"),
    (dict(gate="sum"), "gate"),
])
def test_make_config_rejects_bad_options(kwargs, name):
    with pytest.raises(ValueError, match=name):
        rules.make_config(**kwargs)


def test_linear_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"weights\[0\]"):
        rules.linear(jnp.ones((2, 3)), jnp.ones((4, 5)))
