"""Dataset-wide attribution benchmark: ``lrpjax.attribute_dataset`` on the SST-5 test set.

Prints one table from one run:

* ``attribute_dataset`` with ``method="lrp"`` (gate "all") over the 2,210 SST test sentences with the
  released reference BiLSTM (e = d = 60, 5 classes; embeddings from a seeded random table, since the
  release has none): wall time including compilation, the compilation time inside it (JAX's own
  trace / lowering / XLA-compile time spans, merged), wall time minus that, examples/s, the number of
  compilations the job reports, and the process's peak RSS after the job. Run twice, each time into a
  fresh output directory (run 1 compiles its length buckets; run 2 reuses the jitted step, which
  ``attribute_dataset`` caches across calls), then once over the sentences repeated 10 times.
* the same job with ``method="gradient_x_input"`` (plain gradient x input, same pipeline; goal: LRP no
  slower);
* two per-sample NumPy LRP loops of ``scripts/bench_core.py`` (float64) on an evenly spaced subset of
  the sentences: ``numpy_lrp_per_sample`` (matrix-vector products per step, the fastest form we could
  write) and ``numpy_lrp_messages_per_sample`` (explicit message matrices per linear layer, the form
  of per-sentence research code); the job's speed-up over each (goal >= 50x), and a check that all
  compute the same relevance;
* memory vs dataset size: ``attribute_dataset`` in a fresh subprocess on 10,000 and on 200,000
  generated sequences (a small LSTM, lengths 10..40, streamed lazily from a Python iterable), each
  subprocess's peak RSS (``VmHWM``; see :func:`vm_hwm_kib`).

Usage (from the repository root)::

    PYTHONPATH=. python scripts/bench_attribute.py            # full run (~1 min on 2 CPU cores)
    PYTHONPATH=. python scripts/bench_attribute.py --quick    # smoke test (~20 s): 100 sentences, 2k / 10k
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "scripts"))

DEFAULT_DATA = os.path.join("..", "shared", "data", "sst_bilstm_li2016")
EMB_SEED = 2017          # the seeded random embedding table of tests/test_arras.py
E = 60                   # the reference model's embedding size


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=256, help="attribute_dataset batch_size (default 256)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 100 sentences, 20 for NumPy, memory check on 2k and 10k sequences")
    p.add_argument("--data", default=DEFAULT_DATA,
                   help="folder with vocab.txt and sequence_test.txt (relative to the repo root unless "
                        "absolute); random sentences are used if absent")
    p.add_argument("--weights", default=None,
                   help="reference weights .npz (default: DATA/weights.npz); random weights of the same "
                        "shapes are used if absent")
    p.add_argument("--repeat", type=int, default=None,
                   help="extra job rows over the sentences repeated this many times (default 10, quick 3)")
    p.add_argument("--numpy-samples", type=int, default=None,
                   help="sentences for the NumPy per-sample loop (default 200, quick 20)")
    p.add_argument("--mem-sizes", default=None,
                   help="comma-separated dataset sizes for the memory check (default 10000,200000; "
                        "quick 2000,10000)")
    p.add_argument("--mem-batch-size", type=int, default=1024,
                   help="batch_size of the memory-check jobs (default 1024)")
    p.add_argument("--_mem-child", dest="mem_child", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.repeat is None:
        a.repeat = 3 if a.quick else 10
    if a.numpy_samples is None:
        a.numpy_samples = 20 if a.quick else 200
    if a.mem_sizes is None:
        a.mem_sizes = "2000,10000" if a.quick else "10000,200000"
    a.mem_sizes = [int(s) for s in a.mem_sizes.split(",") if s.strip()]
    return a


def _abs(path: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(REPO, path))


def peak_rss_kib() -> int:
    """Peak resident set size of this process so far (``ru_maxrss``: KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def vm_hwm_kib() -> int:
    """Peak RSS of this process's own address space (``VmHWM`` of /proc/self/status, KiB), else
    ``ru_maxrss``.

    A subprocess needs this: on Linux its ``ru_maxrss`` starts from the parent's high-water mark
    (carried over fork + exec), so it would report the benchmark process's peak, not its own.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return peak_rss_kib()


# ---- memory check: runs in a fresh subprocess ---------------------------------------------------

class GeneratedSequences:
    """``n`` random sequences ``(L, F)``, L in 10..40, generated lazily in blocks (never all in memory)."""

    def __init__(self, n: int, features: int = 8, seed: int = 0, block: int = 4096):
        self.n, self.features, self.seed, self.block = n, features, seed, block

    def __len__(self):
        return self.n

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        for start in range(0, self.n, self.block):
            m = min(self.block, self.n - start)
            lengths = rng.integers(10, 41, m)
            labels = rng.integers(0, 4, m)
            x = rng.normal(size=(m, 40, self.features)).astype(np.float32)
            for j in range(m):
                yield {"x": x[j, :lengths[j]], "label": int(labels[j])}


def mem_child(n: int, batch_size: int) -> int:
    """Explain ``n`` generated sequences with a small LSTM; print one JSON line with the peak RSS."""
    import jax
    import lrpjax

    k1, k2 = jax.random.split(jax.random.key(0))
    params, W = lrpjax.init_lstm(k1, 8, 16), jax.random.normal(k2, (16, 4))

    def apply(x, lengths):
        _, (_, h) = lrpjax.lstm(params, x, lengths=lengths)
        return lrpjax.dense(h, W)

    spec = lrpjax.ModelSpec(apply, name="bench-mem-lstm (8 -> 16, 4 classes)", features=8)
    rss_before = vm_hwm_kib()
    with tempfile.TemporaryDirectory(prefix="lrpjax-bench-mem-") as tmp:
        s = lrpjax.attribute_dataset(spec, GeneratedSequences(n), os.path.join(tmp, "attr"),
                                     batch_size=batch_size, progress=False)
        rss_after = vm_hwm_kib()
    print(json.dumps({"n": n, "explained": s.n_explained, "errors": s.n_errors, "seconds": s.seconds,
                      "examples_per_second": s.examples_per_second, "compilations": s.compilations,
                      "shards": s.n_shards_written, "rss_before_kib": rss_before,
                      "peak_rss_kib": rss_after}))
    return 0


def run_mem_child(n: int, batch_size: int) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, os.path.abspath(__file__), "--_mem-child", str(n),
           "--mem-batch-size", str(batch_size)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"memory-check subprocess (n={n}) failed with status {proc.returncode}:\n"
                           f"{proc.stdout}\n{proc.stderr}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["process_seconds"] = time.perf_counter() - t0
    return res


# ---- the SST data ---------------------------------------------------------------------------------

def load_sst(data_dir: str, quick: bool):
    """(token id lists, labels, n_vocab, description); random sentences if the files are absent."""
    vocab_p, sent_p = os.path.join(data_dir, "vocab.txt"), os.path.join(data_dir, "sequence_test.txt")
    if os.path.exists(vocab_p) and os.path.exists(sent_p):
        with open(vocab_p, encoding="utf-8") as f:
            vocab = f.read().split("\n")[:-1]
        index = {w: i for i, w in enumerate(vocab)}
        ids, labels = [], []
        with open(sent_p, encoding="utf-8") as f:
            for line in f.read().split("\n"):
                if not line:
                    continue
                label, text = line.split("\t", 1)
                ids.append([index[t] for t in text.split(" | ")])
                labels.append(int(label) - 1)
        desc = f"SST-5 test sentences {sent_p} (vocabulary {len(vocab)} tokens)"
        n_vocab = len(vocab)
    else:
        rng = np.random.default_rng(0)
        n_vocab = 20000
        ids = [list(rng.integers(0, n_vocab, int(L))) for L in rng.integers(2, 50, 2210)]
        labels = [int(v) for v in rng.integers(0, 5, 2210)]
        desc = (f"RANDOM sentences (2210, lengths 2..49, vocabulary {n_vocab}; {sent_p} or {vocab_p} not "
                f"found) -- numbers are not for the SST test set")
    if quick:  # evenly spaced: the file is ordered by length
        keep = np.linspace(0, len(ids) - 1, 100).round().astype(int)
        ids, labels = [ids[i] for i in keep], [labels[i] for i in keep]
    return ids, labels, n_vocab, desc


# ---- compilation time, from JAX's own monitoring spans ------------------------------------------

_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_spans: list = []


def _on_span(event, start, end, **kwargs):
    if event in _COMPILE_EVENTS:
        _spans.append((start, end))


def union_seconds(spans) -> float:
    """Length of the union of ``(start, end)`` intervals (nested traces are counted once)."""
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(spans):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.mem_child is not None:
        return mem_child(a.mem_child, a.mem_batch_size)
    t_start = time.perf_counter()

    import jax
    import jaxlib
    import pyarrow
    import lrpjax
    import bench_core  # scripts/bench_core.py: weights loader and the per-sample NumPy LRP

    jax.monitoring.register_event_time_span_listener(_on_span)

    data_dir = _abs(a.data)
    weights_path = _abs(a.weights) if a.weights else os.path.join(data_dir, "weights.npz")
    weights, wdesc = bench_core.load_weights(weights_path, seed=0)
    weights = {k: np.asarray(v, np.float32) for k, v in weights.items()}
    ids, labels, n_vocab, ddesc = load_sst(data_dir, a.quick)
    emb = np.random.default_rng(EMB_SEED).uniform(-0.5, 0.5, (n_vocab, E)).astype(np.float32)
    dataset = [{"x": emb[s], "label": lab, "id": i} for i, (s, lab) in enumerate(zip(ids, labels))]
    N = len(dataset)
    lens = np.array([len(s) for s in ids])
    d = weights["Whh_Left"].shape[1]
    C = weights["Why_Left"].shape[0]

    model = lrpjax.interop.from_arras_bilstm(weights)

    def apply(x, lengths):
        return model(x, lengths)

    spec = lrpjax.ModelSpec(apply, name="arras-bilstm-sst5 (reference weights, random embeddings)",
                            features=E)

    tmp_ctx = tempfile.TemporaryDirectory(prefix="lrpjax-bench-attr-")
    tmp = tmp_ctx.name
    runs: dict = {}

    def job(key: str, method: str, model_spec, data, n_label: int):
        out = os.path.join(tmp, key)
        k = len(_spans)
        s = lrpjax.attribute_dataset(model_spec, data, out, method=method, batch_size=a.batch_size,
                                     progress=False)
        comp = union_seconds(_spans[k:])
        with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
            buckets = json.load(f)["last_run"]["bucket_lengths"]
        assert s.n_errors == 0 and s.n_explained == n_label, (s.n_errors, s.n_explained)
        runs[key] = {"summary": s, "compile": comp, "buckets": buckets, "out": out,
                     "rss_kib": peak_rss_kib()}
        return runs[key]

    # warm-up on a toy model (imports pyarrow, initialises the backend); it shares no compilation
    k1, k2 = jax.random.split(jax.random.key(1))
    toy_p, toy_W = lrpjax.init_lstm(k1, 3, 4), jax.random.normal(k2, (4, 2))
    toy = lrpjax.ModelSpec(lambda x, l: lrpjax.dense(lrpjax.lstm(toy_p, x, lengths=l)[1][1], toy_W),
                           name="toy", features=3)
    job("warmup", "lrp", toy, [np.ones((5, 3), np.float32)], 1)

    # interleaved, so that neither method is favoured by running second
    job("lrp1", "lrp", spec, dataset, N)
    rss_after_lrp = peak_rss_kib()
    job("grad1", "gradient_x_input", spec, dataset, N)
    job("lrp2", "lrp", spec, dataset, N)
    job("grad2", "gradient_x_input", spec, dataset, N)
    # the same sentences repeated (new ids): the same compilations amortised over REPEAT x the work,
    # several shards, so that the host/device overlap of the pipeline is exercised
    repeated = [{"x": ex["x"], "label": ex["label"], "id": r * N + i}
                for r in range(a.repeat) for i, ex in enumerate(dataset)]
    job("lrpR", "lrp", spec, repeated, a.repeat * N)
    job("gradR", "gradient_x_input", spec, repeated, a.repeat * N)

    # the per-sample NumPy loop on an evenly spaced subset, explaining the job's targets
    table = lrpjax.jobs.read_results(runs["lrp1"]["out"], columns=["index", "target", "relevance"])
    assert table.column("index").to_pylist() == list(range(N))
    targets = table.column("target").to_numpy()
    n_np = min(a.numpy_samples, N)
    subset = np.linspace(0, N - 1, n_np).round().astype(int)
    w64 = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    xs = [dataset[i]["x"].astype(np.float64) for i in subset]
    t0 = time.perf_counter()
    R_np = [bench_core.numpy_lrp_per_sample(w64, x, int(targets[i])) for x, i in zip(xs, subset)]
    t_np = time.perf_counter() - t0
    np_rate = n_np / t_np
    t0 = time.perf_counter()
    R_msg = [bench_core.numpy_lrp_messages_per_sample(w64, x, int(targets[i])) for x, i in zip(xs, subset)]
    t_msg = time.perf_counter() - t0
    msg_rate = n_np / t_msg
    rel = table.column("relevance")
    diff = max(float(np.max(np.abs(np.asarray(rel[int(i)].as_py()) - R.sum(-1))) / np.max(np.abs(R)))
               for R, i in zip(R_np, subset))
    diff_msg = max(float(np.max(np.abs(A - B)) / np.max(np.abs(A))) for A, B in zip(R_np, R_msg))

    # memory vs dataset size, each in a fresh process
    mem = [run_mem_child(n, a.mem_batch_size) for n in a.mem_sizes]
    tmp_ctx.cleanup()

    # ---- report ---------------------------------------------------------------------------------
    out_lines = []
    say = out_lines.append
    cmd = "cd " + shlex.quote(REPO) + " && PYTHONPATH=. " + " ".join(
        shlex.quote(s) for s in [sys.executable, "scripts/bench_attribute.py", *(argv if argv is not None
                                                                                else sys.argv[1:])])
    mib = lambda kib: kib / 1024.0
    say("lrpjax dataset-wide attribution benchmark"
        + ("  [--quick: smoke test, numbers not meaningful]" if a.quick else ""))
    say(f"devices: {jax.devices()} (backend {jax.default_backend()})  jax {jax.__version__}  jaxlib "
        f"{jaxlib.__version__}  numpy {np.__version__}  pyarrow {pyarrow.__version__}  python "
        f"{platform.python_version()}  cpus {os.cpu_count()}")
    say(f"model: {wdesc}; BiLSTM e={E} d={d} C={C}, float32; ModelSpec.apply = "
        f"from_arras_bilstm(weights)(x, lengths)")
    say(f"data: {ddesc}; {N} sentences, lengths {lens.min()}..{lens.max()} (mean {lens.mean():.1f}), "
        f"embedded with U(-0.5, 0.5) table (seed {EMB_SEED}, float32), an in-memory list of dicts")
    say(f"job: attribute_dataset(batch_size={a.batch_size}, bucket_step=8, shard_size=4096, "
        f"target='pred', eps=1e-3, bias_factor=0, gate='all'), progress off, each run into a fresh out "
        f"dir; a toy-model job ran first (imports, backend start-up)")
    say("compile s = JAX trace + lowering + XLA compile time spans inside the job (merged); "
        "excl. = wall - compile s; peak RSS: ru_maxrss of this process after the row, VmHWM of the "
        "memory-check subprocess")
    say("")
    hdr = (f"{'row':<52} {'n':>7} {'wall s':>7} {'compile s':>9} {'excl. s':>7} {'ex/s':>8} "
           f"{'ex/s excl.':>10} {'compil.':>7} {'peak RSS MiB':>12}")
    say(hdr)
    say("-" * len(hdr))
    names = {"lrp1": 'attribute_dataset method="lrp", run 1 (cold)',
             "grad1": 'attribute_dataset method="gradient_x_input", run 1',
             "lrp2": 'attribute_dataset method="lrp", run 2 (step cached)',
             "grad2": 'attribute_dataset method="gradient_x_input", run 2',
             "lrpR": f'attribute_dataset method="lrp", sentences x{a.repeat}',
             "gradR": f'attribute_dataset method="gradient_x_input", x{a.repeat}'}
    for key in ("lrp1", "lrp2", "grad1", "grad2", "lrpR", "gradR"):
        r = runs[key]
        s = r["summary"]
        excl = s.seconds - r["compile"]
        say(f"{names[key]:<52} {s.n_explained:>7} {s.seconds:>7.2f} {r['compile']:>9.2f} {excl:>7.2f} "
            f"{s.n_explained / s.seconds:>8.0f} {s.n_explained / excl:>10.0f} {s.compilations:>7} "
            f"{mib(r['rss_kib']):>12.0f}")
    say(f"{'NumPy per-sample LRP, matrix-vector (float64)':<52} {n_np:>7} {t_np:>7.2f} {'-':>9} "
        f"{'-':>7} {np_rate:>8.1f} {'-':>10} {'-':>7} {'-':>12}")
    say(f"{'NumPy per-sample LRP, message matrices (float64)':<52} {n_np:>7} {t_msg:>7.2f} {'-':>9} "
        f"{'-':>7} {msg_rate:>8.1f} {'-':>10} {'-':>7} {'-':>12}")
    for r in mem:
        name = f"memory: {r['n']:,} generated seqs (subprocess)"
        say(f"{name:<52} {r['explained']:>7} {r['seconds']:>7.2f} {'-':>9} {'-':>7} "
            f"{r['examples_per_second']:>8.0f} {'-':>10} {r['compilations']:>7} "
            f"{mib(r['peak_rss_kib']):>12.0f}")
    say("-" * len(hdr))

    def excl_rate(key):
        s = runs[key]["summary"]
        return s.n_explained / (s.seconds - runs[key]["compile"])

    def ratio_line(k_lrp, k_grad, label):
        sl, sg = runs[k_lrp]["summary"], runs[k_grad]["summary"]
        r_incl = sl.seconds / sg.seconds
        r_excl = (sl.seconds - runs[k_lrp]["compile"]) / (sg.seconds - runs[k_grad]["compile"])
        ok = lambda r: "met" if r <= 1.0 else "NOT met"
        return (f"{label}: {r_incl:.2f} incl. compilation ({ok(r_incl)}), {r_excl:.2f} excl. "
                f"({ok(r_excl)})")

    say("goal LRP job no slower than the gradient job (wall time ratio lrp / gradient <= 1.0):")
    say("  " + ratio_line("lrp1", "grad1", "run 1"))
    say("  " + ratio_line("lrp2", "grad2", "run 2"))
    say("  " + ratio_line("lrpR", "gradR", f"sentences repeated {a.repeat}x"))
    best_incl = max(runs[k]["summary"].n_explained / runs[k]["summary"].seconds for k in ("lrp1", "lrp2"))
    best_excl = max(excl_rate(k) for k in ("lrp1", "lrp2"))
    lrp1 = runs["lrp1"]["summary"]
    sp_incl1 = lrp1.n_explained / lrp1.seconds / np_rate
    ok = lambda r: "met" if r >= 50 else "NOT met"
    sR = runs["lrpR"]["summary"]
    s2 = runs["lrp2"]["summary"]
    grad2 = runs["grad2"]["summary"]
    for label, rate in (("matrix-vector", np_rate), ("message-matrix", msg_rate)):
        sp_R_incl, sp_R_excl = sR.n_explained / sR.seconds / rate, excl_rate("lrpR") / rate
        say(f"goal LRP job >= 50x the per-sample NumPy loop, {label} form ({n_np} evenly spaced "
            f"sentences, mean length {lens[subset].mean():.1f}, {rate:.1f} ex/s):")
        say(f"  run 1 (cold: compiles its buckets) {sp_incl1 * np_rate / rate:.1f}x ({ok(sp_incl1 * np_rate / rate)}); "
            f"run 2 (compiled step reused) {s2.n_explained / s2.seconds / rate:.1f}x "
            f"({ok(s2.n_explained / s2.seconds / rate)}); excl. compilation best of runs 1-2 "
            f"{best_excl / rate:.1f}x ({ok(best_excl / rate)})")
        say(f"  sentences repeated {a.repeat}x: incl. compilation {sp_R_incl:.1f}x ({ok(sp_R_incl)}), "
            f"excl. compilation {sp_R_excl:.1f}x ({ok(sp_R_excl)});  for calibration, the plain-gradient "
            f"job, run 2: {grad2.n_explained / grad2.seconds / rate:.1f}x")
    say(f"  same relevance: max over the {n_np} sentences of max|R_job - R_numpy| / max|R_numpy| = "
        f"{diff:.1e} (float32 job vs float64 NumPy, per step summed over the embedding); the two NumPy "
        f"forms agree to {diff_msg:.1e}")
    say(f"compilations: run 1 {lrp1.compilations} (bucket lengths "
        f"{', '.join(map(str, runs['lrp1']['buckets']))}; bucket_step 8), run 2 {s2.compilations} "
        f"(the jitted step is cached across jobs in one process), sentences x{a.repeat} "
        f"{sR.compilations}")
    say(f"peak RSS of this process after the first LRP job: {mib(rss_after_lrp):.0f} MiB "
        f"(ru_maxrss {rss_after_lrp} KiB); at the end: {mib(peak_rss_kib()):.0f} MiB")
    if len(mem) >= 2:
        lo, hi = mem[0], mem[-1]
        grow = (hi["peak_rss_kib"] - lo["peak_rss_kib"]) * 1024.0
        say(f"memory vs dataset size (fresh subprocess each; init_lstm(8, 16) + dense -> 4 classes, lengths "
            f"10..40 streamed from a Python iterable, batch {a.mem_batch_size}, shard 4096):")
        for r in mem:
            say(f"  {r['n']:>9,} sequences: peak RSS {mib(r['peak_rss_kib']):.0f} MiB (before the job "
                f"{mib(r['rss_before_kib']):.0f} MiB), {r['shards']} shard(s), job {r['seconds']:.1f} s, "
                f"process {r['process_seconds']:.1f} s")
        say(f"  peak RSS {hi['n']:,} - {lo['n']:,}: {grow / 2**20:+.1f} MiB "
            f"({grow / (hi['n'] - lo['n']):+.0f} bytes per extra sequence; the dataset itself would be "
            f"{hi['n'] * 25 * 8 * 4 / 2**20:.0f} MiB of float32 x at the mean length 25)")
    say(f"total wall time {time.perf_counter() - t_start:.0f} s")
    say(f"reproduce: {cmd}")
    print("\n".join(out_lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
