"""Perturbation faithfulness metrics (lrpjax.metrics.perturbation) against the literal loops of
``oracle_metrics.py``, invariants on linear models, and -- where installed -- Quantus 0.6.0 itself."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lrpjax
from lrpjax.metrics import perturbation as pm
import oracle_metrics as om

N, T, F, C = 5, 7, 2, 3
LENGTHS = np.array([7, 5, 2, 6, 3])
TOL = 1e-10


def _data(seed=0, lengths=LENGTHS):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, T, F))
    x[np.arange(T) >= lengths[:, None]] = 7.5          # padding: a value no baseline produces
    R = rng.normal(size=(N, T))
    target = rng.integers(0, C, N)
    return x, R, target


_rng = np.random.default_rng(42)
_W1, _W2, _B = _rng.normal(size=(T, F, 4)) * 0.4, _rng.normal(size=(4, C)), _rng.normal(size=C)


def model_pad(x, lengths):
    """Nonlinear, position dependent and reading the padding too (so touching it would show)."""
    return jnp.tanh(jnp.einsum("ntf,tfh->nh", x, _W1)) @ _W2 + _B


_P = lrpjax.init_lstm(jax.random.key(1), F, 4)
_WD = jax.random.normal(jax.random.key(2), (4, C))


def model_lstm(x, lengths):
    return lrpjax.dense(lrpjax.lstm(_P, x, lengths=lengths)[1][1], _WD)


_model_lstm_jit = jax.jit(model_lstm)
VEC = np.array([0.25, -0.5])
FULL = np.random.default_rng(3).normal(size=(N, T, F))
KEY = jax.random.key(7)


# ---------------------------------------------------------------------------------------------
# the baselines

@pytest.mark.parametrize("baseline", ["zero", "mean", "black", "white", "uniform", "noise", 1.5, "vec",
                                      "full"])
def test_perturb_matches_oracle_and_leaves_padding(baseline):
    x, _, _ = _data(1)
    b = {"vec": VEC, "full": FULL}.get(baseline, baseline) if isinstance(baseline, str) else baseline
    mask = np.random.default_rng(2).random((N, T)) < 0.6
    kw = dict(uniform_low=-2.0, uniform_high=-1.0) if baseline in ("uniform", "noise") else None
    got = np.asarray(pm.perturb(x, mask, lengths=LENGTHS, perturb_baseline=b, key=KEY,
                                perturb_func_kwargs=kw))
    fill = om.pm_fill(x, LENGTHS, b, key=KEY, draw=0, low=-2.0, high=-1.0)
    want = x.copy()
    for n in range(N):
        for t in range(LENGTHS[n]):
            if mask[n, t]:
                want[n, t] = fill[n, t]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)
    pad = np.arange(T) >= LENGTHS[:, None]
    assert np.all(got[pad] == 7.5)
    if baseline in ("uniform", "noise"):
        changed = got[mask & ~pad]
        assert np.all((changed >= -2.0) & (changed < -1.0))


# ---------------------------------------------------------------------------------------------
# each metric against its oracle (float64, lengths < T, both orders, each baseline)

PF_CASES = [("morf", "zero", 1, True, False), ("lerf", "mean", 1, False, False),
            ("morf", "black", 2, True, True), ("lerf", "uniform", 3, True, False),
            ("random", "vec", 1, False, True), ("morf", "white", 1, True, False),
            ("lerf", "full", 2, False, False), ("morf", 0.3, 1, False, False)]


@pytest.mark.parametrize("order,baseline,fis,softmax,rel3d", PF_CASES)
def test_pixel_flipping_matches_oracle(order, baseline, fis, softmax, rel3d):
    x, R, target = _data(4)
    b = {"vec": VEC, "full": FULL}.get(baseline, baseline) if isinstance(baseline, str) else baseline
    Rin = np.random.default_rng(5).normal(size=(N, T, F)) if rel3d else R
    curve = pm.pixel_flipping(model_pad, x, Rin, target, lengths=LENGTHS, key=KEY, features_in_step=fis,
                              order=order, perturb_baseline=b, softmax=softmax, abs=rel3d)
    auc = pm.pixel_flipping(model_pad, x, Rin, target, lengths=LENGTHS, key=KEY, features_in_step=fis,
                            order=order, perturb_baseline=b, softmax=softmax, abs=rel3d,
                            return_auc_per_sample=True)
    want_curve, want_auc = om.pm_pixel_flipping(model_pad, x, Rin, target, LENGTHS, baseline=b, order=order,
                                                features_in_step=fis, softmax=softmax, take_abs=rel3d,
                                                key=KEY)
    assert curve.dtype == np.float64 and curve.shape == (N, -(-T // fis))
    np.testing.assert_allclose(curve, want_curve, rtol=0, atol=TOL)
    np.testing.assert_allclose(auc, want_auc, rtol=0, atol=TOL)


def test_pixel_flipping_lstm_with_lengths_matches_oracle():
    x, R, target = _data(6)
    for order in ("morf", "lerf"):
        curve = pm.pixel_flipping(model_lstm, x, R, target, lengths=LENGTHS, order=order,
                                  perturb_baseline="mean")
        want, _ = om.pm_pixel_flipping(_model_lstm_jit, x, R, target, LENGTHS, baseline="mean", order=order)
        np.testing.assert_allclose(curve, want, rtol=0, atol=TOL)


def test_ties_go_to_the_earlier_step():
    """Many equal relevances over a long sequence: the order (and so the curve) is the stable one."""
    rng = np.random.default_rng(14)
    T_, lengths = 40, np.array([40, 33, 17])
    x, R = rng.normal(size=(3, T_, 1)), rng.integers(-2, 3, size=(3, T_)).astype(np.float64)
    w = rng.normal(size=(T_, 2))
    model = lambda a, l: jnp.tanh(a[..., 0] @ w)                             # noqa: E731
    target = np.array([0, 1, 0])
    for order in ("morf", "lerf"):
        got = pm.pixel_flipping(model, x, R, target, lengths=lengths, order=order, perturb_baseline="zero",
                                features_in_step=3)
        want, _ = om.pm_pixel_flipping(model, x, R, target, lengths, baseline="zero", order=order,
                                       features_in_step=3)
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


RP_CASES = [(2, "morf", "mean", 100), (3, "lerf", "black", 2), (1, "random", "uniform", 100),
            (4, "morf", "vec", 100), (5, "lerf", "zero", 1)]


@pytest.mark.parametrize("patch,order,baseline,regions", RP_CASES)
def test_region_perturbation_matches_oracle(patch, order, baseline, regions):
    x, R, target = _data(8)
    b = VEC if baseline == "vec" else baseline
    kw = dict(lengths=LENGTHS, key=KEY, patch_size=patch, order=order, regions_evaluation=regions,
              perturb_baseline=b)
    curve = pm.region_perturbation(model_pad, x, R, target, **kw)
    auc = pm.region_perturbation(model_pad, x, R, target, return_auc_per_sample=True, **kw)
    want_curve, want_auc = om.pm_region_perturbation(model_pad, x, R, target, LENGTHS, baseline=b,
                                                     patch_size=patch, order=order,
                                                     regions_evaluation=regions, key=KEY)
    assert curve.shape == (N, min(regions, -(-T // patch)))
    np.testing.assert_allclose(curve, want_curve, rtol=0, atol=TOL)
    np.testing.assert_allclose(auc, want_auc, rtol=0, atol=TOL)


@pytest.mark.parametrize("baseline,softmax,model", [("zero", False, "pad"), ("uniform", True, "pad"),
                                                    ("mean", False, "lstm")])
def test_faithfulness_correlation_matches_oracle(baseline, softmax, model):
    x, R, target = _data(9)
    fn, oracle_fn = (model_pad, model_pad) if model == "pad" else (model_lstm, _model_lstm_jit)
    got = pm.faithfulness_correlation(fn, x, R, target, lengths=LENGTHS, key=KEY, subset_size=2, nr_runs=6,
                                      perturb_baseline=baseline, softmax=softmax)
    want = om.pm_faithfulness_correlation(oracle_fn, x, R, target, LENGTHS, baseline=baseline, subset_size=2,
                                          nr_runs=6, key=KEY, softmax=softmax)
    # length 2 with subset_size 2: every run replaces the whole sequence -> constant -> nan
    assert np.isnan(got[2]) and np.isnan(want[2])
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


@pytest.mark.parametrize("baseline,samples,fis,kw", [
    ("uniform", 3, 1, None), ("black", 4, 2, None),
    ("noise", 2, 2, dict(uniform_low=-1.0, uniform_high=1.0))])
def test_monotonicity_correlation_matches_oracle(baseline, samples, fis, kw):
    x, R, target = _data(10)
    got = pm.monotonicity_correlation(model_pad, x, R, target, lengths=LENGTHS, key=KEY, nr_samples=samples,
                                      features_in_step=fis, perturb_baseline=baseline, perturb_func_kwargs=kw)
    lo, hi = (kw["uniform_low"], kw["uniform_high"]) if kw else (0.0, 1.0)
    want = om.pm_monotonicity_correlation(model_pad, x, R, target, LENGTHS, baseline=baseline,
                                          nr_samples=samples, features_in_step=fis, key=KEY, low=lo, high=hi)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


@pytest.mark.parametrize("baseline,fis,n_max", [("mean", 1, 0.8), ("uniform", 2, 1.0)])
def test_sensitivity_n_matches_oracle(baseline, fis, n_max):
    lengths = np.array([7, 5, 4, 6, 7])
    x, R, target = _data(11, lengths)
    got = pm.sensitivity_n(model_pad, x, R, target, lengths=lengths, key=KEY, features_in_step=fis,
                           n_max_percentage=n_max, perturb_baseline=baseline)
    want = om.pm_sensitivity_n(model_pad, x, R, target, lengths, baseline=baseline, n_max_percentage=n_max,
                               features_in_step=fis, key=KEY)
    assert got.shape == (int(n_max * 4 // fis),)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


@pytest.mark.parametrize("baseline,softmax", [("black", False), ("mean", True), ("uniform", False),
                                              ("vec", False)])
def test_completeness_matches_oracle(baseline, softmax):
    x, R, target = _data(12)
    b = VEC if baseline == "vec" else baseline
    R3 = np.random.default_rng(13).normal(size=(N, T, F))
    got = pm.completeness(model_pad, x, R3, target, lengths=LENGTHS, key=KEY, perturb_baseline=b,
                          softmax=softmax)
    want = om.pm_completeness(model_pad, x, R3, target, LENGTHS, baseline=b, softmax=softmax, key=KEY)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    doubled = pm.completeness(model_pad, x, R3, target, lengths=LENGTHS, key=KEY, perturb_baseline=b,
                              softmax=softmax, output_func=lambda d: 2 * d)
    sum_R = (R3.sum(2) * (np.arange(T) < LENGTHS[:, None])).sum(1)
    np.testing.assert_allclose(doubled, sum_R - 2 * (sum_R - want), rtol=0, atol=TOL)   # sum R - 2 delta


# ---------------------------------------------------------------------------------------------
# invariants on a linear model with exact relevance R = x * w

def _linear(seed=20, positive=True):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(T, F, C))
    b = rng.normal(size=C)
    x = rng.uniform(0.1, 1.0, size=(N, T, F)) if positive else rng.normal(size=(N, T, F))
    target = rng.integers(0, C, N)
    Wt = np.abs(W) if positive else W
    model = lambda a, l: jnp.einsum("ntf,tfc->nc", a, Wt) + b      # noqa: E731
    R = np.einsum("ntf,tfn->nt", x, Wt[:, :, target])
    return model, x, R, target, Wt, b


def test_pixel_flipping_linear_exact_curve():
    model, x, R, target, W, b = _linear()
    f0 = np.einsum("ntf,tfc->nc", x, W)[np.arange(N), target] + b[target]
    kw = dict(perturb_baseline="zero", softmax=False)
    morf = pm.pixel_flipping(model, x, R, target, **kw)
    lerf = pm.pixel_flipping(model, x, R, target, order="lerf", **kw)
    rand = pm.pixel_flipping(model, x, R, target, order="random", key=KEY, **kw)
    want = f0[:, None] - np.cumsum(-np.sort(-R, axis=1), axis=1)        # remove the largest first
    np.testing.assert_allclose(morf, want, rtol=0, atol=1e-12)
    assert np.all(np.diff(morf, axis=1) < 0)                              # all R > 0: strictly falling
    assert np.all(morf[:, :-1] < lerf[:, :-1]) and np.allclose(morf[:, -1], lerf[:, -1])
    auc = {o: pm.pixel_flipping(model, x, R, target, order=o, key=KEY, return_auc_per_sample=True, **kw)
           for o in ("morf", "lerf", "random")}
    assert np.all(auc["morf"] <= auc["random"]) and np.all(auc["random"] <= auc["lerf"])
    assert np.all(rand[:, :-1] >= morf[:, :-1] - 1e-12)


def test_faithfulness_correlation_exact_beats_random():
    model, x, R, target, _, _ = _linear(21, positive=False)
    kw = dict(subset_size=3, nr_runs=20, key=KEY, perturb_baseline="zero")
    exact = pm.faithfulness_correlation(model, x, R, target, **kw)
    np.testing.assert_allclose(exact, 1.0, atol=1e-12)                  # sum_S R == f(x) - f(x_S)
    rnd = np.random.default_rng(0).normal(size=R.shape)
    random_score = pm.faithfulness_correlation(model, x, rnd, target, **kw)
    assert np.all(random_score < 0.99) and random_score.mean() < 0.6


def test_monotonicity_and_sensitivity_n_and_completeness_on_exact_linear_relevance():
    model, x, R, target, _, b = _linear(22, positive=False)
    mono = pm.monotonicity_correlation(model, x, R, target, perturb_baseline="zero", softmax=False)
    np.testing.assert_allclose(mono, 1.0, atol=1e-12)                    # variance = R_t^2, ranked by |R_t|
    sens = pm.sensitivity_n(model, x, R, target, perturb_baseline="zero", softmax=False)
    assert sens[0] == pytest.approx(1.0, abs=1e-12)                       # first point: drop == R of step
    gap = pm.completeness(model, x, R, target, perturb_baseline="zero")
    np.testing.assert_allclose(gap, 0.0, atol=1e-12)
    assert pm.completeness(model, x, R, target, perturb_baseline="zero", tolerance=1e-9).all()
    assert not pm.completeness(model, x, 1.1 * R, target, perturb_baseline="zero", tolerance=1e-9).all()
    region = pm.region_perturbation(model, x, R, target, patch_size=2, perturb_baseline="zero", softmax=False)
    # T=7, p=2: one step of padding, put after the end (floor of half): windows {0,1} {2,3} {4,5} {6}
    sums = np.stack([R[:, 0:2].sum(1), R[:, 2:4].sum(1), R[:, 4:6].sum(1), R[:, 6]], 1)
    np.testing.assert_allclose(region, np.cumsum(-np.sort(-sums, 1), 1), atol=1e-12)


def test_padding_is_never_perturbed():
    """Class 1 reads only the padding: its score must stay exactly the same along every curve."""
    x, R, _ = _data(30)
    valid = jnp.arange(T) < jnp.asarray(LENGTHS)[:, None]

    def model(a, lengths):
        pad_sum = jnp.sum(jnp.where(valid[..., None], 0.0, a), (1, 2))
        return jnp.stack([jnp.sum(a, (1, 2)), pad_sum], -1)

    t1 = np.ones(N, int)
    base = 7.5 * F * (T - LENGTHS)
    for b in ("zero", "mean", "uniform"):
        curve = pm.pixel_flipping(model, x, R, t1, lengths=LENGTHS, key=KEY, perturb_baseline=b,
                                  softmax=False)
        np.testing.assert_array_equal(curve, np.broadcast_to(base[:, None], curve.shape))
        assert np.all(pm.completeness(model, x, 0 * R, t1, lengths=LENGTHS, key=KEY, perturb_baseline=b) == 0)


# ---------------------------------------------------------------------------------------------
# jit / eager, determinism, float32, errors

def test_jit_equals_eager_and_key_determinism():
    x, R, target = _data(31)
    kw = dict(lengths=LENGTHS, key=KEY, perturb_baseline="uniform")
    jitted = pm.pixel_flipping(model_pad, x, R, target, order="random", **kw)
    fc = pm.faithfulness_correlation(model_pad, x, R, target, subset_size=2, nr_runs=4, **kw)
    with jax.disable_jit():
        eager = pm.pixel_flipping(model_pad, x, R, target, order="random", **kw)
        fc_eager = pm.faithfulness_correlation(model_pad, x, R, target, subset_size=2, nr_runs=4, **kw)
    np.testing.assert_allclose(jitted, eager, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fc, fc_eager, rtol=0, atol=1e-12, equal_nan=True)
    again = pm.pixel_flipping(model_pad, x, R, target, order="random", **kw)
    np.testing.assert_array_equal(jitted, again)
    other = pm.pixel_flipping(model_pad, x, R, target, order="random", **{**kw, "key": jax.random.key(8)})
    assert not np.allclose(jitted, other)
    legacy = pm.pixel_flipping(model_pad, x, R, target, order="random",
                               **{**kw, "key": jax.random.PRNGKey(8)})
    assert legacy.shape == jitted.shape and np.all(np.isfinite(legacy))


def test_float32_inputs_give_float64_results_close_to_float64():
    x, R, target = _data(32)
    x32, R32 = x.astype(np.float32), R.astype(np.float32)
    for f in (pm.pixel_flipping, pm.region_perturbation, pm.completeness):
        got = f(model_pad, x32, R32, target, lengths=LENGTHS, perturb_baseline="mean")
        want = f(model_pad, x, R, target, lengths=LENGTHS, perturb_baseline="mean")
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _bad(match, f=pm.pixel_flipping, x=None, R=None, target=None, **kw):
    x0, R0, t0 = _data(40)
    with pytest.raises(ValueError, match=match):
        f(kw.pop("model", model_pad), x0 if x is None else x, R0 if R is None else R,
          t0 if target is None else target, **kw)


def test_errors_name_the_argument():
    _bad(r"pixel_flipping: order must be one of \('morf', 'lerf', 'random'\), got 'most'", order="most")
    _bad("features_in_step must be an int >= 1, got 0", features_in_step=0)
    _bad(r"x must be a floating array of shape \(N, T, F\)", x=np.ones((N, T)))
    _bad(r"R must be a floating array of shape \(N, T\) = \(5, 7\) or \(N, T, F\) = \(5, 7, 2\)",
         R=np.ones((N, 6)))
    _bad("R contains 1 NaN/inf", R=np.where(np.arange(N * T).reshape(N, T) == 3, np.nan, 1.0))
    _bad(r"lengths must lie in \[1, 7\]", lengths=np.array([0, 1, 2, 3, 4]))
    _bad(r"lengths must be an integer array of shape \(5,\)", lengths=np.ones(N))
    _bad(r"target must lie in \[0, 3\) for C=3 classes, got values in \[0, 3\]",
         target=np.array([0, 1, 2, 3, 0]))
    _bad(r"model_fn\(x, lengths\) must return scores of shape \(N, C\) = \(5, C\), got \(5,\)",
         model=lambda a, l: a.sum((1, 2)))
    _bad("model_fn must be callable", model=3)
    _bad("perturb_baseline must be one of", perturb_baseline="gray")
    _bad(r"an \(F,\) = \(2,\) or \(N, T, F\) = \(5, 7, 2\) array, got shape \(3,\)",
         perturb_baseline=np.ones(3))
    _bad("perturb_func_kwargs accepts only 'uniform_low' and 'uniform_high', got \\['perturb_std'\\]",
         perturb_func_kwargs={"perturb_std": 1.0})
    _bad("needs finite uniform_low <= uniform_high", perturb_func_kwargs={"uniform_low": 2.0})
    _bad(r"key must be a jax.random key \(order='random'", order="random")
    _bad(r"key must be a jax.random key \(perturb_baseline='uniform'", f=pm.completeness,
         perturb_baseline="uniform")
    _bad("key must be a jax.random key", key="seed", perturb_baseline="uniform")
    _bad(r"subset_size must lie in \[1, min\(lengths\)\] = \[1, 2\], got 3", f=pm.faithfulness_correlation,
         subset_size=3, key=KEY, lengths=np.array([7, 5, 2, 6, 3]))
    _bad("nr_runs must be an int >= 2, got 1", f=pm.faithfulness_correlation, subset_size=1, nr_runs=1,
         key=KEY)
    _bad("key must be a jax.random key \\(the subsets are random\\)", f=pm.faithfulness_correlation,
         subset_size=1)
    _bad(r"int\(n_max_percentage \* min\(lengths\) // features_in_step\) must be >= 1", f=pm.sensitivity_n,
         lengths=np.array([1, 5, 2, 6, 3]))
    _bad(r"n_max_percentage must lie in \(0, 1\]", f=pm.sensitivity_n, n_max_percentage=1.5)
    _bad("eps must be a finite number >= 0", f=pm.monotonicity_correlation, eps=-1.0, key=KEY)
    _bad("patch_size must be an int >= 1, got 2.5", f=pm.region_perturbation, patch_size=2.5)
    _bad("regions_evaluation must be an int >= 1", f=pm.region_perturbation, regions_evaluation=0)
    _bad("tolerance must be None or a number >= 0", f=pm.completeness, tolerance=-1)
    _bad(r"output_func must map the \(5,\) score differences to shape \(5,\), got \(\)", f=pm.completeness,
         output_func=np.sum)
    with pytest.raises(ValueError, match=r"perturb: mask must be a bool array of shape \(N, T\) = \(5, 7\)"):
        pm.perturb(np.ones((N, T, F)), np.ones((N, T)))


# ---------------------------------------------------------------------------------------------
# Quantus 0.6.0 itself (the same torch model, inputs, attributions and fixed baselines / orders)

def _quantus():
    q = pytest.importorskip("quantus", reason="Quantus is not installed (pip install quantus==0.6.0)")
    torch = pytest.importorskip("torch")
    if q.__version__ != "0.6.0":
        pytest.skip(f"the comparison is written for Quantus 0.6.0, found {q.__version__}")
    return q, torch


class _QLinear:
    """``f(x) = flatten(x) @ W + b`` as a torch module on Quantus' channel-first ``(N, F, T)`` layout and
    as a JAX function on lrpjax's ``(N, T, F)``."""

    def __init__(self, torch, T_, F_, seed):
        rng = np.random.default_rng(seed)
        self.W, self.b = rng.normal(size=(T_ * F_, C)), rng.normal(size=C)
        lin = torch.nn.Linear(T_ * F_, C).double()
        lin.weight.data, lin.bias.data = torch.tensor(self.W.T), torch.tensor(self.b)

        class M(torch.nn.Module):
            def __init__(s):
                super().__init__()
                s.lin = lin

            def forward(s, a):
                return s.lin(a.permute(0, 2, 1).reshape(a.shape[0], -1))

        self.torch = M().eval()
        W, b = self.W, self.b
        self.jax = lambda a, l: a.reshape(a.shape[0], -1) @ W + b          # noqa: E731


