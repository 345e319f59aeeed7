"""Sealed segment files: immutable chunk files with a footer index, read by mmap.

A seal writes every head chunk into one new file (format:
docs/format/segment.md): header, chunk bytes, a columnar footer index (one
row per chunk: series id, min/max time, sample count, last value bits,
offset) and a fixed-size tail with the index location, CRC-32s of index and
data, and the magic again. It is written to a temporary name, fsynced,
renamed into place and the directory fsynced, so a file under its final name
is always complete.

Opening reads the tail and the index (and, unless disabled, checks the data
CRC); a file that fails is reported as SegmentCorruptError so the shard can
move it aside and keep running.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from athens.shards.head import ClosedChunks

SEGMENT_MAGIC = b"ATHNSEGM"
SEGMENT_VERSION = 1
_HEADER = struct.Struct("<8sII")  # magic, version, flags
HEADER_SIZE = _HEADER.size  # 16
_INDEX_HEAD = struct.Struct("<IIqqQ")  # chunks, reserved, mint, maxt, samples
_TAIL = struct.Struct("<QQII8s")  # index offset, index length, index crc, data crc, magic
TAIL_SIZE = _TAIL.size  # 32
SUFFIX = ".seg"
TMP_SUFFIX = ".seg.tmp"


class SegmentCorruptError(Exception):
    """A segment file is truncated, has a bad magic/version, or fails its CRC."""


@dataclass(slots=True)
class SegmentInfo:
    seq: int
    path: Path
    chunks: int
    samples: int
    mint: int
    maxt: int
    size: int


def segment_name(seq: int) -> str:
    return f"{seq:08d}{SUFFIX}"


def _crc(buf: bytes | memoryview) -> int:
    return zlib.crc32(buf) & 0xFFFFFFFF


def write_segment_tmp(directory: Path, seq: int, chunks: ClosedChunks) -> Path:
    """Write the segment under its temporary name and fsync it. Returns the tmp path.

    `chunks` must be sorted by (series, mint) and have offsets starting at 0.
    """
    k = len(chunks)
    if k == 0:
        raise ValueError("refusing to write an empty segment")
    data = np.ascontiguousarray(chunks.data, np.uint8)
    data_len = int(chunks.offsets[-1])
    pad = (-(HEADER_SIZE + data_len)) % 8
    index_offset = HEADER_SIZE + data_len + pad
    index = b"".join(
        (
            _INDEX_HEAD.pack(
                k, 0, int(chunks.mint.min()), int(chunks.maxt.max()), int(chunks.counts.sum())
            ),
            np.ascontiguousarray(chunks.series, "<i8").tobytes(),
            np.ascontiguousarray(chunks.mint, "<i8").tobytes(),
            np.ascontiguousarray(chunks.maxt, "<i8").tobytes(),
            np.ascontiguousarray(chunks.counts, "<i8").tobytes(),
            np.ascontiguousarray(chunks.last_bits, "<u8").tobytes(),
            (np.asarray(chunks.offsets, np.int64) + HEADER_SIZE).astype("<i8").tobytes(),
        )
    )
    data_view = memoryview(data[:data_len])
    tail = _TAIL.pack(index_offset, len(index), _crc(index), _crc(data_view), SEGMENT_MAGIC)
    tmp = Path(directory) / f"{seq:08d}{TMP_SUFFIX}"
    with open(tmp, "wb") as f:
        f.write(_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0))
        f.write(data_view)
        f.write(bytes(pad))
        f.write(index)
        f.write(tail)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def publish_segment(tmp: Path) -> Path:
    """Rename a written tmp segment to its final name and fsync the directory."""
    final = tmp.with_name(tmp.name[: -len(TMP_SUFFIX)] + SUFFIX)
    os.replace(tmp, final)
    fd = os.open(tmp.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return final


class Segment:
    """A sealed segment opened read-only via mmap."""

    def __init__(self, path: Path, verify_data: bool = True) -> None:
        self.path = Path(path)
        self.seq = int(self.path.name[: -len(SUFFIX)])
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < HEADER_SIZE + TAIL_SIZE:
                raise SegmentCorruptError(f"{path}: {size} bytes is too short")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.size = size
        magic, version, _flags = _HEADER.unpack_from(mm, 0)
        if magic != SEGMENT_MAGIC:
            raise SegmentCorruptError(f"{path}: bad magic {magic!r}")
        if version != SEGMENT_VERSION:
            raise SegmentCorruptError(f"{path}: unsupported version {version}")
        idx_off, idx_len, idx_crc, data_crc, tail_magic = _TAIL.unpack_from(mm, size - TAIL_SIZE)
        if tail_magic != SEGMENT_MAGIC:
            raise SegmentCorruptError(f"{path}: bad tail magic (truncated?)")
        if idx_off < HEADER_SIZE or idx_off + idx_len != size - TAIL_SIZE:
            raise SegmentCorruptError(f"{path}: index location out of bounds")
        view = memoryview(mm)
        try:
            if _crc(view[idx_off : idx_off + idx_len]) != idx_crc:
                raise SegmentCorruptError(f"{path}: index CRC mismatch")
            k, _res, mint, maxt, samples = _INDEX_HEAD.unpack_from(mm, idx_off)
            if idx_len != _INDEX_HEAD.size + 8 * (6 * k + 1):
                raise SegmentCorruptError(f"{path}: index length does not match {k} chunks")
            pos = idx_off + _INDEX_HEAD.size
            cols = []
            for dtype, n in (("<i8", k), ("<i8", k), ("<i8", k), ("<i8", k), ("<u8", k), ("<i8", k + 1)):
                cols.append(np.frombuffer(mm, dtype, n, pos))
                pos += 8 * n
            series, cmint, cmaxt, counts, last_bits, offsets = cols
            data_end = int(offsets[-1]) if k else HEADER_SIZE
            if k and (
                offsets[0] != HEADER_SIZE
                or data_end > idx_off
                or np.any(np.diff(offsets) <= 0)
            ):
                raise SegmentCorruptError(f"{path}: chunk offsets out of bounds")
            if verify_data and _crc(view[HEADER_SIZE:data_end]) != data_crc:
                raise SegmentCorruptError(f"{path}: data CRC mismatch")
        finally:
            view.release()
        self.mint = int(mint)
        self.maxt = int(maxt)
        self.samples = int(samples)
        self.chunks = ClosedChunks(
            series, cmint, cmaxt, counts, last_bits, np.frombuffer(mm, np.uint8), offsets
        )
        self._mm = mm

    def info(self) -> SegmentInfo:
        return SegmentInfo(
            self.seq, self.path, len(self.chunks), self.samples, self.mint, self.maxt, self.size
        )

    def read(
        self, ids: np.ndarray, want: np.ndarray, mint: int, maxt: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Decoded (series, ts, values) of the chunks of series `ids` (sorted;
        `want` is the same set as a bool mask indexed by id) overlapping
        [mint, maxt]; None if there are none."""
        if maxt < self.mint or mint > self.maxt:
            return None
        c = self.chunks
        if len(ids) * 8 < len(c):
            # Few series: binary-search their runs (chunks are sorted by series).
            lo = np.searchsorted(c.series, ids, "left")
            n = np.searchsorted(c.series, ids, "right") - lo
            total = int(n.sum())
            if total == 0:
                return None
            first = np.cumsum(n) - n
            cand = np.repeat(lo - first, n) + np.arange(total, dtype=np.int64)
            sel = cand[(c.maxt[cand] >= mint) & (c.mint[cand] <= maxt)]
        else:
            ok = c.series < len(want)
            hit = want[np.where(ok, c.series, 0)] & ok
            sel = np.flatnonzero(hit & (c.maxt >= mint) & (c.mint <= maxt))
        if len(sel) == 0:
            return None
        return c.select(sel).decode()

    def series_last(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(series ids, newest ts, that sample's value bits): one entry per series."""
        c = self.chunks
        if len(c) == 0:
            e = np.empty(0, np.int64)
            return e, e, np.empty(0, np.uint64)
        # Chunks are sorted by (series, mint): the last chunk of each series is newest.
        last = np.flatnonzero(np.concatenate((c.series[1:] != c.series[:-1], [True])))
        return c.series[last], c.maxt[last], c.last_bits[last]

    def series_ranges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(series ids, min ts, max ts) per series in this segment."""
        c = self.chunks
        if len(c) == 0:
            e = np.empty(0, np.int64)
            return e, e, e
        first = np.flatnonzero(np.concatenate(([True], c.series[1:] != c.series[:-1])))
        last = np.concatenate((first[1:] - 1, [len(c) - 1]))
        return c.series[first], c.mint[first], c.maxt[last]
