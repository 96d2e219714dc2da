"""Dataset-wide attribution jobs (lrpjax.jobs.attribute_dataset): results, invariances, formats,
bad examples, resuming, refusals, and the Parquet output read without lrpjax.

In-process runs use the 8 virtual CPU devices of conftest.py; the 1-device side runs in a subprocess.
"""
import glob
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lrpjax
import jobs_models as m
from conftest import ROOT
from lrpjax.jobs import JobError, ModelSpec, attribute_dataset, read_errors, read_results

TESTS = Path(__file__).resolve().parent
N, T, F = 30, 23, 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Variable-length float data as an uncompressed .npz, and the model. Lengths 1..23, around the
    bucket edges (8, 16, 24) and including 1 and the longest, T = 23."""
    d = tmp_path_factory.mktemp("jobs_data")
    x, lengths, labels = m.float_data(N, T, F, seed=0, choices=[1, 2, 7, 8, 9, 15, 16, 17, 23])
    path = d / "data.npz"
    np.savez(path, x=x, lengths=lengths, labels=labels)
    return {"path": path, "x": x, "lengths": lengths, "labels": labels, "apply": m.float_model()}


def run(model, dataset, out, **kw):
    kw.setdefault("progress", False)
    return attribute_dataset(model, dataset, out, **kw)


def rows(out):
    """index -> row dict of a job's results."""
    t = read_results(out).to_pylist()
    return {r["index"]: r for r in t}


def assert_same_results(a, b, rtol=1e-5):
    ra, rb = rows(a), rows(b)
    assert list(ra) == list(rb)
    for i in ra:
        assert ra[i]["id"] == rb[i]["id"] and ra[i]["target"] == rb[i]["target"]
        x, y = np.asarray(ra[i]["relevance"]), np.asarray(rb[i]["relevance"])
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * max(1e-3, np.abs(y).max()))
        np.testing.assert_allclose(ra[i]["score"], rb[i]["score"], rtol=rtol, atol=1e-6)


_REFERENCE = {}


def per_example_lrp(apply, x_i, L, target=None, **kw):
    """lrpjax.explain of one unpadded example ``(1, L, F)`` alone (jitted once per length and options):
    relevance ``(L, F)``, target, score."""
    key = (id(apply), L, target is None, tuple(sorted(kw.items())))
    if key not in _REFERENCE:
        fn = lambda xi, t: lrpjax.explain(lambda z: apply(z, jnp.array([L], jnp.int32)), xi,
                                          None if target is None else t, **kw)
        _REFERENCE[key] = jax.jit(fn)
    ex = _REFERENCE[key](jnp.asarray(x_i[None, :L], jnp.float32), jnp.int32(target or 0))
    return np.asarray(ex.relevance[0]), int(ex.target[0]), float(ex.scores[0, ex.target[0]])


# ----------------------------------------------------------------------------------------------
# Results

def test_relevance_equals_lrp_of_each_unpadded_example(data, tmp_path):
    s = run(ModelSpec(data["apply"], name="m", features=F), data["path"], tmp_path / "out",
            batch_size=16, shard_size=12, bucket_step=8)
    assert (s.n_examples, s.n_errors, s.n_shards_written, s.n_shards_skipped) == (N, 0, 3, 0)
    got = rows(tmp_path / "out")
    assert list(got) == list(range(N))                       # input order, every example once
    for i, r in got.items():
        L = int(data["lengths"][i])
        R, t, score = per_example_lrp(data["apply"], data["x"][i], L)
        assert r["id"] == i and r["length"] == L and r["label"] == int(data["labels"][i])
        assert r["target"] == t                               # "pred" = argmax of the unpadded run
        np.testing.assert_allclose(r["relevance"], R.sum(-1), rtol=1e-5, atol=1e-5 * np.abs(R).sum())
        np.testing.assert_allclose(r["score"], score, rtol=1e-5)
    # one compilation per bucket length at most (lengths 1..23, step 8 -> buckets 8, 16, 24)
    assert 1 <= s.compilations <= 3
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["status"] == "complete" and man["counts"]["explained"] == N
    assert man["devices"]["count"] == jax.local_device_count()
    assert {"lrpjax", "jax", "jaxlib", "flax", "numpy", "pyarrow"} <= set(man["versions"])
    assert man["job"]["options"]["eps"] == 1e-3 and man["job"]["input"]["size"] > 0
    assert man["last_run"]["compilations"] == s.compilations


