"""Dataset-wide attribution jobs: explain every example of a dataset and write the relevance to Parquet.

>>> summary = attribute_dataset(model, "data.npz", "out/")        # doctest: +SKIP
>>> summary.examples_per_second                                   # doctest: +SKIP

Data flow, one input shard (``shard_size`` examples) at a time::

    reader (streams records) -> validate / tokenize (bad ones -> error rows)
      -> length buckets (pad to a multiple of ``bucket_step``) -> batches of ``batch_size`` rows,
         sharded over all local devices (1-D mesh "data")
      -> one jitted relevance call per batch (one compilation per bucket length)
      -> rows in input order -> ``part-NNNNN.parquet`` (+ ``shard-errors/errors-NNNNN.parquet``),
         each written to a hidden temporary file and renamed into place (atomic)

Output directory (readable with pyarrow / pandas alone, no lrpjax needed)::

    out_dir/manifest.json                   model, rule options, input fingerprint, versions, counts
    out_dir/part-00000.parquet, ...         one per input shard: the explained examples, input order
    out_dir/errors.parquet                  every bad example: index, id, reason (merged at the end)
    out_dir/shard-errors/errors-00000.parquet, ...   the same, per shard (used when resuming)

Columns of a part file: ``index`` (int64, 0-based position in the input), ``id`` (int64 when the
input's first example has an integer id or none, else string), ``label`` (int64, null if none),
``length`` (int32), ``target`` (int32, the explained class), ``score`` (float32, its logit),
``relevance`` (list<float32>: one value per step, summed over features / the embedding),
``relevance_full`` (list<list<float32>>, ``length x F``, only with ``full=True``) and ``tokens``
(list<string>, token inputs only). Read them with::

    import glob, pyarrow.parquet as pq
    table = pq.ParquetDataset(sorted(glob.glob("out/part-*.parquet"))).read()

(``pq.read_table("out/")`` would also try ``manifest.json`` and ``errors.parquet``; or use
:func:`read_results`.)

What streams: ``.npy`` is memory-mapped; ``.npz`` loads ``lengths`` / ``labels`` / ``ids`` and
memory-maps ``x`` when the archive is uncompressed (``np.savez``; ``np.savez_compressed`` archives load
``x`` fully); ``.jsonl``, text files and ``.parquet`` (by record batch) are read incrementally; a
Python iterable is consumed lazily. At most one shard of examples is held in memory.
"""
from __future__ import annotations

import importlib
import sys
import types

from lrpjax.jobs import spec as _settings
from lrpjax.jobs.job import attribute_dataset
from lrpjax.jobs.spec import (ERRORS, FORMAT_VERSION, MANIFEST, METHOD_OPTIONS, METHODS, PER_STEP_ONLY,
                              SHARD_ERRORS_DIR, JobError, JobOptions, JobSummary, ModelSpec)

# Served by __getattr__: the names of the modules that import pyarrow, loaded on first use (so that
# `import lrpjax` does not load pyarrow).
_LAZY = {"read_results": "output", "read_errors": "output", "open_dataset": "sources",
         "evaluate_dataset": "evaluate"}

__all__ = ["BARRIER_TIMEOUT_S", "ERRORS", "FORMAT_VERSION", "JobError", "JobOptions", "JobSummary",
           "LOG_EVERY_S", "MANIFEST", "METHODS", "METHOD_OPTIONS", "ModelSpec", "PER_STEP_ONLY",
           "SHARD_ERRORS_DIR", "WAIT_FOR_PROCESS_0_S", "attribute_dataset", "evaluate_dataset", "open_dataset",
           "read_errors",
           "read_results"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _setting(name: str) -> property:
    return property(lambda module: getattr(_settings, name),
                    lambda module, value: setattr(_settings, name, value))


class _Package(types.ModuleType):
    """The settings ``lrpjax.jobs.NAME`` are those of :mod:`lrpjax.jobs.spec`, where the job reads them:
    ``lrpjax.jobs.WAIT_FOR_PROCESS_0_S = 60`` takes effect (not a copy of the value)."""

    LOG_EVERY_S = _setting("LOG_EVERY_S")
    WAIT_FOR_PROCESS_0_S = _setting("WAIT_FOR_PROCESS_0_S")
    BARRIER_TIMEOUT_S = _setting("BARRIER_TIMEOUT_S")


sys.modules[__name__].__class__ = _Package
