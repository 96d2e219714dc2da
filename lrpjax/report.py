"""``lrpjax report OUT_DIR``: a job's output (Parquet part files + manifest.json) as one HTML page.

>>> from lrpjax import report
>>> report.write_report("attributions/")                 # -> attributions/report.html  # doctest: +SKIP

The page is a single self-contained file (inline CSS and SVG, no scripts, no external URLs) with:
the counts (examples, explained, errors and their most common reasons), the method, rule options and
model from the manifest, summary statistics of the scores and relevance, the examples with the most
positive and the most negative total relevance (or score) as heatmaps (tokens for text, step indices
otherwise), the distribution of relevance over relative positions, per-feature shares (when the job
wrote ``relevance_full``) and the library versions.
"""
from __future__ import annotations

import datetime as _dt
import html
import json
import os
import platform
import re
from collections import Counter
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pyarrow as pa

from lrpjax import viz
from lrpjax.jobs.output import read_errors, read_results
from lrpjax.jobs.spec import ERRORS, JobError, package_version

REPORT_NAME = "report.html"
POSITION_BINS = 20
MAX_STEPS_SHOWN = 300       # longer examples: a window of this many steps around the largest |R|
_CHUNK = 65536              # rows per block when profiling positions (bounded memory)

_CSS = """
body { margin: 20px 28px 40px 28px; font-family: %(font)s; color: #222; background: #fff;
       max-width: 1180px; }
h1 { font-size: 22px; margin: 0 0 4px 0; }
h2 { font-size: 17px; margin: 26px 0 8px 0; padding-bottom: 3px; border-bottom: 1px solid #ddd; }
h3 { font-size: 14px; margin: 14px 0 4px 0; }
p, li { font-size: 14px; line-height: 1.45; }
.sub { color: #666; font-size: 13px; }
.note { color: #555; font-size: 13px; margin: 4px 0 8px 0; }
.warn { background: #fff4e5; border: 1px solid #f0b860; padding: 8px 12px; border-radius: 4px;
        font-size: 14px; margin: 10px 0; }
table { border-collapse: collapse; font-size: 13px; margin: 4px 0 10px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; font-weight: 600; }
td.num { text-align: right; font-family: %(mono)s; white-space: nowrap; }
td.mono { font-family: %(mono)s; word-break: break-all; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 8px 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 120px; }
.card .v { font-size: 20px; font-weight: 600; font-family: %(mono)s; }
.card .k { font-size: 12px; color: #666; }
.cols { display: flex; flex-wrap: wrap; gap: 28px; align-items: flex-start; }
svg text { font-family: %(font)s; }
footer { margin-top: 30px; color: #777; font-size: 12px; }
""" % {"font": viz.FONT, "mono": viz.MONO}


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _num(v, digits: int = 4) -> str:
    if v is None:
        return "&#8212;"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    v = float(v)
    if not np.isfinite(v):
        return _e(str(v))
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def _kv_table(rows) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td class=\"mono\">{v}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _val(v) -> str:
    if v is None:
        return "<span class=\"sub\">none</span>"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return _e(repr(v))
    if isinstance(v, (list, tuple)):
        return _e(", ".join(map(str, v)))
    if isinstance(v, dict):
        return _e(json.dumps(v, sort_keys=True))
    return _e(v)


# ---------------------------------------------------------------------------------------------
# reading

