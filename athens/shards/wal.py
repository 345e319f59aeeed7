"""Write-ahead log: every acknowledged sample is on disk before the head has it.

The WAL is a directory of numbered segment files (00000001, 00000002, ...)
holding framed, checksummed records (format: docs/format/wal.md). A shard
writes one group of records per append() call with a single write() (and at
most one fsync), replays all segments on open, and deletes the segments whose
content a sealed segment file has made redundant.

A torn or corrupt record ends replay: the segment is truncated at the last
good record and any later segments are moved to wal/corrupt/ (their records
could refer to series whose SERIES record was lost, so they cannot be trusted
to be applied out of context). Both are logged.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from athens.model.labels import LabelInterner, Labels

log = logging.getLogger(__name__)

# Record header: payload length, CRC-32 (zlib) of type byte + payload, type.
_HEADER = struct.Struct("<IIB")
HEADER_SIZE = _HEADER.size  # 9

REC_SERIES = 1
REC_SAMPLES = 2
REC_FORGOTTEN = 3  # the series index file only (docs/format/index.md)
_KNOWN_TYPES = (REC_SERIES, REC_SAMPLES)

# A single record may not exceed this: a length field beyond it is treated as
# corruption rather than an attempt to read gigabytes.
MAX_RECORD_BYTES = 1 << 30

FSYNC_MODES = ("always", "batch", "off")

_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_SERIES_ENTRY = struct.Struct("<IQI")  # id, hash, labels byte length
_SAMPLES_HEAD = struct.Struct("<II")  # distinct series, samples


class WALError(Exception):
    """The WAL cannot be written (the append is not acknowledged)."""


# --- label encoding (shared with the series index file) ---------------------


def encode_labels(labels: Labels) -> bytes:
    """u16 pair count, then per pair u16 name length, name, u32 value length, value."""
    parts = [struct.pack("<H", len(labels))]
    for name, value in labels:
        nb = name.encode()
        vb = value.encode()
        parts.append(struct.pack("<H", len(nb)))
        parts.append(nb)
        parts.append(_U32.pack(len(vb)))
        parts.append(vb)
    return b"".join(parts)


def decode_labels(buf: bytes | memoryview, pos: int = 0) -> tuple[Labels, int]:
    """Inverse of encode_labels; returns the labels and the position after them."""
    (n,) = struct.unpack_from("<H", buf, pos)
    pos += 2
    pairs = []
    for _ in range(n):
        (ln,) = struct.unpack_from("<H", buf, pos)
        pos += 2
        name = bytes(buf[pos : pos + ln]).decode()
        pos += ln
        (lv,) = _U32.unpack_from(buf, pos)
        pos += 4
        value = bytes(buf[pos : pos + lv]).decode()
        pos += lv
        pairs.append((name, value))
    return Labels.from_sorted(tuple(pairs)), pos


# --- records -----------------------------------------------------------------


def frame(rtype: int, payload: bytes) -> bytes:
    """One framed record: header then payload."""
    crc = zlib.crc32(payload, zlib.crc32(bytes((rtype,))))
    return _HEADER.pack(len(payload), crc, rtype) + payload


def encode_series(entries: list[tuple[int, int, Labels]]) -> bytes:
    """SERIES payload: u32 count, then (u32 id, u64 hash, u32 len, labels)."""
    parts = [_U32.pack(len(entries))]
    for sid, h, labels in entries:
        lb = encode_labels(labels)
        parts.append(_SERIES_ENTRY.pack(sid, h, len(lb)))
        parts.append(lb)
    return b"".join(parts)


def encode_ids(ids: np.ndarray) -> bytes:
    """FORGOTTEN payload: u32 count, then u32 ids."""
    return _U32.pack(len(ids)) + np.asarray(ids, "<u4").tobytes()


def decode_ids(payload: bytes | memoryview) -> np.ndarray:
    """Inverse of encode_ids (int64 ids)."""
    (n,) = _U32.unpack_from(payload, 0)
    if len(payload) != 4 + 4 * n:
        raise ValueError(f"FORGOTTEN record of {len(payload)} bytes for {n} ids")
    return np.frombuffer(payload, "<u4", n, 4).astype(np.int64)


def decode_series(
    payload: bytes | memoryview, interner: LabelInterner | None = None
) -> list[tuple[int, int, Labels]]:
    """Inverse of encode_series.

    `interner` shares strings and pairs among the label sets (see
    LabelInterner): they repeat across series, and sharing saves both the
    UTF-8 decode and the memory of a copy per series.
    """
    data = bytes(payload)
    intern = interner if interner is not None else LabelInterner()
    string = intern.string
    entry = _SERIES_ENTRY.unpack_from
    u16 = _U16.unpack_from
    u32 = _U32.unpack_from
    (n,) = u32(data, 0)
    pos = 4
    out = []
    for _ in range(n):
        sid, h, ln = entry(data, pos)
        pos += _SERIES_ENTRY.size
        end = pos + ln
        (npairs,) = u16(data, pos)
        pos += 2
        pairs = []
        for _ in range(npairs):
            (k,) = u16(data, pos)
            pos += 2
            name = string(data[pos : pos + k])
            pos += k
            (k,) = u32(data, pos)
            pos += 4
            value = string(data[pos : pos + k])
            pos += k
            pairs.append((name, value))
        if pos != end:
            raise ValueError("series entry length mismatch")
        out.append((sid, h, intern.labels(pairs)))
    return out


def encode_samples(
    ids: np.ndarray, counts: np.ndarray, ts: np.ndarray, values: np.ndarray
) -> bytes:
    """SAMPLES payload: run-length series ids, then raw ts and value columns.

    u32 k, u32 n, u32 ids[k], u32 counts[k], i64 ts[n], f64 values[n], all
    little-endian. Samples are grouped by series (counts sum to n), which the
    head's sort produces anyway; it saves 4 bytes a sample over an id column.
    """
    return b"".join(
        (
            _SAMPLES_HEAD.pack(len(ids), len(ts)),
            np.ascontiguousarray(ids, "<u4").tobytes(),
            np.ascontiguousarray(counts, "<u4").tobytes(),
            np.ascontiguousarray(ts, "<i8").tobytes(),
            np.ascontiguousarray(values, "<f8").tobytes(),
        )
    )


def decode_samples(
    payload: bytes | memoryview,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Returns (ids u32[k], counts u32[k], ts i64[n], values f64[n]) as views."""
    k, n = _SAMPLES_HEAD.unpack_from(payload, 0)
    pos = _SAMPLES_HEAD.size
    if len(payload) != pos + 8 * k + 16 * n:
        raise ValueError("samples record length mismatch")
    ids = np.frombuffer(payload, "<u4", k, pos)
    pos += 4 * k
    counts = np.frombuffer(payload, "<u4", k, pos)
    pos += 4 * k
    ts = np.frombuffer(payload, "<i8", n, pos)
    pos += 8 * n
    values = np.frombuffer(payload, "<f8", n, pos)
    if int(counts.sum(dtype=np.int64)) != n:
        raise ValueError("samples record counts do not sum to n")
    return ids, counts, ts, values