def test_full_relevance_and_rule_options(data, tmp_path):
    run(data["apply"], data["path"], tmp_path / "out", full=True, gate="half", bias_factor=1.0, eps=0.01)
    got = rows(tmp_path / "out")
    for i in (0, 7, 29):
        L = int(data["lengths"][i])
        R, _, _ = per_example_lrp(data["apply"], data["x"][i], L, gate="half", bias_factor=1.0, eps=0.01)
        full = np.asarray(got[i]["relevance_full"], np.float32)
        assert full.shape == (L, F)
        np.testing.assert_allclose(full, R, rtol=1e-5, atol=1e-5 * np.abs(R).max())
        np.testing.assert_allclose(got[i]["relevance"], full.sum(-1), rtol=1e-5, atol=1e-6)
    schema = pq.read_schema(tmp_path / "out" / "part-00000.parquet")
    assert schema.field("relevance_full").type == pa.list_(pa.list_(pa.float32()))


def test_identical_for_batch_sizes_8_and_64(data, tmp_path):
    run(data["apply"], data["path"], tmp_path / "b8", batch_size=8, bucket_step=4)
    run(data["apply"], data["path"], tmp_path / "b64", batch_size=64, bucket_step=8)
    assert_same_results(tmp_path / "b8", tmp_path / "b64")


def test_identical_on_1_and_8_devices(data, tmp_path):
    assert jax.local_device_count() == 8
    run(data["apply"], data["path"], tmp_path / "dev8", batch_size=8)
    script = textwrap.dedent(f"""
        import sys, jax
        jax.config.update("jax_enable_x64", True)
        sys.path.insert(0, {str(TESTS)!r})
        import jobs_models as m
        from lrpjax.jobs import attribute_dataset
        assert jax.local_device_count() == 1, jax.local_device_count()
        attribute_dataset(m.float_model(), {str(data["path"])!r}, {str(tmp_path / "dev1")!r},
                          batch_size=8, progress=False)
    """)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(ROOT)
    p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    counts = [json.loads((tmp_path / d / "manifest.json").read_text())["devices"]["count"]
              for d in ("dev1", "dev8")]
    assert counts == [1, 8]
    assert_same_results(tmp_path / "dev1", tmp_path / "dev8")


def test_compilations_bounded_by_buckets(tmp_path):
    apply = m.float_model()
    x = [np.random.default_rng(L).normal(size=(L, F)).astype(np.float32) for L in range(1, 41)] * 2
    s = run(apply, x, tmp_path / "a", bucket_step=8, shard_size=10, batch_size=4)
    assert s.n_shards_written == 8 and s.n_errors == 0
    assert s.compilations <= 5                                 # buckets 8, 16, 24, 32, 40
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert set(man["last_run"]["bucket_lengths"]) <= {8, 16, 24, 32, 40}
    # max_length caps the buckets (8, 16, 20) and longer examples become errors
    s = run(apply, x, tmp_path / "b", bucket_step=8, shard_size=10, batch_size=4, max_length=20)
    assert s.n_errors == 40 and s.compilations <= 3
    assert set(json.loads((tmp_path / "b" / "manifest.json").read_text())["last_run"]["bucket_lengths"]) \
        <= {8, 16, 20}
    reasons = read_errors(tmp_path / "b").column("reason").to_pylist()
    assert all(r.startswith("too long: length") and "max_length 20" in r for r in reasons)


def test_second_job_reuses_the_compiled_step(tmp_path):
    """The jitted step is cached across jobs (same model function and options): no new compilation,
    the same output; another rule option or method compiles its own step."""
    apply = m.float_model()
    x = [np.random.default_rng(L).normal(size=(L, F)).astype(np.float32) for L in (3, 9, 17, 4, 12)]
    first = run(apply, x, tmp_path / "a", bucket_step=8, batch_size=2)
    assert first.compilations >= 1
    again = run(apply, x, tmp_path / "b", bucket_step=8, batch_size=2)
    assert again.compilations == 0
    assert_same_results(tmp_path / "a", tmp_path / "b", rtol=0)
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["last_run"]["compilations"] == 0
    assert run(apply, x, tmp_path / "c", bucket_step=8, batch_size=2, gate="half").compilations >= 1
    assert run(apply, x, tmp_path / "d", bucket_step=8, batch_size=2, method="gradient").compilations >= 1
    # a new model function (even an equal one) is not mixed up with the cached one
    assert run(m.float_model(), x, tmp_path / "e", bucket_step=8, batch_size=2).compilations >= 1


