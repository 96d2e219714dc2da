"""A job's output directory: Parquet schemas and tables, atomic writes, shard paths, finding the shards
an earlier run completed, finalizing (``errors.parquet``, ``manifest.json``), and reading it back.

Layout (readable with pyarrow / pandas alone, no lrpjax needed)::

    out_dir/manifest.json                   model, rule options, input fingerprint, versions, counts
    out_dir/part-00000.parquet, ...         one per input shard: the explained examples, input order
    out_dir/errors.parquet                  every bad example: index, id, reason (merged at the end)
    out_dir/shard-errors/errors-00000.parquet, ...   the same, per shard (used when resuming)

Every file is written to a hidden temporary file and renamed into place; a shard's two files carry the
job's key and their row count in the Parquet footer, so a complete shard is recognised by its footer.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Optional, Union

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lrpjax._checks import one_line
from lrpjax.jobs.spec import (ERRORS, MANIFEST, SHARD_ERRORS_DIR, JobError, package_version, utc_now)


# ----------------------------------------------------------------------------------------------
# Tables and schemas

def _arrow_id_type(id_type: str):
    return pa.int64() if id_type == "int" else pa.string()


def _list_array(arrays: list, lengths: np.ndarray, inner: Optional[int] = None):
    """list<float32> (or list<list<float32>> with ``inner`` = F) from per-row numpy arrays."""
    offsets = np.zeros(len(arrays) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0, np.float32)
    values = pa.array(flat.astype(np.float32, copy=False), pa.float32())
    if inner is not None:  # rows of F values per step
        steps = np.arange(int(offsets[-1]) + 1, dtype=np.int64) * inner
        values = pa.ListArray.from_arrays(pa.array(steps.astype(np.int32), pa.int32()), values)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32), pa.int32()), values)


def _flat_list_array(values: np.ndarray, lengths: np.ndarray, inner: Optional[int] = None):
    """list<float32> (or list<list<float32>>) from padded rows ``values`` ``(m, T[, F])`` and lengths:
    the flat buffer of the valid steps and offsets, no per-row objects."""
    flat = values[np.arange(values.shape[1])[None, :] < lengths[:, None]]
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    arr = pa.array(flat.reshape(-1).astype(np.float32, copy=False), pa.float32())
    if inner is not None:
        steps = np.arange(int(offsets[-1]) + 1, dtype=np.int32) * inner
        arr = pa.ListArray.from_arrays(pa.array(steps, pa.int32()), arr)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), arr)


def _columns_table(ex, res: dict, id_type: str, full: bool):
    """:func:`results_table` of :class:`lrpjax.jobs.validate.Examples` columns and their results."""
    label = None if ex.labels is None else pa.array(ex.labels, pa.int64(), mask=~ex.label_valid)
    cols = {
        "index": pa.array(ex.index, pa.int64()),
        "id": pa.array(ex.ids, _arrow_id_type(id_type)),
        "label": label if label is not None else pa.nulls(len(ex), pa.int64()),
        "length": pa.array(ex.lengths.astype(np.int32), pa.int32()),
        "target": pa.array(res["target"].astype(np.int32), pa.int32()),
        "score": pa.array(res["score"].astype(np.float32), pa.float32()),
        "relevance": _flat_list_array(res["relevance"], ex.lengths),
    }
    if full:
        F = res["relevance_full"].shape[-1] if "relevance_full" in res else ex.x.shape[2]
        values = res.get("relevance_full", np.zeros((len(ex), 0, F), np.float32))
        cols["relevance_full"] = _flat_list_array(values, ex.lengths, inner=F)
    return pa.table(cols)


def results_table(examples, results, id_type: str, full: bool, tokens: bool):
    """A part file's table: one row per explained example (see :func:`results_schema`)."""
    if isinstance(results, dict):       # Examples columns (array inputs)
        return _columns_table(examples, results, id_type, full)
    lengths = np.array([ex.length for ex in examples], np.int64)
    cols = {
        "index": pa.array([ex.index for ex in examples], pa.int64()),
        "id": pa.array([ex.id for ex in examples], _arrow_id_type(id_type)),
        "label": pa.array([ex.label for ex in examples], pa.int64()),
        "length": pa.array(lengths.astype(np.int32), pa.int32()),
        "target": pa.array(np.array([r["target"] for r in results], np.int32), pa.int32()),
        "score": pa.array(np.array([r["score"] for r in results], np.float32), pa.float32()),
        "relevance": _list_array([r["relevance"] for r in results], lengths),
    }
    if full:
        F = results[0]["relevance_full"].shape[-1] if results else 0
        cols["relevance_full"] = _list_array([r["relevance_full"] for r in results], lengths, inner=F)
    if tokens:
        cols["tokens"] = pa.array([ex.tokens for ex in examples], pa.list_(pa.string()))
    return pa.table(cols)


