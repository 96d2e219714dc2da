"""Gallery: recurrent models as people write them (issue 10, section 5), explained unmodified.

The models (tests/gallery_models.py) are plain Flax linen / nnx / jnp / PyTorch code that knows nothing
about lrpjax:

1. an SST-2 style sentiment classifier (table embedding indexed by ids, two ``nn.scan``-ed
   ``OptimizedLSTMCell`` with per-sentence flipping, masked MLP attention, tanh MLP head, one logit);
2. an nnx bidirectional LSTM tagger (scores per token);
3. a PyTorch BiLSTM with learned-query attention, imported with ``lrpjax.importers.torch_lstm``;
4. a forecaster with one regression output per step;
5. multi-head self-attention over LSTM states, masked mean pooling, linear classifier.

Each is explained with ``strict=True``. Expected values never come from lrpjax: conservation is
checked against the model's own plain forward output (``bias_factor=1``, ``gate="all"``:
``total + initial_state == score``), padded tokens must get exactly 0, the PyTorch model is compared
with its torch forward and with the literal NumPy oracles (tests/oracle.py, tests/oracle_heads.py),
per-step outputs with one ``relevance`` call per step, and padded sentences with the same sentence
explained unpadded. Every model is also explained under ``jax.jit`` (equal to eager) and with every
gate rule (finite everywhere). Parameters are random (biases non-zero, as after training).

Runtime: op-by-op (eager) execution compiles every primitive once, so each model is explained eagerly
exactly once (its jit-equals-eager check); everything else runs under one ``jax.jit`` per check.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lrpjax
import oracle
import oracle_heads
from gallery_models import (AttentiveEncoder, Forecaster, SentimentClassifier, Tagger,
                            jax_attention_bilstm, perturb, random_init, torch_attention_bilstm)
from lrpjax.importers import torch_lstm

B, T, E, D = 3, 6, 4, 4
VOCAB, ATTN, MLP, C = 20, 5, 5, 3
LENGTHS = np.array([6, 3, 4])
GATES = ["all", "half", "prop", "abs"]
# every gate rule once; "all" with bias_factor=1 is covered by each model's conservation test
GATE_CASES = [("all", 0.0), ("half", 1.0), ("prop", 1.0), ("abs", 1.0)]
EPS = 1e-3
F64, F32 = jnp.float64, jnp.float32
CONSERVE = dict(bias_factor=1.0, gate="all")
VALID = np.arange(T)[None, :] < LENGTHS[:, None]               # (B, T)


def assert_conserves(ex, score, rel_tol=1e-10):
    """``total + initial_state`` equals the model's own score, up to ``rel_tol`` of its size."""
    score = np.asarray(score, np.float64)
    got = np.asarray(ex.total, np.float64) + np.asarray(ex.initial_state, np.float64)
    np.testing.assert_allclose(got, score, rtol=0, atol=rel_tol * max(1.0, np.abs(score).max()))


def assert_padding_gets_zero(R, lengths=LENGTHS):
    """Steps at and after each row's length get exactly 0.0 (R: (B, T, ...))."""
    R = np.asarray(R)
    for b, L in enumerate(lengths):
        assert np.all(R[b, L:] == 0.0), f"row {b}: padded steps got {R[b, L:]}"


def assert_tree_close(a, b, tol=1e-12):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        u, v = np.asarray(u), np.asarray(v)
        np.testing.assert_allclose(u, v, rtol=0, atol=tol * max(1.0, np.abs(v).max()))


def assert_finite(ex):
    for leaf in jax.tree.leaves(ex):
        assert np.all(np.isfinite(np.asarray(leaf))), "NaN/inf in the explanation"


# ================================================================================================
# 1. SST-2 style classifier (linen): ids -> table[ids] -> BiLSTM by nn.scan -> MLP attention -> 1 logit

