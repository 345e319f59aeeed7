"""Compiled scanning of remote write 1.0 bodies (the hot path).

One Numba kernel walks the uncompressed `prometheus.WriteRequest` once per
pass and reports, for every TimeSeries message, where it lies, where its
label block lies and a 64-bit hash of the raw label bytes, and writes every
sample's timestamp and value bits into flat arrays. Labels are not parsed:
a steady-state series is recognised by its raw label bytes (see
athens/wire/cache.py); only unseen series are parsed, in Python, by the
reference decoder's own functions.

The kernel enforces exactly the structural rules of the reference decoder
(athens/wire/remote_write.py + protobuf.py): varints of at most 10 bytes,
no field number 0, only wire types 0, 1, 2 and 5, lengths inside their
message, `timeseries`/`labels`/`samples` length-delimited, sample value
fixed64 and timestamp varint. Unknown fields are skipped; exemplar (3)
fields of a TimeSeries must be length-delimited and are located, then read
by a second kernel (scan_exemplars) under the reference's rules for
Exemplar messages; histogram (4) fields are counted whatever their wire
type.
The inside of Label messages (framing, UTF-8, sorting, __name__) is checked
by the cold path when a label block is first seen; the verdict depends only
on the bytes, so a cache hit on identical bytes needs no second check.

One filling pass into reused scratch arrays (Scanner); a counting pass
first only when a body holds more series or samples than the scratch
arrays were sized for.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from athens.kernels import intrinsic, kernel, types
from athens.model.exemplars import exemplar_labels
from athens.model.labels import CanonicalLabels, Labels
from athens.wire.protobuf import ProtobufError, decode_utf8

# Error codes of the kernel -> messages (all 400 bad_data).
ERR_MESSAGES = {
    1: "truncated varint",
    2: "varint longer than 10 bytes",
    3: "invalid field number 0",
    4: "unsupported wire type",
    5: "truncated fixed64 field",
    6: "length-delimited field runs past the end of its message",
    7: "truncated fixed32 field",
    8: "timeseries has wire type {got}, want length-delimited",
    9: "label has wire type {got}, want length-delimited",
    10: "sample has wire type {got}, want length-delimited",
    11: "label name has wire type {got}, want length-delimited",
    12: "label value has wire type {got}, want length-delimited",
    13: "sample value has wire type {got}, want fixed64",
    14: "sample timestamp has wire type {got}, want varint",
    15: "exemplar has wire type {got}, want length-delimited",
    16: "exemplar label has wire type {got}, want length-delimited",
    17: "exemplar value has wire type {got}, want fixed64",
    18: "exemplar timestamp has wire type {got}, want varint",
    # remote write 2.0 (scan_v2.py)
    19: "symbol has wire type {got}, want length-delimited",
    20: "symbol is not valid UTF-8",
    21: "labels_refs has wire type {got}, want length-delimited",
    22: "symbol reference outside the symbols table",
    23: "odd number of label references",
    24: "metadata has wire type {got}, want length-delimited",
    25: "metadata field has wire type {got}, want varint",
    26: "created_timestamp has wire type {got}, want varint",
    27: "odd number of exemplar label references",
}
_WIRE_NAMES = {0: "varint", 1: "fixed64", 2: "length-delimited", 5: "fixed32"}

# A field number beyond 64 bits of key is still "some field we skip".
_BIG_FIELD = np.int64(1 << 60)

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@kernel(cache=True, inline="always")
def _varint(buf, pos, end):  # pragma: no cover - jitted
    """(value, new_pos, err, overflow): overflow = bits beyond 64 were set."""
    if pos < end and buf[pos] < 0x80:  # field keys and short lengths: one byte
        return np.uint64(buf[pos]), pos + 1, 0, False
    result = np.uint64(0)
    shift = 0
    overflow = False
    while True:
        if pos >= end:
            return result, pos, 1, overflow
        b = np.uint64(buf[pos])
        pos += 1
        if shift < 64:
            result |= (b & np.uint64(0x7F)) << np.uint64(shift)
            if shift == 63 and (b & np.uint64(0x7E)) != 0:
                overflow = True
        if b < 0x80:
            return result, pos, 0, overflow
        shift += 7
        if shift >= 70:
            return result, pos, 2, overflow


@kernel(cache=True, inline="always")
def _field(buf, pos, end):  # pragma: no cover - jitted
    """Read one field header and skip its payload.

    Returns (field, wire, value, start, stop, new_pos, err): value for varints,
    [start, stop) of the payload otherwise.
    """
    key, pos, err, ovf = _varint(buf, pos, end)
    if err:
        return 0, 0, np.uint64(0), 0, 0, pos, err
    wire = int(key & np.uint64(7))
    if ovf:
        field = _BIG_FIELD
    else:
        field = np.int64(key >> np.uint64(3))
    if field == 0:
        return 0, wire, np.uint64(0), 0, 0, pos, 3
    if wire == 0:
        v, pos, err, _o = _varint(buf, pos, end)
        return field, wire, v, pos, pos, pos, err
    if wire == 1:
        if pos + 8 > end:
            return field, wire, np.uint64(0), 0, 0, pos, 5
        return field, wire, np.uint64(0), pos, pos + 8, pos + 8, 0
    if wire == 2:
        n, pos, err, ovf = _varint(buf, pos, end)
        if err:
            return field, wire, np.uint64(0), 0, 0, pos, err
        if ovf or n > np.uint64(end - pos):
            return field, wire, np.uint64(0), 0, 0, pos, 6
        stop = pos + np.int64(n)
        return field, wire, np.uint64(0), pos, stop, stop, 0
    if wire == 5:
        if pos + 4 > end:
            return field, wire, np.uint64(0), 0, 0, pos, 7
        return field, wire, np.uint64(0), pos, pos + 4, pos + 4, 0
    return field, wire, np.uint64(0), 0, 0, pos, 4


@intrinsic
def _fixed64(typingctx, buf, pos):  # pragma: no cover - compiled
    """buf[pos:pos+8] as a little-endian uint64: one unaligned load (callers
    check the bounds). Assembling it from eight byte loads made hashing the
    label blocks twice as slow: LLVM does not merge them."""
    sig = types.uint64(buf, types.intp)

    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(arr.data, [args[1]]), ir.IntType(64).as_pointer())
        value = builder.load(ptr, align=1)
        return builder.bswap(value) if sys.byteorder == "big" else value

    return sig, codegen


@kernel(cache=True)
def _fmix(h):  # pragma: no cover - jitted
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@kernel(cache=True)
def hash_bytes(buf, start, end):  # pragma: no cover - jitted
    """128-bit hash of buf[start:end] as two 64-bit lanes.

    Two independent multiply-rotate lanes over 8-byte words (they run in
    parallel, so the second lane is nearly free), each finished with the
    murmur3 finaliser. athens/wire/cache.py keys series on both lanes; see
    docs/ingest.md for why 128 bits make collisions a non-issue.
    """
    n = np.uint64(end - start)
    h1 = n * _FNV_PRIME ^ _FNV_OFFSET
    h2 = n ^ np.uint64(0x6A09E667F3BCC908)
    i = start
    while i + 8 <= end:
        w = _fixed64(buf, i)
        h1 = (h1 ^ w) * np.uint64(0x9E3779B97F4A7C15)
        h1 = (h1 << np.uint64(31)) | (h1 >> np.uint64(33))
        h2 = (h2 + w) * np.uint64(0xC2B2AE3D27D4EB4F)
        h2 = (h2 << np.uint64(29)) | (h2 >> np.uint64(35))
        i += 8
    tail = np.uint64(0)
    k = 0
    while i < end:
        tail |= np.uint64(buf[i]) << np.uint64(8 * k)
        i += 1
        k += 1
    h1 = (h1 ^ tail) * np.uint64(0x9E3779B97F4A7C15)
    h2 = (h2 + tail) * np.uint64(0xC2B2AE3D27D4EB4F)
    return _fmix(h1), _fmix(h2 ^ h1)


@kernel(cache=True)
def label_fields(buf, ser_start, ser_end, which, out, counts):  # pragma: no cover - jitted
    """Name/value byte ranges of the labels of the series `which` (cold path).

    out[k] = (name_start, name_end, value_start, value_end) of the k-th label
    (-1 bounds: field absent, i.e. ""), counts[i] = labels of which[i].
    Returns (err, wire): the framing rules of the reference decoder's
    _decode_labels (name and value length-delimited; unknown fields skipped;
    a repeated field's last occurrence wins).
    """
    k = 0
    for q in range(which.shape[0]):
        i = which[q]
        p = ser_start[i]
        end = ser_end[i]
        c = 0
        while p < end:
            f, w, _v, a, b, p, err = _field(buf, p, end)
            if err:
                return err, w
            if f != 1:
                continue
            if w != 2:
                return 9, w
            out[k, 0] = -1
            out[k, 1] = -1
            out[k, 2] = -1
            out[k, 3] = -1
            r = a
            while r < b:
                f2, w2, _v2, a2, b2, r, err = _field(buf, r, b)
                if err:
                    return err, w2
                if f2 == 1:
                    if w2 != 2:
                        return 11, w2
                    out[k, 0] = a2
                    out[k, 1] = b2
                elif f2 == 2:
                    if w2 != 2:
                        return 12, w2
                    out[k, 2] = a2
                    out[k, 3] = b2
            k += 1
            c += 1
        counts[q] = c
    return 0, 0


@kernel(cache=True)
def _bytes_cmp(buf, a0, a1, b0, b1):  # pragma: no cover - jitted
    """-1, 0, 1: buf[a0:a1] vs buf[b0:b1] byte-wise (= code point order for UTF-8)."""
    n = min(a1 - a0, b1 - b0)
    for k in range(n):
        x = buf[a0 + k]
        y = buf[b0 + k]
        if x != y:
            return -1 if x < y else 1
    la = a1 - a0
    lb = b1 - b0
    return 0 if la == lb else (-1 if la < lb else 1)


_NAME = np.frombuffer(b"__name__", np.uint8)


@kernel(cache=True)
def _valid_utf8(buf, a, b):  # pragma: no cover - jitted
    """Whether buf[a:b] is UTF-8 as Python's strict decoder accepts it
    (no overlong forms, no surrogates, nothing above U+10FFFF)."""
    i = a
    while i < b:
        c = buf[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            n, lo, hi = 1, 0x80, 0xBF
        elif c == 0xE0:
            n, lo, hi = 2, 0xA0, 0xBF
        elif c == 0xED:
            n, lo, hi = 2, 0x80, 0x9F
        elif 0xE1 <= c <= 0xEF:
            n, lo, hi = 2, 0x80, 0xBF
        elif c == 0xF0:
            n, lo, hi = 3, 0x90, 0xBF
        elif 0xF1 <= c <= 0xF3:
            n, lo, hi = 3, 0x80, 0xBF
        elif c == 0xF4:
            n, lo, hi = 3, 0x80, 0x8F
        else:
            return False
        if i + n >= b:
            return False
        if not (lo <= buf[i + 1] <= hi):
            return False
        for t in range(i + 2, i + 1 + n):
            if not (0x80 <= buf[t] <= 0xBF):
                return False
        i += 1 + n
    return True


@kernel(cache=True)
def canon_kernel(buf, ser_start, ser_end, which, rng, out, offs, name):  # pragma: no cover - jitted
    """Validate the labels of the series `which` and write each one's canonical
    encoding `name 0xff value 0xff ...` (empty values dropped) into out,
    series q at out[offs[q]:offs[q+1]] -- the bytes series_hash() hashes.

    The rules of validate_label_pairs: non-empty names, strictly increasing
    (byte order of UTF-8 is code point order), __name__ with a value, names
    and values valid UTF-8 (so the bytes can be used without decoding).
    Returns (err, wire, q): 0 or an error code (20 empty name, 21 unsorted,
    22 duplicate, 23 no __name__, 24 not UTF-8, or a framing code) and the
    series.
    """
    err, wire = label_fields(buf, ser_start, ser_end, which, rng, offs[1:])
    if err:
        return err, wire, -1
    k = 0
    o = 0
    offs[0] = 0
    for q in range(which.shape[0]):
        c = offs[q + 1]
        has_name = False
        for j in range(k, k + c):
            na = rng[j, 0]
            nb = rng[j, 1]
            if na < 0 or nb == na:
                return 20, 0, q
            if j > k:
                pa = rng[j - 1, 0]
                pb = rng[j - 1, 1]
                d = _bytes_cmp(buf, pa, pb, na, nb)
                if d == 0:
                    return 22, 0, q
                if d > 0:
                    return 21, 0, q
            va = rng[j, 2]
            vb = rng[j, 3]
            if not _valid_utf8(buf, na, nb):
                return 24, 0, q
            if va < 0 or vb == va:
                continue  # dropped (its name still had to be valid)
            if not _valid_utf8(buf, va, vb):
                return 24, 0, q
            if nb - na == 8:
                eq = True
                for t in range(8):
                    if buf[na + t] != name[t]:
                        eq = False
                        break
                if eq:
                    has_name = True
            for t in range(na, nb):
                out[o] = buf[t]
                o += 1
            out[o] = 0xFF
            o += 1
            for t in range(va, vb):
                out[o] = buf[t]
                o += 1
            out[o] = 0xFF
            o += 1
        if not has_name:
            return 23, 0, q
        k += c
        offs[q + 1] = o
    return 0, 0, -1


_CANON_ERRORS = {
    20: "label with empty name",
    21: "label names not sorted",
    22: "duplicate label name",
    23: "series has no __name__ label",
    24: "label name or value is not valid UTF-8",
}


def canonical_labels(sc: Scan, which: np.ndarray) -> tuple[bytes, list[int]]:
    """Canonical label bytes of the series `which` and their offsets; raises
    BadDataError (400) as validate_label_pairs would."""
    return _canonical(sc.buf, sc.ser_start, sc.ser_end, which)


def _canonical(
    buf: np.ndarray, ser_start: np.ndarray, ser_end: np.ndarray, which: np.ndarray
) -> tuple[bytes, list[int]]:
    from athens.errors import BadDataError  # noqa: PLC0415

    size = int((ser_end[which] - ser_start[which]).sum())
    rng = np.empty((size // 2 + 1, 4), np.int64)
    out = np.empty(size + 16, np.uint8)
    offs = np.empty(len(which) + 1, np.int64)
    err, wire, q = canon_kernel(buf, ser_start, ser_end, which, rng, out, offs, _NAME)
    if err in _CANON_ERRORS:
        raise BadDataError(f"{_CANON_ERRORS[err]} in series #{int(which[q])} of the request")
    if err:
        _raise(err, wire)
    return out[: offs[-1]].tobytes(), offs.tolist()


class ScannedLabels(CanonicalLabels):
    """The label sets of a request's series (TimeSeries at buf[ser_start[i]:
    ser_end[i]]), canonicalized when first read.

    The router's series cache keeps no label bytes, so a batch takes them
    from its own request, and only when a worker has to be taught one of
    its refs (a new series, a reconnected worker): in the steady state
    nothing is copied or canonicalized. `source` gives the request's
    uncompressed bytes again (decompressing the body a second time), since
    the decoder's buffer is reused by the next request.
    """

    __slots__ = ("_ser_end", "_ser_start", "_source")

    def __init__(self, source: Callable[[], np.ndarray], ser_start: np.ndarray, ser_end: np.ndarray) -> None:
        super().__init__(None, (), ())
        self._source = source
        self._ser_start = ser_start
        self._ser_end = ser_end

    def __len__(self) -> int:
        return len(self._ser_start)

    def block(self, i: int) -> bytes:
        if self._data is None:
            which = np.arange(len(self._ser_start), dtype=np.int64)
            data, offs = _canonical(self._source(), self._ser_start, self._ser_end, which)
            self._data, self._starts, self._ends = data, offs[:-1], offs[1:]
        return super().block(i)


@kernel(cache=True)
def scan_write_request(
    buf, end, fill,
    ser_start, ser_end, lab_start, lab_end, lab_hash, lab_hash2, nsamp,
    ts_out, bits_out, meta_start, meta_end, ex_ser, ex_start, ex_end,
):  # pragma: no cover - jitted
    """Walk a WriteRequest. Returns (err, err_pos, err_wire, n_series, n_samples,
    n_meta, exemplars, histograms).

    With fill=False only counts (output arrays may be empty); with fill=True
    the arrays must be sized from a counting pass. lab_start is -1 when a
    series' label fields are not contiguous (it then never enters the cache).
    Exemplar messages are only located (their series, their bounds):
    scan_exemplars reads them.
    """
    pos = 0
    ns = 0
    nsm = 0
    nm = 0
    exemplars = 0
    histograms = 0
    while pos < end:
        field, wire, _v, a, b, pos, err = _field(buf, pos, end)
        if err:
            return err, pos, wire, 0, 0, 0, 0, 0
        if field == 3 and wire == 2:
            if fill:
                if nm >= meta_start.shape[0]:
                    return -1, pos, 0, 0, 0, 0, 0, 0
                meta_start[nm] = a
                meta_end[nm] = b
            nm += 1
            continue
        if field != 1:
            continue
        if wire != 2:
            return 8, pos, wire, 0, 0, 0, 0, 0
        # One TimeSeries in [a, b).
        ls = -1
        le = -1
        contiguous = True
        prev_label = False
        first_sample = nsm
        p = a
        while p < b:
            fstart = p
            if buf[p] == 0x0A and p + 1 < b and buf[p + 1] < 0x80 and p + 2 + buf[p + 1] <= b:
                # Fast path of the branch below: a Label under 128 bytes.
                if ls < 0:
                    ls = fstart
                elif not prev_label:
                    contiguous = False
                p += 2 + buf[p + 1]
                le = p
                prev_label = True
                continue
            if (buf[p] == 0x12 and p + 1 < b and 11 <= buf[p + 1] < 0x80 and p + 2 + buf[p + 1] <= b
                    and buf[p + 2] == 0x09 and buf[p + 11] == 0x10):
                # Fast path of the Sample branch below: value, then timestamp, nothing else.
                e2 = p + 2 + np.int64(buf[p + 1])
                tsv, q, err, _o = _varint(buf, p + 12, e2)
                if err == 0 and q == e2:
                    if fill:
                        if nsm >= ts_out.shape[0]:
                            return -1, p, 0, 0, 0, 0, 0, 0
                        ts_out[nsm] = np.int64(tsv)
                        bits_out[nsm] = _fixed64(buf, p + 3)
                    nsm += 1
                    prev_label = False
                    p = e2
                    continue
            f2, w2, _v2, a2, b2, p, err = _field(buf, p, b)
            if err:
                return err, p, w2, 0, 0, 0, 0, 0
            if f2 == 1:
                if w2 != 2:
                    return 9, p, w2, 0, 0, 0, 0, 0
                if ls < 0:
                    ls = fstart
                elif not prev_label:
                    contiguous = False
                le = p
                prev_label = True
                continue
            prev_label = False
            if f2 == 2:
                if w2 != 2:
                    return 10, p, w2, 0, 0, 0, 0, 0
                if not fill:
                    nsm += 1
                    continue
                if nsm >= ts_out.shape[0]:
                    return -1, p, 0, 0, 0, 0, 0, 0
                value = np.uint64(0)
                ts = np.uint64(0)
                q = a2
                while q < b2:
                    f3, w3, v3, a3, _b3, q, err = _field(buf, q, b2)
                    if err:
                        return err, q, w3, 0, 0, 0, 0, 0
                    if f3 == 1:
                        if w3 != 1:
                            return 13, q, w3, 0, 0, 0, 0, 0
                        value = _fixed64(buf, a3)
                    elif f3 == 2:
                        if w3 != 0:
                            return 14, q, w3, 0, 0, 0, 0, 0
                        ts = v3
                ts_out[nsm] = np.int64(ts)
                bits_out[nsm] = value
                nsm += 1
            elif f2 == 3:
                if w2 != 2:
                    return 15, p, w2, 0, 0, 0, 0, 0
                if fill:
                    if exemplars >= ex_ser.shape[0]:
                        return -1, p, 0, 0, 0, 0, 0, 0
                    ex_ser[exemplars] = ns
                    ex_start[exemplars] = a2
                    ex_end[exemplars] = b2
                exemplars += 1
            elif f2 == 4:
                histograms += 1
        if fill:
            if ns >= ser_start.shape[0]:
                return -1, pos, 0, 0, 0, 0, 0, 0
            ser_start[ns] = a
            ser_end[ns] = b
            nsamp[ns] = nsm - first_sample
            if ls >= 0 and contiguous:
                lab_start[ns] = ls
                lab_end[ns] = le
                h1, h2 = hash_bytes(buf, ls, le)
                lab_hash[ns] = h1
                lab_hash2[ns] = h2
            else:
                lab_start[ns] = -1
                lab_end[ns] = -1
                lab_hash[ns] = np.uint64(0)
                lab_hash2[ns] = np.uint64(0)
        ns += 1
    return 0, pos, 0, ns, nsm, nm, exemplars, histograms


@kernel(cache=True)
def scan_exemplars(buf, ex_start, ex_end, label_bounds, n_labels, value_bits, ts_out):  # pragma: no cover - jitted
    """Walk the Exemplar messages buf[ex_start[e]:ex_end[e]] as the reference
    decoder (remote_write.decode_exemplar) reads them: each one's labels'
    name and value bounds in order (label_bounds[:, j] = name start, end,
    value start, end; -1 for an absent one, which reads as ""), n_labels[e]
    of them, the value's bits and the timestamp (the last of each field
    wins). Returns (err, err_wire, labels in all); label_bounds must have
    a column per Label field, which ex_end - ex_start bounds (2 bytes a field)."""
    j = 0
    for e in range(ex_start.shape[0]):
        p = ex_start[e]
        b = ex_end[e]
        nl = 0
        value = np.uint64(0)
        ts = np.uint64(0)
        while p < b:
            f, w, v, a2, b2, p, err = _field(buf, p, b)
            if err:
                return err, w, 0
            if f == 1:
                if w != 2:
                    return 16, w, 0
                ns = ne = vs = ve = -1
                q = a2
                while q < b2:
                    f3, w3, _v3, a3, b3, q, err = _field(buf, q, b2)
                    if err:
                        return err, w3, 0
                    if f3 == 1:
                        if w3 != 2:
                            return 11, w3, 0
                        ns = a3
                        ne = b3
                    elif f3 == 2:
                        if w3 != 2:
                            return 12, w3, 0
                        vs = a3
                        ve = b3
                label_bounds[0, j] = ns
                label_bounds[1, j] = ne
                label_bounds[2, j] = vs
                label_bounds[3, j] = ve
                j += 1
                nl += 1
            elif f == 2:
                if w != 1:
                    return 17, w, 0
                value = _fixed64(buf, a2)
            elif f == 3:
                if w != 0:
                    return 18, w, 0
                ts = v
        n_labels[e] = nl
        value_bits[e] = value
        ts_out[e] = np.int64(ts)
    return 0, 0, j


def decode_exemplars(
    buf: np.ndarray, data: bytes, ex_start: np.ndarray, ex_end: np.ndarray
) -> list[tuple[Labels, int, float]]:
    """What remote_write.decode_exemplar reads from each Exemplar message
    data[ex_start[e]:ex_end[e]] (buf: the same bytes as uint8), located by
    one kernel pass: Python only makes the strings and label sets."""
    n = len(ex_start)
    bounds = np.empty((4, int((ex_end - ex_start).sum()) // 2 + 1), np.int64)
    n_labels = np.empty(n, np.int64)
    bits = np.empty(n, np.uint64)
    ts = np.empty(n, np.int64)
    err, wire, _ = scan_exemplars(buf, ex_start, ex_end, bounds, n_labels, bits, ts)
    if err:
        _raise(err, wire)
    out = []
    j = 0
    for k, t, v in zip(n_labels.tolist(), ts.tolist(), bits.view(np.float64).tolist()):
        pairs = []
        for ns, ne, vs, ve in bounds[:, j : j + k].T.tolist():
            name = decode_utf8(data, ns, ne, "label name") if ns >= 0 else ""
            pairs.append((name, decode_utf8(data, vs, ve, "label value") if vs >= 0 else ""))
        j += k
        out.append((exemplar_labels(pairs), t, v))
    return out


@dataclass(slots=True)
class Scan:
    """What scan() found in one body: per-series positions and all samples."""

    buf: np.ndarray  # uint8 view of the body
    ser_start: np.ndarray  # int64[s] TimeSeries message bounds
    ser_end: np.ndarray
    lab_start: np.ndarray  # int64[s] raw label block, -1 if not contiguous/absent
    lab_end: np.ndarray
    lab_hash: np.ndarray  # uint64[s], 128-bit hash of the raw label block: low lane
    lab_hash2: np.ndarray  # uint64[s], high lane
    nsamp: np.ndarray  # int64[s]
    ts: np.ndarray  # int64[n]
    values: np.ndarray  # float64[n]
    meta_start: np.ndarray  # top-level metadata fields (field 3)
    meta_end: np.ndarray
    ex_ser: np.ndarray  # int64[e]: each exemplar's series (index into ser_*)
    ex_start: np.ndarray  # int64[e]: its Exemplar message's bounds
    ex_end: np.ndarray
    histograms: int

    @property
    def num_series(self) -> int:
        return int(self.ser_start.shape[0])


_E64 = np.empty(0, np.int64)
_EU64 = np.empty(0, np.uint64)


def _raise(err: int, wire: int) -> None:
    msg = ERR_MESSAGES.get(err, f"malformed protobuf (code {err})")
    raise ProtobufError(msg.format(got=_WIRE_NAMES.get(wire, wire)))


class Scanner:
    """scan() with reused output arrays: one pass per body in the steady state.

    The filling pass runs first on scratch arrays sized from the body length
    (one series per 64 body bytes and one sample per 12; Prometheus sends
    about 200 and 20); only when a body has more series or samples than
    that does a counting pass size them exactly. Samples are copied out (the
    batch outlives the call); per-series arrays are views, valid until the
    next call. Bodies over 16 MiB are counted first, and scratch arrays grown
