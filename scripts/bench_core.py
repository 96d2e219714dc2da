"""Core benchmark of lrpjax on the reference-size BiLSTM (Arras et al. 2017 / Li et al. 2016).

Prints one table from one run:

* ms per batch (median of interleaved, timed repeats after warm-up, ``block_until_ready``) for the plain
  forward, the plain input gradient of the target score, and ``lrpjax.relevance`` with every gate rule
  (plus ``bias_factor=1``), each with its ratio to the plain gradient (goal: <= 1.0 for ``gate="all"``);
* throughput of jitted ``lrpjax.relevance`` vs the per-sample NumPy LRP loop of ``tests/oracle.py``
  (goal: >= 50x), with a sanity check that both compute the same relevance;
* the number of compilations for a run over sentence lengths 1..40 when every batch is padded to a
  length bucket and passed with ``lengths=`` (and an assertion that padding does not change the result);
* the kernel goal at T = 20: ``relevance(gate="all")`` vs a plain compiled forward of the same model at
  B = 256, 1024 (goal: <= 1.5x) and 4096, with achieved GFLOP/s against a large float32 matmul.

Usage (from the repository root)::

    PYTHONPATH=. python scripts/bench_core.py            # full run (~2-3 min on 2 CPU cores)
    PYTHONPATH=. python scripts/bench_core.py --quick    # smoke test: small batch, few repeats
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

import jax  # noqa: E402
import jaxlib  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import lrpjax  # noqa: E402
import oracle  # noqa: E402  (tests/oracle.py: slow literal NumPy LRP)

DEFAULT_WEIGHTS = os.path.join("..", "shared", "data", "sst_bilstm_li2016", "weights.npz")
SHAPES = {"Wxh": (240, 60), "Whh": (240, 60), "bxh": (240,), "bhh": (240,)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=DEFAULT_WEIGHTS,
                   help="reference weights .npz (relative to the repo root unless absolute); random "
                        "weights of the same shapes are used if the file is absent")
    p.add_argument("--quick", action="store_true", help="smoke test: small batch, few repeats")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 256, quick 16)")
    p.add_argument("--T", type=int, default=30, help="sequence length (default 30)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per row (default 31, quick 3)")
    p.add_argument("--oracle-samples", type=int, default=None,
                   help="samples for the NumPy oracle loop (default 4, quick 1)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.batch is None:
        a.batch = 16 if a.quick else 256
    if a.repeats is None:
        a.repeats = 3 if a.quick else 31
    if a.oracle_samples is None:
        a.oracle_samples = 1 if a.quick else 4
    a.oracle_samples = max(1, min(a.oracle_samples, a.batch))
    return a


def load_weights(path: str, seed: int):
    """(weights dict, description). Falls back to seeded random weights of the reference's shapes."""
    full = path if os.path.isabs(path) else os.path.join(REPO, path)
    if os.path.exists(full):
        with np.load(full) as f:
            return {k: np.asarray(f[k]) for k in f.files}, f"reference weights {os.path.normpath(full)}"
    rng = np.random.default_rng(seed)
    w = {}
    for side in ("Left", "Right"):
        for k, shape in SHAPES.items():
            w[f"{k}_{side}"] = rng.uniform(-1, 1, shape) / np.sqrt(60)
        w[f"Why_{side}"] = rng.uniform(-1, 1, (5, 60)) / np.sqrt(60)
    return w, (f"RANDOM weights (seed {seed}; {os.path.normpath(full)} not found) with the reference's "
               f"shapes -- numbers are not for the trained model")


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def bench_rows(fns: dict, args: tuple, repeats: int) -> dict:
    """Median seconds per call of every fn, repeats interleaved across the fns (after 2 warm-ups each)."""
    for fn in fns.values():
        for _ in range(2):
            jax.block_until_ready(fn(*args))
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn, *args))
    return {name: statistics.median(ts) for name, ts in times.items()}


