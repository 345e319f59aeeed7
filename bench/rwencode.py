"""Remote write 1.0 request bodies, pre-encoded before any system is timed.

    message WriteRequest { repeated TimeSeries timeseries = 1; }
    message TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
    message Label        { string name = 1; string value = 2; }
    message Sample       { double value = 1; int64 timestamp = 2; }

Bodies are snappy block-compressed. The label part of each TimeSeries is
encoded once per series in Python (cold: it does not depend on the samples);
samples are written by a Numba kernel over whole arrays, with a sizing pass
and a writing pass so each body is one allocation. Fields are written the
way the `protobuf` package serialises them (proto3: a +0.0 value or a zero
timestamp is omitted), so the smoke test can compare bytes exactly.

Requests are planned so every series is sent in time order, which Prometheus
2.42 requires (it has no out-of-order window): the samples are cut into time
windows of `samples_per_series` samples and the series into chunks of
`series_per_request`; request (window w, chunk c) carries samples
[w*k, (w+1)*k) of the series of chunk c, and the sender starts it only after
(w-1, c) has been answered.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import snappy

from bench.datagen import Dataset

SERIES_PER_REQUEST = 2000
SAMPLES_PER_SERIES = 4


@dataclass(frozen=True, slots=True)
class EncodedRequest:
    """One compressed WriteRequest and what it carries."""

    body: bytes
    window: int
    chunk: int
    n_series: int
    n_samples: int
    raw_size: int
    protocol: int = 1  # remote write 1.0 or 2.0


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + _varint(len(payload)) + payload


def encode_labels(labels: list[tuple[tuple[str, str], ...]]) -> tuple[np.ndarray, np.ndarray]:
    """The TimeSeries.labels fields of every series, concatenated.

    Returns (buffer, offsets): series i's label bytes are
    buffer[offsets[i]:offsets[i+1]]. Labels are written sorted by name,
    as remote write requires."""
    parts = []
    for ls in labels:
        enc = b"".join(
            _len_field(0x0A, _len_field(0x0A, n.encode()) + _len_field(0x12, v.encode()))
            for n, v in sorted(ls)
        )
        parts.append(enc)
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    return np.frombuffer(b"".join(parts), dtype=np.uint8).copy(), offsets


def encode_series(series: list[tuple[Any, np.ndarray, np.ndarray]]) -> bytes:
    """An uncompressed WriteRequest of any series ((name, value) pairs, ms
    timestamps, values), each of its own length: small irregular data sets
    (bench.differential, tests), in Python."""
    label_buf, label_off = encode_labels([tuple(lb) for lb, _, _ in series])
    out = bytearray()
    for i, (_, ts, vs) in enumerate(series):
        msg = bytearray(label_buf[label_off[i] : label_off[i + 1]].tobytes())
        for t, v in zip(ts.tolist(), vs.tolist()):
            msg += _len_field(0x12, b"\x09" + struct.pack("<d", v) + b"\x10" + _varint(int(t) & 0xFFFF_FFFF_FFFF_FFFF))
        out += _len_field(0x0A, bytes(msg))
    return bytes(out)


@numba.njit(cache=True, inline="always")
def _varint_len(x: np.uint64) -> int:
    n = 1
    while x >= 128:
        x >>= np.uint64(7)
        n += 1
    return n


@numba.njit(cache=True, inline="always")
def _put_varint(out: np.ndarray, pos: int, x: np.uint64) -> int:
    while x >= 128:
        out[pos] = np.uint8((x & np.uint64(0x7F)) | np.uint64(0x80))
        x >>= np.uint64(7)
        pos += 1
    out[pos] = np.uint8(x)
    return pos + 1


@numba.njit(cache=True)
def _sample_len(bits: np.uint64, ts: np.uint64) -> int:
    n = 0
    if bits != 0:
        n += 9
    if ts != 0:
        n += 1 + _varint_len(ts)
    return n


@numba.njit(cache=True, inline="always")
def _samples_len(bits2d, ts2d, i, row, j0, j1):  # pragma: no cover - jitted
    """Bytes of series i's Sample fields for columns [j0, j1) (1.0 and 2.0 alike)."""
    n = 0
    for j in range(j0, j1):
        sl = _sample_len(bits2d[i, j], np.uint64(ts2d[row, j]))
        n += 1 + _varint_len(np.uint64(sl)) + sl
    return n