def results_schema(id_type: str, full: bool, tokens: bool):
    """The schema of the part files: ``index``, ``id``, ``label``, ``length``, ``target``, ``score``,
    ``relevance`` [, ``relevance_full``] [, ``tokens``]."""
    fields = [("index", pa.int64()), ("id", _arrow_id_type(id_type)), ("label", pa.int64()),
              ("length", pa.int32()), ("target", pa.int32()), ("score", pa.float32()),
              ("relevance", pa.list_(pa.float32()))]
    if full:
        fields.append(("relevance_full", pa.list_(pa.list_(pa.float32()))))
    if tokens:
        fields.append(("tokens", pa.list_(pa.string())))
    return pa.schema(fields)


def _errors_table(rows: list, id_type: str):
    return pa.table({"index": pa.array([r[0] for r in rows], pa.int64()),
                     "id": pa.array([r[1] for r in rows], _arrow_id_type(id_type)),
                     "reason": pa.array([r[2] for r in rows], pa.string())})


def library_versions() -> dict:
    """The versions recorded in the manifest."""
    lrpjax = sys.modules.get("lrpjax")     # the package itself: always loaded before its submodules
    return {"lrpjax": getattr(lrpjax, "__version__", None), "jax": jax.__version__,
            "jaxlib": package_version("jaxlib"), "flax": package_version("flax"), "numpy": np.__version__,
            "pyarrow": pa.__version__, "python": sys.version.split()[0]}


# ----------------------------------------------------------------------------------------------
# Atomic writes and paths

# the temporary files a job writes: ``.<final name>.<pid>.tmp`` of its own files only
TMP_RE = re.compile(r"\.(?:part-\d+\.parquet|errors-\d+\.parquet|manifest\.json|errors\.parquet)\.\d+\.tmp")


def _tmp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


def _own_tmp_files(out: Path) -> list:
    """The temporary files in ``out`` (and its shard-errors folder) whose names a job creates."""
    found = glob.glob(str(out / ".*.tmp")) + glob.glob(str(out / SHARD_ERRORS_DIR / ".*.tmp"))
    return [f for f in found if TMP_RE.fullmatch(os.path.basename(f))]


def write_atomic_parquet(table, final: Path, metadata: dict) -> None:
    """Write ``table`` with ``metadata`` in its footer to ``final`` (a temporary file, renamed)."""
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


def write_atomic_json(obj: dict, final: Path) -> None:
    """Write ``obj`` as indented JSON to ``final`` (a temporary file, renamed)."""
    tmp = _tmp_path(final)
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, final)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise JobError(f"cannot write {final}: {e.strerror or e}; choose a writable output directory.") from e


def part_path(out: Path, k: int) -> Path:
    return out / f"part-{k:05d}.parquet"


def shard_errors_path(out: Path, k: int) -> Path:
    return out / SHARD_ERRORS_DIR / f"errors-{k:05d}.parquet"


