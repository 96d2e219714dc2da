"""The public contract of lrpjax.relevance / lrpjax.explain, under jit, vmap, grad and sharding."""
import inspect
import json
import os
import subprocess
import sys
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lrpjax
from conftest import ROOT
from helpers import f64

E, D, C, T, B = 3, 4, 3, 6, 5


@pytest.fixture(scope="module")
def small():
    """A small unidirectional LSTM classifier (float64 params) and a batch of inputs."""
    k = jax.random.split(jax.random.key(42), 3)
    p = lrpjax.init_lstm(k[0], E, D, dtype=jnp.float64)
    W = jax.random.normal(k[1], (D, C), jnp.float64)
    b = jax.random.normal(k[2], (C,), jnp.float64) * 0.1

    def model(x):
        _, (_, h) = lrpjax.lstm(p, x)
        return lrpjax.dense(h, W, b)

    x = jax.random.normal(jax.random.key(7), (B, T, E), jnp.float64)
    return model, x


def test_pytree_input_gets_relevance_of_same_structure_shape_dtype():
    rng = np.random.default_rng(0)
    Wa, Wb = f64(rng.normal(size=(2, 3))), f64(rng.normal(size=(4, 3)))
    x = {"a": jnp.asarray(rng.normal(size=2), jnp.float32), "b": f64(rng.normal(size=4))}
    model = lambda x: lrpjax.dense((x["a"].astype(jnp.float64), x["b"]), (Wa, Wb))
    R = lrpjax.relevance(model, x, bias_factor=1.0)
    assert jax.tree.structure(R) == jax.tree.structure(x)
    assert R["a"].shape == (2,) and R["a"].dtype == jnp.float32
    assert R["b"].shape == (4,) and R["b"].dtype == jnp.float64
    score = model(x)
    np.testing.assert_allclose(R["a"].sum() + R["b"].sum(), score.max(), rtol=1e-6)


def test_target_none_is_argmax_and_other_classes_start_at_zero(small):
    model, x = small
    ex = lrpjax.explain(model, x)
    np.testing.assert_array_equal(ex.target, jnp.argmax(model(x), axis=-1))
    # explaining class k of row b equals explaining row b alone with target k
    for k in range(C):
        Rk = lrpjax.relevance(model, x, k)
        np.testing.assert_allclose(Rk[2], lrpjax.relevance(model, x[2], k), atol=1e-12)


def test_rows_of_a_batch_are_independent(small):
    model, x = small
    t = jnp.array([0, 1, 2, 1, 0])
    R = lrpjax.relevance(model, x, t)
    x2 = x.at[0].set(x[0] * -3.0)  # changing row 0 must not change the other rows
    R2 = lrpjax.relevance(model, x2, t)
    np.testing.assert_array_equal(R[1:], R2[1:])
    assert not np.allclose(R[0], R2[0])


class TransformTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True, with_device=True)
    def test_relevance_under_variants(self):
        k = jax.random.split(jax.random.key(1), 2)
        p = lrpjax.init_lstm(k[0], E, D, dtype=jnp.float64)
        W = jax.random.normal(k[1], (D, C), jnp.float64)
        model = lambda x: lrpjax.dense(lrpjax.lstm(p, x)[1][1], W)
        x = jax.random.normal(jax.random.key(2), (B, T, E), jnp.float64)
        t = jnp.array([2, 0, 1, 1, 2])
        f = self.variant(lambda x, t: lrpjax.explain(model, x, t, bias_factor=1.0))
        ex = f(x, t)
        ref = lrpjax.explain(model, x, t, bias_factor=1.0)
        np.testing.assert_allclose(ex.relevance, ref.relevance, atol=1e-12)
        np.testing.assert_allclose(ex.absorbed, 0.0, atol=1e-10)


def test_vmap_equals_batched_call(small):
    model, x = small
    t = jnp.array([0, 2, 1, 0, 2])
    batched = lrpjax.relevance(model, x, t)
    mapped = jax.vmap(lambda xi, ti: lrpjax.relevance(model, xi, ti))(x, t)
    np.testing.assert_allclose(mapped, batched, atol=1e-12)
    # and vmap of explain over a padded batch with per-row lengths
    L = jnp.array([6, 3, 1, 4, 5])
    p = lrpjax.init_lstm(jax.random.key(3), E, D, dtype=jnp.float64)
    m2 = lambda x, l: lrpjax.dense(lrpjax.lstm(p, x, lengths=l)[1][1], jnp.eye(D, C))
    ex = jax.vmap(lambda xi, li: lrpjax.explain(lambda z: m2(z, li), xi, 0, bias_factor=1.0))(x, L)
    for b in range(B):
        assert np.all(np.asarray(ex.relevance[b, int(L[b]):]) == 0.0)
    np.testing.assert_allclose(ex.absorbed, 0.0, atol=1e-10)