def _qcall(metric, model, x, a, y, **kw):
    import torch
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)              # Quantus makes its tensors in the default dtype
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = metric(model, np.ascontiguousarray(x.transpose(0, 2, 1)), y, np.ascontiguousarray(a),
                         channel_first=True, device="cpu", **kw)
    finally:
        torch.set_default_dtype(default)
    return np.asarray(out, np.float64)


def _qdata(T_, F_, seed):
    rng = np.random.default_rng(seed)
    x, R = rng.normal(size=(N, T_, F_)), rng.normal(size=(N, T_))
    # Quantus ranks single values: spread each step's relevance over its F values, slightly decreasing,
    # so that its order visits a step's F values together (features_in_step = F * ours)
    a = np.broadcast_to(R[:, None, :], (N, F_, T_)) - 1e-7 * np.arange(F_)[None, :, None]
    return x, R, a, rng.integers(0, C, N)


def test_quantus_region_perturbation_and_pixel_flipping(monkeypatch):
    quantus, torch = _quantus()
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)   # Quantus' AUC; gone in NumPy 2.4
    m = _QLinear(torch, 8, 2, 50)
    x, R, a, y = _qdata(8, 2, 51)
    common = dict(normalise=False, disable_warnings=True, perturb_baseline="black")
    for order in ("morf", "lerf"):
        for p in (2, 3, 5):                              # 8 = 4*2 = 3*3 - 1 = 2*5 - 2: centred windows
            q = quantus.RegionPerturbation(patch_size=p, order=order, **common)
            ours = pm.region_perturbation(m.jax, x, R, y, patch_size=p, order=order)
            np.testing.assert_allclose(ours, _qcall(q, m.torch, x, a, y), rtol=0, atol=1e-12)
    for fis in (1, 2):
        for auc in (False, True):
            q = quantus.PixelFlipping(features_in_step=2 * fis, return_auc_per_sample=auc, **common)
            ours = pm.pixel_flipping(m.jax, x, R, y, features_in_step=fis, return_auc_per_sample=auc)
            np.testing.assert_allclose(ours, _qcall(q, m.torch, x, a, y), rtol=0, atol=1e-12)


