"""Sentiment (SST-5) end to end: train three recurrent classifiers, test accuracy, LRP heatmaps.

Three models on the Stanford Sentiment Treebank, five classes (0 very negative .. 4 very positive):

* **ours**: an ordinary, unmodified Flax linen model -- ``Embed`` -> bidirectional ``nn.RNN`` over
  ``nn.LSTMCell`` (with ``seq_lengths``) -> ``Dense(5, use_bias=False)`` on the two final states --
  trained from scratch with optax on the 8,544 training sentences (embedding and hidden size 64).
* **attn**: an attention BiLSTM with the architecture of Flax's own SST-2 example
  (``examples/sst2/models.py`` in the Flax repository), written here as users write it: a
  ``self.param`` embedding table indexed by ids, two ``nn.scan``-ed ``nn.OptimizedLSTMCell``
  (the backward one reads each sentence reversed, padding kept at the end), keys-only MLP
  attention ``Dense(no bias) -> tanh -> Dense(1, no bias)`` with a ``-inf`` mask and
  ``nn.softmax``, the attention-weighted sum of the states, and an MLP head
  ``Dense -> tanh -> Dense(5, no bias)``. Explained unmodified, in strict mode.
* **paper**: the released reference BiLSTM of Li et al. (2016) / Arras et al. (2017)
  (``../shared/data/sst_bilstm_li2016/``, e = d = 60, read with
  :func:`lrpjax.interop.from_arras_bilstm`). It is released without its word embeddings, so only a
  new embedding table is trained here, with every LSTM and output weight frozen.

All use the reference vocabulary (every SST token is in it). Training: Adam, cross-entropy,
length buckets (one compilation per bucket), the best epoch on the dev set is kept. Then the test
accuracy of each, and LRP heatmaps (relevance of the true class, summed over the embedding
dimensions) of the models side by side on real test sentences, written as HTML (with the attention
model's attention weights as one more line).

Output (``--out``, default ``./sst-out``): ``ours.npz`` and ``attn.npz`` (the Flax params, flattened
``/`` keys), ``paper_embeddings.npy`` (the trained table of the reference model), ``config.json``
(sizes, accuracies, timings, the attention model's conservation check) and ``heatmaps.html``.
``scripts/sst_deletion.py`` reads them.

The data may be used, not redistributed: it is read from ``../shared/data`` (``--data``) and nothing of
it is written into the repository.

Run: ``PYTHONPATH=. python examples/sst_sentiment.py --out sst-out`` (about 3 minutes on 2 busy CPU
cores: test accuracy 41.4 % for the paper's model, 40.2 % for ours, 42.7 % for the attention model);
``--quick`` is a smoke test on a small subset (mostly compilation).
"""
from __future__ import annotations

import argparse
import functools
import html
import json
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

import lrpjax

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CLASSES = ("very negative", "negative", "neutral", "positive", "very positive")


# ------------------------------------------------------------------------------------------------
# Data

class Split(NamedTuple):
    """One SST split as token ids: ``ids`` (list of int arrays), ``labels`` (N,), ``tokens``."""

    ids: list
    labels: np.ndarray
    tokens: list

    def subset(self, idx) -> "Split":
        return Split([self.ids[i] for i in idx], self.labels[idx], [self.tokens[i] for i in idx])

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(s) for s in self.ids], np.int32)


def data_paths(data: Path) -> dict:
    return {"sst": data / "sst", "weights": data / "sst_bilstm_li2016" / "weights.npz",
            "vocab": data / "sst_bilstm_li2016" / "vocab.txt"}


def missing_data(data: Path) -> Optional[str]:
    """``None`` if every file this example reads exists under ``data``, else what is missing."""
    p = data_paths(data)
    need = [p["sst"] / f"stsa.fine.{s}" for s in ("train", "dev", "test")] + [p["weights"], p["vocab"]]
    gone = [str(f) for f in need if not f.exists()]
    return f"SST data not found: {', '.join(gone)}" if gone else None


def load_vocab(data: Path = DATA) -> list:
    # not .split(): two tokens contain a no-break space (see the data README)
    return data_paths(data)["vocab"].read_text(encoding="utf-8").split("\n")[:-1]


