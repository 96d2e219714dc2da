"""Pictures of relevance: token heatmaps as self-contained HTML, time-series and curve plots.

>>> from lrpjax import viz
>>> viz.heatmap_html(["a", "good", "film"], [0.1, 0.9, -0.2])            # doctest: +SKIP
>>> viz.heatmaps_html(rows).save("heatmaps.html")                        # doctest: +SKIP
>>> fig = viz.plot_time_series(x, R)                                     # doctest: +SKIP

The HTML is one file that works offline: no scripts, no external stylesheets, fonts or URLs; every
style is an inline ``style`` attribute (so a notebook, or a sanitiser that keeps ``style``, shows it as
in a browser); colours are computed here. The colour map is diverging and centred on 0: red positive,
blue negative, white 0, symmetric in ``[-vmax, vmax]`` (values beyond are drawn at full colour), with
a colour bar showing the scale. Hovering a token shows its value (the ``title`` attribute).

The plots need matplotlib (``pip install "lrpjax[viz]"``); it is imported only when a plot function is
called, so ``import lrpjax.viz`` does not need it. They return a ``matplotlib.figure.Figure`` that is
not registered with pyplot (no global state): save it with ``fig.savefig(...)``, or let a notebook
display it.
"""
from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

__all__ = ["HtmlFragment", "heatmap_html", "heatmaps_html", "relevance_color", "colorbar_html",
           "plot_time_series", "plot_curves"]

# Diverging map: white at 0, RdBu end colours at +-vmax.
POSITIVE_RGB = (178, 24, 43)       # #b2182b, relevance = +vmax
NEGATIVE_RGB = (33, 102, 172)      # #2166ac, relevance = -vmax
NAN_RGB = (200, 200, 200)
FONT = ("-apple-system, BlinkMacSystemFont, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif")
MONO = "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace"

_WS_SHOWN = {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5", "\r": "\u240d"}


def _attr(s: str) -> str:
    return html.escape(str(s), quote=True)


class HtmlFragment:
    """A piece of self-contained HTML.

    * ``_repr_html_()`` (and ``__html__``): the fragment, shown inline by Jupyter / IPython;
    * ``str(fragment)``: a complete HTML document (``<!DOCTYPE html>``, UTF-8, a title);
    * ``fragment.save(path)``: writes that document, returns the path;
    * ``a + b``: both fragments, one after the other.
    """

    def __init__(self, body: str, title: Optional[str] = None):
        self.body = body
        self.title = title

    def _repr_html_(self) -> str:
        return self.body

    def __html__(self) -> str:
        return self.body

    def document(self) -> str:
        title = _attr(self.title or "lrpjax relevance")
        return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                f"<title>{title}</title>\n</head>\n"
                f"<body style=\"margin: 16px 24px; font-family: {_attr(FONT)}; color: #222; "
                f"background: #fff;\">\n{self.body}\n</body>\n</html>\n")

    def __str__(self) -> str:
        return self.document()

    def __repr__(self) -> str:
        return f"HtmlFragment(title={self.title!r}, {len(self.body)} characters)"

    def __add__(self, other: "HtmlFragment") -> "HtmlFragment":
        if not isinstance(other, HtmlFragment):
            return NotImplemented
        return HtmlFragment(self.body + "\n" + other.body, self.title or other.title)

    def save(self, path: Union[str, os.PathLike]) -> Path:
        path = Path(path)
        path.write_text(self.document(), encoding="utf-8")
        return path


# ---------------------------------------------------------------------------------------------
# colours

def relevance_color(value: float, vmax: float) -> str:
    """``#rrggbb`` for ``value`` on the diverging scale ``[-vmax, vmax]`` (white at 0)."""
    if value is None or not math.isfinite(value):
        return "#%02x%02x%02x" % NAN_RGB
    t = 0.0 if vmax <= 0 else max(-1.0, min(1.0, value / vmax))
    end = POSITIVE_RGB if t >= 0 else NEGATIVE_RGB
    a = abs(t)
    rgb = [round(255 + (c - 255) * a) for c in end]
    return "#%02x%02x%02x" % tuple(rgb)


def _text_color(value: float, vmax: float) -> str:
    if value is None or not math.isfinite(value) or vmax <= 0:
        return "#222"
    return "#fff" if abs(value) / vmax > 0.6 else "#222"


