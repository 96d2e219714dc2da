"""Dataset-wide attribution jobs: explain every example of a dataset and write the relevance to Parquet.

>>> summary = attribute_dataset(model, "data.npz", "out/")        # doctest: +SKIP
>>> summary.examples_per_second                                   # doctest: +SKIP

Data flow, one input shard (``shard_size`` examples) at a time::

    reader (streams records) -> validate / tokenize (bad ones -> error rows)
      -> length buckets (pad to a multiple of ``bucket_step``) -> batches of ``batch_size`` rows,
         sharded over all local devices (1-D mesh "data")
      -> one jitted relevance call per batch (one compilation per bucket length)
      -> rows in input order -> ``part-NNNNN.parquet`` (+ ``shard-errors/errors-NNNNN.parquet``),
         each written to a hidden temporary file and renamed into place (atomic)

Output directory (readable with pyarrow / pandas alone, no lrpjax needed)::

    out_dir/manifest.json                   model, rule options, input fingerprint, versions, counts
    out_dir/part-00000.parquet, ...         one per input shard: the explained examples, input order
    out_dir/errors.parquet                  every bad example: index, id, reason (merged at the end)
    out_dir/shard-errors/errors-00000.parquet, ...   the same, per shard (used when resuming)

Columns of a part file: ``index`` (int64, 0-based position in the input), ``id`` (int64 when the
input's first example has an integer id or none, else string), ``label`` (int64, null if none),
``length`` (int32), ``target`` (int32, the explained class), ``score`` (float32, its logit),
``relevance`` (list<float32>: one value per step, summed over features / the embedding),
``relevance_full`` (list<list<float32>>, ``length x F``, only with ``full=True``) and ``tokens``
(list<string>, token inputs only). Read them with::

    import glob, pyarrow.parquet as pq
    table = pq.ParquetDataset(sorted(glob.glob("out/part-*.parquet"))).read()

(``pq.read_table("out/")`` would also try ``manifest.json`` and ``errors.parquet``; or use
:func:`read_results`.)

What streams: ``.npy`` is memory-mapped; ``.npz`` loads ``lengths`` / ``labels`` / ``ids`` and
memory-maps ``x`` when the archive is uncompressed (``np.savez``; ``np.savez_compressed`` archives load
``x`` fully); ``.jsonl``, text files and ``.parquet`` (by record batch) are read incrementally; a
Python iterable is consumed lazily. At most one shard of examples is held in memory.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import functools
import glob
import hashlib
import importlib.metadata
import itertools
import json
import os
import re
import struct
import sys
import time
import zipfile
import zlib
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

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
LOG_EVERY_S = 10.0          # progress line interval when stderr is not a terminal
FORMAT_VERSION = 1
WAIT_FOR_PROCESS_0_S = 600.0    # without jax.distributed: how long process p > 0 waits for process 0
BARRIER_TIMEOUT_S: Optional[float] = None   # under jax.distributed: None = wait as long as it takes


class JobError(ValueError):
    """A problem the user must fix (model spec, options, input, output directory); one-line message."""


# ----------------------------------------------------------------------------------------------
# Public dataclasses

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
            self.name = _callable_name(self.apply)
        if self.tokenizer is not None and not callable(self.tokenizer):
            raise JobError(f"ModelSpec.tokenizer must be callable str -> list[int], got "
                           f"{type(self.tokenizer).__name__}.")
        if self.vocab is not None:
            self.vocab = list(self.vocab)
            if not all(isinstance(w, str) for w in self.vocab):
                raise JobError("ModelSpec.vocab must be a list of strings (token by id).")
        for field in ("unk_id", "features"):
            v = getattr(self, field)
            if v is not None and (not _is_int(v) or v < 0 or (field == "features" and v == 0)):
                kind = "positive" if field == "features" else "non-negative"
                raise JobError(f"ModelSpec.{field} must be a {kind} int or None, got {v!r}.")
        if self.unk_id is not None and self.vocab is not None and self.unk_id >= len(self.vocab):
            raise JobError(f"ModelSpec.unk_id={self.unk_id} is outside the vocabulary "
                           f"(size {len(self.vocab)}).")
        if not _is_int(self.pad_id) or self.pad_id < 0:
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
            parts.append(f"tokenizer={_callable_name(self.tokenizer)}")
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


# ----------------------------------------------------------------------------------------------
# Small helpers

def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _callable_name(f) -> str:
    f0 = getattr(f, "func", f)  # functools.partial
    mod = getattr(f0, "__module__", None) or ""
    qual = getattr(f0, "__qualname__", None) or type(f0).__qualname__
    return f"{mod}.{qual}" if mod else qual


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise JobError("attribution jobs write Parquet and need pyarrow: pip install pyarrow") from e
    return pa, pq


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _version(dist: str, module: Optional[str] = None) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        mod = sys.modules.get(module or dist)
        return getattr(mod, "__version__", None)


def _versions() -> dict:
    import lrpjax
    return {"lrpjax": getattr(lrpjax, "__version__", None), "jax": jax.__version__,
            "jaxlib": _version("jaxlib"), "flax": _version("flax"), "numpy": np.__version__,
            "pyarrow": _pa()[0].__version__, "python": sys.version.split()[0]}


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def _as_model_spec(model) -> ModelSpec:
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, tuple) and len(model) == 2 and callable(model[0]) and callable(model[1]):
        return ModelSpec(model[0], tokenizer=model[1])
    if callable(model):
        return ModelSpec(model)
    raise JobError(f"model must be a ModelSpec, a callable apply(x, lengths) -> logits (B, C) or a "
                   f"tuple (apply, tokenizer); got {type(model).__name__}.")


# ----------------------------------------------------------------------------------------------
# Reading: every format yields _Record objects (raw, unvalidated), lazily.

@dataclasses.dataclass
class _Record:
    index: int                    # 0-based position in the input (line number for line formats)
    id: Any = None                # given id, or None (-> index)
    x: Any = None                 # (T, F) array-like of floats
    text: Optional[str] = None
    label: Any = None
    length: Any = None            # valid length of x (npz lengths, a record's "length")
    error: Optional[str] = None   # the record could not even be parsed


@dataclasses.dataclass
class _Source:
    kind: str
    path: Optional[str]
    total: Optional[int]
    fingerprint: dict
    records: Callable[[], Iterator[_Record]]


def _head_fingerprint(path: Path, kind: str) -> dict:
    st = path.stat()
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    return {"kind": kind, "path": str(path.resolve()), "size": st.st_size,
            "mtime": _dt.datetime.fromtimestamp(st.st_mtime, _dt.timezone.utc).isoformat(),
            "sha256_first_mb": hashlib.sha256(head).hexdigest()}


def _count_lines(path: Path) -> int:
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def _npz_member_memmap(path: Path, name: str) -> Optional[np.ndarray]:
    """Memory-map member ``name`` (e.g. ``x.npy``) of an uncompressed ``.npz``; None if compressed."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            return None
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if dtype.hasobject:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                     order="F" if fortran else "C")


def _rows(x: np.ndarray, block_bytes: int = 32 << 20) -> Iterator[tuple[int, np.ndarray]]:
    """``(i, x[i])`` for a (memory-mapped) ``(N, T, F)`` array, read in blocks of about 32 MB."""
    per_row = max(1, int(np.prod(x.shape[1:])) * 4)
    step = max(1, block_bytes // per_row)
    for a in range(0, x.shape[0], step):
        try:
            block = np.asarray(x[a:a + step], dtype=np.float32)
        except (TypeError, ValueError):   # not numeric: per-row errors
            block = x[a:a + step]
        for j in range(block.shape[0]):
            yield a + j, block[j]


def _open_npz(path: Path) -> _Source:
    try:
        with np.load(path, allow_pickle=False) as f:
            names = set(f.files)
            if "x" not in names:
                raise JobError(f"{path}: an .npz input needs an array 'x' (N, T, F); found "
                               f"{sorted(names) or 'no arrays'}.")
            small = {k: np.asarray(f[k]) for k in ("lengths", "labels", "ids") if k in names}
        x = _npz_member_memmap(path, "x.npy")
        if x is None:  # compressed archive: x has to be loaded
            with np.load(path, allow_pickle=False) as f:
                x = f["x"]
    except JobError:
        raise
    except Exception as e:
        raise JobError(f"cannot read {path} as .npz: {_one_line(e)}") from e
    if x.ndim != 3:
        raise JobError(f"{path}: x must have shape (N, T, F), got {x.shape}.")
    N = x.shape[0]
    for k, v in small.items():
        if v.shape != (N,):
            raise JobError(f"{path}: '{k}' must have shape ({N},) like x's first axis, got {v.shape}.")
    as_list = lambda k: small[k].tolist() if k in small else [None] * N   # Python scalars, once
    lengths, labels, ids = as_list("lengths"), as_list("labels"), as_list("ids")

    def records():
        for i, row in _rows(x):
            yield _Record(i, ids[i], x=row, label=labels[i], length=lengths[i])

    return _Source("npz", str(path), N, _head_fingerprint(path, "npz"), records)


def _open_npy(path: Path) -> _Source:
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        raise JobError(f"cannot read {path} as .npy: {_one_line(e)}") from e
    if x.ndim != 3:
        raise JobError(f"{path}: an .npy input must have shape (N, T, F) (all full length), got {x.shape}.")

    def records():
        for i, row in _rows(x):
            yield _Record(i, x=row)

    return _Source("npy", str(path), x.shape[0], _head_fingerprint(path, "npy"), records)


def _record_from_mapping(i: int, d: dict) -> _Record:
    if "x" not in d and "text" not in d:
        return _Record(i, d.get("id"), error="record has neither 'x' nor 'text'")
    return _Record(i, d.get("id"), x=d.get("x"), text=d.get("text"), label=d.get("label"),
                   length=d.get("length"))


def _open_jsonl(path: Path) -> _Source:
    def records():
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                except json.JSONDecodeError as e:
                    yield _Record(i, error=f"invalid JSON: {e.msg}")
                    continue
                if not isinstance(d, dict):
                    yield _Record(i, error=f"a JSON line must be an object, got {type(d).__name__}")
                    continue
                yield _record_from_mapping(i, d)

    return _Source("jsonl", str(path), _count_lines(path), _head_fingerprint(path, "jsonl"), records)


def _open_text(path: Path) -> _Source:
    def records():
        with open(path, encoding="utf-8", newline="") as f:
            for i, line in enumerate(f):
                line = line.rstrip("\r\n")
                label, text = None, line
                head, sep, rest = line.partition("\t")
                if sep and head.strip().lstrip("+-").isdigit():
                    label, text = int(head), rest
                yield _Record(i, text=text, label=label)

    return _Source("text", str(path), _count_lines(path), _head_fingerprint(path, "text"), records)


def _list2d_rows(col) -> list:
    """A pyarrow list<list<number>> column -> per row a float32 (T, F) array, or an error string."""
    pa, _ = _pa()
    out = []
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)
            or pa.types.is_fixed_size_list(col.type)):
        return ["column 'x' must be a list of lists of numbers"] * len(col)
    inner = col.type.value_type
    if not (pa.types.is_list(inner) or pa.types.is_large_list(inner) or pa.types.is_fixed_size_list(inner)):
        return ["column 'x' must be a list of lists of numbers"] * len(col)
    outer_l = col.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    vals = col.flatten()
    inner_l = vals.value_lengths().fill_null(-1).to_numpy(zero_copy_only=False)
    try:
        flat = vals.flatten().cast(pa.float32()).to_numpy(zero_copy_only=False)
    except Exception:
        return ["column 'x' must hold numbers"] * len(col)
    flat = np.asarray(flat, np.float32)
    nulls = col.is_null().to_numpy(zero_copy_only=False)
    o_steps = np.concatenate([[0], np.cumsum(outer_l)])
    inner_pos = np.concatenate([[0], np.cumsum(np.maximum(inner_l, 0))])
    for r in range(len(col)):
        if nulls[r]:
            out.append("missing x (null)")
            continue
        a, b = o_steps[r], o_steps[r + 1]
        lens = inner_l[a:b]
        if b > a and (lens.min() < 0 or lens.min() != lens.max()):
            out.append("x is not a (T, F) array: steps have different feature counts or are null")
            continue
        F = int(lens[0]) if b > a else 0
        out.append(flat[inner_pos[a]:inner_pos[b]].reshape(b - a, F))
    return out


