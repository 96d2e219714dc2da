"""The released reference BiLSTM (Arras et al. 2017 / Li et al. 2016): lrpjax equals the oracle.

The weights are read from ../shared/data (a test fixture; never copied into the package). The model
ships without its embedding table, so sentences are embedded with a seeded random table.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lrpjax
import oracle
from helpers import f64

EMB_SEED = 2017


@pytest.fixture(scope="module")
def model(arras_weights):
    return lrpjax.interop.from_arras_bilstm(arras_weights)


@pytest.fixture(scope="module")
def embedded(sst_sentences):
    ids, labels, n_vocab = sst_sentences
    table = np.random.default_rng(EMB_SEED).uniform(-0.5, 0.5, (n_vocab, 60))
    # a spread of lengths: short, medium and the longest test sentences
    picks = [0, 300, 1100, 1700, 2209]
    return [table[ids[k]] for k in picks], [labels[k] for k in picks]


def test_forward_matches_reference_equations(model, arras_weights, embedded):
    for x in embedded[0]:
        np.testing.assert_allclose(model(f64(x)), oracle.arras_bilstm_forward(arras_weights, x),
                                   atol=1e-12)


@pytest.mark.parametrize("bias_factor", [0.0, 1.0])
def test_relevance_equals_reference_rules_on_released_weights(model, arras_weights, embedded,
                                                              bias_factor):
    for k, (x, label) in enumerate(zip(*embedded)):
        scores = oracle.arras_bilstm_forward(arras_weights, x)
        # one target per sentence (the oracle's literal loops are slow): the label, or the argmax
        for target in [label if (k + int(bias_factor)) % 2 else int(np.argmax(scores))]:
            R_or, R_init, _ = oracle.arras_bilstm_lrp(arras_weights, x, target, eps=1e-3,
                                                      bias_factor=bias_factor)
            ex = lrpjax.explain(model, f64(x), target, eps=1e-3, bias_factor=bias_factor)
            assert ex.relevance.shape == x.shape and ex.relevance.dtype == jnp.float64
            np.testing.assert_allclose(ex.relevance, R_or, rtol=0, atol=1e-10)
            np.testing.assert_allclose(ex.initial_state, R_init, atol=1e-10)
            if bias_factor == 1.0:  # global conservation on the real model
                np.testing.assert_allclose(float(ex.relevance.sum()) + float(ex.initial_state),
                                           scores[target], atol=1e-10)


@pytest.mark.parametrize("gate", ["half", "abs"])
def test_other_gate_rules_on_released_weights(model, arras_weights, embedded, gate):
    x = embedded[0][1]
    R_or, _, _ = oracle.arras_bilstm_lrp(arras_weights, x, 3, eps=1e-3, bias_factor=1.0, gate=gate)
    np.testing.assert_allclose(lrpjax.relevance(model, f64(x), 3, bias_factor=1.0, gate=gate),
                               R_or, atol=1e-10)


def test_padded_batch_of_sentences_equals_one_by_one(model, embedded):
    xs = embedded[0][:4]
    lengths = np.array([len(x) for x in xs])
    batch = np.zeros((len(xs), lengths.max(), 60))
    for b, x in enumerate(xs):
        batch[b, :len(x)] = x
    f = jax.jit(lambda x, l: lrpjax.explain(lambda x: model(x, l), x, bias_factor=1.0))
    ex = f(f64(batch), jnp.asarray(lengths))
    for b, x in enumerate(xs):
        one = lrpjax.explain(model, f64(x), int(ex.target[b]), bias_factor=1.0)
        np.testing.assert_allclose(ex.relevance[b, :len(x)], one.relevance, atol=1e-12)
        assert np.all(np.asarray(ex.relevance[b, len(x):]) == 0.0)
        np.testing.assert_allclose(ex.absorbed[b], 0.0, atol=1e-10)


def test_float32_close_to_float64_reference(model, arras_weights, embedded):
    x = embedded[0][2]
    R_or, _, _ = oracle.arras_bilstm_lrp(arras_weights, x, 1)
    R32 = lrpjax.relevance(model, jnp.asarray(x, jnp.float32), 1)
    assert R32.dtype == jnp.float32
    np.testing.assert_allclose(R32, R_or, rtol=0, atol=1e-5 * np.abs(R_or).max())


def test_from_arras_accepts_npz_path_and_checks_keys(arras_weights, tmp_path):
    p = tmp_path / "w.npz"
    np.savez(p, **arras_weights)
    x = f64(np.ones((3, 60)) * 0.1)
    np.testing.assert_allclose(lrpjax.interop.from_arras_bilstm(p)(x),
                               lrpjax.interop.from_arras_bilstm(arras_weights)(x))
    bad = dict(arras_weights)
    del bad["Why_Right"]
    with pytest.raises(ValueError, match="Why_Right"):
        lrpjax.interop.from_arras_bilstm(bad)
    bad = dict(arras_weights, Whh_Left=arras_weights["Whh_Left"][:, :10])
    with pytest.raises(ValueError, match="Whh_Left"):
        lrpjax.interop.from_arras_bilstm(bad)
