"""Literal NumPy oracles for the evaluation metrics (float64 loops over examples, steps and runs).

Written from the metrics' definitions, not from lrpjax's code. The model is called one example at a
time (a batch of 1). The only shared piece is the random numbers: a metric's documented key schedule
(``k_order, k_fill = jax.random.split(key)``; baseline draw ``j`` = ``jax.random.uniform(
jax.random.fold_in(k_fill, j), x.shape, x.dtype, low, high)``) is reproduced here with ``jax.random``.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np


# ---------------------------------------------------------------------------------------------
# perturbation metrics (lrpjax.metrics.perturbation)

def pm_score(model_fn, row, length, target, softmax):
    """Target score of one example ``row (T, F)``: a logit or a softmax probability, float64."""
    out = np.asarray(model_fn(jnp.asarray(row[None]), jnp.asarray([length], jnp.int32)), np.float64)[0]
    if softmax:
        e = np.exp(out - out.max())
        out = e / e.sum()
    return float(out[target])


def pm_step_relevance(R, lengths, take_abs=False):
    """``(N, T)`` float64: |R| if asked, summed over features when R is ``(N, T, F)``, padding 0."""
    R = np.asarray(R, np.float64)
    N, T = R.shape[:2]
    out = np.zeros((N, T))
    for n in range(N):
        for t in range(lengths[n]):
            vals = np.atleast_1d(R[n, t])
            out[n, t] = sum(abs(v) if take_abs else v for v in vals)
    return out


def pm_keys(key):
    k_order, k_fill = jax.random.split(key)
    return k_order, k_fill


def pm_draw(k_fill, j, shape, dtype, low=0.0, high=1.0):
    return np.asarray(jax.random.uniform(jax.random.fold_in(k_fill, j), shape, dtype, low, high), np.float64)


def pm_fill(x, lengths, baseline, *, key=None, draw=0, low=0.0, high=1.0):
    """``(N, T, F)`` replacement values (only the valid steps' values are ever used)."""
    x = np.asarray(x, np.float64)
    N, T, F = x.shape
    out = np.zeros((N, T, F))
    if isinstance(baseline, str) and baseline in ("uniform", "noise"):
        return pm_draw(pm_keys(key)[1], draw, x.shape, pm_dtype(), low, high)
    for n in range(N):
        L = lengths[n]
        for t in range(T):
            for f in range(F):
                if isinstance(baseline, str):
                    if baseline == "zero":
                        v = 0.0
                    elif baseline == "mean":
                        v = sum(x[n, s, f] for s in range(L)) / L
                    elif baseline == "black":
                        v = min(x[n, s, g] for s in range(L) for g in range(F))
                    elif baseline == "white":
                        v = max(x[n, s, g] for s in range(L) for g in range(F))
                    else:
                        raise ValueError(baseline)
                else:
                    b = np.asarray(baseline, np.float64)
                    v = float(b) if b.ndim == 0 else (b[f] if b.ndim == 1 else b[n, t, f])
                out[n, t, f] = v
    return out


def pm_dtype():
    """The dtype of the draws: that of a float64 ``x`` (the oracle tests run with x64 on)."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def pm_perturbed(x, n, steps, fill):
    row = np.array(x[n], np.float64)
    for t in steps:
        row[t] = fill[n, t]
    return row


def pm_order(values, length, descending):
    """Valid steps sorted by value (ties: earlier step first)."""
    return sorted(range(length), key=lambda t: ((-values[t]) if descending else values[t], t))


def pm_trapezoid(points):
    return sum((points[i] + points[i + 1]) / 2.0 for i in range(len(points) - 1))


def pm_pearson(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2:
        return float("nan")
    da, db = a - a.mean(), b - b.mean()
    sa, sb = math.sqrt(sum(v * v for v in da)), math.sqrt(sum(v * v for v in db))
    if sa == 0 or sb == 0:
        return float("nan")
    return sum(p * q for p, q in zip(da, db)) / (sa * sb)


def pm_average_ranks(a):
    a = list(a)
    ranks = [0.0] * len(a)
    for i, v in enumerate(a):
        below = sum(1 for w in a if w < v)
        equal = sum(1 for w in a if w == v)
        ranks[i] = below + (equal + 1) / 2.0
    return ranks


def pm_order_for(order, R, n, length, key, shape):
    if order == "random":
        u = np.asarray(jax.random.uniform(pm_keys(key)[0], shape, pm_dtype()), np.float64)
        return pm_order(u[n], length, descending=False)
    return pm_order(R[n], length, descending=(order == "morf"))


def pm_pixel_flipping(model_fn, x, R, target, lengths, *, baseline, order="morf", features_in_step=1,
                      softmax=True, take_abs=False, key=None, low=0.0, high=1.0):
    """Curves ``(N, ceil(T / fis))`` and AUCs ``(N,)`` (each over the sequence's own points)."""
    x = np.asarray(x, np.float64)
    N, T, _ = x.shape
    Rs = pm_step_relevance(R, lengths, take_abs)
    fill = pm_fill(x, lengths, baseline, key=key, draw=0, low=low, high=high)
    K = -(-T // features_in_step)
    curves, aucs = np.zeros((N, K)), np.zeros(N)
    for n in range(N):
        seq = pm_order_for(order, Rs, n, lengths[n], key, (N, T))
        for k in range(K):
            row = pm_perturbed(x, n, seq[:(k + 1) * features_in_step], fill)
            curves[n, k] = pm_score(model_fn, row, lengths[n], target[n], softmax)
        aucs[n] = pm_trapezoid(list(curves[n, :-(-lengths[n] // features_in_step)]))
    return curves, aucs


def pm_region_perturbation(model_fn, x, R, target, lengths, *, baseline, patch_size, order="morf",
                           regions_evaluation=100, softmax=True, take_abs=False, key=None):
    """Curves of ``f(x) - f(x_k)``, ``(N, min(regions_evaluation, ceil(T / p)))``, and their areas."""
    x = np.asarray(x, np.float64)
    N, T, _ = x.shape
    p = patch_size
    Rs = pm_step_relevance(R, lengths, take_abs)
    fill = pm_fill(x, lengths, baseline, key=key, draw=0)
    K = min(regions_evaluation, -(-T // p))
    curves, aucs = np.zeros((N, K)), np.zeros(N)
    for n in range(N):
        L = lengths[n]
        pad_total = (p - L % p) % p
        start = -(pad_total // 2)                      # the centred first window starts here
        windows = []
        while start < L:
            windows.append([t for t in range(start, start + p) if 0 <= t < L])
            start += p
        sums = [sum(Rs[n, t] for t in w) for w in windows]
        if order == "random":
            u = np.asarray(jax.random.uniform(pm_keys(key)[0], (N, -(-T // p)), pm_dtype()), np.float64)
            ranked = pm_order(u[n], len(windows), descending=False)
        else:
            ranked = pm_order(sums, len(windows), descending=(order == "morf"))
        y0 = pm_score(model_fn, x[n], L, target[n], softmax)
        done = []
        for k in range(K):
            if k < len(ranked):
                done += windows[ranked[k]]
            curves[n, k] = y0 - pm_score(model_fn, pm_perturbed(x, n, done, fill), L, target[n], softmax)
        aucs[n] = pm_trapezoid(list(curves[n, :min(regions_evaluation, len(windows))]))
    return curves, aucs


def pm_faithfulness_correlation(model_fn, x, R, target, lengths, *, baseline, subset_size, nr_runs, key,
                                softmax=False, take_abs=False):
    x = np.asarray(x, np.float64)
    N, T, _ = x.shape
    Rs = pm_step_relevance(R, lengths, take_abs)
    k_order = pm_keys(key)[0]
    out = np.zeros(N)
    for n in range(N):
        atts, drops = [], []
        y0 = pm_score(model_fn, x[n], lengths[n], target[n], softmax)
        for r in range(nr_runs):
            u = np.asarray(jax.random.uniform(jax.random.fold_in(k_order, r), (N, T), pm_dtype()), np.float64)
            subset = pm_order(u[n], lengths[n], descending=False)[:subset_size]
            fill = pm_fill(x, lengths, baseline, key=key, draw=r)
            atts.append(sum(Rs[n, t] for t in subset))
            drops.append(y0 - pm_score(model_fn, pm_perturbed(x, n, subset, fill), lengths[n], target[n],
                                       softmax))
        out[n] = pm_pearson(atts, drops)
    return out


def pm_monotonicity_correlation(model_fn, x, R, target, lengths, *, baseline, nr_samples,
                                features_in_step=1, eps=1e-5, softmax=True, take_abs=True, key=None,
                                low=0.0, high=1.0):
    x = np.asarray(x, np.float64)
    N, T, _ = x.shape
    fis = features_in_step
    Rs = pm_step_relevance(R, lengths, take_abs)
    random_fill = isinstance(baseline, str) and baseline in ("uniform", "noise")
    out = np.zeros(N)
    for n in range(N):
        L = lengths[n]
        y0 = pm_score(model_fn, x[n], L, target[n], softmax)
        inv = (1.0 / abs(y0)) ** 2 if abs(y0) >= eps else 1.0
        seq = pm_order(Rs[n], L, descending=False)
        atts, variances = [], []
        for k in range(-(-L // fis)):
            group = seq[k * fis:(k + 1) * fis]
            sq = []
            for s in range(nr_samples):
                draw = k * nr_samples + s if random_fill else 0
                fill = pm_fill(x, lengths, baseline, key=key, draw=draw, low=low, high=high)
                y = pm_score(model_fn, pm_perturbed(x, n, group, fill), L, target[n], softmax)
                sq.append((y - y0) ** 2)
            variances.append(sum(sq) / nr_samples * inv)
            atts.append(sum(Rs[n, t] for t in group))
        out[n] = pm_pearson(pm_average_ranks(atts), pm_average_ranks(variances))
    return out


def pm_sensitivity_n(model_fn, x, R, target, lengths, *, baseline, n_max_percentage=0.8,
                     features_in_step=1, softmax=True, take_abs=False, key=None):
    x = np.asarray(x, np.float64)
    N, T, _ = x.shape
    fis = features_in_step
    Rs = pm_step_relevance(R, lengths, take_abs)
    fill = pm_fill(x, lengths, baseline, key=key, draw=0)
    K = int(n_max_percentage * min(lengths) // fis)
    atts, drops = np.zeros((N, K)), np.zeros((N, K))
    for n in range(N):
        seq = pm_order(Rs[n], lengths[n], descending=True)
        y0 = pm_score(model_fn, x[n], lengths[n], target[n], softmax)
        for k in range(K):
            atts[n, k] = sum(Rs[n, t] for t in seq[k * fis:(k + 1) * fis])
            row = pm_perturbed(x, n, seq[:(k + 1) * fis], fill)
            drops[n, k] = y0 - pm_score(model_fn, row, lengths[n], target[n], softmax)
    return np.array([pm_pearson(atts[:, k], drops[:, k]) for k in range(K)])


def pm_completeness(model_fn, x, R, target, lengths, *, baseline, softmax=False, take_abs=False, key=None):
    x = np.asarray(x, np.float64)
    N = x.shape[0]
    Rs = pm_step_relevance(R, lengths, take_abs)
    fill = pm_fill(x, lengths, baseline, key=key, draw=0)
    out = np.zeros(N)
    for n in range(N):
        L = lengths[n]
        y0 = pm_score(model_fn, x[n], L, target[n], softmax)
        yb = pm_score(model_fn, pm_perturbed(x, n, range(L), fill), L, target[n], softmax)
        out[n] = sum(Rs[n, t] for t in range(L)) - (y0 - yb)
    return out


# ---------------------------------------------------------------------------------------------
# Localisation (Arras et al. 2022), Spearman, MPRT (Adebayo et al. 2018) -- issue 12 "metrics"
#
# relevance_rank_accuracy: K = #ground-truth valid steps; average, over every order of the valid
#   steps by decreasing value (ties in any order), of #ground-truth steps among the first K, / K.
# relevance_mass_accuracy: sum of values on ground-truth valid steps / sum over valid steps.
# values: R with padded steps dropped, divided by max |R| over the batch's valid steps (normalise),
#   then |.| (abs).  Spearman: rank_i = 1 + #{j: a_j < a_i} + #{j != i: a_j == a_i} / 2.

import copy
import itertools


def oracle_localisation_values(R, lengths=None, abs_=False, normalise=True):
    """List of rows, each the list of the valid steps' values as the metrics score them."""
    rows = []
    for n in range(len(R)):
        L = len(R[n]) if lengths is None else int(lengths[n])
        rows.append([float(R[n][t]) for t in range(L)])
    if normalise:
        top = 0.0
        for row in rows:
            for v in row:
                top = max(top, abs(v))
        if top > 0:
            rows = [[v / top for v in row] for row in rows]
    if abs_:
        rows = [[abs(v) for v in row] for row in rows]
    return rows


def oracle_relevance_rank_accuracy(R, mask, lengths=None, abs_=False, normalise=True):
    out = []
    for n, row in enumerate(oracle_localisation_values(R, lengths, abs_, normalise)):
        gt = [t for t in range(len(row)) if mask[n][t]]
        K = len(gt)
        if K == 0:
            out.append(float("nan"))
            continue
        levels = sorted(set(row), reverse=True)
        groups = [[t for t in range(len(row)) if row[t] == v] for v in levels]
        total, count = 0.0, 0
        for parts in itertools.product(*[itertools.permutations(g) for g in groups]):
            ranked = [t for part in parts for t in part]      # one order by decreasing value
            total += sum(1 for t in ranked[:K] if t in gt)
            count += 1
        out.append(total / count / K)
    return np.array(out)


def oracle_relevance_mass_accuracy(R, mask, lengths=None, abs_=False, normalise=True):
    out = []
    for n, row in enumerate(oracle_localisation_values(R, lengths, abs_, normalise)):
        inside = [row[t] for t in range(len(row)) if mask[n][t]]
        den = sum(row)
        out.append(sum(inside) / den if inside and den != 0 else float("nan"))
    return np.array(out)


def oracle_spearman(a, b):
    a, b = [float(v) for v in np.ravel(a)], [float(v) for v in np.ravel(b)]

    def ranks(v):
        return [1 + sum(1 for w in v if w < x) + (sum(1 for w in v if w == x) - 1) / 2 for x in v]

    ra, rb = ranks(a), ranks(b)
    n = len(a)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    if va == 0 or vb == 0:
        return float("nan")
    return cov / (va * vb) ** 0.5


def oracle_mprt(params, layers, new_layer, explain_fn, x, order="top_down", lengths=None, abs_=True):
    """params: dict (top-level keys = layers); new_layer(name) -> the randomised value of params[name].
    Cascading ("top_down": layers in the given order) or "independent"; Spearman per sequence."""
    def prepared(R):
        return oracle_localisation_values(np.asarray(R, np.float64), lengths, abs_, True)

    def compare(R0, R):
        A, B = prepared(R0), prepared(R)
        return [oracle_spearman(A[n], B[n]) for n in range(len(A))]

    R0 = explain_fn(params, x)
    scores = {"original": compare(R0, explain_fn(params, x))}
    current = copy.copy(params)
    for name in layers:
        if order == "independent":
            current = copy.copy(params)
        current[name] = new_layer(name)
        scores[name] = compare(R0, explain_fn(current, x))
    return {k: np.array(v) for k, v in scores.items()}
