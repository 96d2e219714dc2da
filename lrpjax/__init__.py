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

dense = linear
"""``dense(x, kernel, bias=None)``: a readout with the epsilon rule (alias of :func:`lrpjax.linear`)."""

__version__ = "0.1.0"

__all__ = [
    "Explanation", "GATE_RULES", "GRUParams", "JobError", "JobSummary", "LSTMParams", "ModelSpec",
    "RuleConfig", "UnsupportedOperationError", "VARIANT_GATES", "accumulate", "act",
    "attribute_dataset", "bilstm", "cells", "dense", "explain", "explain_tokens", "jobs",
    "gated",
    "gru", "gru_params", "importers", "init_gru", "init_lstm", "interop", "linear", "lstm", "lstm_params", "relevance", "rewrite", "rules", "stacked_lstm",
    "strict",
]
