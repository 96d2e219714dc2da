"""The device side of a job: the jitted attribution step (one compilation per batch shape = per bucket
length), its cache across jobs, the probe batch, and :class:`Runner`, which batches a shard's examples
by length bucket and runs them sharded over all local devices (1-D mesh "data").

The step calls the library's own methods (:func:`lrpjax.baselines.attribute`); token models are
explained on their embedding (:func:`lrpjax.relevance.embedding_input`), summed per token.
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict, defaultdict
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lrpjax._checks import one_line, pick
from lrpjax.baselines import attribute
from lrpjax.flax_integration import traceable
from lrpjax.jobs.spec import JobError, ModelSpec
from lrpjax.jobs.validate import Example, Examples
from lrpjax.relevance import embedding_input, full_precision

CACHE_SIZE = 8      # jitted steps (and probe functions) kept across jobs


def _make_step(spec: ModelSpec, method: str, pred: bool, options: dict, full: bool,
               counter: list) -> Callable:
    """``step(x, lengths, tgt, rows) -> {"relevance" (B, T), "score" (B,), "target" (B,)[,
    "relevance_full" (B, T, F)]}`` for a padded batch: ``x`` ``(B, T, F)`` float32 or ``(B, T)`` int32
    token ids, ``lengths`` / ``tgt`` / ``rows`` ``(B,)`` int32 (``rows``: input positions, the seeds of
    ``method="random"``); ``pred``: explain the argmax instead of ``tgt``; ``options``: the keywords
    of :func:`lrpjax.baselines.attribute` (the rule options for ``"lrp"``)."""
    apply = spec.apply

    def step(x, lengths, tgt, rows):
        counter[0] += 1            # runs once per trace = per compilation
        # every method with full float32 matmuls (see lrpjax.relevance.full_precision): LRP needs it
        # on GPU/TPU, and the baselines are then computed like for like
        with full_precision():
            fn = lambda z: apply(z, lengths)
            inp, f = embedding_input(fn, x) if spec.tokens else (x, fn)
            extra = {"rows": rows} if method == "random" else {}
            R, scores, t = attribute(method, f, inp, None if pred else tgt, **options, **extra)
            per_step = jnp.sum(R, axis=-1) if R.ndim == 3 else R    # over features / embedding dims
            out = {"relevance": per_step.astype(jnp.float32),
                   "score": pick(scores, t).astype(jnp.float32), "target": t.astype(jnp.int32)}
            if full:
                out["relevance_full"] = R.astype(jnp.float32)
            return out

    return step


@dataclasses.dataclass
class CachedStep:
    """A jitted attribution step, kept across jobs: a second job with the same model function and
    options (e.g. re-running, or explaining another dataset) compiles nothing new."""
    apply: Callable             # held so that ``id(apply)`` in the key cannot be reused
    fn: Callable                # jax.jit(step) with rows sharded over the local devices
    counter: list               # [traces so far] = compilations (one per batch shape)
    devices: tuple
    sharding: Any               # rows split over the local devices (1-D mesh "data")


_STEP_CACHE: "OrderedDict[tuple, CachedStep]" = OrderedDict()
_PROBE_CACHE: "OrderedDict[int, tuple]" = OrderedDict()


def _remember(cache: OrderedDict, key, value) -> None:
    """Insert into a small LRU cache (the oldest entries beyond ``CACHE_SIZE`` are dropped)."""
    cache[key] = value
    while len(cache) > CACHE_SIZE:
        cache.popitem(last=False)


def cached_step(spec: ModelSpec, method: str, target_mode, eps: float, bias_factor: float, gate: str,
                strict: bool, full: bool, method_options: dict) -> CachedStep:
    """The jitted step for these settings, from a small LRU cache keyed by the model function's
    identity, the options and the local devices (jit's own cache then holds one executable per batch
    shape)."""
    devices = tuple(jax.local_devices())
    key = (id(spec.apply), spec.tokens, method, target_mode == "pred", eps, bias_factor, gate, strict,
           full, devices, tuple(sorted(method_options.items())))
    hit = _STEP_CACHE.get(key)
    if hit is not None and hit.apply is spec.apply:
        _STEP_CACHE.move_to_end(key)
        return hit
    counter = [0]
    options = ({"eps": eps, "bias_factor": bias_factor, "gate": gate, "strict": strict}
               if method == "lrp" else dict(method_options))
    step = _make_step(spec, method, target_mode == "pred", options, full, counter)
    # Inputs are given as host arrays and sharded by jit (rows split over "data"); committing them
    # with device_put first would put sharding-typed avals into the trace (a `reshard` inside
    # jnp.where, which strict mode refuses).
    sharding = NamedSharding(Mesh(np.array(devices), ("data",)), P("data"))
    entry = CachedStep(spec.apply, jax.jit(step, in_shardings=(sharding,) * 4), counter, devices,
                       sharding)
    _remember(_STEP_CACHE, key, entry)
    return entry


def _jitted_apply(apply: Callable) -> Callable:
    """``jax.jit(apply)``, cached by identity (the probe batch then compiles once per model)."""
    hit = _PROBE_CACHE.get(id(apply))
    if hit is not None and hit[0] is apply:
        return hit[1]
    f = jax.jit(apply)
    _remember(_PROBE_CACHE, id(apply), (apply, f))
    return f


def probe(spec: ModelSpec, features: Optional[int], first: Optional[Example]) -> dict:
    """Evaluate the model on a fixed probe batch: checks it and fingerprints its weights.

    Returns ``{"input": str, "scores": (2, C) nested list, "n_classes": C}`` (``{"scores": None}`` for
    float inputs of unknown feature count); the scores are compared when a job is resumed.
    """
    rng = np.random.default_rng(0)
    if spec.tokens:
        ids = first.data[:8] if first is not None else np.full((3,), spec.pad_id, np.int32)
        x = np.stack([ids, ids]).astype(np.int32)
        lengths = np.array([len(ids), max(1, len(ids) // 2)], np.int32)
        what = f"token ids {x.shape} int32"
    else:
        if features is None:
            return {"scores": None}
        x = rng.uniform(-1, 1, (2, 8, features)).astype(np.float32)
        lengths = np.array([8, 5], np.int32)
        what = f"x {x.shape} float32"
    try:
        with traceable(spec.apply):   # nnx models: their layers as plain JAX, so jit can trace them
            out = np.asarray(_jitted_apply(spec.apply)(x, lengths))
    except Exception as e:
        raise JobError(f"the model failed on a probe batch ({what}, lengths (2,) int32): "
                       f"{type(e).__name__}: {one_line(e)}. Check the model spec (apply(x, lengths) -> "
                       f"logits (B, C)).") from e
    if out.ndim != 2 or out.shape[0] != 2 or not np.issubdtype(out.dtype, np.floating):
        raise JobError(f"apply(x, lengths) must return logits of shape (B, C) (floating); on a probe batch "
                       f"of B=2 it returned {out.dtype} {out.shape}.")
    if not np.all(np.isfinite(out)):
        raise JobError("the model returned NaN/inf logits on a probe batch; check its parameters.")
    return {"input": what, "scores": out.astype(np.float64).round(7).tolist(), "n_classes": int(out.shape[1])}


def _on_local_devices(fn: Callable, sharding) -> Callable:
    """Under jax.distributed, jit refuses host (numpy) inputs with a non-replicated sharding even over
    this process's own devices: commit each batch to them first (the same computation, no collectives)."""
    def call(*arrays):
        return fn(*(jax.device_put(a, sharding) for a in arrays))
    return call


