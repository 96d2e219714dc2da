"""Faults of dataset-wide jobs (lrpjax.jobs): damaged, truncated and stale files, an edited input,
whole-float lengths, a job whose every example fails, foreign temporary files, the lock file and a
concurrent job, kill -9 at seeded points then a resume, ENOSPC and permission errors mid-job. Small
sizes (12 examples in 3 shards; 48 in 12 for the kills), one model, so the jitted steps are compiled
once for the whole module. ``scripts/fault_probe.py`` runs the same trials at full count (20 kills)
and prints their figures."""
import collections
import contextlib
import errno
import fcntl
import glob
import io
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import jobs_models as m
from lrpjax import cli
from lrpjax.jobs import JobError, attribute_dataset, read_errors, read_results
from lrpjax.jobs import output as job_output
from test_cli import lrpjax_cmd, same_compiles_env

N, T, F, SHARD = 12, 6, 3, 4
MODELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jobs_models.py")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    x, lengths, labels = m.float_data(N, T, F, seed=1)
    np.savez(d / "data.npz", x=x, lengths=lengths, labels=labels)
    np.savez(d / "nolabels.npz", x=x, lengths=lengths)
    spec = m.float_spec()
    ref = d / "ref"
    run(spec, d / "data.npz", ref)
    return {"dir": d, "x": x, "lengths": lengths, "spec": spec, "path": d / "data.npz",
            "ref": relevance(ref), "ref_dir": ref}


def run(spec, data, out, **kw):
    return attribute_dataset(spec, data, out, progress=False, shard_size=SHARD, **kw)


def relevance(out):
    return {r["index"]: np.asarray(r["relevance"]) for r in read_results(out).to_pylist()}


def assert_equal_to_reference(out, ref):
    got = relevance(out)
    assert list(got) == list(ref)
    for i in ref:
        np.testing.assert_allclose(got[i], ref[i], rtol=1e-6, atol=1e-9)
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def fresh_copy(setup, name):
    out = setup["dir"] / name
    run(setup["spec"], setup["path"], out)
    return out


def test_damaged_values_with_an_intact_footer_are_detected_and_rewritten(setup, capsys):
    out = fresh_copy(setup, "values")
    part = out / "part-00001.parquet"
    t = pq.read_table(part)
    rel = t.column("relevance").to_pylist()
    rel[0][0] = -1.2e-12                                    # one value changed; same footer, row count, ids
    t = t.set_column(t.schema.get_field_index("relevance"), t.schema.field("relevance"),
                     pa.array(rel, pa.list_(pa.float32()))).replace_schema_metadata(t.schema.metadata)
    pq.write_table(t, part)
    capsys.readouterr()
    s = run(setup["spec"], setup["path"], out)
    assert (s.n_shards_written, s.n_shards_skipped) == (1, 2)
    err = capsys.readouterr().err
    assert "part-00001.parquet is damaged (its content does not match the checksum" in err
    assert_equal_to_reference(out, setup["ref"])


@pytest.mark.parametrize("where", [0.02, 0.1, 0.3, 0.5, 0.7])
def test_bit_flips_never_crash_a_resume_nor_change_results(setup, where):
    out = fresh_copy(setup, f"flip{where}")
    flip_bytes(out / "part-00002.parquet", where)
    run(setup["spec"], setup["path"], out)                  # no OSError (corrupt snappy data)
    assert_equal_to_reference(out, setup["ref"])


def flip_bytes(part, where: float) -> None:
    """Flip 8 bytes of the Parquet file ``part`` at ``where`` (0..1) of its data pages (not the footer)."""
    raw = bytearray(part.read_bytes())
    footer = int.from_bytes(raw[-8:-4], "little")
    pos = 4 + int(where * (len(raw) - footer - 12))
    for p in range(pos, pos + 8):
        raw[p] ^= 0xFF
    part.write_bytes(bytes(raw))


