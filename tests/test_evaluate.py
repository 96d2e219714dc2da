"""`lrpjax evaluate` / lrpjax.evaluate_dataset: attribution jobs per method, per-example metric scores
(Parquet, resumable), a summary with bootstrap intervals, the command and the report."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import jobs_models
import lrpjax
from lrpjax import cli, metrics
from lrpjax.jobs import JobError, read_results
from lrpjax.jobs.evaluate import bootstrap_ci, evaluate_dataset
from lrpjax.report import report_html

T, F = 7, 3
SPEC = jobs_models.float_spec(features=str(F))
METHODS = ["lrp", "gradient_x_input"]
METRICS = ["pixel_flipping", "completeness", "faithfulness_correlation"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 20
    x = rng.standard_normal((n, T, F)).astype(np.float32)
    lengths = rng.integers(2, T + 1, n)
    lengths[3] = 0                                   # a bad example: not evaluated
    path = tmp_path_factory.mktemp("eval") / "data.npz"
    np.savez(path, x=x, lengths=lengths)
    return path, x, lengths


def run(data, out, **kw):
    kw = {"methods": METHODS, "metrics": METRICS, "shard_size": 8, "batch_size": 4, "progress": False,
          "n_bootstrap": 200, **kw}
    return evaluate_dataset(SPEC, str(data[0]), out, **kw)


def test_scores_equal_the_metrics_on_each_unpadded_example_and_the_summary_their_mean(tmp_path, data):
    path, x, lengths = data
    s = run(data, tmp_path / "ev")
    scores = pq.ParquetDataset(sorted(str(p) for p in (tmp_path / "ev" / "scores").glob("*.parquet"))).read()
    good = [i for i in range(len(x)) if lengths[i] > 0]
    assert scores.num_rows == len(good) * len(METHODS) * len(METRICS)
    table = scores.to_pylist()
    for method in METHODS:
        att = read_results(tmp_path / "ev" / "attributions" / method).to_pylist()
        for row in att[:6]:                           # the padded batch equals each example alone
            i, L = row["index"], row["length"]
            xi, Ri = x[i:i + 1, :L], np.asarray(row["relevance"], np.float32)[None]
            t = np.array([row["target"]])
            want = {"pixel_flipping": metrics.pixel_flipping(SPEC.apply, xi, Ri, t,
                                                             return_auc_per_sample=True)[0],
                    "completeness": abs(metrics.completeness(SPEC.apply, xi, Ri, t)[0])}
            for metric, w in want.items():
                got = [r["score"] for r in table if r["index"] == i and r["method"] == method
                       and r["metric"] == metric]
                assert len(got) == 1
                np.testing.assert_allclose(got[0], w, rtol=1e-4, atol=1e-5)
    for r in s.rows:
        vals = np.array([t["score"] for t in table if t["method"] == r["method"]
                         and t["metric"] == r["metric"]])
        assert len(vals) == len(good) and r["n"] == np.isfinite(vals).sum()   # NaN: undefined (e.g.
        if r["metric"] != "faithfulness_correlation":                        # one subset only), left out
            assert r["n"] == len(good)
        np.testing.assert_allclose(r["mean"], np.nanmean(vals), rtol=1e-12)
        assert r["low"] <= r["mean"] <= r["high"]
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["rows"] == s.rows


def test_resume_recomputes_only_missing_shards_and_a_changed_setting_is_refused(tmp_path, data):
    first = run(data, tmp_path / "ev")
    assert (first.n_shards_scored, first.n_shards_skipped) == (3, 0)
    (tmp_path / "ev" / "scores" / "part-00001.parquet").unlink()
    again = run(data, tmp_path / "ev")
    assert (again.n_shards_scored, again.n_shards_skipped) == (1, 2)
    assert again.rows == first.rows                   # same scores (seeded), same summary
    with pytest.raises(JobError, match="other settings.*metrics"):
        run(data, tmp_path / "ev", metrics=["pixel_flipping"])
    replaced = run(data, tmp_path / "ev", metrics=["pixel_flipping"], overwrite=True)
    assert [r["metric"] for r in replaced.rows] == ["pixel_flipping"] * 2


def test_bad_arguments_are_refused(tmp_path, data):
    with pytest.raises(JobError, match="unknown: \\['nope'\\]"):
        run(data, tmp_path / "a", metrics=["nope"])
    with pytest.raises(JobError, match="without repeats"):
        run(data, tmp_path / "b", methods=["lrp", "lrp"])


def test_command_prints_the_table_and_the_report_shows_it(tmp_path, data, capsys):
    out = tmp_path / "ev"
    rc = cli.main(["evaluate", "--model", "tests/jobs_models.py:float_spec", "--model-arg", f"features={F}",
                   "--data", str(data[0]), "--out", str(out), "--methods", "lrp,random",
                   "--metrics", "pixel_flipping", "--shard-size", "8", "--batch-size", "4",
                   "--bootstrap", "100", "--progress", "none"])
    text = capsys.readouterr().out
    assert rc == 0 and "pixel_flipping" in text and "random" in text and "3 shard(s) scored" in text
    page = report_html(out)
    assert "evaluation of explanations" in page and "pixel_flipping" in page and "95% CI" in page


def test_bootstrap_interval_matches_the_normal_approximation():
    s = np.random.default_rng(1).normal(2.0, 3.0, 4000)
    mean, lo, hi = bootstrap_ci(s, 2000, 0)
    half = 1.96 * s.std(ddof=1) / np.sqrt(s.size)
    assert mean == pytest.approx(s.mean()) and lo < mean < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert np.isnan(bootstrap_ci(np.array([np.nan]), 10, 0)[0])


def test_lrpjax_exports_evaluate_dataset():
    assert lrpjax.evaluate_dataset is evaluate_dataset