@numba.njit(cache=True, inline="always")
def _put_samples(out, pos, bits2d, ts2d, i, row, j0, j1):  # pragma: no cover - jitted
    for j in range(j0, j1):
        bits = bits2d[i, j]
        t = np.uint64(ts2d[row, j])
        out[pos] = 0x12
        pos = _put_varint(out, pos + 1, np.uint64(_sample_len(bits, t)))
        if bits != 0:
            out[pos] = 0x09
            for s in range(8):
                out[pos + 1 + s] = np.uint8((bits >> np.uint64(8 * s)) & np.uint64(0xFF))
            pos += 9
        if t != 0:
            out[pos] = 0x10
            pos = _put_varint(out, pos + 1, t)
    return pos


@numba.njit(cache=True)
def _write_request(label_buf, label_off, series, target, ts2d, bits2d, j0, j1):  # pragma: no cover - jitted
    """Serialise WriteRequest{timeseries: series[*], samples [j0, j1)} into one array."""
    ns = len(series)
    ts_len = np.empty(ns, dtype=np.int64)
    total = 0
    for k in range(ns):
        i = series[k]
        n = label_off[i + 1] - label_off[i] + _samples_len(bits2d, ts2d, i, target[i], j0, j1)
        ts_len[k] = n
        total += 1 + _varint_len(np.uint64(n)) + n
    out = np.empty(total, dtype=np.uint8)
    pos = 0
    for k in range(ns):
        i = series[k]
        out[pos] = 0x0A
        pos = _put_varint(out, pos + 1, np.uint64(ts_len[k]))
        a = label_off[i]
        b = label_off[i + 1]
        out[pos:pos + (b - a)] = label_buf[a:b]
        pos += b - a
        pos = _put_samples(out, pos, bits2d, ts2d, i, target[i], j0, j1)
    return out


@numba.njit(cache=True)
def _write_request_v2(sym_buf, sym_off, used, refs, ref_off, series, target, ts2d, bits2d, j0, j1):  # pragma: no cover
    """Serialise a 2.0 Request: the symbols `used` (global symbol ids, whose
    Request.symbols fields are sym_buf[sym_off[g]:sym_off[g + 1]]), then
    TimeSeries{labels_refs: series i's refs[ref_off[i]:ref_off[i + 1]] as
    indices into `used`, packed; samples [j0, j1)}."""
    local = np.full(len(sym_off) - 1, -1, np.int64)
    total = 0
    for k in range(len(used)):
        local[used[k]] = k
        total += sym_off[used[k] + 1] - sym_off[used[k]]
    ns = len(series)
    lens = np.empty((ns, 2), dtype=np.int64)  # packed refs bytes, TimeSeries bytes
    for k in range(ns):
        i = series[k]
        r = 0
        for q in range(ref_off[i], ref_off[i + 1]):
            r += _varint_len(np.uint64(local[refs[q]]))
        n = 1 + _varint_len(np.uint64(r)) + r + _samples_len(bits2d, ts2d, i, target[i], j0, j1)
        lens[k, 0] = r
        lens[k, 1] = n
        total += 1 + _varint_len(np.uint64(n)) + n
    out = np.empty(total, dtype=np.uint8)
    pos = 0
    for k in range(len(used)):
        a = sym_off[used[k]]
        b = sym_off[used[k] + 1]
        out[pos:pos + (b - a)] = sym_buf[a:b]
        pos += b - a
    for k in range(ns):
        i = series[k]
        out[pos] = 0x2A
        pos = _put_varint(out, pos + 1, np.uint64(lens[k, 1]))
        out[pos] = 0x0A
        pos = _put_varint(out, pos + 1, np.uint64(lens[k, 0]))
        for q in range(ref_off[i], ref_off[i + 1]):
            pos = _put_varint(out, pos, np.uint64(local[refs[q]]))
        pos = _put_samples(out, pos, bits2d, ts2d, i, target[i], j0, j1)
    return out