def load_split(name: str, vocab: Sequence[str], data: Path = DATA) -> Split:
    """``stsa.fine.<name>`` (train, dev, test) as token ids of the reference vocabulary."""
    index = {w: i for i, w in enumerate(vocab)}
    ids, labels, tokens = [], [], []
    for line in (data_paths(data)["sst"] / f"stsa.fine.{name}").read_text(encoding="utf-8").split("\n"):
        if not line:
            continue
        label, text = line.split(" ", 1)
        toks = text.split(" ")
        ids.append(np.array([index[t] for t in toks], np.int32))
        labels.append(int(label))
        tokens.append(toks)
    return Split(ids, np.array(labels, np.int32), tokens)


def bucket_of(length: int, buckets: Sequence[int]) -> int:
    for b in buckets:
        if length <= b:
            return b
    raise ValueError(f"sentence of {length} tokens is longer than the largest bucket {buckets[-1]}")


def batches(split: Split, batch: int, buckets: Sequence[int], rng: Optional[np.random.Generator] = None):
    """Padded batches ``(ids (B, T), lengths (B,), labels (B,), weight (B,), index (B,))``.

    Sentences are grouped by length bucket (``T`` = the bucket); every batch has exactly ``batch``
    rows (the last one of a bucket is filled with dummy rows of weight 0 and index -1), so there is
    one compilation per bucket. With ``rng`` the order is shuffled within and across buckets.
    """
    lengths = split.lengths
    groups: dict = {}
    for i, L in enumerate(lengths):
        groups.setdefault(bucket_of(int(L), buckets), []).append(i)
    out = []
    for T, idx in sorted(groups.items()):
        idx = np.array(idx)
        if rng is not None:
            idx = rng.permutation(idx)
        for s in range(0, len(idx), batch):
            chunk = idx[s:s + batch]
            n = len(chunk)
            ids = np.zeros((batch, T), np.int32)
            for r, i in enumerate(chunk):
                ids[r, :lengths[i]] = split.ids[i]
            L = np.ones(batch, np.int32)
            L[:n] = lengths[chunk]
            y = np.zeros(batch, np.int32)
            y[:n] = split.labels[chunk]
            w = np.zeros(batch, np.float32)
            w[:n] = 1.0
            index = np.full(batch, -1)
            index[:n] = chunk
            out.append((ids, L, y, w, index))
    if rng is not None:
        out = [out[k] for k in rng.permutation(len(out))]
    return out


# ------------------------------------------------------------------------------------------------
# The models

def _uniform(scale: float):
    """Initialiser ``U(-scale, scale)`` (as the reference model's embeddings)."""
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -scale, scale)


class SentimentBiLSTM(nn.Module):
    """An ordinary Flax linen classifier: embedding, BiLSTM (final states), linear readout.

    ``__call__(ids, lengths)`` takes token ids; ``classify(x, lengths)`` takes the embedded sentence
    ``(B, T, embed)``: the function the attribution methods explain. Dropout (training only) acts on
    the embeddings and on the final states.
    """

    vocab: int
    embed: int = 64
    hidden: int = 64
    classes: int = 5
    dropout: float = 0.3

    def setup(self):
        self.embedding = nn.Embed(self.vocab, self.embed, embedding_init=_uniform(0.1))
        self.encoder = nn.Bidirectional(nn.RNN(nn.LSTMCell(self.hidden)), nn.RNN(nn.LSTMCell(self.hidden)),
                                        return_carry=True)
        self.drop = nn.Dropout(self.dropout)
        self.head = nn.Dense(self.classes, use_bias=False)

    def __call__(self, ids, lengths, train: bool = False):
        return self.classify(self.embedding(ids), lengths, train)

    def classify(self, x, lengths, train: bool = False):
        x = self.drop(x, deterministic=not train)
        ((_, h_fwd), (_, h_bwd)), _ = self.encoder(x, seq_lengths=lengths)
        h = self.drop(jnp.concatenate([h_fwd, h_bwd], axis=-1), deterministic=not train)
        return self.head(h)


class ScannedLSTM(nn.Module):
    """One LSTM direction as a hand-written ``nn.scan`` over time (axis 1) of an
    ``nn.OptimizedLSTMCell``; the cell's parameters are shared by all steps."""

    hidden: int

    @functools.partial(nn.scan, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=1, out_axes=1)
    @nn.compact
    def __call__(self, carry, x_t):
        return nn.OptimizedLSTMCell(self.hidden)(carry, x_t)


def reverse_each(x, lengths):
    """Reverse the first ``lengths[b]`` steps of every row of ``x (B, T, ...)``; the padding stays
    at the end (step ``t < L`` reads step ``L - 1 - t``, padding reads padding). Its own inverse."""
    T = x.shape[1]
    src = (lengths[:, None] - 1 - jnp.arange(T)[None, :]) % T            # (B, T)
    return jnp.take_along_axis(x, src.reshape(src.shape + (1,) * (x.ndim - 2)), axis=1)