def _read_manifest(out: Path) -> Optional[dict]:
    p = out / "manifest.json"
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _flat_list(col):
    """A list<float> column -> (values float64 (n,), offsets int64 (N+1,))."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    offsets = arr.offsets.to_numpy().astype(np.int64)
    values = arr.values.to_numpy(zero_copy_only=False).astype(np.float64)
    if offsets[0] != 0 or offsets[-1] != len(values):      # a slice: re-base
        values = values[offsets[0]:offsets[-1]]
        offsets = offsets - offsets[0]
    return values, offsets


def _segment_sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    c = np.concatenate([[0.0], np.cumsum(values)])
    return c[offsets[1:]] - c[offsets[:-1]]


def _segment_max(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    n = len(offsets) - 1
    out = np.full(n, np.nan)
    nonempty = offsets[1:] > offsets[:-1]
    if nonempty.any() and len(values):
        out[nonempty] = np.maximum.reduceat(values, offsets[:-1][nonempty])
    return out


def position_profile(values: np.ndarray, offsets: np.ndarray, bins: int = POSITION_BINS) -> dict:
    """Where relevance lies along the sequence, on relative positions ``[0, 1]`` in ``bins`` bins.

    Each example's steps are normalised by its ``sum |R|``; step ``t`` of a length-``L`` example covers
    ``[t/L, (t+1)/L)`` and its share is spread evenly over that interval (so short examples do not
    leave empty bins). Returns ``abs`` (mean share of ``|R|`` per bin, sums to 1), ``signed`` (mean
    ``R / sum |R|`` per bin), ``n`` (examples with non-zero relevance) and the bin ``edges``.
    """
    lengths = np.diff(offsets)
    edges = np.linspace(0.0, 1.0, bins + 1)
    acc_abs, acc_sgn, n = np.zeros(bins), np.zeros(bins), 0
    finite = np.where(np.isfinite(values), values, 0.0)
    tot = _segment_sums(np.abs(finite), offsets)
    for lo in range(0, len(lengths), _CHUNK):
        hi = min(lo + _CHUNK, len(lengths))
        Lc = lengths[lo:hi]
        keep = (Lc > 0) & (tot[lo:hi] > 0)
        if not keep.any():
            continue
        ok = np.arange(lo, hi)[keep]
        seg = finite[offsets[lo]:offsets[hi]][np.repeat(keep, Lc)]
        L = lengths[ok]
        w_sgn = seg * np.repeat(1.0 / tot[ok], L)
        new_starts = np.concatenate([[0], np.cumsum(L)[:-1]])
        pos = edges[None, :] * L[:, None]
        k = np.minimum(np.floor(pos).astype(np.int64), (L - 1)[:, None])
        gi = new_starts[:, None] + k
        for w, acc in ((np.abs(w_sgn), acc_abs), (w_sgn, acc_sgn)):
            G = np.concatenate([[0.0], np.cumsum(w)])
            F = G[gi] - G[new_starts][:, None] + w[gi] * (pos - k)
            acc += np.diff(F, axis=1).sum(axis=0)
        n += len(ok)
    if n:
        acc_abs, acc_sgn = acc_abs / n, acc_sgn / n
    return {"abs": acc_abs, "signed": acc_sgn, "n": n, "edges": edges}


def _reason_kind(reason: str) -> str:
    kind = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason)
    kind = re.sub(r"\[[^\]]*\]|\((?=[^)]*\d)[^)]*\)", lambda m: m.group(0)[0] + "…" + m.group(0)[-1], kind)
    return re.sub(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?", "N", kind)


# ---------------------------------------------------------------------------------------------
# pieces of the page

def _svg_bars(values: np.ndarray, *, signed: bool, ylabel: str, title: str, reference: Optional[float] = None,
              width: int = 560, height: int = 210) -> str:
    """A bar chart as inline SVG (bars have <title> tooltips)."""
    B = len(values)
    ml, mr, mt, mb = 58, 12, 24, 40
    pw, ph = width - ml - mr, height - mt - mb
    vals = np.nan_to_num(np.asarray(values, dtype=np.float64))
    if signed:
        m = (float(np.abs(vals).max()) if B else 0.0) or 1.0
        ticks = (-m, 0.0, m)
        lo, hi = -1.08 * m, 1.08 * m
    else:
        m = max(float(vals.max()) if B else 0.0, reference or 0.0) or 1.0
        ticks = (0.0, m / 2, m)
        lo, hi = 0.0, 1.08 * m

    def y(v):
        return mt + ph * (hi - v) / (hi - lo)

    bw = pw / max(B, 1)
    parts = [f"<svg width=\"{width}\" height=\"{height}\" "
             f"viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{_e(title)}\">",
             f"<text x=\"{ml}\" y=\"15\" font-size=\"13\" font-weight=\"600\" fill=\"#222\">{_e(title)}</text>"]
    for v in ticks:
        yy = y(v)
        parts.append(f"<line x1=\"{ml}\" x2=\"{ml + pw}\" y1=\"{yy:.1f}\" y2=\"{yy:.1f}\" stroke=\"#eee\"/>")
        parts.append(f"<text x=\"{ml - 5}\" y=\"{yy + 4:.1f}\" font-size=\"10\" text-anchor=\"end\" "
                     f"fill=\"#555\">{_e(_num(v, 3))}</text>")
    pos, neg = "#%02x%02x%02x" % viz.POSITIVE_RGB, "#%02x%02x%02x" % viz.NEGATIVE_RGB
    for i, v in enumerate(vals):
        y0, y1 = sorted((y(0.0), y(v)))
        color = (pos if v >= 0 else neg) if signed else "#5b7fa6"
        a, b = i / B, (i + 1) / B
        parts.append(f"<rect x=\"{ml + i * bw + 0.5:.1f}\" y=\"{y0:.1f}\" width=\"{max(bw - 1, 0.5):.1f}\" "
                     f"height=\"{max(y1 - y0, 0.0):.1f}\" fill=\"{color}\"><title>relative position "
                     f"{a:.2f}-{b:.2f}: {_e(_num(v, 4))}</title></rect>")
    parts.append(f"<line x1=\"{ml}\" x2=\"{ml + pw}\" y1=\"{y(0.0):.1f}\" y2=\"{y(0.0):.1f}\" "
                 f"stroke=\"#444\" stroke-width=\"1\"/>")
    if reference is not None:
        parts.append(f"<line x1=\"{ml}\" x2=\"{ml + pw}\" y1=\"{y(reference):.1f}\" y2=\"{y(reference):.1f}\" "
                     f"stroke=\"#d08000\" stroke-dasharray=\"5,4\" stroke-width=\"1.3\"><title>uniform: "
                     f"{_num(reference, 3)}</title></line>")
    for frac, lab in ((0.0, "start"), (0.25, "0.25"), (0.5, "0.5"), (0.75, "0.75"), (1.0, "end")):
        xx = ml + frac * pw
        parts.append(f"<line x1=\"{xx:.1f}\" x2=\"{xx:.1f}\" y1=\"{mt + ph}\" y2=\"{mt + ph + 4}\" stroke=\"#444\"/>")
        parts.append(f"<text x=\"{xx:.1f}\" y=\"{mt + ph + 16}\" font-size=\"10\" text-anchor=\"middle\" "
                     f"fill=\"#555\">{lab}</text>")
    parts.append(f"<text x=\"{ml + pw / 2:.1f}\" y=\"{height - 4}\" font-size=\"11\" text-anchor=\"middle\" "
                 f"fill=\"#333\">relative position in the sequence</text>")
    parts.append(f"<text transform=\"translate(13,{mt + ph / 2:.1f}) rotate(-90)\" font-size=\"11\" "
                 f"text-anchor=\"middle\" fill=\"#333\">{_e(ylabel)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _stats_table(rows) -> str:
    head = ("<tr><th>per example</th><th>mean</th><th>std</th><th>min</th><th>5 %</th><th>median</th>"
            "<th>95 %</th><th>max</th></tr>")
    body = []
    for name, v in rows:
        v = np.asarray(v, dtype=np.float64)
        v = v[np.isfinite(v)]
        if not v.size:
            body.append(f"<tr><th>{_e(name)}</th>" + "<td class=\"num\">&#8212;</td>" * 7 + "</tr>")
            continue
        q = np.percentile(v, [0, 5, 50, 95, 100])
        cells = [v.mean(), v.std(), q[0], q[1], q[2], q[3], q[4]]
        body.append(f"<tr><th>{_e(name)}</th>" + "".join(f"<td class=\"num\">{_num(c)}</td>" for c in cells)
                    + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _examples_block(table, rows_idx, rsum, score, values, offsets, has_tokens: bool, heading: str,
                    note: str) -> str:
    if not len(rows_idx):
        return f"<h3>{_e(heading)}</h3><p class=\"sub\">no examples</p>"
    cols = [c for c in ("index", "id", "label", "length", "target") if c in table.column_names]
    meta = table.select(cols).take(np.asarray(rows_idx)).to_pylist()
    tok_rows = table.column("tokens").take(np.asarray(rows_idx)).to_pylist() if has_tokens else None
    seqs, shown = [], []
    for rank, (i, m) in enumerate(zip(rows_idx, meta), start=1):
        r = values[offsets[i]:offsets[i + 1]]
        toks = tok_rows[rank - 1] if has_tokens else None
        start = 0
        if len(r) > MAX_STEPS_SHOWN:
            c = int(np.nanargmax(np.abs(r)))
            start = int(np.clip(c - MAX_STEPS_SHOWN // 2, 0, len(r) - MAX_STEPS_SHOWN))
            r = r[start:start + MAX_STEPS_SHOWN]
            toks = toks[start:start + MAX_STEPS_SHOWN] if toks is not None else None
        parts = [f"#{rank}"] + [f"{k} {m[k]}" for k in ("index", "id", "label", "target") if m.get(k) is not None]
        parts += [f"score {viz.format_value(float(score[i]))}", f"\u03a3R {viz.format_value(float(rsum[i]))}",
                  f"length {m.get('length', len(r))}"]
        if start or len(r) < (offsets[i + 1] - offsets[i]):
            parts.append(f"showing steps {start}..{start + len(r) - 1}")
        shown.append(r)
        seqs.append((toks, r, " \u00b7 ".join(parts), start))
    vmax = viz.nice_vmax(shown)
    inner = viz.colorbar_html(vmax) + "".join(
        viz.sequence_html(toks, r, vmax, cap, steps=toks is None, offset=start) for toks, r, cap, start in seqs)
    return (f"<h3>{_e(heading)}</h3><p class=\"note\">{note}</p>"
            f"<div class=\"lrpjax-heatmap\">{inner}</div>")


# ---------------------------------------------------------------------------------------------
# the page

class _Job:
    """What the page shows, read once: the results table, its relevance as flat arrays and the
    per-example sums, the errors and the manifest."""

    def __init__(self, out: Path):
        self.out = out
        self.manifest = _read_manifest(out)
        self.table = table = read_results(out)
        self.errors = read_errors(out) if (out / ERRORS).exists() else None
        self.n = table.num_rows
        self.values, self.offsets = _flat_list(table.column("relevance"))
        self.score = table.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
        self.lengths = np.diff(self.offsets)
        self.finite = np.isfinite(self.values)
        self.v0 = np.where(self.finite, self.values, 0.0)
        self.rsum = _segment_sums(self.v0, self.offsets)
        self.rabs = _segment_sums(np.abs(self.v0), self.offsets)
        self.rmax = _segment_max(np.abs(self.v0), self.offsets)
        self.has_tokens = "tokens" in table.column_names
        m = self.manifest or {}
        self.job = m.get("job", {})
        self.opts = self.job.get("options", {})
        self.counts = m.get("counts", {})
        self.n_err = self.errors.num_rows if self.errors is not None else self.counts.get("errors", 0)
        self.model_name = m.get("model_name") or self.job.get("model", {}).get("spec")


def report_html(out_dir: Union[str, os.PathLike], *, top: int = 10, by: str = "relevance",
                title: Optional[str] = None) -> str:
    """The report of a job's output directory as a complete HTML document (a string): one section per
    helper below, in page order.

    Args:
      out_dir: the job's output directory (``part-*.parquet``, ``manifest.json``, ``errors.parquet``).
      top: how many examples with the most positive and the most negative total to show.
      by: rank them by total ``"relevance"`` (the sum over steps, default) or by ``"score"``.
      title: the page's title (default from the model name).
    """
    if by not in ("relevance", "score"):
        raise JobError(f"by must be 'relevance' or 'score', got {by!r}")
    if top < 0:
        raise JobError(f"top must be >= 0, got {top}")
    out = Path(out_dir)
    if not out.is_dir():
        raise JobError(f"{out_dir} is not a directory (give a job's output directory, the --out of "
                       f"lrpjax attribute).")
    if (out / "summary.json").exists() and not list(out.glob("part-*.parquet")):
        return _page(title or f"lrpjax evaluation: {out.name}", [_evaluation_html(out)])
    job = _Job(out)
    title = title or f"lrpjax report: {job.model_name or out.name}"
    s = [_header_html(job, title), _summary_html(job), _statistics_html(job), _positions_html(job),
         _examples_html(job, top, by), _metadata_html(job), _versions_html(job)]
    return _page(title, s)


def _page(title: str, sections: list) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(sections) + "\n</body>\n</html>\n")


def _evaluation_html(out: Path) -> str:
    """An ``lrpjax evaluate`` directory: the summary table (mean and 95 % bootstrap interval per
    method and metric) and the settings; each method's attribution job has its own report."""
    try:
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise JobError(f"{out / 'summary.json'} is unreadable ({e}); re-run lrpjax evaluate.") from e
    rows = "".join(f"<tr><td>{_e(r['metric'])}</td><td>{_e(r['method'])}</td><td>{r['n']}</td>"
                   f"<td>{_num(r['mean'])}</td><td>[{_num(r['low'])}, {_num(r['high'])}]</td>"
                   f"<td>{'higher' if r['higher_is_better'] else 'lower'}</td></tr>"
                   for r in summary.get("rows", []))
    settings = summary.get("settings", {})
    return (f"<h1>{_e(out.name)}: evaluation of explanations</h1>\n<h2>Scores</h2>\n<table><tr><th>metric"
            f"</th><th>method</th><th>n</th><th>mean</th><th>95% CI (bootstrap)</th><th>better</th></tr>"
            f"{rows}</table>\n<h2>Settings</h2>\n{_kv_table(sorted(settings.items()))}\n"
            f"<p class=\"sub\">Per-method attributions: <code>lrpjax report {_e(str(out))}/attributions/"
            f"METHOD</code>.</p>")


