"""Recurrent models written the way users write them, for ``test_gallery.py``.

Nothing here knows about lrpjax: plain Flax (linen and nnx), plain jnp and PyTorch. The tests explain
these models unmodified.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def perturb(tree, seed, scale=0.3):
    """Add Gaussian noise to every parameter (trained models have non-zero biases; Flax inits them to 0).
    Done in NumPy: no small XLA programs to compile."""
    rng = np.random.default_rng(seed)
    noisy = lambda a: jnp.asarray(np.asarray(a) + scale * rng.normal(size=np.shape(a)), a.dtype)
    return jax.tree.map(noisy, tree)


def random_init(module, seed, *args, scale=0.5):
    """Variables of a linen ``module`` with N(0, scale^2) entries (a stand-in for trained weights),
    shaped by ``jax.eval_shape(module.init, ...)``: nothing is compiled."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(scale * rng.normal(size=s.shape), s.dtype), shapes)


# ------------------------------------------------------------------------------------------------
# 1. SST-2 style sentiment classifier (linen): table embedding, two hand-scanned LSTMs, MLP attention,
#    tanh MLP head, one logit per sentence.

def reverse_valid_part(x, lengths):
    """Per sentence, reverse the first ``length`` steps and leave the padding at the end:
    ``[a b c _ _] -> [c b a _ _]`` (move the padding to the front with a roll, then flip)."""
    def one(seq, n):
        return jnp.flip(jnp.roll(seq, seq.shape[0] - n, axis=0), axis=0)
    return jax.vmap(one)(x, lengths)


class ScannedLSTM(nn.Module):
    """An LSTM over ``(B, T, E)`` written with ``nn.scan`` over an ``OptimizedLSTMCell``."""
    hidden: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, xs):
        scan = nn.scan(nn.OptimizedLSTMCell, variable_broadcast="params",
                       split_rngs={"params": False}, in_axes=1, out_axes=1)
        cell = scan(self.hidden, dtype=self.dtype, param_dtype=self.dtype, name="cell")
        zeros = jnp.zeros((xs.shape[0], self.hidden), self.dtype)
        _, hs = cell((zeros, zeros), xs)
        return hs


class SentimentClassifier(nn.Module):
    vocab: int
    emb_dim: int
    hidden: int
    attn_dim: int
    mlp_dim: int
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        dt = dict(dtype=self.dtype, param_dtype=self.dtype)
        self.embedding = self.param("embedding", nn.initializers.normal(1.0),
                                    (self.vocab, self.emb_dim), self.dtype)
        self.forward_lstm = ScannedLSTM(self.hidden, self.dtype)
        self.backward_lstm = ScannedLSTM(self.hidden, self.dtype)
        self.keys = nn.Dense(self.attn_dim, use_bias=False, **dt)
        self.energy = nn.Dense(1, **dt)
        self.hidden_layer = nn.Dense(self.mlp_dim, **dt)
        self.logit = nn.Dense(1, use_bias=False, **dt)

    def embed(self, ids):
        return self.embedding[ids]

    def classify(self, x, lengths):
        """From embedded tokens ``(B, T, E)``: one logit per sentence, ``(B, 1)``."""
        forward = self.forward_lstm(x)
        backward = reverse_valid_part(self.backward_lstm(reverse_valid_part(x, lengths)), lengths)
        h = jnp.concatenate([forward, backward], axis=-1)
        scores = jnp.squeeze(self.energy(nn.tanh(self.keys(h))), axis=-1)
        valid = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
        scores = jnp.where(valid, scores, -jnp.inf)
        alpha = nn.softmax(scores, axis=-1)
        context = jnp.squeeze(alpha[:, None, :] @ h, axis=1)
        return self.logit(nn.tanh(self.hidden_layer(context)))

    def __call__(self, ids, lengths):
        return self.classify(self.embed(ids), lengths)


# ------------------------------------------------------------------------------------------------
# 2. nnx bidirectional tagger: one label distribution per token.

