"""Job pipeline benchmark: ``lrpjax.attribute_dataset`` vs a plain NumPy + pyarrow loop, one run.

Prints, from one process on one machine:

* **free model**: examples/s of the job on an ``.npz`` input with a model that costs nothing (a linear
  readout of the first step), next to a single-threaded NumPy + pyarrow loop that does the same reading
  (memory-mapped ``x``), checking (finite values over the valid steps, lengths, feature count) and
  Parquet writing (the part-file columns: index, id, label, length, target, score, relevance as a list
  column built from a flat buffer and offsets) -- goal: job >= 0.8x the loop;
* **SST test set, LRP**: sentences/s of the job explaining the 2,210 SST-5 test sentences with the
  released reference BiLSTM (embedded with the seeded random table of ``scripts/bench_attribute.py``,
  written as an ``.npz``), against the bare jitted ``relevance`` at the same batch size and the
  message-matrix NumPy loop of ``scripts/bench_core.py`` (the form of the published per-sentence
  reference code) -- goal: >= 150x the reference's 134 sentences/s on this machine.

Usage (from the repository root)::

    PYTHONPATH=. python scripts/bench_pipeline.py            # full run (about 1-2 min on 2 CPU cores)
    PYTHONPATH=. python scripts/bench_pipeline.py --quick    # smoke test
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "scripts"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

import lrpjax  # noqa: E402
from lrpjax.jobs import ModelSpec, attribute_dataset  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke test: small sizes")
    p.add_argument("--n", type=int, default=None, help="examples of the free-model input (default 200000)")
    p.add_argument("--T", type=int, default=20)
    p.add_argument("--F", type=int, default=8)
    p.add_argument("--shard-size", type=int, default=16384)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=None, help="timed runs of each side (default 3)")
    p.add_argument("--sst-batch-size", type=int, default=256,
                   help="batch_size of the SST job (default 256, the job's default)")
    p.add_argument("--sst-repeat", type=int, default=1,
                   help="explain the SST test set this many times over in one job (default 1)")
    a = p.parse_args(argv)
    a.n = a.n or (6000 if a.quick else 200_000)
    a.repeats = a.repeats or (1 if a.quick else 3)
    if a.quick:
        a.shard_size, a.batch_size = 2048, 512
    return a


def make_input(path: str, n: int, T: int, F: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, T, F), dtype=np.float32)
    lengths = rng.integers(1, T + 1, n).astype(np.int32)
    labels = rng.integers(0, 3, n).astype(np.int64)
    np.savez(path, x=x, lengths=lengths, labels=labels)


def free_model(F: int, C: int = 3):
    """A model that costs nothing: logits = x[:, 0] @ W (its relevance reaches step 0 only)."""
    W = jnp.asarray(np.random.default_rng(1).standard_normal((F, C)).astype(np.float32))
    return ModelSpec(lambda x, lengths: lrpjax.dense(x[:, 0, :], W), name="free", features=F)


def numpy_pyarrow_loop(path: str, out: str, shard_size: int, W: np.ndarray) -> int:
    """The floor: the same reading, checking and writing in plain NumPy + pyarrow, one thread."""
    with np.load(path) as f:
        lengths_all, labels_all, x_all = f["lengths"], f["labels"], f["x"]
    N, T, F = x_all.shape
    steps = np.arange(T)
    for k, s in enumerate(range(0, N, shard_size)):
        x = np.asarray(x_all[s:s + shard_size], np.float32)
        L = lengths_all[s:s + shard_size]
        n = len(L)
        valid = steps[None, :] < L[:, None]
        ok = ((L >= 1) & (L <= T) & ~((~np.isfinite(x)).any(-1) & valid).any(-1) & (x.shape[2] == F))
        idx = np.flatnonzero(ok)
        scores = x[idx, 0] @ W                                       # the "model"
        target = scores.argmax(-1).astype(np.int32)
        z = scores[np.arange(len(idx)), target]
        z_lrp = z * z / (z + np.where(z >= 0, 1e-3, -1e-3))                  # epsilon rule, eps 1e-3
        rel = np.where(steps[None, :] == 0, z_lrp[:, None], 0)
        rel = rel.astype(np.float32)
        Lk = L[idx]
        flat = rel[valid[idx]]
        offsets = np.zeros(len(idx) + 1, np.int32)
        np.cumsum(Lk, out=offsets[1:])
        table = pa.table({
            "index": pa.array(s + idx, pa.int64()), "id": pa.array(s + idx, pa.int64()),
            "label": pa.array(labels_all[s:s + n][idx], pa.int64()),
            "length": pa.array(Lk.astype(np.int32)), "target": pa.array(target),
            "score": pa.array(scores[np.arange(len(idx)), target].astype(np.float32)),
            "relevance": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))})
        pq.write_table(table, os.path.join(out, f"part-{k:05d}.parquet"))
    return N


REFERENCE_SPS = 134.0    # the reference implementation, SST test set (issue 11's measurement, 2 cores)
LOOP_OVER_REFERENCE = 350.0 / REFERENCE_SPS
"""How much faster our message-matrix loop ran than the reference on the issue's 2-core machine (350
sentences/s in docs/performance.md, measured in the same week; the reference's code is not ours to run
here): the goal "150x the reference" is "150 / 2.6 = 57x our loop" in one run on any machine."""


def sst_rows(a, tmp: str) -> dict:
    """The SST-5 test set through the job (LRP, gate "all") vs the message-matrix NumPy loop and vs
    the bare jitted ``relevance`` at the job's batch size."""
    import bench_attribute
    import bench_core
    data_dir = os.path.join(REPO, bench_attribute.DEFAULT_DATA)
    weights, _ = bench_core.load_weights(os.path.join(data_dir, "weights.npz"), seed=0)
    weights = {k: np.asarray(v, np.float32) for k, v in weights.items()}
    ids, labels, n_vocab, desc = bench_attribute.load_sst(data_dir, a.quick)
    emb = np.random.default_rng(bench_attribute.EMB_SEED).uniform(-0.5, 0.5, (n_vocab, 60)).astype(np.float32)
    N, Tm = len(ids), max(len(s) for s in ids)
    x = np.zeros((N, Tm, 60), np.float32)
    for i, s in enumerate(ids):
        x[i, :len(s)] = emb[s]
    lengths = np.array([len(s) for s in ids], np.int32)
    path = os.path.join(tmp, "sst.npz")
    rep = a.sst_repeat
    np.savez(path, x=np.tile(x, (rep, 1, 1)), lengths=np.tile(lengths, rep), labels=np.tile(labels, rep))
    model = lrpjax.interop.from_arras_bilstm(weights)
    spec = ModelSpec(lambda x, l: model(x, l), name="arras-bilstm-sst5", features=60)

    def job():
        out = os.path.join(tmp, "sst-job")
        shutil.rmtree(out, ignore_errors=True)
        s = attribute_dataset(spec, path, out, batch_size=a.sst_batch_size, progress=False, target="pred")
        assert s.n_explained == N * rep and s.n_errors == 0, s

    job()   # compiles the length buckets
    t_job = timed_runs(job, a.repeats + 2)
    # the bare kernel at the job's batch size and the mean bucket length
    B, L = a.sst_batch_size, int(-(-lengths.mean() // 8) * 8)
    xb = jnp.asarray(np.random.default_rng(0).uniform(-0.5, 0.5, (B, L, 60)).astype(np.float32))
    lb = jnp.full((B,), L, jnp.int32)
    rel = jax.jit(lambda x, l: lrpjax.relevance(lambda z: model(z, l), x))
    jax.block_until_ready(rel(xb, lb))
    t_rel = timed_runs(lambda: jax.block_until_ready(rel(xb, lb)), 5)
    # the message-matrix NumPy loop (the reference's form) on evenly spaced sentences
    w64 = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    pick = np.linspace(0, N - 1, 20 if a.quick else 200).round().astype(int)
    t0 = time.perf_counter()
    for i in pick:
        bench_core.numpy_lrp_messages_per_sample(w64, x[i, :lengths[i]].astype(np.float64), 0)
    t_loop = time.perf_counter() - t0
    return {"desc": desc, "N": N * rep, "job": N * rep / t_job, "kernel": B / t_rel, "kernel_L": L,
            "loop": len(pick) / t_loop, "n_loop": len(pick)}


def timed_runs(fn, repeats: int) -> float:
    best = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best.append(time.perf_counter() - t0)
    return min(best)


def main(argv=None) -> int:
    a = parse_args(argv)
    t_start = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="lrpjax-bench-pipeline-")
    try:
        data = os.path.join(tmp, "data.npz")
        make_input(data, a.n, a.T, a.F)
        spec = free_model(a.F)
        W = np.asarray(np.random.default_rng(1).standard_normal((a.F, 3)).astype(np.float32))

        def job():
            out = os.path.join(tmp, "job")
            shutil.rmtree(out, ignore_errors=True)
            s = attribute_dataset(spec, data, out, shard_size=a.shard_size, batch_size=a.batch_size,
                                  progress=False, target="pred")
            assert s.n_explained == a.n, s

        def loop():
            out = os.path.join(tmp, "loop")
            shutil.rmtree(out, ignore_errors=True)
            os.makedirs(out)
            numpy_pyarrow_loop(data, out, a.shard_size, W)

        job()   # warm-up: compilations (one per bucket length) are not what this measures
        t_job, t_loop = timed_runs(job, a.repeats), timed_runs(loop, a.repeats)
        # the loop's results equal the job's (same rows, same relevance)
        got = lrpjax.jobs.read_results(os.path.join(tmp, "job")).sort_by("index")
        want = pq.read_table(os.path.join(tmp, "loop")).sort_by("index")
        np.testing.assert_array_equal(got.column("index").to_numpy(), want.column("index").to_numpy())
        np.testing.assert_allclose(got.column("relevance").combine_chunks().flatten().to_numpy(),
                                   want.column("relevance").combine_chunks().flatten().to_numpy(),
                                   rtol=1e-5, atol=1e-5)
        r_job, r_loop = a.n / t_job, a.n / t_loop
        sst = sst_rows(a, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    cmd = "cd " + shlex.quote(REPO) + " && PYTHONPATH=. " + " ".join(
        shlex.quote(s) for s in [sys.executable, "scripts/bench_pipeline.py", *sys.argv[1:]])
    print("lrpjax job pipeline benchmark" + ("  [--quick: smoke test, numbers not meaningful]" if a.quick else ""))
    print(f"devices: {jax.devices()}  jax {jax.__version__}  pyarrow {pa.__version__}  numpy {np.__version__}"
          f"  python {platform.python_version()}  cpus {os.cpu_count()}")
    print(f"free model, .npz input N={a.n}, T={a.T}, F={a.F}, lengths U[1, T], shard_size={a.shard_size}, "
          f"batch_size={a.batch_size}; best of {a.repeats} runs after a warm-up")
    print(f"  NumPy + pyarrow loop (one thread):   {r_loop:12,.0f} examples/s")
    print(f"  lrpjax.attribute_dataset:            {r_job:12,.0f} examples/s")
    ratio = r_job / r_loop
    print(f"  ratio job / loop: {ratio:.2f} (goal >= 0.8: {'met' if ratio >= 0.8 else 'NOT met'})")
    print()
    print(f"SST-5 test set, LRP (gate all), job on an .npz of embedded sentences, batch_size "
          f"{a.sst_batch_size}: {sst['desc']}")
    print(f"  lrpjax.attribute_dataset:               {sst['job']:10,.0f} sentences/s (all {sst['N']}, best of "
          f"{a.repeats + 2} runs, compiled)")
    print(f"  bare jitted relevance, B={a.sst_batch_size}, T={sst['kernel_L']}:  {sst['kernel']:10,.0f} "
          f"sentences/s  (job = {100 * sst['job'] / sst['kernel']:.0f} % of the kernel)")
    print(f"  message-matrix NumPy loop (float64):    {sst['loop']:10,.1f} sentences/s ({sst['n_loop']} "
          f"evenly spaced sentences; the reference's form)")
    goal = 150 / LOOP_OVER_REFERENCE
    ratio = sst['job'] / sst['loop']
    print(f"  the reference ran {REFERENCE_SPS:.0f} sentences/s on the issue's 2-core machine, where this loop "
          f"ran {350:.0f}/s ({LOOP_OVER_REFERENCE:.1f}x): 150x the reference = {goal:.0f}x this loop")
    print(f"  job / message-matrix loop: {ratio:.0f}x = about {ratio * LOOP_OVER_REFERENCE:.0f}x the reference "
          f"(goal >= {goal:.0f}x the loop: {'met' if ratio >= goal else 'NOT met'})")
    print(f"total wall time {time.perf_counter() - t_start:.0f} s")
    print(f"reproduce: {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
