"""Metrics for attributions of sequence models.

* :func:`topk_accuracy`, :func:`marked_share` -- ground-truth recovery (:mod:`~lrpjax.metrics.ground_truth`).
* :func:`pearson` -- Pearson correlation of two attributions (``nan`` for a constant input, no warning).
* :func:`relevance_rank_accuracy`, :func:`relevance_mass_accuracy` -- per-sequence localisation of a
  ground-truth mask over steps (Arras et al. 2022, "CLEVR-XAI"; Quantus' arguments and defaults).
* :func:`spearman` -- Spearman rank correlation (average ranks for ties; ``nan`` for a constant input).
* :func:`mprt` -- model-parameter randomisation test, cascading from the output layer (Adebayo et al.
  2018, "Sanity Checks for Saliency Maps"; :mod:`~lrpjax.metrics.randomisation`).
* :func:`deletion_curve` -- accuracy after deleting the ``1..k_max`` most (or least) relevant words
  (Arras et al. 2017, "Explaining Recurrent Neural Network Predictions in Sentiment Analysis").
* :func:`pixel_flipping`, :func:`region_perturbation`, :func:`faithfulness_correlation`,
  :func:`monotonicity_correlation`, :func:`sensitivity_n`, :func:`completeness`, :func:`perturb` --
  perturbation faithfulness metrics with Quantus 0.6.0's names, arguments and definitions, the model
  in one jitted call (:mod:`~lrpjax.metrics.perturbation`).

``R_steps`` is one value per time step, ``(N, T)`` (reduce ``x``-shaped attributions with
:func:`lrpjax.baselines.per_step`). The ground-truth metrics and :func:`pearson` run on the host (NumPy,
float64) and accept NumPy or JAX arrays; :func:`deletion_curve` runs the model in one jitted call.
"""
from lrpjax.metrics.correlation import pearson, spearman
from lrpjax.metrics.deletion import ORDERS, deletion_curve, deletion_order
from lrpjax.metrics.ground_truth import (marked_share, relevance_mass_accuracy, relevance_rank_accuracy,
                                         topk_accuracy)
from lrpjax.metrics.perturbation import (PERTURB_BASELINES, PERTURB_ORDERS, completeness,
                                         faithfulness_correlation, monotonicity_correlation, perturb,
                                         pixel_flipping, region_perturbation, sensitivity_n)
from lrpjax.metrics.randomisation import mprt

__all__ = ["ORDERS", "deletion_curve", "deletion_order", "marked_share", "mprt", "pearson",
           "relevance_mass_accuracy", "relevance_rank_accuracy", "spearman", "topk_accuracy",
           "PERTURB_BASELINES", "PERTURB_ORDERS", "completeness", "faithfulness_correlation",
           "monotonicity_correlation", "perturb", "pixel_flipping", "region_perturbation", "sensitivity_n"]