def _open_parquet(path: Path) -> _Source:
    _, pq = _pa()
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise JobError(f"cannot read {path} as Parquet: {_one_line(e)}") from e
    names = set(pf.schema_arrow.names)
    if "x" not in names and "text" not in names:
        raise JobError(f"{path}: a Parquet input needs a column 'x' (list of lists of floats) or "
                       f"'text'; found columns {sorted(names)}.")
    cols = [c for c in ("x", "text", "label", "id", "length") if c in names]

    def records():
        i = 0
        for batch in pf.iter_batches(batch_size=2048, columns=cols):
            n = batch.num_rows
            get = {c: batch.column(c) for c in cols}
            xs = _list2d_rows(get["x"]) if "x" in get else [None] * n
            py = {c: get[c].to_pylist() for c in ("text", "label", "id", "length") if c in get}
            get_py = lambda c, r: py[c][r] if c in py else None
            for r in range(n):
                x = xs[r]
                rec = _Record(i, get_py("id", r), text=get_py("text", r), label=get_py("label", r),
                              length=get_py("length", r))
                if isinstance(x, str):
                    if rec.text is None:
                        rec.error = x
                else:
                    rec.x = x
                if rec.x is None and rec.text is None and rec.error is None:
                    rec.error = "record has neither 'x' nor 'text'"
                yield rec
                i += 1

    return _Source("parquet", str(path), pf.metadata.num_rows, _head_fingerprint(path, "parquet"), records)


def _open_iterable(data: Iterable) -> _Source:
    def records():
        for i, item in enumerate(data):
            if isinstance(item, dict):
                yield _record_from_mapping(i, item)
            elif isinstance(item, str):
                yield _Record(i, text=item)
            elif isinstance(item, (np.ndarray, jax.Array, list, tuple)):
                yield _Record(i, x=item)
            else:
                yield _Record(i, error=f"unsupported item type {type(item).__name__} (want a dict with "
                                       f"'x' or 'text', an array (T, F) or a string)")

    total = len(data) if hasattr(data, "__len__") else None
    return _Source("iterable", None, total, {"kind": "iterable", "type": type(data).__name__}, records)


def open_dataset(dataset: Union[str, os.PathLike, Iterable]) -> _Source:
    """Open ``dataset`` (a path or an iterable) for streaming; raises :class:`JobError` if unreadable."""
    if isinstance(dataset, (str, os.PathLike)):
        path = Path(dataset)
        if not path.exists():
            raise JobError(f"input not found: {path}")
        if not path.is_file():
            raise JobError(f"input is not a file: {path} (give an .npz, .npy, .jsonl, .parquet or text file)")
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise JobError(f"cannot read input {path}: {e.strerror or e}") from e
        suffix = path.suffix.lower()
        opener = {".npz": _open_npz, ".npy": _open_npy, ".jsonl": _open_jsonl, ".ndjson": _open_jsonl,
                  ".parquet": _open_parquet, ".pq": _open_parquet}.get(suffix, _open_text)
        return opener(path)
    if isinstance(dataset, (bytes, dict)) or not hasattr(dataset, "__iter__"):
        raise JobError(f"dataset must be a path or an iterable of examples, got {type(dataset).__name__}.")
    if isinstance(dataset, np.ndarray) and dataset.ndim == 3:
        return _open_iterable(list(dataset))
    return _open_iterable(dataset)


# ----------------------------------------------------------------------------------------------
# Validation: a raw record -> an example ready for batching, or an error reason.

@dataclasses.dataclass
class _Example:
    index: int
    id: Any
    data: np.ndarray              # (L, F) float32 or (L,) int32 token ids
    label: Optional[int]
    tokens: Optional[list] = None
    length: int = 0

    def __post_init__(self):
        self.length = int(self.data.shape[0])


class _Validator:
    """Checks and converts records; ``id_type`` is fixed by the first record ("int" or "string")."""

    def __init__(self, spec: ModelSpec, target, max_length: Optional[int]):
        self.spec, self.target, self.max_length = spec, target, max_length
        self.features = spec.features
        self.id_type: Optional[str] = None
        self.n_classes: Optional[int] = None
        self.seen: set = set()          # explicit ids (duplicates are errors)
        self.implicit = bytearray()      # bitmap of the indices used as ids (1 bit per example)

    def mark_seen(self, rec: _Record, rid) -> bool:
        """Record ``rid``; False if it was used before. Implicit ids (the record's index) cost one bit
        each, so a dataset without ids does not grow the memory of a job."""
        if rec.id is None and self.id_type == "int":
            k = int(rid)
            byte, bit = divmod(k, 8)
            if byte >= len(self.implicit):
                self.implicit.extend(bytes(byte + 1 - len(self.implicit) + (1 << 12)))
            if self.implicit[byte] >> bit & 1 or k in self.seen:
                return False
            self.implicit[byte] |= 1 << bit
            return True
        if rid in self.seen:
            return False
        if self.id_type == "int" and 0 <= rid and (rid >> 3) < len(self.implicit) \
                and self.implicit[rid >> 3] >> (rid & 7) & 1:
            return False
        self.seen.add(rid)
        return True

    def record_id(self, rec: _Record):
        """The output id of a record (None if it does not fit the id type)."""
        raw = rec.index if rec.id is None else rec.id
        if self.id_type is None:
            self.id_type = "int" if _is_int(raw) else "string"
        if self.id_type == "int":
            return int(raw) if _is_int(raw) else None
        return raw if isinstance(raw, str) else str(raw)

    def infer_features(self, rec: _Record) -> None:
        if self.features is None and rec.x is not None and rec.error is None:
            try:
                a = np.asarray(rec.x, dtype=np.float32)
            except (ValueError, TypeError):
                return
            if a.ndim == 2 and a.shape[1] > 0:
                self.features = int(a.shape[1])

    def label(self, raw) -> tuple[Optional[int], Optional[str]]:
        if raw is None:
            return None, None
        if _is_int(raw):
            return int(raw), None
        if isinstance(raw, float) and raw.is_integer():
            return int(raw), None
        if isinstance(raw, str) and raw.strip().lstrip("+-").isdigit():
            return int(raw), None
        return None, f"label {raw!r} is not an integer class index"

    def __call__(self, rec: _Record) -> tuple[Any, Optional[_Example], Optional[str]]:
        """Returns ``(id, example, None)`` or ``(id, None, reason)``."""
        rid = self.record_id(rec)
        if rid is None:
            return None, None, f"id {rec.id!r} is not an integer (the input's first id is)"
        if not self.mark_seen(rec, rid):
            return rid, None, f"duplicate id {rid!r}"
        if rec.error is not None:
            return rid, None, rec.error
        label, label_err = self.label(rec.label)
        if self.target == "true":
            if label_err:
                return rid, None, label_err
            if label is None:
                return rid, None, "no label (target='true' needs one)"
            if self.n_classes is not None and not 0 <= label < self.n_classes:
                return rid, None, f"label {label} out of range [0, {self.n_classes})"
        if self.spec.tokens:
            ex, err = self._tokens(rec)
        else:
            ex, err = self._floats(rec)
        if err:
            return rid, None, err
        L = ex.shape[0]
        if L == 0:
            return rid, None, "empty sequence (length 0)"
        if self.max_length is not None and L > self.max_length:
            return rid, None, f"too long: length {L} > max_length {self.max_length}"
        tokens = None
        if self.spec.tokens:
            v = self.spec.vocab
            tokens = [v[i] for i in ex] if v is not None else [str(i) for i in ex]
        return rid, _Example(rec.index, rid, ex, label, tokens), None

    def _floats(self, rec: _Record):
        if rec.x is None:
            if rec.text is not None:
                raise JobError(f"example {rec.index} is text but the model spec has no tokenizer: give "
                               f"ModelSpec(tokenizer=...) or return (apply, tokenizer) from the factory.")
            return None, "record has no 'x'"
        try:
            a = np.asarray(rec.x, dtype=np.float32)
        except (ValueError, TypeError) as e:
            return None, f"x is not a (T, F) numeric array: {_one_line(e)[:100]}"
        if a.ndim != 2:
            return None, f"x must have shape (T, F), got {a.shape}"
        if rec.length is not None:
            if not _is_int(rec.length) or not 0 <= rec.length <= a.shape[0]:
                return None, f"length {rec.length!r} outside [0, {a.shape[0]}] (the rows of x)"
            a = a[:int(rec.length)]
        if a.shape[0] == 0:
            return a, None
        if self.features is None:          # no earlier example fixed it (all bad so far)
            self.features = int(a.shape[1])
        if a.shape[1] != self.features:
            return None, f"wrong feature count: {a.shape[1]} (expected {self.features})"
        if self.max_length is not None and a.shape[0] > self.max_length:
            return a, None
        if not np.isfinite(a).all():
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            return None, f"non-finite values: {bad} NaN/inf in x"
        return np.ascontiguousarray(a), None

    def _tokens(self, rec: _Record):
        spec = self.spec
        if rec.text is None:
            if rec.x is not None:
                raise JobError(f"example {rec.index} has float features 'x' but the model spec has a "
                               f"tokenizer (a token model); give text, or drop the tokenizer.")
            return None, "record has no 'text'"
        if not isinstance(rec.text, str):
            return None, f"text must be a string, got {type(rec.text).__name__}"
        try:
            raw = list(spec.tokenizer(rec.text))
        except Exception as e:  # the user's tokenizer: one bad example must not stop the job
            return None, f"tokenizer failed: {type(e).__name__}: {_one_line(e)[:100]}"
        unknown = [k for k, t in enumerate(raw) if t is None or (_is_int(t) and t == -1)]
        if unknown:
            if spec.unk_id is None:
                return None, (f"unknown token(s) at position(s) {unknown[:10]} and the model spec has "
                              f"no unk_id")
            unk = set(unknown)
            raw = [spec.unk_id if k in unk else t for k, t in enumerate(raw)]
        if not all(_is_int(t) for t in raw):
            return None, "tokenizer returned non-integer ids"
        ids = np.asarray(raw, dtype=np.int64)
        hi = len(spec.vocab) if spec.vocab is not None else np.iinfo(np.int32).max
        bad = ids[(ids < 0) | (ids >= hi)]
        if bad.size:
            return None, f"token id(s) {bad[:5].tolist()} outside [0, {hi})"
        return ids.astype(np.int32), None


