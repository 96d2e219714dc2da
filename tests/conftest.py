"""Test setup: 8 virtual CPU devices (set before jax is imported), float64 available, XLA's cheap
compile pipeline.

float64 oracle comparisons run with ``jax_enable_x64``; float32 tests pass float32 arrays explicitly,
and ``test_api.py::test_float32_default_mode`` runs a subprocess with x64 off (the users' default).
"""
import os
import pathlib
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
# The in-process tests are bound by XLA compile time (hundreds of small models, each compiled once)
# and check values, not speed: compile them with XLA's cheap pipeline. Subprocesses (the demo, the
# examples, CLI jobs) run long enough that optimised code pays off, so they keep the default.
# LRPJAX_TEST_FULL_OPT=1 tests optimised code everywhere.
if not os.environ.get("LRPJAX_TEST_FULL_OPT"):
    jax.config.update("jax_disable_most_optimizations", True)

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
ARRAS = SHARED / "sst_bilstm_li2016"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def arras_weights():
    path = ARRAS / "weights.npz"
    if not path.exists():
        pytest.skip(f"reference weights not found at {path} (shared/ data missing)")
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="session")
def sst_sentences():
    """(token id lists, labels) of the SST test set, via the reference vocabulary."""
    vocab_p, sent_p = ARRAS / "vocab.txt", ARRAS / "sequence_test.txt"
    if not (vocab_p.exists() and sent_p.exists()):
        pytest.skip("SST test sentences / vocabulary not found in shared/")
    vocab = vocab_p.read_text(encoding="utf-8").split("\n")[:-1]
    index = {w: i for i, w in enumerate(vocab)}
    ids, labels = [], []
    for line in sent_p.read_text(encoding="utf-8").split("\n"):
        if not line:
            continue
        label, text = line.split("\t", 1)
        ids.append([index[t] for t in text.split(" | ")])
        labels.append(int(label) - 1)
    return ids, labels, len(vocab)
