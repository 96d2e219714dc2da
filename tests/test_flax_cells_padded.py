"""Every supported Flax cell, linen and nnx: padded batches under jit and vmap.

For each cell: relevance at padded steps is exactly 0, the valid part equals explaining each
unpadded sequence alone, and with bias_factor = 1 nothing is absorbed. (The per-rule values are
checked against the numpy oracles in test_flax_linen.py, test_flax_nnx.py, test_flax_layers.py.)
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lrpjax
from helpers import f64

E, D, C, T = 3, 4, 2, 6
LENGTHS = [6, 3, 1]
F64 = dict(param_dtype=jnp.float64)

LINEN_CELLS = {
    "LSTMCell": lambda: nn.LSTMCell(D, **F64),
    "OptimizedLSTMCell": lambda: nn.OptimizedLSTMCell(D, **F64),
    "GRUCell": lambda: nn.GRUCell(D, **F64),
    "MGUCell": lambda: nn.MGUCell(D, **F64),
    "SimpleCell": lambda: nn.SimpleCell(D, **F64),
    "ConvLSTMCell": lambda: nn.ConvLSTMCell(D, (3,), **F64),
}


def _batch(spatial: bool):
    rng = np.random.default_rng(0)
    shape = (len(LENGTHS), T) + ((5,) if spatial else ()) + (E,)
    x = rng.normal(size=shape)
    for b, L in enumerate(LENGTHS):
        x[b, L:] = 7.0  # padding values must not matter
    return f64(x)


def _check(model_fn, x, stacked_rows):
    lengths = jnp.array(LENGTHS)
    f = jax.jit(lambda x: lrpjax.explain(lambda x: model_fn(x, lengths), x, bias_factor=1.0))
    ex = f(x)
    np.testing.assert_allclose(ex.absorbed, 0.0, atol=1e-10)
    vm = jax.vmap(lambda xi, li: lrpjax.relevance(lambda z: model_fn(z[None], li[None])[0], xi,
                                                  bias_factor=1.0))(x, lengths)
    np.testing.assert_allclose(vm, ex.relevance, atol=1e-12)
    for b, L in enumerate(LENGTHS):
        assert np.all(np.asarray(ex.relevance[b, L:]) == 0.0)
        if L == max(LENGTHS):   # (the vmap above covers it; padded rows are the case to check alone)
            continue
        one = lrpjax.relevance(lambda z: model_fn(z[None], jnp.array([L]))[0], x[b, :L],
                               int(ex.target[b]), bias_factor=1.0)
        np.testing.assert_allclose(ex.relevance[b, :L], one, atol=1e-12)


@pytest.mark.parametrize("name", list(LINEN_CELLS))
def test_linen_cell_padded_bidirectional(name):
    make = LINEN_CELLS[name]
    spatial = name == "ConvLSTMCell"

    class M(nn.Module):
        @nn.compact
        def __call__(self, x, lengths):
            (cf, cb), _ = nn.Bidirectional(nn.RNN(make()), nn.RNN(make()), return_carry=True)(
                x, seq_lengths=lengths)
            last = lambda c: c[1] if isinstance(c, tuple) else c
            h = jnp.concatenate([last(cf), last(cb)], -1)
            return nn.Dense(C, **F64)(h.reshape(h.shape[:1] + (-1,)))

    x = _batch(spatial)
    m = M()
    v = m.init(jax.random.key(1), x, jnp.array(LENGTHS))
    _check(lambda x, l: m.apply(v, x, l), x, None)


NNX_CELLS = [nnx.LSTMCell, nnx.OptimizedLSTMCell, nnx.GRUCell, nnx.SimpleCell]


@pytest.mark.parametrize("cell_cls", NNX_CELLS)
def test_nnx_cell_padded_stacked(cell_cls):
    class M(nnx.Module):  # two stacked layers; the second reads the first's outputs
        def __init__(self, rngs):
            kw = dict(rngs=rngs, dtype=jnp.float64, param_dtype=jnp.float64)
            self.l1 = nnx.RNN(cell_cls(E, D, **kw))
            self.l2 = nnx.RNN(cell_cls(D, D, **kw), return_carry=True)
            self.out = nnx.Linear(D, C, rngs=rngs, dtype=jnp.float64, param_dtype=jnp.float64)

        def __call__(self, x, lengths):
            c, _ = self.l2(self.l1(x, seq_lengths=lengths), seq_lengths=lengths)
            return self.out(c[1] if isinstance(c, tuple) else c)

    m = M(nnx.Rngs(0))
    _check(lambda x, l: m(x, l), _batch(False), None)