# ----------------------------------------------------------------------------------------------
# The jitted attribution step (one compilation per distinct batch shape = per bucket length).

def _make_step(spec: ModelSpec, method: str, target_mode, eps: float, bias_factor: float, gate: str,
               strict: bool, full: bool, counter: list, options: dict) -> Callable:
    import lrpjax
    from lrpjax import rules
    from lrpjax.relevance import full_precision

    apply = spec.apply

    def step(x, lengths, tgt, idx):
        counter[0] += 1            # runs once per trace = per compilation
        # every method with full float32 matmuls (see lrpjax.relevance.full_precision): LRP needs it
        # on GPU/TPU, and the baselines are then computed like for like
        with full_precision():
            return step_out(x, lengths, tgt, idx)

    def traced_step(x, lengths, tgt, idx):
        fn = lambda z: apply(z, lengths)
        t = None if target_mode == "pred" else tgt
        if method == "lrp":
            if spec.tokens:
                ex = lrpjax.explain_tokens(fn, x, t, eps=eps, bias_factor=bias_factor, gate=gate,
                                           strict=strict)
            else:
                ex = lrpjax.explain(fn, x, t, eps=eps, bias_factor=bias_factor, gate=gate, strict=strict)
            return ex.relevance, ex.scores, ex.target
        # a baseline: on the float input, or on the embedding of token inputs
        if spec.tokens:
            from lrpjax.relevance import _flax_hooks
            captured: list = []
            with rules.token_mode("capture", captured), _flax_hooks(fn):
                fn(x)
            if len(captured) != 1:
                raise JobError(f"method={method!r} on token inputs needs exactly one embedding "
                               f"lookup in the model, found {len(captured)}.")

            def on_emb(e):
                with rules.token_mode("inject", [e]), _flax_hooks(fn):
                    return fn(x)
            inp, f = captured[0], on_emb
        else:
            inp, f = x, fn
        if method in ("gradient", "gradient_x_input"):   # one forward + one backward
            scores, vjp = jax.vjp(f, inp)
            tt = (jnp.argmax(scores, axis=-1) if t is None else t).astype(jnp.int32)
            (g,) = vjp(jax.nn.one_hot(tt, scores.shape[-1], dtype=scores.dtype))
            return (g * inp if method == "gradient_x_input" else g), scores, tt
        scores = f(inp)
        tt = (jnp.argmax(scores, axis=-1) if t is None else t).astype(jnp.int32)
        if method == "random":     # seeded per example (seed, index): independent of the batching
            seed = int(options.get("seed", 0))
            R = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(jax.random.key(seed), i),
                                                     inp.shape[1:], inp.dtype))(idx)
        else:
            R = lrpjax.baselines.METHODS[method](f, inp, tt, **options)
        return R, scores, tt

    def step_out(x, lengths, tgt, idx):
        R, scores, tt = traced_step(x, lengths, tgt, idx)
        per_step = jnp.sum(R, axis=-1) if R.ndim == 3 else R    # over features / embedding dims
        R_full = R if R.ndim == 3 and not spec.tokens else None
        score = jnp.take_along_axis(scores, tt[:, None].astype(jnp.int32), axis=1)[:, 0]
        out = {"relevance": per_step.astype(jnp.float32), "score": score.astype(jnp.float32),
               "target": tt.astype(jnp.int32)}
        if full:
            out["relevance_full"] = R_full.astype(jnp.float32)
        return out

    return step


@dataclasses.dataclass
class _CachedStep:
    """A jitted attribution step, kept across jobs: a second job with the same model function and
    options (e.g. re-running, or explaining another dataset) compiles nothing new."""
    apply: Callable             # held so that ``id(apply)`` in the key cannot be reused
    fn: Callable                # jax.jit(step) with rows sharded over the local devices
    counter: list               # [traces so far] = compilations (one per batch shape)
    devices: tuple
    sharding: Any               # rows split over the local devices (1-D mesh "data")


_STEP_CACHE: "OrderedDict[tuple, _CachedStep]" = OrderedDict()
_STEP_CACHE_SIZE = 8


def _cached_step(spec: ModelSpec, method: str, target_mode, eps: float, bias_factor: float, gate: str,
                 strict: bool, full: bool, options: Optional[dict] = None) -> _CachedStep:
    """The jitted step for these settings, from a small LRU cache keyed by the model function's
    identity, the options and the local devices (jit's own cache then holds one executable per batch
    shape)."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    devices = tuple(jax.local_devices())
    options = dict(options or {})
    key = (id(spec.apply), spec.tokens, method, target_mode == "pred", eps, bias_factor, gate, strict,
           full, devices, tuple(sorted(options.items())))
    hit = _STEP_CACHE.get(key)
    if hit is not None and hit.apply is spec.apply:
        _STEP_CACHE.move_to_end(key)
        return hit
    counter = [0]
    step = _make_step(spec, method, target_mode, eps, bias_factor, gate, strict, full, counter, options)
    # Inputs are given as host arrays and sharded by jit (rows split over "data"); committing them
    # with device_put first would put sharding-typed avals into the trace (a `reshard` inside
    # jnp.where, which strict mode refuses).
    sharding = NamedSharding(Mesh(np.array(devices), ("data",)), P("data"))
    entry = _CachedStep(spec.apply, jax.jit(step, in_shardings=(sharding,) * 4), counter, devices,
                        sharding)
    _remember(_STEP_CACHE, key, entry)
    return entry


_PROBE_CACHE: "OrderedDict[int, tuple]" = OrderedDict()


def _jitted_apply(apply: Callable) -> Callable:
    """``jax.jit(apply)``, cached by identity (the probe batch then compiles once per model)."""
    hit = _PROBE_CACHE.get(id(apply))
    if hit is not None and hit[0] is apply:
        return hit[1]
    f = jax.jit(apply)
    _remember(_PROBE_CACHE, id(apply), (apply, f))
    return f


def _remember(cache: OrderedDict, key, value) -> None:
    """Insert into a small LRU cache (the oldest entries beyond ``_STEP_CACHE_SIZE`` are dropped)."""
    cache[key] = value
    while len(cache) > _STEP_CACHE_SIZE:
        cache.popitem(last=False)


class _Runner:
    """Batches a shard's examples by length bucket, runs them sharded over all local devices."""

    def __init__(self, spec: ModelSpec, step: "_CachedStep", target_mode, batch_size: int,
                 bucket_step: int, max_length: Optional[int], features: Optional[int]):
        self.spec, self.target_mode = spec, target_mode
        self.n_devices = len(step.devices)
        self.step, self.sharding = step.fn, step.sharding
        self.batch = -(-batch_size // self.n_devices) * self.n_devices
        self.bucket_step, self.max_length, self.features = bucket_step, max_length, features
        self.bucket_lengths: set = set()

    def bucket(self, L: int) -> int:
        b = -(-L // self.bucket_step) * self.bucket_step
        return min(b, self.max_length) if self.max_length is not None else b

    def _batch_arrays(self, chunk: list, L: int):
        B, n = self.batch, len(chunk)
        rows = chunk + [chunk[0]] * (B - n)   # dummy rows: copies of a real one, dropped afterwards
        if self.spec.tokens:
            x = np.full((B, L), self.spec.pad_id, np.int32)
        else:
            x = np.zeros((B, L, self.features), np.float32)
        lengths = np.empty((B,), np.int32)
        tgt = np.zeros((B,), np.int32)
        idx = np.empty((B,), np.int32)     # input positions (seeds of method="random")
        for j, ex in enumerate(rows):
            x[j, :ex.length] = ex.data
            lengths[j] = ex.length
            idx[j] = ex.index
            if self.target_mode == "true":
                tgt[j] = ex.label
            elif self.target_mode != "pred":
                tgt[j] = self.target_mode
        return x, lengths, tgt, idx

    def dispatch(self, examples: list) -> list:
        """Start the device work for a shard's examples (asynchronous); returns a handle for
        :meth:`collect`."""
        buckets = defaultdict(list)
        for k, ex in enumerate(examples):
            buckets[self.bucket(ex.length)].append(k)
        B = self.batch
        dispatched, pending = [], []
        order = sorted(buckets)
        for bi, L in enumerate(order):
            # leftovers of a shorter bucket ride along, padded to this length: at most one partial
            # batch per shard, and every batch shape is (B, bucket length)
            items = pending + buckets[L]
            last = bi == len(order) - 1
            n_full = len(items) if last else (len(items) // B) * B
            for s in range(0, n_full, B):
                chunk = items[s:s + B]
                self.bucket_lengths.add(L)
                arrays = self._batch_arrays([examples[k] for k in chunk], L)
                try:
                    out = self.step(*arrays)
                except JobError:
                    raise
                except Exception as e:
                    raise JobError(f"the model failed on a batch of shape {tuple(arrays[0].shape)} "
                                   f"({arrays[0].dtype}): {type(e).__name__}: {_one_line(e)}") from e
                dispatched.append((chunk, out))
            pending = items[n_full:]
        return dispatched

    def collect(self, examples: list, dispatched: list, on_batch: Callable[[int], None]) -> list:
        """Wait for a dispatched shard; per example (in the given order) a dict of numpy results."""
        results: list = [None] * len(examples)
        for chunk, out in dispatched:
            host = {k: np.asarray(v) for k, v in out.items()}
            for j, k in enumerate(chunk):
                L = examples[k].length
                r = {"relevance": host["relevance"][j, :L], "score": host["score"][j],
                     "target": host["target"][j]}
                if "relevance_full" in host:
                    r["relevance_full"] = host["relevance_full"][j, :L]
                results[k] = r
            on_batch(len(chunk))
        return results


# ----------------------------------------------------------------------------------------------
# Writing

def _id_type(pa, id_type: str):
    return pa.int64() if id_type == "int" else pa.string()


def _list_array(pa, arrays: list, lengths: np.ndarray, inner: Optional[int] = None):
    """list<float32> (or list<list<float32>> with ``inner`` = F) from per-row numpy arrays."""
    offsets = np.zeros(len(arrays) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0, np.float32)
    values = pa.array(flat.astype(np.float32, copy=False), pa.float32())
    if inner is not None:  # rows of F values per step
        steps = np.arange(int(offsets[-1]) + 1, dtype=np.int64) * inner
        values = pa.ListArray.from_arrays(pa.array(steps.astype(np.int32), pa.int32()), values)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32), pa.int32()), values)