def format_value(v: float) -> str:
    """A relevance value for tooltips and captions: 4 significant digits with a sign (``"+0.1235"``),
    ``"0"``, ``"nan"``, ``"+inf"`` / ``"-inf"``."""
    if v is None or not math.isfinite(v):
        return "nan" if v is None or math.isnan(v) else ("+inf" if v > 0 else "-inf")
    if v == 0:
        return "0"
    return f"{v:+.4g}"


def nice_vmax(values: Iterable[np.ndarray]) -> float:
    """The colour scale's end: the largest finite ``|value|`` of all arrays (1.0 if there is none)."""
    m = 0.0
    for r in values:
        f = r[np.isfinite(r)]
        if f.size:
            m = max(m, float(np.abs(f).max()))
    return m if m > 0 else 1.0


def colorbar_html(vmax: float, *, label: str = "relevance", width: int = 260) -> str:
    """The colour scale as HTML: a gradient bar from -vmax (blue) through 0 (white) to +vmax (red)."""
    stops = ", ".join(f"{relevance_color(vmax * (2 * k / 20 - 1), vmax)} {5 * k}%" for k in range(21))
    ticks = "".join(
        f"<span style=\"position: absolute; left: {pos}%; transform: translateX(-50%); "
        f"white-space: nowrap;\">{html.escape(txt)}</span>"
        for pos, txt in ((0, format_value(-vmax)), (50, "0"), (100, format_value(vmax))))
    return (
        "<div class=\"lrpjax-colorbar\" style=\"display: flex; align-items: flex-start; gap: 14px; "
        "margin: 6px 0 10px 0; font-size: 12px; color: #444;\">"
        f"<div style=\"width: {width}px; padding: 0 18px;\">"
        f"<div role=\"img\" aria-label=\"colour scale from {_attr(format_value(-vmax))} (blue) through 0 (white) "
        f"to {_attr(format_value(vmax))} (red)\" style=\"height: 12px; border: 1px solid #999; "
        f"background: linear-gradient(to right, {stops});\"></div>"
        f"<div style=\"position: relative; height: 16px; margin-top: 2px;\">{ticks}</div></div>"
        f"<div style=\"padding-top: 0;\">{html.escape(label)}: <span style=\"color: #{'%02x%02x%02x' % NEGATIVE_RGB}; "
        f"font-weight: 600;\">blue negative</span>, white 0, <span style=\"color: "
        f"#{'%02x%02x%02x' % POSITIVE_RGB}; font-weight: 600;\">red positive</span>; values beyond "
        f"&#177;{html.escape(format_value(vmax).lstrip('+'))} at full colour; hover a token for its value</div>"
        "</div>")


# ---------------------------------------------------------------------------------------------
# heatmaps

def _as_relevance(relevance) -> np.ndarray:
    r = np.asarray(relevance, dtype=np.float64)
    if r.ndim == 2:                 # (T, F): per step, summed over features (as the jobs write it)
        r = r.sum(axis=-1)
    if r.ndim != 1:
        raise ValueError(f"relevance must be a sequence of T numbers (or a (T, F) array, summed over F), "
                         f"got shape {r.shape}")
    return r


def _as_tokens(tokens, T: int) -> list:
    if tokens is None:
        return [str(t) for t in range(T)]
    if isinstance(tokens, str):
        raise ValueError("tokens must be a sequence of strings (one per step), got one string; "
                         "split it first, e.g. text.split()")
    tokens = ["" if t is None else str(t) for t in tokens]
    if len(tokens) != T:
        raise ValueError(f"{len(tokens)} tokens but {T} relevance values: they must match one to one")
    return tokens


def _shown_token(tok: str) -> str:
    if tok == "":
        return "\u2205"
    if tok.strip() == "":
        return "".join(_WS_SHOWN.get(c, c) for c in tok)
    return tok.replace("\n", _WS_SHOWN["\n"]).replace("\t", _WS_SHOWN["\t"])


