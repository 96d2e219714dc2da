"""Benchmark: explaining an unmodified Flax BiLSTM costs no more than a plain gradient of it.

One run, one table: for a flax.linen ``Bidirectional(RNN(LSTMCell(60)), RNN(LSTMCell(60)))`` + ``Dense(5)``
classifier (the reference size: e = d = 60, 5 classes), batch 256, T = 30, float32, jitted, the ms per
batch of the plain forward, the plain input gradient of the target score, and ``lrpjax.relevance`` on
the same unmodified model (gate "all" and "half"), with the ratio to the plain gradient
(goal: <= 1.0 for gate "all"). The same for ``OptimizedLSTMCell`` and for a flax.nnx model.

Usage (from the repository root)::

    PYTHONPATH=. python scripts/bench_flax.py          # full run (~2 min on 2 CPU cores)
    PYTHONPATH=. python scripts/bench_flax.py --quick  # smoke test
"""
from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "scripts"))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import lrpjax  # noqa: E402
from bench_core import bench_rows  # noqa: E402  (median of interleaved repeats after warm-up)

E = D = 60
C = 5


class LinenBiLSTM(nn.Module):
    cell: type = nn.LSTMCell

    @nn.compact
    def __call__(self, x):
        (cf, cb), _ = nn.Bidirectional(nn.RNN(self.cell(D)), nn.RNN(self.cell(D)),
                                       return_carry=True)(x)
        return nn.Dense(C)(jnp.concatenate([cf[1], cb[1]], -1))


class NnxBiLSTM(nnx.Module):
    def __init__(self, rngs):
        self.rnn = nnx.Bidirectional(nnx.RNN(nnx.OptimizedLSTMCell(E, D, rngs=rngs)),
                                     nnx.RNN(nnx.OptimizedLSTMCell(E, D, rngs=rngs)),
                                     return_carry=True, rngs=rngs)
        self.out = nnx.Linear(2 * D, C, rngs=rngs)

    def __call__(self, x):
        (cf, cb), _ = self.rnn(x)
        return self.out(jnp.concatenate([cf[1], cb[1]], -1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=None)
    a = p.parse_args(argv)
    B, T = (16, 10) if a.quick else (256, 30)
    repeats = a.repeats or (3 if a.quick else 21)
    rng = np.random.default_rng(0)
    x = jnp.asarray(0.5 * rng.uniform(-1, 1, (B, T, E)), jnp.float32)
    t = jnp.asarray(rng.integers(0, C, B), jnp.int32)

    models = {}
    for cell in (nn.LSTMCell, nn.OptimizedLSTMCell):
        m = LinenBiLSTM(cell)
        v = m.init(jax.random.key(1), x)
        models[f"linen {cell.__name__}"] = (lambda m, v: lambda x: m.apply(v, x))(m, v)
    nm = NnxBiLSTM(nnx.Rngs(2))
    models["nnx OptimizedLSTMCell"] = lambda x: nm(x)

    def target_score(out, t):
        return jnp.sum(jnp.take_along_axis(out, t[:, None], 1))

    # a plain jax.grad/jit of an nnx.RNN raises (it draws from the module's RNG stream inside the
    # trace), so nnx's own transforms give its plain forward and gradient
    nnx_fwd = nnx.jit(lambda m, x: m(x))
    nnx_grad = nnx.jit(lambda m, x, t: nnx.grad(lambda x, m: target_score(m(x), t))(x, m))

    rows, base = {}, {}
    for name, f in models.items():
        if name.startswith("nnx"):
            rows[f"{name}: plain forward"] = lambda x, t: nnx_fwd(nm, x)
            rows[f"{name}: plain gradient"] = lambda x, t: nnx_grad(nm, x, t)
        else:
            rows[f"{name}: plain forward"] = jax.jit(lambda x, t, f=f: f(x))
            rows[f"{name}: plain gradient"] = jax.jit(jax.grad(lambda x, t, f=f: target_score(f(x), t)))
        base[name] = f"{name}: plain gradient"
        for g in ("all", "half"):
            rows[f'{name}: relevance gate="{g}"'] = jax.jit(
                lambda x, t, f=f, g=g: lrpjax.relevance(f, x, t, gate=g))
    med = bench_rows(rows, (x, t), repeats)

    print("lrpjax: unmodified Flax BiLSTM" + ("  [--quick: numbers not meaningful]" if a.quick else ""))
    print(f"devices: {jax.devices()}  jax {jax.__version__}  cpus {os.cpu_count()}")
    print(f"e=d={E}, C={C}, batch {B}, T={T}, float32, jitted; median of {repeats} interleaved repeats")
    print()
    print(f"{'row':<52} {'ms/batch':>9} {'vs grad':>8}")
    print("-" * 71)
    for name in models:
        t_grad = med[base[name]]
        for row, s in med.items():
            if row.startswith(name + ":"):
                print(f"{row:<52} {1e3 * s:>9.2f} {s / t_grad:>7.2f}x")
        print("-" * 71)
    worst = max(med[f'{n}: relevance gate="all"'] / med[base[n]] for n in models)
    print(f'goal relevance(gate="all") / plain gradient <= 1.0: worst {worst:.2f} '
          f'({"met" if worst <= 1.0 else "NOT met"})')
    print("reproduce: PYTHONPATH=. python scripts/bench_flax.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
