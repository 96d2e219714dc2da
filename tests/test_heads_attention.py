"""Attention / pooling heads written in plain jnp and Flax get the LRP rules R1-R5.

The input x IS the sequence of hidden states h (B, T, D) (no recurrent layer), so the literal
float64 oracle of tests/oracle_heads.py is just the head. Padded batches use lengths (T, 3, 1) and
either a ``-inf`` or a ``-1e9`` mask written with ``jnp.where(mask, s, value)``.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lrpjax
import oracle
import oracle_heads as oh

B, T, D, H, H2, C = 3, 6, 4, 3, 5, 3
G1, G2 = 2, 3                        # DenseGeneral output axes of the einsum projection
LENGTHS = np.array([T, 3, 1])
MASKS = np.arange(T)[None, :] < LENGTHS[:, None]          # (B, T) bools
TARGETS = np.array([0, 2, 1])
GATES = ("all", "half", "prop", "abs")
# each gate rule once with each bias_factor across the tests below (not the full product: suite time)
GATE_CASES = [("all", 0.0), ("half", 1.0), ("prop", 1.0), ("abs", 0.0), ("all", 1.0)]
MASK_VALUES = {"inf": -math.inf, "1e9": -1e9}
RTOL = 1e-10


# ---------------------------------------------------------------------------
# data, weights, models
# ---------------------------------------------------------------------------
def _h(seed=0, shape=(B, T, D)):
    return np.random.default_rng(seed).normal(size=shape)


def _attn_params(seed=1, proj=False):
    rng = np.random.default_rng(seed)
    Ds = G1 * G2 if proj else D
    P = {"W1": rng.normal(0, 0.8, (Ds, H)), "w2": rng.normal(0, 1.0, (H,)),
         "W3": rng.normal(0, 0.6, (Ds, H2)), "b3": rng.normal(0, 0.3, (H2,)),
         "W4": rng.normal(0, 0.8, (H2, C))}
    if proj:
        P["Wg"] = rng.normal(0, 0.6, (D, G1, G2))
        P["bg"] = rng.normal(0, 0.2, (G1, G2))
    return P


def _mlp_params(seed=2):
    rng = np.random.default_rng(seed)
    return {"W1": rng.normal(0, 0.8, (D, H2)), "b1": rng.normal(0, 0.3, (H2,)),
            "W2": rng.normal(0, 0.8, (H2, C)), "b2": rng.normal(0, 0.3, (C,))}


def _j(P, dtype=jnp.float64):
    return {k: jnp.asarray(v, dtype=dtype) for k, v in P.items()}


def attention_head(P, mask, pool="matmul", mask_value=-jnp.inf, score_transform=None):
    """Plain-jnp MLP attention head (batched (B, T, D) or single (T, D) input):
    scores = tanh(h @ W1) @ w2 -> where(mask, ., mask_value) -> softmax over t -> context -> tanh
    Dense(H2) -> Dense(C, no bias). With "Wg"/"bg", h first goes through a DenseGeneral einsum + tanh."""
    mask = jnp.asarray(mask)

    def model(h):
        sig = h
        if "Wg" in P:
            spec = "btd,dhk->bthk" if h.ndim == 3 else "td,dhk->thk"
            g = jnp.tanh(jnp.einsum(spec, h, P["Wg"]) + P["bg"])
            sig = g.reshape(g.shape[:-2] + (G1 * G2,))
        s = jnp.tanh(sig @ P["W1"]) @ P["w2"]                    # (..., T): `a @ v`, one unit
        if score_transform is not None:
            s = score_transform(s)
        s = jnp.where(mask, s, mask_value)
        alpha = jax.nn.softmax(s, axis=-1)
        if pool == "matmul":
            ctx = (alpha[..., None, :] @ sig).squeeze(-2)
        elif pool == "einsum":
            ctx = (jnp.einsum("bt,btd->bd", alpha, sig) if sig.ndim == 3
                   else jnp.einsum("t,td->d", alpha, sig))
        elif pool == "mulsum":
            ctx = (alpha[..., None] * sig).sum(sig.ndim - 2)
        else:
            raise ValueError(pool)
        y = jnp.tanh(ctx @ P["W3"] + P["b3"])
        return y @ P["W4"]
    return model


class AttentionHead(nn.Module):
    """The same head as a flax.linen module (nn.Dense / nn.tanh / nn.softmax)."""
    mask_value: float = -jnp.inf

    @nn.compact
    def __call__(self, h, mask):
        s = nn.tanh(nn.Dense(H, use_bias=False, name="keys")(h))
        s = nn.Dense(1, use_bias=False, name="energy")(s).squeeze(-1)
        s = jnp.where(mask, s, self.mask_value)
        alpha = nn.softmax(s, axis=-1)
        ctx = (alpha[..., None, :] @ h).squeeze(-2)
        y = nn.tanh(nn.Dense(H2, name="hidden")(ctx))
        return nn.Dense(C, use_bias=False, name="logits")(y)


def _flax_variables(P, dtype=jnp.float64):
    return {"params": {"keys": {"kernel": jnp.asarray(P["W1"], dtype)},
                       "energy": {"kernel": jnp.asarray(P["w2"][:, None], dtype)},
                       "hidden": {"kernel": jnp.asarray(P["W3"], dtype),
                                  "bias": jnp.asarray(P["b3"], dtype)},
                       "logits": {"kernel": jnp.asarray(P["W4"], dtype)}}}


def pooled_mlp(P, mask, lengths, pool):
    """Sum / mean pooling over steps + Dense + relu + Dense (batched input)."""
    mask = jnp.asarray(mask)
    lengths = jnp.asarray(lengths, dtype=P["W1"].dtype)

    def model(h):
        if pool == "mask_mul_div":
            q = (h * mask[..., None].astype(h.dtype)).sum(1) / lengths[:, None]
        elif pool == "where_sum_div":
            q = jnp.where(mask[..., None], h, 0).sum(1) / lengths[:, None]
        elif pool == "mean":
            q = h.mean(1)
        elif pool == "sum":
            q = h.sum(1)
        else:
            raise ValueError(pool)
        r = jax.nn.relu(q @ P["W1"] + P["b1"])
        return r @ P["W2"] + P["b2"]
    return model


def _close(R, want, rtol=RTOL):
    want = np.asarray(want, dtype=np.float64)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(np.asarray(R, dtype=np.float64), want, rtol=rtol, atol=rtol * scale)


def _assert_padded_zero(R, masks=MASKS):
    R = np.asarray(R)
    for r in range(R.shape[0]):
        pad = R[r][~np.asarray(masks[r])]
        assert np.all(pad == 0.0), f"row {r}: padded steps got relevance {pad}"


# ---------------------------------------------------------------------------
# The oracle, checked on its own
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("bias_factor", [0.0, 1.0])
def test_oracle_dense_equals_reference_oracle(bias_factor):
    rng = np.random.default_rng(10)
    a, W, b, R = rng.normal(size=5), rng.normal(size=(5, 3)), rng.normal(size=3), rng.normal(size=3)
    want = oracle.lrp_linear([a], [W], b, None, R, 0.1, bias_factor)[0]
    np.testing.assert_allclose(oh.lrp_dense(a, W, b, R, 0.1, bias_factor), want, atol=1e-13)
    # several contracted axes = flattened input (N = 2 * 3)
    A, W3 = rng.normal(size=(2, 3)), rng.normal(size=(2, 3, 4))
    R4 = rng.normal(size=4)
    want = oracle.lrp_linear([A.reshape(-1)], [W3.reshape(6, 4)], None, None, R4, 1e-3, bias_factor)[0]
    np.testing.assert_allclose(oh.lrp_dense(A, W3, None, R4, 1e-3, bias_factor).reshape(-1), want,
                               atol=1e-12)


def test_oracle_softmax_rule_is_input_times_jacobian_over_alpha():
    """R_s = s * J^T (R_alpha / alpha) with J the softmax Jacobian (finite differences)."""
    rng = np.random.default_rng(11)
    s, R_alpha = rng.normal(size=5), rng.normal(size=5)
    alpha = oh.softmax_forward(s)
    J = np.zeros((5, 5))
    for i in range(5):
        d = np.zeros(5)
        d[i] = 1e-6
        J[:, i] = (oh.softmax_forward(s + d) - oh.softmax_forward(s - d)) / 2e-6
    want = s * (J.T @ (R_alpha / alpha))
    np.testing.assert_allclose(oh.lrp_softmax(s, alpha, R_alpha), want, atol=1e-8)
    s2 = s.copy()
    s2[3:] = -np.inf
    alpha2 = oh.softmax_forward(s2)
    assert np.all(alpha2[3:] == 0.0)
    R2 = oh.lrp_softmax(s2, alpha2, R_alpha * (alpha2 > 0))
    assert np.all(np.isfinite(R2)) and np.all(R2[3:] == 0.0)


@pytest.mark.parametrize("gate", GATES)
def test_oracle_gate_split_and_attention_pool_closed_form(gate):
    rng = np.random.default_rng(12)
    alpha, h, R = oh.softmax_forward(rng.normal(size=T)), rng.normal(size=(T, D)), rng.normal(size=D)
    R_alpha, R_h = oh.lrp_attention_pool(alpha, h, R, 1e-3, 0.0, gate)
    z = alpha @ h
    zs = z + 1e-3 * np.where(z >= 0, 1.0, -1.0)
    R_P = alpha[:, None] * h / zs * R
    if gate == "all":
        np.testing.assert_allclose(R_h, R_P, atol=1e-12)
        assert np.all(R_alpha == 0.0)
    elif gate == "half":
        np.testing.assert_allclose(R_h, R_P / 2, atol=1e-12)
        np.testing.assert_allclose(R_alpha, (R_P / 2).sum(1), atol=1e-12)
    else:  # vectorised transcription of "prop" / "abs"
        A = np.broadcast_to(alpha[:, None], h.shape)
        if gate == "prop":
            u = A + h + 1e-3 * np.where(A + h >= 0, 1.0, -1.0)
            wa, wh = A / u, h / u
        else:
            u = np.abs(A) + np.abs(h) + 1e-3
            wa, wh = np.abs(A) / u, np.abs(h) / u
        np.testing.assert_allclose(R_h, wh * R_P, atol=1e-12)
        np.testing.assert_allclose(R_alpha, (wa * R_P).sum(1), atol=1e-12)


@pytest.mark.parametrize("mask_value", list(MASK_VALUES.values()), ids=list(MASK_VALUES))
@pytest.mark.parametrize("proj", [False, True])
def test_oracle_conserves_with_bias_factor_one_under_gate_all(mask_value, proj):
    h, P = _h(), _attn_params(proj=proj)
    R, logits = oh.attention_head_lrp_batch(h, MASKS, P, TARGETS, eps=0.1, bias_factor=1.0,
                                            gate="all", mask_value=mask_value)
    for r in range(B):
        np.testing.assert_allclose(R[r].sum(), logits[r, TARGETS[r]], rtol=1e-12, atol=1e-12)
    _assert_padded_zero(R)
    for pool in oh.POOLS:
        lengths = LENGTHS if pool in ("mask_mul_div", "where_sum_div") else np.full(B, T)
        masks = MASKS if pool in ("mask_mul_div", "where_sum_div") else np.ones((B, T), bool)
        R, logits = oh.pooled_mlp_lrp_batch(h, masks, lengths, _mlp_params(), TARGETS, pool,
                                            eps=0.1, bias_factor=1.0)
        for r in range(B):
            np.testing.assert_allclose(R[r].sum(), logits[r, TARGETS[r]], rtol=1e-12, atol=1e-12)
        _assert_padded_zero(R, masks)
    rng = np.random.default_rng(13)
    P2 = {"W": rng.normal(size=(T, D, 3)), "b": rng.normal(size=3), "V": rng.normal(size=(3, C))}
    R, logits = oh.einsum2_lrp(h[0], P2, 1, eps=0.1, bias_factor=1.0)
    np.testing.assert_allclose(R.sum(), logits[1], rtol=1e-12)


def test_oracle_forward_matches_jnp_models():
    h, P = _h(), _attn_params(proj=True)
    for mv in MASK_VALUES.values():
        out = attention_head(_j(P), MASKS, mask_value=mv)(jnp.asarray(h))
        for r in range(B):
            np.testing.assert_allclose(out[r], oh.attention_head_forward(h[r], MASKS[r], P, mv)["logits"],
                                       atol=1e-12)


# ---------------------------------------------------------------------------
# (a) the SST-2-like MLP attention head in plain jnp
# ---------------------------------------------------------------------------
# eps 1e-3 with the -inf mask, 0.1 with the large negative one (suite time: not the full product)
@pytest.mark.parametrize("bias_factor", [0.0, 1.0])
@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("mask", list(MASK_VALUES), ids=list(MASK_VALUES))
def test_attention_head_jnp_matches_oracle(mask, gate, bias_factor):
    eps = 1e-3 if mask == list(MASK_VALUES)[0] else 0.1
    h, P = _h(), _attn_params()
    mv = MASK_VALUES[mask]
    model = attention_head(_j(P), MASKS, mask_value=mv)
    R = lrpjax.relevance(model, jnp.asarray(h), jnp.asarray(TARGETS), eps=eps,
                         bias_factor=bias_factor, gate=gate)
    want, _ = oh.attention_head_lrp_batch(h, MASKS, P, TARGETS, eps=eps, bias_factor=bias_factor,
                                          gate=gate, mask_value=mv)
    assert R.shape == h.shape and R.dtype == jnp.float64
    _close(R, want)


@pytest.mark.parametrize("mask", list(MASK_VALUES), ids=list(MASK_VALUES))
def test_attention_head_explain_conserves_under_gate_all(mask):
    h, P = _h(), _attn_params()
    model = attention_head(_j(P), MASKS, mask_value=MASK_VALUES[mask])
    ex = lrpjax.explain(model, jnp.asarray(h), jnp.asarray(TARGETS), bias_factor=1.0, gate="all")
    logits = np.asarray(model(jnp.asarray(h)))
    np.testing.assert_allclose(ex.total, logits[np.arange(B), TARGETS], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ex.absorbed, 0.0, atol=1e-10)
    np.testing.assert_array_equal(np.asarray(ex.initial_state), 0.0)
    _assert_padded_zero(ex.relevance)


# ---------------------------------------------------------------------------
# (b) other spellings of the pooling, and a DenseGeneral (einsum) projection
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("gate, bias_factor", GATE_CASES)
@pytest.mark.parametrize("pool", ["einsum", "mulsum"])
def test_pooling_spellings_match_oracle(pool, gate, bias_factor):
    h, P = _h(3), _attn_params(4)
    model = attention_head(_j(P), MASKS, pool=pool)
    R = lrpjax.relevance(model, jnp.asarray(h), jnp.asarray(TARGETS), bias_factor=bias_factor,
                         gate=gate)
    want, _ = oh.attention_head_lrp_batch(h, MASKS, P, TARGETS, bias_factor=bias_factor, gate=gate)
    _close(R, want)


@pytest.mark.parametrize("gate, bias_factor", [("all", 1.0), ("prop", 0.0), ("half", 1.0)])
def test_densegeneral_einsum_projection_then_attention(gate, bias_factor):
    h, P = _h(5), _attn_params(6, proj=True)
    model = attention_head(_j(P), MASKS, mask_value=-1e9)
    R = lrpjax.relevance(model, jnp.asarray(h), jnp.asarray(TARGETS), eps=0.1,
                         bias_factor=bias_factor, gate=gate)
    want, _ = oh.attention_head_lrp_batch(h, MASKS, P, TARGETS, eps=0.1, bias_factor=bias_factor,
                                          gate=gate, mask_value=-1e9)
    _close(R, want)


@pytest.mark.parametrize("bias_factor", [0.0, 1.0])
def test_einsum_with_two_contracted_axes(bias_factor):
    rng = np.random.default_rng(7)
    P2 = {"W": rng.normal(size=(T, D, 3)), "b": rng.normal(size=3), "V": rng.normal(size=(3, C))}
    Pj = _j(P2)
    model = lambda h: jnp.tanh(jnp.einsum("btd,tdk->bk", h, Pj["W"]) + Pj["b"]) @ Pj["V"]
    h = _h(8)
    R = lrpjax.relevance(model, jnp.asarray(h), jnp.asarray(TARGETS), bias_factor=bias_factor)
    want = np.stack([oh.einsum2_lrp(h[r], P2, TARGETS[r], bias_factor=bias_factor)[0]
                     for r in range(B)])
    _close(R, want)


# ---------------------------------------------------------------------------
# (a) as a flax.linen module
# ---------------------------------------------------------------------------
def test_flax_head_param_tree_and_forward():
    P = _attn_params()
    mod = AttentionHead()
    init = mod.init(jax.random.key(0), jnp.asarray(_h()), jnp.asarray(MASKS))
    v = _flax_variables(P)
    assert jax.tree.structure(init) == jax.tree.structure(v)
    assert all(a.shape == b.shape for a, b in zip(jax.tree.leaves(init), jax.tree.leaves(v)))
    out = mod.apply(v, jnp.asarray(_h()), jnp.asarray(MASKS))
    np.testing.assert_allclose(out, attention_head(_j(P), MASKS)(jnp.asarray(_h())), atol=1e-12)


@pytest.mark.parametrize("bias_factor", [0.0, 1.0])
@pytest.mark.parametrize("gate", GATES)
def test_flax_attention_head_matches_oracle(gate, bias_factor):
    # the mask forms and eps values are covered by the jnp head above; this checks the Flax spelling
    mask, eps = list(MASK_VALUES)[0], 1e-3
    h, P = _h(9), _attn_params(10)
    mv = MASK_VALUES[mask]
    mod, v = AttentionHead(mask_value=mv), _flax_variables(P)
    m = jnp.asarray(MASKS)
    R = lrpjax.relevance(lambda x: mod.apply(v, x, m), jnp.asarray(h), jnp.asarray(TARGETS),
                         eps=eps, bias_factor=bias_factor, gate=gate)
    want, _ = oh.attention_head_lrp_batch(h, MASKS, P, TARGETS, eps=eps, bias_factor=bias_factor,
                                          gate=gate, mask_value=mv)
    _close(R, want)


# ---------------------------------------------------------------------------
# (c) masked mean / sum pooling + Dense + relu + Dense
# ---------------------------------------------------------------------------
def _pool_setup(pool):
    masked = pool in ("mask_mul_div", "where_sum_div")
    masks = MASKS if masked else np.ones((B, T), bool)
    lengths = LENGTHS if masked else np.full(B, T)
    return masks, lengths


@pytest.mark.parametrize("bias_factor", [0.0, 1.0])
@pytest.mark.parametrize("pool", oh.POOLS)
def test_pooled_mlp_matches_oracle(pool, bias_factor):
    eps = 0.1 if bias_factor else 1e-3
    h, P = _h(11), _mlp_params()
    masks, lengths = _pool_setup(pool)
    model = pooled_mlp(_j(P), masks, lengths, pool)
    R = lrpjax.relevance(model, jnp.asarray(h), jnp.asarray(TARGETS), eps=eps,
                         bias_factor=bias_factor)
    want, logits = oh.pooled_mlp_lrp_batch(h, masks, lengths, P, TARGETS, pool, eps=eps,
                                           bias_factor=bias_factor)
    np.testing.assert_allclose(model(jnp.asarray(h)), logits, atol=1e-12)
    _close(R, want)


@pytest.mark.parametrize("pool", ["mask_mul_div", "where_sum_div"])
def test_masked_mean_pooling_conserves_and_padded_steps_get_exact_zero(pool):
    h, P = _h(12), _mlp_params(13)
    model = pooled_mlp(_j(P), MASKS, LENGTHS, pool)
    ex = lrpjax.explain(model, jnp.asarray(h), jnp.asarray(TARGETS), bias_factor=1.0)
    logits = np.asarray(model(jnp.asarray(h)))
    R = np.asarray(ex.relevance)
    np.testing.assert_allclose(R.reshape(B, -1).sum(1), logits[np.arange(B), TARGETS],
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ex.absorbed, 0.0, atol=1e-10)
    _assert_padded_zero(R)


# ---------------------------------------------------------------------------
# (d) jit and vmap equal eager
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("gate", ["all", "prop"])
@pytest.mark.parametrize("pool", ["matmul", "mulsum", "einsum"])
def test_jit_and_vmap_equal_eager(pool, gate):
    h, P = jnp.asarray(_h(14)), _j(_attn_params(15))
    tg = jnp.asarray(TARGETS)
    kw = dict(bias_factor=1.0, gate=gate)
    eager = lrpjax.relevance(attention_head(P, MASKS, pool=pool), h, tg, **kw)
    jitted = jax.jit(lambda x, t: lrpjax.relevance(attention_head(P, MASKS, pool=pool), x, t, **kw))(h, tg)
    np.testing.assert_allclose(jitted, eager, rtol=1e-12, atol=1e-12)

    def single(x, m, t):   # one unbatched example (T, D), its own mask and target
        return lrpjax.relevance(attention_head(P, m, pool=pool), x, t, **kw)

    vmapped = jax.vmap(single)(h, jnp.asarray(MASKS), tg)
    np.testing.assert_allclose(vmapped, eager, rtol=1e-12, atol=1e-12)
    jv = jax.jit(jax.vmap(single))(h, jnp.asarray(MASKS), tg)
    np.testing.assert_allclose(jv, eager, rtol=1e-12, atol=1e-12)
    for r in range(B):
        one = lrpjax.relevance(attention_head(P, MASKS[r], pool=pool), h[r], int(TARGETS[r]), **kw)
        np.testing.assert_allclose(one, eager[r], rtol=1e-12, atol=1e-12)
    want, _ = oh.attention_head_lrp_batch(np.asarray(h), MASKS, _attn_params(15), TARGETS,
                                          bias_factor=1.0, gate=gate)
    _close(eager, want)


def test_jit_and_vmap_pooled_mlp_equal_eager():
    h, P = jnp.asarray(_h(16)), _j(_mlp_params(17))
    tg = jnp.asarray(TARGETS)
    model = pooled_mlp(P, MASKS, LENGTHS, "mask_mul_div")
    eager = lrpjax.relevance(model, h, tg, bias_factor=1.0)
    jitted = jax.jit(lambda x: lrpjax.relevance(model, x, tg, bias_factor=1.0))(h)
    np.testing.assert_allclose(jitted, eager, rtol=1e-12, atol=1e-12)

    def single(x, m, L, t):
        return lrpjax.relevance(lambda x: pooled_mlp(P, m[None], L[None], "mask_mul_div")(x[None])[0],
                                x, t, bias_factor=1.0)

    vm = jax.vmap(single)(h, jnp.asarray(MASKS), jnp.asarray(LENGTHS, jnp.float64), tg)
    np.testing.assert_allclose(vm, eager, rtol=1e-12, atol=1e-12)
    _assert_padded_zero(vm)


# ---------------------------------------------------------------------------
# (e) no NaN with -inf masks
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("gate, bias_factor", [("all", 1.0), ("half", 1.0), ("prop", 1.0),
                                               ("abs", 1.0), ("prop", 0.0)])
def test_no_nan_with_inf_masks(gate, bias_factor):
    h, P = jnp.asarray(_h(18)), _attn_params(19)
    tg = jnp.asarray(TARGETS)
    m = jnp.asarray(MASKS)
    mod, v = AttentionHead(), _flax_variables(P)
    models = {"jnp": attention_head(_j(P), MASKS), "mulsum": attention_head(_j(P), MASKS, pool="mulsum"),
              "flax": lambda x: mod.apply(v, x, m)}
    for name, model in models.items():
        kw = dict(bias_factor=bias_factor, gate=gate)
        ex = lrpjax.explain(model, h, tg, **kw)
        for field in ("relevance", "scores", "total", "initial_state", "absorbed"):
            assert np.all(np.isfinite(np.asarray(getattr(ex, field)))), (name, field)
        _assert_padded_zero(ex.relevance)
        Rj = jax.jit(lambda x: lrpjax.relevance(model, x, tg, **kw))(h)
        assert np.all(np.isfinite(np.asarray(Rj))), name
        # a row whose only valid step is the first: its softmax is one-hot
        R1 = lrpjax.relevance(model, h, tg, **kw)
        assert np.all(np.isfinite(np.asarray(R1[2]))), name


# ---------------------------------------------------------------------------
# (f) strict mode accepts these models under gate="all"
# ---------------------------------------------------------------------------
SCORE_TRANSFORMS = {
    "sort": (lambda s: jnp.sort(s, axis=-1), lambda s: np.sort(s)),
    "cumprod": (lambda s: jnp.cumprod(s, axis=-1), lambda s: np.cumprod(s)),
}


@pytest.mark.parametrize("transform", list(SCORE_TRANSFORMS))
def test_strict_accepts_rule_less_op_in_scoring_branch_under_gate_all(transform):
    h, P = _h(20), _attn_params(21)
    jfn, npfn = SCORE_TRANSFORMS[transform]
    model = attention_head(_j(P), MASKS, score_transform=jfn)
    R = lrpjax.relevance(model, jnp.asarray(h), jnp.asarray(TARGETS), gate="all", strict=True)
    want, _ = oh.attention_head_lrp_batch(h, MASKS, P, TARGETS, gate="all", score_transform=npfn)
    _close(R, want)


@pytest.mark.parametrize("transform", list(SCORE_TRANSFORMS))
def test_strict_refuses_rule_less_op_in_scoring_branch_when_it_gets_relevance(transform):
    """Inferred from R4 + strict: under gate="half" the scoring branch does get relevance."""
    model = attention_head(_j(_attn_params(21)), MASKS, score_transform=SCORE_TRANSFORMS[transform][0])
    with pytest.raises(lrpjax.UnsupportedOperationError, match=transform):
        lrpjax.relevance(model, jnp.asarray(_h(20)), jnp.asarray(TARGETS), gate="half", strict=True)


def test_strict_accepts_all_heads_under_gate_all():
    h = jnp.asarray(_h(22))
    tg = jnp.asarray(TARGETS)
    P = _attn_params(23)
    mod, v = AttentionHead(mask_value=-1e9), _flax_variables(P)
    m = jnp.asarray(MASKS)
    models = [attention_head(_j(P), MASKS, pool=p, mask_value=mv)
              for p in ("matmul", "einsum", "mulsum") for mv in MASK_VALUES.values()]
    models += [attention_head(_j(_attn_params(24, proj=True)), MASKS), lambda x: mod.apply(v, x, m)]
    models += [pooled_mlp(_j(_mlp_params()), *_pool_setup(p), p) for p in oh.POOLS]
    for model in models:
        R = lrpjax.relevance(model, h, tg, gate="all", strict=True)
        assert np.all(np.isfinite(np.asarray(R)))


# ---------------------------------------------------------------------------
# (g) a product of two input-dependent paths that is not a gate is refused
# ---------------------------------------------------------------------------
def _pair_product(h):
    return h[:, :, 0] * h[:, :, 1]                        # not a gate: two relevance paths


def _self_weighted_pool(h):
    return (h[:, :, :1] * h).sum(1)                        # "attention" weights = the raw input


@pytest.mark.parametrize("gate", ["all", "half"])
def test_product_of_two_input_paths_is_refused(gate):
    P = _attn_params(25)
    Pj = _j(P)
    Pj["W1"] = jnp.concatenate([Pj["W1"], jnp.ones((1, H))])
    Pj["W3"] = jnp.concatenate([Pj["W3"], jnp.ones((1, H2))])
    head = attention_head(Pj, MASKS)

    def model(h):
        return head(jnp.concatenate([h, _pair_product(h)[..., None]], axis=-1))

    # the error must name the offending product (not only some other operation of the head)
    with pytest.raises(lrpjax.UnsupportedOperationError, match=r"`mul` at [^\n]*_pair_product"):
        lrpjax.relevance(model, jnp.asarray(_h(26)), jnp.asarray(TARGETS), gate=gate, strict=True)

    model2 = lambda h: _self_weighted_pool(h) @ Pj["W3"][:D]
    with pytest.raises(lrpjax.UnsupportedOperationError, match=r"`mul` at [^\n]*_self_weighted_pool"):
        lrpjax.relevance(model2, jnp.asarray(_h(26)), jnp.asarray(TARGETS), gate=gate, strict=True)


# ---------------------------------------------------------------------------
# float32
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("bias_factor", [0.0, 1.0])
@pytest.mark.parametrize("gate", ["all", "half"])
def test_float32_attention_head(gate, bias_factor):
    h, P = _h(27), _attn_params(28)
    h32 = h.astype(np.float32)
    model = attention_head(_j(P, jnp.float32), MASKS)
    R = lrpjax.relevance(model, jnp.asarray(h32), jnp.asarray(TARGETS), eps=0.1,
                         bias_factor=bias_factor, gate=gate)
    assert R.dtype == jnp.float32
    P32 = {k: v.astype(np.float32).astype(np.float64) for k, v in P.items()}
    want, _ = oh.attention_head_lrp_batch(h32.astype(np.float64), MASKS, P32, TARGETS, eps=0.1,
                                          bias_factor=bias_factor, gate=gate)
    _close(R, want, rtol=1e-5)
    _assert_padded_zero(R)


@pytest.mark.parametrize("pool", ["mask_mul_div", "mean"])
def test_float32_pooled_mlp(pool):
    h, P = _h(29).astype(np.float32), _mlp_params(30)
    masks, lengths = _pool_setup(pool)
    model = pooled_mlp(_j(P, jnp.float32), masks, lengths, pool)
    R = lrpjax.relevance(model, jnp.asarray(h), jnp.asarray(TARGETS), eps=0.1, bias_factor=1.0)
    assert R.dtype == jnp.float32
    P32 = {k: v.astype(np.float32).astype(np.float64) for k, v in P.items()}
    want, _ = oh.pooled_mlp_lrp_batch(h.astype(np.float64), masks, lengths, P32, TARGETS, pool,
                                      eps=0.1, bias_factor=1.0)
    _close(R, want, rtol=1e-5)
    _assert_padded_zero(R, masks)
