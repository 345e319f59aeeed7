"""Plain-Python twin of the chunk codec in chunkenc.py, written to be read.

It implements docs/format/chunk.md directly, one sample at a time, with
Python ints standing in for 64-bit registers. It is slow and exists for the
property tests, which assert that the Numba kernels produce the very same
bytes, and as an executable statement of the format.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from collections.abc import Sequence

FORMAT_VERSION = 2
ENC_DECIMAL = 1
TS_ORDER_SHIFT = 1
VALUE_ORDER_SHIFT = 3
ENC_VALUE_SCALE = 32
TS_EXTERNAL = 0  # timestamp order 0: no timestamps in the chunk (version 2)
LEVEL, DELTA, DOD, LINEAR = 0, 1, 2, 3
SINGLE_TIER = 255
MAX_SCALE = 15
DECIMAL_LIMIT = float(2**62)
M64 = (1 << 64) - 1


def wrap64(x: int) -> int:
    """Python int -> the int64 a two's complement machine would hold."""
    x &= M64
    return x - (1 << 64) if x >> 63 else x


def zigzag(x: int) -> int:
    x = wrap64(x)
    return ((x << 1) ^ (x >> 63)) & M64


def unzigzag(z: int) -> int:
    return wrap64((z >> 1) ^ -(z & 1))


