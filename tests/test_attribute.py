"""``lrpjax.attribute`` (every method by name, with scores and target), per-row seeds of the random
baseline, and ``lrpjax.embedding_input`` (a token model split at its embedding lookup)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lrpjax
from lrpjax import baselines

k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
PARAMS = lrpjax.init_lstm(k1, 3, 5, dtype=jnp.float64)
W = jax.random.normal(k2, (5, 4), jnp.float64)
X = jax.random.normal(k3, (6, 7, 3), jnp.float64)


def model(x):
    return lrpjax.dense(lrpjax.lstm(PARAMS, x)[1][1], W)


OPTIONS = {"lrp": {"bias_factor": 1.0}, "integrated_gradients": {"steps": 8}, "occlusion": {"value": 0.5},
           "random": {"seed": 4}}


@pytest.mark.parametrize("method", sorted(baselines.METHODS))
@pytest.mark.parametrize("target", [None, 2])
def test_attribute_equals_the_method_with_scores_and_target(method, target):
    opts = OPTIONS.get(method, {})
    a = lrpjax.attribute(method, model, X, target, **opts)
    scores = model(X)
    want_t = np.argmax(scores, -1) if target is None else np.full(6, target)
    np.testing.assert_array_equal(a.target, want_t)
    np.testing.assert_allclose(a.scores, scores, rtol=1e-12)
    np.testing.assert_allclose(a.relevance, baselines.METHODS[method](model, X, want_t, **opts),
                               rtol=1e-10, atol=1e-12)


def test_attribute_under_jit_with_a_traced_target():
    f = jax.jit(lambda x, t: lrpjax.attribute("gradient_x_input", model, x, t))
    t = jnp.array([0, 1, 2, 3, 0, 1])
    np.testing.assert_allclose(f(X, t).relevance, baselines.gradient_x_input(model, X, t), rtol=1e-10)


def test_attribute_refuses_an_unknown_method():
    with pytest.raises(ValueError, match=r"method must be one of .*'lrp'.*got 'saliency'"):
        lrpjax.attribute("saliency", model, X)


def test_random_rows_do_not_depend_on_the_batch():
    ids = jnp.array([10, 11, 12, 13, 14, 15])
    full = baselines.random_relevance(None, X, seed=7, rows=ids)
    part = baselines.random_relevance(None, X[jnp.array([4, 1])], seed=7, rows=ids[jnp.array([4, 1])])
    np.testing.assert_array_equal(full[jnp.array([4, 1])], part)
    assert not np.allclose(full[0], full[1])
    other_seed = baselines.random_relevance(None, X, seed=8, rows=ids)
    assert not np.allclose(full, other_seed)
    with pytest.raises(ValueError, match=r"rows must be an int array of shape \(B,\)"):
        baselines.random_relevance(None, X, seed=7, rows=ids[:3])


def test_embedding_input_splits_a_token_model():
    table = jax.random.normal(jax.random.key(5), (11, 3), jnp.float64)

    def token_model(ids):
        return model(lrpjax.rules.embed_lookup(table, ids))

    ids = jnp.array([[1, 2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2, 1]])
    emb, on_embeddings = lrpjax.embedding_input(token_model, ids)
    np.testing.assert_array_equal(emb, table[ids])
    np.testing.assert_allclose(on_embeddings(emb), token_model(ids), rtol=1e-12)
    np.testing.assert_allclose(on_embeddings(emb + 1.0), model(table[ids] + 1.0), rtol=1e-12)
    ex = lrpjax.explain_tokens(token_model, ids)
    R = lrpjax.relevance(on_embeddings, emb)
    np.testing.assert_allclose(ex.relevance, R.sum(-1), rtol=1e-10, atol=1e-14)
    g = lrpjax.attribute("gradient", on_embeddings, emb)
    np.testing.assert_allclose(g.relevance, baselines.gradient(model, table[ids]), rtol=1e-10)
    with pytest.raises(ValueError, match="exactly one embedding lookup"):
        lrpjax.embedding_input(lambda ids: model(jnp.zeros(ids.shape + (3,))), ids)
