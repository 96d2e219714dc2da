"""Quickstart: explain an LSTM trained on the adding task with the library API (``lrpjax.explain``).

The adding task (Hochreiter & Schmidhuber, 1997): each sequence has 10..30 steps, each step a pair
``(value, marker)`` with ``value ~ U(-1, 1)``; exactly two steps carry ``marker = 1`` and the target is
the sum of their two values. A model that solves it must ignore every unmarked step, so a faithful
explanation should put most of the relevance on the two marked steps -- a check with a known answer.

``lrpjax demo`` trains this model and explains 10,000 sequences with the dataset job runner (Parquet
output). This script takes the data, the model and the training loop from :mod:`lrpjax.demo` and shows
the library API on one in-memory batch:

1. the model (``lrpjax.demo.model``: ``lrpjax.lstm`` + ``lrpjax.dense``) is an ordinary JAX function,
   trained with ``jax.grad`` + optax under ``jax.jit`` (``lrpjax.demo.train``);
2. the *same* function is explained by ``lrpjax.explain`` (one jitted reverse pass over a padded
   batch; the padding steps get exactly 0);
3. the per-step relevance concentrates on the marked steps and follows their values, and the
   conservation report shows where the rest of the score went: into biases and stabilisers with
   ``bias_factor=0`` (the reference default), into the inputs and the (zero) initial state with ``1``.

Run: ``python examples/quickstart.py`` (about 18 s on 2 CPU cores); ``--quick`` for a smoke test.
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

try:
    import lrpjax
except ImportError:  # run from a source checkout without installing: use the repository's package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import lrpjax
from lrpjax import demo


@functools.partial(jax.jit, static_argnames="bias_factor")
def explain_batch(params: demo.Params, x: jax.Array, lengths: jax.Array,
                  bias_factor: float = 0.0) -> lrpjax.Explanation:
    """LRP of the single score (target 0) for a padded batch; ``bias_factor`` is a rule option: static."""
    return lrpjax.explain(lambda xb: demo.model(params, xb, lengths), x, target=0,
                          bias_factor=bias_factor)


def relevance_table(r_step: np.ndarray, pos: np.ndarray, x: np.ndarray, lengths: np.ndarray,
                    cols: int = 3) -> str:
    """Rows = time steps (up to the longest of the ``cols`` sequences), columns = sequences; ``*`` marks
    the marked steps, ``.`` the padding."""
    head = "   t | " + " | ".join(f"{f'seq{j} value':>10} {'relevance':>10}" for j in range(cols))
    lines = [head, "-" * len(head)]
    for t in range(int(max(lengths[:cols]))):
        cells = []
        for j in range(cols):
            if t >= lengths[j]:
                cells.append(f"  {'.':>8} {r_step[j, t]:>10.4g}")
            else:
                mark = "*" if t in pos[j] else " "
                cells.append(f"{mark} {x[j, t, 0]:+8.3f} {r_step[j, t]:+10.4f}")
        lines.append(f"{t:4d} | " + " | ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short training: a smoke test (about 7 s)")
    ap.add_argument("--seed", type=int, default=0, help="PRNG seed (data, init, batches)")
    args = ap.parse_args(argv)
    cfg = demo.QUICK if args.quick else demo.Config()
    n_test, n_explain = (512, 64) if args.quick else (2048, 256)

    k_train, k_test = jax.random.split(jax.random.key(args.seed))
    print(f"Adding task: lengths {cfg.min_len}..{cfg.T}, LSTM hidden={cfg.hidden}, {cfg.steps} Adam "
          f"steps x batch {cfg.batch}, seed={args.seed}, backend={jax.default_backend()}")
    params, seconds = demo.train(k_train, cfg)
    print(f"training time: {seconds:.1f} s (including compilation)")

    x, lengths, y, pos = demo.adding_task(k_test, n_test, cfg.T, cfg.min_len)
    mse = float(jnp.mean((jax.jit(demo.model)(params, x, lengths)[:, 0] - y) ** 2))
    baseline = float(jnp.var(y))   # MSE of always predicting the mean target
    print(f"test MSE: {mse:.5f}   (predict-the-mean baseline: {baseline:.5f}, n={n_test})")

    # ---- the library API: one jitted call explains the whole padded batch --------------------
    xe, le, pe = x[:n_explain], lengths[:n_explain], np.asarray(pos[:n_explain])
    t0 = time.perf_counter()
    ex = jax.block_until_ready(explain_batch(params, xe, le))
    print(f"\nLRP (eps rule, signal-take-all gates, bias_factor=0) of {n_explain} held-out "
          f"sequences: {time.perf_counter() - t0:.2f} s (including compilation)")

    R = np.asarray(ex.relevance)                     # (B, T, 2), exactly 0 on the padding
    r_step = R.sum(axis=-1)                          # relevance per time step
    L = np.asarray(le)
    print("\nRelevance per time step (summed over value and marker), * = marked step, . = padding:")
    print(relevance_table(r_step, pe, np.asarray(xe), L))
    scores = np.asarray(ex.scores[:, 0])
    print("score (target):  " + "   ".join(f"seq{j} {scores[j]:+.4f} ({float(y[j]):+.4f})"
                                           for j in range(3)))
    padding = np.arange(R.shape[1])[None, :] >= L[:, None]
    print(f"max |relevance| on padding steps: {np.abs(R[padding]).max(initial=0.0):.1g}")

    share = demo.marked_share(r_step, pe)            # as `lrpjax demo` reports it
    print(f"\nmarked-position share of |relevance|: {share.mean():.3f} (mean over {n_explain} "
          f"sequences, min {share.min():.3f})")
    absR = np.abs(R)
    marked = np.take_along_axis(absR, pe[:, :, None], axis=1)          # (B, 2, 2)
    print(f"  of all |relevance| (element-wise): {marked[..., 0].sum() / absR.sum():.3f} on marked "
          f"values, {marked[..., 1].sum() / absR.sum():.3f} on the markers themselves")
    # Relevance at a marked step should follow the value it carries (the model adds them up).
    v_marked = np.take_along_axis(np.asarray(xe[..., 0]), pe, axis=1).ravel()
    r_marked = np.take_along_axis(r_step, pe, axis=1).ravel()
    print(f"correlation of marked-step relevance with the marked value: "
          f"{np.corrcoef(v_marked, r_marked)[0, 1]:.3f}")

    print("\nConservation (score = input relevance + initial-state relevance + absorbed):")
    for bf, e in ((0.0, ex), (1.0, explain_batch(params, xe, le, bias_factor=1.0))):
        score = np.abs(np.asarray(e.scores[:, 0])).mean()
        print(f"  bias_factor={bf:.1f}: mean |absorbed| / mean |score| = "
              f"{np.abs(np.asarray(e.absorbed)).mean() / score:.2e}, "
              f"mean |initial state| / mean |score| = "
              f"{np.abs(np.asarray(e.initial_state)).mean() / score:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
