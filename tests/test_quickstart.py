"""The README quickstart (examples/quickstart.py): its data generator and a --quick smoke run."""
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "quickstart.py"
sys.path.insert(0, str(ROOT / "examples"))
import quickstart  # noqa: E402


def test_make_data_targets_and_markers():
    T = 20
    x, y, pos = (np.asarray(a) for a in quickstart.make_data(jax.random.key(3), 500, T))
    assert x.shape == (500, T, 2) and x.dtype == np.float32 and y.shape == (500,)
    markers = x[..., 1]
    assert set(np.unique(markers)) <= {0.0, 1.0}
    np.testing.assert_array_equal(markers.sum(axis=1), 2.0)          # exactly two markers
    np.testing.assert_allclose(y, (x[..., 0] * markers).sum(axis=1), rtol=1e-6, atol=1e-6)
    # pos names the marked steps, ascending and distinct
    assert np.all(pos[:, 0] < pos[:, 1])
    np.testing.assert_array_equal(np.take_along_axis(markers, pos, axis=1), 1.0)
    assert np.all(np.abs(x[..., 0]) <= 1.0)
    # deterministic in the key
    x2, _, _ = quickstart.make_data(jax.random.key(3), 500, T)
    np.testing.assert_array_equal(x, np.asarray(x2))


def test_quickstart_quick_runs():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--seed", "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Relevance per time step" in out and "seq0 value" in out
    rows = [ln for ln in out.splitlines() if re.match(r"^\s+\d+ \|", ln)]
    assert len(rows) == 20
    assert sum(ln.count("*") for ln in rows) == 6                     # 2 marked steps x 3 sequences
    share = re.search(r"marked-position share of \|relevance\|: ([0-9.]+)", out)
    assert share is not None, out
    assert 0.0 <= float(share.group(1)) <= 1.0
    mse = re.search(r"test MSE: ([0-9.]+)\s+\(predict-the-mean baseline: ([0-9.]+)", out)
    assert mse is not None and float(mse.group(1)) < 0.1 * float(mse.group(2)), out
    assert "bias_factor=1.0" in out and "bias_factor=0.0" in out
