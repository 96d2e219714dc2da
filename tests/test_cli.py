"""The ``lrpjax`` command (lrpjax/cli.py): help, kill -9 and resume, clean errors, the demo."""
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import jobs_models as m
from conftest import ROOT
from lrpjax import cli
from lrpjax.jobs import attribute_dataset, read_results

MODELS = Path(__file__).resolve().parent / "jobs_models.py"


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), e.get("PYTHONPATH")) if p)
    return e


def same_compiles_env():
    """env() with the in-process tests' XLA pipeline (conftest), for results compared to the float32
    bits of an in-process run."""
    cheap = jax.config.read("jax_disable_most_optimizations")
    return {**env(), "JAX_DISABLE_MOST_OPTIMIZATIONS": "1" if cheap else "0"}


def lrpjax_cmd(*args):
    return [sys.executable, "-m", "lrpjax.cli", *map(str, args)]


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_data")
    x, lengths, labels = m.float_data(20, 15, 3, seed=2)
    np.savez(d / "d.npz", x=x, lengths=lengths, labels=labels)
    return d / "d.npz"


def test_attribute_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["attribute", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--model", "--data", "--out", "--batch-size", "--eps", "--gate", "--bias-factor",
                "--target", "--method", "--full", "--max-length", "--shard-size", "--overwrite",
                "--model-arg", "--bucket-step", "--progress"):
        assert opt in out, opt
    assert "examples:" in out and "lrpjax attribute --model my_model.py:make" in out
    assert "string" in out and "KEY=VALUE" in out            # model args are passed as strings
    for fmt in (".npz", ".npy", ".jsonl", ".parquet", "LABEL<TAB>text"):
        assert fmt in out