def test_no_recompilation_for_new_values_of_same_shape(small):
    model, x = small

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(x, t):
        return lrpjax.relevance(model, x, t)

    for s in range(4):
        f(x * (1 + s), jnp.array([s % C] * B))


def test_grad_of_relevance_matches_finite_differences(small):
    model, x = small
    x0 = x[1]
    loss = lambda x: jnp.sum(lrpjax.relevance(model, x, 1, bias_factor=0.5) ** 2)
    g = jax.grad(loss)(x0)
    h = 1e-6
    for idx in [(0, 0), (3, 1), (5, 2)]:
        dx = jnp.zeros_like(x0).at[idx].set(h)
        fd = (loss(x0 + dx) - loss(x0 - dx)) / (2 * h)
        np.testing.assert_allclose(g[idx], fd, rtol=1e-6, atol=1e-9)
    # and under jit
    np.testing.assert_allclose(jax.jit(jax.grad(loss))(x0), g, atol=1e-12)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
def test_sharded_batch_over_8_devices_equals_single_device():
    p = lrpjax.init_lstm(jax.random.key(5), E, D, dtype=jnp.float64)
    W = jax.random.normal(jax.random.key(6), (D, C), jnp.float64)
    model = lambda x: lrpjax.dense(lrpjax.lstm(p, x)[1][1], W)
    x = jax.random.normal(jax.random.key(8), (16, T, E), jnp.float64)
    mesh = jax.make_mesh((8,), ("data",))
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    xs = jax.device_put(x, spec)
    R = jax.jit(lambda x: lrpjax.relevance(model, x), out_shardings=spec)(xs)
    assert len(R.sharding.device_set) == 8
    np.testing.assert_allclose(R, lrpjax.relevance(model, x), atol=1e-12)


def test_deterministic(small):
    model, x = small
    a, b = lrpjax.relevance(model, x), lrpjax.relevance(model, x)
    np.testing.assert_array_equal(a, b)


def test_explain_report_fields(small):
    model, x = small
    ex = lrpjax.explain(model, x, gate="half")
    assert ex.scores.shape == (B, C) and ex.target.shape == (B,)
    for f in (ex.total, ex.initial_state, ex.absorbed):
        assert f.shape == (B,)
    score_t = ex.scores[jnp.arange(B), ex.target]
    np.testing.assert_allclose(ex.total, ex.relevance.reshape(B, -1).sum(1), atol=1e-12)
    np.testing.assert_allclose(ex.absorbed, score_t - ex.total - ex.initial_state, atol=1e-12)
    assert len(ex.state_relevance) == 2 and ex.state_relevance[0].shape == (B, D)
    assert not np.allclose(ex.absorbed, 0.0)  # the dense bias absorbs relevance with bias_factor=0


# ------------------------------------------------------------------------------------------------
# bad input: clear errors naming the argument

@pytest.mark.parametrize("kwargs, match", [
    (dict(eps=0.0), "eps"), (dict(eps=-1e-3), "eps"), (dict(bias_factor=2.0), "bias_factor"),
    (dict(gate="max"), "gate"), (dict(strict="yes"), "strict"),
])
def test_bad_options_raise_value_error(small, kwargs, match):
    model, x = small
    with pytest.raises(ValueError, match=match):
        lrpjax.relevance(model, x, **kwargs)


@pytest.mark.parametrize("target, match", [
    (5, r"\[0, 3\)"), (-1, r"\[0, 3\)"), (jnp.array([0, 1]), "shape"), (1.5, "integer"),
])
def test_bad_targets(small, target, match):
    model, x = small
    with pytest.raises(ValueError, match=match):
        lrpjax.relevance(model, x, target)


def test_bad_inputs(small):
    model, x = small
    with pytest.raises(ValueError, match="NaN"):
        lrpjax.relevance(model, x.at[0, 1, 2].set(jnp.nan))
    with pytest.raises(ValueError, match=r"x\['ids'\].*floating"):
        lrpjax.relevance(lambda x: x["ids"], {"ids": jnp.arange(3)})
    with pytest.raises(ValueError, match=r"\(C,\) or\s+\(B, C\)"):
        lrpjax.relevance(lambda x: lrpjax.lstm(lrpjax.init_lstm(jax.random.key(0), E, D), x)[0],
                         x.astype(jnp.float32))
    with pytest.raises(ValueError, match="callable"):
        lrpjax.relevance("model", x)


# ------------------------------------------------------------------------------------------------
# strict mode

def _readout_then(fn):
    p = lrpjax.init_lstm(jax.random.key(0), E, D)
    W = jax.random.normal(jax.random.key(1), (D, C))

    def model(x):
        h = lrpjax.lstm(p, x)[1][1]
        return lrpjax.dense(fn(h), W)
    return model


