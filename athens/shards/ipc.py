"""The router <-> worker protocol: length-prefixed binary frames on a unix socket.

Layout of one frame (little-endian, see docs/format/ipc.md):

    u32 length of everything after this field
    u32 request id        (responses echo it; many requests may be in flight)
    u8  op                (requests < 0x80, responses >= 0x80)
    u8  version           (FRAME_VERSION)
    u16 reserved (0)
    u32 meta length
    meta: UTF-8 JSON object (small, structural: labels, matchers, counts)
    padding to 8 bytes, then the arrays listed in meta["arrays"] as
    [dtype, count], each raw little-endian and padded to 8 bytes

Bulk data (timestamps, values, hashes) travels as raw numpy buffers; only
the small structural part is JSON.
"""

from __future__ import annotations

import asyncio
import enum
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import orjson

from athens.model.batch import WriteBatch
from athens.model.labels import INTERNER, Labels
from athens.model.matchers import Matcher
from athens.model.series import Series, SeriesSet

FRAME_VERSION = 1
_HEAD = struct.Struct("<IIBBHI")  # length, request id, op, version, reserved, meta length
MAX_FRAME = 1 << 31


class Op(enum.IntEnum):
    PING = 1
    APPEND = 2
    SELECT = 3
    LABEL_NAMES = 4
    LABEL_VALUES = 5
    STATS = 6
    FLUSH = 7
    SERIES = 8  # label sets only (athens/shards/reads.py)
    POSTINGS_STATS = 9  # per label pair series counts, for /api/v1/status/tsdb
    EVAL = 10  # a pushed-down aggregation's partial (athens/shards/evaluate.py)
    CANCEL = 11  # stop the EVAL with request id meta["id"] on this connection
    SNAPSHOT = 12  # link the shard's segments and copy its index under meta["dir"] (Shard.snapshot)
    DELETE_SERIES = 13  # delete a time range of the series matchers select (Shard.delete_series)
    CLEAN_TOMBSTONES = 14  # remove deleted data from the head and the files now (Sealer.clean_tombstones)
    APPEND_EXEMPLARS = 15  # hold exemplars of known series (Shard.append_exemplars)
    EXEMPLARS = 17  # the exemplars of the series matcher sets select (Shard.select_exemplars)
    APPEND_REFS = 16  # samples by per-connection series ref (docs/format/ipc.md)
    OK = 0x80
    ERROR = 0x81


class FrameError(Exception):
    """The peer sent bytes that are not a valid frame."""


class RefsUnknownError(Exception):
    """An APPEND_REFS names refs this connection's table does not hold: the
    worker dropped them (their series were forgotten, RefTable.drop), or
    never had them. Nothing of the frame is applied; the answer (an ERROR
    of type REFS_UNKNOWN listing them) asks the router to teach them again."""

    def __init__(self, refs: np.ndarray) -> None:
        super().__init__(f"APPEND_REFS names {len(refs)} series ref(s) this connection does not hold")
        self.refs = refs


REFS_UNKNOWN = "refs_unknown"  # the error type of that answer; meta["refs"] lists them


@dataclass(slots=True)
class Frame:
    op: Op
    req_id: int
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: list[np.ndarray] = field(default_factory=list)


def _pad(n: int) -> int:
    return (-n) % 8


def encode_frame(frame: Frame) -> list[bytes | memoryview]:
    """Serialise to a list of buffers for writelines() (no copy of arrays)."""
    meta = dict(frame.meta)
    meta["arrays"] = [[a.dtype.str, int(a.shape[0])] for a in frame.arrays]
    mbytes = orjson.dumps(meta)
    parts: list[bytes | memoryview] = [b"", mbytes, b"\0" * _pad(len(mbytes))]
    size = _HEAD.size - 4 + len(mbytes) + _pad(len(mbytes))
    for a in frame.arrays:
        a = np.ascontiguousarray(a)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        mv = memoryview(a).cast("B")
        parts.append(mv)
        parts.append(b"\0" * _pad(mv.nbytes))
        size += mv.nbytes + _pad(mv.nbytes)
    parts[0] = _HEAD.pack(size, frame.req_id, int(frame.op), FRAME_VERSION, 0, len(mbytes))
    return parts


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """Read one frame; raises asyncio.IncompleteReadError at a clean EOF."""
    head = await reader.readexactly(_HEAD.size)
    size, req_id, op, version, _, mlen = _HEAD.unpack(head)
    if version != FRAME_VERSION:
        raise FrameError(f"frame version {version}, want {FRAME_VERSION}")
    if size > MAX_FRAME or mlen > size:
        raise FrameError(f"frame of {size} bytes is too large or inconsistent")
    body = await reader.readexactly(size - (_HEAD.size - 4))
    try:
        meta = orjson.loads(body[:mlen])
        opcode = Op(op)
    except ValueError as e:
        raise FrameError(f"bad frame header: {e}") from None
    pos = mlen + _pad(mlen)
    arrays = []
    for dtype, count in meta.pop("arrays", []):
        dt = np.dtype(dtype)
        nbytes = dt.itemsize * count
        if pos + nbytes > len(body):
            raise FrameError("frame arrays run past the end of the frame")
        arrays.append(np.frombuffer(body, dtype=dt, count=count, offset=pos))
        pos += nbytes + _pad(nbytes)
    return Frame(opcode, req_id, meta, arrays)


