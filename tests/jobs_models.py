"""Model factories and data for the dataset-job tests (tests/test_jobs.py, tests/test_cli.py).

Used in-process and by the ``lrpjax attribute --model tests/jobs_models.py:FACTORY`` subprocesses, so
every factory takes string keyword arguments (as ``--model-arg KEY=VALUE`` passes them).
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np

import lrpjax
from lrpjax import rules
from lrpjax.jobs import ModelSpec

VOCAB = ["<pad>", "<unk>", "the", "movie", "was", "good", "bad", "not", "very", "plot", "actors", "a",
         "film", "boring", "great"]
INDEX = {w: i for i, w in enumerate(VOCAB)}


def float_params(features: int = 3, hidden: int = 8, classes: int = 4, seed: int = 0):
    k = jax.random.split(jax.random.key(seed), 3)
    p = lrpjax.init_lstm(k[0], features, hidden, dtype=jnp.float32)
    W = jax.random.normal(k[1], (hidden, classes), jnp.float32)
    b = 0.1 * jax.random.normal(k[2], (classes,), jnp.float32)
    return p, W, b


def float_model(features="3", hidden="8", classes="4", seed="0"):
    """A plain callable ``apply(x (B, T, F), lengths (B,)) -> logits (B, C)`` (LSTM + dense)."""
    p, W, b = float_params(int(features), int(hidden), int(classes), int(seed))

    def apply(x, lengths):
        _, (_, h) = lrpjax.lstm(p, x, lengths=lengths)
        return lrpjax.dense(h, W, b)

    return apply


def float_spec(features="3", hidden="8", classes="4", seed="0"):
    """The same model as a ModelSpec with a name and the feature count."""
    return ModelSpec(float_model(features, hidden, classes, seed), name=f"float-lstm-seed{seed}",
                     features=int(features))


def tokenize(text: str):
    """Toy whitespace tokenizer: ids from VOCAB, None for unknown words."""
    return [INDEX.get(w) for w in text.lower().split()]


def text_apply(hidden: int = 8, emb: int = 5, classes: int = 3, seed: int = 1):
    k = jax.random.split(jax.random.key(seed), 3)
    table = jax.random.normal(k[0], (len(VOCAB), emb), jnp.float32)
    p = lrpjax.init_lstm(k[1], emb, hidden, dtype=jnp.float32)
    W = jax.random.normal(k[2], (hidden, classes), jnp.float32)

    def apply(ids, lengths):
        e = rules.embed_lookup(table, ids)
        _, (_, h) = lrpjax.lstm(p, e, lengths=lengths)
        return lrpjax.dense(h, W)

    return apply


def text_spec(unk="1"):
    """Token model: whitespace tokenizer + vocab (+ unk_id unless unk='none')."""
    return ModelSpec(text_apply(), name="text-lstm", tokenizer=tokenize, vocab=VOCAB,
                     unk_id=None if unk == "none" else int(unk))


def text_tuple():
    """A factory returning the tuple form (apply, tokenizer)."""
    return text_apply(), tokenize


def broken():
    raise RuntimeError("checkpoint missing")


def not_a_model():
    return 42


# ----------------------------------------------------------------------------------------------
# Data

def float_data(n: int, T: int = 23, features: int = 3, seed: int = 0, min_len: int = 1,
               choices=None):
    """``x (n, T, F)`` float32 (zero beyond each length), ``lengths (n,)``, ``labels (n,)`` in [0, 4).

    Lengths are uniform in ``min_len..T``, or drawn from ``choices``.
    """
    rng = np.random.default_rng(seed)
    if choices is None:
        lengths = rng.integers(min_len, T + 1, n).astype(np.int64)
    else:
        lengths = rng.choice(np.asarray(choices, np.int64), n)
    x = rng.normal(size=(n, T, features)).astype(np.float32)
    x[np.arange(T)[None, :] >= lengths[:, None]] = 0.0
    labels = rng.integers(0, 4, n)
    return x, lengths, labels


SENTENCES = ["the movie was good", "the plot was very bad", "not a great film", "boring actors",
             "the film was not boring", "a very good plot", "great actors great film", "bad"]


def write_jsonl(path, x, lengths, labels, ids=None):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(len(x)):
            d = {"x": x[i, :lengths[i]].tolist(), "label": int(labels[i])}
            if ids is not None:
                d["id"] = ids[i]
            f.write(json.dumps(d) + "\n")
