"""Validation: a raw :class:`~lrpjax.jobs.sources.Record` -> an :class:`Example` ready for batching, or
an error reason (bad examples become error rows; they never stop a job). Array inputs come as
:class:`~lrpjax.jobs.sources.Block` columns and are checked column-wise into :class:`Examples` (the same
checks, reasons and order of precedence, without per-example objects)."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from lrpjax._checks import is_int, one_line
from lrpjax.jobs.sources import Block, Record
from lrpjax.jobs.spec import JobError, ModelSpec


@dataclasses.dataclass
class Example:
    """A valid example: ``data`` ``(L, F)`` float32 or ``(L,)`` int32 token ids (unpadded)."""
    index: int
    id: Any
    data: np.ndarray              # (L, F) float32 or (L,) int32 token ids
    label: Optional[int]
    tokens: Optional[list] = None
    length: int = 0

    def __post_init__(self):
        self.length = int(self.data.shape[0])


@dataclasses.dataclass
class Examples:
    """The valid examples of a :class:`Block`, as columns: example ``k`` is row ``rows[k]`` of ``x``
    (``(n, T, F)`` float32, the block's rows, zero-padded later), valid for ``lengths[k]`` steps."""
    index: np.ndarray                 # (m,) int64 input positions
    ids: Any                          # (m,) int64 array, or a list of str
    x: np.ndarray                     # (n, T, F) the block's x
    rows: np.ndarray                  # (m,) int64
    lengths: np.ndarray               # (m,) int32
    labels: Optional[np.ndarray]      # (m,) int64, or None
    label_valid: Optional[np.ndarray] = None   # (m,) bool: which labels are given (None: all)

    def __len__(self) -> int:
        return int(self.rows.shape[0])


def _whole(a: np.ndarray) -> tuple[Optional[np.ndarray], np.ndarray]:
    """An integer or float column as int64 values and a mask of the whole numbers (None: neither)."""
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.int64), np.ones(a.shape, bool)
    if np.issubdtype(a.dtype, np.floating):
        ok = np.isfinite(a) & (np.mod(a, 1) == 0)
        return np.where(ok, a, 0).astype(np.int64), ok
    return None, np.zeros(a.shape, bool)