@pytest.fixture(scope="module")
def sst():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCAB, size=(B, T))
    ids = jnp.asarray(np.where(VALID, ids, 0), jnp.int32)          # pad id 0 has a real embedding
    lengths = jnp.asarray(LENGTHS, jnp.int32)
    model = SentimentClassifier(VOCAB, E, D, ATTN, MLP, F64)
    v = random_init(model, 1, ids, lengths)
    fn = lambda i: model.apply(v, i, lengths)
    logits = np.asarray(jax.jit(model.apply)(v, ids, lengths))
    explain = jax.jit(lambda i: lrpjax.explain_tokens(fn, i, **CONSERVE))
    return dict(model=model, v=v, ids=ids, lengths=lengths, fn=fn, logits=logits,
                eager=lrpjax.explain_tokens(fn, ids, **CONSERVE), jitted=explain)


def test_sst_model_ignores_padding(sst):
    """The model itself: a padded sentence scores as the sentence alone (it masks correctly)."""
    assert sst["logits"].shape == (B, 1)
    b, L = 1, int(LENGTHS[1])
    alone = jax.jit(sst["model"].apply)(sst["v"], sst["ids"][b:b + 1, :L], sst["lengths"][b:b + 1])
    np.testing.assert_allclose(sst["logits"][b], alone[0], rtol=1e-12)


def test_sst_tokens_conserve_and_padding_gets_zero(sst):
    ex = sst["eager"]
    assert ex.relevance.shape == (B, T) and ex.scores.shape == (B, 1)
    np.testing.assert_allclose(ex.scores, sst["logits"], rtol=1e-12)
    assert ex.target.tolist() == [0] * B
    assert_conserves(ex, sst["logits"][:, 0])
    assert_padding_gets_zero(ex.relevance)
    # the zero carries of the hand-written scans take their share (bias_factor=1 spreads bias
    # shares over the zero h_0 too): reported as initial_state, not lost in `absorbed`
    assert np.all(np.abs(ex.initial_state) > 1e-8)
    assert np.all(np.abs(ex.absorbed) < 1e-10 * max(1.0, np.abs(sst["logits"]).max()))


def test_sst_jit_equals_eager(sst):
    assert_tree_close(sst["jitted"](sst["ids"]), sst["eager"])


def test_sst_embedding_method_equals_tokens(sst):
    """Explaining the embedded input (the model's ``classify`` method) = explaining from the ids."""
    model, v, ids, lengths = sst["model"], sst["v"], sst["ids"], sst["lengths"]
    emb = model.apply(v, ids, method=SentimentClassifier.embed)
    on_emb = lambda e: model.apply(v, e, lengths, method=SentimentClassifier.classify)
    ex = jax.jit(lambda e: lrpjax.explain(on_emb, e, **CONSERVE))(emb)
    assert ex.relevance.shape == (B, T, E)
    assert_conserves(ex, sst["logits"][:, 0])
    assert_padding_gets_zero(ex.relevance)
    np.testing.assert_allclose(ex.relevance.sum(-1), sst["eager"].relevance, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ex.initial_state, sst["eager"].initial_state, rtol=0, atol=1e-12)


def test_sst_padded_sentence_explained_as_the_sentence_alone(sst):
    model, v = sst["model"], sst["v"]
    b, L = 1, int(LENGTHS[1])
    ids, lengths = sst["ids"][b:b + 1, :L], sst["lengths"][b:b + 1]
    alone = jax.jit(lambda i: lrpjax.explain_tokens(lambda j: model.apply(v, j, lengths), i,
                                                    **CONSERVE))(ids)
    np.testing.assert_allclose(alone.relevance[0], sst["eager"].relevance[b, :L], rtol=0, atol=1e-12)
    np.testing.assert_allclose(alone.initial_state[0], sst["eager"].initial_state[b], atol=1e-12)


def test_sst_padding_content_does_not_matter(sst):
    other = jnp.where(jnp.asarray(VALID), sst["ids"], 7)             # another pad id
    ex = sst["jitted"](other)
    np.testing.assert_allclose(ex.relevance, sst["eager"].relevance, rtol=0, atol=1e-12)