def sequence_html(tokens: Optional[Sequence[str]], r: np.ndarray, vmax: float,
                   caption: Optional[str] = None, steps: bool = False, offset: int = 0) -> str:
    """One sequence as coloured spans (``r`` ``(T,)``, colour scale ``+-vmax``) with an optional caption.

    ``tokens``: the ``T`` tokens shown, or None for step indices; ``steps``: the tokens are step indices
    (numeric input); ``offset``: the first step's index.
    """
    toks = [str(offset + t) for t in range(len(r))] if tokens is None else _as_tokens(tokens, len(r))
    spans = []
    for t, (tok, v) in enumerate(zip(toks, r.tolist()), start=offset):
        what = f"step {t}" if steps else f"{tok!r} (step {t})"
        spans.append(
            f"<span title=\"{_attr(what + ': ' + format_value(v))}\" data-value=\"{_attr(repr(float(v)))}\" "
            f"style=\"background: {relevance_color(v, vmax)}; color: {_text_color(v, vmax)}; "
            f"padding: 1px 3px; margin: 1px 1px; border-radius: 3px; display: inline-block; "
            f"white-space: pre; line-height: 1.45;{' font-family: ' + _attr(MONO) + '; font-size: 12px;' if steps else ''}\">"
            f"{html.escape(_shown_token(tok))}</span>")
    cap = ""
    if caption:
        cap = (f"<div class=\"lrpjax-caption\" style=\"font-size: 12px; color: #555; "
               f"margin: 2px 0 1px 0; font-family: {_attr(MONO)};\">{html.escape(str(caption))}</div>")
    return (f"<div class=\"lrpjax-sequence\" style=\"margin: 4px 0 12px 0;\">{cap}"
            f"<div style=\"line-height: 1.9; font-size: 14px;\">{''.join(spans)}</div></div>")


def _wrap(inner: str, title: Optional[str]) -> str:
    head = ""
    if title:
        head = (f"<div class=\"lrpjax-title\" style=\"font-weight: 600; font-size: 15px; "
                f"margin: 4px 0 2px 0;\">{html.escape(str(title))}</div>")
    return (f"<div class=\"lrpjax-heatmap\" style=\"font-family: {_attr(FONT)}; color: #222; "
            f"max-width: 1100px;\">{head}{inner}</div>")


def heatmap_html(tokens: Optional[Sequence[str]], relevance, *, title: Optional[str] = None,
                 vmax: Optional[float] = None, caption: Optional[str] = None) -> HtmlFragment:
    """One sequence as a token heatmap (self-contained HTML).

    Args:
      tokens: one string per step, or ``None`` for numeric inputs (the steps' indices are shown).
      relevance: ``T`` numbers (list, NumPy or JAX array), or ``(T, F)`` (summed over features).
      title: shown above the heatmap and as the document's title.
      vmax: the colour scale is ``[-vmax, vmax]``; default ``max |relevance|``.
      caption: a line of text under the title.

    Returns an :class:`HtmlFragment` (inline in a notebook; ``str()`` / ``.save(path)`` for a file).
    """
    r = _as_relevance(relevance)
    vmax = float(vmax) if vmax is not None else nice_vmax([r])
    if not vmax > 0:
        raise ValueError(f"vmax must be > 0, got {vmax}")
    body = colorbar_html(vmax) + sequence_html(tokens, r, vmax, caption, steps=tokens is None)
    return HtmlFragment(_wrap(body, title), title)


def _item(item: Any) -> tuple:
    """(tokens, relevance, caption) from a tuple or a mapping (e.g. a row of a job's output)."""
    if isinstance(item, Mapping):
        if "relevance" not in item:
            raise ValueError(f"a mapping item needs a 'relevance' key, got keys {sorted(item)}")
        caption = item.get("caption")
        if caption is None:
            parts = [f"{k} {item[k]}" for k in ("index", "id", "label", "target") if item.get(k) is not None]
            if item.get("score") is not None:
                parts.append(f"score {format_value(float(item['score']))}")
            caption = " \u00b7 ".join(parts) or None
        return item.get("tokens"), item["relevance"], caption
    item = tuple(item)
    if len(item) == 2:
        return item[0], item[1], None
    if len(item) == 3:
        return item[0], item[1], None if item[2] is None else str(item[2])
    raise ValueError(f"each item must be (tokens, relevance) or (tokens, relevance, caption), "
                     f"got {len(item)} elements")


