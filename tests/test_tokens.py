"""``lrpjax.explain_tokens`` / ``lrpjax.embedding_input`` on every way of looking token ids up in a float
table: ``table[ids]`` on a linen param, ``jnp.take``, ``one_hot(ids) @ table``, ``nn.Embed``,
``nnx.Embed`` and an nnx param indexed by hand.

Expected values: the same recurrent head written separately as a model of the embedded input, fed
with the table rows picked by numpy indexing and explained with ``lrpjax.explain``; summed over the
embedding dimension. float64, 1e-10.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import lrpjax

V, E, D, C = 23, 5, 8, 3
F64 = jnp.float64
IDS = np.array([[3, 14, 15, 9, 2, 6], [2, 6, 5, 3, 5, 8], [7, 1, 22, 4, 0, 0]])


class Head(nn.Module):
    """The part after the lookup: LSTM, last (valid) step, Dense."""

    @nn.compact
    def __call__(self, e, lengths=None):
        rnn = nn.RNN(nn.LSTMCell(D, param_dtype=F64), return_carry=True)
        (_, h), _ = rnn(e, seq_lengths=lengths)
        return nn.Dense(C, param_dtype=F64)(h)


def lookup(form, table, ids):
    if form == "index":
        return table[ids]
    if form == "take":
        return jnp.take(table, ids, axis=0)
    return jax.nn.one_hot(ids, V, dtype=table.dtype) @ table


class TokenModel(nn.Module):
    form: str
    padded: bool = False

    @nn.compact
    def __call__(self, ids):
        if self.form == "embed":
            e = nn.Embed(V, E, param_dtype=F64, name="embed")(ids)
        else:
            table = self.param("embedding", nn.initializers.normal(1.0), (V, E), F64)
            e = lookup(self.form, table, ids)
        lengths = jnp.sum(ids != 0, axis=-1) if self.padded else None
        return Head(name="head")(e, lengths)


def linen_case(form, padded=False, ids=IDS):
    """(token model, hand-written model of the embedded input, numpy embedded input)."""
    m = TokenModel(form, padded)
    v = m.init(jax.random.key(0), jnp.asarray(ids))
    p = v["params"]
    table = np.asarray(p["embed"]["embedding"] if form == "embed" else p["embedding"])
    lengths = jnp.asarray((np.asarray(ids) != 0).sum(-1)) if padded else None
    on_embedded = lambda e: Head().apply({"params": p["head"]}, e, lengths)
    return (lambda i: m.apply(v, i)), on_embedded, table[np.asarray(ids)]


def assert_matches(ex, on_embedded, emb, **options):
    ref = lrpjax.explain(on_embedded, jnp.asarray(emb), ex.target, **options)
    assert ex.relevance.shape == emb.shape[:-1]
    np.testing.assert_allclose(ex.relevance, np.asarray(ref.relevance).sum(-1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ex.scores, ref.scores, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ex.absorbed, ref.absorbed, rtol=1e-10, atol=1e-12)
    assert len(ex.state_relevance) == len(ref.state_relevance) == 2   # c_0, h_0 once, not twice
    for a, b in zip(ex.state_relevance, ref.state_relevance):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    return ref


@pytest.mark.parametrize("form", ["index", "take", "onehot", "embed"])
def test_linen_lookups_equal_explaining_the_embedded_input(form):
    model, on_embedded, emb = linen_case(form)
    for options in ({}, {"bias_factor": 1.0, "gate": "half"}):
        ex = lrpjax.explain_tokens(model, IDS, **options)
        assert_matches(ex, on_embedded, emb, **options)
    ex = lrpjax.explain_tokens(model, IDS, bias_factor=1.0)
    np.testing.assert_allclose(ex.absorbed, 0.0, atol=1e-10)   # conserved down to the tokens
    jitted = jax.jit(lambda ids: lrpjax.explain_tokens(model, ids, bias_factor=1.0).relevance)
    np.testing.assert_allclose(jitted(jnp.asarray(IDS)), ex.relevance, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("form", ["index", "onehot", "embed"])
def test_padded_batch_with_lengths_computed_from_the_ids(form):
    model, on_embedded, emb = linen_case(form, padded=True)
    ex = lrpjax.explain_tokens(model, IDS, bias_factor=1.0)
    assert_matches(ex, on_embedded, emb, bias_factor=1.0)
    assert np.all(np.asarray(ex.relevance)[2, 4:] == 0.0)       # padding gets exactly nothing
    assert np.any(np.asarray(ex.relevance)[2, :4] != 0.0)
    jitted = jax.jit(lambda ids: lrpjax.explain_tokens(model, ids, bias_factor=1.0).relevance)
    np.testing.assert_allclose(jitted(jnp.asarray(IDS)), ex.relevance, rtol=1e-10, atol=1e-12)


class NnxTokens(nnx.Module):
    def __init__(self, by_hand: bool, rngs):
        self.by_hand = by_hand
        if by_hand:
            self.table = nnx.Param(jax.random.normal(jax.random.key(3), (V, E), F64))
        else:
            self.embed = nnx.Embed(V, E, param_dtype=F64, rngs=rngs)
        self.rnn = nnx.RNN(nnx.LSTMCell(E, D, param_dtype=F64, rngs=rngs))
        self.out = nnx.Linear(D, C, param_dtype=F64, rngs=rngs)

    def head(self, e):
        return self.out(self.rnn(e)[:, -1])

    def __call__(self, ids):
        e = self.table[...][ids] if self.by_hand else self.embed(ids)
        return self.head(e)


@pytest.mark.parametrize("by_hand", [False, True], ids=["nnx.Embed", "nnx param[ids]"])
def test_nnx_lookups_equal_explaining_the_embedded_input(by_hand):
    n = NnxTokens(by_hand, nnx.Rngs(1))
    table = np.asarray(n.table[...] if by_hand else n.embed.embedding[...])
    ex = lrpjax.explain_tokens(lambda i: n(i), IDS, bias_factor=1.0)
    assert_matches(ex, lambda e: n.head(e), table[IDS], bias_factor=1.0)


def test_embedding_input_captures_and_injects_for_baselines():
    """Plain mode (no rules): the lookup's output, and the model with other embeddings put in."""
    model, on_embedded, emb = linen_case("index")
    got, on_embeddings = lrpjax.embedding_input(model, IDS)
    np.testing.assert_array_equal(got, emb)
    np.testing.assert_allclose(on_embeddings(got), model(jnp.asarray(IDS)), rtol=1e-12)
    other = emb + np.linspace(-1.0, 1.0, emb.size).reshape(emb.shape)
    np.testing.assert_allclose(on_embeddings(jnp.asarray(other)), on_embedded(jnp.asarray(other)),
                               rtol=1e-12)
    g = lrpjax.attribute("gradient", on_embeddings, got)
    t = jnp.argmax(on_embedded(jnp.asarray(emb)), -1)
    expected = jax.grad(lambda e: jnp.sum(on_embedded(e)[jnp.arange(3), t]))(jnp.asarray(emb))
    np.testing.assert_allclose(g.relevance, expected, rtol=1e-10, atol=1e-14)
    batched = jax.vmap(on_embeddings)(jnp.stack([got, jnp.asarray(other)]))
    np.testing.assert_allclose(batched[1], on_embedded(jnp.asarray(other)), rtol=1e-12)
    with pytest.raises(ValueError, match=r"embeddings of shape \(3, 6, 4\)"):
        on_embeddings(got[..., :4])


