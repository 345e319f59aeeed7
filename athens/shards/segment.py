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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cramjam
import numpy as np

from athens.shards.head import ClosedChunks

SEGMENT_MAGIC = b"ATHNSEGM"
SEGMENT_VERSION = 3
# Version 1: the index header's second field was reserved (always 0); version
# 2 stores the WAL boundary there; version 3 adds the shared-timestamps column
# (chunks of version 2 and 3 files hold chunk format 1 or 2). All are read.
READABLE_VERSIONS = (1, 2, 3)
_HEADER = struct.Struct("<8sII")  # magic, version, flags
HEADER_SIZE = _HEADER.size  # 16
FLAG_SHARED_TS = 1  # version 3: the index has the shared-timestamps column
FLAG_ZSTD = 2  # version 3: the chunk bytes are zstd-compressed in blocks (block table in the index)
# version 3: compaction's layout of a closed partition (long chunks, one file
# per partition); files with FLAG_ZSTD are in it too (only compaction wrote
# them, and before this flag existed it wrote no others).
FLAG_COMPACTED = 4
# Bits 8-15: the merge level of an open-time file (compact.plan_merge): 0
# as a seal writes it, n+1 for a merge of level-n files. Readers before
# levels existed ignore these bits (every file they wrote is level 0).
LEVEL_SHIFT = 8
MAX_LEVEL = 255
# Raw chunk bytes per compressed block (whole chunks, so at least one chunk):
# big enough for zstd to find the repeated header fields and byte patterns
# of a scrape target's chunks (docs/format/segment.md), small enough that
# reading a few series decompresses little: the chunks of one metric are
# spread over the file (series ids in arrival order), a block each. 16 KiB
# blocks instead of 64 KiB: day files 1% bigger, reads of 41 series over
# 12 h 35-50% faster.
ZSTD_BLOCK_BYTES = 16 << 10
ZSTD_LEVEL = 3
# A block is kept compressed only if zstd saves at least this share of it;
# otherwise it is stored as is, and reading it is a copy (~10x cheaper than
# decompressing). Its stored size then equals its raw size, which a zstd
# frame kept by this rule never does: that is how readers tell them apart.
ZSTD_MIN_SAVING = 0.1
_INDEX_HEAD = struct.Struct("<IIqqQ")  # chunks, WAL boundary, mint, maxt, samples
_TAIL = struct.Struct("<QQII8s")  # index offset, index length, index crc, data crc, magic
TAIL_SIZE = _TAIL.size  # 32
SUFFIX = ".seg"
TMP_SUFFIX = ".seg.tmp"
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)  # Linux, macOS
# Bytes a segment is written in at most at a time. Linux (ext4 since 6.x,
# XFS) caches a file written in large write()s as large folios, and a read
# fault through a mapping maps all of the folio around it: a file written a
# MiB at a time mapped a MiB into the reader for every byte it touched, as
# much as 16 times the kernel's fault-around. Reads of a few series then
# mapped most of every file's footers and chunk bytes into the worker.
WRITE_PIECE = 64 << 10


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
    wal_boundary: int = 0
    compacted: bool = True  # in compaction's layout of a closed partition; False: as a seal writes
    level: int = 0  # merges of seals behind this file (LEVEL_SHIFT)


def segment_name(seq: int) -> str:
    return f"{seq:08d}{SUFFIX}"


def _crc(buf: bytes | memoryview) -> int:
    return zlib.crc32(buf) & 0xFFFFFFFF