def heatmaps_html(items: Iterable, *, title: Optional[str] = None,
                  vmax: Optional[float] = None) -> HtmlFragment:
    """Several sequences on one colour scale (self-contained HTML).

    Args:
      items: ``(tokens, relevance)`` or ``(tokens, relevance, caption)`` tuples (``tokens`` may be
        ``None``), or mappings with ``relevance`` and optional ``tokens`` / ``caption`` keys, such as
        the rows of a job's output (``read_results(out).slice(0, 5).to_pylist()``: the caption is
        then built from ``index``, ``id``, ``label``, ``target``, ``score``).
      title: shown above, and the document's title.
      vmax: the shared colour scale ``[-vmax, vmax]``; default the largest ``|relevance|`` of all.
    """
    parsed = [_item(it) for it in items]
    rs = [_as_relevance(r) for _, r, _ in parsed]
    vmax = float(vmax) if vmax is not None else nice_vmax(rs)
    if not vmax > 0:
        raise ValueError(f"vmax must be > 0, got {vmax}")
    seqs = "".join(sequence_html(tok, r, vmax, cap, steps=tok is None)
                   for (tok, _, cap), r in zip(parsed, rs))
    if not parsed:
        seqs = "<div style=\"color: #777;\">(no sequences)</div>"
    return HtmlFragment(_wrap(colorbar_html(vmax) + seqs, title), title)


# ---------------------------------------------------------------------------------------------
# matplotlib plots (matplotlib imported lazily)

def _mpl():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError as e:        # pragma: no cover - depends on the environment
        raise ImportError("lrpjax.viz plots need matplotlib: pip install 'lrpjax[viz]' "
                          "(or pip install matplotlib)") from e
    return Figure


def _sym(values: np.ndarray) -> float:
    f = values[np.isfinite(values)]
    m = float(np.abs(f).max()) if f.size else 0.0
    return m if m > 0 else 1.0


def plot_time_series(x, relevance, *, feature_names: Optional[Sequence[str]] = None, ax=None,
                     title: Optional[str] = None, vmax: Optional[float] = None):
    """A signal with its relevance underneath; returns the ``matplotlib.figure.Figure``.

    Panels (sharing the time axis): the signal (one line per feature); the relevance per step as bars
    (red positive, blue negative; summed over features when ``relevance`` is ``(T, F)``); and, for a
    ``(T, F)`` relevance, a per-feature heat image on the diverging scale centred on 0 with a colour
    bar.

    Args:
      x: the input, ``(T,)`` or ``(T, F)`` (only the valid steps).
      relevance: ``(T,)`` per step, or ``(T, F)`` per step and feature.
      feature_names: ``F`` names for the legend and the heat image's rows.
      ax: a sequence of 2 (``(T,)`` relevance) or 3 (``(T, F)``) matplotlib Axes to draw into;
        default a new figure.
      title: the figure's title.
      vmax: the colour scale of the heat image, ``[-vmax, vmax]``; default ``max |relevance|``.
    """
    Figure = _mpl()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"x must be (T,) or (T, F), got shape {x.shape}")
    T, F = x.shape
    r = np.asarray(relevance, dtype=np.float64)
    if r.ndim not in (1, 2) or r.shape[0] != T or (r.ndim == 2 and r.shape[1] != F):
        raise ValueError(f"relevance must be ({T},) or ({T}, {F}) to match x {x.shape}, got {r.shape}")
    per_feature = r.ndim == 2
    per_step = r.sum(axis=1) if per_feature else r
    if feature_names is None:
        feature_names = [f"feature {f}" for f in range(F)] if F > 1 else ["x"]
    feature_names = [str(n) for n in feature_names]
    if len(feature_names) != F:
        raise ValueError(f"{len(feature_names)} feature_names for {F} features")
    n_panels = 3 if per_feature else 2

    if ax is None:
        width = float(np.clip(4.0 + 0.12 * T, 6.0, 14.0))
        heights = [2.2, 1.6] + ([0.6 + 0.28 * F] if per_feature else [])
        fig = Figure(figsize=(width, sum(heights) + 0.8), layout="constrained")
        axes = fig.subplots(n_panels, 1, sharex=True, height_ratios=heights)
    else:
        axes = list(ax) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
        if len(axes) != n_panels:
            raise ValueError(f"ax must be a sequence of {n_panels} Axes for relevance of shape {r.shape} "
                             f"(signal, relevance per step{', per-feature heat image' if per_feature else ''}), "
                             f"got {len(axes)}")
        fig = axes[0].figure
    steps = np.arange(T)

    a0 = axes[0]
    for f in range(F):
        a0.plot(steps, x[:, f], marker="o" if T <= 40 else None, markersize=3, linewidth=1.2,
                label=feature_names[f])
    a0.set_ylabel("input")
    if 1 < F <= 6:      # one row above the panel
        a0.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, ncol=F, frameon=False,
                  borderaxespad=0.1)
    elif 6 < F <= 12:   # a column beside it (a row would run into the title)
        a0.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, ncol=1, frameon=False,
                  borderaxespad=0.0)
    a0.grid(alpha=0.3)

    a1 = axes[1]
    pos, neg = "#%02x%02x%02x" % POSITIVE_RGB, "#%02x%02x%02x" % NEGATIVE_RGB
    colors = [pos if v >= 0 else neg for v in per_step]
    a1.bar(steps, per_step, color=colors, width=0.85)
    a1.axhline(0.0, color="#444", linewidth=0.8)
    a1.set_ylabel("relevance" + ("\n(sum over features)" if per_feature and F > 1 else ""))
    a1.grid(axis="y", alpha=0.3)

    if per_feature:
        a2 = axes[2]
        v = float(vmax) if vmax is not None else _sym(r)
        im = a2.imshow(r.T, aspect="auto", cmap="RdBu_r", vmin=-v, vmax=v, interpolation="nearest",
                       extent=(-0.5, T - 0.5, F - 0.5, -0.5))
        a2.set_yticks(range(F))
        a2.set_yticklabels(feature_names, fontsize=8)
        a2.set_ylabel("relevance\nper feature")
        fig.colorbar(im, ax=a2, label="relevance", fraction=0.05, pad=0.01)
    axes[-1].set_xlabel("step")
    axes[-1].set_xlim(-0.6, T - 0.4)
    from matplotlib.ticker import MaxNLocator
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))   # steps are whole numbers
    if title:
        fig.suptitle(title)
    return fig


