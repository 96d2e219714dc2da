"""A trained Flax SST-2-style attention classifier explained in strict mode: the decisive token is found.

The task: each sequence of neutral tokens holds exactly one decisive token (3 = positive, 4 =
negative) at a random position; the label is which. A model that learned the task must route its
score through that token, so LRP (signal-take-all) must rank it first -- the issue that prompted this
test measured 30 % with the plain gradient of the attention branch (strict=False) and 100 % with
gradient x input.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lrpjax

V, T, H = 12, 8, 8


class Direction(nn.Module):
    @functools.partial(nn.scan, variable_broadcast="params", in_axes=1, out_axes=1,
                       split_rngs={"params": False})
    @nn.compact
    def __call__(self, carry, x):
        return nn.OptimizedLSTMCell(H)(carry, x)


def flip(x, lengths):
    return jax.vmap(lambda s, n: jnp.flip(jnp.roll(s, s.shape[0] - n, axis=0), axis=0))(x, lengths)


class AttentionClassifier(nn.Module):
    @nn.compact
    def __call__(self, ids, lengths):
        e = self.param("embedding", nn.initializers.normal(0.5), (V, 6))[ids]
        zeros = (jnp.zeros((ids.shape[0], H)),) * 2
        _, fwd = Direction()(zeros, e)
        _, bwd = Direction()(zeros, flip(e, lengths))
        h = jnp.concatenate([fwd, flip(bwd, lengths)], -1)
        mask = jnp.arange(ids.shape[1])[None] < lengths[:, None]
        s = nn.Dense(1, use_bias=False)(nn.tanh(nn.Dense(H, use_bias=False)(h)))[..., 0]
        alpha = nn.softmax(jnp.where(mask, s, -jnp.inf), axis=-1)
        ctx = (alpha[:, None, :] @ h)[:, 0]
        return nn.Dense(2, use_bias=False)(nn.tanh(nn.Dense(H)(ctx)))


def make_data(rng, n):
    lengths = rng.integers(3, T + 1, size=n)
    ids = rng.integers(5, V, size=(n, T))
    ids[np.arange(T)[None] >= lengths[:, None]] = 0                  # padding
    where = (rng.random(n) * lengths).astype(int)
    label = rng.integers(0, 2, size=n)
    ids[np.arange(n), where] = np.where(label == 1, 3, 4)
    return jnp.asarray(ids), jnp.asarray(lengths), jnp.asarray(label), where


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    ids, lengths, labels, _ = make_data(rng, 512)
    model = AttentionClassifier()
    params = model.init(jax.random.key(0), ids[:2], lengths[:2])
    opt = optax.adam(2e-2)
    state = opt.init(params)

    @jax.jit
    def step(params, state, i):
        sl = jax.lax.dynamic_slice_in_dim
        b_ids, b_len, b_lab = sl(ids, i * 64, 64), sl(lengths, i * 64, 64), sl(labels, i * 64, 64)
        loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
            model.apply(p, b_ids, b_len), b_lab).mean()
        g = jax.grad(loss)(params)
        updates, state = opt.update(g, state)
        return optax.apply_updates(params, updates), state

    for epoch in range(25):
        for i in range(8):
            params, state = step(params, state, i)
    return model, params


def test_trained_attention_model_decisive_token_ranks_first(trained):
    model, params = trained
    ids, lengths, labels, where = make_data(np.random.default_rng(1), 128)
    logits = model.apply(params, ids, lengths)
    correct = np.asarray(logits.argmax(-1) == labels)
    assert correct.mean() > 0.95                           # the model learned the task
    ex = lrpjax.explain_tokens(lambda i: model.apply(params, i, lengths), ids, labels)
    R = np.asarray(ex.relevance)
    top = R.argmax(-1)
    assert (top == where)[correct].mean() >= 0.95
    # padded tokens get exactly nothing, and little of the score is absorbed with bias_factor=0
    pad = np.arange(T)[None] >= np.asarray(lengths)[:, None]
    assert np.all(R[pad] == 0.0)
    score = np.asarray(ex.scores)[np.arange(len(labels)), np.asarray(labels)]
    assert np.median(np.abs(np.asarray(ex.absorbed)) / np.abs(score)) < 0.5
    # bias_factor=1: exactly conserved (the scans' zero carries are reported as initial states)
    ex1 = lrpjax.explain_tokens(lambda i: model.apply(params, i, lengths), ids, labels, bias_factor=1.0)
    np.testing.assert_allclose(np.asarray(ex1.total + ex1.initial_state), score, rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(ex1.relevance)[pad] == 0.0)