def _results_table(pa, examples: list, results: list, id_type: str, full: bool, tokens: bool):
    lengths = np.array([ex.length for ex in examples], np.int64)
    cols = {
        "index": pa.array([ex.index for ex in examples], pa.int64()),
        "id": pa.array([ex.id for ex in examples], _id_type(pa, id_type)),
        "label": pa.array([ex.label for ex in examples], pa.int64()),
        "length": pa.array(lengths.astype(np.int32), pa.int32()),
        "target": pa.array(np.array([r["target"] for r in results], np.int32), pa.int32()),
        "score": pa.array(np.array([r["score"] for r in results], np.float32), pa.float32()),
        "relevance": _list_array(pa, [r["relevance"] for r in results], lengths),
    }
    if full:
        F = results[0]["relevance_full"].shape[-1] if results else 0
        cols["relevance_full"] = _list_array(pa, [r["relevance_full"] for r in results], lengths, inner=F)
    if tokens:
        cols["tokens"] = pa.array([ex.tokens for ex in examples], pa.list_(pa.string()))
    return pa.table(cols)


def _results_schema(pa, id_type: str, full: bool, tokens: bool):
    fields = [("index", pa.int64()), ("id", _id_type(pa, id_type)), ("label", pa.int64()),
              ("length", pa.int32()), ("target", pa.int32()), ("score", pa.float32()),
              ("relevance", pa.list_(pa.float32()))]
    if full:
        fields.append(("relevance_full", pa.list_(pa.list_(pa.float32()))))
    if tokens:
        fields.append(("tokens", pa.list_(pa.string())))
    return pa.schema(fields)


def _errors_table(pa, rows: list, id_type: str):
    return pa.table({"index": pa.array([r[0] for r in rows], pa.int64()),
                     "id": pa.array([r[1] for r in rows], _id_type(pa, id_type)),
                     "reason": pa.array([r[2] for r in rows], pa.string())})


def _tmp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


def _write_atomic_parquet(table, final: Path, metadata: dict) -> None:
    _, pq = _pa()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           **{k.encode(): str(v).encode() for k, v in metadata.items()}})
    tmp = _tmp_path(final)
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise JobError(f"cannot write {final}: {e.strerror or e}; check that the output directory is "
                       f"writable and has free space.") from e


def _write_atomic_json(obj: dict, final: Path) -> None:
    tmp = _tmp_path(final)
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, final)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise JobError(f"cannot write {final}: {e.strerror or e}; choose a writable output directory.") from e


def _part_path(out: Path, k: int) -> Path:
    return out / f"part-{k:05d}.parquet"


def _shard_errors_path(out: Path, k: int) -> Path:
    return out / SHARD_ERRORS_DIR / f"errors-{k:05d}.parquet"


def _complete_rows(path: Path, job_key: str) -> Optional[int]:
    """Row count of a finished shard file of this job (checked in the footer), else None."""
    _, pq = _pa()
    try:
        md = pq.read_metadata(path)
        kv = md.metadata or {}
        if kv.get(b"lrpjax.job") != job_key.encode() or int(kv[b"lrpjax.rows"]) != md.num_rows:
            return None
        return md.num_rows
    except Exception:
        return None


def _own_files(out: Path, shard_tmp: bool = True) -> list:
    """Every file a job writes into ``out`` (for overwrite=True); ``shard_tmp=False``: not the temporary
    files of shards (with several processes they belong to their writers)."""
    pats = ["part-*.parquet", ERRORS, MANIFEST, f"{SHARD_ERRORS_DIR}/errors-*.parquet"]
    pats += [".*.tmp", f"{SHARD_ERRORS_DIR}/.*.tmp"] if shard_tmp else [f".{MANIFEST}.*.tmp", f".{ERRORS}.*.tmp"]
    return sorted({Path(p) for pat in pats for p in glob.glob(str(out / pat))})


def _remove_stale_tmp(out: Path, p: int, n: int) -> None:
    """Remove the temporary files of an interrupted run: all of them for one process; with ``n``
    processes, process ``p`` removes those of its shards (``k % n == p``), process 0 also those of
    ``manifest.json`` / ``errors.parquet``."""
    for f in glob.glob(str(out / ".*.tmp")) + glob.glob(str(out / SHARD_ERRORS_DIR / ".*.tmp")):
        if n > 1:
            m = re.match(r"\.(?:part|errors)-(\d+)\.parquet\.", os.path.basename(f))
            if (int(m.group(1)) % n if m else 0) != p:
                continue
        with contextlib.suppress(OSError):
            os.unlink(f)


def _scan_shards(out: Path, n_shards: int, job_key: str) -> tuple[list, int]:
    """(shards without both complete files of this job, errors in the complete ones)."""
    missing, n_errors = [], 0
    for k in range(n_shards):
        rows = _complete_rows(_shard_errors_path(out, k), job_key)
        if rows is None or _complete_rows(_part_path(out, k), job_key) is None:
            missing.append(k)
        else:
            n_errors += rows
    return missing, n_errors


def _flock_nb(f, mode: int, message: str) -> None:
    """Take ``fcntl.flock(f, mode)`` without waiting; :class:`JobError` ``message`` if it is held."""
    import fcntl
    try:
        fcntl.flock(f.fileno(), mode | fcntl.LOCK_NB)
    except OSError as e:
        raise JobError(message) from e


@contextlib.contextmanager
def _lock(out: Path):
    """An exclusive lock on ``out`` (POSIX): two jobs never write the same directory."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    path = out / ".lock"
    f = open(path, "a+")
    acquired = False
    try:
        _flock_nb(f, fcntl.LOCK_EX, f"another attribution job is writing to {out}; wait for it or use "
                  f"another out_dir.")
        acquired = True
        yield
    finally:
        f.close()
        if acquired:            # never the lock file of the job that holds it
            with contextlib.suppress(OSError):
                path.unlink()


@contextlib.contextmanager
def _process_lock(out: Path, p: int):
    """Process ``p``'s locks in a job of several processes: exclusive on ``.lock-p{p}`` (one writer per
    process index) and shared on ``.lock`` (keeps a single-process job out; left in place)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    shared = open(out / ".lock", "a+")
    own_path = out / f".lock-p{p}"
    own, acquired = None, False
    try:
        _flock_nb(shared, fcntl.LOCK_SH, f"a single-process attribution job is writing to {out}; wait "
                  f"for it or use another out_dir.")
        own = open(own_path, "a+")
        _flock_nb(own, fcntl.LOCK_EX, f"another process {p} of an attribution job is writing to {out} "
                  f"({own_path.name}): every process of a job needs its own process index.")
        acquired = True
        yield
    finally:
        if own is not None:
            own.close()
        shared.close()
        if acquired:
            with contextlib.suppress(OSError):
                own_path.unlink()


