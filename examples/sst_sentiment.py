"""Sentiment (SST-5) end to end: train two BiLSTMs, report test accuracy, show LRP heatmaps.

Two models on the Stanford Sentiment Treebank, five classes (0 very negative .. 4 very positive):

* **ours**: an ordinary, unmodified Flax linen model -- ``Embed`` -> bidirectional ``nn.RNN`` over
  ``nn.LSTMCell`` (with ``seq_lengths``) -> ``Dense(5, use_bias=False)`` on the two final states --
  trained from scratch with optax on the 8,544 training sentences (embedding and hidden size 64).
* **paper**: the released reference BiLSTM of Li et al. (2016) / Arras et al. (2017)
  (``../shared/data/sst_bilstm_li2016/``, e = d = 60, read with
  :func:`lrpjax.interop.from_arras_bilstm`). It is released without its word embeddings, so only a
  new embedding table is trained here, with every LSTM and output weight frozen.

Both models use the reference vocabulary (every SST token is in it). Training: Adam, cross-entropy,
length buckets (one compilation per bucket), the best epoch on the dev set is kept. Then the test
accuracy of both, and LRP heatmaps (relevance of the true class, summed over the embedding
dimensions) of both models side by side on real test sentences, written as HTML.

Output (``--out``, default ``./sst-out``): ``ours.npz`` (the Flax params, flattened ``/`` keys),
``paper_embeddings.npy`` (the trained table of the reference model), ``config.json`` (sizes,
accuracies, timings) and ``heatmaps.html``. ``scripts/sst_deletion.py`` reads them.

The data may be used, not redistributed: it is read from ``../shared/data`` (``--data``) and nothing of
it is written into the repository.

Run: ``PYTHONPATH=. python examples/sst_sentiment.py --out sst-out`` (about 1 minute on 2 CPU cores:
test accuracy 41.4 % for the paper's model, 40.2 % for ours); ``--quick`` is a smoke test on a small
subset (about 20 s, mostly compilation).
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


class Model(NamedTuple):
    """A trained model as the scripts use it. ``fn(params, x, lengths) -> logits (B, 5)`` on embedded
    sentences ``x (B, T, E)`` (padding after ``lengths`` is ignored); ``embed_fn(params, ids)``."""

    name: str
    params: object
    fn: Callable
    embed_fn: Callable

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


def ours_model(params, cfg: dict) -> Model:
    return Model("ours", params, *_ours_fns(cfg["vocab"], cfg["embed"], cfg["hidden"]))


def paper_model(table, data: Path = DATA) -> Model:
    return Model("paper", jnp.asarray(table, jnp.float32), *_paper_fns(str(data_paths(data)["weights"])))


def save_models(out: Path, ours_params, paper_table, cfg: dict) -> None:
    flat = traverse_util.flatten_dict(jax.device_get(ours_params), sep="/")
    np.savez(out / "ours.npz", **{k: np.asarray(v) for k, v in flat.items()})
    np.save(out / "paper_embeddings.npy", np.asarray(paper_table, np.float32))
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def load_models(out: Path, data: Path = DATA) -> tuple[dict, dict]:
    """The two trained models saved by this example in ``out``: ``({"paper": Model, "ours": Model},
    config)``."""
    out = Path(out)
    cfg = json.loads((out / "config.json").read_text())
    with np.load(out / "ours.npz") as f:
        params = traverse_util.unflatten_dict({k: jnp.asarray(f[k]) for k in f.files}, sep="/")
    paper = paper_model(np.load(out / "paper_embeddings.npy"), data)
    return {"paper": paper, "ours": ours_model(params, cfg)}, cfg


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


def token_relevance_from_ids(params, cfg: dict, split: Split, idx: Sequence[int]) -> list:
    """The same for our model, from token ids: :func:`lrpjax.explain_tokens` on the unmodified Flax
    model, ``Embed`` included (``lambda ids: module.apply(variables, ids, lengths)``)."""
    module = SentimentBiLSTM(cfg["vocab"], cfg["embed"], cfg["hidden"])
    ids, L = padded(split, idx)
    f = jax.jit(lambda p, ids, L, y: lrpjax.explain_tokens(
        lambda i: module.apply({"params": p}, i, L), ids, y).relevance)
    R = np.asarray(f(params, ids, L, split.labels[np.asarray(idx)]))
    return [R[r, :L[r]] for r in range(len(idx))]


def write_heatmaps(path: Path, models: dict, test: Split, idx: Sequence[int], preds: dict):
    """Side-by-side LRP heatmaps (relevance of the true class) of both models on the test sentences
    ``idx``, one self-contained HTML page (:mod:`lrpjax.viz`); each heatmap has its own colour scale
    (the two models' logits have different scales). Returns the relevances."""
    from lrpjax import viz

    rel = {name: token_relevance(m, test, idx) for name, m in models.items()}
    page = viz.HtmlFragment(
        "<p style='font-family: sans-serif; font-size: 14px'>LRP (gate='all', eps=1e-3, bias_factor=0) "
        "of the <b>true</b> class, per token (summed over the embedding dimensions); red = evidence "
        "for the true class, blue = against. Hover a token for its value.</p>")
    for j, i in enumerate(idx):
        y = int(test.labels[i])
        for name in models:
            label = {"paper": "paper's model (reference BiLSTM, trained embeddings)",
                     "ours": "ours (Flax BiLSTM)"}.get(name, name)
            page = page + viz.heatmaps_html(
                [(test.tokens[i], rel[name][j], f"{label}: predicted {CLASSES[int(preds[name][i])]}")],
                title=f"test sentence {i}, true class: {CLASSES[y]}" if name == next(iter(models)) else None)
    title = "SST-5: LRP heatmaps of the paper's model and ours"
    path.write_text(str(viz.HtmlFragment(f"<h2 style='font-family: sans-serif'>{html.escape(title)}</h2>"
                                         + page.body, title)), encoding="utf-8")
    return rel


def text_heatmap(tokens: Sequence[str], r: np.ndarray) -> str:
    """One line: every token with its relevance, e.g. ``good(+1.23)``."""
    return " ".join(f"{t}({v:+.2f})" for t, v in zip(tokens, r))


def pick_sentences(test: Split, preds: dict, n_per_class: int = 1, min_len: int = 6,
                   max_len: int = 18) -> list:
    """Test sentences to show: per class the first (file order) of moderate length that both models
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
    buckets: tuple = (16, 28, 56)       # one compilation per bucket (train step, forward)
    n_train: Optional[int] = None       # None: all 8,544
    max_len: Optional[int] = None       # keep only sentences up to this length (all splits)
    max_steps: Optional[int] = None     # stop each model's training after this many steps


QUICK = Settings(embed=60, hidden=60, batch=64, epochs_ours=1, epochs_paper=1, lr_ours=5e-3,
                 lr_paper=3e-2, buckets=(16,), n_train=1024, max_len=16)


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
    cfg = {"vocab": V, "embed": s.embed, "hidden": s.hidden, "dropout": s.dropout, "seed": seed,
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

    models = {"paper": paper_model(table, data), "ours": ours_model(params, cfg)}
    preds = {k: predict(m, test, s.buckets) for k, m in models.items()}
    acc = {k: float(np.mean(p == test.labels)) for k, p in preds.items()}
    cfg["results"] = {"paper": dict(info_paper, test_accuracy=acc["paper"]),
                      "ours": dict(info_ours, test_accuracy=acc["ours"]),
                      "n_test": int(len(test.labels))}
    log(f"\ntest accuracy (5 classes, {len(test.labels)} sentences; majority class "
        f"{np.bincount(test.labels, minlength=5).max() / len(test.labels):.3f}):")
    for k in ("paper", "ours"):
        r = cfg["results"][k]
        log(f"  {k:5s}  {acc[k]:.3f}   (dev {r['dev_accuracy']:.3f}, best epoch {r['best_epoch']} of "
            f"{r['epochs']}, training {r['train_seconds']:.0f} s)")

    idx = pick_sentences(test, preds)
    rel = write_heatmaps(out / "heatmaps.html", models, test, idx, preds)
    log(f"\nLRP heatmaps (relevance of the true class, per token; gate='all', eps=1e-3), {len(idx)} test "
        f"sentences -> {out / 'heatmaps.html'}:")
    for j, i in enumerate(idx):
        log(f"  #{i} true {CLASSES[int(test.labels[i])]}; predicted: paper "
            f"{CLASSES[int(preds['paper'][i])]}, ours {CLASSES[int(preds['ours'][i])]}")
        for name in ("paper", "ours"):
            log(f"    {name:5s} {text_heatmap(test.tokens[i], rel[name][j])}")
    by_ids = token_relevance_from_ids(params, cfg, test, idx)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(by_ids, rel["ours"]))
    log(f"  ours via lrpjax.explain_tokens on token ids (Embed included): max |difference| to the "
        f"embedded route {diff:.1e}")
    cfg["heatmap_sentences"] = idx
    cfg["total_seconds"] = time.perf_counter() - t_start
    save_models(out, params, table, cfg)
    log(f"\nsaved: {out / 'ours.npz'}, {out / 'paper_embeddings.npy'}, {out / 'config.json'}")
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
