"""Plain jnp operations on the relevance path (pooling, merges, readouts) get their LRP rules.

Oracles: the literal epsilon rule of tests/oracle.py applied unit by unit (float64, 1e-10).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lrpjax
import oracle
from helpers import f64

T, D, C = 5, 3, 2
EPS = 1e-3


def _sum_pool_oracle(x, R_sum, bias_factor):
    """Each output unit j sums x[:, j] (fan-in T): epsilon rule with N = T, one unit at a time."""
    R = np.zeros_like(x)
    for j in range(x.shape[1]):
        R[:, j] = oracle.lrp_linear([x[:, j]], [np.ones((T, 1))], None, None, R_sum[j:j + 1], EPS,
                                    bias_factor)[0]
    return R


def _scale_oracle(a, c, R_out, bias_factor):
    """z_j = c * a_j, each unit with its single input (N = 1)."""
    return np.array([oracle.lrp_linear([a[j:j + 1]], [np.array([[c]])], None, None, R_out[j:j + 1],
                                       EPS, bias_factor)[0][0] for j in range(len(a))])


@pytest.mark.parametrize("bias_factor", [0.0, 1.0])
def test_mean_pooling_then_readout(bias_factor):
    rng = np.random.default_rng(0)
    x, W, b = rng.normal(size=(T, D)), rng.normal(size=(D, C)), rng.normal(size=C)
    model = lambda x: x.mean(axis=0) @ f64(W) + f64(b)
    R = lrpjax.relevance(model, f64(x), 1, bias_factor=bias_factor)
    s = x.sum(0)
    m = s / T
    z = m @ W + b
    R_m = oracle.lrp_linear([m], [W], b, z, np.array([0.0, z[1]]), EPS, bias_factor)[0]
    R_s = _scale_oracle(s, 1.0 / T, R_m, bias_factor)
    np.testing.assert_allclose(R, _sum_pool_oracle(x, R_s, bias_factor), atol=1e-10)
    if bias_factor == 1.0:
        np.testing.assert_allclose(R.sum(), z[1], atol=1e-10)


def test_max_pooling_is_winner_take_all():
    rng = np.random.default_rng(1)
    x, W = rng.normal(size=(T, D)), rng.normal(size=(D, C))
    R = lrpjax.relevance(lambda x: jnp.max(x, axis=0) @ f64(W), f64(x), 0)
    mx = x.max(0)
    z = mx @ W
    R_mx = oracle.lrp_linear([mx], [W], None, z, np.array([z[0], 0.0]), EPS, 0.0)[0]
    want = np.zeros_like(x)
    for j in range(D):
        want[int(np.argmax(x[:, j])), j] = R_mx[j]
    np.testing.assert_allclose(R, want, atol=1e-12)


@pytest.mark.parametrize("bias_factor", [0.0, 1.0])
def test_merges_and_bias_adds(bias_factor):
    rng = np.random.default_rng(2)
    a, b, c, W = rng.normal(size=D), rng.normal(size=D), rng.normal(size=D), rng.normal(size=(D, C))
    # (a + b) - c, then -1 * (...) @ W: accumulate, bias add (bias -c), scale(-1), linear
    model = lambda x: (-((x["a"] + x["b"]) - f64(c))) @ f64(W)
    R = lrpjax.relevance(model, {"a": f64(a), "b": f64(b)}, 0, bias_factor=bias_factor)
    I = np.eye(D)
    s = a + b
    u = s - c
    v = -u
    z = v @ W
    R_v = oracle.lrp_linear([v], [W], None, z, np.array([z[0], 0.0]), EPS, bias_factor)[0]
    R_u = _scale_oracle(u, -1.0, R_v, bias_factor)
    R_s = oracle.lrp_linear([s], [I], -c, u, R_u, EPS, bias_factor)[0]
    R_a, R_b = oracle.lrp_linear([a, b], [I, I], None, s, R_s, EPS, bias_factor)
    np.testing.assert_allclose(R["a"], R_a, atol=1e-10)
    np.testing.assert_allclose(R["b"], R_b, atol=1e-10)


def test_rewrites_inside_user_jit_and_batched():
    rng = np.random.default_rng(3)
    x, W = rng.normal(size=(4, T, D)), rng.normal(size=(D, C))
    pool = jax.jit(lambda h: jnp.sum(h, axis=-2) * 0.5)
    model = lambda x: pool(x) @ f64(W)
    R = jax.jit(lambda x: lrpjax.relevance(model, x, 1, bias_factor=1.0))(f64(x))
    z = (x.sum(1) * 0.5) @ W
    np.testing.assert_allclose(R.reshape(4, -1).sum(1), z[:, 1], atol=1e-10)
    for r in range(4):
        np.testing.assert_allclose(R[r], lrpjax.relevance(model, f64(x[r]), 1, bias_factor=1.0),
                                   atol=1e-12)


def test_products_of_two_relevance_paths_and_nonlinear_ops_stay_refused():
    # two different paths multiplied, neither a gate: no rule
    with pytest.raises(lrpjax.UnsupportedOperationError, match="mul.*neither factor is a gate"):
        lrpjax.relevance(lambda x: (x[:, :1] * x[:, 1:2]).sum(0) @ jnp.ones((1, C)), jnp.ones((T, D)))
    # a non-linear operation that is not element-wise: no rule
    with pytest.raises(lrpjax.UnsupportedOperationError, match="sort.*not element-wise"):
        lrpjax.relevance(lambda x: jnp.sort(x, axis=0).sum(0) @ jnp.ones((D, C)), jnp.ones((T, D)))


@pytest.mark.parametrize("fn", [jnp.exp, lambda v: v * v, jax.nn.gelu, jax.nn.silu, jax.nn.softplus,
                                jax.nn.relu, jax.nn.elu, jax.nn.leaky_relu, jax.nn.sigmoid, jnp.tanh])
def test_element_wise_functions_of_one_value_pass_relevance_unchanged(fn):
    rng = np.random.default_rng(5)
    x, W = rng.normal(size=(T, D)), rng.normal(size=(D, C))
    R = lrpjax.relevance(lambda x: fn(x).sum(0) @ f64(W), f64(x), 1, bias_factor=1.0)
    a = np.asarray(fn(f64(x)))
    s = a.sum(0)
    z = s @ W
    R_s = oracle.lrp_linear([s], [W], None, z, np.array([0.0, z[1]]), EPS, 1.0)[0]
    # identity rule: the relevance of fn(x) is the relevance of x
    np.testing.assert_allclose(R, _sum_pool_oracle_nonzero(a, R_s, 1.0), atol=1e-10)


def _sum_pool_oracle_nonzero(x, R_sum, bias_factor):
    """Sum pooling with the stabiliser share on the non-zero summands only (N = their number)."""
    R = np.zeros_like(x)
    for j in range(x.shape[1]):
        keep = [t for t in range(x.shape[0]) if x[t, j] != 0]
        if not keep:
            continue
        r = oracle.lrp_linear([x[keep, j]], [np.ones((len(keep), 1))], None, None, R_sum[j:j + 1],
                              EPS, bias_factor)[0]
        R[keep, j] = r
    return R


class PooledBiLSTM(nn.Module):
    """Bidirectional LSTM, outputs summed per step (merge_fn), mean over time, Dense readout."""

    @nn.compact
    def __call__(self, x):
        f64p = dict(param_dtype=jnp.float64)
        hs = nn.Bidirectional(nn.RNN(nn.LSTMCell(D, **f64p)), nn.RNN(nn.LSTMCell(D, **f64p)),
                              merge_fn=lambda a, b: a + b)(x)
        return nn.Dense(C, **f64p)(hs.mean(axis=-2))


def test_unmodified_linen_model_with_sum_merge_and_mean_pooling_matches_oracle():
    from test_flax_linen import cells, oracle_lstm_params
    E = 4
    model = PooledBiLSTM()
    x = np.random.default_rng(4).normal(size=(T, E))
    v = model.init(jax.random.key(0), f64(x))
    P = v["params"]
    pf, pb = (oracle_lstm_params(c) for c in cells(P))
    hf = oracle.lstm_forward(x, pf)["h"]
    hb = oracle.lstm_forward(x[::-1], pb)["h"][::-1]          # aligned with x
    merged = hf + hb
    s = merged.sum(0)
    m = s / T
    W, b = np.asarray(P["Dense_0"]["kernel"]), np.asarray(P["Dense_0"]["bias"])
    z = m @ W + b
    bf = 1.0
    R_m = oracle.lrp_linear([m], [W], b, z, np.array([z[0], 0.0]), EPS, bf)[0]
    R_merged = _sum_pool_oracle(merged, _scale_oracle(s, 1.0 / T, R_m, bf), bf)
    R_hf, R_hb = np.zeros((T, D)), np.zeros((T, D))
    I = np.eye(D)
    for t in range(T):
        R_hf[t], R_hb[t] = oracle.lrp_linear([hf[t], hb[t]], [I, I], None, merged[t], R_merged[t],
                                             EPS, bf)
    Rx_f, *_ = oracle.lstm_lrp(x, pf, R_hf, bias_factor=bf)
    Rx_b, *_ = oracle.lstm_lrp(x[::-1], pb, R_hb[::-1], bias_factor=bf)
    ex = lrpjax.explain(lambda x: model.apply(v, x), f64(x), 0, bias_factor=bf)
    np.testing.assert_allclose(ex.scores, z, atol=1e-12)
    np.testing.assert_allclose(ex.relevance, Rx_f + Rx_b[::-1], atol=1e-10)
    np.testing.assert_allclose(ex.absorbed, 0.0, atol=1e-10)