class Validator:
    """Checks and converts records; ``id_type`` is fixed by the first record ("int" or "string")."""

    def __init__(self, spec: ModelSpec, target, max_length: Optional[int]):
        self.spec, self.target, self.max_length = spec, target, max_length
        self.features = spec.features
        self.id_type: Optional[str] = None
        self.n_classes: Optional[int] = None
        self.seen: set = set()          # explicit ids (duplicates are errors)
        self.implicit = bytearray()      # bitmap of the indices used as ids (1 bit per example)

    def mark_seen(self, rec: Record, rid) -> bool:
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

    def record_id(self, rec: Record):
        """The output id of a record (None if it does not fit the id type)."""
        raw = rec.index if rec.id is None else rec.id
        if self.id_type is None:
            self.id_type = "int" if is_int(raw) else "string"
        if self.id_type == "int":
            return int(raw) if is_int(raw) else None
        return raw if isinstance(raw, str) else str(raw)

    def fix_id_type(self, first_records) -> None:
        """Fix the id type (int64 or string) from the first parsable record of the input."""
        if isinstance(first_records, Block):
            b = first_records
            first_records = Block(b.start, b.x[:1], *(None if a is None else a[:1] for a in
                                                      (b.ids, b.lengths, b.labels))).records()
        self.record_id(next((r for r in first_records if r.error is None), None)
                       or (first_records[0] if first_records else Record(0)))

    def infer_features(self, records: list) -> None:
        """Fix the feature count from the first record that has a usable ``x`` (unless given)."""
        if isinstance(records, Block):
            if self.features is None and records.x.shape[2] > 0 and len(records):
                self.features = int(records.x.shape[2])
            return
        for rec in records:
            if self.features is not None:
                return
            if rec.x is None or rec.error is not None:
                continue
            try:
                a = np.asarray(rec.x, dtype=np.float32)
            except (ValueError, TypeError):
                continue
            if a.ndim == 2 and a.shape[1] > 0:
                self.features = int(a.shape[1])

    def shard_ids(self, records: list) -> list:
        """``(index, id)`` of a shard's records in input order, marking their ids as used (a shard
        that an earlier run finished: its stored ids are compared with these)."""
        if isinstance(records, Block):
            records = records.records()
        expect = []
        for rec in records:
            rid = self.record_id(rec)
            if rid is not None:
                self.mark_seen(rec, rid)
            expect.append((rec.index, rid))
        return expect

    def note_foreign(self, records: list) -> None:
        """Another process's shard: keep the state as a single process would (ids seen, for
        duplicates; the feature count while no example fixed it), without checking or converting data."""
        if isinstance(records, Block):
            self.infer_features(records)
            records = records.records()
        for rec in records:
            if self.features is None and not self.spec.tokens:
                self(rec)
            else:
                rid = self.record_id(rec)
                if rid is not None:
                    self.seen.add(rid)

    def split(self, records) -> tuple[Any, list]:
        """A shard's records -> (examples, error rows ``(index, id, reason)``); a :class:`Block` ->
        (:class:`Examples`, error rows)."""
        if isinstance(records, Block):
            done = self._split_block(records)
            if done is not None:
                return done
            records = records.records()      # columns the fast path does not take: one by one
        good, errors = [], []
        for rec in records:
            rid, ex, reason = self(rec)
            if ex is None:
                errors.append((rec.index, rid, reason))
            else:
                good.append(ex)
        return good, errors

    def _block_ids(self, b: Block, index: np.ndarray):
        """(ids column, reasons) of a block: a bad or duplicate id is an error; None if the ids are
        of a kind the column checks do not take."""
        n = len(b)
        reasons: dict = {}          # row -> reason of its error (the first check it fails)
        if self.id_type is None:
            self.fix_id_type(b)
        if b.ids is None:
            ids = index
        elif np.issubdtype(b.ids.dtype, np.integer) or b.ids.dtype.kind == "U":
            ids = b.ids
        else:
            return None
        if self.id_type == "string":
            ids = [str(v) for v in ids.tolist()]
            fresh = np.fromiter((self.mark_seen(Record(0, v), v) for v in ids), bool, n)
        elif ids.dtype.kind == "U":
            for j, v in enumerate(b.ids.tolist()):
                reasons[j] = f"id {v!r} is not an integer (the input's first id is)"
            return [None] * n, reasons
        elif b.ids is None and not self.seen and index.size and index[-1] < (1 << 40):
            fresh = self._mark_implicit(index)
        else:
            given = b.ids is not None
            fresh = np.fromiter((self.mark_seen(Record(0, v if given else None), v) for v in ids.tolist()),
                                bool, n)
        for j in np.flatnonzero(~fresh):
            v = ids[j].item() if isinstance(ids, np.ndarray) else ids[j]
            reasons[j] = f"duplicate id {v!r}"
        return ids, reasons

    def _mark_implicit(self, index: np.ndarray) -> np.ndarray:
        """Mark implicit ids (input positions) in the bitmap, column-wise; True where new."""
        need = int(index.max()) // 8 + 1
        if need > len(self.implicit):
            self.implicit.extend(bytes(need - len(self.implicit) + (1 << 12)))
        bits = np.frombuffer(self.implicit, np.uint8)
        byte, bit = index >> 3, (index & 7).astype(np.uint8)
        fresh = (bits[byte] >> bit) & 1 == 0
        np.bitwise_or.at(bits, byte[fresh], np.left_shift(1, bit[fresh]).astype(np.uint8))
        del bits     # (the bytearray cannot grow while a view of it exists)
        return fresh

    def _split_block(self, b: Block) -> Optional[tuple[Examples, list]]:
        """:meth:`split` for a :class:`Block`, column-wise (None: a column it does not take)."""
        n, T, F = b.x.shape
        index = b.index
        got = self._block_ids(b, index)
        if got is None:
            return None
        ids, reasons = got
        labels, label_ok = (None, np.zeros(n, bool)) if b.labels is None else _whole(b.labels)
        if b.labels is not None and labels is None:
            return None
        lengths, length_ok = (np.full(n, T, np.int64), np.ones(n, bool)) if b.lengths is None \
            else _whole(b.lengths)
        if lengths is None:
            return None
        raw = lambda col, j: col[j].item()

        def fail(mask, why):
            for j in np.flatnonzero(mask).tolist():
                if j not in reasons:
                    reasons[j] = why(j)

        if self.target == "true":
            if b.labels is None:
                fail(np.ones(n, bool), lambda j: "no label (target='true' needs one)")
            else:
                fail(~label_ok, lambda j: f"label {raw(b.labels, j)!r} is not an integer class index")
                if self.n_classes is not None:
                    fail(label_ok & ((labels < 0) | (labels >= self.n_classes)),
                         lambda j: f"label {labels[j]} out of range [0, {self.n_classes})")
        fail(~length_ok, lambda j: f"length {raw(b.lengths, j)!r} is not a whole number (the count of "
                                   f"valid rows of x)")
        fail(length_ok & ((lengths < 0) | (lengths > T)),
             lambda j: f"length {raw(b.lengths, j)!r} outside [0, {T}] (the rows of x)")
        lengths = np.where(length_ok & (lengths >= 0) & (lengths <= T), lengths, 0)
        fail(lengths == 0, lambda j: "empty sequence (length 0)")
        if self.features is None and (lengths > 0).any():
            self.features = int(F)
        if F != self.features:
            fail(lengths > 0, lambda j: f"wrong feature count: {F} (expected {self.features})")
        if self.max_length is not None:
            fail(lengths > self.max_length,
                 lambda j: f"too long: length {lengths[j]} > max_length {self.max_length}")
        valid = np.arange(T)[None, :] < lengths[:, None]
        n_bad = np.count_nonzero(~np.isfinite(b.x) & valid[:, :, None], axis=(1, 2))
        fail(n_bad > 0, lambda j: f"non-finite values: {n_bad[j]} NaN/inf in x")
        bad = np.zeros(n, bool)
        bad[list(reasons)] = True
        rows = np.flatnonzero(~bad)
        errors = [(int(index[j]), ids[j].item() if isinstance(ids, np.ndarray) else ids[j], reasons[j])
                  for j in np.flatnonzero(bad).tolist()]
        pick_ids = [ids[j] for j in rows] if isinstance(ids, list) else ids[rows].astype(np.int64)
        good = Examples(index[rows], pick_ids, b.x, rows, lengths[rows].astype(np.int32),
                        None if labels is None else labels[rows], None if labels is None else label_ok[rows])
        return good, errors

    def label(self, raw) -> tuple[Optional[int], Optional[str]]:
        if raw is None:
            return None, None
        if is_int(raw):
            return int(raw), None
        if isinstance(raw, float) and raw.is_integer():
            return int(raw), None
        if isinstance(raw, str) and raw.strip().lstrip("+-").isdigit():
            return int(raw), None
        return None, f"label {raw!r} is not an integer class index"

    def __call__(self, rec: Record) -> tuple[Any, Optional[Example], Optional[str]]:
        """Returns ``(id, example, None)`` or ``(id, None, reason)``."""
        rid = self.record_id(rec)
        if rid is None:
            return None, None, f"id {rec.id!r} is not an integer (the input's first id is)"
        if not self.mark_seen(rec, rid):
            return rid, None, f"duplicate id {rid!r}"
        if rec.error is not None:
            return rid, None, rec.error
        label, err = self._checked_label(rec)
        if err:
            return rid, None, err
        ex, err = self._tokens(rec) if self.spec.tokens else self._floats(rec)
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
        return rid, Example(rec.index, rid, ex, label, tokens), None

    def _checked_label(self, rec: Record) -> tuple[Optional[int], Optional[str]]:
        """The label, and an error when ``target='true'`` needs a valid one."""
        label, label_err = self.label(rec.label)
        if self.target == "true":
            if label_err:
                return None, label_err
            if label is None:
                return None, "no label (target='true' needs one)"
            if self.n_classes is not None and not 0 <= label < self.n_classes:
                return None, f"label {label} out of range [0, {self.n_classes})"
        return label, None

    def _floats(self, rec: Record):
        if rec.x is None:
            if rec.text is not None:
                raise JobError(f"example {rec.index} is text but the model spec has no tokenizer: give "
                               f"ModelSpec(tokenizer=...) or return (apply, tokenizer) from the factory.")
            return None, "record has no 'x'"
        try:
            a = np.asarray(rec.x, dtype=np.float32)
        except (ValueError, TypeError) as e:
            return None, f"x is not a (T, F) numeric array: {one_line(e)[:100]}"
        if a.ndim != 2:
            return None, f"x must have shape (T, F), got {a.shape}"
        if rec.length is not None:
            length = rec.length
            if isinstance(length, (float, np.floating)) and float(length).is_integer():
                length = int(length)        # a whole float (e.g. 6.0, a float lengths array)
            if not is_int(length):
                return None, f"length {rec.length!r} is not a whole number (the count of valid rows of x)"
            if not 0 <= length <= a.shape[0]:
                return None, f"length {rec.length!r} outside [0, {a.shape[0]}] (the rows of x)"
            a = a[:int(length)]
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

    def _tokens(self, rec: Record):
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
            return None, f"tokenizer failed: {type(e).__name__}: {one_line(e)[:100]}"
        unknown = [k for k, t in enumerate(raw) if t is None or (is_int(t) and t == -1)]
        if unknown:
            if spec.unk_id is None:
                return None, (f"unknown token(s) at position(s) {unknown[:10]} and the model spec has "
                              f"no unk_id")
            unk = set(unknown)
            raw = [spec.unk_id if k in unk else t for k, t in enumerate(raw)]
        if not all(is_int(t) for t in raw):
            return None, "tokenizer returned non-integer ids"
        ids = np.asarray(raw, dtype=np.int64)
        hi = len(spec.vocab) if spec.vocab is not None else np.iinfo(np.int32).max
        bad = ids[(ids < 0) | (ids >= hi)]
        if bad.size:
            return None, f"token id(s) {bad[:5].tolist()} outside [0, {hi})"
        return ids.astype(np.int32), None


def first_valid_example(spec: ModelSpec, records: list, max_length: Optional[int]) -> Optional[Example]:
    """The first record of ``records`` that is a valid example (for the probe batch of a token
    model), checked by a validator of its own (the job's validator state is not touched)."""
    probe_validator = Validator(spec, "pred", max_length)
    for rec in records:
        _, ex, _ = probe_validator(rec)
        if ex is not None:
            return ex
    return None
