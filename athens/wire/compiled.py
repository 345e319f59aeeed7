"""The compiled remote write 1.0 decoder: the router's steady-state path.

    body --snappy into a reused buffer--> bytes --scan (Numba)--> per-series
    label-block hashes + all samples --SeriesCache (Numba probe)--> refs
    --compact (Numba)--> WriteBatch(refs=...)

No Python runs per sample, and per series only for series the cache has not
seen (a kernel validates their labels by the reference decoder's rules and
writes their canonical bytes; Python looks those up, never decodes them).
It answers exactly what athens.wire.remote_write.decode_write_request
answers (tests/wire/test_compiled.py checks this on random and broken input).
"""

from __future__ import annotations

from collections.abc import Callable

import cramjam
import numpy as np

from athens.errors import TooLargeError
from athens.model.batch import RefSpace, WriteBatch
from athens.model.exemplars import ExemplarBatch
from athens.model.labels import Labels
from athens.wire.cache import DEFAULT_MAX_REFS, IDLE_WINDOW_S, SeriesCache, rehash_kernel
from athens.wire.metadata_pb import MetricMetadata, decode_v1_metadata
from athens.wire.protobuf import ProtobufError, read_varint
from athens.wire.remote_write import DecodedWrite, SnappyError, series_exemplars, series_labels
from athens.wire.scan import Scan, ScannedLabels, Scanner, decode_exemplars
from athens.wire.scan_v2 import transcode_v2

# The decompression buffer is kept between requests up to this size; a rare
# bigger body gets a buffer of its own, so one huge request does not pin
# memory for ever.
KEEP_BUFFER_BYTES = 64 << 20

# A WriteRequest with one series (__name__="up") and one sample (1.0 at
# t=1000 ms), snappy-compressed: what warm_up() decodes; then the same with
# an exemplar ({a="b"}, 1.0 at 1000 ms) on the series.
_WARM_UP_BODY = bytes.fromhex("207c0a1e0a0e0a085f5f6e616d655f5f12027570120c09000000000000f03f10e807")
_WARM_UP_EXEMPLAR_BODY = bytes.fromhex(
    "36540a340a0e0a085f5f6e616d655f5f12027570120c0900050168f03f10e8071a140a060a016112016211000000000000f03f18e807"
)

# A 2.0 Request (uncompressed): series up with a sample, an exemplar and metadata.
_WARM_UP_V2_REQUEST = bytes.fromhex(
    "220022085f5f6e616d655f5f22027570220874726163655f69642201742a2b0a020102120c09000000000000f03f10e807"
    "22100a02030411000000000000f03f18e8072a02080130e807"
)


# Label sets of series that carried exemplars, kept by ref for the next
# request (a Prometheus sends new exemplars of the same series again and
# again); emptied beyond this many, and whenever the series cache's ref
# numbering starts over.
EXEMPLAR_SERIES_KEPT = 16_384


