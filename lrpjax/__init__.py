"""lrpjax: Layer-wise Relevance Propagation for recurrent networks in JAX.

The public API, re-exported from the one-concept modules below (see ``docs/index.md``):

* :mod:`lrpjax.relevance` -- ``relevance``, ``explain``, ``explain_tokens``, ``relevance_per_step``,
  ``explain_per_step``, ``Explanation``
* :mod:`lrpjax.rules` -- the LRP rules as custom-VJP primitives (``linear``, ``accumulate``, ``act``,
  ``gated``, ...)
* :mod:`lrpjax.cells` -- LSTM / GRU parameters and layers
* :mod:`lrpjax.baselines`, :mod:`lrpjax.metrics` -- other attribution methods and their evaluation
* :mod:`lrpjax.importers` -- weights from PyTorch, Keras, Flax and the Arras et al. reference
* :mod:`lrpjax.jobs` -- dataset-wide attribution jobs (``attribute_dataset``, ``evaluate_dataset``)

>>> import jax, jax.numpy as jnp, lrpjax
>>> p = lrpjax.init_lstm(jax.random.key(0), 4, 8)
>>> model = lambda x: lrpjax.dense(lrpjax.lstm(p, x)[1][1], jnp.ones((8, 2)))
>>> lrpjax.relevance(model, jnp.ones((3, 6, 4))).shape
(3, 6, 4)
"""
from lrpjax import baselines, cells, importers, interop, jobs, metrics, rewrite, rules, strict
from lrpjax.baselines import (METHODS, Attribution, IGResult, attribute, explain_ig, gradient,
                              gradient_x_input, integrated_gradients,
                              integrated_gradients_completeness, occlusion, per_step,
                              random_relevance, sensitivity)
from lrpjax.cells import (GRUParams, LSTMParams, VARIANT_GATES, bilstm, gru, gru_params, init_gru,
                          init_lstm, lstm, lstm_params, stacked_lstm)
from lrpjax.jobs import JobError, JobSummary, ModelSpec, attribute_dataset
from lrpjax.relevance import (Explanation, embedding_input, explain, explain_per_step, explain_tokens,
                              relevance, relevance_per_step)
from lrpjax.rules import GATE_RULES, RuleConfig, accumulate, act, gated, linear
from lrpjax.strict import UnsupportedOperationError

dense = linear
"""``dense(x, kernel, bias=None)``: a readout with the epsilon rule (alias of :func:`lrpjax.linear`)."""

__version__ = "0.1.0"

__all__ = [
    "Attribution", "Explanation", "GATE_RULES", "GRUParams", "IGResult", "JobError", "JobSummary",
    "LSTMParams", "METHODS", "ModelSpec", "RuleConfig", "UnsupportedOperationError",
    "VARIANT_GATES", "accumulate", "act", "attribute", "attribute_dataset", "baselines", "bilstm",
    "cells", "dense", "embedding_input", "explain", "explain_ig", "explain_per_step", "explain_tokens",
    "gated", "gradient", "gradient_x_input", "gru", "gru_params", "importers", "init_gru", "init_lstm",
    "integrated_gradients", "integrated_gradients_completeness", "interop", "jobs", "linear", "lstm",
    "lstm_params", "metrics", "occlusion", "per_step", "random_relevance", "relevance",
    "relevance_per_step", "rewrite", "rules", "sensitivity", "stacked_lstm", "strict", "evaluate_dataset",
]


def __getattr__(name: str):
    # evaluate_dataset reads and writes Parquet: loaded on first use (`import lrpjax` stays light)
    if name == "evaluate_dataset":
        return jobs.evaluate_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
