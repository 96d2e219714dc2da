"""Word deletion on SST-5 (Arras et al. 2017): how fast does deleting relevant words change decisions?

For the models trained by ``examples/sst_sentiment.py`` (the paper's reference BiLSTM with trained
embeddings, our Flax BiLSTM, and the attention BiLSTM of Flax's SST-2 example) and every attribution
method of :mod:`lrpjax.baselines` -- LRP (``gate="all"`` and ``"half"``), gradient, sensitivity,
gradient x input, integrated gradients, occlusion and random -- computed for the **true** class on the
embedded test sentences, one value per word (summed over the embedding dimensions); for the attention
model also its attention weights as a ranking (``gate="half"`` there also sends relevance through the
attention weights, with AttnLRP's softmax rule, into the scoring MLP):

* **correctly classified** sentences: delete (set the embedding to 0) the ``k = 1..5`` words with the
  highest relevance and track the accuracy (it starts at 100 %; the faster it falls, the better the
  method found the words the decision rests on);
* **misclassified** sentences: delete the ``k = 1..5`` words with the lowest relevance and track the
  share now classified correctly (starts at 0 %; the faster it rises, the better).

Curves come from :func:`lrpjax.metrics.deletion_curve`. Random relevance is averaged over ``--seeds``
seeds. Output (``--out``, default the models' folder): ``sst_deletion.png`` (the curves),
``sst_deletion.md`` (the table), ``sst_deletion.json`` (all numbers).

Run (after ``PYTHONPATH=. python examples/sst_sentiment.py --out sst-out``):
``PYTHONPATH=. python scripts/sst_deletion.py --models sst-out`` (all 2,210 test sentences, about
5 minutes on 2 busy CPU cores); ``--quick`` is a smoke test on 64 short sentences.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import sst_sentiment as sst  # noqa: E402  (examples/sst_sentiment.py: data, models)

from lrpjax import baselines, metrics  # noqa: E402

# name -> (baselines.METHODS key, options); "random" is handled apart (several seeds)
METHODS = {
    "LRP (gate=all)": ("lrp", {"gate": "all", "eps": 1e-3, "bias_factor": 0.0}),
    "LRP (gate=half)": ("lrp", {"gate": "half", "eps": 1e-3, "bias_factor": 0.0}),
    "gradient": ("gradient", {}),
    "sensitivity": ("sensitivity", {}),
    "gradient x input": ("gradient_x_input", {}),
    "integrated gradients": ("integrated_gradients", {}),     # steps: --ig-steps, baseline 0
    "occlusion": ("occlusion", {"value": 0.0}),
}
RANDOM = "random"
ATTENTION = "attention weights"      # attention models only: rank the words by alpha_t
MODEL_TITLES = {"paper": "paper's model (reference BiLSTM)", "ours": "ours (Flax BiLSTM)",
                "attn": "attention BiLSTM (Flax SST-2 architecture)"}


@functools.lru_cache(maxsize=None)
def _attribute_fn(fn, embed_fn, attention_fn, ig_steps: int):
    """One jitted function per model: every method's per-word relevance of the target class (and
    the attention weights of an attention model)."""
    @jax.jit
    def attribute(params, ids, lengths, target):
        x = embed_fn(params, ids)
        model_fn = lambda z: fn(params, z, lengths)
        out = {}
        for name, (key, kw) in METHODS.items():
            if key == "integrated_gradients":
                kw = dict(kw, steps=ig_steps)
            out[name] = baselines.per_step(baselines.METHODS[key](model_fn, x, target, **kw), x)
        if attention_fn is not None:
            out[ATTENTION] = attention_fn(params, x, lengths)
        return out
    return attribute


def attribute(model: sst.Model, split: sst.Split, buckets: Sequence[int], T: int, *, batch: int,
              ig_steps: int) -> dict:
    """``{method: (N, T)}`` per-word relevance of the true class (padding 0), by length bucket."""
    f = _attribute_fn(model.fn, model.embed_fn, model.attention_fn, ig_steps)
    N = len(split.labels)
    names = list(METHODS) + ([ATTENTION] if model.attention_fn is not None else [])
    R = {name: np.zeros((N, T), np.float32) for name in names}
    for ids, L, y, _, index in sst.batches(split, batch, buckets):
        out = jax.device_get(f(model.params, ids, L, y))
        keep = index >= 0
        for name, r in out.items():
            R[name][index[keep], :r.shape[1]] = np.where(np.arange(r.shape[1]) < L[:, None], r, 0.0)[keep]
    return R


def curves_for(model: sst.Model, x: jax.Array, lengths: np.ndarray, labels: np.ndarray,
               pred: np.ndarray, R: dict, *, k_max: int, seeds: int) -> dict:
    """``{"most"|"least": {method: (k_max + 1,)}}``: accuracy of the correctly classified sentences
    after deleting the k most relevant words, share correct of the misclassified ones after deleting
    the k least relevant words (random: mean over ``seeds`` seeds)."""
    apply = functools.partial(model.fn, model.params)   # one hashable model function: one compilation
    out = {}
    for order, rows in (("most", pred == labels), ("least", pred != labels)):
        out[order] = {}
        if not rows.any():
            continue
        xs, Ls, ys = x[np.flatnonzero(rows)], lengths[rows], labels[rows]
        curve = lambda r: metrics.deletion_curve(apply, xs, Ls, ys, r[rows], k_max=k_max, order=order,
                                                 per_sentence=True)
        for name, r in R.items():
            out[order][name] = curve(r).astype(np.float64)
        rand = []
        for s in range(seeds):
            r = baselines.METHODS["random"](None, x, seed=s)
            rand.append(curve(np.asarray(baselines.per_step(r, x))))
        out[order][RANDOM] = np.mean(rand, axis=0)
        out[order]["rows"] = np.flatnonzero(rows)
    return out


def table_markdown(results: dict, k_max: int) -> str:
    """One row per model and method; the steepest value of each column in bold."""
    ks = " / ".join(str(k) for k in range(1, k_max + 1))
    lines = [f"| model | method | correctly classified: accuracy (%) after deleting {ks} most relevant "
             f"words | misclassified: correct (%) after deleting {ks} least relevant words |",
             "| --- | --- | --- | --- |"]
    for mname, res in results.items():
        cur = res["curves"]
        best = {}
        for order, pick in (("most", min), ("least", max)):
            if cur[order]:
                best[order] = [pick(c[k] for c in cur[order].values()) for k in range(k_max + 1)]
        names = [n for n in list(METHODS) + [ATTENTION, RANDOM] if n in cur["most"] or n in cur["least"]]
        for j, name in enumerate(names):
            cells = []
            for order in ("most", "least"):
                if name not in cur[order]:
                    cells.append("-")
                    continue
                c = cur[order][name]
                cells.append(" / ".join(f"**{100 * c[k]:.1f}**" if np.isclose(c[k], best[order][k])
                                        else f"{100 * c[k]:.1f}" for k in range(1, k_max + 1)))
            label = (f"{mname} (n = {res['n_correct']} / {res['n_misclassified']})" if j == 0 else "")
            lines.append(f"| {label} | {name} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path, k_max: int) -> None:
    """2 x 2 panels (model x experiment), one line per method (:func:`lrpjax.viz.plot_curves`)."""
    from lrpjax import viz
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 1.0 + 3.1 * len(results)), layout="constrained")
    axes = fig.subplots(len(results), 2, squeeze=False)
    ks = np.arange(k_max + 1)
    for row, (mname, res) in enumerate(results.items()):
        for col, order in enumerate(("most", "least")):
            ax = axes[row, col]
            curves = {name: (ks, 100 * np.asarray(c)) for name, c in res["curves"][order].items()}
            what = (f"correctly classified (n = {res['n_correct']})\naccuracy after deleting the k most "
                    f"relevant words" if order == "most" else
                    f"misclassified (n = {res['n_misclassified']})\nshare now correct after deleting "
                    f"the k least relevant words")
            viz.plot_curves(curves, ax=ax, xlabel="k (words deleted)", ylabel="%", show_auc=False,
                            title=f"{MODEL_TITLES.get(mname, mname)}: {what}")
            ax.title.set_fontsize(9)
            for line in ax.get_lines():
                if line.get_label() == RANDOM:
                    line.set(color="black", linestyle="--")
            if ax.get_legend() is not None:
                ax.get_legend().remove()
    handles, labels = max((ax.get_legend_handles_labels() for ax in axes.flat), key=lambda hl: len(hl[1]))
    fig.legend(handles, labels, loc="outside lower center", ncol=5, frameon=False, fontsize=9)
    fig.suptitle("SST-5 word deletion, relevance of the true class (deleted word = zero embedding)",
                 fontsize=11)
    fig.savefig(path, dpi=72)


def summary(results: dict, k_max: int) -> list:
    """Per model and experiment: the methods ranked by their mean over k = 1..k_max (steepest first)."""
    lines = []
    for mname, res in results.items():
        for order, rev in (("most", False), ("least", True)):
            cur = res["curves"][order]
            if not cur:
                continue
            mean = {name: float(np.mean(c[1:])) for name, c in cur.items()}
            ranked = sorted(mean, key=mean.get, reverse=rev)
            what = "correct: accuracy" if order == "most" else "misclassified: now correct"
            lines.append(f"{mname:5s} {what} (mean over k=1..{k_max}, steepest first): "
                         + ", ".join(f"{n} {100 * mean[n]:.1f}" for n in ranked))
    return lines


def run(models_dir: Path, out: Path, data: Path = sst.DATA, *, quick: bool = False, n: Optional[int] = None,
        ig_steps: int = 32, seeds: int = 3, k_max: int = 5, png: Optional[Path] = None, log=print) -> dict:
    t_start = time.perf_counter()
    models, cfg = sst.load_models(models_dir, data)
    test = sst.load_split("test", sst.load_vocab(data), data)
    buckets, batch = (16, 28, 56), 256
    if quick:
        test = test.subset(np.flatnonzero(test.lengths <= 16)[:64 if n is None else n])
        buckets, batch, ig_steps, seeds = (16,), 64, min(ig_steps, 4), min(seeds, 2)
    elif n is not None and n < len(test.labels):
        test = test.subset(np.sort(np.random.default_rng(0).choice(len(test.labels), n, replace=False)))
    T = buckets[-1]
    N = len(test.labels)
    lengths, labels = test.lengths, test.labels
    ids = np.zeros((N, T), np.int32)
    for i, s in enumerate(test.ids):
        ids[i, :len(s)] = s
    out.mkdir(parents=True, exist_ok=True)
    log(f"word deletion on SST-5: {N} test sentences, models from {models_dir}, relevance of the true "
        f"class, k = 1..{k_max}, integrated gradients {ig_steps} steps, random x {seeds} seeds, "
        f"buckets {list(buckets)}, backend {jax.default_backend()}")

    results, outcomes = {}, {}
    for mname, model in models.items():
        t0 = time.perf_counter()
        pred = sst.predict(model, test, buckets)
        R = attribute(model, test, buckets, T, batch=batch, ig_steps=ig_steps)
        t_attr = time.perf_counter() - t0
        x = model.embed(ids)
        per = curves_for(model, x, lengths, labels, pred, R, k_max=k_max, seeds=seeds)
        # per-sentence outcomes (k_max + 1, n) for paired comparisons (scripts/sst_seeds.py); curves = means
        outcomes.update({f"{mname}/{o}/{m}": v for o, d in per.items() for m, v in d.items()})
        cur = {o: {m: v.mean(axis=1) for m, v in d.items() if m != "rows"} for o, d in per.items()}
        t_curve = time.perf_counter() - t0 - t_attr
        acc = float(np.mean(pred == labels))
        results[mname] = {"accuracy": acc, "n_correct": int(np.sum(pred == labels)),
                          "n_misclassified": int(np.sum(pred != labels)),
                          "curves": cur, "seconds_attribution": t_attr, "seconds_curves": t_curve}
        log(f"  {mname}: accuracy {acc:.3f} on these {N} sentences ({results[mname]['n_correct']} correct, "
            f"{results[mname]['n_misclassified']} misclassified); attributions {t_attr:.0f} s, "
            f"deletion curves {t_curve:.0f} s")
        if cur["most"]:   # sanity: nothing deleted = the sentences the model classifies correctly
            k0 = {float(c[0]) for c in cur["most"].values()}
            if k0 != {1.0}:
                log(f"  WARNING: {mname}: accuracy at k=0 on the correct sentences is {sorted(k0)}, not 1")

    table = table_markdown(results, k_max)
    (out / "sst_deletion.md").write_text(table, encoding="utf-8")
    png = png or out / "sst_deletion.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    plot(results, png, k_max)
    lines = summary(results, k_max)
    total = time.perf_counter() - t_start
    js = {"n_sentences": N, "quick": quick, "k_max": k_max, "ig_steps": ig_steps, "random_seeds": seeds,
          "target": "true class", "fill": 0.0, "models_config": cfg.get("results"),
          "seconds": total, "summary": lines,
          "models": {m: dict(r, curves={o: {k: [float(v) for v in c] for k, c in cs.items()}
                                        for o, cs in r["curves"].items()})
                     for m, r in results.items()}}
    (out / "sst_deletion.json").write_text(json.dumps(js, indent=2) + "\n")
    np.savez(out / "sst_deletion_outcomes.npz", **outcomes)
    log("\n" + table)
    for line in lines:
        log(line)
    log(f"\nwrote {out / 'sst_deletion.md'}, {png}, {out / 'sst_deletion.json'}; total {total:.0f} s")
    return js


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="sst-out", help="folder written by examples/sst_sentiment.py "
                    "(default ./sst-out)")
    ap.add_argument("--out", default=None, help="output folder (default: the --models folder)")
    ap.add_argument("--png", default=None, help="where to write the plot (default OUT/sst_deletion.png)")
    ap.add_argument("--data", default=str(sst.DATA), help=f"the shared data folder (default {sst.DATA})")
    ap.add_argument("--n", type=int, default=None, help="use N test sentences (a seeded random subset; "
                    "default all 2,210)")
    ap.add_argument("--ig-steps", type=int, default=32, help="integrated gradients steps (default 32)")
    ap.add_argument("--seeds", type=int, default=3, help="random-relevance seeds averaged (default 3)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 64 sentences of <= 16 tokens, "
                    "4 integrated-gradients steps, 2 random seeds")
    args = ap.parse_args(argv)
    models, data = Path(args.models), Path(args.data)
    why = sst.missing_data(data)
    if why:
        print(f"sst_deletion: {why}; pass --data DIR", file=sys.stderr)
        return 2
    if not (models / "config.json").exists():
        print(f"sst_deletion: no trained models in {models}; run first: PYTHONPATH=. python "
              f"examples/sst_sentiment.py --out {models}", file=sys.stderr)
        return 2
    run(models, Path(args.out) if args.out else models, data, quick=args.quick, n=args.n,
        ig_steps=args.ig_steps, seeds=args.seeds, png=Path(args.png) if args.png else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
