"""The baselines on Flax nnx models called as ``lambda x: model(x)`` (issue 10, section 4).

A plain ``jax.grad``/``jax.jit`` of such a function trips over ``nnx.RNN``'s RNG stream; the baselines
run the model's layers as plain JAX (``lrpjax.flax_integration.traceable``). Every value is checked
against a reference computed the way nnx intends it, independently of lrpjax: ``nnx.grad`` for the
gradient, and eager model calls for the forward passes (occlusion, the integrated-gradients path).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lrpjax
from lrpjax.jobs import attribute_dataset, read_results

E, D, C, T, B = 3, 5, 4, 6, 3
TOL = dict(rtol=1e-10, atol=1e-12)


class Classifier(nnx.Module):
    """nnx LSTM classifier: the last valid state -> Linear; float64 parameters."""

    def __init__(self, rngs: nnx.Rngs):
        self.rnn = nnx.RNN(nnx.LSTMCell(E, D, param_dtype=jnp.float64, rngs=rngs))
        self.out = nnx.Linear(D, C, param_dtype=jnp.float64, rngs=rngs)

    def __call__(self, x, lengths=None):
        if lengths is None:
            return self.out(self.rnn(x)[:, -1])
        hs = self.rnn(x, seq_lengths=lengths)
        return self.out(hs[jnp.arange(x.shape[0]), lengths - 1])


@pytest.fixture(scope="module")
def setup():
    model = Classifier(nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (B, T, E), jnp.float64)
    return model, x


def ref_gradient(model, x, t):
    """d s_t / d x per row with nnx's own transform."""
    score = lambda m, x: jnp.sum(jnp.take_along_axis(m(x), t[:, None], axis=1))
    return nnx.grad(score, argnums=1)(model, x)


def snapshot(model):
    """The model's state (params and RNG stream) as numpy arrays."""
    raw = lambda a: jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a
    return jax.tree.map(lambda a: np.asarray(raw(a)), nnx.state(model))


def ref_target_score(model, x, t):
    return np.take_along_axis(np.asarray(model(x)), np.asarray(t)[:, None], 1)[:, 0]


def test_plain_jax_grad_of_the_nnx_model_fails_without_lrpjax(setup):
    """The premise: without the baselines' handling a plain trace of the model raises."""
    model, x = setup
    with pytest.raises(Exception, match="trace level"):
        jax.grad(lambda v: model(v).sum())(x)


def test_gradient_and_gradient_x_input_equal_nnx_grad(setup):
    model, x = setup
    t = jnp.argmax(model(x), axis=-1)
    g = ref_gradient(model, x, t)
    assert np.abs(g).max() > 1e-3
    np.testing.assert_allclose(lrpjax.gradient(lambda v: model(v), x), g, **TOL)
    np.testing.assert_allclose(lrpjax.gradient_x_input(lambda v: model(v), x), x * g, **TOL)
    t2 = jnp.array([0, 3, 1])
    np.testing.assert_allclose(lrpjax.gradient(lambda v: model(v), x, t2), ref_gradient(model, x, t2),
                               **TOL)
    np.testing.assert_allclose(lrpjax.baselines.sensitivity(lambda v: model(v), x),
                               np.sum(np.square(g), axis=-1), **TOL)


def test_integrated_gradients_equal_the_midpoint_sum_of_nnx_grads(setup):
    model, x = setup
    t, steps = jnp.argmax(model(x), axis=-1), 4
    grads = [ref_gradient(model, (k + 0.5) / steps * x, t) for k in range(steps)]
    want = x * np.mean(grads, axis=0)
    np.testing.assert_allclose(lrpjax.integrated_gradients(lambda v: model(v), x, steps=steps), want,
                               **TOL)


def test_occlusion_equals_a_loop_of_eager_model_calls(setup):
    model, x = setup
    t = jnp.argmax(model(x), axis=-1)
    s = ref_target_score(model, x, t)
    want = np.stack([s - ref_target_score(model, x.at[:, k].set(0.0), t) for k in range(T)], axis=1)
    np.testing.assert_allclose(lrpjax.occlusion(lambda v: model(v), x), want, **TOL)


def test_attribute_under_jit_and_the_model_is_left_unchanged(setup):
    model, x = setup
    scores = model(x)                  # references first: eager nnx calls advance its RNG count
    t = jnp.argmax(scores, axis=-1)
    g = ref_gradient(model, x, t)
    before = snapshot(model)
    for method, want in [("gradient", g), ("gradient_x_input", x * g)]:
        a = jax.jit(lambda x: lrpjax.attribute(method, lambda v: model(v), x))(x)
        np.testing.assert_allclose(a.relevance, want, **TOL)
        np.testing.assert_allclose(a.scores, scores, **TOL)
        np.testing.assert_array_equal(a.target, t)
    a = lrpjax.attribute("integrated_gradients", lambda v: model(v), x, steps=2)
    np.testing.assert_allclose(a.relevance, lrpjax.integrated_gradients(lambda v: model(v), x, steps=2),
                               **TOL)
    after = snapshot(model)
    jax.tree.map(np.testing.assert_array_equal, before, after)
    with pytest.raises(Exception, match="trace level"):     # nothing stays patched afterwards
        jax.grad(lambda v: model(v).sum())(x)


@pytest.mark.parametrize("method", ["gradient", "occlusion"])
def test_job_runner_method_on_an_nnx_model(setup, tmp_path, method):
    """``attribute_dataset(..., method=...)``: each row equals the reference of the example alone."""
    model, _ = setup
    rng = np.random.default_rng(4)
    data = [rng.normal(size=(L, E)).astype(np.float32) for L in (3, 6, 5)]
    attribute_dataset(lambda x, lengths: model(x, lengths), data, tmp_path / "out", method=method,
                      batch_size=4, progress=False)
    rows = {r["index"]: r for r in read_results(tmp_path / "out").to_pylist()}
    for i, xi in enumerate(data):
        x1 = jnp.asarray(xi[None], jnp.float64)
        t = jnp.argmax(model(x1), axis=-1)
        if method == "gradient":
            want = np.sum(np.asarray(ref_gradient(model, x1, t))[0], axis=-1)
        else:
            s = ref_target_score(model, x1, t)
            want = np.array([(s - ref_target_score(model, x1.at[:, k].set(0.0), t))[0]
                             for k in range(len(xi))])
        assert rows[i]["target"] == int(t[0])
        np.testing.assert_allclose(rows[i]["relevance"][:len(xi)], want, rtol=1e-5, atol=1e-6)
