"""Locks on a job's output directory (``fcntl.flock``, POSIX; no locks on Windows).

One process: an exclusive lock on ``out/.lock`` (two jobs never write the same directory). Several
processes: each holds ``.lock-p{p}`` exclusively (one writer per process index) and ``.lock`` shared
(which keeps a single-process job out); without jax.distributed, ``.lock-final`` serialises process 0's
set-up and the finalization of the job. Lock files are never removed (a job waiting on a removed file
would lock a file nobody else sees).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from lrpjax.jobs.spec import JobError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locks
    fcntl = None


def _flock_nb(f, mode: int, message: str) -> None:
    """Take ``fcntl.flock(f, mode)`` without waiting; :class:`JobError` ``message`` if it is held."""
    try:
        fcntl.flock(f.fileno(), mode | fcntl.LOCK_NB)
    except OSError as e:
        raise JobError(message) from e


@contextlib.contextmanager
def job_lock(out: Path):
    """An exclusive lock on ``out`` (one process): two jobs never write the same directory."""
    if fcntl is None:  # pragma: no cover - Windows: no lock
        yield
        return
    # the lock file is never removed: a job that opened it just before would hold a lock on a deleted
    # file while a third job locks a new one
    with open(out / ".lock", "a+") as f:
        _flock_nb(f, fcntl.LOCK_EX, f"another attribution job is writing to {out}; wait for it or use "
                  f"another out_dir.")
        yield


@contextlib.contextmanager
def process_lock(out: Path, p: int):
    """Process ``p``'s locks in a job of several processes: exclusive on ``.lock-p{p}`` (one writer per
    process index) and shared on ``.lock`` (keeps a single-process job out; left in place)."""
    if fcntl is None:  # pragma: no cover - Windows: no lock
        yield
        return
    shared = open(out / ".lock", "a+")
    own_path = out / f".lock-p{p}"
    own = None
    try:           # (lock files stay in place: see job_lock)
        _flock_nb(shared, fcntl.LOCK_SH, f"a single-process attribution job is writing to {out}; wait "
                  f"for it or use another out_dir.")
        own = open(own_path, "a+")
        _flock_nb(own, fcntl.LOCK_EX, f"another process {p} of an attribution job is writing to {out} "
                  f"({own_path.name}): every process of a job needs its own process index.")
        yield
    finally:
        if own is not None:
            own.close()
        shared.close()


@contextlib.contextmanager
def final_lock(out: Path):
    """Blocking exclusive lock on ``.lock-final`` (several processes without jax.distributed): process 0's
    set-up and the finalization of the job never overlap."""
    if fcntl is None:  # pragma: no cover - Windows: no lock
        yield
        return
    with open(out / ".lock-final", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        yield
