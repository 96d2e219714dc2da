"""What a job is given and what it returns: :class:`ModelSpec`, :class:`JobSummary`, :class:`JobError`,
the job's constants and settings, and the small helpers every other module of :mod:`lrpjax.jobs` uses.

The settings ``LOG_EVERY_S``, ``WAIT_FOR_PROCESS_0_S`` and ``BARRIER_TIMEOUT_S`` are read from this
module when they are needed, so ``lrpjax.jobs.WAIT_FOR_PROCESS_0_S = 60`` (which sets them here) takes
effect for the next job.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib.metadata
import sys
from typing import Any, Callable, Optional, Sequence, Union

import jax

from lrpjax._checks import check_rule_options, is_int, one_line

Array = jax.Array

METHODS = ("lrp", "gradient", "gradient_x_input", "sensitivity", "integrated_gradients", "occlusion",
           "random")
# options each baseline method accepts (``method_options``); "lrp" takes eps / bias_factor / gate
METHOD_OPTIONS = {"integrated_gradients": {"steps": int, "baseline": float, "batch_size": int},
                  "occlusion": {"value": float, "batch_size": int}, "random": {"seed": int}}
PER_STEP_ONLY = ("sensitivity", "occlusion")   # no per-feature relevance (``full`` is refused)
MANIFEST = "manifest.json"
ERRORS = "errors.parquet"
SHARD_ERRORS_DIR = "shard-errors"
FORMAT_VERSION = 1
LOG_EVERY_S = 10.0          # progress line interval when stderr is not a terminal
WAIT_FOR_PROCESS_0_S = 600.0    # without jax.distributed: how long process p > 0 waits for process 0
BARRIER_TIMEOUT_S: Optional[float] = None   # under jax.distributed: None = wait as long as it takes


class JobError(ValueError):
    """A problem the user must fix (model spec, options, input, output directory); one-line message."""


@dataclasses.dataclass
class ModelSpec:
    """What a job explains.

    Args:
      apply: ``apply(x, lengths) -> logits (B, C)``. Float inputs: ``x`` ``(B, T, F)`` float32; token
        inputs (``tokenizer`` given): ``x`` ``(B, T)`` int32 token ids, padded with ``pad_id``, and the
        model must embed them with a Flax ``Embed`` or :func:`lrpjax.rules.embed_lookup` (one lookup).
        ``lengths`` ``(B,)`` int32 are the valid lengths: pass them to the recurrent layers
        (``lrpjax.lstm(..., lengths=lengths)``, Flax ``seq_lengths=``) so that padding is ignored.
        Each example is padded to its length bucket; its relevance equals that of the unpadded
        example only if the model ignores steps ``>= length`` (pooling over time must mask them).
      name: identifies the model in the manifest (a changed name under an existing ``out_dir`` is
        refused); default: ``apply``'s module and qualified name.
      tokenizer: ``str -> list[int]`` for text inputs; an unknown token may be returned as ``None``
        or ``-1`` (mapped to ``unk_id``, or the example is an error when there is none).
      vocab: token strings by id, used for the ``tokens`` column and to check id ranges.
      unk_id: id that replaces unknown tokens.
      features: expected feature count ``F`` of float inputs (default: the first example's).
      pad_id: token id used for padding (default 0; only positions ``>= length`` get it).

    >>> import lrpjax, jax
    >>> p = lrpjax.init_lstm(jax.random.key(0), 2, 8)
    >>> W = jax.random.normal(jax.random.key(1), (8, 3))
    >>> spec = ModelSpec(lambda x, l: lrpjax.dense(lrpjax.lstm(p, x, lengths=l)[1][1], W),
    ...                  name="my-lstm", features=2)
    """

    apply: Callable[[Array, Array], Array]
    name: str = ""
    tokenizer: Optional[Callable[[str], Sequence[Optional[int]]]] = None
    vocab: Optional[Sequence[str]] = None
    unk_id: Optional[int] = None
    features: Optional[int] = None
    pad_id: int = 0

    def __post_init__(self):
        if not callable(self.apply):
            raise JobError(f"ModelSpec.apply must be callable (x, lengths) -> logits (B, C), got "
                           f"{type(self.apply).__name__}.")
        if not self.name:
            self.name = callable_name(self.apply)
        if self.tokenizer is not None and not callable(self.tokenizer):
            raise JobError(f"ModelSpec.tokenizer must be callable str -> list[int], got "
                           f"{type(self.tokenizer).__name__}.")
        if self.vocab is not None:
            self.vocab = list(self.vocab)
            if not all(isinstance(w, str) for w in self.vocab):
                raise JobError("ModelSpec.vocab must be a list of strings (token by id).")
        for field in ("unk_id", "features"):
            v = getattr(self, field)
            if v is not None and (not is_int(v) or v < 0 or (field == "features" and v == 0)):
                kind = "positive" if field == "features" else "non-negative"
                raise JobError(f"ModelSpec.{field} must be a {kind} int or None, got {v!r}.")
        if self.unk_id is not None and self.vocab is not None and self.unk_id >= len(self.vocab):
            raise JobError(f"ModelSpec.unk_id={self.unk_id} is outside the vocabulary "
                           f"(size {len(self.vocab)}).")
        if not is_int(self.pad_id) or self.pad_id < 0:
            raise JobError(f"ModelSpec.pad_id must be a non-negative int, got {self.pad_id!r}.")
        if self.tokenizer is None and (self.vocab is not None or self.unk_id is not None):
            raise JobError("ModelSpec.vocab / unk_id are given but no tokenizer: token inputs need a "
                           "tokenizer (str -> list[int]).")

    @property
    def tokens(self) -> bool:
        """True for a token (text) model."""
        return self.tokenizer is not None

    def describe(self) -> str:
        """The spec string recorded in the manifest."""
        parts = [f"name={self.name}", f"input={'tokens' if self.tokens else 'float'}"]
        if self.tokens:
            parts.append(f"tokenizer={callable_name(self.tokenizer)}")
            if self.vocab is not None:
                digest = hashlib.sha256("\n".join(self.vocab).encode()).hexdigest()[:16]
                parts.append(f"vocab={len(self.vocab)} tokens (sha256 {digest})")
            parts += [f"unk_id={self.unk_id}", f"pad_id={self.pad_id}"]
        else:
            parts.append(f"features={self.features}")
        return "; ".join(parts)


@dataclasses.dataclass
class JobSummary:
    """What :func:`attribute_dataset` did.

    ``n_examples`` counts every example of the input (explained + errors, skipped shards included);
    ``compilations``, ``seconds`` and ``examples_per_second`` (explained examples / wall seconds) are
    for this call only. ``compilations`` counts the new traces of the jitted step (one per batch
    shape): a later job in the same process with the same model function and rule options reuses the
    compiled buckets and reports only the new ones (often 0).

    With several processes (``process_count > 1``) each process returns its own summary:
    ``n_examples``, ``n_errors``, ``n_explained`` and ``n_shards`` are those of the whole job (every
    process's shards: the manifest's counts), while ``n_shards_written``, ``n_shards_skipped``,
    ``process_examples``, ``process_errors``, ``compilations``, ``seconds`` and ``examples_per_second``
    are this process's. ``complete`` says whether the whole job is finished (``manifest.json`` status
    ``complete``); it is always True for one process and under ``jax.distributed``. Without
    ``jax.distributed`` a process that finishes while others still work returns ``complete=False``, and
    its ``n_errors`` counts the errors of the shards complete so far.
    """

    n_examples: int
    n_errors: int
    n_shards_written: int
    n_shards_skipped: int
    compilations: int
    seconds: float
    examples_per_second: float
    out_dir: str
    process_index: int = 0
    process_count: int = 1
    n_shards: int = 0
    complete: bool = True
    process_examples: int = 0
    process_errors: int = 0

    @property
    def n_explained(self) -> int:
        return self.n_examples - self.n_errors


@dataclasses.dataclass(frozen=True)
class JobOptions:
    """The options of one :func:`lrpjax.jobs.attribute_dataset` call (documented there); :meth:`check`
    validates them."""

    method: str
    batch_size: int
    eps: float
    bias_factor: float
    gate: str
    target: Union[str, int]
    full: bool
    max_length: Optional[int]
    bucket_step: int
    shard_size: int
    overwrite: bool
    progress: Any
    strict: bool
    method_options: Optional[dict]

    def check(self, spec: ModelSpec) -> dict:
        """Raise :class:`JobError` for a bad option; returns the typed ``method_options``."""
        if self.method not in METHODS:
            raise JobError(f"method must be one of {METHODS}, got {self.method!r}.")
        for name in ("batch_size", "bucket_step", "shard_size"):
            v = getattr(self, name)
            if not is_int(v) or v < 1:
                raise JobError(f"{name} must be a positive int, got {v!r}.")
        if self.max_length is not None and (not is_int(self.max_length) or self.max_length < 1):
            raise JobError(f"max_length must be a positive int or None, got {self.max_length!r}.")
        if not (self.target in ("pred", "true") or (is_int(self.target) and self.target >= 0)):
            raise JobError(f"target must be 'pred' (the argmax), 'true' (the label) or a class index >= 0, "
                           f"got {self.target!r}.")
        if not isinstance(self.full, bool) or not isinstance(self.strict, bool):
            raise JobError("full and strict must be True or False.")
        if self.full and spec.tokens:
            raise JobError("full=True needs float inputs: for token inputs the relevance is per token "
                           "(summed over the embedding); drop full.")
        try:
            check_rule_options(self.eps, self.bias_factor, self.gate)
        except ValueError as e:
            raise JobError(one_line(e)) from e
        return self._checked_method_options()

    def _checked_method_options(self) -> dict:
        """Validated ``method_options`` (typed; unknown keys refused)."""
        allowed = METHOD_OPTIONS.get(self.method, {})
        out = {}
        for k, v in dict(self.method_options or {}).items():
            if k not in allowed:
                raise JobError(f"method_options: {self.method!r} takes "
                               f"{', '.join(sorted(allowed)) or 'no options'}, got {k!r}.")
            try:
                out[k] = allowed[k](v)
            except (TypeError, ValueError) as e:
                raise JobError(f"method_options[{k!r}] must be {allowed[k].__name__}, got {v!r}.") from e
        if self.full and self.method in PER_STEP_ONLY:
            raise JobError(f"full=True needs per-feature relevance; method {self.method!r} gives one value "
                           f"per step. Drop --full or use another method.")
        return out


def callable_name(f) -> str:
    """``module.qualname`` of a function (of the function inside a ``functools.partial``)."""
    f0 = getattr(f, "func", f)  # functools.partial
    mod = getattr(f0, "__module__", None) or ""
    qual = getattr(f0, "__qualname__", None) or type(f0).__qualname__
    return f"{mod}.{qual}" if mod else qual


def as_model_spec(model) -> ModelSpec:
    """A :class:`ModelSpec` from what a user or a model factory gives: a spec, a callable
    ``apply(x, lengths)`` or a tuple ``(apply, tokenizer)``."""
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, tuple) and len(model) == 2 and callable(model[0]) and callable(model[1]):
        return ModelSpec(model[0], tokenizer=model[1])
    if callable(model):
        return ModelSpec(model)
    raise JobError(f"model must be a ModelSpec, a callable apply(x, lengths) -> logits (B, C) or a "
                   f"tuple (apply, tokenizer); got {type(model).__name__}.")


def package_version(dist: str, module: Optional[str] = None) -> Optional[str]:
    """The installed version of distribution ``dist`` (else ``module.__version__`` if imported)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        mod = sys.modules.get(module or dist)
        return getattr(mod, "__version__", None)


def utc_now() -> str:
    """The current time, ISO 8601 in UTC to the second (the manifest's timestamps)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