class SegmentWriter:
    """Writes one segment file chunk block by chunk block (bounded memory).

    Blocks must come in (series, mint) order overall. finish() appends the
    footer index and tail and fsyncs; the file keeps its .seg.tmp name until
    publish_segment renames it. `compacted` marks compaction's output for a
    closed partition (FLAG_COMPACTED). With compress, chunk bytes are written
    as zstd blocks of about ZSTD_BLOCK_BYTES (whole chunks each); the index
    still gives each chunk's offset in the uncompressed chunk bytes.
    """

    def __init__(
        self, directory: Path, seq: int, wal_boundary: int = 0, compacted: bool = False, compress: bool = False,
        level: int = 0,
    ) -> None:
        if not 0 <= level <= MAX_LEVEL:
            raise ValueError(f"merge level {level} is out of 0..{MAX_LEVEL}")
        self.tmp = Path(directory) / f"{seq:08d}{TMP_SUFFIX}"
        self.wal_boundary = wal_boundary
        self.compacted = compacted
        self.compress = compress
        self.level = level
        self._f = open(self.tmp, "wb")
        self._f.write(_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0))
        self._cols: list[list[np.ndarray]] = [[], [], [], [], [], [], []]
        self._pos = HEADER_SIZE  # in the uncompressed chunk bytes
        self._file_pos = HEADER_SIZE
        self._data_crc = 0
        # compress: raw bytes not yet in a block, the chunk ends in them, and
        # each block's (raw start, file start).
        self._pending = bytearray()
        self._pending_raw = HEADER_SIZE  # raw offset of _pending[0]
        self._pending_ends: list[np.ndarray] = []
        self._blocks: list[tuple[int, int]] = []
        self.chunks = 0
        self.samples = 0

    def add(self, chunks: ClosedChunks) -> None:
        if len(chunks) == 0:
            return
        if chunks.ts_ref is not None and chunks.ts_data is not chunks.data:
            raise ValueError("shared timestamps must refer to chunks of the same block")
        lo = int(chunks.offsets[0])
        hi = int(chunks.offsets[-1])
        data = memoryview(np.ascontiguousarray(chunks.data[lo:hi], np.uint8))
        if self.compress:
            self._pending_ends.append(np.asarray(chunks.offsets[1:], np.int64) - lo + len(self._pending))
            self._pending += data
            self._emit_blocks(final=False)
        else:
            self._write(data)
        c = self._cols
        c[0].append(chunks.series)
        c[1].append(chunks.mint)
        c[2].append(chunks.maxt)
        c[3].append(chunks.counts)
        c[4].append(chunks.last_bits)
        c[5].append(np.asarray(chunks.offsets[:-1], np.int64) - lo + self._pos)
        if chunks.ts_ref is None:
            c[6].append(np.full(len(chunks), -1, np.int64))
        else:  # block-local chunk numbers -> file-wide
            c[6].append(np.where(chunks.ts_ref >= 0, chunks.ts_ref + self.chunks, -1))
        self._pos += hi - lo
        self.chunks += len(chunks)
        self.samples += int(chunks.counts.sum())

    def _write(self, data: bytes | memoryview) -> None:
        _write_pieces(self._f, data)
        self._data_crc = zlib.crc32(data, self._data_crc)
        self._file_pos += len(data)

    def _emit_blocks(self, final: bool) -> None:
        """Compress and write whole-chunk blocks of the pending bytes: each
        ends at the first chunk end at or past ZSTD_BLOCK_BYTES (final: all)."""
        if not self._pending:
            return
        ends = np.concatenate(self._pending_ends)
        done = 0
        while True:
            i = int(np.searchsorted(ends, done + ZSTD_BLOCK_BYTES, "left"))
            if i == len(ends):
                if not final:
                    break
                i -= 1
            cut = int(ends[i])
            self._blocks.append((self._pending_raw + done, self._file_pos))
            block = bytes(self._pending[done:cut])
            packed = bytes(cramjam.zstd.compress(block, level=ZSTD_LEVEL))
            self._write(packed if len(packed) <= len(block) * (1 - ZSTD_MIN_SAVING) else block)
            done = cut
            if done == len(self._pending):
                break
        del self._pending[:done]
        self._pending_raw += done
        self._pending_ends = [ends[ends > done] - done]

    def finish(self) -> Path:
        """Write index and tail, fsync, close. Returns the tmp path."""
        if self.chunks == 0:
            self.abort()
            raise ValueError("refusing to write an empty segment")
        series, mint, maxt, counts, last_bits, offsets, ts_ref = (np.concatenate(c) for c in self._cols)
        shared = bool(np.any(ts_ref >= 0))
        flags = (
            (FLAG_SHARED_TS if shared else 0) | (FLAG_COMPACTED if self.compacted else 0)
            | self.level << LEVEL_SHIFT
        )
        blocks = b""
        if self.compress:
            self._emit_blocks(final=True)
            table = np.array(self._blocks + [(self._pos, self._file_pos)], "<i8")
            blocks = np.ascontiguousarray(table[:, 0]).tobytes() + np.ascontiguousarray(table[:, 1]).tobytes()
            flags |= FLAG_ZSTD
        pad = (-self._file_pos) % 8
        index_offset = self._file_pos + pad
        index = b"".join(
            (
                _INDEX_HEAD.pack(
                    self.chunks, self.wal_boundary, int(mint.min()), int(maxt.max()), self.samples
                ),
                np.ascontiguousarray(series, "<i8").tobytes(),
                np.ascontiguousarray(mint, "<i8").tobytes(),
                np.ascontiguousarray(maxt, "<i8").tobytes(),
                np.ascontiguousarray(counts, "<i8").tobytes(),
                np.ascontiguousarray(last_bits, "<u8").tobytes(),
                np.concatenate((offsets, [self._pos])).astype("<i8").tobytes(),
                np.ascontiguousarray(ts_ref, "<i8").tobytes() if shared else b"",
                blocks,
            )
        )
        tail = _TAIL.pack(
            index_offset, len(index), _crc(index), self._data_crc & 0xFFFFFFFF, SEGMENT_MAGIC
        )
        f = self._f
        if flags:
            f.seek(0)
            f.write(_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, flags))
            f.seek(0, os.SEEK_END)
        f.write(bytes(pad))
        _write_pieces(f, index)
        f.write(tail)
        f.flush()
        os.fsync(f.fileno())
        f.close()
        return self.tmp

    def abort(self) -> None:
        """Close and delete the unfinished file."""
        self._f.close()
        self.tmp.unlink(missing_ok=True)