def test_damage_near_the_start_is_recomputed_not_a_crash(setup, capsys):
    out = fresh_copy(setup, "start")
    for name in ("part-00000.parquet", "shard-errors/errors-00000.parquet"):
        raw = bytearray((out / name).read_bytes())
        raw[8:24] = bytes(16)
        (out / name).write_bytes(bytes(raw))
    capsys.readouterr()
    s = run(setup["spec"], setup["path"], out)
    assert (s.n_shards_written, s.n_shards_skipped) == (1, 2)
    assert "part-00000.parquet is damaged" in capsys.readouterr().err
    assert_equal_to_reference(out, setup["ref"])


def test_an_input_edited_past_its_first_megabyte_is_refused(setup, tmp_path):
    lines = [json.dumps({"x": setup["x"][i, :setup["lengths"][i]].tolist()}) for i in range(N)]
    lines[0] = lines[0][:-1] + ', "note": "' + "a" * (1 << 20) + '"}'     # > 1 MB before the rest
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    run(setup["spec"], path, out)
    text = path.read_text()
    i = max(k for k, c in enumerate(text) if c in "123456789")     # the last example's last digit
    edited = text[:i] + str(int(text[i]) - 1) + text[i + 1:]
    assert edited != text and len(edited) == len(text)
    path.write_text(edited)                                 # same size, same first MB
    with pytest.raises(JobError, match=r"holds a job with other settings \(input\.sha256: "):
        run(setup["spec"], path, out)


def test_whole_float_lengths_are_accepted_and_fractions_named(setup, tmp_path):
    x, lengths = setup["x"], setup["lengths"]
    recs = [{"x": x[i].tolist(), "length": float(lengths[i])} for i in range(N)]
    recs[3]["length"] = 2.5
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = run(setup["spec"], path, tmp_path / "out")
    assert (s.n_examples, s.n_errors) == (N, 1)
    got = relevance(tmp_path / "out")
    for i in got:
        np.testing.assert_allclose(got[i], setup["ref"][i], rtol=1e-6, atol=1e-9)
    reason = pq.read_table(tmp_path / "out" / "errors.parquet").column("reason")[0].as_py()
    assert reason.startswith("length 2.5 is not a whole number"), reason


def test_a_job_whose_every_example_fails_is_an_error(setup, tmp_path, capsys):
    with pytest.raises(JobError, match=rf"all {N} examples failed, none was explained \(first reason: "
                                       r"no label \(target='true' needs one\)\)"):
        run(setup["spec"], setup["dir"] / "nolabels.npz", tmp_path / "api", target="true")
    argv = ["attribute", "--model", f"{MODELS}:float_spec", "--data", str(setup["dir"] / "nolabels.npz"),
            "--out", str(tmp_path / "cli"), "--target", "true", "--progress", "none"]
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("lrpjax attribute: error: all 12 examples failed"), err


def test_stale_file_cleanup_removes_only_the_jobs_own_temporary_files(setup):
    out = fresh_copy(setup, "tmpfiles")
    own = [out / ".part-00001.parquet.4242.tmp", out / ".manifest.json.77.tmp",
           out / "shard-errors" / ".errors-00002.parquet.5.tmp"]
    foreign = [out / ".notes.tmp", out / ".part-00001.parquet.tmp", out / "shard-errors" / ".x.1.tmp"]
    for f in own + foreign:
        f.write_bytes(b"x")
    run(setup["spec"], setup["path"], out)
    assert [f.exists() for f in own] == [False] * 3
    assert [f.exists() for f in foreign] == [True] * 3
    run(setup["spec"], setup["path"], out, overwrite=True)   # starting over keeps them too
    assert [f.exists() for f in foreign] == [True] * 3


def test_the_lock_file_is_never_removed(setup):
    out = fresh_copy(setup, "lock")
    lock = out / ".lock"
    inode = lock.stat().st_ino                              # left in place by the first job
    with open(lock, "a+") as held:                          # a job that opened it before the next one ends
        run(setup["spec"], setup["path"], out)
        assert lock.stat().st_ino == inode                  # ... still holds the same file
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(JobError, match="another attribution job is writing to"):
            run(setup["spec"], setup["path"], out)          # a third job is refused, not given a new file
    assert lock.stat().st_ino == inode


