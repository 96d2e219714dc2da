"""examples/time_series.py: its helpers on synthetic data (always), the whole pipeline on a synthetic
split in-process (always; no aeon needed), and a --quick run on aeon's bundled JapaneseVowels in a
subprocess with sockets blocked (only where the optional `timeseries` extra, aeon, is installed)."""
import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

SCRIPT = ROOT / "examples" / "time_series.py"


def load_example():
    spec = importlib.util.spec_from_file_location("time_series_example", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod            # NamedTuple classes need their module registered
    spec.loader.exec_module(mod)
    return mod


ts = load_example()


# ------------------------------------------------------------------------------------------------
# helpers (NumPy only)

def test_pad_series_unequal_and_equal_lengths():
    rng = np.random.default_rng(0)
    series = [rng.normal(size=(3, L)) for L in (5, 2, 7)]            # aeon's np-list: (F, T_i)
    x, lengths = ts.pad_series(series)
    assert x.shape == (3, 7, 3) and x.dtype == np.float32
    assert lengths.tolist() == [5, 2, 7] and lengths.dtype == np.int32
    for i, s in enumerate(series):
        np.testing.assert_allclose(x[i, :s.shape[1]], s.T.astype(np.float32))
        assert np.all(x[i, s.shape[1]:] == 0.0)
    x2, l2 = ts.pad_series(series, max_len=10)                       # pad further
    assert x2.shape == (3, 10, 3) and l2.tolist() == [5, 2, 7]
    np.testing.assert_array_equal(x2[:, :7], x)
    eq = rng.normal(size=(4, 2, 6))                                  # aeon's numpy3d: (N, F, T)
    x3, l3 = ts.pad_series(eq)
    np.testing.assert_allclose(x3, eq.transpose(0, 2, 1).astype(np.float32))
    assert l3.tolist() == [6] * 4
    with pytest.raises(ValueError, match="F = 3"):
        ts.pad_series([np.zeros((3, 4)), np.zeros((2, 4))])


def test_standardize_uses_valid_steps_only_and_keeps_padding_zero():
    rng = np.random.default_rng(1)
    series = [rng.normal(loc=[[5.0], [-2.0]], scale=[[3.0], [0.5]], size=(2, L)) for L in (4, 9, 6)]
    x, lengths = ts.pad_series(series)
    z, (mean, std) = ts.standardize(x, lengths)
    valid = np.concatenate([s.T for s in series])                    # (sum L, F), no padding
    np.testing.assert_allclose(mean, valid.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, valid.std(0), rtol=1e-6)
    mask = ts.valid_mask(lengths, x.shape[1])
    np.testing.assert_allclose(z[mask].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[mask].std(0), 1.0, atol=1e-5)
    assert np.all(z[~mask] == 0.0) and z.dtype == np.float32
    z2, stats2 = ts.standardize(x[:1], lengths[:1], (mean, std))     # test split: the train stats
    np.testing.assert_allclose(z2, z[:1], atol=1e-6)
    assert stats2[0] is mean


def test_feature_share_by_class():
    rng = np.random.default_rng(2)
    N, T, F = 12, 8, 4
    classes = np.array([0, 1] * 6)
    lengths = rng.integers(3, T + 1, N)
    R = np.zeros((N, T, F))
    for n in range(N):                       # class 0 only on feature 1, class 1 on 2 (3:1) and 3
        L = lengths[n]
        if classes[n] == 0:
            R[n, :L, 1] = rng.normal(size=L)
        else:
            R[n, :L, 2] = 3.0 * np.abs(rng.normal(size=L))
            R[n, :L, 3] = -R[n, :L, 2] / 3.0                  # negative relevance counts by |R|
    share = ts.feature_share(R)
    np.testing.assert_allclose(share.sum(1), 1.0)
    by_class, counts = ts.feature_share_by_class(R, classes, 3)
    assert counts.tolist() == [6, 6, 0]
    np.testing.assert_allclose(by_class[0], [0, 1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(by_class[1], [0, 0, 0.75, 0.25], atol=1e-12)
    assert np.all(np.isnan(by_class[2]))                              # no series of class 2
    table = ts.share_table(by_class, counts, ["a", "b", "c"], ["f0", "f1", "f2", "f3"])
    assert "100.0*" in table and "75.0*" in table and "\nc " not in table


def test_top_and_random_step_masks():
    R = np.array([[0.1, 5.0, -1.0, 2.0, 9.0, 9.0],
                  [3.0, 3.0, 1.0, -2.0, 0.0, 0.0]])
    lengths = np.array([4, 6])
    top = ts.top_steps_mask(R, lengths, 0.5)              # k = ceil(0.5 * L) = 2 and 3
    assert np.flatnonzero(top[0]).tolist() == [1, 3]     # padding (9.0) never chosen
    assert np.flatnonzero(top[1]).tolist() == [0, 1, 2]  # ties to the earlier step
    assert ts.top_steps_mask(R, lengths, 0.01).sum(1).tolist() == [1, 1]
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = ts.random_steps_mask(rng, lengths, 6, 0.5)
        assert m.sum(1).tolist() == [2, 3] and not m[0, 4:].any()


def linear_model(W):
    """Logits of a linear model: class 0 = sum of x * W over valid steps, class 1 = 0. Its exact
    relevance (LRP = gradient x input) is x * W."""
    def score_fn(x, lengths):
        mask = ts.valid_mask(lengths, x.shape[1])[..., None]
        s0 = (np.asarray(x) * W * mask).sum((1, 2))
        return np.stack([s0, np.zeros_like(s0)], axis=1)
    return score_fn


def test_deletion_checks_on_a_linear_model():
    rng = np.random.default_rng(3)
    N, T, F = 30, 10, 3
    W = rng.normal(size=(T, F))
    x = rng.normal(size=(N, T, F)).astype(np.float32)
    lengths = rng.integers(4, T + 1, N)
    x[~ts.valid_mask(lengths, T)] = 0.0
    score_fn = linear_model(W)
    R = x * W
    target = np.zeros(N, int)
    d = ts.delete_steps(score_fn, x, lengths, target, R.sum(-1), (0.1, 0.3), n_random=5)
    np.testing.assert_allclose(d["base"], R.sum((1, 2)), rtol=1e-5, atol=1e-5)
    assert d["top"].shape == d["random"].shape == (2, N)
    # removing the k most relevant steps removes exactly their (positive-first) relevance, the
    # largest drop any k steps can give
    top = ts.top_steps_mask(R.sum(-1), lengths, 0.3)
    np.testing.assert_allclose(d["base"] - d["top"][1], (R.sum(-1) * top).sum(1), rtol=1e-4, atol=1e-4)
    assert np.all(d["base"] - d["top"] >= d["base"] - d["random"] - 1e-5)
    assert d["flip_top"].shape == (2,) and np.all((0 <= d["flip_top"]) & (d["flip_top"] <= 1))
    f = ts.delete_features(score_fn, x, lengths, target, R)
    assert f["each"].shape == (F, N)
    np.testing.assert_allclose(f["top"], f["each"].min(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(f["bottom"], f["each"].max(0), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# the pipeline on synthetic data (JAX, no aeon)

def synthetic_data(seed=0, n_train=48, n_test=48, T=12, F=3):
    """Class = sign of the offset (+-0.8) of feature 1, noisy at every step; features 0 and 2 are noise. Train
    and test have the same shape, so the jitted forward pass compiles once."""
    rng = np.random.default_rng(seed)

    def split(n):
        lengths = rng.integers(5, T + 1, n)
        y = rng.integers(0, 2, n)
        series = []
        for L, c in zip(lengths, y):
            s = rng.normal(size=(F, L))
            s[1] += 0.8 if c else -0.8                      # the evidence is spread over the steps
            series.append(s)
        x, ln = ts.pad_series(series, max_len=T)
        return x, ln, y.astype(np.int32)

    return ts.Data(*split(n_train), *split(n_test), ["neg", "pos"], ["noise a", "signal", "noise b"],
                   "Synthetic (sign of feature 1)", "", {"signal": [1]})


def test_run_on_synthetic_data(tmp_path):
    cfg = ts.Config(hidden=8, steps=80, batch=32, lr=1e-2, n_plots=1)
    lines = []
    res = ts.run(synthetic_data(), tmp_path, cfg, seed=0, log=lines.append)
    out = "\n".join(lines)
    assert res["accuracy"] >= 0.9, out
    R = res["relevance"]
    data = synthetic_data()
    pad = ~ts.valid_mask(data.len_test, R.shape[1])
    assert R.shape == data.x_test.shape and np.all(R[pad] == 0.0)    # padding gets exactly 0
    assert np.abs(res["absorbed"]).max() < 1e-3        # bias_factor=1: nothing absorbed ...
    assert 0.8 < np.median(res["ratio"]) < 1.05         # ... most of the logit on the inputs
    assert np.nanargmax(res["share"], axis=1).tolist() == [1, 1], out  # the signal feature
    dele = res["deletion"]
    assert (dele["base"] - dele["top"][3]).mean() > (dele["base"] - dele["random"][3]).mean(), out
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([res["paths"][0].name, "deletion.png", "feature_share_by_class.png",
                            "relevance.npz"])
    for p in res["paths"]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "signal share by class" in out and "max |relevance| on padding steps: 0" in out


# ------------------------------------------------------------------------------------------------
# the example on aeon's bundled data (optional extra)

BLOCK_SOCKETS = '''
import socket
def _no_network(*args, **kwargs):
    raise OSError("network access blocked by tests/test_time_series.py")
socket.socket.connect = socket.socket.connect_ex = _no_network
socket.create_connection = socket.getaddrinfo = _no_network
'''


def test_example_quick_on_japanese_vowels_offline(tmp_path):
    pytest.importorskip("aeon")
    pytest.importorskip("matplotlib")
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCK_SOCKETS)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(tmp_path / "blocker"), str(ROOT), env.get("PYTHONPATH")) if p)
    for k in ("XLA_FLAGS", "JAX_ENABLE_X64", "JAX_PLATFORMS"):     # conftest's 8 virtual devices
        env.pop(k, None)
    out_dir = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--dataset", "japanese_vowels",
                           "--out", str(out_dir)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "nothing downloaded" in out and "lengths 7..29 (padded to T=29)" in out
    acc = float(re.search(r"test accuracy ([0-9.]+)", out).group(1))
    assert acc > 0.5, out                                            # chance: 1/9
    assert "max |relevance| on padding steps: 0\n" in out
    drop_top, drop_rand = map(float, re.search(r"logit drop ([0-9.-]+) \(most relevant\) vs "
                                               r"([0-9.-]+) \(random\)", out).groups())
    assert drop_top > drop_rand, out
    pngs = sorted(p.name for p in out_dir.glob("*.png"))
    assert "deletion.png" in pngs and "feature_share_by_class.png" in pngs
    assert len([p for p in pngs if p.startswith("example_")]) == 1
    with np.load(out_dir / "relevance.npz") as f:
        R, lengths = f["relevance"], f["lengths"]
        assert R.shape == (370, 29, 12) and lengths.min() == 7 and lengths.max() == 29
        assert np.all(R[~ts.valid_mask(lengths, 29)] == 0.0)
        assert list(f["class_names"]) == [f"speaker {i}" for i in range(1, 10)]