def _write_pieces(f: BinaryIO, data: bytes | memoryview) -> None:
    """f.write(data), WRITE_PIECE bytes at a time (see there)."""
    view = memoryview(data).cast("B")
    for lo in range(0, len(view), WRITE_PIECE):
        f.write(view[lo : lo + WRITE_PIECE])


def write_segment_tmp(
    directory: Path, seq: int, blocks: Iterable[ClosedChunks], wal_boundary: int = 0
) -> Path:
    """Write the segment under its temporary name and fsync it. Returns the tmp path.

    The blocks' chunks together must be sorted by (series, mint) (a seal
    writes the head a block at a time: Head.seal_blocks). wal_boundary: WAL
    segments numbered below it hold only samples sealed in this or an older
    segment.
    """
    w = SegmentWriter(directory, seq, wal_boundary)
    try:
        for chunks in blocks:
            w.add(chunks)
        return w.finish()
    except BaseException:
        w.abort()
        raise


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


def _check_ts_ref(
    path: Path, ts_ref: np.ndarray, counts: np.ndarray, mint: np.ndarray, maxt: np.ndarray
) -> np.ndarray | None:
    """The shared-timestamps column, checked: each entry is -1 or an earlier
    chunk with its own timestamps and the same count and time range. None
    when no chunk shares."""
    refs = np.flatnonzero(ts_ref != -1)
    if len(refs) == 0:
        return None
    r = ts_ref[refs]
    if np.any(r < 0) or np.any(r >= refs):
        raise SegmentCorruptError(f"{path}: shared-timestamp references out of bounds")
    if np.any(ts_ref[r] != -1) or np.any(counts[r] != counts[refs]) or np.any(
        mint[r] != mint[refs]
    ) or np.any(maxt[r] != maxt[refs]):
        raise SegmentCorruptError(f"{path}: shared-timestamp references do not match their chunks")
    return ts_ref


