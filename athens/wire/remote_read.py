"""Prometheus remote read: ReadRequest in, ReadResponse or streamed XOR chunks out.

Messages (prometheus/prompb remote.proto, types.proto; field numbers from
the published specification):

    ReadRequest  { repeated Query queries = 1; repeated ResponseType accepted_response_types = 2; }
    Query        { int64 start_timestamp_ms = 1; int64 end_timestamp_ms = 2;
                   repeated LabelMatcher matchers = 3; ReadHints hints = 4; }
    LabelMatcher { Type type = 1 (EQ, NEQ, RE, NRE); string name = 2; string value = 3; }
    ReadResponse { repeated QueryResult results = 1; }
    QueryResult  { repeated TimeSeries timeseries = 1; }
    TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
    Sample       { double value = 1; int64 timestamp = 2; }
    ChunkedReadResponse { repeated ChunkedSeries chunked_series = 1; int64 query_index = 2; }
    ChunkedSeries { repeated Label labels = 1; repeated Chunk chunks = 2; }
    Chunk        { int64 min_time_ms = 1; int64 max_time_ms = 2; Encoding type = 3 (XOR = 1); bytes data = 4; }

SAMPLES responses are one snappy-compressed ReadResponse. STREAMED_XOR_CHUNKS
responses are a sequence of frames `uvarint(len) | u32 BE CRC-32C | message`,
each a ChunkedReadResponse, uncompressed.

The chunks are in Prometheus' own XOR chunk format (tsdb/chunkenc/xor.go),
which is not Athens' internal chunk format:

    u16 BE sample count, then a bit stream, most significant bit first:
    sample 0: timestamp as signed (zigzag) varint, value as 64 raw bits
    sample 1: timestamp delta as unsigned varint, value XOR-coded
    sample n: delta-of-delta: '0' | '10'+14 bits | '110'+17 | '1110'+20 | '1111'+64,
              value XOR-coded: '0' (same) | '10' + meaningful bits in the
              previous window | '11' + 5 bits leading zeros + 6 bits length
              (64 written as 0) + the meaningful bits
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from athens.errors import BadDataError
from athens.kernels import kernel
from athens.model.labels import Labels
from athens.model.matchers import BadRegexError, Matcher, MatchOp
from athens.model.series import Series
from athens.wire.protobuf import (
    WIRE_LEN,
    WIRE_VARINT,
    ProtobufError,
    iter_fields,
    read_varint,
    to_int64,
)

SAMPLES = 0
STREAMED_XOR_CHUNKS = 1

CHUNK_ENCODING_XOR = 1
# Prometheus cuts its head chunks at 120 samples; readers expect chunks of
# about that size, and it bounds one chunk's bytes to ~1.2 KiB at worst.
CHUNK_SAMPLES = 120
# A frame of the streamed response carries series until it passes this size
# (Prometheus' default for its own remote-read server is 1 MiB).
FRAME_BYTES = 1 << 20

_MATCH_OPS = {0: MatchOp.EQ, 1: MatchOp.NE, 2: MatchOp.RE, 3: MatchOp.NRE}


@dataclass(frozen=True, slots=True)
class ReadQuery:
    start_ms: int
    end_ms: int
    matchers: list[Matcher]


@dataclass(slots=True)
class ReadRequest:
    queries: list[ReadQuery] = field(default_factory=list)
    accepted_response_types: list[int] = field(default_factory=list)


# --- decoding ------------------------------------------------------------------


def _decode_matcher(buf: bytes, start: int, end: int) -> Matcher:
    kind, name, value = 0, "", ""
    for f, w, a, b in iter_fields(buf, start, end):
        if f == 1 and w == WIRE_VARINT:
            kind = a
        elif f == 2 and w == WIRE_LEN:
            name = bytes(buf[a:b]).decode("utf-8", "strict")
        elif f == 3 and w == WIRE_LEN:
            value = bytes(buf[a:b]).decode("utf-8", "strict")
    op = _MATCH_OPS.get(kind)
    if op is None:
        raise ProtobufError(f"unknown label matcher type {kind}")
    try:
        return Matcher(op, name, value)
    except BadRegexError as e:
        raise BadDataError(str(e)) from None


def _decode_query(buf: bytes, start: int, end: int) -> ReadQuery:
    t0, t1, matchers = 0, 0, []
    for f, w, a, b in iter_fields(buf, start, end):
        if f == 1 and w == WIRE_VARINT:
            t0 = to_int64(a)
        elif f == 2 and w == WIRE_VARINT:
            t1 = to_int64(a)
        elif f == 3 and w == WIRE_LEN:
            matchers.append(_decode_matcher(buf, a, b))
    return ReadQuery(t0, t1, matchers)


def decode_read_request(data: bytes) -> ReadRequest:
    """Parse a (decompressed) ReadRequest; malformed input raises BadDataError."""
    req = ReadRequest()
    try:
        for f, w, a, b in iter_fields(data, 0, len(data)):
            if f == 1 and w == WIRE_LEN:
                req.queries.append(_decode_query(data, a, b))
            elif f == 2 and w == WIRE_VARINT:
                req.accepted_response_types.append(a)
            elif f == 2 and w == WIRE_LEN:  # packed repeated enum
                pos = a
                while pos < b:
                    v, pos = read_varint(data, pos, b)
                    req.accepted_response_types.append(v)
    except UnicodeDecodeError:
        raise ProtobufError("label matcher is not valid UTF-8") from None
    return req


# --- protobuf writing ----------------------------------------------------------------


def _uvarint(v: int) -> bytes:
    v &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _len_field(num: int, payload: bytes) -> bytes:
    return _uvarint(num << 3 | WIRE_LEN) + _uvarint(len(payload)) + payload


def _labels_bytes(labels: Labels) -> bytes:
    return b"".join(
        _len_field(1, _len_field(1, n.encode()) + _len_field(2, v.encode())) for n, v in labels.pairs
    )


@kernel(cache=True)
def _put_uvarint(out, pos, v):  # pragma: no cover - jitted
    while v >= np.uint64(0x80):
        out[pos] = (v & np.uint64(0x7F)) | np.uint64(0x80)
        v >>= np.uint64(7)
        pos += 1
    out[pos] = v
    return pos + 1


@kernel(cache=True)
def k_samples(ts, bits, out):  # pragma: no cover - jitted
    """Write `repeated Sample samples = 2` for one series into out; returns the length.

    out needs 22 bytes per sample (tag, length, 9-byte double, 11-byte int64).
    """
    pos = 0
    for i in range(len(ts)):
        t = np.uint64(ts[i])
        # inner message: 0x09 + 8 bytes double, 0x10 + varint(ts)
        n = 1
        x = t
        while x >= np.uint64(0x80):
            x >>= np.uint64(7)
            n += 1
        out[pos] = 0x12
        out[pos + 1] = 9 + 1 + n
        pos += 2
        out[pos] = 0x09
        b = bits[i]
        for k in range(8):
            out[pos + 1 + k] = (b >> np.uint64(8 * k)) & np.uint64(0xFF)
        pos += 9
        out[pos] = 0x10
        pos = _put_uvarint(out, pos + 1, t)
    return pos


def samples_reference(ts: np.ndarray, values: np.ndarray) -> bytes:
    """Plain twin of k_samples: the Sample messages of one series."""
    out = bytearray()
    for t, v in zip(ts.tolist(), values.tolist()):
        inner = b"\x09" + struct.pack("<d", v) + b"\x10" + _uvarint(int(t))
        out += _len_field(2, inner)
    return bytes(out)


def _samples_bytes(ts: np.ndarray, values: np.ndarray) -> bytes:
    out = np.empty(22 * len(ts), np.uint8)
    n = k_samples(
        np.ascontiguousarray(ts, np.int64), np.ascontiguousarray(values, np.float64).view(np.uint64), out
    )
    return out[:n].tobytes()


def encode_read_response(results: list[list[Series]]) -> bytes:
    """ReadResponse with one QueryResult per query (uncompressed protobuf)."""
    parts = []
    for series in results:
        ts_msgs = b"".join(
            _len_field(1, _labels_bytes(s.labels) + _samples_bytes(s.ts, s.values)) for s in series
        )
        parts.append(_len_field(1, ts_msgs))
    return b"".join(parts)


# --- Prometheus XOR chunks ---------------------------------------------------------


@kernel(cache=True)
def _put_bits(out, bitpos, v, nbits):  # pragma: no cover - jitted
    """Append the low `nbits` of v (uint64), most significant first."""
    for k in range(nbits - 1, -1, -1):
        if (v >> np.uint64(k)) & np.uint64(1):
            out[bitpos >> 3] |= np.uint8(0x80 >> (bitpos & 7))
        bitpos += 1
    return bitpos


@kernel(cache=True)
def _clz64(x):  # pragma: no cover - jitted
    n = 0
    for k in range(63, -1, -1):
        if (x >> np.uint64(k)) & np.uint64(1):
            break
        n += 1
    return n


@kernel(cache=True)
def _ctz64(x):  # pragma: no cover - jitted
    n = 0
    for k in range(64):
        if (x >> np.uint64(k)) & np.uint64(1):
            break
        n += 1
    return n


@kernel(cache=True)
def k_xor_chunk(ts, bits, out):  # pragma: no cover - jitted
    """Encode one Prometheus XOR chunk into zeroed `out`; returns its byte length.

    out needs 2 + 10 + 8 + 19 * len(ts) bytes at worst.
    """
    n = len(ts)
    out[0] = (n >> 8) & 0xFF
    out[1] = n & 0xFF
    bitpos = 16
    if n == 0:
        return 2
    # sample 0: zigzag varint timestamp, raw value bits
    t0 = ts[0]
    zz = (np.uint64(t0) << np.uint64(1)) ^ np.uint64(t0 >> 63)
    while zz >= np.uint64(0x80):
        bitpos = _put_bits(out, bitpos, (zz & np.uint64(0x7F)) | np.uint64(0x80), 8)
        zz >>= np.uint64(7)
    bitpos = _put_bits(out, bitpos, zz, 8)
    bitpos = _put_bits(out, bitpos, bits[0], 64)
    prev_t = t0
    prev_delta = np.int64(0)
    prev_v = bits[0]
    leading = 0xFF
    trailing = 0
    for i in range(1, n):
        t = ts[i]
        delta = t - prev_t
        if i == 1:
            d = np.uint64(delta)
            while d >= np.uint64(0x80):
                bitpos = _put_bits(out, bitpos, (d & np.uint64(0x7F)) | np.uint64(0x80), 8)
                d >>= np.uint64(7)
            bitpos = _put_bits(out, bitpos, d, 8)
        else:
            dod = delta - prev_delta
            if dod == 0:
                bitpos = _put_bits(out, bitpos, np.uint64(0), 1)
            elif -8191 <= dod <= 8192:
                bitpos = _put_bits(out, bitpos, np.uint64(0b10), 2)
                bitpos = _put_bits(out, bitpos, np.uint64(dod), 14)
            elif -65535 <= dod <= 65536:
                bitpos = _put_bits(out, bitpos, np.uint64(0b110), 3)
                bitpos = _put_bits(out, bitpos, np.uint64(dod), 17)
            elif -524287 <= dod <= 524288:
                bitpos = _put_bits(out, bitpos, np.uint64(0b1110), 4)
                bitpos = _put_bits(out, bitpos, np.uint64(dod), 20)
            else:
                bitpos = _put_bits(out, bitpos, np.uint64(0b1111), 4)
                bitpos = _put_bits(out, bitpos, np.uint64(dod), 64)
        v = bits[i]
        x = v ^ prev_v
        if x == np.uint64(0):
            bitpos = _put_bits(out, bitpos, np.uint64(0), 1)
        else:
            lz = _clz64(x)
            tz = _ctz64(x)
            if lz >= 32:
                lz = 31
            if leading != 0xFF and lz >= leading and tz >= trailing:
                bitpos = _put_bits(out, bitpos, np.uint64(0b10), 2)
                bitpos = _put_bits(out, bitpos, x >> np.uint64(trailing), 64 - leading - trailing)
            else:
                leading = lz
                trailing = tz
                sig = 64 - lz - tz
                bitpos = _put_bits(out, bitpos, np.uint64(0b11), 2)
                bitpos = _put_bits(out, bitpos, np.uint64(lz), 5)
                bitpos = _put_bits(out, bitpos, np.uint64(sig & 63), 6)
                bitpos = _put_bits(out, bitpos, x >> np.uint64(tz), sig)
        prev_delta = delta
        prev_t = t
        prev_v = v
    return (bitpos + 7) >> 3


def xor_chunk(ts: np.ndarray, values: np.ndarray) -> bytes:
    """One Prometheus XOR chunk of these samples (at most 65535)."""
    n = len(ts)
    out = np.zeros(2 + 10 + 8 + 19 * n, np.uint8)
    size = k_xor_chunk(
        np.ascontiguousarray(ts, np.int64), np.ascontiguousarray(values, np.float64).view(np.uint64), out
    )
    return out[:size].tobytes()


class _Bits:
    """Bit writer for the plain twin of k_xor_chunk."""

    def __init__(self) -> None:
        self.bits: list[int] = []

    def put(self, v: int, n: int) -> None:
        self.bits.extend((v >> k) & 1 for k in range(n - 1, -1, -1))

    def to_bytes(self) -> bytes:
        bits = self.bits + [0] * (-len(self.bits) % 8)
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


def xor_chunk_reference(ts: np.ndarray, values: np.ndarray) -> bytes:
    """Readable twin of k_xor_chunk (same bytes; used by the property tests)."""
    w = _Bits()
    tl = [int(t) for t in ts]
    vb = [struct.unpack("<Q", struct.pack("<d", v))[0] for v in values.tolist()]
    if tl:
        for byte in _uvarint((tl[0] << 1) ^ (tl[0] >> 63)):
            w.put(byte, 8)
        w.put(vb[0], 64)
    leading, trailing, prev_delta = 0xFF, 0, 0
    m64 = (1 << 64) - 1
    for i in range(1, len(tl)):
        delta = tl[i] - tl[i - 1]
        if i == 1:
            for byte in _uvarint(delta):
                w.put(byte, 8)
        else:
            dod = delta - prev_delta
            for prefix, plen, nbits in ((0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20)):
                if dod == 0:
                    w.put(0, 1)
                    break
                if -(1 << (nbits - 1)) + 1 <= dod <= 1 << (nbits - 1):
                    w.put(prefix, plen)
                    w.put(dod & ((1 << nbits) - 1), nbits)
                    break
            else:
                w.put(0b1111, 4)
                w.put(dod & m64, 64)
        x = vb[i] ^ vb[i - 1]
        if x == 0:
            w.put(0, 1)
        else:
            lz = min(64 - x.bit_length(), 31)
            tz = (x & -x).bit_length() - 1
            if leading != 0xFF and lz >= leading and tz >= trailing:
                w.put(0b10, 2)
                w.put(x >> trailing, 64 - leading - trailing)
            else:
                leading, trailing = lz, tz
                sig = 64 - lz - tz
                w.put(0b11, 2)
                w.put(lz, 5)
                w.put(sig & 63, 6)
                w.put(x >> tz, sig)
        prev_delta = delta
    return struct.pack(">H", len(tl)) + w.to_bytes()


# --- streamed response ---------------------------------------------------------------

_CRC32C_TABLE = np.zeros(256, np.uint32)
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC32C_TABLE[_i] = _c


@kernel(cache=True)
def _k_crc32c(data, table):  # pragma: no cover - jitted
    crc = np.uint32(0xFFFFFFFF)
    for b in data:
        crc = table[(crc ^ np.uint32(b)) & np.uint32(0xFF)] ^ (crc >> np.uint32(8))
    return crc ^ np.uint32(0xFFFFFFFF)


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of streamed remote-read frames."""
    return int(_k_crc32c(np.frombuffer(data, np.uint8), _CRC32C_TABLE))


