"""Faults of dataset-wide jobs (lrpjax.jobs): damaged part files, an edited input, whole-float lengths,
a job whose every example fails, foreign temporary files and the lock file. Small sizes (12 examples,
3 shards), one model, so the jitted steps are compiled once for the whole module."""
import fcntl
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import jobs_models as m
from lrpjax import cli
from lrpjax.jobs import JobError, attribute_dataset, read_results

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
            "ref": relevance(ref)}


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
    part = out / "part-00002.parquet"
    raw = bytearray(part.read_bytes())
    footer = int.from_bytes(raw[-8:-4], "little")
    pos = 4 + int(where * (len(raw) - footer - 12))        # inside the data pages (not the footer)
    for p in range(pos, pos + 8):
        raw[p] ^= 0xFF
    part.write_bytes(bytes(raw))
    run(setup["spec"], setup["path"], out)                  # no OSError (corrupt snappy data)
    assert_equal_to_reference(out, setup["ref"])


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