@pytest.mark.parametrize("gate, bias_factor", GATE_CASES)
def test_sst_every_gate_rule_finite_and_padding_zero(sst, gate, bias_factor):
    model, v, lengths = sst["model"], sst["v"], sst["lengths"]

    fn = lambda j: model.apply(v, j, lengths)
    ex = jax.jit(lambda i: lrpjax.explain_tokens(fn, i, gate=gate, bias_factor=bias_factor,
                                                 strict=True))(sst["ids"])
    assert_finite(ex)
    assert_padding_gets_zero(ex.relevance)


# ================================================================================================
# 2. nnx bidirectional tagger: scores (B, T, C), one per token

@pytest.fixture(scope="module")
def tagger():
    model = Tagger(E, D, C, rngs=nnx.Rngs(3), dtype=F64)
    nnx.update(model, perturb(nnx.state(model, nnx.Param), seed=4))
    x = jnp.asarray(np.random.default_rng(5).normal(size=(B, T, E)))
    x = jnp.where(jnp.asarray(VALID)[..., None], x, 5.0)            # visible padding
    lengths = jnp.asarray(LENGTHS, jnp.int32)
    fn = lambda x: model(x, lengths)
    scores = np.asarray(nnx.jit(lambda m, x: m(x, lengths))(model, x))
    return dict(model=model, x=x, lengths=lengths, fn=fn, scores=scores,
                eager=lrpjax.explain_per_step(fn, x, **CONSERVE))


def test_tagger_per_step_conservation(tagger):
    ex, scores = tagger["eager"], tagger["scores"]
    assert scores.shape == (B, T, C)
    assert ex.relevance.shape == (B, T, T, E) and ex.total.shape == (B, T)
    np.testing.assert_allclose(ex.scores, scores, rtol=1e-12)
    target = scores.argmax(-1)
    np.testing.assert_array_equal(ex.target, target)
    picked = np.take_along_axis(scores, target[..., None], -1)[..., 0]
    assert_conserves(ex, picked)


def test_tagger_valid_steps_ignore_padding(tagger):
    R = np.asarray(tagger["eager"].relevance)                      # (B, S, T, E)
    for b, L in enumerate(LENGTHS):
        assert np.all(R[b, :L, L:] == 0.0), f"row {b}: padded inputs got relevance"
        assert np.all(np.abs(R[b, :L, :L]).sum(-1) > 0)            # the valid part is explained


def test_tagger_jit_equals_eager_and_a_step_equals_one_relevance_call(tagger):
    s, fn = 2, tagger["fn"]
    t = jnp.asarray(tagger["scores"][:, s].argmax(-1))

    def both(x):
        return (lrpjax.explain_per_step(fn, x, **CONSERVE),
                lrpjax.relevance(lambda v: fn(v)[:, s], x, t, **CONSERVE))
    per_step, one = jax.jit(both)(tagger["x"])
    assert_tree_close(per_step, tagger["eager"])
    np.testing.assert_allclose(one, tagger["eager"].relevance[:, s], rtol=0, atol=1e-12)


@pytest.mark.parametrize("gate", GATES[1:])
def test_tagger_every_gate_rule_finite(tagger, gate):
    ex = jax.jit(lambda x: lrpjax.explain_per_step(tagger["fn"], x, gate=gate, bias_factor=1.0))(
        tagger["x"])
    assert_finite(ex)
    R = np.asarray(ex.relevance)
    for b, L in enumerate(LENGTHS):
        assert np.all(R[b, :L, L:] == 0.0)


# ================================================================================================
# 3. PyTorch BiLSTM with learned-query attention, imported