def bucket_of(L: int, step: int = 8) -> int:
    return -(-L // step) * step


# ---- a fair per-sample NumPy baseline: LRP (gate "all", bias_factor 0) vectorised per time step ----
# Written from the rules (docs/rules-and-strict-mode.md, "The rules"), in the style of per-sentence research code: one sample
# at a time, numpy matrix-vector products per step. Checked against tests/oracle.py below.

def _sig(v):
    return 1.0 / (1.0 + np.exp(-v))


def _np_eps(a, W_rows, z, R, eps):
    """Epsilon rule, bias_factor 0: lower relevance ``a * (W^T (R / (z + eps*sign z)))``."""
    return a * (W_rows.T @ (R / (z + eps * np.where(z >= 0, 1.0, -1.0))))


def _np_lstm(Wxh, Whh, b, xs):
    d = Whh.shape[1]
    T = len(xs)
    h, c = np.zeros((T + 1, d)), np.zeros((T + 1, d))
    pre, gates = np.zeros((T, 4 * d)), np.zeros((T, 4 * d))
    for t in range(T):  # rows i, g, f, o (the reference's order); h[t] is the state before step t
        z = Wxh @ xs[t] + Whh @ h[t] + b
        i, g, f, o = _sig(z[:d]), np.tanh(z[d:2 * d]), _sig(z[2 * d:3 * d]), _sig(z[3 * d:])
        c[t + 1] = f * c[t] + i * g
        h[t + 1] = o * np.tanh(c[t + 1])
        pre[t], gates[t] = z, np.concatenate([i, g, f, o])
    return h, c, pre, gates


def _np_bilstm_forward(w, x, target):
    """Forward pass of the reference BiLSTM on one sentence: ``(d, cell-input rows, sides, states per
    side, scores, initial relevance = the target's score)``."""
    d = w["Whh_Left"].shape[1]
    sides = {"Left": x, "Right": x[::-1]}
    st = {s: _np_lstm(w[f"Wxh_{s}"], w[f"Whh_{s}"], w[f"bxh_{s}"] + w[f"bhh_{s}"], xs)
          for s, xs in sides.items()}
    score = w["Why_Left"] @ st["Left"][0][-1] + w["Why_Right"] @ st["Right"][0][-1]
    R_s = np.zeros_like(score)
    R_s[target] = score[target]
    return d, slice(d, 2 * d), sides, st, score, R_s


def numpy_lrp_per_sample(w, x, target, eps=1e-3):
    """Relevance ``(T, e)`` of one embedded sentence for the reference BiLSTM (signal-take-all)."""
    d, gd, sides, st, score, R_s = _np_bilstm_forward(w, x, target)
    Rx = np.zeros_like(x)
    for s, xs in sides.items():
        h, c, pre, gates = st[s]
        Rh, Rc, Rxs = _np_eps(h[-1], w[f"Why_{s}"], score, R_s, eps), np.zeros(d), np.zeros_like(xs)
        for t in range(len(xs) - 1, -1, -1):
            Rc = Rc + Rh                                     # o * tanh(c_t): all to c_t
            i, g, f = gates[t, :d], gates[t, gd], gates[t, 2 * d:3 * d]
            zc = c[t + 1] + eps * np.where(c[t + 1] >= 0, 1.0, -1.0)
            Rg = i * g / zc * Rc                             # accumulator: i*g share -> g
            Rc = f * c[t] / zc * Rc                          # f*c_{t-1} share -> c_{t-1}
            Rxs[t] = _np_eps(xs[t], w[f"Wxh_{s}"][gd], pre[t, gd], Rg, eps)
            Rh = _np_eps(h[t], w[f"Whh_{s}"][gd], pre[t, gd], Rg, eps)
        Rx += Rxs if s == "Left" else Rxs[::-1]
    return Rx


def _np_eps_messages(a, W_rows, b, z, R, eps, bias_factor=0.0):
    """Epsilon rule in the explicit message form of per-sentence research code: the ``(n, m)`` matrix
    ``(a_i w_ij + bias_factor (b_j + eps sign z_j) / n) / (z_j + eps sign z_j)``, weighted by ``R_j``
    and summed over ``j``. Same numbers as :func:`_np_eps` for bias_factor 0, O(n m) memory per call."""
    stab = eps * np.where(z >= 0, 1.0, -1.0)
    n = a.shape[0]
    messages = (a[:, None] * W_rows.T + bias_factor * (b + stab)[None, :] / n) / (z + stab)[None, :]
    return messages @ R


def numpy_lrp_messages_per_sample(w, x, target, eps=1e-3, bias_factor=0.0):
    """Like :func:`numpy_lrp_per_sample`, but each linear layer's relevance is computed from its
    explicit message matrix (over the concatenated ``[x_t; h_{t-1}]`` input of the cell input, as the
    formula is usually written), which is how per-sentence research implementations do it (and lets
    them spread the bias share with ``bias_factor``)."""
    d, gd, sides, st, score, R_s = _np_bilstm_forward(w, x, target)
    e = x.shape[1]
    Rx = np.zeros_like(x)
    for s, xs in sides.items():
        h, c, pre, gates = st[s]
        W_g = np.concatenate([w[f"Wxh_{s}"][gd], w[f"Whh_{s}"][gd]], axis=1)     # (d, e + d)
        b_g = (w[f"bxh_{s}"] + w[f"bhh_{s}"])[gd]
        Rh = _np_eps_messages(h[-1], w[f"Why_{s}"], np.zeros(len(score)), score, R_s, eps, bias_factor)
        Rc, Rxs = np.zeros(d), np.zeros_like(xs)
        for t in range(len(xs) - 1, -1, -1):
            Rc = Rc + Rh
            i, g, f = gates[t, :d], gates[t, gd], gates[t, 2 * d:3 * d]
            fc, ig = f * c[t], i * g
            z = c[t + 1]
            R2 = _np_eps_messages(np.concatenate([fc, ig]), np.vstack([np.eye(d), np.eye(d)]).T,
                                  np.zeros(d), z, Rc, eps, bias_factor)
            Rc, Rg = R2[:d], R2[d:]
            Rin = _np_eps_messages(np.concatenate([xs[t], h[t]]), W_g, b_g, pre[t, gd], Rg, eps,
                                   bias_factor)
            Rxs[t], Rh = Rin[:e], Rin[e:]
        Rx += Rxs if s == "Left" else Rxs[::-1]
    return Rx


def matmul_peak_gflops(repeats: int, n: int = 2048) -> float:
    """Achieved GFLOP/s of one large jitted float32 matmul (n x n times n x n): the machine's
    practical matmul peak through the same XLA backend."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32))
    mm = jax.jit(lambda a: a @ a)
    s = bench_rows({"mm": mm}, (a,), max(3, repeats // 3))["mm"]
    return 2 * n ** 3 / s / 1e9


def kernel_goal(model, e: int, d: int, C: int, repeats: int, batches, T: int = 20, seed: int = 0):
    """Rows of the kernel goal: plain compiled forward vs ``relevance(gate="all")`` at T=20.

    FLOPs counted are the matrix products only: forward ``2 directions * T * 2 B (e + d) 4d`` plus
    the readout; relevance adds the reverse pass's cell-input products ``2 * T * 2 B d (e + d)``."""
    rows = []
    rng = np.random.default_rng(seed)
    fwd = jax.jit(lambda x, t: model(x))
    rel = jax.jit(lambda x, t: lrpjax.relevance(model, x, t, gate="all"))
    for B in batches:
        x = jnp.asarray((0.5 * rng.uniform(-1.0, 1.0, (B, T, e))).astype(np.float32))
        t = jnp.asarray(rng.integers(0, C, B).astype(np.int32))
        med = bench_rows({"forward": fwd, "relevance": rel}, (x, t), repeats)
        f_fwd = 2 * T * 2 * B * (e + d) * 4 * d + 2 * B * 2 * d * C
        f_rel = f_fwd + 2 * T * 2 * B * d * (e + d)
        rows.append((B, med["forward"], med["relevance"], f_fwd / med["forward"] / 1e9,
                     f_rel / med["relevance"] / 1e9))
    return rows


def main(argv=None) -> int:
    a = parse_args(argv)
    t_start = time.perf_counter()
    out = []
    say = out.append

    weights, wdesc = load_weights(a.weights, a.seed)
    model = lrpjax.interop.from_arras_bilstm(weights)
    e = weights["Wxh_Left"].shape[1]
    d = weights["Whh_Left"].shape[1]
    C = weights["Why_Left"].shape[0]
    B, T = a.batch, a.T

    rng = np.random.default_rng(a.seed)
    x_np = (0.5 * rng.uniform(-1.0, 1.0, (B, T, e))).astype(np.float32)
    t_np = rng.integers(0, C, B).astype(np.int32)
    x, t = jnp.asarray(x_np), jnp.asarray(t_np)

    # ---- 1. timings ---------------------------------------------------------------------------
    fwd = jax.jit(lambda x: model(x))
    grad = jax.jit(jax.grad(lambda x, t: jnp.sum(jnp.take_along_axis(model(x), t[:, None], 1))))
    rows = {"plain forward": lambda x, t: fwd(x), "plain gradient (d score_t / dx)": grad}
    rel = {}
    for g in lrpjax.GATE_RULES:
        rel[g] = jax.jit(lambda x, t, g=g: lrpjax.relevance(model, x, t, gate=g))
        rows[f'relevance gate="{g}"'] = rel[g]
    rows['relevance gate="all", bias_factor=1'] = jax.jit(
        lambda x, t: lrpjax.relevance(model, x, t, gate="all", bias_factor=1.0))
    med = bench_rows(rows, (x, t), a.repeats)
    t_grad = med["plain gradient (d score_t / dx)"]

    # ---- 2. throughput vs the per-sample NumPy oracle -------------------------------------------
    w64 = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    R_jax = np.asarray(rel["all"](x, t), np.float64)
    n_or = a.oracle_samples
    t0 = time.perf_counter()
    R_or = [oracle.arras_bilstm_lrp(w64, x_np[i].astype(np.float64), int(t_np[i]), gate="all")[0]
            for i in range(n_or)]
    t_oracle = time.perf_counter() - t0
    oracle_sps = n_or / t_oracle
    rel_sps = B / med['relevance gate="all"']
    diffs = [np.max(np.abs(R_jax[i] - R_or[i])) / np.max(np.abs(R_or[i])) for i in range(n_or)]
    max_diff = max(diffs)
    for i in range(n_or):  # the vectorised per-sample baseline computes the same rules
        np.testing.assert_allclose(numpy_lrp_per_sample(w64, x_np[i].astype(np.float64), int(t_np[i])),
                                   R_or[i], atol=1e-10)
    n_np = min(B, 8 if a.quick else 64)
    t0 = time.perf_counter()
    for i in range(n_np):
        numpy_lrp_per_sample(w64, x_np[i].astype(np.float64), int(t_np[i]))
    t_np_loop = time.perf_counter() - t0
    np_sps = n_np / t_np_loop
    # float32 vs float64 through 30 epsilon-rule steps: a loose sanity bound, not a precision test
    assert max_diff < 1e-2, f"lrpjax.relevance disagrees with the NumPy oracle: {max_diff:.3g}"

    # ---- 3. compilations over lengths 1..40 with length buckets -------------------------------
    Bc, Lmax, step = (8 if a.quick else 32), 40, 8
    traces = [0]

    def make_rel_lengths():  # a fresh function object: its own jit/trace caches
        def rel_lengths(x, l, t):
            traces[0] += 1  # runs once per trace, i.e. per compilation
            return lrpjax.relevance(lambda x: model(x, l), x, t)
        return jax.jit(rel_lengths)

    rel_padded = make_rel_lengths()
    rng_c = np.random.default_rng(a.seed + 1)
    tc = jnp.asarray(rng_c.integers(0, C, Bc).astype(np.int32))
    t0 = time.perf_counter()
    check_L = 13
    for L in range(1, Lmax + 1):
        xs = (0.5 * rng_c.uniform(-1.0, 1.0, (Bc, L, e))).astype(np.float32)
        xp = np.zeros((Bc, bucket_of(L, step), e), np.float32)
        xp[:, :L] = xs
        Rp = np.asarray(jax.block_until_ready(rel_padded(jnp.asarray(xp), jnp.full((Bc,), L, jnp.int32), tc)))
        if L == check_L:  # padding must not change the relevance of the valid part
            Ru = np.asarray(lrpjax.relevance(model, jnp.asarray(xs), tc))
            scale = np.max(np.abs(Ru))
            np.testing.assert_allclose(Rp[:, :L], Ru, rtol=1e-5, atol=1e-5 * scale)
            assert np.all(Rp[:, L:] == 0.0), "padded steps received relevance"
            pad_err = np.max(np.abs(Rp[:, :L] - Ru)) / scale
    t_lengths = time.perf_counter() - t0
    buckets = sorted({bucket_of(L, step) for L in range(1, Lmax + 1)})
    n_compiles = traces[0]
    assert n_compiles == len(buckets), (n_compiles, buckets)

    # baseline: the same jitted function on unpadded batches (one shape per length)
    n_unpadded, t_unpadded = None, None
    if not a.quick:
        traces[0] = 0
        rel_unpadded = make_rel_lengths()
        t0 = time.perf_counter()
        for L in range(1, Lmax + 1):
            xs = jnp.asarray((0.5 * rng_c.uniform(-1.0, 1.0, (Bc, L, e))).astype(np.float32))
            jax.block_until_ready(rel_unpadded(xs, jnp.full((Bc,), L, jnp.int32), tc))
        t_unpadded, n_unpadded = time.perf_counter() - t0, traces[0]

    # ---- 4. kernel goal: relevance(gate="all") <= 1.5x the plain forward at T=20 ----------------
    goal_rows = kernel_goal(model, e, d, C, a.repeats, (16,) if a.quick else (256, 1024, 4096),
                            seed=a.seed)
    peak = matmul_peak_gflops(a.repeats)

    # ---- report -------------------------------------------------------------------------------
    cmd = "cd " + shlex.quote(REPO) + " && PYTHONPATH=. " + " ".join(
        shlex.quote(s) for s in [sys.executable, "scripts/bench_core.py", *sys.argv[1:]])
    width = 40
    say("lrpjax core benchmark" + ("  [--quick: smoke test, numbers not meaningful]" if a.quick else ""))
    say(f"devices: {jax.devices()}  jax {jax.__version__}  jaxlib {jaxlib.__version__}"
        f"  numpy {np.__version__}  python {platform.python_version()}  cpus {os.cpu_count()}")
    say(f"model: {wdesc}")
    say(f"BiLSTM e={e} d={d} C={C}, batch B={B}, T={T}, float32, jitted; x ~ 0.5*U(-1,1) (seed {a.seed}); "
        f"median of {a.repeats} interleaved repeats after 2 warm-ups")
    say("")
    say(f"{'row':<{width}} {'ms/batch':>10} {'vs grad':>8}")
    say("-" * (width + 20))
    for name, s in med.items():
        say(f"{name:<{width}} {1e3 * s:>10.2f} {s / t_grad:>7.2f}x")
    say("-" * (width + 20))
    ratio_all = med['relevance gate="all"'] / t_grad
    say(f'goal relevance(gate="all") / gradient <= 1.0: {ratio_all:.2f} '
        f'({"met" if ratio_all <= 1.0 else "NOT met"})')
    say("")
    say(f'throughput, gate="all", T={T}:')
    say(f"  NumPy per-sample LRP, vectorised per step (float64):     {np_sps:10.1f} samples/s "
        f"({n_np} samples, {t_np_loop:.2f} s)")
    say(f"  NumPy oracle, literal loops (tests/oracle.py, float64):  {oracle_sps:10.2f} samples/s "
        f"({n_or} samples, {t_oracle:.2f} s)")
    say(f"  lrpjax.relevance (jit, float32, B={B}):                  {rel_sps:10.1f} samples/s")
    say(f"  speed-up vs the vectorised per-sample loop: {rel_sps / np_sps:.0f}x (goal >= 50x: "
        f"{'met' if rel_sps / np_sps >= 50 else 'NOT met'}); vs the literal oracle: "
        f"{rel_sps / oracle_sps:.0f}x")
    say(f"  max |R_lrpjax - R_oracle| / max |R_oracle| = {max_diff:.1e} (float32 vs float64) on "
        f"{n_or} samples")
    say("")
    say(f"compilations for lengths 1..{Lmax}: {n_compiles} (buckets: {', '.join(map(str, buckets))}; "
        f"B={Bc}, padded to the bucket, lengths= passed; {t_lengths:.1f} s for all {Lmax} lengths)")
    if n_unpadded is not None:
        say(f"  without buckets (unpadded, same function): {n_unpadded} compilations, {t_unpadded:.1f} s")
    else:
        say("  without buckets: not measured in --quick mode (jit compiles once per distinct length)")
    say(f"  padded == unpadded for L={check_L} (bucket {bucket_of(check_L, step)}): max rel diff "
        f"{pad_err:.1e}, padded steps exactly 0")
    say("")
    say(f'kernel goal, T=20 (float32, jitted, median of {a.repeats}): relevance(gate="all") <= 1.5x the '
        f"plain compiled forward at B=256 and B=1024")
    say(f"  matmul peak (jitted 2048x2048 float32 matmul): {peak:.0f} GFLOP/s")
    say(f"  {'B':>5} {'forward ms':>11} {'relevance ms':>13} {'ratio':>6} {'fwd GFLOP/s':>12} "
        f"{'rel GFLOP/s':>12} {'rel % of peak':>14} {'rel seq/s':>10}")
    for B, tf, tr, gf, gr in goal_rows:
        verdict = "" if B not in (256, 1024) else ("  met" if tr / tf <= 1.5 else "  NOT met")
        say(f"  {B:>5} {1e3 * tf:>11.2f} {1e3 * tr:>13.2f} {tr / tf:>5.2f}x {gf:>12.1f} {gr:>12.1f} "
            f"{100 * gr / peak:>13.0f}% {B / tr:>10.0f}{verdict}")
    say("")
    say(f"total wall time {time.perf_counter() - t_start:.0f} s")
    say(f"reproduce: {cmd}")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