def test_targets_true_int_and_gradient_method(data, tmp_path):
    apply, x, lengths, labels = data["apply"], data["x"], data["lengths"], data["labels"]
    run(apply, data["path"], tmp_path / "true", target="true")
    run(apply, data["path"], tmp_path / "k2", target=2)
    run(apply, data["path"], tmp_path / "grad", method="gradient_x_input", target="true")
    t_true, t_k2, t_grad = rows(tmp_path / "true"), rows(tmp_path / "k2"), rows(tmp_path / "grad")
    for i in (1, 5, 22):
        L = int(lengths[i])
        R, _, _ = per_example_lrp(apply, x[i], L, target=int(labels[i]))
        assert t_true[i]["target"] == labels[i]
        np.testing.assert_allclose(t_true[i]["relevance"], R.sum(-1), rtol=1e-5, atol=1e-6)
        R2, _, score2 = per_example_lrp(apply, x[i], L, target=2)
        assert t_k2[i]["target"] == 2 and np.isclose(t_k2[i]["score"], score2, rtol=1e-5)
        np.testing.assert_allclose(t_k2[i]["relevance"], R2.sum(-1), rtol=1e-5, atol=1e-6)
        # gradient x input of the label's logit, on the unpadded example
        xi = jnp.asarray(x[i:i + 1, :L])
        g = jax.grad(lambda z: apply(z, jnp.array([L], jnp.int32))[0, int(labels[i])])(xi)
        np.testing.assert_allclose(t_grad[i]["relevance"], np.asarray((g * xi).sum(-1))[0], rtol=1e-5,
                                   atol=1e-6)
    with pytest.raises(JobError, match="not a class of this model"):
        run(apply, data["path"], tmp_path / "k9", target=9)


@pytest.mark.parametrize("method,options", [
    ("gradient", {}), ("sensitivity", {}), ("integrated_gradients", {"steps": 8, "baseline": 0.25}),
    ("occlusion", {"value": 0.5}), ("random", {"seed": 3})])
def test_baseline_methods_equal_the_baselines_on_each_unpadded_example(data, tmp_path, method, options):
    """method= any baseline: each row is lrpjax.baselines.METHODS[method] of the unpadded example alone
    (random: seeded per example, so independent of the batch size)."""
    apply, x, lengths = data["apply"], data["x"], data["lengths"]
    run(apply, data["path"], tmp_path / "a", method=method, method_options=options, batch_size=8)
    got = rows(tmp_path / "a")
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert man["job"]["options"]["method"] == method
    assert man["job"]["options"].get("method_options", {}) == options
    for i in (0, 5, 13, 22):
        L = int(lengths[i])
        xi = jnp.asarray(x[i:i + 1, :L])
        fn = lambda z: apply(z, jnp.array([L], jnp.int32))
        t = int(jnp.argmax(fn(xi)[0]))
        assert got[i]["target"] == t
        if method == "random":
            continue
        R = lrpjax.baselines.METHODS[method](fn, xi, jnp.array([t]), **options)
        np.testing.assert_allclose(got[i]["relevance"], np.asarray(lrpjax.per_step(R, xi))[0],
                                   rtol=1e-5, atol=1e-6)
    if method == "random":      # seeded per example: another batch size gives the same values
        run(apply, data["path"], tmp_path / "b", method=method, method_options=options, batch_size=16)
        assert_same_results(tmp_path / "a", tmp_path / "b", rtol=0)
        vals = np.concatenate([np.asarray(r["relevance"]) for r in got.values()])
        assert 0.5 < np.std(vals) < 5.0 and abs(np.mean(vals)) < 0.5


def test_method_options_and_full_are_checked(data, tmp_path):
    with pytest.raises(JobError, match="'occlusion' takes batch_size, value, got 'steps'"):
        run(data["apply"], data["path"], tmp_path / "a", method="occlusion", method_options={"steps": 3})
    with pytest.raises(JobError, match="full=True needs per-feature relevance"):
        run(data["apply"], data["path"], tmp_path / "b", method="sensitivity", full=True)
    with pytest.raises(JobError, match="method must be one of"):
        run(data["apply"], data["path"], tmp_path / "c", method="saliency")