def _header_html(job: _Job, title: str) -> str:
    s = [f"<h1>{_e(title)}</h1>",
         f"<div class=\"sub\">job output <code>{_e(job.out.resolve())}</code> &#183; report generated "
         f"{_e(_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat())}</div>"]
    manifest = job.manifest
    if manifest is None:
        s.append("<div class=\"warn\">No readable <code>manifest.json</code> in this directory: method, "
                 "options and versions of the job are unknown.</div>")
    elif manifest.get("status") != "complete":
        s.append(f"<div class=\"warn\">The job's status is <b>{_e(manifest.get('status'))}</b>, not "
                 f"complete: this report covers the part files written so far (re-run the same "
                 f"<code>lrpjax attribute</code> command to finish it).</div>")
    return "\n".join(s)


def _summary_html(job: _Job) -> str:
    """The counts, and the most common error reasons."""
    n, n_err = job.n, job.n_err
    n_examples = job.counts.get("examples", n + n_err)
    cards = [("examples", n_examples), ("explained", n), ("errors", n_err),
             ("method", job.opts.get("method", "?")), ("gate rule", job.opts.get("gate", "?"))]
    s = ["<h2 id=\"summary\">Summary</h2><div class=\"cards\">" + "".join(
        f"<div class=\"card\"><div class=\"v\">{_num(v) if isinstance(v, (int, np.integer)) else _e(v)}</div>"
        f"<div class=\"k\">{_e(k)}</div></div>" for k, v in cards) + "</div>"]
    if n_err and job.errors is not None:
        reasons = job.errors.column("reason").to_pylist()
        kinds = Counter(_reason_kind(r or "") for r in reasons)
        example = {}
        for r in reasons:
            example.setdefault(_reason_kind(r or ""), r)
        rows = "".join(f"<tr><td class=\"num\">{c:,}</td><td>{_e(k)}</td><td class=\"mono\">{_e(example[k])}"
                       f"</td></tr>" for k, c in kinds.most_common(8))
        more = f"<p class=\"note\">{len(kinds) - 8} more kinds of reason.</p>" if len(kinds) > 8 else ""
        s.append(f"<h3>Errors: top reasons</h3><table><tr><th>count</th><th>reason</th><th>e.g.</th></tr>"
                 f"{rows}</table>{more}<p class=\"note\">All of them: <code>{_e(job.out / ERRORS)}</code> "
                 f"(index, id, reason).</p>")
    return "\n".join(s)