def manifest_job_key(out: Path) -> Optional[str]:
    """The ``job_key`` of ``out/manifest.json`` (None if missing or unreadable)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("job_key")
    return None


def own_files(out: Path, shard_tmp: bool = True) -> list:
    """Every file a job writes into ``out`` (for overwrite=True); ``shard_tmp=False``: not the temporary
    files of shards (with several processes they belong to their writers)."""
    pats = ["part-*.parquet", ERRORS, MANIFEST, f"{SHARD_ERRORS_DIR}/errors-*.parquet"]
    found = [p for pat in pats for p in glob.glob(str(out / pat))]
    found += [p for p in _own_tmp_files(out)
              if shard_tmp or os.path.basename(p).startswith((f".{MANIFEST}.", f".{ERRORS}."))]
    return sorted({Path(p) for p in found})


def remove_stale_tmp(out: Path, p: int, n: int) -> None:
    """Remove the temporary files of an interrupted run: all of them for one process; with ``n``
    processes, process ``p`` removes those of its shards (``k % n == p``), process 0 also those of
    ``manifest.json`` / ``errors.parquet``."""
    for f in _own_tmp_files(out):     # never another program's hidden *.tmp files
        if n > 1:
            m = re.match(r"\.(?:part|errors)-(\d+)\.parquet\.", os.path.basename(f))
            if (int(m.group(1)) % n if m else 0) != p:
                continue
        with contextlib.suppress(OSError):
            os.unlink(f)


# ----------------------------------------------------------------------------------------------
# Shards

def table_digest(table) -> str:
    """sha256 of a table's content (column names, list lengths, values and nulls), independent of
    its Parquet encoding: recorded in a shard file's footer, checked on resume."""
    h = hashlib.sha256()
    for name in table.column_names:
        h.update(name.encode() + b"\0")
        arr = table.column(name).combine_chunks()
        while pa.types.is_list(arr.type):
            h.update(arr.value_lengths().fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64))
            arr = arr.flatten()
        h.update(arr.is_null().to_numpy(zero_copy_only=False).astype(np.uint8))
        if pa.types.is_string(arr.type):
            h.update(json.dumps(arr.to_pylist()).encode())
        else:
            h.update(np.ascontiguousarray(arr.fill_null(0).to_numpy(zero_copy_only=False)))
    return h.hexdigest()


def write_shard(out: Path, k: int, examples, results, errors: list, id_type: str, schema,
                meta: dict) -> None:
    """Write shard ``k``: its error rows ``(index, id, reason)`` first, then its part file (the part
    file's footer marks the shard complete). ``meta``: footer keys of both files; each file's footer
    also holds its row count and the :func:`table_digest` of its content."""
    full, tokens = "relevance_full" in schema.names, "tokens" in schema.names
    table = results_table(examples, results, id_type, full, tokens) if len(examples) else schema.empty_table()
    errs = _errors_table(errors, id_type)
    write_atomic_parquet(errs, shard_errors_path(out, k),
                         {**meta, "lrpjax.rows": len(errors), "lrpjax.sha256": table_digest(errs)})
    write_atomic_parquet(table, part_path(out, k),
                         {**meta, "lrpjax.rows": len(examples), "lrpjax.sha256": table_digest(table)})


def _complete_rows(path: Path, job_key: str, verify: bool = False) -> Optional[int]:
    """Row count of a finished shard file of this job (checked in the footer), else None.
    ``verify``: also read the whole file and compare its content with the footer's checksum; a
    damaged file gets a warning line on stderr (and None)."""
    try:
        md = pq.read_metadata(path)
        kv = md.metadata or {}
        if kv.get(b"lrpjax.job") != job_key.encode() or int(kv[b"lrpjax.rows"]) != md.num_rows:
            return None
    except Exception as e:     # missing, or no footer (a truncated file: damaged, reported below)
        if verify and path.exists():
            _warn_damaged(path, f"it has no valid footer: {type(e).__name__}: {one_line(e)[:120]}")
        return None
    if verify:
        try:
            ok = table_digest(pq.read_table(path)).encode() == kv.get(b"lrpjax.sha256")
            why = "its content does not match the checksum in its footer"
        except Exception as e:     # damaged pages: any read error means "recompute"
            ok, why = False, f"it is unreadable: {type(e).__name__}: {one_line(e)[:120]}"
        if not ok:
            _warn_damaged(path, why)
            return None
    return md.num_rows