# ----------------------------------------------------------------------------------------------
# Inputs

def test_formats_npz_jsonl_parquet_npy_iterable_agree(data, tmp_path):
    apply, x, lengths, labels = data["apply"], data["x"], data["lengths"], data["labels"]
    run(apply, data["path"], tmp_path / "npz")
    m.write_jsonl(tmp_path / "d.jsonl", x, lengths, labels)
    run(apply, tmp_path / "d.jsonl", tmp_path / "jsonl")
    pq.write_table(pa.table({"x": [x[i, :lengths[i]].tolist() for i in range(N)],
                             "label": labels.tolist()}), tmp_path / "d.parquet")
    run(apply, tmp_path / "d.parquet", tmp_path / "parquet")
    run(apply, [{"x": x[i, :lengths[i]], "label": int(labels[i])} for i in range(N)], tmp_path / "iter")
    for d in ("jsonl", "parquet", "iter"):
        assert_same_results(tmp_path / "npz", tmp_path / d)
        assert rows(tmp_path / d)[3]["label"] == labels[3]
    # .npy: every sequence full length; the same as an iterator of (T, F) arrays
    np.save(tmp_path / "d.npy", x[:12])
    run(apply, tmp_path / "d.npy", tmp_path / "npy")
    run(apply, iter(list(x[:12])), tmp_path / "gen")
    assert_same_results(tmp_path / "npy", tmp_path / "gen")
    assert {r["length"] for r in rows(tmp_path / "npy").values()} == {T}


def test_compressed_npz_and_string_ids(data, tmp_path):
    x, lengths = data["x"][:10], data["lengths"][:10]
    ids = np.array([f"ex-{i}" for i in range(10)])
    np.savez_compressed(tmp_path / "c.npz", x=x, lengths=lengths, ids=ids)
    run(data["apply"], tmp_path / "c.npz", tmp_path / "out")
    t = read_results(tmp_path / "out")
    assert t.schema.field("id").type == pa.string() and t.column("id").to_pylist() == ids.tolist()
    assert t.column("label").null_count == 10