def _chunked_series(s: Series) -> bytes:
    chunks = []
    for a in range(0, len(s.ts), CHUNK_SAMPLES):
        ts, vals = s.ts[a : a + CHUNK_SAMPLES], s.values[a : a + CHUNK_SAMPLES]
        body = (
            _uvarint(1 << 3) + _uvarint(int(ts[0]))
            + _uvarint(2 << 3) + _uvarint(int(ts[-1]))
            + _uvarint(3 << 3) + _uvarint(CHUNK_ENCODING_XOR)
            + _len_field(4, xor_chunk(ts, vals))
        )
        chunks.append(_len_field(2, body))
    return _len_field(1, _labels_bytes(s.labels) + b"".join(chunks))


def _frame(message: bytes) -> bytes:
    return _uvarint(len(message)) + struct.pack(">I", crc32c(message)) + message


def stream_chunked(series: list[Series], query_index: int) -> Iterator[bytes]:
    """Frames of ChunkedReadResponse for one query, each near FRAME_BYTES at most."""
    tail = (_uvarint(2 << 3) + _uvarint(query_index)) if query_index else b""
    buf: list[bytes] = []
    size = 0
    for s in series:
        if len(s.ts) == 0:
            continue
        msg = _chunked_series(s)
        if buf and size + len(msg) > FRAME_BYTES:
            yield _frame(b"".join(buf) + tail)
            buf, size = [], 0
        buf.append(msg)
        size += len(msg)
    if buf:
        yield _frame(b"".join(buf) + tail)


def warm_up() -> None:
    """Compile the kernels (a first remote read should not pay for it)."""
    ts = np.array([0, 1000, 2000], np.int64)
    vals = np.array([1.0, 2.0, 2.5])
    # Writeable arrays, and read-only ones: series read from the workers
    # are views of their answers' bytes.
    for t, v in ((ts, vals), (np.frombuffer(ts.tobytes(), np.int64), np.frombuffer(vals.tobytes()))):
        xor_chunk(t, v)
        _samples_bytes(t, v)
    crc32c(b"x")