class Runner:
    """Batches a shard's examples by length bucket, runs them sharded over all local devices."""

    def __init__(self, spec: ModelSpec, step: CachedStep, target_mode, batch_size: int,
                 bucket_step: int, max_length: Optional[int], features: Optional[int]):
        self.spec, self.target_mode = spec, target_mode
        self.n_devices = len(step.devices)
        self.step, self.sharding = step.fn, step.sharding
        if jax.process_count() > 1:
            self.step = _on_local_devices(self.step, self.sharding)
        self.batch = -(-batch_size // self.n_devices) * self.n_devices
        self.bucket_step, self.max_length, self.features = bucket_step, max_length, features
        self.bucket_lengths: set = set()

    def bucket(self, L: int) -> int:
        b = -(-L // self.bucket_step) * self.bucket_step
        return min(b, self.max_length) if self.max_length is not None else b

    def _batch_arrays(self, chunk: list, L: int):
        B, n = self.batch, len(chunk)
        rows = chunk + [chunk[0]] * (B - n)   # dummy rows: copies of a real one, dropped afterwards
        if self.spec.tokens:
            x = np.full((B, L), self.spec.pad_id, np.int32)
        else:
            x = np.zeros((B, L, self.features), np.float32)
        lengths = np.empty((B,), np.int32)
        tgt = np.zeros((B,), np.int32)
        idx = np.empty((B,), np.int32)     # input positions (seeds of method="random")
        for j, ex in enumerate(rows):
            x[j, :ex.length] = ex.data
            lengths[j] = ex.length
            idx[j] = ex.index
            if self.target_mode == "true":
                tgt[j] = ex.label
            elif self.target_mode != "pred":
                tgt[j] = self.target_mode
        return x, lengths, tgt, idx

    def _run(self, arrays: tuple):
        try:
            return self.step(*arrays)
        except JobError:
            raise
        except Exception as e:
            raise JobError(f"the model failed on a batch of shape {tuple(arrays[0].shape)} "
                           f"({arrays[0].dtype}): {type(e).__name__}: {one_line(e)}") from e

    def _column_batch(self, ex: Examples, chunk: np.ndarray, L: int):
        """:meth:`_batch_arrays` for :class:`Examples` columns (vectorised)."""
        B, n = self.batch, len(chunk)
        rows = np.concatenate([chunk, np.full(B - n, chunk[0], chunk.dtype)])
        lengths = ex.lengths[rows]
        m = min(L, ex.x.shape[1])
        x = ex.x[ex.rows[rows], :m]                                   # a copy (fancy indexing)
        past = np.arange(m)[None, :] >= lengths[:, None]
        x.reshape(B * m, -1)[past.reshape(-1)] = 0                    # zero past each length
        if m < L:
            x = np.concatenate([x, np.zeros((B, L - m, x.shape[2]), np.float32)], axis=1)
        if self.target_mode == "true":
            tgt = ex.labels[rows].astype(np.int32)
        else:
            tgt = np.full((B,), 0 if self.target_mode == "pred" else self.target_mode, np.int32)
        return x, lengths.astype(np.int32), tgt, ex.index[rows].astype(np.int32)

    def _buckets(self, examples) -> dict:
        """``{bucket length: positions in examples}``, positions in input order."""
        if isinstance(examples, Examples):
            b = -(-examples.lengths.astype(np.int64) // self.bucket_step) * self.bucket_step
            if self.max_length is not None:
                b = np.minimum(b, self.max_length)
            return {int(L): np.flatnonzero(b == L) for L in np.unique(b)}
        buckets = defaultdict(list)
        for k, ex in enumerate(examples):
            buckets[self.bucket(ex.length)].append(k)
        return buckets

    def dispatch(self, examples) -> list:
        """Start the device work for a shard's examples (a list of :class:`Example` or
        :class:`Examples` columns; asynchronous); returns a handle for :meth:`collect`."""
        buckets = self._buckets(examples)
        columns = isinstance(examples, Examples)
        B = self.batch
        dispatched, pending = [], (np.zeros(0, np.int64) if columns else [])
        order = sorted(buckets)
        for bi, L in enumerate(order):
            # leftovers of a shorter bucket ride along, padded to this length: at most one partial
            # batch per shard, and every batch shape is (B, bucket length)
            items = np.concatenate([pending, buckets[L]]) if columns else pending + buckets[L]
            last = bi == len(order) - 1
            n_full = len(items) if last else (len(items) // B) * B
            for s in range(0, n_full, B):
                chunk = items[s:s + B]
                self.bucket_lengths.add(L)
                out = self._run(self._column_batch(examples, chunk, L) if columns else
                                self._batch_arrays([examples[k] for k in chunk], L))
                dispatched.append((chunk, out))
            pending = items[n_full:]
        return dispatched

    def collect(self, examples, dispatched: list, on_batch: Callable[[int], None]):
        """Wait for a dispatched shard: per example (in the given order) a dict of numpy results; for
        :class:`Examples`, one dict of columns ``relevance (m, T)``, ``score``, ``target`` (``(m,)``)
        [, ``relevance_full (m, T, F)``], zero past each length."""
        if isinstance(examples, Examples):
            return self._collect_columns(examples, dispatched, on_batch)
        results: list = [None] * len(examples)
        for chunk, out in dispatched:
            host = {k: np.asarray(v) for k, v in out.items()}
            for j, k in enumerate(chunk):
                L = examples[k].length
                r = {"relevance": host["relevance"][j, :L], "score": host["score"][j],
                     "target": host["target"][j]}
                if "relevance_full" in host:
                    r["relevance_full"] = host["relevance_full"][j, :L]
                results[k] = r
            on_batch(len(chunk))
        return results

    def _collect_columns(self, ex: Examples, dispatched: list, on_batch: Callable[[int], None]) -> dict:
        m, T = len(ex), ex.x.shape[1]
        cols = {"relevance": np.zeros((m, T), np.float32), "score": np.zeros((m,), np.float32),
                "target": np.zeros((m,), np.int32)}
        for chunk, out in dispatched:
            host = {k: np.asarray(v) for k, v in out.items()}
            n = len(chunk)
            for k, v in host.items():
                if k not in cols:   # relevance_full: allocated once its F is known
                    cols[k] = np.zeros((m, T) + v.shape[2:], np.float32)
                if v.ndim == 1:
                    cols[k][chunk] = v[:n]
                else:
                    w = min(v.shape[1], T)
                    cols[k][chunk, :w] = v[:n, :w]
            on_batch(n)
        valid = np.arange(T)[None, :] < ex.lengths[:, None]
        for k in ("relevance", "relevance_full"):
            if k in cols:
                cols[k][~valid] = 0
        return cols
