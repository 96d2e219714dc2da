"""The steps of a job (:func:`run_job`, the body of :func:`lrpjax.jobs.attribute_dataset`); the data flow
of one input shard is drawn in :mod:`lrpjax.jobs`.

Check the options, open the input and ``out_dir`` -> set up (process 0: read, compare or clear an
earlier job; the first shard fixes the feature count and gives the probe batch; write
``manifest.json``) -> meet (:meth:`Sync.setup_done`) -> explain and write this process's shards
(skipping those an earlier run completed) -> meet, finalize, meet. How the processes meet is the
business of :mod:`lrpjax.jobs.sync`.
"""
from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import itertools
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Optional

import jax
import numpy as np

from lrpjax._checks import is_int, one_line
from lrpjax.jobs.compute import Runner, cached_step, probe
from lrpjax.jobs.output import (completed_errors, finalize, library_versions, own_files, part_path,
                                read_errors, remove_stale_tmp, results_schema, stored_ids,
                                write_atomic_json, write_shard)
from lrpjax.jobs.progress import Progress
from lrpjax.jobs.sources import Source, open_dataset, read_shards
from lrpjax.jobs.spec import (ERRORS, FORMAT_VERSION, MANIFEST, SHARD_ERRORS_DIR, JobError, JobOptions,
                              JobSummary, ModelSpec, as_model_spec, utc_now)
from lrpjax.jobs.sync import Sync, make_sync
from lrpjax.jobs.validate import Validator, first_valid_example


def run_job(model, dataset, out_dir, opts: JobOptions, process_index: Optional[int],
            process_count: Optional[int]) -> JobSummary:
    """:func:`lrpjax.jobs.attribute_dataset` (arguments as there; ``opts``: its options)."""
    t0 = time.perf_counter()
    sync = make_sync(process_index, process_count)
    try:
        summary = _JobRun(sync, t0, opts).run(model, dataset, out_dir)
    except BaseException as e:
        sync.fail(e)        # the other processes learn of it at their next shard or meeting point
        raise
    if summary.complete and summary.n_examples and not summary.n_explained:
        raise JobError(_nothing_explained(summary))     # the job is finished: an error, not a result
    return summary


def _nothing_explained(s: JobSummary) -> str:
    """The message of a finished job whose every example is an error."""
    errors = Path(s.out_dir) / ERRORS
    try:
        first = read_errors(s.out_dir).column("reason")[0].as_py()
    except Exception:   # (only the message needs it)
        first = "?"
    return (f"all {s.n_examples} examples failed, none was explained (first reason: {first}); the reasons "
            f"are in {errors}: fix the input or the options (e.g. target='true' needs labels).")


