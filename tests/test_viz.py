"""lrpjax.viz (HTML heatmaps, matplotlib plots) and lrpjax.report / ``lrpjax report`` (no browser needed).

The HTML is checked by parsing it (html.parser): no scripts, no external URLs, every value present in
the hover titles, tokens escaped. The headless-browser check is ``scripts/check_html.py`` (not a test:
CI has no browser).
"""
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

from conftest import ROOT
from lrpjax import cli, report, viz


class Page(HTMLParser):
    """Every start tag with its attributes, the text, and the text of each titled span."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.tags, self.data, self.spans, self._span = [], [], [], None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "span" and "title" in a and "data-value" in a:
            self._span = [a, ""]

    def handle_data(self, data):
        self.data.append(data)
        if self._span is not None:
            self._span[1] += data

    def handle_endtag(self, tag):
        if tag == "span" and self._span is not None:
            self.spans.append(tuple(self._span))
            self._span = None

    def text(self):
        return "".join(self.data)


def assert_self_contained(doc: str):
    p = Page(doc)
    names = [t for t, _ in p.tags]
    assert "script" not in names and "link" not in names and "iframe" not in names
    assert "img" not in names and "object" not in names
    for tag, a in p.tags:
        for k, v in a.items():
            assert not k.startswith("on"), (tag, k)            # no event handlers
            assert k not in ("src", "href") or not v or v.startswith("#"), (tag, k, v)
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import|url\(", doc, re.I)
    return p


TOKENS = ["<script>alert(1)</script>", "&", "Tom & Jerry", "a\"b'c", "good", " ", "", "end."]
REL = [0.5, -1.0, 2.0, 0.0, -0.25, 0.1, float("nan"), 1e-7]


def test_heatmap_document_fragment_escaping_values():
    h = viz.heatmap_html(TOKENS, REL, title="one <b>sentence</b> & more")
    doc = str(h)
    assert doc.startswith("<!DOCTYPE html>") and "<meta charset=\"utf-8\">" in doc
    frag = h._repr_html_()
    assert "<html" not in frag and "<body" not in frag and frag in doc
    p = assert_self_contained(doc)
    assert "<script>" not in doc and "<b>sentence" not in doc               # escaped
    assert [s for _, s in p.spans] == ["<script>alert(1)</script>", "&", "Tom & Jerry", "a\"b'c", "good",
                                       "\u2423", "\u2205", "end."]
    for (a, _), v in zip(p.spans, REL):
        if np.isnan(v):
            assert a["title"].endswith(": nan") and a["style"].startswith("background: #c8c8c8")
        else:
            assert float(a["data-value"]) == v
            assert a["title"].endswith(": " + viz.format_value(v)) and float(a["title"].rsplit(": ", 1)[1]) == \
                pytest.approx(v, rel=1e-3)
    assert p.spans[0][0]["title"].startswith("'<script>alert(1)</script>' (step 0)")
    # colours: white at 0, red at +vmax (vmax = 2 by default), blue for negatives, colour bar shown
    styles = [a["style"] for a, _ in p.spans]
    assert "background: #ffffff" in styles[3] and "background: #b2182b" in styles[2]
    assert "background: #ffffff" not in styles[1] and viz.relevance_color(-1.0, 2.0) in styles[1]
    assert "linear-gradient(to right, #2166ac 0%" in doc and "#b2182b 100%" in doc
    assert ">-2<" in doc and ">+2<" in doc and "one <b>sentence</b> & more" in p.text()
    assert "<title>one &lt;b&gt;sentence&lt;/b&gt; &amp; more</title>" in doc


def test_colors_and_scale():
    assert viz.relevance_color(0.0, 1.0) == "#ffffff"
    assert viz.relevance_color(1.0, 1.0) == viz.relevance_color(5.0, 1.0) == "#b2182b"
    assert viz.relevance_color(-1.0, 1.0) == viz.relevance_color(-7.0, 1.0) == "#2166ac"
    half_pos, half_neg = viz.relevance_color(0.5, 1.0), viz.relevance_color(-0.5, 1.0)
    assert half_pos[1:3] == "ff" or int(half_pos[1:3], 16) > int(half_pos[3:5], 16)   # reddish
    assert int(half_neg[5:7], 16) > int(half_neg[1:3], 16)                           # bluish
    # vmax fixes the scale; a value beyond it is drawn at full colour
    h = viz.heatmap_html(["a", "b"], [0.5, 3.0], vmax=1.0)
    styles = [a["style"] for a, _ in Page(str(h)).spans]
    assert viz.relevance_color(0.5, 1.0) in styles[0] and "#b2182b" in styles[1]
    with pytest.raises(ValueError, match="tokens but"):
        viz.heatmap_html(["a"], [1.0, 2.0])
    with pytest.raises(ValueError, match="one string"):
        viz.heatmap_html("ab", [1.0, 2.0])


def test_heatmap_steps_list_rows_save_and_notebook(tmp_path):
    # numeric series without tokens: step indices; (T, F) relevance is summed over features
    R2 = np.arange(12, dtype=np.float32).reshape(6, 2) - 5
    p = Page(str(viz.heatmap_html(None, R2)))
    assert [s for _, s in p.spans] == [str(t) for t in range(6)]
    assert [float(a["data-value"]) for a, _ in p.spans] == list(R2.sum(1).astype(float))
    assert p.spans[2][0]["title"] == "step 2: " + viz.format_value(float(R2[2].sum()))
    # a list: tuples with and without captions, and rows of a job's output (dicts)
    rows = [{"index": 7, "id": "x7", "label": 1, "target": 2, "score": 0.75, "relevance": [0.1, -0.2],
             "tokens": ["<i>", "ok"]}]
    h = viz.heatmaps_html([(["a", "b", "c"], [1.0, -4.0, 0.5], "first & best"), (None, [0.2, 0.3])] + rows,
                          title="several")
    doc = str(h)
    p = assert_self_contained(doc)
    assert len(p.spans) == 3 + 2 + 2
    assert "first & best" in p.text() and "index 7 \u00b7 id x7 \u00b7 label 1 \u00b7 target 2 \u00b7 score +0.75" \
        in p.text()
    assert "#2166ac" in p.spans[1][0]["style"]          # -4 is the shared vmax: full blue
    assert ">-4<" in doc and ">+4<" in doc and "&lt;i&gt;" in doc
    path = h.save(tmp_path / "h.html")
    assert path.read_text(encoding="utf-8") == doc
    assert (h + viz.heatmap_html(["z"], [1.0]))._repr_html_().count("lrpjax-colorbar") == 2
    assert "no sequences" in str(viz.heatmaps_html([]))
    with pytest.raises(ValueError, match="relevance"):
        viz.heatmaps_html([{"tokens": ["a"]}])


def test_core_import_does_not_import_matplotlib():
    code = ("import sys, lrpjax, lrpjax.viz, lrpjax.report, lrpjax.cli; lrpjax.cli.build_parser(); "
            "lrpjax.viz.heatmap_html(['a'], [1.0]); assert 'matplotlib' not in sys.modules, 'imported'")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# matplotlib

@pytest.fixture(scope="module")
def mpl():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    return matplotlib


def test_plot_time_series(mpl, tmp_path):
    from matplotlib.image import AxesImage
    T, F = 25, 3
    rng = np.random.default_rng(0)
    x, R = rng.normal(size=(T, F)), rng.normal(size=(T, F))
    fig = viz.plot_time_series(x, R, feature_names=["a", "b", "c"], title="one series")
    ax_sig, ax_bar, ax_img = fig.axes[:3]
    assert len(fig.axes) == 4                              # + the colour bar
    assert len(ax_sig.get_lines()) == F
    assert [t.get_text() for t in ax_sig.get_legend().get_texts()] == ["a", "b", "c"]
    np.testing.assert_allclose(ax_sig.get_lines()[1].get_ydata(), x[:, 1])
    bars = ax_bar.containers[0]
    assert len(bars) == T
    np.testing.assert_allclose([b.get_height() for b in bars], R.sum(1))
    pos = [b.get_facecolor() for b, v in zip(bars, R.sum(1)) if v > 0]
    assert all(c == pos[0] for c in pos) and pos[0][0] > pos[0][2]            # red for positives
    img = [a for a in ax_img.get_children() if isinstance(a, AxesImage)][0]
    assert img.get_array().shape == (F, T)
    lo, hi = img.get_clim()
    assert lo == -hi == -np.abs(R).max()                      # symmetric, centred on 0
    assert [t.get_text() for t in ax_img.get_yticklabels()] == ["a", "b", "c"]
    assert fig._suptitle.get_text() == "one series"
    fig.savefig(tmp_path / "ts.png", dpi=60)
    assert (tmp_path / "ts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # (T,) relevance, 1-D signal, into the caller's axes
    from matplotlib.figure import Figure
    own = Figure()
    axes = own.subplots(2, 1)
    fig2 = viz.plot_time_series(x[:, 0], R[:, 0], ax=axes)
    assert fig2 is own and len(own.axes) == 2 and len(axes[1].containers[0]) == T
    with pytest.raises(ValueError, match="sequence of 2 Axes"):
        viz.plot_time_series(x[:, 0], R[:, 0], ax=axes[0])
    with pytest.raises(ValueError, match="relevance must be"):
        viz.plot_time_series(x, R[:-1])


def test_plot_curves(mpl, tmp_path):
    ks = np.linspace(0, 1, 11)
    curves = {"lrp": (ks, 1 - ks), "random": (ks, np.tile(1 - 0.5 * ks, (4, 1)) + np.arange(4)[:, None] * 0.01)}
    fig = viz.plot_curves(curves, title="deletion")
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == 2
    np.testing.assert_allclose(lines[0].get_ydata(), 1 - ks)
    np.testing.assert_allclose(lines[1].get_ydata(), 1 - 0.5 * ks + 0.015)     # the mean of 4
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["lrp (AUC 0.5)", "random (AUC 0.765)"]
    assert len(ax.collections) == 1                             # the standard-error band
    assert ax.get_title() == "deletion" and ax.get_xlabel() == "fraction of steps removed"
    fig.savefig(tmp_path / "c.png", dpi=60)
    assert (tmp_path / "c.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="ks for values"):
        viz.plot_curves({"x": ([0, 1], [1, 2, 3])})


# ---------------------------------------------------------------------------------------------
# report

def write_job(out, rows, errors=(), manifest=None, full=False):
    """A job directory as lrpjax.jobs writes it (part files, errors.parquet, manifest.json)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    out.mkdir(parents=True, exist_ok=True)
    half = (len(rows) + 1) // 2
    for k, chunk in enumerate((rows[:half], rows[half:])):
        cols = {"index": pa.array([r["index"] for r in chunk], pa.int64()),
                "id": pa.array([str(r["index"]) for r in chunk], pa.string()),
                "label": pa.array([r.get("label") for r in chunk], pa.int64()),
                "length": pa.array([len(r["relevance"]) for r in chunk], pa.int32()),
                "target": pa.array([r["target"] for r in chunk], pa.int32()),
                "score": pa.array([r["score"] for r in chunk], pa.float32()),
                "relevance": pa.array([r["relevance"] for r in chunk], pa.list_(pa.float32()))}
        if full:
            cols["relevance_full"] = pa.array([r["full"] for r in chunk], pa.list_(pa.list_(pa.float32())))
        if "tokens" in rows[0]:
            cols["tokens"] = pa.array([r["tokens"] for r in chunk], pa.list_(pa.string()))
        pq.write_table(pa.table(cols), out / f"part-{k:05d}.parquet")
    pq.write_table(pa.table({"index": pa.array([e[0] for e in errors], pa.int64()),
                             "id": pa.array([str(e[0]) for e in errors], pa.string()),
                             "reason": pa.array([e[1] for e in errors], pa.string())}), out / "errors.parquet")
    if manifest is not None:
        (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


MANIFEST = {"format": "lrpjax-attributions", "status": "complete", "model_name": "toy <model> & co",
            "job": {"model": {"spec": "name=toy", "features": 2},
                    "options": {"method": "lrp", "eps": 0.0123, "bias_factor": 1.0, "gate": "half",
                                "strict": True, "target": "pred", "full": True, "max_length": 9,
                                "shard_size": 4},
                    "input": {"kind": "jsonl", "size": 1234}},
            "versions": {"lrpjax": "0.1.0", "jax": "9.9.9-test", "pyarrow": "1.2.3"},
            "counts": {"examples": 11, "explained": 8, "errors": 3}, "probe": {"n_classes": 3}}


@pytest.fixture()
def toy_job(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(8):
        L = 2 + i % 4
        r = rng.normal(size=L).round(3) * (i + 1)
        toks = [f"w{i}_{t}" for t in range(L)]
        toks[0] = "<script>x</script>" if i == 3 else ("A&B" if i == 5 else toks[0])
        rows.append({"index": i + (i > 4), "label": i % 3, "target": (i + 1) % 3, "score": float(r.sum() + 0.1),
                     "relevance": r.tolist(), "tokens": toks, "full": np.stack([r / 2, r / 2], 1).tolist()})
    errors = [(5, "too long: length 12 > max_length 9"), (9, "too long: length 30 > max_length 9"),
              (10, "unknown token(s) at position(s) [0] and the model spec has no unk_id")]
    write_job(tmp_path / "job", rows, errors, MANIFEST, full=True)
    return tmp_path / "job", rows


def test_position_profile_exact():
    # length 2, all |R| on the first step: the first half of the axis holds it, evenly
    vals, offs = np.array([3.0, 0.0]), np.array([0, 2])
    p = report.position_profile(vals, offs, bins=4)
    np.testing.assert_allclose(p["abs"], [0.5, 0.5, 0, 0])
    # uniform relevance of any length is flat; signed shares keep the sign; all-zero rows are skipped
    vals = np.concatenate([np.ones(3), -np.ones(7), np.zeros(4)])
    offs = np.array([0, 3, 10, 14])
    p = report.position_profile(vals, offs, bins=5)
    np.testing.assert_allclose(p["abs"], np.full(5, 0.2))
    np.testing.assert_allclose(p["signed"], np.zeros(5), atol=1e-12)   # +1 and -1 examples cancel
    assert p["n"] == 2
    rng = np.random.default_rng(0)
    L = rng.integers(1, 40, 300)
    vals = rng.normal(size=L.sum())
    p = report.position_profile(vals, np.concatenate([[0], np.cumsum(L)]), bins=20)
    assert p["abs"].sum() == pytest.approx(1.0) and (p["abs"] >= 0).all()


def test_report_contents(toy_job):
    out, rows = toy_job
    path = report.write_report(out, top=4)             # 4 highest + 4 lowest: all 8 examples
    assert path == out / "report.html"
    doc = path.read_text(encoding="utf-8")
    p = assert_self_contained(doc)
    text = p.text()
    assert "<script>x</script>" not in doc and "&lt;script&gt;x&lt;/script&gt;" in doc and "A&amp;B" in doc
    assert "<title>lrpjax report: toy &lt;model&gt; &amp; co</title>" in doc
    for s in ("examples", "explained", "errors", "lrp", "half", "0.0123", "9.9.9-test", "name=toy", "jsonl"):
        assert s in text, s
    # error reasons, grouped by kind (numbers replaced), with an example
    assert "too long: length N > max_length N" in text and "unknown token(s) at position(s) […]" in text
    assert re.search(r"2\s*too long", text)
    # the statistics agree with the data
    rsum = np.array([np.float32(r["relevance"]).sum() for r in rows])
    assert f"{np.percentile([len(r['relevance']) for r in rows], 50):.4g}" in text
    # top 3 by total relevance, most positive and most negative, in order
    order = np.argsort(rsum)
    caps = [s for s in p.data if s.startswith("#")]
    assert len(caps) == 8
    want = [rows[i]["index"] for i in order[::-1][:4]] + [rows[i]["index"] for i in order[:4]]
    assert [int(re.search(r"index (\d+)", c).group(1)) for c in caps] == want
    # every shown step's relevance is in the page, and the tokens are shown
    vals = [float(a["data-value"]) for a, _ in p.spans]
    assert len(vals) == sum(len(r["relevance"]) for r in rows)
    for r in rows:
        for v, t in zip(r["relevance"], r["tokens"]):
            assert float(np.float32(v)) in vals and t in [s for _, s in p.spans]
    # positions (two inline SVG charts) and the per-feature table (relevance_full)
    assert [t for t, _ in p.tags].count("svg") == 2 and "Relevance per input feature" in text
    assert "50.0%" in text                                     # two equal features


def test_report_cli_ranking_output_and_errors(toy_job, tmp_path, capsys):
    out, rows = toy_job
    dest = tmp_path / "r.html"
    assert cli.main(["report", str(out), "--output", str(dest), "--top", "2", "--by", "score"]) == 0
    assert str(dest) in capsys.readouterr().out
    p = Page(dest.read_text(encoding="utf-8"))
    caps = [s for s in p.data if s.startswith("#")]
    best = max(rows, key=lambda r: r["score"])["index"]
    assert len(caps) == 4 and f"index {best} " in caps[0] and "highest score" in p.text()
    # an unfinished job is flagged; a directory without part files is a clean exit-2 error
    (out / "manifest.json").write_text(json.dumps({**MANIFEST, "status": "running"}), encoding="utf-8")
    assert "not complete" in report.report_html(out, top=1)
    (out / "manifest.json").unlink()
    assert "No readable" in report.report_html(out, top=1)
    assert cli.main(["report", str(tmp_path / "nowhere")]) == 2
    assert "lrpjax report: error:" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", str(tmp_path / "empty")]) == 2
    assert "no part-*.parquet" in capsys.readouterr().err


def test_report_of_a_real_text_job(tmp_path):
    import jobs_models as m
    from lrpjax.jobs import attribute_dataset, read_results
    attribute_dataset(m.text_spec(unk="none"), m.SENTENCES * 2 + ["zebra zebra"], tmp_path / "t",
                      shard_size=10, progress=False)
    doc = report.write_report(tmp_path / "t", top=4).read_text(encoding="utf-8")
    p = assert_self_contained(doc)
    table = read_results(tmp_path / "t")
    assert f"{table.num_rows:,}" in p.text() and "unknown token(s)" in p.text()
    words = {s for _, s in p.spans}
    assert {"movie", "good"} <= words and "zebra" not in words
    assert len([s for s in p.data if s.startswith("#")]) == 8
