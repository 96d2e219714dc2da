"""Evaluate explanations over a whole dataset: :func:`evaluate_dataset` (the command ``lrpjax evaluate``).

Two passes, both resumable::

    1. attribution: one attribution job per method (lrpjax.attribute_dataset) into
       out_dir/attributions/<method>/   (buckets, devices, resume, bad examples: as there)
    2. scores: the input again, shard by shard; each shard's explained examples (the rows of its
       part files) are padded per length bucket and every metric runs on every method's relevance
       (its model calls in one jitted call per batch shape) -> out_dir/scores/part-NNNNN.parquet
       (long format: index, id, method, metric, score; written atomically, the unit of resuming)

then ``out_dir/summary.json``: per method and metric the mean score over the examples with a 95 %
percentile-bootstrap interval (resampling examples, seeded), printed as a table and shown by
``lrpjax report``. The metrics are those of :mod:`lrpjax.metrics` that take a model (see
:func:`lrpjax.metrics.registry.per_example_metrics`); ground-truth metrics need masks, which job inputs do not carry: call them from
Python.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

import jax
import numpy as np

from lrpjax.jobs.job import attribute_dataset
from lrpjax.metrics.registry import per_example_metrics
from lrpjax.jobs.output import write_atomic_json, write_atomic_parquet
from lrpjax.jobs.sources import Block, open_dataset, read_shards
from lrpjax.jobs.spec import JobError, ModelSpec, as_model_spec, utc_now

SCORES_DIR, SUMMARY = "scores", "summary.json"


@dataclasses.dataclass
class EvaluationSummary:
    """What :func:`evaluate_dataset` did: ``rows`` (one dict per method and metric: ``method``,
    ``metric``, ``n``, ``mean``, ``low``, ``high``, ``higher_is_better``), the shards scored and skipped."""
    out_dir: str
    rows: list
    n_shards_scored: int
    n_shards_skipped: int

    def table(self) -> str:
        """The summary as a fixed-width text table."""
        head = f"{'metric':<28} {'method':<22} {'n':>7} {'mean':>10}  {'95% CI (bootstrap)':<24} better"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            ci = f"[{r['low']:.4g}, {r['high']:.4g}]"
            lines.append(f"{r['metric']:<28} {r['method']:<22} {r['n']:>7} {r['mean']:>10.4g}  {ci:<24} "
                         f"{'higher' if r['higher_is_better'] else 'lower'}")
        return "\n".join(lines)


def evaluate_dataset(model: Union[ModelSpec, Callable], dataset: Union[str, os.PathLike, Iterable],
                     out_dir: Union[str, os.PathLike], *, methods: Sequence[str] = ("lrp",),
                     metrics: Sequence[str] = ("pixel_flipping",), target="pred", batch_size: int = 256,
                     shard_size: int = 4096, bucket_step: int = 8, max_length: Optional[int] = None,
                     seed: int = 0, n_bootstrap: int = 1000, overwrite: bool = False, progress=None,
                     method_options: Optional[dict] = None, metric_options: Optional[dict] = None,
                     **rule_options) -> EvaluationSummary:
    """Explain ``dataset`` with every method, score every explanation with every metric, summarise.

    Args:
      model, dataset, target, batch_size, shard_size, bucket_step, max_length, progress: as for
        :func:`lrpjax.attribute_dataset` (float inputs only: the metrics perturb ``x``).
      out_dir: output directory (created): ``attributions/<method>/`` (attribution jobs),
        ``scores/part-NNNNN.parquet`` (one row per example, method and metric), ``summary.json``.
      methods: attribution methods (``"lrp"`` and the baselines of :func:`lrpjax.attribute_dataset`).
      metrics: names of :func:`lrpjax.metrics.registry.per_example_metrics` (e.g. ``"pixel_flipping"``, ``"faithfulness_correlation"``).
      seed: seeds the metrics' random perturbations (per shard and batch) and the bootstrap.
      n_bootstrap: bootstrap resamples for the 95 % intervals.
      method_options: ``{method: {option: value}}`` (see ``method_options`` of attribute_dataset).
      metric_options: ``{metric: {option: value}}`` keyword options of the metric functions.
      rule_options: ``eps``, ``bias_factor``, ``gate``, ``strict`` for ``"lrp"``.
    Returns:
      an :class:`EvaluationSummary` (also written to ``out_dir/summary.json``).

    Re-running the same call resumes: finished attribution shards and score shards are skipped; a
    changed setting is refused unless ``overwrite=True``.

    >>> import numpy as np, jax, lrpjax, tempfile
    >>> p = lrpjax.init_lstm(jax.random.key(0), 2, 8)
    >>> W = np.ones((8, 2), np.float32)
    >>> apply = lambda x, l: lrpjax.dense(lrpjax.lstm(p, x, lengths=l)[1][1], W)
    >>> data = [np.random.default_rng(i).normal(size=(6, 2)).astype(np.float32) for i in range(4)]
    >>> s = evaluate_dataset(apply, data, tempfile.mkdtemp(), methods=["lrp", "gradient"],
    ...                      metrics=["pixel_flipping"], progress=False, n_bootstrap=50)
    >>> [(r["method"], r["metric"], r["n"]) for r in s.rows]
    [('lrp', 'pixel_flipping', 4), ('gradient', 'pixel_flipping', 4)]
    """
    spec = as_model_spec(model)
    if spec.tokens:
        raise JobError("evaluate_dataset perturbs float inputs x (B, T, F); for a token model, evaluate "
                       "an embedded copy of the data with a model that takes embeddings.")
    table = per_example_metrics()
    methods, metrics = list(methods), list(metrics)
    unknown = [m for m in metrics if m not in table]
    if not metrics or unknown:
        raise JobError(f"metrics must be a non-empty list of {sorted(table)}; unknown: {unknown}.")
    if not methods or len(set(methods)) != len(methods):
        raise JobError(f"methods must be a non-empty list without repeats, got {methods}.")
    metric_options = {m: dict((metric_options or {}).get(m, {})) for m in metrics}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"methods": methods, "metrics": metrics, "metric_options": metric_options, "seed": seed,
                "target": target if isinstance(target, int) else str(target), "batch_size": batch_size,
                "shard_size": shard_size, "bucket_step": bucket_step, "max_length": max_length,
                "rule_options": rule_options, "method_options": method_options or {}}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:32]
    _claim(out, key, settings, overwrite)
    for method in methods:
        attribute_dataset(spec, dataset, out / "attributions" / method, method=method, target=target,
                          batch_size=batch_size, shard_size=shard_size, bucket_step=bucket_step,
                          max_length=max_length, overwrite=overwrite, progress=progress,
                          method_options=(method_options or {}).get(method), **rule_options)
    scored, skipped = _score(spec, dataset, out, methods, {m: table[m] for m in metrics}, metric_options,
                             key, settings, seed)
    rows = _summarise(out, methods, metrics, table, n_bootstrap, seed)
    summary = EvaluationSummary(str(out), rows, scored, skipped)
    write_atomic_json({"format": "lrpjax-evaluation", "job_key": key, "settings": settings,
                       "updated": utc_now(), "rows": rows}, out / SUMMARY)
    return summary


def _claim(out: Path, key: str, settings: dict, overwrite: bool) -> None:
    """Refuse an evaluation with other settings in ``out`` (unless ``overwrite``)."""
    path = out / "evaluation.json"
    if path.exists() and not overwrite:
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("job_key") != key:
            changed = sorted(k for k in set(settings) | set(old.get("settings", {}))
                             if settings.get(k) != old.get("settings", {}).get(k))
            raise JobError(f"{out} holds an evaluation with other settings ({', '.join(changed)}); use a "
                           f"new out_dir, or overwrite=True (--overwrite) to replace it.")
    if overwrite:
        for f in (out / SCORES_DIR).glob("part-*.parquet"):
            f.unlink()
    write_atomic_json({"format": "lrpjax-evaluation", "job_key": key, "settings": settings}, path)


def _score(spec, dataset, out: Path, methods, metrics: dict, metric_options: dict, key: str,
           settings: dict, seed: int) -> tuple[int, int]:
    """Pass 2: score every shard that an earlier run did not finish; returns (scored, skipped)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    (out / SCORES_DIR).mkdir(exist_ok=True)
    scored = skipped = 0
    source = open_dataset(dataset)
    for k, recs in enumerate(read_shards(source, settings["shard_size"])):
        path = out / SCORES_DIR / f"part-{k:05d}.parquet"
        if _complete(path, key):
            skipped += 1
            continue
        parts = {m: pq.read_table(out / "attributions" / m / f"part-{k:05d}.parquet") for m in methods}
        index = parts[methods[0]].column("index").to_numpy()
        for m in methods[1:]:
            if not np.array_equal(parts[m].column("index").to_numpy(), index):
                raise JobError(f"the attribution jobs of {methods[0]!r} and {m!r} explained different "
                               f"examples in shard {k}; run with overwrite=True.")
        rows = _score_shard(spec, recs, parts, methods, metrics, metric_options, settings,
                            jax.random.fold_in(jax.random.key(seed), k))
        table = pa.table({"index": pa.array(rows["index"], pa.int64()),
                          "id": parts[methods[0]].column("id").take(pa.array(rows["row"])),
                          "method": pa.array(rows["method"], pa.string()),
                          "metric": pa.array(rows["metric"], pa.string()),
                          "score": pa.array(rows["score"], pa.float64())})
        write_atomic_parquet(table, path, {"lrpjax.evaluation": key, "lrpjax.rows": table.num_rows})
        scored += 1
    return scored, skipped


