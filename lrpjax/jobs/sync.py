"""Several processes: who does what, and where they meet. One class per way of running a job:

* :class:`LocalSync`: one process, nothing to meet.
* :class:`KeyValueSync` (jax.distributed): messages in JAX's coordination service (key-value store),
  under a prefix numbered per call. Process 0 posts ``setup`` (the job key) once ``out_dir`` is ready;
  every process posts ``shards/{p}`` (its counts) when its shards are written; process 0 waits for all
  of them, finalizes and posts ``final``, which the others wait for. A failing process posts
  ``failed/{p}``; the others look for it while they wait and before each shard.
* :class:`CollectivesSync` (jax.distributed without that store): the same three meetings as
  ``multihost_utils.process_allgather`` of a row of ints (every process joins every meeting, a
  failing one with a flag). XLA's CPU collectives give up after 30 minutes
  (``--xla_cpu_collective_timeout_seconds``), which is why the key-value store is preferred.
* :class:`FileSync` (process_index / process_count given without jax.distributed): process ``p > 0``
  waits for ``manifest.json`` to hold the job key; the process that completes the job finalizes it.

:func:`make_sync` picks one for a call of :func:`lrpjax.jobs.attribute_dataset`. Process ``p`` of ``n``
explains the input shards ``k`` with ``k % n == p``; process 0 alone sets up ``out_dir``.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import time
import zlib
from pathlib import Path
from typing import Callable, Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

try:
    from jax._src import distributed as jax_distributed    # holds jax.distributed's client
except ImportError:  # pragma: no cover - a JAX without it: the collectives only
    jax_distributed = None

from lrpjax._checks import is_int, one_line
from lrpjax.jobs import spec as settings   # WAIT_FOR_PROCESS_0_S etc., read when used
from lrpjax.jobs.locks import final_lock, job_lock, process_lock
from lrpjax.jobs.output import manifest_job_key
from lrpjax.jobs.spec import MANIFEST, JobError

_STATS = ("process", "shards_written", "shards_skipped", "examples", "errors", "explained", "compilations",
          "milliseconds")
_SYNC_CALLS = itertools.count(1)    # numbers the multi-process calls (the same on every process)


class _PeerFailed(JobError):
    """Another process of the job failed; this one stops too (and does not report a failure itself)."""


class Sync:
    """Where the processes of one job meet: process ``p`` of ``n``. The methods are called by the job
    in this order: :meth:`lock` and :meth:`setup_lock` around the set-up of ``out_dir``,
    :meth:`setup_done`, :meth:`check` before each own shard, :meth:`shards_done`, :meth:`finalize`,
    :meth:`final_done`; :meth:`fail` when this process fails. The defaults are those of several
    processes; :class:`LocalSync` overrides them for one."""

    coordination = ""

    def __init__(self, p: int, n: int):
        self.p, self.n = p, n
        self.quiet = False          # no "waiting for process q" lines (progress=False)

    def describe(self) -> str:
        return self.coordination

    # -- who does what
    @property
    def label(self) -> str:
        """The prefix of the progress bar / log lines."""
        return f"lrpjax attribute {self.p}/{self.n}"

    def owns(self, k: int) -> bool:
        """Whether this process explains and writes input shard ``k``."""
        return k % self.n == self.p

    def share(self, total: Optional[int], shard_size: int) -> Optional[int]:
        """Examples in this process's shards (None if the input size is unknown)."""
        if total is None:
            return None
        return sum(min(shard_size, total - k * shard_size)
                   for k in range(self.p, -(-total // shard_size), self.n))

    def manifest_entry(self) -> dict:
        """What the manifest records about the processes."""
        return {"processes": {"count": self.n, "coordination": self.describe()}}

    def lock(self, out: Path):
        """The lock held while this process works on ``out``."""
        return process_lock(out, self.p)

    def setup_lock(self, out: Path):
        """An extra lock held while this process sets up ``out`` (released by the job before
        :meth:`setup_done`)."""
        return contextlib.nullcontext()

    # -- the meetings
    def setup_done(self, out: Path, job_key: str) -> None:
        """After process 0 prepared ``out`` (manifest written): the others may start writing."""

    def check(self) -> None:
        """Raise if another process has failed (between shards)."""

    def shards_done(self, stats: dict) -> Optional[list]:
        """After this process's shards: every process's counts on process 0 (None where not known)."""
        return None

    def finalize(self, out: Path, finalize: Callable[..., dict], own_errors: int) -> Optional[dict]:
        """Finalize the job if this process is the one to do it: ``finalize(known_errors=...,
        require_complete=...)`` (:func:`lrpjax.jobs.output.finalize`); None where another process does."""
        raise NotImplementedError

    def final_done(self, final: Optional[dict]) -> dict:
        """After process 0 finalized the job: its result for every process."""
        return final

    def fail(self, e: BaseException) -> None:
        """This process fails: tell the others (never raises)."""

    # -- reports
    def last_run(self, run: dict, mine: dict, everyone: Optional[list]) -> dict:
        """The manifest's ``last_run`` from this process's ``run`` and every process's counts."""
        by = everyone or [{**mine, "process": self.p}]
        return {"processes": self.n, "coordination": self.describe(), "finalized_by": self.p,
                "compilations": sum(e["compilations"] for e in by),
                "examples_explained": sum(e["explained"] for e in by),
                "devices_per_process": run["devices"], "batch_rows": run["batch_rows"],
                "by_process": [{**{k: v for k, v in e.items() if k != "milliseconds"},
                                "seconds": round(e["milliseconds"] / 1000, 3)} for e in by]}

    def shard_counts(self, mine: dict, everyone: Optional[list]) -> dict:
        """The manifest's shard counts (``shards_written``, ``shards_skipped``) where known."""
        if not everyone:
            return {}
        return {"shards_written": sum(e["shards_written"] for e in everyone),
                "shards_skipped": sum(e["shards_skipped"] for e in everyone)}


class LocalSync(Sync):
    """One process: it owns every shard, holds the exclusive lock and finalizes the job itself."""

    coordination = "one process"

    def __init__(self):
        super().__init__(0, 1)

    @property
    def label(self) -> str:
        return "lrpjax attribute"

    def manifest_entry(self) -> dict:
        return {}

    def lock(self, out: Path):
        return job_lock(out)

    def shards_done(self, stats: dict) -> Optional[list]:
        return [{**stats, "process": self.p}]

    def finalize(self, out: Path, finalize: Callable[..., dict], own_errors: int) -> Optional[dict]:
        return finalize(known_errors=own_errors)       # it wrote every shard: nothing to scan

    def last_run(self, run: dict, mine: dict, everyone: Optional[list]) -> dict:
        return run

    def shard_counts(self, mine: dict, everyone: Optional[list]) -> dict:
        return {"shards_written": mine["shards_written"], "shards_skipped": mine["shards_skipped"]}


class FileSync(Sync):
    """Several processes without jax.distributed (e.g. a scheduler's job array, or one after another):
    they meet through the files in ``out_dir`` only."""

    coordination = "independent processes (no jax.distributed)"

    def setup_lock(self, out: Path):
        # process 0's set-up: no other process finalizes meanwhile
        return final_lock(out) if self.p == 0 else contextlib.nullcontext()

    def setup_done(self, out: Path, job_key: str) -> None:
        if self.p != 0:
            _wait_for_manifest(out, job_key, self.p, self.n)

    def finalize(self, out: Path, finalize: Callable[..., dict], own_errors: int) -> Optional[dict]:
        with final_lock(out):          # whoever completes the job finalizes it
            return finalize(require_complete=False)


class DistributedSync(Sync):
    """Several processes under jax.distributed (the JAX processes of the job). Process 0 finalizes the
    job once every process has finished its shards; the others return its result."""

    def __init__(self, p: int, n: int):
        super().__init__(p, n)
        self.prefix = f"lrpjax/attribute/{next(_SYNC_CALLS)}"
        self.broken = False         # a meeting failed half-way: no further meeting is possible

    def setup_done(self, out: Path, job_key: str) -> None:
        self._meet_setup(job_key)
        if self.p != 0:             # (a failure from here on is reported at the next meeting)
            _check_shared(out, job_key, self.p)

    def finalize(self, out: Path, finalize: Callable[..., dict], own_errors: int) -> Optional[dict]:
        # every process has finished its shards: process 0 finalizes, the others get its result
        return finalize(require_complete=True) if self.p == 0 else None

    def fail(self, e: BaseException) -> None:
        if isinstance(e, _PeerFailed) or self.broken:
            return
        msg = one_line(e) if isinstance(e, JobError) else (
            f"{type(e).__name__}: {one_line(e)}" if str(e) else type(e).__name__)
        with contextlib.suppress(Exception):
            self._announce(msg)

    def _meet_setup(self, job_key: str) -> None:
        raise NotImplementedError

    def _announce(self, msg: str) -> None:
        raise NotImplementedError

    def _same_job(self, theirs, mine) -> None:
        if self.p != 0 and theirs != mine:
            raise JobError(f"process {self.p} runs another job than process 0 (a different model, model "
                           f"arguments, options or input): give every process the same command, apart "
                           f"from its process id.")


class KeyValueSync(DistributedSync):
    """jax.distributed with the coordination service's key-value store (no device collectives, so
    no timeout while one process still works)."""

    coordination = "jax.distributed (coordination service)"

    def __init__(self, p: int, n: int):
        super().__init__(p, n)
        self.client = jax_distributed.global_state.client

    def _meet_setup(self, job_key: str) -> None:
        if self.p == 0:
            self._set("setup", {"job_key": job_key})
        else:
            self._same_job(self._get("setup", 0, "to set up the output directory")["job_key"], job_key)

    def check(self) -> None:
        self._raise_peer_failures()

    def shards_done(self, stats: dict) -> Optional[list]:
        stats = {**stats, "process": self.p}
        self._set(f"shards/{self.p}", stats)
        if self.p != 0:
            return None
        return [stats] + [self._get(f"shards/{q}", q, "to finish its shards") for q in range(1, self.n)]

    def final_done(self, final: Optional[dict]) -> dict:
        if self.p == 0:
            self._set("final", final)
            return final
        return self._get("final", 0, "to finish the job")

    def _announce(self, msg: str) -> None:
        self._set(f"failed/{self.p}", msg[:500])

    def _set(self, key: str, value) -> None:
        self.client.key_value_set(f"{self.prefix}/{key}", json.dumps(value))

    def _raise_peer_failures(self) -> None:
        try:
            entries = self.client.key_value_dir_get(f"{self.prefix}/failed/")
        except Exception:
            return
        failed = sorted((int(k.rsplit("/", 1)[1]), json.loads(v)) for k, v in entries)
        failed = [(q, msg) for q, msg in failed if q != self.p]
        if failed:
            q, msg = failed[0]
            raise _PeerFailed(f"process {q} of {self.n} failed, so process {self.p} stopped too (finished "
                              f"shards are kept: run all processes again to resume). Process {q}: {msg}")

    def _get(self, key: str, q: int, what: str):
        """Wait for process ``q``'s message ``key`` (looking for failures of the others meanwhile)."""
        t0, told = time.monotonic(), False
        while True:
            try:
                return json.loads(self.client.blocking_key_value_get(f"{self.prefix}/{key}", 1000))
            except Exception as e:
                if "DEADLINE_EXCEEDED" not in str(e):
                    raise JobError(f"process {self.p} lost the JAX coordination service while waiting for "
                                   f"process {q} {what}: {one_line(e)[:300]}") from e
            self._raise_peer_failures()
            waited = time.monotonic() - t0
            if settings.BARRIER_TIMEOUT_S is not None and waited > settings.BARRIER_TIMEOUT_S:
                raise JobError(f"process {self.p} waited {waited:.0f} s for process {q} {what} "
                               f"(lrpjax.jobs.BARRIER_TIMEOUT_S); is it still running?")
            if not told and not self.quiet and waited > settings.LOG_EVERY_S:
                told = True
                print(f"[lrpjax attribute {self.p}/{self.n}] waiting for process {q} {what} (every JAX "
                      f"process must make this call; on one process alone pass process_index=0, "
                      f"process_count=1)", file=sys.stderr, flush=True)


class CollectivesSync(DistributedSync):
    """jax.distributed without the key-value store: every meeting is a
    ``multihost_utils.process_allgather`` of one row of ints per process."""

    coordination = "jax.distributed (collectives)"

    def __init__(self, p: int, n: int):
        super().__init__(p, n)
        self.phase = "setup"        # which meeting is next (the processes must agree)

    def _meet_setup(self, job_key: str) -> None:
        table = self._gather([int(job_key[:7], 16)])
        self._same_job(int(table[0, 2]), int(job_key[:7], 16))
        self.phase = "shards"

    def shards_done(self, stats: dict) -> Optional[list]:
        stats = {**stats, "process": self.p}
        table = self._gather([stats[k] for k in _STATS])
        self.phase = "final"
        return [dict(zip(_STATS, (int(v) for v in row[2:2 + len(_STATS)]))) for row in table]

    def final_done(self, final: Optional[dict]) -> dict:
        table = self._gather([int(final["complete"]), final["errors"]] if self.p == 0 else [])
        return {"complete": bool(table[0, 2]), "errors": int(table[0, 3])}

    def _announce(self, msg: str) -> None:
        self._gather([], failed=True)

    def _gather(self, values: Sequence[int], failed: bool = False) -> np.ndarray:
        """Every process's row ``[phase, failed, *values]`` (an ``(n, 2 + len(_STATS))`` table)."""
        row = np.zeros(2 + len(_STATS), np.int64)
        row[0], row[1] = zlib.crc32(self.phase.encode()) & 0x7FFFFFFF, int(failed)
        row[2:2 + len(values)] = values
        try:
            table = np.asarray(multihost_utils.process_allgather(row)).astype(np.int64)
        except BaseException as e:     # (an interrupt too: no second meeting to announce it)
            self.broken = True
            if not isinstance(e, Exception):
                raise
            raise JobError(f"process {self.p} could not meet the other processes ({self.phase}): "
                           f"{one_line(e)[:300]}") from e
        if (table[:, 0] != row[0]).any():
            self.broken = True
            raise JobError(f"the processes are out of step ({self.phase}): give every process the same "
                           f"command and the same number of attribute_dataset calls.")
        bad = [q for q in range(self.n) if table[q, 1] and q != self.p]
        if bad and not failed:
            raise _PeerFailed(f"process {bad[0]} of {self.n} failed (see its error message), so process "
                              f"{self.p} stopped too; finished shards are kept: run all processes again to "
                              f"resume.")
        return table


# ----------------------------------------------------------------------------------------------
# Choosing the class

def _check_processes(process_index, process_count, jp: int, jn: int) -> tuple[int, int]:
    if process_index is None and process_count is None:
        return jp, jn
    if process_index is None or process_count is None:
        raise JobError("give both process_index and process_count, or neither (default: "
                       "jax.process_index() and jax.process_count()).")
    if not is_int(process_count) or process_count < 1:
        raise JobError(f"process_count must be a positive int, got {process_count!r}.")
    if not is_int(process_index) or not 0 <= process_index < process_count:
        raise JobError(f"process_index must be an int in [0, {process_count}) for process_count="
                       f"{process_count}, got {process_index!r}.")
    if jn > 1 and process_count == jn and process_index != jp:
        raise JobError(f"under jax.distributed this is process {jp} of {jn}, not {process_index}: leave "
                       f"process_index and process_count out.")
    return int(process_index), int(process_count)


def _distributed_sync(p: int, n: int) -> DistributedSync:
    """:class:`KeyValueSync` when jax.distributed's client offers the key-value store, else
    :class:`CollectivesSync`; ``LRPJAX_SYNC=collectives`` forces the latter."""
    if os.environ.get("LRPJAX_SYNC") == "collectives":
        return CollectivesSync(p, n)
    client = getattr(getattr(jax_distributed, "global_state", None), "client", None)
    needs = ("key_value_set", "blocking_key_value_get", "key_value_dir_get")
    if client is not None and all(hasattr(client, m) for m in needs):
        return KeyValueSync(p, n)
    return CollectivesSync(p, n)


def make_sync(process_index, process_count) -> Sync:
    """The :class:`Sync` of a call. Under jax.distributed (``jax.process_count() > 1``) the job is the
    JAX processes' unless other counts are given: ``process_index=0, process_count=1`` = a call on this
    process alone."""
    jp, jn = jax.process_index(), jax.process_count()
    joint = jn > 1 and process_count in (None, jn)
    world = _distributed_sync(jp, jn) if joint else None
    try:
        p, n = _check_processes(process_index, process_count, jp, jn)
    except JobError as e:
        if world is not None:
            world.fail(e)
        raise
    if world is not None:
        return world
    return LocalSync() if n == 1 else FileSync(p, n)


def announce_failure(error: BaseException) -> None:
    """A process of a jax.distributed job fails before :func:`lrpjax.jobs.attribute_dataset` (e.g. loading
    the model): tell the others, which would otherwise wait for it."""
    if jax.process_count() > 1:
        _distributed_sync(jax.process_index(), jax.process_count()).fail(error)


# ----------------------------------------------------------------------------------------------
# Meeting through out_dir

def _wait_for_manifest(out: Path, job_key: str, p: int, n: int) -> None:
    """Without jax.distributed: process ``p > 0`` starts once process 0 set up ``out`` for this job."""
    t0 = time.monotonic()
    while True:
        found = manifest_job_key(out)
        if found == job_key:
            return
        if time.monotonic() - t0 > settings.WAIT_FOR_PROCESS_0_S:
            what = "none" if found is None else f"one of another job (job_key {str(found)[:12]}...)"
            raise JobError(f"process {p} of {n} waited {settings.WAIT_FOR_PROCESS_0_S:g} s for process 0 "
                           f"to set up {out} for this job ({MANIFEST} with job_key {job_key[:12]}...; found "
                           f"{what}): start process 0 with the same model, options and input (it creates "
                           f"{MANIFEST}, or says why it cannot), or run all processes under jax.distributed.")
        time.sleep(0.1)


def _check_shared(out: Path, job_key: str, p: int) -> None:
    if manifest_job_key(out) != job_key:
        raise JobError(f"process {p} does not see the {MANIFEST} that process 0 wrote in {out}: the output "
                       f"directory must be one directory shared by all processes (the same path on every "
                       f"host, e.g. on NFS).")