def _statistics_html(job: _Job) -> str:
    """Per-example statistics of scores and relevance, and the explained classes."""
    n, score, rsum = job.n, job.score, job.rsum
    s = ["<h2 id=\"statistics\">Scores and relevance</h2>", _stats_table([
        ("length (steps)", job.lengths), ("score (target logit)", score),
        ("\u03a3 relevance", rsum), ("\u03a3 |relevance|", job.rabs), ("max |relevance| of a step", job.rmax),
        ("score \u2212 \u03a3 relevance (absorbed)", score - rsum)])]
    extra = []
    if n:
        pos_share = float((job.v0 > 0).sum() / max(len(job.v0), 1))
        extra.append(f"{pos_share:.1%} of all steps have positive relevance")
        if np.any(np.abs(score) > 0):
            c = np.corrcoef(score, rsum)[0, 1] if n > 1 and score.std() > 0 and rsum.std() > 0 else np.nan
            if np.isfinite(c):
                extra.append(f"correlation of score and \u03a3 relevance: {c:.3f}")
    if (~job.finite).any():
        extra.append(f"<b>{int((~job.finite).sum()):,} non-finite relevance values</b> (counted as 0 here)")
    if extra:
        s.append("<p class=\"note\">" + "; ".join(extra) + ".</p>")
    if "target" in job.table.column_names and n:
        s.append(_targets_html(job))
    return "\n".join(s)