@contextlib.contextmanager
def _final_lock(out: Path):
    """Blocking exclusive lock on ``.lock-final`` (several processes without jax.distributed): process 0's
    set-up and the finalization of the job never overlap."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    with open(out / ".lock-final", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        yield


# ----------------------------------------------------------------------------------------------
# Progress

class _Progress:
    """tqdm bar on a terminal, a log line every LOG_EVERY_S seconds otherwise, or nothing."""

    def __init__(self, mode, total: Optional[int], desc: str):
        self.total, self.done, self.t0, self.last = total, 0, time.perf_counter(), time.perf_counter()
        self.explained = 0
        self.bar = None
        if mode is None:
            mode = "tqdm" if sys.stderr.isatty() else "log"
        elif mode is True:
            mode = "tqdm"
        elif mode is False:
            mode = "none"
        if mode == "tqdm":
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=total, unit="ex", desc=desc, file=sys.stderr, dynamic_ncols=True,
                                smoothing=0.1)
            except ImportError:
                mode = "log"
        if mode not in ("tqdm", "log", "none"):
            raise JobError(f"progress must be None (auto), True, False, 'tqdm', 'log' or 'none', "
                           f"got {mode!r}.")
        self.mode, self.desc = mode, desc

    def update(self, n: int, explained: bool = True) -> None:
        self.done += n
        if explained:
            self.explained += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.mode == "log" and time.perf_counter() - self.last >= LOG_EVERY_S:
            self.last = time.perf_counter()
            self.log()

    def log(self, prefix: str = "") -> None:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        rate = self.explained / dt
        tot = f"/{self.total}" if self.total is not None else ""
        eta = ""
        if self.total is not None and rate > 0 and self.done < self.total:
            eta = f", ETA {_fmt_s((self.total - self.done) / rate)}"
        print(f"[{self.desc}] {prefix}{self.done}{tot} examples, {rate:.1f} ex/s{eta}", file=sys.stderr,
              flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.mode == "log":
            self.log("done: ")


def _fmt_s(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s // 60 % 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


# ----------------------------------------------------------------------------------------------
# Several processes: who does what, and where they meet

_STATS = ("process", "shards_written", "shards_skipped", "examples", "errors", "explained", "compilations",
          "milliseconds")
_SYNC_CALLS = itertools.count(1)    # numbers the multi-process calls (the same on every process)


class _PeerFailed(JobError):
    """Another process of the job failed; this one stops too (and does not report a failure itself)."""


def _check_processes(process_index, process_count, jp: int, jn: int) -> tuple[int, int]:
    if process_index is None and process_count is None:
        return jp, jn
    if process_index is None or process_count is None:
        raise JobError("give both process_index and process_count, or neither (default: "
                       "jax.process_index() and jax.process_count()).")
    if not _is_int(process_count) or process_count < 1:
        raise JobError(f"process_count must be a positive int, got {process_count!r}.")
    if not _is_int(process_index) or not 0 <= process_index < process_count:
        raise JobError(f"process_index must be an int in [0, {process_count}) for process_count="
                       f"{process_count}, got {process_index!r}.")
    if jn > 1 and process_count == jn and process_index != jp:
        raise JobError(f"under jax.distributed this is process {jp} of {jn}, not {process_index}: leave "
                       f"process_index and process_count out.")
    return int(process_index), int(process_count)


def _jax_sync_mode() -> str:
    """"kv" (the coordination service's key-value store) when jax.distributed's client offers it, else
    "collectives" (``multihost_utils.process_allgather``); ``LRPJAX_SYNC=collectives`` forces the latter."""
    if os.environ.get("LRPJAX_SYNC") == "collectives":
        return "collectives"
    try:
        from jax._src import distributed
        client = distributed.global_state.client
    except Exception:  # pragma: no cover - a JAX without it
        client = None
    needs = ("key_value_set", "blocking_key_value_get", "key_value_dir_get")
    return "kv" if client is not None and all(hasattr(client, m) for m in needs) else "collectives"


class _Sync:
    """Where the processes of one job meet. ``mode``:

    * ``"single"``: one process, nothing to meet.
    * ``"kv"`` (jax.distributed): messages in JAX's coordination service (key-value store), under a
      prefix numbered per call. Process 0 posts ``setup`` (the job key) once ``out_dir`` is ready; every
      process posts ``shards/{p}`` (its counts) when its shards are written; process 0 waits for all of
      them, finalizes and posts ``final``, which the others wait for. A failing process posts
      ``failed/{p}``; the others look for it while they wait and before each shard.
    * ``"collectives"`` (jax.distributed without that store): the same three meetings as
      ``multihost_utils.process_allgather`` of a row of ints (every process joins every meeting, a
      failing one with a flag). XLA's CPU collectives give up after 30 minutes
      (``--xla_cpu_collective_timeout_seconds``), which is why "kv" is preferred.
    * ``"files"`` (process_index / process_count given without jax.distributed): process ``p > 0`` waits
      for ``manifest.json`` to hold the job key; the process that completes the job finalizes it.
    """

    def __init__(self, p: int, n: int, mode: str):
        self.p, self.n, self.mode = p, n, mode
        self.phase = "setup"
        self.quiet = False
        self.client, self.prefix, self.broken = None, "", False
        if mode == "kv":
            from jax._src import distributed
            self.client = distributed.global_state.client
        if mode in ("kv", "collectives"):
            self.prefix = f"lrpjax/attribute/{next(_SYNC_CALLS)}"

    @staticmethod
    def create(process_index, process_count) -> "_Sync":
        """Under jax.distributed (``jax.process_count() > 1``) the job is the JAX processes' unless
        other counts are given: ``process_index=0, process_count=1`` = a call on this process alone."""
        jp, jn = jax.process_index(), jax.process_count()
        joint = jn > 1 and process_count in (None, jn)
        world = _Sync(jp, jn, _jax_sync_mode()) if joint else None
        try:
            p, n = _check_processes(process_index, process_count, jp, jn)
        except JobError as e:
            if world is not None:
                world.fail(e)
            raise
        return world if world is not None else _Sync(p, n, "single" if n == 1 else "files")

    def describe(self) -> str:
        return {"single": "one process", "kv": "jax.distributed (coordination service)",
                "collectives": "jax.distributed (collectives)",
                "files": "independent processes (no jax.distributed)"}[self.mode]

    # -- the meetings
    def setup_done(self, out: Path, job_key: str) -> None:
        """After process 0 prepared ``out`` (manifest written): the others may start writing."""
        if self.mode == "kv":
            if self.p == 0:
                self._kv_set("setup", {"job_key": job_key})
            else:
                self._same_job(self._kv_get("setup", 0, "to set up the output directory")["job_key"], job_key)
        elif self.mode == "collectives":
            table = self._gather([int(job_key[:7], 16)])
            self._same_job(int(table[0, 2]), int(job_key[:7], 16))
        elif self.mode == "files" and self.p != 0:
            _wait_for_manifest(out, job_key, self.p, self.n)
        self.phase = "shards"           # (a failure from here on is reported at the next meeting)
        if self.p != 0 and self.mode in ("kv", "collectives"):
            _check_shared(out, job_key, self.p)

    def shards_done(self, stats: dict) -> Optional[list]:
        """After this process's shards: every process's counts on process 0 (None where not known)."""
        stats = {**stats, "process": self.p}
        result = None
        if self.mode == "single":
            result = [stats]
        elif self.mode == "kv":
            self._kv_set(f"shards/{self.p}", stats)
            if self.p == 0:
                result = [stats] + [self._kv_get(f"shards/{q}", q, "to finish its shards")
                                    for q in range(1, self.n)]
        elif self.mode == "collectives":
            table = self._gather([stats[k] for k in _STATS])
            result = [dict(zip(_STATS, (int(v) for v in row[2:2 + len(_STATS)]))) for row in table]
        self.phase = "final"
        return result

    def final_done(self, final: Optional[dict]) -> dict:
        """After process 0 finalized the job: its result for every process."""
        if self.mode == "kv":
            if self.p == 0:
                self._kv_set("final", final)
                return final
            return self._kv_get("final", 0, "to finish the job")
        if self.mode == "collectives":
            table = self._gather([int(final["complete"]), final["errors"]] if self.p == 0 else [])
            return {"complete": bool(table[0, 2]), "errors": int(table[0, 3])}
        return final

    def check(self) -> None:
        """Raise if another process has failed (kv mode; between shards)."""
        if self.mode == "kv":
            self._raise_peer_failures()

    def fail(self, e: BaseException) -> None:
        """This process fails: tell the others (never raises)."""
        if self.n == 1 or isinstance(e, _PeerFailed) or self.broken:
            return
        msg = _one_line(e) if isinstance(e, JobError) else (
            f"{type(e).__name__}: {_one_line(e)}" if str(e) else type(e).__name__)
        with contextlib.suppress(Exception):
            if self.mode == "kv":
                self._kv_set(f"failed/{self.p}", msg[:500])
            elif self.mode == "collectives":
                self._gather([], failed=True)

    # -- helpers
    def _same_job(self, theirs, mine) -> None:
        if self.p != 0 and theirs != mine:
            raise JobError(f"process {self.p} runs another job than process 0 (a different model, model "
                           f"arguments, options or input): give every process the same command, apart "
                           f"from its process id.")

    def _kv_set(self, key: str, value) -> None:
        self.client.key_value_set(f"{self.prefix}/{key}", json.dumps(value))

    def _raise_peer_failures(self) -> None:
        try:
            entries = self.client.key_value_dir_get(f"{self.prefix}/failed/")
        except Exception:
            return
        failed = sorted((int(k.rsplit("/", 1)[1]), json.loads(v)) for k, v in entries)
        failed = [(q, msg) for q, msg in failed if q != self.p]
        if failed:
            q, msg = failed[0]
            raise _PeerFailed(f"process {q} of {self.n} failed, so process {self.p} stopped too (finished "
                              f"shards are kept: run all processes again to resume). Process {q}: {msg}")

    def _kv_get(self, key: str, q: int, what: str):
        t0, told = time.monotonic(), False
        while True:
            try:
                return json.loads(self.client.blocking_key_value_get(f"{self.prefix}/{key}", 1000))
            except Exception as e:
                if "DEADLINE_EXCEEDED" not in str(e):
                    raise JobError(f"process {self.p} lost the JAX coordination service while waiting for "
                                   f"process {q} {what}: {_one_line(e)[:300]}") from e
            self._raise_peer_failures()
            waited = time.monotonic() - t0
            if BARRIER_TIMEOUT_S is not None and waited > BARRIER_TIMEOUT_S:
                raise JobError(f"process {self.p} waited {waited:.0f} s for process {q} {what} "
                               f"(lrpjax.jobs.BARRIER_TIMEOUT_S); is it still running?")
            if not told and not self.quiet and waited > LOG_EVERY_S:
                told = True
                print(f"[lrpjax attribute {self.p}/{self.n}] waiting for process {q} {what} (every JAX "
                      f"process must make this call; on one process alone pass process_index=0, "
                      f"process_count=1)", file=sys.stderr, flush=True)

    def _gather(self, values: Sequence[int], failed: bool = False) -> np.ndarray:
        from jax.experimental import multihost_utils
        row = np.zeros(2 + len(_STATS), np.int64)
        row[0], row[1] = zlib.crc32(self.phase.encode()) & 0x7FFFFFFF, int(failed)
        row[2:2 + len(values)] = values
        try:
            table = np.asarray(multihost_utils.process_allgather(row)).astype(np.int64)
        except BaseException as e:     # (an interrupt too: no second meeting to announce it)
            self.broken = True
            if not isinstance(e, Exception):
                raise
            raise JobError(f"process {self.p} could not meet the other processes ({self.phase}): "
                           f"{_one_line(e)[:300]}") from e
        if (table[:, 0] != row[0]).any():
            self.broken = True
            raise JobError(f"the processes are out of step ({self.phase}): give every process the same "
                           f"command and the same number of attribute_dataset calls.")
        bad = [q for q in range(self.n) if table[q, 1] and q != self.p]
        if bad and not failed:
            raise _PeerFailed(f"process {bad[0]} of {self.n} failed (see its error message), so process "
                              f"{self.p} stopped too; finished shards are kept: run all processes again to "
                              f"resume.")
        return table


def _announce_failure(error: BaseException) -> None:
    """A process of a jax.distributed job fails before :func:`attribute_dataset` (e.g. loading the model):
    tell the others, which would otherwise wait for it."""
    if jax.process_count() > 1:
        _Sync(jax.process_index(), jax.process_count(), _jax_sync_mode()).fail(error)


def _wait_for_manifest(out: Path, job_key: str, p: int, n: int) -> None:
    """Without jax.distributed: process ``p > 0`` starts once process 0 set up ``out`` for this job."""
    path, t0, found = out / MANIFEST, time.monotonic(), None
    while True:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            found = json.loads(path.read_text(encoding="utf-8")).get("job_key")
        if found == job_key:
            return
        if time.monotonic() - t0 > WAIT_FOR_PROCESS_0_S:
            what = "none" if found is None else f"one of another job (job_key {str(found)[:12]}...)"
            raise JobError(f"process {p} of {n} waited {WAIT_FOR_PROCESS_0_S:g} s for process 0 to set up "
                           f"{out} for this job ({MANIFEST} with job_key {job_key[:12]}...; found {what}): "
                           f"start process 0 with the same model, options and input (it creates "
                           f"{MANIFEST}, or says why it cannot), or run all processes under jax.distributed.")
        time.sleep(0.1)


def _check_shared(out: Path, job_key: str, p: int) -> None:
    found = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        found = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("job_key")
    if found != job_key:
        raise JobError(f"process {p} does not see the {MANIFEST} that process 0 wrote in {out}: the output "
                       f"directory must be one directory shared by all processes (the same path on every "
                       f"host, e.g. on NFS).")


def _share(total: Optional[int], shard_size: int, p: int, n: int) -> Optional[int]:
    """Examples in process ``p``'s shards (None if the input size is unknown)."""
    if total is None:
        return None
    return sum(min(shard_size, total - k * shard_size) for k in range(p, -(-total // shard_size), n))


def _note_foreign(recs: list, validator: "_Validator", tokens: bool) -> None:
    """Another process's shard: keep the validator's state as a single process would (ids seen, for
    duplicates; the feature count while no example fixed it), without checking or converting data."""
    for rec in recs:
        if validator.features is None and not tokens:
            validator(rec)
        else:
            rid = validator.record_id(rec)
            if rid is not None:
                validator.seen.add(rid)


def _on_local_devices(fn: Callable, sharding) -> Callable:
    """Under jax.distributed, jit refuses host (numpy) inputs with a non-replicated sharding even over
    this process's own devices: commit each batch to them first (the same computation, no collectives)."""
    def call(*arrays):
        return fn(*(jax.device_put(a, sharding) for a in arrays))
    return call


def _multi_run(run: dict, sync: _Sync, mine: dict, everyone: Optional[list]) -> dict:
    """The manifest's ``last_run`` of a job of several processes."""
    by = everyone or [{**mine, "process": sync.p}]
    return {"processes": sync.n, "coordination": sync.describe(), "finalized_by": sync.p,
            "compilations": sum(e["compilations"] for e in by),
            "examples_explained": sum(e["explained"] for e in by),
            "devices_per_process": run["devices"], "batch_rows": run["batch_rows"],
            "by_process": [{**{k: v for k, v in e.items() if k != "milliseconds"},
                            "seconds": round(e["milliseconds"] / 1000, 3)} for e in by]}


# ----------------------------------------------------------------------------------------------
# The job

def _check_method_options(method: str, options: Optional[dict], full: bool) -> dict:
    """Validated ``method_options`` (typed; unknown keys refused)."""
    options = dict(options or {})
    allowed = METHOD_OPTIONS.get(method, {})
    out = {}
    for k, v in options.items():
        if k not in allowed:
            raise JobError(f"method_options: {method!r} takes "
                           f"{', '.join(sorted(allowed)) or 'no options'}, got {k!r}.")
        try:
            out[k] = allowed[k](v)
        except (TypeError, ValueError) as e:
            raise JobError(f"method_options[{k!r}] must be {allowed[k].__name__}, got {v!r}.") from e
    if full and method in PER_STEP_ONLY:
        raise JobError(f"full=True needs per-feature relevance; method {method!r} gives one value per "
                       f"step. Drop --full or use another method.")
    return out


def _check_options(method, batch_size, eps, bias_factor, gate, target, full, max_length, bucket_step,
                   shard_size, strict, spec: ModelSpec) -> None:
    from lrpjax import rules
    if method not in METHODS:
        raise JobError(f"method must be one of {METHODS}, got {method!r}.")
    for name, v in (("batch_size", batch_size), ("bucket_step", bucket_step), ("shard_size", shard_size)):
        if not _is_int(v) or v < 1:
            raise JobError(f"{name} must be a positive int, got {v!r}.")
    if max_length is not None and (not _is_int(max_length) or max_length < 1):
        raise JobError(f"max_length must be a positive int or None, got {max_length!r}.")
    if not (target in ("pred", "true") or (_is_int(target) and target >= 0)):
        raise JobError(f"target must be 'pred' (the argmax), 'true' (the label) or a class index >= 0, "
                       f"got {target!r}.")
    if not isinstance(full, bool) or not isinstance(strict, bool):
        raise JobError("full and strict must be True or False.")
    if full and spec.tokens:
        raise JobError("full=True needs float inputs: for token inputs the relevance is per token "
                       "(summed over the embedding); drop full.")
    try:
        rules.make_config(eps, bias_factor, gate)
    except ValueError as e:
        raise JobError(_one_line(e)) from e


def _probe(spec: ModelSpec, features: Optional[int], first: Optional[_Example]) -> dict:
    """Evaluate the model on a fixed probe batch: checks it and fingerprints its weights."""
    rng = np.random.default_rng(0)
    if spec.tokens:
        ids = first.data[:8] if first is not None else np.full((3,), spec.pad_id, np.int32)
        x = np.stack([ids, ids]).astype(np.int32)
        lengths = np.array([len(ids), max(1, len(ids) // 2)], np.int32)
        what = f"token ids {x.shape} int32"
    else:
        if features is None:
            return {"scores": None}
        x = rng.uniform(-1, 1, (2, 8, features)).astype(np.float32)
        lengths = np.array([8, 5], np.int32)
        what = f"x {x.shape} float32"
    try:
        out = _jitted_apply(spec.apply)(x, lengths)
        out = np.asarray(out)
    except Exception as e:
        raise JobError(f"the model failed on a probe batch ({what}, lengths (2,) int32): "
                       f"{type(e).__name__}: {_one_line(e)}. Check the model spec (apply(x, lengths) -> "
                       f"logits (B, C)).") from e
    if out.ndim != 2 or out.shape[0] != 2 or not np.issubdtype(out.dtype, np.floating):
        raise JobError(f"apply(x, lengths) must return logits of shape (B, C) (floating); on a probe batch "
                       f"of B=2 it returned {out.dtype} {out.shape}.")
    if not np.all(np.isfinite(out)):
        raise JobError("the model returned NaN/inf logits on a probe batch; check its parameters.")
    return {"input": what, "scores": out.astype(np.float64).round(7).tolist(), "n_classes": int(out.shape[1])}


def _diff(old: dict, new: dict, prefix: str = "") -> list:
    changes = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            changes.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return changes


def _compare_job(out: Path, old: dict, job: dict, probe: dict) -> None:
    old_job = old.get("job", {})
    changes = _diff(old_job, job)
    old_scores = (old.get("probe") or {}).get("scores")
    if not changes and old_scores is not None and probe.get("scores") is not None:
        a, b = np.asarray(old_scores), np.asarray(probe["scores"])
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(a).max())):
            changes.append("model: its outputs on the probe batch changed (different weights?)")
    if changes:
        raise JobError(f"{out} holds a job with other settings ({'; '.join(changes)}); use a new "
                       f"out_dir, or overwrite=True (--overwrite) to replace it.")


def attribute_dataset(model: Union[ModelSpec, Callable], dataset: Union[str, os.PathLike, Iterable],
                      out_dir: Union[str, os.PathLike], *, method: str = "lrp", batch_size: int = 256,
                      eps: float = 1e-3, bias_factor: float = 0.0, gate: str = "all",
                      target: Union[str, int] = "pred", full: bool = False,
                      max_length: Optional[int] = None, bucket_step: int = 8, shard_size: int = 4096,
                      overwrite: bool = False, progress=None, strict: bool = True,
                      process_index: Optional[int] = None, process_count: Optional[int] = None,
                      method_options: Optional[dict] = None) -> JobSummary:
    """Explain every example of ``dataset`` and write the relevance to Parquet shards in ``out_dir``.

    Args:
      model: a :class:`ModelSpec`, a callable ``apply(x, lengths) -> logits (B, C)`` (float inputs
        ``x (B, T, F)`` float32, ``lengths (B,)`` int32) or a tuple ``(apply, tokenizer)``.
      dataset: a path -- ``.npz`` (``x (N, T_max, F)``, optional ``lengths (N,)``, ``labels (N,)``,
        ``ids (N,)``), ``.npy`` (``(N, T, F)``, all full length), ``.jsonl`` (objects with ``x`` (list of
        T lists of F numbers) or ``text``, optional ``label``, ``id``, ``length``), ``.parquet`` (the
        same columns), any other extension = a text file (one example per line, optionally
        ``LABEL<TAB>text``) -- or an iterable of such dicts, of ``(T, F)`` arrays or of strings.
      out_dir: output directory (created); see the module docstring for its layout and columns.
      method: ``"lrp"`` (:func:`lrpjax.explain` / :func:`lrpjax.explain_tokens`) or a baseline of
        :mod:`lrpjax.baselines` for comparison: ``"gradient"`` (of the target logit), ``"gradient_x_input"``,
        ``"sensitivity"`` (squared gradient norm per step), ``"integrated_gradients"``,
        ``"occlusion"`` (per step), ``"random"`` (seeded per example by ``(seed, index)``). Token
        models: baselines act on the embedding (one lookup), summed over its dimensions per token.
      method_options: keyword options of the baseline: ``integrated_gradients`` ``steps`` (32),
        ``baseline`` (a number, 0.0), ``batch_size``; ``occlusion`` ``value`` (0.0), ``batch_size``;
        ``random`` ``seed`` (0). Part of the job's settings (recorded, a change is refused).
      batch_size: rows per device call (rounded up to a multiple of the device count).
      eps, bias_factor, gate, strict: the LRP rule options (see :func:`lrpjax.relevance`).
      target: ``"pred"`` (argmax), ``"true"`` (the example's label; examples without one are errors)
        or a class index.
      full: also write ``relevance_full`` (``length x F`` per example; float inputs only).
      max_length: longer examples are errors; caps the bucket length.
      bucket_step: batches are padded to the next multiple of it (one compilation per bucket length).
      shard_size: examples per input shard = per output file (the unit of resuming).
      overwrite: replace a job with other settings in ``out_dir`` (otherwise refused).
      progress: ``None`` = tqdm bar if stderr is a terminal, else a log line every 10 s;
        ``True``/``"tqdm"``, ``"log"``, ``False``/``"none"``.
      process_index, process_count: this process's share of a job run by several processes (hosts):
        process ``p`` of ``n`` explains and writes input shard ``k`` iff ``k % n == p`` (every process
        reads the whole input to find the shard boundaries, but validates and explains only its own
        shards). Default: ``jax.process_index()`` / ``jax.process_count()``, i.e. a single process
        unless :func:`jax.distributed.initialize` was called; give both or neither. Under
        ``jax.distributed`` every process must then make the call; a call made by one process alone
        needs ``process_index=0, process_count=1``. See "Several processes" below.
    Returns:
      a :class:`JobSummary` (with several processes: see its docstring for what each count covers).
    Raises:
      JobError (a ValueError) at once for a bad model spec or option, an unreadable input or an
      unwritable / foreign output directory. Bad *examples* never raise: they go to ``errors.parquet``.

    Re-running the same call resumes: shards whose part file is complete are skipped (their ids are
    checked against the input), so an interrupted job ends with the same output as an uninterrupted one.

    Several processes: ``out_dir`` must be one directory shared by all of them (the same path on every
    host, e.g. NFS). The output is the single-process output (same files, rows, ``errors.parquet`` and
    counts; each part file records its writer in the metadata key ``lrpjax.process``), and a job may be
    resumed with any process count. Process 0 alone creates, refuses or (``overwrite``) replaces the job
    in ``out_dir``; the others start writing only after it did. Each process holds its own lock
    (``.lock-p{p}``, plus a shared lock on ``.lock`` that keeps single-process jobs out).

    * Under ``jax.distributed`` (``jax.process_count() > 1``; ``lrpjax attribute --distributed``) the
      processes meet through JAX's coordination service (its key-value store; no device collectives,
      so no timeout while one process still works): after process 0 set up ``out_dir``, and after
      every process finished its shards; then process 0 checks that every shard is complete, merges
      ``errors.parquet`` and marks the manifest ``complete``, and all processes return. If a process
      fails, the others stop at their next shard with an error naming it (their finished shards are
      kept: run all processes again to resume); if one dies, JAX's heartbeat ends the others.
    * Without ``jax.distributed`` (``process_index`` / ``process_count`` given, e.g. independent jobs
      of a scheduler array, or one after another) process ``p > 0`` waits (up to
      ``WAIT_FOR_PROCESS_0_S`` seconds) until ``manifest.json`` holds this job's key, and every process
      that finishes checks whether all shards are complete: the one that completes the job merges
      ``errors.parquet`` and marks the manifest ``complete`` (under the lock ``.lock-final``); the
      others return with ``JobSummary.complete`` False. So ``attribute_dataset(..., process_index=0,
      process_count=2)`` then ``(..., process_index=1, process_count=2)`` equals one call.

    >>> import numpy as np, jax, lrpjax, tempfile
    >>> p = lrpjax.init_lstm(jax.random.key(0), 2, 8)
    >>> W = np.ones((8, 2), np.float32)
    >>> apply = lambda x, l: lrpjax.dense(lrpjax.lstm(p, x, lengths=l)[1][1], W)
    >>> data = [np.ones((5, 2), np.float32), np.ones((9, 2), np.float32)]
    >>> s = attribute_dataset(apply, data, tempfile.mkdtemp(), progress=False)
    >>> s.n_examples, s.n_errors
    (2, 0)
    """
    t0 = time.perf_counter()
    sync = _Sync.create(process_index, process_count)
    try:
        return _attribute(sync, t0, model, dataset, out_dir, method=method, batch_size=batch_size, eps=eps,
                          bias_factor=bias_factor, gate=gate, target=target, full=full,
                          max_length=max_length, bucket_step=bucket_step, shard_size=shard_size,
                          overwrite=overwrite, progress=progress, strict=strict,
                          method_options=method_options)
    except BaseException as e:
        sync.fail(e)        # the other processes learn of it at their next shard or meeting point
        raise


def _attribute(sync: "_Sync", t0: float, model, dataset, out_dir, *, method, batch_size, eps, bias_factor,
               gate, target, full, max_length, bucket_step, shard_size, overwrite, progress,
               strict, method_options=None) -> JobSummary:
    """The body of :func:`attribute_dataset` for process ``sync.p`` of ``sync.n``."""
    p, n = sync.p, sync.n
    sync.quiet = progress in (False, "none")
    pa, _ = _pa()
    spec = _as_model_spec(model)
    _check_options(method, batch_size, eps, bias_factor, gate, target, full, max_length, bucket_step,
                   shard_size, strict, spec)
    options = _check_method_options(method, method_options, full)
    source = open_dataset(dataset)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / SHARD_ERRORS_DIR).mkdir(exist_ok=True)
    except OSError as e:
        raise JobError(f"cannot create the output directory {out}: {e.strerror or e}; choose a writable "
                       f"path.") from e
    if not os.access(out, os.W_OK):
        raise JobError(f"the output directory {out} is not writable; choose another --out.")

    with (_lock(out) if n == 1 else _process_lock(out, p)), contextlib.ExitStack() as setting_up:
        if p == 0 and sync.mode == "files":
            setting_up.enter_context(_final_lock(out))   # no other process finalizes meanwhile
        _remove_stale_tmp(out, p, n)    # temporary files of an interrupted run (this process's)
        manifest_path = out / MANIFEST
        old = None
        if p != 0:
            pass                        # process 0 alone decides what happens to out_dir
        elif manifest_path.exists():
            try:
                old = json.loads(manifest_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                if not overwrite:
                    raise JobError(f"{manifest_path} is unreadable ({_one_line(e)}); use overwrite=True "
                                   f"(--overwrite) to start over.") from e
        elif any(f.name not in (SHARD_ERRORS_DIR, ".lock") and not f.name.startswith(".lock-")
                 for f in out.iterdir()) and not overwrite:
            raise JobError(f"{out} is not empty and holds no {MANIFEST} (not an lrpjax job directory); "
                           f"use a new or empty out_dir, or overwrite=True (--overwrite).")

        # First shard: fixes the id type and the feature count, and gives the probe example.
        validator = _Validator(spec, target, max_length)
        shards = _shards(source, shard_size)
        first_records = next(shards, [])
        for rec in first_records:
            validator.infer_features(rec)
            if validator.features is not None:
                break
        first_good = None
        if spec.tokens:
            probe_validator = _Validator(spec, "pred", max_length)
            for rec in first_records:
                _, ex, _ = probe_validator(rec)
                if ex is not None:
                    first_good = ex
                    break
        probe = _probe(spec, validator.features, first_good)
        n_classes = probe.get("n_classes")
        validator.n_classes = n_classes
        if _is_int(target) and n_classes is not None and target >= n_classes:
            raise JobError(f"target={target} is not a class of this model (it has {n_classes} classes).")

        job = {
            "model": {"spec": spec.describe(), "features": validator.features},
            "options": {"method": method, "eps": float(eps), "bias_factor": float(bias_factor), "gate": gate,
                        "strict": strict, "target": target if _is_int(target) else str(target),
                        "full": full, "max_length": max_length, "shard_size": shard_size,
                        **({"method_options": options} if options else {})},
            "input": {k: v for k, v in source.fingerprint.items() if k not in ("mtime", "path")},
        }
        job_key = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:32]
        if p == 0 and old is not None and not overwrite:
            if glob.glob(str(out / "part-*.parquet")):
                _compare_job(out, old, job, probe)
            else:
                overwrite = True        # an earlier run that wrote no results: nothing to protect
        if p == 0 and overwrite:
            # with several processes, shard temporaries belong to their writers (who clean them up)
            for f in _own_files(out, shard_tmp=n == 1):
                with contextlib.suppress(OSError):
                    f.unlink()
            old = None

        manifest = {
            "format": "lrpjax-attributions", "format_version": FORMAT_VERSION, "status": "running",
            "job": job, "job_key": job_key, "probe": probe,
            "input_path": source.path, "input_mtime": source.fingerprint.get("mtime"),
            "model_name": spec.name,
            "versions": _versions(),
            "devices": {"platform": jax.default_backend(), "count": len(jax.local_devices())},
            "created": (old or {}).get("created", _now()), "updated": _now(),
            "runs": int((old or {}).get("runs", 0)) + 1,
            "options_not_affecting_results": {"batch_size": batch_size, "bucket_step": bucket_step},
            "layout": {"parts": "part-NNNNN.parquet", "errors": ERRORS,
                       "shard_errors": f"{SHARD_ERRORS_DIR}/errors-NNNNN.parquet"},
        }
        if n > 1:
            manifest["processes"] = {"count": n, "coordination": sync.describe()}
        if p == 0:
            _write_atomic_json(manifest, manifest_path)
        setting_up.close()
        sync.setup_done(out, job_key)   # the others wait for process 0 (and check they run the same job)

        step = _cached_step(spec, method, target, float(eps), float(bias_factor), gate, strict, full,
                            options)
        traces_before = step.counter[0]
        runner = _Runner(spec, step, target, min(batch_size, shard_size), bucket_step, max_length,
                         validator.features)
        if jax.process_count() > 1:
            runner.step = _on_local_devices(runner.step, runner.sharding)
        bar = _Progress(progress, _share(source.total, shard_size, p, n),
                        "lrpjax attribute" if n == 1 else f"lrpjax attribute {p}/{n}")
        c = dict(examples=0, errors=0, written=0, skipped=0, explained=0, shards=0, own_examples=0)
        # the first parsable example fixes the id type (int64 or string)
        validator.record_id(next((r for r in first_records if r.error is None), None)
                            or (first_records[0] if first_records else _Record(0)))
        schema = _results_schema(pa, validator.id_type or "int", full, spec.tokens)

        def finish(k: int, recs: list, good: list, errors: list, handle: list) -> None:
            """Wait for a shard's results and write its files (errors first, then the part)."""
            results = runner.collect(good, handle, bar.update)
            table = _results_table(pa, good, results, validator.id_type, full, spec.tokens) if good \
                else schema.empty_table()
            meta = {"lrpjax.job": job_key, "lrpjax.shard": k, "lrpjax.examples": len(recs),
                    "lrpjax.process": p, "lrpjax.processes": n}
            _write_atomic_parquet(_errors_table(pa, errors, validator.id_type), _shard_errors_path(out, k),
                                  {**meta, "lrpjax.rows": len(errors)})
            _write_atomic_parquet(table, _part_path(out, k), {**meta, "lrpjax.rows": len(good)})
            c["explained"] += len(good)
            c["written"] += 1

        in_flight = None
        try:
            for k, recs in enumerate(itertools.chain([first_records] if first_records else [], shards)):
                c["shards"] += 1
                c["examples"] += len(recs)
                if k % n != p:              # another process's shard: only note its ids
                    _note_foreign(recs, validator, spec.tokens)
                    continue
                sync.check()                # stop early if another process failed
                c["own_examples"] += len(recs)
                part, errp = _part_path(out, k), _shard_errors_path(out, k)
                erows = _complete_rows(errp, job_key) if _complete_rows(part, job_key) is not None else None
                if erows is not None:       # finished by an earlier run: check and skip it
                    _verify_shard(out, k, part, errp, recs, validator)
                    c["errors"] += erows
                    c["skipped"] += 1
                    bar.update(len(recs), explained=False)
                    continue
                good, errors = [], []
                for rec in recs:
                    rid, ex, reason = validator(rec)
                    if ex is None:
                        errors.append((rec.index, rid, reason))
                    else:
                        good.append(ex)
                c["errors"] += len(errors)
                if errors:
                    bar.update(len(errors), explained=False)
                runner.features = validator.features
                handle = runner.dispatch(good)
                # the device works on this shard while the host writes the previous one and reads the next
                if in_flight is not None:
                    finish(*in_flight)
                in_flight = (k, recs, good, errors, handle)
            if in_flight is not None:
                finish(*in_flight)
        finally:
            bar.close()
        n_shards, n_examples, own_errors = c["shards"], c["examples"], c["errors"]
        written, skipped, explained_now = c["written"], c["skipped"], c["explained"]
        compilations = step.counter[0] - traces_before   # new ones only: cached steps are reused
        mine = {"shards_written": written, "shards_skipped": skipped, "examples": c["own_examples"],
                "errors": own_errors, "explained": explained_now, "compilations": compilations,
                "milliseconds": int(round(1000 * (time.perf_counter() - t0)))}
        everyone = sync.shards_done(mine)   # process 0 under jax.distributed: every process's counts
        id_type = validator.id_type or "int"
        run = {"compilations": compilations, "bucket_lengths": sorted(runner.bucket_lengths),
               "examples_explained": explained_now, "devices": len(jax.local_devices()),
               "batch_rows": runner.batch}
        if n > 1:
            run = _multi_run(run, sync, mine, everyone)
        counts = {"shards_written": written, "shards_skipped": skipped} if n == 1 else (
            {"shards_written": sum(e["shards_written"] for e in everyone),
             "shards_skipped": sum(e["shards_skipped"] for e in everyone)} if everyone else {})
        final = None
        finalize = functools.partial(_finalize, out, pa, t0, n_shards, n_examples, job_key, id_type, schema,
                                     manifest, run, counts)
        if n == 1:
            final = finalize(known_errors=own_errors)
        elif sync.mode != "files":
            if p == 0:                      # every process has finished its shards
                final = finalize(require_complete=True)
        else:
            with _final_lock(out):          # whoever completes the job finalizes it
                final = finalize(require_complete=False)
        final = sync.final_done(final)      # the others get process 0's counts
    seconds = time.perf_counter() - t0
    rate = explained_now / seconds if seconds > 0 else 0.0
    return JobSummary(n_examples, final["errors"], written, skipped, compilations, seconds, rate, str(out),
                      process_index=p, process_count=n, n_shards=n_shards, complete=final["complete"],
                      process_examples=c["own_examples"], process_errors=own_errors)


def _finalize(out: Path, pa, t0: float, n_shards: int, n_examples: int, job_key: str, id_type: str, schema,
              manifest: dict, run: dict, counts: dict, known_errors: Optional[int] = None,
              require_complete: bool = True) -> dict:
    """Check the whole output, merge ``errors.parquet`` and mark the manifest complete.

    ``known_errors``: the error count when one process wrote every shard (nothing to scan). Returns
    ``{"complete": bool, "errors": errors in the complete shards}``; with ``require_complete=False`` an
    incomplete output (other processes still working) is left as it is.
    """
    stray = [p for p in glob.glob(str(out / "part-*.parquet"))
             if int(Path(p).stem.split("-")[1]) >= n_shards]
    if stray:
        raise JobError(f"{out} holds part files beyond the input's {n_shards} shard(s) "
                       f"({Path(sorted(stray)[0]).name}, ...): the input changed; use overwrite=True.")
    if known_errors is None:
        missing, n_errors = _scan_shards(out, n_shards, job_key)
        if missing and require_complete:
            raise JobError(f"shard(s) {', '.join(map(str, missing[:5]))}{', ...' if len(missing) > 5 else ''} "
                           f"of {out} are missing or incomplete although every process finished: is {out} "
                           f"one directory shared by all processes (the same path on every host)?")
        if missing:
            return {"complete": False, "errors": n_errors}
    else:
        n_errors = known_errors
    _merge_errors(out, n_shards, id_type)
    if "processes" in manifest:         # several processes: build on the manifest process 0 wrote
        with contextlib.suppress(OSError, ValueError):
            disk = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
            if disk.get("job_key") == job_key:
                manifest = disk
    seconds = time.perf_counter() - t0
    explained = run.get("examples_explained", 0)
    manifest.update({
        "status": "complete", "updated": _now(),
        "schema": {"id": _id_type(pa, id_type).__str__(), "columns": schema.names},
        "counts": {"examples": n_examples, "explained": n_examples - n_errors, "errors": n_errors,
                   "shards": n_shards, **counts},
        "last_run": {**run, "seconds": round(seconds, 3),
                     "examples_per_second": round(explained / seconds if seconds > 0 else 0.0, 1)},
    })
    _write_atomic_json(manifest, out / MANIFEST)
    return {"complete": True, "errors": n_errors}


def _shards(source: _Source, shard_size: int) -> Iterator[list]:
    """The input's records in lists of ``shard_size``; read errors become :class:`JobError`."""
    records = source.records()
    while True:
        try:
            recs = list(itertools.islice(records, shard_size))
        except OSError as e:
            raise JobError(f"cannot read {source.path}: {e.strerror or e}") from e
        except UnicodeDecodeError as e:
            raise JobError(f"cannot read {source.path} as UTF-8 text ({e.reason} at byte {e.start}); "
                           f"give a UTF-8 file or another format.") from e
        if not recs:
            return
        yield recs


def _verify_shard(out: Path, k: int, part: Path, errp: Path, recs: list, validator: _Validator) -> None:
    """A skipped shard must hold exactly the input shard's examples (ids in input order)."""
    _, pq = _pa()
    done = pq.read_table(part, columns=["index", "id"]).to_pydict()
    errs = pq.read_table(errp, columns=["index", "id"]).to_pydict()
    stored = sorted(zip(done["index"] + errs["index"], done["id"] + errs["id"]), key=lambda t: t[0])
    expect = []
    for rec in recs:
        rid = validator.record_id(rec)
        if rid is not None:
            validator.mark_seen(rec, rid)
        expect.append((rec.index, rid))
    if stored != expect:
        raise JobError(f"{part.name} does not hold the input's shard {k} (other indices / ids): the input "
                       f"changed since it was written; use overwrite=True (--overwrite) to start over.")


def _merge_errors(out: Path, n_shards: int, id_type: str) -> None:
    pa, pq = _pa()
    tables = [pq.read_table(_shard_errors_path(out, k)) for k in range(n_shards)]
    table = pa.concat_tables(tables) if tables else _errors_table(pa, [], id_type)
    _write_atomic_parquet(table.replace_schema_metadata(None), out / ERRORS, {"lrpjax.rows": table.num_rows})


def read_results(out_dir: Union[str, os.PathLike], columns: Optional[list] = None):
    """All part files of a job as one ``pyarrow.Table``, in input order (pyarrow only).

    Equivalent to ``pq.ParquetDataset(sorted(glob.glob(f"{out_dir}/part-*.parquet"))).read(columns)``.
    """
    pa, pq = _pa()
    paths = sorted(glob.glob(os.path.join(os.fspath(out_dir), "part-*.parquet")))
    if not paths:
        raise JobError(f"no part-*.parquet files in {out_dir}")
    return pa.concat_tables([pq.read_table(p, columns=columns).replace_schema_metadata(None) for p in paths])


def read_errors(out_dir: Union[str, os.PathLike]):
    """The errors table (``index``, ``id``, ``reason``) of a finished job."""
    _, pq = _pa()
    return pq.read_table(os.path.join(os.fspath(out_dir), ERRORS))
