"""lrpjax.tasks (toy tasks with ground truth) and scripts/toy_benchmark.py (smoke run).

The full benchmark (4 models x 2 tasks trained to test MSE < 1e-3, every method) is the script; here:
the generator's invariants, the four models, a short training run, the metric harness on a case
computed by hand, and ``toy_benchmark.py --quick`` in a subprocess.
"""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lrpjax
from lrpjax import demo, tasks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("op", tasks.OPS)
def test_adding_task_invariants(op):
    T, min_len, n = 30, 10, 400
    x, lengths, y, pos = (np.asarray(a) for a in tasks.adding_task(jax.random.key(7), n, T, min_len, op))
    assert x.shape == (n, T, 2) and x.dtype == np.float32 and y.shape == (n,) and pos.shape == (n, 2)
    assert lengths.dtype == np.int32 and lengths.min() >= min_len and lengths.max() <= T
    assert len(np.unique(lengths)) > 10                               # lengths uniform in [10, 30]
    values, markers = x[..., 0], x[..., 1]
    np.testing.assert_array_equal(markers.sum(axis=1), 2.0)          # exactly two markers
    assert set(np.unique(markers)) <= {0.0, 1.0} and np.all(np.abs(values) <= 1.0)
    assert np.all(pos[:, 0] < pos[:, 1]) and np.all(pos[:, 1] < lengths)
    np.testing.assert_array_equal(np.take_along_axis(markers, pos, axis=1), 1.0)
    padding = np.arange(T)[None, :] >= lengths[:, None]
    assert np.all(x[padding] == 0.0)
    v = np.take_along_axis(values, pos, axis=1)
    want = v[:, 0] + v[:, 1] if op == "add" else v[:, 0] - v[:, 1]   # first minus second
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)
    c = tasks.contributions(x, pos, op)                                # per marked step
    np.testing.assert_allclose(c.sum(axis=1), y, rtol=1e-6, atol=1e-6)
    assert np.all(c[:, 0] == v[:, 0])


