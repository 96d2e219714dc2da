"""lrpjax: Layer-wise Relevance Propagation for recurrent networks in JAX.

>>> import lrpjax
>>> R = lrpjax.relevance(model_fn, x)          # doctest: +SKIP
>>> ex = lrpjax.explain(model_fn, x)           # doctest: +SKIP
"""
from lrpjax import cells, importers, interop, jobs, rewrite, rules, strict
from lrpjax.cells import (GRUParams, LSTMParams, VARIANT_GATES, bilstm, gru, gru_params, init_gru,
                          init_lstm, lstm, lstm_params, stacked_lstm)
from lrpjax.jobs import JobError, JobSummary, ModelSpec, attribute_dataset
from lrpjax.relevance import Explanation, explain, explain_tokens, relevance
from lrpjax.rules import GATE_RULES, RuleConfig, accumulate, act, gated, linear
from lrpjax.strict import UnsupportedOperationError
from lrpjax import baselines, metrics
from lrpjax.baselines import (METHODS, IGResult, explain_ig, gradient, gradient_x_input,
                              integrated_gradients, integrated_gradients_completeness, occlusion,
                              per_step, random_relevance, sensitivity)

dense = linear
"""``dense(x, kernel, bias=None)``: a readout with the epsilon rule (alias of :func:`lrpjax.linear`)."""

__version__ = "0.1.0"

__all__ = [
    "Explanation", "GATE_RULES", "GRUParams", "IGResult", "JobError", "JobSummary",
    "LSTMParams", "METHODS", "ModelSpec", "RuleConfig", "UnsupportedOperationError",
    "VARIANT_GATES", "accumulate", "act", "attribute_dataset", "baselines", "bilstm", "cells",
    "dense", "explain", "explain_ig", "explain_tokens", "gated", "gradient", "gradient_x_input",
    "gru", "gru_params", "importers", "init_gru", "init_lstm", "integrated_gradients",
    "integrated_gradients_completeness", "interop", "jobs", "linear", "lstm", "lstm_params",
    "metrics", "occlusion", "per_step", "random_relevance", "relevance", "rewrite", "rules",
    "sensitivity", "stacked_lstm", "strict",
]

