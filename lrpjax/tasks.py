"""Toy tasks with a known answer: the adding task and its subtraction variant, four recurrent models
built from lrpjax layers, an optax trainer, and the ground-truth metrics of an explanation.

The adding task (Hochreiter & Schmidhuber, 1997; as used by Arras et al., 2019, "Evaluating recurrent
neural network explanations"), here with variable lengths: each sequence has ``length`` steps
(``min_len..T``), each step a pair ``(value, marker)`` with ``value ~ U(-1, 1)``; exactly two steps carry
``marker = 1``. ``op="add"``: the target is the sum of the two marked values; ``op="subtract"``: the first
marked value minus the second. Every unmarked step contributes nothing to the target and each marked step
contributes exactly its value (minus its value for the subtracted one), so an explanation can be scored
against the truth:

(a) relevance accuracy: share of sequences whose two largest ``|R_t|`` are the two marked steps, over
    the sequences whose two marked values both have ``|value| >= min_abs`` (a marked value near 0
    contributes nearly nothing, so its rank is meaningless);
(b) Pearson correlation between ``R_t`` at each marked step and that step's true contribution (pooled
    over both marked steps of every sequence);
(c) share of ``sum_t |R_t|`` on the two marked steps (mean over sequences).

Models (``VARIANTS``): ``"standard"``, ``"no_forget"``, ``"rudder"`` LSTMs (:func:`lrpjax.lstm` with
that ``variant=``) and ``"gru"`` (:func:`lrpjax.gru`), each followed by :func:`lrpjax.dense` from the
final hidden state to one output: :func:`init` ``(key, variant, hidden)`` and :func:`apply`
``(params, x, lengths) -> (B, 1)``, the same function for training and for ``lrpjax.relevance``.
``scripts/toy_benchmark.py`` trains all of them on both tasks and scores every explanation method.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lrpjax
from lrpjax import metrics

Array = jax.Array

OPS = ("add", "subtract")
VARIANTS = ("standard", "no_forget", "rudder", "gru")
VARIANT_NAMES = {"standard": "LSTM", "no_forget": "no-forget LSTM", "rudder": "RUDDER LSTM",
                 "gru": "GRU"}


# ------------------------------------------------------------------------------------------------
# Data

def adding_task(key: Union[Array, int], n: int, T: int = 30, min_len: int = 10,
                op: str = "add") -> tuple[Array, Array, Array, Array]:
    """``n`` adding-task sequences of lengths ``min_len..T``, zero-padded to ``T``.

    ``key`` is a PRNG key or an int seed. Returns ``x`` ``(n, T, 2)`` float32 (value, marker),
    ``lengths`` ``(n,)`` int32, ``y`` ``(n,)`` (``op="add"``: the sum of the two marked values;
    ``op="subtract"``: the first marked value minus the second) and ``pos`` ``(n, 2)`` (the marked steps,
    ascending, ``< length``). ``min_len = T`` gives fixed-length sequences. Pure JAX, so it runs inside
    a jitted training loop (fresh data every step, no host round trip). The values are ``U(-1, 1)``, not
    the classic ``U(0, 1)``: a zero-mean target needs no large bias offset, which would absorb most of
    the relevance under ``bias_factor = 0``. The same key gives the same ``x`` for both ops.
    """
    if not 2 <= min_len <= T:
        raise ValueError(f"adding_task needs 2 <= min_len <= T, got min_len={min_len}, T={T}")
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    if isinstance(key, (int, np.integer)):
        key = jax.random.key(key)
    k_len, k_val, k_pos = jax.random.split(key, 3)
    lengths = jax.random.randint(k_len, (n,), min_len, T + 1, jnp.int32)
    valid = jnp.arange(T)[None, :] < lengths[:, None]
    values = jnp.where(valid, jax.random.uniform(k_val, (n, T), jnp.float32, -1.0, 1.0), 0.0)
    u = jnp.where(valid, jax.random.uniform(k_pos, (n, T)), -1.0)   # marks only inside the length
    _, pos = jax.lax.top_k(u, 2)
    pos = jnp.sort(pos, axis=1)
    markers = jnp.sum(jax.nn.one_hot(pos, T, dtype=jnp.float32), axis=1)
    x = jnp.stack([values, markers], axis=-1)
    if op == "add":
        y = jnp.sum(values * markers, axis=1)
    else:
        signs = jax.nn.one_hot(pos[:, 0], T, dtype=jnp.float32) - jax.nn.one_hot(pos[:, 1], T,
                                                                                  dtype=jnp.float32)
        y = jnp.sum(values * signs, axis=1)
    return x, lengths, y, pos


def contributions(x: Any, pos: Any, op: str = "add") -> np.ndarray:
    """The true contribution of each marked step to the target, ``(n, 2)``: its value, or minus its value
    for the second (subtracted) one when ``op="subtract"``; ``contributions(...).sum(1) == y``."""
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    x, pos = np.asarray(x), np.asarray(pos)
    v = np.take_along_axis(x[..., 0], pos, axis=1)
    return v * np.array([1.0, -1.0 if op == "subtract" else 1.0], v.dtype)


# ------------------------------------------------------------------------------------------------
# Models

@dataclasses.dataclass(frozen=True)
class Params:
    """Parameters of a task model (a pytree; ``variant`` is static metadata, not a leaf).

    rnn: :class:`lrpjax.LSTMParams` or :class:`lrpjax.GRUParams`; w ``(hidden, 1)``, b ``(1,)``: readout.
    """

    rnn: Any
    w: Array
    b: Array
    variant: str = "standard"


jax.tree_util.register_dataclass(Params, data_fields=["rnn", "w", "b"], meta_fields=["variant"])


def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return variant


def init(key: Union[Array, int], variant: str = "standard", hidden: int = 32) -> Params:
    """Random parameters: a recurrent layer (2 input features, ``hidden`` units; an LSTM of that
    ``variant`` or a GRU) and a dense readout to one output."""
    _check_variant(variant)
    if isinstance(key, (int, np.integer)):
        key = jax.random.key(key)
    k_rnn, k_w = jax.random.split(key)
    if variant == "gru":
        rnn = lrpjax.init_gru(k_rnn, 2, hidden, dtype=jnp.float32)
    else:
        rnn = lrpjax.init_lstm(k_rnn, 2, hidden, variant=variant, dtype=jnp.float32)
    w = (jax.random.normal(k_w, (hidden, 1), jnp.float32) / np.sqrt(hidden)).astype(jnp.float32)
    return Params(rnn, w, jnp.zeros((1,), jnp.float32), variant)


def apply(params: Params, x: Array, lengths: Optional[Array] = None) -> Array:
    """``x`` ``(B, T, 2)``, ``lengths`` ``(B,)`` -> outputs ``(B, 1)`` (readout of the final valid hidden
    state; for the RUDDER LSTM that is the cell state, ``h = c``). Only lrpjax layers touch ``x``, so
    ``lrpjax.relevance(lambda xb: apply(params, xb, lengths), x, target=0)`` explains it."""
    if params.variant == "gru":
        _, h = lrpjax.gru(params.rnn, x, lengths=lengths)
    else:
        _, (_, h) = lrpjax.lstm(params.rnn, x, lengths=lengths, variant=params.variant)
    return lrpjax.dense(h, params.w, params.b)


# ------------------------------------------------------------------------------------------------
# Training

def fit(params: Any, apply_fn: Callable, data_fn: Callable, opt: optax.GradientTransformation,
        keys: Array, chunk: int, on_chunk: Callable) -> Any:
    """Minimise the MSE of ``apply_fn(params, x, lengths)[:, 0]`` against ``y`` with ``opt``.

    One step per key in ``keys``: ``data_fn(key) -> (x, lengths, y, ...)`` draws a fresh batch inside the
    jitted step; ``chunk`` steps form one compiled ``lax.scan``. After each chunk
    ``on_chunk(steps_done, params, mean_train_loss)`` is called; a true return value stops training.
    Returns the final parameters. The compiled chunk is cached for the same ``(apply_fn, data_fn, opt)``
    objects (and parameter structure and shapes), so repeated runs compile once. (Shared by :func:`train`
    and :func:`lrpjax.demo.train`.)
    """
    run_chunk = _chunk_runner(apply_fn, data_fn, opt)
    opt_state = opt.init(params)
    n_steps = len(keys)
    for i in range(0, n_steps, chunk):
        params, opt_state, loss = run_chunk(params, opt_state, keys[i:i + chunk])
        if on_chunk(min(i + chunk, n_steps), params, loss):
            break
    return jax.block_until_ready(params)


@functools.lru_cache(maxsize=16)
def _chunk_runner(apply_fn: Callable, data_fn: Callable, opt: optax.GradientTransformation):
    def loss_fn(p, x, lengths, y):
        return jnp.mean((apply_fn(p, x, lengths)[:, 0] - y) ** 2)

    def step(carry, k):
        p, s = carry
        x, lengths, y = data_fn(k)[:3]
        loss, g = jax.value_and_grad(loss_fn)(p, x, lengths, y)
        updates, s = opt.update(g, s, p)
        return (optax.apply_updates(p, updates), s), loss

    @jax.jit
    def run_chunk(p, s, keys):   # a chunk of steps is one compiled scan (no per-step dispatch)
        (p, s), losses = jax.lax.scan(step, (p, s), keys)
        return p, s, jnp.mean(losses)

    return run_chunk


@functools.lru_cache(maxsize=16)
def _task_setup(op: str, batch: int, T: int, min_len: int, lr: float, steps: int):
    """The data function and optimiser of :func:`train` (the same objects for the same options, so the
    compiled training chunk of :func:`fit` is reused across runs and seeds)."""
    opt = optax.chain(optax.clip_by_global_norm(1.0),
                      optax.adam(optax.cosine_decay_schedule(lr, steps)))
    return (lambda k: adding_task(k, batch, T, min_len, op)), opt


class Trained(NamedTuple):
    """Result of :func:`train`: parameters, the held-out MSE they reach, the steps run, the seconds
    (compilation included) and whether ``test_mse < target_mse``."""

    params: Params
    test_mse: float
    steps: int
    seconds: float
    reached: bool


def mse(params: Params, x: Array, lengths: Array, y: Array) -> float:
    """Mean squared error of :func:`apply` on a batch."""
    return float(jnp.mean((_apply_jit(params, x, lengths)[:, 0] - y) ** 2))


_apply_jit = jax.jit(apply)


def train(key: Union[Array, int], variant: str = "standard", op: str = "add", *, hidden: int = 32,
          steps: int = 5000, batch: int = 128, lr: float = 1e-2, chunk: int = 250,
          target_mse: float = 1e-3, n_test: int = 2000, T: int = 30, min_len: int = 10,
          log: Any = print) -> Trained:
    """Train :func:`init` ``(variant, hidden)`` on the task ``op`` with Adam until the MSE on ``n_test``
    held-out sequences is below ``target_mse`` (checked after every ``chunk`` steps) or ``steps`` are spent.

    Fresh batches of ``batch`` sequences every step; Adam with global-norm clipping 1 and a cosine
    decay of ``lr`` over the step budget. The held-out set is drawn from its own key (split off ``key``),
    never seen in training. ``log`` gets one line per chunk (``log=lambda s: None`` for silence).
    """
    _check_variant(variant)
    if isinstance(key, (int, np.integer)):
        key = jax.random.key(key)
    k_init, k_data, k_test = jax.random.split(key, 3)
    x_t, l_t, y_t, _ = adding_task(k_test, n_test, T, min_len, op)
    data_fn, opt = _task_setup(op, batch, T, min_len, float(lr), steps)
    state = {"steps": 0, "mse": float("inf")}

    def on_chunk(done, p, loss):
        state["steps"], state["mse"] = done, mse(p, x_t, l_t, y_t)
        log(f"  step {done:5d}  train MSE {float(loss):.5f}  test MSE {state['mse']:.5f}")
        return state["mse"] < target_mse

    t0 = time.perf_counter()
    params = fit(init(k_init, variant, hidden), apply, data_fn, opt, jax.random.split(k_data, steps),
                 chunk, on_chunk)
    return Trained(params, state["mse"], state["steps"], time.perf_counter() - t0,
                   state["mse"] < target_mse)


# ------------------------------------------------------------------------------------------------
# Ground-truth metrics of an explanation

def eligible(x: Any, pos: Any, min_abs: float = 0.2) -> np.ndarray:
    """``(n,)`` bool: both marked values have ``|value| >= min_abs`` (the sequences metric (a) ranks)."""
    v = np.take_along_axis(np.asarray(x)[..., 0], np.asarray(pos), axis=1)
    return np.all(np.abs(v) >= min_abs, axis=1)


def ground_truth_metrics(R_steps: Any, x: Any, lengths: Any, pos: Any, op: str = "add",
                         min_abs: float = 0.2) -> dict:
    """Score per-step relevances ``R_steps`` ``(n, T)`` (signed; e.g. summed over the features) against
    the task's truth.

    Steps ``t >= length`` are set to 0 first (methods that score padding, such as random relevance,
    cannot gain from it). Sequences with any NaN/inf relevance are counted (``nonfinite``) and left out
    of all three metrics, which then cover ``n_finite`` sequences. Returns a dict:

    ``accuracy`` (a) over the finite sequences whose two marked values have ``|value| >= min_abs``
    (``n_eligible`` of them); ``pearson`` (b) of ``R`` at the marked steps vs :func:`contributions`,
    pooled over both marked steps of every finite sequence; ``share`` (c) mean share of ``sum_t |R_t|``
    on the marked steps; ``nonfinite``; ``n``; ``n_finite``; ``n_eligible``.
    """
    R = np.asarray(R_steps, np.float64)
    x, lengths, pos = np.asarray(x), np.asarray(lengths), np.asarray(pos)
    n, T = R.shape
    R = np.where(np.arange(T)[None, :] < lengths[:, None], R, 0.0)
    finite = np.all(np.isfinite(R), axis=1)
    Rf, xf, lf, pf = R[finite], x[finite], lengths[finite], pos[finite]
    out = {"n": n, "n_finite": int(finite.sum()), "nonfinite": int(n - finite.sum())}
    mask = eligible(xf, pf, min_abs)
    out["n_eligible"] = int(mask.sum())
    nan = float("nan")
    if not len(Rf):
        return {**out, "accuracy": nan, "pearson": nan, "share": nan}
    out["accuracy"] = (float(metrics.topk_accuracy(np.abs(Rf[mask]), pf[mask])) if mask.any()
                       else nan)
    r_marked = np.take_along_axis(Rf, pf, axis=1).ravel()
    out["pearson"] = float(metrics.pearson(r_marked, contributions(xf, pf, op).ravel()))
    out["share"] = float(np.mean(np.asarray(metrics.marked_share(Rf, pf, lf))))
    return out
