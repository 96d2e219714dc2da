"""Baselines (lrpjax.baselines): oracles are literal numpy loops, finite differences and closed forms."""
import doctest
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lrpjax
from lrpjax import baselines as bl

B, T, E, D, C = 3, 5, 3, 4, 3
TARGETS = np.array([2, 0, 1])


def make_lstm(dtype=jnp.float64):
    """A small LSTM + dense classifier; float32 weights are the float64 ones rounded."""
    k1, k2, k3 = jax.random.split(jax.random.key(7), 3)
    cast = lambda a: a.astype(dtype)
    p = jax.tree.map(cast, lrpjax.init_lstm(k1, E, D, dtype=jnp.float64))
    W = cast(jax.random.normal(k2, (D, C), jnp.float64))
    b = cast(0.1 * jax.random.normal(k3, (C,), jnp.float64))

    def model(x, lengths=None):                      # (T, E) -> (C,) / (B, T, E) -> (B, C)
        return lrpjax.dense(lrpjax.lstm(p, x, lengths=lengths)[1][1], W, b)
    return model


def make_linear(dtype=jnp.float64):
    W = np.random.default_rng(3).normal(size=(T, E, C))
    b = np.array([0.3, -0.2, 0.1])
    model = lambda x: jnp.einsum("...tf,tfc->...c", x, jnp.asarray(W, dtype)) + jnp.asarray(b, dtype)
    return model, W, b


@pytest.fixture(scope="module")
def lstm64():
    return make_lstm()


@pytest.fixture(scope="module")
def x64():
    return np.random.default_rng(0).normal(size=(B, T, E))


def score_np(model, x, t):
    """Target logit of one unbatched sequence, as a Python float (jitted model, numpy in/out)."""
    return float(np.asarray(model(jnp.asarray(x)))[t])


# ---------------------------------------------------------------------------------------------
# every method in one jitted call (one compilation per shape: compiling the LSTM dominates the runtime)

KW = {"integrated_gradients": {"steps": 4}, "occlusion": {"value": 0.5}, "random": {"seed": 1}}


def all_methods(model):
    def run(x, t):
        return {n: fn(model, x, t, **KW.get(n, {})) for n, fn in bl.METHODS.items()}
    return run


@pytest.fixture(scope="module")
def res64(lstm64, x64):
    """All methods on the batch (B, T, E), float64, jitted with a traced target."""
    return jax.tree.map(np.asarray, jax.jit(all_methods(lstm64))(jnp.asarray(x64), jnp.asarray(TARGETS)))


# ---------------------------------------------------------------------------------------------
# gradient family

def test_gradient_matches_central_finite_differences(lstm64, x64, res64):
    f = jax.jit(lstm64)
    h = 1e-6
    G = res64["gradient"]
    assert G.shape == x64.shape and G.dtype == np.float64
    fd = np.zeros_like(x64)
    for b in range(B):
        for t in range(T):
            for e in range(E):
                xp, xm = x64[b].copy(), x64[b].copy()
                xp[t, e] += h
                xm[t, e] -= h
                fd[b, t, e] = (score_np(f, xp, TARGETS[b]) - score_np(f, xm, TARGETS[b])) / (2 * h)
    np.testing.assert_allclose(G, fd, rtol=1e-6, atol=1e-9)
    assert np.abs(fd).max() > 1e-2                    # a non-trivial gradient


def test_default_target_is_argmax_per_row():
    model, W, b = make_linear()
    x = np.random.default_rng(5).normal(size=(B, T, E))
    scores = np.einsum("btf,tfc->bc", x, W) + b
    t = np.argmax(scores, axis=-1)
    assert len(set(t.tolist())) > 1                   # rows explain different classes
    G = np.asarray(bl.gradient(model, jnp.asarray(x)))
    for row in range(B):
        np.testing.assert_allclose(G[row], W[:, :, t[row]], rtol=1e-14)
    np.testing.assert_allclose(bl.gradient(model, jnp.asarray(x[1])), W[:, :, t[1]], rtol=1e-14)


