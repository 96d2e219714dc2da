"""The metrics that score one explanation per example from a model, under one calling convention, for
:func:`lrpjax.evaluate_dataset` (``lrpjax evaluate``)::

    fn(model_fn, x (B, L, F), R (B, L), target (B,), lengths (B,), key, **options) -> (B,) float64

Each wraps a function of :mod:`lrpjax.metrics.perturbation` (which runs its model calls in one jitted
call per batch shape) and reduces it to one number per example: curves to their area (Quantus'
``return_auc_per_sample``), correlations as they are, completeness to ``|gap|``. Sensitivity-n is one
value per subset size over a batch, not per example, and the ground-truth metrics need masks: neither is
here (call them from Python).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from lrpjax.metrics import perturbation


class Metric(NamedTuple):
    """``fn`` (the calling convention above); ``higher_is_better``; ``what`` (one line)."""
    fn: Callable
    higher_is_better: bool
    what: str


def _pixel_flipping(model_fn, x, R, target, lengths, key, **options):
    return perturbation.pixel_flipping(model_fn, x, R, target, lengths=lengths, key=key,
                                       return_auc_per_sample=True, **options)


def _region_perturbation(model_fn, x, R, target, lengths, key, **options):
    options.setdefault("patch_size", 2)
    return perturbation.region_perturbation(model_fn, x, R, target, lengths=lengths, key=key,
                                            return_auc_per_sample=True, **options)


def _faithfulness_correlation(model_fn, x, R, target, lengths, key, **options):
    options.setdefault("subset_size", 2)
    options.setdefault("nr_runs", 20)
    return perturbation.faithfulness_correlation(model_fn, x, R, target, lengths=lengths, key=key, **options)


def _monotonicity_correlation(model_fn, x, R, target, lengths, key, **options):
    options.setdefault("nr_samples", 10)
    return perturbation.monotonicity_correlation(model_fn, x, R, target, lengths=lengths, key=key, **options)


def _completeness(model_fn, x, R, target, lengths, key, **options):
    return np.abs(perturbation.completeness(model_fn, x, R, target, lengths=lengths, key=key, **options))


def per_example_metrics() -> dict:
    """``{name: Metric}`` (options with a job default: ``region_perturbation`` ``patch_size=2``;
    ``faithfulness_correlation`` ``subset_size=2, nr_runs=20``; ``monotonicity_correlation``
    ``nr_samples=10``; everything else as the function's defaults).

    >>> sorted(per_example_metrics())[:2]
    ['completeness', 'faithfulness_correlation']
    """
    return {
        "pixel_flipping": Metric(_pixel_flipping, False, "area under the target's probability as the "
                                 "most relevant steps are replaced (Quantus PixelFlipping, AUC)"),
        "region_perturbation": Metric(_region_perturbation, True, "area under f(x) - f(x with the k most "
                                      "relevant windows replaced) (Quantus RegionPerturbation, morf)"),
        "faithfulness_correlation": Metric(_faithfulness_correlation, True, "Pearson r of relevance sums "
                                           "and score drops of random step subsets (Bhatt et al. 2020)"),
        "monotonicity_correlation": Metric(_monotonicity_correlation, True, "Spearman r of relevance and "
                                           "score variance under perturbation (Nguyen & Martinez 2020)"),
        "completeness": Metric(_completeness, False, "|sum R - (f(x) - f(baseline))| (Sundararajan et "
                               "al. 2017; 0 = complete)"),
    }