def test_adding_task_ops_share_inputs_and_demo_uses_it():
    xa, la, ya, pa = tasks.adding_task(3, 50, op="add")
    xs, ls, ys, ps = tasks.adding_task(3, 50, op="subtract")
    for a, b in ((xa, xs), (la, ls), (pa, ps)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(ya, ys)
    assert demo.adding_task is tasks.adding_task                     # one generator
    with pytest.raises(ValueError, match="op must be"):
        tasks.adding_task(0, 4, op="multiply")
    with pytest.raises(ValueError, match="min_len"):
        tasks.adding_task(0, 4, 5, 6)


@pytest.mark.parametrize("variant", tasks.VARIANTS)
def test_models_padding_and_relevance(variant):
    params = tasks.init(jax.random.key(1), variant, hidden=6)
    assert params.variant == variant
    x, lengths, _, _ = tasks.adding_task(2, 5, T=12, min_len=4)
    out = tasks.apply(params, x, lengths)
    assert out.shape == (5, 1) and out.dtype == jnp.float32
    # padding: the valid part alone gives the same output
    b, L = 0, int(lengths[0])
    np.testing.assert_allclose(tasks.apply(params, x[b:b + 1, :L]), out[b:b + 1], rtol=1e-5, atol=1e-6)
    p2 = jax.tree.map(lambda a: a * 1.0, params)     # a pytree; variant is static metadata
    assert p2.variant == variant and len(jax.tree.leaves(p2)) == len(jax.tree.leaves(params.rnn)) + 2
    R = lrpjax.relevance(lambda z: tasks.apply(params, z, lengths), x, target=0)
    assert R.shape == x.shape and np.all(np.isfinite(R))
    assert float(jnp.abs(jnp.where((jnp.arange(12)[None] >= lengths[:, None])[..., None], R, 0)).max()) == 0
    with pytest.raises(ValueError, match="variant"):
        tasks.init(0, "no_output")


def test_short_training_run_reaches_threshold():
    lines = []
    tr = tasks.train(0, "standard", "add", hidden=16, steps=600, chunk=50, target_mse=0.05,
                     n_test=500, log=lines.append)
    assert tr.reached and tr.test_mse < 0.05 and tr.steps < 600       # predict-the-mean: about 0.67
    assert len(lines) == tr.steps // 50 and "test MSE" in lines[-1]
    x, lengths, y, _ = tasks.adding_task(11, 500)
    assert tasks.mse(tr.params, x, lengths, y) < 0.1                 # on other fresh sequences too


def test_ground_truth_metrics_hand_case():
    T = 6
    pos = np.array([[1, 3], [0, 2], [2, 4], [0, 1]])
    lengths = np.array([6, 4, 6, 5])
    x = np.zeros((4, T, 2), np.float32)
    vals = np.array([[0.5, -0.8], [0.9, 0.3], [0.1, 0.7], [0.6, 0.6]], np.float32)
    for n in range(4):
        x[n, :lengths[n], 0] = 0.05
        x[n, pos[n], 0] = vals[n]
        x[n, pos[n], 1] = 1.0
    R = np.array([
        [0.1, 0.5, 0.0, -0.8, 0.2, 0.0],      # hit; share 1.3 / 1.6
        [0.9, 0.4, 0.3, 0.0, 5.0, 5.0],       # steps 4, 5 are padding (zeroed); 0.3 < 0.4: miss; 1.2 / 1.6
        [0.0, 0.0, 0.1, 0.0, 0.7, 0.0],       # |0.1| < 0.2: not ranked by (a); share 1
        [np.nan, 0.1, 0.2, 0.0, 0.0, 0.0],    # non-finite: counted, left out of everything
    ])
    m = tasks.ground_truth_metrics(R, x, lengths, pos, op="subtract", min_abs=0.2)
    assert (m["n"], m["n_finite"], m["nonfinite"], m["n_eligible"]) == (4, 3, 1, 2)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["share"] == pytest.approx(np.mean([1.3 / 1.6, 1.2 / 1.6, 1.0]))
    r_marked = [0.5, -0.8, 0.9, 0.3, 0.1, 0.7]
    truth = [0.5, 0.8, 0.9, -0.3, 0.1, -0.7]                          # second marked value subtracted
    assert m["pearson"] == pytest.approx(np.corrcoef(r_marked, truth)[0, 1], abs=1e-6)
    m_add = tasks.ground_truth_metrics(R, x, lengths, pos, op="add", min_abs=0.2)
    assert m_add["pearson"] == pytest.approx(np.corrcoef(r_marked, vals[:3].ravel())[0, 1], abs=1e-6)
    # the exact contributions themselves score perfectly
    R_true = np.zeros((4, T))
    np.put_along_axis(R_true, pos, tasks.contributions(x, pos, "subtract"), axis=1)
    m_true = tasks.ground_truth_metrics(R_true, x, lengths, pos, op="subtract")
    assert (m_true["accuracy"], m_true["share"], m_true["nonfinite"]) == (1.0, 1.0, 0)
    assert m_true["pearson"] == pytest.approx(1.0)


def test_toy_benchmark_quick(tmp_path):
    md = tmp_path / "table.md"
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, os.path.join("scripts", "toy_benchmark.py"), "--quick",
                           "--variants", "rudder", "--ops", "subtract", "--markdown", str(md)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    out = proc.stdout
    assert "test MSE, worst seed (goal < 1e-3)" in out and "wall time:" in out
    rows = md.read_text().splitlines()
    assert rows[0] == "| method | subtract: RUDDER LSTM |"
    labels = [r.split(" | ")[0].lstrip("| ") for r in rows[2:] if r.startswith("| ")]
    assert labels[:6] == ["test MSE, worst seed (goal < 1e-3)", "LRP-all", "LRP-all, bias_factor=1",
                          "LRP-half", "LRP-prop", "LRP-abs"]
    assert {"Gradient", "Gradient x Input", "Occlusion (step -> 0)", "Random"} <= set(labels)
    assert any(lab.startswith("Integrated gradients") for lab in labels)
