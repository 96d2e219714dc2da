"""lrpjax.metrics against literal loops and small cases worked out by hand."""
import doctest
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lrpjax
from lrpjax import metrics


# ---------------------------------------------------------------------------------------------
# topk_accuracy

def topk_oracle(R, marked, mask=None):
    hits, counted = 0, 0
    for n in range(R.shape[0]):
        if mask is not None and not mask[n]:
            continue
        counted += 1
        a = [abs(v) for v in R[n]]
        k = len(marked[n])
        order = sorted(range(len(a)), key=lambda t: -a[t])
        top = set(order[:k])
        boundary_tie = k < len(a) and a[order[k - 1]] == a[order[k]]
        hits += int(top == set(int(m) for m in marked[n]) and not boundary_tie)
    return hits / counted if counted else float("nan")


def test_topk_accuracy_by_hand():
    R = np.array([[0.1, -3.0, 2.0, 0.0],      # top-2 |R| = {1, 2}: hit
                  [1.0, 1.0, 1.0, 0.0],       # tie at the boundary: miss
                  [5.0, 0.0, 0.0, 4.0],       # top-2 = {0, 3}, marked {0, 1}: miss
                  [0.0, 0.0, -1.0, 2.0]])     # top-2 = {2, 3}: hit (order of marked irrelevant)
    marked = np.array([[1, 2], [0, 1], [0, 1], [3, 2]])
    assert metrics.topk_accuracy(R, marked) == 0.5
    assert metrics.topk_accuracy(R, marked, mask=np.array([True, False, False, True])) == 1.0
    assert metrics.topk_accuracy(R, marked, mask=np.array([False, True, True, False])) == 0.0
    assert np.isnan(metrics.topk_accuracy(R, marked, mask=np.zeros(4, bool)))
    assert metrics.topk_accuracy(np.zeros((2, 3)), np.array([[0], [1]])) == 0.0     # constant: no hit
    assert metrics.topk_accuracy(jnp.asarray(R), jnp.asarray(marked)) == 0.5       # JAX arrays


def test_topk_accuracy_matches_loop_with_ties():
    rng = np.random.default_rng(0)
    N, T, k = 300, 7, 2
    R = rng.integers(-3, 4, size=(N, T)).astype(np.float64)   # many ties
    marked = np.stack([rng.choice(T, size=k, replace=False) for _ in range(N)])
    R[np.arange(N)[:, None], marked] *= rng.integers(1, 4, size=(N, 1))   # some rows hit
    mask = rng.random(N) < 0.7
    want = topk_oracle(R, marked, mask)
    assert 0.05 < want < 0.95
    assert metrics.topk_accuracy(R, marked, mask) == pytest.approx(want, abs=1e-15)
    assert metrics.topk_accuracy(R, marked) == pytest.approx(topk_oracle(R, marked), abs=1e-15)
    assert metrics.topk_accuracy(R.astype(np.float32), marked) == pytest.approx(topk_oracle(R, marked))


def test_topk_accuracy_errors():
    R = np.zeros((2, 4))
    with pytest.raises(ValueError,
                       match=r"R_steps must be a floating array of shape \(N, T\).*got shape \(4,\)"):
        metrics.topk_accuracy(R[0], np.array([[0]]))
    with pytest.raises(ValueError, match=r"marked must be an integer array of shape \(N, k\) = \(2, k\)"):
        metrics.topk_accuracy(R, np.array([[0], [1], [2]]))
    with pytest.raises(ValueError, match=r"marked positions must lie in \[0, 4\).*\[0, 4\]"):
        metrics.topk_accuracy(R, np.array([[0], [4]]))
    with pytest.raises(ValueError, match="distinct"):
        metrics.topk_accuracy(R, np.array([[0, 0], [1, 2]]))
    with pytest.raises(ValueError, match=r"mask must be a bool array of shape \(2,\)"):
        metrics.topk_accuracy(R, np.array([[0], [1]]), mask=np.array([1, 0]))
    with pytest.raises(ValueError, match="NaN"):
        metrics.topk_accuracy(np.array([[np.nan, 0.0]]), np.array([[0]]))


# ---------------------------------------------------------------------------------------------
# marked_share

def test_marked_share_matches_loop():
    rng = np.random.default_rng(1)
    N, T = 20, 6
    R = rng.normal(size=(N, T))
    marked = rng.integers(0, T, size=(N, 3))            # repeats allowed: counted once
    lengths = rng.integers(1, T + 1, size=N)
    for L in (None, lengths):
        want = np.zeros(N)
        for n in range(N):
            valid = range(T if L is None else L[n])
            num = sum(abs(R[n, t]) for t in valid if t in set(marked[n].tolist()))
            den = sum(abs(R[n, t]) for t in valid)
            want[n] = num / den
        np.testing.assert_allclose(metrics.marked_share(R, marked, L), want, rtol=1e-13)