class CompiledDecoder:
    """Decodes remote write 1.0 bodies; one per router process.

    Not re-entrant: decode() must finish before the next call (the router
    calls it without awaiting in between), since the buffer is reused.
    """

    def __init__(
        self, max_decompressed: int, max_refs: int = DEFAULT_MAX_REFS, idle_window_s: float = IDLE_WINDOW_S
    ) -> None:
        self.max_decompressed = max_decompressed
        self.cache = SeriesCache(max_refs, idle_window_s)
        self.scanner = Scanner()
        self._buf = np.empty(1 << 20, np.uint8)
        self._ex_series: dict[int, Labels] = {}
        self._ex_space: RefSpace | None = None

    def decompress(self, body: bytes) -> tuple[np.ndarray, int]:
        """Snappy block decompression into the reused buffer: (buffer, length)."""
        try:
            n, _ = read_varint(body, 0, min(len(body), 10))
        except ProtobufError:
            raise SnappyError("snappy: corrupt input (bad length header)") from None
        if n > self.max_decompressed:
            raise TooLargeError(
                f"decompressed body of {n} bytes exceeds the limit of {self.max_decompressed} bytes"
            )
        buf = self._buf
        if n > len(buf):
            buf = np.empty(max(n, 2 * len(buf)), np.uint8)
            if len(buf) <= KEEP_BUFFER_BYTES:
                self._buf = buf
        if n == 0:
            return buf, 0  # "\0" is the valid encoding of an empty body
        try:
            got = cramjam.snappy.decompress_raw_into(body, buf)
        except Exception:
            raise SnappyError("snappy: corrupt input") from None
        if got != n:
            raise SnappyError("snappy: corrupt input (length mismatch)")
        return buf, n

    def decode_body(self, body: bytes) -> DecodedWrite:
        buf, n = self.decompress(body)
        return self.decode(buf, n, lambda: _decompressed(body, n))

    def decode_v2_body(self, body: bytes) -> DecodedWrite:
        """A snappy remote write 2.0 body, through the 1.0 path (scan_v2.py)."""
        buf, n = self.decompress(body)
        v1 = transcode_v2(buf, n, self.max_decompressed)
        d = self.decode(v1.body, v1.length, lambda: v1.body)
        return DecodedWrite(d.batch, v1.histograms, d.exemplars, v1.metadata())

    def decode(self, buf: np.ndarray, n: int, source: Callable[[], np.ndarray] | None = None) -> DecodedWrite:
        """Decode buf[:n], an uncompressed WriteRequest. The batch's labels
        are read from `source()` (the same bytes again) if a worker needs
        them; without it, from a copy of buf[:n] taken now."""
        sc = self.scanner.scan(buf, n)
        cache = self.cache
        refs = cache.resolve(sc)
        uniq, first, idx = cache.compact(refs, sc.nsamp, len(sc.ts))
        if source is None:
            kept = buf[:n].copy()
            source = lambda: kept
        batch = WriteBatch(
            ScannedLabels(source, sc.ser_start[first], sc.ser_end[first]),
            cache.ref_hash[uniq],
            idx,
            sc.ts,
            sc.values,
            cache.ref_place[uniq],
            uniq,
            cache.space,
        )
        meta: list[MetricMetadata] = []
        exemplars = ExemplarBatch.empty()
        if len(sc.meta_start) or len(sc.ex_ser):
            data = sc.buf.tobytes()
            for a, b in zip(sc.meta_start.tolist(), sc.meta_end.tolist()):
                m = decode_v1_metadata(data, a, b)
                if m is not None:
                    meta.append(m)
            if len(sc.ex_ser):
                decoded = decode_exemplars(sc.buf, data, sc.ex_start, sc.ex_end)
                exemplars = series_exemplars(sc.ex_ser.tolist(), decoded, self._exemplar_series(sc, refs, batch, data))
                # The series' hashes as the cache has them (any exemplar's ref of a series will do).
                first = np.unique(exemplars.series_idx, return_index=True)[1]
                ex_refs = refs[sc.ex_ser[first]]
                exemplars.hashes, exemplars.places = cache.ref_hash[ex_refs], cache.ref_place[ex_refs]
        return DecodedWrite(batch, sc.histograms, exemplars, meta)

    def _exemplar_series(
        self, sc: Scan, refs: np.ndarray, batch: WriteBatch, data: bytes
    ) -> Callable[[int], Labels]:
        """labels_of(scanned series) for series_exemplars: kept from an
        earlier request, or the batch's (decoded from canonical bytes, not
        again from the protobuf), or, for a series without samples here,
        decoded from its message."""
        kept = self._ex_series
        if self._ex_space is not self.cache.space or len(kept) > EXEMPLAR_SERIES_KEPT:
            kept.clear()
            self._ex_space = self.cache.space
        place: dict[int, int] = {}

        def labels_of(i: int) -> Labels:
            r = int(refs[i])
            lb = kept.get(r)
            if lb is None:
                if not place:
                    place.update((q, k) for k, q in enumerate(batch.refs.tolist()))
                k = place.get(r)
                lb = kept[r] = batch.series[k] if k is not None else series_labels(data, sc.ser_start[i], sc.ser_end[i])
            return lb

        return labels_of


def _decompressed(body: bytes, n: int) -> np.ndarray:
    """A snappy body decompressed into a buffer of its own (n bytes, as
    CompiledDecoder.decompress found)."""
    buf = np.empty(n, np.uint8)
    cramjam.snappy.decompress_raw_into(body, buf)
    return buf


def warm_up() -> None:
    """Compile (or load from the cache) every kernel decoding uses, at router start.

    Cold, that is ~8 s of compilation, ~0.5 s loading the cache: neither
    belongs in the first remote write a Prometheus sends.
    """
    decoder = CompiledDecoder(1 << 20, 16)
    decoded = decoder.decode_body(_WARM_UP_BODY)
    assert decoded.batch.num_samples == 1
    assert len(decoder.decode_body(_WARM_UP_EXEMPLAR_BODY).exemplars) == 1
    v2 = decoder.decode_v2_body(bytes(cramjam.snappy.compress_raw(_WARM_UP_V2_REQUEST)))
    assert v2.batch.num_samples == 1 and len(v2.exemplars) == 1 and len(v2.metadata) == 1
    # The tables' growth, which a fresh router's first ~1000 series trigger.
    for tab in (decoder.cache.tab, decoder.cache.ident_tab):
        rehash_kernel(tab, np.zeros((2 * len(tab), tab.shape[1]), tab.dtype))