def _complete(path: Path, key: str) -> bool:
    import pyarrow.parquet as pq
    try:
        md = pq.read_metadata(path)
        kv = md.metadata or {}
        return kv.get(b"lrpjax.evaluation") == key.encode() and int(kv[b"lrpjax.rows"]) == md.num_rows
    except Exception:   # missing or damaged: (re)compute
        return False


def _shard_x(recs, index: np.ndarray, lengths: np.ndarray) -> list:
    """The explained examples' ``x`` (``(length, F)`` float32 each) from the raw shard."""
    if isinstance(recs, Block):
        return [recs.x[i - recs.start, :L] for i, L in zip(index.tolist(), lengths.tolist())]
    by_index = {r.index: r for r in recs}
    return [np.asarray(by_index[i].x, np.float32)[:L] for i, L in zip(index.tolist(), lengths.tolist())]


def _score_shard(spec, recs, parts: dict, methods, metrics: dict, metric_options: dict, settings: dict,
                 key) -> dict:
    """Scores of one shard: per method and metric one row per explained example."""
    first = parts[methods[0]]
    index = first.column("index").to_numpy()
    lengths = first.column("length").to_numpy().astype(np.int32)
    target = first.column("target").to_numpy().astype(np.int32)
    xs = _shard_x(recs, index, lengths)
    R = {}
    for m in methods:     # each method's relevance lists as one flat buffer and offsets
        col = parts[m].column("relevance").combine_chunks()
        R[m] = (col.flatten().to_numpy(zero_copy_only=False), col.offsets.to_numpy())
    step, B = settings["bucket_step"], settings["batch_size"]
    buckets = -(-lengths // step) * step
    rows = {"index": [], "row": [], "method": [], "metric": [], "score": []}
    for bi, L in enumerate(np.unique(buckets).tolist()):
        sel = np.flatnonzero(buckets == L)
        for c in range(0, len(sel), B):
            chunk = sel[c:c + B]
            pad = np.concatenate([chunk, np.full(B - len(chunk), chunk[0])])
            F = xs[chunk[0]].shape[1]
            x = np.zeros((B, L, F), np.float32)
            for j, r in enumerate(pad.tolist()):
                x[j, :lengths[r]] = xs[r]
            ckey = jax.random.fold_in(key, bi * 1_000_003 + c)
            for m in methods:
                Rb = np.zeros((B, L), np.float32)
                values, offsets = R[m]
                for j, r in enumerate(pad.tolist()):
                    Rb[j, :lengths[r]] = values[offsets[r]:offsets[r + 1]]
                for name, metric in metrics.items():   # each runs its model calls in one jitted call
                    s = np.asarray(metric.fn(spec.apply, x, Rb, target[pad], lengths[pad], ckey,
                                             **dict(metric_options[name])), np.float64)
                    rows["index"] += index[chunk].tolist()
                    rows["row"] += chunk.tolist()
                    rows["method"] += [m] * len(chunk)
                    rows["metric"] += [name] * len(chunk)
                    rows["score"] += s[:len(chunk)].tolist()
    return rows


def bootstrap_ci(scores: np.ndarray, n_bootstrap: int, seed: int, level: float = 0.95) -> tuple:
    """``(mean, low, high)``: the mean of the finite ``scores`` and its percentile-bootstrap interval
    (resampling the scores with replacement, ``n_bootstrap`` times, seeded).

    >>> m, lo, hi = bootstrap_ci(np.arange(10.0), 200, 0)
    >>> m, bool(lo < m < hi)
    (4.5, True)
    """
    s = np.asarray(scores, np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.concatenate([s[rng.integers(0, s.size, (min(100, n_bootstrap - a), s.size))].mean(1)
                            for a in range(0, n_bootstrap, 100)])
    tail = 100 * (1 - level) / 2
    return float(s.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def _summarise(out: Path, methods, metrics, table: dict, n_bootstrap: int, seed: int) -> list:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    files = sorted((out / SCORES_DIR).glob("part-*.parquet"))
    scores = pq.ParquetDataset([str(f) for f in files]).read() if files else None
    rows = []
    for metric in metrics:
        for method in methods:
            s = np.zeros(0)
            if scores is not None:
                sel = pc.and_(pc.equal(scores.column("method"), method), pc.equal(scores.column("metric"), metric))
                s = scores.filter(sel).column("score").to_numpy()
            mean, lo, hi = bootstrap_ci(s, n_bootstrap, seed)
            rows.append({"method": method, "metric": metric, "n": int(np.isfinite(s).sum()), "mean": mean,
                         "low": lo, "high": hi, "higher_is_better": table[metric].higher_is_better})
    return rows