# --- message payloads -------------------------------------------------------


def unflat_labels(flats: list[list[str]]) -> list[Labels]:
    """Label sets from Labels.flat() as a frame carries them (one pass: a
    query's answer can hold thousands)."""
    make = Labels.from_sorted
    return [make(tuple(zip(it, it))) for it in map(iter, flats)]  # pairs without slicing copies


def append_request(req_id: int, batch: WriteBatch) -> Frame:
    return Frame(
        Op.APPEND,
        req_id,
        {"labels": [lb.flat() for lb in batch.series]},
        [batch.hashes, batch.series_idx, batch.ts, batch.values],
    )


def parse_append(frame: Frame) -> WriteBatch:
    hashes, idx, ts, values = frame.arrays
    return WriteBatch(unflat_labels(frame.meta["labels"]), hashes, idx, ts, values)


# --- APPEND_REFS: labels travel once per connection ---------------------------------


def encode_label_block(blocks: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Canonical label encodings (Labels.canonical: `name 0xff value 0xff ...`)
    as one byte array plus offsets int64[len+1] (0xff never occurs in UTF-8)."""
    offs = np.zeros(len(blocks) + 1, np.int64)
    if blocks:
        np.cumsum([len(b) for b in blocks], out=offs[1:])
    return np.frombuffer(b"".join(blocks), np.uint8), offs


def decode_label_block(data: np.ndarray, offs: np.ndarray) -> list[Labels]:
    raw = data.tobytes()
    o = offs.tolist()
    try:
        return [Labels.from_canonical(raw[o[i] : o[i + 1]], INTERNER) for i in range(len(o) - 1)]
    except ValueError as e:  # including UnicodeDecodeError
        raise FrameError(f"bad label block: {e}") from None


def append_refs_request(
    req_id: int,
    def_refs: np.ndarray,
    def_hashes: np.ndarray,
    def_blocks: list[bytes],
    refs: np.ndarray,
    series_idx: np.ndarray,
    ts: np.ndarray,
    values: np.ndarray,
) -> Frame:
    """Samples of series named by refs; def_* teach the worker new refs first
    (def_blocks: their labels' canonical encodings).

    The worker keeps, per connection, ref -> (labels, hash); a definition
    overwrites an older one with the same ref.
    """
    data, offs = encode_label_block(def_blocks)
    return Frame(
        Op.APPEND_REFS,
        req_id,
        {},
        [
            np.asarray(def_refs, np.int32), np.asarray(def_hashes, np.uint64), offs, data,
            np.asarray(refs, np.int32), np.asarray(series_idx, np.int32),
            np.asarray(ts, np.int64), np.asarray(values, np.float64),
        ],
    )


class RefTable:
    """One connection's ref -> (Labels, identity hash, shard series id), grown
    on demand. The series id is learnt from the first append of a ref (-1
    until then, and again when the ref is redefined): later appends skip the
    shard's label lookup (WriteBatch.ids)."""

    def __init__(self) -> None:
        self.labels = np.empty(0, dtype=object)
        self.hashes = np.empty(0, np.uint64)
        self.defined = np.zeros(0, np.bool_)
        self.ids = np.empty(0, np.int64)
        # Bumped when a ref is (re)defined: an id learnt for an older
        # definition (an append still queued when the router redefined the
        # ref) is then dropped, not attached to the new label set.
        self.generation = np.empty(0, np.int64)

    def define(self, refs: np.ndarray, hashes: np.ndarray, labels: list[Labels]) -> None:
        if not len(refs):
            return
        if int(refs.min()) < 0:
            raise FrameError("negative series ref")
        top = int(refs.max()) + 1
        if top > len(self.labels):
            n = max(top, 2 * len(self.labels), 1024)
            self.labels = np.concatenate((self.labels, np.empty(n - len(self.labels), dtype=object)))
            self.hashes = np.concatenate((self.hashes, np.zeros(n - len(self.hashes), np.uint64)))
            self.defined = np.concatenate((self.defined, np.zeros(n - len(self.defined), np.bool_)))
            self.ids = np.concatenate((self.ids, np.full(n - len(self.ids), -1, np.int64)))
            self.generation = np.concatenate((self.generation, np.zeros(n - len(self.generation), np.int64)))
        obj = np.empty(len(labels), dtype=object)
        obj[:] = labels
        self.labels[refs] = obj
        self.hashes[refs] = hashes
        self.defined[refs] = True
        self.ids[refs] = -1
        self.generation[refs] += 1

    def drop(self, forgotten: Callable[[np.ndarray], np.ndarray]) -> int:
        """Drop the refs whose learnt series id `forgotten` says is gone
        (athens/shards/index.py forget): the table would keep their label
        sets alive for as long as the connection lasts. An append naming
        one is answered REFS_UNKNOWN. Returns how many were dropped."""
        held = np.flatnonzero(self.defined & (self.ids >= 0))
        gone = held[forgotten(self.ids[held])]
        self.labels[gone] = None
        self.defined[gone] = False
        self.ids[gone] = -1
        self.generation[gone] += 1
        return len(gone)

    def _learn(self, refs: np.ndarray, generation: np.ndarray, ids: np.ndarray) -> None:
        still = self.generation[refs] == generation
        self.ids[refs[still]] = ids[still]

    def batch(self, frame: Frame) -> tuple[WriteBatch, Callable[[np.ndarray], None]]:
        """Apply the frame's definitions and build its WriteBatch, plus the
        callback that remembers the series ids the shard gives its series."""
        d_refs, d_hashes, d_offs, d_data, refs, idx, ts, values = frame.arrays
        if len(d_refs) + 1 != len(d_offs) or len(d_hashes) != len(d_refs):
            raise FrameError("APPEND_REFS definition arrays disagree in length")
        self.define(d_refs, d_hashes, decode_label_block(d_data, d_offs))
        if len(refs) and int(refs.min()) < 0:
            raise FrameError("negative series ref")
        if len(refs) and (int(refs.max()) >= len(self.labels) or not self.defined[refs].all()):
            known = refs < len(self.labels)
            known[known] = self.defined[refs[known]]
            raise RefsUnknownError(np.unique(refs[~known]))
        if len(idx) != len(ts) or len(ts) != len(values):
            raise FrameError("APPEND_REFS sample arrays disagree in length")
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(refs)):
            raise FrameError("APPEND_REFS series index out of range")
        batch = WriteBatch(self.labels[refs].tolist(), self.hashes[refs], idx, ts, values, ids=self.ids[refs])
        return batch, partial(self._learn, refs, self.generation[refs])


def select_request(req_id: int, matchers: list[Matcher], mint: int, maxt: int) -> Frame:
    return Frame(
        Op.SELECT,
        req_id,
        {"matchers": [m.to_tuple() for m in matchers], "mint": mint, "maxt": maxt},
    )


def parse_matchers(meta: dict[str, Any]) -> list[Matcher]:
    return [Matcher.from_tuple(t) for t in meta.get("matchers", [])]


def series_response(req_id: int, series: Sequence[Series]) -> Frame:
    ss = SeriesSet.of(series)
    return Frame(
        Op.OK,
        req_id,
        {"labels": [lb.flat() for lb in ss.labels], "stale_free": ss.stale_free},
        [np.diff(ss.offsets), ss.ts.astype(np.int64, copy=False), ss.values.astype(np.float64, copy=False)],
    )


def parse_series(frame: Frame) -> SeriesSet:
    lengths, ts, vals = frame.arrays
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return SeriesSet(unflat_labels(frame.meta["labels"]), ts, vals, offsets, bool(frame.meta.get("stale_free")))


def error_response(req_id: int, error_type: str, message: str, **extra: Any) -> Frame:
    return Frame(Op.ERROR, req_id, {"type": error_type, "message": message, **extra})