# ----------------------------------------------------------------------------------------------
# Truncated files and a killed writer's temporary files

@pytest.mark.parametrize("name, keep", [("part-00001.parquet", 0), ("part-00001.parquet", 4),
                                        ("part-00001.parquet", 0.5), ("part-00001.parquet", -1),
                                        ("shard-errors/errors-00001.parquet", 0.5)])
def test_a_truncated_file_is_detected_and_rewritten(setup, name, keep, capsys):
    out = fresh_copy(setup, f"trunc{keep}{name[:4]}")
    path = out / name
    truncate(path, keep)
    capsys.readouterr()
    s = run(setup["spec"], setup["path"], out)
    assert (s.n_shards_written, s.n_shards_skipped) == (1, 2)
    err = capsys.readouterr().err
    assert f"{path} is damaged (it has no valid footer: " in err, err     # reported, not only redone
    assert_equal_to_reference(out, setup["ref"])
    assert compare_outputs(out, setup["ref_dir"])["changed"] == 0


def truncate(path, keep) -> None:
    """Keep the first ``keep`` bytes of ``path`` (a float: that fraction; -1: all but the last)."""
    raw = path.read_bytes()
    path.write_bytes(raw[:int(keep * len(raw)) if isinstance(keep, float) else keep % len(raw)])