def float_bits(v: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", v))[0]


def bits_float(b: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", b))[0]


def uvarint(z: int) -> bytes:
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


class BitWriter:
    """Bits packed LSB-first: the first bit written is bit 0 of byte 0."""

    def __init__(self) -> None:
        self.value = 0
        self.nbits = 0

    def put(self, v: int, nbits: int) -> None:
        assert 0 <= v < (1 << nbits) or (v == 0 and nbits == 0)
        self.value |= v << self.nbits
        self.nbits += nbits

    def to_bytes(self) -> bytes:
        return self.value.to_bytes((self.nbits + 7) // 8, "little")


class BitReader:
    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "little")
        self.limit = 8 * len(data)
        self.pos = 0

    def get(self, nbits: int) -> int:
        if self.pos + nbits > self.limit:
            raise ValueError("bit stream runs past the end of the chunk")
        v = (self.value >> self.pos) & ((1 << nbits) - 1)
        self.pos += nbits
        return v


# ---------------------------------------------------------------- integer streams


def deltas(x: Sequence[int]) -> list[int]:
    return [wrap64(x[i] - x[i - 1]) for i in range(1, len(x))]


def low_median(d: list[int]) -> int:
    return sorted(d)[(len(d) - 1) // 2]


def residuals(x: Sequence[int], order: int, base: int, offset: int = 0) -> list[int]:
    """r_1..r_{n-1}: see the table in docs/format/chunk.md."""
    n = len(x)
    if order == LEVEL:
        return [wrap64(x[i] - x[0] - base) for i in range(1, n)]
    if order == LINEAR:
        return [wrap64(x[i] - x[0] - i * base - offset) for i in range(1, n)]
    d = deltas(x)
    if order == DELTA:
        return [wrap64(di - base) for di in d]
    return [wrap64(d[0] - base)] + [wrap64(d[i] - d[i - 1]) for i in range(1, n - 1)]


def varint_bits(*signed: int) -> int:
    return sum(8 * len(uvarint(zigzag(v))) for v in signed)


def escape_bits(length: int) -> int:
    """'11' + 6-bit (L-1) + the L-1 bits below the leading one."""
    return 2 + 6 + (length - 1)


def choose_tiers(zz: list[int]) -> tuple[int, int, int]:
    """(w1, w2, total bits): single tier first, then w1 < w2 ascending; strict wins."""
    lengths = Counter(z.bit_length() for z in zz)
    lmax = max(lengths, default=0)
    best = (lmax, SINGLE_TIER, len(zz) * lmax)
    for w1 in range(lmax):
        for w2 in range(w1 + 1, lmax + 1):
            cost = sum(
                count * (1 + w1 if L <= w1 else 2 + w2 if L <= w2 else escape_bits(L))
                for L, count in lengths.items()
            )
            if cost < best[2]:
                best = (w1, w2, cost)
    return best


def mean_step(x: Sequence[int]) -> int:
    """(x_{n-1} - x_0) / (n-1), rounded half up, of the unsigned 64-bit span."""
    span, m = (x[-1] - x[0]) & M64, len(x) - 1
    q, r = divmod(span, m)
    return wrap64(q + (1 if 2 * r >= m else 0))


def plan_int_stream(x: Sequence[int], timestamps: bool) -> tuple[int, int, int, int, int, int]:
    """(order, base, offset, w1, w2, bits), bits = residual bits + base/offset varints.

    Candidates in order delta, delta-of-delta, then linear (timestamps) or
    level (values); a later one must be strictly cheaper to win.
    """
    if len(x) == 1:
        return DELTA, 0, 0, 0, SINGLE_TIER, 8
    d_base = low_median(deltas(x))
    candidates = [(DELTA, d_base, 0)]
    if len(x) > 2:
        candidates.append((DOD, d_base, 0))
    if not timestamps:
        candidates.append((LEVEL, low_median([wrap64(xi - x[0]) for xi in x[1:]]), 0))
    if timestamps and len(x) > 2:
        g_base = mean_step(x)
        candidates.append((LINEAR, g_base, low_median(residuals(x, LINEAR, g_base))))
    best = None
    for order, base, offset in candidates:
        w1, w2, bits = choose_tiers([zigzag(r) for r in residuals(x, order, base, offset)])
        bits += varint_bits(base, offset) if order == LINEAR else varint_bits(base)
        if best is None or bits < best[5]:
            best = (order, base, offset, w1, w2, bits)
    return best


def stream_params(order: int, base: int, offset: int, w1: int, w2: int) -> bytes:
    head = uvarint(zigzag(base))
    if order == LINEAR:
        head += uvarint(zigzag(offset))
    return head + bytes([w1, w2])


def write_int_stream(
    w: BitWriter, x: Sequence[int], order: int, base: int, offset: int, w1: int, w2: int
) -> None:
    for r in residuals(x, order, base, offset):
        z = zigzag(r)
        if w2 == SINGLE_TIER:
            w.put(z, w1)
        elif z < (1 << w1):
            w.put(0b0, 1)
            w.put(z, w1)
        elif z < (1 << w2):
            w.put(0b01, 2)  # first bit 1, second bit 0
            w.put(z, w2)
        else:
            length = z.bit_length()
            w.put(0b11, 2)
            w.put(length - 1, 6)
            w.put(z & ((1 << (length - 1)) - 1), length - 1)


def read_int_stream(
    r: BitReader, first: int, n: int, order: int, base: int, offset: int, w1: int, w2: int
) -> list[int]:
    x = [first]
    prev_d = base
    for i in range(1, n):
        if w2 == SINGLE_TIER:
            z = r.get(w1)
        elif r.get(1) == 0:
            z = r.get(w1)
        elif r.get(1) == 0:
            z = r.get(w2)
        else:
            l1 = r.get(6)
            z = (1 << l1) | r.get(l1)
        res = unzigzag(z)
        if order == LEVEL:
            x.append(wrap64(first + base + res))
        elif order == DELTA:
            x.append(wrap64(x[-1] + base + res))
        elif order == DOD:
            prev_d = wrap64(prev_d + res)
            x.append(wrap64(x[-1] + prev_d))
        else:
            x.append(wrap64(first + i * base + offset + res))
    return x


# ---------------------------------------------------------------- XOR floats


def clz64(x: int) -> int:
    return 64 - x.bit_length()


def ctz64(x: int) -> int:
    return (x & -x).bit_length() - 1


def write_xor(w: BitWriter, bits: Sequence[int]) -> None:
    lead, trail = None, 0
    for i in range(1, len(bits)):
        x = bits[i] ^ bits[i - 1]
        if x == 0:
            w.put(0b0, 1)
            continue
        lz, tz = min(clz64(x), 31), ctz64(x)
        if lead is not None and lz >= lead and tz >= trail:
            w.put(0b01, 2)
            w.put(x >> trail, 64 - lead - trail)
        else:
            sig = 64 - lz - tz
            w.put(0b11, 2)
            w.put(lz, 5)
            w.put(sig - 1, 6)
            w.put(x >> tz, sig)
            lead, trail = lz, tz


def xor_bits(bits: Sequence[int]) -> int:
    w = BitWriter()
    w.put(bits[0], 64)
    write_xor(w, bits)
    return w.nbits


def read_xor(r: BitReader, first: int, n: int) -> list[int]:
    out = [first]
    lead = trail = 0
    for _ in range(1, n):
        if r.get(1) == 0:
            out.append(out[-1])
            continue
        if r.get(1) == 1:
            lead = r.get(5)
            sig = r.get(6) + 1
            trail = max(64 - lead - sig, 0)
        else:
            sig = 64 - lead - trail
        out.append(out[-1] ^ (r.get(sig) << trail))
    return out


# ---------------------------------------------------------------- decimal values


def round_half_up(x: float) -> float:
    f = float(math.floor(x))
    return f + 1.0 if x - f >= 0.5 else f


def is_decimal(v: float, p: float) -> bool:
    """v == float(m) / p exactly for an integer m (and v is not -0.0)."""
    x = v * p
    if not abs(x) < DECIMAL_LIMIT:
        return False
    if round_half_up(x) / p != v:
        return False
    return not (v == 0.0 and math.copysign(1.0, v) < 0)


def decimal_mantissas(values: Sequence[float]) -> tuple[int, list[int]] | None:
    """Smallest scale k with every value == m / 10**k exactly, and the m's."""
    for k in range(MAX_SCALE + 1):
        p = 10.0**k
        if all(is_decimal(v, p) for v in values):
            return k, [int(round_half_up(v * p)) for v in values]
    return None


# ---------------------------------------------------------------- chunks


def encode_chunk(ts: Sequence[int], values: Sequence[float], external_ts: bool = False) -> bytes:
    """external_ts: leave the timestamps out (another chunk holds them)."""
    n = len(ts)
    assert 1 <= n <= 65535 and len(values) == n
    ts = [int(t) for t in ts]
    bits = [float_bits(float(v)) for v in values]
    t_plan = (TS_EXTERNAL, 0, 0, 0, 0, 0) if external_ts else plan_int_stream(ts, timestamps=True)
    enc = t_plan[0] << TS_ORDER_SHIFT
    dec = decimal_mantissas([bits_float(b) for b in bits])
    if dec is not None:
        k, mant = dec
        m0 = mant[0]
        v_plan = plan_int_stream(mant, timestamps=False)
        stream, scale = mant, 1
        g = math.gcd(*(m - m0 for m in mant))
        if g >= 2:
            y = [(m - m0) // g for m in mant]
            s_plan = plan_int_stream(y, timestamps=False)
            s_bits = s_plan[5] + 8 * len(uvarint(g))
            if s_bits < v_plan[5]:
                v_plan, stream, scale = s_plan[:5] + (s_bits,), y, g
        # Everything after the timestamp fields: k, m0, [g,] stream params, bits.
        dec_bits = v_plan[5] + 8 * (1 + len(uvarint(zigzag(m0))) + 2)
        if dec_bits <= xor_bits(bits):
            enc |= ENC_DECIMAL | (v_plan[0] << VALUE_ORDER_SHIFT)
            if scale > 1:
                enc |= ENC_VALUE_SCALE
    head = bytearray([FORMAT_VERSION, enc])
    head += struct.pack("<Hq", n, ts[0])
    head += uvarint((ts[-1] - ts[0]) & M64)
    w = BitWriter()
    if not external_ts:
        head += stream_params(*t_plan[:5])
        write_int_stream(w, ts, *t_plan[:5])
    if enc & ENC_DECIMAL:
        head += bytes([k]) + uvarint(zigzag(m0))
        if scale > 1:
            head += uvarint(scale)
        head += stream_params(*v_plan[:5])
        write_int_stream(w, stream, *v_plan[:5])
    else:
        head += struct.pack("<Q", bits[0])
        write_xor(w, bits)
    return bytes(head) + w.to_bytes()


def _read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    z = shift = 0
    while True:
        b = data[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            return z, pos
        shift += 7


def _read_stream_params(data: bytes, pos: int, order: int) -> tuple[tuple[int, ...], int]:
    zb, pos = _read_uvarint(data, pos)
    zo = 0
    if order == LINEAR:
        zo, pos = _read_uvarint(data, pos)
    return (unzigzag(zb), unzigzag(zo), data[pos], data[pos + 1]), pos + 2


def decode_chunk(data: bytes, shared_ts: Sequence[int] | None = None) -> tuple[list[int], list[int]]:
    """(timestamps, value bit patterns as uint64 ints); shared_ts: the
    timestamps of a chunk written with external_ts."""
    if data[0] not in (1, FORMAT_VERSION):
        raise ValueError("unsupported format version")
    if data[0] == 1 and (data[1] & ENC_VALUE_SCALE or (data[1] >> TS_ORDER_SHIFT) & 3 == TS_EXTERNAL):
        raise ValueError("invalid encoding byte")
    enc = data[1]
    n, t0 = struct.unpack_from("<Hq", data, 2)
    _span, pos = _read_uvarint(data, 12)
    t_order = (enc >> TS_ORDER_SHIFT) & 3
    if (t_order == TS_EXTERNAL) != (shared_ts is not None):
        raise ValueError("shared timestamps do not match the chunk")
    if t_order != TS_EXTERNAL:
        t_params, pos = _read_stream_params(data, pos, t_order)
    if enc & ENC_DECIMAL:
        k = data[pos]
        zm, pos = _read_uvarint(data, pos + 1)
        scale = 1
        if enc & ENC_VALUE_SCALE:
            scale, pos = _read_uvarint(data, pos)
        v_order = (enc >> VALUE_ORDER_SHIFT) & 3
        v_params, pos = _read_stream_params(data, pos, v_order)
    else:
        (first,) = struct.unpack_from("<Q", data, pos)
        pos += 8
    r = BitReader(data[pos:])
    if shared_ts is None:
        ts = read_int_stream(r, t0, n, t_order, *t_params)
    else:
        ts = list(shared_ts)
        if len(ts) != n or ts[0] != t0 or (ts[-1] - ts[0]) & M64 != _span:
            raise ValueError("shared timestamps do not match the chunk")
    if enc & ENC_DECIMAL:
        if scale > 1:
            y = read_int_stream(r, 0, n, v_order, *v_params)
            mant = [unzigzag(zm) + scale * yi for yi in y]
        else:
            mant = read_int_stream(r, unzigzag(zm), n, v_order, *v_params)
        p = 10.0**k
        vbits = [float_bits(float(m) / p) for m in mant]
    else:
        vbits = read_xor(r, first, n)
    return ts, vbits