@pytest.fixture(scope="module")
def torch_model():
    torch = pytest.importorskip("torch", reason="the PyTorch gallery model needs torch")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = torch_attention_bilstm(torch, E, D, MLP, C)
    with torch.no_grad():                                            # non-trivial biases
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = np.random.default_rng(6).normal(size=(B, T, E))
    x[~VALID] = 4.0
    with torch.no_grad():
        want = m(torch.tensor(x), torch.tensor(LENGTHS)).numpy()
    sd = {k: v.detach().numpy() for k, v in m.state_dict().items()}
    head = dict(q=sd["query"], W1=sd["fc1.weight"].T, b1=sd["fc1.bias"], W2=sd["fc2.weight"].T,
                b2=sd["fc2.bias"])
    layers = torch_lstm(m.lstm.state_dict())
    return dict(fn=jax_attention_bilstm(layers, head, LENGTHS), x=jnp.asarray(x), torch_logits=want,
                sd=sd, head=head)


def _oracle_lstm(sd, suffix):
    """Per-gate oracle params of one direction of the torch LSTM (rows i, f, g, o)."""
    w_ih, w_hh = sd[f"lstm.weight_ih_l0{suffix}"], sd[f"lstm.weight_hh_l0{suffix}"]
    b = sd[f"lstm.bias_ih_l0{suffix}"] + sd[f"lstm.bias_hh_l0{suffix}"]
    d = w_hh.shape[1]
    blk = lambda a, k: a[k * d:(k + 1) * d]
    return {"Wx": {q: blk(w_ih, k) for k, q in enumerate("ifgo")},
            "Wh": {q: blk(w_hh, k) for k, q in enumerate("ifgo")},
            "b": {q: blk(b, k) for k, q in enumerate("ifgo")}}


def _oracle_torch_row(sd, head, x, L, target, *, bias_factor, gate):
    """Literal NumPy LRP of the attention BiLSTM for one row (valid part x[:L])."""
    x = np.asarray(x[:L], np.float64)
    pf, pb = _oracle_lstm(sd, ""), _oracle_lstm(sd, "_reverse")
    hf = oracle.lstm_forward(x, pf)["h"]
    hb = oracle.lstm_forward(x[::-1], pb)["h"][::-1]
    h = np.concatenate([hf, hb], axis=1)                                   # (L, 2d)
    q, W1, b1, W2, b2 = (np.asarray(head[k], np.float64) for k in ("q", "W1", "b1", "W2", "b2"))
    s = h @ q
    alpha = np.exp(s - s.max())
    alpha /= alpha.sum()
    ctx = alpha @ h
    y = np.tanh(ctx @ W1 + b1)
    logits = y @ W2 + b2
    R_out = np.zeros(len(logits))
    R_out[target] = logits[target]
    kw = dict(eps=EPS, bias_factor=bias_factor)
    R_y = oracle_heads.lrp_dense(y, W2, b2, R_out, **kw)
    R_ctx = oracle_heads.lrp_dense(ctx, W1, b1, R_y, **kw)                 # identity through tanh
    R_alpha, R_h = oracle_heads.lrp_attention_pool(alpha, h, R_ctx, EPS, bias_factor, gate)
    R_s = oracle_heads.lrp_softmax(s, alpha, R_alpha)
    for t in range(L):                                                     # s_t = h_t . q
        R_h[t] += oracle_heads.lrp_dense(h[t], q, None, np.array(R_s[t]), **kw)
    d = hf.shape[1]
    Rxf, Rh0f, Rc0f = oracle.lstm_lrp(x, pf, R_h[:, :d], gate=gate, **kw)
    Rxb, Rh0b, Rc0b = oracle.lstm_lrp(x[::-1], pb, R_h[::-1, d:], gate=gate, **kw)
    return logits, Rxf + Rxb[::-1], float(Rh0f.sum() + Rc0f.sum() + Rh0b.sum() + Rc0b.sum())