@dataclass(slots=True)
class WALReplayResult:
    """What replay found: record counts and what was cut off."""

    records: int = 0
    segments: int = 0
    bytes_read: int = 0
    truncated_segment: int | None = None
    truncated_at: int | None = None
    bytes_dropped: int = 0
    segments_moved_aside: int = 0


def scan_records(
    buf: bytes | memoryview, known: tuple[int, ...] = _KNOWN_TYPES
) -> Iterator[tuple[int, int, memoryview]]:
    """Yield (offset, type, payload) of each valid record; stop at the first
    bad one, or at one whose type is not among `known`.

    The caller learns where the good prefix ends from the last offset + size
    (see `valid_prefix`).
    """
    mv = memoryview(buf)
    pos = 0
    end = len(mv)
    while pos + HEADER_SIZE <= end:
        length, crc, rtype = _HEADER.unpack_from(mv, pos)
        if rtype not in known or length > MAX_RECORD_BYTES:
            return
        stop = pos + HEADER_SIZE + length
        if stop > end:
            return
        payload = mv[pos + HEADER_SIZE : stop]
        if zlib.crc32(payload, zlib.crc32(bytes((rtype,)))) != crc:
            return
        yield pos, rtype, payload
        pos = stop


def valid_prefix(buf: bytes | memoryview) -> int:
    """Length of the longest prefix of buf made of whole, valid records."""
    good = 0
    for off, _, payload in scan_records(buf):
        good = off + HEADER_SIZE + len(payload)
    return good