def test_kill_9_and_resume_equals_an_uninterrupted_run(tmp_path):
    n, shard = 12000, 200
    x, lengths, labels = m.float_data(n, 40, 3, seed=3)
    data = tmp_path / "d.npz"
    np.savez(data, x=x, lengths=lengths, labels=labels)
    out = tmp_path / "out"
    cmd = lrpjax_cmd("attribute", "--model", f"{MODELS}:float_model", "--model-arg", "hidden=16",
                     "--data", data, "--out", out, "--shard-size", shard, "--batch-size", 64,
                     "--progress", "none")
    proc = subprocess.Popen(cmd, env=same_compiles_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    t0 = time.time()
    while not (out / "part-00000.parquet").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < 120, "no shard written in 120 s"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    parts_at_kill = sorted(out.glob("part-*.parquet"))
    assert 1 <= len(parts_at_kill) < n // shard, "the job was not interrupted"
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"

    done = subprocess.run(cmd, env=same_compiles_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    written, skipped = map(int, re.search(r"(\d+) shard\(s\) written, (\d+) skipped", done.stdout).groups())
    assert skipped == len(parts_at_kill) and written + skipped == n // shard
    assert not glob.glob(str(out / ".*.tmp")) and not glob.glob(str(out / "shard-errors" / ".*.tmp"))
    assert (out / ".lock").exists()                 # never removed (see test_job_faults.py)
    assert len(list(out.glob("part-*.parquet"))) == n // shard
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"

    attribute_dataset(m.float_model(hidden="16"), data, tmp_path / "ref", shard_size=shard, batch_size=64,
                      progress=False)
    got, ref = read_results(out), read_results(tmp_path / "ref")
    ids = got.column("id").to_pylist()
    assert ids == ref.column("id").to_pylist() == list(range(n))      # no duplicate, none missing
    a = got.column("relevance").combine_chunks().flatten().to_numpy()
    b = ref.column("relevance").combine_chunks().flatten().to_numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max())
    assert got.column("target").to_pylist() == ref.column("target").to_pylist()


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("lrpjax attribute: error: "), err
    return err


@pytest.mark.parametrize("model, data, out, expect", [
    ("{tmp}/nope.py:make", "{data}", "{tmp}/o", "model file not found"),
    ("no_such_module_xyz:make", "{data}", "{tmp}/o", "cannot import the model module"),
    ("{models}", "{data}", "{tmp}/o", "--model must be MODULE:FACTORY"),
    ("{models}:missing", "{data}", "{tmp}/o", "has no callable 'missing'"),
    ("{models}:broken", "{data}", "{tmp}/o", "failed: RuntimeError: checkpoint missing"),
    ("{models}:not_a_model", "{data}", "{tmp}/o", "must be a ModelSpec, a callable"),
    ("{models}:float_model", "{tmp}/missing.npz", "{tmp}/o", "input not found"),
    ("{models}:float_model", "{data}", "{tmp}/afile/o", "cannot create the output directory"),
    ("{models}:float_model --model-arg hidden", "{data}", "{tmp}/o", "--model-arg must be KEY=VALUE"),
    ("{models}:float_model --model-arg features=2", "{data}", "{tmp}/o", "failed on a probe batch"),
])
def test_clean_error_and_exit_2(model, data, out, expect, small_npz, tmp_path, capsys):
    (tmp_path / "afile").write_text("a file, not a directory")
    fill = lambda s: s.format(tmp=tmp_path, data=small_npz, models=MODELS)
    argv = ["attribute", "--model", *fill(model).split(), "--data", fill(data), "--out", fill(out),
            "--progress", "none"]
    assert cli.main(argv) == 2
    assert expect in _one_line_error(capsys)


def test_changed_option_refused_then_overwrite(small_npz, tmp_path, capsys):
    base = ["attribute", "--model", f"{MODELS}:float_spec", "--data", str(small_npz), "--out",
            str(tmp_path / "o"), "--progress", "none"]
    assert cli.main(base) == 0
    assert "20 examples (20 explained, 0 errors)" in capsys.readouterr().out
    assert cli.main(base + ["--gate", "half"]) == 2
    assert "gate: 'all' -> 'half'" in _one_line_error(capsys)
    assert cli.main(base + ["--gate", "half", "--overwrite"]) == 0
    assert cli.main(base + ["--gate", "half"]) == 0                   # same settings: a resume
    assert "0 shard(s) written, 1 skipped" in capsys.readouterr().out


def test_exit_status_2_from_the_process(tmp_path):
    p = subprocess.run(lrpjax_cmd("attribute", "--model", f"{MODELS}:float_model", "--data",
                                  tmp_path / "missing.jsonl", "--out", tmp_path / "o"),
                       env=env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [f"lrpjax attribute: error: input not found: "
                                             f"{tmp_path / 'missing.jsonl'}"]


def test_text_factories_and_model_args(tmp_path, capsys):
    data = tmp_path / "reviews.txt"
    data.write_text("\n".join(f"{i % 3}\t{s}" for i, s in enumerate(m.SENTENCES)) + "\n1\tzebra film\n")
    argv = ["attribute", "--data", str(data), "--progress", "none", "--target", "true"]
    assert cli.main(argv + ["--model", f"{MODELS}:text_spec", "--out", str(tmp_path / "a")]) == 0
    assert "9 examples (9 explained, 0 errors)" in capsys.readouterr().out
    assert cli.main(argv + ["--model", f"{MODELS}:text_spec", "--model-arg", "unk=none",
                            "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "9 examples (8 explained, 1 errors)" in out and "errors.parquet" in out
    # a dotted module name (tests/ is importable) and the (apply, tokenizer) tuple
    assert cli.main(argv + ["--model", "jobs_models:text_tuple", "--out", str(tmp_path / "c")]) == 0
    t = read_results(tmp_path / "c")
    assert t.column("tokens").to_pylist()[0] == [str(m.INDEX[w]) for w in m.SENTENCES[0].split()]
    man = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert man["model_name"] == "jobs_models:text_tuple()"


def test_demo_quick(tmp_path):
    p = subprocess.run(lrpjax_cmd("demo", "--quick", "--out", tmp_path / "demo"), env=env(),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    share = re.search(r"marked-position share of \|relevance\|: ([0-9.]+)", p.stdout)
    assert share is not None, p.stdout
    assert float(share.group(1)) > 0.4          # 2 of 10..30 steps are marked: chance is about 0.1
    assert re.search(r"\d+ compilations for length buckets \[16, 24, 32\]", p.stdout), p.stdout
    assert "sequences/s" in p.stdout
    mse = re.search(r"held-out MSE ([0-9.]+) \(predict-the-mean baseline ([0-9.]+)", p.stdout)
    assert float(mse.group(1)) < 0.2 * float(mse.group(2)), p.stdout
    t = read_results(tmp_path / "demo" / "attributions")
    assert t.num_rows == 2000


def test_compilation_cache_is_written_and_reused(small_npz, tmp_path):
    """--compilation-cache DIR: the first run stores its compiled buckets there, a second process
    (new output directory) reads them back and writes the same results."""
    cache = tmp_path / "xla-cache"
    for out in ("o1", "o2"):
        p = subprocess.run(lrpjax_cmd("attribute", "--model", f"{MODELS}:float_spec", "--data", small_npz,
                                      "--out", tmp_path / out, "--progress", "none",
                                      "--compilation-cache", cache),
                           env=env(), capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, p.stderr[-2000:]
        if out == "o1":
            first = sorted(f.name for f in cache.iterdir())
            assert any(name.startswith("jit_") for name in first), first
    assert sorted(f.name for f in cache.iterdir()) == first      # nothing new compiled
    a, b = read_results(tmp_path / "o1").to_pylist(), read_results(tmp_path / "o2").to_pylist()
    assert a == b
