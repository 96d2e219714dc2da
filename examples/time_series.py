"""Time series: explain an LSTM that classifies multivariate sensor data, per step and per feature.

The data come from a package's wheel, so nothing is downloaded at run time: aeon ships the UEA
archive's ``BasicMotions`` (a smart watch's 3-D accelerometer and 3-D gyroscope, 10 Hz for 10 s;
four classes: standing, walking, running, badminton; 40 train / 40 test series) and
``JapaneseVowels`` (12 LPC cepstrum coefficients of an uttered vowel, 7..29 steps; which of 9
speakers; 270 / 370 series) in ``aeon/datasets/data/``. aeon is an optional extra:
``pip install -e ".[timeseries]"``.

Steps:

1. load the train and test splits (``(N, F, T)`` arrays or a list of ``(F, T_i)`` arrays), pad them
   to ``(N, T_max, F)`` with ``lengths`` (:func:`pad_series`) and standardise each feature with the
   training split's mean and standard deviation over the valid steps (:func:`standardize`);
2. train an unmodified Flax linen classifier (``nn.RNN(nn.OptimizedLSTMCell)`` with
   ``seq_lengths=``, a ``Dense`` readout of the last hidden state) with optax AdamW; report the test
   accuracy;
3. explain every test series with ``lrpjax.explain`` (the predicted class by default,
   ``--target true`` for the label): relevance ``(T, F)`` per step and feature, exactly 0 on padding;
4. sanity analysis: the share of ``|relevance|`` per feature, averaged per class
   (:func:`feature_share_by_class`: which sensor matters for which motion), and two deletion checks
   (:func:`delete_steps`, :func:`delete_features`): replacing the most relevant steps (or the most
   relevant feature) by the training mean should lower the explained class's logit more than
   replacing random ones;
5. plots (matplotlib, Agg, via :func:`lrpjax.viz.plot_time_series`): one test series per class
   (signal, per-step relevance bars, per-feature heat image), the class x feature relevance shares
   and the step-deletion curves, as PNGs in ``--out``.

Relevance is that of the standardised input, i.e. of each value's deviation from the training mean
of its feature: LRP redistributes the logit onto ``x`` with the reference point ``x = 0``. The rules
default to ``eps=0.1, bias_factor=1`` (conservation); with lrpjax's defaults (``1e-3``, ``0``) the
relevance of BasicMotions' near-constant standing series grows to hundreds of times the logit on the
first steps (see docs/experiments.md, "Time series").

Run: ``python examples/time_series.py`` (about 20 s on 2 CPU cores, 30 s for JapaneseVowels; ``--dataset japanese_vowels``
for the variable-length set; ``--quick`` for a smoke test).
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np

try:
    import lrpjax
except ImportError:  # run from a source checkout without installing: use the repository's package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import lrpjax

DATASETS = {
    # name: (aeon loader, feature names, description, feature groups)
    "basic_motions": ("load_basic_motions",
                      ["acc x", "acc y", "acc z", "gyro x", "gyro y", "gyro z"],
                      "BasicMotions (smart watch: 3-D accelerometer + 3-D gyroscope, 10 Hz, 10 s)",
                      {"accelerometer": [0, 1, 2], "gyroscope": [3, 4, 5]}),
    "japanese_vowels": ("load_japanese_vowels", [f"LPC {i + 1}" for i in range(12)],
                        "JapaneseVowels (12 LPC cepstrum coefficients per frame, 7..29 frames; "
                        "classes = 9 speakers)", None),
}


class Config(NamedTuple):
    hidden: int = 32        # LSTM units
    steps: int = 400        # Adam steps
    batch: int = 64         # series per step (the whole training split when it is smaller)
    lr: float = 5e-3        # Adam peak learning rate (cosine-decayed)
    n_plots: int = 0        # example plots (0: one per class)


QUICK = Config(steps=100, n_plots=1)


# ------------------------------------------------------------------------------------------------
# Data helpers (NumPy only; tested without aeon in tests/test_time_series.py)

def pad_series(series, max_len: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """aeon's channels-first collection -> ``x (N, T_max, F)`` float32 (zero padding) and ``lengths``.

    ``series``: an array ``(N, F, T)`` (equal lengths) or a list of ``(F, T_i)`` arrays (unequal
    lengths, aeon's ``np-list``). ``max_len`` pads to at least that many steps.
    """
    if isinstance(series, np.ndarray) and series.ndim == 3:
        series = list(series)
    series = [np.asarray(s, np.float32) for s in series]
    if not series:
        raise ValueError("pad_series: no series")
    F = series[0].shape[0]
    if any(s.ndim != 2 or s.shape[0] != F for s in series):
        raise ValueError(f"pad_series: every series must be (F, T_i) with F = {F}, got shapes "
                         f"{sorted({s.shape for s in series})[:4]}")
    lengths = np.array([s.shape[1] for s in series], np.int32)
    if lengths.min() < 1:
        raise ValueError("pad_series: empty series")
    T = max(int(lengths.max()), max_len or 0)
    x = np.zeros((len(series), T, F), np.float32)
    for i, s in enumerate(series):
        x[i, :s.shape[1]] = s.T
    return x, lengths


def valid_mask(lengths, T: int) -> np.ndarray:
    """``(N, T)`` bool: True at the valid steps ``t < lengths[n]``."""
    return np.arange(T)[None, :] < np.asarray(lengths)[:, None]


def standardize(x: np.ndarray, lengths, stats: Optional[tuple] = None) -> tuple[np.ndarray, tuple]:
    """Per-feature z-scores over the valid steps; padding stays exactly 0.

    ``stats = (mean (F,), std (F,))`` from the training split (computed from ``x`` when ``None``).
    Returns the standardised float32 array and the stats.
    """
    mask = valid_mask(lengths, x.shape[1])
    if stats is None:
        v = x[mask].astype(np.float64)                   # (n_valid_steps, F)
        stats = (v.mean(axis=0), np.maximum(v.std(axis=0), 1e-8))
    mean, std = stats
    z = (x - mean) / std
    return np.where(mask[..., None], z, 0.0).astype(np.float32), stats


def feature_share(R: np.ndarray) -> np.ndarray:
    """Share of ``sum |R|`` per feature for each series: ``(N, T, F) -> (N, F)``, rows sum to 1
    (padding contributes nothing, since its relevance is 0)."""
    a = np.abs(np.asarray(R, np.float64)).sum(axis=1)
    return a / np.maximum(a.sum(axis=1, keepdims=True), 1e-30)


def feature_share_by_class(R: np.ndarray, classes, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean per-series feature share (:func:`feature_share`) over the series of each class:
    ``(C, F)`` (NaN rows for classes with no series) and the number of series per class ``(C,)``."""
    share = feature_share(R)
    classes = np.asarray(classes)
    out = np.full((n_classes, share.shape[1]), np.nan)
    counts = np.bincount(classes, minlength=n_classes)
    for c in range(n_classes):
        if counts[c]:
            out[c] = share[classes == c].mean(axis=0)
    return out, counts


def top_steps_mask(R_steps: np.ndarray, lengths, frac: float) -> np.ndarray:
    """``(N, T)`` bool: the ``k = ceil(frac * length)`` valid steps of highest (signed) relevance of
    each series (ties to the earlier step)."""
    R_steps = np.asarray(R_steps, np.float64)
    lengths = np.asarray(lengths)
    N, T = R_steps.shape
    key = np.where(valid_mask(lengths, T), -R_steps, np.inf)
    order = np.argsort(key, axis=1, kind="stable")
    k = np.ceil(frac * lengths).astype(int)
    mask = np.zeros((N, T), bool)
    for n in range(N):
        mask[n, order[n, :k[n]]] = True
    return mask


def random_steps_mask(rng: np.random.Generator, lengths, T: int, frac: float) -> np.ndarray:
    """``(N, T)`` bool: ``ceil(frac * length)`` valid steps drawn uniformly without replacement."""
    lengths = np.asarray(lengths)
    mask = np.zeros((len(lengths), T), bool)
    for n, L in enumerate(lengths):
        mask[n, rng.choice(int(L), int(np.ceil(frac * L)), replace=False)] = True
    return mask


def delete_steps(score_fn, x: np.ndarray, lengths, target, R_steps, fracs: Sequence[float], *,
                 n_random: int = 10, seed: int = 0) -> dict:
    """Step deletion: replace the top-relevance / random steps by 0 (the training mean after
    :func:`standardize`, all features of the step) and measure the explained logit.

    ``score_fn(x, lengths) -> logits (N, C)``. Returns ``fracs``, ``base`` (logit of ``target``,
    ``(N,)``), ``top`` and ``random`` (``(K, N)`` logits after deletion; random averaged over
    ``n_random`` draws) and ``flip_top`` / ``flip_random`` (``(K,)`` share of series whose prediction
    is not ``target``; ``flip_base`` before any deletion: 0 when ``target`` is the prediction).
    """
    x = np.asarray(x)
    N, T, _ = x.shape
    rows = np.arange(N)
    target = np.asarray(target)
    rng = np.random.default_rng(seed)

    def run(mask):
        logits = np.asarray(score_fn(np.where(mask[..., None], 0.0, x).astype(x.dtype), lengths))
        return logits[rows, target], logits.argmax(axis=1) != target

    logits = np.asarray(score_fn(x, lengths))
    out = {"fracs": np.asarray(fracs, float), "base": logits[rows, target],
           "flip_base": float(np.mean(logits.argmax(axis=1) != target)), "top": [], "random": [],
           "flip_top": [], "flip_random": []}
    for frac in fracs:
        s, flip = run(top_steps_mask(R_steps, lengths, frac))
        out["top"].append(s)
        out["flip_top"].append(flip.mean())
        runs = [run(random_steps_mask(rng, lengths, T, frac)) for _ in range(n_random)]
        out["random"].append(np.mean([r[0] for r in runs], axis=0))
        out["flip_random"].append(np.mean([r[1].mean() for r in runs]))
    for k in ("top", "random", "flip_top", "flip_random"):
        out[k] = np.asarray(out[k])
    return out


def delete_features(score_fn, x: np.ndarray, lengths, target, R: np.ndarray) -> dict:
    """Feature deletion: replace one whole feature (channel) by its training mean (0).

    Returns the explained logit ``base`` ``(N,)`` and after deleting each series' most relevant
    feature (largest signed sum of relevance over steps: ``top``), its least relevant one
    (``bottom``) and each feature in turn (``each`` ``(F, N)``; their mean is the random baseline).
    """
    x = np.asarray(x)
    N, T, F = x.shape
    rows = np.arange(N)
    target = np.asarray(target)
    per_feature = np.asarray(R, np.float64).sum(axis=1)                 # (N, F)

    def score(mask_nf):
        xd = np.where(mask_nf[:, None, :], 0.0, x).astype(x.dtype)
        return np.asarray(score_fn(xd, lengths))[rows, target]

    onehot = np.eye(F, dtype=bool)
    return {"base": np.asarray(score_fn(x, lengths))[rows, target],
            "top": score(onehot[per_feature.argmax(axis=1)]),
            "bottom": score(onehot[per_feature.argmin(axis=1)]),
            "each": np.stack([score(np.broadcast_to(onehot[f], (N, F))) for f in range(F)])}


def _r2(v: float) -> str:
    """``v`` with 2 decimals, without a sign on a rounded zero."""
    return f"{v:.2f}".replace("-0.00", "0.00")


def share_table(share: np.ndarray, counts, class_names, feature_names) -> str:
    """The class x feature share table as text (percent; the largest of each row marked with *)."""
    w = max(7, *(len(f) for f in feature_names))
    cw = max(9, *(len(str(c)) for c in class_names))
    lines = [f"{'class':<{cw}} {'n':>3} | " + " ".join(f"{f:>{w}}" for f in feature_names)]
    lines.append("-" * len(lines[0]))
    for c, name in enumerate(class_names):
        if counts[c] == 0:
            continue
        best = int(np.nanargmax(share[c]))
        cells = [f"{100 * v:{w - 1}.1f}{'*' if f == best else ' '}" for f, v in enumerate(share[c])]
        lines.append(f"{str(name):<{cw}} {counts[c]:>3} | " + " ".join(cells))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Loading (aeon)

class Data(NamedTuple):
    """A train / test split, raw (not standardised), padded to one length ``T``; labels are indices
    into ``class_names``."""
    x_train: np.ndarray       # (N_train, T, F) float32
    len_train: np.ndarray     # (N_train,) int32
    y_train: np.ndarray       # (N_train,) int32
    x_test: np.ndarray
    len_test: np.ndarray
    y_test: np.ndarray
    class_names: list
    feature_names: list
    description: str
    source: str = ""          # where the data came from (printed)
    groups: Optional[dict] = None   # name -> feature indices, e.g. the sensors of BasicMotions


def load(dataset: str) -> Data:
    """One of :data:`DATASETS` from the files inside aeon's wheel (no download; the loaders read
    ``aeon/datasets/data/<Name>/<Name>_{TRAIN,TEST}.ts``)."""
    try:
        import aeon.datasets
    except ImportError:
        sys.exit("examples/time_series.py needs aeon (an optional extra): "
                 "pip install -e \".[timeseries]\"  (or: pip install aeon matplotlib)")
    loader_name, feature_names, description, groups = DATASETS[dataset]
    loader = getattr(aeon.datasets, loader_name)
    X_tr, y_tr = loader(split="train")
    X_te, y_te = loader(split="test")
    labels = sorted(set(y_tr.tolist()) | set(y_te.tolist()))
    index = {c: i for i, c in enumerate(labels)}
    class_names = [f"speaker {c}" if dataset == "japanese_vowels" else str(c) for c in labels]
    T = max(max(s.shape[-1] for s in X_tr), max(s.shape[-1] for s in X_te))
    x_tr, l_tr = pad_series(X_tr, max_len=T)
    x_te, l_te = pad_series(X_te, max_len=T)
    name = description.split(" (")[0]                       # BasicMotions, JapaneseVowels
    source = f"aeon {aeon.__version__}: {Path(aeon.datasets.__file__).parent / 'data' / name}/"
    return Data(x_tr, l_tr, np.array([index[c] for c in y_tr], np.int32),
                x_te, l_te, np.array([index[c] for c in y_te], np.int32), class_names,
                list(feature_names), description, source, groups)


# ------------------------------------------------------------------------------------------------
# Model and training (JAX, Flax linen, optax)

def make_model(hidden: int, n_classes: int):
    import flax.linen as nn

    class Classifier(nn.Module):
        """An unmodified Flax LSTM classifier: the last valid hidden state -> logits."""
        hidden: int
        n_classes: int

        @nn.compact
        def __call__(self, x, lengths):
            (_, h), _ = nn.RNN(nn.OptimizedLSTMCell(self.hidden), return_carry=True)(
                x, seq_lengths=lengths)
            return nn.Dense(self.n_classes)(h)

    return Classifier(hidden, n_classes)


def train(model, x, lengths, y, cfg: Config, seed: int, log=print):
    import jax
    import jax.numpy as jnp
    import optax

    key_init, key_batch = jax.random.split(jax.random.key(seed))
    params = jax.jit(model.init)(key_init, x[:2], lengths[:2])   # jitted: eager init compiles op by op
    opt = optax.chain(optax.clip_by_global_norm(1.0),
                      optax.adamw(optax.cosine_decay_schedule(cfg.lr, cfg.steps), weight_decay=1e-4))
    state = opt.init(params)
    x, lengths, y = jnp.asarray(x), jnp.asarray(lengths), jnp.asarray(y)
    N = x.shape[0]
    B = min(cfg.batch, N)

    def loss_fn(p, idx):
        logits = model.apply(p, x[idx], lengths[idx])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y[idx]).mean()

    @functools.partial(jax.jit, static_argnames="n")
    def run_chunk(p, s, key, n):
        def step(carry, k):
            p, s = carry
            idx = jnp.arange(N) if B == N else jax.random.choice(k, N, (B,), replace=False)
            loss, g = jax.value_and_grad(loss_fn)(p, idx)
            upd, s = opt.update(g, s, p)
            return (optax.apply_updates(p, upd), s), loss
        (p, s), losses = jax.lax.scan(step, (p, s), jax.random.split(key, n))
        return p, s, losses.mean()

    chunk = max(cfg.steps // 4, 1)
    done = 0
    t0 = time.perf_counter()
    while done < cfg.steps:
        n = min(chunk, cfg.steps - done)
        params, state, loss = run_chunk(params, state, jax.random.fold_in(key_batch, done), n)
        done += n
        log(f"  step {done:4d}  train loss {float(loss):.4f}")
    return params, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------
# Plots

def plot_examples(out: Path, picks, data: Data, R: np.ndarray, pred) -> list:
    """One PNG per picked test series (:func:`lrpjax.viz.plot_time_series`: the raw signal, the
    relevance per step and the per-feature heat image, valid steps only)."""
    from lrpjax import viz

    paths = []
    for i in picks:
        L = int(data.len_test[i])
        label, guess = data.class_names[data.y_test[i]], data.class_names[pred[i]]
        title = f"{data.description.split(' (')[0]}, test series {i}: {label} (predicted {guess})"
        fig = viz.plot_time_series(data.x_test[i, :L], R[i, :L], feature_names=data.feature_names,
                                   title=title)
        p = out / f"example_{i:03d}_{label.replace(' ', '')}.png"
        fig.savefig(p, dpi=80)
        paths.append(p)
    return paths


def plot_share(path: Path, share, counts, class_names, feature_names):
    from matplotlib.figure import Figure

    rows = [c for c in range(len(class_names)) if counts[c]]
    fig = Figure(figsize=(1.0 + 0.75 * len(feature_names), 1.2 + 0.45 * len(rows)), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(100 * share[rows], cmap="Reds", vmin=0, aspect="auto")
    ax.set_xticks(range(len(feature_names)))
    ax.set_xticklabels(feature_names, rotation=45 if len(feature_names) > 6 else 0, fontsize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{class_names[c]} (n={counts[c]})" for c in rows], fontsize=8)
    if len(feature_names) * len(rows) <= 120:
        for r, c in enumerate(rows):
            for f in range(len(feature_names)):
                ax.text(f, r, f"{100 * share[c, f]:.0f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label="% of |relevance|")
    ax.set_title("share of |relevance| per feature, mean per explained class", fontsize=9)
    fig.savefig(path, dpi=80)
    return path


def plot_deletion(path: Path, dele):
    from lrpjax import viz

    ks = np.concatenate([[0.0], dele["fracs"]])
    curves = {"most relevant steps first": (ks, np.concatenate([dele["base"][None], dele["top"]]).T),
              "random steps": (ks, np.concatenate([dele["base"][None], dele["random"]]).T)}
    fig = viz.plot_curves(curves, xlabel="fraction of steps replaced by the training mean",
                          ylabel="logit of the explained class",
                          title="deletion check: mean over the test series (+-1 s.e.)")
    fig.savefig(path, dpi=80)
    return path


# ------------------------------------------------------------------------------------------------

def run(data: Data, out: Path, cfg: Config = Config(), *, target_mode: str = "pred",
        eps: float = 0.1, bias_factor: float = 1.0, seed: int = 0, log=print) -> dict:
    """Train, evaluate, explain, analyse and plot; returns the numbers (also logged)."""
    import matplotlib
    matplotlib.use("Agg")
    import jax
    import jax.numpy as jnp

    t_start = time.perf_counter()
    class_names, feature_names = data.class_names, data.feature_names
    l_tr, y_tr, l_te, y_te = data.len_train, data.y_train, data.len_test, data.y_test
    N, T, F = data.x_test.shape
    C = len(class_names)
    lengths = (f"{l_tr.min()}" if min(l_tr.min(), l_te.min()) == max(l_tr.max(), l_te.max()) else
               f"{min(l_tr.min(), l_te.min())}..{max(l_tr.max(), l_te.max())}")
    log(f"dataset: {data.description}")
    if data.source:
        log(f"  {data.source}")
    log(f"  train {len(y_tr)} / test {N} series, {F} features, lengths {lengths} (padded to T={T}), "
        f"{C} classes: {', '.join(map(str, class_names))}")

    x_tr, stats = standardize(data.x_train, l_tr)
    x_te, _ = standardize(data.x_test, l_te, stats)
    model = make_model(cfg.hidden, C)
    log(f"model: flax.linen RNN(OptimizedLSTMCell({cfg.hidden})) with seq_lengths, Dense({C}) on the "
        f"last hidden state; {cfg.steps} AdamW steps x batch {min(cfg.batch, len(y_tr))}, seed={seed}, "
        f"backend={jax.default_backend()}")
    params, t_train = train(model, x_tr, l_tr, y_tr, cfg, seed, log)

    @jax.jit
    def logits_fn(x, lengths):
        return model.apply(params, x, lengths)

    @jax.jit
    def explain_fn(x, lengths, target):
        return lrpjax.explain(lambda xb: model.apply(params, xb, lengths), x, target, eps=eps,
                              bias_factor=bias_factor)

    pred = np.asarray(logits_fn(x_te, l_te)).argmax(axis=1)
    acc = float((pred == y_te).mean())
    acc_train = float((np.asarray(logits_fn(x_tr, l_tr)).argmax(axis=1) == y_tr).mean())
    log(f"training: {t_train:.1f} s; train accuracy {acc_train:.3f}; test accuracy {acc:.3f} "
        f"({int((pred == y_te).sum())}/{N}; chance {1 / C:.3f}, majority class "
        f"{np.bincount(y_te).max() / N:.3f})")

    # -- explain every test series
    target = pred if target_mode == "pred" else y_te
    what = "predicted" if target_mode == "pred" else "true"
    t0 = time.perf_counter()
    ex = explain_fn(jnp.asarray(x_te), jnp.asarray(l_te), jnp.asarray(target, jnp.int32))
    R = np.asarray(jax.block_until_ready(ex.relevance))
    t_explain = time.perf_counter() - t0
    pad = ~valid_mask(l_te, T)
    rows = np.arange(N)
    score = np.asarray(ex.scores)[rows, target]
    ratio = np.asarray(ex.total) / score
    log(f"\nexplained {N} test series ({what} class) with lrpjax.explain in {t_explain:.2f} s (one "
        f"jitted call, including compilation); relevance (N, T, F) = {R.shape}")
    log(f"  rules: eps={eps:g}, bias_factor={bias_factor:g}, gate=\"all\"; max |relevance| on padding "
        f"steps: {np.abs(R[pad]).max() if pad.any() else 0:.3g}")
    log("  conservation, sum of input relevance / explained logit (median per class): " + ", ".join(
        f"{class_names[c]} {np.median(ratio[target == c]):.2f}" for c in range(C) if np.any(target == c))
        + f"; all {np.median(ratio):.2f} (the rest: initial state "
        f"{_r2(np.median(np.asarray(ex.initial_state) / score))}, biases and stabilisers "
        f"{_r2(np.median(np.asarray(ex.absorbed) / score))})")

    # -- which features matter for which class
    share, counts = feature_share_by_class(R, target, C)
    per_series = feature_share(R)
    log(f"\nshare of |relevance| per feature (%), mean over the test series of each {what} class "
        f"(* = largest):")
    log(share_table(share, counts, class_names, feature_names))
    overall = per_series.mean(axis=0)
    log("all series: " + ", ".join(f"{feature_names[f]} {100 * overall[f]:.1f}%"
                                   for f in np.argsort(-overall)))
    for name, idx in (data.groups or {}).items():
        g = per_series[:, idx].sum(axis=1)
        log(f"{name} share by class: " + ", ".join(
            f"{class_names[c]} {100 * g[target == c].mean():.0f}%" for c in range(C) if counts[c]))

    # -- deletion checks
    t0 = time.perf_counter()
    fracs = (0.05, 0.1, 0.2, 0.3)
    dele = delete_steps(logits_fn, x_te, l_te, target, R.sum(axis=-1), fracs, seed=seed)
    log(f"\ndeletion check (steps replaced by the training mean, all features; mean logit of the "
        f"explained class over {N} series; random = mean of 10 draws):")
    log(f"  {'fraction':>8} | {'most relevant':>13} {'random':>8} | {'not target: top':>15} {'random':>8}")
    log(f"  {0:8.2f} | {dele['base'].mean():13.3f} {dele['base'].mean():8.3f} | "
        f"{dele['flip_base']:15.2f} {dele['flip_base']:8.2f}")
    for j, frac in enumerate(fracs):
        log(f"  {frac:8.2f} | {dele['top'][j].mean():13.3f} {dele['random'][j].mean():8.3f} | "
            f"{dele['flip_top'][j]:15.2f} {dele['flip_random'][j]:8.2f}")
    drop_top = dele["base"] - dele["top"][1]
    drop_rand = dele["base"] - dele["random"][1]
    log(f"  at {fracs[1]:.0%} of the steps: logit drop {drop_top.mean():.3f} (most relevant) vs "
        f"{drop_rand.mean():.3f} (random); larger for the most relevant steps in "
        f"{np.mean(drop_top > drop_rand):.0%} of the series")
    fdel = delete_features(logits_fn, x_te, l_te, target, R)
    log(f"feature deletion (one feature replaced by its training mean): mean logit "
        f"{fdel['base'].mean():.3f} -> {fdel['top'].mean():.3f} (most relevant feature), "
        f"{fdel['each'].mean():.3f} (a random feature), {fdel['bottom'].mean():.3f} (least relevant)")
    t_delete = time.perf_counter() - t0

    # -- plots and arrays
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    correct = np.flatnonzero(pred == y_te)
    picks = [int(correct[y_te[correct] == c][0]) for c in range(C) if np.any(y_te[correct] == c)]
    if cfg.n_plots:
        picks = picks[:cfg.n_plots]
    paths = plot_examples(out, picks, data, R, pred)
    paths.append(plot_share(out / "feature_share_by_class.png", share, counts, class_names,
                            feature_names))
    paths.append(plot_deletion(out / "deletion.png", dele))
    np.savez(out / "relevance.npz", relevance=R, x=data.x_test, lengths=l_te, labels=y_te,
             predicted=pred, target=target, class_names=np.array(class_names),
             feature_names=np.array(feature_names))
    t_plots = time.perf_counter() - t0
    log(f"\nplots: {len(paths)} PNGs in {t_plots:.1f} s -> {out}/: " + ", ".join(p.name for p in paths))
    log(f"arrays: {out}/relevance.npz (relevance, x, lengths, labels, predicted, target, names)")
    log(f"timings: training {t_train:.1f} s, explaining {t_explain:.2f} s, deletion checks "
        f"{t_delete:.1f} s, plots {t_plots:.1f} s; total {time.perf_counter() - t_start:.1f} s")
    return {"accuracy": acc, "train_accuracy": acc_train, "relevance": R, "predicted": pred,
            "target": target, "share": share, "counts": counts, "deletion": dele,
            "feature_deletion": fdel, "ratio": ratio, "absorbed": np.asarray(ex.absorbed) / score,
            "paths": paths}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="basic_motions")
    ap.add_argument("--out", type=Path, default=Path("timeseries-out"), help="directory for the PNGs")
    ap.add_argument("--target", choices=("pred", "true"), default="pred",
                    help="explain the predicted class (default) or the true label")
    ap.add_argument("--eps", type=float, default=0.1,
                    help="epsilon-rule stabiliser (default 0.1; lrpjax's own default is 1e-3)")
    ap.add_argument("--bias-factor", type=float, default=1.0,
                    help="1 (default: conservation) .. 0 (lrpjax's default, as the reference: biases "
                         "and stabilisers absorb their share)")
    ap.add_argument("--quick", action="store_true", help="short training, 1 example plot: a smoke test")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    data = load(args.dataset)
    data = data._replace(source=f"{data.source} (read in {time.perf_counter() - t0:.2f} s, nothing "
                                f"downloaded)")
    run(data, args.out, QUICK if args.quick else Config(), target_mode=args.target, eps=args.eps,
        bias_factor=args.bias_factor, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
