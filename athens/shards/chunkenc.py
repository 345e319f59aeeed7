"""Chunk codec: one series' samples <-> a compact, self-describing byte string.

A chunk holds 1..65535 samples of one series, sorted by strictly increasing
int64 millisecond timestamps, with float64 values kept bit-exact (NaN payloads
such as the staleness marker included). The byte format is specified in
docs/format/chunk.md; ``athens/shards/chunkenc_ref.py`` is its plain-Python
twin, and tests assert the two produce identical bytes.

Everything per-sample runs in Numba kernels (``athens.kernels.kernel``) over whole
arrays; the public functions below only validate arguments and call them.
``warm_up()`` compiles every kernel once, at worker start.
"""

from __future__ import annotations

import sys

import numpy as np
from llvmlite import ir

from athens.errors import AthensError
from athens.kernels import intrinsic, kernel, leading_zeros, read_only, trailing_zeros, types
from athens.model.series import STALE_NAN_U64

__all__ = [
    "ChunkFormatError",
    "FORMAT_VERSION",
    "MAX_SAMPLES",
    "chunk_encoding",
    "chunk_lengths",
    "chunk_num_samples",
    "chunk_time_range",
    "chunk_value_encoding",
    "decode_chunk",
    "decode_chunks",
    "decode_chunks_into",
    "encode_chunk",
    "encode_chunks",
    "shared_timestamps",
    "warm_up",
]


class ChunkFormatError(AthensError):
    """Bytes that are not a valid chunk: unknown version, truncated, corrupt."""

    error_type = "internal"


# Header byte 0. Bump it on any change to the layout; decoders reject
# versions they do not know.
FORMAT_VERSION = 2
# Version 1 lacks ENC_VALUE_SCALE (bit 5 reserved); still decoded.
_OLDEST_VERSION = 1
# Header byte 1, the encoding byte:
ENC_DECIMAL = 1  # bit 0: values are integers m scaled by 10**-k (else Gorilla XOR)
TS_ORDER_SHIFT = 1  # bits 1-2: residual order of the timestamps (1, 2 or 3)
TS_EXTERNAL = 0  # ... or 0: no timestamps here, they are another chunk's (version 2)
VALUE_ORDER_SHIFT = 3  # bits 3-4: residual order of decimal values (0 for XOR)
ENC_VALUE_SCALE = 32  # bit 5: decimal mantissas step in multiples of a stored g >= 2
_RESERVED_BITS = 0xC0  # bits 6-7: zero
ORDER_NAMES = ("level", "delta", "delta-of-delta", "linear")

# The sample count is stored as a uint16.
MAX_SAMPLES = 65535
# w2 == SINGLE_TIER marks the one-tier layout: every residual is exactly w1
# bits, with no prefix (0 bits per sample for perfectly regular data).
SINGLE_TIER = 255
# Largest decimal scale tried: 10**15 is exact in float64 and covers the
# values Prometheus exporters print (at most a few significant decimals).
MAX_SCALE = 15
_POW10 = np.array([10.0**k for k in range(MAX_SCALE + 1)], dtype=np.float64)
# |m| < 2**62 for decimal mantissas: they and their deltas fit in int64.
_DECIMAL_LIMIT = float(2**62)

# Error codes returned by the decode kernels (0 = ok).
_ERRORS = {
    1: "truncated header",
    2: "unsupported format version",
    3: "invalid encoding byte",
    4: "zero sample count",
    5: "invalid tier widths",
    6: "invalid decimal scale",
    7: "bit stream runs past the end of the chunk",
    8: "trailing bytes after the bit stream",
    9: "time span in header does not match the decoded timestamps",
    10: "malformed varint",
    11: "invalid value scale",
    12: "timestamps are stored outside the chunk",
    13: "shared timestamps do not match the chunk",
    14: "chunk placed outside the outputs",
    15: "chunk position outside the block",
}

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)


# --------------------------------------------------------------------------
# Bit-level primitives. Bits are packed LSB-first: the first bit written is
# bit 0 of byte 0. Writers keep up to 63 pending bits in a uint64 accumulator.


@kernel(cache=True, inline="always")
def _mask(w):
    if w == 0:
        return _U0
    return _ALL >> np.uint64(64 - w)


@kernel(cache=True, inline="always")
def _zigzag(x):
    # int64 -> uint64: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ...
    return np.uint64((x << np.int64(1)) ^ (x >> np.int64(63)))


@kernel(cache=True, inline="always")
def _unzigzag(z):
    return np.int64(z >> _U1) ^ -np.int64(z & _U1)


@kernel(cache=True, inline="always")
def _clz(x):
    return np.int64(leading_zeros(x))


@kernel(cache=True, inline="always")
def _ctz(x):
    return np.int64(trailing_zeros(x))


@kernel(cache=True, inline="always")
def _bitlen(z):
    if z == _U0:
        return np.int64(0)
    return 64 - _clz(z)


# Raw little-endian loads and stores at (address + byte index). The bit
# stream kernels take the address of their uint8 buffer (arr.ctypes.data)
# rather than the array: an array passed into an inlined helper costs a
# reference-count call per use, and LLVM does not fuse eight byte loads into
# one 64-bit load. Callers keep the array alive and the index in bounds.


def _byte_ptr(builder, addr, idx):
    return builder.inttoptr(builder.add(addr, idx), ir.IntType(8).as_pointer())


def _to_le(builder, value):
    return builder.bswap(value) if sys.byteorder == "big" else value