class _JobRun:
    """One call on process ``sync.p`` of ``sync.n``: :meth:`run` calls the steps in order; they share
    this object's state (the spec, the input, ``out``, the validator, the job key and manifest...)."""

    def __init__(self, sync: Sync, t0: float, opts: JobOptions):
        self.sync, self.t0, self.opts = sync, t0, opts

    def run(self, model, dataset, out_dir) -> JobSummary:
        sync, opts = self.sync, self.opts
        sync.quiet = opts.progress in (False, "none")
        self.spec = as_model_spec(model)
        self.method_options = opts.check(self.spec)
        self.source = open_dataset(dataset)
        self.out = out = _output_dir(out_dir)
        with sync.lock(out), contextlib.ExitStack() as setting_up:
            setting_up.enter_context(sync.setup_lock(out))
            remove_stale_tmp(out, sync.p, sync.n)    # temporary files of an interrupted run (this process's)
            # process 0 alone decides what happens to out_dir
            old = _old_manifest(out, opts.overwrite) if sync.p == 0 else None
            shards = read_shards(self.source, opts.shard_size)
            first = next(shards, [])
            self._set_up(old, first)
            setting_up.close()
            sync.setup_done(out, self.job_key)   # the others wait for process 0 (and check the job)
            self._explain(itertools.chain([first] if first else [], shards), first)
            final = self._finalize()
        return self._summary(final)

    def _set_up(self, old: Optional[dict], first: list) -> None:
        """The first shard fixes the feature count and gives the probe example; then the job's settings
        and key, and (process 0) the claim on ``out`` and ``manifest.json``."""
        spec, opts, sync = self.spec, self.opts, self.sync
        self.validator = validator = Validator(spec, opts.target, opts.max_length)
        validator.infer_features(first)
        first_good = first_valid_example(spec, first, opts.max_length) if spec.tokens else None
        probed = probe(spec, validator.features, first_good)
        n_classes = probed.get("n_classes")
        validator.n_classes = n_classes
        if is_int(opts.target) and n_classes is not None and opts.target >= n_classes:
            raise JobError(f"target={opts.target} is not a class of this model (it has {n_classes} classes).")
        job = _job_settings(spec, opts, self.method_options, validator.features, self.source)
        self.job_key = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:32]
        if sync.p == 0:
            old = _claim_out_dir(self.out, old, job, probed, opts.overwrite, sync.n)
        self.manifest = {
            "format": "lrpjax-attributions", "format_version": FORMAT_VERSION, "status": "running",
            "job": job, "job_key": self.job_key, "probe": probed,
            "input_path": self.source.path, "input_mtime": self.source.fingerprint.get("mtime"),
            "model_name": spec.name,
            "versions": library_versions(),
            "devices": {"platform": jax.default_backend(), "count": len(jax.local_devices())},
            "created": (old or {}).get("created", utc_now()), "updated": utc_now(),
            "runs": int((old or {}).get("runs", 0)) + 1,
            "options_not_affecting_results": {"batch_size": opts.batch_size, "bucket_step": opts.bucket_step},
            "layout": {"parts": "part-NNNNN.parquet", "errors": ERRORS,
                       "shard_errors": f"{SHARD_ERRORS_DIR}/errors-NNNNN.parquet"},
            **sync.manifest_entry(),
        }
        if sync.p == 0:
            write_atomic_json(self.manifest, self.out / MANIFEST)

    def _explain(self, shards: Iterable[list], first: list) -> None:
        """Explain and write this process's shards (the jitted step compiles per bucket length)."""
        spec, opts, sync = self.spec, self.opts, self.sync
        self.step = cached_step(spec, opts.method, opts.target, float(opts.eps), float(opts.bias_factor),
                                opts.gate, opts.strict, opts.full, self.method_options)
        self.traces_before = self.step.counter[0]
        self.runner = Runner(spec, self.step, opts.target, min(opts.batch_size, opts.shard_size),
                             opts.bucket_step, opts.max_length, self.validator.features)
        bar = Progress(opts.progress, sync.share(self.source.total, opts.shard_size), sync.label)
        self.validator.fix_id_type(first)     # the first parsable example: int64 or string ids
        self.schema = results_schema(self.validator.id_type or "int", opts.full, spec.tokens)
        self.shards = _ShardLoop(self, bar)
        self.shards.run(shards)

    def _finalize(self) -> dict:
        """Meet, let the right process finalize the output, meet: ``{"complete", "errors"}``."""
        sync, c, runner = self.sync, self.shards.counts, self.runner
        self.compilations = self.step.counter[0] - self.traces_before   # new ones: cached steps are reused
        mine = {"shards_written": c["written"], "shards_skipped": c["skipped"], "examples": c["own_examples"],
                "errors": c["errors"], "explained": c["explained"], "compilations": self.compilations,
                "milliseconds": int(round(1000 * (time.perf_counter() - self.t0)))}
        everyone = sync.shards_done(mine)   # process 0 under jax.distributed: every process's counts
        run = {"compilations": self.compilations, "bucket_lengths": sorted(runner.bucket_lengths),
               "examples_explained": c["explained"], "devices": len(jax.local_devices()),
               "batch_rows": runner.batch}
        fin = functools.partial(finalize, self.out, self.t0, c["shards"], c["examples"], self.job_key,
                                self.validator.id_type or "int", self.schema, self.manifest,
                                sync.last_run(run, mine, everyone), sync.shard_counts(mine, everyone))
        return sync.final_done(sync.finalize(self.out, fin, c["errors"]))   # the others: process 0's

    def _summary(self, final: dict) -> JobSummary:
        c = self.shards.counts
        seconds = time.perf_counter() - self.t0
        rate = c["explained"] / seconds if seconds > 0 else 0.0
        return JobSummary(c["examples"], final["errors"], c["written"], c["skipped"], self.compilations,
                          seconds, rate, str(self.out), process_index=self.sync.p,
                          process_count=self.sync.n, n_shards=c["shards"], complete=final["complete"],
                          process_examples=c["own_examples"], process_errors=c["errors"])