def _warn_damaged(path: Path, why: str) -> None:
    print(f"lrpjax attribute: warning: {path} is damaged ({why}): its shard is computed and written "
          f"again.", file=sys.stderr, flush=True)


def completed_errors(out: Path, k: int, job_key: str, verify: bool = False) -> Optional[int]:
    """The error count of shard ``k`` if an earlier run of this job completed it (both files), else
    None. ``verify``: also check both files' content against their footer checksums (a resume)."""
    if _complete_rows(part_path(out, k), job_key, verify) is None:
        return None
    return _complete_rows(shard_errors_path(out, k), job_key, verify)


def stored_ids(out: Path, k: int) -> list:
    """``(index, id)`` of every example stored in shard ``k`` (results and errors), by index."""
    done = pq.read_table(part_path(out, k), columns=["index", "id"]).to_pydict()
    errs = pq.read_table(shard_errors_path(out, k), columns=["index", "id"]).to_pydict()
    return sorted(zip(done["index"] + errs["index"], done["id"] + errs["id"]), key=lambda t: t[0])


def _scan_shards(out: Path, n_shards: int, job_key: str) -> tuple[list, int]:
    """(shards without both complete files of this job, errors in the complete ones)."""
    missing, n_errors = [], 0
    for k in range(n_shards):
        rows = completed_errors(out, k, job_key)
        if rows is None:
            missing.append(k)
        else:
            n_errors += rows
    return missing, n_errors


def _merge_errors(out: Path, n_shards: int, id_type: str) -> None:
    tables = [pq.read_table(shard_errors_path(out, k)) for k in range(n_shards)]
    table = pa.concat_tables(tables) if tables else _errors_table([], id_type)
    write_atomic_parquet(table.replace_schema_metadata(None), out / ERRORS, {"lrpjax.rows": table.num_rows})


# ----------------------------------------------------------------------------------------------
# Finalizing

def finalize(out: Path, t0: float, n_shards: int, n_examples: int, job_key: str, id_type: str, schema,
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
        "status": "complete", "updated": utc_now(),
        "schema": {"id": str(_arrow_id_type(id_type)), "columns": schema.names},
        "counts": {"examples": n_examples, "explained": n_examples - n_errors, "errors": n_errors,
                   "shards": n_shards, **counts},
        "last_run": {**run, "seconds": round(seconds, 3),
                     "examples_per_second": round(explained / seconds if seconds > 0 else 0.0, 1)},
    })
    write_atomic_json(manifest, out / MANIFEST)
    return {"complete": True, "errors": n_errors}


# ----------------------------------------------------------------------------------------------
# Reading a job's output

def read_results(out_dir: Union[str, os.PathLike], columns: Optional[list] = None):
    """All part files of a job as one ``pyarrow.Table``, in input order (pyarrow only).

    Equivalent to ``pq.ParquetDataset(sorted(glob.glob(f"{out_dir}/part-*.parquet"))).read(columns)``.
    """
    paths = sorted(glob.glob(os.path.join(os.fspath(out_dir), "part-*.parquet")))
    if not paths:
        raise JobError(f"no part-*.parquet files in {out_dir}")
    return pa.concat_tables([pq.read_table(p, columns=columns).replace_schema_metadata(None) for p in paths])


def read_errors(out_dir: Union[str, os.PathLike]):
    """The errors table (``index``, ``id``, ``reason``) of a finished job."""
    return pq.read_table(os.path.join(os.fspath(out_dir), ERRORS))
