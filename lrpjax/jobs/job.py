"""The entry point of a job, :func:`attribute_dataset` (its steps: :mod:`lrpjax.jobs.pipeline`)."""
from __future__ import annotations

import os
from typing import Callable, Iterable, Optional, Union

from lrpjax._checks import DEFAULT_BIAS_FACTOR, DEFAULT_EPS, DEFAULT_GATE
from lrpjax.jobs.spec import JobOptions, JobSummary, ModelSpec


def attribute_dataset(model: Union[ModelSpec, Callable], dataset: Union[str, os.PathLike, Iterable],
                      out_dir: Union[str, os.PathLike], *, method: str = "lrp", batch_size: int = 256,
                      eps: float = DEFAULT_EPS, bias_factor: float = DEFAULT_BIAS_FACTOR,
                      gate: str = DEFAULT_GATE, target: Union[str, int] = "pred", full: bool = False,
                      max_length: Optional[int] = None, bucket_step: int = 8, shard_size: int = 4096,
                      overwrite: bool = False, progress=None, strict: bool = True,
                      process_index: Optional[int] = None, process_count: Optional[int] = None,
                      method_options: Optional[dict] = None) -> JobSummary:
    """Explain every example of ``dataset`` and write the relevance to Parquet shards in ``out_dir``.

    Args:
      model: a :class:`ModelSpec`, a callable ``apply(x, lengths) -> logits (B, C)`` (float inputs
        ``x (B, T, F)`` float32, ``lengths (B,)`` int32) or a tuple ``(apply, tokenizer)``.
      dataset: a path -- ``.npz`` (``x (N, T_max, F)``, optional ``lengths (N,)``, ``labels (N,)``,
        ``ids (N,)``), ``.npy`` (``(N, T, F)``, all full length), ``.jsonl`` (objects with ``x`` (list of
        T lists of F numbers) or ``text``, optional ``label``, ``id``, ``length``), ``.parquet`` (the
        same columns), any other extension = a text file (one example per line, optionally
        ``LABEL<TAB>text``) -- or an iterable of such dicts, of ``(T, F)`` arrays or of strings.
      out_dir: output directory (created); see :mod:`lrpjax.jobs` for its layout and columns.
      method: ``"lrp"`` (:func:`lrpjax.explain` / :func:`lrpjax.explain_tokens`) or a baseline of
        :mod:`lrpjax.baselines` for comparison: ``"gradient"`` (of the target logit), ``"gradient_x_input"``,
        ``"sensitivity"`` (squared gradient norm per step), ``"integrated_gradients"``,
        ``"occlusion"`` (per step), ``"random"`` (seeded per example by ``(seed, index)``). Token
        models: baselines act on the embedding (one lookup), summed over its dimensions per token.
      method_options: keyword options of the baseline: ``integrated_gradients`` ``steps`` (32),
        ``baseline`` (a number, 0.0), ``batch_size``; ``occlusion`` ``value`` (0.0), ``batch_size``;
        ``random`` ``seed`` (0). Part of the job's settings (recorded, a change is refused).
      batch_size: rows per device call (rounded up to a multiple of the device count).
      eps, bias_factor, gate, strict: the LRP rule options (see :func:`lrpjax.relevance`).
      target: ``"pred"`` (argmax), ``"true"`` (the example's label; examples without one are errors)
        or a class index.
      full: also write ``relevance_full`` (``length x F`` per example; float inputs only).
      max_length: longer examples are errors; caps the bucket length.
      bucket_step: batches are padded to the next multiple of it (one compilation per bucket length).
      shard_size: examples per input shard = per output file (the unit of resuming).
      overwrite: replace a job with other settings in ``out_dir`` (otherwise refused).
      progress: ``None`` = tqdm bar if stderr is a terminal, else a log line every 10 s;
        ``True``/``"tqdm"``, ``"log"``, ``False``/``"none"``.
      process_index, process_count: this process's share of a job run by several processes (hosts):
        process ``p`` of ``n`` explains and writes input shard ``k`` iff ``k % n == p`` (every process
        reads the whole input to find the shard boundaries, but validates and explains only its own
        shards). Default: ``jax.process_index()`` / ``jax.process_count()``, i.e. a single process
        unless :func:`jax.distributed.initialize` was called; give both or neither. Under
        ``jax.distributed`` every process must then make the call; a call made by one process alone
        needs ``process_index=0, process_count=1``. See "Several processes" below.
    Returns:
      a :class:`JobSummary` (with several processes: see its docstring for what each count covers).
    Raises:
      JobError (a ValueError) at once for a bad model spec or option, an unreadable input or an
      unwritable / foreign output directory. Bad *examples* never raise: they go to ``errors.parquet``.

    Re-running the same call resumes: shards whose part file is complete are skipped (their ids are
    checked against the input), so an interrupted job ends with the same output as an uninterrupted one.

    Several processes: ``out_dir`` must be one directory shared by all of them (the same path on every
    host, e.g. NFS). The output is the single-process output (same files, rows, ``errors.parquet`` and
    counts; each part file records its writer in the metadata key ``lrpjax.process``), and a job may be
    resumed with any process count. Process 0 alone creates, refuses or (``overwrite``) replaces the job
    in ``out_dir``; the others start writing only after it did. Each process holds its own lock
    (``.lock-p{p}``, plus a shared lock on ``.lock`` that keeps single-process jobs out).

    * Under ``jax.distributed`` (``jax.process_count() > 1``; ``lrpjax attribute --distributed``) the
      processes meet through JAX's coordination service (its key-value store; no device collectives,
      so no timeout while one process still works): after process 0 set up ``out_dir``, and after
      every process finished its shards; then process 0 checks that every shard is complete, merges
      ``errors.parquet`` and marks the manifest ``complete``, and all processes return. If a process
      fails, the others stop at their next shard with an error naming it (their finished shards are
      kept: run all processes again to resume); if one dies, JAX's heartbeat ends the others.
    * Without ``jax.distributed`` (``process_index`` / ``process_count`` given, e.g. independent jobs
      of a scheduler array, or one after another) process ``p > 0`` waits (up to
      ``WAIT_FOR_PROCESS_0_S`` seconds) until ``manifest.json`` holds this job's key, and every process
      that finishes checks whether all shards are complete: the one that completes the job merges
      ``errors.parquet`` and marks the manifest ``complete`` (under the lock ``.lock-final``); the
      others return with ``JobSummary.complete`` False. So ``attribute_dataset(..., process_index=0,
      process_count=2)`` then ``(..., process_index=1, process_count=2)`` equals one call.

    >>> import numpy as np, jax, lrpjax, tempfile
    >>> p = lrpjax.init_lstm(jax.random.key(0), 2, 8)
    >>> W = np.ones((8, 2), np.float32)
    >>> apply = lambda x, l: lrpjax.dense(lrpjax.lstm(p, x, lengths=l)[1][1], W)
    >>> data = [np.ones((5, 2), np.float32), np.ones((9, 2), np.float32)]
    >>> s = attribute_dataset(apply, data, tempfile.mkdtemp(), progress=False)
    >>> s.n_examples, s.n_errors
    (2, 0)
    """
    # The job's modules read and write Parquet: pyarrow (heavy) is imported when the first job runs,
    # so that `import lrpjax` stays light.
    from lrpjax.jobs import pipeline

    opts = JobOptions(method=method, batch_size=batch_size, eps=eps, bias_factor=bias_factor, gate=gate,
                      target=target, full=full, max_length=max_length, bucket_step=bucket_step,
                      shard_size=shard_size, overwrite=overwrite, progress=progress, strict=strict,
                      method_options=method_options)
    return pipeline.run_job(model, dataset, out_dir, opts, process_index, process_count)
