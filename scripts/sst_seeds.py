"""SST-5 word deletion over several training seeds: mean, spread and paired-bootstrap intervals.

Reads the outputs of ``scripts/sst_deletion.py`` for models trained with different seeds
(``examples/sst_sentiment.py --seed S --out DIR_S``, then ``scripts/sst_deletion.py --models DIR_S``)
and prints, per model and deletion order, every method's score -- the mean over k = 1..5 of the
accuracy after deleting k words (correctly classified sentences, most relevant first: lower = steeper
= better; misclassified sentences, least relevant first: higher = better) -- as mean ± sd over the
seeds, then LRP (gate "all") minus the best other method (not LRP, not random) with a 95 %
paired-bootstrap interval: the 2,210 test sentences are resampled (2,000 times, seeded), the same
resample for both methods and every seed; each seed averages over the resampled sentences in its own
selection (its correctly classified / misclassified ones), and the seeds are averaged.

Usage::

    PYTHONPATH=. python scripts/sst_seeds.py DIR_0 DIR_10 DIR_20 [--markdown table.md]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

LRP = "LRP (gate=all)"
NOT_OTHER = (LRP, "random")
ORDERS = {"most": ("correct, most relevant deleted first", "lower"),
          "least": ("misclassified, least relevant deleted first", "higher")}


def load(dirs: list) -> tuple[dict, int]:
    """``{(model, order, method): [per-seed (N_test,) scores, NaN outside the seed's selection]}``."""
    runs, n_test = {}, None
    for d in dirs:
        meta = json.loads((Path(d) / "sst_deletion.json").read_text())
        n_test = meta["n_sentences"]
        with np.load(Path(d) / "sst_deletion_outcomes.npz") as f:
            for key in f.files:
                model, order, method = key.split("/", 2)
                if method == "rows":
                    continue
                score = np.full(n_test, np.nan)
                score[f[f"{model}/{order}/rows"]] = f[key][1:].mean(axis=0)    # k = 1..k_max
                runs.setdefault((model, order, method), []).append(score)
    return runs, n_test


def paired_bootstrap(a: list, b: list, n_test: int, n_boot: int = 2000, seed: int = 0) -> tuple:
    diffs = [x - y for x, y in zip(a, b)]                    # per seed, NaN outside its selection
    rng = np.random.default_rng(seed)
    point = float(np.mean([np.nanmean(d) for d in diffs]))
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, n_test, n_test)
        boots.append(np.mean([np.nanmean(d[idx]) for d in diffs]))
    return point, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="+", help="sst_deletion.py output folders, one per training seed")
    ap.add_argument("--markdown", default=None, help="also write the tables as Markdown")
    a = ap.parse_args(argv)
    runs, n_test = load(a.dirs)
    models = sorted({m for m, _, _ in runs}, key=["paper", "ours", "attn"].index)
    lines = [f"SST-5 word deletion over {len(a.dirs)} training seeds ({', '.join(a.dirs)}); score = mean "
             f"accuracy over k = 1..5 deletions (%)", ""]
    comp = ["| model | sentences | better | LRP-all | best other | its score | LRP-all - other [95% CI] |",
            "|---|---|---|---|---|---|---|"]
    for model in models:
        for order, (what, better) in ORDERS.items():
            methods = [m for (mm, o, m) in runs if mm == model and o == order]
            if not methods:
                continue
            mean = {m: [100 * np.nanmean(s) for s in runs[(model, order, m)]] for m in methods}
            lines.append(f"{model}, {what} ({better} is better):")
            for m in sorted(methods, key=lambda m: np.mean(mean[m]), reverse=better == "higher"):
                v = mean[m]
                lines.append(f"  {m:28s} {np.mean(v):6.1f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:4.1f}   "
                             f"(seeds: {', '.join(f'{x:.1f}' for x in v)})")
            others = [m for m in methods if m not in NOT_OTHER]
            pick = (min if better == "lower" else max)
            best = pick(others, key=lambda m: np.mean(mean[m]))
            d, lo, hi = paired_bootstrap(runs[(model, order, LRP)], runs[(model, order, best)], n_test)
            lines.append(f"  LRP-all - {best}: {100 * d:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}]")
            lines.append("")
            sd = lambda m: f"{np.mean(mean[m]):.1f} ± {np.std(mean[m], ddof=1) if len(mean[m]) > 1 else 0:.1f}"
            comp.append(f"| {model} | {what} | {better} | {sd(LRP)} | {best} | {sd(best)} | "
                        f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] |")
    print("\n".join(lines))
    print("\n".join(comp))
    if a.markdown:
        Path(a.markdown).write_text("\n".join(comp) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
