"""The README quickstart: command (1) (`lrpjax demo`, the full job), the README block that reads its
output, the adding-task data of lrpjax.demo, and a --quick run of examples/quickstart.py."""
import glob
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import ROOT
from lrpjax import demo

README = (ROOT / "README.md").read_text(encoding="utf-8")
SCRIPT = ROOT / "examples" / "quickstart.py"


def user_env():
    """The environment of a user's shell: the repository importable, none of the suite's JAX settings."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    for k in ("XLA_FLAGS", "JAX_ENABLE_X64", "JAX_PLATFORMS"):   # conftest's 8 virtual devices
        env.pop(k, None)
    return env


def readme_command_1():
    """The shell line of Quickstart command (1)."""
    quick = README[README.index("## Quickstart"):]
    block = re.search(r"```bash\n# 1\..*?\n(.*?)\n```", quick, re.S)
    assert block is not None, "README Quickstart has no ```bash block starting with '# 1.'"
    return block.group(1).strip()


def test_readme_command_1_is_install_and_demo():
    cmd = readme_command_1()
    assert cmd == "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/lrpjax demo", cmd
    # `.venv/bin/lrpjax` is the console script of pyproject.toml: lrpjax.cli:main, as run below
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^\[project\.scripts\]\s*\nlrpjax = "lrpjax\.cli:main"', pyproject, re.M)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """README command (1) after the install: `lrpjax demo` with its defaults, in a fresh directory."""
    args = readme_command_1().split(".venv/bin/lrpjax", 1)[1].split()
    assert args == ["demo"]
    cwd = tmp_path_factory.mktemp("quickstart")
    proc = subprocess.run([sys.executable, "-m", "lrpjax.cli", *args], cwd=cwd, env=user_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return cwd, proc.stdout


def number(pattern, out):
    m = re.search(pattern, out)
    assert m is not None, f"{pattern!r} not in the output:\n{out}"
    return [float(g) for g in m.groups()]


def test_demo_summary(demo_run):
    _, out = demo_run
    mse, base = number(r"held-out MSE ([0-9.]+) \(predict-the-mean baseline ([0-9.]+), n=10000\)", out)
    assert mse < 0.02 * base                        # the LSTM solved the task
    n, shards, rate = number(r"attribute_dataset: (\d+) sequences -> (\d+) Parquet shard\(s\) in "
                             r"[0-9.]+ s \(([0-9.]+) sequences/s", out)
    assert n == 10000 and shards == 3 and rate > 0
    assert re.search(r"compilations for length buckets \[16, 24, 32\]\), 0 errors", out), out
    share, median = number(r"marked-position share of \|relevance\|: ([0-9.]+) \(mean over 10000 "
                           r"sequences; median ([0-9.]+)", out)
    assert share > 0.5 and median > 0.5             # 2 of 10..30 steps are marked: uniform gives ~0.1
    assert "output: lrpjax-demo/attributions/part-*.parquet" in out
    (total,) = number(r"total demo time: ([0-9.]+) s", out)
    assert total < 120                              # the budget on 2 CPU cores


def test_demo_parquet_output(demo_run):
    """The Parquet shards, read with pyarrow alone, hold a faithful explanation of every sequence."""
    cwd, out = demo_run
    d = cwd / "lrpjax-demo"
    table = pq.ParquetDataset(sorted(glob.glob(str(d / "attributions" / "part-*.parquet")))).read()
    assert table.num_rows == 10000
    assert table.column_names == ["index", "id", "label", "length", "target", "score", "relevance"]
    assert pq.read_table(d / "attributions" / "errors.parquet").num_rows == 0
    with np.load(d / "input.npz") as f:
        x, lengths = f["x"], f["lengths"]
    pos = np.load(d / "marked_positions.npy")
    np.testing.assert_array_equal(table.column("index").to_numpy(), np.arange(10000))
    np.testing.assert_array_equal(table.column("length").to_numpy(), lengths)
    rel = table.column("relevance").to_pylist()
    assert [len(r) for r in rel] == lengths.tolist()
    # the printed share is the one of the written output
    (printed,) = number(r"marked-position share of \|relevance\|: ([0-9.]+)", out)
    assert abs(demo.marked_share(rel, pos).mean() - printed) < 1e-3
    # relevance at a marked step follows the value it carries (the model adds the two values up) ...
    r_marked = np.array([np.asarray(r)[p] for r, p in zip(rel, pos)]).ravel()
    v_marked = np.take_along_axis(x[..., 0], pos, axis=1).ravel()
    assert np.corrcoef(r_marked, v_marked)[0, 1] > 0.9
    # ... and the relevance of a sequence adds up to most of its score (bias_factor=0 absorbs some)
    totals = np.array([sum(r) for r in rel])
    assert np.corrcoef(totals, table.column("score").to_numpy())[0, 1] > 0.9


def test_readme_reads_demo_output(demo_run):
    """The README's Python block that reads the demo's output runs where the demo wrote it."""
    cwd, _ = demo_run
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "lrpjax-demo/" in b]
    assert len(blocks) == 1
    proc = subprocess.run([sys.executable, "-c", blocks[0]], cwd=cwd, env=user_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    n, length, score, share = proc.stdout.split()
    assert n == "10000" and 10 <= int(length) <= 30 and 0.0 <= float(share) <= 1.0


def test_adding_task_targets_markers_lengths():
    T, min_len = 20, 5
    x, lengths, y, pos = (np.asarray(a) for a in demo.adding_task(jax.random.key(3), 500, T, min_len))
    assert x.shape == (500, T, 2) and x.dtype == np.float32 and y.shape == (500,)
    assert lengths.dtype == np.int32 and lengths.min() >= min_len and lengths.max() <= T
    assert len(np.unique(lengths)) > 5
    markers = x[..., 1]
    assert set(np.unique(markers)) <= {0.0, 1.0}
    np.testing.assert_array_equal(markers.sum(axis=1), 2.0)          # exactly two markers
    np.testing.assert_allclose(y, (x[..., 0] * markers).sum(axis=1), rtol=1e-6, atol=1e-6)
    # pos names the marked steps, ascending, distinct and inside the length
    assert np.all(pos[:, 0] < pos[:, 1]) and np.all(pos[:, 1] < lengths)
    np.testing.assert_array_equal(np.take_along_axis(markers, pos, axis=1), 1.0)
    assert np.all(np.abs(x[..., 0]) <= 1.0)
    padding = np.arange(T)[None, :] >= lengths[:, None]
    assert padding.any() and np.all(x[padding] == 0.0)
    # deterministic in the key; an int seed means jax.random.key(seed)
    x2, l2, _, _ = demo.adding_task(3, 500, T, min_len)
    np.testing.assert_array_equal(x, np.asarray(x2))
    np.testing.assert_array_equal(lengths, np.asarray(l2))
    # min_len = T: fixed-length sequences
    _, l3, _, _ = demo.adding_task(0, 100, 12, 12)
    np.testing.assert_array_equal(np.asarray(l3), 12)
    with pytest.raises(ValueError, match="min_len"):
        demo.adding_task(0, 10, 5, 6)


def test_quickstart_example_quick_runs():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--seed", "0"], cwd=ROOT,
                          env=user_env(), capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Relevance per time step" in out and "seq0 value" in out
    rows = [ln for ln in out.splitlines() if re.match(r"^\s+\d+ \|", ln)]
    assert 10 <= len(rows) <= 30
    assert sum(ln.count("*") for ln in rows) == 6                     # 2 marked steps x 3 sequences
    assert "max |relevance| on padding steps: 0\n" in out
    (share,) = number(r"marked-position share of \|relevance\|: ([0-9.]+)", out)
    assert share > 0.4                                                  # uniform gives ~0.1
    (corr,) = number(r"correlation of marked-step relevance with the marked value: ([0-9.-]+)", out)
    assert corr > 0.8
    mse, base = number(r"test MSE: ([0-9.]+)\s+\(predict-the-mean baseline: ([0-9.]+)", out)
    assert mse < 0.2 * base, out
    (absorbed,) = number(r"bias_factor=1\.0: mean \|absorbed\| / mean \|score\| = ([0-9.e+-]+)", out)
    assert absorbed < 1e-4                                              # conserved with bias_factor=1
    assert "bias_factor=0.0" in out