class WAL:
    """The write-ahead log of one shard.

    fsync modes: "always" fsyncs before append() returns; "batch" writes
    before returning and fsyncs from maybe_sync() at most every
    `batch_interval` seconds; "off" never fsyncs. In every mode the bytes are
    handed to the kernel with write() before append() returns, so a killed
    process loses nothing acknowledged; only a machine crash can, in the
    weaker modes.
    """

    def __init__(
        self,
        directory: Path,
        segment_bytes: int = 64 << 20,
        fsync: str = "always",
        batch_interval: float = 1.0,
    ) -> None:
        if fsync not in FSYNC_MODES:
            raise ValueError(f"wal fsync mode must be one of {FSYNC_MODES}, not {fsync!r}")
        self.dir = Path(directory)
        self.segment_bytes = segment_bytes
        self.fsync_mode = fsync
        self.batch_interval = batch_interval
        self._fd: int | None = None
        self._seg: int = 0
        self._seg_size = 0
        self._dirty = False
        self._last_sync = time.monotonic()
        self.bytes_written = 0
        self.fsyncs = 0

    # --- discovery / replay --------------------------------------------------

    def segment_numbers(self) -> list[int]:
        if not self.dir.exists():
            return []
        return sorted(int(p.name) for p in self.dir.iterdir() if p.is_file() and p.name.isdigit())

    def segment_path(self, n: int) -> Path:
        return self.dir / f"{n:08d}"

    def replay(self, result: WALReplayResult | None = None) -> Iterator[tuple[int, memoryview]]:
        """Yield (type, payload) of every good record, oldest first.

        Must run before open_for_append(). Repairs the log as it goes: a bad
        record truncates its segment there and moves later segments aside.
        """
        res = result if result is not None else WALReplayResult()
        segs = self.segment_numbers()
        for i, n in enumerate(segs):
            path = self.segment_path(n)
            data = path.read_bytes()
            res.segments += 1
            good = 0
            for off, rtype, payload in scan_records(data):
                good = off + HEADER_SIZE + len(payload)
                res.records += 1
                yield rtype, payload
            res.bytes_read += good
            if good < len(data):
                res.truncated_segment = n
                res.truncated_at = good
                res.bytes_dropped += len(data) - good
                log.warning(
                    "WAL segment %s: bad or torn record at offset %d; truncating %d bytes",
                    path, good, len(data) - good,
                )
                with open(path, "r+b") as f:
                    f.truncate(good)
                    os.fsync(f.fileno())
                later = segs[i + 1 :]
                if later:
                    aside = self.dir / "corrupt"
                    aside.mkdir(exist_ok=True)
                    for m in later:
                        p = self.segment_path(m)
                        res.bytes_dropped += p.stat().st_size
                        os.replace(p, aside / p.name)
                        res.segments_moved_aside += 1
                    log.error(
                        "WAL: %d segment(s) after the corrupt one moved to %s",
                        len(later), aside,
                    )
                    fsync_dir(self.dir)
                return

    # --- writing -----------------------------------------------------------------

    def open_for_append(self) -> None:
        """Start a fresh segment after the existing ones, or reuse the last one if empty.

        A non-empty last segment is never continued: its tail may just have
        been repaired, and a new file keeps "one open = one segment" simple.
        An empty one is reused, so restarts without writes do not pile up
        empty files (and empty segments left by older versions are removed).
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        segs = self.segment_numbers()
        removed = False
        for m in segs[:-1]:
            p = self.segment_path(m)
            if p.stat().st_size == 0:
                p.unlink()
                removed = True
        if removed:
            fsync_dir(self.dir)
        if segs and self.segment_path(segs[-1]).stat().st_size == 0:
            self._open_segment(segs[-1])
        else:
            self._open_segment((segs[-1] + 1) if segs else 1)

    def _open_segment(self, n: int) -> None:
        path = self.segment_path(n)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._seg = n
        self._seg_size = os.fstat(self._fd).st_size
        fsync_dir(self.dir)

    @property
    def current_segment(self) -> int:
        return self._seg

    def append(self, data: bytes) -> None:
        """Write framed records with one write(); fsync per the mode."""
        if self._fd is None:
            raise WALError("WAL is not open for appending")
        if self._seg_size > 0 and self._seg_size + len(data) > self.segment_bytes:
            self.rotate()
        try:
            _write_all(self._fd, data)
        except OSError as e:
            # A partial write would leave a torn record in the middle of the
            # log, which replay treats as the end of it: cut it off again, or
            # failing that, continue in a fresh segment.
            try:
                os.ftruncate(self._fd, self._seg_size)
            except OSError:
                try:
                    self.rotate()
                except OSError:
                    pass
            raise WALError(f"WAL write failed: {e}") from e
        self._seg_size += len(data)
        self.bytes_written += len(data)
        self._dirty = True
        if self.fsync_mode == "always":
            self.sync()

    def sync(self) -> None:
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
            self.fsyncs += 1
        self._dirty = False
        self._last_sync = time.monotonic()

    def maybe_sync(self, now: float | None = None) -> bool:
        """Batch mode: fsync if dirty and the interval has passed. Returns whether it did."""
        if self.fsync_mode != "batch" or not self._dirty:
            return False
        now = time.monotonic() if now is None else now
        if now - self._last_sync < self.batch_interval:
            return False
        self.sync()
        return True

    def rotate(self) -> int:
        """Close the current segment (fsynced unless mode is off); return the new one's number."""
        if self._fd is not None:
            if self.fsync_mode != "off" and self._dirty:
                os.fsync(self._fd)
                self.fsyncs += 1
            os.close(self._fd)
            self._fd = None
        self._dirty = False
        self._open_segment(self._seg + 1)
        return self._seg

    def truncate_before(self, n: int) -> int:
        """Delete segments numbered below n (their content is sealed). Returns how many."""
        removed = 0
        for m in self.segment_numbers():
            if m < n:
                self.segment_path(m).unlink()
                removed += 1
        if removed:
            fsync_dir(self.dir)
        return removed

    def size_bytes(self) -> int:
        return sum(self.segment_path(m).stat().st_size for m in self.segment_numbers())

    def close(self) -> None:
        if self._fd is not None:
            if self.fsync_mode != "off" and self._dirty:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        self._dirty = False


def _write_all(fd: int, data: bytes) -> None:
    mv = memoryview(data)
    while mv:
        n = os.write(fd, mv)
        mv = mv[n:]


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