def test_quantus_monotonicity_sensitivity_n_completeness():
    quantus, torch = _quantus()
    m = _QLinear(torch, 8, 2, 52)
    x, R, a, y = _qdata(8, 2, 53)
    common = dict(normalise=False, disable_warnings=True, perturb_baseline="black")
    q = quantus.MonotonicityCorrelation(nr_samples=2, features_in_step=2, **common)
    ours = pm.monotonicity_correlation(m.jax, x, R, y, perturb_baseline="black", nr_samples=2)
    np.testing.assert_allclose(ours, _qcall(q, m.torch, x, np.abs(a), y), rtol=0, atol=1e-12)
    m1 = _QLinear(torch, 8, 1, 54)                       # F = 1: Quantus counts n in values, not steps
    x1, R1, a1, y1 = _qdata(8, 1, 55)
    q = quantus.SensitivityN(features_in_step=1, return_aggregate=False, **common)
    np.testing.assert_allclose(pm.sensitivity_n(m1.jax, x1, R1, y1), _qcall(q, m1.torch, x1, a1, y1),
                               rtol=0, atol=1e-12)
    deltas = []
    q = quantus.Completeness(output_func=lambda d: deltas.append(d) or d, **common)
    flags = _qcall(q, m.torch, x, a, y)
    ours = pm.completeness(m.jax, x, a.transpose(0, 2, 1), y, perturb_baseline="black")   # R (N, T, F)
    np.testing.assert_allclose(ours, a.sum((1, 2)) - deltas[0], rtol=0, atol=1e-12)
    assert not flags.any() and not (np.abs(ours) <= 0.0).any()