@intrinsic
def _load8(typingctx, addr, idx):
    if not (isinstance(addr, types.Integer) and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        ptr = builder.bitcast(_byte_ptr(builder, *args), ir.IntType(64).as_pointer())
        return _to_le(builder, builder.load(ptr, align=1))

    return types.uint64(addr, idx), codegen


@intrinsic
def _load1(typingctx, addr, idx):
    if not (isinstance(addr, types.Integer) and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        return builder.zext(builder.load(_byte_ptr(builder, *args)), ir.IntType(64))

    return types.uint64(addr, idx), codegen


@intrinsic
def _store8(typingctx, addr, idx, val):
    if not all(isinstance(t, types.Integer) for t in (addr, idx, val)):
        return None

    def codegen(context, builder, signature, args):
        ptr = builder.bitcast(_byte_ptr(builder, args[0], args[1]), ir.IntType(64).as_pointer())
        builder.store(_to_le(builder, args[2]), ptr, align=1)
        return context.get_dummy_value()

    return types.none(addr, idx, val), codegen


@intrinsic
def _store1(typingctx, addr, idx, val):
    if not all(isinstance(t, types.Integer) for t in (addr, idx, val)):
        return None

    def codegen(context, builder, signature, args):
        byte = builder.trunc(args[2], ir.IntType(8))
        builder.store(byte, _byte_ptr(builder, args[0], args[1]))
        return context.get_dummy_value()

    return types.none(addr, idx, val), codegen


@kernel(cache=True, inline="always")
def _put(oaddr, pos, acc, nacc, v, nbits):
    """Append the low ``nbits`` (<= 56) of v (no higher bits set).

    Whole bytes go to the output only when the accumulator would overflow; a
    flush stores 8 bytes, so the output needs 8 bytes of slack.
    """
    if nbits == 0:
        return pos, acc, nacc
    if nacc + nbits > 63:
        _store8(oaddr, pos, acc)
        k = nacc >> 3
        pos += k
        acc >>= np.uint64(8 * k)
        nacc -= 8 * k
    acc |= v << np.uint64(nacc)
    nacc += nbits
    return pos, acc, nacc


@kernel(cache=True, inline="always")
def _put64(oaddr, pos, acc, nacc, v, nbits):
    """Append the low ``nbits`` (<= 64) of v (no higher bits set)."""
    if nbits > 56:
        pos, acc, nacc = _put(oaddr, pos, acc, nacc, v & _mask(32), 32)
        return _put(oaddr, pos, acc, nacc, v >> np.uint64(32), nbits - 32)
    return _put(oaddr, pos, acc, nacc, v, nbits)


@kernel(cache=True, inline="always")
def _put_split(oaddr, pos, acc, nacc, prefix, plen, v, nbits):
    """Append a short prefix then nbits (<= 64) of v, as one write when they fit."""
    if plen + nbits <= 56:
        return _put(oaddr, pos, acc, nacc, prefix | (v << np.uint64(plen)), plen + nbits)
    pos, acc, nacc = _put(oaddr, pos, acc, nacc, prefix, plen)
    return _put64(oaddr, pos, acc, nacc, v, nbits)


@kernel(cache=True, inline="always")
def _flush(oaddr, pos, acc, nacc):
    """Write the pending bits, zero-padded to a byte; returns the end position."""
    while nacc > 0:
        _store1(oaddr, pos, acc)
        acc >>= np.uint64(8)
        nacc -= 8
        pos += 1
    return pos


@kernel(cache=True, inline="always")
def _peek(addr, bp, end):
    """At least 57 bits starting at bit position bp (zeros from byte ``end`` on)."""
    i = bp >> 3
    if i + 8 <= end:
        w = _load8(addr, i)
    else:
        w = _U0
        for j in range(8):
            if i + j < end:
                w |= _load1(addr, i + j) << np.uint64(8 * j)
    return w >> np.uint64(bp & 7)


@kernel(cache=True, inline="always")
def _get(addr, bp, nbits, end):
    """The next ``nbits`` (<= 64) bits at bit position bp."""
    if nbits <= 56:
        return _peek(addr, bp, end) & _mask(nbits)
    lo = _peek(addr, bp, end) & _mask(32)
    hi = _peek(addr, bp + 32, end) & _mask(nbits - 32)
    return lo | (hi << np.uint64(32))


@kernel(cache=True)
def _put_uvarint(out, pos, z):
    while z >= np.uint64(0x80):
        out[pos] = np.uint8((z & np.uint64(0x7F)) | np.uint64(0x80))
        z >>= np.uint64(7)
        pos += 1
    out[pos] = np.uint8(z)
    return pos + 1


@kernel(cache=True)
def _get_uvarint(buf, pos, end):
    """Returns (value, new_pos); new_pos < 0 on a truncated/overlong varint."""
    z = _U0
    shift = 0
    while True:
        if pos >= end or shift > 63:
            return _U0, -1
        b = np.uint64(buf[pos])
        pos += 1
        z |= (b & np.uint64(0x7F)) << np.uint64(shift)
        if b < np.uint64(0x80):
            return z, pos
        shift += 7


# --------------------------------------------------------------------------
# Integer streams (timestamps, decimal value mantissas). Residual orders,
# for i = 1..n-1 with d_i = x_i - x_{i-1}:
#   0 level:          r_i = (x_i - x_0) - B
#   1 delta:          r_i = d_i - B
#   2 delta-of-delta: r_1 = d_1 - B, r_i = d_i - d_{i-1}
#   3 linear (grid):  r_i = (x_i - x_0) - i*B - C
# B (the base) and C (the offset) centre the residuals on 0: for orders 1 and
# 2, B is the low median of the deltas; for order 0, of x_i - x_0; for order
# 3, B is the mean step (x_{n-1} - x_0) / (n-1) rounded and C the low median
# of x_i - x_0 - i*B. Residuals are zig-zag mapped and written with
# per-chunk tier widths. All arithmetic wraps modulo 2**64.


# Ranges up to this wide take the counting path in _low_median: jitter and
# small counter increments do, and it avoids quickselect's branch misses.
# Empirical: timestamp planning on data set (b) of bench/micro_codec.py went
# from ~18 to ~6 ns/sample with it.
_COUNTING_RANGE = 2048


@kernel(cache=True)
def _low_median(a, m, bins):
    """Low median of a[:m] (m >= 1); may reorder a[:m]. bins: >= _COUNTING_RANGE scratch."""
    k = (m - 1) // 2
    lo_v = a[0]
    hi_v = a[0]
    for i in range(1, m):
        lo_v = min(lo_v, a[i])
        hi_v = max(hi_v, a[i])
    if np.uint64(hi_v - lo_v) < np.uint64(_COUNTING_RANGE):
        span = hi_v - lo_v + 1
        bins[:span] = 0
        for i in range(m):
            bins[a[i] - lo_v] += 1
        seen = 0
        for j in range(span):
            seen += bins[j]
            if seen > k:
                return lo_v + j
    # Quickselect (Hoare partition) for wide ranges; after 64 rounds (only an
    # adversarial order gets there) sort what is left, as introselect does.
    lo = 0
    hi = m - 1
    rounds = 0
    while lo < hi:
        rounds += 1
        if rounds > 64:
            return np.sort(a[lo : hi + 1])[k - lo]
        pivot = a[(lo + hi) >> 1]
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                t = a[i]
                a[i] = a[j]
                a[j] = t
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return a[k]


@kernel(cache=True)
def _residuals(x, order, base, offset, res):
    """Residuals r_1..r_{n-1} of x for an order into res[:n-1]."""
    n = x.shape[0]
    if order == 0:
        for i in range(1, n):
            res[i - 1] = (x[i] - x[0]) - base
    elif order == 1:
        for i in range(1, n):
            res[i - 1] = (x[i] - x[i - 1]) - base
    elif order == 2:
        if n > 1:
            res[0] = (x[1] - x[0]) - base
        for i in range(2, n):
            res[i - 1] = (x[i] - x[i - 1]) - (x[i - 1] - x[i - 2])
    else:
        for i in range(1, n):
            res[i - 1] = (x[i] - x[0]) - np.int64(i) * base - offset


@kernel(cache=True)
def _choose_tiers(res, m, work):
    """(w1, w2, bits): tier widths of least total bits for residuals res[:m].

    Candidates, in order (a later one must be strictly cheaper to win):
    single tier (w1 = longest zig-zag length, w2 = SINGLE_TIER), then every
    w1 < w2 <= longest, w1 ascending, then w2 ascending. Per residual of
    zig-zag bit length L: '0'+w1 bits if L <= w1, '10'+w2 bits if L <= w2,
    else '11' + 6-bit (L-1) + the L-1 bits below its leading one.
    """
    cnt = work[0:65]
    cum = work[65:130]
    esc = work[130:195]
    # Two interleaved histograms halve the store-to-load chains on runs of
    # equal lengths.
    cnt2 = work[195:260]
    cnt[:] = 0
    cnt2[:] = 0
    half = m >> 1
    for i in range(half):
        cnt[_bitlen(_zigzag(res[2 * i]))] += 1
        cnt2[_bitlen(_zigzag(res[2 * i + 1]))] += 1
    if m & 1:
        cnt[_bitlen(_zigzag(res[m - 1]))] += 1
    for L in range(65):
        cnt[L] += cnt2[L]
    lmax = 0
    run = 0
    for L in range(65):
        run += cnt[L]
        cum[L] = run
        if cnt[L] > 0:
            lmax = L
    best_w1 = lmax
    best_w2 = np.int64(SINGLE_TIER)  # typed as w2 is (numba.pycc does not widen literals)
    best = m * lmax
    run = 0
    for L in range(lmax, -1, -1):
        esc[L] = run
        run += cnt[L] * (7 + L)
    for w1 in range(lmax):
        for w2 in range(w1 + 1, lmax + 1):
            cost = (1 + w1) * cum[w1] + (2 + w2) * (cum[w2] - cum[w1]) + esc[w2]
            if cost < best:
                best = cost
                best_w1 = w1
                best_w2 = w2
    return best_w1, best_w2, best


@kernel(cache=True)
def _mean_step(x):
    """(x_{n-1} - x_0) / (n-1) rounded half up, in unsigned arithmetic (n >= 2).

    The grid step of the linear order: the median delta can be off by a
    millisecond under jitter, and that error would grow with i.
    """
    m = np.uint64(x.shape[0] - 1)
    span = np.uint64(x[x.shape[0] - 1] - x[0])
    q = span // m
    if (span % m) * np.uint64(2) >= m:
        q += _U1
    return np.int64(q)


@kernel(cache=True)
def _plan_int_stream(x, timestamps, res, tmp, work, bins):
    """(order, base, offset, w1, w2, bits) of the cheapest layout for x.

    bits counts the bit stream plus the base/offset varints, the parts that
    differ between orders. Orders tried: delta, delta-of-delta, then linear
    for timestamps (jitter around a grid) or level for values (a gauge
    wandering around a level); a later one must be strictly cheaper to win.
    Leaves the winner's residuals in res.
    """
    n = x.shape[0]
    m = n - 1
    if m == 0:
        return 1, np.int64(0), np.int64(0), 0, SINGLE_TIER, 8
    for i in range(m):
        tmp[i] = x[i + 1] - x[i]
    d_base = _low_median(tmp, m, bins)
    d_bytes = 8 * _uvarint_len(_zigzag(d_base))
    _residuals(x, 1, d_base, 0, res)
    w1, w2, bits = _choose_tiers(res, m, work)
    bits += d_bytes
    order = 1
    base = d_base
    offset = np.int64(0)
    # With no residual bits, order 1 cannot be strictly beaten: skip the rest.
    if bits > d_bytes:
        if m > 1:
            _residuals(x, 2, d_base, 0, res)
            w1b, w2b, bitsb = _choose_tiers(res, m, work)
            if bitsb + d_bytes < bits:
                order, w1, w2, bits = 2, w1b, w2b, bitsb + d_bytes
        if not timestamps:
            for i in range(m):
                tmp[i] = x[i + 1] - x[0]
            l_base = _low_median(tmp, m, bins)
            _residuals(x, 0, l_base, 0, res)
            w1b, w2b, bitsb = _choose_tiers(res, m, work)
            bitsb += 8 * _uvarint_len(_zigzag(l_base))
            if bitsb < bits:
                order, base, w1, w2, bits = 0, l_base, w1b, w2b, bitsb
        if timestamps and m > 1:
            g_base = _mean_step(x)
            _residuals(x, 3, g_base, 0, tmp)
            off = _low_median(tmp, m, bins)
            _residuals(x, 3, g_base, off, res)
            w1b, w2b, bitsb = _choose_tiers(res, m, work)
            bitsb += 8 * (_uvarint_len(_zigzag(g_base)) + _uvarint_len(_zigzag(off)))
            if bitsb < bits:
                order, base, offset, w1, w2, bits = 3, g_base, off, w1b, w2b, bitsb
    if order != 3:
        _residuals(x, order, base, offset, res)
    return order, base, offset, w1, w2, bits


@kernel(cache=True)
def _write_tiers(res, m, w1, w2, oaddr, pos, acc, nacc):
    """Write residuals res[:m] zig-zag mapped, in the (w1, w2) tier layout."""
    if w2 == SINGLE_TIER:
        if w1 == 0:
            return pos, acc, nacc
        for i in range(m):
            pos, acc, nacc = _put64(oaddr, pos, acc, nacc, _zigzag(res[i]), w1)
        return pos, acc, nacc
    # w1 < w2 <= 64, so tier 1 always has a finite bound.
    t1 = _U1 << np.uint64(w1)
    t2 = _U1 << np.uint64(w2) if w2 < 64 else _ALL
    for i in range(m):
        z = _zigzag(res[i])
        if z < t1:
            pos, acc, nacc = _put_split(oaddr, pos, acc, nacc, _U0, 1, z, w1)
        elif z < t2 or w2 == 64:
            pos, acc, nacc = _put_split(oaddr, pos, acc, nacc, _U1, 2, z, w2)
        else:
            L1 = _bitlen(z) - 1
            head = np.uint64(3) | (np.uint64(L1) << np.uint64(2))  # '11' + 6-bit L-1
            pos, acc, nacc = _put(oaddr, pos, acc, nacc, head, 8)
            pos, acc, nacc = _put64(oaddr, pos, acc, nacc, z & _mask(L1), L1)
    return pos, acc, nacc


@kernel(cache=True, inline="always")
def _advance(order, prev, anchor, r):
    """One reconstruction step: (x_i, prev, anchor) from residual r.

    x_i = prev + anchor + r, where (prev, anchor) is (x_0, B) for order 0,
    (x_{i-1}, B) for order 1, (x_{i-1}, d_{i-1}) for order 2 (d_0 = B), and
    (x_0 + C + (i-1)*B, B) for order 3.
    """
    d = anchor + r
    x = prev + d
    if order == 1:
        prev = x
    elif order == 2:
        prev = x
        anchor = d
    elif order == 3:
        prev = prev + anchor
    return x, prev, anchor


@kernel(cache=True)
def _read_int_stream(addr, bp, end, first, n, order, base, offset, w1, w2, out):
    """Inverse of the writer into out[0:n]; returns the new bit position."""
    out[0] = first
    prev = first + offset
    anchor = base
    # Orders 1 (deltas: counters, regular timestamps) and 3 (offsets from a
    # line: jittered scrape timestamps) are nearly every stream, and each
    # has loops of its own below: through _advance, which branches on the
    # order for every residual, a `long` segment's chunks decoded 8-20%
    # slower (docs/benchmarks.md, "Decoding loops per stream order").
    if w2 == SINGLE_TIER and w1 == 0 and order == 1:
        for i in range(1, n):
            out[i] = prev + i * anchor  # wraps as the sums do
        return bp
    if w2 == SINGLE_TIER and w1 == 0:
        for i in range(1, n):
            out[i], prev, anchor = _advance(order, prev, anchor, np.int64(0))
        return bp
    if w2 == SINGLE_TIER and w1 <= 56 and (order == 1 or order == 3):
        m1 = _mask(w1)
        x = prev
        if order == 1:
            for i in range(1, n):
                x += anchor + _unzigzag(_peek(addr, bp + (i - 1) * w1, end) & m1)
                out[i] = x
        else:
            for i in range(1, n):
                x += anchor
                out[i] = x + _unzigzag(_peek(addr, bp + (i - 1) * w1, end) & m1)
        return bp + (n - 1) * w1
    if w2 == SINGLE_TIER and w1 <= 56:
        m1 = _mask(w1)
        for i in range(1, n):
            z = _peek(addr, bp, end) & m1
            bp += w1
            out[i], prev, anchor = _advance(order, prev, anchor, _unzigzag(z))
        return bp
    if w2 == SINGLE_TIER:
        for i in range(1, n):
            z = _get(addr, bp, w1, end)
            bp += w1
            out[i], prev, anchor = _advance(order, prev, anchor, _unzigzag(z))
        return bp
    m1 = _mask(w1)
    m2 = _mask(w2)
    if w2 > _BUFFERED_W2:
        for i in range(1, n):
            z, bp = _read_two_tier(addr, bp, end, w1, w2, m1, m2)
            out[i], prev, anchor = _advance(order, prev, anchor, _unzigzag(z))
        return bp
    # The rest read through a bit buffer (_next_two_tier).
    need = np.uint64(2 + w2)
    u1 = np.uint64(1 + w1)
    d = np.uint64(w2 - w1 + 1)
    win = _peek(addr, bp, end)
    avail = _BUFFERED_BITS
    if order == 1:
        # Deltas (counters, regular timestamps: most streams) in a loop of
        # their own: ~10% faster than through _advance (best of 8 decodes of
        # 0.2-1.3 M samples of counters: 4.7-7.8 -> 4.2-5.3 ns per sample).
        x = prev
        for i in range(1, n):
            z, bp, win, avail = _next_two_tier(addr, bp, end, win, avail, need, u1, d, m1, m2)
            x += anchor + _unzigzag(z)
            out[i] = x
        return bp
    if order == 3:
        # Offsets from a line (jittered scrape timestamps): likewise, the
        # line advanced by its slope, each residual added to it.
        line = prev
        for i in range(1, n):
            z, bp, win, avail = _next_two_tier(addr, bp, end, win, avail, need, u1, d, m1, m2)
            line += anchor
            out[i] = line + _unzigzag(z)
        return bp
    for i in range(1, n):
        z, bp, win, avail = _next_two_tier(addr, bp, end, win, avail, need, u1, d, m1, m2)
        out[i], prev, anchor = _advance(order, prev, anchor, _unzigzag(z))
    return bp


@kernel(cache=True, inline="always")
def _read_two_tier(addr, bp, end, w1, w2, m1, m2):
    """One residual of a two-tier stream: (zig-zagged value, new bit position)."""
    win = _peek(addr, bp, end)
    if (win & _U1) == _U0:
        return _get(addr, bp + 1, w1, end), bp + 1 + w1
    if (win & np.uint64(2)) == _U0:
        return _get(addr, bp + 2, w2, end), bp + 2 + w2
    return _read_escape(addr, bp, end)


@kernel(cache=True, inline="always")
def _read_escape(addr, bp, end):
    """The escaped residual at bp ('11', 6-bit L-1, its L-1 low bits)."""
    L1 = np.int64((_peek(addr, bp, end) >> np.uint64(2)) & np.uint64(63))
    return (_U1 << np.uint64(L1)) | _get(addr, bp + 8, L1, end), bp + 8 + L1


# Bits _peek returns at least; two-tier streams whose tier-2 residuals (2 +
# w2 bits) fit in them are read through a bit buffer (_next_two_tier).
_BUFFERED_BITS = np.uint64(57)
_BUFFERED_W2 = 54


@kernel(cache=True, inline="always")
def _next_two_tier(addr, bp, end, win, avail, need, u1, d, m1, m2):
    """One residual of a two-tier stream with w2 <= _BUFFERED_W2, from `win`
    holding `avail` unread bits at bp (refilled when fewer than `need` = 2
    + w2 are left): (zig-zagged value, bp, win, avail) after it.

    A load per residual put the memory access on the chain from one
    residual to the next, and the tier test was a branch the data decided
    (a quarter of a `long` counter stream's residuals are tier 2). Here a
    tier-1 or tier-2 residual is selected arithmetically from the buffer
    (u1 = 1 + w1 bits, or d more): a `long` 12-hour read of 2,559 counters
    decoded its value streams in 2.6 ns a sample instead of 3.5."""
    if avail < need:
        win = _peek(addr, bp, end)
        avail = _BUFFERED_BITS
    if (win & np.uint64(3)) == np.uint64(3):  # escaped: may be longer than the buffer
        z, bp = _read_escape(addr, bp, end)
        return z, bp, _peek(addr, bp, end), _BUFFERED_BITS
    t = win & _U1
    u = u1 + t * d
    z = (win >> (_U1 + t)) & (m1 ^ ((m1 ^ m2) & (_U0 - t)))
    return z, bp + np.int64(u), win >> u, avail - u


# --------------------------------------------------------------------------
# Float values: Gorilla XOR with the previous value.
# '0' same value; '10' + bits inside the previous window; '11' + 5-bit leading
# zero count (capped at 31) + 6-bit (significant bits - 1) + significant bits.


@kernel(cache=True)
def _xor_bits(vb):
    n = vb.shape[0]
    bits = 64
    lead = 255
    trail = 0
    for i in range(1, n):
        x = vb[i] ^ vb[i - 1]
        if x == _U0:
            bits += 1
            continue
        lz = min(_clz(x), 31)
        tz = _ctz(x)
        if lead != 255 and lz >= lead and tz >= trail:
            bits += 2 + 64 - lead - trail
        else:
            bits += 13 + 64 - lz - tz
            lead = lz
            trail = tz
    return bits


@kernel(cache=True)
def _write_xor(vb, oaddr, pos, acc, nacc):
    lead = 255
    trail = 0
    for i in range(1, vb.shape[0]):
        x = vb[i] ^ vb[i - 1]
        if x == _U0:
            pos, acc, nacc = _put(oaddr, pos, acc, nacc, _U0, 1)
            continue
        lz = min(_clz(x), 31)
        tz = _ctz(x)
        if lead != 255 and lz >= lead and tz >= trail:
            pos, acc, nacc = _put_split(
                oaddr, pos, acc, nacc, _U1, 2, x >> np.uint64(trail), 64 - lead - trail
            )
        else:
            sig = 64 - lz - tz
            head = np.uint64(3 | (lz << 2) | ((sig - 1) << 7))
            pos, acc, nacc = _put_split(oaddr, pos, acc, nacc, head, 13, x >> np.uint64(tz), sig)
            lead = lz
            trail = tz
    return pos, acc, nacc


@kernel(cache=True)
def _read_xor(addr, bp, end, first, n, out):
    out[0] = first
    lead = 0
    trail = 0
    prev = first
    for i in range(1, n):
        win = _peek(addr, bp, end)
        if (win & _U1) == _U0:
            bp += 1
        elif (win & np.uint64(2)) == _U0:
            sig = 64 - lead - trail
            prev ^= _get(addr, bp + 2, sig, end) << np.uint64(trail)
            bp += 2 + sig
        else:
            lead = np.int64((win >> np.uint64(2)) & np.uint64(31))
            sig = np.int64((win >> np.uint64(7)) & np.uint64(63)) + 1
            trail = 64 - lead - sig
            if trail < 0:
                trail = 0  # corrupt; keeps shifts defined, caught by checks
            prev ^= _get(addr, bp + 13, sig, end) << np.uint64(trail)
            bp += 13 + sig
        out[i] = prev
    return bp


# --------------------------------------------------------------------------
# Decimal values: v == float(m) / 10**k exactly, for int64 m and one k per chunk.


@kernel(cache=True, inline="always")
def _round_half_up(x):
    f = np.floor(x)
    if x - f >= 0.5:
        f += 1.0
    return f


@kernel(cache=True, inline="always")
def _decimal_mantissa(v, k):
    """(ok, m): is v == float(m) / 10**k exactly, with |m| < 2**62 and v not -0.0?"""
    p = _POW10[k]
    x = v * p
    if not (abs(x) < _DECIMAL_LIMIT):  # also rejects NaN and Inf
        return False, np.int64(0)
    m = _round_half_up(x)
    if k == 0:
        ok = m == v  # m / 1.0 == m: skip the division
    else:
        ok = m / p == v
    if ok and v == 0.0 and np.signbit(v):
        ok = False  # -0.0 would decode as +0.0
    return ok, np.int64(m)


@kernel(cache=True)
def _decimal_mantissas(vf, mant):
    """Smallest scale k at which every value is decimal, filling mant; else -1.

    A value that fails at the current k raises k and restarts the scan, so
    every value is verified at the final k (passing at k does not imply
    passing at k+1 near the 2**62 limit).
    """
    n = vf.shape[0]
    k = 0
    i = 0
    while i < n:
        ok, m = _decimal_mantissa(vf[i], k)
        if ok:
            mant[i] = m
            i += 1
        else:
            k += 1
            if k > MAX_SCALE:
                return -1
            i = 0
    return k


@kernel(cache=True)
def _step_gcd(x):
    """gcd of |x_i - x_0| over the stream (0 if all equal; stops early at 1).

    Page-sized memory gauges, sector-sized byte counters and 0.125 degC
    sensors step in multiples of 4096, 512 or 125: dividing the steps by
    that saves log2(g) bits per sample."""
    g = np.int64(0)
    for i in range(1, x.shape[0]):
        a = abs(x[i] - x[0])
        while a:
            g, a = a, g % a
        if g == 1:
            break
    return g


# --------------------------------------------------------------------------
# Whole chunks.


@kernel(cache=True)
def _put_u64le(out, pos, v):
    for j in range(8):
        out[pos + j] = np.uint8((v >> np.uint64(8 * j)) & np.uint64(0xFF))
    return pos + 8


@kernel(cache=True)
def _put_stream_params(out, pos, order, base, offset, w1, w2):
    pos = _put_uvarint(out, pos, _zigzag(base))
    if order == 3:
        pos = _put_uvarint(out, pos, _zigzag(offset))
    out[pos] = np.uint8(w1)
    out[pos + 1] = np.uint8(w2)
    return pos + 2


@kernel(cache=True)
def _encode_one(ts, vb, vf, out, pos, scratch, work, bins, external):
    """Encode one chunk at out[pos:]; returns the end position.

    external: leave the timestamps out (another chunk holds the same ones).
    scratch: int64[6, >= n] (timestamp residuals, mantissas, value residuals,
    work copy, scaled mantissas, their residuals); work, bins: tables for
    _choose_tiers and _low_median.
    """
    n = ts.shape[0]
    t_res = scratch[0]
    mant = scratch[1]
    v_res = scratch[2]
    tmp = scratch[3]
    t_order, t_base, t_off, t_w1, t_w2 = TS_EXTERNAL, np.int64(0), np.int64(0), 0, 0
    if not external:
        t_order, t_base, t_off, t_w1, t_w2, _ = _plan_int_stream(ts, True, t_res, tmp, work, bins)
    k = _decimal_mantissas(vf, mant)
    decimal = False
    v_order, v_base, v_off, v_w1, v_w2 = 1, np.int64(0), np.int64(0), 0, 0
    m0 = mant[0]
    g = np.int64(1)
    if k >= 0:
        mv = mant[:n]
        v_order, v_base, v_off, v_w1, v_w2, v_bits = _plan_int_stream(
            mv, False, v_res, tmp, work, bins
        )
        gs = _step_gcd(mv)
        if gs >= 2:
            # The scaled stream y_i = (m_i - m_0) / g, planned in rows 4-5;
            # it wins only when strictly cheaper, g's varint included.
            y = scratch[4][:n]
            for i in range(n):
                y[i] = (mv[i] - m0) // gs
            s_order, s_base, s_off, s_w1, s_w2, s_bits = _plan_int_stream(
                y, False, scratch[5], tmp, work, bins
            )
            s_bits += 8 * _uvarint_len(np.uint64(gs))
            if s_bits < v_bits:
                g = gs
                v_order, v_base, v_off, v_w1, v_w2, v_bits = s_order, s_base, s_off, s_w1, s_w2, s_bits
                v_res = scratch[5]
        # Compare everything after the timestamp fields: decimal header fields
        # and residuals against the raw first value and the XOR stream. XOR
        # needs at least 64 + 1 bit per further sample: skip its pass when the
        # decimal layout is no larger than that.
        dec_bits = v_bits + 8 * (1 + _uvarint_len(_zigzag(m0)) + 2)
        decimal = dec_bits <= 64 + (n - 1) or dec_bits <= _xor_bits(vb)
    enc = t_order << TS_ORDER_SHIFT
    if decimal:
        enc |= ENC_DECIMAL | (v_order << VALUE_ORDER_SHIFT)
        if g > 1:
            enc |= ENC_VALUE_SCALE
    out[pos] = np.uint8(FORMAT_VERSION)
    out[pos + 1] = np.uint8(enc)
    out[pos + 2] = np.uint8(n & 0xFF)
    out[pos + 3] = np.uint8(n >> 8)
    pos = _put_u64le(out, pos + 4, np.uint64(ts[0]))
    pos = _put_uvarint(out, pos, np.uint64(ts[n - 1] - ts[0]))
    if not external:
        pos = _put_stream_params(out, pos, t_order, t_base, t_off, t_w1, t_w2)
    if decimal:
        out[pos] = np.uint8(k)
        pos = _put_uvarint(out, pos + 1, _zigzag(m0))
        if g > 1:
            pos = _put_uvarint(out, pos, np.uint64(g))
        pos = _put_stream_params(out, pos, v_order, v_base, v_off, v_w1, v_w2)
    else:
        pos = _put_u64le(out, pos, vb[0])
    acc = _U0
    nacc = 0
    oaddr = out.ctypes.data
    if not external:
        pos, acc, nacc = _write_tiers(t_res, n - 1, t_w1, t_w2, oaddr, pos, acc, nacc)
    if decimal:
        pos, acc, nacc = _write_tiers(v_res, n - 1, v_w1, v_w2, oaddr, pos, acc, nacc)
    else:
        pos, acc, nacc = _write_xor(vb, oaddr, pos, acc, nacc)
    return _flush(oaddr, pos, acc, nacc)


@kernel(cache=True, inline="always")
def _uvarint_len(z):
    n = 1
    while z >= np.uint64(0x80):
        z >>= np.uint64(7)
        n += 1
    return n


def _max_encoded_len(n_samples: int, n_chunks: int) -> int:
    # Header <= 12 fixed + 10 span + (10 + 10 + 2) timestamp params
    # + (1 + 10 + 10 + 10 + 2) decimal params = 77 bytes; a sample costs at
    # most 71 timestamp bits + 77 XOR bits (< 19 bytes); the writer's 8-byte
    # stores need 8 bytes of slack.
    return 80 * n_chunks + 19 * n_samples + 8


@kernel(cache=True, nogil=True)  # a seal encodes on a thread, next to the loop
def _encode_many(ts, vb, vf, starts, out, offsets, ts_ref):
    k = starts.shape[0] - 1
    longest = 1
    for c in range(k):
        longest = max(longest, starts[c + 1] - starts[c])
    # Scratch space shared by all chunks (see _encode_one).
    scratch = np.empty((6, longest), dtype=np.int64)
    work = np.empty(260, dtype=np.int64)
    bins = np.empty(_COUNTING_RANGE, dtype=np.int64)
    pos = 0
    offsets[0] = 0
    for c in range(k):
        s = starts[c]
        e = starts[c + 1]
        external = ts_ref.shape[0] > 0 and ts_ref[c] >= 0
        pos = _encode_one(ts[s:e], vb[s:e], vf[s:e], out, pos, scratch, work, bins, external)
        offsets[c + 1] = pos
    return pos


@kernel(cache=True)
def _parse_header(buf, pos, end):
    """Returns (err, n, enc, t0, span, position after the span)."""
    if end - pos < 13:
        return 1, 0, 0, np.int64(0), _U0, pos
    version = buf[pos]
    if version < _OLDEST_VERSION or version > FORMAT_VERSION:
        return 2, 0, 0, np.int64(0), _U0, pos
    enc = np.int64(buf[pos + 1])
    v_order = (enc >> VALUE_ORDER_SHIFT) & 3
    old = version == 1 and (enc & ENC_VALUE_SCALE or (enc >> TS_ORDER_SHIFT) & 3 == TS_EXTERNAL)
    if (enc & _RESERVED_BITS) or old or ((v_order != 0 or enc & ENC_VALUE_SCALE) and not enc & ENC_DECIMAL):
        return 3, 0, 0, np.int64(0), _U0, pos
    n = np.int64(buf[pos + 2]) | (np.int64(buf[pos + 3]) << 8)
    if n == 0:
        return 4, 0, 0, np.int64(0), _U0, pos
    t0u = _U0
    for j in range(8):
        t0u |= np.uint64(buf[pos + 4 + j]) << np.uint64(8 * j)
    span, p = _get_uvarint(buf, pos + 12, end)
    if p < 0:
        return 10, 0, 0, np.int64(0), _U0, pos
    return 0, n, enc, np.int64(t0u), span, p


@kernel(cache=True, inline="always")
def _valid_tiers(w1, w2):
    if w2 == SINGLE_TIER:
        return w1 <= 64
    return w1 < w2 and w2 <= 64


@kernel(cache=True)
def _get_stream_params(buf, p, end, order):
    """(err, base, offset, w1, w2, new position) of one integer stream."""
    zb, p = _get_uvarint(buf, p, end)
    if p < 0:
        return 10, np.int64(0), np.int64(0), 0, 0, p
    zo = _U0
    if order == 3:
        zo, p = _get_uvarint(buf, p, end)
        if p < 0:
            return 10, np.int64(0), np.int64(0), 0, 0, p
    if p + 2 > end:
        return 1, np.int64(0), np.int64(0), 0, 0, p
    w1 = np.int64(buf[p])
    w2 = np.int64(buf[p + 1])
    if not _valid_tiers(w1, w2):
        return 5, np.int64(0), np.int64(0), 0, 0, p
    return 0, _unzigzag(zb), _unzigzag(zo), w1, w2, p + 2


# _decode_one modes: the chunk must hold its own timestamps (FULL), or be
# decoded with shared timestamps the caller put in ts_out (SHARED), or only
# its timestamps are wanted, to be shared with other chunks (TS_ONLY).
_FULL = 0
_SHARED = 1
_TS_ONLY = 2


@kernel(cache=True)
def _decode_one(buf, pos, end, ts_out, vb_out, mode):
    """Decode the chunk in buf[pos:end] into the outputs; returns an error code."""
    err, n, enc, t0, span, p = _parse_header(buf, pos, end)
    if err:
        return err
    t_order = (enc >> TS_ORDER_SHIFT) & 3
    external = t_order == TS_EXTERNAL
    if external != (mode == _SHARED):
        return 13 if mode == _SHARED else 12
    if n != ts_out.shape[0]:
        return 13
    t_base = np.int64(0)
    t_off = np.int64(0)
    t_w1 = 0
    t_w2 = 0
    if not external:
        err, t_base, t_off, t_w1, t_w2, p = _get_stream_params(buf, p, end, t_order)
        if err:
            return err
    decimal = (enc & ENC_DECIMAL) != 0
    v_order = (enc >> VALUE_ORDER_SHIFT) & 3
    k = 0
    m0 = np.int64(0)
    g = np.int64(1)
    v_base = np.int64(0)
    v_off = np.int64(0)
    v_w1 = 0
    v_w2 = 0
    first = _U0
    if decimal:
        if p >= end:
            return 1
        k = np.int64(buf[p])
        if k > MAX_SCALE:
            return 6
        zm, p = _get_uvarint(buf, p + 1, end)
        if p < 0:
            return 10
        m0 = _unzigzag(zm)
        if enc & ENC_VALUE_SCALE:
            zg, p = _get_uvarint(buf, p, end)
            if p < 0:
                return 10
            g = np.int64(zg)
            if zg < np.uint64(2) or zg >= np.uint64(1 << 62):
                return 11
        err, v_base, v_off, v_w1, v_w2, p = _get_stream_params(buf, p, end, v_order)
        if err:
            return err
    else:
        if p + 8 > end:
            return 1
        for j in range(8):
            first |= np.uint64(buf[p + j]) << np.uint64(8 * j)
        p += 8
    addr = buf.ctypes.data
    bp = p * 8
    if external:
        if ts_out[0] != t0:
            return 13
    else:
        bp = _read_int_stream(addr, bp, end, t0, n, t_order, t_base, t_off, t_w1, t_w2, ts_out)
    if np.uint64(ts_out[n - 1] - ts_out[0]) != span:
        return 13 if external else 9
    if mode == _TS_ONLY:
        return 7 if bp > end * 8 else 0
    if decimal:
        # Mantissas (or, scaled, the steps y_i with m_i = m_0 + g*y_i) land in
        # the output buffer and are converted in place.
        mant = vb_out.view(np.int64)
        if g > 1:
            bp = _read_int_stream(addr, bp, end, np.int64(0), n, v_order, v_base, v_off, v_w1, v_w2, mant)
            for i in range(n):
                mant[i] = m0 + g * mant[i]
        else:
            bp = _read_int_stream(addr, bp, end, m0, n, v_order, v_base, v_off, v_w1, v_w2, mant)
        vf_out = vb_out.view(np.float64)
        if k == 0:
            for i in range(n):
                vf_out[i] = np.float64(mant[i])
        else:
            pw = _POW10[k]
            for i in range(n):
                vf_out[i] = np.float64(mant[i]) / pw
    else:
        bp = _read_xor(addr, bp, end, first, n, vb_out)
    if bp > end * 8:
        return 7
    if (bp + 7) // 8 != end:
        return 8
    return 0


@kernel(cache=True, nogil=True)
def _count_many(data, offsets, lengths):
    """Fill lengths from the chunk headers; returns (err, chunk index)."""
    k = offsets.shape[0] - 1
    for c in range(k):
        s = offsets[c]
        e = offsets[c + 1]
        if e - s < 4 or s < 0 or e > data.shape[0]:
            return 1, c
        lengths[c] = np.int64(data[s + 2]) | (np.int64(data[s + 3]) << 8)
    return 0, 0


@kernel(cache=True, inline="always")
def _count_stale(vb, s, e):
    """How many of vb[s:e] are the staleness marker's bits."""
    n = 0
    for j in range(s, e):
        if vb[j] == STALE_NAN_U64:
            n += 1
    return n


@kernel(cache=True, nogil=True)
def _decode_many(data, offsets, positions, dest, lengths, ts, vb, ts_ref, ts_data, ts_offsets):
    """Decode chunk positions[i] of (data, offsets) into ts/vb[dest[i] :
    dest[i] + lengths[i]] for every i; chunk c with ts_ref[c] >= 0 (ts_ref
    may be empty: none) takes its timestamps from chunk ts_ref[c] of
    (ts_data, ts_offsets), decoded once per call and copied for the other
    chunks sharing them. Returns (err, i, staleness markers among the
    values: only Gorilla-coded chunks can hold them, a decimal never is one)."""
    k = positions.shape[0]
    n_chunks = offsets.shape[0] - 1
    shared = ts_ref.shape[0] > 0
    size = 1
    if shared:
        while size < 2 * k:
            size *= 2
    # Open addressing: source chunk -> where its timestamps were decoded.
    src_key = np.full(size, -1, np.int64)
    src_pos = np.empty(size, np.int64)
    src_len = np.empty(size, np.int64)
    stale = 0
    for i in range(k):
        c = positions[i]
        if c < 0 or c >= n_chunks:
            return 15, i, stale
        if offsets[c] < 0 or offsets[c + 1] > data.shape[0]:
            return 1, i, stale
        s = dest[i]
        e = s + lengths[i]
        if s < 0 or e > ts.shape[0] or e > vb.shape[0]:
            return 14, i, stale
        mode = np.int64(_FULL)
        if shared and ts_ref[c] >= 0:
            r = ts_ref[c]
            if r + 1 >= ts_offsets.shape[0] or ts_offsets[r] < 0 or ts_offsets[r + 1] > ts_data.shape[0]:
                return 13, i, stale
            j = (r * 0x9E3779B1) & (size - 1)
            while src_key[j] >= 0 and src_key[j] != r:
                j = (j + 1) & (size - 1)
            if src_key[j] == r:
                if e - s != src_len[j]:
                    return 13, i, stale
                p = src_pos[j]
                ts[s:e] = ts[p : p + (e - s)]
            else:
                err = _decode_one(ts_data, ts_offsets[r], ts_offsets[r + 1], ts[s:e], vb[s:e], _TS_ONLY)
                if err:
                    return err, i, stale
                src_key[j] = r
                src_pos[j] = s
                src_len[j] = e - s
            mode = np.int64(_SHARED)
        err = _decode_one(data, offsets[c], offsets[c + 1], ts[s:e], vb[s:e], mode)
        if err:
            return err, i, stale
        if not data[offsets[c] + 1] & ENC_DECIMAL:
            stale += _count_stale(vb, s, e)
    return 0, 0, stale


@kernel(cache=True)
def _find_shared(ts, starts):
    """First earlier chunk with identical timestamps per chunk (-1: none),
    by an open-addressing table of (count, first, last, content hash)."""
    k = starts.shape[0] - 1
    ref = np.full(k, -1, np.int64)
    size = 1
    while size < 2 * k:
        size *= 2
    slots = np.full(size, -1, np.int64)
    hashes = np.empty(k, np.uint64)
    for c in range(k):
        s = starts[c]
        e = starts[c + 1]
        h = np.uint64(e - s) * np.uint64(0x9E3779B97F4A7C15)
        for i in range(s, e):
            h = (h ^ np.uint64(ts[i] - ts[s])) * np.uint64(0xFF51AFD7ED558CCD)
            h ^= h >> np.uint64(29)
        h ^= np.uint64(ts[s]) * np.uint64(0xC4CEB9FE1A85EC53)
        hashes[c] = h
        j = np.int64(h & np.uint64(size - 1))
        while True:
            o = slots[j]
            if o < 0:
                slots[j] = c
                break
            if hashes[o] == h and _same_run(ts, starts[o], starts[o + 1], s, e):
                ref[c] = o
                break
            j = (j + 1) & (size - 1)
    return ref


@kernel(cache=True, inline="always")
def _same_run(ts, a0, a1, b0, b1):
    if a1 - a0 != b1 - b0:
        return False
    for i in range(a1 - a0):
        if ts[a0 + i] != ts[b0 + i]:
            return False
    return True


@kernel(cache=True)
def _valid_refs(ts, starts, ts_ref):
    k = starts.shape[0] - 1
    if ts_ref.shape[0] != k:
        return False
    for c in range(k):
        r = ts_ref[c]
        if r < 0:
            continue
        if r >= c or ts_ref[r] >= 0 or not _same_run(ts, starts[r], starts[r + 1], starts[c], starts[c + 1]):
            return False
    return True


# --------------------------------------------------------------------------
# Public API.


# "No chunk shares timestamps": the empty ts_ref the kernels take.
_NO_REFS = np.empty(0, np.int64)


def _as_bytes_array(buf: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """Contiguous uint8 view (the kernels address the bytes directly); read-only
    and writeable inputs are both compiled for by warm_up(), so no copy."""
    if isinstance(buf, np.ndarray):
        return np.ascontiguousarray(buf).view(np.uint8).reshape(-1)
    return np.frombuffer(buf, dtype=np.uint8)


_NO_REFS_RO = read_only(_NO_REFS)  # the decoder's kind of input


def _kernel_input(a: np.ndarray, dtype: type) -> np.ndarray:
    """a as a contiguous, aligned, read-only array, the kind the decoder's
    inputs are compiled for: a column of a segment (mapped read-only) goes
    in as it is, a view and not a copy, and no other specialisation is
    compiled in a request path."""
    if not (a.dtype == dtype and a.flags.c_contiguous and a.flags.aligned):
        a = np.require(a, dtype=dtype, requirements="CA")
    return read_only(a)


def _kernel_array(a: np.ndarray, dtype: type) -> np.ndarray:
    """a as a contiguous, aligned, writeable array: the one array type warm_up()
    compiled for, so no other specialisation is compiled in a request path."""
    if a.dtype == dtype and a.flags.c_contiguous and a.flags.aligned and a.flags.writeable:
        return a  # as it is, without np.require's overhead (light reads)
    return np.require(a, dtype=dtype, requirements="CAW")


def _check_samples(ts: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ts = _kernel_array(ts, np.int64)
    values = _kernel_array(values, np.float64)
    if ts.ndim != 1 or values.shape != ts.shape:
        raise ValueError("ts and values must be 1-d arrays of equal length")
    return ts, values


def encode_chunk(ts: np.ndarray, values: np.ndarray) -> bytes:
    """Encode one series' samples (1..65535, strictly increasing ts) as a chunk."""
    ts, values = _check_samples(ts, values)
    n = ts.shape[0]
    if not 1 <= n <= MAX_SAMPLES:
        raise ValueError(f"a chunk holds 1..{MAX_SAMPLES} samples, got {n}")
    if n > 1 and not bool(np.all(ts[1:] > ts[:-1])):
        raise ValueError("timestamps must be strictly increasing")
    starts = np.array([0, n], dtype=np.int64)
    data, offsets = _encode_checked(ts, values, starts, _NO_REFS)
    return data[: offsets[1]].tobytes()


def encode_chunks(
    ts: np.ndarray, values: np.ndarray, starts: np.ndarray, ts_ref: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Encode k chunks at once; chunk c is ts/values[starts[c]:starts[c+1]].

    Returns (data uint8, offsets int64[k+1]): chunk c is data[offsets[c]:offsets[c+1]].
    Used when sealing a whole head, so one kernel call covers every series.
    With ts_ref (from shared_timestamps), chunk c with ts_ref[c] >= 0 is
    written without timestamps: they are those of chunk ts_ref[c].
    """
    ts, values = _check_samples(ts, values)
    starts = _kernel_array(starts, np.int64)
    if starts.ndim != 1 or starts.shape[0] < 1:
        raise ValueError("starts must be a 1-d array of k+1 boundaries")
    if starts[0] != 0 or starts[-1] != ts.shape[0]:
        raise ValueError("starts must begin at 0 and end at len(ts)")
    lengths = np.diff(starts)
    if lengths.size and (lengths.min() < 1 or lengths.max() > MAX_SAMPLES):
        raise ValueError(f"every chunk must hold 1..{MAX_SAMPLES} samples")
    if ts.shape[0] > 1:
        inc = ts[1:] > ts[:-1]
        inc[starts[1:-1] - 1] = True  # chunk boundaries may go backwards
        if not bool(inc.all()):
            raise ValueError("timestamps must be strictly increasing within a chunk")
    if ts_ref is None:
        ts_ref = _NO_REFS
    else:
        ts_ref = _kernel_array(ts_ref, np.int64)
        if not _valid_refs(ts, starts, ts_ref):
            raise ValueError("ts_ref[c] must be -1 or an earlier chunk with its own, identical timestamps")
    return _encode_checked(ts, values, starts, ts_ref)


def _encode_checked(
    ts: np.ndarray, values: np.ndarray, starts: np.ndarray, ts_ref: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    k = starts.shape[0] - 1
    out = np.empty(_max_encoded_len(ts.shape[0], k), dtype=np.uint8)
    offsets = np.empty(k + 1, dtype=np.int64)
    end = _encode_many(ts, values.view(np.uint64), values, starts, out, offsets, ts_ref)
    return out[:end].copy(), offsets


def shared_timestamps(ts: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """ts_ref for encode_chunks: for each chunk, the first earlier chunk with
    identical timestamps, or -1.

    All series of a scrape target share their scrape times, so in a file of
    many series most chunks repeat another chunk's timestamps exactly; with
    millisecond jitter those cost ~4 bits per sample each time. (Victoria-
    Metrics reuses identical timestamp blocks the same way.)"""
    ts = _kernel_array(ts, np.int64)
    starts = _kernel_array(starts, np.int64)
    return _find_shared(ts, starts)


def _raise(err: int, chunk: int | None = None) -> None:
    where = f" (chunk {chunk})" if chunk is not None else ""
    raise ChunkFormatError(f"corrupt chunk{where}: {_ERRORS.get(err, str(err))}")


def decode_chunk(buf: bytes | bytearray | memoryview | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode one chunk into (int64 timestamps, float64 values), bit-exact."""
    data = _as_bytes_array(buf)
    n = chunk_num_samples(data)
    ts = np.empty(n, dtype=np.int64)
    vb = np.empty(n, dtype=np.uint64)
    err = _decode_one(data, 0, data.shape[0], ts, vb, _FULL)
    if err:
        _raise(err)
    return ts, vb.view(np.float64)


def chunk_lengths(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sample count of each of k chunks (int64[k]), from their headers."""
    data = _as_bytes_array(data)
    offsets = _kernel_array(offsets, np.int64)
    k = offsets.shape[0] - 1
    if k < 0:
        raise ValueError("offsets must hold k+1 boundaries")
    lengths = np.empty(k, dtype=np.int64)
    err, c = _count_many(data, offsets, lengths)
    if err:
        _raise(err, int(c))
    return lengths


def decode_chunks(
    data: np.ndarray,
    offsets: np.ndarray,
    ts_ref: np.ndarray | None = None,
    ts_data: np.ndarray | None = None,
    ts_offsets: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode k chunks into concatenated (ts, values, starts int64[k+1]).

    Chunks encoded with shared timestamps (encode_chunks' ts_ref) need
    ts_ref[c] = the index of the chunk holding them in (ts_data, ts_offsets),
    -1 for chunks with their own."""
    lengths = chunk_lengths(data, offsets)
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    ts = np.empty(int(starts[-1]), dtype=np.int64)
    values = np.empty(int(starts[-1]), dtype=np.float64)
    decode_chunks_into(data, offsets, lengths, starts[:-1], ts, values, ts_ref, ts_data, ts_offsets)
    return ts, values, starts


def decode_chunks_into(
    data: np.ndarray,
    offsets: np.ndarray,
    lengths: np.ndarray,
    dest: np.ndarray,
    ts_out: np.ndarray,
    values_out: np.ndarray,
    ts_ref: np.ndarray | None = None,
    ts_data: np.ndarray | None = None,
    ts_offsets: np.ndarray | None = None,
    positions: np.ndarray | None = None,
) -> int:
    """Decode chunk positions[i] of (data, offsets) into ts_out/values_out[dest[i]
    : dest[i] + lengths[i]] (its sample count) for every i; positions default
    to all chunks in order. A read lays the chunks of all its sources out
    where their series' samples go, straight from the blocks that hold them:
    no gathering copy before decoding, none after.

    ts_ref, ts_data, ts_offsets as for decode_chunks (ts_ref indexed by the
    block's chunk positions). The outputs are writeable contiguous int64 and
    float64 arrays; a chunk whose place does not fit in them, or a position
    or offset outside the block, is a ChunkFormatError, never an access
    outside the arrays. Returns how many decoded values are staleness
    markers (counted in the decoding pass: a read need not scan for them)."""
    # The chunks' side as read-only views (segments are mapped read-only),
    # the outputs and the read's own arrays writeable: one specialisation.
    data = read_only(_as_bytes_array(data))
    offsets = _kernel_input(offsets, np.int64)
    if ts_ref is None:
        ts_ref, ts_data, ts_offsets = _NO_REFS_RO, data, offsets
    else:
        if ts_data is None or ts_offsets is None or len(ts_ref) != len(offsets) - 1:
            raise ValueError("ts_ref needs one entry per chunk, ts_data and ts_offsets")
        ts_ref = _kernel_input(ts_ref, np.int64)
        ts_data = read_only(_as_bytes_array(ts_data))
        ts_offsets = _kernel_input(ts_offsets, np.int64)
    positions = np.arange(len(offsets) - 1) if positions is None else _kernel_array(positions, np.int64)
    if len(offsets) < 1 or len(lengths) != len(positions) or len(dest) != len(lengths):
        raise ValueError("offsets need k+1 boundaries; positions, lengths and dest one entry per chunk")
    for a, dtype in ((ts_out, np.int64), (values_out, np.float64)):
        if a.dtype != dtype or not a.flags.c_contiguous or not a.flags.writeable:
            raise ValueError("outputs must be writeable contiguous int64 and float64 arrays")
    err, i, stale = _decode_many(
        data, offsets, positions, _kernel_array(dest, np.int64), _kernel_array(lengths, np.int64),
        ts_out, values_out.view(np.uint64), ts_ref, ts_data, ts_offsets,
    )
    if err:
        _raise(err, int(i) if err == 15 else int(positions[i]))
    return int(stale)


def chunk_num_samples(buf: bytes | bytearray | memoryview | np.ndarray) -> int:
    """Sample count from the header alone."""
    data = _as_bytes_array(buf)
    if data.shape[0] < 13:
        _raise(1)
    if not _OLDEST_VERSION <= int(data[0]) <= FORMAT_VERSION:
        _raise(2)
    n = int(data[2]) | (int(data[3]) << 8)
    if n == 0:
        _raise(4)
    return n


def chunk_time_range(buf: bytes | bytearray | memoryview | np.ndarray) -> tuple[int, int]:
    """(min, max) timestamp of a chunk, read from its header without decoding."""
    data = _as_bytes_array(buf)
    err, _, _, t0, span, _ = _parse_header(data, 0, data.shape[0])
    if err:
        _raise(int(err))
    t0 = int(t0)
    return t0, (t0 + int(span) + 2**63) % 2**64 - 2**63


def chunk_encoding(buf: bytes | bytearray | memoryview | np.ndarray) -> tuple[str, str, str]:
    """(value layout, timestamp order, value order) the encoder chose.

    Layout is 'xor' or 'decimal'; orders are names from ORDER_NAMES ('' for
    XOR values). For statistics and tests.
    """
    data = _as_bytes_array(buf)
    chunk_num_samples(data)
    enc = int(data[1])
    t_order = (enc >> TS_ORDER_SHIFT) & 3
    ts_order = "shared" if t_order == TS_EXTERNAL else ORDER_NAMES[t_order]
    if not enc & ENC_DECIMAL:
        return "xor", ts_order, ""
    return "decimal", ts_order, ORDER_NAMES[(enc >> VALUE_ORDER_SHIFT) & 3]


def chunk_value_encoding(buf: bytes | bytearray | memoryview | np.ndarray) -> str:
    """'xor' or 'decimal': which value layout the encoder chose."""
    return chunk_encoding(buf)[0]


def warm_up() -> None:
    """Compile (or load from cache) every kernel, so no request pays for it.

    Covers both value layouts, shared timestamps, and chunk buffers that are
    writeable arrays or read-only (bytes, read-only mmap; the decoder itself
    takes every chunk-side input read-only).
    """
    ts = np.array([0, 15_000, 30_001, 45_000, 10**12, 0, 15_000], dtype=np.int64)
    starts = np.array([0, 2, 5, 7], dtype=np.int64)
    for values in (
        np.array([1.0, 2.0, 4.0, 4.0, 9.0, 3.0, 3.0]),
        np.array([0.5, 1.25, np.nan, np.inf, -0.0, 0.5, 0.75]),
    ):
        encode_chunk(ts[:5], values[:5])
        data, offsets = encode_chunks(ts, values, starts)
        ts_ref = shared_timestamps(ts, starts)
        sdata, soffsets = encode_chunks(ts, values, starts, ts_ref)
        for buf, sbuf in ((data, sdata), (read_only(data), read_only(sdata))):
            decode_chunks(buf, offsets)
            decode_chunk(buf[offsets[1] : offsets[2]])
            chunk_time_range(buf[offsets[1] : offsets[2]])
            decode_chunks(sbuf, soffsets, ts_ref, sbuf, soffsets)