@pytest.mark.parametrize("fn, op", [
    (lambda h: jnp.sort(h, axis=-1), "sort"), (lambda h: jnp.cumprod(h, axis=-1), "cumprod"),
    (lambda h: h * h[..., ::-1], "mul"), (lambda h: h / jnp.roll(h, 1, axis=-1), "div"),
])
def test_strict_mode_names_operation_and_line(fn, op):
    model = _readout_then(fn)
    x = jnp.ones((T, E))
    with pytest.raises(lrpjax.UnsupportedOperationError) as info:
        lrpjax.relevance(model, x)
    msg = str(info.value)
    assert f"`{op}`" in msg and "strict=False" in msg and "Fix:" in msg
    line = inspect.getsourcelines(_readout_then)[1] + 5  # the `lrpjax.dense(fn(h), W)` line
    assert f"test_api.py:{line}" in msg or "test_api.py" in msg


def test_strict_false_uses_plain_gradient_and_warns_once():
    model = _readout_then(lambda h: jnp.cumprod(h, axis=-1) * 1.0 + 0.0)
    x = jnp.ones((T, E)) * 0.3
    with pytest.warns(UserWarning, match="cumprod"):
        R = lrpjax.relevance(model, x, strict=False)
    assert R.shape == x.shape and np.all(np.isfinite(R))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lrpjax.relevance(model, x, strict=False)  # same operations: no second warning


def test_rules_wrapped_user_activation_passes_strict():
    model = _readout_then(lambda h: lrpjax.act(jnp.tanh, h))
    assert lrpjax.relevance(model, jnp.ones((T, E))).shape == (T, E)


def test_user_jitted_model_is_retraced_under_rules_and_plain_grad_unaffected(small):
    model, x = small
    jm = jax.jit(model)
    g_before = jax.grad(lambda x: jm(x)[0, 0])(x)
    np.testing.assert_allclose(lrpjax.relevance(jm, x), lrpjax.relevance(model, x), atol=1e-12)
    g_after = jax.grad(lambda x: jm(x)[0, 0])(x)
    np.testing.assert_array_equal(g_before, g_after)
    assert not np.allclose(g_after * x, lrpjax.relevance(model, x, 0))


def test_float32_default_mode_in_fresh_process(small):
    """Users run with jax_enable_x64 off: float32 end to end, close to the float64 result."""
    model, x = small
    code = r"""
import json, sys, jax, jax.numpy as jnp, numpy as np, lrpjax
assert not jax.config.jax_enable_x64
k = jax.random.split(jax.random.key(42), 3)
p = lrpjax.init_lstm(k[0], 3, 4)
x = jnp.asarray(np.array(json.loads(sys.stdin.read())), jnp.float32)
def model(x):
    return lrpjax.dense(lrpjax.lstm(p, x)[1][1], jnp.ones((4, 3), jnp.float32))
R = jax.jit(lambda x: lrpjax.relevance(model, x, 1))(x)
assert R.dtype == jnp.float32, R.dtype
print(json.dumps({"R": np.asarray(R, np.float64).tolist(),
                  "p": [np.asarray(a, np.float64).tolist() for a in p]}))
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_ENABLE_X64="0")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(np.asarray(x).tolist()),
                         capture_output=True, text=True, env=env, timeout=300, check=True)
    res = json.loads(out.stdout)
    p64 = lrpjax.LSTMParams(*(f64(a) for a in res["p"]))
    m64 = lambda x: lrpjax.dense(lrpjax.lstm(p64, x)[1][1], jnp.ones((4, 3), jnp.float64))
    x32 = f64(np.asarray(x, np.float32))
    R64 = lrpjax.relevance(m64, x32, 1)
    np.testing.assert_allclose(res["R"], R64, rtol=1e-5, atol=1e-5 * float(jnp.abs(R64).max()))


def test_relevance_uses_full_float32_matmuls_unless_the_user_chose_a_precision():
    """LRP divides by forward pre-activations: reduced-precision float32 matmuls (TF32 on GPUs) would
    change the relevance, so the relevance pass asks for HIGHEST unless a default precision is set."""
    p = lrpjax.init_lstm(jax.random.key(0), 3, 4)
    fn = lambda x: lrpjax.relevance(lambda z: lrpjax.lstm(p, z)[1][1], x)
    x = np.ones((2, 5, 3), np.float32)
    text = jax.make_jaxpr(fn)(x).pretty_print()
    n_dots = text.count("dot_general[")
    assert n_dots > 0 and text.count("precision=(Precision.HIGHEST, Precision.HIGHEST)") == n_dots
    with jax.default_matmul_precision("bfloat16"):
        text = jax.make_jaxpr(fn)(x).pretty_print()
    assert "Precision.HIGHEST" not in text
    # plain calls of the model outside lrpjax are untouched
    assert "Precision.HIGHEST" not in jax.make_jaxpr(lambda z: lrpjax.lstm(p, z)[1][1])(x).pretty_print()