def test_quantus_faithfulness_correlation_with_our_subsets(monkeypatch):
    """Quantus draws subsets with ``np.random.choice``: feed it the ones our ``key`` gives."""
    quantus, torch = _quantus()
    m = _QLinear(torch, 8, 1, 56)
    x, R, a, y = _qdata(8, 1, 57)
    runs, size = 5, 3
    k_order = jax.random.split(KEY)[0]
    subsets = iter([np.argsort(np.asarray(jax.random.uniform(jax.random.fold_in(k_order, r), (N, 8),
                                                             jnp.float64))[n], kind="stable")[:size]
                    for r in range(runs) for n in range(N)])
    monkeypatch.setattr(np.random, "choice", lambda *args, **kw: next(subsets))
    q = quantus.FaithfulnessCorrelation(nr_runs=runs, subset_size=size, normalise=False,
                                        disable_warnings=True, return_aggregate=False)
    want = _qcall(q, m.torch, x, a, y)
    monkeypatch.undo()
    got = pm.faithfulness_correlation(m.jax, x, R, y, subset_size=size, nr_runs=runs, key=KEY)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_quantus_pixel_flipping_torch_lstm_through_importer():
    quantus, torch = _quantus()
    from lrpjax.importers import torch_lstm
    torch.manual_seed(0)
    lstm, head = torch.nn.LSTM(2, 4, batch_first=True).double(), torch.nn.Linear(4, C).double()

    class M(torch.nn.Module):
        def __init__(s):
            super().__init__()
            s.lstm, s.head = lstm, head

        def forward(s, a):                                 # Quantus' (N, F, T)
            return s.head(s.lstm(a.permute(0, 2, 1))[1][0][-1])

    [p] = torch_lstm(lstm.state_dict())
    Wh, bh = head.weight.detach().numpy().T, head.bias.detach().numpy()
    jm = lambda a, l: lrpjax.lstm(p, a, lengths=l)[1][1] @ Wh + bh          # noqa: E731
    x, R, a, y = _qdata(6, 2, 58)
    q = quantus.PixelFlipping(features_in_step=2, normalise=False, disable_warnings=True,
                              perturb_baseline="black")
    np.testing.assert_allclose(pm.pixel_flipping(jm, x, R, y), _qcall(q, M().eval(), x, a, y), rtol=0,
                               atol=1e-12)