def plot_curves(curves: Mapping[str, tuple], *, ax=None, xlabel: str = "fraction of steps removed",
                ylabel: str = "score", title: Optional[str] = None, show_auc: bool = True):
    """Perturbation / deletion curves: one line per method; returns the ``matplotlib.figure.Figure``.

    Args:
      curves: ``name -> (ks, values)``: ``ks`` the x positions (fraction or number of steps removed),
        ``values`` the score there, ``(K,)``, or ``(N, K)`` for N examples (the mean is drawn with a
        band of +-1 standard error).
      ax: a matplotlib Axes to draw into; default a new figure.
      show_auc: add the normalised area under each curve (trapezoid / x range, i.e. the mean score
        over the range) to the legend.
    """
    Figure = _mpl()
    if ax is None:
        fig = Figure(figsize=(6.4, 4.2), layout="constrained")
        ax = fig.subplots()
    else:
        fig = ax.figure
    for name, pair in curves.items():
        try:
            ks, values = pair
        except (TypeError, ValueError):
            raise ValueError(f"curve {name!r} must be a pair (ks, values)") from None
        ks = np.asarray(ks, dtype=np.float64)
        v = np.asarray(values, dtype=np.float64)
        if v.ndim == 2:
            mean = v.mean(axis=0)
            se = v.std(axis=0, ddof=1) / np.sqrt(v.shape[0]) if v.shape[0] > 1 else np.zeros_like(mean)
        elif v.ndim == 1:
            mean, se = v, None
        else:
            raise ValueError(f"values of curve {name!r} must be (K,) or (N, K), got shape {v.shape}")
        if ks.ndim != 1 or ks.shape[0] != mean.shape[0]:
            raise ValueError(f"curve {name!r}: {ks.shape} ks for values of shape {v.shape}")
        label = str(name)
        if show_auc and ks.size > 1 and ks[-1] != ks[0]:
            auc = float(np.sum((mean[1:] + mean[:-1]) * np.diff(ks)) / 2 / (ks[-1] - ks[0]))
            label += f" (AUC {auc:.3g})"
        (line,) = ax.plot(ks, mean, marker="o" if ks.size <= 30 else None, markersize=3, label=label)
        if se is not None:
            ax.fill_between(ks, mean - se, mean + se, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(frameon=False)
    if title:
        ax.set_title(title)
    return fig
