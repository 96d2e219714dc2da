"""Every ```python block of the README runs as shown (each in a fresh process, from the repo root)."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
# A block that reads the output of `lrpjax demo` runs in tests/test_quickstart.py, where the demo wrote it.
BLOCKS = [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "lrpjax-demo/" not in b]


def test_readme_has_code_blocks():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("k", range(len(BLOCKS)))
def test_readme_block_runs(k):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("JAX_ENABLE_X64", None)
    out = subprocess.run([sys.executable, "-c", BLOCKS[k]], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, f"README block {k} failed:\n{BLOCKS[k]}\n{out.stderr[-3000:]}"
