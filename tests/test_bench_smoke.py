"""Smoke tests: the benchmark scripts run to completion with ``--quick`` (timings are not checked)."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("script, expected", [
    ("bench_core.py", "compilations for lengths 1..40"),
    ("bench_flax.py", "plain gradient <= 1.0"),
    ("bench_pipeline.py", "job / message-matrix loop"),
])
def test_benchmark_quick_runs(script, expected):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if not env.get("LRPJAX_TEST_FULL_OPT"):     # runs to completion; speed is not checked (see conftest)
        env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    proc = subprocess.run([sys.executable, os.path.join("scripts", script), "--quick"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert expected in proc.stdout
