"""Reading a job's input: every format yields :class:`Record` objects (raw, unvalidated), lazily.

What streams: ``.npy`` is memory-mapped; ``.npz`` loads ``lengths`` / ``labels`` / ``ids`` and
memory-maps ``x`` when the archive is uncompressed (``np.savez``; ``np.savez_compressed`` archives load
``x`` fully); ``.jsonl``, text files and ``.parquet`` (by record batch) are read incrementally; a
Python iterable is consumed lazily. :func:`read_shards` holds at most one shard of records in memory.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import hashlib
import itertools
import json
import os
import struct
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Union

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lrpjax._checks import one_line
from lrpjax.jobs.spec import JobError


@dataclasses.dataclass
class Record:
    """One raw input example, as read (checked later by :class:`lrpjax.jobs.validate.Validator`)."""
    index: int                    # 0-based position in the input (line number for line formats)
    id: Any = None                # given id, or None (-> index)
    x: Any = None                 # (T, F) array-like of floats
    text: Optional[str] = None
    label: Any = None
    length: Any = None            # valid length of x (npz lengths, a record's "length")
    error: Optional[str] = None   # the record could not even be parsed


@dataclasses.dataclass
class Block:
    """A shard of an array input as columns (the fast path: no per-example objects): rows ``start ..
    start + n - 1`` of the input. ``x`` ``(n, T, F)`` float32; ``ids``, ``lengths``, ``labels``: ``(n,)``
    arrays as stored, or None. :meth:`records` gives the same shard as :class:`Record` objects."""
    start: int
    x: np.ndarray
    ids: Optional[np.ndarray] = None
    lengths: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def index(self) -> np.ndarray:
        return np.arange(self.start, self.start + len(self), dtype=np.int64)

    def records(self) -> list:
        col = lambda a: [None] * len(self) if a is None else a.tolist()
        ids, lengths, labels = col(self.ids), col(self.lengths), col(self.labels)
        return [Record(self.start + j, ids[j], x=self.x[j], label=labels[j], length=lengths[j])
                for j in range(len(self))]


@dataclasses.dataclass
class Source:
    """An opened input: its kind, path, size (None if unknown), fingerprint and a record stream;
    array inputs also give ``blocks(shard_size)``, the same shards as :class:`Block` columns."""
    kind: str
    path: Optional[str]
    total: Optional[int]
    fingerprint: dict
    records: Callable[[], Iterator[Record]]
    blocks: Optional[Callable[[int], Iterator[Union[Block, list]]]] = None


CHUNK = 32 << 20     # bytes per hashed chunk of an input file


def _chunk_sha256(path: Path, start: int) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        left = CHUNK
        while left and (block := f.read(min(1 << 22, left))):
            h.update(block)
            left -= len(block)
    return h.digest()


def _file_fingerprint(path: Path, kind: str) -> dict:
    """Kind, size and ``sha256`` of the whole file: any edit of the input changes the job's settings,
    so a resume on an edited input is refused. The hash is the SHA-256 of the SHA-256s of the file's
    32 MB chunks, computed on all cores (hashlib releases the GIL): reading a large input once costs
    about half the time of one sequential hash on 2 cores."""
    st = path.stat()
    starts = range(0, max(st.st_size, 1), CHUNK)
    try:
        with ThreadPoolExecutor(min(len(starts), os.cpu_count() or 1)) as pool:
            digests = list(pool.map(functools.partial(_chunk_sha256, path), starts))
    except OSError as e:
        raise JobError(f"cannot read input {path}: {e.strerror or e}") from e
    h = hashlib.sha256(b"lrpjax-chunked-sha256-v1:%d:%d:" % (CHUNK, st.st_size))
    for d in digests:
        h.update(d)
    return {"kind": kind, "path": str(path.resolve()), "size": st.st_size,
            "mtime": _dt.datetime.fromtimestamp(st.st_mtime, _dt.timezone.utc).isoformat(),
            "sha256": h.hexdigest()}


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


def _open_npz(path: Path) -> Source:
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
        raise JobError(f"cannot read {path} as .npz: {one_line(e)}") from e
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
            yield Record(i, ids[i], x=row, label=labels[i], length=lengths[i])

    return Source("npz", str(path), N, _file_fingerprint(path, "npz"), records,
                  functools.partial(_blocks, x, small))


def _blocks(x: np.ndarray, columns: dict, shard_size: int) -> Iterator[Union[Block, list]]:
    """Shards of an ``(N, T, F)`` array input as :class:`Block` columns (a list of records where ``x``
    is not numeric: those become per-example errors)."""
    for a in range(0, x.shape[0], shard_size):
        cols = {k: v[a:a + shard_size] for k, v in columns.items()}
        try:
            block = Block(a, np.asarray(x[a:a + shard_size], dtype=np.float32), **cols)
        except (TypeError, ValueError):
            yield [rec for i in range(a, min(a + shard_size, x.shape[0]))
                   for rec in Block(i, x[i:i + 1], **{k: v[i - a:i - a + 1] for k, v in cols.items()}
                                    ).records()]
            continue
        yield block


def _open_npy(path: Path) -> Source:
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        raise JobError(f"cannot read {path} as .npy: {one_line(e)}") from e
    if x.ndim != 3:
        raise JobError(f"{path}: an .npy input must have shape (N, T, F) (all full length), got {x.shape}.")

    def records():
        for i, row in _rows(x):
            yield Record(i, x=row)

    return Source("npy", str(path), x.shape[0], _file_fingerprint(path, "npy"), records,
                  functools.partial(_blocks, x, {}))


def _record_from_mapping(i: int, d: dict) -> Record:
    if "x" not in d and "text" not in d:
        return Record(i, d.get("id"), error="record has neither 'x' nor 'text'")
    return Record(i, d.get("id"), x=d.get("x"), text=d.get("text"), label=d.get("label"),
                  length=d.get("length"))


def _open_jsonl(path: Path) -> Source:
    def records():
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                except json.JSONDecodeError as e:
                    yield Record(i, error=f"invalid JSON: {e.msg}")
                    continue
                if not isinstance(d, dict):
                    yield Record(i, error=f"a JSON line must be an object, got {type(d).__name__}")
                    continue
                yield _record_from_mapping(i, d)

    return Source("jsonl", str(path), _count_lines(path), _file_fingerprint(path, "jsonl"), records)


def _open_text(path: Path) -> Source:
    def records():
        with open(path, encoding="utf-8", newline="") as f:
            for i, line in enumerate(f):
                line = line.rstrip("\r\n")
                label, text = None, line
                head, sep, rest = line.partition("\t")
                if sep and head.strip().lstrip("+-").isdigit():
                    label, text = int(head), rest
                yield Record(i, text=text, label=label)

    return Source("text", str(path), _count_lines(path), _file_fingerprint(path, "text"), records)


def _is_list_type(t) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _list2d_rows(col) -> list:
    """A pyarrow list<list<number>> column -> per row a float32 (T, F) array, or an error string."""
    out = []
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if not (_is_list_type(col.type) and _is_list_type(col.type.value_type)):
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


def _parquet_batch_records(batch, cols: list, first: int) -> Iterator[Record]:
    """The records of one Parquet record batch; ``first``: the index of its first row."""
    n = batch.num_rows
    get = {c: batch.column(c) for c in cols}
    xs = _list2d_rows(get["x"]) if "x" in get else [None] * n
    py = {c: get[c].to_pylist() for c in ("text", "label", "id", "length") if c in get}
    get_py = lambda c, r: py[c][r] if c in py else None
    for r in range(n):
        x = xs[r]
        rec = Record(first + r, get_py("id", r), text=get_py("text", r), label=get_py("label", r),
                     length=get_py("length", r))
        if isinstance(x, str):
            if rec.text is None:
                rec.error = x
        else:
            rec.x = x
        if rec.x is None and rec.text is None and rec.error is None:
            rec.error = "record has neither 'x' nor 'text'"
        yield rec


def _open_parquet(path: Path) -> Source:
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise JobError(f"cannot read {path} as Parquet: {one_line(e)}") from e
    names = set(pf.schema_arrow.names)
    if "x" not in names and "text" not in names:
        raise JobError(f"{path}: a Parquet input needs a column 'x' (list of lists of floats) or "
                       f"'text'; found columns {sorted(names)}.")
    cols = [c for c in ("x", "text", "label", "id", "length") if c in names]

    def records():
        i = 0
        for batch in pf.iter_batches(batch_size=2048, columns=cols):
            yield from _parquet_batch_records(batch, cols, i)
            i += batch.num_rows

    return Source("parquet", str(path), pf.metadata.num_rows, _file_fingerprint(path, "parquet"), records)


def _open_iterable(data: Iterable) -> Source:
    def records():
        for i, item in enumerate(data):
            if isinstance(item, dict):
                yield _record_from_mapping(i, item)
            elif isinstance(item, str):
                yield Record(i, text=item)
            elif isinstance(item, (np.ndarray, jax.Array, list, tuple)):
                yield Record(i, x=item)
            else:
                yield Record(i, error=f"unsupported item type {type(item).__name__} (want a dict with "
                                      f"'x' or 'text', an array (T, F) or a string)")

    total = len(data) if hasattr(data, "__len__") else None
    return Source("iterable", None, total, {"kind": "iterable", "type": type(data).__name__}, records)


def open_dataset(dataset: Union[str, os.PathLike, Iterable]) -> Source:
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


def read_shards(source: Source, shard_size: int) -> Iterator[list]:
    """The input's records in lists of ``shard_size`` (array inputs: :class:`Block` columns); read
    errors become :class:`JobError`."""
    records = source.records() if source.blocks is None else source.blocks(shard_size)
    while True:
        if source.blocks is not None:
            try:
                block = next(records, None)
            except OSError as e:
                raise JobError(f"cannot read {source.path}: {e.strerror or e}") from e
            if block is None:
                return
            yield block
            continue
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