class AttentionBiLSTM(nn.Module):
    """An attention BiLSTM classifier, the architecture of Flax's SST-2 example, in plain Flax/jnp.

    ``embedding`` is a ``self.param`` table indexed by the ids. Two scanned LSTM directions (zero
    initial carry); the backward one reads each sentence reversed and its states are reversed back.
    Keys-only MLP attention: ``score_t = Dense(1, no bias)(tanh(Dense(no bias)(h_t)))``, ``-inf`` on
    padding, ``softmax`` over the steps; ``context = sum_t alpha_t h_t``; MLP head
    ``Dense -> tanh -> Dense(classes, no bias)``. Dropout (training only) on the embeddings and
    on the context. ``__call__(ids, lengths)``; ``classify(x, lengths)`` takes the embedded
    sentence; ``attention(x, lengths)`` returns the weights ``alpha (B, T)``.
    """

    vocab: int
    embed: int = 64
    hidden: int = 64
    mlp: int = 64
    classes: int = 5
    dropout: float = 0.3

    def setup(self):
        self.embedding = self.param("embedding", _uniform(0.1), (self.vocab, self.embed))
        self.forward_lstm = ScannedLSTM(self.hidden)
        self.backward_lstm = ScannedLSTM(self.hidden)
        self.attn_hidden = nn.Dense(self.mlp, use_bias=False)
        self.attn_score = nn.Dense(1, use_bias=False)
        self.head_hidden = nn.Dense(self.mlp)
        self.head_out = nn.Dense(self.classes, use_bias=False)
        self.drop = nn.Dropout(self.dropout)

    def __call__(self, ids, lengths, train: bool = False):
        return self.classify(self.embedding[ids], lengths, train)

    def states(self, x, lengths):
        zero = jnp.zeros((x.shape[0], self.hidden), x.dtype)
        _, fwd = self.forward_lstm((zero, zero), x)
        _, bwd = self.backward_lstm((zero, zero), reverse_each(x, lengths))
        return jnp.concatenate([fwd, reverse_each(bwd, lengths)], axis=-1)     # (B, T, 2 hidden)

    def weights(self, h, lengths):
        valid = jnp.arange(h.shape[1])[None, :] < lengths[:, None]
        scores = self.attn_score(jnp.tanh(self.attn_hidden(h)))[..., 0]       # (B, T)
        return nn.softmax(jnp.where(valid, scores, -jnp.inf), axis=-1)

    def attention(self, x, lengths):
        return self.weights(self.states(x, lengths), lengths)

    def classify(self, x, lengths, train: bool = False):
        h = self.states(self.drop(x, deterministic=not train), lengths)
        context = jnp.einsum("bt,btk->bk", self.weights(h, lengths), h)
        context = self.drop(context, deterministic=not train)
        return self.head_out(jnp.tanh(self.head_hidden(context)))


class Model(NamedTuple):
    """A trained model as the scripts use it. ``fn(params, x, lengths) -> logits (B, 5)`` on embedded
    sentences ``x (B, T, E)`` (padding after ``lengths`` is ignored); ``embed_fn(params, ids)``;
    attention models also ``attention_fn(params, x, lengths) -> alpha (B, T)``."""

    name: str
    params: object
    fn: Callable
    embed_fn: Callable
    attention_fn: Optional[Callable] = None

    def apply(self, x, lengths) -> jax.Array:
        return self.fn(self.params, x, lengths)

    def embed(self, ids) -> jax.Array:
        return self.embed_fn(self.params, jnp.asarray(ids))


@functools.lru_cache(maxsize=None)
def _ours_fns(vocab: int, embed: int, hidden: int):
    module = SentimentBiLSTM(vocab, embed, hidden)
    fn = lambda p, x, lengths: module.apply({"params": p}, x, lengths, method=SentimentBiLSTM.classify)
    emb = lambda p, ids: jnp.take(p["embedding"]["embedding"], ids, axis=0)
    return fn, emb


@functools.lru_cache(maxsize=None)
def _paper_fns(weights: str):
    ref = lrpjax.interop.from_arras_bilstm(weights)   # frozen; float64 weights cast to x's dtype
    fn = lambda table, x, lengths: ref(x, lengths)
    emb = lambda table, ids: jnp.take(table, ids, axis=0)
    return fn, emb


