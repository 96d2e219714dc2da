"""``lrpjax demo``: train a small LSTM on the adding task, explain 10,000 sequences with a dataset job.

The adding task (Hochreiter & Schmidhuber, 1997), here with variable lengths: each sequence has
``length`` steps (``min_len..T``), each step a pair ``(value, marker)`` with ``value ~ U(-1, 1)``;
exactly two steps carry ``marker = 1`` and the target is the sum of their two values. A model that
solves it must ignore every unmarked step, so a faithful explanation puts most of the relevance on the
two marked steps -- a check with a known answer.

Steps: train (jitted Adam + optax, fresh batches) -> write ``n`` held-out sequences as ``input.npz``
-> :func:`lrpjax.jobs.attribute_dataset` (length buckets, all local devices, Parquet shards) -> read
the Parquet output back with pyarrow and report the share of ``|relevance|`` on the marked steps, the
throughput and the compilations.

The pieces are public, for scripts that explain the same model with the library API directly
(``examples/quickstart.py``): :func:`adding_task` (the data, from :mod:`lrpjax.tasks`),
:func:`init_params` / :func:`model` (the LSTM, built from lrpjax layers only), :func:`train` (the loop
of :func:`lrpjax.tasks.fit`), :func:`marked_share`, :class:`Config`.

Run: ``lrpjax demo`` (about 20 s on 2 CPU cores), ``lrpjax demo --quick`` (a smoke test).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pyarrow.parquet as pq

import lrpjax
from lrpjax.jobs import MANIFEST, ModelSpec, attribute_dataset
from lrpjax.jobs.output import read_results
from lrpjax.tasks import adding_task, fit  # noqa: F401  (adding_task: part of this module's API)

Array = jax.Array


class Config(NamedTuple):
    """Hyper-parameters of the demo (the full run trains to test MSE << 0.01)."""

    T: int = 30            # maximum sequence length
    min_len: int = 10      # minimum sequence length
    hidden: int = 32       # LSTM units
    batch: int = 128       # fresh sequences per optimiser step
    steps: int = 2500      # optimiser steps
    chunk: int = 250       # steps per jitted call
    lr: float = 1e-2       # Adam peak learning rate (cosine-decayed)
    n: int = 10_000        # sequences explained by the job
    shard_size: int = 4096


QUICK = Config(steps=300, chunk=150, n=2000, shard_size=1024)


class Params(NamedTuple):
    lstm: lrpjax.LSTMParams
    w: Array   # (hidden, 1)
    b: Array   # (1,)


def init_params(key: Array, hidden: int = Config().hidden) -> Params:
    """Random LSTM (2 input features, ``hidden`` units) and a dense readout to one score."""
    k_lstm, k_w = jax.random.split(key)
    return Params(lrpjax.init_lstm(k_lstm, 2, hidden, dtype=jnp.float32),
                  jax.random.normal(k_w, (hidden, 1), jnp.float32) / np.sqrt(hidden),
                  jnp.zeros((1,), jnp.float32))


def model(params: Params, x: Array, lengths: Optional[Array] = None) -> Array:
    """``x`` ``(B, T, 2)``, ``lengths`` ``(B,)`` -> scores ``(B, 1)`` (the final valid hidden state).

    Only lrpjax layers touch ``x``, so the same function trains with ``jax.grad`` and is explained by
    ``lrpjax.relevance`` / ``lrpjax.explain``.
    """
    _, (_, h) = lrpjax.lstm(params.lstm, x, lengths=lengths)
    return lrpjax.dense(h, params.w, params.b)


def train(key: Union[Array, int], cfg: Config = Config(), log: Any = print) -> tuple[Params, float]:
    """Adam on the MSE with fresh padded batches each step; returns the parameters and seconds.

    ``key`` is a PRNG key or an int seed; ``log`` gets one progress line per ``cfg.chunk`` steps
    (``log=lambda s: None`` for silence). Seconds include compilation.
    """
    if isinstance(key, (int, np.integer)):
        key = jax.random.key(key)
    k_init, k_data = jax.random.split(key)
    params = init_params(k_init, cfg.hidden)
    opt = optax.chain(optax.clip_by_global_norm(1.0),
                      optax.adam(optax.cosine_decay_schedule(cfg.lr, cfg.steps)))

    def on_chunk(done, p, loss):
        log(f"  step {done:5d}  train MSE {float(loss):.5f}")

    keys = jax.random.split(k_data, cfg.steps)
    t0 = time.perf_counter()
    params = fit(params, model, lambda k: adding_task(k, cfg.batch, cfg.T, cfg.min_len), opt, keys,
                 cfg.chunk, on_chunk)
    return params, time.perf_counter() - t0


def marked_share(relevance: Any, pos: np.ndarray) -> np.ndarray:
    """Per sequence: share of ``sum_t |relevance_t|`` on the two marked steps ``pos`` ``(n, 2)``.

    ``relevance``: one array per sequence (a list of per-step relevances, as in the Parquet column, or
    an array ``(n, T)``); a ``(T, F)`` entry counts ``|relevance|`` element-wise over the features.
    """
    out = np.empty(len(relevance))
    for i, r in enumerate(relevance):
        a = np.abs(np.asarray(r, np.float64))
        out[i] = a[pos[i]].sum() / max(a.sum(), 1e-12)
    return out


def run(out: Path, n: Optional[int] = None, quick: bool = False, seed: int = 0,
        progress: Any = "auto") -> dict:
    """The whole demo; returns its numbers (also printed)."""
    t_start = time.perf_counter()
    cfg = QUICK if quick else Config()
    if n is not None:
        cfg = cfg._replace(n=n)
    out.mkdir(parents=True, exist_ok=True)
    print(f"lrpjax demo: adding task, lengths {cfg.min_len}..{cfg.T}, LSTM hidden={cfg.hidden}, "
          f"{cfg.steps} Adam steps x batch {cfg.batch}, seed={seed}, backend={jax.default_backend()}, "
          f"{jax.local_device_count()} device(s)")
    k_train, k_test = jax.random.split(jax.random.key(seed))
    params, t_train = train(k_train, cfg)
    x, lengths, y, pos = (np.asarray(a) for a in adding_task(k_test, cfg.n, cfg.T, cfg.min_len))
    pred = np.asarray(jax.jit(model)(params, x, lengths))[:, 0]
    mse, base = float(np.mean((pred - y) ** 2)), float(np.var(y))
    print(f"training: {t_train:.1f} s; held-out MSE {mse:.5f} (predict-the-mean baseline {base:.5f}, "
          f"n={cfg.n})")

    data = out / "input.npz"
    np.savez(data, x=x, lengths=lengths)   # uncompressed: x is memory-mapped by the job
    np.save(out / "marked_positions.npy", pos)
    spec = ModelSpec(lambda xb, lb: model(params, xb, lb), features=2,
                     name=f"lrpjax-demo adding-task LSTM (hidden={cfg.hidden}, steps={cfg.steps}, "
                          f"seed={seed})")
    if progress == "auto":   # a bar on a terminal; no log lines (the summary below says it all)
        progress = sys.stderr.isatty()
    res_dir = out / "attributions"
    summary = attribute_dataset(spec, data, res_dir, target=0, shard_size=cfg.shard_size,
                                overwrite=True, progress=progress)

    table = read_results(res_dir, columns=["index", "relevance", "score"])
    idx = table.column("index").to_numpy()
    share = marked_share(table.column("relevance").to_pylist(), pos[idx])
    print(f"\nattribute_dataset: {summary.n_examples} sequences -> {summary.n_shards_written} Parquet "
          f"shard(s) in {summary.seconds:.2f} s ({summary.examples_per_second:.0f} sequences/s, "
          f"{summary.compilations} compilations for length buckets "
          f"{sorted({-(-int(L) // 8) * 8 for L in lengths})}), {summary.n_errors} errors")
    print(f"marked-position share of |relevance|: {share.mean():.3f} (mean over {len(share)} "
          f"sequences; median {np.median(share):.3f}, min {share.min():.3f}; "
          f"2 of {cfg.min_len}..{cfg.T} steps are marked)")
    columns = ", ".join(pq.read_schema(res_dir / "part-00000.parquet").names)
    print(f"output: {res_dir}/part-*.parquet (columns: {columns}), {res_dir / MANIFEST}")
    total = time.perf_counter() - t_start
    print(f"total demo time: {total:.1f} s")
    return {"share": float(share.mean()), "mse": mse, "baseline": base, "summary": summary,
            "seconds": total}


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(prog="lrpjax demo", description="Train a small LSTM on the adding "
                                 "task and explain 10,000 sequences with a dataset job.")
    add_arguments(ap)
    args = ap.parse_args(argv)
    run(Path(args.out), n=args.n, quick=args.quick, seed=args.seed)
    return 0


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", default="lrpjax-demo", metavar="DIR",
                    help="output directory (input.npz, attributions/); replaced on every run "
                         "(default: ./lrpjax-demo)")
    ap.add_argument("--n", type=int, default=None, metavar="N",
                    help="sequences to explain (default 10000; 2000 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="short training and 2000 sequences: a smoke test (about 7 s on 2 cores)")
    ap.add_argument("--seed", type=int, default=0, help="PRNG seed (data, init, batches)")


if __name__ == "__main__":
    sys.exit(main())