def leave_killed_writer_files(out, k: int, pid: int = 999999) -> None:
    """Temporary files of writers killed at several moments: part ``k`` complete but not renamed (the
    part file missing), its errors file half written, the final manifest cut."""
    part = out / f"part-{k:05d}.parquet"
    raw = part.read_bytes()
    part.unlink()
    (out / f".{part.name}.{pid}.tmp").write_bytes(raw)
    (out / "shard-errors" / f".errors-{k:05d}.parquet.{pid}.tmp").write_bytes(raw[:len(raw) // 3])
    (out / f".manifest.json.{pid}.tmp").write_text('{"status": "compl')


def test_a_killed_writers_temporary_files_are_removed_and_its_shard_rewritten(setup):
    out = fresh_copy(setup, "killed-writer")
    leave_killed_writer_files(out, 2)
    s = run(setup["spec"], setup["path"], out)
    assert (s.n_shards_written, s.n_shards_skipped) == (1, 2)      # recomputed, the temporary not adopted
    assert tmp_files(out) == []
    assert_equal_to_reference(out, setup["ref"])


# ----------------------------------------------------------------------------------------------
# Helpers shared with scripts/fault_probe.py: an output against an uninterrupted run's

def tmp_files(out) -> list:
    """The hidden temporary files in ``out`` and its shard-errors folder."""
    return sorted(glob.glob(str(Path(out) / ".*.tmp")) + glob.glob(str(Path(out) / "shard-errors" / ".*.tmp")))


def manifest_status(out):
    with contextlib.suppress(OSError, ValueError):
        return json.loads((Path(out) / "manifest.json").read_text())["status"]
    return None


def incomplete_parts(out) -> list:
    """The part files in ``out`` that are not complete files of its job (footer, row count, checksum;
    the shard's errors file too)."""
    key = json.loads((Path(out) / "manifest.json").read_text())["job_key"]
    return [p.name for p in sorted(Path(out).glob("part-*.parquet"))
            if job_output.completed_errors(Path(out), int(p.stem[5:]), key, verify=True) is None]


def compare_outputs(out, ref_dir) -> dict:
    """``out`` against the uninterrupted run in ``ref_dir``: rows (by id) lost, duplicated and changed
    (any column; floats compared exactly), the row order, ``errors.parquet``, the manifest's status and
    the temporary files left."""
    got, ref = read_results(out).to_pylist(), read_results(ref_dir).to_pylist()
    want = {r["id"]: r for r in ref}
    seen = collections.Counter(r["id"] for r in got)
    return {"lost": sum(i not in seen for i in want), "duplicated": sum(c - 1 for c in seen.values()),
            "changed": sum(r != want.get(r["id"]) for r in got),
            "in_order": [r["id"] for r in got] == [r["id"] for r in ref],
            "errors_equal": read_errors(out).equals(read_errors(ref_dir)),
            "complete": manifest_status(out) == "complete", "tmp": tmp_files(out)}


def resumed_ok(t: dict) -> bool:
    """A trial's resume (``compare_outputs`` keys) ended with the uninterrupted run's output."""
    return (t["lost"], t["duplicated"], t["changed"], t["tmp"]) == (0, 0, 0, []) and t["in_order"] \
        and t["errors_equal"] and t["complete"]


# ----------------------------------------------------------------------------------------------
# kill -9 at seeded points, then a resume

KILL_N, KILL_SHARD = 48, 4            # 12 shards; one bad example, so errors.parquet is compared too
KILL_SHARDS = KILL_N // KILL_SHARD
CI_KILL_TRIALS = 3                    # scripts/fault_probe.py runs 20 (about 4 s each on 2 cores)


def write_kill_data(path) -> None:
    x, lengths, labels = m.float_data(KILL_N, T, F, seed=5)
    x[7, 0, 0] = np.nan
    np.savez(path, x=x, lengths=lengths, labels=labels)


def _n_parts(out) -> int:
    with contextlib.suppress(FileNotFoundError):
        return sum(name.startswith("part-") for name in os.listdir(out))
    return 0


def _writing(out, k: int) -> bool:
    """Whether shard ``k``'s files (its errors file is written first, then its part file) were begun."""
    names = []
    for d in (out, out / "shard-errors"):
        with contextlib.suppress(FileNotFoundError):
            names += os.listdir(d)
    return any(n.startswith((f".errors-{k:05d}.", f".part-{k:05d}.", f"part-{k:05d}.")) for n in names)


def kill_once(data, out, k: int, delay: float, timeout: float = 120.0):
    """Run ``lrpjax attribute`` on ``data`` -> ``out`` in a subprocess and SIGKILL it: ``delay`` s after
    ``k`` part files exist (``k = 0``: its manifest), or (``delay`` None) as soon as it begins writing
    shard ``k``. Returns what was on disk at the kill (``parts``, ``tmp_at_kill`` files, the part files
    ``incomplete_at_kill``), or None if the job had finished (not an interruption)."""
    cmd = lrpjax_cmd("attribute", "--model", f"{MODELS}:float_spec", "--data", data, "--out", out,
                     "--shard-size", KILL_SHARD, "--progress", "none")
    if delay is None:
        reached = lambda: _writing(out, k)
    else:
        reached = lambda: _n_parts(out) >= k if k else (out / "manifest.json").exists()
    proc = subprocess.Popen(cmd, env=same_compiles_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        t0 = time.monotonic()
        while proc.poll() is None and not reached():
            assert time.monotonic() - t0 < timeout, f"kill point {k} not reached in {timeout} s"
            time.sleep(0.001)
        time.sleep(delay or 0.0)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        err = proc.communicate(timeout=timeout)[1].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != -signal.SIGKILL or manifest_status(out) != "running":
        assert proc.returncode in (0, -signal.SIGKILL), err[-3000:]
        return None
    return {"k": k, "delay": delay, "parts": _n_parts(out), "tmp_at_kill": len(tmp_files(out)),
            "incomplete_at_kill": incomplete_parts(out)}


def kill_trials(n: int, seed: int, spec, data, ref_dir, workdir, progress=None):
    """``n`` kill -9 trials at seeded points (``k`` in [0, 12); half of them 0-20 ms after ``k`` part
    files exist, half as soon as shard ``k`` is being written; a point the job finished before is drawn
    again), each followed by a resume in this process, compared with ``ref_dir``. Returns
    (trials, redrawn)."""
    rng = np.random.default_rng(seed)
    trials, redrawn = [], 0
    while len(trials) < n:
        assert redrawn <= n, f"{redrawn} jobs finished before their kill point"
        k, delay = int(rng.integers(0, KILL_SHARDS)), float(rng.uniform(0.0, 0.02))
        if rng.random() < 0.5:
            delay = None
        out = Path(workdir) / f"kill-{len(trials) + redrawn:02d}"
        at_kill = kill_once(data, out, k, delay)
        if at_kill is None:
            redrawn += 1
            continue
        s = attribute_dataset(spec, data, out, progress=False, shard_size=KILL_SHARD)
        t = {**at_kill, "written": s.n_shards_written, "skipped": s.n_shards_skipped,
             **compare_outputs(out, ref_dir)}
        t["ok"] = resumed_ok(t) and not t["incomplete_at_kill"] and t["skipped"] == t["parts"] \
            and t["written"] + t["skipped"] == KILL_SHARDS
        trials.append(t)
        if progress:
            progress(t)
    return trials, redrawn


@pytest.fixture(scope="module")
def kill_setup(setup):
    data, ref = setup["dir"] / "kill.npz", setup["dir"] / "kill-ref"
    write_kill_data(data)
    attribute_dataset(setup["spec"], data, ref, progress=False, shard_size=KILL_SHARD)
    return data, ref


def test_kill_9_at_seeded_points_then_resume_loses_duplicates_and_changes_no_row(setup, kill_setup,
                                                                                 tmp_path):
    data, ref = kill_setup
    trials, redrawn = kill_trials(CI_KILL_TRIALS, 0, setup["spec"], data, ref, tmp_path)
    assert len(trials) == CI_KILL_TRIALS
    for t in trials:
        # every part file present at the kill was complete (kept), the others were written by the resume
        assert t["incomplete_at_kill"] == [] and t["skipped"] == t["parts"], t
        assert t["written"] + t["skipped"] == KILL_SHARDS, t
        assert (t["lost"], t["duplicated"], t["changed"]) == (0, 0, 0), t
        assert t["in_order"] and t["errors_equal"] and t["complete"] and t["tmp"] == [], t
    assert len({t["parts"] for t in trials}) > 1, trials        # killed at different points of the job


# ----------------------------------------------------------------------------------------------
# ENOSPC and permission errors mid-job

DEV_FULL = "/dev/full"          # every write: ENOSPC (Linux)

# name: (how the write fails, the file it fails on, errno)
WRITE_FAULTS = {
    "ENOSPC writing part 1": ("write_table", "part-00001.parquet", errno.ENOSPC),
    "ENOSPC writing shard 2's errors": ("write_table", "errors-00002.parquet", errno.ENOSPC),
    "ENOSPC writing errors.parquet (end)": ("write_table", "errors.parquet", errno.ENOSPC),
    "ENOSPC from /dev/full, part 2": ("dev_full", "part-00002.parquet", errno.ENOSPC),
    "EACCES creating part 0": ("write_table", "part-00000.parquet", errno.EACCES),
    "EACCES renaming part 2": ("replace", "part-00002.parquet", errno.EACCES),
}


@contextlib.contextmanager
def failing_write(how: str, name: str, code: int):
    """Make the job's lowest-level write of the file ``name`` fail with ``OSError(code)`` (a
    PermissionError for EACCES). ``how``: ``write_table`` -- pyarrow's write of its temporary file
    writes half of it, then fails (a full disk); ``replace`` -- renaming it into place fails;
    ``dev_full`` -- its temporary file is a link to /dev/full (the kernel's ENOSPC, pyarrow's error)."""
    if how == "write_table":
        real_write = pq.write_table

        def fake(table, where, *args, **kwargs):
            if os.path.basename(where) == name or os.path.basename(where).startswith(f".{name}."):
                buf = pa.BufferOutputStream()
                real_write(table, buf, *args, **kwargs)
                raw = buf.getvalue().to_pybytes()
                with open(where, "wb") as f:
                    f.write(raw[:len(raw) // 2])
                raise OSError(code, os.strerror(code), str(where))
            return real_write(table, where, *args, **kwargs)
        patch = mock.patch.object(job_output.pq, "write_table", fake)
    elif how == "replace":
        real_replace = os.replace

        def fake(src, dst, *args, **kwargs):
            if os.path.basename(dst) == name:
                raise OSError(code, os.strerror(code), str(src), None, str(dst))
            return real_replace(src, dst, *args, **kwargs)
        patch = mock.patch.object(job_output.os, "replace", fake)
    else:
        real_atomic = job_output.write_atomic_parquet

        def fake(table, final, metadata):
            if final.name == name:
                os.symlink(DEV_FULL, job_output._tmp_path(final))
            return real_atomic(table, final, metadata)
        patch = mock.patch.object(job_output, "write_atomic_parquet", fake)
    with patch:
        yield


def fault_path(out, name: str) -> Path:
    return Path(out) / ("shard-errors" if name.startswith("errors-") else "") / name


def clear_error(message: str, out, name: str) -> bool:
    """One line that names the file and the fix."""
    return "\n" not in message and f"cannot write {fault_path(out, name)}: " in message \
        and message.endswith("check that the output directory is writable and has free space.")


def fault_trial(spec, data, out, ref_dir, how: str, name: str, code: int, shard_size: int = SHARD) -> dict:
    """Run the job with the write of ``name`` failing (:func:`failing_write`), then without (a resume)."""
    with failing_write(how, name, code):
        try:
            attribute_dataset(spec, data, out, progress=False, shard_size=shard_size)
            err = None
        except JobError as e:
            err = e
    t = {"error": None if err is None else str(err),
         "errno": getattr(err.__cause__, "errno", None) if err is not None else None,
         "parts": sorted(p.name for p in Path(out).glob("part-*.parquet")),
         "incomplete": incomplete_parts(out), "tmp_after_error": tmp_files(out),
         "status": manifest_status(out)}
    t["clear"] = t["error"] is not None and clear_error(t["error"], out, name) and t["errno"] == code
    s = attribute_dataset(spec, data, out, progress=False, shard_size=shard_size)
    t.update(written=s.n_shards_written, skipped=s.n_shards_skipped, **compare_outputs(out, ref_dir))
    t["ok"] = resumed_ok(t) and t["skipped"] == len(t["parts"])
    return t


@pytest.mark.parametrize("fault", list(WRITE_FAULTS))
def test_enospc_and_permission_errors_mid_job_then_a_clean_resume(setup, fault, tmp_path):
    how, name, code = WRITE_FAULTS[fault]
    if how == "dev_full" and not os.path.exists(DEV_FULL):
        pytest.skip(f"no {DEV_FULL}")
    t = fault_trial(setup["spec"], setup["path"], tmp_path / "out", setup["ref_dir"], how, name, code)
    assert t["clear"], (t["error"], t["errno"])
    assert t["status"] == "running" and name not in t["parts"]
    assert t["incomplete"] == [] and t["tmp_after_error"] == [], t       # nothing partial left behind
    assert t["skipped"] == len(t["parts"]) and t["written"] + t["skipped"] == N // SHARD, t
    assert resumed_ok(t), t


def test_the_command_reports_a_full_disk_in_one_line_and_resumes(setup, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["attribute", "--model", f"{MODELS}:float_spec", "--data", str(setup["path"]), "--out", str(out),
            "--shard-size", str(SHARD), "--progress", "none"]
    capsys.readouterr()
    with failing_write(*WRITE_FAULTS["ENOSPC writing part 1"]):
        assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"lrpjax attribute: error: cannot write {out / 'part-00001.parquet'}: No space left on "
                   f"device; check that the output directory is writable and has free space."), err
    assert cli.main(argv) == 0
    assert "2 shard(s) written, 1 skipped" in capsys.readouterr().out
    assert resumed_ok(compare_outputs(out, setup["ref_dir"]))


def _read_only_directories_refuse_writes() -> bool:
    """False for root (CAP_DAC_OVERRIDE), which writes into read-only directories."""
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o555)
        try:
            open(os.path.join(d, "probe"), "w").close()
            return False
        except PermissionError:
            return True
        finally:
            os.chmod(d, 0o755)


@pytest.mark.skipif(not _read_only_directories_refuse_writes(),
                    reason="this user (root) writes into read-only directories")
def test_an_output_directory_made_read_only_mid_job(setup, tmp_path):
    out = tmp_path / "out"
    real_atomic = job_output.write_atomic_parquet

    def then_read_only(table, final, metadata):
        real_atomic(table, final, metadata)
        if final.name == "part-00000.parquet":
            for d in (out, out / "shard-errors"):
                d.chmod(0o555)
    try:
        with mock.patch.object(job_output, "write_atomic_parquet", then_read_only):
            with pytest.raises(JobError) as e:
                run(setup["spec"], setup["path"], out)
    finally:
        for d in (out, out / "shard-errors"):
            d.chmod(0o755)
    assert clear_error(str(e.value), out, "errors-00001.parquet"), str(e.value)
    assert isinstance(e.value.__cause__, PermissionError)
    assert sorted(p.name for p in out.glob("part-*")) == ["part-00000.parquet"]
    assert incomplete_parts(out) == [] and tmp_files(out) == []
    s = run(setup["spec"], setup["path"], out)
    assert (s.n_shards_written, s.n_shards_skipped) == (2, 1)
    assert resumed_ok(compare_outputs(out, setup["ref_dir"]))


# ----------------------------------------------------------------------------------------------
# A concurrent job

def concurrent_trial(spec, data, out, argv, shard_size: int = SHARD) -> dict:
    """Start a job on ``out`` in a thread and hold it after its first part file; meanwhile run the
    command ``argv`` (``lrpjax attribute`` on the same ``out``; its exit status and stderr) and the same
    job from Python (its error); then let the first job finish."""
    real_atomic = job_output.write_atomic_parquet
    first_part, go_on = threading.Event(), threading.Event()
    result = {}

    def holding(table, final, metadata):
        real_atomic(table, final, metadata)
        if final.name == "part-00000.parquet":
            first_part.set()
            go_on.wait(120)

    def first_job():
        try:
            result["summary"] = attribute_dataset(spec, data, out, progress=False, shard_size=shard_size)
        except BaseException as e:      # (re-raised by the caller)
            result["error"] = e

    t = {}
    with mock.patch.object(job_output, "write_atomic_parquet", holding):
        thread = threading.Thread(target=first_job)
        thread.start()
        try:
            assert first_part.wait(120), result
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                t["exit"] = cli.main(argv)
            t["stderr"] = err.getvalue().strip()
            try:
                attribute_dataset(spec, data, out, progress=False, shard_size=shard_size)
                t["api_error"] = None
            except JobError as e:
                t["api_error"] = str(e)
            t["tmp_while_held"] = tmp_files(out)
        finally:
            go_on.set()
            thread.join(120)
    if "error" in result:
        raise result["error"]
    t["summary"] = result["summary"]
    return t


def test_a_concurrent_job_on_the_same_out_dir_is_refused_in_one_line(setup, tmp_path):
    out = tmp_path / "out"
    argv = ["attribute", "--model", f"{MODELS}:float_spec", "--data", str(setup["path"]), "--out", str(out),
            "--shard-size", str(SHARD), "--progress", "none"]
    t = concurrent_trial(setup["spec"], setup["path"], out, argv)
    msg = f"another attribution job is writing to {out}; wait for it or use another out_dir."
    assert (t["exit"], t["stderr"]) == (2, f"lrpjax attribute: error: {msg}")
    assert t["api_error"] == msg
    s = t["summary"]                                        # the first job went on undisturbed
    assert (s.n_shards_written, s.n_shards_skipped) == (N // SHARD, 0)
    assert resumed_ok(compare_outputs(out, setup["ref_dir"]))
