"""Fault probe of dataset jobs (``lrpjax attribute`` / ``lrpjax.attribute_dataset``): one table of figures.

* kill -9 of an ``lrpjax attribute`` subprocess at seeded random points (0-20 ms after ``k`` of the 12
  part files exist, or as shard ``k`` is being written; a point the job finished before is drawn
  again), each followed by a resume, compared with an uninterrupted run: part files at the kill
  incomplete, rows lost, duplicated or changed (all columns, floats compared exactly);
* ENOSPC and permission errors (EACCES) mid-job, in every one of the 12 shards: pyarrow's write of a
  part file's temporary file writes half of it and fails, renaming it fails, the temporary file is a link
  to ``/dev/full`` (the kernel's ENOSPC), a shard's errors file or the final ``errors.parquet`` fails;
  each must end in one clear error (one line naming the file and the fix), leave no partial part file
  nor temporary file, and resume to the uninterrupted run's output;
* truncated (4 ways) and bit-flipped (5 places) part files, a truncated errors file: detected, reported
  (one warning line) and rewritten; a killed writer's stale temporary files: removed, not adopted;
* a second job (the command, then the Python API) on an out_dir while a job writes to it: refused in
  one line, the first job undisturbed.

The trials are the helpers of ``tests/test_job_faults.py`` (which runs 5 kills and one trial of each
other kind in CI) at full count, with the tests' JAX set-up (8 virtual CPU devices, XLA's cheap
pipeline; the subprocesses get the same, so their float32 bits equal this process's).

Usage (from the repository root; about 2 minutes on 2 CPU cores)::

    PYTHONPATH=. .venv/bin/python scripts/fault_probe.py [--kills 20] [--seed 0]

Exit status 1 if any trial failed.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import io
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

import conftest  # noqa: E402  (the tests' JAX set-up, before anything uses JAX)
import jax  # noqa: E402

import test_job_faults as tf  # noqa: E402
from lrpjax.jobs import attribute_dataset  # noqa: E402

del conftest

COLUMNS = ["fault", "trials", "interrupted", "lost", "duplicated", "changed rows", "errors seen",
           "resumed ok"]


def row(fault, trials, interrupted, errors_seen):
    """A table row from trials with ``compare_outputs`` keys and ``ok``; ``interrupted`` and
    ``errors_seen``: counts (or "-")."""
    n = len(trials)
    frac = lambda v: v if v == "-" else f"{v}/{n}"
    return [fault, n, frac(interrupted), sum(t["lost"] for t in trials), sum(t["duplicated"] for t in trials),
            sum(t["changed"] for t in trials), frac(errors_seen), frac(sum(bool(t["ok"]) for t in trials))]


def row_ok(r) -> bool:
    """No row lost, duplicated or changed, and every "a/b" count full."""
    fractions = [str(c).split(" ")[0].split("/") for c in (r[2], r[6], r[7]) if "/" in str(c)]
    return r[3:6] == [0, 0, 0] and all(a == b for a, b in fractions) and "FAILED" not in r


def kills(args, spec, data, ref, work):
    def show(t):
        when = f"writing shard {t['k']:2d}  " if t["delay"] is None else \
            f"{t['k']:2d} part(s) + {1000 * t['delay']:4.1f} ms"
        print(f"  kill {show.i:2d}: at {when} -> {t['parts']:2d} "
              f"part file(s), {t['tmp_at_kill']} temporary at the kill; resume wrote {t['written']:2d}, kept "
              f"{t['skipped']:2d}: {'ok' if t['ok'] else 'FAILED'}", flush=True)
        show.i += 1
    show.i = 1
    trials, redrawn = tf.kill_trials(args.kills, args.seed, spec, data, ref, work / "kills", progress=show)
    parts = sorted(t["parts"] for t in trials)
    note = (f"kill -9: {len(trials)} interrupted jobs ({redrawn} draw(s) repeated: the job had finished); "
            f"part files at the kill: {', '.join(map(str, parts))} of {tf.KILL_SHARDS}; "
            f"{sum(t['tmp_at_kill'] > 0 for t in trials)} kill(s) left a temporary file")
    return row("kill -9 at a seeded point, then resume", trials, len(trials), "-"), note


def write_faults(spec, data, ref, work):
    shards = range(tf.KILL_SHARDS)
    groups = [
        ("ENOSPC writing part k (half written)", "write_table", "part-{k:05d}.parquet", errno.ENOSPC, shards),
        ("ENOSPC from /dev/full, part k", "dev_full", "part-{k:05d}.parquet", errno.ENOSPC, shards),
        ("ENOSPC writing shard k's errors file", "write_table", "errors-{k:05d}.parquet", errno.ENOSPC, shards),
        ("ENOSPC writing errors.parquet (the end)", "write_table", "errors.parquet", errno.ENOSPC, [0]),
        ("EACCES creating part k", "write_table", "part-{k:05d}.parquet", errno.EACCES, shards),
        ("EACCES renaming part k into place", "replace", "part-{k:05d}.parquet", errno.EACCES, shards),
    ]
    rows, notes = [], []
    for label, how, pattern, code, ks in groups:
        if how == "dev_full" and not os.path.exists(tf.DEV_FULL):
            notes.append(f"{label}: skipped (no {tf.DEV_FULL})")
            continue
        trials = []
        for k in ks:
            out = work / f"{how}-{errno.errorcode[code]}-{pattern.format(k=k).split('.')[0]}"
            t = tf.fault_trial(spec, data, out, ref, how, pattern.format(k=k), code, shard_size=tf.KILL_SHARD)
            t["ok"] = t["ok"] and not t["incomplete"] and not t["tmp_after_error"]
            trials.append(t)
        stopped = sum(t["error"] is not None and t["status"] == "running" for t in trials)
        rows.append(row(label, trials, stopped, sum(t["clear"] for t in trials)))
        bad = [t["error"] for t in trials if not t["clear"]]
        if bad:
            notes.append(f"{label}: unclear error: {bad[0]!r}")
        elif label.startswith("ENOSPC from"):
            notes.append(f"{label}: e.g. {trials[0]['error']}")
    return rows, notes


def damaged_files(spec, data, ref, work):
    run = lambda out: attribute_dataset(spec, data, out, progress=False, shard_size=tf.KILL_SHARD)
    cases = [(f"truncated part file ({what})", f"part-{k:05d}.parquet",
              lambda out, k=k, keep=keep: tf.truncate(out / f"part-{k:05d}.parquet", keep))
             for k, (what, keep) in enumerate([("empty", 0), ("4 bytes", 4), ("half", 0.5), ("last byte cut", -1)])]
    cases += [("truncated shard errors file", "errors-00004.parquet",
               lambda out: tf.truncate(out / "shard-errors" / "errors-00004.parquet", 0.5))]
    cases += [(f"8 bytes flipped at {w:.0%} of a part", f"part-{5 + i:05d}.parquet",
               lambda out, i=i, w=w: tf.flip_bytes(out / f"part-{5 + i:05d}.parquet", w))
              for i, w in enumerate([0.02, 0.1, 0.3, 0.5, 0.7])]
    cases += [("killed writer's stale temporary files", None, lambda out: tf.leave_killed_writer_files(out, 11))]
    groups = {}
    for i, (label, name, damage) in enumerate(cases):
        out = work / f"damaged-{i:02d}"
        shutil.copytree(ref, out)                 # a complete job, then damaged
        damage(out)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            s = run(out)
        t = {"written": s.n_shards_written, "skipped": s.n_shards_skipped, **tf.compare_outputs(out, ref)}
        t["warned"] = name is None or (f"{name} is damaged (" in err.getvalue()
                                       and len(err.getvalue().strip().splitlines()) == 1)
        t["ok"] = tf.resumed_ok(t) and (t["written"], t["skipped"]) == (1, tf.KILL_SHARDS - 1)
        key = "truncated part file (4 ways)" if label.startswith("truncated part") else \
            "bit flips in a part file (5 places)" if "flipped" in label else label
        groups.setdefault(key, []).append(t)
    rows = []
    for key, trials in groups.items():
        killed = key.startswith("killed")
        rows.append(row(f"{key}: {'removed' if killed else 'detected'}, rewritten", trials, "-",
                        "-" if killed else sum(t["warned"] for t in trials)))
    return rows


def concurrent(spec, data, ref, work):
    out = work / "concurrent"
    argv = ["attribute", "--model", f"{tf.MODELS}:float_spec", "--data", str(data), "--out", str(out),
            "--shard-size", str(tf.KILL_SHARD), "--progress", "none"]
    t = tf.concurrent_trial(spec, data, out, argv, shard_size=tf.KILL_SHARD)
    msg = f"another attribution job is writing to {out}; wait for it or use another out_dir."
    refused = int((t["exit"], t["stderr"]) == (2, f"lrpjax attribute: error: {msg}")) + int(t["api_error"] == msg)
    s = t.pop("summary")
    t.update(tf.compare_outputs(out, ref))
    t["ok"] = tf.resumed_ok(t) and s.n_shards_written == tf.KILL_SHARDS
    return [row("second job while one runs (command, then API)", [t], "-", "-")[:6]
            + [f"{refused}/2 refused", "first job ok" if t["ok"] else "FAILED"]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20, help="kill -9 trials (default 20)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill points (default 0)")
    ap.add_argument("--keep", action="store_true", help="keep the working directory")
    ap.add_argument("--dev-full", default=tf.DEV_FULL, metavar="PATH",
                    help="a device whose every write fails with ENOSPC (default /dev/full; where a "
                         "container lacks it: `mknod PATH c 1 7`)")
    args = ap.parse_args(argv)
    tf.DEV_FULL = args.dev_full
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="lrpjax-fault-probe-"))
    try:
        spec = tf.m.float_spec()
        data, ref = work / "data.npz", work / "ref"
        tf.write_kill_data(data)            # 48 examples (one bad), 12 shards of 4
        attribute_dataset(spec, data, ref, progress=False, shard_size=tf.KILL_SHARD)   # uninterrupted
        print(f"fault probe: {tf.KILL_N} examples (1 bad) in {tf.KILL_SHARDS} shards; {platform.platform()}, "
              f"{os.cpu_count()} CPU cores, jax {jax.__version__}, {len(jax.devices())} {jax.default_backend()} "
              f"device(s)", flush=True)
        kill_row, kill_note = kills(args, spec, data, ref, work)
        rows, notes = [kill_row], [kill_note]
        more, more_notes = write_faults(spec, data, ref, work)
        rows += more + damaged_files(spec, data, ref, work) + concurrent(spec, data, ref, work)
        notes += more_notes
    finally:
        if args.keep:
            print(f"working directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"| fault ({tf.KILL_N} examples, {tf.KILL_SHARDS} shards) | " + " | ".join(COLUMNS[1:]) + " |")
    print("|" + "|".join(" --- " for _ in COLUMNS) + "|")
    for r in rows:
        print("| " + " | ".join(map(str, r)) + " |")
    print()
    for n in notes:
        print(f"* {n}")
    print(f"* {time.perf_counter() - t0:.0f} s; reproduce: PYTHONPATH=. .venv/bin/python scripts/fault_probe.py "
          f"--kills {args.kills} --seed {args.seed}")
    failed = [r[0] for r in rows if not row_ok(r)]
    if failed:
        print(f"FAILED: {'; '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