for such a rare huge body are dropped after it.
    """

    KEEP_SERIES = 1 << 18
    KEEP_SAMPLES = 1 << 21
    # Bodies above this are counted first: estimates from their size would
    # allocate far more than they hold.
    ESTIMATE_BYTES = 16 << 20

    def __init__(self) -> None:
        self._cap_series = 0
        self._cap_samples = 0
        self._grow(4096, 16384)

    def _grow(self, ns: int, nsm: int) -> None:
        if ns > self._cap_series:
            self._cap_series = ns
            self._ser = np.empty((4, ns), np.int64)  # ser_start, ser_end, lab_start, lab_end
            self._hash = np.empty((2, ns), np.uint64)
            self._nsamp = np.empty(ns, np.int64)
            self._meta = np.empty((2, ns), np.int64)
            self._ex = np.empty((3, ns), np.int64)  # ex_ser, ex_start, ex_end
        if nsm > self._cap_samples:
            self._cap_samples = nsm
            self._ts = np.empty(nsm, np.int64)
            self._bits = np.empty(nsm, np.uint64)

    def scan(self, buf: np.ndarray, end: int) -> Scan:
        """Scan buf[:end] (uint8) as a WriteRequest; raises ProtobufError (400)."""
        if end <= self.ESTIMATE_BYTES:
            self._grow(end // 64 + 16, end // 12 + 16)
            r = self._run(buf, end)
        else:
            r = (-1,)
        if r[0] == -1:  # more series or samples than the estimate: count first
            err, _pos, wire, ns, nsm, nm, nex, _hi = scan_write_request(
                buf, end, False, _E64, _E64, _E64, _E64, _EU64, _EU64, _E64, _E64, _EU64, _E64, _E64,
                _E64, _E64, _E64,
            )
            if err:
                _raise(err, wire)
            self._grow(max(ns, nm, nex), nsm)
            r = self._run(buf, end)
        err, _pos, wire, ns, nsm, nm, nex, hi = r
        if err:
            _raise(err, wire)
        ser, hsh, meta, nsamp, ts, bits = self._ser, self._hash, self._meta, self._nsamp, self._ts, self._bits
        ex = self._ex[:, :nex].copy()
        if self._cap_series > self.KEEP_SERIES or self._cap_samples > self.KEEP_SAMPLES:
            self._cap_series = self._cap_samples = 0
            self._grow(4096, 16384)
        return Scan(
            buf[:end], ser[0, :ns], ser[1, :ns], ser[2, :ns], ser[3, :ns], hsh[0, :ns], hsh[1, :ns],
            nsamp[:ns], ts[:nsm].copy(), bits[:nsm].view(np.float64).copy(),
            meta[0, :nm], meta[1, :nm], ex[0], ex[1], ex[2], hi,
        )

    def _run(self, buf: np.ndarray, end: int) -> tuple[int, ...]:
        ser, hsh, meta = self._ser, self._hash, self._meta
        return scan_write_request(
            buf, end, True, ser[0], ser[1], ser[2], ser[3], hsh[0], hsh[1], self._nsamp,
            self._ts, self._bits, meta[0], meta[1], self._ex[0], self._ex[1], self._ex[2],
        )
