"""Localisation metrics (relevance rank / mass accuracy), Spearman and the model-parameter
randomisation test against the literal loops of ``oracle_metrics.py`` and, where installed, Quantus."""
import copy
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lrpjax
from lrpjax import metrics
from oracle_metrics import (oracle_mprt, oracle_relevance_mass_accuracy, oracle_relevance_rank_accuracy,
                            oracle_spearman)

LOCALISATION = {"rank": (metrics.relevance_rank_accuracy, oracle_relevance_rank_accuracy),
                "mass": (metrics.relevance_mass_accuracy, oracle_relevance_mass_accuracy)}
OPTIONS = [dict(abs=False, normalise=True), dict(abs=True, normalise=True),
           dict(abs=False, normalise=False), dict(abs=True, normalise=False)]


def _oracle(which, R, mask, lengths, opts):
    return LOCALISATION[which][1](R, mask, lengths, abs_=opts["abs"], normalise=opts["normalise"])


def _quiet(f, *args, **kw):
    """``f(...)`` with every warning turned into an error (the metrics must not warn)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return f(*args, **kw)


# ---------------------------------------------------------------------------------------------
# relevance_rank_accuracy / relevance_mass_accuracy

def test_rank_accuracy_by_hand():
    R = np.array([[0.1, -3.0, 2.0, 0.5, 9.0],     # top-2 of the 4 valid steps: 2, 3 (9.0 is padding)
                  [1.0, 1.0, 1.0, 1.0, 1.0],      # constant: chance, K / #valid = 2 / 5
                  [3.0, 2.0, 2.0, 2.0, 0.0],      # K=2: step 0, then 1 place for 3 tied steps
                  [1.0, 2.0, 3.0, 4.0, 5.0]])     # mask only on padding: nan
    mask = np.array([[0, 1, 1, 0, 1], [1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 0, 1, 0]], bool)
    lengths = np.array([4, 5, 5, 3])
    got = _quiet(metrics.relevance_rank_accuracy, R, mask, lengths)
    np.testing.assert_allclose(got[:3], [0.5, 0.4, (1 + 1 / 3) / 2], rtol=1e-15)
    assert np.isnan(got[3])
    got = metrics.relevance_rank_accuracy(R, mask, lengths, abs=True)       # row 0: top-2 = 1, 2
    assert got[0] == 1.0
    assert metrics.relevance_rank_accuracy(R[:1], mask[:1])[0] == 2 / 3     # no lengths: K=3, top 4, 2, 3
    np.testing.assert_array_equal(metrics.relevance_rank_accuracy(jnp.asarray(R), jnp.asarray(mask),
                                                                  jnp.asarray(lengths))[:3],
                                  _quiet(metrics.relevance_rank_accuracy, R, mask, lengths)[:3])


def test_mass_accuracy_by_hand():
    R = np.array([[1.0, -3.0, 0.0, 4.0, 7.0], [0.0, 0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 2.0, 0.0, 0.0],
                  [1.0, 2.0, 3.0, 4.0, 5.0]])
    mask = np.array([[0, 1, 0, 1, 1], [1, 0, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], bool)
    lengths = np.array([4, 5, 2, 5])
    got = _quiet(metrics.relevance_mass_accuracy, R, mask, lengths)
    assert got[0] == pytest.approx(1.0 / 2.0, abs=1e-15)        # (-3 + 4) / (1 - 3 + 0 + 4)
    assert np.isnan(got[1]) and np.isnan(got[2]) and np.isnan(got[3])   # zero total; 1 - 1 = 0; empty
    got = _quiet(metrics.relevance_mass_accuracy, R, mask, lengths, abs=True)
    assert got[0] == pytest.approx(7.0 / 8.0, abs=1e-15) and got[2] == 0.5
    assert metrics.relevance_mass_accuracy(R[:1], mask[:1])[0] == pytest.approx(8.0 / 9.0, abs=1e-15)


@pytest.mark.parametrize("which", ["rank", "mass"])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: f"abs={o['abs']},normalise={o['normalise']}")
def test_localisation_matches_oracle(which, opts):
    rng = np.random.default_rng(0)
    N, T = 60, 6
    R = rng.integers(-3, 4, size=(N, T)).astype(np.float64)       # many ties (and zero rows)
    R[: N // 2] = rng.normal(size=(N // 2, T))                     # ... and none
    R[0] = 0.0
    mask = rng.random((N, T)) < 0.4
    lengths = rng.integers(0, T + 1, size=N)
    for L in (None, lengths):
        got = _quiet(LOCALISATION[which][0], R, mask, L, **opts)
        want = _oracle(which, R, mask, L, opts)
        assert got.shape == (N,) and got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)   # nan where the oracle has nan
        assert 0 < np.isnan(got).sum() < N // 2
    if opts["abs"]:                                  # (signed sums near 0 are not float32-stable)
        got32 = LOCALISATION[which][0](R.astype(np.float32), mask, lengths, **opts)
        np.testing.assert_allclose(got32, _oracle(which, R, mask, lengths, opts), rtol=1e-6, atol=1e-6)


def test_localisation_normalise_func():
    rng = np.random.default_rng(1)
    R, mask, L = rng.normal(size=(5, 7)), rng.random((5, 7)) < 0.5, np.array([7, 3, 5, 1, 6])
    for f in (metrics.relevance_rank_accuracy, metrics.relevance_mass_accuracy):
        seen = []

        def flip(A):
            seen.append(A.copy())
            return -A
        np.testing.assert_allclose(f(R, mask, L, normalise_func=flip), f(-R, mask, L, normalise=False),
                                   rtol=1e-15)
        assert np.all(seen[0][np.arange(7)[None, :] >= L[:, None]] == 0.0)  # padding zeroed first
        np.testing.assert_array_equal(f(R, mask, L, normalise=False, normalise_func=flip),
                                      f(R, mask, L, normalise=False))
        with pytest.raises(ValueError, match=r"normalise_func must return finite values of the shape it is "
                                             r"given \(5, 7\), got shape \(5,\)"):
            f(R, mask, normalise_func=lambda A: A.sum(1))
        with pytest.raises(ValueError, match="normalise_func must be None or a callable"):
            f(R, mask, normalise_func="max")


@pytest.mark.parametrize("f", [metrics.relevance_rank_accuracy, metrics.relevance_mass_accuracy])
def test_localisation_errors(f):
    R, mask = np.zeros((2, 4)), np.ones((2, 4), bool)
    name = f.__name__
    with pytest.raises(ValueError, match=rf"{name}: R_steps must be a floating array of shape \(N, T\)"):
        f(R[0], mask)
    with pytest.raises(ValueError, match=rf"{name}: mask must be a bool array of shape \(N, T\) = \(2, 4\)"
                                         r".*got shape \(2, 3\)"):
        f(R, mask[:, :3])
    with pytest.raises(ValueError, match=r"mask must be a bool array.*dtype float64"):
        f(R, mask.astype(float))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 4\], got values in \[1, 5\]"):
        f(R, mask, np.array([1, 5]))
    with pytest.raises(ValueError, match=r"lengths must be an integer array of shape \(2,\)"):
        f(R, mask, np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="NaN"):
        f(np.array([[np.nan, 0.0]]), np.ones((1, 2), bool))


# ---------------------------------------------------------------------------------------------
# spearman

def test_spearman_matches_oracle_with_ties():
    rng = np.random.default_rng(2)
    for _ in range(30):
        n = int(rng.integers(2, 12))
        a = rng.integers(-2, 3, size=n).astype(np.float64)
        b = rng.normal(size=n) if rng.random() < 0.5 else rng.integers(-2, 3, size=n).astype(np.float64)
        want = oracle_spearman(a, b)
        got = _quiet(metrics.spearman, a, b)
        assert (np.isnan(got) and np.isnan(want)) or got == pytest.approx(want, abs=1e-12)
    a = rng.normal(size=(3, 5))
    assert metrics.spearman(a, np.exp(a)) == 1.0                     # same order: exactly 1
    assert metrics.spearman(a, -a) == -1.0
    assert metrics.spearman(a, a.T.copy().T) == 1.0
    assert metrics.spearman(jnp.asarray(a, jnp.float32), a) == 1.0
    scipy_stats = pytest.importorskip("scipy.stats")
    b = np.round(rng.normal(size=(3, 5)), 0)
    assert metrics.spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a.ravel(), b.ravel())[0], abs=1e-12)


def test_spearman_nan_and_errors():
    assert np.isnan(_quiet(metrics.spearman, np.ones(4), np.arange(4.0)))
    assert np.isnan(_quiet(metrics.spearman, np.arange(4.0), np.zeros(4)))
    assert np.isnan(_quiet(metrics.spearman, [1.0], [2.0]))
    with pytest.raises(ValueError, match=r"spearman: a and b must have the same number of values.*\(3 values\)"):
        metrics.spearman(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="spearman: a and b must be finite"):
        metrics.spearman(np.array([1.0, np.inf]), np.ones(2))


# ---------------------------------------------------------------------------------------------
# mprt: a tiny 2-layer LSTM classifier, explained with LRP

E, H, C, N, T = 3, 4, 2, 12, 7
LAYERS = ["out", "lstm2", "lstm1"]            # top first


def _model(p, x):
    _, (c, h) = lrpjax.lstm(p["lstm2"], lrpjax.lstm(p["lstm1"], x)[0])
    return lrpjax.dense(h, p["out"]["w"], p["out"]["b"])


@jax.jit
def _explain(p, x):
    return lrpjax.relevance(lambda v: _model(p, v), x, 0).sum(-1)


@pytest.fixture(scope="module")
def lstm_setup():
    k = jax.random.split(jax.random.key(5), 4)
    params = {"lstm1": lrpjax.init_lstm(k[0], E, H, dtype=jnp.float64),
              "lstm2": lrpjax.init_lstm(k[1], H, H, dtype=jnp.float64),
              "out": {"w": jax.random.normal(k[2], (H, C), jnp.float64), "b": jnp.full(C, 0.1)}}
    x = jax.random.normal(k[3], (N, T, E), jnp.float64)
    return params, x


def _changed(params, p):
    """Names of the layers whose weights differ from ``params``."""
    return [name for name in LAYERS if not all(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(params[name]), jax.tree.leaves(p[name])))]


def _reverse_and_scale(k, w):
    return -0.7 * w[::-1] + 0.05


@pytest.mark.parametrize("order", ["top_down", "independent"])
def test_mprt_matches_oracle(order, lstm_setup):
    params, x = lstm_setup
    lengths = np.array([7, 3, 5, 7, 2, 6, 7, 4, 7, 1, 5, 7])
    x = jnp.where(jnp.arange(T)[None, :, None] < lengths[:, None, None], x, 0.0)
    for L in (None, lengths):
        got = metrics.mprt(params, LAYERS, _explain, x, jax.random.key(0), lengths=L, layer_order=order,
                           randomise=_reverse_and_scale)
        want = oracle_mprt(params, LAYERS, lambda name: jax.tree.map(lambda w: _reverse_and_scale(None, w),
                                                                       params[name]),
                           lambda p, v: np.asarray(_explain(p, v)), x, order, L)
        assert list(got) == ["original"] + LAYERS
        for name in got:
            assert got[name].shape == (N,) and got[name].dtype == np.float64
            np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-12)
    assert np.isnan(got["out"][9])                     # one valid step: no correlation


def test_mprt_randomising_drops_similarity(lstm_setup):
    params, x = lstm_setup
    got = _quiet(metrics.mprt, params, LAYERS, _explain, x, jax.random.key(0))
    assert np.all(got["original"] == 1.0)
    assert got["lstm1"].mean() < 0.6 and got["lstm1"].min() < 0.2     # the fully random model
    assert all(got[name].mean() < 0.8 for name in LAYERS)
    noop = metrics.mprt(params, LAYERS, _explain, x, jax.random.key(0), randomise=lambda k, w: w)
    assert all(np.all(v == 1.0) for v in noop.values())               # exactly 1
    assert list(metrics.mprt(params, [], _explain, x, jax.random.key(0))) == ["original"]
    raw = metrics.mprt(params, LAYERS, _explain, x, jax.random.key(0), abs=False, similarity="pearson")
    np.testing.assert_allclose(raw["original"], 1.0, rtol=0, atol=1e-15)
    assert raw["lstm1"].mean() < got["lstm1"].mean()                  # signed: lower still


def test_mprt_order_determinism_and_permutation(lstm_setup):
    params, x = lstm_setup
    seen = []

    def recording(p, v):
        seen.append(p)
        return _explain(p, v)

    a = metrics.mprt(params, LAYERS, recording, x, jax.random.key(3))
    assert [_changed(params, p) for p in seen] == [[], [], ["out"], ["out", "lstm2"], LAYERS]
    for p in seen[2:]:                                  # each array: its rows permuted
        for name in _changed(params, p):
            for w, w0 in zip(jax.tree.leaves(p[name]), jax.tree.leaves(params[name])):
                np.testing.assert_array_equal(np.sort(w, axis=0), np.sort(w0, axis=0))
    last = seen[-1]
    seen.clear()
    b = metrics.mprt(params, LAYERS, recording, x, jax.random.key(3), layer_order="bottom_up")
    assert list(b) == ["original", "lstm1", "lstm2", "out"]
    assert [_changed(params, p) for p in seen] == [[], [], ["lstm1"], ["lstm2", "lstm1"], LAYERS]
    assert all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(seen[-1]), jax.tree.leaves(last)))
    np.testing.assert_array_equal(b["out"], a["lstm1"])       # same layers, same keys: same model
    seen.clear()
    c = metrics.mprt(params, LAYERS, recording, x, jax.random.key(3), layer_order="independent")
    assert [_changed(params, p) for p in seen] == [[], [], ["out"], ["lstm2"], ["lstm1"]]
    np.testing.assert_array_equal(c["out"], a["out"])
    again = metrics.mprt(params, LAYERS, _explain, x, jax.random.key(3))
    other = metrics.mprt(params, LAYERS, _explain, x, jax.random.key(4))
    assert all(np.array_equal(a[k], again[k]) for k in a)
    assert not np.array_equal(a["lstm1"], other["lstm1"])


def test_mprt_key_paths_and_similarity_options():
    """Flax-style nested params, paths as strings or tuples, pearson / callable similarity."""
    rng = np.random.default_rng(6)
    params = {"params": {"Dense_0": {"kernel": rng.normal(size=(4, 3)), "bias": rng.normal(size=3)},
                         "Dense_1": {"kernel": rng.normal(size=(3, 1)), "bias": np.zeros(1)}}}
    x = jnp.asarray(rng.normal(size=(5, 4)))

    def explain(p, v):                                  # gradient x input of a 2-layer MLP
        q = p["params"]
        f = lambda u: jnp.sum(jnp.tanh(u @ q["Dense_0"]["kernel"] + q["Dense_0"]["bias"])
                              @ q["Dense_1"]["kernel"])
        return jax.grad(f)(v) * v

    key = jax.random.key(1)
    s = metrics.mprt(params, ["params/Dense_1", ("params", "Dense_0")], explain, x, key,
                     similarity="pearson", abs=False)
    assert list(s) == ["original", "params/Dense_1", "params/Dense_0"]
    t = metrics.mprt(params, ["params/Dense_1", "params/Dense_0"], explain, x, key,
                     similarity=lambda a, b: metrics.pearson(a, b), abs=False)
    u = metrics.mprt(params, ["params/Dense_1/kernel", "params/Dense_1/bias", "params/Dense_0"], explain, x,
                     key)
    assert list(u)[1:] == ["params/Dense_1/kernel", "params/Dense_1/bias", "params/Dense_0"]
    np.testing.assert_array_equal(s["params/Dense_0"], t["params/Dense_0"])
    np.testing.assert_array_equal(u["params/Dense_1/bias"], u["params/Dense_1/kernel"])  # bias: no effect


def test_mprt_errors(lstm_setup):
    params, x = lstm_setup
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"mprt: layer 'dense' matches no weight of params \(key paths "
                                         r"start with \['lstm1', 'lstm2', 'out'\]"):
        metrics.mprt(params, ["dense"], _explain, x, key)
    with pytest.raises(ValueError, match="mprt: normalise_func must be None or a callable"):
        metrics.mprt(params, LAYERS, _explain, x, key, normalise_func="max")
    with pytest.raises(ValueError, match="layers must not overlap: 'out' and 'out/w' both contain 'out/w'"):
        metrics.mprt(params, ["out", "out/w"], _explain, x, key)
    with pytest.raises(ValueError, match="layers must be a list of key paths"):
        metrics.mprt(params, "out", _explain, x, key)
    with pytest.raises(ValueError, match="each layer must be a key path"):
        metrics.mprt(params, [3], _explain, x, key)
    with pytest.raises(ValueError, match=r"layer_order must be one of \('top_down', 'bottom_up', "
                                         r"'independent'\), got 'cascading'"):
        metrics.mprt(params, LAYERS, _explain, x, key, layer_order="cascading")
    with pytest.raises(ValueError, match=r"similarity must be one of \('spearman', 'pearson'\)"):
        metrics.mprt(params, LAYERS, _explain, x, key, similarity="ssim")
    with pytest.raises(ValueError, match="randomise must be 'permute' or a callable"):
        metrics.mprt(params, LAYERS, _explain, x, key, randomise="normal")
    with pytest.raises(ValueError, match=r"randomise\(key, w\) must return an array of w's shape \(2,\), got shape \(1,\)"):
        metrics.mprt(params, ["out/b"], _explain, x, key, randomise=lambda k, w: w[:1])
    with pytest.raises(ValueError, match=r"explain_fn\(params, x\) must return a floating array of shape "
                                         r"\(N, T\).*got shape \(12, 7, 3\)"):
        metrics.mprt(params, LAYERS, lambda p, v: v, x, key)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 7\]"):
        metrics.mprt(params, LAYERS, _explain, x, key, lengths=np.full(N, 8))
    with pytest.raises(ValueError, match=r"explain_fn\(params, x\) returned 1 NaN/inf value\(s\)"):
        metrics.mprt(params, LAYERS, lambda p, v: jnp.zeros((N, T)).at[0, 0].set(jnp.nan), x, key)


# ---------------------------------------------------------------------------------------------
# Quantus 0.6.0 itself (an optional, LGPL dependency: not installed with lrpjax)

def _quantus():
    return pytest.importorskip("quantus", reason="Quantus not installed (pip install quantus==0.6.0)")


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: f"abs={o['abs']},normalise={o['normalise']}")
def test_localisation_equals_quantus(opts):
    quantus = _quantus()
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    n, t = 8, 9
    R = rng.normal(size=(n, t))                           # no ties (Quantus leaves their order open)
    R[:, 0] = np.abs(R[:, 0])                             # Quantus refuses all-negative attributions
    mask = rng.random((n, t)) < 0.4
    mask[2] = False                                       # nan in both
    lengths = rng.integers(2, t + 1, size=n)             # Quantus cannot take a 1-step sequence
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(t, 2))   # unused by the metric

    def quantus_scores(cls, R, mask):
        x = np.zeros((len(R), 1, R.shape[1]), np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(cls(disable_warnings=True, **opts)(
                model=model, x_batch=x, y_batch=np.zeros(len(R), int), a_batch=R[:, None, :], channel_first=True,
                s_batch=mask[:, None, :].astype(np.float64)), np.float64)

    for cls, f in [(quantus.RelevanceRankAccuracy, metrics.relevance_rank_accuracy),
                   (quantus.RelevanceMassAccuracy, metrics.relevance_mass_accuracy)]:
        np.testing.assert_allclose(f(R, mask, **opts), quantus_scores(cls, R, mask), rtol=1e-12, atol=1e-15)
        want = [quantus_scores(cls, R[i:i + 1, :lengths[i]], mask[i:i + 1, :lengths[i]])[0] for i in range(n)]
        np.testing.assert_allclose(f(R, mask, lengths, **opts), want, rtol=1e-12, atol=1e-15)


def test_mprt_equals_quantus():
    """Quantus' MPRT on a PyTorch MLP (gradient x input) == mprt on the same weights as a pytree, given
    the weights Quantus' randomisation draws (PyTorch's reset_parameters with seed 42 + 1)."""
    quantus = _quantus()
    torch = pytest.importorskip("torch")
    n, t, h, c = 6, 7, 5, 3
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(t, h), torch.nn.Tanh(),
                              torch.nn.Linear(h, c)).double()
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(n, 1, t)), rng.integers(0, c, n)

    def explain_torch(model, inputs, targets, **kwargs):
        xi = torch.tensor(np.asarray(inputs), dtype=torch.float64, requires_grad=True)
        model(xi)[torch.arange(len(targets)), torch.as_tensor(targets)].sum().backward()
        return (xi.grad * xi).detach().numpy()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = quantus.MPRT(disable_warnings=True)(model=net, x_batch=x, y_batch=y, a_batch=None,
                                                   explain_func=explain_torch)
    sd = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    params = {m: {"weight": sd[m + ".weight"], "bias": sd[m + ".bias"]} for m in ("1", "3")}
    drawn = {}                                            # original bytes -> Quantus' random weights
    for name, module in net.named_modules():
        if hasattr(module, "reset_parameters"):
            fresh = copy.deepcopy(module)
            torch.manual_seed(42 + 1)
            fresh.reset_parameters()
            drawn[sd[name + ".weight"].tobytes()] = fresh.weight.detach().numpy()
            drawn[sd[name + ".bias"].tobytes()] = fresh.bias.detach().numpy()

    def explain_jax(p, v):
        def score(u):
            z = jnp.tanh(u @ p["1"]["weight"].T + p["1"]["bias"]) @ p["3"]["weight"].T + p["3"]["bias"]
            return z[jnp.arange(n), y].sum()
        return jax.grad(score)(v) * v

    got = metrics.mprt(params, ["3", "1"], explain_jax, jnp.asarray(x[:, 0]), jax.random.key(0),
                       randomise=lambda k, w: drawn[np.asarray(w).tobytes()])
    assert list(got) == list(want) == ["original", "3", "1"]       # top-down: output layer first
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-12)
    assert np.all(got["1"] < 0.99)


def test_spearman_equals_quantus():
    _quantus()
    from quantus.functions.similarity_func import correlation_spearman
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(6, 8)), np.round(rng.normal(size=(6, 8)))   # ties in b
    want = correlation_spearman(a, b, batched=True)
    np.testing.assert_allclose([metrics.spearman(a[i], b[i]) for i in range(6)], want, rtol=1e-12)