def _targets_html(job: _Job) -> str:
    """How often each class was explained, and how often it is the label."""
    table, n = job.table, job.n
    tg = Counter(table.column("target").to_pylist())
    tgt_rows = "".join(f"<tr><td class=\"num\">{k}</td><td class=\"num\">{c:,}</td>"
                       f"<td class=\"num\">{c / n:.1%}</td></tr>" for k, c in sorted(tg.items())[:30])
    more = f"<p class=\"note\">{len(tg) - 30} more classes.</p>" if len(tg) > 30 else ""
    acc = ""
    if "label" in table.column_names:
        lab = table.column("label").to_pylist()
        tgt = table.column("target").to_pylist()
        pairs = [(a, b) for a, b in zip(lab, tgt) if a is not None]
        if pairs:
            agree = sum(a == b for a, b in pairs) / len(pairs)
            what = "accuracy of the explained (predicted) class" if job.opts.get("target") == "pred" \
                else "explained class = label"
            acc = f"<p class=\"note\">{_e(what)}: {agree:.1%} of {len(pairs):,} labelled examples.</p>"
    return (f"<h3>Explained classes</h3><table><tr><th>target</th><th>examples</th><th>share</th></tr>"
            f"{tgt_rows}</table>{more}{acc}")


def _positions_html(job: _Job) -> str:
    """Relevance over relative positions, and per input feature (with ``relevance_full``)."""
    prof = position_profile(job.values, job.offsets)
    s = ["<h2 id=\"positions\">Relevance over positions</h2>",
         f"<p class=\"note\">Each example's relevance divided by its \u03a3|R|, on relative positions "
         f"(0 = first step, 1 = last; a step of a length-L example covers 1/L of the axis), averaged "
         f"over {prof['n']:,} examples with non-zero relevance, in {POSITION_BINS} bins. Evenly "
         f"spread relevance would give the dashed line.</p>",
         "<div class=\"cols\">" + _svg_bars(
             prof["abs"], signed=False, ylabel="share of |relevance|", reference=1.0 / POSITION_BINS,
             title="share of |relevance| by position (dashed: uniform)") + _svg_bars(
             prof["signed"], signed=True, ylabel="mean R / \u03a3|R|",
             title="signed relevance by position (red +, blue \u2212)") + "</div>"]
    if "relevance_full" in job.table.column_names and job.n:
        features = _features_html(job.table.column("relevance_full").combine_chunks())
        if features:
            s.append(features)
    return "\n".join(s)