class Encoder:
    """Encodes WriteRequests for slices of a dataset (labels encoded once)."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self.label_buf, self.label_off = encode_labels(ds.labels)
        self._refs: np.ndarray | None = None  # raw_v2's, made when first needed
        self._ref_off: np.ndarray | None = None
        self.bits = ds.values.view(np.uint64)
        # Negative timestamps would be written as 10-byte two's complement varints.
        self.ts = ds.timestamps.view(np.uint64)

    def raw(self, series: np.ndarray, j0: int, j1: int) -> bytes:
        """The uncompressed WriteRequest for these series and sample columns."""
        series = np.ascontiguousarray(series, dtype=np.int64)
        out = _write_request(self.label_buf, self.label_off, series, self.ds.target, self.ts, self.bits, j0, j1)
        return out.tobytes()

    def raw_v2(self, series: np.ndarray, j0: int, j1: int) -> bytes:
        """The same as a remote write 2.0 Request: its own symbols table ("" first,
        then the label names and values its series use), label references."""
        if self._refs is None:
            self._symbols()
        assert self._refs is not None and self._ref_off is not None
        series = np.ascontiguousarray(series, dtype=np.int64)
        if len(series) and np.all(np.diff(series) == 1):  # a plan()'s run of series: one slice
            own = self._refs[self._ref_off[series[0]] : self._ref_off[series[-1] + 1]]
        else:
            own = np.concatenate([self._refs[self._ref_off[i] : self._ref_off[i + 1]] for i in series.tolist()]
                                 + [np.empty(0, np.int64)])
        used = np.union1d(np.zeros(1, np.int64), own)
        out = _write_request_v2(self._sym_buf, self._sym_off, used, self._refs, self._ref_off, series,
                                self.ds.target, self.ts, self.bits, j0, j1)
        return out.tobytes()

    def _symbols(self) -> None:
        """Every label name and value of the dataset as a global symbol id
        (0 is ""), and each series' (name, value) ids in label order."""
        index: dict[str, int] = {"": 0}
        refs: list[int] = []
        off = [0]
        for ls in self.ds.labels:
            for n, v in sorted(ls):
                refs.append(index.setdefault(n, len(index)))
                refs.append(index.setdefault(v, len(index)))
            off.append(len(refs))
        fields = [_len_field(0x22, text.encode()) for text in index]
        self._sym_off = np.zeros(len(fields) + 1, np.int64)
        self._sym_off[1:] = np.cumsum([len(f) for f in fields])
        self._sym_buf = np.frombuffer(b"".join(fields), np.uint8).copy()
        self._refs = np.array(refs, np.int64)
        self._ref_off = np.array(off, np.int64)


def plan(n_series: int, n_samples: int, series_per_request: int = SERIES_PER_REQUEST,
         samples_per_series: int = SAMPLES_PER_SERIES) -> list[tuple[int, int, int, int, int, int]]:
    """(window, chunk, first series, end series, first sample, end sample) per request,
    windows in time order."""
    out = []
    for w, j0 in enumerate(range(0, n_samples, samples_per_series)):
        j1 = min(j0 + samples_per_series, n_samples)
        for c, s0 in enumerate(range(0, n_series, series_per_request)):
            out.append((w, c, s0, min(s0 + series_per_request, n_series), j0, j1))
    return out


def encode_dataset(ds: Dataset, series_per_request: int = SERIES_PER_REQUEST,
                   samples_per_series: int = SAMPLES_PER_SERIES, protocol: int = 1) -> list[EncodedRequest]:
    """Every request of the dataset, compressed, in send order, as remote write 1.0 or 2.0."""
    enc = Encoder(ds)
    raw_of = enc.raw if protocol == 1 else enc.raw_v2
    out = []
    for w, c, s0, s1, j0, j1 in plan(ds.n_series, ds.n_samples, series_per_request, samples_per_series):
        raw = raw_of(np.arange(s0, s1, dtype=np.int64), j0, j1)
        out.append(EncodedRequest(snappy.compress(raw), w, c, s1 - s0, (s1 - s0) * (j1 - j0), len(raw), protocol))
    return out
