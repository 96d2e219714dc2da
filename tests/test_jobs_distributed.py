"""Dataset jobs run by several processes (``attribute_dataset(process_index=, process_count=)``,
``lrpjax attribute --distributed``).

Two ``lrpjax attribute --distributed`` processes on 127.0.0.1 (CPU, jax.distributed, 2 devices each)
write exactly the single-process output; re-running resumes; process 0 alone refuses changed settings;
a failing process stops the other. Without jax.distributed, explicit process indices run one after
another. Locks per process, foreign shards not validated, misuse errors.
"""
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pyarrow.parquet as pq
import pytest

import jobs_models as m
from conftest import ROOT
from lrpjax import cli, jobs
from lrpjax.jobs import JobError, ModelSpec, attribute_dataset, read_errors, read_results

MODELS = Path(__file__).resolve().parent / "jobs_models.py"
N, T, SHARD, BATCH = 23, 12, 5, 4        # 5 shards: process 0 writes 0, 2, 4; process 1 writes 1, 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """23 examples (lengths 1..12: buckets 8 and 16) with ids 100.., a NaN example (index 6, shard 1)
    and a duplicate (index 18, shard 3) of the id of index 2 (shard 0, the other process's)."""
    d = tmp_path_factory.mktemp("dist_data")
    x, lengths, labels = m.float_data(N, T, 3, seed=4, choices=[1, 3, 8, 12])
    x[6, 0, 1] = np.nan
    ids = np.arange(100, 100 + N)
    ids[18] = ids[2]
    np.savez(d / "d.npz", x=x, lengths=lengths, labels=labels, ids=ids)
    return d / "d.npz"


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The single-process output (in this process: 8 devices)."""
    out = tmp_path_factory.mktemp("dist_ref") / "ref"
    s = attribute_dataset(m.float_spec(), data, out, shard_size=SHARD, batch_size=BATCH, progress=False)
    assert (s.n_examples, s.n_errors, s.n_shards) == (N, 2, 5)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra):
    e = {k: v for k, v in os.environ.items()
         if k not in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAX_ENABLE_X64",
                      "LRPJAX_SYNC")}
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), e.get("PYTHONPATH")) if p)
    e.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2", **extra)
    return e


def run_two(data, out, per_process=((), ()), model=f"{MODELS}:float_spec", timeout=120, **env):
    """Run ``lrpjax attribute --distributed`` as processes 0 and 1 on 127.0.0.1; [(rc, stdout, stderr)]."""
    port = _free_port()
    procs = []
    for i, extra in enumerate(per_process):
        cmd = [sys.executable, "-m", "lrpjax.cli", "attribute", "--model", model, "--data", str(data),
               "--out", str(out), "--shard-size", str(SHARD), "--batch-size", str(BATCH), "--progress",
               "none", "--distributed", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
               "--process-id", str(i), "--init-timeout", "60", *extra]
        procs.append(subprocess.Popen(cmd, env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, cwd=ROOT))
    deadline, results = time.monotonic() + timeout, []
    try:
        for p in procs:
            so, se = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((p.returncode, so, se))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


def _writer(path) -> int:
    return int(pq.read_metadata(path).metadata[b"lrpjax.process"])


def assert_same_output(out, ref):
    got, exp = read_results(out).to_pylist(), read_results(ref).to_pylist()
    assert [r["index"] for r in got] == [r["index"] for r in exp]
    for a, b in zip(got, exp):
        for k in ("id", "label", "length", "target"):
            assert a[k] == b[k], (k, a["index"])
        np.testing.assert_allclose(a["relevance"], b["relevance"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a["score"], b["score"], rtol=1e-5, atol=1e-6)
    assert read_errors(out).to_pylist() == read_errors(ref).to_pylist()
    man, man_ref = (json.loads((d / "manifest.json").read_text()) for d in (Path(out), Path(ref)))
    assert man["status"] == "complete" and man["job_key"] == man_ref["job_key"]
    assert {k: man["counts"][k] for k in ("examples", "explained", "errors", "shards")} == \
        {k: man_ref["counts"][k] for k in ("examples", "explained", "errors", "shards")}


@pytest.fixture(scope="module")
def dist(data, tmp_path_factory):
    """The output of two --distributed processes, and their (rc, stdout, stderr)."""
    out = tmp_path_factory.mktemp("dist") / "out"
    t0 = time.perf_counter()
    results = run_two(data, out)
    for i, (rc, so, se) in enumerate(results):
        assert rc == 0, f"process {i}: {se[-3000:]}"
    return out, results, time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------
# jax.distributed: two processes of the command line

def test_two_processes_write_the_single_process_output(dist, reference):
    out, results, _ = dist
    for i, (_, so, _) in enumerate(results):
        assert f"process {i} of 2: " in so
        assert f"job complete: {N} examples ({N - 2} explained, 2 errors) in 5 shard(s)" in so
    assert "3 shard(s) written, 0 skipped" in results[0][1] and "2 shard(s) written" in results[1][1]
    parts = sorted(out.glob("part-*.parquet"))
    errs = sorted(out.glob("shard-errors/errors-*.parquet"))
    assert len(parts) == len(errs) == 5
    writers = [_writer(p) for p in parts]
    assert writers == [k % 2 for k in range(5)] == [_writer(e) for e in errs]   # one writer per shard
    assert set(writers) == {0, 1}
    assert_same_output(out, reference)
    errors = read_errors(out).to_pylist()
    assert [(e["index"], e["id"]) for e in errors] == [(6, 106), (18, 102)]    # NaN; duplicate of shard 0
    assert errors[1]["reason"] == "duplicate id 102"
    man = json.loads((out / "manifest.json").read_text())
    assert man["counts"] == {"examples": N, "explained": N - 2, "errors": 2, "shards": 5,
                             "shards_written": 5, "shards_skipped": 0}
    run = man["last_run"]
    assert run["processes"] == 2 and run["coordination"] == "jax.distributed (coordination service)"
    assert [(e["process"], e["shards_written"], e["examples"], e["errors"]) for e in run["by_process"]] == \
        [(0, 3, 13, 0), (1, 2, 10, 2)]
    assert man["processes"]["count"] == 2
    assert not list(out.glob(".*.tmp"))
    assert sorted(f.name for f in out.glob(".lock-*")) == [".lock-p0", ".lock-p1"]     # never removed


def test_rerun_resumes_with_the_collectives_fallback(dist, data, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(dist[0], out)
    results = run_two(data, out, LRPJAX_SYNC="collectives")
    for i, (rc, so, se) in enumerate(results):
        assert rc == 0, f"process {i}: {se[-3000:]}"
    assert "0 shard(s) written, 3 skipped" in results[0][1]
    assert "0 shard(s) written, 2 skipped" in results[1][1]
    assert all(f"job complete: {N} examples" in so for _, so, _ in results)
    man = json.loads((out / "manifest.json").read_text())
    assert man["runs"] == 2 and man["last_run"]["coordination"] == "jax.distributed (collectives)"
    assert man["counts"]["shards_skipped"] == 5
    assert_same_output(out, reference)


def test_process_0_alone_refuses_changed_settings(dist, data, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(dist[0], out)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    results = run_two(data, out, per_process=(["--gate", "half"], ["--gate", "half"]))
    (rc0, _, err0), (rc1, _, err1) = results
    assert (rc0, rc1) == (2, 2), (err0[-2000:], err1[-2000:])
    assert "gate: 'all' -> 'half'" in err0 and "Traceback" not in err0
    assert "process 0 of 2 failed, so process 1 stopped too" in err1 and "gate: 'all' -> 'half'" in err1
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")} == before
    assert json.loads((out / "manifest.json").read_text())["job"]["options"]["gate"] == "all"


def test_a_failing_process_stops_the_other(data, tmp_path):
    out = tmp_path / "out"
    results = run_two(data, out, per_process=([], ["--model", f"{MODELS}:broken"]))   # no hang (timeout)
    (rc0, _, err0), (rc1, _, err1) = results
    assert (rc0, rc1) == (2, 2), (err0[-2000:], err1[-2000:])
    assert "failed: RuntimeError: checkpoint missing" in err1
    assert "process 1 of 2 failed, so process 0 stopped too" in err0 and "checkpoint missing" in err0
    assert "run all processes again to resume" in err0
    # process 0 set up the directory and may have written some of its shards, never a complete job
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    assert not (out / "errors.parquet").exists()


# ----------------------------------------------------------------------------------------------
# Without jax.distributed: explicit process indices

def test_explicit_processes_one_after_another(data, reference, tmp_path, monkeypatch):
    out = tmp_path / "out"
    kw = dict(shard_size=SHARD, batch_size=BATCH, progress=False, process_count=2)
    monkeypatch.setattr(jobs, "WAIT_FOR_PROCESS_0_S", 0.3)
    with pytest.raises(JobError, match=r"process 1 of 2 waited 0.3 s for process 0 to set up .*found none"):
        attribute_dataset(m.float_spec(), data, out, process_index=1, **kw)
    assert not list(out.glob("part-*")) and not (out / "manifest.json").exists()

    s0 = attribute_dataset(m.float_spec(), data, out, process_index=0, **kw)
    assert (s0.complete, s0.n_shards_written, s0.process_examples, s0.process_errors) == (False, 3, 13, 0)
    assert (s0.n_examples, s0.n_shards, s0.process_index, s0.process_count) == (N, 5, 0, 2)
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    assert not (out / "errors.parquet").exists()

    s1 = attribute_dataset(m.float_spec(), data, out, process_index=1, **kw)
    assert (s1.complete, s1.n_shards_written, s1.process_examples, s1.process_errors) == (True, 2, 10, 2)
    assert (s1.n_examples, s1.n_errors, s1.n_explained) == (N, 2, N - 2)
    assert [_writer(p) for p in sorted(out.glob("part-*.parquet"))] == [0, 1, 0, 1, 0]
    assert_same_output(out, reference)
    run = json.loads((out / "manifest.json").read_text())["last_run"]
    assert run["finalized_by"] == 1 and run["coordination"] == "independent processes (no jax.distributed)"

    again = attribute_dataset(m.float_spec(), data, out, process_index=0, **kw)   # resumes, completes
    assert (again.complete, again.n_shards_written, again.n_shards_skipped, again.n_errors) == (True, 0, 3, 2)
    one = attribute_dataset(m.float_spec(), data, out, shard_size=SHARD, progress=False)  # one process
    assert (one.n_shards_written, one.n_shards_skipped, one.process_count) == (0, 5, 1)
    assert_same_output(out, reference)


def test_foreign_shards_are_not_validated(tmp_path):
    data = tmp_path / "reviews.txt"
    data.write_text("\n".join(m.SENTENCES) + "\n")
    seen = []

    def tokenizer(text):
        seen.append(text)
        return m.tokenize(text)

    spec = ModelSpec(m.text_apply(), name="text-lstm", tokenizer=tokenizer, vocab=m.VOCAB, unk_id=1)
    kw = dict(shard_size=2, progress=False, process_count=2)
    attribute_dataset(spec, data, tmp_path / "o", process_index=0, **kw)
    seen.clear()
    s = attribute_dataset(spec, data, tmp_path / "o", process_index=1, **kw)
    assert s.complete and s.n_shards_written == 2
    # process 1 owns shards 1 and 3 (lines 2, 3, 6, 7); line 0 only for the probe batch
    assert sorted(seen) == sorted(m.SENTENCES[i] for i in (0, 2, 3, 6, 7))


# ----------------------------------------------------------------------------------------------
# Locks and misuse

def _hold(path: Path, mode):
    f = open(path, "a+")
    fcntl.flock(f.fileno(), mode | fcntl.LOCK_NB)
    return f


def test_locks_per_process(data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    kw = dict(shard_size=SHARD, progress=False)
    with _hold(out / ".lock-p1", fcntl.LOCK_EX):           # a process 1 is running
        with pytest.raises(JobError, match="another process 1 of an attribution job is writing"):
            attribute_dataset(m.float_spec(), data, out, process_index=1, process_count=2, **kw)
    with _hold(out / ".lock", fcntl.LOCK_SH):              # processes of a multi-process job are running
        with pytest.raises(JobError, match="another attribution job is writing"):
            attribute_dataset(m.float_spec(), data, out, **kw)
        assert (out / ".lock").exists()                     # the refused job leaves their lock alone
    with _hold(out / ".lock", fcntl.LOCK_EX):              # a single-process job is running
        with pytest.raises(JobError, match="a single-process attribution job is writing"):
            attribute_dataset(m.float_spec(), data, out, process_index=0, process_count=2, **kw)
    assert not list(out.glob("part-*"))


@pytest.mark.parametrize("kw, expect", [
    (dict(process_index=2, process_count=2), r"process_index must be an int in \[0, 2\)"),
    (dict(process_index=-1, process_count=2), r"process_index must be an int in \[0, 2\)"),
    (dict(process_index=0), "give both process_index and process_count"),
    (dict(process_index=0, process_count=0), "process_count must be a positive int"),
])
def test_bad_process_index(kw, expect, data, tmp_path):
    with pytest.raises(JobError, match=expect):
        attribute_dataset(m.float_spec(), data, tmp_path / "o", progress=False, **kw)
    assert not (tmp_path / "o").exists()


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_cli_misuse(data, tmp_path, capsys):
    base = ["attribute", "--model", f"{MODELS}:float_spec", "--data", str(data), "--out", str(tmp_path / "o"),
            "--progress", "none"]
    assert cli.main(base + ["--num-processes", "2", "--process-id", "1"]) == 2
    assert _one_line_error(capsys).endswith("--num-processes, --process-id only apply to several processes: "
                                            "add --distributed.")
    jax.devices()               # this process already uses JAX: too late for jax.distributed.initialize
    assert cli.main(base + ["--distributed", "--coordinator", "127.0.0.1:1", "--num-processes", "2",
                            "--process-id", "0"]) == 2
    err = _one_line_error(capsys)
    assert "--distributed: jax.distributed.initialize(coordinator_address='127.0.0.1:1', num_processes=2, " \
           "process_id=0) failed: RuntimeError" in err and "before any JAX calls" in err
    assert "same --coordinator HOST:PORT" in err
    with pytest.raises(SystemExit) as e:
        cli.main(base + ["--distributed", "--coordinator", "nohost"])
    assert e.value.code == 2 and "must be HOST:PORT" in capsys.readouterr().err
    # a process of its own: nothing says where the coordinator is
    p = subprocess.run([sys.executable, "-m", "lrpjax.cli", *base, "--distributed"], env=_env(), cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert re.fullmatch(r"lrpjax attribute: error: --distributed: jax\.distributed\.initialize\("
                        r"coordinator_address=None, num_processes=None, process_id=None\) failed: ValueError: "
                        r"coordinator_address should be defined; check that every process gets the same "
                        r"--coordinator HOST:PORT .*JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID.*",
                        p.stderr.strip()), p.stderr
    p = subprocess.run([sys.executable, "-m", "lrpjax.cli", *base, "--distributed"], cwd=ROOT,
                       env=_env(JAX_NUM_PROCESSES="two"), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "JAX_NUM_PROCESSES='two' must be an integer >= 1" in p.stderr


def test_help_documents_the_distributed_flags(capsys):
    with pytest.raises(SystemExit):
        cli.main(["attribute", "--help"])
    out = capsys.readouterr().out
    for s in ("--distributed", "--coordinator HOST:PORT", "--num-processes N", "--process-id I",
              "--init-timeout", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
              "--coordinator 127.0.0.1:12345 --num-processes 2 --process-id 0 &",
              "--coordinator 127.0.0.1:12345 --num-processes 2 --process-id 1", "k % N == I"):
        assert s in out, s

