"""Array inputs (.npz / .npy) take the columnar path of the job (lrpjax.jobs.sources.Block ->
validate.Examples -> vectorised batches -> Arrow list columns from flat buffers); everything else
goes record by record. Both paths must write the same part files and the same error rows."""
import numpy as np
import pyarrow as pa
import pytest

import jobs_models
from lrpjax.jobs import attribute_dataset, read_errors, read_results

T, F = 6, 3
SPEC = jobs_models.float_spec(features=str(F))


def _data(kind: str, n: int = 40, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, T, F)).astype(np.float32)
    lengths = rng.integers(1, T + 1, n)
    x[3, 0, 1] = np.nan            # inside its length: an error
    lengths[4] = 2
    x[4, 4, :] = np.inf            # past its length: ignored
    lengths[5] = 0                 # empty
    d = {"x": x}
    if kind == "int":
        lengths[6] = T + 1         # outside [0, T]
        ids = np.arange(100, 100 + n)
        ids[8] = ids[2]            # duplicate id
        labels = rng.integers(0, 4, n)
        labels[9] = 7              # out of range for 4 classes
        d.update(lengths=lengths, ids=ids, labels=labels)
    elif kind == "float":
        fl = lengths.astype(np.float64)
        fl[6], fl[7], fl[10] = 2.5, float(T), np.nan     # a fraction, a whole float, NaN
        labels = rng.integers(0, 4, n).astype(np.float64)
        labels[9], labels[11] = 1.5, np.nan
        d.update(lengths=fl, labels=labels)
    elif kind == "string":
        ids = np.array([f"s{i % 30}" for i in range(n)])   # rows 30.. repeat earlier ids
        d.update(lengths=lengths, ids=ids)
    return d


def _as_records(d: dict) -> list:
    n = d["x"].shape[0]
    out = []
    for i in range(n):
        r = {"x": d["x"][i]}
        for k, key in (("lengths", "length"), ("labels", "label"), ("ids", "id")):
            if k in d:
                r[key] = d[k][i].item()
        out.append(r)
    return out


def _same(a_dir, b_dir):
    a, b = read_results(a_dir).sort_by("index"), read_results(b_dir).sort_by("index")
    assert a.num_rows > 0 and a.schema == b.schema
    for name in a.column_names:
        assert a.column(name).combine_chunks().equals(b.column(name).combine_chunks()), name
    ea, eb = read_errors(a_dir).sort_by("index"), read_errors(b_dir).sort_by("index")
    assert ea.to_pylist() == eb.to_pylist()
    return a, ea


@pytest.mark.parametrize("kind,target,full", [("int", "true", False), ("float", "pred", True),
                                              ("string", 1, False), ("npy", "pred", False)])
def test_columnar_path_equals_the_record_path(tmp_path, kind, target, full):
    d = _data(kind)
    if kind == "npy":
        path = tmp_path / "data.npy"
        np.save(path, d["x"])
    else:
        path = tmp_path / "data.npz"
        np.savez(path, **d)
    kw = dict(target=target, full=full, shard_size=16, batch_size=8, progress=False)
    s_col = attribute_dataset(SPEC, str(path), tmp_path / "col", **kw)
    s_rec = attribute_dataset(SPEC, _as_records(d), tmp_path / "rec", **kw)
    assert (s_col.n_explained, s_col.n_errors) == (s_rec.n_explained, s_rec.n_errors)
    table, errors = _same(tmp_path / "col", tmp_path / "rec")
    reasons = " | ".join(errors.column("reason").to_pylist())
    if kind != "npy":
        assert "non-finite values: 1 NaN/inf in x" in reasons and "empty sequence" in reasons
        assert 4 in table.column("index").to_pylist()        # inf past its length is not an error
    expected = {"int": ["outside [0, 6]", "duplicate id 102", "label 7 out of range [0, 4)"],
                "float": ["length 2.5 is not a whole number", "length nan is not a whole number"],
                "string": ["duplicate id 's0'"], "npy": []}[kind]
    for part in expected:
        assert part in reasons, (part, reasons)
    if kind == "float":        # whole-float lengths are accepted; labels 1.5 / nan are null
        row7 = table.filter(pa.compute.equal(table.column("index"), 7)).to_pylist()[0]
        assert row7["length"] == T
        assert table.filter(pa.compute.equal(table.column("index"), 9)).column("label")[0].as_py() is None


def test_columnar_resume_skips_finished_shards_and_checks_their_ids(tmp_path):
    d = _data("int", n=48)
    path = tmp_path / "data.npz"
    np.savez(path, **d)
    kw = dict(target="pred", shard_size=16, batch_size=8, progress=False)
    first = attribute_dataset(SPEC, str(path), tmp_path / "out", **kw)
    (tmp_path / "out" / "part-00001.parquet").unlink()
    again = attribute_dataset(SPEC, str(path), tmp_path / "out", **kw)
    assert (again.n_shards_written, again.n_shards_skipped) == (1, 2)
    assert (again.n_explained + again.n_errors) == (first.n_explained + first.n_errors)
    attribute_dataset(SPEC, _as_records(d), tmp_path / "rec", **kw)
    _same(tmp_path / "out", tmp_path / "rec")
