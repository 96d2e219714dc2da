"""LayerNorm, Dropout and Embed in unmodified linen / nnx models (oracle: literal numpy, float64)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lrpjax
import oracle
from helpers import f64

D, C = 4, 2


def layer_norm_oracle(x, scale, bias, ln_eps, R_out, eps, bias_factor):
    """LayerNorm with sigma held constant = the affine map y = x W + b, W_ki = g_i/sigma (d_ki - 1/D)."""
    n = x.shape[0]
    mean = sum(x) / n
    sigma = np.sqrt(sum((xi - mean) ** 2 for xi in x) / n + ln_eps)
    W = np.zeros((n, n))
    for k in range(n):
        for i in range(n):
            W[k, i] = scale[i] / sigma * ((1.0 if k == i else 0.0) - 1.0 / n)
    y = (x - mean) / sigma * scale + bias
    return oracle.lrp_linear([x], [W], bias, y, R_out, eps, bias_factor)[0], y


@pytest.mark.parametrize("bias_factor", [0.0, 1.0])
@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_layer_norm_rule_matches_oracle(api, bias_factor):
    rng = np.random.default_rng(0)
    x, W = rng.normal(size=D), rng.normal(size=(D, C))
    scale, bias = rng.normal(size=D), rng.normal(size=D)
    if api == "linen":
        ln = nn.LayerNorm(epsilon=1e-5, param_dtype=jnp.float64)
        v = {"params": {"scale": f64(scale), "bias": f64(bias)}}
        norm = lambda x: ln.apply(v, x)
    else:
        ln = nnx.LayerNorm(D, epsilon=1e-5, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        ln.scale[...], ln.bias[...] = f64(scale), f64(bias)
        norm = lambda x: ln(x)
    model = lambda x: lrpjax.dense(norm(x), f64(W))
    ex = lrpjax.explain(model, f64(x), 0, bias_factor=bias_factor)
    # oracle: readout, then the layer norm as an affine layer
    _, y = layer_norm_oracle(x, scale, bias, 1e-5, np.zeros(D), 1e-3, bias_factor)
    z = y @ W
    R_y = oracle.lrp_linear([y], [W], None, z, np.array([z[0], 0.0]), 1e-3, bias_factor)[0]
    R_x, _ = layer_norm_oracle(x, scale, bias, 1e-5, R_y, 1e-3, bias_factor)
    np.testing.assert_allclose(ex.scores, z, atol=1e-12)
    np.testing.assert_allclose(ex.relevance, R_x, atol=1e-10)
    if bias_factor == 1.0:
        np.testing.assert_allclose(ex.relevance.sum(), z[0], atol=1e-10)


class TokenModel(nn.Module):
    @nn.compact
    def __call__(self, ids, deterministic=True):
        e = nn.Embed(50, 5, param_dtype=jnp.float64)(ids)
        h = nn.RNN(nn.LSTMCell(D, param_dtype=jnp.float64))(e)
        h = nn.Dropout(0.3, deterministic=deterministic)(nn.LayerNorm(param_dtype=jnp.float64)(h))
        return nn.Dense(C, param_dtype=jnp.float64)(h[..., -1, :])


def test_explain_tokens_linen_equals_explaining_the_embedded_input():
    ids = jnp.array([[3, 14, 15, 9, 2], [2, 6, 5, 3, 5]])
    m = TokenModel()
    v = m.init(jax.random.key(0), ids)
    ex = lrpjax.explain_tokens(lambda ids: m.apply(v, ids), ids, bias_factor=1.0)
    assert ex.relevance.shape == ids.shape
    table = v["params"]["Embed_0"]["embedding"]

    class OnEmbedded(nn.Module):  # the same model fed with the embedded ids directly
        @nn.compact
        def __call__(self, e):
            h = nn.RNN(nn.LSTMCell(D, param_dtype=jnp.float64))(e)
            return nn.Dense(C, param_dtype=jnp.float64)(nn.LayerNorm(param_dtype=jnp.float64)(h)[..., -1, :])

    v2 = {"params": {k: v["params"][k] for k in ("LSTMCell_0", "LayerNorm_0", "Dense_0")}}
    R_emb = lrpjax.relevance(lambda e: OnEmbedded().apply(v2, e), table[ids], ex.target,
                             bias_factor=1.0)
    np.testing.assert_allclose(ex.relevance, R_emb.sum(-1), atol=1e-12)
    np.testing.assert_allclose(ex.absorbed, 0.0, atol=1e-10)
    # under jit, and the dropout really is the identity in deterministic mode
    Rj = jax.jit(lambda ids: lrpjax.explain_tokens(lambda i: m.apply(v, i), ids,
                                                   bias_factor=1.0).relevance)(ids)
    np.testing.assert_allclose(Rj, ex.relevance, atol=1e-12)


def test_explain_tokens_nnx_and_bad_ids():
    class N(nnx.Module):
        def __init__(self, rngs):
            self.emb = nnx.Embed(50, 5, rngs=rngs)
            self.rnn = nnx.RNN(nnx.GRUCell(5, D, rngs=rngs))
            self.out = nnx.Linear(D, C, rngs=rngs)

        def __call__(self, ids):
            return self.out(self.rnn(self.emb(ids))[..., -1, :])

    n = N(nnx.Rngs(1))
    ids = jnp.array([[1, 2, 3], [4, 5, 6]])
    ex = lrpjax.explain_tokens(lambda i: n(i), ids, bias_factor=1.0)
    R = lrpjax.relevance(lambda e: n.out(n.rnn(e)[..., -1, :]), n.emb(ids), ex.target, bias_factor=1.0)
    np.testing.assert_allclose(ex.relevance, R.sum(-1), atol=1e-5)
    with pytest.raises(ValueError, match="integer"):
        lrpjax.explain_tokens(lambda i: n(i), ids.astype(jnp.float32))
    with pytest.raises(ValueError, match="exactly one embedding"):
        lrpjax.explain_tokens(lambda i: n(i) + n(i), ids)


# ------------------------------------------------------------------------------------------------
# ConvLSTMCell: an LSTM whose gate maps are convolutions. Oracle: the convolutions unrolled into
# dense matrices (literal loops) and the LSTM oracle. With bias_factor = 0 the receptive-field form
# of the epsilon rule equals the dense one (unconnected weights are 0), so they must agree exactly.

L, CIN, F, KS = 5, 2, 3, 3


def unrolled(kernel, block):
    """Dense (L*C_in, L*F) matrix of a 1-d SAME convolution (kernel (KS, C_in, 4F)) for one gate."""
    c_in = kernel.shape[1]
    M = np.zeros((L * c_in, L * F))
    for lo in range(L):
        for k in range(KS):
            li = lo + k - KS // 2
            if 0 <= li < L:
                for ci in range(c_in):
                    for fo in range(F):
                        M[li * c_in + ci, lo * F + fo] = kernel[k, ci, block * F + fo]
    return M


class ConvModel(nn.Module):
    @nn.compact
    def __call__(self, x):
        c, _ = nn.RNN(nn.ConvLSTMCell(F, (KS,), param_dtype=jnp.float64), return_carry=True)(x)
        h = c[1]
        return nn.Dense(C, param_dtype=jnp.float64)(h.reshape(h.shape[:-2] + (-1,)))


@pytest.mark.parametrize("gate", ["all", "half"])
def test_conv_lstm_matches_unrolled_oracle(gate):
    T = 4
    x = np.random.default_rng(5).normal(size=(T, L, CIN))
    m = ConvModel()
    v = m.init(jax.random.key(6), f64(x))
    P = v["params"]
    cell = P[[k for k in P if k.startswith("ConvLSTMCell")][0]]
    kx, kh = np.asarray(cell["ih"]["kernel"]), np.asarray(cell["hh"]["kernel"])
    b = np.asarray(cell["ih"]["bias"]) + np.asarray(cell["hh"]["bias"])
    order = {"i": 0, "g": 1, "f": 2, "o": 3}
    op = {"Wx": {q: unrolled(kx, k).T for q, k in order.items()},
          "Wh": {q: unrolled(kh, k).T for q, k in order.items()},
          "b": {q: np.tile(b[k * F:(k + 1) * F] + (1.0 if q == "f" else 0.0), L)
                for q, k in order.items()}}
    xs = x.reshape(T, L * CIN)
    hs = oracle.lstm_forward(xs, op)["h"]
    W, bd = np.asarray(P["Dense_0"]["kernel"]), np.asarray(P["Dense_0"]["bias"])
    z = hs[-1] @ W + bd
    R_hs = np.zeros_like(hs)
    R_hs[-1] = oracle.lrp_linear([hs[-1]], [W], bd, z, np.array([0.0, z[1]]), 1e-3, 0.0)[0]
    R_x, *_ = oracle.lstm_lrp(xs, op, R_hs, gate=gate)
    ex = lrpjax.explain(lambda x: m.apply(v, x), f64(x), 1, gate=gate)
    np.testing.assert_allclose(ex.scores, z, atol=1e-12)
    np.testing.assert_allclose(ex.relevance.reshape(T, -1), R_x, atol=1e-10)
    # bias_factor = 1: every unit's share stays within its receptive field and all of it arrives
    ex1 = jax.jit(lambda x: lrpjax.explain(lambda x: m.apply(v, x), x, 1, bias_factor=1.0,
                                           gate=gate))(f64(x))
    np.testing.assert_allclose(ex1.absorbed, 0.0, atol=1e-10)


def test_nnx_dropout_deterministic_is_identity():
    rngs = nnx.Rngs(0)
    drop = nnx.Dropout(0.5, deterministic=True, rngs=rngs)
    lin = nnx.Linear(D, C, rngs=rngs, dtype=jnp.float64, param_dtype=jnp.float64)
    x = f64(np.random.default_rng(9).normal(size=D))
    R = lrpjax.relevance(lambda x: lin(drop(x)), x, 1)
    np.testing.assert_allclose(R, lrpjax.relevance(lambda x: lin(x), x, 1), atol=0)