@functools.lru_cache(maxsize=None)
def _attn_fns(vocab: int, embed: int, hidden: int, mlp: int):
    module = AttentionBiLSTM(vocab, embed, hidden, mlp)
    fn = lambda p, x, lengths: module.apply({"params": p}, x, lengths, method=AttentionBiLSTM.classify)
    emb = lambda p, ids: p["embedding"][ids]
    att = lambda p, x, lengths: module.apply({"params": p}, x, lengths, method=AttentionBiLSTM.attention)
    return fn, emb, att


def ours_model(params, cfg: dict) -> Model:
    return Model("ours", params, *_ours_fns(cfg["vocab"], cfg["embed"], cfg["hidden"]))


def attn_model(params, cfg: dict) -> Model:
    return Model("attn", params, *_attn_fns(cfg["vocab"], cfg["embed"], cfg["hidden"], cfg["attn_mlp"]))


def paper_model(table, data: Path = DATA) -> Model:
    return Model("paper", jnp.asarray(table, jnp.float32), *_paper_fns(str(data_paths(data)["weights"])))


def save_models(out: Path, ours_params, paper_table, cfg: dict, attn_params=None) -> None:
    for name, params in (("ours", ours_params), ("attn", attn_params)):
        if params is not None:
            flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
            np.savez(out / f"{name}.npz", **{k: np.asarray(v) for k, v in flat.items()})
    np.save(out / "paper_embeddings.npy", np.asarray(paper_table, np.float32))
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def load_models(out: Path, data: Path = DATA) -> tuple[dict, dict]:
    """The trained models saved by this example in ``out``: ``({"paper": Model, "ours": Model,
    "attn": Model}, config)`` (``attn`` only if ``attn.npz`` is there)."""
    out = Path(out)
    cfg = json.loads((out / "config.json").read_text())

    def params_of(name):
        with np.load(out / f"{name}.npz") as f:
            return traverse_util.unflatten_dict({k: jnp.asarray(f[k]) for k in f.files}, sep="/")

    models = {"paper": paper_model(np.load(out / "paper_embeddings.npy"), data),
              "ours": ours_model(params_of("ours"), cfg)}
    if (out / "attn.npz").exists():
        models["attn"] = attn_model(params_of("attn"), cfg)
    return models, cfg


# ------------------------------------------------------------------------------------------------
# Training

def predict(model: Model, split: Split, buckets: Sequence[int], batch: int = 256) -> np.ndarray:
    """Predicted classes of every sentence of ``split`` (jitted per bucket)."""
    f = _jitted_logits(model)
    pred = np.zeros(len(split.labels), np.int32)
    for ids, L, _, _, index in batches(split, batch, buckets):
        p = np.asarray(jnp.argmax(f(ids, L), -1))
        pred[index[index >= 0]] = p[index >= 0]
    return pred


@functools.lru_cache(maxsize=None)
def _jitted_logits_of(fn, embed_fn):
    return jax.jit(lambda p, ids, L: fn(p, embed_fn(p, ids), L))


def _jitted_logits(model: Model):
    f = _jitted_logits_of(model.fn, model.embed_fn)
    return lambda ids, L: f(model.params, ids, L)


def accuracy(model: Model, split: Split, buckets: Sequence[int]) -> float:
    return float(np.mean(predict(model, split, buckets) == split.labels))