def _check_blocks(
    path: Path, raw_starts: np.ndarray, file_starts: np.ndarray, offsets: np.ndarray, idx_off: int
) -> tuple[np.ndarray, np.ndarray]:
    """The zstd block table, checked: blocks tile the raw chunk bytes and the
    file's data area in order, and each starts at a chunk boundary."""
    if (
        len(raw_starts) < 2
        or raw_starts[0] != HEADER_SIZE
        or raw_starts[-1] != offsets[-1]
        or np.any(np.diff(raw_starts) <= 0)
        or file_starts[0] != HEADER_SIZE
        or file_starts[-1] > idx_off
        or np.any(np.diff(file_starts) <= 0)
        or not np.all(np.isin(raw_starts[:-1], offsets[:-1]))
    ):
        raise SegmentCorruptError(f"{path}: compressed block table out of bounds")
    return raw_starts, file_starts


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
        magic, version, flags = _HEADER.unpack_from(mm, 0)
        if magic != SEGMENT_MAGIC:
            raise SegmentCorruptError(f"{path}: bad magic {magic!r}")
        if version not in READABLE_VERSIONS:
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
            k, wal_boundary, mint, maxt, samples = _INDEX_HEAD.unpack_from(mm, idx_off)
            shapes = [("<i8", k), ("<i8", k), ("<i8", k), ("<i8", k), ("<u8", k), ("<i8", k + 1)]
            shared = version >= 3 and flags & FLAG_SHARED_TS
            if shared:
                shapes.append(("<i8", k))
            known = _INDEX_HEAD.size + 8 * sum(n for _, n in shapes)
            compressed = version >= 3 and flags & FLAG_ZSTD
            if compressed:  # the block table: raw starts, file starts, n+1 each
                nb1 = (idx_len - known) // 16
                shapes += [("<i8", nb1), ("<i8", nb1)]
                known += 16 * nb1
            if idx_len != known:
                raise SegmentCorruptError(f"{path}: index length does not match {k} chunks")
            pos = idx_off + _INDEX_HEAD.size
            cols = []
            for dtype, n in shapes:
                cols.append(np.frombuffer(mm, dtype, n, pos))
                pos += 8 * n
            series, cmint, cmaxt, counts, last_bits, offsets = cols[:6]
            ts_ref = _check_ts_ref(path, cols[6], counts, cmint, cmaxt) if shared else None
            self._blocks = _check_blocks(path, cols[-2], cols[-1], offsets, idx_off) if compressed else None
            data_end = int(offsets[-1]) if k else HEADER_SIZE
            if k and (
                offsets[0] != HEADER_SIZE
                or (data_end > idx_off and not compressed)
                or np.any(np.diff(offsets) <= 0)
            ):
                raise SegmentCorruptError(f"{path}: chunk offsets out of bounds")
            if compressed:
                data_end = int(cols[-1][-1])
            if verify_data and _crc(view[HEADER_SIZE:data_end]) != data_crc:
                raise SegmentCorruptError(f"{path}: data CRC mismatch")
        finally:
            view.release()
        # Checking read the whole file through the mapping, which left every
        # page of it resident in this process: after a restart a worker held
        # all its segments (at 400,000 series 231 MiB a worker, RSS 491 MiB
        # instead of 350). Unmapped, they stay in the page cache, and reads
        # map back what they touch.
        if _DONTNEED is not None:
            mm.madvise(_DONTNEED)
        # The chunk bytes (not the index, which every read consults) in whole pages.
        self._data_pages = data_end // mmap.PAGESIZE * mmap.PAGESIZE
        # Whether a read has mapped chunk pages since release_pages().
        self.touched = False
        self.compacted = version >= 3 and bool(flags & (FLAG_COMPACTED | FLAG_ZSTD))
        self.level = flags >> LEVEL_SHIFT & MAX_LEVEL if version >= 3 else 0
        self.mint = int(mint)
        self.maxt = int(maxt)
        self.wal_boundary = int(wal_boundary)
        self.samples = int(samples)
        # Compressed: the columns only; select() decompresses the blocks it needs.
        data = np.frombuffer(mm, np.uint8) if self._blocks is None else np.empty(0, np.uint8)
        self.chunks = ClosedChunks.sharing_within(series, cmint, cmaxt, counts, last_bits, data, offsets, ts_ref)
        self._mm = mm

    @property
    def chunk_bytes(self) -> tuple[int, int]:
        """(uncompressed, on disk) size of the chunk bytes."""
        raw = int(self.chunks.offsets[-1]) - HEADER_SIZE
        return raw, raw if self._blocks is None else int(self._blocks[1][-1]) - HEADER_SIZE

    def select(self, sel: np.ndarray) -> ClosedChunks:
        """The chunks at positions sel, gathered (ClosedChunks.select)."""
        return ClosedChunks.select(*self.locate(sel))

    def locate(self, sel: np.ndarray) -> tuple[ClosedChunks, np.ndarray]:
        """The chunks at positions sel as (block, positions in it), ready to
        decode: the file's own chunks, or a window over them with the blocks
        that hold them and their timestamp sources decompressed."""
        self.touched = True
        c = self.chunks
        if self._blocks is None:
            return c, sel
        raw_starts, file_starts = self._blocks
        sel = np.asarray(sel, np.int64)
        need = sel
        if c.ts_ref is not None:
            refs = c.ts_ref[sel]
            need = np.concatenate((sel, refs[refs >= 0]))
        # A window over chunks j0..j1-1 (sources are earlier chunks of the
        # same file, so they are inside): its columns are views, its offsets
        # and references shifted, so the work is proportional to the window,
        # not the file (compaction reads a file in many small windows).
        j0, j1 = int(need.min()), int(need.max()) + 1
        blocks = np.unique(np.searchsorted(raw_starts, c.offsets[need], "right") - 1)
        # Raw offsets lo..hi in one buffer, only the needed blocks filled.
        lo = int(raw_starts[blocks[0]])
        buf = np.empty(int(raw_starts[blocks[-1] + 1]) - lo, np.uint8)
        for b in blocks.tolist():
            a, e = int(raw_starts[b]) - lo, int(raw_starts[b + 1]) - lo
            src = memoryview(self._mm)[int(file_starts[b]) : int(file_starts[b + 1])]
            if len(src) == e - a:  # stored as is (ZSTD_MIN_SAVING)
                buf[a:e] = src
                src.release()
                continue
            try:
                n = cramjam.zstd.decompress_into(src, buf[a:e])
            except cramjam.DecompressionError as err:
                raise SegmentCorruptError(f"{self.path}: block {b}: {err}") from None
            finally:
                src.release()
            if n != e - a:
                raise SegmentCorruptError(f"{self.path}: block {b} holds {n} bytes, not {e - a}")
        offsets = c.offsets[j0 : j1 + 1] - lo
        ts_ref = None
        if c.ts_ref is not None:
            r = c.ts_ref[j0:j1]
            ts_ref = np.where(r >= 0, r - j0, -1)
        window = ClosedChunks.sharing_within(
            c.series[j0:j1], c.mint[j0:j1], c.maxt[j0:j1], c.counts[j0:j1], c.last_bits[j0:j1],
            buf, offsets, ts_ref,
        )
        return window, sel - j0

    def release_pages(self) -> None:
        """Unmap the chunk pages reads mapped since the last call.

        Reading through the mapping leaves every page a read touched (and
        the kernel's fault-around neighbours) counted as this process's
        memory until the file is closed. Unmapped, the pages stay in the
        page cache, as a pread() reader's do, and a later read maps them
        back. Compaction calls this after each series group: it reads every
        input once, in order, so without it a job over a day's files held
        all of them mapped until it was done (`long`, one worker: 36 of the
        worker's 58 MiB of file pages at the ingest peak); queries every
        so many samples read (Shard.release_read_pages). Safe while other
        threads read: their next access faults the page in again.
        """
        if self.touched and _DONTNEED is not None:
            self.touched = False
            if self._data_pages:
                self._mm.madvise(_DONTNEED, 0, self._data_pages)

    def unmap(self) -> None:
        """Unmap every page of the file reads have mapped, its footer
        columns too (release_pages leaves those: every read plans with
        them). A seal holds a chunk per series it saw, so with many series
        the footers (48 bytes a chunk) are much of a file (200,000 series,
        20 samples a chunk: 9.6 of 21 MB), and opening a shard reads all of
        them (its worker then held 111 MiB of them before any query).
        Released after every read as well, they cost the `long` profile's
        queries that follow a release 5-15% (bench.ab, two runs), so only
        opening and a quiet spell (Shard.unmap_segments) do it."""
        self.touched = False
        if _DONTNEED is not None:
            self._mm.madvise(_DONTNEED)

    def info(self) -> SegmentInfo:
        return SegmentInfo(
            self.seq, self.path, len(self.chunks), self.samples, self.mint, self.maxt,
            self.size, self.wal_boundary, self.compacted, self.level,
        )

    def read(
        self, ids: np.ndarray, want: np.ndarray, mint: int, maxt: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Decoded (series, ts, values) of the chunks of series `ids` (sorted;
        `want` is the same set as a bool mask indexed by id) overlapping
        [mint, maxt]; None if there are none."""
        sel = self.overlapping(ids, want, mint, maxt)
        return None if sel is None else self.select(sel).decode()

    def overlapping(self, ids: np.ndarray, want: np.ndarray, mint: int, maxt: int) -> np.ndarray | None:
        """Positions of read's chunks (for select), or None."""
        if maxt < self.mint or mint > self.maxt:
            return None
        sel = self.chunks.overlapping(ids, want, mint, maxt)
        return sel if len(sel) else None

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