def test_sensitivity_and_gradient_x_input_from_gradient(x64, res64):
    G, S, GI = res64["gradient"], res64["sensitivity"], res64["gradient_x_input"]
    want_s, want_gi = np.zeros((B, T)), np.zeros((B, T, E))
    for b, t in itertools.product(range(B), range(T)):
        for e in range(E):
            want_s[b, t] += G[b, t, e] ** 2
            want_gi[b, t, e] = x64[b, t, e] * G[b, t, e]
    np.testing.assert_allclose(S, want_s, rtol=1e-12)
    np.testing.assert_allclose(GI, want_gi, rtol=1e-12)
    assert S.shape == (B, T) and (S >= 0).all()


# ---------------------------------------------------------------------------------------------
# integrated gradients

@pytest.mark.parametrize("baseline", [None, 0.5, "feature", "sequence", "batch"])
def test_ig_closed_form_on_linear_model(baseline):
    model, W, _ = make_linear()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(B, T, E))
    x0 = {None: 0.0, 0.5: 0.5, "feature": rng.normal(size=(E,)), "sequence": rng.normal(size=(T, E)),
          "batch": rng.normal(size=(B, T, E))}[baseline]
    x0_full = np.broadcast_to(x0, x.shape)
    want = np.zeros_like(x)
    for b, t, e in itertools.product(range(B), range(T), range(E)):
        want[b, t, e] = (x[b, t, e] - x0_full[b, t, e]) * W[t, e, TARGETS[b]]
    kw = {} if baseline is None else {"baseline": jnp.asarray(x0)}
    for steps in (1, 3, 32):
        r = bl.explain_ig(model, jnp.asarray(x), jnp.asarray(TARGETS), steps=steps, **kw)
        np.testing.assert_allclose(r.attribution, want, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(r.completeness_error, 0.0, atol=1e-12)
        np.testing.assert_array_equal(r.target, TARGETS)


def test_ig_midpoint_rule_exact_on_separable_model():
    """s(x) = sum_tf w_tf sin(x_tf): IG_tf = (x - x0) w mean_k cos(x0 + a_k (x - x0)), a_k = (k+.5)/n."""
    rng = np.random.default_rng(2)
    w = rng.normal(size=(T, E))
    x, x0 = rng.normal(size=(T, E)), rng.normal(size=(T, E))
    model = lambda z: jnp.stack([jnp.sum(jnp.asarray(w) * jnp.sin(z)), jnp.sum(z)])
    for n in (1, 7):
        want = np.zeros((T, E))
        for t, e in itertools.product(range(T), range(E)):
            acc = 0.0
            for k in range(n):
                acc += np.cos(x0[t, e] + (k + 0.5) / n * (x[t, e] - x0[t, e]))
            want[t, e] = (x[t, e] - x0[t, e]) * w[t, e] * acc / n
        got = bl.integrated_gradients(model, jnp.asarray(x), 0, baseline=jnp.asarray(x0), steps=n)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    exact = w * (np.sin(x) - np.sin(x0))                # the path integral itself
    got = bl.integrated_gradients(model, jnp.asarray(x), 0, baseline=jnp.asarray(x0), steps=256)
    np.testing.assert_allclose(got, exact, atol=1e-5 * np.abs(exact).max())


def test_ig_completeness_error_shrinks_with_steps(lstm64, x64):
    x, t = jnp.asarray(x64), jnp.asarray(TARGETS)
    x0 = 0.3 * jnp.ones((E,))
    f = jax.jit(lstm64)
    s = np.asarray(f(x))[np.arange(B), TARGETS]
    s0 = np.asarray(f(jnp.broadcast_to(x0, x.shape)))[np.arange(B), TARGETS]
    gap = np.abs(s - s0)
    ig = jax.jit(lambda x, t, n: bl.explain_ig(lstm64, x, t, baseline=x0, steps=n), static_argnums=2)
    errs = []
    for n in (4, 32, 256):
        r = jax.tree.map(np.asarray, ig(x, t, n))
        # the reported error is exactly sum(IG) - (s(x) - s(x0)), computed here independently
        np.testing.assert_allclose(r.completeness_error, r.attribution.sum(axis=(1, 2)) - (s - s0),
                                   atol=1e-12)
        np.testing.assert_allclose(r.score, s, rtol=1e-12)
        np.testing.assert_allclose(r.baseline_score, s0, rtol=1e-12)
        errs.append(np.abs(r.completeness_error) / gap)
    errs = np.array(errs)                                   # (3 step counts, B)
    assert (errs[-1] < 1e-3).all(), errs
    assert (errs[1:] < errs[:-1]).all(), errs
    assert errs[0].max() > 1e-6, errs                       # the coarse rule is visibly inexact


def test_ig_completeness_function_on_linear_model():
    model, W, b = make_linear()
    x = np.random.default_rng(6).normal(size=(B, T, E))
    err = bl.integrated_gradients_completeness(model, jnp.asarray(x), jnp.asarray(TARGETS), baseline=0.2,
                                               steps=2)
    assert err.shape == (B,)
    np.testing.assert_allclose(err, 0.0, atol=1e-12)
    # a wrong "score gap" would show: the reported error is not identically zero by construction
    quad = lambda z: jnp.stack([jnp.sum(z ** 3, (-2, -1)), jnp.sum(z, (-2, -1))], -1)
    e1 = bl.integrated_gradients_completeness(quad, jnp.asarray(x), 0, steps=1)
    # midpoint rule on s = sum z^3 along a x: sum 3 (x/2)^2 x = 3/4 sum x^3, so error = -1/4 sum x^3
    np.testing.assert_allclose(e1, -0.25 * (x ** 3).sum(axis=(1, 2)), rtol=1e-12)


def test_ig_path_gradients_match_per_point_loop(lstm64, x64):
    """IG = (x - x0) * mean of the gradients at the midpoints, each taken by a separate jax.grad call."""
    n = 5
    x = x64[1]
    got = np.asarray(jax.jit(lambda z: bl.integrated_gradients(lstm64, z, 2, steps=n, batch_size=2))(
        jnp.asarray(x)))                                 # chunks of 2, 2, 1 path points
    g = jax.jit(jax.grad(lambda z: lstm64(z)[2]))
    acc = np.zeros_like(x)
    for k in range(n):
        acc += np.asarray(g(jnp.asarray((k + 0.5) / n * x)))
    np.testing.assert_allclose(got, x * acc / n, rtol=1e-10, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# occlusion

@pytest.mark.parametrize("value", [0.0, -1.5, "feature"])
def test_occlusion_exact_on_linear_model(value):
    model, W, b = make_linear()
    x = np.random.default_rng(4).normal(size=(B, T, E))
    v = np.array([0.5, -1.0, 2.0]) if value == "feature" else np.full(E, value)
    got = np.asarray(bl.occlusion(model, jnp.asarray(x), jnp.asarray(TARGETS),
                                  value=jnp.asarray(v) if value == "feature" else value))
    want = np.zeros((B, T))
    for bb, t in itertools.product(range(B), range(T)):
        c = TARGETS[bb]
        sxw = sum(x[bb, t, f] * W[t, f, c] for f in range(E))
        vw = sum(v[f] * W[t, f, c] for f in range(E))
        want[bb, t] = sxw - vw                        # sum_f x_tf w_tf - value * sum_f w_tf
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


def test_occlusion_lstm_matches_loop_of_model_calls(lstm64, x64):
    f = jax.jit(lstm64)
    traces = []

    def both(x, t, v):
        traces.append(1)
        return bl.occlusion(lstm64, x, t, value=v), bl.occlusion(lstm64, x, t, value=v, batch_size=2)
    occ = jax.jit(both)
    for value in (0.0, 0.7):
        got, chunked = occ(jnp.asarray(x64), jnp.asarray(TARGETS), value)
        want = np.zeros((B, T))
        for b in range(B):
            s = score_np(f, x64[b], TARGETS[b])
            for t in range(T):
                xo = x64[b].copy()
                xo[t, :] = value
                want[b, t] = s - score_np(f, xo, TARGETS[b])
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(chunked, want, rtol=1e-11, atol=1e-13)
        assert np.abs(want).min() > 0
    assert len(traces) == 1                              # new values (value, x) reuse the compilation


def test_occlusion_of_padding_is_exactly_zero(lstm64, x64):
    lengths = jnp.array([5, 3, 1])
    got = np.asarray(jax.jit(lambda z: bl.occlusion(lambda y: lstm64(y, lengths), z, value=2.0))(
        jnp.asarray(x64)))
    for b, L in enumerate([5, 3, 1]):
        assert (got[b, L:] == 0.0).all() and (got[b, :L] != 0.0).all()


# ---------------------------------------------------------------------------------------------
# random floor, registry, per_step

def test_random_is_seeded_and_deterministic():
    x = jnp.ones((4, 50, 50))
    a = bl.random_relevance(None, x, seed=3)
    np.testing.assert_array_equal(a, bl.random_relevance(None, x, seed=3))
    np.testing.assert_array_equal(a, jax.jit(lambda s: bl.random_relevance(None, x, seed=s))(3))
    assert not np.allclose(a, bl.random_relevance(None, x, seed=4))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert abs(float(a.mean())) < 0.05 and abs(float(a.std()) - 1.0) < 0.05
    assert bl.random_relevance(None, x.astype(jnp.float32)).dtype == jnp.float32


def test_methods_registry_and_per_step(x64, res64):
    assert set(bl.METHODS) == {"lrp", "gradient", "sensitivity", "gradient_x_input",
                               "integrated_gradients", "occlusion", "random"}
    assert lrpjax.METHODS is bl.METHODS and bl.METHODS["random"] is bl.random_relevance
    W = np.random.default_rng(8).normal(size=(T * E, C))
    dense = lambda z: lrpjax.dense(z.reshape(z.shape[:-2] + (-1,)), jnp.asarray(W))
    x = jnp.asarray(x64)
    np.testing.assert_array_equal(bl.METHODS["lrp"](dense, x, 1, eps=0.01),
                                  lrpjax.relevance(dense, x, 1, eps=0.01))
    for name, r in res64.items():
        assert bl.per_step(r, x).shape == (B, T), name
    a = res64["gradient"]
    np.testing.assert_allclose(bl.per_step(a, x), a.sum(-1), rtol=1e-14)
    np.testing.assert_array_equal(bl.per_step(res64["occlusion"], x), res64["occlusion"])
    with pytest.raises(ValueError, match=r"per_step: attribution must have x's shape \(3, 5, 3\) or the "
                                         r"per-step shape \(3, 5\), got \(3, 5, 2\)"):
        bl.per_step(jnp.ones((B, T, 2)), x)


# ---------------------------------------------------------------------------------------------
# transformations, batching, dtypes

def test_vmap_and_per_row_equal_batched(lstm64, x64, res64):
    run = all_methods(lstm64)
    x, t = jnp.asarray(x64), jnp.asarray(TARGETS)
    vmapped = jax.jit(jax.vmap(run))(x, t)
    row_fn = jax.jit(run)                               # unbatched (T, E) -> (C,), traced target
    rows = [row_fn(x[b], t[b]) for b in range(B)]
    for name in bl.METHODS:
        want_shape = (B, T) if name in ("sensitivity", "occlusion") else (B, T, E)
        assert res64[name].shape == want_shape, name
        assert rows[0][name].shape == want_shape[1:], name
        if name == "random":                            # the same key for every row under vmap / per row
            np.testing.assert_array_equal(vmapped[name][0], rows[0][name])
            continue
        per_row = np.stack([np.asarray(r[name]) for r in rows])
        for got in (vmapped[name], per_row):
            np.testing.assert_allclose(got, res64[name], rtol=1e-10, atol=1e-12, err_msg=name)
    r = jax.jit(lambda z: bl.explain_ig(lstm64, z, steps=2))(x[0])
    assert r.completeness_error.shape == () and r.target.shape == () and r.score.shape == ()


def test_float32_close_to_float64(x64, res64):
    model32 = make_lstm(jnp.float32)
    r32 = jax.jit(all_methods(model32))(jnp.asarray(x64, jnp.float32), jnp.asarray(TARGETS))
    for name in bl.METHODS:
        assert r32[name].dtype == jnp.float32, name
        if name == "random":
            continue
        r64 = res64[name]
        np.testing.assert_allclose(np.asarray(r32[name], np.float64), r64, rtol=1e-5,
                                   atol=1e-5 * np.abs(r64).max(), err_msg=name)


# ---------------------------------------------------------------------------------------------
# errors

def test_bad_inputs_raise_clear_errors():
    model, _, _ = make_linear()
    x = jnp.asarray(np.random.default_rng(9).normal(size=(B, T, E)))
    with pytest.raises(ValueError, match=r"gradient: x must have shape \(T, F\) or \(B, T, F\).*got "
                                         r"shape \(5,\)"):
        bl.gradient(model, x[0, :, 0])
    with pytest.raises(ValueError, match=r"occlusion: x must have shape.*\(1, 3, 5, 3\)"):
        bl.occlusion(model, x[None])
    with pytest.raises(ValueError, match="NaN"):
        bl.sensitivity(model, x.at[0, 1, 2].set(jnp.nan))
    with pytest.raises(ValueError, match="floating"):
        bl.gradient_x_input(model, jnp.ones((B, T, E), jnp.int32))
    with pytest.raises(ValueError, match=r"steps must be an int >= 1, got 0"):
        bl.integrated_gradients(model, x, steps=0)
    with pytest.raises(ValueError, match=r"steps must be an int >= 1, got 2.5"):
        bl.explain_ig(model, x, steps=2.5)
    with pytest.raises(ValueError, match=r"baseline must be broadcastable to x's shape \(3, 5, 3\), got "
                                         r"shape \(4,\)"):
        bl.integrated_gradients(model, x, baseline=jnp.zeros(4))
    with pytest.raises(ValueError, match="baseline contains NaN"):
        bl.integrated_gradients(model, x, baseline=jnp.full(E, jnp.nan))
    with pytest.raises(ValueError, match=r"value must be broadcastable.*got shape \(2, 3\)"):
        bl.occlusion(model, x, value=jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"batch_size must be an int >= 1, got 0"):
        bl.occlusion(model, x, batch_size=0)
    with pytest.raises(ValueError, match=r"target must lie in \[0, 3\)"):
        bl.gradient(model, x, 3)
    with pytest.raises(ValueError, match=r"target must have shape \(\) or \(3,\)"):
        bl.gradient(model, x, jnp.array([0, 1]))
    # (B,) = (3,) would be B scalar outputs (docs/attention-heads-outputs.md); (2,) fits nothing
    with pytest.raises(ValueError, match=r"model_fn\(x\) for x of shape \(3, 5, 3\) must return scores "
                                         r"of shape \(3, C\), got \(2,\)"):
        bl.gradient(lambda z: model(z)[0, :2], x)
    with pytest.raises(ValueError, match="model_fn must be callable"):
        bl.occlusion(None, x)
    with pytest.raises(ValueError, match="seed must be an int"):
        bl.random_relevance(None, x, seed=1.5)


def test_docstring_examples_run_in_float32():
    with jax.enable_x64(False):
        res = doctest.testmod(bl, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0 and res.attempted >= 15