def train(name: str, params, logits_fn: Callable, make_model: Callable, train_set: Split, dev: Split,
          *, epochs: int, lr: float, batch: int, buckets: Sequence[int], seed: int,
          max_steps: Optional[int] = None, log=print):
    """Adam on the cross-entropy, one pass over the shuffled training set per epoch; keeps the
    parameters of the epoch with the best dev accuracy. ``logits_fn(params, ids, lengths, rng)``."""
    opt = optax.adam(lr)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, ids, L, y, w, rng):
        def loss_fn(p):
            ce = optax.softmax_cross_entropy_with_integer_labels(logits_fn(p, ids, L, rng), y)
            return jnp.sum(ce * w) / jnp.sum(w)
        loss, g = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    best = (-1.0, params, 0)
    t0 = time.perf_counter()
    steps = 0
    for epoch in range(1, epochs + 1):
        losses = []
        for ids, L, y, w, _ in batches(train_set, batch, buckets, rng):
            key, k = jax.random.split(key)
            params, opt_state, loss = step(params, opt_state, ids, L, y, w, k)
            losses.append(loss)
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        dev_acc = accuracy(make_model(params), dev, buckets)
        log(f"  [{name}] epoch {epoch}: train loss {float(np.mean(jax.device_get(losses))):.3f}, "
            f"dev accuracy {dev_acc:.3f} ({time.perf_counter() - t0:.0f} s)")
        if dev_acc > best[0]:
            best = (dev_acc, params, epoch)
        if max_steps is not None and steps >= max_steps:
            break
    return best[1], {"dev_accuracy": best[0], "best_epoch": best[2], "epochs": epoch,
                     "train_seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------------
# Heatmaps

def padded(split: Split, idx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids ``(n, T)`` (zero-padded to the longest) and lengths ``(n,)`` of sentences ``idx``."""
    L = np.array([len(split.ids[i]) for i in idx], np.int32)
    ids = np.zeros((len(idx), int(L.max())), np.int32)
    for r, i in enumerate(idx):
        ids[r, :L[r]] = split.ids[i]
    return ids, L


def token_relevance(model: Model, split: Split, idx: Sequence[int], gate: str = "all") -> list:
    """LRP relevance of the true class per token (summed over the embedding dimensions) of the
    sentences ``idx`` of ``split``: one padded batch, one jitted call; one array per sentence.

    The model function explained takes the embedded batch; its lengths come in by closure."""
    ids, L = padded(split, idx)

    @jax.jit
    def rel(params, ids, L, y):
        x = model.embed_fn(params, ids)
        R = lrpjax.relevance(lambda z: model.fn(params, z, L), x, y, gate=gate)
        return R.sum(-1)

    R = np.asarray(rel(model.params, ids, L, split.labels[np.asarray(idx)]))
    return [R[r, :L[r]] for r in range(len(idx))]


def token_relevance_from_ids(params, cfg: dict, split: Split, idx: Sequence[int], attn: bool = False) -> list:
    """The same for our model (``attn``: the attention model), from token ids:
    :func:`lrpjax.explain_tokens` on the unmodified Flax model, the embedding lookup included
    (``lambda ids: module.apply(variables, ids, lengths)``)."""
    module = (AttentionBiLSTM(cfg["vocab"], cfg["embed"], cfg["hidden"], cfg["attn_mlp"]) if attn
              else SentimentBiLSTM(cfg["vocab"], cfg["embed"], cfg["hidden"]))
    ids, L = padded(split, idx)
    f = jax.jit(lambda p, ids, L, y: lrpjax.explain_tokens(
        lambda i: module.apply({"params": p}, i, L), ids, y).relevance)
    R = np.asarray(f(params, ids, L, split.labels[np.asarray(idx)]))
    return [R[r, :L[r]] for r in range(len(idx))]


def attention_weights(model: Model, split: Split, idx: Sequence[int]) -> list:
    """The attention weights ``alpha`` of an attention model on the sentences ``idx`` (one per token)."""
    ids, L = padded(split, idx)
    a = np.asarray(jax.jit(lambda p, ids, L: model.attention_fn(p, model.embed_fn(p, ids), L))(
        model.params, ids, L))
    return [a[r, :L[r]] for r in range(len(idx))]


MODEL_LABELS = {"paper": "paper's model (reference BiLSTM, trained embeddings)",
                "ours": "ours (Flax BiLSTM)",
                "attn": "attention BiLSTM (Flax SST-2 architecture)"}


def write_heatmaps(path: Path, models: dict, test: Split, idx: Sequence[int], preds: dict):
    """Side-by-side LRP heatmaps (relevance of the true class) of the models on the test sentences
    ``idx``, one self-contained HTML page (:mod:`lrpjax.viz`); each heatmap has its own colour scale
    (the models' logits have different scales). Attention models get one more line: their attention
    weights. Returns the relevances and the attention weights (``{name: list}``, ``{name: list}``)."""
    from lrpjax import viz

    rel = {name: token_relevance(m, test, idx) for name, m in models.items()}
    att = {name: attention_weights(m, test, idx) for name, m in models.items() if m.attention_fn}
    page = viz.HtmlFragment(
        "<p style='font-family: sans-serif; font-size: 14px'>LRP (gate='all', eps=1e-3, bias_factor=0) "
        "of the <b>true</b> class, per token (summed over the embedding dimensions); red = evidence "
        "for the true class, blue = against. Hover a token for its value.</p>")
    for j, i in enumerate(idx):
        y = int(test.labels[i])
        for name in models:
            label = MODEL_LABELS.get(name, name)
            page = page + viz.heatmaps_html(
                [(test.tokens[i], rel[name][j], f"{label}: predicted {CLASSES[int(preds[name][i])]}")],
                title=f"test sentence {i}, true class: {CLASSES[y]}" if name == next(iter(models)) else None)
            if name in att:
                page = page + viz.heatmaps_html(
                    [(test.tokens[i], att[name][j], f"{label}: attention weights (not LRP; sum 1)")])
    title = "SST-5: LRP heatmaps of the paper's model, ours and the attention BiLSTM"
    path.write_text(str(viz.HtmlFragment(f"<h2 style='font-family: sans-serif'>{html.escape(title)}</h2>"
                                         + page.body, title)), encoding="utf-8")
    return rel, att


def text_heatmap(tokens: Sequence[str], r: np.ndarray) -> str:
    """One line: every token with its relevance, e.g. ``good(+1.23)``."""
    return " ".join(f"{t}({v:+.2f})" for t, v in zip(tokens, r))


def pick_sentences(test: Split, preds: dict, n_per_class: int = 1, min_len: int = 6,
                   max_len: int = 18) -> list:
    """Test sentences to show: per class the first (file order) of moderate length that all models
    classify correctly, else the first of moderate length."""
    L = test.lengths
    ok = (L >= min_len) & (L <= max_len)
    both = ok & np.all([p == test.labels for p in preds.values()], axis=0)
    idx = []
    for c in range(len(CLASSES)):
        cand = np.flatnonzero(both & (test.labels == c))
        if len(cand) < n_per_class:
            cand = np.flatnonzero(ok & (test.labels == c))
        idx.extend(int(i) for i in cand[:n_per_class])
    return idx


# ------------------------------------------------------------------------------------------------

class Settings(NamedTuple):
    embed: int = 64
    hidden: int = 64
    dropout: float = 0.4
    batch: int = 32
    epochs_ours: int = 3
    epochs_paper: int = 3
    lr_ours: float = 2e-3
    lr_paper: float = 5e-3
    epochs_attn: int = 3
    lr_attn: float = 2e-3
    attn_mlp: int = 64                  # hidden units of the attention MLP and of the head MLP
    buckets: tuple = (16, 28, 56)       # one compilation per bucket (train step, forward)
    n_train: Optional[int] = None       # None: all 8,544
    max_len: Optional[int] = None       # keep only sentences up to this length (all splits)
    max_steps: Optional[int] = None     # stop each model's training after this many steps


QUICK = Settings(embed=60, hidden=60, batch=64, epochs_ours=1, epochs_paper=1, lr_ours=5e-3,
                 lr_paper=3e-2, epochs_attn=1, lr_attn=5e-3, attn_mlp=32, buckets=(16,), n_train=1024,
                 max_len=16)


def conservation_check(params, cfg: dict, split: Split, idx: Sequence[int]) -> dict:
    """LRP with ``bias_factor=1`` (``gate="all"``, strict) of the attention model, unmodified, from
    token ids (:func:`lrpjax.explain_tokens`), true class, on the sentences ``idx`` as one padded
    batch: relevance that is not on the input (``absorbed``, ``initial_state``) relative to the
    explained score, and the largest ``|relevance|`` on padded positions (should be exactly 0)."""
    module = AttentionBiLSTM(cfg["vocab"], cfg["embed"], cfg["hidden"], cfg["attn_mlp"])
    ids, L = padded(split, idx)
    y = split.labels[np.asarray(idx)]
    f = jax.jit(lambda p, ids, L, y: lrpjax.explain_tokens(
        lambda i: module.apply({"params": p}, i, L), ids, y, bias_factor=1.0, gate="all", strict=True))
    ex = jax.device_get(f(params, ids, L, y))
    score = np.abs(np.asarray(ex.scores)[np.arange(len(idx)), y])
    pad = np.arange(ids.shape[1])[None, :] >= L[:, None]
    return {"n": len(idx), "T": int(ids.shape[1]), "n_padded_positions": int(pad.sum()),
            "max_abs_absorbed_over_score": float(np.max(np.abs(ex.absorbed) / score)),
            "median_abs_absorbed_over_score": float(np.median(np.abs(ex.absorbed) / score)),
            "max_abs_initial_state_over_score": float(np.max(np.abs(ex.initial_state) / score)),
            "median_abs_initial_state_over_score": float(np.median(np.abs(ex.initial_state) / score)),
            "max_abs_relevance_on_padding": float(np.max(np.abs(np.asarray(ex.relevance))[pad], initial=0.0)),
            "median_abs_score": float(np.median(score))}


def run(out: Path, data: Path = DATA, quick: bool = False, seed: int = 0, s: Optional[Settings] = None,
        log=print) -> dict:
    t_start = time.perf_counter()
    s = s or (QUICK if quick else Settings())
    out.mkdir(parents=True, exist_ok=True)
    vocab = load_vocab(data)
    splits = {k: load_split(k, vocab, data) for k in ("train", "dev", "test")}
    if s.max_len is not None:
        splits = {k: v.subset(np.flatnonzero(v.lengths <= s.max_len)) for k, v in splits.items()}
    if s.n_train is not None:
        splits["train"] = splits["train"].subset(np.arange(min(s.n_train, len(splits["train"].labels))))
    train_set, dev, test = splits["train"], splits["dev"], splits["test"]
    log(f"SST-5: {len(train_set.labels)} train / {len(dev.labels)} dev / {len(test.labels)} test sentences"
        f"{'' if s.max_len is None else f' (length <= {s.max_len})'}, vocabulary {len(vocab)}, "
        f"buckets {list(s.buckets)}, backend {jax.default_backend()}")
    V = len(vocab)
    cfg = {"vocab": V, "embed": s.embed, "hidden": s.hidden, "attn_mlp": s.attn_mlp, "dropout": s.dropout,
           "seed": seed,
           "quick": quick, "buckets": list(s.buckets), "settings": s._asdict()}

    # ours: the whole Flax model
    module = SentimentBiLSTM(V, s.embed, s.hidden, dropout=s.dropout)
    k_init, k_emb = jax.random.split(jax.random.key(seed))
    params = jax.jit(module.init)(k_init, np.zeros((1, 4), np.int32), np.array([4], np.int32))["params"]

    def ours_logits(p, ids, L, rng):
        return module.apply({"params": p}, ids, L, train=True, rngs={"dropout": rng})

    log(f"training ours: Flax BiLSTM, embed {s.embed}, hidden {s.hidden}, no output bias, dropout "
        f"{s.dropout}, Adam lr {s.lr_ours}, batch {s.batch}, {s.epochs_ours} epoch(s)")
    params, info_ours = train("ours", params, ours_logits, lambda p: ours_model(p, cfg), train_set, dev,
                              epochs=s.epochs_ours, lr=s.lr_ours, batch=s.batch, buckets=s.buckets,
                              seed=seed, max_steps=s.max_steps, log=log)

    # paper: the reference LSTM, frozen; only the embedding table is trained
    ref = lrpjax.interop.from_arras_bilstm(data_paths(data)["weights"])
    drop = 0.2   # the original model's input dropout

    def paper_logits(table, ids, L, rng):
        x = jnp.take(table, ids, axis=0)
        keep = jax.random.bernoulli(rng, 1 - drop, x.shape)
        return ref(jnp.where(keep, x / (1 - drop), 0.0), L)

    table = jax.random.uniform(k_emb, (V, 60), jnp.float32, -0.1, 0.1)
    log(f"training paper: reference BiLSTM (e = d = 60) frozen, embedding table {V} x 60 trained, "
        f"input dropout {drop}, Adam lr {s.lr_paper}, batch {s.batch}, {s.epochs_paper} epoch(s)")
    table, info_paper = train("paper", table, paper_logits, lambda t: paper_model(t, data), train_set, dev,
                              epochs=s.epochs_paper, lr=s.lr_paper, batch=s.batch, buckets=s.buckets,
                              seed=seed + 1, max_steps=s.max_steps, log=log)

    # attn: the attention BiLSTM of Flax's SST-2 example (5 classes), the whole model trained
    attn_module = AttentionBiLSTM(V, s.embed, s.hidden, s.attn_mlp, dropout=s.dropout)
    attn_params = jax.jit(attn_module.init)(jax.random.key(seed + 2), np.zeros((1, 4), np.int32),
                                            np.array([4], np.int32))["params"]

    def attn_logits(p, ids, L, rng):
        return attn_module.apply({"params": p}, ids, L, train=True, rngs={"dropout": rng})

    log(f"training attn: attention BiLSTM (Flax SST-2 architecture), embed {s.embed}, hidden "
        f"{s.hidden}, attention/head MLP {s.attn_mlp}, dropout {s.dropout}, Adam lr {s.lr_attn}, batch "
        f"{s.batch}, {s.epochs_attn} epoch(s)")
    attn_params, info_attn = train("attn", attn_params, attn_logits, lambda p: attn_model(p, cfg), train_set,
                                   dev, epochs=s.epochs_attn, lr=s.lr_attn, batch=s.batch, buckets=s.buckets,
                                   seed=seed + 2, max_steps=s.max_steps, log=log)

    models = {"paper": paper_model(table, data), "ours": ours_model(params, cfg),
              "attn": attn_model(attn_params, cfg)}
    preds = {k: predict(m, test, s.buckets) for k, m in models.items()}
    acc = {k: float(np.mean(p == test.labels)) for k, p in preds.items()}
    cfg["results"] = {"paper": dict(info_paper, test_accuracy=acc["paper"]),
                      "ours": dict(info_ours, test_accuracy=acc["ours"]),
                      "attn": dict(info_attn, test_accuracy=acc["attn"]),
                      "n_test": int(len(test.labels))}
    log(f"\ntest accuracy (5 classes, {len(test.labels)} sentences; majority class "
        f"{np.bincount(test.labels, minlength=5).max() / len(test.labels):.3f}):")
    for k in ("paper", "ours", "attn"):
        r = cfg["results"][k]
        log(f"  {k:5s}  {acc[k]:.3f}   (dev {r['dev_accuracy']:.3f}, best epoch {r['best_epoch']} of "
            f"{r['epochs']}, training {r['train_seconds']:.0f} s)")

    idx = pick_sentences(test, preds)
    rel, att = write_heatmaps(out / "heatmaps.html", models, test, idx, preds)
    log(f"\nLRP heatmaps (relevance of the true class, per token; gate='all', eps=1e-3), {len(idx)} test "
        f"sentences -> {out / 'heatmaps.html'}:")
    for j, i in enumerate(idx):
        log(f"  #{i} true {CLASSES[int(test.labels[i])]}; predicted: "
            + ", ".join(f"{k} {CLASSES[int(preds[k][i])]}" for k in models))
        for name in models:
            log(f"    {name:5s} {text_heatmap(test.tokens[i], rel[name][j])}")
        log(f"    alpha {text_heatmap(test.tokens[i], att['attn'][j])}   (attention weights)")
    for name, attn in (("ours", False), ("attn", True)):
        by_ids = token_relevance_from_ids(models[name].params, cfg, test, idx, attn=attn)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(by_ids, rel[name]))
        log(f"  {name} via lrpjax.explain_tokens on token ids (embedding lookup included): max |difference| "
            f"to the embedded route {diff:.1e}")
        cfg[f"{name}_ids_vs_embedded_max_diff"] = diff

    # conservation of the attention model with bias_factor=1 on a padded batch of test sentences
    check_idx = sorted(set(idx) | set(range(min(32, len(test.labels)))))
    cons = conservation_check(attn_params, cfg, test, check_idx)
    cfg["attn_conservation"] = cons
    log(f"\nattn, LRP bias_factor=1, gate='all', strict, from token ids, {cons['n']} test sentences padded "
        f"to T = {cons['T']} ({cons['n_padded_positions']} padded positions): |absorbed| / |score| max "
        f"{cons['max_abs_absorbed_over_score']:.1e} (median {cons['median_abs_absorbed_over_score']:.1e}; "
        f"median |score| {cons['median_abs_score']:.2f}), |initial_state| / |score| max "
        f"{cons['max_abs_initial_state_over_score']:.1e} "
        f"(median {cons['median_abs_initial_state_over_score']:.1e}; "
        f"the zero initial carry's share of the bias terms), max |relevance| on padding "
        f"{cons['max_abs_relevance_on_padding']:.1e}")
    cfg["heatmap_sentences"] = idx
    cfg["total_seconds"] = time.perf_counter() - t_start
    save_models(out, params, table, cfg, attn_params)
    log(f"\nsaved: {out / 'ours.npz'}, {out / 'attn.npz'}, {out / 'paper_embeddings.npy'}, "
        f"{out / 'config.json'}")
    log(f"total time: {cfg['total_seconds']:.0f} s")
    return cfg


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="sst-out", help="output directory (default ./sst-out)")
    ap.add_argument("--data", default=str(DATA), help=f"the shared data folder (default {DATA})")
    ap.add_argument("--quick", action="store_true", help="smoke test: 1,024 short training sentences, "
                    "sentences up to 16 tokens, one epoch each")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out, data = Path(args.out).resolve(), Path(args.data)
    if (ROOT / "lrpjax") in [out, *out.parents]:
        ap.error("--out must not be inside the lrpjax package")
    why = missing_data(data)
    if why:
        print(f"sst_sentiment: {why}; pass --data DIR", file=sys.stderr)
        return 2
    run(out, data, quick=args.quick, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