def test_marked_share_by_hand_and_zero_rows():
    R = np.array([[1.0, -3.0, 0.0, 4.0], [0.0, 0.0, 5.0, 5.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = metrics.marked_share(R, np.array([[1, 3], [0, 1]]), lengths=np.array([4, 2]))
    np.testing.assert_allclose(got[0], 7.0 / 8.0)
    assert np.isnan(got[1])                             # nothing in its 2 valid steps
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 4\]"):
        metrics.marked_share(R, np.array([[1], [0]]), lengths=np.array([5, 1]))
    with pytest.raises(ValueError, match=r"lengths must be an integer array of shape \(2,\)"):
        metrics.marked_share(R, np.array([[1], [0]]), lengths=np.array([4.0, 1.0]))


# ---------------------------------------------------------------------------------------------
# pearson

def pearson_oracle(a, b):
    a, b = list(np.ravel(a)), list(np.ravel(b))
    n = len(a)
    ma, mb = sum(a) / n, sum(b) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    return cov / (va * vb) ** 0.5


def test_pearson_matches_loop_and_is_nan_safe():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(4, 6))
    b = 0.5 * a + rng.normal(size=(4, 6))
    assert metrics.pearson(a, b) == pytest.approx(pearson_oracle(a, b), abs=1e-14)
    assert metrics.pearson(jnp.asarray(a, jnp.float32), b) == pytest.approx(pearson_oracle(a, b), rel=1e-5)
    assert metrics.pearson(a, -3 * a + 1) == pytest.approx(-1.0, abs=1e-15)
    assert metrics.pearson([1.0, 2.0, 3.0], [2.0, 4.0, 7.0]) == pytest.approx(pearson_oracle(
        [1.0, 2.0, 3.0], [2.0, 4.0, 7.0]), abs=1e-15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(metrics.pearson(np.ones(5), np.arange(5.0)))
        assert np.isnan(metrics.pearson(np.arange(5.0), np.zeros(5)))
        assert np.isnan(metrics.pearson([1.0], [2.0]))
    with pytest.raises(ValueError,
                       match=r"same number of values.*\(3,\) \(3 values\) and \(4,\) \(4 values\)"):
        metrics.pearson(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="finite"):
        metrics.pearson(np.array([1.0, np.nan]), np.ones(2))


# ---------------------------------------------------------------------------------------------
# deletion_curve

N, T, E, D, C = 6, 5, 3, 4, 3


def make_model():
    k1, k2 = jax.random.split(jax.random.key(3))
    p = lrpjax.init_lstm(k1, E, D)
    W = 2.0 * jax.random.normal(k2, (D, C))
    return lambda x, lengths: lrpjax.dense(lrpjax.lstm(p, x, lengths=lengths)[1][1], W)


MODEL = make_model()        # one function object: deletion_curve compiles once per shape


def deletion_oracle(model_fn, x, lengths, labels, R, k_max, order, fill):
    """Literal loop: per k and sentence, sort the valid words, delete the first k, one model call."""
    f = jax.jit(model_fn)
    curve = []
    for k in range(k_max + 1):
        correct = 0
        for n in range(x.shape[0]):
            L = int(lengths[n])
            sign = -1.0 if order == "most" else 1.0
            ranked = sorted(range(L), key=lambda t: (sign * R[n, t], t))   # ties: earlier first
            xn = np.array(x[n])
            for t in ranked[:k]:
                xn[t, :] = fill
            logits = np.asarray(f(jnp.asarray(xn[None]), jnp.asarray([L])))[0]
            correct += int(np.argmax(logits) == labels[n])
        curve.append(correct / x.shape[0])
    return np.array(curve)


@pytest.fixture(scope="module")
def deletion_data():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(N, T, E))
    lengths = np.array([5, 3, 1, 4, 5, 2])
    x[np.arange(T)[None, :] >= lengths[:, None]] = 0.0
    logits = np.asarray(MODEL(jnp.asarray(x), jnp.asarray(lengths)))
    labels = np.argmax(logits, axis=-1)                 # all correct at k = 0
    labels[[1, 4]] = (labels[[1, 4]] + 1) % C           # ... but two
    R = np.round(rng.normal(size=(N, T)), 1)            # coarse values: some ties
    R[0, 1] = R[0, 3]
    return x, lengths, labels, R


@pytest.mark.parametrize("order", ["most", "least"])
def test_deletion_curve_matches_loop(order, deletion_data):
    x, lengths, labels, R = deletion_data
    for fill in (0.0, np.array([0.5, -1.0, 2.0])):
        got = metrics.deletion_curve(MODEL, jnp.asarray(x), lengths, labels, R, k_max=6, order=order,
                                     fill=fill)
        want = deletion_oracle(MODEL, x, lengths, labels, R, 6, order, fill)
        np.testing.assert_allclose(got, want, atol=1e-15)
        assert got.shape == (7,) and got[0] == pytest.approx(4 / 6)
    assert len(set(got.tolist())) > 1                   # deletion changes predictions


def test_deletion_curve_by_hand_and_one_compilation():
    traces = []

    def model(x, lengths):                               # class 0 iff the valid words sum to > 0
        traces.append(1)
        valid = jnp.arange(x.shape[1]) < lengths[:, None]
        s = jnp.sum(jnp.where(valid[..., None], x, 0.0), axis=(1, 2))
        return jnp.stack([s, jnp.zeros_like(s)], -1)

    x = jnp.array([[[3.0], [-1.0], [0.5], [9.0]],      # length 3: the 9.0 is padding
                   [[-2.0], [1.0], [0.0], [0.0]]])     # length 2, label 1
    lengths, labels = np.array([3, 2]), np.array([0, 1])
    R = np.array([[3.0, -1.0, 0.5, 100.0], [-2.0, 1.0, 0.0, 0.0]])
    most = metrics.deletion_curve(model, x, lengths, labels, R, k_max=3)
    # k=1: row 0 loses 3.0 -> -0.5 (wrong); row 1 loses 1.0 -> -2 -> class 1 (right)
    # k=2: row 0 -> -1 (wrong); row 1 loses both -> 0 vs 0 -> argmax 0 (wrong); k=3: row 0 -> 0 -> 0 (right)
    np.testing.assert_array_equal(most, [1.0, 0.5, 0.0, 0.5])
    least = metrics.deletion_curve(model, x, lengths, labels, R, k_max=2, order="least")
    # row 0: deletes -1.0 then 0.5 -> 3.5, 3.0 (right); row 1: deletes -2.0 -> 1 > 0 -> class 0 (wrong),
    # then both -> 0 vs 0 -> class 0 (wrong)
    np.testing.assert_array_equal(least, [1.0, 0.5, 0.5])
    n_traces = len(traces)
    metrics.deletion_curve(model, x + 1.0, lengths, labels, R + 1.0, k_max=3)   # same shapes, new values
    assert len(traces) == n_traces                      # compiled once per (model, shapes, k_max, order)


def test_deletion_order_ranks():
    R = jnp.array([[0.5, 2.0, 2.0, -1.0, 7.0]])
    np.testing.assert_array_equal(metrics.deletion_order(R, jnp.array([4]), "most"), [[2, 0, 1, 3, 4]])
    np.testing.assert_array_equal(metrics.deletion_order(R, jnp.array([4]), "least"), [[1, 2, 3, 0, 4]])


def test_deletion_curve_errors(deletion_data):
    x, lengths, labels, R = deletion_data
    xj = jnp.asarray(x)
    with pytest.raises(ValueError, match=r"order must be one of \('most', 'least'\), got 'top'"):
        metrics.deletion_curve(MODEL, xj, lengths, labels, R, order="top")
    with pytest.raises(ValueError, match="k_max must be an int >= 0, got -1"):
        metrics.deletion_curve(MODEL, xj, lengths, labels, R, k_max=-1)
    with pytest.raises(ValueError, match=r"x_emb must be a floating array of shape \(N, T, E\)"):
        metrics.deletion_curve(MODEL, xj[0], lengths, labels, R)
    with pytest.raises(ValueError,
                       match=r"R_steps must have shape \(N, T\) = \(6, 5\) like x_emb, got \(6, 4\)"):
        metrics.deletion_curve(MODEL, xj, lengths, labels, R[:, :4])
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 5\]"):
        metrics.deletion_curve(MODEL, xj, lengths * 0, labels, R)
    with pytest.raises(ValueError, match=r"labels must be an integer array of shape \(6,\)"):
        metrics.deletion_curve(MODEL, xj, lengths, labels[:3], R)
    with pytest.raises(ValueError,
                       match=r"fill must be a number or an array of shape \(3,\), got shape \(2,\)"):
        metrics.deletion_curve(MODEL, xj, lengths, labels, R, fill=np.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        metrics.deletion_curve(MODEL, xj, lengths, labels, R * np.nan)


def test_docstring_examples_run_in_float32():
    import importlib
    import pkgutil
    attempted = 0
    with jax.enable_x64(False):
        for m in pkgutil.iter_modules(metrics.__path__):
            res = doctest.testmod(importlib.import_module(f"lrpjax.metrics.{m.name}"),
                                  optionflags=doctest.NORMALIZE_WHITESPACE)
            assert res.failed == 0, m.name
            attempted += res.attempted
    assert attempted >= 8
