"""Tombstones: time ranges of series deleted while their samples stay on disk.

delete_series with a range that holds only part of a series cannot forget
it (index.py) as it does a series deleted whole: the range is recorded here,
per series id, [mint, maxt] inclusive as Prometheus' tombstones, and every
read leaves the samples inside it out. Compaction leaves them out of what it
writes, and rewrites the files still holding them (Shard._plan_purge); once
no file and no head holds such a sample, the range is dropped.

The shard keeps its tombstones in one small file (format below), written
whole to a temporary name, fsynced and renamed over the last one before
delete_series answers, so a crash leaves either set and never half of one.
A Tombstones value never changes: a read that captured one keeps a
consistent set while deletes and cleanups replace the shard's.

File: magic ``ATHNTOMB``, u32 version, u32 rows, then the three int64
columns (series id, mint, maxt; rows sorted by id and mint, ranges of one
series disjoint and not adjacent), then a CRC-32 of everything before it.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from athens.errors import AthensError
from athens.kernels import kernel, read_only
from athens.shards import wal as walmod

MAGIC = b"ATHNTOMB"
VERSION = 1
FILE_NAME = "tombstones"
_HEAD = struct.Struct("<8sII")
_CRC = struct.Struct("<I")


class TombstonesCorruptError(AthensError):
    """The tombstones file is not one this version wrote whole: opening the
    shard would show deleted samples again, so it does not open."""

    error_type = "internal"


@kernel(cache=True)
def k_merge_ranges(ids, mint, maxt, keep):  # pragma: no cover - jitted
    """Rows sorted by (id, mint): fold each into the kept row before it when
    they overlap or touch (keep[i] False), widening that row's maxt in place."""
    last = -1
    for i in range(len(ids)):
        if last >= 0 and ids[i] == ids[last] and mint[i] <= maxt[last] + 1:
            if maxt[i] > maxt[last]:
                maxt[last] = maxt[i]
            keep[i] = False
        else:
            keep[i] = True
            last = i


@kernel(cache=True, nogil=True)
def k_overlaps(ids, lo, hi, t_ids, t_mint, t_maxt, row_hit, tomb_hit):  # pragma: no cover - jitted
    """For rows of data (series id, [lo, hi]): row_hit[i] when a tombstone of
    its series overlaps it, tomb_hit[j] when tombstone j overlaps any row."""
    n = len(t_ids)
    for i in range(len(ids)):
        j = np.searchsorted(t_ids, ids[i])
        while j < n and t_ids[j] == ids[i] and t_mint[j] <= hi[i]:
            if t_maxt[j] >= lo[i]:
                row_hit[i] = True
                tomb_hit[j] = True
            j += 1


@kernel(cache=True, nogil=True)
def k_drop_hidden(run_ids, starts, ts, values, t_ids, t_mint, t_maxt, sizes):  # pragma: no cover - jitted
    """Runs of samples (run r: series run_ids[r], ts[starts[r]:starts[r+1]]
    ascending) without the samples a tombstone of their series holds,
    moved forward in place; the samples kept per run in sizes. Each range
    costs two binary searches in its run, each kept sample at most a copy
    (none before a run's first dropped sample). Returns the samples kept."""
    n = len(t_ids)
    w = 0
    for r in range(len(run_ids)):
        a = starts[r]
        b = starts[r + 1]
        s = run_ids[r]
        w0 = w
        j = np.searchsorted(t_ids, s)
        k = a
        while k < b:
            while j < n and t_ids[j] == s and t_maxt[j] < ts[k]:
                j += 1
            lo = b
            hi = b
            if j < n and t_ids[j] == s and t_mint[j] <= ts[b - 1]:
                lo = k + np.searchsorted(ts[k:b], t_mint[j])
                hi = k + np.searchsorted(ts[k:b], t_maxt[j], side="right")
                j += 1
            if w != k:
                for i in range(k, lo):
                    ts[w + i - k] = ts[i]
                    values[w + i - k] = values[i]
            w += lo - k
            k = hi
        sizes[r] = w - w0
    return w