def test_text_inputs_with_tokenizer_vocab_and_unk(tmp_path):
    spec = m.text_spec()
    lines = [f"{i % 3}\t{s}" for i, s in enumerate(m.SENTENCES)] + ["1\tthe zebra was good"]
    (tmp_path / "d.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    s = run(spec, tmp_path / "d.txt", tmp_path / "txt", target="true", bucket_step=4)
    assert s.n_examples == len(lines) and s.n_errors == 0
    got = rows(tmp_path / "txt")
    # explain_tokens of each example alone (jitted once per length)
    ref = jax.jit(lambda ids, t: lrpjax.explain_tokens(
        lambda z: spec.apply(z, jnp.full((1,), ids.shape[1], jnp.int32)), ids, t))
    for i, line in enumerate(lines):
        label, text = line.split("\t")
        ids = [1 if t is None else t for t in m.tokenize(text)]   # unk_id = 1
        ex = ref(jnp.array([ids], jnp.int32), jnp.int32(int(label)))
        assert got[i]["tokens"] == [m.VOCAB[t] for t in ids] and got[i]["target"] == int(label)
        np.testing.assert_allclose(got[i]["relevance"], np.asarray(ex.relevance[0]), rtol=1e-5, atol=1e-6)
    assert got[len(lines) - 1]["tokens"][1] == "<unk>"
    # the same texts from .jsonl, and a Python list of strings
    with open(tmp_path / "d.jsonl", "w") as f:
        for line in lines:
            label, text = line.split("\t")
            f.write(json.dumps({"text": text, "label": int(label)}) + "\n")
    run(spec, tmp_path / "d.jsonl", tmp_path / "jsonl", target="true")
    assert_same_results(tmp_path / "txt", tmp_path / "jsonl")
    run(spec, [ln.split("\t")[1] for ln in lines], tmp_path / "list")
    assert [r["tokens"] for r in rows(tmp_path / "list").values()] == [r["tokens"] for r in got.values()]
    # without unk_id, unknown words make an error row; the (apply, tokenizer) tuple has no vocab
    s = run(m.text_spec(unk="none"), tmp_path / "d.txt", tmp_path / "nounk")
    err = read_errors(tmp_path / "nounk").to_pylist()
    assert s.n_errors == 1 and err[0]["index"] == len(lines) - 1
    assert "unknown token(s) at position(s) [1]" in err[0]["reason"]
    run(m.text_tuple(), tmp_path / "d.txt", tmp_path / "tuple", progress=False)
    assert rows(tmp_path / "tuple")[0]["tokens"] == [str(m.INDEX[w]) for w in m.SENTENCES[0].split()]


@pytest.mark.parametrize("method", ["gradient_x_input", "occlusion"])
def test_baseline_methods_on_token_models_explain_the_embedding(tmp_path, method):
    """Token models: a baseline acts on the embedding (lrpjax.embedding_input) of each unpadded
    example, summed per token."""
    spec = m.text_spec()
    run(spec, m.SENTENCES, tmp_path / "o", method=method, bucket_step=4)
    got = rows(tmp_path / "o")
    for i, text in enumerate(m.SENTENCES):
        ids = jnp.array([[1 if t is None else t for t in m.tokenize(text)]], jnp.int32)
        fn = lambda z: spec.apply(z, jnp.full((1,), ids.shape[1], jnp.int32))
        emb, on_embeddings = lrpjax.embedding_input(fn, ids)
        a = lrpjax.baselines.attribute(method, on_embeddings, emb)
        assert got[i]["target"] == int(a.target[0])
        np.testing.assert_allclose(got[i]["relevance"], np.asarray(lrpjax.per_step(a.relevance, emb))[0],
                                   rtol=1e-5, atol=1e-6)


def test_bad_examples_become_error_rows(tmp_path):
    rng = np.random.default_rng(1)
    good = lambda L: rng.normal(size=(L, F)).astype(np.float32)
    nan = good(5)
    nan[2, 1] = np.nan
    inf = good(4)
    inf[0, 0] = np.inf
    items = [
        {"id": "a", "x": good(6)},
        {"id": "nan", "x": nan},
        {"id": "inf", "x": inf},
        {"id": "wrongF", "x": rng.normal(size=(5, F + 1))},
        {"id": "empty", "x": np.zeros((0, F), np.float32)},
        {"id": "long", "x": good(31)},
        {"id": "ragged", "x": [[1.0, 2.0, 3.0], [1.0]]},
        {"id": "nox", "label": 1},
        {"id": "a", "x": good(3)},                    # duplicate id
        {"id": "badlen", "x": good(3), "length": 7},
        {"id": "b", "x": good(30)},
    ]
    s = run(m.float_spec(), items, tmp_path / "out", max_length=30, shard_size=4)
    assert (s.n_examples, s.n_errors) == (len(items), 9)
    assert [r["id"] for r in read_results(tmp_path / "out").to_pylist()] == ["a", "b"]
    reasons = {r["index"]: r["reason"] for r in read_errors(tmp_path / "out").to_pylist()}
    expect = {1: "non-finite values: 1 NaN/inf", 2: "non-finite values: 1 NaN/inf",
              3: "wrong feature count: 4 (expected 3)", 4: "empty sequence", 5: "too long: length 31",
              6: "x is not a (T, F) numeric array", 7: "neither 'x' nor 'text'", 8: "duplicate id 'a'",
              9: "length 7 outside [0, 3]"}
    assert sorted(reasons) == sorted(expect)
    for i, want in expect.items():
        assert want in reasons[i], (i, reasons[i])
    # target='true': examples without (valid) labels are errors too
    items = [{"x": good(4), "label": 1}, {"x": good(4)}, {"x": good(4), "label": 7},
             {"x": good(4), "label": "pos"}]
    s = run(m.float_spec(), items, tmp_path / "true", target="true")
    reasons = read_errors(tmp_path / "true").column("reason").to_pylist()
    assert s.n_errors == 3 and reasons == ["no label (target='true' needs one)",
                                           "label 7 out of range [0, 4)",
                                           "label 'pos' is not an integer class index"]
    # invalid JSON lines in a .jsonl file
    (tmp_path / "bad.jsonl").write_text('{"x": [[1, 2, 3]]}\n{"x": [[1, 2\n[1, 2]\n', encoding="utf-8")
    s = run(m.float_spec(), tmp_path / "bad.jsonl", tmp_path / "json")
    assert s.n_errors == 2 and read_errors(tmp_path / "json").column("reason").to_pylist()[0].startswith(
        "invalid JSON")


def test_duplicate_int_ids_explicit_and_implicit(tmp_path):
    """An example without an id gets its index as id; any id used twice is an error row."""
    good = lambda L: np.ones((L, F), np.float32)
    recs = [{"x": good(3)}, {"x": good(4), "id": 0}, {"x": good(5), "id": 7}, {"x": good(2), "id": 7},
            {"id": 5, "x": good(3)}, {"x": good(3)}, {"x": good(6)}]
    s = run(m.float_model(), recs, tmp_path / "o", shard_size=3)
    errs = read_errors(tmp_path / "o").to_pylist()
    assert [(e["index"], e["id"], e["reason"]) for e in errs] == [
        (1, 0, "duplicate id 0"), (3, 7, "duplicate id 7"), (5, 5, "duplicate id 5")]
    assert s.n_errors == 3 and read_results(tmp_path / "o").column("id").to_pylist() == [0, 7, 5, 6]


def test_bad_model_input_output_raise_at_once(data, tmp_path):
    apply, path = data["apply"], data["path"]
    with pytest.raises(JobError, match="must be a ModelSpec, a callable"):
        run(42, path, tmp_path / "o1")
    with pytest.raises(JobError, match="must be callable"):
        ModelSpec(apply=3)
    with pytest.raises(JobError, match=r"logits of shape \(B, C\)"):
        run(lambda x, l: x.sum(-1).sum(-1), path, tmp_path / "o2")
    with pytest.raises(JobError, match="the model failed on a probe batch"):
        run(m.float_model(features="5"), path, tmp_path / "o3")      # weights for 5 features, data has 3
    with pytest.raises(JobError, match="no LRP rule"):
        run(lambda x, l: jnp.sort(apply(x, l), axis=-1), path, tmp_path / "o4")
    with warnings.catch_warnings():     # a failed run that wrote no results does not block new settings
        warnings.simplefilter("ignore")
        assert run(lambda x, l: jnp.sort(apply(x, l), axis=-1), path, tmp_path / "o4", strict=False).n_errors == 0
    with pytest.raises(JobError, match="gate"):
        run(apply, path, tmp_path / "o5", gate="bogus")
    with pytest.raises(JobError, match="target must be"):
        run(apply, path, tmp_path / "o6", target="best")
    with pytest.raises(JobError, match="input not found"):
        run(apply, tmp_path / "missing.npz", tmp_path / "o7")
    np.savez(tmp_path / "nox.npz", y=np.zeros(3))
    with pytest.raises(JobError, match="needs an array 'x'"):
        run(apply, tmp_path / "nox.npz", tmp_path / "o8")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(JobError, match="cannot read"):
        run(apply, tmp_path / "junk.npz", tmp_path / "o9")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(JobError, match="cannot create the output directory"):
        run(apply, path, tmp_path / "afile" / "out")
    with pytest.raises(JobError, match="full=True needs float inputs"):
        run(m.text_spec(), ["the movie"], tmp_path / "o10", full=True)
    with pytest.raises(JobError, match="has no tokenizer"):
        run(apply, ["some text"], tmp_path / "o11")
    assert issubclass(JobError, ValueError)


# ----------------------------------------------------------------------------------------------
# Resuming and refusing

def test_resume_skips_complete_shards_and_redoes_damaged_ones(data, tmp_path):
    out = tmp_path / "out"
    run(data["apply"], data["path"], out, shard_size=6)
    ref = {k: (r["id"], r["relevance"]) for k, r in rows(out).items()}
    (out / "part-00001.parquet").unlink()                                 # missing
    raw = (out / "part-00002.parquet").read_bytes()
    (out / "part-00002.parquet").write_bytes(raw[: len(raw) // 2])        # truncated (no footer)
    (out / ".part-00003.parquet.4242.tmp").write_bytes(raw[:100])         # a stale temporary file
    s = run(data["apply"], data["path"], out, shard_size=6)
    assert (s.n_shards_written, s.n_shards_skipped, s.n_examples) == (2, 3, N)
    got = {k: (r["id"], r["relevance"]) for k, r in rows(out).items()}
    assert list(got) == list(ref) and all(got[k][0] == ref[k][0] for k in ref)
    for k in ref:
        np.testing.assert_allclose(got[k][1], ref[k][1], rtol=1e-6)
    assert not glob.glob(str(out / ".*tmp")) and (out / ".lock").exists()      # lock files stay
    assert sorted(p.name for p in out.glob("part-*")) == [f"part-0000{k}.parquet" for k in range(5)]
    # a finished job re-run: everything skipped, nothing compiled
    s = run(data["apply"], data["path"], out, shard_size=6)
    assert (s.n_shards_written, s.n_shards_skipped, s.compilations) == (0, 5, 0)


def test_changed_settings_under_existing_out_dir_are_refused(data, tmp_path):
    out, path = tmp_path / "out", data["path"]
    spec = m.float_spec()
    run(spec, path, out)
    with pytest.raises(JobError, match=r"eps: 0\.001 -> 0\.01"):
        run(spec, path, out, eps=0.01)
    with pytest.raises(JobError, match="method: 'lrp' -> 'gradient'"):
        run(spec, path, out, method="gradient")
    with pytest.raises(JobError, match="target: 'pred' -> 'true'"):
        run(spec, path, out, target="true")
    with pytest.raises(JobError, match="shard_size"):
        run(spec, path, out, shard_size=7)
    with pytest.raises(JobError, match="model.spec: 'name=float-lstm-seed0; .*' -> 'name=other; "):
        run(ModelSpec(spec.apply, name="other", features=F), path, out)
    other_weights = ModelSpec(m.float_model(seed="5"), name=spec.name, features=F)  # same name
    with pytest.raises(JobError, match="outputs on the probe batch changed"):
        run(other_weights, path, out)
    x2 = data["x"].copy()
    x2[0, 0, 0] += 1.0
    np.savez(tmp_path / "data2.npz", x=x2, lengths=data["lengths"], labels=data["labels"])
    with pytest.raises(JobError, match="input.sha256"):
        run(spec, tmp_path / "data2.npz", out)
    # batch size and bucket step do not change results: a re-run with them is a resume
    s = run(spec, path, out, batch_size=8, bucket_step=4)
    assert s.n_shards_skipped == 1
    # overwrite=True replaces the job
    s = run(spec, path, out, eps=0.01, overwrite=True)
    assert s.n_shards_written == 1
    assert json.loads((out / "manifest.json").read_text())["job"]["options"]["eps"] == 0.01
    # a directory that is not a job directory is not touched
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(JobError, match="not an lrpjax job directory"):
        run(spec, path, tmp_path / "foreign")


def test_output_readable_with_pyarrow_alone(data, tmp_path):
    out = tmp_path / "out"
    run(m.text_spec(unk="none"), m.SENTENCES * 3 + ["zebra zebra"], out / "text", shard_size=10)
    run(data["apply"], data["path"], out / "float", full=True, shard_size=16)
    script = textwrap.dedent(f"""
        import glob, importlib.util, json, sys
        import pyarrow as pa, pyarrow.parquet as pq
        sys.modules["lrpjax"] = None      # any import of lrpjax would now fail: reading must not need it
        for d in ("text", "float"):
            base = {str(out)!r} + "/" + d
            t = pq.ParquetDataset(sorted(glob.glob(base + "/part-*.parquet"))).read()
            e = pq.read_table(base + "/errors.parquet")
            man = json.load(open(base + "/manifest.json"))
            assert t.num_rows + e.num_rows == man["counts"]["examples"], (t.num_rows, e.num_rows)
            assert t.schema.field("relevance").type == pa.list_(pa.float32())
            assert all(b"ARROW:extension" not in (f.metadata or {{}}) for f in t.schema)
            assert t.column("index").to_pylist() == sorted(t.column("index").to_pylist())
            print(d, t.num_rows, e.num_rows, t.schema.names)
        assert sys.modules["lrpjax"] is None
    """)
    p = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    cols = "['index', 'id', 'label', 'length', 'target', 'score', 'relevance', 'tokens']"
    assert f"text 24 1 {cols}" in p.stdout
    assert "float 30 0" in p.stdout and "relevance_full" in p.stdout


def test_progress_log_lines(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(lrpjax.jobs, "LOG_EVERY_S", 0.0)
    run(data["apply"], data["path"], tmp_path / "out", progress=None, shard_size=15)   # not a TTY: log
    err = capsys.readouterr().err
    assert "[lrpjax attribute] 15/30 examples" in err and "ex/s" in err and "ETA" in err
    assert "done: 30/30 examples" in err
    run(data["apply"], data["path"], tmp_path / "bar", progress=True)                # a tqdm bar
    err = capsys.readouterr().err
    assert "lrpjax attribute" in err and "30/30" in err and "ex/s" in err