def _features_html(col) -> str:
    """Each input feature's share of ``|relevance|`` (a ``relevance_full`` column)."""
    inner = col.values
    try:
        F_vals = inner.values.to_numpy(zero_copy_only=False).astype(np.float64)
        F = len(F_vals) // max(len(inner), 1)
    except Exception:   # pragma: no cover - unexpected layout
        F = None
    if not F:
        return ""
    per = np.where(np.isfinite(F_vals), F_vals, 0.0).reshape(-1, F)
    share = np.abs(per).sum(0) / max(np.abs(per).sum(), 1e-300)
    signed = per.sum(0) / max(np.abs(per).sum(), 1e-300)
    rows = "".join(f"<tr><td class=\"num\">{f}</td><td class=\"num\">{share[f]:.1%}</td>"
                   f"<td class=\"num\">{signed[f]:+.3f}</td></tr>" for f in range(min(F, 64)))
    return (f"<h3>Relevance per input feature</h3><table><tr><th>feature</th><th>share of "
            f"|relevance|</th><th>\u03a3R / \u03a3|R|</th></tr>{rows}</table>")


def _examples_html(job: _Job, top: int, by: str) -> str:
    """The examples with the highest and the lowest total relevance (or score) as heatmaps."""
    s = [f"<h2 id=\"examples\">Examples with the most positive and most negative "
         f"{'total relevance' if by == 'relevance' else 'score'}</h2>"]
    key = job.rsum if by == "relevance" else job.score
    key = np.where(np.isfinite(key), key, np.nan)
    k = min(top, job.n)
    top_pos = np.argsort(-np.nan_to_num(key, nan=-np.inf), kind="stable")[:k]    # ties: input order
    top_neg = np.argsort(np.nan_to_num(key, nan=np.inf), kind="stable")[:k]
    what = "tokens" if job.has_tokens else "step indices (numeric input; the relevance is summed over features)"
    note = (f"Each block has its own colour scale (the largest |relevance| shown in it); cells show "
            f"{what}; hover a cell for its relevance. Sequences longer than {MAX_STEPS_SHOWN} steps "
            f"show the {MAX_STEPS_SHOWN} around their largest |relevance|.")
    label = "\u03a3 relevance" if by == "relevance" else "score"
    for rows_idx, heading in ((top_pos, f"Top {k}: highest {label}"), (top_neg, f"Top {k}: lowest {label}")):
        s.append(_examples_block(job.table, rows_idx, job.rsum, job.score, job.values, job.offsets,
                                 job.has_tokens, heading, note))
    return "\n".join(s)