class Tombstones:
    """Deleted ranges of series, immutable (every change returns a new value)."""

    __slots__ = ("ids", "mint", "maxt")

    def __init__(self, ids: np.ndarray, mint: np.ndarray, maxt: np.ndarray) -> None:
        self.ids = read_only(np.asarray(ids, np.int64))
        self.mint = read_only(np.asarray(mint, np.int64))
        self.maxt = read_only(np.asarray(maxt, np.int64))

    @classmethod
    def empty(cls) -> Tombstones:
        e = np.empty(0, np.int64)
        return cls(e, e, e)

    def __len__(self) -> int:
        return len(self.ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tombstones) and all(
            np.array_equal(a, b) for a, b in zip(self.columns(), other.columns())
        )

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.ids, self.mint, self.maxt

    def add(self, ids: np.ndarray, mint: np.ndarray, maxt: np.ndarray) -> Tombstones:
        """These with [mint[i], maxt[i]] deleted from series ids[i]."""
        all_ids = np.concatenate((self.ids, np.asarray(ids, np.int64)))
        lo = np.concatenate((self.mint, np.asarray(mint, np.int64)))
        hi = np.concatenate((self.maxt, np.asarray(maxt, np.int64)))
        order = np.lexsort((lo, all_ids))
        all_ids, lo, hi = all_ids[order], lo[order], hi[order]
        keep = np.empty(len(all_ids), bool)
        k_merge_ranges(read_only(all_ids), read_only(lo), hi, keep)
        return Tombstones(all_ids[keep], lo[keep], hi[keep])

    def only(self, rows: np.ndarray) -> Tombstones:
        """The tombstones at the rows a bool mask selects."""
        return Tombstones(self.ids[rows], self.mint[rows], self.maxt[rows])

    def overlaps(self, ids: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(per data row (series id, [lo, hi]): whether a tombstone overlaps
        it; per tombstone: whether any data row overlaps it)."""
        row_hit = np.zeros(len(ids), bool)
        tomb_hit = np.zeros(len(self), bool)
        if len(self) and len(ids):
            k_overlaps(read_only(ids), read_only(lo), read_only(hi), self.ids, self.mint, self.maxt,
                       row_hit, tomb_hit)
        return row_hit, tomb_hit

    def drop_hidden(
        self, run_ids: np.ndarray, starts: np.ndarray, ts: np.ndarray, values: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ts, values, samples per run) without the samples these hold, for
        runs of samples: run r is series run_ids[r], ts[starts[r]:starts[r+1]],
        ascending. Works in place: ts and values (writeable, int64 and
        float64) are overwritten, the answer is their first part."""
        sizes = np.empty(len(run_ids), np.int64)
        w = k_drop_hidden(read_only(run_ids), read_only(starts), ts, values, self.ids, self.mint, self.maxt, sizes)
        return ts[:w], values[:w], sizes

    def save(self, shard_dir: Path) -> None:
        """Replace the shard's file with these, durably (an empty set removes it)."""
        path = shard_dir / FILE_NAME
        if not len(self):
            if path.exists():
                path.unlink()
                walmod.fsync_dir(shard_dir)
            return
        body = _HEAD.pack(MAGIC, VERSION, len(self)) + b"".join(c.tobytes() for c in self.columns())
        tmp = path.with_name(FILE_NAME + ".tmp")
        with open(tmp, "wb") as f:
            f.write(body + _CRC.pack(zlib.crc32(body)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        walmod.fsync_dir(shard_dir)

    @classmethod
    def load(cls, shard_dir: Path) -> Tombstones:
        """The shard's tombstones (none without a file)."""
        path = shard_dir / FILE_NAME
        path.with_name(FILE_NAME + ".tmp").unlink(missing_ok=True)  # a save the process did not finish
        if not path.exists():
            return cls.empty()
        raw = path.read_bytes()
        if len(raw) < _HEAD.size + _CRC.size:
            raise TombstonesCorruptError(f"{path}: {len(raw)} bytes is too short")
        body, (crc,) = raw[: -_CRC.size], _CRC.unpack(raw[-_CRC.size :])
        magic, version, n = _HEAD.unpack_from(body)
        if magic != MAGIC or version != VERSION:
            raise TombstonesCorruptError(f"{path}: not a version {VERSION} tombstones file")
        if zlib.crc32(body) != crc or len(body) != _HEAD.size + 24 * n:
            raise TombstonesCorruptError(f"{path}: CRC or length mismatch")
        cols = np.frombuffer(body, np.int64, 3 * n, _HEAD.size).reshape(3, n)
        return cls(cols[0].copy(), cols[1].copy(), cols[2].copy())


def warm_up() -> None:
    """Compile (or load) the kernels with the argument kinds reads and
    compaction pass."""
    one = np.ones(1, np.int64)
    t = Tombstones.empty().add(one, one * 5, one * 9).add(one, one * 0, one * 2)
    t.overlaps(np.array([1, 2], np.int64), np.array([0, 0], np.int64), np.array([9, 9], np.int64))
    t.drop_hidden(np.array([1], np.int64), np.array([0, 3], np.int64), np.array([1, 4, 6], np.int64), np.ones(3))
