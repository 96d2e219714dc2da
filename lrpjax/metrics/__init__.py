"""Metrics for attributions of sequence models.

* :func:`topk_accuracy`, :func:`marked_share` -- ground-truth recovery (:mod:`~lrpjax.metrics.ground_truth`).
* :func:`pearson` -- Pearson correlation of two attributions (``nan`` for a constant input, no warning).
* :func:`deletion_curve` -- accuracy after deleting the ``1..k_max`` most (or least) relevant words
  (Arras et al. 2017, "Explaining Recurrent Neural Network Predictions in Sentiment Analysis").

``R_steps`` is one value per time step, ``(N, T)`` (reduce ``x``-shaped attributions with
:func:`lrpjax.baselines.per_step`). The ground-truth metrics and :func:`pearson` run on the host (NumPy,
float64) and accept NumPy or JAX arrays; :func:`deletion_curve` runs the model in one jitted call.
"""
from lrpjax.metrics.correlation import pearson
from lrpjax.metrics.deletion import ORDERS, deletion_curve, deletion_order
from lrpjax.metrics.ground_truth import marked_share, topk_accuracy

__all__ = ["ORDERS", "deletion_curve", "deletion_order", "marked_share", "pearson", "topk_accuracy"]