def _metadata_html(job: _Job) -> str:
    """Method, rule options, model, input and the last run, from the manifest."""
    s = ["<h2 id=\"metadata\">Method, rules and model</h2>"]
    manifest, opts = job.manifest, job.opts
    if manifest is None:
        s.append("<p class=\"sub\">unknown (no manifest.json)</p>")
        return "\n".join(s)
    model = job.job.get("model", {})
    probe = manifest.get("probe", {})
    last = manifest.get("last_run", {})
    inp = job.job.get("input", {})
    rows = [("method", _val(opts.get("method"))), ("target", _val(opts.get("target"))),
            ("eps", _val(opts.get("eps"))), ("bias_factor", _val(opts.get("bias_factor"))),
            ("gate", _val(opts.get("gate"))), ("strict", _val(opts.get("strict"))),
            ("full (relevance_full)", _val(opts.get("full"))), ("max_length", _val(opts.get("max_length"))),
            ("shard_size", _val(opts.get("shard_size"))),
            ("model name", _val(manifest.get("model_name"))), ("model spec", _val(model.get("spec"))),
            ("features", _val(model.get("features"))), ("classes", _val(probe.get("n_classes"))),
            ("input", _val(manifest.get("input_path"))),
            ("input kind / size", _val(f"{inp.get('kind')} / {inp.get('size'):,} bytes"
                                       if isinstance(inp.get("size"), int) else inp.get("kind"))),
            ("devices", _val(manifest.get("devices"))),
            ("created / updated", _val(f"{manifest.get('created')} / {manifest.get('updated')}")),
            ("runs", _val(manifest.get("runs"))), ("status", _val(manifest.get("status")))]
    if last:
        rows.append(("last run", _val(
            f"{last.get('examples_explained')} explained in {last.get('seconds')} s "
            f"({last.get('examples_per_second')} examples/s), {last.get('compilations')} compilation(s), "
            f"buckets {last.get('bucket_lengths')}, batch rows {last.get('batch_rows')}")))
    nar = manifest.get("options_not_affecting_results")
    if nar:
        rows.append(("options not affecting results", _val(nar)))
    s.append(_kv_table(rows))
    return "\n".join(s)


