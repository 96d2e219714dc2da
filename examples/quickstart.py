"""Quickstart: train an LSTM on the adding task, then explain it with LRP.

The adding task (Hochreiter & Schmidhuber, 1997): each sequence has ``T`` steps, each step a pair
``(value, marker)`` with ``value ~ U(-1, 1)``; exactly two steps carry ``marker = 1`` and the target is
the sum of their two values. A model that solves it must ignore every unmarked step, so a faithful
explanation should put most of the relevance on the two marked steps -- a check with a known answer.

What this script shows:

1. a small LSTM built from lrpjax's functional layers (``lrpjax.init_lstm``, ``lrpjax.lstm``,
   ``lrpjax.dense``) is an ordinary JAX model: it trains with ``jax.grad`` + optax under ``jax.jit``;
2. the *same* model function is explained by ``lrpjax.explain`` (one reverse pass, also jitted);
3. the per-step relevance concentrates on the marked steps and follows their values, and the
   conservation report shows where the rest of the score went: into biases and stabilisers with
   ``bias_factor=0`` (the reference default), into the inputs and the (zero) initial state with ``1``.

Run: ``python examples/quickstart.py`` (about 20 s on 2 CPU cores); ``--quick`` for a smoke test.
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

try:
    import lrpjax
except ImportError:  # run from a source checkout without installing: use the repository's package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import lrpjax

Array = jax.Array


class Config(NamedTuple):
    """Hyper-parameters (tuned so the full run reaches test MSE << 0.01 within a minute on 2 cores)."""

    T: int = 20            # sequence length
    hidden: int = 32       # LSTM units
    batch: int = 128       # fresh sequences per optimiser step
    steps: int = 3000      # optimiser steps
    chunk: int = 250       # steps per jitted call (one progress line each)
    lr: float = 1e-2       # Adam peak learning rate (cosine-decayed to 0)
    n_test: int = 2048     # held-out sequences for the MSE
    n_explain: int = 256   # held-out sequences explained with LRP


QUICK = Config(steps=500, chunk=250, n_test=512, n_explain=64)


class Params(NamedTuple):
    lstm: lrpjax.LSTMParams
    w: Array   # (hidden, 1) readout kernel
    b: Array   # (1,) readout bias


# ----------------------------------------------------------------------------------------------
# Data

def make_data(key: Array, n: int, T: int) -> tuple[Array, Array, Array]:
    """``n`` adding-task sequences of length ``T``, values ``~ U(-1, 1)``.

    Returns ``x`` ``(n, T, 2)`` float32 (feature 0 = value, feature 1 = marker), ``y`` ``(n,)`` (sum of
    the two marked values) and ``pos`` ``(n, 2)`` (the marked steps, ascending). Pure JAX, so it runs
    inside the jitted training loop (fresh data every step, no host round trip).

    Zero-mean values (not the classic U(0, 1)) keep the target zero-mean, so the network needs no large
    bias offset to hit it -- with U(0, 1) the biases absorb most of the relevance under bias_factor=0.
    """
    k_val, k_pos = jax.random.split(key)
    values = jax.random.uniform(k_val, (n, T), jnp.float32, -1.0, 1.0)
    # Two distinct positions per row: the indices of the two largest of T i.i.d. uniforms.
    _, pos = jax.lax.top_k(jax.random.uniform(k_pos, (n, T)), 2)
    pos = jnp.sort(pos, axis=1)
    markers = jnp.sum(jax.nn.one_hot(pos, T, dtype=jnp.float32), axis=1)
    x = jnp.stack([values, markers], axis=-1)
    y = jnp.sum(values * markers, axis=1)
    return x, y, pos


# ----------------------------------------------------------------------------------------------
# Model: LSTM over the sequence, dense readout of the final hidden state -> one score per sequence.

def init_params(key: Array, hidden: int) -> Params:
    k_lstm, k_w = jax.random.split(key)
    return Params(lrpjax.init_lstm(k_lstm, 2, hidden),
                  jax.random.normal(k_w, (hidden, 1), jnp.float32) / np.sqrt(hidden),
                  jnp.zeros((1,), jnp.float32))


def model(params: Params, x: Array) -> Array:
    """``x`` ``(B, T, 2)`` -> scores ``(B, 1)``. Only lrpjax layers touch ``x``, so it is explainable."""
    _, (_, h) = lrpjax.lstm(params.lstm, x)
    return lrpjax.dense(h, params.w, params.b)


# ----------------------------------------------------------------------------------------------
# Training

def train(key: Array, cfg: Config, log: Any = print) -> tuple[Params, float]:
    """Adam on the MSE with fresh batches each step; returns the parameters and the wall time (s)."""
    k_init, k_data = jax.random.split(key)
    params = init_params(k_init, cfg.hidden)
    # Clipping guards against the occasional exploding recurrent gradient early in training.
    opt = optax.chain(optax.clip_by_global_norm(1.0),
                      optax.adam(optax.cosine_decay_schedule(cfg.lr, cfg.steps)))
    opt_state = opt.init(params)

    def loss_fn(p: Params, x: Array, y: Array) -> Array:
        return jnp.mean((model(p, x)[:, 0] - y) ** 2)

    def step(carry, k):
        p, s = carry
        x, y, _ = make_data(k, cfg.batch, cfg.T)
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        updates, s = opt.update(g, s, p)
        return (optax.apply_updates(p, updates), s), loss

    # A whole chunk of steps is one compiled lax.scan: per-step Python dispatch would dominate on CPU.
    @jax.jit
    def run_chunk(p, s, keys):
        (p, s), losses = jax.lax.scan(step, (p, s), keys)
        return p, s, jnp.mean(losses)

    keys = jax.random.split(k_data, cfg.steps)
    t0 = time.perf_counter()
    for i in range(0, cfg.steps, cfg.chunk):
        params, opt_state, loss = run_chunk(params, opt_state, keys[i:i + cfg.chunk])
        log(f"  step {min(i + cfg.chunk, cfg.steps):5d}  train MSE {float(loss):.5f}")
    jax.block_until_ready(params)
    return params, time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------
# Explanation

@functools.partial(jax.jit, static_argnames="bias_factor")
def explain_batch(params: Params, x: Array, bias_factor: float = 0.0) -> lrpjax.Explanation:
    """LRP of the single score (target 0) for a batch; ``bias_factor`` is a rule option, so static."""
    return lrpjax.explain(lambda xb: model(params, xb), x, target=0, bias_factor=bias_factor)


def relevance_table(r_step: np.ndarray, pos: np.ndarray, x: np.ndarray, cols: int = 3) -> str:
    """Rows = time steps, columns = sequences; ``*`` marks the marked steps."""
    head = "   t | " + " | ".join(f"{f'seq{j} value':>10} {'relevance':>10}" for j in range(cols))
    lines = [head, "-" * len(head)]
    for t in range(r_step.shape[1]):
        cells = []
        for j in range(cols):
            mark = "*" if t in pos[j] else " "
            cells.append(f"{mark} {x[j, t, 0]:+8.3f} {r_step[j, t]:+10.4f}")
        lines.append(f"{t:4d} | " + " | ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="500 steps: a smoke test (about 7 s on 2 cores)")
    ap.add_argument("--seed", type=int, default=0, help="PRNG seed (data, init, batches)")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else Config()

    k_train, k_test = jax.random.split(jax.random.key(args.seed))
    print(f"Adding task: T={cfg.T}, LSTM hidden={cfg.hidden}, {cfg.steps} Adam steps x batch "
          f"{cfg.batch}, seed={args.seed}, backend={jax.default_backend()}")

    params, seconds = train(k_train, cfg)
    print(f"training time: {seconds:.1f} s (including compilation)")

    x, y, pos = make_data(k_test, cfg.n_test, cfg.T)
    mse = float(jnp.mean((jax.jit(model)(params, x)[:, 0] - y) ** 2))
    baseline = float(jnp.var(y))   # MSE of always predicting the mean target
    print(f"test MSE: {mse:.5f}   (predict-the-mean baseline: {baseline:.5f}, n={cfg.n_test})")

    xe, pe = x[:cfg.n_explain], np.asarray(pos[:cfg.n_explain])
    t0 = time.perf_counter()
    ex = jax.block_until_ready(explain_batch(params, xe))
    print(f"\nLRP (eps rule, signal-take-all gates, bias_factor=0) of {cfg.n_explain} held-out "
          f"sequences: {time.perf_counter() - t0:.2f} s (including compilation)")

    R = np.asarray(ex.relevance)                     # (B, T, 2)
    r_step = R.sum(axis=-1)                          # relevance per time step
    print("\nRelevance per time step (summed over value and marker), * = marked step:")
    print(relevance_table(r_step, pe, np.asarray(xe)))
    scores = np.asarray(ex.scores[:, 0])
    print("score (target):  " + "   ".join(f"seq{j} {scores[j]:+.4f} ({float(y[j]):+.4f})"
                                           for j in range(3)))

    # Share of |relevance| (element-wise, so opposite signs cannot cancel) on the two marked steps.
    absR = np.abs(R)                                                   # (B, T, 2)
    marked = np.take_along_axis(absR, pe[:, :, None], axis=1)          # (B, 2, 2)
    share = marked.sum(axis=(1, 2)) / np.maximum(absR.sum(axis=(1, 2)), 1e-12)
    print(f"\nmarked-position share of |relevance|: {share.mean():.3f} (mean over {cfg.n_explain} "
          f"sequences, min {share.min():.3f})")
    print(f"  of all |relevance|: {marked[..., 0].sum() / absR.sum():.3f} on marked values, "
          f"{marked[..., 1].sum() / absR.sum():.3f} on the markers themselves")
    # Relevance at a marked step should follow the value it carries (the model adds them up).
    v_marked = np.take_along_axis(np.asarray(xe[..., 0]), pe, axis=1).ravel()
    r_marked = np.take_along_axis(r_step, pe, axis=1).ravel()
    print(f"correlation of marked-step relevance with the marked value: "
          f"{np.corrcoef(v_marked, r_marked)[0, 1]:.3f}")

    print("\nConservation (score = input relevance + initial-state relevance + absorbed):")
    for bf, e in ((0.0, ex), (1.0, explain_batch(params, xe, bias_factor=1.0))):
        score = np.abs(np.asarray(e.scores[:, 0])).mean()
        print(f"  bias_factor={bf:.1f}: mean |absorbed| / mean |score| = "
              f"{np.abs(np.asarray(e.absorbed)).mean() / score:.2e}, "
              f"mean |initial state| / mean |score| = "
              f"{np.abs(np.asarray(e.initial_state)).mean() / score:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