class _ShardLoop:
    """Explains and writes this process's shards and counts what it did. The device works on one shard
    while the host writes the previous one and reads the next."""

    def __init__(self, job: _JobRun, bar: Progress):
        self.job, self.bar = job, bar
        self.counts = dict(examples=0, errors=0, written=0, skipped=0, explained=0, shards=0,
                           own_examples=0)

    def run(self, shards: Iterable[list]) -> None:
        in_flight = None
        # one writer thread: shard k's Parquet encoding, digest and fsync (which release the GIL)
        # overlap the reading, checking and device work of shard k+1; writes stay in order
        self.writer, self.writing = ThreadPoolExecutor(1, thread_name_prefix="lrpjax-writer"), None
        try:
            for k, recs in enumerate(shards):
                started = self._start(k, recs)
                if started is None:
                    continue
                if in_flight is not None:
                    self._write(*in_flight)
                in_flight = started
            if in_flight is not None:
                self._write(*in_flight)
            self._written()
        finally:
            if self.writing is not None:        # an error elsewhere: let the last write finish
                with contextlib.suppress(Exception):
                    self.writing.result()
            self.writer.shutdown()
            self.bar.close()

    def _written(self) -> None:
        """Wait for the shard being written (its errors are raised here) and count it."""
        if self.writing is not None:
            n_good = self.writing.result()
            self.writing = None
            self.counts["explained"] += n_good
            self.counts["written"] += 1

    def _start(self, k: int, recs: list) -> Optional[tuple]:
        """Validate shard ``k`` and start its device work; None for a shard not to write now."""
        job, c = self.job, self.counts
        c["shards"] += 1
        c["examples"] += len(recs)
        if not job.sync.owns(k):        # another process's shard: only note its ids
            job.validator.note_foreign(recs)
            return None
        job.sync.check()                # stop early if another process failed
        c["own_examples"] += len(recs)
        if self._completed_before(k, recs):
            return None
        good, errors = job.validator.split(recs)
        c["errors"] += len(errors)
        if errors:
            self.bar.update(len(errors), explained=False)
        job.runner.features = job.validator.features
        return k, recs, good, errors, job.runner.dispatch(good)

    def _completed_before(self, k: int, recs: list) -> bool:
        """Whether an earlier run finished shard ``k`` (then checked against the input and skipped)."""
        job, c = self.job, self.counts
        erows = completed_errors(job.out, k, job.job_key, verify=True)
        if erows is None:
            return False
        if stored_ids(job.out, k) != job.validator.shard_ids(recs):
            raise JobError(f"{part_path(job.out, k).name} does not hold the input's shard {k} (other indices "
                           f"/ ids): the input changed since it was written; use overwrite=True "
                           f"(--overwrite) to start over.")
        c["errors"] += erows
        c["skipped"] += 1
        self.bar.update(len(recs), explained=False)
        return True

    def _write(self, k: int, recs: list, good: list, errors: list, handle: list) -> None:
        """Wait for a shard's results and write its files."""
        job = self.job
        results = job.runner.collect(good, handle, self.bar.update)
        meta = {"lrpjax.job": job.job_key, "lrpjax.shard": k, "lrpjax.examples": len(recs),
                "lrpjax.process": job.sync.p, "lrpjax.processes": job.sync.n}
        self._written()
        self.writing = self.writer.submit(
            lambda: (write_shard(job.out, k, good, results, errors, job.validator.id_type, job.schema,
                                 meta), len(good))[1])