def _versions_html(job: _Job) -> str:
    """The library versions of the job (from the manifest) and of this report, and the footer."""
    s = ["<h2 id=\"versions\">Library versions</h2><div class=\"cols\">"]
    manifest = job.manifest
    if manifest and manifest.get("versions"):
        s.append("<div><h3>the job</h3>" + _kv_table([(k, _val(v)) for k, v in manifest["versions"].items()])
                 + "</div>")
    mine = _report_versions()
    s.append("<div><h3>this report</h3>" + _kv_table([(k, _val(v)) for k, v in mine.items()]) + "</div></div>")
    s.append(f"<footer>Generated by <code>lrpjax report</code> (lrpjax {_e(mine.get('lrpjax'))}). A single "
             f"self-contained file: no scripts, no external resources.</footer>")
    return "\n".join(s)


def _report_versions() -> dict:
    return {"lrpjax": package_version("lrpjax", "lrpjax"), "numpy": np.__version__,
            "pyarrow": package_version("pyarrow", "pyarrow"), "python": platform.python_version()}


def write_report(out_dir: Union[str, os.PathLike], output: Optional[Union[str, os.PathLike]] = None, *,
                 top: int = 10, by: str = "relevance", title: Optional[str] = None) -> Path:
    """Write :func:`report_html` to ``output`` (default ``out_dir/report.html``); returns the path."""
    page = report_html(out_dir, top=top, by=by, title=title)
    path = Path(output) if output is not None else Path(out_dir) / REPORT_NAME
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as e:
        raise JobError(f"cannot write the report to {path}: {e.strerror or e}") from e
    return path


# ---------------------------------------------------------------------------------------------
# command line (wired into lrpjax.cli)

def add_arguments(ap) -> None:
    ap.add_argument("out_dir", metavar="OUT_DIR", help="a job's output directory (the --out of "
                    "lrpjax attribute), e.g. attributions/")
    ap.add_argument("--output", default=None, metavar="PATH",
                    help=f"where to write the page (default OUT_DIR/{REPORT_NAME})")
    ap.add_argument("--top", type=int, default=10, metavar="N",
                    help="examples with the most positive and most negative total to show (default 10)")
    ap.add_argument("--by", choices=("relevance", "score"), default="relevance",
                    help="rank the examples by total relevance (default) or by score")


def run_cli(args) -> int:
    path = write_report(args.out_dir, args.output, top=args.top, by=args.by)
    print(f"lrpjax report: {path} ({path.stat().st_size / 1024:.0f} KiB; open it in a browser)")
    return 0