def test_a_lookup_inside_a_jitted_helper_and_an_unused_lookup():
    """The lookup is found inside a jit-ed function; a lookup whose result is unused does not count."""
    model, on_embedded, emb = linen_case("take")
    table2 = jnp.ones((V, 2), F64)
    embed = jax.jit(lambda t, ids: t[ids])

    class Wrapped(nn.Module):
        @nn.compact
        def __call__(self, ids):
            table = self.param("embedding", nn.initializers.normal(1.0), (V, E), F64)
            _unused = table2[ids]
            return Head(name="head")(embed(table, ids))

    v = Wrapped().init(jax.random.key(0), jnp.asarray(IDS))
    ex = lrpjax.explain_tokens(lambda i: Wrapped().apply(v, i), IDS)
    head = lambda e: Head().apply({"params": v["params"]["head"]}, e)
    assert_matches(ex, head, np.asarray(v["params"]["embedding"])[IDS])


def table_model(body):
    table = jax.random.normal(jax.random.key(2), (V, E), F64)
    p = lrpjax.init_lstm(jax.random.key(4), E, D, dtype=F64)
    W = jax.random.normal(jax.random.key(5), (D, C), F64)
    return lambda ids: lrpjax.dense(lrpjax.lstm(p, body(table, ids))[1][1], W)


@pytest.mark.parametrize("body,message", [
    (lambda t, ids: t[ids] + jnp.take(t, ids + 1, axis=0), r"found 2: `gather` at .*; `gather` at"),
    (lambda t, ids: t[ids] + jax.nn.one_hot(ids, V, dtype=t.dtype) @ t, r"found 2: .*`dot_general`"),
    (lambda t, ids: jnp.broadcast_to(ids[..., None] * 0.1, ids.shape + (E,)), "found none"),
    (lambda t, ids: jax.lax.scan(lambda c, i: (c, t[i]), 0.0, ids.T)[1].transpose(1, 0, 2),
     "outside loops and branches, found `gather` at .* inside a `scan`"),
    (lambda t, ids: t[ids.T], r"gives shape \(6, 3, 5\), not \(\*ids.shape, E\)"),
])
def test_zero_several_or_unusable_lookups_give_a_clear_error(body, message):
    model = table_model(body)
    with pytest.raises(ValueError, match=message) as err:
        lrpjax.explain_tokens(model, IDS)
    assert "\n" not in str(err.value) and "lrpjax.explain" in str(err.value)


def test_flax_embed_plus_a_second_lookup_is_refused():
    class Two(nn.Module):
        @nn.compact
        def __call__(self, ids):
            extra = self.param("extra", nn.initializers.normal(1.0), (V, E), F64)
            return Head()(nn.Embed(V, E, param_dtype=F64)(ids) + extra[ids])

    v = Two().init(jax.random.key(0), jnp.asarray(IDS))
    with pytest.raises(ValueError, match="exactly one embedding lookup .* found 2"):
        lrpjax.explain_tokens(lambda i: Two().apply(v, i), IDS)
    with pytest.raises(ValueError, match="integer token ids"):
        lrpjax.embedding_input(lambda i: Two().apply(v, i), IDS.astype(np.float64))