class Tagger(nnx.Module):
    def __init__(self, in_dim, hidden, n_tags, *, rngs, dtype=jnp.float32):
        dt = dict(dtype=dtype, param_dtype=dtype)
        self.encoder = nnx.Bidirectional(nnx.RNN(nnx.LSTMCell(in_dim, hidden, rngs=rngs, **dt)),
                                         nnx.RNN(nnx.LSTMCell(in_dim, hidden, rngs=rngs, **dt)),
                                         rngs=rngs)
        self.classifier = nnx.Linear(2 * hidden, n_tags, rngs=rngs, **dt)

    def __call__(self, x, lengths=None):
        return self.classifier(self.encoder(x, seq_lengths=lengths))


# ------------------------------------------------------------------------------------------------
# 3. BiLSTM with dot-product attention of a learned query: the PyTorch original and its JAX port.

def torch_attention_bilstm(torch, in_dim, hidden, mlp_dim, n_classes):
    """The PyTorch model (float64): packed BiLSTM, learned-query attention, tanh MLP head."""
    tnn = torch.nn

    class AttentionBiLSTM(tnn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = tnn.LSTM(in_dim, hidden, batch_first=True, bidirectional=True)
            self.query = tnn.Parameter(torch.randn(2 * hidden))
            self.fc1 = tnn.Linear(2 * hidden, mlp_dim)
            self.fc2 = tnn.Linear(mlp_dim, n_classes)

        def forward(self, x, lengths):
            T = x.shape[1]
            packed = tnn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                        enforce_sorted=False)
            out, _ = self.lstm(packed)
            h, _ = tnn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
            scores = torch.einsum("btd,d->bt", h, self.query)
            valid = torch.arange(T)[None, :] < lengths[:, None]
            alpha = torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=-1)
            context = torch.einsum("bt,btd->bd", alpha, h)
            return self.fc2(torch.tanh(self.fc1(context)))

    return AttentionBiLSTM().double()


def jax_attention_bilstm(lstm_layers, head, lengths):
    """The same model in JAX: ``lstm_layers`` from ``lrpjax.importers.torch_lstm``, ``head`` a dict
    of numpy weights ``q (2d,)``, ``W1 (2d, m)``, ``b1``, ``W2 (m, C)``, ``b2``. Returns ``x -> logits``."""
    import lrpjax

    q, W1, b1, W2, b2 = (jnp.asarray(head[k]) for k in ("q", "W1", "b1", "W2", "b2"))
    lengths = jnp.asarray(lengths)

    def model(x):
        h, _ = lrpjax.stacked_lstm(lstm_layers, x, lengths=lengths)
        scores = jnp.einsum("btd,d->bt", h, q)
        valid = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
        alpha = jax.nn.softmax(jnp.where(valid, scores, -jnp.inf), axis=-1)
        context = jnp.einsum("bt,btd->bd", alpha, h)
        return jnp.tanh(context @ W1 + b1) @ W2 + b2
    return model


# ------------------------------------------------------------------------------------------------
# 4. Forecaster: one regression output per step.

class Forecaster(nn.Module):
    hidden: int
    cell: str = "gru"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        dt = dict(dtype=self.dtype, param_dtype=self.dtype)
        cell = nn.GRUCell(self.hidden, **dt) if self.cell == "gru" else nn.LSTMCell(self.hidden, **dt)
        return nn.Dense(1, **dt)(nn.RNN(cell)(x))          # (B, T, 1)


# ------------------------------------------------------------------------------------------------
# 5. Multi-head self-attention over LSTM states, masked mean pooling, linear classifier.

class AttentiveEncoder(nn.Module):
    hidden: int
    heads: int
    n_classes: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, lengths):
        dt = dict(dtype=self.dtype, param_dtype=self.dtype)
        h = nn.RNN(nn.LSTMCell(self.hidden, **dt))(x, seq_lengths=lengths)
        valid = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
        mixed = nn.MultiHeadDotProductAttention(num_heads=self.heads, qkv_features=self.hidden,
                                                **dt)(h, mask=nn.make_attention_mask(valid, valid))
        pooled = jnp.sum(jnp.where(valid[..., None], mixed, 0.0), axis=1) / lengths[:, None]
        return nn.Dense(self.n_classes, **dt)(pooled)