# ----------------------------------------------------------------------------------------------
# Set-up helpers

def _output_dir(out_dir) -> Path:
    """``out_dir``, created and checked writable."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / SHARD_ERRORS_DIR).mkdir(exist_ok=True)
    except OSError as e:
        raise JobError(f"cannot create the output directory {out}: {e.strerror or e}; choose a writable "
                       f"path.") from e
    if not os.access(out, os.W_OK):
        raise JobError(f"the output directory {out} is not writable; choose another --out.")
    return out


def _old_manifest(out: Path, overwrite: bool) -> Optional[dict]:
    """The manifest of an earlier job in ``out`` (None if there is none); refuses a directory that is
    not a job's (unless ``overwrite``)."""
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        try:
            return json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            if not overwrite:
                raise JobError(f"{manifest_path} is unreadable ({one_line(e)}); use overwrite=True "
                               f"(--overwrite) to start over.") from e
            return None
    if any(f.name not in (SHARD_ERRORS_DIR, ".lock") and not f.name.startswith(".lock-")
           for f in out.iterdir()) and not overwrite:
        raise JobError(f"{out} is not empty and holds no {MANIFEST} (not an lrpjax job directory); "
                       f"use a new or empty out_dir, or overwrite=True (--overwrite).")
    return None


def _job_settings(spec: ModelSpec, opts: JobOptions, method_options: dict, features: Optional[int],
                  source: Source) -> dict:
    """Everything that determines the results (its hash is the job key; a change is refused)."""
    target = opts.target if is_int(opts.target) else str(opts.target)
    return {
        "model": {"spec": spec.describe(), "features": features},
        "options": {"method": opts.method, "eps": float(opts.eps), "bias_factor": float(opts.bias_factor),
                    "gate": opts.gate, "strict": opts.strict, "target": target, "full": opts.full,
                    "max_length": opts.max_length, "shard_size": opts.shard_size,
                    **({"method_options": method_options} if method_options else {})},
        "input": {k: v for k, v in source.fingerprint.items() if k not in ("mtime", "path")},
    }


def _claim_out_dir(out: Path, old: Optional[dict], job: dict, probed: dict, overwrite: bool,
                   n: int) -> Optional[dict]:
    """Process 0: refuse an earlier job with other settings in ``out`` (unless ``overwrite``), or
    clear it; returns the manifest to build on (None: a new job)."""
    if old is not None and not overwrite:
        if glob.glob(str(out / "part-*.parquet")):
            _compare_job(out, old, job, probed)
            return old
        overwrite = True        # an earlier run that wrote no results: nothing to protect
    if overwrite:
        # with several processes, shard temporaries belong to their writers (who clean them up)
        for f in own_files(out, shard_tmp=n == 1):
            with contextlib.suppress(OSError):
                f.unlink()
        return None
    return old


def _diff(old: dict, new: dict, prefix: str = "") -> list:
    changes = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            changes.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return changes


def _compare_job(out: Path, old: dict, job: dict, probed: dict) -> None:
    old_job = old.get("job", {})
    changes = _diff(old_job, job)
    old_scores = (old.get("probe") or {}).get("scores")
    if not changes and old_scores is not None and probed.get("scores") is not None:
        a, b = np.asarray(old_scores), np.asarray(probed["scores"])
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(a).max())):
            changes.append("model: its outputs on the probe batch changed (different weights?)")
    if changes:
        raise JobError(f"{out} holds a job with other settings ({'; '.join(changes)}); use a new "
                       f"out_dir, or overwrite=True (--overwrite) to replace it.")
