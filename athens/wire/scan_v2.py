"""Compiled remote write 2.0: a 2.0 Request rewritten as the 1.0
WriteRequest it stands for, which the 1.0 path (scan.py, cache.py) then
decodes as it decodes any 1.0 body.

A 2.0 series names its labels by references into the request's string
table, so its raw label bytes (what the 1.0 series cache keys on) do not
exist until they are written out. Two kernels do that in whole-body
passes: scan_top finds the symbols (checking their UTF-8, as the reference
decodes every symbol) and the TimeSeries messages; transcode writes each
TimeSeries as a 1.0 TimeSeries:

- labels as Label messages, first and contiguous, so a series sent again
  is the same label block and a cache hit;
- Sample messages copied as they are: the two versions define Sample alike;
- exemplars with their labels written out and their value and timestamp
  fields copied as they are (the 1.0 path then applies the reference's
  rules to them);
- histograms counted; metadata's type, help and unit references returned
  per series, created timestamps checked and dropped.

The checks are those of the reference decoder (remote_write_v2.py):
framing as in scan.py, `symbols`/`timeseries`/`samples`/`exemplars`/
`metadata` length-delimited, label references packed or single varints,
an even number of them, each inside the table (2^63 and above never are), metadata fields 1, 3 and 4 and created_timestamp varints. The
property tests in tests/wire hold the two decoders equal, broken bodies
included. A 1.0 body of a 2.0 request is about 2-5x its size (label
strings where there were references).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from athens.errors import TooLargeError
from athens.kernels import kernel
from athens.wire.metadata_pb import METRIC_TYPES, MetricMetadata
from athens.wire.scan import _NAME, _raise, _valid_utf8
from athens.wire.scan import _field as _field_inline
from athens.wire.scan import _varint as _varint_inline

# A reference (or metadata type) of 2^63 or more: outside any table.
_TOP = np.uint64(1 << 63)
_OUT_OF_TABLE = -1
# The 1.0 body is first written into this many bytes per 2.0 byte (again,
# sized exactly, in the rare request whose labels take more).
OUT_PER_BYTE = 4


# scan.py's readers are inlined where they are called: in the walks over
# every series (a call passing arrays costs reference counting: called, a
# quarter more of the router's CPU for 2.0 requests as built ahead of
# time), and one called copy serves the rare paths (exemplars, metadata;
# inlined there too, the kernels took ~45 s to compile).
@kernel(cache=True)
def _field(buf, pos, end):  # pragma: no cover - jitted
    return _field_inline(buf, pos, end)


@kernel(cache=True)
def scan_top(buf, end, sym, ser, fill):  # pragma: no cover - jitted
    """The Request's symbols (bounds in sym[0:2, i], UTF-8 checked) and
    TimeSeries (bounds in ser[0:2, i]); with fill False only counted.
    Returns (err, wire, symbols, series)."""
    p = 0
    ns = 0
    nt = 0
    while p < end:
        f, w, _v, a, b, p, err = _field_inline(buf, p, end)
        if err:
            return err, w, ns, nt
        if f == 4:
            if w != 2:
                return 19, w, ns, nt
            if fill:
                if not _valid_utf8(buf, a, b):
                    return 20, 0, ns, nt
                sym[0, ns] = a
                sym[1, ns] = b
            ns += 1
        elif f == 5:
            if w != 2:
                return 8, w, ns, nt
            if fill:
                ser[0, nt] = a
                ser[1, nt] = b
            nt += 1
    return 0, 0, ns, nt


@kernel(cache=True, inline="always")
def _vsize(x):  # pragma: no cover - jitted
    n = 1
    while x >= 0x80:
        x >>= 7
        n += 1
    return n


@kernel(cache=True, inline="always")
def _put_varint(out, o, x):  # pragma: no cover - jitted
    while x >= 0x80:
        out[o] = (x & 0x7F) | 0x80
        x >>= 7
        o += 1
    out[o] = x
    return o + 1


@kernel(cache=True, inline="always")
def _copy(buf, a, b, out, o):  # pragma: no cover - jitted
    """buf[a:b] to out[o:]; a loop: slice assignments of a few bytes cost more."""
    for k in range(b - a):
        out[o + k] = buf[a + k]
    return o + b - a


@kernel(cache=True, inline="always")
def _refs(buf, q, w, a, b, end, refs, n):  # pragma: no cover - jitted
    """A labels_refs field (starting at q; wire w, payload buf[a:b]) appended
    to refs[n:]: a single varint or a packed run. Returns (err, wire, n)."""
    if w == 0:
        refs[n] = _varint_value(buf, q, end)
        return 0, 0, n + 1
    if w != 2:
        return 21, w, n
    r = a
    while r < b:
        v, r, err, ovf = _varint_inline(buf, r, b)
        if err:
            return err, 0, n
        refs[n] = _OUT_OF_TABLE if ovf or v >= _TOP else np.int64(v)
        n += 1
    return 0, 0, n


@kernel(cache=True, inline="always")
def _varint_value(buf, q, end):  # pragma: no cover - jitted
    """The value of the varint field starting at q, _OUT_OF_TABLE from 2^63
    (the reference reads it whole: any such reference is outside the table)."""
    _k, vp, _e, _o = _varint_inline(buf, q, end)
    v, _p, _e, ovf = _varint_inline(buf, vp, end)
    return _OUT_OF_TABLE if ovf or v >= _TOP else np.int64(v)


@kernel(cache=True, inline="always")
def _labels_size(sym, refs, n):  # pragma: no cover - jitted
    """Bytes of the Label fields refs[:n] stand for (-1: a reference outside the table)."""
    nsym = sym.shape[1]
    size = 0
    for k in range(0, n, 2):
        if not (0 <= refs[k] < nsym and 0 <= refs[k + 1] < nsym):
            return -1
        ln = sym[1, refs[k]] - sym[0, refs[k]]
        lv = sym[1, refs[k + 1]] - sym[0, refs[k + 1]]
        body = 1 + _vsize(ln) + ln + 1 + _vsize(lv) + lv
        size += 1 + _vsize(body) + body
    return size


@kernel(cache=True, inline="always")
def _put_labels(buf, sym, refs, n, out, o):  # pragma: no cover - jitted
    for k in range(0, n, 2):
        na, nb = sym[0, refs[k]], sym[1, refs[k]]
        va, vb = sym[0, refs[k + 1]], sym[1, refs[k + 1]]
        body = 1 + _vsize(nb - na) + (nb - na) + 1 + _vsize(vb - va) + (vb - va)
        out[o] = 0x0A
        o = _put_varint(out, o + 1, body)
        out[o] = 0x0A
        o = _put_varint(out, o + 1, nb - na)
        o = _copy(buf, na, nb, out, o)
        out[o] = 0x12
        o = _put_varint(out, o + 1, vb - va)
        o = _copy(buf, va, vb, out, o)
    return o


@kernel(cache=True)
def _exemplar(buf, a, b, sym, refs, out, o, write):  # pragma: no cover - jitted
    """The 1.0 Exemplar message of the 2.0 one at buf[a:b]: its size, and
    with write it written at out[o:] after its field header.
    Returns (err, wire, size, new_o)."""
    n = 0
    copied = 0
    p = a
    while p < b:
        q = p
        f, w, _v, fa, fb, p, err = _field(buf, p, b)
        if err:
            return err, w, 0, o
        if f == 1:
            err, w, n = _refs(buf, q, w, fa, fb, b, refs, n)
            if err:
                return err, w, 0, o
        elif f == 2 or f == 3:
            copied += p - q
    if n % 2:
        return 27, 0, 0, o
    lsize = _labels_size(sym, refs, n)
    if lsize < 0:
        return 22, 0, 0, o
    size = lsize + copied
    if write:
        out[o] = 0x1A
        o = _put_varint(out, o + 1, size)
        o = _put_labels(buf, sym, refs, n, out, o)
        p = a
        while p < b:
            q = p
            f, _w, _v, _a, _b, p, _err = _field(buf, p, b)
            if f == 2 or f == 3:
                o = _copy(buf, q, p, out, o)
    return 0, 0, size, o


@kernel(cache=True, inline="always")
def _same(buf, a, b, text):  # pragma: no cover - jitted
    if b - a != text.shape[0]:
        return False
    for k in range(b - a):
        if buf[a + k] != text[k]:
            return False
    return True


@kernel(cache=True)
def _metadata(buf, a, b, row):  # pragma: no cover - jitted
    """A Metadata message's type, help and unit references into row[1:4]
    (fields 1, 3 and 4, varints, the last of each; a series' second Metadata
    replaces its first, as in the reference). Returns (err, wire)."""
    row[0] = 1
    row[1] = 0
    row[2] = 0
    row[3] = 0
    r = a
    while r < b:
        rq = r
        f, w, _v, _a, _b, r, err = _field(buf, r, b)
        if err:
            return err, w
        if f == 1 or f == 3 or f == 4:
            if w != 0:
                return 25, w
            row[1 if f == 1 else f - 1] = _varint_value(buf, rq, b)
    return 0, 0


@kernel(cache=True)
def transcode(buf, sym, ser, refs, ex_refs, parts, name, out, meta):  # pragma: no cover - jitted
    """Each TimeSeries ser[0:2, s] as a 1.0 TimeSeries field into out.
    meta[s] = (has metadata, type, help ref, unit ref, __name__ value ref).
    refs and ex_refs hold the references of one series and of one exemplar,
    parts the bounds of its samples (row 0 >= 0) and exemplars (row 0 < 0:
    -1 - start) as the walk found them, for the writing that follows (one
    walk: the field reader is inlined once).
    Returns (err, wire, length, histograms); length < 0: out needs -length
    bytes (nothing was written past its end)."""
    nsym = sym.shape[1]
    o = 0
    cap = out.shape[0]
    fits = True
    hist = 0
    for s in range(ser.shape[1]):
        start = ser[0, s]
        end = ser[1, s]
        n = 0
        body = 0
        meta[s, 0] = 0
        meta[s, 1] = 0
        meta[s, 2] = 0
        meta[s, 3] = 0
        nparts = 0
        p = start
        while p < end:
            q = p
            f, w, _v, a, b, p, err = _field_inline(buf, p, end)
            if err:
                return err, w, 0, hist
            if f == 1:
                err, w, n = _refs(buf, q, w, a, b, end, refs, n)
                if err:
                    return err, w, 0, hist
            elif f == 2:
                if w != 2:
                    return 10, w, 0, hist
                body += 1 + _vsize(b - a) + (b - a)
                parts[0, nparts] = a
                parts[1, nparts] = b
                nparts += 1
            elif f == 3:
                hist += 1
            elif f == 4:
                if w != 2:
                    return 15, w, 0, hist
                err, w, size, _o = _exemplar(buf, a, b, sym, ex_refs, out, 0, False)
                if err:
                    return err, w, 0, hist
                body += 1 + _vsize(size) + size
                parts[0, nparts] = -1 - a
                parts[1, nparts] = b
                nparts += 1
            elif f == 5:
                if w != 2:
                    return 24, w, 0, hist
                err, w = _metadata(buf, a, b, meta[s])
                if err:
                    return err, w, 0, hist
            elif f == 6:
                if w != 0:
                    return 26, w, 0, hist
        if n % 2:
            return 23, 0, 0, hist
        lsize = _labels_size(sym, refs, n)
        if lsize < 0 or (meta[s, 0] and not (0 <= meta[s, 2] < nsym and 0 <= meta[s, 3] < nsym)):
            return 22, 0, 0, hist
        meta[s, 4] = _OUT_OF_TABLE
        for k in range(0, n, 2):
            if _same(buf, sym[0, refs[k]], sym[1, refs[k]], name):
                meta[s, 4] = refs[k + 1]
        body += lsize
        total = 1 + _vsize(body) + body
        if not fits or o + total > cap:
            fits = False
            o += total
            continue
        out[o] = 0x0A
        o = _put_varint(out, o + 1, body)
        o = _put_labels(buf, sym, refs, n, out, o)
        for j in range(nparts):
            a = parts[0, j]
            b = parts[1, j]
            if a >= 0:
                out[o] = 0x12
                o = _put_varint(out, o + 1, b - a)
                o = _copy(buf, a, b, out, o)
            else:
                err, w, size, o = _exemplar(buf, -1 - a, b, sym, ex_refs, out, o, True)
    return 0, 0, (o if fits else -o), hist


@dataclass(slots=True)
class Transcoded:
    """A 2.0 Request as a 1.0 WriteRequest: body[:length]; what 1.0 cannot carry beside it."""

    body: np.ndarray
    length: int
    histograms: int
    _buf: np.ndarray
    _sym: np.ndarray
    _meta: np.ndarray

    def metadata(self) -> list[MetricMetadata]:
        """The reference's metadata: per metric name, in the order names
        first carry any, the last series' type, help and unit that say
        anything. Only once the 1.0 path accepted the labels (every series
        then has a name); Python runs once per metric name, not per series."""
        meta, sym = self._meta, self._sym
        has = np.flatnonzero(meta[:, 0] == 1)
        if not len(has):
            return []
        lengths = sym[1] - sym[0]
        m = meta[has]
        says = ((m[:, 1] >= 1) & (m[:, 1] <= max(METRIC_TYPES))) | (lengths[m[:, 2]] > 0) | (lengths[m[:, 3]] > 0)
        rows = has[says]
        names = meta[rows, 4]
        _, first = np.unique(names, return_index=True)
        _, rev = np.unique(names[::-1], return_index=True)
        last = len(names) - 1 - rev  # aligned with first: both follow the sorted unique names
        out: dict[str, tuple[int, MetricMetadata]] = {}
        for _f, la in sorted(zip(first.tolist(), last.tolist())):
            _has, mtype, help_ref, unit_ref, name_ref = meta[rows[la]].tolist()
            md = MetricMetadata(self._text(name_ref), METRIC_TYPES.get(mtype, "unknown"), self._text(help_ref),
                                self._text(unit_ref))
            if md.metric not in out or out[md.metric][0] < la:  # names sent as two symbols
                out[md.metric] = (la, md)
        return [md for _, md in out.values()]

    def _text(self, ref: int) -> str:
        return bytes(self._buf[self._sym[0, ref] : self._sym[1, ref]]).decode()


def transcode_v2(buf: np.ndarray, n: int, limit: int) -> Transcoded:
    """buf[:n], an uncompressed 2.0 Request, as a 1.0 WriteRequest in a
    fresh array of at most `limit` bytes (a 1.0 body's cap: a symbol named
    by every label of a small request would otherwise be written out
    without bound). Raises ProtobufError (400) where the reference does,
    TooLargeError (413) over the limit; label rules are left to the 1.0
    path, which checks them as the reference does."""
    none = np.empty((2, 0), np.int64)
    err, wire, nsym, nser = scan_top(buf, n, none, none, False)
    if err:
        _raise(err, wire)
    sym = np.empty((2, nsym), np.int64)
    ser = np.empty((2, nser), np.int64)
    err, wire, _, _ = scan_top(buf, n, sym, ser, True)
    if err:
        _raise(err, wire)
    # The kernels do not check bounds: these are sized from byte counts. A
    # reference takes a byte at least, a sample or exemplar field two.
    longest = int((ser[1] - ser[0]).max()) if nser else 0
    refs = np.empty(longest + 1, np.int64)
    ex_refs = np.empty(longest + 1, np.int64)
    parts = np.empty((2, longest // 2 + 1), np.int64)
    meta = np.empty((nser, 5), np.int64)
    out = np.empty(min(OUT_PER_BYTE * n + 64, limit), np.uint8)
    err, wire, length, histograms = transcode(buf, sym, ser, refs, ex_refs, parts, _NAME, out, meta)
    if length < 0 and not err:
        if -length > limit:
            raise TooLargeError(f"the request written as remote write 1.0 takes {-length} bytes, over the limit "
                                f"of {limit} bytes for a decompressed body")
        out = np.empty(-length, np.uint8)
        err, wire, length, histograms = transcode(buf, sym, ser, refs, ex_refs, parts, _NAME, out, meta)
    if err:
        _raise(err, wire)
    return Transcoded(out, length, histograms, buf, sym, meta)