def test_torch_import_forward_equals_torch(torch_model):
    np.testing.assert_allclose(torch_model["fn"](torch_model["x"]), torch_model["torch_logits"],
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("gate, bias_factor", [("all", 1.0), ("half", 0.0), ("prop", 1.0),
                                               ("abs", 0.0)])
def test_torch_attention_bilstm_matches_oracle(torch_model, gate, bias_factor):
    fn, x = torch_model["fn"], torch_model["x"]
    target = np.array([0, 2, 1])
    ex = jax.jit(lambda x: lrpjax.explain(fn, x, jnp.asarray(target), eps=EPS, bias_factor=bias_factor,
                                          gate=gate, strict=True))(x)
    assert_finite(ex)
    assert_padding_gets_zero(ex.relevance)
    for b, L in enumerate(LENGTHS):
        logits, R, init = _oracle_torch_row(torch_model["sd"], torch_model["head"], x[b], L, target[b],
                                            bias_factor=bias_factor, gate=gate)
        np.testing.assert_allclose(logits, torch_model["torch_logits"][b], atol=1e-12)
        scale = max(1.0, np.abs(R).max())
        np.testing.assert_allclose(ex.relevance[b, :L], R, rtol=0, atol=1e-10 * scale)
        np.testing.assert_allclose(ex.initial_state[b], init, rtol=0, atol=1e-10 * scale)
    if (gate, bias_factor) == ("all", 1.0):
        logits = torch_model["torch_logits"]
        assert_conserves(ex, logits[np.arange(B), target])
        eager = lrpjax.explain(fn, x, jnp.asarray(target), eps=EPS, **CONSERVE)
        assert_tree_close(ex, eager)                                       # jit = eager


def test_torch_float32(torch_model):
    head = {k: np.asarray(v, np.float32) for k, v in torch_model["head"].items()}
    layers = jax.tree.map(lambda a: jnp.asarray(a, F32), torch_lstm(torch_model["sd"], prefix="lstm."))
    fn = jax_attention_bilstm(layers, head, LENGTHS)
    x = jnp.asarray(torch_model["x"], F32)
    ex = jax.jit(lambda x: lrpjax.explain(fn, x, **CONSERVE))(x)
    assert ex.relevance.dtype == F32
    assert_conserves(ex, torch_model["torch_logits"].max(-1), rel_tol=1e-5)
    assert_padding_gets_zero(ex.relevance)


# ================================================================================================
# 4. Forecaster: nn.RNN(nn.GRUCell) -> Dense(1) per step, regression scores (B, T, 1)

@pytest.fixture(scope="module")
def forecaster():
    model = Forecaster(D, "gru", F64)
    x = jnp.asarray(np.random.default_rng(7).normal(size=(B, T, E)))
    v = random_init(model, 8, x)
    fn = lambda x: model.apply(v, x)
    return dict(fn=fn, x=x, y=np.asarray(jax.jit(fn)(x)),
                R=lrpjax.relevance_per_step(fn, x, 0, **CONSERVE))


def test_forecaster_per_step_is_causal_and_conserves(forecaster):
    fn, x, y, R = forecaster["fn"], forecaster["x"], forecaster["y"], forecaster["R"]
    assert y.shape == (B, T, 1) and R.shape == (B, T, T, E)
    R = np.asarray(R)
    for s in range(T):
        assert np.all(R[:, s, s + 1:] == 0.0), f"step {s} explained by later inputs"
        assert np.all(np.abs(R[:, s, :s + 1]).sum(-1) > 0)
    ex = jax.jit(lambda x: lrpjax.explain_per_step(fn, x, 0, **CONSERVE))(x)
    np.testing.assert_allclose(ex.relevance, R, rtol=0, atol=1e-12)     # jit = eager
    assert_conserves(ex, y[..., 0])


def test_forecaster_step_equals_relevance_of_that_step(forecaster):
    fn, x, R = forecaster["fn"], forecaster["x"], forecaster["R"]
    steps = (0, 2, T - 1)

    def one_at_a_time(x):
        sliced = [lrpjax.relevance(lambda v, s=s: fn(v)[:, s], x, 0, **CONSERVE)      # (B, 1) scores
                  for s in steps]
        scalar = lrpjax.relevance(lambda v: fn(v)[:, T - 2, 0], x, **CONSERVE)        # (B,) scores
        return sliced, scalar
    sliced, scalar = jax.jit(one_at_a_time)(x)
    for s, got in zip(steps, sliced):
        np.testing.assert_allclose(got, R[:, s], rtol=0, atol=1e-12)
    np.testing.assert_allclose(scalar, R[:, T - 2], rtol=0, atol=1e-12)


@pytest.mark.parametrize("gate", GATES[1:])
def test_forecaster_every_gate_rule_finite_and_causal(forecaster, gate):
    R = jax.jit(lambda x: lrpjax.relevance_per_step(forecaster["fn"], x, 0, gate=gate,
                                                    bias_factor=1.0))(forecaster["x"])
    R = np.asarray(R)
    assert np.all(np.isfinite(R))
    for s in range(T):
        assert np.all(R[:, s, s + 1:] == 0.0)


# ================================================================================================
# 5. MultiHeadDotProductAttention over LSTM states, masked mean pooling, Dense

@pytest.fixture(scope="module")
def mha():
    model = AttentiveEncoder(D, heads=2, n_classes=C, dtype=F64)
    x = jnp.asarray(np.random.default_rng(10).normal(size=(B, T, E)))
    x = jnp.where(jnp.asarray(VALID)[..., None], x, -3.0)
    lengths = jnp.asarray(LENGTHS, jnp.int32)
    v = random_init(model, 11, x, lengths)
    fn = lambda x: model.apply(v, x, lengths)
    return dict(fn=fn, x=x, logits=np.asarray(jax.jit(fn)(x)), model=model, v=v)


def test_mha_model_ignores_padding(mha):
    b, L = 1, int(LENGTHS[1])
    alone = jax.jit(mha["model"].apply)(mha["v"], mha["x"][b:b + 1, :L], jnp.asarray([L]))
    np.testing.assert_allclose(alone[0], mha["logits"][b], rtol=1e-12)


def test_mha_conserves_under_gate_all_and_jit_equals_eager(mha):
    fn, x, logits = mha["fn"], mha["x"], mha["logits"]
    ex = lrpjax.explain(fn, x, **CONSERVE, strict=True)
    np.testing.assert_allclose(ex.scores, logits, rtol=1e-12)
    np.testing.assert_array_equal(ex.target, logits.argmax(-1))
    assert_conserves(ex, logits.max(-1))
    assert_padding_gets_zero(ex.relevance)
    assert_tree_close(jax.jit(lambda x: lrpjax.explain(fn, x, **CONSERVE))(x), ex)


@pytest.mark.parametrize("gate, bias_factor", GATE_CASES)
def test_mha_strict_every_gate_rule(mha, gate, bias_factor):
    fn = mha["fn"]

    ex = jax.jit(lambda x: lrpjax.explain(fn, x, gate=gate, bias_factor=bias_factor, strict=True))(
        mha["x"])
    assert_finite(ex)
    assert_padding_gets_zero(ex.relevance)


# ================================================================================================
# 6. nnx: MultiHeadAttention over nnx.RNN states, mean pooled, nnx.Linear (called as `model(x)`)

class NnxAttentive(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.rnn = nnx.RNN(nnx.LSTMCell(E, D, rngs=rngs, param_dtype=F64))
        self.att = nnx.MultiHeadAttention(num_heads=2, in_features=D, qkv_features=4, decode=False,
                                          rngs=rngs, param_dtype=F64)
        self.out = nnx.Linear(D, C, rngs=rngs, param_dtype=F64)

    def __call__(self, x):
        return self.out(self.att(self.rnn(x)).mean(1))


@pytest.mark.parametrize("gate", ["all", "half"])
def test_nnx_multi_head_attention_over_lstm_states(gate):
    model = NnxAttentive(nnx.Rngs(12))
    x = jnp.asarray(np.random.default_rng(13).normal(size=(B, T, E)))
    ex = jax.jit(lambda x: lrpjax.explain(lambda v: model(v), x, bias_factor=1.0, gate=gate))(x)
    logits = np.asarray(model(x))
    np.testing.assert_allclose(ex.scores, logits, rtol=1e-12)
    assert_finite(ex)
    if gate == "all":   # the values take all relevance, queries and keys none: exact conservation
        assert_conserves(ex, logits.max(-1))
