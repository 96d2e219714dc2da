"""Outputs other than one class logit per sequence (issue 10, section 3) and Flax call mistakes:
per-step outputs (``relevance_per_step`` / ``explain_per_step``), scalar outputs, out-of-range traced
targets, and linen modules / ``model.apply`` passed without params.

References are independent of the code under test: the per-step results against a loop of
``lrpjax.relevance`` calls on one output step each, and against the literal NumPy oracle
(tests/oracle.py) for an LSTM tagger; scalar outputs against the same model with an explicit class axis.
"""
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lrpjax
import oracle
from helpers import f64, random_oracle_params, to_lrpjax

E, D, C, T, B = 3, 4, 3, 5, 3
TOL = dict(rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def tagger():
    """An LSTM tagger in float64: scores (B, T, C), one label per step; its oracle params."""
    rng = np.random.default_rng(3)
    P = random_oracle_params(rng, E, D, "standard")
    p = to_lrpjax(P, "standard")
    W, b = rng.normal(size=(D, C)), 0.1 * rng.normal(size=C)

    def model(x):
        hs, _ = lrpjax.lstm(p, x)
        return lrpjax.dense(hs, f64(W), f64(b))

    x = f64(rng.normal(size=(B, T, E)))
    return model, x, P, W, b


def _loop(model, x, t, **kw):
    """Step s explained on its own: relevance of the model's step-s scores, stacked to (B, S, ...)."""
    S = t.shape[1]
    return jnp.stack([lrpjax.relevance(lambda v, s=s: model(v)[:, s], x, t[:, s], **kw)
                      for s in range(S)], axis=1)


# ------------------------------------------------------------------------------------------------
# per-step outputs

@pytest.mark.parametrize("kw", [dict(), dict(bias_factor=1.0), dict(gate="prop", eps=1e-2)])
def test_per_step_equals_one_relevance_call_per_step(tagger, kw):
    model, x, *_ = tagger
    R = lrpjax.relevance_per_step(model, x, **kw)
    assert R.shape == (B, T, T, E) and R.dtype == x.dtype
    t = jnp.argmax(model(x), axis=-1)
    np.testing.assert_allclose(R, _loop(model, x, t, **kw), **TOL)


def test_per_step_given_targets_int_and_array(tagger):
    model, x, *_ = tagger
    t = jnp.asarray(np.random.default_rng(0).integers(0, C, (B, T)))
    np.testing.assert_allclose(lrpjax.relevance_per_step(model, x, t), _loop(model, x, t), **TOL)
    np.testing.assert_allclose(lrpjax.relevance_per_step(model, x, 2),
                               _loop(model, x, jnp.full((B, T), 2)), **TOL)


def test_per_step_against_numpy_oracle(tagger):
    """Step s, target k: the readout's epsilon rule at h_s, then the LSTM oracle backwards."""
    model, x, P, W, b = tagger
    eps, t = 1e-3, np.random.default_rng(1).integers(0, C, (B, T))
    R = np.asarray(lrpjax.relevance_per_step(model, x, jnp.asarray(t), eps=eps))
    xs = np.asarray(x)
    for r in range(B):
        H = oracle.lstm_forward(xs[r], P)["h"]
        for s in range(T):
            z = H[s] @ W + b
            R_top = np.zeros(C)
            R_top[t[r, s]] = z[t[r, s]]
            (R_h,) = oracle.lrp_linear([H[s]], [W], b, z, R_top, eps, 0.0)
            R_hs = np.zeros((T, D))
            R_hs[s] = R_h
            R_x, _, _ = oracle.lstm_lrp(xs[r], P, R_hs, eps=eps)
            np.testing.assert_allclose(R[r, s], R_x, **TOL)
            assert np.all(R[r, s, s + 1:] == 0)      # a step's output sees only its past


def test_explain_per_step_report(tagger):
    model, x, *_ = tagger
    ex = lrpjax.explain_per_step(model, x, bias_factor=1.0)
    assert ex.scores.shape == (B, T, C) and ex.target.shape == (B, T)
    for f in (ex.total, ex.initial_state, ex.absorbed):
        assert f.shape == (B, T)
    assert all(a.shape[:2] == (B, T) for a in ex.state_relevance) and ex.state_relevance
    for s in range(T):
        one = lrpjax.explain(lambda v, s=s: model(v)[:, s], x, ex.target[:, s], bias_factor=1.0)
        assert len(one.state_relevance) == len(ex.state_relevance)
        np.testing.assert_allclose(ex.total[:, s], one.total, **TOL)
        np.testing.assert_allclose(ex.absorbed[:, s], one.absorbed, **TOL)
        for a, b_ in zip(ex.state_relevance, one.state_relevance):
            np.testing.assert_allclose(a[:, s], b_, **TOL)
    score_t = jnp.take_along_axis(ex.scores, ex.target[..., None], -1)[..., 0]
    np.testing.assert_allclose(ex.total + ex.initial_state, score_t, rtol=1e-9, atol=1e-9)


def test_per_step_unbatched_and_scalar_steps(tagger):
    model, x, *_ = tagger
    np.testing.assert_allclose(lrpjax.relevance_per_step(model, x[1]),
                               lrpjax.relevance_per_step(model, x)[1], **TOL)
    forecaster = lambda v: model(v)[..., 0]                     # (B, S): one value per step
    R = lrpjax.relevance_per_step(forecaster, x)
    assert R.shape == (B, T, T, E)
    np.testing.assert_allclose(R, _loop(model, x, jnp.zeros((B, T), int)), **TOL)
    np.testing.assert_allclose(lrpjax.relevance_per_step(forecaster, x[2]), R[2], **TOL)  # (S,)
    ex = lrpjax.explain_per_step(forecaster, x)
    assert ex.scores.shape == (B, T, 1) and not ex.target.any()


def test_per_step_under_jit_and_vmap(tagger):
    model, x, *_ = tagger
    t = jnp.asarray(np.random.default_rng(2).integers(0, C, (B, T)))
    want = lrpjax.relevance_per_step(model, x, t)
    got = jax.jit(lambda x, t: lrpjax.relevance_per_step(model, x, t))(x, t)
    np.testing.assert_allclose(got, want, **TOL)
    vm = jax.vmap(lambda xi, ti: lrpjax.relevance_per_step(model, xi, ti))(x, t)
    np.testing.assert_allclose(vm, want, **TOL)
    ex = jax.jit(lambda x: lrpjax.explain_per_step(model, x))(x)
    np.testing.assert_allclose(ex.relevance, lrpjax.relevance_per_step(model, x), **TOL)


def test_per_step_traces_the_model_as_often_as_one_relevance_call(tagger):
    """One forward for all S steps: the model is traced as often as for one step, not S times."""
    model, x, *_ = tagger
    count = [0]

    def counted(v):
        count[0] += 1
        return model(v)

    lrpjax.relevance(lambda v: counted(v)[:, 0], x)
    one_step = count[0]
    count[0] = 0
    lrpjax.relevance_per_step(counted, x)
    assert 1 <= count[0] == one_step
    count[0] = 0
    jax.jit(lambda x: lrpjax.relevance_per_step(counted, x))(x)
    assert count[0] == one_step


def test_per_step_bad_outputs_and_targets(tagger):
    model, x, *_ = tagger
    with pytest.raises(ValueError, match=r"per-step\s+scores \(B, S, C\)"):
        lrpjax.relevance_per_step(lambda v: model(v)[..., None], x)
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        lrpjax.relevance_per_step(model, x, jnp.zeros((B,), int))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        lrpjax.relevance_per_step(model, x, 3)
    shared = {"x": x, "w": f64(np.zeros((1, 1, E)))}            # a leaf without the batch axis
    with pytest.raises(ValueError, match="batch axis"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lrpjax.relevance_per_step(lambda v: model(v["x"] + v["w"]), shared, strict=False)


# ------------------------------------------------------------------------------------------------
# scalar outputs

@pytest.fixture(scope="module")
def regressor():
    """One scalar per row (B,), and the same model with a class axis (B, 1)."""
    k = jax.random.split(jax.random.key(5), 3)
    p = lrpjax.init_lstm(k[0], E, D, dtype=jnp.float64)
    w = jax.random.normal(k[1], (D, 1), jnp.float64)

    def with_axis(x):
        return lrpjax.dense(lrpjax.lstm(p, x)[1][1], w, f64([0.3]))

    x = jax.random.normal(k[2], (B, T, E), jnp.float64)
    return (lambda x: with_axis(x)[..., 0]), with_axis, x


@pytest.mark.parametrize("kw", [dict(), dict(bias_factor=1.0)])
def test_scalar_outputs_are_one_output_per_row(regressor, kw):
    scalar, with_axis, x = regressor
    ex = lrpjax.explain(scalar, x, **kw)
    ref = lrpjax.explain(with_axis, x, 0, **kw)
    assert ex.scores.shape == (B, 1) and ex.target.tolist() == [0] * B
    for a, b_ in zip(jax.tree.leaves(ex), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b_, **TOL)
    assert np.all(np.abs(ex.total) > 0)                          # every row explained, not one
    for r in range(B):                                           # unbatched: scores ()
        np.testing.assert_allclose(lrpjax.relevance(lambda v: scalar(v[None])[0], x[r], **kw),
                                   ex.relevance[r], **TOL)
    np.testing.assert_allclose(lrpjax.relevance(scalar, x, jnp.zeros(B, int), **kw), ref.relevance, **TOL)


def test_scalar_outputs_baselines_and_jit(regressor):
    scalar, with_axis, x = regressor
    for name in ("gradient", "gradient_x_input", "integrated_gradients", "occlusion"):
        fn = getattr(lrpjax, name)
        np.testing.assert_allclose(fn(scalar, x), fn(with_axis, x, 0), **TOL)
    a = lrpjax.attribute("gradient", scalar, x)
    assert a.scores.shape == (B, 1)
    np.testing.assert_allclose(jax.jit(lambda x: lrpjax.relevance(scalar, x))(x),
                               lrpjax.relevance(with_axis, x, 0), **TOL)
    vm = jax.vmap(lambda xi: lrpjax.relevance(lambda v: scalar(v[None])[0], xi))(x)
    np.testing.assert_allclose(vm, lrpjax.relevance(with_axis, x, 0), **TOL)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        lrpjax.relevance(scalar, x, 1)


# ------------------------------------------------------------------------------------------------
# out-of-range targets under jit

def test_traced_out_of_range_target_gives_nan_for_its_row(tagger, regressor):
    _, with_axis, x = regressor
    k = jax.random.split(jax.random.key(9), 2)
    p = lrpjax.init_lstm(k[0], E, D, dtype=jnp.float64)
    W = jax.random.normal(k[1], (D, C), jnp.float64)
    model = lambda x: lrpjax.dense(lrpjax.lstm(p, x)[1][1], W)
    ok = lrpjax.explain(model, x, jnp.array([1, 0, 2]))
    for bad in (3, -1, 7):
        ex = jax.jit(lambda x, t: lrpjax.explain(model, x, t))(x, jnp.array([1, bad, 2]))
        assert np.all(np.isnan(ex.relevance[1])) and np.isnan(ex.total[1]) and np.isnan(ex.absorbed[1])
        for r in (0, 2):
            np.testing.assert_allclose(ex.relevance[r], ok.relevance[r], **TOL)
            np.testing.assert_allclose(ex.absorbed[r], ok.absorbed[r], **TOL)
        g = jax.jit(lambda x, t: lrpjax.gradient(model, x, t))(x, jnp.array([1, bad, 2]))
        assert np.all(np.isnan(g[1])) and np.all(np.isfinite(np.asarray(g)[[0, 2]]))
        occ = jax.jit(lambda x, t: lrpjax.occlusion(model, x, t))(x, jnp.array([1, bad, 2]))
        assert np.all(np.isnan(occ[1])) and np.all(np.isfinite(np.asarray(occ)[[0, 2]]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):              # concrete: still an error
        lrpjax.explain(model, x, jnp.array([1, 3, 2]))
    tag, xt, *_ = tagger
    t = jnp.zeros((B, T), int).at[0, 2].set(C)
    ex = jax.jit(lambda x, t: lrpjax.explain_per_step(tag, x, t))(xt, t)
    R = ex.relevance       # step 2's output depends on inputs 0..2 only: those are NaN, the rest 0
    assert np.all(np.isnan(R[0, 2, :3])) and np.all(R[0, 2, 3:] == 0) and np.isnan(ex.total[0, 2])
    assert np.all(np.isfinite(np.delete(R.reshape(B * T, -1), 2, 0)))
    assert np.isnan(ex.total).sum() == 1 and np.isnan(ex.absorbed).sum() == 1


# ------------------------------------------------------------------------------------------------
# Flax modules and `apply` passed without params

class _Linen(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.RNN(nn.LSTMCell(4))(x)[..., -1, :])


@pytest.fixture(scope="module")
def linen():
    m, x = _Linen(), jnp.ones((2, T, E), jnp.float32)
    return m, m.init(jax.random.key(0), x), x


CALLS = {
    "relevance": lambda f, x: lrpjax.relevance(f, x),
    "explain": lambda f, x: lrpjax.explain(f, x),
    "relevance_per_step": lambda f, x: lrpjax.relevance_per_step(f, x),
    "explain_per_step": lambda f, x: lrpjax.explain_per_step(f, x),
    "explain_tokens": lambda f, x: lrpjax.explain_tokens(f, jnp.ones(x.shape[:2], jnp.int32)),
    "gradient": lambda f, x: lrpjax.gradient(f, x),
    "integrated_gradients": lambda f, x: lrpjax.integrated_gradients(f, x, steps=2),
    "occlusion": lambda f, x: lrpjax.occlusion(f, x),
    "attribute": lambda f, x: lrpjax.attribute("gradient_x_input", f, x),
}


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("how", ["module", "apply", "jitted apply"])
def test_linen_module_or_apply_without_params_is_one_clear_error(linen, call, how):
    m, _, x = linen
    fn = {"module": m, "apply": m.apply, "jitted apply": jax.jit(m.apply)}[how]
    with pytest.raises(ValueError) as info:
        CALLS[call](fn, x)
    msg = str(info.value)
    assert "\n" not in msg and "lambda x: model.apply(params, x)" in msg and "_Linen" in msg


def test_linen_bound_module_and_apply_with_params_work(linen):
    m, v, x = linen
    want = lrpjax.relevance(lambda x: m.apply(v, x), x)
    np.testing.assert_allclose(lrpjax.relevance(m.bind(v), x), want, rtol=1e-6, atol=1e-7)
